"""Distributions inside the network, drawn from the optional probe tables (`probe=full`).

    hist      per-layer histograms of activation values and back-propagated gradients at one step,
              one line per layer (Glorot & Bengio 2010, Figs. 6-7), from hist.parquet
    spectrum  the singular values of the input-output Jacobian, one line per run or seed group
              (dynamical isometry, Pennington et al. 2017), from jacobian.parquet

hist.parquet holds fixed log-spaced magnitude bins per sign plus explicit counts of exact zeros,
underflow, overflow and NaN/inf; the figure draws |x| on a log axis (the two signs summed: both
tensors are close to symmetric, and a log axis is where vanishing shows as a shift to the left)
and states every special count in the panel, so no unit goes unaccounted for.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.transforms import blended_transform_factory

from gradflow.errors import GradflowError
from gradflow.fmt import fmt
from gradflow.keys import n_distinct, ordered_values, swept_keys
from gradflow.plots.labels import SPECTRUM, TENSORS, key_label, layer_axis, set_title, value_label
from gradflow.plots.series import at_step, check_key, parse_step, pick_run, require, sort_series
from gradflow.plots.style import (
    MAX_STYLES, Palette, colour_key, facet_grid, init_note, legend, line_weight, new_figure, no_effect_at_init,
    one_run_each, unshown, unshown_notes,
)

HIST_REQUIRED = ("run", "step", "layer", "tensor", "kind", "lo", "hi", "count")
JACOBIAN_REQUIRED = ("run", "step", "scope", "layer", "value")
# the columns that name one value within a run: what runs alike at step 0 must agree on, value by value
HIST_POINTS = ("layer", "tensor", "kind", "lo", "hi")
JACOBIAN_POINTS = ("layer", "sample", "index")
BINS = ("pos", "neg")  # magnitude bins, one set per sign
SPECIAL = {"zero": "exactly 0", "underflow": "|x| < {lo:g} (underflow)", "overflow": "|x| >= {lo:g} (overflow)",
           "nonfinite": "NaN/inf"}
MAX_LAYERS = 12  # lines per panel; more layers are thinned to THINNED, evenly, both ends kept
THINNED = 9


def _thin(values: list, keep: int, most: int | None = None) -> list:
    """Evenly spaced elements, both ends kept: all of them up to `most` (default keep), else `keep`."""
    if len(values) <= (most or keep):
        return list(values)
    idx = sorted({round(i * (len(values) - 1) / (keep - 1)) for i in range(keep)})
    return [values[i] for i in idx]


def _layer_span(layers) -> str:
    layers = sorted(int(v) for v in layers)
    return str(layers[0]) if len(layers) == 1 else f"{layers[0]}-{layers[-1]}"


# --- hist ----------------------------------------------------------------------------------------
def hist(hist_df: pd.DataFrame, run: str | None = None, step: int | str = 0, max_layers: int = MAX_LAYERS) -> Figure:
    """One run's per-layer distributions at one step: a panel per tensor (activation values,
    back-propagated gradients dL/dz), one line per layer coloured from input (dark) to output (bright).

    x: |value| on a log axis (bin centres; 4 bins per decade); y: the fraction of that layer's units
    in each bin. Exact zeros, under/overflow and NaN/inf cannot sit on a log axis: each panel states
    their share, and exact zeros are also drawn per layer on the left edge (e.g. dead ReLUs).
    run: which run, when the table holds several; step: a probed step or "last". At step 0, runs that differ
    only in keys acting on the updates (optim.lr, ...: `hist_init_keys`) and measured the same histograms are
    one run: their first is drawn, and the title says so.
    """
    df = require(hist_df, "hist", HIST_REQUIRED)
    df, inert = one_at_init(df) if run is None and parse_step(step) == 0 else (df, [])
    df = pick_run(df, run, "hist")  # (runs that are not one: it names them)
    df, step_text = at_step(df, step)
    tensors = [t for t in TENSORS if (df["tensor"] == t).any()] + \
              [t for t in ordered_values(df["tensor"]) if t not in TENSORS]
    # the output head's dL/dz is dL/d(logits), a different kind of signal (and a tall spike): left out
    # when it is recognisable, i.e. the one point with a gradient but no activation histogram
    acts = set(df.loc[df["tensor"] == "activation", "layer"])
    grads = set(df.loc[df["tensor"] == "gradient", "layer"])
    head = sorted(grads - acts) if acts else []
    head = head if len(head) == 1 and head[0] == max(grads) else []
    all_layers = [int(v) for v in ordered_values(df["layer"])]
    # thinned per tensor: a transformer's activations are at its 4 mlp.in points of 27, and thinning the 27
    # together kept one of them
    shown = sorted({v for t in tensors for v in _thin(
        [v for v in map(int, ordered_values(df.loc[df["tensor"] == t, "layer"])) if v not in head], THINNED,
        max_layers)})
    df = df[df["layer"].isin(shown)]

    fig, axes = facet_grid(len(tensors), sharex=False, sharey=False, panel=(4.6, 3.8), legend_width=1.6)
    cols = [colormaps["viridis"](t) for t in (np.linspace(0.0, 0.88, len(shown)) if len(shown) > 1 else [0.45])]
    colour = dict(zip(shown, cols))
    lw, alpha = line_weight(len(shown))
    zero_drawn = zero_above = False
    for ax, tensor in zip(axes, tensors):
        sub = df[df["tensor"] == tensor]
        bins = sub[sub["kind"].isin(BINS)]
        populated = bins[bins["count"] > 0]
        totals = sub.groupby("layer")["count"].sum()
        ax.set_xscale("log")
        for layer in shown:
            b = bins[bins["layer"] == layer]
            total = totals.get(layer, 0)
            if b.empty or total == 0:
                continue
            per_bin = b.groupby(["lo", "hi"], sort=True)["count"].sum()  # the two signs summed
            lo, hi = per_bin.index.get_level_values(0).to_numpy(), per_bin.index.get_level_values(1).to_numpy()
            ax.plot(np.sqrt(lo * hi), per_bin.to_numpy() / total, color=colour[layer], lw=lw, alpha=alpha,
                    gid=f"series:layer {layer}")
        # the range holding all but a negligible tail (bins under 0.1% of a layer's units), one bin of margin
        frac = bins["count"] / bins["layer"].map(totals).where(lambda t: t > 0)
        visible = bins[frac >= 1e-3]
        if len(visible):
            ax.set_xlim(visible["lo"].min() / 10 ** 0.25, visible["hi"].max() * 10 ** 0.25)
        ax.set_ylim(bottom=0)
        drawn, above = _special_counts(ax, sub, totals, shown, colour)
        zero_drawn, zero_above = zero_drawn or drawn, zero_above or above
        label = TENSORS.get(tensor)
        ax.set_title(label.title if label else tensor, fontsize="small")
        ax.set_xlabel((label.axis if label else f"|{tensor}|") + " (log)")
        ax.set_ylabel("fraction of units per bin\n(bins: 1/4 decade)")
        if populated.empty:
            ax.text(0.5, 0.5, "no finite nonzero values", transform=ax.transAxes, ha="center", va="center",
                    fontsize="small", color="0.4", gid="note")

    # one discrete colour per drawn layer, labelled like the layer axis of the other figures
    mappable = ScalarMappable(BoundaryNorm(np.arange(len(shown) + 1) - 0.5, len(shown)), ListedColormap(cols))
    cb = fig.colorbar(mappable, ax=axes, label=layer_axis(df, all_layers[-1]).replace(", ", ",\n", 1),
                      shrink=0.9, aspect=30, pad=0.02)
    ticks = list(range(len(shown)))
    labels = [str(v) for v in shown]
    if len(shown) > 12:
        keep = set(_thin(ticks, 12))
        ticks, labels = [t for t in ticks if t in keep], [lab for t, lab in zip(ticks, labels) if t in keep]
    cb.set_ticks(ticks, labels=labels)
    cb.ax.tick_params(length=0)
    cb.ax.set_gid("colorbar")
    if zero_drawn or zero_above:
        legend(fig, [Line2D([], [], color="0.3", ls="none", marker="<", ms=5,
                            label="fraction exactly 0\n(left edge, per layer)")] * zero_drawn
               + [Line2D([], [], color="0.3", ls="none", marker="^", ms=5,
                         label="fraction exactly 0, above\nthe axis (the box: by layer)")] * zero_above)
    status = str(df["status"].iloc[0])
    n_points = len(all_layers) - len(head)
    extra = [step_text] + ([f"{len(shown)} of {n_points} layers shown"] if len(shown) < n_points else []) \
        + ([f"output head ({head[0]}) left out"] if head else []) \
        + ([f"status: {status}"] if status not in ("ok", "") else []) + [init_note(inert, per="figure")]
    set_title(fig, "Per-layer distributions of activations and back-propagated gradients "
                   "(cf. Glorot & Bengio 2010)", df, extra, skip=inert)
    return fig


def one_at_init(hist_df: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """(the rows of its first run, `hist_init_keys`) where the runs of `hist_df` are one measurement at step 0,
    alike but in those keys; else (hist_df, [])."""
    if hist_df["run"].nunique() < 2 or not (inert := hist_init_keys(hist_df)):
        return hist_df, []
    one = one_run_each(hist_df, swept_keys(hist_df), inert)
    return (one, inert) if one["run"].nunique() == 1 else (hist_df, [])


def hist_init_keys(hist_df: pd.DataFrame) -> list[str]:
    """The swept keys whose runs' step-0 histograms are one measurement (`no_effect_at_init` on the counts of
    each bin): keys acting on the updates alone (optim.lr, ...) where the runs that differ only in them
    counted the same units in every bin. Each distinct step-0 histogram is one figure (`hist`, the standard
    set), not one per run."""
    if not {"step", "count"} <= set(hist_df.columns):
        return []
    at0 = hist_df[hist_df["step"] == 0]
    return no_effect_at_init(at0.assign(value=at0["count"]), swept_keys(at0), points=HIST_POINTS) if len(at0) else []


def _special_counts(ax, sub: pd.DataFrame, totals: pd.Series, shown: list, colour: dict) -> tuple[bool, bool]:
    """State the units a log axis cannot show; mark each layer's exact-zero fraction on the left edge. Whether
    some mark is on the axis, and whether some is above it (on its top edge)."""
    special = sub[sub["kind"].isin(SPECIAL)]
    zeros = special[special["kind"] == "zero"].groupby("layer")["count"].sum()
    share = {layer: zeros.get(layer, 0) / totals[layer] for layer in shown
             if zeros.get(layer, 0) > 0 and totals.get(layer, 0) > 0}
    # the marks inside the y range, unless they would stretch it past ZEROS_STRETCH times the lines' top (a ReLU
    # net's half of its units at 0 pressed lines that peak at 0.13 into the bottom fifth): those then sit on
    # the top edge, pointing up, and the panel's note gives each one's share
    top = ax.get_ylim()[1]
    if share and max(share.values()) <= ZEROS_STRETCH * top:
        top = max(top, max(share.values()) * 1.05)
    above = [(layer, f) for layer, f in share.items() if f > top]
    lines = []
    grand = float(totals.sum())
    for kind, text in SPECIAL.items():
        rows = special[(special["kind"] == kind) & (special["count"] > 0)]
        if rows.empty or grand == 0:
            continue
        n = int(rows["count"].sum())
        lo = rows["lo"].iloc[0]
        lines.append(f"{text.format(lo=lo if np.isfinite(lo) and lo > 0 else rows['hi'].iloc[0])}: "
                     f"{n:,} units ({n / grand:.1%}), layer{'s' * (rows['layer'].nunique() > 1)} "
                     f"{_layer_span(rows['layer'].unique())}")
        if kind == "zero" and above:  # (the marks on the top edge read alike: which layer's units are dead)
            cells = [f"{layer}: {f:.0%}" for layer, f in above]
            lines += ["exactly 0 by layer (▲):"] + ["  ".join(cells[i:i + 6]) for i in range(0, len(cells), 6)]
    if lines:
        ax.text(0.98, 0.97, "\n".join(lines), transform=ax.transAxes, ha="right", va="top", fontsize=6.5,
                color="0.15", gid="special", bbox=dict(boxstyle="round,pad=0.3", fc="white", ec="0.7", alpha=0.85))
    if not share:
        return False, False
    top *= 1 + NOTE_ROOM * len(lines) * bool(above)  # (room above the lines for the note's rows: it hid their peaks)
    ax.set_ylim(0, top)
    trans = blended_transform_factory(ax.transAxes, ax.transData)
    for layer, f in share.items():
        ax.plot([0.0], [min(f, top)], transform=trans, ls="none", marker="<" if f <= top else "^", ms=5,
                color=colour[layer], clip_on=False, gid="zeros" if f <= top else "zeros above")
    return bool(min(share.values()) <= top), bool(above)


ZEROS_STRETCH = 1.5  # the exact-zero marks may raise a histogram's y axis to this many times its lines' top
NOTE_ROOM = 0.075  # of the y axis's height added above the lines for each row of the note, where it lists shares


# --- spectrum ------------------------------------------------------------------------------------
def spectrum(jacobian: pd.DataFrame, step: int | str = 0, color: str | None = None,
             scope: str = "input_output") -> Figure:
    """Density of the Jacobian's singular values s (log x) at one step, pooled over the sampled
    inputs and over the seeds of a group: one line per run or seed group, coloured by a swept key.

    Dynamical isometry (Pennington et al. 2017) is every s close to 1: a narrow peak at s = 1. The
    legend gives each line's mean(s) and var(s^2) (the spread of the spectrum of J J^T). At step 0 the
    keys that act on the updates alone (optim.lr, train.steps, ...: `no_effect_at_init`) are no keys where
    their runs' spectra are the same: those runs are one line, and the title says so.
    scope: "input_output" (input -> last hidden layer) or "layer" (every layer-to-layer Jacobian pooled).
    """
    df = require(jacobian, "jacobian", JACOBIAN_REQUIRED)
    scopes = ordered_values(df["scope"])
    if scope not in scopes:
        raise GradflowError(f"scope={scope!r} is not in the jacobian table; choices: {', '.join(map(str, scopes))}")
    df, step_text = at_step(df[df["scope"] == scope], step)
    # a singular value below NUMERICAL_ZERO x its run's largest is zero to the float64 Gram's accuracy (a
    # dead ReLU unit's): counted as such, not drawn (one of 1e-56 stretched the axis over 44 decades)
    v = df["value"].astype(float)
    largest = v.where(np.isfinite(v)).groupby(df["run"]).transform("max")
    df = df.assign(value=v.mask(v <= NUMERICAL_ZERO * largest, 0.0))
    multi_source = n_distinct(df["source"]) > 1
    swept = swept_keys(df)
    check_key(color, "color", swept + (["source"] if multi_source else []))
    # at step 0 the runs that differ only in keys acting on the updates (optim.lr, ...) and measured the same
    # spectrum are one line: their first run's (a line per lr, all alike, was drawn)
    inert = no_effect_at_init(df, swept, keep=(color,), points=JACOBIAN_POINTS) if parse_step(step) == 0 else []
    df = one_run_each(df, swept, inert)
    swept = [k for k in swept if k not in inert]
    # (the key every figure of the study colours by: depth took the colour here, where the rest coloured by
    # activation)
    color = color or colour_key(df, swept, None, styles_free=not multi_source)
    style = "source" if multi_source and color != "source" else \
        next((k for k in swept if k != color and n_distinct(df[k]) <= MAX_STYLES), None)
    group_keys = swept + (["source"] if multi_source else [])
    # the keys neither colour nor line style shows (compare of two depth x activation folders: the source took
    # the style, and relu and tanh were drawn alike, their legend entries alike): each line's label names them,
    # and the title says the lines differ in them
    also, between = unshown(df, swept + (["source"] if multi_source else []), (color, style))
    palette = Palette(df, color, style)
    groups = [g for _, g in df.groupby(group_keys, dropna=False, sort=False)] if group_keys else [df]
    if group_keys:  # legend order: ascending swept values
        groups = [k.frame for k in sort_series([_Key(g) for g in groups], df, [k for k in (color, style) if k]
                                                + [k for k in group_keys if k not in (color, style)])]

    values = df["value"].to_numpy(dtype=float)
    good = values[np.isfinite(values) & (values > 0)]
    fig, axes = new_figure()
    ax = axes[0, 0]
    ax.set_xscale("log")
    ax.grid(True, alpha=0.25, lw=0.5)
    handles = []
    if len(good):
        edges = _log_bins(good, [g["value"].to_numpy(dtype=float) for g in groups])
        widths = np.diff(np.log10(edges))
        centres = np.sqrt(edges[1:] * edges[:-1])
    lw, alpha = line_weight(len(groups))
    for g in groups:
        cfg = g.iloc[0]
        c, ls = palette.color_of(cfg), palette.style_of(cfg)
        s = g["value"].to_numpy(dtype=float)
        ok = np.isfinite(s) & (s > 0)
        finite = s[np.isfinite(s)]
        bits = [f"mean s = {fmt(finite.mean(), digits=3) if len(finite) else 'n/a'}",
                f"var s² = {fmt((finite ** 2).var(), digits=3) if len(finite) else 'n/a'}"]
        bad = int((~np.isfinite(s)).sum())
        zero = int((np.isfinite(s) & (s <= 0)).sum())
        if bad:
            bits.append(f"{bad} NaN/inf")
        if zero:
            bits.append(f"{zero} zero (s < {NUMERICAL_ZERO:.0e} max)".replace("e-0", "e-"))
        runs = g["run"].nunique()
        # (one line of several runs, seeds pooled, read "this run (8 runs)")
        # (a compared source by its name and what sets it apart, as the other figures' legends: not source=j1)
        values = ", ".join([palette.label(k, cfg[k], value_label(k, cfg[k])) for k in (color, style) if k]
                           + [value_label(k, cfg[k]) for k in also])
        name = values or ("this run" if runs == 1 else "pooled")
        said = f"{values} ({runs} runs)" if values and runs > 1 else values or (f"{runs} runs, pooled" if runs > 1
                                                                                else "this run")
        label = f"{said}\n  " + ", ".join(bits)
        if len(good) and ok.any():
            counts, _ = np.histogram(s[ok], bins=edges)
            ax.plot(centres, counts / len(s) / widths, color=c, ls=ls, lw=lw, alpha=alpha,
                    drawstyle="steps-mid", gid=f"series:{name}")
        handles.append(Line2D([], [], color=c, ls=ls, lw=1.6, label=label))
    ax.axvline(1.0, color="0.3", ls=":", lw=1.0, gid="reference")
    handles.append(Line2D([], [], color="0.3", ls=":", lw=1.0, label="s = 1 (isometry)"))
    if not len(good):
        ax.text(0.5, 0.5, "no finite positive singular values", transform=ax.transAxes, ha="center",
                va="center", fontsize="small", color="0.4", gid="note")
    ax.set_ylim(bottom=0)
    what = "input-output Jacobian" if scope == "input_output" else "layer-to-layer Jacobians"
    text = SPECTRUM.axis.replace("input-output Jacobian", what) if scope == "input_output" else \
        f"singular value $s$ of the {what}"
    ax.set_xlabel(text.replace(" of the ", " (log) of the\n", 1))  # (two lines: one was wider than the axes)
    ax.set_ylabel("density per decade of s")
    legend(fig, handles, key_label(color) if color else None)
    n_inputs = df.groupby("run")["sample"].nunique().max() if "sample" in df.columns else None
    extra = [step_text] + ([f"{n_inputs} inputs per run"] if n_inputs else []) + [init_note(inert)]
    extra += unshown_notes(also, between) + ["dynamical isometry: all s ≈ 1 (Pennington et al. 2017)"]
    set_title(fig, f"Singular values of the {what}", df, extra, skip=group_keys + inert)
    return fig


NUMERICAL_ZERO = 1e-6  # relative to a run's largest singular value: above the float64 Gram's floor, an
# eigenvalue's error ~1e-16 of the largest, so sqrt(1e-16) = 1e-8 in s (a ReLU net's zero singular values came
# out spread over 1e-9 to 3e-8 of the largest: a cut at 1e-8 drew half of them as a mode 5 decades down)


def _log_bins(good: np.ndarray, groups: list[np.ndarray]) -> np.ndarray:
    """Log-spaced edges over all finite positive values, one empty bin beyond each end so every
    curve returns to zero; the width follows the Freedman-Diaconis rule on log10 s of the most
    concentrated group (1/20 to 1/2 decade)."""
    width = 0.5
    for v in groups:
        t = np.log10(v[np.isfinite(v) & (v > 0)])
        if len(t) >= 4:
            iqr = np.subtract(*np.percentile(t, [75, 25]))
            if iqr > 0:
                width = min(width, 2 * iqr / len(t) ** (1 / 3))
    width = max(width, 0.05)
    lo, hi = math.log10(good.min()), math.log10(good.max())
    n = max(int(math.ceil((hi - lo) / width)), 1)
    mid = (lo + hi) / 2
    half = (n * width) / 2 + width  # one empty bin beyond each end
    return 10 ** np.linspace(mid - half, mid + half, n + 3)


class _Key:
    """A frame posing as a Series for sort_series (which orders by .config)."""

    def __init__(self, frame: pd.DataFrame):
        self.frame = frame
        self.config = frame.iloc[0].to_dict()
