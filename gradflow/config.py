"""Typed configuration: the schema (dataclasses in Hydra's ConfigStore), composition and validation.

YAML under conf/ gives the values of each choice; the dataclasses here give every key its type,
default and meaning, so a bad override fails at composition with the key named, not inside
training. `validate` adds what a type cannot say (ranges, choices, device availability).
"""

from __future__ import annotations

import copy
import functools
import math
import operator
import os
import pickle
import re
from dataclasses import MISSING as NO_DEFAULT, dataclass, field, fields
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from gradflow.choices import CHOICE_KEYS, CONDITIONAL_KEYS, NORM_EPS, RECURRENT, unread
from gradflow.errors import GradflowError, did_you_mean, shorten
from gradflow.overrides import as_typed, job_name, last_overrides, override_key, override_value

# --- where the configs live: inside the installed package (wheel) or at the checkout's root ---
_PKG = Path(__file__).resolve().parent


def _find(dirname: str) -> Path:
    for candidate in (_PKG / dirname, _PKG.parent / dirname):
        if candidate.is_dir():
            return candidate
    raise GradflowError(f"cannot find the {dirname}/ folder next to {_PKG}; reinstall gradflow")


CONF_DIR = _find("conf")
EXPERIMENTS_DIR = _find("experiments")


# --- schema -------------------------------------------------------------------------------------
# One dataclass per choice of a group; the group's YAML file only names its schema (and a preset's
# changes), so every default lives here once. A key exists only where it means something: init.sw2
# is a key of init=meanfield alone, optim.betas of optim=adam, model.forget_bias of model=lstm.
@dataclass
class ModelConfig:
    name: str = MISSING  # the family: a key of MODEL_SCHEMAS


@dataclass
class MLPConfig(ModelConfig):
    name: str = "mlp"
    depth: int = 20  # hidden layers; each = weight layer, optional norm, activation, optional skip
    width: int = 128  # units in every hidden layer (residual blocks keep it constant)
    activation: str = "tanh"  # a name from gradflow.activations.ACTIVATIONS
    skip: str = "none"  # none | residual: h <- h + alpha * branch(h) over hidden layers 2..depth
    alpha: str = "1.0"  # residual branch scale: a number, inv_sqrt_depth (1/sqrt(depth)), or learnable (SkipInit: starts at 0)
    branch_layers: int = 1  # weight layers per residual branch (m); 1: h + alpha * act(W h + b); m >= 2 ends at W_m
    variant: str = "standard"  # standard | fixup (Zhang et al. 2019: m >= 2, no norm, last branch layer and head at 0)


@dataclass
class CNNConfig(ModelConfig):
    name: str = "cnn"
    depth: int = 10  # conv layers (hidden layers), each conv, optional norm, activation, optional skip
    channels: int = 32  # channels of every conv layer (residual blocks keep it constant)
    kernel: int = 3  # kernel size (odd; "same" padding keeps the length)
    stride: int = 1  # stride of the first conv layer; the others use 1
    dims: int = 0  # spatial dimensions, 1 or 2; 0 = from the data ((N, L) inputs are 1D with one channel)
    activation: str = "relu"  # a name from gradflow.activations.ACTIVATIONS
    skip: str = "none"  # none | residual: h <- h + alpha * act(norm(conv(h))) for layers 2..depth
    alpha: str = "1.0"  # residual branch scale: a number, inv_sqrt_depth, or learnable (SkipInit: starts at 0)


@dataclass
class ResNetConfig(ModelConfig):
    name: str = "resnet"
    depth: int = 19  # hidden conv layers = 6n + 1 (He et al. 2016's "resnet20" = 19 convs + the head)
    widths: list[int] = field(default_factory=lambda: [16, 32, 64])  # filters of the three stages
    dims: int = 0  # spatial dimensions, 1 or 2; 0 = from the data
    activation: str = "relu"  # a name from gradflow.activations.ACTIVATIONS
    skip: str = "residual"  # residual | none (the "plain" net: the same layers without shortcuts)
    variant: str = "batchnorm"  # batchnorm (the paper) | fixup | skipinit (both without normalization)


@dataclass
class RNNConfig(ModelConfig):
    name: str = "rnn"  # rnn (vanilla) | lstm | gru; depth is time: the sequence length of the data
    hidden: int = 64  # hidden units
    activation: str = "tanh"  # vanilla rnn: tanh | relu; lstm and gru: their cell's own tanh
    recurrent_init: str = "orthogonal"  # orthogonal | identity (IRNN, Le et al. 2015) | gaussian
    gain: float = 1.0  # recurrent weight scale: orthogonal/identity multiplier, gaussian N(0, gain^2 / hidden)
    forget_bias: float = 0.0  # lstm forget-gate bias at init (PyTorch's default 0; 1 or 3 keep memory)


@dataclass
class TransformerConfig(ModelConfig):
    name: str = "transformer"  # a causal (GPT-style) transformer: embeddings, `depth` blocks, final norm, linear head
    depth: int = 4  # blocks; each = attention sublayer + MLP sublayer, both residual
    d_model: int = 64  # width of the residual stream (token and position embeddings, every sublayer's output)
    heads: int = 4  # attention heads; must divide d_model (head size = d_model / heads)
    mlp_ratio: int = 4  # the MLP's hidden width = mlp_ratio * d_model
    activation: str = "gelu"  # the MLP's nonlinearity, a name from gradflow.activations.ACTIVATIONS
    ln: str = "pre"  # norm placement: pre (GPT-2, LLaMA: x + f(norm(x)), final norm) | post (Vaswani et al. 2017: norm(x + f(x))) | none
    norm_kind: str = "layernorm"  # layernorm | rmsnorm (LLaMA)
    alpha: str = "1.0"  # residual branch scale: a number, inv_sqrt_depth (1/sqrt(depth)), or learnable (SkipInit: starts at 0)
    dropout: float = 0.0  # on attention weights and on each sublayer's output; 0 keeps probed gradients deterministic


