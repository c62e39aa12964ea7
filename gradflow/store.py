"""The results contract: folder layout, file and column names, run statuses, locking, atomic
writes, readers and selectors. Every other module asks this one instead of spelling a name.

    <results>/<name>/                one single run or one sweep (a "study")
      sweep.yaml                     the sweep spec: the study's identity (multirun only)
      .gradflow.lock                 held (an OS file lock) while a sweep, run or reproduction writes
      <job>/                         one run; <job> names its overrides
        config.yaml                  the fully resolved config
        run.json                     status, pid and host, seed, device, versions, times, the files it
                                     wrote, final metrics, its flat config and summary numbers
        metrics.parquet              long: step, split, metric, value
        layers.parquet               long: step, layer, name, quantity, value

Every file is written to a temporary name and renamed, so an interrupted run never leaves a half
file that looks complete; run.json is written first (status "running") and last (final status,
after every file it lists), so a run is finished exactly when its run.json says so and every file
it lists loads. What a reader sees (`status_of`) adds what run.json alone cannot know: a run whose
process died is `interrupted`, a finished run with a missing or unreadable file is `incomplete`,
and a run that is not part of its folder's current sweep spec is `stale`.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import time
import traceback
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from gradflow.choices import identity, settings
from gradflow.files import atomic_write
from gradflow.fmt import number_from_json, strict_json
from gradflow.errors import GradflowError, did_you_mean, shorten, shorten_command

RUN_FILE = "run.json"
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.parquet"
LAYERS_FILE = "layers.parquet"
HIST_FILE = "hist.parquet"
JACOBIAN_FILE = "jacobian.parquet"
SWEEP_FILE = "sweep.yaml"
LOCK_FILE = ".gradflow.lock"  # the OS lock itself (filelock)
HOLDER_FILE = ".gradflow.lock.json"  # who holds it: pid, host, command (for the error message)
FIGURES_DIR = "figures"  # `gradflow plot`'s figures, in the folder plotted (a run's own included)
FIGURE_FORMATS = ("png", "pdf", "svg")
REPORT_HTML = "report.html"  # `gradflow report`'s page, in the folder it shows (a run's own included)
REPORT_FILE = "REPORT.md"
CLAIMS_FILE = "claims.json"  # a reproduction's claim results, one record per claim (cells as REPORT.md shows them)
TABLE_FILES = {"layers": LAYERS_FILE, "metrics": METRICS_FILE, "hist": HIST_FILE, "jacobian": JACOBIAN_FILE}
RUN_FILES = (RUN_FILE, CONFIG_FILE, *TABLE_FILES.values())  # everything a run folder may hold

# column names: the tables' columns on disk, the results contract that users' notebooks read too. The
# writers and the table code use these names; the figures spell the tidy columns ("run", "step", "value")
# as strings, as a notebook would: renaming a column is a new results layout, not a change here alone
STEP, LAYER, NAME, QUANTITY, VALUE = "step", "layer", "name", "quantity", "value"
SPLIT, METRIC = "split", "metric"
TENSOR, KIND, LO, HI, COUNT = "tensor", "kind", "lo", "hi", "count"
SAMPLE, SCOPE, INDEX = "sample", "scope", "index"
RUN, SOURCE, STATUS, PATH = "run", "source", "status", "path"  # added by `load` / `load_records`
DIVERGED_AT = "diverged_step"  # added by `load`: a diverged run's first non-finite step (its last probes may be
# from that step: finite gradients of an infinite loss, 1e32, drawn as its last step)
LAYER_COLUMNS = [STEP, LAYER, NAME, QUANTITY, VALUE]
METRIC_COLUMNS = [STEP, SPLIT, METRIC, VALUE]
HIST_COLUMNS = [STEP, LAYER, NAME, TENSOR, KIND, LO, HI, COUNT]
JACOBIAN_COLUMNS = [STEP, SAMPLE, SCOPE, LAYER, INDEX, VALUE]
TABLE_COLUMNS = {"layers": LAYER_COLUMNS, "metrics": METRIC_COLUMNS, "hist": HIST_COLUMNS,
                 "jacobian": JACOBIAN_COLUMNS}

# run statuses: the first four are written to run.json; the last three only ever come from reading
OK = "ok"  # trained to the end
DIVERGED = "diverged"  # stopped at the first non-finite loss or gradient (what was logged is kept)
FAILED = "failed"  # an error; run.json holds it
RUNNING = "running"  # its process is still at work
INTERRUPTED = "interrupted"  # stopped by Ctrl-C, or its process died while running
INCOMPLETE = "incomplete"  # run.json is unreadable, or a file it lists is missing or unreadable
STALE = "stale"  # not a run of its folder's current sweep spec (a removed point, a changed setting)
STATUSES = (OK, DIVERGED, FAILED, RUNNING, INTERRUPTED, INCOMPLETE, STALE)
FINISHED = (OK, DIVERGED)  # a sweep rerun skips these
ENDED = (OK, DIVERGED, FAILED)  # run.json's final word
REMOVABLE = (STALE, INCOMPLETE, INTERRUPTED)  # what `gradflow clean --stale` removes
FLAGS = "flags"  # run.json: notes on a run that ended ok but is no success (e.g. it learned nothing)
# every field a run.json holds (`job` and `Recorder` write them); `load_records` puts a scalar one beside the
# config keys, so a Recorder's config key of the same name would be hidden (recorder.TAKEN refuses it)
RUN_FIELDS = ("job", "started", "config_hash", "config", "python", "torch", "numpy", "gradflow", "platform",
              "git_commit", "gradflow_commit", "pid", "host", "device", "seed", "threads", "every", "steps_planned",
              "command",
              STATUS, "steps", "steps_done", "train_time", "wall_time", "fused_steps", "files", "summary",
              "final", "last_evaluated", "last_finite", FLAGS, "error", "traceback", DIVERGED_AT,
              "diverged_layer", "diverged_in", "replacement", "tied", "frozen")
# run.json fields that only gradflow's own runs write (job.py), never a Recorder's: a Recorder's config may take
# these names (its run.json holds none of them to hide the key)
JOB_FIELDS = ("data_root",)  # the folder a run's data files are read from (data.root, else $GRADFLOW_DATA, ./data)
STATUS_COLOURS = {OK: "green", DIVERGED: "yellow", FAILED: "red", RUNNING: "cyan", INTERRUPTED: "magenta",
                  INCOMPLETE: "red", STALE: "bright_black"}
# config keys that say where and how fast, not what is computed: they do not change a run's identity
NOT_IDENTITY = ("name", "results", "threads")
# gradflow's own top-level config keys; any other key without a dot is the user's own (+tag=baseline).
# A table's columns hold both beside run.json's fields, so `load` and `load_records` name the user's
# in the frame's attrs (USER_KEYS), where `keys.config_columns` finds them.
TOP_KEYS = ("seed", "device", "threads", "name", "results")
USER_KEYS = "user_keys"
# a comparison's table leaves out the keys its folders differ in (`source` names them); its attrs keep each
# source's values of them here ({source: {key: value}}), for what reads a line's whole config (the theory)
SOURCE_KEYS = "source_keys"
# the keys a folder's sweep spec sweeps as a grid (`grid_keys`), in the attrs of the tables `load` and
# `load_records` read from it: a sweep cut short, its runs so far no full grid, is drawn by its keys
# (`keys.is_grid`), as once it has ended, not as unrelated runs a legend names one by one
GRID_KEYS = "grid_keys"
# the columns of `load_records` whose every value present is a whole number (Int64) or a bool (boolean), as
# run.json and the config hold them; a frame of rows some of which lack the key has them float (20.0) or object
VALUE_TYPES = "value_types"


def _value_types(rows: list[dict]) -> dict[str, str]:
    """The nullable dtype of each key of `rows` whose values present are all ints, or all bools."""
    seen: dict[str, set[str]] = {}
    for row in rows:
        for k, v in row.items():
            kind = "boolean" if isinstance(v, (bool, np.bool_)) else "Int64" \
                if isinstance(v, (int, np.integer)) else None if v is None else "other"
            if kind:
                seen.setdefault(k, set()).add(kind)
    return {k: kinds.pop() for k, kinds in seen.items() if len(kinds) == 1 and kinds != {"other"}}


def as_recorded(df: pd.DataFrame) -> pd.DataFrame:
    """`df` (`load_records`' rows, or a table made of them) with each whole-number or bool key that some rows
    lack as pandas' nullable Int64 or boolean, as the runs that have it hold it: in a folder of several
    studies `model.width` of the MLPs beside a CNN read 128.0 (pandas' float for a missing value), where a
    folder of MLPs alone reads 128 (`ls --json`, `--csv`)."""
    types = {k: t for k, t in df.attrs.get(VALUE_TYPES, {}).items() if k in df.columns and df[k].isna().any()}
    types = {k: t for k, t in types.items() if t == "boolean" or (pd.to_numeric(df[k], errors="coerce").dropna()
                                                                  % 1 == 0).all()}  # (a depth read as 2.5: kept)
    return df.astype(types) if types else df


def _user_keys(configs: list[dict]) -> list[str]:
    return list(dict.fromkeys(k for c in configs for k in c if "." not in k and k not in TOP_KEYS))


def concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Tables of several folders in one frame, naming every user's key any of them names (pandas' concat
    keeps attrs only where all frames have the same: a +tag in one folder only would be no key at all)."""
    out = pd.concat(frames, ignore_index=True)
    out.attrs = {USER_KEYS: list(dict.fromkeys(k for f in frames for k in f.attrs.get(USER_KEYS, [])))}
    return out


# --- the folder layout -----------------------------------------------------------------------------
def study_dir(results: str | Path, name: str) -> Path:
    """<results>/<name>/: one single run or one sweep (a reproduction holds one sweep per arm)."""
    return Path(results) / name


REPRODUCE_DIR = "reproduce"  # <results>/reproduce/: `gradflow reproduce`'s studies, one folder per experiment


def in_reproduction(sweep: Path) -> bool:
    """Whether the sweep folder `sweep` is a reproduction's arm by its place: <results>/reproduce/<experiment>/<arm>."""
    return Path(sweep).resolve().parent.parent.name == REPRODUCE_DIR


def refuse_reproduce_name(name: str, results: str | Path, option: str = "name=") -> None:
    """No `gradflow run` or `sweep` study in <results>/reproduce/ (name=reproduce, or reproduce/...): its runs
    were then in the way of every `gradflow reproduce` under that results folder, which said its arms' names
    (name=reproduce/he2016/depth, never typed) were inside a folder of runs. `option`: how the name was given.
    A reproduction's arm there (reproduce/<experiment>/<arm>, a sweep) is its own: its command, as its REPORT.md
    and `ls` give it, resumes or reruns it, and a run of one of its points reruns that point."""
    parts = name.removesuffix("/").split("/")
    if len(parts) == 3 and (study_dir(results, name) / SWEEP_FILE).is_file():
        return
    if parts[0] == REPRODUCE_DIR:
        raise GradflowError(f"{option}{name} is refused: {Path(results) / REPRODUCE_DIR}/ is where `gradflow "
                            "reproduce` keeps its studies, and runs there would be in their way; give another name")


def reproduce_in_the_way(folder: Path, results: str | Path) -> GradflowError | None:
    """What stands where `gradflow reproduce` keeps its studies (<results>/reproduce/, or one experiment's folder
    in it, `folder`) and is none of them: a file, or a study of `gradflow run` or `sweep` (name=reproduce...,
    from before they were refused there). None where nothing does."""
    folder = Path(folder)
    if not (folder.exists() or folder.is_symlink()):
        return None
    if folder.is_symlink() or not folder.is_dir():
        what = "a file, not a folder"
    elif is_run_folder(folder):
        what = "a run's folder"
    elif (folder / SWEEP_FILE).is_file():
        what = "a sweep's folder (gradflow sweep --name ...)"
    elif _holds_runs(folder):
        n = sum(1 for p in folder.iterdir() if is_run_folder(p))
        what = f"a folder of {n} run{'s' * (n != 1)} (gradflow run name=...)"
    else:
        return None
    return GradflowError(f"{folder} is in the way of gradflow reproduce, which keeps its studies in "
                         f"{Path(results) / REPRODUCE_DIR}/: it is {what}, no reproduction; move or rename it "
                         f"(mv {folder} {Path(results) / 'ANOTHER_NAME'}) and reproduce again, or give results=FOLDER")


def refuse_nested(study: Path, results: str | Path, name: str) -> None:
    """Refuse a study (name=`name`) inside another below the results root: a sweep's folder (its sweep.yaml) or
    a folder of runs. `ls`, `plot` and `clean` of the outer one read the inner one's runs as its own (a run
    named grid/inner showed up in the sweep grid's ratio figure as a fifth depth)."""
    study, results = Path(study), Path(results)
    inside = sorted(study.iterdir(), key=natural_key) if study.is_dir() else []
    inner = next((p for p in inside if not is_run_folder(p) and not is_staging(p.name)
                  and ((p / SWEEP_FILE).is_file() or _holds_runs(p))), None)
    if inner is not None:  # (a sweep over results/reproduce listed the he2016 arms' runs as its own, and the
        # reproductions were refused as inside it)
        raise GradflowError(f"name={name} under results={results} is a folder of studies ({inner} is one), whose "
                            "runs it would list, plot and clean as its own; give a name (or results=) of its own")
    for outer in study.parents:  # (the folders as given, to the results folder itself: results=STUDY name=x too)
        sweep, run = (outer / SWEEP_FILE).is_file(), is_run_folder(outer)
        if sweep or run or _holds_runs(outer):
            what = f"the sweep {outer}" if sweep else f"the run {outer}" if run else f"{outer}, a folder of runs"
            raise GradflowError(f"name={name} under results={results} is inside {what}, which would list, plot "
                                "and clean its runs as its own; give a name (or results=) outside it")
        if outer == results or outer == Path(outer.anchor) or outer == Path("."):
            return


def _holds_runs(folder: Path) -> bool:
    """Whether `folder` is a folder holding run folders (a figures folder holds none)."""
    return folder.is_dir() and any(is_run_folder(p) for p in folder.iterdir())


def figures_dir(study: str | Path) -> Path:
    return Path(study) / FIGURES_DIR


def reproduction_md_path(study: str | Path) -> Path:
    """A reproduction's REPORT.md (its claims as markdown; not `gradflow report`'s page, REPORT_HTML)."""
    return Path(study) / REPORT_FILE


def claims_path(study: str | Path) -> Path:
    return Path(study) / CLAIMS_FILE


def drop_claims(study: str | Path) -> None:
    """A reproduction's verdicts (claims.json, REPORT.md and its page), before runs are redone under them: a
    check that then failed, or a Ctrl-C, left the verdicts of the runs replaced (a page read "8 of 8 claims
    pass" beside runs of a net whose checks had raised)."""
    for path in (claims_path(study), reproduction_md_path(study), Path(study) / REPORT_HTML):
        path.unlink(missing_ok=True)


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


# --- configs as flat dicts and their identity --------------------------------------------------------
def flatten(cfg: DictConfig | dict, prefix: str = "") -> dict[str, Any]:
    """{"model.depth": 20, ...}: every leaf of a config as a dotted key."""
    container = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
    out: dict[str, Any] = {}
    for k, v in container.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        elif isinstance(v, (list, tuple)):
            out[key] = str(list(v))
        else:
            out[key] = v
    return out


def differing(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(key, old value, new value) for each key of a run's identity whose value differs between two flat
    configs, in their keys' order (device too, which no folder name has; None where one lacks the key)."""
    return [(k, old.get(k), new.get(k)) for k in dict.fromkeys([*old, *new])
            if k not in NOT_IDENTITY and old.get(k) != new.get(k)]


def config_hash(flat: dict[str, Any]) -> str:
    """What a run computes, as a short digest of its flat config (where and how fast left out)."""
    ident = {k: v for k, v in identity(flat).items() if k not in NOT_IDENTITY}
    return hashlib.sha1(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:16]


# --- writing -------------------------------------------------------------------------------------
def write_text(path: Path, text: str) -> None:
    def w(tmp):
        Path(tmp).write_text(text)

    atomic_write(Path(path), w)


def write_json(path: Path, obj: dict) -> None:
    """`obj` as strict JSON (other tools' parsers refuse NaN and Infinity): nan as null, infinities as
    "inf"/"-inf"; `read_run` reads a run's numbers back as floats."""
    write_text(path, json.dumps(strict_json(obj), indent=2, default=_jsonable, allow_nan=False) + "\n")


def _jsonable(x):
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating,)):
        return float(x)
    return str(x)


def _refuse_symlink(path: Path, what: str) -> None:
    if path.is_symlink():
        raise GradflowError(f"{what} {path} is a symbolic link (to {os.readlink(path)}); gradflow writes only into "
                            "real folders: pass the target itself (results=<folder>) or remove the link")


def check_writable(folder: Path, study: Path | None = None, option: str = "results=") -> None:
    """Fail before any work if `folder` cannot be created or written, or if it (or the study folder
    holding it) is a symbolic link, which would send writes somewhere the user did not name. `option`:
    what the user sets to write elsewhere (results=, --out)."""
    folder = Path(folder)
    for part in folder.parts:
        if len(part.encode()) > 255:  # the file system's limit for one name
            raise GradflowError(f"folder name {shorten(part, 40)!r} is {len(part)} characters long and a folder "
                                "name holds at most 255: choose a shorter name= (or results=)")
    _refuse_symlink(folder, "folder")
    if study is not None:
        _refuse_symlink(Path(study), "study folder")
    folder = folder.absolute()
    probe = folder
    while not probe.exists():
        if probe.is_symlink():  # a dangling link
            _refuse_symlink(probe, "folder")
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        what, advice = ("results folder", "set results=") if option == "results=" else ("folder", f"give {option} ")
        verb = "written" if probe == folder else "created"  # (it said "cannot be created" of one that exists)
        raise GradflowError(f"{what} {folder} cannot be {verb}: {probe if probe != folder else 'it'} is "
                            f"{'not a folder' if not probe.is_dir() else 'read-only'}; {advice}<a writable folder>")


def is_run_folder(path: Path) -> bool:
    """A folder gradflow made for one run: a real folder holding a run file (run.json, config.yaml, a
    table) or an atomic write's temporary copy of one, and nothing but those, plus what `gradflow plot`
    and `report` write into a run they show: its figures folder (figures only) and its page. Only such
    folders are ever deleted. (A run killed while it wrote its first file, config.yaml, leaves its folder
    holding that file's temporary copy alone; one killed while its folder was removed, any remainder.)"""
    path = Path(path)
    if path.is_symlink() or not path.is_dir():
        return False
    names = [p.name for p in path.iterdir()]
    return any(n in RUN_FILES or _run_temporary(n) for n in names) and not _foreign(path, names)


def _foreign(path: Path, names: list[str]) -> list[str]:
    """The entries of a run folder gradflow did not write."""
    return [n for n in names if not (n in RUN_FILES or n == REPORT_HTML or _temporary(n)
                                     or (n == FIGURES_DIR and _figures_only(path / n)))]


def _temporary(name: str) -> bool:
    """An atomic write's temporary sibling (gradflow.files)."""
    return name.startswith(".") and name.endswith(".tmp")


def _run_temporary(name: str) -> bool:
    """An atomic write's temporary sibling of a run file (`.config.yaml.k2x9.tmp`)."""
    return _temporary(name) and any(name.startswith(f".{f}.") for f in RUN_FILES)


def _figures_only(folder: Path) -> bool:
    """A real folder of plain figure files (and temporary siblings), as `gradflow plot` writes."""
    return not folder.is_symlink() and folder.is_dir() and all(
        not p.is_symlink() and p.is_file() and (p.suffix[1:] in FIGURE_FORMATS or _temporary(p.name))
        for p in folder.iterdir())


def clear_run(job_dir: Path) -> None:
    """Remove a run folder before it is redone (or cleaned): only if gradflow made it."""
    job_dir = Path(job_dir)
    if not job_dir.exists() and not job_dir.is_symlink():
        return
    if is_empty_folder(job_dir):
        job_dir.rmdir()
        return
    if not is_run_folder(job_dir):
        raise in_the_way(job_dir)
    # run.json first: a folder without it is no run to any reader (`find_runs`), so a process killed
    # halfway leaves nothing that reads as a run. In rmtree's own order run.json could outlast the
    # config or a table, and a kill then left an incomplete run of the old config (not a stale one)
    (job_dir / RUN_FILE).unlink(missing_ok=True)
    shutil.rmtree(job_dir)


# linux/fs.h: FS_IOC_GETFLAGS, and the flags that keep a file or folder (or a folder's entries) from removal
_GETFLAGS, _KEPT_FLAGS = 0x80086601, 0x10 | 0x20  # FS_IMMUTABLE_FL, FS_APPEND_FL (chattr +i, +a)


def _flagged(path: Path) -> bool:
    """Whether `path` is immutable or append-only (chattr +i / +a), where the system can tell (Linux file
    systems that keep the flags); False where it cannot."""
    try:
        import array
        import fcntl
    except ImportError:  # (not a POSIX system)
        return False
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return False
    try:
        flags = array.array("i", [0])
        fcntl.ioctl(fd, _GETFLAGS, flags, True)
        return bool(flags[0] & _KEPT_FLAGS)
    except OSError:  # (a file system without the flags)
        return False
    finally:
        os.close(fd)


def check_removable(job_dir: Path) -> None:
    """Fail, before anything is deleted, if a run folder gradflow is to delete (`clear_run`) cannot be: a folder
    in it, or the one holding it, that this user may not write (another user's shared folder), or a file or
    folder made immutable or append-only (chattr +i, +a: root's writes pass any mode, not those). Nothing is
    touched to tell; what no check foresees (a read-only mount) fails at the deletion, in one line too."""
    job_dir = Path(job_dir)
    if not job_dir.is_dir() or job_dir.is_symlink():
        return
    folders = [Path(d) for d, _, _ in os.walk(job_dir)]
    for folder in [job_dir.parent, *folders]:
        if not os.access(folder, os.W_OK | os.X_OK):
            raise GradflowError(f"cannot remove {job_dir if folder == job_dir.parent else folder}: {folder} is not "
                                "writable by this user")
    for path in [job_dir, *(f / n for f in folders for n in sorted(os.listdir(f)))]:
        if _flagged(path):
            raise GradflowError(f"cannot remove {path}: it is immutable or append-only (chattr -i / -a lifts it)")


def removal_failed(job_dir: Path, e: OSError) -> GradflowError:
    """`clear_run`'s failure to delete part of `job_dir`, in one line: the path that could not go, and why."""
    return GradflowError(f"cannot remove {e.filename or job_dir}: {e.strerror or e}")


# A finished run of other settings stays in its folder until its replacement has finished: the replacement
# runs in a hidden folder beside it (STAGING) and takes the run's place only once it has ended ok or
# diverged; the old run is moved aside (ASIDE) for that moment. A replacement that fails leaves the old run
# where it was, its failure noted in the old run.json (REPLACEMENT). No reader lists a run in these folders.
STAGING, ASIDE = ".replacing", ".replaced"
REPLACEMENT = "replacement"  # run.json: a failed replacement of this run (its config hash, error, traceback)
KILLED_IN = "killed_in"  # run.json (or its replacement's note): the sweep process its worker died in (its
# `workers.process_token`: a later sweep of the same pid, in a container, ran no such point again)
REPLACEMENT_FAILED = "its replacement failed, so the finished run of the earlier settings was kept (rerun to retry): "


def staging_dir(job_dir: Path, suffix: str = STAGING) -> Path:
    job_dir = Path(job_dir)
    name = job_dir.name
    if len(f".{name}{STAGING}".encode()) > 255:  # (a folder name holds 255 bytes: a point's name that long goes
        name = hashlib.sha1(name.encode()).hexdigest()[:16]  # by its digest, in both hidden folders alike)
    return job_dir.parent / f".{name}{suffix}"


def recover(job_dir: Path) -> None:
    """Finish a swap that a killed process cut off between its two renames (`swap_in`: `job_dir` missing,
    its old run aside): the replacement takes its place where it had ended, else the old run goes back.
    Only with the study's lock held (a live swap looks the same for a moment)."""
    job_dir = Path(job_dir)
    aside = staging_dir(job_dir, ASIDE)
    if not aside.is_dir() or ((job_dir.exists() or job_dir.is_symlink()) and not is_empty_folder(job_dir)):
        return
    if job_dir.exists():  # (the empty folder Hydra makes for a sweep's job before it starts)
        job_dir.rmdir()
    staging = staging_dir(job_dir)
    if staging.is_dir() and is_finished(staging):
        staging.rename(job_dir)
        clear_run(aside)
    else:
        aside.rename(job_dir)


def is_staging(name: str) -> bool:
    """A hidden folder a replacement runs in, or its old run's for the moment of the swap (`staging_dir`)."""
    return name.startswith(".") and name.endswith((STAGING, ASIDE))


SAME, OTHER = "same", "other"  # what `standing` finds


def move_run(source: Path, job_dir: Path) -> None:
    """A finished run moved to another folder of its study, a point of a sweep that names its points
    otherwise (narrowed to one value, a point's folder is `default`; widened, it is `model.depth=5`): what
    stood there (nothing finished: a failed or interrupted run) goes first, then one rename, and its run.json
    names its new folder (the raw file, each field as written). A finished run of other settings there
    goes too: the point was to replace it."""
    try:
        clear_run(job_dir)
        Path(source).rename(job_dir)
        rec = json.loads((Path(job_dir) / RUN_FILE).read_text())
        write_text(Path(job_dir) / RUN_FILE, json.dumps({**rec, "job": Path(job_dir).name}, indent=2) + "\n")
    except (OSError, ValueError) as e:  # (a folder of someone else's in a shared study, a run.json gone bad)
        raise GradflowError(f"the finished run {source} could not be moved to {job_dir} ({e}); rerun with "
                            "--force to redo it there") from None


def standing(job_dir: Path, want_hash: str | None, rec: dict | None = None) -> str | None:
    """What a run of `want_hash` finds in `job_dir`: SAME, itself finished (ok or diverged, every file
    whole; any finished run where `want_hash` is None), OTHER, a finished run of other settings, which it
    replaces, or None, nothing finished to keep. `rec`: its run.json, where the caller read it."""
    rec = read_run(job_dir) if rec is None else rec
    if rec is None or status_of(job_dir, rec)[0] not in FINISHED:
        return None
    if want_hash is None or run_hash(job_dir, rec) == want_hash:
        return SAME
    # its settings hashed as this version hashes them (a run recorded model.alpha=1 hashed "1", which is "1.0"
    # now: `choices.same_number`), so that a finished run of the same settings is not trained again
    return SAME if rec.get("config_hash") and config_hash(run_config(job_dir, rec)) == want_hash else OTHER


def swap_in(staging: Path, job_dir: Path) -> None:
    """Put a replacement that has ended (in `staging`) in its run's place. The old run is moved aside
    first and removed after: at no moment does `job_dir` hold a mix of the two."""
    aside = staging_dir(job_dir, ASIDE)
    clear_run(aside)  # (one left by a process killed at this moment before)
    Path(job_dir).rename(aside)
    Path(staging).rename(job_dir)
    clear_run(aside)


def take_place(job_dir: Path, staging: Path, record: dict) -> dict:
    """A replacement that has ended (`record`, in `staging`) takes its run's place where it finished, else
    the run stays and notes it. A file of the user's that appeared in the run's folder meanwhile keeps the
    run where it is (that file in sight), as a failure of the replacement's: the sweep goes on. The
    replacement's record, as it stands."""
    if record[STATUS] in FINISHED and not_ours(job_dir):
        e = in_the_way(job_dir)
        record = {**record, STATUS: FAILED, "error": f"{type(e).__name__}: {e}",
                  "traceback": "".join(traceback.format_exception(e))}
    if record[STATUS] in FINISHED:
        swap_in(staging, job_dir)
    else:
        keep_replaced(job_dir, staging, record)
    return record


def keep_replaced(job_dir: Path, staging: Path, record: dict) -> None:
    """A replacement that failed (`record`, in `staging`): the finished run in `job_dir` stays, its
    run.json noting the failure (`status_of` says it where the run is stale), and `staging` goes."""
    rec = read_run(job_dir)
    if rec is not None:
        rec[REPLACEMENT] = {k: record.get(k) for k in ("started", "config_hash", STATUS, "error", "traceback")}
        if KILLED_IN in record:  # (a sweep's worker killed in it: not run again in that sweep)
            rec[REPLACEMENT][KILLED_IN] = record[KILLED_IN]
        write_json(Path(job_dir) / RUN_FILE, rec)
    clear_run(staging)


def in_the_way(job_dir: Path) -> GradflowError:
    """A run folder to be written holds something gradflow did not write (`not_ours`)."""
    job_dir = Path(job_dir)
    real = job_dir.is_dir() and not job_dir.is_symlink()
    foreign = _foreign(job_dir, [p.name for p in job_dir.iterdir()]) if real else []
    what = (f"it holds {', '.join(sorted(foreign)[:3])}{' and more' if len(foreign) > 3 else ''}, which gradflow "
            "did not write" if foreign else "a link, a file, or a folder of no run")
    return GradflowError(f"{job_dir} is in the way: it is not a gradflow run folder ({what}), and gradflow deletes "
                         "only its own runs; move it away or write the run elsewhere")


def is_empty_folder(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink() and not any(path.iterdir())


def not_ours(path: Path) -> bool:
    """A folder (or link) gradflow will not delete: it holds something gradflow did not write."""
    path = Path(path)
    return (path.exists() or path.is_symlink()) and not is_run_folder(path) and not is_empty_folder(path)


def check_clearable(job_dir: Path) -> None:
    """Fail now (before any job runs) if a run folder to be written is something gradflow did not make."""
    job_dir = Path(job_dir)
    if not_ours(job_dir):
        raise in_the_way(job_dir)


def begin(job_dir: Path, cfg: DictConfig, record: dict, shared: bool = False) -> None:
    """Start a run folder afresh: files from an earlier attempt are removed first (only gradflow's own).
    Adds the writing process (pid, host) to `record`, which `finish` writes again at the end. `shared`: the
    folder is a user's loop's too (a Recorder's: the checkpoints it saves there), whose other files stay."""
    job_dir = Path(job_dir)
    try:
        if shared and job_dir.is_dir() and not job_dir.is_symlink():
            for f in RUN_FILES:  # (run.json first: a folder without it is no run to any reader)
                (job_dir / f).unlink(missing_ok=True)
            (job_dir / REPORT_HTML).unlink(missing_ok=True)  # what plot and report wrote of the run replaced
            if _figures_only(job_dir / FIGURES_DIR):
                shutil.rmtree(job_dir / FIGURES_DIR)
        else:
            clear_run(job_dir)
        job_dir.mkdir(parents=True, exist_ok=shared)
    except PermissionError as e:
        raise GradflowError(f"results folder {job_dir} is not writable ({e.strerror}); "
                            "set results=<a writable folder>") from None
    write_text(job_dir / CONFIG_FILE, OmegaConf.to_yaml(cfg, resolve=True))
    record.update(pid=os.getpid(), host=socket.gethostname())  # who runs it: a dead writer reads as interrupted
    write_json(job_dir / RUN_FILE, {STATUS: RUNNING, **record})


def finish(job_dir: Path, record: dict) -> None:
    """The final word on a run, written last: `files` lists what it wrote, each must exist and load."""
    job_dir = Path(job_dir)
    files = [f for f in RUN_FILES[1:] if (job_dir / f).is_file()]  # (not a folder in its place)
    write_json(job_dir / RUN_FILE, {**record, "files": files})


# --- locking: one writer per study folder --------------------------------------------------------
@contextmanager
def lock(study: Path, command: str | None = None, elsewhere: str | None = "name=<another name>") -> Iterator[None]:
    """Hold the study folder's OS file lock while writing into it. A second writer (another sweep,
    run or reproduction into the same folder) fails at once, naming the process that holds it and how to
    write elsewhere (`elsewhere`: the command line's name=, a Recorder's path; None: `clean`, to wait)."""
    from filelock import FileLock, Timeout

    study = Path(study)
    _refuse_symlink(study, "study folder")
    created = [d for d in (study, *study.parents) if not d.exists()]  # deepest first: made here
    try:
        study.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise GradflowError(f"results folder {study} cannot be created ({e.strerror}); "
                            "set results=<a writable folder>") from None
    for _ in range(3):
        held = FileLock(str(study / LOCK_FILE), timeout=0)
        try:
            held.acquire()
        except Timeout:
            raise _written_by(study, _holder(study), elsewhere) from None
        if _locks_the_file(held, study / LOCK_FILE):
            break
        held.release()  # (a lock file its last holder removed as this one took it: that lock holds nothing)
    else:
        raise _written_by(study, "another process", elsewhere)
    try:
        write_json(study / HOLDER_FILE, {"pid": os.getpid(), "host": socket.gethostname(),
                                         "command": command or " ".join(["gradflow", *sys.argv[1:]])})
        yield
    finally:
        try:
            (study / HOLDER_FILE).unlink(missing_ok=True)
        except OSError:  # (a folder made read-only meanwhile: its error, the block's, is the one to say)
            pass
        empty = bool(created) and [p.name for p in study.iterdir()] == [LOCK_FILE]
        if empty:  # nothing was written: leave no trace, the lock file removed while still held (a writer
            (study / LOCK_FILE).unlink(missing_ok=True)  # that takes it meanwhile sees it gone, and takes a new one)
        held.release()
        if empty:  # nor the folders made to hold it (results/reproduce/)
            for folder in created:
                try:
                    folder.rmdir()
                except OSError:  # another writer's since
                    break


def _locks_the_file(held, path: Path) -> bool:
    """Whether the lock `held` (taken) is on the file at `path` now, not on one removed from there (filelock
    keeps the locked descriptor privately: where it has none to give, the lock is taken as it is)."""
    fd = getattr(getattr(held, "_context", None), "lock_file_fd", None)
    if not isinstance(fd, int):
        return True
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except OSError:
        return False


def _written_by(study: Path, holder: str, elsewhere: str | None) -> GradflowError:
    """`elsewhere`: how the command writes elsewhere; None for one that has nowhere else to go (clean)."""
    return GradflowError(f"{study} is being written by {holder}; wait for it to finish, "
                         + (f"or write elsewhere with {elsewhere}" if elsewhere else "then run the same command again"))


def refuse_if_written(study: Path, elsewhere: str = "name=<another name>") -> None:
    """Refuse at once where another process surely holds `study`'s lock (`writer`), before a command says
    what it would do there (a sweep's runs to replace, its stale ones: read while another writes them),
    which `lock` would refuse after."""
    who, holder = writer(study), _holder_file(Path(study))
    if who is not None and who[1] and holder is not None and holder[0] != os.getpid():
        raise _written_by(Path(study), who[0], elsewhere)


def writer(study: Path) -> tuple[str, bool] | None:
    """Who is writing into `study` now (a sweep running), as `lock` names them, and whether that is sure;
    None where no one is. Read without taking the lock (a reader makes no file, and must not make a writer
    fail): the file its holder writes, checked against the kernel's list of held locks (/proc/locks) where
    the holder is on this host (a holder killed leaves its file, and its pid may be another process's
    since); a holder on another host, or where that list is not to be read, is taken at its word."""
    who = _holder_file(Path(study))
    if who is None:
        return None
    pid, host, named = who
    here = host == socket.gethostname()
    held = _held(Path(study) / LOCK_FILE) if here else None
    if held is False or (held is None and here and not pid_alive(pid)):
        return None
    return named, held is True


def _held_by_a_writer(study: Path, pid: int) -> bool:
    """Whether a process that may be writing a run of `pid` holds `study`'s lock, by its holder file: not where
    there is none, where it names a process that is gone (one that left at once on Ctrl-C leaves it), nor where
    it names this one, writing no such run (`clean`, which read such a run as running once it held the lock)."""
    holder = _holder_file(study)
    if holder is None:
        return (study / HOLDER_FILE).exists()  # (one unreadable: taken as held)
    if holder[1] != socket.gethostname():
        return True
    return not (holder[0] == os.getpid() != pid or not pid_alive(holder[0]))


def _holder_file(study: Path) -> tuple[int, str, str] | None:
    """(pid, host, "pid P on HOST (its command)") from the file a lock's holder writes (`lock`), or None where it
    is missing or unreadable."""
    try:
        who = json.loads((study / HOLDER_FILE).read_text())
        pid, host = int(who["pid"]), str(who["host"])
        return pid, host, f"pid {pid} on {host} ({shorten_command(str(who.get('command', '')), 60)})"
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _held(path: Path) -> bool | None:
    """Whether some process holds a lock on the file at `path` (Linux's /proc/locks), None where that
    cannot be read (another OS, no such file)."""
    try:
        st = os.stat(path)
        text = Path("/proc/locks").read_text()
    except OSError:
        return None
    return re.search(rf"\b{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}\b", text) is not None


def _holder(study: Path, wait: float = 2.0) -> str:
    """Who holds `study`'s lock, from the file its holder writes right after taking the lock: waited for up
    to `wait` seconds, since a writer that started a moment earlier may hold the lock and not yet have
    written it (two sweeps started together)."""
    deadline = time.monotonic() + wait
    while (who := _holder_file(study)) is None:
        if time.monotonic() > deadline:
            return "another process"
        time.sleep(0.02)
    return who[2]


def write_layers(job_dir: Path, steps: list[int], names: list[str], quantities: tuple[str, ...],
                 values: list[np.ndarray], masks: list[np.ndarray]) -> None:
    """Per-layer tables, one (points, quantities) array per probed step -> the long layers table."""
    if values:
        v = np.stack(values)  # (steps, points, quantities)
        keep = np.stack(masks)
        s, l, q = np.nonzero(keep)
        df = pd.DataFrame({
            STEP: np.asarray(steps, dtype=np.int64)[s],
            LAYER: l.astype(np.int64),
            NAME: np.asarray(names, dtype=object)[l],
            QUANTITY: np.asarray(quantities, dtype=object)[q],
            VALUE: v[s, l, q],
        })
    else:
        df = pd.DataFrame({c: pd.Series(dtype=t) for c, t in
                           zip(LAYER_COLUMNS, ("int64", "int64", "object", "object", "float64"))})
    write_table(Path(job_dir) / LAYERS_FILE, df)


def write_histograms(job_dir: Path, steps: list[int], names: list[str], hists: list[np.ndarray],
                     tensors: tuple[str, ...], kinds: tuple[str, ...], lo: np.ndarray, hi: np.ndarray) -> None:
    """Histograms, one (points, tensors, kinds) array per probed step -> the long hist table; kind k
    counts the values in [lo[k], hi[k]) (the probes define the bins)."""
    h = np.stack(hists)  # (steps, points, tensors, kinds)
    s, l, t, k = np.nonzero(~np.isnan(h))
    df = pd.DataFrame({STEP: np.asarray(steps, dtype=np.int64)[s], LAYER: l.astype(np.int64),
                       NAME: np.asarray(names, dtype=object)[l],
                       TENSOR: np.asarray(tensors, dtype=object)[t],
                       KIND: np.asarray(kinds, dtype=object)[k], LO: np.asarray(lo)[k], HI: np.asarray(hi)[k],
                       COUNT: h[s, l, t, k].astype(np.int64)})
    write_table(Path(job_dir) / HIST_FILE, df)


def write_jacobians(job_dir: Path, rows: list[tuple]) -> None:
    """(step, sample, scope, layer, singular values) rows -> the long jacobian table."""
    records = [(step, sample, scope, layer, i, float(v))
               for step, sample, scope, layer, sv in rows for i, v in enumerate(sv)]
    df = pd.DataFrame(records, columns=JACOBIAN_COLUMNS)
    write_table(Path(job_dir) / JACOBIAN_FILE, df)


def write_metrics(job_dir: Path, rows: list[tuple[int, str, str, float]]) -> None:
    df = pd.DataFrame(rows, columns=METRIC_COLUMNS).astype({STEP: "int64", VALUE: "float64"})
    write_table(Path(job_dir) / METRICS_FILE, df)


def write_table(path: Path, df: pd.DataFrame) -> None:
    atomic_write(Path(path), lambda tmp: df.to_parquet(tmp, index=False))


def environment() -> dict[str, Any]:
    """What is needed to redo a run: versions and the git commit of the code."""
    return dict(_environment())


@functools.cache  # one `git` call per process, not one per sweep job
def _environment() -> dict[str, Any]:
    import torch

    import gradflow

    info = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "gradflow": gradflow.__version__, "platform": platform.platform()}
    if commit := git_commit(Path(gradflow.__file__).parent):
        info["git_commit"] = commit
    return info


@functools.cache
def git_commit(folder: Path) -> str | None:
    """The commit checked out in the git repository `folder` is in; None outside one (or without git)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


# --- reading -------------------------------------------------------------------------------------
# run.json's fields that readers index into, with their types: a field of another type (an edited file,
# another program's) makes the run.json unreadable, so that one run is incomplete, not every listing broken
_RUN_TYPES = {"status": str, "config": dict, "final": dict, "last_finite": dict, "summary": dict, "flags": list,
              "files": list, "replacement": dict, "tied": list, "notes": list}
_NUMBERS = ("final", "last_finite", "summary")  # run.json's sections of numbers (nan written as null)


def read_run(job_dir: Path) -> dict | None:
    """run.json as a dict, or None when it is missing or unreadable (truncated, not JSON, a field of the
    wrong type)."""
    try:
        rec = json.loads((Path(job_dir) / RUN_FILE).read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    if not isinstance(rec, dict):
        return None
    for key, kind in _RUN_TYPES.items():
        if key in rec and rec[key] is None:  # (null, as absent: every reader then takes its default; the
            del rec[key]  # summary's .items() failed, so did every command on the study, clean's included)
        value = rec.get(key)
        if value is not None and (not isinstance(value, kind)
                                  or (kind is list and not all(isinstance(v, str) for v in value))):
            return None
    for key in _NUMBERS:
        if key in rec:
            rec[key] = {k: number_from_json(v) for k, v in rec[key].items()}
    return rec


def _loads(path: Path) -> bool:
    """Whether a file gradflow wrote is whole: present, and a Parquet file with both of its magic marks
    (the footer goes last, so a truncated table fails this); cheap enough to ask of every run."""
    try:
        size = path.stat().st_size
        if path.suffix != ".parquet":
            return size > 0
        with open(path, "rb") as f:
            head = f.read(4)
            f.seek(max(size - 4, 0))
            return size >= 12 and head == b"PAR1" and f.read(4) == b"PAR1"
    except OSError:
        return False


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    try:  # a zombie has exited; only its reaping is left (Linux; elsewhere a signal 0 is all we have)
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def sweep_spec(study: Path) -> dict | None:
    """The study's sweep.yaml (its identity), or None for a folder of single runs. Read once per version of
    the file in a process (a view reads it from several places: a 1000-run sweep's, 43 kB, took 35 ms a read
    in pure-Python YAML; a copy is returned, which the caller may change)."""
    import yaml

    file = Path(study) / SWEEP_FILE
    try:
        st = file.stat()
        key = (str(file.resolve()), st.st_mtime_ns, st.st_size, st.st_ino)  # (written anew: atomically, a new file)
        if key not in _SPECS:
            if len(_SPECS) > 256:  # (bounded: a long-lived process reading many studies)
                _SPECS.clear()
            _SPECS[key] = yaml.load(file.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except (OSError, yaml.YAMLError):
        return None
    spec = _SPECS[key]
    return copy.deepcopy(spec) if isinstance(spec, dict) else None


_SPECS: dict[tuple, object] = {}  # sweep_spec's: (file, mtime, size, inode) -> what it read


def spec_files(path: Path) -> list[tuple[Path, dict | None]]:
    """(folder, sweep.yaml, or None where it does not read as a spec: damaged by hand) of each sweep at or
    under `path`, in folder order."""
    path = Path(path)
    found = sorted(path.rglob(SWEEP_FILE)) if path.is_dir() else []
    return [(f.parent, sweep_spec(f.parent)) for f in found]


def specs_of(paths: list[Path]) -> list[tuple[Path, dict | None]]:
    """`spec_files` of every one of `paths`, each sweep once where the paths nest."""
    seen: set[Path] = set()
    out = []
    for p in paths:
        for folder, spec in spec_files(p):
            if folder.resolve() not in seen:
                seen.add(folder.resolve())
                out.append((folder, spec))
    return out


def relative_folder(folder: Path, root: Path) -> str:
    """`folder` relative to `root`, as `runs` of `root` names the runs in it ("" for `root` itself)."""
    rel = Path(os.path.relpath(os.path.abspath(folder), os.path.abspath(root))).as_posix()
    return "" if rel == "." else rel


def status_of(job_dir: Path, rec: dict | None, spec: dict | None = None) -> tuple[str, str]:
    """(status, why) as a reader should see the run: run.json's status, corrected for what it cannot
    know itself (a dead process, a missing or broken file, a changed sweep spec)."""
    job_dir = Path(job_dir)
    if rec is None:
        return INCOMPLETE, f"{job_dir / RUN_FILE} is missing or unreadable"
    status = rec.get(STATUS)
    if status == RUNNING:
        pid = rec.get("pid")
        if rec.get("host") == socket.gethostname() and isinstance(pid, int):
            if not pid_alive(pid):
                return INTERRUPTED, f"its process {pid} ended before the run did"
            # every writer holds its study's lock, whose holder file goes with it: none, and the pid is
            # another process's now (a container restarted: pids start small again)
            if not _held_by_a_writer(job_dir.parent, pid):
                return INTERRUPTED, f"no process holds its study's lock: its process ended (pid {pid} is another's)"
        return RUNNING, ""
    if status in ENDED or status == INTERRUPTED:
        # an interrupted run lists the tables of what it measured until then, if it got to write them
        expected = (CONFIG_FILE, METRICS_FILE, LAYERS_FILE) if status in FINISHED else (CONFIG_FILE,)
        for f in rec.get("files", expected):
            if not _loads(job_dir / f):
                return INCOMPLETE, f"{job_dir / f} is missing or unreadable"
    else:
        return INCOMPLETE, f"{job_dir / RUN_FILE} has no known status ({shorten(status, 20)!r})"
    planned = (spec or {}).get("runs")
    failed = rec.get(REPLACEMENT) or {}  # (`keep_replaced`)
    if isinstance(planned, dict):
        want = planned.get(job_dir.name)
        if want is None:
            return STALE, "not a point of the current sweep spec"
        if run_hash(job_dir, rec) != want:
            if failed.get("config_hash") == want:
                return STALE, REPLACEMENT_FAILED + str(failed.get("error", ""))
            return STALE, "made with settings the current sweep spec no longer has"
    elif failed.get("config_hash") not in (None, run_hash(job_dir, rec)):  # (a run of its own: `gradflow run`)
        return status, REPLACEMENT_FAILED + str(failed.get("error", ""))
    return status, str(rec.get("error", ""))


def run_hash(job_dir: Path, rec: dict | None = None) -> str:
    rec = rec if rec is not None else read_run(job_dir) or {}
    return rec.get("config_hash") or config_hash(run_config(job_dir, rec))


def is_finished(job_dir: Path, want_hash: str | None = None) -> bool:
    """Finished (ok or diverged) with every file whole, and, given `want_hash`, with that config."""
    return standing(job_dir, want_hash) == SAME


_NUMBER = re.compile(r"((?:(?<=[=,])-)?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)")  # (a sign only right after = or ,)


def natural_key(path: Path) -> tuple:
    """Sorts run folders by their values, numbers as numbers: model.depth=2 before model.depth=10, optim.lr=1e-3
    before optim.lr=0.01 (by name, 10 came before 2)."""
    return tuple(tuple((0, float(t), t) if i % 2 else (1, t, "") for i, t in enumerate(_NUMBER.split(part)))
                 for part in Path(path).parts)


def check_distinct(paths: list[Path], command: str) -> None:
    """Refuse a folder given twice, or one inside another, to a command that sets folders side by side
    (compare, report)."""
    seen = [Path(p).resolve() for p in paths]
    twice = next((p for p, r in zip(paths, seen) if seen.count(r) > 1), None)
    if twice is not None:  # (every row would read ×1 against itself)
        raise GradflowError(f"{twice} is given twice: {command} needs different folders")
    for p, r in zip(paths, seen):  # a folder and a run or sweep inside it: the same runs twice, as above
        if outer := next((q for q, o in zip(paths, seen) if o != r and o in r.parents), None):
            raise GradflowError(f"{p} is inside {outer}, which holds its runs already: {command} needs "
                                "folders of different runs")


def find_runs(path: Path) -> list[Path]:
    """Run folders at or below `path` (a run, a sweep, or a folder of sweeps)."""
    path = Path(path)
    if not path.exists():  # the folders beside it nearest its name (results/reproduce/he2015-quick for he2015)
        try:
            names = [p.name for p in path.parent.iterdir() if p.is_dir()]
        except OSError:  # (no such parent either, or not readable)
            names = []
        near = did_you_mean(path.name, names, lambda n: str(path.parent / n))
        if not near and "=" in str(path) and "/" not in str(path):  # (`ls DIR model.depth=2`: a filter, --where left out)
            near = f" (a filter? --where {path})"
        raise GradflowError(f"{path} does not exist{near}")
    if path.is_file():  # (a run's run.json or table, say)
        hint = f": give its run's folder, {path.parent}" if (path.parent / RUN_FILE).exists() else ""
        raise GradflowError(f"{path} is a file, not a run or a folder of runs{hint}")
    if (path / RUN_FILE).exists():
        return [path]
    runs = sorted((p.parent for p in path.rglob(RUN_FILE)
                   if not any(part == FIGURES_DIR or is_staging(part) for part in p.relative_to(path).parts)),
                  key=natural_key)
    if not runs:
        # a sweep cut short before its first run began: how to run it
        planned = [(sweep, spec) for sweep, spec in specs_of([path]) if spec and isinstance(spec.get("runs"), dict)]
        if len(planned) == 1:
            (sweep, spec), running = planned[0], writer(planned[0][0])
            raise GradflowError(f"{path} holds no runs yet: none of its sweep's {len(spec['runs'])} runs has begun"
                                + who_runs(running, resume_command(sweep, spec), "runs them", lead="; "))
        raise GradflowError(f"{path} holds no runs (no {RUN_FILE} below it)"
                            + (f"; none of its {len(planned)} sweeps' runs has begun: `gradflow ls SWEEP` gives "
                               "each one's command" if planned else ""))
    return runs


def who_runs(running: tuple[str, bool] | None, command: str, does: str, lead: str = ": ") -> str:
    """The end of a line about a sweep's runs still to run: who is running the sweep (`writer`'s answer), or the
    command that `does` it: "; the sweep is running (...)", "; the sweep may be running (...); if it is not,
    `cmd` runs them" (a holder on another host, whose lock is not to be seen from here), or `lead` and "`cmd`
    runs them"."""
    if running and running[1]:  # (its command again would be refused: the sweep holds the folder's lock)
        return f"; the sweep is running ({running[0]})"
    if running:
        return f"; the sweep may be running ({running[0]}); if it is not, `{command}` {does}"
    return f"{lead}`{command}` {does}"


