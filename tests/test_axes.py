"""Every sweep axis value composes, builds and trains a few steps; inits have the variances they claim."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from gradflow import activations
from gradflow.config import INIT_CHOICES, compose
from gradflow.models import build
from gradflow.models.init import initialize
from tests.conftest import TINY, layers_of


def _assert_healthy(job_dir):
    rec = json.loads((job_dir / "run.json").read_text())
    assert rec["status"] == "ok", rec.get("error")
    assert rec["steps_done"] == 4
    df = layers_of(job_dir)
    assert set(df["step"]) == {0, 1, 2, 3, 4}
    assert np.isfinite(df["value"]).all()
    assert sorted(df["layer"].unique()) == [0, 1, 2, 3]  # depth 3 hidden layers + the head


@pytest.mark.parametrize("act", list(activations.ACTIVATIONS))
def test_every_activation_runs(run_job, act):
    _assert_healthy(run_job(*TINY, f"model.activation={act}"))


@pytest.mark.parametrize("init", INIT_CHOICES)
def test_every_init_runs_with_residual_and_batchnorm(run_job, init):
    _assert_healthy(run_job(*TINY, f"init={init}", "model.skip=residual", "norm=batchnorm"))


@pytest.mark.parametrize("extra", [["norm=none"], ["norm=batchnorm"], ["norm=layernorm"], ["optim=adam"],
                                   ["model.skip=residual", "model.alpha=0.3"],
                                   ["model.skip=residual", "model.alpha=inv_sqrt_depth"],
                                   ["model.skip=residual", "model.alpha=learnable"],
                                   ["train.grad_clip=0.01"], ["train.clip_value=0.001"], ["probe.every=1"]])
def test_other_axes_run(run_job, extra):
    _assert_healthy(run_job(*TINY, *extra))


def test_learnable_alpha_starts_at_zero_and_learns(run_job):
    cfg = compose([*TINY, "model.skip=residual", "model.alpha=learnable"])
    model = build(cfg, (16,), 10)
    alphas = [h.alpha for h in model.hidden[1:]]
    assert all(isinstance(a, torch.nn.Parameter) and a.item() == 0.0 for a in alphas)
    assert model.hidden[0].residual is False  # the first layer changes width: no skip


def _weights(*overrides, width=400):
    cfg = compose(["data=gaussian", f"model.width={width}", "model.depth=3", *overrides])
    torch.manual_seed(0)
    model = build(cfg, (width,), 10)
    initialize(model, cfg.init, cfg.model.activation)
    return model.probe_points[1].layer  # a square width x width layer


@pytest.mark.parametrize("overrides, variance", [
    (["init=standard"], 1 / (3 * 400)),  # U[-1/sqrt(n), 1/sqrt(n)]
    (["init=xavier_uniform"], 2 / 800),
    (["init=xavier_normal", "init.gain=2.0"], 4 * 2 / 800),
    (["init=kaiming_normal", "model.activation=relu"], 2 / 400),
    (["init=kaiming_uniform", "model.activation=relu"], 2 / 400),
    (["init=kaiming_normal", "model.activation=tanh"], (5 / 3) ** 2 / 400),
    (["init=lecun_normal"], 1 / 400),
    (["init=meanfield", "init.sw2=1.76", "init.sb2=0.05"], 1.76 / 400),
])
def test_init_variances(overrides, variance):
    layer = _weights(*overrides)
    assert layer.weight.var().item() == pytest.approx(variance, rel=0.02)
    if "init=meanfield" in overrides:
        assert layer.bias.var().item() == pytest.approx(0.05, rel=0.25)
    else:
        assert torch.count_nonzero(layer.bias) == 0  # biases start at zero unless the scheme says otherwise


def test_orthogonal_init_is_orthogonal_times_gain():
    w = _weights("init=orthogonal", "init.gain=1.5").weight.detach()
    assert torch.allclose(w @ w.T, 2.25 * torch.eye(w.shape[0]), atol=1e-4)


def test_kaiming_fan_out_mode_uses_the_output_fan():
    cfg = compose(["data=gaussian", "model.width=300", "model.depth=2", "init=kaiming_normal",
                   "init.mode=fan_out", "model.activation=relu"])
    torch.manual_seed(0)
    model = build(cfg, (1000,), 10)
    initialize(model, cfg.init, "relu")
    first = model.probe_points[0].layer.weight  # (300, 1000): fan_out = 300
    assert first.var().item() == pytest.approx(2 / 300, rel=0.03)
    assert not math.isclose(first.var().item(), 2 / 1000, rel_tol=0.3)


def test_a_conv_weights_fans_count_its_kernel_and_fan_out_mode_uses_them():
    """fan_in = in_channels x kernel, fan_out = out_channels x kernel (PyTorch's convention), so a CNN
    under kaiming fan_out has Var(W) = 2 / (out_channels x kernel)."""
    from gradflow.models.init import fans

    assert fans(torch.empty(16, 8, 3, 3)) == (72, 144) and fans(torch.empty(16, 8, 5)) == (40, 80)
    assert fans(torch.empty(300, 1000)) == (1000, 300)
    cfg = compose(["data=mnist1d", "model=cnn", "model.channels=32", "model.depth=3", "init=kaiming_normal",
                   "init.mode=fan_out", "model.activation=relu"])
    torch.manual_seed(0)
    model = build(cfg, (1, 40), 10)
    initialize(model, cfg.init, "relu")
    w = model.probe_points[1].layer.weight  # (32, 32, kernel)
    assert w.dim() == 3 and w.var().item() == pytest.approx(2 / (w.shape[0] * w.shape[2]), rel=0.1)  # (3072 draws)


def test_inv_sqrt_depth_scales_every_residual_branch_by_one_over_root_depth():
    from gradflow.models.mlp import branch_scale

    assert branch_scale("inv_sqrt_depth", 5) == 5 ** -0.5 and branch_scale("0.3", 5) == 0.3
    cfg = compose(["data=gaussian", "model.width=8", "model.depth=5", "model.skip=residual",
                   "model.alpha=inv_sqrt_depth"])
    model = build(cfg, (cfg.data.dim,), 10)
    alphas = [m.alpha for m in model.modules() if getattr(m, "residual", False)]
    assert alphas and all(a == pytest.approx(5 ** -0.5) for a in alphas), alphas


def test_gaussian_test_inputs_are_not_training_inputs():
    """The test split is drawn apart from the training split (a slice of the training rows would make the
    test accuracy a training one)."""
    from gradflow.data import build as build_data

    cfg = compose(["data=gaussian", "data.n_train=64", "data.n_test=32", "train.batch_size=16"])
    d = build_data(cfg.data, torch.device("cpu"))
    assert len(d.x_train) == 64 and len(d.x_test) == 32
    assert torch.cdist(d.x_test.flatten(1), d.x_train.flatten(1)).min() > 1e-3


SEQ = ["train.steps=4", "train.batch_size=16", "train.eval_every=2", "model.hidden=8"]
ADDING = ["data=adding", "data.T=12", "data.n_train=64", "data.n_test=32"]


@pytest.mark.parametrize("extra", [["model=rnn", *ADDING],
                                   ["model=rnn", "model.activation=relu", "model.recurrent_init=identity", *ADDING],
                                   ["model=lstm", "model.forget_bias=1", *ADDING],
                                   ["model=gru", "model.recurrent_init=gaussian", *ADDING],
                                   ["model=lstm", "data=copy", "data.copy_len=3", "data.T=5", "data.n_train=64"],
                                   ["model=rnn", "data=mnist1d"]])
def test_recurrent_families_run(run_job, extra):
    job = run_job(*SEQ, *extra)
    rec = json.loads((job / "run.json").read_text())
    assert rec["status"] == "ok", rec.get("error")
    df = layers_of(job)
    T = 40 if "data=mnist1d" in extra else (5 + 2 * 3 if "data=copy" in extra else 12)
    # one probe point per time step, then the head; dL/dh_t recorded for every t
    assert df["layer"].max() == T and df.loc[df["layer"] == T, "name"].iloc[0] == "head"
    sig = df[(df.quantity == "signal_norm") & (df.step == 0)]
    assert len(sig) == T + 1 and np.isfinite(sig["value"]).all()
    assert set(df.loc[df["layer"] < T, "quantity"]) >= {"signal_norm", "act_mean", "act_std"}


def test_lstm_forget_bias_and_recurrent_init():
    from gradflow.models import build

    cfg = compose(["data=adding", "model=lstm", "model.hidden=6", "model.forget_bias=3", "model.gain=0.5"])
    model = build(cfg, (10, 2), 1)
    initialize(model, cfg.init, "tanh")
    model.post_init(cfg)
    b = model.cell.bias_ih.detach() + model.cell.bias_hh.detach()
    assert torch.all(b[6:12] == 3) and torch.count_nonzero(b[:6]) == 0 and torch.count_nonzero(b[12:]) == 0
    for block in model.cell.weight_hh.detach().split(6):  # each gate's recurrent block is orthogonal x gain
        assert torch.allclose(block @ block.T, 0.25 * torch.eye(6), atol=1e-5)
    cfg = compose(["data=adding", "model=rnn", "model.hidden=6", "model.recurrent_init=identity", "model.gain=0.9"])
    model = build(cfg, (10, 2), 1)
    model.post_init(cfg)
    assert torch.allclose(model.cell.weight_hh.detach(), 0.9 * torch.eye(6))


@pytest.mark.parametrize("overrides, expect", [
    # step: divided by gamma at each milestone
    (["optim.schedule=step", "optim.milestones=[2,4]", "optim.gamma=0.1"], [1.0, 1.0, 0.1, 0.1, 0.01, 0.01]),
    # warm-up: linear over the first 4 updates, then the (constant) schedule
    (["optim.warmup=4"], [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]),
    # cosine: half a period over the run's 10 steps, 0.5 at its middle (a quarter period read 0.707)
    (["optim.schedule=cosine"], [0.5 * (1 + math.cos(math.pi * t / 10)) for t in range(6)]),
])
def test_learning_rate_schedules(overrides, expect):
    from gradflow.train import make_optimizer, make_schedule

    cfg = compose([*overrides, "optim.lr=1.0"])
    opt = make_optimizer([torch.nn.Parameter(torch.zeros(1))], cfg.optim)
    schedule = make_schedule(opt, cfg.optim, 10)
    lrs = []
    for _ in range(6):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        schedule.step()
    assert lrs == pytest.approx(expect)


def test_a_run_logs_the_learning_rate_its_schedule_has_reached(tmp_path):
    # opt/lr at each evaluation: the rate of the update at that step (xiong2020's warm-up arm is read by it)
    import gradflow
    from tests.conftest import execute_job

    job = execute_job(tmp_path, "data=gaussian", "data.n_train=64", "data.n_test=16", "data.dim=8", "model.width=8",
                      "model.depth=2", "train.batch_size=16", "train.steps=40", "train.eval_every=10",
                      "optim.lr=0.5", "optim.warmup=20", "optim.schedule=cosine", "threads=1")
    m = gradflow.load(job, "metrics")
    lr = m[(m["split"] == "opt") & (m["metric"] == "lr")].sort_values("step")
    steps = lr["step"].tolist()
    assert steps == [10, 20, 30, 40]  # (an evaluation after a window of updates: not step 0's)
    # the warm-up's factor (t + 1) / 20 over the first 20 updates times the cosine's over the run's 40
    expect = [0.5 * min(1.0, (t + 1) / 20) * 0.5 * (1 + math.cos(math.pi * t / 40)) for t in steps]
    assert lr["value"].tolist() == pytest.approx(expect)


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_scalar_parameters_take_their_own_rate(name):
    # Fixup's recipe: 0-d parameters at a tenth of the rate, under the same warm-up as the rest
    from gradflow.train import make_optimizer, make_schedule

    cfg = compose([f"optim={name}", "optim.lr=1.0", "optim.scalar_lr_factor=0.1", "optim.warmup=2",
                   "model.skip=residual", "model.alpha=learnable",  # (a net with a scalar parameter, which reads it)
                   *(["optim.momentum=0"] if name == "sgd" else [])])
    vector, scalar = torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(()))
    opt = make_optimizer([scalar, vector], cfg.optim)
    schedule = make_schedule(opt, cfg.optim, 10)
    for _ in range(2):
        vector.grad, scalar.grad = torch.ones(3), torch.ones(())
        opt.step()
        schedule.step()
    # warm-up factors 1/2, then 1; a unit gradient moves Adam's parameters by the rate too
    assert vector.detach().tolist() == pytest.approx([-1.5] * 3, rel=1e-5)
    assert scalar.item() == pytest.approx(-0.15, rel=1e-5)


def test_uniform_inputs_and_scale():
    from gradflow.data import build as build_data

    cfg = compose(["data=gaussian", "data.distribution=uniform01", "data.scale=2.0", "data.dim=50"])
    d = build_data(cfg.data, torch.device("cpu"))
    assert d.x_train.min() >= 0 and d.x_train.max() <= 2.0
    assert d.x_train.mean().item() == pytest.approx(1.0, abs=0.02)
    normal = build_data(compose(["data=gaussian"]).data, torch.device("cpu"))
    assert torch.equal(normal.y_train, build_data(compose(["data=gaussian", "data.scale=3"]).data, "cpu").y_train)


# --- the MLP's multi-layer residual branches and Fixup ---------------------------------------------
def _mlp(*overrides, width=64, d_in=32):
    cfg = compose(["data=gaussian", f"model.width={width}", "model.skip=residual", "model.activation=relu",
                   "init=kaiming_normal", *overrides])
    torch.manual_seed(0)
    model = build(cfg, (d_in,), 10)
    initialize(model, cfg.init, cfg.model.activation)
    model.post_init(cfg)
    return model


def _second_moments(model, x) -> list[float]:
    """mean(h^2) after the input layer and after every block, recomputed by walking the blocks."""
    h, out = x, []
    with torch.no_grad():
        for block in model.hidden:
            h = block(h)
            out.append(h.double().pow(2).mean().item())
    return out


def test_fixup_blocks_start_as_the_identity_over_100_blocks():
    model = _mlp("model.variant=fixup", "model.branch_layers=2", "model.depth=201")
    assert len(model.hidden) == 101  # the input layer + 100 residual blocks of 2 layers
    x = torch.randn(64, 32)
    with torch.no_grad():
        first = model.hidden[0](x)  # the input path: act(W0 x + b0)
        assert torch.equal(model.features(x), first)
        assert torch.count_nonzero(model(x)) == 0  # Fixup zeroes the head too
    moments = _second_moments(model, x)
    assert np.isfinite(moments).all() and moments[-1] == pytest.approx(moments[0], rel=1e-6)


@pytest.mark.parametrize("m, blocks", [(2, 100), (3, 20)])
def test_fixup_scales_branch_layers_by_L_to_the_minus_one_over_2m_minus_2(m, blocks):
    width = 200
    model = _mlp("model.variant=fixup", f"model.branch_layers={m}", f"model.depth={1 + m * blocks}", width=width)
    he_std = math.sqrt(2 / width)  # kaiming_normal for relu, fan_in = width
    scale = blocks ** (-1 / (2 * m - 2))
    for block in model.hidden[1:]:
        for layer in block.layers[:-1]:
            assert layer.layer.weight.std().item() == pytest.approx(he_std * scale, rel=0.05)
            assert layer.layer.bias is None  # Fixup's biases are scalars
        assert torch.count_nonzero(block.layers[-1].layer.weight) == 0


def test_unscaled_unnormalized_residual_variance_triples_per_block():
    # h <- h + W2 relu(W1 h) with He init: E(W1 h)^2 = 2q, E relu^2 = q, E(W2 relu)^2 = 2q, so q -> 3q
    model = _mlp("model.branch_layers=2", "model.depth=41", width=512)
    moments = _second_moments(model, torch.randn(256, 32))
    growth = (moments[-1] / moments[0]) ** (1 / 20)
    assert growth == pytest.approx(3.0, rel=0.05)
    assert all(b > a for a, b in zip(moments, moments[1:]))  # it grows at every block


def test_residual_branches_keep_one_probe_point_per_weight_layer(run_job):
    job = run_job(*TINY, "model.depth=5", "model.skip=residual", "model.branch_layers=2", "model.variant=fixup",
                  "model.activation=relu")
    df = layers_of(job)
    assert json.loads((job / "run.json").read_text())["status"] == "ok"
    names = df.drop_duplicates("layer").sort_values("layer")["name"].tolist()
    assert names == ["linear0", "linear1", "linear2", "linear3", "linear4", "head"]
    acts = set(df.loc[df.quantity == "act_std", "name"])
    assert acts == {"linear0", "linear1", "linear3"}  # a 2-layer branch ends at its weight layer


def test_one_layer_branches_are_todays_block():
    model = _mlp("model.depth=3", "model.alpha=0.5")
    x = torch.randn(8, 32)
    with torch.no_grad():
        h = torch.relu(model.probe_points[0].layer(x))
        for point in model.probe_points[1:3]:
            h = h + 0.5 * torch.relu(point.layer(h))
        assert torch.allclose(model.features(x), h)
