"""The training loop: forward, backward, probes, clip, step, divergence check.

Step t (0..steps) always means "the weights after t updates": at step t the loop evaluates (if
due), computes the gradient on batch t, probes it (if due), and, for t < steps, takes update t.
The loop never prints or writes: it returns rows and reports progress through a callback.
"""

from __future__ import annotations

import bisect
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Generator

import numpy as np
import torch
import torch.nn.functional as F

from gradflow import store
from gradflow.data import Data
from gradflow.errors import run_error
from gradflow.metrics import REGRESSION_TOLERANCE
from gradflow.probes.core import Probes, Stepped, exact_norms, gradients, load_fused, schedule
from gradflow.probes.jacobian import jacobian_spectra
from gradflow.probes.quantities import JACOBIAN_MODEL
from gradflow.sgdstep import SGDStep
from gradflow.textdata import IGNORE

ProgressFn = Callable[[int, int], None]  # (step, steps)
# A run of at least this many parameter-steps with plain SGD on the CPU loads the fused kernels for its step
# (gradflow.sgdstep) even where the probes do not: the step saves >= ~1 ns per parameter and step (1.5-2 ms
# for the reference workload's 1.26M parameters: README, What is measured) against 0.5-1 s to load them once
# per process
STEP_WORK = 10**9


@dataclass
class TrainResult:
    status: str = store.OK  # ok | diverged | interrupted | failed (see Interrupted, Failed)
    steps_done: int = 0  # updates taken
    probe_steps: list[int] = field(default_factory=list)
    probe_values: list[np.ndarray] = field(default_factory=list)  # one (points, quantities) table per probed step
    probe_masks: list[np.ndarray] = field(default_factory=list)
    histograms: list[np.ndarray] = field(default_factory=list)  # one (points, 2, kinds) array per probed step
    jacobians: list[tuple] = field(default_factory=list)  # (step, sample, scope, layer, singular values)
    metrics: list[tuple[int, str, str, float]] = field(default_factory=list)  # (step, split, metric, value)
    diverged_step: int | None = None
    diverged_layer: int | None = None
    diverged_in: str | None = None  # what went non-finite at diverged_step: "loss", "gradient" or both
    train_time: float = 0.0  # seconds in the loop


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during training, carrying what the run measured until then: `result` (status
    "interrupted", its tables up to the last whole step; where Ctrl-C came only as the tables were made
    after the last step, the status the run ended with). Its caller writes that and raises on; any
    other caller sees the KeyboardInterrupt it always saw."""

    def __init__(self, result: TrainResult):
        super().__init__()
        self.result = result

    def __reduce__(self):
        # sent on from a joblib worker (which wrote the tables) to the sweep's process: a plain Ctrl-C there.
        # Unpickled as itself it lacked `result`, and loky reported a broken pool with a traceback
        return KeyboardInterrupt, ()


class Failed(Exception):
    """An error during training, carrying what the run measured until then: `result` (status "failed",
    its tables up to the last whole step) and the `error` itself (also this exception's cause). Its
    caller writes the tables and records the error."""

    def __init__(self, result: TrainResult, error: Exception):
        super().__init__(f"{type(error).__name__}: {error}")
        self.result, self.error = result, error

    def __reduce__(self):  # (as Interrupted's: to another process, the message without the tables)
        return RuntimeError, self.args


def make_optimizer(params, cfg, fused: bool | None = None) -> torch.optim.Optimizer:
    """SGD or Adam over `params`; with `cfg.scalar_lr_factor` != 1 the scalar (0-d) parameters form
    their own group at that multiple of the rate, which the schedule then scales like the rest.
    `fused`: torch's own fused step (`gradflow bench` times a bare loop with it; runs take torch's default)."""
    params = list(params)
    groups: list[dict] = [{"params": params}]
    if cfg.scalar_lr_factor != 1:
        scalars = [p for p in params if p.dim() == 0]
        groups = [g for g in ({"params": [p for p in params if p.dim()]},
                              {"params": scalars, "lr": cfg.lr * cfg.scalar_lr_factor}) if g["params"]]
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, fused=fused)
    return torch.optim.Adam(groups, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay, fused=fused)


def make_schedule(opt: torch.optim.Optimizer, cfg, steps: int):
    """The learning-rate schedule, stepped once per update (None for a constant rate without warm-up).

    The factor on lr after t updates: the schedule's (step: gamma per milestone passed; cosine: to 0 at
    `steps`), times a linear warm-up (t + 1) / warmup over the first `cfg.warmup` updates.
    """
    if cfg.schedule == "constant" and not cfg.warmup:
        return None
    kind, gamma, milestones, warmup = cfg.schedule, cfg.gamma, sorted(cfg.milestones), cfg.warmup

    def factor(t: int) -> float:
        f = min(1.0, (t + 1) / warmup) if warmup else 1.0
        if kind == "step":
            f *= gamma ** bisect.bisect_right(milestones, t)
        elif kind == "cosine":
            f *= 0.5 * (1.0 + math.cos(math.pi * min(t, steps) / max(steps, 1)))
        return f

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def loss_and_accuracy(out: torch.Tensor, y: torch.Tensor, task: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch-mean loss and accuracy for a task, on device.

    classification: cross-entropy, argmax accuracy; regression: MSE, fraction within
    REGRESSION_TOLERANCE; per_step: cross-entropy over every step, accuracy on the non-blank targets;
    next_token: cross-entropy and accuracy over the scored positions (target != IGNORE).
    """
    if out.dtype != torch.float64:  # half precision is upcast; float64 (gradflow gradcheck) is kept
        out = out.float()
    if task == "next_token":
        scored = y != IGNORE
        loss = F.cross_entropy(out.flatten(0, 1), y.flatten(), ignore_index=IGNORE)
        return loss, ((out.argmax(-1) == y) & scored).sum() / scored.sum().clamp(min=1)
    if task == "classification":
        return F.cross_entropy(out, y), (out.argmax(1) == y).float().mean()
    if task == "regression":
        return F.mse_loss(out, y), ((out - y).abs() < REGRESSION_TOLERANCE).all(dim=1).float().mean()
    loss = F.cross_entropy(out.transpose(1, 2), y)  # (batch, classes, T) against (batch, T)
    targets = y != 0
    hits = ((out.argmax(-1) == y) & targets).sum() / targets.sum().clamp(min=1)
    return loss, hits


