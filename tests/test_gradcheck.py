"""gradflow gradcheck: backprop agrees with central differences in float64 for every family at a tiny size,
and a deliberately wrong backward is caught."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from gradflow.config import compose
from gradflow.gradcheck import check_model, gradcheck

BOUND = 1e-6  # the backprop-vs-fd claim: max relative error in float64

FAMILIES = {
    "mlp": ["data=mnist1d", "model=mlp", "model.depth=3", "model.width=16"],
    "cnn": ["data=mnist1d", "model=cnn", "model.depth=3", "model.channels=4"],
    "resnet": ["data=mnist1d", "model=resnet", "model.depth=7", "model.widths=[4,8,8]"],
    "rnn": ["data=adding", "data.T=10", "model=rnn", "model.hidden=8"],
    "lstm": ["data=adding", "data.T=10", "model=lstm", "model.hidden=8"],
    "transformer": ["data=chars", "model=transformer", "model.depth=1", "model.d_model=16", "model.heads=2"],
}


@pytest.mark.parametrize("family", FAMILIES)
def test_backprop_matches_finite_differences(family):
    r = gradcheck(compose([*FAMILIES[family], "threads=1"]), entries=6)
    assert r.max_rel < BOUND, [(p.name, p.max_rel) for p in r.params]
    # every parameter tensor is checked, and the counts add up
    assert r.n_params == sum(p.size for p in r.params) and all(p.checked == min(6, p.size) for p in r.params)
    assert r.fd_full_s == pytest.approx(r.fd_entry_s * r.n_params) and r.grad_s > 0 and r.mode == "reverse"


class ScaledGrad(torch.autograd.Function):
    """Identity forward, a backward that is wrong by a factor 1.5."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        return 1.5 * g


class Wrong(nn.Module):
    def __init__(self):
        super().__init__()
        self.first, self.second = nn.Linear(5, 7), nn.Linear(7, 3)

    def forward(self, x):
        return self.second(torch.tanh(ScaledGrad.apply(self.first(x))))


def test_a_wrong_backward_is_caught():
    torch.manual_seed(0)
    model = Wrong().double()
    x, y = torch.randn(8, 5, dtype=torch.float64), torch.randint(0, 3, (8,))
    r = check_model(model, lambda m: nn.functional.cross_entropy(m(x), y), entries=10)
    err = {p.name: p for p in r.params}
    # below the wrong function every gradient is 1.5x too large: |1.5 g - g| / 1.5 |g| = 1/3
    assert err["first.weight"].median_rel == pytest.approx(1 / 3, rel=1e-4)
    assert err["first.bias"].max_rel == pytest.approx(1 / 3, rel=1e-4)
    # above it backprop is right
    assert err["second.weight"].max_rel < BOUND and err["second.bias"].max_rel < BOUND
    assert r.max_rel > 0.3


def test_forward_mode_without_a_forward_formula_is_one_line():
    """An op with no forward-mode formula (here a custom Function without jvp; on CUDA, the fused LSTM
    cell) is named in a GradflowError, not a traceback."""
    from gradflow.errors import GradflowError

    model = Wrong().double()
    x, y = torch.randn(8, 5, dtype=torch.float64), torch.randint(0, 3, (8,))
    with pytest.raises(GradflowError, match=r"^gradcheck.mode=forward: .*jvp.*try device=cpu\)$"):
        check_model(model, lambda m: nn.functional.cross_entropy(m(x), y), entries=2, mode="forward")


def test_cli_table_and_bad_override(cli):
    out = cli("gradcheck", "data=mnist1d", "model.depth=2", "model.width=8", "threads=1",
              "--entries", "3")
    assert out.exit_code == 0, out.output
    assert "layer.weight" in out.output and "head.bias" in out.output and "x the cost" in out.output
    out = cli("gradcheck", "model.depth=abc")
    assert out.exit_code == 1 and "model.depth" in out.output and "Traceback" not in out.output
