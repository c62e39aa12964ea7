"""One run end to end: config -> data, model, probes -> training -> a results folder.

Shared by `gradflow run` (one job) and the sweep task (one job per grid point). The caller holds the
study folder's lock; this module writes only into its own job folder.
"""

from __future__ import annotations

import math
import signal
import threading
import time
import traceback
import warnings
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import torch
from omegaconf import DictConfig

from gradflow import data as data_mod  # (`data` names the built Data below)
from gradflow import models, store, summary, theory, workers
from gradflow.choices import settings
from gradflow.config import batch_fits, resolve_device, uses_batchnorm
from gradflow.errors import GradflowError, cannot_write, one_line, run_error
from gradflow.models.custom import activation_kind
from gradflow.models.init import initialize
from gradflow.probes import quantities as pq
from gradflow.probes.core import Probes
from gradflow.train import Failed, Interrupted, ProgressFn, TrainResult, train

TORCH_THREADS = torch.get_num_threads()  # torch's own intra-op thread count here, before a run sets one


def prepare(cfg: DictConfig, isolate: bool = False):
    """Everything before the first write: a user error here leaves no results folder behind. An error of
    torch's (an allocation, a type) is one line, as a bad input is; with `isolate` (a sweep, which records
    the failure) it is raised as it is."""
    try:
        return _prepare(cfg)
    except GradflowError:
        raise
    except (Exception, SystemExit) as e:
        error = run_error(e)  # (a model's module calling sys.exit)
        if isolate:
            raise error from e
        raise GradflowError(f"building the data or the model failed: {one_line(error)}") from e


def probed_activation(cfg: DictConfig) -> str | None:
    """The run's one activation by name, or None where each activation module is its own kind: model.activation
    =auto (model=custom), or a family whose schema has no activation (a linear net's; its modules, none)."""
    name = cfg.model.get("activation", "auto")
    return None if name == "auto" else name


def _prepare(cfg: DictConfig):
    device = resolve_device(cfg.device)
    # threads=0: torch's own count, also after an earlier run in this process (a sweep) set another
    torch.set_num_threads(cfg.threads or workers.default_threads(TORCH_THREADS))
    if too_many := workers.more_than_cores(cfg.threads, f"threads={cfg.threads}"):
        warnings.warn(f"{too_many}; threads=0 uses every core")
    torch.manual_seed(cfg.seed)
    data = data_mod.build(cfg.data, device, theory.input_scale(cfg))
    if "root" in cfg.data:  # files that hold fewer than the full set validation counted
        batch_fits(cfg.train.batch_size, len(data.x_train), cfg.data.name, f" under {data_mod.data_root(cfg.data.root)}")
    model = models.build(cfg, data.input_shape, data.n_classes, per_step=data.task in ("per_step", "next_token"),
                         vocab=data.vocab)
    if not any(p.requires_grad for p in model.parameters()):  # (a frozen pretrained net: each step's backward
        # failed in torch's words, "element 0 of tensors does not require grad")
        raise GradflowError(f"model={cfg.model.name}: the model has no parameter that requires grad, so there is "
                            "nothing to train or check; leave some trainable (requires_grad=True)")
    initialize(model, cfg.init, probed_activation(cfg) or activation_kind(model))
    if hasattr(model, "post_init"):  # family-specific init on top of the scheme (recurrent weights, Fixup, ...)
        model.post_init(cfg)
    return device, data, model.to(device)


