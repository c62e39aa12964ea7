"""The activation registry: one definition of each nonlinearity, shared by models and theory.

Each entry carries the torch module the model uses, and numpy versions of phi and phi' that the
mean-field theory integrates. `tests/test_activations.py` checks the numpy pair against the torch
module and its autograd derivative, so model and theory cannot disagree on what "gelu" is.
This module imports no torch at import time (theory stays torch-free).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

_erf = np.vectorize(math.erf, otypes=[float])
_SQRT2 = math.sqrt(2.0)
_SQRT2PI = math.sqrt(2.0 * math.pi)

# SELU constants (Klambauer et al. 2017), as in torch.nn.SELU
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946
LEAKY_SLOPE = 0.01  # torch.nn.LeakyReLU's default negative slope


def _sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # overflow-free form


def _softplus(x):
    return np.logaddexp(0.0, x)


def _gelu(x):
    return 0.5 * x * (1.0 + _erf(x / _SQRT2))


def _dgelu(x):
    return 0.5 * (1.0 + _erf(x / _SQRT2)) + x * np.exp(-0.5 * x * x) / _SQRT2PI


@dataclass(frozen=True)
class Activation:
    name: str
    torch_name: str  # class name in torch.nn
    phi: Callable[[np.ndarray], np.ndarray]
    dphi: Callable[[np.ndarray], np.ndarray]
    gain: float  # the weight-scale gain for kaiming-style init (torch.nn.init.calculate_gain where defined)
    saturation: tuple[float, float] | None = None  # an output outside (lo, hi) counts as saturated
    can_die: bool = False  # a unit can be exactly zero with zero derivative (ReLU's dead units)
    piecewise_linear: bool = False  # theory uses exact expressions instead of quadrature

    def module(self):
        """A fresh torch.nn.Module computing phi."""
        import torch.nn as nn

        if self.name == "leaky_relu":
            return nn.LeakyReLU(LEAKY_SLOPE)
        return getattr(nn, self.torch_name)()


ACTIVATIONS: dict[str, Activation] = {
    a.name: a
    for a in [
        Activation("linear", "Identity", lambda x: x, lambda x: np.ones_like(x), 1.0, piecewise_linear=True),
        Activation("sigmoid", "Sigmoid", _sigmoid, lambda x: _sigmoid(x) * (1.0 - _sigmoid(x)), 1.0,
                   saturation=(0.01, 0.99)),
        Activation("tanh", "Tanh", np.tanh, lambda x: 1.0 - np.tanh(x) ** 2, 5.0 / 3.0,
                   saturation=(-0.99, 0.99)),
        Activation("relu", "ReLU", lambda x: np.maximum(x, 0.0), lambda x: (x > 0).astype(float), math.sqrt(2.0),
                   can_die=True, piecewise_linear=True),
        Activation("leaky_relu", "LeakyReLU", lambda x: np.where(x > 0, x, LEAKY_SLOPE * x),
                   lambda x: np.where(x > 0, 1.0, LEAKY_SLOPE), math.sqrt(2.0 / (1.0 + LEAKY_SLOPE**2)),
                   piecewise_linear=True),
        Activation("elu", "ELU", lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0.0))),
                   lambda x: np.where(x > 0, 1.0, np.exp(np.minimum(x, 0.0))), math.sqrt(2.0)),
        Activation("selu", "SELU",
                   lambda x: SELU_SCALE * np.where(x > 0, x, SELU_ALPHA * np.expm1(np.minimum(x, 0.0))),
                   lambda x: SELU_SCALE * np.where(x > 0, 1.0, SELU_ALPHA * np.exp(np.minimum(x, 0.0))), 0.75),
        Activation("gelu", "GELU", _gelu, _dgelu, math.sqrt(2.0)),
        Activation("silu", "SiLU", lambda x: x * _sigmoid(x),
                   lambda x: _sigmoid(x) * (1.0 + x * (1.0 - _sigmoid(x))), math.sqrt(2.0)),
        Activation("softsign", "Softsign", lambda x: x / (1.0 + np.abs(x)), lambda x: 1.0 / (1.0 + np.abs(x)) ** 2,
                   1.0, saturation=(-0.99, 0.99)),
        Activation("softplus", "Softplus", _softplus, _sigmoid, math.sqrt(2.0)),
    ]
}


def get(name: str) -> Activation:
    from gradflow.errors import GradflowError

    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise GradflowError(
            f"model.activation={name!r} is not a known activation; choices: {', '.join(ACTIVATIONS)}"
        ) from None
