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
from gradflow.errors import GradflowError, one_line, run_error
from gradflow.models.discover import discover, unprobed

_KIND = {a.torch_name: a.name for a in ACTIVATIONS.values()}  # activation module class -> registry name


def activation_kind(model: nn.Module) -> str:
    """The registry name of the probe points' activation modules when they are all of one kind, else
    "linear": the nonlinearity whose gain the kaiming schemes use on a user's model."""
    kinds = {_KIND[type(p.activation).__name__] for p in model.probe_points if p.activation is not None}
    return kinds.pop() if len(kinds) == 1 else "linear"


def resolve(target: str):
    """`module:attr` or `pkg.module.Attr` -> the object, importable from the current folder. A dotted
    path's module is its longest prefix that imports (`my_models.Net.build`: Net's attribute build)."""
    text = target.strip()
    if ":" in text:
        module_name, _, attr = text.partition(":")
        splits = [(module_name, attr)] if module_name and attr else []
    else:
        parts = text.split(".")
        splits = [(".".join(parts[:i]), ".".join(parts[i:])) for i in range(len(parts) - 1, 0, -1)]
    if not splits or not all(name for m, a in splits for name in (*m.split("."), *a.split("."))):
        raise GradflowError(f"model.target={target!r} is not a dotted path or module:attr, e.g. my_models:Net")
    if os.getcwd() not in sys.path:  # the console script does not put the current folder on the path
        sys.path.insert(0, os.getcwd())
    not_found = None
    for module_name, attr in splits:
        module = _import(target, module_name)
        if module is None:
            not_found = not_found or module_name
            continue
        obj, done = module, []
        for part in attr.split("."):
            if not hasattr(obj, part):
                if not done and not_found:  # (pkg.missing.Net: the longer module is what was meant)
                    break
                raise GradflowError(f"model.target={target!r}: {'.'.join([module_name, *done])} has no "
                                    f"attribute {part!r}")
            obj, done = getattr(obj, part), [*done, part]
        else:
            return f"{module_name}.{attr}", obj
        break
    raise GradflowError(f"model.target={target!r}: cannot import {not_found!r} (no module of that name); it must "
                        f"be importable from the current folder {os.getcwd()}")


def _import(target: str, module_name: str):
    """The module, or None where no module of that name exists; a module whose own import fails is an error."""
    try:
        return importlib.import_module(module_name)
    except ImportError as e:
        missing = getattr(e, "name", None)
        if not (missing == module_name or missing and module_name.startswith(f"{missing}.")):
            # (the module was found, and its own import failed: the folder is not what to fix)
            top, ours = (missing or "").split(".")[0], module_name.split(".")[0]
            said = (f"imports {missing!r}, which is not installed here" if isinstance(e, ModuleNotFoundError)
                    and top != ours else "failed an import of its own")
            raise GradflowError(f"model.target={target!r}: {module_name} {said} ({one_line(e)})") from None
        return None
    except (Exception, SystemExit) as e:  # (the module raised as it was imported; or exited: argparse's parse_args())
        raise GradflowError(f"model.target={target!r}: importing {module_name} raised {one_line(run_error(e))}") from e


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
            # (plain lists and dicts for the constructor, as written: Hydra's own would be OmegaConf's)
            model = instantiate({"_target_": path, "_convert_": "all", **kwargs})
        except (Exception, SystemExit) as e:  # (SystemExit: argparse's parse_args() at the module's import)
            raise GradflowError(f"model.target={m.target} with model.kwargs={kwargs} failed to build: "
                                f"{one_line(run_error(e.__cause__ or e))}") from e
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
