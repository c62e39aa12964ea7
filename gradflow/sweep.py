"""Sweeps: a grid of runs through real Hydra multirun (its basic sweeper, so every Hydra launcher works).

`gradflow sweep` calls `plan`, which expands and validates the whole grid first (each point's
values together), then `launch`, which takes the study folder's lock, writes <results>/<name>/sweep.yaml
(the study's identity: every planned run and the digest of its config) and hands the overrides to a
`@hydra.main` entry point (rewriting argv), exactly as `python app.py --multirun ...` would; the
launcher composes a job's config through `JobConfigLoader`, which asks Hydra once per structure and
copies that config with each job's own values. Each job runs `task`, which skips a run already
finished with the same config, and records any failure in the run's own run.json so the sweep goes
on. Workers of parallel launchers write only their own job folder and leave when the sweep's process
is gone.
"""

from __future__ import annotations

import errno
import functools
import importlib.util
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

from hydra._internal.config_loader_impl import ConfigLoaderImpl, get_overrides_dirname
from hydra.core.override_parser.types import IntervalSweep, RangeSweep
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from gradflow import config as config_mod
from gradflow.choices import CONDITIONAL_KEYS, settings, unread
from gradflow import store, workers
from gradflow.errors import (CANNOT_WRITE, GradflowError, UsageError, cannot_write, did_you_mean, file_in, shorten,
                             shorten_command)
from gradflow.fmt import and_list
from gradflow.overrides import NOT_IN_JOB_NAME, job_name, override_key, override_value, point_name, split_top

# launcher -> (module that provides it, extra to install)
LAUNCHER_PLUGINS = {
    "basic": (None, None),
    "joblib": ("hydra_plugins.hydra_joblib_launcher", "cluster"),
    "submitit_local": ("hydra_plugins.hydra_submitit_launcher", "cluster"),
    "submitit_slurm": ("hydra_plugins.hydra_submitit_launcher", "cluster"),
    "slurm": ("hydra_plugins.hydra_submitit_launcher", "cluster"),
}
REMOTE_LAUNCHERS = ("submitit_slurm", "slurm")  # their jobs run on other machines
# Hydra settings a user may pass; every other hydra.* would move outputs or change what a job sees
HYDRA_ALLOWED = ("hydra/launcher", "hydra.launcher.", "hydra.verbose")


class SameRun(GradflowError):
    """Two points of a sweep are one run (2 and 02; values of a key their runs do not read)."""

    def __init__(self, points: tuple[str, str]):
        self.points = points
        super().__init__(f"the sweep points {points[0]} and {points[1]} are the same run; make the swept values "
                         "distinct")


@dataclass
class Job:
    overrides: list[str]  # the job's config overrides (hydra ones removed)
    name: str  # its folder name under the sweep folder
    config_hash: str = ""  # what it computes (store.config_hash of its flat config)
    finished: bool = False  # already done with the same config: will be skipped
    replaces: bool = False  # a finished run of another config sits in its folder and will be redone
    moved_from: str | None = None  # finished under this folder name of the study: moved, not redone (over a
    #                                run of another config in its folder, where it `replaces` one)
    changes: list[tuple] = field(default_factory=list)  # where it `replaces` one: (key, old, new) for each
    #                                                     setting that differs (store.differing)


@dataclass
class Plan:
    root: Path  # <results>/<name>
    overrides: list[str]  # as given (config + hydra)
    swept: list[str]  # keys whose values vary
    launcher: str
    jobs: list[Job] = field(default_factory=list)
    force: bool = False  # redo finished runs too
    stale: int = 0  # runs in the folder that are not points of this grid
    points: list[dict] | None = None  # a points sweep: the explicit points (see `points_overrides`)
    command: str = ""  # the command line that makes this sweep (shell-quoted), as sweep.yaml records it
    keys: KeysTaken | None = None  # the keys its points take (see check_keys_apply)
    replacement_built: bool = False  # check_replacement_builds has built the first replacement

    @property
    def to_run(self) -> list[Job]:
        return [j for j in self.jobs if self.force or not j.finished]

    @property
    def skipped(self) -> int:
        """Points already finished with the same config, which this launch leaves as they are."""
        return len(self.jobs) - len(self.to_run)

    @property
    def replaced(self) -> int:
        return sum(j.replaces for j in self.jobs if j.moved_from is None)  # (a moved run takes its place at once)


# --- checking overrides before anything is composed ---------------------------------------------------
def _split_by_spaces(overrides: list[str], i: int) -> tuple[list[str], str] | None:
    """The words around overrides[i] that a shell split out of one override at its spaces (`model.depth=4, 12`,
    `norm=none ,batchnorm`, `seed= 1`: a word ending in = or , or one starting with ,), and the override they
    make together, where that one reads; None where the words are no such split."""
    def joins(a: str, b: str) -> bool:  # (an empty value, data.cache=, before an override of its own: no split)
        return a.endswith(",") or a.endswith("=") and "=" not in b or b.startswith(",")

    start, end = i, i
    while start > 0 and joins(overrides[start - 1], overrides[start]):
        start -= 1
    while end + 1 < len(overrides) and joins(overrides[end], overrides[end + 1]):
        end += 1
    words = overrides[start:end + 1]
    joined = "".join(words)
    return (words, joined) if len(words) > 1 and "=" in words[0] and _reads(joined) else None


def _reads(override: str) -> bool:
    try:
        config_mod.override_parser().parse_override(override)
    except HydraException:
        return False
    return True


def _not_added(override: str, overrides: list[str]) -> None:
    """`+key=value` adds a key the config lacks: for one of gradflow's keys or groups (+model.depth=3,
    +model=cnn) Hydra's error spoke of appending and of a defaults list (`override model: cnn`), and a
    sweep or reproduction put it on its first point, though every point has the key. A key of another
    choice than the one `overrides` name (+model.depth=3 with model=custom) is said not to apply."""
    key, value = override_key(override), override.split("=", 1)[1]
    group = key.partition(".")[0]
    chosen = [o.split("=", 1)[1] for o in overrides if override_key(o) == group and not o.startswith(("+", "~"))]
    if chosen and chosen[-1] in config_mod.GROUP_SCHEMAS.get(group, {}) and \
            key not in config_mod.choice_keys(group, chosen[-1]) and key in config_mod.known_keys():
        raise GradflowError(config_mod.not_a_key_of(key, chosen[-1]))
    if key in config_mod.GROUPS:
        what = f"{key} is a config group, whose choice is set"
    elif key in config_mod.known_keys():
        what = f"{key} is a key of gradflow's config, set"
    else:
        return
    raise GradflowError(f"{shorten(override, 40)}: {what} without the +: write {shorten(f'{key}={value}', 40)} "
                        "(+ adds a key of your own, which gradflow reads nowhere)")


def _as_override(option: str, overrides: list[str], command: str) -> str | None:
    """The override a config key's option was meant as (`--steps 3`: "train.steps=3, not --steps 3"), where the
    option names a key (or group) of the config whole (--model.depth, --seed), or one by its last part or its
    usual other name (--steps, --learning-rate); else None (and for name, which a reproduction sets itself)."""
    name, eq, value = option.lstrip("-").partition("=")
    name = name.replace("-", "_").lower()
    known = [*config_mod.GROUPS, *config_mod.known_keys()]
    leaf = config_mod.KEY_SYNONYMS.get(name, name)
    keys = {name} if name in known else {k for k in known if k.rsplit(".", 1)[-1] == leaf}
    if len(keys) != 1 or keys == {"name"} and command == "reproduce":
        return None
    if not eq:  # (the value as the next word, where one is: Typer hands both on as overrides)
        after = overrides[overrides.index(option) + 1:][:1]
        if after and "=" not in after[0] and not after[0].startswith("-"):
            value, option = after[0], f"{option} {after[0]}"
    from gradflow.columns import short_id  # (a list's whole items around "…": 8,16,24,…,392,400)

    return f"{keys.pop()}={short_id(value, 24) if value else '...'}, not {short_id(option, 40)}"


GRADCHECK_READS = ("model", "data", "init", "norm", "seed", "device", "threads", "gradcheck", "experiment")


def _refuse_unread(o: str, key: str, command: str) -> None:
    """A key the command never reads: gradcheck.* outside `gradflow gradcheck` (a sweep over gradcheck.mode
    trained one run twice, in two folders), and training's keys in it, which trains nothing and writes no run."""
    section = key.split(".")[0].split("/")[0]
    if command in ("run", "sweep") and section == "gradcheck":
        raise GradflowError(f"{shorten(o, 60)} applies to `gradflow gradcheck` alone: `gradflow {command}` reads no "
                            "gradcheck.* key")
    if command == "gradcheck" and section not in GRADCHECK_READS and not section.startswith("hydra"):
        raise GradflowError(f"{shorten(o, 60)} does not apply to `gradflow gradcheck`, which trains nothing and "
                            "writes no run: it reads model, data, init, norm, seed, device, threads and "
                            "gradcheck.mode (its batch is --batch)")


def check_overrides(overrides: list[str], command: str) -> None:
    """Refuse what would silently go wrong: an option this command does not have, a Hydra setting that
    would move outputs (gradflow owns where runs go), and an override the grammar cannot read (said
    with how to write it)."""
    forced = {override_key(o): o for o in overrides if o.startswith("++")}
    for o in overrides:
        key = _refuse_form(o, overrides, command, forced)
        _refuse_unread(o, key.lstrip("+"), command)
        _refuse_hydra(o, key, command)
        _refuse_values(o, key, _parsed(o, overrides), command)


ONE_NETWORK = ("run", "gradcheck")  # commands of one network, in this process: no launcher, no sweep


