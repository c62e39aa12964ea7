"""The probe registry: every per-layer quantity gradflow records, one entry each.

An entry says what the quantity is called, where it applies, how it is computed and how to label
it. `compute` receives the probed step's primitives on the host (gradflow.probes.core.PRIMITIVES:
one float64 array over the probe points each, NaN where a point has none), each reduced on the
device in one batched call over every probe point (foreach norms, stacked activation statistics)
and fetched in the step's one copy, and returns one value per point in point order (cells where
the quantity does not apply are masked).
This module imports no torch, so plots and `ls` can read labels without it.

Adding a quantity: one entry here (and, if it needs a new primitive, its reduction in
Probes.after_backward and its name in PRIMITIVES) plus its test against an independent autograd
recomputation in tests/test_probes.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

# where a quantity applies: the probe points that have ...
WEIGHT = "weight"  # a weight
BIAS = "bias"  # a bias
OUTPUT = "output"  # an output that the loss back-propagates through
ACTIVATION = "activation"  # a known activation module after them
SATURATING = "saturating"  # ... one that saturates (tanh, sigmoid, softsign)
DYING = "dying"  # ... one whose units can die (ReLU)
WHERE = (WEIGHT, BIAS, OUTPUT, ACTIVATION, SATURATING, DYING)

# when a quantity can be computed in a probed step
BACKWARD = "backward"  # once the gradients exist
UPDATE = "update"  # once the optimizer has taken the step's update


@dataclass(frozen=True)
class Quantity:
    name: str  # the `quantity` value in layers.parquet
    where: str  # one of WHERE: the probe points it applies to (elsewhere the cell is masked)
    compute: Callable[[Any], Any]  # the step's primitives (host arrays) -> (points,) array
    label: str  # axis / colorbar label: the symbol and what it is
    title: str  # a short name for titles and tables
    unit: str  # what one unit of the value is ("" for a plain number)
    meaning: str  # one line for the README and `--help`
    log: bool = True  # values span decades: draw on a log axis
    when: str = BACKWARD  # BACKWARD or UPDATE
    # made from the parameter's gradient (or the update it drives): masked where the parameter is frozen
    # (requires_grad False), which has neither
    needs_grad: bool = False
    symbol: str = ""  # its symbol as a terminal writes it, where tables and notes use one


QUANTITIES: dict[str, Quantity] = {q.name: q for q in [
    Quantity("grad_norm", WEIGHT, lambda s: s.grad_norm,
             r"$\|\partial L/\partial W\|$ (weight gradient norm)", "Weight-gradient norm", "",
             "||dL/dW_l||, L the batch-mean loss", needs_grad=True, symbol="‖∂L/∂W‖"),
    Quantity("bias_grad_norm", BIAS, lambda s: s.bias_grad_norm,
             r"$\|\partial L/\partial b\|$ (bias gradient norm)", "Bias-gradient norm", "",
             "||dL/db_l||", needs_grad=True),
    Quantity("weight_norm", WEIGHT, lambda s: s.weight_norm,
             r"$\|W\|$ (weight norm)", "Weight norm", "", "||W_l|| before the step's update"),
    Quantity("signal_norm", OUTPUT, lambda s: s.signal_norm,
             r"$\|\partial L/\partial z\|$ (back-propagated signal norm)", "Back-propagated signal norm", "",
             "RMS over the batch of each example's ||dL_i/dz_l,i||, as sqrt(B) ||dL/dZ_l||_F", symbol="‖∂L/∂z‖"),
    Quantity("act_mean", ACTIVATION, lambda s: s.act_sum / s.act_count,
             "activation mean", "Activation mean", "", "mean of the activation output after the layer", log=False),
    Quantity("act_std", ACTIVATION, lambda s: s.act_std,
             "activation standard deviation", "Activation std", "",
             "standard deviation (Bessel-corrected) of the activation output after the layer"),
    Quantity("act_saturated", SATURATING, lambda s: s.act_saturated / s.act_count,
             "fraction of saturated outputs", "Saturated outputs", "fraction",
             "tanh/softsign: |phi| > 0.99; sigmoid: outside [0.01, 0.99]", log=False),
    Quantity("act_dead", DYING, lambda s: s.act_dead / s.act_count,
             "fraction of outputs exactly 0", "Zero (dead) outputs", "fraction",
             "ReLU: fraction of outputs exactly zero over the batch (0.5 is a healthy ReLU layer's; a unit dead on "
             "every input is 1 for its column)", log=False),
    Quantity("update_ratio", WEIGHT, lambda s: s.update_norm / s.weight_norm,
             r"$\|\Delta W\| / \|W\|$ (update / weight ratio)", "Update-to-weight ratio", "",
             "||W_l(after) - W_l(before)|| / ||W_l(before)|| of the update taken at that step (plain SGD: "
             "lr ||d_l|| read from the optimizer, exact below the weights' float32 resolution)", when=UPDATE,
             needs_grad=True),
]}

# the family whose Jacobian spectra probe.jacobian records (probes/jacobian.py): its hidden layers map vectors
# to vectors. Others record none (a CNN's layer-to-layer Jacobian on CIFAR-10 is 32,768 x 32,768 per example);
# `gradflow run` and `plot --kind spectrum` say so
JACOBIAN_MODEL = "mlp"

# Histograms: fixed log-spaced magnitude bins, 4 per decade over [1e-12, 1e4), one set per sign,
# plus explicit counts of exact zeros, underflow (0 < |x| < 1e-12), overflow (|x| >= 1e4) and NaN/inf.
HIST_EDGES = 10.0 ** np.linspace(-12, 4, 16 * 4 + 1)
HIST_BINS = len(HIST_EDGES) - 1
HIST_KINDS = ("pos",) * HIST_BINS + ("neg",) * HIST_BINS + ("zero", "underflow", "overflow", "nonfinite")
# each kind's magnitude range [lo, hi), as stored in hist.parquet
HIST_LO = np.concatenate([HIST_EDGES[:-1], HIST_EDGES[:-1], [0.0, 0.0, HIST_EDGES[-1], np.nan]])
HIST_HI = np.concatenate([HIST_EDGES[1:], HIST_EDGES[1:], [0.0, HIST_EDGES[0], np.inf, np.nan]])
HIST_TENSORS = ("activation", "gradient")  # the activation output, and dL/dz at the layer's output
