"""gradflow.Recorder in a user's own loop, and probe-point discovery on any nn.Module."""

from __future__ import annotations

import contextlib
import copy
import gc
import json
import math
import os
import re
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import yaml

import gradflow
from gradflow import store
from gradflow.errors import GradflowError, shorten_command
from gradflow.models.discover import Projection, discover
from tests.conftest import ctrl_c_on_entering

ROOT = Path(__file__).resolve().parents[1]


class Backwards(nn.Module):
    """Registered in the reverse of the order it runs; a functional activation after `first`."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(6, 3)
        self.act = nn.Tanh()
        self.norm = nn.LayerNorm(6)
        self.middle = nn.Linear(5, 6)
        self.first = nn.Linear(4, 5)

    def forward(self, x):
        h = F.silu(self.first(x))  # a functional activation: `first` has no activation module
        return self.head(self.act(self.norm(self.middle(h))))


def test_probe_points_come_in_forward_order_named_by_path_with_their_activation_modules():
    model = Backwards()
    points = discover(model, torch.randn(2, 4))
    assert [p.name for p in points] == ["first", "middle", "head"]
    assert [p.activation for p in points] == [None, model.act, None]  # norm may sit between layer and activation

    shared = nn.Sequential(nn.Linear(3, 3), nn.Tanh(), nn.Linear(3, 3))
    shared.insert(3, shared[1])  # one Tanh module after both layers: whose output it saw is unknowable
    assert [p.activation for p in discover(shared, torch.randn(2, 3))] == [None, None]

    class Residual(nn.Module):  # one Tanh after the input layer and after each residual add
        def __init__(self):
            super().__init__()
            self.inp, self.act, self.block, self.head = nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 6), nn.Linear(6, 2)

        def forward(self, x):
            h = self.act(self.inp(x))
            return self.head(self.act(h + self.block(h)))

    # `inp` alone feeds it, but its hook takes every call: the sum's statistics were read as inp's
    assert [p.activation for p in discover(Residual(), torch.randn(2, 4))] == [None, None, None]
    twice = nn.Sequential(nn.Linear(4, 4), nn.Tanh())
    looped = nn.Sequential(twice, twice)  # the layer and its own activation, called twice: still its own
    assert [p.activation for p in discover(looped, torch.randn(2, 4))] == [twice[1]]

    mha = nn.MultiheadAttention(8, 2, batch_first=True)
    pts = discover(mha, *(torch.randn(2, 5, 8),) * 3)
    assert [p.name for p in pts] == ["multiheadattention.in_proj", "out_proj"]
    assert isinstance(pts[0].layer, Projection) and pts[0].layer.weight is mha.in_proj_weight

    with pytest.raises(GradflowError, match="has no layer gradflow probes"):
        discover(nn.Sequential(nn.Tanh()), torch.randn(2, 3))

    with warnings.catch_warnings():  # a model that is itself the one layer: it ran (it was said to be "put after
        warnings.simplefilter("error")  # the last layer, its place unknown", under an empty name)
        assert [p.name for p in discover(nn.Linear(3, 2), torch.randn(2, 3))] == ["linear"]


@pytest.fixture(params=[None, 1], ids=["batched", "fused-from-the-second"])
def fuse_after(request, monkeypatch):
    """Each of the Recorder's two paths: batched, or the fused kernels loaded after its first probed step (a
    Recorder cannot know how many steps it will probe) and taking the second's statistics; their FUSED_MIN
    lowered to 0 for these nets' small tensors."""
    if request.param:
        from gradflow.probes import core

        monkeypatch.setattr(core, "FUSED_AFTER", request.param)
        monkeypatch.setattr(core, "FUSED_MIN", 0)
    return request.param


def test_recorder_values_equal_plain_autograd(tmp_path, fuse_after):
    """Also where the Recorder, which cannot know how many steps it will probe, loads the fused kernels
    after its FUSED_AFTER-th probed step (here the first) and takes the second's statistics with them."""
    torch.manual_seed(0)
    model = Backwards()
    reference = copy.deepcopy(model)
    x, y = torch.randn(32, 4), torch.randint(0, 3, (32,))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    rec = gradflow.Recorder(model, tmp_path / "run", config={"lr": 0.1}, every=2)
    for step in range(4):
        opt.zero_grad()
        with rec.step(step):
            loss = F.cross_entropy(model(x[step * 8:]), y[step * 8:])
            loss.backward()
        rec.log(step, train_loss=loss, log_lr=0.1)
        opt.step()
    rec.close()

    layers = gradflow.load(tmp_path / "run")
    assert sorted(set(layers.step)) == [0, 2]
    ref_opt = torch.optim.SGD(reference.parameters(), lr=0.1, momentum=0.9)
    layer_of = {"first": reference.first, "middle": reference.middle, "head": reference.head}
    for step in range(4):
        outs = {}

        def keep(m, i, z, k):
            z.retain_grad()
            outs[k] = z

        hooks = [m.register_forward_hook(lambda m, i, z, k=k: keep(m, i, z, k)) for k, m in layer_of.items()]
        act = {}
        hooks.append(reference.act.register_forward_hook(lambda m, i, o: act.update(y=o.detach())))
        ref_opt.zero_grad()
        F.cross_entropy(reference(x[step * 8:]), y[step * 8:]).backward()
        for h in hooks:
            h.remove()
        before = {k: m.weight.detach().clone() for k, m in layer_of.items()}
        ref_opt.step()
        if step % 2:
            continue
        got = layers[layers.step == step].set_index(["name", "quantity"])["value"]
        for k, m in layer_of.items():
            z = outs[k]
            expect = {"grad_norm": m.weight.grad.norm(), "bias_grad_norm": m.bias.grad.norm(),
                      "weight_norm": before[k].norm(), "signal_norm": (z.shape[0] * (z.grad ** 2).sum()).sqrt(),
                      "update_ratio": (m.weight.detach() - before[k]).norm() / before[k].norm()}
            if k == "middle":
                a = act["y"]
                expect.update(act_mean=a.mean(), act_std=a.std(), act_saturated=(a.abs() > 0.99).float().mean())
            assert set(got[k].index) == set(expect), k  # everything else is masked, not made up
            for q, v in expect.items():
                assert got[(k, q)] == pytest.approx(float(v), rel=1e-4, abs=1e-7), (step, k, q)

    metrics = gradflow.load(tmp_path / "run", "metrics")
    assert list(metrics[metrics.metric == "loss"].step) == [0, 1, 2, 3]
    assert set(metrics[metrics.metric == "lr"].split) == {"log"}
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["status"] == "ok" and run["final"]["train_loss"] == pytest.approx(metrics.value.iloc[-2])
    assert set(run) <= set(store.RUN_FIELDS), set(run) - set(store.RUN_FIELDS)  # each one a key TAKEN refuses
    assert run["fused_steps"] == (1 if fuse_after else 0)  # step 2's


