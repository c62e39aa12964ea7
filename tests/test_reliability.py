"""Results you can trust: writes and deletes stay inside the study, one writer per study, honest
statuses (incomplete, stale, interrupted), resume that never mixes sweeps, diverged finals."""

from __future__ import annotations

import json
import math
import os
import signal
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import gradflow
from gradflow import store, workers
from gradflow import sweep as sweep_mod
from gradflow.errors import GradflowError
from tests.conftest import ctrl_c_on_entering, group_processes

SMALL = ["data=gaussian", "data.n_train=128", "data.n_test=64", "data.dim=8", "model.width=8", "model.depth=2",
         "train.steps=3", "train.batch_size=32", "train.eval_every=3", "threads=1"]
ENV = {**os.environ, "COLUMNS": "200", "OMP_NUM_THREADS": "1"}


def _sweep(cli, results, *args, name="s"):
    return cli("sweep", *SMALL, *args, f"results={results}", "--name", name)


def _one_line_error(out, *needles):
    assert out.exit_code == 1, out.output
    err = out.stderr.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error:"), err
    assert "Traceback" not in out.output
    for n in needles:
        words = " ".join(err.split())
        assert n in words or n in words.replace("'", ""), (n, err)  # key=value also matches key='value'


def _statuses(path) -> dict[str, str]:
    return {r[store.RUN]: r[store.STATUS] for r in store.runs(path)}


def _group_left(pgid: int, within: float = 1.0) -> list[str]:
    """The live processes of group `pgid` `within` seconds from now, or as soon as there are none (an empty
    group stays empty: no process is left in it to start another)."""
    deadline = time.monotonic() + within
    while True:
        late = time.monotonic() >= deadline  # (read before `ps`: the last look starts `within` seconds on)
        left = group_processes(pgid)
        if not left or late:
            return left
        time.sleep(0.05)


# --- safety: writes and deletes stay inside <results>/<name>/ ----------------------------------------
HYDRA_OUTPUT_OVERRIDES = ["hydra.sweep.subdir=../../../victim", "hydra.sweep.dir=/tmp/elsewhere",
                          "hydra.run.dir=/tmp/x", "hydra.job.chdir=true", "hydra.output_subdir=.hydra",
                          "hydra.runtime.output_dir=/tmp/y", "hydra.searchpath=[file:///tmp]"]


@pytest.mark.parametrize("override", HYDRA_OUTPUT_OVERRIDES)
@pytest.mark.parametrize("command", ["sweep", "run"])
def test_hydra_output_overrides_are_refused(cli, results, tmp_path, override, command):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("mine")
    extra = ["model.depth=2,3"] if command == "sweep" else []
    out = cli(command, *SMALL, *extra, override, f"results={results}")
    _one_line_error(out, override.split("=")[0], "name=", "results=")
    assert (victim / "keep.txt").read_text() == "mine"
    assert not results.exists()


def test_a_folder_gradflow_did_not_make_is_never_deleted(cli, results, tmp_path):
    job = results / "s" / "model.depth=3"
    job.mkdir(parents=True)
    (job / "notes.txt").write_text("mine")
    out = _sweep(cli, results, "model.depth=2,3")
    _one_line_error(out, str(job), "not a gradflow run folder (it holds notes.txt, which gradflow did not write)")
    assert (job / "notes.txt").read_text() == "mine"
    assert not (results / "s" / "model.depth=2").exists()  # refused before any job ran
    with pytest.raises(GradflowError, match="not a gradflow run folder"):
        store.clear_run(job)
    assert (job / "notes.txt").exists()
    # the same for a run folder that is a symbolic link to someone else's folder
    other = tmp_path / "other"
    other.mkdir()
    (other / "run.json").write_text("{}")
    (results / "s" / "model.depth=2").symlink_to(other)
    with pytest.raises(GradflowError, match="not a gradflow run folder"):
        store.clear_run(results / "s" / "model.depth=2")
    assert (other / "run.json").exists()


def test_a_run_killed_while_it_wrote_its_first_file_is_redone(cli, results):
    """A run killed (SIGKILL) inside its first atomic write leaves its folder holding only the temporary
    copy of config.yaml, as gradflow.files makes it: that folder is gradflow's own, so resuming the sweep
    redoes the run (it once said the folder was "in the way"). A folder holding only a temporary copy of
    some other file stays someone else's."""
    import tempfile

    assert _sweep(cli, results, "model.depth=2,3").exit_code == 0
    job = results / "s" / "model.depth=3"
    shutil.rmtree(job)
    job.mkdir()
    os.close(tempfile.mkstemp(dir=job, prefix=".config.yaml.", suffix=".tmp")[0])
    assert store.is_run_folder(job)
    again = _sweep(cli, results, "model.depth=2,3")
    assert again.exit_code == 0, again.output
    assert store.read_run(job)["status"] == "ok" and not [p for p in job.iterdir() if p.name.endswith(".tmp")]

    foreign = results / "s" / "model.depth=4"
    foreign.mkdir()
    os.close(tempfile.mkstemp(dir=foreign, prefix=".notes.txt.", suffix=".tmp")[0])
    assert not store.is_run_folder(foreign)
    _one_line_error(_sweep(cli, results, "model.depth=3,4"), str(foreign), "not a gradflow run folder")


def test_a_run_plotted_or_reported_on_its_own_can_be_rerun_and_cleaned(cli, results):
    """`gradflow plot RUN` and `gradflow report RUN` write their figures and page into the run's folder; the
    run stays gradflow's own, so a rerun replaces it (figures of the old run included) and clean removes it.
    Anything else in it (even inside figures/) still keeps gradflow's hands off."""
    assert cli("run", *SMALL, f"results={results}", "name=one").exit_code == 0
    [job] = store.find_runs(results / "one")
    assert cli("plot", str(job), "--kind", "heatmap").exit_code == 0
    assert cli("report", str(job)).exit_code == 0
    assert (job / "report.html").exists() and list((job / "figures").glob("*.png"))
    again = cli("run", *SMALL, f"results={results}", "name=one")  # (the same run: done again)
    assert again.exit_code == 0, again.output
    assert store.read_run(job)["status"] == "ok" and not (job / "figures").exists()

    assert _sweep(cli, results, "model.depth=2,3,4,5").exit_code == 0
    root = results / "s"
    for depth in (4, 5):
        assert cli("plot", str(root / f"model.depth={depth}"), "--kind", "heatmap").exit_code == 0
    (root / "model.depth=5" / "figures" / "notes.txt").write_text("mine")  # not a figure: not ours
    assert _sweep(cli, results, "model.depth=2,3").exit_code == 0  # a shrunk grid: depth 4 and 5 are stale
    assert _statuses(root) == {"model.depth=2": "ok", "model.depth=3": "ok", "model.depth=4": "stale",
                               "model.depth=5": "stale"}
    out = cli("clean", str(root), "--stale", input="n\n")  # asked about depth 4 alone: depth 5 is said kept first
    assert out.exit_code == 1 and out.output.splitlines()[:3] == [
        "1 stale run kept: it holds files gradflow did not write (gradflow deletes only its own): model.depth=5",
        f"1 run to remove from {root}: 1 stale", "  model.depth=4 (stale)"], out.output
    out = cli("clean", str(root), "--stale", "--yes")
    assert out.exit_code == 0 and "removed 1 run\n" in out.output, out.output
    assert out.output.count("model.depth=5") == 1 and "did not write" in out.output
    assert not (root / "model.depth=4").exists()
    assert (root / "model.depth=5" / "figures" / "notes.txt").read_text() == "mine"
    out = cli("clean", str(root), "--stale")  # only the kept one left: nothing to ask
    assert out.exit_code == 0 and out.output.splitlines()[1:] == [
        f"nothing else to remove in {root}: no stale, incomplete or interrupted runs"], out.output


def test_symlinked_study_and_figures_folders_are_refused(cli, results, tmp_path):
    target = tmp_path / "target"
    target.mkdir()
    results.mkdir()
    (results / "linked").symlink_to(target)
    out = cli("run", *SMALL, f"results={results}", "name=linked")
    _one_line_error(out, "symbolic link", "results=")
    out = _sweep(cli, results, "model.depth=2,3", name="linked")
    _one_line_error(out, "symbolic link")
    assert list(target.iterdir()) == []
    assert cli("run", *SMALL, f"results={results}", "name=real").exit_code == 0
    (results / "real" / "figures").symlink_to(target)
    out = cli("plot", str(results / "real"))
    _one_line_error(out, "symbolic link")
    assert list(target.iterdir()) == []


def test_a_folder_outside_results_survives_every_command(cli, results, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "data.txt").write_text("precious")
    assert _sweep(cli, results, "model.depth=2,3", "seed=0,1").exit_code == 0
    assert _sweep(cli, results, "model.depth=2").exit_code == 0  # shrinks the grid: 3 runs stale
    for args in (["ls", results / "s"], ["plot", results / "s"], ["clean", results / "s", "--stale", "--yes"],
                 ["run", *SMALL, f"results={results}", "name=t"]):
        assert cli(*args).exit_code == 0
    assert [p.name for p in outside.iterdir()] == ["data.txt"] and (outside / "data.txt").read_text() == "precious"


# --- concurrency: one writer per study -------------------------------------------------------------------
def test_clean_refused_by_a_writer_says_to_wait_not_to_write_elsewhere(cli, results):
    # it said "or write elsewhere with name=<another name>", which clean has no way to do
    assert _sweep(cli, results, "model.depth=2,3").exit_code == 0
    assert _sweep(cli, results, "model.depth=2").exit_code == 0  # (depth 3 stale)
    with store.lock(results / "s", "gradflow sweep held-by-the-test"):
        out = cli("clean", results / "s", "--stale", "--yes")
        _one_line_error(out, "is being written by", "held-by-the-test", "wait for it to finish, then run the same "
                        "command again")
        assert "name=" not in out.stderr
    assert (results / "s" / "model.depth=3").is_dir()


def test_a_second_writer_fails_at_once_naming_the_holder(cli, results):
    study = results / "s"
    with store.lock(study, "gradflow sweep held-by-the-test"):
        start = time.perf_counter()
        out = _sweep(cli, results, "model.depth=2,3")
        _one_line_error(out, "is being written by", f"pid {os.getpid()}", "held-by-the-test", "name=")
        run = cli("run", *SMALL, f"results={results}", "name=s")
        _one_line_error(run, "is being written by")
        assert time.perf_counter() - start < 60
    assert not any(study.glob("*/run.json"))
    assert _sweep(cli, results, "model.depth=2,3").exit_code == 0  # released: the same sweep now runs


def test_a_long_holder_command_is_named_by_its_first_and_last_words(cli, results):
    # its shortened form once carried its own length note: "(gradflow run name=s train… results=r (98 characters))"
    study = results / "s"
    command = "gradflow run name=s model.depth=30 train.steps=3000 probe.points=5 seed=1 results=/tmp/r"
    with store.lock(study, command):
        run = cli("run", *SMALL, f"results={results}", "name=s")
    assert run.exit_code == 1, run.output
    (held,) = re.findall(r"\((gradflow .*)\); wait for it", run.output)
    assert "characters" not in run.output and " … " in held and len(held) <= 60, run.output
    assert held.startswith("gradflow run name=s ") and held.endswith(" results=/tmp/r"), held
    assert all(word in command.split() for word in held.replace(" … ", " ").split()), held  # whole words only


def test_a_writer_that_has_the_lock_but_has_not_yet_said_who_it_is_is_still_named(results):
    # the holder writes its pid just after taking the lock: a second writer arriving in between (two sweeps
    # started together) waits a moment for the name instead of saying "another process"
    from filelock import FileLock

    study = results / "s"
    study.mkdir(parents=True)
    held = FileLock(str(study / store.LOCK_FILE), timeout=0)
    held.acquire()
    try:
        say = threading.Timer(0.3, store.write_json, (study / store.HOLDER_FILE,
                                                        {"pid": 4242, "host": "node7", "command": "gradflow sweep x"}))
        say.start()
        with pytest.raises(GradflowError, match=r"is being written by pid 4242 on node7 \(gradflow sweep x\)"):
            with store.lock(study):
                pass
        say.join()
    finally:
        held.release()


def test_a_sweep_refused_by_another_process_says_nothing_of_the_runs_it_found(cli, results):
    # the sweep planned, said "1 run in results/s is not a point of this sweep (stale)" (and would have
    # said which runs it would replace) of another sweep's runs, then was refused by the lock: the error alone
    assert _sweep(cli, results, "model.depth=2,3").exit_code == 0
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from gradflow import store\n"
         "with store.lock(sys.argv[1], 'gradflow sweep held-elsewhere'):\n print('held', flush=True); time.sleep(60)",
         str(results / "s")], stdout=subprocess.PIPE, text=True, env=ENV)
    try:
        assert holder.stdout.readline().strip() == "held"
        out = _sweep(cli, results, "model.depth=2")
        _one_line_error(out, "is being written by", f"pid {holder.pid}", "held-elsewhere")
        assert "stale" not in out.output and "sweep " not in out.stdout, out.output
    finally:
        holder.kill()
        holder.wait()
    assert "stale" in _sweep(cli, results, "model.depth=2").output  # released: now it is this sweep's to say


