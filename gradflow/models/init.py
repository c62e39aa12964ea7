"""Weight initialization schemes, applied to every probe point (weight layer), the head included."""

from __future__ import annotations

import math

import torch

from gradflow import activations
from gradflow.errors import GradflowError
from gradflow.models import weight_sources


def fans(weight: torch.Tensor) -> tuple[int, int]:
    """(fan_in, fan_out) of a Linear (out, in) or Conv (out, in, *kernel) weight."""
    receptive = math.prod(weight.shape[2:]) if weight.dim() > 2 else 1
    return weight.shape[1] * receptive, weight.shape[0] * receptive


GPT2_STD = 0.02  # Radford et al. 2019 (GPT-2), as in nanoGPT


@torch.no_grad()
def initialize(model, init_cfg, activation: str) -> None:
    if init_cfg.name == "keep":  # the model's own initialization
        return
    made = [p.name for p in model.probe_points if weight_sources(p.layer)]
    if made:  # (its `weight` is recomputed from them at each forward pass: a scheme written into it would be lost)
        raise GradflowError(f"init={init_cfg.name} cannot re-initialize a parametrized weight (spectral_norm, "
                            f"weight_norm, orthogonal, LoRA: {', '.join(made)}); use init=keep")
    for point in model.probe_points:
        if getattr(point.layer, "weight", None) is not None:  # not the state markers of recurrent nets
            init_layer(point.layer.weight, getattr(point.layer, "bias", None), init_cfg, activation)
    residual = getattr(model, "residual_outputs", [])
    if init_cfg.name == "gpt2" and residual:  # GPT-2: each of the 2 x depth residual writes shrinks by 1/sqrt(2 depth)
        for layer in residual:
            layer.weight.mul_(len(residual) ** -0.5)


@torch.no_grad()
def init_layer(w: torch.Tensor, b: torch.Tensor | None, cfg, activation: str) -> None:
    fan_in, fan_out = fans(w)
    name = cfg.name
    if name == "standard":  # Glorot & Bengio 2010, eq. 1: variance 1 / (3 fan_in)
        bound = 1.0 / math.sqrt(fan_in)
        w.uniform_(-bound, bound)
    elif name == "xavier_uniform":
        torch.nn.init.xavier_uniform_(w, gain=cfg.gain)
    elif name == "xavier_normal":
        torch.nn.init.xavier_normal_(w, gain=cfg.gain)
    elif name in ("kaiming_uniform", "kaiming_normal"):
        fan = fan_in if cfg.mode == "fan_in" else fan_out
        std = activations.get(activation).gain / math.sqrt(fan)
        if name == "kaiming_normal":
            w.normal_(0.0, std)
        else:
            w.uniform_(-math.sqrt(3.0) * std, math.sqrt(3.0) * std)
    elif name == "lecun_normal":
        w.normal_(0.0, 1.0 / math.sqrt(fan_in))
    elif name == "orthogonal":
        torch.nn.init.orthogonal_(w, gain=cfg.gain)
    elif name == "delta_orthogonal":  # Xiao et al. 2018: an orthogonal centre tap, zeros elsewhere
        w.zero_()
        centre = tuple(k // 2 for k in w.shape[2:])
        tap = torch.empty(w.shape[0], w.shape[1], dtype=w.dtype, device=w.device)
        torch.nn.init.orthogonal_(tap, gain=cfg.gain)
        w[(slice(None), slice(None), *centre)] = tap
    elif name == "gpt2":
        w.normal_(0.0, GPT2_STD)
    elif name == "meanfield":  # W ~ N(0, sw2 / fan_in), b ~ N(0, sb2)
        w.normal_(0.0, math.sqrt(cfg.sw2 / fan_in))
        if b is not None:
            b.normal_(0.0, math.sqrt(cfg.sb2))
        return
    else:
        raise GradflowError(f"init={name!r} is not a known scheme")
    if b is not None:
        b.zero_()
