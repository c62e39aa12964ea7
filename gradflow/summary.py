"""Per-run summaries computed from results on disk: the `runs` table behind `ls`, plots, compare and report.

`per_run` is computed once at the end of a run and stored under "summary" in run.json, so listing a
sweep reads one small file per run; runs written before that are summarised from layers.parquet.
"""

from __future__ import annotations

import math
import operator
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

from gradflow import store, theory
from gradflow.fmt import drop_shared_parts, fmt
from gradflow.errors import GradflowError, did_you_mean, ellipsize, shorten
from gradflow.keys import abbreviate, full_key, n_distinct, swept_keys
from gradflow.probes.quantities import QUANTITIES
from gradflow.theory import FIT_TRIM

BLOCKS = "blocks"  # a fit over a net's blocks says so: "4 blocks, resid" (rate)
RESIDUAL_STREAM = "resid"  # the point after each block of gradflow's transformer: its residual stream
SUMMARY_KEY = "summary"  # run.json key holding per_run's dict
TRANSIENT_TOL = 0.01  # the length map has settled when it moves the predicted chi_1 fit by less than this
SUMMARY_COLUMNS = ("grad_ratio.init", "signal_ratio.init", "grad_ratio.final", "chi1_measured", "chi1_layers",
                   "chi1_theory", "start_qstar", "chi1_transient")


def grad_ratio(layers: pd.DataFrame, step: int, quantity: str = "grad_norm") -> float:
    """`quantity` (grad_norm: the weight gradient) of the first probe point / that of the last, at
    `step`, for one run's rows."""
    g = store.rows(layers, quantity, step)[store.VALUE].to_numpy()
    if len(g) < 2:
        return math.nan
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(g[0] / g[-1])


def fitted_layers(layer: Iterable[float], trim: int = FIT_TRIM) -> tuple[int, int] | None:
    """(first, last) layer index that a growth-rate fit with `trim` uses, or None when fewer than 3 remain."""
    bulk = theory.bulk_layers(list(layer), trim)  # (the fit's own choice of layers)
    return (int(bulk[0]), int(bulk[-1])) if bulk.size >= 3 else None


@dataclass(frozen=True)
class Blocks:
    """A net whose probe points come in blocks of several (a transformer's b3.attn.qkv, ..., b3.resid; a
    ResNet's s1.b2.conv1, s1.b2.conv2; a user's enc.layers.3.linear1, ...): see `blocks_of`."""
    names: list[str]  # each block's name, in forward order: b0, b1, ...
    starts: list[int]  # the position (in the names given) of each block's first point
    first: str  # what a block's first point is called within it: attn.qkv
    output: str  # what its last point is called (the most common): resid, the block's output


def block_of(name: str) -> tuple[str, str] | None:
    """(block, point within it) from a probe point's module path: the block runs to the last component
    before the final one that holds a number (b3.attn.qkv -> b3, attn.qkv; s1.b2.conv1 -> s1.b2, conv1;
    layers.3.self_attn.q -> layers.3, self_attn.q); None for a point of no block (linear3, t5, net.4, head)."""
    parts = str(name).split(".")
    for i in range(len(parts) - 2, -1, -1):
        if any(c.isdigit() for c in parts[i]):
            return ".".join(parts[: i + 1]), ".".join(parts[i + 1:])
    return None


def blocks_of(names: Iterable[str]) -> Blocks | None:
    """The blocks of a net from its probe points' names in forward order, or None for a chain (an MLP's
    linear#, an RNN's t#, a Sequential's net.#): at least two blocks, each of several points."""
    names = [str(n) for n in names]
    found: dict[str, list[tuple[int, str]]] = {}
    for i, name in enumerate(names):
        split = block_of(name)
        if split is not None:
            found.setdefault(split[0], []).append((i, split[1]))
    if len(found) < 2 or any(len(points) < 2 for points in found.values()):
        return None
    lasts = pd.Series([points[-1][1] for points in found.values()])
    return Blocks(list(found), [points[0][0] for points in found.values()],
                  next(iter(found.values()))[0][1], str(lasts.mode().iloc[0]))


