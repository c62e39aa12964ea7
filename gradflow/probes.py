"""Per-layer signals at probed steps, computed on the device and fetched to the host once per step.

For every probe point l (weight layer l, 0 = nearest the input, the head last):
  grad_norm       ||dL/dW_l||                      (L = the batch-mean loss)
  bias_grad_norm  ||dL/db_l||
  weight_norm     ||W_l||
  update_ratio    ||W_l(after) - W_l(before)|| / ||W_l(before)||  of the step taken at that step
  signal_norm     sqrt(mean_i ||dL_i/dz_{l,i}||^2): the RMS over the batch of each example's
                  back-propagated signal at the layer's output z_l (Glorot & Bengio's
                  "back-propagated gradient"), computed as sqrt(B) * ||dL/dZ_l||_F
  act_mean/std    mean and std of the activation output that follows the layer
  act_saturated   fraction of saturated units (tanh/softsign |y| > 0.99, sigmoid outside [0.01, 0.99])
  act_dead        fraction of exactly-zero units (ReLU)
Probes never touch the optimizer's state or write files; the training loop calls them.
"""

from __future__ import annotations

import numpy as np
import torch

from gradflow import activations

# Histograms: fixed log-spaced magnitude bins, 4 per decade over [1e-12, 1e4), one set per sign,
# plus explicit counts of exact zeros, underflow (0 < |x| < 1e-12), overflow (|x| >= 1e4) and NaN/inf.
HIST_EDGES = 10.0 ** np.linspace(-12, 4, 16 * 4 + 1)
_NB = len(HIST_EDGES) - 1
HIST_KINDS = ("pos",) * _NB + ("neg",) * _NB + ("zero", "underflow", "overflow", "nonfinite")
HIST_TENSORS = ("activation", "gradient")  # the activation output, and dL/dz at the layer's output

QUANTITIES = ("grad_norm", "bias_grad_norm", "weight_norm", "signal_norm", "act_mean", "act_std",
              "act_saturated", "act_dead", "update_ratio")
_Q = {q: i for i, q in enumerate(QUANTITIES)}
_NAN = float("nan")


class Probes:
    def __init__(self, model, activation: str, histograms: bool = False):
        self.histograms = histograms
        self.points = model.probe_points
        self.names = [p.name for p in self.points]
        # points with a weight (layers); the others mark a state, e.g. h_t of a recurrent net
        self.weight_points = [i for i, p in enumerate(self.points) if getattr(p.layer, "weight", None) is not None]
        self.weights = [self.points[i].layer.weight for i in self.weight_points]
        self._has_bias = [getattr(p.layer, "bias", None) is not None for p in self.points]
        self.biases = [p.layer.bias for i, p in enumerate(self.points) if self._has_bias[i]]
        self.act = activations.get(activation)
        self.armed = False
        self._hooks = []
        for i, p in enumerate(self.points):
            self._hooks.append(p.layer.register_forward_hook(self._on_layer_output(i)))
            if p.activation is not None:
                self._hooks.append(p.activation.register_forward_hook(self._on_activation_output(i)))
        self.applicable = self._applicable()
        self._reset()

    # --- hooks: record only while armed, so unprobed steps pay almost nothing ---
    def _reset(self):
        n = len(self.points)
        self._signal: list[torch.Tensor | None] = [None] * n
        self._act_stats: list[torch.Tensor | None] = [None] * n
        self._hist: list[list[torch.Tensor | None]] = [[None, None] for _ in range(n)]
        self._before: list[torch.Tensor] | None = None

    def _on_layer_output(self, i):
        def hook(module, inputs, z):
            if isinstance(z, tuple):  # e.g. a cell returning (h, c): the first is the state
                z = z[0]
            if self.armed and z.requires_grad:
                batch = z.shape[0]

                def on_grad(g):  # dL/dz_l for the batch: reduce on device, keep one scalar
                    self._signal[i] = g.detach().float().pow(2).sum().mul(batch).sqrt()
                    if self.histograms:
                        self._hist[i][1] = histogram(g.detach())

                z.register_hook(on_grad)

        return hook

    def _on_activation_output(self, i):
        sat = self.act.saturation

        def hook(module, inputs, y):
            if not self.armed:
                return
            y = y.detach().float()
            stats = [y.mean(), y.std()]
            stats.append(((y < sat[0]) | (y > sat[1])).float().mean() if sat else y.new_tensor(_NAN))
            stats.append((y == 0).float().mean() if self.act.can_die else y.new_tensor(_NAN))
            self._act_stats[i] = torch.stack(stats)
            if self.histograms:
                self._hist[i][0] = histogram(y)

        return hook

    def _applicable(self) -> np.ndarray:
        """(points, quantities) mask of the values that exist (the head has no activation, ...)."""
        mask = np.ones((len(self.points), len(QUANTITIES)), dtype=bool)
        weighted = set(self.weight_points)
        for i, p in enumerate(self.points):
            if i not in weighted:
                mask[i, [_Q["grad_norm"], _Q["weight_norm"], _Q["update_ratio"]]] = False
            if not self._has_bias[i]:
                mask[i, _Q["bias_grad_norm"]] = False
            if p.activation is None:
                mask[i, [_Q["act_mean"], _Q["act_std"]]] = False
            if p.activation is None or self.act.saturation is None:
                mask[i, _Q["act_saturated"]] = False
            if p.activation is None or not self.act.can_die:
                mask[i, _Q["act_dead"]] = False
        return mask

    # --- the probed step ---
    def arm(self) -> None:
        self._reset()
        self.armed = True

    def after_backward(self) -> torch.Tensor:
        """(points, quantities) on device; update_ratio is filled by after_update."""
        self.armed = False
        dev = self.weights[0].device
        nan = torch.tensor(_NAN, device=dev)
        zero_grad = [torch.zeros((), device=dev)]
        grad = iter(torch._foreach_norm([w.grad if w.grad is not None else torch.zeros_like(w)
                                         for w in self.weights]))
        weight = iter(torch._foreach_norm([w.detach() for w in self.weights]))
        bias_grad = iter(torch._foreach_norm([b.grad if b.grad is not None else torch.zeros_like(b)
                                              for b in self.biases]) if self.biases else zero_grad)
        weighted = set(self.weight_points)
        rows = []
        for i in range(len(self.points)):
            act = self._act_stats[i] if self._act_stats[i] is not None else nan.expand(4)
            has_w = i in weighted
            rows.append(torch.cat([
                torch.stack([next(grad) if has_w else nan, next(bias_grad) if self._has_bias[i] else nan,
                             next(weight) if has_w else nan,
                             self._signal[i] if self._signal[i] is not None else nan]),
                act, nan.view(1)]))
        self._table = torch.stack(rows)
        if self.histograms:  # (points, 2, kinds); NaN where a point has no such tensor
            empty = torch.full((len(HIST_KINDS),), _NAN, device=dev)
            self._hist_table = torch.stack([torch.stack([h if h is not None else empty for h in pair])
                                            for pair in self._hist])
        return self._table

    def before_update(self) -> None:
        self._before = [w.detach().clone() for w in self.weights]

    def after_update(self) -> None:
        diff = torch._foreach_sub([w.detach() for w in self.weights], self._before)
        ratio = torch.stack(torch._foreach_norm(diff)) / torch.stack(torch._foreach_norm(self._before))
        self._table[self.weight_points, _Q["update_ratio"]] = ratio
        self._before = None

    def fetch_histograms(self) -> np.ndarray:
        """(points, 2, kinds) counts of the probed step (note: a host sync point, with fetch)."""
        return self._hist_table.cpu().numpy()

    def fetch(self) -> tuple[np.ndarray, np.ndarray]:
        """The probed step's table on the host (note: a device->host sync point) and its mask."""
        values = self._table.cpu().numpy().astype(np.float64)
        mask = self.applicable.copy()
        if np.isnan(values[self.weight_points, _Q["update_ratio"]]).all():
            mask[:, _Q["update_ratio"]] = False  # no update was taken at this step (the last one)
        mask[values[:, _Q["weight_norm"]] == 0, _Q["update_ratio"]] = False  # undefined for a zero weight (Fixup)
        return values, mask

    def remove(self) -> None:
        for h in self._hooks:
            h.remove()


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
    bins = (torch.bucketize(a, edges, right=True) - 1).clamp(0, _NB - 1) + _NB * (x < 0)
    bins = torch.where(in_range, bins, torch.full_like(bins, 2 * _NB))  # out of range -> a dump slot
    counts = torch.zeros(2 * _NB + 1, device=x.device).index_add_(0, bins, torch.ones_like(a))[: 2 * _NB]
    special = torch.stack([(x == 0).sum(), (finite & (a > 0) & (a < edges[0])).sum(),
                           (finite & (a >= edges[-1])).sum(), (~finite).sum()]).float()
    return torch.cat([counts, special])


