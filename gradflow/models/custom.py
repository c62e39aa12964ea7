"""Your own nn.Module (`model=custom model.target=...`), built by Hydra's instantiate, its probe points
discovered from one forward pass.

`discover` runs the model once on an example batch and records the order in which modules run:
every module that owns a weight with 2 or more dimensions (Linear, Conv1d/2d/3d, Embedding, a user's
own layer with a 2-D+ `weight` parameter) is a probe point, named by its module path and ordered by
its first call (not by registration order). The module that runs right after a probe point and
consumes its output becomes the point's activation when it is a known activation module (ReLU, Tanh,
GELU, ...); otherwise the point's activation statistics stay masked. A module called several times in
one pass (weights shared over time) is one point: its weight gradient sums over the calls, but its
signal and activation statistics come from single calls. nn.MultiheadAttention's fused input
projection is a bare parameter used functionally, not a module with a forward, so it is not found;
its out_proj is a Linear that is never called either, so it is left out too.
"""

from __future__ import annotations

import importlib
import os
import sys

import torch
import torch.nn as nn

from gradflow import activations
from gradflow.errors import GradflowError
from gradflow.models import ProbePoint

# activation module classes -> registry names (leaky_relu's slope and the rest are the torch defaults)
_ACTIVATION_OF = {a.torch_name: a.name for a in activations.ACTIVATIONS.values() if a.torch_name != "Identity"}


def _owns_weight(module: nn.Module) -> bool:
    w = getattr(module, "weight", None)
    return isinstance(w, torch.Tensor) and w.dim() >= 2


def discover(model: nn.Module, example_input: torch.Tensor) -> list[ProbePoint]:
    """The probe points of any module, in forward order, from one pass over `example_input`.

    The pass runs in eval mode without gradients, so it changes no state (batchnorm statistics)."""
    names = {m: n for n, m in model.named_modules()}
    order: list[nn.Module] = []  # modules owning a weight, by first call
    follower: dict[nn.Module, nn.Module] = {}
    last: list = [None, None]  # the last weight module called and its output

    def on_call(module, inputs, output):
        if _owns_weight(module):
            if module not in order:
                order.append(module)
            last[:] = [module, output]
        elif last[0] is not None and not any(True for _ in module.children()):  # a leaf after a weight layer
            if type(module).__name__ in _ACTIVATION_OF and inputs and inputs[0] is last[1]:
                follower[last[0]] = module
            last[:] = [None, None]

    hooks = [m.register_forward_hook(on_call) for m in model.modules()]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(example_input)
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return [ProbePoint(names[m] or "model", m, follower.get(m)) for m in order]


def activation_kind(model: nn.Module) -> str:
    """The registry name of the probe points' activation modules when they are all of one kind, else
    "linear" (no saturation or dead-unit statistic applies then; mean and std still do)."""
    kinds = {_ACTIVATION_OF[type(p.activation).__name__] for p in model.probe_points if p.activation is not None}
    return kinds.pop() if len(kinds) == 1 else "linear"


def resolve(target: str):
    """`module:attr` or `pkg.module.Attr` -> the object, importable from the current folder."""
    text = target.strip()
    module_name, _, attr = text.partition(":") if ":" in text else text.rpartition(".")
    if not module_name or not attr:
        raise GradflowError(f"model.target={target!r} is not a dotted path or module:attr, e.g. my_models:Net")
    if os.getcwd() not in sys.path:  # the console script does not put the current folder on the path
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise GradflowError(f"model.target={target!r}: cannot import {module_name!r} ({e}); it must be importable "
                            f"from the current folder {os.getcwd()}") from None
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise GradflowError(f"model.target={target!r}: {module_name} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return f"{module_name}.{attr}", obj


class Custom:
    """The adapter from `model=custom` config values to the user's module with its probe points."""

    @classmethod
    def from_config(cls, cfg, input_shape, n_classes, per_step=False, vocab=0) -> nn.Module:
        from hydra.utils import instantiate
        from omegaconf import OmegaConf

        m = cfg.model
        path, _ = resolve(str(m.target))
        kwargs = OmegaConf.to_container(m.kwargs, resolve=True)
        try:
            model = instantiate({"_target_": path, **kwargs})
        except Exception as e:
            cause = e.__cause__ or e
            raise GradflowError(f"model.target={m.target} with model.kwargs={kwargs} failed to build: "
                                f"{type(cause).__name__}: {' '.join(str(cause).split())}") from None
        if not isinstance(model, nn.Module):
            raise GradflowError(f"model.target={m.target} built a {type(model).__name__}, not a torch.nn.Module")
        # an example batch of two, shaped and typed like the data
        x = torch.zeros(2, *input_shape, dtype=torch.int64) if vocab else torch.randn(2, *input_shape)
        expected = (2, input_shape[0], n_classes) if per_step else (2, n_classes)
        shapes = f"input {tuple(x.shape)}{' token ids' if vocab else ''} -> expected output {expected}"
        try:
            model.probe_points = discover(model, x)
            with torch.no_grad():
                out = model.eval()(x)
            model.train()
        except Exception as e:
            raise GradflowError(f"model.target={m.target} does not fit data={cfg.data.name}: {shapes}, but the "
                                f"forward pass failed: {type(e).__name__}: {' '.join(str(e).split())}") from None
        if not model.probe_points:
            raise GradflowError(f"model.target={m.target} has no weight layers (modules with a 2-D+ weight) "
                                "in its forward pass: nothing to probe")
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        if got != expected:
            raise GradflowError(f"model.target={m.target} does not fit data={cfg.data.name}: {shapes}, got {got}")
        return model