def _refuse_form(o: str, overrides: list[str], command: str, forced: dict[str, str]) -> str:
    """An override's form (a deletion, an addition of a key that is there, a key set two ways, an option
    mistyped as one, no key), refused; else its key."""
    if o.startswith("~"):  # (Hydra's deletion: OmegaConf refused it naming its own class, MLPConfig)
        raise GradflowError(f"{shorten(o, 40)} deletes a setting, which gradflow's configs do not allow: every "
                            f"key has a default; set it to a value instead ({override_key(o)}=...)")
    if o.startswith("+") and not o.startswith("++") and "=" in o:
        _not_added(o, overrides)
    # key=a ++key=b: the sweep ran some points with each value, in folders named by the other
    if override_key(o) in forced and not o.startswith("++"):
        raise GradflowError(f"{shorten(o, 40)} and {shorten(forced[override_key(o)], 40)} set one key two "
                            "ways; give it once, as key=value (++ adds a key that is not there)")
    if o.startswith("-"):
        example = _as_override(o, overrides, command) or "e.g. " + {
            "run": "name=x, not --name x", "gradcheck": "model=resnet20, not --model resnet20"}.get(
            command, "results=x, not --results x")
        raise UsageError(f"{shorten(o, 40)} is not an option of `gradflow {command}`; settings are "
                         f"key=value overrides ({example}); see `gradflow {command} --help`")
    key = override_key(o)
    if not key.strip():
        raise GradflowError(f"the override {shorten(o, 40)!r} has no key; write key=value, e.g. model.depth=5")
    return key


def _refuse_hydra(o: str, key: str, command: str) -> None:
    """A Hydra setting gradflow owns (the sweeper; where outputs go), or a launcher's for a command of one
    network, refused."""
    if key.startswith(("hydra/sweeper", "hydra.sweeper")):  # plan expands and checks the grid itself
        raise GradflowError(f"{shorten(o, 60)} is refused: gradflow sweeps the grid given as key=a,b,c "
                            "overrides (or --points FILE) with Hydra's basic sweeper, after checking every "
                            "point; choose the launcher with hydra/launcher=...")
    if command in ONE_NETWORK and key.startswith(HYDRA_ALLOWED[:2]):
        launch = (f": for one run through a launcher, `gradflow sweep {shorten(o, 40)} ...` (a sweep of "
                  "one point)" if command == "run" else "")
        raise GradflowError(f"{shorten(o, 60)} applies to sweeps; `gradflow {command}` {_does(command)} here, "
                            f"in this process{launch}")
    if key.startswith("hydra") and not key.startswith(HYDRA_ALLOWED):
        raise GradflowError(f"{shorten(o, 60)} is refused: gradflow decides where runs go "
                            "(<results>/<name>/<job>/); use name=NAME and results=FOLDER instead "
                            "(hydra/launcher=... and hydra.launcher.* are allowed)")


def _does(command: str) -> str:
    return "trains" if command == "run" else "checks"


def _parsed(o: str, overrides: list[str]):
    """The override as Hydra's grammar reads it; one that it cannot read, refused with how to write it (a
    list split at a space, a trailing comma, a value to quote)."""
    try:
        return config_mod.override_parser().parse_override(o)
    except HydraException:  # (Hydra's parser raises this base class itself)
        split = _split_by_spaces(overrides, overrides.index(o))
        if split:
            words, joined = split
            shown = [repr(shorten(w, 40)) for w in words]
            raise GradflowError(
                f"{and_list(shown)} look like one override split at spaces: write "
                f"{shorten(joined, 60)} (no space around = or after a comma)") from None
        following = overrides[overrides.index(o) + 1:][:1]  # (a word after it: a list split at a space)
        key, _, value = o.partition("=")
        if value and not value.strip(","):  # (model.depth=, : "write model.depth=", itself refused)
            raise GradflowError(f"the override {shorten(o, 60)!r} gives no value: write {shorten(key, 40)}=VALUE, "
                                f"or {shorten(key, 40)}=A,B,C to sweep") from None
        if o.endswith(",") and _reads(o.rstrip(",")) and all("=" in w for w in following):
            raise GradflowError(f"the override {shorten(o, 60)!r} ends with a comma: write "
                                f"{shorten(o.rstrip(','), 60)}") from None
        raise GradflowError(
            f"cannot read the override {shorten(o, 60)!r}: write key=value, with bare values made of "
            "ASCII letters, digits and _ . - / : (sweeps: a,b,c or range(1,5)); quote any other value, "
            "e.g. 'data.root=\"/my data\"'") from None


def _refuse_values(o: str, key: str, parsed, command: str) -> None:
    """Values a grid cannot list (an interval, a range of step 0), a group given several choices at once, a
    boolean or list key given what it is not, and several values for a command of one network, refused."""
    if isinstance(parsed.value(), IntervalSweep):  # (Hydra's sweepers cannot list one: a traceback)
        raise GradflowError(f"{shorten(o, 60)} is a continuous interval, which a grid cannot list; give the "
                            "values (a,b,c) or range(start,stop[,step])")
    if any(v == 0.0 and isinstance(v, float) for v in _numbers(parsed.value())):  # (1e400, inf: config's _finite)
        _refuse_underflow(key, o.split("=", 1)[1] if "=" in o else "")
    if isinstance(parsed.value(), RangeSweep) and parsed.value().step == 0:
        raise GradflowError(f"{shorten(o, 60)} has a step of 0: range(start,stop[,step]) needs a step other "
                            "than 0, e.g. range(1,9,2)")
    if key in config_mod.GROUP_KEYS:
        _one_choice(o, key, parsed)
    items = getattr(parsed.value(), "list", None)  # a,b,c (not range(...)): the values swept
    if key in config_mod.bool_keys():
        ranged = parsed.is_sweep_override() and items is None  # (range(0,2), a glob)
        bad = None if ranged else next((v for v in items or [parsed.value()] if not _a_bool(v)), None)
        if ranged or bad is not None:  # (2, -1, yes, on: OmegaConf's booleans)
            shown = shorten(o.split("=", 1)[1] if ranged else str(bad), 40)
            raise GradflowError(f"{key}={shown} is not allowed: {key} is true or false")
    if key in config_mod.list_keys() and items is not None and not all(isinstance(v, list) for v in items):
        plain = ",".join(str(v) for v in items)
        raise GradflowError(f"{shorten(o, 60)} would sweep {key} over single values, but {key} is a list: "
                            f"write {key}=[{shorten(plain, 40)}] (several lists: {key}=[..],[..])")
    if parsed.is_sweep_override() and command in ONE_NETWORK:  # (Hydra's own words said "add --multirun")
        instead = (f"`gradflow sweep {shorten(o, 40)} ...` trains one per value" if command == "run"
                   else "give one value")
        raise GradflowError(f"{shorten(o, 60)} is several values, and `gradflow {command}` {_does(command)} one "
                            f"network: {instead} (a text with commas is quoted: key='a,b')")


_WRITTEN_NUMBER = re.compile(r"(?<![\w.])[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+(?![\w.])")  # one with an exponent


def _numbers(value) -> list:
    """The numbers an override's parsed value holds: itself, a sweep's or a list's items (not a text's)."""
    items = getattr(value, "list", None)
    if items is not None or isinstance(value, (list, tuple)):
        return [n for v in (items if items is not None else value) for n in _numbers(v)]
    return [value] if isinstance(value, (int, float)) and not isinstance(value, bool) else []


def _underflows(number: str) -> bool:
    """Whether a number written with an exponent is below the smallest float: read as 0, not written as 0."""
    return float(number) == 0 != float(re.split("[eE]", number)[0])


def _refuse_underflow(key: str, text: str) -> None:
    """A number written with an exponent below the smallest float (1e-400), which reads as 0: refused (it ran at
    lr 0, learning nothing). Called where the parsed value holds a 0.0, so a text or a path is never read."""
    for number in _WRITTEN_NUMBER.findall(text):
        if _underflows(number):
            raise GradflowError(f"{key}={number} is below the smallest float (about 5e-324) and reads as 0; "
                                "write 0 where 0 is meant")


def _a_bool(value) -> bool:
    """true or false as Hydra parses it, quoted ('true') or read from another key (${probe.jacobian})."""
    return isinstance(value, bool) or isinstance(value, str) and (value.lower() in ("true", "false") or "${" in value)


def _one_choice(o: str, key: str, parsed) -> None:
    """A config group's value, or each value it sweeps, is one of its choices: a list composes every file of
    it, the last winning where they overlap (init=[standard,kaiming_normal] ran kaiming_normal in a folder
    named for both); null was Hydra's "must be a string or a list"."""
    values = getattr(parsed.value(), "list", None) if parsed.is_sweep_override() else [parsed.value()]
    bad = next((v for v in values or () if not isinstance(v, str)), "")  # (a range or glob lists none: None)
    if isinstance(bad, str):
        return
    choices = config_mod.group_choices(key) or config_mod.experiment_choices(key)
    plus = "+" if key == "experiment" else ""  # (a preset is added: +experiment=a,b)
    if isinstance(bad, list) and len(bad) > 1:
        instead = f"; several are swept with `gradflow sweep {plus}{key}={','.join(map(str, bad))}`"
    elif isinstance(bad, list) and bad:
        instead = f"; write {plus}{key}={bad[0]}"
    else:
        instead = ""
    raise GradflowError(f"{shorten(o, 60)}: {key} takes one of its choices{instead}; choices: {', '.join(choices)}")


def check_launcher(launcher: str, options: Sequence = ()) -> None:
    """The launcher is known, its plugin installed, and its settings (`hydra.launcher.*` overrides) mean
    something: with the basic launcher there are none; joblib needs workers; SLURM needs a cluster. Each
    failed later as Hydra's multi-line error or a traceback, after the sweep had started writing."""
    if launcher not in LAUNCHER_PLUGINS:
        raise GradflowError(f"hydra/launcher={launcher!r} is not known{did_you_mean(launcher, LAUNCHER_PLUGINS)}; "
                            f"choices: {', '.join(LAUNCHER_PLUGINS)}")
    module, extra = LAUNCHER_PLUGINS[launcher]
    try:
        found = module is None or importlib.util.find_spec(module) is not None
    except ImportError:  # find_spec imports the parent package, absent without any plugin
        found = False
    if not found:
        raise GradflowError(f"hydra/launcher={launcher} needs its Hydra plugin: pip install 'gradflow[{extra}]'")
    keys = launcher_keys(launcher)
    for o in options:
        key = o.key_or_group.split(".")[2] if o.key_or_group.count(".") >= 2 else ""
        if launcher == "basic":  # (the launcher that has the setting: joblib's n_jobs, SLURM's partition)
            has = next((name for name in ("joblib", "slurm", "submitit_local") if key in launcher_keys(name)), "joblib")
            raise GradflowError(f"{o.input_line} is a launcher setting, and the basic launcher has none; choose a "
                                f"launcher first: hydra/launcher={has} {o.input_line}")
        if keys and key not in keys and not o.is_add():  # (Hydra's words came after the sweep had started)
            other = next((name for name in ("joblib", "slurm", "submitit_local")  # (the launcher that has it)
                          if name != launcher and key in launcher_keys(name)), None)
            where = f" (it is a setting of hydra/launcher={other})" if other else did_you_mean(key, keys)
            raise GradflowError(f"{o.input_line}: the {launcher} launcher has no setting {key!r}{where}; its "
                                f"settings: {', '.join(keys)}")
        values = list(o.sweep_string_iterator()) if o.is_sweep_override() else [str(o.value())]
        for value in values:
            _launcher_value(o, launcher, key, value)
    missing = [c for c in ("sbatch", "srun") if shutil.which(c) is None] if launcher in REMOTE_LAUNCHERS else []
    if missing:  # (submitit's own words, for srun: a traceback "are you indeed on a slurm cluster?")
        raise GradflowError(f"hydra/launcher={launcher} submits to SLURM, and this machine has no {missing[0]}; "
                            "run it on the cluster's login node, or use hydra/launcher=joblib here")


