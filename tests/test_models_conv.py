"""CNN and ResNet families: the paper's sizes, shapes, probe points, gradient flow at init, every init scheme."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from gradflow.config import INIT_CHOICES, compose
from gradflow.errors import GradflowError
from gradflow.models import build, make_norm
from gradflow.models.init import initialize
from tests.conftest import layers_of

# tiny 1D runs: data=gaussian gives (N, dim) inputs, which the conv families read as one-channel signals
CONV_TINY = ["data=gaussian", "data.n_train=64", "data.n_test=32", "data.dim=16", "train.steps=3",
             "train.batch_size=16", "train.eval_every=3"]
CNN_TINY = ["model=cnn", "model.depth=3", "model.channels=8"]
RESNET_TINY = ["model=resnet20", "model.widths=[4,8,8]"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """On a shared 2-core machine torch's 2 threads fight other processes: one thread is ~5x faster here."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _model(*overrides, input_shape=(40,), n_classes=10, init=True):
    cfg = compose(["data=gaussian", *overrides])
    torch.manual_seed(0)
    model = build(cfg, input_shape, n_classes)
    if init:
        initialize(model, cfg.init, cfg.model.activation)
        if hasattr(model, "post_init"):
            model.post_init(cfg)
    return model


def _n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


# --- the paper's networks: sizes, shapes, probe points ---------------------------------------------
@pytest.mark.parametrize("name, paper, exact", [("20", 0.27e6, 269_722), ("56", 0.85e6, 853_018)])
def test_cifar_resnet_parameter_counts_match_the_paper(name, paper, exact):
    resnet = _model(f"model=resnet{name}", input_shape=(3, 32, 32), init=False)
    plain = _model(f"model=plain{name}", input_shape=(3, 32, 32), init=False)
    assert _n_params(resnet) == pytest.approx(paper, rel=0.02)  # He et al. 2016, Table 6
    assert _n_params(resnet) == exact
    assert _n_params(plain) == _n_params(resnet)  # option A shortcuts have no parameters


@pytest.mark.parametrize("model", [["model=cnn", "model.depth=4", "model.channels=8"],
                                   ["model=cnn", "model.depth=4", "model.channels=8", "model.stride=2",
                                    "model.skip=residual", "norm=batchnorm"],
                                   ["model=resnet20", "model.widths=[4,8,8]"],
                                   ["model=plain20", "model.widths=[4,8,8]"]])
@pytest.mark.parametrize("input_shape", [(40,), (2, 40), (3, 32, 32)])  # MNIST-1D, 1D with channels, CIFAR
def test_output_shape_and_probe_points(model, input_shape):
    net = _model(*model, input_shape=input_shape, init=False)
    assert net(torch.randn(5, *input_shape)).shape == (5, 10)
    depth = 19 if "resnet" in model[0] or "plain" in model[0] else 4
    points = net.probe_points
    assert len(points) == depth + 1
    if depth == 19:
        blocks = [f"s{s}.b{b}.conv{c}" for s in (1, 2, 3) for b in (1, 2, 3) for c in (1, 2)]
        assert [p.name for p in points] == ["stem", *blocks, "head"]
    else:
        assert [p.name for p in points] == [f"conv{i}" for i in range(depth)] + ["head"]
    conv = torch.nn.Conv2d if len(input_shape) == 3 else torch.nn.Conv1d
    assert all(isinstance(p.layer, conv) for p in points[:-1]) and isinstance(points[-1].layer, torch.nn.Linear)
    acts = [p.activation for p in points[:-1]]
    assert points[-1].activation is None and len({id(a) for a in acts}) == len(acts)  # one module per point


