"""Keys of another choice: a run refuses them in one line naming the key, the run's choice and the keys
that choice takes; a sweep may still set them across choices; a bad sweep point is named by its swept
values, not its other overrides."""

from __future__ import annotations

import pytest

from gradflow import sweep as sweep_mod
from gradflow.config import compose, settings
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
])
def test_a_bad_sweep_point_names_only_the_point_and_the_bad_value(cli, results, swept, point, bad):
    out = cli("sweep", *SMALL, *swept.split(), f"results={results}", "--name", "bad")
    assert out.exit_code == 1, out.output
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: sweep point {point}: ") and bad in lines[0], lines
    assert not any(fixed in lines[0] for fixed in (*SMALL, f"results={results}")), lines[0]
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
        with pytest.raises(GradflowError, match=r"^norm\.eps=0\.001 does not apply to this run: "):
            compose([*overrides, "norm.eps=1e-3"])