@dataclass
class CustomConfig(ModelConfig):
    name: str = "custom"  # your own torch.nn.Module, built by hydra.utils.instantiate
    target: str = MISSING  # its class or factory: a dotted path (my_models.Net) or module:attr, importable from the current folder
    kwargs: dict[str, Any] = field(default_factory=dict)  # constructor arguments, e.g. +model.kwargs.width=64
    activation: str = "auto"  # auto: each activation module's own kind (saturation, dead units); or one name for all


@dataclass
class DataConfig:
    name: str = MISSING  # the dataset: a key of DATA_SCHEMAS


@dataclass
class GaussianDataConfig(DataConfig):
    name: str = "gaussian"
    dim: int = 64  # input dimension
    distribution: str = "normal"  # normal: x ~ N(0, I) | uniform01: x ~ U[0, 1]^dim (Glorot & Bengio 2010)
    scale: str = "1.0"  # inputs are multiplied by this number, or qstar: the first layer starts at the mean-field q*
    task: str = "classification"  # classification: argmax of a random tanh teacher | regression: a linear teacher, MSE
    classes: int = 10  # classification: labels = argmax of a fixed random teacher network, so the task is learnable
    n_train: int = 4096  # training examples
    n_test: int = 1024  # test examples
    teacher_width: int = 64  # classification: hidden width of the one-hidden-layer tanh teacher
    seed: int = 0  # the dataset's own seed: every run of a sweep sees the same data


@dataclass
class MNIST1DConfig(DataConfig):
    name: str = "mnist1d"
    seed: int = 42  # mnist1d's generation seed (42 = the published dataset: 4000 train / 1000 test, length 40)
    cache: str = ""  # cache folder; "" = $GRADFLOW_CACHE or ~/.cache/gradflow


@dataclass
class SequenceDataConfig(DataConfig):
    name: str = "adding"  # adding (Hochreiter & Schmidhuber 1997), made on the fly
    T: int = 100  # sequence length (adding) or memory delay (copy): the depth in time
    n_train: int = 4096  # training sequences
    n_test: int = 1024  # test sequences
    seed: int = 0  # the dataset's own seed


@dataclass
class CopyDataConfig(SequenceDataConfig):
    name: str = "copy"  # the copy task (Arjovsky et al. 2016), made on the fly
    n_symbols: int = 8  # alphabet size
    copy_len: int = 10  # symbols to remember


@dataclass
class CharsDataConfig(DataConfig):
    name: str = "chars"  # character-level language modelling on the standard library's pydoc_data.topics text (~465k characters)
    T: int = 64  # characters per example (the context length); the targets are the same characters shifted by one
    test_fraction: float = 0.1  # the last part of the text (by position) is the test split
    n_train: int = 2048  # training windows, evenly spaced over the training text (0 = every non-overlapping window); evaluation passes over all of them
    n_test: int = 256  # test windows, likewise (0 = every non-overlapping window)


@dataclass
class RecallDataConfig(DataConfig):
    name: str = "recall"  # associative recall: key-value pairs, then queried keys whose values must be recalled
    pairs: int = 8  # key-value pairs per sequence (distinct keys)
    queries: int = 4  # queried keys per sequence, each followed by its value; only the values are scored
    n_keys: int = 16  # key alphabet (tokens 0..n_keys-1); must be >= pairs
    n_values: int = 16  # value alphabet (tokens n_keys..n_keys+n_values-1)
    n_train: int = 4096  # training sequences
    n_test: int = 1024  # test sequences
    seed: int = 0  # the dataset's own seed


@dataclass
class ImageDataConfig(DataConfig):
    name: str = "mnist"  # mnist | fashion_mnist | cifar10, read from their standard distribution files
    root: str = ""  # folder holding the files; "" = $GRADFLOW_DATA or ./data
    download: bool = False  # fetch missing files from the usual public mirrors (needs a network)
    subset: int = 0  # use only the first N training images (0 = all), e.g. for a quick CPU run


@dataclass
class CIFAR10Config(ImageDataConfig):
    name: str = "cifar10"
    augment: bool = False  # He et al. 2016's 4-pixel pad, random crop and flip, on device, per batch


@dataclass
class InitConfig:
    name: str = "xavier_normal"  # standard | xavier_uniform | xavier_normal | kaiming_uniform | kaiming_normal
    #                              | lecun_normal | orthogonal | delta_orthogonal | meanfield | gpt2 (N(0, 0.02), residual
    #                              outputs / sqrt(2 depth)) | keep (the model's own init); biases start at 0
    #                              except in meanfield. A key of another scheme (INIT_KEYS) is refused in a run;
    #                              a sweep may set init.gain and init.sw2 across init=orthogonal,meanfield, and
    #                              each point keeps (and records) its own scheme's keys only.
    gain: float = 1.0  # xavier_*, orthogonal, delta_orthogonal: weight scale multiplier
    mode: str = "fan_in"  # kaiming_*: fan_in preserves forward variance, fan_out backward variance
    sw2: float = 1.0  # meanfield: W ~ N(0, sw2 / fan_in)
    sb2: float = 0.05  # meanfield: b ~ N(0, sb2)


