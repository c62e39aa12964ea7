"""The one place that says what each column, quantity and key means on a figure, and how titles read.

No matplotlib here: labels are strings (mathtext where a symbol helps); numbers go through
`gradflow.fmt.fmt`, like every table of the project.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import pandas as pd

from gradflow.choices import RECURRENT
from gradflow.fmt import and_list, fmt
from gradflow.probes.quantities import QUANTITIES as PROBES
from gradflow.keys import is_missing, n_distinct, ordered_values, single_value
from gradflow.summary import MODULE_DEPTH


@dataclass(frozen=True)
class Label:
    axis: str  # axis / colorbar label: the symbol and what it means
    title: str  # a short name for figure titles
    log: bool = True  # drawn on a log axis


# per-layer quantities: the probe registry's labels (gradflow.probes.quantities, no torch)
QUANTITIES: dict[str, Label] = {name: Label(q.label, q.title, q.log) for name, q in PROBES.items()}


THEORY_QUANTITIES = ("grad_norm", "signal_norm")  # predicted to scale as sqrt(chi1)^(L - l)


SPLITS: dict[str, str] = {"train": "train", "test": "test", "batch": "minibatch", "opt": "optimizer",
                          "grad": "per-parameter gradient norm", "diverged": "the step that diverged"}


# hist.parquet: the two tensors histogrammed at every probe point
TENSORS: dict[str, Label] = {
    "activation": Label(r"$|\phi(z)|$, activation magnitude", "Activation values"),
    "gradient": Label(r"$|\partial L/\partial z|$, back-propagated gradient magnitude", "Back-propagated gradients"),
}


# jacobian.parquet: singular values of the Jacobian of the last hidden layer w.r.t. the input
SPECTRUM = Label(r"singular value $s$ of the input-output Jacobian $\partial h_L/\partial x$", "Jacobian spectrum")




def model_names(df: pd.DataFrame) -> set[str]:
    """The model.name values of the runs; a Recorder's run whose config names its own model rnn, lstm or gru
    (a user's nn.GRU classifier) counts as `custom`: gradflow's recurrent families always have
    model.recurrent_init, and only theirs probe time steps (the user's model's points are its layers, which
    the figures called time steps, and the ratio figure asked for data.T)."""
    names = _row_key(df, "model.name")
    if names is None:
        return set()
    names = names.dropna().astype(str)
    init = _row_key(df, "model.recurrent_init")
    ours = init.loc[names.index].notna() if init is not None else False
    return set(names.where(~names.isin(RECURRENT) | ours, "custom").unique())


def _row_key(df: pd.DataFrame, key: str) -> pd.Series | None:
    """Each row's value of a config key: its column, or in a comparison's table, which leaves out a key the
    sources differ in (lstm beside rnn: model.name), its source's value of it (the attrs' source_keys)."""
    if key in df.columns:
        return df[key]
    given = df.attrs.get("source_keys") or {}  # (store.SOURCE_KEYS)
    if "source" not in df.columns or not any(key in v for v in given.values()):
        return None
    return df["source"].map({s: v.get(key) for s, v in given.items()})


def is_recurrent(df: pd.DataFrame) -> bool:
    names = model_names(df)
    return bool(names) and names <= set(RECURRENT)


def point_word(df: pd.DataFrame) -> str:
    """What a probe point is called in titles: 'layer', or 'time step' for recurrent nets."""
    return "time step" if is_recurrent(df) else "layer"


def blocks(df: pd.DataFrame):
    """The blocks of the nets in a layers table (columns layer, name), as summary.Blocks with `starts` the
    layer index of each block's first point; None for a chain (an MLP, an RNN's time steps), or for nets
    whose blocks' points differ at one index (a transformer beside a ResNet), or where some run has no
    block (a transformer beside an MLP or a CNN). Nets of several depths agree
    on their blocks' points (a deeper transformer's b2.attn.qkv where a shallower one has its head), and
    every quantity's rows count (a block whose first point has no signal starts there all the same)."""
    from gradflow import summary

    if "name" not in df.columns or df.empty:
        return None
    ids = [c for c in ("source", "run") if c in df.columns]
    if ids:  # every run a net of blocks: a CNN beside a transformer sat under the transformer's block ticks
        points = df[[*ids, "name"]].drop_duplicates()  # (each run's points once, not every step's rows)
        in_block = points["name"].map(lambda n: summary.block_of(n) is not None)
        if points.loc[in_block, ids].drop_duplicates().shape[0] < points[ids].drop_duplicates().shape[0]:
            return None
    pairs = df[["layer", "name"]].drop_duplicates().sort_values("layer")
    pairs = pairs[[summary.block_of(n) is not None for n in pairs["name"]]]  # (the heads, embeddings: no block)
    if pairs.empty or pairs["layer"].duplicated().any():
        return None
    net = summary.blocks_of(pairs["name"])
    if net is None:
        return None
    layer = pairs["layer"].to_numpy()
    return dataclasses.replace(net, starts=[int(layer[i]) for i in net.starts])


