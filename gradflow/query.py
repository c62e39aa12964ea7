"""The runs table as `gradflow ls` shows it, and `plot --where` and a sweep's summary read it: filtered by
--where KEY=VALUE, sorted by --sort, each KEY by any name ls shows it under (depth, sw2, 'train loss')."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from gradflow import store
from gradflow.columns import (FLAGGED, LS_COLUMNS, RESULT_COLUMNS, listing, mark_flagged, result_by_header,
                              sort_runs, study_columns, swept_columns)
from gradflow.errors import GradflowError, by_words, did_you_mean
from gradflow.fmt import fmt
from gradflow.keys import abbreviate, config_columns, full_key, ordered_values, partial_keys
from gradflow.summary import STUDY, in_study, matches, matches_any, not_run, run_folders, study_of

PARTIAL = "partial_keys"  # the runs table's attrs: the keys only some runs of the folder set (`partial_keys`)
NOT_RUN = "not_run"  # the runs table's attrs: the sweeps under the folder with points not run yet (`not_run`)
WHERE = "where"  # the runs table's attrs: the --where conditions that kept its rows


def runs_view(path: Path | list[Path], where: list[str] | None = None, sort: str | None = None,
              rates: list[str] | None = None, steps: list[str] | None = None) -> tuple[pd.DataFrame, list[str]]:
    """The runs table filtered and sorted as `ls` shows it, and the swept keys. `path`: a folder, or several
    (listed as the folder they are all under, `store.common_root`, holding only their runs)."""
    paths = [Path(p) for p in path] if isinstance(path, (list, tuple)) else [Path(path)]
    df, swept = listing(paths, rates or (), steps or ())
    partial = partial_keys(df, swept_columns(df, swept))  # of the whole folder: --where keeps them no axis
    choices = [*swept, store.STATUS, *study_columns(df)]
    root = store.common_root(paths) if len(paths) > 1 else paths[0]
    conditions = [(where_key(df, k, swept, choices), v) for k, v in (split_where(df, c, swept, choices) for c in where or [])]
    missing = not_run(root, dict(zip(df[store.RUN], df[store.STATUS])), conditions, paths if len(paths) > 1 else None)
    df = keep_where(df, where, swept, choices)
    df.attrs[NOT_RUN] = missing
    df.attrs[WHERE] = list(where or [])
    if sort:
        descending = sort.startswith("-")
        key = column(df, sort.lstrip("-"), "--sort", swept, [*swept, *(c for c in LS_COLUMNS if c in df.columns),
                                                             *study_columns(df)], " (-KEY: descending)")
        df = sort_runs(df, [key], descending)
        df.attrs["sorted_by"] = key  # shown whatever the width: rows in an order one cannot see read as random
    df.attrs[PARTIAL] = partial
    return df, swept


def keep_where(df: pd.DataFrame, where: list[str] | None, swept: list[str], choices: list[str]) -> pd.DataFrame:
    """The rows of `df` whose KEY reads VALUE for every --where KEY=VALUE (`ls`'s and `plot`'s), KEY by
    any name `column` takes; a one-line error for a condition that is no KEY=VALUE or keeps nothing."""
    for i, cond in enumerate(where or []):
        key, value = split_where(df, cond, swept, choices)
        key = where_key(df, key, swept, choices)
        values = study_of(df) if key == STUDY else df[key]
        if any("\ud800" <= c <= "\udfff" for c in value):  # (bytes that are no UTF-8 text reach Python as
            # surrogates, on which the comparison raised pyarrow's UnicodeEncodeError)
            raise GradflowError(f"--where {ascii(cond)} is no UTF-8 text (a byte the terminal could not decode); "
                                f"{key} here: {', '.join(fmt(v) for v in ordered_values(values))}")
        if key == STUDY:  # (by the folders' whole parts: --where study=he2015-quick keeps its init and train)
            kept = df[matches_any(run_folders(df), value, in_study)]
        elif key == store.STATUS:  # as the table shows it: ok* a flagged run (status=ok keeps it too)
            shown = mark_flagged(df)[0][key]
            kept = df[matches_any(shown, value, lambda _, v: matches(shown if v.endswith(FLAGGED) else values, v))]
            values = shown
        else:
            kept = df[matches_any(values, value)]  # (a sweep's list, model.depth=2,3: any of its values; it
        if kept.empty:  # say so (and what there is) rather than draw an empty table  # matched none, "here: 2, 3")
            values = ", ".join(fmt(v) for v in ordered_values(values))
            raise GradflowError(f"--where {cond} matches no run{' of those left' if i else ''}; "
                                f"{key} here: {values}")
        df = kept
    return df


_COMPARISON = re.compile(r"^([^=<>!]*)(==|!=|<>|<=|>=|<|>)(.*)$")  # (KEY: up to the first =, <, > or !)


def split_where(df: pd.DataFrame, cond: str, swept: list[str], choices: list[str]) -> tuple[str, str]:
    """KEY and VALUE of --where KEY=VALUE (`ls`'s, `plot`'s and `compare`'s); a one-line error for a condition
    that is none, a comparison (depth==3, depth!=2, depth<=3) saying that --where takes KEY=VALUE alone and how
    to write it so: the value itself for ==, the other values of KEY, as a comma list, for != (depth!=2 read
    as a key 'depth!', and depth==3 as depth equal to the text '=3', which matched no run)."""
    if comparison := _COMPARISON.match(cond):
        key, op, value = (part.strip() for part in comparison.groups())
        head = f"--where {cond}: --where takes KEY=VALUE, with one = (==, !=, <, >, <=, >= are not supported)"
        if op == "==":
            raise GradflowError(f"{head}; write --where {key}={value}")
        try:
            column_of = where_key(df, key, swept, choices) if key else None
        except GradflowError:
            column_of = None
        if column_of is None:
            raise GradflowError(f"{head}; to keep several values, list them: --where KEY=V1,V2")
        values = study_of(df) if column_of == STUDY else df[column_of]
        here = ordered_values(values)
        shown = ", ".join(fmt(v) for v in here)
        if op in ("!=", "<>"):
            dropped = matches_any(values, value)
            others = ordered_values(values[~dropped]) if dropped.any() else []
            if others:
                raise GradflowError(f"{head}; to keep all but {value}, list the others: --where "
                                    f"{key}={','.join(fmt(v) for v in others)} ({column_of} here: {shown})")
        raise GradflowError(f"{head}; list the values to keep: --where {key}=V1,V2 ({column_of} here: {shown})")
    if "=" not in cond:
        raise GradflowError(f"--where {cond!r} must be KEY=VALUE")
    return tuple(cond.split("=", 1))


def where_key(df: pd.DataFrame, key: str, swept: list[str], choices: list[str]) -> str:
    """The column --where KEY names (see `column`), or STUDY where the runs are in several folders."""
    if key == STUDY and STUDY not in df.columns and df[store.RUN].astype(str).str.contains("/").all() \
            and study_of(df).nunique() > 1:
        return STUDY
    return column(df, key, "--where", swept, choices)


def column(df: pd.DataFrame, key: str, option: str, swept: list[str], choices: list[str], more: str = "") -> str:
    """The column `key` names: itself, or a config key by the short name ls shows it under (depth,
    activation, init for init.name, sw2) or by its last part, or a group by its choice (init). Else a
    one-line error naming the nearest keys and `choices`."""
    finals = {c.removeprefix("final."): c for c in LS_COLUMNS if c.startswith("final.") and c in df.columns}
    # a result by the header ls shows it under ("train loss", "ratio end"; train_loss and ratio-end too)
    found = full_key(df, key, swept) or finals.get(key) or result_by_header(df, key)
    if found:
        return found
    keys = config_columns(df)
    # (ls's table has them; plot's layers do not: its status and diverged_step are `load`'s, of every table)
    results_here = {c for c in RESULT_COLUMNS if c in df.columns} - {store.STATUS, store.DIVERGED_AT}
    headers = [RESULT_COLUMNS[c][0] for c in RESULT_COLUMNS if c in results_here]  # ('ratio ned': 'ratio end')
    short = abbreviate(keys)
    hint = did_you_mean(key, list(dict.fromkeys([*keys, *short.values(), *choices, *headers])),
                        same={v: k for k, v in short.items()})
    if not hint:  # a key's usual other name (learning_rate: optim.lr), or a word of a column's name or header
        from gradflow.config import KEY_SYNONYMS  # (accuracy: final.test_acc), each by the column's name

        leaf = KEY_SYNONYMS.get(key.rsplit(".", 1)[-1].lower())
        columns = [*choices, *(c for c in RESULT_COLUMNS if c in results_here), *keys]
        near = ([k for k in keys if k.rsplit(".", 1)[-1] == leaf][:3]
                or by_words(key, columns, {c: [RESULT_COLUMNS[c][0]] for c in RESULT_COLUMNS}))
        hint = f" (did you mean {' or '.join(near)}?)" if near else ""
    results = ", or a result by its header: 'train loss'" if results_here else ""
    raise GradflowError(f"{option} key {key!r} is not a column{hint}; choices: {', '.join(choices)}{more}"
                        f" (or any config key, by its full name or its last part{results})")
