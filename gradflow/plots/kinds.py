"""The figure kinds `gradflow plot` and `gradflow compare` offer: which table each reads, which
options it takes, the checks on those options (one GradflowError naming the choices), and drawing
one kind into a figure and a file stem. The CLI only parses and prints; tests call `draw` directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from gradflow.summary import runs_table
from gradflow.errors import GradflowError, NoRows, NotVaried, did_you_mean
from gradflow.keys import (SEED_KEYS, between_sources, full_key, n_distinct, ordered_values, rows_with, run_names,
                           swept_keys)
from gradflow.plots.labels import RATIOS, is_recurrent
from gradflow.plots.meanfield import GRID_THEORIES
from gradflow.plots.save import file_part
from gradflow.probes.quantities import JACOBIAN_MODEL
from gradflow.plots.series import not_a_run, spread_quantities, steps_phrase, the_run

# kind -> (the table it reads, the options it uses): any other option is refused, never silently ignored
KINDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "standard": ("all", ()),
    "profile": ("layers", ("quantity", "step", "color", "facet")),
    "heatmap": ("layers", ("quantity", "run")),
    "curves": ("metrics", ("color", "facet")),
    "gradnorm": ("metrics", ("color", "facet")),
    "ratio": ("layers", ("quantity", "step", "color")),
    "grid": ("runs", ("x", "y", "value", "theory", "facet")),
    "hist": ("hist", ("run", "step")),
    "spectrum": ("jacobian", ("step", "color")),
}
COMPARE_KINDS = ("profile", "curves", "gradnorm", "ratio", "spectrum")  # the kinds that overlay several runs
KIND_HELP = "; ".join([
    "standard: the usual set (default)", "profile: a quantity per layer at one step",
    "heatmap: one run's quantity over layer x step", "curves: loss and accuracy over training",
    "gradnorm: the gradient norm before clipping over training, with the clip threshold",
    "ratio: first/last-layer ratio of a quantity vs depth", "grid: a final number over two swept keys",
    "hist: one run's per-layer histograms (probe=full)", "spectrum: input-output Jacobian singular values (probe=full)",
])
OPTIONAL_TABLES = {"hist": "probe=full (or probe.histograms=true); a Recorder's runs record none",
                   "jacobian": "probe=full (or probe.jacobian=true); a Recorder's runs record none"}


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
GRID_VALUE = "final.test_acc"  # what a grid's cells show without --value


def choose(option: str, value: str, choices) -> str:
    if value not in choices:
        raise GradflowError(f"{option} {value!r} is not allowed{did_you_mean(value, list(choices))}; "
                            f"choices: {', '.join(choices)}")
    return value


def refuse_unused(kind: str, given: dict[str, Any], kinds: Sequence[str] | None = None) -> None:
    """An option given that --kind does not use: one line naming the kinds that do and what this kind
    takes, among `kinds` and the options in `given` (what the command has: compare has no --facet)."""
    uses = [o for o in KINDS[kind][1] if o in given]
    for name, v in given.items():
        if v is not None and name not in uses:
            takers = [k for k, (_, opts) in KINDS.items() if name in opts and (kinds is None or k in kinds)]
            raise GradflowError(f"--{name} does not apply to --kind {kind}"
                                + (f" (it applies to: {', '.join(takers)})" if takers else "")
                                + (f"; --kind {kind} takes: {', '.join('--' + o for o in uses)}" if uses else ""))


def load_table(path: Path, table: str, include_stale: bool = False) -> pd.DataFrame:
    """One table of PATH (stale and incomplete runs left out unless include_stale); GradflowError saying
    how to get it when it is empty."""
    from gradflow import store

    listed = store.runs(path)  # every run.json read once
    if (why := store.nothing_drawn_reason(path, listed, include_stale)):
        raise GradflowError(why)
    df = runs_table(path, include_stale=include_stale, listed=listed) if table == "runs" else \
        store.load(path, table, include_stale, listed)
    if df.empty:
        if table == "jacobian":  # (probe=full does not make one for a transformer: saying so sent users round)
            runs = runs_table(path, include_stale=include_stale, listed=listed)
            models = set(runs["model.name"].dropna().astype(str)) if "model.name" in runs else set()
            if models and JACOBIAN_MODEL not in models:
                raise GradflowError(f"{path} has no jacobian rows: Jacobian spectra are recorded for "
                                    f"model={JACOBIAN_MODEL} only, and its runs are model={', '.join(sorted(models))}")
        how = f"; run with {OPTIONAL_TABLES[table]}" if table in OPTIONAL_TABLES else ""
        raise NoRows(f"{path} has no {table} rows{how}")
    return df


def check_options(df: pd.DataFrame, kind: str, o: Options, where: str) -> None:
    """Keys must be swept (color, facet) or columns (x, y); quantity, value, step and run must exist."""
    swept = swept_keys(df) + (["source"] if n_distinct(df["source"]) > 1 else [])
    for name in ("color", "facet", "x", "y"):  # a key by the short name a table shows it under: depth, init
        key = getattr(o, name)
        if key is not None:
            setattr(o, name, full_key(df, key, swept) or key)
    for name in ("color", "facet"):
        key = getattr(o, name)
        if key is not None and key not in swept:
            why = "does not vary" if key in df.columns else "is not a column"
            if key in SEED_KEYS and key in df.columns and n_distinct(df[key]) > 1:  # (it varies: it is no axis)
                raise GradflowError(f"--{name} {key}: seeds are no line key (each config's seeds are drawn as one "
                                    f"median line with a min-max band; gradflow plot RUN draws one seed's run); "
                                    f"choices: {', '.join(swept) or '(nothing varies)'}")
            raise (NotVaried if key in df.columns else GradflowError)(
                f"--{name} {key!r} {why} in {where}{did_you_mean(key, swept)}; "
                f"choices: {', '.join(swept) or '(nothing varies)'}")
    if o.x is not None and o.x == o.y:
        raise GradflowError(f"--x and --y are both {o.x}: a grid needs two different keys; choices: "
                            f"{', '.join(swept) or '(none)'}")
    if o.color is not None and o.color == o.facet:  # (each panel one colour: the lines of another key merged)
        others = [k for k in swept if k != o.color]
        raise GradflowError(f"--color and --facet are both {o.color}: each panel would hold one colour; colour by "
                            f"another key{': ' + ', '.join(others) if others else ' (none varies)'}, or drop one")
    for name in ("x", "y"):
        key = getattr(o, name)
        if key is not None and key not in df.columns:
            raise GradflowError(f"--{name} {key!r} is not a column of {where}; choices: {', '.join(swept) or '(none)'}")
    if o.quantity is not None and "quantity" in df.columns and not (df["quantity"] == o.quantity).any():
        have = list(map(str, ordered_values(df["quantity"])))
        raise GradflowError(f"--quantity {o.quantity!r} is not in {where}{did_you_mean(o.quantity, have)}; "
                            f"choices: {', '.join(have)}")
    if kind == "grid" and o.value is None and GRID_VALUE not in df.columns:  # (a loop that logged no test accuracy)
        o.value = GRID_VALUE
        option = "--value (its default) "
    else:
        option = "--value "
    if o.value is not None and o.value not in df.columns:
        from gradflow.plots.curves import summary_column

        o.value = summary_column(df, o.value, option, where)  # (or ls's header of it: 'chi1 meas')
    if o.theory is not None:
        choose("--theory", o.theory, GRID_THEORIES)
    runs = run_names(df["run"])
    shown = ", ".join(runs[:8]) + (", ..." if len(runs) > 8 else "")
    if o.run is not None:
        o.run = the_run(o.run, runs, df) or o.run
    if o.run is not None and str(o.run) not in runs:
        raise GradflowError(not_a_run(o.run, runs, where, 8, df=df))
    if o.run is None and "run" in KINDS[kind][1] and len(runs) > 1 and not _one_at_init(kind, df, o):
        raise GradflowError(f"--kind {kind} draws one run and {where} holds {len(runs)}; "
                            f"pass --run with one of: {shown}")
    if kind == "ratio" and o.quantity in RATIOS and "quantity" in df.columns and o.quantity not in (
            have := [q for q in RATIOS if q in spread_quantities(df)]):
        why = " (a recurrent net's time steps have no weight of their own: its grad_norm is the head's alone)" \
            if is_recurrent(df) and o.quantity == "grad_norm" else ""
        raise GradflowError(f"--quantity {o.quantity} has no first and last probe point in any run of {where}, so "
                            f"no ratio{why}; " + (f"choices: {', '.join(have)}" if have else
                                                  "nor has any other quantity: no ratio to draw"))
    if kind == "ratio" and o.step not in (None, 0, "last"):
        raise GradflowError(f"--step {o.step} is not allowed for --kind ratio; choices: 0 (init), last (end)")
    if isinstance(o.step, int) and "step" in df.columns and kind != "ratio" and not (df["step"] == o.step).any():
        raise GradflowError(f"--step {o.step} was not probed in {where}; probed steps: "
                            f"{steps_phrase(df['step'], o.step)} (or last)")


def default_quantity(df: pd.DataFrame) -> str:
    """The per-layer quantity a kind draws when --quantity is not given: the weight gradient, or for
    recurrent nets (depth in time) the back-propagated signal, as the standard set draws them: their time
    steps have no weight of their own, so grad_norm is the head's alone, one point per run."""
    if is_recurrent(df) and "quantity" in df.columns and (df["quantity"] == "signal_norm").any():
        return "signal_norm"
    return "grad_norm"


