"""Per-run summaries computed from results on disk: the `runs` table behind `ls`, plots, compare and report.

`per_run` is computed once at the end of a run and stored under "summary" in run.json, so listing a
sweep reads one small file per run; runs written before that are summarised from layers.parquet.
"""

from __future__ import annotations

import math
import operator
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, NamedTuple

import numpy as np
import pandas as pd

from gradflow import store, theory
from gradflow.fmt import and_list, drop_shared_parts, fmt
from gradflow.errors import GradflowError, did_you_mean
from gradflow.overrides import name_items, split_top
from gradflow.probes.quantities import QUANTITIES
from gradflow.theory import FIT_TRIM

BLOCKS = "blocks"  # a fit over a net's blocks says so: "4 blocks, resid" (rate)
RESIDUAL_STREAM = "resid"  # the point after each block of gradflow's transformer: its residual stream
SUMMARY_KEY = "summary"  # run.json key holding per_run's dict
# run.json summary key: the rule its chi1 was fitted by; a summary without it predates fitting a user's net of
# blocks (model=custom, a Recorder's) per block, and such a run is fitted again from its layers when listed
FIT_RULE_KEY, FIT_RULE = "fit_rule", 2
# run.json summary key: its chi1_transient took q_0 from the input layer's own sigma_w^2 (theory.input_sw2); one
# without it took the bulk's (xavier, orthogonal: wrong where data.dim != model.width) and is recomputed when listed
TRANSIENT_RULE_KEY, TRANSIENT_RULE = "transient_rule", 2
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


def fits_blocks(config: Mapping[str, Any]) -> bool:
    """Whether a run's net of blocks has its growth fitted per block (`rate`'s per_block), by its flat config:
    every net but gradflow's own ResNet (model.name resnet with its model.variant), whose blocks end in conv2,
    inside the branch before the add, and stay per layer as its chain of convolutions."""
    return not (config.get("model.name") == "resnet" and isinstance(config.get("model.variant"), str))


def _users_model(record: Mapping[str, Any]) -> bool:
    """Whether a listed run is of a user's own model: model=custom, or a Recorder's (run.json's `every`)."""
    return record.get("model.name") == "custom" or store.by_recorder(record)


def rate(layers: pd.DataFrame, quantity: str, step: int = 0, trim: int = FIT_TRIM,
         per_block: bool = True) -> tuple[float, str]:
    """The growth factor of quantity^2 towards the input at `step` (the chi_1 convention: > 1 grows
    towards the input), fitted by theory.fit_chi1, and what was fitted: the layer range "first-last".

    For a net of blocks that probes its residual stream after each block (gradflow's transformer: b3.resid
    after b3.attn.qkv, ..., b3.mlp.out), the factor is per block, fitted at those points: a fit over every
    point mixed the stream with the smaller signals inside the branches. The embedding and head, which `trim`
    drops in a chain, are in no block. What was fitted then reads "N blocks, resid"; a quantity the stream's
    points lack (the weight gradient) is fitted per block at each block's last point ("N blocks, mlp.out").
    A user's net of blocks (model=custom, a Recorder's: blocks.3.attn, layers.3.mlp.0, ...) is fitted per block
    the same way, at the same point of each block, its last (the most common: "4 blocks, ff.2"), as the points
    inside its blocks swing as a transformer's do. per_block=False (gradflow's ResNet, `fits_blocks`, whose
    conv2 is inside its branch) fits every net but the transformer per layer.
    """

    r = store.rows(layers, quantity, step)
    r = r[np.isfinite(r[store.VALUE]) & (r[store.VALUE] > 0)]
    net = blocks_of(r[store.NAME]) if store.NAME in r else None
    if net is not None and (per_block or net.output == RESIDUAL_STREAM or _streamed(layers, step)):
        # (a quantity the stream's points lack, the weight gradient, at each block's last point: mlp.out)
        at = [(block_of(n) or ("", ""))[1] == net.output for n in r[store.NAME]]
        values = r[at][store.VALUE].to_numpy()
        if len(values) < 3:
            return math.nan, ""
        # (against each block's index: a block that ends elsewhere, without the point, is a block between)
        index = {name: i for i, name in enumerate(net.names)}
        x = np.array([index[block_of(n)[0]] for n in r[at][store.NAME]])
        return theory.fit_chi1(x, values, 0), f"{len(values)} {BLOCKS}, {net.output}"
    if net is None and store.NAME in r and any((block_of(str(n)) or ("", ""))[1] == RESIDUAL_STREAM
                                               for n in r[store.NAME]):
        return math.nan, ""  # (a transformer of one block: no blocks to fit over; its points read 586 per layer)
    span = fitted_layers(r[store.LAYER], trim)
    if span is None:
        return math.nan, ""
    return theory.fit_chi1(r[store.LAYER].to_numpy(), r[store.VALUE].to_numpy(), trim), f"{span[0]}-{span[1]}"