def grid_keys(path: Path) -> list[str]:
    """The keys the sweep at `path` sweeps as a grid, every combination of their values (its spec's); [] where
    `path` is no sweep, or one of --points (any list of points)."""
    spec = sweep_spec(path)
    if not spec or not isinstance(spec.get("runs"), dict) or spec.get("points") is not None:
        return []
    return [str(k) for k in spec.get("swept") or []]


def resume_command(sweep: Path, spec: dict) -> str:
    """The sweep's command with its folder absolute (`results=results` ran it from one place; `ls` may run
    from another, and the folder may have been copied or renamed)."""
    import shlex

    points: list[str] = []
    if spec.get("points") is not None and spec.get("command"):  # (its --points FILE, as its command has it)
        words = shlex.split(str(spec["command"]))
        if "--points" not in words[:-1]:
            return str(spec["command"])
        points = ["--points", words[words.index("--points") + 1]]
    kept = [str(o) for o in spec.get("overrides") or []
            if str(o).split("=", 1)[0].lstrip("+~") not in ("results", "name")]  # (overrides.override_key)
    sweep = sweep.resolve()
    return " ".join(["gradflow sweep", *map(shlex.quote, kept), shlex.quote(f"results={sweep.parent}"),
                     "--name", shlex.quote(sweep.name), *map(shlex.quote, points)])


