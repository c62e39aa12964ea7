"""Fused CPU kernels for the probes' per-tensor statistics, run inside the hooks (numba).

On the CPU, a probed step's activation statistics were ~10 passes of small torch kernels over a
stacked copy of every activation (stack, |y|, > bound, sum, sum, subtract, norm), and each
back-propagated signal was kept alive until after the backward pass to be normed then. These
kernels instead read each tensor in the hook that sees it, while it is still in cache: one pass
for an activation's sum, saturated and dead counts, a second (from cache) for its squared
deviations; one pass for a signal's squared norm. They accumulate in float64, so their values hold
the whole float32 range (no recomputation for vanishing or exploding nets) and the mean carries no
float32 rounding. On the reference workload this took every-step probing from ~1.13x to ~1.10x a
bare step (see README, Performance).

Loading them costs ~0.5 s once per process (numba's import and its compiled-code cache; the first
use on a machine also compiles, ~2 s), which only a run probing many steps pays back: see
Probes(fused=...). Import this module only then.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# reassociation lets LLVM vectorize the sums; NaN and infinity keep their meaning (no "fast" flag set)
_FAST = {"reassoc", "nsz", "arcp", "contract"}


@njit(cache=True, nogil=True, fastmath=_FAST)
def activation_stats(y: np.ndarray, lo: float, hi: float, out: np.ndarray) -> None:
    """Into `out` (4,): the sum of y (1-d), its squared deviations from their mean, and the counts of
    entries outside (lo, hi) (saturated) and equal to zero (dead)."""
    total = 0.0
    saturated = 0
    dead = 0
    for i in range(y.size):
        v = y[i]
        total += v
        saturated += (v > hi) | (v < lo)
        dead += v == 0
    mean = total / max(y.size, 1)
    squares = 0.0
    for i in range(y.size):
        d = y[i] - mean
        squares += d * d
    out[0] = total
    out[1] = squares
    out[2] = saturated
    out[3] = dead


@njit(cache=True, nogil=True, fastmath=_FAST)
def squared_norm(g: np.ndarray) -> float:
    """The sum of squares of g (1-d), accumulated in float64."""
    squares = 0.0
    for i in range(g.size):
        v = np.float64(g[i])
        squares += v * v
    return squares


def warm() -> None:
    """Compile the kernels for float32 and float64 tensors (or load them from numba's cache) now, rather
    than inside a probed step's hooks."""
    for dtype in (np.float32, np.float64):
        x = np.zeros(2, dtype)
        activation_stats(x, -1.0, 1.0, np.zeros(4))
        squared_norm(x)
