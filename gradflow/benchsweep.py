"""What the sweep machinery costs (`gradflow bench --sweep`), against issue 12's targets.

Two workloads. 200 tiny runs of one step (`model.depth=range(1,51) seed=range(4)`): planning per
grid point, the per-job cost beyond the runs' own wall time, resuming the finished sweep, and views
of the study such as `ls` and the standard plots. And 12 MNIST-1D runs of about a second each: the
machinery's share of the summed training time with the basic launcher, and how much faster joblib
with two workers runs the same sweep. Everything is timed inside this process after a warm-up run
(imports, the dataset cache), so a number is the sweep's own cost, not Python's start-up; joblib's
workers start cold, as they do for a user.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from gradflow import store, sweep

SPEEDUP = "x faster"  # the unit of a ratio where more is better


@dataclass
class Timing:
    step: str  # planning | per job | resume | ls | plot | machinery | joblib
    value: float  # seconds in the unit below, or a fraction ("of training"), or a ratio (SPEEDUP)
    unit: str  # "per point", "per job", "total", "of training" or SPEEDUP
    target: float  # the budget, same unit: at most, or at least for SPEEDUP

    @property
    def met(self) -> bool:
        return self.value >= self.target if self.unit == SPEEDUP else self.value <= self.target


TARGETS = {"planning": 0.002, "per job": 0.050, "resume": 3.0, "ls": 1.0, "plot": 5.0, "machinery": 0.10,
           "joblib": 1.6}
TINY_GRID = ["train.steps=1", "model.width=8", "data=gaussian", "threads=1"]  # + model.depth and seed ranges
# 12 MNIST-1D runs of ~1 s of training each on one core of this 2-core machine
MNIST1D_GRID = ["data=mnist1d", "model.depth=4,8,16", "init=xavier_normal,kaiming_normal", "seed=0,1",
                "train.steps=300", "threads=1"]
JOBLIB = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]


def time_machinery(results: Path, depths: int = 50, seeds: int = 4,
                   views: dict[str, Callable[[Path], Any]] | None = None) -> list[Timing]:
    """Time the sweep machinery on a grid of tiny runs (depths x seeds points, 1 step each): planning,
    the per-job cost beyond the runs' own wall time, resuming the finished sweep, and each of `views`
    (e.g. ls, plot: a function of the sweep folder)."""
    overrides = [f"model.depth=range(1,{depths + 1})", f"seed=range({seeds})", *TINY_GRID, f"results={results}"]
    _warm_up([*TINY_GRID, f"results={results}"])
    start = time.perf_counter()
    p = sweep.plan(overrides, "bench-sweep")
    planned = time.perf_counter() - start
    start = time.perf_counter()
    sweep.launch(p)
    ran = time.perf_counter() - start
    walls = sum(r["record"].get("wall_time", 0.0) for r in store.runs(p.root))
    start = time.perf_counter()
    sweep.launch(sweep.plan(overrides, "bench-sweep"))
    resumed = time.perf_counter() - start
    n = len(p.jobs)
    out = [Timing("planning", planned / n, "per point", TARGETS["planning"]),
           Timing("per job", (ran - walls) / n, "per job", TARGETS["per job"]),
           Timing("resume", resumed, "total", TARGETS["resume"])]
    for step, view in (views or {}).items():
        start = time.perf_counter()
        view(p.root)
        out.append(Timing(step, time.perf_counter() - start, "total", TARGETS.get(step, math.inf)))
    return out


def time_launchers(results: Path, grid: list[str] = MNIST1D_GRID, parallel: list[str] | None = JOBLIB,
                   workers: int = 2) -> list[Timing]:
    """The same sweep with the basic launcher, then with `parallel` (`workers` processes): the machinery's
    share of the summed training time (run.json's train_time) with the basic launcher, the basic /
    parallel wall-time ratio, and the most the parallel launcher can gain on `workers` idle cores, from
    CPU time (this process's and its reaped workers'), which other work on a shared machine does not
    inflate: basic's CPU over the parallel sweep's CPU shared evenly by the workers. parallel=None: the
    basic launcher only (the machinery's share)."""
    _warm_up([*[o.split(",")[0] for o in grid], f"results={results}"])  # the first value of every key
    walls, cpus = {}, {}
    launchers = {"bench-basic": []} | ({} if parallel is None else {"bench-parallel": parallel})
    for name, extra in launchers.items():
        p = sweep.plan([*grid, *extra, f"results={results}"], name)
        start, cpu = time.perf_counter(), _cpu()
        sweep.launch(p)  # parallel workers are shut down and reaped when it returns
        walls[name], cpus[name] = time.perf_counter() - start, _cpu() - cpu
    train = sum(r["record"].get("train_time", 0.0) for r in store.runs(results / "bench-basic"))
    machinery = Timing("machinery", (walls["bench-basic"] - train) / train, "of training", TARGETS["machinery"])
    if parallel is None:
        return [machinery]
    return [machinery,
            Timing("joblib", walls["bench-basic"] / walls["bench-parallel"], SPEEDUP, TARGETS["joblib"]),
            Timing("joblib, CPU bound", cpus["bench-basic"] / (cpus["bench-parallel"] / workers), SPEEDUP,
                   TARGETS["joblib"])]


def _cpu() -> float:
    """CPU seconds of this process and of its children that have ended."""
    import resource  # Unix only

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _warm_up(overrides: list[str]) -> None:
    """One run of the workload in this process first: imports, Hydra's start-up and the dataset cache
    are paid once per process, not per point."""
    keep = [o for o in overrides if not o.startswith("train.steps=")]
    sweep.launch(sweep.plan([*keep, "train.steps=1"], "bench-warmup"))
