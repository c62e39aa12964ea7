"""The results layout: the one place that knows folder names, file names and column names.

    <results>/<name>/                one single run or one sweep
      sweep.yaml                     the sweep spec (multirun only)
      <job>/                         one run; <job> names its overrides
        config.yaml                  the fully resolved config
        run.json                     status ok|diverged|failed|running, seed, device, versions, times, ...
        metrics.parquet              long: step, split, metric, value
        layers.parquet               long: step, layer, name, quantity, value

Every file is written to a temporary name and renamed, so an interrupted run never leaves a half
file that looks complete; run.json is written first (status "running") and last (final status),
so a run is finished exactly when its run.json says ok, diverged or failed.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from omegaconf import DictConfig, OmegaConf

from gradflow.errors import GradflowError

RUN_FILE = "run.json"
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.parquet"
LAYERS_FILE = "layers.parquet"
HIST_FILE = "hist.parquet"
JACOBIAN_FILE = "jacobian.parquet"
SWEEP_FILE = "sweep.yaml"
FIGURES_DIR = "figures"
REPORT_FILE = "REPORT.md"

# column names: every other module uses these names (or the selectors below), never the strings
STEP, LAYER, NAME, QUANTITY, VALUE = "step", "layer", "name", "quantity", "value"
SPLIT, METRIC = "split", "metric"
RUN, SOURCE, STATUS, PATH = "run", "source", "status", "path"  # added by `load` / `load_records`
LAYER_COLUMNS = [STEP, LAYER, NAME, QUANTITY, VALUE]
METRIC_COLUMNS = [STEP, SPLIT, METRIC, VALUE]
HIST_COLUMNS = ["step", "layer", "name", "tensor", "kind", "lo", "hi", "count"]
JACOBIAN_COLUMNS = ["step", "sample", "scope", "layer", "index", "value"]
FINISHED = ("ok", "diverged")  # a sweep rerun skips these


# --- the folder layout -----------------------------------------------------------------------------
def study_dir(results: str | Path, name: str) -> Path:
    """<results>/<name>/: one single run or one sweep (a reproduction holds one sweep per arm)."""
    return Path(results) / name


def figures_dir(study: str | Path) -> Path:
    return Path(study) / FIGURES_DIR


def report_path(study: str | Path) -> Path:
    return Path(study) / REPORT_FILE


# --- selectors: the questions everyone asks of the long tables -------------------------------------
def rows(layers: pd.DataFrame, quantity: str, step: int | None = None) -> pd.DataFrame:
    """The rows of one quantity (at one step), sorted by layer."""
    keep = layers[QUANTITY] == quantity
    if step is not None:
        keep &= layers[STEP] == step
    return layers[keep].sort_values(LAYER)


def profile(layers: pd.DataFrame, quantity: str, step: int) -> pd.Series:
    """The per-layer profile of `quantity` at `step` for one run's rows: values indexed by layer."""
    r = rows(layers, quantity, step)
    return pd.Series(r[VALUE].to_numpy(), index=r[LAYER].to_numpy(), name=quantity)


def last_step(layers: pd.DataFrame) -> int:
    return int(layers[STEP].max())


# --- writing -------------------------------------------------------------------------------------
_UMASK = os.umask(0)
os.umask(_UMASK)


def _atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; results are ordinary files
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text(path: Path, text: str) -> None:
    def w(tmp):
        Path(tmp).write_text(text)

    _atomic_write(Path(path), w)


def write_json(path: Path, obj: dict) -> None:
    write_text(path, json.dumps(obj, indent=2, default=_jsonable) + "\n")


def _jsonable(x):
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating,)):
        return float(x)
    return str(x)


def check_writable(folder: Path) -> None:
    """Fail before any work if `folder` cannot be created or written."""
    folder = Path(folder).absolute()
    probe = folder
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise GradflowError(f"results folder {folder} is not writable ({probe} is read-only or not a folder); "
                            "set results=<a writable folder>")


