"""`gradflow run` through the real CLI: results layout, summaries, bad input, divergence, devices."""

from __future__ import annotations

import functools
import json
import math
import os
import re
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from rich.cells import cell_len

import gradflow
from gradflow import store
from gradflow.fmt import fmt
from gradflow.overrides import job_name
from gradflow.probes.core import schedule
from tests.commands import piped, terminal_width
from tests.conftest import TINY


def test_run_writes_the_results_layout(cli, results):
    out = cli("run", *TINY, f"results={results}", "name=one")
    assert out.exit_code == 0, out.output
    job = results / "one" / job_name(TINY)
    assert sorted(p.name for p in job.iterdir()) == ["config.yaml", "layers.parquet", "metrics.parquet", "run.json"]
    rec = json.loads((job / "run.json").read_text())
    assert rec["status"] == "ok" and rec["steps_done"] == 4 and rec["seed"] == 0 and rec["device"] == "cpu"
    assert rec["torch"] == torch.__version__ and rec["wall_time"] > 0
    assert rec["fused_steps"] == 0  # a short run: the probes stayed batched
    assert set(rec["final"]) == {"train_loss", "train_acc", "test_loss", "test_acc"}
    assert yaml.safe_load((job / "config.yaml").read_text())["model"]["depth"] == 3
    metrics = pd.read_parquet(job / "metrics.parquet")
    assert list(metrics.columns) == ["step", "split", "metric", "value"]
    assert sorted(metrics.query("split == 'test' and metric == 'acc'")["step"]) == [0, 2, 4]
    layers = pd.read_parquet(job / "layers.parquet")
    assert list(layers.columns) == ["step", "layer", "name", "quantity", "value"]
    assert layers.groupby(["step", "layer", "quantity"]).size().max() == 1  # one value per cell
    assert list(layers.drop_duplicates("layer").sort_values("layer")["name"]) == ["linear0", "linear1", "linear2", "head"]
    assert sorted(layers["layer"].unique()) == [0, 1, 2, 3]  # layers 0..depth, the head's the depth (as the theory's)
    # the summary printed: status, finals, the per-layer table, the ratio, the folder
    for text in ("ok", "final", "train loss", "per-layer gradients", "linear0", "head", "weight-gradient ratio",
                 "back-prop signal ratio", str(job)):
        assert text in out.output.replace("\n", ""), text


def test_a_results_folder_given_with_a_tilde_is_under_the_home_folder(cli, tmp_path, monkeypatch):
    # results="~/runs" (quoted, or from a shell that leaves ~ after =, zsh): the run went into a folder named ~ in
    # the current one, which pandas read back as the home folder's, and the run that had trained ended failed
    home, here = tmp_path / "home", tmp_path / "here"
    home.mkdir()
    here.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(here)
    out = cli("run", *TINY, 'results="~/runs"', "name=t")
    assert out.exit_code == 0, out.output
    (run,) = store.runs(home / "runs" / "t")
    assert run["status"] == "ok" and not (here / "~").exists()
    from gradflow.overrides import home_expanded  # (data.cache too, quoted or not; another key's ~ stays)

    assert home_expanded(["data.cache='~/c'", "+data.root=~", "tag=~x"]) == [f"data.cache='{home}/c'",
                                                                            f"+data.root={home}", "tag=~x"]
    assert home_expanded(['results=~/a,"~/b",c']) == [f'results={home}/a,"{home}/b",c']  # (a sweep's list)


def test_a_key_given_twice_keeps_the_last_and_says_so(cli, results):
    # Hydra keeps the last value of a key without a word; a base command line with a change appended is
    # common, so it is kept, and said
    out = cli("run", *TINY, "seed=1", "train.steps=2", "seed=3", "model.width=16", f"results={results}", "name=twice")
    assert out.exit_code == 0, out.output
    notes = [ln for ln in out.output.splitlines() if ln.startswith("note:") and "replaces" in ln]
    # train.steps=4 of TINY and seed=1 replaced; model.width=16 given twice alike is no change
    assert notes == ["note: train.steps=2 replaces train.steps=4 given before it (the last value of a key counts)",
                     "note: seed=3 replaces seed=1 given before it (the last value of a key counts)"], out.output
    (record,) = (results / "twice").glob("*/run.json")
    rec = json.loads(record.read_text())
    assert rec["seed"] == 3 and rec["steps_done"] == 2
    # its folder is named by the values that count, as the same run given once is
    assert record.parent.name == job_name([o for o in TINY if not o.startswith("train.steps=")]
                                          + ["train.steps=2", "seed=3"])
    assert "seed=1" not in record.parent.name and "train.steps=4" not in record.parent.name


def test_more_threads_than_cores_is_said(cli, results):
    # threads=64 on a 2-core machine ran 64 of torch's spinning threads taking turns on two cores, without a word
    from gradflow import workers

    cores = workers.usable_cores()
    out = cli("run", *TINY, "train.steps=1", f"threads={cores + 1}", f"results={results}", "name=threads")
    assert out.exit_code == 0 and f"warning: threads={cores + 1} is more than the {cores} CPU cores this run may " \
        "use: torch's threads take turns on them, slower, not faster; threads=0 uses every core" in \
        " ".join(out.stderr.split()), out.output
    out = cli("run", *TINY, "train.steps=1", f"threads={cores}", f"results={results}", "name=threads")
    assert out.exit_code == 0 and "warning" not in out.stderr, out.output


@pytest.mark.parametrize("first,last", [("train.steps=abc", "train.steps=0"), ("seed=x", "seed=2"),
                                        ("optim.lr=abc", "optim.lr=0.1"), ("seed=0,1", "seed=2")])
def test_a_replaced_value_is_not_checked(cli, results, first, last):
    # Hydra applies every override in turn: the replaced value was refused, and the error named the last
    out = cli("run", *TINY, first, last, f"results={results}", "name=replaced")
    assert out.exit_code == 0, out.output
    assert f"note: {last} replaces {first} given before it" in " ".join(out.output.split())
    (record,) = (results / "replaced").glob("*/run.json")
    key, value = last.split("=")
    assert str(json.loads(record.read_text())["config"][key]) == value


def test_load_run_and_folder_has_config_columns(run_job, results):
    a = run_job(*TINY, "seed=0", name="s")
    run_job(*TINY, "seed=1", name="s")
    one = gradflow.load(a)
    assert one["run"].nunique() == 1 and one["model.depth"].eq(3).all() and "init.name" in one
    both = gradflow.load(results / "s")
    assert sorted(both["seed"].unique()) == [0, 1]
    assert len(both) == 2 * len(one)
    metrics = gradflow.load(results / "s", table="metrics")
    assert {"split", "metric", "value", "seed", "model.width"} <= set(metrics.columns)
    from gradflow.errors import GradflowError  # a table misspelled: the nearest named, as the CLI names it

    with pytest.raises(GradflowError, match=r"^table='layer' is not allowed \(did you mean layers\?\); choices: "):
        gradflow.load(a, "layer")


def test_same_seed_same_numbers(run_job):
    a = pd.read_parquet(run_job(*TINY, name="a") / "layers.parquet")
    b = pd.read_parquet(run_job(*TINY, name="b") / "layers.parquet")
    pd.testing.assert_frame_equal(a, b)
    c = pd.read_parquet(run_job(*TINY, "seed=1", name="c") / "layers.parquet")
    assert not np.allclose(a["value"], c["value"])


def test_a_run_into_a_sweeps_folder_is_refused(cli, tmp_path):
    """It would be none of the sweep's points, listed `stale` at once (as a run of an earlier spec is)."""
    out = cli("sweep", *TINY, "model.depth=2,3", f"results={tmp_path}", "--name", "s")
    assert out.exit_code == 0, out.output
    out = cli("run", *TINY, "model.depth=4", f"results={tmp_path}", "name=s")
    said = " ".join(out.output.split())
    assert out.exit_code == 1 and f"name=s is the folder of a sweep ({tmp_path / 's' / 'sweep.yaml'}), and this run is " \
        "none of its points (nearest: model.depth=3; model.depth=2): ls would list it" in said, said
    assert sorted(p.name for p in (tmp_path / "s").iterdir() if p.is_dir()) == ["model.depth=2", "model.depth=3"]
    assert "or change the sweep (gradflow sweep ... --name s)" in said, said
    # an arm of a reproduction (its folder's parent holds the claims.json `gradflow reproduce` writes) is
    # changed by rerunning the reproduction, not by a sweep of its own
    assert cli("sweep", *TINY, "model.depth=2,3", f"results={tmp_path}", "--name", "exp/arm").exit_code == 0
    (tmp_path / "exp" / "claims.json").write_text(json.dumps({"experiment": "he2015", "scale": "quick", "claims": []}))
    said = " ".join(cli("run", *TINY, "model.depth=4", f"results={tmp_path}", "name=exp/arm").output.split())
    assert "give the run a name of its own, or rerun the reproduction (gradflow reproduce he2015 --scale quick)" \
        in said, said


