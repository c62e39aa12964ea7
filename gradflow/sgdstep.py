"""torch.optim.SGD's step by the fused CPU kernels, taking the norms the loop and the probes need as it goes.

On the CPU, torch's SGD steps one tensor at a time: `buf.mul_(momentum).add_(grad)` and `param.add_(buf,
alpha=-lr)` are three passes over each momentum buffer and one over each weight and gradient, from memory
(the step's working set is larger than the cache). Then gradflow's loop read every gradient again for its
norms (the divergence check and the `opt` metrics), and a probed step read the weights (their norms before
the step) and the momentum buffers (the update's norm) once more each. `probes.fused.sgd_step_at` does it
all in one pass: each gradient, weight and buffer read once, the buffer and the weight written once, and
the three squared norms of each tensor accumulated in float64 on the way (on the reference workload, 1.5
ms against 3.0 for torch's step alone and 4.7 with the norms' passes, README: Performance).

The arithmetic is torch's, rounding for rounding, so the weights are torch's to the bit: a loop that
steps with this and one that calls `optimizer.step()` train the same net. `SGDStep.of` checks that on
this machine (a CPU without fused multiply-add gives torch other roundings) before it is used.
"""

from __future__ import annotations

import numpy as np
import torch

_FLOATS = (torch.float32, torch.float64)
_reproduces: dict = {}  # (id(kernels), dtype, flavour, decays) -> (the kernels, whether they step as torch does here)


class SGDStep:
    """Steps `params` as `optimizer` (plain torch.optim.SGD) would, by the kernels in one pass."""

    def __init__(self, optimizer: torch.optim.SGD, params: list[torch.Tensor], group: np.ndarray, kernels):
        self.optimizer, self.params, self.kernels = optimizer, params, kernels
        first = optimizer.param_groups[0]
        self.momentum, self.dampening = float(first["momentum"]), float(first["dampening"])
        self.nesterov, self.maximize = bool(first["nesterov"]), bool(first["maximize"])
        self.group, self.groups = group, optimizer.param_groups
        self.dtype = params[0].dtype
        self.sizes = np.array([p.numel() for p in params], np.int64)
        self._lr = np.zeros(len(self.groups))  # each group's learning rate in the last step taken
        self.steps = 0  # steps taken here rather than by optimizer.step()

    @classmethod
    def of(cls, optimizer, params: list[torch.Tensor], kernels) -> SGDStep | None:
        """The step of `optimizer` over exactly `params` by `kernels` (probes.fused), or None where they do not
        take it as torch would: another optimizer (or one of SGD's own fused, foreach or differentiable
        versions), a tensor learning rate, groups of different momentum flavours, parameters that are not
        dense, contiguous CPU tensors of one float dtype, or a machine where the kernel's roundings differ."""
        if kernels is None or type(optimizer) is not torch.optim.SGD or not params:
            return None
        groups = optimizer.param_groups
        group_of = {id(p): k for k, g in enumerate(groups) for p in g["params"]}
        if len(group_of) != len(params) or any(id(p) not in group_of for p in params):
            return None
        if any(isinstance(g["lr"], torch.Tensor) or g.get("differentiable") or g.get("fused") or g.get("foreach")
               for g in groups):
            return None
        flavours = {(float(g["momentum"]), float(g["dampening"]), bool(g["nesterov"]), bool(g["maximize"]))
                    for g in groups}
        dtype = params[0].dtype
        if len(flavours) != 1 or dtype not in _FLOATS or not all(
                p.dtype is dtype and p.is_cpu and p.layout is torch.strided and p.is_contiguous() for p in params):
            return None
        (flavour,) = flavours
        decays = tuple(sorted({float(g["weight_decay"]) for g in groups}))
        if not _check(kernels, dtype, flavour, decays):
            return None
        return cls(optimizer, params, np.array([group_of[id(p)] for p in params], np.int64), kernels)

    def step(self) -> np.ndarray | None:
        """Take the optimizer's step and return each parameter's squared norms (n, 3): of its gradient, of
        its weight before the step and of the step's direction d (the weight moved by -lr * d), in float64.
        None, with nothing done, where the kernels cannot take this step: a parameter without a gradient
        or with a sparse or strided one, or momentum buffers not made yet (torch makes them at the first step).
        Every address is read from the tensors at each step (the kernels write where they point)."""
        state, momentum, dtype = self.optimizer.state, self.momentum, self.dtype
        at = np.empty((3, len(self.params)), np.int64)
        for j, p in enumerate(self.params):
            g = p.grad
            b = p if not momentum else state[p].get("momentum_buffer") if p in state else None  # (p: unread)
            if (g is None or b is None or g.layout is not torch.strided or g.dtype is not dtype
                    or not (p.is_contiguous() and g.is_contiguous() and b.is_contiguous())
                    or not p.numel() == g.numel() == b.numel() == self.sizes[j]):
                return None
            at[0, j], at[1, j], at[2, j] = p.data_ptr(), b.data_ptr(), g.data_ptr()
        lr = np.array([g["lr"] for g in self.groups], np.float64)
        decay = np.array([g["weight_decay"] for g in self.groups], np.float64)
        out = np.empty((len(self.params), 3))
        self.kernels.sgd_step_at(at[0], at[1], at[2], self.sizes, self.group, lr, decay, momentum, self.dampening,
                                 self.nesterov, self.maximize, dtype is torch.float64, out)
        self.steps += 1
        self._lr = lr
        return out

    def lr(self) -> np.ndarray:
        """Each parameter's learning rate in the last step taken (a schedule may have moved the groups' since)."""
        return self._lr[self.group]


def _check(kernels, dtype: torch.dtype, flavour: tuple, decays: tuple) -> bool:
    """Whether the kernel steps as torch.optim.SGD of this flavour and these weight decays does on this
    machine, to the bit: two steps after torch's first (which makes the momentum buffer), of a tensor whose
    size leaves a tail after any vector width; once per process and case."""
    key = (id(kernels), dtype, flavour, decays)
    if key in _reproduces:
        return _reproduces[key][1]
    momentum, dampening, nesterov, maximize = flavour
    gen = torch.Generator().manual_seed(0)
    same = True
    for decay in decays:
        theirs = torch.randn(1037, generator=gen, dtype=dtype).requires_grad_()
        opt = torch.optim.SGD([theirs], lr=0.0123, momentum=momentum, dampening=dampening, nesterov=nesterov,
                              maximize=maximize, weight_decay=decay)
        for step in range(3):
            theirs.grad = torch.randn(1037, generator=gen, dtype=dtype)
            if step:
                ours = theirs.detach().clone()
                buffer = opt.state[theirs]["momentum_buffer"].clone() if momentum else ours
                at = [np.array([t.data_ptr()], np.int64) for t in (ours, buffer, theirs.grad)]
                kernels.sgd_step_at(*at, np.array([1037]), np.array([0]), np.array([0.0123]), np.array([decay]),
                                    momentum, dampening, nesterov, maximize, dtype is torch.float64, np.zeros((1, 3)))
            opt.step()
            if step:
                same = same and torch.equal(ours, theirs.detach()) and (
                    not momentum or torch.equal(buffer, opt.state[theirs]["momentum_buffer"]))
    # (the kernels kept with their answer: an id freed and then reused by other kernels, a test's stand-in, read
    # the answer the first ones got)
    _reproduces[key] = (kernels, same)
    return same
