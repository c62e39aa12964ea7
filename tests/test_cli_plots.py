"""`gradflow plot` and `gradflow compare` on real tiny sweeps made with the CLI.

Made once per module, a few steps each on gaussian data: a plain depth x activation sweep with
Jacobian spectra (jacobian.parquet), one run with `probe=full` (hist.parquet too), a batch-normalized
twin of half the sweep, and a sweep at lr = 1e6 in which one run diverges.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

import gradflow
from gradflow import store, workers
from gradflow.cli import app
from gradflow.compare import comparison, match_keys, source_labels
from gradflow.plots import standard
from tests.conftest import group_processes

SMALL = ["data=gaussian", "data.n_train=128", "data.n_test=64", "data.dim=8", "model.width=8", "train.steps=4",
         "train.batch_size=32", "train.eval_every=2"]
GRID = ["model.depth=2,4", "model.activation=tanh,relu"]
PNG = b"\x89PNG\r\n\x1a\n"


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("results")


def _sweep(results: Path, name: str, *overrides: str) -> Path:
    out = invoke("sweep", *SMALL, *overrides, f"results={results}", "--name", name)
    assert out.exit_code == 0, out.output
    return results / name


@pytest.fixture(scope="module")
def plain(results) -> Path:
    return _sweep(results, "plain", *GRID, "probe.jacobian=true")


@pytest.fixture(scope="module")
def full(results) -> Path:
    """One run with every probe: histograms and Jacobian spectra."""
    out = invoke("run", *SMALL, "model.depth=3", "model.activation=relu", "probe=full", f"results={results}",
                 "name=full")
    assert out.exit_code == 0, out.output
    (job,) = store.find_runs(results / "full")
    return job


@pytest.fixture(scope="module")
def batchnorm(results) -> Path:
    """The batch-normalized twin, tanh only: its runs match half of plain's."""
    return _sweep(results, "batchnorm", "model.depth=2,4", "model.activation=tanh", "norm=batchnorm")


@pytest.fixture(scope="module")
def diverging(results) -> Path:
    """lr = 1e6: depth 2 diverges (non-finite loss), depth 3 ends with dead ReLUs (zero gradients)."""
    root = _sweep(results, "diverging", "optim.lr=1e6", "optim.momentum=0", "model.activation=relu",
                  "model.depth=2,3", "train.steps=6", "train.check_every=1", "probe=full")
    assert "diverged" in set(gradflow.load(root, table="runs")["status"])
    return root


def printed_paths(out) -> list[Path]:
    return [Path(line) for line in out.output.splitlines() if line.strip()]


# --- plot ----------------------------------------------------------------------------------------
def test_plot_default_writes_the_standard_set(plain):
    out = invoke("plot", plain)
    assert out.exit_code == 0, out.output
    paths = printed_paths(out)
    names = [p.name for p in paths]
    assert names[:7] == ["profile-grad_norm-step0.png", "profile-grad_norm-last.png", "profile-signal_norm-step0.png",
                         "profile-signal_norm-last.png", "curves.png", "ratio-init.png", "ratio-signal_norm-init.png"]
    assert names[7:] == ["spectrum-step0.png", "spectrum-last.png"]  # no hist: the sweep has no hist.parquet
    for p in paths:
        assert p.parent == plain / "figures" and p.read_bytes()[:8] == PNG
    # figures live beside the runs without becoming runs: the sweep still loads 4
    assert gradflow.load(plain, table="runs")["run"].nunique() == 4


@pytest.mark.parametrize("args, name", [
    (["--kind", "profile", "--step", "0", "--color", "model.depth", "--facet", "model.activation",
      "--quantity", "signal_norm"], "profile-signal_norm-step0-color-model.depth-facet-model.activation.png"),
    (["--kind", "heatmap", "--run", "model.activation=tanh,model.depth=4", "--quantity", "act_std"],
     "heatmap-act_std-model.activation=tanh,model.depth=4.png"),
    (["--kind", "curves", "--color", "model.activation"], "curves-color-model.activation.png"),
    (["--kind", "ratio", "--step", "last"], "ratio-final.png"),
    (["--kind", "ratio", "--quantity", "signal_norm"], "ratio-signal_norm-init.png"),
    (["--kind", "grid", "--x", "model.activation", "--y", "model.depth", "--value", "final.train_acc"],
     "grid-final.train_acc-model.activation-model.depth.png"),
    (["--kind", "hist", "--step", "last"], "hist-last.png"),
    (["--kind", "spectrum", "--color", "model.activation"], "spectrum-step0-color-model.activation.png"),
])
def test_plot_each_kind(plain, full, tmp_path, args, name):
    out = invoke("plot", full if "hist" in args else plain, *args, "--out", tmp_path)
    assert out.exit_code == 0, out.output
    assert printed_paths(out) == [tmp_path / name]
    assert (tmp_path / name).read_bytes()[:8] == PNG