@dataclass
class NormConfig:
    name: str = "none"  # none | batchnorm | layernorm, placed between the weight layer and the activation
    eps: float = NORM_EPS  # 1e-5, added to the variance inside the normalization (norm=batchnorm|layernorm, model=resnet's batchnorm, a transformer's norms)


@dataclass
class OptimConfig:
    name: str = MISSING  # the optimizer: a key of OPTIM_SCHEMAS
    lr: float = 0.05  # learning rate (the start of the schedule)
    weight_decay: float = 0.0  # L2 penalty coupled into the update (0 = none)
    schedule: str = "constant"  # constant | step (lr x gamma at each milestone) | cosine (to 0 at train.steps)
    milestones: list[int] = field(default_factory=list)  # step schedule: the updates at which lr drops
    gamma: float = 0.1  # step schedule: the factor at each milestone
    warmup: int = 0  # linear warm-up: lr x (t + 1) / warmup for the first `warmup` updates, times the schedule (0 = none)
    # the learning rate of the model's scalar (0-d) parameters as a multiple of lr, schedule included: Fixup's
    # biases and multipliers, SkipInit's alpha (Zhang et al. 2019 train Fixup's at 1/10 of the rate)
    scalar_lr_factor: float = 1.0


@dataclass
class SGDConfig(OptimConfig):
    name: str = "sgd"  # SGD with heavy-ball momentum
    momentum: float = 0.9  # in [0, 1)


@dataclass
class AdamConfig(OptimConfig):
    name: str = "adam"  # Adam (Kingma & Ba 2015)
    lr: float = 0.001
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # two decay rates, each in [0, 1)


@dataclass
class ProbeConfig:
    every: int = 0  # probe every k steps; 0 = use `points` log-spaced steps instead
    points: int = 30  # number of log-spaced probed steps (step 0 and the last step always included)
    histograms: bool = False  # also store per-layer histograms of activations and back-propagated gradients
    jacobian: bool = False  # also store input-output Jacobian singular values (MLPs) at step 0 and the last step
    layer_jacobians: bool = False  # with jacobian: also every layer-to-layer Jacobian dh_l/dh_(l-1)
    jacobian_inputs: int = 4  # examples whose Jacobians are taken


@dataclass
class TrainConfig:
    steps: int = 1000  # optimizer updates; 0 = probe the initialization only
    batch_size: int = 128  # examples per update
    eval_every: int = 100  # train/test loss and accuracy every this many steps, and at the end
    grad_clip: float = 0.0  # clip the global gradient norm at this value, or disable if == 0.0
    clip_value: float = 0.0  # clip each gradient element to [-v, v], or disable if == 0.0
    check_every: int = 20  # look for a non-finite loss/gradient at least this often (a host sync point)


@dataclass
class GradcheckConfig:
    mode: str = "reverse"  # the gradient `gradflow gradcheck` checks against finite differences and times: reverse (backprop: every entry from one backward pass) | forward (forward-mode AD: one JVP per entry, so it costs like finite differences; backprop-vs-fd's negative control)


@dataclass
class Config:
    model: ModelConfig = MISSING
    data: DataConfig = MISSING
    init: InitConfig = MISSING
    norm: NormConfig = field(default_factory=NormConfig)
    optim: OptimConfig = MISSING
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    gradcheck: GradcheckConfig = field(default_factory=GradcheckConfig)
    seed: int = 0  # weight init and batch order
    device: str = "auto"  # auto (cuda, then mps, then cpu) | cpu | cuda | cuda:N | mps
    threads: int = 1  # CPU intra-op threads; 0 = torch's default (every core). 1: small nets gain little from more, and on a CPU other processes keep busy torch's spinning threads make a run many times slower (README: Threads)
    name: str = "run"  # results go to <results>/<name>/<job>/
    results: str = "results"  # the results root folder


# group -> choice -> schema: the one list of choices per group (a new family or dataset adds one line)
MODEL_SCHEMAS = {"mlp": MLPConfig, "cnn": CNNConfig, "resnet": ResNetConfig, "rnn": RNNConfig, "lstm": RNNConfig,
                 "gru": RNNConfig,  # one recurrent schema: model=rnn model.name=rnn,lstm sweeps the cell
                 "transformer": TransformerConfig, "custom": CustomConfig}
DATA_SCHEMAS = {"gaussian": GaussianDataConfig, "mnist1d": MNIST1DConfig, "mnist": ImageDataConfig,
                "fashion_mnist": ImageDataConfig, "cifar10": CIFAR10Config, "adding": SequenceDataConfig,
                "copy": CopyDataConfig, "chars": CharsDataConfig, "recall": RecallDataConfig}
INIT_SCHEMAS = {name: InitConfig for name in ("standard", "xavier_uniform", "xavier_normal", "kaiming_uniform",
                                               "kaiming_normal", "lecun_normal", "orthogonal", "delta_orthogonal",
                                               "meanfield", "gpt2", "keep")}
