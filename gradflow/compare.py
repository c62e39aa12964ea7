"""Comparing results folders: label the sources, line their runs up, and tabulate the key numbers.

`gradflow compare` draws and prints; everything it decides lives here, so tests and notebooks call
the same functions:

    runs = compare.load_runs([a, b])               # one runs table, `source` says which folder
    by = compare.match_keys(runs, sources)         # the swept keys, seed aside
    compare.comparison(runs, sources, by)          # one row per (matched config, source)
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from gradflow import store
from gradflow.errors import GradflowError, NoRows, did_you_mean
from gradflow.keys import config_columns, is_missing, n_distinct, ordered_values, swept_keys, vkey
from gradflow.columns import FLAGGED, RESULT_COLUMNS, limit_marks

# the numbers compared per source: column, row label, how two sources differ ("ratio" or "diff")
# (column, its label: the header ls shows it under, how two sources' values are compared)
COMPARED = tuple((c, RESULT_COLUMNS[c][0], how) for c, how in (
    ("grad_ratio.init", "ratio"), ("signal_ratio.init", "ratio"), ("grad_ratio.final", "ratio"),
    ("chi1_measured", "diff"), ("chi1_theory", "diff"), ("final.train_loss", "diff"), ("final.train_acc", "diff"),
    ("final.test_acc", "diff")))  # (the training loss: a Recorder's loop may log nothing else)

END_COLUMNS = ("grad_ratio.final", "final.train_loss", "final.train_acc", "final.test_acc")  # after training
LIMIT = "chi1_limit"  # comparison's column: the cell's chi1 theory is only the q* = 0 limit's (columns.LIMIT_NOTE)

# keys only some sources set (init.gain beside another init's init.mode), named one by one up to this many
# per source; more (every key of `gradflow run` beside a Recorder's, a Gaussian source's data.*) go by group
NAMED_PARTIAL = 3


def source_labels(paths: Sequence[str | Path]) -> list[str]:
    """The folder names, made unique with the parent folder (a/run vs b/run), then a counter; where two
    need their parent, every source has its own (plain/model.depth=3 beside relu/model.depth=3,seed=0,
    whose own name alone hid which study it is of)."""
    resolved = [Path(p).resolve() for p in paths]
    labels = [p.name for p in resolved]
    if len(set(labels)) < len(labels):
        labels = [f"{p.parent.name}/{p.name}" for p in resolved]
    seen: dict[str, int] = {}
    out = []
    for lab in labels:
        seen[lab] = seen.get(lab, 0) + 1
        out.append(lab if labels.count(lab) == 1 else f"{lab}#{seen[lab]}")
    return out


def load_runs(paths: Sequence[str | Path], sources: Sequence[str], include_stale: bool = False) -> pd.DataFrame:
    """The runs tables of every path in one frame, with `source` naming the folder."""
    import gradflow

    return store.concat([gradflow.load(p, table="runs", include_stale=include_stale).assign(**{store.SOURCE: s})
                         for p, s in zip(paths, sources)])


def check_by(runs: pd.DataFrame, sources: Sequence[str], by: Sequence[str], given: Sequence[str] = ()) -> None:
    """Every --by key must be a config key that every source has, and given once (`given`: the keys as
    typed, `depth` for model.depth). The choices named are the keys every source has that vary."""
    for i, k in enumerate(by):
        if k in by[:i]:
            typed = [g for g, b in zip(given or by, by) if b == k]
            raise GradflowError(f"--by {k} is given twice ({', '.join(typed)}); give each key once")
        lacking = [s for s in sources
                   if k not in runs.columns or runs.loc[runs[store.SOURCE] == s, k].isna().all()]
        if k not in config_columns(runs) or lacking:
            shared = [c for c in swept_keys(runs, exclude=(), implied=True)
                      if all(runs.loc[runs[store.SOURCE] == s, c].notna().any() for s in sources)]
            choices = list(dict.fromkeys(shared))
            raise GradflowError(f"--by {k!r} is not a config key of {', '.join(lacking) or 'these results'}"
                                f"{did_you_mean(k, [c for c in choices if c != k])}; choices: "
                                f"{', '.join(choices) or '(no key that every source has varies)'}")


def match_keys(runs: pd.DataFrame, sources: Sequence[str]) -> list[str]:
    """Keys to line runs up by: every key swept (seed aside) in some source. One whose values the
    sources do not share (depth 3, 8 against 4, 10) is kept too: its runs then have no counterpart
    (`unmatched`), where leaving it out pooled each source's depths into one median (`--by` pools
    on purpose)."""
    per = [runs[runs[store.SOURCE] == s] for s in sources]
    keys = list(dict.fromkeys(k for g in per for k in swept_keys(g.dropna(axis=1, how="all"))))
    return [k for k in keys if k in runs.columns]


def unmatched(runs: pd.DataFrame, sources: Sequence[str], by: Sequence[str]) -> dict[str, list[list]]:
    """Where no cell of `by` holds runs of two sources: each key whose values the sources do not share,
    with each source's values (what keeps them apart); {} where some cell is shared."""
    keyed = runs.assign(_cell=cell_keys(runs, by))
    if not by or (keyed.groupby("_cell", sort=False)[store.SOURCE].nunique() > 1).any():
        return {}
    per = [runs[runs[store.SOURCE] == s] for s in sources]
    return {k: [ordered_values(g[k]) for g in per] for k in by
            if not set.intersection(*({vkey(v) for v in g[k]} for g in per))}


