"""Keys of another choice: a run refuses them in one line naming the key, the run's choice and the keys
that choice takes; a sweep may still set them across choices (init, optim, norm, model families) and
refuses a key no point takes; a bad sweep point is named by its swept values, not its other overrides."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch

from gradflow import sweep as sweep_mod
from gradflow.choices import CONDITIONAL_KEYS, settings
from gradflow.config import compose, schema
from gradflow.errors import GradflowError
from gradflow.store import flatten

RNN = ["model=rnn", "data=adding", "data.T=5"]
SMALL = ["data=gaussian", "data.n_train=64", "data.n_test=32", "data.dim=8", "model.width=8", "train.steps=2",
         "train.batch_size=16", "threads=1"]


@pytest.mark.parametrize("overrides, key, chosen, takes, owners", [
    (["init=xavier_normal", "init.sw2=2"], "init.sw2", "init=xavier_normal", ["init.gain"], ["init=meanfield"]),
    # the schema's default value is refused too: the override still does nothing
    (["init=xavier_normal", "init.sb2=0.05"], "init.sb2", "init=xavier_normal", ["init.gain"], ["init=meanfield"]),
    (["init=meanfield", "init.mode=fan_out"], "init.mode", "init=meanfield", ["init.sw2", "init.sb2"],
     ["init=kaiming_uniform", "init=kaiming_normal"]),
    (["init=standard", "init.gain=2"], "init.gain", "init=standard", [], ["init=xavier_normal", "init=orthogonal"]),
    ([*RNN, "model.forget_bias=1"], "model.forget_bias", "model=rnn", ["model.hidden", "model.recurrent_init"],
     ["model=lstm"]),
    (["optim.betas=[0.9,0.99]"], "optim.betas", "optim=sgd", ["optim.lr", "optim.momentum"], ["optim=adam"]),
    (["optim=adam", "optim.momentum=0.5"], "optim.momentum", "optim=adam", ["optim.lr", "optim.betas"],
     ["optim=sgd"]),
    (["data=mnist", "data.augment=true"], "data.augment", "data=mnist", ["data.root", "data.subset"],
     ["data=cifar10"]),
])
def test_a_key_of_another_choice_is_one_line_naming_the_choice_and_its_keys(cli, results, overrides, key, chosen,
                                                                             takes, owners):
    out = cli("run", "threads=1", *overrides, f"results={results}")
    assert out.exit_code == 1 and "Traceback" not in out.output, out.output
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {key} does not apply to {chosen}, which takes "), lines
    taken, _, owning = lines[0].partition("which takes ")[2].partition("; it is a key of ")
    assert set(taken.split(", ")) >= set(takes) if takes else taken == "no keys", lines[0]
    assert key not in taken and set(owners) <= set(owning.split(", ")), lines[0]
    assert not results.exists()


def test_keys_of_the_runs_own_choice_are_taken():
    assert compose(["init=meanfield", "init.sw2=2"]).init.sw2 == 2
    assert compose(["init=kaiming_normal", "init.mode=fan_out"]).init.mode == "fan_out"
    # the recurrent schema picks its cell by model.name: the key applies to what the run is
    assert compose([*RNN, "model.name=lstm", "model.forget_bias=1"]).model.forget_bias == 1


def test_a_sweep_across_choices_sets_each_points_own_keys(results):
    """model.branch_layers=2 alone is invalid (it needs model.skip=residual), so each point is composed
    whole: a sweep point keeps accepting the other scheme's key."""
    plan = sweep_mod.plan([*SMALL, "init=orthogonal,meanfield", "init.gain=1.1", "init.sw2=1.21",
                           "model.skip=residual", "model.branch_layers=2", "model.depth=3",
                           f"results={results}"], "inits")
    assert len(plan.jobs) == 2 and len({j.config_hash for j in plan.jobs}) == 2
    for job in plan.jobs:
        flat = settings(flatten(compose(job.overrides, sweep_point=True)))
        own = "init.gain" if "init=orthogonal" in job.overrides else "init.sw2"
        other = {"init.gain", "init.sw2"} - {own}
        assert own in flat and not other & set(flat), (job.overrides, sorted(flat))
    orthogonal = next(j for j in plan.jobs if "init=orthogonal" in j.overrides)
    with pytest.raises(GradflowError, match="init.sw2 does not apply to init=orthogonal"):
        compose(orthogonal.overrides)  # the same point as a single run


