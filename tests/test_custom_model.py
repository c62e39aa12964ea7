"""model=custom: a user's module from a file in the current folder, its probe points discovered in forward
order, probe values against plain autograd, the real CLI and a sweep, init=keep, and bad input."""

from __future__ import annotations

import json
import re

import sys
import textwrap
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from tests.commands import on_a_terminal
from tests.test_transformer import assert_one_line, check_probes_against_autograd, forward_order, setup

# registered out of forward order (head first), with a ReLU after one layer, a LayerNorm (not an
# activation) after another, a Conv1d, a functional tanh, and a module without weights
MODELS = '''
import torch
import torch.nn as nn


class Net(nn.Module):
    def __init__(self, width=16, d_in=40, n_out=10):
        super().__init__()
        self.head = nn.Linear(width, n_out)
        self.conv = nn.Conv1d(1, 2, 3, padding=1)
        self.body = nn.Sequential(nn.Linear(2 * d_in, width), nn.ReLU(), nn.Linear(width, width), nn.LayerNorm(width))

    def forward(self, x):  # (B, d_in) -> (B, n_out)
        h = self.conv(x.unsqueeze(1)).flatten(1)
        return self.head(torch.tanh(self.body(h)))


class Tagger(nn.Module):
    """Token ids (B, T) -> per-position logits (B, T, vocab)."""
    def __init__(self, vocab, width=8, sparse=False):
        super().__init__()
        self.emb = nn.Embedding(vocab, width, sparse=sparse)
        self.mix = nn.Linear(width, width)
        self.act = nn.GELU()
        self.out = nn.Linear(width, vocab)

    def forward(self, x):
        return self.out(self.act(self.mix(self.emb(x))))


class NoWeights(nn.Module):
    def forward(self, x):
        return x[:, :10]


def not_a_module(width=3):
    return {"width": width}


class Widths(nn.Module):
    """Hidden widths as a list, checked as a careful constructor checks them."""
    def __init__(self, widths=(8,), d_in=40, n_out=10):
        super().__init__()
        if not isinstance(widths, (list, tuple)):
            raise TypeError(f"widths must be a list, got {type(widths).__name__}")
        sizes = [d_in, *widths]
        self.body = nn.Sequential(*[m for a, b in zip(sizes, sizes[1:]) for m in (nn.Linear(a, b), nn.Tanh())])
        self.head = nn.Linear(sizes[-1], n_out)

    def forward(self, x):
        return self.head(self.body(x))
'''


LATE = '''

class Late(Net):
    """Raises at its `at`-th training forward pass (an error well into training)."""
    def __init__(self, at=8):
        super().__init__()
        self.calls, self.at = 0, at

    def forward(self, x):
        if self.training:
            self.calls += 1
            if self.calls == self.at:
                self.fail()
        return super().forward(x)

    def fail(self):
        raise RuntimeError(f"exploded at call {self.calls} [in forward] (from [/data])")


class Stopped(Late):
    """Raises KeyboardInterrupt (a Ctrl-C, as the loop sees it) at its `at`-th training forward pass."""
    def __init__(self, at=2):
        super().__init__(at)

    def fail(self):
        raise KeyboardInterrupt


class Litter(Net):
    """Drops a file of the user's at $LITTER at its first training forward pass (into the run it replaces)."""
    def __init__(self, width=16):
        super().__init__(width)

    def forward(self, x):
        import os
        if self.training and os.environ.get("LITTER"):
            open(os.environ.pop("LITTER"), "w").write("mine")
        return super().forward(x)


class EnvLate(Late):
    """Late, at the pass $LATE_AT says (100 unset): a run whose folder name and settings do not say it fails."""
    def __init__(self):
        import os
        super().__init__(int(os.environ.get("LATE_AT", 100)))


class Exits(Late):
    """Calls sys.exit(3) at its `at`-th training forward pass."""
    def __init__(self, at=3):
        super().__init__(at)

    def fail(self):
        import sys
        sys.exit(3)


class ParsesArgs(Net):
    """Reads its options with argparse from the command line, which is gradflow's (as here)."""
    def __init__(self):
        import argparse
        parser = argparse.ArgumentParser()
        parser.add_argument("--width", type=int, default=16)
        super().__init__(parser.parse_args(["run", "model=custom"]).width)


class MadeInFloat32(Net):
    """Makes a float32 tensor of its own in forward: it trains, and fails in gradcheck's float64."""
    def forward(self, x):
        return super().forward(x) @ torch.eye(10)


class AllFrozen(Net):
    """A pretrained net loaded frozen: no parameter requires grad."""
    def __init__(self):
        super().__init__()
        self.requires_grad_(False)


class Tied(nn.Module):
    """Its output layer uses its input layer's weight (as a GPT's head uses its token embedding's)."""
    def __init__(self, width=40):
        super().__init__()
        self.inp = nn.Linear(40, width)
        self.body = nn.Sequential(nn.Tanh(), nn.Linear(width, width), nn.Tanh(), nn.Linear(width, width), nn.Tanh())
        self.out = nn.Linear(width, 40, bias=False)
        self.out.weight = self.inp.weight

    def forward(self, x):
        return self.out(self.body(self.inp(x)))[:, :10]


class TiedDict(Tied):
    """Tied, its logits in a dict, as a Hugging Face-style model returns them."""
    def forward(self, x):
        return {"logits": super().forward(x)}


class Frozen(nn.Module):
    """A linear probe on a frozen tanh net (requires_grad False), as a fine-tuning study has it."""
    def __init__(self, width=16):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(40, width), nn.Tanh(), nn.Linear(width, width), nn.Tanh())
        self.body.requires_grad_(False)
        self.head = nn.Linear(width, 10)

    def forward(self, x):
        return self.head(self.body(x))


class Unused(nn.Module):
    """A head the forward pass never calls (an auxiliary one of another experiment), and a branch that runs in
    training only, between the first layer and the second."""
    def __init__(self, width=16):
        super().__init__()
        self.l0, self.l1, self.head = nn.Linear(40, width), nn.Linear(width, width), nn.Linear(width, 10)
        self.aux_head = nn.Linear(width, 5)
        self.noise = nn.Linear(width, width)

    def forward(self, x):
        h = torch.tanh(self.l0(x))
        if self.training:
            h = h + 0.5 * torch.tanh(self.noise(h))
        return self.head(torch.tanh(self.l1(h)))


def normed(width=16, d_in=40, n_out=10):
    """Weight norm and spectral norm (torch.nn.utils.parametrizations), and the legacy spectral_norm hook."""
    from torch.nn.utils import parametrizations, spectral_norm
    return nn.Sequential(nn.Linear(d_in, width), nn.Tanh(), parametrizations.weight_norm(nn.Linear(width, width)),
                         nn.Tanh(), spectral_norm(nn.Linear(width, width)), nn.Tanh(),
                         parametrizations.spectral_norm(nn.Linear(width, n_out)))


class Recurrent(nn.Module):
    """A GRU gradflow cannot probe (one call runs every time step) between two layers it does."""
    def __init__(self, width=8):
        super().__init__()
        self.embed, self.gru, self.head = nn.Linear(1, width), nn.GRU(width, width, batch_first=True), nn.Linear(width, 10)

    def forward(self, x):
        return self.head(self.gru(self.embed(x.unsqueeze(-1)))[0][:, -1])
'''


@pytest.fixture
def user_models(tmp_path, monkeypatch):
    """A models file in a fresh current folder; returns its (unique) module name."""
    name = f"user_models_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(MODELS) + textwrap.dedent(LATE))
    monkeypatch.chdir(tmp_path)
    yield name
    sys.modules.pop(name, None)
    if str(tmp_path) in sys.path:
        sys.path.remove(str(tmp_path))


TINY = ["train.steps=2", "train.batch_size=8", "probe.every=1", "train.eval_every=1", "threads=1"]