def transient_bias(config: Mapping[str, Any], span: tuple[int, int], q0: float | None = None) -> float:
    """How far the length map's transient moves a chi_1 fit over layers `span` from the fixed-point chi_1.

    Mean field with q_l iterated from the inputs' q_0: ||dL/dh_l||^2 = sw2 E[phi'(h_l)^2] ||dL/dh_{l+1}||^2,
    so the predicted profile is log s_l^2 = sum_{k >= l} log(sw2 D(q_k)); the same fit over it, divided by
    the chi_1 at q*, minus 1. 0 for a run started at q*; nan where q_0 or the theory is unknown. `q0`: the
    inputs' q_0 where the caller knows it otherwise than from the config (`transient_before_rule`)."""

    mf = theory.predict(config)
    if mf is None or not math.isfinite(mf.chi1):
        return math.nan
    if q0 is None and config.get("data.scale") == "qstar":
        return 0.0
    factors = theory.signal_factors(config, span[1] + 1, q0, mf)
    if factors is None:
        return math.nan
    layers = np.arange(span[0], span[1] + 1)
    with np.errstate(all="ignore"):
        log_sq = np.cumsum(np.log(factors)[::-1])[::-1][span[0]:]  # sum over k >= l, up to the span's end
        return float(theory.fit_chi1(layers, np.exp(log_sq / 2), trim=0) / mf.chi1 - 1.0)


def transient_before_rule(config: Mapping[str, Any], span: tuple[int, int]) -> tuple[float, bool] | None:
    """(chi1_transient, start_qstar) of a chain's fit over `span` stored before TRANSIENT_RULE, when its q_0
    was taken from the bulk's sigma_w^2; None where the input layer's own is the bulk's (its stored values
    stand: they come out the same, and are not computed again on every `ls`). Such a run's data.scale=qstar
    scaled its inputs by the bulk's sigma_w^2 too, so its first layer started at q* sw2_0 / sw2, not at q*:
    it did not start at the fixed point, and has the transient from there."""
    mf = theory.predict(config)
    if mf is None or not math.isfinite(mf.chi1):
        return None
    own = theory.input_sw2(config, mf.sw2)
    if own == mf.sw2:
        return None
    if config.get("data.scale") != "qstar":
        return transient_bias(config, span), False
    q = theory.qstar_input(mf.activation, mf.sw2, mf.sb2)
    return None if q is None else (transient_bias(config, span, (q - mf.sb2) * own / mf.sw2 + mf.sb2), False)


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
    out["chi1_measured"], out["chi1_layers"] = rate(layers, "signal_norm", per_block=fits_blocks(config))
    out[FIT_RULE_KEY] = FIT_RULE
    if prediction is not None and out["chi1_layers"] and BLOCKS not in out["chi1_layers"]:  # a chain's layers
        lo, hi = map(int, out["chi1_layers"].split("-"))
        out["chi1_transient"] = transient_bias(config, (lo, hi))
    out[TRANSIENT_RULE_KEY] = TRANSIENT_RULE
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
    if not math.isfinite(threshold):  # (no value compares with nan, none reaches -inf: every cell read "-")
        raise GradflowError(f"--steps-to {text!r}: {number.strip()} is no threshold; give a finite number, e.g. "
                            "train_loss<=1.0")
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