@pytest.mark.parametrize("swept, point, bad", [
    ("model.depth=2,0", "model.depth=0", "model.depth=0"),
    ("init=orthogonal,bogus", "init=bogus", "init='bogus'"),
    ("model.activation=tanh,bogus", "model.activation=bogus", "model.activation='bogus'"),
    # a key only the sgd point takes is still checked there, and the error names that point
    ("optim=sgd,adam optim.momentum=0.5,2", "optim=sgd optim.momentum=2", "optim.momentum=2 must be in [0, 1)"),
])
def test_a_bad_sweep_point_names_only_the_point_and_the_bad_value(cli, results, swept, point, bad):
    out = cli("sweep", *SMALL, *swept.split(), f"results={results}", "--name", "bad")
    assert out.exit_code == 1, out.output
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: sweep point {point}: ") and bad in lines[0], lines
    assert not any(fixed in lines[0] for fixed in (*SMALL, f"results={results}")), lines[0]
    assert not results.exists() or not any(results.rglob("run.json"))


# a sweep across optimizers, normalizations or model families: each point takes its own choice's keys
CROSSING = [
    ("optim=sgd,adam optim.momentum=0.5", "optim=sgd", "optim.momentum", 0.5, "optim=adam",
     "optim.momentum does not apply to optim=adam, which takes "),
    ("norm=none,batchnorm norm.eps=1e-3", "norm=batchnorm", "norm.eps", 1e-3, "norm=none",
     "norm.eps=0.001 does not apply to this run: norm=none has no normalization layer"),
    ("model.skip=none,residual model.alpha=0.5", "model.skip=residual", "model.alpha", "0.5", "model.skip=none",
     "model.alpha=0.5 does not apply to this run: it scales residual branches (model.skip=residual); leave it out, "
     "or set model.alpha=1.0 (its default) where a preset sets it"),
    ("optim.schedule=constant,step optim.milestones=[1] optim.gamma=0.5", "optim.schedule=step", "optim.gamma", 0.5,
     "optim.schedule=constant", "optim.gamma=0.5 does not apply to this run: optim.schedule=step reads it"),
    ("probe.every=0,5 probe.points=10", "probe.every=0", "probe.points", 10, "probe.every=5",
     "probe.points=10 does not apply to this run: probe.every=5 probes every 5 steps (probe.every=0 reads it)"),
    ("probe.jacobian=false,true probe.jacobian_inputs=2", "probe.jacobian=true", "probe.jacobian_inputs", 2,
     "probe.jacobian=false", "probe.jacobian_inputs=2 does not apply to this run: probe.jacobian=true reads it"),
]


@pytest.mark.parametrize("swept, taker, key, value, other, refused", CROSSING)
def test_a_sweep_across_optimizers_or_norms_runs_each_point_with_its_own_keys(cli, results, swept, taker, key,
                                                                            value, other, refused):
    import hashlib
    import json

    from gradflow import store

    out = cli("sweep", *swept.split(), "train.steps=2", "data=gaussian", "model.depth=2", "threads=1",
              f"results={results}", "--name", "crossing")
    assert out.exit_code == 0, out.output
    runs = {p.parent.name: json.loads(p.read_text()) for p in (results / "crossing").glob("*/run.json")}
    assert set(runs) == {taker, other} and all(r["status"] == "ok" for r in runs.values()), runs.keys()
    assert runs[taker]["config"][key] == value
    assert key not in runs[other]["config"]  # not a setting of the run that ignores it (nor a column of compare)
    # the run that ignores the key is the run it always was: its identity is the hash of its whole flat config
    # as Hydra composes it alone, the ignored key at its default (as every run recorded it before)
    alone = flatten(compose(["data=gaussian", "model.depth=2", "train.steps=2", "threads=1", other]))
    before = {**settings(alone), **{k: alone[k] for k in CONDITIONAL_KEYS if k in alone}}  # its run.json's before
    ident = {k: v for k, v in before.items() if k not in store.NOT_IDENTITY}
    assert runs[other]["config_hash"] == hashlib.sha1(json.dumps(ident, sort_keys=True, default=str).encode()
                                                      ).hexdigest()[:16]
    # the same point as a single run is refused, with a single run's message
    out = cli("run", "train.steps=1", "data=gaussian", "model.depth=2", other, f"{key}={value}",
              *(["optim.milestones=[1]"] if key == "optim.gamma" else []), f"results={results}", "name=alone")
    lines = out.stderr.strip().splitlines()
    assert out.exit_code == 1 and len(lines) == 1 and lines[0].startswith(f"error: {refused}"), out.output


