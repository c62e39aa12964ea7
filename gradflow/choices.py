"""Keys that belong to some choices of their group only: init.sw2 is a setting of init=meanfield alone,
model.forget_bias of model=lstm, norm.eps of a run with a normalization layer. A leaf (no Hydra, no torch):
the config validates with it, and the store reads runs' settings with it, also where it has only Hydra's
config.yaml, which holds every choice's keys."""

from __future__ import annotations

from typing import Any

RECURRENT = ("rnn", "lstm", "gru")  # gradflow's recurrent models: probe point t is time step t, the head last
GAIN_INITS = ("xavier_uniform", "xavier_normal", "orthogonal", "delta_orthogonal")
# choice-specific keys -> the choices they apply to; elsewhere they are not settings (`settings` leaves them out)
INIT_KEYS = {"init.gain": GAIN_INITS, "init.mode": ("kaiming_uniform", "kaiming_normal"),
             "init.sw2": ("meanfield",), "init.sb2": ("meanfield",)}
CHOICE_KEYS = {**{key: ("init.name", names) for key, names in INIT_KEYS.items()},
               "model.forget_bias": ("model.name", ("lstm",))}
# the string keys that hold a number or a word (model.alpha=inv_sqrt_depth, data.scale=qstar): typed str in the
# schema for the word, so a config.yaml holds their numbers as strings ('1.0'), which a page showing it unquotes
NUMBER_OR_WORD_KEYS = ("model.alpha", "data.scale")
NORM_EPS = 1e-5  # norm.eps's default (NormConfig's), which a run's identity keeps where no layer reads it
# the defaults of the other CONDITIONAL_KEYS that the schema's dataclasses hold
PROBE_POINTS, JACOBIAN_INPUTS, NORM_KIND = 30, 4, "layernorm"


def norm_eps_unread(flat: dict[str, Any]) -> str | None:
    """Why no layer of a run reads norm.eps, from its flat config; None where one does: norm=batchnorm|
    layernorm of an MLP or CNN, the resnet's batchnorm variant, a transformer's own norms."""
    model = flat.get("model.name")
    if model in ("mlp", "cnn"):
        return ("norm=none has no normalization layer (norm=batchnorm|layernorm read it)"
                if flat.get("norm.name") == "none" else None)
    if model == "resnet":
        variant = flat.get("model.variant")
        return (f"model.variant={variant} has no normalization layer (model.variant=batchnorm reads it)"
                if variant != "batchnorm" else None)
    if model == "transformer":
        return "model.ln=none has no norm layers (model.ln=pre|post read it)" if flat.get("model.ln") == "none" else None
    if model in (*RECURRENT, "custom"):  # recurrent cells; a custom model's own layers
        return f"model={model} has no normalization layer that reads it"
    return None  # (not one of gradflow's models: a Recorder's config, whose keys are the script's own)


# Each "why unread" answers None for values that are not gradflow's own choices: a Recorder's config is the
# script's, and its optim.gamma beside optim.schedule=exponential is a setting like any other.
def alpha_unread(flat: dict[str, Any]) -> str | None:
    """Why an MLP or CNN does not read model.alpha (None where it does, or has no such key)."""
    if flat.get("model.name") in ("mlp", "cnn") and flat.get("model.skip") == "none":
        return "it scales residual branches (model.skip=residual)"
    return None


def step_unread(flat: dict[str, Any]) -> str | None:
    """Why a run does not read optim.gamma and optim.milestones (None where it does)."""
    return "optim.schedule=step reads it" if flat.get("optim.schedule") in ("constant", "cosine") else None


def points_unread(flat: dict[str, Any]) -> str | None:
    """Why a run does not read probe.points (None where it does)."""
    every = flat.get("probe.every")
    return (f"probe.every={every} probes {'every step' if every == 1 else f'every {every} steps'} (probe.every=0 "
            "reads it)") if every else None


def jacobian_unread(flat: dict[str, Any]) -> str | None:
    """Why a run does not read probe.jacobian_inputs (None where it does)."""
    return "probe.jacobian=true reads it" if flat.get("probe.jacobian") is False else None


def norm_kind_unread(flat: dict[str, Any]) -> str | None:
    """Why a transformer does not read model.norm_kind (None where it does, or is no transformer)."""
    if flat.get("model.name") == "transformer" and flat.get("model.ln") == "none":
        return "model.ln=none has no norm layers (model.ln=pre|post read it)"
    return None


