"""Probes: the registry's quantities at probed steps, in batched calls on the device.

A probed step runs in three phases, so that every statistic is one batched call over all probe
points rather than a dozen small kernels per layer:
  arm()              registers hooks that only keep references (each layer's output gradient
                     dL/dz, each activation output), or on the CPU, once a run has probed enough
                     steps, take their statistics at once with fused kernels (gradflow.probes.fused);
                     unprobed steps carry no hooks at all
  after_backward()   the raw reductions ("primitives") on the device: foreach norms of the
                     gradients, weights and signals (with the fused kernels loaded, a loop of
                     theirs); activations of equal shape stacked and reduced together (sum, sum of
                     squared deviations, saturated and dead counts); for the update ratio, a copy
                     of the weights into kept buffers, unless the optimizer's update can be read
                     after its step (below)
  after_update()     ||dW|| as one foreach norm: of W(before) - W(after) from the copy, or of the
                     update plain SGD applied, read from its state
read() then copies every primitive of the step to the host in one concatenated tensor (note:
the one host sync point of a probed step) and recomputes, from the step's tensors, any norm that
float32 cannot hold (one that was beyond its range at the last probed step is taken in float64 on
the device during the step and comes back in the same copy: a vanishing net still syncs once);
table() spreads a reading over the points by index with numpy and evaluates the registry's
quantities there, in float64. The training loop keeps its readings and makes their
tables after the loop: host work inside a probed step runs with caches the step has just filled
with weights and activations, where each numpy call costs tens of microseconds instead of one.
fetch() is the two at once. Probes never change the optimizer's state
or write files; they read plain SGD's (see SGDUpdate), because copying every weight before the
step and subtracting it after was about a fifth of a probed step's cost.
"""

from __future__ import annotations

import functools
import math
import warnings
import weakref
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Callable, NamedTuple, Sequence

import numpy as np
import torch

from gradflow import activations
from gradflow.errors import GradflowError, user_stacklevel
from gradflow.models import weights_behind
from gradflow.probes.quantities import (ACTIVATION, BIAS, DYING, HIST_BINS, HIST_EDGES, HIST_KINDS, OUTPUT,
                                        QUANTITIES, SATURATING, UPDATE, WEIGHT)

_BY_MODULE = {a.torch_name: a for a in activations.ACTIVATIONS.values()}
# norms outside this range may have lost precision in float32 (squares below ~1e-38 or above ~3e38): see Probes._add
EXACT_RANGE = (1e-14, 1e18)
# a value this close to the range's ends (or beyond) is taken in float64 in the step at the next probed step
# too, with the step's other values, so that one drifting past an end between probed steps costs no more copy
EARLY_MARGIN = 100.0
# the per-point values table() hands to the registry's `compute` (NaN where a point has none)
PRIMITIVES = ("grad_norm", "bias_grad_norm", "weight_norm", "signal_norm", "act_count", "act_sum", "act_std",
              "act_saturated", "act_dead", "update_norm")
_NO_POINTS = np.zeros(0, int)
# the id of the backward pass running on this thread, -1 outside one (torch's own checkpointing and
# multi-grad hooks ask the same)
_graph_task = torch._C._current_graph_task_id
FUSED = -1  # a signal hook's call whose dL/dz the fused kernels took (its norm alone is kept)
_will_run = torch._C._will_engine_execute_node  # (as torch.autograd.graph.register_multi_grad_hook asks it)
_queue = torch.autograd.Variable._execution_engine.queue_callback  # at the end of the running backward pass
_HALF = {torch.float16, torch.bfloat16}
_ROW = {name: j for j, name in enumerate(PRIMITIVES)}  # a primitive's row in table's (primitives, points) array
# probed steps with CPU tensors after which the probes load the fused kernels (Probes(fused=None)): loading
# costs ~0.5 s once per process and saved 0.3-1.0 ms per probed step of the reference workload (README,
# Performance)
FUSED_AFTER = 500
_FUSABLE = {torch.float32, torch.float64}  # what the fused kernels read
_WIDE, _DENSE = torch.float64, torch.strided
# the fused kernels load only for a net with a tensor of at least this many values: below it, a kernel call of
# its own costs about as much as its share of the batched kernels or more (this project's 2-core machine, per
# tensor of 50 in cache: signals level at 8192 values, activations 4.3-4.7 against 5.1-6.0 us; from 16384 both
# ahead, 3.0 against 3.2-3.8 and 6.5-7.2 against 10.7 us), so a recurrent net's many small states stay batched.
# Once loaded they take every tensor they can: one left to the batched pass costs its fixed ~0.2 ms
FUSED_MIN = 16384


class Stepped(NamedTuple):
    """The optimizer's step, taken before the probes' after_backward, with the norms it read on the way
    (float64, of the probes' weights in order): the weights' before the step, and the step's directions d,
    each weight moved by -lr * d."""

    weight_norms: torch.Tensor
    direction_norms: torch.Tensor
    lr: np.ndarray | float  # each weight's learning rate (or one for all) in that step


@dataclass
class Reading:
    """One probed step's primitives on the host, as read() fetched them; Probes.table() makes its table."""

    values: np.ndarray  # piece after piece, in the primitives' dtype (float64 where one was recomputed or fused)
    dests: list[np.ndarray]  # each piece's places in the flattened (primitives, points) array
    counts: list[tuple[np.ndarray, float | np.ndarray]]  # (points, units per activation output) of each group
    signal_at: np.ndarray  # the points with a back-propagated signal, and each one's batch size
    signal_batch: list[int]
    lr: np.ndarray | float | None  # plain SGD's learning rate(s) where the update norm is lr ||d||
    updated: bool  # the optimizer stepped: the update's primitives are in
    hist: np.ndarray | None  # (points, 2, kinds) histogram counts
    # what the fused kernels took: (layout, squared signal norms, activation sums, units, batch sizes): see
    # Probes._fused_primitives; table() makes their values
    fused: tuple | None = None
    # the weight points and the bias points whose parameter was frozen (requires_grad False: a fine-tuned
    # net's backbone) when the step's gradients were taken, or None: they took no gradient, so their gradient
    # and update cells are masked
    frozen: tuple[list[int], list[int]] | None = None


def _param(module, name: str):
    p = getattr(module, name, None)
    return p if isinstance(p, torch.Tensor) else None


def _first_uses(params: list[torch.Tensor | None]) -> list[int]:
    """The positions of the parameters given, each tensor at its first position only (None: no parameter)."""
    seen: set[int] = set()
    out = []
    for i, p in enumerate(params):
        if p is not None and id(p) not in seen:
            seen.add(id(p))
            out.append(i)
    return out


class _Tapped:
    """A probe's tap set on a layer (ProbePoint.tap); remove() clears it, as a hook's handle removes the hook."""

    __slots__ = ("layer",)

    def __init__(self, layer):
        self.layer = layer

    def remove(self) -> None:
        self.layer.tap = None


def gradients(params) -> list[torch.Tensor]:
    """Each parameter's gradient as its norms read it: a zero where it has none, and a sparse gradient's
    coalesced values (nn.Embedding(sparse=True): its repeated rows summed, as the update adds them)."""
    out = []
    for p in params:
        g = p.grad
        out.append(p.new_zeros(()) if g is None else g.coalesce().values() if g.is_sparse else g)
    return out


def _untrained(params) -> tuple[list[int], list[int]]:
    """The places in `params` of those with no gradient, and of those frozen (requires_grad False), now: one
    pass over them."""
    gradless, frozen = [], []
    for j, p in enumerate(params):
        if p.grad is None:
            gradless.append(j)
        if not p.requires_grad:
            frozen.append(j)
    return gradless, frozen


def _accumulates_into(w: torch.Tensor) -> bool:
    """Whether the running backward pass accumulates a gradient into parameter `w` (its AccumulateGrad node asked
    afresh: model.double() or .to() makes every parameter a new one)."""
    try:
        return _will_run(torch.autograd.graph.get_gradient_edge(w).node)
    except RuntimeError:  # torch refuses to say of an input of torch.autograd.grad: the parameters' own
        return False


def _skip(module, inputs, output) -> None:
    """A hook with nothing to take (in a tap that takes only one of a point's two tensors)."""


def _by_shape(tensors: list[torch.Tensor]) -> list[list[int]]:
    """Indices of `tensors` grouped by (shape, dtype), in order of first appearance."""
    groups: dict[tuple, list[int]] = {}
    for i, t in enumerate(tensors):
        groups.setdefault((t.shape, t.dtype), []).append(i)
    return list(groups.values())


