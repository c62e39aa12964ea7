"""The total gradient norm over training, before clipping (`opt/grad_norm`), with each run's clip
threshold and the share of its updates that were clipped (`opt/clipped`): how gradients explode, and
what clipping did about it (Pascanu et al. 2013)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib import patheffects
from matplotlib.artist import Artist
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.text import Text
from matplotlib.transforms import ScaledTranslation, blended_transform_factory

from gradflow.errors import GradflowError
from gradflow.fmt import fmt
from gradflow.plots.curves import METRICS_REQUIRED, over_steps_keys, to_divergence
from gradflow.keys import ordered_values, rows_with
from gradflow.plots.labels import set_title, value_label
from gradflow.plots.series import Series, collect_series, require, setting, sort_series
from gradflow.plots.style import (
    Palette, bottom_and_left, draw_series, extra_handles, facet_grid, has_marks, label_minor_within,
    label_short_log_axis, legend, line_weight, luminance, note_if_empty, readable, record, spread_apart, step_axis,
    unshown_notes, unshown_panels,
)

GRAD_CLIP, CLIP_VALUE = "train.grad_clip", "train.clip_value"
THRESHOLD_STYLE = dict(lw=1.0, alpha=0.9)
# dashed: reference lines, as theory lines are (no run draws "--"); several thresholds each their own dashes
THRESHOLD_DASHES = ["--", (0, (1.5, 1.5)), (0, (7, 2, 1.5, 2))]
MOST_SHARES = 6  # lines whose clipped share is written beside their end at most (more would pile up)


LIGHT = 0.5  # a threshold colour this light (relative luminance) gets a dark outline


def _outline(colour) -> list:
    """A light threshold line's outline (viridis's top, a pale lime, was near invisible on white); none for
    the rest."""
    if luminance(colour) < LIGHT:
        return []
    return [patheffects.Stroke(linewidth=THRESHOLD_STYLE["lw"] + 1.2, foreground="0.3"), patheffects.Normal()]


def clipping(df: pd.DataFrame) -> pd.Series:
    """Each row's run clips its gradients: by norm (train.grad_clip > 0) or by value (train.clip_value > 0)."""
    on = pd.Series(False, index=df.index)
    for key in (GRAD_CLIP, CLIP_VALUE):
        if (values := setting(df, key)) is not None:
            on |= pd.to_numeric(values, errors="coerce").fillna(0) > 0
    return on