def test_the_activation_after_conv2_is_the_post_addition_relu():
    net = _model("model=resnet20", "model.widths=[4,8,8]", "model.variant=skipinit")
    block = net.blocks[3]  # the first block of stage 2: stride 2, 4 -> 8 channels
    assert net.probe_points[2 * 3 + 2].layer is block.conv2 and net.probe_points[2 * 3 + 2].activation is block.act2
    seen = []
    block.act2.register_forward_hook(lambda m, i, y: seen.append(y))
    x = torch.randn(3, 4, 10)
    out = block(x)
    assert seen[0] is out
    # SkipInit starts every branch at 0, so the block is relu(option-A shortcut), recomputed here by hand
    shortcut = torch.cat([x[:, :, ::2], torch.zeros(3, 4, 5)], dim=1)
    assert torch.equal(out, torch.relu(shortcut))


def test_resnet_2d_shortcut_subsamples_and_zero_pads():
    net = _model("model=resnet20", "model.widths=[4,8,8]", "model.variant=skipinit", input_shape=(3, 16, 16))
    x = torch.randn(2, 4, 8, 8)
    expected = torch.relu(torch.cat([x[:, :, ::2, ::2], torch.zeros(2, 4, 4, 4)], dim=1))
    assert torch.equal(net.blocks[3](x), expected)


def test_cnn_learnable_alpha_starts_at_zero_and_first_layer_has_no_skip():
    net = _model("model=cnn", "model.depth=4", "model.channels=8", "model.skip=residual", "model.alpha=learnable")
    assert net.hidden[0].residual is False
    assert all(isinstance(h.alpha, torch.nn.Parameter) and h.alpha.item() == 0.0 for h in net.hidden[1:])


def test_conv_norms_normalize_per_channel_and_per_example():
    x = torch.randn(6, 4, 10) * 3 + 1
    bn = make_norm("batchnorm", 4, dims=1)(x)  # each channel over the batch and positions
    expected = (x - x.mean(dim=(0, 2), keepdim=True)) / (x.var(dim=(0, 2), unbiased=False, keepdim=True) + 1e-5).sqrt()
    assert torch.allclose(bn, expected, atol=1e-5)
    ln = make_norm("layernorm", 4, dims=1)(x)  # each example over its channels and positions
    expected = (x - x.mean(dim=(1, 2), keepdim=True)) / (x.var(dim=(1, 2), unbiased=False, keepdim=True) + 1e-5).sqrt()
    assert torch.allclose(ln, expected, atol=1e-5)
    assert isinstance(make_norm("batchnorm", 4, dims=2), torch.nn.BatchNorm2d)
    assert isinstance(make_norm("layernorm", 4), torch.nn.LayerNorm)  # the MLP's, unchanged


@pytest.mark.parametrize("overrides, input_shape, key", [
    (["model=cnn", "model.dims=2"], (40,), "model.dims"),
    (["model=resnet20", "model.dims=1"], (3, 32, 32), "model.dims"),
    (["model=resnet20", "norm=layernorm"], (40,), "model.variant"),
    (["model=plain20", "model.variant=fixup"], (40,), "model.skip=residual"),
])
def test_user_errors_name_the_key(overrides, input_shape, key):
    with pytest.raises(GradflowError, match=key):
        _model(*overrides, input_shape=input_shape, init=False)


# --- gradient flow at init, measured with the real probes ------------------------------------------
def _signal_ratios(run_job, init):
    """Fitted per-layer ratio ||dL/dz_l||^2 / ||dL/dz_{l+1}||^2 over the bulk of a 50-layer plain ReLU CNN."""
    job = run_job("model=cnn", "model.depth=50", "model.channels=64", "model.kernel=3", "model.activation=relu",
                  "data=gaussian", "data.dim=32", "data.n_train=128", "data.n_test=16", "train.steps=0",
                  "train.batch_size=128", f"init={init}")
    df = layers_of(job)
    s = df[(df.quantity == "signal_norm") & (df.step == 0)].sort_values("layer")
    bulk = s[(s.layer >= 5) & (s.layer < 45)]  # away from the 1-channel input layer and the pooled head
    slope = np.polyfit(bulk.layer, np.log(bulk.value**2), 1)[0]
    return math.exp(-slope)