def run_config(job_dir: Path, rec: dict | None = None) -> dict[str, Any]:
    """A run's flat config: from run.json when it carries one (fast), else from config.yaml."""
    import yaml

    if rec and isinstance(rec.get("config"), dict):
        return settings(rec["config"])  # (a run recorded before a key it does not read was left out: norm.eps)
    try:
        flat = flatten(yaml.safe_load((Path(job_dir) / CONFIG_FILE).read_text()) or {})
    except (OSError, yaml.YAMLError, AttributeError):
        return {}
    return settings(flat)  # Hydra's config.yaml holds the keys of other choices too (init.sw2 of a Xavier run)


PRESET_KEY = "experiment"  # a run's preset (+experiment=NAME) where its folder's name gives it: a key of the tables


def listed_config(job_dir: Path, rec: dict | None = None) -> dict[str, Any]:
    """`run_config`, with the preset its folder's name gives (a sweep over presets, `+experiment=glob(*)`, whose
    runs' configs hold each preset's settings but not its name: `ls` had no column, `--where experiment=X`
    no key to read) as the key `experiment`. For the tables alone: a run's identity is its config's."""
    from gradflow.overrides import name_items, override_key

    flat = run_config(job_dir, rec)
    preset = [o.split("=", 1)[1] for o in name_items(Path(job_dir).name) if override_key(o) == PRESET_KEY]
    return {PRESET_KEY: preset[-1], **flat} if preset and PRESET_KEY not in flat else flat  # (its column first)


