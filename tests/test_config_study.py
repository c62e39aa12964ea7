"""Study designs in config: a linear regression teacher, and learning rates coupled to depth by the gf resolvers."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from gradflow.choices import settings
from gradflow.config import compose, parsed_overrides
from gradflow.overrides import job_name
from gradflow.store import flatten

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


def test_a_long_job_name_is_cut_with_a_digest_of_the_whole():
    """Names past 160 characters keep their first 150 and a digest of all of it: two long names that
    differ only past the cut are two folders, not one run."""
    long = "data.cache=" + "x" * 200
    a, b = job_name([long + "a"]), job_name([long + "b"])
    assert a != b and len(a) <= 160 and a.startswith(long[:150]) and b.startswith(long[:150])
    assert job_name([long + "a"]) == a  # (the same name each time)


def test_job_names_spell_arithmetic_readably():
    assert job_name(["optim.lr=${gf.div:0.25,model.depth}"]) == "optim.lr=0.25-over-model.depth"
    assert job_name("model.depth=3,optim.lr=${gf.mul:2,model.depth}") == "model.depth=3,optim.lr=2-times-model.depth"


# --- keys that do not apply to a run are not its settings --------------------------------------------
@pytest.mark.parametrize("overrides, sw2", [
    (["init=xavier_normal", "init.gain=1.5"], 2.25),
    (["init=kaiming_normal", "model.activation=relu"], 2.0),
    (["init=kaiming_uniform", "model.activation=tanh"], (5 / 3) ** 2),
    (["init=standard"], 1 / 3),
    (["init=lecun_normal"], 1.0),
    (["init=orthogonal", "init.gain=1.2"], 1.44),
    (["init=meanfield", "init.sw2=1.76"], 1.76),
])
def test_effective_sw2_is_the_weight_variance_times_fan_in(overrides, sw2):
    """Against the weights themselves: var(W) * fan_in of a square layer."""
    from gradflow.theory import effective_sw2
    from gradflow.models import build
    from gradflow.models.init import initialize

    cfg = compose(["data=gaussian", "model.width=400", "model.depth=3", *overrides])
    torch.manual_seed(0)
    model = build(cfg, (400,), 10)
    initialize(model, cfg.init, cfg.model.activation)
    w = model.probe_points[1].layer.weight.detach()
    measured = (w.pow(2).mean() * 400).item()  # orthogonal rows have exactly this second moment
    assert effective_sw2(flatten(cfg)) == pytest.approx(sw2, rel=1e-9)
    assert measured == pytest.approx(sw2, rel=0.02)


def test_keys_of_another_init_are_not_settings(cli, results):
    xavier = settings(flatten(compose(["init=xavier_normal"])))
    assert "init.sw2" not in xavier and "init.sb2" not in xavier and "init.mode" not in xavier
    assert {"init.sw2", "init.sb2"} <= set(settings(flatten(compose(["init=meanfield"]))))
    # one sweep can set both schemes' keys; each run records only its own
    out = cli("sweep", *SMALL, "init=orthogonal,meanfield", "init.gain=1.1", "init.sw2=1.21", "--name", "inits",
              f"results={results}")
    assert out.exit_code == 0, out.output
    from gradflow import load

    runs = load(results / "inits", table="runs").set_index("init.name")
    assert runs.loc["meanfield", "init.sw2"] == 1.21 and runs.loc["orthogonal", "init.gain"] == 1.1
    assert pd.isna(runs.loc["orthogonal", "init.sw2"]) and pd.isna(runs.loc["meanfield", "init.gain"])


def test_a_regression_runs_accuracy_says_what_it_counts(cli, results):
    """Accuracy of a regression run is the share of predictions within 0.04 of the target: `run` and `ls`
    say so (both printed a bare "acc")."""
    tiny = ["data=gaussian", "data.dim=8", "data.n_train=128", "data.n_test=64", "model.width=8", "model.depth=2",
            "train.steps=4", "threads=1", f"results={results}"]
    out = cli("run", *tiny, "data.task=regression", "name=reg")
    assert out.exit_code == 0 and "acc(|err|<0.04)" in out.output.replace("\xa0", " "), out.output
    listed = " ".join(cli("ls", results / "reg").output.split())
    assert "acc of a regression run (data.task=regression, data=adding): the share of predictions within 0.04" \
        in listed, listed
    from gradflow import report  # and the report page, under its runs table (it left the note out)

    page = " ".join(report.build([results / "reg"]).split())
    assert "acc of a regression run (data.task=regression, data=adding): the share of predictions within 0.04" \
        in page
    out = cli("run", *tiny, "name=cls")
    assert out.exit_code == 0 and "acc(" not in out.output
    assert "acc of a regression run" not in cli("ls", results / "cls").output


def test_a_key_given_twice_names_its_folder_by_its_last_value():
    """`gradflow run model.depth=2 model.depth=3` runs depth 3 (the last value counts, as in Hydra), so its
    folder is model.depth=3, not the name of a run it is not. (A bug this catches: job_name keeps each key's first value.)"""
    assert job_name(["model.depth=2", "model.width=4", "model.depth=3"]) == "model.depth=3,model.width=4"
    assert job_name("model.depth=2,model.depth=3") == "model.depth=3"
    # `gradflow run +tag=a tag=b` (last_overrides keeps both: one adds the key, the other sets it) runs tag=b
    assert job_name(["+tag=a", "model.depth=2", "tag=b"]) == "model.depth=2,tag=b"


def test_hydras_job_folder_is_the_planned_one_for_values_with_brackets_and_commas():
    """A sweep job's folder is job_name of Hydra's override_dirname (conf/config.yaml's hydra.sweep.subdir);
    `plan` names it from the override list: the two must agree, also for a quoted value holding a comma
    inside parentheses, brackets or an interpolation, else a finished run is never found where it was
    planned. (A bug this catches: split_top no longer nests "(".)"""
    from hydra._internal.config_loader_impl import get_overrides_dirname

    lines = ["model.depth=2", "+tag='f(a,z)'", "optim.betas=[0.9,0.99]", "optim.lr=${gf.div:0.5,model.depth}"]
    dirname = get_overrides_dirname(overrides=parsed_overrides(list(lines)), kv_sep="=", item_sep=",", exclude_keys=[])
    assert job_name(dirname) == job_name(lines)
