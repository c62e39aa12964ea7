"""How every figure looks: figure size, colour scales keyed to swept values, line styles, legends,
the marks for values an axis cannot show, and the step and log axes."""

from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.collections import Collection, PolyCollection
from matplotlib.colors import BoundaryNorm, ListedColormap, LogNorm, Normalize, to_rgba_array
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.path import Path
from matplotlib.ticker import (
    Formatter, FuncFormatter, Locator, LogFormatterSciNotation, LogLocator, MaxNLocator, NullFormatter,
)
from matplotlib.transforms import blended_transform_factory

from gradflow.choices import CONDITIONAL_KEYS
from gradflow.keys import between_sources, is_missing, is_numeric_key, n_distinct, ordered_values, vkey
from gradflow.fmt import drop_shared_parts, fmt
from gradflow.plots.labels import key_label, short_key, value_label
from gradflow.plots.save import DPI
from gradflow.plots.series import name_says
from gradflow.plots.series import Series


FIGSIZE = (7.0, 4.5)  # inches; one panel plus an outside legend or colorbar


MAX_STYLES = 4  # a second swept key with at most this many values becomes the line style


class Drawing(Figure):
    """A Figure that keeps the numbers it drew, for tests and notebooks to check instead of pixels:
    data["lines"] one row per point of every measured line (axes, line, x, y = median, lo, hi, n
    runs), data["theory"] the mean-field lines, data["cells"] the cells of a heatmap or grid."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._rows: dict[str, list[dict]] = {}

    def record(self, table: str, rows: Iterable[dict]) -> None:
        self._rows.setdefault(table, []).extend(rows)

    @property
    def data(self) -> dict[str, pd.DataFrame]:
        return {k: pd.DataFrame(v) for k, v in self._rows.items()}


def record(ax, table: str, rows: Iterable[dict]) -> None:
    """Keep what was drawn on `ax` in its figure's data (figures made elsewhere keep nothing)."""
    fig = ax.figure
    if isinstance(fig, Drawing):
        fig.record(table, [{"axes": fig.axes.index(ax)} | r for r in rows])


def new_figure(nrows: int = 1, ncols: int = 1, figsize: tuple[float, float] | None = None,
               sharex: bool | str = False, sharey: bool | str = False) -> tuple[Figure, np.ndarray]:
    """A pyplot-free Figure with constrained layout and an (nrows, ncols) array of axes."""
    fig = Drawing(figsize=figsize or FIGSIZE, dpi=DPI, layout="constrained")
    axes = fig.subplots(nrows, ncols, sharex=sharex, sharey=sharey, squeeze=False)
    return fig, axes


def facet_grid(n: int, sharex=True, sharey=True, panel=(4.0, 3.6), max_cols: int = 3,
               legend_width: float = 2.2) -> tuple[Figure, list]:
    """n panels in rows of up to max_cols, as even as the rows can be (4 panels: 2 x 2, not 3 + 1), sized so
    each stays readable; spare axes removed, and the panel over a removed one shows the shared x axis's tick
    labels (the lowest of its column: 8 panels in 3 x 3, the sixth's steps were hidden as an inner panel's)."""
    nrows = math.ceil(n / max_cols)
    ncols = math.ceil(n / nrows)
    size = FIGSIZE if n == 1 else (min(panel[0] * ncols + legend_width, 16.0), min(panel[1] * nrows + 0.9, 12.0))
    fig, axes = new_figure(nrows, ncols, size, sharex=sharex, sharey=sharey)
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.remove()
    for ax in flat[:n]:
        ax.grid(True, which="major", alpha=0.25, lw=0.5)
    for ax in bottom_and_left(flat[:n])[0]:
        ax.xaxis.set_tick_params(which="both", labelbottom=True)
    return fig, flat[:n]


AUTO_PANELS = 9  # at most this many panels for the swept keys that colour and line style leave out


def panels_by(df: pd.DataFrame, keys: list[str], most: int = AUTO_PANELS
              ) -> tuple[list[pd.DataFrame], list[str]] | None:
    """A panel per combination of `keys`' values among df's rows, in their natural order: (each panel's
    rows, its title, e.g. "init=xavier_normal, width=32"); None where there would be more than `most`
    (the figure's title then names the keys its lines also differ in)."""
    combo = pd.Series(list(zip(*(df[k].map(vkey) for k in keys))), index=df.index)  # each row's values
    present = set(combo)
    if len(present) > most:
        return None
    natural = [{vkey(v): (i, v) for i, v in enumerate(ordered_values(df[k]))} for k in keys]  # rank, value
    ordered = sorted(present, key=lambda c: tuple(n[v][0] for n, v in zip(natural, c)))
    panel = combo.map({c: j for j, c in enumerate(ordered)})
    titles = [", ".join(value_label(k, n[v][1]) for k, n, v in zip(keys, natural, c)) for c in ordered]
    # over lines a panel holds (two folders of unrelated studies differ in eight keys: one line ran into
    # the next panel's title)
    return [df[panel == j] for j in range(len(ordered))], [wrap_words(t, PANEL_TITLE_WIDTH, long_words=True) for t in titles]


def marker_key(df: pd.DataFrame, panel: str | None, also: list[str], most: int) -> str | None:
    """Where the swept keys colour and line style leave out (`also`) would need more than `most` panels
    (with `panel`'s values: a facet, or the source under compare --panels), the one of them a marker shows
    (P, *, X, < on each line): of those with at most len(KEY_MARKERS) values, one after which the rest fit
    the panels, then the fewest values, then the first; None where the panels fit or no key is so few. (A
    depth x activation x init sweep beside another, by colour, source and init's panels: relu and tanh were
    drawn alike, the title saying only `lines also differ in model.activation`.)"""
    if not also or unshown_panels(df, panel, also, most) is not None:
        return None
    few = [k for k in also if n_distinct(df[k]) <= len(KEY_MARKERS)]

    def left(k: str) -> int:  # panels the other keys need once `k` takes the markers
        rest = [*([panel] if panel else []), *(a for a in also if a != k)]
        return len(set(zip(*(df[r].map(vkey) for r in rest)))) if rest else 1

    return min(few, key=lambda k: (left(k) > most, n_distinct(df[k]), also.index(k)), default=None)


def unshown_panels(df: pd.DataFrame, facet: str | None, also: list[str], most: int = AUTO_PANELS
                   ) -> tuple[list[pd.DataFrame], list[str]] | None:
    """A panel per combination of the values of `also`, the swept keys neither colour nor line style shows,
    with the `facet`'s where one is given (a facet by init alone left two activations' lines alike in one
    panel): `panels_by`'s; None where `also` is empty or there would be more than `most` panels."""
    return panels_by(df, [*([facet] if facet else []), *also], most) if also else None


PANEL_TITLE_WIDTH = 56  # characters of a small-font panel title across a 4-inch panel
XLABEL_WIDTH = 44  # characters of an axis label under a 4-inch panel


