"""The fully connected network: input -> `depth` hidden layers -> linear head."""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from gradflow import activations
from gradflow.config import residual_alpha
from gradflow.models import ProbePoint, make_norm


class Hidden(nn.Module):
    """One hidden layer: weight layer, optional norm, activation, optional residual skip.

    The weight layer is a Linear here and a Conv in the CNN; everything else is shared.
    """

    def __init__(self, layer: nn.Module, norm: nn.Module, act: str, residual: bool, alpha: float | str):
        super().__init__()
        self.layer = layer
        self.norm = norm
        self.act = activations.get(act).module()
        self.residual = residual
        if residual and alpha == "learnable":
            self.alpha = nn.Parameter(torch.zeros(()))  # SkipInit (De & Smith 2020): the branch starts switched off
        else:
            self.alpha = alpha

    def forward(self, h):  # (batch, d_in, *spatial) -> (batch, d_out, *spatial)
        branch = self.act(self.norm(self.layer(h)))
        return h + self.alpha * branch if self.residual else branch


class MLP(nn.Module):
    def __init__(self, d_in: int, width: int, depth: int, n_out: int, act: str, norm: str = "none",
                 skip: str = "none", alpha: float | str = 1.0, eps: float = 1e-5):
        super().__init__()
        # the first layer changes the width, so it never has a skip; the others may
        self.hidden = nn.ModuleList(
            Hidden(nn.Linear(d_in if i == 0 else width, width), make_norm(norm, width, eps), act,
                   skip == "residual" and i > 0, alpha)
            for i in range(depth)
        )
        self.head = nn.Linear(width, n_out)
        self.probe_points = [ProbePoint(f"linear{i}", h.layer, h.act) for i, h in enumerate(self.hidden)]
        self.probe_points.append(ProbePoint("head", self.head, None))

    @classmethod
    def from_config(cls, cfg, input_shape, n_classes):
        m = cfg.model
        return cls(math.prod(input_shape), m.width, m.depth, n_classes, m.activation, cfg.norm.name, m.skip,
                   residual_alpha(m.alpha, m.depth), cfg.norm.eps)

    def forward(self, x):  # (batch, *input_shape) -> (batch, n_out) logits
        h = x.flatten(1)
        for layer in self.hidden:
            h = layer(h)
        return self.head(h)
