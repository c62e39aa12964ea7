"""What every figure shares: labels, swept keys, titles, colours, seed aggregation and saving.

Figures are drawn from the long tables on disk (never from a live model). A "group" is the set of
runs that differ only in their seed; it is drawn as one line (the median over seeds) with a
min-max band. Values a log axis cannot show are never dropped silently: NaN/inf are marked with
an "x" on the top edge of the axes, values <= 0 with a triangle on the bottom edge, and the
legend says so.
"""

from __future__ import annotations

import math
import os
import re
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import BoundaryNorm, ListedColormap, LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, MaxNLocator
from matplotlib.transforms import blended_transform_factory

from gradflow.errors import GradflowError
from gradflow.plots.keys import SEED_KEYS, _hashable, config_columns, n_distinct, swept_keys  # noqa: F401

DPI = 150
FIGSIZE = (7.0, 4.5)  # inches; one panel plus an outside legend or colorbar
FORMATS = ("png", "pdf", "svg")
MAX_STYLES = 4  # a second swept key with at most this many values becomes the line style


# --- labels: the one place that says what each column means -----------------------------------
@dataclass(frozen=True)
class Label:
    axis: str  # axis / colorbar label: the symbol and what it means
    title: str  # a short name for figure titles
    log: bool = True  # drawn on a log axis


QUANTITIES: dict[str, Label] = {
    "grad_norm": Label(r"$\|\partial L/\partial W\|$ (weight gradient norm)", "Weight-gradient norm"),
    "bias_grad_norm": Label(r"$\|\partial L/\partial b\|$ (bias gradient norm)", "Bias-gradient norm"),
    "weight_norm": Label(r"$\|W\|$ (weight norm)", "Weight norm"),
    "update_ratio": Label(r"$\|\Delta W\| / \|W\|$ (update / weight ratio)", "Update-to-weight ratio"),
    "signal_norm": Label(r"$\|\partial L/\partial z\|$ (back-propagated signal norm)", "Back-propagated signal norm"),
    "act_mean": Label("activation mean", "Activation mean", log=False),
    "act_std": Label("activation standard deviation", "Activation std"),
    "act_saturated": Label("fraction of saturated units", "Saturated units", log=False),
    "act_dead": Label("fraction of dead units", "Dead units", log=False),
}
THEORY_QUANTITIES = ("grad_norm", "signal_norm")  # predicted to scale as sqrt(chi1)^(L - l)

METRICS: dict[str, str] = {"loss": "loss", "acc": "accuracy", "grad_norm": "global gradient norm",
                           "clipped": "fraction of steps clipped"}
SPLITS: dict[str, str] = {"train": "train", "test": "test", "batch": "minibatch", "opt": "optimizer",
                          "grad": "per-parameter gradient norm"}

# hist.parquet: the two tensors histogrammed at every probe point
TENSORS: dict[str, Label] = {
    "activation": Label(r"$|\phi(z)|$, activation magnitude", "Activation values"),
    "gradient": Label(r"$|\partial L/\partial z|$, back-propagated gradient magnitude", "Back-propagated gradients"),
}
# jacobian.parquet: singular values of the Jacobian of the last hidden layer w.r.t. the input
SPECTRUM = Label(r"singular value $s$ of the input-output Jacobian $\partial h_L/\partial x$", "Jacobian spectrum")

RECURRENT = ("rnn", "lstm", "gru")  # probe point t is time step t, the head comes last


def is_recurrent(df: pd.DataFrame) -> bool:
    names = set(df["model.name"].dropna().astype(str)) if "model.name" in df.columns else set()
    return bool(names) and names <= set(RECURRENT)


def point_word(df: pd.DataFrame) -> str:
    """What a probe point is called in titles: 'layer', or 'time step' for recurrent nets."""
    return "time step" if is_recurrent(df) else "layer"


def layer_axis(df: pd.DataFrame, last: int | None = None) -> str:
    """The label of the probe-point axis: layers, or time steps for recurrent nets (model.name)."""
    end = "last" if last is None else str(last)
    if is_recurrent(df):
        return f"time step t (0 = first, {end} = output head)"
    names = set(df["model.name"].dropna().astype(str)) if "model.name" in df.columns else set()
    if names & set(RECURRENT):
        return f"layer index or time step (0 = input / first, {end} = output head)"
    return f"layer index (0 = input, {end} = output head)"