def test_a_lock_on_a_file_its_last_holder_removed_is_no_lock(results):
    # the last holder of a new study's lock, having written nothing, removed the lock file as it left: a writer
    # that opened the file just before took a lock on the removed file, and a third, making a new file,
    # took another: two writers. The lock is now removed while still held, and a lock taken is checked to
    # be on the file at the path
    from filelock import FileLock

    study = results / "s"
    study.mkdir(parents=True)
    path = study / store.LOCK_FILE
    held = FileLock(str(path), timeout=0)
    held.acquire()
    try:
        assert store._locks_the_file(held, path)
        path.unlink()  # (its last holder's clean-up, as this one took it)
        assert not store._locks_the_file(held, path)
        path.touch()  # (a third writer's new file)
        assert not store._locks_the_file(held, path)
    finally:
        held.release()
    path.unlink()
    with store.lock(results / "new" / "study"):  # nothing written: no trace left, the lock file included
        assert (results / "new" / "study" / store.LOCK_FILE).exists()
    assert not (results / "new").exists()


def test_two_sweeps_into_one_name_one_fails_fast_the_other_completes(results):
    args = [sys.executable, "-m", "gradflow", "sweep", *SMALL, "train.steps=40", "model.depth=2,3,4,5",
            f"results={results}", "--name", "twice"]
    first = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    second = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    outs = [p.communicate(timeout=300) for p in (first, second)]
    codes = sorted((first.returncode, second.returncode))
    loser = outs[[first.returncode, second.returncode].index(1)] if 1 in codes else outs[1]
    if codes == [0, 0]:  # the first finished before the second even planned: then it resumed everything
        assert "4 already finished, skipped" in outs[0][0] + outs[1][0]
    else:
        assert codes == [0, 1], outs
        assert "is being written by pid" in loser[1] and "Traceback" not in loser[1]
    assert set(_statuses(results / "twice").values()) == {"ok"} and len(_statuses(results / "twice")) == 4


# a custom model whose process kills itself (SIGKILL, as the out-of-memory killer) at its second training forward
# pass where die=1; tag: a key to sweep beside it
DYING = ("import os, signal, torch\n"
         "class Net(torch.nn.Module):\n"
         "    def __init__(self, die=0, tag=0):\n"
         "        super().__init__()\n"
         "        self.l0, self.head, self.die, self.n = torch.nn.Linear(8, 8), torch.nn.Linear(8, 10), die, 0\n"
         "    def forward(self, x):\n"
         "        self.n += self.training\n"
         "        if self.die and self.n == 2:\n"
         "            os.kill(os.getpid(), signal.SIGKILL)\n"
         "        return self.head(torch.tanh(self.l0(x)))\n")


def test_a_joblib_worker_killed_in_a_run_fails_that_run_and_the_sweep_goes_on(results, tmp_path):
    # the out-of-memory killer (or a crash in native code) ending a worker mid-run ended the sweep in loky's sixty
    # lines of traceback, the healthy run in the other worker cut off too, and every resume ended the same way
    (tmp_path / "dying.py").write_text(DYING)
    args = [sys.executable, "-m", "gradflow", "sweep", *[o for o in SMALL if not o.startswith("model.")],
            "model=custom", "model.target=dying:Net", "+model.kwargs.die=0,1", "+model.kwargs.tag=0,1",
            "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", f"results={results}", "--name", "dies"]
    out = subprocess.run(args, capture_output=True, text=True, timeout=300, env={**ENV, "PYTHONPATH": str(tmp_path)},
                         cwd=tmp_path)
    assert out.returncode == 1 and "Traceback" not in out.stderr + out.stdout, out.stderr  # (1: runs failed)
    statuses = _statuses(results / "dies")
    assert statuses == {f"+model.kwargs.die={d},+model.kwargs.tag={t}": "failed" if d else "ok"
                        for d in (0, 1) for t in (0, 1)}, statuses
    for run in store.runs(results / "dies"):
        if run["status"] == "failed":
            assert run["record"]["error"].startswith("its worker process was killed (SIGKILL(-9)) as it ran: out of "
                                                     "memory, or a crash in native code"), run["record"]
    assert "its worker process was killed (SIGKILL(-9))" in " ".join(out.stdout.split()), out.stdout


def test_a_joblib_worker_killed_in_a_replacement_keeps_the_finished_run_and_the_sweep_goes_on(results, tmp_path):
    """A fixed setting changed, every point a replacement of its finished run, each replacement's worker killed:
    the runs in flight were looked for in the points' own folders (the replacements run in hidden ones), none
    was found, and the sweep stopped at the first death ("with no run in flight to put it on"), the points
    after it never tried, the same on every rerun. Each replacement now fails as a killed run does, its
    finished run kept."""
    (tmp_path / "dying.py").write_text(DYING)
    args = [sys.executable, "-m", "gradflow", "sweep", *[o for o in SMALL if not o.startswith("model.")],
            "model=custom", "model.target=dying:Net", "+model.kwargs.tag=0,1,2", "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2", f"results={results}", "--name", "dies"]
    env, root = {**ENV, "PYTHONPATH": str(tmp_path)}, results / "dies"
    first = subprocess.run([*args, "+model.kwargs.die=0"], capture_output=True, text=True, timeout=300, env=env,
                           cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    before = {r["run"]: r["record"]["config_hash"] for r in store.runs(root)}
    out = subprocess.run([*args, "+model.kwargs.die=1"], capture_output=True, text=True, timeout=300, env=env,
                         cwd=tmp_path)
    assert out.returncode == 1 and "Traceback" not in out.stderr + out.stdout, out.stderr  # (1: runs failed)
    assert "with no run in flight" not in out.stderr, out.stderr
    runs = store.runs(root)
    assert {r["run"]: r["record"]["config_hash"] for r in runs} == before and len(runs) == 3  # each kept
    for run in runs:
        assert run["status"] == "stale" and run["why"].startswith(store.REPLACEMENT_FAILED), run["why"]
        assert "its worker process was killed (SIGKILL(-9))" in run["record"]["replacement"]["error"]
    assert not [p for p in root.iterdir() if store.is_staging(p.name)]  # no replacement left behind


def test_a_run_whose_folder_takes_no_more_bytes_is_one_line(results):
    # a full disk as a run began (its run.json unwritten): Python's traceback, and in a sweep Hydra's too, the
    # folders of the points after it left empty. A file-size limit (RLIMIT_FSIZE: writes past it fail with
    # EFBIG, as past a full disk with ENOSPC) below run.json's size stands in for the full disk.
    import resource

    args = [sys.executable, "-m", "gradflow", "run", *SMALL, f"results={results}", "name=full"]
    out = subprocess.run(args, capture_output=True, text=True, timeout=300, env=ENV,
                         preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (1500, 1500)))
    err = " ".join(out.stderr.split())
    assert out.returncode == 1 and "Traceback" not in out.stderr and err.startswith(
        f"error: cannot write the run {results / 'full'}") and err.endswith(
        ": File too large; raise the file-size limit (ulimit -f, or the job's) and run the same command again: a sweep "
        "resumes where it stopped"), out.stderr


@pytest.mark.parametrize("limit, where", [(200, r"(sweep\.yaml|\.gradflow\.lock\.json) in {root}"),
                                          (1500, "the sweep's files in {root}")])
def test_a_sweep_whose_own_files_take_no_more_bytes_is_one_line(results, limit, where):
    # the sweep's own files on a full disk: its sweep.yaml (written atomically, named, not its temporary name)
    # and Hydra's multirun.yaml (whose error names no file) were Python's traceback; the file is named in its
    # folder, which exists (a long path of a file that does not was shortened around an ellipsis)
    import resource

    args = [sys.executable, "-m", "gradflow", "sweep", *SMALL, "model.depth=2,3", f"results={results}", "name=full"]
    out = subprocess.run(args, capture_output=True, text=True, timeout=300, env=ENV,
                         preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)))
    err = " ".join(out.stderr.split())
    assert out.returncode == 1 and "Traceback" not in out.stderr and re.fullmatch(
        f"error: cannot write {where.format(root=re.escape(str(results / 'full')))}: File too large; raise the "
        "file-size limit \\(ulimit -f, or the job's\\) and run the same command again: a sweep resumes where it "
        "stopped", err), err
    assert not list(results.glob("full/.*.tmp"))  # (no temporary file left behind)


def test_a_file_the_machine_would_not_take_is_said_with_what_to_do():
    # an OSError's filename may be bytes (Path() of it raised inside the handler, hiding the error); a read-only
    # mount and a file-size limit are no full disk to make room on
    import errno

    from gradflow.errors import cannot_write, file_in

    assert file_in(b"/data/results/study/sweep.yaml") == "sweep.yaml in /data/results/study"
    said = {code: str(cannot_write("x", OSError(code, os.strerror(code)))) for code in (errno.ENOSPC, errno.EROFS,
                                                                                        errno.EFBIG, errno.EPERM)}
    assert "make room" in said[errno.ENOSPC] and "write elsewhere (results=<a writable folder>)" in said[errno.EROFS]
    assert "raise the file-size limit" in said[errno.EFBIG], said
    assert "fix the folder's permissions" in said[errno.EPERM] and "make room" not in said[errno.EPERM], said


def test_a_sweeps_folder_made_unwritable_midway_is_one_line(results):
    # Hydra making the next run's folder in it raised a PermissionError (not a full disk's errno), a traceback,
    # and releasing the lock a second one chained to it
    import contextlib

    from tests.commands import unwritable

    study = results / "ro"
    p = sweep_mod.plan([*SMALL, "model.depth=2,3", "train.steps=2", f"results={results}"], "ro")
    steps = []

    def freeze(*_):  # (at the first run's first step: its folder made, the next one's not yet)
        if not steps:
            steps.append(frozen.enter_context(unwritable(study)))

    with contextlib.ExitStack() as frozen, pytest.raises(GradflowError) as e:
        sweep_mod.launch(p, on_step=freeze)
    said = str(e.value)
    assert said.startswith(f"cannot write model.depth=3 in {study}: ") and "fix the folder's permissions" in said, said
    assert store.read_run(study / "model.depth=2")["status"] == "ok"  # (the run done before, whole)


def test_a_run_with_a_missing_or_broken_file_is_incomplete(cli, results):
    assert _sweep(cli, results, "model.depth=2,3,4", "seed=0,1").exit_code == 0
    root = results / "s"
    (root / "model.depth=2,seed=0" / "layers.parquet").unlink()
    broken = root / "model.depth=2,seed=1" / "metrics.parquet"
    broken.write_bytes(broken.read_bytes()[:-10])  # truncated: the footer is gone
    (root / "model.depth=3,seed=0" / "run.json").write_text('{"status": "ok", "se')  # truncated JSON
    for job, field, value in (("model.depth=3,seed=1", "final", "oops"), ("model.depth=4,seed=0", "flags", [1])):
        record = json.loads((root / job / "run.json").read_text())  # a field of the wrong type (it broke ls)
        (root / job / "run.json").write_text(json.dumps({**record, field: value}))
    whole = {"model.depth=4,seed=1"}
    statuses = _statuses(root)
    assert {r for r, s in statuses.items() if s == "incomplete"} == {
        "model.depth=2,seed=0", "model.depth=2,seed=1", "model.depth=3,seed=0", "model.depth=3,seed=1",
        "model.depth=4,seed=0"}
    assert {r for r, s in statuses.items() if s == "ok"} == whole
    ls = cli("ls", str(root), "--csv")
    assert ls.exit_code == 0 and "Traceback" not in ls.output
    rows = pd.read_csv(__import__("io").StringIO(ls.output))
    assert sorted(rows["status"]) == ["incomplete"] * 5 + ["ok"]
    listing = cli("ls", str(root)).output
    # an incomplete run's config comes from Hydra's config.yaml, which holds every init choice's keys: only
    # its own are settings (a Xavier run showed mode, sw2 and sb2 columns)
    assert "incomplete: 5" in listing and not re.search(r"\b(mode|sw2|sb2)\b", listing), listing
    assert set(gradflow.load(root)["run"]) == whole  # never a half run's rows
    assert set(gradflow.load(root, "metrics")["run"]) == whole
    assert cli("plot", str(root)).exit_code == 0 and cli("report", str(root)).exit_code == 0
    # a rerun redoes exactly the incomplete runs
    again = _sweep(cli, results, "model.depth=2,3,4", "seed=0,1")
    assert "1 already finished, skipped" in again.output
    assert "other settings" not in again.output  # the same settings, only incomplete: nothing is "replaced"
    assert set(_statuses(root).values()) == {"ok"}