def test_discovered_points_follow_the_forward_pass(user_models):
    cfg, data, model = setup(["model=custom", f"model.target={user_models}:Net", *TINY])
    names = [p.name for p in model.probe_points]
    assert names == ["conv", "body.0", "body.2", "head"]  # not the registration order (head first)
    assert forward_order(model, data.x_train[:2]) == names
    followers = {p.name: type(p.activation).__name__ if p.activation is not None else None for p in model.probe_points}
    assert followers == {"conv": None, "body.0": "ReLU", "body.2": None, "head": None}  # LayerNorm is no activation
    assert cfg.model.activation == "auto" and cfg.init.name == "keep"


def test_list_constructor_arguments_reach_the_module_as_plain_lists(user_models):
    # Hydra's instantiate handed +model.kwargs.widths=[8,6] over as a ListConfig: a constructor that checks
    # for a list refused it, and the error printed the kwargs as a list
    cfg, data, model = setup(["model=custom", f"model.target={user_models}:Widths", "+model.kwargs.widths=[8,6]", *TINY])
    assert [p.name for p in model.probe_points] == ["body.0", "body.2", "head"]
    assert [model.body[0].out_features, model.body[2].out_features] == [8, 6]


def test_a_built_custom_model_is_handed_back_in_training_mode(user_models):
    """The build's example pass runs in eval mode; the model then trains in train mode (batch norm's batch
    statistics, dropout on)."""
    cfg, data, model = setup(["model=custom", f"model.target={user_models}:Net", *TINY])
    assert model.training and all(m.training for m in model.modules())

@pytest.mark.parametrize("overrides", [
    [":Net", "+model.kwargs.width=6", "init=kaiming_normal"],
    [":Tagger", "+model.kwargs.vocab=9", "data=recall", "data.pairs=2", "data.queries=2", "data.n_keys=4",
     "data.n_values=5", "data.n_train=32", "data.n_test=16", "optim=adam"],
])
def test_custom_probe_values_equal_plain_autograd(user_models, overrides):
    target, *rest = overrides
    cfg, data, model = setup(["model=custom", f"model.target={user_models}{target}", *TINY, *rest])
    check_probes_against_autograd(cfg, data, model)


@pytest.mark.parametrize("optim", ["sgd", "adam"])
def test_parametrized_weights_are_probed_as_the_tensors_they_are_made_from(user_models, optim):
    cfg, data, model = setup(["model=custom", f"model.target={user_models}:normed", *TINY, f"optim={optim}"])
    assert [p.name for p in model.probe_points] == ["0", "2", "4", "6"]
    check_probes_against_autograd(cfg, data, model, behind={
        "2": ["parametrizations.weight.original0", "parametrizations.weight.original1"], "4": ["weight_orig"],
        "6": ["parametrizations.weight.original"]})


@pytest.mark.parametrize("clip", [[], ["train.clip_value=0.01", "train.grad_clip=0.5"]], ids=["plain", "clipped"])
def test_a_model_with_sparse_gradients_trains_and_is_probed_as_its_dense_twin(user_models, clip):
    """nn.Embedding(sparse=True): the loop's gradient norms and the probes take the sparse gradient's
    coalesced values (repeated tokens summed), so the run matches the same model with dense gradients."""
    from gradflow.probes.core import Probes
    from gradflow.train import train

    results = {}
    for sparse in ("true", "false"):
        cfg, data, model = setup(["model=custom", f"model.target={user_models}:Tagger", "+model.kwargs.vocab=9",
                                  f"+model.kwargs.sparse={sparse}", "data=recall", "data.pairs=2", "data.queries=2",
                                  "data.n_keys=4", "data.n_values=5", "data.n_train=32", "data.n_test=16", "optim=sgd",
                                  *TINY, *clip])
        assert model.emb.sparse == (sparse == "true")
        results[sparse] = train(model, data, cfg, Probes(model))  # (activation=auto: each module's own kind)
    got, want = results["true"], results["false"]
    assert got.status == want.status == "ok" and got.probe_steps == want.probe_steps == [0, 1, 2]
    for a, b in zip(got.probe_values, want.probe_values):
        np.testing.assert_allclose(a, b, rtol=1e-4, equal_nan=True)
    grads = {s: [v for step, split, name, v in r.metrics if split == "grad" and name == "emb.weight"]
             for s, r in results.items()}
    assert len(grads["true"]) == 3 and np.allclose(grads["true"], grads["false"], rtol=1e-5) and min(grads["true"]) > 0
    clipped = {s: [v for step, split, name, v in r.metrics if split == "opt" and name == "clipped"]
               for s, r in results.items()}
    assert clipped["true"] == clipped["false"] and (not clip or max(clipped["true"]) > 0)


def test_init_keep_leaves_the_model_and_a_scheme_replaces_it(user_models):
    torch.manual_seed(0)
    _, _, kept = setup(["model=custom", f"model.target={user_models}:Net", *TINY])
    std_keep = kept.body[0].weight.std().item()
    bound = (1 / 80) ** 0.5  # PyTorch's own Linear init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = 80
    assert std_keep == pytest.approx(bound / 3**0.5, rel=0.1)
    _, _, lecun = setup(["model=custom", f"model.target={user_models}:Net", "init=lecun_normal", *TINY])
    assert lecun.body[0].weight.std().item() == pytest.approx(80**-0.5, rel=0.1)
    assert torch.count_nonzero(lecun.body[0].bias) == 0
    assert lecun.body[3].weight.eq(1).all()  # the LayerNorm's 1-D weight is not a weight layer


def test_custom_model_through_the_real_cli_and_a_sweep(cli, user_models, tmp_path):
    results = tmp_path / "results"
    out = cli("run", "model=custom", f"model.target={user_models}:Net", "+model.kwargs.width=12", "train.steps=3",
              "threads=1", f"results={results}", "name=one")
    assert out.exit_code == 0, out.output
    layers = pd.read_parquet(next((results / "one").glob("*/layers.parquet")))
    at0 = layers[layers["step"] == 0]
    assert at0.drop_duplicates("layer").sort_values("layer")["name"].tolist() == ["conv", "body.0", "body.2", "head"]
    # the ReLU's statistics exist for body.0 only; elsewhere those cells are masked (absent), not made up
    assert set(at0[at0["quantity"] == "act_dead"]["name"]) == {"body.0"}
    assert set(at0[at0["quantity"] == "act_mean"]["name"]) == {"body.0"}
    out = cli("sweep", "model=custom", f"model.target={user_models}:Net", "+model.kwargs.width=8,12", "train.steps=3",
              "threads=1", f"results={results}", "--name", "grid")
    assert out.exit_code == 0, out.output
    from gradflow import load

    df = load(results / "grid")
    assert set(df["model.kwargs.width"]) == {8, 12} and df["value"].notna().all()
    out = cli("ls", str(results / "grid"))
    assert out.exit_code == 0 and "ok: 2" in out.output


def test_a_model_that_raises_well_into_training_keeps_what_the_run_measured(cli, user_models, tmp_path):
    """The run is failed, with the error, after the steps it did, and their tables: it said "failed after 0
    steps" and kept config.yaml alone, so `plot` had nothing to draw and `ls` no ratio. The error prints
    as written: square brackets in it are text, not rich markup."""
    from gradflow import load, store

    results = tmp_path / "results"
    out = cli("run", "model=custom", f"model.target={user_models}:Late", "train.steps=12", "probe.every=2",
              "train.eval_every=2", "threads=1", f"results={results}", "name=late")
    assert out.exit_code == 1, out.output  # (a failed run is a failed command)
    assert "failed after 7 steps" in out.output and "RuntimeError: exploded at call 8 [in forward] (from [/data])" in out.output
    (job,) = store.find_runs(results / "late")
    run = store.read_run(job)
    assert (run["status"], run["steps_done"]) == ("failed", 7) and "exploded at call 8" in run["traceback"]
    assert {"layers.parquet", "metrics.parquet"} <= set(run["files"])
    assert sorted(load(job)["step"].unique()) == [0, 2, 4, 6]  # every probed step it finished, no more
    assert sorted(load(job, table="metrics").query("split == 'test'")["step"].unique()) == [0, 2, 4, 6]
    listed = cli("ls", str(results / "late"), "--wide")
    assert "failed" in listed.output and run["summary"]["grad_ratio.init"] > 0


