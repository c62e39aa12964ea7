"""`gradflow plot` and `gradflow compare`: figures and comparisons drawn from results on disk.

Every number comes from the tables the
runs wrote (`gradflow.load`), never from a live model; the drawing lives in gradflow.plots and the
matching of runs across results folders in `comparison()`, so this module only checks the options,
calls one function and prints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Optional

import numpy as np
import pandas as pd
import typer
from rich.table import Table

from gradflow import store
from gradflow.cli.app import app
from gradflow.cli.console import console, user_errors
from gradflow.errors import GradflowError

# kind -> (the table it reads, the options it uses): any other option is refused, never silently ignored
KINDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "standard": ("all", ()),
    "profile": ("layers", ("quantity", "step", "color", "facet")),
    "heatmap": ("layers", ("quantity", "run")),
    "curves": ("metrics", ("color", "facet")),
    "ratio": ("runs", ("step", "color")),
    "grid": ("runs", ("x", "y", "value", "theory", "facet")),
    "hist": ("hist", ("run", "step")),
    "spectrum": ("jacobian", ("step", "color")),
}
COMPARE_KINDS = ("profile", "curves", "ratio", "spectrum")  # the kinds that overlay several runs
OPTIONAL_TABLES = {"hist": "probe=full (or probe.histograms=true)", "jacobian": "probe=full (or probe.jacobian=true)"}
COMPARE_DIR = Path("results") / "compare"

# the numbers `compare` lines up per source: column, row label, how two sources differ
COMPARED = (
    ("grad_ratio.init", "grad ratio first/last, init", "ratio"),
    ("grad_ratio.final", "grad ratio first/last, end", "ratio"),
    ("chi1_measured", "chi1 measured", "diff"),
    ("chi1_theory", "chi1 theory", "diff"),
    ("final.train_acc", "final train acc", "diff"),
    ("final.test_acc", "final test acc", "diff"),
)

KIND_HELP = "; ".join([
    "standard: the usual set (default)", "profile: a quantity per layer at one step",
    "heatmap: one run's quantity over layer x step", "curves: loss and accuracy over training",
    "ratio: first/last-layer gradient ratio vs depth", "grid: a final number over two swept keys",
    "hist: one run's per-layer histograms (probe=full)", "spectrum: input-output Jacobian singular values (probe=full)",
])


@dataclass
class Options:
    """What the user asked for, after checking; None = the kind's default."""
    quantity: str | None = None
    step: int | str | None = None
    color: str | None = None
    facet: str | None = None
    x: str | None = None
    y: str | None = None
    value: str | None = None
    theory: str | None = None
    run: str | None = None
    by_source: bool = False


# --- checks: one red line naming the option and the choices ---------------------------------------
def _choose(option: str, value: str, choices) -> str:
    if value not in choices:
        raise GradflowError(f"{option} {value!r} is not allowed; choices: {', '.join(choices)}")
    return value


def _refuse_unused(kind: str, given: dict[str, Any]) -> None:
    uses = KINDS[kind][1]
    for name, v in given.items():
        if v is not None and name not in uses:
            takers = [k for k, (_, opts) in KINDS.items() if name in opts]
            raise GradflowError(f"--{name} does not apply to --kind {kind}"
                                + (f" (it applies to: {', '.join(takers)})" if takers else "")
                                + (f"; --kind {kind} takes: {', '.join('--' + o for o in uses)}" if uses else ""))


def parse_step(text: str | None) -> int | str | None:
    if text is None:
        return None
    t = text.strip()
    if t == "last":
        return "last"
    if t.isdigit():
        return int(t)
    raise GradflowError(f"--step {text!r} is not allowed; choices: a probed step number (e.g. 0), or last")


def _load(path: Path, table: str) -> pd.DataFrame:
    import gradflow

    df = gradflow.load(path, table=table)
    if df.empty:
        how = f"; run with {OPTIONAL_TABLES[table]}" if table in OPTIONAL_TABLES else ""
        raise GradflowError(f"{path} has no {table} rows{how}")
    return df