def wrap_words(text: str, width: int, long_words: bool = False) -> str:
    """`text` over lines of at most `width` characters, broken between words; with `long_words` (a panel's
    title: tag=a_very_long_value ran into the next panel's), a word longer than a line too, after its last
    `,_=/:` that leaves half a line or more, else at the width, never inside mathtext ($...$)."""
    import textwrap

    lines = []
    for line in textwrap.wrap(text, width, break_long_words=False, break_on_hyphens=False):
        while long_words and len(line) > width > 1 and "$" not in line:
            cut = max(line.rfind(c, 0, width) for c in ",_=/:")
            cut = cut + 1 if cut + 1 >= width // 2 else width
            lines.append(line[:cut])
            line = line[cut:]
        lines.append(line)
    return "\n".join(lines) or text


LINE_STYLES = ["-", "-.", ":", (0, (3, 1, 1, 1, 1, 1))]  # "--" is reserved for theory lines
STYLE_MARKERS = ["o", "s", "^", "D"]  # each line style's marker: a line of one point (a dot) keeps its style
# a key of its own shown by markers (`marker_key`'s), none of them a line style's: a profile's depth, a dot's style
# (o, s, ^, D) read the same shapes as another key's values in the curves beside it (o: depth 4 there, width 16 here)
KEY_MARKERS = ["P", "*", "X", "<"]


def marker_of(ls: Any) -> str:
    """The marker that stands for line style `ls` where a line is drawn as points."""
    return STYLE_MARKERS[LINE_STYLES.index(ls)] if ls in LINE_STYLES else "o"


THEORY_STYLE = dict(ls="--", lw=1.0, alpha=0.8)


NAN_COLOR = "0.55"


def _sequential(n: int):
    """n colours from viridis, stopping before its pale yellow end (hard to see on white)."""
    cmap = colormaps["viridis"]
    return [cmap(t) for t in (np.linspace(0.0, 0.88, n) if n > 1 else [0.45])]


# tab10 but its last, cyan, which thin lines beside its first, blue, did not tell apart (gpt2 beside
# xavier_normal, softplus beside relu): a near-black, apart from every other in hue, lightness or saturation
LAST_CATEGORICAL = (0.1, 0.1, 0.1, 1.0)


def _categorical(n: int):
    if n <= 10:
        return [colormaps["tab10"](i) if i < 9 else LAST_CATEGORICAL for i in range(n)]
    if n <= 20:
        return [colormaps["tab20"](i) for i in range(n)]
    return [colormaps["turbo"](t) for t in np.linspace(0.05, 0.95, n)]


# each name's own colour (tab10's, in this order) wherever a figure colours by these keys and shows no other
# name of theirs: sigmoid was orange in one figure and tanh in the next, by the values each happened to show
FIXED_COLOURS = {
    "model.activation": ("relu", "tanh", "sigmoid", "linear", "gelu", "leaky_relu", "elu", "selu", "silu", "softplus"),
    "init.name": ("xavier_normal", "kaiming_normal", "orthogonal", "standard", "xavier_uniform", "kaiming_uniform",
                  "meanfield", "lecun_normal", "gpt2", "delta_orthogonal"),
    "norm.name": ("none", "batchnorm", "layernorm"),
    "model.skip": ("none", "residual"),
}


def _own_colours(df: pd.DataFrame) -> dict[str, int] | None:
    """Each run's index in FIXED_COLOURS where runs coloured one by one (a --points sweep's: the triples of
    activation, σ_w², σ_b²) each have a name of their own of one key there: its own colour (tanh orange),
    as in a figure coloured by that key; None where no key tells every run apart so."""
    if "run" not in df.columns or "source" in df.columns and df["source"].nunique() > 1:
        return None
    runs = df.drop_duplicates("run")
    for key, names in FIXED_COLOURS.items():
        if key in runs.columns:
            values = runs[key].astype(str)
            if values.is_unique and set(values) <= set(names):
                return {str(r): names.index(v) for r, v in zip(runs["run"], values)}
    return None


def _run_keys(df: pd.DataFrame) -> dict:
    """Each run's values of the keys its runs vary in, for runs drawn one legended line each: a folder of a
    loop's own runs, run0 and run1, was a legend of folder names, its settings in `ls` alone."""
    from gradflow.keys import hashable, swept_keys

    if "run" not in df.columns:
        return {}
    keys = [k for k in swept_keys(df) if k not in ("run", "source")]
    # (not a key a line runs along: a ratio's line is a sweep's runs over its depths; lists, optim.betas, as text)
    keys = [k for k in keys if (hashable(df[k]).groupby(df["run"], sort=False).nunique(dropna=False) <= 1).all()]
    runs = df.drop_duplicates("run")
    return dict(zip(runs["run"], runs[keys].to_dict("records"))) if keys else {}


SOURCE_ITEMS = 2  # a compared source's differing keys named in its legend entry at most (the table has all)
MAX_NAMED = 24  # legend entries for a colour key's values at most (a folder of a hundred unrelated runs)


def _source_keys(df: pd.DataFrame, fixed: dict) -> dict:
    """Each source's values of the keys that set it apart: those each fixes (compare's overlay table), and
    those only the sources differ in where each source sets one value (an lstm's forget_bias, 3 in one
    folder, 0 in another, unset for their rnn runs: between_sources)."""
    from gradflow.keys import swept_keys

    out = {s: dict(keys) for s, keys in fixed.items()}
    for k in between_sources(df, swept_keys(df)):
        values = {s: ordered_values(part[k].dropna()) for s, part in df.groupby("source", sort=False)}
        if all(len(v) == 1 for v in values.values()):
            for s, v in values.items():
                out.setdefault(s, {})[k] = v[0]
    return out


