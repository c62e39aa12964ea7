"""Probe points of any torch.nn.Module, found by running it once.

A probe point is every module that owns a weight matrix (a 2-D or larger `weight`: Linear,
Conv1d/2d/3d, Embedding, ...) and MultiheadAttention's input projection, ordered by the order
they run in one forward pass (not the order they were registered), named by module path. A weight
made by a parametrization (torch.nn.utils.parametrizations' spectral_norm, weight_norm, orthogonal,
a LoRA registered with torch.nn.utils.parametrize, torch's legacy spectral_norm and weight_norm) is
its layer's too: the layer is the point, its weight quantities those of the tensors the weight is
made from (gradflow.models.weights_behind). The
activation statistics of a point come from the module that runs right after it (norm and
dropout layers may sit between) when that is a known activation module such as nn.Tanh or
nn.ReLU; otherwise (a functional activation, an activation module shared by several layers or
also called on other tensors) there is none and those cells are masked, never made up.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
from torch.overrides import TorchFunctionMode
from torch.utils.weak import WeakIdKeyDictionary

from gradflow.activations import ACTIVATIONS
from gradflow.errors import GradflowError, one_line, user_stacklevel
from gradflow.models import ProbePoint, weight_sources, weights_behind

_ACTIVATIONS = {a.torch_name for a in ACTIVATIONS.values()} - {"Identity"}
# modules that may sit between a weight layer and its activation
_PASS_THROUGH = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.LayerNorm, nn.GroupNorm,
                 nn.RMSNorm, nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)


@dataclass
class Projection:
    """A weight matrix used inside its module's forward (MultiheadAttention's input projection):
    it has a weight and a gradient but no output of its own, so it has no back-propagated signal."""

    weight: nn.Parameter
    bias: nn.Parameter | None


def _weight_of(module: nn.Module) -> torch.Tensor | None:
    """The module's weight of 2 or more dimensions, or None: its `weight` parameter, or the first of the tensors
    a parametrized one is made from (spectral_norm's, weight_norm's, a LoRA's: weight_sources)."""
    w = module._parameters.get("weight")
    tensors = [w] if w is not None else weight_sources(module)
    return tensors[0] if tensors and max(t.dim() for t in tensors) >= 2 else None


def _making_weights(model: nn.Module) -> set[nn.Module]:
    """The modules that make a parametrized weight (torch.nn.utils.parametrize's ParametrizationList and the
    parametrizations in it, a LoRA's with matrices of its own): part of their layer's weight, not layers."""
    return {b for m in model.modules() if nn.utils.parametrize.is_parametrized(m) for b in m.parametrizations.modules()}


def discover(model: nn.Module, *args, **kwargs) -> list[ProbePoint]:
    """The ordered probe points of `model`, from one forward pass on the example input `args`.

    The pass runs without gradients and in eval mode (batch-norm statistics and dropout are left
    untouched); the model's mode is restored afterwards, and so are the random generators' states (a
    forward pass that draws, a VAE's sampling, would shift every later draw of the loop it probes).
    """
    _check_eager(model)
    inputs = _tensor_inputs(args, kwargs)
    batch = inputs[0].shape[0] if inputs else None
    trace = _trace(model, inputs, args, kwargs)
    calls = trace.modules
    first = trace.first()
    # each weight layer's output's first dimension, at its first call
    leading = {m: out.shape[0] for m, k in first.items() if (out := trace.outputs[k]) is not None and out.dim()}
    # a layer that runs sequence first, (T, B, ...), in a model whose input is batch first: its batch is its
    # second dimension (a (1, T, D) position embedding, broadcast over the batch, is none)
    second = {m for m, k in first.items() if batch is not None and (out := trace.outputs[k]) is not None
              and out.dim() >= 3 and out.shape[0] not in (1, batch) and out.shape[1] == batch}
    # (where another length is the batch's too, or an output as long as the batch was made from no tensor of the
    # example, a second pass tells them apart)
    told = _batch_dims_told_apart(model, trace, first, batch, inputs, args, kwargs)
    second = {m for m in second if m not in told} | {m for m, dim in told.items() if dim == 1}
    # (where that pass failed, a layer is batched as its length says: whether an output was made from the example
    # is a hint, which a copy into a buffer, buf[:] = h, or a round trip through numpy does not carry)
    unbatched = {m for m, dim in told.items() if dim is None}
    # a head given the batch's examples flattened with their positions, (B * T, D): no batch dimension of its own
    # either, but not for want of examples (its warning said "a position embedding of arange(T)")
    flattened = {m: leading[m] for m, k in first.items() if batch and m not in second and m not in told
                 and leading.get(m, 0) > batch and leading[m] % batch == 0 and trace.from_batch[k]}
    path = {m: name for name, m in model.named_modules()}
    parent = {child: m for m in model.modules() for child in m.children()}
    # (MultiheadAttention's out_proj never runs itself: its weight is used inside the attention's forward)
    making = _making_weights(model)  # (no layers: parts of their layer's weight)
    unseen = {m: None for m in model.modules() if m not in first and not isinstance(parent.get(m), nn.MultiheadAttention)
              and m not in making
              and (_weight_of(m) is not None or isinstance(m, nn.MultiheadAttention))}
    # a layer that runs in training only (a noise branch, stochastic depth's), from a pass in train mode: right
    # after the call before it there that the eval pass saw (the model's buffers and random states kept)
    late, failed = _placed_in_training(model, calls, unseen, inputs, args, kwargs) if unseen else ({}, None)
    unplaced: list[str] = []

    alone = not any(_weight_of(c) is not None or isinstance(c, nn.MultiheadAttention) for c in model.modules()
                    if c is not model)  # (a model's own weight beside its layers' has no known place: `unplaced`)

    def position(m: nn.Module) -> tuple[int, int, int]:
        """(call, after it, depth): when `m` first ran (in eval mode, else in train mode: `late`, after that
        call); a module that never runs itself (MultiheadAttention's out_proj, used through its weight) comes
        right after the nearest ancestor that did; one under the model alone (a head the forward pass does not
        use), last: its place in the order is not known (`unplaced`)."""
        if m is model and alone:  # the model is itself the one layer (an nn.Linear alone): it ran, first
            return 0, 0, 0
        depth, at = 0, m
        while at not in first and at not in late and at in parent:
            at, depth = parent[at], depth + 1
        if at in late:
            return late[at][0], late[at][1], depth
        if at in first and at is not model:
            return first[at], 0, depth
        unplaced.append(path[m])
        return len(calls), 0, depth

    found: list[tuple[tuple[int, int, int], ProbePoint]] = []
    for m in model.modules():
        if m in making:
            continue
        name = path[m] or type(m).__name__.lower()
        if isinstance(m, nn.MultiheadAttention):
            projections = ([("in_proj", m.in_proj_weight, m.in_proj_bias)] if m.in_proj_weight is not None else
                           [(f"{r}_proj", getattr(m, f"{r}_proj_weight"), None) for r in "qkv"])
            at, after, _ = position(m)
            for j, (role, w, b) in enumerate(projections):  # (before its out_proj, after the call it follows)
                found.append(((at, after, j - len(projections)), ProbePoint(f"{name}.{role}", Projection(w, b),
                                                                            None)))
        elif _weight_of(m) is not None:
            found.append((position(m), ProbePoint(name, m, _activation_after(m, trace, first),
                                                  batched=m not in unbatched and (batch is None or m in second
                                                                                  or leading.get(m, batch) == batch),
                                                  batch_dim=int(m in second))))
    unprobed, why = _unprobed(model, path)
    if not found:
        raise _nothing_to_probe(model)
    points = [p for _, p in sorted(found, key=lambda f: f[0])]
    for text in _caveats(points, unprobed, why, batch, unplaced, failed, flattened):
        warnings.warn(text, stacklevel=user_stacklevel())  # (the user's line, not gradflow's or torch's)
    # an activation module shared by several layers cannot say whose output it saw
    owners: dict[nn.Module, int] = {}
    for p in points:
        if p.activation is not None:
            owners[p.activation] = owners.get(p.activation, 0) + 1
    for p in points:
        if p.activation is not None and owners[p.activation] > 1:
            p.activation = None
    return points


def check_probeable(model: nn.Module) -> None:
    """Raise the error `discover` would, before any forward pass, where `model` has no layer gradflow probes
    (not where a lazy module's weights are still to be made: `discover` tells at the first forward pass)."""
    _check_eager(model)
    if any(nn.parameter.is_lazy(p) for p in model.parameters()):
        return
    if not any(isinstance(m, nn.MultiheadAttention) or _weight_of(m) is not None for m in model.modules()):
        raise _nothing_to_probe(model)


def _check_eager(model: nn.Module) -> None:
    """Refuse a TorchScript module (torch.jit.script or trace): it runs no Python forward hooks, which the probes
    are, and its submodules' parameters are no dicts (discovery failed with 'OrderedDictWrapper' has no 'get')."""
    scripted = next((name for name, m in model.named_modules() if isinstance(m, torch.jit.ScriptModule)), None)
    if scripted is not None:  # (the outermost; a scripted block inside an eager model too)
        what = model.original_name if not scripted else f"{type(model).__name__}'s {scripted}"
        raise GradflowError(f"{what} is a TorchScript module (torch.jit.script or torch.jit.trace), whose layers "
                            "gradflow cannot hook; give gradflow the eager nn.Module, the one before scripting it")


def _nothing_to_probe(model: nn.Module) -> GradflowError:
    unprobed, why = _unprobed(model, {m: name for name, m in model.named_modules()})
    return GradflowError(f"{type(model).__name__} has no layer gradflow probes (a module whose `weight` is 2-D or "
                         f"larger: nn.Linear, nn.Conv2d, nn.Embedding, ...; or nn.MultiheadAttention)"
                         + (f"; not probed: {unprobed}{why}" if unprobed else ""))


def unprobed(model: nn.Module) -> str:
    """The modules of `model` with weight matrices of their own that gradflow does not probe, each with those
    parameters ("" for none)."""
    return _unprobed(model, {m: name for name, m in model.named_modules()})[0]


def _unprobed(model: nn.Module, path: dict[nn.Module, str]) -> tuple[str, str]:
    """The modules with weight matrices of their own that are no probe point (torch's recurrent modules, a
    parameter named other than `weight`), each with those parameters ("" for none), and why for a
    recurrent one. Said, not skipped without a word: an LSTM between two Linear layers left a first/last
    ratio of those two that read as the LSTM's."""
    making = _making_weights(model)
    named = [f"{path[m] or type(m).__name__.lower()} ({type(m).__name__}: "
             f"{', '.join(n for n, w in m.named_parameters(recurse=False) if w.dim() >= 2)})"
             for m in model.modules() if not isinstance(m, nn.MultiheadAttention) and _weight_of(m) is None
             and m not in making
             and any(w.dim() >= 2 for w in m.parameters(recurse=False))]
    recurrent = any(isinstance(m, nn.RNNBase) for m in model.modules())
    return "; ".join(named), (" (torch's nn.LSTM, nn.GRU and nn.RNN run every time step inside one call, so "
                              "gradflow cannot see the signal at each; gradflow run model=lstm, gru or rnn probes "
                              "through time)" if recurrent else "")


def _trace(model: nn.Module, inputs: list, args: tuple, kwargs: dict, train: bool = False) -> "_Calls":
    """One forward pass of `model` on `args`, every module call traced (`_Calls`): without gradients, in eval
    mode (batch-norm statistics and dropout left untouched; `train`: in train mode, the caller restoring the
    buffers), torch's attention fast path off, the model's mode, that setting and the random generators' states
    restored afterwards."""
    trace = _Calls()
    making = _making_weights(model)  # (called inside their layer's call, when it reads its weight)
    hooks = [h for m in model.modules() if m not in making for h in (m.register_forward_pre_hook(trace.begin),
                                                                     m.register_forward_hook(trace.end))]
    modes = [(m, m.training) for m in model.modules()]  # (a submodule the user put in eval mode stays so)
    # (fork_rng restores the CPU's generator and these CUDA devices'; an unindexed cuda tensor is on the current one)
    devices = sorted({t.device.index if t.device.index is not None else torch.cuda.current_device()
                      for t in (*inputs, *model.parameters()) if t.is_cuda})
    # torch's fast path for nn.MultiheadAttention and nn.TransformerEncoder(Layer), which an eval pass without
    # gradients takes, made a padded batch (src_key_padding_mask) a nested tensor whose sizes no one can read:
    # discovery raised "NestedTensorImpl doesn't support sizes". The loop's pass, with gradients, takes the plain path
    fastpath = torch.backends.mha.get_fastpath_enabled()
    try:
        model.train(train)
        torch.backends.mha.set_fastpath_enabled(False)
        with (torch.no_grad(), warnings.catch_warnings(), torch.random.fork_rng(devices),
              _FromExample(trace.made_from_example, (args, kwargs))):
            # reentrant activation checkpointing warns that no input requires grad: true here, and meant so
            warnings.filterwarnings("ignore", "None of the inputs have requires_grad", UserWarning)
            model(*args, **kwargs)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
        for h in hooks:
            h.remove()
        for m, mode in modes:
            m.training = mode
    return trace


def _placed_in_training(model: nn.Module, calls: list[nn.Module], unseen: dict, inputs: list, args: tuple,
                        kwargs: dict) -> tuple[dict[nn.Module, tuple[int, int]], str | None]:
    """Where each `unseen` module (no call among the eval pass's `calls`) runs in a pass in train mode: right
    after the last call before its first there of a module the eval pass saw ((that call's place in `calls`, its
    k-th call there the k-th there, 1)); and the pass's error where it raised (a batch norm's batch of one), none
    then placed. The model's buffers (a batch norm's running statistics) are restored after it, as are Python's
    and numpy's random states (torch's: `_trace`); the pass runs only where some layer was unseen."""
    import random

    states = random.getstate(), np.random.get_state()
    saved = []
    try:
        saved = [(m, name, b.clone()) for m in model.modules() for name, b in m._buffers.items() if b is not None]
        trace = _trace(model, inputs, args, kwargs, train=True)
    except Exception as e:
        return {}, one_line(e)
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        with torch.no_grad():
            for m, name, b in saved:
                now = m._buffers.get(name)
                if now is not None and now.shape == b.shape and now.dtype == b.dtype:
                    now.copy_(b)
                else:
                    m._buffers[name] = b
    at: dict[nn.Module, list[int]] = {}
    for k, m in enumerate(calls):
        at.setdefault(m, []).append(k)
    placed, seen, count = {}, -1, {}
    for m in trace.modules:
        if m in at:
            count[m] = count.get(m, -1) + 1
            seen = at[m][min(count[m], len(at[m]) - 1)]
        elif m in unseen and m not in placed:
            placed[m] = (seen, 1)
    return placed, None


def _batch_dims_told_apart(model: nn.Module, trace: "_Calls", first: dict, batch: int | None, inputs: list,
                           args: tuple, kwargs: dict) -> dict:
    """Each weight layer whose output's first dimension is as long as the example's batch B while another length
    is B too, or that output was made from no tensor of the example (`_Calls.from_batch`), which one pass cannot
    tell apart: a (T, B, ...) output of T = B from a (B, T, ...) one, a position embedding's (T, D) of T = B from
    a batch's, learned queries' (Q, D) of Q = B (their signal, the batch's sum, was recorded as a per-example one
    at Q = B alone) from a parameter expanded to the batch (B, Q, D). A second pass on the example less its last
    item tells them: the dimension that shrinks with it is the batch (0 or 1), none where none does. Empty where
    there is no such layer or that pass fails. (Only there: the pass runs the model's Python code once more.)"""
    if batch is None or batch < 2:
        return {}
    both = {m: k for m, k in first.items() if _weight_of(m) is not None and (out := trace.outputs[k]) is not None
            and out.dim() and out.shape[0] == batch
            and (out.dim() >= 2 and out.shape[1] == batch or batch in inputs[0].shape[1:] or not trace.from_batch[k])}
    if not both:
        return {}

    def less(a):
        return a[:-1] if isinstance(a, torch.Tensor) and a.dim() and a.shape[0] == batch else a

    args, kwargs = tuple(less(a) for a in args), {k: less(a) for k, a in kwargs.items()}
    try:
        again = _trace(model, _tensor_inputs(args, kwargs), args, kwargs)
    except Exception:  # (a model made for one batch size: as one pass reads them)
        return {}
    seen = again.first()
    told = {}
    for m in both:
        out = again.outputs[seen[m]] if m in seen else None
        if out is None or not out.dim():
            continue
        told[m] = 0 if out.shape[0] == batch - 1 else 1 if out.dim() >= 2 and out.shape[1] == batch - 1 else None
    return told


def _tensor_inputs(args: tuple, kwargs: dict) -> list[torch.Tensor]:
    """The example's tensor arguments that have dimensions (the first is the batch's)."""
    return [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor) and a.dim()]