@pytest.mark.parametrize("set_to_none", [True, False])
def test_recorder_norms_beyond_float32s_range_stay_exact_when_the_loop_zeroes_gradients_first(tmp_path, set_to_none):
    """A probed step is read at the next rec.step(), after the loop's zero_grad has dropped the
    gradients or zeroed them in place: norms whose float32 squares underflow must still come from
    the step's own gradients."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    (F.cross_entropy(model(x), y) * 1e-30).backward()  # the premise: entries ~1e-31, squares below float32's
    expect = [float(model[k].weight.grad.double().norm()) for k in (0, 2)]
    assert 0 < min(expect) < 1e-25 and float(model[0].weight.grad.norm()) == 0
    model.zero_grad()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    rec = gradflow.Recorder(model, tmp_path / "run", every=1)
    for step in range(2):
        opt.zero_grad(set_to_none=set_to_none)  # the previous step's gradients are gone when its probes are read
        with rec.step(step):
            (F.cross_entropy(model(x), y) * 1e-30).backward()
    rec.close()
    got = gradflow.load(tmp_path / "run").query("step == 0 and quantity == 'grad_norm'").sort_values("layer")
    assert list(got.value) == pytest.approx(expect, rel=1e-5, abs=0)


def test_recorder_under_autocast_gives_the_low_precision_tensors_norms_in_full(tmp_path):
    """Under autocast the layers' outputs, and so their signals dL/dz, are bfloat16: the probes take their
    norms in float32 (a bfloat16 norm keeps 2-3 digits), and the activation statistics too."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 10))
    x, y = torch.randn(256, 32), torch.randint(0, 10, (256,))
    outs, acts = {}, {}

    def keep(k, z):
        if z.requires_grad:  # (not in the Recorder's discovery pass)
            z.retain_grad()
            outs[k] = z

    for k in (0, 2, 4):
        model[k].register_forward_hook(lambda m, i, z, k=k: keep(k // 2, z))
    for k in (1, 3):
        model[k].register_forward_hook(lambda m, i, a, k=k: acts.update({k // 2: a.detach()}))
    rec = gradflow.Recorder(model, tmp_path / "run", every=1)
    with rec.step(0):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x)
        F.cross_entropy(out.float(), y).backward()
    rec.close()
    assert all(z.grad.dtype == torch.bfloat16 for z in outs.values())  # the premise
    got = gradflow.load(tmp_path / "run").set_index(["layer", "quantity"])["value"]
    for k, z in outs.items():
        expect = float(z.grad.double().norm()) * 256 ** 0.5
        assert got[(k, "signal_norm")] == pytest.approx(expect, rel=1e-5), k  # (bfloat16: 3e-3 off)
    for k, a in acts.items():
        assert got[(k, "act_std")] == pytest.approx(float(a.double().std()), rel=1e-5), k


def test_recorder_refuses_a_foreign_folder_and_records_a_crash(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(GradflowError, match="not a gradflow run"):
        gradflow.Recorder(nn.Linear(2, 2), tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    # a sweep's folder: its run there was listed stale, and `gradflow clean --stale` removed it (checkpoints too)
    swept = tmp_path / "swept"
    swept.mkdir()
    (swept / store.SWEEP_FILE).write_text(yaml.safe_dump({"swept": ["seed"], "runs": {"seed=0": "abc"}}))
    with pytest.raises(GradflowError, match=r"folder of a sweep .*stale.*clean --stale"):
        gradflow.Recorder(nn.Linear(2, 2), swept / "extra")
    assert not (swept / "extra").exists()
    # inside a run's folder, at any depth: ls of the study listed it as a run, ls of the run's folder left it out
    (tmp_path / "study" / "run0").mkdir(parents=True)
    (tmp_path / "study" / "run0" / store.RUN_FILE).write_text('{"status": "ok"}')
    for inner in (tmp_path / "study" / "run0" / "inner", tmp_path / "study" / "run0" / "a" / "b"):
        with pytest.raises(GradflowError, match=re.escape(f"{inner} is inside the folder of a run (") +
                           r".*a run holds no runs; give it a folder beside that one \(" +
                           re.escape(str(tmp_path / "study" / inner.name))):
            gradflow.Recorder(nn.Linear(2, 2), inner)
        assert not inner.exists()
    beside = tmp_path / "study" / "run0" / ".." / "run1"  # (beside run0, as written through it)
    with pytest.warns(UserWarning, match="no step was recorded"):
        with gradflow.Recorder(nn.Linear(2, 2), beside, steps=1) as rec:
            assert rec.path == beside

    model = nn.Linear(2, 2)
    with pytest.raises(RuntimeError):
        with gradflow.Recorder(model, tmp_path / "crash") as rec:
            with rec.step(0):
                model(torch.randn(3, 2)).sum().backward()
            raise RuntimeError("boom")
    run = json.loads((tmp_path / "crash" / "run.json").read_text())
    assert run["status"] == "failed" and "boom" in run["error"]
    assert set(run) <= set(store.RUN_FIELDS), set(run) - set(store.RUN_FIELDS)
    assert set(pd.read_parquet(tmp_path / "crash" / "layers.parquet").step) == {0}

    # Ctrl-C in the loop is no failure: the run is interrupted, its tables kept (it was "failed: KeyboardInterrupt")
    # (its last values with the step they were logged at: step 2's number was put on step 1's loss)
    with pytest.raises(KeyboardInterrupt):
        with gradflow.Recorder(model, tmp_path / "stopped", every=1) as rec:
            for step in range(3):
                with rec.step(step):
                    loss = model(torch.randn(3, 2)).sum()
                    loss.backward()
                if step < 2:
                    rec.log(step, train_loss=loss)
                if step == 0:  # (a value of another step: not step 1's)
                    rec.log(step, test_loss=5.0)
            raise KeyboardInterrupt
    run = store.read_run(tmp_path / "stopped")
    assert run["status"] == "interrupted" and "error" not in run
    assert run["final"] == {}  # no final result
    assert run["last_evaluated"] == {"step": 1, "train_loss": pytest.approx(loss_1 := float(
        gradflow.load(tmp_path / "stopped", "metrics").query("step == 1").value.iloc[0]))} and math.isfinite(loss_1)
    assert store.status_of(tmp_path / "stopped", run)[0] == "interrupted"
    assert set(store.load(tmp_path / "stopped").step) == {0, 1, 2}


def test_a_recorder_whose_tables_cannot_be_written_records_its_run_failed(tmp_path):
    """Writing the tables failed at close() (a full disk; here a folder where the layers table goes): the
    error reached the loop, and the run stayed `running` for good. It is `failed` with the error, which
    still goes on to the loop."""
    model = nn.Linear(2, 2)
    with pytest.raises(OSError, match=store.LAYERS_FILE):
        with gradflow.Recorder(model, tmp_path / "full") as rec:
            with rec.step(0):
                model(torch.randn(3, 2)).sum().backward()
            (tmp_path / "full" / store.LAYERS_FILE / "in-the-way").mkdir(parents=True)
    run = store.read_run(tmp_path / "full")
    assert run["status"] == "failed" and store.LAYERS_FILE in run["error"], run
    assert run["error"].split(":")[0].endswith("Error") and "Traceback" in run["traceback"], run
    assert store.status_of(tmp_path / "full", run)[0] == "failed" and run["files"] == [store.CONFIG_FILE]


@pytest.mark.parametrize("ctrl_cs", [1, 2])
def test_a_ctrl_c_while_the_recorder_writes_waits_for_run_json(tmp_path, ctrl_cs):
    """Ctrl-C as close() writes the tables cut them short: the run was left `running` and its study locked
    (in a notebook, until the kernel restarts). Now close() finishes first, then the Ctrl-C is raised; a
    second leaves at once, the run recorded interrupted with what was written by then, the lock let go."""
    model = nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 2))
    rec = gradflow.Recorder(model, tmp_path / "study" / "run", every=1)
    for step in range(3):
        with rec.step(step):
            model(torch.randn(8, 4)).sum().backward()
    with pytest.raises(KeyboardInterrupt), ctrl_c_on_entering(*[store.write_layers, store.write_metrics][:ctrl_cs]):
        rec.close()
    run = store.read_run(tmp_path / "study" / "run")
    assert run["status"] == ("ok", "interrupted")[ctrl_cs - 1], run
    assert run["files"] == [store.CONFIG_FILE, store.LAYERS_FILE, store.METRICS_FILE][:4 - ctrl_cs]
    assert set(store.load(tmp_path / "study" / "run").step) == {0, 1, 2}
    gradflow.Recorder(model, tmp_path / "study" / "run2").close()  # the study's lock was let go


def _loop_script(tmp_path, ending: str) -> subprocess.CompletedProcess:
    """A script whose Recorder, made without `with`, takes three probed steps, logging its loss, then `ending`
    (the script's last lines, inside the loop), run in its own process on the folder tmp_path/run."""
    script = tmp_path / "loop.py"
    script.write_text(
        "import sys, torch, gradflow\n"
        "model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))\n"
        "rec = gradflow.Recorder(model, sys.argv[1], every=1)\n"
        "for step in range(3):\n"
        "    with rec.step(step):\n"
        "        loss = model(torch.randn(8, 4)).square().mean()\n"
        "        loss.backward()\n"
        "    rec.log(step, train_loss=loss)\n" + ending)
    return subprocess.run([sys.executable, str(script), str(tmp_path / "run")], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)


def test_a_script_that_raises_outside_a_with_block_records_its_run_as_failed(tmp_path):
    # rec = Recorder(...) without `with`: the uncaught error left the run `running`, then read as interrupted
    out = _loop_script(tmp_path, "    if step == 1:\n        raise ValueError('loss went sideways')\n")
    assert out.returncode == 1 and "ValueError: loss went sideways" in out.stderr  # Python's traceback, as ever
    run = store.read_run(tmp_path / "run")
    assert run["status"] == "failed" and run["error"] == "ValueError: loss went sideways", run
    assert store.status_of(tmp_path / "run", run)[0] == "failed"
    assert set(store.load(tmp_path / "run").step) == {0, 1}


def test_a_script_sent_sigterm_keeps_its_runs_tables_as_ctrl_c_does(tmp_path):
    # `kill PID`, `timeout`, a SLURM time limit: the run was left `running` with config.yaml and run.json alone,
    # every recorded step lost, where Ctrl-C (and `gradflow run` given SIGTERM) keeps the tables up to there
    out = _loop_script(tmp_path, "    if step == 1:\n        import os, signal; os.kill(os.getpid(), signal.SIGTERM)\n")
    assert out.returncode == 1 and "KeyboardInterrupt" in out.stderr, out.stderr
    run = store.read_run(tmp_path / "run")
    assert run["status"] == "interrupted" and store.status_of(tmp_path / "run", run)[0] == "interrupted", run
    assert set(store.load(tmp_path / "run").step) == {0, 1}
    assert list(store.read_table(tmp_path / "run" / store.METRICS_FILE).step.unique()) == [0, 1]


def test_run_json_names_the_commit_of_the_scripts_repository_not_the_working_folders(tmp_path):
    # a script outside any repository, started from gradflow's checkout: run.json named gradflow's commit as
    # the user's code's; a script in a repository of its own gets that repository's commit
    outside, inside = tmp_path / "outside", tmp_path / "inside"
    outside.mkdir()
    assert _loop_script(outside, "").returncode == 0
    assert store.read_run(outside / "run")["git_commit"] is None
    inside.mkdir()
    git = ["git", "-C", str(inside), "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run([*git[:3], "init", "-q"], check=True)
    (inside / "README").write_text("a study\n")
    subprocess.run([*git, "add", "README"], check=True)
    subprocess.run([*git, "commit", "-qm", "a study"], check=True)
    head = subprocess.run([*git[:3], "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    assert _loop_script(inside, "").returncode == 0
    assert store.read_run(inside / "run")["git_commit"] == head
    # started by a relative path, then moved to another folder before its Recorder (Hydra's job.chdir does so)
    (inside / "moved.py").write_text(
        "import os, sys, torch, gradflow\n"
        "run = os.path.abspath(sys.argv[1])\n"
        "os.chdir(os.path.dirname(os.path.dirname(os.getcwd())))\n"
        "model = torch.nn.Sequential(torch.nn.Linear(4, 2))\n"
        "with gradflow.Recorder(model, run, every=1) as rec:\n"
        "    with rec.step(0):\n"
        "        model(torch.randn(8, 4)).square().mean().backward()\n")
    out = subprocess.run([sys.executable, "moved.py", "moved"], capture_output=True, text=True, timeout=300,
                         cwd=inside)
    assert out.returncode == 0, out.stderr
    assert store.read_run(inside / "moved")["git_commit"] == head


def test_ls_names_three_errors_and_counts_the_rest(cli, tmp_path):
    # four runs failing four ways: three named under the table, then "and 1 more error; --json gives each
    # run's error" (it ended "each run's")
    for i in range(4):
        model = nn.Linear(2, 2)
        with pytest.raises(ValueError), gradflow.Recorder(model, tmp_path / f"run{i}", every=1) as rec:
            with rec.step(0):
                model(torch.randn(3, 2)).sum().backward()
            raise ValueError(f"loss went sideways {i}")
    out = cli("ls", str(tmp_path))
    lines = out.output.splitlines()
    assert out.exit_code == 0 and sum(line.startswith("failed (run") for line in lines) == 3, out.output
    assert "and 1 more error; --json gives each run's error" in lines, out.output


class _OtherScript:
    """Another script, in a process of its own (one Python and torch import for all its attempts): each
    attempt() makes a Recorder of `run` and closes it; what it printed (the GradflowError's message, or
    nothing where it was let in)."""

    SCRIPT = ("import sys, torch, gradflow\n"
              "from gradflow.errors import GradflowError\n"
              "while sys.stdin.readline():\n"
              "    try:\n        gradflow.Recorder(torch.nn.Linear(2, 2), sys.argv[1]).close()\n"
              "    except GradflowError as e:\n        print(e)\n"
              "    print('.', flush=True)\n")

    def __init__(self, run: Path, stderr: Path):
        self.stderr = stderr  # (a file: a pipe no one reads until the end could fill)
        with stderr.open("w") as err:
            self.proc = subprocess.Popen([sys.executable, "-c", self.SCRIPT, str(run)], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=err, text=True, cwd=ROOT)
        self.watchdog = threading.Timer(300, self.proc.kill)  # (as a subprocess.run's timeout)
        self.watchdog.start()

    def attempt(self) -> str:
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        lines = []
        while (line := self.proc.stdout.readline()) not in (".\n", ""):
            lines.append(line)
        assert line, self.stderr.read_text()  # (it ended)
        return "".join(lines).strip()

    def end(self) -> int:
        self.proc.stdin.close()
        code = self.proc.wait()
        self.watchdog.cancel()
        return code


def test_the_study_folder_is_locked_while_recording_and_shared_by_one_scripts_recorders(tmp_path):
    first = gradflow.Recorder(nn.Linear(2, 2), tmp_path / "study" / "run0")
    # another process is refused, naming the holder by its own command line (the script that made the first
    # Recorder), not "gradflow ..."
    other = _OtherScript(tmp_path / "study" / "run1", tmp_path / "other.err")
    try:
        out = other.attempt()
        holder = shorten_command(" ".join(["python", *sys.argv]), 60)
        assert re.fullmatch(f".* is being written by pid {os.getpid()} .*\\({re.escape(holder)}\\).* another path "
                            "for the Recorder", out), out
        # a second Recorder of the same script, side by side in one loop, shares the lock (it was refused,
        # naming the script's own process as the one to wait for); the same run folder twice is refused
        second = gradflow.Recorder(nn.Linear(2, 2), tmp_path / "study" / "run1")
        with pytest.raises(GradflowError, match="is being written by another Recorder of this script"):
            gradflow.Recorder(nn.Linear(2, 2), tmp_path / "study" / "run0")
        first.close()
        assert "being written" in other.attempt()
        second.close()  # the last of them lets it go
        out = other.attempt()
    finally:
        code = other.end()
    assert code == 0 and not out, out
    assert store.read_run(tmp_path / "study" / "run1")["status"] == "ok"


def test_a_config_is_saved_as_plain_yaml_and_a_refused_one_holds_no_lock(tmp_path):
    # numpy scalars (np.logspace's rates), paths, devices, a Namespace or a dataclass are what scripts pass:
    # a numpy float stopped the Recorder with OmegaConf's message, and a Path was written as a Python
    # object that a safe YAML loader refuses. A refused config took the study's lock first and kept it,
    # so every later Recorder of that study in the process was refused as "being written by" itself
    import argparse
    import dataclasses

    import yaml

    @dataclasses.dataclass
    class Args:
        lr: float = 0.1
        depth: int = 3

    configs = {"np": {"lr": np.logspace(-3, -1, 3)[2], "widths": np.array([8, 16]), "data": Path("/data/x"),
                      "device": torch.device("cpu"), "opt": {"beta": np.float32(0.5)}},
               "ns": argparse.Namespace(lr=0.1, depth=3), "dc": Args()}
    for name, config in configs.items():
        gradflow.Recorder(nn.Linear(2, 2), tmp_path / "study" / name, config=config).close()
    saved = {name: yaml.safe_load((tmp_path / "study" / name / "config.yaml").read_text()) for name in configs}
    assert saved["np"] == {"lr": pytest.approx(0.1), "widths": [8, 16], "data": "/data/x", "device": "cpu",
                           "opt": {"beta": 0.5}}
    assert saved["ns"] == saved["dc"] == {"lr": 0.1, "depth": 3}
    assert type(saved["np"]["lr"]) is float

    for config, message in [({"f": print}, "^Recorder config f: a builtin_function_or_method is no config value"),
                            ({"run": "r1"}, "^Recorder config key 'run' is a column `load` adds already; rename"),
                            ({"steps": 100}, "^Recorder config key 'steps' is a field of run.json already"),
                            ({"train_time": 3}, "^Recorder config key 'train_time' is a field of run.json already"),
                            ({"chi1_measured": 1}, "^Recorder config key 'chi1_measured' is a column `ls` shows"),
                            # (a dotted key and a nested one are one key: run.json kept the last, silently)
                            ({"a.b": 1, "a": {"b": 2}}, r"^Recorder config key 'a.b' is given twice, as "
                                                        r"config\['a.b'\] and as config\['a'\]\['b'\]; give it once$"),
                            ([0.1], "^Recorder's config must be a dict .*, not list$")]:
        with pytest.raises(GradflowError, match=message):
            gradflow.Recorder(nn.Linear(2, 2), tmp_path / "study" / "refused", config=config)
    gradflow.Recorder(nn.Linear(2, 2), tmp_path / "study" / "after", config={"run_cfg": {"steps": 100}}).close()
    assert store.load_records(tmp_path / "study" / "after")["run_cfg.steps"].tolist() == [100]
    assert not (tmp_path / "study" / "refused").exists()


def test_a_recorders_run_diverges_or_is_flagged_as_gradflow_runs_are(tmp_path):
    # a non-finite loss or weight gradient reads `diverged` at its step, without a final result; a net
    # whose hidden weight gradients are all exactly 0 at the end is `ok*`: both were plain `ok`, one with
    # a final loss of NaN
    def loop(model, path, steps=4, spoil=None):
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        with gradflow.Recorder(model, tmp_path / path, every=1) as rec:
            for step in range(steps):
                if step == spoil:
                    with torch.no_grad():
                        model[0].weight[0, 0] = float("nan")
                with rec.step(step):
                    loss = model(torch.randn(8, 4)).square().mean()
                    loss.backward()
                rec.log(step, train_loss=loss, lr=0.01)
                opt.step()
                opt.zero_grad()
        return store.read_run(tmp_path / path)

    torch.manual_seed(0)
    net = lambda: nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))  # noqa: E731
    run = loop(net(), "nan", spoil=2)
    assert run["status"] == "diverged" and run["diverged_step"] == 2 and run["diverged_in"] == "loss and gradient"
    assert run["final"] == {} and run["last_finite"]["step"] == 1 and "train_loss" in run["last_finite"]
    assert run["steps"] == 4 and run["steps_done"] == 2  # the updates before it (the loop went on to step 3)
    # its tables end there, as `gradflow run`'s: steps 3's NaN rows were drawn as a block and a mark each
    for table in ("layers", "metrics"):
        steps = pd.read_parquet(tmp_path / "nan" / f"{table}.parquet")["step"]
        assert steps.max() == 2 and set(steps) == {0, 1, 2}, table
    healthy = loop(net(), "healthy")
    assert healthy["status"] == "ok" and healthy["flags"] == [] and healthy["final"]["train_loss"] > 0
    dead = net()
    with torch.no_grad():
        dead[0].bias.fill_(-100.0)  # every first-layer ReLU off: no hidden weight gradient at all
    run = loop(dead, "dead")
    assert run["status"] == "ok" and run["flags"] == ["learned nothing: every hidden weight gradient is exactly 0 "
                                                      "at the end"]
    rows = store.load_records(tmp_path).set_index("run")
    assert rows.loc["nan", "status"] == "diverged" and rows.loc["dead", "flags"].startswith("learned nothing")
    # and a rerun into a run's folder says it replaces it, as `gradflow run` does
    with pytest.warns(UserWarning, match=f"^{re.escape(str(tmp_path / 'healthy'))}: replacing the run recorded "
                                         "there before \\(ok, started "):
        gradflow.Recorder(net(), tmp_path / "healthy").close()


def test_logging_a_value_that_is_no_scalar_is_one_clear_error_at_the_call(tmp_path):
    rec = gradflow.Recorder(nn.Linear(2, 2), tmp_path / "study" / "run0")
    with pytest.raises(GradflowError, match=r"^Recorder.log: train_loss must be a scalar; got a tensor of shape \(3,\)"):
        rec.log(0, train_loss=torch.ones(3))
    with pytest.raises(GradflowError, match="^Recorder.log: lr must be a number or a one-element tensor; got 'fast'"):
        rec.log(0, lr="fast")
    rec.log(0, train_loss=torch.ones(1) * 2, test_acc=0.5)  # a one-element tensor and a number are fine
    rec.close()
    metrics = pd.read_parquet(tmp_path / "study" / "run0" / "metrics.parquet")
    assert sorted(metrics["value"]) == [0.5, 2.0]
    assert json.loads((tmp_path / "study" / "run0" / "run.json").read_text())["status"] == "ok"


def test_the_example_runs_loads_and_plots(tmp_path, cli):
    run = tmp_path / "own-loop" / "run0"
    out = subprocess.run([sys.executable, str(ROOT / "experiments" / "own_loop.py"), str(run), "--steps", "22",
                          "--every", "10", "--depth", "3"], capture_output=True, text=True, timeout=300,
                         env={"PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
                              "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr
    layers = gradflow.load(run)
    assert sorted(set(layers.step)) == [0, 10, 20, 21]  # every 10th step and the last (steps=22)
    assert list(layers[layers.step == 0].drop_duplicates("layer").name) == [
        "embed", "attn.in_proj", "attn.out_proj", "body.0", "body.2", "body.4", "head"]
    # model.depth counts the weight layers before the head (embed, attention's 2, the body's 3), as
    # `gradflow run` does; it recorded the body's --depth 3
    before_head = layers["layer"].nunique() - 1
    assert before_head == 6 and (layers["model.depth"] == before_head).all()
    shown = cli("ls", str(tmp_path / "own-loop"))
    assert shown.exit_code == 0 and "run0" in shown.output
    assert json.loads((run / "run.json").read_text())["steps_done"] == 22  # --steps 22: 22 updates
    drawn = cli("plot", str(run))
    assert drawn.exit_code == 0, drawn.output
    assert any((run / "figures").glob("profile-grad_norm-*.png"))
    hist = cli("plot", str(run), "--kind", "hist")  # (the remedy, probe=full, is no Recorder's option)
    assert hist.exit_code == 1 and "a Recorder's runs record none" in " ".join(hist.output.split()), hist.output


class SparseBag(nn.Module):
    """A bag of embeddings (sparse gradients, as nn.Embedding(sparse=True) gives) under an MLP."""

    def __init__(self, sparse: bool):
        super().__init__()
        self.emb = nn.Embedding(40, 16, sparse=sparse)
        self.body = nn.Linear(16, 16)
        self.act = nn.Tanh()
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        return self.head(self.act(self.body(self.emb(x).mean(1))))


def test_sparse_gradients_are_recorded_as_their_dense_twins(tmp_path, fuse_after):
    """A sparse gradient (repeated rows in a batch) takes the norm of its dense twin, not the loop down."""
    tables = {}
    for sparse in (True, False):
        torch.manual_seed(0)
        model = SparseBag(sparse)
        x, y = torch.randint(0, 40, (16, 6)), torch.randint(0, 3, (16,))  # 96 lookups of 40 rows: repeats
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        rec = gradflow.Recorder(model, tmp_path / str(sparse) / "run", every=1)
        for step in range(3):
            with rec.step(step):
                F.cross_entropy(model(x), y).backward()
            if sparse and step == 0:
                assert model.emb.weight.grad.is_sparse  # the premise
            opt.step()
            opt.zero_grad()
        rec.close()
        tables[sparse] = gradflow.load(tmp_path / str(sparse)).sort_values(["step", "layer", "quantity"])
    got, want = tables[True], tables[False]
    assert list(got["name"].unique()) == ["emb", "body", "head"] and set(got["step"]) == {0, 1, 2}
    assert list(got["quantity"]) == list(want["quantity"])
    # (the update ratio differs in float32 rounding: the sparse and dense updates round apart)
    np.testing.assert_allclose(got["value"], want["value"], rtol=1e-4, equal_nan=True)
    assert got.query("name == 'emb' and quantity == 'grad_norm'")["value"].gt(0).all()


def test_gradient_accumulation_over_micro_batches_records_what_one_batch_of_them_all_does(tmp_path, fuse_after):
    """Three uneven micro-batches, each loss summed over its examples over the whole batch's size, backward
    after each: the gradients are the whole batch's, and so must be every other probed value (the signal's
    RMS per example, the activations' mean, std and saturation over all examples), not the last call's. A
    forward pass under no_grad in the step (an evaluation) is left out."""
    x, y = torch.randn(16, 4) * 3, torch.randint(0, 3, (16,))  # (x3: the tanh saturates in places)
    tables = {}
    for split in ((16,), (7, 5, 4)):
        torch.manual_seed(0)
        model = Backwards()
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        rec = gradflow.Recorder(model, tmp_path / str(len(split)) / "run", every=1)
        for step in range(3):
            with rec.step(step):
                for xs, ys in zip(x.split(split), y.split(split)):
                    (F.cross_entropy(model(xs), ys, reduction="sum") / len(x)).backward()
                    with torch.no_grad():  # an evaluation inside the step is not part of the trained batch
                        model(torch.randn(5, 4) * 10)
            opt.step()
            opt.zero_grad()
        rec.close()
        tables[split] = gradflow.load(tmp_path / str(len(split))).sort_values(["step", "layer", "quantity"])
    whole, parts = tables[(16,)], tables[(7, 5, 4)]
    assert set(parts["step"]) == {0, 1, 2} and list(parts["quantity"]) == list(whole["quantity"])
    assert {"signal_norm", "act_mean", "act_std", "act_saturated"} <= set(parts["quantity"])
    np.testing.assert_allclose(parts["value"], whole["value"], rtol=1e-4, atol=1e-7)


def _sam_step(model, rho: float = 0.05) -> list[torch.Tensor]:
    """SAM's ascent (Foret et al. 2021): each weight moved by rho along its gradient, normalized over all of
    them, in place; returns the moves, to take back after the second pass."""
    norm = torch.stack([p.grad.norm() for p in model.parameters()]).norm()
    moves = [p.grad * rho / norm for p in model.parameters()]
    with torch.no_grad():
        for p, move in zip(model.parameters(), moves):
            p.add_(move)
    model.zero_grad()
    return moves


@pytest.mark.parametrize("second_pass", ["inside", "after"])
def test_a_sam_step_inside_the_block_is_said_and_after_it_records_the_first_pass_alone(tmp_path, second_pass):
    """SAM's second backward pass runs at weights moved along the first's gradient. Inside the block the two
    passes were read, without a word, as micro-batches of one update (signals ~2x); the weights' version
    counters tell: said once. Run after the block, the block's pass is recorded as a plain step's."""
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    tables = {}
    for loop in ("plain", second_pass):
        torch.manual_seed(0)
        model = Backwards()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        rec = gradflow.Recorder(model, tmp_path / loop / "run", every=1)
        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always")
            for step in range(3):
                with rec.step(step):
                    F.cross_entropy(model(x), y).backward()
                    if loop == "inside":
                        moves = _sam_step(model)
                        F.cross_entropy(model(x), y).backward()
                if loop == "after":
                    moves = _sam_step(model)
                    F.cross_entropy(model(x), y).backward()
                if loop != "plain":
                    with torch.no_grad():
                        for p, move in zip(model.parameters(), moves):
                            p.sub_(move)
                opt.step()
                opt.zero_grad()
            rec.close()
        moved = [str(w.message) for w in said if "changed between two backward passes" in str(w.message)]
        assert len(moved) == (loop == "inside"), [str(w.message) for w in said]
        tables[loop] = gradflow.load(tmp_path / loop).query("step == 0 and quantity == 'signal_norm'")
    plain, sam = tables["plain"]["value"].to_numpy(), tables[second_pass]["value"].to_numpy()
    if second_pass == "after":
        np.testing.assert_allclose(sam, plain, rtol=1e-5)
    else:  # (two passes' dL/dz of the same examples read as one batch of 2B)
        assert (sam > 1.3 * plain).all(), (sam, plain)


class Checkpointed(nn.Module):
    """Two tanh blocks of two layers, each run through torch.utils.checkpoint (or plainly), then a head."""

    def __init__(self, checkpointing: str | None):
        super().__init__()
        self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh())
                                    for _ in range(2))
        self.head = nn.Linear(8, 3)
        self.checkpointing = checkpointing

    def forward(self, x):
        from torch.utils.checkpoint import checkpoint

        for block in self.blocks:
            x = block(x) if self.checkpointing is None else checkpoint(
                block, x, use_reentrant=self.checkpointing == "reentrant")
        return self.head(x)


@pytest.mark.parametrize("checkpointing", ["non-reentrant", "reentrant"])
@pytest.mark.filterwarnings("error::UserWarning")  # (the probe points' discovery pass runs without a warning)
def test_activation_checkpointing_records_what_the_plain_model_does(tmp_path, fuse_after, checkpointing):
    """Activation checkpointing runs a block's forward again inside the backward pass. Non-reentrant: the
    first forward ran with grad, so the recompute is the same outputs again, not a second call (it was
    counted as one: every recomputed activation std shrank by sqrt(2(n-1)/(2n-1))). Reentrant: the first
    forward ran under no_grad, so each micro-batch's recompute is that micro-batch's call. Two micro-batches
    per step, against the same loop without checkpointing: every value as the plain model's."""
    x, y = torch.randn(24, 8) * 2, torch.randint(0, 3, (24,))
    tables = {}
    for mode in (None, checkpointing):
        torch.manual_seed(0)
        model = Checkpointed(mode)
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        rec = gradflow.Recorder(model, tmp_path / str(mode) / "run", every=1)
        for step in range(3):
            with rec.step(step):
                for xs, ys in zip(x.split(12), y.split(12)):
                    if mode == "reentrant":  # (it back-propagates only from an input that requires grad)
                        xs = xs.detach().requires_grad_()
                    (F.cross_entropy(model(xs), ys) / 2).backward()
            opt.step()
            opt.zero_grad()
        rec.close()
        tables[mode] = gradflow.load(tmp_path / str(mode)).sort_values(["step", "layer", "quantity"])
    plain, got = tables[None], tables[checkpointing]
    assert set(got["step"]) == {0, 1, 2} and list(got["quantity"]) == list(plain["quantity"])
    assert list(got["name"].unique()) == ["blocks.0.0", "blocks.0.2", "blocks.1.0", "blocks.1.2", "head"]
    assert {"signal_norm", "act_mean", "act_std", "act_saturated"} <= set(got["quantity"])
    np.testing.assert_allclose(got["value"], plain["value"], rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("model, every, message", [
    ("model", 10, "Recorder's model must be a torch.nn.Module, not str ('model')"),
    (nn.Linear(2, 2), "ten", "every='ten' must be a positive whole number of steps"),
    (nn.Linear(2, 2), 0, "every=0 must be a positive whole number of steps"),
    (nn.Linear(2, 2), 2.5, "every=2.5 must be a positive whole number of steps"),
    # TorchScript runs no forward hooks (discovery failed with "'OrderedDictWrapper' object has no attribute 'get'")
    (torch.jit.script(nn.Sequential(nn.Linear(2, 2), nn.Tanh())), 10, "Sequential is a TorchScript module "
     "(torch.jit.script or torch.jit.trace), whose layers gradflow cannot hook; give gradflow the eager nn.Module"),
    (nn.Sequential(nn.Linear(2, 2), torch.jit.trace(nn.Linear(2, 2), torch.randn(1, 2))), 10,
     "Sequential's 1 is a TorchScript module"),
])
def test_a_recorder_given_no_module_or_a_bad_every_refuses_at_once_and_writes_nothing(tmp_path, model, every, message):
    with pytest.raises(GradflowError, match=re.escape(message)):
        gradflow.Recorder(model, tmp_path / "study" / "run0", every=every)
    assert not (tmp_path / "study").exists()  # no run left behind as interrupted


def test_step_numbers_that_do_not_increase_or_a_closed_recorder_are_one_clear_error(tmp_path):
    """enumerate() inside an epoch loop restarts at 0: the tables held each step several times (`ls` said
    4 steps done after 12 updates, the init ratio divided one epoch's first layer by another's head)."""
    model = nn.Linear(2, 2)
    rec = gradflow.Recorder(model, tmp_path / "study" / "run0", every=2)
    for epoch in range(2):
        for step in range(3):
            if epoch:
                with pytest.raises(GradflowError, match=r"^rec.step\(0\) after rec.step\(2\): step numbers must "
                                                        r"increase\. Count updates across epochs"):
                    with rec.step(step):
                        pass
                break
            with rec.step(step):
                model(torch.randn(3, 2)).sum().backward()
    for bad in (3.5, -1, True, "4"):
        with pytest.raises(GradflowError, match=re.escape(f"rec.step({bad!r}): a step is a whole number >= 0")):
            with rec.step(bad):
                pass
    with rec.step(np.int64(3)):  # numpy's integers are steps too
        model(torch.randn(3, 2)).sum().backward()
    rec.close()
    assert sorted(store.load(tmp_path / "study" / "run0").step.unique()) == [0, 2]
    rec_json = store.read_run(tmp_path / "study" / "run0")
    assert rec_json["steps_done"] == 4 and rec_json["steps"] == 4  # steps 0-3 (steps read 3, the last one's number)
    for call in (lambda: rec.step(4).__enter__(), lambda: rec.log(4, train_loss=1.0), rec.close):
        with pytest.raises(GradflowError, match=r"after rec.close\(\): the run .* is written; make a new Recorder"):
            call()

    (tmp_path / "a-file").write_text("")
    with pytest.raises(GradflowError, match="a-file is a file; give the Recorder a folder for the run"):
        gradflow.Recorder(model, tmp_path / "a-file")


def test_a_step_that_raises_in_its_block_is_not_counted_done(tmp_path):
    model = nn.Linear(2, 2)
    with pytest.raises(RuntimeError):
        with gradflow.Recorder(model, tmp_path / "study" / "run0", every=5) as rec:
            for step in range(20):
                with rec.step(step):
                    if step == 12:
                        raise RuntimeError("boom in step 12")
                    model(torch.randn(3, 2)).sum().backward()
    run = store.read_run(tmp_path / "study" / "run0")
    assert run["status"] == "failed" and run["steps_done"] == 12  # steps 0-11 (it said 13)
    assert sorted(store.load(tmp_path / "study" / "run0").step.unique()) == [0, 5, 10]


def _small_net(optimizer=torch.optim.SGD) -> tuple[nn.Module, torch.optim.Optimizer]:
    """A seeded 4-8-2 tanh net and its optimizer at lr 0.1, as the loop checks below train it."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
    return model, optimizer(model.parameters(), lr=0.1)


def _train(rec, model, opt, steps, batch: tuple) -> None:
    """The README's loop: each step's forward and backward pass in its block, then the optimizer's step."""
    for step in steps:
        with rec.step(step):
            model(torch.randn(*batch)).square().mean().backward()
        opt.step()
        opt.zero_grad()


def _backward_after_its_block(rec, model, step: int, opt=None) -> None:
    """rec.step(step) with the forward pass in its block and the backward pass after it (then the optimizer's
    step, if given), and the one clear error the next rec.step() gives."""
    with rec.step(step):
        loss = model(torch.randn(5, 3)).sum()
    loss.backward()
    if opt is not None:
        opt.step()
        opt.zero_grad()
    with pytest.raises(GradflowError, match=rf"^rec.step\({step}\) saw no backward pass in its block, and one ran "
                                            r"after it: call loss.backward\(\) inside"):
        with rec.step(step + 1):
            pass


def test_a_backward_pass_outside_the_probed_block_is_one_clear_error(tmp_path):
    # the gradients were read at the block's end, before the backward pass: zeros, recorded as an `ok` run. Told
    # at the next rec.step(), when the pass through the block's graph has run (a loss the loop skips, with no
    # backward pass at all, is no mistake: see the next test); at close() for the last step
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    rec = gradflow.Recorder(model, tmp_path / "study" / "run0", every=2)
    _backward_after_its_block(rec, model, 0, opt)
    rec.close()
    assert store.read_run(tmp_path / "study" / "run0")["steps_done"] == 0  # (that step was not done: it said 1)
    rec = gradflow.Recorder(model, tmp_path / "study" / "last")
    with rec.step(0):
        loss = model(torch.randn(5, 3)).sum()
    loss.backward()
    with pytest.warns(UserWarning, match=r"rec.step\(0\) ran its backward pass after the block, not inside it, so "
                                         r"nothing was recorded for it"):
        rec.close()
    assert store.load(tmp_path / "study" / "last").empty
    # a forward pass under no_grad, the gradients left from before it (they read as this step's): not recorded,
    # and said at close
    rec = gradflow.Recorder(model, tmp_path / "study" / "run1")
    with rec.step(0), torch.no_grad():
        model(torch.randn(5, 3)).sum()
    with pytest.warns(UserWarning, match=r"rec.step\(0\) ran no forward pass of the model with gradients enabled in "
                                         r"the block \(an empty block, or one under torch.no_grad\(\)\), so nothing "
                                         r"was recorded for it"):
        rec.close()
    assert store.load(tmp_path / "study" / "run1").empty


def test_the_model_leaves_a_probed_block_without_hooks_so_it_saves_and_its_copies_are_not_read(tmp_path):
    # gradflow's hooks stayed on the model until the next rec.step(): torch.save(model) after a probed block (a
    # checkpoint at the end of an iteration) could not pickle them, and a deepcopy there (an EMA model) took
    # them along, so its forward passes inside a later probed block were read as the model's own
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(16, 6)
    hooks = lambda m: sum(len(mod._forward_hooks) for mod in m.modules())  # noqa: E731
    rec = gradflow.Recorder(model, tmp_path / "study" / "run0", every=1)
    ema, stds = None, []
    for step in range(3):
        stds.append([float(h.std()) for h in _hidden_outputs(model, x)])
        with rec.step(step):
            if ema is not None:  # a copy's forward pass with gradients enabled, inside the block
                ema(x * 3).sum().detach()
            model(x).sum().backward()
        opt.step()
        opt.zero_grad()
        assert hooks(model) == 0
        torch.save(model, tmp_path / "model.pt")  # (an AttributeError: Can't pickle local object '...hook')
        if step == 0:
            ema = copy.deepcopy(model)
            assert hooks(ema) == 0
    rec.close()
    layers = store.load(tmp_path / "study")
    act = layers[layers["quantity"] == "act_std"].pivot(index="step", columns="layer", values="value")
    np.testing.assert_allclose(act.loc[2, [0, 1]].to_numpy(), stds[2], rtol=1e-4)


def _hidden_outputs(model: nn.Sequential, x: torch.Tensor) -> list[torch.Tensor]:
    """The activation outputs after each hidden layer of a Linear/Tanh stack, with no hooks of its own."""
    with torch.no_grad():
        outs, h = [], x
        for module in model:
            h = module(h)
            if isinstance(module, nn.Tanh):
                outs.append(h)
        return outs


def test_the_depth_figure_of_recorder_runs_needs_model_depth_and_says_so(cli, tmp_path):
    # the README's Recorder config names its depth `depth`; the ratio figure, drawn against model.depth,
    # said only "values: none". It names the key it found and how to name it, and then draws
    def record(folder: Path, depth: int, config: dict) -> None:
        torch.manual_seed(depth)
        model = nn.Sequential(*[nn.Sequential(nn.Linear(6, 6), nn.Tanh()) for _ in range(depth)], nn.Linear(6, 2))
        with gradflow.Recorder(model, folder / f"d{depth}", config=config, every=1) as rec:
            with rec.step(0):
                model(torch.randn(4, 6)).square().mean().backward()

    for depth in (2, 4):
        record(tmp_path / "flat", depth, {"depth": depth})
        record(tmp_path / "nested", depth, {"model": {"depth": depth}})
    out = cli("plot", str(tmp_path / "flat"), "--kind", "ratio")
    assert out.exit_code == 1 and "the depth here is the config key depth: name it model.depth (a Recorder's " \
        "config={'model': {'depth': d}}) for this figure" in " ".join(out.output.split()), out.output
    out = cli("plot", str(tmp_path / "nested"), "--kind", "ratio")
    assert out.exit_code == 0 and (tmp_path / "nested" / "figures" / "ratio-init.png").is_file(), out.output
    # compared, the two keys are two columns that read apart (both were headed "depth")
    out = cli("compare", str(tmp_path / "flat"), str(tmp_path / "nested"), "--out", str(tmp_path / "cmp"))
    assert out.exit_code == 0, out.output
    header = next(line for line in out.output.splitlines() if "model.depth" in line)
    assert header.split()[:4] == ["┃", "depth", "┃", "model.depth"], out.output


def _square_loss_loop(path: Path, steps: int, logged) -> None:
    """A small tanh net's loop on a square loss, every step probed, each step logging `logged(step, loss)`."""
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
    with gradflow.Recorder(model, path, every=1) as rec:
        for step in range(steps):
            with rec.step(step):
                loss = model(torch.randn(8, 4)).square().mean()
                loss.backward()
            rec.log(step, **logged(step, loss))
            model.zero_grad()


def test_a_metric_the_loop_never_logs_is_said_not_logged_in_its_panel(tmp_path):
    # a loop logging train_loss, test_loss and test_acc, no train_acc: the train accuracy panel said "no finite
    # values to draw (all NaN/inf: see the marks)", with no NaN logged and no mark drawn
    from gradflow.plots import figures

    _square_loss_loop(tmp_path / "run", 3, lambda step, loss: {"train_loss": loss, "test_loss": loss, "test_acc": 0.5})
    fig = figures.curves(gradflow.load(tmp_path / "run", "metrics"))
    notes = {ax.get_title(): [t.get_text() for t in ax.texts if t.get_gid() == "note"] for ax in fig.axes}
    accuracy = [ax for ax in fig.axes if "accuracy" in ax.get_ylabel()]
    assert [t.get_text() for t in accuracy[0].texts if t.get_gid() == "note"] == ["not logged by these runs"], notes
    assert not [t for ax in fig.axes if ax not in accuracy[:1] for t in ax.texts if t.get_gid() == "note"], notes
    # nor the gradient norm: the error says how a loop logs it
    with pytest.raises(GradflowError, match=r"rec\.log\(step, opt_grad_norm=norm\)"):
        figures.gradnorm(gradflow.load(tmp_path / "run", "metrics"))


def test_runs_in_folders_of_their_own_names_are_picked_by_their_config(cli, tmp_path):
    # a Recorder's runs in folders named by the script (b2-lr1e-2): --run blocks=2,lr=0.01, as the README has
    # `--run` take key=value items by ls's short names, said "not a run" and listed the folder names. Keys of
    # the config's top level (blocks) or nested (optim.lr), values as ls shows them (true), a study's prefix
    for study in ("one", "two"):
        for blocks in (2, 4):
            for lr in (1e-3, 1e-2):
                model = nn.Sequential(*[nn.Sequential(nn.Linear(4, 4), nn.Tanh()) for _ in range(blocks)])
                config = {"blocks": blocks, "optim": {"lr": lr}, "model": {"skip": blocks == 2}}
                with gradflow.Recorder(model, tmp_path / study / f"b{blocks}-lr{lr:.0e}", every=1, config=config) as rec:
                    for step in range(2):
                        with rec.step(step):
                            model(torch.randn(8, 4)).square().mean().backward()

    def plot(folder: Path, run: str):
        return cli("plot", str(folder), "--kind", "heatmap", "--run", run, "--out", str(tmp_path / "f"))

    for run in ("lr=0.01,blocks=2", "skip=true,lr=1e-2"):
        out = plot(tmp_path / "one", run)
        assert out.exit_code == 0 and (tmp_path / "f" / "heatmap-grad_norm-b2-lr1e-02.png").is_file(), out.output
    out = plot(tmp_path / "one", "blocks=2")
    assert out.exit_code == 1 and "--run 'blocks=2' matches 2 runs of" in out.output and \
        "b2-lr1e-03; b2-lr1e-02" in " ".join(out.output.split()), out.output
    out = plot(tmp_path, "two/blocks=2,lr=0.01")  # a folder of studies: the study first
    assert out.exit_code == 0 and (tmp_path / "f" / "heatmap-grad_norm-two_b2-lr1e-02.png").is_file(), out.output
    out = plot(tmp_path, "blocks=2,lr=0.01")
    assert out.exit_code == 1 and "or its study first (one/blocks=2,lr=0.01)" in " ".join(out.output.split()), out.output


def test_a_script_that_ends_without_close_has_its_run_closed_with_its_tables(tmp_path):
    # no rec.close() and no `with`: the run stayed `running` (read as interrupted), no table written
    out = _loop_script(tmp_path, "")
    assert out.returncode == 0 and out.stderr.strip() == (f"gradflow: {tmp_path / 'run'} closed as the script ended "
                                                          "(rec.close() was not called)"), out.stderr
    run = store.read_run(tmp_path / "run")
    assert run["status"] == "ok" and run["steps_done"] == 3
    assert set(store.load(tmp_path / "run").step) == {0, 1, 2} and len(gradflow.load(tmp_path / "run", "metrics")) == 3
    # a warning of that close (a logged name no view shows) names a line of code, not Python's `sys:1`
    (tmp_path / "w").mkdir()
    out = _loop_script(tmp_path / "w", "    rec.log(step, val_score=1.0)\n")
    assert out.returncode == 0 and "no view shows it" in out.stderr and "sys:1" not in out.stderr, out.stderr


def _loop(tmp_path, misplaced: str) -> list[str]:
    """Three probed steps of a loop with `misplaced` (a call in the wrong place); the warnings it gave."""
    model, opt = _small_net()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rec = gradflow.Recorder(model, tmp_path / misplaced / "run0", every=1)
        for step in range(3):
            if misplaced == "no with":
                rec.step(step)
                model(torch.randn(8, 4)).square().mean().backward()
            else:
                with rec.step(step):
                    model(torch.randn(8, 4)).square().mean().backward()
                    if misplaced == "zero_grad inside":
                        opt.zero_grad(set_to_none=False)
                    if misplaced == "step inside":
                        opt.step()
            if misplaced != "step inside":
                opt.step()
            opt.zero_grad()
        rec.close()
        gc.collect()  # (a step block dropped in a reference cycle: its warning too)
    return [str(w.message) for w in caught if issubclass(w.category, UserWarning)]


def test_a_loop_with_its_calls_in_the_wrong_place_is_told_so(tmp_path):
    # each recorded a run of zeros as a run, without a word: rec.step(n) without `with` (nothing recorded),
    # zero_grad(set_to_none=False) inside the block (every update 0: SGD stepped on zeros), opt.step() inside
    # it (every update 0)
    said = _loop(tmp_path, "no with")
    assert said[:3] == [f"rec.step({n}) records nothing without `with`: wrap the step's forward and backward pass "
                        f"in `with rec.step({n}):`" for n in range(3)], said
    assert said[3].endswith("no step was recorded: wrap each step's forward and backward pass in "
                            "`with rec.step(step):`"), said
    (said,) = _loop(tmp_path, "zero_grad inside")
    assert "every update read 0 while the weight gradients did not: the optimizer stepped on zeroed gradients" in said
    layers = gradflow.load(tmp_path / "zero_grad inside" / "run0")  # (read before the zeroing: the true ones)
    assert (layers.loc[layers.quantity == "grad_norm", "value"] > 0).all()
    with pytest.raises(GradflowError, match=r"^rec.step\(0\): the optimizer stepped inside the block; call "
                                            r"opt.step\(\) after it"):
        _loop(tmp_path, "step inside")
    assert _loop(tmp_path, "right") == []  # (the README's loop: nothing to say)
    layers = gradflow.load(tmp_path / "right" / "run0")
    assert (layers.loc[layers.quantity == "update_ratio", "value"] > 0).all()


def _micro_batches(tmp_path, name: str, per_block: int, blocks: int = 6) -> list[str]:
    """A loop of `blocks` probed blocks of `per_block` micro-batches each, the optimizer stepping every 4
    micro-batches (after the block that ends there); the warnings it gave."""
    model, opt = _small_net()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with gradflow.Recorder(model, tmp_path / name / "run0", every=1) as rec:
            seen = 0
            for step in range(blocks):
                with rec.step(step):
                    for _ in range(per_block):
                        (model(torch.randn(8, 4)).square().mean() / 4).backward()
                seen += per_block
                if seen % 4 == 0:
                    opt.step()
                    opt.zero_grad()
    return [str(w.message) for w in caught if issubclass(w.category, UserWarning)]


def test_a_block_per_micro_batch_is_told_to_wrap_the_updates_micro_batches_in_one(tmp_path):
    # each block was read as an update: the gradients of the micro-batches so far, an update ratio of 0 on three
    # blocks of four, and nothing said
    assert _micro_batches(tmp_path, "whole updates", per_block=4) == []  # (the README's accumulation)
    (said,) = _micro_batches(tmp_path, "micro-batches", per_block=1, blocks=8)
    assert said == (f"{tmp_path / 'micro-batches' / 'run0'}: the optimizer did not step between rec.step(0) and "
                    "rec.step(1), nor between 5 other pairs of consecutive steps: each block is read as one update "
                    "(its gradients, its update ratio); wrap all of an update's micro-batches in one "
                    "`with rec.step(...)` block (a loop that skipped those updates on purpose can ignore this; so "
                    "does a torch.amp.GradScaler where the gradients are not finite: pass it as "
                    "Recorder(..., scaler=scaler))"), said
    (said,) = _micro_batches(tmp_path, "halves", per_block=2, blocks=4)  # (steps 0-1, 2-3: two pairs idle)
    assert "did not step between rec.step(0) and rec.step(1), nor between 1 other pair of consecutive steps" in said, said


@pytest.mark.parametrize("mistake", ["empty block", "backward after the block"])
def test_a_block_that_saw_no_pass_of_its_own_records_nothing_not_the_last_steps_gradients(tmp_path, mistake):
    # with the gradients kept (zero_grad(set_to_none=False), or none at all), such a block read the gradients
    # left from before it: the last step's again, recorded as this one's. An empty block (a batch the loop skips
    # with `continue`, an extra rec.step) is left out and said at close; a backward pass after the block, which
    # every step of such a loop has, is one clear error
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    rec = gradflow.Recorder(model, tmp_path / "study" / "run0", every=1)
    for step in range(3):
        if mistake == "empty block" and step == 1:
            with rec.step(step):
                continue
        if mistake == "backward after the block" and step == 1:
            _backward_after_its_block(rec, model, 1)
            rec.close()
            assert store.read_run(tmp_path / "study" / "run0")["steps_done"] == 1  # (step 1 was not done)
            assert sorted(store.load(tmp_path / "study" / "run0").step.unique()) == [0]
            return
        with rec.step(step):
            model(torch.randn(5, 3)).sum().backward()
        opt.step()
        opt.zero_grad(set_to_none=False)
    with pytest.warns(UserWarning, match=r"rec.step\(1\) ran no forward pass of the model with gradients enabled"):
        rec.close()
    run = store.read_run(tmp_path / "study" / "run0")
    assert run["status"] == "ok" and sorted(store.load(tmp_path / "study" / "run0").step.unique()) == [0, 2]


class Recurrent(nn.Module):
    def __init__(self, kind):
        super().__init__()
        self.embed, self.rnn, self.head = nn.Linear(3, 8), getattr(nn, kind)(8, 8, batch_first=True), nn.Linear(8, 2)

    def forward(self, x):
        return self.head(self.rnn(self.embed(x))[0][:, -1])


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_torchs_recurrent_modules_are_said_to_be_unprobed(kind):
    # an nn.LSTM between two Linear layers was skipped without a word: the first/last ratio of embed and head
    # read as the LSTM's; an LSTM alone was said to have "no module with a 2-D or larger weight"
    with pytest.warns(UserWarning, match=rf"^not probed: rnn \({kind}: weight_ih_l0, weight_hh_l0\); .*"
                                         r"gradflow run model=lstm, gru or rnn probes through time"):
        points = discover(Recurrent(kind), torch.randn(2, 5, 3))
    assert [p.name for p in points] == ["embed", "head"]
    with pytest.raises(GradflowError, match=rf"^{kind} has no layer gradflow probes .*; not probed: "
                                            rf"{kind.lower()} \({kind}: weight_ih_l0, weight_hh_l0\)"):
        discover(getattr(nn, kind)(3, 4), torch.randn(2, 5, 3))


class PositionEmbedded(nn.Module):
    """nanoGPT's embeddings: the positions' embedding of arange(T) has no batch dimension."""

    def __init__(self, vocab=20, length=8, width=16):
        super().__init__()
        self.tok, self.pos, self.head = nn.Embedding(vocab, width), nn.Embedding(length, width), nn.Linear(width, vocab)

    def forward(self, idx):
        return self.head(self.tok(idx) + self.pos(torch.arange(idx.shape[1])))


def test_a_layer_whose_output_has_no_batch_dimension_has_no_signal_and_says_so(tmp_path):
    # its dL/dz is the batch's sum: its "signal" changed with the batch size (halved from batch 4 to 64)
    # where the tokens' embedding, whose per-position signal it is, stayed put
    torch.manual_seed(0)
    model = PositionEmbedded()
    for batch in (4, 64):
        idx = torch.randint(0, 20, (batch, 8))
        with pytest.warns(UserWarning, match=rf"^no back-propagated signal at pos: its output has no batch "
                                             rf"dimension \(the input's batch is {batch};"):
            with gradflow.Recorder(model, tmp_path / "pos" / f"b{batch}", every=1) as rec:
                with rec.step(0):
                    F.cross_entropy(model(idx).flatten(0, 1), idx.flatten()).backward()
    layers = gradflow.load(tmp_path / "pos")
    signal = layers[layers.quantity == "signal_norm"]
    assert set(signal["name"]) == {"tok", "head"}  # (none at pos)
    assert set(layers.loc[layers.quantity == "grad_norm", "name"]) == {"tok", "pos", "head"}
    assert [p.batched for p in discover(model, torch.randint(0, 20, (4, 8)))] == [True, False, True]



def test_a_position_embedding_as_long_as_the_example_batch_is_still_told_unbatched():
    # discovered on 8 sequences of 8 tokens, pos's (T, D) output led with the batch's length: it was taken for a
    # batch's, its signal (the batch's sum) recorded as per-example; a batch of 4 told it apart
    model = PositionEmbedded()
    for idx in (torch.randint(0, 20, (8, 8)), torch.randint(0, 20, (4, 8))):
        with pytest.warns(UserWarning, match="^no back-propagated signal at pos"):
            points = discover(model, idx)
        assert [(p.batched, p.batch_dim) for p in points] == [(True, 0), (False, 0), (True, 0)]

class FlatHead(nn.Module):
    """A language model's head given the batch's positions flattened into rows, (B * T, D)."""

    def __init__(self, vocab=10, width=16):
        super().__init__()
        self.emb, self.l, self.act, self.head = (nn.Embedding(vocab, width), nn.Linear(width, width), nn.Tanh(),
                                                 nn.Linear(width, vocab))

    def forward(self, idx):  # (B, T)
        h = self.act(self.l(self.emb(idx)))
        return self.head(h.reshape(-1, h.shape[-1]))  # (B * T, vocab)


def test_a_head_of_flattened_positions_is_said_to_be_so_not_a_position_embedding(tmp_path):
    # its signal was masked with the position embedding's warning, "its output has no batch dimension (... a
    # position embedding of arange(T)) ... its dL/dz is the batch's sum": every example's rows are there
    torch.manual_seed(0)
    model = FlatHead()
    idx = torch.randint(0, 10, (6, 5))
    said = [m for m in _one_step_warnings(model, tmp_path / "run", idx, idx.roll(1, 1).flatten())
            if "no back-propagated signal" in m]
    assert len(said) == 1 and said[0].startswith("no back-propagated signal at head (30 rows: 5 x the batch of 6): its "
                                                 "output's rows are made from the batch's examples but are several per "
                                                 "example (positions flattened into rows"), said
    reference, outs = copy.deepcopy(model), {}
    reference.zero_grad()
    for n in ("emb", "l"):
        getattr(reference, n).register_forward_hook(lambda m, i, z, n=n: outs.update({n: z}) or z.retain_grad())
    F.cross_entropy(reference(idx), idx.roll(1, 1).flatten()).backward()
    got = gradflow.load(tmp_path / "run").set_index(["name", "quantity"])["value"]
    assert set(got.xs("signal_norm", level="quantity").index) == {"emb", "l"}
    for n, z in outs.items():
        assert got[(n, "signal_norm")] == pytest.approx(float(z.grad.norm() * len(idx) ** 0.5), rel=1e-5), n
    assert got[("head", "grad_norm")] == pytest.approx(float(reference.head.weight.grad.norm()), rel=1e-5)


class Queries(nn.Module):
    """Perceiver's or DETR's learned queries attending to the example's tokens: `q_proj`'s output, (Q, D), has no
    batch dimension; `expanded`: the queries expanded to the batch first, (B, Q, D), each example's own."""

    def __init__(self, expanded=False):
        super().__init__()
        self.expanded = expanded
        self.inp, self.q_proj, self.head = nn.Linear(8, 16), nn.Linear(16, 16), nn.Linear(16, 3)
        self.queries = nn.Parameter(torch.randn(6, 16))  # (Q, D)

    def forward(self, x):  # (B, T, 8)
        kv = self.inp(x)
        q = self.q_proj(self.queries.expand(len(x), -1, -1) if self.expanded else self.queries)
        att = torch.softmax(q @ kv.transpose(1, 2), -1)  # (B, Q, T)
        return self.head((att @ kv).mean(1))


@pytest.mark.parametrize("expanded", [False, True])
def test_learned_queries_as_many_as_the_batch_have_no_signal_and_expanded_ones_their_examples(tmp_path, expanded):
    # at a batch of 6, as many as the queries, q_proj's (Q, D) output read as a batch's: its dL/dz, the batch's
    # sum, was recorded as a per-example signal, and at 5 it was masked; made from no tensor of the example, it
    # is told by a second pass where its length is the batch's, which the queries expanded to the batch pass
    torch.manual_seed(0)
    model = Queries(expanded)
    for batch in (5, 6):
        x, y = torch.randn(batch, 4, 8), torch.randint(0, 3, (batch,))
        said = [m for m in _one_step_warnings(model, tmp_path / f"b{batch}", x, y)
                if m.startswith("no back-propagated signal at q_proj")]
        assert len(said) == (not expanded), said
        model.zero_grad()
        reference, outs = copy.deepcopy(model), {}
        for n in ("inp", "q_proj", "head"):
            getattr(reference, n).register_forward_hook(lambda m, i, z, n=n: outs.update({n: z}) or z.retain_grad())
        F.cross_entropy(reference(x), y, reduction="sum").backward()  # (each example's dL_i/dz_i)
        expect = {n: float(z.grad.flatten(1).norm(dim=1).pow(2).mean().sqrt()) for n, z in outs.items()
                  if expanded or n != "q_proj"}
        layers = gradflow.load(tmp_path / f"b{batch}")
        got = layers[layers.quantity == "signal_norm"].set_index("name")["value"]
        assert set(got.index) == set(expect), (batch, got)
        for n, v in expect.items():
            assert got[n] == pytest.approx(v, rel=1e-5), (batch, n)


class SequenceFirstInside(nn.Module):
    """Token ids come batch first, (B, T); the layers after the embedding run sequence first, (T, B, D), torch's
    default layout for nn.MultiheadAttention and nn.TransformerEncoderLayer (batch_first=False)."""

    def __init__(self, sequence_first=True, vocab=20, width=16):
        super().__init__()
        self.sequence_first = sequence_first
        self.emb, self.fc, self.act, self.head = (nn.Embedding(vocab, width), nn.Linear(width, width), nn.Tanh(),
                                                  nn.Linear(width, 3))

    def forward(self, idx):
        h = self.emb(idx)
        if self.sequence_first:
            h = h.transpose(0, 1)
        return self.head(self.act(self.fc(h)).mean(0 if self.sequence_first else 1))



def _one_step_signals(model, points, idx, y, fused):
    """The signal norm at each of `points` after one cross-entropy backward pass of `model` on (idx, y), and
    where it was taken."""
    from gradflow.probes.core import Probes

    probes = Probes(points, fused=fused)
    probes.arm()
    F.cross_entropy(model(idx), y).backward()
    probes.after_backward()
    values, mask, _ = probes.fetch()
    probes.remove()
    at = probes.quantities.index("signal_norm")
    return values[:, at], mask[:, at]

@pytest.mark.parametrize("fused", [False, True])
def test_layers_that_run_sequence_first_inside_a_batch_first_model_have_their_signal(fused):
    # fc's (T, B, D) output was taken for one with no batch dimension ("a position embedding of arange(T)"):
    # its signal was dropped, with that warning; its batch is its second dimension, so sqrt(B) ||dL/dZ|| is
    # the RMS per example there as at emb, whose output is batch first

    torch.manual_seed(0)
    model = SequenceFirstInside()
    idx, y = torch.randint(0, 20, (4, 12)), torch.randint(0, 3, (4,))
    ref = SequenceFirstInside(sequence_first=False)
    ref.load_state_dict(model.state_dict())
    signals = []
    for m in (model, ref):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # (no warning of a layer without a batch dimension)
            points = discover(m, idx)
        assert [p.batched for p in points] == [True, True, True]
        values, mask = _one_step_signals(m, points, idx, y, fused)
        assert mask.all()
        signals.append(values)
    assert signals[0] == pytest.approx(signals[1], rel=1e-5)
    # and the value is the RMS over the examples of each one's dL_i/dz (the loss is the batch mean)
    z = {}
    h = model.emb(idx).transpose(0, 1)
    z["fc"] = model.fc(h)
    z["fc"].retain_grad()
    F.cross_entropy(model.head(model.act(z["fc"]).mean(0)), y, reduction="sum").backward()
    per_example = z["fc"].grad.transpose(0, 1).flatten(1).norm(dim=1)
    assert signals[0][1] == pytest.approx(float(per_example.pow(2).mean().sqrt()), rel=1e-5)



@pytest.mark.parametrize("sequence_first", [True, False])
def test_a_layer_whose_sequence_is_as_long_as_the_example_batch_has_its_batch_dimension_told(sequence_first):
    # discovered on an example whose T equals its B, fc's (T, B, D) output read as batch first: at a batch of
    # 8 its signal was divided by sqrt(T) = 2, not sqrt(8) (the count of its first dimension)

    torch.manual_seed(0)
    model = SequenceFirstInside(sequence_first=sequence_first)
    points = discover(model, torch.randint(0, 20, (4, 4)))
    assert [p.batch_dim for p in points] == [0, int(sequence_first), 0]
    idx, y = torch.randint(0, 20, (8, 4)), torch.randint(0, 3, (8,))
    values, _ = _one_step_signals(model, points, idx, y, fused=False)
    z = model.emb(idx)
    z = model.fc(z.transpose(0, 1) if sequence_first else z)
    z.retain_grad()
    F.cross_entropy(model.head(model.act(z).mean(0 if sequence_first else 1)), y, reduction="sum").backward()
    per_example = (z.grad.transpose(0, 1) if sequence_first else z.grad).flatten(1).norm(dim=1)
    assert values[1] == pytest.approx(float(per_example.pow(2).mean().sqrt()), rel=1e-5)

class TiedHead(nn.Module):
    """GPT-2's head shares its token embedding's weight."""

    def __init__(self):
        super().__init__()
        self.wte, self.h, self.lm_head = nn.Embedding(20, 16), nn.Linear(16, 16), nn.Linear(16, 20, bias=False)
        self.lm_head.weight = self.wte.weight

    def forward(self, idx):
        return self.lm_head(torch.tanh(self.h(self.wte(idx))))


def test_a_tied_weight_is_recorded_once_at_its_first_point(tmp_path):
    # wte and lm_head each got the shared gradient (the sum of both uses): ls's ratio read exactly 1
    torch.manual_seed(0)
    model = TiedHead()
    idx = torch.randint(0, 20, (4, 8))
    with pytest.warns(UserWarning, match=r"^tied weights: lm_head uses wte's weight; each is recorded once, at its "
                                         r"first point") as said:
        with gradflow.Recorder(model, tmp_path / "tied" / "run0", every=1) as rec:
            with rec.step(0):
                F.cross_entropy(model(idx).flatten(0, 1), idx.flatten()).backward()
    # at the user's line (the forward pass that found the points), not gradflow's recorder.py
    assert [w.filename for w in said if str(w.message).startswith("tied")] == [__file__]
    layers = gradflow.load(tmp_path / "tied")
    grads = layers[layers.quantity == "grad_norm"].set_index("name")["value"]
    assert list(grads.index) == ["wte", "h"]  # (lm_head's is wte's)
    assert grads["wte"] == pytest.approx(float(model.wte.weight.grad.norm()), rel=1e-5)
    assert set(layers.loc[layers.quantity == "signal_norm", "name"]) == {"wte", "h", "lm_head"}
    # the ratio leaves the tied point out (its gradient is mostly the head's): here one layer is left, no ratio
    assert np.isnan(gradflow.load(tmp_path / "tied", "runs")["grad_ratio.init"].item())


def _mixed_precision_run(tmp_path, name: str, scaler, unscale_in_block: bool = False, told: bool = True
                         ) -> pd.DataFrame:
    torch.manual_seed(0)
    x = torch.randn(256, 16)
    y = (x[:, 0] > 0).long()
    model = nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with gradflow.Recorder(model, tmp_path / "amp" / name, every=2, scaler=scaler if told else None) as rec:
        for step in range(5):
            opt.zero_grad()
            with rec.step(step):
                with torch.autocast("cpu", dtype=torch.float16, enabled=scaler is not None):
                    loss = F.cross_entropy(model(x), y)
                (loss if scaler is None else scaler.scale(loss)).backward()
                if unscale_in_block:  # (to clip: torch's recipe)
                    scaler.unscale_(opt)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), 1e3)
            if scaler is None:
                opt.step()
            else:
                scaler.step(opt)
                scaler.update()
    layers = gradflow.load(tmp_path / "amp" / name)
    return layers[layers.quantity.isin(["grad_norm", "signal_norm", "update_ratio"])].set_index(
        ["step", "quantity", "layer"])["value"].sort_index()


@pytest.mark.parametrize("unscale_in_block", [False, True], ids=["scaled", "unscaled-in-the-block"])
def test_a_float16_loop_with_a_grad_scaler_records_unscaled_gradients(tmp_path, unscale_in_block):
    # with the loss scaled by 65536 every gradient and signal was recorded 65536 times too large (5010 for 0.0764),
    # and moved whenever the scaler changed its scale; the ratios hid it
    exact = _mixed_precision_run(tmp_path, "fp32", None)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 16)
    mixed = _mixed_precision_run(tmp_path, "fp16", scaler, unscale_in_block)
    assert list(mixed.index) == list(exact.index)
    assert mixed.to_numpy() == pytest.approx(exact.to_numpy(), rel=2e-2)  # (float16's rounding)
    fp16 = store.read_run(tmp_path / "amp" / "fp16")
    assert fp16["status"] == "ok" and fp16["flags"] == []  # (a step skipped at first is no flag)
    with pytest.raises(GradflowError, match="scaler must be the loop's torch.amp.GradScaler, not float"):
        gradflow.Recorder(nn.Linear(2, 2), tmp_path / "amp" / "bad", scaler=65536.0)


def test_a_grad_scaler_the_recorder_was_not_given_is_said_once(tmp_path):
    # its gradients were recorded 65536 times too large without a word; a disabled scaler (no float16: a loop's
    # switch) scales nothing and is no mistake
    with pytest.warns(UserWarning) as said:
        _mixed_precision_run(tmp_path, "untold", torch.amp.GradScaler("cpu", init_scale=2.0 ** 16), told=False)
    told = [str(w.message) for w in said if "GradScaler" in str(w.message)]
    assert len(told) == 1 and told[0].endswith("a torch.amp.GradScaler steps the optimizer and the Recorder was not "
                                               "given it: the gradients and signals are recorded at its loss scale "
                                               "(65536 times their size), and a step it skips reads as divergence; "
                                               "pass it as Recorder(..., scaler=scaler)"), told
    assert [w.filename for w in said if "GradScaler" in str(w.message)] == [__file__]  # (the loop's line)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _mixed_precision_run(tmp_path, "told", torch.amp.GradScaler("cpu", init_scale=2.0 ** 16))
        disabled = torch.amp.GradScaler("cpu", enabled=False)
        _mixed_precision_run(tmp_path, "disabled", disabled, told=False)


def test_gradients_a_loop_puts_in_grad_itself_and_unscales_in_the_block_are_not_unscaled_twice(tmp_path):
    # a loop that takes its gradients with torch.autograd.grad and sets p.grad itself (no accumulating backward
    # pass, so they are read at the block's end), then scaler.unscale_(opt) in the block to clip: they are read
    # unscaled already and must not be divided by the loss scale again (1024 times too small)
    def run(name, scaler):
        torch.manual_seed(0)
        x, y = torch.randn(64, 8), torch.randint(0, 4, (64,))
        model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 4))
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        with gradflow.Recorder(model, tmp_path / "s" / name, every=1, steps=3, scaler=scaler) as rec:
            for step in range(3):
                with rec.step(step):
                    loss = F.cross_entropy(model(x), y)
                    if scaler is None:
                        loss.backward()
                    else:
                        params = list(model.parameters())
                        for p, g in zip(params, torch.autograd.grad(scaler.scale(loss), params)):
                            p.grad = g
                        scaler.unscale_(opt)
                        torch.nn.utils.clip_grad_norm_(model.parameters(), 1e9)
                rec.log(step, train_loss=loss)
                if scaler is None:
                    opt.step()
                else:
                    scaler.step(opt)
                    scaler.update()
                opt.zero_grad()
        layers = gradflow.load(tmp_path / "s" / name)
        return layers[layers.quantity == "grad_norm"].set_index(["step", "layer"])["value"].sort_index()

    exact = run("plain", None)
    by_hand = run("by-hand", torch.amp.GradScaler("cpu", init_scale=1024.0))
    assert list(by_hand.index) == list(exact.index)
    assert by_hand.to_numpy() == pytest.approx(exact.to_numpy(), rel=1e-5)


def test_a_gradient_that_overflows_on_its_way_back_names_the_lowest_layer_it_reached(tmp_path):
    """The loss finite, the gradient made infinite at the second layer's output: the two layers below it
    have non-finite weight gradients, the one above it not. The run is diverged in its gradient alone, at
    the lowest-index layer whose weight gradient is non-finite (as the README says): layer 0, not 1."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 2))
    spoil = {"at": 1, "step": 0}

    def overflow(module, inputs, out):
        if spoil["step"] == spoil["at"]:
            out.register_hook(lambda g: g * float("inf"))

    model[2].register_forward_hook(overflow)
    with gradflow.Recorder(model, tmp_path / "overflow", every=1) as rec:
        for step in range(3):
            spoil["step"] = step
            with rec.step(step):
                loss = model(torch.randn(8, 4)).square().mean()
                loss.backward()
            rec.log(step, train_loss=loss)
            model.zero_grad()
    run = store.read_run(tmp_path / "overflow")
    assert run["status"] == "diverged" and run["diverged_step"] == 1 and run["diverged_in"] == "gradient", run
    assert run["diverged_layer"] == 0
    layers = store.run_table(tmp_path / "overflow", "layers")
    at = layers[(layers["step"] == 1) & (layers["quantity"] == "grad_norm")].set_index("layer")["value"]
    assert not np.isfinite(at[0]) and not np.isfinite(at[1]) and np.isfinite(at[2]), at


def test_a_step_the_grad_scaler_skips_is_no_divergence(tmp_path):
    # a scale too large for float16 makes the gradients inf: the scaler skips the step and halves its scale,
    # as it does in the first steps of most float16 runs; the run is not `diverged`
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 40)
    _mixed_precision_run(tmp_path, "overflow", scaler)
    run = store.read_run(tmp_path / "amp" / "overflow")
    layers = gradflow.load(tmp_path / "amp" / "overflow")
    assert not np.isfinite(layers.loc[layers.quantity == "grad_norm", "value"]).all()  # (the case: skipped steps)
    assert run["status"] == "ok" and scaler.get_scale() < 2.0 ** 40
    # every probed step skipped: no update was seen, which the run says (ls: ok*), where it read plain ok
    assert run["flags"] == [f"no update: the scaler skipped every probed step, all 3 (their gradients were not finite "
                            f"at its loss scale, {scaler.get_scale():g} at the end)"]


class ResidualBlock(nn.Module):
    """A ResNet block as users write it: the second conv's batch norm is added to the skip before the ReLU."""

    def __init__(self, c=4):
        super().__init__()
        self.conv1, self.bn1, self.act1 = nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU()
        self.conv2, self.bn2, self.act2 = nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU()
        self.view = nn.Linear(c, c)
        self.tail = nn.Tanh()

    def forward(self, x):
        h = self.act2(x + self.bn2(self.conv2(self.act1(self.bn1(self.conv1(x))))))
        return self.tail(self.view(h.mean((2, 3))).reshape(-1, 2, 2))  # (a reshape between: another tensor)


def test_an_activation_after_an_add_is_not_taken_for_the_layers_own():
    # conv2 -> bn2 -> (+ skip) -> relu gave conv2 the statistics of the sum, not of its own output: an
    # activation counts only where it takes the layer's output through norm or dropout alone
    model = ResidualBlock()
    points = {p.name: p.activation for p in discover(model, torch.randn(2, 4, 5, 5))}
    assert points == {"conv1": model.act1, "conv2": None, "view": None}
    inplace = nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.1), nn.LayerNorm(4), nn.ReLU(inplace=True), nn.Linear(4, 2))
    assert [p.activation for p in discover(inplace, torch.randn(2, 3))] == [inplace[3], None]


