"""The standard set of figures for a run or a sweep: which figures fit the data (`plan`), and drawing
them (`render`), a big sweep's in one process per CPU (`drawing_processes`)."""

from __future__ import annotations

import multiprocessing
import os
import threading
from concurrent.futures import BrokenExecutor, Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import pandas as pd

from gradflow.errors import GradflowError
from gradflow.fmt import fmt
from gradflow.plots.curves import curves, grid, ratio
from gradflow.plots.series import first_last
from gradflow.summary import with_module_depth
from gradflow.plots.distributions import hist, spectrum
from gradflow.plots.gradnorm import clipping, gradnorm
from gradflow.keys import distinct_keys, is_grid, is_numeric_key, n_distinct, ordered_values, swept_keys
from gradflow.plots.labels import is_recurrent
from gradflow.plots.profiles import heatmap, profile
from gradflow.plots.save import file_part, save
from gradflow.plots.style import MAX_STYLES


DRAWN = ("grad_norm", "signal_norm")  # the per-layer quantities of the standard set
PARALLEL_RUNS = 32  # from this many runs a set takes seconds (200 runs: 0.5-0.9 s a figure): worth a process per CPU
DRAWING_PRELOAD = ["__main__", "gradflow.plots.preload"]  # what the drawing processes' fork server imports
MAX_DRAWING_PROCESSES = 8  # a standard set is ~10 figures: more processes would wait


class FiguresFailed(GradflowError):
    """Some figures of a set failed, each with its one-line error; the rest were drawn (`written`)."""

    def __init__(self, failed: list[tuple[str, str]], written: list[Path]):
        self.failed, self.written = failed, written
        super().__init__("; ".join(self.lines()))

    def lines(self) -> list[str]:
        return [f"{name} not drawn: {why}" for name, why in self.failed]


@dataclass(frozen=True)
class Planned:
    """One figure of the set, not yet drawn: the file name and the drawing call (picklable, so another
    process can draw it)."""
    name: str
    draw: Callable[..., Any]
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)

    def save(self, out: Path, fmt: str) -> Path:
        return save(self.draw(*self.args, **self.kwargs), out / f"{self.name}.{fmt}", fmt)


def _each_source_a_grid(runs: pd.DataFrame, length: str) -> bool:
    """Whether runs of several sources (a comparison's) are each a grid of its own swept keys with the length
    (`length`, model.depth or data.T) among them."""
    if "source" not in runs.columns or n_distinct(runs["source"]) < 2:
        return False
    parts = [part for _, part in runs.groupby("source", sort=False)]
    return all(length in (keys := swept_keys(part)) and is_grid(part, keys, along=length) for part in parts)


def standard_set(layers: pd.DataFrame | None, metrics: pd.DataFrame | None, runs: pd.DataFrame | None,
                 out_dir: str | Path, fmt: str = "png", hists: pd.DataFrame | None = None,
                 jacobian: pd.DataFrame | None = None, pool: DrawingPool | None = None,
                 on_saved: Callable[[Path, int], None] | None = None,
                 left_out: list[tuple[str, str]] | None = None) -> list[Path]:
    """Draw the usual figures into out_dir and return their paths (see `plan`); with a pool, its
    processes draw some of them while this one draws the others. on_saved(path, n_figures) after each;
    left_out gets (name, why) for each figure of the usual set the tables cannot make (`plan`)."""
    return render(plan(layers, metrics, runs, hists, jacobian, left_out), Path(out_dir), fmt, pool, on_saved)