def _caveats(points: list[ProbePoint], unprobed: str, why: str, batch: int | None,
             unplaced: list[str] = (), failed: str | None = None, flattened: dict | None = None) -> list[str]:
    """What the probes of `points` leave out or take once, each a warning: the modules not probed; the layers
    that ran in neither look at the model, put last; a weight
    tied to an earlier point's (GPT-2's head and token embedding: its gradient at both, their ratio 1 by
    construction), recorded at its first point; a layer whose output has no batch dimension (nanoGPT's
    position embedding of arange(T)), whose dL/dz is the batch's sum, no per-example signal, or whose output's
    rows are the batch's examples flattened with their positions (`flattened`: each such layer's count of rows)."""
    out = []
    if unplaced:
        looks = ("a forward pass in eval mode, one in train mode" if failed is None else
                 f"a forward pass in eval mode; the one in train mode raised {failed}")
        out.append(f"{', '.join(unplaced)} ran in none of gradflow's looks at the model ({looks}): put after the "
                   "last layer, its place unknown; a step in which it takes no gradient has its cells masked, not 0, "
                   "but one used through its weight alone (F.linear(x, self.proj.weight)) takes one, and the "
                   "first/last gradient ratios then read it as the last layer")
    if unprobed:
        out.append(f"not probed: {unprobed}; gradflow probes modules whose `weight` is 2-D or larger and "
                   f"nn.MultiheadAttention{why}")
    owner: dict[int, str] = {}
    tied = []
    for p in points:
        w = (weights_behind(p.layer) or [None])[0]
        if w is not None and owner.setdefault(id(w), p.name) != p.name:
            tied.append(f"{p.name} uses {owner[id(w)]}'s")
    if tied:
        out.append(f"tied weights: {'; '.join(tied)} weight; each is recorded once, at its first point (its "
                   "gradient is the sum of every use; at both, their ratio read 1 by construction), and left out "
                   "of the first/last gradient ratios, being no one layer's")
    flattened = flattened or {}
    rows = [f"{p.name} ({flattened[p.layer]} rows: {flattened[p.layer] // batch} x the batch of {batch})" for p in points
            if not p.batched and p.layer in flattened]
    if rows:
        out.append(f"no back-propagated signal at {', '.join(rows)}: its output's rows are made from the batch's "
                   "examples but are several per example (positions flattened into rows, h.reshape(B * T, D), or "
                   "examples concatenated), so its shape holds no count of examples to take the signal per example "
                   "by; its weight gradient is recorded")
    unbatched = [p.name for p in points if not p.batched and p.layer not in flattened]
    if unbatched:
        out.append(f"no back-propagated signal at {', '.join(unbatched)}: its output has no batch dimension (the "
                   f"input's batch is {batch}; a position embedding of arange(T), added to every sample), so its "
                   "dL/dz is the batch's sum, no per-example signal; its weight gradient is recorded")
    return out