def gradnorm(metrics: pd.DataFrame, color: str | None = None, by_source: bool = False,
             facet: str | None = None) -> Figure:
    """The mean total gradient norm of each evaluation window (before clipping: `opt/grad_norm`) against
    step, on a log axis, one line per run or seed group coloured and styled by the swept keys as the curves
    are; a dashed line at each clip threshold (train.grad_clip > 0) in its runs' colour, named in the
    legend; a diverged run's line ends with the curves' non-finite mark at the step it diverged; where few
    lines clip, each one's share of clipped updates right of the axes, level with its end. facet: a panel per
    value of a swept key; by_source: a panel per results folder (compare --panels); without either, the swept
    keys colour and line style leave out get a panel per combination of their values.
    """
    df = require(metrics, "metrics", METRICS_REQUIRED)
    norms = df[(df["split"] == "opt") & (df["metric"] == "grad_norm")]
    every = setting(df, "train.eval_every")  # (none of a Recorder's runs: its loop logs the norm or not)
    if norms.empty and "status" in df.columns and (df.drop_duplicates("run")["status"] == "diverged").all() \
            and every is not None and every.notna().all():
        # (it said the norm is logged by `gradflow run` with train.steps > 0: these runs were such runs)
        said = f" (train.eval_every={fmt(every.iloc[0])})" if every.nunique() == 1 else ""
        raise GradflowError(f"every run diverged before its first evaluation window ended{said}, so no gradient norm "
                            "was logged: lower train.eval_every to see it rise")
    if norms.empty:
        raise GradflowError("the metrics table has no opt/grad_norm rows: the gradient norm is logged per evaluation "
                            "window by `gradflow run` and `gradflow sweep` training (train.steps > 0); a Recorder's "
                            "runs have it where the loop logs it: rec.log(step, opt_grad_norm=norm), norm the total "
                            "norm clip_grad_norm_ returns")
    logged = to_divergence(df, norms)
    drawn = _diverged_early(df, logged)  # a diverged run's line ends where it did, non-finite
    early = drawn["run"].nunique() - logged["run"].nunique()  # (diverged before their first window: a mark alone)
    shares = clipped_shares(df)
    k = over_steps_keys(drawn, "gradnorm", color, facet, by_source)
    sources, by_source, swept, group_keys = k.sources, k.by_source, k.swept, k.group_keys
    color, style, also, between, marker = k.color, k.style, k.also, k.between, k.marker
    palette = Palette(drawn, color, style, marker=marker)

    panels: list[tuple[str | None, pd.DataFrame]] = [(None, drawn)]
    # (with the facet's values, if any; by_source, with each folder's: its runs of two norms were drawn alike)
    split = unshown_panels(drawn, "source" if by_source else facet, also)
    if split is not None:
        panels, also = list(zip(split[1], split[0])), []
    elif by_source:
        panels = [(f"{value_label('source', v)}", rows_with(drawn, "source", v)) for v in sources]
    elif facet:
        panels = [(value_label(facet, v), rows_with(drawn, facet, v)) for v in ordered_values(drawn[facet])]
    fig, axes = facet_grid(len(panels))
    everything: list[Series] = []
    thresholds: dict[float, set] = {}  # each clip threshold drawn, and the colours of the runs that use it
    dashes = {clip: THRESHOLD_DASHES[i % len(THRESHOLD_DASHES)] for i, clip in enumerate(sorted(_thresholds(drawn)))}
    for ax, (title, sub) in zip(axes, panels):
        ax.set_yscale("log")
        series = sort_series(collect_series(sub, "step", group_keys, True, mark_diverged_end=True), drawn,
                             [k for k in (color, style, marker) if k] + also)
        lw, alpha = line_weight(len(series))
        line_shares = [_share(s, shares) for s in series]  # nan for a line that does not clip
        for s in series:
            draw_series(ax, s, palette.color_of(s.config), palette.style_of(s.config), lw, alpha,
                        marker=palette.marker_for(s.config))
        if np.isfinite(line_shares).sum() <= MOST_SHARES:
            _write_shares(ax, [(s, share, palette.color_of(s.config)) for s, share in zip(series, line_shares)
                               if np.isfinite(share)])
        for clip in sorted(_thresholds(sub)):
            colours = {palette.color_of(s.config) for s in series if _clip_of(s) == clip}
            c = next(iter(colours)) if len(colours) == 1 else "0.3"
            ax.axhline(clip, color=c, zorder=1.5, gid="threshold", ls=dashes[clip], **THRESHOLD_STYLE,
                       path_effects=_outline(c))
            record(ax, "thresholds", [{"y": clip}])
            thresholds.setdefault(clip, set()).update(colours)
        note_if_empty(ax, series)
        everything += series
        if title:
            ax.set_title(title, fontsize="small")
        # from step 0 (the first window ends at eval_every) over the evaluations, and on to the last step that
        # diverged: among evenly spaced evaluations a diverged step read as log-spaced steps, a symlog axis
        step_axis(ax, np.r_[0, norms["step"].unique()])
        ax.set_xlim(right=max(ax.get_xlim()[1], float(drawn["step"].max())))
    # (judged on every panel's values: the panels share the y axis and its ticker)
    label_short_log_axis(axes[0], np.concatenate([[np.nan], *(np.r_[s.lo, s.hi] for s in everything),
                                                  list(_thresholds(drawn))]))
    # the clipped lines beside one that explodes: labels between the powers of ten where they lie
    label_minor_within(axes[0], np.concatenate([[np.nan], *(np.r_[s.lo, s.hi] for s in everything
                                                            if not s.nonfinite.any())]))
    bottom, left = bottom_and_left(axes)  # (the axes are shared: a label on the outer panels only)
    # gradflow's loop logs the mean over each evaluation window; a Recorder's loop, what it logged as opt_grad_norm
    # (in a comparison whose sources evaluate at different intervals, the source's: `setting`)
    every = setting(drawn, "train.eval_every")
    windows = every is not None and every.notna().all()
    for ax in left:
        ax.set_ylabel("total gradient norm before clipping\n(mean over each evaluation window, log)" if windows
                      else "total gradient norm\n(opt_grad_norm as the loop logged it, log)")
    for ax in set(axes) - set(bottom):
        ax.set_xlabel("")
    palette.colorbar(fig, list(axes))
    handles, legend_title = palette.handles(has_marks(everything))
    for clip, colours in sorted(thresholds.items()):  # (each with the dashes its lines have)
        c = next(iter(colours)) if len(colours) == 1 else "0.3"
        handles.append(Line2D([], [], color=c, ls=dashes[clip], **THRESHOLD_STYLE, path_effects=_outline(c),
                              label=f"clip threshold {fmt(clip)}\n(train.grad_clip)"))
    legend(fig, handles + extra_handles(everything, True), legend_title)
    extra = unshown_notes(also, between)
    if windows and everything and all(np.isfinite(s.med).sum() <= 1 for s in everything):  # (a dot each, no word why)
        extra.append("one evaluation window per run, no curve: lower train.eval_every (below train.steps)")
    if windows and early:  # (its mark alone, on the top edge beside the other lines' values, read as one of them)
        extra.append(f"{early} run{'s' * (early > 1)} diverged before {'its' if early == 1 else 'their'} first "
                     "evaluation window ended: a mark alone, no line; lower train.eval_every to see the rise")
    set_title(fig, "Gradient norm during training", drawn, extra, skip=swept + [GRAD_CLIP] * bool(thresholds))
    return fig


