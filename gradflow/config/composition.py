"""Composition: conf/config.yaml with a run's overrides, through Hydra, validated; Hydra's composes of the
files kept per process, so that configs differing in plain values alone (a sweep's points) cost ~0.5 ms."""

from __future__ import annotations

import copy
import functools
import pickle
from typing import Any

from omegaconf import DictConfig, OmegaConf

from gradflow.choices import CHOICE_KEYS
from gradflow.config.messages import hydra_error_message, in_preset, key_of_another_choice, overruled
from gradflow.config.schema import CONF_DIR, GROUP_KEYS, not_a_key_of
from gradflow.config.validation import validate
from gradflow.errors import GradflowError
from gradflow.overrides import as_typed, last_overrides, override_key


# --- composition ---------------------------------------------------------------------------------
def compose(overrides: list[str] | tuple[str, ...] = (), sweep_point: bool = False,
            typed: list[str] | None = None) -> DictConfig:
    """Compose conf/config.yaml with `key=value` overrides, as `gradflow run` does, and validate it.

    An override of a key the run's choice does not take (init.sw2 with init=xavier_normal) is refused,
    except in a sweep point: a sweep may set init.gain and init.sw2 across init=orthogonal,meanfield (or
    optim.momentum across optim=sgd,adam), and each point keeps the keys of its own choice (`settings`;
    a key another schema of the group has is left out of the point: adam's config has no momentum).
    `typed`: the overrides as the user typed them, which an error quotes (a sweep point's train.steps=100.0
    was train.steps=1e2 on the command line; the config's optim.momentum=2.0 was optim.momentum=2)."""
    overrides = last_overrides(overrides)
    quoted = overrides if typed is None else last_overrides(typed)  # (what an error quotes)
    try:
        cfg = hydra_compose(overrides)
    except GradflowError:
        raise
    except Exception as e:  # Hydra/OmegaConf errors: make them one line that names the key
        other = sweep_point and key_of_another_choice(e)
        if other:
            return compose([o for o in overrides if override_key(o) != other or o[0] in "+~"], sweep_point=True,
                           typed=typed)
        raise GradflowError(hydra_error_message(e, quoted)) from None
    try:
        validate(cfg, sweep_point, overruled(overrides))
    except GradflowError as e:  # (it quotes the config's values: optim.momentum=2 reads 2.0 there)
        raise GradflowError(in_preset(as_typed(str(e), quoted), overrides)) from None
    if not sweep_point:
        _keys_apply(cfg, overrides)
    return cfg


# Hydra's composes of this process, by the overrides that are not plain values (what `hydra_compose` copies)
_structures: dict[tuple[str, ...], bytes | DictConfig] = {}
STRUCTURES = 64  # kept at most (~6 KB each, pickled), the oldest dropped first


def hydra_compose(overrides) -> DictConfig:
    """Hydra's compose of conf/config.yaml with `overrides`. Hydra composes the files the group choices
    name, then applies the value overrides to the result (~90 ms, nearly all of it the first part); here
    the first part is done once per distinct set of the overrides that are not plain values (groups, +/~
    keys, interpolations, dicts, list items: `split_structure`) and each call applies its plain values to a copy
    of that, as Hydra applies them (~0.5 ms): a sweep's planning, `bench`, a script or the test suite
    compose many configs that differ in values alone. Overrides of hydra keys are composed whole. (A
    structure's files under conf/ and experiments/ are read once per process: an edit made while a process
    runs reaches the next one.)"""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl

    parsed = parsed_overrides(list(overrides))  # (a line Hydra cannot parse fails here as it would there)
    structure, values = split_structure(parsed)
    if structure is None:  # hydra keys (a searchpath that names files of the moment): composed whole every time
        return compose_whole(overrides)
    if structure in _structures:
        cfg = copied(_structures[structure])
    else:
        cfg = compose_whole(structure)
        _structures[structure] = kept(cfg)  # (before the values go on)
        if len(_structures) > STRUCTURES:
            del _structures[next(iter(_structures))]
    ConfigLoaderImpl._apply_overrides_to_config(values, cfg)  # (its errors are Hydra's compose's, word for word)
    return cfg


