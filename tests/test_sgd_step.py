"""SGD's step by the fused CPU kernels (gradflow.sgdstep): torch's weights to the bit, and the norms it reads."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from gradflow import data as datasets
from gradflow import models, sgdstep
from gradflow.config import compose
from gradflow.models.init import initialize
from gradflow.probes import core
from gradflow.probes.core import Probes
from gradflow.train import train

FLAVOURS = {
    "heavy ball": dict(momentum=0.9),
    "heavy ball, decay, dampening": dict(momentum=0.5, dampening=0.3, weight_decay=1e-2),
    "nesterov, decay, maximize": dict(momentum=0.9, nesterov=True, weight_decay=5e-4, maximize=True),
    "nesterov": dict(momentum=0.9, nesterov=True),  # (alone: the kernel's nesterov and maximize swapped passed)
    "no momentum, decay": dict(momentum=0.0, weight_decay=1e-3),
    # (each of the kernel's loops: heavy ball, heavy ball with decay, plain, and any other flavour's)
    "plain": dict(momentum=0.0),
    "heavy ball, decay": dict(momentum=0.9, weight_decay=5e-4),
}


@pytest.fixture(scope="module")
def kernels():
    return core.load_fused()


def _params(dtype, gen):
    # sizes that leave a tail after any vector width, and a parameter in a second group with its own rate
    return [torch.randn(n, generator=gen, dtype=dtype).requires_grad_() for n in (1, 7, 37, 1000, 4099)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("flavour", list(FLAVOURS))
def test_the_kernel_steps_as_torch_sgd_to_the_bit_and_reads_the_norms(flavour, dtype, kernels):
    gen = torch.Generator().manual_seed(0)
    ours = _params(dtype, gen)
    theirs = [p.detach().clone().requires_grad_() for p in ours]

    def optimizer(ps):
        return torch.optim.SGD([{"params": ps[:4]}, {"params": ps[4:], "lr": 0.3}], lr=0.05, **FLAVOURS[flavour])

    opt_ours, opt_theirs = optimizer(ours), optimizer(theirs)
    stepper = sgdstep.SGDStep.of(opt_ours, ours, kernels)
    assert stepper is not None
    momentum = FLAVOURS[flavour]["momentum"]
    for step in range(4):
        for a, b in zip(ours, theirs):
            a.grad = torch.randn(a.shape, generator=gen, dtype=dtype) * 10.0 ** -step
            b.grad = a.grad.clone()
        before = [p.detach().clone() for p in ours]
        squares = stepper.step()
        if step == 0 and momentum:  # torch makes the momentum buffers at its first step
            assert squares is None
            opt_ours.step()
        else:
            assert squares is not None
        opt_theirs.step()
        for a, b in zip(ours, theirs):
            assert torch.equal(a.detach(), b.detach()), (flavour, step)
            if momentum:
                assert torch.equal(opt_ours.state[a]["momentum_buffer"], opt_theirs.state[b]["momentum_buffer"])
        if squares is None:
            continue
        lr = stepper.lr()
        assert lr.tolist() == [0.05] * 4 + [0.3]
        for j, (p, w) in enumerate(zip(ours, before)):
            d = (w.double() - p.detach().double()) / lr[j]  # the direction the weight moved by, as far as it shows
            assert squares[j, 0] == pytest.approx(float(p.grad.double().square().sum()), rel=1e-12)
            assert squares[j, 1] == pytest.approx(float(w.double().square().sum()), rel=1e-12)
            if FLAVOURS[flavour] == {"momentum": 0.0}:  # plain SGD's direction is the gradient itself (a float32
                assert squares[j, 2] == squares[j, 0]  # weight's change of 1e-5 shows it to 1e-3 at best)
            else:
                assert np.sqrt(squares[j, 2]) == pytest.approx(float(torch.linalg.vector_norm(d)), rel=1e-3)
    assert stepper.steps == (3 if momentum else 4)


def test_a_kernel_that_rounds_otherwise_is_not_used(kernels):
    """Where the kernel's roundings are not torch's (here: the buffer's product and sum rounded apart from
    the weight's update, as a machine without fused multiply-add would give torch), SGD keeps its own step."""
    def rounding_apart(weights, buffers, grads, sizes, group, lr, decay, momentum, dampening, nesterov, maximize,
                       wide, out):
        for j in range(len(weights)):
            n = sizes[j]
            w, b, g = (np.ctypeslib.as_array(_float32_at(a), (n,)) for a in (weights[j], buffers[j], grads[j]))
            b[:] = b * np.float32(momentum) + g
            w[:] = w - np.float32(lr[group[j]]) * b  # (two roundings: torch's fused multiply-add takes one)

    fake = SimpleNamespace(sgd_step_at=rounding_apart)
    p = torch.randn(10).requires_grad_()
    opt = torch.optim.SGD([p], lr=0.1, momentum=0.9)
    assert sgdstep.SGDStep.of(opt, [p], fake) is None
    assert sgdstep.SGDStep.of(opt, [p], kernels) is not None  # (the premise: the real kernel is used)


def test_a_kernel_that_rounds_otherwise_at_one_of_the_groups_weight_decays_is_not_used(kernels):
    """Groups of two weight decays: the kernel is checked at each of them, not the first alone. Here it
    steps as torch without decay but one ulp off with it: SGD keeps its own step for the two groups."""
    def off_with_decay(weights, buffers, grads, sizes, group, lr, decay, *rest):
        kernels.sgd_step_at(weights, buffers, grads, sizes, group, lr, decay, *rest)
        for j in range(len(weights)):
            if decay[group[j]]:
                w = np.ctypeslib.as_array(_float32_at(weights[j]), (int(sizes[j]),))
                w[0] = np.nextafter(w[0], np.float32(np.inf))

    fake = SimpleNamespace(sgd_step_at=off_with_decay)
    a, b = torch.randn(10).requires_grad_(), torch.randn(10).requires_grad_()
    alone = torch.optim.SGD([a], lr=0.1, momentum=0.9)
    assert sgdstep.SGDStep.of(alone, [a], fake) is not None  # (the premise: without decay it steps as torch)
    both = torch.optim.SGD([{"params": [a]}, {"params": [b], "weight_decay": 1e-2}], lr=0.1, momentum=0.9)
    assert sgdstep.SGDStep.of(both, [a, b], fake) is None
    assert sgdstep.SGDStep.of(both, [a, b], kernels) is not None


def _float32_at(address):
    import ctypes
    return ctypes.cast(int(address), ctypes.POINTER(ctypes.c_float))


def test_other_optimizers_and_tensors_keep_their_own_step(kernels):
    p = torch.randn(10).requires_grad_()
    assert sgdstep.SGDStep.of(torch.optim.Adam([p]), [p], kernels) is None
    assert sgdstep.SGDStep.of(torch.optim.SGD([p], lr=torch.tensor(0.1)), [p], kernels) is None
    assert sgdstep.SGDStep.of(torch.optim.SGD([p], lr=0.1, foreach=True), [p], kernels) is None
    assert sgdstep.SGDStep.of(torch.optim.SGD([p], lr=0.1, fused=True), [p], kernels) is None
    q = torch.randn(10, dtype=torch.float64).requires_grad_()
    assert sgdstep.SGDStep.of(torch.optim.SGD([p, q], lr=0.1), [p, q], kernels) is None  # two dtypes
    t = torch.randn(4, 5).t().requires_grad_()
    assert sgdstep.SGDStep.of(torch.optim.SGD([t], lr=0.1), [t], kernels) is None  # not contiguous
    stepper = sgdstep.SGDStep.of(torch.optim.SGD([p, torch.randn(3).requires_grad_()], lr=0.1), [p], kernels)
    assert stepper is None  # the optimizer steps a parameter the list leaves out
    r = torch.randn(10).requires_grad_()  # groups of two momentum flavours: one kernel steps one flavour
    mixed = torch.optim.SGD([{"params": [p], "momentum": 0.9}, {"params": [r], "momentum": 0.0}], lr=0.1)
    assert sgdstep.SGDStep.of(mixed, [p, r], kernels) is None
    stepper = sgdstep.SGDStep.of(torch.optim.SGD([p], lr=0.1), [p], kernels)
    p.grad = None
    assert stepper.step() is None  # no gradient: nothing done
    p.grad = torch.randn(10).to_sparse()
    assert stepper.step() is None


@pytest.fixture
def steps(monkeypatch):
    """Whether each step gradflow's loop asked of an SGDStep was taken by the kernels, in order."""
    taken = []

    class Counted(sgdstep.SGDStep):
        def step(self):
            out = super().step()
            taken.append(out is not None)
            return out

    monkeypatch.setattr("gradflow.train.SGDStep", Counted)
    return taken


SETUP = ["data=gaussian", "data.n_train=64", "data.n_test=32", "data.dim=12", "model.depth=4", "model.width=24",
         "train.steps=12", "train.batch_size=16", "probe.every=1", "model.activation=tanh"]


def _run(overrides, fused):
    cfg = compose([*SETUP, *overrides])
    torch.manual_seed(cfg.seed)
    data = datasets.build(cfg.data, torch.device("cpu"))
    model = models.build(cfg, data.input_shape, data.n_classes)
    initialize(model, cfg.init, cfg.model.activation)
    result = train(model, data, cfg, Probes(model, cfg.model.activation, fused=fused))
    return result, model


@pytest.mark.parametrize("overrides", [["optim.weight_decay=1e-3", "optim.schedule=cosine"], ["optim.momentum=0"],
                                       ["train.grad_clip=0.5"], ["optim=adam"]],
                         ids=["sgd", "no momentum", "clipping", "adam"])
def test_a_run_with_the_kernels_trains_the_same_net_and_probes_the_same_values(overrides, steps, monkeypatch):
    """gradflow's loop steps plain SGD by the kernels once they are loaded (not under clipping, which needs
    the gradients' norm first, nor for Adam): the same weights and metrics as torch's step, to the bit, and
    the same probe values as the batched probes take (float32 norms against the kernels' float64)."""
    monkeypatch.setattr(core, "FUSED_MIN", 0)
    fused, fused_model = _run(overrides, fused=True)
    batched, batched_model = _run(overrides, fused=False)
    expect = 0 if overrides[0] in ("train.grad_clip=0.5", "optim=adam") else 12 - ("optim.momentum=0" not in overrides)
    assert sum(steps) == expect
    # the same losses and accuracies to the bit; the gradients' norms the kernels take in float64, torch's in float32.
    # Clipping scales the step by grad_clip / total norm, and that norm is the kernels' float64 one where they are
    # loaded: the same net to float32's rounding of that factor, not to the bit
    exact = overrides[0] != "train.grad_clip=0.5"
    norms = [m for m in fused.metrics if m[1] in ("grad", "opt")]
    scores = [m for m in fused.metrics if m[1] not in ("grad", "opt")]
    assert [m if exact else m[:3] + (pytest.approx(m[3], rel=1e-5),) for m in scores] == \
        [m for m in batched.metrics if m[1] not in ("grad", "opt")]
    assert [m[3] for m in norms] == pytest.approx([m[3] for m in batched.metrics if m[1] in ("grad", "opt")], rel=1e-6)
    for a, b in zip(fused_model.state_dict().values(), batched_model.state_dict().values()):
        assert torch.equal(a, b) if exact else torch.allclose(a, b, rtol=1e-5, atol=1e-7)
    for got, want in zip(fused.probe_values, batched.probe_values):
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-9)