def test_a_run_json_field_that_is_null_reads_as_absent(cli, results):
    # "summary": null in one run.json made every command on the study a traceback (`ls`, `plot`, `report`,
    # the sweep's resume and `clean`, the tools to mend it): null reads as the field left out
    assert _sweep(cli, results, "model.depth=2,3,4").exit_code == 0
    root = results / "s"
    for job, field in (("model.depth=2", "summary"), ("model.depth=3", "files"), ("model.depth=4", "status")):
        record = json.loads((root / job / "run.json").read_text())
        (root / job / "run.json").write_text(json.dumps({**record, field: None}))
    assert _statuses(root) == {"model.depth=2": "ok", "model.depth=3": "ok", "model.depth=4": "incomplete"}
    for args in (("ls", str(root)), ("plot", str(root)), ("report", str(root))):
        out = cli(*args)
        assert out.exit_code == 0 and "Traceback" not in out.output, (args, out.output)
    again = _sweep(cli, results, "model.depth=2,3,4")
    assert again.exit_code == 0 and "2 already finished, skipped" in again.output, again.output
    assert set(_statuses(root).values()) == {"ok"}


def test_a_report_of_a_sweep_whose_spec_was_damaged_by_hand(cli, results):
    # ls and plot read such a spec as none; report's list of commands was a traceback (yaml.ParserError, or
    # AttributeError for a spec that is a plain string)
    assert _sweep(cli, results, "model.depth=2,3").exit_code == 0
    for text in ("garbage: [", "just a string"):
        (results / "s" / "sweep.yaml").write_text(text)
        out = cli("report", str(results / "s"))
        assert out.exit_code == 0 and "Traceback" not in out.output, out.output
        assert (results / "s" / "report.html").stat().st_size > 0


def test_a_corrupt_table_inside_a_whole_looking_file_is_one_line(cli, results):
    assert cli("run", *SMALL, f"results={results}", "name=c").exit_code == 0
    job = next(p for p in (results / "c").iterdir() if p.is_dir())
    f = job / "layers.parquet"
    data = bytearray(f.read_bytes())
    data[8:-8] = b"\x00" * (len(data) - 16)  # the magic marks survive, the contents do not
    f.write_bytes(bytes(data))
    out = cli("plot", str(results / "c"))
    _one_line_error(out, f"{f} cannot be read")
    # its advice works: the run folder removed, the same command redoes the run, and the plot is drawn
    assert f"remove its run folder ({job}) and rerun the command that made it" in " ".join(out.output.split())
    shutil.rmtree(job)
    assert cli("run", *SMALL, f"results={results}", "name=c").exit_code == 0
    assert cli("plot", str(results / "c")).exit_code == 0


def test_a_table_without_one_of_its_columns_is_one_line(cli, results):
    # a layers table that lost its `value` column loaded as it was: plot drew the healthy run as diverged
    # (a NaN at every layer), gradflow.load gave NaNs
    assert cli("run", *SMALL, f"results={results}", "name=c").exit_code == 0
    job = next(p for p in (results / "c").iterdir() if p.is_dir())
    for table, column in (("layers.parquet", "value"), ("metrics.parquet", "split")):
        f = job / table
        whole = f.read_bytes()
        pd.read_parquet(f).drop(columns=[column]).to_parquet(f)
        _one_line_error(cli("plot", str(results / "c")), f"{f} cannot be read (it has no column {column})")
        with pytest.raises(GradflowError, match="it has no column"):
            gradflow.load(results / "c", table.split(".")[0])
        f.write_bytes(whole)
    assert cli("plot", str(results / "c")).exit_code == 0


def test_tables_with_other_columns_still_load_together(cli, results):
    """Tables are joined as Arrow; one with other columns (a run another version wrote) is joined by
    name instead, its missing cells empty, rather than failing the whole load."""
    assert _sweep(cli, results, "seed=0,1").exit_code == 0
    root = results / "s"
    first, second = sorted(p / "metrics.parquet" for p in root.iterdir() if (p / "metrics.parquet").exists())
    older = pd.read_parquet(first).assign(note="older")
    older.to_parquet(first)
    df = gradflow.load(root, "metrics")
    assert len(df) == len(older) + len(pd.read_parquet(second))
    assert set(df.loc[df["note"] == "older", "run"]) == {first.parent.name}
    assert df.loc[df["run"] == second.parent.name, "note"].isna().all()
    assert cli("plot", str(root)).exit_code == 0


# --- resume: sweep.yaml is the study's identity --------------------------------------------------------
def test_changed_fixed_setting_replaces_and_shrunk_grid_leaves_stale_runs(cli, results, monkeypatch):
    from gradflow.cli.console import console

    monkeypatch.setattr(console, "width", 80)  # a terminal of 80 columns, whatever runs the tests
    assert _sweep(cli, results, "model.depth=2,3,4").exit_code == 0
    root = results / "s"
    changed = _sweep(cli, results, "model.depth=2,3,4", "train.steps=4")
    assert changed.exit_code == 0
    flat = " ".join(changed.output.split())  # (the warnings wrap at the console's width, at spaces)
    assert "3 finished runs in" in flat and "were made with other settings and will be replaced" in flat
    steps = {r["run"]: r["steps_done"] for _, r in gradflow.load(root, "runs").iterrows()}
    assert steps == {"model.depth=2": 4, "model.depth=3": 4, "model.depth=4": 4}

    shrunk = _sweep(cli, results, "model.depth=2,3", "train.steps=4")
    assert "2 already finished, skipped" in shrunk.output
    flat = " ".join(shrunk.output.split())
    assert "1 run in" in flat and "is not a point of this sweep (stale)" in flat
    # (a path alone may not fit, nor a command to copy, which is never broken: it takes a line of its own)
    assert max(len(line) for line in shrunk.output.splitlines()
               if " " in line and not line.startswith("`gradflow ")) <= 80
    assert _statuses(root) == {"model.depth=2": "ok", "model.depth=3": "ok", "model.depth=4": "stale"}
    assert set(gradflow.load(root)["run"]) == {"model.depth=2", "model.depth=3"}
    assert set(gradflow.load(root, "metrics")["run"]) == {"model.depth=2", "model.depth=3"}
    assert set(gradflow.load(root, "runs")["run"]) == {"model.depth=2", "model.depth=3"}
    assert set(gradflow.load(root, include_stale=True)["run"]) == {"model.depth=2", "model.depth=3", "model.depth=4"}
    ls = cli("ls", str(root))
    assert "stale: 1" in ls.output and "stale" in ls.output
    # plot and compare leave the stale run out; --all draws it
    hidden = cli("plot", str(root), "--kind", "heatmap", "--run", "model.depth=4")
    _one_line_error(hidden, "--run 'model.depth=4' is not a run of")
    shown = cli("plot", str(root), "--kind", "heatmap", "--run", "model.depth=4", "--all")
    assert shown.exit_code == 0 and shown.output.strip().endswith(".png"), shown.output

    from typer.testing import CliRunner

    from gradflow.cli import app

    asked = CliRunner().invoke(app, ["clean", str(root), "--stale"], input="n\n")
    assert asked.exit_code == 1 and (root / "model.depth=4").exists()  # asked, said no: nothing removed
    # it names what it would remove before asking, and says that it removed nothing
    assert asked.output.splitlines()[:2] == [f"1 run to remove from {root}: 1 stale", "  model.depth=4 (stale)"]
    assert asked.output.rstrip().endswith("nothing removed")
    # no answer at all (a script's empty stdin): one line saying --yes does it (typer's prompt said `Aborted.`)
    unasked = CliRunner().invoke(app, ["clean", str(root), "--stale"], input="")
    assert unasked.exit_code == 1 and (root / "model.depth=4").exists()
    said = "error: nothing removed: no answer came (standard input is empty or closed); --yes removes it without asking"
    assert said in " ".join(unasked.output.split()) and "Aborted" not in unasked.output, unasked.output
    # standard input closed (`<&-`): input() raised RuntimeError, a traceback
    closed = subprocess.run([sys.executable, "-m", "gradflow", "clean", str(root), "--stale"], capture_output=True,
                            text=True, preexec_fn=lambda: os.close(0))
    assert closed.returncode == 1 and said in " ".join(closed.stderr.split()), closed.stderr
    assert "Traceback" not in closed.stderr and (root / "model.depth=4").exists()
    done = cli("clean", str(root), "--stale", "--yes")
    assert done.exit_code == 0 and "removed 1 run\n" in done.output
    assert not (root / "model.depth=4").exists() and _statuses(root) == {"model.depth=2": "ok", "model.depth=3": "ok"}


