"""Published depth experiments: run their sweeps, draw the paper-style figures, check the claims.

An experiment is data, not code: `experiments/reproduce/<name>.yaml` names the paper, the arms
(each one sweep, run through the same machinery as `gradflow sweep`, so it resumes and works on
any launcher), what each scale changes, the figures, and the claims. A claim says which measure
to compute from the results on disk (a function in MEASURES, with its arguments), the paper's
value, and the test the measured value must pass. Results go to results/reproduce/<name>[-scale]/.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import math
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from gradflow import store, theory, workers
from gradflow.config import EXPERIMENTS_DIR, override_parser
from gradflow.overrides import override_key, override_value
from gradflow.errors import GradflowError, did_you_mean, shorten
from gradflow.fmt import and_list, fmt
from gradflow.keys import SEED_KEYS
from gradflow.theory import FIT_TRIM

if TYPE_CHECKING:
    from gradflow import sweep as sweep_mod

SPEC_DIR = EXPERIMENTS_DIR / "reproduce"
SCALES = ("quick", "default", "paper")


# --- the spec ---------------------------------------------------------------------------------------
@dataclass
class Spec:
    name: str
    paper: str  # authors, year, title, figure/table followed
    summary: str  # the claim in one line
    runtime: str  # measured CPU time of the default scale, by hand
    base: list[str]  # overrides every arm shares
    arms: dict[str, list[str]]  # arm -> its sweep overrides
    scales: dict[str, dict[str, list[str]]]  # scale -> {"all" or arm: overrides}
    scaled: dict[str, str]  # scale -> what was scaled down and why
    claims: list[dict]
    figures: list[dict] = field(default_factory=list)  # kind, arm(s), file, where, the figure's own arguments
    notes: str = ""

    @classmethod
    def load(cls, name: str) -> "Spec":
        path = SPEC_DIR / f"{name}.yaml"
        if not path.exists():
            raise GradflowError(f"reproduce {name!r} is not a known experiment{did_you_mean(name, names())}; choices: {', '.join(names())}, all")
        try:
            raw = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
        except Exception as e:  # (yaml's parser errors: the spec's file and the parser's reason, on one line)
            raise GradflowError(f"{path} cannot be read: {shorten(' '.join(str(e).split()), 200)}") from None
        try:
            _check_layout(raw)
        except GradflowError as e:
            raise GradflowError(f"{path}: {e}") from None
        raw.setdefault("name", name)
        for key in ("base", "figures", "notes", "scaled", "scales"):
            raw.setdefault(key, {} if key in ("scaled", "scales") else [] if key != "notes" else "")
        return cls(**raw)

    def overrides(self, arm: str, scale: str, user: list[str]) -> list[str]:
        """The arm's sweep overrides at a scale, with the user's overrides replacing same-key ones."""
        layers = [self.base, self.arms[arm], self.scales.get(scale, {}).get("all", []),
                  self.scales.get(scale, {}).get(arm, []), user]
        merged: dict[str, str] = {}
        for layer in layers:
            for o in layer:
                merged[override_key(o)] = o
        return list(merged.values())


def names() -> list[str]:
    return sorted(p.stem for p in SPEC_DIR.glob("*.yaml"))


SPEC_KEYS = {"paper": str, "summary": str, "runtime": str, "arms": dict, "claims": list,  # (required)
             "name": str, "base": list, "scales": dict, "scaled": dict, "figures": list, "notes": str}
REQUIRED = ("paper", "summary", "runtime", "arms", "claims")
FIGURE_TABLES = {"profile": "layers", "heatmap": "layers", "curves": "metrics", "gradnorm": "metrics",
                 "ratio": "runs", "grid": "runs", "hist": "hist", "spectrum": "jacobian"}  # a spec figure's kind -> table
EXPECTS = ("lt", "le", "gt", "ge", "between", "approx")


def _check_layout(raw) -> None:
    """A spec's keys, their kinds, its arms' and scales' overrides, its scales' names and arms, each claim's
    text, test, source and measure, and each figure's kind and arms, as it loads: a misspelled key was a TypeError, a misspelled scale ran the default sizes
    under the quick label, and a figure's or a test's typo a KeyError after the whole sweep had run."""
    if not isinstance(raw, dict):
        raise GradflowError("a spec is key: value settings (paper, summary, runtime, arms, claims, ...)")
    for key, value in raw.items():
        if key not in SPEC_KEYS:
            raise GradflowError(f"unknown key {key!r}{did_you_mean(str(key), list(SPEC_KEYS))}; a spec's keys: "
                                f"{', '.join(SPEC_KEYS)}")
        if not isinstance(value, SPEC_KEYS[key]):
            raise GradflowError(f"{key} is a {type(value).__name__}, not a {SPEC_KEYS[key].__name__}")
    missing = [k for k in REQUIRED if k not in raw]
    if missing:
        raise GradflowError(f"{and_list(missing)} {'is' if len(missing) == 1 else 'are'} missing; a spec needs "
                            f"{', '.join(REQUIRED)}")
    arms = list(raw["arms"])
    lists = [(f"arms.{a}", v) for a, v in raw["arms"].items()] + [("base", raw.get("base", []))]
    lists += [(f"scales.{sc}.{a}", v) for sc, by in raw.get("scales", {}).items() if isinstance(by, dict)
              for a, v in by.items()]
    for where, value in lists:  # (None, `arms: {a: }`, was a TypeError; a string read as its letters)
        if not isinstance(value, list):
            raise GradflowError(f"{where} is {value!r}, not a list of key=value overrides")
        bad = [o for o in value if not isinstance(o, str) or "=" not in o]
        if bad:
            raise GradflowError(f"{where} has {bad[0]!r}, not a key=value override (quote comma lists in YAML flow "
                                "lists: ['model.depth=10,60'])")
    for scale, text in raw.get("scaled", {}).items():
        if not isinstance(text, str):
            raise GradflowError(f"scaled.{scale} is {text!r}, not a sentence saying what the scale changes and why")
    for where, named in [("scales", raw.get("scales", {})), ("scaled", raw.get("scaled", {}))]:
        for scale in named:
            if scale not in SCALES:
                raise GradflowError(f"{where}.{scale} is not a scale{did_you_mean(str(scale), list(SCALES))}; "
                                    f"choices: {', '.join(SCALES)}")
    for scale, by_arm in raw.get("scales", {}).items():
        if not isinstance(by_arm, dict):
            raise GradflowError(f"scales.{scale} is a {type(by_arm).__name__}, not arm: [overrides]")
        for arm in by_arm:
            if arm not in (*arms, "all"):
                raise GradflowError(f"scales.{scale}.{arm} is not an arm{did_you_mean(str(arm), arms)}; choices: "
                                    f"{', '.join(arms)}, all")
    for i, claim in enumerate(raw["claims"]):
        if not isinstance(claim, dict) or not isinstance(claim.get("text"), str):
            raise GradflowError(f"claims[{i}] has no text")
        expect = claim.get("expect")
        tests = [k for k in expect or {} if k in EXPECTS] if isinstance(expect, dict) else []
        shape = {"between": lambda v: isinstance(v, list) and len(v) == 2 and all(_number(x) for x in v),
                 "approx": lambda v: _number(v) and _number(expect.get("tol"))}
        if (len(tests) != 1 or set(expect) - {tests[0], "tol"} or "tol" in expect and tests[0] != "approx"
                or not shape.get(tests[0], _number)(expect[tests[0]])):
            raise GradflowError(f"claim {claim['text']!r}: expect={expect!r} is not one test; write {{lt|le|gt|ge: "
                                "NUMBER}, {between: [LO, HI]} or {approx: NUMBER, tol: NUMBER}")
        claim_source(claim)
        _check_for_each(claim)
        for one in expand([claim]):
            check_measure(one.get("measure"), arms)
    for i, figure in enumerate(raw.get("figures", [])):
        kind = figure.get("kind") if isinstance(figure, dict) else None
        if not isinstance(kind, str) or kind not in FIGURE_TABLES:
            raise GradflowError(f"figures[{i}]: kind={kind!r} is not a figure{did_you_mean(str(kind), list(FIGURE_TABLES))}; "
                                f"choices: {', '.join(FIGURE_TABLES)}")
        _check_where(figure.get("where"), f"figures[{i}] ({kind})")
        for arm in figure.get("arm") if isinstance(figure.get("arm"), list) else [figure.get("arm")]:
            if arm not in arms:
                raise GradflowError(f"figures[{i}] ({kind}): arm={arm!r} is not an arm"
                                    f"{did_you_mean(str(arm), arms)}; choices: {', '.join(arms)}")


def _check_where(where, what: str) -> None:
    """A measure's or a figure's `where` picks runs by config keys: a misspelled one (init.nme) picked none,
    and the claim FAILed after the whole sweep had run."""
    from gradflow.config import known_keys

    if where is None:
        return
    if not isinstance(where, dict):
        raise GradflowError(f"{what}: where={where!r} is not {{KEY: VALUE, ...}}")
    for key in where:  # (a dotted key is the config's; others are a table's columns: layer, quantity)
        if "." in str(key) and key not in known_keys() and not str(key).startswith("model.kwargs."):  # (a custom
            # model's own arguments are columns too)
            raise GradflowError(f"{what}: where key {key!r} is not a config key"
                                f"{did_you_mean(str(key), list(known_keys()))}")


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def root_for(name: str, scale: str, results: str = "results") -> Path:
    return Path(results) / store.REPRODUCE_DIR / (name if scale == "default" else f"{name}-{scale}")


def resume_command(arm: Path) -> str | None:
    """The `gradflow reproduce` command that resumes the reproduction whose arm's sweep is at `arm`
    (<results>/reproduce/<experiment>[-<scale>]/<arm>) and checks its claims, with the overrides it was
    given: each arm's recorded overrides but its spec's own, over every arm. None where `arm` is no
    reproduction's arm (or its experiment or arm is no longer known): the sweep's own command runs it."""
    import shlex

    arm = Path(arm).resolve()
    root = arm.parent
    if not store.in_reproduction(arm):
        return None
    name, _, scale = root.name.rpartition("-")
    if scale not in SCALES or scale == "default" or not name:
        name, scale = root.name, "default"
    if name not in names() or arm.name not in (spec := Spec.load(name)).arms:
        return None
    given: dict[str, str] = {}  # key -> override, as the user gave it to every arm
    for a in spec.arms:
        recorded = (store.sweep_spec(root / a) or {}).get("overrides") or []
        own = set(spec.overrides(a, scale, []))
        for o in map(str, recorded):
            if o in own or override_key(o) in ("results", "name"):  # (results= is the command's last word)
                continue
            if given.setdefault(override_key(o), o) != o:  # two arms run with two values of a key (reproduced
                return None  # by hand, or the spec changed since): no one command resumes both as they were
    given = list(given.values())
    how = [] if scale == "default" else ["--quick"] if scale == "quick" else ["--scale", scale]
    return shlex.join(["gradflow", "reproduce", name, *how, *given, f"results={root.parent.parent}"])


# --- reading one arm's results ------------------------------------------------------------------------
class Arm:
    """One arm's results, loaded lazily, restricted to the runs of its current plan (so runs left over
    from an earlier grid in the same folder never mix in), with `where` filters on config columns."""

    def __init__(self, root: Path, runs: list[str] | None = None):
        self.root = root
        self.only = set(runs) if runs is not None else None
        self._tables: dict[str, pd.DataFrame] = {}
        self.cache: dict[tuple, object] = {}  # measures' expensive intermediate results, per arguments

    def load(self, name: str) -> pd.DataFrame:
        if name not in self._tables:
            if name == "runs":
                from gradflow.summary import runs_table

                df = runs_table(self.root, include_stale=False)  # (as store.load reads the other tables)
            else:
                df = store.load(self.root, name)
            if self.only is not None and store.RUN in df.columns:
                df = df[df[store.RUN].isin(self.only)]
            self._tables[name] = df
        return self._tables[name]

    def table(self, name: str, where: dict | None) -> pd.DataFrame:
        df = self.load(name)
        if store.RUN not in df.columns or df.empty:
            runs = self.load("runs")
            failed = runs[runs[store.STATUS] == store.FAILED] if store.STATUS in runs else runs
            why = f": {failed['error'].iloc[0]}" if len(failed) and "error" in failed else ""
            raise GradflowError(f"no {name} rows in arm {self.root.name} ({len(failed)} failed runs{why})")
        for key, value in (where or {}).items():
            if key not in df.columns:
                raise GradflowError(f"claim filter {key}={value!r}: no such column in arm {self.root.name}")
            col = df[key]
            df = df[np.isclose(col.astype(float), float(value)) if _numeric(value) and _numeric_col(col)
                    else col.astype(str) == str(value)]
        if df.empty:
            wanted = ", ".join(f"{k}={fmt(v)}" for k, v in where.items())
            raise GradflowError(f"no run of arm {self.root.name} has {wanted}")
        return df


def _numeric(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _numeric_col(col: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(col)


# --- measures: results -> one number per run (then aggregated over runs, i.e. seeds) -------------
@dataclass
class Measured:
    value: float  # the aggregate (mean over runs, or a share of them)
    per_run: list[float]
    note: str = ""  # why there is no value
    se: float = math.nan  # standard error of a mean over runs (seeds); nan for counts and single runs
    tally: str = ""  # "share": per_run are 0/1 (a run did or did not), value their mean; "geometric": value is
    # their geometric mean (a ratio whose runs spread over decades)
    of: str = ""  # what the value is made of, where it is a difference or a ratio: "χ₁ 0.749 measured, 0.759 theory"

    def spread(self) -> str:
        """How the runs spread: their range and standard error, or for a tally how many of them did."""
        if self.note:
            return self.note
        if self.tally == "share":
            return f"{sum(v == 1 for v in self.per_run)} of {len(self.per_run)} runs"
        finite = [v for v in self.per_run if np.isfinite(v)]
        parts = [f"[{fmt(min(finite), 3)}, {fmt(max(finite), 3)}] over {len(self.per_run)} runs"
                 ] if len(finite) >= 2 else []
        if np.isfinite(self.se):
            parts.append(f"s.e. {fmt(self.se, 3)}")
        if self.tally == "geometric" and len(self.per_run) >= 2:
            parts.append("geometric mean")
        return ", ".join(parts)

    def against(self, test: str) -> str:
        """How close a failing claim came, for its verdict line: "measured 12.3, test ≥ 100" (or why there is
        no value)."""
        return f"measured {fmt(self.value, 3)}, test {test}" if not self.note else f"{self.note}; test {test}"

    def cell(self) -> str:
        """The measured value with its spread: "0.701 ([0.69, 0.716] over 3 runs, s.e. 0.0079)"; a share of
        runs with how many did, "1 (3 of 3 runs)" (a range of 0/1 values would say nothing)."""
        spread = self.spread()
        said = "; ".join(part for part in (self.of if not self.note else "", spread) if part)
        return fmt(self.value, 3) + (f" ({said})" if said else "")


def _mean(values: list[float]) -> Measured:
    """The mean over runs with its standard error (over the finite values, when there are two or more)."""
    finite = np.array([v for v in values if np.isfinite(v)])
    se = float(finite.std(ddof=1) / math.sqrt(finite.size)) if finite.size >= 2 else math.nan
    return Measured(float(np.mean(values)) if values else math.nan, list(values), se=se)


MEASURES: dict[str, Callable[..., Measured]] = {}


def measure(fn: Callable[..., Measured]) -> Callable[..., Measured]:
    MEASURES[fn.__name__] = fn
    return fn


def _per_run(df: pd.DataFrame, fn: Callable[[pd.DataFrame], float],
             over: Callable[[list[float]], Measured] | None = None) -> Measured:
    """`fn` of each run's rows, taken together by `over` (their mean, `_mean`, unless said)."""
    return (over or _mean)([fn(g) for _, g in df.groupby(store.RUN, sort=True)])


