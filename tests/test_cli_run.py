"""`gradflow run` through the real CLI: results layout, summaries, bad input, divergence, devices."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

import gradflow
from gradflow.config import job_name
from tests.conftest import TINY


def test_run_writes_the_results_layout(cli, results):
    out = cli("run", *TINY, f"results={results}", "name=one")
    assert out.exit_code == 0, out.output
    job = results / "one" / job_name(TINY)
    assert sorted(p.name for p in job.iterdir()) == ["config.yaml", "layers.parquet", "metrics.parquet", "run.json"]
    rec = json.loads((job / "run.json").read_text())
    assert rec["status"] == "ok" and rec["steps_done"] == 4 and rec["seed"] == 0 and rec["device"] == "cpu"
    assert rec["torch"] == torch.__version__ and rec["wall_time"] > 0
    assert set(rec["final"]) == {"train_loss", "train_acc", "test_loss", "test_acc"}
    assert yaml.safe_load((job / "config.yaml").read_text())["model"]["depth"] == 3
    metrics = pd.read_parquet(job / "metrics.parquet")
    assert list(metrics.columns) == ["step", "split", "metric", "value"]
    assert sorted(metrics.query("split == 'test' and metric == 'acc'")["step"]) == [0, 2, 4]
    layers = pd.read_parquet(job / "layers.parquet")
    assert list(layers.columns) == ["step", "layer", "name", "quantity", "value"]
    assert layers.groupby(["step", "layer", "quantity"]).size().max() == 1  # one value per cell
    assert list(layers.drop_duplicates("layer").sort_values("layer")["name"]) == ["linear0", "linear1", "linear2", "head"]
    # the summary printed: status, finals, the per-layer table, the ratio, the folder
    for text in ("ok", "final", "train loss", "per-layer gradients", "linear0", "head", "ratio first/last", str(job)):
        assert text in out.output.replace("\n", ""), text


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


def test_same_seed_same_numbers(run_job):
    a = pd.read_parquet(run_job(*TINY, name="a") / "layers.parquet")
    b = pd.read_parquet(run_job(*TINY, name="b") / "layers.parquet")
    pd.testing.assert_frame_equal(a, b)
    c = pd.read_parquet(run_job(*TINY, "seed=1", name="c") / "layers.parquet")
    assert not np.allclose(a["value"], c["value"])


def test_diverging_run_is_recorded_and_keeps_earlier_rows(cli, results):
    ov = [*TINY, "train.steps=40", "optim.lr=1e6", "optim.momentum=0", "train.check_every=1", "model.activation=relu"]
    out = cli("run", *ov, f"results={results}", "name=boom")
    assert out.exit_code == 0, out.output  # divergence is a result, not an error
    job = results / "boom" / job_name(ov)
    rec = json.loads((job / "run.json").read_text())
    assert rec["status"] == "diverged"
    assert 1 <= rec["diverged_step"] < 40 and rec["steps_done"] <= rec["diverged_step"] + 1
    layers = pd.read_parquet(job / "layers.parquet")
    init = layers[layers["step"] == 0]
    assert len(init) > 0 and np.isfinite(init["value"]).all()  # the rows logged before divergence are intact
    assert "diverged" in out.output and f"step {rec['diverged_step']}" in out.output


BAD = [
    (["model.foo=1"], "model.foo"),
    (["init=foo"], "init='foo' is not a known choice; choices: "),
    (["model.depth=abc"], "model.depth='abc' is not a valid integer"),
    (["model.activation=swish"], "model.activation='swish' is not allowed; choices: linear, sigmoid, tanh"),
    (["model.depth=0"], "model.depth=0 must be >= 1"),
    (["model.width=-3"], "model.width=-3 must be >= 1"),
    (["train.steps=-1"], "train.steps=-1 must be >= 0"),
    (["name=../escape"], "name='../escape'"),
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


def test_unwritable_results_folder(cli, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    out = cli("run", *TINY, f"results={blocker}/results")
    assert out.exit_code == 1 and "is not a folder" in out.output and str(blocker) in out.output
    assert "Traceback" not in out.output


def test_help_lists_groups_choices_and_keys(cli):
    out = cli("run", "--help")
    assert out.exit_code == 0
    text = " ".join(out.output.split())
    for needle in ("model:", "init:", "kaiming_normal", "meanfield", "norm:", "batchnorm", "optim:", "probe:",
                   "model.depth", "model.activation", "train.grad_clip", "init.sw2", "device"):
        assert needle in text, needle


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


@pytest.mark.cuda
def test_cuda_run_matches_cpu_at_init(run_job):
    cpu = pd.read_parquet(run_job(*TINY, "train.steps=0", "device=cpu", name="cpu") / "layers.parquet")
    gpu = pd.read_parquet(run_job(*TINY, "train.steps=0", "device=cuda", name="gpu") / "layers.parquet")
    assert np.allclose(cpu["value"], gpu["value"], rtol=1e-3, atol=1e-6)
