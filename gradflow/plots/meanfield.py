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


# the weight gradient's line only where the correlation map settles within this many layers (ours): a batch's
# dL/dW_l = (1/B) sum_b signal_b activation_b^T sums its examples, so its norm also carries their correlations,
# which move with depth on the scale xi_c, not chi1. Measured on a 60-layer width-500 tanh net at q* (the
# edge-of-chaos preset, 512 Gaussian inputs), the line at the input over the measured value: 1.6 and 1.25 where
# xi_c = 3.6 and 7.0 (sigma_w^2 = 1 and 4; over 4 decades and 3.5), 2.6, 2.3 and 2.7 where it is 15.8, 25 and
# inf (1.5, 2 and 1.76, the edge; over 1 decade or less). The signal's line (per example, the chi1 fit's
# quantity) holds at all of them.
WEIGHT_LINE_XI_C = 8.0
# the legend entry of a figure that left such a line out (a profile's, a ratio figure's)
WEIGHT_LINE_NOTE = (f"no mean-field line where ξ_c > {WEIGHT_LINE_XI_C:g}:\nthe batch's correlations move it;\n"
                    "--quantity signal_norm")


def weight_line_left(config: Mapping[str, Any], cache: dict) -> bool:
    """Whether the weight gradient's line is left out for the correlations alone (xi_c > WEIGHT_LINE_XI_C at a
    finite, nonzero q*, where it would otherwise be drawn): a figure says so."""
    from gradflow import theory

    mf = _predict(config, cache)
    return mf is not None and theory.Q_STAR_ZERO < float(getattr(mf, "q_star", math.nan)) < math.inf and \
        math.isfinite(float(mf.chi1)) and float(mf.chi1) > 0 and not float(mf.xi_c) <= WEIGHT_LINE_XI_C


def chi1_for(config: Mapping[str, Any], weight_gradient: bool, cache: dict) -> float | None:
    """The predicted chi1 for a group, if the prediction applies to what is drawn: the back-propagated
    signal where `theory.signal_law_applies`; the weight gradient dL/dW_l = signal_l x activation_(l-1)
    only at a finite, nonzero q* (elsewhere the activation norm changes per layer too and can cancel the
    signal's trend) and xi_c <= WEIGHT_LINE_XI_C (`weight_line_left`)."""
    from gradflow import theory

    mf = _predict(config, cache)
    if mf is None:
        return None
    chi1 = float(mf.chi1)
    if not (math.isfinite(chi1) and chi1 > 0):
        return None
    q_star = float(getattr(mf, "q_star", math.nan))
    if theory.Q_STAR_ZERO < q_star < math.inf:
        return None if weight_gradient and weight_line_left(config, cache) else chi1
    if weight_gradient:
        return None
    return chi1 if theory.signal_law_applies(str(config.get("model.activation")), q_star, chi1) else None
