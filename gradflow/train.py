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

from gradflow.data import Data
from gradflow.metrics import REGRESSION_TOLERANCE
from gradflow.probes.core import Probes, Stepped, exact_norms, gradients, load_fused, schedule
from gradflow.probes.jacobian import jacobian_spectra
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
    status: str = "ok"  # ok | diverged | interrupted | failed (see Interrupted, Failed)
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
    "interrupted", its tables up to the last whole step). Its caller writes that and raises on; any
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


def training(model, data: Data, cfg, probes: Probes, on_step: ProgressFn | None = None,
             ) -> Generator[int, None, TrainResult]:
    """The training loop, a step at a time: it yields each step's number once that step is done (after
    `on_step`) and returns the TrainResult. `train` runs it to the end; `gradflow bench` runs several in
    turns, a few steps each."""
    steps, tc = cfg.train.steps, cfg.train
    # plain values for the step loop: reading a DictConfig attribute costs ~8 us, ~70 us per step in all
    eval_every, check_every, grad_clip, clip_value = tc.eval_every, tc.check_every, tc.grad_clip, tc.clip_value
    jacobian = cfg.probe.jacobian
    device = data.x_train.device
    params = [p for p in model.parameters() if p.requires_grad]
    # the probes' weights and biases first: the per-parameter norms below then index layers
    # directly and serve the probes' gradient norms as they are
    probe_ids = {id(p) for p in probes.params}
    ordered = probes.params + [p for p in params if id(p) not in probe_ids]
    param_name = {id(p): n for n, p in model.named_parameters()}
    names = [param_name[id(p)] for p in ordered]
    opt = make_optimizer(params, cfg.optim)
    lr_schedule = make_schedule(opt, cfg.optim, steps)
    batches = Batches(len(data.x_train), tc.batch_size, cfg.seed, device)
    probed = set(schedule(steps, cfg.probe.every, cfg.probe.points))
    probes.expect(len(probed))  # a run probing many steps on the CPU loads the fused kernels now
    # plain SGD steps by the fused CPU kernels once they are loaded, taking every norm on the way (not under
    # clipping, which needs the gradients' norm before the step): by the probes (a run probing many steps) or
    # here, for a run long enough to pay their loading back; stepper: the SGDStep, None until they load, or
    # False where they do not take this optimizer's step
    stepper: SGDStep | None | bool = False if grad_clip > 0 or clip_value > 0 else None
    step_kernels = None
    if stepper is None and device.type == "cpu" and cfg.optim.name == "sgd" and \
            steps * sum(p.numel() for p in params) >= STEP_WORK:
        step_kernels = load_fused(required=False)
    res = TrainResult()
    readings = []  # (step, its primitives) of each probed step, made into tables after the loop
    n_points = len(probes.weights)

    # Each step's bookkeeping lands in a row of two small device buffers (one write each, no sync);
    # every few steps the rows are folded at once into the window sums and the divergence state.
    rows = max(1, min(check_every, eval_every, steps + 1, 64))
    dtype = torch.float64 if any(p.dtype == torch.float64 for p in params) else torch.float32
    scalars = torch.zeros(rows, 4, dtype=dtype, device=device)  # batch loss, batch accuracy, total grad norm, clipped
    norm_rows = torch.zeros(rows, len(ordered), dtype=dtype, device=device)  # each parameter's gradient norm
    used, first_step = 0, 0  # rows filled since the last fold, and the step of the first one
    window = torch.zeros(4, device=device)  # sums of the scalars over the evaluation window
    window_n = 0
    bad_step = torch.full((), -1, dtype=torch.long, device=device)  # the first step with a non-finite loss/gradient
    bad_layers = torch.zeros(n_points, dtype=torch.bool, device=device)  # its probed layers' non-finite gradients
    bad_values = torch.zeros(2, dtype=dtype, device=device)  # its batch loss and total gradient norm

    def fold() -> None:
        """Fold the filled rows into the window and the divergence state, on device (no sync)."""
        nonlocal used, bad_step, bad_layers, bad_values
        if not used:
            return
        s = scalars[:used]
        window.add_(s.sum(0))
        bad = ~(torch.isfinite(s[:, 0]) & torch.isfinite(s[:, 2]))
        at = bad.byte().argmax()  # the first bad row (0 if none)
        newly = (bad_step < 0) & bad.any()
        bad_step = torch.where(newly, at + first_step, bad_step)
        layer_norms = torch.index_select(norm_rows[:, :n_points], 0, at.reshape(1))[0]
        bad_layers = torch.where(newly, ~torch.isfinite(layer_norms), bad_layers)
        bad_values = torch.where(newly, torch.index_select(s, 0, at.reshape(1))[0, 0::2], bad_values)
        used = 0

    model.train()
    start = time.perf_counter()
    try:
        for t in range(steps + 1):
            # --- evaluation of the weights after t updates ---
            if t % eval_every == 0 or t == steps:
                fold()
                ev = torch.cat([evaluate(model, data.x_train, data.y_train, data.task),
                                evaluate(model, data.x_test, data.y_test, data.task),
                                window / max(window_n, 1), window[3:]]).cpu().tolist()  # note: a host sync point
                res.metrics += [(t, "train", "loss", ev[0]), (t, "train", "acc", ev[1]),
                                (t, "test", "loss", ev[2]), (t, "test", "acc", ev[3])]
                if window_n:
                    res.metrics += [(t, "batch", "loss", ev[4]), (t, "batch", "acc", ev[5]),
                                    (t, "opt", "grad_norm", ev[6]), (t, "opt", "clipped", ev[8])]
                window.zero_()
                window_n = 0

            # --- Jacobian spectra of the weights after t updates (a separate, gradient-free pass) ---
            if jacobian and t in (0, steps):
                x_j = data.x_train[: cfg.probe.jacobian_inputs]
                res.jacobians += [(t, *row) for row in jacobian_spectra(model, x_j, cfg.probe.layer_jacobians)]

            # --- forward, backward (and probes) ---
            probing = t in probed
            if probing:
                probes.arm()
            idx = batches.next()
            x = data.x_train[idx]
            if data.augment is not None:
                x = data.augment(x, batches.gen)
            opt.zero_grad()  # before the forward pass, as a bare loop does: its allocations can reuse the gradients' memory
            out = model(x)
            loss, batch_acc = loss_and_accuracy(out, data.y_train[idx], data.task)
            loss.backward()

            # --- gradient norms and this step's row of bookkeeping, on device: no sync here ---
            if not used:
                first_step = t
            row, norms, total = scalars[used], norm_rows[used], scalars[used, 2]
            used += 1
            grads = gradients(ordered)
            if stepper is None and (probes.kernels or step_kernels) is not None:
                stepper = SGDStep.of(opt, ordered, probes.kernels or step_kernels) or False  # (False: never)
            # the step itself where the kernels take it, with each parameter's squared norms: its gradient's, its
            # weight's before the step and the step direction's; else the gradients' by the fused kernels
            # where they are loaded
            stepped = stepper.step() if stepper and t < steps else None
            wide = gradient_norms(grads, norms, total,
                                  probes.squared_norms(grads) if stepped is None else stepped[:, 0])
            torch.stack([loss.detach(), batch_acc.detach()], out=row[:2])
            if probing:
                # clipping changes the gradients in place before the read: the probes keep a copy, unless
                # their norms are float64, which are never recomputed
                clips = t < steps and (grad_clip > 0 or clip_value > 0)
                taken = None if stepped is None else _stepped(stepped, stepper, len(probes.weights))
                probes.after_backward((norms if wide is None else wide)[: len(probes.params)], opt, keep_grads=clips,
                                      stepped=taken)
            if t % eval_every == 0 or t == steps:  # every parameter's gradient norm (note: a host sync point)
                exact = exact_norms(norms.cpu().numpy(), grads).tolist()
                res.metrics += [(t, "grad", name, v) for name, v in zip(names, exact)]

            # --- clip (events counted on device) and update ---
            if t < steps:
                if grad_clip > 0 or clip_value > 0:
                    clipped = torch.zeros((), dtype=torch.bool, device=device)
                    if grad_clip > 0:  # clip_grad_norm_ in two halves, reusing the norm computed above
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
                    row[3].copy_(clipped)
                if stepped is None:
                    opt.step()
                if lr_schedule is not None:
                    lr_schedule.step()
                if probing:
                    probes.after_update()
                res.steps_done = t + 1
                window_n += 1
            if t % check_every == 0 or t == steps or used == rows:
                fold()
            if probing:
                # the rows not yet folded are checked in the same copy, in two kernels instead of the fold's ~14
                fine = torch.isfinite(scalars[:used, 0::2]).all()
                reading, (first, ok) = probes.read(bad_step, fine)  # note: the probed step's one host sync point
                if not ok:  # a non-finite loss or gradient: the fold dates it (note: one more sync, once per run)
                    fold()
                    first = bad_step.item()
                readings.append((t, reading))
                if t + 1 not in probed:
                    probes.remove()  # the unprobed steps run without hooks
            if on_step:
                on_step(t, steps)

            # --- divergence check (note: a host sync point every check_every steps, unless probed) ---
            if probing or t % check_every == 0 or t == steps:
                first = int(first if probing else bad_step.item())
                if first >= 0:
                    res.status = "diverged"
                    res.diverged_step = first
                    res.steps_done = first  # the updates before it: the rest (to this check) applied non-finite values
                    layers = torch.nonzero(bad_layers).flatten().tolist()
                    res.diverged_layer = probes.weight_points[layers[0]] if layers else None
                    # the step itself in the metrics, split "diverged": its batch loss and total gradient norm (one
                    # of them non-finite), so that curves end where the run did, not at its last evaluation
                    loss_at, norm_at = bad_values.tolist()
                    res.metrics += [(first, "diverged", "loss", loss_at), (first, "diverged", "grad_norm", norm_at)]
                    res.diverged_in = " and ".join(what for what, v in (("loss", loss_at), ("gradient", norm_at))
                                                   if not math.isfinite(v)) or None
                    break
            yield t
    except KeyboardInterrupt:  # what it measured until now is kept: the tables of every whole probed step
        res.status = "interrupted"
        _finish(res, probes, readings, start)
        raise Interrupted(res) from None
    except Exception as e:  # an error in a step (a user's model raising at its 50th call): the same
        res.status = "failed"
        try:
            _finish(res, probes, readings, start)
        except Exception:  # (the probes themselves broken: no table to keep)
            res.probe_steps, res.probe_values, res.probe_masks, res.histograms = [], [], [], []
        raise Failed(res, e) from e
    _finish(res, probes, readings, start)
    return res


def _stepped(squares: np.ndarray, stepper: SGDStep, n: int) -> Stepped:
    """The norms an SGDStep read for the probes' `n` weights (the first parameters of its list)."""
    return Stepped(torch.from_numpy(np.sqrt(squares[:n, 1])), torch.from_numpy(np.sqrt(squares[:n, 2])),
                   stepper.lr()[:n])


def _finish(res: TrainResult, probes: Probes, readings: list, start: float) -> None:
    """The probed steps' tables, made outside the steps (see gradflow.probes.core), and the loop's time."""
    for t, reading in readings:
        values, mask = probes.table(reading)
        res.probe_steps.append(t)
        res.probe_values.append(values)
        res.probe_masks.append(mask)
        if reading.hist is not None:
            res.histograms.append(reading.hist.astype(np.float64))  # float32 unless recomputed
    res.train_time = time.perf_counter() - start