def layer_axis(df: pd.DataFrame, last: int | None = None, head: bool = True, marked=None) -> str:
    """The label of the probe-point axis: layers, or time steps for recurrent nets (model.name). head=False:
    the quantity has no value at the output head (an activation statistic), so no point is called that.
    marked: the axis is ticked at each block's first point (`blocks`, a summary.Blocks)."""
    end = f", {'last' if last is None else last} = output head" if head else "; the output head has none"
    if marked is not None:
        end = ", output head last" if head else "; the output head has none"
        return f"probe point, ticked at each block's first ({marked.first}); input first{end}"
    if is_recurrent(df):
        return f"time step t (0 = first{end})"
    if model_names(df) & set(RECURRENT):
        return f"layer index or time step (0 = input / first{end})"
    return f"layer index (0 = input{end})"


@dataclass(frozen=True)
class Summary:
    label: str  # colorbar / axis label
    log10: bool = False  # show log10 of the value
    cmap: str = "viridis"
    center: float | None = None  # diverging colour map centred on this (after log10)


RATIO_SYMBOL = r"$\|\partial L/\partial W_0\| \,/\, \|\partial L/\partial W_L\|$"  # first / last weight layer
# the first/last probe-point ratio of a per-layer quantity: its symbol and what the ratio is called
RATIOS: dict[str, tuple[str, str]] = {
    "grad_norm": (RATIO_SYMBOL, "Weight-gradient ratio"),
    "signal_norm": (r"$\|\partial L/\partial z_0\| \,/\, \|\partial L/\partial z_L\|$", "Back-propagated signal ratio"),
}


SUMMARIES: dict[str, Summary] = {
    "final.test_acc": Summary("final test accuracy"),
    "final.train_acc": Summary("final train accuracy"),
    "final.test_loss": Summary("final test loss (bright = low)", cmap="viridis_r"),
    "final.train_loss": Summary("final train loss (bright = low)", cmap="viridis_r"),
    "grad_ratio.init": Summary(r"$\log_{10}$ gradient ratio at init, " + RATIO_SYMBOL,
                               log10=True, cmap="RdBu_r", center=0.0),
    "grad_ratio.final": Summary(r"$\log_{10}$ gradient ratio at the end, " + RATIO_SYMBOL,
                                log10=True, cmap="RdBu_r", center=0.0),
    "signal_ratio.init": Summary(r"$\log_{10}$ back-propagated signal ratio at init, "
                                 r"$\|\partial L/\partial z\|$ first / last", log10=True, cmap="RdBu_r", center=0.0),
    "chi1_measured": Summary(r"measured $\chi_1$ (per-layer growth of $\|\partial L/\partial z\|^2$)",
                             cmap="RdBu_r", center=1.0),
    "chi1_theory": Summary(r"mean-field $\chi_1$", cmap="RdBu_r", center=1.0),
    "wall_time": Summary("wall time (s)"),
}


KEY_NAMES: dict[str, str] = {
    "model.depth": "depth (hidden layers)",
    "model.width": "width",
    "model.activation": "activation",
    "model.name": "model",
    "model.skip": "skip connection",
    "model.alpha": "residual scale",
    "model.ln": "layer-norm placement",
    "model.norm_kind": "normalization (layernorm or rmsnorm)",
    "model.d_model": "stream width",
    "model.gain": "recurrent gain (spectral radius)",
    "optim.warmup": "warm-up steps",
    "init.name": "initialization",
    "init.sw2": r"$\sigma_w^2$",
    "init.sb2": r"$\sigma_b^2$",
    "norm.name": "normalization",
    "optim.name": "optimizer",
    "optim.lr": "learning rate",
    "data.name": "dataset",
    "data.T": "sequence length T (time steps)",
    "train.grad_clip": "gradient-norm clip (0 = off)",
    "train.clip_value": "gradient-value clip (0 = off)",
    "seed": "seed",
    "source": "results folder",
}


def key_label(key: str, df: pd.DataFrame | None = None) -> str:
    """'depth (hidden layers) [model.depth]': what it means, and the override that sets it. df: the runs
    drawn, where what a key means depends on the model (a transformer's depth is its blocks)."""
    name = KEY_NAMES.get(key)
    models = model_names(df) if key == "model.depth" and df is not None else set()
    if models == {"custom"}:  # (with_module_depth's)
        return f"depth ({MODULE_DEPTH})"
    if "transformer" in models:
        name = "depth (blocks)" if models == {"transformer"} else "depth (hidden layers; a transformer's blocks)"
    return f"{name} [{key}]" if name and name != key else key


