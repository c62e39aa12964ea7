"""The loop's own bookkeeping (window metrics, divergence) against a plain PyTorch replay."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gradflow.config import compose
from gradflow.probes.core import Probes
from gradflow.train import Batches, make_optimizer, train
from tests.test_probes import _setup as _probed_setup


def _setup(overrides):
    """A tiny MLP probed at init and at the end only (the loop's bookkeeping alone), unless `overrides` set
    probe.every (probe.points is then unread)."""
    own = any(o.startswith("probe.every=") for o in overrides)
    return _probed_setup([*([] if own else ["probe.every=0", "probe.points=2"]), *overrides])


def _replay(cfg, data, model):
    """Per step: (batch loss, batch accuracy, global gradient norm before clipping, clipped)."""
    opt = make_optimizer(model.parameters(), cfg.optim)
    batches = Batches(len(data.x_train), cfg.train.batch_size, cfg.seed, "cpu")
    rows = []
    for t in range(cfg.train.steps + 1):
        idx = batches.next()
        out = model(data.x_train[idx])
        loss = F.cross_entropy(out, data.y_train[idx])
        opt.zero_grad()
        loss.backward()
        # in float64: a total whose float32 squares overflow is finite all the same (inf only for inf/NaN entries)
        total = torch.linalg.vector_norm(torch.stack([p.grad.double().norm() for p in model.parameters()]))
        acc = (out.argmax(1) == data.y_train[idx]).float().mean()
        clip = cfg.train.grad_clip
        rows.append((loss.item(), acc.item(), float(total), float(clip > 0 and total > clip)))
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        if t < cfg.train.steps:
            opt.step()
    return rows


# windows that straddle the folds of the loop's per-step rows (check_every 3 against eval_every 4),
# and buffers that fill before any check (check_every 100: a fold every `steps + 1` rows)
@pytest.mark.parametrize("check_every, every", [(3, 0), (100, 0), (3, 1), (100, 1)])
def test_window_metrics_are_the_means_over_each_evaluation_window(check_every, every):
    """With probes at init only and at every step (a probed step checks its rows without folding them)."""
    cfg, data, model = _setup(["train.steps=9", "train.eval_every=4", f"train.check_every={check_every}",
                               "train.grad_clip=0.5", f"probe.every={every}"])
    reference = copy.deepcopy(model)
    res = train(model, data, cfg, Probes(model, cfg.model.activation))
    rows = _replay(cfg, data, reference)
    got = {(t, split, metric): v for t, split, metric, v in res.metrics}
    for t, start in ((4, 0), (8, 4), (9, 8)):  # the window at an evaluation step t: steps start .. t-1
        window = rows[start:t]
        for j, (split, metric) in enumerate([("batch", "loss"), ("batch", "acc"), ("opt", "grad_norm")]):
            mean = sum(r[j] for r in window) / len(window)
            assert got[(t, split, metric)] == pytest.approx(mean, rel=1e-5), (t, metric)
        assert got[(t, "opt", "clipped")] == sum(r[3] for r in window)
    assert sum(got[(t, "opt", "clipped")] for t in (4, 8, 9)) > 0  # the clipping count is exercised


@pytest.mark.parametrize("check_every, every", [(1, 0), (4, 0), (4, 1), (4, 3)])
def test_divergence_is_dated_to_the_first_non_finite_step(check_every, every):
    """Checked at every check_every-th step and at every probed step (probe.every: 0 = at init only)."""
    cfg, data, model = _setup(["train.steps=30", "optim.lr=1e6", "optim.momentum=0", "model.activation=relu",
                               f"train.check_every={check_every}", f"probe.every={every}"])
    reference = copy.deepcopy(model)
    reached = []
    res = train(model, data, cfg, Probes(model, cfg.model.activation), lambda t, n: reached.append(t))
    rows = _replay(cfg, data, reference)
    first = next(t for t, r in enumerate(rows) if not (math.isfinite(r[0]) and math.isfinite(r[2])))
    assert res.status == "diverged" and res.diverged_step == first
    # the loop stops at the first check (or probed step) at or after that step; the updates counted done are
    # those before it (the rest applied non-finite values)
    assert first <= reached[-1] < first + min(check_every, every or check_every)
    assert res.steps_done == first


def test_an_exploding_net_beyond_float32s_squares_is_clipped_not_marked_diverged():
    """Gradients of norm ~1e22 fit in float32 but their squares do not: the total norm must still come out
    finite, or the run would be marked diverged with a finite loss and clipping would zero every gradient.
    Clipped to 1, plain SGD's first update moves the weights by exactly lr."""
    cfg, data, model = _setup(["model.activation=relu", "model.depth=40", "model.width=16", "init=orthogonal",
                               "init.gain=5", "train.grad_clip=1.0", "train.steps=3", "optim.momentum=0",
                               "optim.lr=0.01", "train.check_every=1"])
    reference = copy.deepcopy(model)
    idx = Batches(len(data.x_train), cfg.train.batch_size, cfg.seed, "cpu").next()
    F.cross_entropy(reference(data.x_train[idx]), data.y_train[idx]).backward()
    grads = [p.grad.double() for p in reference.parameters()]
    total = float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])))
    assert 1e20 < total < math.inf and not math.isfinite(float(torch.stack([p.grad.norm() for p in
                                                                            reference.parameters()]).norm()))
    first = copy.deepcopy(model)
    cfg.train.steps = 1
    res = train(first, data, cfg, Probes(first, cfg.model.activation))
    moved = torch.stack([(a.detach().double() - b.detach().double()).norm()
                         for a, b in zip(first.parameters(), model.parameters())])
    assert res.status == "ok"
    assert float(moved.norm()) == pytest.approx(0.01, rel=1e-3)  # lr x the clipped norm, not 0
    logged = {(t, m): v for t, split, m, v in res.metrics if split == "opt"}
    assert logged[(1, "grad_norm")] == pytest.approx(total, rel=1e-5)
    assert logged[(1, "clipped")] == 1
    cfg.train.steps = 3
    assert train(model, data, cfg, Probes(model, cfg.model.activation)).status == "ok"