def prefix_runs(df: pd.DataFrame, prefix: str) -> pd.DataFrame:
    """`df` with its run ids as `prefix/run`: runs of several folders (each may have its "default")
    kept apart in one frame, as the figures group rows by run."""
    return df.assign(**{RUN: prefix + "/" + df[RUN].astype(str)})


def _run_id(job_dir: Path, root: Path) -> str:
    rel = job_dir.relative_to(root) if job_dir != root else Path(job_dir.name)
    return rel.as_posix()


def runs(path: str | Path) -> list[dict]:
    """Every run at or below `path` as {run, source, path, status, why, record}, statuses as a reader
    sees them (`status_of`), reading only run.json (and each folder's sweep.yaml once)."""
    root = Path(path)
    specs: dict[Path, dict | None] = {}
    out = []
    for job in find_runs(root):
        if job.parent not in specs:
            specs[job.parent] = sweep_spec(job.parent)
        rec = read_run(job)
        status, why = status_of(job, rec, specs[job.parent])
        out.append({RUN: _run_id(job, root), SOURCE: root.name, PATH: str(job), STATUS: status, "why": why,
                    "record": rec or {}})
    return out


def distinct_paths(paths: list[str | Path]) -> list[Path]:
    """`paths` in the order given, each once (by the folder it names: results/a beside ./results/a/)."""
    seen: set[Path] = set()
    out = []
    for p in map(Path, paths):
        if p.resolve() not in seen:
            seen.add(p.resolve())
            out.append(p)
    return out