def scalars_unread(flat: dict[str, Any]) -> str | None:
    """Why a model has no scalar (0-d) parameter for optim.scalar_lr_factor to set the rate of (None where it
    has: Fixup's biases and multipliers, SkipInit's alpha; or where it may, a custom model's own)."""
    model, learnable = flat.get("model.name"), flat.get("model.alpha") == "learnable"
    if model in ("mlp", "cnn"):
        if flat.get("model.variant") == "fixup" or (learnable and flat.get("model.skip") == "residual"):
            return None
        return ("it has no scalar parameter (model.variant=fixup, or model.alpha=learnable with "
                "model.skip=residual, gives it some)")
    if model == "resnet":
        return None if flat.get("model.variant") in ("fixup", "skipinit") else \
            "model.variant=batchnorm has no scalar parameter (fixup and skipinit have)"
    if model == "transformer":
        return None if learnable else "it has no scalar parameter (model.alpha=learnable gives it some)"
    if model in RECURRENT:
        return f"model={model} has no scalar parameter"
    return None  # (a custom model: its own parameters, which may be scalars)


# keys a run reads only where others say so: key -> (the keys that say so, its default, why a run, as its
# flat config, does not read it: None where it does). A value set for a run that does not read the key is
# refused (`gradflow run`), except in a sweep point: norm=none,batchnorm norm.eps=1e-3 sets it where read
CONDITIONAL_KEYS = {
    "norm.eps": (("model.name", "norm.name"), NORM_EPS, norm_eps_unread),
    "model.alpha": (("model.name", "model.skip"), "1.0", alpha_unread),
    "optim.gamma": (("optim.schedule",), 0.1, step_unread),
    "optim.milestones": (("optim.schedule",), "[]", step_unread),  # (a flat config holds a list as its str)
    "probe.points": (("probe.every",), PROBE_POINTS, points_unread),
    "probe.jacobian_inputs": (("probe.jacobian",), JACOBIAN_INPUTS, jacobian_unread),
    "model.norm_kind": (("model.name", "model.ln"), NORM_KIND, norm_kind_unread),
    "optim.scalar_lr_factor": (("model.name",), 1.0, scalars_unread),
}


# keys beside CONDITIONAL_KEYS' own selectors whose value also says whether a run reads the key, where the
# model has them (a resnet's variant, a transformer's ln): `keys.implied_keys` reads a column of them as no axis
ALSO_DECIDED_BY = {"norm.eps": ("model.variant", "model.ln")}


def unread(key: str, flat: dict[str, Any]) -> str | None:
    """Why the run of `flat` does not read the CONDITIONAL_KEYS `key` (None where it does, or where `flat`
    lacks the keys that say)."""
    needs, _, why = CONDITIONAL_KEYS[key]
    return why(flat) if all(k in flat for k in needs) else None


def settings(flat: dict[str, Any]) -> dict[str, Any]:
    """A run's flat config without the keys it does not read (init.sw2 of an init=xavier_normal run is not
    one of its settings: CHOICE_KEYS; nor is norm.eps of a norm=none MLP: CONDITIONAL_KEYS); the store
    applies it to every flat config it makes."""
    drop = {key for key, (selector, choices) in CHOICE_KEYS.items()
            if key in flat and selector in flat and flat[selector] not in choices}
    drop.update(key for key in CONDITIONAL_KEYS if key in flat and unread(key, flat))
    return {k: v for k, v in flat.items() if k not in drop}


def identity(flat: dict[str, Any]) -> dict[str, Any]:
    """What a run's config hash is taken over: its settings, with each of CONDITIONAL_KEYS it does not read
    at its default. Every run recorded those keys before `settings` left the unread ones out (and refused
    any other value), so the hash keeps them: without them, every finished run would be redone. A number
    of NUMBER_OR_WORD_KEYS counts as the number it is (model.alpha=1 is model.alpha=1.0, one run)."""
    numbers = {k: same_number(flat[k]) for k in NUMBER_OR_WORD_KEYS if k in flat}
    return {**flat, **numbers,
            **{key: default for key, (_, default, _) in CONDITIONAL_KEYS.items() if unread(key, flat)}}


def same_number(value: Any) -> Any:
    """A NUMBER_OR_WORD_KEYS value as one text per number ('1', '1.0' and '1e0' are '1.0'); a word as it is."""
    try:
        return repr(float(value)) if isinstance(value, str) else value
    except ValueError:
        return value
