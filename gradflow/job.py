"""One run end to end: config -> data, model, probes -> training -> a results folder.

Shared by `gradflow run` (one job) and the sweep task (one job per grid point).
"""

from __future__ import annotations

import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

import torch
from omegaconf import DictConfig

from gradflow import data as datasets
from gradflow import models, store
from gradflow.config import input_scale, resolve_device
from gradflow.models.init import initialize
from gradflow.probes import QUANTITIES, Probes
from gradflow.train import ProgressFn, train


def prepare(cfg: DictConfig):
    """Everything before the first write: a user error here leaves no results folder behind."""
    device = resolve_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    data = datasets.build(cfg.data, device, input_scale(cfg))
    model = models.build(cfg, data.input_shape, data.n_classes, per_step=data.task == "per_step")
    initialize(model, cfg.init, cfg.model.activation)
    if hasattr(model, "post_init"):  # family-specific init on top of the scheme (recurrent weights, Fixup, ...)
        model.post_init(cfg)
    return device, data, model.to(device)


def execute(cfg: DictConfig, job_dir: Path, on_step: ProgressFn | None = None, isolate: bool = False) -> dict:
    """Run `cfg` into `job_dir` and return its run record (what run.json holds).

    A failure inside training is recorded as status "failed" with the error. With `isolate`
    (sweeps), a failure while preparing is recorded the same way instead of raised.
    """
    record = {"job": Path(job_dir).name, "seed": cfg.seed, "steps": cfg.train.steps,
              "started": datetime.now(timezone.utc).isoformat(timespec="seconds"), **store.environment()}
    start = time.perf_counter()
    try:
        device, data, model = prepare(cfg)
    except Exception as e:
        if not isolate:
            raise
        store.begin(job_dir, cfg, record)
        return _failed(job_dir, record, e, start)
    record["device"] = str(device)
    store.begin(job_dir, cfg, record)
    probes = Probes(model, cfg.model.activation, histograms=cfg.probe.histograms)
    try:
        result = train(model, data, cfg, probes, on_step)
    except Exception as e:
        return _failed(job_dir, record, e, start)
    finally:
        probes.remove()
    store.write_layers(job_dir, result.probe_steps, probes.names, QUANTITIES, result.probe_values, result.probe_masks)
    store.write_metrics(job_dir, result.metrics)
    if result.histograms:
        store.write_histograms(job_dir, result.probe_steps, probes.names, result.histograms)
    if result.jacobians:
        store.write_jacobians(job_dir, result.jacobians)
    final = {f"{split}_{metric}": value for _, split, metric, value in result.metrics if split in ("train", "test")}
    record.update(status=result.status, steps_done=result.steps_done, train_time=round(result.train_time, 4),
                  wall_time=round(time.perf_counter() - start, 4), final=final,
                  diverged_step=result.diverged_step, diverged_layer=result.diverged_layer)
    store.finish(job_dir, record)
    return record


def _failed(job_dir, record, e: Exception, start: float) -> dict:
    record.update(status="failed", error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc(),
                  wall_time=round(time.perf_counter() - start, 4), steps_done=0)
    store.finish(job_dir, record)
    return record