OPTIM_SCHEMAS = {"sgd": SGDConfig, "adam": AdamConfig}
GROUP_SCHEMAS = {"model": MODEL_SCHEMAS, "data": DATA_SCHEMAS, "init": INIT_SCHEMAS, "optim": OPTIM_SCHEMAS}

INIT_CHOICES = tuple(INIT_SCHEMAS)
RESNET_VARIANTS = ("batchnorm", "fixup", "skipinit")
MLP_VARIANTS = ("standard", "fixup")
RECURRENT_INITS = ("orthogonal", "identity", "gaussian")
NORM_CHOICES = ("none", "batchnorm", "layernorm")
SKIP_CHOICES = ("none", "residual")
MODE_CHOICES = ("fan_in", "fan_out")
LN_CHOICES = ("pre", "post", "none")
NORM_KINDS = ("layernorm", "rmsnorm")
GRADCHECK_MODES = ("reverse", "forward")


def register_configs() -> None:
    """The schemas go to Hydra's ConfigStore as schema/GROUP/CHOICE (each with its choice's name set);
    conf/GROUP/CHOICE.yaml starts from it."""
    cs = ConfigStore.instance()
    cs.store(name="schema", node=Config)
    for group, schemas in GROUP_SCHEMAS.items():
        for name, node in schemas.items():
            cs.store(group=f"schema/{group}", name=name, node=node(name=name), package=group)
    _register_experiments(cs)


UNREADABLE_EXPERIMENTS: dict[str, str] = {}  # a preset file that is not YAML -> why (said when it is asked for)


def _register_experiments(cs: ConfigStore) -> None:
    """experiments/*.yaml become the `experiment` group (`+experiment=NAME`), merged at the top level. A file
    that cannot be read is left out and named when asked for: one half-written preset took every command
    down with a parser's traceback, `--help` too."""
    for path in sorted(EXPERIMENTS_DIR.glob("*.yaml")):
        try:
            node = OmegaConf.load(path)
        except Exception as e:  # (yaml's parser errors, a list at the top, an unreadable file)
            UNREADABLE_EXPERIMENTS[path.stem] = " ".join(str(e).split())
            continue
        if not isinstance(node, DictConfig):
            UNREADABLE_EXPERIMENTS[path.stem] = "it holds a list, not key: value settings"
            continue
        cs.store(group="experiment", name=path.stem, node=node, package="_global_")


register_configs()


OmegaConf.register_new_resolver("gradflow_job", job_name, replace=True)


# --- arithmetic on other keys, for values coupled in a sweep: optim.lr=${gf.div:0.25,model.depth} ---
# An operand is a number, a key of the run's config, or a nested ${...} (quote the override then: Hydra's
# override grammar does not nest interpolations).
ARITHMETIC = {"add": operator.add, "sub": operator.sub, "mul": operator.mul, "div": operator.truediv,
              "pow": operator.pow}


def _operand(x: Any, root: DictConfig) -> float:
    if isinstance(x, (int, float)) and not isinstance(x, bool):
        return x
    try:
        return float(x)
    except (TypeError, ValueError):
        pass
    value = OmegaConf.select(root, str(x), default=None)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise GradflowError(f"gf arithmetic: {_show(x)} is neither a number nor a numeric key of the config")
    return value


def _resolver(fn):
    return lambda a, b, *, _root_: fn(_operand(a, _root_), _operand(b, _root_))


for _op, _fn in ARITHMETIC.items():
    OmegaConf.register_new_resolver(f"gf.{_op}", _resolver(_fn), replace=True)


# --- validation: what types alone cannot say -----------------------------------------------------
MAX_STEPS = 10**9  # more updates than any study here runs; larger is a typo (1e23) that would never finish
MAX_NAME = 100  # characters in a study name: it becomes a folder name
MAX_DEPTH = 10**5  # layers: deeper is a typo, which would build modules until memory runs out
# units per layer (width, channels, hidden, d_model): one 1e5 x 1e5 float32 layer is 40 GB, a wider one no
# device holds, so a wider value is a typo (an extra zero or three); refused before a rerun replaces anything
MAX_WIDTH = 10**5
MAX_SEED = 2**63 - 1  # torch.manual_seed's range (torch raises beyond it)
# training examples of the fixed-size datasets (MNIST-1D's published split; the full image sets)
TRAIN_SIZES = {"mnist1d": 4000, "mnist": 60000, "fashion_mnist": 60000, "cifar10": 50000}
ALPHA_WORDS = ("inv_sqrt_depth", "learnable")


def _show(value: Any, key: str | None = None) -> str:
    """A value as a message shows it: strings quoted (but a number that `key`, one of NUMBER_OR_WORD_KEYS,
    holds as a string: alpha's 0.5 as the user wrote it, not '0.5'), everything shortened to one line."""
    if isinstance(value, str) and key in NUMBER_OR_WORD_KEYS and value == value.strip() and \
            not math.isnan(number_in(value)):
        return shorten(value)
    return shorten(repr(value) if isinstance(value, str) else value)


def _choice(key: str, value: Any, choices) -> None:
    if value not in choices:
        near = did_you_mean(value, list(map(str, choices))) if isinstance(value, str) else ""
        raise GradflowError(f"{key}={_show(value)} is not allowed{near}; choices: {', '.join(map(str, choices))}")


def _at_least(key: str, value: Any, minimum: int | float = 1) -> None:
    """minimum <= value (1 unless said: a count of layers, units, examples)."""
    if value < minimum:
        raise GradflowError(f"{key}={_show(value)} must be >= {minimum}")


