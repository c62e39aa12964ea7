"""gradflow's probes and results folder for a training loop you write yourself.

    rec = gradflow.Recorder(model, "results/my-study/run0", config={"lr": 1e-3}, every=10)
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

import sys
import time
import traceback
from contextlib import ExitStack, contextmanager
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from gradflow import store
from gradflow.errors import GradflowError, shorten


class Recorder:
    """Record gradflow's per-layer probes and your scalars from your own training loop.

    model: any torch.nn.Module; path: the run's folder (new, or an earlier gradflow run, which is
    replaced); config: what to save as config.yaml (nested dicts become dotted keys in
    `gradflow.load`); every: probe every k-th step (step 0 included).
    """

    def __init__(self, model: torch.nn.Module, path, config: dict | None = None, every: int = 10):
        if not isinstance(model, torch.nn.Module):
            raise GradflowError(f"Recorder's model must be a torch.nn.Module, not {type(model).__name__} "
                                f"({shorten(repr(model), 40)})")
        if isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every < 1:
            raise GradflowError(f"every={every!r} must be a positive whole number of steps")
        self.model, self.path, self.every = model, Path(path), every
        if self.path.exists() and not self.path.is_dir():
            raise GradflowError(f"{self.path} is a file; give the Recorder a folder for the run")
        if self.path.exists() and any(self.path.iterdir()) and not (self.path / store.RUN_FILE).exists():
            raise GradflowError(f"{self.path} exists and is not a gradflow run; give the Recorder a new folder")
        store.check_writable(self.path)
        self.probes = None  # built at the first probed forward pass, when an input exists
        self._pending = False  # a probed step waits for its update (update_ratio) and its read
        self._pending_step = -1
        self._steps: list[int] = []
        self._readings: list = []  # each probed step's primitives; their tables are made at close()
        self._logged: list[tuple[int, str, torch.Tensor | float]] = []
        self._last_step = -1
        self._cut_short = False  # the last step raised inside its block: it was not done
        self._closed = False
        self._start = time.perf_counter()
        # the study folder (the run's parent) is locked until close(), as `gradflow run` locks it
        self._lock = ExitStack()
        self._lock.enter_context(store.lock(self.path.parent, command=" ".join(["python", *sys.argv]),
                                            elsewhere="another path for the Recorder"))
        flat = store.flatten(config or {})
        self._record = {"job": self.path.name, "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                        "every": every, "config_hash": store.config_hash(flat), **store.environment(), "config": flat}
        store.begin(self.path, OmegaConf.create(config or {}), self._record)

    # --- the loop's side ---
    @contextmanager
    def step(self, step: int):
        """Wrap the forward and backward pass of `step` (all of an update's micro-batches in one block);
        probes run on every `every`-th step. Step numbers must increase: a number given twice (an
        `enumerate` restarting every epoch) would record two steps as one."""
        self._check_open("step")
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
            raise GradflowError(f"rec.step({step!r}): a step is a whole number >= 0 (the update's number)")
        if step <= self._last_step:
            raise GradflowError(f"rec.step({step}) after rec.step({self._last_step}): step numbers must increase. "
                                "Count updates across epochs (not enumerate() within one), and wrap all of an "
                                "update's micro-batches in one rec.step")
        self._finish_pending()
        self._last_step, self._cut_short = int(step), False
        if step % self.every:
            if self.probes is not None:
                self.probes.remove()  # unprobed steps run without hooks
            try:
                yield
            except BaseException:
                self._cut_short = True
                raise
            return
        if self.probes is None:
            self._discover_at_next_forward()
        else:
            self.probes.arm()
        try:
            yield
        except BaseException:
            self._cut_short = True
            if self.probes is not None:
                self.probes.remove()
            raise
        if self.probes is None:
            raise GradflowError("rec.step() saw no forward pass of the model it was given")
        if not self.probes.backward_seen():  # (its gradients would be read as 0: an `ok` run of zeros)
            self.probes.remove()
            raise GradflowError(f"rec.step({step}) saw no backward pass: call loss.backward() inside the "
                                "`with rec.step(...)` block")
        self.probes.after_backward(keep_grads=True)  # the loop may clip or zero them before the read
        self._pending, self._pending_step = True, step

    def log(self, step: int, **scalars) -> None:
        """Scalar metrics of `step` (tensors stay on the device until close()).

        A name `split_metric` (e.g. train_loss, test_acc) is stored as split `split`, metric `metric`;
        a name without an underscore goes to split "log"."""
        self._check_open("log")
        for name, value in scalars.items():
            if isinstance(value, torch.Tensor):
                if value.numel() != 1:  # (checked here: at close() it would be far from the call that made it)
                    raise GradflowError(f"Recorder.log: {name} must be a scalar; got a tensor of shape "
                                        f"{tuple(value.shape)} (log its mean, or each element under its own name)")
                value = value.detach()
            else:
                try:
                    value = float(value)
                except (TypeError, ValueError):
                    raise GradflowError(f"Recorder.log: {name} must be a number or a one-element tensor; "
                                        f"got {shorten(repr(value), 40)}") from None
            self._logged.append((step, name, value))

    def close(self, status: str = "ok", error: str | None = None) -> None:
        """Write every table and run.json (atomically, through gradflow.store)."""
        self._check_open("close")
        self._closed = True
        self._finish_pending()
        names = self.probes.names if self.probes else []
        quantities = self.probes.quantities if self.probes else ()
        tables = [self.probes.table(r) for r in self._readings]
        store.write_layers(self.path, self._steps, names, quantities, [v for v, _ in tables], [m for _, m in tables])
        rows = self._metric_rows()
        store.write_metrics(self.path, rows)
        final = {f"{split}_{metric}": v for _, split, metric, v in rows}
        if status == store.INTERRUPTED:  # no final result: its last values, with the step it got to
            self._record["last_evaluated"] = {store.STEP: self._last_step, **final}
            final = {}
        done = self._last_step + 1 - self._cut_short  # (a step that raised in its block was not done)
        self._record.update(status=status, steps=self._last_step, steps_done=done, final=final,
                            wall_time=round(time.perf_counter() - self._start, 4),
                            device=str(next(self.model.parameters()).device),
                            fused_steps=self.probes.fused_steps if self.probes is not None else 0)
        if error:
            self._record["error"] = error
        store.finish(self.path, self._record)
        if self.probes is not None:
            self.probes.remove()
        self._lock.close()

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, kind, error, tb) -> None:
        """As a context manager: an exception in the loop closes the run as failed, with the error; Ctrl-C
        closes it as interrupted. Either way with its tables up to there (unless the loop closed it)."""
        if self._closed:
            return
        if kind is None:
            self.close()
        elif issubclass(kind, KeyboardInterrupt):
            self.close(store.INTERRUPTED)
        else:
            self._record["traceback"] = "".join(traceback.format_exception(kind, error, tb))
            self.close("failed", f"{kind.__name__}: {error}")

    # --- internals ---
    def _check_open(self, what: str) -> None:
        if self._closed:
            raise GradflowError(f"rec.{what}() after rec.close(): the run {self.path} is written; "
                                "make a new Recorder for another run")

    def _discover_at_next_forward(self) -> None:
        """Find the probe points from the first input the model sees, then arm the probes for
        that same forward pass (the points' hooks fire as their modules run after this one)."""
        from gradflow.models.discover import discover
        from gradflow.probes.core import Probes

        def first_forward(module, args, kwargs):
            handle.remove()
            self.probes = Probes(discover(module, *args, **kwargs))
            self.probes.arm()

        handle = self.model.register_forward_pre_hook(first_forward, with_kwargs=True)

    def _finish_pending(self) -> None:
        """The update ratio of the last probed step (the weights have been updated since), then its
        one host copy."""
        if not self._pending:
            return
        self.probes.after_update()
        reading, _ = self.probes.read()  # note: a host sync point, once per probed step
        self._steps.append(self._pending_step)
        self._readings.append(reading)
        self._pending = False

    def _metric_rows(self) -> list[tuple[int, str, str, float]]:
        tensors = [v for _, _, v in self._logged if isinstance(v, torch.Tensor)]
        fetched = iter(torch.stack([t.float().reshape(()) for t in tensors]).cpu().tolist() if tensors else [])
        rows = []
        for step, name, v in self._logged:
            split, _, metric = name.partition("_") if "_" in name else ("log", "", name)
            rows.append((step, split, metric, next(fetched) if isinstance(v, torch.Tensor) else v))
        return rows
