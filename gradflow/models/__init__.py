"""Model registry: a config -> nn.Module exposing an ordered list of probe points.

Models know nothing of probes or files. A probe point is a weight layer (Linear/Conv), indexed
from 0 at the input to the output head, with the activation module that follows it (if any).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn as nn

from gradflow.errors import GradflowError


@dataclass
class ProbePoint:
    name: str  # short, stable, e.g. "linear3" or "head"
    layer: nn.Module  # the weight layer (has .weight, maybe .bias)
    activation: nn.Module | None  # the activation after it, whose output statistics are probed


def build(cfg, input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    """The model for `cfg` (the whole run config); it has a `probe_points` list."""
    from gradflow.models.mlp import MLP

    families = {"mlp": MLP}
    if cfg.model.name not in families:
        raise GradflowError(f"model={cfg.model.name!r} is not a known family; choices: {', '.join(families)}")
    return families[cfg.model.name].from_config(cfg, input_shape, n_classes)


def make_norm(kind: str, features: int, eps: float = 1e-5) -> nn.Module:
    if kind == "none":
        return nn.Identity()
    if kind == "batchnorm":
        return nn.BatchNorm1d(features, eps=eps)
    if kind == "layernorm":
        return nn.LayerNorm(features, eps=eps)
    raise GradflowError(f"norm={kind!r} is not allowed; choices: none, batchnorm, layernorm")