@dataclass(frozen=True)
class Summary:
    label: str  # colorbar / axis label
    log10: bool = False  # show log10 of the value
    cmap: str = "viridis"
    center: float | None = None  # diverging colour map centred on this (after log10)


RATIO_SYMBOL = r"$\|\partial L/\partial W_0\| \,/\, \|\partial L/\partial W_L\|$"  # first / last weight layer

SUMMARIES: dict[str, Summary] = {
    "final.test_acc": Summary("final test accuracy"),
    "final.train_acc": Summary("final train accuracy"),
    "final.test_loss": Summary("final test loss (bright = low)", cmap="viridis_r"),
    "final.train_loss": Summary("final train loss (bright = low)", cmap="viridis_r"),
    "grad_ratio.init": Summary(r"$\log_{10}$ gradient ratio at init, " + RATIO_SYMBOL,
                               log10=True, cmap="RdBu_r", center=0.0),
    "grad_ratio.final": Summary(r"$\log_{10}$ gradient ratio at the end, " + RATIO_SYMBOL,
                                log10=True, cmap="RdBu_r", center=0.0),
    "chi1_measured": Summary(r"measured $\chi_1$ (per-layer growth of $\|\partial L/\partial z\|^2$)",
                             cmap="RdBu_r", center=1.0),
    "chi1_theory": Summary(r"mean-field $\chi_1$", cmap="RdBu_r", center=1.0),
    "wall_time": Summary("wall time (s)"),
}

KEY_NAMES: dict[str, str] = {
    "model.depth": "depth (hidden layers)",
    "model.width": "width",
    "model.activation": "activation",
    "model.skip": "skip connection",
    "model.alpha": "residual scale",
    "init.name": "initialization",
    "init.sw2": r"$\sigma_w^2$",
    "init.sb2": r"$\sigma_b^2$",
    "norm.name": "normalization",
    "optim.name": "optimizer",
    "optim.lr": "learning rate",
    "data.name": "dataset",
    "seed": "seed",
    "source": "results folder",
}


def key_label(key: str) -> str:
    """'depth (hidden layers) [model.depth]': what it means, and the override that sets it."""
    name = KEY_NAMES.get(key)
    return f"{name} [{key}]" if name and name != key else key


def short_key(key: str) -> str:
    """'model.depth' -> 'depth', 'init.name' -> 'init', 'init.sw2' -> sigma_w^2."""
    if key in ("init.sw2", "init.sb2"):
        return KEY_NAMES[key]
    parts = key.split(".")
    return parts[0] if parts[-1] == "name" and len(parts) > 1 else parts[-1]


def fmt_value(v: Any) -> str:
    if is_missing(v):
        return "n/a"
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v)).lower()
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return str(int(v)) if float(v).is_integer() and abs(v) < 1e6 else f"{float(v):g}"
    return str(v)


def value_label(key: str, v: Any) -> str:
    return f"{short_key(key)}={fmt_value(v)}"


def is_missing(v: Any) -> bool:
    return v is None or (isinstance(v, (float, np.floating)) and math.isnan(v))


# --- config columns (swept_keys and friends live in keys.py, without matplotlib) -----------------
def is_numeric_key(df: pd.DataFrame, key: str) -> bool:
    s = df[key]
    return pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)


def vkey(v: Any) -> Any:
    """A dict key for a cell value: NaN matches NaN, lists match their string form."""
    if is_missing(v):
        return "\0nan"
    if isinstance(v, (list, tuple, np.ndarray)):
        return str(list(v))
    return v.item() if isinstance(v, np.generic) else v


def ordered_values(s: pd.Series) -> list[Any]:
    """Distinct values in their natural order (numbers ascending, strings alphabetically), NaN last."""
    vals = list(dict.fromkeys(vkey(v) for v in _hashable(s)))
    nan = [v for v in vals if v == "\0nan"]
    rest = [v for v in vals if v != "\0nan"]
    try:
        rest.sort()
    except TypeError:
        rest.sort(key=str)
    return rest + ([math.nan] if nan else [])


def single_value(df: pd.DataFrame, key: str) -> Any:
    """The one value of `key` in df, or None if the column is absent or varies."""
    if key not in df.columns or n_distinct(df[key]) != 1:
        return None
    return df[key].iloc[0]


