"""The fully connected network: input layer -> hidden blocks -> linear head.

`depth` counts the hidden weight layers (the input layer included); each is Linear -> optional
norm -> activation. With skip=residual, layers 2..depth form blocks of `branch_layers` layers
that add their branch to their input, h <- h + alpha * branch(h). A one-layer branch keeps its
activation (otherwise the branch would be linear); a longer branch ends at its last weight layer,
as in ResNet and transformer MLP blocks, so the skip adds a linear readout of nonlinear features.

Fixup (Zhang, Dauphin & Ma 2019, Sec. 3), no normalization: branches of m >= 2 layers, a scalar
bias before each weight layer and each activation, a scalar multiplier (starting at 1) and a
scalar bias on each branch's output; `post_init` scales every branch layer but the last by
L^(-1/(2m-2)) (L residual blocks) and zeroes the last one and the head, so at init every block
is the identity and the network's hidden output is its input layer's.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from gradflow import activations
from gradflow.errors import GradflowError
from gradflow.models import ProbePoint, make_norm


class ScalarAffine(nn.Module):
    """x * scale + bias with learnable scalars (scale optional): what Fixup puts where BN was."""

    def __init__(self, scale: bool = False):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(())) if scale else None
        self.bias = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return (x * self.scale if self.scale is not None else x) + self.bias


class Layer(nn.Module):
    """One hidden layer: (Fixup's scalar bias), weight layer, norm, then the activation unless `act` is None.

    The weight layer is a Linear here and a Conv in the CNN; everything else is shared.
    """

    def __init__(self, layer: nn.Module, norm: nn.Module, act: str | None, pre: nn.Module | None = None):
        super().__init__()
        self.pre = pre if pre is not None else nn.Identity()
        self.layer = layer
        self.norm = norm
        self.act = activations.get(act).module() if act is not None else None

    # None, or a callable that each call hands (the weight layer's output, the layer's output): an observer
    # for a fraction of a forward hook's cost (nn.Module's hook dispatch takes microseconds per call)
    tap = None

    def forward(self, h):  # (batch, d_in, *spatial) -> (batch, d_out, *spatial)
        z = self.layer(self.pre(h))
        y = self.norm(z)
        if self.act is not None:
            y = self.act(y)
        if self.tap is not None:
            self.tap(z, y)
        return y


class Block(nn.Module):
    """h + alpha * branch(h) (residual) or branch(h), the branch being one or more Layers."""

    def __init__(self, layers: list[Layer], residual: bool, alpha: float | str = 1.0):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.residual = residual
        if residual and alpha == "learnable":
            self.alpha = nn.Parameter(torch.zeros(()))  # SkipInit (De & Smith 2020): the branch starts switched off
        else:
            self.alpha = alpha

    def forward(self, h):
        branch = h
        for layer in self.layers:
            branch = layer(branch)
        return h + self.alpha * branch if self.residual else branch


def branch_scale(alpha: float | str, depth: int) -> float | str:
    """model.alpha as the block uses it: "inv_sqrt_depth" -> 1/sqrt(depth); a number; "learnable" as is."""
    if alpha == "inv_sqrt_depth":
        return depth ** -0.5
    return alpha if alpha == "learnable" else float(alpha)


class MLP(nn.Module):
    def __init__(self, d_in: int, width: int, depth: int, n_out: int, act: str, norm: str = "none",
                 skip: str = "none", alpha: float | str = 1.0, eps: float = 1e-5, branch_layers: int = 1,
                 fixup: bool = False):
        super().__init__()
        residual = skip == "residual"
        m = branch_layers if residual else 1
        if (depth - 1) % m:
            raise GradflowError(f"model.depth={depth} must be 1 + a multiple of model.branch_layers={m}")
        self.fixup, self.branch_layers = fixup, m

        def branch_layer(last: bool) -> Layer:
            if not fixup:
                return Layer(nn.Linear(width, width), make_norm(norm, width, eps), None if last and m > 1 else act)
            # Fixup: scalar biases before the linear layer and the activation; multiplier and bias at the end
            return Layer(nn.Linear(width, width, bias=False), ScalarAffine(scale=last), None if last else act,
                         pre=ScalarAffine())

        # the first layer changes the width, so it never has a skip
        first = Block([Layer(nn.Linear(d_in, width), make_norm(norm, width, eps), act)], residual=False)
        blocks = [Block([branch_layer(j == m - 1) for j in range(m)], residual, alpha) for _ in range((depth - 1) // m)]
        self.hidden = nn.ModuleList([first, *blocks])
        self.head = nn.Linear(width, n_out)
        layers = [layer for block in self.hidden for layer in block.layers]
        self.probe_points = [ProbePoint(f"linear{i}", layer.layer, layer.act, layer) for i, layer in enumerate(layers)]
        self.probe_points.append(ProbePoint("head", self.head, None))

    @classmethod
    def from_config(cls, cfg, input_shape, n_classes):
        m = cfg.model
        return cls(math.prod(input_shape), m.width, m.depth, n_classes, m.activation, cfg.norm.name, m.skip,
                   branch_scale(m.alpha, m.depth), cfg.norm.eps, m.branch_layers, m.variant == "fixup")

    @torch.no_grad()
    def post_init(self, cfg=None) -> None:
        """Fixup's rescaling, on top of the `init` scheme: every branch layer but the last x L^(-1/(2m-2)),
        the last and the head (weight and bias) zero. Other variants need nothing."""
        if not self.fixup:
            return
        blocks = self.hidden[1:]
        scale = len(blocks) ** (-1.0 / (2 * self.branch_layers - 2))
        for block in blocks:
            for layer in block.layers[:-1]:
                layer.layer.weight.mul_(scale)
            block.layers[-1].layer.weight.zero_()
        self.head.weight.zero_()
        self.head.bias.zero_()

    def features(self, x):  # (batch, *input_shape) -> (batch, width): the head's input
        h = x.flatten(1)
        for block in self.hidden:
            h = block(h)
        return h

    def forward(self, x):  # (batch, *input_shape) -> (batch, n_out) logits
        return self.head(self.features(x))