def begin(job_dir: Path, cfg: DictConfig, record: dict) -> None:
    """Start a run folder afresh: stale files from an earlier attempt are removed first."""
    job_dir = Path(job_dir)
    try:
        if job_dir.exists():
            shutil.rmtree(job_dir)
        job_dir.mkdir(parents=True)
    except PermissionError as e:
        raise GradflowError(f"results folder {job_dir} is not writable ({e.strerror}); "
                            "set results=<a writable folder>") from None
    write_text(job_dir / CONFIG_FILE, OmegaConf.to_yaml(cfg, resolve=True))
    write_json(job_dir / RUN_FILE, {"status": "running", **record})


def finish(job_dir: Path, record: dict) -> None:
    write_json(Path(job_dir) / RUN_FILE, record)


def write_layers(job_dir: Path, steps: list[int], names: list[str], quantities: tuple[str, ...],
                 values: list[np.ndarray], masks: list[np.ndarray]) -> None:
    """Per-layer tables, one (points, quantities) array per probed step -> the long layers table."""
    if values:
        v = np.stack(values)  # (steps, points, quantities)
        keep = np.stack(masks)
        s, l, q = np.nonzero(keep)
        df = pd.DataFrame({
            "step": np.asarray(steps, dtype=np.int64)[s],
            "layer": l.astype(np.int64),
            "name": np.asarray(names, dtype=object)[l],
            "quantity": np.asarray(quantities, dtype=object)[q],
            "value": v[s, l, q],
        })
    else:
        df = pd.DataFrame({c: pd.Series(dtype=t) for c, t in
                           zip(LAYER_COLUMNS, ("int64", "int64", "object", "object", "float64"))})
    write_table(Path(job_dir) / LAYERS_FILE, df)


def write_histograms(job_dir: Path, steps: list[int], names: list[str], hists: list[np.ndarray]) -> None:
    """Histograms, one (points, tensors, kinds) array per probed step -> the long hist table."""
    from gradflow.probes import HIST_EDGES, HIST_KINDS, HIST_TENSORS

    h = np.stack(hists)  # (steps, points, tensors, kinds)
    s, l, t, k = np.nonzero(~np.isnan(h))
    nb = len(HIST_EDGES) - 1
    lo = np.concatenate([HIST_EDGES[:-1], HIST_EDGES[:-1], [0.0, 0.0, HIST_EDGES[-1], np.nan]])
    hi = np.concatenate([HIST_EDGES[1:], HIST_EDGES[1:], [0.0, HIST_EDGES[0], np.inf, np.nan]])
    assert len(lo) == len(HIST_KINDS) == 2 * nb + 4
    df = pd.DataFrame({"step": np.asarray(steps, dtype=np.int64)[s], "layer": l.astype(np.int64),
                       "name": np.asarray(names, dtype=object)[l],
                       "tensor": np.asarray(HIST_TENSORS, dtype=object)[t],
                       "kind": np.asarray(HIST_KINDS, dtype=object)[k], "lo": lo[k], "hi": hi[k],
                       "count": h[s, l, t, k].astype(np.int64)})
    write_table(Path(job_dir) / HIST_FILE, df)


def write_jacobians(job_dir: Path, rows: list[tuple]) -> None:
    """(step, sample, scope, layer, singular values) rows -> the long jacobian table."""
    records = [(step, sample, scope, layer, i, float(v))
               for step, sample, scope, layer, sv in rows for i, v in enumerate(sv)]
    df = pd.DataFrame(records, columns=JACOBIAN_COLUMNS)
    write_table(Path(job_dir) / JACOBIAN_FILE, df)


def write_metrics(job_dir: Path, rows: list[tuple[int, str, str, float]]) -> None:
    df = pd.DataFrame(rows, columns=METRIC_COLUMNS).astype({"step": "int64", "value": "float64"})
    write_table(Path(job_dir) / METRICS_FILE, df)


def write_table(path: Path, df: pd.DataFrame) -> None:
    _atomic_write(Path(path), lambda tmp: df.to_parquet(tmp, index=False))


