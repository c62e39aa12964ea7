"""Typed configuration: the schema (dataclasses in Hydra's ConfigStore), composition and validation.

YAML under conf/ gives the values of each choice; the dataclasses here give every key its type,
default and meaning, so a bad override fails at composition with the key named, not inside
training. `validate` adds what a type cannot say (ranges, choices, device availability).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from gradflow.errors import GradflowError

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
@dataclass
class MLPConfig:
    name: str = "mlp"
    depth: int = 20  # hidden layers; each = weight layer, optional norm, activation, optional skip
    width: int = 128  # units in every hidden layer (residual blocks keep it constant)
    activation: str = "tanh"  # a name from gradflow.activations.ACTIVATIONS
    skip: str = "none"  # none | residual: h <- h + alpha * branch(h) over hidden layers 2..depth
    alpha: str = "1.0"  # residual branch scale: a number, inv_sqrt_depth (1/sqrt(depth)), or learnable (SkipInit: starts at 0)
    branch_layers: int = 1  # weight layers per residual branch (m); 1: h + alpha * act(W h + b); m >= 2 ends at W_m
    variant: str = "standard"  # standard | fixup (Zhang et al. 2019: m >= 2, no norm, last branch layer and head at 0)


@dataclass
class CNNConfig:
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
class ResNetConfig:
    name: str = "resnet"
    depth: int = 19  # hidden conv layers = 6n + 1 (He et al. 2016's "resnet20" = 19 convs + the head)
    widths: list[int] = field(default_factory=lambda: [16, 32, 64])  # filters of the three stages
    dims: int = 0  # spatial dimensions, 1 or 2; 0 = from the data
    activation: str = "relu"
    skip: str = "residual"  # residual | none (the "plain" net: the same layers without shortcuts)
    variant: str = "batchnorm"  # batchnorm (the paper) | fixup | skipinit (both without normalization)


@dataclass
class RNNConfig:
    name: str = "rnn"  # rnn (vanilla) | lstm | gru; depth is time: the sequence length of the data
    hidden: int = 64  # hidden units
    activation: str = "tanh"  # vanilla rnn only: tanh | relu
    recurrent_init: str = "orthogonal"  # orthogonal | identity (IRNN, Le et al. 2015) | gaussian
    gain: float = 1.0  # recurrent weight scale: orthogonal/identity multiplier, gaussian N(0, gain^2 / hidden)
    forget_bias: float = 0.0  # lstm forget-gate bias at init (PyTorch's default 0; 1 or 3 keep memory)


@dataclass
class GaussianDataConfig:
    name: str = "gaussian"
    dim: int = 64  # input dimension
    distribution: str = "normal"  # normal: x ~ N(0, I) | uniform01: x ~ U[0, 1]^dim (Glorot & Bengio 2010)
    scale: float = 1.0  # inputs are multiplied by this (e.g. to start a meanfield net at its fixed point q*)
    classes: int = 10  # labels = argmax of a fixed random teacher network, so the task is learnable
    n_train: int = 4096  # training examples
    n_test: int = 1024  # test examples
    teacher_width: int = 64  # hidden width of the one-hidden-layer tanh teacher
    seed: int = 0  # the dataset's own seed: every run of a sweep sees the same data


@dataclass
class MNIST1DConfig:
    name: str = "mnist1d"
    seed: int = 42  # mnist1d's generation seed (42 = the published dataset: 4000 train / 1000 test, length 40)
    cache: str = ""  # cache folder; "" = $GRADFLOW_CACHE or ~/.cache/gradflow


@dataclass
class SequenceDataConfig:
    name: str = "adding"  # adding (Hochreiter & Schmidhuber 1997) | copy (Arjovsky et al. 2016), made on the fly
    T: int = 100  # sequence length (adding) or memory delay (copy): the depth in time
    n_train: int = 4096  # training sequences
    n_test: int = 1024  # test sequences
    n_symbols: int = 8  # copy only: alphabet size
    copy_len: int = 10  # copy only: symbols to remember
    seed: int = 0  # the dataset's own seed


@dataclass
class ImageDataConfig:
    name: str = "mnist"  # mnist | fashion_mnist | cifar10, read from their standard distribution files
    root: str = ""  # folder holding the files; "" = $GRADFLOW_DATA or ./data
    download: bool = False  # fetch missing files from the usual public mirrors (needs a network)
    augment: bool = False  # cifar10: He et al. 2016's 4-pixel pad, random crop and flip, on device, per batch
    subset: int = 0  # use only the first N training images (0 = all), e.g. for a quick CPU run


@dataclass
class InitConfig:
    name: str = "xavier_normal"  # standard | xavier_uniform | xavier_normal | kaiming_uniform | kaiming_normal
    #                              | lecun_normal | orthogonal | meanfield
    gain: float = 1.0  # xavier_* and orthogonal: weight scale multiplier
    mode: str = "fan_in"  # kaiming_*: fan_in preserves forward variance, fan_out backward variance
    sw2: float = 1.0  # meanfield: W ~ N(0, sw2 / fan_in)
    sb2: float = 0.0  # meanfield: b ~ N(0, sb2); every other scheme starts biases at zero


@dataclass
class NormConfig:
    name: str = "none"  # none | batchnorm | layernorm, placed between the weight layer and the activation
    eps: float = 1e-5  # added to the variance inside the normalization


@dataclass
class OptimConfig:
    name: str = "sgd"  # sgd | adam
    lr: float = 0.05  # learning rate (the start of the schedule)
    momentum: float = 0.9  # sgd only
    weight_decay: float = 0.0  # L2 penalty coupled into the update (0 = none)
    betas: tuple[float, float] = (0.9, 0.999)  # adam only
    schedule: str = "constant"  # constant | step (lr x gamma at each milestone) | cosine (to 0 at train.steps)
    milestones: list[int] = field(default_factory=list)  # step schedule: the updates at which lr drops
    gamma: float = 0.1  # step schedule: the factor at each milestone


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
class Config:
    model: Any = MISSING
    data: Any = MISSING
    init: InitConfig = field(default_factory=InitConfig)
    norm: NormConfig = field(default_factory=NormConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    seed: int = 0  # weight init and batch order
    device: str = "auto"  # auto (cuda, then mps, then cpu) | cpu | cuda | cuda:N | mps
    threads: int = 1  # CPU intra-op threads; 0 = torch's default (every core). 1: small nets gain little from more, and on a CPU other processes keep busy torch's spinning threads make a run many times slower (README: Threads)
    name: str = "run"  # results go to <results>/<name>/<job>/
    results: str = "results"  # the results root folder


MODEL_SCHEMAS = {"mlp": MLPConfig, "cnn": CNNConfig, "resnet": ResNetConfig, "rnn": RNNConfig, "lstm": RNNConfig,
                 "gru": RNNConfig}
DATA_SCHEMAS = {"gaussian": GaussianDataConfig, "mnist1d": MNIST1DConfig, "mnist": ImageDataConfig,
                "fashion_mnist": ImageDataConfig, "cifar10": ImageDataConfig, "adding": SequenceDataConfig,
                "copy": SequenceDataConfig}

INIT_CHOICES = ("standard", "xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal",
                "lecun_normal", "orthogonal", "meanfield", "delta_orthogonal")
RESNET_VARIANTS = ("batchnorm", "fixup", "skipinit")
MLP_VARIANTS = ("standard", "fixup")
RECURRENT_INITS = ("orthogonal", "identity", "gaussian")
NORM_CHOICES = ("none", "batchnorm", "layernorm")
OPTIM_CHOICES = ("sgd", "adam")
SKIP_CHOICES = ("none", "residual")
MODE_CHOICES = ("fan_in", "fan_out")


def register_configs() -> None:
    cs = ConfigStore.instance()
    cs.store(name="schema", node=Config)
    for group, schemas in (("model", MODEL_SCHEMAS), ("data", DATA_SCHEMAS)):
        for name, node in schemas.items():
            cs.store(group=f"schema/{group}", name=name, node=node, package=group)
    for group, node in (("init", InitConfig), ("norm", NormConfig), ("optim", OptimConfig),
                        ("probe", ProbeConfig)):
        cs.store(group=f"schema/{group}", name="base", node=node, package=group)
    _register_experiments(cs)


def _register_experiments(cs: ConfigStore) -> None:
    """experiments/*.yaml become the `experiment` group (`+experiment=NAME`), merged at the top level."""
    for path in sorted(EXPERIMENTS_DIR.glob("*.yaml")):
        node = OmegaConf.load(path)
        node.pop("defaults", None)
        cs.store(group="experiment", name=path.stem, node=node, package="_global_")


register_configs()


# --- job names: readable, filesystem-safe, order-independent ------------------------------------
NOT_IN_JOB_NAME = ("name", "results", "device", "threads")  # where and how fast, not what is computed
_UNSAFE = re.compile(r"[^A-Za-z0-9._=,+\-]")


def job_name(overrides: list[str] | str) -> str:
    """The run folder name for a list of `key=value` overrides (or Hydra's override_dirname)."""
    items = overrides.split(",") if isinstance(overrides, str) else list(overrides)
    keep = sorted(o for o in items if o and _key(o) not in NOT_IN_JOB_NAME and not _key(o).startswith("hydra"))
    name = _UNSAFE.sub("_", ",".join(keep)) or "default"
    if len(name) > 160:
        name = name[:150] + "-" + hashlib.sha1(name.encode()).hexdigest()[:8]
    return name


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


OmegaConf.register_new_resolver("gradflow_job", job_name, replace=True)


# --- validation: what types alone cannot say -----------------------------------------------------
def _choice(key: str, value: Any, choices) -> None:
    if value not in choices:
        raise GradflowError(f"{key}={value!r} is not allowed; choices: {', '.join(map(str, choices))}")


def _positive(key: str, value: Any, minimum: int | float = 1) -> None:
    if value < minimum:
        raise GradflowError(f"{key}={value} must be >= {minimum}")


def validate(cfg: DictConfig) -> None:
    """Raise GradflowError for the first value that is out of range or not a valid choice."""
    from gradflow import activations

    m = cfg.model
    _choice("model.name", m.name, tuple(MODEL_SCHEMAS))
    _choice("model.activation", m.activation, tuple(activations.ACTIVATIONS))
    if m.name in ("mlp", "cnn", "resnet"):
        _positive("model.depth", m.depth)
        _choice("model.skip", m.skip, SKIP_CHOICES)
    if m.name in ("mlp", "cnn"):
        _alpha(m.alpha)
    if m.name == "mlp":
        _positive("model.width", m.width)
        _mlp_blocks(m, cfg.norm.name)
    if m.name == "cnn":
        _positive("model.channels", m.channels)
        _positive("model.kernel", m.kernel)
        _positive("model.stride", m.stride)
        _choice("model.dims", m.dims, (0, 1, 2))
    if m.name == "resnet":
        _choice("model.variant", m.variant, RESNET_VARIANTS)
        _resnet(m, cfg.norm.name)
        _choice("model.dims", m.dims, (0, 1, 2))
    if m.name in ("rnn", "lstm", "gru"):
        _positive("model.hidden", m.hidden)
        _choice("model.recurrent_init", m.recurrent_init, RECURRENT_INITS)
        if m.name == "rnn":
            _choice("model.activation", m.activation, ("tanh", "relu"))
    _choice("init.name", cfg.init.name, INIT_CHOICES)
    _choice("init.mode", cfg.init.mode, MODE_CHOICES)
    _positive("init.sw2", cfg.init.sw2, 0)
    _positive("init.sb2", cfg.init.sb2, 0)
    _choice("norm.name", cfg.norm.name, NORM_CHOICES)
    _choice("optim.name", cfg.optim.name, OPTIM_CHOICES)
    _positive("optim.lr", cfg.optim.lr, 0)
    _choice("optim.schedule", cfg.optim.schedule, ("constant", "step", "cosine"))
    _positive("threads", cfg.threads, 0)
    _positive("train.steps", cfg.train.steps, 0)
    _positive("train.batch_size", cfg.train.batch_size)
    _positive("train.eval_every", cfg.train.eval_every)
    _positive("train.check_every", cfg.train.check_every)
    _positive("train.grad_clip", cfg.train.grad_clip, 0)
    _positive("train.clip_value", cfg.train.clip_value, 0)
    _positive("probe.every", cfg.probe.every, 0)
    _positive("probe.points", cfg.probe.points, 2)
    if cfg.data.name in ("mnist", "fashion_mnist", "cifar10"):
        _positive("data.subset", cfg.data.subset, 0)
    if cfg.data.name in ("adding", "copy"):
        for k in ("T", "n_train", "n_test", "n_symbols", "copy_len"):
            _positive(f"data.{k}", cfg.data[k], 2 if k == "T" else 1)
    if cfg.data.name == "gaussian":
        _choice("data.distribution", cfg.data.distribution, ("normal", "uniform01"))
        for k in ("dim", "classes", "n_train", "n_test", "teacher_width"):
            _positive(f"data.{k}", cfg.data[k], 2 if k == "classes" else 1)
    if not re.fullmatch(r"[A-Za-z0-9._\-/]+", cfg.name) or ".." in Path(cfg.name).parts or cfg.name.startswith("/"):
        raise GradflowError(f"name={cfg.name!r} must be a relative folder name inside {cfg.results}/ "
                            "(letters, digits, . _ - /; no '..')")
    resolve_device(cfg.device)


ALPHA_WORDS = ("inv_sqrt_depth", "learnable")


def _alpha(alpha: str) -> None:
    if alpha in ALPHA_WORDS:
        return
    try:
        float(alpha)
    except ValueError:
        raise GradflowError(f"model.alpha={alpha!r} is not allowed; choices: a number, "
                            "inv_sqrt_depth (= 1/sqrt(depth)), learnable") from None


def _mlp_blocks(m, norm: str) -> None:
    """The MLP's residual blocks: branch_layers divides the residual layers; Fixup's own needs."""
    _positive("model.branch_layers", m.branch_layers)
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
            raise GradflowError(f"model.alpha={m.alpha} does not apply to model.variant=fixup: "
                                "its branch multiplier is a learnable scalar starting at 1")


def _resnet(m, norm: str) -> None:
    """He et al.'s CIFAR ResNet: 6n + 1 convs, three stages; normalization is the variant's."""
    if (m.depth - 1) % 6 or m.depth < 7:
        raise GradflowError(f"model.depth={m.depth} must be 6n+1 for a resnet (19, 31, 43, 55, 109: "
                            "resnet20/32/44/56/110 count the head too)")
    if len(m.widths) != 3:
        raise GradflowError(f"model.widths={list(m.widths)} must list three stages' filters, e.g. [16, 32, 64]")
    if norm not in ("none", m.variant):
        raise GradflowError(f"norm={norm} does not apply to model=resnet: its normalization is "
                            "model.variant (batchnorm | fixup | skipinit); leave norm=none")
    if m.skip != "residual" and m.variant != "batchnorm":
        raise GradflowError(f"model.variant={m.variant} needs model.skip=residual (its branches start at "
                            "zero, which would cut a plain net); use model.variant=batchnorm for a plain net")


def resolve_device(spec: str):
    """auto -> cuda, then mps, then cpu; an explicit device must exist on this machine."""
    import torch

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
            raise GradflowError(f"device={spec!r} but CUDA is not available on this machine; use device=auto or device=cpu")
        index = int(spec.split(":")[1]) if ":" in spec else 0
        if index >= torch.cuda.device_count():
            raise GradflowError(f"device={spec!r} but this machine has {torch.cuda.device_count()} CUDA device(s)")
        return torch.device(spec)
    if spec == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise GradflowError("device='mps' but MPS is not available on this machine; use device=auto or device=cpu")
        return torch.device("mps")
    raise GradflowError(f"device={spec!r} is not allowed; choices: auto, cpu, cuda, cuda:N, mps")


# --- composition ---------------------------------------------------------------------------------
def compose(overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """Compose conf/config.yaml with `key=value` overrides, as `gradflow run` does, and validate it."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
            cfg = hydra_compose(config_name="config", overrides=list(overrides))
    except GradflowError:
        raise
    except Exception as e:  # Hydra/OmegaConf errors: make them one line that names the key
        raise GradflowError(hydra_error_message(e)) from None
    finally:
        GlobalHydra.instance().clear()
    validate(cfg)
    return cfg


def group_choices(group: str) -> list[str]:
    folder = CONF_DIR / group
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


GROUPS = ("model", "data", "init", "norm", "optim", "probe")


def hydra_error_message(e: Exception) -> str:
    """One line from a Hydra/OmegaConf composition error, naming the key and the valid choices."""
    text = str(e)
    if e.__cause__ is not None:  # Hydra wraps the OmegaConf error that names the key
        text += "\n" + str(e.__cause__)
    if "override_grammar" in text or "mismatched input" in text or "token recognition error" in text:
        detail = text.split(" See https")[0].strip().splitlines()[0]
        return (f"cannot parse an override ({detail}); write overrides as key=value and quote values with "
                "parentheses or spaces, e.g. 'data.root=\"/my data\"'")
    missing = re.search(r"Could not find '([^']+)/([^']+)'", text)
    if missing:
        group, value = missing.groups()
        group = group.lstrip("/")
        choices = group_choices(group) or _experiment_choices(group)
        return f"{group}={value!r} is not a known choice; choices: {', '.join(choices)}"
    bad_key = re.search(r"Key '([^']+)' (?:is not in struct|not in '[^']*')", text)
    full_key = re.search(r"full_key: (\S+)", text)
    if "Could not override" in text or "is not in struct" in text or "not in '" in text:
        key = (re.search(r"Could not override '([^']+)'", text) or bad_key or full_key)
        name = key.group(1) if key else "?"
        return (f"unknown key {name!r}; groups: {', '.join(GROUPS)}; "
                "see `gradflow run --help` for every key (add a new key with +key=value only if you mean to)")
    if full_key:
        value = re.search(r"Value '([^']*)' (?:of type '\w+' )?could not be converted to (\w+)", text)
        if value:
            return f"{full_key.group(1)}={value.group(1)!r} is not a valid {value.group(2).lower()}"
        detail = str(e.__cause__ or e).strip().splitlines()[0]
        return f"{full_key.group(1)}: {detail}"
    return " ".join(text.split())


def _experiment_choices(group: str) -> list[str]:
    if group == "experiment":
        return sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.yaml"))
    return []