def test_the_loop_runs_a_step_at_a_time_and_a_ctrl_c_between_steps_keeps_what_it_measured():
    """`training` yields after each step (gradflow bench runs several loops in turns): train() is it run to
    the end, and a Ctrl-C that arrives between two steps (where train() hands it to the loop) ends the run
    as one inside a step does: interrupted, with the tables of every whole probed step."""
    from gradflow.train import Interrupted, training

    cfg, data, model = _probed_setup(["probe.every=1", "train.steps=6", "train.eval_every=3"])
    twin = copy.deepcopy(model)
    whole = train(twin, data, cfg, Probes(twin, cfg.model.activation))
    run = training(model, data, cfg, Probes(model, cfg.model.activation))
    assert [next(run) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(Interrupted) as stopped:
        run.throw(KeyboardInterrupt())
    res = stopped.value.result
    assert res.status == "interrupted" and res.steps_done == 3 and res.probe_steps == [0, 1, 2]
    for got, full in zip(res.probe_values, whole.probe_values):  # the same steps as the whole run's first three
        np.testing.assert_array_equal(got, full)  # (NaN where a quantity does not apply, in both)
    assert whole.status == "ok" and whole.steps_done == 6 and whole.probe_steps == list(range(7))


def test_train_hands_a_ctrl_c_between_two_steps_to_the_loop(monkeypatch):
    """A Ctrl-C that lands in train() itself, between two of the loop's steps, still ends the run as
    interrupted with what it measured (train() throws it into the loop), not as a bare KeyboardInterrupt."""
    from gradflow import train as train_mod

    real = train_mod.training

    class CtrlCAfterThreeSteps:  # the loop's steps, with a Ctrl-C arriving before the fourth is asked for
        def __init__(self, *args):
            self.steps, self.asked = real(*args), 0

        def __next__(self):
            self.asked += 1
            if self.asked == 4:
                raise KeyboardInterrupt
            return next(self.steps)

        def throw(self, error):
            return self.steps.throw(error)

    monkeypatch.setattr(train_mod, "training", CtrlCAfterThreeSteps)
    cfg, data, model = _probed_setup(["probe.every=1", "train.steps=6"])
    stopped = None
    try:
        train(model, data, cfg, Probes(model, cfg.model.activation))
    except KeyboardInterrupt as e:  # (a bare one, escaping, would end the test session: caught here)
        stopped = e
    assert isinstance(stopped, train_mod.Interrupted), f"not the loop's: {stopped!r}"
    res = stopped.result
    assert res.status == "interrupted" and res.steps_done == 3 and res.probe_steps == [0, 1, 2]


def test_a_stopped_or_failed_runs_exception_crosses_to_another_process():
    # a joblib worker's Interrupted is pickled back to the sweep's process: unpickled as itself it lacked its
    # `result`, and loky reported a BrokenProcessPool with a traceback instead of the sweep's one line
    import pickle

    from gradflow.train import Failed, Interrupted, TrainResult

    back = pickle.loads(pickle.dumps(Interrupted(TrainResult(status="interrupted"))))
    assert type(back) is KeyboardInterrupt
    back = pickle.loads(pickle.dumps(Failed(TrainResult(status="failed"), ValueError("bad step"))))
    assert isinstance(back, Exception) and str(back) == "ValueError: bad step"


def test_clipping_by_value_clamps_both_signs_and_says_it_clipped():
    from gradflow.train import _clip

    p = torch.nn.Parameter(torch.zeros(3))
    p.grad = torch.tensor([-5.0, 5.0, 0.1])
    clipped = _clip([p], torch.linalg.vector_norm(p.grad), 0.0, 1.0, "cpu")
    assert p.grad.tolist() == pytest.approx([-1.0, 1.0, 0.1]) and bool(clipped)
    p.grad = torch.tensor([-0.5, 0.5, 0.1])
    assert not bool(_clip([p], torch.linalg.vector_norm(p.grad), 0.0, 1.0, "cpu"))
    assert p.grad.tolist() == pytest.approx([-0.5, 0.5, 0.1])


def test_batches_are_whole_and_each_epoch_a_permutation():
    """10 examples in batches of 4: two batches an epoch (the partial last one dropped), none repeated
    within an epoch."""
    batches = Batches(10, 4, seed=0, device="cpu")
    drawn = [batches.next() for _ in range(4)]
    assert [len(b) for b in drawn] == [4, 4, 4, 4]
    for epoch in (drawn[:2], drawn[2:]):
        seen = torch.cat(epoch).tolist()
        assert len(set(seen)) == 8 and set(seen) <= set(range(10))


def test_evaluation_in_chunks_weighs_each_by_its_size():
    """A split of 7 in chunks of 3 (3, 3, 1) reads as the whole split at once."""
    from gradflow.train import evaluate, loss_and_accuracy

    torch.manual_seed(0)
    model = torch.nn.Linear(5, 3)
    x, y = torch.randn(7, 5), torch.randint(0, 3, (7,))
    whole = torch.stack(loss_and_accuracy(model(x), y, "classification"))
    assert evaluate(model, x, y, "classification", chunk=3).tolist() == pytest.approx(whole.tolist(), rel=1e-6)


def test_the_loops_batches_follow_the_runs_seed():
    """Each step's batch loss is the replay's with the same seed (another seed draws other batches)."""
    cfg, data, model = _setup(["seed=5", "train.steps=3", "train.eval_every=1"])
    reference, other = copy.deepcopy(model), copy.deepcopy(model)
    res = train(model, data, cfg, Probes(model, cfg.model.activation))
    got = [v for t, split, metric, v in sorted(res.metrics) if (split, metric) == ("batch", "loss")]
    rows = _replay(cfg, data, reference)
    assert got == pytest.approx([r[0] for r in rows[:3]], rel=1e-5)
    cfg.seed = 6
    assert got != pytest.approx([r[0] for r in _replay(cfg, data, other)[:3]], rel=1e-5)


def test_evaluation_runs_in_eval_mode_and_gives_the_mode_back():
    """Batch norm and dropout in eval mode (running statistics, no dropping), whatever mode the model was in."""
    from gradflow.train import evaluate, loss_and_accuracy

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.BatchNorm1d(8), torch.nn.Dropout(0.5),
                                torch.nn.Linear(8, 3))
    model[1].running_mean.fill_(2.0)  # far from the batch's own statistics
    x, y = torch.randn(16, 5), torch.randint(0, 3, (16,))
    model.eval()
    with torch.no_grad():
        expected = torch.stack(loss_and_accuracy(model(x), y, "classification")).tolist()
    for training in (True, False):
        model.train(training)
        assert evaluate(model, x, y, "classification").tolist() == pytest.approx(expected, rel=1e-6)
        assert model.training == training