def execute(cfg: DictConfig, job_dir: Path, on_step: ProgressFn | None = None, isolate: bool = False,
            flat: dict | None = None, command: str | None = None) -> dict:
    """Run `cfg` into `job_dir` and return its run record (what run.json holds).

    A failure inside training is recorded as status "failed" with the error. With `isolate`
    (sweeps), a failure while preparing is recorded the same way instead of raised. Ctrl-C marks
    the run "interrupted" and is raised again. `flat`: cfg's settings, flattened, where the caller has
    them already (a sweep's job, from its check whether the run is finished). `command`: the command line that
    made it, where no sweep.yaml keeps it (`gradflow run`'s: run.json's `command`, which the report page gives).

    Where `job_dir` holds a finished run (of other settings, or of the same: `gradflow run` again), the new run
    is made beside it and takes its place only once it has ended ok or diverged: one that fails leaves the old
    run (its run.json notes the failure: `store.keep_replaced`), one interrupted is dropped. The record returned
    is the new run's. The caller holds the study's lock and has put right a swap a killed process cut off
    (`store.recover`).
    """
    if flat is None:
        flat = settings(store.flatten(cfg))  # a key of another choice (init.sw2 of a Xavier run) is no setting
    job_dir, digest = Path(job_dir), store.config_hash(flat)
    if store.standing(job_dir, digest) is None:  # (a swap a killed process cut off: the caller put it right)
        return _execute(cfg, job_dir, job_dir.name, on_step, isolate, flat, digest, command)
    # a finished run stays until its replacement has ended ok or diverged (store.STAGING): a Ctrl-C or a crash
    # in a rerun of the same settings lost the run it was redoing
    staging = store.staging_dir(job_dir)
    store.clear_run(staging)  # (one a killed process left)
    try:
        record = _execute(cfg, staging, job_dir.name, on_step, isolate, flat, digest, command)
        with workers.ctrl_c_waits():  # (a Ctrl-C between the swap's two renames would leave the folder empty)
            return store.take_place(job_dir, staging, record)
    except KeyboardInterrupt:  # dropped, the old run kept; unless it had ended (Ctrl-C as run.json was written)
        with workers.ctrl_c_waits():
            if store.is_finished(staging, digest):
                store.take_place(job_dir, staging, store.read_run(staging))
            else:
                store.clear_run(staging)
        raise


def _begin(job_dir: Path, cfg: DictConfig, record: dict) -> None:
    """store.begin, a folder that takes no file (a full disk, a permission) one line: no run can be recorded
    there, so none is, and a sweep stops at it (it was Hydra's traceback, the folders of the points after it
    left empty)."""
    try:
        store.begin(job_dir, cfg, record)
    except OSError as e:
        raise cannot_write(f"the run {job_dir}", e) from e


def _execute(cfg: DictConfig, job_dir: Path, name: str, on_step: ProgressFn | None, isolate: bool,
             flat: dict, digest: str, command: str | None = None) -> dict:
    """`execute` into `job_dir` (a replacement's: its staging folder), the run's record naming job `name`
    and its config hash `digest`."""
    record = {"job": name, "seed": cfg.seed, "steps": cfg.train.steps,
              "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "config_hash": digest, **store.environment(), "config": flat,
              **({"command": command} if command else {})}
    if "root" in cfg.data:  # the folder its files are read from (data.root "" is $GRADFLOW_DATA, else ./data)
        record["data_root"] = str(data_mod.data_root(cfg.data.root).expanduser().resolve())
    start = time.perf_counter()
    try:
        device, data, model = prepare(cfg, isolate)
    except Exception as e:
        if not isolate:  # `gradflow run`: one line, nothing written (as for any bad input)
            raise
        _begin(job_dir, cfg, record)
        return _failed(job_dir, record, e, start)
    record.update(device=str(device), threads=torch.get_num_threads())  # intra-op threads it trains with
    _begin(job_dir, cfg, record)
    reached = [0]  # the last step reported, for an interrupted run's record
    interrupts: list[bool] = []  # Ctrl-Cs seen while training (see _interrupts_kept)

    def progress(t: int, n: int) -> None:
        if interrupts or workers.stopping():  # one raised where Python swallowed it (see _interrupts_kept)
            raise KeyboardInterrupt  # is raised again, here
        reached[0] = t
        if on_step:
            on_step(t, n)

    recorded = stopped = False  # stopped: by Ctrl-C during training
    try:
        probes = Probes(model, probed_activation(cfg), histograms=cfg.probe.histograms)
        error = None
        try:
            with _interrupts_kept(interrupts):
                result = train(model, data, cfg, probes, progress)
        except Interrupted as interrupted:  # Ctrl-C: what it measured until then is written, then it is raised on
            result, stopped = interrupted.result, True
        except Failed as failed:  # an error in a step: what it measured until then is written, with the error
            result, error = failed.result, failed.error
        except Exception as e:
            return _failed(job_dir, record, e, start)
        finally:
            probes.remove()
        # a Ctrl-C while the tables are written waits for run.json (one as a finished run's tables were
        # written lost them all, the run recorded interrupted with none); a second leaves at once
        with workers.ctrl_c_waits(seen=int(stopped)):
            try:
                _record(job_dir, record, result, error, probes, data, flat, start, uses_batchnorm(cfg))
            except Exception as e:  # writing its tables failed (a full disk, a folder in a table's place): the run
                # is failed with that error, not left `running` (and a sweep goes on to its next run)
                _failed(job_dir, record, e, start, result.steps_done)
            recorded = True
    except KeyboardInterrupt:  # before training, or a second Ctrl-C while the tables were written
        if not recorded:
            with _exit_on_second_interrupt():
                record.update(status=store.INTERRUPTED, steps_done=reached[0],
                              wall_time=round(time.perf_counter() - start, 4))
                store.finish(job_dir, record)
        raise
    if stopped:  # recorded, with its tables: the Ctrl-C goes on to the caller
        raise Interrupted(result)
    return record


