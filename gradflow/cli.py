"""The command line: parse, call one function, show the result. Only this layer prints."""

from __future__ import annotations

import inspect
import json
import math
import re
from pathlib import Path
from typing import Annotated, Optional

import pandas as pd
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from gradflow import config as config_mod
from gradflow import store
from gradflow.console import console, user_errors
from gradflow.errors import GradflowError

app = typer.Typer(
    help="gradflow: run, measure, plot and reproduce gradient-flow experiments (vanishing and exploding gradients).",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    add_completion=False,
)


def main() -> None:
    app()


# --- help text generated from the schema, so it cannot drift from the code -----------------------
def _field_comments(cls) -> dict[str, str]:
    out = {}
    for line in inspect.getsource(cls).splitlines():
        m = re.match(r"\s+(\w+): [^=]+=.*?#\s*(.*)$", line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def config_help() -> str:
    from dataclasses import fields

    from rich.markup import escape

    lines = ["[bold]Config groups[/] (GROUP=CHOICE):"]
    for group in config_mod.GROUPS:
        lines.append(f"  {group}: {', '.join(config_mod.group_choices(group))}")
    keys = ["[bold]Keys[/] (KEY=VALUE; default in brackets):"]
    sections = [("model", cls) for cls in dict.fromkeys(config_mod.MODEL_SCHEMAS.values())]
    sections += [("data", cls) for cls in dict.fromkeys(config_mod.DATA_SCHEMAS.values())]
    sections += [("init", config_mod.InitConfig), ("norm", config_mod.NormConfig), ("optim", config_mod.OptimConfig),
                 ("probe", config_mod.ProbeConfig), ("train", config_mod.TrainConfig), ("", config_mod.Config)]
    for prefix, cls in sections:
        notes = _field_comments(cls)
        instance = cls()
        family = f" (model={instance.name})" if prefix == "model" else f" (data={instance.name})" if prefix == "data" else ""
        for f in fields(cls):
            if (f.name == "name" and prefix) or f.name in config_mod.GROUPS + ("train",):
                continue
            key = f"{prefix}.{f.name}" if prefix else f.name
            default = escape(f"[{getattr(instance, f.name)}]")
            keys.append(f"  {key} {default}{family}: {escape(notes.get(f.name, ''))}")
    return "\n\n".join(["\n".join(lines), "\n".join(keys)])


# --- gradflow run ---------------------------------------------------------------------------------
def progress_bar(transient: bool = True) -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=transient)


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    epilog=None,  # filled in below from the schema
)
@user_errors
def run(
    overrides: Annotated[Optional[list[str]], typer.Argument(
        help="Hydra overrides: GROUP=CHOICE (init=xavier_normal) or KEY=VALUE (model.depth=30).",
        show_default=False)] = None,
) -> None:
    """Train one network and record its per-layer gradient signals into results/NAME/JOB/."""
    from gradflow import job

    overrides = list(overrides or [])
    cfg = config_mod.compose(overrides)
    job_dir = Path(cfg.results) / cfg.name / config_mod.job_name(overrides)
    store.check_writable(job_dir)
    with progress_bar() as progress:
        task = progress.add_task("training", total=cfg.train.steps + 1)
        record = job.execute(cfg, job_dir, on_step=lambda t, n: progress.update(task, completed=t + 1))
    show_run(job_dir, record)
    if record["status"] == "failed":
        raise typer.Exit(1)


run.__doc__ = run.__doc__
app.registered_commands[-1].epilog = None


