"""From the long tables to what a figure draws: input checks, step selection and seed groups.

A "group" is the set of runs that differ only in their seed; it is drawn as one line (the median
over seeds) with a min-max band. Values a log axis cannot show are never dropped silently: NaN/inf
and values <= 0 are flagged per point so the figure can mark them.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, replace
from typing import Any, Sequence

import numpy as np
import pandas as pd

from gradflow import store
from gradflow.errors import GradflowError, did_you_mean
from gradflow.fmt import and_list, fmt
from gradflow.keys import config_columns, hashable, n_distinct, ordered_values, run_names, swept_keys, vkey
from gradflow.overrides import as_in_name, name_items
from gradflow.summary import same_list


@dataclass
class Series:
    """One line: the runs of a group (same config but the seed), aggregated over x."""
    config: dict[str, Any]  # the group's config (any one run's; they differ only in seed)
    runs: list[str]
    x: np.ndarray  # (n_x,)
    med: np.ndarray  # (n_x,) median over runs of the drawable values
    lo: np.ndarray  # (n_x,) min over runs
    hi: np.ndarray  # (n_x,) max over runs
    nonfinite: np.ndarray  # (n_x,) bool: some run logged NaN/inf here
    offscale: np.ndarray  # (n_x,) bool: some run logged a value <= 0 (log axes only)
    count: np.ndarray  # (n_x,) runs with a logged value here (seeds behind the median)
    seeds_only: bool = True  # the runs differ in their seed alone (not so where a swept key is not drawn)
    # where runs alike in what they measured are one line (collect_series' `alike`: optim.lr at step 0), the
    # seeds among its runs, which its band spans; 0 where each run is a seed of its own
    seeds: int = 0

    @property
    def label(self) -> str:
        more = len(self.runs) - 1
        word = "seeds" if self.seeds_only and not 0 < self.seeds < len(self.runs) else "runs"
        return self.runs[0] if not more else f"{self.runs[0]} (+{more} {word})"

    @property
    def n_seeds(self) -> int:
        """The seeds behind its median: its distinct seeds where runs alike in a key share it (`seeds`), else
        its runs where most of them have a value."""
        return self.seeds or int(self.count.max())


def rows_of(df: pd.DataFrame, config: dict, keys: Sequence[str]) -> np.ndarray:
    """Which rows of `df` have `config`'s values of `keys` (missing matching missing, as the series group them)."""
    keep = np.ones(len(df), dtype=bool)
    for k in keys:
        if k in df.columns:
            keep &= (df[k].map(vkey) == vkey(config.get(k))).to_numpy()
    return keep


def with_gaps(s: Series, xs) -> Series:
    """`s` with a point of no value (NaN: no segment reaches it) at each of `xs` it lacks."""
    new = np.setdiff1d(np.unique(np.asarray(xs, dtype=float)), s.x)
    if not len(new):
        return s
    order = np.argsort(np.r_[s.x, new], kind="stable")
    nan, no = np.full(len(new), np.nan), np.zeros(len(new), dtype=bool)
    return replace(s, x=np.r_[s.x, new][order], med=np.r_[s.med, nan][order], lo=np.r_[s.lo, nan][order],
                   hi=np.r_[s.hi, nan][order], nonfinite=np.r_[s.nonfinite, no][order],
                   offscale=np.r_[s.offscale, no][order], count=np.r_[s.count, np.zeros(len(new))][order])