# --- drawing one kind ----------------------------------------------------------------------------
def _step_name(step: int | str) -> str:
    return "last" if step == "last" else f"step{step}"


def profile_init_keys(df: pd.DataFrame, o: Options) -> list[str]:
    """The swept keys the profile `o` asks for draws as not varying: at step 0, those without effect there
    (`profiles.init_keys`: optim.lr, train.steps, ...) but a --color or --facet asked for."""
    from gradflow.plots.profiles import init_keys

    return init_keys(df, o.quantity or default_quantity(df), 0 if o.step is None else o.step, (o.color, o.facet))


def _one_at_init(kind: str, df: pd.DataFrame, o: Options) -> bool:
    """Whether the runs of `df` are one histogram at step 0 (`distributions.one_at_init`: alike but in keys
    acting on the updates, optim.lr, and counted the same), which --kind hist draws without --run."""
    if kind != "hist" or o.step not in (None, 0, "0"):
        return False
    from gradflow.plots.distributions import one_at_init

    return bool(one_at_init(df)[1])


def draw(kind: str, df: pd.DataFrame, o: Options):
    """(Figure, file stem) for one kind from its table."""
    from gradflow.plots import figures  # matplotlib only when drawing: `gradflow --help` stays fast

    def tag(name: str, key: str | None) -> str:
        return f"-{name}-{file_part(key)}" if key else ""

    step = 0 if o.step is None else o.step
    if kind == "profile":
        q = o.quantity or default_quantity(df)
        rows = df[df["quantity"] == q] if "quantity" in df.columns else df
        if len(rows) and rows.groupby("run")["layer"].nunique().max() < 2:  # (a dot: the standard set says why)
            from gradflow.plots.standard import one_point_reason

            raise GradflowError(f"no profile of {q} to draw: {one_point_reason(df, rows)}")
        fig = figures.profile(df, q, step=step, color=o.color, facet=o.facet, by_source=o.by_source)
        return fig, f"profile-{q}-{_step_name(step)}" + tag("color", o.color) + tag("facet", o.facet)
    if kind == "heatmap":
        q = o.quantity or default_quantity(df)
        rows = df[(df["quantity"] == q) & ((df["run"] == o.run) if o.run else True)]
        if rows["step"].nunique() == 1:  # (one column under a step axis of -0.4 ... 0.4: the standard set says why)
            raise GradflowError(f"no heatmap of {q} to draw: step {int(rows['step'].iat[0])} alone recorded, and a "
                                "heatmap is layers over steps; --kind profile draws that step")
        which = f"-{file_part(o.run)}" if o.run and df["run"].nunique() > 1 else ""
        return figures.heatmap(df, run=o.run, quantity=q), f"heatmap-{q}{which}"
    if kind == "curves":
        rows = df[df["metric"].isin(["loss", "acc"])]
        if len(rows) and not (rows["step"] > rows["step"].min()).any():  # (a dot per run is no curve)
            raise GradflowError(f"no curves to draw: step {int(rows['step'].min())} alone recorded (a run of "
                                "train.steps=0 evaluates its initialization alone); --kind profile draws it")
        fig = figures.curves(df, color=o.color, by_source=o.by_source, facet=o.facet)
        return fig, "curves" + tag("color", o.color) + tag("facet", o.facet)
    if kind == "gradnorm":
        fig = figures.gradnorm(df, color=o.color, by_source=o.by_source, facet=o.facet)
        return fig, "gradnorm" + tag("color", o.color) + tag("facet", o.facet)
    if kind == "ratio":
        when = "final" if step == "last" else "init"
        q = o.quantity or default_quantity(df)
        stem = f"ratio-{when}" if q == "grad_norm" else f"ratio-{q}-{when}"
        return figures.ratio(df, when, by=o.color, quantity=q), stem + tag("color", o.color)
    if kind == "grid":
        if o.x is None or o.y is None:
            raise GradflowError("--kind grid needs --x KEY and --y KEY (e.g. --x init.sw2 --y model.depth)")
        value = o.value or GRID_VALUE
        fig = figures.grid(df, o.x, o.y, value=value, theory=o.theory, facet=o.facet)
        return fig, f"grid-{value}-{o.x}-{o.y}" + tag("facet", o.facet)
    if kind == "hist":
        which = f"-{file_part(o.run)}" if o.run and df["run"].nunique() > 1 else ""
        return figures.hist(df, run=o.run, step=step), f"hist-{_step_name(step)}{which}"
    if kind == "spectrum":
        return figures.spectrum(df, step=step, color=o.color), f"spectrum-{_step_name(step)}" + tag("color", o.color)
    raise AssertionError(kind)