def test_a_model_that_calls_sys_exit_fails_its_run_and_the_sweep_goes_on(cli, user_models, tmp_path, capfd):
    """sys.exit in a model's code (argparse's parse_args() reading gradflow's command line, in its constructor
    or as its module is imported) ended `gradflow run` silently, the run recorded interrupted, and took a
    sweep down with it, its other points never run. It is the run's error now."""
    from gradflow import store

    results = tmp_path / "results"
    long = [o for o in TINY if not o.startswith("train.steps=")] + ["train.steps=6"]
    out = cli("run", "model=custom", f"model.target={user_models}:Exits", *long, f"results={results}", "name=exits")
    assert out.exit_code == 1 and "CodeExited: the model's code called sys.exit(3)" in out.output, out.output
    (job,) = store.find_runs(results / "exits")
    assert store.read_run(job)["status"] == "failed"
    out = cli("run", "model=custom", f"model.target={user_models}:ParsesArgs", f"results={results}")
    assert_last_line(out, "failed to build: CodeExited: the model's code called sys.exit(2): argparse's "
                          "parse_args() exits so on a command line it does not know, gradflow's")
    (tmp_path / "parses_at_import.py").write_text("import argparse\nargparse.ArgumentParser().parse_args(['run'])\n")
    try:
        out = cli("run", "model=custom", "model.target=parses_at_import:Net", f"results={results}")
        assert_last_line(out, "model.target='parses_at_import:Net': importing parses_at_import raised CodeExited: "
                              "the model's code called sys.exit(2)")
    finally:
        sys.modules.pop("parses_at_import", None)
    out = cli("sweep", "model=custom", f"model.target={user_models}:ParsesArgs,{user_models}:Exits,{user_models}:Net",
              *long, f"results={results}", "--name", "exiting")
    assert out.exit_code == 1 and "ok: 1  diverged: 0  failed: 2" in out.output, out.output
    capfd.readouterr()


def assert_last_line(out, said: str) -> None:
    """Exit 1, `said` in the last line (argparse prints its usage and error before it), no traceback."""
    assert out.exit_code == 1 and said in out.output.strip().splitlines()[-1], out.output
    assert "Traceback" not in out.output


def test_a_model_without_a_trainable_parameter_is_one_line(cli, user_models, tmp_path):
    # (each step failed in torch's words, "element 0 of tensors does not require grad"; gradcheck's traceback)
    said = "model=custom: the model has no parameter that requires grad, so there is nothing to train or check"
    for command, results in (("run", [f"results={tmp_path / 'results'}"]), ("gradcheck", [])):
        out = cli(command, "model=custom", f"model.target={user_models}:AllFrozen", *results)
        assert_one_line(out, tmp_path / "results", said)


def test_gradcheck_of_a_model_that_fails_in_float64_is_one_line(cli, user_models, tmp_path):
    """The check runs the model in float64, which its run never does: a tensor it makes in float32 was a
    traceback; now one line saying where it failed. The run itself trains."""
    out = cli("gradcheck", "model=custom", f"model.target={user_models}:MadeInFloat32")
    assert_one_line(out, tmp_path / "results", "the model failed in the check, which runs it in float64 on 8 examples "
                                               "(--batch): RuntimeError: expected m1 and m2 to have the same dtype")
    out = cli("run", "model=custom", f"model.target={user_models}:MadeInFloat32", *TINY,
              f"results={tmp_path / 'results'}")
    assert out.exit_code == 0, out.output


def test_a_frozen_layer_has_no_gradient_cells_rather_than_zeros(cli, user_models, tmp_path):
    """A frozen body's layers take no gradient: their gradient and update cells are masked (absent), not
    0, so the run is not flagged "learned nothing: every hidden weight gradient is exactly 0" (it was,
    while its loss fell) and a profile has no points off the log axis; their activations are measured."""
    from gradflow import load, store

    results = tmp_path / "results"
    out = cli("run", "model=custom", f"model.target={user_models}:Frozen", "train.steps=40", "probe.every=20",
              "threads=1", "optim.lr=0.1", f"results={results}", "name=frozen")
    assert out.exit_code == 0 and "learned nothing" not in out.output, out.output
    (job,) = store.find_runs(results / "frozen")
    assert store.read_run(job)["flags"] == []
    df = load(job)
    by = {q: set(df[df["quantity"] == q]["name"]) for q in df["quantity"].unique()}
    for q in ("grad_norm", "bias_grad_norm", "update_ratio"):
        assert by[q] == {"head"}, (q, by[q])
    assert by["weight_norm"] == {"body.0", "body.2", "head"} and by["act_std"] == {"body.0", "body.2"}
    assert (df[df["quantity"] == "grad_norm"]["value"] > 0).all()
    # the printed table keeps the frozen layers as rows of "-" and says why (they were left out without a word)
    rows = [ln.split("│")[2].strip() for ln in out.output.splitlines() if ln.startswith("│")]
    assert rows == ["body.0", "body.2", "head"], out.output
    assert "- at body.0 and 1 more: frozen (requires_grad=False)" in " ".join(out.output.split()), out.output


def test_a_layer_the_eval_pass_does_not_run_keeps_its_place_and_an_unused_one_is_masked(cli, user_models, tmp_path):
    """A branch that runs in training only went first (the eval-mode look at the model never saw it, and it took
    its model's place, call 0), and an unused head too, recorded as a gradient of 0: the first/last ratio read
    0. The branch goes where it runs in training; the unused head last, its cells masked, the ratio l0's."""
    from gradflow import load, store

    results = tmp_path / "results"
    out = cli("run", "model=custom", f"model.target={user_models}:Unused", "train.steps=4", "probe.every=2",
              "threads=1", f"results={results}", "name=unused")
    assert out.exit_code == 0, out.output
    assert "aux_head ran in none of gradflow's looks at the model" in " ".join(out.output.split())
    (job,) = store.find_runs(results / "unused")
    df = load(job)
    order = df.drop_duplicates("layer").sort_values("layer")["name"].tolist()
    assert order == ["l0", "noise", "l1", "head", "aux_head"], order
    grads = df[df["quantity"] == "grad_norm"]
    assert set(grads["name"]) == {"l0", "noise", "l1", "head"} and (grads["value"] > 0).all()
    first = grads[(grads["step"] == 0)].set_index("name")["value"]
    summary = store.read_run(job)["summary"]
    assert summary["grad_ratio.init"] == pytest.approx(first["l0"] / first["head"], rel=1e-6)
    text = " ".join(out.output.split())
    assert "- at aux_head: it took no gradient (the forward pass did not use it), masked, not 0" in text, text
    assert "frozen" not in text
    # its depth is the head's index, the weight layers before it (the unused one after it counted: depth 4), in
    # ls and the figures alike
    from gradflow.columns import listing
    from gradflow.summary import with_module_depth

    runs, _ = listing([results / "unused"])
    assert runs["model.depth"].tolist() == [3], runs["model.depth"]
    layers = load(results / "unused").assign(run=runs["run"].iloc[0])
    assert with_module_depth(runs.drop(columns="model.depth"), layers)["model.depth"].tolist() == [3]


