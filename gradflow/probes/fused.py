"""Fused CPU kernels for the probes' per-tensor statistics, run inside the hooks (numba).

On the CPU, a probed step's activation statistics were ~10 passes of small torch kernels over a
stacked copy of every activation (stack, |y|, > bound, sum, sum, subtract, norm), and each
back-propagated signal was kept alive until after the backward pass to be normed then. These
kernels instead read each tensor in the hook that sees it, while it is still in cache, by its
address (see squared_norm_at): one pass for an activation's sum, saturated and dead counts, a
second (from cache) for its squared deviations; one pass for a signal's squared norm. They
accumulate in float64, so their values hold the whole float32 range (no recomputation for
vanishing or exploding nets) and the mean carries no float32 rounding. On the reference workload
they took every-step probing from ~1.13x to ~1.10x a bare step, and reading by address saved
0.5-1 ms more per probed step at 1 thread (see README, Performance).

Loading them costs ~0.5 s once per process (numba's import and its compiled-code cache; the first
use on a machine also compiles, ~2 s), which only a run probing many steps pays back: see
Probes(fused=...). Import this module only then.
"""

from __future__ import annotations

import math

import numpy as np
from numba import carray, njit, types
from numba.extending import intrinsic

# reassociation lets LLVM vectorize the sums; NaN and infinity keep their meaning (no "fast" flag set)
_FAST = {"reassoc", "nsz", "arcp", "contract"}


# What an activation output's first pass counts besides its sum, one loop each (Probes picks one per point from
# its activation): a loop that counts nothing it does not need is 1.5-2x faster, and the counts are in int32
# vector lanes (an int64 count of each comparison halves the lanes): on this project's machine, for one 128 x 256
# tanh output, 4.6 us for both passes against 6.2 with every count in one loop (README, Performance)
SUM, MAGNITUDE, OUTSIDE, ZEROS, OUTSIDE_AND_ZEROS = range(5)  # MAGNITUDE: |v| > hi, for lo = -hi
_INT32_COUNTS = 2**31 - 1  # more values than this are counted in int64


def counts_for(lo: float, hi: float, dying: bool) -> int:
    """What activation_stats counts for an activation whose outputs outside (lo, hi) are saturated
    ((-inf, inf): it does not saturate) and that can (or cannot) die."""
    if lo == -math.inf and hi == math.inf:
        return ZEROS if dying else SUM
    if dying:
        return OUTSIDE_AND_ZEROS
    return MAGNITUDE if lo == -hi else OUTSIDE


@njit(cache=True, nogil=True, fastmath=_FAST)
def activation_stats(y: np.ndarray, lo: float, hi: float, counts: int, out: np.ndarray) -> None:
    """Into `out` (4,): the sum of y (1-d), its squared deviations from their mean, and as `counts` says
    (SUM: neither), the counts of entries outside (lo, hi) (saturated) and equal to zero (dead); a
    count not asked for is 0 (but for 2^31 values or more, where the int64 loop takes both)."""
    if y.size > _INT32_COUNTS:
        _sum_and_counts_int64(y, lo, hi, out)
    else:
        _sum_and_counts(y, y.dtype.type(lo), y.dtype.type(hi), counts, out)
    mean = out[0] / max(y.size, 1)
    squares = 0.0
    for i in range(y.size):
        d = y[i] - mean
        squares += d * d
    out[1] = squares


@njit(cache=True, nogil=True, fastmath=_FAST)
def _sum_and_counts(y: np.ndarray, lo, hi, counts: int, out: np.ndarray) -> None:
    """activation_stats' first pass: out[0] the sum, out[2] saturated, out[3] dead (lo and hi in y's dtype:
    float32 bounds are float32-rounded, so a float32 comparison is exact)."""
    total = 0.0
    saturated = np.int32(0)
    dead = np.int32(0)
    zero = y.dtype.type(0)
    if counts == SUM:
        for i in range(y.size):
            total += y[i]
    elif counts == MAGNITUDE:
        for i in range(y.size):
            v = y[i]
            total += v
            saturated += np.int32(abs(v) > hi)
    elif counts == OUTSIDE:
        for i in range(y.size):
            v = y[i]
            total += v
            saturated += np.int32((v > hi) | (v < lo))
    elif counts == ZEROS:
        for i in range(y.size):
            v = y[i]
            total += v
            dead += np.int32(v == zero)
    else:
        for i in range(y.size):
            v = y[i]
            total += v
            saturated += np.int32((v > hi) | (v < lo))
            dead += np.int32(v == zero)
    out[0] = total
    out[2] = saturated
    out[3] = dead


@njit(cache=True, nogil=True, fastmath=_FAST)
def _sum_and_counts_int64(y: np.ndarray, lo: float, hi: float, out: np.ndarray) -> None:
    """_sum_and_counts for more values than an int32 counts, taking both counts."""
    total = 0.0
    saturated = 0
    dead = 0
    for i in range(y.size):
        v = y[i]
        total += v
        saturated += (v > hi) | (v < lo)
        dead += v == 0
    out[0] = total
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


