"""The activation registry against torch: phi is the module the models use, phi' its autograd
derivative, and the gain torch.nn.init.calculate_gain's where torch defines one."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gradflow import activations
from gradflow.activations import ACTIVATIONS

# from -12 to 12 (tails, where sigmoid/tanh saturate and elu/selu approach their floor) through 0
X = np.concatenate([np.linspace(-12.0, 12.0, 2001), [-1e-7, 1e-7, 30.0, -30.0]])
# torch.nn.init.calculate_gain has no value for these; gradflow uses ReLU's sqrt(2) for the unbounded
# ReLU-like ones and 1 for softsign (a bounded tanh-like curve with slope 1 at 0)
NO_TORCH_GAIN = {"elu": math.sqrt(2.0), "gelu": math.sqrt(2.0), "silu": math.sqrt(2.0),
                 "softplus": math.sqrt(2.0), "softsign": 1.0}


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_phi_is_the_torch_module(name):
    act = ACTIVATIONS[name]
    x = torch.tensor(X, dtype=torch.float64)
    expect = act.module().double()(x).numpy()
    np.testing.assert_allclose(act.phi(X), expect, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_dphi_is_the_autograd_derivative(name):
    act = ACTIVATIONS[name]
    x = torch.tensor(X, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(act.module().double()(x).sum(), x)
    np.testing.assert_allclose(act.dphi(X), grad.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_gain_is_torchs(name):
    act = ACTIVATIONS[name]
    if name in NO_TORCH_GAIN:
        with pytest.raises(ValueError):
            torch.nn.init.calculate_gain(name)
        assert act.gain == pytest.approx(NO_TORCH_GAIN[name], rel=1e-15)
    else:
        param = activations.LEAKY_SLOPE if name == "leaky_relu" else None
        torch_name = "linear" if name == "linear" else name
        assert act.gain == pytest.approx(torch.nn.init.calculate_gain(torch_name, param), rel=1e-15)


def test_selu_constants_and_gain_are_torchs():
    x = torch.tensor([-1.0, 1.0], dtype=torch.float64)
    y = torch.nn.functional.selu(x)
    assert y[1].item() == pytest.approx(activations.SELU_SCALE, rel=1e-15)
    assert y[0].item() == pytest.approx(activations.SELU_SCALE * activations.SELU_ALPHA * math.expm1(-1.0), rel=1e-14)
    assert ACTIVATIONS["selu"].gain == torch.nn.init.calculate_gain("selu") == 0.75


def test_saturation_and_dead_flags_match_the_curves():
    wide = np.concatenate([X, [-1e4, 1e4]])
    for name, act in ACTIVATIONS.items():
        y = act.phi(wide)
        if act.saturation:  # a bounded curve whose tails pass both thresholds, by at most 0.01
            lo, hi = act.saturation
            assert lo - 0.01 <= y.min() < lo and hi < y.max() <= hi + 0.01, name
            # (each bound 0.01 inside its tail's limit: softsign's at 0.999 counted 0.003 of a layer saturated
            # where 0.99 counts 0.75)
            assert lo == pytest.approx(y.min() + 0.01, abs=1e-3) and hi == pytest.approx(y.max() - 0.01, abs=1e-3), name
        if act.can_die:  # an exactly-zero output with a zero derivative exists
            assert ((y == 0) & (act.dphi(wide) == 0)).any(), name