def test_clean_removes_folders_of_runs_cut_off_before_their_run_json(cli, results):
    """A run killed between its config and its run.json, or a folder whose clearing was killed once run.json
    (removed first) was gone, is no run to any reader; if its point left the sweep, no rerun clears it, so
    `clean --stale` does. A folder holding anything gradflow did not write stays."""
    assert _sweep(cli, results, "model.depth=2,3").exit_code == 0
    root = results / "s"
    done = root / "model.depth=2"
    cut = root / "model.depth=7"  # cut off while cleared: tables left, run.json gone
    cut.mkdir()
    for name in (store.CONFIG_FILE, store.LAYERS_FILE):
        shutil.copy(done / name, cut / name)
    foreign = root / "notes"  # a user's folder that happens to hold a config.yaml
    foreign.mkdir()
    shutil.copy(done / store.CONFIG_FILE, foreign / store.CONFIG_FILE)
    (foreign / "todo.txt").write_text("rerun depth 7")
    # gradflow's file names only, but no job's folder: tables copied into a folder of the user's inside the
    # sweep, and a config.yaml of the user's in a folder gradflow never wrote into (both were removed)
    mine = root / "userdir"
    mine.mkdir()
    shutil.copy(done / store.LAYERS_FILE, mine / store.LAYERS_FILE)
    conf = results.parent / "project" / "myconf"
    conf.mkdir(parents=True)
    (conf / store.CONFIG_FILE).write_text("lr: 0.1\n")
    # named as a job and holding only gradflow's file names, but not in its formats: a user's notes saved as a
    # config.yaml (YAML, but no run's config), text as a table, in a hidden folder named as a replacement's
    notes = root / "lr=0.1"
    notes.mkdir()
    (notes / store.CONFIG_FILE).write_text("my own notes: lr 0.1 looked best\n")
    text = root / "x=2"
    text.mkdir()
    (text / store.METRICS_FILE).write_text("a: 1\n")
    hidden = store.staging_dir(root / "model.depth=9")
    hidden.mkdir()
    (hidden / store.CONFIG_FILE).write_text("lr: 0.1\n")
    # the empty folder Hydra made for a point that never began (a sweep killed): left over too; an empty folder
    # not named as a job is not
    never = root / "model.depth=8"
    never.mkdir()
    (root / "empty").mkdir()
    drawn = root / "model.depth=9" / store.FIGURES_DIR  # (figures alone, a run's since removed: no empty folder)
    drawn.mkdir(parents=True)
    (drawn / "f.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    assert set(_statuses(root)) == {"model.depth=2", "model.depth=3"}  # the premise: neither is a run
    assert store.leftovers(results) == [cut, never] and store.leftovers(results.parent / "project") == []
    out = cli("clean", str(results.parent / "project"), "--stale", "--yes")
    assert out.exit_code == 1 and "holds no runs" in out.output
    assert (conf / store.CONFIG_FILE).exists()

    out = cli("clean", str(root), "--stale", "--yes")
    assert out.exit_code == 0 and "2 left over (no run.json)" in out.output and "removed 2 runs\n" in out.output
    assert not cut.exists() and (foreign / "todo.txt").exists() and (mine / store.LAYERS_FILE).exists()
    assert not never.exists() and (root / "empty").is_dir()
    assert all((f / name).exists() for f, name in ((notes, store.CONFIG_FILE), (text, store.METRICS_FILE),
                                                   (hidden, store.CONFIG_FILE)))
    assert _statuses(root) == {"model.depth=2": "ok", "model.depth=3": "ok"}
    assert "nothing to remove" in cli("clean", str(root), "--stale", "--yes").output

    # a study whose only folder is such a leftover: no runs, still cleaned (its lock stays, as gradflow leaves it)
    only = results / "t" / "model.depth=2"
    only.mkdir(parents=True)
    shutil.copy(done / store.CONFIG_FILE, only / store.CONFIG_FILE)
    (results / "t" / store.LOCK_FILE).touch()
    out = cli("clean", str(results / "t"), "--stale", "--yes")
    assert out.exit_code == 0 and "removed 1 run\n" in out.output and not only.exists()


def test_kill_during_a_changed_config_rerun_never_mixes_configs(cli, results):
    assert _sweep(cli, results, "model.depth=2,3,4,5").exit_code == 0
    root = results / "s"
    args = [sys.executable, "-m", "gradflow", "sweep", *SMALL, "train.steps=150", "model.depth=2,3,4,5",
            f"results={results}", "--name", "s"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    deadline = time.time() + 180
    while time.time() < deadline:
        # (a run's own folder, not the hidden one its replacement runs in: killed between that run's end and its
        # swap, no run of the new spec was current yet, and the check below read an empty table)
        recs = [store.read_run(p) for p in root.iterdir() if p.is_dir() and not store.is_staging(p.name)]
        if any(r and r.get("steps") == 150 and r.get("status") == "ok" for r in recs):
            break
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    statuses = _statuses(root)
    runs = gradflow.load(root, "runs")
    assert set(runs["train.steps"]) == {150}  # the old spec's runs are never shown as current
    assert set(runs[runs["status"] == "ok"]["run"]) == {r for r, s in statuses.items() if s == "ok"}
    assert set(statuses.values()) <= {"ok", "stale", "interrupted"} and "stale" in statuses.values()
    layers = gradflow.load(root)
    assert set(layers["train.steps"]) == {150} and set(layers["run"]) == set(runs[runs["status"] == "ok"]["run"])


def test_a_running_record_of_a_dead_process_reads_as_interrupted(results):
    job = results / "s" / "model.depth=2"
    job.mkdir(parents=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    import socket

    store.write_json(job / "run.json", {"status": "running", "pid": dead.pid, "host": socket.gethostname()})
    assert store.status_of(job, store.read_run(job))[0] == "interrupted"
    store.write_json(job / "run.json", {"status": "running", "pid": os.getpid(), "host": socket.gethostname()})
    with store.lock(results / "s"):  # its writer holds the study's lock
        assert store.status_of(job, store.read_run(job))[0] == "running"
    # a live process of that pid, and no writer holds the lock: the pid is another's now (a restarted
    # container's pids start small again), the run is interrupted (it read `running`)
    assert store.status_of(job, store.read_run(job)) == (
        "interrupted", f"no process holds its study's lock: its process ended (pid {os.getpid()} is another's)")
    # a holder file left by a process that is gone (a Ctrl-C leaves at once, the file behind) holds nothing
    store.write_json(results / "s" / store.HOLDER_FILE, {"pid": dead.pid, "host": socket.gethostname()})
    assert store.status_of(job, store.read_run(job))[0] == "interrupted"


def test_clean_removes_a_running_record_whose_pid_is_anothers_and_stops_before_a_locked_study(cli, results):
    """A run recorded `running` whose pid is now another live process's, with no writer holding the lock, reads
    interrupted and is listed for removal; clean then held the lock itself, read the run as running again, and
    removed nothing ("removed 0 runs", exit 0). And a study whose lock another process holds stops the cleaning
    before anything goes (the studies before it in the folder were cleaned, the error the only word)."""
    import socket

    for name in ("a", "b"):
        assert _sweep(cli, results, "model.depth=2,3", name=name).exit_code == 0
    other = subprocess.Popen(["sleep", "120"])
    try:
        job = results / "a" / "model.depth=2"
        store.write_json(job / "run.json", {**store.read_run(job), "status": "running", "pid": other.pid,
                                            "host": socket.gethostname()})
        cut = results / "b" / "model.depth=3"
        store.write_json(cut / "run.json", {**store.read_run(cut), "status": "interrupted"})
        holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from gradflow import store\n"
                                   f"with store.lock(store.Path({str(results / 'b')!r})):\n"
                                   "    print('held', flush=True); time.sleep(120)"],
                                  stdout=subprocess.PIPE, text=True, env=ENV)
        try:
            assert holder.stdout.readline().strip() == "held"
            out = cli("clean", str(results), "--stale", "--yes")
            assert out.exit_code == 1 and out.stderr.strip().endswith(
                "wait for it to finish, then run the same command again; nothing removed"), out.output
            assert _statuses(results / "a")["model.depth=2"] == "interrupted"  # nothing went
        finally:
            holder.kill()
            holder.wait()
        out = cli("clean", str(results), "--stale", "--yes")
        assert out.exit_code == 0 and "removed 2 runs\n" in out.output, out.output
        assert not job.exists() and not cut.exists()
    finally:
        other.kill()
        other.wait()


# --- interruption: Ctrl-C to the process group ------------------------------------------------------------
def _interrupt_when(args, ready, timeout=180):
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
                            start_new_session=True)
    deadline = time.time() + timeout
    while time.time() < deadline and not ready():
        time.sleep(0.05)
    assert ready(), "never reached the point to interrupt"
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out, err


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # (the swallowed one)
def test_a_ctrl_c_python_swallows_still_stops_the_run(results):
    """A Ctrl-C that lands inside a __del__ (or an import's weakref callback) raises KeyboardInterrupt there,
    where Python prints "Exception ignored" and drops it: a CI run saw a sweep go on to the end with exit
    0. The job keeps every Ctrl-C and raises it again at the next step: the run is interrupted."""
    from gradflow.config import compose
    from gradflow.job import execute

    class Signals:
        def __del__(self):  # the signal is handled here, inside a finalizer
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)

    def on_step(t, n):
        if t == 2:
            Signals()  # dropped at once: its __del__ runs, and the KeyboardInterrupt it raises is swallowed

    cfg = compose([*SMALL, "train.steps=40", f"results={results}", "name=swallowed"])
    job = results / "swallowed" / "default"
    with pytest.raises(KeyboardInterrupt):
        execute(cfg, job, on_step=on_step)
    run = store.read_run(job)
    assert run["status"] == "interrupted" and 3 <= run["steps_done"] <= 4, run
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
    # what it measured until then is kept (it was lost): every whole probed step, the evaluation at step 0
    assert run["files"] == [store.CONFIG_FILE, store.LAYERS_FILE, store.METRICS_FILE]
    assert store.status_of(job, run)[0] == "interrupted"
    layers, metrics = store.load(job), store.load(job, "metrics")
    assert set(layers.status) == {"interrupted"} and set(layers.step) == set(range(run["steps_done"]))
    assert set(metrics[metrics.split == "train"].step) == {0, 3}  # (train.eval_every=3)
    assert run["final"] == {} and run["last_evaluated"]["step"] == 3  # no final result
    assert run["summary"]["grad_ratio.final"] > 0
    from gradflow.plots import figures  # its figures say what they hold

    for fig in (figures.curves(metrics), figures.profile(layers, step="last"), figures.heatmap(layers)):
        assert "interrupted run: partial" in fig.get_suptitle()
    finished = layers.assign(run="other", status="ok", seed=1)
    both = figures.profile(pd.concat([layers, finished], ignore_index=True), step="last")
    assert "1 of 2 runs interrupted: partial" in both.get_suptitle()
    failed = layers.assign(run="third", status="failed", seed=2)  # (a run that failed at a step keeps its tables)
    three = figures.profile(pd.concat([layers, finished, failed], ignore_index=True), step="last")
    assert "1 of 3 runs interrupted: partial; 1 of 3 runs failed: partial" in " ".join(three.get_suptitle().split())


@pytest.mark.parametrize("at", ["write_layers", "write_metrics", "finish"])
def test_a_ctrl_c_while_a_finished_run_is_written_waits_for_its_record(results, at):
    """A Ctrl-C as the last step's tables are written (a CI run saw it, in a joblib worker whose run had just
    ended): the run recorded itself `interrupted` with no table at all, every step it took lost. It now
    waits for run.json, the run is recorded as the finished run it is, and the Ctrl-C goes on after."""
    from gradflow.config import compose
    from gradflow.job import execute

    cfg = compose([*SMALL, "train.steps=6", f"results={results}", "name=w"])
    job = results / "w" / "default"
    with pytest.raises(KeyboardInterrupt), ctrl_c_on_entering(getattr(store, at)) as reached:
        execute(cfg, job)
    assert reached == [getattr(store, at)]
    run = store.read_run(job)
    assert run["status"] == "ok" and run["steps_done"] == 6 and run["final"]["train_loss"] > 0, run
    assert run["files"] == [store.CONFIG_FILE, store.LAYERS_FILE, store.METRICS_FILE]
    assert set(store.load(job).step) == set(range(7)) and set(store.load(job, "metrics").step) == {0, 3, 6}
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored


def test_gradflow_run_says_a_run_ctrl_c_reached_as_it_was_written_is_recorded_whole(results):
    """`gradflow run` said "is marked interrupted" of a run a Ctrl-C reached only as its tables were written,
    which it records as the finished run it is."""
    script = ("import sys\nfrom gradflow import store\nfrom gradflow.__main__ import main\n"
              "from tests.conftest import ctrl_c_on_entering\n"
              "sys.argv = ['gradflow', *sys.argv[1:]]\n"
              "with ctrl_c_on_entering(store.write_metrics):\n    main()\n")
    out = subprocess.run([sys.executable, "-c", script, "run", *SMALL, f"results={results}", "name=w"],
                         capture_output=True, text=True, timeout=300, env=ENV, cwd=Path(gradflow.__file__).parents[1])
    job = next((results / "w").glob("*/run.json")).parent
    line = " ".join(out.stderr.split())
    assert out.returncode == 130 and line == (f"interrupted after the run ended: {job} is recorded ok, with its "
                                              f"tables (gradflow plot {job})"), out.stderr
    assert store.read_run(job)["status"] == "ok"


@pytest.mark.parametrize("bad", [False, True], ids=["finished", "refused"])
def test_a_ctrl_c_as_the_interpreter_shuts_down_leaves_with_the_commands_own_status(results, bad):
    """After the command has ended, a Ctrl-C during the interpreter's shutdown (threads joined, a joblib
    pool's exit) printed a KeyboardInterrupt traceback as "Exception ignored", or ended the process by
    SIGINT (status -2, no line) after every run had finished: it leaves with the command's own status."""
    script = ("import sys, threading\nfrom gradflow.__main__ import main\n"
              "from tests.conftest import ctrl_c_on_entering\n"
              "sys.argv = ['gradflow', *sys.argv[1:]]\n"
              "held = ctrl_c_on_entering(threading._shutdown)\nheld.__enter__()\nmain()\n")  # (to the end)
    args = [*SMALL, f"results={results}", "name=w", *(["model.depth=abc"] if bad else [])]
    out = subprocess.run([sys.executable, "-c", script, "run", *args], capture_output=True, text=True,
                         timeout=300, env=ENV, cwd=Path(gradflow.__file__).parents[1])
    assert "KeyboardInterrupt" not in out.stderr and "Exception ignored" not in out.stderr, out.stderr
    if bad:
        assert out.returncode == 1 and out.stderr.strip() == "error: model.depth='abc' is not a valid integer"
    else:
        assert out.returncode == 0 and not out.stderr, out.stderr
        assert store.read_run(next((results / "w").glob("*/run.json")).parent)["status"] == "ok"
        assert out.stdout.rstrip().splitlines()[-1].startswith("results: ")  # (its last line, flushed)


def test_a_second_ctrl_c_while_a_run_is_written_leaves_at_once(results):
    """The user insists: the first Ctrl-C during the writes waits, the second stops them, and the run
    is recorded interrupted with the tables written by then."""
    from gradflow.config import compose
    from gradflow.job import execute

    cfg = compose([*SMALL, "train.steps=6", f"results={results}", "name=w"])
    job = results / "w" / "default"
    with pytest.raises(KeyboardInterrupt), ctrl_c_on_entering(store.write_layers, store.write_metrics):
        execute(cfg, job)
    run = store.read_run(job)
    assert run["status"] == "interrupted" and run["files"] == [store.CONFIG_FILE, store.LAYERS_FILE], run
    assert set(store.load(job).step) == set(range(7))
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_ctrl_c_as_the_loop_makes_its_tables_keeps_the_run_as_it_ended(results):
    """A Ctrl-C while the loop turns its probed steps into tables, after the last step: it escaped the
    loop and the run was recorded interrupted with none. The run is what it is, ok with every probed
    step, and the Ctrl-C goes on after its record (to `train`'s caller too, with the tables)."""
    from gradflow import train
    from gradflow.config import compose
    from gradflow.job import execute, prepare
    from gradflow.probes.core import Probes

    cfg = compose([*SMALL, "train.steps=6", f"results={results}", "name=f"])
    job = results / "f" / "default"
    with pytest.raises(KeyboardInterrupt), ctrl_c_on_entering(train._finish):
        execute(cfg, job)
    run = store.read_run(job)
    assert run["status"] == "ok" and run["steps_done"] == 6 and run["final"]["train_loss"] > 0, run
    layers = store.load(job)
    assert set(layers.step) == set(range(7)) and not layers.duplicated(["step", "layer", "quantity"]).any()
    _, data, model = prepare(cfg)
    with pytest.raises(train.Interrupted) as stopped, ctrl_c_on_entering(train._finish):
        train.train(model, data, cfg, Probes(model, "tanh"))
    assert stopped.value.result.status == "ok" and stopped.value.result.probe_steps == list(range(7))


