"""Figures over training and over the sweep: loss/accuracy curves, the first/last-layer ratio
against depth, and a per-run summary over two swept keys (grid)."""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import colormaps, patheffects
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle
from matplotlib.ticker import NullLocator

from gradflow.errors import GradflowError, NotVaried, did_you_mean
from gradflow.fmt import fmt
from gradflow.metrics import accuracy_label, is_regression
from gradflow.overrides import without_item
from gradflow.keys import (config_columns, distinct_keys, is_missing, is_numeric_key, n_distinct, not_swept_together,
                           ordered_values, rows_with, single_value, swept_keys, vkey)
from gradflow.plots.labels import (
    RATIOS, SPLITS, SUMMARIES, Summary, is_recurrent, key_label, set_title, short_key, value_label,
)
from gradflow.plots.meanfield import GRID_THEORIES, WEIGHT_LINE_NOTE, chi1_for, python_value, weight_line_left
from gradflow.plots.series import (
    Series, check_key, collect_series, first_last, require, rows_of, setting, sort_series, spread_quantities,
    with_gaps,
)
from gradflow.summary import with_module_depth
from gradflow.plots.style import (
    AUTO_PANELS, PANEL_TITLE_WIDTH, THEORY_STYLE, Palette, bottom_and_left, colour_key, draw_series, extra_handles,
    facet_grid, has_marks, init_note, label_minor_within, label_short_log_axis, legend, line_weight, marker_key,
    new_figure, no_effect_at_init, note_if_empty, panels_by, record, source_title,
    spans_decades, step_axis, style_key, unshown, unshown_notes, unshown_panels, wrap_words,
)

# the ratio = 1 line: a faint grey band, not a line style a series may have (dotted, a norm=none series's, read
# as the reference beside it)
REFERENCE_STYLE = dict(color="0.5", ls="-", lw=5.0, alpha=0.25, zorder=0.5)


METRICS_REQUIRED = ("run", "step", "split", "metric", "value")


RUNS_REQUIRED = ("run",)


def to_divergence(metrics: pd.DataFrame, drawn: pd.DataFrame) -> pd.DataFrame:
    """The drawn rows, each diverged run's curves carried to the step it diverged at (its last step in
    `metrics`: the training loop logs that step's batch loss and gradient norm) with a non-finite value
    there, where its evaluations stopped earlier: the mark is then drawn at that step, not at the last
    evaluation (a run diverging at step 51 read as NaN at step 0)."""
    status = drawn["status"] if "status" in drawn else pd.Series(dtype=object)
    diverged = drawn[status == "diverged"]
    if diverged.empty:
        return drawn
    ends = metrics[metrics["run"].isin(set(diverged["run"]))].groupby("run")["step"].max()
    last = diverged.sort_values("step").groupby(["run", "split", "metric"], sort=False).tail(1)
    extra = last[last["step"].to_numpy() < ends.reindex(last["run"]).to_numpy()]
    if extra.empty:
        return drawn
    extra = extra.assign(step=ends.reindex(extra["run"]).to_numpy(), value=np.nan)
    return pd.concat([drawn, extra], ignore_index=True)


LEVEL_STYLES = [(0, (1, 1.5)), (0, (5, 2)), (0, (6, 2, 1, 2))]  # reference lines, told apart from runs' styles


AUTO_CURVE_PANELS = 3  # pairs of columns (6 panels across) for the keys colour and line style leave out


@dataclass
class OverSteps:
    """How the lines of a figure over training steps (curves, gradnorm) are told apart."""
    sources: list  # the results folders, in the order given
    by_source: bool  # a panel per results folder (asked for, and there are several)
    swept: list[str]
    group_keys: list[str]  # one line per distinct value of these
    color: str | None
    style: str | None
    also: list[str]  # swept keys neither colour, style nor marker shows (a panel per combination, or in the title)
    between: list[str]  # keys only the sources differ in (their line styles show them)
    marker: str | None = None  # a key shown by a marker on each line, where `also` would need too many panels


def over_steps_keys(df: pd.DataFrame, what: str, color: str | None, facet: str | None,
                    by_source: bool, panels: int = AUTO_PANELS) -> OverSteps:
    """The colour, the line style, the marker and the keys left over for a figure over steps of `df`'s runs:
    `colour_key`'s key colours, as in the set's profiles (runs not swept together: one legended line each), a
    second with few values styles, the sources their own style where no facet or panel per source takes them;
    where the keys left would need more than `panels` panels, one with few values takes a marker
    (`marker_key`)."""
    sources = ordered_values(df["source"])
    multi_source = len(sources) > 1
    by_source = by_source and multi_source
    if by_source and facet is not None:
        raise GradflowError(f"{what}: pass facet=... or by_source=True, not both (by_source facets by results folder)")
    swept = swept_keys(df)
    check_key(color, "color", swept + (["source"] if multi_source else []), df)  # (compare --color source)
    check_key(facet, "facet", swept + (["source"] if multi_source else []), df)
    group_keys = swept + (["source"] if multi_source else [])
    if color is None and facet is None and not_swept_together(df, swept):
        # runs not swept together: one legended line each (each seed its own line too: the legend names every run)
        return OverSteps(sources, by_source, swept, ["run"], "run", None, [], [])
    # the sources take the line styles, where no facet, panel or colour does
    by_style = multi_source and "source" not in (facet, color) and not by_source
    color = color or colour_key(df, swept, facet, styles_free=not by_style)
    style = style_key(df, swept, (color, facet), by_style)
    also, between = unshown(df, swept, (color, style, facet))
    marker = marker_key(df, "source" if by_source else facet, also, panels)
    also = [k for k in also if k != marker]
    return OverSteps(sources, by_source, swept, group_keys, color, style, also, between, marker)


def unshown_keys(df: pd.DataFrame, what: str, color: str | None = None, facet: str | None = None,
                 by_source: bool = False) -> list[str]:
    """The swept keys a figure over steps of `df` (`what`: curves or gradnorm) leaves without colour, line
    style, marker or panel (more combinations than AUTO_PANELS panels): those its title would name, `lines
    also differ in ...`, its lines drawn alike in them; [] where every key has a channel."""
    k = over_steps_keys(df, what, color, facet, by_source, AUTO_CURVE_PANELS if what == "curves" else AUTO_PANELS)
    if not k.also or unshown_panels(df, "source" if k.by_source else facet, k.also, AUTO_PANELS) is not None:
        return []
    return k.also