def _geometric(values: list[float]) -> Measured:
    """The geometric mean over runs, for a ratio whose runs spread over decades: their mean is the largest
    run's (two seeds' lag-100 ratios, 1.5e-8 and 4.7e-10, averaged 7.6e-9 and passed < 1e-8 on the one
    seed's pull). A run at 0 makes it 0, one without a value (nan) leaves it none, as the mean did."""
    with np.errstate(divide="ignore", invalid="ignore"):
        value = float(np.exp(np.mean(np.log(np.asarray(values, dtype=float))))) if values else math.nan
    return Measured(value, list(values), tally="geometric")


def _profile(g: pd.DataFrame, quantity: str, step: int | str) -> pd.Series:
    """One run's profile of `quantity` at `step`, or at its last probed step where step is "last"."""
    return store.profile(g, quantity, store.last_step(g) if step == "last" else step)


def _layer(index: int, layers: pd.Index) -> int:
    return int(layers[index]) if index < 0 else index


@measure
def layer_factor(arm: Arm, where=None, quantity="signal_norm", step=0, trim=FIT_TRIM, squared=False) -> Measured:
    """Per-layer factor of a quantity towards the input, fitted by `theory.fit_chi1` over the bulk layers
    (`trim` dropped at each end): the factor of value^2 (chi_1) with squared=True, of value otherwise."""
    def one(g):
        p = _profile(g, quantity, step)
        chi = theory.fit_chi1(p.index.to_numpy(), p.to_numpy(), trim)
        return chi if squared else math.sqrt(chi)
    return _per_run(arm.table("layers", where), one)


