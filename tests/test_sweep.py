"""`gradflow sweep` and `gradflow ls`: real Hydra multirun grids, launchers, failures, resume."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import gradflow
from gradflow import config as config_mod, datasets, store
from gradflow import sweep as sweep_mod
from gradflow import workers
from gradflow.errors import GradflowError
from tests.commands import terminal_width, undeletable
from tests.test_datasets import make_mnist

SMALL = ["data=gaussian", "data.n_train=256", "data.n_test=64", "data.dim=8", "model.width=8", "train.steps=6",
         "train.batch_size=32", "train.eval_every=3"]
GRID = ["model.depth=2,3", "model.activation=tanh,relu"]
NAMES = {"model.activation=relu,model.depth=2", "model.activation=relu,model.depth=3",
         "model.activation=tanh,model.depth=2", "model.activation=tanh,model.depth=3"}


def _sweep(cli, results, *args):
    return cli("sweep", *SMALL, *args, f"results={results}")


@pytest.fixture(scope="module")
def basic_grid(tmp_path_factory):
    """SMALL's GRID swept with the basic launcher, as the `cli` fixture runs it: (the study's folder, what the
    sweep printed). Made once per module for the tests that only read it."""
    from typer.testing import CliRunner

    from gradflow.cli import app

    results = tmp_path_factory.mktemp("basic-grid") / "results"
    out = CliRunner().invoke(app, ["sweep", *SMALL, *GRID, f"results={results}", "--name", "grid"],
                             catch_exceptions=False)
    assert out.exit_code == 0, out.output
    return results / "grid", out.output


def test_basic_sweep_layout_ls_and_load(cli, basic_grid):
    root, output = basic_grid
    runs = {p.name for p in root.iterdir() if p.is_dir()}
    assert runs == NAMES
    spec = (root / "sweep.yaml").read_text()
    assert "model.depth=2,3" in spec and "swept" in spec
    for name in NAMES:
        assert json.loads((root / name / "run.json").read_text())["status"] == "ok"
    assert "ok: 4" in output and "failed: 0" in output
    # piped (a log file): a line per run as it ended, each run once, not the bar's last frame
    ended = [line for line in output.splitlines() if re.match(r"[1-4]/4 ok \([\d.e-]+ s\) ", line)]
    assert [line.split()[0] for line in ended] == ["1/4", "2/4", "3/4", "4/4"], output
    assert {line.rsplit(" ", 1)[-1] for line in ended} == NAMES and "━" not in output

    layers = gradflow.load(root)
    assert {"model.depth", "model.activation", "run", "step", "layer", "quantity", "value"} <= set(layers.columns)
    assert layers["run"].nunique() == 4
    # depth d -> d + 1 probe points (the head included), each run's own rows only
    per_run = layers.groupby("run").agg(layers=("layer", "nunique"), depth=("model.depth", "first"))
    assert (per_run["layers"] == per_run["depth"] + 1).all()
    assert not layers.duplicated(["run", "step", "layer", "quantity"]).any()
    metrics = gradflow.load(root, table="metrics")
    assert metrics["run"].nunique() == 4

    ls = cli("ls", str(root))
    assert ls.exit_code == 0
    flat = " ".join(ls.output.split())
    assert "activation" in flat and "ratio init" in flat and flat.count(" ok ") >= 4
    filtered = cli("ls", str(root), "--where", "model.activation=tanh", "--sort", "final.test_acc", "--csv")
    rows = pd.read_csv(__import__("io").StringIO(filtered.output))
    assert len(rows) == 2 and set(rows["model.activation"]) == {"tanh"}
    assert list(rows["final.test_acc"]) == sorted(rows["final.test_acc"])
    # a key by the short name the table shows it under, a number however it is written, a typo named
    for where in (["activation=tanh", "depth=3.0"], ["model.activation=tanh", "model.depth=3"]):
        short = cli("ls", str(root), *(a for w in where for a in ("--where", w)), "--csv")
        rows = pd.read_csv(__import__("io").StringIO(short.output))
        assert list(zip(rows["model.activation"], rows["model.depth"])) == [("tanh", 3)], short.output
    by_short = cli("ls", str(root), "--sort", "-test_acc", "--csv")  # a result by its last part
    accs = list(pd.read_csv(__import__("io").StringIO(by_short.output))["final.test_acc"])
    assert len(accs) == 4 and accs == sorted(accs, reverse=True)
    typo = cli("ls", str(root), "--where", "model.activaton=tanh")
    assert typo.exit_code == 1 and "'model.activaton' is not a column (did you mean model.activation" in typo.output
    as_json = json.loads(cli("ls", str(root), "--json").output)
    assert len(as_json) == 4 and {"run", "status", "grad_ratio.init"} <= set(as_json[0])


def _needs_plugin(name: str):
    """The cluster extra's launchers (CI installs it): without it, `gradflow sweep` says to install it."""
    missing = importlib.util.find_spec(f"hydra_plugins.hydra_{name}_launcher") is None
    return pytest.mark.skipif(missing, reason=f"needs the {name} launcher: pip install 'gradflow[cluster]'")


def test_a_piped_sweeps_line_names_its_run_whole_on_one_line():
    # cut to 80 columns ("init=kaiming_normal,model.activation=tanh,…,optim.lr=0.01") the line hid a swept value
    # (a run's folder name is its swept values alone), and two runs' lines read alike; before that, shortened
    # mid-item, it wrapped onto two lines
    from gradflow.cli.console import console
    from gradflow.cli.sweep import _EndedLines

    lines = _EndedLines()
    with terminal_width(80), console.capture() as cap:
        for depth in (2, 3):
            job = f"init=kaiming_normal,model.activation=tanh,model.depth={depth},model.skip=none,optim.lr=0.01"
            lines.show({job: {"status": "ok", "wall_time": 0.0249}}, 16)
    assert cap.get().splitlines() == [
        f"{k}/16 ok (0.0249 s) init=kaiming_normal,model.activation=tanh,model.depth={d},model.skip=none,optim.lr=0.01"
        for k, d in ((1, 2), (2, 3))], cap.get()