def plan(layers: pd.DataFrame | None, metrics: pd.DataFrame | None, runs: pd.DataFrame | None,
         hists: pd.DataFrame | None = None, jacobian: pd.DataFrame | None = None,
         left_out: list[tuple[str, str]] | None = None) -> list[Planned]:
    """The usual figures for these tables, in drawing order.

    One run: profile at step 0 and at the last step, heatmap (probed at several steps), curves, and the
    gradient norm over training where the run clips or diverged.
    A sweep: profile at step 0 and at the end, curves (and the gradient norm where a run clips or
    diverged), the weight-gradient and back-propagated signal
    ratios (when model.depth varies) and a grid of
    the final accuracy when two numeric keys were swept (with the mean-field 6 xi_c curve when they
    are init.sw2 and model.depth). With `probe=full` tables: per-layer histograms at step 0 for every
    run that has them (and at the last step for a single run), and the Jacobian spectrum at step 0
    and at the last step. Figures whose data is absent are skipped, as are training curves where no
    run trained (train.steps=0); left_out, where given, gets (name, why) for each profile, heatmap (of one
    run) and the curves skipped so (a frozen backbone's run drew its curves alone without a word).
    """
    planned: list[Planned] = []
    skipped = left_out if left_out is not None else []

    def emit(name: str, draw: Callable[..., Any], *args, **kwargs) -> None:
        planned.append(Planned(name, draw, args, kwargs))

    def skip(name: str, why: str) -> None:
        skipped.append((name, why))

    names = set()
    for df in (layers, metrics, runs):
        if _usable(df) and "run" in df.columns:
            names |= set(df["run"].unique().astype(str))
    single = len(names) == 1
    probed = layers[layers["quantity"].isin(DRAWN)] if _usable(layers) else layers  # all that is drawn of it
    if _usable(layers):
        _plan_layers(emit, skip, layers, probed, single)
    elif single and any(_usable(df) for df in (metrics, hists, jacobian)):
        skip("profile-*", "no layer probed (no layers.parquet)")
        skip("heatmap", "no layer probed (no layers.parquet)")
    _plan_curves(emit, skip, metrics, layers)
    if _usable(runs) and not single:
        _plan_sweep(emit, skip, runs, layers, probed)
    _plan_full(emit, hists, jacobian)
    return planned


Emit = Callable[..., None]  # plan's emit(name, draw, *args, **kwargs): a figure of the set
Skip = Callable[[str, str], None]  # plan's skip(name, why): a figure of the usual set the tables cannot make


def _usable(df) -> bool:
    return isinstance(df, pd.DataFrame) and not df.empty


def _plan_layers(emit: Emit, skip: Skip, layers: pd.DataFrame, probed: pd.DataFrame, single: bool) -> None:
    """The profiles of each drawn quantity at step 0 and at the last step, and one run's heatmap."""
    # colour and line style carry two swept keys; a third becomes panels, so no two lines look alike
    facet = _third_key(layers)
    quantities = set(probed["quantity"].unique())
    for q in DRAWN:
        rows = probed[probed["quantity"] == q]
        if rows.empty or rows.groupby("run")["layer"].nunique().max() < 2:
            # e.g. a frozen backbone's weight gradient: its head's alone. A recurrent net's is one point by
            # design (its time steps share the weights), never drawn, so not said each time either
            if not (q == "grad_norm" and is_recurrent(layers)):
                skip(f"profile-{q}", one_point_reason(layers, rows))
            continue
        if (rows["step"] == 0).any():
            _emit_profiles(emit, probed, q, 0, facet)
        else:  # (a Recorder's loop that counts from 1)
            skip(f"profile-{q}-step0", f"step 0 not probed (the first is {int(rows['step'].min())})")
        if (rows["step"] > 0).any():
            _emit_profiles(emit, probed, q, "last", facet)
        else:
            skip(f"profile-{q}-last", f"step {int(rows['step'].max())} alone recorded")
    spread = [q for q in DRAWN if q in quantities
              and probed.loc[probed["quantity"] == q, "layer"].nunique() > 1]
    # a recurrent net's weight gradient is one point: its signal over time instead; a run probed at one step
    # (train.steps=0) has no "over time": one column under a step axis of -0.4 ... 0.4
    if single and spread and probed["step"].nunique() > 1:
        emit(f"heatmap-{spread[0]}", heatmap, probed, quantity=spread[0])
    elif single and not spread:
        skip("heatmap", one_point_reason(layers, probed[probed["quantity"] == DRAWN[0]]))
    elif single:
        skip("heatmap", f"step {int(probed['step'].min())} alone recorded")


def _plan_curves(emit: Emit, skip: Skip, metrics: pd.DataFrame | None, layers: pd.DataFrame | None) -> None:
    """The loss and accuracy curves, and the gradient norm over training where a run clips or diverged."""
    curve_rows = metrics[metrics["metric"].isin(["loss", "acc"])] if _usable(metrics) else metrics
    if _usable(curve_rows) and (curve_rows["step"] > 0).any():  # (train.steps=0: a dot per run is no curve)
        _emit_parts(emit, "curves", curves, metrics)
    elif _usable(curve_rows):
        skip("curves", f"step {int(curve_rows['step'].max())} alone recorded")
    elif _usable(layers):
        skip("curves", "no loss or accuracy logged")
    if _usable(metrics) and _shows_gradnorm(metrics):
        _emit_parts(emit, "gradnorm", gradnorm, metrics)


