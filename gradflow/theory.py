"""Mean-field signal propagation (Poole et al. 2016, Schoenholz et al. 2017): what depth does to a
signal and its gradient in a wide fully-connected net at initialization, computed with numpy alone.

Setting: W ~ N(0, sw2 / fan_in), b ~ N(0, sb2), pre-activations h_l = W phi(h_{l-1}) + b, and in
the wide limit each unit's pre-activation is Gaussian with variance q_l. With z ~ N(0, 1):

    length map       q_l = sw2 E[phi(sqrt(q_{l-1}) z)^2] + sb2              fixed point q*
    gradient factor  chi_1 = sw2 E[phi'(sqrt(q*) z)^2]
    correlation map  c_l = (sw2 E[phi(u1) phi(u2)] + sb2) / q*,  u1 = sqrt(q*) z1,
                     u2 = sqrt(q*) (c z1 + sqrt(1 - c^2) z2)                 fixed point c*
    chi_c = sw2 E[phi'(u1) phi'(u2)] at c*   (the slope of the correlation map there)
    xi_c = -1 / log(chi_c),  xi_q = -1 / log(slope of the length map at q*)

The squared norm of the back-propagated signal dL/dh grows by chi_1 per layer towards the input,
so at layer l (0 = input) it is sqrt(chi_1)^(L - l) times its value at the last layer L:
chi_1 < 1 is the ordered phase (vanishing gradients, c* = 1), chi_1 > 1 the chaotic phase
(exploding gradients, c* < 1), chi_1 = 1 the edge of chaos, where xi_c diverges. Schoenholz et al.
found nets trainable up to a depth of about 6 xi_c.

Numerics. Every activation in the registry is smooth except possibly at 0 (ReLU, SELU, ELU,
softsign ...), so Gaussian expectations use Gauss-Legendre rules on [-Z, 0] and [0, Z] (Z = 10,
tail mass < 1e-23) instead of Gauss-Hermite: a Hermite rule straddling a jump in phi' is off by
~1e-1 for SELU's E[phi'^2] even with 301 nodes, the split rule is exact to ~1e-14. In z the
integrand f(sqrt(q) z) has structure on two scales: phi's own (|u| ~ 1, i.e. |z| ~ 1/sqrt(q)) and
the Gaussian's (|z| ~ 1). For q <= 4 one 64-node rule per half-line resolves both (~5e-14). For
larger q a fixed rule lets phi' (for tanh a spike of width ~1/sqrt(q) at z = 0) slip between its
nodes: at q = 1e6 it got tanh's E[phi'^2] wrong by 100%, chi_1 = 0.10 instead of 532. So there
each half-line is cut geometrically, [0, Z 4^-K], [Z 4^-K, Z 4^-(K-1)], ..., [Z / 4, Z], with K
such that the innermost piece spans |u| <= 2, and 20 nodes per piece: 2 (K + 1) 20 nodes (320
at q = 1e6, 720 at q = 1e18), ~5e-14 relative for every registry activation, checked against
30-digit integration for 1 < q <= 1e40. The 2D expectations cut the inner integral where u2
changes sign and grade it towards that point on u2's scale 1 / (sqrt(q) sqrt(1 - c^2)); the outer
one is graded towards z1 = 0 down to the smaller of 1/sqrt(q) and sqrt(1 - c^2), the width to
which the inner integral smooths a kink of phi (without that, SELU's E[phi'(u1) phi'(u2)] at
c = 1 - 1e-6 was off by 1e-4 even at q = 0.5). Piecewise-linear activations (linear, relu,
leaky_relu) use exact closed forms (arc-cosine kernel for the correlation map).

Degenerate fixed points, and what this module reports for them (all documented on `point`):
  q* = inf  the length grows without bound (e.g. relu with sw2 > 2, or sw2 = 2 with sb2 > 0):
            chi_1 is the limit sw2 E[phi'^2] as q -> inf (relu: sw2 / 2, still exact per layer),
            xi_q = nan (no fixed point to converge to). A bounded phi (tanh, sigmoid, softsign)
            always has a finite q* <= sw2 + sb2, which is found up to 2^1023 (~9e307);
  q* = 0    the length decays to zero (sb2 = 0 and phi(0) = 0 in the ordered phase): chi_1 is
            the limit as q -> 0 (tanh: sw2). With sb2 > 0, q* >= sb2 is found down to 2^-1022;
  in both cases the correlation map the net sees becomes scale-free (phi is homogeneous at the
  scale the signal lives on), its slope at c = 1 is exactly 1, so c* = 1, chi_c = 1, xi_c = inf:
  correlations converge polynomially, not exponentially. 6 xi_c is then no trainability bound;
  the gradient still vanishes or explodes as sqrt(chi_1)^depth (see `MeanField.grad_ratio`).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np
from numpy.polynomial.legendre import leggauss

from gradflow.activations import ACTIVATIONS, Activation, get
from gradflow.choices import GAIN_INITS, settings
from gradflow.errors import GradflowError

CRITICAL_TOL = 1e-3  # |chi_1 - 1| below this is "critical": over 100 layers sqrt(chi_1)^100 stays within 5% of 1
CRITICAL_BRACKET = (1e-2, 1e3)  # critical_sw2 searches sw2 in this range
CRITICAL_MAX = 1e12  # ... and, while chi_1 < 1 at its top, up to this
Q_RANGE_LOG2 = 60  # q* is searched in [2^-60, 2^60] (~1e-18 .. 1e18) first, then (only where no root is there) ...
Q_LIMIT_LOG2 = (-1022, 1023)  # ... out to 2^-1022 .. 2^1023 (the normal doubles); below is reported as 0, above as inf

_Z_MAX = 10.0  # quadrature truncates z at +-10: the Gaussian mass beyond is 1.5e-23
_N_HALF = 64  # Gauss-Legendre nodes per half-line (1D, q <= 4) and per side of the inner 2D rule: ~1e-14 absolute
_N_SEG = 20  # Gauss-Legendre nodes per piece of the graded rule (q > 4)
_RATIO = 4.0  # graded pieces span [b, 4 b]
_U_FINE = 2.0  # the innermost graded piece spans |u| = sqrt(q) |z| <= this
_R_PLAIN = 2.0  # up to sqrt(q) = 2 the plain rule is exact to ~5e-14 (at q = 100 it is off by 4e-7 for tanh's E[phi'^2])
_INNER_OUTSIDE = (12.5, 20.0)  # inner 2D rule: pieces beyond distance 5 from the sign change of u2
_Q_ZERO, _Q_INF = 1e-200, 1e200  # where moments at q* = 0 / inf are evaluated (their limits, to ~1e-15)
_ZERO_TOL = 1e-12  # F(q)/q closes a bracket for q* only beyond +-this: quadrature is exact to ~5e-14, see _solve_q_star
_SCAN_Q = 2.0 ** np.arange(-Q_RANGE_LOG2, Q_RANGE_LOG2 + 1)  # (121,) bracketing grid for q*
_SCAN_MORE = {sign: [2.0 ** (sign * np.arange(61, 121)), 2.0 ** (sign * np.arange(124, 241, 4)),  # beyond it, in turn
                     2.0 ** (sign * np.append(np.arange(248, 1017, 8), end))]  # (factor-2 steps are no longer needed
              for sign, end in ((1, Q_LIMIT_LOG2[1]), (-1, -Q_LIMIT_LOG2[0]))}  # out there: V/q is smooth on log q)
_TAIL_MIN = 1e-100  # a squared slope at infinity below this is V/q's 1/q decay at _Q_INF: the limit is 0
_Q_TAIL = 2.0**100  # sqrt(q) > 1e15: phi is in its tail regime at the scale sqrt(q), see Moments.C
_BISECTIONS = 64  # halvings of a factor-2 bracket: q* to full double precision


# --- quadrature ----------------------------------------------------------------------------------
def _unit_rule(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Legendre nodes and weights on [0, 1]."""
    t, w = leggauss(n)
    return (t + 1.0) / 2.0, w / 2.0


def _gauss_pdf(z):
    return np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)


_T, _WT = _unit_rule(_N_HALF)
_TG, _WG = _unit_rule(_N_SEG)