def launcher_keys(launcher: str) -> list[str]:
    """The settings (`hydra.launcher.KEY`) a launcher's plugin takes, from the config it registers with
    Hydra ([] for the basic launcher, or where the plugin cannot say)."""
    return list(_launcher_kinds(launcher))


@functools.cache
def _launcher_kinds(launcher: str) -> dict[str, str]:
    """Each setting of a launcher's plugin and the kind of its value: IntegerNode, FloatNode, BooleanNode,
    StringNode, ... ({} for the basic launcher, or where the plugin cannot say)."""
    from hydra.core.config_store import ConfigStore

    if launcher == "basic":
        return {}
    plugin = "submitit_slurm" if launcher == "slurm" else launcher  # (conf/hydra/launcher/slurm.yaml extends it)
    try:
        importlib.import_module(f"{LAUNCHER_PLUGINS[launcher][0]}.config")  # registers its config
        node = ConfigStore.instance().load(f"hydra/launcher/{plugin}.yaml").node
        return {str(k): type(node._get_node(k)).__name__ for k in node.keys() if not str(k).startswith("_")}
    except Exception:  # (another plugin version, laid out otherwise: Hydra still checks at launch)
        return {}


# settings that count something, at least 1 or 0 (sbatch refused 0 CPUs after the sweep had started); not
# mem_gb, whose 0 is SLURM's "all of the node's memory"
_AT_LEAST = {"cpus_per_task": 1, "nodes": 1, "tasks_per_node": 1, "array_parallelism": 1,
             "gpus_per_node": 0, "cpus_per_gpu": 0, "gpus_per_task": 0, "signal_delay_s": 0, "max_num_timeout": 0}


def _launcher_value(o, launcher: str, key: str, value: str) -> None:
    """One value of a launcher setting is of its kind (a whole number, a number, true or false) and a count
    is at least what it can be: Hydra's traceback of 142 lines, or joblib's ValueError after the sweep's
    header, otherwise."""
    if launcher.startswith(("submitit", "slurm")) and key == "timeout_min" and not (
            re.fullmatch(r"\d+", value) and int(value) >= 1):
        raise GradflowError(f"{o.input_line} is not allowed: timeout_min is each job's time limit in minutes (1 or "
                            "more)")
    if launcher == "joblib" and key == "n_jobs" and not (re.fullmatch(r"-?\d+", value) and int(value) != 0):
        raise GradflowError(f"{o.input_line} is not allowed: n_jobs is the number of workers: 1 or more, "
                            "or counted back from the CPU cores as joblib counts them (-1 one per core, -2 all but "
                            "one)")
    if launcher == "joblib" and key == "n_jobs" and re.fullmatch(r"-\d+", value):
        from joblib import cpu_count

        if cpu_count() + 1 + int(value) < 1:  # (joblib ran it with 1 worker without a word)
            raise GradflowError(f"{o.input_line} is not allowed: counted back from this machine's {cpu_count()} CPU "
                                f"cores it leaves no worker (-1: one per core, -{cpu_count()}: one)")
    if o.is_delete() or value in ("None", "null") or "${" in value:  # (the plugin's default, or resolved later)
        return
    kind = _launcher_kinds(launcher).get(key)
    whole = re.fullmatch(r"[-+]?\d+", value) is not None
    if kind == "IntegerNode" and not whole:
        raise GradflowError(f"{o.input_line} is not allowed: {key} is a whole number")
    if kind == "FloatNode" and not re.fullmatch(r"[-+]?((\d+\.?\d*|\.\d+)(e[-+]?\d+)?|inf)", value, re.I):
        raise GradflowError(f"{o.input_line} is not allowed: {key} is a number")
    if kind == "BooleanNode" and value.lower() not in ("true", "false"):
        raise GradflowError(f"{o.input_line} is not allowed: {key} is true or false")
    if launcher != "joblib" and key in _AT_LEAST and whole and int(value) < _AT_LEAST[key]:
        raise GradflowError(f"{o.input_line} is not allowed: {key} counts something, {_AT_LEAST[key]} or more")
    if launcher == "joblib" and key == "batch_size" and value != "auto" and not (whole and int(value) >= 1):
        raise GradflowError(f"{o.input_line} is not allowed: batch_size is auto or a whole number, 1 or more")


# --- planning: every point validated, named and hashed before any job starts --------------------------
def plan(overrides: list[str], name: str | None, force: bool = False, points: list[dict] | None = None,
         points_file: str | None = None, keys_used: bool = True, reproduction: bool = False) -> Plan:
    """Expand and validate the whole grid before any job starts (each distinct value once). `points_file`:
    where `points` came from, for the command line the plan records. `keys_used`: refuse a key no point
    takes (a reproduction's arm gets its spec's shared keys, which some arms do not take). `reproduction`:
    the sweep is a reproduction's arm, the one kind of study written in <results>/reproduce/."""
    user, user_name, named = _sweep_name(overrides, name)
    if not reproduction:
        store.refuse_reproduce_name(user_name, override_value(user, "results") or "results",
                                    "--name " if name else "name=")
    check_overrides(user, "sweep" if keys_used else "reproduce")  # (a reproduction's arm takes gradcheck.mode)
    launcher, swept, grid, typed = _parse_grid(user)
    if points is not None:
        grid, swept = _grid_of_points(points, user, swept, grid)
    point_configs = _Configs(user_name, swept, typed)
    first = point_configs.flat(_config_only(grid[0]))  # checks name and results too
    root = store.study_dir(first["results"], first["name"])
    store.refuse_nested(root, first["results"], first["name"])
    store.check_writable(root, root)
    # (the points file's path absolute: `ls` gives this command to finish the sweep, from any folder)
    points_given = ["--points", os.path.abspath(points_file)] if points_file is not None else []
    command = shlex.join(["gradflow", "sweep", *user, "--name", user_name, *points_given])
    result = Plan(root=root, overrides=list(overrides), swept=swept, launcher=launcher, force=force,
                  points=points, command=command)
    jobs = _Jobs(root, swept)
    for i, point in enumerate(grid):
        result.jobs.append(jobs.plan(_config_only(point), point_configs))
        if points is not None:  # a points file names whole runs: each point's own keys apply to it
            own = [o for o in point if override_key(o) in points[i]]
            check_keys_apply(own, KeysTaken.of(jobs.last), point=result.jobs[-1].name)
    result.keys = jobs.keys
    if not force:
        jobs.find_moved(result.jobs)
    else:  # every point's folder can be deleted, before any is (one that could not was a traceback, the folders
        # before it gone)
        try:
            for folder in [f for j in result.jobs for f in _forced_folders(root / j.name)]:
                store.check_removable(folder)
        except GradflowError as e:
            raise GradflowError(f"{e}; --force deletes each run of the sweep to train it again, and nothing was "
                                "deleted: make it removable (or move it away), or rerun without --force") from None
    if keys_used:
        check_keys_apply(grid[0], jobs.keys)
    if jobs.same:
        raise SameRun(jobs.same[:2])
    # what the points to run need, each checked once (not a finished point's, nor one whose finished run is only
    # moved to its folder, `find_moved`: a finished sweep resumed imports no torch and no model)
    needs = [jobs.needs[j.name] for j in result.to_run]
    if launcher not in REMOTE_LAUNCHERS:  # (a SLURM job's device is the compute node's, not this login node's)
        for device in sorted({need.device for need in needs}):
            config_mod.resolve_device(device)
    if sources := {need.source for need in needs if need.source}:  # files missing under data.root: one line now,
        from gradflow.data import check_files  # not a failed run each (replacing finished ones)

        for source in sorted(sources, key=str):
            check_files(*source)
    targets: dict[str, str] = {}
    for j, need in zip(result.to_run, needs):
        if need.target:
            targets.setdefault(need.target, j.name)  # (each named by its first point)
    check_targets(targets)
    if root.is_dir():
        moved = {j.moved_from for j in result.jobs}
        stale = [p for p in root.iterdir() if p.name not in jobs.seen and not store.is_staging(p.name)
                 and p.name not in moved and (p / store.RUN_FILE).exists()]
        result.stale = len(stale)
        present = any(j.moved_from or (root / j.name / store.RUN_FILE).exists() for j in result.jobs)
        _refuse_loops(root, stale)  # (first: a folder of a Recorder's runs alone read as gradflow run's)
        # gradflow run's runs are refused stale whether or not some other of them is a point (one that was, taken
        # over, made the rest stale for `clean --stale` to delete and the folder a sweep's, closed to gradflow run)
        if result.stale and (not present or store.sweep_spec(root) is None):
            there = sum(1 for p in root.iterdir() if not store.is_staging(p.name) and (p / store.RUN_FILE).exists())
            _refuse_takeover(root, result.stale, named, there)
    return result


def check_targets(targets: dict[str, str]) -> None:
    """Each custom model's target among the points to run imports (`targets`: model.target -> the first point
    of it), as `gradflow run` checks it before it writes anything: a typo in it failed every point, after
    sweep.yaml was rewritten (the finished runs stale by it); so did a sweep started from a folder the target
    does not import from. One line naming the point, before any job starts. (Whether the model builds and fits
    its data is each run's own: a point that does not is recorded failed, with the model's traceback.)"""
    if not targets:
        return
    from gradflow.models.custom import resolve  # (torch: not for a finished sweep resumed, which runs nothing)

    for target, name in targets.items():
        try:
            resolve(target)
        except GradflowError as e:
            raise GradflowError(f"the sweep point {name}: {e}; no job was started") from None