def test_discovery_looks_again_in_train_mode_only_where_a_layer_did_not_run_and_leaves_the_model_as_it_was():
    """An attention layer's out_proj never runs itself: it made every transformer pay a second forward pass in
    train mode, which moved Python's random state and ran the forward's own updates twice. An attention run in
    training only went before the layer it follows; an unused Sequential went last without a word; and a
    submodule the user had put in eval mode came back in training."""
    import random
    import warnings

    import torch.nn as nn

    from gradflow.models.discover import discover

    class Attn(nn.Module):
        def __init__(self, late, aux):
            super().__init__()
            self.l0, self.att, self.l1, self.head = nn.Linear(8, 8), nn.MultiheadAttention(8, 2, batch_first=True), \
                nn.Linear(8, 8), nn.Linear(8, 3)
            if aux:
                self.aux = nn.Sequential(nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 2))  # never run
            self.bn = nn.BatchNorm1d(5)
            self.late, self.calls = late, 0

        def forward(self, x):  # (B, 5, 8)
            self.calls += 1
            random.random()  # (a layerdrop's draw)
            h = torch.tanh(self.l0(self.bn(x)))
            if not self.late or self.training:
                h = h + self.att(h, h, h)[0]
            return self.head(torch.tanh(self.l1(h))).mean(1)

    for late, aux in ((False, False), (True, True)):
        model = Attn(late, aux)
        model.bn.eval()  # (the user's: frozen statistics)
        random.seed(0)
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            names = [p.name for p in discover(model, torch.randn(4, 5, 8))]
        assert names == ["l0", "att.in_proj", "att.out_proj", "l1", "head"] + ["aux.0", "aux.2"] * aux, names
        assert model.calls == 1 + late and model.training and not model.bn.training
        random_after = random.random()
        random.seed(0)
        random.random()  # (the eval pass's draw is the model's own; the train pass's is put back)
        assert random_after == random.random()
        said = [str(w.message) for w in seen if "looks at the model" in str(w.message)]
        assert said == [] if not aux else len(said) == 1 and said[0].startswith("aux.0, aux.2 ran in none"), said

    class Cross(nn.Module):  # keys and values of their own width: three projections, in forward order
        def __init__(self):
            super().__init__()
            self.q, self.kv, self.head = nn.Linear(8, 8), nn.Linear(8, 4), nn.Linear(8, 3)
            self.att = nn.MultiheadAttention(8, 2, kdim=4, vdim=4, batch_first=True)

        def forward(self, x):
            h, c = self.q(x), self.kv(x)
            return self.head(self.att(h, c, c)[0]).mean(1)

    names = [p.name for p in discover(Cross(), torch.randn(2, 5, 8))]
    assert names == ["q", "kv", "att.q_proj", "att.k_proj", "att.v_proj", "att.out_proj", "head"], names


def test_a_tied_weight_is_left_out_of_the_runs_ratios_as_its_warning_says(cli, user_models, tmp_path):
    """gradflow run of a model whose output layer uses its input layer's weight: the warning said the tied
    point is left out of the first/last gradient ratios, but only the Recorder left it out; run.json's
    ratio (1.4 where the layers' own read 0.016), ls and the printed ratio were the tied gradient's."""
    from gradflow import load, store

    results = tmp_path / "results"
    out = cli("run", "model=custom", f"model.target={user_models}:Tied", *TINY, f"results={results}", "name=tied")
    assert out.exit_code == 0, out.output
    # its warning is one line, as errors are (Python's form named typer's file and line, then its code)
    (said,) = [line for line in out.stderr.splitlines() if "tied weights" in line]
    assert said.startswith("warning: tied weights: ") and "UserWarning" not in out.stderr, out.stderr
    (job,) = store.find_runs(results / "tied")
    run = store.read_run(job)
    assert run["tied"] == ["inp"]
    g = load(job).query("quantity == 'grad_norm' and step == 0").set_index("name")["value"]
    assert list(g.index) == ["inp", "body.1", "body.3"]  # (the output layer: recorded once, at its first point)
    own = g["body.1"] / g["body.3"]
    assert run["summary"]["grad_ratio.init"] == pytest.approx(own, rel=1e-9)
    assert abs(np.log(g["inp"] / g["body.3"]) - np.log(own)) > 0.1  # (the tied ratio would tell them apart)
    printed = " ".join(out.output.split())
    assert f"weight-gradient ratio ‖∂L/∂W‖ first/last: init {own:.4g}" in printed, out.output
    listed = cli("ls", str(results / "tied"), "--json")
    assert json.loads(listed.output)[0]["grad_ratio.init"] == pytest.approx(own, rel=1e-9)


@pytest.mark.parametrize("target, extra, message", [
    (":Nett", [], "has no attribute 'Nett'"),
    ("_missing:Net", [], "cannot import"),
    # a dotted path to an attribute of a class: the attribute missing, not the module (it blamed `module.Net`)
    (".Net.build", [], ".Net has no attribute 'build'"),
    (".nested.Net", [], ".nested' (no module of that name)"),
    (":not_a_module", [], "built a dict, not a torch.nn.Module"),
    (":NoWeights", [], "has no layer gradflow probes"),
    (":Net", ["+model.kwargs.d_in=41"], "does not fit data=mnist1d: input (2, 40) -> expected output (2, 10)"),
    (":Net", ["+model.kwargs.n_out=3"], "does not fit data=mnist1d: input (2, 40) -> expected output (2, 10), got (2, 3)"),
    (":Net", ["+model.kwargs.depth=3"], "failed to build: TypeError"),
    # a dict of logits: the fix named, and no warning of discovery's (its tied weights) before the error
    (":TiedDict", [], "expected output (2, 10), got dict; its output holds `logits`: return those"),
    # a constructor argument without its +: the fix, not model.width (which a custom model refuses)
    (":Net", ["model.kwargs.width=8"], "model.kwargs.width is a new key under model.kwargs (the custom model's "
                                       "constructor arguments): write it +model.kwargs.width=8, as Hydra adds a key"),
    # gradflow adds no layer to a user's module: it ran as it was, in a folder named norm=batchnorm
    (":Net", ["norm=batchnorm"], "norm=batchnorm does not apply to model=custom: gradflow adds no layer to your "
                                 "module; put the normalization in the module"),
])
def test_bad_custom_models_are_one_line(cli, user_models, tmp_path, target, extra, message):
    results = tmp_path / "results"
    out = cli("run", "model=custom", f"model.target={user_models}{target}", *extra, f"results={results}")
    assert_one_line(out, results, message)


def test_a_module_that_fails_to_import_is_named_with_what_failed(cli, tmp_path, monkeypatch):
    # its own missing dependency was blamed on the folder ("it must be importable from the current folder"), an
    # error it raised as it was imported did not name the target, and an int was "a int"
    monkeypatch.chdir(tmp_path)
    tag = uuid.uuid4().hex[:8]
    (tmp_path / f"needs_{tag}.py").write_text(f"import not_installed_{tag}\n")
    (tmp_path / f"raises_{tag}.py").write_text("raise ValueError('boom at import')\n")
    (tmp_path / f"ints_{tag}.py").write_text("def make(width=3):\n    return width\n")
    (tmp_path / f"newapi_{tag}.py").write_text("from torch.nn import FancyNorm\n")  # (torch is installed)
    results = tmp_path / "results"
    try:
        for target, message in (
                (f"needs_{tag}:Net", f"model.target='needs_{tag}:Net': needs_{tag} imports 'not_installed_{tag}', "
                                     "which is not installed here"),
                (f"raises_{tag}:Net", f"model.target='raises_{tag}:Net': importing raises_{tag} raised ValueError: "
                                      "boom at import"),
                (f"ints_{tag}:make", f"model.target=ints_{tag}:make built an int, not a torch.nn.Module"),
                (f"newapi_{tag}:Net", f"model.target='newapi_{tag}:Net': newapi_{tag} failed an import of its own "
                                      "(ImportError: cannot import name 'FancyNorm' from 'torch.nn'")):
            assert_one_line(cli("run", "model=custom", f"model.target={target}", f"results={results}"), results, message)
    finally:
        for name in (f"needs_{tag}", f"raises_{tag}", f"ints_{tag}", f"newapi_{tag}"):
            sys.modules.pop(name, None)
        if str(tmp_path) in sys.path:
            sys.path.remove(str(tmp_path))