def short_key(key: str) -> str:
    """'model.depth' -> 'depth', 'init.name' -> 'init', 'init.sw2' -> sigma_w^2."""
    if key in ("init.sw2", "init.sb2"):
        return KEY_NAMES[key]
    parts = key.split(".")
    return parts[0] if parts[-1] == "name" and len(parts) > 1 else parts[-1]


def value_label(key: str, v: Any) -> str:
    """`σ_w²=2`; `σ_w² not set` for runs without the key (an init=xavier_normal run beside meanfield ones)."""
    return f"{short_key(key)} not set" if is_missing(v) else f"{short_key(key)}={fmt(v)}"


SKIPPED_BY_DEFAULT = ("resnet",)  # families whose skip is residual unless set: skip=none is news in a title
TITLE_KEYS = ("model.name", "model.target", "model.activation", "model.depth", "model.width", "model.hidden",
              "model.d_model", "model.skip", "model.ln", "model.norm_kind", "model.alpha", "model.recurrent_init",
              "model.gain", "norm.name", "init.name", "init.sw2", "init.sb2", "data.name", "optim.name", "optim.lr",
              "optim.warmup", "seed")
LN_WORDS = {"pre": "pre-LN", "post": "post-LN", "none": "no LN"}  # a transformer's model.ln, as papers say it


_BORING = {"none", "null", "", "false"}


_MEANFIELD_ONLY = ("init.sw2", "init.sb2")  # only meaningful with the mean-field initialization


def _title_item(df: pd.DataFrame, key: str, v: Any) -> str | None:
    if key == "model.ln":  # (xiong2020's post-LN and pre-LN figures had the same title)
        return LN_WORDS.get(str(v)) if "transformer" in model_names(df) else None
    if key == "model.norm_kind":  # a transformer's RMSNorm (LayerNorm, the default, goes without saying)
        # (not where a run has no norm at all: ln=none among swept placements)
        no_norm = "model.ln" in df.columns and (df["model.ln"].astype(str) == "none").any()
        return "RMSNorm" if v == "rmsnorm" and not no_norm else None
    if key == "optim.warmup" and not v:
        return None
    if key == "model.skip" and str(v) == "none" and single_value(df, "model.name") in SKIPPED_BY_DEFAULT:
        return "no skip"  # (plain32 read as "resnet, ..." alone, as if residual)
    if is_missing(v) or str(v).lower() in _BORING:
        return None
    if key == "model.activation" and v == "auto":  # (a custom model's own activations, whatever they are)
        return None
    if key == "init.sw2" or (key in _MEANFIELD_ONLY and single_value(df, "init.name") != "meanfield"):
        return None  # sw2 is said as each init's effective sigma_w^2 (init_variances); sb2 only for meanfield
    if key == "model.alpha" and single_value(df, "model.skip") in (None, "none"):
        return None
    if key.startswith("optim.") and single_value(df, "train.steps") == 0:
        return None  # (runs probed at init only take no step: "sgd, lr 0.05" said nothing true of them)
    if key == "data.name" and v == "gaussian" and single_value(df, "data.distribution") == "uniform01":
        return "U[0,1] inputs"  # (glorot2010's probe read "gaussian" over inputs that are uniform)
    if key == "data.name" and v == "gaussian":  # ("orthogonal init, gaussian" read as Gaussian weights)
        return "gaussian inputs"
    s = fmt(v)
    # a recurrent net's `init` is its input weights' (the recurrent matrix has model.recurrent_init and gain)
    inputs = "input " if is_recurrent(df) else ""
    gain = "gain" if single_value(df, "model.recurrent_init") else "recurrent gain"  # (after "recurrent ... init")
    return {"model.depth": f"depth {s}", "model.width": f"width {s}", "model.hidden": f"hidden {s}",
            "model.d_model": f"d_model {s}",
            "model.skip": f"{s} skip", "model.recurrent_init": f"recurrent {s} init", "model.gain": f"{gain} {s}",
            "model.alpha": f"residual scale {s}", "norm.name": s, "init.name": f"{s} {inputs}init",
            "init.sw2": rf"$\sigma_w^2$={s}", "init.sb2": rf"$\sigma_b^2$={s}", "optim.lr": f"lr {s}",
            "optim.warmup": f"warm-up {s} steps",
            "seed": f"seed {s}"}.get(key, s)