def common_root(paths: list[Path]) -> Path:
    """The folder every one of `paths` is at or under: relative where they all are (results for results/a
    and results/b), else absolute."""
    root = os.path.commonpath([os.path.abspath(p) for p in paths])
    return Path(os.path.relpath(root) if not any(Path(p).is_absolute() for p in paths) else root)


def runs_of(paths: list[Path]) -> tuple[Path, list[dict]]:
    """The runs at or below every one of `paths` (as `runs` lists them), each once where the paths nest, with
    their ids relative to the folder they are all under (`common_root`), as `runs` of that folder names them
    (a/model.depth=3 and b/seed=0 for results/a and results/b); and that folder. A path that does not exist
    or holds no run is refused (`find_runs`)."""
    if len(paths) == 1:
        return paths[0], runs(paths[0])
    root = common_root(paths)
    top = os.path.abspath(root)
    seen: set[Path] = set()
    out = []
    for p in paths:
        for r in runs(p):
            where = Path(r[PATH]).resolve()
            if where in seen:
                continue
            seen.add(where)
            run_id = os.path.relpath(os.path.abspath(r[PATH]), top)
            out.append({**r, RUN: Path(run_id).as_posix() if run_id != "." else Path(r[PATH]).name,
                        SOURCE: Path(top).name})
    return root, out