def _plan_sweep(emit: Emit, skip: Skip, runs: pd.DataFrame, layers: pd.DataFrame | None,
                probed: pd.DataFrame | None) -> None:
    """Several runs' figures over their keys: both ratios against the depth (or a recurrent net's length in
    time), and a grid of the final accuracy over two numeric keys. A ratio whose runs (those with the quantity
    at a first and a last probe point at step 0) are of one depth is skipped, the depth's other values being
    runs with no ratio (a custom model's diverged run of one weight layer, depth 0, beside one of depth 1: the
    figure failed, "model.depth does not vary (values: 1)", and `plot` with it)."""
    runs = with_module_depth(runs, probed)  # (a custom module's depth: its probe points')
    swept = swept_keys(runs)
    recurrent = is_recurrent(runs)
    length = "data.T" if recurrent else "model.depth"
    # unrelated runs get no figure over their keys (a key tied to the length, its learning rate, is none)
    swept_together = is_grid(runs, swept, along=length)
    # both ratios: the weight gradient, and the back-propagated signal (the one that vanishes)
    # the layers' runs alone: an incomplete run is in the runs table, never in the layers it draws from
    layer_runs = runs[runs["run"].isin(set(probed["run"]))] if _usable(layers) else runs
    # along depth; a recurrent net's along its length in time, where its signal alone has a first and a
    # last point (its weight gradient is the head's and the shared weights')
    # a comparison's (the report's): each source a sweep along the length, though together they are no grid
    # (depth x norm beside depth x skip: its key figure, the ratio against depth, was left out)
    along = swept_together or _each_source_a_grid(runs, length)
    if length in swept and along and _usable(layers) and n_distinct(layer_runs[length]) > 1:
        for q, name in (("grad_norm", "ratio-init"), ("signal_norm", "ratio-signal_norm-init")):
            if (probed["quantity"] == q).any() and not (recurrent and q == "grad_norm"):
                if (why := _one_ratio_depth(probed, q, length)) is None:
                    emit(name, ratio, probed, "init", quantity=q)
                else:
                    skip(name, why)
    elif not _usable(layers) and "model.depth" in swept and along and "grad_ratio.init" in runs.columns:
        # the runs table alone
        emit("ratio-init", ratio, runs, "init")
    independent = distinct_keys(runs, swept, along=length)  # (a grid of two keys that change together
    numeric = [k for k in independent if is_numeric_key(runs, k)]  # would be its diagonal)
    value = next((v for v in ("final.test_acc", "final.train_acc")
                  if v in runs.columns and pd.to_numeric(runs[v], errors="coerce").notna().any()), None)
    if len(numeric) >= 2 and value and swept_together:
        pair = ("init.sw2", "model.depth") if {"init.sw2", "model.depth"} <= set(numeric) else tuple(numeric[:2])
        rest = [k for k in independent if k not in pair]
        if len(rest) <= 1:
            facet = rest[0] if rest else None
            name = f"grid-{value}-{pair[0]}-{pair[1]}"
            theory = pair == ("init.sw2", "model.depth")
            emit(name, _grid_with_theory if theory else grid, runs, *pair, value=value, facet=facet)


def _one_ratio_depth(probed: pd.DataFrame, quantity: str, length: str) -> str | None:
    """Why the runs `ratio` draws of `quantity` at init are of one `length` (`depth_key`'s error, as the
    figure would fail), the length's other values being runs without a ratio; None where it varies among them."""
    with_ratio = with_module_depth(first_last(probed, quantity, "init"), probed)
    have = ordered_values(with_ratio[length]) if length in with_ratio.columns else []
    if len(have) > 1:
        return None
    every = with_module_depth(probed.drop_duplicates("run"), probed)
    others = [v for v in ordered_values(every[length]) if v not in have] if length in every.columns else []
    shown = ", ".join(map(fmt, others)) or "none"
    lacking = "fewer than two probe points at step 0, so no ratio"
    if not have:
        return f"no run has a ratio: each has {lacking}"
    return f"the runs with a ratio are all of {length} {fmt(have[0])} (those of {length} {shown} have {lacking})"