class Palette:
    """Colour by one swept key (ordered numbers: viridis + colorbar; anything else: tab10 + legend),
    line style by an optional second key with few values; with `marks`, that key is a marker on solid
    lines instead (a profile's: its dashed theory lines read as runs of a dashed style); `marker`, a third
    key with few values shown by a marker on each line beside the line style (`marker_key`'s)."""

    def __init__(self, df: pd.DataFrame, color: str | None, style: str | None = None, marks: bool = False,
                 marker: str | None = None):
        self.color, self.style, self.marks, self.marker = color, style, marks, marker
        # a comparison's sources are named with what sets them apart (the keys its table leaves out)
        self._source_keys: dict = df.attrs.get("source_keys", {})  # (store.SOURCE_KEYS)
        if "source" in (color, style):
            self._source_keys = _source_keys(df, self._source_keys)
        # runs drawn one legended line each (a folder of unrelated runs) are named with what sets them apart too
        self._run_keys: dict = _run_keys(df) if color == "run" else {}
        self.title = key_label(color, df) if color is not None else None  # (a transformer's depth is blocks)
        self.numeric = False
        self._colors: dict[Any, Any] = {}
        self.mappable: ScalarMappable | None = None
        if color is not None:
            self.values = ordered_values(df[color])
            if color == "run":  # run ids in their folders' order (model.depth=2 before model.depth=10)
                from pathlib import PurePosixPath

                from gradflow.store import natural_key

                self.values = sorted(self.values, key=lambda v: natural_key(PurePosixPath(str(v))))
            real = [v for v in self.values if not is_missing(v)]
            self.numeric = is_numeric_key(df, color) and len(real) >= 2
            if self.numeric and len(real) <= 12:
                # one discrete colour per value, evenly spaced by rank so close values stay apart
                cols = _sequential(len(real))
                self.mappable = ScalarMappable(BoundaryNorm(np.arange(len(real) + 1) - 0.5, len(real)),
                                               ListedColormap(cols))
                self.ticks = list(range(len(real)))
                self.tick_labels = [fmt(v) for v in real]
                self._colors = {vkey(v): c for v, c in zip(real, cols)}
            elif self.numeric:
                lo, hi = float(min(real)), float(max(real))
                norm = LogNorm(lo, hi) if lo > 0 and hi / lo >= 30 else Normalize(lo, hi)
                cmap = ListedColormap(_sequential(256))
                self.mappable = ScalarMappable(norm, cmap)
                self.ticks = None
                self._colors = {vkey(v): cmap(norm(float(v))) for v in real}
            elif set(map(str, real)) <= set(FIXED_COLOURS.get(color, ())):
                self._colors = {vkey(v): _categorical(10)[FIXED_COLOURS[color].index(str(v))] for v in real}
            elif color == "run" and (own := _own_colours(df)) is not None:  # (a --points sweep's runs)
                self._colors = {vkey(v): _categorical(10)[own[str(v)]] for v in real}
            else:
                self._colors = {vkey(v): c for v, c in zip(self.values, _categorical(len(self.values)))}
            self._colors.setdefault(vkey(math.nan), NAN_COLOR)
        if style is not None:
            self.style_values = ordered_values(df[style])
            self._styles = {vkey(v): LINE_STYLES[i % len(LINE_STYLES)] for i, v in enumerate(self.style_values)}
        if marker is not None:
            self.marker_values = ordered_values(df[marker])
            self._markers = {vkey(v): KEY_MARKERS[i % len(KEY_MARKERS)] for i, v in enumerate(self.marker_values)}

    def color_of(self, config: dict, default: Any = "C0") -> Any:
        return self._colors.get(vkey(config.get(self.color)), NAN_COLOR) if self.color else default

    def style_of(self, config: dict) -> Any:
        if self.marks:
            return "-"
        return self._styles.get(vkey(config.get(self.style)), "-") if self.style else "-"

    def marker_for(self, config: dict) -> str | None:
        """The marker of `config`'s value of the marker key, or of the style key where it is shown by markers
        (`marks`), else None."""
        if self.marker is not None:
            return self._markers.get(vkey(config.get(self.marker)), KEY_MARKERS[0])
        if not (self.marks and self.style):
            return None
        return marker_of(self._styles.get(vkey(config.get(self.style)), "-"))

    def handles(self, markers: bool = False) -> tuple[list, str | None]:
        """Legend entries for categorical colours and for line styles (each with its marker where `markers`:
        some line is drawn as points, `has_marks`), and the legend's title."""
        out, title = [], None
        if self.color is not None and not self.numeric:
            title = self.title
            named = self.values if len(self.values) <= MAX_NAMED else self.values[:MAX_NAMED - 1]
            out += [Line2D([], [], color=self._colors[vkey(v)], lw=2, label=wrap_label(self.label(self.color, v)))
                    for v in named]
            if len(named) < len(self.values):  # (more would leave the axes no room, in colours few could tell apart)
                what = "runs" if self.color == "run" else "values"
                out.append(Line2D([], [], color="none",
                                  label=f"and {len(self.values) - len(named)} more {what}\n(not named here)"))
        if self.style is not None:  # (its markers are the marker key's where there is one: dashes alone)
            styled = (markers or self.marks) and self.marker is None
            out += [Line2D([], [], color="0.2", lw=1.3, ls="-" if self.marks else self._styles[vkey(v)],
                           **({"marker": marker_of(self._styles[vkey(v)]), "ms": 4} if styled else {}),
                           label=wrap_label(self.label(self.style, v, value_label(self.style, v))))
                    for v in self.style_values]
        if self.marker is not None:
            out += [Line2D([], [], color="0.2", ls="none", marker=self._markers[vkey(v)], ms=5,
                           label=wrap_label(value_label(self.marker, v)))
                    for v in self.marker_values]
        return out, title

    def label(self, key: str, v: Any, plain: str | None = None) -> str:
        """A legend entry: `plain` (the value itself by default); a compared source as its name and the
        values that set it apart ("mn (data=mnist1d, data.seed=42)": "source=mn" alone said nothing)."""
        told = {"source": self._source_keys, "run": self._run_keys}.get(key, {})
        described = told.get(v)
        if not described:
            return plain if plain is not None else fmt(v)
        # a choice (data=mnist1d) says it and its group's keys follow from it (init=xavier_normal sets init.gain):
        # the choices, then the keys of other groups set (model.activation beside it), and how many more
        chosen = [k for k in described if k.endswith(".name")]
        groups = tuple(k.removesuffix("name") for k in chosen)
        own = [k for k in described if k not in chosen and not is_missing(described[k])]
        # (a key read only where another says, probe.jacobian_inputs beside probe.jacobian: as a group's own)
        follows = [k for k in own if k.startswith(groups) or set(CONDITIONAL_KEYS.get(k, ((),))[0]) & set(described)]
        keys = chosen + [k for k in own if k not in follows]
        # (a group's own key, init.gain, only where nothing else tells the source from another)
        natural = keys + follows
        apart = self._apart(v, natural, told)
        keys = apart + [k for k in keys if k not in apart]
        if not keys:
            return plain if plain is not None else fmt(v)
        # (not again what the folder's name says: "init=standard (init=standard)"; then its name alone, which
        # says it: "source=init=standard" did not)
        keys = [k for k in keys if not name_says(str(v), k, described[k])]
        if not keys:
            return fmt(v)
        shown = sorted(keys[:SOURCE_ITEMS], key=natural.index)  # (in their order: init=xavier_normal, init.gain=1)
        items = [f"{k.removesuffix('.name')}={fmt(described[k])}" for k in shown]
        if len(keys) > SOURCE_ITEMS:
            items.append(f"{len(keys) - SOURCE_ITEMS} more")
        return f"{fmt(v)} ({', '.join(items)})"

    @staticmethod
    def _apart(v: Any, keys: list[str], told: dict) -> list[str]:
        """The `keys` that tell source (or run) `v` from each other one in `told`, chosen greedily (the key that
        tells it from most of those left, the first in `keys` of equals): "plain" beside "relu" and "resid" is
        its init and its skip, where the first two keys alone (init, activation) were resid's too."""
        mine = told[v]
        differs = lambda other, k: fmt(other.get(k)) != fmt(mine.get(k))  # noqa: E731 (missing reads "-")
        left = [d for s, d in told.items() if vkey(s) != vkey(v)]
        first: list[str] = []
        while left and len(first) < len(keys):
            best = max((k for k in keys if k not in first), key=lambda k: sum(differs(o, k) for o in left))
            told = [o for o in left if differs(o, best)]
            if not told:
                break
            first.append(best)
            left = [o for o in left if not differs(o, best)]
        return first

    def colorbar(self, fig: Figure, axes: list) -> None:
        if self.mappable is None:
            return
        cb = fig.colorbar(self.mappable, ax=axes, label=self.title, shrink=0.9, aspect=30, pad=0.02)
        if self.ticks is not None:
            cb.set_ticks(self.ticks, labels=self.tick_labels)
            cb.ax.tick_params(length=0)
        cb.ax.set_gid("colorbar")
        if any(vkey(v) == vkey(math.nan) for v in self.values):
            cb.ax.set_xlabel(f"grey:\n{short_key(self.color)}\nnot set", fontsize="x-small")  # (value_label's words)


