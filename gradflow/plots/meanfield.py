"""What mean-field theory predicts for the lines of a figure, and where it applies."""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

GRID_THEORIES = ("6xi_c", "xi_c", "chi1=1")  # the mean-field curves a grid can carry


def python_value(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def _predict(config: Mapping[str, Any], cache: dict) -> Any:
    """theory.predict for a group's config, or None where it makes no prediction."""
    config = {k: v for k, v in config.items() if k not in ("source", "run")}  # where it came from, not what
    key = tuple(sorted((k, repr(v)) for k, v in config.items()))
    if key not in cache:
        from gradflow import theory  # (imported where a figure asks for a prediction)

        cache[key] = theory.predict({k: python_value(v) for k, v in config.items()})
    return cache[key]


def chi1_for(config: Mapping[str, Any], weight_gradient: bool, cache: dict) -> float | None:
    """The predicted chi1 for a group, if the prediction applies to what is drawn: the back-propagated
    signal where `theory.signal_law_applies`; the weight gradient dL/dW_l = signal_l x activation_(l-1)
    only at a finite, nonzero q* (elsewhere the activation norm changes per layer too and can cancel the
    signal's trend)."""
    from gradflow import theory

    mf = _predict(config, cache)
    if mf is None:
        return None
    chi1 = float(mf.chi1)
    if not (math.isfinite(chi1) and chi1 > 0):
        return None
    q_star = float(getattr(mf, "q_star", math.nan))
    if theory.Q_STAR_ZERO < q_star < math.inf:
        return chi1
    if weight_gradient:
        return None
    return chi1 if theory.signal_law_applies(str(config.get("model.activation")), q_star, chi1) else None
