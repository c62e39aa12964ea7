"""Validation: what types alone cannot say (ranges, choices that depend on other keys, keys a run would
ignore, the device), each failure one line naming the key, its value and what is allowed."""

from __future__ import annotations

import functools
import math
import re
from dataclasses import fields
from typing import Any

from omegaconf import DictConfig, OmegaConf

from gradflow.choices import CHOICE_KEYS, CONDITIONAL_KEYS, NUMBER_OR_WORD_KEYS, RECURRENT, same_number, unread
from gradflow.config.device import check_device_name, resolve_device
from gradflow.config.schema import (
    ARITHMETIC, DATA_SCHEMAS, FIXED_SCHEMAS, GRADCHECK_MODES, GROUP_SCHEMAS, INIT_CHOICES, LN_CHOICES, MLP_VARIANTS,
    MODE_CHOICES, MODEL_SCHEMAS, NORM_CHOICES, NORM_FAMILIES, NORM_KINDS, OPTIM_SCHEMAS,
    RECURRENT_INITS, RESNET_VARIANTS, SKIP_CHOICES, GaussianDataConfig, number_in)
from gradflow.errors import GradflowError, did_you_mean, shorten


# --- validation: what types alone cannot say -----------------------------------------------------
MAX_STEPS = 10**9  # more updates than any study here runs; larger is a typo (1e23) that would never finish
MAX_NAME = 100  # characters in a study name: it becomes a folder name
MAX_DEPTH = 10**5  # layers: deeper is a typo, which would build modules until memory runs out
# units per layer (width, channels, hidden, d_model): one 1e5 x 1e5 float32 layer is 40 GB, a wider one no
# device holds, so a wider value is a typo (an extra zero or three); refused before a rerun replaces anything
MAX_WIDTH = 10**5
MAX_SEED = 2**32 - 1  # torch.manual_seed takes up to 2^63 - 1, but its CPU generator keeps the low 32 bits:
# seed=4294967297 was seed=1's run over again (a sweep of both, two runs called independent that were one)
MAX_THREADS = 2**31 - 1  # torch.set_num_threads takes a C int (beyond it, "Overflow when unpacking long")
# training examples of the fixed-size datasets (MNIST-1D's published split; the full image sets)
TRAIN_SIZES = {"mnist1d": 4000, "mnist": 60000, "fashion_mnist": 60000, "cifar10": 50000}
ALPHA_WORDS = ("inv_sqrt_depth", "learnable")


def show_value(value: Any, key: str | None = None) -> str:
    """A value as a message shows it: strings quoted (but a number that `key`, one of NUMBER_OR_WORD_KEYS,
    holds as a string: alpha's 0.5 as the user wrote it, not '0.5'), everything shortened to one line."""
    if isinstance(value, str) and key in NUMBER_OR_WORD_KEYS and value == value.strip() and \
            not math.isnan(number_in(value)):
        return shorten(value)
    if isinstance(value, str) and len(quoted := repr(value)) > 60:  # (the count is the value's, not its quotes')
        return f"{shorten(quoted).rsplit(' (', 1)[0]} ({len(value)} characters)"
    return shorten(repr(value) if isinstance(value, str) else value)


def _choice(key: str, value: Any, choices) -> None:
    if value not in choices:
        near = did_you_mean(value, list(map(str, choices))) if isinstance(value, str) else ""
        raise GradflowError(f"{key}={show_value(value)} is not allowed{near}; choices: {', '.join(map(str, choices))}")


def _at_least(key: str, value: Any, minimum: int | float = 1) -> None:
    """minimum <= value (1 unless said: a count of layers, units, examples)."""
    if value < minimum:
        raise GradflowError(f"{key}={show_value(value)} must be >= {minimum}")


def uses_batchnorm(cfg) -> bool:
    """Whether the run's model normalizes over the batch (one example's batch variance is 0)."""
    return cfg.norm.name == "batchnorm" or (cfg.model.name == "resnet" and cfg.model.variant == "batchnorm")