def test_a_run_into_a_sweeps_folder_takes_its_point_only_with_the_points_settings(cli, tmp_path):
    """A point's settings, named in full (the sweep's fixed seed and steps too), rerun the point in its folder;
    the point's swept values with other fixed ones are refused, naming what differs, instead of replacing
    the point's finished run with one listed `stale` at once."""
    root = tmp_path / "s"
    assert cli("sweep", *TINY, "model.depth=2,3", "seed=1", "train.steps=4", f"results={tmp_path}",
               "--name", "s").exit_code == 0
    before = store.read_run(root / "model.depth=3")
    written = (root / "model.depth=3" / "run.json").stat().st_mtime_ns
    out = cli("run", *TINY, "model.depth=3", "seed=1", "train.steps=4", f"results={tmp_path}", "name=s")
    assert out.exit_code == 0 and f"results: {root / 'model.depth=3'}" in " ".join(out.output.split()), out.output
    assert "replacing" not in out.output  # (the same settings: nothing to say)
    after = store.read_run(root / "model.depth=3")
    assert after["config_hash"] == before["config_hash"] and after["started"] >= before["started"]
    assert (root / "model.depth=3" / "run.json").stat().st_mtime_ns > written  # rerun
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == ["model.depth=2", "model.depth=3"]
    assert [r["status"] for r in store.runs(root)] == ["ok", "ok"]

    out = cli("run", *TINY, "model.depth=3", "train.steps=4", f"results={tmp_path}", "name=s")  # seed 0
    said = " ".join(out.output.split())
    assert out.exit_code == 1 and "Traceback" not in out.output, out.output
    assert (f"name=s is the folder of a sweep ({root / 'sweep.yaml'}), and this run has other settings than its point "
            "model.depth=3 (the point → this run: seed 1 → 0): ls would list it as stale") in said, said
    assert store.read_run(root / "model.depth=3") == after  # untouched


def test_a_run_replacing_a_finished_run_with_other_settings_says_so(cli, results):
    # a run, then one of the same folder name on another device (which no folder name has): the run is
    # replaced, and it says so, naming what differs
    again = ["model.width=8", "train.steps=2", f"results={results}", "name=B"]
    assert cli("run", *again).exit_code == 0
    out = cli("run", *again, "device=cpu")
    text = " ".join(out.output.split())
    assert out.exit_code == 0 and "replacing the finished run in" in text and "made with other settings (device auto → cpu)" in text
    assert json.loads((results / "B" / "model.width=8,train.steps=2" / "run.json").read_text())["config"]["device"] == "cpu"
    out = cli("run", *again, "device=cpu")  # the same settings again: rerun, the finished run kept until it ends
    text = " ".join(out.output.split())
    assert out.exit_code == 0 and "replacing the finished run" not in out.output, out.output
    assert (f"rerunning the finished run in {results / 'B' / 'model.width=8,train.steps=2'} (the same settings): it "
            "stays there until this run has ended") in text, text


def test_nothing_measured_after_the_divergence_is_kept(cli, results):
    # the loop learns of a divergence up to train.check_every steps after it: a probed step between (a vanilla
    # RNN on the adding task diverges at step 33 and step 35 is probed) was kept, a column of nan that the
    # run's table showed as its end, while steps_done said 33
    ov = ["model=rnn", "data=adding", "data.T=20", "train.steps=40", "threads=1"]
    out = cli("run", *ov, f"results={results}", "name=late")
    rec = json.loads((results / "late" / job_name(ov) / "run.json").read_text())
    assert rec["status"] == "diverged", out.output
    first = rec["diverged_step"]
    probed = schedule(40, 0, 30)  # (probe.points, the default)
    assert any(first < step <= first + 20 for step in probed), (first, probed)  # (the case: a probe before the check)
    layers = pd.read_parquet(results / "late" / job_name(ov) / "layers.parquet")
    metrics = pd.read_parquet(results / "late" / job_name(ov) / "metrics.parquet")
    assert layers["step"].max() <= first and metrics["step"].max() == first
    assert f"the last probed step before the divergence (at step {first})" in " ".join(out.output.split())


def test_a_diverged_run_takes_no_jacobian_of_its_non_finite_net(cli, results):
    # the Jacobian at the last step was taken before the check that found the divergence (check_every steps
    # apart), of a net with non-finite weights: its eigh failed to converge, and the diverged run was
    # recorded `failed` (LinAlgError)
    ov = [*TINY, "train.steps=10", "optim.lr=1e6", "optim.momentum=0", "model.activation=relu",
          "train.check_every=100", "train.eval_every=100", "probe.every=100", "probe.jacobian=true"]
    out = cli("run", *ov, f"results={results}", "name=jac")
    rec = json.loads((results / "jac" / job_name(ov) / "run.json").read_text())
    assert rec["status"] == "diverged" and 0 < rec["diverged_step"] < 10, out.output
    spectra = pd.read_parquet(results / "jac" / job_name(ov) / "jacobian.parquet")
    assert sorted(set(spectra["step"])) == [0] and np.isfinite(spectra["value"]).all()


@pytest.mark.parametrize("model", ["cnn", "lstm"])
def test_probe_full_on_a_family_without_spectra_runs_and_says_it_has_none(cli, results, model):
    # probe=full sets probe.jacobian, whose spectra are the MLP's: it made a CNN run fail (a conv fed the
    # flattened input) and an LSTM run fail (its `hidden` is a number), and a transformer's took none unsaid
    ov = [f"model={model}", "train.steps=2", "train.batch_size=8", "data=gaussian", "data.n_train=64",
          "data.dim=8", "probe=full", *(["model.depth=2", "model.channels=4"] if model == "cnn" else ["model.hidden=8"])]
    out = cli("run", *ov, f"results={results}", "name=spec")
    job = results / "spec" / job_name(ov)
    assert json.loads((job / "run.json").read_text())["status"] == "ok", out.output
    assert (job / "hist.parquet").is_file() and not (job / "jacobian.parquet").exists()
    assert (f"note: no Jacobian spectra: probe.jacobian takes them of model=mlp only, and this run is "
            f"model={model}") in " ".join(out.output.split())


def test_diverging_run_is_recorded_and_keeps_earlier_rows(cli, results):
    # (evaluations every 5 steps: it diverges between two)
    ov = [*TINY, "train.steps=40", "optim.lr=1e6", "optim.momentum=0", "train.check_every=1", "model.activation=relu",
          "train.eval_every=5"]
    out = cli("run", *ov, f"results={results}", "name=boom")
    assert out.exit_code == 0, out.output  # divergence is a result, not an error
    job = results / "boom" / job_name(ov)
    rec = json.loads((job / "run.json").read_text())
    assert rec["status"] == "diverged"
    # every field is one a Recorder's config key may not take (it would hide the key in ls and load)
    assert set(rec) <= {*store.RUN_FIELDS, *store.JOB_FIELDS}, set(rec) - set(store.RUN_FIELDS)
    assert 1 <= rec["diverged_step"] < 40 and rec["steps_done"] == rec["diverged_step"]  # the finite updates
    layers = pd.read_parquet(job / "layers.parquet")
    init = layers[layers["step"] == 0]
    assert len(init) > 0 and np.isfinite(init["value"]).all()  # the rows logged before divergence are intact
    # the step that went non-finite (not the updates taken, which count that step's own)
    assert f"diverged at step {rec['diverged_step']} of 40 in" in out.output
    # the diverged step's non-finite values are kept; nothing measured after it (the check may come steps later)
    last = layers[layers["step"] == layers["step"].max()]
    assert last["step"].iloc[0] == rec["diverged_step"] and last[last["quantity"] == "grad_norm"]["value"].isna().all()
    # the per-layer table ends at the last probed step before it, as ls's "ratio end" and the plots do (it
    # ended at the diverged step, every cell nan)
    before = layers[layers["step"] < rec["diverged_step"]]["step"].max()
    assert f"@{before}: the last probed step before the divergence (at step {rec['diverged_step']})" in \
        " ".join(out.output.split()), out.output
    rows = [line.split("│")[1:-1] for line in out.output.splitlines() if line.startswith("│")]
    assert rows and all(np.isfinite([float(cell) for cell in row[2:]]).all() for row in rows), out.output
    # the last finite evaluation's train and test pairs each stay whole on a line
    line = next(line for line in out.output.splitlines() if line.startswith("last finite evaluation"))
    assert "train loss" in line and "acc" in line.split("train loss")[1]
    # the diverged step itself is in the metrics (its batch loss and gradient norm), and the run says which
    # of them went non-finite; the curves end there, with the mark at that step (it sat at the last evaluation)
    metrics = pd.read_parquet(job / "metrics.parquet")
    at = metrics[metrics["step"] == rec["diverged_step"]].set_index(["split", "metric"])["value"]
    bad = [what for what, metric in (("loss", "loss"), ("gradient", "grad_norm")) if not np.isfinite(at["diverged", metric])]
    assert not metrics.duplicated(["step", "split", "metric"]).any()
    assert bad and rec["diverged_in"] == " and ".join(bad) and metrics["step"].max() == rec["diverged_step"]
    assert f"non-finite {rec['diverged_in']}, first in layer {rec['diverged_layer']}" in out.output
    # and what would train it through, in the run's own keys: no clipping was on, so both; with clipping, lr alone
    assert "to train through it: a smaller optim.lr (it was 1e+06) or train.grad_clip=1.0" in \
        " ".join(out.output.split()), out.output
    from gradflow.cli.run import diverged_hint

    assert diverged_hint({"optim.lr": 0.05, "train.grad_clip": 1.0}) == \
        "to train through it: a smaller optim.lr (it was 0.05)"
    from gradflow.plots import figures

    fig = figures.curves(gradflow.load(results / "boom", table="metrics"))
    marks = [ln for ax in fig.axes for ln in ax.get_lines() if ln.get_gid() == "nonfinite"]
    assert len(marks) == 4 and all(list(ln.get_xdata()) == [rec["diverged_step"]] for ln in marks)
    # ls says where it diverged (--json too), beside the steps done
    listed = cli("ls", results / "boom").output
    assert "steps done   diverged at" in listed and re.search(rf"diverged +{rec['diverged_step']} +"
                                                                 rf"{rec['diverged_step']} ", listed), listed
    listed = json.loads(cli("ls", results / "boom", "--json").output)[0]
    assert listed["diverged_step"] == rec["diverged_step"]
    # ls's end ratio is the run's own: at that last probed step before the divergence (the diverged step's
    # weight gradients are nan, which a ratio at it would read)
    at = layers[(layers["step"] == before) & (layers["quantity"] == "grad_norm")].sort_values("layer")["value"]
    assert np.isfinite(listed["grad_ratio.final"]) and listed["grad_ratio.final"] == pytest.approx(
        at.iloc[0] / at.iloc[-1]), listed
    assert re.search(rf"ratio ‖∂L/∂W‖ first/last: init\s\S+, end\s{re.escape(fmt(listed['grad_ratio.final']))}\n",
                     out.output), out.output