def check_options(df: pd.DataFrame, kind: str, o: Options, where: str) -> None:
    """Keys must be swept (color, facet) or columns (x, y); quantity, value, step and run must exist."""
    from gradflow.plots.common import SUMMARIES, n_distinct, ordered_values, swept_keys
    from gradflow.plots.figures import GRID_THEORIES

    swept = swept_keys(df) + (["source"] if n_distinct(df["source"]) > 1 else [])
    for name in ("color", "facet"):
        key = getattr(o, name)
        if key is not None and key not in swept:
            why = "does not vary" if key in df.columns else "is not a column"
            raise GradflowError(f"--{name} {key!r} {why} in {where}; choices: {', '.join(swept) or '(nothing varies)'}")
    for name in ("x", "y"):
        key = getattr(o, name)
        if key is not None and key not in df.columns:
            raise GradflowError(f"--{name} {key!r} is not a column of {where}; choices: {', '.join(swept) or '(none)'}")
    if o.quantity is not None and "quantity" in df.columns and not (df["quantity"] == o.quantity).any():
        raise GradflowError(f"--quantity {o.quantity!r} is not in {where}; choices: "
                            f"{', '.join(map(str, ordered_values(df['quantity'])))}")
    if o.value is not None and o.value not in df.columns:
        choices = [c for c in SUMMARIES if c in df.columns]
        raise GradflowError(f"--value {o.value!r} is not a column of {where}; choices: {', '.join(choices)}")
    if o.theory is not None:
        _choose("--theory", o.theory, GRID_THEORIES)
    runs = ordered_values(df["run"].astype(str))
    shown = ", ".join(runs[:8]) + (", ..." if len(runs) > 8 else "")
    if o.run is not None and str(o.run) not in runs:
        raise GradflowError(f"--run {o.run!r} is not a run of {where}; choices: {shown}")
    if o.run is None and "run" in KINDS[kind][1] and len(runs) > 1:
        raise GradflowError(f"--kind {kind} draws one run and {where} holds {len(runs)}; "
                            f"pass --run with one of: {shown}")
    if kind == "ratio" and o.step not in (None, 0, "last"):
        raise GradflowError(f"--step {o.step} is not allowed for --kind ratio; choices: 0 (init), last (end)")
    if isinstance(o.step, int) and "step" in df.columns and kind != "ratio" and not (df["step"] == o.step).any():
        probed = sorted(int(s) for s in df["step"].unique())
        shown = ", ".join(map(str, probed[:12])) + (", ..." if len(probed) > 12 else "")
        raise GradflowError(f"--step {o.step} was not probed in {where}; probed steps: {shown} (or last)")


# --- drawing one kind ----------------------------------------------------------------------------
def _step_name(step: int | str) -> str:
    return "last" if step == "last" else f"step{step}"


def draw(kind: str, df: pd.DataFrame, o: Options):
    """(Figure, file stem) for one kind from its table."""
    from gradflow.plots import figures
    from gradflow.plots.common import file_part

    def tag(name: str, key: str | None) -> str:
        return f"-{name}-{file_part(key)}" if key else ""

    step = 0 if o.step is None else o.step
    if kind == "profile":
        q = o.quantity or "grad_norm"
        fig = figures.profile(df, q, step=step, color=o.color, facet=o.facet, by_source=o.by_source)
        return fig, f"profile-{q}-{_step_name(step)}" + tag("color", o.color) + tag("facet", o.facet)
    if kind == "heatmap":
        q = o.quantity or "grad_norm"
        which = f"-{file_part(o.run)}" if o.run and df["run"].nunique() > 1 else ""
        return figures.heatmap(df, run=o.run, quantity=q), f"heatmap-{q}{which}"
    if kind == "curves":
        fig = figures.curves(df, color=o.color, by_source=o.by_source, facet=o.facet)
        return fig, "curves" + tag("color", o.color) + tag("facet", o.facet)
    if kind == "ratio":
        when = "final" if step == "last" else "init"
        return figures.ratio(df, when, by=o.color), f"ratio-{when}" + tag("color", o.color)
    if kind == "grid":
        if o.x is None or o.y is None:
            raise GradflowError("--kind grid needs --x KEY and --y KEY (e.g. --x init.sw2 --y model.depth)")
        value = o.value or "final.test_acc"
        fig = figures.grid(df, o.x, o.y, value=value, theory=o.theory, facet=o.facet)
        return fig, f"grid-{value}-{o.x}-{o.y}" + tag("facet", o.facet)
    if kind == "hist":
        which = f"-{file_part(o.run)}" if o.run and df["run"].nunique() > 1 else ""
        return figures.hist(df, run=o.run, step=step), f"hist-{_step_name(step)}{which}"
    if kind == "spectrum":
        return figures.spectrum(df, step=step, color=o.color), f"spectrum-{_step_name(step)}" + tag("color", o.color)
    raise AssertionError(kind)