@torch.no_grad()
def evaluate(model, x, y, task: str, chunk: int = 4096) -> torch.Tensor:
    """(loss, accuracy) over a whole split, on device."""
    was_training = model.training
    model.eval()
    totals = torch.zeros(2, device=x.device)
    for i in range(0, len(x), chunk):
        loss, acc = loss_and_accuracy(model(x[i : i + chunk]), y[i : i + chunk], task)
        totals += torch.stack([loss, acc]) * len(x[i : i + chunk])
    model.train(was_training)
    return totals / len(x)


class Batches:
    """Seeded epochs of random permutations over a dataset held on the device."""

    def __init__(self, n: int, batch_size: int, seed: int, device):
        self.n, self.size, self.device = n, min(batch_size, n), torch.device(device)
        self.gen = torch.Generator().manual_seed(seed)  # on the CPU: the same batches on every device
        self.queue: list[torch.Tensor] = []

    def next(self) -> torch.Tensor:
        if not self.queue:
            perm = torch.randperm(self.n, generator=self.gen)
            if self.device.type == "cuda":  # from pinned memory the copy is asynchronous: no host sync
                perm = perm.pin_memory().to(self.device, non_blocking=True)
            else:
                perm = perm.to(self.device)
            self.queue = list(perm[: self.n - self.n % self.size].split(self.size))
        return self.queue.pop(0)