def test_a_custom_models_run_folder_has_one_name_in_a_sweep_and_in_gradflow_run(cli, user_models, tmp_path):
    # Hydra's override_dirname escapes the target's colon (my_models\\:Net), which the sweep's folder read as
    # two characters: model.target=my_models__Net there, model.target=my_models_Net from gradflow run
    results = tmp_path / "results"
    cli("sweep", "model=custom", f"model.target={user_models}:Net,{user_models}:Frozen", *TINY,
        f"results={results}", "--name", "both")
    assert sorted(p.name for p in (results / "both").glob("model.target=*")) == \
        [f"model.target={user_models}_Frozen", f"model.target={user_models}_Net"]
    out = cli("run", "model=custom", f"model.target={user_models}:Net", *TINY, f"results={results}", "name=both")
    assert out.exit_code == 0 and "replacing" not in out.output, out.output  # (the sweep's own point)
    assert sorted(p.name for p in (results / "both").glob("model.target=*")) == \
        [f"model.target={user_models}_Frozen", f"model.target={user_models}_Net"]


def test_a_sweep_keeps_the_users_own_traceback_of_a_model_that_does_not_fit(cli, user_models, tmp_path):
    """The point whose model fails its first forward pass is recorded failed with the user's own frames in
    its traceback (the user's line was dropped: gradflow's frames only), the other point runs."""
    from gradflow import store

    results = tmp_path / "results"
    out = cli("sweep", "model=custom", f"model.target={user_models}:Net", "+model.kwargs.d_in=40,41", *TINY,
              f"results={results}", "--name", "fit")
    runs = {r["record"]["config"]["model.kwargs.d_in"]: r["record"] for r in store.runs(results / "fit")}
    assert runs[40]["status"] == "ok" and runs[41]["status"] == "failed", out.output
    assert "does not fit data=mnist1d" in runs[41]["error"] and "\n" not in runs[41]["error"]
    assert set(runs[40]) | set(runs[41]) <= {*store.RUN_FIELDS, *store.JOB_FIELDS}  # (each a field the store lists)
    assert f"{user_models}.py" in runs[41]["traceback"] and "in forward" in runs[41]["traceback"]
    # the sweep's table says why the point failed (it said only `failed`), and ls --json carries the error
    said = " ".join(out.output.split())
    assert "failed (+model.kwargs.d_in=41): model.target=" in said and "mat1 and mat2 shapes" in said, said
    listed = json.loads(cli("ls", str(results / "fit"), "--json").output)
    assert [r["error"] is not None for r in listed] == [False, True] and "does not fit" in listed[1]["error"]


def test_a_sweep_whose_target_does_not_import_is_refused_before_any_job(cli, user_models, tmp_path):
    """A typo in model.target failed every point of the sweep, after sweep.yaml was rewritten, which made the
    finished runs of the folder stale; `gradflow run` refuses it in one line. So is the sweep now, naming the
    point, its folder untouched."""
    from gradflow import store

    results = tmp_path / "results"
    sweep = ["sweep", "model=custom", *TINY, f"results={results}", "--name", "s"]
    assert cli(*sweep, "seed=0,1", f"model.target={user_models}:Net").exit_code == 0
    spec = (results / "s" / store.SWEEP_FILE).read_text()
    out = cli(*sweep, "seed=2,3", f"model.target={user_models}:Nett")  # (new points: no replacement to build first)
    assert_last_line(out, f"error: the sweep point seed=2: model.target='{user_models}:Nett': {user_models} has no "
                          "attribute 'Nett'; no job was started")
    assert (results / "s" / store.SWEEP_FILE).read_text() == spec
    assert {r["status"] for r in store.runs(results / "s")} == {"ok"}


def test_a_sweep_that_only_moves_finished_runs_needs_no_target_import(cli, user_models, tmp_path, monkeypatch):
    """Narrowed to one seed, the sweep's point (`default`) takes the finished run of seed=0 by moving it: no
    job trains, so no model is imported, and one whose target no longer imports from here (another folder) was
    refused as if it had to run."""
    from gradflow import store

    results = tmp_path / "results"
    sweep = ["sweep", "model=custom", f"model.target={user_models}:Net", *TINY, f"results={results}", "--name", "s"]
    assert cli(*sweep, "seed=0,1").exit_code == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in (str(tmp_path), "")])
    sys.modules.pop(user_models, None)
    out = cli(*sweep, "seed=0")
    assert out.exit_code == 0 and "no job was started" not in out.output, out.output
    assert (results / "s" / "default" / store.RUN_FILE).exists()


def test_a_rerun_whose_replacements_do_not_build_replaces_no_finished_run(cli, user_models, tmp_path):
    """The finished runs of d_in=40 stay whole when the rerun with d_in=41 cannot build its model: each was
    replaced by a `failed` run and its tables were gone."""
    from gradflow import store

    results = tmp_path / "results"
    sweep = ["sweep", "model=custom", f"model.target={user_models}:Net", "seed=0,1", *TINY, f"results={results}",
             "--name", "s"]
    assert cli(*sweep, "+model.kwargs.d_in=40").exit_code == 0
    before = {r["run"]: r["record"]["config_hash"] for r in store.runs(results / "s")}
    out = cli(*sweep, "+model.kwargs.d_in=41")
    said = " ".join(out.output.split())
    assert out.exit_code == 1 and "holds a finished run of other settings, and its replacement does not build" in said
    assert "does not fit data=mnist1d" in said and "no run was replaced" in said, said
    assert "will be replaced" not in said  # (the header is not printed before the refusal)
    runs = store.runs(results / "s")
    assert {r["run"]: r["record"]["config_hash"] for r in runs} == before and {r["status"] for r in runs} == {"ok"}
    assert all(store.is_finished(Path(r["path"])) for r in runs)


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") and p.is_dir())


def test_a_replacement_that_fails_in_training_keeps_the_finished_run(cli, user_models, tmp_path):
    """A rerun with settings whose runs fail in training (they build, so the build check passes): each
    finished run stays whole, listed stale with why, the failure in its run.json, the sweep's exit code 1
    (each was replaced by a `failed` run, its tables gone). A later replacement that ends ok takes its place."""
    from gradflow import store

    results = tmp_path / "results"
    sweep = ["sweep", "model=custom", f"model.target={user_models}:Late", "seed=0,1", *TINY, f"results={results}",
             "--name", "s"]
    assert cli(*sweep, "+model.kwargs.at=100").exit_code == 0
    before = {r["run"]: r["record"]["config_hash"] for r in store.runs(results / "s")}
    layers = store.load(results / "s")

    out = cli(*sweep, "+model.kwargs.at=2")  # fails at its second training pass
    said = " ".join(out.output.split())
    assert out.exit_code == 1, said
    assert "will be replaced (model.kwargs.at 100 → 2), each kept until its replacement has finished" in said, said
    assert ("stale (2 runs, seed=0 ...): its replacement failed, so the finished run of the earlier settings was "
            "kept (rerun to retry): RuntimeError: exploded at call 2") in said, said
    assert "stale: 2 replacement failed: 2" in said.replace("\xa0", " "), said
    # each run's line says its replacement failed (it read `ok`, with the kept run's time)
    lines = [line for line in out.output.splitlines() if re.match(r"\d/2 ", line)]
    assert sorted(line.split(" ", 1)[1] for line in lines) == [
        f"failed (its replacement; the run of the earlier settings kept) seed={k}" for k in (0, 1)], lines
    runs = store.runs(results / "s")
    assert {r["run"]: r["record"]["config_hash"] for r in runs} == before
    assert {r["status"] for r in runs} == {"stale"} and {r["record"]["status"] for r in runs} == {"ok"}
    for r in runs:
        failed = r["record"]["replacement"]
        assert failed["status"] == "failed" and "exploded at call 2" in failed["error"]
        assert "in forward" in failed["traceback"] and failed["config_hash"] != r["record"]["config_hash"]
        assert store.is_finished(Path(r["path"]))
    pd.testing.assert_frame_equal(store.load(results / "s", include_stale=True).drop(columns="status"),
                                  layers.drop(columns="status"))  # (the tables as they were)
    assert _hidden(results / "s") == []  # (the replacements' folders went)
    listed = json.loads(cli("ls", str(results / "s"), "--json").output)
    assert all("its replacement failed" in r["error"] for r in listed)
    # nothing to draw, as every run is stale: plot and the report page say that (they said "no probed layers")
    out = cli("plot", str(results / "s"))
    said = " ".join(out.output.split())
    assert out.exit_code == 1 and f"every run of {results / 's'} is stale" in said and "plot --all" in said, said
    from gradflow import report

    assert f"No figures (every run of {results / 's'} is stale" in report.build([results / "s"])

    out = cli(*sweep, "+model.kwargs.at=50")  # ends ok: takes the old runs' places
    assert out.exit_code == 0, out.output
    runs = store.runs(results / "s")
    assert {r["status"] for r in runs} == {"ok"} and not any("replacement" in r["record"] for r in runs)
    assert {r["record"]["config"]["model.kwargs.at"] for r in runs} == {50}
    assert _hidden(results / "s") == []