def _plan_full(emit: Emit, hists: pd.DataFrame | None, jacobian: pd.DataFrame | None) -> None:
    """probe=full's figures: per-layer histograms at step 0 for every run that has them (and at the last step
    for a single run), and the Jacobian spectrum at step 0 and at the last step."""
    if _usable(hists):
        hist_runs = ordered_values(hists["run"])
        for alike, name in _hist_step0_runs(hists):
            rows = hists[hists["run"].isin(set(alike))]
            suffix = "" if len(hist_runs) == len(alike) else "-" + file_part(name)
            emit(f"hist-step0{suffix}", hist, rows, step=0)
        for run in hist_runs if len(hist_runs) == 1 else []:
            rows = hists[hists["run"] == str(run)]
            if (rows["step"] > 0).any():
                emit("hist-last", hist, rows, step="last")
    if _usable(jacobian) and (jacobian["scope"] == "input_output").any():
        io = jacobian[jacobian["scope"] == "input_output"]
        if (io["step"] == 0).any():
            emit("spectrum-step0", spectrum, io, step=0)
        if (io["step"] > 0).any():
            emit("spectrum-last", spectrum, io, step="last")


def _hist_step0_runs(hists: pd.DataFrame) -> list[tuple[list, str]]:
    """(the runs, its name) per distinct step-0 measurement: a run each, but runs that differ only in keys
    acting on the updates (optim.lr, ...) and counted the same at step 0 (`distributions.hist_init_keys`) are
    one, named after the first without those keys' items (model.activation=relu)."""
    from gradflow.overrides import without_item
    from gradflow.plots.distributions import hist_init_keys
    from gradflow.plots.style import alike_runs

    at0 = hists[hists["step"] == 0]
    inert = hist_init_keys(hists)
    order = {run: i for i, run in enumerate(ordered_values(hists["run"]))}
    groups = sorted(alike_runs(at0, swept_keys(at0), inert), key=lambda runs: order[runs[0]])
    names = []
    for runs in groups:
        name = str(runs[0])
        for key in inert:
            name = without_item(name, key)
        names.append(name)
    if len(set(names)) < len(names):  # (names alike but for those items: each its first run's)
        names = [str(runs[0]) for runs in groups]
    return list(zip(groups, names))


def one_point_reason(layers: pd.DataFrame, rows: pd.DataFrame) -> str:
    """Why a quantity (its `rows`) has no profile: no layer with a value, or one only per run; a layer probed
    without one but with a weight norm is frozen (requires_grad=False: a fine-tuning study's backbone, whose
    gradient cells are masked, as `gradflow run`'s table notes say); one without a weight has none of its own."""
    probed = sorted(layers["layer"].unique())
    if len(probed) == 1:
        return f"one probed layer ({probed[0]}); a profile needs two"
    have = sorted(rows["layer"].unique())
    weights = set(layers.loc[layers["quantity"] == "weight_norm", "layer"])
    graded = set(layers.loc[layers["quantity"] == "grad_norm", "layer"])
    frozen = [layer for layer in probed if layer not in have and layer in weights and layer not in graded]
    why = f"only layer {_layer_list(have)} has a value" if have else "no layer has a value"
    return why + (f" ({_layer_list(frozen)} frozen)" if frozen else "")


def _layer_list(layers: list) -> str:
    """Layer indices as ranges: 0-3, 5, 7-9."""
    parts, start = [], None
    for i, layer in enumerate(layers):
        if start is None:
            start = layer
        if i + 1 == len(layers) or layers[i + 1] != layer + 1:
            parts.append(f"{start}" if start == layer else f"{start}-{layer}")
            start = None
    return ", ".join(parts)


def left_out_lines(left_out: list[tuple[str, str]]) -> list[str]:
    """One line per reason: "profile-*-last, heatmap not drawn: step 0 alone probed", the figures it left out
    named as their files are (profile-* for both quantities' step-0 and last-step profiles)."""
    by_why: dict[str, list[str]] = {}
    for name, why in left_out:
        by_why.setdefault(why, []).append(name)
    lines = []
    for why, names in by_why.items():
        names = list(dict.fromkeys(names))
        for when in ("-step0", "-last", ""):  # both quantities' profiles of one step: profile-*-STEP
            both = [f"profile-{q}{when}" for q in DRAWN]
            if all(n in names for n in both):
                i = names.index(both[0])
                names = [n for n in names if n not in both]
                names.insert(i, f"profile-*{when}")
        if "profile-*-step0" in names and "profile-*-last" in names:
            i = names.index("profile-*-step0")
            names = [n for n in names if n not in ("profile-*-step0", "profile-*-last")]
            names.insert(i, "profile-*")
        lines.append(f"{', '.join(names)} not drawn: {why}")
    return lines