@pytest.mark.parametrize("kind, extra", [("constant", ["optim.warmup=4"]), ("cosine", []),
                                         ("cosine", ["optim.warmup=3"]),
                                         ("step", ["optim.milestones=[3,6]", "optim.gamma=0.1"]),
                                         ("step", ["optim.milestones=[6,3]", "optim.gamma=0.1"])])  # (any order)
def test_the_learning_rate_after_each_update_is_the_schedules_formula(kind, extra):
    """Update t (0-based) runs at lr x min(1, (t + 1) / warmup) x the schedule's factor (cosine: to 0 at the
    last step; step: gamma per milestone passed)."""
    from gradflow.train import make_schedule

    cfg = compose(["data=gaussian", "optim=sgd", "optim.lr=0.4", f"optim.schedule={kind}", *extra])
    oc, steps = cfg.optim, 8
    opt = make_optimizer([torch.nn.Parameter(torch.zeros(2))], oc)
    schedule = make_schedule(opt, oc, steps)
    for t in range(steps + 1):
        factor = min(1.0, (t + 1) / oc.warmup) if oc.warmup else 1.0
        if kind == "cosine":
            factor *= 0.5 * (1 + math.cos(math.pi * t / steps))
        elif kind == "step":
            factor *= 0.1 ** sum(t >= m for m in (3, 6))
        assert opt.param_groups[0]["lr"] == pytest.approx(0.4 * factor, abs=1e-12), t
        opt.step()
        schedule.step()