def test_an_interrupted_replacement_is_dropped_and_the_finished_run_kept(user_models, tmp_path):
    """Ctrl-C during a replacement: the run it was to replace stays as it was, the replacement's folder goes."""
    from gradflow import config as config_mod
    from gradflow import job, store

    import shutil

    job_dir = tmp_path / "r" / "s" / "default"
    base = ["model=custom", *TINY, f"results={tmp_path / 'r'}", "name=s"]
    assert job.execute(config_mod.compose([*base, f"model.target={user_models}:Late"]), job_dir)["status"] == "ok"
    # a finished run of a third config in the replacement's folder, left by a killed process: not the one
    # the Ctrl-C keeps (it was swapped in, as if the interrupted replacement had ended)
    assert job.execute(config_mod.compose([*base, f"model.target={user_models}:Net"]), job_dir)["status"] == "ok"
    shutil.copytree(job_dir, store.staging_dir(job_dir))
    assert job.execute(config_mod.compose([*base, f"model.target={user_models}:Late"]), job_dir)["status"] == "ok"
    before = store.read_run(job_dir)
    with pytest.raises(KeyboardInterrupt):
        job.execute(config_mod.compose([*base, f"model.target={user_models}:Stopped"]), job_dir)
    assert store.read_run(job_dir) == before and store.is_finished(job_dir)
    assert _hidden(job_dir.parent) == []

    # a rerun of the same settings (`gradflow run` again) interrupted: the run it redoes stays too (it was
    # cleared first, and a Ctrl-C lost it)
    def stop(t, n):
        if t == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        job.execute(config_mod.compose([*base, f"model.target={user_models}:Late"]), job_dir, on_step=stop)
    assert store.read_run(job_dir) == before and store.is_finished(job_dir) and _hidden(job_dir.parent) == []


def test_a_file_put_into_a_run_while_its_replacement_runs_keeps_the_run_and_the_sweep_goes_on(
        cli, user_models, tmp_path, monkeypatch):
    """A file of the user's that appears in a finished run's folder while its replacement runs: the run and
    the file stay where they are, the replacement is a failure of the sweep's (one line, exit 1), the other
    point is replaced. It took the sweep down with Hydra's traceback, the replacement left hidden."""
    from gradflow import store

    results = tmp_path / "results"
    sweep = ["sweep", "model=custom", "seed=0,1", *TINY, f"results={results}", "--name", "s"]
    assert cli(*sweep, f"model.target={user_models}:Net").exit_code == 0
    root = results / "s"
    monkeypatch.setenv("LITTER", str(root / "seed=0" / "notes.txt"))
    out = cli(*sweep, f"model.target={user_models}:Litter")
    said = " ".join(out.output.split())
    assert out.exit_code == 1 and "Traceback" not in out.output, out.output
    assert "its replacement failed, so the finished run of the earlier settings was kept" in said, said
    assert "is in the way" in said and "it holds notes.txt, which gradflow did not write" in said, said
    runs = {r["run"]: r for r in store.runs(root)}
    assert runs["seed=0"]["status"] == "stale" and runs["seed=0"]["record"]["config"]["model.target"].endswith(":Net")
    assert runs["seed=1"]["status"] == "ok" and runs["seed=1"]["record"]["config"]["model.target"].endswith(":Litter")
    assert (root / "seed=0" / "notes.txt").read_text() == "mine" and _hidden(root) == []


def test_run_says_it_kept_the_finished_run_its_failed_replacement_was_to_replace(cli, user_models, tmp_path,
                                                                                monkeypatch):
    """`gradflow run` into a folder holding a finished run of other settings (here device=cpu, which the folder
    name leaves out), failing in training: exit 1, the error, and where the kept run is."""
    from gradflow import store

    results = tmp_path / "results"
    command = ["run", "model=custom", f"model.target={user_models}:EnvLate", *TINY, f"results={results}", "name=one"]
    assert cli(*command).exit_code == 0
    [job_dir] = store.find_runs(results / "one")
    before = store.read_run(job_dir)
    monkeypatch.setenv("LATE_AT", "2")
    out = cli(*command, "device=cpu")
    said = " ".join(out.output.split())
    assert out.exit_code == 1 and "RuntimeError: exploded at call 2" in said, said
    assert f"the finished run of other settings in {job_dir} was kept" in said, said
    assert "made with other settings (device auto → cpu)" in said, said  # (it said `()`: device is no folder name)
    rec = store.read_run(job_dir)
    assert rec["config_hash"] == before["config_hash"] and rec["status"] == "ok"
    assert "exploded" in rec["replacement"]["error"] and store.runs(results / "one")[0]["status"] == "ok"
    # ls lists the kept run ok, and says under the table that the last run into its folder failed
    said = " ".join(cli("ls", str(results / "one")).output.split())
    assert ("its replacement failed, so the finished run of the earlier settings was kept (rerun to retry): "
            "RuntimeError: exploded at call 2") in said, said
    monkeypatch.delenv("LATE_AT")
    assert cli(*command, "device=cpu").exit_code == 0  # a replacement that ends ok takes its place: no note
    assert store.read_run(job_dir)["config"]["device"] == "cpu" and "replacement" not in store.read_run(job_dir)
    assert "replacement" not in cli("ls", str(results / "one")).output
    # the same command again, failing: the run it redid stays, said so (the failed run's summary named the
    # folder as its results, which held the old run)
    before = store.read_run(job_dir)
    monkeypatch.setenv("LATE_AT", "2")
    out = cli(*command, "device=cpu")
    said = " ".join(out.output.split())
    assert out.exit_code == 1 and f"the finished run of the same settings in {job_dir} was kept" in said, said
    assert {k: v for k, v in store.read_run(job_dir).items() if k != "replacement"} == before


def test_a_replacement_cut_off_is_no_run_and_clean_removes_it(cli, tmp_path):
    """A replacement's hidden folder left by a killed process (here a copy of a finished run): no reader lists
    it, a rerun of the sweep does not count it stale, and `clean --stale` removes it."""
    import shutil

    from gradflow import store

    results = tmp_path / "results"
    sweep = ["sweep", "model.depth=2,3", "train.steps=2", "model.width=8", "data=gaussian", "threads=1",
             f"results={results}", "--name", "s"]
    assert cli(*sweep).exit_code == 0
    root = results / "s"
    cut = store.staging_dir(root / "model.depth=2")
    aside = store.staging_dir(root / "model.depth=3", store.ASIDE)
    shutil.copytree(root / "model.depth=2", cut)
    aside.mkdir()
    assert [p.name for p in store.find_runs(root)] == ["model.depth=2", "model.depth=3"]
    assert store.leftovers(results) == [cut, aside]
    out = cli(*sweep)
    assert out.exit_code == 0 and "stale" not in out.output, out.output
    out = cli("clean", str(root), "--stale", "--yes")
    assert out.exit_code == 0 and "2 left over (a replacement cut off)" in out.output, out.output
    assert _hidden(root) == [] and {r["status"] for r in store.runs(root)} == {"ok"}
    long = root / ("model.depth=" + "9" * 240)  # (a hidden name 11 characters longer would not fit in 255 bytes)
    assert len(store.staging_dir(long).name) < 255 and store.is_staging(store.staging_dir(long).name)