class TwiceCalled(nn.Module):
    """`mid` runs twice in a forward pass, the activation module `act` after the calls `with_module` says (the
    other's output through a functional tanh)."""

    def __init__(self, with_module=("first", "second")):
        super().__init__()
        self.with_module = with_module
        self.inp, self.mid, self.act, self.head = nn.Linear(8, 16), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 3)

    def forward(self, x):
        h = torch.tanh(self.inp(x))
        for call in ("first", "second"):
            h = self.act(self.mid(h)) if call in self.with_module else torch.tanh(self.mid(h))
        return self.head(h)


@pytest.mark.parametrize("with_module", [("first", "second"), ("first",), ("second",)])
def test_a_layer_called_twice_has_its_activation_statistics_of_both_calls_or_none(tmp_path, with_module):
    # with nn.Tanh after mid's first call alone, mid's act_std was that call's (0.278 where both calls' were
    # 0.249): a layer's statistics are of all its calls as one batch, so its activation module must follow each
    torch.manual_seed(0)
    model = TwiceCalled(with_module)
    x, y = torch.randn(12, 8), torch.randint(0, 3, (12,))
    outs = []
    model.mid.register_forward_hook(lambda m, i, z: outs.append(torch.tanh(z).detach()) if z.requires_grad else None)
    with gradflow.Recorder(model, tmp_path / "run", every=1) as rec:
        with rec.step(0):
            F.cross_entropy(model(x), y).backward()
    layers = gradflow.load(tmp_path / "run")
    acts = layers[(layers["name"] == "mid") & layers["quantity"].str.startswith("act_")].set_index("quantity")
    if len(with_module) == 2:
        both = torch.cat(outs).double()
        assert len(outs) == 2
        assert acts.loc["act_std", "value"] == pytest.approx(float(both.std()), rel=1e-5)
        assert acts.loc["act_mean", "value"] == pytest.approx(float(both.mean()), rel=1e-5, abs=1e-7)
    else:
        assert acts.empty, acts