# --- titles: what was held fixed -----------------------------------------------------------------
TITLE_KEYS = ("model.name", "model.activation", "model.depth", "model.width", "model.skip", "model.alpha",
              "norm.name", "init.name", "init.sw2", "init.sb2", "data.name", "optim.name", "optim.lr", "seed")
_BORING = {"none", "null", "", "false"}
_MEANFIELD_ONLY = ("init.sw2", "init.sb2")  # only meaningful with the mean-field initialization


def _title_item(df: pd.DataFrame, key: str, v: Any) -> str | None:
    if is_missing(v) or str(v).lower() in _BORING:
        return None
    if key in _MEANFIELD_ONLY and "init.name" in df.columns and single_value(df, "init.name") != "meanfield":
        return None
    if key == "model.alpha" and single_value(df, "model.skip") in (None, "none"):
        return None
    s = fmt_value(v)
    return {"model.depth": f"depth {s}", "model.width": f"width {s}", "model.skip": f"{s} skip",
            "model.alpha": f"residual scale {s}", "norm.name": s, "init.name": f"{s} init",
            "init.sw2": rf"$\sigma_w^2$={s}", "init.sb2": rf"$\sigma_b^2$={s}", "optim.lr": f"lr {s}",
            "seed": f"seed {s}"}.get(key, s)


def held_fixed(df: pd.DataFrame, skip: Iterable[str] = ()) -> list[str]:
    """['mlp', 'tanh', 'width 128', 'kaiming_normal init', ...] from the single-valued config keys."""
    skip = set(skip)
    items = [_title_item(df, k, single_value(df, k)) for k in TITLE_KEYS
             if k in df.columns and k not in skip and n_distinct(df[k]) == 1]
    return [i for i in items if i]


def _visible_len(text: str) -> int:
    return len(re.sub(r"\$[^$]*\$", "xxxx", text))  # a mathtext snippet shows as a few characters


def set_title(fig: Figure, what: str, df: pd.DataFrame, extra: Sequence[str] = (), skip: Iterable[str] = ()) -> None:
    """What is drawn; then what was held fixed and anything else worth knowing, wrapped to the
    figure's width between items (never inside one: items may hold mathtext)."""
    width = int(fig.get_figwidth() * 13)
    pieces = [(", ", item) for item in held_fixed(df, skip)] + [("; ", x) for x in extra if x]
    lines, line = [], ""
    for sep, item in pieces:
        if line and _visible_len(line + sep + item) > width:
            lines.append(line + sep.rstrip())
            line = item
        else:
            line = line + sep + item if line else item
    lines.append(line)
    fig.suptitle("\n".join([what, *[ln for ln in lines if ln]]), fontsize=10)


# --- figures and saving --------------------------------------------------------------------------
def new_figure(nrows: int = 1, ncols: int = 1, figsize: tuple[float, float] | None = None,
               sharex: bool | str = False, sharey: bool | str = False) -> tuple[Figure, np.ndarray]:
    """A pyplot-free Figure with constrained layout and an (nrows, ncols) array of axes."""
    fig = Figure(figsize=figsize or FIGSIZE, dpi=DPI, layout="constrained")
    axes = fig.subplots(nrows, ncols, sharex=sharex, sharey=sharey, squeeze=False)
    return fig, axes


def facet_grid(n: int, sharex=True, sharey=True, panel=(4.0, 3.6), max_cols: int = 3,
               legend_width: float = 2.2) -> tuple[Figure, list]:
    """n panels in rows of up to max_cols, sized so each stays readable; spare axes removed."""
    ncols = min(n, max_cols)
    nrows = math.ceil(n / ncols)
    size = FIGSIZE if n == 1 else (min(panel[0] * ncols + legend_width, 16.0), min(panel[1] * nrows + 0.9, 12.0))
    fig, axes = new_figure(nrows, ncols, size, sharex=sharex, sharey=sharey)
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.remove()
    for ax in flat[:n]:
        ax.grid(True, which="major", alpha=0.25, lw=0.5)
    return fig, flat[:n]


def file_part(text: str, limit: int = 80) -> str:
    """A piece of a file name from a run id or a folder label: no path separators, bounded length."""
    text = re.sub(r"[^\w.,=+-]+", "_", str(text)).strip("_") or "x"
    if len(text) <= limit:
        return text
    import hashlib

    return text[: limit - 9] + "-" + hashlib.sha1(text.encode()).hexdigest()[:8]  # stable across processes


