"""CNN, ResNet, MLP and recurrent families: the paper's sizes, shapes, probe points, gradient flow at init, every init scheme."""

from __future__ import annotations

import copy
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

    job = run_job("model=resnet20", "data=gaussian", "data.n_train=128", "data.n_test=64", "train.steps=1",
                  "threads=1", name="blocks")
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


# each scheme's weight variance as its formula gives it: (fan_in, fan_out, cfg.init, activation gain) -> Var(w)
INIT_VARIANCE = {
    "standard": lambda fi, fo, c, g: 1 / (3 * fi),
    "xavier_uniform": lambda fi, fo, c, g: c.gain**2 * 2 / (fi + fo),
    "xavier_normal": lambda fi, fo, c, g: c.gain**2 * 2 / (fi + fo),
    "kaiming_uniform": lambda fi, fo, c, g: g**2 / (fi if c.mode == "fan_in" else fo),
    "kaiming_normal": lambda fi, fo, c, g: g**2 / (fi if c.mode == "fan_in" else fo),
    "lecun_normal": lambda fi, fo, c, g: 1 / fi,
    "gpt2": lambda fi, fo, c, g: 0.02**2,
    "meanfield": lambda fi, fo, c, g: c.sw2 / fi,
}


@pytest.mark.parametrize("init, extra", [(name, []) for name in INIT_VARIANCE]
                         + [("kaiming_normal", ["init.mode=fan_out"]), ("kaiming_uniform", ["init.mode=fan_out"]),
                            ("xavier_normal", ["init.gain=1.7"]), ("meanfield", ["init.sw2=1.8", "init.sb2=0.3"])])
def test_each_init_schemes_measured_weight_variance_matches_its_formula_on_non_square_layers(init, extra):
    """Fan-in and fan-out differ (a Linear 150 -> 400, a Conv1d 12 -> 40 of kernel 5: fans 60 and 200), so a
    scheme that read the wrong fan, a conv's fans without its kernel, or a uniform's bound for its std
    is off by a factor of 3 or more; the bias is 0, or N(0, sb2) for meanfield."""
    from gradflow.activations import get
    from gradflow.models.init import init_layer

    cfg = compose(["data=gaussian", "model.activation=relu", f"init={init}", *extra])
    torch.manual_seed(0)
    biases = []
    for layer, (fi, fo) in [(torch.nn.Linear(150, 400), (150, 400)), (torch.nn.Conv1d(12, 40, 5), (60, 200))]:
        layer.bias.data.fill_(1.0)
        init_layer(layer.weight.data, layer.bias.data, cfg.init, "relu")
        expected = INIT_VARIANCE[init](fi, fo, cfg.init, get("relu").gain)
        assert layer.weight.pow(2).mean().item() == pytest.approx(expected, rel=0.05), layer
        biases.append(layer.bias.detach())
    bias = torch.cat(biases)  # 440 values
    if init == "meanfield":
        assert bias.pow(2).mean().item() == pytest.approx(cfg.init.sb2, rel=0.25)
    else:
        assert torch.count_nonzero(bias) == 0


# --- the MLP's structure: depth, residual adds, branch shape, norm placement ---------------------------
MLP_TINY = ["model=mlp", "model.width=16", "model.activation=relu"]


@pytest.mark.parametrize("depth, extra", [(5, []), (5, ["model.skip=residual", "model.branch_layers=2"]),
                                          (7, ["model.skip=residual", "model.branch_layers=3"])])
def test_mlp_depth_counts_its_hidden_weight_layers(depth, extra):
    net = _model(*MLP_TINY, f"model.depth={depth}", *extra, input_shape=(12,), n_classes=3)
    linears = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == depth + 1 and len(net.probe_points) == depth + 1  # the head too
    assert _n_params(net) == (12 * 16 + 16) + (depth - 1) * (16 * 16 + 16) + (16 * 3 + 3)