def collect_series(df: pd.DataFrame, x: str, group_keys: Sequence[str], log: bool,
                   mark_diverged_end: bool = False, alike: Sequence[str] = ()) -> list[Series]:
    """One Series per group of runs (grouped by group_keys), values pivoted to run x `x`.

    A missing cell (not logged) is not a non-finite cell (logged NaN/inf): only the latter is marked.
    mark_diverged_end: a diverged run that logged no non-finite value gets its mark at its last x.
    alike: swept keys left out of group_keys whose runs measured the same (`style.no_effect_at_init`): a
    group that differs in them and its seed is still a group of seeds, as many as it has distinct seeds.
    """
    cfg_cols = config_columns(df)
    keys = list(group_keys)
    if keys:
        df = df.assign(**{k: hashable(df[k]) for k in keys})
        groups = list(df.groupby(keys, dropna=False, sort=False).indices.values())  # row positions per group
    else:
        groups = [np.arange(len(df))]
    # every run pivoted to run x `x` at once; each group then takes its runs' rows and its own x values
    cells = df.groupby(["run", x], sort=True)["value"]
    wide_all = cells.last().unstack(x)  # (runs, xs)
    present_all = cells.size().unstack(x).reindex_like(wide_all).notna().to_numpy()
    y_all = wide_all.to_numpy(dtype=float)
    position = wide_all.index.get_indexer(df["run"])  # each row's run, as a row of wide_all
    status_all = df.groupby("run")["status"].first().reindex(wide_all.index).astype(str).to_numpy()
    columns = {c: df[c].to_numpy() for c in [*cfg_cols, "source", "run"]}
    # a comparison's keys its sources differ in, left out of its table: each line's config has its source's
    constants = df.attrs.get("source_keys", {})  # (store.SOURCE_KEYS)
    # each run's config but its seed once, as codes (a row of wide_all's runs, a column per key; NaN
    # matches NaN), for whether a group's runs differ in more than their seed
    per_run = df.drop_duplicates("run").set_index("run").reindex(wide_all.index)
    others = [c for c in cfg_cols if c != "seed" and c not in alike]
    codes = np.array([pd.factorize(hashable(per_run[c]))[0] for c in others]).T.reshape(len(per_run), len(others))
    seed_codes = pd.factorize(hashable(per_run["seed"]) if "seed" in per_run.columns
                              else pd.Series(np.arange(len(per_run))))[0]
    # each group's runs, in sorted order; the statistics over seeds for all groups of one size at once
    # (a stack of (groups, runs, xs): no bigger than y_all), over every x, each group then taking its own
    ats = [np.unique(position[rows]) for rows in groups]
    stats: list[tuple] = [()] * len(groups)
    for k in sorted({len(at) for at in ats}):
        of_size = [g for g, at in enumerate(ats) if len(at) == k]
        at = np.stack([ats[g] for g in of_size])  # (groups, k)
        y, present = y_all[at], present_all[at]
        finite = np.isfinite(y)
        good = finite & (y > 0) if log else finite
        yg = np.where(good, y, np.nan)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns give NaN, as intended
            med, lo, hi = np.nanmedian(yg, axis=1), np.nanmin(yg, axis=1), np.nanmax(yg, axis=1)
        nonfinite = (present & ~finite).any(axis=1)
        offscale = (present & finite & ~good).any(axis=1)
        count = present.sum(axis=1)
        for i, g in enumerate(of_size):
            stats[g] = (med[i], lo[i], hi[i], nonfinite[i], offscale[i], count[i])
    if mark_diverged_end:  # each run's last logged x; -1 where it logged nothing or something non-finite
        quiet_end = np.where(present_all.any(axis=1) & ~(present_all & ~np.isfinite(y_all)).any(axis=1),
                             present_all.shape[1] - 1 - np.argmax(present_all[:, ::-1], axis=1), -1)
    xs = wide_all.columns.to_numpy()
    out = []
    for rows, at, (med, lo, hi, nonfinite, offscale, count) in zip(groups, ats, stats):
        cols = present_all[at].any(axis=0)  # the x values some run of the group logged
        status = status_all[at].tolist()
        if mark_diverged_end:
            nonfinite[[quiet_end[r] for r, st in zip(at, status) if st == "diverged" and quiet_end[r] >= 0]] = True
        config = {c: values[rows[0]] for c, values in columns.items()}
        seeds_only = bool((codes[at] == codes[at[0]]).all())
        seeds = len(np.unique(seed_codes[at])) if alike else 0
        out.append(Series({**constants.get(config["source"], {}), **config}, list(wide_all.index[at]),
                          xs[cols], med[cols], lo[cols], hi[cols], nonfinite[cols], offscale[cols], count[cols],
                          seeds_only, seeds))
    return out