def test_a_layer_that_did_not_run_in_a_step_has_no_activation_cells(tmp_path):
    # a block skipped at one step (stochastic depth, a branch taken on some steps) wrote act_mean, act_std
    # and act_saturated rows of NaN for it, where a quantity not taken has no row at all
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.ta, self.b, self.tb, self.head = nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(), \
                nn.Linear(8, 2)
            self.skip = False

        def forward(self, x):
            h = self.ta(self.a(x))
            if not self.skip:
                h = h + self.tb(self.b(h))
            return self.head(h)

    torch.manual_seed(0)
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(16, 4), torch.randint(0, 2, (16,))
    with gradflow.Recorder(model, tmp_path / "run", every=1) as rec:
        for step in range(3):
            model.skip = step == 1
            with rec.step(step):
                loss = F.cross_entropy(model(x), y)
                loss.backward()
            opt.step()
            opt.zero_grad()
    layers = pd.read_parquet(tmp_path / "run" / "layers.parquet")
    acts = layers[(layers["name"] == "b") & layers["quantity"].str.startswith("act_")]
    assert sorted(set(acts["step"])) == [0, 2] and np.isfinite(acts["value"]).all(), acts
    assert set(acts["quantity"]) == {"act_mean", "act_std", "act_saturated"}


# --- a loop's backward passes: several through one forward, one that accumulates no gradient, clipping in the block
def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(10, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 3))