# --- a custom module's depth ------------------------------------------------------------------------
DEPTH_KEY = "model.depth"
# what a model=custom run's depth is, wherever one is shown (ls, its --json, compare, the report, the figures)
MODULE_DEPTH = "weight layers before the head"
MODULE_DEPTH_NOTE = (f"depth of a model=custom run = its {MODULE_DEPTH}, read from its probe points "
                     f"(model.depth is refused for it)")


def _custom(table: pd.DataFrame) -> pd.Series:
    """Which rows of `table` are model=custom runs."""
    if "model.name" not in table.columns:
        return pd.Series(False, index=table.index)
    return table["model.name"].astype(str).eq("custom")


def _lacking_depth(table: pd.DataFrame) -> pd.Series:
    """The model=custom rows of `table` with no model.depth: those `with_module_depth` fills in."""
    custom = _custom(table)
    return custom & table[DEPTH_KEY].isna() if DEPTH_KEY in table.columns else custom


def module_depth_rows(table: pd.DataFrame) -> pd.Series:
    """The rows of `table` whose model.depth is a custom module's, read from its probe points (`with_module_depth`):
    model=custom refuses model.depth, so a custom run with one has it from there."""
    return _custom(table) & ~_lacking_depth(table)


def with_module_depth(table: pd.DataFrame, layers: pd.DataFrame | None) -> pd.DataFrame:
    """`table` (one row per run, or the layers table itself), its model=custom runs' model.depth filled in from
    `layers` (with `run`, `layer` and, where both have it, `source`): a custom module's depth is its
    constructor's to set (model.depth is refused for it), and by the depth convention it is the index of its
    last probe point, the head (the weight layers before it). The one reading of it: the runs table (`ls`,
    `compare`, the report) and the figures both take it from here. Other runs as they are."""
    if (layers is None or layers.empty or "model.name" not in table.columns or "layer" not in layers.columns
            or store.RUN not in layers.columns or store.RUN not in table.columns):
        return table
    missing = _lacking_depth(table)
    if not missing.any():
        return table
    ids = [c for c in (store.SOURCE, store.RUN) if c in layers.columns and c in table.columns]
    last = layers.groupby(ids)["layer"].max()
    if {store.QUANTITY, store.VALUE} <= set(layers.columns):  # the last point that took a gradient or a signal
        last = ran(layers).groupby(ids)["layer"].max().combine_first(last)
    keys = pd.MultiIndex.from_frame(table.loc[missing, ids])
    depth = pd.Series(last.reindex(keys).to_numpy(dtype=float), index=table.index[missing])
    out = table.copy()
    if DEPTH_KEY not in out.columns:
        out[DEPTH_KEY] = np.nan
    numeric = pd.to_numeric(out[DEPTH_KEY], errors="coerce")
    if numeric.notna().sum() < out[DEPTH_KEY].notna().sum():  # a Recorder's own depth that is no number: kept
        out[DEPTH_KEY] = out[DEPTH_KEY].astype(object)
        out.loc[missing, DEPTH_KEY] = depth.map(lambda v: v if math.isnan(v) else int(v))
        return out
    out[DEPTH_KEY] = numeric.astype(float)
    out.loc[missing, DEPTH_KEY] = depth
    if out[DEPTH_KEY].notna().all():
        out[DEPTH_KEY] = out[DEPTH_KEY].astype(int)
    return out


RAN = ("grad_norm", "signal_norm")  # a probe point with either measured ran in the model's passes


def ran(layers: pd.DataFrame) -> pd.DataFrame:
    """The rows of `layers` of points that ran: a gradient or a signal measured. A module the forward pass never
    called (put after the head by discovery) has its weight's norm alone, and is no layer the depth counts."""
    return layers[layers[store.QUANTITY].isin(RAN) & layers[store.VALUE].notna()]


