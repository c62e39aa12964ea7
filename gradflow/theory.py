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
~1e-1 for SELU's E[phi'^2] even with 301 nodes, the split rule is exact to ~1e-14. The 2D
expectations split the inner integral where u2 changes sign as well. Piecewise-linear activations
(linear, relu, leaky_relu) use exact closed forms (arc-cosine kernel for the correlation map).

Degenerate fixed points, and what this module reports for them (all documented on `point`):
  q* = inf  the length grows without bound (e.g. relu with sw2 > 2, or sw2 = 2 with sb2 > 0):
            chi_1 is the limit sw2 E[phi'^2] as q -> inf (relu: sw2 / 2, still exact per layer),
            xi_q = nan (no fixed point to converge to);
  q* = 0    the length decays to zero (sb2 = 0 and phi(0) = 0 in the ordered phase): chi_1 is
            the limit as q -> 0 (tanh: sw2);
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

from gradflow.activations import Activation, get
from gradflow.errors import GradflowError

CRITICAL_TOL = 1e-3  # |chi_1 - 1| below this is "critical": over 100 layers sqrt(chi_1)^100 stays within 5% of 1
CRITICAL_BRACKET = (1e-2, 1e3)  # critical_sw2 searches sw2 in this range
Q_RANGE_LOG2 = 60  # q* is searched in [2^-60, 2^60] (~1e-18 .. 1e18); below is reported as 0, above as inf

_Z_MAX = 10.0  # quadrature truncates z at +-10: the Gaussian mass beyond is 1.5e-23
_N_HALF = 64  # Gauss-Legendre nodes per half-line (1D) and per segment (2D): ~1e-14 absolute
_Q_ZERO, _Q_INF = 1e-200, 1e200  # where moments at q* = 0 / inf are evaluated (their limits, to ~1e-15)
_SCAN_Q = 2.0 ** np.arange(-Q_RANGE_LOG2, Q_RANGE_LOG2 + 1)  # (121,) bracketing grid for q*
_BISECTIONS = 64  # halvings of a factor-2 bracket: q* to full double precision


# --- quadrature ----------------------------------------------------------------------------------
def _unit_rule(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Legendre nodes and weights on [0, 1]."""
    t, w = leggauss(n)
    return (t + 1.0) / 2.0, w / 2.0


def _gauss_pdf(z):
    return np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)


_T, _WT = _unit_rule(_N_HALF)
_half = _T * _Z_MAX
_Z = np.concatenate([-_half[::-1], _half])  # (2n,) nodes on [-Z, Z], split at 0
_W = np.concatenate([(_WT * _Z_MAX * _gauss_pdf(_half))[::-1], _WT * _Z_MAX * _gauss_pdf(_half)])  # E_z[f] = f(_Z) @ _W


def _expect(f: Callable[[np.ndarray], np.ndarray], q) -> np.ndarray:
    """E_z[f(sqrt(q) z)] for each q in an array (any shape)."""
    q = np.asarray(q, dtype=float)
    u = np.sqrt(q)[..., None] * _Z  # (*q.shape, 2n)
    return f(u) @ _W


def _expect2(f: Callable[[np.ndarray], np.ndarray], q: float, c: float) -> float:
    """E[f(u1) f(u2)] with u1 = sqrt(q) z1, u2 = sqrt(q) (c z1 + s z2), s = sqrt(1 - c^2).

    Outer rule in z1 split at 0 (where u1 changes sign); inner rule in z2 split at -c z1 / s (where
    u2 changes sign), so a kink at 0 in f never falls inside a segment.
    """
    r, s = math.sqrt(q), math.sqrt(max(1.0 - c * c, 0.0))
    u1 = r * _Z  # (2n,)
    if s == 0.0:  # u2 = c u1 exactly
        return float((f(u1) * f(c * u1)) @ _W)
    kink = np.clip(-c * _Z / s, -_Z_MAX, _Z_MAX)[:, None]  # (2n, 1)
    lo_len, hi_len = kink + _Z_MAX, _Z_MAX - kink
    z2 = np.concatenate([-_Z_MAX + lo_len * _T, kink + hi_len * _T], axis=1)  # (2n, 2n)
    w2 = np.concatenate([lo_len * _WT, hi_len * _WT], axis=1) * _gauss_pdf(z2)
    u2 = r * (c * _Z[:, None] + s * z2)
    return float((f(u1) * (f(u2) * w2).sum(axis=1)) @ _W)


# --- Gaussian moments of one activation, as functions of the pre-activation variance q ----------
class _Moments:
    """V(q) = E[phi(u)^2], D(q) = E[phi'(u)^2], S(q) = E[u phi(u) phi'(u)] / q with u ~ N(0, q);
    C(q, c) = E[phi(u1) phi(u2)], Cd(q, c) = E[phi'(u1) phi'(u2)] for unit-variance correlation c.

    sw2 S(q) is the slope of the length map: d/dq E[phi(sqrt(q) z)^2] = E[z phi phi'] / sqrt(q)
    by the chain rule. Gaussian integration by parts turns it into Schoenholz's eq. 6 form
    E[phi'^2] + E[phi phi''], but this form needs no phi'' (and is exact for kinked phi).
    """

    def __init__(self, act: Activation):
        self.phi, self.dphi = act.phi, act.dphi

    def V(self, q):
        return _expect(lambda u: self.phi(u) ** 2, q)

    def V_over_q(self, q):
        return self.V(q) / np.asarray(q, dtype=float)

    def D(self, q):
        return _expect(lambda u: self.dphi(u) ** 2, q)

    def S(self, q):
        return _expect(lambda u: u * self.phi(u) * self.dphi(u), q) / np.asarray(q, dtype=float)

    def C(self, q: float, c: float) -> float:
        return _expect2(self.phi, q, c)

    def Cd(self, q: float, c: float) -> float:
        return _expect2(self.dphi, q, c)


class _PiecewiseLinear(_Moments):
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
def _moments(activation: str) -> _Moments:
    act = get(activation)
    return _PiecewiseLinear(act) if act.piecewise_linear else _Moments(act)


# --- fixed point of the length map ---------------------------------------------------------------
def _solve_q_star(V_over_q: Callable[[np.ndarray], np.ndarray], sw2, sb2) -> np.ndarray:
    """q* for arrays of (sw2, sb2): the fixed point that iterating q <- sw2 V(q) + sb2 from q = 1 reaches.

    V is increasing in q for every registry activation (tested), so the iterates move monotonically
    from 1 towards the nearest root of F(q) = sw2 V(q) + sb2 - q in the direction of sign F(1).
    We bracket that root on the grid 2^k and bisect, rather than iterate: near criticality the
    iteration would need thousands of steps. No root up to 2^60: inf; none down to 2^-60: 0.
    Signs are taken of F(q) / q = (sw2 V(q)/q - 1) + sb2/q, which does not lose sb2 to rounding
    when q is large (relu at sw2 = 2, sb2 = 0.05 has no fixed point, and must not find one at 1e15).
    """
    sw2, sb2 = np.broadcast_arrays(np.asarray(sw2, dtype=float), np.asarray(sb2, dtype=float))
    shape, sw2, sb2 = sw2.shape, sw2.ravel(), sb2.ravel()
    R = (sw2[:, None] * V_over_q(_SCAN_Q)[None, :] - 1.0) + sb2[:, None] / _SCAN_Q  # (n, 121) = F(q) / q
    one = Q_RANGE_LOG2  # index of q = 1
    r1 = R[:, one]
    q = np.where(r1 == 0.0, 1.0, np.nan)
    lo, hi = np.full_like(sw2, np.nan), np.full_like(sw2, np.nan)

    # growing: the first grid point above 1 where F <= 0 closes the bracket
    ahead = R[:, one:] <= 0.0
    k = one + np.argmax(ahead, axis=1)
    up, found = r1 > 0.0, ahead.any(axis=1)
    q[up & ~found] = np.inf
    sel = up & found
    lo[sel], hi[sel] = _SCAN_Q[k[sel] - 1], _SCAN_Q[k[sel]]

    # shrinking: the first grid point below 1 where F >= 0
    behind = R[:, : one + 1][:, ::-1] >= 0.0
    k = one - np.argmax(behind, axis=1)
    down, found = r1 < 0.0, behind.any(axis=1)
    q[down & ~found] = 0.0
    sel = down & found
    lo[sel], hi[sel] = _SCAN_Q[k[sel]], _SCAN_Q[k[sel] + 1]

    # bisection keeping F(lo) >= 0 >= F(hi)
    todo = np.isfinite(lo)
    if todo.any():
        a, b, w, c = lo[todo], hi[todo], sw2[todo], sb2[todo]
        for _ in range(_BISECTIONS):
            mid = 0.5 * (a + b)
            positive = (w * V_over_q(mid) - 1.0) + c / mid > 0.0
            a, b = np.where(positive, mid, a), np.where(positive, b, mid)
        q[todo] = 0.5 * (a + b)
    return q.reshape(shape)


def _check_params(sw2: float, sb2: float) -> None:
    for key, v in (("sw2", sw2), ("sb2", sb2)):
        if not (isinstance(v, (int, float, np.floating, np.integer)) and math.isfinite(v) and v >= 0):
            raise GradflowError(f"{key}={v!r} must be a finite number >= 0 (a variance)")


def _at(q: float) -> float:
    """Where to evaluate moments at a fixed point: 0 and inf mean their limits."""
    return _Q_ZERO if q == 0.0 else _Q_INF if q == math.inf else q


def q_star(activation: str, sw2: float, sb2: float) -> float:
    """The fixed point of the length map reached from q = 1 (0: the signal decays, inf: it grows without bound)."""
    _check_params(sw2, sb2)
    return float(_solve_q_star(_moments(activation).V_over_q, sw2, sb2))


def chi1(activation: str, sw2: float, sb2: float) -> float:
    """sw2 E[phi'(sqrt(q*) z)^2]: the per-layer factor of the squared back-propagated gradient norm."""
    m = _moments(activation)
    return float(sw2 * m.D(_at(q_star(activation, sw2, sb2))))


# --- scalar root finding ---------------------------------------------------------------------------
def _brentq(f: Callable[[float], float], a: float, b: float, xtol: float = 1e-13, rtol: float = 4.5e-16,
            maxiter: int = 200) -> float:
    """A root of f in [a, b] (f(a), f(b) of opposite signs): Brent's method, as in scipy's brentq.c."""
    xpre, xcur = a, b
    fpre, fcur = f(xpre), f(xcur)
    if fpre == 0.0:
        return xpre
    if fcur == 0.0:
        return xcur
    if (fpre > 0) == (fcur > 0):
        raise ValueError("f(a) and f(b) must have opposite signs")
    xblk = fblk = spre = scur = 0.0
    for _ in range(maxiter):
        if fpre != 0.0 and fcur != 0.0 and (fpre > 0) != (fcur > 0):
            xblk, fblk = xpre, fpre
            spre = scur = xcur - xpre
        if abs(fblk) < abs(fcur):
            xpre, xcur, xblk = xcur, xblk, xcur
            fpre, fcur, fblk = fcur, fblk, fcur
        delta = (xtol + rtol * abs(xcur)) / 2.0
        sbis = (xblk - xcur) / 2.0
        if fcur == 0.0 or abs(sbis) < delta:
            return xcur
        if abs(spre) > delta and abs(fcur) < abs(fpre):
            if xpre == xblk:  # secant
                stry = -fcur * (xcur - xpre) / (fcur - fpre)
            else:  # inverse quadratic interpolation
                dpre = (fpre - fcur) / (xpre - xcur)
                dblk = (fblk - fcur) / (xblk - xcur)
                stry = -fcur * (fblk * dblk - fpre * dpre) / (dblk * dpre * (fblk - fpre))
            if 2.0 * abs(stry) < min(abs(spre), 3.0 * abs(sbis) - delta):
                spre, scur = scur, stry
            else:
                spre = scur = sbis
        else:
            spre = scur = sbis
        xpre, fpre = xcur, fcur
        xcur += scur if abs(scur) > delta else (delta if sbis > 0 else -delta)
        fcur = f(xcur)
    return xcur


# --- the full mean-field point ---------------------------------------------------------------------
def _depth_scale(slope: float) -> float:
    """-1 / log(slope): layers over which a deviation from a fixed point shrinks by e (inf if slope >= 1)."""
    if slope >= 1.0:
        return math.inf
    if slope <= 0.0:
        return 0.0
    return -1.0 / math.log(slope)


def _c_star(m: _Moments, q: float, sw2: float, sb2: float) -> float:
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
            return _brentq(g, 0.0, top, xtol=1e-12)
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


@functools.lru_cache(maxsize=4096)
def point(activation: str, sw2: float, sb2: float) -> MeanField:
    """Everything mean-field theory says about `activation` at weight variance sw2, bias variance sb2.

    Degenerate cases (see the module docstring): q* = inf gives chi_1 as its q -> inf limit and
    xi_q = nan; q* in {0, inf} gives c* = 1, chi_c = 1, xi_c = inf. The phase is decided by chi_1
    alone, so for relu "chaotic" means exploding gradients (c* is 1 in every phase for relu).
    """
    _check_params(sw2, sb2)
    sw2, sb2 = float(sw2), float(sb2)
    m = _moments(activation)
    q = float(_solve_q_star(m.V_over_q, sw2, sb2))
    at = _at(q)
    g1 = float(sw2 * m.D(at))
    xi_q = math.nan if q == math.inf else _depth_scale(float(sw2 * m.S(at)))
    if q in (0.0, math.inf):  # scale-free correlation map: slope 1 at c = 1
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
    m = _moments(activation)
    if isinstance(m, _PiecewiseLinear):
        return 1.0 / m.m2
    f = lambda s: chi1(activation, s, sb2) - 1.0
    lo, hi = bracket
    f_lo, f_hi = f(lo), f(hi)
    if (f_lo > 0) == (f_hi > 0) and f_lo != 0 and f_hi != 0:
        raise GradflowError(
            f"activation={activation!r}, sb2={sb2}: chi_1 does not cross 1 for sw2 in [{lo}, {hi}] "
            f"(chi_1 = {f_lo + 1:.4g} .. {f_hi + 1:.4g}), so there is no edge of chaos there")
    root = _brentq(f, lo, hi, xtol=1e-12)
    if abs(f(root)) > 1e-6:  # Brent closed in on a discontinuity, not a root
        below, above = point(activation, root * (1 - 1e-9), sb2), point(activation, root * (1 + 1e-9), sb2)
        raise GradflowError(
            f"activation={activation!r}, sb2={sb2}: no edge of chaos; chi_1 jumps over 1 at sw2 = {root:.6g} "
            f"(from {below.chi1:.4g} to {above.chi1:.4g}) where the fixed point reached from q = 1 jumps "
            f"from q* = {below.q_star:.4g} to {above.q_star:.4g}")
    return root


# --- vectorized chi_1 over a grid (phase diagrams) -------------------------------------------------
def phase_grid(activation: str, sw2, sb2) -> tuple[np.ndarray, np.ndarray]:
    """(q*, chi_1) over the grid sb2 (rows) x sw2 (columns), each of shape (len(sb2), len(sw2)).

    For drawing: V/q and D are tabulated once on a log grid of q (10 points per octave) and
    interpolated in log-log, so values agree with `point` to ~1e-4 relative, at a fraction of the cost.
    """
    m = _moments(activation)
    log_q = np.log(2.0) * np.linspace(-Q_RANGE_LOG2, Q_RANGE_LOG2, 20 * Q_RANGE_LOG2 + 1)
    grid_q = np.exp(log_q)
    with np.errstate(divide="ignore"):  # D underflows to 0 at huge q for bounded phi: log -> -inf -> D = 0
        log_vq, log_d = np.log(m.V_over_q(grid_q)), np.log(m.D(grid_q))
    V_over_q = lambda q: np.exp(np.interp(np.log(q), log_q, log_vq))
    D = lambda q: np.exp(np.interp(np.log(q), log_q, log_d))  # clamped at the ends: the q -> 0 / inf limits
    s, b = np.meshgrid(np.asarray(sw2, dtype=float), np.asarray(sb2, dtype=float))
    q = _solve_q_star(V_over_q, s, b)
    return q, s * D(np.clip(q, grid_q[0], grid_q[-1]))


# --- from run configs ------------------------------------------------------------------------------
def _value(config: Mapping[str, Any], key: str) -> Any:
    """config[key], with missing, None and NaN (a column another run filled) all meaning None."""
    v = config.get(key)
    if v is None or (isinstance(v, (float, np.floating)) and math.isnan(v)):
        return None
    return v.item() if isinstance(v, np.generic) else v


def _number(config: Mapping[str, Any], key: str, default: float | None = None) -> float | None:
    v = _value(config, key)
    if v is None:
        return default
    try:
        return float(v)
    except (TypeError, ValueError):
        raise GradflowError(f"{key}={v!r} must be a number") from None


_GAIN_SQUARED = ("xavier_uniform", "xavier_normal", "orthogonal", "delta_orthogonal")


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
    name = _value(init, "init.name")
    if name == "meanfield":
        sw2 = _number(init, "init.sw2")
        return None if sw2 is None else (sw2, _number(init, "init.sb2", 0.0))
    if name == "standard":
        return (1.0 / 3.0, 0.0)
    if name in _GAIN_SQUARED:
        return (_number(init, "init.gain", 1.0) ** 2, 0.0)
    if name in ("kaiming_uniform", "kaiming_normal"):
        return (get(activation).gain ** 2, 0.0)
    if name == "lecun_normal":
        return (1.0, 0.0)
    return None


def predict(config: Mapping[str, Any]) -> MeanField | None:
    """The mean-field point of a run from its flattened config, or None where the theory does not apply.

    Applies to model.name == "mlp" with norm.name == "none" and model.skip == "none" (a missing key
    counts as its default, "none"). None for normalization, residual connections and CNNs (their
    downsampling and padding break the per-layer factor): no prediction rather than a wrong number.
    """
    if _value(config, "model.name") != "mlp":
        return None
    if (_value(config, "norm.name") or "none") != "none" or (_value(config, "model.skip") or "none") != "none":
        return None
    activation = _value(config, "model.activation")
    if activation is None:
        return None
    params = equivalent_sw2(config, activation)
    return None if params is None else point(activation, *params)


# --- measurements ----------------------------------------------------------------------------------
def fit_chi1(layer, signal_norm, trim: int = 3) -> float:
    """The measured per-layer growth factor of the squared back-propagated signal norm towards the input.

    Least-squares slope of log(signal_norm^2) against layer index over the bulk layers (the `trim`
    lowest and highest layer indices dropped: the input layer and output head have other fan-in /
    fan-out), chi_1 = exp(-slope). Non-finite and non-positive values are ignored; nan if fewer than
    3 distinct layers remain.
    """
    layer = np.asarray(layer, dtype=float).ravel()
    norm = np.asarray(signal_norm, dtype=float).ravel()
    if layer.shape != norm.shape:
        raise GradflowError(f"fit_chi1: layer has {layer.size} values but signal_norm has {norm.size}")
    levels = np.unique(layer[np.isfinite(layer)])
    bulk = levels[trim: len(levels) - trim] if trim > 0 else levels
    with np.errstate(divide="ignore", invalid="ignore"):
        log_sq = 2.0 * np.log(norm)
    keep = np.isin(layer, bulk) & np.isfinite(log_sq)
    if np.unique(layer[keep]).size < 3:
        return math.nan
    slope = np.polyfit(layer[keep], log_sq[keep], 1)[0]
    return float(np.exp(-slope))


_LONG = ("run", "step", "layer", "name", "quantity", "value")
_RESULT_COLUMNS = ("chi1_measured", "chi1_theory")


def chi1_table(layers, step: int = 0, trim: int = 3):
    """One row per run: its non-long columns (config, source, status), chi1_measured and chi1_theory.

    `layers` is the long table of `gradflow.store.load` (run, step, layer, name, quantity, value and
    a column per config key). chi1_measured fits the quantity == "signal_norm" rows at `step`;
    chi1_theory is `predict` on the run's config columns (nan where there is no prediction).
    """
    import pandas as pd

    missing = [c for c in ("run", "step", "layer", "quantity", "value") if c not in layers.columns]
    if missing:
        raise GradflowError(f"the layers table lacks column(s) {', '.join(missing)}; "
                            f"it has: {', '.join(map(str, layers.columns))}")
    signal = layers[layers["quantity"] == "signal_norm"]
    rows = signal[signal["step"] == step]
    if rows.empty:
        steps = sorted(signal["step"].unique().tolist())
        raise GradflowError(f"step={step} has no quantity='signal_norm' rows; steps with signal_norm: "
                            f"{', '.join(map(str, steps)) or 'none (was the signal probe recorded?)'}")
    config_cols = [c for c in layers.columns if c not in _LONG]
    out = []
    for run, g in rows.groupby("run", sort=True):
        config = {k: _value(g.iloc[0], k) for k in config_cols}
        mf = predict(config)
        out.append({"run": run, **{k: g.iloc[0][k] for k in config_cols},
                    "chi1_measured": fit_chi1(g["layer"].to_numpy(), g["value"].to_numpy(), trim),
                    "chi1_theory": mf.chi1 if mf is not None else math.nan})
    return pd.DataFrame(out)


# two-sided 95% Student-t quantiles t_{0.975, df} for df = 1..30 (beyond: Cornish-Fisher expansion)
_T975 = (12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281, 2.2010, 2.1788,
         2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860, 2.0796, 2.0739, 2.0687, 2.0639,
         2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423)


def t975(df: int) -> float:
    """The 0.975 quantile of Student's t with df degrees of freedom (to 4 decimals; nan for df < 1)."""
    if df < 1:
        return math.nan
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959963984540054  # Cornish-Fisher expansion around the normal quantile, error < 1e-5 for df > 30
    return (z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
            + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * df**3))


def chi1_by_config(table, seed_key: str = "seed"):
    """Average chi1_measured over runs that differ only in `seed_key`.

    Groups by every dotted config column (and `source`, the results folder, if present) except
    seed_key; run, status and other undotted columns are not part of a configuration. Returns the
    group columns, n_seeds (finite measurements), chi1_measured (mean), chi1_ci95 (half-width of the
    95% t confidence interval of the mean; nan for a single seed) and chi1_theory.
    """
    import pandas as pd

    if seed_key not in table.columns:
        raise GradflowError(f"seed_key={seed_key!r} is not a column of the chi1 table; "
                            f"columns: {', '.join(map(str, table.columns))}")
    keys = [c for c in table.columns
            if ("." in str(c) or c == "source") and c != seed_key and c not in _RESULT_COLUMNS]
    groups = table.groupby(keys, dropna=False, sort=False) if keys else [((), table)]
    out = []
    for _, g in groups:
        vals = pd.to_numeric(g["chi1_measured"], errors="coerce").to_numpy(dtype=float)
        vals = vals[np.isfinite(vals)]
        n = len(vals)
        half = t975(n - 1) * vals.std(ddof=1) / math.sqrt(n) if n >= 2 else math.nan
        theory = pd.to_numeric(g["chi1_theory"], errors="coerce").to_numpy(dtype=float) if "chi1_theory" in g else []
        out.append({**{k: g.iloc[0][k] for k in keys}, "n_seeds": n,
                    "chi1_measured": float(vals.mean()) if n else math.nan, "chi1_ci95": half,
                    "chi1_theory": float(theory[0]) if len(theory) else math.nan})
    return pd.DataFrame(out)