def source_title(df: pd.DataFrame, v: Any, plain: str | None = None) -> str:
    """A compared source's panel title as its legend entry names it, with what sets it apart, "da
    (init=xavier_normal)" (compare --panels titled its panels "source=da" alone: nothing said the init);
    `plain` ("source=da" by default) where nothing does."""
    return Palette(df, "source").label("source", v, value_label("source", v) if plain is None else plain)


LABEL_WIDTH = 36  # characters per legend line: a run id of many overrides must not squash the axes


def wrap_label(text: str, width: int = LABEL_WIDTH) -> str:
    """A long legend entry (a run id: key=value,key=value,...) over lines of `width`, broken after commas."""
    return wrap_words(text.replace(",", ", "), width).replace(", ", ",")


def line_weight(n_lines: int) -> tuple[float, float]:
    """Thinner, more transparent lines as there are more of them (readable with 20+)."""
    if n_lines <= 6:
        return 1.6, 0.95
    if n_lines <= 15:
        return 1.1, 0.85
    return 0.8, 0.7


LENGTH_KEYS = ("model.depth", "data.T")  # the net's length: a profile's x extent, each line ending at its net's


def colour_key(df: pd.DataFrame, swept: Sequence[str], facet: str | None, styles_free: bool = True) -> str | None:
    """The swept key a figure of the standard set colours by, where none is given, the same in every figure
    of a study: the swept key with the fewest values that is not the net's length (a depth x init study's
    init, in its fixed colours; depth then takes the markers of a profile, whose lines' ends say it too, and
    the line styles of a figure over steps) nor the facet, of equals a name rather than a number, where the
    length can take the markers or styles (`styles_free`: no compared sources take them, and it has at most
    MAX_STYLES values) or is not swept; else the first swept key but the facet. (Depth, the first column,
    took the colour, and init only dashes, which a profile's dashed theory lines read as.)"""
    rest = [k for k in swept if k != facet]
    lengths = [k for k in rest if k in LENGTH_KEYS]
    others = [k for k in rest if k not in LENGTH_KEYS]
    if others and (not lengths or styles_free and all(n_distinct(df[k]) <= MAX_STYLES for k in lengths)):
        # (of equals a named choice, its colours fixed in every figure, then the first)
        return min(others, key=lambda k: (n_distinct(df[k]), is_numeric_key(df, k)))
    return rest[0] if rest else None


def style_key(df: pd.DataFrame, swept: Sequence[str], used: Sequence[str | None], source: bool) -> str | None:
    """Line style: the results folder when overlaying sources, else the next swept key with few values
    that the keys already `used` (colour, facet) do not determine: a key that changes only together with
    the colour (each variant at its own learning rate, say) would only repeat it."""
    if source:
        return "source"
    by = [u for u in used if u is not None]
    runs = df.drop_duplicates("run") if "run" in df.columns else df  # one row per run: the keys are per run

    def repeats(key: str) -> bool:
        pairs = runs[[*by, key]].astype(str).drop_duplicates()
        return bool(by) and len(pairs) == len(pairs[by].drop_duplicates())

    return next((k for k in swept if k not in used and n_distinct(df[k]) <= MAX_STYLES and not repeats(k)), None)


def unshown(df: pd.DataFrame, swept: Sequence[str], used: Sequence[str | None]) -> tuple[list[str], list[str]]:
    """The swept keys that neither colour, line style nor panels (`used`) show: (the keys lines also differ
    in, the keys only the sources differ in). With the source among `used`, a key that no source varies on
    its own (`between_sources`) is the second kind: the source's style shows it, and it splits no panels
    (an lstm's forget_bias set in one compared folder split a comparison in three)."""
    rest = [k for k in swept if k not in used]
    between = between_sources(df, rest) if "source" in used else []
    return [k for k in rest if k not in between], between


# Keys that act on the updates alone: the optimizer's (every optim.* key: lr, momentum, schedule, warm-up, weight
# decay, the optimizer itself), the training's length and the steps it evaluates, checks and probes at, and
# clipping, which the loop applies to the gradients after the probes have read them (gradflow.train). Runs of one
# seed that differ only in them start from the same weights on the same first batch: what they measure at step 0,
# before any update, is one measurement. Not so for a quantity of the update itself (update_ratio: the step
# taken at step 0, which the learning rate scales), nor for train.batch_size, the seed, the data, the model
# or its init.
UPDATE_ONLY_GROUPS = ("optim.",)
UPDATE_ONLY_KEYS = ("train.steps", "train.eval_every", "train.check_every", "train.grad_clip", "train.clip_value",
                    "probe.every", "probe.points")
SAME_AT_INIT = 1e-5  # the relative spread within which such runs' step-0 values count as one measurement


def unshown_notes(also: Sequence[str], between: Sequence[str]) -> list[str]:
    """The title's words for `unshown`'s two kinds of keys: those the lines also differ in, drawn alike, and
    those only the sources differ in."""
    return [f"lines also differ in {', '.join(also)}"] * bool(also) + \
        [f"the sources also differ in {', '.join(between)}"] * bool(between)


def update_only(key: str) -> bool:
    """Whether `key` acts on the updates alone, never on what a run measures before the first one."""
    return key.startswith(UPDATE_ONLY_GROUPS) or key in UPDATE_ONLY_KEYS


def no_effect_at_init(df: pd.DataFrame, swept: Sequence[str], quantity: str | None = None,
                      keep: Sequence[str | None] = (), points: Sequence[str] = ("layer",)) -> list[str]:
    """Of the `swept` keys, those a figure of step 0 (`df`: its rows of one quantity, a `value` each, per
    `layer` where it has one; or a ratio per run; `points`: the columns that name one value within a run, a
    Jacobian's singular value by layer, sample and index) treats as not varying: keys that act on the updates alone
    (`update_only`: optim.lr, train.steps, train.grad_clip, ...), where the runs that differ only in them
    measured the same values, to a relative SAME_AT_INIT (a key whose runs did not, as a user's own loop
    might, stays a key: nothing is hidden). None for a quantity of the update (update_ratio) or a key the
    caller names (`keep`: a colour or facet asked for). Each figure of step 0 chooses its colour, marker
    and panels among the other keys, one line per combination of their values, and says so (`init_note`)."""
    from gradflow.keys import config_columns
    from gradflow.probes.quantities import QUANTITIES, UPDATE

    if quantity in QUANTITIES and QUANTITIES[quantity].when == UPDATE:
        return []
    candidates = [k for k in swept if update_only(k) and k not in keep]
    if not candidates or "value" not in df.columns:
        return []
    values = pd.to_numeric(df["value"], errors="coerce").to_numpy(dtype=float)
    finite = np.isfinite(values)
    value = pd.Series(np.where(finite, values, np.nan))
    kind = pd.Series(np.where(finite, "finite", values.astype(str)))  # (nan, inf, -inf: each its own)
    codes = _codes(df, [*config_columns(df), *(c for c in ("source", *points) if c in df.columns)])
    dropped: list[str] = []
    for k in candidates:  # (one at a time: a key whose runs differ is left a key, the others still dropped)
        trial = [*dropped, k]
        # the runs one line would hold: alike in every key but the trial's and those only they imply (an
        # optimizer's own keys, optim.momentum beside adam's optim.betas), at one point of one source
        group = _alike_groups(codes, len(df), swept, trial)
        hi, lo = value.groupby(group).max(), value.groupby(group).min()
        alike = ((hi - lo).abs() <= SAME_AT_INIT * np.maximum(hi.abs(), lo.abs())) | hi.isna()
        if bool(alike.all()) and bool((kind.groupby(group).nunique() == 1).all()):
            dropped = trial
    return dropped


