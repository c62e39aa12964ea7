"""Which config keys vary in a results table, and how their values compare and sort.

The one definition of a swept key, shared by the figures, `gradflow.compare` and `gradflow ls`; it
needs only pandas, so a command that tabulates results does not pay for importing matplotlib.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import pandas as pd

from gradflow import store
from gradflow.fmt import and_list


SEED_KEYS = ("seed",)  # config keys aggregated over (median line + min-max band), never swept axes


def config_columns(df: pd.DataFrame) -> list[str]:
    """Config keys among the columns: dotted keys (model.depth), seed and the user's own top-level keys
    (+tag=baseline, named in the frame's attrs by `gradflow.load`), not the result summaries."""
    user = set(df.attrs.get("user_keys", ()))  # (store.USER_KEYS)
    return [c for c in df.columns if isinstance(c, str) and (
        ("." in c and not c.startswith(("final.", "grad_ratio.", "signal_ratio."))) or c == "seed" or c in user)]


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


def full_key(df: pd.DataFrame, key: str, shown: Sequence[str] = ()) -> str | None:
    """The column a user's `key` names: itself, a config key by the short name a table shows it under
    (`shown`'s abbreviations: depth, activation, sw2) or by its last part, or a group by its choice
    (init -> init.name); None where it names none."""
    if key in df.columns:
        return key
    keys = config_columns(df)
    short = {v: k for k, v in [*abbreviate(keys).items(), *abbreviate(list(shown)).items()]}  # (the shown win)
    return short.get(key) or (f"{key}.name" if f"{key}.name" in keys else None)


def hashable(s: pd.Series) -> pd.Series:
    """Lists/tuples/dicts (e.g. optim.betas) as strings, so they can be counted and grouped."""
    if s.dtype == object and s.map(lambda v: isinstance(v, (list, tuple, dict, np.ndarray))).any():
        return s.map(lambda v: str(list(v)) if isinstance(v, (list, tuple, np.ndarray))
                     else str(v) if isinstance(v, dict) else v)
    return s


def n_distinct(s: pd.Series) -> int:
    """Distinct values, NaN counted as one value (init.sw2=NaN next to 1.0 is a different config)."""
    return int(hashable(s).nunique(dropna=False))


def swept_keys(df: pd.DataFrame, exclude: Sequence[str] = SEED_KEYS, implied: bool = False) -> list[str]:
    """Config columns that take more than one value in `df`, in column order (seed excluded;
    pass exclude=() to count it, as `gradflow ls` does). A key that varies only because a group
    choice among them sets it (`implied_keys`: init.gain, which init=xavier_normal has and
    init=standard lacks) is no axis of its own and is left out, as is one that only some runs set
    (`partial_keys`: model.name beside a Recorder's runs), unless implied=True."""
    keys = [c for c in config_columns(df) if c not in exclude and n_distinct(df[c]) > 1]
    return keys if implied else axes(df, keys)


def axes(df: pd.DataFrame, keys: list[str]) -> list[str]:
    """Of the varying `keys`, those that are axes of their own: not set by a group choice among them
    (`implied_keys`) nor set only in the runs that have their group at all (`partial_keys`)."""
    implied, partial = implied_keys(df, keys), partial_keys(df, keys)
    return [k for k in keys if k not in implied and k not in partial]


def implied_keys(df: pd.DataFrame, keys: list[str]) -> dict[str, str]:
    """Of `keys`, those that follow from a config group's choice among them: key -> that choice's key.
    data.dim varies only because data=gaussian has it and data=mnist1d does not, so within each data
    choice it takes one value; showing `data` identifies the run. A key that varies within one choice
    (two gaussian runs of different data.dim) is not implied. So is a key that only some runs read and
    that takes one value in those, where another key's value says which runs read it: model.alpha, read
    where model.skip=residual and unset (no setting of the run's) where model.skip=none."""
    out = {}
    for k in keys:
        parts = k.split(".")
        for n in range(len(parts) - 1, 0, -1):  # the nearest group first: model.block.x -> model.block.name
            choice = ".".join(parts[:n]) + ".name"
            if choice != k and choice in keys:
                per_choice = hashable(df[k]).groupby(hashable(df[choice]), dropna=False).nunique(dropna=False)
                if (per_choice <= 1).all():
                    out[k] = choice
                break
        if k not in out and (reader := _read_where(df, k, keys)):
            out[k] = reader
    return out


def _read_where(df: pd.DataFrame, key: str, keys: Sequence[str]) -> str | None:
    """The key among `keys`, set in every run, whose value says whether `key` is read, if `key` is unset in
    some runs and takes one value in the others (see `implied_keys`): the keys gradflow knows to decide it
    first (model.skip for model.alpha: `choices.CONDITIONAL_KEYS`); else one whose values group the runs, a
    value shared by two or more (a key with a new value in every run, a depth, splits them all trivially),
    the fewest values first."""
    from gradflow.choices import ALSO_DECIDED_BY, CONDITIONAL_KEYS

    unset = df[key].isna()
    if not unset.any() or unset.all() or n_distinct(df.loc[~unset, key]) != 1:
        return None
    # (a key every run sets: two keys a Recorder's runs both lack say nothing of each other)
    candidates = [k for k in keys if k != key and df[k].notna().all()]

    def says(k: str) -> bool:
        return bool((unset.groupby(hashable(df[k])).nunique() <= 1).all())

    deciders = (*CONDITIONAL_KEYS.get(key, ((),))[0], *ALSO_DECIDED_BY.get(key, ()))
    known = [k for k in deciders if k in candidates and says(k)]
    if known:
        return known[0]
    def groups(k: str) -> bool:
        counts = hashable(df[k]).value_counts()
        if not is_numeric_key(df, k):  # a choice (optimizer=adam beside three sgd: adam's beta2), one run or more
            return bool(counts.max() >= 2)
        # a number, at values other runs share where the runs that set `key` have it: a depth of its own, 3,
        # beside 2, 2 and 4, "set" lr for a run's own loop alone
        return bool((counts[hashable(df.loc[~unset, k]).unique()] >= 2).all())

    grouping = [k for k in candidates if groups(k) and says(k)]
    return min(grouping, key=lambda k: n_distinct(df[k]), default=None)


def partial_keys(df: pd.DataFrame, keys: list[str], among: str | None = None) -> list[str]:
    """Of `keys`, the dotted ones that vary only because some runs lack their whole group and that take
    one value in every run that has it: beside a Recorder's run (config {lr, depth}, no model.* at all)
    model.name=mlp and train.steps=20 of `gradflow run`'s runs are no axis, while model.depth=2,4 is.
    A key missing from a run that has other keys of its group (init.sw2 of init=standard) is left to
    `implied_keys`; seed's group is every dotted key; a user's own top-level key (+tag=baseline beside
    no tag) always counts. With `among` (a column: compare's source), also any key that some of its
    groups lack altogether and that takes one value wherever set: data.dim of a Gaussian source beside
    an MNIST-1D one, whose data group has other keys (data.name, data.cache)."""
    absent: dict[str, pd.Series] = {}  # group -> the runs with no key of it
    out = []
    for k in keys:
        # (a dotted key only: a Recorder's own lr and depth beside `gradflow run`'s keys keep their values)
        if among is not None and "." in k and df[k].isna().groupby(df[among]).all().any() \
                and n_distinct(df[k].dropna()) == 1:
            out.append(k)
            continue
        group = k.split(".")[0] if "." in k else "" if k in SEED_KEYS else None
        if group is None:
            continue
        if group not in absent:
            cols = [c for c in config_columns(df) if (c.startswith(f"{group}.") if group else "." in c)]
            absent[group] = df[cols].isna().all(axis=1)
        if absent[group].any() and df[k].isna().equals(absent[group]) and n_distinct(df.loc[~absent[group], k]) == 1:
            out.append(k)
    return out


def between_sources(df: pd.DataFrame, keys: Sequence[str]) -> list[str]:
    """Of `keys`, those no source varies on its own (each fixed in it, or set by a choice: an lstm's
    forget_bias, 0 in one folder and 3 in another, unset for their rnn and gru): overlaid, they only tell
    the sources apart, which the sources' line styles show (they split no panels)."""
    if "source" not in df.columns or n_distinct(df["source"]) < 2:
        return []
    parts = [part for _, part in df.groupby("source", sort=False)]
    within = {k for part in parts for k in swept_keys(part)}
    # (a key fixed in every source is one compare's overlay_table drops: its sources' legend entries name it)
    return [k for k in keys if k not in within and any(n_distinct(part[k]) > 1 for part in parts)]


def partial_phrase(partial: Sequence[str], whose: str = "the other keys") -> str:
    """`partial_keys` in words, by group: "seed, and the other keys of model, data and train"."""
    groups = list(dict.fromkeys(k.split(".")[0] for k in partial if "." in k))
    named = [k for k in partial if "." not in k]  # (seed)
    if groups:
        named.append(f"{whose} of {and_list(groups)}")
    return ", and ".join(named)


def is_missing(v: Any) -> bool:
    """A cell that holds no value: None, NaN, pandas' NA or NaT (a nullable Int64 column's gap); a list is a value."""
    return v is None or v is pd.NA or v is pd.NaT or (isinstance(v, (float, np.floating)) and math.isnan(v))


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


def rows_with(df: pd.DataFrame, key: str, v: Any) -> pd.DataFrame:
    """The rows of `df` whose `key` is `v` (missing matching missing, lists their string form: `vkey`)."""
    return df[df[key].map(vkey) == vkey(v)]


def ordered_values(s: pd.Series) -> list[Any]:
    """Distinct values in their natural order (numbers ascending, strings alphabetically), NaN last; a
    comparison's sources (the column `source`) in the order they were given, as its table letters them."""
    vals = list(dict.fromkeys(vkey(v) for v in hashable(s).drop_duplicates()))  # each distinct value once
    nan = [v for v in vals if v == "\0nan"]
    rest = [v for v in vals if v != "\0nan"]
    if s.name != "source":
        try:
            rest.sort()
        except TypeError:
            rest.sort(key=str)
    return rest + ([math.nan] if nan else [])


def run_names(s: pd.Series) -> list[str]:
    """Distinct run ids in the order of their values, numbers as numbers (model.depth=5 before
    model.depth=10), as `ls` lists the runs."""
    from gradflow.store import natural_key

    return sorted(dict.fromkeys(map(str, s)), key=natural_key)


def single_value(df: pd.DataFrame, key: str) -> Any:
    """The one value of `key` in df, or None if the column is absent or varies."""
    if key not in df.columns or n_distinct(df[key]) != 1:
        return None
    return df[key].iloc[0]


def is_grid(df: pd.DataFrame, keys: Sequence[str], along: str | None = None) -> bool:
    """Whether the runs hold every combination of the values of `keys`, as a sweep does (or are a sweep's that
    spans them, cut short: its spec's keys, store.GRID_KEYS in the table's attrs); a folder of unrelated runs
    (say three runs of different depth, init and length) does not, nor one whose runs repeat a config
    (`repeated_runs`). Keys that change together count as one
    (`distinct_keys`)."""
    if repeated_runs(df):
        return False
    keys = distinct_keys(df, keys, along)
    if len(keys) < 2:
        return True
    spec = df.attrs.get(store.GRID_KEYS) or ()  # (a group's key, init, is its name's column, init.name)
    if all(k in spec or k.removesuffix(".name") in spec for k in keys):  # a sweep cut short: its spec's grid
        return True
    combos = df[list(keys)].apply(hashable).drop_duplicates()
    return len(combos) == int(np.prod([n_distinct(df[k]) for k in keys]))


def repeated_runs(df: pd.DataFrame) -> bool:
    """Whether two finished runs of one source share every config value, their seed included (or have no
    config to tell them apart): runs side by side that no key distinguishes (a Recorder's loops of two
    optimizers whose config names neither), not seeds of one setting nor a sweep, so never pooled as seeds.
    A run that failed (or is stale, interrupted, ...) beside its config's finished one is an earlier attempt,
    no repeat: a sweep's point that failed, done again under another name after the sweep was narrowed."""
    ids = [c for c in ("source", "run") if c in df.columns]
    if "run" not in ids:
        return False
    runs = df.drop_duplicates(ids)
    if "status" in runs.columns:
        runs = runs[runs["status"].isin(store.FINISHED)]
    columns = [c for c in ("source", *config_columns(df)) if c in df.columns]
    if not columns:
        return len(runs) > 1
    return bool(runs[columns].apply(hashable).astype(str).duplicated().any())


def not_swept_together(df: pd.DataFrame, keys: Sequence[str], along: str | None = None) -> bool:
    """Whether a figure draws `df`'s runs one legended line each: runs no config key tells apart
    (`repeated_runs`, in any source), or one source's runs that are no grid of `keys` (a folder of unrelated
    runs: `is_grid`). Several sources are otherwise each their own line style, their runs matched by key."""
    if "source" in df.columns and n_distinct(df["source"]) > 1:
        return repeated_runs(df)
    return not is_grid(df, keys, along)  # (is_grid asks repeated_runs first)


def distinct_keys(df: pd.DataFrame, keys: Sequence[str], along: str | None = None) -> list[str]:
    """`keys` without those that change only together with an earlier one, value for value both ways, over
    several combinations (init.name with model.activation where each activation has its own init, over
    depths): two configurations that differ in two keys do not make them one (each value is in one). With
    `along` (the depth a figure's x axis runs along), a key tied to it is dropped however few the
    combinations: a learning rate set by the depth (`optim.lr=${gf.div:0.5,model.depth}`)."""
    keys = list(dict.fromkeys([*([along] if along in keys else []), *keys]))
    # each combination of the keys' values once (a layers table's rows per run, a run's seeds)
    columns = df[list(keys)].apply(hashable).astype(str).drop_duplicates() if len(keys) else df[[]]

    def tied(j: str, k: str) -> bool:
        return columns[[j, k]].drop_duplicates().shape[0] == n_distinct(columns[j]) == n_distinct(columns[k])

    kept: list[str] = []
    for k in keys:
        several = len(columns) > n_distinct(columns[k])
        if not any(tied(j, k) and (several or j == along) for j in kept):
            kept.append(k)
    return kept