def _at_most(key: str, value: Any, maximum: int, why: str = "") -> None:
    if value > maximum:
        raise GradflowError(f"{key}={show_value(value)} must be <= {maximum}{why}")


def _units(key: str, value: Any) -> None:
    """A positive layer width of at most MAX_WIDTH."""
    _at_least(key, value)
    _at_most(key, value, MAX_WIDTH, f" (a {MAX_WIDTH} x {MAX_WIDTH} layer is {4 * MAX_WIDTH**2 / 1e9:g} GB of "
             "float32 weights)")


def _between(key: str, value: float, lo: float, hi: float) -> None:
    """lo <= value < hi."""
    if not lo <= value < hi:
        raise GradflowError(f"{key}={show_value(value)} must be in [{lo:g}, {hi:g})")


def _unused(key: str, value: Any, default: Any, applies: str) -> None:
    """A key the run ignores must keep its default: a changed value would be a silent no-op."""
    if value != default:
        raise GradflowError(f"{key}={show_value(value)} does not apply to this run: {applies}")


def _finite(node: Any, prefix: str = "") -> None:
    """Every float in the config is a finite number (nan, inf and 1e400 are typos, not settings)."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for k, v in items:
        key = f"{prefix}.{k}" if prefix and isinstance(k, str) else f"{prefix}[{k}]" if prefix else str(k)
        if isinstance(v, float) and not math.isfinite(v):
            overflow = " (a number past 1.8e308, as 1e400, reads as inf)" if math.isinf(v) else ""
            raise GradflowError(f"{key}={v} must be a finite number{overflow}")
        _finite(v, key)


def validate(cfg: DictConfig, sweep_point: bool = False, overruled: frozenset[str] = frozenset()) -> None:
    """Raise GradflowError for the first value that is out of range, not a valid choice, or ignored (except
    in a sweep point, where a value set for some points may be ignored by others: norm.eps of norm=none;
    and the keys `overruled`, a preset's that the command line's choices leave unread: messages.overruled)."""
    try:
        resolved = OmegaConf.to_container(cfg, resolve=True)
    except Exception as e:  # an interpolation that does not resolve (unknown key, division by zero, ...)
        ours = e
        while ours is not None and not isinstance(ours, GradflowError):  # gf's resolvers say it in full
            ours = ours.__cause__ or ours.__context__
        detail = str(ours) if ours is not None else str(e.__cause__ or e).splitlines()[0]
        detail = re.sub(r"^\w+ raised while resolving interpolation: ", "", detail)
        unknown = re.match(r"Unsupported interpolation type (\S+)", detail)
        if unknown:  # a misspelled resolver: name gradflow's (gf.dvi: gf.div)
            ours = [f"gf.{op}" for op in ARITHMETIC]
            detail = (f"{unknown.group(1)} is no resolver{did_you_mean(unknown.group(1), ours)}; gradflow's: "
                      f"{', '.join(ours)}")
        key = getattr(e, "full_key", "") or "a ${...} value"
        raise GradflowError(f"{key} cannot be resolved: {shorten(detail, 160)}") from None
    validate_resolved(resolved, sweep_point, overruled)


def validate_resolved(resolved: dict, sweep_point: bool = False, overruled: frozenset[str] = frozenset()) -> None:
    """`validate` of a config already resolved to plain dicts (OmegaConf.to_container(cfg, resolve=True))."""
    _finite(resolved)
    _schemas(resolved)
    cfg = _Plain.of(resolved)  # (the checks read many values: from plain dicts, not DictConfig's nodes)
    _model(cfg.model, cfg.norm.name)
    _data(cfg)
    _init(cfg)
    _norm(cfg)
    _optim(cfg.optim)
    if not sweep_point:
        _conditional(cfg, overruled)
    _train(cfg)
    _at_least("probe.every", cfg.probe.every, 0)
    _at_least("probe.points", cfg.probe.points, 2)
    _at_least("probe.jacobian_inputs", cfg.probe.jacobian_inputs)
    if cfg.probe.layer_jacobians and not cfg.probe.jacobian:
        raise GradflowError("probe.layer_jacobians=true needs probe.jacobian=true")
    _choice("gradcheck.mode", cfg.gradcheck.mode, GRADCHECK_MODES)
    _at_least("threads", cfg.threads, 0)
    _at_most("threads", cfg.threads, MAX_THREADS)
    _at_least("seed", cfg.seed, 0)
    _at_most("seed", cfg.seed, MAX_SEED,
             " (torch's CPU generator keeps a seed's low 32 bits: a larger one repeats a smaller one's run)")
    if not str(cfg.results).strip():  # (it wrote into the working folder itself)
        raise GradflowError("results= is empty: give the folder runs go under, e.g. results=results (the default)")
    check_name(cfg.name, cfg.results)
    if sweep_point:  # a sweep checks its points' devices where they run (sweep.plan): on a login node, a
        check_device_name(cfg.device)  # SLURM sweep's device=cuda is the compute nodes'
    else:
        resolve_device(cfg.device)


def check_name(name: str, results: str) -> None:
    """A study's name= is a folder inside `results`: relative, of plain characters, each part a name (not `.`,
    which wrote the runs into `results` itself, nor `..`, which left it)."""
    if (not re.fullmatch(r"[A-Za-z0-9._\-/]+", name) or name.startswith("/") or len(name) > MAX_NAME
            or any(part in ("", ".", "..") for part in name.removesuffix("/").split("/"))):
        raise GradflowError(f"name={show_value(name)} must be a relative folder name inside {results}/ "
                            f"(letters, digits, . _ - /; no '.' or '..' part; at most {MAX_NAME} characters)")


def _schemas(resolved: dict) -> None:
    """Each group's name is a choice whose keys the composed group has: model.name=lstm on model=rnn
    (one schema) is a choice, model.name=cnn on model=mlp would read keys the MLP does not have."""
    for group, schemas in GROUP_SCHEMAS.items():
        name = resolved[group]["name"]
        if name not in schemas:
            _choice(f"{group}.name", name, list(schemas))
        keys = {f.name for f in fields(schemas[name])}
        extra = sorted(set(resolved[group]) - keys)
        if extra and keys <= set(resolved[group]):  # (+model.foo=1: a key added by hand that no model reads)
            # the keys this choice reads (init=xavier_normal's: gain; it listed mode, sb2 and sw2 too, which
            # `init.mode=fan_out` then said do not apply to it)
            own = {k for k in keys - {"name"} if f"{group}.{k}" not in CHOICE_KEYS
                   or name in CHOICE_KEYS[f"{group}.{k}"][1]}
            raise GradflowError(f"{group}.{extra[0]} is not a key of {group}={name} ("
                                + (f"its keys: {', '.join(sorted(own))}" if own else "it takes no keys")
                                + "): a key added with + is read by nothing")
        if set(resolved[group]) != keys:
            raise GradflowError(f"{group}.name={show_value(name)} names another kind of {group} than the one composed: "
                                f"choose it with {group}={name}, not {group}.name")
    for group, schema in FIXED_SCHEMAS.items():  # (+train.step=5 ran on the default 1000 steps without a word)
        keys = {f.name for f in fields(schema)}
        extra = sorted(set(resolved.get(group) or {}) - keys)
        if extra:
            near = did_you_mean(f"{group}.{extra[0]}", [f"{group}.{k}" for k in sorted(keys)])
            raise GradflowError(f"{group}.{extra[0]} is not a key of {group}{near} "
                                f"(its keys: {', '.join(sorted(keys - {'name'}))}): a key added with + is read by nothing")


class _Plain(dict):
    """A resolved config as nested dicts whose keys read as attributes, as a DictConfig's do: a DictConfig's
    read costs microseconds, and a sweep validates the whole config for each distinct value it sets."""

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None

    @classmethod
    def of(cls, node: Any) -> Any:
        if isinstance(node, dict):
            return cls({k: cls.of(v) for k, v in node.items()})
        if isinstance(node, list):
            return [cls.of(v) for v in node]
        return node


def _model(m, norm: str) -> None:
    from gradflow import activations

    _choice("model.name", m.name, tuple(MODEL_SCHEMAS))
    if "activation" in m:  # (a family of no activation key, a linear net's, read one: a traceback)
        _choice("model.activation", m.activation, tuple(activations.ACTIVATIONS) + (("auto",) if m.name == "custom" else ()))
    if m.name == "transformer":
        _transformer(m, norm)
    if m.name in ("mlp", "cnn", "resnet"):
        _at_least("model.depth", m.depth)
        _at_most("model.depth", m.depth, MAX_DEPTH)
        _choice("model.skip", m.skip, SKIP_CHOICES)
    if m.name in ("mlp", "cnn"):
        _alpha(m.alpha)
        if m.skip == "residual" and m.depth < 2:
            raise GradflowError(f"model.skip=residual needs model.depth >= 2, not {m.depth}: the first layer "
                                "changes the width and never has a skip")
    if m.name == "mlp":
        _units("model.width", m.width)
        _mlp_blocks(m, norm)
    if m.name == "cnn":
        _units("model.channels", m.channels)
        _at_least("model.kernel", m.kernel)
        if m.kernel % 2 == 0:
            raise GradflowError(f"model.kernel={m.kernel} must be odd (same padding keeps a centred kernel)")
        _at_least("model.stride", m.stride)
    if m.name == "resnet":
        _choice("model.variant", m.variant, RESNET_VARIANTS)
        _resnet(m, norm)
    if m.name in ("cnn", "resnet"):
        _choice("model.dims", m.dims, (0, 1, 2))
    if m.name == "custom" and norm != "none":  # (it ran as the model it is, in a folder named norm=...)
        raise GradflowError(f"norm={norm} does not apply to model=custom: gradflow adds no layer to your module; "
                            "put the normalization in the module (or pass it a flag: +model.kwargs.norm=...), "
                            "and leave norm=none")
    if m.name in RECURRENT:
        _units("model.hidden", m.hidden)
        _choice("model.recurrent_init", m.recurrent_init, RECURRENT_INITS)
        _at_least("model.gain", m.gain, 0)
        _choice("model.activation", m.activation, ("tanh", "relu") if m.name == "rnn" else ("tanh",))
        if norm != "none":
            raise GradflowError(f"norm={norm} does not apply to model={m.name}: recurrent families have no "
                                "normalization; leave norm=none")
    if norm != "none" and m.name not in NORM_FAMILIES:  # (a new family: it ran, said "batch-norm statistics
        # unsettled" of a net with no batch norm, and was listed under norm=batchnorm)
        raise GradflowError(f"norm={norm} does not apply to model={m.name}: it places no norm= layer (families "
                            f"that do: {', '.join(NORM_FAMILIES)}); leave norm=none")


def _transformer(m, norm: str) -> None:
    for k in ("depth", "heads", "mlp_ratio"):
        _at_least(f"model.{k}", m[k])
    _at_most("model.depth", m.depth, MAX_DEPTH)
    _units("model.d_model", m.d_model)
    if m.mlp_ratio * m.d_model > MAX_WIDTH:
        raise GradflowError(f"model.mlp_ratio={m.mlp_ratio} with model.d_model={m.d_model} makes each MLP "
                            f"{m.mlp_ratio * m.d_model} wide; at most {MAX_WIDTH}")
    if m.d_model % m.heads:
        divisors = [h for h in range(1, m.d_model + 1) if m.d_model % h == 0]
        raise GradflowError(f"model.heads={m.heads} does not divide model.d_model={m.d_model}; "
                            f"choices: {', '.join(map(str, divisors))}")
    _choice("model.ln", m.ln, LN_CHOICES)
    _choice("model.norm_kind", m.norm_kind, NORM_KINDS)
    _alpha(m.alpha)
    if not 0 <= m.dropout < 1:
        raise GradflowError(f"model.dropout={m.dropout} must be in [0, 1)")
    if norm != "none":
        raise GradflowError(f"norm={norm} does not apply to model=transformer; choices: norm=none, "
                            "with model.ln=pre|post|none and model.norm_kind=layernorm|rmsnorm")


def _norm(cfg) -> None:
    _choice("norm.name", cfg.norm.name, NORM_CHOICES)
    if not cfg.norm.eps > 0:
        raise GradflowError(f"norm.eps={cfg.norm.eps} must be > 0")


def _conditional(cfg, overruled: frozenset[str]) -> None:
    """A key the run reads only where others say so (choices.CONDITIONAL_KEYS: norm.eps without a norm layer,
    model.alpha without model.skip=residual, optim.gamma without optim.schedule=step, probe.points beside
    probe.every) keeps its default where the run does not read it: a changed value would be a silent no-op.
    Not checked in a sweep point: norm=none,batchnorm norm.eps=1e-3 sets it where read (the plan refuses a
    key no point reads); nor for the keys `overruled`, a preset's that the command line's choice leaves
    unread (the preset set them where read: residual-vs-plain's model.alpha beside model.skip=none)."""
    values = {f"{group}.{k}": v for group in ("model", "norm", "optim", "probe") for k, v in cfg[group].items()}
    flat = {k: str(list(v)) if isinstance(v, list) else v for k, v in values.items()}  # (as store.flatten has it)
    for key, (_, default, _) in CONDITIONAL_KEYS.items():
        why = key not in overruled and unread(key, flat)
        if why and key in flat and same_number(flat[key]) != same_number(default):  # (model.alpha=1 is its 1.0)
            value = values[key]
            raise GradflowError(f"{key}={show_value(list(value) if isinstance(value, list) else value, key)} does not "
                                f"apply to this run: {why}; leave it out, or set {key}={default} (its default) "
                                "where a preset sets it")


def _alpha(alpha: str) -> None:
    if alpha in ALPHA_WORDS:
        return
    if not math.isfinite(number_in(alpha)):
        raise GradflowError(f"model.alpha={show_value(alpha, 'model.alpha')} is not allowed; choices: a finite number, "
                            "inv_sqrt_depth (= 1/sqrt(depth)), learnable")


def _mlp_blocks(m, norm: str) -> None:
    """The MLP's residual blocks: branch_layers divides the residual layers; Fixup's own needs."""
    _at_least("model.branch_layers", m.branch_layers)
    _choice("model.variant", m.variant, MLP_VARIANTS)
    if m.branch_layers > 1 and m.skip != "residual":
        raise GradflowError(f"model.branch_layers={m.branch_layers} groups residual branches: "
                            "it needs model.skip=residual")
    if (m.depth - 1) % m.branch_layers:
        raise GradflowError(f"model.depth={m.depth} must be 1 + a multiple of model.branch_layers="
                            f"{m.branch_layers} (the input layer, then whole branches)")
    if m.variant == "fixup":
        if m.skip != "residual" or m.branch_layers < 2 or norm != "none":
            raise GradflowError("model.variant=fixup needs model.skip=residual, model.branch_layers >= 2 "
                                "(Zhang et al. 2019 scale by L^(-1/(2m-2))) and norm=none")
        if m.alpha in ALPHA_WORDS or float(m.alpha) != 1.0:
            raise GradflowError(f"model.alpha={show_value(m.alpha, 'model.alpha')} does not apply to model.variant=fixup: "
                                "its branch multiplier is a learnable scalar starting at 1")


def _resnet(m, norm: str) -> None:
    """He et al.'s CIFAR ResNet: 6n + 1 convs, three stages; normalization is the variant's."""
    if (m.depth - 1) % 6 or m.depth < 7:
        raise GradflowError(f"model.depth={m.depth} must be 6n+1 for a resnet (19, 31, 43, 55, 109: "
                            "resnet20/32/44/56/110 count the head too)")
    if len(m.widths) != 3 or min(m.widths) < 1 or max(m.widths) > MAX_WIDTH:
        raise GradflowError(f"model.widths={show_value(list(m.widths))} must list three stages' filters, "
                            f"each 1 to {MAX_WIDTH}, e.g. [16, 32, 64]")
    if norm != "none":  # (norm=batchnorm beside the batchnorm variant too: one net under two names, two rows of ls)
        raise GradflowError(f"norm={norm} does not apply to model=resnet: its normalization is "
                            f"model.variant (batchnorm | fixup | skipinit; here {m.variant}); leave norm=none")
    if m.skip != "residual" and m.variant != "batchnorm":
        raise GradflowError(f"model.variant={m.variant} needs model.skip=residual (its branches start at "
                            "zero, which would cut a plain net); use model.variant=batchnorm for a plain net")


def _data(cfg) -> None:
    d = cfg.data
    _choice("data.name", d.name, tuple(DATA_SCHEMAS))
    if "seed" in d:  # (numpy's generators, mnist1d's among them, take 0 .. 2^32 - 1)
        _at_least("data.seed", d.seed, 0)
        _at_most("data.seed", d.seed, 2**32 - 1)
    if "cache" in d and d.cache in ("True", "False"):  # (a boolean, as text: a folder named False was made)
        raise GradflowError(f"data.cache={d.cache.lower()} is not allowed: data.cache is the folder the dataset is "
                            "cached in (\"\" for $GRADFLOW_CACHE, the default)")
    if d.name in ("mnist", "fashion_mnist", "cifar10"):
        _at_least("data.subset", d.subset, 0)
    if d.name in ("adding", "copy"):
        _at_least("data.T", d.T, 2)
        _at_least("data.n_train", d.n_train)
        _at_least("data.n_test", d.n_test)
    if d.name == "copy":
        _at_least("data.n_symbols", d.n_symbols, 2)  # (one symbol: every answer is it, and nothing is remembered)
        _at_least("data.copy_len", d.copy_len)
    if d.name == "chars":
        _at_least("data.T", d.T)
        _at_least("data.n_train", d.n_train, 0)
        _at_least("data.n_test", d.n_test, 0)
        if not 0 < d.test_fraction < 1:
            raise GradflowError(f"data.test_fraction={d.test_fraction} must be strictly between 0 and 1 (both splits "
                                "need examples)")
        if d.n_train or d.n_test:  # (more windows than the text holds were the same windows again, and
            _char_windows_held(d)  # n_train=20000000 filled 3 GB over minutes for a 2-step run)
    if d.name == "recall":
        for k in ("pairs", "queries", "n_keys", "n_values", "n_train", "n_test"):
            _at_least(f"data.{k}", d[k], 2 if k == "n_values" else 1)  # (one value: recalled without a memory)
        if d.n_keys < d.pairs:
            raise GradflowError(f"data.n_keys={d.n_keys} must be >= data.pairs={d.pairs} (keys are distinct)")
    if d.name == "gaussian":
        _choice("data.distribution", d.distribution, ("normal", "uniform01"))
        _choice("data.task", d.task, ("classification", "regression"))
        for k in ("dim", "classes", "n_train", "n_test", "teacher_width"):
            _at_least(f"data.{k}", d[k], 2 if k == "classes" else 1)
        if d.task == "regression":
            for k in ("classes", "teacher_width"):
                _unused(f"data.{k}", d[k], getattr(GaussianDataConfig, k), "a regression target has one output "
                        "from a linear teacher")
        _scale(cfg)


SCALE_RANGE = (1e-15, 1e15)  # data.scale's: a float32 input's square (its norm, the first layer's statistics) must
# stay within float32's 1e-38 .. 3e38 (at 1e20 the inputs' norm read inf), with a factor 1e8 to spare for sums


def _scale(cfg) -> None:
    """data.scale: a positive number, or qstar where the mean-field theory knows the run's init."""
    scale = cfg.data.scale
    if scale == "qstar":
        from gradflow import theory

        if cfg.model.get("activation") == "auto":  # (model=custom's: it said 'auto' is not a known activation)
            # (whether the init has a sigma_w^2 at all: tanh stands in for the activation, which only kaiming's
            # gain reads, and every activation gives kaiming one)
            init = "" if theory.effective_sw2({**theory.run_keys(cfg), "model.activation": "tanh"}) is not None else (
                f", and an init with a mean-field sigma_w^2 (init={cfg.init.name} has none: init=meanfield, say)")
            raise GradflowError("data.scale=qstar needs the net's one activation for the mean-field q*: set "
                                f"model.activation=NAME for model={cfg.model.name} (it is auto: each module's own)"
                                f"{init}; or give data.scale a number")
        if theory.effective_sw2(theory.run_keys(cfg)) is None:
            raise GradflowError(f"data.scale=qstar needs an init with a mean-field sigma_w^2; init={cfg.init.name} "
                                "has none: use init=meanfield or a number")
        theory.input_scale(cfg)  # raises where there is no usable fixed point
        return
    value = number_in(scale)
    if not (math.isfinite(value) and value > 0):
        typo = did_you_mean(scale, ["qstar"]) if isinstance(scale, str) else ""
        raise GradflowError(f"data.scale={show_value(scale, 'data.scale')} is not allowed{typo}; choices: a positive "
                            "number, qstar (the first layer starts at the mean-field fixed point q*)")
    if not SCALE_RANGE[0] <= value <= SCALE_RANGE[1]:  # (1e39: every input inf, "diverged at step 0"; 1e-50: all 0)
        raise GradflowError(f"data.scale={show_value(scale, 'data.scale')} is outside [{SCALE_RANGE[0]:g}, "
                            f"{SCALE_RANGE[1]:g}], where the squares of float32 inputs scaled by it (their norms, the "
                            f"first layer's statistics) {'overflow to inf' if value > 1 else 'flush to 0'}")


def _init(cfg) -> None:
    """Every init key's value is checked, also where another scheme ignores it: a sweep may set init.gain
    and init.sw2 across init=orthogonal,meanfield, but a value that is wrong for any scheme is a typo."""
    i = cfg.init
    _choice("init.name", i.name, INIT_CHOICES)
    _at_least("init.gain", i.gain, 0)  # 0: all-zero weights, a net that learns nothing, on purpose
    _choice("init.mode", i.mode, MODE_CHOICES)
    if not i.sw2 > 0:
        raise GradflowError(f"init.sw2={i.sw2} must be > 0 (the weight variance times fan-in)")
    _at_least("init.sb2", i.sb2, 0)


def _optim(o) -> None:
    _choice("optim.name", o.name, tuple(OPTIM_SCHEMAS))
    _at_least("optim.lr", o.lr, 0)
    _at_least("optim.weight_decay", o.weight_decay, 0)
    if o.name == "sgd":
        _between("optim.momentum", o.momentum, 0, 1)
    if o.name == "adam":
        if len(o.betas) != 2:
            raise GradflowError(f"optim.betas={show_value(list(o.betas))} must be two numbers, e.g. [0.9,0.999]")
        for k, beta in enumerate(o.betas):
            _between(f"optim.betas[{k}]", beta, 0, 1)
    _choice("optim.schedule", o.schedule, ("constant", "step", "cosine"))
    _at_least("optim.warmup", o.warmup, 0)
    _at_least("optim.scalar_lr_factor", o.scalar_lr_factor, 0)
    if o.schedule == "step":
        if not o.gamma > 0:
            raise GradflowError(f"optim.gamma={o.gamma} must be > 0 (the lr factor at each milestone)")
        if not o.milestones or min(o.milestones) < 1:
            raise GradflowError(f"optim.milestones={show_value(list(o.milestones))} must list the updates (>= 1) at "
                                "which optim.schedule=step drops the lr, e.g. [500,750]")
        if len(set(o.milestones)) < len(o.milestones):  # ([1,1] dropped the lr by gamma^2 at step 1, silently)
            twice = sorted({m for m in o.milestones if list(o.milestones).count(m) > 1})
            raise GradflowError(f"optim.milestones={show_value(list(o.milestones))} lists {', '.join(map(str, twice))} "
                                f"more than once; each milestone drops the lr once (by optim.gamma), e.g. "
                                f"{show_value(sorted(set(o.milestones)))}")


def _char_windows_held(d) -> None:
    """data=chars' n_train and n_test at most the distinct windows of T + 1 characters each split of the text
    holds (textdata.char_windows: the first 1 - test_fraction of it trains)."""
    length = _chars_length()
    cut = int(length * (1.0 - d.test_fraction))
    for key, n, part in (("data.n_train", d.n_train, cut), ("data.n_test", d.n_test, length - cut)):
        held = max(0, part - d.T)
        if held == 0:  # (as textdata.char_windows says it: "at most 0" windows of data.n_train, left at its default)
            raise GradflowError(f"data.T={d.T} is longer than a split of the text ({part} characters); use a smaller "
                                "data.T or data.test_fraction")
        if n > held:
            raise GradflowError(f"{key}={n} is more than the {held} distinct windows of {d.T + 1} characters "
                                f"(data.T={d.T}) its part of the text holds (data.test_fraction={d.test_fraction}); "
                                f"at most {held}, or 0 for every non-overlapping window")


@functools.lru_cache(maxsize=1)
def _chars_length() -> int:
    """data=chars' text's length in characters (this Python's help topics)."""
    from gradflow.textdata import pydoc_text

    return len(pydoc_text())


def train_size(data) -> int:
    """Training examples a data config gives (before a batch is drawn)."""
    if data.name in ("mnist", "fashion_mnist", "cifar10") and data.subset:
        return min(data.subset, TRAIN_SIZES[data.name])
    if data.name == "chars" and not data.n_train:  # a window every T characters of the training text
        cut = int(_chars_length() * (1.0 - data.test_fraction))  # (textdata.char_windows)
        return max(0, (cut - (data.T + 1)) // data.T + 1)
    return TRAIN_SIZES.get(data.name) or data.n_train


def batch_fits(batch: int, n: int, data: str, where: str = "") -> None:
    """A batch no larger than the `n` training examples of data=`data` (`where`: " under FOLDER", files read)."""
    if batch > n:
        raise GradflowError(f"train.batch_size={batch} must be <= the {n} training examples of data={data}{where}"
                            + (f"; give train.batch_size={n} (the whole set a step) or fewer" if n > 0 else ""))


def _train(cfg) -> None:
    t = cfg.train
    _at_least("train.steps", t.steps, 0)
    if t.steps > MAX_STEPS:
        raise GradflowError(f"train.steps={t.steps} must be <= {MAX_STEPS:.0e}")
    _at_least("train.batch_size", t.batch_size)
    subset = cfg.data.get("subset") or 0  # (the limit the user set, named: "the 10 training examples of cifar10")
    batch_fits(t.batch_size, train_size(cfg.data), cfg.data.name,
               f" (data.subset={subset})" if 0 < subset < TRAIN_SIZES.get(cfg.data.name, 0) else "")
    if uses_batchnorm(cfg) and t.batch_size < 2:
        raise GradflowError(f"train.batch_size={t.batch_size} must be >= 2 with batch normalization "
                            "(the batch variance of one example is 0)")
    if 0 < t.steps < cfg.optim.warmup:  # (a typo, or steps cut for a quick try: say it, not a silent half-run)
        raise GradflowError(f"optim.warmup={cfg.optim.warmup} must be at most train.steps={t.steps}: the learning rate "
                            f"would never reach optim.lr")
    late = [m for m in cfg.optim.milestones if m >= t.steps] if cfg.optim.schedule == "step" and t.steps else []
    if late:  # (likewise: a paper's [32000,48000] under train.steps=1000 ran at a constant lr without a word)
        raise GradflowError(f"optim.milestones={show_value(list(cfg.optim.milestones))} must be below train.steps={t.steps}: "
                            f"the lr never drops at {', '.join(map(str, late))}, after the last update "
                            f"({t.steps - 1})")
    _at_least("train.eval_every", t.eval_every)
    _at_least("train.check_every", t.check_every)
    _at_least("train.grad_clip", t.grad_clip, 0)
    _at_least("train.clip_value", t.clip_value, 0)