def sources_alike_at_init(df: pd.DataFrame, quantity: str | None = None) -> list[str]:
    """The keys compared sources differ in (none varying within a source: `compare` keeps them in the frame's
    attrs, store.SOURCE_KEYS), where each acts on the updates alone and the sources' runs alike in every other
    key measured the same at step 0 (`df`: the rows of one quantity at step 0, as `no_effect_at_init` takes
    them); [] where the sources differ otherwise, or measured apart. Their lines coincide, each source's
    marker over the other's: the figure says why."""
    from gradflow import store
    from gradflow.keys import config_columns

    if "source" not in df.columns or n_distinct(df["source"]) < 2:
        return []
    given = df.attrs.get(store.SOURCE_KEYS) or {}
    parts = [part for _, part in df.groupby("source", sort=False)]
    keys = [k for k in config_columns(df) if n_distinct(df[k]) > 1 and all(n_distinct(p[k]) == 1 for p in parts)]
    keys += [k for k in dict.fromkeys(k for values in given.values() for k in values) if k not in df.columns]
    if not keys or not all(update_only(k) for k in keys):
        return []
    apart = {k: df["source"].map({s: values.get(k) for s, values in given.items()}) for k in keys if k not in df}
    alike = no_effect_at_init(df.assign(**apart).drop(columns="source"), keys, quantity)
    return keys if len(alike) == len(keys) else []


def _codes(df: pd.DataFrame, columns: Sequence[str]) -> dict[str, np.ndarray]:
    """Each of `columns` of `df` as codes (NaN matching NaN, lists by value)."""
    from gradflow.keys import hashable

    return {c: pd.factorize(hashable(df[c]).astype(object), use_na_sentinel=False)[0] for c in columns}


def _alike_groups(codes: dict[str, np.ndarray], n: int, swept: Sequence[str], alike: Sequence[str]) -> np.ndarray:
    """Each of `n` rows' group (numbered in order of appearance): the rows alike in every column of `codes` but
    the `alike` keys (of the `swept` ones) and the keys acting on the updates that only they imply."""
    by = [c for c in codes if not update_only(c) or (c in swept and c not in alike)]
    if not by:
        return np.zeros(n, dtype=np.int64)
    return pd.DataFrame({c: codes[c] for c in by}).groupby(by, sort=False).ngroup().to_numpy()


def init_note(keys: Sequence[str], per: str = "line") -> str | None:
    """A figure of step 0's line that says which keys it drew as one (`no_effect_at_init`); `per`: what each
    value of the other keys gets (a line; a histogram's figure)."""
    return f"{', '.join(keys)}: no effect at step 0 (one {per} per value of the other keys)" if keys else None


def one_run_each(df: pd.DataFrame, swept: Sequence[str], alike: Sequence[str]) -> pd.DataFrame:
    """The rows of the first run of each group of `alike_runs`: one per distinct measurement at step 0."""
    return df[df["run"].isin({runs[0] for runs in alike_runs(df, swept, alike)})] if alike else df


def alike_runs(df: pd.DataFrame, swept: Sequence[str], alike: Sequence[str]) -> list[list]:
    """The runs of `df` in groups, in their order, that `no_effect_at_init` found one measurement at step 0:
    alike in every key but `alike` (of the `swept` keys) and those only they imply (adam's optim.betas beside
    sgd's optim.momentum); each run a group of its own where `alike` is empty."""
    from gradflow.keys import config_columns

    per_run = df.drop_duplicates("run")
    if not alike:
        return [[run] for run in per_run["run"]]
    codes = _codes(per_run, [*config_columns(df), *(["source"] if "source" in df.columns else [])])
    group = _alike_groups(codes, len(per_run), swept, alike)
    return [list(runs) for _, runs in per_run["run"].groupby(group, sort=False)]


def bottom_and_left(axes: list) -> tuple[list, list]:
    """The panels of facet_grid's `axes` that show the x axis's label (the lowest of each column) and the
    y axis's (the first of each row)."""
    at = [(ax.get_subplotspec().rowspan.start, ax.get_subplotspec().colspan.start) for ax in axes]
    lowest = {col: max(r for r, c in at if c == col) for _, col in at}
    bottom = [ax for ax, (row, col) in zip(axes, at) if row == lowest[col]]
    left = [ax for ax, (_, col) in zip(axes, at) if col == 0]
    return bottom, left


FEW_POINTS = 6  # a series of this many points or fewer is drawn with a marker at each


MOST_MARKERS = 20  # markers along a line drawn with its style's marker (`draw_series`'s marker) at most


def draw_series(ax, s: Series, color: Any, ls: Any, lw: float, alpha: float, marked: bool = False,
                marker: str | None = None) -> None:
    """The median line, the min-max band (several seeds), and marks for what the axis cannot show.
    `marked`: a marker at every point (the caller's reason: a profile that skips probe points).
    `marker`: the line's own marker (a key shown by markers, Palette's `marks`), along it every k-th point
    (up to MOST_MARKERS of them), at every point where few or `marked`."""
    # a line through a few points (a short run evaluated at its first and last step) reads as a trend
    # between them: the points are marked
    few = len(s.x) <= FEW_POINTS
    # (unclipped: whole at the axes' ends)
    marks = {"marker": marker or marker_of(ls), "ms": 4 if few else 2.5, "clip_on": False} if few or marked else {}
    if marker is not None and not marks:
        marks = {"marker": marker, "ms": 3.5, "markevery": max(1, math.ceil(len(s.x) / MOST_MARKERS))}
    ax.plot(s.x, s.med, color=color, ls=ls, lw=lw, alpha=alpha, gid=f"series:{s.label}", **marks)
    record(ax, "lines", ({"line": s.label, "x": x, "y": y, "lo": lo, "hi": hi, "n": int(n)}
                         for x, y, lo, hi, n in zip(s.x, s.med, s.lo, s.hi, s.count) if n))  # (a gap's is no point)
    if s.n_seeds > 1:
        add_band(ax, s.x, s.lo, s.hi, color)
    # a finite value between non-finite neighbours draws no line segment: show it as a dot
    lone = _lone(s)
    if lone.any():
        ax.plot(s.x[lone], s.med[lone], ls="none", marker=marker or marker_of(ls), ms=3, color=color, alpha=alpha,
                gid="lone", clip_on=False)
    mark_edge(ax, s.x[s.nonfinite], "top", color)
    mark_edge(ax, s.x[s.offscale], "bottom", color)


def _lone(s: Series) -> np.ndarray:
    """The points of `s` with a finite value between non-finite neighbours (no segment reaches them)."""
    ok = np.isfinite(s.med)
    return ok & ~np.r_[False, ok[:-1]] & ~np.r_[ok[1:], False]