@pytest.mark.parametrize("isolate", [False, True])
def test_a_run_whose_tables_cannot_be_written_is_recorded_failed(results, isolate):
    """Writing a run's tables failed (a full disk; here a folder where its layers table goes): the error
    escaped `gradflow run` and took a sweep's task down, the run left `running` for good. It is `failed`,
    with the error naming the file, and returned as a sweep's failed run is."""
    from gradflow.config import compose
    from gradflow.job import execute

    cfg = compose([*SMALL, "train.steps=4", f"results={results}", "name=full"])
    job = results / "full" / "default"

    def on_step(t, n):  # (the folder exists by now: store.begin made it before training)
        (job / store.LAYERS_FILE / "in-the-way").mkdir(parents=True, exist_ok=True)

    run = execute(cfg, job, on_step=on_step, isolate=isolate)
    assert run["status"] == "failed" and run["steps_done"] == 4, run
    assert store.LAYERS_FILE in run["error"] and run["error"].split(":")[0].endswith("Error"), run["error"]
    assert store.read_run(job)["status"] == "failed" and store.status_of(job, store.read_run(job))[0] == "failed"


def test_a_ctrl_c_held_over_an_error_is_raised_after_it():
    """A held Ctrl-C is not lost when the block raises (a Recorder closed inside a script's `except`)."""
    with pytest.raises(KeyboardInterrupt) as stopped:
        with workers.ctrl_c_waits():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.02)
            raise OSError("disk full")
    assert isinstance(stopped.value.__context__, OSError)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


@pytest.fixture
def in_a_worker(monkeypatch):
    """This process as a worker of a sweep whose process is another, Ctrl-C not yet seen; its Ctrl-C
    handler put back after the test."""
    monkeypatch.setattr(workers, "_interrupted", False)
    monkeypatch.setenv(workers.SWEEP_PID, "1")
    saved = signal.getsignal(signal.SIGINT)
    yield
    signal.signal(signal.SIGINT, saved)


def _three_ctrl_cs_in_a_block() -> list[int]:
    """Three real Ctrl-Cs sent to this process inside `workers.ctrl_c_waits`, one after each step of the
    block: the steps the block finished before the KeyboardInterrupt it ends in (all three where the
    Ctrl-Cs wait for the block's end)."""
    done = []
    with pytest.raises(KeyboardInterrupt):
        with workers.ctrl_c_waits():
            for i in range(3):
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.05)
                done.append(i)
    return done


def test_ctrl_c_waits_in_a_worker_for_the_block_then_is_taken_once(in_a_worker):
    """In a sweep's worker no Ctrl-C cuts a recording short, however many come (the sweep's process passes
    one on to workers the terminal reached already): the block ends, then the job's handler takes one."""
    signal.signal(signal.SIGINT, workers.take_interrupt_once)
    assert _three_ctrl_cs_in_a_block() == [0, 1, 2] and workers.stopping()
    assert signal.getsignal(signal.SIGINT) is workers._ignore  # (the job's first Ctrl-C: the rest do nothing)


def test_ctrl_c_during_a_sweep_marks_the_run_interrupted_and_a_rerun_resumes(cli, results):
    root = results / "int"
    args = [sys.executable, "-m", "gradflow", "sweep", *SMALL, "train.steps=3000", "train.eval_every=1000",
            "model.depth=2,3", f"results={results}", "--name", "int"]

    def in_flight():
        return any(r and r.get("status") == "running" for r in map(store.read_run, root.glob("*")))

    code, out, err = _interrupt_when(args, in_flight)
    assert code == 130, (code, err)
    line = [x for x in err.splitlines() if x.strip()]
    assert len(line) == 1 and "interrupted: 0 of 2 runs finished" in line[0] and "rerun the same command" in line[0]
    assert "Traceback" not in err
    assert list(_statuses(root).values()) == ["interrupted"]
    # (the resume reads what the interrupted process left: in this process, as a rerun needs no fresh one)
    again = cli(*args[3:-4], "train.steps=3", "train.eval_every=3", *args[-4:])
    assert again.exit_code == 0, again.output
    assert set(_statuses(root).values()) == {"ok"} and len(_statuses(root)) == 2


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_or_sigterm_during_run_marks_it_interrupted(results, how):
    """SIGTERM (`kill PID`, `timeout`, a scheduler's time limit) is taken as Ctrl-C is: killed outright, the
    run lost every table it had measured and read as interrupted only once its pid was gone."""
    args = [sys.executable, "-m", "gradflow", "run", *SMALL, "train.steps=3000", "train.eval_every=1000",
            f"results={results}", "name=r"]

    def in_flight():
        return any(r and r.get("status") == "running" for r in map(store.read_run, (results / "r").glob("*")))

    if how == signal.SIGINT:
        code, out, err = _interrupt_when(args, in_flight)
    else:  # once the run prints its first progress line ("step 600/3000"): steps done, their tables to keep
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
                                start_new_session=True)
        while not (line := proc.stdout.readline()).startswith("step "):  # (notes come first)
            assert line, "the run ended before printing its progress"
        proc.send_signal(signal.SIGTERM)  # to the command alone, as `kill PID` sends it
        out, err = proc.communicate(timeout=120)
        code = proc.returncode
    assert code == 130, (code, err)
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and "interrupted at step" in lines[0] and "rerun the same command" in lines[0]
    (job,) = [p for p in (results / "r").iterdir() if p.is_dir()]
    rec = store.read_run(job)
    assert rec["status"] == "interrupted" and rec["steps_done"] >= 0 and rec["pid"] > 0 and rec["host"]
    assert store.status_of(job, rec)[0] == "interrupted"
    if how == signal.SIGTERM:
        assert store.LAYERS_FILE in rec["files"] and "with its tables up to there" in lines[0], (rec, lines)
        assert rec["steps_done"] > 0 and set(store.load(job)["step"]) >= {0}


@pytest.mark.parametrize("ctrl_c", ["taken", "ignored"])
def test_sigterm_waits_where_ctrl_c_waits(ctrl_c):
    """SIGTERM goes on as a Ctrl-C: inside `workers.ctrl_c_waits` (run.json being written, a replacement's
    swap) the block runs to its end, then KeyboardInterrupt. It was raised at once, mid-block. Also where
    the process ignores Ctrl-C (a background job of a script, `gradflow sweep ... &`): the block dropped the
    SIGTERM's Ctrl-C as one of those, and the sweep ran every run and exited 0."""
    from gradflow.__main__ import _terminated

    previous = (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT))
    signal.signal(signal.SIGTERM, _terminated)
    signal.signal(signal.SIGINT, signal.default_int_handler if ctrl_c == "taken" else signal.SIG_IGN)
    done = []
    try:
        with pytest.raises(KeyboardInterrupt):
            with workers.ctrl_c_waits():
                os.kill(os.getpid(), signal.SIGTERM)
                # (the handlers run between bytecodes: give them some; a signal this process sends itself
                # is taken as kill() returns, so a handler raising at once is caught by the first sleep)
                for _ in range(100):
                    time.sleep(0.001)
                done.append(True)
        assert done == [True]
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # (a second SIGTERM ends the command)
        if ctrl_c == "ignored":  # (its own Ctrl-Cs in a block are dropped still)
            with workers.ctrl_c_waits():
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.02)
    finally:
        signal.signal(signal.SIGTERM, previous[0])
        signal.signal(signal.SIGINT, previous[1])


# --- diverged runs: no pre-divergence value passes for a final result ---------------------------------------
def test_a_diverged_run_has_no_final_metrics_only_its_last_finite_evaluation(cli, results):
    out = cli("run", *SMALL, "model.activation=relu", "optim.lr=1e6", "train.steps=20", "train.eval_every=10", "train.check_every=1",
              f"results={results}", "name=d")
    assert out.exit_code == 0, out.output
    job = next(p for p in (results / "d").iterdir() if p.is_dir())
    rec = store.read_run(job)
    assert rec["status"] == "diverged" and rec["final"] == {}
    metrics = pd.read_parquet(job / "metrics.parquet")
    evals = metrics[metrics["split"].isin(["train", "test"])]
    finite_steps = evals.groupby("step")["value"].apply(lambda v: v.notna().all() and (abs(v) < float("inf")).all())
    last = int(finite_steps[finite_steps].index.max())
    assert rec["last_finite"]["step"] == last and last < rec["diverged_step"] + 1
    ref = evals[(evals["step"] == last) & (evals["split"] == "test") & (evals["metric"] == "acc")]["value"].item()
    assert rec["last_finite"]["test_acc"] == ref
    assert "last finite evaluation (step" in out.output
    runs = gradflow.load(results / "d", "runs")
    assert "final.test_acc" not in runs.columns or runs["final.test_acc"].isna().all()
    # run.json is strict JSON for other tools (NaN/Infinity are no JSON); its nan values read back as nan
    text = (job / store.RUN_FILE).read_text()
    raw = json.loads(text, parse_constant=lambda c: pytest.fail(f"run.json holds {c}"))
    undefined = [k for k, v in raw["summary"].items() if v is None]
    assert undefined and all(math.isnan(rec["summary"][k]) for k in undefined), raw["summary"]


def test_a_diverged_runs_last_finite_evaluation_holds_that_evaluations_values():
    # the step and its values from one evaluation: step 1's with step 1 (not step 0's), the NaN step left out
    from gradflow.summary import final_metrics

    rows = [(0, "train", "loss", 2.0), (0, "test", "acc", 0.1), (1, "train", "loss", 1.0), (1, "test", "acc", 0.4),
            (2, "train", "loss", math.nan), (2, "test", "acc", 0.1), (2, "batch", "loss", math.nan)]
    assert final_metrics(rows, "diverged") == {"final": {}, "last_finite": {"step": 1, "train_loss": 1.0,
                                                                           "test_acc": 0.4}}
    assert final_metrics(rows[:4], "ok") == {"final": {"train_loss": 1.0, "test_acc": 0.4}}


@pytest.mark.parametrize("kind", ["table", "json"])
def test_a_reader_never_sees_a_results_file_half_written(tmp_path, kind):
    """Every results file is written beside itself and renamed into place: a reader (ls, plot, a resumed
    sweep) reading while a run rewrites it sees the old file or the new one, whole, never a truncated one
    (written in place, a reader here read a partial file within a few rewrites)."""
    target = tmp_path / f"file.{kind}"
    # (written in place, a reader saw a partial table at the first rewrite, and a partial run.json within 3 of
    # 20000 values, sooner than within 7 of 100000: a smaller file is read more times per rewrite)
    rows = {"table": 100_000, "json": 20_000}[kind]
    frames = [pd.DataFrame({"step": np.arange(rows), "value": np.full(rows, float(k))}) for k in range(2)]
    write = {"table": lambda k: store.write_table(target, frames[k]),
             "json": lambda k: store.write_json(target, {"k": k, "values": [float(k)] * rows})}[kind]
    read = {"table": lambda: pd.read_parquet(target)["value"].iloc[-1],
            "json": lambda: json.loads(target.read_text())["values"][-1]}[kind]
    write(0)
    done, seen, broken = threading.Event(), [], []

    def writer():
        for k in range(20):
            write(k % 2)
        done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    while not done.is_set():
        try:
            seen.append(read())
        except Exception as e:  # (a partial file: pyarrow's or json's error)
            broken.append(repr(e))
    thread.join()
    assert not broken, broken[:3]
    assert seen and set(seen) <= {0.0, 1.0} and sorted(p.name for p in tmp_path.iterdir()) == [target.name]


def test_a_results_file_has_the_mode_of_any_file_the_user_writes(tmp_path):
    """Written through a temporary file (mkstemp makes it 0600), a results file still gets the mode an
    ordinary file gets under the user's umask: a group that reads the results folder reads its run.json too."""
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    store.write_json(tmp_path / store.RUN_FILE, {"status": "ok"})
    store.write_table(tmp_path / "table.parquet", pd.DataFrame({"step": [0, 1]}))
    want = plain.stat().st_mode & 0o777
    for name in (store.RUN_FILE, "table.parquet"):
        assert (tmp_path / name).stat().st_mode & 0o777 == want, (name, oct(want))


def test_a_write_that_fails_leaves_the_old_file_and_no_temporary_one(tmp_path):
    """A table whose rewrite fails (here: a column parquet cannot hold, numbers mixed with words) keeps its
    old content, whole, and no temporary file is left beside it for `clean` or a reader to find."""
    target = tmp_path / "table.parquet"
    store.write_table(target, pd.DataFrame({"step": [0, 1], "value": [0.5, 0.25]}))
    with pytest.raises(Exception, match="(?i)conver|type"):
        store.write_table(target, pd.DataFrame({"step": [0, 1], "value": [0.5, "a word"]}))
    assert pd.read_parquet(target)["value"].tolist() == [0.5, 0.25]
    assert [p.name for p in tmp_path.iterdir()] == [target.name]


def test_run_json_writes_undefined_and_infinite_numbers_strictly_and_reads_them_back(tmp_path):
    numbers = {"a": math.nan, "b": math.inf, "c": -math.inf, "d": np.float32(0.5), "e": 3, "f": "3-7"}
    store.write_json(tmp_path / store.RUN_FILE, {"status": "ok", "final": numbers, "summary": numbers,
                                                 "config": {"x": None}, "diverged_step": None})
    raw = json.loads((tmp_path / store.RUN_FILE).read_text(), parse_constant=lambda c: pytest.fail(c))
    assert raw["summary"] == {"a": None, "b": "inf", "c": "-inf", "d": 0.5, "e": 3, "f": "3-7"}
    rec = store.read_run(tmp_path)
    for section in ("final", "summary"):
        got = rec[section]
        assert math.isnan(got["a"]) and got["b"] == math.inf and got["c"] == -math.inf, got
        assert (got["d"], got["e"], got["f"]) == (0.5, 3, "3-7")
    assert rec["config"] == {"x": None} and rec["diverged_step"] is None  # nulls elsewhere stay null