def _probe_indices(records: pd.DataFrame) -> pd.DataFrame:
    """The probe points' indices (`run`, `source`, `layer`) of the model=custom runs of `records` that have no
    model.depth, for `with_module_depth`: those of their layers tables' points that ran (`_ran`), or, where
    none did, every one."""
    frames = []
    for _, rec in records[_lacking_depth(records)].iterrows():
        path = Path(rec[store.PATH]) / store.TABLE_FILES["layers"]
        if path.exists():
            try:  # (the columns it needs: a long run's table holds every step's every quantity)
                import pyarrow.parquet as pq

                table = pq.read_table(path, columns=["layer", store.VALUE], filters=[(store.QUANTITY, "in", list(RAN))])
                layer = table.to_pandas().dropna()[["layer"]]
                if layer.empty:
                    layer = pq.read_table(path, columns=["layer"]).to_pandas()
            except Exception:  # a broken file: one line naming it (`store.read_table`'s)
                full = store.read_table(path)
                done = ran(full)
                layer = (done if len(done) else full)[["layer"]]
            frames.append(layer.drop_duplicates().assign(**{store.RUN: rec[store.RUN], store.SOURCE: rec[store.SOURCE]}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


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

        if not isinstance(stored, dict) or not set(SUMMARY_COLUMNS) <= set(stored) or (
                FIT_RULE_KEY not in stored and _users_model(rec) and BLOCKS not in str(stored["chi1_layers"])):
            # (none stored, or a user's net fitted before its blocks were: a chain's fit comes out as it was)
            layers = store.run_table(job, "layers")
            diverged = rec.get(store.DIVERGED_AT)
            stored = {**(stored if isinstance(stored, dict) else {}),  # (its clipped share, which per_run has not)
                      **per_run(layers, {k: v for k, v in rec.items() if isinstance(k, str) and "." in k},
                                int(diverged) if isinstance(diverged, (int, float)) and math.isfinite(diverged)
                                else None, tied_of.get(rec[store.PATH]))}
        row = {k: stored[k] for k in SUMMARY_COLUMNS}
        span = str(row["chi1_layers"] or "")
        if TRANSIENT_RULE_KEY not in stored and re.fullmatch(r"\d+-\d+", span):  # (a chain's fit, stored before
            config = {k: v for k, v in rec.items() if isinstance(k, str) and "." in k}  # the input layer's own q_0)
            if (again := transient_before_rule(config, tuple(map(int, span.split("-"))))) is not None:
                row["chi1_transient"], row["start_qstar"] = again
        row[CLIPPED] = math.nan if stored.get(CLIPPED) is None else stored[CLIPPED]  # (older run.json files lack it)
        for q in rates:
            layers = store.run_table(job, "layers") if layers is None else layers
            row[f"rate.{q}"], row[f"rate.{q}.layers"] = rate(layers, q, 0, per_block=fits_blocks(rec))
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
    table = with_module_depth(table, _probe_indices(records))  # (a custom module's: its probe points', as the figures)
    table.attrs = dict(records.attrs)  # the user's own config keys (a concat keeps no attrs)
    for q in rates:
        if table[f"rate.{q}"].isna().all():
            raise GradflowError(f"--rate {q}: no run has {q} at 3 or more layers between the {FIT_TRIM} left out "
                                f"at each end (too shallow a net to fit, or {q} at few of its points: a "
                                f"transformer's act_std is at its mlp.in points alone); other quantities: "
                                f"{', '.join(p for p in PROBED if p != q)}")
    return table if include_stale else table[table[store.STATUS] != store.STALE].reset_index(drop=True)


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
    if _list_text(value):
        # a list as typed, [0.9,0.99] or [.9,.99], or as its run's folder name writes it (_0.9,0.99_): item by
        # item, numbers as numbers, against the table's [0.9, 0.99]
        text |= values.map(lambda v: same_list(v, value))
    if value in ("-", "nan"):  # (as ls prints a missing value; "none" is a value of its own: norm=none)
        return text | values.isna()
    # (True is no number: flag=1 kept a Recorder's flag True beside its 1s)
    numeric = pd.to_numeric(values.map(lambda v: math.nan if isinstance(v, (bool, np.bool_)) else v), errors="coerce")
    if number is not None and not math.isnan(number):
        return text | (numeric == number)
    return text


def _list_text(text: str) -> bool:
    """Whether `text` is a list as typed ([0.9,0.99]) or as a run folder's name writes it (_0.9,0.99_)."""
    return text.startswith("[") and text.endswith("]") or len(text) > 1 and text.startswith("_") and text.endswith("_")


def same_list(cell: Any, value: str) -> bool:
    """Whether a list cell holds the list `value` (`_list_text`'s), item by item, numbers compared as numbers;
    a cell may be a list, its text ('[0.9, 0.99]', as a runs table's flat config keeps it) or a folder
    name's (_0.9,0.99_: a sweep's point not run yet)."""
    if not _list_text(value):
        return False
    typed = split_top(value[1:-1])
    if isinstance(cell, str) and _list_text(cell):
        cell = split_top(cell[1:-1]) if len(cell) > 2 else []
    if not isinstance(cell, (list, tuple, np.ndarray)) or len(cell) != len(typed):
        return False
    for v, t in zip(cell, typed):
        t = t.strip().strip("'\"")
        v = v.strip().strip("'\"") if isinstance(v, str) else v
        try:
            if float(v) != float(t):
                return False
        except (TypeError, ValueError):
            if str(v) != t:
                return False
    return True


def matches_any(values: pd.Series, value: str, match=None) -> pd.Series:
    """`matches` (or `match(values, value)`), or where no value reads `value` whole and it is a comma list as a
    sweep writes it (model.depth=2,3; a list value's own commas, [8,16], are not its items), those that read any
    of its items (status=ok,failed and study=a,b too: they read the list whole, and matched none)."""
    match = match or matches
    kept = match(values, value)
    if not kept.any() and len(items := split_top(value)) > 1:
        kept = pd.concat([match(values, v) for v in items], axis=1).any(axis=1)
    return kept


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

    name: str  # its folder relative to the folder listed
    missing: int  # (of those --where keeps)
    points: int
    command: str  # the command that runs them, in this folder from anywhere
    running: tuple[str, bool] | None = None  # who is running the sweep now, and whether surely (store.writer)
    # its points with a folder whose run the command runs again, by status (interrupted, failed, incomplete;
    # stale: made with other settings than the point's)
    redo: dict[str, int] = field(default_factory=dict)

    @property
    def reproduction(self) -> bool:
        """Whether the sweep is a reproduction's arm, whose `gradflow reproduce` command `command` is: it
        resumes every arm and checks the claims (the arm's own sweep command checks none)."""
        return self.command.startswith("gradflow reproduce ")


KEPT_ON_RESUME = (store.OK, store.DIVERGED, store.RUNNING)  # the statuses of a point's run that its sweep keeps


def not_run(path: Path, there: dict[str, str], where: list[tuple[str, str]],
            paths: list[Path] | None = None) -> list[NotRun]:
    """The sweeps at or under `path` whose spec plans runs that are not among `there` (run ids relative to
    `path`, each with its status), or are there but unfinished (which its command runs again), counting those
    --where's (column, value) pairs keep: a job that sets the column is kept when its value matches, one that
    does not set it (the sweep's fixed value) is kept. `paths`: the folders under `path` listed (`ls A B`,
    `path` the folder both are under), whose sweeps alone count."""
    found = []
    for sweep, spec in store.specs_of(paths or [path]):
        if spec is None or not isinstance(spec.get("runs"), dict):
            continue
        prefix = store.relative_folder(sweep, path) or "."
        if any(k == STUDY and not in_study(pd.Series([prefix]), v).iloc[0] for k, v in where):
            continue
        jobs = [job if prefix == "." else f"{prefix}/{job}" for job in spec["runs"]
                if all(_job_matches(str(job), k, v) for k, v in where)]
        missing = sum(job not in there for job in jobs)
        redo = Counter(there[job] for job in jobs if job in there and there[job] not in KEPT_ON_RESUME)
        if missing or redo:
            command = store.resume_command(sweep, spec)
            if store.in_reproduction(sweep):  # (reproduce imported only then: ls of plain sweeps stays light)
                from gradflow.reproduce import resume_command

                command = resume_command(sweep) or command
            found.append(NotRun(prefix, missing, len(spec["runs"]), command,
                                store.writer(sweep), {k: redo[k] for k in store.STATUSES if redo[k]}))
    return found


def not_run_note(missing: list[NotRun]) -> str:
    """The line under `ls`'s table (and the report page's) about `missing`: one sweep's count and the
    command that runs them; several sweeps' counts."""
    if len(missing) == 1:
        (m,) = missing
        redo = and_list([f"{n} {status}" for status, n in m.redo.items()])
        if not m.missing:  # (only unfinished runs: their rows say so, and the command reruns them)
            what, does = f"not finished: {redo} of the sweep's {m.points} runs", "reruns them"
        else:
            what = f"not run yet: {m.missing} of the sweep's {m.points} runs"
            does = "runs them" + (f" and reruns the {redo}" if redo else "")
        does += ", then checks the experiment's claims" if m.reproduction else ""
        return what + store.who_runs(m.running, m.command, does) + ("" if m.running else " (and keeps the runs done)")
    each = ", ".join((f"{m.name} {m.missing} of {m.points} runs" + (f" ({sum(m.redo.values())} to rerun)" if m.redo
                                                                    else "") if m.missing else
                      f"{m.name} {sum(m.redo.values())} of {m.points} runs to rerun")  # (not "0 of 6 runs")
                     + (" (running)" if m.running else "") for m in missing)
    if len({m.command for m in missing}) == 1 and missing[0].reproduction and not any(m.running for m in missing):
        return (f"not run yet: {each}; `{missing[0].command}` runs them, then checks the experiment's claims "
                "(and keeps the runs done)")  # (one reproduction's arms: one command resumes them all)
    return f"not run yet: {each}; `gradflow ls SWEEP` gives the command that runs them"


def _job_matches(job: str, column_key: str, value: str) -> bool:
    if column_key == STUDY:  # (the sweep's: see `not_run`)
        return True
    items = dict(item.split("=", 1) for item in name_items(job) if "=" in item)
    for key, v in items.items():
        if column_key in (key.lstrip("+~"), f"{key.lstrip('+~')}.name"):  # (init=... sets init.name)
            # (--where depth=2,3: its runs not run too; a list as typed, [0.9,0.99], is _0.9,0.99_ in the name)
            return bool(matches_any(pd.Series([v]), value).iloc[0])
    return True


# --- how a run ended: its final metrics, and whether it learned anything ---------------------------
EVALUATED = ("train", "test")  # the splits whose last evaluation is a run's final metrics
CHANCE_MARGIN = 0.99  # a net stuck at chance hovers around ln(n_classes), a little either side
# ... and its accuracy around 1/n_classes (the most frequent class's share, where classes are uneven): a net
# whose train accuracy reaches 1.5/n_classes learned something, whatever its loss (an overconfident net)
CHANCE_ACC = 1.5
GREW = 1.5  # a final train loss this many times the first evaluation's: training made the net worse


class Chance(NamedTuple):
    """What a net that learned nothing scores (`job.chance_level`: it reads the data)."""

    loss: float  # its train loss
    classes: int  # the classes its accuracy guesses among
    words: str  # the loss level, as a flag says it


def final_metrics(metrics: list[tuple[int, str, str, float]], status: str) -> dict:
    """{"final": {...}} from the last evaluation; for a diverged run, only the last evaluation whose
    every value is finite, under "last_finite" with its step, and for an interrupted one its last
    evaluation under "last_evaluated", with its step, so that neither is read as a final result."""
    by_step: dict[int, dict[str, float]] = {}
    for step, split, metric, value in metrics:
        if split in EVALUATED:
            by_step.setdefault(step, {})[f"{split}_{metric}"] = value
    if status == store.INTERRUPTED:  # its last evaluation, with its step: no final result
        return {"final": {}, "last_evaluated": {store.STEP: max(by_step), **by_step[max(by_step)]} if by_step else {}}
    if status != store.DIVERGED:
        return {"final": by_step[max(by_step)] if by_step else {}}
    finite = [s for s, row in by_step.items() if all(math.isfinite(v) for v in row.values())]
    return {"final": {}, "last_finite": {store.STEP: max(finite), **by_step[max(finite)]} if finite else {}}


def learned_nothing(layers: pd.DataFrame, final: dict, chance: Chance | None, first: dict | None = None,
                    steps: int | None = None, loss_words: str = "final train loss",
                    first_words: str = "at the first evaluation") -> list[str]:
    """Why a run that finished cleanly is still no success (run.json `flags`; `run` and `ls` show them):
    every hidden layer's weight gradient exactly 0 at the end (e.g. all ReLUs dead); a final train loss at
    or above `chance` (`job.chance_level`'s; None: no chance level), with a train accuracy below CHANCE_ACC /
    its classes; or a final train loss GREW times the first evaluation's (`first`, that evaluation's
    metrics: an exploding regression net, 1.5 at step 0 and 4e20 at the end, stays finite). `steps`:
    how many it trained, said beside the loss (a 5-step try-out reads "learned nothing" too); `loss_words`: what
    `final`'s train_loss is (a short batch-norm run's is its last train-mode batch loss: job's BN_SETTLED), and
    `first_words` where `first`'s is from."""
    flags = []
    if not layers.empty:
        end = store.profile(layers, "grad_norm", store.last_step(layers))
        hidden = end[end.index != end.index.max()]  # the head's gradient is the loss's, not the network's
        # (none at all where every probed weight is frozen: a Recorder's adapter fine-tune)
        if len(hidden) and (hidden == 0).all():
            flags.append("learned nothing: every hidden weight gradient is exactly 0 at the end")
    loss, acc = final.get("train_loss", math.nan), final.get("train_acc", math.nan)
    if chance is not None and math.isfinite(loss) and loss > CHANCE_MARGIN * chance.loss \
            and not acc >= CHANCE_ACC / chance.classes:
        after = f" after {steps} step{'s' * (steps != 1)}" if steps else ""
        flags.append(f"learned nothing: {loss_words} {loss:.4g}{after}, {chance.words}")
    start = (first or {}).get("train_loss", math.nan)
    if math.isfinite(loss) and math.isfinite(start) and start > 0 and loss > GREW * start:
        flags.append(f"loss grew: {loss_words} {loss:.4g}, {start:.4g} {first_words}")
    return flags


def batch_window(metrics: list[tuple[int, str, str, float]], pick=max) -> dict:
    """The last (pick=min: the first) evaluation window's train-mode batch loss and accuracy, as
    {"train_loss": ..., "train_acc": ...} ({} where the run logged none)."""
    steps = [step for step, split, _, _ in metrics if split == "batch"]
    return {f"train_{metric}": value for step, split, metric, value in metrics
            if split == "batch" and step == pick(steps) and metric in ("loss", "acc")} if steps else {}


def first_metrics(metrics: list[tuple[int, str, str, float]]) -> dict:
    """The first evaluation's metrics ({"train_loss": ..., ...}), as final_metrics reads the last."""
    steps = [step for step, split, _, _ in metrics if split in EVALUATED]
    return {f"{split}_{metric}": value for step, split, metric, value in metrics
            if split in EVALUATED and step == min(steps)} if steps else {}