def has_marks(series: Iterable[Series]) -> bool:
    """Whether `draw_series` draws some of `series` as points (few points, or lone ones): the legend's
    line styles then show their markers too (a dot shows no dashes)."""
    return any(len(s.x) <= FEW_POINTS or _lone(s).any() for s in series)


def add_band(ax, x: np.ndarray, lo: np.ndarray, hi: np.ndarray, color: Any) -> None:
    """A min-max band, as fill_between draws it (a polygon over each stretch where both edges are finite),
    added to the one band collection of `ax` (gid "band"): a sweep's bands are one artist, not one each."""
    ok = np.isfinite(lo) & np.isfinite(hi)
    edges = np.flatnonzero(np.diff(np.r_[0, ok.astype(int), 0])).reshape(-1, 2)  # [start, end) of each stretch
    polys = [np.r_[np.c_[x[a:b], lo[a:b]], np.c_[x[a:b], hi[a:b]][::-1]] for a, b in edges]
    if not polys:
        return
    band = next((c for c in ax.collections if c.get_gid() == "band"), None)
    if band is None:
        ax.add_collection(PolyCollection(polys, facecolors=[color] * len(polys), alpha=0.15, lw=0, gid="band"),
                          autolim=False)
    else:  # append: rebuilding every earlier polygon and colour at each band made a sweep's figure quadratic
        Collection.set_paths(band, band.get_paths() + [Path(np.r_[p, p[:1]], closed=True) for p in polys])
        band.set_facecolor(np.vstack([band.get_facecolor(), to_rgba_array([color] * len(polys))]))
    ax.update_datalim(np.concatenate(polys))  # the view, computed when drawn, takes in the whole band


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
    # (runs alike at step 0 but the seed: its seeds); lines of different counts (two folders compared, of 2 and
    # of 4 seeds) say the range, where the largest read as every line's
    counts = sorted({s.n_seeds for s in series if s.n_seeds > 1})
    if counts:
        n_seeds = f"{counts[0]}-{counts[-1]}" if len(counts) > 1 else f"{counts[0]}"
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
    """Say so in the panel when nothing finite could be drawn (only edge marks: NaN/inf, or values <= 0 on a
    log axis, a ReLU net whose hidden gradients are all exactly 0, which said "all NaN/inf"), or nothing was
    there to draw (a Recorder's loop that logs no train_acc: its panel said "all NaN/inf", with no mark)."""
    if not any(np.isfinite(s.med).any() for s in series):
        low = any(s.offscale.any() for s in series) and not any(s.nonfinite.any() for s in series)
        text = ("not logged by these runs" if not series else
                "every value <= 0, off the log axis\n(see the marks at the bottom edge)" if low else
                "no finite values to draw\n(all NaN/inf: see the marks)")
        ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize="small", color="0.4",
                gid="note")


LEGEND_WRAP = 44  # characters per line of a figure legend's entry; a longer one (a run's folder name) wraps
LEGEND_ROOM = 2.2  # inches a figure keeps for its legend (facet_grid's legend_width); a wider one widens it
MAX_WIDTH = 24.0  # inches: the widest (and tallest) a legend may make a figure
LEGEND_HEIGHT = 0.75  # of the figure's height, the most a legend may take (centred: an eighth above it for the title)


def legend(fig: Figure, handles: list, title: str | None = None) -> None:
    """The figure's legend outside its right edge, an entry longer than LEGEND_WRAP wrapped at its commas
    (three run folders' names took half a comparison's width, the panels squeezed into the rest), and the
    figure widened by what the legend takes beyond LEGEND_ROOM, so the panels keep their planned width
    (16 runs of four sweeps in two legend columns left the panels under half the figure)."""
    if not handles:
        return
    for h in handles:  # (an entry already on lines of its own is left as it is)
        label = str(h.get_label())
        if len(label) > LEGEND_WRAP and "\n" not in label:
            h.set_label(wrap_label(label, LEGEND_WRAP))
    ncols = 1 if len(handles) <= 12 else 2 if len(handles) <= 30 else 3
    # centred, not upper: an upper legend would sit beside (and under) a long two-line title
    leg = fig.legend(handles=handles, loc="outside right center", fontsize="x-small", title=title,
                     title_fontsize="small", frameon=False, ncols=ncols, alignment="left")
    leg.set_gid("legend")
    box = leg.get_window_extent()  # (text extents only: no drawing)
    width, height = box.width / fig.dpi, box.height / fig.dpi  # (inches)
    if width > LEGEND_ROOM:
        fig.set_figwidth(min(fig.get_figwidth() + width - LEGEND_ROOM, MAX_WIDTH))
    # and taller where the legend is taller than the figure below its title: centred, it ran up into the
    # title (six families' runs, each named by its overrides over three or four lines)
    if height > LEGEND_HEIGHT * fig.get_figheight():
        fig.set_figheight(min(height / LEGEND_HEIGHT, MAX_WIDTH))


LOG_SPACED = 4  # is_log_spaced's growth of the gaps (an even schedule's is 1)


def is_log_spaced(steps: np.ndarray) -> bool:
    """Probe steps like 0, 1, 2, 4, ..., 1000: gaps that grow along the steps (the later half's typical gap
    at least LOG_SPACED times the earlier half's: probe.points' geomspace over 80 steps or more; over 200,
    8x, it was drawn on a linear axis, its first twenty steps slivers at the left edge). One odd gap among
    even ones (a run evaluated every 10 steps that diverged at step 31: 30, 31, 40) is no growth: the axis
    stays linear."""
    s = np.unique(np.asarray(steps, dtype=float))
    if len(s) < 4:
        return False
    gaps = np.diff(s)
    half = len(gaps) // 2
    return float(np.median(gaps[half:])) / max(float(np.median(gaps[:half])), 1e-12) >= LOG_SPACED


def step_axis(ax, steps: np.ndarray, log: bool | None = None) -> None:
    """Log-spaced probe steps on a symlog axis (step 0 stays visible), even ones on a linear axis;
    ticks on whole steps either way. log: the scale, where the caller judged it on more steps than these."""
    log = is_log_spaced(steps) if log is None else log
    if log:
        ax.set_xscale("symlog", linthresh=1.0, linscale=0.5)
        ax.xaxis.set_major_locator(_StepTicks())
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: fmt(v)))  # 1, 10, 100 rather than 10^k
    else:
        ax.xaxis.set_major_locator(MaxNLocator(nbins=6, integer=True))  # "auto" crowds 4-digit steps in a panel
    if len(np.unique(steps)) == 1:  # one logged step: a readable axis around it
        ax.set_xlim(float(np.min(steps)) - 1, float(np.min(steps)) + 1)
    else:  # the axis ends where the probes do
        ax.set_xlim(float(np.min(steps)), float(np.max(steps)))
    ax.set_xlabel("training step" + (" (symlog)" if log else ""))


class _ViewTicks(Locator):
    """A locator whose ticks follow from the range the axis shows (`tick_values` of its view)."""

    def __call__(self):
        return self.tick_values(*self.axis.get_view_interval())


