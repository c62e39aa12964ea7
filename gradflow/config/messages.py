"""A Hydra/OmegaConf composition error as one line: the key named (its nearest known keys where it is
misspelled), the choices, and the preset file where the error is in one."""

from __future__ import annotations

import re
from dataclasses import fields

from omegaconf import OmegaConf

from gradflow.choices import CONDITIONAL_KEYS
from gradflow.config.schema import (
    EXPERIMENTS_DIR, GROUP_KEYS, GROUP_SCHEMAS, SECTIONS, UNREADABLE_EXPERIMENTS, Config, choices_with_key,
    experiment_choices, group_choices, known_keys, not_a_key_of)
from gradflow.config.validation import show_value
from gradflow.errors import did_you_mean, shorten
from gradflow.overrides import override_key, override_value


# what a key is often called elsewhere -> its name here (learning_rate=0.1: optim.lr)
KEY_SYNONYMS = {"learning_rate": "lr", "epochs": "steps", "iterations": "steps", "iters": "steps",
                "batchsize": "batch_size", "bs": "batch_size", "n_layers": "depth", "num_layers": "depth",
                "layers": "depth", "wd": "weight_decay"}


def _elsewhere(name: str) -> str:
    """ (did you mean optim.lr?) for a key whose last part (or its usual other name) is a key of another
    section (train.lr, lr, optim.learning_rate); "" where none is."""
    leaf = name.rsplit(".", 1)[-1].lower()
    leaf = KEY_SYNONYMS.get(leaf, leaf)
    same = [k for k in known_keys() if k.rsplit(".", 1)[-1] == leaf and k != name]
    return f" (did you mean {' or '.join(same[:3])}?)" if same else ""


def _chosen(group: str, overrides) -> str | None:
    """The group's choice (its schema's name) that `overrides` compose to, or None if they do not."""
    from gradflow.config.composition import hydra_compose  # (composition imports this module for its errors)

    try:
        return OmegaConf.select(hydra_compose(overrides), f"{group}.name")
    except Exception:
        return None


def hydra_error_message(e: Exception, overrides=()) -> str:
    """One line from a Hydra/OmegaConf composition error of `overrides`, naming the key and the valid choices,
    and the preset file where the error is in one (`In 'experiment/NAME'`: its key was said without its
    section, `unknown key 'dpth'`, and the file not at all)."""
    text = _error_text(e)
    preset = re.match(r"In 'experiment/([^']+)'", text)
    said = _hydra_error_message(e, text, overrides)
    return _in_file(preset.group(1), said) if preset else in_preset(said, overrides)


def _in_file(preset: str, message: str) -> str:
    return f"+experiment={preset}: in {EXPERIMENTS_DIR / preset}.yaml, {message}"


def _preset(overrides) -> str | None:
    """The one preset `overrides` add (+experiment=NAME, a file of experiments/), or None."""
    value = override_value(overrides, "experiment")
    return value if value in experiment_choices("experiment") else None


def _preset_sets(name: str) -> set[str]:
    """The keys, and the groups its defaults list chooses, that the preset `name` sets."""
    try:
        node = OmegaConf.to_container(OmegaConf.load(EXPERIMENTS_DIR / f"{name}.yaml"))
    except Exception:
        return set()
    if not isinstance(node, dict):
        return set()
    groups = {str(k).removeprefix("override").strip().lstrip("/") for entry in node.pop("defaults", None) or []
              if isinstance(entry, dict) for k in entry}
    return groups | set(_leaves(node))


def _leaves(node: dict, prefix: str = ""):
    """Each leaf's dotted key (config imports no gradflow module but leaf registries: not store.flatten)."""
    for k, v in node.items():
        if isinstance(v, dict):
            yield from _leaves(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}"


def overruled(overrides) -> frozenset[str]:
    """The keys of CONDITIONAL_KEYS that the preset of `overrides` sets and the command line leaves unread by
    a choice of its own (probe=every beside depth-study's probe.points, model.skip=none beside residual-vs-
    plain's model.alpha): the preset set them for the runs that read them, as a sweep sets norm.eps across
    norm=none,batchnorm, so such a run leaves them out. A key the command line sets itself is not one."""
    name = _preset(overrides)
    if not name:
        return frozenset()
    typed = {override_key(o) for o in overrides}
    return frozenset(key for key in _preset_sets(name) & CONDITIONAL_KEYS.keys() if key not in typed and any(
        need == k or need.startswith(f"{k}.") for need in CONDITIONAL_KEYS[key][0] for k in typed))  # (probe=every)