def uses_batchnorm(cfg) -> bool:
    """Whether the run's model normalizes over the batch (one example's batch variance is 0)."""
    return cfg.norm.name == "batchnorm" or (cfg.model.name == "resnet" and cfg.model.variant == "batchnorm")


def _at_most(key: str, value: Any, maximum: int, why: str = "") -> None:
    if value > maximum:
        raise GradflowError(f"{key}={_show(value)} must be <= {maximum}{why}")


def _units(key: str, value: Any) -> None:
    """A positive layer width of at most MAX_WIDTH."""
    _at_least(key, value)
    _at_most(key, value, MAX_WIDTH, f" (a {MAX_WIDTH} x {MAX_WIDTH} layer is {4 * MAX_WIDTH**2 / 1e9:g} GB of "
             "float32 weights)")


def _between(key: str, value: float, lo: float, hi: float) -> None:
    """lo <= value < hi."""
    if not lo <= value < hi:
        raise GradflowError(f"{key}={_show(value)} must be in [{lo:g}, {hi:g})")


def _unused(key: str, value: Any, default: Any, applies: str) -> None:
    """A key the run ignores must keep its default: a changed value would be a silent no-op."""
    if value != default:
        raise GradflowError(f"{key}={_show(value)} does not apply to this run: {applies}")


def _finite(node: Any, prefix: str = "") -> None:
    """Every float in the config is a finite number (nan, inf and 1e400 are typos, not settings)."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for k, v in items:
        key = f"{prefix}.{k}" if prefix and isinstance(k, str) else f"{prefix}[{k}]" if prefix else str(k)
        if isinstance(v, float) and not math.isfinite(v):
            overflow = " (a number past 1.8e308, as 1e400, reads as inf)" if math.isinf(v) else ""
            raise GradflowError(f"{key}={v} must be a finite number{overflow}")
        _finite(v, key)


def validate(cfg: DictConfig, sweep_point: bool = False) -> None:
    """Raise GradflowError for the first value that is out of range, not a valid choice, or ignored (except
    in a sweep point, where a value set for some points may be ignored by others: norm.eps of norm=none)."""
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
    validate_resolved(resolved, sweep_point)


def validate_resolved(resolved: dict, sweep_point: bool = False) -> None:
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
        _conditional(cfg)
    _train(cfg)
    _at_least("probe.every", cfg.probe.every, 0)
    _at_least("probe.points", cfg.probe.points, 2)
    _at_least("probe.jacobian_inputs", cfg.probe.jacobian_inputs)
    if cfg.probe.layer_jacobians and not cfg.probe.jacobian:
        raise GradflowError("probe.layer_jacobians=true needs probe.jacobian=true")
    _choice("gradcheck.mode", cfg.gradcheck.mode, GRADCHECK_MODES)
    _at_least("threads", cfg.threads, 0)
    _at_least("seed", cfg.seed, 0)
    _at_most("seed", cfg.seed, MAX_SEED)
    if not str(cfg.results).strip():  # (it wrote into the working folder itself)
        raise GradflowError("results= is empty: give the folder runs go under, e.g. results=results (the default)")
    if (not re.fullmatch(r"[A-Za-z0-9._\-/]+", cfg.name) or ".." in Path(cfg.name).parts or cfg.name.startswith("/")
            or len(cfg.name) > MAX_NAME):
        raise GradflowError(f"name={_show(cfg.name)} must be a relative folder name inside {cfg.results}/ "
                            f"(letters, digits, . _ - /; no '..'; at most {MAX_NAME} characters)")
    if sweep_point:  # a sweep checks its points' devices where they run (sweep.plan): on a login node, a
        check_device_name(cfg.device)  # SLURM sweep's device=cuda is the compute nodes'
    else:
        resolve_device(cfg.device)


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
            raise GradflowError(f"{group}.{extra[0]} is not a key of {group}={name} (its keys: "
                                f"{', '.join(sorted(keys - {'name'}))}): a key added with + is read by nothing")
        if set(resolved[group]) != keys:
            raise GradflowError(f"{group}.name={_show(name)} names another kind of {group} than the one composed: "
                                f"choose it with {group}={name}, not {group}.name")


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


def _conditional(cfg) -> None:
    """A key the run reads only where others say so (choices.CONDITIONAL_KEYS: norm.eps without a norm layer,
    model.alpha without model.skip=residual, optim.gamma without optim.schedule=step) keeps its default
    where the run does not read it: a changed value would be a silent no-op. Not checked in a sweep
    point: norm=none,batchnorm norm.eps=1e-3 sets it where read (the plan refuses a key no point reads)."""
    values = {f"{group}.{k}": v for group in ("model", "norm", "optim") for k, v in cfg[group].items()}
    flat = {k: str(list(v)) if isinstance(v, list) else v for k, v in values.items()}  # (as store.flatten has it)
    for key, (_, default, _) in CONDITIONAL_KEYS.items():
        why = unread(key, flat)
        if why and key in flat and flat[key] != default:
            value = values[key]
            raise GradflowError(f"{key}={_show(list(value) if isinstance(value, list) else value, key)} does not "
                                f"apply to this run: {why}")


# the string keys that hold a number or a word (model.alpha=inv_sqrt_depth, data.scale=qstar): typed str in the
# schema for the word, so a config.yaml holds their numbers as strings ('1.0'), which a page showing it unquotes
NUMBER_OR_WORD_KEYS = ("model.alpha", "data.scale")


def number_in(text: str) -> float:
    """A number written as a string key's value (model.alpha, data.scale); NaN where it is none."""
    try:
        return float(text)
    except ValueError:
        return math.nan


