"""Histogram and Jacobian probes against independent recomputations; gradients through time;
clipping events; the wheel carries the configs."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import zipfile

import numpy as np
import pandas as pd
import pytest
import torch

from gradflow.config import compose
from gradflow.models import build
from gradflow.models.init import initialize
from gradflow.models.discover import discover
from gradflow.probes.core import Probes, histogram
from gradflow.probes.jacobian import jacobian_spectra
from gradflow.probes.quantities import HIST_EDGES, HIST_HI, HIST_KINDS, HIST_LO
from tests.conftest import layers_of


def test_histogram_matches_numpy_and_counts_every_element():
    x = torch.tensor([0.0, 0.0, 1e-13, -1e-13, 3e-5, -3e-5, 0.5, -2.0, 7.0, 2e4, -3e5, float("nan"), float("inf")])
    x = torch.cat([x, torch.randn(1000) * 10 ** torch.empty(1000).uniform_(-10, 3)])
    counts = histogram(x).numpy()
    assert counts.sum() == x.numel()
    kinds = dict(zip(HIST_KINDS[-4:], counts[-4:]))
    a = x.abs().numpy()
    finite = np.isfinite(a)
    assert kinds["zero"] == (x == 0).sum()
    assert kinds["nonfinite"] == (~finite).sum()
    assert kinds["underflow"] == (finite & (a > 0) & (a < HIST_EDGES[0])).sum()
    assert kinds["overflow"] == (finite & (a >= HIST_EDGES[-1])).sum()
    nb = len(HIST_EDGES) - 1
    xs = x.numpy()
    pos, _ = np.histogram(a[finite & (xs > 0)], bins=HIST_EDGES)
    neg, _ = np.histogram(a[finite & (xs < 0)], bins=HIST_EDGES)
    np.testing.assert_array_equal(counts[:nb], pos)
    np.testing.assert_array_equal(counts[nb: 2 * nb], neg)


def test_histogram_counts_stay_whole_beyond_float32s_integers():
    # counts were summed in float32, which stops at 2^24: a bin of a 256x64x35x35 activation (20M values,
    # or a GPT MLP's) stopped counting at 16,777,216; and the step's float32 copy to the host rounded them
    n = 2**24 + 7  # odd: a float32 copy rounds it (to 2^24 + 8)
    width = 113  # n = 113 x 148471: the head's dL/dz (one per row) is a 113th of n, and so is its histogram
    layer = torch.nn.Linear(width, width, bias=False)
    torch.nn.init.constant_(layer.weight, 0.5 / width)
    model = torch.nn.Sequential(layer, torch.nn.Tanh(), torch.nn.Linear(width, 1))
    x = torch.ones(n // width, width)  # every activation tanh(0.5): one bin
    counts = histogram(torch.tanh(layer(x)).detach())
    assert counts.dtype == torch.int64 and int(counts.max()) == n and int(counts.sum()) == n
    probes = Probes(discover(model, x[:2]), histograms=True)
    probes.arm()
    model(x).sum().backward()
    probes.after_backward()
    probes.after_update()
    reading, _ = probes.read()
    act = reading.hist[0, 0]  # the first layer's activation output
    assert act.max() == n and act.sum() == n


def test_histograms_are_stored_per_layer_and_sum_to_the_elements(run_job):
    job = run_job("data=gaussian", "data.dim=12", "data.n_train=64", "data.classes=4", "model.depth=3",
                  "model.width=7", "train.steps=2", "train.batch_size=16", "probe.histograms=true", "probe.every=1")
    hist = pd.read_parquet(job / "hist.parquet")
    assert set(hist["tensor"]) == {"activation", "gradient"}
    totals = hist.groupby(["step", "layer", "tensor"])["count"].sum()
    # activations: batch x width units per hidden layer; gradients dL/dz: batch x width (head: batch x classes)
    for (step, layer, tensor), total in totals.items():
        assert total == 16 * (7 if layer < 3 else 4), (step, layer, tensor)
    assert not ((hist["tensor"] == "activation") & (hist["layer"] == 3)).any()  # the head has no activation


def test_jacobian_singular_values_equal_autograd_and_svd():
    cfg = compose(["data=gaussian", "model.depth=3", "model.width=7", "model.activation=tanh", "norm=layernorm"])
    torch.manual_seed(0)
    model = build(cfg, (5,), 3)
    initialize(model, cfg.init, "tanh")
    model.double()  # float64: the two routes agree to 1e-8 on any CPU (layernorm's null direction: ~1e-8)
    x = torch.randn(2, 5, dtype=torch.float64)
    rows = jacobian_spectra(model, x, per_layer=True)

    def body(v):
        h = v.unsqueeze(0)
        for layer in model.hidden:
            h = layer(h)
        return h.squeeze(0)

    for n in range(2):
        expect = torch.linalg.svdvals(torch.autograd.functional.jacobian(body, x[n])).numpy()
        got = next(sv for i, scope, layer, sv in rows if i == n and scope == "input_output")
        np.testing.assert_allclose(got, expect, rtol=1e-8, atol=1e-7)
        h = x[n : n + 1]
        for layer_index, layer in enumerate(model.hidden):
            jac = torch.autograd.functional.jacobian(lambda v: layer(v.unsqueeze(0)).squeeze(0), h.squeeze(0))
            got = next(sv for i, scope, l, sv in rows if i == n and scope == "layer" and l == layer_index)
            np.testing.assert_allclose(got, torch.linalg.svdvals(jac).numpy(), rtol=1e-8, atol=1e-7)
            h = layer(h).detach()


def test_jacobian_table_written_at_init_and_end(run_job):
    job = run_job("data=gaussian", "data.dim=6", "data.n_train=32", "model.depth=2", "model.width=6",
                  "train.steps=2", "train.batch_size=8", "probe.jacobian=true", "probe.jacobian_inputs=3")
    jac = pd.read_parquet(job / "jacobian.parquet")
    assert set(jac["step"]) == {0, 2} and set(jac["scope"]) == {"input_output"} and set(jac["sample"]) == {0, 1, 2}
    assert (jac.groupby(["step", "sample"]).size() == 6).all()  # min(width, d_in) singular values each


def _lag_profile(job):
    df = layers_of(job)
    s = df[(df.quantity == "signal_norm") & (df.step == 0)].set_index("layer")["value"].sort_index()
    T = int(s.index.max())  # the head; time steps are 0..T-1
    return lambda k: s.loc[T - 1 - k] / s.loc[T - 1]  # ||dL/dh_(T-1-k)|| relative to the last step


def test_gradient_through_time_vanishes_in_a_tanh_rnn_but_not_in_an_lstm_with_forget_bias(run_job):
    seq = ["data=adding", "data.T=110", "data.n_train=128", "data.n_test=16", "train.steps=0",
           "train.batch_size=128", "model.hidden=64", "init=lecun_normal"]
    rnn = _lag_profile(run_job(*seq, "model=rnn", "model.gain=1.0", name="rnn"))
    lstm = _lag_profile(run_job(*seq, "model=lstm", "model.forget_bias=3", name="lstm"))
    assert rnn(100) < 1e-6
    lags = np.arange(10, 101, 10)
    logs = np.log([rnn(k) for k in lags])
    assert np.all(np.diff(logs) < 0)  # geometric decay with the lag ...
    assert np.polyfit(lags, logs, 1)[0] < -0.05  # ... at a steady exponential rate
    assert lstm(100) > 1e-2


def test_clipping_events_are_counted(run_job):
    base = ["data=gaussian", "data.dim=8", "data.n_train=64", "model.depth=3", "model.width=8",
            "train.steps=10", "train.batch_size=16", "train.eval_every=5"]
    for extra, expect_clipped in ((["train.grad_clip=1e-6"], True), (["train.clip_value=1e-9"], True),
                                  (["train.grad_clip=1e6"], False)):
        job = run_job(*base, *extra, name="clip")
        m = pd.read_parquet(job / "metrics.parquet")
        clipped = m[(m.split == "opt") & (m.metric == "clipped")]["value"]
        assert (clipped.sum() == 10) if expect_clipped else (clipped.sum() == 0), extra


@pytest.mark.slow
def test_the_wheel_ships_the_configs_and_finds_them(tmp_path):
    root = __import__("pathlib").Path(__file__).resolve().parents[1]
    # with the backend installed (the dev extra), no package index is needed: offline machines build too
    isolation = [] if importlib.util.find_spec("hatchling") is None else ["--no-build-isolation"]
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, "-q", "-w", str(tmp_path),
                            str(root)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    wheel = next(tmp_path.glob("gradflow-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "gradflow/conf/config.yaml" in names and "gradflow/conf/model/mlp.yaml" in names
    assert any(n.startswith("gradflow/experiments/reproduce/") for n in names)
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, timeout=300)
    out = subprocess.run([sys.executable, "-c", "import gradflow.config as c; print(c.CONF_DIR); "
                          "print(c.compose(['model.depth=3']).model.depth)"],
                         capture_output=True, text=True, cwd=tmp_path, env={"PYTHONPATH": str(target),
                                                                           "PATH": "/usr/bin:/bin"}, timeout=120)
    assert out.returncode == 0, out.stderr
    conf_dir, depth = out.stdout.split()
    assert conf_dir.startswith(str(target)) and depth == "3"


def test_histogram_bins_are_quarter_decades_with_their_edges_at_the_powers_of_ten():
    """The bins are 4 per decade over [1e-12, 1e4): each power of ten is a bin's lower
    edge, and a value just below it falls in the bin before (the stored lo/hi of each kind say so)."""
    nb = (len(HIST_KINDS) - 4) // 2
    assert nb == 16 * 4 and len(HIST_EDGES) == nb + 1
    def kind_of(v):  # the one kind a single value is counted in
        [at] = np.flatnonzero(histogram(torch.tensor([v], dtype=torch.float64)).numpy())
        return at

    for k in range(-12, 4):
        up, neg = kind_of(10.0**k), kind_of(-(10.0**k))
        assert HIST_KINDS[up] == "pos" and HIST_LO[up] == pytest.approx(10.0**k, rel=1e-6), k
        assert HIST_HI[up] == pytest.approx(10.0 ** (k + 0.25), rel=1e-6), k
        assert HIST_KINDS[neg] == "neg" and HIST_LO[neg] == pytest.approx(10.0**k, rel=1e-6), k
        below = kind_of(10.0**k * 0.999)
        if k > -12:
            assert HIST_KINDS[below] == "pos" and HIST_HI[below] == pytest.approx(10.0**k, rel=1e-6), k
        else:
            assert HIST_KINDS[below] == "underflow"


def _small_mlp_model(norm="batchnorm"):
    cfg = compose(["data=gaussian", "model.depth=3", "model.width=6", "model.activation=tanh", f"norm={norm}"])
    torch.manual_seed(0)
    model = build(cfg, (4,), 3)
    initialize(model, cfg.init, "tanh")
    return model


def test_the_input_output_jacobian_is_filed_under_the_last_hidden_layer():
    """The input-output rows carry the last hidden layer's index, the index of the last
    layer-to-layer row (as the docstring and jacobian.parquet's `layer` say)."""
    model = _small_mlp_model("layernorm")
    rows = jacobian_spectra(model, torch.randn(2, 4), per_layer=True)
    layers = sorted({layer for _, scope, layer, _ in rows if scope == "layer"})
    assert layers == list(range(len(model.hidden)))
    assert {layer for _, scope, layer, _ in rows if scope == "input_output"} == {len(model.hidden) - 1}


@pytest.mark.parametrize("training", [True, False])
def test_jacobian_spectra_leave_the_model_in_the_mode_it_was_in(training):
    """The spectra are taken in eval mode (batchnorm's running statistics), and the model
    goes back to its mode: a training run's batchnorm keeps normalizing by the batch after a probe at step 0."""
    model = _small_mlp_model("batchnorm")
    model.train(training)
    rows = jacobian_spectra(model, torch.randn(3, 4), per_layer=False)
    assert rows and all(scope == "input_output" for _, scope, _, _ in rows)
    assert all(m.training is training for m in model.modules())
