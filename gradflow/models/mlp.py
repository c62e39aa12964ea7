"""The fully connected network: input -> `depth` hidden layers -> linear head."""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from gradflow import activations
from gradflow.config import residual_alpha
from gradflow.models import ProbePoint, make_norm


class Hidden(nn.Module):
    """One hidden layer: weight layer, optional norm, activation, optional residual skip."""

    def __init__(self, d_in: int, d_out: int, act: str, norm: str, residual: bool, alpha: float | str):
        super().__init__()
        self.linear = nn.Linear(d_in, d_out)
        self.norm = make_norm(norm, d_out)
        self.act = activations.get(act).module()
        self.residual = residual
        if residual and alpha == "learnable":
            self.alpha = nn.Parameter(torch.zeros(()))  # SkipInit (De & Smith 2020): the branch starts switched off
        else:
            self.alpha = alpha

    def forward(self, h):  # (batch, d_in) -> (batch, d_out)
        branch = self.act(self.norm(self.linear(h)))
        return h + self.alpha * branch if self.residual else branch


class MLP(nn.Module):
    def __init__(self, d_in: int, width: int, depth: int, n_out: int, act: str, norm: str = "none",
                 skip: str = "none", alpha: float | str = 1.0):
        super().__init__()
        # the first layer changes the width, so it never has a skip; the others may
        self.hidden = nn.ModuleList(
            Hidden(d_in if i == 0 else width, width, act, norm, skip == "residual" and i > 0, alpha)
            for i in range(depth)
        )
        self.head = nn.Linear(width, n_out)
        self.probe_points = [ProbePoint(f"linear{i}", h.linear, h.act) for i, h in enumerate(self.hidden)]
        self.probe_points.append(ProbePoint("head", self.head, None))

    @classmethod
    def from_config(cls, cfg, input_shape, n_classes):
        m = cfg.model
        return cls(math.prod(input_shape), m.width, m.depth, n_classes, m.activation, cfg.norm.name, m.skip,
                   residual_alpha(m.alpha, m.depth))

    def forward(self, x):  # (batch, *input_shape) -> (batch, n_out) logits
        h = x.flatten(1)
        for layer in self.hidden:
            h = layer(h)
        return self.head(h)
