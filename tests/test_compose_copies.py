"""gradflow.config composes each set of structural overrides (groups, +/~ keys, dicts, interpolations) with Hydra
once and applies plain values to a copy, as Hydra applies value overrides after composing: every config and
every error must be Hydra's own whole compose's, word for word, whatever was composed before."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from gradflow.config import composition as config_mod
from gradflow.errors import GradflowError


def _outcome(compose, overrides):
    """(the config as YAML, its struct flag) or (the error's type, its text)."""
    try:
        cfg = compose(list(overrides))
    except Exception as e:  # (Hydra's and OmegaConf's own exceptions: the same ones either way)
        return type(e).__name__, str(e)
    return OmegaConf.to_yaml(cfg), OmegaConf.is_struct(cfg)


@pytest.fixture
def fresh(monkeypatch):
    """No structure composed yet in this test."""
    monkeypatch.setattr(config_mod, "_structures", {})
    return config_mod._structures


CASES = [
    ["data=gaussian", "model.depth=3", "model.width=16"],
    ["data=gaussian", "model.depth=7", "train.steps=2", "optim.lr=0.5"],  # the same structure, other values
    ["model.width=8", "data=gaussian"],  # (its order differs: the same structure)
    ["model=cnn", "model.channels=4", "data=gaussian"],
    ["init=meanfield", "init.sw2=1.7", "init.sb2=0.1"],
    ["init.sw2=1.9", "init=meanfield"],  # (a group's choice comes before every value, whatever the order)
    ["model.depth=9", "+experiment=depth-study"],
    ["optim=adam", "optim.betas=[0.8,0.9]", "optim.lr=1e-3"],
    ["+experiment=depth-study", "model.depth=9"],
    ["model=custom", "model.target=torch.nn:Linear", "+model.kwargs.in_features=4", "model.kwargs.in_features=5"],
    # errors: a bad value, an unknown key, a key of another choice, a bad group choice, a bad line
    ["data=gaussian", "model.depth=abc"],
    ["data=gaussian", "model.dpth=3"],
    ["init=xavier_normal", "init.sw2=2.0"],
    ["model=mlpp", "model.depth=3"],
    ["data=gaussian", "model.depth=="],
    # a plain value whose key a structural override deletes or adds: the order decides, as in Hydra
    ["~train.grad_clip", "train.grad_clip=1.0"],
    ["train.grad_clip=1.0", "~train.grad_clip"],
    ["model=custom", "model.target=torch.nn:Linear", "model.kwargs.in_features=5", "+model.kwargs.in_features=4"],
]


@pytest.mark.parametrize("warm", [False, True], ids=["first", "after-the-others"])
def test_every_compose_is_hydras_whole_compose(fresh, warm):
    """Each case alone (its structure composed for it) and after every other case (copies of structures
    the others composed, with their values applied before): Hydra's config and errors."""
    if warm:
        for overrides in CASES:
            _outcome(config_mod.hydra_compose, overrides)
    for overrides in CASES:
        assert _outcome(config_mod.hydra_compose, overrides) == _outcome(config_mod.compose_whole,
                                                                           overrides), overrides
    # (the cases did reach the copying path: data=gaussian's structure served four of them, init=meanfield's two)
    assert ("data=gaussian",) in fresh and ("init=meanfield",) in fresh and len(fresh) < len(CASES)


def test_a_copy_carries_neither_an_earlier_composes_values_nor_what_its_caller_changed(fresh):
    first = config_mod.hydra_compose(["data=gaussian", "model.depth=3", "model.width=16"])
    first.model.width = 999  # a caller writing into its config (building a model may)
    second = config_mod.hydra_compose(["data=gaussian", "model.depth=5"])
    whole = config_mod.compose_whole(["data=gaussian"])
    assert second.model.depth == 5 and second.model.width == whole.model.width != 999
    assert len(fresh) == 1  # one Hydra compose of data=gaussian; the second was a copy


def test_a_hydra_key_is_composed_whole_and_the_kept_structures_are_bounded(fresh, monkeypatch):
    config_mod.hydra_compose(["data=gaussian", "hydra.job.name=x"])  # (a searchpath names files of the moment)
    assert fresh == {}
    monkeypatch.setattr(config_mod, "STRUCTURES", 2)
    for init in ("orthogonal", "xavier_normal", "kaiming_normal"):
        config_mod.hydra_compose([f"init={init}", "seed=1"])
    assert list(fresh) == [("init=xavier_normal",), ("init=kaiming_normal",)]  # the oldest dropped


def test_the_user_facing_errors_are_unchanged_on_a_copied_structure(fresh):
    """What `gradflow run` says of a bad value is the same whether its structure was composed before."""
    config_mod.compose(["data=gaussian", "model.depth=3"])
    with pytest.raises(GradflowError, match=r"model\.depth") as copied:
        config_mod.compose(["data=gaussian", "model.depth=abc"])
    fresh.clear()
    with pytest.raises(GradflowError) as whole:
        config_mod.compose(["data=gaussian", "model.depth=abc"])
    assert str(copied.value) == str(whole.value)