def test_a_long_enough_sgd_run_steps_by_the_kernels_whatever_its_probes(steps, monkeypatch):
    """A run of STEP_WORK parameter-steps or more loads the kernels for its step even where its probes stay
    batched (here: every run qualifies); the same net as torch's step trains."""
    monkeypatch.setattr("gradflow.train.STEP_WORK", 10**12)
    torch_step, torch_model = _run([], fused=False)
    assert steps == []
    monkeypatch.setattr("gradflow.train.STEP_WORK", 0)
    kernel_step, kernel_model = _run([], fused=False)
    assert sum(steps) == 11  # every step but torch's first (it makes the momentum buffers)
    assert [m for m in kernel_step.metrics if m[1] == "train"] == [m for m in torch_step.metrics if m[1] == "train"]
    for a, b in zip(kernel_model.state_dict().values(), torch_model.state_dict().values()):
        assert torch.equal(a, b)


def test_the_step_follows_momentum_buffers_and_weights_replaced_between_steps(kernels):
    """A momentum buffer replaced in the optimizer's state, and a weight moved by `p.data = ...`: the step
    writes where the tensors are now (an address kept from an earlier step would write to freed memory),
    as torch's step does."""
    gen = torch.Generator().manual_seed(1)
    ours = _params(torch.float32, gen)
    theirs = [p.detach().clone().requires_grad_() for p in ours]
    opt_ours, opt_theirs = (torch.optim.SGD(ps, lr=0.1, momentum=0.9) for ps in (ours, theirs))
    stepper = sgdstep.SGDStep.of(opt_ours, ours, kernels)
    for step in range(4):
        if step == 2:
            state = opt_ours.state[ours[1]]
            old = state["momentum_buffer"].data_ptr()
            state["momentum_buffer"] = state["momentum_buffer"].clone()
            ours[0].data = ours[0].data.clone()
            assert state["momentum_buffer"].data_ptr() != old  # (the premise)
        for a, b in zip(ours, theirs):
            a.grad = torch.randn(a.shape, generator=gen)
            b.grad = a.grad.clone()
        if stepper.step() is None:
            opt_ours.step()
        opt_theirs.step()
        for a, b in zip(ours, theirs):
            assert torch.equal(a.detach(), b.detach()), step
            assert torch.equal(opt_ours.state[a]["momentum_buffer"], opt_theirs.state[b]["momentum_buffer"]), step
    assert stepper.steps == 3


