"""What probing costs, against a bare PyTorch loop of the same model and data in the same process.

Every round runs each loop once on a fresh copy of the same initialized model (bare; bare with
torch's fused optimizer step, "torch fused"; probes off, every 10 steps, every step, and every step
without the fused CPU kernels: "batched"), the loops
taking turns of TURN steps each in one thread, so that a drift in the machine's speed falls on
every loop alike (one loop's whole run, a second or more, could sit in a slow spell of its own);
the first WARM steps of a turn, whose caches hold the other loops' tensors, are not timed. A
loop's time per step is the median step-to-step time over the timed steps 1..steps-1 (the
evaluation at step 0 and at the last step is left out) of every round together, taken separately
over its probed and its other steps and weighted by their shares: every 10 steps is 0.9 x an
unprobed step + 0.1 x a probed one. Medians, because on a shared machine a fifth of the steps can
run 20% slow for reasons of their own, which a mean passes on to whichever loop was running. The
ratio is that time over the bare loop's; each round's own ratios give the spread. The clock is
wall time (what the targets mean) or, on a machine shared with other work, the process's
CPU time, which other processes' load does not inflate.
"""

from __future__ import annotations

import copy
import statistics
import time
from dataclasses import dataclass, field
from typing import Iterator

import torch
import torch.nn.functional as F

from gradflow.config import compose
from gradflow.probes.core import schedule

# The reference workload of the performance targets: a tanh MLP of depth 20 and width 256 on Gaussian inputs
# (dimension 40, 10 classes), batch 128, SGD with momentum.
REFERENCE = ["data=gaussian", "data.dim=40", "data.classes=10", "data.n_train=4096", "data.n_test=256",
             "model=mlp", "model.depth=20", "model.width=256", "model.activation=tanh", "train.batch_size=128",
             "optim=sgd", "optim.momentum=0.9"]
# one small, representative workload per model family (CPU-sized)
WORKLOADS = {
    "reference": REFERENCE,
    "deep": [*REFERENCE, "model.depth=100"],  # the cost must grow with batched calls, not layers x kernels
    "mlp": ["data=mnist1d", "model=mlp", "model.depth=20", "model.width=128"],
    "cnn": ["data=mnist1d", "model=cnn", "model.depth=8", "model.channels=32", "train.batch_size=64"],
    "resnet20": ["data=mnist1d", "model=resnet20", "init=kaiming_normal", "train.batch_size=64"],
    "lstm": ["data=adding", "data.T=100", "model=lstm", "model.hidden=64"],
    "transformer": ["data=chars", "data.T=32", "model=transformer", "model.depth=6", "model.d_model=64", "optim=adam",
                    "optim.lr=1e-3", "train.batch_size=32"],
}
FAMILIES = [w for w in WORKLOADS if w not in ("reference", "deep")]
# gradflow's loops as probe overrides; "bare" is the plain PyTorch loop ("torch fused": with the optimizer's
# fused=True, the fastest step torch offers a user's loop). gradflow's loops run as in a long run, which
# loads the probes' fused CPU kernels (Probes(fused=...)) and steps plain SGD by them (gradflow.sgdstep);
# "batched" is every step without them, as in a run that probes fewer than FUSED_AFTER steps (and on a GPU,
# where the probes always batch), stepping by torch
LOOPS = {"bare": None, "torch fused": None, "off": ["probe.every=0", "probe.points=2"], "every 10": ["probe.every=10"],
         "every step": ["probe.every=1"], "batched": ["probe.every=1"]}
UNFUSED = {"batched"}
BARE = {"bare", "torch fused"}  # plain PyTorch loops
LOOP_TITLES = {"bare": "bare PyTorch (zero_grad, forward, loss, backward, step)",
               "torch fused": "the bare loop with torch's fused optimizer step (fused=True)",
               "off": "gradflow, probes at init only (the loop's own bookkeeping)",
               "every 10": "gradflow, probes every 10 steps", "every step": "gradflow, every probe every step",
               "batched": "every step, without the fused CPU kernels (a short run)"}

# why gradflow's loops can beat the bare one on the CPU (gradflow.sgdstep)
STEP_NOTE = ("gradflow's loops step plain SGD in one pass of the fused CPU kernels that also reads the gradients', "
             "weights' and updates' norms, with torch's roundings (the weights are torch's to the bit): torch's "
             "own step makes three passes over each momentum buffer. Where gradflow is below 1 in every round, "
             "that is why; 'torch fused' is the fastest step torch gives a bare loop. A row below 1 whose rounds "
             "reach above it, or 'batched' below 1 (too short a run for the fused step: torch's own), is noise.")

CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


