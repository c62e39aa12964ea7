"""Mean-field theory against published values and against independent recomputations.

Every expectation the module computes by quadrature (or closed form) is recomputed here by brute
force: Monte Carlo with a fixed seed, judged against its own standard error; depth scales by
finite differences; the fixed-point selection by plain iteration of the length map; and where the
variances are large (phi's structure much narrower than the Gaussian), by adaptive quadrature.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import typer
from scipy.integrate import quad
from scipy.optimize import brentq
from typer.testing import CliRunner

from gradflow import theory
from gradflow.fmt import fmt
from gradflow.activations import ACTIVATIONS
from gradflow.cli.theory import theory_app
from gradflow.errors import GradflowError

N_MC = 2_000_000  # standard normal samples for the Monte Carlo checks
K_SE = 5.0  # a check passes within this many Monte Carlo standard errors


@pytest.fixture(scope="module")
def z() -> np.ndarray:
    return np.random.default_rng(12345).standard_normal(N_MC)


def mc_mean(samples: np.ndarray) -> tuple[float, float]:
    """Sample mean and its standard error."""
    return float(samples.mean()), float(samples.std() / math.sqrt(samples.size))


# --- published values --------------------------------------------------------------------------
def test_tanh_critical_point_schoenholz():
    sw2 = theory.critical_sw2("tanh", 0.05)
    assert sw2 == pytest.approx(1.761, abs=0.002)
    assert theory.q_star("tanh", sw2, 0.05) == pytest.approx(0.570, abs=0.001)
    assert theory.chi1("tanh", sw2, 0.05) == pytest.approx(1.0, abs=1e-9)


def test_an_edge_at_a_degenerate_fixed_point_is_exact():
    # sigma_b^2 = 0: q* = 0 up to sw2 = 1 / phi'(0)^2, where chi_1 = 1 exactly (Brent stopped at 1.00000013,
    # q* 6.6e-8); softsign too (phi'(0) = 1); selu's kink at 0 too, at the mean of its two slopes squared,
    # lambda^2 (1 + alpha^2) / 2 (Brent stopped at 0.476771117, with q* 3e-14 and xi_q 9.6e6 for infinity)
    from gradflow.activations import SELU_ALPHA, SELU_SCALE

    for name, edge in (("tanh", 1.0), ("softsign", 1.0), ("selu", 2 / (SELU_SCALE ** 2 * (1 + SELU_ALPHA ** 2)))):
        sw2 = theory.critical_sw2(name, 0.0)
        at = theory.point(name, sw2, 0.0)
        assert sw2 == pytest.approx(edge, rel=1e-15) and at.q_star == 0 and at.chi1 == 1.0 and at.xi_q == math.inf


def test_the_edge_is_where_chi1_first_rises_through_1():
    # gelu at sb2 = 0.25: chi_1 crosses 1 at sw2 = 1.96 (q* = 6.4), stays above 1, and comes back to 1 only
    # at sw2 = 2 as q* runs off to infinity; Brent landed on that second one (q* = inf), against the
    # command's own table and the phase figure
    sw2 = theory.critical_sw2("gelu", 0.25)
    assert sw2 == pytest.approx(1.9596, abs=1e-3) and math.isfinite(theory.q_star("gelu", sw2, 0.25))
    assert theory.chi1("gelu", sw2 * 0.99, 0.25) < 1 < theory.chi1("gelu", sw2 * 1.01, 0.25)
    assert theory.chi1("gelu", 1.99, 0.25) > 1  # (above 1 between the two)


@pytest.mark.parametrize("sw2, chi1", [(1.0, 0.759), (4.0, 1.342)])
def test_tanh_chi1_schoenholz_setting(sw2, chi1):
    """The values the end-to-end gradient measurements (tests/test_meanfield_runs.py) compare against."""
    assert theory.point("tanh", sw2, 0.05).chi1 == pytest.approx(chi1, abs=1e-3)


def test_relu_critical_point_is_he_init():
    assert theory.critical_sw2("relu", 0.0) == 2.0
    assert theory.point("relu", 2.0, 0.0).phase == "critical"
    # the critical band is |chi_1 - 1| < 1e-3 (relu's chi_1 = sw2 / 2): 1.0005 is critical, 1.002 and 0.998 not
    assert [theory.point("relu", sw2, 0.0).phase for sw2 in (2.001, 2.004, 1.996)] == ["critical", "chaotic",
                                                                                        "ordered"]


def test_sigmoid_gradient_factor():
    """sigmoid at sw2 = 1, sb2 = 0 shrinks the gradient norm by ~0.236 per layer (vanishing gradients)."""
    assert math.sqrt(theory.point("sigmoid", 1.0, 0.0).chi1) == pytest.approx(0.236, abs=0.002)


@pytest.mark.parametrize("name, expected", [("linear", 1.0), ("relu", 2.0),
                                            ("leaky_relu", 2.0 / (1.0 + 0.01**2))])
def test_piecewise_linear_critical_points_are_exact(name, expected):
    """chi_1 = sw2 E[phi'^2] whatever q* is, so sb2 > 0 does not move the edge (q* = inf there)."""
    for sb2 in (0.0, 0.05):
        assert theory.critical_sw2(name, sb2) == pytest.approx(expected, rel=1e-12)
    assert theory.q_star(name, expected, 0.05) == math.inf


# --- brute force: Monte Carlo for every activation ----------------------------------------------
POINTS = [(name, sw2, sb2) for name in ACTIVATIONS
          for sw2, sb2 in ((0.6, 0.1), (0.95, 0.05) if name == "linear" else (1.6, 0.05))]


@pytest.mark.parametrize("name, sw2, sb2", POINTS)
def test_q_star_and_chi1_against_monte_carlo(z, name, sw2, sb2):
    act = ACTIVATIONS[name]
    mf = theory.point(name, sw2, sb2)
    assert 0 < mf.q_star < math.inf
    u = math.sqrt(mf.q_star) * z
    # q* is a fixed point of the brute-force length map
    mean, se = mc_mean(act.phi(u) ** 2)
    assert sw2 * mean + sb2 == pytest.approx(mf.q_star, abs=K_SE * sw2 * se)
    # chi_1 = sw2 E[phi'(u)^2]
    mean, se = mc_mean(act.dphi(u) ** 2)
    assert mf.chi1 == pytest.approx(sw2 * mean, abs=K_SE * sw2 * se)


@pytest.mark.parametrize("name, sw2, sb2", [("tanh", 2.5, 0.05), ("relu", 1.2, 0.1), ("selu", 1.3, 0.05),
                                            ("leaky_relu", 1.5, 0.2)])
def test_correlation_map_against_monte_carlo(z, name, sw2, sb2):
    """E[phi(u1) phi(u2)] and E[phi'(u1) phi'(u2)] (2D quadrature or arc-cosine kernel) by brute force."""
    act = ACTIVATIONS[name]
    m = theory.moments(name)
    q = theory.q_star(name, sw2, sb2)
    z1, z2 = z[: N_MC // 2], z[N_MC // 2:]
    for c in (-0.6, 0.3, 0.9):
        u1 = math.sqrt(q) * z1
        u2 = math.sqrt(q) * (c * z1 + math.sqrt(1 - c * c) * z2)
        mean, se = mc_mean(act.phi(u1) * act.phi(u2))
        assert m.C(q, c) == pytest.approx(mean, abs=K_SE * se)
        mean, se = mc_mean(act.dphi(u1) * act.dphi(u2))
        assert m.Cd(q, c) == pytest.approx(mean, abs=K_SE * se)


def test_chaotic_fixed_point_c_star(z):
    """Chaotic tanh: c* < 1 is a fixed point of the brute-force correlation map, chi_c its slope."""
    mf = theory.point("tanh", 2.5, 0.05)
    assert mf.phase == "chaotic" and 0.0 < mf.c_star < 0.99
    act, q, c = ACTIVATIONS["tanh"], mf.q_star, mf.c_star
    z1, z2 = z[: N_MC // 2], z[N_MC // 2:]
    u1, u2 = math.sqrt(q) * z1, math.sqrt(q) * (c * z1 + math.sqrt(1 - c * c) * z2)
    mean, se = mc_mean(act.phi(u1) * act.phi(u2))
    assert (mf.sw2 * mean + mf.sb2) / q == pytest.approx(c, abs=K_SE * mf.sw2 * se / q)
    mean, se = mc_mean(act.dphi(u1) * act.dphi(u2))
    assert mf.chi_c == pytest.approx(mf.sw2 * mean, abs=K_SE * mf.sw2 * se)
    assert mf.chi_c < 1.0 and mf.xi_c == pytest.approx(-1.0 / math.log(mf.chi_c))


def test_c_star_just_past_the_edge_of_chaos_is_found_below_one():
    """Just past the critical sigma_w^2 (1.7615 beside tanh's 1.76 at sb2 = 0.05) c* = 0.99928 is within 1e-3 of
    1: it is still the correlation map's fixed point (from quadrature, M(c*) = c*), below 1, stable, with a
    finite xi_c (searched only down to 1 - 1e-3, c* read 1 and xi_c inf)."""
    mf = theory.point("tanh", 1.7615, 0.05)
    assert mf.chi1 > 1 and 1 - 1e-3 < mf.c_star < 1 - 1e-4
    m = theory.moments("tanh")
    assert (mf.sw2 * m.C(mf.q_star, mf.c_star) + mf.sb2) / mf.q_star == pytest.approx(mf.c_star, abs=1e-10)
    assert mf.chi_c < 1 and math.isfinite(mf.xi_c) and mf.xi_c > 1000


@pytest.mark.parametrize("sw2", [0.5, 1.0, 1.5])
def test_ordered_phase_has_c_star_one(sw2):
    mf = theory.point("tanh", sw2, 0.05)
    assert mf.phase == "ordered"
    assert mf.c_star == 1.0 and mf.chi_c == mf.chi1
    assert mf.xi_c == pytest.approx(-1.0 / math.log(mf.chi1))
    assert mf.six_xi_c == pytest.approx(6 * mf.xi_c)


def test_chaotic_c_star_decreases_with_sw2():
    cs = [theory.point("tanh", sw2, 0.05).c_star for sw2 in (2.0, 2.5, 4.0)]
    assert 1.0 > cs[0] > cs[1] > cs[2] > 0.0


def test_xi_c_diverges_at_the_edge_of_chaos():
    crit = theory.critical_sw2("tanh", 0.05)
    xi = [theory.point("tanh", crit + d, 0.05).xi_c for d in (-0.3, -0.1, -0.01, 0.01, 0.1, 0.3)]
    assert xi[0] < xi[1] < xi[2] and xi[3] > xi[4] > xi[5]
    assert min(xi[2], xi[3]) > 100


@pytest.mark.parametrize("name, sw2, sb2", [("tanh", 1.0, 0.05), ("tanh", 2.5, 0.05), ("selu", 1.0, 0.05),
                                            ("softplus", 1.2, 0.1)])
def test_xi_q_against_finite_differences(z, name, sw2, sb2):
    """xi_q = -1/log(dL/dq at q*), with dL/dq by a central difference of the Monte Carlo length map
    (common random numbers, so the difference is not swamped by sampling noise)."""
    act = ACTIVATIONS[name]
    mf = theory.point(name, sw2, sb2)
    q, h = mf.q_star, 1e-3 * mf.q_star
    length = lambda qq: sw2 * np.mean(act.phi(math.sqrt(qq) * z) ** 2) + sb2
    slope = (length(q + h) - length(q - h)) / (2 * h)
    assert mf.xi_q == pytest.approx(-1.0 / math.log(slope), rel=5e-3)


@pytest.mark.parametrize("name, sw2, sb2", [("tanh", 1.6, 0.05), ("sigmoid", 3.0, 0.0), ("gelu", 2.0, 0.05),
                                            ("selu", 1.0, 0.0)])
def test_q_star_is_where_plain_iteration_goes(name, sw2, sb2):
    """The solver brackets a root instead of iterating; check it picks the root iteration from q = 1 reaches.

    The length map here is integrated independently: the trapezoid rule on a uniform grid in z.
    """
    phi = ACTIVATIONS[name].phi
    t = np.linspace(-12.0, 12.0, 24_001)  # a node at 0, where phi may have a kink
    weight = np.exp(-t * t / 2) / math.sqrt(2 * math.pi) * (t[1] - t[0])
    weight[[0, -1]] /= 2
    length = lambda q: sw2 * float(phi(math.sqrt(q) * t) ** 2 @ weight) + sb2

    q = 1.0
    for _ in range(500):
        q, q_prev = length(q), q
        if abs(q - q_prev) < 1e-12 * q:
            break
    assert theory.q_star(name, sw2, sb2) == pytest.approx(q, rel=1e-6)


def test_length_map_is_increasing():
    """The q* solver relies on V(q) = E[phi(sqrt(q) z)^2] increasing in q (monotone iterates)."""
    q = np.geomspace(1e-6, 1e6, 400)
    for name in ACTIVATIONS:
        v = theory.moments(name).V(q)
        assert np.all(np.diff(v) > 0), name


# --- large variances: against adaptive quadrature ------------------------------------------------
def gauss_quad(g, sd: float, at: float = 0.0, fine: float = 0.125, rel: float = 1e-12) -> float:
    """The integral of g(v) N(v; 0, sd^2) over |v| <= 12 sd by scipy.integrate.quad (adaptive, to `rel` of the
    integral of |g| N), cut at `at`, at +-fine 4^k (k >= 0) around it and at 0: pieces on phi's scale (1, around
    its kink or spike at `at`) and on the Gaussian's (sd) alike. Independent of gradflow.theory's rules."""
    top = 12.0 * sd
    cuts = {-top, top, 0.0, min(max(at, -top), top)}
    k = fine
    while k < 2 * top:
        cuts |= {at - k, at + k}
        k *= 4
    cuts = sorted(x for x in cuts if -top <= x <= top)
    pieces = list(zip(cuts[:-1], cuts[1:]))
    density = lambda v: math.exp(-0.5 * (v / sd) ** 2) / (sd * math.sqrt(2 * math.pi))
    h = lambda v: float(g(v)) * density(v)
    scale = sum(quad(lambda v: abs(h(v)), a, b, epsrel=1e-3, limit=20)[0] for a, b in pieces)
    return sum(quad(h, a, b, epsabs=rel * scale / len(pieces), epsrel=rel, limit=200)[0] for a, b in pieces)


def quad_q_star(name: str, sw2: float, sb2: float, bracket: tuple[float, float]) -> float:
    """The root of sw2 E[phi(u)^2] + sb2 = q, u ~ N(0, q), in `bracket`, with E by `gauss_quad`."""
    phi = ACTIVATIONS[name].phi
    return brentq(lambda q: sw2 * gauss_quad(lambda u: phi(u) ** 2, math.sqrt(q)) + sb2 - q, *bracket, rtol=1e-14)


QUADRATURE = [name for name in ACTIVATIONS if not ACTIVATIONS[name].piecewise_linear]


@pytest.mark.parametrize("name", QUADRATURE)
@pytest.mark.parametrize("q", [30.0, 1e4, 1e8, 1e14])
def test_moments_at_large_q_against_adaptive_quadrature(name, q):
    """E[phi'^2] (chi_1), E[phi^2] (length map), E[u phi phi'] / q (its slope) and E[phi'^4] where phi's
    structure (tanh' : a spike of width ~1 in u) is tiny next to the Gaussian's width sqrt(q)."""
    act, m, sd = ACTIVATIONS[name], theory.moments(name), math.sqrt(q)
    assert float(m.V(q)) == pytest.approx(gauss_quad(lambda u: act.phi(u) ** 2, sd), rel=1e-10)
    assert float(m.V_over_q(q)) == pytest.approx(gauss_quad(lambda u: act.phi(u) ** 2, sd) / q, rel=1e-10)
    assert float(m.D(q)) == pytest.approx(gauss_quad(lambda u: act.dphi(u) ** 2, sd), rel=1e-10)
    assert float(m.D4(q)) == pytest.approx(gauss_quad(lambda u: act.dphi(u) ** 4, sd), rel=1e-10)
    assert float(m.S(q)) == pytest.approx(gauss_quad(lambda u: u * act.phi(u) * act.dphi(u), sd) / q, rel=1e-10)


# (activation, sw2, sb2, a bracket of q*): bounded phi at large sw2 (q* ~ sw2), unbounded phi at large sb2
LARGE = [("tanh", 1e3, 0.0, (5e2, 1e3)), ("tanh", 1e4, 0.0, (5e3, 1e4)), ("tanh", 1e5, 0.0, (5e4, 1e5)),
         ("tanh", 1e6, 0.0, (5e5, 1e6)), ("tanh", 1e6, 1e5, (5e5, 1.1e6)), ("tanh", 1e20, 0.0, (5e19, 1e20)),
         ("softsign", 1e4, 0.0, (5e3, 1e4)), ("softsign", 1e6, 0.0, (5e5, 1e6)), ("sigmoid", 1e5, 0.0, (1e4, 1e5)),
         ("gelu", 1.0, 1e5, (1e5, 1e6)), ("selu", 1.0, 1e6, (1e6, 1e7)), ("elu", 1.5, 1e4, (1e4, 1e6)),
         # beyond the quadrature's stand-in for q = inf (1e200): a bounded phi's q* is still finite there
         ("tanh", 1e200, 0.0, (5e199, 1e200)), ("softsign", 1e200, 0.0, (5e199, 1e200)),
         ("sigmoid", 1e200, 1e199, (1e199, 1e200))]


@pytest.mark.parametrize("name, sw2, sb2, bracket", LARGE)
def test_large_variance_points_against_adaptive_quadrature(name, sw2, sb2, bracket):
    """q*, chi_1 and xi_q where q* is large, each from its defining Gaussian integral by adaptive quadrature.

    A fixed quadrature rule misses tanh's phi'(sqrt(q) z)^2, a spike of width ~1/sqrt(q) at z = 0: it
    reported chi_1 = 0.104 ("ordered") at sw2 = 1e6 instead of 532 (and q* = inf at sw2 = 1e20, and again at
    sw2 >= 1e200, where V/q ~ 1/q was taken for the slope at infinity)."""
    act = ACTIVATIONS[name]
    q = quad_q_star(name, sw2, sb2, bracket)
    mf = theory.point(name, sw2, sb2)
    assert mf.q_star == pytest.approx(q, rel=1e-10)
    assert mf.chi1 == pytest.approx(sw2 * gauss_quad(lambda u: act.dphi(u) ** 2, math.sqrt(q)), rel=1e-9)
    slope = sw2 * gauss_quad(lambda u: u * act.phi(u) * act.dphi(u), math.sqrt(q)) / q
    assert mf.xi_q == pytest.approx(-1.0 / math.log(slope), rel=1e-9)
    assert theory.chi1(name, sw2, sb2) == mf.chi1 and theory.q_star(name, sw2, sb2) == mf.q_star


@pytest.mark.parametrize("name, mean_sq", [("tanh", 1.0), ("softsign", 1.0), ("sigmoid", 0.5)])
@pytest.mark.parametrize("sw2", [1e150, 1e200])
def test_bounded_phi_has_a_finite_fixed_point_at_any_sw2(name, mean_sq, sw2):
    """q* -> sw2 E[phi(inf z)^2] + sb2 (1 for tanh and softsign, 1/2 for sigmoid): finite up to the largest
    variance the theory takes (it read inf from sw2 ~ 1e195 on)."""
    mf = theory.point(name, sw2, sw2 / 10)
    assert mf.q_star == pytest.approx(sw2 * mean_sq + sw2 / 10, rel=1e-12)
    assert math.isfinite(mf.chi1) and mf.phase == "chaotic"


def test_tanhs_depth_scale_at_the_largest_variance_is_its_limit_and_beyond_it_is_refused():
    # for tanh at huge q the length map's slope is sw2 S(q*) ~ sw2 c / q*^1.5 with q* ~ sw2 (S: only |u| < 1
    # counts, where tanh(u) ~ u and tanh'(u) ~ 1), so xi_q ~ -1 / log(c / sqrt(sw2)); from sw2 = 1e250 the
    # slope underflowed to 0 and xi_q read 0, and at 1e308 q* read inf and chi_1 was 54 decades high
    mf = theory.point("tanh", 1e200, 0.0)
    c = quad(lambda t: t * np.tanh(t) / np.cosh(t) ** 2, -50, 50)[0] / math.sqrt(2 * math.pi)
    assert mf.xi_q == pytest.approx(-1 / math.log(c / math.sqrt(1e200)), rel=1e-6)
    for sw2, sb2 in ((1e250, 0.0), (1.0, 1e201)):
        with pytest.raises(GradflowError, match=r"is beyond what the theory computes: at most 1e\+200"):
            theory.point("tanh", sw2, sb2)
    assert theory.predict({"model.name": "mlp", "model.activation": "tanh", "init.name": "meanfield",
                           "init.sw2": 1e250, "init.sb2": 0.0}) is None


@pytest.mark.parametrize("name", ["elu", "softplus"])
@pytest.mark.parametrize("sb2", [0.0, 0.05])
def test_no_fixed_point_found_in_rounding_at_the_edge(name, sb2):
    """sw2 = 2 (kaiming init) for phi ~ relu at large u: F(q)/q = 2 V(q)/q - 1 + sb2/q ~ 1/q > 0 for all q,
    so the length grows without bound, though F/q sinks below quadrature rounding beyond q ~ 1e13."""
    mf = theory.point(name, 2.0, sb2)
    assert mf.q_star == math.inf and math.isnan(mf.xi_q) and mf.chi1 == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("name", ["tanh", "softsign", "elu"])
@pytest.mark.parametrize("c", [0.5, 1 - 1e-9])
def test_correlation_map_tail_shortcut(name, c):
    """Beyond sqrt(q) sqrt(1 - c^2) ~ 1e15, C / V and Cd / D^2 are taken as constant in q; against the full 2D rule."""
    m, q = theory.moments(name), 1e40
    assert m.C(q, c) == pytest.approx(theory._expect2(m.phi, q, c), abs=1e-13 * float(m.V(q)))
    assert m.Cd(q, c) == pytest.approx(theory._expect2(m.dphi, q, c), rel=1e-12)


@pytest.mark.parametrize("sw2, chi1", [(1e3, 17.04), (1e4, 53.41), (1e5, 168.4), (1e6, 532.1)])
def test_tanh_large_sw2_is_chaotic(sw2, chi1):
    """chi_1 grows like sqrt(sw2) (sw2 E[phi'^2] ~ sw2 (4/3) / sqrt(2 pi q*), q* ~ sw2); c* = 0 (odd phi, no bias),
    where chi_c = sw2 E[phi'(u1)] E[phi'(u2)], a 1D integral squared."""
    mf = theory.point("tanh", sw2, 0.0)
    assert mf.chi1 == pytest.approx(chi1, rel=1e-3) and mf.phase == "chaotic" and mf.c_star == 0.0
    first = gauss_quad(lambda u: ACTIVATIONS["tanh"].dphi(u), math.sqrt(mf.q_star))
    assert mf.chi_c == pytest.approx(sw2 * first**2, rel=1e-9)


def quad_expect2(f, q: float, c: float) -> float:
    """E[f(u1) f(u2)], u1, u2 ~ N(0, q) with correlation c: u2 = c u1 + v, v ~ N(0, q (1 - c^2)), by
    nested `gauss_quad` (the inner one cut where u2 = 0)."""
    sd, sd2 = math.sqrt(q), math.sqrt(q * (1.0 - c * c))
    inner = lambda u1: gauss_quad(lambda v: f(c * u1 + v), sd2, at=-c * u1, rel=1e-12)
    return gauss_quad(lambda u1: f(u1) * inner(u1), sd, fine=min(0.125, sd2 / 4), rel=1e-10)  # inner: a bend ~sd2 wide at 0


@pytest.mark.parametrize("name, q, c", [("tanh", 1e4, 0.6), ("softsign", 1e4, -0.5), ("selu", 0.5, 1 - 1e-6)])
def test_correlation_map_against_adaptive_quadrature(name, q, c):
    """The 2D expectations where q is large, and where c is so close to 1 that the inner integral turns SELU's
    kink into a bend of width ~sqrt(1 - c^2) in z1 (a fixed outer rule was off by 1e-4 in E[phi'(u1) phi'(u2)])."""
    act, m = ACTIVATIONS[name], theory.moments(name)
    assert m.C(q, c) == pytest.approx(quad_expect2(act.phi, q, c), rel=1e-9)
    assert m.Cd(q, c) == pytest.approx(quad_expect2(act.dphi, q, c), rel=1e-9)


def test_tiny_bias_has_a_finite_fixed_point():
    """sb2 = 1e-30 > 0: q* ~ sb2 / (1 - sw2) = 2e-30, below the first search grid (2^-60), is still a fixed
    point (not q* = 0, the sb2 = 0 limit): the correlation map then contracts at rate chi_c = chi_1 = sw2."""
    q = quad_q_star("tanh", 0.5, 1e-30, (1e-30, 1e-29))
    mf = theory.point("tanh", 0.5, 1e-30)
    assert mf.q_star == pytest.approx(q, rel=1e-10) and q == pytest.approx(2e-30, rel=1e-12)
    assert mf.phase == "ordered" and mf.c_star == 1.0 and mf.chi_c == mf.chi1 == pytest.approx(0.5, rel=1e-12)
    assert mf.xi_c == pytest.approx(1 / math.log(2))


# --- degenerate fixed points -------------------------------------------------------------------
def test_relu_fixed_points_closed_form():
    assert theory.q_star("relu", 1.0, 0.1) == pytest.approx(0.2)  # sb2 / (1 - sw2/2)
    mf = theory.point("relu", 3.0, 0.1)  # no finite fixed point: the length grows like 1.5^l
    assert mf.q_star == math.inf and mf.chi1 == 1.5 and mf.phase == "chaotic"
    assert math.isnan(mf.xi_q) and mf.xi_c == math.inf
    mf = theory.point("relu", 1.0, 0.0)  # the length decays like 0.5^l
    assert mf.q_star == 0.0 and mf.chi1 == 0.5 and mf.xi_q == pytest.approx(1 / math.log(2))


def test_tanh_without_bias_linearizes():
    """sb2 = 0, sw2 < 1: q* = 0, where tanh acts as the identity, so chi_1 = sw2."""
    mf = theory.point("tanh", 0.5, 0.0)
    assert mf.q_star == 0.0 and mf.chi1 == pytest.approx(0.5, rel=1e-12)


def test_tanh_at_sw2_one_without_bias_is_exactly_degenerate():
    """tanh, sw2 = 1, sb2 = 0: q_(l+1) = E[tanh(sqrt(q_l) z)^2] ~ q_l - 2 q_l^2 decays like 1/(2 l), not
    exponentially, so q* = 0 exactly, the length map's slope there is exactly 1 (xi_q = inf) and chi_1 = 1."""
    mf = theory.point("tanh", 1.0, 0.0)
    assert (mf.q_star, mf.chi1, mf.xi_q, mf.xi_c, mf.c_star) == (0.0, 1.0, math.inf, math.inf, 1.0)
    assert mf.phase == "critical"
    # brute force: iterate the length map with Gauss-Hermite expectations; q_l l -> 1/2 (polynomial decay)
    z, w = np.polynomial.hermite_e.hermegauss(80)
    w = w / w.sum()
    q = 1.0
    for _ in range(20_000):
        q = float(np.tanh(math.sqrt(q) * z) ** 2 @ w)
    assert 20_000 * q == pytest.approx(0.5, rel=0.05)
    # other activations with phi'(0)^2 = 1/sw2 are as exact; gelu and silu have phi'(0) = 1/2
    for name in ("softsign", "elu"):
        assert theory.point(name, 1.0, 0.0).q_star == 0.0 and theory.point(name, 1.0, 0.0).xi_q == math.inf
    assert theory.point("gelu", 1.0, 0.0).chi1 == 0.25
    assert theory.point("tanh", 0.5, 0.0).xi_q == pytest.approx(-1.0 / math.log(0.5), rel=1e-12)


def test_a_small_nonzero_fixed_point_is_still_found():
    """Just above sw2 = 1 tanh without bias has q* > 0 (small), the limit of the iterated length map."""
    z, w = np.polynomial.hermite_e.hermegauss(80)
    w = w / w.sum()
    q = 1.0
    for _ in range(5_000):
        q = 1.05 * float(np.tanh(math.sqrt(q) * z) ** 2 @ w)
    assert theory.q_star("tanh", 1.05, 0.0) == pytest.approx(q, rel=1e-6) and 0.0 < q < 0.1


def test_gelu_has_no_edge_of_chaos_at_small_bias():
    """chi_1 jumps over 1 where the fixed point reached from q = 1 runs off to infinity."""
    with pytest.raises(GradflowError, match="jumps"):
        theory.critical_sw2("gelu", 0.05)
    assert theory.point("gelu", 2.2, 0.05).chi1 < 0.8 < 1.1 < theory.point("gelu", 2.3, 0.05).chi1


def test_critical_sw2_outside_bracket():
    with pytest.raises(GradflowError, match="does not cross 1"):
        theory.critical_sw2("sigmoid", 0.0, bracket=(0.5, 5.0))
    assert theory.critical_sw2("sigmoid", 0.0) == pytest.approx(103.0, rel=1e-2)


def test_a_large_bias_moves_the_edge_beyond_the_first_bracket():
    """tanh at sb2 = 1e6 is ordered at every sw2 of [0.01, 1000]; its edge lies above, where large q* gives
    chi_1 = sw2 E[sech^4(sqrt(q*) z)] ~ sw2 (4/3) / sqrt(2 pi q*) with q* ~ sw2 + sb2: chi_1 = 1 at
    sw2 = 3/4 sqrt(2 pi (sw2 + sb2)), ~1882. It was reported as no edge at all."""
    sw2 = theory.critical_sw2("tanh", 1e6)
    assert sw2 > 1e3 and sw2 == pytest.approx(0.75 * math.sqrt(2 * math.pi * (sw2 + 1e6)), rel=1e-3)
    assert theory.chi1("tanh", sw2, 1e6) == pytest.approx(1.0, abs=1e-9)
    # a sigmoid net under a bias that saturates it at every sw2 searched still has none, said with the range
    with pytest.raises(GradflowError, match=r"does not cross 1 for sw2 in \[0.01, 1e\+12\]"):
        theory.critical_sw2("sigmoid", 1e30)


@pytest.mark.parametrize("sb2", [0.0, 0.1])
def test_zero_weights_forget_the_input_at_once(sb2):
    """sigma_w^2 = 0: every input gives the bias alone after one layer, so both depth scales are 0. At
    sb2 = 0 (q* = 0) xi_c read inf, as for a scale-free correlation map, and the note said the signal
    decays to 0 with depth."""
    mf = theory.point("tanh", 0.0, sb2)
    assert (mf.chi1, mf.xi_q, mf.xi_c, mf.six_xi_c) == (0.0, 0.0, 0.0, 0.0)
    assert theory.endless_length_note(mf).startswith("σ_w² = 0: no layer passes its input on")


def test_bad_parameters_name_the_key():
    with pytest.raises(GradflowError, match="sw2"):
        theory.point("tanh", -1.0, 0.0)
    with pytest.raises(GradflowError, match="choices"):
        theory.point("nope", 1.0, 0.0)


def test_grad_ratio_direction():
    """Signal at layer l = sqrt(chi_1)^(L - l) x the last layer's: first/last over depth L = chi_1^(L/2)."""
    mf = theory.point("relu", 1.0, 0.0)
    assert mf.grad_ratio(10) == pytest.approx(0.5**5)
    assert theory.point("relu", 4.0, 0.0).grad_ratio(10) == pytest.approx(2.0**5)
    assert theory.point("relu", 4.0, 0.0).grad_ratio(5000) == math.inf  # overflow, not an exception


# --- free probability ---------------------------------------------------------------------------
@pytest.mark.parametrize("orthogonal, per_layer", [(True, 1.0), (False, 2.0)])
def test_jacobian_moments_relu_by_hand(orthogonal, per_layer):
    """relu at sw2 = 2: mu1 = mu2 = 1/2 at every q, so m1 = (2 mu1)^L = 1 and sigma^2 = L (mu2/mu1^2 - 1 - s1)
    = L (1 - s1): L for orthogonal weights (s1 = 0), 2 L for Gaussian ones (s1 = -1)."""
    m1, sigma2 = theory.jacobian_moments("relu", 2.0, 0.0, q1=0.7, depth=12, orthogonal=orthogonal)
    assert m1 == pytest.approx(1.0, rel=1e-12) and sigma2 == pytest.approx(12 * per_layer, rel=1e-12)


@pytest.mark.parametrize("name", [n for n in ACTIVATIONS if ACTIVATIONS[n].piecewise_linear])
def test_piecewise_linear_fourth_moment_against_monte_carlo(z, name):
    """E[phi'(u)^4] of the closed forms (mu2 of the free-probability prediction): for leaky_relu the mean of
    the slopes' fourth powers, (1 + s^4) / 2, not their squares' (1 + s^2) / 2, which relu and linear cannot
    tell apart."""
    act, m = ACTIVATIONS[name], theory.moments(name)
    for q in (0.3, 1.0, 7.0):
        mean, se = mc_mean(act.dphi(math.sqrt(q) * z) ** 4)
        assert float(m.D4(q)) == pytest.approx(mean, abs=K_SE * se + 1e-12), (name, q)
    if name == "leaky_relu":
        from gradflow.activations import LEAKY_SLOPE

        assert float(m.D4(1.0)) == pytest.approx((1.0 + LEAKY_SLOPE**4) / 2.0, rel=1e-12)


def test_jacobian_moments_at_the_fixed_point_are_the_papers(z):
    """At q_1 = q*: m1 = chi_1^L and sigma^2 = L m1^2 (mu2/mu1^2 - 1 - s1), mu_k by Monte Carlo."""
    mf = theory.point("tanh", 1.3, 0.05)
    m1, sigma2 = theory.jacobian_moments("tanh", 1.3, 0.05, q1=mf.q_star, depth=20, orthogonal=True)
    assert m1 == pytest.approx(mf.chi1**20, rel=1e-9)
    d2 = np.cosh(math.sqrt(mf.q_star) * z) ** -4  # tanh'(u)^2
    mu1, mu2 = d2.mean(), (d2**2).mean()
    assert sigma2 == pytest.approx(20 * m1**2 * (mu2 / mu1**2 - 1.0), rel=1e-3)
    q = theory.length_map("tanh", 1.3, 0.05, q1=3.0, depth=40)
    assert q[0] == 3.0 and q[-1] == pytest.approx(mf.q_star, rel=1e-6)  # the map from q_1 settles at q*


def test_phase_grid_matches_point():
    sw2, sb2 = np.array([0.7, 1.5, 1.76, 3.0]), np.array([0.0, 0.05, 0.2])
    q, chi1 = theory.phase_grid("tanh", sw2, sb2)
    exact = np.array([[theory.chi1("tanh", s, b) for s in sw2] for b in sb2])
    assert q.shape == chi1.shape == (3, 4)
    np.testing.assert_allclose(chi1, exact, rtol=5e-4)


def test_the_phase_diagrams_divergence_line_is_where_q_star_turns_infinite_and_says_whether_chi1_jumps():
    """The line beyond which q* = inf is found within each grid cell (the grid's contour was a staircase
    of cells), checked against `point`; chi_1 jumps there for gelu at sb2 = 0 (the fixed point vanishes)
    and not for relu, whose chi_1 = sw2 / 2 goes on through sw2 = 2: its edge of chaos stays drawn."""
    from gradflow.plots.phase import REFINE, _divergence_line

    x, y = np.linspace(0.5, 5.0, 120), np.linspace(0.0, 0.3, 7)
    cell = (x[1] - x[0]) / REFINE
    for activation in ("gelu", "relu", "softplus"):
        q, _ = theory.phase_grid(activation, x, y)
        xs, ys, jumps = _divergence_line(activation, x, y, np.isinf(q))
        assert list(ys) == list(y) and np.isfinite(xs).all()
        for sw2, sb2 in zip(xs, y):  # the last finite and the first infinite q* a fine cell apart
            assert math.isfinite(theory.point(activation, sw2 - 1.5 * cell, sb2).q_star), (activation, sw2, sb2)
            assert theory.point(activation, sw2 + 0.5 * cell, sb2).q_star == math.inf, (activation, sw2, sb2)
        if activation == "relu":
            np.testing.assert_allclose(xs[1:], 2.0, atol=cell)  # (at sb2 = 0, q* = 0 below sw2 = 2)
            assert not jumps.any()
        elif activation == "softplus":  # (chi_1 0.95 a fine cell before the line, 1 beyond: steep, no jump)
            np.testing.assert_allclose(xs, 2.0, atol=cell)
            assert not jumps.any()
            assert theory.critical_sw2("softplus", 0.1) == pytest.approx(2.0, abs=1e-6)
        else:
            assert xs[0] == pytest.approx(2.35, abs=0.01) and jumps[0]
    # a row crossing back (q* finite again beyond) gets no line: the caller draws the grid's contour
    assert _divergence_line("relu", x, y[:2], np.array([[0, 1, 0] + [0] * 117, [0] * 120], bool)) is None


@pytest.mark.parametrize("activation, edge, note", [
    ("tanh", True, None), ("relu", True, None),  # relu's edge is at sw2 = 2, where q* turns infinite too
    # softplus's chi_1 rises steeply but without a jump to 1 at sw2 = 2 as q* runs off to infinity: the
    # legend said it crossed only by a jump, where `theory --critical` gives 2
    ("softplus", True, None),
    ("gelu", True, "jumps at this line"),
    # silu's chi_1 crosses 1 only by jumps: the legend named an edge of chaos that was nowhere drawn
    ("silu", False, "no edge of chaos: $\\chi_1$ crosses 1 only by a jump"),
    # sigmoid's edge is at sw2 = 103 (its derivative is at most 1/4): over 0.5-5 the diagram was all ordered
    ("sigmoid", True, None),
])
def test_the_phase_diagrams_legend_names_an_edge_of_chaos_only_where_one_is_drawn(activation, edge, note):
    from gradflow.plots.phase import phase_figure

    fig = phase_figure(activation, resolution=(120, 60))
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    drawn = any(len(seg) for c in ax.collections if hasattr(c, "allsegs") and c.get_linestyle()[0][1] is None
                for seg in c.allsegs[0])
    assert (r"edge of chaos ($\chi_1 = 1$)" in labels) == edge == drawn, (labels, drawn)
    assert note is None or any(note in label for label in labels), labels
    assert note is not None or not any("jump" in label for label in labels), labels
    assert ax.get_xlim()[1] == pytest.approx(150.0 if activation == "sigmoid" else 5.0, rel=0.01)


def test_a_phase_diagram_over_a_wide_sigma_w_range_has_a_log_axis_with_round_labels():
    """sigmoid's diagram runs sigma_w^2 0.5-150 (its edge of chaos at 103): on a linear axis its ordered phase,
    where log chi_1 changes most, was squeezed into a band at the left. Over more than 20 times (LOG_SW2), the
    axis is logarithmic, labelled at round values as plain numbers (not 10^0, 10^1, 10^2) over its whole width;
    tanh's 0.5-5 stays linear."""
    from gradflow.plots.phase import phase_figure

    ax = phase_figure("sigmoid", resolution=(120, 60)).axes[0]
    ax.figure.canvas.draw()
    lo, hi = ax.get_xlim()
    assert ax.get_xscale() == "log" and hi / lo > 20 and "log" in ax.get_xlabel()
    shown = [(t.get_position()[0], t.get_text()) for t in ax.get_xticklabels() if lo <= t.get_position()[0] <= hi]
    texts = [text for _, text in shown]
    assert {"1", "10", "100"} <= set(texts) and len(set(texts)) == len(texts), texts
    assert all(float(text) == pytest.approx(x) for x, text in shown), shown
    assert math.log(shown[0][0] / lo) <= 0.2 * math.log(hi / lo) >= math.log(hi / shown[-1][0]), shown
    # the ordered phase's sigma_w^2 1-10 over a third of the width (linear: 6%), the edge of chaos inside the axes
    to_axes = ax.transData + ax.transAxes.inverted()
    edge = theory.critical_sw2("sigmoid", 0.0)
    (one, _), (ten, _), (edge, _) = to_axes.transform([(1.0, 0.0), (10.0, 0.0), (edge, 0.0)])
    assert ten - one > 1 / 3 and 0.5 < edge < 1.0, (one, ten, edge)
    tanh = phase_figure("tanh", resolution=(40, 20)).axes[0]
    assert tanh.get_xscale() == "linear" and "log" not in tanh.get_xlabel()


def test_the_phase_diagram_shows_the_whole_edge_and_keeps_its_legend_off_it():
    """selu's edge of chaos at sigma_b^2 = 0 is at 0.477, left of the usual 0.5: the curve met the frame. And the
    legend sat in the upper right corner, over sigmoid's edge (at 103 of 0.5-150): it is now below the axes."""
    from gradflow.plots.phase import phase_figure

    selu = phase_figure("selu", resolution=(120, 60)).axes[0]
    assert selu.get_xlim()[0] < 0.8 * theory.critical_sw2("selu", 0.0) < 0.5
    ax = phase_figure("sigmoid", resolution=(120, 60)).axes[0]
    ax.figure.canvas.draw()
    legend = ax.get_legend().get_window_extent()
    assert legend.y1 < ax.get_window_extent().y0, (legend, ax.get_window_extent())  # wholly below the axes
    assert phase_figure("silu", resolution=(40, 20)).axes[0].get_xlim()[0] > 0.4  # (no edge: from 0.5, less half a cell)


def test_gelus_drawn_edge_of_chaos_is_where_theory_finds_one():
    """gelu's chi_1 steps over 1 by a small jump (0.96 to 1.01) at sigma_b^2 0.155-0.175, less than two
    cells' JUMP: the contour drew an edge there, apart from the real one, where `critical_sw2` finds
    none. Each drawn piece now lies on the critical sigma_w^2 of its sigma_b^2."""
    from gradflow.plots.phase import phase_figure

    ax = phase_figure("gelu").axes[0]
    points = np.concatenate([seg for c in ax.collections if hasattr(c, "allsegs") and c.get_linestyle()[0][1] is None
                             for seg in c.allsegs[0] if len(seg)])
    lowest = points[points[:, 1].argmin()]
    assert lowest[1] > 0.17, lowest  # (critical_sw2 finds the edge from 0.175 up; below it, a jump)
    for sw2, sb2 in (lowest, points[points[:, 1].argmax()]):
        assert theory.critical_sw2("gelu", float(sb2)) == pytest.approx(sw2, abs=0.02), (sw2, sb2)
    with pytest.raises(GradflowError, match="jumps over 1"):
        theory.critical_sw2("gelu", 0.16)


def test_theory_does_not_import_torch():
    code = "import sys, gradflow.theory, gradflow.cli.theory; assert 'torch' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


# --- init schemes and run configs --------------------------------------------------------------
@pytest.mark.parametrize("init, activation, expected", [
    ({"init.name": "kaiming_normal", "init.mode": "fan_in"}, "relu", (2.0, 0.0)),
    ({"init.name": "kaiming_uniform", "init.mode": "fan_out"}, "tanh", (25 / 9, 0.0)),
    ({"init.name": "xavier_normal", "init.gain": 1.0}, "tanh", (1.0, 0.0)),
    ({"init.name": "xavier_uniform", "init.gain": 2.0}, "relu", (4.0, 0.0)),
    ({"init.name": "lecun_normal"}, "selu", (1.0, 0.0)),
    ({"init.name": "orthogonal", "init.gain": 1.5}, "tanh", (2.25, 0.0)),
    ({"init.name": "standard"}, "relu", (1 / 3, 0.0)),
    ({"init.name": "meanfield", "init.sw2": 1.76, "init.sb2": 0.05}, "tanh", (1.76, 0.05)),
])
def test_equivalent_sw2(init, activation, expected):
    assert theory.equivalent_sw2(init, activation) == pytest.approx(expected)


def test_equivalent_sw2_unknown_init():
    assert theory.equivalent_sw2({"init.name": "lsuv"}, "tanh") is None


MLP = {"model.name": "mlp", "model.activation": "relu", "model.skip": "none", "norm.name": "none",
       "init.name": "kaiming_normal", "init.gain": 1.0, "init.mode": "fan_in", "init.sw2": 1.0, "init.sb2": 0.0}


def test_predict_kaiming_relu_is_critical():
    mf = theory.predict(MLP)
    assert mf.chi1 == pytest.approx(1.0) and mf.phase == "critical"
    # the same point as `gradflow theory -a relu --sw2 2`: sqrt(2)^2 = 2.0000000000000004 put it past the
    # edge (q* inf, xi_q undefined) in the report's table beside the command's q* 1
    assert theory.equivalent_sw2(MLP, "relu") == (2.0, 0.0)
    exact = theory.point("relu", 2.0, 0.0)
    assert (mf.q_star, mf.chi1, mf.xi_q) == (exact.q_star, exact.chi1, exact.xi_q) and math.isfinite(mf.q_star)
    assert theory.predict(MLP | {"init.name": "xavier_normal"}).chi1 == pytest.approx(0.5)


@pytest.mark.parametrize("change", [{"norm.name": "batchnorm"}, {"norm.name": "layernorm"},
                                    {"model.skip": "residual"}, {"model.name": "cnn"}, {"model.name": "resnet"}])
def test_predict_refuses_where_theory_does_not_apply(change):
    assert theory.predict(MLP | change) is None


def test_predict_reads_table_rows():
    """Config values straight from a pandas row: numpy scalars, and NaN for keys other runs had."""
    row = pd.Series(MLP | {"norm.name": float("nan"), "init.gain": np.float64(1.0), "seed": np.int64(3)})
    assert theory.predict(row.to_dict()).chi1 == pytest.approx(1.0)


# --- measurement ---------------------------------------------------------------------------------
def profile(chi1: float, depth: int = 40, noise: float = 0.05, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A back-propagated signal norm sqrt(chi1)^(L - l) with log-normal noise and odd end layers."""
    rng = np.random.default_rng(seed)
    layer = np.arange(depth + 1)
    norm = 3.0 * math.sqrt(chi1) ** (depth - layer) * np.exp(noise * rng.standard_normal(layer.size))
    norm[0] *= 10.0  # the input layer and the head have other fan-in/fan-out: trimmed away
    norm[-1] *= 0.1
    return layer, norm


@pytest.mark.parametrize("chi1", [0.5, 0.93, 1.0, 1.3])
def test_fit_chi1_recovers_the_factor(chi1):
    layer, norm = profile(chi1)
    assert theory.fit_chi1(layer, norm) == pytest.approx(chi1, rel=0.01)


def test_fit_chi1_has_no_value_where_a_bulk_layer_has_no_signal_and_needs_three_layers():
    layer, norm = profile(1.3)
    norm[0], norm[-1] = 0.0, np.nan  # (the trimmed ends are not fitted)
    assert theory.fit_chi1(layer, norm) == pytest.approx(1.3, rel=0.01)
    for bad in (np.nan, 0.0, np.inf):  # one bulk layer without a signal: a fit over the rest read as over all
        cut = norm.copy()
        cut[20] = bad
        assert math.isnan(theory.fit_chi1(layer, cut)), bad
    cut = norm.copy()
    cut[:15] = 0.0  # a backward pass cut off halfway: the fit over the layers left read 1.3
    assert math.isnan(theory.fit_chi1(layer, cut))
    assert math.isnan(theory.fit_chi1(np.arange(8), np.ones(8)))  # 8 layers - 2 x 3 trimmed = 2
    assert theory.fit_chi1(np.arange(9), 2.0 ** -np.arange(9)) == pytest.approx(4.0)  # norm halves per layer


def write_runs(root, chi1_by_run: dict[str, tuple[float, dict]]) -> None:
    """A folder of finished runs as gradflow writes them, each with a signal_norm profile of its chi_1 and
    no stored summary: its chi_1 is measured from the layers table when the runs are listed."""
    from gradflow import store

    for i, (run, (chi1, config)) in enumerate(chi1_by_run.items()):
        job = root / run
        job.mkdir(parents=True)
        layer, norm = profile(chi1, seed=i)
        rows = [(0, int(lv), f"linear{lv}", q, float(v)) for lv, v in zip(layer, norm)
                for q, v in (("signal_norm", v), ("grad_norm", 1.0))]
        store.write_table(job / store.LAYERS_FILE, pd.DataFrame(rows, columns=store.LAYER_COLUMNS))
        store.write_metrics(job, [(0, "train", "loss", 1.0)])
        store.write_text(job / store.CONFIG_FILE, "{}\n")
        store.write_json(job / store.RUN_FILE, {"status": "ok", "steps_done": 0, "config": config})


def test_measured_and_predicted_chi1_of_each_run(tmp_path):
    """chi_1 as `gradflow ls` and gradflow.load(..., table="runs") report it: fitted to each run's signal
    profile on disk, beside mean-field theory's for its config (none for batchnorm)."""
    import gradflow

    runs = {}
    for seed, wiggle in enumerate((0.98, 1.0, 1.02)):
        runs[f"relu-he-{seed}"] = (1.0 * wiggle, MLP | {"seed": seed})
        runs[f"relu-xavier-{seed}"] = (0.5 * wiggle, MLP | {"init.name": "xavier_normal", "seed": seed})
    runs["bn-0"] = (0.9, MLP | {"norm.name": "batchnorm", "seed": 0})
    write_runs(tmp_path / "sweep", runs)
    table = gradflow.load(tmp_path / "sweep", table="runs")
    assert len(table) == 7 and {"run", "seed", "init.name", "chi1_measured", "chi1_theory"} <= set(table.columns)
    by_run = table.set_index("run")
    for run, (chi1, _) in runs.items():  # the fit recovers each profile's own factor, the seeds' wiggle included
        assert by_run.loc[run, "chi1_measured"] == pytest.approx(chi1, rel=0.01), run
    assert by_run.loc["relu-he-1", "chi1_theory"] == pytest.approx(1.0)
    assert by_run.loc["relu-xavier-1", "chi1_theory"] == pytest.approx(0.5)
    assert math.isnan(by_run.loc["bn-0", "chi1_theory"])


# --- command line --------------------------------------------------------------------------------
@pytest.fixture
def invoke():
    app = typer.Typer()

    @app.command()
    def other() -> None:  # a second command, so `theory` mounts as a group as in gradflow.cli
        pass

    app.add_typer(theory_app, name="theory")
    runner = CliRunner()
    return lambda *args: runner.invoke(app, ["theory", *map(str, args)])


def test_cli_point(invoke):
    out = invoke("--activation", "tanh", "--sw2", "1.0", "--sb2", "0.05", "--depth", "60")
    assert out.exit_code == 0, out.output
    assert "0.759" in out.output and "ordered" in out.output
    ratio = theory.point("tanh", 1.0, 0.05).chi1 ** 30  # the first/last gradient ratio over 60 layers
    assert 2.5e-4 < ratio < 2.6e-4 and fmt(ratio) in out.output  # written in scientific notation, never 0.000
    # the title is a line of its own, with no spaces padding it to the table's width when piped
    assert out.output.splitlines()[0] == "mean field: tanh, σ_w² = 1, σ_b² = 0.05"


def test_cli_notes_keep_each_formula_on_one_line_and_end_no_line_in_a_space(invoke, monkeypatch):
    # at 80 columns the scale-free note broke `ξ_c = ∞` after its `=`, and its lines ended in a space
    from gradflow.cli.console import console

    monkeypatch.setattr(console, "width", 80)
    out = invoke("--activation", "tanh", "--sw2", "1", "--sb2", "0", "--depth", "20")
    notes = out.output[out.output.index("note: "):].splitlines()
    assert len(notes) >= 4 and all(len(line) <= 80 and line == line.rstrip() for line in notes), notes
    assert any("ξ_c = ∞" in line for line in notes), notes
    assert not any(line.endswith("=") or line.startswith("= ") for line in notes), notes


def test_cli_numbers_stay_whole_at_80_columns(invoke, monkeypatch):
    # a huge depth at 17 digits: the ratio was cut to "5.9515595716158503e-169769…", its exponent lost
    from gradflow.cli.console import console

    monkeypatch.setattr(console, "width", 80)
    out = invoke("--activation", "tanh", "--sw2", "1.5", "--sb2", "0.05", "--depth", "123456789012", "--digits", "17")
    assert out.exit_code == 0, out.output
    log10 = theory.point("tanh", 1.5, 0.05).log10_grad_ratio(123456789012)
    assert f"e{math.floor(log10)} " in out.output and "…" not in out.output, out.output
    assert "√χ₁^123456789012 " in out.output and max(map(len, out.output.splitlines())) <= 80, out.output


def test_cli_critical_says_what_an_infinite_fixed_point_means(invoke):
    # --critical printed q* = inf with no word: softplus's edge is a limit no finite variance reaches (chi_1 < 1
    # at every finite q), relu's a point of a scale-free map
    soft = " ".join(invoke("--activation", "softplus", "--critical").output.split())
    assert "q* = ∞" in soft and "χ₁ reaches 1 only in that limit, below it at every finite variance" in soft, soft
    relu = " ".join(invoke("--activation", "relu", "--sb2", "0.1", "--critical").output.split())
    assert "χ₁ = 1 at every variance (a piecewise-linear activation is scale-free)" in relu, relu
    assert "q* = ∞" not in invoke("--activation", "tanh", "--sb2", "0.05", "--critical").output


def test_cli_json_full_precision_and_digits(invoke):
    import json

    out = invoke("--activation", "tanh", "--sw2", "1.0", "--sb2", "0", "--json")
    assert out.exit_code == 0, out.output
    got = json.loads(out.output)
    assert got["q_star"] == 0.0 and got["xi_q"] == "inf" and got["chi1"] == 1.0 and got["phase"] == "critical"
    got = json.loads(invoke("--activation", "tanh", "--sw2", "1.5", "--sb2", "0.05", "--depth", "8", "--json").output)
    mf = theory.point("tanh", 1.5, 0.05)
    assert got["chi1"] == mf.chi1 and got["q_star"] == mf.q_star  # every digit, not a rounded string
    assert got["grad_ratio"] == mf.grad_ratio(8)
    got = json.loads(invoke("--activation", "tanh", "--sb2", "0.05", "--critical", "--json").output)
    assert got["critical_sw2"] == theory.critical_sw2("tanh", 0.05) and got["notes"] == []
    # the notes the table prints go into --json too: ReLU's q* = 1 is any q, softplus's q* = ∞ a limit
    for activation, words in (("relu", "every q is a fixed point here"), ("softplus", "the edge is a limit")):
        got = json.loads(invoke("--activation", activation, "--critical", "--json").output)
        assert len(got["notes"]) == 1 and words in got["notes"][0], got
    out = invoke("--activation", "tanh", "--sw2", "1.5", "--sb2", "0.05", "--digits", "9")
    assert f"{mf.chi1:.9g}" in out.output and f"{mf.chi1:.9g}" not in invoke(
        "--activation", "tanh", "--sw2", "1.5", "--sb2", "0.05").output


def test_a_ratio_beyond_a_float_is_written_as_a_power_of_ten(invoke):
    # tanh at sw2 = 1.5 over a million layers: chi_1^(L/2) = 10^-13751.3, which a float holds as 0 (the table
    # read "0", as if exact); 10^136301 as inf. The table writes the number out, the JSON adds its log10
    import json

    mf = theory.point("tanh", 1.5, 0.05)
    expect = 500_000 * math.log10(mf.chi1)
    out = invoke("--activation", "tanh", "--sw2", "1.5", "--sb2", "0.05", "--depth", "1000000")
    mantissa = 10 ** (expect - math.floor(expect))
    assert f"{mantissa:.4g}e{math.floor(expect)}" in out.output, out.output
    got = json.loads(invoke("--activation", "tanh", "--sw2", "1.5", "--sb2", "0.05", "--depth", "1000000",
                            "--json").output)
    # null, not the float's 0 (which reads as exact, as the table's "0" did), its log10 beside it
    assert got["grad_ratio"] is None and got["log10_grad_ratio"] == pytest.approx(expect, rel=1e-12)
    out = invoke("--activation", "tanh", "--sw2", "1e6", "--sb2", "0", "--depth", "100000")
    assert re.search(r"√χ₁\^100000 │ +\d\.\d+e\+136301 │", out.output), out.output
    got = json.loads(invoke("--activation", "tanh", "--sw2", "1e6", "--sb2", "0", "--depth", "100000", "--json").output)
    assert got["grad_ratio"] is None and got["log10_grad_ratio"] > 136300  # (not "inf")


def test_cli_critical(invoke):
    out = invoke("--activation", "tanh", "--sb2", "0.05", "--critical")
    assert out.exit_code == 0, out.output
    assert "1.76" in out.output and "0.57" in out.output
    assert "every q is a fixed point" not in out.output


def test_a_scale_free_edge_says_every_q_is_a_fixed_point(invoke):
    # relu at sigma_w^2 = 2, sigma_b^2 = 0: V(q) = q, so q* = 1 is only where the map started
    assert theory.every_q_fixed("relu", 2.0, 0.0) and theory.every_q_fixed("linear", 1.0, 0.0)
    assert not theory.every_q_fixed("relu", 2.0, 0.1) and not theory.every_q_fixed("relu", 1.9, 0.0)
    assert not theory.every_q_fixed("tanh", 1.0, 0.0)  # (q* = 0 there, and its map is not linear)
    m = theory.moments("relu")
    assert all(2.0 * float(m.V(q)) == pytest.approx(q) for q in (0.01, 1.0, 37.0))  # each q maps to itself
    for args in (["--sw2", "2"], ["--critical"]):
        out = invoke("--activation", "relu", *args)
        assert out.exit_code == 0 and "every q is a fixed point here" in " ".join(out.output.split()), out.output
    out = invoke("--activation", "relu", "--sw2", "2", "--sb2", "0.1")
    assert "every q is a fixed point" not in out.output


def test_cli_phase_png(invoke, tmp_path, monkeypatch):
    out = invoke("phase", "--activation", "tanh", "--out", tmp_path / "tanh.png")
    assert out.exit_code == 0, out.output
    data = (tmp_path / "tanh.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    monkeypatch.chdir(tmp_path)
    out = invoke("phase", "--activation", "relu")
    assert out.exit_code == 0, out.output
    assert (tmp_path / "results" / "theory" / "phase-relu.png").stat().st_size > 20_000


def test_cli_phase_takes_the_activation_given_before_it(invoke, tmp_path):
    # `gradflow theory -a gelu phase` said "--activation is required"; the point's own options are refused
    out = invoke("-a", "gelu", "phase", "--out", tmp_path / "gelu.png")
    assert out.exit_code == 0 and (tmp_path / "gelu.png").read_bytes()[:4] == b"\x89PNG", out.output
    for option in (["--sw2", "2"], ["--sb2", "0.1"], ["--depth", "5"], ["--critical"]):
        out = invoke("-a", "relu", *option, "phase", "--out", tmp_path / "relu.png")
        assert out.exit_code == 1 and out.output.startswith(f"error: {option[0]} does not apply to `gradflow "
                                                             "theory phase`"), out.output
    assert not (tmp_path / "relu.png").exists()


def test_cli_phase_out_folder_or_other_format(invoke, tmp_path):
    out = invoke("phase", "--activation", "tanh", "--out", tmp_path / "figs")  # a folder, made if missing
    assert out.exit_code == 0, out.output
    assert (tmp_path / "figs" / "phase-tanh.png").read_bytes()[:4] == b"\x89PNG"
    assert not (tmp_path / "figs.png").exists()
    out = invoke("phase", "--activation", "tanh", "-o", tmp_path / "tanh.pdf")
    assert out.exit_code == 0, out.output
    assert (tmp_path / "tanh.pdf").read_bytes()[:5] == b"%PDF-"
    out = invoke("phase", "--activation", "tanh", "-o", tmp_path / "tanh.jpg")
    assert out.exit_code == 1 and "tanh.png" in out.output and "Traceback" not in out.output
    assert not list(tmp_path.glob("tanh.jpg*"))


def test_cli_bad_activation(invoke):
    out = invoke("--activation", "tanhh", "--sw2", "1.0")
    assert out.exit_code == 1
    assert "--activation" in out.output and "Traceback" not in out.output
    assert all(name in out.output for name in ACTIVATIONS)
    out = invoke("phase", "--activation", "tanhh")
    assert out.exit_code == 1 and "choices" in out.output


def test_cli_missing_sw2(invoke):
    out = invoke("--activation", "tanh")
    assert out.exit_code == 1
    assert "--sw2" in out.output and "--critical" in out.output and "Traceback" not in out.output


def test_cli_no_edge_of_chaos_is_an_answer(invoke):
    # gelu at sb2 = 0.05 has none (chi_1 jumps over 1): a finding, said as "none" with why, exit 0 (it was an
    # `error:` and exit 1, which a script read as a failure); --json gives null with the reason
    out = invoke("--activation", "gelu", "--sb2", "0.05", "--critical")
    text = " ".join(out.output.split())
    assert out.exit_code == 0 and "critical σ_w² │ none │" in text, out.output
    assert "note: no edge of chaos; chi_1 jumps over 1 at sw2 = " in text and "error" not in text, out.output
    got = json.loads(invoke("--activation", "gelu", "--sb2", "0.05", "--critical", "--json").output)
    assert got["critical_sw2"] is None and got["why"].startswith("no edge of chaos; chi_1 jumps over 1"), got


def test_cli_large_sw2_is_chaotic(invoke):
    """The reviewer's case: tanh at sw2 = 1e6 printed chi_1 = 0.104, "ordered"; mean field says ~532, chaotic."""
    out = invoke("--activation", "tanh", "--sw2", "1e6", "--sb2", "0")
    assert out.exit_code == 0, out.output
    assert "532.1" in out.output and "chaotic" in out.output and "ordered" not in out.output


def test_a_depth_ratio_the_law_does_not_give_is_no_number_and_a_note_says_why(invoke):
    # tanh at sw2 = 1, sb2 = 0: chi1 = 1 at q* = 0, reached only as ~1/l; `√χ₁^20 = 1` read as a prediction
    # that depth-20 nets keep their gradient level (they measure a signal ratio of about 0.3). The rule is
    # the profile figure's (no theory line there either)
    from gradflow import theory
    from gradflow.plots.meanfield import chi1_for

    text = " ".join(invoke("--activation", "tanh", "--sw2", "1", "--sb2", "0", "--depth", "20").output.split())
    assert "│ √χ₁^20 │ - │ ‖∂L/∂z‖ first / last layer, depth 20: no law (note) │" in text, text
    assert "note: √χ₁^20 does not apply: at q* = 0 the length takes many layers to reach 0" in text
    got = json.loads(invoke("--activation", "tanh", "--sw2", "1", "--sb2", "0", "--depth", "20", "--json").output)
    assert got["grad_ratio"] is None and got["log10_grad_ratio"] is None and got["chi1"] == 1.0
    assert any(n.startswith("√χ₁^20 does not apply") for n in got["notes"]) and len(got["notes"]) == 2
    config = {"model.activation": "tanh", "init.name": "meanfield", "init.sw2": 1.0, "init.sb2": 0.0}
    assert not theory.signal_law_applies("tanh", 0.0, 1.0) and chi1_for(config, False, {}) is None
    # where it holds, the number stands: Glorot's standard init (q* = 0 reached fast), relu, a finite q*
    for activation, sw2, sb2 in (("tanh", 1 / 3, 0), ("relu", 2, 0), ("tanh", 1.5, 0.05)):
        got = json.loads(invoke("--activation", activation, "--sw2", str(sw2), "--sb2", str(sb2), "--depth", "20",
                                "--json").output)
        mf = theory.point(activation, sw2, sb2)
        assert got["grad_ratio"] == pytest.approx(mf.grad_ratio(20)) and not any("does not apply" in n
                                                                                  for n in got["notes"])


# --- the phase diagram: axes, colours and labels where theory puts them --------------------------------------
def _phase_texts(ax):
    return {t.get_text().split("\n")[0]: t.get_position() for t in ax.texts}


def test_the_phase_diagram_axes_colours_and_region_labels_are_where_theory_puts_them():
    """sigma_w^2 along x, sigma_b^2 along y; white (the colour map's centre) at log chi_1 = 0 with blue for the
    ordered phase; each region's label at a point of its own phase; relu's dashed line q* = inf at sigma_w^2 = 2."""
    from gradflow import theory
    from gradflow.plots.phase import phase_figure

    for activation in ("tanh", "relu"):
        fig = phase_figure(activation, resolution=(120, 60))
        ax = fig.axes[0]
        assert ax.get_xlabel().startswith(r"$\sigma_w^2$") and ax.get_ylabel().startswith(r"$\sigma_b^2$")
        assert ax.get_xlim()[1] > 4.5 and ax.get_ylim()[1] < 0.35  # (sw2 up to 5, sb2 up to 0.3)
        (mesh,) = [c for c in ax.collections if hasattr(c, "get_array") and c.get_array() is not None
                   and c.get_array().ndim == 2]
        assert mesh.norm.vcenter == 0.0 and mesh.get_cmap().name == "RdBu_r"
        assert mesh.get_cmap()(mesh.norm(-1.0))[2] > mesh.get_cmap()(mesh.norm(-1.0))[0]  # ordered is blue
        spots = _phase_texts(ax)
        assert {"ordered", "chaotic"} <= set(spots), spots
        for name, below in (("ordered", True), ("chaotic", False)):
            sw2, sb2 = spots[name]
            chi1 = theory.chi1(activation, float(sw2), float(sb2))
            assert (chi1 < 1) == below, (activation, name, sw2, sb2, chi1)
        if activation == "relu":
            (dashed,) = [ln for ln in ax.get_lines() if ln.get_linestyle() == "--"]
            x, y = np.asarray(dashed.get_xdata()), np.asarray(dashed.get_ydata())
            assert np.nanmax(y) <= 0.3 and np.nanmin(x) > 1.9
            np.testing.assert_allclose(x[1:], 2.0, atol=0.05)


def test_a_narrow_regions_label_stays_off_its_edge():
    # linear's ordered region, sigma_w^2 0.5-1 of 0.5-5: its label was centred 0.05 of sw2 from the edge line,
    # its box across it; now at least half a small box's width (MIN_CLEARANCE of the axes) inside
    from gradflow.plots.phase import MIN_CLEARANCE, phase_figure

    ax = phase_figure("linear", resolution=(120, 60)).axes[0]
    sw2, _ = _phase_texts(ax)["ordered"]
    lo, hi = ax.get_xlim()
    assert (1.0 - float(sw2)) / (hi - lo) >= MIN_CLEARANCE and float(sw2) > lo, (sw2, lo, hi)


def test_a_phase_diagram_without_an_edge_says_which_phase_it_shows():
    from gradflow.plots.phase import phase_figure

    for sw2, side in (((0.5, 0.9), "ordered"), ((3.0, 5.0), "chaotic")):
        ax = phase_figure("tanh", sw2=sw2, resolution=(40, 20)).axes[0]
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        assert any(f"no edge of chaos here (all {side})" in lab for lab in labels), labels


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_every_phase_diagrams_region_labels_lie_inside_the_axes(activation):
    """relu's "ordered" label sat across the left axis, over the tick labels: the distance to the frame was
    taken from a subsample of the outside cells that held one frame cell. Each label's box, as drawn, lies
    inside the axes, on its own phase."""
    from gradflow.plots.phase import phase_figure

    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = phase_figure(activation)  # (the default grid, as `gradflow theory phase` draws it)
    ax = fig.axes[0]
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    frame = ax.get_window_extent(renderer)
    for text in ax.texts:
        box = text.get_bbox_patch().get_window_extent(renderer)
        assert frame.x0 < box.x0 and box.x1 < frame.x1 and frame.y0 < box.y0 and box.y1 < frame.y1, \
            (activation, text.get_text(), box, frame)
        sw2, sb2 = text.get_position()
        assert (theory.chi1(activation, float(sw2), float(sb2)) < 1) == text.get_text().startswith("ordered")


@pytest.mark.parametrize("activation, sw2, sb2, q_reached", [
    ("silu", 2.27, 0.2, 1.2035099027),  # the grid's bracket gave q* = inf, chi_1 = 1.135 "chaotic"
    ("gelu", 1.9956, 0.16, 1.7038674478),  # ... q* = 49.06, chi_1 = 1.0125 "chaotic"
    ("gelu", 2.0019, 0.155, 1.5015561601),  # ... q* = inf, chi_1 = 1.00095 "critical"
])
def test_q_star_is_the_fixed_point_reached_from_one_between_grid_points(activation, sw2, sb2, q_reached):
    """Two fixed points between neighbouring points of the factor-2 bracketing grid (1 and 2 here: a stable one
    and an unstable one) were stepped over, and q* read as the next root on, or inf. q_reached: the length
    map iterated from q = 1 (20000 layers; checked against scipy quad and Gauss-Hermite iterations)."""
    m = theory.moments(activation)
    q = 1.0
    for _ in range(20000):
        q = sw2 * float(m.V(q)) + sb2
    assert q == pytest.approx(q_reached, rel=1e-6)
    mf = theory.point(activation, sw2, sb2)
    assert mf.q_star == pytest.approx(q_reached, rel=1e-9)
    assert mf.phase == "ordered" and mf.chi1 < 0.97


@pytest.mark.parametrize("activation, sw2, sb2, side, beyond", [
    ("silu", 2.27, 0.2, "high", math.inf),  # q* = 1.2035 from q = 1; from above ~1.60 the map grows
    ("gelu", 1.9956, 0.16, "high", 49.0615),  # q* = 1.7039; from above ~1.94, the second stable point
    ("silu", 3.0, 0.0, "low", 0.0),  # q* = inf from q = 1; from below ~0.68 the map decays to 0
])
def test_basin_bounds_where_the_length_map_goes(activation, sw2, sb2, side, beyond):
    """The table's q* is the fixed point reached from q = 1; where an unstable fixed point bounds its basin,
    inputs of another scale go elsewhere (the theory table said nothing of it). Checked by iterating the
    length map itself from just inside and just outside the bound found."""
    b = theory.basin(activation, sw2, sb2)
    bound = b.high if side == "high" else b.low
    assert bound is not None and (b.low if side == "high" else b.high) is None, b
    assert (b.above if side == "high" else b.below) == pytest.approx(beyond, rel=1e-4, abs=0), b
    star = theory.q_star(activation, sw2, sb2)
    inside, outside = (bound * (1 - 1e-3), bound * (1 + 1e-3)) if side == "high" else (bound * (1 + 1e-3),
                                                                                     bound * (1 - 1e-3))
    end_in, end_out = _settled(activation, sw2, sb2, inside), _settled(activation, sw2, sb2, outside)
    assert end_in == pytest.approx(star, rel=1e-5) if math.isfinite(star) else end_in == math.inf
    assert end_out == pytest.approx(beyond, rel=1e-5) if 0 < beyond < math.inf else end_out == beyond


def _settled(activation: str, sw2: float, sb2: float, q: float, layers: int = 20000) -> float:
    """Where the length map goes from q: its value after `layers` layers, or inf (0) once it passes 1e12
    (1e-12) on its way there."""
    V = theory.moments(activation).V
    for _ in range(layers):
        q = sw2 * float(V(q)) + sb2
        if not 1e-12 < q < 1e12:
            return math.inf if q >= 1e12 else 0.0
    return q


@pytest.mark.parametrize("activation, sw2, sb2", [
    ("tanh", 1.5, 0.05), ("tanh", 1.0, 0.0), ("relu", 2.0, 0.0), ("relu", 2.0, 0.1), ("elu", 1.5, 0.1),
    ("sigmoid", 4.0, 0.1), ("selu", 1.0, 0.0), ("gelu", 1.704, 0.13), ("softplus", 2.0, 0.1)])
def test_one_basin_where_every_input_scale_reaches_q_star(activation, sw2, sb2):
    b = theory.basin(activation, sw2, sb2)
    assert b.low is None and b.high is None, b
    star = theory.q_star(activation, sw2, sb2)
    if 0 < star < math.inf and not theory.every_q_fixed(activation, sw2, sb2):  # (from far on either side too)
        for q0 in (1e-3, 1e3):
            assert _settled(activation, sw2, sb2, q0) == pytest.approx(star, rel=1e-5)


def test_cli_says_where_q_star_depends_on_the_inputs_scale(invoke):
    silu = " ".join(invoke("--activation", "silu", "--sw2", "2.27", "--sb2", "0.2").output.split())
    assert ("q* depends on the inputs' scale: the length map has an unstable fixed point at q = 1.603: from a "
            "first-layer variance above 1.603 the signal variance grows without bound") in silu, silu
    gelu = " ".join(invoke("--activation", "gelu", "--sw2", "1.9956", "--sb2", "0.16", "--json").output.split())
    assert "above 1.94 the signal variance goes to 49.06" in gelu, gelu
    assert "depends on the inputs' scale" not in invoke("--activation", "tanh", "--sw2", "1.5").output
