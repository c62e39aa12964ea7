"""Shared fixtures: runs go to a temporary results folder; the MNIST-1D cache is shared per session."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

# One intra-op thread per test process (and its subprocesses): the test models are small, results
# are then identical across launchers, and a busy machine is not oversubscribed.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# device=auto means the CPU here, also on a machine with a GPU: the suite's numbers, golden outputs and
# CPU-only paths (the fused kernels) are the CPU's wherever it runs; the CUDA-marked tests ask for cuda
os.environ.setdefault("GRADFLOW_DEVICE", "cpu")
# Ctrl-C as a terminal delivers it: a suite started in the background (`nohup ... &`, some CI runners)
# inherits SIGINT ignored, which Python then leaves ignored and which the commands the tests start
# inherit too, so every Ctrl-C test would wait for an interruption that never comes. A handler
# installed here is reset to the default at exec, where Python installs its own.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

import functools

import pandas as pd
import pytest
import torch
import typer.testing
from typer.testing import CliRunner

# Typer's CliRunner builds the click command from the app again at every invoke (13 ms for gradflow's, some
# 2000 times a suite); a `gradflow` process builds it once, so the invocations of a test process share one
typer.testing._get_command = functools.cache(typer.testing._get_command)

# MNIST-1D is generated once per test session (about 2 s), never downloaded
if "GRADFLOW_CACHE" not in os.environ:
    import atexit
    import shutil
    import tempfile

    os.environ["GRADFLOW_CACHE"] = tempfile.mkdtemp(prefix="gradflow-cache-")
    atexit.register(shutil.rmtree, os.environ["GRADFLOW_CACHE"], ignore_errors=True)  # one per test process

os.environ["COLUMNS"] = "250"  # wide rich tables under CliRunner, so assertions see whole cells

TINY = ["data=gaussian", "data.n_train=256", "data.n_test=128", "data.dim=16", "model.width=16", "model.depth=3",
        "train.steps=4", "train.batch_size=32", "train.eval_every=2"]


def pytest_collection_modifyitems(config, items):
    # files holding a slow test first (a stable sort keeps each file's own order): under
    # `-n auto --dist loadfile --no-loadscope-reorder` (make test) the workers start on the long
    # reproductions and finish on short files, instead of one worker running a reproduction alone
    # at the end
    slow_files = {item.path for item in items if "slow" in item.keywords}
    items.sort(key=lambda item: item.path not in slow_files)
    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA GPU")
        for item in items:
            if "cuda" in item.keywords:
                item.add_marker(skip)


@pytest.fixture
def results(tmp_path) -> Path:
    return tmp_path / "results"


@pytest.fixture
def cli():
    """Invoke the real Typer app: cli("run", "model.depth=3") -> click Result."""
    from gradflow.cli import app

    runner = CliRunner()

    def invoke(*args: str, input: str | None = None):
        return runner.invoke(app, [str(a) for a in args], input=input, catch_exceptions=False)

    return invoke


def execute_job(results: Path, *overrides: str, name: str = "t") -> Path:
    """Compose overrides and execute one job into `results`/`name`, as `gradflow run` would; returns its folder."""
    from gradflow import job
    from gradflow.config import compose
    from gradflow.overrides import job_name

    job_dir = results / name / job_name(list(overrides))
    job.execute(compose([*overrides, f"results={results}", f"name={name}"]), job_dir)
    return job_dir


@pytest.fixture
def run_job(results):
    """execute_job into the test's temporary results folder."""
    return lambda *overrides, name="t": execute_job(results, *overrides, name=name)


def layers_of(job_dir: Path) -> pd.DataFrame:
    return pd.read_parquet(job_dir / "layers.parquet")


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> Path:
    """One results folder per test module: a reproduction's passing run and its negative control reuse
    each other's finished runs."""
    return tmp_path_factory.mktemp("results")


def group_processes(pgid: int) -> list[str]:
    """Live processes of a process group (a zombie has exited; only its parent's reaping is left)."""
    out = subprocess.run(["ps", "-eo", "pgid=,stat=,pid=,args="], capture_output=True, text=True).stdout
    return [line for line in out.splitlines()
            if line.split() and line.split()[0] == str(pgid) and not line.split()[1].startswith("Z")]


@contextmanager
def ctrl_c_on_entering(*functions):
    """A real Ctrl-C (SIGINT to this process) as each of `functions` is entered, once each (seen by a
    profile hook): the moments a Ctrl-C lands in by chance, made certain. Yields the functions reached."""
    codes, reached = {f.__code__: f for f in functions}, []

    def profile(frame, event, arg):
        f = codes.get(frame.f_code) if event == "call" else None
        if f is not None and f not in reached:
            reached.append(f)
            os.kill(os.getpid(), signal.SIGINT)

    previous = sys.getprofile()
    sys.setprofile(profile)
    try:
        yield reached
    finally:
        sys.setprofile(previous)