class _StepTicks(_ViewTicks):
    """A symlog step axis's ticks: 0 and the powers of ten it spans, at 1, 2 and 5 times each over up to two
    decades, and 5 times the last power where the axis reaches it (0 to 59 read 0, 1, 10 alone: the 40% of the
    axis past 10, the run's last steps among them, bare; 0 to 600 reads 0, 1, 10, 100, 500)."""

    def tick_values(self, vmin, vmax):
        lo, hi = sorted((float(vmin), float(vmax)))
        if not (hi >= 1 and math.isfinite(hi)):
            return np.array([lo, hi])
        top = math.floor(math.log10(hi) + 1e-9)
        subs = (1, 2, 5) if top < 2 else (1,)
        ticks = [m * 10.0**k for k in range(top + 1) for m in subs]
        ticks = np.array([0.0, *ticks, 5 * 10.0**top])
        return np.unique(ticks[(ticks >= lo - 1e-9) & (ticks <= hi * (1 + 1e-9))])


SHORT_LOG_DECADES = 3  # a log axis over fewer decades than this gets labelled round ticks


def label_short_log_axis(ax, values, which: str = "y") -> None:
    """A log y axis (or x: `which`) over a few decades shows at most one or two powers of ten and their minor
    ticks (8.5e-6 to 1.8e-5: 9e-6 and 1e-5 alone, the upper half bare; 0.055 to 1: 0.1 and 1): ticks at round
    values instead, each labelled, placed on the axis's own range when it is drawn (a reference line at 1
    widens it beyond the values): within a decade as a linear axis places them (1e-5, 1.2e-5, ...), over
    more at 1, 2 and 5 times each power of ten. `values` over SHORT_LOG_DECADES or more keep the log
    axis's own ticks."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    if len(v) and v.max() < 10 ** SHORT_LOG_DECADES * v.min():
        axis = getattr(ax, f"{which}axis")
        axis.set_major_locator(_ShortLogTicks())
        axis.set_major_formatter(_ShortLogLabels())
        axis.set_minor_formatter(NullFormatter())


BARE_END = 0.15  # the share of a short log axis past its first or last round tick beyond which finer ones are added
# (0.25 left 0.67-1 of a ratio axis to 4.7 unlabelled: 21% of it, a line at 0.73 on it unreadable)


class _ShortLogTicks(_ViewTicks):
    """Round ticks for a log axis, by the range it shows: linear steps within a decade, 1-2-5 over up to
    SHORT_LOG_DECADES, powers of ten beyond; finer round ones at an end they leave bare (`_fill_ends`)."""

    def tick_values(self, vmin, vmax):
        lo, hi = sorted((float(vmin), float(vmax)))
        if not (hi > 0 and math.isfinite(hi)):
            return np.array([])
        lo = lo if lo > 0 else hi / 10 ** SHORT_LOG_DECADES
        if hi >= 10 ** SHORT_LOG_DECADES * lo:
            return LogLocator(subs=(1.0,), numticks=30).tick_values(lo, hi)
        if hi < 10 * lo:  # (not 2.5: 1.25, 3.75)
            ticks = MaxNLocator(nbins=8, steps=[1, 2, 5, 10], min_n_ticks=4).tick_values(lo, hi)
            return _fill_ends(ticks, lo, hi, top=False)  # (linear steps are dense at a log axis's top)
        return _fill_ends(LogLocator(subs=(1.0, 2.0, 5.0), numticks=30).tick_values(lo, hi), lo, hi)


def _fill_ends(ticks: np.ndarray, lo: float, hi: float, top: bool = True) -> np.ndarray:
    """`ticks` from lo to hi, and finer round ones at the bottom (and `top`) where they leave over BARE_END of
    the log axis bare (its lower part, wide on it, read no value: 0.22-0.4; 1-2-5 ticks left 2-4.8 of an axis
    from 0.45, the curves on it, bare), each value once (1.4 was drawn twice: the finer steps'
    1.4000000000000002 beside 1.4)."""
    ticks = ticks[(ticks >= lo * (1 - 1e-9)) & (ticks <= hi * (1 + 1e-9))]
    span = math.log(hi / lo)
    if len(ticks) and math.log(ticks[0] / lo) > BARE_END * span:
        ticks = np.r_[_finer(lo, ticks[0], ticks[0], FINER_GAP * span)[::-1], ticks]
    if top and len(ticks) and math.log(hi / ticks[-1]) > BARE_END * span:
        ticks = np.r_[ticks, _finer(ticks[-1], hi, ticks[-1], FINER_GAP * span)]
    return ticks


FINER_GAP = 0.06  # the share of the log axis between a finer tick and the next at least (7e-05, 8e-05, 9e-05: 3.5%)


def _finer(lo: float, hi: float, tick: float, gap: float) -> np.ndarray:
    """Round values from lo to hi on a finer step, out from `tick` (lo or hi), each `gap` or more (log) from the
    one before (not 174 beside 175)."""
    kept = [tick]
    for v in sorted(MaxNLocator(nbins=3, steps=[1, 2, 5, 10]).tick_values(lo, hi), key=lambda v: abs(v - tick)):
        if lo <= v <= hi and abs(math.log(v / kept[-1])) >= gap:
            kept.append(v)
    return np.array(kept[1:])


class _ShortLogLabels(Formatter):
    """Each tick as gradflow's numbers read (0.2, 1.005, 2e-05), or as powers of ten where the axis spans
    SHORT_LOG_DECADES or more (_ShortLogTicks puts them there)."""

    def __init__(self):
        self.sci = LogFormatterSciNotation()

    def __call__(self, x, pos=None):
        lo, hi = sorted(self.axis.get_view_interval())
        if lo > 0 and hi >= 10 ** SHORT_LOG_DECADES * lo:
            self.sci.set_axis(self.axis)
            return self.sci(x, pos)
        return fmt(x, 4)  # (1.005 whole)


MINOR_LABEL_DECADES = 2  # lines within fewer decades than this on a log axis of more get labels between its powers
WITHIN_MARGIN = 1.5  # how far beyond the lines' values `label_minor_within` labels (3 above lines up to 2.3)


def label_minor_within(ax, values) -> None:
    """Where the lines a figure is about (`values`: the runs that stay finite, beside one that explodes) lie
    within fewer than MINOR_LABEL_DECADES decades of a log y axis that spans more (SHORT_LOG_DECADES or
    over: labelled at its powers of ten alone), label its ticks at 2 and 5 times a power of ten on and next
    to them (up to WITHIN_MARGIN beyond), or at 3 times one where the panel's height, when drawn, leaves 2
    and 5 no room: a loss from 0.3 to 2.3 under an axis cut at 2300 read "10^0" alone. An axis that
    `label_short_log_axis` labels at round values already is left as it is."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    if not len(v) or v.max() >= 10 ** MINOR_LABEL_DECADES * v.min() or \
            isinstance(ax.yaxis.get_major_locator(), _ShortLogTicks):
        return
    lo, hi = float(v.min()) / WITHIN_MARGIN, float(v.max()) * WITHIN_MARGIN
    ticks = _WithinTicks(ax.yaxis.get_minor_locator(), lo, hi)
    ax.yaxis.set_minor_locator(ticks)
    ax.yaxis.set_minor_formatter(_WithinLabels(ticks))