def _refuse_loops(root: Path, stale: list[Path]) -> None:
    """No sweep in a folder that holds runs of a user's own loop (a Recorder's: run.json's `every`), which it
    would list as stale, and `clean --stale` then offer to delete (their statuses hidden behind `stale`): where
    some point of it is there too (a `gradflow run name=FOLDER` of the same settings beside them), or none."""
    loops = sorted(p.name for p in stale if store.by_recorder(store.read_run(p) or {}))
    if loops:
        them = "it" if len(loops) == 1 else "them"
        raise GradflowError(f"{root} holds {len(loops)} run{'s' * (len(loops) != 1)} of your own training loop "
                            f"(gradflow.Recorder: {', '.join(loops[:3])}{', ...' * (len(loops) > 3)}); a sweep "
                            f"there would list {them} as stale and `gradflow clean --stale` would delete {them}: "
                            "give this sweep another --name")


def _sweep_name(overrides: list[str], name: str | None) -> tuple[list[str], str, bool]:
    """The overrides without name=, the sweep's one name (--name or name=, "sweep" if neither), and
    whether the user named it."""
    user = [o for o in overrides if override_key(o) != "name"]
    given = [o.split("=", 1)[1] for o in overrides if override_key(o) == "name"]
    if name and given and given[-1] != name:  # (the option won without a word; name= twice: the last, noted)
        raise GradflowError(f"the sweep is named twice, --name {shorten(name, 40)} and "
                            f"name={shorten(given[-1], 40)}; give one name")
    if name == "" or (given and not given[-1].strip() and name is None):  # (it ran into results/sweep)
        raise GradflowError("the sweep's name is empty: give --name NAME, the folder its runs go in under results/")
    user_name = name or (given[-1] if given else "sweep")
    if "," in user_name:  # (Hydra's words were "Ambiguous value ... add --multirun")
        raise GradflowError(f"name={shorten(user_name, 40)} is several names; a sweep writes one study: give one")
    # (here, where the results folder is known: a point's compose has results= among its values, after the name)
    config_mod.check_name(user_name, override_value(user, "results") or "results")
    return user, user_name, bool(name or given)


def _parse_grid(user: list[str]) -> tuple[str, list[str], list[list[str]], dict[str, str]]:
    """The launcher, the swept keys and the grid's points (each a list of overrides), as Hydra's basic
    sweeper expands the overrides, and each point override as the user typed it (`_typed`); the
    launcher's settings checked."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import Glob

    parser = OverridesParser.create(config_loader=config_mod.config_loader())  # glob(*) lists a group's choices
    parsed = parser.parse_overrides(user)
    launcher = "basic"
    for o in parsed:
        if o.key_or_group == "hydra/launcher":
            launcher = o.value()
        if o.key_or_group == "experiment" and isinstance(o.value(), Glob):  # (an unreadable preset is no choice:
            # glob(*) passed over it without a word, and glob(itsname*) matched none)
            unreadable = o.value().filter(list(config_mod.UNREADABLE_EXPERIMENTS))
            if unreadable:
                name = unreadable[0]
                raise GradflowError(f"{shorten(o.input_line, 60)} matches {config_mod.EXPERIMENTS_DIR / name}.yaml, "
                                    f"which cannot be read: {shorten(config_mod.UNREADABLE_EXPERIMENTS[name], 200)}")
        if o.is_sweep_override() and not list(o.sweep_string_iterator()):
            # glob() of a plain key read as a sweep of nothing, though model.activation=glob(re*) matched relu
            if isinstance(o.value(), Glob) and o.key_or_group not in config_mod.GROUP_KEYS:
                raise GradflowError(f"{shorten(o.input_line, 60)} selects no value: glob() picks among a config "
                                    "group's choices (model=glob(*), data=glob(mnist*)); list a key's values: "
                                    "a,b,c")
            if isinstance(o.value(), Glob):
                given = o.input_line.split("=", 1)[0]  # (+experiment, with its +)
                raise GradflowError(f"{shorten(o.input_line, 60)} matches none of {o.key_or_group}'s choices; "
                                    f"see `gradflow run --help` for them, or {given}=glob(*) for all")
            raise GradflowError(f"{shorten(o.input_line, 60)} sweeps over no value; give at least one, "
                                "e.g. range(1,5) (the end is excluded) or 1,2,3")
    check_launcher(launcher, [o for o in parsed if o.key_or_group.startswith("hydra.launcher.")])
    if launcher == "joblib":
        workers.start_fork_server()  # its imports overlap the planning
    last = {o.key_or_group: o for o in parsed}  # a key given twice takes its last value (seed=0,1 seed=2)
    swept = sorted(k for k, o in last.items() if o.is_sweep_override() and not o.is_hydra_override())
    return launcher, swept, BasicSweeper.split_arguments(parsed, max_batch_size=None)[0], _typed(parser, parsed)


def _typed(parser, parsed) -> dict[str, str]:
    """Each override of a grid point as Hydra's sweeper writes it (train.steps=100.0) -> as the user typed
    it (train.steps=1e2), where the two differ: an error names the value the user wrote. A swept value is
    found by its item of a plain comma list (a value in range() or choice() stays as Hydra writes it)."""
    typed: dict[str, str] = {}
    for o in parsed:
        key, text = o.get_key_element(), o.input_line.split("=", 1)[1] if "=" in o.input_line else ""
        if not o.is_sweep_override():
            typed[f"{key}={o.get_value_element_as_str()}"] = f"{key}={text}"
            continue
        items = _comma_items(text)
        written = list(o.sweep_string_iterator())
        if items is None or len(items) != len(written):
            continue
        for item, shown in zip(items, written):
            try:
                alone = parser.parse_overrides([f"{o.input_line.split('=', 1)[0]}={item}"])[0]
            except Exception:  # (an item that does not read alone)
                continue
            if not alone.is_sweep_override() and alone.get_value_element_as_str() == shown:
                typed[f"{key}={shown}"] = f"{key}={item}"
    return {k: v for k, v in typed.items() if k != v}


def _comma_items(text: str) -> list[str] | None:
    """The items of a plain comma list (1e2,2e2, "a,b",[1,2]); None for a sweep written as a function
    (range(1,5), choice(...), glob(*))."""
    return None if re.match(r"\s*\w+\s*\(", text) else [item.strip() for item in split_top(text, quotes=True)]


def _grid_of_points(points: list[dict], user: list[str], swept: list[str], grid: list[list[str]]):
    """--points: the grid is the points file's, each point on top of the command line's fixed overrides."""
    if swept:
        raise GradflowError(f"--points and swept keys ({', '.join(swept)}) do not mix; put every varying "
                            "key in the points file")
    pointed = {k for point in points for k in point}
    both = [o for o in user if override_key(o) in pointed]
    if both:
        raise GradflowError(f"{override_key(both[0])} is set both on the command line "
                            f"({shorten(both[0], 40)}) and in the points file; set it in one place")
    return points_overrides(points, grid[0])


class Needs(NamedTuple):
    """What a point needs to run, checked before any job starts: its device, a dataset read from files (data.name,
    data.root, data.download), a custom model's target to import."""
    device: str
    source: tuple | None
    target: str | None


class _Jobs:
    """Each grid point planned in turn into a Job (its folder, config hash, whether it is finished or
    replaces a finished run), with what the whole grid is then checked for: two points in one folder
    (refused at once), two points that are one run, the keys some point takes, the data files to find."""

    def __init__(self, root: Path, swept: list[str]):
        self.root, self.swept = root, swept
        self.seen: set[str] = set()
        self.keys = KeysTaken()  # the keys some point has as a setting
        self.digests: dict[str, tuple] = {}  # each point's config hash -> its folder and overrides
        self.same: tuple[str, str] | None = None  # the first two points that are one run
        self.needs: dict[str, Needs] = {}  # each point's folder -> what it needs to run (`plan` checks those to run)
        self.last: dict = {}  # the last point's settings

    def plan(self, cfg_overrides: list[str], point_configs: _Configs) -> Job:
        flat = point_configs.flat(cfg_overrides)
        self.keys.add(flat)
        self.last = flat
        digest = store.config_hash(flat)
        jname = point_name(cfg_overrides, self.swept)
        if jname in self.seen:
            raise GradflowError(f"two sweep points share the folder {jname!r}; make the swept values distinct")
        if digest in self.digests:  # model.depth=2,02: two names, one run (said after the keys are checked)
            other, before = self.digests[digest]
            # (two experiments may compose alike)
            if all(config_mod.simple_override(o) for o in set(before) ^ set(cfg_overrides)):
                self.same = self.same or (other, jname)
        self.seen.add(jname)
        self.digests[digest] = (jname, cfg_overrides)
        job_dir = self.root / jname
        store.check_clearable(job_dir)
        found = store.standing(job_dir, digest)  # (one whose files are incomplete: nothing of it to keep)
        finished, replaces = found == store.SAME, found == store.OTHER
        target = flat.get("model.target") if flat.get("model.name") == "custom" else None
        self.needs[jname] = Needs(
            flat["device"],
            (flat["data.name"], flat["data.root"], flat.get("data.download", False)) if "data.root" in flat else None,
            target if isinstance(target, str) and target.strip() else None)  # (none: the run says what it needs)
        changes = store.differing(store.run_config(job_dir), flat) if replaces else []
        return Job(cfg_overrides, jname, digest, finished=finished, replaces=replaces, changes=changes)

    def find_moved(self, planned: list[Job]) -> None:
        """A point not finished in its folder whose run finished under another name of the study, one no
        point of this grid takes (the sweep before named its points otherwise: narrowed to one value, its
        point is `default`; widened, `default` is `model.depth=5`), is that run: moved to its folder at
        launch, not redone (over a run of other settings there, which it was to replace anyway). Read
        only when some point is to run: resuming costs nothing."""
        wanted = {j.config_hash: j for j in planned if not j.finished}
        if not wanted or not self.root.is_dir():
            return
        for folder in sorted(self.root.iterdir(), key=store.natural_key):
            if folder.name in self.seen or store.is_staging(folder.name) or not folder.is_dir():
                continue
            rec = store.read_run(folder)
            j = wanted.get(store.run_hash(folder, rec)) if rec is not None else None
            if j is not None and store.standing(folder, j.config_hash, rec) == store.SAME:
                j.moved_from, j.finished = folder.name, True
                del wanted[j.config_hash]