@measure
def layer_ratio(arm: Arm, where=None, quantity="signal_norm", step=0, num=0, den=-1) -> Measured:
    """value[num] / value[den] at a step; negative indices count from the output (-1 = the head)."""
    def one(g):
        p = _profile(g, quantity, step)
        return float(p.loc[_layer(num, p.index)] / p.loc[_layer(den, p.index)])
    return _per_run(arm.table("layers", where), one)


def _curve(g: pd.DataFrame, split: str, metric: str) -> np.ndarray:
    """One run's values of a metric on a split, in step order."""
    return g[(g[store.SPLIT] == split) & (g[store.METRIC] == metric)].sort_values(store.STEP)[store.VALUE].to_numpy()


def _finals(runs: pd.DataFrame, metric: str) -> pd.Series:
    """Each run's final metric from run.json, NaN where it has none (a diverged run; every run of an arm
    that diverged throughout has no such column at all)."""
    column = f"final.{metric}"
    return runs[column].astype(float) if column in runs else pd.Series(math.nan, index=runs.index)


@measure
def final(arm: Arm, where=None, metric="train_loss") -> Measured:
    """A final metric from run.json: train_loss, train_acc, test_loss, test_acc."""
    return _mean(_finals(arm.table("runs", where), metric).tolist())


@measure
def reach(arm: Arm, where=None, metric="loss", split="train", below=1.0) -> Measured:
    """The share of runs that bring a metric below `below` at some evaluation: 1.0 = every run (a share, not
    a count, so that a claim reads the same with fewer seeds)."""
    def one(g):
        m = _curve(g, split, metric)
        return float((m < below).any())
    per = _per_run(arm.table("metrics", where), one)
    return Measured(float(np.mean(per.per_run)), per.per_run, tally="share")


@measure
def steps_to(arm: Arm, where=None, metric="train_loss", op="<=", threshold=1.0) -> Measured:
    """Learning speed: the first evaluation step at which `metric op threshold` holds, per run (inf for a
    run that never gets there), averaged over runs (gradflow.summary.steps_to, as `ls --steps-to`)."""
    from gradflow.summary import steps_to as first_step

    def one(g):
        step = first_step(g, metric, op, threshold)
        return math.inf if math.isnan(step) else step
    return _per_run(arm.table("metrics", where), one)


@measure
def status_share(arm: Arm, where=None, status="diverged") -> Measured:
    """The share of runs that ended with `status` (ok | diverged | failed): 1.0 = every run."""
    hits = (arm.table("runs", where)[store.STATUS] == status).astype(float).tolist()
    return Measured(float(np.mean(hits)), hits, tally="share")


@measure
def best(arm: Arm, where=None, metric="loss", split="train") -> Measured:
    """The lowest value of a metric over a run's evaluations (what it reached, however noisy its end)."""
    def one(g):
        m = _curve(g, split, metric)
        return float(np.nanmin(m)) if len(m) else math.nan
    return _per_run(arm.table("metrics", where), one)


@measure
def final_or_diverged(arm: Arm, where=None, metric="train_loss", untrained=math.inf) -> Measured:
    """A final metric from run.json, inf for a run that diverged (or whose value is not finite): for claims
    that a net does not train, where diverging is one way of not training. `untrained`: a final value at or
    above it (the loss of a constant prediction) counts as not training too, inf."""
    runs = arm.table("runs", where)
    values = [math.inf if status == store.DIVERGED or not np.isfinite(v) or v >= untrained else float(v)
              for status, v in zip(runs[store.STATUS], _finals(runs, metric))]
    return _mean(values)


def _per_trained_run(arm: Arm, where, fn: Callable[[pd.DataFrame], float], untrained: float | None) -> Measured:
    """`fn` of each run's metrics, where the run trained: a final training loss at or above `untrained` (a
    constant prediction's), or none, leaves the run without a value. For claims that hold of any net that
    does not move (bounded gradients, a clipped share: an lr of 0 passed them), which are claims of training."""
    df = arm.table("metrics", where)
    if untrained is None:
        return _per_run(df, fn)
    runs = arm.table("runs", where)
    idle = {run for run, v in zip(runs[store.RUN], _finals(runs, "train_loss")) if not v < untrained}
    out = _per_run(df, lambda g: math.nan if g[store.RUN].iat[0] in idle else fn(g))
    if idle:
        out.note = (f"{len(idle)} of the {len(runs)} runs did not train (a final training loss of {fmt(untrained, 3)} "
                    "or more, or none): this is a claim of training")
    return out


@measure
def grad_spike(arm: Arm, where=None, untrained: float | None = None) -> Measured:
    """The largest logged gradient norm (opt/grad_norm, the mean over an eval window, before clipping) as a
    multiple of the first window's gradient norm: how far gradients explode in training (inf once a gradient
    is not finite). `untrained`: runs that did not train have no value (`_per_trained_run`)."""
    def one(g):
        norms = _curve(g, "opt", "grad_norm")
        if len(norms) == 0 or not np.isfinite(norms[0]):
            return math.nan
        return float(np.nanmax(np.where(np.isfinite(norms), norms, np.inf)) / norms[0])
    return _per_trained_run(arm, where, one, untrained)


@measure
def clip_share(arm: Arm, where=None, untrained: float | None = None) -> Measured:
    """The share of updates whose gradient was clipped (gradflow.summary.clipped_share, as `ls` shows it).
    `untrained`: runs that did not train have no value (`_per_trained_run`)."""
    from gradflow.summary import clipped_share

    return _per_trained_run(arm, where, clipped_share, untrained)


def _through_time(p: pd.Series, lag: int) -> pd.Series:
    """A recurrent net's profile at every time step from T - lag (T the head's index) to T, NaN at a step no
    backward pass reached (a state detached from the graph: its hook never ran, so it has no row) or that the
    sequence does not have (a lag past its start, data.T=50 against a lag of 100), which fails the claims."""
    T = int(p.index.max())
    return p.reindex(range(min(0, T - lag), T + 1))


@measure
def lag_ratio(arm: Arm, where=None, k=100, quantity="signal_norm", step=0) -> Measured:
    """Recurrent nets: ||dL/dh_(T-k)|| / ||dL/dh_(T-1)||, time steps being layers 0..T-1 (head = T); the
    geometric mean over runs."""
    def one(g):
        p = _through_time(_profile(g, quantity, step), k)
        T = int(p.index.max())  # the head's index = number of time steps
        return float(p.loc[T - k] / p.loc[T - 1])
    return _per_run(arm.table("layers", where), one, _geometric)  # (seeds spread over decades)


