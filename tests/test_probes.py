"""Every probe value against an independent recomputation with plain autograd."""

from __future__ import annotations

import copy
import math
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from gradflow import data as datasets
from gradflow import models
from gradflow.config import compose
from gradflow.models.init import initialize
from gradflow import activations
from gradflow.errors import GradflowError
from gradflow.models import ProbePoint
from gradflow.models.discover import discover
from gradflow.probes import core
from gradflow.probes.core import Probes, _activation_stats, _reduction, schedule
from gradflow.probes.quantities import BACKWARD, QUANTITIES, UPDATE, WHERE
from gradflow.train import Batches, make_optimizer, train

CASES = {
    "tanh": ["model.activation=tanh"],
    "relu-residual-layernorm": ["model.activation=relu", "model.skip=residual", "norm=layernorm", "model.alpha=0.5"],
    "sigmoid-batchnorm": ["model.activation=sigmoid", "norm=batchnorm", "optim=adam"],
}


SETUP = ["data=gaussian", "data.n_train=64", "data.n_test=32", "data.dim=12", "model.depth=4", "model.width=10",
         "train.steps=2", "train.batch_size=16", "probe.every=1"]


def _setup(overrides):
    cfg = compose([*SETUP, *overrides])
    torch.manual_seed(cfg.seed)
    data = datasets.build(cfg.data, torch.device("cpu"))
    model = models.build(cfg, data.input_shape, data.n_classes)
    initialize(model, cfg.init, cfg.model.activation)
    return cfg, data, model


@pytest.mark.parametrize("fused", [False, True], ids=["batched", "fused"])
@pytest.mark.parametrize("case", list(CASES))
def test_probe_values_equal_plain_autograd(case, fused, monkeypatch):
    monkeypatch.setattr(core, "FUSED_MIN", 0)  # these tensors are small: fuse them all the same
    cfg, data, model = _setup(CASES[case])
    reference = copy.deepcopy(model)  # the same weights, no probes attached
    probes = Probes(model, cfg.model.activation, fused=fused)
    result = train(model, data, cfg, probes)
    assert result.status == "ok" and result.probe_steps == [0, 1, 2]
    # the fused kernels took the activation statistics and signal norms in the hooks
    assert bool(probes._fused_layouts) == fused

    # replay the same batches on the reference with retain_grad on every layer output
    opt = make_optimizer(reference.parameters(), cfg.optim)
    batches = Batches(len(data.x_train), cfg.train.batch_size, cfg.seed, "cpu")
    points = reference.probe_points
    for step, (values, mask) in enumerate(zip(result.probe_values, result.probe_masks)):
        outputs, acts = {}, {}

        def keep_output(module, inputs, z, k):
            z.retain_grad()
            outputs[k] = z

        hooks = [p.layer.register_forward_hook(lambda m, i, z, k=k: keep_output(m, i, z, k)) for k, p in enumerate(points)]
        hooks += [p.activation.register_forward_hook(lambda m, i, y, k=k: acts.update({k: y.detach()}))
                  for k, p in enumerate(points) if p.activation is not None]
        idx = batches.next()
        loss = F.cross_entropy(reference(data.x_train[idx]), data.y_train[idx])
        opt.zero_grad()
        loss.backward()
        for h in hooks:
            h.remove()
        before = [p.layer.weight.detach().clone() for p in points]
        if step < cfg.train.steps:
            opt.step()
        for k, p in enumerate(points):
            got = dict(zip(probes.quantities, values[k]))
            ok = dict(zip(probes.quantities, mask[k]))
            z = outputs[k]
            expect = {
                "grad_norm": torch.linalg.vector_norm(p.layer.weight.grad),
                "bias_grad_norm": torch.linalg.vector_norm(p.layer.bias.grad),
                "weight_norm": torch.linalg.vector_norm(before[k]),
                "signal_norm": (z.shape[0] * (z.grad**2).sum()).sqrt(),  # RMS over examples of ||dL_i/dz_i||
            }
            if step < cfg.train.steps:
                expect["update_ratio"] = torch.linalg.vector_norm(p.layer.weight.detach() - before[k]) / \
                    torch.linalg.vector_norm(before[k])
            else:
                assert not ok["update_ratio"]  # no update is taken at the last step
            if k in acts:
                y = acts[k]
                expect["act_mean"], expect["act_std"] = y.mean(), y.std()
                if cfg.model.activation == "sigmoid":
                    expect["act_saturated"] = ((y < 0.01) | (y > 0.99)).float().mean()
                if cfg.model.activation == "tanh":
                    expect["act_saturated"] = (y.abs() > 0.99).float().mean()
                if cfg.model.activation == "relu":
                    expect["act_dead"] = (y == 0).float().mean()
            else:
                assert p.activation is None and not ok["act_mean"]
            for q, v in expect.items():
                assert ok[q], (step, k, q)
                assert got[q] == pytest.approx(float(v), rel=1e-4, abs=1e-7), (case, step, k, q)
            # quantities that do not apply are masked out rather than stored as made-up numbers
            assert set(q for q in probes.quantities if ok[q]) == set(expect), (case, step, k)


def test_unprobed_steps_leave_no_hooks_armed():
    cfg, data, model = _setup(["probe.every=2", "train.steps=3"])
    probes = Probes(model, cfg.model.activation)
    result = train(model, data, cfg, probes)
    assert result.probe_steps == [0, 2, 3]
    assert not probes.armed
    assert not any(m._forward_hooks for m in model.modules())  # released after the last probed step
    assert all(p.tap.tap is None for p in model.probe_points if p.tap is not None)  # and every tap


def test_schedule_always_has_init_and_end():
    assert schedule(0, 0, 30) == [0]
    assert schedule(10, 3, 30) == [0, 3, 6, 9, 10]
    log = schedule(1000, 0, 30)
    assert log[0] == 0 and log[-1] == 1000 and 20 <= len(log) <= 30  # at most probe.points steps
    # where the log-spaced steps round to distinct integers there are exactly probe.points of them
    assert len(schedule(10**6, 0, 20)) == 20 and schedule(10**6, 0, 20)[1] == 1
    assert len(schedule(10**6, 0, 2)) == 2 and schedule(10**6, 0, 1) == [0, 10**6]
    assert np.all(np.diff(log) > 0)
    gaps = np.diff(log)
    assert gaps[-1] > gaps[1]  # denser early, where things change fastest


