"""He et al. 2016's CIFAR ResNets (Sec. 4.2) and their plain twins, in 1D or 2D; BN, Fixup or SkipInit.

For depth = 6n + 1 hidden convs: a 3x3 stem conv (widths[0] filters) -> three stages of n basic
blocks (widths[0], widths[1], widths[2] filters; the first block of stages 2 and 3 halves the
resolution with stride 2) -> global average pool -> linear head. The paper's "resnet20" is
depth 19 here: its 20 counts the head too. Shortcuts are option A: the identity, subsampled and
zero-padded to the new width where the shape changes, so a resnet and its plain twin
(skip=none: the same layers without shortcuts) have exactly the same parameters.

Variants (model.variant):
  batchnorm  the paper: conv (no bias) -> BN in every layer.
  fixup      Zhang et al. 2019, no normalization: scalar biases before each conv and activation,
             a scalar multiplier (1) on each branch; `post_init` scales each branch's first conv by
             L^-1/2 (L residual blocks), zeroes its last conv and the head.
  skipinit   De & Smith 2020, no normalization: convs with biases; a learnable scalar on each
             branch, starting at 0, so every block starts as the identity.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from gradflow import activations
from gradflow.errors import GradflowError
from gradflow.models import ProbePoint, make_norm
from gradflow.models.cnn import CONV, conv_layout, global_average_pool
from gradflow.models.mlp import ScalarAffine


def _norm(variant: str, channels: int, eps: float, dims: int, scale: bool = False) -> nn.Module:
    """The layer after a conv: BN (batchnorm), a scalar bias [and multiplier] (fixup), nothing (skipinit)."""
    if variant == "batchnorm":
        return make_norm("batchnorm", channels, eps, dims)
    return ScalarAffine(scale) if variant == "fixup" else nn.Identity()


class BasicBlock(nn.Module):
    """relu(shortcut(x) + gain * norm2(conv2(relu(norm1(conv1(x)))))); without shortcut in a plain net."""

    def __init__(self, dims: int, c_in: int, c_out: int, stride: int, act: str, variant: str, residual: bool,
                 eps: float):
        super().__init__()
        conv, fixup = CONV[dims], variant == "fixup"
        self.pre1 = ScalarAffine() if fixup else nn.Identity()  # Fixup's bias before each conv
        self.conv1 = conv(c_in, c_out, 3, stride=stride, padding=1, bias=variant == "skipinit")
        self.norm1 = _norm(variant, c_out, eps, dims)
        self.act1 = activations.get(act).module()
        self.pre2 = ScalarAffine() if fixup else nn.Identity()
        self.conv2 = conv(c_out, c_out, 3, padding=1, bias=variant == "skipinit")
        self.norm2 = _norm(variant, c_out, eps, dims, scale=True)
        self.act2 = activations.get(act).module()  # after the addition
        self.residual, self.stride, self.extra = residual, stride, c_out - c_in
        self.gain = nn.Parameter(torch.zeros(())) if variant == "skipinit" else 1.0  # SkipInit's alpha

    def shortcut(self, x):  # option A: subsample by the stride, zero-pad the new channels
        if self.stride == 1 and self.extra == 0:
            return x
        x = x[(slice(None), slice(None), *(slice(None, None, self.stride),) * (x.dim() - 2))]
        return F.pad(x, (0, 0) * (x.dim() - 2) + (0, self.extra))

    def forward(self, x):  # (batch, c_in, *spatial) -> (batch, c_out, *spatial / stride)
        branch = self.act1(self.norm1(self.conv1(self.pre1(x))))
        branch = self.norm2(self.conv2(self.pre2(branch)))
        return self.act2(self.shortcut(x) + self.gain * branch if self.residual else branch)


class ResNet(nn.Module):
    def __init__(self, in_shape: tuple[int, ...], dims: int, depth: int, widths: list[int], n_out: int,
                 act: str = "relu", skip: str = "residual", variant: str = "batchnorm", eps: float = 1e-5):
        super().__init__()
        if (depth - 1) % 6 or depth < 7 or len(widths) != 3:
            raise GradflowError(f"a resnet needs depth = 6n + 1 >= 7 and three stage widths, not {depth}, {widths}")
        n = (depth - 1) // 6  # blocks per stage
        self.in_shape, self.variant = in_shape, variant
        self.stem = CONV[dims](in_shape[0], widths[0], 3, padding=1, bias=variant == "skipinit")
        self.stem_norm = _norm(variant, widths[0], eps, dims)
        self.stem_act = activations.get(act).module()
        blocks, names, c_in = [], [], widths[0]
        for s, c_out in enumerate(widths):
            for b in range(n):
                stride = 2 if s > 0 and b == 0 else 1
                blocks.append(BasicBlock(dims, c_in, c_out, stride, act, variant, skip == "residual", eps))
                names.append(f"s{s + 1}.b{b + 1}")
                c_in = c_out
        self.blocks = nn.ModuleList(blocks)
        self.pre_head = ScalarAffine() if variant == "fixup" else nn.Identity()
        self.head = nn.Linear(widths[-1], n_out)
        self.probe_points = [ProbePoint("stem", self.stem, self.stem_act)]
        for name, block in zip(names, self.blocks):
            self.probe_points += [ProbePoint(f"{name}.conv1", block.conv1, block.act1),
                                  ProbePoint(f"{name}.conv2", block.conv2, block.act2)]
        self.probe_points.append(ProbePoint("head", self.head, None))

    @classmethod
    def from_config(cls, cfg, input_shape, n_classes):
        m = cfg.model
        in_shape, dims = conv_layout(input_shape, m.dims)
        return cls(in_shape, dims, m.depth, list(m.widths), n_classes, m.activation, m.skip, m.variant, cfg.norm.eps)

    @torch.no_grad()
    def post_init(self, cfg=None) -> None:
        """Fixup's rescaling, on top of the `init` scheme (He init in Zhang et al. 2019): each branch's
        first conv x L^-1/2 (L = residual blocks; L^(-1/(2m-2)) with m = 2 layers per branch), its last
        conv and the head (weight and bias) zero. Other variants need nothing."""
        if self.variant != "fixup":
            return
        scale = len(self.blocks) ** -0.5
        for block in self.blocks:
            block.conv1.weight.mul_(scale)
            block.conv2.weight.zero_()
        self.head.weight.zero_()
        self.head.bias.zero_()

    def features(self, x):  # (batch, *input_shape) -> (batch, widths[-1]): the head's input
        h = x.reshape(x.shape[0], *self.in_shape)
        h = self.stem_act(self.stem_norm(self.stem(h)))
        for block in self.blocks:
            h = block(h)
        return global_average_pool(h)

    def forward(self, x):  # (batch, *input_shape) -> (batch, n_out) logits
        return self.head(self.pre_head(self.features(x)))