@dataclass
class Timing:
    """Milliseconds per step of every loop on one workload at one thread count: per round, and every
    timed step of all rounds pooled (the reported value)."""

    workload: str
    threads: int
    ms: dict[str, list[float]] = field(default_factory=dict)  # loop -> one value per round
    # loop -> (its probed steps' times, its other steps'), ms, over every round
    gaps: dict[str, tuple[list[float], list[float]]] = field(default_factory=dict)

    def median_ms(self, loop: str) -> float:
        """Time per step: the medians of every round's probed and other steps together, weighted by their
        shares (the median of the rounds' values where the steps were not kept)."""
        return weighted_median(self.gaps[loop]) if loop in self.gaps else statistics.median(self.ms[loop])

    def ratio(self, loop: str) -> float:
        """`loop`'s time per step over the bare loop's, both over every round's steps."""
        return self.median_ms(loop) / self.median_ms("bare")

    def ratios(self, loop: str) -> list[float]:
        """Per-round time of `loop` over the same round's bare loop."""
        return [a / b for a, b in zip(self.ms[loop], self.ms["bare"])]

    def round_ratio(self, loop: str) -> float:
        """The median of the rounds' own ratios (what `ratio` was before the steps were pooled)."""
        return statistics.median(self.ratios(loop))

    def spread(self, loop: str) -> tuple[float, float]:
        r = self.ratios(loop)
        return min(r), max(r)


def outside_rounds(results: list[Timing]) -> list[str]:
    """A line per loop whose ratio over every round's steps falls outside its rounds' own ratios, as
    printed (1.14 beside 1.10-1.11): the rounds were too few or too short to agree with their pooled
    steps, so that ratio is noise more than the probes."""
    notes = []
    for r in results:
        for loop in [loop for loop in r.ms if loop != "bare" and len(r.ms[loop]) > 1]:
            ratio, lo, hi = (round(v, 2) for v in (r.ratio(loop), *r.spread(loop)))  # (as printed)
            if not lo <= ratio <= hi:
                notes.append(f"{r.workload}, {r.threads} thr, {loop}: {ratio:.2f} over every round's steps, outside "
                             f"its rounds' own ratios ({lo:.2f}-{hi:.2f}): the rounds disagree, too few or too "
                             "short; more --rounds or --steps")
    return notes


BUSY_SPEEDUP = 1.1  # more threads than this much faster on the bare loop, or the cores were not free


def busy_cores(results: list[Timing]) -> list[str]:
    """A warning per workload whose bare loop ran no faster (within BUSY_SPEEDUP) on more threads than
    on the fewest timed: their cores were busy with other work (a shared machine), so the ratios at
    those thread counts are not this code's. For the wall clock (CPU time adds up over threads)."""
    from gradflow.workers import more_than_cores

    notes = []
    for name in dict.fromkeys(r.workload for r in results):
        rows = sorted((r for r in results if r.workload == name), key=lambda r: r.threads)
        for r in rows[1:]:
            many, few = r.median_ms("bare"), rows[0].median_ms("bare")
            if many * BUSY_SPEEDUP > few and not more_than_cores(r.threads, ""):  # (more threads than cores: their
                # own warning says why they are slower; it was blamed on other work)
                than = f"{many / few:.2f}x slower" if many > few else f"less than {BUSY_SPEEDUP:g}x faster"
                notes.append(f"{name}: the bare step took {many:.2f} ms at {r.threads} threads and {few:.2f} ms at "
                             f"{rows[0].threads}, {than}: other work held the cores, and the {r.threads}-thread "
                             f"ratios measure it more than the probes; rerun on an idle machine.")
    return notes


def subset_above(results: list[Timing]) -> list[str]:
    """A line per timing whose `every 10` reads above its `every step` by more than a spread's worth, which
    does all of every 10's work and more at every step: too few probed steps (a run of 12 steps probes one
    unevaluated step), so those two ratios are noise."""
    return [f"{r.workload}, {r.threads} thr: every 10 reads {r.ratio('every 10'):.2f}, above every step's "
            f"{r.ratio('every step'):.2f}, which does all its work and more: too few steps probed for either to "
            "mean much; more --steps or --rounds"
            for r in results if "every 10" in r.ms and "every step" in r.ms
            and r.ratio("every 10") > r.ratio("every step") + 0.05]


def _bare_loop(model, data, cfg, on_step, fused: bool = False) -> Iterator[int]:
    """What a user writes without gradflow: zero_grad, forward, loss, backward, step (yields each step's number).
    `fused`: with torch's fused optimizer step, the fastest step a user gets from torch."""
    from gradflow.train import Batches, make_optimizer

    opt = make_optimizer(model.parameters(), cfg.optim, fused=fused or None)
    batches = Batches(len(data.x_train), cfg.train.batch_size, cfg.seed, data.x_train.device)
    model.train()
    for t in range(cfg.train.steps + 1):
        idx = batches.next()
        opt.zero_grad()
        _bare_loss(model(data.x_train[idx]), data.y_train[idx], data.task).backward()
        if t < cfg.train.steps:
            opt.step()
        on_step(t, cfg.train.steps)
        yield t


def _bare_loss(out, y, task: str) -> torch.Tensor:
    """The loss alone, as a user's own loop computes it (gradflow's loop also tracks accuracy)."""
    from gradflow.textdata import IGNORE

    if task == "classification":
        return F.cross_entropy(out, y)
    if task == "regression":
        return F.mse_loss(out, y)
    if task == "next_token":  # (batch, T, vocab) against (batch, T)
        return F.cross_entropy(out.flatten(0, 1), y.flatten(), ignore_index=IGNORE)
    return F.cross_entropy(out.transpose(1, 2), y)  # per_step: (batch, classes, T) against (batch, T)


