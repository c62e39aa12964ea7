"""skipinit2020 at --quick: the computed claims come out as documented, the figures are drawn, and the measured
values agree with a recomputation from the results files with pandas; an override that breaks the mechanism
(no training; Fixup's scalars at the full rate) makes its claims FAIL.

The tests share one results folder and the passing outcome (a module-scoped fixture), so a breaking run redoes
only the runs its override changes (resume), as a user's second `gradflow reproduce` would.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from gradflow import reproduce as rep
from tests.reproducing import figures_drawn, reproduce, reproduce_edited, verdicts


@pytest.fixture(scope="module")
def skipinit(shared):
    return reproduce("skipinit2020", shared)


@pytest.fixture(scope="module")
def pristine(skipinit, shared, tmp_path_factory) -> Path:
    """A copy of the passing runs, taken before the breaking tests replace them in `shared` (each of those
    overrides every arm but the last's, which changes one: from a copy it reruns that one alone, 40 s less)."""
    root = tmp_path_factory.mktemp("skipinit-pristine")
    shutil.copytree(shared / "reproduce" / "skipinit2020-quick", root / "reproduce" / "skipinit2020-quick")
    return root


@pytest.mark.slow
def test_skipinit2020_quick(skipinit, pristine):
    assert len(skipinit.claims) == 24 and skipinit.passed, verdicts(skipinit)
    figures_drawn(skipinit, ["profile-act-std-unscaled", "curves-mlp-fixup", "curves-resnet"])
    # the ResNet figure draws three arms' runs, each named "default" in its arm: they stay three runs
    resnets = rep.figure_table(rep.arms_of(skipinit.spec, skipinit.root),
                               ["resnet_batchnorm", "resnet_fixup", "resnet_skipinit"], "metrics")
    variants = resnets.groupby("run")["model.variant"].agg(set)
    assert sorted(variants.index) == ["resnet_batchnorm/default", "resnet_fixup/default", "resnet_skipinit/default"]
    assert [v for (v,) in variants] == ["batchnorm", "fixup", "skipinit"]

    # the unscaled net's forward growth per block (2 layers), refitted from layers.parquet: log act_std
    # against layer over the bulk (act_std exists where there is an activation, the first layer of each
    # branch; 4 of those dropped at each end), and the run diverged
    (job,) = [p for p in (skipinit.root / "mlp_unscaled").iterdir() if (p / "run.json").exists()]
    layers = pd.read_parquet(job / "layers.parquet")
    std = layers[(layers["quantity"] == "act_std") & (layers["step"] == 0)].set_index("layer")["value"].sort_index()
    bulk = std.iloc[4:-4]
    slope = np.polyfit(bulk.index.to_numpy(float), np.log(bulk.to_numpy()), 1)[0]
    assert skipinit.claim("per-block growth").measured.value == pytest.approx(np.exp(2 * slope), rel=1e-6)
    assert json.loads((job / "run.json").read_text())["status"] == "diverged"
    # Fixup's rescale, from the two arms' first convs at init: each block's norm ratio is exactly L^-1/2
    ratios = []
    for arm in ("resnet_fixup", "resnet_batchnorm"):
        (job,) = [p for p in (skipinit.root / arm).iterdir() if (p / "run.json").exists()]
        layers = pd.read_parquet(job / "layers.parquet")
        ratios.append(layers[(layers["quantity"] == "weight_norm") & (layers["step"] == 0)
                             & layers["name"].str.endswith("conv1")].set_index("name")["value"])
    assert len(ratios[0]) == 3 and np.allclose(ratios[0] / ratios[1], 3 ** -0.5, rtol=1e-6)
    assert skipinit.claim("as a power of the blocks").measured.value == pytest.approx(-0.5, abs=1e-6)


@pytest.mark.slow
def test_skipinit2020_cli_prints_the_specs_text_as_written(cli, shared, skipinit, monkeypatch):
    from gradflow.cli.console import console

    monkeypatch.setattr(console, "width", 80)  # a terminal of 80 columns, whatever runs the tests
    # square brackets in a spec's text are not console markup: the tolerance's "exp(E[log R] / 2)" survives
    out = cli("reproduce", "skipinit2020", "--quick", "threads=1", f"results={shared}")  # reuses the finished runs
    assert out.exit_code == 0, out.output
    text = " ".join(out.output.split())
    assert "exp(E[log R] / 2)" in text
    # a tolerance two claims share (a for_each claim's) is printed once, naming both in one phrase
    assert text.count("0.05 nats is our margin") == 1
    assert "tolerance, resnet_fixup/resnet_skipinit minus resnet_batchnorm: final training loss:" in text
    # at 80 columns the claims table keeps its words whole: reference and source go under the claim
    assert [line for line in out.output.splitlines() if line[:1] in "┏┃┡│└" and len(line) > 80] == []
    assert "mlp_unscaled: per-block" in out.output and "growth of the activation std" in out.output
    assert "source: paper: De & Smith" in out.output


def test_skipinit2020_fixup_without_its_scalar_rate_fails(shared):
    # Fixup's scalar biases and multipliers at the full rate instead of 1/10: the ResNet diverges, so its
    # claims FAIL (every run of the arm diverged, so it has no final loss at all), while SkipInit's hold.
    # Before the untrained control: only the Fixup arms rerun here
    broken = reproduce("skipinit2020", shared, "optim.scalar_lr_factor=1")
    for words in ("resnet_fixup: share of runs that diverge", "resnet_fixup: final training loss",
                  "resnet_fixup minus resnet_batchnorm"):
        assert not broken.claim(words).passed, verdicts(broken)
    assert broken.claim("resnet_skipinit minus resnet_batchnorm").passed, verdicts(broken)


def test_skipinit2020_untrained_fails(shared):
    # no training: nothing falls below the "trains" threshold; the growth at init and Fixup's and SkipInit's
    # finite start are unchanged
    broken = reproduce("skipinit2020", shared, "train.steps=0")
    for arm in ("mlp_batchnorm", "mlp_fixup", "mlp_skipinit"):
        assert not broken.claim(f"{arm}: final training loss").passed, verdicts(broken)
    for arm in ("resnet_batchnorm", "resnet_fixup", "resnet_skipinit"):
        assert not broken.claim(f"{arm}: final training loss").passed
    assert broken.claim("per-block growth").passed and broken.claim("mlp_fixup: share of runs").passed
    for arm in ("mlp_fixup", "mlp_skipinit"):  # (their branches start at exactly 0, and stay there untrained)
        assert broken.claim(f"{arm}: the branches train").measured.value == 0, verdicts(broken)


def test_skipinit2020_with_its_branch_scale_held_at_zero_fails(pristine, tmp_path, monkeypatch):
    # SkipInit's alpha held at 0 (the 0-d parameters' rate 0): its branches never switch on, every hidden
    # weight gradient stays exactly 0, and the net trains as a one-layer net: below 1.5 and, at the quick
    # scale, within 0.2 of the batch-normalized MLP, which passed every MLP claim it had. (The MLPs' arms
    # edited, from a copy of the passing runs: the ResNets', whose claims this does not read, are reused)
    shutil.copytree(pristine, tmp_path / "results")
    broken = reproduce_edited("skipinit2020", tmp_path / "results", tmp_path / "specs", monkeypatch,
                              {arm: ["optim.scalar_lr_factor=0"] for arm in ("mlp_fixup", "mlp_skipinit")})
    assert not broken.claim("mlp_skipinit: the branches train").passed, verdicts(broken)
    assert broken.claim("mlp_skipinit: the branches train").measured.value == 0
    assert broken.claim("mlp_skipinit: final training loss").passed  # (why the claim was needed)
    assert broken.claim("mlp_fixup: the branches train").passed  # (Fixup's zero layers are weights: they train)


def test_skipinit2020_with_its_branch_scale_starting_at_one_fails(pristine, tmp_path):
    # SkipInit's alpha fixed at 1 from the start (model.alpha=1: its mechanism switched off): the MLP's
    # branches have gradients at init, so "every block the identity at init" FAILs, besides its divergence;
    # Fixup's blocks (alpha 1 is its own) still start as the identity. (From a copy of the passing runs: only
    # mlp_skipinit's config changes, the one run redone)
    shutil.copytree(pristine, tmp_path / "results")
    broken = reproduce("skipinit2020", tmp_path / "results", "model.alpha=1.0")
    claim = broken.claim("mlp_skipinit: every block the identity at init")
    assert not claim.passed and claim.measured.value > 1, verdicts(broken)
    assert broken.claim("mlp_fixup: every block the identity at init").passed
    assert broken.claim("resnet_skipinit: every block the identity at init").passed  # (the ResNet has no alpha key)


def _fixup_with_its_last_layers_drawn(monkeypatch):
    """Fixup's post_init, then each branch's last layer drawn again as He init draws it (not 0): its
    mechanism broken; the scaled first layers and the zero head stay."""
    from gradflow.models import mlp, resnet

    def redrawn(post_init, last_layers):
        def post_init_broken(self, cfg=None):
            post_init(self, cfg)
            if getattr(self, "fixup", False) or getattr(self, "variant", "") == "fixup":
                for weight in last_layers(self):
                    torch.nn.init.kaiming_normal_(weight)
        return post_init_broken

    monkeypatch.setattr(mlp.MLP, "post_init", redrawn(
        mlp.MLP.post_init, lambda net: [block.layers[-1].layer.weight for block in net.hidden[1:]]))
    monkeypatch.setattr(resnet.ResNet, "post_init", redrawn(
        resnet.ResNet.post_init, lambda net: [block.conv2.weight for block in net.blocks]))


def test_skipinit2020_fixup_without_its_rescale_fails(pristine, tmp_path, monkeypatch):
    # Fixup's branches not scaled by L^-1/2 (its rule 2 undone after post_init): the ResNet-8 trains as well
    # without it, so every other ResNet claim passed. (resnet_fixup alone rerun, for 2 steps, from a copy)
    from gradflow.models import resnet

    post_init = resnet.ResNet.post_init

    def unscaled(self, cfg=None):
        post_init(self, cfg)
        if self.variant == "fixup":
            with torch.no_grad():
                for block in self.blocks:
                    block.conv1.weight.mul_(len(self.blocks) ** 0.5)

    shutil.copytree(pristine, tmp_path / "results")
    shutil.rmtree(tmp_path / "results" / "reproduce" / "skipinit2020-quick" / "resnet_fixup")
    monkeypatch.setattr(resnet.ResNet, "post_init", unscaled)
    broken = reproduce_edited("skipinit2020", tmp_path / "results", tmp_path / "specs", monkeypatch, {},
                              {"resnet_fixup": ["train.steps=2"]})
    claim = broken.claim("as a power of the blocks")
    assert not claim.passed and claim.measured.value == pytest.approx(0, abs=1e-6), verdicts(broken)
    assert broken.claim("resnet_fixup: share of runs that diverge").passed
    assert broken.claim("resnet_fixup: every block the identity at init").passed  # (its last layers still 0)


def test_skipinit2020_fixup_whose_branches_do_not_start_at_zero_fails(pristine, tmp_path, monkeypatch):
    # Fixup's "identity at init" was read as the hidden weight gradients at step 0, all exactly 0; but Fixup's
    # head starts at 0 too, so they read 0 whatever the branches do, and Fixup with its last layers drawn
    # (not 0) passed every claim. At step 1, behind a last layer still at 0, half the hidden layers take no
    # signal; with it drawn, none. (The Fixup arms cut to 2 steps, which the claim needs, from a copy of the
    # passing runs: first as they are, then broken)
    shutil.copytree(pristine, tmp_path / "results")
    short = {arm: ["train.steps=2"] for arm in ("mlp_fixup", "resnet_fixup")}
    intact = reproduce_edited("skipinit2020", tmp_path / "results", tmp_path / "specs", monkeypatch, {}, short)
    for arm in ("mlp_fixup", "resnet_fixup"):
        claim = intact.claim(f"{arm}: every block the identity at init")
        assert claim.passed and claim.measured.value == 0.5, verdicts(intact)
    _fixup_with_its_last_layers_drawn(monkeypatch)
    for arm in ("mlp_fixup", "resnet_fixup"):  # (the same configs: their finished runs removed, to run again)
        shutil.rmtree(tmp_path / "results" / "reproduce" / "skipinit2020-quick" / arm)
    broken = reproduce_edited("skipinit2020", tmp_path / "results", tmp_path / "specs", monkeypatch, {}, short)
    for arm in ("mlp_fixup", "resnet_fixup"):
        claim = broken.claim(f"{arm}: every block the identity at init")
        assert not claim.passed and claim.measured.value == 0, verdicts(broken)
        assert broken.claim(f"{arm}: share of runs that diverge").passed  # (it still runs)
    steps = [json.loads(p.read_text())["steps"] for arm in ("mlp_fixup", "resnet_fixup")
             for p in (tmp_path / "results" / "reproduce" / "skipinit2020-quick" / arm).glob("*/run.json")]
    assert steps == [2, 2]  # (the arms cut short: the quick scale's train.steps comes after the arm's own)
