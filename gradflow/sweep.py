"""Sweeps: a grid of runs through real Hydra multirun, so every Hydra sweeper and launcher works.

`gradflow sweep` (cli.py) calls `launch`, which expands and validates the whole grid first,
writes <results>/<name>/sweep.yaml, then hands the overrides to a `@hydra.main` entry point
(rewriting argv), exactly as `python app.py --multirun ...` would. Each job runs `task`, which
skips a run already finished with the same resolved config, and records any failure in the
run's own run.json so the sweep goes on.
"""

from __future__ import annotations

import importlib.util
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from omegaconf import OmegaConf

from gradflow import config as config_mod
from gradflow import store
from gradflow.errors import GradflowError

# launcher -> (module that provides it, extra to install)
LAUNCHER_PLUGINS = {
    "basic": (None, None),
    "joblib": ("hydra_plugins.hydra_joblib_launcher", "cluster"),
    "submitit_local": ("hydra_plugins.hydra_submitit_launcher", "cluster"),
    "submitit_slurm": ("hydra_plugins.hydra_submitit_launcher", "cluster"),
    "slurm": ("hydra_plugins.hydra_submitit_launcher", "cluster"),
}


@dataclass
class Job:
    overrides: list[str]  # the job's config overrides (hydra ones removed)
    name: str  # its folder name under the sweep folder
    finished: bool = False  # already done with the same config: will be skipped


@dataclass
class Plan:
    root: Path  # <results>/<name>
    overrides: list[str]  # as given (config + hydra)
    swept: list[str]  # keys whose values vary
    launcher: str
    jobs: list[Job] = field(default_factory=list)

    @property
    def to_run(self) -> list[Job]:
        return [j for j in self.jobs if not j.finished]


def plan(overrides: list[str], name: str | None, force: bool = False) -> Plan:
    """Expand and validate the whole grid before any job starts."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    user = [o for o in overrides if not _key(o) in ("name",)]
    if name:
        user_name = name
    else:
        given = [o.split("=", 1)[1] for o in overrides if _key(o) == "name"]
        user_name = given[-1] if given else "sweep"
    try:
        parsed = OverridesParser.create(config_loader=config_mod.config_loader()).parse_overrides(user)  # glob(*) needs it
    except Exception as e:
        raise GradflowError(config_mod.hydra_error_message(e)) from None
    launcher = "basic"
    for o in parsed:
        if o.key_or_group == "hydra/launcher":
            launcher = o.value()
    check_launcher(launcher)
    swept = sorted({o.key_or_group for o in parsed if o.is_sweep_override() and not o.is_hydra_override()})
    grid = BasicSweeper.split_arguments(parsed, max_batch_size=None)[0]
    first = config_mod.compose([*_config_only(grid[0]), f"name={user_name}"])  # checks name and results too
    root = Path(first.results) / first.name
    store.check_writable(root)
    result = Plan(root=root, overrides=list(overrides), swept=swept, launcher=launcher)
    seen: set[str] = set()
    for point in grid:
        cfg_overrides = _config_only(point)
        try:
            cfg = config_mod.compose([*cfg_overrides, f"name={user_name}"])
        except GradflowError as e:
            raise GradflowError(f"sweep point {','.join(cfg_overrides)}: {e}") from None
        jname = config_mod.job_name([o for o in cfg_overrides if _key(o) in swept])
        if jname in seen:
            raise GradflowError(f"two sweep points share the folder {jname!r}; make the swept values distinct")
        seen.add(jname)
        job_dir = root / jname
        if force:
            store.remove_run(job_dir)
        done = store.is_finished(job_dir) and same_config(job_dir, cfg)
        result.jobs.append(Job(cfg_overrides, jname, finished=done))
    return result


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _config_only(overrides: list[str]) -> list[str]:
    return [o for o in overrides if not _key(o).startswith("hydra")]


def check_launcher(launcher: str) -> None:
    if launcher not in LAUNCHER_PLUGINS:
        raise GradflowError(f"hydra/launcher={launcher!r} is not known; choices: {', '.join(LAUNCHER_PLUGINS)}")
    module, extra = LAUNCHER_PLUGINS[launcher]
    if module and importlib.util.find_spec(module) is None:
        raise GradflowError(f"hydra/launcher={launcher} needs its Hydra plugin: pip install 'gradflow[{extra}]'")


def same_config(job_dir: Path, cfg) -> bool:
    """Whether a finished run computed the same thing (the thread count does not count)."""
    try:
        old = OmegaConf.load(job_dir / store.CONFIG_FILE)
    except FileNotFoundError:
        return False
    new = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    for c in (old, new):
        c.pop("threads", None)
    return old == new


# --- the job: runs in this process (basic launcher) or in a worker (joblib, submitit) ------------
StepFn = Callable[[str, int, int], None]  # (job name, step, steps)
_reporter: StepFn | None = None  # set by `launch` in this process; None inside worker processes


def task(cfg) -> str:
    """One sweep point. Returns its status; never raises for a failing run."""
    from hydra.core.hydra_config import HydraConfig

    from gradflow import job

    job_dir = Path(HydraConfig.get().runtime.output_dir)
    if store.is_finished(job_dir) and same_config(job_dir, cfg):
        return "skipped"
    report = _reporter
    on_step = (lambda t, n: report(job_dir.name, t, n)) if report else None
    record = job.execute(cfg, job_dir, on_step=on_step, isolate=True)
    return record["status"]


def launch(p: Plan, on_step: StepFn | None = None) -> None:
    """Run the planned sweep through Hydra's multirun with the planned job names."""
    import hydra

    global _reporter
    p.root.mkdir(parents=True, exist_ok=True)
    store.write_text(p.root / store.SWEEP_FILE, OmegaConf.to_yaml(OmegaConf.create({
        "overrides": p.overrides, "swept": p.swept, "launcher": p.launcher, "jobs": len(p.jobs),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": "gradflow sweep " + " ".join(p.overrides)})))
    if not p.to_run:
        return
    not_swept = sorted({_key(o) for j in p.jobs for o in j.overrides} - set(p.swept))
    exclude = ",".join(list(config_mod.NOT_IN_JOB_NAME) + not_swept)
    argv = [sys.argv[0], "--multirun", *p.overrides, f"name={p.root.name}", f"results={p.root.parent}",
            f"hydra.job.config.override_dirname.exclude_keys=[{exclude}]"]
    entry = hydra.main(config_path=str(config_mod.CONF_DIR), config_name="config", version_base=None)(task)
    saved_argv, _reporter = sys.argv, on_step
    try:
        sys.argv = argv
        entry()
    finally:
        sys.argv, _reporter = saved_argv, None


class Watcher(threading.Thread):
    """Counts jobs that finished, from their run.json on disk (works with every launcher)."""

    def __init__(self, p: Plan, on_count: Callable[[int], None], every: float = 0.5):
        super().__init__(daemon=True)
        self.plan, self.on_count, self.every = p, on_count, every
        self.since = time.time()
        self.stop = threading.Event()

    def count(self) -> int:
        done = 0
        for j in self.plan.to_run:
            path = self.plan.root / j.name / store.RUN_FILE
            try:
                if path.stat().st_mtime < self.since - 1:
                    continue  # a leftover from an earlier attempt, not yet redone
            except FileNotFoundError:
                continue
            rec = store.read_run(path.parent)
            if rec and rec.get("status") in ("ok", "diverged", "failed"):
                done += 1
        return done

    def run(self) -> None:
        while not self.stop.wait(self.every):
            self.on_count(self.count())