def _print_paths(paths: list[Path]) -> None:
    for p in paths:
        console.print(str(p), markup=False, highlight=False, soft_wrap=True)


# --- gradflow plot ---------------------------------------------------------------------------------
@user_errors
def plot(
    path: Annotated[Path, typer.Argument(help="A run folder, a sweep folder, or a folder of sweeps.",
                                         show_default=False)],
    kind: Annotated[Optional[str], typer.Option("--kind", "-k", help=f"What to draw. {KIND_HELP}.",
                                                show_default=False)] = None,
    quantity: Annotated[Optional[str], typer.Option(
        help="profile/heatmap: the per-layer quantity (grad_norm, signal_norm, weight_norm, update_ratio, "
             "act_std, ...).",
        show_default="grad_norm")] = None,
    step: Annotated[Optional[str], typer.Option(
        help="profile/hist/spectrum: a probed step or 'last'; ratio: 0 (init) or last (end).",
        show_default="0")] = None,
    color: Annotated[Optional[str], typer.Option(
        help="profile/curves/ratio/spectrum: the swept key that colours the lines.",
        show_default="first swept key")] = None,
    facet: Annotated[Optional[str], typer.Option(
        help="profile/curves/grid: one panel (curves: a train | test pair) per value of this swept key.",
        show_default=False)] = None,
    x: Annotated[Optional[str], typer.Option("--x", help="grid: the key along x, e.g. init.sw2.",
                                             show_default=False)] = None,
    y: Annotated[Optional[str], typer.Option("--y", help="grid: the key along y, e.g. model.depth.",
                                             show_default=False)] = None,
    value: Annotated[Optional[str], typer.Option(
        help="grid: the per-run number in the cells (final.test_acc, final.train_acc, final.train_loss, "
             "grad_ratio.init, chi1_measured, ...).", show_default="final.test_acc")] = None,
    theory: Annotated[Optional[str], typer.Option(
        help="grid: draw the mean-field 6xi_c or xi_c depth scale, or chi1=1 (needs init.sw2 on an axis).",
        show_default=False)] = None,
    run: Annotated[Optional[str], typer.Option(help="heatmap/hist: which run, when PATH holds several (its folder "
                                                    "name relative to PATH).", show_default=False)] = None,
    fmt: Annotated[str, typer.Option("--format", help="Figure format: png, pdf or svg.")] = "png",
    out: Annotated[Optional[Path], typer.Option(help="Write the figures here.", show_default="PATH/figures")] = None,
) -> None:
    """Draw figures from a run or a sweep on disk and print their paths."""
    from gradflow.plots.common import FORMATS

    kind = _choose("--kind", kind or "standard", KINDS)
    fmt = _choose("--format", fmt.lower(), FORMATS)
    o = Options(quantity=quantity, step=parse_step(step), color=color, facet=facet, x=x, y=y, value=value,
                theory=theory, run=run)
    _refuse_unused(kind, {k: getattr(o, k) for k in ("quantity", "step", "color", "facet", "x", "y", "value",
                                                      "theory", "run")})
    store.find_runs(path)  # a missing folder or one without runs: say so before anything else
    out_dir = out if out is not None else path / store.FIGURES_DIR
    store.check_writable(out_dir)
    if kind == "standard":
        written = standard(path, out_dir, fmt)
    else:
        df = _load(path, KINDS[kind][0])
        check_options(df, kind, o, str(path))
        fig, stem = draw(kind, df, o)
        from gradflow.plots.common import save

        written = [save(fig, out_dir / f"{stem}.{fmt}", fmt)]
    _print_paths(written)