@pytest.mark.parametrize("fmt, magic", [("svg", b"<?xml"), ("pdf", b"%PDF")])
def test_plot_formats(plain, tmp_path, fmt, magic):
    out = invoke("plot", plain, "--kind", "ratio", "--format", fmt, "--out", tmp_path)
    assert out.exit_code == 0, out.output
    assert (tmp_path / f"ratio-init.{fmt}").read_bytes().startswith(magic)


def test_plot_one_run_folder(full):
    out = invoke("plot", full, "--kind", "heatmap")  # one run: no --run needed; into the run's own folder
    assert out.exit_code == 0, out.output
    assert printed_paths(out) == [full / "figures" / "heatmap-grad_norm.png"]


# --- a big sweep's figures: drawn by one process per CPU ---------------------------------------------
ENV = {**os.environ, "COLUMNS": "200", "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
PARALLEL = pytest.mark.skipif(sys.platform != "linux" or len(os.sched_getaffinity(0)) < 2,
                              reason="drawing processes are forked from the fork server: Linux, 2+ CPUs")


@pytest.fixture(scope="module")
def big(results) -> Path:
    """As many runs as it takes for drawing processes (one step each)."""
    return _sweep(results, "big", f"model.depth=range(1,{standard.PARALLEL_RUNS + 1})", "train.steps=1",
                  "train.eval_every=1", "model.width=4")


@PARALLEL
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
                print(type(e).__name__, pool.drawn, e)
    """
    done = subprocess.run([sys.executable, "-c", script, str(big), str(tmp_path / "counted")], capture_output=True,
                          text=True, env=ENV, timeout=300)
    assert done.returncode == 0, done.stderr
    counts, failed = done.stdout.splitlines()
    processes, drawn, n = map(int, counts.split())
    assert processes == len(os.sched_getaffinity(0)) - 1 and 1 <= drawn < n == len(alone)
    # a figure that fails in a drawing process fails here, with its own message
    assert failed.startswith(f"GradflowError {drawn} ") and "no_such_quantity" in failed, failed


@PARALLEL
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


@PARALLEL
@pytest.mark.parametrize("when", ["server", "figure"])
def test_ctrl_c_while_figures_are_drawn_in_several_processes_leaves_nothing_behind(big, tmp_path, when):
    """Ctrl-C reaches the whole process group: the fork server while it imports, or the drawing processes
    at work. Exit 130, no traceback from any of them, and no process of the group left a second later."""
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
    time.sleep(1)
    assert group_processes(proc.pid) == []


@pytest.mark.parametrize("args, message", [
    (["--kind", "nope"], "--kind 'nope' is not allowed; choices: standard, profile, heatmap, curves, ratio, grid, "
                         "hist, spectrum"),
    (["--kind", "profile", "--quantity", "nope"], "--quantity 'nope' is not in"),
    (["--kind", "profile", "--color", "model.nope"], "--color 'model.nope' is not a column"),
    (["--kind", "profile", "--facet", "data.dim"], "--facet 'data.dim' does not vary"),
    (["--kind", "grid", "--x", "nope", "--y", "model.depth"], "--x 'nope' is not a column"),
    (["--kind", "grid", "--x", "model.depth", "--y", "nope"], "--y 'nope' is not a column"),
    (["--kind", "grid", "--x", "model.depth", "--y", "model.activation", "--value", "nope"], "--value 'nope'"),
    (["--kind", "profile", "--step", "soon"], "--step 'soon' is not allowed; choices: a probed step number"),
    (["--kind", "profile", "--step", "99"], "--step 99 was not probed"),
    (["--kind", "heatmap"], "pass --run with one of"),
    (["--kind", "hist"], "no hist rows; run with probe=full"),
    (["--kind", "profile", "--x", "model.depth"], "--x does not apply to --kind profile (it applies to: grid)"),
    (["--format", "jpg"], "--format 'jpg' is not allowed; choices: png, pdf, svg"),
])
def test_plot_bad_options_are_one_red_line(plain, tmp_path, args, message):
    out = invoke("plot", plain, *args, "--out", tmp_path)
    assert out.exit_code == 1
    assert message in out.output and "Traceback" not in out.output
    assert len(out.output.strip().splitlines()) == 1 and out.output.startswith("error:")
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_plot_a_folder_without_runs(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    out = invoke("plot", empty)
    assert out.exit_code == 1 and "holds no runs" in out.output and len(out.output.strip().splitlines()) == 1


def test_a_diverged_run_crashes_no_kind(diverging, tmp_path):
    runs = gradflow.load(diverging, table="runs")
    bad = runs.loc[runs["status"] == "diverged", "run"].iloc[0]
    # (curves and grid with a diverged run: tests/test_plots.py, on a fabricated sweep)
    for args in (["--kind", "profile", "--step", "last"], ["--kind", "heatmap", "--run", bad],
                 ["--kind", "ratio", "--step", "last"], ["--kind", "hist", "--run", bad, "--step", "last"],
                 ["--kind", "spectrum", "--step", "last"]):
        out = invoke("plot", diverging, *args, "--out", tmp_path)
        assert out.exit_code == 0, (args, out.output)
    assert len(list(tmp_path.glob("*.png"))) == 5


# --- compare -------------------------------------------------------------------------------------
def test_compare_two_sweeps_matches_configs(plain, batchnorm, tmp_path):
    out = invoke("compare", plain, batchnorm, "--kind", "profile", "--step", "0", "--out", tmp_path)
    assert out.exit_code == 0, out.output
    (fig,) = tmp_path.iterdir()
    assert fig.name == "compare-profile-grad_norm-step0-plain-vs-batchnorm.png" and fig.read_bytes()[:8] == PNG
    text = out.output
    assert "plain" in text and "batchnorm" in text and "batchnorm vs plain" in text
    flat = " ".join(text.split())
    assert "matched on model.depth, model.activation" in flat
    assert "sources differ in norm.name (none | batchnorm)" in flat
    assert text.count("grad ratio first/last, init") == 4  # one block per config: depth 2, 4 x relu, tanh
    assert text.count("no run") == 2  # batchnorm has no relu runs
    assert "final test acc" in text


def test_compare_table_numbers_are_per_source_medians(plain, batchnorm):
    runs = pd.concat([gradflow.load(plain, table="runs").assign(source="plain"),
                      gradflow.load(batchnorm, table="runs").assign(source="batchnorm")], ignore_index=True)
    assert match_keys(runs, ["plain", "batchnorm"]) == ["model.depth", "model.activation"]
    table = comparison(runs, ["plain", "batchnorm"], ["model.depth"])  # plain's activations pooled: median of two
    assert list(table["cell"]) == [(2,), (2,), (4,), (4,)] and list(table["runs"]) == [2, 1, 2, 1]
    expected = runs.groupby(["source", "model.depth"])["grad_ratio.init"].median()
    for _, row in table.iterrows():
        assert row["grad_ratio.init"] == pytest.approx(expected[(row["source"], row["cell"][0])])
    out = invoke("compare", plain, batchnorm, "--by", "model.depth", "--kind", "ratio", "--out", plain.parent / "cmp")
    assert out.exit_code == 0 and "medians over the runs in a cell" in " ".join(out.output.split())
    assert out.output.count("grad ratio first/last, init") == 2


def test_compare_two_runs_with_the_same_job_name(batchnorm, diverging, tmp_path):
    job = "model.depth=2"  # in both sweeps; the one at lr = 1e6 diverged
    assert source_labels([batchnorm / job, diverging / job]) == [f"batchnorm/{job}", f"diverging/{job}"]
    out = invoke("compare", batchnorm / job, diverging / job, "--kind", "curves", "--out", tmp_path)
    assert out.exit_code == 0, out.output
    flat = " ".join(out.output.split())
    assert f"diverging/{job}" in flat and "no swept key in common" in flat and "diverged" in flat
    assert len(list(tmp_path.glob("compare-curves-*.png"))) == 1


@pytest.mark.parametrize("args, message", [
    (["--kind", "heatmap"], "--kind 'heatmap' is not allowed; choices: profile, curves, ratio, spectrum"),
    (["--by", "model.nope"], "--by 'model.nope' is not a config key"),
    (["--kind", "spectrum"], "batchnorm has no jacobian rows; run with probe=full"),
    (["--kind", "ratio", "--panels"], "--panels does not apply to --kind ratio"),
])
def test_compare_bad_options(plain, batchnorm, tmp_path, args, message):
    out = invoke("compare", plain, batchnorm, *args, "--out", tmp_path)
    assert out.exit_code == 1 and message in out.output and "Traceback" not in out.output
    assert len(out.output.strip().splitlines()) == 1
    out = invoke("compare", plain, "--out", tmp_path)
    assert out.exit_code == 1 and "two or more folders" in out.output