def differing_keys(runs: pd.DataFrame, sources: Sequence[str]) -> dict[str, list]:
    """Config keys fixed within each source but different between them: what the comparison is about.
    A key that only some runs of a source read (model.alpha, unset where model.skip=none: a key a group
    choice sets, as `gradflow ls` says of it) is compared on the runs that read it: a source's value is
    the one its runs that set it hold, and a source none of whose runs set it makes no difference where
    another source reads it in only some runs (skip=none beside skip=none,residual). Where no source is
    so split, unset is a value of its own (init.gain of init=xavier_normal beside init=kaiming_normal,
    which has init.mode instead). A key some source sweeps (it is matched on) or sets to several values
    is none of them."""
    per = [runs[runs[store.SOURCE] == s] for s in sources]
    axes = {k for g in per for k in swept_keys(g.dropna(axis=1, how="all"))}
    out = {}
    for k in config_columns(runs):
        if k in axes:
            continue
        set_in = [g[k].dropna() for g in per]
        if any(n_distinct(v) > 1 for v in set_in):
            continue
        values = [ordered_values(v)[0] if len(v) else math.nan for v in set_in]
        # a source whose runs read the key only in part: the sources that never read it are no difference
        compared = [v for v, s in zip(values, set_in) if len(s) or not read_in_part(runs, sources, k)]
        if len({vkey(v) for v in compared}) > 1:
            out[k] = values
    return out


def setters(differ: dict[str, list], keys: Sequence[str], sources: Sequence[str]) -> dict[tuple, list[str]]:
    """`keys` of `differ` (each source's value, NaN where it sets none) by the sources that set them, in the
    sources' order: the note says "which only a and b set" of each group."""
    out: dict[tuple, list[str]] = {}
    for k in keys:
        out.setdefault(tuple(s for s, v in zip(sources, differ[k]) if not is_missing(v)), []).append(k)
    return out


def read_in_part(runs: pd.DataFrame, sources: Sequence[str], key: str) -> bool:
    """Whether some source has `key` set in some of its runs and unset in others (model.alpha beside
    model.skip=none,residual)."""
    for s in sources:
        set_in = runs.loc[runs[store.SOURCE] == s, key].notna()
        if set_in.any() and not set_in.all():
            return True
    return False


def pooled_keys(runs: pd.DataFrame, by: Sequence[str]) -> list[str]:
    """Config keys (seed included) in which the runs of one source that share a cell differ: what the
    cell's medians are taken over."""
    keyed = runs.assign(_cell=cell_keys(runs, by))
    groups = (g.drop(columns="_cell") for _, g in keyed.groupby([store.SOURCE, "_cell"], sort=False))
    keys = (k for g in groups if len(g) > 1 for k in swept_keys(g.dropna(axis=1, how="all"), exclude=by))
    return list(dict.fromkeys(keys))


def cell_keys(runs: pd.DataFrame, by: Sequence[str]) -> list[tuple]:
    """Each run's cell: its values of `by` as one hashable tuple (lists such as optim.betas, NaN included)."""
    by = list(by)
    return [tuple(vkey(v) for v in row) for row in runs[by].itertuples(index=False)] if by else [()] * len(runs)


