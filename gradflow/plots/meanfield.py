"""What mean-field theory predicts for the lines of a figure, and where it applies."""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

Q_STAR_ZERO = 1e-8  # pre-activation variance this small is a forward signal that has died out
# activations whose derivative does not depend on the pre-activation's scale: chi1 is the same at every q
SCALE_FREE = ("linear", "relu", "leaky_relu")
# at q* = 0 the length map's own factor is chi1 (q_(l+1) ~ chi1 q_l for an odd activation with phi'(0) = 1):
# at or below this the length has halved per layer and sits at q* within a few layers (our threshold)
FAST_TO_ZERO = 0.5
GRID_THEORIES = ("6xi_c", "xi_c", "chi1=1")  # the mean-field curves a grid can carry


def python_value(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def _predict(config: Mapping[str, Any], cache: dict) -> Any:
    """theory.predict for a group's config, or None when there is no theory (yet) or no prediction."""
    config = {k: v for k, v in config.items() if k not in ("source", "run")}  # where it came from, not what
    key = tuple(sorted((k, repr(v)) for k, v in config.items()))
    if key not in cache:
        try:
            from gradflow import theory  # imported late: plots work before/without the theory module
        except ImportError:
            cache[key] = None
        else:
            cache[key] = theory.predict({k: python_value(v) for k, v in config.items()})
    return cache[key]


def chi1_for(config: Mapping[str, Any], weight_gradient: bool, cache: dict) -> float | None:
    """The predicted chi1 for a group, if the prediction applies to what is drawn.

    chi1 is the per-layer factor of the back-propagated signal's square where the forward length sits
    at its fixed point q*. With q* = 0 or inf (relu or tanh without bias, relu with sw2 > 2) the
    length never gets there: it decays or grows layer by layer. For a scale-free activation (relu,
    leaky relu, linear) chi1 is the same at every length, so the signal still scales as
    sqrt(chi1)^(L - l); for any other it does only where the length reaches q* = 0 within a few
    layers, its factor per layer (chi1 itself there) at most FAST_TO_ZERO: tanh under Glorot's standard
    init (sw2 = 1/3) does; at Xavier's sw2 = 1, sb2 = 0 (chi1 = 1 at q* = 0) the length falls only as
    ~1/l and each layer's own chi1 stays below 1, so the measured signal falls where the line would
    stay flat: no line. The weight gradient dL/dW_l = signal_l x
    activation_(l-1) follows chi1 only at a finite, nonzero q*: elsewhere the activation norm changes
    per layer too and can cancel the signal's trend. A q* below Q_STAR_ZERO counts as 0: an
    integrator's residue (7.6e-16 for tanh at sw2 = 1, sb2 = 0) is no fixed point the forward signal
    could sit at.
    """
    mf = _predict(config, cache)
    if mf is None:
        return None
    chi1 = float(mf.chi1)
    if not (math.isfinite(chi1) and chi1 > 0):
        return None
    q_star = float(getattr(mf, "q_star", math.nan))
    if Q_STAR_ZERO < q_star < math.inf:
        return chi1
    if weight_gradient:
        return None
    if config.get("model.activation") in SCALE_FREE or (q_star <= Q_STAR_ZERO and chi1 <= FAST_TO_ZERO):
        return chi1
    return None


def effective_sw2(config: Mapping[str, Any]) -> float | None:
    """The sigma_w^2 of the Gaussian init a run's init matches (xavier: gain^2, kaiming on ReLU: 2,
    standard: 1/3, meanfield: init.sw2), or None where theory does not know the scheme."""
    from gradflow import theory

    activation = config.get("model.activation")
    if activation is None:
        return None
    params = theory.equivalent_sw2({k: python_value(v) for k, v in config.items()}, str(activation))
    return None if params is None else params[0]
