"""gradflow's probes and results folder for a training loop you write yourself.

    rec = gradflow.Recorder(model, "results/my-study/run0", config={"lr": 1e-3}, every=10, steps=len(loader))
    for step, (x, y) in enumerate(loader):
        with rec.step(step):            # arms the probes on probed steps; a no-op otherwise
            loss = loss_fn(model(x), y)
            loss.backward()
        rec.log(step, train_loss=loss)   # scalars stay on the device until close()
        opt.step()
    rec.close()                          # config.yaml, run.json, layers.parquet, metrics.parquet

The probe points are discovered from the model (gradflow.models.discover) at the first probed
forward pass; the folder has the layout of `gradflow run`, so `gradflow ls`, `plot`, `compare`
and `gradflow.load` read it unchanged. The cost is that of `gradflow run`: computed on the
device, one host copy per probed step.
"""

from __future__ import annotations

import atexit
import dataclasses
import enum
import math
import os
import shlex
import signal
import sys
import threading
import time
import traceback
import warnings
import weakref
from argparse import Namespace
from collections.abc import Mapping
from contextlib import ExitStack, contextmanager
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from torch.amp.grad_scaler import OptState
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

from gradflow import store, summary, workers
from gradflow.errors import GradflowError, given_path, shorten, user_file, user_stacklevel

# names gradflow's tables and run.json use themselves: a Recorder's config key of the same name would be
# overwritten or hidden in `gradflow.load` and `ls` (`seed` is shared on purpose: a seed axis; `device` too:
# run.json's, the device the model was on, is the one the config means)
SHARED = ("seed", "device")
TAKEN = {**dict.fromkeys([k for k in store.TOP_KEYS if k not in SHARED], "a key of gradflow's own config"),
         **dict.fromkeys([store.RUN, store.SOURCE, store.STATUS, store.PATH], "a column `load` adds"),
         **dict.fromkeys([c for cols in store.TABLE_COLUMNS.values() for c in cols], "a column of the tables"),
         **dict.fromkeys([*summary.SUMMARY_COLUMNS, summary.CLIPPED], "a column `ls` shows"),
         **dict.fromkeys(["grad_ratio", "signal_ratio"], "the start of columns `ls` shows"),
         **dict.fromkeys([f for f in store.RUN_FIELDS if f not in SHARED], "a field of run.json")}


def plain_config(config) -> dict:
    """A Recorder's config as plain YAML values: a dict, an OmegaConf config, an argparse.Namespace or a
    dataclass; numpy scalars and arrays, paths, enums, torch.device/dtype and one-element tensors become
    numbers, strings and lists. One clear error for a key gradflow's tables use (TAKEN) or a value that
    is none of these (a function's repr would change with its address, and the run's hash with it)."""
    if config is None:
        return {}
    if isinstance(config, Namespace):
        config = vars(config)
    elif dataclasses.is_dataclass(config) and not isinstance(config, type):
        config = dataclasses.asdict(config)
    elif not isinstance(config, Mapping):
        raise GradflowError(f"Recorder's config must be a dict (or an OmegaConf config, an argparse.Namespace, a "
                            f"dataclass), not {type(config).__name__}")
    if not isinstance(config, dict):  # (an OmegaConf DictConfig, or another mapping)
        config = OmegaConf.to_container(config, resolve=True) if OmegaConf.is_config(config) else dict(config)
    for key in config:
        if key in TAKEN:
            raise GradflowError(f"Recorder config key {key!r} is {TAKEN[key]} already; rename it or nest it "
                                f"(config={{'run_cfg': {{{key!r}: ...}}}} is the key run_cfg.{key})")
    plain = _plain(config, "")
    _check_one_each(plain)
    return plain


def _check_one_each(config: dict, parts: tuple = (), seen: dict | None = None) -> None:
    """Each dotted key once: {"a.b": 1, "a": {"b": 2}} gives a.b twice, and the flat record kept the last."""
    seen = {} if seen is None else seen
    for k, v in config.items():
        if isinstance(v, dict) and v:
            _check_one_each(v, (*parts, k), seen)
            continue
        key = ".".join((*parts, k))
        where = "config" + "".join(f"[{p!r}]" for p in (*parts, k))
        if key in seen:
            raise GradflowError(f"Recorder config key {key!r} is given twice, as {seen[key]} and as {where}; "
                                "give it once")
        seen[key] = where


def _plain(value, where: str):
    if isinstance(value, Mapping):
        return {str(k): _plain(v, f"{where}.{k}" if where else str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, (np.generic, np.ndarray)):  # (before float: np.float64 is one, and YAML refuses it)
        return value.tolist()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, (Path, torch.device, torch.dtype)):
        return str(value)
    raise GradflowError(f"Recorder config {where}: a {type(value).__name__} is no config value (numbers, strings, "
                        f"booleans, None, lists and dicts of them; numpy values, paths, enums and torch.device "
                        f"are converted); give its name or its number")


_OPEN: weakref.WeakSet = weakref.WeakSet()  # Recorders not closed yet
# study folder -> [the lock's ExitStack, how many open Recorders of this process write into it]: two Recorders
# of one script, side by side in one loop, share their study's lock (the lock is per process: a second one
# would wait for its own script)
_STUDIES: dict[Path, list] = {}


def _hold_study(study: Path) -> None:
    held = _STUDIES.get(study)
    if held is None:
        stack = ExitStack()
        stack.enter_context(store.lock(study, command=" ".join(["python", *sys.argv]),
                                       elsewhere="another path for the Recorder"))
        _STUDIES[study] = held = [stack, 0]
    held[1] += 1


def _release_study(study: Path) -> None:
    held = _STUDIES.get(study)
    if held is not None:
        held[1] -= 1
        if held[1] <= 0:
            del _STUDIES[study]
            held[0].close()


def _unchained(module: torch.nn.Module, chain: tuple) -> bool:
    """Whether a module has a weight matrix of its own and is no layer of a chain of weight layers (an
    embedding's, a bilinear's): the depth convention does not say whether to count it."""
    from gradflow.models import weights_behind

    # (a parametrized weight's tensors, not `weight`, whose reading would run a spectral norm's power iteration)
    return any(w.dim() >= 2 for w in weights_behind(module)) and not isinstance(module, chain)


