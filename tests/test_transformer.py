"""model=transformer: probe values against plain autograd, forward order, the init schemes, the token
datasets, the warm-up schedule, the CLI (run, sweep) and bad input."""

from __future__ import annotations

import copy
import math
from typing import Callable

import numpy as np
import pandas as pd
import pytest
import torch

from gradflow import activations
from gradflow import data as datasets
from gradflow import models
from gradflow.config import compose, train_size
from gradflow.models.init import initialize
from gradflow.models.custom import activation_kind
from gradflow.probes.core import Probes
from gradflow.textdata import IGNORE, associative_recall, char_windows, pydoc_text
from gradflow.train import Batches, make_optimizer, train
from tests.conftest import execute_job

TINY_TF = ["model=transformer", "model.depth=2", "model.d_model=8", "model.heads=2", "model.mlp_ratio=2",
           "train.steps=2", "train.batch_size=8", "probe.every=1", "train.eval_every=1"]
TINY_CHARS = ["data=chars", "data.T=12", "data.n_train=32", "data.n_test=16"]


def setup(overrides):
    cfg = compose(overrides)
    torch.manual_seed(cfg.seed)
    data = datasets.build(cfg.data, torch.device("cpu"))
    model = models.build(cfg, data.input_shape, data.n_classes, per_step=data.task in ("per_step", "next_token"),
                         vocab=data.vocab)
    auto = cfg.model.activation == "auto"  # model=custom: each activation module's own kind
    initialize(model, cfg.init, activation_kind(model) if auto else cfg.model.activation)
    return cfg, data, model


def reference_loss(out, y, task):
    """The batch-mean loss, written out by hand: log-softmax picked at the targets, averaged over scored cells."""
    logp = out.log_softmax(-1)
    if task == "classification":
        return -logp.gather(1, y[:, None]).mean()
    scored = y != IGNORE
    return -logp.gather(-1, y.clamp(min=0)[..., None]).squeeze(-1)[scored].mean()


def retaining(outputs: dict, k) -> Callable:
    """A forward hook that keeps its module's output in `outputs[k]`, its gradient retained (dL/dz)."""
    def hook(module, inputs, z):
        z.retain_grad()
        outputs[k] = z
    return hook


def check_probes_against_autograd(cfg, data, model, behind: dict[str, list[str]] | None = None):
    """Train with probes, replay the same batches on an unprobed copy with retain_grad on every probe
    point's output, and compare every probed value (and which cells are masked). `behind`: a point's parameters
    (by name in its layer) its weight is made from (a parametrized one's), whose joint norms its weight
    quantities are."""
    reference = copy.deepcopy(model)
    auto = cfg.model.activation == "auto"
    probes = Probes(model, None if auto else cfg.model.activation)
    quantities = probes.quantities
    result = train(model, data, cfg, probes)
    probes.remove()
    assert result.status == "ok" and result.probe_steps == list(range(cfg.train.steps + 1))
    opt = make_optimizer(reference.parameters(), cfg.optim)
    batches = Batches(len(data.x_train), cfg.train.batch_size, cfg.seed, "cpu")
    points = reference.probe_points
    by_module = {a.torch_name: a for a in activations.ACTIVATIONS.values()}
    for step, (values, mask) in enumerate(zip(result.probe_values, result.probe_masks)):
        outputs, acts = {}, {}
        hooks = [p.layer.register_forward_hook(retaining(outputs, k)) for k, p in enumerate(points)]
        hooks += [p.activation.register_forward_hook(lambda m, i, y, k=k: acts.update({k: y.detach()}))
                  for k, p in enumerate(points) if p.activation is not None]
        idx = batches.next()
        loss = reference_loss(reference(data.x_train[idx]), data.y_train[idx], data.task)
        opt.zero_grad()
        loss.backward()
        for h in hooks:
            h.remove()
        weights = [[p.layer.get_parameter(n) for n in behind[p.name]] if p.name in (behind or {}) else
                   [p.layer.weight] if getattr(p.layer, "weight", None) is not None and p.layer.weight.dim() >= 2
                   else None for p in points]
        weighted = [w is not None for w in weights]
        before = [[t.detach().clone() for t in w] if w else None for w in weights]
        if step < cfg.train.steps:
            opt.step()
        for k, p in enumerate(points):
            got, ok = dict(zip(quantities, values[k])), dict(zip(quantities, mask[k]))
            z = outputs[k]
            expect = {"signal_norm": (z.shape[0] * (z.grad**2).sum()).sqrt()}
            if weighted[k]:  # (several tensors: the norm of them all)
                expect["grad_norm"] = _norm([w.grad for w in weights[k]])
                expect["weight_norm"] = _norm(before[k])
                if step < cfg.train.steps:
                    expect["update_ratio"] = (_norm([w.detach() - b for w, b in zip(weights[k], before[k])])
                                              / _norm(before[k]))
            if getattr(p.layer, "bias", None) is not None:
                expect["bias_grad_norm"] = torch.linalg.vector_norm(p.layer.bias.grad)
            if k in acts:
                y = acts[k]
                act = by_module[type(p.activation).__name__] if auto else activations.get(cfg.model.activation)
                expect["act_mean"], expect["act_std"] = y.mean(), y.std()
                if act.saturation:
                    expect["act_saturated"] = ((y < act.saturation[0]) | (y > act.saturation[1])).float().mean()
                if act.can_die:
                    expect["act_dead"] = (y == 0).float().mean()
            for q, v in expect.items():
                assert ok[q], (step, p.name, q)
                assert got[q] == pytest.approx(float(v), rel=1e-4, abs=1e-7), (step, p.name, q)
            # what does not apply is masked, never a made-up number
            assert {q for q in quantities if ok[q]} == set(expect), (step, p.name)
    return result