def drew_nothing(run: dict) -> bool:
    """A run (as `runs` lists it) with no tables to draw: incomplete (a damaged or missing file), or
    failed before its first step (a model that did not build)."""
    return run[STATUS] == INCOMPLETE or (run[STATUS] == FAILED and not run["record"].get("steps_done"))


def by_recorder(record: Mapping[str, Any]) -> bool:
    """Whether a run record (run.json, or its row in a table) is a Recorder's, a user's own loop's: its `every`,
    which gradflow's runs do not write (NaN in a table of both)."""
    every = record.get("every")
    return every is not None and every == every


def untabled(run: dict) -> str | None:
    """Why a run (as `runs` lists it) is in no figure, where it is in none: `drew_nothing`'s two kinds
    ("failed", "incomplete"), or "interrupted" (killed before it wrote a table: `kill -9`, out of memory) or
    "running" (its tables are written when it ends); None for a run with tables."""
    if drew_nothing(run):
        return run[STATUS]
    if run[STATUS] == RUNNING or (run[STATUS] == INTERRUPTED and not (Path(run[PATH]) / LAYERS_FILE).exists()):
        return run[STATUS]
    return None


def nothing_drawn_reason(path: str | Path, listed: list[dict], include_stale: bool = False) -> str | None:
    """Why `path` has nothing to draw, where every run it lists (stale ones only with `include_stale`) has
    no tables (`untabled`: failed before its first step, incomplete, killed before its tables, still running),
    or every run is stale (left out); else None."""
    if listed and not include_stale and all(r[STATUS] == STALE for r in listed):  # (it said "no probed layers")
        return (f"every run of {path} is stale (not of its sweep's current spec), and stale runs are left out; "
                f"gradflow ls {path} says why, and gradflow plot --all draws them")
    listed = [r for r in listed if include_stale or r[STATUS] != STALE]
    running = [r for r in listed if r[STATUS] == RUNNING]
    if running and all(r[STATUS] == RUNNING or drew_nothing(r) for r in listed):  # (it said "no probed layers")
        if len(listed) == 1 and Path(running[0][PATH]) == Path(path):
            who = f"{path} is still running"
        elif len(running) == len(listed):
            who = f"{'the run' if len(listed) == 1 else f'every run ({len(listed)})'} of {path} is still running"
        else:
            n = len(running)
            who = (f"{n} run{'s' * (n != 1)} of {path} {'is' if n == 1 else 'are'} still running and the rest "
                   f"failed before their first step or are incomplete")
        return f"{who}; a run's tables are written when it ends (a Recorder's at close()): nothing to draw yet"
    if listed and all(drew_nothing(r) for r in listed):
        return (f"every run of {path} failed before its first step or is incomplete, so there is nothing to "
                f"draw; gradflow ls {path} says why")
    if listed and all(untabled(r) for r in listed):  # (killed before its tables: it said "no probed layers")
        still = " or is still running" if any(r[STATUS] == RUNNING for r in listed) else ""
        return (f"every run of {path} failed before its first step, is incomplete or was interrupted before it "
                f"wrote a table (killed){still}, so there is nothing to draw; gradflow ls {path} says why")
    return None


