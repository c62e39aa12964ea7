"""The mean-field phase diagram of one activation: log chi_1 over (sw2, sb2), with the edge of chaos."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.colors import CenteredNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from scipy.ndimage import distance_transform_edt

from gradflow import theory
from gradflow.errors import GradflowError
from gradflow.fmt import fmt
from gradflow.plots.save import save
from gradflow.plots.style import label_short_log_axis, new_figure

CMAP = "RdBu_r"  # blue: ordered (vanishing gradients), red: chaotic (exploding), white: chi_1 = 1
JUMP = 0.1  # |log chi_1| changing by more than this between neighbouring cells is a jump, not a slope


SW2 = (0.5, 5.0)  # the sigma_w^2 range drawn, unless the edge of chaos lies beyond it (see sw2_range)
LOG_SW2 = 20.0  # a sigma_w^2 range wider than this ratio is drawn on a log axis (sigmoid's 0.5-150: the ordered
# phase was a sliver at the left of a linear one)


def phase_diagram(activation: str, path: Path, sw2: tuple[float, float] | None = None,
                  sb2: tuple[float, float] = (0.0, 0.3), resolution: tuple[int, int] = (240, 120)) -> Path:
    """Draw log chi_1 over sw2 (x) x sb2 (y) for `activation` to `path` (.png, .pdf or .svg); return the path.

    resolution: grid points along (sw2, sb2); the default puts no point on sw2 = 2, where for gelu
    chi_1 touches 1 without crossing it (a tangency the contour would draw as a line). Values come
    from `theory.phase_grid` (tabulated moments, ~1e-4 relative): about a second even for gelu.
    Where the fixed point q* becomes infinite (unbounded phi) a dashed line marks the boundary;
    where chi_1 jumps over 1 there (gelu, silu) no edge of chaos is drawn through the jump.
    """
    return save(phase_figure(activation, sw2, sb2, resolution), Path(path))


def sw2_range(activation: str, sb2: tuple[float, float]) -> tuple[float, float]:
    """SW2, widened to 1.3 times the largest sigma_w^2 of the edge of chaos at the ends of the sb2 range where that
    is past 80% of SW2's end, rounded up to half a power of ten: sigmoid's edge is at 103 (its derivative is at
    most 1/4), and over 0.5-5 its diagram was all ordered. Its start lowered to 0.8 times the smallest edge,
    rounded down to a tenth, where that edge lies within 1.25 times SW2's start (selu's, 0.477 at sb2 = 0)."""
    edges = []
    for b in sb2:
        try:
            edges.append(theory.critical_sw2(activation, b))
        except GradflowError:  # (no edge of chaos at this sb2: gelu's, silu's jump)
            pass
    near, far = min(edges, default=math.inf), max(edges, default=0.0)
    # (selu's edge at sb2 = 0 is 0.477: the curve met the left frame instead of ending at its point)
    lo = SW2[0] if near >= 1.25 * SW2[0] else max(float(np.floor(8 * near)) / 10, near / 2)
    if far <= 0.8 * SW2[1]:
        return lo, SW2[1]
    step = 10.0 ** np.floor(np.log10(1.3 * far)) / 2
    return lo, float(np.ceil(1.3 * far / step) * step)


def phase_figure(activation: str, sw2: tuple[float, float] | None = None, sb2: tuple[float, float] = (0.0, 0.3),
                 resolution: tuple[int, int] = (240, 120)) -> Figure:
    """The phase diagram of `phase_diagram`, unsaved; sw2 by default `sw2_range`'s."""
    lo, hi = sw2 or sw2_range(activation, sb2)
    log_x = lo > 0 and hi > LOG_SW2 * lo
    x = (np.geomspace if log_x else np.linspace)(lo, hi, resolution[0])  # (cells even on the axis drawn)
    y = np.linspace(*sb2, resolution[1])
    q_star, chi1 = theory.phase_grid(activation, x, y)  # (len(y), len(x)) each
    with np.errstate(divide="ignore"):
        log_chi1 = np.log(chi1)
    finite = log_chi1[np.isfinite(log_chi1)]
    half = float(np.abs(finite).max()) if finite.size else 1.0

    fig, axes = new_figure()
    ax = axes[0, 0]
    mesh = ax.pcolormesh(x, y, np.ma.masked_invalid(log_chi1), cmap=CMAP, shading="nearest",
                         norm=CenteredNorm(0.0, halfrange=max(half, 1e-3)), rasterized=True)
    cb = fig.colorbar(mesh, ax=ax, pad=0.02)
    cb.set_label(r"$\log\,\chi_1$  (per-layer log-growth of $\|\partial L/\partial z\|^2$)")

    handles = []
    diverges = np.isinf(q_star)
    line = _divergence_line(activation, x, y, diverges) if diverges.any() and not diverges.all() else None
    # no edge drawn across a jump of chi_1: chi_1 steps over 1 there, it does not pass through it; that
    # includes the rows where it steps at q* = inf by less than JUMP (gelu's in places), not relu's,
    # whose chi_1 = sw2 / 2 runs on through sw2 = 2 as q* turns infinite
    smooth = None
    if line is not None:  # the steps onto the line along rows where q* runs off to infinity: chi_1 goes on
        smooth = ~diverges[:, :-1] & diverges[:, 1:] & (np.isfinite(line[0]) & ~line[2])[:, None]
    jumps = _jumps(log_chi1, smooth) | _crossing_jumps(activation, x, y, log_chi1)
    steps = jumps | (_jumps(diverges * 1.0) & line[2][:, None]) if line is not None else jumps
    edge = np.ma.masked_array(log_chi1, mask=~np.isfinite(log_chi1) | steps)
    drawn = edge.count() and edge.min() < 0.0 < edge.max() and \
        any(len(seg) for seg in ax.contour(x, y, edge, levels=[0.0], colors="black", linewidths=1.6).allsegs[0])
    if drawn:  # (silu: signs on both sides, but every crossing is a jump the mask leaves out: no line)
        handles.append(Line2D([], [], color="black", lw=1.6, label=r"edge of chaos ($\chi_1 = 1$)"))
    else:
        if finite.size and finite.min() < 0.0 < finite.max():  # ordered and chaotic, met only by jumps
            label = r"no edge of chaos: $\chi_1$ crosses 1 only by a jump"
        else:
            side = "ordered" if finite.size and finite.max() < 0 else "chaotic"
            label = f"no edge of chaos here (all {side}){_elsewhere(activation, y[0])}"
        handles.append(Line2D([], [], color="none", label=label))
    if diverges.any() and not diverges.all():
        if line is not None:  # (a contour of the 0/1 field is a staircase of the grid's cells)
            ax.plot(line[0], line[1], color="0.25", lw=1.2, ls="--")
        else:
            ax.contour(x, y, diverges.astype(float), levels=[0.5], colors="0.25", linewidths=1.2, linestyles="--")
        jumped = (jumps & diverges).any() or (line is not None and line[2].any())
        handles.append(Line2D([], [], color="0.25", lw=1.2, ls="--", label=(
            r"beyond: $q^* = \infty$ (signal variance diverges)"
            + ("\n" + r"$\chi_1$ jumps at this line" if jumped else ""))))
    for name, sign, color in (("ordered", -1.0, "#08306b"), ("chaotic", 1.0, "#67000d")):
        spot = _label_spot(x, y, sign * log_chi1)
        if spot is not None:
            ax.text(spot[0], spot[1], f"{name}\n" + (r"$\chi_1 < 1$" if sign < 0 else r"$\chi_1 > 1$"), ha="center",
                    va="center", fontsize=11 if spot[2] > 0.08 else 8, fontweight="bold", color=color,
                    bbox=dict(boxstyle="round,pad=0.3", fc="white", ec="none", alpha=0.6))

    if log_x:
        ax.set_xscale("log")
        ax.set_xlim(lo, hi)  # (the outer cells reached half a cell past the range: 153.5 for 150)
        label_short_log_axis(ax, x, which="x")  # (0.5, 1, 2, 5, ... 100, not 10^0, 10^1, 10^2)
    ax.set_xlabel(r"$\sigma_w^2$  (weight variance $\times$ fan-in" + (", log)" if log_x else ")"))
    ax.set_ylabel(r"$\sigma_b^2$  (bias variance)")
    ax.set_title(f"Mean-field phase diagram: {activation}")
    # below the axes: inside, the upper right corner hid the edge of chaos where it runs up the right
    # (sigmoid's at 103, softsign's at 4.9)
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncols=min(len(handles), 2),
              fontsize="small", frameon=False)
    return fig