@pytest.mark.parametrize("init", ["kaiming_normal", "xavier_normal"])
def test_plain_relu_cnn_gradient_ratio_per_layer_matches_theory(run_job, init):
    # chi = sigma_w^2 * fan * E[relu'(z)^2] with fan = fan_in = fan_out = channels * kernel = 192
    fan = 64 * 3
    sigma2 = 2.0 / fan if init == "kaiming_normal" else 2.0 / (fan + fan)
    chi = sigma2 * fan * 0.5  # kaiming: 1 (gradients keep their norm), xavier: 1/2 per layer
    assert _signal_ratios(run_job, init) == pytest.approx(chi, rel=0.1)


# --- Fixup and SkipInit: no normalization, yet a depth-independent forward pass -----------------------
def _feature_power(depth, variant, post_init=True, live_branches=False):
    """E[h^2] of the pooled features (the head's input) of a no-norm resnet on 1D inputs, He init."""
    cfg = compose(["data=gaussian", "model=resnet", f"model.depth={depth}", f"model.variant={variant}",
                   "init=kaiming_normal"])
    torch.manual_seed(0)
    net = build(cfg, (40,), 10)
    initialize(net, cfg.init, "relu")
    if post_init:
        net.post_init(cfg)
    if live_branches:  # as after some training: Fixup's zero-init last convs become nonzero (He scale)
        with torch.no_grad():
            for block in net.blocks:
                w = block.conv2.weight
                w.normal_(0.0, math.sqrt(2.0 / (w.shape[1] * w.shape[2])))
    x = torch.randn(64, 40, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        features, logits = net.features(x), net(x)
    assert torch.isfinite(logits).all()
    return features.pow(2).mean().item(), logits


def test_fixup_and_skipinit_forward_does_not_grow_with_depth_but_an_unscaled_resnet_does():
    for variant in ("fixup", "skipinit"):  # resnet20 vs resnet56
        p20, _ = _feature_power(19, variant)
        p56, logits = _feature_power(55, variant)
        assert 0.5 < p56 / p20 < 2, variant
        if variant == "fixup":
            assert torch.count_nonzero(logits) == 0  # Fixup's zero-init head
    # Fixup's L^-1/2 scaling keeps it bounded once the branches are live
    p20, _ = _feature_power(19, "fixup", live_branches=True)
    p56, _ = _feature_power(55, "fixup", live_branches=True)
    assert 0.5 < p56 / p20 < 2
    # the same net with plain He init everywhere (no Fixup rescaling): the variance ~doubles per block
    p20, _ = _feature_power(19, "fixup", post_init=False)
    p56, _ = _feature_power(55, "fixup", post_init=False)
    assert p56 / p20 > 1e3


def test_fixup_post_init_rescales_branches_and_zeroes_the_head():
    net = _model("model=resnet", "model.depth=55", "model.variant=fixup", "init=kaiming_normal")
    L = 27  # residual blocks
    for block in net.blocks[1:]:
        if block.conv1.weight.shape[1] == block.conv1.weight.shape[0]:
            fan_in = block.conv1.weight.shape[1] * 3
            assert block.conv1.weight.var().item() == pytest.approx(2.0 / fan_in / L, rel=0.25)
        assert torch.count_nonzero(block.conv2.weight) == 0
    assert torch.count_nonzero(net.head.weight) == 0 and torch.count_nonzero(net.head.bias) == 0


# --- every init scheme trains a few steps on both families -------------------------------------------
def _assert_healthy(job_dir, n_points):
    rec = json.loads((job_dir / "run.json").read_text())
    assert rec["status"] == "ok", rec.get("error")
    assert rec["steps_done"] == 3
    df = layers_of(job_dir)
    assert df["layer"].nunique() == n_points
    assert np.isfinite(df["value"]).all()


@pytest.mark.parametrize("init", INIT_CHOICES)
@pytest.mark.parametrize("family", ["cnn", "resnet20"])
def test_every_init_runs(run_job, family, init):
    model, points = (CNN_TINY, 4) if family == "cnn" else (RESNET_TINY, 20)
    _assert_healthy(run_job(*CONV_TINY, *model, f"init={init}"), points)


@pytest.mark.parametrize("extra", [[*CNN_TINY, "norm=batchnorm", "model.skip=residual", "model.stride=2"],
                                   [*CNN_TINY, "norm=layernorm", "model.skip=residual", "model.alpha=learnable"],
                                   ["model=plain20", "model.widths=[4,8,8]"],
                                   [*RESNET_TINY, "model.variant=skipinit"]])
def test_variants_run(run_job, extra):
    _assert_healthy(run_job(*CONV_TINY, *extra), 4 if "model=cnn" in extra else 20)


def test_fixup_runs(run_job):
    job = run_job(*CONV_TINY, *RESNET_TINY, "model.variant=fixup", "init=kaiming_normal")
    rec = json.loads((job / "run.json").read_text())
    assert rec["status"] == "ok", rec.get("error")
    df = layers_of(job)
    assert np.isfinite(df["value"]).all()
    # the update/weight ratio of a layer whose weight is still zero is undefined (x / 0), so it is not
    # stored: Fixup's zero-init head at step 0, and each branch's last conv until the head's update reaches it
    weight_norm = df[df.quantity == "weight_norm"].set_index(["step", "layer"])["value"]
    ratio_cells = set(df[df.quantity == "update_ratio"].set_index(["step", "layer"]).index)
    zero_cells = set(weight_norm[weight_norm == 0].index)
    assert zero_cells and not (zero_cells & ratio_cells)
    assert df[(df.step == 3) & (df.quantity == "weight_norm")]["value"].gt(0).all()  # every layer woke up


def test_delta_orthogonal_has_an_orthogonal_centre_tap_and_zeros_elsewhere():
    cnn = _model("model=cnn", "model.depth=3", "model.channels=8", "model.kernel=5", "init=delta_orthogonal")
    resnet = _model("model=resnet20", "model.widths=[4,8,8]", "init=delta_orthogonal", input_shape=(3, 16, 16))
    for point in [*cnn.probe_points[:-1], *resnet.probe_points[:-1]]:
        w = point.layer.weight.detach()  # (out, in, *kernel)
        centre = tuple(k // 2 for k in w.shape[2:])
        tap = w[(slice(None), slice(None), *centre)]
        small = min(tap.shape)
        gram = tap @ tap.T if tap.shape[0] == small else tap.T @ tap  # (semi-)orthogonal: the small Gram is I
        assert torch.allclose(gram, torch.eye(small), atol=1e-5), point.name
        rest = w.clone()
        rest[(slice(None), slice(None), *centre)] = 0
        assert torch.count_nonzero(rest) == 0, point.name


def test_a_resnets_chi1_stays_per_layer_and_its_figures_are_ticked_by_block(run_job):
    """Only a measured residual stream (a transformer's b#.resid) makes chi1 per block: a ResNet's conv2 is
    inside its branch, before the add, so its chi1 stays the per-layer fit that an MLP's is, and ls says
    nothing of blocks. Its figures' layer axis is still ticked at each block's first point (s1.b1, ...)."""
    from gradflow import load
    from gradflow.plots import figures
    from gradflow.columns import column_notes, table_columns

    job = run_job("model=resnet20", "data=gaussian", "train.steps=1", "threads=1", name="blocks")
    summary = json.loads((job / "run.json").read_text())["summary"]
    layers = layers_of(job)
    s = layers[(layers["step"] == 0) & (layers["quantity"] == "signal_norm")].sort_values("layer")
    bulk = s[(s["layer"] >= 3) & (s["layer"] <= s["layer"].max() - 3)]
    assert summary["chi1_layers"] == f"{bulk['layer'].min()}-{bulk['layer'].max()}"
    slope = np.polyfit(bulk["layer"].to_numpy(float), 2 * np.log(bulk["value"].to_numpy()), 1)[0]
    assert summary["chi1_measured"] == pytest.approx(math.exp(-slope), rel=1e-9)
    runs = load(job.parent, table="runs")
    assert not any("per block" in n for n in column_notes(table_columns(runs, []), runs))
    ax = figures.profile(load(job), "signal_norm", step=0).axes[0]
    conv1 = s[s["name"].str.endswith(".conv1")]
    assert list(ax.get_xticks()) == list(conv1["layer"])
    assert [t.get_text() for t in ax.get_xticklabels()] == [n.rsplit(".", 1)[0] for n in conv1["name"]]


@pytest.mark.parametrize("names, blocks", [
    (["tok_emb", "b0.attn.qkv", "b0.resid", "b1.attn.qkv", "b1.resid", "head"], (["b0", "b1"], "attn.qkv", "resid")),
    (["stem", "s1.b1.conv1", "s1.b1.conv2", "s1.b2.conv1", "s1.b2.conv2", "head"],
     (["s1.b1", "s1.b2"], "conv1", "conv2")),
    # a torchvision ResNet: the downsample convolution a few blocks end with does not make it their output
    (["conv1", "layer1.0.conv1", "layer1.0.conv2", "layer2.0.conv1", "layer2.0.conv2", "layer2.0.downsample.0",
      "layer2.1.conv1", "layer2.1.conv2", "fc"], (["layer1.0", "layer2.0", "layer2.1"], "conv1", "conv2")),
    (["linear0", "linear1", "linear2", "head"], None),  # an MLP: a chain
    (["net.0", "net.2", "net.4"], None),  # a Sequential's layers are numbered, but each is one point
    (["t0", "t1", "t2", "head"], None),
    (["enc.layers.0.linear1", "enc.layers.0.linear2", "enc.layers.1.linear1"], None),  # a block of one point
    (["body.0.0", "body.0.2", "body.1.0", "body.1.2"], (["body.0", "body.1"], "0", "2")),  # nested Sequentials
])
def test_blocks_are_read_from_the_probe_points_module_paths(names, blocks):
    from gradflow.summary import blocks_of

    net = blocks_of(names)
    assert (None if net is None else (net.names, net.first, net.output)) == blocks


def test_block_ticks_drop_the_path_every_block_shares_and_name_as_many_as_the_axis_holds():
    # a user's GPT's blocks transformer.h.0 ... h.11 were ticked by their whole path, run together into
    # "transformertransformer..." under the axis
    import matplotlib.pyplot as plt

    from gradflow.plots.style import block_labels, tick_blocks
    from gradflow.summary import Blocks

    gpt = [f"transformer.h.{i}" for i in range(12)]
    assert block_labels(gpt) == [f"h.{i}" for i in range(12)]
    assert block_labels(["enc.layers.0", "enc.layers.1"]) == ["layers.0", "layers.1"]
    for own in (["b0", "b1"], ["s1.b1", "s1.b2", "s2.b1"], ["layer1.0", "layer2.0"]):  # nothing every one shares
        assert block_labels(own) == own
    fig, ax = plt.subplots()
    try:
        tick_blocks(ax.xaxis, Blocks(gpt, list(range(1, 37, 3)), "attn.c_attn", "mlp.c_proj"))
        assert [t.get_text() for t in ax.get_xticklabels()] == [f"h.{i}" for i in range(12)]
        long = [f"model.encoder.block_number.{i}" for i in range(12)]  # (block_number.10: 15 characters)
        tick_blocks(ax.xaxis, Blocks(long, list(range(1, 37, 3)), "attn", "mlp"))
        shown = [t.get_text() for t in ax.get_xticklabels()]
        assert shown == [f"block_number.{i}" for i in range(0, 12, 3)] and len(ax.xaxis.get_minorticklocs()) == 12 - 4
    finally:
        plt.close(fig)