def test_a_run_that_diverges_at_its_first_step_still_lists_its_layers(cli, results):
    # every value of the step is NaN: the per-layer table had no rows at all
    ov = [*TINY, "train.steps=4", "model.depth=40", "model.activation=relu", "init=meanfield", "init.sw2=10000"]
    out = cli("run", *ov, f"results={results}", "name=first")
    assert out.exit_code == 0 and "diverged at step 0 of 4" in out.output, out.output
    # no update was taken: neither a smaller step nor clipping would have kept it finite, so no such hint
    assert "to train through it" not in out.output, out.output
    rows = [line.split("│")[1:-1] for line in out.output.splitlines() if line.startswith("│")]
    assert len(rows) >= 10 and all([c.strip() for c in row[2:]] == ["nan", "nan"] for row in rows), out.output


BAD = [
    (["model.foo=1"], "model.foo"),
    (["init=foo"], "init='foo' is not a known choice; choices: "),
    (["model.depth=abc"], "model.depth='abc' is not a valid integer"),
    (["model.activation=swish"], "model.activation='swish' is not allowed; choices: linear, sigmoid, tanh"),
    (["model.depth=0"], "model.depth=0 must be >= 1"),
    (["model.width=-3"], "model.width=-3 must be >= 1"),
    (["train.steps=-1"], "train.steps=-1 must be >= 0"),
    (["name=../escape"], "name='../escape'"),
    (["hydra/launcher=slurm"], "hydra/launcher=slurm applies to sweeps; `gradflow run` trains here, in this process: "
                               "for one run through a launcher, `gradflow sweep hydra/launcher=slurm ...`"),
]


@pytest.mark.parametrize("overrides, message", BAD)
def test_bad_input_is_one_clear_line(cli, results, overrides, message):
    out = cli("run", *overrides, f"results={results}")
    assert out.exit_code == 1
    assert message in out.output
    assert "Traceback" not in out.output and len(out.output.strip().splitlines()) == 1
    assert not results.exists()  # no results folder left behind


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_a_clear_error(cli, results):
    out = cli("run", *TINY, "device=cuda", f"results={results}")
    assert out.exit_code == 1 and "device='cuda' but CUDA is not available" in out.output
    assert not results.exists()


def test_gradflow_device_is_what_auto_means(cli, results, monkeypatch):
    """GRADFLOW_DEVICE sets the device that device=auto picks (the test suite sets cpu); a value that names
    no device of the machine is a one-line error naming the variable, and an explicit device ignores it."""
    monkeypatch.setenv("GRADFLOW_DEVICE", "bogus")
    out = cli("run", *TINY, f"results={results}", "name=bogus")
    assert out.exit_code == 1 and "GRADFLOW_DEVICE='bogus'" in out.output and "choices: auto, cpu, cuda" in out.output
    assert len(out.output.strip().splitlines()) == 1 and "Traceback" not in out.output and not results.exists()
    out = cli("run", *TINY, "device=cpu", f"results={results}", "name=explicit")
    assert out.exit_code == 0 and "on cpu" in out.output
    if not torch.cuda.is_available():
        monkeypatch.setenv("GRADFLOW_DEVICE", "cuda")
        out = cli("run", *TINY, f"results={results}", "name=cuda")
        assert out.exit_code == 1 and "GRADFLOW_DEVICE='cuda'" in out.output
    monkeypatch.setenv("GRADFLOW_DEVICE", "cpu")
    out = cli("run", *TINY, f"results={results}", "name=cpu")
    assert out.exit_code == 0 and "on cpu" in out.output