def in_preset(message: str, overrides) -> str:
    """`message` about a key the command line does not set and its preset does (`+experiment=NAME`) named with
    the preset's file: model.alpha of residual-vs-plain's residual net, beside model.skip=none, blamed a key the
    user never typed; a preset's `override /init: meanfeld` read as if init= had been typed."""
    name = _preset(overrides)
    key = re.match(r"([\w.]+)(?:=| )", message)
    if not name or not key or message.startswith("+experiment=") or key.group(1) not in _preset_sets(name):
        return message
    if any(override_key(o) == key.group(1) for o in overrides):
        return message
    return _in_file(name, message)


def _hydra_error_message(e: Exception, text: str, overrides) -> str:
    twice = re.match(r"Multiple values for (\w+)\. To override a value use 'override \w+: ([^']+)'", text)
    preset = _preset(overrides)
    if twice and preset and twice.group(1) in _preset_sets(preset):  # (a preset's `- /init: meanfield`; Hydra's
        # own advice, `override init:`, then failed too)
        return _in_file(preset, f"a preset chooses {twice.group(1)} as a change to the default: write `- override "
                                f"/{twice.group(1)}: {twice.group(2)}` in its defaults list")
    relative = re.search(r"'experiment/(\w+)@\1'", text)
    if relative:  # (`- override init: meanfield`: a group under experiment/, which has none)
        return (f"a preset's group is written from the top: `- override /{relative.group(1)}: CHOICE` in its "
                "defaults list (with the /)")
    if "override_grammar" in text or "mismatched input" in text or "token recognition error" in text:
        detail = text.split(" See https")[0].strip().splitlines()[0]
        return (f"cannot parse an override ({detail}); write overrides as key=value and quote values with "
                "parentheses or spaces, e.g. 'data.root=\"/my data\"'")
    missing = re.search(r"Could not find '([^']+)/([^']*)'", text)  # (an empty choice too: model=)
    if missing:
        group, value = missing.groups()
        group = group.lstrip("/")
        if group.startswith("experiment/"):  # (+experiment=reproduce/he2015: a preset's name with a slash, read
            group, value = "experiment", f"{group.partition('/')[2]}/{value}"  # as a group of no choices)
        if group == "experiment" and value.startswith("reproduce/"):
            return (f"+experiment={value} is not a preset: the reproductions run by `gradflow reproduce "
                    f"{value.partition('/')[2]}`; presets: {', '.join(experiment_choices(group))} (the files of "
                    f"{EXPERIMENTS_DIR}/)")
        if group == "experiment" and value in UNREADABLE_EXPERIMENTS:
            return (f"+experiment={value}: {EXPERIMENTS_DIR / value}.yaml cannot be read: "
                    f"{shorten(UNREADABLE_EXPERIMENTS[value], 200)}")
        choices = group_choices(group) or experiment_choices(group)
        where = f" (the files of {EXPERIMENTS_DIR}/)" if group == "experiment" else ""  # (not the working folder's)
        return (f"{group}={value!r} is not a known choice{did_you_mean(value, choices)}; "
                f"choices: {', '.join(choices)}{where}")
    full_key = re.search(r"full_key: (\S+)", text)
    if (unknown := _unknown_key(text)) is not None:
        name = unknown or "?"
        if full_key and "." not in name and full_key.group(1).endswith(f".{name}"):  # (a preset's model: {dpth: 4})
            name = full_key.group(1)
        if choices_with_key(name):  # a key of another choice: name the run's, and the keys it takes
            chosen = _chosen(name.partition(".")[0], [o for o in overrides if override_key(o) != name])
            if chosen in GROUP_SCHEMAS[name.partition(".")[0]]:
                return not_a_key_of(name, chosen)
            return f"{name} does not apply to this run: it is a key of {', '.join(choices_with_key(name))}"
        if name.startswith("model.kwargs.") and _chosen("model", [o for o in overrides
                                                                  if override_key(o) != name]) == "custom":
            # (a custom model's constructor arguments are new keys: did-you-mean offered model.width)
            given = next((o for o in overrides if override_key(o) == name), f"{name}=VALUE")
            return (f"{name} is a new key under model.kwargs (the custom model's constructor arguments): "
                    f"write it +{given.lstrip('~')}, as Hydra adds a key")
        if name == "experiment":  # (a preset adds itself: +experiment=NAME, as the README's commands write it)
            given = next((o for o in overrides if override_key(o) == name), "experiment=NAME")
            return (f"{shorten(given, 60)}: an experiment preset is added with a +: write +{shorten(given, 60)}; "
                    f"choices: {', '.join(experiment_choices('experiment'))}")
        top = [f.name for f in fields(Config) if f.name not in SECTIONS]
        # (a key of another section by its last part: train.lr; else the nearest: modle=cnn, model)
        near = _elsewhere(name) or did_you_mean(name, known_keys() if "." in name else (*SECTIONS, *top))
        others = [f"{show_value(k)}{_elsewhere(k) or did_you_mean(k, known_keys() if '.' in k else (*SECTIONS, *top))}"
                  for k in _other_unknown(name, overrides)]  # (Hydra stops at the first: name them all at once)
        return (f"unknown key{'s' if others else ''} {', '.join([f'{show_value(name)}{near}', *others])}; "
                f"sections: {', '.join(SECTIONS)}; "
                f"top-level keys: {', '.join(top)}; "
                "see `gradflow run --help` for every key (add a new key with +key=value only if you mean to)")
    if full_key:
        value = re.search(r"Value '([^']*)' (?:of type '\w+' )?could not be converted to (\w+)", text)
        if value:
            key, kind = full_key.group(1), value.group(2).lower()
            shown = override_value(overrides, key) or value.group(1)  # what the user wrote (1e10), not OmegaConf's 1e10.0
            hint = "; write a whole number without a point or an exponent" if kind == "integer" and re.fullmatch(
                r"[-+]?[\d.]+(e[-+]?\d+)?", shown, re.I) else ""
            return f"{key}={show_value(shown)} is not a valid {kind}{hint}"
        if "is not Optional" in text:  # key=null ("field 'model.activation' is not Optional")
            key = full_key.group(1)
            return f"{key}=null is not allowed: give {key} a value (`gradflow run --help` lists each key's default)"
        if "is not a ListConfig" in text:  # a single value for a list key
            key = full_key.group(1)
            shown = override_value(overrides, key) or "..."
            return f"{key}={shown} is not a list: write {key}=[{shown}] (items between brackets, comma-separated)"
        detail = str(e.__cause__ or e).strip().splitlines()[0]
        return f"{full_key.group(1)}: {detail}"
    return " ".join(text.split())