def test_a_swap_cut_off_between_its_renames_is_put_right_by_the_next_run_of_its_point(cli, tmp_path):
    """Killed between the swap's two renames, the point's folder is gone, its old run aside and the ended
    replacement in staging: neither is a leftover (clean --stale deleted both, the point's only runs), and
    the next sweep puts back the replacement where it had ended, else the old run."""
    import shutil

    from gradflow import store

    results = tmp_path / "results"
    sweep = ["sweep", "model.depth=2,3,4", "train.steps=2", "model.width=8", "data=gaussian", "threads=1",
             f"results={results}", "--name", "s"]
    assert cli(*sweep).exit_code == 0
    root = results / "s"
    before = {r["run"]: r["record"] for r in store.runs(root)}  # (pid, wall time: a rerun's differ)
    two, three = root / "model.depth=2", root / "model.depth=3"
    two.rename(store.staging_dir(two, store.ASIDE))  # the old run aside, no replacement ended: it goes back
    shutil.copytree(three, store.staging_dir(three))  # an ended replacement (here the same run): it comes in
    three.rename(store.staging_dir(three, store.ASIDE))
    assert store.leftovers(root) == [] and "nothing to remove" in cli("clean", str(root), "--stale", "--yes").output
    out = cli(*sweep)
    assert out.exit_code == 0, out.output
    assert {r["run"]: r["record"] for r in store.runs(root)} == before
    assert {r["status"] for r in store.runs(root)} == {"ok"} and _hidden(root) == []

    # a point's name too long for the hidden names (245 bytes: the aside's would fit, the staging's not) goes
    # by its digest in both, and its cut-off swap is no leftover either (its run.json names its point)
    long = root / ("model.depth=" + "9" * 233)
    assert store.staging_dir(long).name[:17] == store.staging_dir(long, store.ASIDE).name[:17]
    for hidden in (store.staging_dir(long, store.ASIDE), store.staging_dir(long)):
        shutil.copytree(root / "model.depth=4", hidden)
        store.write_json(hidden / store.RUN_FILE, {**store.read_run(hidden), "job": long.name})
    assert store.leftovers(root) == []
    shutil.rmtree(store.staging_dir(long, store.ASIDE))
    shutil.rmtree(store.staging_dir(long))

    # --force with a cut-off swap: the old run put back first, then redone with the rest (it was put back
    # after --force had cleared the folder, and skipped as finished)
    store.write_json(two / store.RUN_FILE, {**store.read_run(two), "job": two.name, "tag": "old"})
    two.rename(store.staging_dir(two, store.ASIDE))
    out = cli(*sweep, "--force")
    assert out.exit_code == 0 and "ok: 3" in out.output.replace("\xa0", " "), out.output
    assert "tag" not in store.read_run(two) and _hidden(root) == []


def test_missing_target_is_one_line(cli, tmp_path):
    assert_one_line(cli("run", "model=custom", f"results={tmp_path / 'r'}"), tmp_path / "r",
                    "model=custom needs model.target")


def test_discovery_gives_no_activation_it_cannot_vouch_for_and_no_signal_to_an_unbatched_output():
    """A ReLU shared by two layers, and a Tanh fed by a residual sum, are no layer's activation; a position
    embedding of arange(T) has no per-example signal; a net of mixed activations reads as "linear" for the
    kaiming gain."""
    import torch.nn as nn

    from gradflow.models.custom import activation_kind
    from gradflow.models.discover import discover

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.pos = nn.Embedding(4, 6)
            self.a, self.b, self.c, self.d = nn.Linear(6, 6), nn.Linear(6, 6), nn.Linear(6, 6), nn.Linear(6, 6)
            self.shared, self.tanh, self.sig = nn.ReLU(), nn.Tanh(), nn.Sigmoid()

        def forward(self, x):  # (B, 4, 6)
            h = x + self.pos(torch.arange(4))
            h = self.shared(self.b(self.shared(self.a(h))))
            h = self.tanh(self.c(h) + h)  # an add between c and its tanh
            return self.sig(self.d(h))

    net = Net()
    with pytest.warns(UserWarning):
        points = {p.name: p for p in discover(net, torch.randn(3, 4, 6))}
    assert points["a"].activation is None and points["b"].activation is None and points["c"].activation is None
    assert points["d"].activation is net.sig
    assert not points["pos"].batched and points["a"].batched
    net.probe_points = list(points.values())
    assert activation_kind(net) == "sigmoid"
    points["a"].activation = net.tanh
    assert activation_kind(net) == "linear"


@pytest.mark.parametrize("init", ["orthogonal", "keep"])
def test_an_init_scheme_that_leaves_unprobed_modules_as_they_were_says_so(cli, user_models, tmp_path, init):
    """init= re-initializes the probed layers only: a sweep over init left the GRU at torch's own draw in
    every run, unsaid; the warning names it (init=keep, which changes nothing, has nothing to say)."""
    torch.manual_seed(0)
    out = cli("run", "model=custom", f"model.target={user_models}:Recurrent", f"init={init}", *TINY,
              f"results={tmp_path / 'results'}", "name=gru")
    assert out.exit_code == 0, out.output
    said = [line for line in out.stderr.splitlines() if line.startswith(f"warning: init={init}")]
    assert said == ([] if init == "keep" else [
        "warning: init=orthogonal re-initializes the probed layers only; not probed, so as model.target made them: "
        "gru (GRU: weight_ih_l0, weight_hh_l0)"]), out.stderr


DEEP = '''
import torch.nn as nn


class Deep(nn.Module):
    """A tanh MLP of `layers` hidden layers: the depth a study of one's own module sweeps."""
    def __init__(self, layers=2, width=16, d_in=40, n_out=10):
        super().__init__()
        sizes = [d_in] + [width] * layers
        self.body = nn.Sequential(*[m for a, b in zip(sizes, sizes[1:]) for m in (nn.Linear(a, b), nn.Tanh())])
        self.head = nn.Linear(width, n_out)

    def forward(self, x):
        return self.head(self.body(x))
'''


@pytest.fixture
def deep_module(tmp_path, monkeypatch):
    """DEEP as an importable module of a fresh name in the current folder (tmp_path): the name, for model.target."""
    name = f"deep_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(DEEP))
    monkeypatch.chdir(tmp_path)
    yield name
    sys.modules.pop(name, None)


def test_a_depth_sweep_of_ones_own_module_gets_the_ratio_figures(cli, tmp_path, deep_module):
    # a custom module's depth is its constructor's to set (model.depth is refused for it): a sweep over
    # +model.kwargs.layers drew no ratio figure, and `plot --kind ratio` said model.depth "does not vary in this
    # data (values: none)". Its runs' depth is their probe points' by the depth convention: the weight layers
    # before the head, here the body's `layers`.
    name = deep_module
    results = tmp_path / "results"
    out = cli("sweep", "model=custom", f"model.target={name}:Deep", "+model.kwargs.layers=2,4,8", "train.steps=2",
              "threads=1", f"results={results}", "--name", "deep")
    assert out.exit_code == 0, out.output
    out = cli("plot", str(results / "deep"))
    assert out.exit_code == 0, out.output
    assert {"ratio-init.png", "ratio-signal_norm-init.png"} <= {p.name for p in (results / "deep" / "figures").iterdir()}
    from gradflow import load
    from gradflow.plots import figures

    layers = load(results / "deep")
    fig = figures.ratio(layers, "init")
    ax = fig.axes[0]
    (line,) = [ln for ln in ax.get_lines() if len(ln.get_xdata()) == 3]
    assert list(line.get_xdata()) == [2, 4, 8]
    init = layers[(layers["step"] == 0) & (layers["quantity"] == "grad_norm")]
    want = [float(g.sort_values("layer")["value"].iloc[0] / g.sort_values("layer")["value"].iloc[-1])
            for _, g in sorted(init.groupby("model.kwargs.layers"))]
    assert list(line.get_ydata()) == pytest.approx(want)
    assert "weight layers before the head" in ax.get_xlabel()


