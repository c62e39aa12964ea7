"""schoenholz2017 and pennington2017 at --quick: every computed claim passes and the figures are drawn; a
setting that breaks the paper's condition makes a claim FAIL.

Each experiment's two tests share one results folder, so the breaking run redoes only the runs its
override changes (resume), as a user's second `gradflow reproduce` would.
"""

from __future__ import annotations


import pytest

from gradflow import theory
from tests.reproducing import figures_drawn, reproduce, reproduce_edited, verdicts


@pytest.mark.slow
def test_schoenholz2017_quick_passes(shared):
    outcome = reproduce("schoenholz2017", shared)
    assert len(outcome.claims) == 8 and outcome.passed, verdicts(outcome)  # 6 chi_1 points, the crossing, depth 60
    assert outcome.claim("depth 60").qualitative
    assert {r.source for r in outcome.claims} == {"theory", "paper"}
    figures_drawn(outcome, ["profile-signal-init", "grid-train-acc"])
    # the crossing claims' references are gradflow.theory's values
    assert theory.point("tanh", 1.5, 0.05).chi1 < 1 < theory.point("tanh", 2.0, 0.05).chi1
    # each χ₁ claim's measured cell says the two χ₁ it compares (it gave their relative error alone), and
    # the theory it names is gradflow.theory's; the crossing's names the factor on each side
    cell = outcome.claim("σ_w² = 4.0:").measured.cell()
    assert f"measured, {theory.point('tanh', 4.0, 0.05).chi1:.4g} theory" in cell and cell.startswith("0."), cell
    measured = float(cell.split("(χ₁ ")[1].split(" measured")[0])
    assert abs(measured / theory.point("tanh", 4.0, 0.05).chi1 - 1) == pytest.approx(outcome.claim("σ_w² = 4.0:")
                                                                                    .measured.value, abs=1e-3)
    assert "at init.sw2=1.5, " in outcome.claim("crosses 1 between").measured.cell()


@pytest.mark.slow
def test_schoenholz2017_untrained_grid_fails(shared):
    # no training: every net is at chance (0.1) whatever sigma_w^2, so the edge of chaos cannot stand out;
    # the chi_1 arm (already at train.steps=0) is reused unchanged and still passes
    broken = reproduce("schoenholz2017", shared, "train.steps=0")
    assert not broken.claim("depth 60").passed
    assert sum(r.passed for r in broken.claims) == 7


@pytest.mark.slow
def test_schoenholz2017_with_batchnorm_fails_the_crossing_and_says_why_theory_has_no_value(shared, tmp_path,
                                                                                            monkeypatch):
    # BN re-normalizes every layer: σ_w² no longer sets χ₁ (both sides measure ~1.2), so χ₁ crosses no 1
    # between 1.5 and 2.0 (the old "chaotic side: χ₁ > 1" passed here); and theory has no value for it.
    # (The claims read here are the chi1 arm's, which alone takes BN: the grid arm untrained, the runs the
    # untrained control left in `shared`, reused)
    broken = reproduce_edited("schoenholz2017", shared, tmp_path / "specs", monkeypatch,
                              {"chi1": ["norm=batchnorm"], "grid": ["train.steps=0"]})
    crossing = broken.claim("crosses 1 between")
    assert not crossing.passed and crossing.measured.value < 0, verdicts(broken)
    for r in broken.claims_with("|measured χ₁ / mean-field χ₁ − 1|"):
        assert not r.passed and "no mean-field χ₁ for these runs" in r.measured.note, verdicts(broken)


def test_schoenholz2017_relu_at_its_edge_of_chaos_fails_the_crossing(shared, tmp_path, monkeypatch):
    # ReLU instead of tanh: chi_1 = sigma_w^2 / 2 is exactly 1 at sigma_w^2 = 2.0, so the measured chi_1 sits on 1
    # there (0.0016 above it at width 500), which the old "> 0" passed, along with every chi_1 claim (theory for
    # ReLU's own config); the crossing now needs half the tanh theory's margin. Width 200, no training: cheap.
    # (The claims read here are the chi1 arm's, which alone is edited: the grid arm untrained, reused)
    broken = reproduce_edited("schoenholz2017", shared, tmp_path / "specs", monkeypatch,
                              {"chi1": ["model.activation=relu", "model.width=200", "data.dim=200"],
                               "grid": ["train.steps=0"]})
    crossing = broken.claim("crosses 1 between")
    assert not crossing.passed and abs(crossing.measured.value) < 0.02, verdicts(broken)
    assert all(r.passed for r in broken.claims_with("|measured χ₁ / mean-field χ₁ − 1|")), verdicts(broken)


@pytest.mark.slow
def test_pennington2017_quick_passes(shared):
    outcome = reproduce("pennington2017", shared)
    assert len(outcome.claims) == 7 and outcome.passed, verdicts(outcome)
    figures_drawn(outcome, ["spectrum-tanh", "spectrum-relu"])


def test_pennington2017_off_criticality_fails(shared):
    # sigma_w^2 = 1.2^2 = 1.44: the orthogonal tanh net is chaotic (chi_1 = 1.03, m_1 = chi_1^32 ~ 3), its
    # spectrum spreads and var(s^2) is far above 1. One seed at width 100 keeps this check cheap; it fails
    # for any seed and width.
    broken = reproduce("pennington2017", shared, "init.gain=1.2", "seed=0", "model.width=100", "data.dim=100")
    assert not broken.claim("tanh, orthogonal: var(s²) of the input-output Jacobian").passed