def curves(metrics: pd.DataFrame, color: str | None = None, by_source: bool = False,
           facet: str | None = None, levels: dict[str, float] | None = None) -> Figure:
    """Loss (top) and accuracy (bottom) against step; columns train | test (or one per results
    folder with by_source=True, train solid / test dotted). One line per run or seed group,
    coloured by a swept key; the loss axis is logarithmic when it spans two decades or more, or a spike rises
    SPIKE times above the rest (see _loss_log).
    facet: a swept key with one train | test pair of columns per value (for a third swept key); without
    one, the swept keys that colour and line style leave out get a pair per combination of their values
    (up to AUTO_CURVE_PANELS side by side); where those would be more, one of them with few values takes a
    marker on each line, and the pairs of the rest go on rows of AUTO_CURVE_PANELS (up to AUTO_PANELS).
    levels: reference losses drawn across the loss panels, by legend label (a reproduction's
    thresholds: {"1/6: predicting the mean": 0.1667}).
    """
    df = require(metrics, "metrics", METRICS_REQUIRED)
    rows, splits = _curve_rows(df)
    # what "accuracy" counts: for regression runs (the adding problem), predictions within a tolerance
    tasks = df.drop_duplicates("run")  # (run is a required column)
    acc_label = accuracy_label(is_regression(r.get("data.name"), r.get("data.task")) for _, r in tasks.iterrows())
    level_lines = [(label, y, LEVEL_STYLES[k % len(LEVEL_STYLES)])  # (legend label, loss, line style)
                   for k, (label, y) in enumerate((levels or {}).items())]
    df = to_divergence(df, df[df["metric"].isin(rows) & df["split"].isin(splits)])
    k = over_steps_keys(df, "curves", color, facet, by_source, AUTO_CURVE_PANELS)
    # by_source: a panel per results folder, train solid and test dotted in it; unless a swept key needs the
    # line style, and then a panel per folder and split (both activations drawn alike read as one)
    split_style = k.by_source and k.style is None
    palette = Palette(df, k.color, k.style, marker=k.marker)
    columns = _curve_columns(df, k, splits, facet, split_style)
    fig, axes, across, title_width = _curve_axes(len(rows), columns)
    sort_keys = [key for key in (k.color, k.style, k.marker) if key] + columns.also
    everything: list[Series] = []
    cut_at = None  # the loss axis's top where diverging runs would squash the others (see _diverging_cut)
    for i, metric in enumerate(rows):
        log = metric == "loss" and _loss_log(df.loc[df["metric"] == metric, "value"].to_numpy())
        in_row = len(everything)
        for j, (col_title, col_rows, col_splits) in enumerate(columns.cols):
            ax = axes[i, j]
            ax.grid(True, alpha=0.25, lw=0.5)
            if log:
                ax.set_yscale("log")
                label_short_log_axis(ax, df.loc[df["metric"] == metric, "value"])
            drawn = _draw_panel(ax, col_rows[col_rows["metric"] == metric], col_splits, df, k.group_keys, log,
                                palette, sort_keys, split_style)
            note_if_empty(ax, drawn)
            everything += drawn
            if i == 0:
                ax.set_title(wrap_words(col_title.replace("\n", " "), title_width, long_words=True), fontsize="small")
            if metric == "loss":
                for _, y, ls in level_lines:
                    ax.axhline(y, ls=ls, zorder=1.5, gid="level", **LEVEL_LINE)
            if j % across == 0:
                ax.set_ylabel({"loss": "loss", "acc": acc_label}[metric] + (" (log)" if log else ""))
            if i == len(rows) - 1:
                _curve_steps(ax, df)
        if log:  # (the row shares its y axis and its tickers)
            label_minor_within(axes[i, 0], np.concatenate(
                [[np.nan], *(np.r_[s.lo, s.hi] for s in everything[in_row:] if not s.nonfinite.any())]))
            cut_at = _diverging_cut(df[df["metric"] == metric])
            if cut_at is not None:
                axes[i, 0].set_ylim(top=cut_at)  # (the row shares its y axis)
                for ax in axes[i]:  # a line of few points marks them unclipped (draw_series): here it leaves the top
                    for line in ax.get_lines():
                        line.set_clip_on(True)
    palette.colorbar(fig, list(axes.flat))
    handles, title = palette.handles(has_marks(everything))
    if split_style:
        handles += [Line2D([], [], color="0.2", ls=SPLIT_STYLES[s], label=SPLITS.get(s, s)) for s in splits]
    if "loss" in rows:
        handles += [Line2D([], [], ls=ls, label=label, **LEVEL_LINE) for label, _, ls in level_lines]
    if cut_at is not None:
        handles.append(Line2D([], [], ls="none", label=f"loss axis cut at {CUT_DECADES} decades above\n"
                                                                "the runs that stay finite"))
    legend(fig, handles + extra_handles(everything, True), title)
    what = "Loss and accuracy" if len(rows) == 2 else {"loss": "Loss", "acc": "Accuracy"}[rows[0]]
    extra = unshown_notes(columns.also, k.between)
    # gradflow's runs evaluated at step 0 and their last step alone (train.eval_every, 100 by default, at or past
    # train.steps): a straight line each, which read as a curve
    # (not where it cannot help: a run of 0 or 1 steps, or one evaluated at every step already)
    every, steps = setting(df, "train.eval_every"), setting(df, "train.steps")
    if every is not None and steps is not None and everything and all(len(s.x) <= 2 for s in everything) \
            and (pd.to_numeric(every, errors="coerce") > 1).all() and (pd.to_numeric(steps, errors="coerce") > 1).all():
        extra.append("evaluated at the first and last step alone: lower train.eval_every for a curve")
    set_title(fig, f"{what} during training", df, extra, skip=k.swept)
    return fig


LEVEL_LINE = {"color": "0.35", "lw": 0.9}  # a reference level's colour and width (its dashes: LEVEL_STYLES)


SPLIT_STYLES = {"train": "-", "test": ":", "batch": "-"}  # by_source's line style of each split


def _curve_rows(df: pd.DataFrame) -> tuple[list[str], list[str]]:
    """The metrics drawn (loss, acc: a row of panels each) and the splits (train, test; else batch)."""
    rows = [m for m in ("loss", "acc") if (df["metric"] == m).any()]
    if not rows:
        raise GradflowError("the metrics table has no loss or acc rows; metrics present: "
                            + ", ".join(map(str, ordered_values(df["metric"]))))
    splits = [s for s in ("train", "test") if (df["split"] == s).any()] or \
             [s for s in ("batch",) if (df["split"] == s).any()]
    if not splits:
        raise GradflowError("the metrics table has no train, test or batch rows; splits present: "
                            + ", ".join(map(str, ordered_values(df["split"]))))
    return rows, splits