@pytest.mark.slow
@pytest.mark.parametrize("launcher, grid, names", [
    pytest.param(["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], GRID, NAMES, marks=_needs_plugin("joblib")),
    # submitit starts a Python (and imports torch) for every job: two jobs, in two processes at once, show the
    # same as four at twice the cost (a 2x2 grid: 20 CPU-s, this: 13)
    pytest.param(["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5"], ["model.depth=2,3"],
                 {"model.depth=2", "model.depth=3"}, marks=_needs_plugin("submitit"))])
def test_parallel_launchers_give_the_same_runs_and_numbers(cli, results, launcher, grid, names, request):
    if grid == GRID:  # (the basic launcher's sweep of it: the module's, made once)
        basic = request.getfixturevalue("basic_grid")[0]
    else:
        assert _sweep(cli, results, *grid, "--name", "basic").exit_code == 0
        basic = results / "basic"
    out = _sweep(cli, results, *grid, *launcher, "--name", "other")
    assert out.exit_code == 0, out.output
    a = gradflow.load(basic).sort_values(["run", "step", "layer", "quantity"]).reset_index(drop=True)
    b = gradflow.load(results / "other").sort_values(["run", "step", "layer", "quantity"]).reset_index(drop=True)
    assert set(a["run"]) == set(b["run"]) == names
    np.testing.assert_allclose(a["value"], b["value"], rtol=1e-4, atol=1e-7)


@pytest.mark.skipif(sys.platform != "linux", reason="the fork server is used on Linux only")
@pytest.mark.parametrize("commands, started", [([["sweep", "--bogus"]], True), ([["reproduce", "--bogus"]], True),
                                               # (neither starts one: one process asks both, in turn)
                                               ([["run", "--bogus"], ["sweep", "--help"]], False)])
def test_a_joblib_sweep_on_the_command_line_starts_its_fork_server_before_anything_else(commands, started):
    """`gradflow sweep|reproduce ... hydra/launcher=joblib`: the entry point starts the server joblib's
    workers are forked from before the command line's own imports (here the command then fails on an
    unknown option, before any planning); no other command, nor --help, starts one."""
    code = ("import sys\n"
            "from multiprocessing import forkserver\n"
            "from gradflow.__main__ import main\n"
            f"for args in {commands!r}:\n"
            "    sys.argv = ['gradflow', *args, 'hydra/launcher=joblib']\n"
            "    try:\n"
            "        main()\n"
            "    except SystemExit:\n"
            "        print('started:', forkserver._forkserver._forkserver_pid is not None)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    said = [line.split()[1] for line in out.stdout.splitlines() if line.startswith("started: ")]
    assert said == [str(started)] * len(commands), out.stderr


def test_a_script_without_a_main_guard_launches_a_joblib_sweep(tmp_path):
    """gradflow's Python API in a plain script: joblib's workers are loky's own, which do not import
    the script again (a fork server's would, and would run its sweep again in every worker)."""
    script = tmp_path / "study.py"
    script.write_text("from gradflow import sweep\n"
                      f"p = sweep.plan({[*SMALL, 'hydra/launcher=joblib', 'hydra.launcher.n_jobs=2']!r} + "
                      f"['results={tmp_path}'], 'plain')\n"
                      "sweep.launch(p)\n")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    (run,) = (tmp_path / "plain").glob("*/run.json")
    assert json.loads(run.read_text())["status"] == "ok"


def _parent(pid: int) -> int:
    """A live process's parent pid (Linux)."""
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


@pytest.mark.slow
def test_kept_joblib_workers_serve_the_next_sweep_with_its_own_config(results, monkeypatch):
    """A reproduction's arms share one worker pool: the second sweep's runs come from the first's
    workers (on Linux forked from the fork server, with torch already loaded), each run lands in its
    own study with its own values, and the pool is gone at the end."""
    from joblib.externals.loky import reusable_executor

    joblib = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", f"results={results}"]
    pools = []  # the pool's worker pids after each sweep
    workers.allow_fork_server()  # as the command line does (pytest's main module is safe to import again)
    monkeypatch.setenv("OMP_NUM_THREADS", str(os.cpu_count()))  # torch's own count in the server: every core
    with workers.kept():
        for name, width, threads in (("first", 8, 1), ("second", 12, 0)):
            sweep_mod.launch(sweep_mod.plan([*SMALL, "model.depth=2,3", f"model.width={width}", f"threads={threads}",
                                             *joblib], name))
            executor = reusable_executor._executor
            pools.append(set() if executor is None or executor._flags.shutdown else set(executor._processes))
        if sys.platform == "linux":  # forked from the fork server, which had imported torch
            servers = {_parent(pid) for pid in pools[-1]}
            assert len(servers) == 1 and servers != {os.getpid()}
            assert "forkserver" in Path(f"/proc/{min(servers)}/cmdline").read_text()
            assert "libtorch_cpu" in Path(f"/proc/{min(servers)}/maps").read_text()
    assert reusable_executor._executor is None or reusable_executor._executor._flags.shutdown
    recs = {name: [json.loads(p.read_text()) for p in sorted((results / name).glob("*/run.json"))]
            for name in ("first", "second")}
    assert [len(r) for r in recs.values()] == [2, 2]
    assert {r["config"]["model.width"] for r in recs["first"]} == {8}
    assert {r["config"]["model.width"] for r in recs["second"]} == {12}
    assert {r["threads"] for r in recs["first"]} == {1}
    if sys.platform == "linux":  # threads=0 in a forked worker: its share of the cores, as loky's would get
        assert {r["threads"] for r in recs["second"]} == {max(1, os.cpu_count() // 2)}
    assert pools[0] and pools[1] == pools[0]  # the same workers, alive from one sweep to the next
    assert {r["pid"] for r in recs["first"]} | {r["pid"] for r in recs["second"]} <= pools[0]
    assert all(r["status"] == "ok" for rs in recs.values() for r in rs)


def test_failed_and_diverged_points_do_not_stop_the_sweep(cli, results, tmp_path):
    good = tmp_path / "mnist-ok"
    make_mnist(good, gz=True, n_train=64, n_test=16)
    # a copy whose training images were cut short: its files are there (the sweep checks that before it
    # starts), so its runs fail as they read them
    cut = tmp_path / "mnist-cut"
    make_mnist(cut, gz=False, n_train=64, n_test=16)
    images = cut / datasets.MNIST_FILES["x_train"]
    images.write_bytes(images.read_bytes()[:-100])
    out = cli("sweep", "data=mnist", f"data.root={good},{cut}", "optim.lr=0.01,1e6", "optim.momentum=0",
              "model.activation=relu", "model.depth=3", "model.width=16", "train.steps=30", "train.batch_size=16",
              "train.check_every=1", f"results={results}", "--name", "mixed")
    assert out.exit_code == 1  # a failed run makes the sweep exit 1 ...
    runs = gradflow.load(results / "mixed", table="runs")
    assert len(runs) == 4  # ... but every point ran
    by = {(root.endswith("mnist-ok"), lr > 1): json.loads((Path(path) / "run.json").read_text())
          for root, lr, path in zip(runs["data.root"], runs["optim.lr"], runs["path"])}
    assert by[(True, False)]["status"] == "ok"
    assert by[(True, True)]["status"] == "diverged"
    for lr_big in (False, True):
        rec = by[(False, lr_big)]
        assert rec["status"] == "failed" and f"{images} is truncated" in rec["error"]
    assert "failed: 2" in out.output and "diverged: 1" in out.output


def test_missing_data_files_stop_the_sweep_before_it_replaces_finished_runs(cli, results, tmp_path):
    # a mistyped data.root failed every run, and each replaced the finished run of its point
    good, typo = tmp_path / "mnist", tmp_path / "mnsit"
    make_mnist(good, gz=True, n_train=64, n_test=16)
    args = ["data=mnist", "model.depth=2,3", "model.width=8", "train.steps=3", "train.batch_size=16", "threads=1",
            f"results={results}", "--name", "digits"]
    assert cli("sweep", f"data.root={good}", *args).exit_code == 0
    study = results / "digits"
    before = {p: p.read_bytes() for p in study.rglob("*") if p.is_file() and p.name != ".gradflow.lock"}
    out = cli("sweep", f"data.root={typo}", *args)
    assert out.exit_code == 1 and out.stderr.strip().startswith(f"error: data.root={typo} has no MNIST files; put")
    assert "Traceback" not in out.output
    after = {p: p.read_bytes() for p in study.rglob("*") if p.is_file() and p.name != ".gradflow.lock"}
    assert after == before  # the finished runs and the sweep's spec as they were
    assert {json.loads((study / f"model.depth={d}" / "run.json").read_text())["status"] for d in (2, 3)} == {"ok"}
    # a single run and a reproduction check too, before anything is written
    out = cli("run", "data=cifar10", f"data.root={typo}", f"results={results}", "name=one")
    assert out.exit_code == 1 and f"data.root={typo} has no CIFAR-10 files" in out.stderr
    assert not (results / "one").exists()
    # he2016's paper scale reads CIFAR-10
    out = cli("reproduce", "he2016", "--scale", "paper", f"data.root={typo}", f"results={results}")
    assert out.exit_code == 1 and f"data.root={typo} has no CIFAR-10 files" in out.stderr
    assert not (results / "reproduce").exists()  # nor the folders made to hold it


def test_a_reproduction_plans_every_arm_before_the_first_runs(results, tmp_path, monkeypatch):
    # an arm that reads missing files stopped the reproduction only once the arms before it had trained
    from gradflow import reproduce as rep

    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "two.yaml").write_text(f"""
paper: "two arms, the second reading files that are not there"
summary: "-"
runtime: "seconds"
base: [model.width=8, model.depth=2, train.steps=2, train.batch_size=16, threads=1]
arms:
  first: [data=gaussian, data.n_train=64, data.n_test=32, data.dim=8]
  second: [data=mnist, "data.root={tmp_path / 'nowhere'}"]
claims: []
""")
    monkeypatch.setattr(rep, "SPEC_DIR", specs)
    with pytest.raises(GradflowError, match="has no MNIST files"):
        rep.run("two", "default", [f"results={results}"])
    assert not list(results.rglob("run.json"))  # the first arm did not run


@pytest.mark.slow
def test_interrupted_sweep_resumes_without_duplicates(results):
    # (two keys, four points: killed once the first has finished and the next is training, which is redone
    # with the two not started on resume)
    args = [sys.executable, "-m", "gradflow", "sweep", *SMALL, "train.steps=300", "model.depth=2,3", "seed=0,1",
            f"results={results}", "--name", "resume"]
    root = results / "resume"
    env = {**os.environ, "COLUMNS": "200"}
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    deadline = time.time() + 120
    finished: list[Path] = []
    running: list[Path] = []
    while time.time() < deadline and not (finished and running):
        time.sleep(0.05)
        records = {p.parent: store.read_run(p.parent) or {} for p in root.glob("*/run.json")}
        finished = [p for p, r in records.items() if r.get("status") == "ok"]
        running = [p for p, r in records.items() if r.get("status") == "running"]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert finished and running, "no run finished and another started before the deadline"
    before = {p: (p / "layers.parquet").stat().st_mtime_ns for p in finished}
    assert len(list(root.glob("*/run.json"))) < 4  # it really was interrupted

    again = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "skipped" in again.stdout
    for p, mtime in before.items():
        assert (p / "layers.parquet").stat().st_mtime_ns == mtime  # finished runs were not touched
    layers = gradflow.load(root)
    assert layers["run"].nunique() == 4
    assert not layers.duplicated(["run", "step", "layer", "quantity"]).any()
    statuses = {json.loads(p.read_text())["status"] for p in root.glob("*/run.json")}
    assert statuses == {"ok"}
    assert all(store.read_run(p)["steps_done"] == 300 for p in running)  # the killed run, redone whole


def test_the_recorded_command_remakes_the_same_sweep(cli, results, tmp_path):
    """sweep.yaml's command (shown on the report page as how the study was made) names the study and the
    points file and quotes what a shell would split: run as written, it resumes the same study."""
    import shlex

    import yaml

    lr = "optim.lr=${gf.div:0.5,model.depth}"
    assert _sweep(cli, results, "model.depth=2,3", lr, "--name", "named").exit_code == 0
    command = yaml.safe_load((results / "named" / "sweep.yaml").read_text())["command"]
    assert command.startswith("gradflow sweep ") and command.endswith(" --name named") and f"'{lr}'" in command
    args = shlex.split(command)
    assert args[:2] == ["gradflow", "sweep"] and lr in args
    again = cli(*args[1:])
    assert "2 already finished, skipped" in again.output, again.output
    # the counts under the table say that the runs they count were reused (it read "ok: 2 ... skipped: 2")
    counts = next(line for line in again.output.splitlines() if line.startswith("ok: "))
    assert counts.startswith("ok: 2  diverged: 0  failed: 0") and counts.endswith("(2 of these finished before, "
                                                                                   "skipped)"), counts

    points = tmp_path / "points.yaml"
    points.write_text("- {model.depth: 2, model.width: 4}\n- {model.depth: 3, model.width: 6}\n")
    # (SMALL sets model.width too: which one holds is no guess gradflow makes)
    out = cli("sweep", *SMALL, f"results={results}", "--points", str(points), "--name", "pts")
    assert out.exit_code == 1 and out.stderr.strip() == (
        "error: model.width is set both on the command line (model.width=8) and in the points file; "
        "set it in one place"), out.output
    small = [o for o in SMALL if not o.startswith("model.width=")]
    out = cli("sweep", *small, f"results={results}", "--points", str(points), "--name", "pts")
    assert out.exit_code == 0, out.output
    command = yaml.safe_load((results / "pts" / "sweep.yaml").read_text())["command"]
    assert shlex.split(command)[-4:] == ["--name", "pts", "--points", str(points)]
    # an exponent without a decimal point, which YAML 1.1 (PyYAML) reads as a string: a number, as on the command
    # line (its run's folder was optim.lr=_1e-3_)
    points.write_text("- {model.depth: 2, optim.lr: 1e-3}\n- {model.depth: 3, optim.lr: 5E-2}\n")
    out = cli("sweep", *small, f"results={results}", "--points", str(points), "--name", "exp")
    assert out.exit_code == 0, out.output
    runs = {job.name: store.read_run(job)["config"]["optim.lr"] for job in store.find_runs(results / "exp")}
    assert runs == {"model.depth=2,optim.lr=0.001": 0.001, "model.depth=3,optim.lr=0.05": 0.05}, runs


def test_the_command_that_finishes_a_points_sweep_runs_from_any_folder(cli, tmp_path, monkeypatch):
    # ls said `gradflow sweep ... --name pts --points pd.yaml`, which from another folder found no file (or
    # another's) and started a study under that folder's results/
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pd.yaml").write_text("- {model.depth: 2}\n- {model.depth: 3}\n")
    assert cli("sweep", *SMALL, "--points", "pd.yaml", "--name", "pts").exit_code == 0
    root = tmp_path / "results" / "pts"
    shutil.rmtree(root / "model.depth=3")
    command = store.resume_command(root, store.sweep_spec(root))
    assert command.endswith(f"results={root.parent} --name pts --points {tmp_path / 'pd.yaml'}"), command


def test_an_unnamed_sweep_does_not_take_over_an_unrelated_one(cli, results):
    """Two unnamed sweeps of unrelated grids would share results/sweep, the first's runs turned stale (gone
    from ls, plot, compare and report): the second is refused, naming the first and both ways on; with
    --name sweep it goes ahead, and an unnamed sweep that keeps some of the points is a change of the grid."""
    assert _sweep(cli, results, "model.depth=2,3").exit_code == 0
    out = _sweep(cli, results, "model.width=4,6")
    assert out.exit_code == 1, out.output
    err = " ".join(out.stderr.split())
    assert err.startswith(f"error: {results / 'sweep'} holds 2 runs of another sweep (") and "model.depth=2,3" in err
    assert err.endswith("give this sweep a name (--name NAME), or --name sweep to make it the sweep there (those "
                        "runs kept, as stale)"), err
    assert sorted(p.name for p in (results / "sweep").iterdir() if (p / "run.json").exists()) == [
        "model.depth=2", "model.depth=3"]
    out = _sweep(cli, results, "model.width=4,6", "--name", "sweep")
    assert out.exit_code == 0 and "2 runs in" in out.output and "stale" in out.output, out.output
    out = _sweep(cli, results, "model.width=4,6,10")  # two of its points are there: a grid grown, not a takeover
    assert out.exit_code == 0 and "2 already finished, skipped" in out.output, out.output


def test_no_sweep_takes_over_a_folder_holding_runs_of_a_users_own_loop(cli, results):
    # a Recorder's run beside a `gradflow run` of one of the sweep's points: the sweep took the folder, listed the
    # loop's run stale, and `clean --stale` offered to delete it (its own status hidden behind "stale")
    import torch
    from torch import nn

    model = nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 2))
    with gradflow.Recorder(model, results / "mix" / "mine", every=1) as rec:
        with rec.step(0):
            model(torch.randn(8, 4)).pow(2).mean().backward()
    assert cli("run", *SMALL, "model.depth=2", f"results={results}", "name=mix").exit_code == 0
    out = _sweep(cli, results, "model.depth=2,3", "--name", "mix")
    assert out.exit_code == 1 and " ".join(out.stderr.split()) == (
        f"error: {results / 'mix'} holds 1 run of your own training loop (gradflow.Recorder: mine); a sweep there "
        "would list it as stale and `gradflow clean --stale` would delete it: give this sweep another --name"), \
        out.output
    assert not (results / "mix" / "sweep.yaml").exists() and store.read_run(results / "mix" / "mine")["status"] == "ok"
    # a folder of the loop's runs alone: the same (it said they were gradflow run's)
    shutil.rmtree(next(p for p in (results / "mix").iterdir() if p.name != "mine" and p.is_dir()))
    out = _sweep(cli, results, "model.depth=2,3", "--name", "mix")
    assert out.exit_code == 1 and "holds 1 run of your own training loop (gradflow.Recorder: mine)" in \
        " ".join(out.stderr.split()), out.output


def test_a_named_sweep_takes_over_no_folder_of_single_runs_nor_of_studies(cli, results):
    # `--name run` made gradflow run's folder a sweep's: its runs listed stale (clean --stale offered to delete
    # them all) and every later `gradflow run` refused; `--name reproduce` listed the he2016 arms' runs as its
    # own, and the reproductions were then refused as inside it
    assert cli("run", *SMALL, "model.depth=5", f"results={results}", "name=single").exit_code == 0
    out = _sweep(cli, results, "model.depth=2,3", "--name", "single")
    assert out.exit_code == 1 and " ".join(out.stderr.split()) == (
        f"error: {results / 'single'} holds 1 single run (of gradflow run, no sweep's), none of them a point of this "
        "sweep: made the sweep's folder, it would list them as stale and refuse gradflow run name=single; give "
        "this sweep another --name"), out.output
    assert not (results / "single" / "sweep.yaml").exists()
    # unnamed, into gradflow run's folders by name=sweep: the same refusal (it advised `--name sweep`, refused)
    assert cli("run", *SMALL, "model.depth=5", f"results={results}", "name=sweep").exit_code == 0
    out = _sweep(cli, results, "model.depth=2,3")
    assert out.exit_code == 1 and " ".join(out.stderr.split()).endswith(
        "refuse gradflow run name=sweep; give this sweep a name (--name NAME)"), out.output
    assert cli("run", *SMALL, "model.depth=6", f"results={results}", "name=single").exit_code == 0
    # a single run that is a point of the sweep: the sweep goes ahead there, that run one of its own
    out = _sweep(cli, results, "model.depth=5,6", "--name", "single")
    assert out.exit_code == 0 and "2 finished under another name, to be moved (not trained again)" in out.output
    # a folder of studies, as results/reproduce is
    assert _sweep(cli, results, "model.depth=2,3", "--name", "studies/a").exit_code == 0
    out = _sweep(cli, results, "model.depth=2,3", "--name", "studies")
    assert out.exit_code == 1 and "is a folder of studies (" in " ".join(out.stderr.split()), out.output
    out = cli("run", *SMALL, f"results={results}", "name=studies")
    assert out.exit_code == 1 and f"is a folder of studies ({results / 'studies' / 'a'} is one)" in " ".join(
        out.stderr.split()), out.output
    assert sorted(p.name for p in (results / "studies").iterdir()) == ["a"]


def test_a_sweep_takes_over_no_folder_of_single_runs_where_one_of_them_is_a_point(cli, results):
    # one single run that matched a point let the sweep take over gradflow run's folder: that run moved, the
    # user's other single runs listed stale (`clean --stale` deleted them), every later `gradflow run` refused
    for depth in (2, 5):
        assert cli("run", *SMALL, f"model.depth={depth}", f"results={results}").exit_code == 0
    folder = results / "run"
    before = sorted(p.name for p in folder.iterdir())
    out = _sweep(cli, results, "model.depth=2,3", "--name", "run")
    assert out.exit_code == 1 and " ".join(out.stderr.split()) == (
        f"error: {folder} holds 2 single runs (of gradflow run, no sweep's), 1 of them no point of this sweep: made "
        "the sweep's folder, it would list that one as stale and refuse gradflow run name=run; give this sweep "
        "another --name"), out.output
    assert sorted(p.name for p in folder.iterdir()) == before and not (folder / store.SWEEP_FILE).exists()
    assert cli("run", *SMALL, "model.depth=3", f"results={results}").exit_code == 0  # still gradflow run's
    # unnamed, into gradflow run's folder by name=sweep: the same, asking for a name
    for depth in (2, 5):
        assert cli("run", *SMALL, f"model.depth={depth}", f"results={results}", "name=sweep").exit_code == 0
    out = _sweep(cli, results, "model.depth=2,3")
    assert out.exit_code == 1 and " ".join(out.stderr.split()).endswith(
        "refuse gradflow run name=sweep; give this sweep a name (--name NAME)"), out.output


def test_force_reruns_and_changed_settings_rerun(cli, results):
    assert _sweep(cli, results, "model.depth=2,3", "--name", "f").exit_code == 0
    again = _sweep(cli, results, "model.depth=2,3", "--name", "f")
    assert "2 already finished, skipped" in again.output
    forced = _sweep(cli, results, "model.depth=2,3", "--name", "f", "--force")
    assert "skipped" not in forced.output and "ok: 2" in forced.output, forced.output
    # (said: the finished runs went without a word)
    assert f"--force: 2 runs of this sweep in {results / 'f'} are deleted and trained again" in " ".join(
        forced.output.split()), forced.output
    changed = cli("sweep", *SMALL, "train.steps=7", "model.depth=2,3", f"results={results}", "--name", "f")
    text = " ".join(changed.output.split())  # a different config is not the same run: both replaced
    assert "skipped" not in text and "2 finished runs in" in text and "will be replaced" in text, text
    assert [store.read_run(results / "f" / f"model.depth={d}")["steps"] for d in (2, 3)] == [7, 7]


def test_force_over_a_run_that_cannot_be_deleted_is_one_line_and_deletes_none(cli, results):
    # a point's run folder that could not be deleted (a shared folder; an immutable file) was a PermissionError's
    # traceback from shutil, the runs of the points before it deleted already: each is checked before any goes
    assert _sweep(cli, results, "model.depth=2,3", "--name", "f").exit_code == 0
    root = results / "f"
    before = {d: (root / f"model.depth={d}" / store.RUN_FILE).stat().st_mtime_ns for d in (2, 3)}
    with undeletable(root / "model.depth=3" / store.RUN_FILE):
        out = _sweep(cli, results, "model.depth=2,3", "--name", "f", "--force")
        assert out.exit_code == 1 and "Traceback" not in out.output, out.output
        text = " ".join(out.stderr.split())
        assert text.startswith(f"error: cannot remove {root / 'model.depth=3'}") and text.endswith(
            "; --force deletes each run of the sweep to train it again, and nothing was deleted: make it removable "
            "(or move it away), or rerun without --force") and len(out.stderr.splitlines()) == 1, out.output
        assert {d: (root / f"model.depth={d}" / store.RUN_FILE).stat().st_mtime_ns for d in (2, 3)} == before
    assert _sweep(cli, results, "model.depth=2,3", "--name", "f", "--force").exit_code == 0


def test_a_rerun_of_the_same_sweep_keeps_its_spec_file_as_it_was(cli, results):
    """sweep.yaml's `created` is when the sweep's points last changed (`clean` reads it as when a run became
    stale): a rerun of the same sweep, all skipped, leaves the file alone; one that changes a point rewrites it."""
    assert _sweep(cli, results, "model.depth=2", "--name", "k").exit_code == 0
    spec = results / "k" / store.SWEEP_FILE
    old = "\n".join("created: '2000-01-01T00:00:00+00:00'" if line.startswith("created:") else line
                    for line in spec.read_text().splitlines()) + "\n"
    spec.write_text(old)
    again = _sweep(cli, results, "model.depth=2", "--name", "k")
    assert "1 already finished, skipped" in again.output
    assert spec.read_text() == old
    # resumed with another launcher: the runs are the same sweep's, the file too (it was rewritten)
    again = _sweep(cli, results, "model.depth=2", "--name", "k", "hydra/launcher=joblib", "hydra.launcher.n_jobs=1")
    assert again.exit_code == 0 and spec.read_text() == old, again.output
    assert _sweep(cli, results, "model.depth=2,3", "--name", "k").exit_code == 0
    assert "2000-01-01" not in spec.read_text()


def test_the_replacement_notice_names_what_changed(cli, results, monkeypatch):
    """A rerun of a finished sweep with other settings names the keys that differ, old → new (it said only
    how many runs would be replaced), each change whole on a line of at most 80 columns, and the first
    three of more changes with how many others."""
    from gradflow.cli.console import console

    monkeypatch.setattr(console, "width", 80)
    assert _sweep(cli, results, "model.depth=2,3", "--name", "c").exit_code == 0
    out = cli("sweep", *SMALL, "train.steps=5", "model.depth=2,3", f"results={results}", "--name", "c")
    text = " ".join(out.output.split())
    assert out.exit_code == 0 and ("2 finished runs in" in text and "were made with other settings and will be "
                                   "replaced (train.steps 6 → 5), each kept until") in text, out.output
    assert max(map(len, out.output.splitlines()[:3])) <= 80, out.output
    out = cli("sweep", *SMALL, "train.steps=4", "train.batch_size=16", "data.dim=6", "seed=2", "model.depth=2,3",
              f"results={results}", "--name", "c")
    text = " ".join(out.output.split())
    lines = out.output.splitlines()
    assert out.exit_code == 0 and "will be replaced (" in text and " and 1 more), each kept" in text, out.output
    said = text.split("will be replaced (")[1].split(" and 1 more)")[0].split(", ")
    assert len(said) == 3 and set(said) <= {"data.dim 8 → 6", "train.steps 5 → 4", "train.batch_size 32 → 16",
                                            "seed 0 → 2"}, said
    assert all(len(line) <= 80 for line in lines[:4]) and not any(line.endswith("→") for line in lines), out.output


def test_the_replacement_notice_breaks_a_change_too_long_for_a_line_at_its_spaces(cli, results, monkeypatch):
    # a change is kept whole on a line where it fits one; one of long values, kept whole, ran to 108 columns
    from gradflow.cli.console import console

    monkeypatch.setattr(console, "width", 80)
    old, new = (f"baseline_with_a_rather_long_descriptive_label_v{i}" for i in (1, 2))
    assert _sweep(cli, results, "model.depth=2,3", f"+tag={old}", "--name", "t").exit_code == 0
    out = cli("sweep", *SMALL, "model.depth=2,3", f"+tag={new}", "train.steps=5", f"results={results}",
              "--name", "t")
    text = " ".join(out.output.split())
    assert out.exit_code == 0 and f"will be replaced (train.steps 6 → 5, tag {old} → {new}), each" in text, out.output
    lines = out.output.splitlines()
    start = next(i for i, line in enumerate(lines) if "made with other settings" in line)
    end = next(i for i, line in enumerate(lines) if "replacement has finished" in line)
    notice = lines[start:end + 1]
    assert len(notice) > 2 and max(map(len, notice)) <= 80, out.output
    assert any("train.steps 6 → 5," in line for line in notice), out.output  # (the short change still whole)


def test_the_replacement_notice_says_a_key_changed_otherwise_in_some_runs():
    from gradflow.cli.sweep import _changes

    jobs = [sweep_mod.Job([], name, replaces=True, changes=changes) for name, changes in (
        ("a", [("train.steps", 6, 5), ("seed", 0, 1)]), ("b", [("train.steps", 7, 5), ("seed", 0, 1)]),
        ("c", [("train.steps", 8, 5)]))]
    # (seed: two of the three runs change it, and it was said as though all did)
    assert _changes(jobs) == [("train.steps", 6, "5 in 1 of 3 runs, other values in 2"),
                              ("seed", 0, "1 in 2 of 3 runs")]
    assert _changes(jobs[:2]) == [("train.steps", 6, "5 in 1 of 2 runs, other values in 1"), ("seed", 0, 1)]


def test_a_narrowed_or_widened_sweep_moves_its_finished_runs_to_their_new_names(cli, results):
    """Narrowed to one value, a point's folder is `default` (no key is swept); widened again it is
    model.depth=3: the finished run moves each time (its files the same, not trained again), its record
    naming its folder; with --force each point is redone in its own folder."""
    assert _sweep(cli, results, "model.depth=2,3", "--name", "n").exit_code == 0
    study = results / "n"
    before = json.loads((study / "model.depth=3" / "run.json").read_text())
    stamp = lambda folder: ((study / folder / "layers.parquet").stat().st_ino,  # noqa: E731
                            (study / folder / "layers.parquet").stat().st_mtime_ns)  # (moved: both kept)
    inode = stamp("model.depth=3")
    out = _sweep(cli, results, "model.depth=3", "--name", "n")
    text = " ".join(out.output.split())
    # (the header's count: the run is not in its folder until it is moved, said below it once it is)
    assert out.exit_code == 0 and "already finished" not in text, out.output
    assert "; 1 finished under another name, to be moved (not trained again)" in text, out.output
    assert ("1 finished run was under another name (the sweep before named its points otherwise): "
            "model.depth=3 -> default, moved, not trained again") in text, text
    assert "1 run in" in text and "(stale)" in text, text  # depth 2 alone
    assert not (study / "model.depth=3").exists()
    assert json.loads((study / "default" / "run.json").read_text()) == {**before, "job": "default"}
    assert stamp("default") == inode
    assert {r["run"]: r["status"] for r in store.runs(study)} == {"default": "ok", "model.depth=2": "stale"}

    out = _sweep(cli, results, "model.depth=2,3,4", "--name", "n")
    text = " ".join(out.output.split())
    assert "; 1 already finished, skipped; 1 finished under another name, to be moved" in text, text
    assert "default -> model.depth=3" in text, text
    assert "stale" not in text and not (study / "default").exists()
    assert json.loads((study / "model.depth=3" / "run.json").read_text()) == before
    assert stamp("model.depth=3") == inode

    # narrowed to another value (`default` now holds depth 4), then back: the run of depth 3 moves over
    # it (depth 4's point was to be replaced anyway), not trained again
    assert _sweep(cli, results, "model.depth=4", "--name", "n").exit_code == 0
    out = _sweep(cli, results, "model.depth=3", "--name", "n")
    text = " ".join(out.output.split())
    assert "model.depth=3 -> default, moved, not trained again, over 1 run of other settings there" in text, text
    assert "will be replaced" not in text and stamp("default") == inode
    assert json.loads((study / "default" / "run.json").read_text()) == {**before, "job": "default"}

    out = _sweep(cli, results, "model.depth=3", "--name", "n", "--force")
    assert "->" not in out.output and "moved" not in out.output
    assert stamp("default")[1] > inode[1]  # redone in its own folder (a file written since: the inode may be reused)


def test_a_move_is_said_once_done_and_a_move_not_done_is_not_said(cli, results):
    """The moved line was printed at planning, before the move: a study another command held, or a move that
    failed, still read `moved, not trained again` above the error, the run left under its old name."""
    assert _sweep(cli, results, "model.depth=2,3", "--name", "h").exit_code == 0
    study = results / "h"
    with store.lock(study, "another sweep"):
        out = _sweep(cli, results, "model.depth=3", "--name", "h")
    text = " ".join(out.output.split())
    # the plan may say a run is to be moved; the line that says it was moved comes only from the move itself
    assert out.exit_code == 1 and "is being written by" in text and "moved, not trained" not in text, text
    assert (study / "model.depth=3" / "run.json").exists() and not (study / "default").exists()
    # a move that fails (a folder of the user's put where the run goes, after planning): none is said moved
    p = sweep_mod.plan([*SMALL, "model.depth=3", f"results={results}"], "h")
    assert [j.moved_from for j in p.jobs] == ["model.depth=3"]
    (study / "default").mkdir()
    (study / "default" / "notes.txt").write_text("mine\n")
    said = []
    with pytest.raises(GradflowError, match="is in the way"):
        sweep_mod.launch(p, on_moved=said.extend)
    assert said == [] and (study / "model.depth=3" / "run.json").exists()
    # moved: said after the move, with the run in its new folder
    (study / "default" / "notes.txt").unlink()
    p = sweep_mod.plan([*SMALL, "model.depth=3", f"results={results}"], "h")
    sweep_mod.launch(p, on_moved=lambda jobs: said.append([(j.moved_from, (study / j.name / "run.json").exists())
                                                           for j in jobs]))
    assert said == [[("model.depth=3", True)]] and not (study / "model.depth=3").exists()


def test_a_failed_run_under_another_name_is_not_moved_but_trained_again(cli, results):
    # narrowed to depth 3, whose run had failed: it was announced "finished under another name, to be moved
    # (not trained again)" and counted finished, then trained again all the same
    assert _sweep(cli, results, "model.depth=2,3", "--name", "f").exit_code == 0
    record = results / "f" / "model.depth=3" / "run.json"
    store.write_json(record, {**json.loads(record.read_text()), "status": "failed", "error": "RuntimeError: boom"})
    p = sweep_mod.plan([*SMALL, "model.depth=3", f"results={results}"], "f")
    assert [(j.moved_from, j.finished) for j in p.jobs] == [(None, False)]
    out = _sweep(cli, results, "model.depth=3", "--name", "f")
    assert out.exit_code == 0 and "moved" not in out.output and "finished before" not in out.output, out.output
    assert store.read_run(results / "f" / "default")["status"] == "ok"


def test_several_runs_moved_are_named_one_and_counted(cli, results):
    assert _sweep(cli, results, "model.depth=2,3", "model.activation=tanh,relu", "--name", "m").exit_code == 0
    out = _sweep(cli, results, "model.depth=3", "model.activation=tanh,relu", "--name", "m")
    text = " ".join(out.output.split())
    assert ("2 finished runs were under another name (the sweep before named its points otherwise): "
            "model.activation=tanh,model.depth=3 -> model.activation=tanh and 1 more, moved, not trained again") \
        in text, text
    assert "already finished" not in text and "; 2 finished under another name, to be moved" in text, text
    assert sorted(p.name for p in (results / "m").glob("model.activation=*")) \
        == ["model.activation=relu", "model.activation=relu,model.depth=2", "model.activation=tanh",
            "model.activation=tanh,model.depth=2"]


@pytest.mark.parametrize("args, message", [
    (["model.nope=1,2"], "unknown key 'model.nope'"),
    (["model.depth=2,0"], "sweep point"),
    # each value is valid, one point's pair is not (planning checks each point's values together)
    (["model.depth=1,3", "model.skip=none,residual"], "model.skip=residual needs model.depth >= 2, not 1"),
    (["data.n_train=200,4096", "train.batch_size=64,256"], "train.batch_size=256 must be <="),
    (["model.name=cnn,mlp"], "model.name='cnn' names another kind of model than the one composed: choose it "
                             "with model=cnn"),
    (["hydra/sweeper=optuna", "model.depth=2,3"], "hydra/sweeper=optuna is refused"),
    (["hydra.sweeper.max_batch_size=1", "model.depth=2,3"], "hydra.sweeper.max_batch_size=1 is refused"),
    (["hydra/launcher=ray"], "hydra/launcher='ray' is not known; choices: basic, joblib"),
    (["model.depth=2,3", "--name", "../outside"], "name='../outside'"),
    (["optim=adam", "optim.betas=0.9,0.99"], "optim.betas is a list: write optim.betas=[0.9,0.99]"),
])
def test_sweep_bad_input_fails_before_any_job(cli, results, args, message):
    out = _sweep(cli, results, *args)
    assert out.exit_code == 1 and message in out.output and "Traceback" not in out.output
    assert not any(results.rglob("run.json"))


def test_missing_launcher_plugin_names_the_extra(monkeypatch):
    monkeypatch.setitem(sweep_mod.LAUNCHER_PLUGINS, "joblib", ("hydra_plugins.not_installed_here", "cluster"))
    with pytest.raises(GradflowError, match=r"pip install 'gradflow\[cluster\]'"):
        sweep_mod.check_launcher("joblib")


def test_time_machinery_times_each_step_against_its_target(tmp_path):
    """`gradflow bench --sweep` on a tiny grid: every step measured, the sweep really ran and resumed."""
    from gradflow import benchsweep

    seen = []
    timings = benchsweep.time_machinery(tmp_path, depths=2, seeds=1, views={"ls": seen.append})
    assert [t.step for t in timings] == ["planning", "per job", "resume", "ls"]
    assert all(t.value > 0 and t.target == benchsweep.TARGETS[t.step] for t in timings)
    root = tmp_path / "bench-sweep"
    assert seen == [root]
    assert sorted(p.name for p in root.iterdir() if (p / "run.json").exists()) == ["model.depth=1,seed=0",
                                                                                    "model.depth=2,seed=0"]


def test_time_launchers_times_the_machinery_here_and_the_launchers_from_the_command_line(tmp_path):
    from gradflow import benchsweep, store

    grid = [*SMALL, "model.depth=2,3", "threads=1"]
    machinery, speedup = benchsweep.time_launchers(tmp_path, grid, parallel=["hydra/launcher=basic"], rounds=1)
    studies = ("bench-basic", "bench-basic-0", "bench-parallel-0")  # in this process, then two commands
    runs = {name: {r["run"]: r["record"] for r in store.runs(tmp_path / name)} for name in studies}
    assert all(set(study) == {"model.depth=2", "model.depth=3"} for study in runs.values())
    assert all(r["status"] == "ok" for study in runs.values() for r in study.values())
    assert runs["bench-basic-0"]["model.depth=2"]["pid"] != os.getpid()  # a fresh process
    assert machinery.unit == "of training" and machinery.value > 0  # a sweep costs more than its training
    # a share of the training time (not of the launch's wall time): training plus the share of it is the
    # launch's wall time, which holds each run's own wall time (3x the training of these runs)
    basic = [r["record"] for r in store.runs(tmp_path / "bench-basic")]
    train = sum(r["train_time"] for r in basic)
    assert (1 + machinery.value) * train >= sum(r["wall_time"] for r in basic) - 1e-3, (machinery.value, basic)
    assert not machinery.met or machinery.value <= 0.10
    # the same launcher both ways, each a fresh process: a ratio of two timings (its size is the machine's
    # business: a busy one gave 0.45), one round, so its spread is itself
    assert speedup.unit == benchsweep.SPEEDUP and speedup.value > 0 and speedup.spread == (speedup.value,) * 2
    assert speedup.met == (speedup.value >= 1.6)
    # without a parallel launcher (its plugin missing): the basic launcher's share only (here of one point:
    # the grid's runs are checked above)
    (alone,) = benchsweep.time_launchers(tmp_path / "basic-only", [*SMALL, "model.depth=2", "threads=1"], parallel=None)
    assert alone.step == "machinery" and alone.value > 0
    assert not (tmp_path / "basic-only" / "bench-parallel-0").exists()


def test_the_per_job_cost_is_the_launch_less_the_runs_own_time_and_a_speedup_is_above_1_when_faster():
    from gradflow import benchsweep

    assert benchsweep.per_job(launch_s=5.0, runs_s=3.0, n=4) == 0.5  # (not 5 s / 4: the runs' own 3 s left out)
    assert benchsweep.speedup(basic_s=6.0, parallel_s=2.0) == 3.0  # the parallel launcher took a third of the time
    assert benchsweep.speedup(basic_s=2.0, parallel_s=4.0) == 0.5  # ... or twice as long: no speed-up


def test_a_failing_command_line_sweep_says_what_failed(tmp_path):
    from gradflow import benchsweep

    with pytest.raises(GradflowError, match=r"gradflow sweep model.depth=0 .* failed \(exit 1\): "
                       r"error: model.depth=0 must be >= 1"):
        benchsweep._command_line(["model.depth=0", f"results={tmp_path}"])


@pytest.mark.parametrize("fixed", [[], ["init=kaiming_normal", "+experiment=depth-study"],
                                   ["optim.lr=${gf.div:0.5,model.depth}", "train.steps=3"]])
def test_job_configs_from_a_copy_equal_hydras_own_compose(tmp_path, fixed):
    """The sweep's config loader composes a job that differs from an earlier one only in values as a copy
    with those values applied: every key, the hydra node included, must equal Hydra's full compose."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.utils import create_config_search_path
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    from gradflow.config import CONF_DIR

    search_path = create_config_search_path(str(CONF_DIR))
    hydra_overrides = ["hydra.job.config.override_dirname.exclude_keys=[name,results]",
                       "hydra.sweep.subdir=${hydra:runtime.choices.init}"]  # read before Hydra's config is set
    master = ConfigLoaderImpl(search_path).load_configuration("config", [*hydra_overrides, f"results={tmp_path}"],
                                                              RunMode.MULTIRUN)
    jobs = [[*fixed, f"model.depth={d}", f"model.activation={a}", f"seed={s}", "optim.milestones=[10,20]", f"results={tmp_path}"]
            for d in (2, 5) for a in ("tanh", "relu") for s in (0, 1)]
    jobs += [[*fixed, "data=gaussian", "model.depth=3", "model.activation=tanh", "seed=0", f"results={tmp_path}"]]
    ours = sweep_mod.JobConfigLoader(search_path)
    try:
        for job in jobs:
            expected = ConfigLoaderImpl(search_path).load_sweep_config(master, job)
            got = ours.load_sweep_config(master, job)
            assert OmegaConf.to_container(got) == OmegaConf.to_container(expected), job
            assert got.hydra.job.override_dirname == expected.hydra.job.override_dirname
            assert f"model.depth={got.model.depth}" in job and f"seed={got.seed}" in job
        assert len(sweep_mod._composed) == 2  # one compose per structure; the others were copies
    finally:
        sweep_mod._composed.clear()
        config_mod.forget_parsed_overrides()


def test_the_loader_composes_shared_structures_once_and_takes_them_to_its_workers(tmp_path, monkeypatch):
    """Before launching, the sweep's process composes the first job of each structure that several jobs
    share (not one a single job has: each point of a --points sweep); the loader pickled to a worker
    takes those along, and a job composed there from them equals Hydra's own compose."""
    import pickle

    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.utils import create_config_search_path
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    from gradflow.config import CONF_DIR

    search_path = create_config_search_path(str(CONF_DIR))
    master = ConfigLoaderImpl(search_path).load_configuration(
        "config", ["hydra.job.config.override_dirname.exclude_keys=[name,results]", f"results={tmp_path}"],
        RunMode.MULTIRUN)
    batch = [[f"init={init}", f"seed={s}", f"results={tmp_path}"] for init in ("xavier_normal", "orthogonal")
             for s in (0, 1, 2)] + [["init=kaiming_normal", "seed=0", f"results={tmp_path}"]]
    ours = sweep_mod.JobConfigLoader(search_path)
    try:
        ours.warm(master, batch)
        assert sorted(key[3] for key in sweep_mod._composed) == [("init=orthogonal",), ("init=xavier_normal",)]
        shipped = pickle.dumps(ours)
        composed = dict(sweep_mod._composed)
        sweep_mod._composed.clear()  # a worker's: empty until a loader arrives
        worker = pickle.loads(shipped)
        assert sweep_mod._composed == composed
        for job in (batch[4], batch[6]):  # a copy of a shipped structure, and one of its own
            expected = ConfigLoaderImpl(search_path).load_sweep_config(master, job)
            assert OmegaConf.to_container(worker.load_sweep_config(master, job)) == OmegaConf.to_container(expected)
        assert len(sweep_mod._composed) == 3
        # at most SHIPPED structures, the sweep's first: composed here, and taken along with every job
        monkeypatch.setattr(sweep_mod.JobConfigLoader, "SHIPPED", 1)
        sweep_mod._composed.clear()
        ours.warm(master, batch)
        assert [key[3] for key in sweep_mod._composed] == [("init=xavier_normal",)]
        ours.load_sweep_config(master, batch[3])  # (a later job's, composed as it runs)
        shipped = pickle.dumps(ours)
        sweep_mod._composed.clear()
        pickle.loads(shipped)
        assert [key[3] for key in sweep_mod._composed] == [("init=xavier_normal",)]
    finally:
        sweep_mod._composed.clear()
        config_mod.forget_parsed_overrides()


@pytest.fixture
def reading_experiment():
    """An experiment whose value reads a key a sweep sets (`model.width: ${model.depth}`), as a user's
    experiments/*.yaml may; in Hydra's ConfigStore (where gradflow puts experiments/) for one test."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(group="experiment", name="width-is-depth", package="_global_",
             node={"model": {"width": "${model.depth}"}, "optim": {"lr": "${gf.div:0.5,model.depth}"}})
    yield "+experiment=width-is-depth"
    del cs.repo["experiment"]["width-is-depth.yaml"]


GRID_MARK = "GRID"  # where the grid goes among a case's fixed overrides (their order matters to Hydra)


@pytest.mark.parametrize("fixed", [
    [GRID_MARK], ["init=kaiming_normal", "+experiment=depth-study", GRID_MARK], ["reading", GRID_MARK],
    # a value, then a dict that merges into its node (Hydra keeps train.steps=7), then a list's item
    ["train.steps=7", "train={batch_size:16}", "optim=adam", "optim.betas.0=0.5", GRID_MARK]])
def test_planned_configs_equal_a_compose_of_each_point(results, reading_experiment, fixed):
    """Planning applies each distinct value to one composed config instead of composing every point: each
    point's config (and so its hash, which resume compares with the finished run's) must equal a whole
    compose of that point, also where a value of the config reads a swept key."""
    from gradflow.choices import settings

    grid = ["model.depth=2,5", "model.activation=tanh,relu", "seed=0,1", "train.eval_every=2"]
    overrides = [o for f in fixed for o in (grid if f == GRID_MARK else [reading_experiment if f == "reading" else f])]
    p = sweep_mod.plan([*overrides, "data=gaussian", f"results={results}"], "planned")
    assert len(p.jobs) == 8
    for job in p.jobs:
        flat = settings(store.flatten(config_mod.compose([*job.overrides, "name=planned"],
                                                                     sweep_point=True)))
        assert job.config_hash == store.config_hash(flat), job.name
        if "reading" in fixed:
            assert flat["model.width"] == flat["model.depth"] and flat["optim.lr"] == 0.5 / flat["model.depth"]
    if "train.steps=7" in fixed:
        assert (flat["train.steps"], flat["train.batch_size"], flat["optim.betas"]) == (7, 16, "[0.5, 0.999]")


def test_a_value_applied_for_one_point_is_restored_as_written(reading_experiment):
    """Planning applies a point's values to a shared composed config and restores them: a key written
    as ${model.depth} goes back to reading model.depth (restored as its resolved value, 20, the next
    point kept width 20 whatever its depth)."""
    configs = sweep_mod._Configs("restored")
    assert configs.flat([reading_experiment, "model.width=5", "model.depth=3"])["model.width"] == 5
    assert configs.flat([reading_experiment, "model.depth=7"])["model.width"] == 7


def test_a_key_given_again_with_one_value_is_not_swept(results):
    """seed=0,1 then seed=2: Hydra takes the last, so seed is a fixed setting, not in the runs' names."""
    p = sweep_mod.plan(["model.depth=2,3", "seed=0,1", "seed=2", "data=gaussian", f"results={results}"], "again")
    assert p.swept == ["model.depth"] and [j.name for j in p.jobs] == ["model.depth=2", "model.depth=3"]
    p = sweep_mod.plan(["seed=2", "seed=0,1", "data=gaussian", f"results={results}"], "again2")
    assert p.swept == ["seed"] and [j.name for j in p.jobs] == ["seed=0", "seed=1"]


def test_a_sweep_of_values_composes_the_config_twice_in_all(results, monkeypatch):
    """Hydra composes the whole config for the multirun and, unless gradflow stops it, once more only
    to read `hydra.mode` (~0.2 s each, more than the machinery budget of a short job); the jobs of a
    grid of plain values are copies of the first one's compose. So three points cost two composes:
    the multirun's and the first job's."""
    composes = []
    compose = sweep_mod.JobConfigLoader.load_configuration

    def counted(self, *args, **kwargs):
        composes.append(args[0] if args else kwargs.get("config_name"))
        return compose(self, *args, **kwargs)

    monkeypatch.setattr(sweep_mod.JobConfigLoader, "load_configuration", counted)
    p = sweep_mod.plan([*SMALL, "train.steps=1", "model.depth=1,2,3", f"results={results}"], "composes")
    sweep_mod.launch(p)
    assert sorted(r.name for r in p.root.iterdir() if (r / "run.json").exists()) == \
        ["model.depth=1", "model.depth=2", "model.depth=3"]
    assert len(composes) == 2, composes


def test_a_sweep_over_list_values_names_each_run_by_its_whole_list(cli, results):
    # optim.betas=[0.9,0.99] was split at its comma: folders named 0.99_,optim.betas=_0.9 that no sweep
    # recognised as its runs (all listed stale, ok: 0), and a rerun ran them again
    args = ["optim=adam", "optim.betas=[0.9,0.99],[0.9,0.999]", "--name", "betas"]
    assert _sweep(cli, results, *args).exit_code == 0
    assert sorted(p.name for p in (results / "betas").iterdir() if p.is_dir()) == [
        "optim.betas=_0.9,0.999_", "optim.betas=_0.9,0.99_"]
    assert {r["status"] for r in store.runs(results / "betas")} == {"ok"}
    again = _sweep(cli, results, *args)
    assert "2 already finished, skipped" in " ".join(again.output.split())
    # ls sorts the lists element by element (as text, [0.9, 0.999] came first)
    listed = json.loads(cli("ls", str(results / "betas"), "--json").output)
    assert [r["optim.betas"] for r in listed] == ["[0.9, 0.99]", "[0.9, 0.999]"]


def test_two_points_whose_names_make_one_folder_are_refused_before_any_job(tmp_path):
    """a/b and a:b both make the folder name tag=a_b (characters a path cannot hold become _): the second
    point would overwrite the first's run, or be skipped as it. (A bug this catches: plan no longer refuses two points
    that share a folder.)"""
    with pytest.raises(GradflowError, match="two sweep points share the folder '\\+tag=a_b'"):
        sweep_mod.plan(["+tag=a/b,a:b", "data=gaussian", f"results={tmp_path / 'results'}"], "clash")
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").rglob("run.json"))


def test_the_watcher_counts_a_run_as_ended_only_once_this_sweep_wrote_it(tmp_path):
    """A point redone after an earlier attempt (failed, or interrupted) has that attempt's run.json in its
    folder until the new run writes its own: the progress line must not count it as ended before it ran.
    (A bug this catches: Watcher.ended taking any ended run.json, however old.)"""
    root = tmp_path / "results" / "s"
    folder = root / "model.depth=2"
    folder.mkdir(parents=True)
    (folder / store.RUN_FILE).write_text(json.dumps({"status": "failed", "error": "an earlier attempt"}))
    an_hour_ago = time.time() - 3600
    os.utime(folder / store.RUN_FILE, (an_hour_ago, an_hour_ago))
    plan = sweep_mod.Plan(root=root, overrides=[], swept=["model.depth"], launcher="basic",
                          jobs=[sweep_mod.Job(["model.depth=2"], "model.depth=2")])
    watcher = sweep_mod.Watcher(plan, lambda ended: None)
    assert watcher.ended() == {} and watcher.count() == 0
    store.write_text(folder / store.RUN_FILE, json.dumps({"status": "ok"}))  # this sweep's run ends
    assert list(watcher.ended()) == ["model.depth=2"]


def test_the_watcher_reads_a_run_json_again_only_once_it_changed(tmp_path):
    # every look (each half second) read and parsed every ended run's run.json: 48 ms a look at 1000 runs
    root = tmp_path / "results" / "s"
    names = [f"model.depth={d}" for d in range(2, 6)]
    plan = sweep_mod.Plan(root=root, overrides=[], swept=["model.depth"], launcher="basic",
                          jobs=[sweep_mod.Job([n], n) for n in names])
    read = []

    class Counted(sweep_mod.Watcher):
        def _ended(self, j, path):
            read.append(j.name)
            return super()._ended(j, path)

    watcher = Counted(plan, lambda ended: None)
    for n in names[:3]:
        (root / n).mkdir(parents=True)
        store.write_text(root / n / store.RUN_FILE, json.dumps({"status": "running"}))
    store.write_text(root / names[0] / store.RUN_FILE, json.dumps({"status": "ok"}))
    for _ in range(5):
        assert list(watcher.ended()) == [names[0]]
    assert sorted(read) == sorted(names[:3]), read  # (each once: none changed between the looks)
    store.write_text(root / names[1] / store.RUN_FILE, json.dumps({"status": "failed", "error": "x"}))
    assert list(watcher.ended()) == names[:2] and read.count(names[1]) == 2


def test_a_sweep_named_by_option_and_by_a_later_name_override_is_refused(tmp_path):
    """`--name a name=a name=b`: the last name= counts, and it is not --name's: refused as named twice, not
    written to a. The same name given both ways is one name. (A bug this catches: the check reading the first name=.)"""
    results = f"results={tmp_path / 'results'}"
    with pytest.raises(GradflowError, match="the sweep is named twice, --name a and name=b"):
        sweep_mod.plan(["model.depth=2,3", "name=a", "name=b", "data=gaussian", results], "a")
    p = sweep_mod.plan(["model.depth=2,3", "name=b", "name=a", "data=gaussian", results], "a")
    assert p.root.name == "a"


def test_the_watcher_counts_a_point_ended_only_by_a_run_of_its_own_settings(tmp_path):
    # the run a point replaces, finished within the second before the sweep began, was counted as the point's
    # end (its log line `1/2 ok` with the old run's time) while the replacement trained
    root = tmp_path / "s"
    old = {"status": "ok", "config_hash": "old", "wall_time": 0.04, "config": {}}
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        (root / name / store.RUN_FILE).write_text(json.dumps(old))
    failed = {**old, store.REPLACEMENT: {"config_hash": "new", "status": "failed", "error": "boom"}}
    (root / "b" / store.RUN_FILE).write_text(json.dumps(failed))
    plan = sweep_mod.Plan(root, [], ["x"], "basic", jobs=[sweep_mod.Job([], n, "new", replaces=True) for n in "ab"])
    watcher = sweep_mod.Watcher(plan, lambda ended: None)
    assert watcher.ended() == {"b": {"status": "failed", "kept": True}}  # (a: still the old run, being replaced)
    (root / "a" / store.RUN_FILE).write_text(json.dumps({**old, "config_hash": "new", "wall_time": 1.5}))
    assert watcher.ended()["a"]["wall_time"] == 1.5


def test_planning_a_finished_sweep_again_loads_no_torch(basic_grid):
    # resuming a finished sweep checked every point's device, importing torch (1.2 s of a 1000-run resume's 3.8 s)
    # for points none of which would run
    root, _ = basic_grid
    code = ("import sys; from gradflow import sweep; "
            f"p = sweep.plan({[*SMALL, *GRID, f'results={root.parent}']!r}, {root.name!r}); "
            "print(len(p.to_run), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["0", "False"], out.stdout + out.stderr[-2000:]


@pytest.mark.parametrize("override", ["optim.lr=1e-400", "optim.lr=1.5e-400", "optim.lr=1.0E-400",
                                      "optim.lr=0.001,1e-400", "optim.betas=[0.9,1e-400]"])
def test_a_number_below_the_smallest_float_is_refused(override):
    # read as 0: a run at lr 0 learns nothing, without a word (1e400, inf, was refused already)
    with pytest.raises(GradflowError, match=r"(?i)e-400 is below the smallest float \(about 5e-324\) and reads as 0"):
        sweep_mod.check_overrides([override], "sweep")


@pytest.mark.parametrize("override", ["+tag='1e-400'", "data.root=/tmp/x/1e-400", "+tag=v1e-400", "optim.lr=0",
                                      "optim.lr=0e-5", "optim.lr=1e-300"])
def test_a_text_or_a_path_that_reads_like_a_tiny_number_is_no_number(override):
    sweep_mod.check_overrides([override], "sweep")  # (no error)


@pytest.mark.parametrize("value", ["1e-400", "1.0e-400", "-1e-400"])  # (the second a float to PyYAML: 0.0)
def test_a_points_files_number_below_the_smallest_float_is_refused(tmp_path, value):
    points = tmp_path / "points.yaml"
    points.write_text(f"- {{optim.lr: {value}}}\n")
    with pytest.raises(GradflowError, match=f"--points {points}: optim.lr={value} is below the smallest float"):
        sweep_mod.read_points(points)
    points.write_text("- {optim.lr: 1e-3}\n- {optim.lr: 0e5}\n")  # (numbers, one of them 0 as written)
    assert sweep_mod.read_points(points) == [{"optim.lr": 0.001}, {"optim.lr": 0.0}]


def test_a_run_whose_recorded_hash_an_earlier_version_took_is_not_trained_again(cli, tmp_path):
    # a finished run's config_hash is taken as the version that ran it hashed its settings (data.scale=2 hashed
    # "2", now its number, "2.0"): resumed, the sweep replaced it, retraining a run of the same settings
    results = tmp_path / "results"
    args = ["sweep", *SMALL, "data.scale=2", "model.depth=2,3", f"results={results}", "--name", "s"]
    assert cli(*args).exit_code == 0
    job = results / "s" / "model.depth=2"
    rec = json.loads((job / store.RUN_FILE).read_text())
    assert rec["config"]["data.scale"] == "2"
    store.write_json(job / store.RUN_FILE, {**rec, "config_hash": "0" * 16})  # (as an earlier version hashed it)
    out = cli(*args)
    assert out.exit_code == 0 and "2 already finished, skipped" in " ".join(out.output.split()), out.output
    assert json.loads((job / store.RUN_FILE).read_text())["started"] == rec["started"]  # (not trained again)


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
def test_force_checks_the_device_of_the_finished_runs_it_trains_again(cli, tmp_path):
    # the device check skips finished points (a resume trains none of them), but --force trains them all: it
    # deleted every run, then each failed on device=cuda
    results = tmp_path / "results"
    args = ["sweep", *SMALL, "model.depth=2,3", f"results={results}", "--name", "s"]
    assert cli(*args).exit_code == 0
    before = {p: p.stat().st_mtime_ns for p in (results / "s").glob("*/run.json")}
    out = cli(*args, "device=cuda", "--force")
    assert out.exit_code == 1 and "device='cuda' but CUDA is not available" in out.output, out.output
    assert {p: p.stat().st_mtime_ns for p in (results / "s").glob("*/run.json")} == before