def test_pennington2017_ordered_vanishing_net_fails(shared):
    # sigma_w^2 = 0.8^2 = 0.64: the orthogonal tanh net is ordered, and its Jacobian vanishes over 32 layers
    # (mean s^2 ~ 5e-7 at the quick width): its spectrum is concentrated, at 0, so var(s^2) < 1 passed it and
    # the ratios to the prediction (of the same ordered config) did too. mean(s^2) ~ 1 tells it apart.
    broken = reproduce("pennington2017", shared, "init.gain=0.8", "seed=0", "model.width=100", "data.dim=100")
    mean = broken.claim("tanh, orthogonal: mean(s²) of the input-output Jacobian")
    assert not mean.passed and mean.measured.value < 1e-4, verdicts(broken)
    assert broken.claim("tanh, orthogonal: var(s²) of the input-output Jacobian").passed  # (why it was needed)
    # the ReLU net at gain 0.8 (sigma_w^2 0.64, not its critical 2): its mean(s^2) is ~1e-16; its variance claim,
    # normalized by m_1^2, passed it while it was a bound from below alone
    relu = broken.claim("ReLU, orthogonal: mean(s²)")
    assert not relu.passed and relu.measured.value < 1e-4
    variance = broken.claim("ReLU, orthogonal: var(s²) / L")
    assert not variance.passed and variance.measured.value > 1.5, verdicts(broken)


def test_pennington2017_relu_variance_tells_orthogonal_from_gaussian_weights():
    # "var(s²) / L ≥ 0.5" passed Gaussian weights in the orthogonal arm's place (their prediction is 2 L: 2.495
    # measured at the quick scale); the band stops at 1.5, midway between the two predictions
    from gradflow import reproduce as rep

    (claim,) = [c for c in rep.Spec.load("pennington2017").claims if c["text"].startswith("ReLU, orthogonal: var")]
    assert rep.passes(1.0, claim["expect"])[0] and rep.passes(1.24, claim["expect"])[0]  # (the prediction; quick)
    assert not rep.passes(2.495, claim["expect"])[0] and not rep.passes(2.0, claim["expect"])[0]
    assert not rep.passes(0.3, claim["expect"])[0]  # (an isometry-like spread: no growth with depth)


def test_free_probability_prediction_matches_an_independent_quadrature(run_job):
    """jacobian_free_probability's prediction, redone with Gauss-Hermite (theory uses Gauss-Legendre) along the
    length map from the scaled inputs' q_1, for Gaussian (s1 = -1) weights off the fixed point."""
    import numpy as np
    import pandas as pd

    from gradflow import reproduce as rep
    from gradflow.errors import GradflowError

    depth, sw2, sb2, scale = 3, 1.5, 0.1, 0.7
    job = run_job("data=gaussian", "data.dim=32", "model.width=32", f"model.depth={depth}", "model.activation=tanh",
                  "init=meanfield", f"init.sw2={sw2}", f"init.sb2={sb2}", f"data.scale={scale}", "train.steps=0",
                  "data.n_train=64", "train.batch_size=64", "probe.jacobian=true", "probe.jacobian_inputs=2")
    s2 = pd.read_parquet(job / "jacobian.parquet").query("scope == 'input_output'")["value"].to_numpy() ** 2

    z, w = np.polynomial.hermite_e.hermegauss(200)
    w = w / w.sum()  # E[f(z)], z ~ N(0, 1)
    E = lambda f, q: float(f(np.sqrt(q) * z) @ w)  # noqa: E731
    dphi2 = lambda u: np.cosh(u) ** -4  # noqa: E731  (tanh')^2
    q, m1, spread = sw2 * scale**2 + sb2, 1.0, 0.0
    for _ in range(depth):
        mu1, mu2 = E(dphi2, q), E(lambda u: dphi2(u) ** 2, q)
        m1 *= sw2 * mu1
        spread += mu2 / mu1**2  # - 1 - s1, with s1 = -1 for Gaussian weights
        q = sw2 * E(lambda u: np.tanh(u) ** 2, q) + sb2

    arm = rep.Arm(job.parent)
    var = rep.MEASURES["jacobian_free_probability"](arm, moment="var")
    mean = rep.MEASURES["jacobian_free_probability"](arm, moment="mean")
    assert var.value == pytest.approx(np.var(s2) / (m1**2 * spread), rel=1e-6)
    assert mean.value == pytest.approx(s2.mean() / m1, rel=1e-6)

    with pytest.raises(GradflowError, match="moment"):
        rep.MEASURES["jacobian_free_probability"](arm, moment="median")


def test_free_probability_needs_square_weights(run_job):
    from gradflow import reproduce as rep
    from gradflow.errors import GradflowError

    job = run_job("data=gaussian", "data.dim=16", "model.width=32", "model.depth=2", "train.steps=0",
                  "data.n_train=64", "train.batch_size=64", "probe.jacobian=true", "probe.jacobian_inputs=1")
    with pytest.raises(GradflowError, match="data.dim equal to model.width"):
        rep.MEASURES["jacobian_free_probability"](rep.Arm(job.parent))