class _Calls:
    """Every module call of one forward pass, in the order the calls begin, with its first argument and its
    output where they are tensors (the tensors kept, compared by identity: an id could be a freed one's), and
    whether that output was made from a tensor of the example (`_FromExample`)."""

    def __init__(self):
        self.modules: list[nn.Module] = []
        self.inputs: list[torch.Tensor | None] = []
        self.outputs: list[torch.Tensor | None] = []
        self.from_batch: list[bool] = []
        self.made_from_example = WeakIdKeyDictionary()  # (`_FromExample`'s marks)
        self._open: list[int] = []

    def begin(self, module: nn.Module, args: tuple) -> None:
        self.modules.append(module)
        self.inputs.append(args[0] if args and isinstance(args[0], torch.Tensor) else None)
        self.outputs.append(None)
        self.from_batch.append(False)
        self._open.append(len(self.modules) - 1)

    def end(self, module: nn.Module, args: tuple, out) -> None:  # (a return value would replace the output)
        k = self._open.pop()
        self.outputs[k] = out if isinstance(out, torch.Tensor) else None
        self.from_batch[k] = isinstance(out, torch.Tensor) and out in self.made_from_example

    def first(self) -> dict[nn.Module, int]:
        """Each module called, and the index of its first call."""
        first: dict[nn.Module, int] = {}
        for k, m in enumerate(self.modules):
            first.setdefault(m, k)
        return first