def _stepping_scaler() -> torch.amp.GradScaler | None:
    """The enabled GradScaler whose step() is calling the optimizer's now (from an optimizer step's hook), or None:
    a few frames up, in torch's grad_scaler.py, its `self`."""
    frame = sys._getframe(2)
    for _ in range(8):
        if frame is None:
            return None
        scaler = frame.f_locals.get("self") if frame.f_code.co_filename.endswith("grad_scaler.py") else None
        if isinstance(scaler, torch.amp.GradScaler):
            return scaler if scaler.is_enabled() else None
        frame = frame.f_back
    return None


def _identity(error: BaseException) -> tuple:
    """What tells an error apart without keeping it (and its traceback's frames) alive."""
    return id(error), type(error), str(error)


def _device_of(model: torch.nn.Module) -> str:
    """The device of the model's first parameter or buffer; cpu for a model with neither (one with no layer to
    probe, whose run is closed as failed: next() of its empty parameters raised StopIteration in close)."""
    t = next(model.parameters(), None)
    t = t if t is not None else next(model.buffers(), None)
    return str(t.device) if t is not None else "cpu"


def _close_at_exit() -> None:
    """A script that ends without rec.close() (and no `with`): its open Recorders are closed as it exits,
    saying so; they were left `running`, read as interrupted, with none of their tables written."""
    for rec in list(_OPEN):
        if not rec._closed:
            print(f"gradflow: {rec.path} closed as the script ended (rec.close() was not called)", file=sys.stderr)
            try:
                rec._close()
            except Exception as e:
                print(f"gradflow: could not close the run at {rec.path}: {type(e).__name__}: {e}", file=sys.stderr)


def _close_on_uncaught() -> None:
    """Chain sys.excepthook once, so that a script whose loop raises outside a `with` block closes its open
    Recorders as `with` would (failed, with the error; interrupted on Ctrl-C) before Python prints the
    traceback: the run was left `running` and read as interrupted, the error nowhere. And once, at exit,
    close those a script that ended without rec.close() left open."""
    previous = sys.excepthook
    if getattr(previous, "_gradflow", False):
        return
    atexit.register(_close_at_exit)

    def hook(kind, error, tb):
        for rec in list(_OPEN):
            if not rec._closed:
                try:
                    rec._close_after(kind, error, tb)
                except Exception as e:  # (the script's own error comes first)
                    print(f"gradflow: could not close the run at {rec.path}: {type(e).__name__}: {e}", file=sys.stderr)
        previous(kind, error, tb)

    hook._gradflow = True
    sys.excepthook = hook
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _terminated)  # (not where the script took SIGTERM itself, or ignores it)


def _terminated(signum, frame) -> None:
    """SIGTERM (`kill PID`, `timeout`, a SLURM time limit) to a script with a Recorder open in this process is
    taken as Ctrl-C is: KeyboardInterrupt in the loop, and its runs closed interrupted with their tables up to
    there, by its `with` block or at the uncaught error (they were left `running` with no table: every step
    lost). A second SIGTERM, or one with no Recorder open here (a forked child's), ends the process as ever."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if any(getattr(rec, "_opened", None) == os.getpid() and not rec._closed for rec in _OPEN):
        raise KeyboardInterrupt
    os.kill(os.getpid(), signal.SIGTERM)


# the logged names a view reads: ls's columns, the curves, compare and the report (train/test loss and acc), the
# gradient-norm figure (opt_grad_norm) and ls's clipped share (opt_clipped); batch_loss and batch_acc are drawn
# where a run logs no train_* or test_* loss or acc (the curves' steps of a loop without an evaluation)
CURVE_NAMES = ("train_loss", "train_acc", "test_loss", "test_acc")
READ_NAMES = (*CURVE_NAMES, "opt_grad_norm", "opt_clipped")
BATCH_NAMES = ("batch_loss", "batch_acc")


def _unread_names(rows) -> list[str]:
    """A note on logged scalars that no view shows, each by the name logged: `val_loss` (split val), `lr` (a name
    without an underscore: split log), `train_ppl` and `opt_lr` (a split read, a metric not). A logged val_loss
    and lr were shown nowhere, lr without a word (its split `log` counted as read)."""
    logged = dict.fromkeys((split, metric) for _, split, metric, _ in rows)
    names = {(s, m): m if s == "log" else f"{s}_{m}" for s, m in logged}
    read = set(READ_NAMES)
    if not any(f"{s}_{m}" in CURVE_NAMES for s, m in logged):  # (no train/test loss or acc: the batch's drawn)
        read |= set(BATCH_NAMES)
    unread = [names[k] for k in logged if f"{k[0]}_{k[1]}" not in read]
    if not unread:
        return []
    unread = sorted(unread)
    logs = [n for n in unread if "_" not in n]
    where = "gradflow.load(path, 'metrics')" + (f", split 'log' for {', '.join(logs[:3])}" if logs else "")
    loss = any(n.endswith("_loss") for n in unread)
    return [f"logged {', '.join(unread[:4])}{' and more' if len(unread) > 4 else ''}: stored ({where}), but no "
            f"view shows {'them' if len(unread) > 1 else 'it'}: ls, curves, compare and the report read train_loss, "
            "train_acc, test_loss, test_acc and opt_grad_norm"
            + ("; log a validation loss as test_loss to see it there" if loss else "")]


def _ordinal_suffix(n: int) -> str:
    """2 -> "nd", 11 -> "th", 23 -> "rd"."""
    return "th" if n % 100 in (11, 12, 13) else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")


class _StepBlock:
    """What rec.step(n) returns: the step's block, for `with`. One never entered says so when it is dropped:
    `rec.step(0)` alone (no `with`) recorded nothing, without a word."""

    def __init__(self, block, step, rec: Recorder):
        self._block, self._number, self._entered, self._rec = block, step, False, rec

    def __enter__(self):
        self._entered = True
        with self._rec._escaping():
            inside = self._rec._in_block
            if inside is not None:  # (the inner block's pass was stored as the outer step's, without a word)
                raise GradflowError(f"rec.step({self._number}) inside rec.step({inside})'s block: a step's block "
                                    "ends before the next one begins (all of an update's micro-batches go in one "
                                    "block)")
            entered = self._block.__enter__()
        self._rec._in_block = self._number
        return entered

    def __exit__(self, kind, error, tb):
        try:
            with self._rec._escaping():  # (an error the block's end raises)
                suppressed = self._block.__exit__(kind, error, tb)
            if error is not None and not suppressed:  # (the block's own error, going on out)
                self._rec._escaped = _identity(error)
            return suppressed
        finally:
            self._rec._in_block = None

    def __del__(self):
        if not self._entered:
            warnings.warn(f"rec.step({self._number}) records nothing without `with`: wrap the step's forward and "
                          f"backward pass in `with rec.step({self._number}):`", stacklevel=2)


class _Calls:
    """A forward pre-hook on the Recorder's model: whether the model ran with gradients enabled since the probed
    block began. The block's witness where no probe hook fires: MultiheadAttention's out_proj, hooked, never runs
    itself (its weight is used inside the attention's forward), and the input projection has no hook, so a model
    of attention alone ran with no probe hook seeing it."""

    def __init__(self):
        self.graded = False

    def __call__(self, module, args) -> None:
        self.graded = self.graded or torch.is_grad_enabled()


def _whole_step(step: object, call: str) -> int:
    """A step number is a whole number >= 0, in rec.step and rec.log alike: an int, a numpy integer or a
    one-element integer tensor (a loop's counter kept as one: rec.log stored it, and refused it once it checked
    its step), returned as an int."""
    given = step
    if isinstance(step, torch.Tensor) and step.numel() == 1 and not (
            step.dtype == torch.bool or step.is_floating_point() or step.is_complex()):
        step = int(step.item())
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
        raise GradflowError(f"{call}({shorten(repr(given), 40)}): a step is a whole number >= 0 (the update's number)")
    return int(step)


def _code_commit() -> str | None:
    """The commit of the user's code: that of the repository the file that made the Recorder is in (a
    script, a test; wherever it was started from, and after an os.chdir), None where it is in none (not that
    of the folder it was started from); a notebook's or `python -c`'s, which have no file, that of the
    working folder's repository."""
    script = user_file()
    if script is None or "ipykernel" in sys.modules:
        return store.git_commit(Path.cwd())
    return store.git_commit(Path(script).resolve().parent)