def gradient_norms(grads: list[torch.Tensor], norms: torch.Tensor, total: torch.Tensor,
                   squares: np.ndarray | None = None) -> torch.Tensor | None:
    """Each gradient's 2-norm into `norms` and theirs into `total`, finite wherever the gradients are.
    `squares`: their squared norms in float64, where the caller has them (Probes.squared_norms).
    Returns the norms in float64 where they were taken so (from `squares`, or on CUDA), else None: exact at
    any size, the probes need keep no gradients to recompute them.

    float32 squares overflow above ~1.8e19, where an exploding net's gradients can be while the loss is
    finite: an inf total would mark the run diverged and make clipping zero every gradient. On CUDA the
    norms accumulate in float64 (a memory-bound kernel: no slower); on the CPU, where that is ~3x slower,
    a non-finite total (read at no cost there) is recomputed in float64 instead. (MPS has no float64:
    its norms stay float32's.)
    """
    if squares is not None:
        wide = torch.from_numpy(np.sqrt(squares))
        norms.copy_(wide)
        total.fill_(float(np.sqrt(squares.sum())))
        return wide
    if norms.device.type == "cuda" and norms.dtype != torch.float64:
        wide = torch.stack(torch._foreach_norm(grads, 2, dtype=torch.float64))
        norms.copy_(wide)
        total.copy_(torch.linalg.vector_norm(wide))
        return wide
    torch.stack(torch._foreach_norm(grads), out=norms)
    torch.linalg.vector_norm(norms, out=total)
    if norms.device.type == "cpu" and not math.isfinite(total.item()):  # (inf or NaN entries stay so)
        exact = exact_norms(norms.numpy(), grads)
        norms.copy_(torch.from_numpy(exact))
        total.fill_(float(np.linalg.norm(exact)))
    return None


def train(model, data: Data, cfg, probes: Probes, on_step: ProgressFn | None = None) -> TrainResult:
    """Train `model` on `data` as `cfg` says, probing with `probes`: the steps of `training`, to the end."""
    run = training(model, data, cfg, probes, on_step)
    while True:
        try:
            next(run)
        except StopIteration as end:
            return end.value
        except Interrupted:
            raise
        except KeyboardInterrupt:  # a Ctrl-C between two steps: the loop keeps what it measured all the same
            run.throw(KeyboardInterrupt())


@dataclass
class _Setup:
    """What the loop works out once, before its first step."""

    params: list[torch.Tensor]  # the trainable parameters, in the model's order
    # the same, the probes' weights and biases first: the per-parameter norms then index layers directly
    # and serve the probes' gradient norms as they are
    ordered: list[torch.Tensor]
    names: list[str]  # each of `ordered`'s name in the model
    opt: torch.optim.Optimizer
    lr_schedule: torch.optim.lr_scheduler.LRScheduler | None
    batches: Batches
    probed: set[int]  # the probed steps
    # plain SGD steps by the fused CPU kernels once they are loaded, taking every norm on the way (not under
    # clipping, which needs the gradients' norm before the step): by the probes (a run probing many steps) or
    # here (step_kernels), for a run long enough to pay their loading back; stepper: the SGDStep, None until
    # they load, or False where they do not take this optimizer's step
    stepper: SGDStep | None | bool
    step_kernels: object | None


def _setup(model, data: Data, cfg, probes: Probes) -> _Setup:
    """The parameters' order, the optimizer and its schedule, the batches, the probed steps and the fused
    step's kernels of a run."""
    steps, device = cfg.train.steps, data.x_train.device
    params = [p for p in model.parameters() if p.requires_grad]
    probe_ids = {id(p) for p in probes.params}
    ordered = probes.params + [p for p in params if id(p) not in probe_ids]
    param_name = {id(p): n for n, p in model.named_parameters()}
    opt = make_optimizer(params, cfg.optim)
    probed = set(schedule(steps, cfg.probe.every, cfg.probe.points))
    probes.expect(len(probed))  # a run probing many steps on the CPU loads the fused kernels now
    stepper = False if cfg.train.grad_clip > 0 or cfg.train.clip_value > 0 else None
    step_kernels = None
    if stepper is None and device.type == "cpu" and cfg.optim.name == "sgd" and \
            steps * sum(p.numel() for p in params) >= STEP_WORK:
        step_kernels = load_fused(required=False)
    return _Setup(params, ordered, [param_name[id(p)] for p in ordered], opt, make_schedule(opt, cfg.optim, steps),
                  Batches(len(data.x_train), cfg.train.batch_size, cfg.seed, device), probed, stepper, step_kernels)