def _shows_gradnorm(metrics: pd.DataFrame) -> bool:
    """Whether the set draws the gradient norm over training: where a run clips or diverged (the figure is
    about exploding gradients and their clipping; elsewhere it would be one more figure to draw and read)
    and some run logged the norm. The diverged run need not have logged it itself: one that diverged before its
    first evaluation window ended is a mark alone, beside the others' lines (it was left out of the set)."""
    logged = metrics[(metrics["split"] == "opt") & (metrics["metric"] == "grad_norm")]
    if logged.empty:
        return False
    status = metrics["status"] if "status" in metrics.columns else pd.Series(dtype=object)
    return bool(clipping(logged).any() or (status == "diverged").any())


def _grid_with_theory(runs: pd.DataFrame, x: str, y: str, **kwargs):
    """The grid with the mean-field 6 xi_c curve when the data allows it (one activation and sb2 per
    panel), else without."""
    try:
        return grid(runs, x, y, theory="6xi_c", **kwargs)
    except GradflowError:
        return grid(runs, x, y, **kwargs)


def render(figures: list[Planned], out: Path, fmt: str, pool: DrawingPool | None = None,
           on_saved: Callable[[Path, int], None] | None = None) -> list[Path]:
    """Draw and save the figures, returning their paths in the order given. With a pool, once its
    processes are up, each takes the next figure from the end of the list as soon as it is done with
    one, while this process draws from the front; neither waits for the other before the last figure.
    A figure that fails with a GradflowError, in either process, leaves the others drawn: FiguresFailed
    then names each with its error, holding the paths of those drawn; if a drawing process dies, this one
    draws what it had."""
    paths: list[Path | None] = [None] * len(figures)
    failed: dict[int, str] = {}
    elsewhere: dict[int, Future] = {}  # figures handed to the pool
    lock = threading.Lock()
    span = [0, len(figures)]  # [front, back): the figures nobody has taken yet

    def feed(_: Future | None = None) -> None:  # in the pool's threads: once up, and after each figure
        with lock:
            if span[0] >= span[1]:
                return
            try:
                f = pool.executor.submit(figures[span[1] - 1].save, out, fmt)
            except (BrokenExecutor, RuntimeError, OSError):  # a process died, or the pool is closing
                return
            span[1] -= 1
            elsewhere[span[1]] = f
        f.add_done_callback(feed)

    def report(i: int, path: Path) -> None:
        paths[i] = path
        if on_saved is not None:
            on_saved(path, len(figures))

    def draw(i: int, result: Callable[[], Path]) -> bool:
        try:
            report(i, result())
            return True
        except GradflowError as e:
            failed[i] = str(e)
            return False

    def collect(wait: bool) -> None:  # never under the lock: the pool's thread takes it to feed
        with lock:
            handed = list(elsewhere.items())
        for i, f in handed:
            if paths[i] is None and i not in failed and (wait or f.done()):
                try:
                    pool.drawn += draw(i, f.result)
                except BrokenExecutor:
                    draw(i, partial(figures[i].save, out, fmt))

    if pool is not None:
        pool.ready.add_done_callback(lambda up: up.exception() or [feed() for _ in range(pool.processes)])
    while True:
        with lock:
            if span[0] >= span[1]:
                break
            span[0] += 1
            i = span[0] - 1
        draw(i, partial(figures[i].save, out, fmt))
        collect(wait=False)
    collect(wait=True)  # nothing is handed over any more: wait for what was
    written = [p for p in paths if p is not None]
    if failed:
        raise FiguresFailed([(figures[i].name, why) for i, why in sorted(failed.items())], written)
    return written


