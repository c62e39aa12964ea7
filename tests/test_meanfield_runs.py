"""Gradient propagation at initialization, measured through `gradflow run` itself, against theory.

Mean-field theory: the squared back-propagated signal grows by chi_1 = sw2 E[phi'(sqrt(q*) z)^2] per
layer towards the input. The expected values below are computed by hand from that formula
(ReLU: E[relu'^2] = 1/2 exactly; tanh: Gauss-Hermite quadrature), independently of gradflow.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import layers_of

WIDE = ["data=gaussian", "data.dim=64", "data.n_train=256", "model.depth=60", "model.width=500", "train.steps=0",
        "train.batch_size=256"]


def measured_chi1(job_dir, trim: int = 5) -> float:
    """exp(-slope) of log ||dL/dz_l||^2 against l over the bulk layers: the geometric-mean per-layer ratio."""
    df = layers_of(job_dir)
    s = df[(df.quantity == "signal_norm") & (df.step == 0)].sort_values("layer")["value"].to_numpy()
    layer = np.arange(len(s))
    bulk = (layer >= trim) & (layer < len(s) - trim)
    slope = np.polyfit(layer[bulk], np.log(s[bulk] ** 2), 1)[0]
    return float(np.exp(-slope))


@pytest.mark.parametrize("overrides, chi1", [
    (["model.activation=relu", "init=kaiming_normal"], 1.00),
    (["model.activation=relu", "init=xavier_normal"], 0.50),
    (["model.activation=tanh", "init=meanfield", "init.sw2=1.0", "init.sb2=0.05"], 0.759),
    (["model.activation=tanh", "init=meanfield", "init.sw2=4.0", "init.sb2=0.05"], 1.342),
])
def test_backprop_ratio_matches_mean_field(cli, results, overrides, chi1):
    out = cli("run", *WIDE, *overrides, f"results={results}", "name=mf")
    assert out.exit_code == 0, out.output
    from gradflow.overrides import job_name

    job_dir = results / "mf" / job_name(WIDE + overrides)
    assert measured_chi1(job_dir) == pytest.approx(chi1, rel=0.05)


# gelu at sigma_w^2 = 2, sigma_b^2 = 0.05: its q* (0.12) is far from the default inputs' q_1 = 2.05, and
# the length map needs ~40 layers to settle, so a fit over 60 layers is off unless the inputs start at q*
GELU = ["data=gaussian", "data.dim=64", "data.n_train=64", "train.batch_size=64", "model.depth=60", "model.width=500",
        "train.steps=0", "model.activation=gelu", "init=meanfield", "init.sw2=2", "init.sb2=0.05", "threads=1"]


def test_inputs_at_qstar_put_chi1_on_theory(run_job):
    from gradflow import theory

    chi1 = theory.chi1("gelu", 2.0, 0.05)
    at_qstar = measured_chi1(run_job(*GELU, "data.scale=qstar"))
    default = measured_chi1(run_job(*GELU))
    assert at_qstar == pytest.approx(chi1, rel=0.02)
    assert abs(default / chi1 - 1) > 0.05  # 14% at this seed and size


def test_qstar_scale_puts_the_first_layer_at_the_fixed_point(run_job):
    """Recomputed by hand: q_1 = sw2 * mean(x^2) + sb2 of the first layer's pre-activations equals q*."""
    import torch

    from gradflow import theory
    from gradflow.config import compose
    from gradflow.theory import input_scale
    from gradflow.data import build

    for distribution in ("normal", "uniform01"):
        cfg = compose([*GELU, "data.scale=qstar", f"data.distribution={distribution}", "data.n_train=4096"])
        x = build(cfg.data, torch.device("cpu"), input_scale(cfg)).x_train.double()
        q1 = 2.0 * x.pow(2).mean().item() + 0.05
        assert q1 == pytest.approx(theory.q_star("gelu", 2.0, 0.05), rel=0.02), distribution


def test_input_q_is_the_first_layers_variance_the_data_gives():
    """theory.input_q (the transient's q_0, the Jacobian moments' q_1) against the built inputs: a scale,
    U[0,1] inputs' second moment of 1/3, and qstar, for every distribution; None where it is not known."""
    import torch

    from gradflow import theory
    from gradflow.config import compose
    from gradflow.theory import input_scale
    from gradflow.data import build
    from gradflow.store import flatten

    for scale in ("1.5", "qstar"):
        for distribution in ("normal", "uniform01"):
            cfg = compose([*GELU, f"data.scale={scale}", f"data.distribution={distribution}", "data.n_train=4096"])
            x = build(cfg.data, torch.device("cpu"), input_scale(cfg)).x_train.double()
            measured = 2.0 * x.pow(2).mean().item() + 0.05
            assert theory.input_q(flatten(cfg), 2.0, 0.05) == pytest.approx(measured, rel=0.02), (scale, distribution)
    assert theory.input_q(flatten(compose(["data=mnist1d"])), 2.0, 0.05) is None
    assert theory.input_q({"data.name": "gaussian", "data.scale": "qstar", "model.activation": "relu"}, 3.0, 0.0) is None


@pytest.mark.parametrize("init", ["init=xavier_normal init.gain=1.2", "init=orthogonal init.gain=1.2",
                                  "init=delta_orthogonal init.gain=1.2",
                                  "init=kaiming_normal init.mode=fan_out", "init=meanfield init.sw2=1.5 init.sb2=0.05"])
def test_qstar_scale_puts_a_cnns_first_conv_at_the_fixed_point(init):
    """data.scale=qstar on a CNN: its first conv (1 -> 256 channels, 5 taps) has its own sigma_w^2 under a
    scheme that scales by fan_out (xavier: 2 * 5 / (5 + 1280) of the bulk's; orthogonal: 5 / 256), and the
    inputs were scaled by the bulk's, starting it at 1-3% of q*. Measured: mean z^2 over the positions the
    padding leaves whole, over 4 inits, within 4 standard errors (a unit's 5 squared taps vary by sqrt(2/5))."""
    import torch

    from gradflow import theory
    from gradflow.config import compose
    from gradflow.data import build
    from gradflow.models import build as build_model
    from gradflow.models.init import initialize
    from gradflow.theory import input_scale

    cfg = compose(["model=cnn", "model.channels=256", "model.kernel=5", "model.depth=2", "model.activation=tanh",
                   "data=gaussian", "data.dim=32", "data.n_train=256", "data.scale=qstar", *init.split()])
    x = build(cfg.data, torch.device("cpu"), input_scale(cfg)).x_train.float()
    measured = []
    for seed in range(4):
        torch.manual_seed(seed)
        model = build_model(cfg, tuple(x.shape[1:]), 10)
        initialize(model, cfg.init, "tanh")
        with torch.no_grad():
            z = model.probe_points[0].layer(x.unsqueeze(1))[..., 2:-2].double()
        measured.append(float(z.pow(2).mean()))
    sw2, sb2 = theory.equivalent_sw2(theory.run_keys(cfg), "tanh")
    se = np.sqrt(2.0 / 5) / np.sqrt(256 * len(measured))
    assert np.mean(measured) / theory.q_star("tanh", sw2, sb2) == pytest.approx(1.0, abs=4 * se), init