def test_tables_are_assembled_by_name_whatever_the_column_order():
    cfg, data, model = _setup(["model.activation=relu"])
    reordered = list(reversed(QUANTITIES))[::2] + list(reversed(QUANTITIES))[1::2]
    got = []  # both orders on identical copies of the model and data
    for order in (list(QUANTITIES), reordered):
        m = copy.deepcopy(model)
        probes = Probes(m, cfg.model.activation, quantities=order)
        result = train(m, data, cfg, probes)
        got.append({(s, k, q): (v[k, j], ok[k, j]) for s, v, ok in zip(result.probe_steps, result.probe_values,
                                                                      result.probe_masks)
                    for k in range(len(probes.names)) for j, q in enumerate(order)})
    assert got[0].keys() == got[1].keys()
    for key, (v, ok) in got[0].items():
        assert ok == got[1][key][1], key
        if ok:
            assert v == pytest.approx(got[1][key][0], rel=1e-6), key


def test_the_registry_is_complete_and_loads_without_torch():
    for q in QUANTITIES.values():
        assert q.where in WHERE and q.when in (BACKWARD, UPDATE) and q.label and q.title and q.meaning
    code = "import sys, gradflow.probes, gradflow.probes.quantities; assert 'torch' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0
    with pytest.raises(GradflowError, match="choices: grad_norm"):
        Probes([], quantities=["grad_nrom"])


def test_activation_statistics_stay_exact_for_a_large_mean_and_mixed_activations():
    torch.manual_seed(0)
    y = torch.stack([1000.0 + 0.01 * torch.randn(64, 32), torch.rand(64, 32), torch.relu(torch.randn(64, 32))])
    specs = [activations.get(a) for a in ("tanh", "sigmoid", "relu")]
    bounds = torch.tensor([s.saturation or (-math.inf, math.inf) for s in specs])
    stats = _activation_stats(y.clone().flatten(1), _reduction(specs, bounds, torch.empty(3, 64 * 32)))
    for k in range(3):
        assert float(stats["sum"][k] / (64 * 32)) == pytest.approx(float(y[k].mean()), rel=1e-6)
        assert float(stats["std"][k]) == pytest.approx(float(y[k].std()), rel=1e-4)
    assert stats["saturated"][0] == (y[0].abs() > 0.99).sum()
    assert stats["saturated"][1] == ((y[1] < 0.01) | (y[1] > 0.99)).sum()
    assert stats["dead"][2] == (y[2] == 0).sum() and stats["dead"][2] > 0


def test_the_fused_kernels_match_float64_statistics_for_a_large_mean_and_mixed_activations():
    from gradflow.probes import fused

    torch.manual_seed(0)
    y = [1000.0 + 0.01 * torch.randn(64, 32), torch.rand(64, 32), torch.relu(torch.randn(64, 32)),
         torch.tensor([1.0, float("nan"), 0.0])]
    bounds = [(-0.99, 0.99), (0.01, 0.99), (-math.inf, math.inf), (-1.0, 1.0)]
    saturating, dying = (fused.MAGNITUDE, fused.OUTSIDE, fused.OUTSIDE_AND_ZEROS), (fused.ZEROS, fused.OUTSIDE_AND_ZEROS)
    for t, (lo, hi) in zip(y, bounds):
        for dtype in (torch.float32, torch.float64):
            x = t.to(dtype)
            wide = dtype is torch.float64
            d = x.double()
            saturated, dead = int(((d < lo) | (d > hi)).sum()), int((d == 0).sum())
            # each loop counts what it is asked to, and only that (|v| > hi where the bounds are symmetric)
            for counts in (fused.SUM, fused.MAGNITUDE, fused.OUTSIDE, fused.ZEROS, fused.OUTSIDE_AND_ZEROS):
                if counts == fused.MAGNITUDE and lo != -hi:
                    continue
                out, at = np.zeros(4), np.zeros(4)
                fused.activation_stats(x.numpy().reshape(-1), lo, hi, counts, out)
                fused.activation_stats_at(x.data_ptr(), x.numel(), wide, lo, hi, counts, at)  # (by address, as the hooks)
                np.testing.assert_array_equal(at, out)
                assert out[0] == pytest.approx(float(d.sum()), rel=1e-12, nan_ok=True)
                assert math.sqrt(out[1] / (x.numel() - 1)) == pytest.approx(float(d.std()), rel=1e-9, nan_ok=True)
                assert out[2] == (saturated if counts in saturating else 0)
                assert out[3] == (dead if counts in dying else 0)
            # more values than an int32 counts go through the int64 loop, which takes both counts
            long = np.zeros(4)
            fused._sum_and_counts_int64(x.numpy().reshape(-1), lo, hi, long)
            np.testing.assert_array_equal(long[[0, 2, 3]], out[[0, 2, 3]])  # (out: both counts, the last loop's)
            squares = fused.squared_norm(x.numpy().reshape(-1))
            assert squares == pytest.approx(float((d * d).sum()), rel=1e-12, nan_ok=True)
            assert fused.squared_norm_at(x.data_ptr(), x.numel(), wide) == pytest.approx(squares, nan_ok=True)
    assert out[2] == 0 and out[3] == 1 and math.isnan(out[0])  # NaN: neither saturated nor dead, the sums NaN
    # each activation's loop: tanh's symmetric bounds by magnitude, sigmoid's asymmetric ones, ReLU's zeros
    assert [fused.counts_for(lo, hi, die) for lo, hi, die in [(-0.99, 0.99, False), (0.01, 0.99, False),
                                                              (-math.inf, math.inf, True), (-math.inf, math.inf, False),
                                                              (0.0, 6.0, True)]] == \
        [fused.MAGNITUDE, fused.OUTSIDE, fused.ZEROS, fused.SUM, fused.OUTSIDE_AND_ZEROS]

    # a transposed, expanded or strided output reaches the kernels as its values, in the layout they are compiled for
    cfg, _, model = _setup(["model.activation=tanh"])
    probes = Probes(model, cfg.model.activation, fused=True)
    probes.arm()
    strided = (torch.randn(10, 16).t(), torch.randn(10).expand(16, 10), torch.randn(40)[::2],
               torch.randn(16, 10)[:, :1], torch._neg_view(torch.randn(8) + 0.5))  # (its values are -x)
    for y in strided:
        probes._reset()  # each its own probed step (two calls in one step make one batch of both)
        probes._on_activation(1)(None, (), y)
        d = y.double()
        assert probes._fused_acts[1][:2] == pytest.approx([float(d.sum()), float(((d - d.mean()) ** 2).sum())])
    # the same for the norms the kernels take after the backward pass (weights, update directions), by address
    assert probes._norms_of(list(strided)).tolist() == pytest.approx([float(t.double().norm()) for t in strided])
    wide = [t.double() for t in strided]
    assert probes._norms_of(wide).tolist() == pytest.approx([float(t.norm()) for t in wide], rel=1e-12)
    # one compiled version of each kernel the probes call (another would be compiled inside a probed step)
    for kernel in (fused.activation_stats_at, fused.squared_norm_at, fused.squared_norms_at):
        assert len(kernel.signatures) == 1, kernel.signatures