def _record(job_dir: Path, record: dict, result: TrainResult, error: Exception | None, probes: Probes,
            data, flat: dict, start: float, batchnorm: bool = False) -> None:
    """Write what training measured, then `record` (run.json) last: as failed with `error` where a step
    raised one, else with the run's status, summary and final metrics."""
    store.write_layers(job_dir, result.probe_steps, probes.names, probes.quantities, result.probe_values,
                       result.probe_masks)
    store.write_metrics(job_dir, result.metrics)
    if result.histograms:
        store.write_histograms(job_dir, result.probe_steps, probes.names, result.histograms, pq.HIST_TENSORS,
                               pq.HIST_KINDS, pq.HIST_LO, pq.HIST_HI)
    if result.jacobians:
        store.write_jacobians(job_dir, result.jacobians)
    # reading the table back also proves it loads before run.json says the run is finished
    layers = store.read_table(Path(job_dir) / store.LAYERS_FILE)
    if probes.tied:  # (points whose weight gradient is the sum of several uses: left out of the ratios)
        record["tied"] = probes.tied
    # the points whose weight is frozen (requires_grad False): a "-" there is that, not a layer the step left unused
    record["frozen"] = probes.frozen
    record["summary"] = summary.per_run(layers, flat, result.diverged_step, probes.tied)  # `ls`'s, reading no table
    record["summary"].update(summary.clip_summary(pd.DataFrame(result.metrics, columns=store.METRIC_COLUMNS), flat))
    if error is not None:  # failed at a step: recorded with the tables of the steps before it
        _failed(job_dir, record, error, start, result.steps_done)
        return
    record.update(status=result.status, steps_done=result.steps_done, train_time=round(result.train_time, 4),
                  diverged_step=result.diverged_step, diverged_layer=result.diverged_layer,
                  diverged_in=result.diverged_in,
                  fused_steps=probes.fused_steps,  # probed steps whose statistics the fused CPU kernels took
                  **summary.final_metrics(result.metrics, result.status))
    if batchnorm and result.status == store.OK and not result.steps_done:  # (no flag: it had nothing to learn)
        # a resnet20 probed at init read "final train loss 61.82", a forward pass exploding, where its
        # train-mode pass, the one the probes read, had 3.7
        record["notes"] = ["batch-norm statistics at their start: no update ran, so the train and test losses, "
                           "taken in eval mode, read the running statistics' start (mean 0, variance 1), not the "
                           "batches' own; the probes at step 0 read the train-mode pass"]
    if result.status == store.OK and result.steps_done:  # a run of 0 steps (init only) had nothing to learn
        final, first, flags = record["final"], summary.first_metrics(result.metrics), []
        words = "final train loss", "at the first evaluation"
        if batchnorm and result.steps_done < BN_SETTLED and (batch := summary.batch_window(result.metrics)):
            # the evaluations run in eval mode, on the running statistics, which a short run has barely moved from
            # their start: a 10-step resnet20 read a train loss of 31.9 beside a batch loss of 2.59, and a 5-step
            # plain20 "loss grew" from 3.06 to 11.4. Judged on the train-mode batches' loss instead, and said: the
            # loss grew where the last window's is GREW times the first's (the mean of its batches from the first,
            # at init, in the same mode; a run of one window has nothing to compare it with)
            flags.append(f"batch-norm statistics unsettled: after {result.steps_done} update"
                         f"{'s' * (result.steps_done != 1)} the running statistics still weigh "
                         f"{(1 - BN_MOMENTUM) ** result.steps_done:.2g} of their start (mean 0, variance 1), so the "
                         f"train and test losses, taken in eval mode, read them (the last train-mode batch loss: "
                         f"{batch['train_loss']:.4g})")
            final, first = batch, summary.batch_window(result.metrics, min)
            words = "last train-mode batch loss", "in the first evaluation window"
        record["flags"] = flags + summary.learned_nothing(layers, final, chance_level(data, flat), first,
                                                          result.steps_done, *words)
    record["wall_time"] = round(time.perf_counter() - start, 4)
    store.finish(job_dir, record)