def _streamed(layers: pd.DataFrame, step: int) -> bool:
    """Whether the net probes a residual stream after each block (gradflow's transformer), by every
    quantity's points at `step`."""
    if store.NAME not in layers:
        return False
    points = layers[layers[store.STEP] == step].drop_duplicates(store.LAYER).sort_values(store.LAYER)[store.NAME]
    net = blocks_of(points)
    return net is not None and net.output == RESIDUAL_STREAM


def rate(layers: pd.DataFrame, quantity: str, step: int = 0, trim: int = FIT_TRIM) -> tuple[float, str]:
    """The growth factor of quantity^2 towards the input at `step` (the chi_1 convention: > 1 grows
    towards the input), fitted by theory.fit_chi1, and what was fitted: the layer range "first-last".

    For a net of blocks that probes its residual stream after each block (gradflow's transformer: b3.resid
    after b3.attn.qkv, ..., b3.mlp.out), the factor is per block, fitted at those points: a fit over every
    point mixed the stream with the smaller signals inside the branches. The embedding and head, which `trim`
    drops in a chain, are in no block. What was fitted then reads "N blocks, resid"; a quantity the stream's
    points lack (the weight gradient) is fitted per block at each block's last point ("N blocks, mlp.out").
    Other nets of blocks (a
    ResNet, whose conv2 is inside its branch; a user's nested Sequential, a chain) are fitted per layer, so
    that one column holds one unit wherever it can.
    """

    r = store.rows(layers, quantity, step)
    r = r[np.isfinite(r[store.VALUE]) & (r[store.VALUE] > 0)]
    net = blocks_of(r[store.NAME]) if store.NAME in r else None
    if net is not None and (net.output == RESIDUAL_STREAM or _streamed(layers, step)):
        # (a quantity the stream's points lack, the weight gradient, at each block's last point: mlp.out)
        at = [(block_of(n) or ("", ""))[1] == net.output for n in r[store.NAME]]
        values = r[at][store.VALUE].to_numpy()
        if len(values) < 3:
            return math.nan, ""
        return theory.fit_chi1(np.arange(len(values)), values, 0), f"{len(values)} {BLOCKS}, {net.output}"
    span = fitted_layers(r[store.LAYER], trim)
    if span is None:
        return math.nan, ""
    return theory.fit_chi1(r[store.LAYER].to_numpy(), r[store.VALUE].to_numpy(), trim), f"{span[0]}-{span[1]}"


def transient_bias(config: Mapping[str, Any], span: tuple[int, int]) -> float:
    """How far the length map's transient moves a chi_1 fit over layers `span` from the fixed-point chi_1.

    Mean field with q_l iterated from the inputs' q_0: ||dL/dh_l||^2 = sw2 E[phi'(h_l)^2] ||dL/dh_{l+1}||^2,
    so the predicted profile is log s_l^2 = sum_{k >= l} log(sw2 D(q_k)); the same fit over it, divided by
    the chi_1 at q*, minus 1. 0 for a run started at q*; nan where q_0 or the theory is unknown."""

    mf = theory.predict(config)
    if mf is None or not math.isfinite(mf.chi1):
        return math.nan
    if config.get("data.scale") == "qstar":
        return 0.0
    q = theory.input_q(config, mf.sw2, mf.sb2)
    if q is None:
        return math.nan
    m = theory.moments(mf.activation)
    local = []
    with np.errstate(all="ignore"):
        for _ in range(span[1] + 1):  # q_l is the variance of layer l's pre-activation
            local.append(math.log(mf.sw2 * float(m.D(q))))
            q = mf.sw2 * float(m.V(q)) + mf.sb2
    layers = np.arange(span[0], span[1] + 1)
    log_sq = np.cumsum(local[::-1])[::-1][span[0]:]  # sum over k >= l, up to the span's end
    return float(theory.fit_chi1(layers, np.exp(log_sq / 2), trim=0) / mf.chi1 - 1.0)


