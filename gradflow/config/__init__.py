"""Typed configuration, in four parts that import one way (schema <- validation <- composition; messages
beside composition, which it serves):

- `schema`: one dataclass per choice of a group, in Hydra's ConfigStore, and the tables of groups, choices
  and keys read from them;
- `validation`: what types alone cannot say (ranges, choices, keys a run would ignore), one line per error;
- `device`: what device=auto means here, and whether an explicit device exists;
- `composition`: conf/config.yaml with a run's overrides, validated; `messages`: a Hydra error as one line.

`from gradflow.config import compose` (and the rest below) is the interface the other modules use.
"""

from gradflow.choices import NUMBER_OR_WORD_KEYS
from gradflow.config.composition import (
    compose, config_loader, copied, forget_parsed_overrides, hydra_compose, kept, override_parser, parsed_overrides,
    sets_plain_value, simple_override, split_structure)
from gradflow.config.device import DEVICE_ENV, DEVICE_NAMES, check_device_name, resolve_device
from gradflow.config.messages import KEY_SYNONYMS, hydra_error_message, in_preset, key_of_another_choice
from gradflow.config.schema import (
    CONF_DIR, DATA_SCHEMAS, EXPERIMENTS_DIR, GRADCHECK_MODES, GROUP_KEYS, GROUP_SCHEMAS, GROUPS,
    INIT_CHOICES, INIT_SCHEMAS, MODEL_SCHEMAS, OPTIM_SCHEMAS, SECTIONS, UNREADABLE_EXPERIMENTS,
    Config, DataConfig, GradcheckConfig, ModelConfig, NormConfig, OptimConfig, ProbeConfig, TrainConfig, bool_keys,
    choice_keys, choices_with_key, experiment_choices, group_choices, known_keys, list_keys, not_a_key_of, number_in)
from gradflow.config.validation import (
    ALPHA_WORDS, MAX_DEPTH, MAX_SEED, MAX_STEPS, MAX_THREADS, MAX_WIDTH, batch_fits, check_name, show_value, train_size, uses_batchnorm, validate,
    validate_resolved)

__all__ = [
    "compose", "config_loader", "copied", "forget_parsed_overrides", "hydra_compose", "kept", "override_parser",
    "parsed_overrides", "sets_plain_value", "simple_override", "split_structure",
    "DEVICE_ENV", "DEVICE_NAMES", "check_device_name", "resolve_device",
    "KEY_SYNONYMS", "hydra_error_message", "in_preset", "key_of_another_choice",
    "CONF_DIR", "DATA_SCHEMAS", "EXPERIMENTS_DIR", "GRADCHECK_MODES", "GROUP_KEYS", "GROUP_SCHEMAS",
    "GROUPS", "INIT_CHOICES", "INIT_SCHEMAS", "MODEL_SCHEMAS", "NUMBER_OR_WORD_KEYS", "OPTIM_SCHEMAS", "SECTIONS",
    "UNREADABLE_EXPERIMENTS", "Config", "DataConfig", "GradcheckConfig", "ModelConfig", "NormConfig", "OptimConfig",
    "ProbeConfig", "TrainConfig", "bool_keys", "choice_keys", "choices_with_key", "experiment_choices",
    "group_choices", "known_keys", "list_keys", "not_a_key_of", "number_in",
    "ALPHA_WORDS", "MAX_DEPTH", "MAX_SEED", "MAX_STEPS", "MAX_THREADS", "MAX_WIDTH", "batch_fits", "check_name", "show_value", "train_size", "uses_batchnorm",
    "validate", "validate_resolved",
]