def split_structure(parsed: list) -> tuple[tuple[str, ...] | None, list]:
    """(The lines of the overrides that are not plain values, the plain ones): a plain value whose key is
    one of the others', or inside or around it (~model.kwargs model.kwargs.a=1), goes with them, as the
    order of the two then matters; not a group's choice, which Hydra applies before every value. (None, [])
    where an override sets a hydra key."""
    if any(o.is_hydra_override() for o in parsed):
        return None, []
    # (a group's choice, init=meanfield, +experiment=x, goes into the defaults list, which Hydra composes before
    # it applies any value, whatever their order: its keys' values stay plain, init.sw2=1.5 one structure's)
    others = [f"{o.key_or_group}." for o in parsed if not sets_plain_value(o) and o.key_or_group not in GROUP_KEYS]
    values = [o for o in parsed if sets_plain_value(o) and not any(
        k.startswith(f"{o.key_or_group}.") or f"{o.key_or_group}.".startswith(k) for k in others)]
    return tuple(o.input_line for o in parsed if o not in values), values


def compose_whole(overrides) -> DictConfig:
    from hydra import compose as compose_with_hydra
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
            return compose_with_hydra(config_name="config", overrides=list(overrides))
    finally:
        GlobalHydra.instance().clear()


def simple_override(override: str) -> bool:
    """A plain key=value on an existing key (no group choice, no +/~, no interpolation, no dict, which
    merges into its node, and no list item)."""
    key = override_key(override)
    return (key not in GROUP_KEYS and "/" not in key and override[0] not in "+~"
            and "${" not in override.replace("\\", "")
            and not override.split("=", 1)[-1].lstrip().startswith("{")  # a dict merges into the node
            and not any(part.isdigit() for part in key.split("."))  # an item of a list (optim.betas.0)
            and not key.startswith("hydra"))


def sets_plain_value(o) -> bool:
    """A parsed override that sets a plain value, which Hydra applies to the config it composed from the
    others, and so can be applied to a copy of a config composed already."""
    return simple_override(o.input_line) and o.package is None and not isinstance(o.value(), dict)


@functools.cache
def override_parser():
    """Hydra's override grammar, made once: for override lines read without a config loader."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create()


_parsed_lines: dict[str, Any] = {}  # each override line Hydra's grammar parsed, by its text (~0.4 ms a line)


def parsed_overrides(lines: list[str]) -> list:
    """Hydra's parsed overrides of `lines`, each distinct line parsed once per process (a grid's jobs, a
    run's composes, share most lines)."""
    new = [line for line in dict.fromkeys(lines) if line not in _parsed_lines]
    if new:
        _parsed_lines.update(zip(new, override_parser().parse_overrides(new)))
    return [_parsed_lines[line] for line in lines]


def forget_parsed_overrides() -> None:
    """Drop the override lines `parsed_overrides` kept (a sweep's, once it has ended)."""
    _parsed_lines.clear()


def kept(cfg: DictConfig) -> bytes | DictConfig:
    """`cfg` to copy again and again: pickled, which `copied` unpickles in ~2 ms where copy.deepcopy of its
    ~150 OmegaConf nodes takes ~8. Where it does not pickle (in a joblib worker, a plugin's structured config
    class is imported twice, and pickle finds another class under its name), a deep copy."""
    try:
        return pickle.dumps(cfg)
    except (pickle.PicklingError, TypeError, AttributeError):
        return copy.deepcopy(cfg)


def copied(kept: bytes | DictConfig) -> DictConfig:
    """A fresh copy of what `kept` made."""
    return pickle.loads(kept) if isinstance(kept, bytes) else copy.deepcopy(kept)


def _keys_apply(cfg: DictConfig, overrides) -> None:
    """Every key an override sets is one the run's choice of its group takes (CHOICE_KEYS: the keys a
    shared schema has for some of its choices only; Hydra refuses the keys of another schema itself)."""
    for o in overrides:
        key = override_key(o)
        if key in CHOICE_KEYS and not o.startswith("~"):
            chosen = OmegaConf.select(cfg, CHOICE_KEYS[key][0])
            if chosen not in CHOICE_KEYS[key][1]:
                raise GradflowError(not_a_key_of(key, chosen))


def config_loader():
    """Hydra's loader over conf/ and the ConfigStore: what a sweep's glob(*) lists a group's choices from."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.utils import create_config_search_path

    return ConfigLoaderImpl(config_search_path=create_config_search_path(str(CONF_DIR)))