def _norm(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.linalg.vector_norm(torch.cat([t.reshape(-1) for t in tensors]))


def forward_order(model, x) -> list[str]:
    """Probe point names in the order their modules first run in one forward pass."""
    name = {id(p.layer): p.name for p in model.probe_points}
    seen: list[str] = []
    hooks = [p.layer.register_forward_hook(lambda m, i, o: seen.append(name[id(m)]) if name[id(m)] not in seen else None)
             for p in model.probe_points]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return seen


CASES = {
    "pre-layernorm-gelu-chars": [*TINY_CHARS],
    "post-rmsnorm-relu-adam-recall": ["data=recall", "data.pairs=3", "data.queries=2", "data.n_keys=5",
                                      "data.n_values=4", "data.n_train=32", "data.n_test=16", "model.ln=post",
                                      "model.norm_kind=rmsnorm", "model.activation=relu", "optim=adam"],
    "none-alpha-tanh-copy": ["data=copy", "data.T=4", "data.copy_len=2", "data.n_symbols=3", "data.n_train=32",
                             "data.n_test=16", "model.ln=none", "model.alpha=inv_sqrt_depth", "model.activation=tanh"],
    "pre-classify-mnist1d-gpt2": ["model.activation=sigmoid", "init=gpt2"],
}


@pytest.mark.parametrize("case", list(CASES))
def test_transformer_probe_values_equal_plain_autograd(case):
    cfg, data, model = setup([*TINY_TF, *CASES[case]])
    check_probes_against_autograd(cfg, data, model)


def test_probe_points_are_named_by_block_and_role_in_forward_order():
    cfg, data, model = setup([*TINY_TF, *TINY_CHARS, "model.depth=3"])
    names = [p.name for p in model.probe_points]
    block = ["attn.qkv", "attn.out", "attn.resid", "mlp.in", "mlp.out", "resid"]
    assert names == ["tok_emb", "pos_emb", *(f"b{i}.{r}" for i in range(3) for r in block), "head"]
    assert forward_order(model, data.x_train[:2]) == names
    # the residual-stream states carry no weight; every other point owns a weight matrix
    assert [p.name for p in model.probe_points if getattr(p.layer, "weight", None) is None] == \
        [f"b{i}.{r}" for i in range(3) for r in ("attn.resid", "resid")]


@pytest.mark.parametrize("ln", ["pre", "post", "none"])
def test_block_computes_the_placement_it_names(ln):
    """One block recomputed from its weights with plain tensor ops."""
    cfg, data, model = setup([*TINY_TF, *TINY_CHARS, f"model.ln={ln}", "model.alpha=0.5", "model.depth=1"])
    b = model.blocks[0]
    x = torch.randn(3, 5, 8)

    def norm(h):
        return torch.nn.functional.layer_norm(h, (8,), eps=1e-5) if ln != "none" else h

    def attn(h):
        q, k, v = (h @ b.attn.qkv.weight.T + b.attn.qkv.bias).split(8, dim=2)
        q, k, v = (t.view(3, 5, 2, 4).transpose(1, 2) for t in (q, k, v))
        scores = (q @ k.transpose(-1, -2)) / 2.0 + torch.full((5, 5), -math.inf).triu(1)
        y = (scores.softmax(-1) @ v).transpose(1, 2).reshape(3, 5, 8)
        return y @ b.attn.out.weight.T + b.attn.out.bias

    def mlp(h):
        u = torch.nn.functional.gelu(h @ b.mlp.fc_in.weight.T + b.mlp.fc_in.bias)
        return u @ b.mlp.fc_out.weight.T + b.mlp.fc_out.bias

    if ln == "post":
        h = norm(x + 0.5 * attn(x))
        expect = norm(h + 0.5 * mlp(h))
    else:
        h = x + 0.5 * attn(norm(x))
        expect = h + 0.5 * mlp(norm(h))
    with torch.no_grad():
        assert torch.allclose(b(x), expect, atol=1e-5)
    has_final_norm = not isinstance(model.norm_f, torch.nn.Identity)
    assert has_final_norm == (ln == "pre")


def test_causal_outputs_do_not_see_the_future():
    cfg, data, model = setup([*TINY_TF, *TINY_CHARS])
    x = data.x_train[:2].clone()
    with torch.no_grad():
        a = model(x)
        x[:, 7:] = (x[:, 7:] + 1) % data.vocab
        b = model(x)
    assert torch.allclose(a[:, :7], b[:, :7]) and not torch.allclose(a[:, 7:], b[:, 7:])


def test_the_same_token_at_every_position_gives_each_position_its_own_output():
    """Causal attention over identical tokens is the same at every position but for the position embedding:
    without it every position's output would be equal."""
    cfg, data, model = setup([*TINY_TF, *TINY_CHARS])
    x = torch.full((2, 12), 3, dtype=torch.int64)
    with torch.no_grad():
        out = model(x)  # (2, 12, vocab)
        assert not torch.allclose(out[:, 0], out[:, 1], atol=1e-4)
        model.pos_emb.weight.zero_()
        out = model(x)
    assert torch.allclose(out[:, :1].expand_as(out), out, atol=1e-5)  # the control: no position, no difference


def test_a_sequence_classifier_reads_the_last_position_which_sees_every_token():
    """One output per sequence is the per-position model's output at the last position: it changes with the
    last token (the first position's could not)."""
    cfg = compose(["model=transformer", "model.depth=2", "model.d_model=8", "model.heads=2", "data=gaussian"])
    torch.manual_seed(0)
    one = models.build(cfg, (10, 3), 4)
    every = models.build(cfg, (10, 3), 4, per_step=True)
    every.load_state_dict(one.state_dict())
    x = torch.randn(5, 10, 3)
    with torch.no_grad():
        assert torch.allclose(one(x), every(x)[:, -1], atol=1e-6)
        changed = x.clone()
        changed[:, -1] += 1.0
        assert not torch.allclose(one(x), one(changed), atol=1e-4)


def test_gpt2_init_and_keep():
    cfg, data, model = setup([*TINY_TF, *TINY_CHARS, "model.depth=8", "model.d_model=64", "model.heads=4",
                              "init=gpt2"])
    residual = {id(m) for b in model.blocks for m in (b.attn.out, b.mlp.fc_out)}
    for p in model.probe_points:
        w = getattr(p.layer, "weight", None)
        if w is None:
            continue
        std = 0.02 / math.sqrt(2 * 8) if id(p.layer) in residual else 0.02
        assert w.std().item() == pytest.approx(std, rel=0.1), p.name
        if getattr(p.layer, "bias", None) is not None:
            assert torch.count_nonzero(p.layer.bias) == 0
    torch.manual_seed(0)
    kept = models.build(cfg, data.input_shape, data.n_classes, per_step=True, vocab=data.vocab)
    before = copy.deepcopy(kept.state_dict())
    initialize(kept, compose(["init=keep"]).init, "gelu")
    assert all(torch.equal(before[k], v) for k, v in kept.state_dict().items())


def test_every_init_scheme_applies_to_the_transformer():
    for scheme in ("standard", "xavier_uniform", "kaiming_normal", "lecun_normal", "orthogonal", "meanfield",
                   "delta_orthogonal"):
        cfg, data, model = setup([*TINY_TF, *TINY_CHARS, f"init={scheme}"])
        qkv = model.blocks[0].attn.qkv.weight
        if scheme == "lecun_normal":  # N(0, 1/fan_in)
            assert qkv.std().item() == pytest.approx(8**-0.5, rel=0.25)
        with torch.no_grad():
            assert torch.isfinite(model(data.x_train[:2])).all(), scheme


def test_chars_split_by_position_and_targets_shift_by_one():
    text = pydoc_text()
    x, y, xt, yt, vocab = char_windows(text, 16, 0.1, 0, 0)
    assert len(vocab) == len(set(text)) and x.dtype == torch.int64
    cut = int(len(text) * 0.9)
    decode = lambda row: "".join(vocab[i] for i in row.tolist())  # noqa: E731
    assert decode(x[0]) == text[:16] and decode(y[0]) == text[1:17]
    assert decode(x[1]) == text[16:32]  # non-overlapping windows
    assert decode(xt[0]) == text[cut : cut + 16]
    assert len(x) == (cut - 17) // 16 + 1
    # the count the config checks train.batch_size against is this one
    assert train_size(compose(["model=transformer", "data=chars", "data.T=16", "data.test_fraction=0.1",
                               "data.n_train=0"]).data) == len(x)
    x5, *_ = char_windows(text, 16, 0.1, 5, 3)
    assert len(x5) == 5 and decode(x5[-1]) == text[cut - 17 : cut - 1]  # evenly spaced, the last ending at the cut


def test_associative_recall_answers_are_the_queried_values():
    g = torch.Generator().manual_seed(0)
    x, y, vocab = associative_recall(50, 4, 3, 6, 5, g)
    assert x.shape == y.shape == (50, 2 * 4 + 2 * 3 - 1) and vocab == 11
    for row, target in zip(x.tolist(), y.tolist()):
        pairs = dict(zip(row[0:8:2], row[1:8:2]))
        assert len(pairs) == 4 and all(k < 6 <= v < 11 for k, v in pairs.items())
        scored = [(t, a) for t, a in enumerate(target) if a != IGNORE]
        assert [t for t, _ in scored] == [8, 10, 12]
        assert all(pairs[row[t]] == a for t, a in scored)


def test_next_token_loss_and_accuracy_skip_unscored_positions():
    from gradflow.train import loss_and_accuracy

    out = torch.randn(2, 3, 5)
    y = torch.tensor([[IGNORE, 2, IGNORE], [1, IGNORE, 4]])
    y[1, 0] = out[1, 0].argmax()  # one right, the others right by chance or not
    loss, acc = loss_and_accuracy(out, y, "next_token")
    cells = [(0, 1), (1, 0), (1, 2)]
    assert loss.item() == pytest.approx(sum(-out[i, t].log_softmax(-1)[y[i, t]].item() for i, t in cells) / 3, rel=1e-5)
    assert acc.item() == pytest.approx(sum(int(out[i, t].argmax() == y[i, t]) for i, t in cells) / 3)


def test_cli_run_and_sweep(cli, results):
    out = cli("run", *TINY_TF, *TINY_CHARS, "probe.every=0", "threads=1", f"results={results}", "name=tf")
    assert out.exit_code == 0, out.output
    layers = pd.read_parquet(next((results / "tf").glob("*/layers.parquet")))
    assert list(layers[(layers["step"] == 0) & (layers["quantity"] == "signal_norm")].sort_values("layer")["name"])[:3] \
        == ["tok_emb", "pos_emb", "b0.attn.qkv"]
    assert layers[layers["name"] == "b1.resid"]["quantity"].unique().tolist() == ["signal_norm"]
    out = cli("sweep", *TINY_TF, *TINY_CHARS, "model.ln=pre,post", "threads=1", f"results={results}", "--name", "tfs")
    assert out.exit_code == 0, out.output
    from gradflow import load

    df = load(results / "tfs")
    assert set(df["model.ln"]) == {"pre", "post"} and df["value"].notna().all()


@pytest.fixture(scope="module")
def two_depths(tmp_path_factory):
    """A folder of two tiny transformers, 2 and 4 blocks deep (one step each), that the depth-sweep tests read."""
    results = tmp_path_factory.mktemp("results")
    tf = [o for o in TINY_TF if not o.startswith(("model.depth=", "train.steps="))]
    for d in (2, 4):
        execute_job(results, *tf, f"model.depth={d}", "train.steps=1", *TINY_CHARS, "threads=1", name="depths")
    return results / "depths"


def test_a_depth_sweeps_figures_keep_the_block_ticks_and_call_depth_blocks(two_depths):
    """Nets of several depths disagree at one index only where a shallower one has its head: the blocks'
    ticks stay. A quantity probed at some points only (act_std: after each mlp.in) is ticked where the
    blocks start all the same, and a transformer's depth is labelled as its blocks."""
    from gradflow import load
    from gradflow.plots import figures

    layers = load(two_depths)
    qkv = sorted(layers[layers["name"].str.endswith("attn.qkv")]["layer"].unique())
    for quantity in ("signal_norm", "act_std"):
        fig = figures.profile(layers, quantity, step=0)
        ax = fig.axes[0]
        assert list(ax.get_xticks()) == qkv
        assert [t.get_text() for t in ax.get_xticklabels()] == ["b0", "b1", "b2", "b3"]
        assert "depth (blocks) [model.depth]" in [a.get_ylabel() for a in fig.axes]  # the colour bar's
        fig.canvas.draw()  # the axis label, as long as its one panel is wide, ran off the figure at both sides
        box = ax.xaxis.label.get_window_extent()
        assert 0 <= box.x0 and box.x1 <= fig.bbox.width and box.width <= ax.bbox.width, (box, ax.bbox)
    assert figures.ratio(layers, quantity="signal_norm").axes[0].get_xlabel() == "depth (blocks) [model.depth]"
    # a panel per depth: each ticked at its own net's blocks (the deeper net's ticks named the 2-block net's head
    # b2, at the index where the deeper one's third block starts)
    fig = figures.profile(layers, "signal_norm", step=0, facet="model.depth")
    ticked = [[t.get_text() for t in ax.get_xticklabels()] for ax in fig.axes if ax.get_title()]
    assert ticked == [["b0", "b1"], ["b0", "b1", "b2", "b3"]], ticked


def test_spectrum_of_a_transformer_says_spectra_are_an_mlps(cli, results):
    """probe=full records no Jacobian for a transformer: the error used to tell the user to run probe=full."""
    out = cli("run", *TINY_TF, *TINY_CHARS, "probe=full", "threads=1", f"results={results}", "name=full")
    assert out.exit_code == 0, out.output
    folder = next((results / "full").glob("*/run.json")).parent
    out = cli("plot", str(folder), "--kind", "spectrum")
    assert out.exit_code == 1 and "Traceback" not in out.output
    assert "Jacobian spectra are recorded for model=mlp only, and its runs are model=transformer" in \
        " ".join(out.output.split()), out.output
    # the histograms: every block's activations drawn (at its mlp.in), though the 15 points are thinned to 9
    from gradflow import load
    from gradflow.plots import figures

    fig = figures.hist(load(folder, table="hist"))
    activations = [ln for ln in fig.axes[0].get_lines() if str(ln.get_gid()).startswith("series:")]
    assert fig.axes[0].get_title() == "Activation values" and len(activations) == 2


def test_a_transformer_of_one_block_has_no_chi1_fit():
    # its points fitted per layer read chi1 586 (3 layers, 3-5) beside "-" at two blocks and 0.94 at three
    from gradflow import store
    from gradflow.summary import rate

    def layers(names):
        return pd.DataFrame({store.STEP: 0, store.LAYER: range(len(names)), store.NAME: names,
                             store.QUANTITY: "signal_norm", store.VALUE: [10.0 ** -i for i in range(len(names))]})

    one = ["tok_emb", "pos_emb", "b0.attn.qkv", "b0.attn.out", "b0.attn.resid", "b0.mlp.in", "b0.mlp.out",
           "b0.resid", "head"]  # (gradflow's transformer at model.depth=1)
    assert math.isnan(rate(layers(one), "signal_norm")[0])
    mlp = [f"linear{i}" for i in range(11)] + ["head"]  # (a chain: fitted per layer, the factor 10² a layer)
    assert rate(layers(mlp), "signal_norm")[0] == pytest.approx(100.0)


def test_chi1_of_a_transformer_is_per_block_over_the_residual_stream(cli, results):
    """A fit over every probe point mixed the residual stream with the smaller signals inside the branches
    (qkv, mlp.in): the growth factor is per block, over the blocks' outputs b#.resid only."""
    import json

    import numpy as np

    tf = [o for o in TINY_TF if not o.startswith("model.depth=")]
    out = cli("run", *tf, "model.depth=5", *TINY_CHARS, "threads=1", f"results={results}", "name=blocks")
    assert out.exit_code == 0, out.output
    run = next((results / "blocks").glob("*/run.json")).parent
    layers = pd.read_parquet(run / "layers.parquet")
    s = layers[(layers["step"] == 0) & (layers["quantity"] == "signal_norm")].set_index("name")["value"]
    resid = np.array([s[f"b{i}.resid"] for i in range(5)])
    expected = math.exp(-np.polyfit(np.arange(5), 2 * np.log(resid), 1)[0])
    summary = json.loads((run / "run.json").read_text())["summary"]
    assert summary["chi1_layers"] == "5 blocks, resid"
    assert summary["chi1_measured"] == pytest.approx(expected, rel=1e-9)
    listed = cli("ls", str(results / "blocks"), "--wide")
    assert "5 blocks, resid" in listed.output and "per block, not per layer" in listed.output, listed.output
    flat = " ".join(listed.output.split())  # (the fit's note said "layers fitted (first-last)" above "5 blocks")
    assert "chi1 fit = blocks fitted and the point fitted" in flat and "(first-last)" not in flat, listed.output
    # at 80 columns, where the fit column is left out, the note still says chi1 is per block
    narrow = cli("ls", str(results / "blocks"))
    assert "chi1 fit" in narrow.output.split("not shown")[-1] and "per block, not per layer" in narrow.output
    # the weight gradient, which the stream's points lack, per block too: at each block's mlp.out (it was a
    # per-layer fit over qkv, out, mlp.in and mlp.out mixed)
    from gradflow.summary import rate

    g = layers[(layers["step"] == 0) & (layers["quantity"] == "grad_norm")].set_index("name")["value"]
    outs = np.array([g[f"b{i}.mlp.out"] for i in range(5)])
    value, fitted = rate(layers, "grad_norm")
    assert fitted == "5 blocks, mlp.out"
    assert value == pytest.approx(math.exp(-np.polyfit(np.arange(5), 2 * np.log(outs), 1)[0]), rel=1e-9)
    listed = cli("ls", str(results / "blocks"), "--rate", "grad_norm", "--wide")
    flat = " ".join(listed.output.split())
    assert "5 blocks, mlp.out" in flat and "for a quantity the stream lacks (grad_norm), at each block's last" in flat


@pytest.fixture(scope="module")
def small_mlp(tmp_path_factory):
    """One 3-layer MLP run (one step) that the transformer's tick tests draw beside it."""
    return execute_job(tmp_path_factory.mktemp("results"), "model.depth=3", "train.steps=1", "model.width=8",
                       "data=gaussian", "threads=1", name="mlp")


@pytest.mark.parametrize("depth, named", [(3, [0, 1, 2]), (14, list(range(0, 14, 2)))])
def test_profile_and_heatmap_tick_a_transformer_at_its_blocks(run_job, small_mlp, depth, named):
    """Bare indices 0..6 depth + 2 said nothing of where a block starts: the probe-point axis is ticked at
    each block's first point (b#.attn.qkv) and named by block, every other one past 12 blocks."""
    from gradflow import load
    from gradflow.plots import figures

    tf = [o for o in TINY_TF if not o.startswith(("model.depth=", "train.steps="))]
    run = run_job(*tf, f"model.depth={depth}", "train.steps=1", *TINY_CHARS, "threads=1", name=f"ticks{depth}")
    layers = load(run)
    qkv = sorted(layers[layers["name"].str.endswith("attn.qkv")]["layer"].unique())
    assert len(qkv) == depth
    fig = figures.profile(layers, "signal_norm", step=0)
    ax = fig.axes[0]
    assert list(ax.get_xticks()) == [qkv[i] for i in named]
    assert [t.get_text() for t in ax.get_xticklabels()] == [f"b{i}" for i in named]
    assert sorted([*ax.get_xticks(), *ax.xaxis.get_minorticklocs()]) == qkv  # (a minor tick under a major is dropped)
    assert "each block's first (attn.qkv)" in ax.get_xlabel().replace("\n", " ")
    heat = figures.heatmap(layers, quantity="grad_norm").axes[0]
    assert [t.get_text() for t in heat.get_yticklabels()] == [f"b{i}" for i in named]
    # the residual stream (b#.attn.resid, b#.resid) bold through the faint sawtooth of the points inside the
    # blocks, which swing by decades between qkv, mlp.in and the stream: its values as recorded
    at0 = layers[(layers["step"] == 0) & (layers["quantity"] == "signal_norm")].sort_values("layer")
    resid = at0[at0["name"].str.endswith(".resid")]
    assert len(resid) == 2 * depth
    (stream,) = [ln for ln in ax.get_lines() if str(ln.get_gid()).startswith("stream:")]
    assert list(stream.get_xdata()) == list(resid["layer"]) and np.allclose(stream.get_ydata(), resid["value"])
    (every,) = [ln for ln in ax.get_lines() if str(ln.get_gid()).startswith("series:")]
    assert len(every.get_xdata()) == len(at0) and every.get_alpha() < stream.get_alpha()
    assert "residual stream (*.resid points)" in [t.get_text() for lg in fig.legends for t in lg.get_texts()]
    # the title names the norm placement (xiong2020's post-LN and pre-LN figures had one title)
    assert "pre-LN" in fig.get_suptitle() and "post-LN" in figures.profile(
        layers.assign(**{"model.ln": "post"}), "signal_norm", step=0).get_suptitle()
    # an activation statistic, none at a block's qkv: its first point (b0.mlp.in) sat left of b1's tick with b0's
    # out of view, unlabelled
    acts = figures.profile(layers, "act_std", step=0).axes[0]
    first = layers[(layers["quantity"] == "act_std") & (layers["step"] == 0)]["layer"].min()
    assert acts.get_xlim()[0] <= qkv[0] < first and qkv[0] in list(acts.get_xticks()), acts.get_xlim()
    # its heatmap: a row for each point with a value, named (4 of a 4-block net's 27 were 23 grey rows between
    # 4 thin stripes); the cells are those points' values
    heat = figures.heatmap(layers, quantity="act_std")
    act = layers[layers["quantity"] == "act_std"]
    with_act = act.groupby("layer")["name"].first()
    labels = [t.get_text() for t in heat.axes[0].get_yticklabels()]
    assert labels == list(with_act) and all(n.endswith("mlp.in") for n in labels)
    assert f"{len(with_act)} of its {layers['layer'].nunique()} have a value" in heat.axes[0].get_ylabel().replace("\n", " ")
    cells = heat.data["cells"]
    assert sorted(cells["layer"].unique()) == list(with_act.index) and len(cells) == len(act)
    grads = figures.profile(layers, "grad_norm", step=0).axes[0]  # (the stream has no weights: no stream line)
    assert not [ln for ln in grads.get_lines() if str(ln.get_gid()).startswith("stream:")]
    mlp = load(small_mlp)
    assert [t.get_text() for t in figures.profile(mlp, "signal_norm", step=0).axes[0].get_xticklabels()
            if t.get_text()][:2] == ["0", "1"]
    # a transformer drawn beside an MLP: the MLP's points sat under the transformer's block ticks (b0, b1, ...)
    both = figures.profile(pd.concat([layers, mlp], ignore_index=True), "signal_norm", step=0).axes[0]
    ticks = [t.get_text() for t in both.get_xticklabels() if t.get_text()]
    assert ticks and all(t.lstrip("−-").isdigit() for t in ticks), ticks  # layer indices, no block names
    assert "block" not in both.get_xlabel()
    # ... and the MLP's line is a plain one: it was drawn faint, bold only at the transformer's stream indices
    mixed = figures.profile(pd.concat([layers.assign(run="tf"), mlp.assign(run="mlp")], ignore_index=True),
                            "signal_norm", step=0)  # (two runs of one folder: their own names)
    drawn = [ln for ax in mixed.axes for ln in ax.get_lines()]
    streams = [ln for ln in drawn if str(ln.get_gid()).startswith("stream:")]
    assert len(streams) == 1 and list(streams[0].get_xdata()) == list(resid["layer"])
    (plain,) = [ln for ln in drawn if len(ln.get_xdata()) == 4]  # (the MLP's 4 points)
    (faint,) = [ln for ln in drawn if len(ln.get_xdata()) == len(at0)]
    assert plain.get_alpha() > faint.get_alpha() and plain.get_linewidth() > faint.get_linewidth()


@pytest.mark.parametrize("args, words", [
    (["model.heads=3"], ["model.heads=3 does not divide model.d_model=8; choices: 1, 2, 4, 8"]),
    (["model.ln=middle"], ["model.ln=", "middle", "is not allowed; choices: pre, post, none"]),
    (["model.norm_kind=batchnorm"], ["model.norm_kind=", "is not allowed; choices: layernorm, rmsnorm"]),
    (["model.alpha=big"], ["model.alpha=", "big", "is not allowed"]),
    (["norm=layernorm"], ["norm=layernorm does not apply to model=transformer"]),
    (["data.T=0"], ["data.T=0 must be >= 1"]),
])
def test_bad_transformer_input_is_one_line(cli, results, args, words):
    keys = {a.split("=")[0] for a in args}  # (given once: a replaced key's note would be a line of its own)
    base = [o for o in [*TINY_TF, *TINY_CHARS] if o.split("=")[0] not in keys]
    assert_one_line(cli("run", *base, *args, f"results={results}"), results, *words)


def assert_one_line(out, results, *words: str) -> None:
    """Bad input: exit 1, one line containing every one of `words`, no traceback, nothing written."""
    assert out.exit_code == 1
    lines = [ln for ln in out.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and all(w in lines[0] for w in words), out.output
    assert "Traceback" not in out.output
    assert not results.exists() or not any(results.rglob("*"))


def test_token_data_on_a_family_without_embeddings_is_one_line(cli, results):
    out = cli("run", "model=mlp", *TINY_CHARS, "train.batch_size=8", f"results={results}")
    assert out.exit_code == 1 and "data=chars gives token ids: use model=transformer or model=custom" in out.output


def test_a_depth_sweeps_profile_marks_each_nets_head_where_a_deeper_net_has_a_block(two_depths):
    """Overlaid, nets of several depths share the deepest one's block ticks: the 2-block net's head sits at the
    4-block net's b2 tick, and its last point, a spike there, read as its third block. Each net's head is
    marked, and the legend says what the mark is."""
    from gradflow import load
    from gradflow.plots import figures

    layers = load(two_depths)
    heads = layers[layers["name"] == "head"].groupby("model.depth")["layer"].first()
    for quantity in ("grad_norm", "signal_norm"):
        fig = figures.profile(layers, quantity, step=0)
        ax = fig.axes[0]
        marks = [ln for ln in ax.get_lines() if (ln.get_gid() or "").startswith("head:")]
        assert sorted(x for ln in marks for x in ln.get_xdata()) == sorted(heads), [ln.get_xdata() for ln in marks]
        at = layers[(layers["step"] == 0) & (layers["quantity"] == quantity) & (layers["name"] == "head")]
        assert sorted(y for ln in marks for y in ln.get_ydata()) == pytest.approx(sorted(at["value"]))
        texts = [t.get_text() for leg in fig.legends for t in leg.get_texts()]
        assert "output head (each net's last point)" in texts, texts
    # one depth, or a panel per depth: the head is the axis' last point, said by its label, and no mark is added
    for fig in (figures.profile(layers[layers["model.depth"] == 4], "grad_norm", step=0),
                figures.profile(layers, "grad_norm", step=0, facet="model.depth")):
        assert not [ln for ax in fig.axes for ln in ax.get_lines() if (ln.get_gid() or "").startswith("head:")]