@dataclass
class _Columns:
    """The curves' columns of panels: (title, their rows of df, the splits drawn in them) each; `per` of
    them show one panel's runs (train | test), on `blocks` blocks of rows; `also`: the swept keys that
    neither a channel nor a panel shows (the title names them)."""
    cols: list[tuple[str, pd.DataFrame, list[str]]]
    per: int
    blocks: int
    also: list[str]


def _curve_columns(df: pd.DataFrame, k: OverSteps, splits: list[str], facet: str | None,
                   split_style: bool) -> _Columns:
    """The keys neither the colour nor the line style shows get a pair of columns per combination of their
    values (with the facet's, where one is given; by_source, with each folder's: a folder's runs of two norms
    were drawn alike in its columns); more than AUTO_CURVE_PANELS go on blocks of rows of that many (a pair of
    rows, loss over accuracy, each). split_style: a column per panel, both splits in it."""
    also = k.also
    split = unshown_panels(df, "source" if k.by_source else facet, also, AUTO_PANELS)
    blocks = 1 if split is None else math.ceil(len(split[0]) / AUTO_CURVE_PANELS)
    if split_style and split is not None:
        cols, also = [(title, sub, splits) for sub, title in zip(*split)], []
    elif split_style:
        cols = [(source_title(df, v, f"{key_label('source')}: {v}"), rows_with(df, "source", v), splits)
                for v in k.sources]
    elif split is not None:
        cols = [(f"{title}: {SPLITS.get(sp, sp)}", sub, [sp]) for sub, title in zip(*split) for sp in splits]
        also = []
    elif k.by_source:
        cols = [(f"{source_title(df, v, fmt(v))}: {SPLITS.get(sp, sp)}", rows_with(df, "source", v), [sp])
                for v in k.sources for sp in splits]
    elif facet:
        cols = [(f"{value_label(facet, v)}: {SPLITS.get(sp, sp)}", rows_with(df, facet, v), [sp])
                for v in ordered_values(df[facet]) for sp in splits]
    else:
        cols = [(SPLITS.get(sp, sp), df, [sp]) for sp in splits]
    per = len(cols) // len(split[0]) if split is not None else 1  # columns per panel's runs (train | test)
    return _Columns(cols, per, blocks, also)


def _curve_axes(n_metrics: int, c: _Columns) -> tuple[Figure, np.ndarray, int, int]:
    """The figure; its axes[i, j], metric i of column j (the columns past the first block's on the rows below
    it), each metric's row sharing its y axis, inner panels unlabelled; the columns in each block (no pair
    broken); and the characters a column's title may take on a line."""
    across = math.ceil(len(c.cols) / c.per / c.blocks) * c.per
    size = (min(3.2 * across + 2.4, 16.0), (2.6 * n_metrics + 0.4) * c.blocks + 0.5)
    fig, grid_axes = new_figure(n_metrics * c.blocks, across, size, sharex=True, sharey=False)
    axes = np.array([[grid_axes[b * n_metrics + i, col] for b in range(c.blocks) for col in range(across)]
                     for i in range(n_metrics)])[:, :len(c.cols)]
    for i in range(n_metrics):
        for j, ax in enumerate(axes[i]):
            if j:
                ax.sharey(axes[i, 0])
            if j % across:  # (minor ticks too: label_minor_within labels some)
                ax.tick_params(which="both", labelleft=False)
    for col in range(len(c.cols) - (c.blocks - 1) * across, across):  # a last block of fewer pairs: no spare panels
        for i in range(n_metrics):
            grid_axes[(c.blocks - 1) * n_metrics + i, col].remove()
    for ax in axes[-1]:  # each block's steps under its own panels
        ax.tick_params(labelbottom=True)
    # each column's title over as many lines as its width needs (six columns ran into each other)
    return fig, axes, across, int(PANEL_TITLE_WIDTH / 4.0 * (size[0] - 2.4) / across)


def _draw_panel(ax, panel: pd.DataFrame, splits: list[str], df: pd.DataFrame, group_keys: list[str], log: bool,
                palette: Palette, sort_keys: list[str], split_style: bool) -> list[Series]:
    """One panel's lines, a split at a time (by_source's split_style: each split its own line style); the
    series drawn."""
    drawn: list[Series] = []
    for split in splits:
        part = panel[panel["split"] == split]
        if part.empty:
            continue
        series = sort_series(collect_series(part, "step", group_keys, log, mark_diverged_end=True), df, sort_keys)
        lw, alpha = line_weight(len(series))
        for s in series:
            ls = SPLIT_STYLES.get(split, "-") if split_style else palette.style_of(s.config)
            draw_series(ax, s, palette.color_of(s.config), ls, lw, alpha, marker=palette.marker_for(s.config))
        drawn += series
    return drawn


def _curve_steps(ax, df: pd.DataFrame) -> None:
    """The step axis under a bottom panel, judged on the evaluations (diverged runs' steps among evenly spaced
    ones, 4, 5, 6, 7, 9 before 10, 20, ..., read as log-spaced steps, a symlog axis), on to the last step that
    diverged."""
    steps = df["step"].unique()
    on_grid = df["step"] != df["diverged_step"] if "diverged_step" in df else df["step"].notna()
    evaluated = df.loc[on_grid, "step"].unique()
    step_axis(ax, evaluated if len(evaluated) > 1 else steps)
    if len(evaluated) > 1:
        ax.set_xlim(float(steps.min()), float(steps.max()))


SPIKE = 5.0  # a loss this many times the 95th percentile of the rest: a spike that would flatten a linear axis