def singular_values(jac: torch.Tensor) -> np.ndarray:
    """(n, out, in) -> (n, min(out, in)) singular values, descending: the eigenvalues of the smaller
    Gram matrix in float64 (several times faster than an SVD, accurate to ~1e-9 relative)."""
    j = jac.double()
    gram = j @ j.transpose(1, 2) if j.shape[1] <= j.shape[2] else j.transpose(1, 2) @ j
    return torch.linalg.eigvalsh(gram).clamp(min=0).sqrt().flip(-1).cpu().numpy()


def jacobian_spectra(model, x: torch.Tensor, per_layer: bool = True) -> list[tuple[int, str, int, np.ndarray]]:
    """Singular values of the input-output Jacobian d h_L / d x of the hidden layers (the head left out)
    and of every layer-to-layer Jacobian d h_l / d h_(l-1), exact via torch.func, per input example.

    Returns rows (sample, scope, layer, singular values) with scope "input_output" (layer = last
    hidden) or "layer" (with `per_layer`). Needs a model with `hidden` layers (the MLP); other families return [].
    """
    from torch.func import jacfwd, jacrev, vmap

    if not hasattr(model, "hidden"):
        return []
    was_training = model.training
    model.eval()  # per-example Jacobians: batchnorm uses its running statistics
    try:
        with torch.no_grad():
            states = [x.flatten(1)]
            for layer in model.hidden:
                states.append(layer(states[-1]))

        def body(v):  # one example (d_in,) -> last hidden (width,)
            h = v.unsqueeze(0)
            for layer in model.hidden:
                h = layer(h)
            return h.squeeze(0)

        def jacobian(f, v, n_out):  # forward mode when it needs fewer passes
            return vmap(jacfwd(f) if v.shape[1] <= n_out else jacrev(f))(v).detach()

        rows = []
        width = states[-1].shape[1]
        for n, sv in enumerate(singular_values(jacobian(body, states[0], width))):
            rows.append((n, "input_output", len(model.hidden) - 1, sv))
        if per_layer:
            for l, layer in enumerate(model.hidden):
                jac = jacobian(lambda v, layer=layer: layer(v.unsqueeze(0)).squeeze(0), states[l], width)
                for n, sv in enumerate(singular_values(jac)):
                    rows.append((n, "layer", l, sv))
        return rows
    finally:
        model.train(was_training)
