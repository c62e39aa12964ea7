"""Probes: the registry's quantities at probed steps, in batched calls on the device.

A probed step runs in three phases, so that every statistic is one batched call over all probe
points rather than a dozen small kernels per layer:
  arm()              registers hooks that only keep references (each layer's output gradient
                     dL/dz, each activation output); unprobed steps carry no hooks at all
  after_backward()   foreach norms of weights, gradients and signals; activations of equal
                     shape stacked and reduced together (mean/std from one shifted sum and one
                     sum of squares, saturated/dead counts in one pass each); the weights copied
                     into a preallocated buffer for the update ratio
  after_update()     ||W(after) - W(before)|| as one foreach subtraction and norm
fetch() then copies every value of the step to the host at once (note: the one host sync point
of a probed step) and assembles the (points, quantities) table by quantity name.
Probes never touch the optimizer's state or write files.
"""

from __future__ import annotations

import math
from functools import cached_property
from typing import Sequence

import numpy as np
import torch

from gradflow import activations
from gradflow.errors import GradflowError
from gradflow.probes.quantities import (ACTIVATION, BACKWARD, BIAS, DYING, HIST_BINS, HIST_EDGES, HIST_KINDS,
                                        OUTPUT, QUANTITIES, SATURATING, UPDATE, WEIGHT)

_BY_MODULE = {a.torch_name: a for a in activations.ACTIVATIONS.values()}


def _param(module, name: str):
    p = getattr(module, name, None)
    return p if isinstance(p, torch.Tensor) else None