def _one_thread(method):
    """Run a probe phase with one intra-op CPU thread. Its passes are many small kernels, and with more
    threads each pays a fork and join of the thread team for little work: on the reference workload at
    2 threads, every probe at every step fell from ~1.31x to ~1.21x a bare step. A no-op at 1 thread."""

    @functools.wraps(method)
    def run(*args, **kwargs):
        threads = torch.get_num_threads()
        if threads == 1:
            return method(*args, **kwargs)
        torch.set_num_threads(1)
        try:
            return method(*args, **kwargs)
        finally:
            torch.set_num_threads(threads)

    return run


class Probes:
    """The probes of a model's probe points (a model with `probe_points`, or the list itself).

    `activation` names the nonlinearity after every point (gradflow's own families); None reads
    it from each activation module's class (a user's model). `quantities` chooses and orders
    the table's columns (default: the whole registry). `fused`: whether the activation statistics
    and signal norms of CPU tensors are taken in the hooks by the fused kernels of
    gradflow.probes.fused (True: from the first probed step; False: never; None: from the
    FUSED_AFTER-th probed step on, where loading them pays back). Histograms need the tensors
    themselves and turn them off.
    """

    def __init__(self, model, activation: str | None = None, histograms: bool = False,
                 quantities: Sequence[str] | None = None, fused: bool | None = None):
        self.points = list(getattr(model, "probe_points", model))
        # the dimension of each point's output that holds the batch (ProbePoint.batch_dim)
        self._batch_dim = [getattr(p, "batch_dim", 0) for p in self.points]
        self.names = [p.name for p in self.points]
        self.quantities = tuple(quantities) if quantities is not None else tuple(QUANTITIES)
        for q in self.quantities:
            if q not in QUANTITIES:
                raise GradflowError(f"probe quantity {q!r} is not known; choices: {', '.join(QUANTITIES)}")
        self.histograms = histograms
        # points with a weight (layers); the others mark a state, e.g. h_t of a recurrent net
        # a weight tied to an earlier point's (a GPT's head sharing its token embedding) is that point's: its
        # gradient, the sum of both uses, once (each point's ratio to the other read 1 by construction)
        # each point's weight tensors (weights_behind: a parametrized weight's are the tensors it is made from, whose
        # norms are taken together: the norm of their concatenation), none for a point without a weight
        self._own_weights = [weights_behind(p.layer) for p in self.points]
        owners = _first_uses([w[0] if w else None for w in self._own_weights])
        # the point of each tensor in `weights`: a point with several tensors has as many entries, whose norms
        # table() joins into its one cell
        self.weight_points = [i for i in owners for _ in self._own_weights[i]]
        self.bias_points = _first_uses([_param(p.layer, "bias") for p in self.points])
        self.weights = [w for i in owners for w in self._own_weights[i]]
        # the points whose weight a later point uses too (a GPT's token embedding, its head's): their gradient is
        # the sum of every use, no layer's own (a first/last ratio from it read the head's: 23 for a 1e-6 vanishing)
        uses = [id(w[0]) for w in self._own_weights if w]
        self.tied = [self.names[i] for i in owners if uses.count(id(self._own_weights[i][0])) > 1]
        # the weight points whose every weight tensor was frozen (requires_grad False) at a probed step: `frozen`
        self._frozen_points: set[int] = set()
        self.biases = [self.points[i].layer.bias for i in self.bias_points]
        self.params = self.weights + self.biases  # the order of after_backward's `grad_norms`
        self.specs = [None if p.activation is None else
                      activations.get(activation) if activation else _BY_MODULE.get(type(p.activation).__name__)
                      for p in self.points]
        n = len(self.points)
        has = {WEIGHT: np.isin(np.arange(n), self.weight_points), BIAS: np.isin(np.arange(n), self.bias_points),
               OUTPUT: np.ones(n, bool), ACTIVATION: np.array([p.activation is not None for p in self.points]),
               SATURATING: np.array([s is not None and s.saturation is not None for s in self.specs]),
               DYING: np.array([s is not None and s.can_die for s in self.specs])}
        self.applicable = np.stack([has[QUANTITIES[q].where] for q in self.quantities], axis=1).reshape(n, -1)
        self._saturating, self._dying = has[SATURATING], has[DYING]
        needs = {QUANTITIES[q].where for q in self.quantities}
        self._keep_signals = histograms or OUTPUT in needs
        self._keep_acts = histograms or bool(needs & {ACTIVATION, SATURATING, DYING})
        self._ratio = any(QUANTITIES[q].when == UPDATE for q in self.quantities)
        self._weight_norms = self._ratio or "weight_norm" in self.quantities
        self._weight_at, self._bias_at = np.array(self.weight_points, int), np.array(self.bias_points, int)
        # where each piece's values go in the flattened (primitives, points) table: see Reading
        self._dest_grad = np.concatenate([self._dest("grad_norm", self._weight_at),
                                          self._dest("bias_grad_norm", self._bias_at)])
        self._dest_weight = self._dest("weight_norm", self._weight_at)
        self._dest_update = self._dest("update_norm", self._weight_at)
        # the cells that join the norms of several tensors (a parametrized weight's), or None where there is none
        at, tensors = np.unique(self._weight_at, return_counts=True)
        several = at[tensors > 1]
        self._joined = (np.concatenate([self._dest(q, several) for q in ("grad_norm", "weight_norm", "update_norm")])
                        if len(several) else None)
        self._signal_layouts: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}  # points -> (points, dests)
        self.armed = False
        self._hooks: list = []
        self._made: dict[tuple[str, int], Callable] = {}  # each point's hook functions, as `arm` made them
        self._plans: dict = {}  # how each layout of activation outputs is stacked and reduced (see _plan)
        self._sgd_groups: tuple | None = None  # (optimizer, its groups, their count, each weight's): SGDUpdate.of
        self._constants: dict = {}  # small threshold tensors, copied to the device once
        self._buffers: dict = {}  # scratch space reused by every probed step: fresh large allocations are slow
        # (exact piece's ordinal, its length) -> the indices in it whose values the last read found beyond
        # or near EXACT_RANGE's ends: the next probed step takes their float64 norms on the device (see _add)
        self._extreme: dict[tuple[int, int], list[int]] = {}
        # the fused kernels (a module, once loaded) and what they write in the hooks: each point's activation
        # (sum, squared deviations, saturated, dead) and signal's squared norm, in float64. `fused`: None while
        # undecided, then whether they are loaded; `_towards_fusing` counts probed steps towards FUSED_AFTER
        self.fused, self._kernels, self._towards_fusing = False if histograms else fused, None, 0
        self.fused_steps = 0  # probed steps at which the fused kernels took statistics
        # a Recorder's: the gradients are taken at the end of each backward pass that the signal hooks see, not at
        # the end of the step's block, where the loop may have clipped or unscaled them (see _pass_ended)
        self.grads_at_pass_end = False
        # two backward passes through one call seen, whose dL/dz add up: the fused kernels, which keep only a norm,
        # take no signal from then on (_drop_signal)
        self._fused_signals_off = False
        self._moved_between_passes = False  # said once: the weights changed between two passes of a step
        self._generation = 0  # probed steps armed so far: a signal hook's call knows its step by it
        self._fused_acts, self._fused_squares = np.zeros((n, 4)), np.zeros(n)
        # each point's saturation bounds, float32-rounded: the batched path's constants and the fused kernels'
        self._bounds = [tuple(float(np.float32(b)) for b in s.saturation) if s is not None and s.saturation
                        else (-math.inf, math.inf) for s in self.specs]
        self._fused_layouts: dict[tuple, tuple] = {}  # (signal points, activation points) -> see _fused_primitives
        self._count_kinds: list[int] = []  # what the kernels count in each point's activation output, once loaded
        if self.fused:
            self._use(load_fused())
        self._reset()

    # --- hooks: they keep references (no kernels), or take a CPU tensor's statistics with the fused kernels
    # once loaded. They stay registered across consecutive probed steps and are removed before an unprobed
    # one, which then carries none. ---
    def backward_seen(self) -> bool:
        """Whether some trainable probed parameter has a gradient (False after a loop's forward pass whose
        backward runs later, with the gradients set to None since the last one: torch's default)."""
        return any(p.grad is not None for p in self.params if p.requires_grad) or \
            not any(p.requires_grad for p in self.params)

    def forward_seen(self) -> bool:
        """Whether a probed layer ran since arm() with gradients enabled, not under torch.no_grad() (True where no
        hook is there to see one)."""
        return self._graded or not self._hooks

    def passes(self) -> int:
        """The backward passes that reached a layer output the hooks took since arm() (after the step's block too,
        until the next arm(): a pass through its graph after it)."""
        return len(self._passes)

    def pass_seen(self) -> bool:
        """Whether a backward pass since arm() went through a layer output the hooks took since then (True
        where none was taken to tell by: every probed output of the step made under no_grad, or frozen)."""
        return bool(self._passes) or not self._awaiting

    def arm(self) -> None:
        self._reset()
        if not self._hooks:
            for i, p in enumerate(self.points):
                # not a projection in a module, nor a layer whose output has no batch dimension (ProbePoint.batched)
                signal = self._keep_signals and isinstance(p.layer, torch.nn.Module) and p.batched
                act = self._keep_acts and p.activation is not None
                # one plain call for both (see ProbePoint.tap), unless another Probes holds the layer's tap
                if p.tap is not None and p.tap.tap is None and (signal or act):
                    p.tap.tap = self._tap(i, signal, act)
                    self._hooks.append(_Tapped(p.tap))
                    continue
                # (each point's hooks made once: a Recorder registers them again at every probed block)
                if signal:
                    self._hooks.append(p.layer.register_forward_hook(self._made_hook(self._on_output, i)))
                if act:
                    self._hooks.append(p.activation.register_forward_hook(self._made_hook(self._on_activation, i)))
        self.armed = True

    def _made_hook(self, make: Callable, i: int) -> Callable:
        """`make(i)`, made once for each point."""
        key = (make.__name__, i)
        if key not in self._made:
            self._made[key] = make(i)
        return self._made[key]

    def _reset(self) -> None:
        """Forget the last probed step's tensors."""
        n = len(self.points)
        self._signals: list[torch.Tensor | None] = [None] * n  # dL/dz at each point's output
        self._acts: list[torch.Tensor | None] = [None] * n  # the activation output after each point
        self._exact: list = []  # (device tensor, dests, the tensors whose norms it holds, factor): see _add
        self._plain: list = []  # (device tensor, dests) of the other primitives
        self._exact_size = self._plain_size = 0  # how many values the exact pieces hold, and the others
        self._least_factor = 1.0  # of the exact pieces: their values are at least this times their norms
        # the exact values taken in float64 in the step: (place among the exact values, its (2,) parts on
        # the device (_norm_parts), the factor that scales it)
        self._early: list[tuple[int, torch.Tensor, float]] = []
        self._counts: list = []  # (points, units) of each group of activation outputs, stacked or fused
        self._signal_at, self._signal_batch = _NO_POINTS, []
        self._rows: dict[int, int] = {}  # batch rows of a point's signals joined from several calls
        self._fused_units = [0] * n  # each point's activation size where the fused kernels took its statistics
        # whether each point's first activation output of the step came inside a backward pass: a recompute of
        # activation checkpointing whose forward ran under no_grad (reentrant; see _activation_again)
        self._in_backward = [False] * n
        self._fused_batch = [0] * n  # each point's signal batch size where they took its norm
        self._parts: dict[int, list] = {}  # the dL/dz of each call of a point that ran more than once
        self._dropped: set[int] = set()  # the points whose signal this step leaves out (_drop_signal)
        # the backward pass the hooks saw last, and whether it accumulates gradients (None: not known yet): _new_pass
        self._task, self._task_accumulates = None, None
        self._passes: dict[int, bool | None] = {}  # the same of each pass of the step
        self._pass_grads: list[torch.Tensor] | None = None  # the gradients copied at a backward pass's end
        self._pass_versions: list[int] | None = None  # the weights' version counters then (_pass_ended)
        # the params that had no gradient when the step's were read (a layer the step did not run: a head the loss
        # does not use, a branch taken only sometimes): masked as a frozen one's, never a norm of 0
        self._gradless: list[int] = []
        # the params frozen (requires_grad False) then too: a loop may freeze a layer before the step is read (at
        # the next rec.step() or close(): a model frozen for its export masked the last step's gradients)
        self._frozen_params: list[int] = []
        self._generation += 1
        # a probed layer ran with gradients enabled, and one's output awaits its dL/dz (forward_seen, pass_seen:
        # a loop's mistakes)
        self._graded = self._awaiting = False
        self._sgd: SGDUpdate | None = None  # where the step's update is read, if not from a copy
        self._lr: np.ndarray | float | None = None  # Reading.lr
        self._fused_values = None  # the step's fused values as Reading.fused holds them (not self.fused: see __init__)
        self._updated = False

    def _dest(self, primitive: str, at: np.ndarray) -> np.ndarray:
        """The places of `primitive` at points `at` in the flattened (primitives, points) table."""
        return _ROW[primitive] * len(self.points) + at

    def remove(self) -> None:
        """Remove the hooks (before an unprobed step, and at the end); arm() registers them again."""
        for h in self._hooks:
            h.remove()
        self._hooks = []
        self.armed = False

    def _tap(self, i: int, signal: bool, act: bool):
        """The two hooks' work at point i as one call that a layer with a tap slot makes (mlp.Layer)."""
        on_output = self._on_output(i) if signal else _skip
        on_activation = self._on_activation(i) if act else _skip

        def tap(z, y):
            on_output(None, None, z)
            on_activation(None, None, y)

        return tap

    def _on_output(self, i):
        def hook(module, inputs, z):
            if not self.armed:
                return
            self._graded = self._graded or torch.is_grad_enabled()
            if isinstance(z, tuple):  # e.g. a cell returning (h, c): the first is the state
                z = z[0]
            if z.grad_fn is not None:
                self._awaiting = True
                nr = z.output_nr
                call = None  # (the probed step, this call's place among the point's calls) once a pass brought dL/dz

                # a pre-hook on the node that receives dL/dz: registered in C++, cheaper than a tensor hook
                def keep(grad_outputs):
                    nonlocal call
                    g = grad_outputs[nr]
                    if g is None:  # an output of a node with several that got no gradient
                        return
                    if _graph_task() != self._task:
                        self._new_pass(_graph_task())
                    if self._task_accumulates is None:
                        self._ask_pass(i)
                    if self._task_accumulates is False:  # torch.autograd.grad's pass (a saliency map, a gradient
                        return  # penalty): its dL/dz is not the loss's, and no gradient is the loss's for it
                    if call is not None:  # another backward pass through this call: the passes' dL/dz add up
                        return self._signal_added(i, call, g)
                    if self._fused_batch[i] or self._signals[i] is not None or i in self._dropped:
                        call = self._signal_again(i, g)  # the layer ran again in this step
                        return
                    kernels = self._kernels
                    # (inline checks: a helper's call costs microseconds in a hook, where its code is cold)
                    if (kernels is not None and g.is_cpu and g.dtype in _FUSABLE and g.numel()
                            and not self._fused_signals_off):
                        if not g.is_contiguous():  # (the kernels read the values at its address; a sign bit
                            g = g.contiguous()  # set on a view, Tensor.is_neg, leaves the squares as they are)
                        self._fused_squares[i] = kernels.squared_norm_at(g.data_ptr(), g.numel(), g.dtype is _WIDE)
                        self._fused_batch[i] = g.shape[self._batch_dim[i]]
                        call = (self._generation, FUSED)
                    else:
                        self._signals[i] = g
                        call = (self._generation, 0)

                z.grad_fn.register_prehook(keep)

        return hook

    def _on_activation(self, i):
        lo, hi = self._bounds[i]
        out = self._fused_acts[i]  # (a view of its row, made once)

        def hook(module, inputs, y):
            if self.armed and torch.is_grad_enabled():  # (a forward pass under no_grad is not the one trained)
                self._graded = True
                if self._fused_units[i] or self._acts[i] is not None:
                    return self._activation_again(i, y)  # the layer ran again in this step
                self._in_backward[i] = _graph_task() >= 0
                kernels = self._kernels
                if kernels is not None and y.is_cpu and y.dtype in _FUSABLE and y.numel():
                    if not y.is_contiguous() or y.is_neg():  # (the kernels read the values at its address)
                        y = y.resolve_neg().contiguous()
                    kernels.activation_stats_at(y.data_ptr(), y.numel(), y.dtype is _WIDE, lo, hi,
                                                self._count_kinds[i], out)
                    self._fused_units[i] = y.numel()
                else:  # read under no_grad in after_backward: no detach needed here
                    self._acts[i] = y

        return hook

    # --- a point whose layer runs more than once in a probed step (gradient accumulation over micro-batches,
    # a layer reused in a loop): its signal and activation statistics are those of all its calls as one batch,
    # as the gradients, which accumulate, are. Rare, so plain code off the hooks' fast path. ---
    def _signal_again(self, i: int, g: torch.Tensor) -> tuple[int, int] | None:
        """Another call's dL/dz at point i: the squared norms add, and so do the batch sizes (sqrt(batch)
        ||dL/dZ|| is then the RMS per example over every call, the value one batch of them all gives). The
        call's (probed step, place among the point's calls: FUSED where the kernels took it), as `keep` holds it."""
        if i in self._dropped:
            return None
        g = g.detach()
        if self._fused_batch[i]:  # the first was taken by the fused kernels (a CPU tensor): float64 squares
            self._fused_squares[i] += float(torch.linalg.vector_norm(g, dtype=torch.float64)) ** 2
            self._fused_batch[i] += g.shape[self._batch_dim[i]]
            return self._generation, FUSED
        parts = self._parts.setdefault(i, [self._signals[i]])  # (joined in _signal_primitives)
        parts.append(g)
        return self._generation, len(parts) - 1

    def _signal_added(self, i: int, call: tuple[int, int], g: torch.Tensor) -> None:
        """A second backward pass through a call whose dL/dz an earlier pass of the step brought (two losses
        back-propagated one after the other, the first with retain_graph=True): the gradients accumulate
        their sum, so the signal is the sum's, dL1/dz + dL2/dz (as squares of each call it read ~1.4x)."""
        step, k = call
        if step != self._generation or i in self._dropped:
            return  # (a pass through an earlier step's graph, or a point this step leaves out)
        if k == FUSED:  # the earlier pass's went to the fused kernels, which keep only its squared norm
            return self._drop_signal(i)
        g = g.detach()
        if i in self._parts:
            self._parts[i][k] = self._parts[i][k] + g
        else:
            self._signals[i] = self._signals[i] + g

    def _drop_signal(self, i: int) -> None:
        """Leave point i's signal out of this probed step (a sum of passes the fused kernels cannot form), and
        keep the tensors from now on, which add."""
        self._dropped.add(i)
        self._signals[i], self._fused_batch[i], self._fused_squares[i] = None, 0, 0.0
        self._parts.pop(i, None)
        if not self._fused_signals_off:
            self._fused_signals_off = True
            warnings.warn(f"{self.names[i]}: a second backward pass went through one forward call in a probed step "
                          "(losses back-propagated one by one, retain_graph=True), where the fused CPU kernels had "
                          "kept only the first pass's norm of dL/dz, not dL/dz to add the second's to: that step's "
                          "back-propagated signal of such layers is left out, and later steps keep the tensors",
                          stacklevel=user_stacklevel())

    def _new_pass(self, task: int) -> None:
        """A signal of another backward pass than the last one's. At the first of a pass, where
        `grads_at_pass_end`, the gradients are taken at its end: queued from a callback, so after every callback
        queued in the pass (DDP's, which averages them: from the pass's first hook, the copy took each rank's own
        gradients, or half-reduced buckets)."""
        self._task, self._task_accumulates = task, self._passes.get(task)
        if task in self._passes:  # (back in a pass after a nested one)
            return
        self._passes[task] = None
        if self.grads_at_pass_end:
            _queue(lambda: _queue(lambda: self._pass_ended(task)))

    def _ask_pass(self, i: int) -> None:
        """Whether the running backward pass accumulates gradients (loss.backward()) or only returns some
        (torch.autograd.grad: a saliency map, a gradient penalty, whose dL/dz is no loss's signal: it read the
        input layer's ~27x the loss's in one loop), asked of point i's trainable weight, which is in its own
        call's graph. A point without one (frozen, or none) cannot tell, and its signal is kept: a reentrant
        checkpoint's backward of frozen layers accumulates only into the checkpoint's inputs, and is the loss's."""
        own = [w for w in self._own_weights[i] if w.requires_grad]
        if not own:
            return
        # (a pass with backward(inputs=[...]) may leave this weight out and accumulate into others': asked too)
        accumulates = any(_accumulates_into(w) for w in own) or \
            any(_accumulates_into(p) for p in self.weights if p.requires_grad)
        self._task_accumulates = self._passes[self._task] = accumulates

    @property
    def grads_from_pass_end(self) -> bool:
        """Whether the probed step's gradients were copied at its last backward pass's end (_pass_ended)."""
        return self._pass_grads is not None

    @_one_thread
    def _pass_ended(self, task: int) -> None:
        """The end of a backward pass that accumulated gradients: the gradients as they stand now (after the
        last of several micro-batches' passes, their sum) are the step's, copied, whatever the loop does to
        them later in the block: clipping them (the norms read the clipped ones: 0.0043 for 0.34) or unscaling
        them (scaler.unscale_: they are read as scaled, and divided by the scale as the signals are)."""
        if self._passes.get(task) is False:  # (a pass of torch.autograd.grad's changed no gradient)
            return
        if torch._C._current_autograd_node() is not None:  # a pass inside another (reentrant checkpointing's,
            return  # one a block): the outer pass's end takes them, once
        with torch.no_grad():
            grads = gradients(self.params)
            self._pass_grads = self._copied("grad", grads) if grads else []
            self._gradless, self._frozen_params = _untrained(self.params)
        self._weights_moved()

    def _weights_moved(self) -> None:
        """Said once where the weights changed in place between two backward passes of one probed step (their
        version counters): a SAM-style second pass at perturbed weights, or an update between micro-batches.
        The passes are read as micro-batches of one update (a batch of 2B, signals ~2x one pass's, activations
        of both weights), which they are not."""
        versions = [p._version for p in self.params]
        if self._pass_versions not in (None, versions) and not self._moved_between_passes:
            self._moved_between_passes = True
            warnings.warn("the weights changed between two backward passes of one probed step (a SAM-style "
                          "second pass at perturbed weights, or an update between micro-batches): the passes are "
                          "read as micro-batches of one update, their signals and activations as one batch. To "
                          "record one pass, run the other after the rec.step block", stacklevel=user_stacklevel())
        self._pass_versions = versions

    def _activation_again(self, i: int, y: torch.Tensor) -> None:
        """Another activation output at point i: statistics over the union of its outputs. Unless it is
        non-reentrant activation checkpointing recomputing, inside the backward pass, a forward pass whose
        outputs were taken already (torch.utils.checkpoint(use_reentrant=False)): the same values again.
        (Reentrant checkpointing runs its forward under no_grad, which the hooks skip; its recomputes in
        the backward pass are the outputs, one per micro-batch.)"""
        if not self._in_backward[i] and _graph_task() >= 0:
            return
        y = y.detach()
        if not self._fused_units[i]:
            self._acts[i] = torch.cat([self._acts[i].detach().reshape(-1), y.reshape(-1)])
            return
        # the first was taken by the fused kernels: this one's (sum, squared deviations, saturated, dead) in
        # float64, combined with the first's by Chan et al.'s pairwise update of the squared deviations
        lo, hi = self._bounds[i]
        v = y.reshape(-1).double()
        n, total = v.numel(), float(v.sum())
        more = np.array([total, float(((v - total / max(n, 1)) ** 2).sum()),
                         float(((v > hi) | (v < lo)).sum()), float((v == 0).sum())])
        out, m = self._fused_acts[i], self._fused_units[i]
        if n:
            delta = more[0] / n - out[0] / m
            out[1] += more[1] + delta * delta * m * n / (m + n)
        out[[0, 2, 3]] += more[[0, 2, 3]]
        self._fused_units[i] = m + n

    # --- the probed step: primitives on the device ---
    @_one_thread
    def after_backward(self, grad_norms: torch.Tensor | None = None, optimizer=None, keep_grads: bool = False,
                       stepped: Stepped | None = None) -> None:
        """Compute every backward-phase primitive on the device (no host sync).

        `grad_norms`: the gradient norms of `self.params`, when the caller has them already.
        `optimizer`: the one about to step, when the caller has it: plain SGD's update is then
        read from it after the step (SGDUpdate) instead of copying the weights now.
        `keep_grads`: the caller changes the gradients in place before read() (clipping, zeroing):
        they are copied now, so that a norm beyond float32's range is recomputed from the gradients
        it is the norm of (one copy of them per probed step).
        `stepped`: the caller has taken the step already and read the weights' and the update's norms
        on the way (gradflow's loop, by SGDStep): they are the update-phase primitives too.
        """
        self.armed = False
        with torch.no_grad():
            if self.params:
                self._gradient_primitives(grad_norms, keep_grads)
            if self._weight_norms or self._ratio:
                self._weight_update_primitives(optimizer, stepped)
            if self._keep_signals:
                self._signal_primitives()
            if self._keep_acts:
                self._activation_primitives()
            if self._kernels is not None:
                self._fused_primitives()
            elif self.fused is None and any(_fusable(t) for t in (*self._acts, *self._signals)):
                self._count_towards_fusing()
            if self.histograms:
                self._histograms = self._histogram_counts()

    def _gradient_primitives(self, grad_norms: torch.Tensor | None, keep_grads: bool) -> None:
        """The gradient norms of `self.params` (after_backward's `grad_norms`, or taken now)."""
        grads = None  # (float64 norms are never recomputed: they need no gradients kept)
        if self._pass_grads is not None:  # copied at the end of the step's last backward pass
            grads = self._pass_grads
            grad_norms = self._norms_of(grads)
        else:
            # (where the gradients were copied at the pass's end, _pass_ended took both)
            self._gradless, self._frozen_params = _untrained(self.params)
            if grad_norms is None or grad_norms.dtype != torch.float64:
                # the gradients as they are now (a loop may set them to None before the read)
                grads = gradients(self.params)
                if grad_norms is None:
                    grad_norms = self._norms_of(grads)
                if keep_grads and grad_norms.dtype != torch.float64:
                    grads = self._copied("grad", grads)
        self._add(grad_norms, self._dest_grad, exact=(grads, 1.0))

    def _weight_update_primitives(self, optimizer, stepped: Stepped | None) -> None:
        """The weight norms, and for the update ratio the update's norms where the step was taken already
        (`stepped`), else how after_update will read it: from plain SGD's state, or from a copy of the weights
        made now."""
        if self._weight_norms:
            self._add(self._norms_of(self.weights) if stepped is None else stepped.weight_norms, self._dest_weight)
        if self._ratio and stepped is not None:
            self._add(stepped.direction_norms, self._dest_update)
            self._lr, self._updated = stepped.lr, True
        elif self._ratio:
            self._sgd = SGDUpdate.of(optimizer, self.weights, self._optimizer_groups(optimizer))
            self._lr = None if self._sgd is None else self._sgd.lr
            if self._sgd is None:  # the weights before the update, copied into kept buffers
                self._before = self._copied("before", self.weights)

    def _signal_primitives(self) -> None:
        """The norms of the back-propagated signals dL/dz the hooks kept, and each one's batch size."""
        for i, parts in self._parts.items():  # a point's calls, joined (_signal_again)
            self._rows[i] = sum(g.shape[self._batch_dim[i]] for g in parts)
            self._signals[i] = torch.cat([g.reshape(-1) for g in parts])
        at = tuple(i for i, g in enumerate(self._signals) if g is not None)
        if not at:
            return
        signals = [self._signals[i] for i in at]
        layout = self._signal_layouts.get(at)
        if layout is None:
            points = np.array(at)
            layout = self._signal_layouts[at] = (points, self._dest("signal_norm", points))
        self._signal_at, self._signal_batch = layout[0], [g.shape[self._batch_dim[i]] for i, g in zip(at, signals)]
        if self._rows:  # points whose signals of several calls were joined (_signal_again)
            self._signal_batch = [self._rows.get(i, b) for i, b in zip(at, self._signal_batch)]
        self._add(self._norms(signals), layout[1], exact=(signals, 1.0))

    def _histogram_counts(self) -> torch.Tensor:
        """(points, 2, 2, kinds): the counts of each point's activation output and dL/dz, NaN where a point has
        no such tensor, each as two parts exact in the step's float32 copy (`COUNT_SPLIT`; counts above 2^24
        were not: a bin stopped counting at 16,777,216)."""
        device = next((t.device for t in [*self.weights, *self._acts, *self._signals] if t is not None), None)
        empty = torch.full((2, len(HIST_KINDS)), float("nan"), device=device)
        return torch.stack([torch.stack([_split_count(histogram(t)) if t is not None else empty for t in pair])
                            for pair in zip(self._acts, self._signals)])

    @_one_thread
    def after_update(self) -> None:
        """Compute the update-phase primitives, once the optimizer has stepped."""
        if not self._ratio or self._updated:  # (taken with the step: after_backward's `stepped`)
            return
        with torch.no_grad():
            if self._sgd is None:
                updates = self._before
                torch._foreach_sub_(updates, self.weights)  # now -dW
            else:
                updates = self._sgd.directions()  # dW / lr (lr applied on the host, in table)
            self._add(self._norms_of(updates), self._dest_update, exact=(updates, 1.0))
        self._updated = True

    def _optimizer_groups(self, optimizer) -> list | None:
        """Each weight's parameter group in `optimizer` (None where it has none), worked out once per
        optimizer and group count rather than at every probed step."""
        if optimizer is None:
            return None
        groups = optimizer.param_groups  # a new list after load_state_dict, a longer one after add_param_group
        cached = self._sgd_groups
        if cached is None or cached[0]() is not optimizer or cached[1] is not groups or cached[2] != len(groups):
            group_of = {id(p): g for g in groups for p in g["params"]}
            cached = self._sgd_groups = (weakref.ref(optimizer), groups, len(groups),
                                         [group_of.get(id(w)) for w in self.weights])
        return cached[3]

    def _activation_primitives(self) -> None:
        at = [i for i, y in enumerate(self._acts) if y is not None]
        acts = [self._acts[i] for i in at]
        key = (tuple(at), tuple(y.shape for y in acts), tuple(y.dtype for y in acts), acts[0].device if acts else None)
        plan = self._plans.get(key) or self._plan(key, at, acts)
        for group in plan:
            y = torch.stack([acts[j] for j in group.members], out=group.stack).flatten(1)
            if y.dtype in _HALF:  # (k, units); a float32 copy of half precision (float64 stays float64)
                y = y.float()
            stats = _activation_stats(y, group)
            for k in ("sum", "saturated", "dead"):
                if k in stats:
                    self._add(stats[k], group.dests[k])
            # y now holds the outputs less their means: the std's exact recomputation reads its rows
            self._add(stats["std"], group.dests["std"], exact=(y, group.std_factor))
            self._counts.append((group.points, group.units))

    def _fused_primitives(self) -> None:
        """The values the fused kernels took in the hooks, kept for the reading (plain float64: exact). Their
        square roots and means are table()'s, outside the step."""
        signals = tuple(i for i, b in enumerate(self._fused_batch) if b)
        acts = tuple(i for i, u in enumerate(self._fused_units) if u)
        if not signals and not acts:
            return
        layout = self._fused_layouts.get((signals, acts))
        if layout is None:
            if len(self._fused_layouts) >= 16:  # inputs of ever new shapes: keep the memory bounded
                self._fused_layouts.clear()
            signal_at, act_at = np.array(signals, int), np.array(acts, int)
            saturating, dying = self._saturating[act_at], self._dying[act_at]
            dests = np.concatenate([self._dest("signal_norm", signal_at), self._dest("act_sum", act_at),
                                    self._dest("act_std", act_at), self._dest("act_saturated", act_at[saturating]),
                                    self._dest("act_dead", act_at[dying])])
            layout = self._fused_layouts[signals, acts] = (signal_at, act_at, saturating, dying, dests)
        self.fused_steps += 1
        # (the two lists are the step's own: _reset makes new ones)
        self._fused_values = (layout, self._fused_squares.copy(), self._fused_acts.copy(), self._fused_units,
                              self._fused_batch)

    @staticmethod
    def _spread_fused(got: np.ndarray, scale: np.ndarray, fused: tuple) -> None:
        """A reading's fused values into table()'s (primitives, points) array, and their points' signal scales."""
        (signal_at, act_at, saturating, dying, dests), squares, acts, units, batch = fused
        units = np.array(units, float)[act_at]
        stats = acts[act_at]
        got.flat[dests] = np.concatenate([np.sqrt(squares[signal_at]), stats[:, 0],
                                          np.sqrt(stats[:, 1] / np.maximum(units - 1, 1)), stats[saturating, 2],
                                          stats[dying, 3]])
        got[_ROW["act_count"], act_at] = units
        scale[signal_at] = np.sqrt(np.array(batch, float)[signal_at])

    def expect(self, probed: int) -> None:
        """The caller will probe `probed` steps: where that is FUSED_AFTER or more, the first probed step with
        a tensor the fused kernels take (fused=None) loads them, rather than the FUSED_AFTER-th."""
        if probed >= FUSED_AFTER:
            self._towards_fusing = max(self._towards_fusing, FUSED_AFTER - 1)

    def _count_towards_fusing(self) -> None:
        """A probed step with a tensor the fused kernels take: at the FUSED_AFTER-th, load them (where numba
        cannot load, the probes stay batched)."""
        self._towards_fusing += 1
        if self._towards_fusing >= FUSED_AFTER:
            self._use(load_fused(required=False))
            self.fused = self._kernels is not None

    @property
    def kernels(self):
        """The fused CPU kernels (the module probes.fused) once loaded, else None."""
        return self._kernels

    def _use(self, kernels) -> None:
        """Take statistics with the fused `kernels` from now on (None: stay batched)."""
        self._kernels = kernels
        if kernels is not None:
            self._count_kinds = [kernels.counts_for(lo, hi, bool(dying)) for (lo, hi), dying in
                                 zip(self._bounds, self._dying)]

    def _plan(self, key, at: list[int], acts: list[torch.Tensor]) -> list[SimpleNamespace]:
        """How activation outputs of this layout are reduced: grouped by shape and dtype, each group
        stacked into a kept buffer, with its points' saturation bounds on the device."""
        if len(self._plans) >= 16:  # inputs of ever new shapes: keep the memory bounded
            self._plans.clear()
            self._buffers.clear()
        plan = []
        for members in _by_shape(acts):
            first = acts[members[0]]
            points = np.array([at[j] for j in members])
            specs = [self.specs[i] for i in points]
            units = first.numel()  # per stacked row: the whole output, batch included
            stack = self.buffer(("acts", len(members), tuple(first.shape)), (len(members), *first.shape),
                                first.dtype, first.device)
            bounds = self.constant([self._bounds[i] for i in points], first.device, torch.float32)
            wide = torch.float64 if first.dtype == torch.float64 else torch.float32  # |y| of a float64 y stays so
            scratch = self.buffer(("scratch", len(members), units, wide), (len(members), units), wide, first.device)
            dests = {k: self._dest(f"act_{k}", points) for k in ("sum", "saturated", "dead", "std")}
            plan.append(_reduction(specs, bounds, scratch, members=members, points=points, stack=stack, dests=dests))
        self._plans[key] = plan
        return plan

    def _add(self, values: torch.Tensor, dests: np.ndarray, exact: tuple | None = None) -> None:
        """A 1-d device tensor of primitives, to go to `dests` in the flattened (primitives, points) table.

        `exact`: for norms, (the tensors whose norms `values` are, in order, a factor that scales them):
        float32 norms underflow to 0 below ~1e-19 per entry and overflow above ~1e19, which vanishing and
        exploding nets reach; read() recomputes such values in float64 from these tensors (kept until then)."""
        if exact is None or values.dtype == torch.float64:  # (a float64 model's norms hold the whole range)
            self._plain.append((values, dests))
            self._plain_size += len(dests)
            return
        tensors, factor = exact
        # the values the last probed step found beyond float32's range: their float64 norms now, on the device,
        # to come back in read()'s one copy (a wrong guess after a change of layout costs work, never exactness)
        for j in self._extreme.get((len(self._exact), len(dests)), ()):
            t = tensors[j].detach()
            if t.device == values.device:
                self._early.append((self._exact_size + j, _norm_parts(t), factor))
        self._exact.append((values, dests, tensors, factor))
        self._exact_size += len(dests)
        self._least_factor = min(self._least_factor, factor)

    def _norms_of(self, tensors: list[torch.Tensor]) -> torch.Tensor:
        """The 2-norms of `tensors`: by the fused kernels where they are loaded and take every one of them
        (float64, so exact; on the CPU, a loop of them is faster than torch's foreach norm, which there
        dispatches one norm per tensor), else _norms."""
        squares = self.squared_norms(tensors)
        if squares is None:
            return self._norms(tensors)
        return torch.from_numpy(np.sqrt(squares, out=squares))

    def squared_norms(self, tensors: list[torch.Tensor]) -> np.ndarray | None:
        """The squared 2-norms of `tensors` in float64, by the fused kernels in one call; None where they are not
        loaded or do not take every one (tensors on a GPU, sparse, of a half dtype, or of two dtypes)."""
        kernels = self._kernels
        if kernels is None or not tensors:
            return None
        dtype = tensors[0].dtype
        if dtype not in _FUSABLE or not all(t.dtype is dtype and t.layout is _DENSE and t.is_cpu for t in tensors):
            return None
        tensors = [t if t.is_contiguous() else t.contiguous() for t in tensors]  # (alive through the call)
        out = np.empty(len(tensors))
        kernels.squared_norms_at(np.array([t.data_ptr() for t in tensors], np.int64),
                                 np.array([t.numel() for t in tensors], np.int64), dtype is _WIDE, out)
        return out

    @staticmethod
    def _norms(tensors: list[torch.Tensor]) -> torch.Tensor:
        """The 2-norms of `tensors`, in float32 where they are half or bfloat16 (autocast's outputs and
        signals): a norm in their own dtype would keep 2-3 digits, and float16's overflows above 65504."""
        dtypes = {t.dtype for t in tensors}
        if dtypes & _HALF:  # (with float64 tensors among them: in float64)
            wide = torch.float64 if torch.float64 in dtypes else torch.float32
            return torch.stack(torch._foreach_norm(tensors, 2, dtype=wide))
        return torch.stack(torch._foreach_norm(tensors))

    # --- one host copy per probed step; the table assembled by index, then or later ---
    def read(self, *carry: torch.Tensor) -> tuple[Reading, list[float]]:
        """The probed step's primitives on the host, and the values of the `carry` scalars (the
        caller's own, brought back in the same copy). Norms outside float32's range are recomputed
        in float64 from the step's tensors: in the step, with the others, those that were outside
        (or near) it at the last probed step; here, with one more copy, any new one. Note: the
        device->host sync point of a probed step, one copy for all values (and histograms)."""
        pieces = [v for v, *_ in self._exact] + [v for v, _ in self._plain] + [c.reshape(1) for c in carry]
        if self.histograms:
            pieces.append(self._histograms.reshape(-1))
        early = len(self._early)
        if early:  # (float64 parts: the copy is then float64, of a few hundred values at most)
            pieces.append(torch.stack([parts for _, parts, _ in self._early]).reshape(-1))
        flat = torch.cat(pieces).cpu().numpy() if pieces else np.zeros(0)  # float32 unless the model is float64
        if early:
            parts = flat[len(flat) - 2 * early :].astype(np.float64).reshape(early, 2)
            flat = flat[: len(flat) - 2 * early].astype(np.float64)
            at, _, factors = zip(*self._early)
            flat[list(at)] = parts[:, 0] * parts[:, 1] * factors
        # a first look, in plain Python over the few values (in a probed step each numpy call costs tens
        # of microseconds): none near or beyond the range's ends (for norms scaled by a factor <= 1, its top)
        lo, hi = EXACT_RANGE[0] * EARLY_MARGIN, EXACT_RANGE[1] / EARLY_MARGIN * self._least_factor
        if early or not all(lo <= v <= hi for v in flat[: self._exact_size].tolist()):  # (NaN too: left as is)
            flat = self._settle(flat.astype(np.float64, copy=False))
        size = self._exact_size + self._plain_size
        n = len(self.points)
        if self.histograms:
            parts = flat[size + len(carry):].astype(np.float64).reshape(n, 2, 2, len(HIST_KINDS))
            hist = parts[:, :, 0] * COUNT_SPLIT + parts[:, :, 1]
        else:
            hist = None
        reading = Reading(flat[:size], [p[1] for p in self._exact] + [p[1] for p in self._plain], self._counts,
                          self._signal_at, self._signal_batch, self._lr,
                          self._updated, hist, self._fused_values, self._frozen())
        carried = flat[size : size + len(carry)].tolist()
        self._reset()
        return reading, carried

    @property
    def frozen(self) -> list[str]:
        """The weight points whose weight was frozen (requires_grad False) at a probed step, by name (run.json's
        `frozen`): a "-" there is that, not a layer the step left unused."""
        return [self.names[i] for i in sorted(self._frozen_points)]

    def _frozen(self) -> tuple[list[int], list[int]] | None:
        """The weight and bias points whose parameter took no gradient in the step (frozen, or no gradient, when
        its gradients were taken: `_frozen_params`, `_gradless`), or None; the frozen weight points join `frozen`."""
        if not self._gradless and not self._frozen_params:
            return None
        frozen = set(self._frozen_params)
        trained = {i for j, i in enumerate(self.weight_points) if j not in frozen}
        self._frozen_points.update(i for i in self.weight_points if i not in trained)
        masked = frozen.union(self._gradless)
        return ([i for j, i in enumerate(self.weight_points) if j in masked],
                [i for j, i in enumerate(self.bias_points, start=len(self.weights)) if j in masked])

    def _settle(self, flat: np.ndarray) -> np.ndarray:
        """`flat` (float64) with every exact value beyond EXACT_RANGE recomputed in float64 from its tensor,
        but those taken early; and which to take early at the next probed step: those now beyond the range
        or within EARLY_MARGIN of its ends. Note: one host sync point, where a value is new beyond the range."""
        early = {at for at, _, _ in self._early}
        at, tensors, factors, start = [], [], [], 0
        for _, dests, piece, factor in self._exact:  # the values are factor x the norms of `piece`
            for j in _outside(flat[start : start + len(dests)] / factor):
                if start + j not in early:
                    at.append(start + j)
                    tensors.append(piece[j])
                    factors.append(factor)
            start += len(dests)
        if at:
            flat[at] = float64_norms(tensors) * factors
        self._extreme, start = {}, 0
        for p, (_, dests, _, factor) in enumerate(self._exact):
            near = _outside(flat[start : start + len(dests)] / factor, EARLY_MARGIN)
            if len(near):
                self._extreme[p, len(dests)] = near.tolist()
            start += len(dests)
        return flat

    def table(self, reading: Reading, grad_scale: float = 1.0, signal_scale: float = 1.0) -> tuple[np.ndarray,
                                                                                                   np.ndarray]:
        """A reading's (points, quantities) values, in the order of `self.quantities`, and their mask
        (False where a quantity does not apply to a point or was not taken at that step). `grad_scale`,
        `signal_scale`: factors of the weight and bias gradients' norms and of the signals' (a mixed-precision
        loop's loss scale undone: the Recorder's `scaler`)."""
        n = len(self.points)
        got = np.full((len(PRIMITIVES), n), np.nan)
        if reading.dests:
            # (in float64, as the table: the update's lr and a joined norm's squares were taken in float32)
            dests, values = np.concatenate(reading.dests), np.asarray(reading.values, dtype=np.float64)
            if reading.lr is not None:  # plain SGD: the update norm was read as ||d||, each tensor's at its own lr
                update = dests // n == _ROW["update_norm"]
                if update.any():
                    values = values.copy()  # (reading.values as read stay as they are)
                    values[update] *= reading.lr
            got.flat[dests] = values
            if self._joined is not None:  # a point's several tensors: the norm of them all, sqrt(sum of squares)
                several = np.isin(dests, self._joined)
                squares = np.zeros(got.size)
                np.add.at(squares, dests[several], values[several] ** 2)
                got.flat[dests[several]] = np.sqrt(squares[dests[several]])
        got[[_ROW["grad_norm"], _ROW["bias_grad_norm"]]] *= grad_scale
        for points, units in reading.counts:
            got[_ROW["act_count"], points] = units
        # RMS over the batch of each example's signal: sqrt(B) ||dL/dZ||_F
        scale = np.full(n, np.nan)
        scale[reading.signal_at] = np.sqrt(reading.signal_batch)
        if reading.fused is not None:
            self._spread_fused(got, scale, reading.fused)
        got[_ROW["signal_norm"]] *= scale * signal_scale
        has_signal = ~np.isnan(scale)
        stats = SimpleNamespace(**dict(zip(PRIMITIVES, got)))
        values = np.full((n, len(self.quantities)), np.nan)
        mask = self.applicable.copy()
        with np.errstate(divide="ignore", invalid="ignore"):
            for j, q in enumerate(self.quantities):
                quantity = QUANTITIES[q]
                if quantity.when == UPDATE and not reading.updated:  # no update was taken at this step (the last one)
                    mask[:, j] = False
                    continue
                values[:, j] = quantity.compute(stats)
                if quantity.where == OUTPUT:
                    mask[:, j] &= has_signal
                elif quantity.where in (ACTIVATION, SATURATING, DYING):  # no activation output this step (a
                    mask[:, j] &= ~np.isnan(stats.act_count)  # block skipped, stochastic depth): no cell, not NaN
                if quantity.when == UPDATE:
                    mask[:, j] &= stats.weight_norm != 0  # a ratio to a zero weight (e.g. Fixup's) is undefined
                if reading.frozen is not None and quantity.needs_grad:  # no gradient taken, none to show (not 0)
                    weights, biases = reading.frozen
                    mask[biases if quantity.where == BIAS else weights, j] = False
        return values, mask

    def fetch(self, *carry: torch.Tensor) -> tuple[np.ndarray, np.ndarray, list[float]]:
        """read() and table() at once: the probed step's values and mask, and the `carry` values."""
        reading, carried = self.read(*carry)
        return (*self.table(reading), carried)

    def _copied(self, tag: str, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        """Copies of `tensors` (one or more) in the scratch buffers kept for `tag`."""
        kept = [self.buffer((tag, j), tuple(t.shape), t.dtype, t.device) for j, t in enumerate(tensors)]
        torch._foreach_copy_(kept, tensors)
        return kept

    def buffer(self, key, shape: tuple, dtype, device) -> torch.Tensor:
        """A scratch tensor kept between probed steps."""
        b = self._buffers.get(key)
        if b is None or b.shape != shape or b.dtype != dtype or b.device != device:
            b = self._buffers[key] = torch.empty(shape, dtype=dtype, device=device)
        return b

    def constant(self, values: list, device, dtype=None) -> torch.Tensor:
        """A small tensor on `device`, made once: a later probed step must not wait on a host copy."""
        key = (tuple(values), str(device), dtype)
        if key not in self._constants:
            t = torch.tensor(values, dtype=dtype)
            on_gpu = torch.device(device).type == "cuda"  # pinned and non-blocking: no host sync
            self._constants[key] = t.pin_memory().to(device, non_blocking=True) if on_gpu else t.to(device)
        return self._constants[key]


class SGDUpdate:
    """The update plain torch.optim.SGD applies to the weights, read from it after its step.

    SGD takes W <- W - lr * d with d its momentum buffer (heavy ball, weight decay and dampening
    included), g + momentum * buffer (Nesterov) or g (no momentum), g the (possibly negated)
    gradient it was given, which stays in .grad. So ||dW|| = lr ||d|| needs neither a copy of
    every weight before the step nor a subtraction after it, and it is the update SGD computed:
    the float32 difference of the weights rounds it to the weights' resolution (2^-24 ||W||), all
    of it where an update is that small. Any other optimizer, or a case where d would involve
    the weights before the step (weight decay without heavy-ball momentum), is read from a copy.
    """

    def __init__(self, optimizer, weights: list[torch.Tensor], lr: np.ndarray | float, momentum: float, kind: str):
        self.optimizer, self.weights, self.momentum, self.kind = optimizer, weights, momentum, kind
        self.lr = lr  # each weight's learning rate (one for all) as the step used it (a schedule moves it after)

    @classmethod
    def of(cls, optimizer, weights: list[torch.Tensor], groups: list | None) -> SGDUpdate | None:
        """How to read `optimizer`'s next update of `weights`, or None where it cannot be read.
        `groups`: each weight's parameter group in it (None where it has none: Probes._optimizer_groups)."""
        if type(optimizer) is not torch.optim.SGD or not weights:
            return None
        # a weight it will not update, or a sparse gradient (nn.Embedding(sparse=True)): the weights' copy reads it
        if any(g is None for g in groups) or any(w.grad is None or w.grad.is_sparse for w in weights):
            return None
        distinct = list({id(g): g for g in groups}.values())
        if any(isinstance(g["lr"], torch.Tensor) or g.get("differentiable") for g in distinct):
            return None  # a tensor lr would cost a host sync
        flavours = {(g["momentum"], g["nesterov"], g["maximize"]) for g in distinct}
        if len(flavours) != 1:
            return None
        ((momentum, nesterov, maximize),) = flavours
        if (nesterov or not momentum) and any(g["weight_decay"] for g in distinct):
            return None  # d would hold weight_decay * W(before), overwritten by the step
        if nesterov and not maximize and not all(_one_tensor_at_a_time(g, w) for g, w in zip(groups, weights)):
            return None  # torch's foreach and fused steps add momentum * buffer into .grad itself (CUDA's default)
        kind = "gradient" if not momentum else "nesterov" if nesterov else "buffer"
        lr = np.array([g["lr"] for g in groups], dtype=np.float64) if len(distinct) > 1 else distinct[0]["lr"]
        # Nesterov: d = g + momentum * buffer; maximizing, -g + momentum * buffer, as long as g - momentum * buffer
        return cls(optimizer, weights, lr, -momentum if maximize else momentum, kind)

    def directions(self) -> list[torch.Tensor]:
        """d (or -d) of every weight, after the step: dW = -lr * d."""
        grads = [w.grad for w in self.weights]
        if self.kind == "gradient":
            return grads
        buffers = [self.optimizer.state[w]["momentum_buffer"] for w in self.weights]
        if self.kind == "buffer":
            return buffers
        return torch._foreach_add(grads, buffers, alpha=self.momentum)


def _one_tensor_at_a_time(group: dict, weight: torch.Tensor) -> bool:
    """Whether torch's SGD steps `weight` of parameter `group` one tensor at a time (its default on the CPU),
    not with its foreach or fused kernels."""
    foreach = group.get("foreach")
    return not group.get("fused") and (foreach is False or foreach is None and weight.device.type == "cpu")


def _reduction(specs: list, bounds: torch.Tensor, scratch: torch.Tensor, **more) -> SimpleNamespace:
    """What _activation_stats needs to know of a group of k activation outputs of `units` values each:
    their activations' `specs`, saturation `bounds` (k, 2) on the device, and `scratch` (k, units)."""
    saturation = [s.saturation for s in specs if s is not None and s.saturation]
    units = scratch.shape[1]
    return SimpleNamespace(bounds=bounds, scratch=scratch, units=float(units),
                           std_factor=1 / math.sqrt(max(units - 1, 1)), saturating=bool(saturation),
                           symmetric=all(lo == -hi for lo, hi in saturation),
                           dying=any(s is not None and s.can_die for s in specs), **more)


def _activation_stats(y: torch.Tensor, group: SimpleNamespace) -> dict:
    """Statistics of k stacked activation outputs y: (k, units), in few passes over y.

    y is the caller's stacked copy and is reduced in place (`group`: see _reduction; its scratch holds
    the counts): saturated and dead units first, then the mean from one sum and the std from the norm
    of y less its mean (two passes: exact when the mean is large against the spread). Each value is
    (k,) on y's device.
    """
    out = {}
    scratch = group.scratch
    if group.saturating:
        lo, hi = group.bounds[:, :1], group.bounds[:, 1:]  # an output outside (lo, hi) is saturated
        if group.symmetric:  # one pass on |y|
            out["saturated"] = torch.abs(y, out=scratch).gt_(hi).sum(1)
        else:
            out["saturated"] = torch.gt(y, hi, out=scratch).sum(1) + torch.lt(y, lo, out=scratch).sum(1)
    if group.dying:
        out["dead"] = torch.eq(y, 0, out=scratch).sum(1)
    out["sum"] = y.sum(1)
    y.sub_((out["sum"] / group.units).unsqueeze(1))
    out["std"] = torch.linalg.vector_norm(y, dim=1).mul_(group.std_factor)
    return out


def load_fused(required: bool = True):
    """gradflow.probes.fused, loaded and compiled (or read from numba's cache) for float32 and float64; None
    where numba cannot import, compile or cache them and they are not `required` (the probes then stay
    batched)."""
    global _said_unfused
    try:
        from gradflow.probes import fused

        fused.warm()
    except Exception as e:  # ImportError, or numba's own (no writable cache folder, no compiler backend)
        if required:
            raise GradflowError(f"the fused probe kernels failed to load (numba): {e}") from None
        if not _said_unfused:  # (once: the probes and the step ask again; a kernel broken in an edit said so)
            _said_unfused = True
            warnings.warn(f"the fused probe kernels failed to load (numba: {type(e).__name__}: {e}); the probes "
                          "run batched (and `gradflow run` steps SGD with torch), slower on the CPU", RuntimeWarning,
                          stacklevel=user_stacklevel())
        return None
    return fused


_said_unfused = False  # load_fused has warned that the kernels failed to load


def _fusable(t: torch.Tensor | None) -> bool:
    """Whether `t` makes the fused kernels worth loading: a CPU float32 or float64 tensor of FUSED_MIN values
    or more. (Once loaded, the hooks hand them any non-empty CPU float32 or float64 tensor.)"""
    return (t is not None and t.device.type == "cpu" and t.dtype in _FUSABLE
            and t.numel() >= max(FUSED_MIN, 1))


def _outside(norms: np.ndarray, margin: float = 1.0) -> np.ndarray:
    """Indices of the norms outside EXACT_RANGE, where float32 may have lost them (NaN left out); with a
    `margin`, outside the range narrowed by that factor at each end."""
    lo, hi = EXACT_RANGE[0] * margin, EXACT_RANGE[1] / margin
    return np.flatnonzero(~((norms >= lo) & (norms <= hi)) & ~np.isnan(norms))


def exact_norms(norms: np.ndarray, tensors: list[torch.Tensor]) -> np.ndarray:
    """`norms` (host results of the tensors' 2-norms) with the values outside EXACT_RANGE, where float32
    squares underflow or overflow, recomputed in float64 from `tensors` (float64 tensors' as they are)."""
    norms = np.array(norms, dtype=np.float64)
    at = [j for j in _outside(norms) if tensors[j].dtype != torch.float64]
    if at:
        norms[at] = float64_norms([tensors[j] for j in at])
    return norms


def float64_norms(tensors: Sequence[torch.Tensor]) -> np.ndarray:
    """The 2-norms of `tensors` without float32's underflow or overflow, computed on their device.

    Note: one host sync point for all of them (one per tensor, should they sit on several devices),
    only where gradients vanish or explode beyond EXACT_RANGE.
    """
    parts = [_norm_parts(t.detach()) for t in tensors]
    if len({t.device for t in parts}) == 1:
        got = torch.stack(parts).cpu()
    else:
        got = torch.stack([t.cpu() for t in parts])
    got = got.double().numpy()
    return got[:, 0] * got[:, 1]


def _norm_parts(t: torch.Tensor) -> torch.Tensor:
    """(a, b) on t's device with ||t|| = a b, free of float32's underflow and overflow: (the float64
    norm, 1), or where there is no float64 (mps) (the largest |entry|, the norm of t scaled by it)."""
    if t.device.type == "mps":
        t = t.float()  # (half and bfloat16 too: autocast's signals)
        top = t.abs().max()
        return torch.stack([top, torch.linalg.vector_norm(t / torch.where(top > 0, top, 1.0))])
    return torch.stack([torch.linalg.vector_norm(t.double()), torch.ones((), dtype=torch.float64, device=t.device)])


def schedule(steps: int, every: int, points: int) -> list[int]:
    """Probed steps: step 0 (initialization), the last step, and every k-th or log-spaced steps: at most
    `points` of them, step 0 and points - 1 from step 1 to the last (fewer where early ones round alike)."""
    if every > 0:
        chosen = set(range(0, steps + 1, every))
    elif points <= 2:  # (geomspace of one point is its start, step 1: a third step)
        chosen = set()
    else:
        chosen = set(np.unique(np.round(np.geomspace(1, max(steps, 1), points - 1))).astype(int).tolist())
    chosen |= {0, steps}
    return sorted(s for s in chosen if 0 <= s <= steps)


COUNT_SPLIT = 2**24  # a count n travels to the host as n // COUNT_SPLIT and n % COUNT_SPLIT: each exact in float32


def _split_count(counts: torch.Tensor) -> torch.Tensor:
    """(2, k) float32: whole counts (int64) as two parts a float32 holds exactly."""
    return torch.stack([torch.div(counts, COUNT_SPLIT, rounding_mode="floor"), counts % COUNT_SPLIT]).float()


def histogram(x: torch.Tensor) -> torch.Tensor:
    """Counts (int64) of `x` in HIST_KINDS order, on x's device without a host sync (no boolean indexing)."""
    x = x.detach().flatten().float()
    edges = torch.as_tensor(HIST_EDGES, dtype=torch.float32, device=x.device)
    a = x.abs()
    finite = torch.isfinite(x)
    in_range = finite & (a >= edges[0]) & (a < edges[-1])
    bins = (torch.bucketize(a, edges, right=True) - 1).clamp(0, HIST_BINS - 1) + HIST_BINS * (x < 0)
    bins = torch.where(in_range, bins, torch.full_like(bins, 2 * HIST_BINS))  # out of range -> a dump slot
    counts = torch.zeros(2 * HIST_BINS + 1, dtype=torch.int64, device=x.device).index_add_(
        0, bins, torch.ones_like(bins))[: 2 * HIST_BINS]
    special = torch.stack([(x == 0).sum(), (finite & (a > 0) & (a < edges[0])).sum(),
                           (finite & (a >= edges[-1])).sum(), (~finite).sum()])
    return torch.cat([counts, special])