def _reference(model, batches, losses):
    """By autograd, on a copy: each Linear's sqrt(batch) ||dL/dZ|| over every call (micro-batches `batches`,
    each back-propagating the sum of `losses` of its output) and its weight-gradient norm."""
    model = copy.deepcopy(model)
    outs: dict[int, list] = {}

    def keep(k, z) -> None:
        z.retain_grad()
        outs.setdefault(k, []).append(z)

    for k, m in enumerate(model):
        if isinstance(m, nn.Linear):
            m.register_forward_hook(lambda mod, i, z, k=k: keep(k, z))
    for x in batches:
        out = model(x)
        sum(f(out) for f in losses).backward()
    signal = {k: float(torch.cat([z.grad.reshape(-1) for z in zs]).double().norm()) * sum(len(x) for x in batches) ** 0.5
              for k, zs in outs.items()}
    return signal, {k: float(model[k].weight.grad.double().norm()) for k in outs}


def _one_step_warnings(model, path, x, y) -> list[str]:
    """One probed step of cross-entropy on (x, y) in a Recorder at `path`: the warnings it gave, as text."""
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with gradflow.Recorder(model, path, every=1) as rec:
            with rec.step(0):
                F.cross_entropy(model(x), y).backward()
    return [str(w.message) for w in seen]


def _recorded(path):
    d = gradflow.load(path).query("step == 0")
    return {q: {int(n) if n.isdigit() else n: v
                for n, v in zip(d[d.quantity == q].name, d[d.quantity == q].value)}
            for q in ("signal_norm", "grad_norm")}


def _one_step(tmp_path, block):
    """A fresh _mlp's one probed step, its block `block(model, x, y)`: what the Recorder wrote, by autograd the
    signal and weight-gradient norms of one backward pass of the batch's cross-entropy, and what `block` returned."""
    model = _mlp()
    x, y = torch.randn(16, 10), torch.randint(0, 3, (16,))
    signal, grad = _reference(model, [x], [lambda out: F.cross_entropy(out, y)])
    with gradflow.Recorder(model, tmp_path / "run", every=1) as rec:
        with rec.step(0):
            returned = block(model, x, y)
    return _recorded(tmp_path / "run"), signal, grad, returned


def test_losses_back_propagated_one_by_one_read_the_signal_of_their_sum(tmp_path):
    # two losses of one forward pass, back-propagated one after the other (retain_graph=True): the gradients
    # hold their sum, and so must dL/dz; each pass was taken as another call of the layer, sqrt(2B(|g1|^2 +
    # |g2|^2)) for sqrt(B) |g1 + g2| (0.620 for 0.449). With two micro-batches of two losses each too.
    model = _mlp()
    y = torch.randint(0, 3, (16,))
    losses = [lambda out: F.cross_entropy(out, y[:len(out)]), lambda out: 0.5 * out.pow(2).mean()]
    for name, batches in (("one", [torch.randn(16, 10)]), ("micro", [torch.randn(16, 10), torch.randn(16, 10)])):
        signal, grad = _reference(model, batches, losses)
        m = copy.deepcopy(model)
        with gradflow.Recorder(m, tmp_path / name, every=1) as rec:
            with rec.step(0):
                for x in batches:
                    out = m(x)
                    losses[0](out).backward(retain_graph=True)
                    losses[1](out).backward()
        got = _recorded(tmp_path / name)
        assert got["signal_norm"] == pytest.approx(signal, rel=1e-5), name
        assert got["grad_norm"] == pytest.approx(grad, rel=1e-5), name


def test_a_backward_pass_that_accumulates_no_gradient_is_no_signal(tmp_path):
    # torch.autograd.grad in the block (an input saliency, a gradient penalty) went through the probes' hooks:
    # the input layer's signal read 11.7 for the loss's 0.427, taken as a second call of every layer
    def block(model, x, y):
        xr = x.clone().requires_grad_(True)
        out = model(xr)
        (saliency,) = torch.autograd.grad(out.max(1).values.sum(), xr, retain_graph=True)
        F.cross_entropy(out, y).backward()
        return saliency

    got, signal, grad, saliency = _one_step(tmp_path, block)
    assert got["signal_norm"] == pytest.approx(signal, rel=1e-5) and got["grad_norm"] == pytest.approx(grad, rel=1e-5)
    assert saliency.abs().sum() > 0  # (the premise: that pass did go through the layers)


@pytest.mark.parametrize("scaled", [False, True])
def test_gradients_clipped_inside_the_block_are_read_before_the_clipping(tmp_path, scaled):
    # read at the block's end, a loop that clipped inside it (the README's pattern with a GradScaler:
    # unscale_, then clip) recorded the clipped gradients, 0.0043 for 0.34, beside signals that were not
    model = _mlp()
    x, y = torch.randn(16, 10), torch.randint(0, 3, (16,))
    signal, grad = _reference(model, [x], [lambda out: F.cross_entropy(out, y)])
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0) if scaled else None
    with gradflow.Recorder(model, tmp_path / "run", every=1, scaler=scaler) as rec:
        with rec.step(0):
            loss = F.cross_entropy(model(x), y)
            if scaled:
                scaler.scale(loss).backward()
                scaler.unscale_(opt)
            else:
                loss.backward()
            total = float(torch.nn.utils.clip_grad_norm_(model.parameters(), 0.01))
        scaler.step(opt) if scaled else opt.step()
        if scaled:
            scaler.update()
    assert total > 0.1  # (the premise: the clipping cut them 10x and more)
    got = _recorded(tmp_path / "run")
    assert got["grad_norm"] == pytest.approx(grad, rel=1e-5) and got["signal_norm"] == pytest.approx(signal, rel=1e-5)


def test_losses_back_propagated_one_by_one_where_the_fused_kernels_keep_only_norms():
    # the fused CPU kernels keep a signal's squared norm, not the tensor a second pass's dL/dz adds to: that
    # step's signals of such layers are left out, said once, and later steps keep the tensors, exact again
    from gradflow.probes.core import Probes

    model = _mlp()
    x, y = torch.randn(16, 10), torch.randint(0, 3, (16,))
    losses = [lambda out: F.cross_entropy(out, y), lambda out: 0.5 * out.pow(2).mean()]
    signal, _ = _reference(model, [x], losses)
    probes = Probes(discover(model, x), fused=True)
    signal_at = probes.quantities.index("signal_norm")
    rows = {k: j for j, k in enumerate(k for k, m in enumerate(model) if isinstance(m, nn.Linear))}
    for step in range(2):
        model.zero_grad()
        probes.arm()
        out = model(x)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            losses[0](out).backward(retain_graph=True)
            losses[1](out).backward()
        probes.after_backward()
        values, mask, _ = probes.fetch()
        if step == 0:
            assert len(caught) == 1 and "a second backward pass went through one forward call" in str(caught[0].message)
            assert caught[0].filename == __file__  # (the user's line)
            assert np.isnan(values[:, signal_at]).all() or not mask[:, signal_at].any(), values[:, signal_at]
        else:
            assert not caught and {k: values[j, signal_at] for k, j in rows.items()} == pytest.approx(signal, rel=1e-5)
    probes.remove()


def test_a_gradient_penalty_of_the_parameters_in_the_block(tmp_path):
    # torch.autograd.grad of the loss by the parameters themselves (a gradient-norm penalty, MAML, a
    # Hessian-vector product): torch refuses to say whether such a pass accumulates, and the refusal came out of
    # the user's own call as a RuntimeError
    model = _mlp()
    x, y = torch.randn(16, 10), torch.randint(0, 3, (16,))

    def penalised(m):
        loss = F.cross_entropy(m(x), y)
        grads = torch.autograd.grad(loss, list(m.parameters()), create_graph=True)
        return loss + 0.1 * sum(g.pow(2).sum() for g in grads)

    ref = copy.deepcopy(model)
    penalised(ref).backward()
    with gradflow.Recorder(model, tmp_path / "run", every=1) as rec:
        with rec.step(0):
            penalised(model).backward()
    got = _recorded(tmp_path / "run")
    assert got["grad_norm"] == pytest.approx({k: float(ref[k].weight.grad.double().norm()) for k in (0, 2, 4)},
                                             rel=1e-5)
    assert len(got["signal_norm"]) == 3 and all(v > 0 for v in got["signal_norm"].values())


def test_gradients_changed_by_a_callback_of_the_pass_are_read_as_changed(tmp_path):
    # DDP averages the gradients in a callback it queues at the end of the backward pass; the probes' copy,
    # queued at the pass's first signal, ran before it and took each rank's own gradients. Here a callback
    # queued the same way halves them: what the loop steps with is what is recorded
    def block(model, x, y):
        halve = lambda: [p.grad.mul_(0.5) for p in model.parameters()]  # noqa: E731
        model[0].weight.register_post_accumulate_grad_hook(
            lambda p: torch.autograd.Variable._execution_engine.queue_callback(halve))
        F.cross_entropy(model(x), y).backward()

    got, _, grad, _ = _one_step(tmp_path, block)
    assert got["grad_norm"] == pytest.approx({k: v / 2 for k, v in grad.items()}, rel=1e-5)


def test_a_model_made_double_between_probed_steps_keeps_its_signals(tmp_path):
    # model.double() makes every parameter a new leaf: the probes' kept AccumulateGrad nodes were the old ones,
    # and from then on every pass read as one that accumulates nothing: no signals, clipped gradients read
    model = _mlp()
    x, y = torch.randn(16, 10), torch.randint(0, 3, (16,))
    with gradflow.Recorder(model, tmp_path / "run", every=1) as rec:
        for step in range(2):
            if step == 1:
                model.double()
                x = x.double()
            with rec.step(step):
                F.cross_entropy(model(x), y).backward()
                grad = float(model[0].weight.grad.double().norm())
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1e-3)
            model.zero_grad()
    layers = gradflow.load(tmp_path / "run").query("step == 1 and name == '0'").set_index("quantity")["value"]
    assert layers["grad_norm"] == pytest.approx(grad, rel=1e-6) and layers["signal_norm"] > 0


def test_frozen_layers_in_a_reentrant_checkpoint_keep_their_signals(tmp_path):
    # the nested backward pass of reentrant checkpointing holds no trainable weight there: read as a pass
    # that accumulates nothing, the frozen layers' signals were dropped
    import torch.utils.checkpoint as cp

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.seq = _mlp()
            for m in self.seq[2:4]:
                m.requires_grad_(False)

        def forward(self, x, reentrant):
            h = self.seq[1](self.seq[0](x))
            h = cp.checkpoint(self.seq[2:4], h, use_reentrant=True) if reentrant else self.seq[2:4](h)
            return self.seq[4](h)

    x, y = torch.randn(16, 10), torch.randint(0, 3, (16,))
    signals = []
    for reentrant in (False, True):
        net = Net()
        with gradflow.Recorder(net, tmp_path / f"r{reentrant}", every=1) as rec:
            with rec.step(0):
                F.cross_entropy(net(x, reentrant), y).backward()
        signals.append(_recorded(tmp_path / f"r{reentrant}")["signal_norm"])
    assert set(signals[0]) == {"seq.0", "seq.2", "seq.4"} and signals[1] == pytest.approx(signals[0], rel=1e-6)


def test_a_model_whose_every_probed_weight_is_frozen_closes(tmp_path):
    # an adapter of raw parameters beside frozen Linear layers (LoRA-like): its run's end found no hidden weight
    # gradient to flag and close() raised KeyError, leaving the run `running`
    class Adapted(nn.Module):
        def __init__(self):
            super().__init__()
            self.base = nn.Linear(8, 8).requires_grad_(False)
            self.a = nn.Parameter(torch.randn(8, 2) * 0.1)

        def forward(self, x):
            return self.base(x) + x @ self.a @ self.a.t()

    torch.manual_seed(0)
    model = nn.Sequential(Adapted(), nn.Tanh(), Adapted())
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    with gradflow.Recorder(model, tmp_path / "run", every=1) as rec:
        for step in range(2):
            with rec.step(step):
                model(torch.randn(4, 8)).square().mean().backward()
            opt.step()
            opt.zero_grad()
    assert store.read_run(tmp_path / "run")["status"] == "ok"
    assert (gradflow.load(tmp_path / "run").query("quantity == 'signal_norm'")["value"] > 0).all()


def _five_layers():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 3))


def test_a_model_frozen_after_its_last_step_keeps_that_steps_gradients(tmp_path, fuse_after):
    # requires_grad was read when the step was (at close()), after the loop froze the model for an evaluation
    # or export: the last probed step had no gradient row and grad_ratio.final was None, in a run said `ok`
    model = _five_layers()
    reference = copy.deepcopy(model)  # trained in lockstep, its gradients taken right after each backward pass
    xs, ys = torch.randn(20, 16, 8), torch.randint(0, 3, (20, 16))
    opt, ref_opt = (torch.optim.SGD(m.parameters(), lr=0.1) for m in (model, reference))
    rec = gradflow.Recorder(model, tmp_path / "run", every=10, steps=20)
    grads = {}
    for step in range(20):
        with rec.step(step):
            F.cross_entropy(model(xs[step]), ys[step]).backward()
        opt.step()
        opt.zero_grad()
        F.cross_entropy(reference(xs[step]), ys[step]).backward()
        grads[step] = {name: float(reference[int(name)].weight.grad.double().norm()) for name in ("0", "2", "4")}
        ref_opt.step()
        ref_opt.zero_grad()
    model.requires_grad_(False)
    rec.close()
    got = gradflow.load(tmp_path / "run").query("quantity == 'grad_norm'")
    assert sorted(set(got.step)) == [0, 10, 19]
    for step in (0, 10, 19):
        at = got[got.step == step]
        assert dict(zip(at.name, at.value)) == pytest.approx(grads[step], rel=1e-5), step
    run = store.read_run(tmp_path / "run")
    assert run["status"] == "ok" and run["frozen"] == [] and run["fused_steps"] == (2 if fuse_after else 0)
    assert run["summary"]["grad_ratio.final"] == pytest.approx(grads[19]["0"] / grads[19]["4"], rel=1e-5)


def test_a_layer_frozen_mid_run_is_masked_at_the_steps_it_was_frozen_at_alone(tmp_path, fuse_after):
    # requires_grad was read at the next rec.step(): a layer frozen before step 2 masked step 1's gradient and
    # update, though both were taken, and run.json's `frozen`, the state at the first step, named no layer
    model = _five_layers()
    reference = copy.deepcopy(model)
    xs, ys = torch.randn(4, 16, 8), torch.randint(0, 3, (4, 16))
    opt, ref_opt = (torch.optim.SGD(m.parameters(), lr=0.1) for m in (model, reference))
    rec = gradflow.Recorder(model, tmp_path / "run", every=1)
    want = {}
    for step in range(4):
        for m in (model, reference):
            m[0].requires_grad_(step != 2)  # frozen at step 2 alone
        with rec.step(step):
            F.cross_entropy(model(xs[step]), ys[step]).backward()
        opt.step()
        opt.zero_grad()
        F.cross_entropy(reference(xs[step]), ys[step]).backward()
        weight, bias = reference[0].weight, reference[0].bias
        before = weight.detach().double().clone()
        ref_opt.step()
        if step != 2:  # (a frozen layer's cells are masked, not 0)
            want.update({(step, "grad_norm"): float(weight.grad.double().norm()),
                         (step, "bias_grad_norm"): float(bias.grad.double().norm()),
                         (step, "update_ratio"): float((weight.detach().double() - before).norm() / before.norm())})
        ref_opt.zero_grad()
    rec.close()
    got = gradflow.load(tmp_path / "run")
    got = got[(got.name == "0") & got.quantity.isin(["grad_norm", "bias_grad_norm", "update_ratio"])]
    assert dict(zip(zip(got.step, got.quantity), got.value)) == pytest.approx(want, rel=1e-5)
    run = store.read_run(tmp_path / "run")
    assert run["status"] == "ok" and run["frozen"] == ["0"] and run["fused_steps"] == (3 if fuse_after else 0)


