"""The standard set of figures for a run or a sweep: which figures fit the data, and drawing them."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from gradflow.errors import GradflowError
from gradflow.plots.curves import curves, grid, ratio
from gradflow.plots.distributions import hist, spectrum
from gradflow.plots.keys import is_grid, is_numeric_key, n_distinct, ordered_values, swept_keys
from gradflow.plots.profiles import heatmap, profile
from gradflow.plots.save import file_part, save
from gradflow.plots.style import MAX_STYLES


DRAWN = ("grad_norm", "signal_norm")  # the per-layer quantities of the standard set


def standard_set(layers: pd.DataFrame | None, metrics: pd.DataFrame | None, runs: pd.DataFrame | None,
                 out_dir: str | Path, fmt: str = "png", hists: pd.DataFrame | None = None,
                 jacobian: pd.DataFrame | None = None) -> list[Path]:
    """Draw the usual figures into out_dir and return their paths.

    One run: profile at step 0 and at the last step, heatmap, curves.
    A sweep: profile at step 0 and at the end, curves, the weight-gradient and back-propagated signal
    ratios (when model.depth varies) and a grid of
    the final accuracy when two numeric keys were swept (with the mean-field 6 xi_c curve when they
    are init.sw2 and model.depth). With `probe=full` tables: per-layer histograms at step 0 for every
    run that has them (and at the last step for a single run), and the Jacobian spectrum at step 0
    and at the last step. Figures whose data is absent are skipped.
    """
    out = Path(out_dir)
    written: list[Path] = []

    def emit(name: str, make) -> None:
        written.append(save(make(), out / f"{name}.{fmt}", fmt))

    def usable(df) -> bool:
        return isinstance(df, pd.DataFrame) and not df.empty

    names = set()
    for df in (layers, metrics, runs):
        if usable(df) and "run" in df.columns:
            names |= set(df["run"].astype(str))
    single = len(names) == 1
    # colour and line style carry two swept keys; a third becomes panels, so no two lines look alike
    probed = layers[layers["quantity"].isin(DRAWN)] if usable(layers) else layers  # all that is drawn of it
    if usable(layers):
        facet = _third_key(layers)
        quantities = set(probed["quantity"])
        for q in [q for q in DRAWN if q in quantities]:
            rows = probed[probed["quantity"] == q]
            if rows.groupby("run")["layer"].nunique().max() < 2:
                continue  # e.g. a recurrent net's weight gradient: one point, not a profile
            if (rows["step"] == 0).any():
                emit(f"profile-{q}-step0", lambda: profile(probed, q, step=0, facet=facet))
            if (rows["step"] > 0).any():
                emit(f"profile-{q}-last", lambda: profile(probed, q, step="last", facet=facet))
        spread = [q for q in DRAWN if q in quantities
                  and probed.loc[probed["quantity"] == q, "layer"].nunique() > 1]
        if single and spread:  # a recurrent net's weight gradient is one point: its signal over time instead
            emit(f"heatmap-{spread[0]}", lambda: heatmap(probed, quantity=spread[0]))
    if usable(metrics) and metrics["metric"].isin(["loss", "acc"]).any():
        emit("curves", lambda: curves(metrics, facet=_third_key(metrics)))
    if usable(runs) and not single:
        swept = swept_keys(runs)
        swept_together = is_grid(runs, swept)  # unrelated runs get no figure over their keys
        # both ratios: the weight gradient, and the back-propagated signal (the one that vanishes)
        if "model.depth" in swept and swept_together and usable(layers):
            for q, name in (("grad_norm", "ratio-init"), ("signal_norm", "ratio-signal_norm-init")):
                if (probed["quantity"] == q).any():
                    emit(name, lambda: ratio(probed, "init", quantity=q))
        elif "model.depth" in swept and swept_together and "grad_ratio.init" in runs.columns:  # runs table alone
            emit("ratio-init", lambda: ratio(runs, "init"))
        numeric = [k for k in swept if is_numeric_key(runs, k)]
        value = next((v for v in ("final.test_acc", "final.train_acc")
                      if v in runs.columns and pd.to_numeric(runs[v], errors="coerce").notna().any()), None)
        if len(numeric) >= 2 and value and swept_together:
            pair = ("init.sw2", "model.depth") if {"init.sw2", "model.depth"} <= set(numeric) else tuple(numeric[:2])
            rest = [k for k in swept if k not in pair]
            if len(rest) <= 1:
                facet = rest[0] if rest else None
                name = f"grid-{value}-{pair[0]}-{pair[1]}"
                if pair == ("init.sw2", "model.depth"):
                    try:  # the theory curve when the data allows it (one activation and sb2 per panel)
                        written.append(save(grid(runs, *pair, value=value, theory="6xi_c", facet=facet),
                                            out / f"{name}.{fmt}", fmt))
                    except GradflowError:
                        emit(name, lambda: grid(runs, *pair, value=value, facet=facet))
                else:
                    emit(name, lambda: grid(runs, *pair, value=value, facet=facet))
    if usable(hists):
        hist_runs = ordered_values(hists["run"])
        for run in hist_runs:
            rows = hists[hists["run"] == str(run)]
            suffix = "" if len(hist_runs) == 1 else "-" + file_part(str(run))
            if (rows["step"] == 0).any():
                emit(f"hist-step0{suffix}", lambda: hist(rows, step=0))
            if len(hist_runs) == 1 and (rows["step"] > 0).any():
                emit(f"hist-last{suffix}", lambda: hist(rows, step="last"))
    if usable(jacobian) and (jacobian["scope"] == "input_output").any():
        io = jacobian[jacobian["scope"] == "input_output"]
        if (io["step"] == 0).any():
            emit("spectrum-step0", lambda: spectrum(io, step=0))
        if (io["step"] > 0).any():
            emit("spectrum-last", lambda: spectrum(io, step="last"))
    return written


def _third_key(df: pd.DataFrame | None) -> str | None:
    """With three or more swept keys: the last one with few values (the panels of the standard set)."""
    if not isinstance(df, pd.DataFrame) or df.empty:
        return None
    swept = swept_keys(df)
    if len(swept) < 3 or not is_grid(df, swept):  # unrelated runs get one line each, never panels
        return None
    return next((k for k in reversed(swept[1:]) if n_distinct(df[k]) <= MAX_STYLES), None)


def standard_figures(path: str | Path, out_dir: str | Path, fmt: str = "png", include_stale: bool = False) -> list[Path]:
    """The standard set for the run or sweep at `path`, from its tables on disk, into out_dir (stale and
    incomplete runs left out unless include_stale)."""
    from gradflow import store
    from gradflow.summary import runs_table

    listed = store.runs(path)  # every run.json read once for all five tables
    tables = {t: store.load(path, t, include_stale, listed) for t in ("layers", "metrics", "hist", "jacobian")}
    tables["runs"] = runs_table(path, include_stale=include_stale, listed=listed)
    written = standard_set(tables["layers"], tables["metrics"], tables["runs"], out_dir, fmt,
                           hists=tables["hist"], jacobian=tables["jacobian"])
    if not written:
        raise GradflowError(f"{path}: nothing to draw (no probed layers and no metrics in its runs)")
    return written