def figure_parts(kind: str, df: pd.DataFrame, o: Options) -> list[tuple[list[str], pd.DataFrame]]:
    """The figures `kind` draws of `df`, each as (the key=value items that pick its runs, its rows): one, with
    no items; or, for curves and gradnorm whose swept keys are more than colour, line style, marker and the
    panels show (`unshown_keys`), and profiles whose keys are more than colour, marker and the panels show
    (`profiles.unshown_keys`), one per value of the key left over (of several, the one with the fewest
    values; again within each where keys are still left), so no two runs are drawn alike."""
    if kind not in ("curves", "gradnorm", "profile"):
        return [([], df)]
    from gradflow.fmt import fmt
    from gradflow.plots import curves, profiles

    if kind == "profile":
        left = profiles.unshown_keys(df, o.quantity or default_quantity(df), 0 if o.step is None else o.step,
                                     o.color, o.facet, o.by_source)
    else:
        left = curves.unshown_keys(df, kind, o.color, o.facet, o.by_source)
    if not left:
        return [([], df)]
    key = min(left, key=lambda k: n_distinct(df[k]))
    return [([f"{key}={fmt(v)}", *items], part)
            for v in ordered_values(df[key])
            for items, part in figure_parts(kind, _part_of(rows_with(df, key, v)), o)]