def _fmt(x, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if isinstance(x, float):
        return f"{x:.{digits}g}"
    return str(x)


def show_run(job_dir: Path, record: dict) -> None:
    """The summary of one finished run, read back from its results folder."""
    from gradflow.summary import grad_ratio

    status = record["status"]
    colour = {"ok": "green", "diverged": "yellow", "failed": "red"}.get(status, "white")
    console.print(f"[bold {colour}]{status}[/] after {record.get('steps_done', 0)} steps "
                  f"in {record.get('wall_time', 0):.1f} s on {record.get('device', '?')}")
    if status == "failed":
        console.print(f"[red]{record.get('error')}[/]")
        console.print(f"results: {job_dir}", soft_wrap=True)
        return
    if status == "diverged":
        layer = record.get("diverged_layer")
        console.print(f"[yellow]non-finite loss or gradient first at step {record['diverged_step']}"
                      + (f", layer {layer}" if layer is not None else "") + "[/]")
    final = record.get("final", {})
    console.print("final  train loss {}  acc {}   test loss {}  acc {}".format(
        *(_fmt(final.get(k)) for k in ("train_loss", "train_acc", "test_loss", "test_acc"))))
    layers = pd.read_parquet(job_dir / store.LAYERS_FILE)
    if not layers.empty:
        last = int(layers["step"].max())
        wide = layers[layers["step"].isin([0, last]) & layers["quantity"].isin(["grad_norm", "signal_norm"])]
        wide = wide.pivot_table(index="layer", columns=["quantity", "step"], values="value", aggfunc="first")
        names = layers.drop_duplicates("layer").set_index("layer")["name"]
        table = Table(title="per-layer gradients (layer 0 = input)", title_justify="left")
        table.add_column("layer", justify="right")
        table.add_column("name")
        cols = [(q, s) for q in ("grad_norm", "signal_norm") for s in dict.fromkeys([0, last])]
        for q, s in cols:
            table.add_column(f"{'‖∂L/∂W‖' if q == 'grad_norm' else '‖∂L/∂z‖'} @{s}", justify="right")
        layers_shown = wide.index[sorted(_thin(len(wide.index), 13))]
        for layer in layers_shown:
            table.add_row(str(layer), names[layer], *(_fmt(wide.loc[layer].get((q, s))) for q, s in cols))
        console.print(table)
        console.print(f"grad-norm ratio first/last layer: init {_fmt(grad_ratio(layers, 0))}, "
                      f"end {_fmt(grad_ratio(layers, last))}")
    console.print(f"results: {job_dir}", soft_wrap=True)


def _thin(n: int, keep: int) -> set[int]:
    """Evenly spaced row indices, both ends included, when there are more than `keep` rows."""
    if n <= keep:
        return set(range(n))
    return {round(i * (n - 1) / (keep - 1)) for i in range(keep)}


# --- gradflow ls ------------------------------------------------------------------------------------
LS_COLUMNS = ["status", "steps_done", "wall_time", "final.train_loss", "final.train_acc", "final.test_loss",
              "final.test_acc", "grad_ratio.init", "grad_ratio.final", "chi1_measured", "chi1_theory"]


def runs_view(path: Path, where: list[str] | None = None, sort: str | None = None) -> tuple[pd.DataFrame, list[str]]:
    """The runs table filtered and sorted as `ls` shows it, and the swept keys."""
    from gradflow.plots.keys import swept_keys  # pandas only: ls stays matplotlib-free
    from gradflow.summary import runs_table

    df = runs_table(path)
    swept = swept_keys(df, exclude=())  # ls shows seed as a swept column too
    for cond in where or []:
        if "=" not in cond:
            raise GradflowError(f"--where {cond!r} must be KEY=VALUE")
        key, value = cond.split("=", 1)
        if key not in df.columns:
            raise GradflowError(f"--where key {key!r} is not a column; choices: {', '.join(sorted(df.columns))}")
        df = df[df[key].astype(str) == value]
    if sort:
        if sort not in df.columns:
            raise GradflowError(f"--sort {sort!r} is not a column; choices: {', '.join(swept + LS_COLUMNS)}")
        df = df.sort_values(sort, kind="stable")
    return df, swept


LS_LABELS = {"steps_done": "steps", "wall_time": "time s", "final.train_loss": "train loss",
             "final.train_acc": "train acc", "final.test_loss": "test loss", "final.test_acc": "test acc",
             "grad_ratio.init": "ratio init", "grad_ratio.final": "ratio end", "chi1_measured": "chi1 meas",
             "chi1_theory": "chi1 theory"}


def show_runs(df: pd.DataFrame, swept: list[str], title: str = "", skipped: int | None = None) -> None:
    """The runs table: swept values, then status, finals and gradient ratios (first/last layer)."""
    columns = [c for c in LS_COLUMNS if c in df.columns and (not c.startswith("chi1") or df[c].notna().any())]
    table = Table(title=title or None, title_justify="left", caption="ratio = ‖∂L/∂W‖ first layer / last layer",
                  caption_justify="left")
    if not swept:
        table.add_column("run", overflow="fold")
    for c in swept:
        table.add_column(c.removeprefix("model."), overflow="fold")
    for c in columns:
        table.add_column(LS_LABELS.get(c, c), justify="left" if c == "status" else "right")
    colours = {"ok": "green", "diverged": "yellow", "failed": "red", "running": "cyan"}
    for _, row in df.iterrows():
        cells = [_fmt(row.get(c)) for c in columns]
        if "status" in columns:
            cells[columns.index("status")] = f"[{colours.get(row['status'], 'white')}]{row['status']}[/]"
        table.add_row(*([] if swept else [row["run"]]), *(_fmt(row.get(c)) for c in swept), *cells)
    console.print(table)
    counts = df["status"].value_counts().to_dict() if "status" in df else {}
    kinds = ("ok", "diverged", "failed", "running")
    line = "  ".join(f"{k}: {counts.get(k, 0)}" for k in kinds if k != "running" or counts.get(k))
    console.print(line + (f"  skipped: {skipped}" if skipped is not None else ""))


@app.command("ls")
@user_errors
def ls(
    path: Annotated[Path, typer.Argument(help="A run folder, a sweep folder, or a folder of sweeps.")],
    where: Annotated[Optional[list[str]], typer.Option(help="Keep rows with KEY=VALUE (repeatable).")] = None,
    sort: Annotated[Optional[str], typer.Option(help="Sort by this column, e.g. final.test_acc.")] = None,
    csv: Annotated[bool, typer.Option("--csv", help="Print CSV instead of a table.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON records instead of a table.")] = False,
) -> None:
    """One row per run: swept values, status, final metrics and gradient-norm ratios."""
    df, swept = runs_view(path, where, sort)
    cols = ["run"] + swept + [c for c in LS_COLUMNS if c in df.columns]
    if csv:
        console.file.write(df[cols].to_csv(index=False))
    elif as_json:
        console.file.write(json.dumps(json.loads(df[cols].to_json(orient="records")), indent=1) + "\n")
    else:
        show_runs(df, swept, title=str(path))


# --- gradflow sweep ---------------------------------------------------------------------------------
@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@user_errors
def sweep(
    overrides: Annotated[Optional[list[str]], typer.Argument(
        help="Hydra multirun overrides: model.depth=5,10,20 init=xavier_normal,kaiming_normal seed=range(3) "
             "hydra/launcher=joblib ...", show_default=False)] = None,
    name: Annotated[Optional[str], typer.Option("--name", help="Results go to results/NAME/.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Rerun runs that already finished.")] = False,
) -> None:
    """Run a grid of runs with Hydra multirun (any launcher); rerunning resumes where it stopped."""
    from gradflow import sweep as sweep_mod

    p = sweep_mod.plan(list(overrides or []), name, force)
    df = run_plan(p)
    if (df["status"] == "failed").any():
        raise typer.Exit(1)


def run_plan(p, table: bool = True) -> pd.DataFrame:
    """Launch a planned sweep with a progress display, then show (or count) and return its runs table."""
    from gradflow import sweep as sweep_mod

    skipped = len(p.jobs) - len(p.to_run)
    console.print(f"sweep [bold]{p.root}[/]: {len(p.jobs)} runs over {', '.join(p.swept) or 'no swept key'}"
                  f" with the {p.launcher} launcher" + (f"; {skipped} already finished, skipped" if skipped else ""))
    with progress_bar(transient=False) as progress:
        runs = progress.add_task("runs", total=len(p.to_run))
        current = progress.add_task("current run", total=None, visible=p.launcher == "basic" and bool(p.to_run))

        def on_step(job: str, t: int, n: int) -> None:
            progress.update(current, description=job[:48], completed=t + 1, total=n + 1)

        watcher = sweep_mod.Watcher(p, lambda done: progress.update(runs, completed=done))
        watcher.start()
        try:
            sweep_mod.launch(p, on_step)
        finally:
            watcher.stop.set()
            progress.update(runs, completed=watcher.count())
            progress.update(current, visible=False)
    df, swept = runs_view(p.root)
    df = df[df["run"].isin([j.name for j in p.jobs])]
    if table:
        show_runs(df, p.swept or swept, title=str(p.root), skipped=skipped)
    else:
        counts = df["status"].value_counts().to_dict()
        console.print("  ".join(f"{k}: {counts.get(k, 0)}" for k in ("ok", "diverged", "failed")) + f"  skipped: {skipped}")
    return df


# --- gradflow reproduce -------------------------------------------------------------------------------
@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@user_errors
def reproduce(
    name: Annotated[Optional[str], typer.Argument(help="An experiment (see --list), or `all`.", show_default=False)] = None,
    overrides: Annotated[Optional[list[str]], typer.Argument(
        help="Overrides for every arm, e.g. hydra/launcher=joblib hydra.launcher.n_jobs=2 or data.root=/data/cifar10.",
        show_default=False)] = None,
    list_: Annotated[bool, typer.Option("--list", help="List the experiments.")] = False,
    quick: Annotated[bool, typer.Option("--quick", help="The smallest honest size (same as --scale quick).")] = False,
    scale: Annotated[str, typer.Option(help="quick | default (CPU-sized) | paper (the paper's scale, for a GPU).")]
    = "default",
    force: Annotated[bool, typer.Option("--force", help="Rerun runs that already finished.")] = False,
) -> None:
    """Rerun a published depth experiment, draw its figure, and check the paper's claims (PASS/FAIL)."""
    import time

    from gradflow import reproduce as rep
    from gradflow import sweep as sweep_mod

    if list_ or not name:
        table = Table(title="reproducible experiments", title_justify="left")
        for col in ("name", "paper", "claim", "CPU runtime (default scale)"):
            table.add_column(col, overflow="fold")
        for n in rep.names():
            spec = rep.Spec.load(n)
            table.add_row(n, spec.paper, spec.summary, spec.runtime)
        console.print(table)
        return
    scale = "quick" if quick else scale
    if scale not in rep.SCALES:
        raise GradflowError(f"--scale {scale!r} is not allowed; choices: {', '.join(rep.SCALES)}")
    user = list(overrides or [])
    results_root = next((o.split("=", 1)[1] for o in user if o.startswith("results=")), "results")
    failed = False
    for n in rep.names() if name == "all" else [name]:
        spec = rep.Spec.load(n)
        root = rep.root_for(n, scale, results_root)
        console.rule(f"[bold]{n}[/]: {spec.paper}")
        start = time.perf_counter()
        used, jobs = {}, {}
        for arm in spec.arms:
            used[arm] = spec.overrides(arm, scale, user)
            p = sweep_mod.plan(used[arm], f"{root.relative_to(results_root).as_posix()}/{arm}", force)
            run_plan(p, table=False)
            jobs[arm] = [j.name for j in p.jobs]
        results = rep.check(spec, root, jobs)
        figures = rep.draw(spec, root, jobs)
        report = rep.write_report(spec, root, scale, results, figures, used, time.perf_counter() - start)
        table = Table(title=f"{n}: claims", title_justify="left")
        for col in ("claim", "paper", "measured", "test", "result"):
            table.add_column(col, overflow="fold")
        for r in results:
            spread = r.measured.spread()
            verdict = "[green]PASS[/]" if r.passed else "[red]FAIL[/]"
            table.add_row(r.text, r.paper, rep.fmt_number(r.measured.value) + (f"\n{spread}" if spread else ""), r.test,
                          verdict + (" (qualitative)" if r.qualitative else ""))
        console.print(table)
        console.print(f"report: {report}")
        for f in figures:
            console.print(f"figure: {f}")
        failed |= not all(r.passed for r in results)
    if failed:
        raise typer.Exit(1)


# --- gradflow bench -----------------------------------------------------------------------------------
@app.command()
@user_errors
def bench(
    workload: Annotated[Optional[list[str]], typer.Option(help="mlp | resnet20 | lstm (repeatable; default all).")]
    = None,
    steps: Annotated[int, typer.Option(help="Updates per timed run.")] = 100,
    repeats: Annotated[int, typer.Option(help="Interleaved off/on repetitions; the median is reported.")] = 3,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | mps")] = "auto",
) -> None:
    """Measure what probing costs: steps/s with probes off and at every step, side by side."""
    from gradflow import bench as bench_mod

    names = workload or list(bench_mod.WORKLOADS)
    for n in names:
        if n not in bench_mod.WORKLOADS:
            raise GradflowError(f"--workload {n!r} is not known; choices: {', '.join(bench_mod.WORKLOADS)}")
    table = Table(title=f"probe overhead ({steps} steps x {repeats}, median)", title_justify="left")
    for col in ("workload", "steps/s probes off", "steps/s probes every step", "slowdown"):
        table.add_column(col, justify="right")
    with console.status("timing ..."):
        results = bench_mod.run(names, steps, repeats, [f"device={device}"])
    for r in results:
        table.add_row(r.workload, f"{r.steps_per_s['off']:.1f}", f"{r.steps_per_s['on']:.1f}", f"{r.slowdown:.2f}x")
    console.print(table)


def _mount_optional() -> None:
    """Sub-apps that live in their own modules."""
    from gradflow.cli_plots import register as register_plots
    from gradflow.cli_theory import theory_app

    app.add_typer(theory_app, name="theory")
    register_plots(app)


_mount_optional()

for _cmd in app.registered_commands:
    if _cmd.callback is not None and _cmd.callback.__name__ == "run":
        _cmd.epilog = config_help()