def test_a_non_finite_gradient_under_a_finite_loss_is_divergence_in_the_gradient():
    """From step 2 the first block's output passes through 0 * sqrt(0): the loss stays finite, its gradient
    is NaN. The run is diverged at step 2, in the gradient alone, and keeps no metric of steps 3 and 4 (evaluated
    before the check at step 4 found it)."""
    cfg, data, model = _setup(["train.steps=6", "train.check_every=4", "train.eval_every=1"])
    calls = []

    def poison(module, args, out):
        if module.training:
            calls.append(1)
            if len(calls) > 2:
                return out + 0 * torch.sqrt(out - out)
        return out

    model.hidden[0].register_forward_hook(poison)
    res = train(model, data, cfg, Probes(model, cfg.model.activation))
    assert res.status == "diverged" and res.diverged_step == 2 and res.diverged_in == "gradient"
    assert res.steps_done == 2 and max(t for t, *_ in res.metrics) == 2
    losses = [v for t, split, metric, v in res.metrics if metric == "loss"]
    assert all(math.isfinite(v) for v in losses)


def test_clipping_by_value_alone_clips_in_the_loop():
    """train.clip_value with no grad_clip still clips every update and counts it: a loop that took only
    grad_clip > 0 to mean "clips" took unclipped steps and logged opt/clipped 0."""
    cfg, data, model = _setup(["train.steps=4", "train.clip_value=1e-3", "optim.momentum=0", "optim.lr=0.1",
                               "train.check_every=1"])
    before = copy.deepcopy(model)
    res = train(model, data, cfg, Probes(model, cfg.model.activation))
    assert res.status == "ok"
    assert sum(v for t, split, m, v in res.metrics if (split, m) == ("opt", "clipped")) == 4
    moved = max(float((a.detach() - b.detach()).abs().max()) for a, b in zip(model.parameters(), before.parameters()))
    assert moved <= 4 * 0.1 * 1e-3 + 1e-6  # each update moves an entry by at most lr x clip_value
    # and its summary says so, as ls shows it (clipping by value alone is clipping: every update, a share of 1)
    import pandas as pd

    from gradflow import store
    from gradflow.summary import CLIPPED, clip_summary

    metrics = pd.DataFrame(res.metrics, columns=store.METRIC_COLUMNS)
    assert clip_summary(metrics, {"train.clip_value": 1e-3, "train.grad_clip": 0.0}) == {CLIPPED: 1.0}
    assert clip_summary(metrics, {"train.clip_value": 0.0, "train.grad_clip": 0.0}) == {CLIPPED: None}