# --- points sweeps and launchers ---------------------------------------------------------------------------
def test_points_sweep_runs_exactly_the_given_points_and_resumes(cli, results, tmp_path):
    points = tmp_path / "points.yaml"
    points.write_text("- {model.activation: tanh, init.sw2: 1.5, init.sb2: 0.05}\n"
                      "- {model.activation: relu, init.sw2: 2.0, init.sb2: 0.0}\n"
                      "- {model.activation: gelu, init.sw2: 1.8, init.sb2: 0.1}\n")
    out = _sweep(cli, results, "init=meanfield", "--points", points, name="pts")
    assert out.exit_code == 0, out.output
    runs = gradflow.load(results / "pts", "runs")
    got = sorted(zip(runs["model.activation"], runs["init.sw2"], runs["init.sb2"]))
    assert got == [("gelu", 1.8, 0.1), ("relu", 2.0, 0.0), ("tanh", 1.5, 0.05)]  # never the 27-point product
    assert set(runs["init.name"]) == {"meanfield"} and set(runs["status"]) == {"ok"}
    again = _sweep(cli, results, "init=meanfield", "--points", points, name="pts")
    assert "3 already finished, skipped" in again.output
    points.write_text("- {model.activation: tanh, init.sw2: 1.5, init.sb2: 0.05}\n")
    fewer = _sweep(cli, results, "init=meanfield", "--points", points, name="pts")
    assert "1 already finished, skipped" in fewer.output
    assert sorted(_statuses(results / "pts").values()) == ["ok", "stale", "stale"]


def test_points_give_each_run_its_values_as_written_and_may_set_the_seed(cli, results, tmp_path):
    """A string that Hydra's grammar would read as another value ("0.50" as 0.5) reaches the run as written,
    as the point's own config file gives it, so the planned config is the run's and a rerun skips it; a
    point may carry its seed."""
    points = tmp_path / "p.yaml"
    points.write_text('- {model.alpha: "0.50", seed: 1}\n- {model.alpha: "2.0", seed: 2}\n')
    args = ("model.depth=3", "model.skip=residual", "--points", points)
    assert _sweep(cli, results, *args, name="pts").exit_code == 0
    configs = {r[store.RUN]: (r["record"]["config"]["model.alpha"], r["record"]["config"]["seed"])
               for r in store.runs(results / "pts")}
    assert configs == {"model.alpha=_0.50_,seed=1": ("0.50", 1), "model.alpha=2.0,seed=2": ("2.0", 2)}, configs
    again = _sweep(cli, results, *args, name="pts")
    assert again.exit_code == 0 and "2 already finished, skipped" in again.output, again.output
    assert "other settings" not in again.output


@pytest.mark.parametrize("text, message", [
    ("- {model.activation: tanh}\n- {init.sw2: 2}\n", "point 1 lacks model.activation and has init.sw2; every point "
                                                       "needs the keys of point 0 (model.activation)"),
    ("- {model.activation: tanh, seed: 0}\n- {model.activaton: relu, seed: 1}\n",
     "point 1 lacks model.activation and has model.activaton (did you mean model.activation?)"),
    # (a key of the config is no misspelling: "has model.width (did you mean model.depth?)")
    ("- {model.depth: 2}\n- {model.width: 3}\n", "point 1 lacks model.depth and has model.width; every point needs"),
    # a point with a key fewer and none extra: it ran at the default without a word
    ("- {model.activation: tanh, init.gain: 2}\n- {model.activation: relu}\n",
     "point 1 lacks init.gain; every point needs the keys of point 0"),
    # (as on the command line: two points of one run, in two folders)
    ("- {gradcheck.mode: forward}\n- {gradcheck.mode: reverse}\n", "point 0 gradcheck.mode=forward applies to "
                                                                     "`gradflow gradcheck` alone"),
    ("- {init: meanfield}\n", "must be seed or a dotted config key"),
    ("- {optim.lr: -1}\n", "optim.lr=-1"),
    # (the sweep's fixed overrides set model.depth=2: which would hold is no guess gradflow makes)
    ("- {model.depth: 3}\n", "model.depth is set both on the command line (model.depth=2) and in the points file"),
    ("- {model.activation: nope}\n", "model.activation=nope is not allowed"),
    ("{a: 1}\n", "must be a YAML list"),
    ("- [unclosed\n", "is not valid YAML"),
    # where and what, not the parser's context ("while parsing a flow sequence ... - {model)")
    ("- {model.depth: 2\n- {model.depth: 3}\n", "is not valid YAML (line 2, column 3: expected ',' or '}', but "
                                                "got '{')"),
    ("[]\n", "has no points; give a YAML list"),  # (it was "not a YAML list")
    ("", "has no points"),
])
def test_points_file_errors_are_one_line(cli, results, tmp_path, text, message):
    points = tmp_path / "p.yaml"
    points.write_text(text)
    _one_line_error(_sweep(cli, results, "--points", points, name="pts"), message)
    assert not results.exists()


def test_points_given_twice_is_one_line(cli, results, tmp_path):
    """Two --points files: the last was swept and the first dropped without a word."""
    for name in ("a.yaml", "b.yaml"):
        (tmp_path / name).write_text("- {model.activation: tanh}\n")
    out = _sweep(cli, results, "--points", tmp_path / "a.yaml", "--points", tmp_path / "b.yaml", name="pts")
    _one_line_error(out, f"--points is given 2 times ({tmp_path / 'a.yaml'}, {tmp_path / 'b.yaml'}); give one file")
    assert not results.exists()


def test_a_missing_launcher_plugin_names_the_extra_even_when_find_spec_raises(monkeypatch):
    # without the `cluster` extra there is no hydra_plugins package at all, and find_spec raises
    monkeypatch.setitem(sweep_mod.LAUNCHER_PLUGINS, "joblib", ("gradflow_absent_pkg.hydra_joblib_launcher", "cluster"))
    with pytest.raises(GradflowError, match=r"hydra/launcher=joblib needs its Hydra plugin: pip install 'gradflow\[cluster\]'"):
        sweep_mod.check_launcher("joblib")


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc to see the imports under way")
def test_ctrl_c_while_the_command_line_imports_is_no_traceback(results):
    """Ctrl-C in the command line's first second, while it imports numpy, pandas, torch (before any
    command can take it): exit 130 and nothing on the terminal, not a KeyboardInterrupt's traceback
    from deep in an import. Several, 10 ms apart, as a held-down or impatient Ctrl-C sends them: one
    that landed in a module lock's weakref callback was printed as "Exception ignored" and lost, and
    the command ran on (a CI run saw `ls` go on to exit 1)."""
    proc = subprocess.Popen([sys.executable, "-m", "gradflow", "ls", str(results)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV, start_new_session=True)
    deadline = time.time() + 30
    while time.time() < deadline and proc.poll() is None:
        try:  # numpy's extension loaded: the imports are under way, with pandas' and the rest to come
            if "numpy" in Path(f"/proc/{proc.pid}/maps").read_text():
                break
        except OSError:
            pass
        time.sleep(0.005)
    for _ in range(8):
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            time.sleep(0.01)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err and "KeyboardInterrupt" not in err, err


def test_ctrl_c_while_a_config_is_composed_waits_for_the_compose():
    """OmegaConf updates nodes in place: a KeyboardInterrupt halfway leaves a config half built and
    the error that follows is a traceback. A Ctrl-C during the compose is raised when it is done."""
    from gradflow.sweep import _composing

    saved = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        finished = []
        with pytest.raises(KeyboardInterrupt):
            with _composing():
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.05)  # the signal has been delivered by now
                finished.append(True)
        assert finished == [True]
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, saved)


def test_a_worker_takes_one_ctrl_c_per_job_holds_it_outside_and_then_starts_none(in_a_worker, monkeypatch,
                                                                               tmp_path):
    """In a sweep's worker: in a job the first Ctrl-C is a KeyboardInterrupt and a second is ignored (the
    sweep's process passes its Ctrl-C on to workers the terminal may have sent one already: the run
    stopped by the first must be recorded whole); outside its jobs (a worker forked from the fork
    server starts so) Ctrl-C raises nothing, and the next job starts nothing, leaving no empty folder
    where Hydra made one for it (a folder an earlier run wrote into stays)."""
    folders = [tmp_path / name for name in ("stopped", "untouched", "queued", "earlier")]
    for f in folders:
        f.mkdir()
    (folders[3] / "config.yaml").write_text("seed: 0\n")
    signal.signal(signal.SIGINT, workers.hold_interrupt)
    recorded = []
    with pytest.raises(KeyboardInterrupt):
        with workers.job(folders[0]):
            try:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.5)
            except KeyboardInterrupt:  # the first: the run stops and is recorded ...
                os.kill(os.getpid(), signal.SIGINT)  # ... while a second arrives, and is ignored
                time.sleep(0.05)
                recorded.append(True)
                raise
    assert recorded == [True] and workers.stopping()
    assert signal.getsignal(signal.SIGINT) is workers.hold_interrupt
    monkeypatch.setattr(workers, "_interrupted", False)
    with workers.job(folders[1]):  # a job untouched by Ctrl-C
        assert signal.getsignal(signal.SIGINT) is workers.take_interrupt_once
    os.kill(os.getpid(), signal.SIGINT)  # between jobs: held, nothing raised
    time.sleep(0.05)
    started = []
    for queued in folders[2:]:
        with pytest.raises(KeyboardInterrupt):
            with workers.job(queued):
                started.append(True)
    assert started == [] and signal.getsignal(signal.SIGINT) is workers.hold_interrupt
    assert [f.exists() for f in folders] == [True, True, False, True]


# The fork server started, and a Ctrl-C to the process group while the command's process is still
# inside the start (injected after the spawn, where a real one lands by chance, once the server is
# importing its preload); or no Ctrl-C, and a process forked from the server says which signals it blocks
SERVER_START = """
import os, signal, sys, time
from concurrent.futures import ProcessPoolExecutor
import multiprocessing
from multiprocessing import forkserver
from gradflow import workers

spawn = forkserver.ensure_running
def spawn_then_ctrl_c():
    spawn()
    time.sleep(0.5)
    os.killpg(0, signal.SIGINT)
if sys.argv[1] == "ctrl-c":
    forkserver.ensure_running = spawn_then_ctrl_c
workers.allow_fork_server()
try:
    workers.start_fork_server(["gradflow.plots.preload"])
except KeyboardInterrupt:
    print("interrupted")
    sys.exit(130)
print("started")
with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("forkserver")) as pool:
    print(sorted(s.name for s in pool.submit(signal.pthread_sigmask, signal.SIG_BLOCK, ()).result()))
"""