@pytest.mark.parametrize("fused", [False, True], ids=["batched", "fused"])
def test_an_output_that_gets_no_gradient_has_no_signal(fused):
    """A layer whose node has two outputs, only the second reaching the loss: the pre-hook sees no
    gradient for the first, and its signal is masked rather than made up (or crashing the backward)."""
    from gradflow.models import ProbePoint

    class Split(torch.nn.Module):  # e.g. a value and a gate from one product
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.randn(8, 4))

        def forward(self, x):
            return (x @ self.weight.t()).chunk(2, -1)

    torch.manual_seed(0)
    split, head = Split(), torch.nn.Linear(4, 3)
    probes = Probes([ProbePoint("split", split, None), ProbePoint("head", head, None)], fused=fused)
    probes.arm()
    x = torch.randn(16, 4)
    F.cross_entropy(head(split(x)[1]), torch.randint(0, 3, (16,))).backward()
    probes.after_backward()
    values, mask, _ = probes.fetch()
    j = probes.quantities.index("signal_norm")
    assert not mask[0, j] and mask[1, j]


def test_fused_and_batched_points_mix_in_one_step_under_partial_autocast():
    """Under autocast the first layer's output and signal are bfloat16, which the fused kernels do not read:
    the probes keep those for the batched pass and fuse the rest, the small last layer's too, in the same
    step."""
    from gradflow.models.discover import discover

    class HalfThenFull(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.Tanh(), torch.nn.Linear(64, 64),
                                           torch.nn.Tanh(), torch.nn.Linear(64, 10))

        def forward(self, x):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                h = self.net[1](self.net[0](x))
            return self.net[4](self.net[3](self.net[2](h.float())))

    torch.manual_seed(0)
    model, x, y = HalfThenFull(), torch.randn(256, 32), torch.randint(0, 10, (256,))
    probes = Probes(discover(model, x), fused=True)
    outs, acts = {}, {}

    def keep(k, z):
        z.retain_grad()
        outs[k] = z

    for k in (0, 2, 4):
        model.net[k].register_forward_hook(lambda m, i, z, k=k: keep(k // 2, z))
    for k in (1, 3):
        model.net[k].register_forward_hook(lambda m, i, a, k=k: acts.update({k // 2: a.detach()}))
    probes.arm()
    F.cross_entropy(model(x), y).backward()
    probes.after_backward()
    values, mask, _ = probes.fetch()
    got = {q: values[:, j] for j, q in enumerate(probes.quantities)}
    assert [outs[k].grad.dtype for k in range(3)] == [torch.bfloat16, torch.float32, torch.float32]  # the premise
    assert list(probes._fused_layouts) == [((1, 2), (1,))]  # fused: signals 1 and 2, activation 1
    for k, z in outs.items():
        assert got["signal_norm"][k] == pytest.approx(float(z.grad.double().norm()) * 256 ** 0.5, rel=1e-5), k
    for k, a in acts.items():
        assert got["act_std"][k] == pytest.approx(float(a.double().std()), rel=1e-5), k
        assert got["act_mean"][k] == pytest.approx(float(a.double().mean()), rel=1e-4, abs=1e-7), k
        assert got["act_saturated"][k] == pytest.approx(float((a.double().abs() > 0.99).double().mean())), k


def test_the_fused_kernels_load_where_a_run_probes_enough_cpu_steps(monkeypatch):
    """fused=None: a loop that does not say how many steps it probes (a Recorder) loads the kernels at its
    FUSED_AFTER-th probed step and fuses from the next; train(), which knows, from the first; histograms
    and fused=False never."""
    monkeypatch.setattr(core, "FUSED_AFTER", 3)
    monkeypatch.setattr(core, "FUSED_MIN", 0)
    cfg, data, model = _setup(["model.activation=tanh", "train.steps=4"])
    reference = copy.deepcopy(model)
    probes = Probes(model, cfg.model.activation)
    fused_at = []
    batches = Batches(len(data.x_train), 16, 0, "cpu")
    for step in range(5):
        probes.arm()
        idx = batches.next()
        F.cross_entropy(model(data.x_train[idx]), data.y_train[idx]).backward()
        fused_at.append(probes._fused_units[1] > 0)  # the hooks took point 1's statistics
        probes.after_backward()
        probes.fetch()
        model.zero_grad()
    assert fused_at == [False, False, False, True, True] and probes.fused is True

    # train() knows how many steps it probes: with 5 the first loads the kernels, the next four use them; with
    # 2 never; histograms and fused=False never
    for kwargs, steps, fuses in [({}, 4, True), ({}, 1, False), ({"histograms": True}, 4, False),
                                 ({"fused": False}, 4, False)]:
        run_model = copy.deepcopy(reference)
        probes = Probes(run_model, cfg.model.activation, **kwargs)
        fused_at = []
        result = train(run_model, data, compose([*SETUP, "model.activation=tanh", f"train.steps={steps}"]), probes,
                       lambda t, n: fused_at.append(bool(probes._fused_layouts)))
        assert result.status == "ok" and fused_at == [False] + [fuses] * steps, (kwargs, steps)
        assert probes.fused_steps == (steps if fuses else 0)
    # a net whose tensors are all below FUSED_MIN (an LSTM's many small states) never loads them
    monkeypatch.setattr(core, "FUSED_MIN", 10**6)
    run_model = copy.deepcopy(reference)
    probes = Probes(run_model, cfg.model.activation)
    result = train(run_model, data, compose([*SETUP, "model.activation=tanh", "train.steps=4"]), probes)
    assert result.status == "ok" and probes.fused is None and probes.fused_steps == 0
    # what the kernels take: CPU float32 and float64 tensors of FUSED_MIN values or more (not on a GPU, here
    # the meta device; not bfloat16; not empty)
    monkeypatch.setattr(core, "FUSED_MIN", 100)
    assert core._fusable(torch.empty(100)) and core._fusable(torch.empty(10, 10, dtype=torch.float64))
    assert not any(core._fusable(t) for t in (torch.empty(99), torch.empty(100, device="meta"),
                                              torch.empty(100, dtype=torch.bfloat16), None))
    monkeypatch.setattr(core, "FUSED_MIN", 0)
    assert not core._fusable(torch.empty(0))


def test_where_the_fused_kernels_cannot_load_a_run_stays_batched(monkeypatch):
    """numba may import yet fail to compile or cache (no writable cache folder): the probes then stay batched,
    and asking for the kernels outright says why in one line."""
    from gradflow.probes import fused

    def fail():
        raise RuntimeError("cannot cache function 'activation_stats': no locator available")

    monkeypatch.setattr(fused, "warm", fail)
    monkeypatch.setattr(core, "FUSED_AFTER", 1)
    monkeypatch.setattr(core, "FUSED_MIN", 0)
    cfg, data, model = _setup(["model.activation=tanh"])
    probes = Probes(model, cfg.model.activation)
    assert train(model, data, cfg, probes).status == "ok" and probes.fused is False and probes.fused_steps == 0
    with pytest.raises(GradflowError, match="fused probe kernels failed to load .*no locator available"):
        Probes(model, cfg.model.activation, fused=True)


def test_a_float64_models_activation_statistics_are_taken_in_float64():
    """The batched path reduced float64 activations in float32: a mean of 1000 with spread 0.01 came back
    with act_std 2e-5 off."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 64), torch.nn.ReLU(), torch.nn.Linear(64, 3)).double()
    with torch.no_grad():
        model[0].weight.mul_(1e-3)
        model[0].bias.fill_(1000.0)
    x = torch.randn(256, 8, dtype=torch.float64)
    from gradflow.models.discover import discover

    probes = Probes(discover(model, x), fused=False)
    acts = []
    model[1].register_forward_hook(lambda m, i, y: acts.append(y.detach()))
    probes.arm()
    F.cross_entropy(model(x), torch.randint(0, 3, (256,))).backward()
    probes.after_backward()
    values, _, _ = probes.fetch()
    std = values[0, probes.quantities.index("act_std")]
    assert std == pytest.approx(float(acts[-1].std()), rel=1e-9) and 1e-4 < std < 1e-2  # 1e-7 of the mean


@pytest.mark.cuda
@pytest.mark.parametrize("net", [
    ["norm=batchnorm", "model.activation=sigmoid"],
    # gradients ~1e-31 at the input: step 0 recomputes the norms beyond float32's range with one more copy,
    # step 3 takes them in float64 in the step
    ["model.activation=sigmoid", "model.depth=50", "init=xavier_normal"],
])
def test_an_unprobed_step_never_syncs_and_a_probed_step_syncs_once(net):
    import warnings

    # batch 16 of 64 examples: step 4 starts an epoch, whose permutation is copied to the device without a sync
    cfg, data, model = _setup(["train.steps=6", "probe.every=3", "train.eval_every=1000", "train.check_every=1000",
                               "train.batch_size=16", *net])
    dev = torch.device("cuda")
    data = datasets.build(cfg.data, dev)
    model = model.to(dev)
    probes = Probes(model, cfg.model.activation)
    per_step = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            seen = 0

            def on_step(t, steps):
                nonlocal seen
                per_step[t] = len(caught) - seen
                seen = len(caught)

            train(model, data, cfg, probes, on_step)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    # steps 0 and 6 also evaluate; 1, 2, 4, 5 are plain steps and 3 is probed
    assert [per_step[t] for t in (1, 2, 4, 5)] == [0, 0, 0, 0], per_step
    assert per_step[3] == 1, per_step


@pytest.mark.parametrize("fused", [False, True], ids=["batched", "fused"])
@pytest.mark.parametrize("case, overrides", [
    ("vanishing", ["model.activation=sigmoid", "model.depth=50", "init=xavier_normal"]),  # ~1e-31 at the input
    ("exploding", ["model.activation=relu", "model.depth=40", "init=orthogonal", "init.gain=5"]),  # 3.5^40 ~ 1e22
])
def test_norms_beyond_float32s_range_are_exact(case, overrides, fused, monkeypatch):
    """float32 squares underflow below ~1e-19 and overflow above ~1e19 per entry: the probes must still
    report the float64 norms of the float32 gradients, signals and activations, not 0 or inf."""
    monkeypatch.setattr(core, "FUSED_MIN", 0)
    cfg, data, model = _setup([*overrides, "train.steps=0", "model.width=16"])
    reference = copy.deepcopy(model)
    probes = Probes(model, cfg.model.activation, fused=fused)
    result = train(model, data, cfg, probes)
    values = result.probe_values[0]
    got = {q: values[:, j] for j, q in enumerate(probes.quantities)}

    acts, outputs = {}, {}
    points = reference.probe_points
    hooks = [p.activation.register_forward_hook(lambda m, i, y, k=k: acts.update({k: y.detach()}))
             for k, p in enumerate(points) if p.activation is not None]

    def keep_output(k, z):
        z.retain_grad()
        outputs[k] = z

    hooks += [p.layer.register_forward_hook(lambda m, i, z, k=k: keep_output(k, z)) for k, p in enumerate(points)]
    idx = Batches(len(data.x_train), cfg.train.batch_size, cfg.seed, "cpu").next()
    F.cross_entropy(reference(data.x_train[idx]), data.y_train[idx]).backward()
    for h in hooks:
        h.remove()
    grads = np.array([float(torch.linalg.vector_norm(p.layer.weight.grad.double())) for p in points])
    signals = np.array([float(len(z) ** 0.5 * torch.linalg.vector_norm(z.grad.double())) for z in outputs.values()])
    assert got["signal_norm"] == pytest.approx(signals, rel=1e-5, abs=0)
    if case == "vanishing":
        assert grads[0] < 1e-25 and grads[0] > 0  # the premise: far below float32's squares
        assert signals[0] < 1e-25
        assert got["grad_norm"] == pytest.approx(grads, rel=1e-5, abs=0)
        # the loop's own per-parameter gradient norms (split "grad") too
        logged = {name: v for step, split, name, v in result.metrics if split == "grad" and step == 0}
        first = dict(reference.named_parameters())
        name = next(n for n, p in first.items() if p is points[0].layer.weight)
        assert logged[name] == pytest.approx(grads[0], rel=1e-5, abs=0)
    else:
        std = {k: float(y.double().std()) for k, y in acts.items()}
        assert max(std.values()) > 1e20  # the premise: squares overflow float32
        for k, s in std.items():
            assert got["act_std"][k] == pytest.approx(s, rel=1e-5), k
        assert np.isfinite(got["grad_norm"]).all()
        assert got["grad_norm"] == pytest.approx(grads, rel=1e-5, abs=0)


@pytest.mark.parametrize("case, overrides, lr", [
    ("vanishing", ["model.activation=sigmoid", "model.depth=50", "init=xavier_normal"], 0.01),
    ("exploding", ["model.activation=relu", "model.depth=40", "init=orthogonal", "init.gain=5"], 0.0),  # stays finite
])
def test_norms_beyond_float32s_range_cost_one_more_copy_at_the_first_probed_step_only(case, overrides, lr,
                                                                                      monkeypatch):
    """The first probed step recomputes the norms float32 cannot hold with one more host copy; from the next
    on, the probes take them in float64 on the device in the step and bring them back in the one copy
    (on a GPU: still one sync per probed step), and the values stay exact."""
    cfg, data, model = _setup([*overrides, "model.width=16"])
    probes = Probes(model, cfg.model.activation)
    more = []  # the tensors of each extra copy
    recompute = core.float64_norms
    monkeypatch.setattr(core, "float64_norms", lambda tensors: more.append(len(tensors)) or recompute(tensors))
    acts = {}
    for k, p in enumerate(model.probe_points):
        if p.activation is not None:
            p.activation.register_forward_hook(lambda m, i, y, k=k: acts.update({k: y.detach().double()}))
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    batches = Batches(len(data.x_train), 16, 0, "cpu")
    column = {q: j for j, q in enumerate(probes.quantities)}
    for step in range(4):
        probes.arm()
        idx = batches.next()
        opt.zero_grad()
        F.cross_entropy(model(data.x_train[idx]), data.y_train[idx]).backward()
        grads = np.array([float(torch.linalg.vector_norm(p.layer.weight.grad.double())) for p in model.probe_points])
        std = {k: float(y.std()) for k, y in acts.items()}
        probes.after_backward(optimizer=opt)
        opt.step()
        probes.after_update()
        values, mask, _ = probes.fetch()
        assert values[:, column["grad_norm"]] == pytest.approx(grads, rel=1e-5, abs=0), step
        for k, s in std.items():
            assert values[k, column["act_std"]] == pytest.approx(s, rel=1e-5), (step, k)
        assert len(more) == 1 and more[0] > 0, (step, more)  # the first step's copy, and no other
    if case == "vanishing":
        assert grads[0] < 1e-25  # the premise: far below float32's squares
    else:
        assert max(std.values()) > 1e20


def test_a_float64_models_norms_are_never_recomputed(monkeypatch):
    """float64 norms hold a vanishing net's 1e-31 as they are: no float64 recomputation, no extra copy."""
    cfg, data, model = _setup(["model.activation=sigmoid", "model.depth=50", "init=xavier_normal", "model.width=16"])
    model = model.double()
    data.x_train, data.x_test = data.x_train.double(), data.x_test.double()
    more = []
    recompute = core.float64_norms
    monkeypatch.setattr(core, "float64_norms", lambda tensors: more.append(len(tensors)) or recompute(tensors))
    probes = Probes(model, cfg.model.activation)
    result = train(model, data, cfg, probes)
    got = result.probe_values[-1][:, probes.quantities.index("grad_norm")]
    assert 0 < got[0] < 1e-25 and not more  # (nor the loop's own norms at its evaluation steps)
    assert got == pytest.approx([float(p.layer.weight.grad.norm()) for p in model.probe_points], rel=1e-12)


def test_half_precision_norms_are_taken_in_float32_or_with_float64_tensors_in_float64():
    h = torch.full((64, 64), 1100.0, dtype=torch.float16)  # norm 70400: beyond float16's 65504
    b = torch.full((10,), 0.1, dtype=torch.bfloat16)
    got = Probes._norms([h, b])
    assert got.dtype == torch.float32
    assert got.tolist() == pytest.approx([70400.0, float(b.double().norm())], rel=1e-5)  # (float16: inf)
    got = Probes._norms([h, torch.ones(4, dtype=torch.float64)])
    assert got.dtype == torch.float64 and got.tolist() == [70400.0, 2.0]


# plain SGD's update is read from its state after the step; the others come from a copy of the weights
UPDATES = {
    "sgd": dict(momentum=0.0),
    "sgd-momentum": dict(momentum=0.9),
    "sgd-momentum-weight-decay-dampening": dict(momentum=0.9, weight_decay=0.01, dampening=0.3),
    "sgd-maximize": dict(momentum=0.0, maximize=True),
    "sgd-nesterov-maximize": dict(momentum=0.9, nesterov=True, maximize=True),
    "sgd-nesterov": dict(momentum=0.9, nesterov=True),
    # torch's foreach step (CUDA's default) adds momentum * buffer into .grad itself: read as 1.47x the update
    "sgd-nesterov-foreach (copied)": dict(momentum=0.9, nesterov=True, foreach=True),
    "sgd-weight-decay (copied)": dict(momentum=0.0, weight_decay=0.01),
    "adam (copied)": None,
}


def _probed_steps(model, opt, probes, data, steps, lr_after=None):
    """Probe `steps` SGD steps of `model`; each with the float64 difference of its float32 weights."""
    batches = Batches(len(data.x_train), 16, 0, "cpu")
    tables = []
    for _ in range(steps):
        before = [w.detach().double().clone() for w in probes.weights]
        probes.arm()
        idx = batches.next()
        opt.zero_grad()
        F.cross_entropy(model(data.x_train[idx]), data.y_train[idx]).backward()
        probes.after_backward(optimizer=opt)
        opt.step()
        if lr_after is not None:  # a schedule moves lr after the step, before the probes read the update
            opt.param_groups[0]["lr"] = lr_after
        probes.after_update()
        values, mask, _ = probes.fetch()
        applied = np.array([float(torch.linalg.vector_norm(w.detach().double() - b) / torch.linalg.vector_norm(b))
                            for w, b in zip(probes.weights, before)])
        norms = [float(torch.linalg.vector_norm(b)) for b in before]
        at = values[probes.weight_points]
        tables.append((at[:, probes.quantities.index("update_ratio")], applied,
                       at[:, probes.quantities.index("weight_norm")], norms))
    return tables


@pytest.mark.parametrize("fused", [False, True], ids=["batched", "fused"])
@pytest.mark.parametrize("name", list(UPDATES))
def test_the_update_ratio_is_the_weights_difference_whatever_the_optimizer(name, fused):
    """The update ratio, and the weights' norm before the step, from torch's norms or (loaded) the fused
    kernels' (SGD's update read from its state, the others' from a copy of the weights)."""
    cfg, data, model = _setup(["model.activation=tanh"])
    probes = Probes(model, cfg.model.activation, fused=fused)
    kw = UPDATES[name]
    opt = torch.optim.Adam(model.parameters(), lr=1e-3) if kw is None else \
        torch.optim.SGD(model.parameters(), lr=0.05, **kw)
    for got, applied, norms, before in _probed_steps(model, opt, probes, data, steps=3, lr_after=0.5):
        assert got == pytest.approx(applied, rel=1e-4)  # (the momentum buffer's first step differs from the others)
        assert norms == pytest.approx(before, rel=1e-6)


def test_the_update_ratio_follows_an_optimizer_whose_state_was_loaded():
    """load_state_dict replaces the optimizer's groups (here lr 0.05 -> 0.5): the probes read the new
    ones, not those of their first probed step."""
    cfg, data, model = _setup(["model.activation=tanh"])
    probes = Probes(model, cfg.model.activation)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    _probed_steps(model, opt, probes, data, steps=1)
    state = opt.state_dict()
    state["param_groups"][0]["lr"] = 0.5
    opt.load_state_dict(state)
    for got, applied, _, _ in _probed_steps(model, opt, probes, data, steps=2):
        assert got == pytest.approx(applied, rel=1e-4)


def test_sgds_update_is_read_exactly_where_the_float32_weights_cannot_show_it():
    cfg, data, model = _setup(["model.activation=tanh"])
    probes = Probes(model, cfg.model.activation)
    lr = 1e-10  # below half a float32 step of every weight: W - lr * d rounds back to W
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    [(got, applied, _, _)] = _probed_steps(model, opt, probes, data, steps=1)
    assert (applied == 0).all()  # the premise
    # the first step's momentum buffer is the gradient: dW = lr * g
    expect = [lr * float(torch.linalg.vector_norm(w.grad.double())) / float(torch.linalg.vector_norm(w.detach().double()))
              for w in probes.weights]
    assert got == pytest.approx(expect, rel=1e-6)


def test_probe_phases_run_on_one_thread_and_give_the_threads_back():
    # the probes' many small kernels run on one intra-op thread; the training step keeps the user's count
    class Watched(Probes):
        def _activation_primitives(self):
            seen.append(torch.get_num_threads())
            super()._activation_primitives()

    seen: list[int] = []
    cfg, data, model = _setup(["model.activation=tanh"])
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        result = train(model, data, cfg, Watched(model, cfg.model.activation))
        assert result.status == "ok" and result.probe_steps == [0, 1, 2]
        assert seen == [1, 1, 1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("fused", [False, True], ids=["batched", "fused"])
@pytest.mark.parametrize("clip", ["train.grad_clip=1.0", "train.clip_value=0.01"])
def test_extreme_gradient_norms_are_exact_when_the_step_clips_them(clip, fused):
    """Clipping scales or clamps the gradients in place before the probed step's read: a norm beyond
    float32's range must still be the float64 norm of the gradients the backward pass made. The batched
    probes keep a copy of the gradients for that; with the fused kernels the loop's norms are float64
    already, and nothing is copied."""
    overrides = ["model.activation=relu", "model.depth=40", "init=orthogonal", "init.gain=5", "model.width=16"]
    cfg, data, model = _setup([*overrides, "train.steps=1", clip])
    reference = copy.deepcopy(model)
    probes = Probes(model, cfg.model.activation, fused=fused)
    result = train(model, data, cfg, probes)
    got = result.probe_values[0][:, Probes(reference).quantities.index("grad_norm")]
    kept = [key for key in probes._buffers if key[0] == "grad"]
    assert len(kept) == (0 if fused else len(probes.params))

    idx = Batches(len(data.x_train), cfg.train.batch_size, cfg.seed, "cpu").next()
    F.cross_entropy(reference(data.x_train[idx]), data.y_train[idx]).backward()
    grads = np.array([float(torch.linalg.vector_norm(p.layer.weight.grad.double()))
                      for p in reference.probe_points])
    assert grads.max() > 1e19  # the premise: beyond float32's squares, and far above the clip
    assert got == pytest.approx(grads, rel=1e-5, abs=0)


@pytest.mark.parametrize("fused", [False, True], ids=["batched", "fused"])
@pytest.mark.parametrize("net", [["model.activation=tanh", "norm=layernorm"],
                                 ["model=cnn", "model.depth=3", "model.channels=4"],
                                 ["model.activation=relu", "model.skip=residual", "model.branch_layers=2", "model.depth=5"]])
def test_gradflows_own_layers_hand_their_outputs_to_a_tap_not_to_hooks(net, fused, monkeypatch):
    """An MLP or CNN layer hands its weight layer's output and its own output to the probes in one call
    (its `tap`) instead of two forward hooks: no hook is registered, the values are the hooks' to the
    bit, and remove() clears every tap."""
    monkeypatch.setattr(core, "FUSED_MIN", 0)
    if "model=cnn" in net:  # (SETUP's width is an MLP's)
        monkeypatch.setattr(sys.modules[__name__], "SETUP", [o for o in SETUP if not o.startswith("model.width")])
    cfg, data, model = _setup(net)
    hooked_model = copy.deepcopy(model)
    tapped = Probes(model, cfg.model.activation, fused=fused)
    # the same points without their tap: the probes fall back to forward hooks
    hooked = Probes([ProbePoint(p.name, p.layer, p.activation) for p in hooked_model.probe_points],
                    cfg.model.activation, fused=fused)
    layers = [p.tap for p in model.probe_points if p.tap is not None]
    assert len(layers) == len(model.probe_points) - 1  # every point but the head
    tapped.arm()
    assert all(layer.tap is not None for layer in layers)
    assert [m for m in model.modules() if m._forward_hooks] == [model.head]  # the head has no tap
    hooked.arm()
    points = hooked_model.probe_points
    hooks = len(points) + sum(p.activation is not None for p in points)
    assert sum(len(m._forward_hooks) for m in hooked_model.modules()) == hooks
    # a second Probes on the tapped model leaves the first its taps and takes hooks
    taps = [layer.tap for layer in layers]
    second = Probes(model, cfg.model.activation, fused=fused)
    second.arm()
    assert [layer.tap for layer in layers] == taps and sum(len(m._forward_hooks) for m in model.modules()) == hooks + 1
    second.remove()
    tapped.remove()
    hooked.remove()
    assert all(layer.tap is None for layer in layers)
    a, b = train(model, data, cfg, tapped), train(hooked_model, data, cfg, hooked)
    assert a.probe_steps == b.probe_steps == [0, 1, 2]
    for (va, ma), (vb, mb) in zip(zip(a.probe_values, a.probe_masks), zip(b.probe_values, b.probe_masks)):
        np.testing.assert_array_equal(ma, mb)
        np.testing.assert_array_equal(va[ma], vb[mb])
    # (every point's signal, and the statistics of every point followed by an activation, were taken)
    assert list(ma[:, tapped.quantities.index("act_std")]) == [p.activation is not None for p in points]
    assert ma[:, tapped.quantities.index("signal_norm")].all()
    assert all(layer.tap is None for layer in layers)  # train removes the probes at its last step


@pytest.mark.parametrize("act", [torch.nn.Tanh, torch.nn.Sigmoid])
def test_a_float64_model_with_a_saturating_activation_counts_its_saturated_units(act):
    """|y| of float64 activations went into a float32 scratch buffer: the batched path crashed."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 32), act(), torch.nn.Linear(32, 3)).double()
    with torch.no_grad():
        model[0].weight.mul_(3.0)  # some units saturate
    x = torch.randn(64, 8, dtype=torch.float64)
    from gradflow.models.discover import discover

    probes = Probes(discover(model, x), fused=False)
    probes.arm()
    F.cross_entropy(model(x), torch.randint(0, 3, (64,))).backward()
    probes.after_backward()
    values, mask, _ = probes.fetch()
    got = values[0, probes.quantities.index("act_saturated")]
    y = model[1](model[0](x)).detach()
    lo, hi = probes._bounds[0]
    assert mask[0, probes.quantities.index("act_saturated")]
    assert got == pytest.approx(float(((y < lo) | (y > hi)).double().mean())) and 0 < got < 1


# --- frozen parameters, per-group learning rates, loss scales, zero weights, kept gradients ---------------
def _mlp(seed=0, d_in=6, width=5, classes=3):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d_in, width), nn.Tanh(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, classes))


def _probe_one_step(model, probes, x, y, opt=None):
    probes.arm()
    if opt is not None:
        opt.zero_grad()
    F.cross_entropy(model(x), y).backward()
    probes.after_backward(optimizer=opt)
    if opt is not None:
        opt.step()
    probes.after_update()
    values, mask, _ = probes.fetch()
    return dict(zip(probes.quantities, values.T)), dict(zip(probes.quantities, mask.T))


def test_a_frozen_bias_beside_a_trained_weight_has_no_bias_gradient_cell():
    """A bias with requires_grad False (a weight still trained) takes no gradient: its
    bias_grad_norm cell is masked, not a made-up 0, while the weight's gradient cells stay."""
    model = _mlp()
    model[2].bias.requires_grad_(False)
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    probes = Probes(discover(model, x[:2]))
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    values, mask = _probe_one_step(model, probes, x, y, opt)
    assert mask["bias_grad_norm"].tolist() == [True, False, True]
    assert mask["grad_norm"].all() and mask["update_ratio"].all()
    assert values["bias_grad_norm"][0] == pytest.approx(float(model[0].bias.grad.norm()), rel=1e-5)


def _applied_ratios(model, probes, x, y, opt):
    before = [w.detach().double().clone() for w in probes.weights]
    values, mask = _probe_one_step(model, probes, x, y, opt)
    applied = [float((w.detach().double() - b).norm() / b.norm()) for w, b in zip(probes.weights, before)]
    return values["update_ratio"][probes.weight_points], applied


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_the_update_ratio_of_sgd_with_a_learning_rate_per_parameter_group(momentum):
    """Plain SGD with parameter groups of different learning rates (read from its state, not
    from a copy of the weights): each weight's update ratio is its own group's lr times ||d||."""
    model = _mlp()
    x, y = torch.randn(16, 6), torch.randint(0, 3, (16,))
    probes = Probes(discover(model, x[:2]))
    opt = torch.optim.SGD([{"params": model[0].parameters(), "lr": 0.3},
                           {"params": [*model[2].parameters(), *model[4].parameters()], "lr": 0.01}],
                          lr=0.05, momentum=momentum)
    for _ in range(2):
        got, applied = _applied_ratios(model, probes, x, y, opt)
        assert got == pytest.approx(applied, rel=1e-4)


def test_a_loss_scale_is_undone_in_the_bias_gradients_as_in_the_weight_gradients():
    """table(grad_scale=s) scales every
    gradient norm, the biases' included (a mixed-precision loop's 1/scale), and nothing else."""
    model = _mlp()
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    probes = Probes(discover(model, x[:2]))
    probes.arm()
    F.cross_entropy(model(x), y).backward()
    probes.after_backward()
    probes.after_update()
    reading, _ = probes.read()
    plain, mask = probes.table(reading)
    scaled, _ = probes.table(reading, grad_scale=0.25)
    q = {name: j for j, name in enumerate(probes.quantities)}
    for name in ("grad_norm", "bias_grad_norm"):
        j = q[name]
        assert mask[:, j].all()
        np.testing.assert_allclose(scaled[:, j], 0.25 * plain[:, j], rtol=1e-12)
    j = q["weight_norm"]
    np.testing.assert_array_equal(scaled[:, j], plain[:, j])


def test_a_zero_weight_has_no_update_ratio_cell():
    """A layer whose weight is all zeros before the step (Fixup's, SkipInit's last layer): its
    update-to-weight ratio is undefined and masked, not inf; the other layers' stay."""
    model = _mlp()
    with torch.no_grad():
        model[2].weight.zero_()
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    probes = Probes(discover(model, x[:2]))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    values, mask = _probe_one_step(model, probes, x, y, opt)
    assert mask["update_ratio"].tolist() == [True, False, True]
    assert values["weight_norm"][1] == 0 and mask["weight_norm"][1]
    assert np.isfinite(values["update_ratio"][[0, 2]]).all()


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_a_frozen_weight_has_no_gradient_or_update_cells_but_keeps_its_norm(optimizer):
    """A weight with requires_grad False (a fine-tuned net's frozen layer) takes neither a
    gradient nor an update: its grad_norm and update_ratio cells are masked (not 0), its weight_norm stays."""
    model = _mlp()
    model[2].weight.requires_grad_(False)
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    probes = Probes(discover(model, x[:2]))
    trained = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(trained, lr=0.1, momentum=0.9) if optimizer == "sgd" else torch.optim.Adam(trained, lr=1e-2)
    values, mask = _probe_one_step(model, probes, x, y, opt)
    assert mask["grad_norm"].tolist() == [True, False, True]
    assert mask["update_ratio"].tolist() == [True, False, True]
    assert mask["weight_norm"].all() and values["weight_norm"][1] == pytest.approx(float(model[2].weight.norm()))
    assert mask["bias_grad_norm"].all()  # its bias is trained


@pytest.mark.parametrize("scale", [1e25, 1e-25])
def test_kept_gradients_give_the_exact_norm_when_the_loop_zeroes_them_before_the_read(scale):
    """after_backward(keep_grads=True): the loop zeroes the gradients in place before read();
    a norm beyond float32's squares (inf or 0 in float32) is recomputed from the gradients as they were."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 2))
    x = torch.randn(8, 4)
    probes = Probes(discover(model, x[:2]), quantities=["grad_norm", "bias_grad_norm"])
    probes.arm()
    (model(x).sum() * scale).backward()
    expect = [float(p.grad.double().norm()) for p in probes.params]
    probes.after_backward(keep_grads=True)
    for p in model.parameters():
        p.grad.zero_()  # (zero_grad(set_to_none=False), or clipping in place)
    values, mask, _ = probes.fetch()
    got = [*values[probes.weight_points, 0], *values[probes.bias_points, 1]]
    assert mask[:, 0].all() and mask[:, 1].all()
    assert got == pytest.approx(expect, rel=1e-5, abs=0)  # (abs=0: the tiny norms too)


def test_fused_kernels_that_fail_to_load_are_said_once_and_the_probes_stay_batched(monkeypatch):
    # (the fallback was silent: a kernel broken in an edit, or numba without a compiler backend, left every CPU
    # run on the slower batched path without a word)
    from gradflow.probes import core, fused

    def broken():
        raise RuntimeError("no compiler backend")

    monkeypatch.setattr(fused, "warm", broken)
    monkeypatch.setattr(core, "_said_unfused", False)
    with pytest.warns(RuntimeWarning, match=r"^the fused probe kernels failed to load \(numba: RuntimeError: no "
                                            r"compiler backend\); the probes run batched"):
        assert core.load_fused(required=False) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert core.load_fused(required=False) is None  # said once
    with pytest.raises(GradflowError, match="failed to load"):
        core.load_fused()