def _jumps(z: np.ndarray, smooth: np.ndarray | None = None) -> np.ndarray:
    """Cells next to a discontinuity of z (a step larger than JUMP to a row or column neighbour), but for
    the steps along a row that `smooth` (one per pair of neighbours) marks as continuous however large."""
    out = np.zeros(z.shape, dtype=bool)
    with np.errstate(invalid="ignore"):
        for axis in (0, 1):
            step = np.abs(np.diff(z, axis=axis)) > JUMP
            if axis == 1 and smooth is not None:
                step &= ~smooth
            lead = [slice(None)] * 2
            lead[axis] = slice(None, -1)
            out[tuple(lead)] |= step
            lead[axis] = slice(1, None)
            out[tuple(lead)] |= step
    return out


def _crossing_jumps(activation: str, x: np.ndarray, y: np.ndarray, log_chi1: np.ndarray) -> np.ndarray:
    """The two cells beside each place a row's log chi_1 changes sign where, looked at across the cell at
    1/REFINE of it, it jumps (by more than STEP) rather than passing through 0: gelu's at sigma_b^2
    0.155-0.175 steps from 0.96 to 1.01 at sigma_w^2 = 1.995, less than JUMP between two cells, and the
    contour drew an edge of chaos through it."""
    out = np.zeros(log_chi1.shape, dtype=bool)
    with np.errstate(invalid="ignore"):
        change = np.isfinite(log_chi1[:, :-1]) & np.isfinite(log_chi1[:, 1:]) & \
            (np.sign(log_chi1[:, :-1]) != np.sign(log_chi1[:, 1:]))
    rows, cols = np.nonzero(change)
    if not len(rows):
        return out
    fine = x[cols, None] + (x[cols + 1] - x[cols])[:, None] * np.linspace(0.0, 1.0, REFINE + 1)
    q, chi1 = theory.phase_points(activation, fine, np.broadcast_to(y[rows, None], fine.shape))
    with np.errstate(divide="ignore", invalid="ignore"):
        steps = np.abs(np.diff(np.log(chi1), axis=1))
    steps = np.where(np.isfinite(steps), steps, np.inf)
    k = steps.argmax(axis=1)  # each row's largest step: from fine[k] to fine[k + 1]
    jumped = ~(steps.max(axis=1) <= STEP) & ~_runs_off(activation, fine, y[rows], q, k)
    out[rows[jumped], cols[jumped]] = out[rows[jumped], cols[jumped] + 1] = True
    return out