def test_a_layer_the_loop_does_not_use_is_masked_not_a_gradient_of_0(tmp_path):
    # an auxiliary head the forward pass never calls: it went first in the layer order and its gradient, None,
    # was recorded as 0, so the run's first/last gradient ratio read 0
    class WithAux(nn.Module):
        def __init__(self):
            super().__init__()
            self.l0, self.l1, self.head, self.aux_head = nn.Linear(10, 16), nn.Linear(16, 16), nn.Linear(16, 3), \
                nn.Linear(16, 5)

        def forward(self, x):
            return self.head(torch.tanh(self.l1(torch.tanh(self.l0(x)))))

    torch.manual_seed(0)
    model = WithAux()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.warns(UserWarning, match="aux_head ran in none of gradflow's looks at the model"):
        with gradflow.Recorder(model, tmp_path / "run", every=1, steps=2) as rec:
            for step in range(2):
                with rec.step(step):
                    nn.functional.cross_entropy(model(torch.randn(8, 10)), torch.randint(0, 3, (8,))).backward()
                opt.step()
                opt.zero_grad()
    df = gradflow.load(tmp_path / "run")
    assert df.drop_duplicates("layer").sort_values("layer")["name"].tolist() == ["l0", "l1", "head", "aux_head"]
    grads = df[df["quantity"].isin(["grad_norm", "bias_grad_norm", "update_ratio"])]
    assert "aux_head" not in set(grads["name"]) and (grads["value"] > 0).all()
    first = grads[(grads["step"] == 0) & (grads["quantity"] == "grad_norm")].set_index("name")["value"]
    summary = store.read_run(tmp_path / "run")["summary"]
    assert summary["grad_ratio.init"] == pytest.approx(first["l0"] / first["head"], rel=1e-6)


def test_a_backward_pass_given_inputs_keeps_its_signals(tmp_path):
    # loss.backward(inputs=[the first layer's weight]): the pass was asked of the head's weight, which it
    # leaves out, read as one that accumulates nothing: no signal at all, and the clipped gradient recorded
    def block(model, x, y):
        F.cross_entropy(model(x), y).backward(inputs=[model[0].weight])
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1e-3)

    got, signal, grad, _ = _one_step(tmp_path, block)
    assert got["signal_norm"] == pytest.approx(signal, rel=1e-5) and got["grad_norm"][0] == pytest.approx(grad[0])


def test_a_backward_pass_that_raised_does_not_keep_the_next_ones_gradients(tmp_path):
    # a pass that raised midway (a bad batch the loop skips) never ends, and no pass after it in the step
    # copied the gradients at its end: the copy of the micro-batch before was recorded, 0.265 for 0.395
    model = _mlp()
    x, y = torch.randn(16, 10), torch.randint(0, 3, (16,))

    def boom(g):
        raise ValueError("a bad batch")

    with gradflow.Recorder(model, tmp_path / "run", every=1) as rec:
        with rec.step(0):
            F.cross_entropy(model(x[:8]), y[:8]).backward()
            bad = x[8:12].clone().requires_grad_(True)
            bad.register_hook(boom)  # (raised at the input: every layer's hook has seen the pass)
            with pytest.raises(ValueError):
                model(bad).sum().backward()
            F.cross_entropy(model(x[8:]), y[8:]).backward()
            grad = {k: float(model[k].weight.grad.double().norm()) for k in (0, 2, 4)}  # as the last pass left them
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1e-3)
    assert _recorded(tmp_path / "run")["grad_norm"] == pytest.approx(grad, rel=1e-5)


def test_two_recorders_of_one_model_in_one_block_and_a_compiled_model(tmp_path):
    # two Recorders' first forward pass in one block raised TypeError (one's discovery removed the other's
    # hook midway); a torch.compile'd model given to the Recorder failed inside dynamo at discovery
    model = _mlp()
    x, y = torch.randn(16, 10), torch.randint(0, 3, (16,))
    _, grad = _reference(model, [x], [lambda out: F.cross_entropy(out, y)])
    compiled = torch.compile(model, backend="eager")
    for runs in ((model, "a", "b"), (compiled, "c")):
        recs = [gradflow.Recorder(runs[0], tmp_path / name, every=1) for name in runs[1:]]
        with contextlib.ExitStack() as block:
            for rec in recs:
                block.enter_context(rec.step(0))
            F.cross_entropy(runs[0](x), y).backward()
        model.zero_grad()
        for rec in recs:
            rec.close()
    for name in "abc":
        assert _recorded(tmp_path / name)["grad_norm"] == pytest.approx(grad, rel=1e-5), name


def test_a_rerun_into_a_folder_with_the_loops_checkpoints(tmp_path):
    # the README has the loop save its checkpoints in the run's folder; the script's rerun was then refused
    # ("it holds ckpt_100.pt, which gradflow did not write"): the Recorder replaces its own files, the loop's stay
    model = _mlp()
    x, y = torch.randn(16, 10), torch.randint(0, 3, (16,))
    for run in range(2):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with gradflow.Recorder(model, tmp_path / "run", every=1) as rec:
                with rec.step(0):
                    F.cross_entropy(model(x), y).backward()
                torch.save(model.state_dict(), rec.path / f"ckpt{run}.pt")
        assert any("replacing the run recorded there before" in str(w.message) for w in caught) == (run == 1)
    assert {"ckpt0.pt", "ckpt1.pt", "run.json", "layers.parquet"} <= {p.name for p in (tmp_path / "run").iterdir()}
    assert store.read_run(tmp_path / "run")["status"] == "ok" and set(gradflow.load(tmp_path / "run").step) == {0}


def test_a_tied_head_is_left_out_of_the_first_last_gradient_ratio(tmp_path):
    # a GPT's head uses its token embedding's weight: recorded once, at the embedding, its gradient the sum of
    # both uses, mostly the head's. ls's first/last ratio read 22.9 for a post-LN net whose first block's
    # gradient was 1e-6 of its last's; run.json names the tied point, and the ratios start after it
    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.emb = nn.Embedding(20, 16)
            self.body = nn.Sequential(nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh())
            self.head = nn.Linear(16, 20, bias=False)
            self.head.weight = self.emb.weight

        def forward(self, t):
            return self.head(self.body(self.emb(t)))

    model, t = Tiny(), torch.randint(0, 20, (8,))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (the tied weights' own warning)
        with gradflow.Recorder(model, tmp_path / "run", every=1) as rec:
            with rec.step(0):
                F.cross_entropy(model(t), t).backward()
    run = store.read_run(tmp_path / "run")
    assert run["tied"] == ["emb"]
    grads = {n: float(m.weight.grad.norm()) for n, m in (("body.0", model.body[0]), ("body.2", model.body[2]))}
    assert run["summary"]["grad_ratio.init"] == pytest.approx(grads["body.0"] / grads["body.2"], rel=1e-5)
    assert run["summary"]["grad_ratio.final"] == pytest.approx(grads["body.0"] / grads["body.2"], rel=1e-5)
    assert "emb" in set(gradflow.load(tmp_path / "run").query("quantity == 'grad_norm'").name)  # still recorded


def test_a_logged_loss_that_is_not_finite_is_a_divergence_with_finite_gradients(tmp_path):
    """The loop's logged loss non-finite (a regression loss overflowing, a metric of the user's) while the
    weight gradients stay finite: the run is diverged at that step, in its loss alone, with no layer."""
    torch.manual_seed(0)
    _square_loss_loop(tmp_path / "lossnan", 4, lambda step, loss: {"train_loss": float("nan") if step == 2 else loss})
    run = store.read_run(tmp_path / "lossnan")
    assert run["status"] == "diverged" and run["diverged_step"] == 2 and run["diverged_in"] == "loss", run
    assert "diverged_layer" not in run and run["last_finite"]["step"] == 1


def test_a_logged_scalar_no_view_reads_is_told(tmp_path):
    # rec.log(step, val_loss=...) is stored as split val, which ls, curves and compare never show: it was
    # dropped from every view without a word
    model = _mlp()
    x, y = torch.randn(16, 10), torch.randint(0, 3, (16,))
    with pytest.warns(UserWarning, match=r"logged val_loss: stored \(gradflow.load\(path, 'metrics'\)\), but no "
                                         r"view shows it: ls, curves, compare and the report read train_loss") as said:
        with gradflow.Recorder(model, tmp_path / "run", every=1) as rec:
            with rec.step(0):
                loss = F.cross_entropy(model(x), y)
                loss.backward()
            rec.log(0, train_loss=loss, val_loss=loss, opt_grad_norm=1.0)
    assert len([w for w in said if "logged" in str(w.message)]) == 1  # (train_loss and opt_grad_norm are read)
    assert set(gradflow.load(tmp_path / "run", "metrics").split) == {"train", "val", "opt"}


def test_a_logged_name_without_an_underscore_or_of_a_metric_no_view_reads_is_told(tmp_path):
    # rec.log(step, lr=...) is stored as split `log`, which no view reads (the curves draw train/test loss and
    # acc, ls and compare their final values), yet close() counted split log as read and said nothing; nor of
    # train_ppl or opt_lr, of a split a view reads but a metric it does not
    model = _mlp()
    x, y = torch.randn(16, 10), torch.randint(0, 3, (16,))
    with pytest.warns(UserWarning) as said:
        with gradflow.Recorder(model, tmp_path / "run", every=1) as rec:
            for step in range(2):
                with rec.step(step):
                    loss = F.cross_entropy(model(x), y)
                    loss.backward()
                rec.log(step, train_loss=loss, test_acc=0.5, lr=0.1 * (step + 1), train_ppl=loss.exp(), opt_lr=0.1,
                        opt_grad_norm=1.0)
    (told,) = [str(w.message) for w in said if "logged" in str(w.message)]
    assert told.split(": ", 1)[1].startswith("logged lr, opt_lr, train_ppl: stored (gradflow.load(path, 'metrics'), "
                                             "split 'log' for lr), but no view shows them"), told
    assert "test_loss to see it there" not in told  # (no loss among them)
    # where the note says: split log, metric lr, each step's value
    metrics = gradflow.load(tmp_path / "run", "metrics")
    lr = metrics[(metrics.split == "log") & (metrics.metric == "lr")].sort_values("step")
    assert list(lr.value) == pytest.approx([0.1, 0.2])
    # and no view shows them indeed: the curves draw the loss and acc rows alone
    from gradflow.plots import figures

    fig = figures.curves(metrics)
    labels = " ".join(t.get_text() for ax in fig.axes for t in [ax.yaxis.label, ax.title])
    assert "loss" in labels and "lr" not in labels and "ppl" not in labels, labels


def test_a_loop_that_logs_batch_losses_alone_is_not_told_they_are_unread(tmp_path):
    # the curves draw batch_loss where no train_* or test_* loss or acc is logged
    model = _mlp()
    x, y = torch.randn(16, 10), torch.randint(0, 3, (16,))
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        with gradflow.Recorder(model, tmp_path / "run", every=1) as rec:
            with rec.step(0):
                loss = F.cross_entropy(model(x), y)
                loss.backward()
            rec.log(0, batch_loss=loss)
    assert not [w for w in said if "logged" in str(w.message)]
    from gradflow.plots import figures

    fig = figures.curves(gradflow.load(tmp_path / "run", "metrics"))  # (drawn: shown by a view)
    assert any(len(ln.get_xdata()) for ax in fig.axes for ln in ax.get_lines())


# --- a loss that overflows to inf, scalars under their own step, a step number given twice ---------------
def test_a_logged_loss_that_overflows_to_inf_is_a_divergence_too(tmp_path):
    """A regression loss overflowing reads inf, not NaN: diverged at that step, in its loss, as a NaN loss is."""
    torch.manual_seed(0)
    _square_loss_loop(tmp_path / "lossinf", 4,
                      lambda step, loss: {"train_loss": loss * float("inf") if step == 2 else loss})
    run = store.read_run(tmp_path / "lossinf")
    assert run["status"] == "diverged" and run["diverged_step"] == 2 and run["diverged_in"] == "loss", run
    assert run["final"] == {} and run["last_finite"]["step"] == 1


def test_scalars_are_stored_under_the_step_the_loop_logs_them_at(tmp_path):
    """rec.log(step, ...) stores its values under `step`, whichever block ran last: the evaluation of the
    initial model logged before the first block (step 0), each step's train loss after its block, and a test
    loss of step 1 logged late, after step 2's block."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
    x = torch.randn(8, 4)
    with gradflow.Recorder(model, tmp_path / "run", every=1) as rec:
        rec.log(0, test_loss=1.5)  # (before any rec.step)
        for step in range(3):
            with rec.step(step):
                loss = model(x).square().mean()
                loss.backward()
            rec.log(step, train_loss=loss)
            if step == 2:
                rec.log(1, test_loss=0.5)
            model.zero_grad()
    metrics = gradflow.load(tmp_path / "run", "metrics")
    test = metrics[metrics.split == "test"].set_index("step")["value"]
    assert test.to_dict() == {0: 1.5, 1: 0.5}
    assert sorted(metrics[metrics.split == "train"].step) == [0, 1, 2]


def test_a_name_logged_twice_at_one_step_keeps_the_last_value_and_says_so_once(tmp_path):
    """A loop that logs each micro-batch's loss under the update's step stored a row per call: two values of
    train/loss at one step, the curves drawn as a zig-zag between them, ls's final loss whichever came last
    in the file. One value per name and step is kept, the last (a tensor's as a float's), told once."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
    last = {}
    with warnings.catch_warnings(record=True) as told:
        warnings.simplefilter("always")
        with gradflow.Recorder(model, tmp_path / "run", every=1, steps=3) as rec:
            for step in range(3):
                with rec.step(step):
                    for micro in range(2):
                        loss = model(torch.randn(8, 4)).square().mean()
                        loss.backward()
                        rec.log(step, train_loss=loss, train_acc=0.5 + micro / 4)
                        last[step] = loss.item()
                model.zero_grad()
    twice = [str(w.message) for w in told if "twice" in str(w.message)]
    assert twice == ["rec.log: train_loss logged twice at step 0; the last value is kept (one value per name and "
                     "step: log the mean of an update's micro-batches once, after them)"]
    metrics = gradflow.load(tmp_path / "run", "metrics")
    assert not metrics.duplicated(["step", "split", "metric"]).any()
    loss = metrics[metrics.metric == "loss"].set_index("step")["value"]
    assert loss.to_dict() == pytest.approx(last, rel=1e-6)
    assert set(metrics[metrics.metric == "acc"]["value"]) == {0.75}


def test_a_logged_step_that_is_no_whole_number_is_refused_at_the_call(tmp_path):
    """rec.log checks its step as rec.step does: "two" failed only at close(), in pyarrow's words, leaving the
    run `running` (read as interrupted) with no metrics.parquet; 1.5 was stored as step 1 and -5 as -5."""
    model = nn.Linear(2, 2)
    with gradflow.Recorder(model, tmp_path / "run", every=1, steps=2) as rec:
        with rec.step(0):
            loss = model(torch.randn(3, 2)).sum()
            loss.backward()
        rec.log(0, train_loss=loss)
        with rec.step(torch.tensor(1)):  # a one-element integer tensor is a step, in rec.step as in rec.log
            model(torch.randn(3, 2)).sum().backward()
        for bad in ("two", 1.5, -5, True, None):
            with pytest.raises(GradflowError, match=re.escape(f"rec.log({bad!r}): a step is a whole number >= 0")):
                rec.log(bad, train_loss=1.0)
        rec.log(np.int64(0), test_loss=2.0)  # numpy's integers are steps too
        # and a loop's counter kept as a one-element integer tensor (stored before the step was checked;
        # refused after); a float, bool or longer tensor is no step
        rec.log(torch.tensor(1), train_loss=3.0)
        for bad in (torch.tensor(1.0), torch.tensor(True), torch.tensor([1, 2]), torch.tensor(-1)):
            with pytest.raises(GradflowError, match=re.escape(f"rec.log({bad!r}): a step is a whole number >= 0")):
                rec.log(bad, train_loss=1.0)
    assert store.read_run(tmp_path / "run")["status"] == store.OK
    metrics = gradflow.load(tmp_path / "run", "metrics")
    assert sorted(metrics.step) == [0, 0, 1] and set(metrics.split) == {"train", "test"}
    assert metrics.loc[metrics.step == 1, "value"].tolist() == [3.0]
    assert sorted(gradflow.load(tmp_path / "run").step.unique()) == [0, 1]


def test_an_empty_path_is_refused_by_the_recorder_and_by_load(tmp_path, monkeypatch):
    """Path("") is the current folder: a Recorder given "" (an unset variable) wrote its run into whatever
    folder the script ran in, among the user's files, and gradflow.load("") read every run below it."""
    gradflow.Recorder(nn.Linear(2, 2), tmp_path / "here" / "run0").close()  # (a warning: no step recorded)
    monkeypatch.chdir(tmp_path / "here")
    for empty in ("", "  "):
        with pytest.raises(GradflowError, match=r"^the path is empty \(an unset variable\?\); give the folder, e\.g\. "
                                                r"Recorder\(model, "):
            gradflow.Recorder(nn.Linear(2, 2), empty)
        for table in ("layers", "runs"):
            with pytest.raises(GradflowError, match=r"^the path is empty .*gradflow\.load\("):
                gradflow.load(empty, table)
    # None (an unset option's default) is one clear line too, not Path's TypeError
    with pytest.raises(GradflowError, match=r"^the path is None, no folder; give one, e\.g\. Recorder\(model, "):
        gradflow.Recorder(nn.Linear(2, 2), None)
    with pytest.raises(GradflowError, match=r"^the path is None, no folder; give one, e\.g\. gradflow\.load\("):
        gradflow.load(None)
    assert sorted(p.name for p in (tmp_path / "here").iterdir() if not p.name.startswith(".")) == ["run0"]
    assert len(gradflow.load(".", "runs")) == 1  # "." still means this folder


def test_a_config_depth_unlike_the_models_is_said_at_close(tmp_path, recwarn):
    # a 3-layer net whose config said model.depth 12 was plotted at 12 beside the same net at 3, without a word;
    # a net of blocks may count its blocks, and a net whose depth is right is not told
    def run(name, model, depth):
        with gradflow.Recorder(model, tmp_path / name, config={"model": {"depth": depth}}, every=1) as rec:
            with rec.step(0):
                model(torch.randn(4, 3)).sum().backward()
        return [str(w.message) for w in recwarn.list if "model.depth" in str(w.message)]

    chain = lambda: nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(),  # noqa: E731
                                  nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 2))
    assert run("three", chain(), 3) == []
    assert run("twelve", chain(), 12) == [f"{tmp_path / 'twelve'}: config model.depth=12, but the model has 3 weight "
                                          "layers before its head (`6`): the depth figures plot the run at 12; "
                                          "model.depth counts the weight layers before the head (the depth "
                                          "convention), 3 here"]
    recwarn.clear()
    blocks = nn.Sequential(*(nn.Sequential(nn.Linear(3, 3), nn.Tanh(), nn.Linear(3, 3)) for _ in range(4)))
    assert run("blocks", blocks, 4) == []  # (8 weight layers, 4 blocks: its depth may count the blocks)
    assert run("one-block", blocks[:1], 1) == []  # (and one block: a point of a 1, 2, 4-block sweep was told)

    class Recurrent(nn.Module):  # a GRU's weights no probe point sees, before a head
        def __init__(self):
            super().__init__()
            self.gru, self.head = nn.GRU(3, 4, batch_first=True), nn.Linear(4, 2)

        def forward(self, x):
            return self.head(self.gru(x.unsqueeze(1))[0][:, -1])

    assert run("gru", Recurrent(), 1) == []

    class Cell(nn.Module):  # a GRU cell over three time steps, between weight layers: its weights no probe sees
        def __init__(self):
            super().__init__()
            self.inp, self.cell, self.out, self.head = nn.Linear(3, 4), nn.GRUCell(4, 4), nn.Linear(4, 8), nn.Linear(8, 2)

        def forward(self, x):
            h, z = None, self.inp(x)
            for _ in range(3):
                h = self.cell(z, h)
            return self.head(torch.tanh(self.out(h)))

    assert run("gru-cell", Cell(), 3) == []

    class Embedded(nn.Module):  # an embedding before three hidden layers: no convention says to count it
        def __init__(self):
            super().__init__()
            self.emb, self.body = nn.Embedding(5, 3), chain()

        def forward(self, x):
            return self.body(self.emb(x.abs().long().clamp(max=4)).mean(1))

    assert run("embedded", Embedded(), 3) == []