@pytest.mark.parametrize("check_every", [1, 4])
def test_a_diverged_runs_probes_end_at_its_divergence_step(check_every):
    """Probed every step, a diverged run keeps its probe of the step it diverged at (the layer that went
    non-finite is read there) and none after: keeping only the steps before it lost that reading."""
    cfg, data, model = _setup(["train.steps=30", "optim.lr=1e6", "optim.momentum=0", "model.activation=relu",
                               f"train.check_every={check_every}", "probe.every=1"])
    res = train(model, data, cfg, Probes(model, cfg.model.activation))
    assert res.status == "diverged"
    assert res.probe_steps == list(range(res.diverged_step + 1))


def test_a_gradient_norm_at_the_threshold_is_not_counted_clipped():
    """grad_clip is a ceiling: a total norm equal to it leaves the gradient as it is, so the update is not
    counted clipped (a >= there overcounted opt/clipped)."""
    from gradflow.train import _clip

    p = torch.nn.Parameter(torch.zeros(2))
    p.grad = torch.tensor([3.0, 4.0])
    assert not bool(_clip([p], torch.linalg.vector_norm(p.grad), 5.0, 0.0, "cpu"))
    assert p.grad.tolist() == pytest.approx([3.0, 4.0])
    assert bool(_clip([p], torch.linalg.vector_norm(p.grad), 4.0, 0.0, "cpu"))


@pytest.mark.parametrize("grad_clip, clip_value, expected", [
    (10.0, 0.0, [3.0, -4.0]),  # below the threshold: left alone (a normalizer of every gradient made it 6, -8)
    (2.5, 0.0, [1.5, -2.0]),  # above it: rescaled to norm 2.5 exactly, the direction kept (Pascanu's Algorithm 1)
    (0.0, 3.5, [3.0, -3.5]),  # by value: the entries beyond +-3.5 alone clamped
    (0.0, 5.0, [3.0, -4.0]),
])
def test_clipping_changes_only_a_gradient_beyond_its_threshold(grad_clip, clip_value, expected):
    """Clipping bounds a gradient; one within the bound is the update as it was. A clip that rescaled every
    gradient to the threshold (normalized gradient descent) still passed pascanu2013's claims, whose clipped
    net trains either way: this is the check that tells them apart."""
    from gradflow.train import _clip

    p = torch.nn.Parameter(torch.zeros(2))
    p.grad = torch.tensor([3.0, -4.0])
    clipped = bool(_clip([p], torch.linalg.vector_norm(p.grad), grad_clip, clip_value, "cpu"))
    assert p.grad.tolist() == pytest.approx(expected, rel=1e-6)
    assert clipped == (expected != [3.0, -4.0])