def test_unwritable_results_folder(cli, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    out = cli("run", *TINY, f"results={blocker}/results")
    assert out.exit_code == 1 and "is not a folder" in out.output and str(blocker) in out.output
    assert "Traceback" not in out.output


def test_version_names_gradflow_python_and_torch(cli):
    import platform

    import torch

    import gradflow

    out = cli("--version")
    assert out.exit_code == 0
    assert out.output == f"gradflow {gradflow.__version__} (python {platform.python_version()}, torch {torch.__version__})\n"


def test_help_lists_groups_choices_and_keys(cli):
    out = cli("run", "--help")
    assert out.exit_code == 0
    text = " ".join(out.output.split())
    for needle in ("model:", "init:", "kaiming_normal", "meanfield", "norm:", "batchnorm", "optim:", "probe:",
                   "model.depth", "model.activation", "train.grad_clip", "init.sw2", "device"):
        assert needle in text, needle


@pytest.mark.parametrize("columns", [60, 80])
def test_config_reference_is_wrapped_to_the_terminal_not_folded_by_rich(columns):
    """The reference is wrapped by us at the terminal's width: rich prints each of our lines as it is. At 60
    columns the old 76-wide lines were each folded in two (a meaning's tail at the left margin)."""
    from rich.text import Text

    from gradflow.cli.run import config_help

    lines = _help_at_80_columns(columns)
    ours = [Text.from_markup(ln).plain for ln in config_help(columns - 4).splitlines()]
    start = next(i for i, ln in enumerate(lines) if ln.strip().startswith("Config:"))
    shown = [ln.rstrip() for ln in lines[start:start + len(ours)]]
    assert shown == [f" {ln}".rstrip() for ln in ours]
    assert max(map(len, lines)) <= columns


@functools.cache  # (the same help, read by the tests at 80 columns: one process for them all)
def _help_at_80_columns(columns: int = 80) -> tuple[str, ...]:
    env = {**os.environ, "COLUMNS": str(columns), "TERM": "dumb"}
    out = subprocess.run([sys.executable, "-m", "gradflow", "run", "--help"], capture_output=True, text=True,
                         timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    return tuple(out.stdout.splitlines())  # (shared: read-only)


def test_every_preset_of_a_group_is_under_the_schema_its_file_extends():
    # the help found a preset's family by its name (resnet20 -> resnet, plain* special-cased): a preset named
    # otherwise lost its keys' block; the defaults list says it (plain20 -> resnet20 -> resnet)
    from gradflow import config as config_mod
    from gradflow.cli.run import _schema_of

    for group, schemas in config_mod.GROUP_SCHEMAS.items():
        for choice in config_mod.group_choices(group):
            base = _schema_of(group, choice, schemas)
            assert base is not None, (group, choice)
            cfg = config_mod.compose([f"{group}={choice}"], sweep_point=True)
            assert cfg[group].name == base, (group, choice, base)
    assert _schema_of("model", "plain56", config_mod.GROUP_SCHEMAS["model"]) == "resnet"


def test_help_is_a_reference_grouped_by_config_group():
    from gradflow.activations import ACTIVATIONS
    from gradflow.cli.run import KEY_COLUMN

    lines = _help_at_80_columns(80)
    assert max(map(len, lines)) <= 80
    assert not any("<bool>" in ln for ln in lines)  # flags (--help) take no value
    text = "\n".join(lines)
    # each family's keys sit in its own block only: find the block a key appears in
    blocks, current = {}, None
    for ln in lines:
        head = ln.strip()
        if head.startswith(("model=", "data=", "init=")) and "=" in head.split()[0] and not head.split()[0].count("."):
            current = head.split("=", 1)[0] + "=" + head.split("=", 1)[1].split(",")[0].split()[0]
        elif head.startswith(("init:", "norm:", "optim:", "probe:", "train", "top level")):
            current = head.split(":")[0].split()[0]
        if current and head.split("=")[0].count(".") == 1:
            blocks.setdefault(head.split("=")[0], set()).add(current)
    assert blocks["data.augment"] == {"data=cifar10"}
    assert blocks["data.n_symbols"] == {"data=copy"}
    assert blocks["model.width"] == {"model=mlp"} and blocks["model.hidden"] == {"model=gru"}
    # a key some choices of a schema take only is under those only (init=standard init.gain=2 is refused)
    assert blocks["init.sb2"] == {"init=meanfield"} and blocks["init.mode"] == {"init=kaiming_normal"}
    assert blocks["init.gain"] == {"init=delta_orthogonal"} and blocks["model.forget_bias"] == {"model=lstm"}
    gain = next(ln.strip() for ln in lines if ln.strip().startswith("init=delta_orthogonal"))
    assert gain == "init=delta_orthogonal, orthogonal, xavier_normal, xavier_uniform", gain
    assert any(ln.strip() == "init=gpt2, keep, lecun_normal, standard: no keys" for ln in lines)
    # group defaults as the group's YAML sets them; empty defaults empty; the activation names listed
    sb2 = next(i for i, ln in enumerate(lines) if ln.strip().startswith("init.sb2="))
    assert lines[sb2].strip().startswith("init.sb2=0.05")  # meanfield's own default, in its one schema
    # a list default as it is typed (Hydra reads a,b as a sweep); an inherited key keeps its schema's meaning
    assert any(ln.strip().startswith("optim.milestones=[] ") for ln in lines)
    assert any(ln.strip().startswith("optim.betas=[0.9,0.999] ") for ln in lines)
    assert any(ln.strip().startswith("model.widths=[16,32,64] ") for ln in lines)
    lr = [ln.strip() for ln in lines if ln.strip().startswith("optim.lr=")]
    assert len(lr) == 2 and all("learning rate" in ln for ln in lr), lr
    assert any(ln.strip().startswith("name=run ") and "results go to" in ln for ln in lines)
    acts = {}  # each block's model.activation line and its meaning's lines after it
    for i, ln in enumerate(lines):
        if ln.strip().startswith("model.activation="):
            following = [x.strip() for x in lines[i + 1:i + 4]]
            acts[blocks_at(lines, i)] = " ".join([ln.strip(), *following[:next(
                (k for k, x in enumerate(following) if "=" in x.split()[0]), len(following))]])
    for family in ("model=mlp", "model=cnn", "model=plain20", "model=transformer"):
        assert all(name in acts[family] for name in ACTIVATIONS), (family, acts[family])
    # the recurrent cells take their own (rnn tanh or relu; lstm, gru their cell's tanh): not the list of all
    assert "tanh | relu" in acts["model=gru"] and "softplus" not in acts["model=gru"], acts["model=gru"]
    # a key's wrapped meaning stays in the meaning column
    key = next(i for i, ln in enumerate(lines) if ln.strip().startswith("model.depth=20"))
    assert lines[key + 1].startswith(" " * (KEY_COLUMN + 1)) and lines[key + 1].strip()
    assert "1 thread" not in text  # help runs nothing


def blocks_at(lines: list[str], i: int) -> str:
    """The family block of --help's line i: its heading's first choice (model=gru for model=gru, lstm, rnn)."""
    head = next(ln.strip() for ln in lines[i::-1] if ln.strip().startswith("model=") and "." not in ln.split("=")[0])
    return head.split(",")[0].split()[0].rstrip(":")


def test_run_summary_golden_at_80_columns(results):
    """The summary as a user sees it piped at 80 columns: the layout is golden (numbers masked),
    and every number is the one on disk, written whole."""
    from gradflow.fmt import fmt

    changed = ["model.depth=20", "train.steps=10", "train.eval_every=5"]  # (given once: a replaced one has a note)
    overrides = [o for o in TINY if o.split("=")[0] not in {c.split("=")[0] for c in changed}] + changed
    env = {**os.environ, "COLUMNS": "80", "TERM": "dumb"}
    out = subprocess.run([sys.executable, "-m", "gradflow", "run", *overrides, f"results={results}", "name=g"],
                         capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    # every line fits, but the folder path: it is printed whole, so it can be copied
    assert max(len(ln) for ln in lines if not ln.startswith("results: ")) <= 80 and lines[0].strip()
    job = results / "g" / job_name(overrides)
    masked = [re.sub(r"-?\d+(\.\d+)?(e[-+]\d+)?", "#", ln.replace(str(job), "JOB")).rstrip() for ln in lines]
    golden = [
        "step #/#  # s elapsed", "step #/#  # s elapsed", "step #/#  # s elapsed", "step #/#  # s elapsed",
        "ok after # steps in # s on cpu, # thread",
        "final  train loss #  acc #   test loss #  acc #",
        "per-layer gradients (layer # = input), showing # of # layers",
        "┏━━━━━━━┳━━━━━━━━━━┳━━━━━━━━━━━━┳━━━━━━━━━━━━━┳━━━━━━━━━━━━┳━━━━━━━━━━━━━┓",
        "┃ layer ┃ name     ┃ ‖∂L/∂W‖ @# ┃ ‖∂L/∂W‖ @# ┃ ‖∂L/∂z‖ @# ┃ ‖∂L/∂z‖ @# ┃",
        "┡━━━━━━━╇━━━━━━━━━━╇━━━━━━━━━━━━╇━━━━━━━━━━━━━╇━━━━━━━━━━━━╇━━━━━━━━━━━━━┩",
    ]
    body = [m for m in masked if m.startswith("│")]
    assert masked[:len(golden)] == golden, "\n".join(masked)
    assert len(body) == 13 and masked[len(golden) + 13].startswith("└")
    assert masked[len(golden) + 14:] == [
        "weight-gradient ratio ‖∂L/∂W‖ first/last: init #, end #",
        "back-prop signal ratio ‖∂L/∂z‖ first/last: init #, end #",
        "results: JOB",
    ]
    assert "showing 13 of 21 layers" in out.stdout and "1 thread" in out.stdout
    # the numbers: each cell is fmt() of the value on disk, the ratios are first/last by hand
    layers = pd.read_parquet(job / "layers.parquet")
    cells = [[c.strip() for c in ln.split("│")[1:-1]] for ln in lines if ln.startswith("│")]
    for layer, name, *values in cells:
        expect = [layers.query(f"layer == {layer} and quantity == '{q}' and step == {s}")["value"].item()
                  for q in ("grad_norm", "signal_norm") for s in (0, 10)]
        assert values == [fmt(v) for v in expect]
    for q, line in (("grad_norm", lines[-3]), ("signal_norm", lines[-2])):
        p = [layers.query(f"quantity == '{q}' and step == {s}").sort_values("layer")["value"].to_numpy()
             for s in (0, 10)]
        assert line.endswith(f"init {fmt(p[0][0] / p[0][-1])}, end {fmt(p[1][0] / p[1][-1])}")


def test_run_summary_on_a_narrow_terminal_and_for_a_recurrent_net(results):
    """15 layers are all shown (thinned to 13, two lines saved hid two layers); at 50 columns the evaluation
    line breaks between its "loss 0.83" pairs, never inside one; a recurrent net, whose time-step points
    have no weights, prints no weight-gradient ratio of "-"s."""
    def run(*overrides):
        return piped("run", *overrides, f"results={results}", "name=n", columns=50).stdout  # (exit code 0)

    text = run(*[o for o in TINY if not o.startswith("model.depth=")], "model.depth=14", "train.steps=4")
    assert "showing" not in text and sum(ln.startswith("│") for ln in text.splitlines()) == 15
    for line in text.splitlines():
        assert not re.search(r"\b(loss|acc)$", line) and not re.match(r"^-?\d", line), (line, text)
    rnn = run("model=rnn", "data=adding", "data.T=8", "train.steps=4", "model.hidden=8")
    assert "weight-gradient ratio" not in rnn and "back-prop signal ratio" in rnn, rnn
    # its "-" weight gradients are explained, and only the time steps' (the head has one)
    flat = " ".join(rnn.split())
    assert "‖∂L/∂W‖ - at t0 and 7 more: a recurrent net's time steps share its weights" in flat, rnn
    assert "‖∂L/∂z‖ - at" not in flat


def test_a_dash_in_the_run_table_says_why():
    from gradflow.cli.run import _dash_notes

    both, weight, signal = {"grad_norm", "signal_norm"}, {"grad_norm"}, {"signal_norm"}
    assert _dash_notes(["linear0", "linear1", "head"], [both, both, both]) == []
    (note,) = _dash_notes(["inp", "enc.layers.0.self_attn.in_proj", "enc.layers.0.self_attn.out_proj", "head"],
                          [both, weight, weight, both])
    assert note.startswith("‖∂L/∂z‖ - at enc.layers.0.self_attn.in_proj and 1 more: a weight used inside its "
                           "module's own forward (nn.MultiheadAttention's in_proj and out_proj)"), note
    (note,) = _dash_notes(["tok", "pos", "head"], [both, weight, both])  # (discover's ProbePoint.batched)
    assert note.startswith("‖∂L/∂z‖ - at pos: its output has no batch dimension"), note
    # (the same '-' of a head given the examples' positions flattened, (B * T, D): named too, where the note
    # said "a position embedding" alone, against the discovery warning's words)
    assert "a head given the examples' positions flattened into rows" in note, note
    (note,) = _dash_notes(["b0.attn.out", "b0.attn.resid", "b0.resid"], [both, signal, signal])
    assert note == ("‖∂L/∂W‖ - at b0.attn.resid and 1 more: a point on the residual stream, after a block's branch "
                    "is added, has no weight of its own")
    assert _dash_notes(["a", "b"], [both, signal]) == ["‖∂L/∂W‖ - at b: no weight of its own"]
    # a later use of a tied weight (run.json's tied: the first use, where it is recorded); beside residual points
    assert _dash_notes(["wte", "b0.resid", "lm_head"], [both, signal, signal], tied=["wte"]) == [
        "‖∂L/∂W‖ - at b0.resid: a point on the residual stream, after a block's branch is added, has no weight of its own",
        "‖∂L/∂W‖ - at lm_head: uses wte's weight (tied), recorded there"]
    # a frozen layer (requires_grad=False) has a weight: its "-" is no "no weight of its own" (it read so)
    assert _dash_notes(["a", "b", "c"], [set(), signal, both], weights={"a", "b", "c"}) == [
        "‖∂L/∂W‖ - at b: frozen (requires_grad=False), no gradient",
        "‖∂L/∂W‖ and ‖∂L/∂z‖ - at a: frozen (requires_grad=False), no gradient, and no signal where no trainable "
        "layer comes before it"]


def test_a_run_that_learned_nothing_is_ok_but_flagged(cli, results, monkeypatch):
    """Zero weights: every hidden activation is 0, so every hidden weight gradient is exactly 0; the
    logits are the head's bias alone, which can learn the class frequencies and nothing else, so the
    loss stays within 1% of chance, ln(classes)."""
    from gradflow.cli.console import console

    monkeypatch.setattr(console, "width", 80)  # a terminal of 80 columns, whatever runs the tests
    out = cli("run", *TINY, "init.gain=0", f"results={results}", "name=z")
    assert out.exit_code == 0, out.output
    job = results / "z" / job_name([*TINY, "init.gain=0"])
    rec = json.loads((job / "run.json").read_text())
    layers = pd.read_parquet(job / "layers.parquet")
    end = layers.query("quantity == 'grad_norm' and step == 4 and layer < 3")["value"]
    assert rec["status"] == "ok" and (end == 0).all()
    assert 0.99 * np.log(10) < rec["final"]["train_loss"] <= np.log(10) + 1e-6
    assert [f.split(":")[0] for f in rec["flags"]] == ["learned nothing"] * 2
    assert "every hidden weight gradient is exactly 0" in rec["flags"][0]
    # both reasons in one note (two "learned nothing" notes read as a repetition)
    assert out.output.count("learned nothing") == 1 and "note: learned nothing: every hidden weight" in out.output
    assert " ".join(out.output.split()).count("exactly 0 at the end; final train loss") == 1, out.output
    # the note's lines break at spaces, with none left at a line's end, and keep "ln 10 = 2.303" whole
    assert [ln for ln in out.output.splitlines() if ln != ln.rstrip()] == [] and "ln 10 = 2.303" in out.output
    # ls counts the run once, under its one kind of flag (each reason `kind: why` in --json's field)
    listed = cli("ls", results / "z")
    assert "*: finished but flagged: learned nothing (1 run); --json shows why" in " ".join(listed.output.split())
    flags = json.loads(cli("ls", results / "z", "--json").output)[0]["flags"].split("; ")
    assert [f.split(":")[0] for f in flags] == ["learned nothing"] * 2, flags
    # the same net probed at initialization only (train.steps=0) took no step: nothing to learn, no flag
    out = cli("run", *TINY, "init.gain=0", "train.steps=0", f"results={results}", "name=z0")
    assert out.exit_code == 0 and "learned nothing" not in out.output, out.output
    rec = json.loads((results / "z0" / job_name([*TINY, "init.gain=0", "train.steps=0"]) / "run.json").read_text())
    assert rec["status"] == "ok" and rec["steps_done"] == 0 and not rec.get("flags")
    # probed at init alone, its ratio lines give the one value (they read "init 1.124, end 1.124")
    out = cli("run", *TINY, "train.steps=0", f"results={results}", "name=s0")
    lines = [line for line in out.output.splitlines() if "first/last:" in line]
    assert len(lines) == 2 and all("init" in line and "end" not in line for line in lines), out.output


def test_a_notes_formulas_stay_whole_at_any_width():
    """`ln 10 = 2.303` broke at 80 columns after "=" and, at 44-48 or 64-69, after "ln"."""
    import io

    from rich.console import Console

    from gradflow.cli.console import formulas_whole, print_note

    text = "note: learned nothing: final train loss 2.295 after 4 steps, chance is ln 10 = 2.303; ξ_c = ∞ here"
    for width in range(30, 120):
        out = io.StringIO()
        print_note(formulas_whole(text), to=Console(file=out, width=width, color_system=None))
        lines = out.getvalue().splitlines()
        assert " ".join(lines) == text and all(line == line.rstrip() and len(line) <= width for line in lines)
        assert any("ln 10 = 2.303" in line for line in lines) and any("ξ_c = ∞" in line for line in lines), lines


def test_an_exploding_regression_run_is_flagged_as_its_loss_grew(cli, results):
    """The adding problem through a vanilla RNN of 40 steps explodes (loss ~1e20 from ~1 at the first
    evaluation): it finished with finite numbers, so it is ok, but flagged, as a classifier at chance is."""
    over = ["model=rnn", "data=adding", "data.T=40", "train.steps=20", "threads=1"]
    out = cli("run", *over, f"results={results}", "name=grew")
    assert out.exit_code == 0, out.output
    rec = json.loads((results / "grew" / job_name(over) / "run.json").read_text())
    metrics = pd.read_parquet(results / "grew" / job_name(over) / "metrics.parquet")
    loss = metrics[(metrics["split"] == "train") & (metrics["metric"] == "loss")].sort_values("step")["value"]
    assert rec["status"] == "ok" and loss.iloc[-1] > 1.5 * loss.iloc[0]
    assert rec["flags"] == [f"loss grew: final train loss {loss.iloc[-1]:.4g}, {loss.iloc[0]:.4g} at the first "
                            "evaluation"]
    assert "note: loss grew" in out.output


@pytest.mark.parametrize("final, first, flags", [
    # a ResNet without skips, 20 steps: its loss rose above chance while its accuracy tripled: it learned
    ({"train_loss": 4.025, "train_acc": 0.327}, {"train_loss": 3.008, "train_acc": 0.099}, []),
    ({"train_loss": 2.30, "train_acc": 0.11}, {"train_loss": 2.31, "train_acc": 0.1}, ["learned nothing"]),
    ({"train_loss": 6.1, "train_acc": 0.18}, {"train_loss": 2.3, "train_acc": 0.1}, ["loss grew"]),
    ({"train_loss": 6.1, "train_acc": 0.1}, {"train_loss": 2.3, "train_acc": 0.1}, ["learned nothing", "loss grew"]),
    ({"train_loss": 2.30}, {}, ["learned nothing"]),  # (no accuracy logged: the loss alone says it)
])
def test_flags_read_accuracy_beside_the_loss(final, first, flags):
    from gradflow.summary import Chance, learned_nothing

    chance = Chance(math.log(10), 10, "chance is ln 10")
    found = learned_nothing(pd.DataFrame(columns=["step", "layer", "name", "quantity", "value"]), final, chance, first)
    assert [f.split(":")[0] for f in found] == flags


def test_a_copy_task_run_that_learned_nothing_is_flagged(cli, results):
    # its loss averages over mostly blank steps and never reaches a classifier's ln(classes): a run at
    # accuracy 0, its loss far above the memoryless strategy's, read plain `ok`
    from gradflow.datasets import copy_task_baseline

    ov = ["model=lstm", "data=copy", "data.T=10", "train.steps=5", "threads=1"]
    out = cli("run", *ov, f"results={results}", "name=copy")
    rec = json.loads((results / "copy" / job_name(ov) / "run.json").read_text())
    baseline = copy_task_baseline(10, 8, 10)
    assert rec["final"]["train_loss"] > baseline and rec["final"]["train_acc"] < 1.5 / 8, out.output
    assert rec["flags"] == [f"learned nothing: final train loss {rec['final']['train_loss']:.4g} after 5 steps, the memoryless "
                            f"baseline (blanks, then a guess among 8 symbols) is {baseline:.4g}"], rec["flags"]
    assert "ok*" in cli("ls", results / "copy").output


def test_python_dash_m_gradflow_works():
    out = subprocess.run([sys.executable, "-m", "gradflow", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "run" in out.stdout and "ls" in out.stdout


def test_mnist1d_is_generated_once_and_cached(run_job):
    from gradflow.data import cache_dir

    ov = ["data=mnist1d", "model.depth=2", "model.width=8", "train.steps=1"]
    run_job(*ov, name="m1")
    cached = cache_dir() / "mnist1d-seed42.npz"
    assert cached.exists()
    mtime = cached.stat().st_mtime_ns
    start = time.perf_counter()
    job = run_job(*ov, name="m2")
    assert cached.stat().st_mtime_ns == mtime  # read from the cache, not regenerated
    assert time.perf_counter() - start < 2.0
    cfg = yaml.safe_load((job / "config.yaml").read_text())
    assert cfg["data"]["name"] == "mnist1d"
    with np.load(cached) as f:
        assert f["x"].shape == (4000, 40) and f["x_test"].shape == (1000, 40)


@pytest.fixture(scope="module")
def mnist1d_seed7(tmp_path_factory):
    """MNIST-1D of seed 7 as a fresh cache makes it (about 2 s): the data, and the bytes of its cache file."""
    from omegaconf import OmegaConf

    from gradflow.data import _mnist1d, cache_dir

    cache = tmp_path_factory.mktemp("mnist1d-cache")
    first = _mnist1d(OmegaConf.create({"cache": str(cache), "seed": 7}))
    return first, (cache_dir(str(cache)) / "mnist1d-seed7.npz").read_bytes()


@pytest.mark.parametrize("damage", [lambda b: b[:100], lambda b: b"not a zip file\n"], ids=["truncated", "text"])
def test_a_damaged_mnist1d_cache_is_made_again(tmp_path, damage, mnist1d_seed7):
    # every run and sweep point failed on it with numpy's words (BadZipFile, "pickled (object) data"),
    # naming no file: it is a cache, deterministic from its seed, so it is made again
    from omegaconf import OmegaConf

    from gradflow.data import _mnist1d, cache_dir

    cfg = OmegaConf.create({"cache": str(tmp_path), "seed": 7})
    first, made = mnist1d_seed7  # (the cache as _mnist1d wrote it, then damaged here)
    path = cache_dir(str(tmp_path)) / "mnist1d-seed7.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(damage(made))
    again = _mnist1d(cfg)
    assert torch.equal(first.x_train, again.x_train) and torch.equal(first.y_test, again.y_test)
    with np.load(path) as f:
        assert f["x"].shape == (4000, 40)  # the file is whole again


@pytest.mark.cuda
def test_cuda_run_matches_cpu_at_init(run_job):
    cpu = pd.read_parquet(run_job(*TINY, "train.steps=0", "device=cpu", name="cpu") / "layers.parquet")
    gpu = pd.read_parquet(run_job(*TINY, "train.steps=0", "device=cuda", name="gpu") / "layers.parquet")
    assert np.allclose(cpu["value"], gpu["value"], rtol=1e-3, atol=1e-6)


def test_the_command_line_sets_its_objects_aside_before_it_leaves(monkeypatch):
    """The interpreter's last garbage collections would walk every object torch left alive (~0.9 s at
    the end of each command); the command line freezes them first, however the command ends."""
    import gc

    from gradflow.cli import main

    monkeypatch.setattr(sys, "argv", ["gradflow", "ls", "/nonexistent/gradflow-study"])
    gc.unfreeze()
    try:
        with pytest.raises(SystemExit) as leaving:
            main()
        assert leaving.value.code == 1  # a user error: the command failed, and still froze
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def test_a_run_that_probes_many_steps_takes_its_statistics_with_the_fused_kernels(cli, results, monkeypatch):
    """A run that will probe FUSED_AFTER steps or more on the CPU loads the fused kernels at its first probed
    step, says in run.json how many steps they took, and its layers table holds the batched path's values
    (to float32 rounding); so do the loop's own gradient norms, which the kernels then take too."""
    from gradflow.probes import core

    monkeypatch.setattr(core, "FUSED_MIN", 0)  # the tiny net's tensors
    tables, metrics = {}, {}
    for after, name in ((10**9, "batched"), (3, "fused")):
        monkeypatch.setattr(core, "FUSED_AFTER", after)
        out = cli("run", *TINY, "probe.every=1", f"results={results}", f"name={name}")
        assert out.exit_code == 0, out.output
        job = results / name / job_name([*TINY, "probe.every=1"])
        # the first probed step loads the kernels, the other four use them
        assert json.loads((job / "run.json").read_text())["fused_steps"] == (4 if name == "fused" else 0)
        tables[name] = pd.read_parquet(job / "layers.parquet").set_index(["step", "layer", "quantity"])["value"]
        metrics[name] = pd.read_parquet(job / "metrics.parquet").set_index(["step", "split", "metric"])["value"]
    assert tables["fused"].index.equals(tables["batched"].index)
    assert np.allclose(tables["fused"], tables["batched"], rtol=1e-4, atol=1e-7)
    assert metrics["fused"].index.equals(metrics["batched"].index)
    grad = metrics["fused"].index.get_level_values("split").isin(["grad", "opt"])  # every parameter's, the total
    assert grad.sum() > 10
    assert np.allclose(metrics["fused"][grad], metrics["batched"][grad], rtol=1e-5, atol=0)


def test_every_commands_summary_is_one_paragraph_that_the_help_wraps():
    """Typer's rich help keeps a docstring's line breaks in the command list: a summary written over two source
    lines showed there as a sentence broken mid-line."""
    import inspect

    import typer

    import gradflow.cli  # noqa: F401  (registers the commands)
    from gradflow.cli.app import app

    def summaries(command, name):
        yield name, inspect.cleandoc(command.help or "")
        for sub, child in getattr(command, "commands", {}).items():
            yield from summaries(child, f"{name} {sub}")

    found = dict(summaries(typer.main.get_command(app), "gradflow"))
    assert {"gradflow run", "gradflow bench", "gradflow theory phase"} <= set(found)
    broken = {name: text for name, text in found.items() if "\n" in text}
    assert not broken, broken


def test_a_long_layer_name_keeps_its_end_and_its_numbers_in_the_summary_table():
    # a custom transformer's names cut at their end all read "enc.layers.0.li…" (linear1 and linear2 alike)
    from gradflow.cli.run import _middle_cut

    assert _middle_cut("enc.layers.0.linear1", 20) == "enc.layers.0.linear1"
    assert _middle_cut("enc.layers.0.linear1", 16) == "enc…0.linear1"  # the index kept, as is the last part
    assert _middle_cut("enc.layers.0.self_attn.in_proj", 16) == "enc…0…in_proj"
    assert _middle_cut("b1.attn.resid", 11) == "b1…resid"  # (cut at its start, every block's read "…attn.resid")
    assert _middle_cut("a_very_long_single_name", 10) == "…ngle_name"


@pytest.mark.parametrize("columns", [40, 44])
def test_the_names_of_a_narrow_run_table_each_read_as_one_point(results, columns):
    """At 40 columns b0.mlp.in and b0.mlp.out both read "b0.mlp…" (rich cut our cut again); at 48 "b0…out"
    was b0.attn.out or b0.mlp.out, "b0…resid" b0.attn.resid or b0.resid (now the headers wrap there and
    no name is cut). Each name shown, its "…" read as any text, matches its own row's point alone, and the
    table fits the terminal."""
    out = piped("run", "model=transformer", "model.depth=2", "model.d_model=8", "model.heads=2", "data=chars",
                "data.T=8", "data.n_train=16", "data.n_test=8", "train.batch_size=8", "train.steps=0",
                f"results={results}", "name=narrow", columns=columns)  # (exit code 0, or its stderr)
    (record,) = (results / "narrow").glob("*/run.json")
    layers = pd.read_parquet(record.parent / "layers.parquet").drop_duplicates("layer").set_index("layer")["name"]
    rows = [ln.split("│")[1:3] for ln in out.stdout.splitlines() if ln.startswith("│")]
    table = [ln for ln in out.stdout.splitlines() if ln[:1] in "┏┃┡│└"]
    assert len(rows) == len(layers) and max(map(len, table)) <= columns, out.stdout
    assert any("…" in name for _, name in rows), out.stdout  # (the test is about cut names)
    for layer, name in rows:
        pattern = re.compile(".*".join(map(re.escape, name.strip().split("…"))))
        assert [n for n in layers if pattern.fullmatch(n)] == [layers[int(layer)]], (name, out.stdout)


def test_a_narrow_layer_table_cuts_names_never_numbers():
    """A hand-written GPT-2's names (transformer.h.0.mlp.c_proj) at 80 columns: the name column got the room
    the numbers' widest cells left it, but rich, narrowing the widest headers' columns first, cut 0.005667
    to "0.0056…" in one column and left another a cell wider than its numbers. Every number reads whole,
    and the table fits."""
    from gradflow.cli.console import console
    from gradflow.cli.run import show_layers

    names = ["transformer.wte", "transformer.wpe", *(f"transformer.h.{b}.{part}" for b in range(2) for part in
                                                    ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"))]
    values = {(q, s): v for (q, s), v in zip([(q, s) for q in ("grad_norm", "signal_norm") for s in (0, 30)],
                                             [[v] * len(names) for v in (0.07193, 0.005667, 0.01551, 0.006618)])}
    rows = [(layer, name, q, s, v[layer]) for (q, s), v in values.items() for layer, name in enumerate(names)]
    layers = pd.DataFrame(rows, columns=[store.LAYER, store.NAME, store.QUANTITY, store.STEP, store.VALUE])
    with terminal_width(80), console.capture() as cap:
        show_layers(layers, {})
    table = [ln for ln in cap.get().splitlines() if ln[:1] in "┏┃┡│└"]
    assert table and max(map(len, table)) <= 80, cap.get()
    body = [ln.split("│")[3:7] for ln in table if ln.startswith("│")]
    assert [[c.strip() for c in row] for row in body] == [["0.07193", "0.005667", "0.01551", "0.006618"]] * 10, \
        cap.get()
    assert any("…" in ln for ln in table) and "transformer.h.0.mlp.c_proj" in cap.get()  # (names are cut)


def _layer_table(names: list[str], values: list[float], columns: int) -> tuple[list[str], list[list[str]]]:
    """show_layers' table of `names` at `columns`, every cell of a row one of `values`: its lines, and the
    name and number cells of its rows."""
    from gradflow.cli.console import console
    from gradflow.cli.run import show_layers

    rows = [(layer, name, q, s, v) for (q, s), v in zip([(q, s) for q in ("grad_norm", "signal_norm")
                                                         for s in (0, 5)], values) for layer, name in enumerate(names)]
    layers = pd.DataFrame(rows, columns=[store.LAYER, store.NAME, store.QUANTITY, store.STEP, store.VALUE])
    with terminal_width(columns), console.capture() as cap:
        show_layers(layers, {})
    table = [ln for ln in cap.get().splitlines() if ln[:1] in "┏┃┡│└"]
    assert table and max(map(cell_len, table)) <= columns, cap.get()
    return table, [[c.strip() for c in ln.split("│")[2:7]] for ln in table if ln.startswith("│")]


@pytest.mark.parametrize("columns", [60, 70, 80])
def test_a_name_whose_last_part_is_too_long_keeps_its_block_number(columns):
    """A user's blocks named encoder.transformer_layers.N.self_attention_query_key_value: each cut kept the
    start, "encoder.transformer_layers.0…e", 30 cells where 28 were left, so rich cut two headers to
    "‖∂L/∂…" and the numbers to "0.092…". Each name now keeps its block's number and its end, reads as
    its own layer alone, and every number and header is whole."""
    blocks = 8 if columns == 60 else 12  # (at 60, blocks 0 and 10 need more of their names than fits)
    names = ["input_embedding_projection", *(f"encoder.transformer_layers.{b}.self_attention_query_key_value"
                                             for b in range(blocks)), "classification_head"]
    table, rows = _layer_table(names, [0.114, 0.09215, 0.3573, 0.3489], columns)
    assert sum("‖∂L/∂W‖" in ln for ln in table) == 1 and "…" not in "".join(table[:3]), table
    assert [row[1:] for row in rows] == [["0.114", "0.09215", "0.3573", "0.3489"]] * len(names), table
    for layer, (name, *_) in enumerate(rows):
        pattern = re.compile(".*".join(map(re.escape, name.split("…"))))
        assert [n for n in names if pattern.fullmatch(n)] == [names[layer]], (name, table)
    if columns == 80:
        assert rows[1][0] == "…layers.0…on_query_key_value" and rows[11][0] == "…layers.10…n_query_key_value"


def test_a_wide_characters_name_is_cut_to_its_cells():
    # a name of double-width characters was cut by characters: 43 cells where 20 were left, and rich cut every
    # number to "5.5…"
    from gradflow.cli.run import _cut_names

    names = [f"encoder.blocks.{b}.自注意力查询键值投影矩阵自注意力查询键值投影矩阵" for b in range(6)]
    assert all(cell_len(n) <= 20 for n in _cut_names(names, 20)), _cut_names(names, 20)
    _, rows = _layer_table(["embed", *names, "head"], [5.51e-08, 6.446e-09, 8.641e-08, 0.002321], 80)
    assert [row[1:] for row in rows] == [["5.51e-08", "6.446e-09", "8.641e-08", "0.002321"]] * 8, rows


def test_a_narrow_layer_table_gives_fewer_digits_rather_than_cut_numbers():
    # at 60 columns a vanishing net's 6.446e-09 read "6.446e-…", its exponent, the point of the table, lost
    names = ["input_embedding_projection", *(f"encoder_stack.{b}.0" for b in range(8)), "classification_head"]
    values = [5.51e-08, 6.446e-09, 8.641e-08, 0.002321]
    for columns, digits in ((80, 4), (60, 2)):
        _, rows = _layer_table(names, values, columns)
        assert [row[1:] for row in rows] == [[fmt(v, digits) for v in values]] * len(names), (columns, rows)


def test_a_cut_name_that_would_read_as_another_keeps_more_of_its_start():
    from gradflow.cli.run import _cut_names

    names = ["b0.attn.out", "b0.attn.resid", "b0.mlp.in", "b0.mlp.out", "b0.resid"]
    assert _cut_names(names, 10) == ["b0.att…out", "b0.a…resid", "b0.mlp.in", "b0.mlp.out", "b0.resid"]
    assert _cut_names(names, 8) == ["b0.a…out", "b0.a…sid", "b0…in", "b0.m…out", "b0.resid"]
    # no cut of 8 reads as one name alone: the name is cut less, wider than asked
    assert _cut_names(["enc.layers.0.linear1", "enc.layers.1.linear1"], 8) == ["…0.linear1", "…1.linear1"]


def test_a_thinned_table_shows_weight_layers_rather_than_points_without_a_weight_gradient():
    # a 6-block transformer's 39 points, thinned evenly to 13, were 7 residual-stream points reading "-"
    from gradflow.cli.run import _thin

    weighted = {0, 38} | {1 + 6 * b + k for b in range(6) for k in (0, 1, 3, 4)}  # qkv, out, mlp.in, mlp.out
    shown = _thin(39, 13, weighted)
    assert len(shown) == 13 and shown <= weighted and {0, 38} <= shown
    assert max(b - a for a, b in zip(sorted(shown), sorted(shown)[1:])) <= 5  # still spread over the net
    assert _thin(39, 13) == _thin(39, 13, set(range(39)))  # nothing to prefer: evenly spaced as before
    # a 3-block one's 21 points, 18 with a weight: a point without one was kept where no weight layer was
    # within half a spacing (3 of 13 rows read "-")
    weighted = set(range(21)) - {6, 13, 20 - 1}
    shown = _thin(21, 13, weighted)
    assert len(shown) == 13 and shown <= weighted and {0, 20} <= shown
    # fewer weight layers than rows: the points without one fill in, each row moved to a weight layer nearby
    shown = _thin(39, 13, {0, 38, 10, 20, 31})  # rows at 9.5 -> 10, 19 -> 20 and 31.7 -> 31
    assert len(shown) == 13 and {0, 38, 10, 20, 31} <= shown and 19 not in shown
    # weight layers bunched at one end: evenly among them would hide rows 12-38; the rows stay spread
    shown = sorted(_thin(40, 13, set(range(12))))
    assert len(shown) == 13 and shown[-1] == 39 and max(b - a for a, b in zip(shown, shown[1:])) <= 4
    assert _thin(21, 13, set(range(-5, 40))) == _thin(21, 13)  # rows that are not there are no rows to prefer


def test_a_thinned_table_of_blocks_shows_the_same_layers_of_each_block():
    """Thinned evenly, a 4-block transformer's table showed qkv, out and mlp.in of one block, qkv, mlp.in and
    mlp.out of the next: no column compared one layer from block to block. Now the same layers of each
    block, all the layers outside the blocks, and the title says which."""
    from gradflow.cli.run import _thin, _thin_rows

    roles = ["attn.qkv", "attn.out", "attn.resid", "mlp.in", "mlp.out", "resid"]
    names = ["tok_emb", "pos_emb", *(f"b{b}.{r}" for b in range(4) for r in roles), "head"]
    weighted = {i for i, n in enumerate(names) if not n.endswith("resid")}
    rows, which = _thin_rows(names, 13, weighted)
    assert sorted(names[i] for i in rows) == sorted(["tok_emb", "pos_emb", "head",
                                                     *(f"b{b}.{r}" for b in range(4) for r in ("attn.qkv", "mlp.out"))])
    assert which == "attn.qkv and mlp.out of each block"
    # more blocks than rows: the first layer of evenly spaced blocks, the first and the last among them
    names = ["tok_emb", "pos_emb", *(f"b{b}.{r}" for b in range(12) for r in roles), "head"]
    weighted = {i for i, n in enumerate(names) if not n.endswith("resid")}
    rows, which = _thin_rows(names, 13, weighted)
    blocks = sorted(int(names[i].split(".")[0][1:]) for i in rows if names[i].startswith("b"))
    assert len(rows) == 13 and len(blocks) == 10 and blocks[0] == 0 and blocks[-1] == 11
    assert {names[i].split(".", 1)[1] for i in rows if names[i].startswith("b")} == {"attn.qkv"}
    assert which == "attn.qkv of 10 of 12 blocks"
    # a ResNet's stages of blocks: the block is "s2.b1", its layers conv1 and conv2; a downsampling
    # block's extra shortcut is in no other block, so not a layer of every block
    names = ["stem", *(f"s{s}.b{b}.{c}" for s in (1, 2, 3) for b in (1, 2, 3)
                       for c in ("conv1", "conv2", *(("shortcut",) if s > 1 and b == 1 else ()))), "head"]
    rows, which = _thin_rows(names, 13, set(range(len(names))))
    assert sorted(names[i] for i in rows) == sorted(["stem", "head", *(f"s{s}.b{b}.conv1" for s in (1, 2, 3)
                                                                          for b in (1, 2, 3))])
    assert which == "conv1 of each block"
    # torchvision's names: a stem "conv1" is no block (it was one, of a role no other block has: no table of
    # blocks at all)
    names = ["conv1", *(f"layer{s}.{b}.conv{c}" for s in (1, 2, 3, 4) for b in (0, 1, 2) for c in (1, 2)), "fc"]
    rows, which = _thin_rows(names, 13, set(range(len(names))))
    assert which == "conv1 of 11 of 12 blocks" and {names[i] for i in rows} >= {"conv1", "fc", "layer4.2.conv1"}
    # an MLP's layers are in no block: evenly spaced over the whole net, as before
    names = [f"linear{i}" for i in range(30)] + ["head"]
    assert _thin_rows(names, 13, set(range(31))) == (_thin(31, 13, set(range(31))), "")
    # a net whose names show no blocks: as before
    names = [f"layer_{chr(97 + i % 26)}" for i in range(30)]
    assert _thin_rows(names, 13, set(range(30))) == (_thin(30, 13, set(range(30))), "")


def test_every_help_page_reads_whole_at_60_columns():
    """No help text is cut with an ellipsis in a 60-column terminal: rich cuts a word longer than its
    column (`init=xavier_normal,kai…` under `gradflow sweep --help`)."""
    commands = [[], ["theory"], *([c] for c in ("run", "ls", "sweep", "clean", "reproduce", "report", "bench",
                                                 "gradcheck", "plot", "compare")), ["theory", "phase"]]
    pages = [piped(*args, "--help", columns=60).output for args in commands]  # (each exit code 0)
    assert len(pages) == len(commands) and all("Usage:" in p for p in pages)
    for page in pages:
        assert "…" not in page, page
        assert max(map(len, page.splitlines())) <= 60, page


def test_the_final_line_shows_each_splits_own_loss_and_accuracy(capsys):
    """The summary's evaluation line: train loss and acc, then test loss and acc, each its own value (the
    golden summary masks every number, so a test pair showing the train values passed it)."""
    from gradflow.cli.console import NBSP
    from gradflow.cli.run import show_final

    final = {"train_loss": 0.125, "train_acc": 0.875, "test_loss": 0.25, "test_acc": 0.75}
    show_final({"final": final, "config": {"data.name": "gaussian"}})
    out = capsys.readouterr().out.replace(NBSP, " ")
    assert " ".join(out.split()) == "final train loss 0.125 acc 0.875 test loss 0.25 acc 0.75", out
    show_final({"final": {}, "last_finite": {"step": 7, **final}, "config": {"data.name": "gaussian"}})
    out = capsys.readouterr().out.replace(NBSP, " ")
    assert " ".join(out.split()) == \
        "last finite evaluation (step 7) train loss 0.125 acc 0.875 test loss 0.25 acc 0.75", out


def test_a_run_whose_init_is_beyond_the_theory_ends_diverged_and_ls_reads_it(cli, results):
    # init.gain=1e200 is sw2 = inf for the theory: the run stopped with "sw2=inf must be a finite number" after
    # it had begun (left `interrupted`), and `ls` of its folder failed the same way, for every run in it
    out = cli("run", "init.gain=1e200", "model.depth=2", "train.steps=1", "threads=1", f"results={results}",
              "name=huge")
    assert out.exit_code == 0 and "sw2=inf" not in out.output, out.output
    (job,) = store.find_runs(results / "huge")
    assert store.read_run(job)["status"] == "diverged"
    listed = cli("ls", str(results / "huge"))
    assert listed.exit_code == 0 and "diverged" in listed.stdout, listed.output


def test_a_short_batch_norm_run_is_judged_on_its_batches_and_says_why(cli, tmp_path):
    # its evaluations run in eval mode on running statistics a few updates have barely moved: a 10-step
    # resnet20 read a train loss of 31.9 beside a batch loss of 2.59, and a 5-step plain20 "loss grew"
    import json

    from gradflow.job import BN_SETTLED

    small = ["data=gaussian", "data.n_train=128", "data.n_test=32", "model.depth=3", "model.width=8", "threads=1",
             f"results={tmp_path}"]
    for norm, steps in (("batchnorm", 5), ("batchnorm", BN_SETTLED), ("none", 5)):
        out = cli("run", *small, f"norm={norm}", f"train.steps={steps}", f"train.eval_every={steps}",
                  f"name={norm}-{steps}")
        assert out.exit_code == 0, out.output
        record = json.loads(next((tmp_path / f"{norm}-{steps}").glob("*/run.json")).read_text())
        flags = record.get("flags") or []
        unsettled = [f for f in flags if f.startswith("batch-norm statistics unsettled")]
        assert bool(unsettled) == (norm == "batchnorm" and steps < BN_SETTLED), flags
        if unsettled:
            assert unsettled[0].startswith("batch-norm statistics unsettled: after 5 updates the running statistics "
                                           "still weigh 0.59 of their start"), unsettled
            assert not any(f.startswith("loss grew") for f in flags) and all(
                "last train-mode batch loss" in f for f in flags if f.startswith("learned nothing")), flags
    # an exploding one (lr=20) still says its loss grew: its last train-mode window against its first (step 1's
    # batch, at init), the same mode; none with a single window to compare (it was never said at all)
    for every in (1, 5):
        out = cli("run", *small, "norm=batchnorm", "train.steps=5", f"train.eval_every={every}", "optim.lr=20",
                  "data.task=regression", f"name=blow-{every}")
        job = next((tmp_path / f"blow-{every}").glob("*/run.json")).parent
        flags = json.loads((job / "run.json").read_text())["flags"]
        grew = [f for f in flags if f.startswith("loss grew")]
        if every == 5:
            assert not grew, flags
            continue
        batch = pd.read_parquet(job / "metrics.parquet").query("split == 'batch' and metric == 'loss'")
        first, last = batch.sort_values("step")["value"].iloc[[0, -1]]
        assert last > 1e6 * first and grew == [f"loss grew: last train-mode batch loss {last:.4g}, {first:.4g} in "
                                               f"the first evaluation window"], flags
    # probed at init alone (train.steps=0): its eval-mode losses read the statistics' start, said without a flag
    out = cli("run", *small, "norm=batchnorm", "train.steps=0", "name=bn-init")
    record = json.loads(next((tmp_path / "bn-init").glob("*/run.json")).read_text())
    assert not record.get("flags") and record["notes"][0].startswith("batch-norm statistics at their start")
    assert "note: batch-norm statistics at their start: no update ran" in " ".join(out.output.split())


def test_the_chance_level_of_a_binary_classifier_and_of_a_long_copy_task():
    # a binary classifier's is ln 2 (a bound of "more than two classes" lost its "learned nothing" flag); the copy
    # task's is the memoryless baseline of its own delay and copy length (swapped, T=50 read 0.945 for 0.297)
    from types import SimpleNamespace

    from gradflow.datasets import copy_task_baseline
    from gradflow.job import chance_level

    binary = chance_level(SimpleNamespace(task="classification", n_classes=2), {})
    assert binary.loss == pytest.approx(math.log(2)) and binary.classes == 2
    copy = chance_level(SimpleNamespace(task="per_step", n_classes=10),
                        {"data.name": "copy", "data.n_symbols": 8, "data.T": 50, "data.copy_len": 10})
    assert copy.loss == pytest.approx(copy_task_baseline(50, 8, 10)) and copy.classes == 8
    assert copy_task_baseline(50, 8, 10) == pytest.approx(10 * math.log(8) / 70)