class Probes:
    """The probes of a model's probe points (a model with `probe_points`, or the list itself).

    `activation` names the nonlinearity after every point (gradflow's own families); None reads
    it from each activation module's class (a user's model). `quantities` chooses and orders
    the table's columns (default: the whole registry).
    """

    def __init__(self, model, activation: str | None = None, histograms: bool = False,
                 quantities: Sequence[str] | None = None):
        self.points = list(getattr(model, "probe_points", model))
        self.names = [p.name for p in self.points]
        self.quantities = tuple(quantities) if quantities is not None else tuple(QUANTITIES)
        for q in self.quantities:
            if q not in QUANTITIES:
                raise GradflowError(f"probe quantity {q!r} is not known; choices: {', '.join(QUANTITIES)}")
        self.histograms = histograms
        # points with a weight (layers); the others mark a state, e.g. h_t of a recurrent net
        self.weight_points = [i for i, p in enumerate(self.points) if _param(p.layer, "weight") is not None]
        self.bias_points = [i for i, p in enumerate(self.points) if _param(p.layer, "bias") is not None]
        self.weights = [self.points[i].layer.weight for i in self.weight_points]
        self.biases = [self.points[i].layer.bias for i in self.bias_points]
        self.params = self.weights + self.biases  # the order of after_backward's `grad_norms`
        self.specs = [None if p.activation is None else
                      activations.get(activation) if activation else _BY_MODULE.get(type(p.activation).__name__)
                      for p in self.points]
        n = len(self.points)
        has = {WEIGHT: np.isin(np.arange(n), self.weight_points), BIAS: np.isin(np.arange(n), self.bias_points),
               OUTPUT: np.ones(n, bool), ACTIVATION: np.array([p.activation is not None for p in self.points]),
               SATURATING: np.array([s is not None and s.saturation is not None for s in self.specs]),
               DYING: np.array([s is not None and s.can_die for s in self.specs])}
        self.applicable = np.stack([has[QUANTITIES[q].where] for q in self.quantities], axis=1).reshape(n, -1)
        needs = {QUANTITIES[q].where for q in self.quantities}
        self._keep_signals = histograms or OUTPUT in needs
        self._keep_acts = histograms or bool(needs & {ACTIVATION, SATURATING, DYING})
        self._ratio = any(QUANTITIES[q].when == UPDATE for q in self.quantities)
        self.armed = False
        self._hooks: list = []
        self._stats: StepStats | None = None
        self._constants: dict = {}  # small index/threshold tensors, copied to the device once
        self._buffers: dict = {}  # scratch space reused by every probed step: fresh large allocations are slow

    # --- hooks: they only keep references. They stay registered across consecutive probed steps
    # and are removed before an unprobed one, which then carries none. ---
    def arm(self) -> None:
        n = len(self.points)
        self._signals: list[torch.Tensor | None] = [None] * n  # dL/dz at each point's output
        self._acts: list[torch.Tensor | None] = [None] * n  # the activation output after each point
        self._stats = None
        if not self._hooks:
            for i, p in enumerate(self.points):
                if self._keep_signals and isinstance(p.layer, torch.nn.Module):  # not a projection inside a module
                    self._hooks.append(p.layer.register_forward_hook(self._on_output(i)))
                if self._keep_acts and p.activation is not None:
                    self._hooks.append(p.activation.register_forward_hook(self._on_activation(i)))
        self.armed = True

    def remove(self) -> None:
        """Remove the hooks (before an unprobed step, and at the end); arm() registers them again."""
        for h in self._hooks:
            h.remove()
        self._hooks = []
        self.armed = False

    def _on_output(self, i):
        def keep(g):
            self._signals[i] = g

        def hook(module, inputs, z):
            if isinstance(z, tuple):  # e.g. a cell returning (h, c): the first is the state
                z = z[0]
            if self.armed and z.requires_grad:
                z.register_hook(keep)

        return hook

    def _on_activation(self, i):
        def hook(module, inputs, y):
            if self.armed:
                self._acts[i] = y.detach()

        return hook

    # --- the probed step ---
    def after_backward(self, grad_norms: torch.Tensor | None = None) -> None:
        """Compute every backward-phase quantity on the device (no host sync).

        `grad_norms`: the gradient norms of `self.params`, when the caller has them already.
        """
        self.armed = False
        self._stats = StepStats(self, grad_norms)
        if self._ratio:  # the weights before the update, stacked by shape into kept buffers
            self._stats.before = Stacked(self, "before", [w.detach() for w in self.weights])
        self._rows = {q: QUANTITIES[q].compute(self._stats) for q in self._fetched(BACKWARD)}
        if self.histograms:
            self._rows["histograms"] = self._stats.histograms

    def after_update(self) -> None:
        """Compute the update-phase quantities, once the optimizer has stepped."""
        if self._ratio:
            self._rows.update({q: QUANTITIES[q].compute(self._stats) for q in self._fetched(UPDATE)})

    def _fetched(self, when: str) -> list[str]:
        chosen = [q for q in self.quantities if QUANTITIES[q].when == when]
        if when == BACKWARD and self._ratio and "weight_norm" not in chosen:
            chosen.append("weight_norm")  # a ratio to a zero weight is undefined: its cells are masked
        return chosen

    def fetch(self, *carry: torch.Tensor) -> tuple[np.ndarray, np.ndarray, list[float]]:
        """The probed step's (points, quantities) table and mask on the host, by quantity name, and
        the values of the `carry` scalars (the caller's own, brought back in the same copy).

        Note: the device->host sync point of a probed step, one copy for all values (and histograms).
        """
        self._rows["carry"] = torch.stack([c.float() for c in carry]) if carry else torch.zeros(0, device=self._stats.device)
        n, names = len(self.points), list(self._rows)
        flat = torch.cat([self._rows[k].float().flatten() for k in names]).cpu().numpy().astype(np.float64)
        got, start = {}, 0
        for k in names:
            size = self._rows[k].numel()
            got[k] = flat[start : start + size]
            start += size
        self._hist = got.pop("histograms").reshape(n, 2, len(HIST_KINDS)) if self.histograms else None
        values = np.full((n, len(self.quantities)), np.nan)
        mask = self.applicable.copy()
        for j, q in enumerate(self.quantities):
            if q in got:
                values[:, j] = got[q]
            else:  # no update was taken at this step (the last one)
                mask[:, j] = False
            if QUANTITIES[q].where == OUTPUT:
                mask[:, j] &= self._stats.has_signal
            if QUANTITIES[q].when == UPDATE:
                mask[:, j] &= got["weight_norm"] != 0  # e.g. Fixup's zero-initialized layers
        self._rows = {}
        return values, mask, got["carry"].tolist()

    def fetch_histograms(self) -> np.ndarray:
        """(points, 2, kinds) counts of the probed step, fetched with `fetch` (call it first)."""
        return self._hist

    def buffer(self, key, shape: tuple, dtype, device) -> torch.Tensor:
        """A scratch tensor kept between probed steps."""
        b = self._buffers.get(key)
        if b is None or b.shape != shape or b.dtype != dtype or b.device != device:
            b = self._buffers[key] = torch.empty(shape, dtype=dtype, device=device)
        return b

    def constant(self, values: list, device, dtype=None) -> torch.Tensor:
        """A small tensor on `device`, made once: a later probed step must not wait on a host copy."""
        key = (tuple(values), str(device), dtype)
        if key not in self._constants:
            t = torch.tensor(values, dtype=dtype)
            on_gpu = torch.device(device).type == "cuda"  # pinned and non-blocking: no host sync
            self._constants[key] = t.pin_memory().to(device, non_blocking=True) if on_gpu else t.to(device)
        return self._constants[key]