def standard(path: Path, out_dir: Path, fmt: str) -> list[Path]:
    import gradflow
    from gradflow.plots.figures import standard_set

    tables = {t: gradflow.load(path, table=t) for t in ("layers", "metrics", "runs", "hist", "jacobian")}
    written = standard_set(tables["layers"], tables["metrics"], tables["runs"], out_dir, fmt,
                           hists=tables["hist"], jacobian=tables["jacobian"])
    if not written:
        raise GradflowError(f"{path}: nothing to draw (no probed layers and no metrics in its runs)")
    return written


# --- gradflow compare ------------------------------------------------------------------------------
def source_labels(paths: list[Path]) -> list[str]:
    """The folder names, made unique with the parent folder (a/run vs b/run), then a counter."""
    resolved = [Path(p).resolve() for p in paths]
    labels = [p.name for p in resolved]
    labels = [f"{p.parent.name}/{p.name}" if labels.count(lab) > 1 else lab for p, lab in zip(resolved, labels)]
    seen: dict[str, int] = {}
    out = []
    for lab in labels:
        seen[lab] = seen.get(lab, 0) + 1
        out.append(lab if labels.count(lab) == 1 else f"{lab}#{seen[lab]}")
    return out


def match_keys(runs: pd.DataFrame, sources: list[str]) -> list[str]:
    """Keys to line runs up by: swept (seed aside) in some source, with a value every source shares."""
    from gradflow.plots.common import swept_keys, vkey

    per = [runs[runs["source"] == s] for s in sources]
    keys = list(dict.fromkeys(k for g in per for k in swept_keys(g.dropna(axis=1, how="all"))))
    out = []
    for k in keys:
        if k not in runs.columns:
            continue
        common = set.intersection(*({vkey(v) for v in g[k]} for g in per))
        if common:
            out.append(k)
    return out


def differing_keys(runs: pd.DataFrame, sources: list[str]) -> dict[str, list]:
    """Config keys fixed within each source but different between them: what the comparison is about."""
    from gradflow.plots.common import config_columns, n_distinct, ordered_values

    out = {}
    for k in config_columns(runs):
        per = [runs.loc[runs["source"] == s, k] for s in sources]
        if all(n_distinct(p) == 1 for p in per) and n_distinct(runs[k]) > 1:
            out[k] = [ordered_values(p)[0] for p in per]
    return out


def _median(values: pd.Series) -> float:
    v = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
    ok = np.isfinite(v)
    if ok.any():
        return float(np.median(v[ok]))
    return float(v[0]) if len(v) else math.nan  # all NaN/inf: show what was logged


