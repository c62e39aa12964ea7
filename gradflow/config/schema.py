"""The config's schema: one dataclass per choice of a group, registered in Hydra's ConfigStore, with the
tables of groups, choices and keys that composition, validation and the error messages read.

YAML under conf/ gives the values of each choice; the dataclasses here give every key its type, default and
meaning, so a bad override fails at composition with the key named, not inside training.
"""

from __future__ import annotations

import functools
import math
import operator
from dataclasses import MISSING as NO_DEFAULT, dataclass, field, fields
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from gradflow.choices import CHOICE_KEYS, JACOBIAN_INPUTS, NORM_EPS, NORM_KIND, PROBE_POINTS
from gradflow.errors import GradflowError, shorten
from gradflow.overrides import job_name


# --- where the configs live: inside the installed package (wheel) or at the checkout's root ---
_PKG = Path(__file__).resolve().parents[1]  # (gradflow/)


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
    norm_kind: str = NORM_KIND  # layernorm | rmsnorm (LLaMA)
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
    eps: float = NORM_EPS  # added to the variance inside the normalization (norm=batchnorm|layernorm, model=resnet's batchnorm, a transformer's norms)


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
    points: int = PROBE_POINTS  # number of log-spaced probed steps (step 0 and the last step always included)
    histograms: bool = False  # also store per-layer histograms of activations and back-propagated gradients
    jacobian: bool = False  # also store input-output Jacobian singular values (MLPs) at step 0 and the last step
    layer_jacobians: bool = False  # with jacobian: also every layer-to-layer Jacobian dh_l/dh_(l-1)
    jacobian_inputs: int = JACOBIAN_INPUTS  # examples whose Jacobians are taken


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
NORM_FAMILIES = ("mlp", "cnn", "resnet")  # the families whose from_config places norm= layers (resnet: its own check)
# the groups of one schema whatever is chosen (norm=batchnorm picks a name, not other keys)
FIXED_SCHEMAS = {"norm": NormConfig, "probe": ProbeConfig, "train": TrainConfig, "gradcheck": GradcheckConfig}

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
        raise GradflowError(f"gf arithmetic: {shorten(repr(x) if isinstance(x, str) else x)} is neither a number nor a numeric key of the config")
    return value


def _resolver(fn):
    return lambda a, b, *, _root_: fn(_operand(a, _root_), _operand(b, _root_))


for _op, _fn in ARITHMETIC.items():
    OmegaConf.register_new_resolver(f"gf.{_op}", _resolver(_fn), replace=True)



def number_in(text: str) -> float:
    """A number written as a string key's value (model.alpha, data.scale); NaN where it is none."""
    try:
        return float(text)
    except ValueError:
        return math.nan


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


def group_choices(group: str) -> list[str]:
    folder = CONF_DIR / group
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


GROUPS = ("model", "data", "init", "norm", "optim", "probe")
GROUP_KEYS = (*GROUPS, "experiment")  # choosing one of these composes different files

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


# Hydra and OmegaConf learn the schemas, the presets and the job-name resolver once, at import
register_configs()
OmegaConf.register_new_resolver("gradflow_job", job_name, replace=True)
