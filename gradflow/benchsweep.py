"""What the sweep machinery costs (`gradflow bench --sweep`), against its targets.

Two workloads. 200 tiny runs of one step (`model.depth=range(1,51) seed=range(4)`): planning per
grid point, the per-job cost beyond the runs' own wall time, resuming the finished sweep, and views
of the study such as `ls` and the standard plots. And 12 MNIST-1D runs of about a second each: the
machinery's share of the summed training time with the basic launcher, and how much faster joblib
with two workers runs the same sweep. The machinery is timed inside this process after a warm-up run
(imports, the dataset cache), so a number is the sweep's own cost, not Python's start-up; joblib's
speed-up is timed as a user sees it, each launcher's `gradflow sweep` in a fresh process.
"""

from __future__ import annotations

import math
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from gradflow import store, sweep
from gradflow.errors import GradflowError

SPEEDUP = "x faster"  # the unit of a ratio where more is better


@dataclass
class Timing:
    step: str  # planning | per job | resume | ls | plot | machinery | joblib
    value: float  # seconds in the unit below, or a fraction ("of training"), or a ratio (SPEEDUP)
    unit: str  # "per point", "per job", "total", "of training" or SPEEDUP
    target: float  # the budget, same unit: at most, or at least for SPEEDUP
    spread: tuple[float, float] | None = None  # min and max over rounds, where value is their median

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
           Timing("per job", per_job(ran, walls, n), "per job", TARGETS["per job"]),
           Timing("resume", resumed, "total", TARGETS["resume"])]
    for step, view in (views or {}).items():
        start = time.perf_counter()
        view(p.root)
        out.append(Timing(step, time.perf_counter() - start, "total", TARGETS.get(step, math.inf)))
    return out


def time_launchers(results: Path, grid: list[str] = MNIST1D_GRID, parallel: list[str] | None = JOBLIB,
                   rounds: int = 3) -> list[Timing]:
    """The machinery's share of the summed training time (run.json's train_time) with the basic
    launcher, in this process after a warm-up. Then, unless parallel is None (its plugin missing), how
    much faster the sweep runs with `parallel` as a user runs it: `gradflow sweep` from the command
    line, a fresh process each time, with the basic launcher and with `parallel`, alternated for
    `rounds` rounds; the median of the rounds' wall-time ratios, with their spread. Each way pays its
    own start-up: the basic launcher imports torch in its one process, a parallel one in its workers."""
    _warm_up([*[o.split(",")[0] for o in grid], f"results={results}"])  # the first value of every key
    p = sweep.plan([*grid, f"results={results}"], "bench-basic")
    start = time.perf_counter()
    sweep.launch(p)
    wall = time.perf_counter() - start
    train = sum(r["record"].get("train_time", 0.0) for r in store.runs(p.root))
    machinery = Timing("machinery", (wall - train) / train, "of training", TARGETS["machinery"])
    if parallel is None:
        return [machinery]
    ratios = []
    for i in range(rounds):
        basic, other = (_command_line([*grid, *extra, f"results={results}", f"name=bench-{name}-{i}"])
                        for name, extra in (("basic", []), ("parallel", parallel)))
        ratios.append(speedup(basic_s=basic, parallel_s=other))
    return [machinery, Timing("joblib", statistics.median(ratios), SPEEDUP, TARGETS["joblib"],
                              spread=(min(ratios), max(ratios)))]


def per_job(launch_s: float, runs_s: float, n: int) -> float:
    """The machinery's seconds per job: the launch's wall time less the runs' own (`runs_s`, their summed
    wall_time), over the `n` jobs."""
    return (launch_s - runs_s) / n


def speedup(basic_s: float, parallel_s: float) -> float:
    """How many times faster the parallel launcher ran the sweep: the basic launcher's seconds over its own
    (above 1: faster)."""
    return basic_s / parallel_s


def _command_line(overrides: list[str]) -> float:
    """Wall seconds of `gradflow sweep <overrides>` in a fresh process, as a user runs it."""
    script = Path(sys.executable).with_name("gradflow")  # the installed command, else the module
    command = [str(script)] if script.exists() else [sys.executable, "-m", "gradflow"]
    start = time.perf_counter()
    done = subprocess.run([*command, "sweep", *overrides], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True)
    wall = time.perf_counter() - start
    if done.returncode:
        last = done.stderr.strip().splitlines()[-1:] or ["no message"]
        raise GradflowError(f"gradflow sweep {' '.join(overrides)} failed (exit {done.returncode}): {last[0]}")
    return wall


def _warm_up(overrides: list[str]) -> None:
    """One run of the workload in this process first: imports, Hydra's start-up and the dataset cache
    are paid once per process, not per point. Also the import a later run may make lazily: the
    theory's root finder (scipy.optimize, ~0.4 s), for a run whose init puts it in the chaotic phase
    (e.g. tanh with Kaiming's gain), as joblib's workers have it preloaded (gradflow._preload)."""
    from scipy.optimize import brentq  # noqa: F401

    keep = [o for o in overrides if not o.startswith("train.steps=")]
    sweep.launch(sweep.plan([*keep, "train.steps=1"], "bench-warmup"))
