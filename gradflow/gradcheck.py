"""Backpropagation against finite differences: is every gradient right, and what does reverse mode save?

Central differences need two forward passes per parameter, (L(w + eps e_i) - L(w - eps e_i)) / 2 eps,
while one backward pass gives all of them for about the cost of one forward and one backward. In
float64 with eps = 1e-6 the central difference is accurate to ~eps^2 (truncation) plus
~1e-16 |L| / eps (rounding), so a correct backward agrees to ~1e-9 relative on entries that are
not tiny, and a wrong one (a scaled, a missing or a transposed term) is off by O(1).

Every parameter tensor of the model is checked (the probe points' weights, their biases, and the
weights of recurrent cells and norms) on a random sample of its entries. The relative error of an
entry is |g - fd| / max(|g|, |fd|, FLOOR |L|): the difference quotient resolves a gradient only to
its rounding level ~1e-16 |L| / eps ~ 1e-10 |L|, so an entry far smaller than the loss (a dead ReLU's
exact 0, a weight the loss barely depends on) is judged against 1e-3 |L|, where that rounding stays
below 1e-6 relative. A wrong backward still shows: a gradient of 1e-5 |L| off by a factor 2 gives 1e-2.
eps is small because ReLU kinks are not differentiable: a step across one is off by O(1) for that unit.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

EPS = 1e-6  # the finite-difference step in float64
FLOOR = 1e-3  # relative errors are taken against at least this fraction of the loss


@dataclass
class ParamCheck:
    name: str  # the parameter's name in the model, e.g. "hidden.3.layers.0.layer.weight"
    size: int  # its number of entries
    checked: int  # entries compared
    max_rel: float
    median_rel: float


@dataclass
class GradCheck:
    params: list[ParamCheck]
    n_params: int  # entries of every parameter tensor
    backprop_s: float  # seconds for one full gradient: forward + backward (median of repeats)
    fd_entry_s: float  # seconds per finite-difference entry: two forward passes (mean)

    @property
    def max_rel(self) -> float:
        return max((p.max_rel for p in self.params), default=math.nan)

    @property
    def fd_full_s(self) -> float:
        """Projected seconds for the full gradient by central differences."""
        return self.fd_entry_s * self.n_params

    @property
    def cost_ratio(self) -> float:
        """Finite differences over backprop for the full gradient."""
        return self.fd_full_s / self.backprop_s


def check_model(model: nn.Module, loss_fn, entries: int = 8, eps: float = EPS, seed: int = 0,
                repeats: int = 3) -> GradCheck:
    """Compare `model`'s backprop gradient of `loss_fn(model)` (a scalar) with central differences.

    The model should be in float64. The RNG is reseeded before every evaluation, so a model with
    dropout sees the same mask in each. `entries` random entries per parameter tensor (all if fewer).
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]

    def loss() -> torch.Tensor:
        torch.manual_seed(seed)
        return loss_fn(model)

    # one full gradient by backprop, timed
    times = []
    for _ in range(repeats):
        model.zero_grad(set_to_none=True)
        start = time.perf_counter()
        value = loss()
        value.backward()
        times.append(time.perf_counter() - start)
    floor = FLOOR * abs(value.item())
    grads = {n: p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for n, p in named}

    rng = np.random.default_rng(seed)
    checks, fd_time, fd_count = [], 0.0, 0
    with torch.no_grad():
        for name, p in named:
            flat, g = p.view(-1), grads[name].view(-1)
            idx = rng.choice(flat.numel(), size=min(entries, flat.numel()), replace=False)
            errors = []
            for i in idx.tolist():
                start = time.perf_counter()
                orig = flat[i].item()
                flat[i] = orig + eps
                up = loss().item()
                flat[i] = orig - eps
                down = loss().item()
                flat[i] = orig
                fd_time += time.perf_counter() - start
                fd_count += 1
                fd, bp = (up - down) / (2.0 * eps), g[i].item()
                scale = max(abs(fd), abs(bp), floor)
                errors.append(abs(fd - bp) / scale if scale > 0 else 0.0)
            checks.append(ParamCheck(name, flat.numel(), len(errors), float(np.max(errors)), float(np.median(errors))))
    model.zero_grad(set_to_none=True)
    return GradCheck(checks, sum(p.numel() for _, p in named), float(np.median(times)), fd_time / max(fd_count, 1))


def gradcheck(cfg, entries: int = 8, batch: int = 32, eps: float = EPS) -> GradCheck:
    """Build the model and data of a run config, in float64, and check its training loss's gradient
    on the first `batch` training examples (train mode: batchnorm uses the batch's statistics)."""
    from gradflow.job import prepare
    from gradflow.train import loss_and_accuracy

    _, data, model = prepare(cfg)
    model = model.double().train()
    x, y = data.x_train[:batch], data.y_train[:batch]
    if x.is_floating_point():
        x = x.double()
    if y.is_floating_point():
        y = y.double()
    return check_model(model, lambda m: loss_and_accuracy(m(x), y, data.task)[0], entries, eps, seed=cfg.seed)