def _alpha(alpha: str) -> None:
    if alpha in ALPHA_WORDS:
        return
    if not math.isfinite(number_in(alpha)):
        raise GradflowError(f"model.alpha={_show(alpha, 'model.alpha')} is not allowed; choices: a finite number, "
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
            raise GradflowError(f"model.alpha={_show(m.alpha, 'model.alpha')} does not apply to model.variant=fixup: "
                                "its branch multiplier is a learnable scalar starting at 1")


def _resnet(m, norm: str) -> None:
    """He et al.'s CIFAR ResNet: 6n + 1 convs, three stages; normalization is the variant's."""
    if (m.depth - 1) % 6 or m.depth < 7:
        raise GradflowError(f"model.depth={m.depth} must be 6n+1 for a resnet (19, 31, 43, 55, 109: "
                            "resnet20/32/44/56/110 count the head too)")
    if len(m.widths) != 3 or min(m.widths) < 1 or max(m.widths) > MAX_WIDTH:
        raise GradflowError(f"model.widths={_show(list(m.widths))} must list three stages' filters, "
                            f"each 1 to {MAX_WIDTH}, e.g. [16, 32, 64]")
    if norm not in ("none", m.variant):
        raise GradflowError(f"norm={norm} does not apply to model=resnet: its normalization is "
                            "model.variant (batchnorm | fixup | skipinit); leave norm=none")
    if m.skip != "residual" and m.variant != "batchnorm":
        raise GradflowError(f"model.variant={m.variant} needs model.skip=residual (its branches start at "
                            "zero, which would cut a plain net); use model.variant=batchnorm for a plain net")


def _data(cfg) -> None:
    d = cfg.data
    _choice("data.name", d.name, tuple(DATA_SCHEMAS))
    if "seed" in d:  # (numpy's generators, mnist1d's among them, take 0 .. 2^32 - 1)
        _at_least("data.seed", d.seed, 0)
        _at_most("data.seed", d.seed, 2**32 - 1)
    if d.name in ("mnist", "fashion_mnist", "cifar10"):
        _at_least("data.subset", d.subset, 0)
    if d.name in ("adding", "copy"):
        _at_least("data.T", d.T, 2)
        _at_least("data.n_train", d.n_train)
        _at_least("data.n_test", d.n_test)
    if d.name == "copy":
        _at_least("data.n_symbols", d.n_symbols)
        _at_least("data.copy_len", d.copy_len)
    if d.name == "chars":
        _at_least("data.T", d.T)
        _at_least("data.n_train", d.n_train, 0)
        _at_least("data.n_test", d.n_test, 0)
        if not 0 < d.test_fraction < 1:
            raise GradflowError(f"data.test_fraction={d.test_fraction} must be strictly between 0 and 1 (both splits "
                                "need examples)")
    if d.name == "recall":
        for k in ("pairs", "queries", "n_keys", "n_values", "n_train", "n_test"):
            _at_least(f"data.{k}", d[k])
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


def _scale(cfg) -> None:
    """data.scale: a positive number, or qstar where the mean-field theory knows the run's init."""
    scale = cfg.data.scale
    if scale == "qstar":
        from gradflow import theory

        if theory.effective_sw2(theory.run_keys(cfg)) is None:
            raise GradflowError(f"data.scale=qstar needs an init with a mean-field sigma_w^2; init={cfg.init.name} "
                                "has none: use init=meanfield or a number")
        theory.input_scale(cfg)  # raises where there is no usable fixed point
        return
    value = number_in(scale)
    if not (math.isfinite(value) and value > 0):
        raise GradflowError(f"data.scale={_show(scale, 'data.scale')} is not allowed; choices: a positive number, qstar "
                            "(the first layer starts at the mean-field fixed point q*)")


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
            raise GradflowError(f"optim.betas={_show(list(o.betas))} must be two numbers, e.g. [0.9,0.999]")
        for k, beta in enumerate(o.betas):
            _between(f"optim.betas[{k}]", beta, 0, 1)
    _choice("optim.schedule", o.schedule, ("constant", "step", "cosine"))
    _at_least("optim.warmup", o.warmup, 0)
    _at_least("optim.scalar_lr_factor", o.scalar_lr_factor, 0)
    if o.schedule == "step":
        if not o.gamma > 0:
            raise GradflowError(f"optim.gamma={o.gamma} must be > 0 (the lr factor at each milestone)")
        if not o.milestones or min(o.milestones) < 1:
            raise GradflowError(f"optim.milestones={_show(list(o.milestones))} must list the updates (>= 1) at "
                                "which optim.schedule=step drops the lr, e.g. [500,750]")


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
    batch_fits(t.batch_size, train_size(cfg.data), cfg.data.name)
    if uses_batchnorm(cfg) and t.batch_size < 2:
        raise GradflowError(f"train.batch_size={t.batch_size} must be >= 2 with batch normalization "
                            "(the batch variance of one example is 0)")
    if 0 < t.steps < cfg.optim.warmup:  # (a typo, or steps cut for a quick try: say it, not a silent half-run)
        raise GradflowError(f"optim.warmup={cfg.optim.warmup} must be at most train.steps={t.steps}: the learning rate "
                            f"would never reach optim.lr")
    late = [m for m in cfg.optim.milestones if m >= t.steps] if cfg.optim.schedule == "step" and t.steps else []
    if late:  # (likewise: a paper's [32000,48000] under train.steps=1000 ran at a constant lr without a word)
        raise GradflowError(f"optim.milestones={_show(list(cfg.optim.milestones))} must be below train.steps={t.steps}: "
                            f"the lr never drops at {', '.join(map(str, late))}, after the last update "
                            f"({t.steps - 1})")
    _at_least("train.eval_every", t.eval_every)
    _at_least("train.check_every", t.check_every)
    _at_least("train.grad_clip", t.grad_clip, 0)
    _at_least("train.clip_value", t.clip_value, 0)


DEVICE_ENV = "GRADFLOW_DEVICE"  # what device=auto means on this machine, when set (cpu on a shared GPU box)
DEVICE_NAMES = "auto, cpu, cuda, cuda:N, mps"


def check_device_name(spec: str, option: str = "") -> None:
    """`spec` names a kind of device (auto, cpu, cuda, cuda:N, mps), whichever machine it is for."""
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", str(spec)):
        raise GradflowError(f"{option + ' ' if option else 'device='}{spec!r} is not allowed; choices: {DEVICE_NAMES}")


def resolve_device(spec: str, option: str = ""):
    """auto -> $GRADFLOW_DEVICE if set, else cuda, then mps, then cpu; an explicit device must exist
    on this machine. `option`: the command-line option that gave `spec` (bench's --device), as errors
    name it; else the config key device=."""
    check_device_name(spec, option)
    import torch

    def given(value: str) -> str:  # as the user wrote it
        return f"{option} {value}" if option else f"device={value}"

    preset = os.environ.get(DEVICE_ENV, "auto").strip() or "auto"
    if spec == "auto" and preset != "auto":
        try:
            return resolve_device(preset)
        except GradflowError:
            raise GradflowError(f"{DEVICE_ENV}={preset!r} (what device=auto means here) names no device of this "
                                f"machine; choices: {DEVICE_NAMES} (where present)") from None
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if re.fullmatch(r"cuda(:\d+)?", spec):
        if not torch.cuda.is_available():
            raise GradflowError(f"{given(repr(spec))} but CUDA is not available on this machine; use "
                                f"{given('auto')} or {given('cpu')}")
        index = int(spec.split(":")[1]) if ":" in spec else 0
        if index >= torch.cuda.device_count():
            raise GradflowError(f"{given(repr(spec))} but this machine has {torch.cuda.device_count()} CUDA device(s)")
        return torch.device(spec)
    if spec == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise GradflowError(f"{given(repr(spec))} but MPS is not available on this machine; use {given('auto')} "
                                f"or {given('cpu')}")
        return torch.device("mps")
    raise AssertionError(spec)  # (check_device_name let no other through)


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
        cfg = _hydra_compose(overrides)
    except GradflowError:
        raise
    except Exception as e:  # Hydra/OmegaConf errors: make them one line that names the key
        other = sweep_point and key_of_another_choice(e)
        if other:
            return compose([o for o in overrides if override_key(o) != other or o[0] in "+~"], sweep_point=True,
                           typed=typed)
        raise GradflowError(hydra_error_message(e, quoted)) from None
    try:
        validate(cfg, sweep_point)
    except GradflowError as e:  # (it quotes the config's values: optim.momentum=2 reads 2.0 there)
        raise GradflowError(in_preset(as_typed(str(e), quoted), overrides)) from None
    if not sweep_point:
        _keys_apply(cfg, overrides)
    return cfg


# Hydra's composes of this process, by the overrides that are not plain values (what `_hydra_compose` copies)
_structures: dict[tuple[str, ...], bytes | DictConfig] = {}
STRUCTURES = 64  # kept at most (~6 KB each, pickled), the oldest dropped first


def _hydra_compose(overrides) -> DictConfig:
    """Hydra's compose of conf/config.yaml with `overrides`. Hydra composes the files the group choices
    name, then applies the value overrides to the result (~90 ms, nearly all of it the first part); here
    the first part is done once per distinct set of the overrides that are not plain values (groups, +/~
    keys, interpolations, dicts, list items: `_structure`) and each call applies its plain values to a copy
    of that, as Hydra applies them (~0.5 ms): a sweep's planning, `bench`, a script or the test suite
    compose many configs that differ in values alone. Overrides of hydra keys are composed whole. (A
    structure's files under conf/ and experiments/ are read once per process: an edit made while a process
    runs reaches the next one.)"""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl

    parsed = parsed_overrides(list(overrides))  # (a line Hydra cannot parse fails here as it would there)
    structure, values = _structure(parsed)
    if structure is None:  # hydra keys (a searchpath that names files of the moment): composed whole every time
        return _hydra_compose_whole(overrides)
    if structure in _structures:
        cfg = copied(_structures[structure])
    else:
        cfg = _hydra_compose_whole(structure)
        _structures[structure] = kept(cfg)  # (before the values go on)
        if len(_structures) > STRUCTURES:
            del _structures[next(iter(_structures))]
    ConfigLoaderImpl._apply_overrides_to_config(values, cfg)  # (its errors are Hydra's compose's, word for word)
    return cfg


def _structure(parsed: list) -> tuple[tuple[str, ...] | None, list]:
    """(The lines of the overrides that are not plain values, the plain ones): a plain value whose key is
    one of the others', or inside or around it (~model.kwargs model.kwargs.a=1), goes with them, as the
    order of the two then matters. (None, []) where an override sets a hydra key."""
    if any(o.is_hydra_override() for o in parsed):
        return None, []
    others = [f"{o.key_or_group}." for o in parsed if not sets_plain_value(o)]
    values = [o for o in parsed if sets_plain_value(o) and not any(
        k.startswith(f"{o.key_or_group}.") or f"{o.key_or_group}.".startswith(k) for k in others)]
    return tuple(o.input_line for o in parsed if o not in values), values


def _hydra_compose_whole(overrides) -> DictConfig:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
            return hydra_compose(config_name="config", overrides=list(overrides))
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


def choice_keys(group: str, choice: str) -> list[str]:
    """The keys one choice of a group takes: its schema's fields, less those CHOICE_KEYS gives to other
    choices of the same schema (init.sw2 belongs to init=meanfield only)."""
    keys = [f"{group}.{f.name}" for f in fields(GROUP_SCHEMAS[group][choice]) if f.name != "name"]
    return [k for k in keys if k not in CHOICE_KEYS or choice in CHOICE_KEYS[k][1]]


def not_a_key_of(key: str, chosen: str) -> str:
    """init.sw2 does not apply to init=xavier_normal, which takes init.gain; it is a key of init=meanfield"""
    group = key.partition(".")[0]
    takes = ", ".join(choice_keys(group, chosen)) or "no keys"
    return (f"{key} does not apply to {group}={chosen}, which takes {takes}; "
            f"it is a key of {', '.join(choices_with_key(key))}")


def _chosen(group: str, overrides) -> str | None:
    """The group's choice (its schema's name) that `overrides` compose to, or None if they do not."""
    try:
        return OmegaConf.select(_hydra_compose(overrides), f"{group}.name")
    except Exception:
        return None


def config_loader():
    """Hydra's loader over conf/ and the ConfigStore: what a sweep's glob(*) lists a group's choices from."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.utils import create_config_search_path

    return ConfigLoaderImpl(config_search_path=create_config_search_path(str(CONF_DIR)))


def group_choices(group: str) -> list[str]:
    folder = CONF_DIR / group
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


GROUPS = ("model", "data", "init", "norm", "optim", "probe")
GROUP_KEYS = (*GROUPS, "experiment")  # choosing one of these composes different files


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
    missing = re.search(r"Could not find '([^']+)/([^']+)'", text)
    if missing:
        group, value = missing.groups()
        group = group.lstrip("/")
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
        others = [f"{_show(k)}{_elsewhere(k) or did_you_mean(k, known_keys() if '.' in k else (*SECTIONS, *top))}"
                  for k in _other_unknown(name, overrides)]  # (Hydra stops at the first: name them all at once)
        return (f"unknown key{'s' if others else ''} {', '.join([f'{_show(name)}{near}', *others])}; "
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
            return f"{key}={_show(shown)} is not a valid {kind}{hint}"
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


# the config's sections of keys (model, ..., train, gradcheck), as against its top-level values (seed)
SECTIONS = tuple(f.name for f in fields(Config) if f.name in GROUP_SCHEMAS or f.default_factory is not NO_DEFAULT)


@functools.cache
def list_keys() -> frozenset[str]:
    """The keys whose values are lists (model.widths, optim.betas, optim.milestones): key=a,b there would be
    a sweep over a and b, not the list [a,b]."""
    return frozenset(f"{group}.{f.name}" for group, schemas in GROUP_SCHEMAS.items() for cls in set(schemas.values())
                     for f in fields(cls) if str(f.type).startswith("list"))


@functools.cache
def bool_keys() -> frozenset[str]:
    """The keys that are true or false (data.augment, probe.jacobian): OmegaConf reads 2, -1, yes and on as
    booleans too, and each spelling named a run folder of its own."""
    schemas = [(group, cls) for group, by in GROUP_SCHEMAS.items() for cls in set(by.values())]
    schemas += [(f.name, f.default_factory) for f in fields(Config) if f.name in SECTIONS and f.name not in GROUP_SCHEMAS]
    return frozenset(f"{group}.{f.name}" for group, cls in schemas for f in fields(cls) if f.type in ("bool", bool))


@functools.cache
def known_keys() -> tuple[str, ...]:
    """Every config key of every choice: a misspelled key's nearest ones come from here."""
    out = []
    for f in fields(Config):
        if f.name in GROUP_SCHEMAS:
            out += [f"{f.name}.name", *(k for c in GROUP_SCHEMAS[f.name] for k in choice_keys(f.name, c))]
        elif f.name in SECTIONS:
            out += [f"{f.name}.{g.name}" for g in fields(f.default_factory)]
        else:
            out.append(f.name)
    return tuple(dict.fromkeys(out))


def choices_with_key(dotted: str) -> list[str]:
    """["optim=sgd"] for "optim.momentum": the choices of the key's group that take it."""
    group = dotted.partition(".")[0]
    return [f"{group}={choice}" for choice in GROUP_SCHEMAS.get(group, {}) if dotted in choice_keys(group, choice)]


def experiment_choices(group: str) -> list[str]:
    if group == "experiment":
        return sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.yaml"))
    return []