def _median(values: pd.Series) -> float:
    v = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
    ok = np.isfinite(v)
    if ok.any():
        return float(np.median(v[ok]))
    return float(v[0]) if len(v) else math.nan  # all NaN/inf: show what was logged


def comparison(runs: pd.DataFrame, sources: Sequence[str], by: Sequence[str]) -> pd.DataFrame:
    """One row per matched config (the values of `by`) and source: runs, statuses and the COMPARED
    numbers (median over the runs in the cell, e.g. seeds). Rows come in the order of the by-values."""
    by = list(by)
    keyed = runs.assign(_cell=cell_keys(runs, by))
    ranks = {k: {vkey(v): i for i, v in enumerate(ordered_values(runs[k]))} for k in by}
    cells = sorted(dict.fromkeys(keyed["_cell"]), key=lambda c: tuple(ranks[k][v] for k, v in zip(by, c)))
    rows = []
    for cell in cells:
        for s in sources:
            g = keyed[(keyed["_cell"] == cell) & (keyed[store.SOURCE] == s)]
            row = {"cell": cell, store.SOURCE: s, "runs": len(g),
                   store.STATUS: ", ".join(f"{n}× {st}" if n > 1 else str(st)
                                           for st, n in g[store.STATUS].value_counts().items()) if len(g) else ""}
            if len(g):
                row.update({k: g[k].iloc[0] for k in by})
            # the end of training's numbers from the runs that ended ok, where some did: a diverged run's ratio
            # end is its last finite step's, no end (its final metrics are none already)
            well = g[g[store.STATUS].astype(str).str.rstrip(FLAGGED) == store.OK]
            for col, _, _ in COMPARED:
                runs = well if col in END_COLUMNS and len(well) else g
                row[col] = _median(runs[col]) if col in runs.columns and len(runs) else math.nan
            # (chi1 theory of the q* = 0 limit, tanh under Xavier: marked as ls marks it)
            row[LIMIT] = any(limit_marks(g))
            rows.append(row)
    return pd.DataFrame(rows)


def difference(a: float, b: float, how: str) -> float:
    """How source b differs from source a: b / a ("ratio") or b - a ("diff"); NaN when undefined."""
    if not (math.isfinite(a) and math.isfinite(b)) or (how == "ratio" and a == 0):
        return math.nan
    return b / a if how == "ratio" else b - a


def overlay_table(paths: Sequence[str | Path], sources: Sequence[str], runs: pd.DataFrame, table: str,
                  differ: Sequence[str], include_stale: bool = False, missing_ok: bool = False) -> pd.DataFrame:
    """The `table` rows of every source's runs in `runs` in one frame for drawing: run ids made unique
    across sources, and the keys in `differ` dropped (one value per source: `source` already says them).
    `missing_ok`: a source without the table (no probe=full, every run stale) is left out of it, not an
    error (empty where none has it). A key of `differ` that some source reads in only some runs stays:
    a run that does not read it (model.alpha of skip=none) has no value of it to be given, and the
    figure names it as a key only the sources differ in (`the sources also differ in model.alpha`)."""
    from gradflow.plots.kinds import load_table

    differ = [k for k in differ if k in runs.columns and not read_in_part(runs, sources, k)]

    frames = []
    for p, s in zip(paths, sources):
        kept = runs[runs[store.SOURCE] == s]
        try:
            df = kept if table == "runs" else load_table(Path(p), table, include_stale)
        except GradflowError as e:
            if missing_ok:
                continue
            if isinstance(e, NoRows) and table == "layers":  # (a loop that probed no step: its losses compare)
                raise NoRows(f"{e}; --kind curves compares the losses") from None
            raise
        df = df[df[store.RUN].isin(set(kept[store.RUN]))]  # (the runs `runs` keeps: compare --where)
        frames.append(store.prefix_runs(df, s).assign(**{store.SOURCE: s}))
    out = store.concat(frames) if frames else pd.DataFrame()
    out.attrs[store.SOURCE_KEYS] = {s: {k: runs.loc[runs[store.SOURCE] == s, k].iloc[0] for k in differ}
                                    for s in sources if (runs[store.SOURCE] == s).any()}
    return out.drop(columns=list(differ), errors="ignore")