# --- the same kernels on a tensor's address (Tensor.data_ptr() of a contiguous CPU tensor) and size. A tensor's
# numpy view is one to two microseconds warm and several times that in a hook, where the code runs cold
# between a step's kernels; an address is an integer. The tensor must stay alive through the call. ---
def _pointer_to(dtype):
    @intrinsic
    def pointer(typingctx, address):
        sig = types.CPointer(dtype)(address)

        def codegen(context, builder, signature, args):
            return builder.inttoptr(args[0], context.get_value_type(types.CPointer(dtype)))

        return sig, codegen

    return pointer


_float32_at, _float64_at = _pointer_to(types.float32), _pointer_to(types.float64)


@njit(cache=True, nogil=True, fastmath=_FAST)
def squared_norm_at(address: int, n: int, wide: bool) -> float:
    """squared_norm of the n float32 (or, `wide`, float64) values at `address`."""
    if wide:
        return squared_norm(carray(_float64_at(address), n))
    return squared_norm(carray(_float32_at(address), n))


@njit(cache=True, nogil=True, fastmath=_FAST)
def activation_stats_at(address: int, n: int, wide: bool, lo: float, hi: float, counts: int, out: np.ndarray) -> None:
    """activation_stats of the n float32 (or, `wide`, float64) values at `address`."""
    if wide:
        activation_stats(carray(_float64_at(address), n), lo, hi, counts, out)
    else:
        activation_stats(carray(_float32_at(address), n), lo, hi, counts, out)


@njit(cache=True, nogil=True, fastmath=_FAST)
def squared_norms_at(addresses: np.ndarray, sizes: np.ndarray, wide: bool, out: np.ndarray) -> None:
    """Into `out`: squared_norm_at of each tensor by its address and size, all float32 (or, `wide`, float64):
    one call for a list of tensors (the weights, their updates, the gradients)."""
    for j in range(addresses.size):
        out[j] = squared_norm_at(addresses[j], sizes[j], wide)


# --- torch.optim.SGD's step, taking the norms as it goes. torch's step (one tensor at a time on the CPU) makes
# three passes over each momentum buffer and one over each weight and gradient; the loop then read every gradient
# again for its norms and, at a probed step, the weights and the updates too. One pass here reads each gradient,
# weight and buffer once and writes the buffer and the weight, in torch's arithmetic: each operation rounded as
# its CPU kernel rounds it (a scalar product b * momentum, then fused multiply-adds, alpha cast to the tensors'
# dtype), so the weights come out equal to torch's to the bit (tests/test_sgd_step.py; SGDStep checks it on the
# machine before it is used). ---
@intrinsic
def _fma(typingctx, a, b, c):
    """a * b + c rounded once (torch's Vectorized fmadd, and its scalar tail)."""
    sig = a(a, b, c)

    def codegen(context, builder, signature, args):
        return builder.fma(*args)

    return sig, codegen


@njit(cache=True, nogil=True)  # no fastmath: every rounding as written
def _sgd_at(w, b, g, i, lr, decay, momentum, keep, nesterov: bool, maximize: bool):
    """Step w[i] (and b[i]) as torch.optim.SGD does; returns (w[i] before, the direction d: w[i] -= lr * d).
    `keep`: 1 - dampening; a momentum of 0 leaves b alone."""
    grad = -g[i] if maximize else g[i]
    before = w[i]
    if decay != 0:
        grad = _fma(before, decay, grad)
    d = grad
    if momentum != 0:
        d = _fma(grad, keep, b[i] * momentum)
        b[i] = d
        if nesterov:
            d = _fma(d, momentum, grad)
    w[i] = _fma(d, -lr, before)
    return before, d


# _sgd_at of the common flavours, their flags fixed (the same operations in the same order): with the flags
# tested at every element the loop did not vectorize where numba compiled it in the process (~2 ns an element:
# 2.5-3.0 ms for 20 tensors of 65,536 floats, against 0.56 ms read from its cache, whose linked code was
# specialized; README, Performance); with them fixed, ~0.3 ns an element either way
@njit(cache=True, nogil=True)  # no fastmath: every rounding as written
def _heavy_ball(w, b, i, grad, before, lr, momentum, keep):
    """_sgd_at's momentum step of w[i] and b[i] from its gradient (weight decay added) and w[i] `before`."""
    d = _fma(grad, keep, b[i] * momentum)
    b[i] = d
    w[i] = _fma(d, -lr, before)
    return before, d


@njit(cache=True, nogil=True)  # no fastmath: every rounding as written
def _momentum_at(w, b, g, i, lr, momentum, keep):
    """_sgd_at with momentum, no weight decay, neither nesterov nor maximize."""
    return _heavy_ball(w, b, i, g[i], w[i], lr, momentum, keep)