def _within(lo: float, hi: float, subs: tuple) -> np.ndarray:
    """The values m * 10^k (m in `subs`) from lo to hi."""
    k = np.arange(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
    out = (np.asarray(subs, dtype=float)[:, None] * 10.0 ** k[None, :]).ravel()
    return np.sort(out[(out >= lo * (1 - 1e-9)) & (out <= hi * (1 + 1e-9))])


class _WithinTicks(Locator):
    """The axis's own minor ticks, and from lo to hi (the lines' values and WITHIN_MARGIN beyond) ticks at 2
    and 5 times a power of ten, or at 3 times one where those leave no room between labels, judged on the
    axis's height when drawn; none where neither has room (`chosen`, which `_WithinLabels` labels). A log
    axis over many decades has no minor ticks of its own."""

    def __init__(self, base: Locator, lo: float, hi: float):
        self.base, self.lo, self.hi = base, lo, hi
        self.chosen: np.ndarray = np.array([])

    def set_axis(self, axis):
        super().set_axis(axis)
        self.base.set_axis(axis)

    def __call__(self):
        self.chosen = self._choose()
        return np.union1d(np.asarray(self.base(), dtype=float), self.chosen)

    def tick_values(self, vmin, vmax):
        return self.base.tick_values(vmin, vmax)

    def _choose(self) -> np.ndarray:
        from matplotlib import rcParams
        from matplotlib.font_manager import FontProperties

        vmin, vmax = sorted(self.axis.get_view_interval())
        if not (vmin > 0 and vmax > vmin and math.isfinite(vmax)):
            return np.array([])
        per_decade = self.axis.axes.bbox.height / math.log10(vmax / vmin)  # pixels
        size = FontProperties(size=rcParams[f"{self.axis.axis_name}tick.labelsize"]).get_size_in_points()
        room = 1.1 * size * self.axis.get_figure(root=True).dpi / 72.0  # a label's height, in pixels
        powers = _within(self.lo / 10, self.hi * 10, (1,))  # (labelled by the axis itself)
        for subs in ((2, 5), (3,)):
            mine = _within(self.lo, self.hi, subs)
            if len(mine) and per_decade * np.diff(np.log10(np.union1d(mine, powers))).min() >= room:
                return mine
        return np.array([])


class _WithinLabels(Formatter):
    """`_WithinTicks`' chosen ticks labelled as gradflow's numbers read (0.3, 2); its other ticks bare."""

    def __init__(self, ticks: _WithinTicks):
        self.ticks = ticks

    def __call__(self, x, pos=None):
        return fmt(x, 4) if np.isclose(self.ticks.chosen, x, rtol=1e-9).any() else ""


def spans_decades(values: np.ndarray, decades: float = 2.0) -> bool:
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    return len(v) > 1 and v.max() / v.min() >= 10 ** decades


MOST_BLOCK_LABELS = 12  # more blocks than this: every k-th one named, each still ticked
BLOCK_LABEL_CHARS = 72  # characters of block names an axis holds side by side (at the default figure width)


def block_labels(names: list[str]) -> list[str]:
    """Block names as an axis shows them: without the leading parts every name shares but the last
    (a user's GPT's transformer.h.0, transformer.h.1, ... ran together as "transformertransformer...";
    they read h.0, h.1, ...); gradflow's own b0, s1.b2 as they are."""
    return drop_shared_parts(names, ".", keep=1)


class LayerLocator(MaxNLocator):
    """Whole probe-point indices at 1, 2 or 5 times a power of ten apart, the last index in view ticked
    too: the output head, which the axis label names (a 20-layer net's axis read 0, 3, ..., 18, and its
    label `20 = output head`)."""

    def __init__(self):
        super().__init__(integer=True, min_n_ticks=1, steps=[1, 2, 5, 10])

    def __call__(self):
        lo, hi = sorted(self.axis.get_view_interval())
        ticks = [t for t in super().__call__() if lo - 1e-9 <= t <= hi + 1e-9]
        last = math.floor(hi + 1e-9)
        if ticks and last >= lo and last not in ticks:
            ticks.append(last)
        return ticks


def tick_blocks(axis, marked) -> None:
    """Tick a probe-point axis (ax.xaxis or ax.yaxis) at each block's first point (labels.blocks), named
    b0, b1, ... (`block_labels`); where the blocks are many, or their names long, every k-th is named and
    the others keep an unnamed tick."""
    names = block_labels(marked.names)
    most = min(MOST_BLOCK_LABELS, max(1, BLOCK_LABEL_CHARS // (max(map(len, names), default=1) + 2)))
    k = math.ceil(len(marked.starts) / most)
    axis.set_ticks(marked.starts[::k], names[::k])
    axis.set_ticks(marked.starts, minor=True)


def spread_apart(wanted: Sequence[float], gap: float, lo: float = -math.inf, hi: float = math.inf) -> np.ndarray:
    """Positions for labels that want to sit at `wanted` (sorted ascending: in display pixels, say) at least
    `gap` apart, in the same order, each as close to its own as the others let it (least squares: pool adjacent
    violators), within [lo, hi] where they fit: a label alone stays where it wants; two that collide move apart
    evenly about their middle, a crowded block of n spread at most (n - 1) / 2 gaps either side of it.
    Stacked upwards from the lowest instead, the top label of three lines ending a few pixels apart stood a
    decade above its own line (gradnorm's shares)."""
    y = np.asarray(wanted, dtype=float)
    if len(y) == 0:
        return y
    # with z_i = c_i - i * gap the gaps are z non-decreasing: the isotonic fit of y_i - i * gap
    z = y - gap * np.arange(len(y))
    blocks: list[list[float]] = []  # [mean, size] of each pooled run of z
    for v in z:
        blocks.append([v, 1.0])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            (m1, n1), (m2, n2) = blocks.pop(-2), blocks.pop()
            blocks.append([(m1 * n1 + m2 * n2) / (n1 + n2), n1 + n2])
    fit = np.concatenate([np.full(int(n), m) for m, n in blocks])
    # (the bounds on c are bounds on z common to all, [lo, hi - (n - 1) gap]: the clipped fit is the best within)
    top = hi - gap * (len(y) - 1)
    fit = np.clip(fit, lo, max(lo, top)) if top >= lo else np.full_like(fit, lo)
    return fit + gap * np.arange(len(y))


READABLE_CONTRAST = 4.5  # a text colour's contrast against white at least (WCAG's for small text)


def luminance(color: Any) -> float:
    """A colour's relative luminance (WCAG's: sRGB made linear, then weighted), 0 black to 1 white."""
    c = to_rgba_array([color])[0, :3]
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    return float(lin @ [0.2126, 0.7152, 0.0722])


def readable(color: Any) -> tuple[float, float, float]:
    """`color` as text on white: itself where it reads, else darkened towards black until it does (viridis's
    pale yellow-green end, tab10's orange), so a label keeps its line's hue."""
    rgb = to_rgba_array([color])[0, :3]

    most = 1.05 / READABLE_CONTRAST - 0.05  # the highest luminance that reads
    scale, step = 1.0, 0.5
    if luminance(rgb) > most:
        scale = 0.0
        for _ in range(20):  # (the largest scale that reads, by bisection)
            if luminance(rgb * (scale + step)) <= most:
                scale += step
            step /= 2
    return tuple(float(v) for v in rgb * scale)
