"""Your own nn.Module (`model=custom model.target=...`), built by Hydra's instantiate, its probe points
found by `gradflow.models.discover` from one forward pass on an example batch shaped like the data.
"""

from __future__ import annotations

import importlib
import os
import sys
import warnings
from collections.abc import Mapping

import torch
import torch.nn as nn

from gradflow.activations import ACTIVATIONS
from gradflow.errors import GradflowError, one_line
from gradflow.models.discover import discover, unprobed

_KIND = {a.torch_name: a.name for a in ACTIVATIONS.values()}  # activation module class -> registry name


def activation_kind(model: nn.Module) -> str:
    """The registry name of the probe points' activation modules when they are all of one kind, else
    "linear": the nonlinearity whose gain the kaiming schemes use on a user's model."""
    kinds = {_KIND[type(p.activation).__name__] for p in model.probe_points if p.activation is not None}
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
        missing = getattr(e, "name", None)
        if not (missing == module_name or missing and module_name.startswith(f"{missing}.")):
            # (the module was found, and its own import failed: the folder is not what to fix)
            top, ours = (missing or "").split(".")[0], module_name.split(".")[0]
            said = (f"imports {missing!r}, which is not installed here" if isinstance(e, ModuleNotFoundError)
                    and top != ours else "failed an import of its own")
            raise GradflowError(f"model.target={target!r}: {module_name} {said} ({one_line(e)})") from None
        raise GradflowError(f"model.target={target!r}: cannot import {module_name!r} ({e}); it must be importable "
                            f"from the current folder {os.getcwd()}") from None
    except Exception as e:  # (the module raised as it was imported)
        raise GradflowError(f"model.target={target!r}: importing {module_name} raised {one_line(e)}") from e
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
        if OmegaConf.is_missing(m, "target") or not str(m.target).strip():  # checked here, not at composition:
            # a sweep's planner composes its structural overrides before the point's values
            raise GradflowError("model=custom needs model.target: a dotted path or module:attr of an nn.Module "
                                "class or factory importable from the current folder, e.g. model.target=my_models:Net")
        path, _ = resolve(str(m.target))
        kwargs = OmegaConf.to_container(m.kwargs, resolve=True)
        try:
            model = instantiate({"_target_": path, **kwargs})
        except Exception as e:
            raise GradflowError(f"model.target={m.target} with model.kwargs={kwargs} failed to build: "
                                f"{one_line(e.__cause__ or e)}") from e
        if not isinstance(model, nn.Module):
            kind = type(model).__name__
            raise GradflowError(f"model.target={m.target} built {'an' if kind[:1] in 'aeiouAEIOU' else 'a'} {kind}, "
                                "not a torch.nn.Module")
        # an example batch of two, shaped and typed like the data
        x = torch.zeros(2, *input_shape, dtype=torch.int64) if vocab else torch.randn(2, *input_shape)
        expected = (2, input_shape[0], n_classes) if per_step else (2, n_classes)
        shapes = f"input {tuple(x.shape)}{' token ids' if vocab else ''} -> expected output {expected}"
        try:
            with torch.no_grad():
                out = model.eval()(x)
        except Exception as e:
            raise GradflowError(f"model.target={m.target} does not fit data={cfg.data.name}: {shapes}, but the "
                                f"forward pass failed: {one_line(e)}") from e
        finally:
            model.train()
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        if got != expected:  # (before discovery, whose warnings were about a model that is refused)
            logits = isinstance(out, Mapping) and "logits" in out or hasattr(out, "logits")
            hint = ("; its output holds `logits`: return those (a Hugging Face-style model's output.logits, "
                    "e.g. from a wrapper module whose forward returns self.net(x).logits)" if logits else "")
            raise GradflowError(f"model.target={m.target} does not fit data={cfg.data.name}: {shapes}, got {got}{hint}")
        try:
            model.probe_points = discover(model, x)
        except GradflowError as e:
            raise GradflowError(f"model.target={m.target}: {e}") from None
        if cfg.init.name != "keep" and (left := unprobed(model)):  # (a sweep over init mixed them, unsaid)
            warnings.warn(f"init={cfg.init.name} re-initializes the probed layers only; not probed, so as "
                          f"model.target made them: {left}", stacklevel=2)
        return model