@measure
def lag_rate(arm: Arm, where=None, kmax=100, quantity="signal_norm", step=0) -> Measured:
    """Recurrent nets: the least-squares slope of log(||dL/dh_(T-k)|| / ||dL/dh_(T-1)||) over k = 1..kmax
    (per time step; below 0 means exponential decay with the lag); NaN where a signal there is 0 or not
    finite: a fit over the rest (a backward pass cut short at k = 50) would read as a rate over all."""
    def one(g):
        p = _through_time(_profile(g, quantity, step), kmax)
        T = int(p.index.max())
        k = np.arange(1, kmax + 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            r = np.log(p.loc[T - k].to_numpy() / p.loc[T - 1])
        return float(np.polyfit(k, r, 1)[0]) if np.isfinite(r).all() else math.nan
    return _per_run(arm.table("layers", where), one)


@measure
def jacobian_stat(arm: Arm, where=None, stat="mean_s", scope="input_output", layer=None, step=0) -> Measured:
    """Jacobian singular values s pooled over the probed examples: mean_s, mean_s2 (the mean of s^2) or var_s2
    (the variance of s^2)."""
    if stat not in ("mean_s", "mean_s2", "var_s2"):
        raise GradflowError(f"jacobian_stat: stat={stat!r} is not one; choices: mean_s, mean_s2, var_s2")
    def one(g):
        rows = g[(g[store.SCOPE] == scope) & (g[store.STEP] == step)]
        if layer is not None:
            rows = rows[rows[store.LAYER] == layer]
        s = rows[store.VALUE].to_numpy()
        return float(s.mean() if stat == "mean_s" else np.mean(s**2) if stat == "mean_s2" else np.var(s**2))
    return _per_run(arm.table("jacobian", where), one)


@measure
def chi1_error(arm: Arm, where=None) -> Measured:
    """|chi1_measured / chi1_theory - 1| per run: how far the measured per-layer growth is from theory
    (chi1_measured: `ls`'s fit, FIT_TRIM layers left out at each end)."""
    runs = arm.table("runs", where)
    out = _mean((runs["chi1_measured"] / runs["chi1_theory"] - 1).abs().astype(float).tolist())
    if len(runs) and runs["chi1_theory"].isna().all():  # (say why, as `ls` leaves chi1 theory blank)
        out.note = ("no mean-field χ₁ for these runs: the theory covers MLPs without normalization or skip "
                    "connections")
    measured, theory = (float(runs[c].astype(float).mean()) if len(runs) else math.nan  # (NaN where none has it)
                        for c in ("chi1_measured", "chi1_theory"))
    out.of = f"χ₁ {fmt(measured, 4)} measured, {fmt(theory, 4)} theory"
    return out


@measure
def crossing(arm: Arm, below: dict, above: dict, level: float = 1.0, quantity="signal_norm", trim=FIT_TRIM) -> Measured:
    """Whether the per-layer factor of quantity² (chi_1, as layer_factor with squared=True) crosses `level`
    between the runs `below` and the runs `above` select: the smaller of level − factor(below) and
    factor(above) − level, positive only where the first sits below the level and the second above it; no
    value where either side has none (the other alone says nothing of a crossing)."""
    lo = layer_factor(arm, below, quantity, trim=trim, squared=True)
    hi = layer_factor(arm, above, quantity, trim=trim, squared=True)
    sides = [level - lo.value, hi.value - level]
    missing = [i for i, side in enumerate(sides) if math.isnan(side)]
    i = missing[0] if missing else int(np.argmin(sides))
    at = [" and ".join(f"{k}={fmt(v)}" for k, v in side.items()) for side in (below, above)]
    return Measured(sides[i], [], se=(lo.se, hi.se)[i], note=(lo, hi)[i].note or lo.note or hi.note,
                    of=f"{fmt(lo.value, 3)} at {at[0]}, {fmt(hi.value, 3)} at {at[1]}")


@measure
def jacobian_free_probability(arm: Arm, where=None, moment="var", scope="input_output", step=0) -> Measured:
    """Measured moment of s^2 (s: singular values of the input-output Jacobian d h_L / d x, pooled over a
    run's probed inputs) over its free-probability prediction `theory.jacobian_moments`: moment="var"
    gives var(s^2) / sigma^2, "mean" gives mean(s^2) / m1; 1 is agreement. The first layer's q_1 =
    sw2 E[x^2] + sb2 comes from the run's input distribution and scale. Needs an MLP without norm/skip
    on data=gaussian with data.dim = model.width (square weights).
    """
    if moment not in ("mean", "var"):
        raise GradflowError(f"jacobian_free_probability: moment={moment!r} is not allowed; choices: mean, var")
    df = arm.table("jacobian", where)
    keys = [c for c in df.columns if "." in c]

    def predicted(cfg: dict) -> float:
        if theory.predict(cfg) is None:
            raise GradflowError(f"{arm.root}: no mean-field prediction for this run (an MLP without norm or skip "
                                "connections is needed)")
        if cfg.get("data.name") != "gaussian" or int(cfg["data.dim"]) != int(cfg["model.width"]):
            raise GradflowError(f"{arm.root}: the free-probability prediction needs square weights on known inputs: "
                                "data=gaussian with data.dim equal to model.width")
        act = str(cfg["model.activation"])
        sw2, sb2 = theory.equivalent_sw2(cfg, act)
        q1 = theory.input_q(cfg, sw2, sb2)
        if q1 is None:
            raise GradflowError(f"{arm.root}: the inputs' variance is unknown here (data.scale="
                                f"{cfg.get('data.scale')}), so the first layer has no prediction")
        m1, sigma2 = theory.jacobian_moments(act, sw2, sb2, q1=q1,
                                             depth=int(cfg["model.depth"]),
                                             orthogonal=cfg["init.name"] in ("orthogonal", "delta_orthogonal"))
        return m1 if moment == "mean" else sigma2

    def one(g):
        s2 = g[(g[store.SCOPE] == scope) & (g[store.STEP] == step)][store.VALUE].to_numpy() ** 2
        cfg = {k: theory.config_value(g.iloc[0], k) for k in keys}
        return float((s2.mean() if moment == "mean" else np.var(s2)) / predicted(cfg))

    return _per_run(df, one)


@measure
def growth_factor(arm: Arm, where=None, quantity="act_std", step=0, trim=FIT_TRIM, squared=False, per=1) -> Measured:
    """Per-layer factor of a quantity towards the output: exp(slope) of log(value) against layer over the
    bulk layers (`trim` dropped at each end), the inverse of layer_factor's; for a forward signal such as
    act_std, whose growth runs from the input to the output. squared=True gives the factor of value^2;
    per=m the factor over m layers (a residual block of m weight layers)."""
    towards_input = layer_factor(arm, where, quantity, step, trim, squared)
    return _mean([v ** -per if v > 0 else math.nan for v in towards_input.per_run])


@measure
def lr_reached(arm: Arm, where=None) -> Measured:
    """The learning rate each run's schedule had reached by its last evaluation (the last opt/lr), or, for a run
    recorded before gradflow logged opt/lr, the rate its config's schedule reaches over its steps, as the loop
    steps it (train.make_schedule): an arm reused from then read no value, and its claim FAILed."""
    import torch

    from gradflow.train import make_optimizer, make_schedule

    logged = arm.table("metrics", where)
    logged = logged[(logged[store.SPLIT] == "opt") & (logged[store.METRIC] == "lr")]
    last = logged.sort_values(store.STEP).groupby(store.RUN)[store.VALUE].last()
    runs = arm.table("runs", where).sort_values(store.RUN)

    def reached(run: str, path: str) -> float:
        if run in last.index:
            return float(last[run])
        cfg = OmegaConf.load(Path(path) / store.CONFIG_FILE)
        opt = make_optimizer([torch.nn.Parameter(torch.zeros(1))], cfg.optim)
        schedule = make_schedule(opt, cfg.optim, cfg.train.steps)
        for _ in range(cfg.train.steps if schedule is not None else 0):
            opt.step()  # (no gradient: nothing moves; torch wants a step before the schedule's)
            schedule.step()
        return float(opt.param_groups[0]["lr"])

    return _mean([reached(r, p) for r, p in zip(runs[store.RUN], runs[store.PATH])])


@measure
def last_value(arm: Arm, where=None, metric="loss", split="batch") -> Measured:
    """The last logged value of a metric per run; split=batch is the mean training-minibatch value (train
    mode) over the last eval window, what training curves such as He et al. 2016's Fig. 6 show, whereas
    `final` reads the eval-mode value (with batchnorm's running statistics) from run.json."""
    def one(g):
        m = _curve(g, split, metric)
        return float(m[-1]) if len(m) else math.nan
    return _per_run(arm.table("metrics", where), one)


def _gradchecks(arm: Arm, where, entries: int, batch: int, eps: float) -> list:
    """gradflow.gradcheck of every run's saved config (the model at init, float64), once per arm and arguments."""
    from gradflow.gradcheck import gradcheck

    key = ("gradcheck", repr(where), entries, batch, eps)
    if key not in arm.cache:
        runs = arm.table("runs", where)
        arm.cache[key] = [gradcheck(OmegaConf.load(Path(p) / store.CONFIG_FILE), entries, batch, eps)
                          for p in runs.sort_values(store.RUN)[store.PATH]]
    return arm.cache[key]


@measure
def fd_error(arm: Arm, where=None, entries=8, batch=8, eps=1e-6) -> Measured:
    """Backprop against central finite differences (float64): the largest relative error over a random sample
    of `entries` entries of every parameter tensor (see gradflow.gradcheck). None where a run's gradients lie
    so far below the loss that the check resolves too few tensors (GradCheck.unresolved): any backward agrees there."""
    checks = _gradchecks(arm, where, entries, batch, eps)
    why = [r.unresolved() for r in checks]
    measured = _mean([math.nan if w else r.max_rel for r, w in zip(checks, why)])
    if any(why):
        measured.value, measured.note = math.nan, next(w for w in why if w)
    return measured


@measure
def fd_cost(arm: Arm, where=None, entries=8, batch=8, eps=1e-6) -> Measured:
    """The projected cost of the full gradient by central differences over one backprop gradient, divided by
    the parameter count: 1 means each finite-difference entry costs as much as the whole backprop gradient."""
    return _mean([r.cost_ratio / r.n_params for r in _gradchecks(arm, where, entries, batch, eps)])


@measure
def hidden_median(arm: Arm, where=None, quantity="grad_norm", step="last") -> Measured:
    """The median of a quantity over the hidden layers (the input layer and the head left out) at a step:
    whether the body as a whole takes gradients, whatever its depth."""
    def one(g):
        p = _profile(g, quantity, step)
        return float(np.median(p.to_numpy()[1:-1])) if len(p) > 2 else math.nan
    return _per_run(arm.table("layers", where), one)


@measure
def zero_share(arm: Arm, where=None, quantity="signal_norm", step=1) -> Measured:
    """The share of the hidden layers (the input layer and the head left out) whose quantity is exactly 0 at
    a step: e.g. the branches' first layers that no back-propagated signal reaches, behind a last layer at 0."""
    def one(g):
        p = _profile(g, quantity, step).to_numpy()[1:-1]
        return float(np.mean(p == 0)) if len(p) else math.nan
    measured = _per_run(arm.table("layers", where), one)
    if not np.isfinite(measured.value) and not measured.note:  # (a run of 0 steps, or one not probed then)
        measured.note = f"a run has no {quantity} at step {step} (it took no step, or was not probed then)"
    return measured


@measure
def layer_value(arm: Arm, where=None, quantity="grad_norm", step=0, layer=0) -> Measured:
    """A quantity at one probe point at a step; a negative layer counts from the output (-1 = the head)."""
    def one(g):
        p = _profile(g, quantity, step)
        return float(p.loc[_layer(layer, p.index)])
    return _per_run(arm.table("layers", where), one)


@measure
def signal_ratio_error(arm: Arm, where=None, num=0, den=-2, step=0) -> Measured:
    """|measured / predicted - 1| of the back-propagated signal ratio ‖∂L/∂z‖ of probe point `num` / `den`
    (layer_ratio's), the prediction mean-field theory's from the inputs' q_0 along the length map
    (theory.signal_factors), for nets in the theory's scope at init (step 0). Between hidden layers,
    num < den < the head: the signal reaches the last hidden layer through the head's weights, whose
    σ_w² is not the bulk's the theory takes (den=-2, the default, is the last hidden layer)."""
    def one(g: pd.DataFrame) -> float:
        p = _profile(g, "signal_norm", step)
        lo, hi = _layer(num, p.index), _layer(den, p.index)
        factors = theory.signal_factors(g.iloc[0].to_dict(), hi) if lo < hi < p.index.max() else None
        if factors is None:
            return math.nan
        return abs(float(p.loc[lo] / p.loc[hi]) / math.sqrt(float(np.prod(factors[lo:hi]))) - 1.0)
    out = _per_run(arm.table("layers", where), one)
    if out.per_run and all(math.isnan(v) for v in out.per_run):
        out.note = ("no mean-field prediction for these runs: the theory needs an MLP's inputs of data=gaussian, "
                    "and two hidden layers, num before den, den before the head")
    return out


@measure
def rescale_exponent(arm: Arm, where=None, reference: Arm | None = None, quantity="weight_norm", layers="conv1",
                     step=0) -> Measured:
    """The power of L, the number of the arm's layers whose names end in `layers` (one per block), by which
    `quantity` at `step` is scaled against the same layers of `reference`'s run of the same seed (the same
    initial draw): the median of the layers' log ratios over log L. Fixup's branches, scaled by L^-1/2,
    read -0.5; unscaled, 0."""
    theirs = reference.table("layers", where)

    def picked(g: pd.DataFrame) -> pd.Series:
        rows = g[(g[store.QUANTITY] == quantity) & (g[store.STEP] == step) & g[store.NAME].str.endswith(layers)]
        return rows.set_index(store.NAME)[store.VALUE]

    def one(g: pd.DataFrame) -> float:
        twin = theirs[theirs["seed"] == g["seed"].iloc[0]]
        if twin[store.RUN].nunique() != 1:  # (no run of that seed, or several: nothing to pair it with)
            return math.nan
        ours, base = picked(g), picked(twin)
        both = ours.index.intersection(base.index)
        if len(both) < 2 or not (base[both] > 0).all() or not (ours[both] > 0).all():
            return math.nan
        return float(np.median(np.log(ours[both] / base[both])) / math.log(len(both)))
    return _per_run(arm.table("layers", where), one)


# --- more measures: add new ones above this line, each with @measure and a docstring ---------------


def _check_for_each(claim: dict) -> None:
    """A claim's `for_each` is one key with a list of values, over a measure `expand` can fill in (a
    combination's `a` a measure, a `where` a mapping): else expand raised KeyError or TypeError."""
    if "for_each" not in claim:
        return
    each, measure = claim["for_each"], claim.get("measure")
    if not (isinstance(each, dict) and len(each) == 1 and isinstance(next(iter(each.values())), list)):
        raise GradflowError(f"claim {claim.get('text')!r}: for_each must be one key with a list of values, "
                            f"e.g. {{arm: [a, b]}}; got {each!r}")
    inner = measure.get("a") if isinstance(measure, dict) and measure.get("fn") in _COMBINATIONS else measure
    if not isinstance(inner, dict) or not isinstance(inner.get("where", {}), dict):
        raise GradflowError(f"claim {claim.get('text')!r}: for_each fills in a measure {{fn: NAME, ...}}"
                            + (" (a combination's a)" if inner is not measure else "") + f"; got {inner!r}")


def check_measure(spec_measure, arms: list[str]) -> None:
    """A claim's measure names a known fn, one of the arms and only arguments the fn takes: a misspelled
    one was a TypeError after the whole sweep had run."""
    if not isinstance(spec_measure, dict) or "fn" not in spec_measure:
        raise GradflowError(f"claim measure {spec_measure!r} is no {{fn: NAME, arm: ARM, ...}}")
    m = dict(spec_measure)
    fn = m.pop("fn")
    if fn in _COMBINATIONS:
        if set(m) != {"a", "b"}:
            raise GradflowError(f"claim measure fn={fn} takes a and b; got {', '.join(sorted(m)) or 'neither'}")
        if isinstance(m["b"], list) and fn != "min_difference":  # (the others used the list's first alone)
            raise GradflowError(f"claim measure fn={fn} takes one b; min_difference takes a list")
        for one in [m["a"], *(m["b"] if isinstance(m["b"], list) else [m["b"]])]:
            check_measure(one, arms)
        return
    if fn not in MEASURES:
        raise GradflowError(f"claim measure fn={fn!r} is not known{did_you_mean(fn, list(MEASURES))}; choices: "
                            f"{', '.join(MEASURES)}, {', '.join(_COMBINATIONS)}")
    takes = [k for k in inspect.signature(MEASURES[fn]).parameters if k != "arm"]
    for k in m:
        if k != "arm" and k not in takes:
            raise GradflowError(f"claim measure {fn}: {k!r} is not an argument of it{did_you_mean(k, takes)}; "
                                f"choices: {', '.join(takes)}")
    # (reference: the arm a measure compares with, which one that takes it needs: it was an AttributeError
    # after the whole sweep had run)
    for key in ("arm", *(["reference"] if "reference" in takes else [])):
        if m.get(key) not in arms:
            raise GradflowError(f"claim measure {fn}: {key}={m.get(key)!r} is not an arm; choices: {', '.join(arms)}")
    _check_where(m.get("where"), f"claim measure {fn}")


def compute(spec_measure: dict, arms: dict[str, Arm]) -> Measured:
    """Evaluate {fn: NAME, arm: ARM, ...args} or a combination {fn: difference|min_difference, a:, b:}."""
    check_measure(spec_measure, list(arms))  # (a spec's are checked as it loads; a measure given here too)
    m = dict(spec_measure)
    fn = m.pop("fn")
    if fn in _COMBINATIONS:
        a = compute(m["a"], arms)
        bs = [compute(b, arms) for b in (m["b"] if isinstance(m["b"], list) else [m["b"]])]
        why = next((x.note for x in (a, *bs) if math.isnan(x.value)), "")  # an operand without a value says why
        if fn == "ratio":  # (over a 0, no value: an LSTM that keeps no error, 0 over 0, once crashed the check)
            b = bs[0].value
            return Measured(a.value / b if b != 0 else math.nan, [], note=why or ("" if b != 0 else "its divisor is 0"),
                            of=f"{fmt(a.value, 3)} / {fmt(b, 3)}")
        diffs = [a.value - b.value for b in bs]
        i = int(np.argmin(diffs))  # (a difference without a value, nan, is the least: the claim has none)
        if not why and math.isnan(diffs[i]):  # inf − inf: the side that should train did not either
            why = f"both sides are {fmt(a.value)}"
        return Measured(diffs[i], [], se=math.hypot(a.se, bs[i].se), note=why,  # a difference of means, not runs
                        of=f"{fmt(a.value, 3)} − {fmt(bs[i].value, 3)}")
    arm = m.pop("arm")
    if "reference" in m:
        m["reference"] = arms[m["reference"]]
    measured = MEASURES[fn](arms[arm], **m)
    if math.isnan(measured.value) and not measured.note:  # a FAIL says why there is no value
        n, missing = len(measured.per_run), sum(not np.isfinite(v) for v in measured.per_run)
        where = ", ".join(f"{k}={fmt(v)}" for k, v in (m.get("where") or {}).items())
        measured.note = (f"no run of arm {arm}{f' has {where}' if where else ''}" if not n else
                         f"no value in the {n} run{'s' * (n != 1)} of arm {arm}" if missing == n else
                         f"{missing} of the {n} runs of arm {arm} have no value (a mean over runs needs each)")
    return measured


# --- claims ---------------------------------------------------------------------------------------------
SOURCES = ("paper", "theory", "design")
# a paper reference names where in the paper: a figure, table, section, equation, algorithm or experiment
PAPER_PLACE = re.compile(r"(\b(Fig(ure)?s?|Tab(le)?s?|Sec(t|tion)?s?|Eq(uation)?s?|Alg(orithm)?s?|Exp(eriment)?s?|"
                         r"ch(apter)?|Th(eore)?m|Lemma|Prop(osition)?|Cor(ollary)?|App(endix)?)\b\.?|§)"
                         r"\s*\(?([0-9]|[A-Z]\b|[IVX]+\b)", re.IGNORECASE)  # (a word alone, "the results section", is no place)


def claim_source(claim: dict) -> tuple[str, str]:
    """(kind, where) of a claim's `source: {paper|theory|design: ...}`: the figure/table/section of a paper
    value, the formula gradflow.theory evaluates, or the reason for a threshold chosen here."""
    src = claim.get("source")
    text = claim.get("text", "?")
    if not isinstance(src, dict) or len(src) != 1 or next(iter(src)) not in SOURCES:
        raise GradflowError(f"claim {text!r}: source={src!r} must be one of {{paper|theory|design: reference}}; "
                            f"choices: {', '.join(SOURCES)}")
    (kind, where), = src.items()
    if not isinstance(where, str) or not where.strip():
        raise GradflowError(f"claim {text!r}: source.{kind} needs its reference (figure/table/section, formula "
                            "or reason)")
    if kind == "paper" and not PAPER_PLACE.search(where):
        raise GradflowError(f"claim {text!r}: source.paper={where!r} names no figure, table or section")
    return kind, where


@dataclass
class ClaimResult:
    text: str
    reference: str  # the reference value or statement
    source: str  # paper | theory | design
    cite: str  # where: figure/table/section, the formula, or the reason
    measured: Measured
    test: str
    passed: bool
    qualitative: bool = False
    tolerance: str = ""  # why the test is wider than the reference states, with the seeds' spread

    @property
    def source_cell(self) -> str:
        return f"{self.source}: {self.cite}"


def passes(value: float, expect: dict) -> tuple[bool, str]:
    """Check a value against {lt|le|gt|ge: x} or {between: [lo, hi]} or {approx: v, tol: t}."""
    if not np.isfinite(value) and "approx" in expect:
        return False, f"{expect['approx']} ± {expect['tol']}"
    ops = {"lt": ("<", lambda v, x: v < x), "le": ("≤", lambda v, x: v <= x), "gt": (">", lambda v, x: v > x),
           "ge": ("≥", lambda v, x: v >= x)}
    for op, (sign, f) in ops.items():
        if op in expect:
            return bool(f(value, expect[op])), f"{sign} {fmt(expect[op], 3)}"
    if "between" in expect:
        lo, hi = expect["between"]
        return bool(lo <= value <= hi), f"in [{fmt(lo, 3)}, {fmt(hi, 3)}]"
    if "approx" in expect:
        v, tol = expect["approx"], expect["tol"]
        return bool(abs(value - v) <= tol), f"{fmt(v, 3)} ± {fmt(tol, 3)}"
    raise GradflowError(f"claim expect={expect} is not understood; use lt, le, gt, ge, between or approx+tol")


def expand(claims: list[dict]) -> list[dict]:
    """A claim with `for_each: {key: [values]}` becomes one claim per value ({key} in its text)."""
    out = []
    for c in claims:
        if "for_each" not in c:
            out.append(c)
            continue
        (key, values), = c["for_each"].items()
        for v in values:
            one = {k: val for k, val in c.items() if k != "for_each"}
            one["text"] = c["text"].replace("{" + key + "}", str(v))
            one["measure"] = _for_one(c["measure"], key, v)
            out.append(one)
    return out


_COMBINATIONS = ("difference", "min_difference", "ratio")


def _for_one(measure: dict, key: str, value) -> dict:
    """A measure for one value of a for_each key: `arm` picks the arm, any other key filters runs; in a
    combination the value applies to its first operand `a`."""
    if measure["fn"] in _COMBINATIONS:
        return {**measure, "a": _for_one(measure["a"], key, value)}
    if key == "arm":
        return {**measure, "arm": value}
    return {**measure, "where": {**measure.get("where", {}), key: value}}


def arms_of(spec: Spec, root: Path, jobs: dict[str, list[str]] | None = None) -> dict[str, Arm]:
    """The spec's arms under `root`; `jobs` (arm -> run names of the current plan) restricts each."""
    return {arm: Arm(root / arm, (jobs or {}).get(arm)) for arm in spec.arms}


def check(spec: Spec, root: Path, jobs: dict[str, list[str]] | None = None) -> list[ClaimResult]:
    arms = arms_of(spec, root, jobs)
    results = []
    for c in expand(spec.claims):
        try:
            measured = compute(c["measure"], arms)
        except GradflowError as e:  # e.g. every run of the arm failed: the claim cannot hold
            measured = Measured(math.nan, [], note=str(e))
        ok, test = passes(measured.value, c["expect"])
        kind, cite = claim_source(c)
        results.append(ClaimResult(c["text"], str(c.get("reference", "")), kind, cite, measured, test, ok,
                                   bool(c.get("qualitative", False)), str(c.get("tolerance", "")).strip()))
    return results


@dataclass
class Outcome:
    """One reproduction's computed claims, figures and report."""

    spec: Spec
    scale: str
    root: Path
    claims: list[ClaimResult]
    figures: list[Path]
    report: Path
    overrides: dict[str, list[str]]  # arm -> the sweep overrides it ran with
    wall_time: float
    not_drawn: list[str] = field(default_factory=list)  # figures that could not be drawn, each with why

    @property
    def verdict(self) -> str:
        """One line: how many claims pass, and which FAIL, each with its value against its test."""
        failed = [f"{r.text} ({r.measured.against(r.test)})" for r in self.claims if not r.passed]
        return tally(self.claims) + (f"; FAIL: {'; '.join(failed)}" if failed else "")

    @property
    def passed(self) -> bool:
        return all_pass([r.passed for r in self.claims])

    def claim(self, words: str) -> ClaimResult:
        """The claim whose text is `words`, or else the one claim whose text contains them."""
        hits = [r for r in self.claims if r.text == words] or [r for r in self.claims if words in r.text]
        if len(hits) != 1:
            raise KeyError(f"{words!r} matches {len(hits)} claims: {[r.text for r in hits]}")
        return hits[0]

    def claims_with(self, words: str) -> list[ClaimResult]:
        return [r for r in self.claims if words in r.text]


def _pooled(spec: Spec, scale: str, user: list[str]) -> None:
    """Refuse an override of several values (other than seeds) for an arm that does not sweep that key itself:
    an arm's runs are judged together as its seeds, so glorot2010 with model.activation=tanh,linear was one
    net, each claim the mean over both activations with a standard error. A key an arm sweeps (he2016's
    model.depth) is one its claims pick runs by, and may take other values."""
    def swept(o: str) -> bool:
        return override_parser().parse_override(o).is_sweep_override()

    for o in user:
        key = override_key(o)
        if key in SEED_KEYS or not swept(o):
            continue
        pooling = [arm for arm in spec.arms
                   if not any(override_key(a) == key and swept(a) for a in spec.overrides(arm, scale, []))]
        if pooling:
            arms = f"arm {pooling[0]}" if len(pooling) == 1 else f"arms {and_list(pooling)}"
            raise GradflowError(f"{shorten(o, 60)} is several values, and {spec.name}'s {arms} "
                                f"{'judges its' if len(pooling) == 1 else 'judge their'} runs together as seeds: give "
                                "one value (more seeds: seed=0,1,2,3,4), or compare the values with one "
                                "reproduction each, into its own results=FOLDER")


LaunchFn = Callable[["sweep_mod.Plan"], None]


def check_scale(scale: str) -> None:
    if scale not in SCALES:
        raise GradflowError(f"--scale {scale!r} is not allowed{did_you_mean(str(scale), list(SCALES))}; "
                            f"choices: {', '.join(SCALES)}")


def run(name: str, scale: str = "default", user: list[str] | None = None, force: bool = False,
        launch: LaunchFn | None = None, on_planned: Callable[[str], None] | None = None) -> Outcome:
    """Run (or resume) a reproduction's arms, check its claims, draw its figures and write REPORT.md.

    `user` overrides apply to every arm (`results=DIR` chooses the results folder); `launch` runs one
    planned sweep (the CLI passes one with a progress display; default: launch it silently);
    `on_planned` is called with the name once every arm is planned, before any runs (the CLI prints its
    header then, so that a bad override is the only line printed).
    """
    return list(runs([name], scale, user, force, launch, on_planned))[0]


@dataclass
class _Planned:
    """One reproduction's arms, planned and not yet run."""

    spec: Spec
    root: Path
    plans: dict[str, "sweep_mod.Plan"]
    used: dict[str, list[str]]  # arm -> its sweep overrides
    given: list[str]  # the user's overrides its runs take (what REPORT.md lists)
    keys: "sweep_mod.KeysTaken"


def runs(names: list[str], scale: str = "default", user: list[str] | None = None, force: bool = False,
         launch: LaunchFn | None = None, on_planned: Callable[[str], None] | None = None) -> Iterator[Outcome]:
    """`run` for several experiments (`gradflow reproduce all`): every arm of every one planned before
    any runs, so a bad override or missing data files stop it at once rather than after an hour of the
    experiments before it; then each run in turn, its outcome yielded. An override applies to the
    experiments whose runs take it (`data.root` to the CIFAR ones) and is refused only where none does."""
    check_scale(scale)
    user = list(user or [])
    from gradflow import sweep as sweep_mod

    sweep_mod.check_overrides(user, "reproduce")  # (--name x was called an option of `gradflow sweep`)
    results_root = override_value(user, "results") or "results"  # (the last, as Hydra composes the runs)
    # a second reproduction into the same folder fails at once (each arm locks its own); a parallel
    # launcher's workers serve every arm of every experiment
    with contextlib.ExitStack() as held:
        held.enter_context(workers.kept())
        planned = []
        for name in names:
            root = root_for(name, scale, results_root)
            for folder in (root.parent, root):  # (a run or sweep there: it said the arms' names were inside it)
                if (in_the_way := store.reproduce_in_the_way(folder, results_root)) is not None:
                    raise in_the_way
            held.enter_context(store.lock(root))
            planned.append(_plan(name, scale, user, force, results_root, alone=len(names) == 1))
        if len(names) > 1:  # (one experiment refused a key none of its runs takes itself)
            keys = functools.reduce(sweep_mod.KeysTaken.merged, (p.keys for p in planned))
            sweep_mod.check_keys_apply(user, keys, none="no run of any experiment")
        for p in planned:
            start = time.perf_counter()
            if on_planned:
                on_planned(p.spec.name)
            jobs, reused = {}, 0
            if any(plan.to_run for plan in p.plans.values()):
                for plan in p.plans.values():  # (one that does not build replaces no run: the verdicts stay)
                    sweep_mod.check_replacement_builds(plan)
                store.drop_claims(p.root)
            for arm, plan in p.plans.items():
                reused += plan.skipped
                (launch or sweep_mod.launch)(plan)
                jobs[arm] = [j.name for j in plan.jobs]
            claims = check(p.spec, p.root, jobs)
            figures_, not_drawn = draw(p.spec, p.root, jobs)
            wall = time.perf_counter() - start
            report = write_report(p.spec, p.root, scale, claims, figures_, p.used, wall, p.given, reused, not_drawn)
            yield Outcome(p.spec, scale, p.root, claims, figures_, report, p.used, wall, not_drawn)


def _plan(name: str, scale: str, user: list[str], force: bool, results_root: str, alone: bool) -> _Planned:
    """Plan every arm of one reproduction with the user's overrides. `alone`: a key none of its runs takes
    is refused; else (one of several experiments) it is left out of this one's runs and report."""
    from gradflow import sweep as sweep_mod

    spec = Spec.load(name)
    named = [o for o in user if override_key(o) == "name"]
    if named:  # (it was dropped without a word)
        raise GradflowError(f"{shorten(named[0], 40)} does not apply to gradflow reproduce: its runs go to "
                            f"{root_for(name, scale)}/; results=FOLDER writes them under another folder")
    root = root_for(name, scale, results_root)
    if not alone:  # leave out what none of its runs takes (they would name its runs, and its report would
        # list them), known from a plan without the overrides of several values: several of a key it does not
        # read were refused as pooled (data.root=A,B by backprop-vs-fd), or as one run twice
        single = [o for o in user if not override_parser().parse_override(o).is_sweep_override()]
        keys = _plan_arms(spec, scale, single, force, root, results_root)[2]
        user = [o for o in user if _applies(o, keys)]
    _pooled(spec, scale, user)
    used, plans, keys = _plan_arms(spec, scale, user, force, root, results_root)
    # an arm need not take the spec's shared keys, but a key given here that no run of any arm takes
    # would change nothing, and the report would list it as given
    sweep_mod.check_keys_apply(user, keys, none=f"no run of {name}")
    return _Planned(spec, root, plans, used, [o for o in user if override_key(o) != "results"], keys)


def _plan_arms(spec: Spec, scale: str, user: list[str], force: bool, root: Path, results_root: str):
    """(each arm's sweep overrides, each arm's plan, the keys some run of some arm takes)."""
    from gradflow import sweep as sweep_mod

    given = [o for o in user if override_key(o) != "results"]  # (what an error names)
    used, plans = {}, {}
    for arm in spec.arms:
        used[arm] = spec.overrides(arm, scale, user)
        try:
            plans[arm] = sweep_mod.plan(used[arm], f"{root.relative_to(results_root).as_posix()}/{arm}", force,
                                        keys_used=False, reproduction=True)
        except sweep_mod.SameRun as e:  # (an override made the arm's swept values one run: say which did)
            if not given:
                raise
            raise GradflowError(f"{spec.name}'s arm {arm} sweeps {e.points[0]} and {e.points[1]}, which are one run "
                                f"with {and_list(given)} (its runs do not read that key then); drop the "
                                "override or give another value") from None
        except GradflowError as e:  # a group chosen in place of the arm's own: its keys no longer fit (he2016's
            # model.variant=batchnorm beside model=mlp was refused as if the user had typed it)
            ours = {override_key(o): o for o in [*spec.base, *spec.arms[arm]]}
            replaced = [f"{o} for its {ours[override_key(o)]}" for o in given
                        if "." not in override_key(o) and override_key(o) in ours and ours[override_key(o)] != o]
            if not replaced:
                raise
            raise GradflowError(f"{spec.name}'s arm {arm} with {and_list(replaced)}: {e}") from None
    return used, plans, functools.reduce(sweep_mod.KeysTaken.merged, (p.keys for p in plans.values()))


def _applies(override: str, keys: "sweep_mod.KeysTaken") -> bool:
    from gradflow import sweep as sweep_mod

    try:
        sweep_mod.check_keys_apply([override], keys)
    except GradflowError:
        return False
    return True


# --- figures and the report -------------------------------------------------------------------------
def draw(spec: Spec, root: Path, jobs: dict[str, list[str]] | None = None,
         fmt: str = "png") -> tuple[list[Path], list[str]]:
    """The spec's figures, saved under the study's figures folder; and each figure that could not be
    drawn, with why (an override can take away the key a figure is drawn by: the claims still stand)."""
    from gradflow.plots.figures import save

    arms = arms_of(spec, root, jobs)
    drawn, not_drawn = [], []
    for i, f in enumerate(spec.figures):
        try:
            fig, name = spec_figure(arms, i, f)
        except GradflowError as e:
            not_drawn.append(f"{f.get('file') or f'figure {i + 1}'}: {e}")
            continue
        drawn.append(save(fig, store.figures_dir(root) / f"{name}.{fmt}"))
    return drawn, not_drawn


def spec_figure(arms: dict[str, Arm], i: int, entry: dict):
    """The spec's i-th figure (`entry`: kind, arm(s), file, where and the figure's own arguments) and its
    file name without suffix."""
    from gradflow.plots import figures

    f = dict(entry)
    kind, arm, title = f.pop("kind"), f.pop("arm"), f.pop("file", None)
    table = FIGURE_TABLES[kind]
    df = figure_table(arms, arm, table, f.pop("where", None))
    fig = getattr(figures, kind)(df, **f)
    first = arm[0] if isinstance(arm, list) else arm
    return fig, title or f"{i}-{kind}-{first}"


def figure_table(arms: dict[str, Arm], arm: str | list[str], table: str, where: dict | None = None) -> pd.DataFrame:
    """A figure's rows: one arm's `table`, or several arms' in one frame, their run ids made unique (each
    arm may have a run named "default") and one source, so the figure's keys (e.g. color) tell them apart."""
    if not isinstance(arm, list):
        return arms[arm].table(table, where)
    frames = [store.prefix_runs(arms[a].table(table, where), a) for a in arm]
    return store.concat(frames).assign(**{store.SOURCE: "+".join(arm)})


def overall(outcomes: list["Outcome"]) -> str:
    """Several experiments in one line: how many passed every claim, how many claims passed in all, and
    which experiments failed."""
    passed = [o for o in outcomes if o.passed]
    claims = [c for o in outcomes for c in o.claims]
    failing = [f"{o.spec.name} ({sum(not c.passed for c in o.claims)})" for o in outcomes if not o.passed]
    return (f"{len(passed)} of {len(outcomes)} experiments pass every claim; {sum(c.passed for c in claims)} of "
            f"{len(claims)} claims pass" + (f"; FAIL: {', '.join(failing)}" if failing else ""))


def all_pass(passed: list[bool]) -> bool:
    """A reproduction's verdict from its claims' results: PASS where there are claims and every one passes
    (the terminal, REPORT.md, its report page and the index page of a folder of them judge alike)."""
    return bool(passed) and all(passed)


def tally(results: list[ClaimResult]) -> str:
    """How many claims pass: "5 of 6 claims pass" (the terminal's verdict and REPORT.md say it alike)."""
    return f"{sum(r.passed for r in results)} of {len(results)} claims pass"


def claim_cells(r: ClaimResult) -> dict[str, str]:
    """A claim's row, cell by cell, whole (the report, claims.json and the terminal show the same text)."""
    verdict = ("PASS" if r.passed else "FAIL") + (" (qualitative)" if r.qualitative else "")
    return {"claim": r.text, "source": r.source_cell, "reference": r.reference, "measured": r.measured.cell(),
            "test": r.test, "result": verdict}


CLAIM_COLUMNS = ("claim", "source", "reference", "measured", "test", "result")


def tolerance_notes(results: list[ClaimResult | dict]) -> list[tuple[str, str]]:
    """Each distinct tolerance note once, with the claims it explains as one phrase (a for_each claim's
    are shared: named once, with its values). Results as computed, or as claims.json holds them."""
    notes: dict[str, list[str]] = {}
    for r in results:
        text, tolerance = (r.get("claim", ""), r.get("tolerance")) if isinstance(r, dict) else (r.text, r.tolerance)
        if tolerance:
            notes.setdefault(tolerance, []).append(text)
    return [(merged_texts(texts), note) for note, texts in notes.items()]


_TOKEN = re.compile(r"\w+(?:\.\w+)*|\s+|.")  # words and numbers (1.761, init.name), spaces, single marks


def merged_texts(texts: list[str]) -> str:
    """Claim texts that differ in one place only, as a for_each makes them, as one text with the values
    listed there ("σ_w² = 1.0/1.5/4.0: |measured ...|"); others joined by "; "."""
    tokens = [_TOKEN.findall(t) for t in texts]
    if len(texts) < 2:
        return "; ".join(texts)
    head = 0
    while all(len(t) > head and t[head] == tokens[0][head] for t in tokens):
        head += 1
    tail = 0
    while all(len(t) > head + tail and t[-1 - tail] == tokens[0][-1 - tail] for t in tokens):
        tail += 1
    middles = ["".join(t[head:len(t) - tail]) for t in tokens]
    if not (head or tail) or any(not m or " " in m.strip() for m in middles):
        return "; ".join(texts)  # (not one claim's values: say each in full)
    return "".join(tokens[0][:head]) + "/".join(middles) + "".join(tokens[0][len(tokens[0]) - tail:])


def claims_markdown(results: list[ClaimResult]) -> str:
    lines = ["| " + " | ".join(CLAIM_COLUMNS) + " |", "|" + "---|" * len(CLAIM_COLUMNS)]
    for r in results:
        cells = claim_cells(r)
        cells["result"] = f"**{cells['result']}**"
        lines.append("| " + " | ".join(cells[c].replace("|", "\\|") for c in CLAIM_COLUMNS) + " |")
    tolerances = [f"- {texts}: {note}" for texts, note in tolerance_notes(results)]
    if tolerances:
        lines += ["", "Tolerances wider than the reference states, and why:", "", *tolerances]
    return "\n".join(lines)


def write_report(spec: Spec, root: Path, scale: str, results: list[ClaimResult], figures_: list[Path],
                 overrides: dict[str, list[str]], wall_time: float, given: list[str] | None = None,
                 reused: int = 0, not_drawn: list[str] | None = None) -> Path:
    """REPORT.md and claims.json. `given`: the user's overrides (results= aside), which the report puts
    next to the scale, since they change what the scale's text describes."""
    given = list(given or [])
    parts = [f"# Reproduction: {spec.name}", "", f"**Paper:** {spec.paper}", "", f"**Claim:** {spec.summary}", "",
             f"**Scale:** `{scale}`. {spec.scaled.get(scale, '')}", ""]
    if given:
        parts += [f"**Overrides:** `{' '.join(given)}`, given to every arm: where they change a setting, the "
                  "runs differ from what the scale describes.", ""]
    again = f"; {reused} finished run{'s' * (reused != 1)} reused" if reused else ""
    parts += [f"Run on {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} in {wall_time:.0f} s{again}.",
              "", "## Claims", "", f"{tally(results)}.", "", claims_markdown(results), ""]
    if spec.notes:  # (a spec's notes tell of its default-scale runs, figures and numbers)
        parts += ["## Notes" + (" (written of the default scale's runs)" if scale != "default" else ""), "",
                  spec.notes.strip(), ""]
    if figures_ or not_drawn:
        parts += ["## Figures", ""] + [f"![{p.stem}]({p.relative_to(root).as_posix()})" for p in figures_] + [""]
        parts += [f"- not drawn: {why}" for why in not_drawn or []] + ([""] if not_drawn else [])
    parts += ["## How it was run", ""]
    for arm, ov in overrides.items():  # each arm's command as its sweep.yaml has it, --name included
        command = (store.sweep_spec(root / arm) or {}).get("command") or f"gradflow sweep {' '.join(ov)}"
        parts.append(f"- `{arm}`: `{command}`")
    store.write_json(store.claims_path(root), {"experiment": spec.name, "scale": scale, "overrides": given,
                                               # what REPORT.md says around the claims, for the report page
                                               "paper": spec.paper, "summary": spec.summary,
                                               "scale_text": spec.scaled.get(scale, ""), "notes": spec.notes.strip(),
                                               "passed": sum(r.passed for r in results), "claims": [
        {**claim_cells(r), "passed": r.passed, "value": r.measured.value,
         **({"tolerance": r.tolerance} if r.tolerance else {})} for r in results], "not_drawn": list(not_drawn or [])})
    path = store.reproduction_md_path(root)
    store.write_text(path, "\n".join(parts) + "\n")
    return path