def test_a_sweep_across_model_families_sets_each_familys_own_keys(results):
    plan = sweep_mod.plan([*SMALL, "model=mlp,cnn", "model.width=64", "model.channels=16", "model.depth=2",
                           f"results={results}"], "families")
    mlp, cnn = (settings(flatten(compose(next(j for j in plan.jobs if family in j.overrides).overrides,
                                         sweep_point=True))) for family in ("model=mlp", "model=cnn"))
    assert mlp["model.width"] == 64 and "model.channels" not in mlp
    assert cnn["model.channels"] == 16 and "model.width" not in cnn


@pytest.mark.parametrize("overrides, line, owners", [
    ("optim=adam optim.momentum=0.5,0.6", "no point of this sweep takes optim.momentum: optim.momentum does not "
     "apply to optim=adam, which takes ", "; it is a key of optim=sgd"),
    ("norm.eps=1e-3,1e-4", "no point of this sweep takes norm.eps: norm=none has no normalization layer "
     "(norm=batchnorm|layernorm read it)", ""),
    ("model=mlp,cnn model.hidden=8", "no point of this sweep takes model.hidden: model.hidden does not apply "
     "to model=mlp, which takes ", "; it is a key of model=rnn, model=lstm, model=gru"),
    ("model=mlp,cnn model.alpha=0.5", "no point of this sweep takes model.alpha: it scales residual branches "
     "(model.skip=residual)", ""),
    ("optim.gamma=0.5,0.2", "no point of this sweep takes optim.gamma: optim.schedule=step reads it", ""),
])
def test_a_key_no_point_takes_is_refused_naming_the_choices_that_take_it(cli, results, overrides, line, owners):
    out = cli("sweep", *SMALL, *overrides.split(), f"results={results}", "--name", "none")
    assert out.exit_code == 1, out.output
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {line}") and lines[0].endswith(owners), lines
    assert not results.exists() or not any(results.rglob("run.json"))


G = ["data=gaussian", "data.n_train=64", "data.n_test=32", "data.dim=16", "train.batch_size=16"]
TF = ["model=transformer", "model.depth=1", "model.d_model=8", "model.heads=2", "data=chars", "data.T=8",
      "data.n_train=16", "data.n_test=8", "train.batch_size=8"]


@pytest.mark.parametrize("overrides, reads", [
    (G, False), ([*G, "norm=batchnorm"], True), ([*G, "norm=layernorm"], True),
    ([*G, "model=cnn", "model.depth=2"], False), ([*G, "model=cnn", "model.depth=2", "norm=layernorm"], True),
    ([*G, "model=resnet"], True), ([*G, "model=resnet", "model.variant=fixup"], False),
    ([*G, "model=resnet", "model.variant=skipinit"], False),
    (TF, True), ([*TF, "model.norm_kind=rmsnorm"], True), ([*TF, "model.ln=none"], False),
    (RNN, False), (["model=lstm", "data=adding", "data.T=5"], False),
])
def test_norm_eps_is_taken_where_a_layer_reads_it_and_refused_elsewhere(overrides, reads):
    """Whether norm.eps is a setting is checked against the built model: some module of it has an `eps`."""
    import torch

    from gradflow import data as datasets
    from gradflow import models

    def net(cfg):
        data = datasets.build(cfg.data, torch.device("cpu"))
        return models.build(cfg, data.input_shape, data.n_classes, per_step=data.task in ("per_step", "next_token"),
                            vocab=data.vocab)

    if reads:
        eps = {m.eps for m in net(compose([*overrides, "norm.eps=1e-3"])).modules() if hasattr(m, "eps")}
        assert eps == {1e-3}, eps
    else:
        assert not [m for m in net(compose(overrides)).modules() if hasattr(m, "eps")]
        with pytest.raises(GradflowError, match=r"^norm\.eps=1e-3 does not apply to this run: "):
            compose([*overrides, "norm.eps=1e-3"])


@pytest.mark.parametrize("ln", ["pre", "post", "none"])
def test_a_transformers_norm_kind_is_taken_where_it_has_norms_and_refused_elsewhere(ln):
    import torch

    from gradflow import data as datasets
    from gradflow import models

    overrides = [*TF, f"model.ln={ln}", "model.norm_kind=rmsnorm"]
    if ln == "none":
        with pytest.raises(GradflowError, match=r"^model\.norm_kind='rmsnorm' does not apply to this run: model\.ln="
                                                r"none has no norm layers"):
            compose(overrides)
        return
    cfg = compose(overrides)
    data = datasets.build(cfg.data, torch.device("cpu"))
    net = models.build(cfg, data.input_shape, data.n_classes, per_step=True, vocab=data.vocab)
    kinds = {type(m).__name__ for m in net.modules() if hasattr(m, "eps")}
    assert kinds == {"RMSNorm"}, kinds