def save(fig: Figure, path: str | os.PathLike, fmt: str | None = None) -> Path:
    """Write fig as png/pdf/svg atomically (temporary file, then rename), close it, return the path.

    fmt defaults to the path's suffix; given, it replaces the suffix."""
    path = Path(path)
    fmt = (fmt or path.suffix.lstrip(".") or "png").lower()
    if fmt not in FORMATS:
        raise GradflowError(f"figure format {fmt!r} is not supported; choices: {', '.join(FORMATS)}")
    suffix = path.suffix.lstrip(".").lower()
    if suffix != fmt:
        path = path.with_suffix("." + fmt) if suffix in FORMATS else path.with_name(f"{path.name}.{fmt}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".{fmt}")
    os.close(fd)
    try:
        fig.savefig(tmp, format=fmt, dpi=DPI)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if "matplotlib.pyplot" in sys.modules:  # only a pyplot-made figure is registered anywhere
            sys.modules["matplotlib.pyplot"].close(fig)
    return path


# --- steps ---------------------------------------------------------------------------------------
def parse_step(step: int | str) -> int | str:
    """A probed step number or "last"; GradflowError naming the choices otherwise."""
    if isinstance(step, str) and step.strip().isdigit():
        return int(step)
    if isinstance(step, str) and step.strip() == "last":
        return "last"
    if isinstance(step, (int, np.integer)) and not isinstance(step, bool) and step >= 0:
        return int(step)
    raise GradflowError(f"step={step!r} is not allowed; choices: a probed step number, or 'last'")


def at_step(df: pd.DataFrame, step: int | str) -> tuple[pd.DataFrame, str]:
    """Rows at one probed step (an int) or at each run's last probed step ("last"), and a title part."""
    step = parse_step(step)
    if step == "last":
        sub = df[df["step"] == df.groupby("run")["step"].transform("max")]
        steps = sorted(sub["step"].unique())
        text = (f"step {steps[0]} (last probed)" if len(steps) == 1
                else f"each run's last probed step ({steps[0]}-{steps[-1]})")
        return sub, text
    sub = df[df["step"] == step]
    if sub.empty:
        probed = sorted(df["step"].unique())
        shown = ", ".join(map(str, probed[:12])) + (", ..." if len(probed) > 12 else "")
        raise GradflowError(f"step={step} was not probed; probed steps: {shown} (or 'last')")
    return sub, "step 0 (initialization)" if step == 0 else f"step {step}"


def pick_run(df: pd.DataFrame, run: str | None, what: str) -> pd.DataFrame:
    """The rows of one run: `run`, or the only run in df; GradflowError listing runs otherwise."""
    runs = ordered_values(df["run"])
    shown = ", ".join(map(str, runs[:5])) + (", ..." if len(runs) > 5 else "")
    if run is None:
        if len(runs) != 1:
            raise GradflowError(f"{what} draws one run and this table holds {len(runs)}; pass run=one of: {shown}")
        run = runs[0]
    sub = df[df["run"] == str(run)]
    if sub.empty:
        raise GradflowError(f"run={run!r} is not in the {what} table; choices: {shown}")
    return sub


# --- input checks --------------------------------------------------------------------------------
def require(df: Any, table: str, columns: Sequence[str]) -> pd.DataFrame:
    """A copy of df with source/status filled in if absent; GradflowError naming what is missing."""
    if not isinstance(df, pd.DataFrame):
        raise GradflowError(f"the {table} table must be a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise GradflowError(f"the {table} table lacks column(s) {', '.join(missing)}; "
                            f"it has: {', '.join(map(str, df.columns))}")
    if df.empty:
        raise GradflowError(f"the {table} table is empty: nothing to plot")
    df = df.copy()
    if "source" not in df.columns:
        df["source"] = ""
    if "status" not in df.columns:
        df["status"] = "ok"
    df["run"] = df["run"].astype(str)
    return df


def check_key(key: str | None, what: str, allowed: Sequence[str]) -> None:
    """GradflowError unless key is None or one of the allowed (swept) keys."""
    if key is not None and key not in allowed:
        raise GradflowError(f"{what}={key!r} is not a swept key of this data; choices: "
                            f"{', '.join(allowed) or '(nothing varies)'}")


# --- colour and line style keyed to swept values -------------------------------------------------
LINE_STYLES = ["-", "-.", ":", (0, (3, 1, 1, 1, 1, 1))]  # "--" is reserved for theory lines
THEORY_STYLE = dict(ls="--", lw=1.0, alpha=0.8)
NAN_COLOR = "0.55"


def _sequential(n: int):
    """n colours from viridis, stopping before its pale yellow end (hard to see on white)."""
    cmap = colormaps["viridis"]
    return [cmap(t) for t in (np.linspace(0.0, 0.88, n) if n > 1 else [0.45])]


def _categorical(n: int):
    if n <= 10:
        return [colormaps["tab10"](i) for i in range(n)]
    if n <= 20:
        return [colormaps["tab20"](i) for i in range(n)]
    return [colormaps["turbo"](t) for t in np.linspace(0.05, 0.95, n)]


class Palette:
    """Colour by one swept key (ordered numbers: viridis + colorbar; anything else: tab10 + legend),
    line style by an optional second key with few values."""

    def __init__(self, df: pd.DataFrame, color: str | None, style: str | None = None):
        self.color, self.style = color, style
        self.numeric = False
        self._colors: dict[Any, Any] = {}
        self.mappable: ScalarMappable | None = None
        if color is not None:
            self.values = ordered_values(df[color])
            real = [v for v in self.values if not is_missing(v)]
            self.numeric = is_numeric_key(df, color) and len(real) >= 2
            if self.numeric and len(real) <= 12:
                # one discrete colour per value, evenly spaced by rank so close values stay apart
                cols = _sequential(len(real))
                self.mappable = ScalarMappable(BoundaryNorm(np.arange(len(real) + 1) - 0.5, len(real)),
                                               ListedColormap(cols))
                self.ticks = list(range(len(real)))
                self.tick_labels = [fmt_value(v) for v in real]
                self._colors = {vkey(v): c for v, c in zip(real, cols)}
            elif self.numeric:
                lo, hi = float(min(real)), float(max(real))
                norm = LogNorm(lo, hi) if lo > 0 and hi / lo >= 30 else Normalize(lo, hi)
                cmap = ListedColormap(_sequential(256))
                self.mappable = ScalarMappable(norm, cmap)
                self.ticks = None
                self._colors = {vkey(v): cmap(norm(float(v))) for v in real}
            else:
                self._colors = {vkey(v): c for v, c in zip(self.values, _categorical(len(self.values)))}
            self._colors.setdefault(vkey(math.nan), NAN_COLOR)
        if style is not None:
            self.style_values = ordered_values(df[style])
            self._styles = {vkey(v): LINE_STYLES[i % len(LINE_STYLES)] for i, v in enumerate(self.style_values)}

    def color_of(self, config: dict, default: Any = "C0") -> Any:
        return self._colors.get(vkey(config.get(self.color)), NAN_COLOR) if self.color else default

    def style_of(self, config: dict) -> Any:
        return self._styles.get(vkey(config.get(self.style)), "-") if self.style else "-"

    def handles(self) -> tuple[list, str | None]:
        """Legend entries for categorical colours and for line styles, and the legend's title."""
        out, title = [], None
        if self.color is not None and not self.numeric:
            title = key_label(self.color)
            out += [Line2D([], [], color=self._colors[vkey(v)], lw=2, label=fmt_value(v)) for v in self.values]
        if self.style is not None:
            out += [Line2D([], [], color="0.2", lw=1.3, ls=self._styles[vkey(v)], label=value_label(self.style, v))
                    for v in self.style_values]
        return out, title

    def colorbar(self, fig: Figure, axes: list) -> None:
        if self.mappable is None:
            return
        cb = fig.colorbar(self.mappable, ax=axes, label=key_label(self.color), shrink=0.9, aspect=30, pad=0.02)
        if self.ticks is not None:
            cb.set_ticks(self.ticks, labels=self.tick_labels)
            cb.ax.tick_params(length=0)
        cb.ax.set_gid("colorbar")
        if any(vkey(v) == vkey(math.nan) for v in self.values):
            cb.ax.set_xlabel("grey: n/a", fontsize="x-small")


def line_weight(n_lines: int) -> tuple[float, float]:
    """Thinner, more transparent lines as there are more of them (readable with 20+)."""
    if n_lines <= 6:
        return 1.6, 0.95
    if n_lines <= 15:
        return 1.1, 0.85
    return 0.8, 0.7


# --- seed groups ---------------------------------------------------------------------------------
@dataclass
class Series:
    """One line: the runs of a group (same config but the seed), aggregated over x."""
    config: dict[str, Any]  # the group's config (any one run's; they differ only in seed)
    runs: list[str]
    statuses: list[str]
    x: np.ndarray  # (n_x,)
    med: np.ndarray  # (n_x,) median over runs of the drawable values
    lo: np.ndarray  # (n_x,) min over runs
    hi: np.ndarray  # (n_x,) max over runs
    nonfinite: np.ndarray  # (n_x,) bool: some run logged NaN/inf here
    offscale: np.ndarray  # (n_x,) bool: some run logged a value <= 0 (log axes only)
    count: np.ndarray  # (n_x,) runs with a logged value here (seeds behind the median)

    @property
    def label(self) -> str:
        return self.runs[0] if len(self.runs) == 1 else f"{self.runs[0]} (+{len(self.runs) - 1} seeds)"


def collect_series(df: pd.DataFrame, x: str, group_keys: Sequence[str], log: bool,
                   mark_diverged_end: bool = False) -> list[Series]:
    """One Series per group of runs (grouped by group_keys), values pivoted to run x `x`.

    A missing cell (not logged) is not a non-finite cell (logged NaN/inf): only the latter is marked.
    mark_diverged_end: a diverged run that logged no non-finite value gets its mark at its last x.
    """
    cfg_cols = config_columns(df)
    keys = list(group_keys)
    if keys:
        df = df.assign(**{k: _hashable(df[k]) for k in keys})
        groups = [g for _, g in df.groupby(keys, dropna=False, sort=False)]
    else:
        groups = [df]
    out = []
    for g in groups:
        cells = g.groupby(["run", x], sort=True)["value"]
        wide = cells.last().unstack(x)  # (runs, xs)
        present = cells.size().unstack(x).reindex_like(wide).notna().to_numpy()
        y = wide.to_numpy(dtype=float)
        finite = np.isfinite(y)
        good = finite & (y > 0) if log else finite
        yg = np.where(good, y, np.nan)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns give NaN, as intended
            med, lo, hi = np.nanmedian(yg, axis=0), np.nanmin(yg, axis=0), np.nanmax(yg, axis=0)
        nonfinite = (present & ~finite).any(axis=0)
        offscale = (present & finite & ~good).any(axis=0)
        status = g.groupby("run")["status"].first().reindex(wide.index).astype(str).tolist()
        if mark_diverged_end:
            for i, st in enumerate(status):
                if st == "diverged" and not (present[i] & ~finite[i]).any() and present[i].any():
                    nonfinite[np.flatnonzero(present[i])[-1]] = True
        first = g.iloc[0]
        out.append(Series({c: first[c] for c in cfg_cols} | {"source": first["source"]},
                          list(wide.index), status, wide.columns.to_numpy(), med, lo, hi, nonfinite, offscale,
                          present.sum(axis=0)))
    return out


def sort_series(series: list[Series], df: pd.DataFrame, keys: Sequence[str]) -> list[Series]:
    """Order lines by the natural order of the swept values (so legends read ascending)."""
    ranks = {k: {vkey(v): i for i, v in enumerate(ordered_values(df[k]))} for k in keys}
    return sorted(series, key=lambda s: tuple(ranks[k].get(vkey(s.config.get(k)), 1 << 30) for k in keys))


def draw_series(ax, s: Series, color: Any, ls: Any, lw: float, alpha: float) -> None:
    """The median line, the min-max band (several seeds), and marks for what the axis cannot show."""
    ax.plot(s.x, s.med, color=color, ls=ls, lw=lw, alpha=alpha, gid=f"series:{s.label}")
    if s.count.max() > 1:
        ax.fill_between(s.x, s.lo, s.hi, color=color, alpha=0.15, lw=0, gid="band")
    # a finite value between non-finite neighbours draws no line segment: show it as a dot
    ok = np.isfinite(s.med)
    left = np.r_[False, ok[:-1]]
    right = np.r_[ok[1:], False]
    lone = ok & ~left & ~right
    if lone.any():
        ax.plot(s.x[lone], s.med[lone], ls="none", marker="o", ms=3, color=color, alpha=alpha, gid="lone")
    mark_edge(ax, s.x[s.nonfinite], "top", color)
    mark_edge(ax, s.x[s.offscale], "bottom", color)


def mark_edge(ax, xs: np.ndarray, edge: str, color: Any) -> None:
    """Marks at data x on the top (NaN/inf) or bottom (<= 0 on a log axis) edge of the axes."""
    if len(xs) == 0:
        return
    trans = blended_transform_factory(ax.transData, ax.transAxes)
    y, marker, gid = (0.97, "x", "nonfinite") if edge == "top" else (0.03, "v", "offscale")
    ax.plot(xs, np.full(len(xs), y), transform=trans, ls="none", marker=marker, ms=6, mew=1.5,
            color=color, clip_on=False, gid=gid, zorder=5)


def extra_handles(series: Iterable[Series], log: bool, theory: bool = False) -> list:
    """Legend entries for the band, the theory line and the edge marks actually drawn."""
    series = list(series)
    out = []
    n_seeds = max((int(s.count.max()) for s in series), default=1)
    if n_seeds > 1:
        out.append(Patch(color="0.5", alpha=0.3, label=f"min-max over seeds\n(line: median of {n_seeds})"))
    if theory:
        out.append(Line2D([], [], color="0.3", **THEORY_STYLE, label=r"mean field: $\sqrt{\chi_1}$ per layer"))
    n_bad = len({s.label for s in series if s.nonfinite.any()})  # a group drawn in several panels counts once
    if n_bad:
        out.append(Line2D([], [], color="0.2", ls="none", marker="x", mew=1.5,
                          label=f"NaN/inf or diverged (top edge)\nin {n_bad} line{'s' * (n_bad > 1)}"))
    n_low = len({s.label for s in series if s.offscale.any()})
    if n_low and log:
        out.append(Line2D([], [], color="0.2", ls="none", marker="v",
                          label=f"<= 0, off the log axis\n(bottom edge) in {n_low} line{'s' * (n_low > 1)}"))
    return out


def note_if_empty(ax, series: Sequence[Series]) -> None:
    """Say so in the panel when nothing finite could be drawn (only edge marks)."""
    if not any(np.isfinite(s.med).any() for s in series):
        ax.text(0.5, 0.5, "no finite values to draw\n(all NaN/inf: see the marks)", transform=ax.transAxes,
                ha="center", va="center", fontsize="small", color="0.4", gid="note")


def legend(fig: Figure, handles: list, title: str | None = None) -> None:
    if not handles:
        return
    ncols = 1 if len(handles) <= 12 else 2 if len(handles) <= 30 else 3
    # centred, not upper: an upper legend would sit beside (and under) a long two-line title
    leg = fig.legend(handles=handles, loc="outside right center", fontsize="x-small", title=title,
                     title_fontsize="small", frameon=False, ncols=ncols)
    leg.set_gid("legend")


# --- axes helpers --------------------------------------------------------------------------------
def is_log_spaced(steps: np.ndarray) -> bool:
    """Probe steps like 0, 1, 2, 4, ..., 1000: gaps that grow by orders of magnitude."""
    s = np.unique(np.asarray(steps, dtype=float))
    if len(s) < 4:
        return False
    gaps = np.diff(s)
    return gaps.max() / max(gaps.min(), 1e-12) >= 10


def step_axis(ax, steps: np.ndarray) -> None:
    """Log-spaced probe steps on a symlog axis (step 0 stays visible), even ones on a linear axis;
    ticks on whole steps either way."""
    log = is_log_spaced(steps)
    if log:
        ax.set_xscale("symlog", linthresh=1.0, linscale=0.5)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))  # 1, 10, 100 rather than 10^k
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if len(np.unique(steps)) == 1:  # one logged step: a readable axis around it
        ax.set_xlim(float(np.min(steps)) - 1, float(np.min(steps)) + 1)
    ax.set_xlabel("training step" + (" (symlog)" if log else ""))


def spans_decades(values: np.ndarray, decades: float = 2.0) -> bool:
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    return len(v) > 1 and v.max() / v.min() >= 10 ** decades