class StepStats:
    """The batched statistics of one probed step, on device; each primitive is computed once.

    Every primitive is a (points,) tensor, NaN where it does not exist (masked by the registry's
    `where` on the host).
    """

    def __init__(self, probes: Probes, grad_norms: torch.Tensor | None):
        self.probes = probes
        self.n = len(probes.points)
        self.device = probes.weights[0].device if probes.weights else torch.device("cpu")
        self._grad_norms = grad_norms
        self.has_signal = np.array([g is not None for g in probes._signals])
        self.before: Stacked | None = None  # the weights before the update

    def _spread(self, values: torch.Tensor, at: list[int]) -> torch.Tensor:
        """(len(at),) values -> (points,), NaN elsewhere."""
        if len(at) == self.n:
            return values.float()
        out = torch.full((self.n,), float("nan"), device=self.device)
        return out.index_copy_(0, self.probes.constant(at, self.device), values.float()) if at else out

    @staticmethod
    def _norms(tensors: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack(torch._foreach_norm(tensors)) if tensors else torch.zeros(0)

    @cached_property
    def _param_grad_norms(self) -> torch.Tensor:
        if self._grad_norms is not None:
            return self._grad_norms
        return self._norms([p.grad if p.grad is not None else p.new_zeros(()) for p in self.probes.params])

    @cached_property
    def grad_norm(self) -> torch.Tensor:
        return self._spread(self._param_grad_norms[: len(self.probes.weights)], self.probes.weight_points)

    @cached_property
    def bias_grad_norm(self) -> torch.Tensor:
        return self._spread(self._param_grad_norms[len(self.probes.weights):], self.probes.bias_points)

    @cached_property
    def weight_norm(self) -> torch.Tensor:
        if self.before is not None:  # read the stacked copy: one call per shape
            norms = self.before.per_tensor([torch.linalg.vector_norm(b, dim=1) for b in self.before.stacks])
        else:
            norms = self._norms([w.detach() for w in self.probes.weights])
        return self._spread(norms, self.probes.weight_points)

    @cached_property
    def signal_norm(self) -> torch.Tensor:
        at = np.flatnonzero(self.has_signal).tolist()
        if not at:
            return self._spread(torch.zeros(0), at)
        grads = [self.probes._signals[i] for i in at]
        batch = {g.shape[0] for g in grads}
        norms = torch.stack(torch._foreach_norm(grads))
        # RMS over the batch of each example's signal: sqrt(B) ||dL/dZ||_F
        if len(batch) == 1:
            norms = norms * math.sqrt(batch.pop())
        else:
            norms = norms * self.probes.constant([math.sqrt(g.shape[0]) for g in grads], self.device, norms.dtype)
        return self._spread(norms, at)

    @property
    def update_norm(self) -> torch.Tensor:
        weights = [w.detach() for w in self.probes.weights]
        rows = [row for stack in self.before.stacks for row in stack]  # views into the kept copy
        torch._foreach_sub_(rows, [weights[i].flatten() for g in self.before.groups for i in g])  # now -dW
        norms = self.before.per_tensor([torch.linalg.vector_norm(b, dim=1) for b in self.before.stacks])
        return self._spread(norms, self.probes.weight_points)

    # activation statistics: (points,) each
    @cached_property
    def _act(self) -> dict[str, torch.Tensor]:
        at = [i for i, y in enumerate(self.probes._acts) if y is not None]
        keys = ("count", "sum", "std", "saturated", "dead")
        if not at:
            return dict.fromkeys(keys, self._spread(torch.zeros(0), at))
        acts = Stacked(self.probes, "acts", [self.probes._acts[i] for i in at])
        parts = []
        for group, y in zip(acts.groups, acts.stacks):
            spec = [self.probes.specs[at[j]] for j in group]
            saturation = [s.saturation if s is not None and s.saturation else (-math.inf, math.inf) for s in spec]
            bounds = self.probes.constant(saturation, self.device, torch.float32)  # (k, 2): lo, hi
            scratch = self.probes.buffer(("scratch", tuple(y.shape)), tuple(y.shape), torch.float32, self.device)
            parts.append(_activation_stats(y.float(), spec, bounds, scratch))
        nan = torch.full((len(at),), float("nan"), device=self.device)
        return {k: self._spread(acts.per_tensor([p.get(k, nan[: len(g)]) for p, g in zip(parts, acts.groups)]), at)
                for k in keys}

    @property
    def act_count(self) -> torch.Tensor:
        return self._act["count"]

    @property
    def act_sum(self) -> torch.Tensor:
        return self._act["sum"]

    @property
    def act_std(self) -> torch.Tensor:
        return self._act["std"]

    @property
    def act_saturated(self) -> torch.Tensor:
        return self._act["saturated"]

    @property
    def act_dead(self) -> torch.Tensor:
        return self._act["dead"]

    @cached_property
    def histograms(self) -> torch.Tensor:
        """(points, 2, kinds): activation and dL/dz counts, NaN where a point has no such tensor."""
        empty = torch.full((len(HIST_KINDS),), float("nan"), device=self.device)
        return torch.stack([torch.stack([histogram(t) if t is not None else empty for t in pair])
                            for pair in zip(self.probes._acts, self.probes._signals)])


class Stacked:
    """Tensors stacked by shape into buffers kept between probed steps, so that a statistic of
    all of them is one call per distinct shape rather than one per tensor.

    stacks[g]: (tensors in group g, elements); per_tensor() puts per-group results back in the
    order of the tensors given.
    """

    def __init__(self, probes: Probes, name: str, tensors: list[torch.Tensor]):
        self.probes = probes
        by_shape: dict[tuple, list[int]] = {}
        for i, t in enumerate(tensors):
            by_shape.setdefault((tuple(t.shape), t.dtype), []).append(i)
        self.groups = list(by_shape.values())
        self.stacks = []
        for g in self.groups:
            first = tensors[g[0]]
            buf = probes.buffer((name, len(g), tuple(first.shape)), (len(g), *first.shape), first.dtype, first.device)
            self.stacks.append(torch.stack([tensors[i] for i in g], out=buf).view(len(g), -1))
        self.device = tensors[0].device if tensors else torch.device("cpu")

    def per_tensor(self, values: list[torch.Tensor]) -> torch.Tensor:
        if len(self.groups) == 1:
            return values[0]
        order = self.probes.constant([i for g in self.groups for i in g], self.device)
        return torch.empty(len(order), device=self.device).index_copy_(0, order, torch.cat(values).float())


def _activation_stats(y: torch.Tensor, specs: list, bounds: torch.Tensor, scratch: torch.Tensor) -> dict:
    """Statistics of k stacked activation outputs y: (k, units), each (k,), in few passes over y.

    y is the caller's stacked copy and is reduced in place (`scratch`, of y's shape, holds the
    counts): saturated and dead units first, then mean and std from one sum and one sum of
    squares of y shifted by its first unit (the shift keeps the variance exact when the mean is
    large against the spread). `bounds`: (k, 2) saturation thresholds lo, hi.
    """
    k, units = y.shape
    out = {"count": torch.full((k,), float(units), device=y.device)}
    saturation = [s.saturation for s in specs if s is not None and s.saturation]
    if saturation:
        lo, hi = bounds[:, :1], bounds[:, 1:]  # an output outside (lo, hi) is saturated
        if all(s[0] == -s[1] for s in saturation):  # symmetric: one pass on |y|
            out["saturated"] = torch.abs(y, out=scratch).gt_(hi).sum(1)
        else:
            out["saturated"] = torch.gt(y, hi, out=scratch).sum(1) + torch.lt(y, lo, out=scratch).sum(1)
    if any(s is not None and s.can_die for s in specs):
        out["dead"] = torch.eq(y, 0, out=scratch).sum(1)
    shift = y[:, :1].clone()
    y.sub_(shift)
    s = y.sum(1)
    ss = torch.linalg.vector_norm(y, dim=1).square()
    out["sum"] = s + units * shift.squeeze(1)
    out["std"] = ((ss - s * s / units) / max(units - 1, 1)).clamp(min=0).sqrt()
    return out


def schedule(steps: int, every: int, points: int) -> list[int]:
    """Probed steps: step 0 (initialization), the last step, and every k-th or log-spaced steps."""
    if every > 0:
        chosen = set(range(0, steps + 1, every))
    else:
        chosen = set(np.unique(np.round(np.geomspace(1, max(steps, 1), max(points - 1, 1)))).astype(int).tolist())
    chosen |= {0, steps}
    return sorted(s for s in chosen if 0 <= s <= steps)


def histogram(x: torch.Tensor) -> torch.Tensor:
    """Counts of `x` in HIST_KINDS order, on x's device without a host sync (no boolean indexing)."""
    x = x.detach().flatten().float()
    edges = torch.as_tensor(HIST_EDGES, dtype=torch.float32, device=x.device)
    a = x.abs()
    finite = torch.isfinite(x)
    in_range = finite & (a >= edges[0]) & (a < edges[-1])
    bins = (torch.bucketize(a, edges, right=True) - 1).clamp(0, HIST_BINS - 1) + HIST_BINS * (x < 0)
    bins = torch.where(in_range, bins, torch.full_like(bins, 2 * HIST_BINS))  # out of range -> a dump slot
    counts = torch.zeros(2 * HIST_BINS + 1, device=x.device).index_add_(0, bins, torch.ones_like(a))[: 2 * HIST_BINS]
    special = torch.stack([(x == 0).sum(), (finite & (a > 0) & (a < edges[0])).sum(),
                           (finite & (a >= edges[-1])).sum(), (~finite).sum()]).float()
    return torch.cat([counts, special])