@dataclass
class DrawingPool:
    """Processes that draw figures (`drawing_processes`), forked in the background (forking waits for
    the fork server's imports): `ready` is done when they are up, with an exception if they cannot
    start (this process then draws every figure)."""
    executor: Executor
    processes: int
    drawn: int = 0  # figures its processes drew
    ready: Future | None = None

    def start(self) -> None:
        starter = ThreadPoolExecutor(1, thread_name_prefix="gradflow-drawing-pool")
        self.ready = starter.submit(lambda: [f.result() for f in [self.executor.submit(os.getpid)
                                                                  for _ in range(self.processes)]])
        starter.shutdown(wait=False)  # its one thread ends with that

    def close(self) -> None:
        self.executor.shutdown(cancel_futures=True)


@contextmanager
def drawing_processes(n_runs: int) -> Iterator[DrawingPool | None]:
    """Processes that draw figures beside this one, for a with block (closed at its end however it
    ends): one per further CPU (at most MAX_DRAWING_PROCESSES) when a folder has PARALLEL_RUNS runs
    or more (smaller sets draw faster than a process starts); else None. They are forked from
    gradflow's fork server (`gradflow.workers`), which imports the plotting modules in the background
    while this process reads the tables; so only from gradflow's command line on Linux, whose main
    module is safe to import again. Elsewhere (a user's script, macOS, Windows, a container without
    semaphores) this process draws every figure. A Ctrl-C is taken outside imports only
    (`workers.interrupts_outside_imports`): this process imports while the pool's thread does."""
    from gradflow import workers

    with workers.interrupts_outside_imports():
        pool = _drawing_pool(n_runs)
        try:
            yield pool
        finally:
            if pool is not None:
                pool.close()


def _drawing_pool(n_runs: int) -> DrawingPool | None:
    from gradflow import workers

    processes = min(workers.usable_cores() - 1, MAX_DRAWING_PROCESSES)
    if n_runs < PARALLEL_RUNS or processes < 1:
        return None
    try:
        if not workers.start_fork_server(DRAWING_PRELOAD):
            return None
        pool = DrawingPool(ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("forkserver")),
                           processes)
    except OSError:  # no semaphores or sockets here (a locked-down container): draw in this process
        return None
    pool.start()
    return pool


def _emit_parts(emit: Emit, name: str, draw: Callable[..., Any], metrics: pd.DataFrame) -> None:
    """Plan `name` (curves, gradnorm) of `metrics`: one figure, or where its swept keys are more than colour,
    line style, marker and panels show, one per value of the key left over (`figure_parts`), each with the
    panels of its own runs, `curves-optim.lr=0.1`."""
    from gradflow.plots.kinds import Options, draw_part, figure_parts, part_names

    parts = figure_parts(name, metrics, Options(facet=_third_key(metrics)))
    for (items, part), tail in zip(parts, part_names(parts)):
        if not items:
            emit(name, draw, part, facet=_third_key(part))
        else:
            emit(f"{name}-{tail}", partial(draw_part, draw, items), part, facet=_third_key(part))


def _emit_profiles(emit: Emit, probed: pd.DataFrame, q: str, step: int | str, facet: str | None
                   ) -> None:
    """Plan the profile of `q` at `step`: one figure, or where its swept keys are more than colour, marker and
    panels show, one per value of the key left over (`figure_parts`), `profile-grad_norm-step0-model.width=16`."""
    from gradflow.plots.kinds import Options, draw_part, figure_parts, part_names
    from gradflow.plots.profiles import init_keys

    name = f"profile-{q}-" + ("last" if step == "last" else f"step{step}")
    if step == 0 and (inert := init_keys(probed, q, 0)):  # (panels of optim.lr at step 0 were alike)
        facet = _third_key(probed, drop=inert)
    parts = figure_parts("profile", probed, Options(quantity=q, step=step, facet=facet))
    for (items, part), tail in zip(parts, part_names(parts)):
        if not items:
            emit(name, profile, part, q, step=step, facet=facet)
        elif step == "last" or ((part["quantity"] == q) & (part["step"] == step)).any():
            emit(f"{name}-{tail}", partial(draw_part, profile, items, kind="profile"),
                 part, q, step=step, facet=facet)


def _third_key(df: pd.DataFrame | None, drop: Sequence[str] = ()) -> str | None:
    """With three or more swept keys: the last one with few values (the panels of the standard set); `drop`:
    keys a figure draws as not varying (a profile at step 0's optim.lr: `profiles.init_keys`)."""
    if not isinstance(df, pd.DataFrame) or df.empty:
        return None
    swept = [k for k in swept_keys(df) if k not in drop]
    if len(swept) < 3 or not is_grid(df, swept):  # unrelated runs get one line each, never panels
        return None
    return next((k for k in reversed(swept[1:]) if n_distinct(df[k]) <= MAX_STYLES), None)