def per_run(layers: pd.DataFrame, config: dict, diverged_step: int | None = None,
            tied: list[str] | None = None) -> dict[str, Any]:
    """The summary numbers of one run from its layer rows and its flattened config (JSON-ready values);
    a diverged run's end ratio at its last probed step before `diverged_step` (the step whose loss or
    gradient went non-finite: its gradients, finite as the loss overflows, are no trained net's). `tied`:
    the points whose weight gradient is the sum of several uses (run.json's), left out of its ratios."""

    out: dict[str, Any] = dict.fromkeys(SUMMARY_COLUMNS, math.nan)
    out["chi1_layers"] = ""
    out["start_qstar"] = config.get("data.scale") == "qstar"
    prediction = theory.predict(config)
    if prediction is not None:
        out["chi1_theory"] = prediction.chi1
    if layers.empty:
        return out
    own = layers[~layers[store.NAME].isin(tied)] if tied else layers  # (each weight gradient a layer's own)
    out["grad_ratio.init"] = grad_ratio(own, 0)
    # the back-propagated signal's ratio: the weight gradient ‖∂L/∂W_l‖ = ‖∂L/∂z_l‖ ‖h_(l-1)‖ can hide its
    # vanishing where the forward signal h shrinks with depth as it grows towards the input (standard init)
    out["signal_ratio.init"] = grad_ratio(layers, 0, "signal_norm")
    before = layers if diverged_step is None else layers[layers[store.STEP] < diverged_step]
    out["grad_ratio.final"] = grad_ratio(own, store.last_step(before)) if len(before) else math.nan
    out["chi1_measured"], out["chi1_layers"] = rate(layers, "signal_norm", 0)
    if prediction is not None and out["chi1_layers"] and BLOCKS not in out["chi1_layers"]:  # a chain's layers
        lo, hi = map(int, out["chi1_layers"].split("-"))
        out["chi1_transient"] = transient_bias(config, (lo, hi))
    return out


# --- clipping ------------------------------------------------------------------------------------
CLIPPED = "clipped"  # run.json summary key (and ls column): the share of updates whose gradient was clipped


def clipped_share(metrics: pd.DataFrame) -> float:
    """The share of a run's updates whose gradient was clipped, from its metrics rows: opt/clipped counts the
    clipped updates of each evaluation window and the window logged at step t ends after update t, so the
    windows cover the first max(t) updates (all of them, unless the run diverged between evaluations);
    nan without opt/clipped rows (a run of 0 steps, a Recorder's)."""
    rows = metrics[(metrics[store.SPLIT] == "opt") & (metrics[store.METRIC] == "clipped")]
    updates = rows[store.STEP].max() if len(rows) else 0
    return float(rows[store.VALUE].sum() / updates) if updates > 0 else math.nan


def clip_summary(metrics: pd.DataFrame, config: Mapping[str, Any]) -> dict[str, Any]:
    """run.json's summary entry for clipping: {CLIPPED: share} where the run clips (train.grad_clip or
    train.clip_value > 0), None otherwise (no share to speak of: ls shows '-', and no column where no run clips)."""
    clips = any(float(config.get(k) or 0) > 0 for k in ("train.grad_clip", "train.clip_value"))
    share = clipped_share(metrics) if clips else math.nan
    return {CLIPPED: None if math.isnan(share) else share}