def _loss_log(values: np.ndarray) -> bool:
    """A loss axis on a log scale: where the losses span two decades, or where a spike rises SPIKE times above
    the 95th percentile of them (one evaluation at 40 beside runs at 2-2.4 squashed every curve into a flat line
    at the bottom of a linear axis; on a log one each is still read)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    return spans_decades(v) or (len(v) > 1 and v.max() > SPIKE * np.quantile(v, 0.95))


CUT_DECADES = 3  # headroom above the finite runs' largest loss, where a diverging run's loss would set the axis


def _diverging_cut(rows: pd.DataFrame) -> float | None:
    """Where a loss axis should end when runs that diverge climb decades above the others (an exploding RNN's
    loss reached 1e35 while the clipped run's, the one the figure is about, was a flat line at 1e0): CUT_DECADES
    above the largest value of the runs that stay finite (`rows`: the row's metric, every run's), the
    diverging ones leaving the axis at its top (their marks at the top edge say so). Run by run, not line by
    line: a seed that finished at 1e4 beside two seeds that diverged was on a line holding a NaN, and so off
    an axis cut above the other lines, unmarked. None where nothing diverged or the axis would not be cut."""
    value = pd.to_numeric(rows["value"], errors="coerce").to_numpy(dtype=float)
    finite = np.isfinite(value)
    runs = [rows["source"], rows["run"]] if "source" in rows.columns else [rows["run"]]
    stays = pd.Series(finite, index=rows.index).groupby(runs).transform("all").to_numpy(copy=True)
    if "status" in rows.columns:
        stays &= (rows["status"] != "diverged").to_numpy()
    if not stays.any() or stays.all():
        return None
    top = float(value[stays].max()) * 10.0**CUT_DECADES
    highest = float(value[finite].max()) if finite.any() else top
    return top if highest > top else None


def ratio(table: pd.DataFrame, when: str = "init", by: str | None = None, theory: bool = True,
          quantity: str = "grad_norm") -> Figure:
    """quantity(layer 0) / quantity(last layer) against model.depth, log y, one line per value of
    `by` (default: the first other swept key), seeds as median + min-max band; dotted line at 1. For
    recurrent nets, whose depth is in time, against the sequence length data.T (first time step / head).

    table: the layers table (any per-layer quantity: signal_norm is the one that vanishes), or the
    runs table (grad_norm only, from its grad_ratio.* columns). At init, where the mean-field theory
    applies (see `chi1_for`), a dashed line chi1^(depth/2) per group, anchored at its shallowest
    point, shows the predicted rate (the slope, not the offset). At init the keys that act on the updates
    alone (optim.lr, train.steps, ...: `no_effect_at_init`) are no keys: the runs that differ only in them
    are one line, and the title says so.
    """
    df, length, depths, no_ratio = _ratio_table(table, when, quantity)  # (no_ratio: the rows left out)
    multi_source = n_distinct(df["source"]) > 1
    # (a key that changes with the depth alone, a learning rate tied to it, splits no line along it)
    swept = [k for k in distinct_keys(df, swept_keys(df), along=length) if k != length]
    choices = swept + (["source"] if multi_source else [])  # (compare --color source: the keys take the styles)
    if by is not None and by not in choices and by in swept_keys(df):  # (swept, but no line key of its own)
        if by == length:
            what = f"is this plot's x axis: each line runs along {length}"
        elif by not in distinct_keys(df, [length, by], along=length):
            what = f"changes with {length} alone (it is set by it): each line runs along {length}"
        else:  # (tied to another key, value for value: that key's lines are its lines)
            twin = next((k for k in swept if by not in distinct_keys(df, [length, k, by], along=length)), None)
            what = f"changes together with {twin}, value for value: colour by it" if twin else "tells no lines apart"
        raise GradflowError(f"--color {by} {what}; choices: {', '.join(choices) or '(none varies)'}")
    check_key(by, "color", choices)
    inert = no_effect_at_init(df, swept, quantity, (by,)) if when == "init" else []
    swept = [k for k in swept if k not in inert]
    group_keys = swept + (["source"] if multi_source else [])
    if by is None and not_swept_together(df, swept + [length]):
        # runs not swept together (a folder of several sweeps): a legended line for each run's name but its
        # depth item, so a sweep's depths join and runs of different sweeps or settings never pool
        df = df.assign(run=df["run"].map(lambda run: without_item(str(run), length)))
        no_ratio = no_ratio.assign(run=no_ratio["run"].map(lambda run: without_item(str(run), length)))
        by, style, also, between, group_keys, inert = "run", None, [], [], ["run"], []
    else:
        by = by or (swept[0] if swept else None)
        style = style_key(df, swept, (by,), multi_source and by != "source")
        also, between = unshown(df, swept, (by, style))
    palette = Palette(df, by, style)
    panels, titles = [df], [None]
    # the keys neither the colour nor the line style shows: a panel per combination of their values
    if also and (split := panels_by(df, also)) is not None:
        (panels, titles), also = split, []

    fig, axes = facet_grid(len(panels))
    where = "at initialization" if when == "init" else "at the last probed step"
    symbol, name = RATIOS[quantity]
    theory_drawn = diverged_drawn = theory_left = False  # theory_left: meanfield.weight_line_left's
    cache: dict = {}
    everything: list[Series] = []
    for ax, panel_title, sub in zip(axes, titles, panels):
        series = sort_series(collect_series(sub, length, group_keys, log=True, alike=inert), df,
                             [k for k in (by, style) if k] + also)
        ax.set_yscale("log")
        ax.axhline(1.0, **REFERENCE_STYLE, gid="reference")
        lw, alpha = line_weight(len(series))
        for s in series:
            c = palette.color_of(s.config)
            # a depth of its runs with no ratio (0 / 0) breaks the line: it ran straight across, read as a value
            s = with_gaps(s, no_ratio.loc[rows_of(no_ratio, s.config, group_keys), length].astype(float))
            draw_series(ax, s, c, palette.style_of(s.config), lw, alpha)  # a lone depth is drawn as a dot
            if theory and when == "init" and length == "model.depth":
                theory_drawn |= _theory_ratio(ax, s, c, lw, cache, quantity == "grad_norm")
                theory_left |= quantity == "grad_norm" and weight_line_left(s.config, cache)
        note_if_empty(ax, series)
        everything += series
        if when == "final" and "status" in sub.columns:  # a diverged run's ratio is before it diverged: say so
            gone = sub[(sub["status"] == "diverged") & np.isfinite(sub["value"].to_numpy(dtype=float))]
            ax.scatter(gone[length].astype(float), gone["value"], marker="x", s=60, color="0.15", zorder=6,
                       linewidths=1.5, gid="diverged after")
            diverged_drawn |= len(gone) > 0
        _depth_axis(ax, depths)
        label_short_log_axis(ax, df["value"])
        if panel_title:
            ax.set_title(panel_title, fontsize="small")
    bottom, left = bottom_and_left(axes)
    for ax in bottom:
        ax.set_xlabel(key_label(length, df))
    ends = "first / last layer" if length == "model.depth" else "first time step / head"
    for ax in left:
        ax.set_ylabel(f"{symbol}\n({ends}, {where})")
    palette.colorbar(fig, axes)
    handles, title = palette.handles(has_marks(everything))
    hs = extra_handles(everything, True)
    if theory_drawn:
        hs.append(Line2D([], [], color="0.3", **THEORY_STYLE,
                         label="mean field: rate $\\chi_1^{depth/2}$\n(anchored at shallowest)"))  # (a curve on a log depth axis)
    if theory_left:
        hs.append(Line2D([], [], color="none", label=WEIGHT_LINE_NOTE))
    hs.append(Line2D([], [], **REFERENCE_STYLE, label="ratio = 1 (balanced)"))
    if diverged_drawn:
        hs.append(Line2D([], [], ls="none", marker="x", ms=7, mew=1.5, color="0.15",
                         label="diverged: its last probed\nstep before it"))
    legend(fig, handles + hs, title)
    extra = [init_note(inert), *unshown_notes(also, between)]
    if len(no_ratio):
        n = len(no_ratio)
        extra.append(f"{n} run{'s' * (n != 1)} not drawn: no ratio (0 / 0, every gradient exactly 0)")
    along = "depth" if length == "model.depth" else "sequence length"
    set_title(fig, f"{name} (input / output) vs {along}, {where}", df, extra, skip=swept + [length])
    return fig



def _ratio_table(table: pd.DataFrame, when: str, quantity: str) -> tuple[pd.DataFrame, str, np.ndarray, pd.Series]:
    """The rows `ratio` draws, a run each with its ratio as `value` (from the layers table's first and last
    probe points, or the runs table's grad_ratio.*); the depth key along x (`depth_key`) and its values; and
    the rows of the runs that have no ratio (0 / 0), left out."""
    if when not in ("init", "final"):
        raise GradflowError(f"when={when!r} is not allowed; choices: init, final")
    if quantity not in RATIOS:
        raise GradflowError(f"quantity {quantity!r} is not allowed for a ratio figure; choices: {', '.join(RATIOS)}")
    df = require(table, "runs", RUNS_REQUIRED)
    if "quantity" in df.columns:
        layers, df = df, with_module_depth(first_last(df, quantity, when), df)
        if df.empty:
            spread = [q for q in RATIOS if q in spread_quantities(layers)]
            raise GradflowError(f"no run has {quantity} at two probe points or more (a first and a last), so no "
                                "ratio of it; " + (f"choices: {', '.join(spread)}" if spread else
                                                   "nor has any other quantity: no ratio to draw"))
    else:
        col = f"grad_ratio.{when}"
        if quantity != "grad_norm" or col not in df.columns:
            raise GradflowError(f"the runs table has the weight-gradient ratio only ({col}); pass the layers "
                                f"table for {quantity}")
        df = df.assign(value=pd.to_numeric(df[col], errors="coerce"))
    # a run that neither diverged nor failed and has no ratio (0 / 0: every gradient exactly 0, dead ReLUs; one
    # interrupted or running too) is no point, as `ls` shows it `-`: drawn NaN, it was marked "NaN/inf or
    # diverged" (a failed run's NaN stays, counted as failed)
    # (after the depth axis is read: the depths of those runs stay on it)
    length = depth_key(df)
    depths = np.asarray(ordered_values(df[length]), dtype=float)
    finished = ~df["status"].isin(["diverged", "failed"]) if "status" in df.columns else False
    no_ratio = df["value"].isna() & finished
    if no_ratio.all():
        raise GradflowError(f"no run has a {quantity} ratio {('at initialization' if when == 'init' else 'at its end')}: "
                            f"every one is 0 / 0 (each gradient exactly 0)")
    return df[~no_ratio], length, depths, df[no_ratio]


def depth_key(df: pd.DataFrame) -> str:
    """The key a ratio figure runs along: model.depth, or for recurrent nets (depth in time) the sequence
    length data.T; a one-line error where neither varies."""
    if "model.depth" in df.columns and n_distinct(df["model.depth"]) > 1:
        return "model.depth"
    if is_recurrent(df) and "data.T" in df.columns and n_distinct(df["data.T"]) > 1:
        return "data.T"
    if is_recurrent(df):
        have = ", ".join(map(fmt, ordered_values(df["data.T"]))) if "data.T" in df.columns else "none"
        raise NotVaried(f"ratio plots a recurrent net against its depth in time, data.T, which does not vary "
                        f"in this data (values: {have})")
    have = ", ".join(map(fmt, ordered_values(df["model.depth"]))) if "model.depth" in df.columns else "none"
    own = next((k for k in config_columns(df) if k.rpartition(".")[2] == "depth" and k != "model.depth"
                and n_distinct(df[k]) > 1), None)  # (a Recorder's config={"depth": d})
    hint = (f"; the depth here is the config key {own}: name it model.depth (a Recorder's "
            "config={'model': {'depth': d}}) for this figure") if own else ""
    raise NotVaried(f"ratio plots against model.depth, which does not vary in this data (values: {have})" + hint)


def _depth_axis(ax, depths: np.ndarray) -> None:
    """The depth axis: logarithmic where the depths are (2, 4, 8, ...), each depth a labelled tick where they
    are few."""
    if depths.min() > 0 and _geometric(depths):
        ax.set_xscale("log")
    if len(depths) <= 12:
        ax.set_xticks(depths, [fmt(d) for d in depths])
        ax.xaxis.set_minor_locator(NullLocator())


def _theory_ratio(ax, s: Series, color: Any, lw: float, cache: dict, weight_gradient: bool) -> bool:
    """Dashed line y0 * chi1^((depth - depth0) / 2) through the group's shallowest finite point."""
    c = chi1_for(s.config, weight_gradient, cache)  # chi1 does not depend on depth: the group's config will do
    ok = np.isfinite(s.med)
    if c is None or not ok.any():
        return False
    d0, y0 = float(s.x[ok][0]), float(s.med[ok][0])
    d = np.linspace(float(s.x.min()), float(s.x.max()), 60)
    with np.errstate(over="ignore", under="ignore"):
        ys = y0 * c ** ((d - d0) / 2)
        ax.plot(d, ys, color=color, **(THEORY_STYLE | {"lw": max(0.7, lw * 0.8)}),
                scalex=False, scaley=False, gid=f"theory:{s.label}")
    record(ax, "theory", ({"line": s.label, "x": x, "y": y, "chi1": c} for x, y in zip(d, ys)))
    return True


def _geometric(v: np.ndarray) -> bool:
    """Values like 2, 4, 8, 16 (evenly spaced in log) rather than 10, 20, 30."""
    v = np.sort(np.asarray(v, dtype=float))
    if len(v) < 3 or v.min() <= 0:
        return False
    gaps, ratios = np.diff(v), v[1:] / v[:-1]
    if np.allclose(gaps, gaps.mean(), rtol=0.2):
        return False
    return bool(np.allclose(ratios, ratios.mean(), rtol=0.25) or v.max() / v.min() >= 30)


def _uneven(t: np.ndarray) -> bool:
    """Values whose gaps (on the axis's own scale) differ more than 2-fold, as sw2 1, 1.5, 1.76, 2, 4."""
    gaps = np.diff(t)
    return len(gaps) >= 2 and gaps.min() < 0.5 * gaps.max()


@dataclass
class _GridAxis:
    key: str
    values: list  # ordered distinct values
    numeric: bool
    log: bool
    centers: np.ndarray
    edges: np.ndarray
    spots: np.ndarray | None = None  # an evenly placed numeric axis: its values on their scale, at 0 .. n-1

    @classmethod
    def of(cls, df: pd.DataFrame, key: str) -> "_GridAxis":
        values = ordered_values(df[key])
        numeric = is_numeric_key(df, key) and not any(is_missing(v) for v in values)
        n = len(values)
        if not numeric:
            return cls(key, values, False, False, np.arange(n, dtype=float), np.arange(n + 1) - 0.5)
        v = np.asarray(values, dtype=float)
        log = _geometric(v)
        t = np.log10(v) if log else v
        # unevenly spaced values (dense near the edge of chaos) get one even cell each: sized by their
        # neighbours, the close ones were slivers whose labels ran together and the last twice as wide
        if _uneven(t):
            return cls(key, values, True, log, np.arange(n, dtype=float), np.arange(n + 1) - 0.5, t)
        if len(t) == 1:
            half = 0.5 if log else max(abs(t[0]) * 0.25, 0.5)
            edges_t = np.array([t[0] - half, t[0] + half])
        else:
            mid = (t[1:] + t[:-1]) / 2
            edges_t = np.r_[t[0] - (mid[0] - t[0]), mid, t[-1] + (t[-1] - mid[-1])]
        return cls(key, values, True, log, v, 10 ** edges_t if log else edges_t)

    def index(self) -> dict:
        return {vkey(v): i for i, v in enumerate(self.values)}

    def place(self, v) -> np.ndarray:
        """Where values of the key lie on the axis: themselves, or on an evenly placed axis linearly
        between the cells of the values either side (beyond the ends, by the end gap)."""
        v = np.asarray(v, dtype=float)
        if self.spots is None:
            return v
        t = self.spots
        with np.errstate(divide="ignore", invalid="ignore"):
            u = np.log10(v) if self.log else v
        at = np.interp(u, t, np.arange(len(t), dtype=float))
        at = np.where(u < t[0], (u - t[0]) / (t[1] - t[0]), at)
        return np.where(u > t[-1], len(t) - 1 + (u - t[-1]) / (t[-1] - t[-2]), at)

    def span(self) -> tuple[float, float]:
        """The key's values at the axis's two ends."""
        if self.spots is None:
            return float(self.edges[0]), float(self.edges[-1])
        t = self.spots
        lo, hi = t[0] - (t[1] - t[0]) / 2, t[-1] + (t[-1] - t[-2]) / 2
        return (10 ** lo, 10 ** hi) if self.log else (lo, hi)

    def apply(self, ax, which: str) -> None:
        axis = ax.xaxis if which == "x" else ax.yaxis
        if self.log and self.spots is None:
            (ax.set_xscale if which == "x" else ax.set_yscale)("log")
        (ax.set_xlim if which == "x" else ax.set_ylim)(self.edges[0], self.edges[-1])
        if len(self.values) <= 16 or not self.numeric or self.spots is not None:
            axis.set_ticks(self.centers, [fmt(v) for v in self.values])
            axis.set_minor_locator(NullLocator())
        (ax.set_xlabel if which == "x" else ax.set_ylabel)(key_label(self.key))


def summary_column(df: pd.DataFrame, value: str, option: str = "value=", where: str = "the runs table") -> str:
    """The runs table's column `value` names: itself, or the header ls shows it under ('chi1 meas', 'signal
    ratio', train_loss; _ and - read as spaces); else one error, `option` and `where` as the caller names
    them, with the nearest column or header and the choices."""
    from gradflow.columns import RESULT_COLUMNS, result_by_header

    if value in df.columns:
        return value
    if found := result_by_header(df, value):
        return found
    choices = [c for c in SUMMARIES if c in df.columns]
    headers = [RESULT_COLUMNS[c][0] for c in choices if c in RESULT_COLUMNS]
    raise GradflowError(f"{option}{value!r} is not a column of {where}{did_you_mean(value, choices + headers)}; "
                        f"choices: {', '.join(choices)} (or ls's header of one: "
                        f"{', '.join(repr(h) for h in headers[:3])}, ...)")


def grid(runs: pd.DataFrame, x: str, y: str, value: str = "final.test_acc", theory: str | None = None,
         facet: str | None = None) -> Figure:
    """A per-run summary (`value`, averaged over seeds) over two swept keys, as coloured cells.

    value: e.g. final.test_acc, final.train_loss, grad_ratio.init (shown as log10), chi1_measured.
    theory: "6xi_c" or "xi_c" draws the mean-field depth scale over init.sw2 (x or y) x model.depth,
    "chi1=1" marks the critical init.sw2 (Schoenholz et al. 2017); activation and sb2 come from the
    data and must be single-valued per panel. facet: one panel per value of a third swept key.
    Cells where a seed diverged or gave +-inf are hatched; cells without a finite value are grey.
    """
    df = require(runs, "runs", RUNS_REQUIRED)
    value = _grid_checks(df, x, y, facet, value, theory)
    spec = SUMMARIES.get(value, Summary(value))
    z = pd.to_numeric(df[value], errors="coerce").to_numpy(dtype=float)
    if spec.log10:
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(z > 0, np.log10(np.where(z > 0, z, 1.0)), np.where(np.isnan(z), np.nan, -np.inf))
    df = df.assign(_z=z)
    xa, ya = _GridAxis.of(df, x), _GridAxis.of(df, y)
    norm = _grid_norm(z, spec)
    cmap = colormaps[spec.cmap].with_extremes(bad="0.85")

    facet_values = ordered_values(df[facet]) if facet else [None]
    fig, axes = facet_grid(len(facet_values), sharex=True, sharey=True, panel=(4.2, 3.8), legend_width=3.0)
    annotate = len(xa.values) * len(ya.values) <= 80
    hatched = theory_handle = None
    empty_cells = False
    pooled = False  # some cell holds several runs (seeds): the colorbar then says it shows their mean
    for ax, fv in zip(axes, facet_values):
        ax.grid(False)
        sub = df if facet is None else rows_with(df, facet, fv)
        cell, flag, logged, several = _grid_cells(sub, x, y, xa, ya)
        pooled |= several
        empty_cells |= bool((logged & ~np.isfinite(cell) & ~flag).any())  # (a diverged cell says so itself)
        mesh = ax.pcolormesh(xa.edges, ya.edges, np.ma.masked_invalid(cell), cmap=cmap, norm=norm, gid="grid")
        record(ax, "cells", ({x: xa.values[j], y: ya.values[i], "value": cell[i, j], "flagged": bool(flag[i, j])}
                             | ({facet: fv} if facet else {}) for i, j in zip(*np.nonzero(logged))))
        for i, j in zip(*np.nonzero(flag)):
            ax.add_patch(Rectangle((xa.edges[j], ya.edges[i]), xa.edges[j + 1] - xa.edges[j],
                                   ya.edges[i + 1] - ya.edges[i], fill=False, hatch="xxx", lw=0,
                                   edgecolor=(1, 1, 1, 0.55), gid="diverged"))
            hatched = True
        if annotate:
            for i in range(cell.shape[0]):
                for j in range(cell.shape[1]):
                    _annotate_cell(ax, xa.centers[j], ya.centers[i], cell[i, j], logged[i, j], cmap, norm,
                                   flag[i, j])
        xa.apply(ax, "x")
        ya.apply(ax, "y")
        if facet:
            ax.set_title(value_label(facet, fv), fontsize="small")
        if theory:
            theory_handle = _grid_theory(ax, sub, xa, ya, theory)
    bottom, left = bottom_and_left(axes)
    for ax in axes:
        if ax not in bottom:
            ax.set_xlabel("")
        if ax not in left:
            ax.set_ylabel("")
    cb = fig.colorbar(mesh, ax=axes, label=spec.label + ("\n(mean over seeds)" if pooled else ""), pad=0.02,
                      shrink=0.95)  # (beside a title's "1 seed per cell", "mean over seeds" read as a contradiction)
    cb.ax.set_gid("colorbar")
    handles = []
    if theory_handle is not None:
        handles.append(theory_handle)
    if hatched:
        handles.append(Patch(facecolor="0.6", hatch="xxx", edgecolor="white", label="a seed diverged\nor gave inf"))
    if empty_cells:
        # (a depth-4 net's chi1 cell: no fit of so few layers, which "no finite value" read as a NaN or divergence)
        handles.append(Patch(color="0.85", label="n/a: no value (not measured" + (
            ",\ne.g. too few layers to fit chi1)" if "chi1" in value else ")")))
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize="x-small",
                   frameon=False).set_gid("legend")
    n_seeds = int(df.groupby([c for c in (x, y, facet) if c]).size().max()) if len(df) else 0
    what = spec.label.split(",")[0].split(" (")[0]
    extra = [f"{n_seeds} seed{'s' * (n_seeds > 1)} per cell"]
    set_title(fig, f"{what[0].upper() + what[1:]} over {short_key(x)} \u00d7 {short_key(y)}", df, extra,
              skip=[k for k in (x, y, facet) if k])
    return fig


def _grid_checks(df: pd.DataFrame, x: str, y: str, facet: str | None, value: str, theory: str | None) -> str:
    """The grid's keys checked against the runs table (each a column, two or more values on each axis, no
    other key varying); the value's column (`summary_column`)."""
    swept = swept_keys(df)
    for what, key in (("x", x), ("y", y), ("facet", facet)):
        if key is not None and key not in df.columns:
            raise GradflowError(f"--{what} {key!r} is not a column of the runs table; "
                                f"swept keys: {', '.join(swept) or '(none)'}")
    value = summary_column(df, value)
    if theory not in (None, *GRID_THEORIES):
        raise GradflowError(f"--theory {theory!r} is not allowed; choices: {', '.join(GRID_THEORIES)}")
    given = [k for k in (x, y, facet) if k is not None]
    others = [k for k in distinct_keys(df, [*given, *swept]) if k not in given]  # (one tied to an axis is its own)
    if others:
        k = others[0]
        vals = ", ".join(map(fmt, ordered_values(df[k])))
        first = python_value(ordered_values(df[k])[0])
        raise GradflowError(f"grid over {x} x {y}: {', '.join(others)} also var{'y' if len(others) > 1 else 'ies'} "
                            f"({k}: {vals}); facet by it (--facet {k}; in Python facet={k!r}) or keep one value "
                            f"(--where {k}={fmt(first)}; in Python runs[runs[{k!r}] == {first!r}])")
    several = [k for k in swept if n_distinct(df[k]) > 1]
    for what, key, other in (("x", x, y), ("y", y, x)):
        if n_distinct(df[key]) < 2:  # one row of cells: no grid, and a depth curve over it has no scale to read
            raise GradflowError(
                f"--{what} {key} has one value here ({', '.join(map(fmt, ordered_values(df[key]))) or 'none'}): a grid "
                f"needs two or more on each axis; sweep more ({key}=...), or list {value} over {other} with "
                f"`gradflow ls PATH --sort {other}`; keys with several values: {', '.join(several) or '(none)'}")
    return value


def _grid_norm(z: np.ndarray, spec: Summary) -> Normalize:
    """The colour scale of the cells' values: centred where the value has a centre (`Summary.center`), else
    from the least to the largest finite value."""
    finite = z[np.isfinite(z)]
    if len(finite) == 0:
        return Normalize(0, 1)
    if spec.center is not None:
        half = max(abs(finite.max() - spec.center), abs(finite.min() - spec.center), 1e-12)
        return Normalize(spec.center - half, spec.center + half)
    if finite.max() > finite.min():
        return Normalize(finite.min(), finite.max())
    # one value (the only cell that did not diverge): centred in a readable range, not at its bottom
    d = 0.5 if spec.log10 else max(abs(float(finite[0])) / 2, 1e-3)  # (a range far narrower than the value
    return Normalize(finite[0] - d, finite[0] + d)  # makes matplotlib label the colour bar by an offset)


def _grid_cells(sub: pd.DataFrame, x: str, y: str, xa: _GridAxis, ya: _GridAxis
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """A panel's cells, (y, x) each: the mean of its runs' finite values; whether some seed diverged or gave
    an infinite value; whether it holds any run; and whether some cell holds several runs (seeds)."""
    xi, yi = xa.index(), ya.index()
    cell = np.full((len(ya.values), len(xa.values)), np.nan)  # (y, x) mean over seeds
    flag = np.zeros(cell.shape, dtype=bool)  # some seed diverged or gave an infinite value
    logged = np.zeros(cell.shape, dtype=bool)
    several = False
    for (xv, yv), g in sub.assign(**{x: sub[x].map(vkey), y: sub[y].map(vkey)}).groupby([x, y], dropna=False):
        i, j = yi[vkey(yv)], xi[vkey(xv)]
        vals = g["_z"].to_numpy()
        ok = np.isfinite(vals)
        cell[i, j] = vals[ok].mean() if ok.any() else np.nan
        flag[i, j] = (g["status"] == "diverged").any() or np.isinf(vals).any()  # NaN = not measured
        logged[i, j] = True
        several |= len(g) > 1
    return cell, flag, logged, several


def _annotate_cell(ax, cx: float, cy: float, v: float, logged: bool, cmap, norm, flagged: bool = False) -> None:
    """A cell's value; with none, "diverged" where its runs diverged (or gave inf), else "n/a" (not measured: the
    legend says so). Diverged cells read "n/a", which the legend called not measured."""
    if not logged:
        return
    if not np.isfinite(v):
        ax.text(cx, cy, "diverged" if flagged else "n/a", ha="center", va="center", fontsize=6.5 if not flagged
                else 5.5, color="0.3", gid="cell")
        return
    r, g, b, _ = cmap(norm(v))
    dark = 0.299 * r + 0.587 * g + 0.114 * b < 0.5
    text = fmt(round(v)) if abs(v) >= 100 else fmt(v, 3)  # (χ₁ at 0.996, 1.015, 1.002 read "1" alike at 2 digits)
    # a halo of the cell's own colour and a box of it behind: where the theory curve crosses the label, the label
    # stays legible (the halo alone let the dashed line through between the glyphs: "-0.21" read "-0!21")
    halo = [patheffects.withStroke(linewidth=2.2, foreground=(r, g, b))]
    ax.text(cx, cy, text, ha="center", va="center", fontsize=6.5, color="white" if dark else "black", gid="cell",
            path_effects=halo, zorder=4, bbox=dict(boxstyle="square,pad=0.15", fc=(r, g, b), ec="none"))


_OUTLINE = [patheffects.Stroke(linewidth=3.4, foreground="black"), patheffects.Normal()]


def _grid_theory(ax, sub: pd.DataFrame, xa: _GridAxis, ya: _GridAxis, kind: str) -> Line2D:
    """The mean-field curve over a grid panel: 6 xi_c / xi_c against sw2, or the critical sw2."""
    from gradflow import theory as mean_field

    by_key = {xa.key: xa, ya.key: ya}
    sw = by_key.get("init.sw2")
    if sw is None or not sw.numeric:
        raise GradflowError(f"--theory {kind} is drawn against init.sw2, so --x or --y must be init.sw2 "
                            f"(got --x {xa.key} --y {ya.key})")
    if kind != "chi1=1" and "model.depth" not in by_key:
        raise GradflowError(f"--theory {kind} is a depth scale: the other axis must be model.depth "
                            f"(got --x {xa.key} --y {ya.key}); use --theory chi1=1 for other axes")
    fixed = {}
    for key in ("model.activation", "init.sb2"):
        v = single_value(sub, key)
        if v is None or is_missing(v):
            have = ", ".join(map(fmt, ordered_values(sub[key]))) if key in sub.columns else "missing"
            raise GradflowError(f"--theory {kind} needs one {key} per panel; this panel has: {have}"
                                + ("; facet by it (--facet model.activation)" if key == "model.activation" else ""))
        fixed[key] = python_value(v)
    act, sb2 = fixed["model.activation"], float(fixed["init.sb2"])
    lo, hi = sw.span()
    lo = max(lo, 1e-3)
    vertical = sw is xa
    style = dict(color="white", lw=1.8, ls="--", path_effects=_OUTLINE, gid="theory")
    if kind == "chi1=1":
        try:
            crit = mean_field.critical_sw2(act, sb2)
        except GradflowError as e:  # no edge of chaos for this activation / sb2: say so, draw nothing
            label = "\n".join(textwrap.wrap(f"no edge of chaos: {e}", 60))
            return Line2D([], [], **(style | {"gid": None}), label=label)
        inside = lo <= crit <= hi
        if inside:
            (ax.axvline if vertical else ax.axhline)(float(sw.place(crit)), **style)
        return Line2D([], [], **(style | {"gid": None}),
                      label=rf"$\chi_1 = 1$ at $\sigma_w^2$ = {fmt(crit, 3)}" + ("" if inside else " (off the plot)"))
    sw2 = np.geomspace(lo, hi, 241) if sw.log else np.linspace(lo, hi, 241)
    points = [mean_field.point(act, float(s), sb2) for s in sw2]
    attr = "six_xi_c" if kind == "6xi_c" else "xi_c"
    depth = np.array([getattr(p, attr) for p in points], dtype=float)
    depth = np.where(np.isposinf(depth), 1e12, depth)  # diverges at criticality: run off the top
    da = ya if vertical else xa  # the depth axis: a curve wholly beyond it is drawn where no one sees it
    xs, ys = (sw.place(sw2), da.place(depth)) if vertical else (da.place(depth), sw.place(sw2))
    ax.plot(xs, ys, scalex=False, scaley=False, **style)
    label = r"mean field $6\xi_c$ (trainable depth)" if kind == "6xi_c" else r"mean field $\xi_c$ (depth scale)"
    d_lo, d_hi = da.span()
    if not ((depth >= d_lo) & (depth <= d_hi)).any():
        label += " (off the plot: " + ("above" if (depth > d_hi).all() else "below" if (depth < d_lo).all()
                                       else "beyond") + " the depths shown)"
    else:  # partly beyond: where, since a curve leaving the top reads as ending there (between the values
        # swept: the axis runs on to its cells' edges, σ_w² 6 beside a sweep that ends at 4)
        swept = (sw2 >= min(sw.values) * (1 - 1e-9)) & (sw2 <= max(sw.values) * (1 + 1e-9))
        beyond = [f"{side} the depths shown for {_stretches(sw2, out & swept)}"
                  for side, out in (("above", depth > d_hi), ("below", depth < d_lo)) if (out & swept).any()]
        if beyond:
            label += "\n(" + "; ".join(beyond) + ")"
    return Line2D([], [], **(style | {"gid": None}), label=label)


def _stretches(sw2: np.ndarray, out: np.ndarray) -> str:
    """The sw2 ranges where `out` holds, as "σ_w² 1.6-2.1, 3.9-4.5"."""
    edges = np.flatnonzero(np.diff(np.r_[False, out, False].astype(int)))  # starts and ends of the True runs
    parts = [f"{fmt(sw2[a], 2)}-{fmt(sw2[b - 1], 2)}" for a, b in zip(edges[::2], edges[1::2])]
    return r"$\sigma_w^2$ " + ", ".join(parts)