def test_a_scripts_own_config_keeps_keys_gradflow_would_read_only_where_others_say():
    """A Recorder's config is the script's: its optim.gamma beside optim.schedule=exponential is a setting
    (it was left out of ls, --where and the hash), and so is alpha beside a model gradflow does not have."""
    from gradflow.store import config_hash

    mine = {"optim.schedule": "exponential", "optim.gamma": 0.5, "model.name": "resnet50", "model.skip": "x",
            "model.alpha": 0.2, "norm.name": "group", "norm.eps": 1e-6}
    assert settings(mine) == mine
    assert config_hash(mine) != config_hash({**mine, "optim.gamma": 0.9})
    ours = flatten(compose(["optim.schedule=cosine"]))  # gradflow's own: read where its choices say
    assert "optim.gamma" not in settings(ours) and "model.alpha" not in settings(ours)


@dataclass
class LinNetConfig(schema.ModelConfig):
    """The schema of the README's recipe's family: no activation key."""
    name: str = "linnet"
    depth: int = 2
    width: int = 4


def test_a_new_family_of_no_activation_key_and_no_norm_layer_is_checked_as_the_readme_says(monkeypatch):
    # README's recipe for a model family, followed: `_model` read model.activation of every family (a traceback
    # for a linear net of none), and norm=batchnorm ran it, "batch-norm statistics unsettled" of a net with none
    from omegaconf import OmegaConf

    from gradflow.config import validation

    monkeypatch.setitem(schema.MODEL_SCHEMAS, "linnet", LinNetConfig)
    m = OmegaConf.structured(LinNetConfig())
    validation._model(m, "none")
    with pytest.raises(GradflowError, match=r"^norm=batchnorm does not apply to model=linnet: it places no norm= "
                                            r"layer \(families that do: mlp, cnn, resnet\); leave norm=none$"):
        validation._model(m, "batchnorm")


class LinNet(torch.nn.Module):
    """The README's recipe for a model family: a deep linear net, plain arguments, probe points, from_config."""

    def __init__(self, dim: int, width: int, depth: int, n_classes: int):
        from gradflow.models import ProbePoint

        super().__init__()
        sizes = [dim] + [width] * depth + [n_classes]
        self.layers = torch.nn.Sequential(*(torch.nn.Linear(a, b) for a, b in zip(sizes, sizes[1:])))
        self.probe_points = [ProbePoint(f"linear{i}" if i < depth else "head", layer, None)
                             for i, layer in enumerate(self.layers)]

    @classmethod
    def from_config(cls, cfg, input_shape, n_classes):
        return cls(int(np.prod(input_shape)), cfg.model.width, cfg.model.depth, n_classes)

    def forward(self, x):
        return self.layers(x.flatten(1))


def test_a_new_family_of_no_activation_key_runs_and_records_its_layers(monkeypatch, tmp_path):
    # the run read model.activation of every family: `building the data or the model failed: ConfigAttributeError:
    # Key 'activation' not in 'LinNetConfig'`, where the README says a family's schema needs none
    from omegaconf import OmegaConf

    from gradflow import job, models, store

    monkeypatch.setitem(schema.MODEL_SCHEMAS, "linnet", LinNetConfig)
    monkeypatch.setitem(models.FAMILIES, "linnet", LinNet)
    cfg = compose(["data=gaussian", "data.n_train=64", "data.n_test=16", "data.dim=8", "train.steps=2",
                   "train.batch_size=16", "threads=1", f"results={tmp_path}"])
    OmegaConf.set_struct(cfg, False)
    cfg.model = OmegaConf.structured(LinNetConfig(depth=3, width=8))
    record = job.execute(cfg, tmp_path / "lin" / "run")
    assert record["status"] == "ok", record.get("error")
    layers = store.load(tmp_path / "lin")
    grads = layers[(layers["quantity"] == "grad_norm") & (layers["step"] == 0)]
    assert list(grads.sort_values("layer")["name"]) == ["linear0", "linear1", "linear2", "head"]
    assert (grads["value"] > 0).all()