def test_a_custom_modules_depth_reads_alike_in_ls_compare_the_report_and_the_figures(cli, tmp_path, deep_module):
    # the figures read a custom module's depth from its probe points (the head's index), while ls, its --json,
    # compare and the report showed `-` (or no depth at all) for the same runs: one reading for all of them
    name = deep_module
    results = tmp_path / "results"
    for study, layers in (("deep", "1,3"), ("deep2", "3")):
        out = cli("sweep", "model=custom", f"model.target={name}:Deep", f"+model.kwargs.layers={layers}",
                  "train.steps=2", "threads=1", f"results={results}", "--name", study)
        assert out.exit_code == 0, out.output
    from gradflow import load
    from gradflow.plots import figures

    layers = load(results / "deep")
    heads = {int(k): int(g.loc[g["name"] == "head", "layer"].iloc[0]) for k, g in layers.groupby("model.kwargs.layers")}
    assert heads == {1: 1, 3: 3}  # (the body's Linear layers, then the head)
    drawn = [sorted(int(x) for x in ln.get_xdata()) for ln in figures.ratio(layers, "init").axes[0].get_lines()
             if len(ln.get_xdata()) == 2 and np.isfinite(ln.get_ydata()).all() and min(ln.get_xdata()) > 0]
    assert drawn == [sorted(heads.values())]  # (the runs' line, along the depth)
    drawn = drawn[0]

    out = cli("ls", "--json", str(results / "deep"))
    assert out.exit_code == 0, out.output
    listed = {r["model.kwargs.layers"]: r["model.depth"] for r in json.loads(out.stdout)}
    assert listed == heads and sorted(listed.values()) == drawn
    # (the table's line under it, that the depth was read, is a field of each row there)
    assert [r["depth_from_probes"] for r in json.loads(out.stdout)] == [True, True]

    out = cli("ls", str(results / "deep"))
    assert out.exit_code == 0, out.output
    lines = out.stdout.splitlines()
    header = next(i for i, ln in enumerate(lines) if "depth" in ln.split())
    cols = lines[header].split()
    rows = [ln.split() for ln in lines[header + 2:header + 4]]
    assert {int(r[cols.index("layers")]): int(r[cols.index("depth")]) for r in rows} == heads
    assert "read from its probe points" in " ".join(lines)
    # --where leaving one depth makes it no column but a line of what the kept runs share: the note stays
    out = cli("ls", str(results / "deep"), "--where", "layers=3")
    assert out.exit_code == 0, out.output
    assert "the same in every run --where keeps: depth 3" in out.stdout
    assert "read from its probe points" in " ".join(out.stdout.split())

    out = cli("compare", str(results / "deep"), str(results / "deep2"), "--out", str(tmp_path / "cmp"))
    assert out.exit_code == 0, out.output
    assert "matched on model.kwargs.layers, model.depth" in out.stdout
    assert "read from its probe points" in " ".join(out.stdout.split())

    out = cli("report", str(results / "deep"), "--out", str(tmp_path / "r.html"))
    assert out.exit_code == 0, out.output
    page = (tmp_path / "r.html").read_text()
    assert "read from its probe points" in page
    runs = page[page.index('id="runs"'):]
    runs = runs[:runs.index("</table>")]
    assert re.findall(r'<th data-key="([^"]+)"', runs)[:2] == ["model.kwargs.layers", "model.depth"]
    cells = [re.findall(r"<td[^>]*>([^<]*)", row)[:2] for row in runs.split("<tr")[2:]]
    assert {int(a): int(b) for a, b in cells} == heads


def test_a_warning_on_a_terminal_goes_above_the_progress_bar_not_onto_its_line(user_models, tmp_path):
    """On a terminal, the tied-weights warning came while the run's progress bar was drawn, and standard
    error's line was glued to the end of the bar's (rich lets a console's writes pass its redirection)."""
    run = ["run", "model=custom", f"model.target={user_models}:Tied", *TINY]
    text = on_a_terminal(*run, f"results={tmp_path / 'r'}", pythonpath=str(tmp_path))
    assert "━" in text  # (the bar was drawn: a terminal)
    at = text.index("warning:")
    # what the terminal shows on the warning's line before it: since its last line break or line erase
    before = re.split(r"\r\n|\n|\x1b\[2K", text[:at])[-1]
    assert "training" not in before and "━" not in before, repr(text[max(0, at - 300):at + 40])
    # standard error sent elsewhere (2>log): the warning goes there, not onto the terminal
    log = tmp_path / "stderr.log"
    with open(log, "w") as err:
        text = on_a_terminal(*run, f"results={tmp_path / 'r2'}", pythonpath=str(tmp_path), stderr=err)
    assert "warning: tied weights" in log.read_text() and "warning:" not in text


def test_qstar_inputs_of_a_custom_model_ask_for_its_activation(cli, user_models, tmp_path):
    # model=custom's activation is auto (each module's own): data.scale=qstar said "model.activation='auto' is
    # not a known activation", a value the user never set, with choices that left auto out
    base = ["run", "model=custom", f"model.target={user_models}:Net", "data=gaussian", "data.scale=qstar",
            "init=meanfield", *TINY, f"results={tmp_path / 'results'}"]
    out = cli(*base)
    assert out.exit_code == 1 and " ".join(out.output.split()) == (
        "error: data.scale=qstar needs the net's one activation for the mean-field q*: set model.activation=NAME "
        "for model=custom (it is auto: each module's own); or give data.scale a number"), out.output
    # with its default init=keep, which has no sigma_w^2 either: both said at once (it took two rounds)
    out = cli(*[a for a in base if a != "init=meanfield"])
    assert out.exit_code == 1 and "(it is auto: each module's own), and an init with a mean-field sigma_w^2 " \
        "(init=keep has none: init=meanfield, say); or give data.scale a number" in " ".join(out.output.split())


ONE_NAN_ONE_RAISING = '''
import torch
import torch.nn as nn


class Net(nn.Module):
    def __init__(self, d_in=64, n_out=10, width=8):
        super().__init__()
        self.body = nn.Linear(d_in, width)
        self.head = nn.Linear(width, n_out)

    def forward(self, x):
        return self.head(torch.tanh(self.body(x)))


class NaNOne(nn.Module):
    """One weight layer (depth 0) whose output is NaN: diverged at step 0."""
    def __init__(self, d_in=64, n_out=10):
        super().__init__()
        self.lin = nn.Linear(d_in, n_out)

    def forward(self, x):
        return self.lin(x) * float("nan")


class Raises(Net):
    def forward(self, x):
        raise RuntimeError("broken forward")
'''


def test_the_standard_set_leaves_out_ratios_whose_runs_are_of_one_depth(cli, tmp_path, monkeypatch):
    """A sweep of custom models, one ok (depth 1), one diverged at step 0 with one weight layer (depth 0: no first
    and last probe point, so no ratio), one failed: `ls` shows depths 0 and 1, so the standard set tried the
    ratio figures, which failed ("model.depth, which does not vary (values: 1)"), and `plot` exited 1. They are
    left out now, with one line saying why, as the set's other figures the runs cannot make."""
    name = f"nan_models_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(ONE_NAN_ONE_RAISING)
    monkeypatch.chdir(tmp_path)
    try:
        results = tmp_path / "results"
        out = cli("sweep", "data=gaussian", "model=custom", f"model.target={name}:Net,{name}:NaNOne,{name}:Raises",
                  "train.steps=3", "threads=1", f"results={results}", "--name", "cs")
        assert "ok: 1  diverged: 1  failed: 1" in out.output, out.output
        from gradflow import load

        assert sorted(load(results / "cs", table="runs")["model.depth"].dropna()) == [0, 1]
        out = cli("plot", results / "cs")
        flat = " ".join(out.output.split())
        assert out.exit_code == 0, out.output
        assert "ratio-init, ratio-signal_norm-init not drawn: the runs with a ratio are all of model.depth 1 (those " \
               "of model.depth 0 have fewer than two probe points at step 0, so no ratio)" in flat, out.output
        drawn = {p.name for p in (results / "cs" / "figures").iterdir()}
        assert "profile-grad_norm-step0.png" in drawn and not any(n.startswith("ratio") for n in drawn), drawn
    finally:
        sys.modules.pop(name, None)
        if str(tmp_path) in sys.path:
            sys.path.remove(str(tmp_path))
