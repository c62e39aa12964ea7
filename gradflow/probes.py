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

QUANTITIES = ("grad_norm", "bias_grad_norm", "weight_norm", "signal_norm", "act_mean", "act_std",
              "act_saturated", "act_dead", "update_ratio")
_Q = {q: i for i, q in enumerate(QUANTITIES)}
_NAN = float("nan")


class Probes:
    def __init__(self, model, activation: str):
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
        self._before: list[torch.Tensor] | None = None

    def _on_layer_output(self, i):
        def hook(module, inputs, z):
            if isinstance(z, tuple):  # e.g. a cell returning (h, c): the first is the state
                z = z[0]
            if self.armed and z.requires_grad:
                batch = z.shape[0]

                def on_grad(g):  # dL/dz_l for the batch: reduce on device, keep one scalar
                    self._signal[i] = g.detach().float().pow(2).sum().mul(batch).sqrt()

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
        return self._table

    def before_update(self) -> None:
        self._before = [w.detach().clone() for w in self.weights]

    def after_update(self) -> None:
        diff = torch._foreach_sub([w.detach() for w in self.weights], self._before)
        ratio = torch.stack(torch._foreach_norm(diff)) / torch.stack(torch._foreach_norm(self._before))
        self._table[self.weight_points, _Q["update_ratio"]] = ratio
        self._before = None

    def fetch(self) -> tuple[np.ndarray, np.ndarray]:
        """The probed step's table on the host (note: a device->host sync point) and its mask."""
        values = self._table.cpu().numpy().astype(np.float64)
        mask = self.applicable.copy()
        if np.isnan(values[self.weight_points, _Q["update_ratio"]]).all():
            mask[:, _Q["update_ratio"]] = False  # no update was taken at this step (the last one)
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