def test_a_step_number_given_twice_in_a_row_is_refused(tmp_path):
    """The same number twice (a loop that forgot to count a micro-batch loop's updates) would record two
    updates as one step: refused as any number that does not increase is."""
    model = nn.Linear(2, 2)
    with gradflow.Recorder(model, tmp_path / "run", every=1) as rec:
        with rec.step(3):
            model(torch.randn(3, 2)).sum().backward()
        with pytest.raises(GradflowError, match=r"^rec.step\(3\) after rec.step\(3\): step numbers must increase"):
            with rec.step(3):
                model(torch.randn(3, 2)).sum().backward()
    assert sorted(store.load(tmp_path / "run").step.unique()) == [3]
    assert store.read_run(tmp_path / "run")["status"] == "ok"  # (the loop took the error, and went on to close)


def test_a_run_closed_while_its_loops_error_is_on_its_way_out_is_failed_with_it(tmp_path):
    """rec.close() in the loop's `finally` (no `with`): the run was written `ok`, of the steps before the error,
    as if the loop had finished, whether rec.step refused the step or the model raised in its block. Any other
    exception Python handles meanwhile is none of the run's: an early stop's, an earlier attempt's (every such
    run read `failed` with it); nor is an error the loop caught before going on."""
    def loop(path, steps, error=None, inside=True):
        model = nn.Linear(2, 2)
        rec = gradflow.Recorder(model, tmp_path / path, every=1)
        try:
            try:
                for step in steps:
                    with rec.step(step):
                        model(torch.randn(3, 2)).sum().backward()
                        if step == 1 and error is not None and inside:
                            raise error
                    if step == 1 and error is not None and not inside:
                        raise error
            finally:
                rec.close()
        except (GradflowError, RuntimeError, KeyboardInterrupt):
            pass
        return store.read_run(tmp_path / path)

    run = loop("refused", (0, 1, 1))
    assert run["status"] == "failed" and run["error"] == ("GradflowError: rec.step(1) after rec.step(1): step "
                                                          "numbers must increase. Count updates across epochs (not "
                                                          "enumerate() within one), and wrap all of an update's "
                                                          "micro-batches in one rec.step"), run
    assert sorted(store.load(tmp_path / "refused").step.unique()) == [0, 1]  # (its tables kept)
    run = loop("raised", (0, 1, 2), RuntimeError("the model's own"))
    assert run["status"] == "failed" and run["error"] == "RuntimeError: the model's own" and run["traceback"]
    assert loop("stopped", (0, 1, 2), KeyboardInterrupt())["status"] == "interrupted"
    assert loop("clean", (0, 1, 2))["status"] == "ok"
    assert loop("early-stop", (0, 1, 2), RuntimeError("stop early"), inside=False)["status"] == "ok"
    try:  # a second attempt, trained and closed while the first one's error is handled
        raise FloatingPointError("the first attempt's")
    except FloatingPointError:
        assert loop("retry", (0, 1, 2))["status"] == "ok"
    model = nn.Linear(2, 2)  # an error the loop caught in a step, and went on past
    rec = gradflow.Recorder(model, tmp_path / "went-on", every=1)
    for step in range(3):
        try:
            with rec.step(step):
                model(torch.randn(3, 2)).sum().backward()
                if step == 1:
                    raise ValueError("a bad batch, skipped")
        except ValueError as e:
            caught = e
    try:
        raise caught
    except ValueError:
        rec.close()  # (the step's error, handled long after a step went on past it)
    assert store.read_run(tmp_path / "went-on")["status"] == "ok"


@pytest.mark.parametrize("model", [nn.Flatten(), nn.LSTM(3, 4)], ids=["no-parameters", "lstm-alone"])
def test_a_model_with_no_layer_to_probe_is_refused_before_anything_is_written(tmp_path, model):
    # it was said at the first probed step, from inside a forward hook in the loop's model(x), the run then
    # written failed (and a model without parameters once crashed close() with StopIteration)
    with pytest.raises(GradflowError, match=rf"^{type(model).__name__} has no layer gradflow probes"):
        gradflow.Recorder(model, tmp_path / "s" / "r", config={})
    assert not (tmp_path / "s").exists()


def test_lazy_modules_are_found_at_the_first_forward_pass(tmp_path):
    # the check at construction read an uninitialized parameter's dim(): torch's ValueError from Recorder(...)
    model = nn.Sequential(nn.LazyLinear(16), nn.Tanh(), nn.LazyLinear(2))
    with gradflow.Recorder(model, tmp_path / "s" / "r", every=1) as rec:
        with rec.step(0):
            model(torch.randn(5, 3)).sum().backward()
    assert list(store.load(tmp_path / "s" / "r").drop_duplicates("layer").name) == ["0", "2"]


def test_a_models_own_weight_beside_its_layers_is_not_put_first():
    # a model that is one layer (nn.Linear alone) ran first; a model whose own weight is a readout after its
    # layers was put first too, read by the first/last ratios as its input layer
    class Readout(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(3, 4), nn.Linear(4, 4)
            self.weight = nn.Parameter(torch.randn(2, 4))

        def forward(self, x):
            return self.b(self.a(x)) @ self.weight.T

    with pytest.warns(UserWarning, match="its place unknown"):
        names = [p.name for p in discover(Readout(), torch.randn(2, 3))]
    assert names[:2] == ["a", "b"] and len(names) == 3, names


def test_a_tensor_logged_is_its_value_at_the_call(tmp_path):
    # rec.log kept the tensor itself: an EMA the loop updates in place, or a parameter, read as its last value
    # at every step
    model = nn.Linear(3, 2)
    temperature = nn.Parameter(torch.tensor(1.0))
    opt = torch.optim.SGD([*model.parameters(), temperature], lr=0.1)
    ema, logged = torch.zeros(()), []
    with gradflow.Recorder(model, tmp_path / "s" / "r", every=1) as rec:
        for step in range(4):
            with rec.step(step):
                loss = (model(torch.randn(8, 3)) / temperature).pow(2).mean()
                loss.backward()
            ema.mul_(0.5).add_(loss.detach(), alpha=0.5)
            rec.log(step, train_ema=ema, train_temperature=temperature)
            logged.append((float(ema), float(temperature.detach())))
            opt.step()
            opt.zero_grad()
    metrics = gradflow.load(tmp_path / "s" / "r", "metrics").pivot(index="step", columns="metric", values="value")
    assert list(metrics["ema"]) == pytest.approx([e for e, _ in logged])
    assert list(metrics["temperature"]) == pytest.approx([t for _, t in logged])
    assert len(set(metrics["temperature"])) == 4


def test_a_loop_that_wraps_only_its_probed_steps_gets_one_updates_ratio(tmp_path):
    # the update ratio was taken at the next rec.step: a loop with `with rec.step(t)` only where t % every == 0
    # (the README's "a no-op otherwise" allows it) recorded ten updates' distance as one's, ~9x too large
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(16, 4), torch.randint(0, 2, (16,))
    expected = {}
    with gradflow.Recorder(model, tmp_path / "s" / "r", every=10) as rec:
        for step in range(21):
            block = rec.step(step) if step % 10 == 0 else contextlib.nullcontext()
            with block:
                F.cross_entropy(model(x), y).backward()
            if step % 10 == 0:
                before = model[0].weight.detach().clone()
            opt.step()
            if step % 10 == 0:
                expected[step] = float((model[0].weight.detach() - before).norm() / before.norm())
            opt.zero_grad()
    ratios = store.rows(store.load(tmp_path / "s" / "r"), "update_ratio")
    got = dict(zip(ratios[ratios.name == "0"].step, ratios[ratios.name == "0"].value))
    assert got == pytest.approx(expected, rel=1e-4)
    assert set(got) == {0, 10, 20}


def test_two_optimizers_each_stepping_once_give_the_whole_update(tmp_path):
    # (the ratio is read before an optimizer's second step, not at another optimizer's first)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
    first, second = (torch.optim.SGD(model[k].parameters(), lr=0.1) for k in (0, 2))
    with gradflow.Recorder(model, tmp_path / "s" / "r", every=1) as rec:
        for step in range(2):
            with rec.step(step):
                F.cross_entropy(model(torch.randn(16, 4)), torch.randint(0, 2, (16,))).backward()
            before = model[2].weight.detach().clone()
            first.step()
            second.step()
            if step == 0:
                expected = float((model[2].weight.detach() - before).norm() / before.norm())
            first.zero_grad()
            second.zero_grad()
    ratios = store.rows(store.load(tmp_path / "s" / "r"), "update_ratio", 0)
    assert float(ratios[ratios.name == "2"].value.iloc[0]) == pytest.approx(expected, rel=1e-4) and expected > 0


def test_a_recorder_replacing_a_run_removes_its_figures_and_page_not_the_loops_files(tmp_path):
    run = tmp_path / "s" / "r"
    for width in (4, 6):
        model = nn.Sequential(nn.Linear(3, width), nn.Tanh(), nn.Linear(width, 2))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ("replacing the run recorded there before")
            with gradflow.Recorder(model, run, every=1) as rec:
                with rec.step(0):
                    model(torch.randn(5, 3)).sum().backward()
        if width == 4:  # what plot and report write into a run they show, and a checkpoint of the loop's own
            (run / store.FIGURES_DIR).mkdir()
            (run / store.FIGURES_DIR / "heatmap.png").write_bytes(b"old figure")
            (run / store.REPORT_HTML).write_text("old page")
            (run / "checkpoint.pt").write_bytes(b"the loop's")
    assert not (run / store.FIGURES_DIR).exists() and not (run / store.REPORT_HTML).exists()
    assert (run / "checkpoint.pt").read_bytes() == b"the loop's"
    assert store.read_run(run)["status"] == "ok" and store.read_run(run)["frozen"] == []


class _Sampling(nn.Module):
    """A forward pass that draws (a VAE's reparameterization), in eval mode too."""
    def __init__(self):
        super().__init__()
        self.enc, self.dec = nn.Linear(4, 8), nn.Linear(8, 2)

    def forward(self, x):
        h = self.enc(x)
        return self.dec(h + torch.randn_like(h))


def test_the_recorders_discovery_leaves_the_loops_random_draws_as_they_were(tmp_path):
    # its forward pass on the first batch drew from the generator, so every later draw of the loop (its
    # batches, its dropout, its samples) differed from the same loop's without the Recorder
    def loop(path) -> torch.Tensor:
        torch.manual_seed(0)
        model = _Sampling()
        with gradflow.Recorder(model, path, every=1) if path else contextlib.nullcontext() as rec:
            for step in range(3):
                with rec.step(step) if rec else contextlib.nullcontext():
                    model(torch.randn(5, 4)).square().mean().backward()
                model.zero_grad()
        return torch.rand(3)

    assert torch.equal(loop(tmp_path / "study" / "run0"), loop(None))


class _PaddedEncoder(nn.Module):
    """Token ids and their padding mask through nn.TransformerEncoder (enable_nested_tensor=True, torch's default)."""

    def __init__(self):
        super().__init__()
        self.emb, self.head = nn.Embedding(10, 16), nn.Linear(16, 10)
        self.enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True), 2)

    def forward(self, idx, mask):  # idx, mask: (B, T)
        return self.head(self.enc(self.emb(idx), src_key_padding_mask=mask))


def test_a_transformer_encoder_given_a_padding_mask_is_recorded_as_plain_autograd_reads_it(tmp_path):
    # discovery's pass, in eval mode without gradients, took torch's attention fast path, which made the padded
    # batch a nested tensor: "NestedTensorImpl doesn't support sizes", raised from the loop's first forward pass
    torch.manual_seed(0)
    model = _PaddedEncoder()
    reference = copy.deepcopy(model)
    idx, mask = torch.randint(0, 10, (4, 5)), torch.zeros(4, 5, dtype=torch.bool)
    mask[:2, -2:] = True
    with gradflow.Recorder(model, tmp_path / "run", every=1) as rec:
        with rec.step(0):
            model(idx, mask)[~mask].logsumexp(-1).mean().backward()
    assert torch.backends.mha.get_fastpath_enabled()  # (as the Recorder found it)
    outs = {}

    def keep(name, z):
        z.retain_grad()
        outs[name] = z

    layers = {n: m for n, m in reference.named_modules() if isinstance(m, (nn.Linear, nn.Embedding))}
    for n, m in layers.items():
        m.register_forward_hook(lambda m, i, z, n=n: keep(n, z))
    reference(idx, mask)[~mask].logsumexp(-1).mean().backward()
    grads = {n: m.weight.grad.norm() for n, m in layers.items()}
    grads.update({f"{n}.in_proj": m.in_proj_weight.grad.norm() for n, m in reference.named_modules()
                  if isinstance(m, nn.MultiheadAttention)})
    got = gradflow.load(tmp_path / "run").set_index(["name", "quantity"])["value"]
    assert set(got.xs("grad_norm", level="quantity").index) == set(grads)
    for n, g in grads.items():
        assert got[(n, "grad_norm")] == pytest.approx(float(g), rel=1e-5), n
    # (out_proj runs inside its attention's forward, no output to hook)
    assert set(got.xs("signal_norm", level="quantity").index) == set(outs) and not any("out_proj" in n for n in outs)
    for n, z in outs.items():
        assert got[(n, "signal_norm")] == pytest.approx(float(z.grad.norm() * len(idx) ** 0.5), rel=1e-5), n


class _AttentionAlone(nn.Module):
    def __init__(self):
        super().__init__()
        self.att = nn.MultiheadAttention(8, 2, batch_first=True)

    def forward(self, x):
        return self.att(x, x, x)[0]


def test_a_model_of_attention_alone_is_recorded_its_empty_block_left_out(tmp_path):
    # its probe points are MultiheadAttention's projections: the input one has no hook, and out_proj's never fires
    # (the attention uses its weight, the module never runs), so every block read as one with no forward pass
    torch.manual_seed(0)
    model = _AttentionAlone()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with gradflow.Recorder(model, tmp_path / "study" / "run0", every=1) as rec:
        for step in range(3):
            with rec.step(step):
                model(torch.randn(3, 5, 8)).square().mean().backward()
            opt.step()
            opt.zero_grad(set_to_none=False)
        with rec.step(3):
            pass
        with rec.step(4), torch.no_grad():
            model(torch.randn(3, 5, 8))
        with pytest.warns(UserWarning, match=r"rec.step\(3\) and 1 other probed step ran no forward pass"):
            rec.close()
    layers = store.load(tmp_path / "study" / "run0")
    grads = layers[layers.quantity == "grad_norm"]
    assert sorted(grads.step.unique()) == [0, 1, 2] and (grads.value > 0).all(), grads


def test_a_loop_that_skips_a_failed_step_is_not_told_of_micro_batches(tmp_path):
    # a loop that catches a step's error (an out-of-memory batch skipped, fairseq's way) does not step the optimizer
    # after it: that block raised and was not done, no micro-batch of an update, yet close() warned "the optimizer did
    # not step between rec.step(1) and rec.step(2) ...; wrap all of an update's micro-batches in one block"
    model, opt = _small_net()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with gradflow.Recorder(model, tmp_path / "study" / "run0", every=1) as rec:
            for step in range(4):
                try:
                    with rec.step(step):
                        model(torch.randn(8, 4)).square().mean().backward()
                        if step == 1:
                            raise MemoryError("the batch did not fit")
                except MemoryError:
                    opt.zero_grad()
                    continue
                opt.step()
                opt.zero_grad()
    assert [str(w.message) for w in caught if "did not step" in str(w.message)] == []
    assert sorted(store.load(tmp_path / "study" / "run0").step.unique()) == [0, 2, 3]
    # a block that ran to its end with no step after it is still told
    (said,) = _micro_batches(tmp_path, "micro-batches", per_block=2, blocks=2)
    assert "did not step between rec.step(0) and rec.step(1):" in said, said


class _FrozenFeaturesBareReadout(nn.Module):
    """A linear probe: a frozen backbone run under no_grad, its trainable readout a bare parameter (no probe point)."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU())
        self.readout = nn.Parameter(torch.randn(8, 2) * 0.1)
        self.body.requires_grad_(False)

    def forward(self, x):
        with torch.no_grad():
            h = self.body(x)
        return h @ self.readout


def test_a_model_whose_probed_layers_run_under_no_grad_inside_it_is_no_no_grad_error(tmp_path):
    # every probe hook fired under no_grad, so the block was "a forward pass under torch.no_grad()", though the model
    # was called with gradients enabled and its readout trained
    torch.manual_seed(0)
    model = _FrozenFeaturesBareReadout()
    opt = torch.optim.SGD([model.readout], lr=0.1)
    with gradflow.Recorder(model, tmp_path / "study" / "run0", every=1) as rec:
        _train(rec, model, opt, range(2), (8, 4))
        with rec.step(2), torch.no_grad():
            model(torch.randn(8, 4))
        with pytest.warns(UserWarning, match=r"rec.step\(2\) ran no forward pass of the model with gradients"):
            rec.close()
    assert sorted(store.load(tmp_path / "study" / "run0").step.unique()) == [0, 1]


def test_an_empty_first_probed_block_is_left_out_as_any_other(tmp_path):
    # a loop that skips its first batch with `continue` (step 0, the discovery's block) raised "rec.step() saw no
    # forward pass of the model it was given", ending its training, where step 3's skip was left out and said at close;
    # its discovery hook then stayed on, and found the probe points in the next unprobed step's pass
    model, opt = _small_net()
    with gradflow.Recorder(model, tmp_path / "study" / "run0", every=2) as rec:
        for step in range(5):
            with rec.step(step):
                if step == 0:
                    continue
                model(torch.randn(5, 4)).square().mean().backward()
            if step == 1:  # (an unprobed step's pass: no probe point found there)
                assert rec.probes is None
            opt.step()
            opt.zero_grad()
        with pytest.warns(UserWarning, match=r"rec.step\(0\) ran no forward pass of the model with gradients"):
            rec.close()
    layers = store.load(tmp_path / "study" / "run0")
    assert sorted(layers.step.unique()) == [2, 4]
    # a model whose parameters got gradients from a pass that never called it (the Recorder given another module
    # than the loop runs) is still the clear error
    outer = nn.Sequential(model)
    rec = gradflow.Recorder(outer, tmp_path / "study" / "run1", every=1)
    with pytest.raises(GradflowError, match=r"^rec.step\(\) saw no forward pass of the model it was given"):
        with rec.step(0):
            model(torch.randn(5, 4)).sum().backward()
    rec.close()


def test_an_unhashable_optimizer_steps_beside_a_recorder(tmp_path):
    # optimizers were remembered in a WeakKeyDictionary: one whose class defines __eq__ (so no __hash__: a dataclass's
    # way) raised TypeError out of its own opt.step(), from the Recorder's hook on every optimizer's step
    class Compared(torch.optim.SGD):
        def __eq__(self, other):
            return self is other

    model, opt = _small_net(Compared)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with gradflow.Recorder(model, tmp_path / "study" / "run0", every=1) as rec:
            _train(rec, model, opt, range(3), (5, 4))
    assert not [w for w in caught if "did not step" in str(w.message)], [str(w.message) for w in caught]
    layers = store.load(tmp_path / "study" / "run0")
    ratios = layers[layers.quantity == "update_ratio"]
    assert sorted(ratios.step.unique()) == [0, 1, 2] and (ratios.value > 0).all(), ratios


@pytest.mark.parametrize("set_to_none", [True, False])
def test_a_loss_the_loop_skips_before_its_backward_pass_is_left_out_not_an_error(tmp_path, set_to_none):
    # `if not torch.isfinite(loss): continue` after the forward pass, before backward(): such a block has no
    # backward pass, as one whose backward runs after it has; it ended the loop's training with an error
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with gradflow.Recorder(model, tmp_path / "study" / "run0", every=1) as rec:
        for step in range(4):
            with rec.step(step):
                loss = model(torch.randn(5, 3)).square().mean()
                if step == 2:  # (a non-finite loss, say)
                    continue
                loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=set_to_none)
        with pytest.warns(UserWarning, match=r"rec.step\(2\) ran no backward pass \(a loss the loop skipped, say\), "
                                             r"so nothing was recorded for it"):
            rec.close()
    layers = store.load(tmp_path / "study" / "run0")
    assert sorted(layers.step.unique()) == [0, 1, 3]
    assert (layers.loc[layers.quantity == "grad_norm", "value"] > 0).all()


class Blocks(nn.Module):
    """A user's pre-LN residual net of `n` blocks (layers.i.fc, layers.i.proj), as a Recorder sees one."""

    def __init__(self, n: int = 5, d: int = 16):
        super().__init__()
        torch.manual_seed(0)
        self.inp = nn.Linear(8, d)
        self.layers = nn.ModuleList(nn.ModuleDict(dict(norm=nn.LayerNorm(d), fc=nn.Linear(d, 4 * d),
                                                       proj=nn.Linear(4 * d, d))) for _ in range(n))
        self.head = nn.Linear(d, 3)

    def forward(self, x):
        h = self.inp(x)
        for b in self.layers:
            h = h + b["proj"](torch.tanh(b["fc"](b["norm"](h))))
        return self.head(h)