def sort_series(series: list[Series], df: pd.DataFrame, keys: Sequence[str]) -> list[Series]:
    """Order lines by the natural order of the swept values (so legends read ascending)."""
    ranks = {k: {vkey(v): i for i, v in enumerate(ordered_values(df[k]))} for k in keys}
    return sorted(series, key=lambda s: tuple(ranks[k].get(vkey(s.config.get(k)), 1 << 30) for k in keys))


def parse_step(step: int | str, option: str = "step=") -> int | str:
    """A probed step number or "last"; GradflowError naming the option and the choices otherwise."""
    if isinstance(step, str) and step.strip().isdigit():
        return int(step)
    if isinstance(step, str) and step.strip() == "last":
        return "last"
    if isinstance(step, (int, np.integer)) and not isinstance(step, bool) and step >= 0:
        return int(step)
    raise GradflowError(f"{option}{step!r} is not allowed; choices: a probed step number (e.g. 0), or last")


def steps_phrase(steps, near: int, most: int = 12) -> str:
    """The probed `steps` as a short list: all of them, or the first few, those nearest `near` (the step
    asked for) and the last, with "..." where some are left out ("0, 1, 2, ..., 98, 99, 100, ..., 200")."""
    probed = sorted({int(s) for s in steps})
    if len(probed) <= most:
        return ", ".join(map(str, probed))
    nearest = sorted(probed, key=lambda s: (abs(s - near), s))[:most // 3]
    keep = sorted({*probed[:most // 3], *nearest, probed[-1]})
    parts = []
    for i, s in enumerate(keep):
        if i and probed.index(s) != probed.index(keep[i - 1]) + 1:
            parts.append("...")
        parts.append(str(s))
    return ", ".join(parts)


def at_step(df: pd.DataFrame, step: int | str) -> tuple[pd.DataFrame, str]:
    """Rows at one probed step (an int) or at each run's last probed step ("last"), and a title part.
    At "last", a run that diverged is taken at its last probed step with a finite value before the step
    it diverged at (`store.DIVERGED_AT`: that step's probes may be finite, 1e32 from an infinite loss),
    and the title part says so (`ended_early`: the runs a figure marks as diverged after)."""
    step = parse_step(step)
    if step == "last":
        runs = _each_run(df)
        last = df.groupby(runs)["step"].transform("max")
        if "value" in df.columns:
            finite = pd.Series(np.isfinite(pd.to_numeric(df["value"], errors="coerce").to_numpy(dtype=float)),
                               index=df.index)
            if store.DIVERGED_AT in df.columns:
                finite &= ~(df["step"] >= pd.to_numeric(df[store.DIVERGED_AT], errors="coerce"))
            last = df["step"].where(finite).groupby(runs).transform("max").fillna(last)  # (none finite: its last)
        sub = df[df["step"] == last]
        steps = sorted(sub["step"].unique())
        text = (f"step {steps[0]} (last probed)" if len(steps) == 1
                else f"each run's last probed step ({steps[0]}-{steps[-1]})")
        return sub, text
    sub = df[df["step"] == step]
    if sub.empty:
        raise GradflowError(f"step={step} was not probed; probed steps: {steps_phrase(df['step'], step)} (or 'last')")
    text = "step 0 (initialization)" if step == 0 else f"step {step}"
    runs = df.groupby(_each_run(df)).ngroups
    missing = runs - sub.groupby(_each_run(sub)).ngroups  # runs that stopped before it (diverged, say)
    if missing:  # (a source none of whose runs reached it: named, as no line of the figure says it)
        gone = [str(s) for s in dict.fromkeys(df["source"]) if s not in set(sub["source"])] \
            if len(_each_run(df)) > 1 else []
        text += f"; {missing} of {runs} runs never reached it (not drawn{': all of ' * bool(gone)}{and_list(gone)})"
    return sub, text


def _each_run(df: pd.DataFrame) -> list[pd.Series]:
    """The columns that name one run of `df`: its run, and its source where a comparison's are several (two
    folders' `run0`s are two runs: one's last step was taken as both's, and the other, diverged earlier,
    was not drawn)."""
    return [df["source"], df["run"]] if "source" in df.columns and df["source"].nunique() > 1 else [df["run"]]


def ended_early(df: pd.DataFrame, sub: pd.DataFrame) -> dict[str, int]:
    """The runs `sub` (rows of df) takes before their last probed step in df, and the step it takes:
    at "last", the runs whose later probes were NaN/inf only (`at_step`), and the runs that diverged after
    the step taken though no probe came after it (an RNN's last probe at step 16, finite, 1e34, and the
    loss infinite at step 17: it was drawn as a run that ended well)."""
    last = df.groupby(_each_run(df))["step"].max()
    at = sub.groupby(_each_run(sub))["step"].max()
    diverged = (pd.to_numeric(sub[store.DIVERGED_AT], errors="coerce").groupby(_each_run(sub)).first()
                if store.DIVERGED_AT in sub.columns else pd.Series(dtype=float))
    # (by the run's name; where several sources are, by (source, run): two folders' run0 are two runs)
    return {(str(r[0]), str(r[1])) if isinstance(r, tuple) else str(r): int(s) for r, s in at.items()
            if s < last.get(r, -1) or s < diverged.get(r, np.nan)}


def ended_here(s: Series, ended: dict) -> bool:
    """Whether a run of series `s` is one of `ended_early`'s."""
    return any(r in ended or (s.config.get("source"), r) in ended for r in map(str, s.runs))


def ended_text(ended: dict[str, int], names: Sequence[str]) -> str:
    """A title part for `ended_early`'s runs among those drawn (`names`: each drawn run's name, once per source):
    where each is drawn, and that it diverged after."""
    if len(ended) == 1:
        (run, at), = ended.items()
        if isinstance(run, tuple):  # (source, run) where several sources are: source/run, where the id does
            source, run = map(str, run)  # not start with its source already (compare's: store.prefix_runs)
            run = run if run.startswith(f"{source}/") else f"{source}/{run}"
        name = "the run" if len(names) == 1 else title_name(run, names)
        return f"{name} at step {at}, its last finite one (diverged after it: x at the top)"
    return f"{len(ended)} runs at their last step with finite values (diverged after it: x at the top)" if ended else ""


TITLE_NAME = 48  # characters of a run's name in a title line, which breaks between words only


def title_name(run: str, names: Sequence[str] = ()) -> str:
    """A run's folder name short enough for a title line (key=value items without spaces, which no line break
    splits): a long one by its items that the other runs of `names` do not all share (model.depth=20 where
    the runs' other settings are the same), whole items around "…" where those are still too long."""
    from gradflow.columns import short_id

    if len(run) <= TITLE_NAME:
        return run
    items = name_items(run)
    shared = set.intersection(*(set(name_items(str(n))) for n in names)) if len(names) > 1 else set()
    return short_id(",".join([i for i in items if i not in shared] or items), TITLE_NAME)


def named_run(run: object, runs: list[str]) -> str | None:
    """The run of `runs` that `run` names: itself, or the same key=value items in another order
    (model.depth=4,model.activation=relu for the folder model.activation=relu,model.depth=4), keys by
    the short name a table shows (depth=4), numbers as numbers (init.sw2=4 for the folder's 4.0), or
    some of its items where no other run has them all (depth=4 beside --where activation=relu)."""
    if str(run) in runs:
        return str(run)
    same = [r for r in runs if sorted(name_items(str(r))) == sorted(name_items(str(run)))]
    if len(same) == 1:
        return same[0]
    same = [r for r in runs if _matched(str(run), str(r)) == len(name_items(str(r))) == len(name_items(str(run)))]
    if len(same) == 1:
        return same[0]
    # fewer items than the folder's names, where they name one run alone (--where fixed the others)
    same = [r for r in runs if _matched(str(run), str(r)) == len(name_items(str(run)))]
    return same[0] if len(same) == 1 else None


def the_run(run: object, runs: list[str], df: pd.DataFrame) -> str | None:
    """The one run of `runs` that `run` names: by its folder's name (`named_run`), else as the one run of df
    whose config has every key=value item of `run` (keys whole or by their last part, as `named_run` reads
    them): runs whose folders are not named by their settings, a Recorder's (b2-lr1e-3), named by them all
    the same (blocks=2,lr=0.01). None where no one run has them all."""
    named = named_run(run, runs)
    if named is not None:
        return named
    found = runs_by_config(run, df)
    return found[0] if len(found) == 1 else None


def runs_by_config(run: object, df: pd.DataFrame) -> list[str]:
    """The runs of df whose config has every key=value item of `run` ([] where `run` is no such items),
    values read as `ls` shows them (true, false; null for none); a study's prefix (mlps/depth=4, in a
    folder of studies) keeps that study's runs."""
    study, _, asked = str(run).rpartition("/")
    items = _items(asked)
    if not all(k and v for k, v in items) or "run" not in df.columns or df.empty:
        return []
    columns = config_columns(df)
    rows = df.drop_duplicates("run")
    if study:
        rows = rows[rows["run"].astype(str).str.startswith(study + "/")]
    keep = np.ones(len(rows), dtype=bool)
    for key, value in items:
        matching = [c for c in columns if _same_key(c, key)]
        if not matching:
            return []
        keep &= np.array([any(_config_value_is(v, value) for v in row)
                          for row in rows[matching].itertuples(index=False)], dtype=bool)
    return [str(r) for r in run_names(rows.loc[keep, "run"])]


def _config_value_is(v: object, value: str) -> bool:
    """Whether a config cell holds `value` as a user writes it: as shown (true, false), as a number, or
    null/none where it has none."""
    if np.ndim(v) == 0 and pd.isna(v):
        return value.lower() in ("null", "none")
    return any(_same_value(text, value) for text in {str(v), fmt(v)}) or fmt(v) == value.lower() or \
        same_list(v, value)  # (a list, as typed)


def not_a_run(run: object, runs: list[str], where: str, most: int, named: str = "--run",
              df: pd.DataFrame | None = None) -> str:
    """Why `run` names no one run of `runs`: it matches several (each has its items, or in df its config:
    a key to add tells them apart), or none (the nearest, as choices)."""
    n = len(name_items(str(run)))
    several = [r for r in runs if _matched(str(run), str(r)) == n] or ([] if df is None else runs_by_config(run, df))
    if len(several) > 1:
        studies = sorted({str(r).rpartition("/")[0] for r in several})  # (in a folder of studies)
        study = (f", or its study first ({studies[0]}/{str(run).rpartition('/')[2]})"
                 if len(studies) > 1 and "" not in studies else "")
        return (f"{named} {str(run)!r} matches {len(several)} runs of {where}; add a key=value that tells them "
                f"apart{study}: {'; '.join(map(str, several[:most]))}{'; ...' if len(several) > most else ''}")
    unknown = _unknown_key(str(run), runs, df)
    if unknown is not None:  # (the runs alone were listed: which item named nothing was left to guess)
        keys = swept_keys(df)
        meant = did_you_mean(unknown, keys if "." in unknown else [k.rsplit(".", 1)[-1] for k in keys])
        return (f"{named} {str(run)!r}: no run of {where} has a key {unknown!r}{meant}; keys that vary: "
                f"{', '.join(keys) or '(none)'}; runs: {nearest_runs(run, runs, most)}")
    return f"{named} {str(run)!r} is not a run of {where}; choices: {nearest_runs(run, runs, most)}"


def _unknown_key(run: str, runs: list[str], df: pd.DataFrame | None) -> str | None:
    """The first key of `run`'s key=value items that neither a run's name nor (in df) a config has."""
    if df is None or "run" not in df.columns:
        return None
    columns = config_columns(df)
    named = {k for r in runs for k, _ in _items(str(r))}
    for key, value in _items(run):
        if key and value and not any(_same_key(c, key) for c in columns) and not any(_same_key(k, key) for k in named):
            return key
    return None


def nearest_runs(run: object, runs: list[str], most: int) -> str:
    """An error's choices for a run not found: up to `most` of `runs`, those sharing the most key=value
    items with `run` first (a list cut in folder order hid the one meant), "..." where some are left out."""
    near = sorted(runs, key=lambda r: (-_matched(str(run), str(r)), _distance(str(run), str(r))))
    return ", ".join(map(str, near[:most])) + (", ..." if len(runs) > most else "")


def _items(run: str) -> list[tuple[str, str]]:
    """A run id's (key, value) items, past its study's folder in a folder of sweeps (mlps/model.depth=20,seed=0:
    the prefix hid model.depth from a full key)."""
    return [(k, v) for k, _, v in (item.partition("=") for item in name_items(run.rsplit("/", 1)[-1]))]


def _same_key(k: str, key: str) -> bool:
    # the key whole, by its last part, or as `ls` heads a choice's name (model.name: model)
    return k == key or k.endswith("." + key) or k.removesuffix(".name") == key


def _matched(asked: str, run: str) -> int:
    """How many of `asked`'s key=value items one of `run`'s matches (the key whole or by its last part,
    the value as written or as the same number)."""
    have = _items(run)
    return sum(any(_same_key(k, key) and _same_value(v, value, named=True) for k, v in have)
               for key, value in _items(asked))


def _distance(asked: str, run: str) -> float:
    """How far `run`'s numbers are from `asked`'s, key by key (depth=21: depth=20 before depth=5); a key the
    run lacks puts it last (a custom model's runs beside the depth sweep came first), and values that are
    no numbers add nothing."""
    have = _items(run)
    total = 0.0
    for key, value in _items(asked):
        found = [v for k, v in have if _same_key(k, key)]
        if not found:
            return math.inf
        for v in found:
            try:
                total += abs(float(v) - float(value))
            except ValueError:
                pass
    return total


def name_says(run: str, key: str, value: Any) -> bool:
    """Whether a run's folder name has key=value among its items: the key whole, by its last part, or a choice by
    its group (init=standard for init.name), the value as written or as the same number (optim.lr=1e-3 for
    0.001)."""
    keys = {key, key.removesuffix(".name")}
    return any(any(_same_key(whole, k) for whole in keys) and _same_value(v, fmt(value), named=True)
               for k, v in _items(run))


def _same_value(a: str, b: str, named: bool = False) -> bool:
    """Whether two values are one: as written, as the same number, or, with `named` (`a` a folder name's
    value), as the folder's name writes `b` ([0.9,0.99] is _0.9,0.99_ there, my:Net my_Net); a config's
    value is no name's (x/y and x_y are two values there)."""
    if a == b or named and a == as_in_name(b):
        return True
    try:
        return float(a) == float(b)
    except ValueError:
        return False


def pick_run(df: pd.DataFrame, run: str | None, what: str) -> pd.DataFrame:
    """The rows of one run: `run`, or the only run in df; GradflowError listing runs otherwise."""
    runs = run_names(df["run"])
    shown = ", ".join(map(str, runs[:5])) + (", ..." if len(runs) > 5 else "")
    if run is None:
        if len(runs) != 1:
            raise GradflowError(f"{what} draws one run and this table holds {len(runs)}; pass run=one of: {shown}")
        run = runs[0]
    sub = df[df["run"] == (the_run(run, runs, df) or str(run))]
    if sub.empty:
        raise GradflowError(f"run={run!r} is not in the {what} table; choices: {nearest_runs(run, runs, 5)}")
    return sub


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


def check_key(key: str | None, what: str, allowed: Sequence[str], df: pd.DataFrame | None = None) -> None:
    """GradflowError unless key is None or one of the allowed (swept) keys; or, where `df` is one figure of
    several (`kinds.figure_parts`, the command having checked the key against all the runs), a key its runs
    share a value of (`--color lr` over a folder of sweeps, drawn a figure per activation: "not a swept key ...
    choices: model.depth")."""
    if key is not None and key not in allowed and not (df is not None and df.attrs.get("figure_part")
                                                       and key in df.columns and n_distinct(df[key]) == 1):
        raise GradflowError(f"{what}={key!r} is not a swept key of this data; choices: "
                            f"{', '.join(allowed) or '(nothing varies)'}")


def spread_quantities(layers: pd.DataFrame) -> list[str]:
    """The quantities some run has at two probe points or more: a first and a last, so a ratio."""
    points = layers.groupby(["run", "quantity"], observed=True)["layer"].nunique()
    return list(map(str, ordered_values(pd.Series(points[points > 1].index.get_level_values("quantity")))))


def first_last(layers: pd.DataFrame, quantity: str, when: str) -> pd.DataFrame:
    """One row per run: its config, run, source and status, and `value`, the first / last probe
    point's ratio of `quantity` at step 0 (when="init") or at the run's last probed step ("final"): a
    diverged run's last before the step it diverged at (`store.DIVERGED_AT`), as `ls`'s ratio end (its
    last probed step was the non-finite one, drawn as diverged with no value). A run with the quantity
    at one probe point only (a recurrent net's grad_norm: the head's) has no ratio and no row: a ratio
    never recorded is missing, not NaN (which reads as diverged)."""
    rows = layers[layers["quantity"] == quantity]
    if rows.empty:
        raise GradflowError(f"quantity={quantity!r} is not in the layers table; "
                            f"choices: {', '.join(map(str, ordered_values(layers['quantity'])))}")
    keep = [c for c in config_columns(rows) + ["run", "source", "status"] if c in rows.columns]
    if when == "init":
        at = rows["step"] == 0
    else:
        steps = rows["step"]
        if store.DIVERGED_AT in rows.columns:
            steps = steps.where(~(steps >= pd.to_numeric(rows[store.DIVERGED_AT], errors="coerce")))
        last = steps.groupby(rows["run"]).transform("max")  # (none before it: its last probed step)
        at = rows["step"] == last.fillna(rows.groupby("run")["step"].transform("max"))
    ends = rows[at].sort_values(["run", "layer"])
    run, value = ends["run"].to_numpy(), ends["value"].to_numpy(dtype=float)
    first = np.flatnonzero(np.r_[True, run[1:] != run[:-1]])  # each run's first row (sorted by layer)
    last = np.r_[first[1:], len(run)] - 1
    spread = last > first
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = pd.Series(value[first[spread]] / value[last[spread]], index=run[first[spread]])
    out = rows.drop_duplicates("run")[keep]
    out = out[out["run"].isin(set(ratios.index))].reset_index(drop=True)
    return out.assign(value=out["run"].map(ratios).astype(float))


def setting(df: pd.DataFrame, key: str) -> pd.Series | None:
    """Each row's value of `key`: its column, or, in a comparison whose sources each fix it at another value
    (`compare.overlay_table` drops such a key, kept in attrs: the line style says it), its source's (a
    clipping source beside one that does not clip lost its threshold and its share); None where neither."""
    if key in df.columns:
        return df[key]
    fixed = df.attrs.get("source_keys", {})  # (store.SOURCE_KEYS)
    if "source" not in df.columns or not any(key in keys for keys in fixed.values()):
        return None
    return df["source"].map({s: keys.get(key) for s, keys in fixed.items()})