def comparison(runs: pd.DataFrame, sources: list[str], by: list[str]) -> pd.DataFrame:
    """One row per matched config (the values of `by`) and source: runs, statuses and the COMPARED
    numbers (median over the runs in the cell, e.g. seeds). Rows come in the order of the by-values."""
    from gradflow.plots.common import ordered_values, vkey

    keyed = runs.assign(_cell=[tuple(vkey(v) for v in row) for row in runs[by].itertuples(index=False)]) \
        if by else runs.assign(_cell=[()] * len(runs))
    ranks = {k: {vkey(v): i for i, v in enumerate(ordered_values(runs[k]))} for k in by}
    cells = sorted(dict.fromkeys(keyed["_cell"]), key=lambda c: tuple(ranks[k][v] for k, v in zip(by, c)))
    rows = []
    for cell in cells:
        for s in sources:
            g = keyed[(keyed["_cell"] == cell) & (keyed["source"] == s)]
            row = {"cell": cell, "source": s, "runs": len(g),
                   "status": ", ".join(f"{n}× {st}" if n > 1 else str(st)
                                       for st, n in g["status"].value_counts().items()) if len(g) else ""}
            if len(g):
                row.update({k: g[k].iloc[0] for k in by})
            for col, _, _ in COMPARED:
                row[col] = _median(g[col]) if col in g.columns and len(g) else math.nan
            rows.append(row)
    return pd.DataFrame(rows)


def _num(x: float) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:.3g}"


def _difference(a: float, b: float, how: str) -> str:
    if not (math.isfinite(a) and math.isfinite(b)):
        return "-"
    if how == "ratio":
        return f"×{b / a:.3g}" if a != 0 else "-"
    return f"{b - a:+.3g}"


def show_comparison(table: pd.DataFrame, sources: list[str], by: list[str], differ: dict[str, list]) -> None:
    from gradflow.plots.common import fmt_value

    shown = [(c, label, how) for c, label, how in COMPARED
             if c in table.columns and np.isfinite(pd.to_numeric(table[c], errors="coerce")).any()]
    t = Table(title=f"compare: {' vs '.join(sources)}", title_justify="left", caption_justify="left")
    for k in by:
        t.add_column(k.removeprefix("model."), overflow="fold")
    t.add_column("")
    for s in sources:
        t.add_column(s, justify="right", overflow="fold")
    for s in sources[1:]:
        t.add_column(f"{s} vs {sources[0]}", justify="right", overflow="fold")
    colours = {"ok": "green", "diverged": "yellow", "failed": "red", "running": "cyan"}
    cells = list(dict.fromkeys(table["cell"]))
    for cell in cells:
        part = table[table["cell"] == cell].set_index("source")
        keys = [fmt_value(v) if v != "\0nan" else "n/a" for v in cell]
        status = []
        for s in sources:
            st, n = part.loc[s, "status"], part.loc[s, "runs"]
            word = st.split()[-1] if st else ""
            status.append(f"[{colours.get(word, 'white')}]{st}[/]" if n else "[dim]no run[/]")
        t.add_row(*keys, "runs", *status, *([""] * (len(sources) - 1)))
        for i, (col, label, how) in enumerate(shown):
            vals = [float(part.loc[s, col]) if part.loc[s, "runs"] else math.nan for s in sources]
            t.add_row(*([""] * len(by)), label, *map(_num, vals), *(_difference(vals[0], v, how) for v in vals[1:]),
                      end_section=i == len(shown) - 1)
    notes = [f"matched on {', '.join(by)}" if by else "no swept key in common: every run of a source in one row"]
    if differ:
        notes.append("sources differ in " + "; ".join(f"{k} ({' | '.join(map(fmt_value, v))})"
                                                      for k, v in differ.items()))
    if (table["runs"] > 1).any():
        notes.append("numbers are medians over the runs in a cell (e.g. seeds)")
    notes.append(f"differences: ratios as ×({sources[-1] if len(sources) == 2 else 'other'} / {sources[0]}), "
                 "the rest as other − first")
    t.caption = "\n".join(notes)
    console.print(t)