class _FromExample(TorchFunctionMode):
    """Marks, in `marked`, the example's tensors and every tensor a torch function makes from a marked one: those
    that depend on the batch (learned queries' projection of a parameter does not, whatever its length)."""

    def __init__(self, marked: WeakIdKeyDictionary, example):
        super().__init__()
        self.marked = marked
        for t in _tensors(example):
            marked[t] = True

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if any(t in self.marked for t in _tensors((args, kwargs))):
            for t in _tensors(out):
                self.marked[t] = True
        return out


def _tensors(x):
    """The tensors in `x`, inside tuples, lists and dicts."""
    if isinstance(x, torch.Tensor):
        yield x
    elif isinstance(x, (tuple, list)):
        for v in x:
            yield from _tensors(v)
    elif isinstance(x, dict):
        for v in x.values():
            yield from _tensors(v)


def _activation_after(m: nn.Module, trace: _Calls, first: dict) -> nn.Module | None:
    """The known activation module that runs next after `m` (norm and dropout may come between), on `m`'s
    output itself: each call in between takes the one before's output. An add between (a residual branch's
    conv2 -> bn2 -> + skip -> relu) gave the layer the statistics of the sum, a reshape those of another
    tensor; there is none then. None too where that module also runs on anything else (one nn.Tanh after
    the input layer and after every residual add): its hook would take every call as the layer's; or where a
    layer run twice has it after one call alone (the other's output through a functional tanh): its
    statistics were that call's, where the layer's are of all its calls as one batch."""
    if m not in first:
        return None
    k = _activation_call(trace, first[m])
    if k is None:
        return None
    act = trace.modules[k]
    fed = [_activation_call(trace, j) for j, module in enumerate(trace.modules) if module is m]
    # every call of the layer feeds `act`, and every call of `act` is fed by the layer
    return act if (all(j is not None and trace.modules[j] is act for j in fed)
                   and all(j in fed for j, module in enumerate(trace.modules) if module is act)) else None


def _activation_call(trace: _Calls, j: int) -> int | None:
    """The call of a known activation module that takes call `j`'s output (through norm and dropout)."""
    out = trace.outputs[j]
    for k in range(j + 1, len(trace.modules)):
        if out is None or trace.inputs[k] is not out:
            return None
        nxt = trace.modules[k]
        if type(nxt).__name__ in _ACTIVATIONS:
            return k
        if not isinstance(nxt, _PASS_THROUGH) or list(nxt.children()):
            return None
        out = trace.outputs[k]
    return None
