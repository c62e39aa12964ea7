"""Keys that belong to some choices of their group only: init.sw2 is a setting of init=meanfield alone,
model.forget_bias of model=lstm. A leaf (no Hydra, no torch): the config validates with it, and the store
reads runs' settings with it, also where it has only Hydra's config.yaml, which holds every choice's keys."""

from __future__ import annotations

from typing import Any

GAIN_INITS = ("xavier_uniform", "xavier_normal", "orthogonal", "delta_orthogonal")
# choice-specific keys -> the choices they apply to; elsewhere they are not settings (`settings` leaves them out)
INIT_KEYS = {"init.gain": GAIN_INITS, "init.mode": ("kaiming_uniform", "kaiming_normal"),
             "init.sw2": ("meanfield",), "init.sb2": ("meanfield",)}
CHOICE_KEYS = {**{key: ("init.name", names) for key, names in INIT_KEYS.items()},
               "model.forget_bias": ("model.name", ("lstm",))}


def settings(flat: dict[str, Any]) -> dict[str, Any]:
    """A run's flat config without the keys of another choice (init.sw2 of an init=xavier_normal run
    is not one of its settings: CHOICE_KEYS); the store applies it to every flat config it makes."""
    drop = {key for key, (selector, choices) in CHOICE_KEYS.items()
            if key in flat and selector in flat and flat[selector] not in choices}
    return {k: v for k, v in flat.items() if k not in drop}