class Recorder:
    """Record gradflow's per-layer probes and your scalars from your own training loop.

    model: any torch.nn.Module; path: the run's folder (new, or an earlier gradflow run, which is
    replaced); config: what to save as config.yaml (nested dicts become dotted keys in
    `gradflow.load`); every: probe every k-th step (step 0 included); steps: the loop's number of steps,
    if it knows it: its last step, steps - 1, is probed too (as `gradflow run` probes its last), so the
    views' end values are the trained net's (without it, close() says which step they come from); scaler: the loop's
    torch.amp.GradScaler, if it scales the loss (float16 mixed precision): the gradients and signals are
    recorded unscaled, and a non-finite gradient (a step the scaler skips) is no divergence.
    """

    def __init__(self, model: torch.nn.Module, path, config: dict | None = None, every: int = 10,
                 scaler: torch.amp.GradScaler | None = None, steps: int | None = None):
        if scaler is not None and not isinstance(scaler, torch.amp.GradScaler):
            raise GradflowError(f"scaler must be the loop's torch.amp.GradScaler, not {type(scaler).__name__}")
        self.scaler = scaler
        if not isinstance(model, torch.nn.Module):
            raise GradflowError(f"Recorder's model must be a torch.nn.Module, not {type(model).__name__} "
                                f"({shorten(repr(model), 40)})")
        if isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every < 1:
            raise GradflowError(f"every={every!r} must be a positive whole number of steps")
        if steps is not None and (isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1):
            raise GradflowError(f"steps={steps!r} must be a positive whole number of steps (the loop's number of "
                                f"steps, its last one steps - 1), or None")
        self.steps = None if steps is None else int(steps)
        if type(model).__name__ == "OptimizedModule" and isinstance(getattr(model, "_orig_mod", None), torch.nn.Module):
            model = model._orig_mod  # torch.compile's wrapper: the probes go on the module it compiled (given the
            # wrapper, the discovery's forward pass ran inside dynamo's tracing and failed with dynamo's error)
        from gradflow.models.discover import check_probeable

        check_probeable(model)  # (else said from inside a forward hook, at the first probed step)
        # ~ expanded and made absolute now: a literal ./~ folder was written, and a chdir in the loop lost the run
        path = given_path(path, 'Recorder(model, "results/my-study/run0")').absolute()
        self.model, self.path, self.every = model, path, every
        if self.path.exists() and not self.path.is_dir():
            raise GradflowError(f"{self.path} is a file; give the Recorder a folder for the run")
        if self.path.exists() and any(self.path.iterdir()) and not (self.path / store.RUN_FILE).exists():
            raise GradflowError(f"{self.path} exists and is not a gradflow run; give the Recorder a new folder")
        inside = next((p for p in Path(os.path.abspath(self.path)).parents  # ("run0/../run1" is beside run0)
                       if (p / store.RUN_FILE).is_file()), None)
        if inside is not None:  # (ls listed it as a run of the study, `ls` of the run's folder left it out)
            raise GradflowError(f"{self.path} is inside the folder of a run ({inside / store.RUN_FILE}): a run holds "
                                f"no runs; give it a folder beside that one ({inside.parent / self.path.name})")
        spec = store.sweep_spec(self.path.parent)
        if spec is not None and isinstance(spec.get("runs"), dict):  # (as `gradflow run` refuses one not its point)
            raise GradflowError(f"{self.path.parent} is the folder of a sweep ({store.SWEEP_FILE}): a Recorder's run "
                                "there is none of its points, so ls would list it as stale and `gradflow clean "
                                "--stale` remove it; give the run a study folder of its own "
                                "(results/my-study/run0)")
        store.check_writable(self.path)
        config = plain_config(config)  # (before the lock: a refused config leaves nothing held)
        replaced = store.read_run(self.path) if (self.path / store.RUN_FILE).exists() else None
        self.probes = None  # built at the first probed forward pass, when an input exists
        self._pending = False  # a probed step waits for its update (update_ratio) and its read
        self._pending_step = -1
        self._steps: list[int] = []
        self._readings: list = []  # each probed step's primitives; their tables are made at close()
        self._scales: list[tuple[float, float]] = []  # each probed step's (gradient, signal) factors: 1 / loss scale
        self._pending_scale: tuple[torch.Tensor, bool] | None = None  # (the scale its backward ran at, grads unscaled)
        self._logged: dict[tuple[int, str], torch.Tensor | float] = {}  # (step, name) -> value: the last logged
        self._said_twice = False
        self._last_step = -1
        self._cut_short = False  # the last step raised inside its block: it was not done
        # the last error to leave rec.step or rec.log, until the next step begins (see close): its id, type and
        # words, not the error, whose traceback holds the step's tensors
        self._escaped: tuple | None = None
        self._closed = False
        self._in_block: int | None = None  # the step whose `with rec.step(...)` block is running
        self._start = time.perf_counter()
        if any(rec.path.resolve() == self.path.resolve() for rec in list(_OPEN) if not rec._closed):
            raise GradflowError(f"{self.path} is being written by another Recorder of this script; give each "
                                "Recorder its own run folder (results/my-study/a, results/my-study/b)")
        # the study folder (the run's parent) is locked until close(), as `gradflow run` locks it; this
        # script's Recorders share it
        self._study = self.path.parent.resolve()
        _hold_study(self._study)
        self._flat = store.flatten(config)
        env = store.environment()  # its git_commit is the user's code's (the script's repository), if any
        env["gradflow_commit"] = env.pop("git_commit", None)
        env["git_commit"] = _code_commit()
        self._record = {"job": self.path.name, "command": shlex.join(["python", *sys.argv]),  # (the report shows it)
                        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                        "every": every, "steps_planned": self.steps, "config_hash": store.config_hash(self._flat), **env, "config": self._flat}
        try:
            store.begin(self.path, OmegaConf.create(config), self._record, shared=True)
        except BaseException:
            _release_study(self._study)
            raise
        _OPEN.add(self)
        self._opened = os.getpid()  # (begun: dropped unclosed from here on, __del__ closes it, in this process)
        _close_on_uncaught()
        self._optimizer_seen = False  # an optimizer stepped the model's parameters
        self._updates = self._updates_then = 0  # its steps so far, and by the last block's start
        # whether each optimizer steps the model's parameters, with its number of parameter groups then
        self._optimizers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._idle: list[tuple[int, int]] = []  # consecutive blocks with no optimizer step from one's start to the next's
        self._skipped: list[int] = []  # probed steps whose block ran no forward pass with gradients: not recorded
        self._unpassed: int | None = None  # the last probed block with a forward pass and no backward pass in it
        self._no_backward: list[int] = []  # such blocks with no backward pass after them either: not recorded
        self._late: list[int] = []  # such blocks whose backward pass ran after them (said at close, if not raised)
        self._ours = {id(p) for p in model.parameters()}
        saw = weakref.WeakMethod(self._saw_optimizer)  # (torch's registry must not keep the Recorder, and its model)
        self._seeing = register_optimizer_step_post_hook(lambda *args: saw() is not None and saw()(*args))
        before = weakref.WeakMethod(self._before_optimizer)

        def before_step(*args) -> None:  # (a pre-hook returns None, or new arguments for the step)
            if (method := before()) is not None:
                method(*args)

        self._before = register_optimizer_step_pre_hook(before_step)
        self._pending_stepped: set[int] = set()  # the optimizers that stepped since the pending probed step
        self._scaler_said = False  # a GradScaler not given to the Recorder was seen stepping (said once)
        self._discovery = None  # the first probed block's forward pre-hook, until it fires or the block ends
        self._calls = _Calls()  # (registered for the Recorder's life: a hook added and removed at every block
        self._calling = model.register_forward_pre_hook(self._calls)  # made a compiled model recompile)
        if replaced is not None:  # (as `gradflow run` says so; a Recorder's rerun is a new run)
            warnings.warn(f"{self.path}: replacing the run recorded there before ({replaced.get(store.STATUS)}, "
                          f"started {replaced.get('started')})", stacklevel=2)

    # --- the loop's side ---
    def step(self, step: int) -> _StepBlock:
        """Wrap the forward and backward pass of `step` (all of an update's micro-batches in one block):
        `with rec.step(step): ...`; probes run on every `every`-th step. Step numbers must increase: a
        number given twice (an `enumerate` restarting every epoch) would record two steps as one."""
        return _StepBlock(self._step(step), step, self)

    @contextmanager
    def _step(self, step: int):
        try:
            with self._block(step):
                yield
        finally:  # the model leaves the block as the loop gave it: its hooks, left on until the next block,
            if self.probes is not None:  # broke torch.save(model) and went along with a deepcopy (an EMA copy,
                self.probes.remove()  # whose forward passes in a later block were then read as the model's)

    @contextmanager
    def _block(self, step: int):
        self._check_open("step")
        step = _whole_step(step, "rec.step")
        if step <= self._last_step:
            raise GradflowError(f"rec.step({step}) after rec.step({self._last_step}): step numbers must increase. "
                                "Count updates across epochs (not enumerate() within one), and wrap all of an "
                                "update's micro-batches in one rec.step")
        if self.steps is not None and step > self._final:  # (a warning: a long run goes on, probed every k-th step)
            every = "every step" if self.every == 1 else f"every {self.every}{_ordinal_suffix(self.every)} step"
            warnings.warn(f"rec.step({step}) is past the last step, {self._final}, of Recorder(..., "
                          f"steps={self.steps}): steps is the loop's number of steps (its last step + 1); recording "
                          f"goes on, {every} probed", stacklevel=user_stacklevel())
            self.steps = None
        self._after_unpassed(closing=False)
        self._finish_pending()
        # (a block per micro-batch: _misplaced; not one that raised, a failed step the loop skipped)
        if self._last_step >= 0 and not self._cut_short and self._updates == self._updates_then:
            self._idle.append((self._last_step, int(step)))
        self._updates_then = self._updates
        self._last_step, self._cut_short, self._escaped = int(step), False, None  # (the loop went on past an error)
        if step % self.every and step != self._final:  # (without hooks: `_step` took them off after the last block)
            try:
                yield
            except BaseException:
                self._cut_short = True
                raise
            return
        marks = None
        if self.probes is None:
            self._discover_at_next_forward()
            marks = self._grad_marks()
        else:
            self.probes.arm()
        self._calls.graded = False
        stepped = []  # an optimizer step inside the block: the update ratio would read 0 (weights copied after it)
        handle = register_optimizer_step_post_hook(
            lambda opt, args, kwargs: stepped.append(1) if self._steps_ours(opt) else None)
        try:
            yield
        except BaseException:
            self._abandon_step()
            raise
        finally:
            handle.remove()
            if self._discovery is not None:  # (a block with no forward pass of the model: its hook would discover
                self._discovery.remove()  # at an unprobed step's pass, and stay on beside the next block's)
                self._discovery = None
        if stepped:
            self._abandon_step()
            raise GradflowError(f"rec.step({step}): the optimizer stepped inside the block; call opt.step() after it "
                                "(the block holds the forward and backward pass: the update ratio is the change "
                                "from the block's end to the next step)")
        if self.probes is None and self._grad_marks() != marks:  # (its parameters' gradients came from a pass
            self._cut_short = True  # that never called the model: not done, the step's error is the Recorder's own)
            raise GradflowError("rec.step() saw no forward pass of the model it was given, though its parameters got "
                                "gradients: call the model, model(x), not model.forward(x) (gradflow's hooks run in "
                                "model(x)), and give the Recorder the model the loop trains")
        if self.probes is None or not (self.probes.forward_seen() or self._calls.graded):
            # an empty block (a batch the loop skips with `continue`, an extra rec.step; the first probed one too,
            # whose points are still to find) or one whose forward pass ran under no_grad (an evaluation): it read
            # the gradients left from before it, the last step's, as its own. Nothing recorded, said at close():
            # the loop's training goes on
            self._abandon_step()
            self._skipped.append(int(step))
            return
        if not self.probes.pass_seen():
            # no backward pass in the block (its gradients, if any, an earlier step's): whether one runs after it
            # (the loop's mistake, at every step) or none at all (a loss the loop skips) is told at the next
            # rec.step() or close(), _after_unpassed; nothing recorded either way
            self._abandon_step()
            self._unpassed = int(step)
            return
        if not self.probes.backward_seen():  # (its gradients would be read as 0: an `ok` run of zeros)
            self._abandon_step()
            raise GradflowError(f"rec.step({step}) saw no gradients at the end of its block: call loss.backward() "
                                "inside the `with rec.step(...)` block, and opt.step() and opt.zero_grad() after "
                                "it (zero_grad inside the block cleared them)")
        self.probes.after_backward(keep_grads=True)  # the loop may clip or zero them before the read
        self._pending, self._pending_step = True, step
        self._pending_stepped.clear()
        self._pending_scale = None
        if self.scaler is not None and self.scaler.is_enabled():
            # the loss scale its backward ran at (a tensor on the device, fetched with the step's one copy), and
            # whether the loop unscaled the gradients in the block (scaler.unscale_, to clip): the signals,
            # taken in the backward pass, are scaled either way
            scale = self.scaler._get_scale_async()
            if scale is not None:  # (gradients copied at the backward pass's end were still scaled)
                unscaled = not self.probes.grads_from_pass_end and any(
                    state.get("stage") is OptState.UNSCALED for state in self.scaler._per_optimizer_states.values())
                self._pending_scale = (scale.detach().clone().float(), unscaled)

    def log(self, step: int, **scalars) -> None:
        """Scalar metrics of `step` (tensors stay on the device until close()).

        A name `split_metric` (e.g. train_loss, test_acc) is stored as split `split`, metric `metric`;
        a name without an underscore goes to split "log"."""
        with self._escaping():
            self._log(step, scalars)

    def _log(self, step: int, scalars: dict) -> None:
        self._check_open("log")
        step = _whole_step(step, "rec.log")  # (checked here: "two" failed at close() in pyarrow's words, the run left
        for name, value in scalars.items():  # running and its metrics unwritten; 1.5 was stored as step 1)
            if isinstance(value, torch.Tensor):
                if value.numel() != 1:  # (checked here: at close() it would be far from the call that made it)
                    raise GradflowError(f"Recorder.log: {name} must be a scalar; got a tensor of shape "
                                        f"{tuple(value.shape)} (log its mean, or each element under its own name)")
                value = value.detach().clone()  # (its value now: an EMA or accumulator the loop updates in place,
            else:  # or a parameter, kept by reference, read as its last value at every step)
                try:
                    value = float(value)
                except (TypeError, ValueError):
                    raise GradflowError(f"Recorder.log: {name} must be a number or a one-element tensor; "
                                        f"got {shorten(repr(value), 40)}") from None
            if (step, name) in self._logged and not self._said_twice:
                self._said_twice = True  # (once a run: a loop that does it does it at every step)
                warnings.warn(f"rec.log: {name} logged twice at step {step}; the last value is kept (one value per "
                              f"name and step: log the mean of an update's micro-batches once, after them)",
                              stacklevel=2)
            self._logged[step, name] = value

    def _steps_ours(self, opt) -> bool:
        """Whether optimizer `opt` steps parameters of the model."""
        return any(id(p) in self._ours for group in opt.param_groups for p in group["params"])

    def _ours_known(self, opt) -> bool:
        """`_steps_ours`, asked once of each optimizer and again after add_param_group."""
        try:
            groups, ours = self._optimizers.get(opt, (None, False))
        except TypeError:  # (an optimizer with __eq__ and no __hash__, or no weak reference: asked at every step;
            groups, ours = None, False  # the error raised out of the loop's opt.step(), any optimizer's)
        if groups != len(opt.param_groups):
            ours = self._steps_ours(opt)
            try:
                self._optimizers[opt] = (len(opt.param_groups), ours)
            except TypeError:
                pass
        return ours

    def _saw_optimizer(self, opt, args, kwargs) -> None:
        """After every optimizer step until close() (torch's hooks cannot be removed while they run)."""
        if self._ours_known(opt):
            self._optimizer_seen = True
            self._updates += 1

    def _before_optimizer(self, opt, args, kwargs) -> None:
        """Before every optimizer step until close(): the pending probed step's update ratio is read before an
        optimizer's second step after it (a loop that wraps only its probed steps in rec.step: else the ratio
        would span every update to the next rec.step); each optimizer's first (two optimizers, a GAN's) counts.
        A GradScaler the Recorder was not given, stepping the model's optimizer, is said once."""
        if self.scaler is None and not self._scaler_said and self._ours_known(opt):
            scaler = _stepping_scaler()
            if scaler is not None:
                self._scaler_said = True
                scale = scaler.get_scale()
                warnings.warn(f"{self.path}: a torch.amp.GradScaler steps the optimizer and the Recorder was not "
                              f"given it: the gradients and signals are recorded at its loss scale ({scale:g} times "
                              "their size), and a step it skips reads as divergence; pass it as "
                              "Recorder(..., scaler=scaler)", stacklevel=user_stacklevel())
        if self._pending and self._ours_known(opt):
            if id(opt) in self._pending_stepped:
                self._finish_pending()
            else:
                self._pending_stepped.add(id(opt))

    def close(self, status: str = store.OK, error: str | None = None) -> None:
        """Write every table and run.json (atomically, through gradflow.store). A Ctrl-C meanwhile waits
        for run.json, then is raised; a second (the first, closing after one) leaves at once, the run
        recorded interrupted with the tables written by then. Called while the error that left a rec.step
        block, or that rec.step or rec.log raised, is still on its way out or being handled (the loop's
        `finally`, an `except` around the loop), the run is `failed` with it (`interrupted` for Ctrl-C), as
        the `with` block records it: it was written `ok`, of the steps before the error. Any other
        exception Python is handling then (an earlier attempt's, an early stop's) is none of the run's."""
        kind, raised, tb = sys.exc_info()
        if status == store.OK and raised is not None and _identity(raised) == self._escaped and not self._closed:
            self._close_after(kind, raised, tb)
        else:
            self._close(status, error)

    def _close(self, status: str = store.OK, error: str | None = None) -> None:
        self._check_open("close")
        if self._in_block is not None:  # (the run was written `ok` without the step, and the block's end did nothing)
            raise GradflowError(f"rec.close() inside rec.step({self._in_block})'s block: close the run after the "
                                "block ends (or leave the Recorder's own `with` block)")
        self._closed = True
        self._seeing.remove()
        self._before.remove()
        self._calling.remove()
        _OPEN.discard(self)
        written = False
        try:
            with workers.ctrl_c_waits(seen=int(status == store.INTERRUPTED)):
                self._write(status, error)
                written = True
        except KeyboardInterrupt:
            if not written:
                store.finish(self.path, {**self._record, store.STATUS: store.INTERRUPTED})
            raise
        except Exception as e:  # writing the tables failed (a full disk, a folder in a table's place): the run is
            if not written:  # failed with that error, not left `running`, and the error goes on to the loop
                store.finish(self.path, {**self._record, store.STATUS: store.FAILED, "error": f"{type(e).__name__}: {e}",
                                         "traceback": "".join(traceback.format_exception(e)),
                                         "wall_time": round(time.perf_counter() - self._start, 4)})
            raise
        finally:
            if self.probes is not None:
                self.probes.remove()
            _release_study(self._study)

    def _after_unpassed(self, closing: bool) -> None:
        """The last probed block that ran no backward pass, now that the loop has gone on: a backward pass through
        its graph since (its hooks saw it) is the loop's mistake, one clear error at the next rec.step() (at
        close(), said); none is a step the loop skipped (a non-finite loss), left out and said at close()."""
        step, self._unpassed = self._unpassed, None
        if step is None:
            return
        if not self.probes.passes():
            self._no_backward.append(step)
        elif closing:
            self._late.append(step)
        else:
            raise GradflowError(f"rec.step({step}) saw no backward pass in its block, and one ran after it: call "
                                "loss.backward() inside the `with rec.step(...)` block, and opt.step() after it")

    def _write(self, status: str, error: str | None) -> None:
        """The tables, then run.json with `status` (diverged where a loss or weight gradient is not finite)."""
        self._after_unpassed(closing=True)
        self._finish_pending()
        names = self.probes.names if self.probes else []
        quantities = self.probes.quantities if self.probes else ()
        tables = [self.probes.table(r, *scales) for r, scales in zip(self._readings, self._scales)]
        store.write_layers(self.path, self._steps, names, quantities, [v for v, _ in tables], [m for _, m in tables])
        rows = self._metric_rows()
        store.write_metrics(self.path, rows)
        layers = store.read_table(self.path / store.LAYERS_FILE)  # (also proves it loads, as `gradflow run`'s)
        for text in [*self._misplaced(layers), *_unread_names(rows)]:
            warnings.warn(f"{self.path}: {text}", stacklevel=user_stacklevel())
        final = {f"{split}_{metric}": v for _, split, metric, v in rows}
        # a non-finite loss or weight gradient: diverged, as `gradflow run` says (not another logged scalar,
        # nor an update ratio, which a zero-initialized weight makes infinite)
        losses = [st for st, _, metric, v in rows if metric == "loss" and not math.isfinite(v)]
        weights = layers[layers[store.QUANTITY].isin(["grad_norm", "bias_grad_norm"])]
        grads = weights.loc[~np.isfinite(weights[store.VALUE]), store.STEP].tolist()
        skipped_all = False  # every probed step's gradients non-finite, under a scaler: none of them updated
        if self.scaler is not None and self.scaler.is_enabled():  # (a non-finite gradient is a step the scaler
            probed = set(weights[store.STEP])  # skipped, lowering its scale: not a divergence; its first steps
            skipped_all = len(probed) > 1 and set(grads) == probed  # are, while it finds its scale)
            grads = []
        if (losses or grads) and status == store.OK:
            status, first = store.DIVERGED, min(losses + grads)
            self._record.update(diverged_step=int(first), diverged_in=" and ".join(
                what for what, at in (("loss", losses), ("gradient", grads)) if first in at))
            if first in grads:  # the lowest-index layer whose weight gradient was non-finite, as `gradflow run`'s
                # names it (not under a scaler, whose non-finite gradients are skipped steps: `grads` is empty)
                bad = weights[~np.isfinite(weights[store.VALUE]) & (weights[store.STEP] == first)]
                self._record["diverged_layer"] = int(bad[store.LAYER].min())
            if len(layers) and layers[store.STEP].max() > first or any(st > first for st, *_ in rows):
                # what the loop went on to measure is of a net that took non-finite updates: dropped, so that
                # the tables, and the curves and heatmaps drawn from them, end where the run did, as `gradflow
                # run`'s (a loop that ran on read a block of NaN steps, a mark at each)
                layers, rows = layers[layers[store.STEP] <= first], [r for r in rows if r[0] <= first]
                store.write_table(self.path / store.LAYERS_FILE, layers)
                store.write_metrics(self.path, rows)
        if status == store.OK:
            for text in [*self._unprobed_end(layers), *self._depth_unlike(layers)]:
                warnings.warn(f"{self.path}: {text}", stacklevel=user_stacklevel())
        if self.probes is not None and self.probes.tied:
            self._record["tied"] = self.probes.tied
        if self.probes is not None:  # (as `gradflow run` records them: a "-" there is a frozen weight)
            self._record["frozen"] = self.probes.frozen
        self._record["summary"] = summary.per_run(layers, self._flat, self._record.get("diverged_step"),
                                                  self._record.get("tied"))  # (ls's)
        if status == store.INTERRUPTED:  # no final result: its last values, with the step it got to
            # the last step anything was logged at, with that step's values alone (each name's last value came
            # from steps of its own: a test loss of step 0 read as step 3's)
            last = max((st for st, *_ in rows), default=None)
            self._record["last_evaluated"] = {} if last is None else {
                store.STEP: last, **{f"{sp}_{m}": v for st, sp, m, v in rows if st == last}}
            final = {}
        elif status == store.DIVERGED:  # no final result either: the last step whose values are all finite
            last = max((st for st, *_ in rows if st < self._record["diverged_step"]), default=None)
            self._record["last_finite"] = {} if last is None else {
                store.STEP: last, **{f"{sp}_{m}": v for st, sp, m, v in rows if st == last}}
            final = {}
        done = self._last_step + 1 - self._cut_short  # (a step that raised in its block was not done)
        if status == store.DIVERGED and "diverged_step" in self._record:  # the updates before it, as
            done = min(done, self._record["diverged_step"])  # `gradflow run` counts them
        if status == store.OK and done:  # every hidden weight gradient 0 at the end (a dead ReLU net, say)
            self._record["flags"] = summary.learned_nothing(layers, final, None) + (
                [f"no update: the scaler skipped every probed step, all {len(probed)} (their gradients were not "
                 f"finite at its loss scale, {self.scaler.get_scale():g} at the end)"] if skipped_all else [])
        # steps: the steps the loop took (0 .. last), as `gradflow run`'s is the steps it was to take
        self._record.update(status=status, steps=self._last_step + 1, steps_done=done, final=final,
                            wall_time=round(time.perf_counter() - self._start, 4),
                            device=_device_of(self.model),
                            fused_steps=self.probes.fused_steps if self.probes is not None else 0)
        if error:
            self._record["error"] = error
        store.finish(self.path, self._record)

    def __enter__(self) -> Recorder:
        return self

    def __del__(self):
        """A Recorder dropped without rec.close() (one made in a function that returns): closed now, saying so, as
        one a script's end finds open is. It was left `running`, read as interrupted, with no table written: the
        end-of-script close keeps no Recorder alive."""
        if getattr(self, "_opened", None) == os.getpid() and not self._closed:  # (not a forked child's copy)
            try:
                print(f"gradflow: {self.path} closed as its Recorder was dropped (rec.close() was not called)",
                      file=sys.stderr)
                self._close()  # (not close(): an exception Python is handling meanwhile is none of its loop's)
            except Exception as e:
                print(f"gradflow: could not close the run at {self.path}: {type(e).__name__}: {e}", file=sys.stderr)

    def __exit__(self, kind, error, tb) -> None:
        """As a context manager: an exception in the loop closes the run as failed, with the error; Ctrl-C
        closes it as interrupted. Either way with its tables up to there (unless the loop closed it)."""
        if self._closed:
            return
        if kind is None:
            self._close()  # (not close(): the block ended cleanly, whatever an enclosing `except` is handling)
        else:
            self._close_after(kind, error, tb)

    def _close_after(self, kind, error, tb) -> None:
        if issubclass(kind, KeyboardInterrupt):
            self._close(store.INTERRUPTED)
        else:
            self._record["traceback"] = "".join(traceback.format_exception(kind, error, tb))
            self._close(store.FAILED, f"{kind.__name__}: {error}")

    # --- internals ---
    @contextmanager
    def _escaping(self):
        """Keep the error that leaves rec.step's block (the loop's own, or the Recorder's refusal) or rec.log."""
        try:
            yield
        except BaseException as e:
            self._escaped = _identity(e)
            raise

    def _check_open(self, what: str) -> None:
        if self._closed:
            raise GradflowError(f"rec.{what}() after rec.close(): the run {self.path} is written; "
                                "make a new Recorder for another run")

    def _discover_at_next_forward(self) -> None:
        """Find the probe points from the first input the model sees, then arm the probes for
        that same forward pass (the points' hooks fire as their modules run after this one)."""
        from gradflow.models.discover import discover
        from gradflow.probes.core import Probes

        def first_forward(module, args, kwargs=None):
            # (kwargs=None: another Recorder's discovery, whose forward pass runs inside this one, removed this
            # hook meanwhile, and torch then calls it as a hook without kwargs; it has found the points already)
            if self.probes is not None:
                return
            handle.remove()
            self.probes = Probes(discover(module, *args, **(kwargs or {})))
            self.probes.grads_at_pass_end = True  # the loop may clip or unscale them later in the block
            self.probes.arm()

        handle = self._discovery = self.model.register_forward_pre_hook(first_forward, with_kwargs=True)

    def _grad_marks(self) -> list:
        """Each parameter's gradient as a mark that changes when a backward pass reaches it (its version counts
        accumulations in place), while no probe point exists yet."""
        return [None if p.grad is None else (id(p.grad), p.grad._version) for p in self.model.parameters()]

    def _finish_pending(self) -> None:
        """The update ratio of the last probed step (the weights have been updated since), then its
        one host copy."""
        if not self._pending:
            return
        self.probes.after_update()
        carry = () if self._pending_scale is None else (self._pending_scale[0],)
        reading, carried = self.probes.read(*carry)  # note: a host sync point, once per probed step
        self._steps.append(self._pending_step)
        self._readings.append(reading)
        if carried:
            undo = 1.0 / float(carried[0])
            self._scales.append((1.0 if self._pending_scale[1] else undo, undo))
        else:
            self._scales.append((1.0, 1.0))
        self._pending = False

    def _abandon_step(self) -> None:
        """The step's block ended without a step to record (an error in it, or the loop's mistake): it was
        not done, and its hooks come off."""
        self._cut_short = True
        if self.probes is not None:
            self.probes.remove()

    def _misplaced(self, layers) -> list[str]:
        """What the tables say about a loop whose calls sit in the wrong place: a run of zeros reads as a
        run, so each is said at close() (no step at all; the optimizer stepping on gradients zeroed inside the
        step's block; no optimizer step between blocks, each a micro-batch; probed blocks with no pass to
        record, left out)."""
        if self._last_step < 0:
            return ["no step was recorded: wrap each step's forward and backward pass in `with rec.step(step):`"]
        values = layers.groupby(store.QUANTITY)[store.VALUE]
        of = {q: v.to_numpy() for q, v in values}
        grads, updates = (of.get(q, np.zeros(0)) for q in ("grad_norm", "update_ratio"))
        # (the gradients are read at the end of the backward pass, before the loop could zero them in the block)
        if self._optimizer_seen and updates.size and (updates == 0).all() and (grads > 0).any():
            return ["every update read 0 while the weight gradients did not: the optimizer stepped on zeroed "
                    "gradients; call opt.zero_grad() after opt.step(), after the `with rec.step(...)` block (or "
                    "before the forward pass), not inside the block"]
        said = []
        if self._optimizer_seen and self._idle and not (self.scaler is not None and self.scaler.is_enabled()):
            # (a scaler skips the optimizer's step where the gradients are not finite: no telling then)
            (a, b), n = self._idle[0], len(self._idle)
            said.append(f"the optimizer did not step between rec.step({a}) and rec.step({b})"
                        + (f", nor between {n - 1} other pair{'s' * (n > 2)} of consecutive steps" if n > 1 else "")
                        + ": each block is read as one update (its gradients, its update ratio); wrap all of an "
                          "update's micro-batches in one `with rec.step(...)` block (a loop that skipped those "
                          "updates on purpose can ignore this; so does a torch.amp.GradScaler where the gradients are "
                          "not finite: pass it as Recorder(..., scaler=scaler))")
        left_out = ((self._skipped, "ran no forward pass of the model with gradients enabled in the block (an empty "
                                    "block, or one under torch.no_grad())", ": a block holds a step's forward and "
                                    "backward pass"),
                    (self._no_backward, "ran no backward pass (a loss the loop skipped, say)", ""),
                    (self._late, "ran its backward pass after the block, not inside it", ""))
        for steps, what, hint in left_out:
            if steps:
                n = len(steps)
                said.append(f"rec.step({steps[0]})" + (f" and {n - 1} other probed step{'s' * (n > 2)}" if n > 1
                                                        else "") + f" {what}, so nothing was recorded for "
                            + ("them" if n > 1 else "it") + hint)
        return said

    @property
    def _final(self) -> int:
        """The loop's last step, probed on top of every k-th (-1 where `steps` is not known)."""
        return -1 if self.steps is None else self.steps - 1

    def _unprobed_end(self, layers) -> list[str]:
        """The step the views' end values come from, where the loop's last step was not probed (every k-th
        step only, and no `steps=`; or a loop that stopped before the last of its `steps`): `ratio end` and the
        last step's profiles are an earlier step's, which went without a word."""
        last = self._last_step - self._cut_short  # (a step that raised in its block was not done)
        if last < 0 or layers.empty or last % self.every == 0 or last == self._final:
            return []
        end = store.last_step(layers)
        views = (f"the views' end values (ls's `ratio end`, the profiles at `last`) are step {end}'s, "
                 f"{last - end} step{'s' * (last - end > 1)} before the end")
        if self.steps is None:
            return [f"the loop's last step, {last}, was not probed (every={self.every}): {views}; pass "
                    f"Recorder(..., steps={last + 1}) (the loop's number of steps) to probe its last step too"]
        return [f"the loop stopped at step {last}, before its last, {self._final} (steps={self.steps}), and step "
                f"{last} was not probed (every={self.every}): {views}"]

    def _depth_unlike(self, layers) -> list[str]:
        """A config's model.depth other than the model's weight layers before its head, the depth convention's
        (a chain of weight layers; a net of blocks may count its blocks): the depth figures plotted a 3-layer
        net at the config's 12, beside the same net at 3, without a word."""
        depth = self._flat.get(summary.DEPTH_KEY)
        if layers.empty or isinstance(depth, bool) or not isinstance(depth, (int, float)):
            return []
        ran = summary.ran(layers)
        points = ran.drop_duplicates(store.LAYER).sort_values(store.LAYER)
        weighted = set(ran.loc[ran[store.QUANTITY] == "grad_norm", store.LAYER])
        chain = (torch.nn.Linear, torch.nn.modules.conv._ConvNd)
        if (len(points) < 2 or set(points[store.LAYER]) - weighted  # (a recurrent net's time steps: no weights)
                or any(summary.block_of(n) is not None for n in points[store.NAME])  # (a net of one block or more)
                or any(isinstance(m, (torch.nn.RNNBase, torch.nn.RNNCellBase, torch.nn.MultiheadAttention))
                       or _unchained(m, chain)
                       for m in self.model.modules())):
            return []  # (layers the depth convention does not count as hidden layers, or that no probe sees)
        head = int(points[store.LAYER].max())
        if depth == head:
            return []
        return [f"config model.depth={depth:g}, but the model has {head} weight layer{'s' * (head != 1)} before its "
                f"head (`{points[store.NAME].iloc[-1]}`): the depth figures plot the run at {depth:g}; model.depth "
                f"counts the weight layers before the head (the depth convention), {head} here"]

    def _metric_rows(self) -> list[tuple[int, str, str, float]]:
        tensors = [v for v in self._logged.values() if isinstance(v, torch.Tensor)]
        fetched = iter(torch.stack([t.float().reshape(()) for t in tensors]).cpu().tolist() if tensors else [])
        rows = []
        for (step, name), v in self._logged.items():
            split, _, metric = name.partition("_") if "_" in name else ("log", "", name)
            rows.append((step, split, metric, next(fetched) if isinstance(v, torch.Tensor) else v))
        return rows