def _refuse_takeover(root: Path, stale: int, named: bool, total: int | None = None) -> None:
    """A sweep would take over a folder `stale` of whose `total` runs are no point of it, those runs then stale
    (out of ls, plot, compare and report): refused where they are single runs (`gradflow run`'s, no sweep's),
    some of them points or none, which a sweep's folder would close to further `gradflow run`s, named or not;
    an unnamed sweep's of another sweep's runs none of which is a point (the default folder), naming both ways
    on (a name, or that folder's name to take it over)."""
    spec = store.sweep_spec(root)
    if spec is None:
        total = max(total or stale, stale)
        which = ("none of them a point of this sweep: made the sweep's folder, it would list them" if total == stale
                 else f"{stale} of them no point of this sweep: made the sweep's folder, it would list "
                      f"{'that one' if stale == 1 else 'those'}")
        raise GradflowError(f"{root} holds {total} single run{'s' * (total != 1)} (of gradflow run, no sweep's), "
                            f"{which} as stale and refuse gradflow run name={root.name}; give this sweep "
                            f"{'another --name' if named else 'a name (--name NAME)'}")
    if named:
        return
    overrides = [str(o) for o in spec.get("overrides") or []]
    swept = [o for o in overrides if override_key(o) in (spec.get("swept") or [])]  # what it swept, or all it set
    before = " ".join(swept or overrides) or "its defaults"
    raise GradflowError(f"{root} holds {stale} run{'s' * (stale != 1)} of another sweep "
                        f"({shorten_command(before, 60)}), none of them a point of this one: give this sweep a name "
                        f"(--name NAME), or --name {root.name} to make it the sweep there (those runs kept, as stale)")


@dataclass
class KeysTaken:
    """The keys some point of a sweep (or of a reproduction's arms) has as a setting; for each of the keys
    read only where others say so (choices.CONDITIONAL_KEYS), why a point does not read it; and the first
    point's settings, which name the choice a key of another choice would need."""

    taken: set[str] = field(default_factory=set)
    unread: dict[str, str] = field(default_factory=dict)
    first: dict = field(default_factory=dict)

    @classmethod
    def of(cls, *flats: dict) -> KeysTaken:
        keys = cls()
        for flat in flats:
            keys.add(flat)
        return keys

    def add(self, flat: dict) -> None:
        self.taken.update(flat)
        self.first = self.first or flat
        for key in CONDITIONAL_KEYS:
            why = unread(key, flat)
            if why and key not in self.unread:
                self.unread[key] = why

    def merged(self, other: KeysTaken) -> KeysTaken:
        return KeysTaken(self.taken | other.taken, {**other.unread, **self.unread}, self.first or other.first)


def check_keys_apply(overrides: list[str], keys: KeysTaken, point: str | None = None,
                     none: str = "no point of this sweep") -> None:
    """A key the overrides set that no point takes (init.sw2 without init=meanfield, optim.momentum without
    optim=sgd, norm.eps without a norm layer, model.alpha without model.skip=residual) would run copies of
    one run under different names: refused, as `gradflow run` refuses it (a sweep may set a key only some
    of its points take: init.sw2 across init=orthogonal,meanfield), naming the choices that take the key.
    `point`: the overrides are that one point's own (a points file's), `keys` its settings alone."""
    for o in overrides:
        key = override_key(o)
        if key in keys.taken or o.startswith("~"):
            continue
        lead = f"sweep point {point}: " if point else f"{none} takes {key}: "
        if key in keys.unread:
            raise GradflowError(f"{lead}{f'{key} does not apply to this run: ' if point else ''}{keys.unread[key]}")
        if config_mod.choices_with_key(key):
            raise GradflowError(lead + config_mod.not_a_key_of(key, keys.first[f"{key.partition('.')[0]}.name"]))


class _Configs:
    """Flat configs of grid points without composing each point: one Hydra compose per distinct set of
    structural overrides (groups, +/~ keys, interpolations, dicts, list items), then each distinct
    key=value applied once, as Hydra itself applies a value override (OmegaConf.update on the composed
    config), and each point's values validated together on the base's resolved dicts. A base with an
    interpolation (an experiment's `model.width: ${model.depth}`) has each point's values applied to
    the config together instead, since a value changes the keys that read it."""

    def __init__(self, name: str, swept: Sequence[str] = (), typed: dict[str, str] | None = None):
        self.name = name
        self.swept = set(swept)  # the keys whose values name a point in an error
        self.typed = typed or {}  # a point's override -> as the user typed it, for errors (`_typed`)
        self.bases: dict[tuple[str, ...], _Base] = {}
        self.values: dict[tuple[tuple[str, ...], str], tuple[str, Any]] = {}

    def _composed(self, overrides: list[str]):
        """config.compose of a point's overrides under the sweep's name, its errors quoting what was typed."""
        args = [*overrides, f"name={self.name}"]
        return config_mod.compose(args, sweep_point=True, typed=[self.typed.get(o, o) for o in args])

    def compose(self, overrides: list[str]):
        try:
            return self._composed(overrides)
        except GradflowError as e:  # e names the bad key and value; the point is its swept values, the rest noise
            point = " ".join(self.typed.get(o, o) for o in overrides if override_key(o) in self.swept)
            # a key no choice has is unknown at every point, swept or not (train.lr=1e-2,abc blamed 1e-2; a
            # fixed key's typo blamed the first point); the message names every such key, so none is the point's
            unknown = str(e).startswith("unknown key")
            if not point or unknown or self._not_the_points(overrides, e):
                raise GradflowError(str(e)) from None
            if str(e).startswith(f"{point}: "):  # (a preset's error names it already: +experiment=NAME: in ...)
                raise GradflowError(f"sweep point {e}") from None
            raise GradflowError(f"sweep point {point}: {e}") from None

    def _not_the_points(self, overrides: list[str], error: GradflowError) -> bool:
        """Whether the config without the point's swept values fails with the same error, where no other
        point can differ: no group choice is swept (optim=sgd,adam optim.momentum=2 fails for sgd only, as
        the default choice does), or the error is a key no choice has."""
        if any(k.lstrip("+~/") in config_mod.GROUPS for k in self.swept) and not str(error).startswith("unknown key"):
            return False
        fixed = [o for o in overrides if override_key(o) not in self.swept]
        try:
            self._composed(fixed)
        except GradflowError as e:
            return str(e) == str(error)
        return False

    def flat(self, overrides: list[str]) -> dict:
        structural = tuple(o for o in overrides if not config_mod.simple_override(o))
        if any("${" in o.replace("\\", "") for o in structural):  # an interpolation reads the point's other
            return settings(store.flatten(self.compose(overrides)))  # values (escaped $\{...\}): compose all
        if structural not in self.bases:
            self.bases[structural] = _Base(self.compose(list(structural)))
        base = self.bases[structural]
        # a key another choice of its group has (optim.momentum of an optim=adam point) is left out of the point
        overrides = [o for o in overrides if not config_mod.simple_override(o) or base.takes(override_key(o))]
        values = [o for o in overrides if config_mod.simple_override(o)]
        try:
            if base.interpolated:
                flat = self._applied(base, values)
            else:
                resolved = base.resolved
                for o in values:
                    key, value = self._value(structural, o)
                    resolved = _replaced(resolved, key.split("."), value)
                # the point's values together (model.skip=residual with model.depth=1 is refused, each alone is not)
                config_mod.validate_resolved(resolved, sweep_point=True)
                flat = store.flatten(resolved)
        except (GradflowError, OmegaConfBaseException, HydraException):  # a value refused, or valid only with values
            # a structural override brings (model.skip=residual): the composer says which and why (a bug of the
            # fast path itself raises, rather than pass unseen to the slow one)
            flat = store.flatten(self.compose(overrides))
        return settings(flat)  # a value set for another choice (init.sw2 of orthogonal) is no setting

    def _value(self, structural: tuple[str, ...], override: str) -> tuple[str, Any]:
        """The key one value override sets and its resolved value (a type Hydra refuses raises), once."""
        if (structural, override) not in self.values:
            base = self.bases[structural]
            key = override_key(override)
            with base.applied([override]):
                node = OmegaConf.select(base.cfg, key)
                value = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
            self.values[structural, override] = key, value
        return self.values[structural, override]

    def _applied(self, base: _Base, overrides: list[str]) -> dict:
        """The flat config of a base with interpolations and all of a point's values, validated whole."""
        with base.applied(overrides):
            config_mod.validate(base.cfg, sweep_point=True)
            return store.flatten(base.cfg)


class _Base:
    """A composed config that value overrides are applied to in place and then restored, which costs far
    less than copying it per value; with its resolved dicts, and whether a value reads another key."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.resolved = OmegaConf.to_container(cfg, resolve=True)
        self.interpolated = any(isinstance(v, str) and "${" in v
                                for v in store.flatten(OmegaConf.to_container(cfg, resolve=False)).values())

    def _parent(self, key: str) -> tuple[Any, str]:
        """The node holding `key` (None where there is none) and the key's last part."""
        path, _, leaf = key.rpartition(".")
        return (OmegaConf.select(self.cfg, path, default=None) if path else self.cfg), leaf

    def takes(self, key: str) -> bool:
        """Whether the config has `key` (a required one, ??? until set, too: model.target of model=custom), or
        may fail on it: not where another choice of its group has it."""
        parent, leaf = self._parent(key)
        has = OmegaConf.is_dict(parent) and leaf in parent.keys()  # (select returns its default for ???)
        return has or not config_mod.choices_with_key(key)

    @contextmanager
    def applied(self, overrides: list[str]):
        restore = []
        try:
            for o in overrides:
                key = override_key(o)
                parent, leaf = self._parent(key)  # the value as written (${...} kept), from its parent
                before = OmegaConf.to_container(parent).get(leaf, _ABSENT) if OmegaConf.is_dict(parent) else _ABSENT
                if before is not _ABSENT:
                    restore.append((key, before))
                OmegaConf.update(self.cfg, key, config_mod.override_parser().parse_override(o).value(), merge=True)
            yield
        finally:
            for key, before in reversed(restore):
                OmegaConf.update(self.cfg, key, before, merge=False)


_ABSENT = object()


