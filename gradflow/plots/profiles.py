"""Per-layer figures: a quantity against layer index at one step (profile), and one run's quantity
over layer x step (heatmap)."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.colors import ListedColormap, LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import NullLocator

from gradflow.errors import GradflowError
from gradflow.fmt import fmt
from gradflow.keys import n_distinct, not_swept_together, ordered_values, rows_with, swept_keys
from gradflow.plots.labels import (
    QUANTITIES, THEORY_QUANTITIES, Label, blocks, layer_axis, point_word, set_title, value_label,
)
from gradflow.plots.meanfield import WEIGHT_LINE_NOTE, chi1_for, weight_line_left
from gradflow.plots.series import (
    Series, at_step, check_key, collect_series, ended_early, ended_here, ended_text, parse_step, pick_run, require,
    sort_series,
)
from gradflow.probes.quantities import BIAS, OUTPUT, WEIGHT
from gradflow.probes.quantities import QUANTITIES as REGISTRY
from gradflow.plots.style import (
    THEORY_STYLE, LayerLocator, Palette, bottom_and_left, colour_key, draw_series, extra_handles, facet_grid, has_marks,
    is_log_spaced, label_short_log_axis, legend, line_weight, new_figure, note_if_empty, record, source_title, step_axis,
    style_key, init_note, no_effect_at_init, sources_alike_at_init, tick_blocks, unshown, unshown_notes, unshown_panels,
    XLABEL_WIDTH, wrap_words,
)


LAYERS_REQUIRED = ("run", "step", "layer", "quantity", "value")


HEAD_HAS = (WEIGHT, BIAS, OUTPUT)  # the registry's `where` of the quantities the output head has (not ACTIVATION's)


def _quantity(df: pd.DataFrame, quantity: str) -> pd.DataFrame:
    sub = df[df["quantity"] == quantity]
    if sub.empty:
        raise GradflowError(f"quantity={quantity!r} is not in the layers table; "
                            f"choices: {', '.join(map(str, ordered_values(df['quantity'])))}")
    return sub


def profile(layers: pd.DataFrame, quantity: str = "grad_norm", step: int | str = 0, color: str | None = None,
            facet: str | None = None, by_source: bool = False, theory: bool = True) -> Figure:
    """`quantity` against layer index (0 = input) at one step: one line per run or seed group.

    step: a probed step, or "last" (each run's last probed step). color: the swept key that colours
    the lines (default: `colour_key`'s, the key the study varies beside depth); facet: a swept key with
    one panel per value (shared y). A second swept key with few values is shown by a marker at each point on
    solid lines (dashes are the theory's). Where the mean-field theory has a prediction (grad_norm,
    signal_norm), a dashed line of slope sqrt(chi1) per layer is drawn through the last layer's value at
    step 0 (theory=False leaves it out; for grad_norm only where q* is finite and nonzero, see `_chi1`).
    by_source: one panel per results folder instead of one marker each. The swept keys colour and marker leave
    out get a panel per combination of their values, up to AUTO_PANELS; beyond that the title names them
    (`unshown_keys`: `kinds.figure_parts` draws a figure per value of one of them instead). At step 0 the keys
    that act on the updates alone (optim.lr, train.steps, ...: `no_effect_at_init`) are no keys: the runs
    that differ only in them are one line, and the title says so.
    """
    df = _quantity(require(layers, "layers", LAYERS_REQUIRED), quantity)
    marked = blocks(_of_runs(layers, df))  # ticked at the blocks: every quantity's points
    whole, (df, step_text) = df, at_step(df, step)
    ended = ended_early(whole, df) if parse_step(step) == "last" else {}  # diverged after the step drawn
    theory = theory and parse_step(step) == 0  # mean-field theory describes the random initialization
    label = QUANTITIES.get(quantity, Label(quantity, quantity))
    k = _keys(df, color, facet, by_source, _inert(df, step, quantity, (color, facet)))
    swept, facet_key, group_keys = k.swept, k.facet_key, k.group_keys
    color, style, also, between = k.color, k.style, k.also, k.between
    palette = Palette(df, color, style, marks=True)  # runs solid, told apart by marker: dashes are theory

    facet_values = ordered_values(df[facet_key]) if facet_key else [None]
    panels = [df if facet_key is None else rows_with(df, facet_key, fv) for fv in facet_values]
    titles = [source_title(df, fv) if facet_key == "source" else value_label(facet_key, fv)
              for fv in facet_values] if facet_key else [None]
    # the keys neither the colour nor the line style shows: a panel per combination of their values (with
    # the facet's: a facet by init left the lines of two activations in one panel, alike; with the source's
    # under by_source: a folder's batchnorm and plain runs were drawn alike in its panel)
    if (split := unshown_panels(df, facet_key, also)) is not None:
        (panels, titles), also = split, []
    spans = {(p["layer"].min(), p["layer"].max()) for p in panels if not p.empty}
    # panels of nets of different depths each end at their own last point (a shared axis left a shallow
    # net's panel mostly empty); panels of one depth share the axis
    fig, axes = facet_grid(len(panels), sharex=len(spans) <= 1)
    cache: dict = {}
    everything: list[Series] = []
    skipping = False  # some series drawn with a mark at each point (it skips probe points)
    theory_drawn = theory_left = False  # theory_left: a weight-gradient line left out for the correlations
    stream = _stream_points(df)
    headed = False  # some panel's heads marked (_mark_heads)
    for ax, title, sub in zip(axes, titles, panels):
        series = sort_series(collect_series(sub, "layer", group_keys, label.log, alike=k.inert), df,
                             [k for k in (color, style) if k] + also)
        lw, alpha = line_weight(len(series))
        if label.log:
            ax.set_yscale("log")
        for s in series:
            if ended_here(s, ended):  # (a run of it) drawn at its last finite step: the mark says it diverged after
                s.nonfinite[-1] = True
            skipping |= _draw_profile_line(ax, s, palette, lw, alpha, stream)
            if theory and quantity in THEORY_QUANTITIES:
                theory_drawn |= _theory_profile(ax, s, quantity, palette.color_of(s.config), lw, cache)
                theory_left |= quantity == "grad_norm" and weight_line_left(s.config, cache)
        if marked is not None:
            headed |= _mark_heads(ax, series, _of_runs(layers, sub), palette)
        note_if_empty(ax, series)
        everything += series
        if title:
            ax.set_title(title, fontsize="small")
        # panels of nets of different depths: each ticked at its own nets' blocks (the deepest net's ticks
        # named a shallower one's head as the next block), and ending at its own last point
        own = len(spans) > 1
        _layer_ticks(ax, marked if not own or marked is None else blocks(_of_runs(layers, sub)),
                     sub if own and not sub.empty else df)
        if label.log:
            label_short_log_axis(ax, df["value"])
    bottom, left = bottom_and_left(axes)
    for ax in bottom:  # (side by side, a label as wide as its panel: two ran into each other)
        text = layer_axis(df, head=_at_head(quantity), marked=marked)
        inches = ax.get_position().width * fig.get_figwidth()  # (one panel's label ran off both edges too)
        ax.set_xlabel(wrap_words(text, max(XLABEL_WIDTH, int(XLABEL_WIDTH * inches / 4))))
    for ax in left:
        ax.set_ylabel(label.axis)

    palette.colorbar(fig, axes)
    handles, title = palette.handles(skipping or has_marks(everything))
    if stream:
        handles += [Line2D([], [], color="0.2", lw=2.2, marker="o", ms=3, label=f"residual stream (*.{STREAM} points)"),
                    Line2D([], [], color="0.2", lw=1.0, alpha=STREAM_FAINT, label="points inside the blocks")]
    if headed:
        handles += [Line2D([], [], color="0.2", ls="none", marker=HEAD_MARK, ms=9, label=HEAD_LABEL)]
    extras = extra_handles(everything, label.log, theory_drawn)
    if theory_left:  # (a line per run but some: said, where the reader would look for the missing ones)
        extras += [Line2D([], [], color="none", label=WEIGHT_LINE_NOTE)]
    legend(fig, handles + extras, title)
    drawn = df.drop_duplicates([c for c in ("source", "run") if c in df.columns])["run"]
    extra = [step_text, ended_text(ended, drawn.astype(str).tolist()), init_note(k.inert)]
    extra += unshown_notes(also, between)
    alike = [key for key in sources_alike_at_init(df, quantity) if key not in k.inert] if parse_step(step) == 0 else []
    if alike:  # (each source's marker on one line: the legend said two)
        extra.append(f"the sources differ only in {', '.join(alike)}: no effect at step 0, their lines coincide")
    set_title(fig, f"{label.title} per {point_word(df)}", df, extra, skip=swept)
    return fig


def _draw_profile_line(ax, s: Series, palette: Palette, lw: float, alpha: float, stream: dict) -> bool:
    """One series of the profile: a plain line, or where its runs have a residual stream (a transformer's), the
    points inside the blocks faint and the stream through them bold. Whether it skips probe points (a
    transformer's residual stream has no weight gradient): then marked at each point it has, as its line
    between them is no measurement."""
    c = palette.color_of(s.config)
    skips = len(s.x) > 1 and bool((np.diff(s.x) > 1).any())
    own = [stream[r] for r in s.runs if r in stream]  # (a transformer's, beside an MLP's plain line)
    ls, mark = palette.style_of(s.config), palette.marker_for(s.config)  # (solid, and a marker)
    if not own:
        draw_series(ax, s, c, ls, lw, alpha, marked=skips, marker=mark)
    else:
        draw_series(ax, s, c, ls, lw * 0.6, alpha * STREAM_FAINT, marked=skips, marker=mark)
        on = np.isin(s.x, np.concatenate(own))
        ax.plot(s.x[on], s.med[on], color=c, ls=ls, lw=lw * 1.4, alpha=alpha,
                marker=mark or "o", ms=3, gid=f"stream:{s.label}")
    return skips


def _layer_ticks(ax, marked, rows: pd.DataFrame) -> None:
    """A panel's layer axis: ticked at the blocks `marked` (where the net has blocks), else at whole layers;
    from `rows`' first point to its last (a lone point centred)."""
    if marked is not None:
        tick_blocks(ax.xaxis, marked)
    else:  # (min_n_ticks: a lone point's axis was ticked 40, 41 with the point on its edge)
        ax.xaxis.set_major_locator(LayerLocator())
    lo, hi = rows["layer"].min(), rows["layer"].max()
    if marked is not None and marked.starts:  # (the first block's tick in view: an activation statistic, none at
        lo = min(lo, marked.starts[0])  # a block's attn.qkv, began past b0's tick, its first point unlabelled)
    ax.set_xlim(*((lo, hi) if hi > lo else (lo - 0.5, hi + 0.5)))


class ProfileKeys(NamedTuple):
    swept: list[str]
    facet_key: str | None  # the panels' key: the facet, or the source under by_source
    group_keys: list[str]  # a line per combination of their values
    color: str | None
    style: str | None  # shown by a marker on each solid line (dashes are the theory's)
    also: list[str]  # the swept keys neither colour, marker nor facet shows
    between: list[str]  # the keys only the compared sources differ in
    inert: list[str] = []  # the swept keys drawn as not varying: no effect at step 0 (`no_effect_at_init`)


def _inert(df: pd.DataFrame, step: int | str, quantity: str, keep: tuple) -> list[str]:
    """The swept keys a profile of `df` (one quantity at one step) draws as not varying: at step 0 those that
    act on the updates alone (`no_effect_at_init`), but a colour or facet asked for; none at other steps."""
    return no_effect_at_init(df, swept_keys(df), quantity, keep) if parse_step(step) == 0 else []


def init_keys(layers: pd.DataFrame, quantity: str, step: int | str = 0, keep: tuple = ()) -> list[str]:
    """The swept keys a profile of `quantity` at `step` draws as not varying (`_inert`): what the standard
    set and compare leave out where they choose a profile's facet."""
    if parse_step(step) != 0:
        return []
    df = layers[(layers["quantity"] == quantity) & (layers["step"] == 0)]
    return _inert(df, 0, quantity, keep) if not df.empty else []


def _keys(df: pd.DataFrame, color: str | None, facet: str | None, by_source: bool,
          inert: list[str] | None = None) -> ProfileKeys:
    """The colour, the marker's key (`style`) and the keys left over for a profile of `df` (one quantity at
    one step): `colour_key`'s key colours (runs not swept together: one legended line each), a second with
    few values takes the markers, the sources where they are overlaid. `inert`: swept keys drawn as not
    varying (`_inert`): no channel of their own, their runs one line."""
    multi_source = n_distinct(df["source"]) > 1
    by_source = by_source and multi_source
    if by_source and facet is not None:
        raise GradflowError("profile: pass facet=... or by_source=True, not both (by_source facets by results folder)")
    inert = inert or []
    swept = [k for k in swept_keys(df) if k not in inert]
    choices = swept + inert + (["source"] if multi_source else [])
    check_key(color, "color", choices, df)
    check_key(facet, "facet", choices, df)
    facet_key = "source" if by_source else facet
    group_keys = swept + (["source"] if multi_source else [])
    if color is None and facet_key is None and not_swept_together(df, swept):
        # runs not swept together: one legended line each (each seed its own line too: the legend names every run)
        return ProfileKeys(swept, facet_key, ["run"], "run", None, [], [])  # (and no key drawn as one)
    # the sources take the markers (not where they have the colour: --color source listed each source twice)
    by_style = multi_source and not by_source and "source" not in (facet_key, color)
    color = color or colour_key(df, swept, facet_key, styles_free=not by_style)
    if color is None and by_style:  # (nothing swept to colour: two sources compared read one colour, told apart
        color, by_style = "source", False  # by their small markers alone)
    style = style_key(df, swept, (color, facet_key), by_style)
    also, between = unshown(df, swept, (color, style, facet_key))
    return ProfileKeys(swept, facet_key, group_keys, color, style, also, between, inert)


def unshown_keys(layers: pd.DataFrame, quantity: str = "grad_norm", step: int | str = 0, color: str | None = None,
                 facet: str | None = None, by_source: bool = False) -> list[str]:
    """The swept keys `profile` of these arguments leaves without colour, marker or panel (more combinations
    than AUTO_PANELS panels): those its title would name, `lines also differ in ...`, its lines drawn alike
    in them; [] where every key has a channel. A profile has no line style to give (its dashes are the
    theory's) nor a second marker, so `kinds.figure_parts` draws a figure per value of one of them."""
    df = _quantity(require(layers, "layers", LAYERS_REQUIRED), quantity)
    if parse_step(step) != "last" and not (df["step"] == parse_step(step)).any():
        return []  # (no figure: `profile` says the step was not probed)
    df = at_step(df, step)[0]
    k = _keys(df, color, facet, by_source, _inert(df, step, quantity, (color, facet)))
    return k.also if k.also and unshown_panels(df, k.facet_key, k.also) is None else []


HEAD_MARK, HEAD_LABEL = "*", "output head (each net's last point)"


def _mark_heads(ax, series: list[Series], rows: pd.DataFrame, palette: Palette) -> bool:
    """Mark each line's output head where nets of several depths share one block-ticked axis (the deepest
    net's ticks: a 2-block transformer's head sits at the 4-block net's b2 tick, and its last point read as a
    third block). Whether any was marked."""
    if "run" not in rows.columns:
        return False
    last = rows.groupby("run")["layer"].max()
    heads = [int(last[list(s.runs)].max()) if set(s.runs) <= set(last.index) else None for s in series]
    if len({h for h in heads if h is not None}) <= 1:
        return False  # (one depth: the axis' last point is the head, as its label says)
    marked = False
    for s, head in zip(series, heads):
        at = np.flatnonzero(s.x == head) if head is not None else []
        if len(at):
            ax.plot(s.x[at], s.med[at], ls="none", marker=HEAD_MARK, ms=9, color=palette.color_of(s.config),
                    markeredgecolor="0.2", markeredgewidth=0.5, zorder=4, clip_on=False, gid=f"head:{s.label}")
            marked = True
    return marked


def _of_runs(layers: pd.DataFrame, sub: pd.DataFrame) -> pd.DataFrame:
    """The rows of `layers` of the runs in `sub`, each run by its source and name (two sources compared
    may each have a run of the same name)."""
    ids = [c for c in ("source", "run") if c in layers.columns and c in sub.columns]
    return layers[pd.MultiIndex.from_frame(layers[ids]).isin(pd.MultiIndex.from_frame(sub[ids].drop_duplicates()))]


STREAM = "resid"  # the point after each block of gradflow's transformer (summary.RESIDUAL_STREAM)
STREAM_FAINT = 0.35  # the opacity of the points inside the blocks, beside the residual stream


def _stream_points(df: pd.DataFrame) -> dict[str, np.ndarray]:
    """Each run's layer indices of a transformer's residual stream (b#.resid), for the runs where the quantity
    drawn has points both on it and inside the blocks ({} for none). Inside each block the signal swings by
    decades between the branch's points and the stream (qkv, mlp.in): a line through all of them is a
    sawtooth that hides the trend across blocks, which the stream's points show (the per-block chi1 ls
    fits). Per run: an MLP's runs beside a transformer's in one folder were drawn bold at its stream's
    indices and faint between them."""
    if "name" not in df.columns:
        return {}
    on = df["name"].astype(str).str.endswith(f".{STREAM}")
    both = on.groupby(df["run"]).agg(lambda o: o.any() and not o.all())  # (points on the stream and off it)
    return {run: np.unique(g.to_numpy()) for run, g in df.loc[on & df["run"].map(both), "layer"].groupby(df["run"])}


def _theory_profile(ax, s: Series, quantity: str, color: Any, lw: float, cache: dict) -> bool:
    """Dashed line value_L * sqrt(chi1)^(L - l) through the group's last-layer value."""
    chi1 = chi1_for(s.config, quantity == "grad_norm", cache)
    last = s.x.max()
    v_last = float(s.med[s.x == last][0])
    if chi1 is None or not (math.isfinite(v_last) and v_last > 0):
        return False
    xs = np.arange(s.x.min(), last + 1, dtype=float)
    with np.errstate(over="ignore", under="ignore"):
        ys = v_last * math.sqrt(chi1) ** (last - xs)
    # scalex/scaley off: a prediction far outside the data must not squash the measured lines
    ax.plot(xs, ys, color=color, **(THEORY_STYLE | {"lw": max(0.7, lw * 0.8)}), scalex=False, scaley=False,
            gid=f"theory:{s.label}")
    record(ax, "theory", ({"line": s.label, "x": x, "y": y, "chi1": chi1} for x, y in zip(xs, ys)))
    return True


def _at_head(quantity: str) -> bool:
    """Whether `quantity` has a value at the output head (not an activation statistic: the head has no
    activation), so that the layer axis may call its last point the head."""
    return quantity not in REGISTRY or REGISTRY[quantity].where in HEAD_HAS


def heatmap(layers: pd.DataFrame, run: str | None = None, quantity: str = "grad_norm") -> Figure:
    """One run's `quantity` over layer (y, input at the bottom) x step (x), on a log colour scale.

    A vanishing gradient is a dark band at the bottom (input side). Zeros are black, NaN/inf red,
    cells never logged grey; the legend lists whichever occur.
    """
    df = pick_run(_quantity(require(layers, "layers", LAYERS_REQUIRED), quantity), run, "heatmap")
    label = QUANTITIES.get(quantity, Label(quantity, quantity))
    cells = df.groupby(["layer", "step"])["value"]
    all_layers = range(int(df["layer"].min()), int(df["layer"].max()) + 1)  # a layer without rows stays a row
    wide = cells.last().unstack("step").reindex(all_layers)  # (layers, steps)
    present = cells.size().unstack("step").reindex_like(wide).notna().to_numpy()
    # a quantity that most points lack (a transformer's act_std: its 4 MLP activations of 27 points) gets a
    # row for each point that has it, named: the rest were grey rows, the values thin stripes between them
    named = present.any(axis=1).sum() < len(present) / 2 and "name" in df.columns
    if named:
        wide, present = wide[present.any(axis=1)], present[present.any(axis=1)]
    z = wide.to_numpy(dtype=float)
    layer_idx, steps = wide.index.to_numpy(), wide.columns.to_numpy()
    rows = np.arange(len(layer_idx)) if named else layer_idx  # (each row's place on the y axis)
    finite = np.isfinite(z)
    positive = finite & (z > 0) if label.log else finite
    zero = present & finite & ~positive
    bad = present & ~finite

    fig, axes = new_figure()
    ax = axes[0, 0]
    ax.set_facecolor("0.82")  # cells without a value
    few = len(steps) <= FEW_STEPS
    # the scale judged on every probed step of the run: an update ratio has none at the last step, and its
    # steps alone read as even ones (a linear axis beside the symlog one of the same run's gradient norms)
    log = is_log_spaced(layers.loc[layers["run"] == df["run"].iloc[0], "step"].unique())
    # a few probed steps (0 and 10 of a short run): one even cell each, centred on its tick; cells halfway
    # between them put step 0's at -5..5 under ticks -4, 0, 4, 8, 12
    x_edges = np.arange(len(steps) + 1) - 0.5 if few else _step_edges(steps, log)
    y_edges = np.r_[rows - 0.5, rows[-1] + 0.5]
    vals = z[positive]
    if len(vals) == 0:
        norm = Normalize(0, 1)
    elif label.log:
        lo, hi = vals.min(), vals.max()
        norm = LogNorm(lo / 2, hi * 2) if hi <= lo else LogNorm(lo, hi)
    else:  # (one value everywhere, an act_saturated of 0: its range, not matplotlib's ±0.1 around it)
        lo, hi = vals.min(), vals.max()
        norm = Normalize(min(lo, 0.0), max(hi, 1.0)) if hi == lo else Normalize(lo, hi)
    cmap = colormaps["viridis"].with_extremes(bad=(0, 0, 0, 0))  # masked cells show overlays / background
    mesh = ax.pcolormesh(x_edges, y_edges, np.ma.masked_where(~positive, z), cmap=cmap, norm=norm,
                         gid="heatmap", rasterized=True)
    record(ax, "cells", ({"layer": int(layer_idx[i]), "step": int(steps[j]), "value": z[i, j]}
                         for i in range(z.shape[0]) for j in range(z.shape[1]) if present[i, j]))
    special = []
    for mask, colour, text in ((zero, "black", "exactly 0" if label.log else "zero"),
                               (bad, "#e41a1c", "NaN/inf (non-finite)")):
        if mask.any():
            ax.pcolormesh(x_edges, y_edges, np.ma.masked_where(~mask, np.ones_like(z)),
                          cmap=ListedColormap([colour]), gid="special", rasterized=True)
            special.append(Patch(color=colour, label=f"{text}: {int(mask.sum())} cells"))
    if (~present).any():
        special.append(Patch(color="0.82", label="no value (none at that point, e.g. no weight; or not probed)"))
    cb = fig.colorbar(mesh, ax=ax, label=label.axis, pad=0.02)
    cb.ax.set_gid("colorbar")
    if label.log and len(vals):  # round values on a short log scale, as the profiles' axes (2×10⁻¹ read as 0.2)
        label_short_log_axis(cb.ax, vals)
    if special:
        fig.legend(handles=special, loc="outside lower center", ncols=len(special), fontsize="x-small",
                   frameon=False).set_gid("legend")
    if few:
        ax.set_xticks(np.arange(len(steps)), [fmt(v) for v in steps])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlabel("training step (probed)")
    else:
        step_axis(ax, steps, log)
    ax.set_xlim(x_edges[0], x_edges[-1])
    marked = blocks(layers[layers["run"] == df["run"].iloc[0]])  # every quantity's points count
    if named:
        names = df.groupby("layer")["name"].first()
        every = math.ceil(len(rows) / NAMED_ROWS)  # (a 48-block net's 48 names: every second one)
        ax.set_yticks(rows[::every], [str(names[i]) for i in layer_idx[::every]],
                      fontsize="small" if len(rows) > 12 else None)
        total = layers.loc[layers["run"] == df["run"].iloc[0], "layer"].nunique()
        ax.set_ylabel(wrap_words(f"probe point ({len(rows)} of its {total} have a value), input first", XLABEL_WIDTH))
    else:
        ax.set_ylabel(wrap_words(layer_axis(df, int(layer_idx[-1]), head=_at_head(quantity), marked=marked),
                                 XLABEL_WIDTH))
        if marked is not None:
            tick_blocks(ax.yaxis, marked)
        else:  # (min_n_ticks: one row was ticked 39.5, 39.6, ... 40.5)
            ax.yaxis.set_major_locator(LayerLocator())
    status = str(df["status"].iloc[0])
    # the config says which run it is (set_title says it was interrupted)
    extra = [f"status: {status}"] if status not in ("ok", "", "interrupted") else []
    set_title(fig, f"{label.title} over training, per {point_word(df)}", df, extra)
    return fig


NAMED_ROWS = 32  # a heatmap of the few points with a value names at most this many rows
FEW_STEPS = 8  # up to this many probed steps, a heatmap gives each one even cell, ticked at its step


def _step_edges(steps: np.ndarray, log: bool | None = None) -> np.ndarray:
    """Cell edges halfway between probed steps, halfway in symlog space when the steps are log-spaced; the
    outer edges at the first and the last probed step: each cell holds the steps nearer its probe than any
    other's, and no step before the first or after the last was taken (the last cell ran half a gap past
    the last step: a default 200-step run's, on its widest gap, to step 217, where its curves end at 200)."""
    s = np.asarray(steps, dtype=float)
    if len(s) == 1:
        return np.array([s[0] - 0.5, s[0] + 0.5])
    if is_log_spaced(s) if log is None else log:
        from matplotlib.scale import SymmetricalLogTransform

        t = SymmetricalLogTransform(base=10, linthresh=1.0, linscale=0.5)
        ts = t.transform(s)
    else:
        t, ts = None, s
    mid = (ts[1:] + ts[:-1]) / 2
    edges = t.inverted().transform(mid) if t is not None else mid
    return np.r_[s[0], edges, s[-1]]
