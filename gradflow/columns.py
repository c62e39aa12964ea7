"""The runs table as `gradflow ls` and the report page show it: which columns, in what order and at what
priority when the terminal is narrow, their cells and headers, how runs sort, and the notes under the
table. The numbers themselves come from `gradflow.summary` (one row per run); this module only shows them.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from gradflow import store
from gradflow.choices import RECURRENT
from gradflow.errors import GradflowError, ellipsize, shorten
from gradflow.fmt import fmt
from gradflow.keys import abbreviate, full_key, is_missing, swept_keys
from gradflow.probes.quantities import QUANTITIES
from gradflow.summary import (BLOCKS, DECLARED, DEPTH_KEY, MODULE_DEPTH_NOTE, RESIDUAL_STREAM, STUDY, TRANSIENT_TOL,
                              UNREADABLE, module_depth_rows, run_folders, runs_table, study_of)
from gradflow.theory import FIT_TRIM, predict, q_zero_limit


def listing(path: str | Path | list[Path], rates: Iterable[str] = (), steps: Iterable[str] = ()
            ) -> tuple[pd.DataFrame, list[str]]:
    """The runs table sorted by its swept keys (numbers as numbers), and those keys (seed included). `path`:
    a folder, or several (`ls A B`), listed as the folder they are all under would be with only their runs
    in it (`store.runs_of`), each path's runs together in the order given."""
    paths = [Path(p) for p in path] if isinstance(path, (list, tuple)) else [Path(path)]
    base, listed = store.runs_of(paths)
    df = runs_table(base, rates, steps, listed=listed)
    swept = swept_keys(df, exclude=study_columns(df), implied=True)  # ls names the implied ones itself
    # a key a sweep's spec sweeps (the folder's, or one's under it) stays a key where the runs done so far
    # share one value of it (a sweep cut short after its depth-2 runs listed them without their depth)
    specs = store.specs_of(paths)
    declared = {store.relative_folder(folder, base):  # (as run_folders names them)
                [k for k in (full_key(df, k) for k in spec.get("swept") or [] if isinstance(k, str)) if k]
                for folder, spec in specs if spec is not None}
    swept += [k for k in dict.fromkeys(k for keys in declared.values() for k in keys) if k not in swept]
    if any(store.PRESET_KEY in keys for keys in declared.values()):  # a sweep over presets: theirs is the key the
        swept = [store.PRESET_KEY] + [k for k in swept if k != store.PRESET_KEY]  # others follow (depth, data, ...)
    folders = run_folders(df).to_numpy()
    # in a folder of studies, by the keys in the order the table shows them (a study's rows went by seed
    # first, another's by lr, under a first column of depth)
    df = sort_runs(df, (axes_first(df, swept, folders) if len(set(folders)) > 1 else swept) or [store.RUN])
    df = df.iloc[np.argsort(run_folders(df).to_numpy(), kind="stable")]  # each study's runs together
    if len(paths) > 1:  # (then each path's, in the order given)
        order = df[store.PATH].astype(str).map(lambda q: min(i for i, p in enumerate(paths)
                                                               if Path(q).is_relative_to(p)))
        df = df.iloc[np.argsort(order.to_numpy(), kind="stable")]
    df.attrs[DECLARED] = declared
    df.attrs[UNREADABLE] = [folder / store.SWEEP_FILE for folder, spec in specs if spec is None]
    return df, swept


# --- the runs table as `ls` and the report page show it -------------------------------------------
# result columns in display order, each with its header and priority (0 shows first when space is short)
RESULT_COLUMNS = {
    "status": ("status", 1), "steps_done": ("steps done", 6), "diverged_step": ("diverged at", 5),
    "wall_time": ("time s", 6),
    "final.train_loss": ("train loss", 2), "final.train_acc": ("train acc", 5),
    "final.test_loss": ("test loss", 5), "final.test_acc": ("test acc", 2),
    "clipped": ("clipped", 3),
    # (the signal's ratio before the weight gradient's: where a net vanishes or explodes, the weight gradient's
    # can read level, its activations shrinking or growing the other way: 0.16 beside a signal ratio of 905)
    "grad_ratio.init": ("ratio init", 3), "signal_ratio.init": ("signal ratio", 2.9),
    "grad_ratio.final": ("ratio end", 4),
    "chi1_measured": ("chi1 meas", 3), "chi1_layers": ("chi1 fit", 4), "chi1_theory": ("chi1 theory", 3),
}
LS_COLUMNS = list(RESULT_COLUMNS)  # what --csv / --json give besides the run and its swept keys
KEY_PRIORITY, STUDY_PRIORITY = 0, 1  # swept keys always show; asked-for study columns next
NOTES = {"grad_ratio.init": f"ratio = {QUANTITIES['grad_norm'].symbol} first layer / last layer",
         "signal_ratio.init": f"signal ratio = {QUANTITIES['signal_norm'].symbol} first layer / last layer, at init",
         "chi1_layers": "chi1 fit = layers fitted (first-last)",
         "clipped": "clipped = share of updates whose gradient was clipped (train.grad_clip, train.clip_value); "
                    "- where a run does not clip, or was recorded before the share was kept",
         "rate": "rate = per-layer growth factor of the quantity² towards the input (chi1 convention)"}