def environment() -> dict[str, Any]:
    """What is needed to redo a run: versions and the git commit of the code."""
    import torch

    import gradflow

    info = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "gradflow": gradflow.__version__, "platform": platform.platform()}
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(gradflow.__file__).parent,
                             capture_output=True, text=True, timeout=5)
        if out.returncode == 0:
            info["git_commit"] = out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return info


# --- reading -------------------------------------------------------------------------------------
def read_run(job_dir: Path) -> dict | None:
    try:
        return json.loads((Path(job_dir) / RUN_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def is_finished(job_dir: Path) -> bool:
    rec = read_run(job_dir)
    return bool(rec) and rec.get("status") in FINISHED and all(
        (Path(job_dir) / f).exists() for f in (CONFIG_FILE, METRICS_FILE, LAYERS_FILE))


def find_runs(path: Path) -> list[Path]:
    """Run folders at or below `path` (a run, a sweep, or a folder of sweeps)."""
    path = Path(path)
    if not path.exists():
        raise GradflowError(f"{path} does not exist")
    if (path / RUN_FILE).exists():
        return [path]
    runs = sorted(p.parent for p in path.rglob(RUN_FILE) if FIGURES_DIR not in p.parts)
    if not runs:
        raise GradflowError(f"{path} holds no runs (no {RUN_FILE} below it)")
    return runs


def run_config(job_dir: Path) -> dict[str, Any]:
    from gradflow.config import flatten

    path = Path(job_dir) / CONFIG_FILE
    if not path.exists():
        return {}
    # config.yaml is resolved plain YAML: the C loader reads it ~50x faster than OmegaConf.load (ls of 200 runs)
    return flatten(yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {})


def _run_id(job_dir: Path, root: Path) -> str:
    rel = job_dir.relative_to(root) if job_dir != root else Path(job_dir.name)
    return rel.as_posix()


def load(path: str | Path, table: str = "layers") -> pd.DataFrame:
    """One tidy DataFrame for a run or a folder of runs: the `layers` or `metrics` rows of every
    run, with `run`, `source`, `status` and every config key (dotted, e.g. `model.depth`) as columns."""
    files = {"layers": LAYERS_FILE, "metrics": METRICS_FILE, "hist": HIST_FILE, "jacobian": JACOBIAN_FILE}
    if table not in files:
        raise GradflowError(f"table={table!r} is not allowed; choices: {', '.join(files)}, runs")
    root = Path(path)
    filename = files[table]
    frames = []
    for job in find_runs(root):
        f = job / filename
        if not f.exists():
            continue
        df = pd.read_parquet(f)
        meta = {"run": _run_id(job, root), "source": root.name, "status": (read_run(job) or {}).get("status")}
        for k, v in {**meta, **run_config(job)}.items():
            if k not in df.columns:  # the table's own columns win (its `name` is the layer's name)
                df[k] = v
        frames.append(df)
    if not frames:
        own = {"metrics": METRIC_COLUMNS, "layers": LAYER_COLUMNS, "hist": HIST_COLUMNS, "jacobian": JACOBIAN_COLUMNS}
        return pd.DataFrame(columns=["run", "source", "status"] + own[table])
    return pd.concat(frames, ignore_index=True)


def load_records(path: str | Path) -> pd.DataFrame:
    """One row per run: run.json (final metrics flattened as final.*) and every config key."""
    root = Path(path)
    rows = []
    for job in find_runs(root):
        rec = read_run(job) or {}
        row = {"run": _run_id(job, root), "source": root.name, "path": str(job), **run_config(job)}
        for k, v in rec.items():  # after the config: run.json's device is the one actually used
            if k == "final":
                row.update({f"final.{m}": x for m, x in (v or {}).items()})
            elif not isinstance(v, (dict, list)):
                row[k] = v
        rows.append(row)
    return pd.DataFrame(rows)


def remove_run(job_dir: Path) -> None:
    """Forget a run (sweep --force): its folder goes, so it is redone from scratch."""
    if Path(job_dir).is_dir():
        shutil.rmtree(job_dir)