def held_fixed(df: pd.DataFrame, skip: Iterable[str] = ()) -> list[str]:
    """['mlp', 'tanh', 'width 128', 'kaiming_normal init', 'sigma_w^2 = 2', ...] from the config keys
    every line shares, and each init's effective sigma_w^2."""
    skip = set(skip)
    items = [_title_item(df, k, single_value(df, k)) for k in TITLE_KEYS
             if k in df.columns and k not in skip and n_distinct(df[k]) == 1]
    swept_sw2 = "init.sw2" in skip and single_value(df, "init.name") == "meanfield"  # the lines say it
    return [i for i in items if i] + ([] if swept_sw2 else init_variances(df)) + _forget_bias(df, skip)


def _forget_bias(df: pd.DataFrame, skip: set[str]) -> list[str]:
    """An LSTM's forget-gate bias where it is not PyTorch's 0, also beside the vanilla RNNs that lack it (an
    rnn-vs-lstm figure's LSTM remembers because of it, and no line or title said so); not beside other
    families (a folder of every family's runs was titled by its LSTM's bias: its line's label says it)."""
    key = "model.forget_bias"
    ours = key in df.columns and key not in skip and is_recurrent(df)
    given = df[key].dropna() if ours else pd.Series(dtype=float)
    if given.empty or n_distinct(given) != 1 or float(given.iloc[0]) == 0:
        return []
    return [f"lstm forget-gate bias {fmt(given.iloc[0])}"]


def init_variances(df: pd.DataFrame) -> list[str]:
    """Each init's effective sigma_w^2 (theory.equivalent_sw2: what the init means for signal
    propagation), never the init.sw2 key, which only the meanfield init reads. One activation only:
    the kaiming gain depends on it."""
    from gradflow.theory import effective_sw2

    if "init.name" not in df.columns or n_distinct(df.get("model.activation", pd.Series(dtype=object))) != 1:
        return []
    keys = [k for k in ("init.name", "init.gain", "init.sw2", "model.activation") if k in df.columns]
    inits = df[keys].drop_duplicates()
    values = {}
    for row in inits.to_dict("records"):
        v = effective_sw2(row)
        if v is not None:
            values.setdefault(str(row["init.name"]), {})[fmt(v, 3)] = v
    if not values:
        return []
    inputs = "input " if is_recurrent(df) else ""  # (see _title_item)
    if len(inits) == 1:
        return [rf"{inputs}$\sigma_w^2$={next(iter(next(iter(values.values()))))}"]
    # an init the theory knows no sigma_w^2 for is named too ("sigma_w^2: xavier_normal 1" over gpt2 and
    # xavier_normal lines read as every line's)
    unknown = [str(v) for v in ordered_values(inits["init.name"]) if not is_missing(v) and str(v) not in values]
    # an init's several values in order, "1, 6.25 and 16" (they were "1/16/6.25": sorted as text, read as
    # fractions); the inits then apart by semicolons
    said = [f"{name} {and_list(sorted(v, key=v.get))}" for name, v in values.items()]
    apart = "; " if any(len(v) > 1 for v in values.values()) else ", "
    return [rf"{inputs}$\sigma_w^2$: " + apart.join(said + [f"{name} none" for name in unknown])]


def _visible_len(text: str) -> int:
    return len(re.sub(r"\$[^$]*\$", "xxxx", text))  # a mathtext snippet shows as a few characters


def _partial(df: pd.DataFrame) -> str:
    """Says so where runs drawn were interrupted or failed at a step: their lines end where they stopped,
    not where they were to."""
    if "status" not in df.columns or "run" not in df.columns:
        return ""
    status = df.groupby("run")["status"].first()
    said = []
    for what in ("interrupted", "failed"):
        n = int((status == what).sum())
        if n:
            said.append(f"{what} run: partial" if len(status) == 1 else f"{n} of {len(status)} runs {what}: partial")
    return "; ".join(said)


def set_title(fig, what: str, df: pd.DataFrame, extra: Sequence[str] = (), skip: Iterable[str] = ()) -> None:
    """What is drawn; then what was held fixed and anything else worth knowing, wrapped to the
    figure's width between items (a note longer than that between its words, never inside a mathtext
    snippet: one ran past both edges of the figure)."""
    width = int(fig.get_figwidth() * 13)
    pieces = [(", ", item) for item in held_fixed(df, skip)]
    for x in [*extra, _partial(df)]:
        if x and _visible_len(x) > width:  # (a mathtext snippet is one word, its spaces its own)
            first, *rest = re.findall(r"(?:\$[^$]*\$|\S)+", x)
            pieces += [("; ", first), *((" ", word) for word in rest)]
        elif x:
            pieces.append(("; ", x))
    lines, line = [], ""
    for sep, item in pieces:
        if line and _visible_len(line + sep + item) > width:
            lines.append(line + sep.rstrip())
            line = item
        else:
            line = line + sep + item if line else item
    lines.append(line)
    fig.suptitle("\n".join([what, *[ln for ln in lines if ln]]), fontsize=10)