# --- steps to a threshold ------------------------------------------------------------------------
STEPS_TO_METRICS = ("train_loss", "train_acc", "test_loss", "test_acc", "batch_loss", "batch_acc")  # as evaluated
_OPS = {"<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt}
_CONDITION = re.compile(r"^\s*(\w+?)\s*(<=|>=|<|>)\s*(\S+)\s*$")


def parse_condition(text: str) -> tuple[str, str, str, float]:
    """'train_loss<=1.0' -> ('train', 'loss', '<=', 1.0)."""
    m = _CONDITION.match(text)
    if not m:
        raise GradflowError(f"--steps-to {text!r} must read SPLIT_METRIC OP NUMBER, e.g. train_loss<=1.0 or "
                            f"test_acc>=0.9; OP is one of {', '.join(_OPS)}")
    name, op, number = m.groups()
    try:
        threshold = float(number)
    except ValueError:
        raise GradflowError(f"--steps-to {text!r}: {number!r} is not a number") from None
    if math.isnan(threshold):  # (no value compares with nan: every cell read "-")
        raise GradflowError(f"--steps-to {text!r}: nan is no threshold; give a number, e.g. train_loss<=1.0")
    split, _, metric = name.partition("_")
    if not (split[:1].isalpha() and metric):  # a metric the run did not record is named when it is read
        raise GradflowError(f"--steps-to {text!r}: {name!r} is not a metric; choices: {', '.join(STEPS_TO_METRICS)}")
    return split, metric, op, threshold


def steps_to(metrics: pd.DataFrame, metric: str, op: str, threshold: float) -> float:
    """The first evaluation step at which `metric` ("train_loss", "test_acc", ...) satisfies `op threshold`,
    for one run's metrics rows; nan when it never does."""
    if op not in _OPS:
        raise GradflowError(f"op={op!r} is not allowed; choices: {', '.join(_OPS)}")
    split, _, name = metric.partition("_")
    rows = metrics[(metrics[store.SPLIT] == split) & (metrics[store.METRIC] == name)]
    if rows.empty:
        raise _not_recorded(metric, recorded(metrics))
    rows = rows.sort_values(store.STEP)
    hit = rows[_OPS[op](rows[store.VALUE], threshold)]
    return float(hit[store.STEP].iloc[0]) if len(hit) else math.nan


def _recorded_as(split: str, metric: str) -> str:
    """A metric as `recorded` names it: split_metric, or "grad" for any per-parameter gradient norm."""
    return "grad" if split == "grad" else f"{split}_{metric}"


def recorded(metrics: pd.DataFrame) -> set[str]:
    """The metrics a run's rows hold, as steps_to names them (split_metric; "grad" for the per-parameter norms)."""
    return {_recorded_as(s, m) for s, m in zip(metrics[store.SPLIT], metrics[store.METRIC])}


def _not_recorded(metric: str, have: set[str]) -> GradflowError:
    return GradflowError(f"metric {metric!r} was not recorded{did_you_mean(metric, sorted(have - {'grad'}))}; "
                         f"choices: {', '.join(sorted(have - {'grad'})) or 'none'}"
                         + (", grad_PARAMETER (each parameter's gradient norm)" if "grad" in have else ""))


# --- the runs table ------------------------------------------------------------------------------
def runs_table(path: str | Path, rates: Iterable[str] = (), steps: Iterable[str] = (), include_stale: bool = True,
               listed: list[dict] | None = None) -> pd.DataFrame:
    """One row per run: run.json, final metrics, every config key and the SUMMARY_COLUMNS (read from
    run.json's summary, or computed from layers.parquet for runs that have none). Each quantity in
    `rates` adds rate.<q> and rate.<q>.layers (its growth factor at step 0, see `rate`); each condition
    in `steps` ("train_loss<=1.0") adds steps_to.<condition> from metrics.parquet. Stale runs are
    left out unless `include_stale`. `listed`: `store.runs(path)`, when the caller has it (every
    run.json is then read once, there)."""
    listed = store.runs(path) if listed is None else listed
    records = store.load_records(path, listed=listed)
    summary_of = {r[store.PATH]: r["record"].get(SUMMARY_KEY) for r in listed}
    tied_of = {r[store.PATH]: r["record"].get("tied") for r in listed}  # (a list: no column of the records)
    rates, steps = list(rates), [c.replace(" ", "") for c in steps]
    for q in rates:
        if q not in PROBED:
            raise GradflowError(f"--rate {q!r} is not a probed quantity{did_you_mean(q, PROBED)}; "
                                f"choices: {', '.join(PROBED)}")
    conditions = [parse_condition(c) for c in steps]
    have: set[str] = set()  # the metrics some run recorded (a diverged run may lack one the others have)
    summaries = []
    for _, rec in records.iterrows():
        job = Path(rec[store.PATH])
        stored = summary_of.get(rec[store.PATH])
        layers = None

        if not isinstance(stored, dict) or not set(SUMMARY_COLUMNS) <= set(stored):
            layers = store.run_table(job, "layers")
            diverged = rec.get(store.DIVERGED_AT)
            stored = per_run(layers, {k: v for k, v in rec.items() if isinstance(k, str) and "." in k},
                             int(diverged) if isinstance(diverged, (int, float)) and math.isfinite(diverged) else None,
                             tied_of.get(rec[store.PATH]))
        row = {k: stored[k] for k in SUMMARY_COLUMNS}
        row[CLIPPED] = math.nan if stored.get(CLIPPED) is None else stored[CLIPPED]  # (older run.json files lack it)
        for q in rates:
            layers = store.run_table(job, "layers") if layers is None else layers
            row[f"rate.{q}"], row[f"rate.{q}.layers"] = rate(layers, q, 0)
        if steps:
            metrics = store.run_table(job, "metrics")
            names = recorded(metrics)
            have |= names
            for text, (split, metric, op, threshold) in zip(steps, conditions):
                row[f"steps_to.{text}"] = steps_to(metrics, f"{split}_{metric}", op, threshold) \
                    if _recorded_as(split, metric) in names else math.nan
        summaries.append(row)
    for text, (split, metric, _, _) in zip(steps, conditions):  # recorded by no run: a misspelling, named
        if _recorded_as(split, metric) not in have:  # with the choices
            raise GradflowError(f"--steps-to {text!r}: {_not_recorded(f'{split}_{metric}', have)}")
    table = pd.concat([records, pd.DataFrame(summaries, index=records.index)], axis=1)
    table.attrs = dict(records.attrs)  # the user's own config keys (a concat keeps no attrs)
    for q in rates:
        if table[f"rate.{q}"].isna().all():
            raise GradflowError(f"--rate {q}: no run has {q} at 3 or more layers between the {FIT_TRIM} left out "
                                f"at each end (too shallow a net to fit, or {q} at few of its points: a "
                                f"transformer's act_std is at its mlp.in points alone); other quantities: "
                                f"{', '.join(p for p in PROBED if p != q)}")
    return table if include_stale else table[table[store.STATUS] != store.STALE].reset_index(drop=True)


def listing(path: str | Path, rates: Iterable[str] = (), steps: Iterable[str] = ()) -> tuple[pd.DataFrame, list[str]]:
    """The runs table sorted by its swept keys (numbers as numbers), and those keys (seed included)."""
    df = runs_table(path, rates, steps)
    swept = swept_keys(df, exclude=study_columns(df), implied=True)  # ls names the implied ones itself
    # a key a sweep's spec sweeps (the folder's, or one's under it) stays a key where the runs done so far
    # share one value of it (a sweep cut short after its depth-2 runs listed them without their depth)
    specs, base = store.spec_files(path), Path(path)
    declared = {folder.relative_to(base).as_posix() if folder != base else "":  # (as run_folders names them)
                [k for k in (full_key(df, k) for k in spec.get("swept") or [] if isinstance(k, str)) if k]
                for folder, spec in specs if spec is not None}
    swept += [k for k in dict.fromkeys(k for keys in declared.values() for k in keys) if k not in swept]
    df = sort_runs(df, swept or [store.RUN])
    df = df.iloc[np.argsort(run_folders(df).to_numpy(), kind="stable")]  # each study's runs together
    df.attrs[DECLARED] = declared
    df.attrs[UNREADABLE] = [folder / store.SWEEP_FILE for folder, spec in specs if spec is None]
    return df, swept


DECLARED = "declared"  # the runs table's attrs: the keys each sweep's spec at or under the folder sweeps, by its
# folder relative to the folder listed (as `run_folders` names a run's)
UNREADABLE = "unreadable_specs"  # the runs table's attrs: the sweep.yaml files there that do not read


PROBED = tuple(QUANTITIES)  # the quantities the probes record (--rate's choices)


# --- runs of a sweep not run yet, and --where's matching ------------------------------------------
def matches(values: pd.Series, value: str) -> pd.Series:
    """Which of `values` read `value`: as numbers where both are (depth 5 is 5.0, sw2 4.0 is 4), as ls
    prints them (0.001761 for 0.0017612, true), "-" or nan for a missing one, else as text."""
    try:
        number = float(value)
    except ValueError:
        number = None
    text = (values.astype(str) == value) | (values.map(fmt) == value)  # (as the table and the errors show it)
    if value in ("-", "nan"):  # (as ls prints a missing value; "none" is a value of its own: norm=none)
        return text | values.isna()
    numeric = pd.to_numeric(values, errors="coerce")
    if number is not None and not math.isnan(number):
        return text | (numeric == number)
    return text


STUDY = "study"  # --where's name for the folder a run is in, in a folder of several (the column ls shows)


def run_folders(df: pd.DataFrame) -> pd.Series:
    """Each run's folder relative to the folder listed: its id less its last part ("" for a run listed
    from its sweep's own folder)."""
    return df[store.RUN].astype(str).map(lambda r: r.rpartition("/")[0])


def study_of(df: pd.DataFrame) -> pd.Series:
    """Each run's study: the folder it is in, relative to the folder listed, less the folders every run
    is in (`s4` of `s4/model.depth=2`; `he2015-quick/train` of `reproduce/he2015-quick/train/init=...`
    beside glorot2010-quick's runs: `reproduce`, their first part, named them all alike)."""
    folders = run_folders(df)
    return pd.Series(drop_shared_parts(list(folders), "/"), index=folders.index, dtype=object)


def in_study(folders: pd.Series, value: str) -> pd.Series:
    """Which of the runs' `folders` (relative to the folder listed) --where study=VALUE keeps: those whose
    folder holds VALUE as whole parts (he2015-quick keeps its init and train runs; reproduce all the
    reproductions; train every reproduction's train runs)."""
    value = value.strip("/")
    return folders.astype(str).map(lambda f: f"/{value}/" in f"/{f}/")


@dataclass
class NotRun:
    """A sweep's points with no folder yet (the sweep was cut short, or is running)."""

    sweep: Path
    name: str  # its folder relative to the folder listed
    missing: int  # (of those --where keeps)
    points: int
    command: str  # the command that runs them, in this folder from anywhere


def not_run(path: Path, there: set[str], where: list[tuple[str, str]]) -> list[NotRun]:
    """The sweeps at or under `path` whose spec plans runs that are not among `there` (run ids relative to
    `path`), counting those --where's (column, value) pairs keep: a job that sets the column is kept when its
    value matches, one that does not set it (the sweep's fixed value) is kept."""
    found = []
    for sweep, spec in store.sweep_specs(path):
        if not isinstance(spec.get("runs"), dict):
            continue
        prefix = sweep.relative_to(path).as_posix()
        if any(k == STUDY and not in_study(pd.Series([prefix]), v).iloc[0] for k, v in where):
            continue
        jobs = [job for job in spec["runs"] if (job if prefix == "." else f"{prefix}/{job}") not in there]
        jobs = [job for job in jobs if all(_job_matches(str(job), k, v) for k, v in where)]
        if jobs:
            found.append(NotRun(sweep, prefix, len(jobs), len(spec["runs"]), _resume_command(sweep, spec)))
    return found


def not_run_note(missing: list[NotRun]) -> str:
    """The line under `ls`'s table (and the report page's) about `missing`: one sweep's count and the
    command that runs them; several sweeps' counts."""
    if len(missing) == 1:
        (m,) = missing
        return (f"not run yet: {m.missing} of the sweep's {m.points} runs: `{m.command}` runs them (and keeps the "
                "runs done)")
    each = ", ".join(f"{m.name} {m.missing} of {m.points} runs" for m in missing)
    return f"not run yet: {each}; `gradflow ls SWEEP` gives the command that runs them"


def _job_matches(job: str, column_key: str, value: str) -> bool:
    if column_key == STUDY:  # (the sweep's: see `not_run`)
        return True
    items = dict(item.split("=", 1) for item in job.split(",") if "=" in item)
    for key, v in items.items():
        if column_key in (key.lstrip("+~"), f"{key.lstrip('+~')}.name"):  # (init=... sets init.name)
            return bool(matches(pd.Series([v]), value).iloc[0])
    return True


def _resume_command(sweep: Path, spec: dict) -> str:
    """The sweep's command with its folder absolute (`results=results` ran it from one place; `ls` may run
    from another, and the folder may have been copied or renamed)."""
    import shlex

    from gradflow.overrides import override_key

    if spec.get("points") is not None and spec.get("command"):  # (its --points FILE is as given)
        return str(spec["command"])
    kept = [str(o) for o in spec.get("overrides") or [] if override_key(str(o)) not in ("results", "name")]
    sweep = sweep.resolve()
    return " ".join(["gradflow sweep", *map(shlex.quote, kept), shlex.quote(f"results={sweep.parent}"),
                     "--name", shlex.quote(sweep.name)])


# --- the runs table as `ls` and the report page show it -------------------------------------------
# result columns in display order, each with its header and priority (0 shows first when space is short)
RESULT_COLUMNS = {
    "status": ("status", 1), "steps_done": ("steps done", 6), "diverged_step": ("diverged at", 5),
    "wall_time": ("time s", 6),
    "final.train_loss": ("train loss", 2), "final.train_acc": ("train acc", 5),
    "final.test_loss": ("test loss", 5), "final.test_acc": ("test acc", 2),
    "clipped": ("clipped", 3),
    "grad_ratio.init": ("ratio init", 3), "signal_ratio.init": ("signal ratio", 3),
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
    recurrent = "model.name" in df and df["model.name"].isin(("rnn", "lstm", "gru")).any()  # (time steps: no
    return bool(not recurrent and df["chi1_measured"].isna().all()  # per-layer fit to expect)
                and df["signal_ratio.init"].notna().any())


def column_notes(columns: list["Column"], df: pd.DataFrame | None = None) -> list[str]:
    """The notes under a table of `columns` (ls, the report page) of the runs `df`: what the ratio and the
    chi1 fit mean, each mark the fit's cells carry, the rate's convention, and that a transformer's chi1 and
    rates are per block (said wherever they are shown, the fit column that says so or not)."""
    keys = [c.key for c in columns]
    explained = {k: NOTES[k] for k in NOTES if k in keys}
    if "chi1_layers" in explained:  # the fit marks the shown cells carry, each explained
        cells = columns[keys.index("chi1_layers")].cells
        blocks, spans = any(BLOCKS in c for c in cells), any(re.match(r"\d+-\d+", c) for c in cells)
        if blocks:  # (a transformer's reads "4 blocks, resid": not a first-last span)
            explained["chi1_layers"] = ("chi1 fit = layers fitted (first-last), or a transformer's blocks and the "
                                        "point fitted" if spans else "chi1 fit = blocks fitted and the point fitted")
        explained["chi1_layers"] += "".join(f"; {text}" for mark, text in FIT_MARKS.items()
                                            if any(mark in cell for cell in cells))
    notes = list(explained.values())
    # (a shallow net, say depth 5; not a run that failed before its first probe, whose every result reads -)
    cells = columns[keys.index("chi1_measured")].cells if "chi1_measured" in keys else []
    probed = df["signal_ratio.init"].notna().to_numpy() if df is not None and "signal_ratio.init" in df else \
        [True] * len(cells)
    if any(c == "-" and p for c, p in zip(cells, probed)):
        notes.append(f"chi1 meas -: no fit, fewer than 3 layers with a signal between the {FIT_TRIM} left out at "
                     f"each end (for a transformer, fewer than 3 blocks)")
    elif _no_fit_at_all(df, keys):  # (a result no run has is no column: it went without a word)
        mlps = "model.name" in df and df["model.name"].isin(["mlp", "cnn"]).all()
        notes.append(f"no chi1 meas: no run has 3 layers with a signal between the {FIT_TRIM} left out at each end "
                     + (f"(an MLP of depth {2 * FIT_TRIM + 2} or more has)" if mlps else
                        "(too few of its probe points have a back-propagated signal of their own)"))
    if any(k.startswith("rate.") for k in keys):
        notes.append(NOTES["rate"])
    if any(k.startswith("rate.") and not k.endswith(".layers") and "-" in c.cells for k, c in zip(keys, columns)):
        notes.append(f"rate -: no fit, fewer than 3 layers with the quantity between the {FIT_TRIM} left out at "
                     f"each end (for a transformer, fewer than 3 blocks)")
    fits = [k for k in keys if k in ("chi1_measured", "chi1_layers") or k.startswith("rate.")]
    fitted = [df[k] for k in ("chi1_layers", *(f"{k}.layers" for k in fits if k.startswith("rate.")))
              if df is not None and k in df]
    if fits and any(BLOCKS in str(v) for col in fitted for v in col):
        notes.append(f"a transformer's chi1 meas and rates are per block, not per layer: fitted at each block's "
                     f"residual stream, b#.{RESIDUAL_STREAM} (its fit reads N {BLOCKS}, {RESIDUAL_STREAM}), or, "
                     f"for a quantity the stream lacks (grad_norm), at each block's last point (N {BLOCKS}, mlp.out)")
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
    return (f"warning: {fits} in the length map's transient (mean-field theory puts the fit up to "
            f"{worst:.1%} off chi1 at q*); start at the fixed point with data.scale=qstar or fit deeper layers")


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


def _cells(df: pd.DataFrame, key: str) -> list[str]:
    if key == "chi1_layers":
        return [_fit_cell(r) for _, r in df.iterrows()]
    return [fmt(v) for v in df[key]]


def _fit_cell(row: pd.Series) -> str:
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
        short = [_short_id(r, budget) for r in runs]
        if len(set(zip(rows, short))) == len(set(zip(rows, runs))):
            if keyed and not any("…" in s and "," not in s for s in short) or \
                    not keyed and not any(s.endswith("…") for s in short):
                return short
            distinct = distinct or short
    return distinct or runs


def _short_id(run: str, budget: int) -> str:
    if len(run) <= budget:
        return run
    kept = ellipsize(run.split(","), ",", budget)  # whole items from each end
    if kept is not None:
        return ",".join(kept)
    keep = (budget - 1) // 2  # one item longer than the budget: its start and end
    return f"{run[:keep]}…{run[len(run) - (budget - 1 - keep):]}"


def table_columns(df: pd.DataFrame, swept: list[str]) -> list[Column]:
    """Every column ls can show for `df`, in display order."""
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
    studies = list(study_of(df)) if several else [""] * len(ids)
    if several:
        # (by how many runs are in a study where the key varies: in a folder of many studies nearly every
        # key varies in one of them, and a study's own axis, norm, went after another's, width)
        groups = [np.array(studies) == s for s in set(studies)]
        swept = sorted(swept, key=lambda k: -sum(int(g.sum()) for g in groups if n_distinct(df[k][g]) > 1))
    keys = [Column(k, names[k], KEY_PRIORITY, _cells(df, k), _numeric(df[k]) is not None) for k in swept]
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
        notes.append(f"and {len(groups) - shown} more errors" + (f"; {more}" if more else ""))
    return notes


def error_text(error) -> str:
    """A run's error on one line, a user error's without its type."""
    return " ".join(str(error).split()).removeprefix(f"{GradflowError.__name__}: ")
