"""`gradflow ls`: one row per run, readable at 80 columns and when piped."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Optional

import numpy as np
import pandas as pd
import typer
from rich import box
from rich.table import Table

from gradflow.cli.app import app
from gradflow.cli.console import console, user_errors
from gradflow.errors import GradflowError

# result columns in display order, each with its header and priority (0 shows first when space is short)
RESULT_COLUMNS = {
    "status": ("status", 1), "steps_done": ("steps", 6), "wall_time": ("time s", 6),
    "final.train_loss": ("train loss", 2), "final.train_acc": ("train acc", 5),
    "final.test_loss": ("test loss", 5), "final.test_acc": ("test acc", 2),
    "grad_ratio.init": ("ratio init", 3), "grad_ratio.final": ("ratio end", 4),
    "chi1_measured": ("chi1 meas", 3), "chi1_layers": ("chi1 fit", 4), "chi1_theory": ("chi1 theory", 3),
}
LS_COLUMNS = list(RESULT_COLUMNS)  # what --csv / --json give besides the run and its swept keys
KEY_PRIORITY, STUDY_PRIORITY = 0, 1  # swept keys always show; asked-for study columns next
SEP = 3  # characters between two columns of the SIMPLE_HEAD table
NOTES = {"grad_ratio.init": "ratio = ‖∂L/∂W‖ first layer / last layer",
         "chi1_layers": "chi1 fit = layers fitted (first-last); q*: inputs at the fixed point; "
                        "!: still in the length map's transient (see below)",
         "rate": "rate = per-layer growth factor of the quantity² towards the input (chi1 convention)"}


def fmt_cell(x: Any, digits: int = 4) -> str:
    """One table cell: integers whole, floats to `digits` significant digits, missing as '-'."""
    if x is None or (isinstance(x, (float, np.floating)) and math.isnan(x)):
        return "-"
    if isinstance(x, (bool, np.bool_)):
        return str(bool(x)).lower()
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    if isinstance(x, (float, np.floating)):
        return str(int(x)) if float(x).is_integer() and abs(x) < 1e9 else f"{float(x):.{digits}g}"
    return str(x)


def swept_columns(df: pd.DataFrame, keys: list[str]) -> list[str]:
    """Override keys as table columns: a swept config group (init=a,b) is its `name` key (init.name)."""
    out = []
    for k in keys:
        col = k if k in df.columns else f"{k}.name" if f"{k}.name" in df.columns else None
        if col and col not in out:
            out.append(col)
    return sorted(out, key=list(df.columns).index)  # the order ls sorts by


def abbreviate(keys: list[str]) -> dict[str, str]:
    """Each key by its shortest distinguishing tail: model.depth -> depth, init.name -> init, and
    model.dim / data.dim stay whole when both are shown."""
    parts = {k: [p for p in k.split(".")] for k in keys}
    for k, p in parts.items():
        if len(p) > 1 and p[-1] == "name":
            parts[k] = p[:-1]
    out = {}
    for k, p in parts.items():
        for n in range(1, len(p) + 1):
            tail = ".".join(p[-n:])
            if sum(".".join(q[-n:]) == tail for q in parts.values()) == 1 or n == len(p):
                out[k] = tail
                break
    return out


def _numeric(s: pd.Series) -> pd.Series | None:
    """The column as numbers when every present value is one (so 5 < 10 < 20), else None."""
    num = pd.to_numeric(s, errors="coerce")
    present = s.notna() & (s.astype(str) != "")
    return num if num[present].notna().all() and not s.map(lambda v: isinstance(v, bool)).any() else None


def sort_runs(df: pd.DataFrame, keys: list[str], descending: bool = False) -> pd.DataFrame:
    """Sort by `keys` in turn, numbers as numbers, missing values last."""
    order = df
    for k in reversed(keys):
        num = _numeric(order[k])
        col = num if num is not None else order[k].astype(str)
        order = order.iloc[np.argsort(_rank(col, descending), kind="stable")]
    return order


def _rank(col: pd.Series, descending: bool) -> np.ndarray:
    ranks = col.rank(method="dense", ascending=not descending, na_option="bottom")
    return ranks.to_numpy()


def runs_view(path: Path, where: list[str] | None = None, sort: str | None = None,
              rates: list[str] | None = None, steps: list[str] | None = None) -> tuple[pd.DataFrame, list[str]]:
    """The runs table filtered and sorted as `ls` shows it, and the swept keys."""
    from gradflow.plots.keys import swept_keys  # pandas only: ls stays matplotlib-free
    from gradflow.summary import runs_table

    df = runs_table(path, rates or (), steps or ())
    swept = swept_keys(df, exclude=study_columns(df))  # ls shows seed as a swept column too
    for cond in where or []:
        if "=" not in cond:
            raise GradflowError(f"--where {cond!r} must be KEY=VALUE")
        key, value = cond.split("=", 1)
        if key not in df.columns:
            raise GradflowError(f"--where key {key!r} is not a column; choices: {', '.join(sorted(df.columns))}")
        df = df[df[key].astype(str) == value]
    if sort:
        descending = sort.startswith("-")
        key = sort.lstrip("-")
        short = {v: k for k, v in abbreviate(swept).items()}
        key = key if key in df.columns else short.get(key, key)
        if key not in df.columns:
            shown = swept + [c for c in LS_COLUMNS if c in df.columns] + study_columns(df)
            raise GradflowError(f"--sort {sort!r} is not a column; choices: {', '.join(shown)} (-KEY: descending)")
        df = sort_runs(df, [key], descending)
    else:
        df = sort_runs(df, swept or ["run"])
    return df, swept


def study_columns(df: pd.DataFrame) -> list[str]:
    """The columns --rate and --steps-to added, in the order asked."""
    return [c for c in df.columns if isinstance(c, str) and c.startswith(("rate.", "steps_to."))]


@dataclass
class Column:
    key: str
    label: str
    priority: int
    cells: list[str]
    numeric: bool

    one_line: bool = False  # headers on one line when the table fits that way

    @property
    def width(self) -> int:
        label = [len(self.label)] if self.one_line else [len(w) for w in self.label.split()]
        return max(label + [len(c) for c in self.cells])

    def header(self) -> str:
        """The label on as many lines as its width needs, broken only between words."""
        if self.one_line:
            return self.label
        lines: list[str] = []
        for word in self.label.split():
            if lines and len(lines[-1]) + 1 + len(word) <= self.width:
                lines[-1] += " " + word
            else:
                lines.append(word)
        return "\n".join(lines)


def _cells(df: pd.DataFrame, key: str) -> list[str]:
    if key == "chi1_layers":
        return [_fit_cell(r) for _, r in df.iterrows()]
    return [fmt_cell(v) for v in df[key]]


def _fit_cell(row: pd.Series) -> str:
    from gradflow.summary import TRANSIENT_TOL

    span = row.get("chi1_layers")
    if not isinstance(span, str) or not span:
        return "-"
    lo, hi = map(int, span.split("-"))
    cell = f"{hi - lo + 1} ({span})"
    if row.get("start_qstar") is True:
        cell += " q*"
    bias = row.get("chi1_transient")
    if isinstance(bias, float) and abs(bias) > TRANSIENT_TOL:
        cell += "!"
    return cell


def table_columns(df: pd.DataFrame, swept: list[str]) -> list[Column]:
    """Every column ls can show for `df`, in display order."""
    names = abbreviate(swept)
    cols = [Column("run", "run", KEY_PRIORITY, list(df["run"].astype(str)), False)] if not swept else []
    for k in swept:
        cells = _cells(df, k)
        cols.append(Column(k, names[k], KEY_PRIORITY, cells, _numeric(df[k]) is not None))
    results = [(k, *v) for k, v in RESULT_COLUMNS.items() if k in df.columns
               and not (k.startswith("chi1") and df[k].replace("", np.nan).isna().all())]
    for k, label, priority in [r for r in results if r[0] == "status"]:
        cols.append(Column(k, label, priority, _cells(df, k), False))
    for k in study_columns(df):
        if k.startswith("rate.") and k.endswith(".layers"):
            label, numeric, priority = f"{k[5:-7]} fit", False, STUDY_PRIORITY + 1
        elif k.startswith("rate."):
            label, numeric, priority = f"{k[5:]} rate", True, STUDY_PRIORITY
        else:
            label, numeric, priority = f"steps to {k[9:]}", True, STUDY_PRIORITY
        cols.append(Column(k, label, priority, _cells(df, k), numeric))
    for k, label, priority in [r for r in results if r[0] != "status"]:
        cols.append(Column(k, label, priority, _cells(df, k), k != "chi1_layers"))
    return cols


def choose(columns: list[Column], width: int | None) -> tuple[list[Column], list[Column]]:
    """The columns that fit in `width` characters (all when None), taken by priority, then in display
    order; and those left out."""
    if width is None:
        return columns, []
    keep: set[int] = set()
    used = -SEP
    for i in sorted(range(len(columns)), key=lambda i: columns[i].priority):
        need = columns[i].width + SEP
        if columns[i].priority == KEY_PRIORITY or used + need <= width:
            keep.add(i)
            used += need
    return [c for i, c in enumerate(columns) if i in keep], [c for i, c in enumerate(columns) if i not in keep]


def show_runs(df: pd.DataFrame, swept: list[str], title: str = "", skipped: int | None = None,
              wide: bool = False) -> None:
    """The runs table: swept values, then status, finals, gradient ratios and chi_1, as many as fit."""
    swept = swept_columns(df, swept)
    shown, hidden = choose(table_columns(df, swept), None if wide else console.width)
    if wide or sum(max(len(c.label), c.width) + SEP for c in shown) - SEP <= console.width:
        for c in shown:
            c.one_line = True
    table = Table(title=title or None, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False,
                  pad_edge=False, padding=(0, 1))
    for c in shown:
        table.add_column(c.header(), justify="right" if c.numeric else "left", no_wrap=True, min_width=c.width)
    colours = {"ok": "green", "diverged": "yellow", "failed": "red", "running": "cyan"}
    for i in range(len(df)):
        row = []
        for c in shown:
            cell = c.cells[i]
            row.append(f"[{colours.get(cell, 'white')}]{cell}[/]" if c.key == "status" else cell)
        table.add_row(*row)
    console.print(table, width=None if not wide else 10**4, soft_wrap=wide, highlight=False)
    keys = [c.key for c in shown]
    notes = [NOTES[k] for k in NOTES if k in keys]
    if any(k.startswith("rate.") for k in keys):
        notes.append(NOTES["rate"])
    if hidden:
        notes.append(f"not shown ({console.width} columns): {', '.join(c.label for c in hidden)}; --wide shows all")
    for n in notes:
        console.print(n, highlight=False)
    _warn_transient(df)
    counts = df["status"].value_counts().to_dict() if "status" in df else {}
    kinds = ("ok", "diverged", "failed", "running")
    line = "  ".join(f"{k}: {counts.get(k, 0)}" for k in kinds if k != "running" or counts.get(k))
    console.print(line + (f"  skipped: {skipped}" if skipped is not None else ""), highlight=False)


def _warn_transient(df: pd.DataFrame) -> None:
    from gradflow.summary import TRANSIENT_TOL

    if "chi1_transient" not in df:
        return
    bias = pd.to_numeric(df["chi1_transient"], errors="coerce")
    off = df[bias.abs() > TRANSIENT_TOL]
    if len(off):
        worst = float(bias[off.index].abs().max())
        console.print(f"[yellow]warning:[/] the chi1 fit of {len(off)} run(s) starts in the length map's transient "
                      f"(mean-field theory puts the fit up to {worst:.1%} off chi1 at q*); start at the fixed point "
                      f"with data.scale=qstar or fit deeper layers", highlight=False)


def records(df: pd.DataFrame) -> list[dict]:
    """JSON-ready rows at full precision: NaN as null, numpy scalars as Python numbers."""
    def clean(v):
        if isinstance(v, np.generic):
            v = v.item()
        if isinstance(v, float) and not math.isfinite(v):
            return None
        return v

    return [{k: clean(v) for k, v in row.items()} for row in df.to_dict(orient="records")]


@app.command("ls")
@user_errors
def ls(
    path: Annotated[Path, typer.Argument(help="A run folder, a sweep folder, or a folder of sweeps.")],
    where: Annotated[Optional[list[str]], typer.Option(help="Keep rows with KEY=VALUE (repeatable).")] = None,
    sort: Annotated[Optional[str], typer.Option(
        help="Sort by this column (numbers as numbers), e.g. final.test_acc or depth; -KEY sorts descending.")] = None,
    steps_to: Annotated[Optional[list[str]], typer.Option(
        "--steps-to", help="First evaluation step where a metric reaches a threshold, e.g. 'train_loss<=1.0' "
                           "or 'test_acc>=0.9' (repeatable).")] = None,
    rate: Annotated[Optional[list[str]], typer.Option(
        help="Per-layer growth factor of a probed quantity at step 0, e.g. grad_norm or signal_norm, "
             "with the fitted layers (repeatable).")] = None,
    wide: Annotated[bool, typer.Option("--wide", help="Show every column, however wide.")] = False,
    csv: Annotated[bool, typer.Option("--csv", help="Print CSV instead of a table.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON records (full precision) instead of a table.")]
    = False,
) -> None:
    """One row per run: swept values, status, final metrics, gradient ratios and chi_1 (measured and theory)."""
    df, swept = runs_view(path, where, sort, rate, steps_to)
    cols = ["run"] + swept + [c for c in LS_COLUMNS if c in df.columns] + \
        [c for c in ("start_qstar", "chi1_transient") if c in df.columns] + study_columns(df)
    if csv:
        console.file.write(df[cols].to_csv(index=False))
    elif as_json:
        console.file.write(json.dumps(records(df[cols]), indent=1) + "\n")
    else:
        show_runs(df, swept, title=str(path), wide=wide)
