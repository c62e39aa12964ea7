"""Study designs in config: a linear regression teacher, and learning rates coupled to depth by the gf resolvers."""

from __future__ import annotations

import json

import pytest
import torch
from omegaconf import OmegaConf

from gradflow.config import compose, flatten, job_name

SMALL = ["data=gaussian", "data.n_train=128", "data.n_test=32", "data.dim=8", "model.width=8", "train.steps=3",
         "train.batch_size=32", "train.eval_every=3", "probe.points=2", "threads=1"]


def test_regression_teacher_is_linear_with_unit_variance():
    from gradflow.data import build

    d = build(compose(["data=gaussian", "data.task=regression", "data.dim=16", "data.n_train=2048"]).data, "cpu")
    assert d.task == "regression" and d.n_classes == 1 and d.y_train.shape == (2048, 1)
    w = torch.linalg.lstsq(d.x_train, d.y_train).solution  # an exact linear fit: the teacher is linear
    assert (d.x_train @ w - d.y_train).abs().max().item() < 1e-4
    assert d.y_train.var().item() == pytest.approx(1.0, rel=0.15)


def test_a_shallow_linear_network_learns_the_regression_teacher(run_job):
    job = run_job("data=gaussian", "data.task=regression", "data.dim=8", "data.n_train=256", "data.n_test=64",
                  "model.activation=linear", "model.depth=1", "model.width=16", "train.steps=300",
                  "train.batch_size=64", "train.eval_every=100", "optim.lr=0.05", "threads=1")
    final = json.loads((job / "run.json").read_text())["final"]
    assert final["train_loss"] < 1e-4 and final["test_loss"] < 1e-4  # from ~1: the teacher's variance


@pytest.mark.parametrize("op, a, b, expect", [("div", 0.25, "model.depth", 0.05), ("mul", "model.width", 2, 256),
                                              ("add", "model.depth", 0.5, 5.5), ("sub", 1, 0.25, 0.75),
                                              ("pow", "model.depth", -0.5, 5 ** -0.5)])
def test_gf_arithmetic_on_numbers_and_keys(op, a, b, expect):
    cfg = compose(["model.depth=5", f"optim.lr=${{gf.{op}:{a},{b}}}"])
    assert flatten(cfg)["optim.lr"] == pytest.approx(expect)


def test_a_nested_interpolation_works_quoted():
    cfg = compose(["model.depth=4", "optim.lr='${gf.div:0.5,${model.depth}}'"])
    assert cfg.optim.lr == pytest.approx(0.125)


def test_resolver_sweep_couples_lr_to_depth_and_resumes(cli, results):
    args = ["sweep", *SMALL, "model.depth=2,4,8", "optim.lr=${gf.div:0.4,model.depth}", "--name", "lr",
            f"results={results}"]
    out = cli(*args)
    assert out.exit_code == 0, out.output
    runs = sorted(p for p in (results / "lr").iterdir() if p.is_dir())
    assert [p.name for p in runs] == ["model.depth=2", "model.depth=4", "model.depth=8"]  # readable names
    for run in runs:
        saved = flatten(OmegaConf.load(run / "config.yaml"))
        assert saved["optim.lr"] == pytest.approx(0.4 / saved["model.depth"])
        assert json.loads((run / "run.json").read_text())["status"] == "ok"
    again = cli(*args)
    assert again.exit_code == 0 and "3 already finished" in again.output


def test_job_names_spell_arithmetic_readably():
    assert job_name(["optim.lr=${gf.div:0.25,model.depth}"]) == "optim.lr=0.25-over-model.depth"
    assert job_name("model.depth=3,optim.lr=${gf.mul:2,model.depth}") == "model.depth=3,optim.lr=2-times-model.depth"