def test_a_users_net_of_blocks_has_its_chi1_fitted_per_block_and_ls_says_so(tmp_path, cli):
    # the signal inside a block (fc, proj) is a sawtooth: ls fitted a per-layer chi1 through it ("6 (3-8)", the
    # fc and proj points of blocks 1-3 mixed); it is per block now, at the same point of each (proj), as a
    # transformer's is
    model, x = Blocks(), torch.randn(32, 8)
    with gradflow.Recorder(model, tmp_path / "own" / "run", every=1) as rec:
        with rec.step(0):
            F.cross_entropy(model(x), torch.randint(0, 3, (32,))).backward()
    layers = gradflow.load(tmp_path / "own" / "run")
    s = layers[(layers["step"] == 0) & (layers["quantity"] == "signal_norm")].set_index("name")["value"]
    proj = np.array([s[f"layers.{i}.proj"] for i in range(5)])
    per_block = math.exp(-np.polyfit(np.arange(5), 2 * np.log(proj), 1)[0])
    ratios = (proj[:-1] / proj[1:]) ** 2  # (each block's own factor towards the input, which the fit averages)
    assert min(ratios) <= per_block <= max(ratios)
    run = store.read_run(tmp_path / "own" / "run")
    assert run["summary"]["chi1_layers"] == "5 blocks, proj"
    assert run["summary"]["chi1_measured"] == pytest.approx(per_block, rel=1e-9)
    listed = cli("ls", str(tmp_path / "own"), "--wide")
    flat = " ".join(listed.output.split())
    assert listed.exit_code == 0 and "5 blocks, proj" in flat, listed.output
    assert "chi1 meas and rates are per block, not per layer" in flat and "(first-last)" not in flat, listed.output
    assert "at the same point of each block, its last (here proj;" in flat, listed.output
    # a rate fitted per block is not called per-layer above the note that says it is per block
    rated = " ".join(cli("ls", str(tmp_path / "own"), "--wide", "--rate", "grad_norm").output.split())
    assert "rate = growth factor per layer (per block where its fit reads N blocks)" in rated, rated
    assert "per-layer growth factor" not in rated, rated
    # a run.json written before (a per-layer fit stored in its summary) is fitted again as ls lists it
    raw = json.loads((tmp_path / "own" / "run" / "run.json").read_text())
    raw["summary"] = {k: v for k, v in raw["summary"].items() if k != "fit_rule"} | {"chi1_layers": "3-8",
                                                                                      "chi1_measured": 0.5,
                                                                                      "clipped": 0.25}
    (tmp_path / "own" / "run" / "run.json").write_text(json.dumps(raw))
    narrow = cli("ls", str(tmp_path / "own"))
    assert f"{per_block:.4g}" in narrow.output and "per block, not per layer" in narrow.output, narrow.output
    from gradflow.summary import runs_table

    assert runs_table(tmp_path / "own")["clipped"].tolist() == [0.25]  # (what the fit does not redo is kept)


def test_a_per_block_fit_counts_the_blocks_that_end_elsewhere_between_those_fitted():
    # blocks 2 and 5 end in moe.fc2, the others in mlp.fc2 (the most common): the fit at mlp.fc2 took blocks
    # 0, 1, 3, 4 as four adjacent blocks, and read the stream's growth over blocks 1-3 as one block's
    from gradflow.summary import rate

    growth, rows, layer = 1.5, [(0, 0, "inp", "signal_norm", 1.0)], 1
    for b in range(6):
        kind, stream = "moe" if b in (2, 5) else "mlp", growth ** (6 - b)
        for point, v in (("attn", 0.3 * stream), (f"{kind}.fc1", 0.1 * stream), (f"{kind}.fc2", stream)):
            rows.append((0, layer, f"blocks.{b}.{point}", "signal_norm", v))
            layer += 1
    rows.append((0, layer, "head", "signal_norm", 1.0))
    layers = pd.DataFrame(rows, columns=[store.STEP, store.LAYER, store.NAME, store.QUANTITY, store.VALUE])
    chi1, fitted = rate(layers, "signal_norm")
    assert fitted == "4 blocks, mlp.fc2"
    assert chi1 == pytest.approx(growth ** 2, rel=1e-9)


def _sixty_steps(rec, model, opt, batches, stop: int = 60) -> None:
    """The README's loop over the first `stop` of 60 steps, logging each step's loss."""
    for step, (x, y) in enumerate(batches[:stop]):
        with rec.step(step):
            loss = F.mse_loss(model(x), y)
            loss.backward()
        rec.log(step, train_loss=loss)
        opt.step()
        opt.zero_grad()


def test_a_loop_that_gives_its_steps_has_its_last_step_probed_and_one_that_does_not_is_told(tmp_path):
    """every=10 over 60 steps (0-59) probed 0, 10, ..., 50: `ratio end` and the profiles at `last` were step 50's,
    without a word. steps=60 probes step 59 too, the trained net; without it close() names step 50."""
    torch.manual_seed(0)
    batches = [(torch.randn(16, 4), torch.randn(16, 2)) for _ in range(60)]
    model, opt = _small_net()
    reference = copy.deepcopy(model)
    rec = gradflow.Recorder(model, tmp_path / "study" / "given", every=10, steps=60)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _sixty_steps(rec, model, opt, batches)
        rec.close()
    assert not [str(w.message) for w in caught]
    given = store.load(tmp_path / "study" / "given")
    assert sorted(set(given.step)) == [0, 10, 20, 30, 40, 50, 59]
    # step 59's gradients are those of plain autograd after 59 updates
    ref_opt = torch.optim.SGD(reference.parameters(), lr=0.1)
    for x, y in batches[:59]:
        F.mse_loss(reference(x), y).backward()
        ref_opt.step()
        ref_opt.zero_grad()
    F.mse_loss(reference(batches[59][0]), batches[59][1]).backward()
    plain = [float(reference[i].weight.grad.norm()) for i in (0, 2)]
    at_end = store.rows(given, "grad_norm", 59)["value"].to_numpy()
    np.testing.assert_allclose(at_end, plain, rtol=1e-5)
    run = store.read_run(tmp_path / "study" / "given")
    assert run["summary"]["grad_ratio.final"] == pytest.approx(plain[0] / plain[1], rel=1e-5)
    assert (store.rows(given, "update_ratio", 59)["value"] > 0).all()  # the optimizer's step after it, read at close()

    torch.manual_seed(0)  # the same loop without steps=: the same probed steps but the last, and told so
    model, opt = _small_net()
    rec = gradflow.Recorder(model, tmp_path / "study" / "untold", every=10)
    _sixty_steps(rec, model, opt, batches)
    with pytest.warns(UserWarning) as caught:
        rec.close()
    notes = [str(w.message) for w in caught if "was not probed" in str(w.message)]
    assert [w.filename for w in caught] == [__file__]  # the close() call's line
    assert notes == [f"{tmp_path / 'study' / 'untold'}: the loop's last step, 59, was not probed (every=10): the "
                     "views' end values (ls's `ratio end`, the profiles at `last`) are step 50's, 9 steps before the "
                     "end; pass Recorder(..., steps=60) (the loop's number of steps) to probe its last step too"]
    untold = store.load(tmp_path / "study" / "untold")
    assert sorted(set(untold.step)) == [0, 10, 20, 30, 40, 50]
    common = given[given.step < 59].reset_index(drop=True)
    np.testing.assert_allclose(untold["value"], common["value"], rtol=1e-6)  # the other steps as they were
    at_50 = store.rows(common, "grad_norm", 50)["value"].to_numpy()
    end_ratio = store.read_run(tmp_path / "study" / "untold")["summary"]["grad_ratio.final"]
    assert end_ratio == pytest.approx(at_50[0] / at_50[-1])  # ls's `ratio end`: step 50's, not the trained net's
    assert end_ratio != pytest.approx(plain[0] / plain[1], rel=1e-3)


def test_a_step_block_inside_another_and_a_close_inside_one_are_errors(tmp_path):
    # both were taken without a word: the inner block's pass stored as the outer step's, and a close() inside a
    # block wrote an `ok` run without the step, whose block's end then did nothing
    model, opt = _small_net()
    x, y = torch.randn(16, 4), torch.randn(16, 2)
    rec = gradflow.Recorder(model, tmp_path / "study" / "nested", every=1, steps=3)
    with pytest.raises(GradflowError, match=re.escape("rec.step(1) inside rec.step(0)'s block: a step's block ends "
                                                      "before the next one begins")):
        with rec.step(0):
            with rec.step(1):
                F.mse_loss(model(x), y).backward()
    with pytest.raises(GradflowError, match=re.escape("rec.close() inside rec.step(1)'s block: close the run after "
                                                      "the block ends")):
        with rec.step(1):
            F.mse_loss(model(x), y).backward()
            rec.close()
    opt.zero_grad()
    with rec.step(2):  # (the Recorder goes on: the blocks that raised recorded nothing)
        F.mse_loss(model(x), y).backward()
    rec.close()
    run = store.read_run(tmp_path / "study" / "nested")
    assert run["status"] == "ok" and sorted(set(store.load(tmp_path / "study" / "nested").step)) == [2]


def test_a_recorder_dropped_unclosed_in_a_function_is_closed_with_its_tables(tmp_path, capfd):
    # it was left `running`, read as interrupted, with no table: the end-of-script close holds no Recorder alive
    def train():
        model, opt = _small_net()
        rec = gradflow.Recorder(model, tmp_path / "study" / "dropped", every=1, steps=2)
        model.recorder = rec  # (kept on its model: the two hold each other, and only a collection frees them)
        for step in range(2):
            with rec.step(step):
                F.mse_loss(model(torch.randn(16, 4)), torch.randn(16, 2)).backward()
            opt.step()
            opt.zero_grad()

    path = tmp_path / "study" / "dropped"
    gc.disable()  # (the collection comes when the test says, not at an allocation of its own)
    try:
        train()
        assert store.read_run(path)["status"] == "running"
        if hasattr(os, "fork"):  # a process forked before the collection (a DataLoader's worker) leaves it alone
            child = os.fork()
            if child == 0:
                gc.collect()
                os._exit(0)
            os.waitpid(child, 0)
            assert store.read_run(path)["status"] == "running"
    finally:
        gc.enable()
    gc.collect()
    assert f"gradflow: {path} closed as its Recorder was dropped (rec.close() was not called)" in capfd.readouterr().err
    run = store.read_run(path)
    assert run["status"] == "ok" and sorted(set(store.load(path).step)) == [0, 1]


@pytest.mark.parametrize("steps", [0, -3, 2.5, True, "60"])
def test_a_bad_steps_is_one_clear_error_and_writes_nothing(tmp_path, steps):
    with pytest.raises(GradflowError, match="^" + re.escape(f"steps={steps!r} must be a positive whole number of "
                                                            "steps (the loop's number of steps, its last one "
                                                            "steps - 1), or None") + "$"):
        gradflow.Recorder(nn.Linear(2, 2), tmp_path / "study" / "run0", steps=steps)
    assert not (tmp_path / "study").exists()


def test_a_loop_past_its_steps_is_told_once_and_goes_on_and_one_that_stops_early_is_told(tmp_path):
    torch.manual_seed(0)
    batches = [(torch.randn(16, 4), torch.randn(16, 2)) for _ in range(60)]
    model, opt = _small_net()
    # steps=30 for a 60-step loop: one warning at step 30, and the run goes on (a long run is not stopped for it),
    # probed every 10th step; close() then says its last step, 59, was not probed and what steps= to pass
    rec = gradflow.Recorder(model, tmp_path / "study" / "past", every=10, steps=np.int64(30))
    with pytest.warns(UserWarning, match="^" + re.escape("rec.step(30) is past the last step, 29, of Recorder(..., "
                                                         "steps=30): steps is the loop's number of steps (its last "
                                                         "step + 1); recording goes on, every 10th step probed") + "$"
                      ) as seen:
        _sixty_steps(rec, model, opt, batches)
    assert [w.filename for w in seen] == [__file__]  # the loop's line (it was contextlib's)
    with pytest.warns(UserWarning, match=re.escape("the loop's last step, 59, was not probed (every=10)") + ".*"
                      + re.escape("pass Recorder(..., steps=60)")) as seen:
        with rec:  # (closed as its `with` block ends: the warning at the block's line, not at recorder.py's)
            pass
    assert [w.filename for w in seen] == [__file__]
    past = store.read_run(tmp_path / "study" / "past")
    assert past["status"] == "ok" and past["steps_done"] == 60
    assert sorted(set(store.load(tmp_path / "study" / "past").step)) == [0, 10, 20, 29, 30, 40, 50]

    model, opt = _small_net()  # an early stop at step 44 of 60: its last probed step is 40, said
    rec = gradflow.Recorder(model, tmp_path / "study" / "early", every=10, steps=60)
    _sixty_steps(rec, model, opt, batches, stop=45)
    with pytest.warns(UserWarning, match="^" + re.escape(
            f"{tmp_path / 'study' / 'early'}: the loop stopped at step 44, before its last, 59 (steps=60), and step "
            "44 was not probed (every=10): the views' end values (ls's `ratio end`, the profiles at `last`) are step "
            "40's, 4 steps before the end") + "$"):
        rec.close()


def test_run_json_keeps_the_steps_the_loop_was_given_beside_the_steps_it_took(tmp_path):
    # run.json's `steps` is the steps the loop took; `steps=` was not kept, so a reader could not tell a loop
    # that stopped early (or ran past its steps) from one that ran as planned, nor whether its last step was probed
    torch.manual_seed(0)
    batches = [(torch.randn(16, 4), torch.randn(16, 2)) for _ in range(60)]
    for name, given, stop in (("early", 60, 45), ("past", 30, 60), ("none", None, 60)):
        model, opt = _small_net()
        rec = gradflow.Recorder(model, tmp_path / "study" / name, every=10,
                                steps=None if given is None else np.int64(given))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # (each told of its unprobed end, as the tests above check)
            _sixty_steps(rec, model, opt, batches, stop=stop)
            rec.close()
        record = json.loads((tmp_path / "study" / name / store.RUN_FILE).read_text())
        assert (record["steps_planned"], record["steps"]) == (given, stop)
        assert type(record["steps_planned"]) is (type(None) if given is None else int)
    runs = gradflow.load(tmp_path / "study", table="runs").set_index("run")
    assert runs.loc["early", "steps_planned"] == 60 and runs.loc["early", "steps"] == 45
    assert runs.loc["past", "steps_planned"] == 30 and pd.isna(runs.loc["none", "steps_planned"])


def test_a_pass_through_an_earlier_steps_graph_adds_nothing_to_this_steps_signal(tmp_path, fuse_after):
    # a loss that carries the previous step's output (truncated BPTT without detach): backward also runs through
    # that step's graph, whose hooks fired into this step's signal (layer 0's norm 0.419 read 0.508)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    rec = gradflow.Recorder(model, tmp_path / "run", every=1)
    before = None
    for step in range(3):  # (no update: each step's own dL/dz is step 0's)
        with rec.step(step):
            out = model(x)
            loss = F.cross_entropy(out, y) + (before.pow(2).mean() if before is not None else 0.0)
            loss.backward(retain_graph=True)
        before = out
        model.zero_grad()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (no optimizer: no update ratio, said at close)
        rec.close()
    signal = store.load(tmp_path / "run").query("quantity == 'signal_norm'").pivot(index="step", columns="layer",
                                                                                   values="value")
    assert len(signal) == 3 and signal.notna().all().all(), signal
    np.testing.assert_allclose(signal.to_numpy(), np.repeat(signal.to_numpy()[:1], 3, axis=0), rtol=1e-6)


def test_a_recorders_path_is_expanded_and_made_absolute_when_it_is_made(tmp_path, monkeypatch):
    """A path of "~/res/run0" wrote a literal ./~ folder and failed at close(); a relative path followed by a chdir
    in the loop failed at close(), the run left `running`."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    model, x = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)), torch.randn(5, 3)
    for given, elsewhere, where in [("~/res/run0", None, tmp_path / "home" / "res" / "run0"),
                                    ("res/run1", tmp_path / "other", tmp_path / "res" / "run1")]:
        rec = gradflow.Recorder(model, given, every=1)
        assert rec.path == where
        if elsewhere is not None:
            elsewhere.mkdir()
            os.chdir(elsewhere)
        model.zero_grad()
        with rec.step(0):
            model(x).pow(2).sum().backward()
        rec.close()
        assert json.loads((where / "run.json").read_text())["status"] == "ok"
        got = gradflow.load(where).set_index(["name", "quantity"])["value"]
        assert got[("0", "grad_norm")] == pytest.approx(float(model[0].weight.grad.norm()), rel=1e-5)
    assert not (tmp_path / "~").exists() and not (tmp_path / "other" / "res").exists()
    # and read back as given: gradflow.load("~/...") looked for a folder named ~ in this one
    assert set(gradflow.load("~/res")["run"]) == {"run0"} and set(gradflow.load("~/res", "runs")["run"]) == {"run0"}


def test_a_layer_fed_a_copy_of_the_batch_stays_batched_where_the_second_look_fails(tmp_path):
    # a buffer filled by buf[:] = h carries no mark of the example (its __setitem__ returns nothing), and a model
    # that takes its example's batch size alone makes the second look fail: l2 was said to have no batch dimension
    # ("a position embedding of arange(T)") and lost its signal; the hint alone decides nothing
    class Copied(nn.Module):
        def __init__(self):
            super().__init__()
            self.l1, self.l2, self.head = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 3)

        def forward(self, x):
            assert x.shape[0] == 6, "this model takes batches of 6"
            buf = torch.zeros(x.shape[0], 4)
            buf[:] = torch.tanh(self.l1(x))
            return self.head(torch.tanh(self.l2(buf)))

    torch.manual_seed(0)
    model = Copied()
    x, y = torch.randn(6, 4), torch.randint(0, 3, (6,))
    seen = _one_step_warnings(model, tmp_path / "run", x, y)
    assert not [m for m in seen if "no back-propagated signal" in m], seen
    got = gradflow.load(tmp_path / "run").query("quantity == 'signal_norm'").set_index("name")["value"]
    assert set(got.index) == {"l1", "l2", "head"}