@user_errors
def compare(
    paths: Annotated[list[Path], typer.Argument(help="Two or more run or sweep folders (or folders of sweeps).",
                                                show_default=False)],
    kind: Annotated[str, typer.Option("--kind", "-k", help=f"The figure: {', '.join(COMPARE_KINDS)}.")] = "profile",
    quantity: Annotated[Optional[str], typer.Option(help="profile: the per-layer quantity.",
                                                    show_default="grad_norm")] = None,
    step: Annotated[Optional[str], typer.Option(
        help="profile/spectrum: a probed step or 'last'; ratio: 0 (init) or last (end).", show_default="0")] = None,
    color: Annotated[Optional[str], typer.Option(help="The swept key that colours the lines.",
                                                 show_default="first swept key")] = None,
    by: Annotated[Optional[list[str]], typer.Option(
        "--by", help="Line runs up across sources by their values of this key (repeatable); default: the swept "
                     "keys whose values the sources share.", show_default=False)] = None,
    panels: Annotated[bool, typer.Option(
        "--panels", help="profile/curves: one panel per source instead of one line style per source.")] = False,
    fmt: Annotated[str, typer.Option("--format", help="Figure format: png, pdf or svg.")] = "png",
    out: Annotated[Optional[Path], typer.Option(help="Write the figure here.", show_default=str(COMPARE_DIR))] = None,
) -> None:
    """Overlay runs or sweeps from several results folders and tabulate their key numbers side by side."""
    import gradflow
    from gradflow.plots.common import MAX_STYLES, FORMATS, config_columns, file_part, n_distinct, save, swept_keys

    if len(paths) < 2:
        raise GradflowError(f"compare needs two or more folders; got {len(paths)}")
    kind = _choose("--kind", kind, COMPARE_KINDS)
    fmt = _choose("--format", fmt.lower(), FORMATS)
    o = Options(quantity=quantity, step=parse_step(step), color=color, by_source=panels)
    _refuse_unused(kind, {k: getattr(o, k) for k in ("quantity", "step", "color")})
    if panels and kind not in ("profile", "curves"):
        raise GradflowError(f"--panels does not apply to --kind {kind} (it applies to: profile, curves)")
    sources = source_labels(paths)
    for p in paths:
        store.find_runs(p)
    out_dir = out if out is not None else COMPARE_DIR
    store.check_writable(out_dir)

    runs = pd.concat([gradflow.load(p, table="runs").assign(source=s) for p, s in zip(paths, sources)],
                     ignore_index=True)
    by = list(by or [])
    for k in by:
        lacking = [s for s in sources if k not in runs.columns or runs.loc[runs["source"] == s, k].isna().all()]
        if k not in config_columns(runs) or lacking:
            choices = list(dict.fromkeys(swept_keys(runs, exclude=())))
            raise GradflowError(f"--by {k!r} is not a config key of {', '.join(lacking) or 'these results'}; "
                                f"choices: {', '.join(choices) or '(nothing varies)'}")
    by = by or match_keys(runs, sources)

    table = KINDS[kind][0]
    frames = []
    for p, s in zip(paths, sources):
        df = runs[runs["source"] == s] if table == "runs" else gradflow.load(p, table=table)
        if df.empty:
            how = f"; run with {OPTIONAL_TABLES[table]}" if table in OPTIONAL_TABLES else ""
            raise GradflowError(f"{p} has no {table} rows{how}")
        frames.append(df.assign(source=s, run=s + "/" + df["run"].astype(str)))  # run ids unique across sources
    differ = differing_keys(runs, sources)
    df = pd.concat(frames, ignore_index=True).drop(columns=list(differ), errors="ignore")  # said by `source`
    check_options(df, kind, o, " and ".join(map(str, paths)))
    swept = swept_keys(df)
    rest = [k for k in swept if k != (o.color or swept[0])] if swept else []
    if kind in ("profile", "curves") and not panels and rest:  # colour, source as line style, panels: no two alike
        o.facet = next((k for k in reversed(rest) if n_distinct(df[k]) <= MAX_STYLES), None)
    fig, stem = draw(kind, df, o)
    stem = stem.split("-facet-")[0]  # the panels follow from the data; the name says what was asked
    name = file_part("-vs-".join(file_part(s, 40) for s in sources), 160)
    written = save(fig, out_dir / f"compare-{stem}-{name}.{fmt}", fmt)

    show_comparison(comparison(runs, sources, by), sources, by, differ)
    _print_paths([written])


app.command("plot")(plot)
app.command("compare")(compare)