def _replaced(tree: dict, path: list[str], value) -> dict:
    """`tree` with the value at `path` replaced: new dicts along the path, everything else shared."""
    out = dict(tree)
    out[path[0]] = value if len(path) == 1 else _replaced(tree.get(path[0]) or {}, path[1:], value)
    return out


def _config_only(overrides: list[str]) -> list[str]:
    return [o for o in overrides if not override_key(o).startswith("hydra")]


# --- points sweeps: explicit coupled values --------------------------------------------------------
def read_points(path: Path) -> list[dict]:
    """A points file: a YAML list of mappings {key: value}, every point with the same keys."""
    import yaml

    try:
        points = yaml.safe_load(Path(path).read_text())
    except OSError as e:
        raise GradflowError(f"--points {path}: {e.strerror}") from None
    except yaml.YAMLError as e:  # (its whole text quotes the parser's context: "while parsing a flow ...")
        mark, problem = getattr(e, "problem_mark", None), getattr(e, "problem", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        said = problem or " ".join(str(e).split())
        raise GradflowError(f"--points {path} is not valid YAML ({where}{shorten(said, 80)})") from None
    if points == [] or points is None:
        raise GradflowError(f"--points {path} has no points; give a YAML list of key: value mappings, e.g. "
                            "- {model.activation: tanh, init.sw2: 1.5}")
    if not isinstance(points, list) or not all(isinstance(p, dict) and p for p in points):
        raise GradflowError(f"--points {path} must be a YAML list of key: value mappings, e.g. "
                            "- {model.activation: tanh, init.sw2: 1.5}")
    _refuse_yaml_underflow(yaml.compose(Path(path).read_text()), f"--points {path}: ")
    points = [{k: _yaml11_float(v) for k, v in p.items()} for p in points]
    keys = set(points[0])
    for i, p in enumerate(points):
        if set(p) != keys:  # (which keys differ, a misspelled one with its nearest: a whole list before)
            missing, extra = sorted(map(str, keys - set(p))), sorted(map(str, set(p) - keys))
            said = [f"lacks {', '.join(missing)}"] if missing else []
            # (a misspelled key's nearest: not for a key of the config, which a point simply has otherwise)
            near = did_you_mean(extra[0], missing) if extra and extra[0] not in config_mod.known_keys() else ""
            said += [f"has {', '.join(extra)}{near}"] if extra else []
            raise GradflowError(f"--points {path}: point {i} {' and '.join(said)}; every point needs the keys of "
                                f"point 0 ({', '.join(sorted(map(str, keys)))})")
        for k, v in p.items():
            if not isinstance(k, str) or ("." not in k and k != "seed") or k.startswith(("hydra", "+", "~")):
                raise GradflowError(f"--points {path}: point {i} key {shorten(k, 40)!r} must be seed or a dotted "
                                    "config key such as model.activation; give group choices (init=meanfield) on the "
                                    "command line, where they apply to every point")
            if isinstance(v, (dict, list)) or v is None:
                raise GradflowError(f"--points {path}: point {i} {k}={shorten(v, 40)!r}: values must be "
                                    "numbers or strings")
            try:  # (as on the command line: gradcheck.mode points trained one run twice)
                _refuse_unread(f"{k}={v}", k, "sweep")
            except GradflowError as e:
                raise GradflowError(f"--points {path}: point {i} {e}") from None
    return points


# a number with an exponent and no decimal point (1e-3, 5E+10): YAML 1.1, which PyYAML reads, makes it a string
# (a point's optim.lr: 1e-3 ran at 0.001, as the command line's 1e-3 does, in a folder named optim.lr=_1e-3_)
_EXPONENT = re.compile(r"[-+]?[0-9]+[eE][-+]?[0-9]+")


def _refuse_yaml_underflow(node, where: str, key: str = "a value") -> None:
    """A plain (unquoted) number of a YAML document below the smallest float (1.0e-400, which PyYAML reads as
    0.0, and 1e-400), refused as on the command line, named by its key; a quoted one is a text."""
    import yaml

    if isinstance(node, yaml.ScalarNode):
        if node.style is None and _WRITTEN_NUMBER.fullmatch(node.value):
            _refuse_underflow(f"{where}{key}", node.value)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _refuse_yaml_underflow(item, where, key)
    elif isinstance(node, yaml.MappingNode):
        for k, value in node.value:
            _refuse_yaml_underflow(value, where, str(k.value))


def _yaml11_float(value):
    """A points file's value as YAML 1.2 and the command line read it: 1e-3 a number, not the string PyYAML gives
    (one below the smallest float, '1e-400' quoted, stays the text: unquoted, `read_points` refused it)."""
    if not (isinstance(value, str) and _EXPONENT.fullmatch(value)) or _underflows(value):
        return value
    return float(value)


def points_overrides(points: list[dict], fixed: list[str]) -> tuple[list[list[str]], list[str]]:
    """Each point as the override list of one job (the fixed overrides first), and the swept keys."""
    grid = [[*fixed, *(f"{k}={_literal(v)}" for k, v in p.items())] for p in points]
    return grid, sorted({k for p in points for k in p})


POINTS_DIR = ".points"  # <study>/.points/gf_point/<job>.yaml: one config file per point, for Hydra
POINT_GROUP = "gf_point"


def _point_args(p: Plan) -> list[str]:
    """A points sweep in Hydra's own terms: each point is one option of a config group holding its values
    (package _global_), named by its job, and the sweep runs over that group's options."""
    import yaml

    folder = p.root / POINTS_DIR / POINT_GROUP
    folder.mkdir(parents=True, exist_ok=True)
    points = p.points or []
    by_name = {job_name(o): point for o, point in zip(points_overrides(points, [])[0], points)}
    for j in p.to_run:
        nested: dict = {}
        for key, value in by_name[j.name].items():
            *parents, leaf = key.split(".")
            node = nested
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
        store.write_text(folder / f"{j.name}.yaml", "# @package _global_\n" + yaml.safe_dump(nested))
    names = ",".join(f"'{j.name}'" for j in p.to_run)
    return [f"+{POINT_GROUP}={names}", f"hydra.searchpath=[file://{(p.root / POINTS_DIR).absolute()}]",
            f"hydra.sweep.subdir=${{hydra:runtime.choices.{POINT_GROUP}}}"]


def _literal(value) -> str:
    """A points file's value as an override that Hydra reads back as that value, as the point's own
    config file gives it to the job: quoted where it has other characters than letters, digits and . - _,
    or is a string Hydra would read as something else ("0.50" as 0.5, "true" as True; "2.0" stays "2.0"
    in a string key either way, and keeps its folder name model.alpha=2.0)."""
    text = str(value).lower() if isinstance(value, bool) else str(value)
    if text.replace(".", "").replace("-", "").replace("_", "").isalnum() and not (
            isinstance(value, str) and str(config_mod.override_parser().parse_override(f"k={text}").value()) != value):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


# --- the job: runs in this process (basic launcher) or in a worker (joblib, submitit) ------------
StepFn = Callable[[str, int, int], None]  # (job name, step, steps)
_reporter: StepFn | None = None  # set by `launch` in this process; None inside worker processes


def task(cfg) -> str:
    """One sweep point. Returns its status; never raises for a failing run."""
    from hydra.core.hydra_config import HydraConfig

    from gradflow import job

    job_dir = Path(HydraConfig.get().runtime.output_dir)
    study = store.study_dir(cfg.results, cfg.name)
    if job_dir.absolute().parent != study.absolute():
        raise GradflowError(f"job folder {job_dir} is outside its study {study}; gradflow writes only there")
    workers.leave_with_sweep()
    flat = settings(store.flatten(cfg))
    store.recover(job_dir)  # (a swap a killed process cut off: see store.swap_in; the sweep holds the lock)
    if store.is_finished(job_dir, store.config_hash(flat)):
        return "skipped"
    rec = store.read_run(job_dir) or {}
    killed = (rec.get(store.KILLED_IN), (rec.get(store.REPLACEMENT) or {}).get(store.KILLED_IN))
    if workers.process_token(workers.owner()) in killed:
        # its worker killed in this sweep (`_run_through_deaths`: run again, it would end every attempt)
        return store.FAILED
    report = _reporter
    on_step = (lambda t, n: report(job_dir.name, t, n)) if report else None
    with workers.job(job_dir):
        record = job.execute(cfg, job_dir, on_step=on_step, isolate=True, flat=flat)
    workers.settle()
    return record[store.STATUS]


def _what_it_runs(spec: str | Path) -> dict | None:
    """A sweep.yaml (its text, or the file) but what says nothing of its runs: the time it was written
    (`created`), the launcher and the command line, and the overrides of Hydra's own keys (the launcher's
    settings); None for none. A sweep resumed with another launcher rewrote the file, and `clean` read its
    time as when the stale runs became stale."""
    import yaml

    try:
        spec = yaml.load(spec.read_text() if isinstance(spec, Path) else spec,  # (libyaml's where installed: a
                         Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # 1000-run spec, twice a launch)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    if not isinstance(spec, dict):
        return None
    kept = {k: v for k, v in spec.items() if k not in ("created", "launcher", "command")}
    kept["overrides"] = [o for o in kept.get("overrides") or [] if not str(o).lstrip("+~").startswith("hydra")]
    return kept


def launch(p: Plan, on_step: StepFn | None = None, on_moved: Callable[[list[Job]], None] | None = None) -> None:
    """Run the planned sweep through Hydra's multirun with the planned job names, holding the study's
    lock (a second writer fails at once); workers are shut down when it ends, however it ends. `on_moved`
    is told the finished runs moved to their new names once they are (before a move that fails raises:
    the ones moved before it)."""
    with store.lock(p.root, p.command):
        check_replacement_builds(p)
        spec = OmegaConf.to_yaml(OmegaConf.create({
            "overrides": p.overrides, "swept": p.swept, "launcher": p.launcher, "jobs": len(p.jobs),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": p.command,
            **({"points": p.points} if p.points is not None else {}),
            "runs": {j.name: j.config_hash for j in p.jobs}}))
        # (kept as it is where only its time, launcher or command would change: a sweep resumed or rerun as it was,
        # or with another launcher; its time is when its points last changed, which `clean` reads as when a run of
        # its study became stale)
        if _what_it_runs(spec) != _what_it_runs(p.root / store.SWEEP_FILE):
            store.write_text(p.root / store.SWEEP_FILE, spec)
        moved: list[Job] = []
        try:
            for j in p.jobs:  # (planned without --force; one changed since, by another command: run again)
                if j.moved_from is not None:
                    if store.is_finished(p.root / j.moved_from, j.config_hash):
                        store.move_run(p.root / j.moved_from, p.root / j.name)
                        moved.append(j)
                    else:
                        j.moved_from, j.finished = None, False
        finally:
            if moved and on_moved is not None:
                on_moved(moved)
        if p.force:  # every run's folder goes (with a replacement's, of a swap cut off too): each is redone
            for i, j in enumerate(p.jobs):
                for folder in _forced_folders(p.root / j.name):
                    try:
                        store.clear_run(folder)
                    except OSError as e:  # (one that became unremovable since `plan` checked it)
                        raise GradflowError(f"{store.removal_failed(folder, e)}; --force deleted the runs of "
                                            f"{i} point{'s' * (i != 1)} before it, not the rest: rerun to train "
                                            "them") from None
        if not p.to_run:
            return
        _run_through_deaths(p, on_step)


def _forced_folders(job_dir: Path) -> tuple[Path, ...]:
    """What --force deletes of a point: its run's folder, and a replacement's (of a swap cut off too)."""
    return job_dir, store.staging_dir(job_dir), store.staging_dir(job_dir, store.ASIDE)


def _run_through_deaths(p: Plan, on_step: StepFn | None) -> None:
    """The sweep, on through joblib workers killed in a run (the out-of-memory killer, a crash in native code),
    each of which ends loky's pool and every run in flight with it: they ended the sweep. The points are run
    again; where several were in flight, one worker at a time until a worker dies again, with one run in flight
    alone: that run is recorded failed (`_killed`), not run again in this sweep (`task`), and the rest go on with
    every worker. A later command runs it again, as any failed run."""
    serial = False
    for _ in range(2 * len(p.to_run) + 2):  # (each death records a run or narrows the next to one)
        started = time.time()
        try:
            _run_hydra(p, on_step, serial)
            return
        except WorkerDied as died:
            # the runs in flight in this attempt (not those an earlier death left `running`, not yet run again)
            cut = [name for name in died.cut if _mtime(_in_flight(p.root / name) / store.RUN_FILE) >= started - 1]
            if not cut:  # (no run in flight: nothing to put it on)
                raise
            if len(cut) == 1:
                _killed(p.root / cut[0], died.codes)
            serial = len(cut) > 1
    raise GradflowError(f"hydra/launcher=joblib: workers kept dying in {p.root}; `gradflow ls {p.root}` shows which "
                        "runs finished, and the same command again runs the rest")


def _mtime(path: Path) -> float:
    """A file's modification time; 0 for none."""
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _in_flight(job_dir: Path) -> Path:
    """Where a point's run is being written: the hidden folder of a replacement whose run.json says `running`
    (a finished run of other settings stays in the point's own until it ends: `job.execute`), else its own."""
    staging = store.staging_dir(job_dir)
    return staging if (store.read_run(staging) or {}).get(store.STATUS) == store.RUNNING else job_dir


def _killed(job_dir: Path, codes: str) -> None:
    """A run whose worker was killed as it trained (it wrote nothing of that): failed, saying so. A replacement's:
    the finished run it was to replace stays, noting the failure (a worker killed in one stopped the sweep)."""
    folder = _in_flight(job_dir)
    rec = store.read_run(folder) or {}
    record = {**rec, store.STATUS: store.FAILED, store.KILLED_IN: workers.process_token(os.getpid()),
              "files": [store.CONFIG_FILE],
              "error": f"its worker process was killed ({codes}) as it ran: out of memory, or a crash in native "
                       "code; the sweep went on without it"}
    if folder != job_dir:
        store.keep_replaced(job_dir, folder, record)
    else:
        store.finish(job_dir, record)


def check_replacement_builds(p: Plan) -> None:
    """Before a finished run of other settings is replaced, build the first such point's data and model, on
    the CPU: a replacement that cannot build (a custom model's new arguments, a size no memory holds) is one
    line before anything runs, where each point would fail in turn (its finished run kept: `job.execute`).
    Only the first is built: a few seconds at most."""
    first = next((j for j in p.to_run if j.replaces), None)
    if first is None or p.replacement_built:
        return
    from gradflow import job

    try:
        job.prepare(config_mod.compose([*first.overrides, f"name={p.root.name}", "device=cpu"], sweep_point=True))
    except GradflowError as e:
        raise GradflowError(f"{p.root / first.name} holds a finished run of other settings, and its replacement "
                            f"does not build: {e}; no run was replaced") from e
    p.replacement_built = True


def _run_hydra(p: Plan, on_step: StepFn | None, serial: bool = False) -> None:
    """The sweep through Hydra's multirun; `serial`: a joblib sweep's one job in flight at a time, in a worker
    still (its pre_dispatch: n_jobs=1 runs them in this process, which a run killing its process then ended)."""
    import hydra

    global _reporter
    not_swept = sorted({override_key(o) for j in p.jobs for o in j.overrides} - set(p.swept))
    exclude = ",".join(list(NOT_IN_JOB_NAME) + not_swept)
    argv = [sys.argv[0], "--multirun", *p.overrides, f"name={p.root.name}", f"results={p.root.parent}",
            f"hydra.job.config.override_dirname.exclude_keys=[{exclude}]",
            *(_point_args(p) if p.points is not None else []), *(["hydra.launcher.pre_dispatch=1"] * serial)]
    entry = hydra.main(config_path=str(config_mod.CONF_DIR), config_name="config", version_base=None)(task)
    saved_argv, _reporter = sys.argv, on_step
    try:
        sys.argv = argv
        # (HYDRA_FULL_ERROR: Hydra raises what a launcher raised, rather than print its traceback)
        with workers.environment("HYDRA_FULL_ERROR", "1"), workers.serving(), workers.forked(p.launcher), \
                _hydra_composes_less(), workers.finish_interrupted_jobs(p.root) if p.launcher == "joblib" else nullcontext():
            entry()
    except Exception as e:
        if (said := launcher_error(p, e)) is None:
            raise
        raise said from e
    finally:
        sys.argv, _reporter = saved_argv, None
        workers.sweep_ended(p.root)


class WorkerDied(GradflowError):
    """A joblib worker killed in a run, which ends loky's pool: the runs then in flight (`cut`, left `running` by
    their dead processes) and the workers' exit codes as loky gives them (`codes`)."""

    def __init__(self, message: str, cut: list[str], codes: str):
        super().__init__(message)
        self.cut, self.codes = cut, codes


def _worker_died(p: Plan, e: Exception) -> WorkerDied:
    """A joblib worker killed in a run (the system's out-of-memory killer, a crash in native code: no run can
    record that of itself): the runs then in flight, which `_run_through_deaths` runs again, and the one line
    said where it cannot (no run in flight; it was loky's traceback of sixty lines)."""
    found = re.search(r"exit codes of the workers are \{([^}]*)\}", str(e))
    codes = found.group(1) if found else "killed"
    cut = [j.name for j in p.to_run if (store.read_run(_in_flight(p.root / j.name)) or {}).get(store.STATUS)
           == store.RUNNING]
    return WorkerDied(
        f"hydra/launcher=joblib: a worker process died ({codes}: out of memory, or a crash in native code) with no "
        f"run in flight to put it on; `gradflow ls {p.root}` shows which runs finished, and the same command again "
        "runs the rest", cut, codes)


def _inside(path, folder: Path) -> bool:
    """Whether `path` (an OSError's filename) is `folder` or lies in it."""
    try:
        return Path(os.fsdecode(path)).resolve().is_relative_to(Path(folder).resolve())
    except (OSError, ValueError):
        return False


def launcher_error(p: Plan, e: Exception) -> GradflowError | None:
    """What a submitit launcher's error means, in a line: SLURM refused the jobs (sbatch's own words: a
    partition that does not exist, an account over its limit), or a job ended without its result (killed
    at its time limit or for memory; a run records its own failures); or a joblib worker that died. None for any
    other error. Hydra's own files that the machine would not take (a full disk: multirun.yaml, whose OSError
    names no file) are the sweep's folder's."""
    if isinstance(e, OSError) and (e.errno in CANNOT_WRITE or e.errno in (errno.EACCES, errno.EPERM)
                                   and e.filename and _inside(e.filename, p.root)):
        # (a permission in the sweep's own folder is a write refused: Hydra making the next run's folder in one
        # made read-only mid-sweep was a traceback)
        return cannot_write(file_in(e.filename) if e.filename else f"the sweep's files in {p.root}", e)
    if p.launcher == "joblib" and type(e).__name__ in ("TerminatedWorkerError", "BrokenProcessPool"):
        return _worker_died(p, e)
    if not p.launcher.startswith(("submitit", "slurm")):
        return None
    try:
        from submitit.core.utils import FailedJobError, FailedSubmissionError, UncompletedJobError
    except ImportError:
        return None
    said = next((line.strip() for line in str(e).splitlines() if line.strip()), type(e).__name__)
    refused = isinstance(e, FailedSubmissionError) or (  # (sbatch's own error: submitit's FailedJobError from it)
        isinstance(e, FailedJobError) and isinstance(e.__cause__, subprocess.CalledProcessError))
    if p.launcher in REMOTE_LAUNCHERS and refused:
        where = (config_mod.CONF_DIR / "hydra" / "launcher" / "slurm.yaml" if p.launcher == "slurm"
                 else "`hydra.launcher.*`")
        return GradflowError(f"hydra/launcher={p.launcher}: SLURM took no job of the sweep: {shorten(said, 200)}; "
                             f"check hydra.launcher.partition and the other settings ({where})")
    if isinstance(e, UncompletedJobError):
        job = re.search(r"Job (\S+) .*?has not produced any output \(state: ([^)]*)\)", str(e), re.DOTALL)
        if job:
            ended, state = job.groups()
            why = {"TIMEOUT": ": past its time limit, hydra.launcher.timeout_min",
                   "OUT_OF_MEMORY": ": past its memory, hydra.launcher.mem_gb"}.get(state.split()[0] if state else "", "")
            said = f"job {ended}, state {state}{why}; its logs: {p.root / '.submitit' / ended}"
        return GradflowError(f"hydra/launcher={p.launcher}: a job ended without its result ({shorten(said, 200)}); "
                             f"`gradflow ls {p.root}` shows which runs finished, and the same command again runs "
                             "the rest")
    return None


@contextmanager
def _hydra_composes_less():
    """Hydra composes every point of a batch to validate it, then the launcher composes each job again
    from the defaults list (~100 ms each). `plan` has already validated every value, so the first
    compose composes only the first job of each structure several share (`JobConfigLoader.warm`), and
    each job's compose goes through `JobConfigLoader`, which copies those. Before all that, Hydra
    composes the whole config once more only to read `hydra.mode`, which gradflow never sets: that
    read answers None, as the compose did, and Hydra then runs the multirun that `--multirun` asks for."""
    from hydra._internal import hydra as hydra_internal
    from hydra.plugins.sweeper import Sweeper

    Hydra = hydra_internal.Hydra
    check, loader, mode = Sweeper.validate_batch_is_legal, hydra_internal.ConfigLoaderImpl, Hydra.get_mode
    Sweeper.validate_batch_is_legal = lambda self, batch: self.hydra_context.config_loader.warm(self.config, batch)
    hydra_internal.ConfigLoaderImpl = JobConfigLoader
    Hydra.get_mode = lambda self, config_name, overrides: None
    try:
        yield
    finally:
        Sweeper.validate_batch_is_legal, hydra_internal.ConfigLoaderImpl, Hydra.get_mode = check, loader, mode
        _composed.clear()
        config_mod.forget_parsed_overrides()


# JobConfigLoader's composed jobs, by what they share (this process's sweep), pickled where they can be (config.kept)
_composed: dict[tuple, bytes | DictConfig] = {}


@contextmanager
def _composing():
    """Ctrl-C held while a config is composed, then raised as KeyboardInterrupt when it is done:
    OmegaConf updates its nodes in place, and an interrupt halfway leaves one half built, so what
    follows is an AttributeError's traceback (through Hydra's error report, exit 1) instead of the
    interruption it was. Only where Python's own handler is in place (`workers.ctrl_c_taken_by`)."""
    held = []
    try:
        with workers.ctrl_c_taken_by(lambda *_: held.append(True)):
            yield
    finally:
        if held:
            raise KeyboardInterrupt


class JobConfigLoader(ConfigLoaderImpl):
    """Hydra's config loader, except that a job which differs from one already composed only in plain
    values (a grid's usual case) is a copy of that job's config with its own values applied, exactly as
    Hydra applies value overrides after composing: ~3 ms instead of ~100 ms. Launchers pickle the
    loader to their workers (joblib, submitit), which then compose the same way; it takes along the
    jobs composed here (`warm`), so a worker copies those too instead of composing each structure
    again (a worker's first compose of a structure took 0.1-0.4 s, twice per worker on a grid of two
    inits, at the start of every worker). The first SHIPPED structures of a sweep at most (~18 KB each,
    with every job: a submitit job's pickle file), those its first jobs need."""

    SHIPPED = 16

    def __getstate__(self) -> dict:
        shipped = [(k, v) for k, v in _composed.items() if isinstance(v, bytes)][:self.SHIPPED]
        return {**self.__dict__, "composed": dict(shipped)}

    def __setstate__(self, state: dict) -> None:
        for key, kept in state.pop("composed").items():
            _composed.setdefault(key, kept)
        self.__dict__.update(state)

    def warm(self, master_config: DictConfig, batch: Sequence[Sequence[str]]) -> None:
        """Compose here the first job of each structure that two or more jobs of `batch` share (a
        structure: what `_structure` keys), up to SHIPPED of them, for this process's jobs and the
        workers' to copy. (A structure of one job, each point of a --points sweep, is left to its
        worker: composed here, a sweep of many would wait for them all before its first job; so are
        the structures past SHIPPED, which the workers compose in parallel.)"""
        structures = [self._structure(master_config, config_mod.parsed_overrides(list(job)))[0] for job in batch]
        jobs_of = Counter(structures)
        for key, job in zip(structures, batch):
            if len(_composed) >= self.SHIPPED:
                return
            if key is not None and jobs_of[key] > 1 and key not in _composed:
                self.load_sweep_config(master_config, list(job))

    def load_configuration(self, *args, **kwargs) -> DictConfig:
        from hydra.types import RunMode

        multirun = kwargs.get("run_mode", args[2] if len(args) > 2 else None) == RunMode.MULTIRUN
        with _composing(), _values_pass_over(every=True) if multirun else nullcontext():
            return super().load_configuration(*args, **kwargs)

    def load_sweep_config(self, master_config: DictConfig, sweep_overrides: list[str]) -> DictConfig:
        with _composing(), _values_pass_over(every=False):
            return self._sweep_config(master_config, sweep_overrides)

    @staticmethod
    def _structure(master_config: DictConfig, parsed: list) -> tuple[tuple | None, list]:
        """What a job's config shares with the jobs that differ from it only in plain values (its key in
        `_composed`), and those values: the same split `compose` makes (`config.split_structure`: a value
        inside or around a structural key goes with it, as their order matters). (None, []) for a job with
        hydra overrides of its own, which is always composed whole."""
        lines, values = config_mod.split_structure(parsed)
        if lines is None:
            return None, []
        hydra_overrides = OmegaConf.to_container(master_config.hydra.overrides.hydra)  # unresolved, as Hydra reads them
        return (master_config.hydra.job.config_name, tuple(hydra_overrides),
                tuple(OmegaConf.to_container(master_config.hydra.overrides.task)),  # a kept worker's next sweep
                lines, tuple(o.key_or_group for o in values)), values

    def _sweep_config(self, master_config: DictConfig, sweep_overrides: list[str]) -> DictConfig:
        parsed = config_mod.parsed_overrides(sweep_overrides)
        key, values = self._structure(master_config, parsed)
        if key is None:
            return super().load_sweep_config(master_config, sweep_overrides)
        if key not in _composed:
            cfg = super().load_sweep_config(master_config, sweep_overrides)
            _composed[key] = config_mod.kept(cfg)  # before the launcher sets the job's id and number
            return cfg
        cfg = config_mod.copied(_composed[key])
        ConfigLoaderImpl._apply_overrides_to_config(values, cfg)
        # what Hydra derives from the job's overrides; everything else is the same for jobs of one key
        cfg.hydra.overrides.task = list(sweep_overrides)
        dirname = cfg.hydra.job.config.override_dirname
        cfg.hydra.job.override_dirname = get_overrides_dirname(
            overrides=parsed, kv_sep=dirname.kv_sep, item_sep=dirname.item_sep, exclude_keys=dirname.exclude_keys)
        OmegaConf.copy_cache(from_config=master_config, to_config=cfg)
        return cfg


@contextmanager
def _values_pass_over(every: bool):
    """Value overrides of keys the composed config lacks are passed over. `every`: the multirun's own
    compose (the one the sweeper and launcher read their settings from) applies the value overrides to
    the default of each swept group: `model=rnn,lstm model.hidden=8` failed there, as the default
    model=mlp has no hidden; every job composes its own config afterwards. Otherwise (a job) only a key
    that another choice of its group has: `optim=sgd,adam optim.momentum=0.5`'s adam job has no momentum.
    `plan` has composed every point already, the same way, and refused a key that no point takes."""
    from hydra.errors import ConfigCompositionException

    apply = ConfigLoaderImpl._apply_overrides_to_config

    def leniently(overrides, cfg):
        for o in overrides:
            try:
                apply([o], cfg)
            except ConfigCompositionException as e:
                if o.is_hydra_override() or not (every or config_mod.key_of_another_choice(e)):
                    raise

    ConfigLoaderImpl._apply_overrides_to_config = staticmethod(leniently)
    try:
        yield
    finally:
        ConfigLoaderImpl._apply_overrides_to_config = staticmethod(apply)


class Watcher(threading.Thread):
    """Finds the jobs that ended, from their run.json on disk (works with every launcher), and calls
    `on_ended` with them ({job: its record}) every `every` seconds."""

    def __init__(self, p: Plan, on_ended: Callable[[dict[str, dict]], None], every: float = 0.5):
        super().__init__(daemon=True)
        self.plan, self.on_ended, self.every = p, on_ended, every
        self.since = time.time()
        self.stop = threading.Event()
        # each job's run.json as last read: (its mtime, size and inode then, what it said); read again only once
        # it changes (every ended run's, every half second, was 48 ms a look at 1000 runs)
        self._read: dict[str, tuple[tuple, dict | None]] = {}

    def ended(self) -> dict[str, dict]:
        found = {}
        for j in self.plan.to_run:
            path = self.plan.root / j.name / store.RUN_FILE
            try:
                st = path.stat()
            except OSError:  # (none yet)
                continue
            if st.st_mtime < self.since - 1:  # (a leftover from an earlier attempt, not yet redone)
                continue
            version = st.st_mtime_ns, st.st_size, st.st_ino  # (written anew: atomically, a new file)
            if j.name not in self._read or self._read[j.name][0] != version:
                self._read[j.name] = version, self._ended(j, path)
            if (said := self._read[j.name][1]) is not None:
                found[j.name] = said
        return found

    def _ended(self, j: Job, path: Path) -> dict | None:
        """What the run.json at `path` says of job `j`: its record where it ended, None where it has not."""
        rec = store.read_run(path.parent)
        if rec is None:
            return None
        failed = rec.get(store.REPLACEMENT) or {}
        ours = not j.config_hash or store.run_hash(path.parent, rec) == j.config_hash  # ("": not known)
        if failed.get("config_hash") == j.config_hash and not ours:
            # the point's replacement failed and the finished run of the earlier settings was kept (its
            # run.json, read as this point's: the sweep's lines said `ok`, with the old run's time)
            return {store.STATUS: store.FAILED, "kept": True}
        if ours and rec.get(store.STATUS) in store.ENDED:  # (not the run being replaced, finished within
            return rec  # the second before this sweep began: it was counted as the point's, `ok`)
        return None

    def count(self) -> int:
        return len(self.ended())

    def run(self) -> None:
        while not self.stop.wait(self.every):
            try:
                self.on_ended(self.ended())
            except KeyboardInterrupt:  # (its lines' reader left, `| head`: the CLI's OutputClosed) as a Ctrl-C
                # to the sweep, whose thread it is to stop: raised here, it was a thread's traceback, and the
                # sweep ran on to exit 0
                os.kill(os.getpid(), signal.SIGINT)
                return
