"""Layers whose weight is parametrized (spectral norm, weight norm, orthogonal, a LoRA; torch's legacy spectral_norm
and weight_norm hooks) are probe points named by their module path; their weight quantities are those of the
tensors the optimizer trains behind the weight, checked against plain autograd on a twin."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import parametrize

import gradflow
from gradflow.models.discover import discover
from tests.test_transformer import retaining


class LoRA(nn.Module):
    """W + B A, of rank 2 (Hu et al. 2021), on a frozen base weight."""

    def __init__(self, out_features: int, in_features: int):
        super().__init__()
        self.A = nn.Parameter(0.3 * torch.randn(2, in_features))
        self.B = nn.Parameter(0.3 * torch.randn(out_features, 2))

    def forward(self, w):
        return w + self.B @ self.A


def _parametrized(kind: str, layer: nn.Linear) -> nn.Linear:
    if kind == "lora":
        parametrize.register_parametrization(layer, "weight", LoRA(*layer.weight.shape))
        layer.parametrizations.weight.original.requires_grad_(False)
        return layer
    with warnings.catch_warnings():  # (the legacy hooks' deprecation)
        warnings.simplefilter("ignore", FutureWarning)
        return {"spectral_norm": nn.utils.parametrizations.spectral_norm,
                "weight_norm": nn.utils.parametrizations.weight_norm,
                "orthogonal": nn.utils.parametrizations.orthogonal,
                "legacy_spectral_norm": nn.utils.spectral_norm, "legacy_weight_norm": nn.utils.weight_norm}[kind](layer)


# the trainable tensors behind layer 2's weight, by name: its weight quantities are their joint norms
BEHIND = {"spectral_norm": ["parametrizations.weight.original"],
          "weight_norm": ["parametrizations.weight.original0", "parametrizations.weight.original1"],
          "orthogonal": ["parametrizations.weight.original"],
          "lora": ["parametrizations.weight.0.A", "parametrizations.weight.0.B"],
          "legacy_spectral_norm": ["weight_orig"], "legacy_weight_norm": ["weight_g", "weight_v"]}


def _net(kind: str) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.LeakyReLU(), _parametrized(kind, nn.Linear(8, 8)), nn.LeakyReLU(),
                         nn.Linear(8, 3))


def _optimizer(name: str, model: nn.Sequential) -> torch.optim.Optimizer:
    if name == "adam":  # (the update read from a copy of the weights)
        return torch.optim.Adam(model.parameters(), lr=0.01)
    # plain SGD's update read from its momentum buffers, at another lr for the parametrized layer's tensors
    inner = {id(p) for p in model[2].parameters()}
    return torch.optim.SGD([{"params": [p for p in model.parameters() if id(p) not in inner]},
                            {"params": list(model[2].parameters()), "lr": 0.03}], lr=0.1, momentum=0.9)


def _joint_norm(tensors) -> torch.Tensor:
    return torch.sqrt(sum(t.detach().double().pow(2).sum() for t in tensors))


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("kind", list(BEHIND))
def test_a_parametrized_layer_is_probed_as_the_tensors_it_is_trained_through(tmp_path, kind, optimizer):
    model, reference = _net(kind), _net(kind)
    x, y = torch.randn(24, 4), torch.randint(0, 3, (24,))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing "not probed": the parametrization is part of layer 2's weight
        assert [p.name for p in discover(model, x)] == ["0", "2", "4"]
    opt = _optimizer(optimizer, model)
    rec = gradflow.Recorder(model, tmp_path / "run", every=1)
    for step in range(3):
        opt.zero_grad()
        with rec.step(step):
            loss = F.cross_entropy(model(x[step * 8:]), y[step * 8:])
            loss.backward()
        opt.step()
    rec.close()
    layers = gradflow.load(tmp_path / "run")

    ref_opt = _optimizer(optimizer, reference)
    for step in range(3):
        outs, acts = {}, {}
        hooks = [reference[k].register_forward_hook(retaining(outs, k)) for k in (0, 2)]
        hooks += [reference[k + 1].register_forward_hook(lambda m, i, a, k=k: acts.update({k: a.detach()}))
                  for k in (0, 2)]
        ref_opt.zero_grad()
        F.cross_entropy(reference(x[step * 8:]), y[step * 8:]).backward()
        for h in hooks:
            h.remove()
        behind = {0: [reference[0].weight], 2: [reference[2].get_parameter(n) for n in BEHIND[kind]]}
        before = {k: [t.detach().clone() for t in ts] for k, ts in behind.items()}
        ref_opt.step()
        got = layers[layers.step == step].set_index(["name", "quantity"])["value"]
        for k in (0, 2):
            z, a = outs[k], acts[k]
            expect = {"grad_norm": _joint_norm(t.grad for t in behind[k]), "weight_norm": _joint_norm(before[k]),
                      "update_ratio": _joint_norm(t - b for t, b in zip(behind[k], before[k])) / _joint_norm(before[k]),
                      "bias_grad_norm": reference[k].bias.grad.norm(),
                      "signal_norm": (z.shape[0] * (z.grad ** 2).sum()).sqrt(),
                      "act_mean": a.mean(), "act_std": a.std()}
            assert set(got[str(k)].index) == set(expect), (kind, k)  # everything else masked, not made up
            for q, v in expect.items():
                assert got[(str(k), q)] == pytest.approx(float(v), rel=1e-4, abs=1e-7), (kind, step, k, q)


def test_a_net_of_parametrized_layers_alone_is_probed_and_init_says_it_cannot_reinitialize_them():
    from types import SimpleNamespace

    from gradflow.errors import GradflowError
    from gradflow.models.init import initialize

    sn = nn.utils.parametrizations.spectral_norm
    model = nn.Sequential(sn(nn.Linear(4, 8)), nn.Tanh(), sn(nn.Linear(8, 2)))  # ("has no layer gradflow probes")
    model.probe_points = discover(model, torch.randn(5, 4))
    assert [(p.name, p.activation) for p in model.probe_points] == [("0", model[1]), ("2", None)]
    with pytest.raises(GradflowError, match=r"init=orthogonal cannot re-initialize a parametrized weight .*0, 2\); "
                                            r"use init=keep"):
        initialize(model, SimpleNamespace(name="orthogonal"), "tanh")
