"""On a CUDA GPU: the transformer family and a Recorder in the user's own loop give the CPU's values and
keep the probes' one-host-copy-per-probed-step promise. Skipped where no GPU is present."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import gradflow

TINY_TRANSFORMER = ["model=transformer", "model.depth=2", "model.d_model=16", "model.heads=2", "data=chars",
                    "data.T=8", "data.n_train=32", "data.n_test=16", "train.batch_size=8", "train.steps=0"]


@pytest.mark.cuda
def test_a_transformer_on_cuda_matches_the_cpu_at_init(run_job):
    cpu = pd.read_parquet(run_job(*TINY_TRANSFORMER, "device=cpu", name="cpu") / "layers.parquet")
    gpu = pd.read_parquet(run_job(*TINY_TRANSFORMER, "device=cuda", name="gpu") / "layers.parquet")
    assert list(cpu["name"]) == list(gpu["name"])
    assert np.allclose(cpu["value"], gpu["value"], rtol=1e-3, atol=1e-6, equal_nan=True)


@pytest.mark.cuda
def test_an_exploding_net_on_cuda_is_clipped_with_its_float64_norm_not_marked_diverged(run_job):
    """Gradient norms ~1e22 overflow float32's squares: on CUDA the loop's norms accumulate in float64."""
    net = ["data=gaussian", "data.n_train=64", "data.n_test=32", "model.activation=relu", "model.depth=40",
           "model.width=16", "init=orthogonal", "init.gain=5", "train.grad_clip=1.0", "train.steps=3",
           "train.batch_size=16"]
    runs = {d: run_job(*net, f"device={d}", name=d) for d in ("cpu", "cuda")}
    status = {d: json.loads((r / "run.json").read_text())["status"] for d, r in runs.items()}
    assert status == {"cpu": "ok", "cuda": "ok"}
    norms = {d: pd.read_parquet(r / "metrics.parquet").query("split == 'opt' and metric == 'grad_norm'")["value"]
             for d, r in runs.items()}
    assert np.isfinite(norms["cuda"]).all() and norms["cuda"].max() > 1e20
    assert np.allclose(norms["cuda"], norms["cpu"], rtol=1e-3)


@pytest.mark.cuda
def test_a_recorder_on_cuda_syncs_once_per_probed_step_and_never_in_between(tmp_path):
    torch.manual_seed(0)
    dev = torch.device("cuda")
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 3)).to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = torch.randn(32, 8, device=dev), torch.randint(0, 3, (32,), device=dev)
    rec = gradflow.Recorder(model, tmp_path / "study" / "run", every=3)
    syncs = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            for step in range(7):
                seen = len(caught)
                with rec.step(step):
                    loss = F.cross_entropy(model(x), y)
                    loss.backward()
                rec.log(step, train_loss=loss)
                opt.step()
                opt.zero_grad()
                syncs[step] = len(caught) - seen
        finally:
            torch.cuda.set_sync_debug_mode("default")
    rec.close()
    # step 3 is probed and its values are fetched at the start of step 4; 2 and 5 are plain steps
    assert [syncs[s] for s in (2, 5)] == [0, 0], syncs
    assert syncs[3] + syncs[4] == 1, syncs
    layers = gradflow.load(tmp_path / "study")
    assert sorted(layers["step"].unique()) == [0, 3, 6]


@pytest.mark.cuda
@pytest.mark.skipif(__import__("sys").platform != "linux", reason="the fork server is used on Linux only")
def test_joblib_workers_forked_from_the_fork_server_train_on_cuda(tmp_path):
    """The fork server imports torch without initializing the CUDA driver, so the workers it forks can:
    a joblib sweep on the GPU from the command line ends ok, each run on cuda."""
    import json
    import subprocess
    import sys

    args = [sys.executable, "-m", "gradflow", "sweep", "data=gaussian", "data.n_train=128", "data.n_test=64",
            "model.width=8", "model.depth=2,3", "train.steps=5", "device=cuda", "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2", f"results={tmp_path}", "--name", "gpu"]
    out = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    records = [json.loads(p.read_text()) for p in (tmp_path / "gpu").glob("*/run.json")]
    assert len(records) == 2 and {(r["status"], r["device"].split(":")[0]) for r in records} == {("ok", "cuda")}


@pytest.mark.cuda
def test_device_auto_picks_cuda_where_no_preset_says_otherwise(monkeypatch):
    """device=auto means CUDA first (the test suite presets cpu through GRADFLOW_DEVICE: unset here)."""
    from gradflow.config import resolve_device

    monkeypatch.delenv("GRADFLOW_DEVICE", raising=False)
    assert resolve_device("auto").type == "cuda"
    monkeypatch.setenv("GRADFLOW_DEVICE", "cpu")
    assert resolve_device("auto").type == "cpu"