def test_a_weight_resized_between_steps_is_stepped_by_torch_not_the_kernel(kernels):
    """A weight given another size by `p.data = ...` (a layer grown or pruned in place): the kernel would step
    as many entries as the weight had when it was set up (past the end of a smaller tensor), so the step is
    left to torch (here with a momentum buffer of the new size too), and nothing is written."""
    gen = torch.Generator().manual_seed(2)
    p = torch.randn(10, generator=gen).requires_grad_()
    opt = torch.optim.SGD([p], lr=0.1, momentum=0.9)
    stepper = sgdstep.SGDStep.of(opt, [p], kernels)
    p.grad = torch.randn(10, generator=gen)
    opt.step()  # torch makes the momentum buffer
    p.grad = torch.randn(10, generator=gen)
    assert stepper.step() is not None  # (the premise: the kernel takes a step of the size it was set up for)
    p.data = torch.randn(20, generator=gen)
    p.grad = torch.randn(20, generator=gen)
    opt.state[p]["momentum_buffer"] = torch.zeros(20)
    before = p.detach().clone()
    assert stepper.step() is None and torch.equal(p.detach(), before)
    assert stepper.steps == 1


def test_a_stand_in_at_a_freed_ones_address_gets_its_own_answer(kernels):
    # the check's answers were kept by the kernels' id alone: a stand-in freed, then another made at its address
    # (CPython reuses it at once), read the first one's answer (test_a_kernel_that_rounds... failed in one CI run)
    flavour, decays = (0.9, 0.0, False, False), (0.0,)
    for _ in range(20):
        bad = SimpleNamespace(sgd_step_at=lambda *args: None)  # (steps nothing: not torch's step)
        assert not sgdstep._check(bad, torch.float32, flavour, decays)
        address = id(bad)
        del bad
        good = SimpleNamespace(sgd_step_at=kernels.sgd_step_at)
        assert sgdstep._check(good, torch.float32, flavour, decays), (id(good) == address)