@pytest.mark.parametrize("alpha, scale", [("0.3", 0.3), ("inv_sqrt_depth", 5 ** -0.5), ("1.0", 1.0)])
@pytest.mark.parametrize("m", [1, 2])
def test_mlp_residual_block_adds_alpha_times_its_branch_to_its_input(alpha, scale, m):
    """block(h) - h is the branch (its layers run one after the other) times alpha; a one-layer relu branch
    ends in its relu (>= 0), a longer one at its last linear layer (either sign)."""
    net = _model(*MLP_TINY, "model.depth=5", "model.skip=residual", f"model.branch_layers={m}",
                 f"model.alpha={alpha}", input_shape=(12,), n_classes=3)
    h = torch.randn(64, 16)
    with torch.no_grad():
        for block in net.hidden[1:]:
            branch = h
            for layer in block.layers:
                branch = layer(branch)
            added = block(h) - h
            assert torch.allclose(added, scale * branch, atol=1e-6)
            assert (added.min() >= 0) == (m == 1)
    assert not net.hidden[0].residual  # the first layer changes the width: no skip


def test_mlp_norm_comes_between_the_linear_layer_and_its_activation():
    """norm=layernorm, relu: every hidden output is relu(layernorm(Wx + b)): >= 0, half zeros, never a
    normalized (mean 0) vector."""
    net = _model(*MLP_TINY, "model.depth=3", "norm=layernorm", input_shape=(12,), n_classes=3)
    h = torch.randn(256, 12)
    with torch.no_grad():
        for block in net.hidden:
            z = block.layers[0].layer(h)
            h = block(h)
            assert torch.allclose(h, torch.relu(torch.nn.functional.layer_norm(z, (16,), eps=1e-5)), atol=1e-5)
            assert h.min() >= 0


def test_mlp_fixup_starts_as_its_input_layer_and_scales_all_but_each_branchs_last_layer():
    """Fixup, L = 3 blocks of m = 3 layers: post_init multiplies the first two layers of each branch by
    L^(-1/(2m-2)) = 3^(-1/4) and zeroes the last and the head: the output is 0 and the features the input
    layer's."""
    overrides = [*MLP_TINY, "model.depth=10", "model.skip=residual", "model.branch_layers=3", "model.variant=fixup",
                 "init=kaiming_normal"]
    net = _model(*overrides, input_shape=(12,), n_classes=3, init=False)
    cfg = compose(["data=gaussian", *overrides])
    initialize(net, cfg.init, "relu")
    before = copy.deepcopy(net)
    net.post_init(cfg)
    blocks, was = net.hidden[1:], before.hidden[1:]
    assert len(blocks) == 3
    for b, b0 in zip(blocks, was):
        for layer, layer0 in zip(b.layers[:-1], b0.layers[:-1]):
            assert torch.allclose(layer.layer.weight, 3 ** -0.25 * layer0.layer.weight)
        assert torch.count_nonzero(b.layers[-1].layer.weight) == 0
    assert torch.equal(net.hidden[0].layers[0].layer.weight, before.hidden[0].layers[0].layer.weight)
    x = torch.randn(8, 12)
    with torch.no_grad():
        assert torch.equal(net.features(x), net.hidden[0](x)) and torch.count_nonzero(net(x)) == 0


# --- where the convs stride ---------------------------------------------------------------------------
def _output_shapes(net, x):
    shapes = []
    hooks = [p.layer.register_forward_hook(lambda m, a, out: shapes.append(tuple(out.shape[2:])))
             for p in net.probe_points[:-1]]
    with torch.no_grad():
        net(x)
    for h in hooks:
        h.remove()
    return shapes


def test_a_strided_cnn_strides_its_first_layer_only():
    net = _model("model=cnn", "model.depth=4", "model.channels=4", "model.stride=2", "model.kernel=3",
                 input_shape=(40,))
    assert _output_shapes(net, torch.randn(2, 40)) == [(20,)] * 4


def test_a_resnet_halves_the_resolution_at_the_first_block_of_stages_2_and_3():
    net = _model("model=resnet", "model.depth=19", "model.widths=[4,8,8]", input_shape=(3, 16, 16))
    shapes = dict(zip([p.name for p in net.probe_points[:-1]], _output_shapes(net, torch.randn(2, 3, 16, 16))))
    for s, size in ((1, 16), (2, 8), (3, 4)):
        for b in (1, 2, 3):
            assert shapes[f"s{s}.b{b}.conv1"] == (size, size), (s, b)