# the marks a chi1 fit cell may carry (_fit_cell), each explained under the table where one is shown
FIT_MARKS = {" q*": "q*: inputs at the fixed point", "!": "!: still in the length map's transient (see below)"}


def _no_fit_at_all(df: pd.DataFrame | None, keys: list[str]) -> bool:
    """Whether `df`'s runs were probed and none has enough layers with a signal for a chi1 fit (so no column):
    MLPs too shallow, or a user's model (a Recorder's) whose points mostly have no signal of their own."""
    if df is None or "chi1_measured" in keys or not {"chi1_measured", "signal_ratio.init"} <= set(df):
        return False
    recurrent = "model.name" in df and df["model.name"].isin(RECURRENT).any()  # (time steps: no
    return bool(not recurrent and df["chi1_measured"].isna().all()  # per-layer fit to expect)
                and df["signal_ratio.init"].notna().any())


def _recurrent(df: pd.DataFrame) -> bool:
    """Whether every run is of gradflow's recurrent families (which always have model.recurrent_init: a Recorder's
    run of a user's model named gru is not)."""
    return {"model.name", "model.recurrent_init"} <= set(df.columns) and len(df) > 0 and bool(
        (df["model.name"].isin(RECURRENT) & df["model.recurrent_init"].notna()).all())


RECURRENT_WORDS = {"signal_ratio.init": ("first layer / last layer", "first time step / head"),
                   "chi1_layers": ("layers fitted", "time steps fitted")}


def in_time(key: str, text: str, df: pd.DataFrame | None) -> str:
    """The note `text` on column `key`, said in time steps where every run of `df` is a recurrent net's (its
    points are time steps and the head, as its figures say)."""
    if df is not None and key in RECURRENT_WORDS and _recurrent(df):
        return text.replace(*RECURRENT_WORDS[key])
    return text