REFINE = 64  # points across one grid cell where the line q* = inf is found along a row
RUNS_OFF = 1.5  # q* growing by more than this over the last fine cell before the line: running off, not leaping
STEP = 0.01  # |log chi_1| changing by more than this across 1/REFINE of a cell is a jump (a slope changes ~1e-4)


def _divergence_line(activation: str, x: np.ndarray, y: np.ndarray, diverges: np.ndarray,
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The line beyond which q* = inf as (sw2, sb2) points, with whether chi_1 jumps there, row by row,
    where each row of the grid crosses it at most once, from finite to infinite along sw2: found there to
    1/REFINE of a cell; None where some row crosses otherwise (the caller draws the grid's contour)."""
    flips = np.diff(diverges.astype(int), axis=1)
    if (flips < 0).any() or (np.abs(flips).sum(axis=1) > 1).any():
        return None
    rows = np.flatnonzero(flips.any(axis=1))
    if not len(rows):
        return None
    i = flips[rows].argmax(axis=1)  # diverges[row, i] is finite, diverges[row, i + 1] is not
    fine = x[i, None] + (x[i + 1] - x[i])[:, None] * np.linspace(0.0, 1.0, REFINE + 1)  # (rows, REFINE + 1)
    q, chi1 = theory.phase_points(activation, fine, np.broadcast_to(y[rows, None], fine.shape))
    at = np.isinf(q).argmax(axis=1)  # each row's first point beyond (its last point is, as the grid's is)
    n = np.arange(len(rows))
    xs, jumps = np.full(len(y), np.nan), np.zeros(len(y), dtype=bool)
    xs[rows] = fine[n, at]
    with np.errstate(divide="ignore", invalid="ignore"):
        gap = np.abs(np.log(chi1[n, at]) - np.log(chi1[n, np.maximum(at - 1, 0)])) > STEP
    jumps[rows] = (at > 0) & gap & ~_runs_off(activation, fine, y[rows], q, np.maximum(at - 1, 0))
    return xs, y, jumps


def _runs_off(activation: str, fine: np.ndarray, sb2: np.ndarray, q: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Per row of `fine` (sw2 points, q* at each), whether q* runs off to infinity towards the step from
    fine[k] to fine[k + 1]: finite at k, infinite at k + 1, and rising steeply on the way (it grows like
    1 / distance there, so twice as large at half the distance: RUNS_OFF from fine[k - 1] to fine[k]).
    chi_1 is then continuous at the line, however steep: softplus's at sw2 = 2 (sb2 = 0.1) goes 0.946, 0.979,
    0.993 at 2e-3, 2e-4, 2e-5 below it, where it is 1 beyond, and the edge of chaos lies on the line (as relu's
    does). Where the fixed point leaps from a finite value (gelu, silu) q* hardly changes on the way and
    chi_1 jumps (gelu at sb2 = 0.05: 0.734 up to the line, 1.117 beyond)."""
    n = np.arange(len(fine))
    ahead = np.minimum(k + 1, fine.shape[1] - 1)
    h = fine[n, ahead] - fine[n, k]
    q_before = np.where(k > 0, q[n, np.maximum(k - 1, 0)], np.nan)
    if (k == 0).any():  # (no point before fine[0] on the row: one more, a fine cell back)
        q_back, _ = theory.phase_points(activation, fine[k == 0, 0] - h[k == 0], sb2[k == 0])
        q_before[k == 0] = q_back
    with np.errstate(invalid="ignore"):
        return np.isfinite(q[n, k]) & np.isinf(q[n, ahead]) & (q[n, k] > RUNS_OFF * q_before)


def _elsewhere(activation: str, sb2: float) -> str:
    """Where the edge of chaos is at this sb2, if outside the drawn range."""
    try:
        crit = theory.critical_sw2(activation, sb2)
        return "\n" + rf"$\chi_1 = 1$ at $\sigma_w^2$ = {fmt(crit)} for $\sigma_b^2$ = {fmt(sb2)}"
    except GradflowError:
        return ""


def _label_spot(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> tuple[float, float, float] | None:
    """(x, y, clearance): a point well inside the region z > 0, the cell farthest (in axes units) from
    the region's edge and from the frame; None if the region is too small for a label."""
    inside = np.isfinite(z) & (z > 0)
    if inside.sum() < 0.03 * z.size:
        return None
    # each cell's distance (axes fractions) to the nearest cell outside the region, the frame a row of
    # such cells around the grid (a subsample of the outside cells missed the frame: relu's label sat
    # across the left axis, 0.04 from it, in a region a third of the axes wide)
    dist = distance_transform_edt(np.pad(inside, 1), sampling=(1 / max(len(y) - 1, 1), 1 / max(len(x) - 1, 1)))
    dist = dist[1:-1, 1:-1]
    yy, xx = np.meshgrid(np.linspace(0, 1, len(y)), np.linspace(0, 1, len(x)), indexing="ij")
    # of the cells nearly as far in as the farthest (a band of equal ones across a strip-shaped region),
    # the one nearest the middle of the axes
    near = np.where(dist >= 0.95 * dist.max(), (xx - 0.5) ** 2 + (yy - 0.5) ** 2, np.inf)
    i, j = np.unravel_index(int(np.argmin(near)), dist.shape)
    if dist[i, j] < MIN_CLEARANCE:  # no room for the label inside the region: the colour bar says which side it is
        return None
    return float(x[j]), float(y[i]), float(dist[i, j])


MIN_CLEARANCE = 0.045  # axes fraction from a label's centre to its region's edge: half its small box's width