# the columns of a step's row of scalars (_Ledger.scalars): its batch loss, batch accuracy, total gradient
# norm and whether it clipped; the divergence check reads the loss and the norm
LOSS, ACC, GRAD_NORM, CLIPPED = range(4)
CHECKED = slice(LOSS, GRAD_NORM + 1, GRAD_NORM - LOSS)  # (LOSS and GRAD_NORM: a view, no index tensor)


class _Ledger:
    """The loop's bookkeeping on device, without a host sync: each step's row of two small buffers (one write
    each), folded every few steps, all rows at once, into the evaluation window's sums and the divergence
    state."""

    def __init__(self, rows: int, n_params: int, n_points: int, dtype: torch.dtype, device):
        self.rows = rows
        self.scalars = torch.zeros(rows, CLIPPED + 1, dtype=dtype, device=device)  # a row per step: LOSS, ...
        self.norm_rows = torch.zeros(rows, n_params, dtype=dtype, device=device)  # each parameter's gradient norm
        self.used, self.first_step = 0, 0  # rows filled since the last fold, and the step of the first one
        self.window = torch.zeros(CLIPPED + 1, device=device)  # sums of the scalars over the evaluation window
        self.window_n = 0  # the updates in it
        self.n_points = n_points
        # the divergence state: the first step with a non-finite loss or gradient (-1: none yet), its probed
        # layers' non-finite gradients, and its batch loss and total gradient norm
        self.bad_step = torch.full((), -1, dtype=torch.long, device=device)
        self.bad_layers = torch.zeros(n_points, dtype=torch.bool, device=device)
        self.bad_values = torch.zeros(2, dtype=dtype, device=device)

    def row(self, t: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Step t's row: (its scalars, its gradient norms, its total gradient norm)."""
        used = self.used
        if not used:
            self.first_step = t
        self.used = used + 1
        return self.scalars[used], self.norm_rows[used], self.scalars[used, GRAD_NORM]

    def fold(self) -> None:
        """Fold the filled rows into the window and the divergence state, on device (no sync)."""
        if not self.used:
            return
        s = self.scalars[: self.used]
        self.window.add_(s.sum(0))
        bad = ~torch.isfinite(s[:, CHECKED]).all(1)
        at = bad.byte().argmax()  # the first bad row (0 if none)
        newly = (self.bad_step < 0) & bad.any()
        self.bad_step = torch.where(newly, at + self.first_step, self.bad_step)
        layer_norms = torch.index_select(self.norm_rows[:, : self.n_points], 0, at.reshape(1))[0]
        self.bad_layers = torch.where(newly, ~torch.isfinite(layer_norms), self.bad_layers)
        self.bad_values = torch.where(newly, torch.index_select(s, 0, at.reshape(1))[0, CHECKED], self.bad_values)
        self.used = 0

    def unfolded_finite(self) -> torch.Tensor:
        """Whether the rows not yet folded have a finite loss and gradient norm (on device): two kernels
        instead of the fold's ~14."""
        return torch.isfinite(self.scalars[: self.used, CHECKED]).all()


def training(model, data: Data, cfg, probes: Probes, on_step: ProgressFn | None = None,
             ) -> Generator[int, None, TrainResult]:
    """The training loop, a step at a time: it yields each step's number once that step is done (after
    `on_step`) and returns the TrainResult. `train` runs it to the end; `gradflow bench` runs several in
    turns, a few steps each."""
    tc, device = cfg.train, data.x_train.device
    # plain values for the step loop: reading a DictConfig attribute costs ~8 us, ~70 us per step in all
    steps, eval_every, check_every = tc.steps, tc.eval_every, tc.check_every
    grad_clip, clip_value = tc.grad_clip, tc.clip_value
    jacobian = cfg.probe.jacobian and cfg.model.name == JACOBIAN_MODEL  # (`gradflow run` notes the others)
    clips = grad_clip > 0 or clip_value > 0
    s = _setup(model, data, cfg, probes)
    # the setup's values as locals too: the loop reads them at every step, and a local is Python's cheapest read
    params, ordered, opt, lr_schedule, batches, probed = s.params, s.ordered, s.opt, s.lr_schedule, s.batches, s.probed
    stepper, step_kernels = s.stepper, s.step_kernels
    dtype = torch.float64 if any(p.dtype == torch.float64 for p in params) else torch.float32
    rows = max(1, min(check_every, eval_every, steps + 1, 64))  # steps between two folds at most
    ledger = _Ledger(rows, len(ordered), len(probes.weights), dtype, device)
    res = TrainResult()
    readings = []  # (step, its primitives) of each probed step, made into tables after the loop

    model.train()
    start, ended = time.perf_counter(), False
    try:
        for t in range(steps + 1):
            last = t == steps
            evaluating = t % eval_every == 0 or last
            if evaluating:  # the weights after t updates (note: a host sync point)
                res.metrics += _evaluation(t, model, data, ledger, opt.param_groups[0]["lr"])
            if jacobian and (t == 0 or last and not _went_bad(ledger)):  # (a separate, gradient-free pass; not
                res.jacobians += _jacobians(t, model, data, cfg.probe)  # of a net with non-finite weights)

            # --- forward, backward (and probes) ---
            probing = t in probed
            if probing:
                probes.arm()
            loss, batch_acc = _forward_backward(model, data, batches, opt)

            # --- gradient norms (and the step, where the fused kernels take it) into this step's row: no sync ---
            row, norms, total = ledger.row(t)
            grads = gradients(ordered)
            if stepper is None and (probes.kernels or step_kernels) is not None:
                stepper = SGDStep.of(opt, ordered, probes.kernels or step_kernels) or False  # (False: never)
            # the step itself where the kernels take it, with each parameter's squared norms: its gradient's, its
            # weight's before the step and the step direction's; else the gradients' by the fused kernels
            # where they are loaded
            stepped = stepper.step() if stepper and not last else None
            wide = gradient_norms(grads, norms, total,
                                  probes.squared_norms(grads) if stepped is None else stepped[:, 0])
            torch.stack([loss.detach(), batch_acc.detach()], out=row[LOSS:ACC + 1])
            if probing:
                # clipping changes the gradients in place before the read: the probes keep a copy, unless
                # their norms are float64, which are never recomputed
                taken = None if stepped is None else _stepped(stepped, stepper, len(probes.weights))
                probes.after_backward((norms if wide is None else wide)[: len(probes.params)], opt,
                                      keep_grads=clips and not last, stepped=taken)
            if evaluating:  # every parameter's gradient norm (note: a host sync point)
                res.metrics += _gradient_metrics(t, s.names, norms, grads)

            # --- clip (events counted on device) and update ---
            if not last:
                if clips:
                    row[CLIPPED].copy_(_clip(params, total, grad_clip, clip_value, device))
                if stepped is None:
                    opt.step()
                if lr_schedule is not None:
                    lr_schedule.step()
                if probing:
                    probes.after_update()
                res.steps_done = t + 1
                ledger.window_n += 1
            if t % check_every == 0 or last or ledger.used == ledger.rows:
                ledger.fold()
            if probing:  # note: the probed step's one host sync point
                first = _read_probes(probes, ledger, t, readings)
                if t + 1 not in probed:
                    probes.remove()  # the unprobed steps run without hooks
            if on_step:
                on_step(t, steps)

            # --- divergence check (note: a host sync point every check_every steps, unless probed) ---
            if probing or t % check_every == 0 or last:
                first = first if probing else int(ledger.bad_step.item())
                if first >= 0:
                    _diverged(res, first, ledger, probes)
                    # what the steps after it measured (the check comes up to check_every steps later) is of a
                    # net that had taken non-finite updates: dropped, so the tables end where the run did
                    readings[:] = [(step, r) for step, r in readings if step <= first]
                    res.metrics = [m for m in res.metrics if m[0] <= first]
                    break
            yield t
        ended = True  # (a Ctrl-C while its tables are made, below: the run is what it is, ok or diverged)
        _finish(res, probes, readings, start)
    except KeyboardInterrupt:  # what it measured until now is kept: the tables of every whole probed step
        if not ended:
            res.status = store.INTERRUPTED
        _finish(res, probes, readings, start)
        raise Interrupted(res) from None
    except (Exception, SystemExit) as e:  # an error in a step (a user's model raising at its 50th call, or
        # calling sys.exit): the same
        e = run_error(e)
        res.status = store.FAILED
        try:
            _finish(res, probes, readings, start)
        except Exception:  # (the probes themselves broken: no table to keep)
            res.probe_steps, res.probe_values, res.probe_masks, res.histograms = [], [], [], []
        raise Failed(res, e) from e
    return res


def _evaluation(t: int, model, data: Data, ledger: _Ledger, lr: float) -> list[tuple[int, str, str, float]]:
    """Step t's metrics of the weights after t updates: loss and accuracy on both splits; after a window of
    updates, the window's means (it then starts anew) and `lr`, the learning rate the schedule has reached
    (the first parameter group's, for the update at t). Note: a host sync point."""
    ledger.fold()
    window, n = ledger.window, ledger.window_n
    # one fetch: each split's (loss, accuracy), the window's means, and its count of clipped updates
    ev = torch.cat([evaluate(model, data.x_train, data.y_train, data.task),
                    evaluate(model, data.x_test, data.y_test, data.task),
                    window / max(n, 1), window[CLIPPED:]]).cpu().tolist()
    (train_loss, train_acc, test_loss, test_acc), means, clipped = ev[:4], ev[4:-1], ev[-1]
    metrics = [(t, "train", "loss", train_loss), (t, "train", "acc", train_acc),
               (t, "test", "loss", test_loss), (t, "test", "acc", test_acc)]
    if n:
        metrics += [(t, "batch", "loss", means[LOSS]), (t, "batch", "acc", means[ACC]),
                    (t, "opt", "grad_norm", means[GRAD_NORM]), (t, "opt", "clipped", clipped),
                    (t, "opt", "lr", float(lr))]
    window.zero_()
    ledger.window_n = 0
    return metrics


def _went_bad(ledger: _Ledger) -> bool:
    """Whether a loss or gradient has gone non-finite by now (the rows so far folded in; a host sync)."""
    ledger.fold()
    return int(ledger.bad_step.item()) >= 0


def _jacobians(t: int, model, data: Data, pc) -> list[tuple]:
    """Step t's Jacobian spectra, of the weights after t updates (`pc`: cfg.probe)."""
    return [(t, *row) for row in jacobian_spectra(model, data.x_train[: pc.jacobian_inputs], pc.layer_jacobians)]


def _forward_backward(model, data: Data, batches: Batches, opt) -> tuple[torch.Tensor, torch.Tensor]:
    """The next batch's forward and backward passes: its loss and accuracy, on device."""
    idx = batches.next()
    x = data.x_train[idx]
    if data.augment is not None:
        x = data.augment(x, batches.gen)
    opt.zero_grad()  # before the forward pass, as a bare loop does: its allocations can reuse the gradients' memory
    loss, batch_acc = loss_and_accuracy(model(x), data.y_train[idx], data.task)
    loss.backward()
    return loss, batch_acc


def _gradient_metrics(t: int, names: list[str], norms: torch.Tensor, grads: list[torch.Tensor]) -> list[tuple]:
    """Every parameter's gradient norm at step t, exact. Note: a host sync point."""
    exact = exact_norms(norms.cpu().numpy(), grads).tolist()
    return [(t, "grad", name, v) for name, v in zip(names, exact)]


def _clip(params: list[torch.Tensor], total: torch.Tensor, grad_clip: float, clip_value: float,
          device) -> torch.Tensor:
    """Clip the gradients in place (by their total norm `total`, then by value): whether any clipping
    happened, on device."""
    clipped = torch.zeros((), dtype=torch.bool, device=device)
    if grad_clip > 0:  # clip_grad_norm_ in two halves, reusing the norm computed already
        torch.nn.utils.clip_grads_with_norm_(params, grad_clip, total, foreach=True)
        clipped = clipped | (total > grad_clip)
    if clip_value > 0:  # clip_grad_value_'s clamps, on a sparse gradient's values too (it takes none)
        for p in params:  # coalesced first: a row looked up twice is clipped as its sum
            if p.grad is not None and p.grad.is_sparse:
                p.grad = p.grad.coalesce()
        present = gradients(params)
        peak = torch.nn.utils.get_total_norm(present, float("inf"), foreach=True)
        torch._foreach_clamp_min_(present, -clip_value)
        torch._foreach_clamp_max_(present, clip_value)
        clipped = clipped | (peak > clip_value)
    return clipped


def _read_probes(probes: Probes, ledger: _Ledger, t: int, readings: list) -> int:
    """The probed step t's primitives to the host (kept in `readings`), with the first step of a non-finite loss
    or gradient (-1: none yet) in the same copy. Note: the probed step's one host sync point."""
    reading, (first, ok) = probes.read(ledger.bad_step, ledger.unfolded_finite())
    if not ok:  # a non-finite loss or gradient: the fold dates it (note: one more sync, once per run)
        ledger.fold()
        first = ledger.bad_step.item()
    readings.append((t, reading))
    return int(first)


def _diverged(res: TrainResult, first: int, ledger: _Ledger, probes: Probes) -> None:
    """Mark `res` diverged at step `first`, in the layer and quantity that went non-finite."""
    res.status = store.DIVERGED
    res.diverged_step = first
    res.steps_done = first  # the updates before it: the rest (to this check) applied non-finite values
    layers = torch.nonzero(ledger.bad_layers).flatten().tolist()
    res.diverged_layer = probes.weight_points[layers[0]] if layers else None
    # the step itself in the metrics, split "diverged": its batch loss and total gradient norm (one of them
    # non-finite), so that curves end where the run did, not at its last evaluation
    loss_at, norm_at = ledger.bad_values.tolist()
    res.metrics += [(first, "diverged", "loss", loss_at), (first, "diverged", "grad_norm", norm_at)]
    res.diverged_in = " and ".join(what for what, v in (("loss", loss_at), ("gradient", norm_at))
                                   if not math.isfinite(v)) or None


def _stepped(squares: np.ndarray, stepper: SGDStep, n: int) -> Stepped:
    """The norms an SGDStep read for the probes' `n` weights (the first parameters of its list)."""
    return Stepped(torch.from_numpy(np.sqrt(squares[:n, 1])), torch.from_numpy(np.sqrt(squares[:n, 2])),
                   stepper.lr()[:n])


def _finish(res: TrainResult, probes: Probes, readings: list, start: float) -> None:
    """The probed steps' tables, made outside the steps (see gradflow.probes.core), and the loop's time;
    made afresh from `readings` at each call (a second, after one cut short by Ctrl-C, redoes them)."""
    res.probe_steps, res.probe_values, res.probe_masks, res.histograms = [], [], [], []
    for t, reading in readings:
        values, mask = probes.table(reading)
        res.probe_steps.append(t)
        res.probe_values.append(values)
        res.probe_masks.append(mask)
        if reading.hist is not None:
            res.histograms.append(reading.hist.astype(np.float64))  # float32 unless recomputed
    res.train_time = time.perf_counter() - start