def _level(r: float) -> int:
    """K, the number of geometric cuts below Z that sqrt(q) = r needs (0: the plain rule, for q <= 4).

    The innermost piece [0, Z 4^-K] then spans |u| <= 2: on it phi is smooth on its own scale.
    """
    if not _R_PLAIN < r < math.inf:
        return 0
    return math.ceil(math.log(_Z_MAX * r / _U_FINE) / math.log(_RATIO))


def _levels(r: np.ndarray) -> np.ndarray:
    """`_level` for each element of an array."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        k = np.ceil(np.log(_Z_MAX * r / _U_FINE) / math.log(_RATIO))
    return np.where((r > _R_PLAIN) & np.isfinite(k), k, 0.0).astype(int)


def _pieces(a: np.ndarray, b: np.ndarray, t: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights of the rule (t, w) on [0, 1] mapped onto each piece [a, b] (last axis), flattened."""
    length = (b - a)[..., None]
    nodes, weights = a[..., None] + length * t, length * w
    return nodes.reshape(*a.shape[:-1], -1), weights.reshape(*a.shape[:-1], -1)


@functools.lru_cache(maxsize=None)
def _rule(K: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes z and weights w on [-Z, Z] with E_z[f] ~ f(z) @ w, split at 0, graded K times towards 0."""
    if K == 0:
        half, wt = _T * _Z_MAX, _WT * _Z_MAX
    else:
        b = np.concatenate([[0.0], _Z_MAX * _RATIO ** -np.arange(K, -1, -1.0)])  # 0, Z 4^-K, ..., Z / 4, Z
        half, wt = _pieces(b[:-1], b[1:], _TG, _WG)
    w = wt * _gauss_pdf(half)
    return np.concatenate([-half[::-1], half]), np.concatenate([w[::-1], w])


def _expect(g: Callable[[np.ndarray, np.ndarray], np.ndarray], q) -> np.ndarray:
    """E_z[g(sqrt(q) z, sqrt(q))] for each q in an array (any shape); g sees the nodes u and sqrt(q)."""
    q = np.asarray(q, dtype=float)
    r = np.sqrt(q)
    if q.size == 1:
        z, w = _rule(_level(float(r.flat[0])))
        return g(r[..., None] * z, r[..., None]) @ w
    levels = _levels(r)
    out = np.empty(q.shape)
    for K in np.unique(levels):  # one rule per number of cuts
        sel = levels == K
        z, w = _rule(int(K))
        rs = r[sel][:, None]
        out[sel] = g(rs * z, rs) @ w
    return out


def expect(f: Callable[[np.ndarray], np.ndarray], q) -> np.ndarray:
    """E_z[f(sqrt(q) z)] for each q in an array (any shape)."""
    return _expect(lambda u, r: f(u), q)


def _inner_breaks(K: int) -> np.ndarray:
    """Distances from the sign change of u2 at which the inner 2D rule is cut: graded K times below 5."""
    graded = 5.0 * _RATIO ** -np.arange(K, -1, -1.0)
    return np.concatenate([[0.0], graded, _INNER_OUTSIDE])


def _expect2(f: Callable[[np.ndarray], np.ndarray], q: float, c: float) -> float:
    """E[f(u1) f(u2)] with u1 = sqrt(q) z1, u2 = sqrt(q) (c z1 + s z2), s = sqrt(1 - c^2).

    Outer rule in z1 split at 0 (where u1 changes sign), graded towards 0 as in `expect`, down to
    the scale min(1 / sqrt(q), s): the inner integral, as a function of z1, is f smoothed over a
    width sqrt(q) s of u2, so a kink of f at 0 becomes a bend of width ~s in z1 (c near 1). Inner
    rule in z2 split at k = -c z1 / s (where u2 changes sign), so a kink at 0 in f never falls inside
    a piece; where sqrt(q) s > 2 each side is graded towards k as in `expect` on the scale
    1 / (sqrt(q) s) of u2 up to distance 5 from it, then cut at 12.5 and 20; otherwise each side is
    one 64-node piece.
    """
    r, s = math.sqrt(q), math.sqrt(max(1.0 - c * c, 0.0))
    if s == 0.0:  # u2 = c u1 exactly
        z1, w1 = _rule(_level(r))
        u1 = r * z1
        return float((f(u1) * f(c * u1)) @ w1)
    z1, w1 = _rule(_level(max(r, 1.0 / s)))
    u1 = r * z1  # (n1,)
    exact = -c * z1 / s
    kink = np.clip(exact, -_Z_MAX, _Z_MAX)[:, None]  # (n1, 1)
    shift = kink - exact[:, None]  # 0 unless clipped: u2 = r s (z2 - exact), not r (c z1 + s z2), keeps digits at large q
    up, down = _Z_MAX - kink, kink + _Z_MAX  # (n1, 1): room on either side of the sign change
    K2 = _level(r * s)
    if K2 == 0:  # one piece a side
        offset = np.concatenate([up * _T, -down * _T], axis=1)  # (n1, n2): z2 - kink
        w2 = np.concatenate([up * _WT, down * _WT], axis=1)
    else:
        d = np.broadcast_to(_inner_breaks(K2), (z1.size, K2 + 4))
        up_t, up_w = _pieces(np.minimum(d[:, :-1], up), np.minimum(d[:, 1:], up), _TG, _WG)
        dn_t, dn_w = _pieces(np.minimum(d[:, :-1], down), np.minimum(d[:, 1:], down), _TG, _WG)
        offset, w2 = np.concatenate([up_t, -dn_t], axis=1), np.concatenate([up_w, dn_w], axis=1)
    w2 = w2 * _gauss_pdf(kink + offset)
    u2 = (r * s) * (offset + shift)
    return float((f(u1) * (f(u2) * w2).sum(axis=1)) @ w1)


# --- Gaussian moments of one activation, as functions of the pre-activation variance q ----------
class Moments:
    """V(q) = E[phi(u)^2], D(q) = E[phi'(u)^2], D4(q) = E[phi'(u)^4], S(q) = E[u phi(u) phi'(u)] / q
    with u ~ N(0, q);
    C(q, c) = E[phi(u1) phi(u2)], Cd(q, c) = E[phi'(u1) phi'(u2)] for unit-variance correlation c.

    sw2 S(q) is the slope of the length map: d/dq E[phi(sqrt(q) z)^2] = E[z phi phi'] / sqrt(q)
    by the chain rule. Gaussian integration by parts turns it into Schoenholz's eq. 6 form
    E[phi'^2] + E[phi phi''], but this form needs no phi'' (and is exact for kinked phi).
    """

    def __init__(self, act: Activation):
        self.phi, self.dphi = act.phi, act.dphi

    def V(self, q):
        return expect(lambda u: self.phi(u) ** 2, q)

    def V_over_q(self, q):  # E[(phi(u) / sqrt(q))^2]: no overflow of phi^2 at q ~ 1e300, no underflow at 1e-300
        return _expect(lambda u, r: (self.phi(u) / r) ** 2, q)

    @functools.cached_property
    def scan(self) -> np.ndarray:
        """V_over_q on the q* bracketing grid, once per activation: it does not depend on sw2 or sb2."""
        return self.V_over_q(_SCAN_Q)

    @functools.cached_property
    def tail(self) -> float:
        """lim V(q) / q as q -> inf: (phi'(inf)^2 + phi'(-inf)^2) / 2, 0 for a bounded phi. At q = _Q_INF a
        bounded phi has V/q ~ 1/q = 1e-200, not 0: taken as the limit, tanh at sw2 = 1e200 (q* = 1e200,
        finite) read sw2 tail = 1 and gave q* = inf. A real slope at infinity is no smaller than _TAIL_MIN."""
        t = float(self.V_over_q(_Q_INF))
        return t if t > _TAIL_MIN else 0.0

    def D(self, q):
        return expect(lambda u: self.dphi(u) ** 2, q)

    def D4(self, q):
        return expect(lambda u: self.dphi(u) ** 4, q)

    def S(self, q):  # E[z phi(u) phi'(u)] / sqrt(q), z = u / sqrt(q)
        return _expect(lambda u, r: (u / r) * (self.phi(u) / r) * self.dphi(u), q)

    def at_zero(self) -> float:
        """lim D(q) = lim S(q) as q -> 0: the mean of phi's squared one-sided slopes at 0."""
        e = np.array([1e-300, -1e-300])
        return float(np.mean(self.dphi(e) ** 2))

    # Once sqrt(q) s > 1e15 (q > _Q_TAIL / s^2, s = sqrt(1 - c^2)), phi looks like its tails, a step
    # (tanh) or a ramp (relu-like), on the scales of both u1 and u2 given u1, so C(q, c) / V(q) and
    # Cd(q, c) / D(q)^2 no longer depend on q (to ~5e-14: softsign converges slowest, like
    # log(sqrt(q) s) / (sqrt(q) s)); the 2D rules, whose size grows like log(q)^2, stop there.
    def C(self, q: float, c: float) -> float:
        ref = _Q_TAIL / (1.0 - c * c) if c * c < 1.0 else math.inf
        if q > ref:
            return _expect2(self.phi, ref, c) * float(self.V(q) / self.V(ref))
        return _expect2(self.phi, q, c)

    def Cd(self, q: float, c: float) -> float:
        ref = _Q_TAIL / (1.0 - c * c) if c * c < 1.0 else math.inf
        if q > ref:
            return _expect2(self.dphi, ref, c) * float(self.D(q) / self.D(ref)) ** 2
        return _expect2(self.dphi, q, c)


class PiecewiseLinear(Moments):
    """Exact moments of phi(u) = a u (u > 0), b u (u < 0): linear (a = b = 1), relu (b = 0), leaky_relu.

    With theta = arccos(c): E[u1+ u2+] = q k1(c), k1(c) = (sqrt(1 - c^2) + (pi - theta) c) / (2 pi)
    (the degree-1 arc-cosine kernel, Cho & Saul 2009), E[u1+ u2-] = q k1(-c);
    P(u1 > 0, u2 > 0) = (pi - theta) / (2 pi), P(u1 > 0, u2 < 0) = theta / (2 pi).
    """

    def __init__(self, act: Activation):
        super().__init__(act)
        self.a, self.b = float(act.dphi(np.array(1.0))), float(act.dphi(np.array(-1.0)))
        self.m2 = (self.a**2 + self.b**2) / 2.0  # E[phi'^2] = E[phi^2] / q = S, at every q

    def V(self, q):
        return self.m2 * np.asarray(q, dtype=float)

    def V_over_q(self, q):
        return np.full(np.shape(q), self.m2)

    def D(self, q):
        return np.full(np.shape(q), self.m2)

    def D4(self, q):
        return np.full(np.shape(q), (self.a**4 + self.b**4) / 2.0)

    def S(self, q):
        return np.full(np.shape(q), self.m2)

    def C(self, q: float, c: float) -> float:
        c = min(max(c, -1.0), 1.0)
        k1 = lambda x: (math.sqrt(max(1.0 - x * x, 0.0)) + (math.pi - math.acos(x)) * x) / (2.0 * math.pi)
        return q * ((self.a**2 + self.b**2) * k1(c) - 2.0 * self.a * self.b * k1(-c))

    def Cd(self, q: float, c: float) -> float:
        theta = math.acos(min(max(c, -1.0), 1.0))
        return ((self.a**2 + self.b**2) * (math.pi - theta) + 2.0 * self.a * self.b * theta) / (2.0 * math.pi)


@functools.lru_cache(maxsize=None)
def moments(activation: str) -> Moments:
    """The Gaussian moments of a registry activation (closed forms for piecewise-linear ones)."""
    act = get(activation)
    return PiecewiseLinear(act) if act.piecewise_linear else Moments(act)


# --- fixed point of the length map ---------------------------------------------------------------
def _solve_q_star(V_over_q: Callable[[np.ndarray], np.ndarray], sw2, sb2, scan: np.ndarray | None = None,
                  tail: float | None = None) -> np.ndarray:
    """q* for arrays of (sw2, sb2): the fixed point that iterating q <- sw2 V(q) + sb2 from q = 1 reaches.

    V is increasing in q for every registry activation (tested), so the iterates move monotonically
    from 1 towards the nearest root of F(q) = sw2 V(q) + sb2 - q in the direction of sign F(1).
    We bracket that root on the grid 2^k and bisect, rather than iterate: near criticality the
    iteration would need thousands of steps. The grid is 2^-60 .. 2^60 (`scan`: V_over_q there, if
    precomputed). Given `tail`, the limit of V(q)/q as q -> inf, the search goes on beyond the grid
    where no root is on it: upwards to 2^1023 where sw2 tail < 1 (bounded phi, say tanh at sw2 = 1e20
    with q* ~ 1e20; else F/q keeps the sign of sw2 tail - 1 + sb2/q > 0 and q* = inf), downwards to
    2^-1022 where sb2 > 0 (q* ~ sb2 / (1 - sw2 phi'(0)^2) for a tiny sb2). No root found: inf
    upwards, 0 downwards. Signs are taken of F(q) / q = (sw2 V(q)/q - 1) + sb2/q, which does not
    lose sb2 to rounding when q is large (relu at sw2 = 2, sb2 = 0.05 has no fixed point, and must
    not find one at 1e15), and a bracket is only closed by an F/q beyond _ZERO_TOL (quadrature
    rounding): elu at sw2 = 2, sb2 = 0 has F/q ~ 1/q > 0, below that rounding from q ~ 1e13 on,
    and q* = inf.
    """
    sw2, sb2 = np.broadcast_arrays(np.asarray(sw2, dtype=float), np.asarray(sb2, dtype=float))
    shape, sw2, sb2 = sw2.shape, sw2.ravel(), sb2.ravel()
    vq = V_over_q(_SCAN_Q) if scan is None else scan
    with np.errstate(over="ignore"):  # sw2 V/q or sb2 / q -> +inf (sw2 or sb2 ~ 1e300): positive, as it should be
        R = (sw2[:, None] * vq[None, :] - 1.0) + sb2[:, None] / _SCAN_Q  # (n, 121) = F(q) / q
    one = Q_RANGE_LOG2  # index of q = 1
    r1 = R[:, one]
    q = np.where(r1 == 0.0, 1.0, np.nan)
    lo, hi = np.full_like(sw2, np.nan), np.full_like(sw2, np.nan)

    def search_further(rest: np.ndarray, sign: int) -> None:
        """Bracket the roots of rows `rest` beyond the grid (upwards for sign 1, downwards for -1)."""
        prev = _SCAN_Q[-1] if sign > 0 else _SCAN_Q[0]
        for grid in _SCAN_MORE[sign]:
            if not rest.any():
                return
            with np.errstate(over="ignore"):
                Rx = (sw2[rest, None] * V_over_q(grid)[None, :] - 1.0) + sb2[rest, None] / grid
            hit = Rx < -_ZERO_TOL if sign > 0 else Rx > _ZERO_TOL
            found = hit.any(axis=1)
            rows, i = np.flatnonzero(rest)[found], np.argmax(hit[found], axis=1)
            at, before = grid[i], np.append(prev, grid[:-1])[i]
            lo[rows], hi[rows] = (before, at) if sign > 0 else (at, before)
            rest[rows], prev = False, grid[-1]

    # growing: the first grid point above 1 where F < 0 closes the bracket
    ahead = R[:, one:] < -_ZERO_TOL
    k = one + np.argmax(ahead, axis=1)
    up, found = r1 > 0.0, ahead.any(axis=1)
    sel = up & found
    lo[sel], hi[sel] = _SCAN_Q[k[sel] - 1], _SCAN_Q[k[sel]]
    found |= _stepped_over(V_over_q, sw2, sb2, R, up, k, found, 1, lo, hi)
    rest = up & ~found
    if tail is not None:
        search_further(rest & (sw2 * tail - 1.0 < -_ZERO_TOL), 1)
    q[rest & ~np.isfinite(lo)] = np.inf

    # shrinking: the first grid point below 1 where F > 0. With sb2 = 0, q = 0 is itself a fixed
    # point and F(q)/q = sw2 V(q)/q - 1 tends to sw2 phi'(0)^2 - 1; where that limit is 0 (tanh at
    # sw2 = 1) F/q is quadrature rounding (~1e-15, either sign) at tiny q, which is no root: there
    # only F/q above _ZERO_TOL brackets one, and otherwise the signal decays to q* = 0 exactly.
    # (With sb2 > 0, F/q > sb2/q - 1 - O(q) does exceed it, as close to the root as rounding allows.)
    below = R[:, : one + 1][:, ::-1]
    behind = below > _ZERO_TOL
    k = one - np.argmax(behind, axis=1)
    down, found = r1 < 0.0, behind.any(axis=1)
    sel = down & found
    lo[sel], hi[sel] = _SCAN_Q[k[sel]], _SCAN_Q[k[sel] + 1]
    found |= _stepped_over(V_over_q, sw2, sb2, R, down, k, found, -1, lo, hi)
    rest = down & ~found
    if tail is not None:
        search_further(rest & (sb2 > 0.0), -1)
    q[rest & ~np.isfinite(lo)] = 0.0

    # bisection keeping F(lo) >= 0 >= F(hi); 64 halvings close even a factor-2^8 bracket to ~1e-17
    todo = np.isfinite(lo)
    if todo.any():
        a, b, w, c = lo[todo], hi[todo], sw2[todo], sb2[todo]
        for _ in range(_BISECTIONS):
            mid = 0.5 * (a + b)
            positive = (w * V_over_q(mid) - 1.0) + c / mid > 0.0
            a, b = np.where(positive, mid, a), np.where(positive, b, mid)
        q[todo] = 0.5 * (a + b)
    return q.reshape(shape)


_GOLDEN = 60  # golden-section steps over a window of two factor-2 cells: to ~1e-13 of its log width


def _stepped_over(V_over_q: Callable[[np.ndarray], np.ndarray], sw2: np.ndarray, sb2: np.ndarray, R: np.ndarray,
                  rows: np.ndarray, k: np.ndarray, found: np.ndarray, sign: int, lo: np.ndarray,
                  hi: np.ndarray) -> np.ndarray:
    """Roots of F/q that the factor-2 grid steps over on the way from q = 1 to its bracket (column k where
    `found`, else the grid's end), in direction `sign` (1 up, -1 down), for the rows `rows`: where the
    length map has two more fixed points between neighbouring grid points, the nearer stable one the map
    settles at from q = 1 and an unstable one, F/q keeps its sign at every grid point and the bracket
    skipped both (silu at sw2 = 2.27, sb2 = 0.2: q* = 1.2035, chi_1 = 0.891; the grid's bracket gave q* =
    inf and chi_1 = 1.135; gelu at sw2 = 1.9956, sb2 = 0.16: 1.704, not 49.06). Such a dip of F/q is a
    local minimum of sign F/q along the path, so each discrete local minimum's two cells are searched
    (golden section in log q) for a value beyond -_ZERO_TOL; the nearest one found becomes the row's
    bracket, written into lo and hi (F(lo) >= 0 >= F(hi)). Returns the rows so bracketed."""
    one = Q_RANGE_LOG2
    path = np.arange(one, R.shape[1]) if sign > 0 else np.arange(one, -1, -1)  # columns from q = 1 onwards
    t = sign * R[:, path]  # > 0 along the path until the bracket
    end = np.where(found, sign * (k - one), path.size)  # the bracket's position on the path (or past its end)
    pos = np.arange(path.size)
    prev = np.concatenate([t[:, :1], t[:, :-1]], axis=1)  # (the path's first point has no predecessor)
    nxt = np.concatenate([t[:, 1:], np.full((t.shape[0], 1), -np.inf)], axis=1)
    cand = rows[:, None] & (pos[None, :] < end[:, None] - 1) & (t <= nxt) & (t <= prev) & (t > 0.0)
    r, p = np.nonzero(cand)
    out = np.zeros(R.shape[0], dtype=bool)
    if r.size == 0:
        return out
    qa, qb = _SCAN_Q[path[np.maximum(p - 1, 0)]], _SCAN_Q[path[p + 1]]  # qa: on the side of q = 1
    w, c = sw2[r], sb2[r]
    f = lambda x: sign * ((w * V_over_q(np.exp(x)) - 1.0) + c / np.exp(x))
    a, b = np.log(qa), np.log(qb)
    g = (math.sqrt(5.0) - 1.0) / 2.0
    x1, x2 = b - g * (b - a), a + g * (b - a)
    f1, f2 = f(x1), f(x2)
    best_x, best_f = np.where(f1 < f2, x1, x2), np.minimum(f1, f2)
    for _ in range(_GOLDEN):
        left = f1 < f2  # the minimum is in [a, x2]
        a, b = np.where(left, a, x1), np.where(left, x2, b)
        x1, x2 = np.where(left, b - g * (b - a), x2), np.where(left, x1, a + g * (b - a))
        fn = f(np.where(left, x1, x2))
        f1, f2 = np.where(left, fn, f2), np.where(left, f1, fn)
        new = np.where(left, x1, x2)
        better = fn < best_f
        best_x, best_f = np.where(better, new, best_x), np.where(better, fn, best_f)
        if (best_f < -_ZERO_TOL).all():
            break
    hit = best_f < -_ZERO_TOL
    for i in np.flatnonzero(hit)[np.argsort(p[hit], kind="stable")[::-1]]:  # the nearest to q = 1 written last
        qm = math.exp(best_x[i])
        lo[r[i]], hi[r[i]] = (qa[i], qm) if sign > 0 else (qm, qa[i])
        out[r[i]] = True
    return out


MAX_VARIANCE = _Q_INF  # sw2 and sb2 at most: the quadrature takes q = 1e200 for infinity, and beyond it
# q* ~ sw2 outgrew it (tanh at sw2 = 1e308 read q* = inf and chi_1 54 decades high) and the slope of the
# length map underflowed (xi_q = 0 from 1e250 on; at 1e200 it is 0.0043, as it should be)


def variance_problem(v) -> str | None:
    """What is wrong with `v` as a variance the theory computes at, said after its name; None where nothing is."""
    if not (isinstance(v, (int, float, np.floating, np.integer)) and math.isfinite(v) and v >= 0):
        return "must be a finite number >= 0 (a variance)"
    if v > MAX_VARIANCE:
        return f"is beyond what the theory computes: at most {MAX_VARIANCE:g} (its quadrature takes q = 1e200 for infinity)"
    return None


def in_range(sw2: float, sb2: float) -> bool:
    """Whether the theory computes this point: finite variances >= 0, at most MAX_VARIANCE."""
    return variance_problem(sw2) is None and variance_problem(sb2) is None


def _check_params(sw2: float, sb2: float) -> None:
    for key, v in (("sw2", sw2), ("sb2", sb2)):
        if problem := variance_problem(v):
            raise GradflowError(f"{key}={v!r} {problem}")


def _slopes(m: Moments, q: float) -> tuple[float, float]:
    """(D, S) at a fixed point q, 0 and inf meaning their limits.

    At q -> 0 both tend to (phi'(0+)^2 + phi'(0-)^2) / 2 exactly (phi is linear on the scale the
    signal lives on); quadrature at a tiny q would be off by its ~1e-15 rounding, which turns an
    exact slope 1 (xi_q = inf) into xi_q ~ 1e15. At q -> inf the quadrature at 1e200 is the limit.
    """
    if q == 0.0:
        at_zero = float(m.D(_Q_ZERO)) if isinstance(m, PiecewiseLinear) else m.at_zero()
        return at_zero, at_zero
    at = _Q_INF if q == math.inf else q
    return float(m.D(at)), float(m.S(at))


def q_star(activation: str, sw2: float, sb2: float) -> float:
    """The fixed point of the length map reached from q = 1 (0: the signal decays, inf: it grows without bound)."""
    _check_params(sw2, sb2)
    m = moments(activation)
    return float(_solve_q_star(m.V_over_q, sw2, sb2, scan=m.scan, tail=m.tail))


def every_q_fixed(activation: str, sw2: float, sb2: float) -> bool:
    """Whether every length is a fixed point of the length map: a scale-free activation (relu, leaky relu,
    linear: V(q) = k q) with sb2 = 0 at sw2 k = 1, its edge of chaos. q* is then the length the net starts
    from (q_star reports 1, where it starts), and chi_1 = 1 at every q."""
    m = moments(activation)
    return isinstance(m, PiecewiseLinear) and sb2 == 0.0 and abs(sw2 * float(m.V_over_q(1.0)) - 1.0) < 1e-9


_FINE_Q = 2.0 ** (np.arange(-16 * Q_RANGE_LOG2, 16 * Q_RANGE_LOG2 + 1) / 16)  # (1921,) 16 points per factor 2


@dataclass(frozen=True)
class Basin:
    """The inputs' variances q_0 from which the length map settles at q* (the fixed point it reaches from
    q = 1): those between `low` and `high`, the unstable fixed points that bound them (None: there is none,
    and every q_0 on that side goes to q* too), and where the map goes from beyond each: `below` (a lower
    stable fixed point, or 0) and `above` (a higher one, or inf)."""

    low: float | None = None
    below: float = 0.0
    high: float | None = None
    above: float = math.inf


def basin(activation: str, sw2: float, sb2: float) -> Basin:
    """q*'s basin of attraction (see Basin): where another fixed point lies in [2^-60, 2^60], the map's
    q* depends on the inputs' scale. silu at sw2 = 2.27, sb2 = 0.2 settles at q* = 1.204 from q_0 = 1
    but grows without bound from q_0 above 1.603; silu at sw2 = 3, sb2 = 0 grows from q_0 = 1 but decays
    to 0 from below 0.682; gelu at sw2 = 1.9956, sb2 = 0.16 has a second stable point at 49. The roots
    are the sign changes of F/q (beyond +-_ZERO_TOL, as in _solve_q_star) on a grid of 16 points per
    factor 2, each closed by brentq in log q: a pair of roots closer together than a factor 2^(1/16) is
    not seen (the map's q* itself is found where _solve_q_star finds it)."""
    from scipy.optimize import brentq

    _check_params(sw2, sb2)
    m = moments(activation)
    star = q_star(activation, sw2, sb2)

    def f(x: float) -> float:
        q = math.exp(x)
        return float((sw2 * m.V_over_q(np.asarray([q]))[0] - 1.0) + sb2 / q)

    with np.errstate(over="ignore"):
        r = (sw2 * m.V_over_q(_FINE_Q) - 1.0) + sb2 / _FINE_Q
    at = np.flatnonzero(np.abs(r) > _ZERO_TOL)  # (rounding's zeros: no sign)
    sign = np.sign(r[at])
    flips = np.flatnonzero(sign[1:] != sign[:-1])
    roots = [(brentq(f, math.log(_FINE_Q[at[i]]), math.log(_FINE_Q[at[i + 1]]), xtol=1e-14, rtol=1e-13),
              sign[i] > 0) for i in flips]  # (log q, stable: F falls through 0)
    roots = [(math.exp(x), stable) for x, stable in roots]
    near = 1e-6  # (q* itself, found by bisection: the same root to ~1e-12)
    ups = [(q, s) for q, s in roots if q > max(1.0, star) * (1 + near)]
    downs = [(q, s) for q, s in roots[::-1] if q < min(1.0, star) * (1 - near)]

    def beyond(end: float, limit: float) -> float:  # a stable root past the grid's end, where F/q turns there
        return math.exp(brentq(f, math.log(end), math.log(limit), xtol=1e-14, rtol=1e-13)) if f(math.log(limit)) \
            * f(math.log(end)) < 0 and abs(f(math.log(limit))) > _ZERO_TOL else (math.inf if limit > 1 else 0.0)

    out = {}
    if ups and not ups[0][1]:  # the first root above is unstable: beyond it, the next stable one (or inf)
        out |= {"high": ups[0][0], "above": next((q for q, s in ups[1:] if s), None)
                or beyond(_FINE_Q[-1], 2.0 ** Q_LIMIT_LOG2[1])}
    if downs and not downs[0][1]:
        out |= {"low": downs[0][0], "below": next((q for q, s in downs[1:] if s), None)
                or beyond(_FINE_Q[0], 2.0 ** Q_LIMIT_LOG2[0])}
    return Basin(**out)


def chi1(activation: str, sw2: float, sb2: float) -> float:
    """sw2 E[phi'(sqrt(q*) z)^2]: the per-layer factor of the squared back-propagated gradient norm."""
    m = moments(activation)
    return float(sw2 * _slopes(m, q_star(activation, sw2, sb2))[0])


# --- the full mean-field point ---------------------------------------------------------------------
Q_STAR_ZERO = 1e-8  # pre-activation variance this small is a forward signal that has died out
# activations whose derivative does not depend on the pre-activation's scale: chi1 is the same at every q
SCALE_FREE = ("linear", "relu", "leaky_relu")
# at q* = 0 the length map's own factor is chi1 (q_(l+1) ~ chi1 q_l for an odd activation with phi'(0) = 1):
# at or below this the length has halved per layer and sits at q* within a few layers (our threshold)
FAST_TO_ZERO = 0.5


def signal_law_applies(activation: str, q_star: float, chi1: float) -> bool:
    """Whether the back-propagated signal scales as sqrt(chi1)^(L - l), so that sqrt(chi1)^L is its first/last
    ratio. chi1 is the per-layer factor of the signal's square where the forward length sits at its fixed
    point q*. With q* = 0 or inf (relu or tanh without bias, relu with sw2 > 2) the length never gets
    there: it decays or grows layer by layer. For a scale-free activation (relu, leaky relu, linear) chi1
    is the same at every length, so the law still holds; for any other it does only where the length
    reaches q* = 0 within a few layers, its factor per layer (chi1 itself there) at most FAST_TO_ZERO: tanh
    under Glorot's standard init (sw2 = 1/3) does; at Xavier's sw2 = 1, sb2 = 0 (chi1 = 1 at q* = 0) the
    length falls only as ~1/l and each layer's own chi1 stays below 1, so the measured signal falls where
    the law would keep it level. A q* below Q_STAR_ZERO counts as 0: an integrator's residue (7.6e-16 for
    tanh at sw2 = 1, sb2 = 0) is no fixed point the forward signal could sit at."""
    if Q_STAR_ZERO < q_star < math.inf:
        return True
    return activation in SCALE_FREE or (q_star <= Q_STAR_ZERO and chi1 <= FAST_TO_ZERO)


def q_zero_limit(mf) -> bool:
    """Whether the mean-field point `mf`'s chi1 is only the limit of a forward length that decays to q* = 0 too
    slowly for the signal to follow it (tanh under Xavier, sw2 = 1, sb2 = 0: chi1 = 1, "critical", where a
    depth-20 net's fit reads ~0.9), not a law the signal follows. Not a q* of infinity (elu at sw2 = 4, whose
    chi1 ~2 is no q* = 0 limit either; signal_law_applies covers both)."""
    return math.isfinite(mf.chi1) and mf.q_star <= Q_STAR_ZERO and not signal_law_applies(mf.activation, mf.q_star,
                                                                                            mf.chi1)


def endless_length_note(mf) -> str | None:
    """What a mean-field point's ξ_c = ∞ means where its forward length has no finite fixed point (q* = 0 or
    ∞): the correlation map is scale-free there, so it says nothing of trainability; or that σ_w² = 0 passes
    nothing on (its ξ_c is 0, not ∞). None otherwise."""
    if mf.sw2 == 0.0:
        return ("σ_w² = 0: no layer passes its input on, so every input gives the same output after one layer "
                "(ξ_q = ξ_c = 0) and no gradient reaches the layers below the last.")
    if mf.q_star not in (0.0, math.inf):
        return None
    what, q = ("decays to 0", "0") if mf.q_star == 0.0 else ("grows without bound", "∞")
    return (f"q* = {q}: the signal variance {what} with depth. χ₁ is the per-layer gradient factor in that limit; "
            "the correlation map becomes scale-free, so ξ_c = ∞ says nothing about trainability here.")


def _depth_scale(slope: float) -> float:
    """-1 / log(slope): layers over which a deviation from a fixed point shrinks by e (inf if slope >= 1)."""
    if slope >= 1.0:
        return math.inf
    if slope <= 0.0:
        return 0.0
    return -1.0 / math.log(slope)


def _c_star(m: Moments, q: float, sw2: float, sb2: float) -> float:
    """The fixed point c* < 1 of the correlation map in the chaotic phase (chi_1 > 1).

    M(c) = (sw2 C(q*, c) + sb2) / q* is a power series in c with non-negative coefficients (Mehler),
    so g(c) = M(c) - c is convex on [0, 1], g(1) = 0, g'(1) = chi_1 - 1 > 0 and g(0) >= 0: one root
    in [0, 1). Bracket it from below 1, then Brent.
    """
    g = lambda c: (sw2 * m.C(q, c) + sb2) / q - c
    if g(0.0) <= 0.0:  # e.g. odd phi with sb2 = 0: M(0) = 0
        return 0.0
    for k in range(1, 11):
        top = 1.0 - 10.0**-k
        if g(top) < 0.0:
            from scipy.optimize import brentq  # here, not at import: every CLI command loads this module

            return brentq(g, 0.0, top, xtol=1e-12)
    return 1.0  # chi_1 so close to 1 that c* is within 1e-10 of 1


@dataclass(frozen=True)
class MeanField:
    """The mean-field description of one (activation, sw2, sb2) point. See the module docstring."""

    activation: str
    sw2: float
    sb2: float
    q_star: float  # fixed-point pre-activation variance (0: decays, inf: grows without bound)
    chi1: float  # per-layer factor of the squared back-propagated gradient norm
    c_star: float  # fixed-point correlation between two inputs' pre-activations
    chi_c: float  # slope of the correlation map at c*
    xi_q: float  # depth scale of the length map (nan when q* = inf: nothing to converge to)
    xi_c: float  # depth scale of the correlation map (inf at the edge of chaos)
    phase: str  # ordered (chi_1 < 1 - tol) | critical (|chi_1 - 1| < CRITICAL_TOL) | chaotic

    @property
    def six_xi_c(self) -> float:
        """Schoenholz et al.'s trainable depth, 6 xi_c."""
        return 6.0 * self.xi_c

    def grad_ratio(self, depth: float) -> float:
        """Predicted back-propagated signal norm at the first layer over that at the last, `depth` layers apart.

        The signal at layer l (0 = input) is sqrt(chi_1)^(L - l) times the one at layer L, so first/last
        = chi_1^(depth / 2): > 1 when gradients explode towards the input, < 1 when they vanish. With
        gradflow's depth convention the first and the last probe points (input layer, output head)
        are `model.depth` layers apart.
        """
        with np.errstate(over="ignore", under="ignore", divide="ignore"):
            return float(np.power(self.chi1, depth / 2.0))

    def log10_grad_ratio(self, depth: float) -> float:
        """log10 of `grad_ratio`, finite where the ratio itself under- or overflows a float (tanh at
        sigma_w^2 = 1.5, sigma_b^2 = 0.05 over a million layers: 10^-13751.3, read as 0)."""
        with np.errstate(divide="ignore"):
            return float(depth / 2.0 * np.log10(self.chi1))


@functools.lru_cache(maxsize=4096)
def point(activation: str, sw2: float, sb2: float) -> MeanField:
    """Everything mean-field theory says about `activation` at weight variance sw2, bias variance sb2.

    Degenerate cases (see the module docstring): q* = inf gives chi_1 as its q -> inf limit and
    xi_q = nan; q* in {0, inf} gives c* = 1, chi_c = 1, xi_c = inf. The phase is decided by chi_1
    alone, so for relu "chaotic" means exploding gradients (c* is 1 in every phase for relu).
    """
    _check_params(sw2, sb2)
    sw2, sb2 = float(sw2), float(sb2)
    m = moments(activation)
    q = float(_solve_q_star(m.V_over_q, sw2, sb2, scan=m.scan, tail=m.tail))
    d, slope = _slopes(m, q)
    g1 = sw2 * d
    xi_q = math.nan if q == math.inf else _depth_scale(sw2 * slope)
    if sw2 == 0.0:  # no layer passes its input on: every input gives the same output after one layer
        c_star, chi_c = 1.0, 0.0
    elif q in (0.0, math.inf):  # scale-free correlation map: slope 1 at c = 1
        c_star, chi_c = 1.0, 1.0
    elif g1 <= 1.0:  # ordered: M convex with M(1) = 1, M'(1) = chi_1 <= 1, so c = 1 is the only fixed point
        c_star, chi_c = 1.0, g1
    else:
        c_star = _c_star(m, q, sw2, sb2)
        chi_c = g1 if c_star == 1.0 else sw2 * m.Cd(q, c_star)
    if abs(g1 - 1.0) < CRITICAL_TOL:
        phase = "critical"
    else:
        phase = "ordered" if g1 < 1.0 else "chaotic"
    return MeanField(activation, sw2, sb2, q, g1, c_star, chi_c, xi_q, _depth_scale(chi_c), phase)


def critical_sw2(activation: str, sb2: float, bracket: tuple[float, float] = CRITICAL_BRACKET) -> float:
    """The weight variance at the edge of chaos (chi_1 = 1) for bias variance sb2.

    Piecewise-linear phi has chi_1 = sw2 E[phi'^2] whatever q* is, so the answer is exact:
    relu 2, linear 1 (even where q* = inf, e.g. sb2 > 0). Others: Brent's method on chi_1(sw2) - 1
    over `bracket`. GradflowError if chi_1 does not cross 1 there, or if it jumps over 1: for
    gelu and silu the fixed point reached from q = 1 leaps from finite to infinite at some sw2
    (a saddle-node of the length map), and chi_1 with it, e.g. from 0.72 to 1.15 (gelu, sb2 = 0.05).
    """
    _check_params(1.0, sb2)
    m = moments(activation)
    if isinstance(m, PiecewiseLinear):
        return 1.0 / m.m2
    slopes = float(m.dphi(np.float64(1e-300))) ** 2 + float(m.dphi(np.float64(-1e-300))) ** 2
    if sb2 == 0 and float(m.phi(0.0)) == 0 and slopes > 0:
        # q = 0 is a fixed point, where chi_1 = sw2 E[phi'(0 z)^2], the mean of the two one-sided slopes
        # squared (selu's kink: lambda^2 (1 + alpha^2) / 2): if the fixed point there is that one, the edge
        # is exactly 1 over it (tanh: 1, with q* = 0), where Brent stops at a flat residue (1 + 1e-7)
        exact = 2.0 / slopes
        at = point(activation, exact, 0.0)
        if at.q_star == 0 and at.chi1 == 1.0:
            return exact
    f = lambda s: chi1(activation, s, sb2) - 1.0
    lo, hi = bracket
    f_lo, f_hi = f(lo), f(hi)
    while f_lo < 0 and f_hi < 0 and hi < CRITICAL_MAX and bracket == CRITICAL_BRACKET:
        # still ordered at the bracket's top: a large sb2 moves the edge up with it (tanh at sb2 = 1e6:
        # sw2 = 1882, as sw2 = 3/4 sqrt(2 pi (sw2 + sb2)) of large q* says), so look further, a decade at a time
        hi *= 10
        f_hi = f(hi)
    if (f_lo > 0) == (f_hi > 0) and f_lo != 0 and f_hi != 0:
        raise NoEdge(
            f"activation={activation!r}, sb2={sb2}: chi_1 does not cross 1 for sw2 in [{lo:g}, {hi:g}] "
            f"(chi_1 = {f_lo + 1:.4g} .. {f_hi + 1:.4g}), so there is no edge of chaos there")
    from scipy.optimize import brentq

    root = brentq(f, lo, hi, xtol=1e-12)
    while f(under := root * (1 - 1e-3)) > 0 and f_lo < 0:
        # a root chi_1 reaches from above: not where it first rises through 1. gelu at sb2 = 0.25 crosses
        # at 1.96 (finite q*), stays above 1, and touches 1 again at 2 as q* runs off to infinity; the
        # edge is the first crossing, found again below this one
        root = brentq(f, lo, under, xtol=1e-12)
    if abs(f(root)) > 1e-6:  # Brent closed in on a discontinuity, not a root
        below, above = point(activation, root * (1 - 1e-9), sb2), point(activation, root * (1 + 1e-9), sb2)
        raise NoEdge(
            f"activation={activation!r}, sb2={sb2}: no edge of chaos; chi_1 jumps over 1 at sw2 = {root:.6g} "
            f"(from {below.chi1:.4g} to {above.chi1:.4g}) where the fixed point reached from q = 1 jumps "
            f"from q* = {below.q_star:.4g} to {above.q_star:.4g}")
    return root


class NoEdge(GradflowError):
    """critical_sw2's answer where there is no edge of chaos at that sb2 (chi_1 jumps over 1, or does not reach
    it): a finding about the activation, which `gradflow theory --critical` prints as such, not a mistake."""


# --- free probability: the input-output Jacobian's spectrum ------------------------------------------
def length_map(activation: str, sw2: float, sb2: float, q1: float, depth: int) -> np.ndarray:
    """q_1 .. q_depth: the pre-activation variance layer by layer from the first layer's q_1."""
    _check_params(sw2, sb2)
    V = moments(activation).V
    q = [float(q1)]
    for _ in range(depth - 1):
        q.append(sw2 * float(V(q[-1])) + sb2)
    return np.array(q)


def jacobian_moments(activation: str, sw2: float, sb2: float, q1: float, depth: int,
                     orthogonal: bool) -> tuple[float, float]:
    """(m1, sigma^2): mean and variance of s^2, s a singular value of the input-output Jacobian
    d h_L / d x of a deep net with square weights (Pennington, Schoenholz & Ganguli 2017).

    J J^T is the free product over the L layers of W_l^T D_l^2 W_l, D_l = diag phi'(h_l). A layer has
    mean sw2 mu1 and normalized variance mu2 / mu1^2 - 1 - s1, with mu_k(q) = E[phi'(sqrt(q) z)^(2k)]
    (D and D4 of `moments`), s1 = 0 for orthogonal weights, -1 for i.i.d. Gaussian ones
    (Marchenko-Pastur). S-transforms multiply, so m1 = prod_l sw2 mu1(q_l) and
    sigma^2 = m1^2 sum_l (mu2 / mu1^2 - 1 - s1); at the fixed point (q_l = q*) these are the paper's
    m1 = chi_1^L and sigma^2 = L m1^2 (mu2 / mu1^2 - 1 - s1). q_l follows `length_map` from q_1, so
    inputs away from q* are predicted too.
    """
    m, s1 = moments(activation), 0.0 if orthogonal else -1.0
    q = length_map(activation, sw2, sb2, q1, depth)
    mu1, mu2 = m.D(q), m.D4(q)  # (depth,) each
    m1 = float(np.prod(sw2 * mu1))
    return m1, m1**2 * float(np.sum(mu2 / mu1**2 - 1.0 - s1))


# --- vectorized chi_1 over a grid (phase diagrams) -------------------------------------------------
def phase_grid(activation: str, sw2, sb2) -> tuple[np.ndarray, np.ndarray]:
    """(q*, chi_1) over the grid sb2 (rows) x sw2 (columns), each of shape (len(sb2), len(sw2)).

    For drawing: V/q and D are tabulated once on a log grid of q (10 points per octave) and
    interpolated in log-log, so values agree with `point` to ~1e-4 relative, at a fraction of the cost.
    """
    s, b = np.meshgrid(np.asarray(sw2, dtype=float), np.asarray(sb2, dtype=float))
    return phase_points(activation, s, b)


def phase_points(activation: str, sw2: np.ndarray, sb2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(q*, chi_1) at each pair of the equal-shaped arrays sw2, sb2, as `phase_grid` computes them."""
    m = moments(activation)
    log_q = np.log(2.0) * np.linspace(-Q_RANGE_LOG2, Q_RANGE_LOG2, 20 * Q_RANGE_LOG2 + 1)
    grid_q = np.exp(log_q)
    with np.errstate(divide="ignore"):  # D underflows to 0 at huge q for bounded phi: log -> -inf -> D = 0
        log_vq, log_d = np.log(m.V_over_q(grid_q)), np.log(m.D(grid_q))
    V_over_q = lambda q: np.exp(np.interp(np.log(q), log_q, log_vq))
    D = lambda q: np.exp(np.interp(np.log(q), log_q, log_d))  # clamped at the ends: the q -> 0 / inf limits
    s, b = np.asarray(sw2, dtype=float), np.asarray(sb2, dtype=float)
    q = _solve_q_star(V_over_q, s, b)  # no search beyond 2^+-60, where the table ends
    return q, s * D(np.clip(q, grid_q[0], grid_q[-1]))


# --- from run configs ------------------------------------------------------------------------------
def config_value(config: Mapping[str, Any], key: str) -> Any:
    """config[key], with missing, None and NaN (a column another run filled) all meaning None."""
    v = config.get(key)
    if v is None or (isinstance(v, (float, np.floating)) and math.isnan(v)):
        return None
    return v.item() if isinstance(v, np.generic) else v


def _number(config: Mapping[str, Any], key: str, default: float | None = None) -> float | None:
    v = config_value(config, key)
    if v is None:
        return default
    try:
        return float(v)
    except (TypeError, ValueError):
        raise GradflowError(f"{key}={v!r} must be a number") from None


def equivalent_sw2(init: Mapping[str, Any], activation: str) -> tuple[float, float] | None:
    """(sw2, sb2) of the Gaussian init that `init` (flattened keys "init.name", "init.gain", ...) matches
    in the bulk (square, fan_in = fan_out) layers, or None when this module does not know the scheme.

    standard (torch's default, U(+-1/sqrt(fan_in))): variance 1/(3 fan_in), sw2 = 1/3;
    xavier_* (gain g): 2 g^2 / (fan_in + fan_out) = g^2 / fan_in; kaiming_* (either mode): the
    activation's registry gain squared; lecun_normal: 1; orthogonal, delta_orthogonal (gain g): g^2,
    since an orthogonal matrix has the same second moments, hence the same q* and chi_1 in mean
    field; meanfield: init.sw2, init.sb2. Biases start at zero except in meanfield. (torch's default
    bias, U(+-1/sqrt(fan_in)), has variance 1/(3 fan_in) -> 0 in the wide limit; gradflow zeroes it.)
    """
    name = config_value(init, "init.name")
    if name == "meanfield":
        sw2 = _number(init, "init.sw2")
        return None if sw2 is None else (sw2, _number(init, "init.sb2", 0.0))
    if name == "standard":
        return (1.0 / 3.0, 0.0)
    if name in GAIN_INITS:
        return (_squared(_number(init, "init.gain", 1.0)), 0.0)
    if name in ("kaiming_uniform", "kaiming_normal"):  # (the activation's gain: none for one this gradflow lacks)
        return (_squared(get(activation).gain), 0.0) if activation in ACTIVATIONS else None
    if name == "lecun_normal":
        return (1.0, 0.0)
    return None


def _squared(gain: float) -> float:
    """gain^2 to 12 significant digits: Kaiming's sqrt(2) squared is 2.0000000000000004, which put ReLU just
    past the edge of chaos (q* = inf) where `gradflow theory --sw2 2` is at it."""
    return float(f"{gain * gain:.12g}")


def predict(config: Mapping[str, Any]) -> MeanField | None:
    """The mean-field point of a run from its flattened config, or None where the theory does not apply.

    Applies to model.name == "mlp" with norm.name == "none" and model.skip == "none" (a missing key
    counts as its default, "none") and an activation of the registry (a results folder may hold a run of
    one added on another branch: no prediction, not an error that takes `ls` down). None for
    normalization, residual connections and CNNs (their downsampling and padding break the per-layer
    factor): no prediction rather than a wrong number.
    """
    if config_value(config, "model.name") != "mlp":
        return None
    if (config_value(config, "norm.name") or "none") != "none" or (config_value(config, "model.skip") or "none") != "none":
        return None
    activation = config_value(config, "model.activation")
    if activation not in ACTIVATIONS:  # (None; or one a results folder holds that this gradflow lacks)
        return None
    params = equivalent_sw2(config, activation)  # (init.gain=1e200: sw2 = inf, which took `ls` down)
    return None if params is None or not in_range(*params) else point(activation, *params)


SECOND_MOMENTS = {"normal": 1.0, "uniform01": 1.0 / 3.0}  # E[x_i^2] of one input coordinate of data=gaussian


def effective_sw2(config: Mapping[str, Any]) -> float | None:
    """The sigma_w^2 of the Gaussian init a run's init matches (equivalent_sw2), from its flattened config;
    None where the theory does not know the scheme, or the run has no activation (or, for kaiming's, one this
    gradflow lacks: a run of an activation added on another branch)."""
    activation = config_value(config, "model.activation")
    params = None if activation is None else equivalent_sw2(config, str(activation))
    return None if params is None else params[0]


def input_sw2(config: Mapping[str, Any], sw2: float) -> float:
    """fan_in Var(W_0) of the input layer, whose q_0 it sets, from a run's flattened config and the bulk's
    sigma_w^2 (`equivalent_sw2`): an MLP's data.dim -> model.width, a CNN's first conv (data=gaussian's one
    channel -> model.channels, over model.kernel taps). The same as the bulk's where the scheme scales by
    fan_in alone (meanfield, standard, lecun_normal, kaiming's fan_in mode), or where the layer is square.
    Otherwise: xavier_* 2 fan_in / (fan_in + fan_out) times it, kaiming's fan_out mode fan_in / fan_out,
    orthogonal (semi-orthogonal rows or columns of the (out, fan_in) matrix) min(1, fan_in / out), delta-
    orthogonal (its centre tap's) min(1, in / out): gaussian inputs of dim 64 into width 256 under
    xavier_normal give q_0 = 0.4, not 1, and selu's fit, read as at q*, was 1.2% above chi_1; a CNN's first
    conv (1 -> 32 channels, 3 taps) under xavier_normal has 0.06 of the bulk's, and data.scale=qstar started
    it at 0.07 q*."""
    shape = _input_layer(config)
    if shape is None:
        return sw2
    c_in, c_out, taps = shape
    fan_in, fan_out = c_in * taps, c_out * taps
    name = config_value(config, "init.name")
    if name in ("xavier_normal", "xavier_uniform"):
        return sw2 * 2.0 * fan_in / (fan_in + fan_out)
    if name in ("kaiming_normal", "kaiming_uniform") and config_value(config, "init.mode") == "fan_out":
        return sw2 * fan_in / fan_out
    if name == "orthogonal":
        return sw2 * min(1.0, fan_in / c_out)
    if name == "delta_orthogonal":
        return sw2 * min(1.0, c_in / c_out)
    return sw2


def _input_layer(config: Mapping[str, Any]) -> tuple[int, int, int] | None:
    """(inputs, outputs, taps) of the input layer: an MLP's (data.dim, model.width, 1); a CNN's first conv
    on data=gaussian's inputs, one channel of length data.dim, (1, model.channels, model.kernel). None where
    unknown (another model, or another dataset's channels)."""
    model = config_value(config, "model.name")
    if model in ("mlp", None):
        d, n = _number(config, "data.dim"), _number(config, "model.width")
        return None if d is None or n is None or d <= 0 or n <= 0 else (int(d), int(n), 1)
    if model == "cnn" and config_value(config, "data.name") == "gaussian":
        c, k = _number(config, "model.channels"), _number(config, "model.kernel")
        return None if c is None or k is None or c <= 0 or k <= 0 else (1, int(c), int(k))
    return None


def qstar_input(activation: str, sw2: float, sb2: float) -> float | None:
    """q*, where data.scale=qstar can put the first layer's pre-activations there: a finite fixed point
    above sigma_b^2 (the bias's share of q; the inputs give the rest). None where there is none."""
    q = q_star(activation, sw2, sb2)
    return q if math.isfinite(q) and q > sb2 else None


THEORY_KEYS = {"model": ("activation", "name", "width", "channels", "kernel"),
               "init": ("name", "gain", "mode", "sw2", "sb2"),
               "data": ("name", "dim")}  # what the theory reads of a run (width on: the input layer's shape)


def run_keys(cfg) -> dict[str, Any]:
    """The flat keys the theory reads from a composed run config (or validate's plain one)."""
    return settings({f"{group}.{k}": cfg[group].get(k) for group, keys in THEORY_KEYS.items() for k in keys})


def input_scale(cfg) -> float | None:
    """The factor data=gaussian multiplies its inputs by, from a composed run config: data.scale, or for
    data.scale=qstar the one that puts the first layer's pre-activations at the fixed point,
    sw2 E[x^2] s^2 + sb2 = q*. None for datasets without a scale."""
    scale = cfg.data.get("scale")
    if scale is None:
        return None
    if scale != "qstar":
        return float(scale)
    sw2, sb2 = equivalent_sw2(run_keys(cfg), cfg.model.activation)
    q = qstar_input(cfg.model.activation, sw2, sb2)
    if q is None:
        raise GradflowError(f"data.scale=qstar: {cfg.model.activation} at sigma_w^2={sw2:g}, sigma_b^2={sb2:g} "
                            f"has no finite fixed point above sigma_b^2 (q* = "
                            f"{q_star(cfg.model.activation, sw2, sb2):g}); give a number")
    return math.sqrt((q - sb2) / (input_sw2(run_keys(cfg), sw2) * SECOND_MOMENTS[cfg.data.distribution]))


def input_q(config: Mapping[str, Any], sw2: float, sb2: float) -> float | None:
    """The first layer's pre-activation variance q_0 = sw2_0 s^2 E[x_i^2] + sb2 of a run's inputs, from its
    flattened config (sw2_0 = `input_sw2`, the input layer's own, from the bulk's sw2): known for
    data=gaussian only (scale s = data.scale; data.scale=qstar puts q_0 at q*); None elsewhere, or where
    qstar has no finite fixed point."""
    if config_value(config, "data.name") != "gaussian":
        return None
    scale = config_value(config, "data.scale")
    if scale == "qstar":
        return qstar_input(str(config_value(config, "model.activation")), sw2, sb2)
    second = SECOND_MOMENTS.get(config_value(config, "data.distribution") or "normal")
    try:
        s = float(1.0 if scale is None else scale)
        return None if second is None else input_sw2(config, sw2) * s**2 * second + sb2
    except (TypeError, ValueError):
        return None


def signal_factors(config: Mapping[str, Any], layers: int, q0: float | None = None,
                   mf: MeanField | None = None) -> np.ndarray | None:
    """sigma_w^2 E[phi'(h_l)^2] for l = 0 .. layers - 1, h_l of variance q_l along the length map from the
    inputs' q_0 (`input_q`; `q0` where the caller knows it otherwise): the mean-field factor by which
    ||dL/dh||^2 grows from layer l + 1 back to layer l, so a ratio of back-propagated signals between
    layers is the square root of their product, before the map has reached q*. None where q_0 or the theory
    is unknown. `mf`: `predict(config)`, where the caller has it."""
    mf = mf or predict(config)
    if mf is None or not math.isfinite(mf.chi1):
        return None
    q = input_q(config, mf.sw2, mf.sb2) if q0 is None else q0
    if q is None:
        return None
    with np.errstate(all="ignore"):
        return mf.sw2 * np.asarray(moments(mf.activation).D(length_map(mf.activation, mf.sw2, mf.sb2, q, layers)),
                                   dtype=float)


# --- measurements ----------------------------------------------------------------------------------
FIT_TRIM = 3  # layers dropped at each end of a growth-rate fit (input layer and head have other fan-in/out)


def bulk_layers(layer, trim: int = FIT_TRIM) -> np.ndarray:
    """The distinct finite layer indices a growth-rate fit uses: the `trim` lowest and highest dropped."""
    levels = np.unique(np.asarray(layer, dtype=float).ravel())
    levels = levels[np.isfinite(levels)]
    return levels[trim: len(levels) - trim] if trim > 0 else levels


def fit_chi1(layer, signal_norm, trim: int = FIT_TRIM) -> float:
    """The measured per-layer growth factor of the squared back-propagated signal norm towards the input.

    Least-squares slope of log(signal_norm^2) against layer index over the bulk layers (the `trim`
    lowest and highest layer indices dropped: the input layer and output head have other fan-in /
    fan-out), chi_1 = exp(-slope); nan if fewer than 3 distinct bulk layers, or where a bulk layer's value
    is 0 or not finite: a fit over the rest (a backward pass cut short halfway) read as a factor over all.
    """
    layer = np.asarray(layer, dtype=float).ravel()
    norm = np.asarray(signal_norm, dtype=float).ravel()
    if layer.shape != norm.shape:
        raise GradflowError(f"fit_chi1: layer has {layer.size} values but signal_norm has {norm.size}")
    bulk = bulk_layers(layer, trim)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_sq = 2.0 * np.log(norm)
    keep = np.isin(layer, bulk)
    if np.unique(layer[keep]).size < 3 or not np.isfinite(log_sq[keep]).all():
        return math.nan
    slope = np.polyfit(layer[keep], log_sq[keep], 1)[0]
    return float(np.exp(-slope))