def _other_unknown(name: str, overrides) -> list[str]:
    """The keys `overrides` set, besides `name`, that no choice of any group has (a new key's +key=value,
    a group's choice, Hydra's own keys and a custom model's kwargs aside)."""
    known = {*known_keys(), *GROUP_KEYS}
    keys = (override_key(o) for o in overrides if "=" in o and not o.startswith("+"))
    return list(dict.fromkeys(k for k in keys if k != name and k not in known and not k.startswith(
        ("hydra.", "hydra/", "model.kwargs."))))


def _error_text(e: Exception) -> str:
    return str(e) + (f"\n{e.__cause__}" if e.__cause__ is not None else "")  # (Hydra wraps OmegaConf's, which names the key)


def _unknown_key(text: str) -> str | None:
    """The key a composition error's text says the config lacks ("" where it names none); None for other errors."""
    if "Could not override" in text or "is not in struct" in text or "not in '" in text:
        key = (re.search(r"Could not override '([^']+)'", text)
               or re.search(r"Key '([^']+)' (?:is not in struct|not in '[^']*')", text)
               or re.search(r"full_key: (\S+)", text))
        return key.group(1) if key else ""
    return None


def key_of_another_choice(e: Exception) -> str | None:
    """The key a composition failed on where it is a key of another choice of its group (optim.momentum
    with optim=adam), else None."""
    key = _unknown_key(_error_text(e))
    return key if key and choices_with_key(key) else None