def clipped_shares(metrics: pd.DataFrame) -> pd.Series:
    """Each clipping run's share of clipped updates (`gradflow.summary.clipped_share`), by run; the runs
    that do not clip are left out."""
    from gradflow.summary import clipped_share

    rows = metrics[clipping(metrics)]
    return pd.Series({run: clipped_share(g) for run, g in rows.groupby("run", sort=False)}, dtype=float)


def _share(s: Series, shares: pd.Series) -> float:
    """A line's share of clipped updates: its runs' mean (nan where none of them clips)."""
    values = shares.reindex(s.runs).dropna()
    return float(values.mean()) if len(values) else np.nan


def _write_shares(ax, lines: list[tuple[Series, float, object]]) -> None:
    """Each line's share in the margin just right of the axes, level with its last finite point, in the line's
    colour (darkened where it is pale: `readable`): written left of the point, over the line's last stretch,
    labels sat on the curves, two sources' lines of one colour with "100% clipped" stacked over both and no
    telling which was whose. Labels that would overlap are spread apart about their points when the figure is
    drawn (`_Unpiled`), and one away from its point (moved, or its line ends before the axis does) gets a
    leader in its line's colour to it."""
    texts = []
    margin = blended_transform_factory(ax.transAxes, ax.transData) + \
        ScaledTranslation(SHARE_GAP / 72.0, 0.0, ax.figure.dpi_scale_trans)  # (x: the axes' right edge)
    for s, share, c in lines:
        ok = np.isfinite(s.med) & (s.med > 0)
        if ok.any():
            i = np.flatnonzero(ok)[-1]
            record(ax, "clipped", [{"line": s.label, "share": share}])
            text = ax.annotate(
                f"{share:.0%} clipped", (s.x[i], s.med[i]), xytext=(1.0, s.med[i]), textcoords=margin,
                ha="left", va="center", fontsize="x-small", color=readable(c), gid="clipped",
                path_effects=[patheffects.withStroke(linewidth=2.5, foreground=(1, 1, 1, 0.85))],
                arrowprops=dict(arrowstyle="-", color=c, lw=1.2, patchA=None, shrinkA=1.0, shrinkB=LEADER_SHRINK,
                                relpos=(0, 0.5)))
            text.arrow_patch.set_visible(False)  # (until `_Unpiled` finds it off its point)
            texts.append(text)
    if texts:
        ax.add_artist(_Unpiled(texts))