def column_notes(columns: list["Column"], df: pd.DataFrame | None = None) -> list[str]:
    """The notes under a table of `columns` (ls, the report page) of the runs `df`: what the ratio and the
    chi1 fit mean, each mark the fit's cells carry, the rate's convention, and that a transformer's chi1 and
    rates are per block (said wherever they are shown, the fit column that says so or not)."""
    keys = [c.key for c in columns]
    # (ratio end alone, a run first probed after step 0, is the same ratio: it went unexplained)
    explained = {k: NOTES[k] for k in NOTES if k in keys or k == "grad_ratio.init" and "grad_ratio.final" in keys}
    if "chi1_layers" in explained:  # the fit marks the shown cells carry, each explained
        cells = columns[keys.index("chi1_layers")].cells
        blocks, spans = any(BLOCKS in c for c in cells), any(re.match(r"\d+-\d+", c) for c in cells)
        if blocks:  # (a transformer's reads "4 blocks, resid": not a first-last span)
            explained["chi1_layers"] = ("chi1 fit = layers fitted (first-last), or a net of blocks' blocks and the "
                                        "point fitted" if spans else "chi1 fit = blocks fitted and the point fitted")
        explained["chi1_layers"] += "".join(f"; {text}" for mark, text in FIT_MARKS.items()
                                            if any(mark in cell for cell in cells))
    explained = {k: in_time(k, text, df) for k, text in explained.items()}
    notes = list(explained.values())
    if "chi1_theory" in keys and any(c.endswith(LIMIT_MARK) for c in columns[keys.index("chi1_theory")].cells):
        notes.append(LIMIT_NOTE)
    if df is not None and DEPTH_KEY in keys and module_depth_rows(df).any():  # (not set by the run: read)
        notes.append(MODULE_DEPTH_NOTE)
    # (a shallow net, say depth 5; not a run that failed before its first probe, whose every result reads -)
    cells = columns[keys.index("chi1_measured")].cells if "chi1_measured" in keys else []
    probed = df["signal_ratio.init"].notna().to_numpy() if df is not None and "signal_ratio.init" in df else \
        [True] * len(cells)
    if any(c == "-" and p for c, p in zip(cells, probed)):
        notes.append(f"chi1 meas -: no fit, fewer than 3 layers with a signal between the {FIT_TRIM} left out at "
                     f"each end (for a net of blocks, fewer than 3 blocks)")
    elif _no_fit_at_all(df, keys):  # (a result no run has is no column: it went without a word)
        names = set(df["model.name"]) if "model.name" in df else set()
        if names and names <= {"transformer"}:  # (its fit is per block, with nothing left out)
            notes.append("no chi1 meas: no run has 3 blocks to fit its growth per block over")
        else:
            notes.append(f"no chi1 meas: no run has 3 layers with a signal between the {FIT_TRIM} left out at each "
                         f"end" + (f" (an MLP of depth {2 * FIT_TRIM + 2} or more has)" if names <= {"mlp", "cnn"} else
                                   f": {2 * FIT_TRIM + 3} probe points or more with a back-propagated signal, "
                                   f"or 3 blocks in a net of blocks"))
    if any(k.startswith("rate.") for k in keys):
        per_block = df is not None and any(BLOCKS in str(v) for k in df.columns if k.startswith("rate.")
                                           and k.endswith(".layers") for v in df[k])
        notes.append(NOTES["rate"].replace("per-layer growth factor", "growth factor per layer (per block where "
                                           "its fit reads N blocks)") if per_block else NOTES["rate"])
    if any(k.startswith("rate.") and not k.endswith(".layers") and "-" in c.cells for k, c in zip(keys, columns)):
        notes.append(f"rate -: no fit, fewer than 3 layers with the quantity between the {FIT_TRIM} left out at "
                     f"each end (for a net of blocks, fewer than 3 blocks)")
    fits = [k for k in keys if k in ("chi1_measured", "chi1_layers") or k.startswith("rate.")]
    fitted = [df[k] for k in ("chi1_layers", *(f"{k}.layers" for k in fits if k.startswith("rate.")))
              if df is not None and k in df]
    ours = df["model.name"].eq("transformer").to_numpy() if df is not None and "model.name" in df else None
    by_block = [(str(v), bool(ours is not None and ours[i])) for col in (fitted if fits else [])
                for i, v in enumerate(col) if BLOCKS in str(v)]
    if any(tf for _, tf in by_block):
        notes.append(f"a transformer's chi1 meas and rates are per block, not per layer: fitted at each block's "
                     f"residual stream, b#.{RESIDUAL_STREAM} (its fit reads N {BLOCKS}, {RESIDUAL_STREAM}), or, "
                     f"for a quantity the stream lacks (grad_norm), at each block's last point (N {BLOCKS}, mlp.out)")
    points = list(dict.fromkeys(v.split(", ", 1)[-1] for v, tf in by_block if not tf))
    if points:  # (a user's model: model=custom, a Recorder's)
        notes.append(f"a net of blocks of your own: its chi1 meas and rates are per block, not per layer: fitted at "
                     f"the same point of each block, its last (here {', '.join(points)}; its fit reads N {BLOCKS}, "
                     f"POINT)")
    if df is not None and any(k.endswith("_acc") for k in keys):
        from gradflow.metrics import REGRESSION_TOLERANCE, is_regression

        if any(is_regression(*t) for t in df.reindex(columns=["data.name", "data.task"]).itertuples(index=False)):
            notes.append(f"acc of a regression run (data.task=regression, data=adding): the share of predictions "
                         f"within {REGRESSION_TOLERANCE:g} of the target")
    return notes


def transient_warning(df: pd.DataFrame) -> str:
    """Why some runs' chi1 fits are off, or "": they start in the length map's transient (chi1_transient)."""
    if "chi1_transient" not in df:
        return ""
    bias = pd.to_numeric(df["chi1_transient"], errors="coerce")
    off = df[bias.abs() > TRANSIENT_TOL]
    if not len(off):
        return ""
    worst = float(bias[off.index].abs().max())
    fits = "1 run's chi1 fit starts" if len(off) == 1 else f"{len(off)} runs' chi1 fits start"
    # (a q* of 0, LIMIT_MARK's runs, is no point to start at: its length approaches it as ~1/l)
    fix = ("fit deeper layers (q* = 0: no input starts there)" if all(limit_marks(off))
           else "start at the fixed point with data.scale=qstar or fit deeper layers")
    return (f"warning: {fits} in the length map's transient (mean-field theory puts the fit up to "
            f"{worst:.1%} off chi1 at q*); {fix}")


