"""The convolutional network: input -> `depth` conv layers of `channels` channels -> global average pool -> head.

The conv counterpart of the MLP: each hidden layer is conv, optional norm, activation, optional
residual skip, at a constant number of channels, so depth studies compare like with like.
1D signals are (length,) or (channels, length), images (channels, height, width).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from gradflow.errors import GradflowError
from gradflow.models import ProbePoint, make_norm
from gradflow.models.mlp import Block, Layer, branch_scale

CONV = {1: nn.Conv1d, 2: nn.Conv2d}


def conv_layout(input_shape: tuple[int, ...], dims: int) -> tuple[tuple[int, ...], int]:
    """((channels, *spatial), dims) for inputs of `input_shape` (no batch dim); dims=0 infers it.

    (L,) is a 1D signal with one channel, (C, L) 1D with C channels, (C, H, W) an image;
    with dims=2, (H, W) is an image with one channel.
    """
    n = len(input_shape)
    dims = dims or {1: 1, 2: 1, 3: 2}.get(n, 0)
    if dims == 1 and n in (1, 2):
        return (1, *input_shape) if n == 1 else tuple(input_shape), 1
    if dims == 2 and n in (2, 3):
        return (1, *input_shape) if n == 2 else tuple(input_shape), 2
    raise GradflowError(f"model.dims={dims} does not fit inputs of shape {tuple(input_shape)}: 1D signals are "
                        "(length,) or (channels, length), images (channels, height, width); "
                        "model.dims=0 infers it from the data")


def conv(dims: int, c_in: int, c_out: int, kernel: int, stride: int) -> nn.Module:
    # "same" padding keeps the length (even kernels too) where a skip needs it; a strided conv pads k // 2
    return CONV[dims](c_in, c_out, kernel, stride=stride, padding="same" if stride == 1 else kernel // 2)


def global_average_pool(h: torch.Tensor) -> torch.Tensor:  # (batch, C, *spatial) -> (batch, C)
    return h.mean(dim=tuple(range(2, h.dim())))


class CNN(nn.Module):
    def __init__(self, in_shape: tuple[int, ...], dims: int, channels: int, depth: int, kernel: int, stride: int,
                 n_out: int, act: str, norm: str = "none", eps: float = 1e-5, skip: str = "none",
                 alpha: float | str = 1.0):
        super().__init__()
        self.in_shape = in_shape  # (channels, *spatial) of one example
        # the first layer changes the channels (and applies the stride), so it never has a skip
        self.hidden = nn.ModuleList(
            Block([Layer(conv(dims, in_shape[0] if i == 0 else channels, channels, kernel, stride if i == 0 else 1),
                         make_norm(norm, channels, eps, dims), act)], skip == "residual" and i > 0, alpha)
            for i in range(depth)
        )
        self.head = nn.Linear(channels, n_out)
        self.probe_points = [ProbePoint(f"conv{i}", h.layers[0].layer, h.layers[0].act, h.layers[0])
                             for i, h in enumerate(self.hidden)]
        self.probe_points.append(ProbePoint("head", self.head, None))

    @classmethod
    def from_config(cls, cfg, input_shape, n_classes):
        m = cfg.model
        in_shape, dims = conv_layout(input_shape, m.dims)
        return cls(in_shape, dims, m.channels, m.depth, m.kernel, m.stride, n_classes, m.activation,
                   cfg.norm.name, cfg.norm.eps, m.skip, branch_scale(m.alpha, m.depth))

    def forward(self, x):  # (batch, *input_shape) -> (batch, n_out) logits
        h = x.reshape(x.shape[0], *self.in_shape)
        for layer in self.hidden:
            h = layer(h)
        return self.head(global_average_pool(h))