@contextmanager
def _interrupts_kept(seen: list):
    """Ctrl-C raises KeyboardInterrupt as ever, and is also noted in `seen`. Python raises it in whatever
    code runs when the signal arrives; inside a weakref callback or __del__ (an import's module-lock
    callback, say) it is printed as "Exception ignored" and lost, and a sweep then ran on to the end
    with exit code 0. The training loop's progress checks `seen` at every step; inside an import it is
    raised once the import is done (`workers.raise_outside_imports`: the "Exception ignored" lines were a
    run's stderr). Only where Ctrl-C has Python's own handler (`workers.ctrl_c_taken_by`; a joblib worker
    holds it in its own way)."""
    def interrupted(signum, frame):
        seen.append(True)
        workers.raise_outside_imports(frame)

    with workers.ctrl_c_taken_by(interrupted):
        yield


@contextmanager
def _exit_on_second_interrupt():
    """While recording an interruption, a second Ctrl-C leaves at once (exit code 130); not in a sweep's
    worker, which records its run whole (`workers.job`: the sweep's process decides when to leave)."""
    if threading.current_thread() is not threading.main_thread() or workers.in_worker():
        yield
        return
    previous = signal.signal(signal.SIGINT, lambda *_: workers.exit_now(130))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


BN_MOMENTUM = 0.1  # torch's BatchNorm momentum, which gradflow's models keep: each update moves the statistics 10%
BN_SETTLED = 50  # updates after which the running statistics weigh under 0.9^50 = 0.5% of their start


def chance_level(data, flat: dict) -> summary.Chance | None:
    """What a net that learned nothing scores on `data` (a run's flat config `flat`): its loss, the classes
    its accuracy guesses among, and the words for that loss; None where there is no such level (regression,
    next-token prediction). A classifier's is ln(n_classes); the copy task's the memoryless strategy's
    (blanks, then a uniform guess among the symbols; its accuracy counts the symbols alone), where the
    classifier's ln(classes) was never reached by a loss averaged over mostly blank steps."""
    if data.task == "classification" and data.n_classes > 1:
        n = data.n_classes
        return summary.Chance(math.log(n), n, f"chance is ln {n} = {math.log(n):.4g}")
    if flat.get("data.name") == "copy":
        from gradflow.datasets import copy_task_baseline

        symbols = int(flat["data.n_symbols"])
        level = copy_task_baseline(int(flat["data.T"]), symbols, int(flat["data.copy_len"]))
        return summary.Chance(level, symbols, f"the memoryless baseline (blanks, then a guess among {symbols} symbols) is "
                                      f"{level:.4g}")
    return None


def _failed(job_dir, record, e: Exception, start: float, steps_done: int = 0) -> dict:
    """Record the run as failed with error `e`, after `steps_done` updates (the tables of those, where
    the caller wrote them, stay)."""
    record.update(status=store.FAILED, error=f"{type(e).__name__}: {e}",
                  traceback="".join(traceback.format_exception(e)),
                  wall_time=round(time.perf_counter() - start, 4), steps_done=steps_done)
    store.finish(job_dir, record)
    return record