def stale_note(df: pd.DataFrame, folder: str) -> str | None:
    """The note under a table (ls's, the report page's) of the stale runs among others, `folder` the one to
    clean: a point the grid dropped, or one whose settings the spec changed ("not in its grid now" said the
    first of a run whose point is there still); None where none is, or every run is (a shrunk grid lists its
    old points between its live ones)."""
    n = int((df[store.STATUS] == store.STALE).sum()) if store.STATUS in df else 0
    if not n or n == len(df):
        return None
    return (f"stale: {n} run{'s' * (n != 1)} of an earlier spec of the sweep (points it no longer has, or settings "
            f"it changed); --where status=ok leaves them out, gradflow clean {folder} --stale deletes them")


FLAGGED = "*"  # marks the status of a run that ended ok but is flagged (store.FLAGS): "ok*"


def mark_flagged(df: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The runs with each flagged run's status as "ok*", never read as a success (ls, report, compare),
    and what the mark stands for, a reason each with its count ("learned nothing (2 runs)"): the note
    under a table reads "*: finished but flagged: " and these."""
    flags = df[store.FLAGS].fillna("").astype(str) if store.FLAGS in df else pd.Series("", df.index)
    flagged = (flags != "") & (df[store.STATUS] == store.OK)  # a stale or incomplete run says that first
    if not flagged.any():
        return df, []
    # each reason once per run (a run may give one reason twice, e.g. for two metrics)
    reasons = flags[flagged].str.split("; ").explode().str.split(":").str[0]
    why = reasons.reset_index().drop_duplicates().iloc[:, 1].value_counts()
    return (df.assign(**{store.STATUS: df[store.STATUS].where(~flagged, df[store.STATUS] + FLAGGED)}),
            [f"{w} ({n} run{'s' * (n > 1)})" for w, n in why.items()])


def swept_columns(df: pd.DataFrame, keys: list[str]) -> list[str]:
    """Override keys as table columns: a swept config group (init=a,b) is its `name` key (init.name)."""
    out = []
    for k in keys:
        col = k if k in df.columns else f"{k}.name" if f"{k}.name" in df.columns else None
        if col and col not in out:
            out.append(col)
    return sorted(out, key=list(df.columns).index)  # the order ls sorts by


def _numeric(s: pd.Series) -> pd.Series | None:
    """The column as numbers when every present value is one (so 5 < 10 < 20), else None."""
    num = pd.to_numeric(s, errors="coerce")
    present = s.notna() & (s.astype(str) != "")
    return num if num[present].notna().all() and not s.map(lambda v: isinstance(v, bool)).any() else None


def sort_runs(df: pd.DataFrame, keys: list[str], descending: bool = False) -> pd.DataFrame:
    """Sort by `keys` in turn, numbers as numbers, lists of numbers element by element (optim.betas:
    [0.9, 0.99] before [0.9, 0.999]), missing values last."""
    order = df
    for k in reversed(keys):
        num = _numeric(order[k])
        col = num if num is not None else _number_lists(order[k])
        col = col if col is not None else order[k].astype(str)
        order = order.iloc[np.argsort(_rank(col, descending), kind="stable")]
    return order


def _number_lists(s: pd.Series) -> pd.Series | None:
    """A column of lists of numbers (flat configs hold them as text, "[0.9, 0.99]") as the rank of each
    value among them, compared element by element; None unless every present value is such a list."""
    def parse(v) -> tuple[float, ...]:
        if isinstance(v, (list, tuple)):
            return tuple(float(x) for x in v)
        text = str(v).strip()
        if not (text.startswith("[") and text.endswith("]")):
            raise ValueError(v)
        return tuple(float(x) for x in text[1:-1].split(","))

    present = s.notna() & (s.astype(str) != "")
    if not present.any():
        return None
    try:
        values = {i: parse(v) for i, v in s[present].items()}
    except (ValueError, TypeError):
        return None
    rank = {v: r for r, v in enumerate(sorted(set(values.values())))}
    return pd.Series({i: rank[values[i]] if i in values else np.nan for i in s.index}, dtype=float)


def _rank(col: pd.Series, descending: bool) -> np.ndarray:
    ranks = col.rank(method="dense", ascending=not descending, na_option="bottom")
    return ranks.to_numpy()



def result_by_header(df: pd.DataFrame, text: str) -> str | None:
    """The result column of `df` whose ls header `text` is ("chi1 meas", "ratio end"; lower case, _ and -
    read as spaces: train_loss, ratio-end), or None."""
    def spoken(t: str) -> str:
        return " ".join(str(t).lower().replace("_", " ").replace("-", " ").split())

    return next((c for c, (label, _) in RESULT_COLUMNS.items() if c in df.columns and spoken(label) == spoken(text)),
                None)


def study_columns(df: pd.DataFrame) -> list[str]:
    """The columns --rate and --steps-to added, in the order asked."""
    return [c for c in df.columns if isinstance(c, str) and c.startswith(("rate.", "steps_to."))]


@dataclass
class Column:
    key: str
    label: str
    priority: float
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


LIMIT_MARK = "†"  # a chi1 theory cell that is only the q* = 0 limit's (limit_only), explained under the table
LIMIT_NOTE = (f"{LIMIT_MARK}: chi1 theory's limit at q* = 0 (no bias), which the forward signal approaches only as "
              "~1/l: each layer's own chi1 stays below it, and a fit reads lower (gradflow theory)")


def limit_only(row: dict | pd.Series) -> bool:
    """Whether a run's chi1 theory is the limit of a forward length that decays to q* = 0 too slowly for the
    signal to follow it (theory.signal_law_applies): tanh under Xavier's sw2 = 1, sb2 = 0 reads chi1 = 1,
    "critical", where its measured chi1 is ~0.9 and its signal ratio at depth 20 ~0.4. `row`: a record of the
    runs table (`limit_marks` reads them all)."""
    if not np.isfinite(pd.to_numeric(row.get("chi1_theory", np.nan), errors="coerce")):
        return False
    mf = predict({k: v for k, v in row.items() if not is_missing(v)})
    return mf is not None and q_zero_limit(mf)


def limit_marks(df: pd.DataFrame) -> list[bool]:
    """`limit_only` of each run of `df`, read as records: a row of iterrows copies the table's attrs (the
    study's declared grids), 2.3 s of a 4000-run `ls`."""
    return [limit_only(r) for r in df.to_dict("records")] if "chi1_theory" in df.columns else [False] * len(df)


def _cells(df: pd.DataFrame, key: str) -> list[str]:
    if key == "chi1_layers":
        return [_fit_cell(r) for r in df.to_dict("records")]  # (records: a row of iterrows copies the attrs)
    if key == "chi1_theory":
        return [fmt(v) + LIMIT_MARK * limited for v, limited in zip(df[key], limit_marks(df))]
    if key.startswith("rate.") and key.endswith(".layers"):  # no fit: "-" as in chi1 fit (it was a blank cell)
        return [v if isinstance(v, str) and v else "-" for v in df[key]]
    return [fmt(v) for v in df[key]]


def _fit_cell(row: dict) -> str:
    span = row.get("chi1_layers")
    if not isinstance(span, str) or not span:
        return "-"
    if BLOCKS in span:  # "4 blocks, resid": a net of blocks (rate)
        cell = span
    else:  # "3-17": a chain's layers
        lo, hi = map(int, span.split("-"))
        cell = f"{hi - lo + 1} ({span})"
    if row.get("start_qstar") is True:
        cell += " q*"
    bias = row.get("chi1_transient")
    if isinstance(bias, float) and abs(bias) > TRANSIENT_TOL:
        cell += "!"
    return cell


def short_ids(runs: list[str], budgets: tuple[int, ...] = (28, 40, 60), rows: list[tuple] | None = None) -> list[str]:
    """Run ids for a table column: each longer than a budget as its first and last key=value items around
    "…" (model.depth=10,…,train.steps=100; cut inside an item, depth=1… read as another value), at the
    smallest budget that keeps them distinct and gives each its last item too (`data=gaussian,…` named
    one run by its first item alone), or else the smallest that keeps them distinct (a job name holds
    every override: 100 characters and more would leave no room for a result at 80 columns); whole
    where none does. With `rows` (each run's key values, shown beside it), at the smallest budget that
    keeps the runs of equal rows distinct and cuts none inside its one item. --json has them whole."""
    # beside the key columns the id only tells apart runs of the same keys (a stale run and its
    # replacement): 24 stale runs of one grid have no budget that keeps their ids distinct across the grid
    keyed = rows is not None
    rows = rows if keyed else [()] * len(runs)
    distinct = None
    for budget in budgets:
        short = [short_id(r, budget) for r in runs]
        if len(set(zip(rows, short))) == len(set(zip(rows, runs))):
            if keyed and not any("…" in s and "," not in s for s in short) or \
                    not keyed and not any(s.endswith("…") for s in short):
                return short
            distinct = distinct or short
    return distinct or runs


def axes_first(df: pd.DataFrame, swept: list[str], studies: np.ndarray) -> list[str]:
    """`swept` in a folder of studies (each run's in `studies`), by how many runs are in a study where the key
    varies: the order `ls` shows their columns in, and sorts its rows by."""
    axes_of = [(int(g.sum()), set(swept_keys(df[g], exclude=()))) for g in (studies == s for s in set(studies))]
    return sorted(swept, key=lambda k: -sum(n for n, own in axes_of if k in own))


def short_id(run: str, budget: int) -> str:
    """`run` (comma-separated items) within `budget` characters: whole items from each end around "…", or, where
    one item alone is longer, its start and end."""
    if len(run) <= budget:
        return run
    kept = ellipsize(run.split(","), ",", budget)  # whole items from each end (a list's too: a plain cut)
    if kept is not None:
        return ",".join(kept)
    keep = (budget - 1) // 2  # one item longer than the budget: its start and end
    return f"{run[:keep]}…{run[len(run) - (budget - 1 - keep):]}"


def short_studies(studies: list[str], budgets: tuple[int, ...] = (20, 28, 36)) -> list[str]:
    """Studies for a table column: each longer than a budget as its first and last folders around "…"
    (home/u/…/results/depth-study), at the smallest budget that keeps them distinct; where none does, with the
    middle folders that tell them apart (`_told_apart`).
    Several paths far apart (`ls results/a /scratch/u/results/b`) named each study by its folders from the
    one both are under, and a study three folders deep took 90 columns, leaving no result at 80. A study
    beside others in its folder (a reproduction's arms, he2015-quick/train and he2015-quick/init) keeps some
    of that folder's name: `…/chi1` and `…/grid`, distinct, said nothing of the experiment they are arms of."""
    parents = Counter(s.rpartition("/")[0] for s in set(studies))

    def keeps_parent(short: str, study: str) -> bool:
        parent = study.rpartition("/")[0]
        shown = short.rpartition("/")[0]  # (what is left of the folders above it)
        return parents[parent] < 2 or short == study or bool(shown) and not shown.endswith("…")

    def cuts_name(short: str) -> bool:  # (a study's own folder cut in the middle: `…pth-study-long-name`)
        return short.startswith("…") and not short.startswith("…/")

    for budget in budgets:
        short = [_short_study(s, budget, parents[s.rpartition("/")[0]] > 1) for s in studies]
        if len(set(short)) == len(set(studies)) and all(keeps_parent(a, s) for a, s in zip(short, studies)) \
                and (budget == budgets[-1] or not any(map(cuts_name, short))) and not _hidden(short):
            return short
    for budget in budgets:  # (no budget keeps every arm's folder: the shortest that keeps them distinct)
        short = [_short_study(s, budget) for s in studies]
        if len(set(short)) == len(set(studies)) and not _hidden(short):
            return short
    return _told_apart(studies)


def _hidden(short: list[str]) -> bool:
    """Whether a shortened study shows no folder that another's form lacks: `nest/…/depth-study` beside
    `nest/node-beta/…/depth-study` is distinct, but its own node's folder is the one left out."""
    shown = {s: set(s.split("/")) - {"…"} for s in set(short)}
    return any("…" in a and a != b and shown[a] <= shown[b] for a in shown for b in shown)


def _told_apart(studies: list[str]) -> list[str]:
    """Each study as its first and last folders around "…" and, where other studies share those, the first
    folder in which they differ: node-alpha/…/depth-study and node-beta/…/depth-study, which no budget of
    folders from the ends told apart (every study came back whole, 90 columns wide, no result beside it)."""
    parts = {s: s.split("/") for s in set(studies)}
    shown = {s: {0, len(p) - 1} for s, p in parts.items()}

    def render(study: str) -> str:
        out, last = [], -1
        for i in sorted(shown[study]):
            out += ["…"] * (i > last + 1) + [parts[study][i]]
            last = i
        return "/".join(out + ["…"] * (last < len(parts[study]) - 1))

    for _ in range(max(map(len, parts.values()))):
        groups: dict[str, list[str]] = {}
        for study in parts:
            groups.setdefault(render(study), []).append(study)
        clashes = [g for g in groups.values() if len(g) > 1]
        if not clashes:
            break
        for group in clashes:  # the first folder, from the start, that is not the same in all of them
            i = next(i for i in range(max(len(parts[s]) for s in group))
                     if len({tuple(parts[s][i:i + 1]) for s in group}) > 1)
            for study in group:
                if i < len(parts[study]):
                    shown[study].add(i)
    # (a study inside another of the same name, a/…/x and a/…/x/…/x: the folder they differ in is one each
    # shows already) whole where still alike
    names = {s: render(s) for s in parts}
    alike = Counter(names.values())
    return [names[s] if alike[names[s]] == 1 else s for s in studies]


def short_values(cells: list[str], budgets: tuple[int, ...] = (24, 40, 60)) -> list[str]:
    """A key's values for a terminal's column: one longer than a budget (a 200-character +tag, which pushed the
    status and results off an 80-column table) as its ends around "…", at the smallest budget that keeps
    distinct values distinct (else whole: --wide and --json show them whole anyway). A quarter of a wider
    terminal is the first budget (`table_columns`)."""
    for budget in budgets:
        head = (budget - 1) // 2
        short = [c if len(c) <= budget else f"{c[:head]}…{c[len(c) - (budget - 1 - head):]}" for c in cells]
        if len(set(short)) == len(set(cells)):
            return short
    return cells


def _short_study(study: str, budget: int, parent: bool = False) -> str:
    """`study` in `budget` characters; `parent`: its folder's name kept with its own (…/he2015-quick/train)."""
    if len(study) <= budget:
        return study
    tail = "/".join(study.split("/")[-2:])
    if parent and study.count("/") >= 2 and len(tail) + 2 <= budget:
        kept = ellipsize(study.split("/"), "/", budget)
        return "/".join(kept) if kept is not None and "/".join(kept).endswith("/" + tail) else f"…/{tail}"
    kept = ellipsize(study.split("/"), "/", budget)  # whole folders from each end
    if kept is not None and kept[-1] != "…":
        return "/".join(kept)
    last = study.rsplit("/", 1)[-1]  # (its own name, cut at its start where even that is too long)
    return f"…/{last}" if len(last) + 2 <= budget else f"…{last[len(last) - budget + 1:]}"


def table_columns(df: pd.DataFrame, swept: list[str], short: bool = False, width: int = 80) -> list[Column]:
    """Every column ls can show for `df`, in display order; `short`: long studies and key values shortened
    (`short_studies`, `short_values`: a terminal's table, `width` columns; the report page's has the room)."""
    names = abbreviate(swept)
    taken = {label for label, _ in RESULT_COLUMNS.values()}
    names = {k: k if label in taken else label for k, label in names.items()}  # train.steps next to steps done
    # in a folder of several studies, each run's study first (two reproductions' runs read alike, the
    # keys that tell them apart left out at 80 columns), and the keys that differ within a study before
    # those the study's name already tells (a reproduction's width, data); then the run's id where the
    # keys (and the study) do not tell the rows apart: nothing swept, runs of a Recorder with different
    # config keys, a stale run beside its replacement
    ids = list(df["run"].astype(str))
    several = bool(ids) and all("/" in r for r in ids) and run_folders(df).nunique() > 1 \
        and store.SOURCE not in swept  # (a comparison's sources are its first column)
    studies = (short_studies if short else list)(list(study_of(df))) if several else [""] * len(ids)
    if several:
        # (by how many runs are in a study where the key varies: in a folder of many studies nearly every
        # key varies in one of them, and a study's own axis, norm, went after another's, width)
        # a study's axis as its own ls has it: model.alpha, set where model.skip=residual and unset elsewhere,
        # varies with the skip choice alone, and went before a study's own axis, norm, which then gave way
        swept = axes_first(df, swept, np.array(studies))
    first = max(24, width // 4)  # (a wider terminal shows more of a value)
    budgets = (first, *(b for b in (40, 60) if b > first))
    keys = [Column(k, names[k], KEY_PRIORITY, short_values(_cells(df, k), budgets) if short else _cells(df, k),
                   _numeric(df[k]) is not None) for k in swept]
    rows = list(zip(*(c.cells for c in keys)))
    cols = [Column(STUDY, STUDY, KEY_PRIORITY, studies, False)] if several else []
    told = list(zip(studies, rows))
    if not keys and not several or len(set(told)) < len(told):
        if several:  # (the study is a column: the id within it)
            ids = [r.rpartition("/")[2] for r in ids]
        # (the keys are columns: a short id that tells apart the runs of equal keys leaves them room)
        budgets = tuple(range(8, 61, 2)) if keys or several else (28, 40, 60)
        cols.append(Column("run", "run", KEY_PRIORITY,
                           short_ids(ids, budgets, told if keys or several else None), False))
    cols += keys
    # a result no run has is no column (a recurrent net's weight-gradient ratios: its time steps have no
    # weights of their own; chi1 where no theory applies); the status and how far the runs got always show
    results = [(k, *v) for k, v in RESULT_COLUMNS.items() if k in df.columns
               and (k in ("status", "steps_done") or df[k].replace("", np.nan).notna().any())]
    for k, label, _ in [r for r in results if r[0] == "status"]:  # shown whatever the width, as the keys are
        cols.append(Column(k, label, KEY_PRIORITY, _cells(df, k), False))
    for k in study_columns(df):
        if k.startswith("rate.") and k.endswith(".layers"):
            label, numeric, priority = f"{k[5:-7]} fit", False, STUDY_PRIORITY + 1
        elif k.startswith("rate."):
            label, numeric, priority = f"{k[5:]} rate", True, STUDY_PRIORITY
        else:
            label, numeric, priority = f"steps to {k[9:]}", True, STUDY_PRIORITY
        cols.append(Column(k, label, priority, _cells(df, k), numeric))
    # (a stale run is a point the spec dropped, not one that stopped: 24 of them took a result's place)
    stopped = "status" in df.columns and not df["status"].astype(str).str.startswith((store.OK, store.STALE)).all()
    for k, label, priority in [r for r in results if r[0] != "status"]:
        if k in ("steps_done", "diverged_step") and stopped:  # a run that diverged, failed or was stopped: how
            priority = 2.5  # far it got, and where it diverged; after the loss and accuracy, before the ratios
        cols.append(Column(k, label, priority, _cells(df, k), k != "chi1_layers"))
    return cols


def replacement_failed(df: pd.DataFrame) -> pd.Series:
    """The runs kept because their replacement failed (`job.execute`): a sweep's are stale (its spec has the
    replacement's settings), and a failure of the sweep's too."""
    if "error" not in df:
        return pd.Series(False, index=df.index)
    return df["error"].fillna("").astype(str).str.startswith(store.REPLACEMENT_FAILED)


def failed_runs(df: pd.DataFrame) -> pd.Series:
    """The runs whose `error` says why they failed, read incomplete, or were kept over a failed replacement."""
    if "error" not in df or store.STATUS not in df:
        return pd.Series(False, index=df.index)
    said = df["error"].fillna("").astype(str) != ""
    return (df[store.STATUS].isin([store.FAILED, store.INCOMPLETE]) | replacement_failed(df)) & said


def failure_notes(df: pd.DataFrame, shown: int | None = None, more: str = "") -> list[str]:
    """Why runs failed or read incomplete, or a stale run's replacement failed (it was kept): one line per
    distinct error (a sweep whose every point failed the same way is one line), each with its runs; the
    first `shown` of them (all: None), then a line saying how many more, ending `more` (where to see them)."""
    bad = df[failed_runs(df)]
    if bad.empty:
        return []
    groups = list(bad.groupby([store.STATUS, "error"], sort=False)[store.RUN])
    notes = []
    for (status, error), runs in groups[:shown]:
        which = runs.iloc[0] if len(runs) == 1 else f"{len(runs)} runs, {runs.iloc[0]} ..."
        notes.append(f"{status} ({which}): {shorten(error_text(error), 400)}")
    if shown is not None and len(groups) > shown:
        left = len(groups) - shown
        notes.append(f"and {left} more error{'s' * (left != 1)}" + (f"; {more}" if more else ""))
    return notes


def error_text(error) -> str:
    """A run's error on one line, a user error's without its type."""
    return " ".join(str(error).split()).removeprefix(f"{GradflowError.__name__}: ")