@pytest.mark.skipif(sys.platform != "linux", reason="the fork server is used on Linux only")
def test_a_ctrl_c_while_the_fork_server_is_spawned_is_neither_lost_nor_a_traceback():
    """The command's process blocks SIGINT while it spawns the server, which starts with it blocked: a
    Ctrl-C then reaches the command once it unblocks (it used to be ignored there, and the command ran
    on to exit 0); the server, importing, drops it without a traceback and leaves with the command;
    and the processes forked from the server can take a Ctrl-C (they block nothing)."""
    proc = subprocess.Popen([sys.executable, "-c", SERVER_START, "ctrl-c"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV, start_new_session=True)
    out, err = proc.communicate(timeout=120)  # until the server, which holds the pipes too, has left
    assert (proc.returncode, out) == (130, "interrupted\n") and "Traceback" not in err, out + err
    assert _group_left(proc.pid) == []

    done = subprocess.run([sys.executable, "-c", SERVER_START, "plain"], capture_output=True, text=True,
                          env=ENV, timeout=120)
    assert done.returncode == 0 and done.stdout == "started\n[]\n", done.stdout + done.stderr


def test_a_ctrl_c_inside_an_import_is_taken_once_the_import_is_done(tmp_path):
    """While figures are drawn in several processes, a Ctrl-C that comes while this process imports a
    module (here one that sends it at its start, then takes 0.3 s) is raised once the import is done,
    not inside Python's import machinery, where it can be lost or leave the import lock held."""
    (tmp_path / "slow_module.py").write_text("import os, signal, time\nos.kill(os.getpid(), signal.SIGINT)\n"
                                             "time.sleep(0.3)\n")
    script = f"""
import signal, sys, time
sys.path.insert(0, {str(tmp_path)!r})
from gradflow import workers
try:
    with workers.interrupts_outside_imports():
        import slow_module
        sys.stdout.write("imported\\n")  # (one call: print's text and its newline are two writes, and the Ctrl-C
        time.sleep(5)  # taken once the import is done came between them under load: "importedinterrupted")
    print("not interrupted")
except KeyboardInterrupt:
    print("interrupted", "slow_module" in sys.modules)
print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=ENV, timeout=60)
    assert done.stdout == "imported\ninterrupted True\nTrue\n", done.stdout + done.stderr


@pytest.mark.skipif(sys.platform != "linux", reason="the fork server is used on Linux only")
@pytest.mark.parametrize("delay", [0.0, 0.5])
def test_ctrl_c_while_the_fork_server_imports_is_one_line(results, delay):
    """Ctrl-C reaches the whole process group, the fork server too, which may still be importing torch
    (~3 s from the command's start): exit 130, no traceback from the server, no warning about leaked
    semaphores (the workers' pool was being set up), no process left behind holding the command's
    output (a worker forked after the sweep's process left exits too), and no temporary folder of
    multiprocessing's (/tmp/pymp-*, the server's socket) left behind."""
    small = [o for o in SMALL if not o.startswith("model.depth=")]  # (a replaced key's note would come first)
    args = [sys.executable, "-m", "gradflow", "sweep", *small, "model.depth=2,3", "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2", f"results={results}", "--name", "early"]
    tmp = Path(tempfile.mkdtemp(prefix="gf-", dir="/tmp"))  # (short: the server's socket path has ~100 characters)
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**ENV, "TMPDIR": str(tmp)}, start_new_session=True)
    first = proc.stdout.readline()  # "sweep <folder>: 2 runs ...", printed once planning is done
    time.sleep(delay)
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=60)  # until every writer of the pipes is gone, the server too
    assert first.startswith("sweep ") and proc.returncode == 130, first + out + err
    assert "Traceback" not in err, err
    assert "runs finished; rerun the same command to resume" in err, err  # its line, however early the Ctrl-C
    assert "leaked" not in err, err
    assert _group_left(proc.pid) == []
    left = list(tmp.glob("pymp-*"))
    shutil.rmtree(tmp)
    assert left == []


@pytest.mark.skipif(sys.platform != "linux", reason="the fork server is used on Linux only")
def test_no_fork_server_where_its_socket_path_would_be_too_long(tmp_path):
    # a TMPDIR of ~100 characters (a cluster's per-job scratch folder) made the server's AF_UNIX socket path
    # too long: a traceback before the sweep began; now the command goes on without a server
    long = tmp_path / ("x" * 60) / ("y" * 40)
    long.mkdir(parents=True)
    script = ("from gradflow import workers\nworkers.allow_fork_server()\n"
              "print(workers.start_fork_server(['gradflow.plots.preload']))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env={**ENV, "TMPDIR": str(long)})
    assert (done.returncode, done.stdout, done.stderr) == (0, "False\n", "")


@pytest.mark.skipif(sys.platform != "linux", reason="the fork server is used on Linux only")
def test_the_fork_server_ends_with_its_command(tmp_path):
    # a command that started a fork server and ended before the server's imports did (nothing left to
    # run; a bad point's error) left it importing on a core, and holding the command's output, so that
    # `gradflow sweep ... | tee log` waited for it; once done it tore its interpreter down (~0.2 s more)
    (tmp_path / "slow_preload.py").write_text("import time\ntime.sleep(60)\n")
    script = ("from gradflow import workers\nworkers.allow_fork_server()\n"
              "print(workers.start_fork_server(['slow_preload']))")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                            env={**ENV, "PYTHONPATH": str(tmp_path)}, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=30)  # (to the output's end: the server held it too, while it lived)
        assert (proc.returncode, out) == (0, "True\n")
        deadline = time.monotonic() + 2  # (a loaded machine may show the server still exiting, state R, a moment)
        while group_processes(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert group_processes(proc.pid) == []  # (without the fix it sleeps its 60 s: the output wait timed out)
    finally:
        for line in group_processes(proc.pid):
            os.kill(int(line.split()[2]), signal.SIGKILL)


def recorded_whole(root: Path) -> None:
    """Two runs recorded `interrupted` by their own workers (not read so from a dead process), with the
    steps done and both tables, which load; the third run started nothing. joblib used to kill the
    workers as soon as the sweep's process took Ctrl-C: runs left `running`, with half their tables; and a
    job queued behind them left the empty folder Hydra had made for it."""
    folders = list(root.glob("model.depth=*"))
    assert all((p / store.RUN_FILE).exists() for p in folders), folders  # (no empty folder of a queued job)
    records = {p.name: store.read_run(p) for p in folders}
    assert len(records) == 2 and {r["status"] for r in records.values()} == {"interrupted"}, records
    for name, r in records.items():
        assert r["steps_done"] > 0, (name, r)
        assert not store.read_table(root / name / store.LAYERS_FILE).empty
        assert not store.read_table(root / name / store.METRICS_FILE).empty


@pytest.mark.slow
def test_no_joblib_worker_outlives_its_sweep(results):
    """Ctrl-C to the process group, or to the sweep's process alone, or SIGTERM to the group: the runs in
    flight are recorded whole, exit 130, no process of the group is left; killing only the parent
    (SIGKILL): its workers and resource trackers leave within seconds."""
    root = results / "j"
    # steps no run ends before the Ctrl-C: 5000 (~10 s) let one whose worker started late finish as it came
    args = [sys.executable, "-m", "gradflow", "sweep", *SMALL, "train.steps=100000", "train.eval_every=1000",
            "model.depth=2,3,4", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", f"results={results}",
            "--name", "j"]

    def in_flight() -> list[int]:
        """The pids of the workers whose runs are in flight (a run.json saying `running` names its writer)."""
        return [r["pid"] for r in map(store.read_run, root.glob("*")) if r and r.get("status") == "running"]

    def two_in_flight():
        return len(in_flight()) == 2

    def interrupted(send) -> tuple[subprocess.Popen, str]:
        """The sweep, with two runs in flight past their first probed steps, sent SIGINT by `send(pid)`."""
        import psutil

        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
                                start_new_session=True)
        deadline = time.time() + 240
        while time.time() < deadline and not two_in_flight():
            time.sleep(0.1)
        # each worker has trained 0.5 s of CPU time since its run said `running` (hundreds of steps; its
        # first takes milliseconds), a condition a loaded machine delays but cannot cut short as it did a
        # fixed wait of 2 s
        workers_ = {pid: psutil.Process(pid) for pid in in_flight()}
        assert len(workers_) == 2, "never had two runs in flight"
        start = {pid: sum(w.cpu_times()[:2]) for pid, w in workers_.items()}
        while time.time() < deadline and any(sum(w.cpu_times()[:2]) - start[pid] < 0.5
                                             for pid, w in workers_.items()):
            time.sleep(0.05)
        send(proc.pid)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 130 and "interrupted: 0 of 3 runs finished" in err, err
        return proc, err

    proc, err = interrupted(lambda pid: os.killpg(pid, signal.SIGINT))
    # loky kills the workers' trees with psutil (the cluster extra has it): its pgrep fallback, killed by the
    # same Ctrl-C, printed a traceback inside a "Failed to kill subprocesses" warning in 2 of 5 tries
    from joblib.externals.loky.backend import utils as loky_utils

    assert loky_utils.psutil is not None and "Traceback" not in err and "Failed to kill" not in err, err
    assert _group_left(proc.pid) == []
    assert sorted(_statuses(root).values()) == ["interrupted", "interrupted"]
    recorded_whole(root)

    # Ctrl-C to the sweep's process alone (kill -INT, or SIGTERM): passed on to its workers, same records
    proc, _ = interrupted(lambda pid: os.kill(pid, signal.SIGINT))
    assert _group_left(proc.pid) == []
    recorded_whole(root)

    # SIGTERM to the process group (`timeout`, a scheduler's time limit): the same records. It killed the
    # fork server, whose death the pool took for its workers': it killed them outright, their runs left
    # `running` without their tables
    proc, err = interrupted(lambda pid: os.killpg(pid, signal.SIGTERM))
    assert _group_left(proc.pid) == [] and "Traceback" not in err, err
    recorded_whole(root)

    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV,
                            start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline and not two_in_flight():
        time.sleep(0.1)
    proc.kill()
    proc.wait()
    deadline = time.time() + 15
    while time.time() < deadline and group_processes(proc.pid):
        time.sleep(0.5)
    assert group_processes(proc.pid) == []
    assert set(_statuses(root).values()) == {"interrupted"}


POOL_FOLDER = """
import numpy as np
from joblib.executor import get_memmapping_executor
pool = get_memmapping_executor(2, context_id="gradflow-test")
pool.submit(np.sum, np.ones(500_000)).result()  # 4 MB: memory-mapped through the pool's temporary folder
print(pool._temp_folder_manager._cached_temp_folders["gradflow-test"], flush=True)
from gradflow.cli.console import leave_interrupted
leave_interrupted("interrupted")
"""


def test_a_command_leaving_after_ctrl_c_deletes_its_joblib_pools_folder(tmp_path):
    # leaving at once after Ctrl-C skips exit handlers, joblib's too: its memory-map folder stayed in
    # /dev/shm, and loky's resource tracker, once it noticed, warned about a "leaked" folder on the terminal
    proc = subprocess.Popen([sys.executable, "-c", POOL_FOLDER], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=ENV, start_new_session=True, cwd=tmp_path)
    try:
        folder = Path(proc.stdout.readline().strip())
        assert proc.wait(timeout=120) == 130  # (its workers and the tracker hold the pipes open: no EOF yet)
        assert folder.name.startswith("joblib_memmapping_folder") and not folder.exists()
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the pool's workers and its tracker, not told here to leave
    assert proc.stderr.read().strip() == "interrupted"


# --- a failed run is no finished one: a rerun redoes it ------------------------------------------------

def _recorded_run(tmp_path, status):
    """A run folder whose run.json says `status`, with config hash abc."""
    job = tmp_path / "study" / "default"
    job.mkdir(parents=True)
    store.write_text(job / store.CONFIG_FILE, "seed: 0\n")
    store.write_json(job / store.RUN_FILE, {"status": status, "config_hash": "abc", "error": "boom",
                                            "files": [store.CONFIG_FILE]})
    return job


def test_a_failed_run_is_not_finished_so_a_rerun_redoes_it(tmp_path):
    job = _recorded_run(tmp_path, store.FAILED)
    assert store.status_of(job, store.read_run(job))[0] == store.FAILED
    assert store.standing(job, "abc") is None
    assert not store.is_finished(job, "abc")
    assert not store.is_finished(job)


@pytest.mark.parametrize("status", [store.OK, store.DIVERGED])
def test_an_ok_or_diverged_run_of_the_same_hash_is_finished(tmp_path, status):
    # (a diverged run is a result: a resumed sweep that trained it again each time spent its time for nothing)
    job = _recorded_run(tmp_path, status)
    assert store.is_finished(job, "abc") and store.standing(job, "other") == store.OTHER


def _written_run(job_dir, status, config_hash):
    """A run folder as gradflow writes one: config.yaml, two tables, run.json (status, hash, files)."""
    job_dir.mkdir(parents=True)
    store.write_text(job_dir / store.CONFIG_FILE, f"hash: {config_hash}\n")
    for name in (store.METRICS_FILE, store.LAYERS_FILE):
        store.write_table(job_dir / name, pd.DataFrame({"step": [0], "value": [1.0]}))
    store.write_json(job_dir / store.RUN_FILE, {store.STATUS: status, "config_hash": config_hash,
                                               "files": [store.CONFIG_FILE, store.METRICS_FILE, store.LAYERS_FILE]})


# `recover` without `and is_finished(staging)`: a swap cut off with a replacement that never ended
# (failed) in staging put that replacement in the point's place and deleted the finished old run
def test_recover_puts_the_old_run_back_when_the_replacement_did_not_finish(tmp_path):
    from gradflow import store

    job = tmp_path / "s" / "p"
    _written_run(store.staging_dir(job, store.ASIDE), store.OK, "old")
    _written_run(store.staging_dir(job), store.FAILED, "new")
    assert store.is_finished(store.staging_dir(job, store.ASIDE)) and not store.is_finished(store.staging_dir(job))
    store.recover(job)
    assert store.read_run(job)["config_hash"] == "old" and store.is_finished(job)
    assert not store.staging_dir(job, store.ASIDE).exists()

    # and a replacement that did finish takes the place (the aside run goes)
    job2 = tmp_path / "s" / "q"
    _written_run(store.staging_dir(job2, store.ASIDE), store.OK, "old")
    _written_run(store.staging_dir(job2), store.OK, "new")
    store.recover(job2)
    assert store.read_run(job2)["config_hash"] == "new"
    assert not store.staging_dir(job2, store.ASIDE).exists() and not store.staging_dir(job2).exists()


def test_a_run_removal_cut_off_leaves_no_run_json(tmp_path):
    # run.json goes first: a Ctrl-C (or a kill) as the rest of the folder is removed leaves nothing that reads as a
    # run (removed in rmtree's own order, a run.json outlasted a table: an incomplete run of the old settings)
    job = tmp_path / "s" / "p"
    _written_run(job, store.OK, "old")
    assert store.find_runs(tmp_path / "s") == [job]
    with pytest.raises(KeyboardInterrupt), ctrl_c_on_entering(shutil.rmtree):
        store.clear_run(job)
    assert not (job / store.RUN_FILE).exists()
    with pytest.raises(GradflowError, match="holds no runs"):
        store.find_runs(tmp_path / "s")


def test_the_sweeps_own_process_is_no_worker_and_a_second_ctrl_c_there_raises_at_once(monkeypatch):
    """While this process runs a sweep (`workers.serving`) it is the sweep's process, not a worker of it: a
    second Ctrl-C while a run is recorded raises at once (the user insists), where a worker's would wait.
    (A bug this catches: in_worker() true wherever GRADFLOW_SWEEP_PID is set, the sweep's own process included.)"""
    monkeypatch.delenv(workers.SWEEP_PID, raising=False)
    saved = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with workers.serving():
            assert not workers.in_worker()
            assert _three_ctrl_cs_in_a_block() == [0]  # the first Ctrl-C waited, the second raised at once
        monkeypatch.setenv(workers.SWEEP_PID, str(os.getppid()))  # a sweep served by another process
        assert workers.in_worker()
    finally:
        signal.signal(signal.SIGINT, saved)


def test_serving_puts_the_environment_back_as_it_was(monkeypatch):
    """After a sweep, GRADFLOW_SWEEP_PID is as before: absent, or the sweep this process serves (a kept
    worker running a reproduction's next arm). Left set, every process started later by this one (a plot's
    fork server, a subprocess) took itself for a worker of this sweep. (A bug this catches: serving() not restoring it.)"""
    monkeypatch.delenv(workers.SWEEP_PID, raising=False)
    with workers.serving():
        assert os.environ[workers.SWEEP_PID] == str(os.getpid())
    assert workers.SWEEP_PID not in os.environ
    monkeypatch.setenv(workers.SWEEP_PID, "12345")
    with workers.serving():
        assert workers.owner() == os.getpid()
    assert os.environ[workers.SWEEP_PID] == "12345"


# --- standard output closed by its reader (`gradflow ... | head`) --------------------------------------------

def test_a_run_whose_output_is_closed_is_recorded_interrupted_and_says_why(results):
    """rich's broken-pipe handling raised SystemExit(1) inside the training loop's progress line: the run was
    left `running` without its tables, nothing said why, exit 1. It is an interruption, as SIGPIPE is."""
    small = [o for o in SMALL if not o.startswith(("train.steps=", "train.eval_every="))]
    args = [sys.executable, "-m", "gradflow", "run", *small, "train.steps=20000", "train.eval_every=1000",
            f"results={results}", "name=piped"]  # (a progress line every 4000 steps: ~3 s)
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    proc.stdout.readline()  # (the first progress line)
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 141, err
    assert "interrupted (standard output closed) at step" in err and "Traceback" not in err, err
    (job,) = [p for p in (results / "piped").iterdir() if p.is_dir()]
    record = store.read_run(job)
    assert record["status"] == "interrupted" and record["steps_done"] > 0, record
    assert not store.read_table(job / store.LAYERS_FILE).empty


def test_a_listing_whose_reader_left_exits_141_without_a_word(results, cli):
    assert cli("run", *SMALL, "train.steps=2", f"results={results}", "name=few").exit_code == 0
    proc = subprocess.Popen([sys.executable, "-m", "gradflow", "ls", str(results / "few")], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV)
    proc.stdout.close()  # (before a line is written: `gradflow ls | head -0`)
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 141 and err == "", err


@pytest.mark.parametrize("args", [["--help"], ["run", "--help"]], ids=["gradflow", "run"])
def test_a_help_page_whose_reader_left_exits_141_without_a_word(args):
    # Typer's console found the pipe closed and exited 1, as though the command had failed (`gradflow run
    # --help | head -2` in a script with `set -o pipefail`)
    proc = subprocess.Popen([sys.executable, "-m", "gradflow", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV)
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 141 and err == "", err
    done = subprocess.run([sys.executable, "-m", "gradflow", *args], capture_output=True, text=True, env=ENV)
    assert done.returncode == 0 and "Usage:" in done.stdout  # (read whole: 0, as ever)


def test_a_sweep_whose_output_is_closed_stops_as_interrupted(results):
    # its lines are printed from a watching thread: the closed output was that thread's traceback, and the
    # sweep ran every run to exit 0. (Runs of 1000 steps: of 300, on a loaded CPU all six once ended before the
    # watcher, looking every 0.5 s, wrote its next line into the closed output)
    small = [o for o in SMALL if not o.startswith(("train.steps=", "train.eval_every="))]
    args = [sys.executable, "-m", "gradflow", "sweep", *small, "train.steps=1000", "train.eval_every=1000",
            "seed=0,1,2,3,4,5", f"results={results}", "--name", "s"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    while (line := proc.stdout.readline()) and not line.startswith("1/"):
        pass
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=300) == 141, err
    assert "interrupted (standard output closed):" in err and "Traceback" not in err, err
    assert list(_statuses(results / "s").values()).count("ok") < 6


def test_an_interrupted_joblib_sweep_waits_for_the_runs_its_workers_are_recording(tmp_path, monkeypatch):
    # a job a worker had just begun read as queued to the pool (its future cancellable), or the Ctrl-C reached
    # the sweep's process between its calls into joblib: the pool's end killed the worker as it recorded its
    # run, left `running` without tables (2 of 14 Ctrl-Cs 6-9 s into a 6-run joblib sweep). The sweep now
    # waits for every run whose run.json names a live worker and reads `running`; a dead worker's, or a
    # finished run's, it does not wait for
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        for name, status, pid in (("recording", "running", worker.pid), ("done", "ok", worker.pid),
                                  ("other", "running", os.getpid())):
            (tmp_path / name).mkdir()
            (tmp_path / name / "run.json").write_text(json.dumps({"status": status, "pid": pid}))

        def finish():
            time.sleep(0.5)
            store.finish(tmp_path / "recording", {"status": "interrupted", "pid": worker.pid})

        threading.Thread(target=finish).start()
        start = time.monotonic()
        workers._wait_for_recording(tmp_path, {worker.pid}, start + 20)
        assert 0.5 <= time.monotonic() - start < 5  # (until the run was recorded, not the deadline)
        (tmp_path / "recording" / "run.json").write_text(json.dumps({"status": "running", "pid": worker.pid}))
        start = time.monotonic()
        workers._wait_for_recording(tmp_path, {worker.pid}, start + 0.3)  # (never recorded: to the deadline)
        assert 0.3 <= time.monotonic() - start < 3
        # a worker's run left `running` when its job raised, the worker gone on to another (its latest), and an
        # earlier sweep's whose pid a worker has now: neither is waited for (the sweep waited out the minute)
        (tmp_path / "later").mkdir()
        (tmp_path / "later" / "run.json").write_text(json.dumps({"status": "interrupted", "pid": worker.pid}))
        os.utime(tmp_path / "recording" / "run.json", (time.time() - 5, time.time() - 5))
        (tmp_path / "later" / "run.json").write_text(json.dumps({"status": "running", "pid": worker.pid}))
        threading.Thread(target=lambda: (time.sleep(0.3), store.finish(tmp_path / "later", {
            "status": "interrupted", "pid": worker.pid}))).start()
        start = time.monotonic()
        workers._wait_for_recording(tmp_path, {worker.pid}, start + 20)
        assert 0.3 <= time.monotonic() - start < 5  # (until the latest was recorded; the older one, never)
        monkeypatch.setattr(workers, "_since", time.time() + 60)  # (every run.json here begun before the sweep)
        (tmp_path / "later" / "run.json").write_text(json.dumps({"status": "running", "pid": worker.pid}))
        start = time.monotonic()
        workers._wait_for_recording(tmp_path, {worker.pid}, start + 20)
        assert time.monotonic() - start < 1
    finally:
        worker.kill()
        worker.wait()
    start = time.monotonic()
    workers._wait_for_recording(tmp_path, {worker.pid}, start + 20)  # (its worker is gone: nothing more comes)
    assert time.monotonic() - start < 1


def _a_worker_holding_ctrl_c() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    return os.getpid()


def test_a_ctrl_c_ending_a_sweep_whose_pool_is_kept_waits_for_its_runs_then_ends_the_pool(tmp_path, monkeypatch):
    # a reproduction keeps joblib's pool from one arm's sweep to the next (`workers.kept`); a Ctrl-C that
    # reached its process between its calls into joblib ended the pool only at the reproduction's end, which
    # knows no sweep folder: the runs its workers were recording were killed, `running` without tables
    from joblib import Parallel, delayed

    monkeypatch.setattr(workers, "_waited", False)  # (no Ctrl-C went through joblib's abort)
    with workers.kept():
        # (each worker that ran a job ignores Ctrl-C, as a sweep's worker holds it while it records its run)
        pids = set(Parallel(n_jobs=2, backend="loky")(delayed(_a_worker_holding_ctrl_c)() for _ in range(8)))
        workers.sweep_ended(tmp_path)  # (a sweep that ended as planned: the pool is kept for the next)
        assert all(store.pid_alive(pid) for pid in pids)
        (tmp_path / "recording").mkdir()
        (tmp_path / "recording" / "run.json").write_text(json.dumps({"status": "running", "pid": min(pids)}))
        threading.Thread(target=lambda: (time.sleep(0.5), store.finish(tmp_path / "recording", {
            "status": "interrupted", "pid": min(pids)}))).start()
        start = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            try:
                raise KeyboardInterrupt
            finally:
                workers.sweep_ended(tmp_path)
        assert 0.5 <= time.monotonic() - start < 20  # (it waited for the run to be recorded)
        assert not any(store.pid_alive(pid) for pid in pids)  # (and then ended the pool, kept or not)


def test_an_empty_config_file_makes_a_run_incomplete(tmp_path):
    """A kill between creating config.yaml and writing it leaves it empty: that run is incomplete, not ok
    (a size check of >= 0 took any file that exists as whole)."""
    job = tmp_path / "model.depth=2"
    job.mkdir()
    rec = {"status": "ok", "config_hash": "h", "files": [store.CONFIG_FILE]}
    (job / store.CONFIG_FILE).write_text("")
    assert store.status_of(job, rec)[0] == store.INCOMPLETE
    (job / store.CONFIG_FILE).write_text("seed: 0\n")
    assert store.status_of(job, rec)[0] == store.OK


def test_a_stale_run_says_its_replacement_failed_only_where_one_did(tmp_path):
    """A run of other settings than its sweep spec's is stale; it reads "its replacement failed" only where a
    replacement of the spec's settings failed (run.json's `replacement`), not for every changed setting
    (ls counts those under "replacement failed")."""
    job = tmp_path / "model.depth=2"
    job.mkdir()
    (job / store.CONFIG_FILE).write_text("seed: 0\n")
    rec = {"status": "ok", "config_hash": "old", "files": [store.CONFIG_FILE]}
    spec = {"runs": {job.name: "new"}}
    status, why = store.status_of(job, rec, spec)
    assert status == store.STALE and not why.startswith(store.REPLACEMENT_FAILED)
    failed = {**rec, store.REPLACEMENT: {"config_hash": "new", "error": "boom"}}
    assert store.status_of(job, failed, spec) == (store.STALE, store.REPLACEMENT_FAILED + "boom")
    assert store.status_of(job, rec, {"runs": {job.name: "old"}}) == (store.OK, "")


def test_a_lock_that_wrote_something_leaves_its_lock_file(tmp_path):
    """The lock file goes only with a new study folder left empty; a writer that wrote into it leaves the lock
    file (removed on every exit, a waiting writer would lock the removed file while a third made a new one)."""
    study = tmp_path / "results" / "s"
    with store.lock(study, "test"):
        (study / "model.depth=2").mkdir()
    assert (study / store.LOCK_FILE).exists()
    untouched = tmp_path / "results" / "t"
    with store.lock(untouched, "test"):
        pass
    assert not untouched.exists()  # nothing written: no trace


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc (Linux)")
def test_a_sweep_process_is_told_from_a_later_one_of_the_same_pid():
    """A worker killed in a run is marked with the sweep process that saw it die, and that sweep does not run the
    point again; by pid alone, a later sweep given the same pid (a container's pid 1, every time) skipped the
    point for good. The mark is the pid and the process's start time."""
    from gradflow import workers

    me = workers.process_token(os.getpid())
    assert me == workers.process_token(os.getpid()) and me.startswith(f"{os.getpid()}:"), me
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        time.sleep(0.05)
        theirs = workers.process_token(child.pid)
        # (started after this process: its start time is later, so a reused pid reads as another process)
        assert theirs.startswith(f"{child.pid}:") and int(theirs.split(":")[1]) >= int(me.split(":")[1]), (me, theirs)
    finally:
        child.kill()
        child.wait()