def studies(path: str | Path) -> list[Path]:
    """The folders whose standard sets `gradflow plot PATH` draws: PATH itself, unless it is a folder of
    several sweeps (and no sweep, run or reproduction itself, e.g. results/), whose runs' own folders
    are then each drawn alone: one set of unrelated studies together was one line per run (a hundred
    runs' legend left the axes no room) where each study alone gets its colours, styles and panels."""
    from gradflow import store

    path = Path(path)
    if any((path / f).exists() for f in (store.RUN_FILE, store.SWEEP_FILE, store.REPORT_FILE)):
        return [path]
    folders = list(dict.fromkeys(run.parent for run in store.find_runs(path)))
    # (runs in a folder that also holds a sweep, PATH's own say: that folder's set would hold the sweep's
    # runs too, so all go together)
    nested = path in folders or any(a in b.parents for a in folders for b in folders)
    return folders if len(folders) > 1 and not nested else [path]


def standard_sets(folders: list[Path], target: Callable[[Path], Path], fmt: str = "png", include_stale: bool = False,
                  on_saved: Callable[[Path, int], None] | None = None,
                  on_folder: Callable[[Path], None] | None = None, left_out: list[str] | None = None
                  ) -> tuple[list[tuple[Path, list[Path]]], list[str], list[str]]:
    """The standard set of each of `folders` (`studies`) into `target(folder)`: [(folder, its figures)];
    why each folder with nothing to draw was passed over (with one folder only, that is raised); and each
    figure that failed, with its error, the rest of its set drawn. Each line names its folder (where there
    are several). left_out gets a line for each reason figures of a set were not drawn (`left_out_lines`)."""
    drawn, passed_over, failed = [], [], []

    def naming(folder: Path, why: str) -> str:
        return why if str(folder) in why else f"{folder}: {why}"  # (which study it was)

    for folder in folders:
        if on_folder:
            on_folder(folder)
        skipped: list[tuple[str, str]] = []
        try:
            drawn.append((folder, standard_figures(folder, target(folder), fmt, include_stale, on_saved, skipped)))
        except FiguresFailed as e:
            drawn.append((folder, e.written))
            failed += [naming(folder, line) for line in e.lines()]
        except GradflowError as e:
            if len(folders) == 1:
                raise
            passed_over.append(naming(folder, str(e)))
            continue
        if left_out is not None:
            left_out += [line if len(folders) == 1 else naming(folder, line) for line in left_out_lines(skipped)]
    return drawn, passed_over, failed


def standard_figures(path: str | Path, out_dir: str | Path, fmt: str = "png", include_stale: bool = False,
                     on_saved: Callable[[Path, int], None] | None = None,
                     left_out: list[tuple[str, str]] | None = None) -> list[Path]:
    """The standard set for the run or sweep at `path`, from its tables on disk, into out_dir (stale and
    incomplete runs left out unless include_stale); a big sweep's figures are drawn by one process per
    CPU (`drawing_processes`), started before the tables are read so that both happen at once."""
    from gradflow import store
    from gradflow.summary import runs_table

    left_out = [] if left_out is None else left_out
    listed = store.runs(path)  # every run.json read once for all five tables
    if (why := store.nothing_drawn_reason(path, listed, include_stale)):
        raise GradflowError(why)  # (a runs table of failed runs drew each as a NaN cross)
    with drawing_processes(len(listed)) as pool:
        tables = {t: store.load(path, t, include_stale, listed) for t in ("layers", "metrics", "hist", "jacobian")}
        tables["runs"] = runs_table(path, include_stale=include_stale, listed=listed)
        written = standard_set(tables["layers"], tables["metrics"], tables["runs"], out_dir, fmt,
                               hists=tables["hist"], jacobian=tables["jacobian"], pool=pool, on_saved=on_saved,
                               left_out=left_out)
    if not written and left_out:  # (a linear model's one step: it has probed layers and metrics, none to draw)
        raise GradflowError(f"{path}: nothing to draw: {'; '.join(left_out_lines(left_out))}")
    if not written:
        raise GradflowError(f"{path}: nothing to draw (no probed layers and no metrics in its runs)")
    return written