def load(path: str | Path, table: str = "layers", include_stale: bool = False,
         listed: list[dict] | None = None) -> pd.DataFrame:
    """One tidy DataFrame for a run or a folder of runs: the `layers` or `metrics` rows of every
    run, with `run`, `source`, `status`, `diverged_step` (a diverged run's first non-finite step, else NaN)
    and every config key (dotted, e.g. `model.depth`) as columns.
    Stale runs (not part of their folder's current sweep) are left out unless `include_stale`;
    incomplete runs always are (their tables are not whole). `listed`: `runs(path)`, when the caller
    reads several tables of the same folder (each would otherwise read every run.json again)."""
    if table not in TABLE_FILES:
        choices = [*TABLE_FILES, "runs"]
        raise GradflowError(f"table={table!r} is not allowed{did_you_mean(str(table), choices)}; choices: "
                            f"{', '.join(choices)}")
    filename = TABLE_FILES[table]
    tables, configs, metas = [], [], []
    for r in runs(path) if listed is None else listed:
        f = Path(r[PATH]) / filename
        if r[STATUS] == INCOMPLETE or (r[STATUS] == STALE and not include_stale) or not f.exists():
            continue
        tables.append(_read_arrow(f))
        configs.append(listed_config(Path(r[PATH]), r["record"]))
        diverged = r["record"].get(DIVERGED_AT) if r[STATUS] == DIVERGED else None
        metas.append({RUN: r[RUN], SOURCE: r[SOURCE], STATUS: r[STATUS],
                      DIVERGED_AT: diverged if isinstance(diverged, int) else np.nan, **configs[-1]})
    if not tables:
        return pd.DataFrame(columns=[RUN, SOURCE, STATUS, DIVERGED_AT] + TABLE_COLUMNS[table])
    joined = _concat(tables)
    meta = pd.DataFrame(metas)  # one row per run, repeated over its table's rows (a column per key per run is slow)
    meta = meta.drop(columns=[c for c in meta.columns if c in joined.columns])  # the table's own columns win
    meta = meta.iloc[np.repeat(np.arange(len(tables)), [t.num_rows for t in tables])].reset_index(drop=True)
    out = pd.concat([joined, meta], axis=1)
    out.attrs[USER_KEYS] = [k for k in _user_keys(configs) if k in meta.columns]  # (a table's own column wins)
    out.attrs[GRID_KEYS] = grid_keys(Path(path))
    return out


def _concat(tables: list) -> pd.DataFrame:
    """Arrow tables as one DataFrame: joined as Arrow and converted once (a fifth of the time of
    converting each), or one by one where their columns differ."""
    import pyarrow as pa

    try:
        return pa.concat_tables(tables).to_pandas()
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # columns that differ: another version wrote one
        return pd.concat([t.to_pandas() for t in tables], ignore_index=True)


def _read_arrow(path: Path):
    """One Parquet table as Arrow; a broken file is one line naming it, never a traceback."""
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises several types for a corrupt file
        raise _unreadable(path, e) from None
    return _whole(path, table, table.column_names)


def read_table(path: Path) -> pd.DataFrame:
    """One Parquet table; a broken file is one line naming it, never a traceback (`_whole`)."""
    try:
        table = pd.read_parquet(path)
    except Exception as e:  # pyarrow raises several types for a corrupt file
        raise _unreadable(path, e) from None
    return _whole(path, table, table.columns)


_COLUMNS_OF_FILE = {file: TABLE_COLUMNS[table] for table, file in TABLE_FILES.items()}


def _whole(path: Path, table, columns):
    """`table`, read from `path`, unless it lacks one of its kind's columns (`value`: a healthy run was drawn as
    diverged, a NaN at every layer): then one line naming the file."""
    missing = [c for c in _COLUMNS_OF_FILE.get(Path(path).name, ()) if c not in columns]
    if missing:
        raise _unreadable(path, ValueError(f"it has no column {', '.join(missing)}"))
    return table


