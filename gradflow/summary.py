"""Per-run summaries computed from results on disk: the `runs` table behind `ls`, plots and compare."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from gradflow import store

SUMMARY_COLUMNS = ("grad_ratio.init", "grad_ratio.final", "chi1_measured", "chi1_theory")


def grad_ratio(layers: pd.DataFrame, step: int, quantity: str = "grad_norm") -> float:
    """`quantity` (grad_norm: the weight gradient) of the first probe point / that of the last, at
    `step`, for one run's rows."""
    g = layers[(layers["quantity"] == quantity) & (layers["step"] == step)].sort_values("layer")["value"].to_numpy()
    if len(g) < 2:
        return math.nan
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(g[0] / g[-1])


def per_run(layers: pd.DataFrame, config: dict) -> dict[str, float]:
    """The summary numbers of one run from its layer rows and its flattened config."""
    from gradflow import theory

    out = dict.fromkeys(SUMMARY_COLUMNS, math.nan)
    if layers.empty:
        return out
    out["grad_ratio.init"] = grad_ratio(layers, 0)
    out["grad_ratio.final"] = grad_ratio(layers, int(layers["step"].max()))
    sig = layers[(layers["quantity"] == "signal_norm") & (layers["step"] == 0)].sort_values("layer")
    if len(sig):
        out["chi1_measured"] = theory.fit_chi1(sig["layer"].to_numpy(), sig["value"].to_numpy())
    prediction = theory.predict(config)
    if prediction is not None:
        out["chi1_theory"] = prediction.chi1
    return out


def runs_table(path: str | Path) -> pd.DataFrame:
    """One row per run: run.json, final metrics, every config key, and the SUMMARY_COLUMNS."""
    records = store.load_records(path)
    summaries = []
    for _, rec in records.iterrows():
        f = Path(rec["path"]) / store.LAYERS_FILE
        layers = pd.read_parquet(f) if f.exists() else pd.DataFrame(columns=store.LAYER_COLUMNS)
        summaries.append(per_run(layers, store.run_config(Path(rec["path"]))))
    return pd.concat([records, pd.DataFrame(summaries, index=records.index)], axis=1)