# --- the recurrent family's init: per gate, the recurrent gain, the forget gate -----------------------
def _rnn(*overrides):
    return _model(*overrides, "model.hidden=32", input_shape=(6, 20), n_classes=3)


@pytest.mark.parametrize("forget_bias", [1.0, 3.0])
def test_lstm_forget_bias_sets_the_fraction_of_the_cell_state_kept_at_init(forget_bias):
    """From x = 0, h = 0 the cell state c becomes sigmoid(forget bias) * c (+ i * g, with g = tanh(0) = 0)."""
    net = _rnn("model=lstm", f"model.forget_bias={forget_bias}")
    c = torch.randn(4, 32)
    with torch.no_grad():
        _, c1 = net.cell(torch.zeros(4, 20), (torch.zeros(4, 32), c))
    assert torch.allclose(c1, torch.sigmoid(torch.tensor(forget_bias)) * c, atol=1e-6)


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("recurrent, gain", [("orthogonal", 0.7), ("identity", 1.3), ("gaussian", 1.5)])
def test_recurrent_weights_take_model_gain_and_input_weights_the_init_scheme(kind, recurrent, gain):
    net = _rnn(f"model={kind}", f"model.recurrent_init={recurrent}", f"model.gain={gain}", "init=lecun_normal")
    w_hh = net.cell.weight_hh.detach()  # (gates * 32, 32): one square block per gate
    if recurrent == "gaussian":
        assert w_hh.pow(2).mean().item() == pytest.approx(gain**2 / 32, rel=0.1)
    else:  # orthogonal (identity too): every singular value of every gate's block is the gain
        for block in w_hh.split(32, dim=0):
            assert torch.allclose(torch.linalg.svdvals(block), torch.full((32,), gain), atol=1e-4)
            assert recurrent != "identity" or torch.allclose(block, gain * torch.eye(32))
    w_ih = net.cell.weight_ih.detach()  # every gate's block: LeCun, Var 1 / d_in
    assert w_ih.pow(2).mean().item() == pytest.approx(1 / 20, rel=0.1)
    assert torch.count_nonzero(net.cell.bias_hh) == 0


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_meanfield_init_draws_a_recurrent_cells_input_bias_with_variance_sb2(kind):
    # the run said init.sb2=0.9 and every cell bias was 0: only the head's was drawn
    forget = ["model.forget_bias=2"] if kind == "lstm" else []
    net = _model(f"model={kind}", "init=meanfield", "init.sb2=0.9", "model.hidden=256", *forget,
                 input_shape=(6, 20), n_classes=3)
    b_ih = net.cell.bias_ih.detach()
    gates = b_ih.split(256)
    drawn = torch.cat([g for i, g in enumerate(gates) if not (kind == "lstm" and i == 1)])
    assert drawn.var().item() == pytest.approx(0.9, rel=0.15)
    assert torch.count_nonzero(net.cell.bias_hh) == 0
    if kind == "lstm":  # (the forget gate's: model.forget_bias)
        assert torch.all(gates[1] == 2.0)
    assert torch.count_nonzero(_rnn(f"model={kind}", "init=lecun_normal").cell.bias_ih) == 0  # (other schemes: 0)


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_init_keep_leaves_the_input_weights_as_torch_draws_them(kind):
    """init=keep is "the model's own init": torch's cells draw U(-1/sqrt(hidden), 1/sqrt(hidden)), whose
    variance is 1 / (3 hidden) (it said `init='keep' is not a known scheme` for every recurrent family);
    the recurrent weights still take model.recurrent_init, the family's own key."""
    torch.manual_seed(0)
    net = _rnn(f"model={kind}", "init=keep", "model.recurrent_init=orthogonal", "model.gain=0.7")
    w_ih = net.cell.weight_ih.detach()
    assert w_ih.abs().max().item() <= 32**-0.5
    assert w_ih.pow(2).mean().item() == pytest.approx(1 / (3 * 32), rel=0.1)  # (not LeCun's 1 / 20)
    assert torch.allclose(torch.linalg.svdvals(net.cell.weight_hh.detach()[:32]), torch.full((32,), 0.7), atol=1e-4)