def run_table(job_dir: Path, table: str) -> pd.DataFrame:
    """One of a run's tables by name (`layers`, `metrics`, ...): an empty frame with the table's columns
    where the run has none (one cut off before writing it); a broken file is one line, as `read_table`."""
    path = Path(job_dir) / TABLE_FILES[table]
    if path.exists():
        return read_table(path)
    # typed as a written table's are, so that arithmetic on the empty frame works (np.isfinite takes no
    # untyped column: ls --rate reads an interrupted run that wrote no table)
    numeric = {STEP, LAYER, VALUE, LO, HI, COUNT, SAMPLE, INDEX}
    return pd.DataFrame({c: pd.Series(dtype="float64" if c in numeric else "object") for c in TABLE_COLUMNS[table]})


def _unreadable(path: Path, e: Exception) -> GradflowError:
    # (damage that keeps the file's size looks whole to ls and clean, which read no table: say what works)
    text = " ".join(str(e).split())
    # pyarrow's words for a file whose end is not a Parquet footer (cut in the middle, they read "...
    # reported by footer's (1701273954bytes) (168 characters)")
    why = "damaged: its Parquet footer does not read" if re.search(r"footer|magic bytes", text) else shorten(text, 80)
    return GradflowError(f"{path} cannot be read ({why}); remove its run folder ({Path(path).parent}) and rerun the "
                         "command that made it to redo the run")


def load_records(path: str | Path, listed: list[dict] | None = None) -> pd.DataFrame:
    """One row per run: its status as a reader sees it, run.json (final metrics as final.*) and every
    config key. Stale runs are listed (as `stale`). `listed`: as in `load`."""
    records, configs = [], []
    for r in runs(path) if listed is None else listed:
        rec = r["record"]
        configs.append(listed_config(Path(r[PATH]), rec))
        row = {RUN: r[RUN], SOURCE: r[SOURCE], PATH: r[PATH], **configs[-1]}
        for k, v in rec.items():  # after the config: run.json's device is the one actually used
            if k == "final":
                row.update({f"final.{m}": x for m, x in (v or {}).items()})
            elif k == FLAGS:  # why a run that finished is still no success ("learned nothing: ...")
                row[FLAGS] = "; ".join(v) if v else ""
            elif not isinstance(v, (dict, list)):
                row[k] = v
        row[STATUS] = r[STATUS]
        if r["why"] and (r[STATUS] != rec.get(STATUS) or r["why"].startswith(REPLACEMENT_FAILED)):
            row["error"] = r["why"]
        records.append(row)
    out = pd.DataFrame(records)
    out.attrs[USER_KEYS] = _user_keys(configs)
    out.attrs[GRID_KEYS] = grid_keys(Path(path))
    out.attrs[VALUE_TYPES] = _value_types(records)
    return out


def removable(path: str | Path) -> tuple[list[dict], list[Path], list[dict]]:
    """What `gradflow clean --stale` would remove: the stale, incomplete and interrupted runs, and the
    leftover folders (`leftovers`); and the runs of those states it keeps, as they hold files gradflow did
    not write (`not_ours`). A folder holding leftovers and no run is no error here."""
    left = leftovers(path) if Path(path).is_dir() else []
    try:
        listed = [r for r in runs(path) if r[STATUS] in REMOVABLE]
    except GradflowError:
        if not left:
            raise
        listed = []
    kept = [r for r in listed if not_ours(Path(r[PATH]))]
    return [r for r in listed if r not in kept], left, kept


def leftovers(path: str | Path) -> list[Path]:
    """Run folders at or below `path` without a run.json: a run cut off between writing its config and
    its run.json, or a folder whose clearing was cut off (`clear_run` removes run.json first). No
    reader sees them as runs; a rerun of their point clears them, `gradflow clean --stale` too (one
    whose point left the sweep would otherwise stay on disk for good)."""
    out = []
    for folder, dirs, files in os.walk(path):
        # a replacement's hidden folder left by a killed process (`staging_dir`): whatever it holds, its run
        # never took its place (its point reruns it), and a rerun of its point clears it too
        out += [Path(folder) / d for d in sorted(dirs) if is_staging(d) and is_study(Path(folder))
                and ((is_run_folder(Path(folder) / d) and _written_here(Path(folder) / d))
                     or is_empty_folder(Path(folder) / d))
                and not _cut_off_swap(Path(folder) / d)]
        dirs[:] = sorted(d for d in dirs if d != FIGURES_DIR and not is_staging(d))
        if files and RUN_FILE not in files and not dirs and is_run_folder(Path(folder)) and _a_job(Path(folder)) \
                and _written_here(Path(folder)):
            out.append(Path(folder))
        elif not files and is_empty_folder(Path(folder)) and _a_job(Path(folder)):  # (its figures/ is no emptiness)
            out.append(Path(folder))  # (a job's folder Hydra made for a point that never began: a sweep killed)
    return out


def _cut_off_swap(hidden: Path) -> bool:
    """Whether a replacement's `hidden` folder belongs to a swap cut off between its renames: no leftover, it
    holds the point's only run, which the next run of the point puts back (`recover`). Its point is the
    `job` its run.json names (a cut-off swap's two folders each hold a whole run; the name of a long point's
    hidden folder is a digest)."""
    job = (read_run(hidden) or {}).get("job")
    if not isinstance(job, str) or not job or "/" in job or job in (".", ".."):
        return False
    point = hidden.parent / job
    aside = staging_dir(point, ASIDE)
    return (not point.exists() or is_empty_folder(point)) and aside.is_dir() and read_run(aside) is not None


def _a_job(folder: Path) -> bool:
    """Whether `folder` is where gradflow puts a job: in a study folder it wrote into (its lock, a sweep.yaml),
    named as jobs are (`default`, or its overrides, key=value). A user's `myconf/config.yaml`, or a folder
    of copied tables inside a sweep, holds only gradflow's file names too, and was removed as a leftover."""
    return is_study(folder.parent) and (folder.name == "default" or "=" in folder.name)


def _written_here(folder: Path) -> bool:
    """Whether a run folder's files are in gradflow's formats, not only under its names: a config.yaml of a
    run's config (a mapping with its model and train groups), run.json an object, tables Parquet. A user's
    notes saved as `lr=0.1/config.yaml` in a sweep were removed as a leftover run."""
    import yaml

    for f in folder.iterdir():
        try:
            if f.name == CONFIG_FILE:
                config = yaml.safe_load(f.read_text())
                if not (isinstance(config, dict) and {"model", "train"} <= set(config)):
                    return False
            elif f.name == RUN_FILE:
                if not isinstance(json.loads(f.read_text()), dict):
                    return False
            elif f.name in TABLE_FILES.values():
                with open(f, "rb") as fh:
                    if fh.read(4) != b"PAR1":  # (Parquet's magic number; a table cut off mid-write is a temporary)
                        return False
        except (OSError, ValueError, yaml.YAMLError):
            return False
    return True


def is_study(folder: Path) -> bool:
    """A folder gradflow wrote runs into: it holds its lock or a sweep.yaml."""
    return (folder / LOCK_FILE).exists() or (folder / SWEEP_FILE).exists()


def check_cleanable(path: str | Path, jobs: list[Path]) -> None:
    """`clean`'s runs to remove can each go (`check_removable`), before any goes: a run that could not was a
    traceback, after the runs before it had gone."""
    try:
        for job in jobs:
            if not not_ours(job):  # (those are kept, not removed)
                check_removable(job)
    except GradflowError as e:
        raise GradflowError(f"{e}; nothing removed: make it removable (or move it out of {path}) and clean "
                            "again") from None


def clean(path: str | Path) -> tuple[list[Path], list[Path]]:
    """Remove stale, incomplete and interrupted runs and leftover folders, each study folder locked while
    it is cleaned (so nothing a live sweep is writing goes); only folders gradflow made are ever deleted.
    Returns (removed, kept): the runs kept gained files gradflow did not write since `removable` listed
    them (those holding such files then are not tried)."""
    removed, kept = [], []
    by_study: dict[Path, list[Path]] = {}
    doomed, left, _ = removable(path)
    for job in [Path(r[PATH]) for r in doomed] + left:
        by_study.setdefault(job.parent, []).append(job)
    check_cleanable(path, [j for jobs in by_study.values() for j in jobs])
    with ExitStack() as held:
        # every study's lock before anything goes: one held by a live sweep stopped the cleaning halfway,
        # its error the only word, the studies before it already cleaned
        for study in sorted(by_study):
            try:
                held.enter_context(lock(study, f"gradflow clean {path} --stale", elsewhere=None))
            except GradflowError as e:
                raise GradflowError(f"{e}; nothing removed") from None
        for study, jobs in by_study.items():
            spec = sweep_spec(study)
            for job in jobs:
                # still so, now that we hold the lock (a leftover has no run.json: it reads as incomplete)
                if job.exists() and (is_staging(job.name) and not _cut_off_swap(job)
                                     or status_of(job, read_run(job), spec)[0] in REMOVABLE):
                    if not_ours(job):
                        kept.append(job)
                        continue
                    try:
                        clear_run(job)
                    except OSError as e:  # (one that became unremovable since it was checked)
                        n = len(removed)
                        raise GradflowError(f"{removal_failed(job, e)}; removed {n} run{'s' * (n != 1)} before it, "
                                            "not the rest") from None
                    removed.append(job)
    return removed, kept
