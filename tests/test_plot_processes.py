"""A big sweep's standard figures, drawn by one process per CPU (`gradflow.plots.standard.drawing_processes`):
the same files as one process draws, failures that say so, every figure in a report, and a Ctrl-C that
leaves nothing behind. Linux with 2+ CPUs (the processes are forked from gradflow's fork server)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

import gradflow
from gradflow import workers
from gradflow.cli import app
from gradflow.plots import standard
from tests.conftest import group_processes

pytestmark = pytest.mark.skipif(sys.platform != "linux" or len(os.sched_getaffinity(0)) < 2,
                                reason="drawing processes are forked from the fork server: Linux, 2+ CPUs")
SMALL = ["data=gaussian", "data.n_train=128", "data.n_test=64", "data.dim=8", "model.width=4", "train.steps=1",
         "train.batch_size=32", "train.eval_every=1"]
ENV = {**os.environ, "COLUMNS": "200", "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> Path:
    """As many runs as it takes for drawing processes (one step each)."""
    results = tmp_path_factory.mktemp("results")
    out = CliRunner().invoke(app, ["sweep", *SMALL, f"model.depth=range(1,{standard.PARALLEL_RUNS + 1})",
                                   f"results={results}", "--name", "big"], catch_exceptions=False)
    assert out.exit_code == 0, out.output
    return results / "big"


def test_a_big_sweeps_figures_drawn_by_several_processes_are_those_one_process_draws(big, tmp_path, monkeypatch):
    """`gradflow plot` on a sweep of PARALLEL_RUNS runs: each figure byte for byte the one this process
    draws alone, printed in the same order; and the drawing processes do draw (from the fork server of
    a process whose main module is safe to import again, as the command line's is)."""
    monkeypatch.setattr(workers, "_allowed", False)  # this process draws alone
    alone = standard.standard_figures(big, tmp_path / "alone")
    done = subprocess.run([sys.executable, "-m", "gradflow", "plot", str(big), "--out", str(tmp_path / "several")],
                          capture_output=True, text=True, env=ENV, timeout=300)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stdout + done.stderr
    several = [Path(line) for line in done.stdout.splitlines()]
    assert [p.name for p in several] == [p.name for p in alone] and len(alone) >= 7
    for a, b in zip(alone, several):
        assert a.read_bytes() == b.read_bytes(), b.name

    script = """if True:
        import os, sys
        from pathlib import Path
        from gradflow import store, workers
        from gradflow.plots import standard
        from gradflow.summary import runs_table
        workers.allow_fork_server()
        with standard.drawing_processes(standard.PARALLEL_RUNS) as pool:
            t = {name: store.load(sys.argv[1], name) for name in ("layers", "metrics")}
            figures = standard.plan(t["layers"], t["metrics"], runs_table(sys.argv[1]))
            paths = standard.render(figures, Path(sys.argv[2]), "png", pool)
            print(pool.processes, pool.drawn, len(paths))
            bad = standard.Planned("bad", standard.profile, (t["layers"], "no_such_quantity"))
            try:  # the pool is up: it takes the last figure at once, this process the first
                standard.render([figures[0], bad], Path(sys.argv[2]) / "bad", "png", pool)
            except Exception as e:
                print(type(e).__name__, pool.drawn, [p.name for p in e.written], e)
    """
    done = subprocess.run([sys.executable, "-c", script, str(big), str(tmp_path / "counted")], capture_output=True,
                          text=True, env=ENV, timeout=300)
    assert done.returncode == 0, done.stderr
    counts, failed = done.stdout.splitlines()
    processes, drawn, n = map(int, counts.split())
    assert processes == min(len(os.sched_getaffinity(0)) - 1, standard.MAX_DRAWING_PROCESSES)
    assert 1 <= drawn < n == len(alone)
    # a figure that fails in a drawing process fails here, with its own message, the other one drawn
    assert failed.startswith(f"FiguresFailed {drawn} ['{alone[0].name}'] bad not drawn: "), failed
    assert "no_such_quantity" in failed, failed


def test_a_big_sweeps_report_has_every_standard_figure(big, tmp_path):
    """`gradflow report` draws the page's figures the same way (its drawing processes start while it
    reads the tables): every figure of the standard set is on the page."""
    page = tmp_path / "report.html"
    done = subprocess.run([sys.executable, "-m", "gradflow", "report", str(big), "--out", str(page)],
                          capture_output=True, text=True, env=ENV, timeout=300)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stdout + done.stderr
    t = {name: gradflow.load(big, table=name) for name in ("layers", "metrics", "runs")}
    planned = [f.name for f in standard.plan(t["layers"], t["metrics"], t["runs"])]
    assert sorted(re.findall(r'data-name="([^"]+)"', page.read_text())) == sorted(planned) and len(planned) >= 7


@pytest.mark.parametrize("when", ["server", "figure"])
def test_ctrl_c_while_figures_are_drawn_in_several_processes_leaves_nothing_behind(big, tmp_path, when):
    """Ctrl-C reaches the whole process group: the fork server while it imports, or the drawing processes
    at work. Exit 130 with the line `interrupted`, no traceback from any of them, and no process of the
    group left a second later."""
    out = tmp_path / "figures"
    proc = subprocess.Popen([sys.executable, "-m", "gradflow", "plot", str(big), "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
                            start_new_session=True)

    def ready() -> bool:
        if when == "server":
            return any("forkserver" in line for line in group_processes(proc.pid))
        return any(out.glob("*.png"))

    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not ready():
        time.sleep(0.02)
    assert proc.poll() is None, "the command ended before the Ctrl-C"
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1:] == ["interrupted"], err  # one line, not a silent exit
    time.sleep(1)
    assert group_processes(proc.pid) == []


POOL_LOSES_A_PROCESS = """
import multiprocessing, os, signal, sys, time
from concurrent.futures import ProcessPoolExecutor
from gradflow import workers

def pid():
    time.sleep(0.3)
    return os.getpid()

if __name__ == "__main__":
    workers.allow_fork_server()
    assert workers.start_fork_server(["__main__", "gradflow.plots.preload"])
    pool = ProcessPoolExecutor(3, mp_context=multiprocessing.get_context("forkserver"))
    pids = [f.result() for f in [pool.submit(pid) for _ in range(3)]]
    time.sleep(0.3)
    os.kill(pids[int(sys.argv[1])], signal.SIGKILL)
    time.sleep(0.3)
    try:
        pool.submit(pid).result()
    except Exception as e:
        print(type(e).__name__, flush=True)
    pool.shutdown(cancel_futures=True)
    print("shut down", flush=True)
"""


@pytest.mark.parametrize("victim", [0, 2])
def test_a_drawing_pool_that_loses_a_process_shuts_down(tmp_path, victim):
    # the pool ends its other processes by SIGTERM where one dies (OOM, a segfault, kill -9): held, as a sweep's
    # workers hold it between jobs, the pool waited for them for ever, and `gradflow plot` with it
    script = tmp_path / "pool.py"
    script.write_text(POOL_LOSES_A_PROCESS)
    out = subprocess.run([sys.executable, str(script), str(victim)], capture_output=True, text=True, timeout=60,
                         cwd=tmp_path, start_new_session=True)
    assert out.stdout.split() == ["BrokenProcessPool", "shut", "down"], out.stdout + out.stderr
