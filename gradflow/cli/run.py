"""`gradflow run`: one network trained and probed into results/NAME/JOB/."""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Annotated, Optional

import pandas as pd
import typer
from rich.table import Table

from gradflow import config as config_mod
from gradflow import store
from gradflow.cli.app import app
from gradflow.cli.console import console, user_errors
from gradflow.cli.app import _fmt, progress_bar


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
    sections = [(group, cls) for group, schemas in config_mod.GROUP_SCHEMAS.items() for cls in dict.fromkeys(schemas.values())]
    sections += [("norm", config_mod.NormConfig), ("probe", config_mod.ProbeConfig), ("train", config_mod.TrainConfig),
                 ("", config_mod.Config)]
    for prefix, cls in sections:
        notes = _field_comments(cls)
        instance = cls()
        family = f" ({prefix}={instance.name})" if prefix in config_mod.GROUP_SCHEMAS else ""
        for f in fields(cls):
            if (f.name == "name" and prefix) or f.name in config_mod.GROUPS + ("train",):
                continue
            key = f"{prefix}.{f.name}" if prefix else f.name
            default = escape(f"[{getattr(instance, f.name)}]")
            keys.append(f"  {key} {default}{family}: {escape(notes.get(f.name, ''))}")
    return "\n\n".join(["\n".join(lines), "\n".join(keys)])


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


run_cmd = next(c for c in app.registered_commands if c.callback is not None and c.callback.__name__ == 'run')
run_cmd.epilog = config_help()
