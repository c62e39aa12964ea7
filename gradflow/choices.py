"""Keys that belong to some choices of their group only: init.sw2 is a setting of init=meanfield alone,
model.forget_bias of model=lstm, norm.eps of a run with a normalization layer. A leaf (no Hydra, no torch):
the config validates with it, and the store reads runs' settings with it, also where it has only Hydra's
config.yaml, which holds every choice's keys."""

from __future__ import annotations

from typing import Any

GAIN_INITS = ("xavier_uniform", "xavier_normal", "orthogonal", "delta_orthogonal")
# choice-specific keys -> the choices they apply to; elsewhere they are not settings (`settings` leaves them out)
INIT_KEYS = {"init.gain": GAIN_INITS, "init.mode": ("kaiming_uniform", "kaiming_normal"),
             "init.sw2": ("meanfield",), "init.sb2": ("meanfield",)}
CHOICE_KEYS = {**{key: ("init.name", names) for key, names in INIT_KEYS.items()},
               "model.forget_bias": ("model.name", ("lstm",))}
NORM_EPS = 1e-5  # norm.eps's default (NormConfig's), which a run's identity keeps where no layer reads it


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
    return f"model={model} has no normalization layer that reads it"  # recurrent cells; a custom model's own layers


def settings(flat: dict[str, Any]) -> dict[str, Any]:
    """A run's flat config without the keys it does not read (init.sw2 of an init=xavier_normal run is not
    one of its settings: CHOICE_KEYS; nor is norm.eps of a norm=none MLP); the store applies it to every
    flat config it makes."""
    drop = {key for key, (selector, choices) in CHOICE_KEYS.items()
            if key in flat and selector in flat and flat[selector] not in choices}
    if "norm.eps" in flat and "model.name" in flat and norm_eps_unread(flat):
        drop.add("norm.eps")
    return {k: v for k, v in flat.items() if k not in drop}


def identity(flat: dict[str, Any]) -> dict[str, Any]:
    """What a run's config hash is taken over: its settings, with norm.eps at its default where no layer
    reads it. Every run recorded norm.eps before `settings` left the unread one out (and refused any other
    value), so the hash keeps it: without it, every finished run without a norm layer would be redone."""
    if "model.name" in flat and "norm.name" in flat and norm_eps_unread(flat):
        return {**flat, "norm.eps": NORM_EPS}
    return flat
