"""Model registry: a config -> nn.Module exposing an ordered list of probe points.

Models know nothing of probes or files. A probe point is a weight layer (Linear/Conv), indexed
from 0 at the input to the output head, with the activation module that follows it (if any).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from gradflow.errors import GradflowError


@dataclass
class ProbePoint:
    name: str  # short, stable, e.g. "linear3" or "head"
    layer: nn.Module  # the weight layer (has .weight, maybe .bias)
    activation: nn.Module | None  # the activation after it, whose output statistics are probed
    # a module that hands this point's weight-layer output and output to its `tap` attribute when one is set
    # (mlp.Layer): the probes then make one plain call per layer instead of two forward hooks
    tap: nn.Module | None = None
    # False where the layer's output has no batch dimension (a position embedding of arange(T), added to
    # every sample): its dL/dz is the batch's sum, whose norm is no per-example signal, so none is taken; so too
    # where its rows are the batch's examples flattened with their positions, (B * T, D): no count of examples
    batched: bool = True
    # the dimension of that output that holds the batch: 0, or 1 for a layer that runs sequence first, (T, B, ...),
    # inside a model whose input is batch first (torch's batch_first=False layout after a batch-first embedding)
    batch_dim: int = 0


# the parameters torch's legacy hooks make a module's `weight` from, at each forward pass
# (torch.nn.utils.spectral_norm: weight_orig; torch.nn.utils.weight_norm: weight_g, weight_v)
_LEGACY = {"SpectralNorm": ("weight_orig",), "WeightNorm": ("weight_g", "weight_v")}


def weight_sources(layer) -> list[torch.Tensor]:
    """The tensors a parametrized `weight` of `layer` is computed from at each forward pass (it takes no gradient
    itself): torch.nn.utils.parametrize's (parametrizations.spectral_norm, weight_norm, orthogonal, a LoRA),
    its original(s) and the parametrizations' own parameters; torch's legacy spectral_norm and weight_norm hooks',
    weight_orig or weight_g and weight_v. Empty for any other layer."""
    if not isinstance(layer, torch.nn.Module):
        return []
    if torch.nn.utils.parametrize.is_parametrized(layer, "weight"):
        return list(layer.parametrizations.weight.parameters())
    return [getattr(layer, n) for h in layer._forward_pre_hooks.values() if getattr(h, "name", None) == "weight"
            for n in _LEGACY.get(type(h).__name__, ())]


def weights_behind(layer) -> list[torch.Tensor]:
    """The tensors an optimizer trains for a layer's weight: the weight, or those a parametrized one is made from
    (weight_sources); of these, those that require a gradient (a LoRA's A and B, not its frozen base), or all where
    none does (a frozen layer). Empty where there is no weight."""
    tensors = weight_sources(layer)
    if not tensors:  # (a parametrized weight is not read: reading it runs the parametrization, a power iteration)
        own = getattr(layer, "weight", None)
        tensors = [own] if isinstance(own, torch.Tensor) else []
    return [t for t in tensors if t.requires_grad] or tensors


def build(cfg, input_shape: tuple[int, ...], n_classes: int, per_step: bool = False, vocab: int = 0) -> nn.Module:
    """The model for `cfg` (the whole run config); it has a `probe_points` list.

    `per_step`: the task wants an output at every time step (sequence models only).
    `vocab`: the inputs are token ids in [0, vocab) (0: real-valued inputs).
    """
    family = FAMILIES.get(cfg.model.name)
    if family is None:
        raise GradflowError(f"model={cfg.model.name!r} is not a known family; choices: {', '.join(FAMILIES)}")
    if family in (Transformer, Custom):  # token ids or real vectors, one output per position or per sequence
        return family.from_config(cfg, input_shape, n_classes, per_step=per_step, vocab=vocab)
    if vocab:
        raise GradflowError(f"data={cfg.data.name} gives token ids: use model=transformer or model=custom")
    if per_step and family is not Recurrent:
        raise GradflowError(f"data={cfg.data.name} needs an output per time step: use model=rnn, lstm, gru, "
                            "transformer or custom")
    if family is Recurrent and len(input_shape) > 2:  # (it unpacked them as (T, features): "too many values")
        shape = " x ".join(map(str, input_shape))
        raise GradflowError(f"data={cfg.data.name} gives images ({shape}): model={cfg.model.name} reads sequences, "
                            "(T,) or (T, features), as data=mnist1d or adding gives them; use model=mlp, cnn, "
                            "resnet or transformer for images")
    if family in (CNN, ResNet) and cfg.data.name in TIME_MAJOR:  # (it ran, convolving the wrong way round)
        steps, features = input_shape
        raise GradflowError(f"data={cfg.data.name} gives sequences of {steps} steps x {features} features: "
                            f"model={cfg.model.name} would take the {steps} steps as channels and convolve across "
                            "the features; use model=rnn, lstm, gru, transformer or mlp")
    if per_step:
        return Recurrent.from_config(cfg, input_shape, n_classes, per_step=True)
    return family.from_config(cfg, input_shape, n_classes)


TIME_MAJOR = ("adding",)  # datasets whose examples are (T, features) sequences, time first


def make_norm(kind: str, features: int, eps: float = 1e-5, dims: int = 0) -> nn.Module:
    """The `norm` layer for `features` units (dims=0, an MLP) or channels (dims=1/2, a Conv1d/Conv2d).

    batchnorm normalizes each unit/channel over the batch (and positions); layernorm each example
    over its units, or for a conv over its channels and positions (GroupNorm with one group).
    """
    if kind == "none":
        return nn.Identity()
    if kind == "batchnorm":
        return nn.BatchNorm2d(features, eps=eps) if dims == 2 else nn.BatchNorm1d(features, eps=eps)
    if kind == "layernorm":
        return nn.GroupNorm(1, features, eps=eps) if dims else nn.LayerNorm(features, eps=eps)
    raise GradflowError(f"norm={kind!r} is not allowed; choices: none, batchnorm, layernorm")


# The families (model.name -> class with `from_config(cfg, input_shape, n_classes)`); their modules import
# ProbePoint and make_norm from here, so they come last. A new family: its module, one line here, and its
# schema in config.MODEL_SCHEMAS.
from gradflow.models.cnn import CNN  # noqa: E402
from gradflow.models.custom import Custom  # noqa: E402
from gradflow.models.mlp import MLP  # noqa: E402
from gradflow.models.resnet import ResNet  # noqa: E402
from gradflow.models.rnn import Recurrent  # noqa: E402
from gradflow.models.transformer import Transformer  # noqa: E402

FAMILIES: dict[str, type] = {"mlp": MLP, "cnn": CNN, "resnet": ResNet, "rnn": Recurrent, "lstm": Recurrent,
                             "gru": Recurrent, "transformer": Transformer, "custom": Custom}