PART = "figure_part"  # a DataFrame's attrs: its rows are one figure of several (`figure_parts`)


def _part_of(df: pd.DataFrame) -> pd.DataFrame:
    """`df` marked as one figure of several: its runs may share a value of the colour or facet key that the whole
    data varies in (the command checked it against that: `series.check_key`)."""
    df = df.copy()
    df.attrs[PART] = True
    return df


def part_names(parts: list[tuple[list[str], pd.DataFrame]]) -> list[str]:
    """Each of `figure_parts`' figures' file name ending, `optim.lr=0.1` ("" for the one figure of all runs): its
    items as a file name has them, and where two read alike there (tag=a/b and tag=a b, both tag=a_b), a hash
    of its items after it, so that neither figure overwrites the other."""
    import hashlib
    from collections import Counter

    names = [file_part(",".join(items)) if items else "" for items, _ in parts]
    count = Counter(names)
    return [n if count[n] == 1 else f"{n}-{hashlib.sha1(','.join(items).encode()).hexdigest()[:6]}"
            for n, (items, _) in zip(names, parts)]


def split_note(kind: str, parts: list[tuple[list[str], pd.DataFrame]]) -> str | None:
    """The terminal's line where `figure_parts` drew a figure per value, naming the keys and the figures."""
    keys = list(dict.fromkeys(item.split("=")[0] for items, _ in parts for item in items))
    if not keys:
        return None
    return (f"{kind}: more swept keys than {channels(kind)} show; one figure per value of "
            f"{' x '.join(keys)} ({len(parts)} figures)")


def channels(kind: str | None) -> str:
    """What tells `kind`'s lines apart: a profile has no line style (its dashes are the theory's)."""
    return "colour, marker and panels" if kind == "profile" else "colour, line style, marker and panels"


def say_part(fig, items: list[str], kind: str | None = None) -> None:
    """The title's last line names the runs of one of several figures (`figure_parts`)."""
    if items:
        fig.suptitle(f"{fig.get_suptitle()}\nonly the runs with {', '.join(items)} (a figure per value: more keys "
                     f"than {channels(kind)} show)", fontsize=10)


def draw_part(draw: Any, items: list[str], *args, kind: str | None = None, **kwargs):
    """`draw(*args, **kwargs)`, the figure of one of `figure_parts`' parts, its title naming the part."""
    fig = draw(*args, **kwargs)
    say_part(fig, items, kind)
    return fig


def overlay_facet(df: pd.DataFrame, kind: str, o: Options) -> str | None:
    """The panels of an overlay of sources: colour and line style (the source) carry two keys, so a
    further swept key with few values splits panels and no two lines look alike. Of a profile at step 0,
    never a key without effect there (`profiles.init_keys`: optim.lr), whose runs are one line."""
    from gradflow.plots.style import MAX_STYLES

    swept = swept_keys(df)
    if kind == "profile" and "quantity" in df.columns:
        inert = profile_init_keys(df, o)
        swept = [k for k in swept if k not in inert]
    rest = [k for k in swept if k != (o.color or swept[0])] if swept else []
    rest = [k for k in rest if k not in between_sources(df, rest)]  # (the sources' line styles show those)
    if kind not in ("profile", "curves", "gradnorm") or o.by_source or not rest:
        return None
    return next((k for k in reversed(rest) if n_distinct(df[k]) <= MAX_STYLES), None)