@njit(cache=True, nogil=True)  # no fastmath: every rounding as written
def _momentum_decay_at(w, b, g, i, lr, decay, momentum, keep):
    """_sgd_at with momentum and weight decay, neither nesterov nor maximize."""
    before = w[i]
    return _heavy_ball(w, b, i, _fma(before, decay, g[i]), before, lr, momentum, keep)


@njit(cache=True, nogil=True)  # no fastmath: every rounding as written
def _plain_at(w, g, i, lr):
    """_sgd_at without momentum or weight decay, neither nesterov nor maximize."""
    before = w[i]
    d = g[i]
    w[i] = _fma(d, -lr, before)
    return before, d


@njit(cache=True, nogil=True, fastmath=_FAST)
def _squares(sums, v, before, d):
    """`sums` (the squared norms of the gradient, of the weight before the step and of d so far) with one
    element's, in float64."""
    return sums[0] + np.float64(v) * v, sums[1] + np.float64(before) * before, sums[2] + np.float64(d) * d


@njit(cache=True, nogil=True, fastmath=_FAST)
def _sgd_step(w, b, g, lr, decay, momentum, keep, nesterov: bool, maximize: bool, out: np.ndarray) -> None:
    """_sgd_at over w (1-d), by the loop of its flavour; into `out` (3,) the squared norms of g, of w before the
    step and of d, in float64. (A loop per flavour written out: one loop handed its element function, a
    first-class function, kept numba from caching the kernel, which every process then compiled, ~2.5 s.)"""
    sums = (0.0, 0.0, 0.0)
    if not (nesterov or maximize) and momentum != 0 and decay == 0:
        for i in range(w.size):
            sums = _squares(sums, g[i], *_momentum_at(w, b, g, i, lr, momentum, keep))
    elif not (nesterov or maximize) and momentum != 0:
        for i in range(w.size):
            sums = _squares(sums, g[i], *_momentum_decay_at(w, b, g, i, lr, decay, momentum, keep))
    elif not (nesterov or maximize) and decay == 0:
        for i in range(w.size):
            sums = _squares(sums, g[i], *_plain_at(w, g, i, lr))
    else:
        for i in range(w.size):
            sums = _squares(sums, g[i], *_sgd_at(w, b, g, i, lr, decay, momentum, keep, nesterov, maximize))
    out[0], out[1], out[2] = sums


@njit(cache=True, nogil=True, fastmath=_FAST)
def sgd_step_at(weights: np.ndarray, buffers: np.ndarray, grads: np.ndarray, sizes: np.ndarray, group: np.ndarray,
                lr: np.ndarray, decay: np.ndarray, momentum: float, dampening: float, nesterov: bool, maximize: bool,
                wide: bool, out: np.ndarray) -> None:
    """One torch.optim.SGD step of each tensor j (addresses of its weight, momentum buffer (unread without
    momentum) and gradient, all float32 or, `wide`, float64; sizes[j] values; group[j] the index of its
    parameter group's `lr` and `decay`); out[j] = squared norms of the gradient, of the weight before the step
    and of the step's direction d (the weight moved by -lr * d)."""
    keep = 1.0 - dampening  # (in float64, then cast, as torch casts its alpha)
    for j in range(weights.size):
        n, k = sizes[j], group[j]
        if wide:
            _sgd_step(carray(_float64_at(weights[j]), n), carray(_float64_at(buffers[j]), n),
                      carray(_float64_at(grads[j]), n), lr[k], decay[k], momentum, keep, nesterov, maximize, out[j])
        else:
            _sgd_step(carray(_float32_at(weights[j]), n), carray(_float32_at(buffers[j]), n),
                      carray(_float32_at(grads[j]), n), np.float32(lr[k]), np.float32(decay[k]),
                      np.float32(momentum), np.float32(keep), nesterov, maximize, out[j])


def warm() -> None:
    """Compile the kernels the probes call, for float32 and float64 tensors (or load them from numba's cache)
    now, rather than inside a probed step's hooks."""
    for dtype in (np.float32, np.float64):
        x = np.zeros(2, dtype)
        wide = dtype is np.float64
        address = x.ctypes.data
        squared_norm_at(address, 2, wide)
        activation_stats_at(address, 2, wide, -1.0, 1.0, OUTSIDE_AND_ZEROS, np.zeros(4))
        squared_norms_at(np.array([address]), np.array([2]), wide, np.zeros(1))
        for momentum in (0.0, 0.9):  # (numba compiles one version for all flavours: momentum is a float)
            one = np.array([address])
            sgd_step_at(one, one, one, np.array([0]), np.array([0], np.int64), np.zeros(1), np.zeros(1), momentum,
                        0.0, False, False, wide, np.zeros((1, 3)))