def _gradflow_loop(model, data, cfg, on_step, fused: bool = True) -> Iterator[int]:
    from gradflow.job import probed_activation
    from gradflow.probes.core import Probes
    from gradflow.train import training

    cpu = data.x_train.device.type == "cpu"
    probes = Probes(model, probed_activation(cfg), fused=fused and cpu)
    try:
        yield from training(model, data, cfg, probes, on_step)
    finally:
        probes.remove()


# steps per turn (see the module's docstring): prime, so every 10th step falls at every place of a turn; and
# the steps at the start of a turn that are not timed
TURN, WARM = 13, 2


class Timed:
    """One run of `loop` as a generator of steps, with the clock read after each step."""

    def __init__(self, model, data, cfg, loop: str, clock: str = "wall"):
        self.stamps: list[float] = []
        self.cold: set[int] = set()  # steps not to time (in_turns adds each turn's first)
        self.probed = set() if loop in BARE else set(schedule(cfg.train.steps, cfg.probe.every, cfg.probe.points))
        now, cuda = CLOCKS[clock], data.x_train.is_cuda

        def on_step(t, steps):
            if cuda:
                torch.cuda.synchronize()  # note: a host sync point, so the stamp covers the step's kernels
            self.stamps.append(now())

        self.steps = (_bare_loop(model, data, cfg, on_step, fused=loop == "torch fused") if loop in BARE else
                      _gradflow_loop(model, data, cfg, on_step, fused=loop not in UNFUSED))

    def times(self) -> tuple[list[float], list[float]]:
        """Milliseconds of each of steps 1..steps-1 but the cold ones: (the probed steps', the others')."""
        return split_steps([1e3 * s for s in self.stamps], self.probed, self.cold)


def in_turns(runs: list[Timed]) -> None:
    """Run every one of `runs` to its end, TURN steps of each in turn; each turn's first WARM steps go
    into its run's `cold`."""
    live = list(runs)
    while live:
        for run in list(live):
            for k in range(TURN):
                t = next(run.steps, None)
                if t is None:
                    live.remove(run)
                    break
                if k < WARM:
                    run.cold.add(t)


def split_steps(stamps: list[float], probed: set[int], cold: set[int] = frozenset()) -> tuple[list[float], list[float]]:
    """Each step's time from the stamps taken after each step 0..steps, over steps 1..steps-1 (step 0
    and the last evaluate) but the `cold` ones: (the probed steps', the others')."""
    gaps = [(t, b - a) for t, (a, b) in enumerate(zip(stamps[:-2], stamps[1:-1]), start=1) if t not in cold]
    return [g for t, g in gaps if t in probed], [g for t, g in gaps if t not in probed]


def weighted_median(kinds: tuple[list[float], list[float]]) -> float:
    """Time per step: the median of the probed steps' times and of the others', weighted by their shares."""
    return sum(len(k) * statistics.median(k) for k in kinds if k) / sum(len(k) for k in kinds)


def measure(workload: str, threads: int, steps: int = 101, rounds: int = 5, extra: list[str] | None = None,
            loops: list[str] | None = None, clock: str = "wall") -> Timing:
    """Interleaved rounds of every loop on `workload` at `threads` intra-op threads."""
    from gradflow.job import prepare

    loops = loops or list(LOOPS)
    base = [*WORKLOADS[workload], *(extra or []), f"train.steps={steps}", f"train.eval_every={steps}"]
    cfgs = {loop: compose([*base, *(LOOPS[loop] or [])]) for loop in loops}
    _, data, model = prepare(cfgs[loops[0]])  # the probe overrides change nothing that `prepare` builds
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        timing = Timing(workload, threads, {loop: [] for loop in loops}, {loop: ([], []) for loop in loops})
        warm = "every step" if "every step" in loops else loops[-1]
        in_turns([Timed(copy.deepcopy(model), data, cfgs[warm], warm)])  # warm-up: allocator, caches
        for _ in range(rounds):
            runs = {loop: Timed(copy.deepcopy(model), data, cfgs[loop], loop, clock) for loop in loops}
            in_turns(list(runs.values()))
            for loop, run in runs.items():
                kinds = run.times()
                timing.ms[loop].append(weighted_median(kinds))
                for pooled, these in zip(timing.gaps[loop], kinds):
                    pooled += these
    finally:
        torch.set_num_threads(before)
    return timing


def run(workloads: list[str], threads: list[int], steps: int = 101, rounds: int = 5,
        extra: list[str] | None = None, clock: str = "wall", on_result=None) -> list[Timing]:
    results = []
    for name in workloads:
        for n in threads:
            res = measure(name, n, steps, rounds, extra, clock=clock)
            results.append(res)
            if on_result:
                on_result(res)
    return results


# --- sweep machinery (its own targets): `gradflow bench --sweep` times planning, per-job
# overhead, resume, ls and plot on the 200-point grid; it is added here by the sweep's owner. ---