SHARE_GAP = 4.0  # points from the axes' right edge to a share's label
SHARE_PAD = 1.0  # points between two shares' labels moved apart
LEADER_FROM = 2.0  # points a label moves off its point before a leader joins them
LEADER_SHRINK = 2.5  # points a leader stops short of its point (its line's end marker)


class _Unpiled(Artist):
    """Draws nothing: before the shares' labels are drawn (zorder below theirs), places them in the pixels
    they take when drawn. Spaced in data units when written, as a share of the decades the clipping lines span,
    they overlapped where another line (an unclipped run exploding to 1e17) widened the axis: 77% and 92%
    clipped, one over the other. Then stacked upwards from the lowest, the top one of lines ending a few pixels
    apart stood a decade above its own line. Now each label of the column right of the axes is as near its
    point as the others let it (`spread_apart`: a crowded block spreads evenly about its points), within the
    axes' height, with a leader to its point where it is away from it."""

    def __init__(self, texts: list):
        super().__init__()
        self.texts = texts
        self.set_zorder(min(t.get_zorder() for t in texts) - 0.5)
        self.set_in_layout(False)

    def draw(self, renderer) -> None:
        px = renderer.points_to_pixels
        for t in self.texts:
            t.xyann = (1.0, t.xy[1])
            t.update_positions(renderer)  # (its place's transform, from its point as now drawn)
        points = {id(t): self.axes.transData.transform(t.xy) for t in self.texts}
        shown = [t for t in self.texts if t.get_visible() and self.axes.contains_point(points[id(t)])]  # (drawn)
        boxes = {id(t): Text.get_window_extent(t, renderer) for t in shown}
        block = sorted(shown, key=lambda t: points[id(t)][1])  # (all in one column: each may meet the next)
        if block:
            half = max(boxes[id(t)].height for t in block) / 2
            want = [points[id(t)][1] for t in block]
            at = spread_apart(want, 2 * half + px(SHARE_PAD), self.axes.bbox.y0 + half, self.axes.bbox.y1 - half)
            for t, y, point in zip(block, at, want):
                t.xyann = (1.0, self.axes.transData.inverted().transform((0.0, y))[1])
                off = boxes[id(t)].x0 - points[id(t)][0] > px(SHARE_GAP + LEADER_FROM)  # (its line ends early)
                t.arrow_patch.set_visible(off or abs(y - point) > px(LEADER_FROM))
        for t in self.texts:
            if id(t) not in boxes:
                t.arrow_patch.set_visible(False)
        self.stale = False


def _diverged_early(metrics: pd.DataFrame, drawn: pd.DataFrame) -> pd.DataFrame:
    """The drawn rows, and for each run that diverged before its first window was logged a non-finite row at
    the step it diverged (its last step in `metrics`): its mark, where it would otherwise be left out."""
    status = metrics["status"] if "status" in metrics else pd.Series(dtype=object)
    early = metrics[(status == "diverged") & ~metrics["run"].isin(set(drawn["run"]))]
    if early.empty:
        return drawn
    last = early.sort_values("step").groupby("run", sort=False).tail(1)
    return pd.concat([drawn, last.assign(split="opt", metric="grad_norm", value=np.nan)], ignore_index=True)


def _thresholds(df: pd.DataFrame) -> set[float]:
    if (values := setting(df, GRAD_CLIP)) is None:
        return set()
    clips = pd.to_numeric(values[~df["run"].duplicated()], errors="coerce")
    return {float(c) for c in clips if np.isfinite(c) and c > 0}


def _clip_of(s: Series) -> float:
    try:
        return float(s.config.get(GRAD_CLIP))
    except (TypeError, ValueError):
        return np.nan
