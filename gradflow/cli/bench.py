"""`gradflow bench`: what probing costs, against a bare PyTorch loop of the same model and data."""

from __future__ import annotations

import time
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from gradflow import store
from gradflow.cli.app import app
from gradflow.cli.console import NBSP, console, print_note, print_table, user_errors
from gradflow.errors import GradflowError, did_you_mean


STEPS, ROUNDS = 101, 5  # the defaults of --steps and --rounds


@app.command()
@user_errors
def bench(
    workload: Annotated[Optional[list[str]], typer.Option(
        metavar="NAME", help="reference (a tanh MLP: depth 20, width 256, batch 128), deep (the same at depth "
                             "100) or a family: mlp | cnn | resnet20 | lstm | transformer (repeatable; default: "
                             "every family).")] = None,
    threads: Annotated[Optional[list[int]], typer.Option(
        metavar="N", help="Intra-op CPU threads (repeatable; default 1).")] = None,
    steps: Annotated[int, typer.Option(help="Updates per timed run, at least 12, so that 'every 10' probes a "
                                            "timed step (the first and last are not timed, nor the first 2 of each "
                                            "turn).")] = STEPS,
    rounds: Annotated[int, typer.Option(help="Rounds of every loop, the loops taking turns of a few steps; the "
                                             "median over every round's steps is reported.")] = ROUNDS,
    clock: Annotated[str, typer.Option(help="wall | cpu (process CPU time: for a machine shared with other "
                                                "work)")] = "wall",
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | mps")] = "auto",
    sweep: Annotated[bool, typer.Option("--sweep", help="Time the sweep machinery instead against its targets: "
                                        "200 tiny runs (planning, per job, resume, ls, plot), then 12 MNIST-1D "
                                        "runs (machinery share, joblib's speed-up); a few minutes.")] = False,
) -> None:
    """Time gradflow's loop against a bare PyTorch loop of the same model (probes off, every 10 steps, every step)."""
    from gradflow import bench as bench_mod
    from gradflow.config import MAX_STEPS, MAX_THREADS, resolve_device
    from gradflow.workers import more_than_cores
    from gradflow.probes.core import FUSED_AFTER, load_fused

    if sweep:  # (its workloads are fixed: a --workload was ignored without a word)
        given = [o for o, v in (("--workload", workload), ("--threads", threads), ("--steps", steps != STEPS),
                                ("--rounds", rounds != ROUNDS), ("--clock", clock != "wall"),
                                ("--device", device != "auto")) if v]
        if given:
            raise GradflowError(f"{', '.join(given)} {'does' if len(given) == 1 else 'do'} not apply to --sweep, "
                                "which times a fixed sweep of tiny runs against its targets; give one or the other")
        return sweep_machinery()

    names = workload or bench_mod.FAMILIES
    for n in names:
        if n not in bench_mod.WORKLOADS:
            raise GradflowError(f"--workload {n!r} is not known{did_you_mean(n, list(bench_mod.WORKLOADS))}; "
                                f"choices: {', '.join(bench_mod.WORKLOADS)}")
    if clock not in bench_mod.CLOCKS:
        raise GradflowError(f"--clock {clock!r} is not known{did_you_mean(clock, bench_mod.CLOCKS)}; choices: "
                            f"{', '.join(bench_mod.CLOCKS)}")
    if steps < 12:
        raise GradflowError(f"--steps {steps} is too few: at least 12, so that 'every 10' probes a timed step")
    if steps > MAX_STEPS:  # (checked here, before the kernels load: it said train.steps=..., after 10 s)
        raise GradflowError(f"--steps {steps} is too many: at most {MAX_STEPS:.0e} (train.steps' limit)")
    if rounds < 1:
        raise GradflowError(f"--rounds {rounds} is too few: at least 1")
    if clock == "cpu" and threads and max(threads) > 1:  # (a step read 1000 ms of CPU against 15 of wall: 746x)
        raise GradflowError(f"--clock cpu with --threads {max(threads)}: the process's CPU time counts every "
                            "thread's, torch's threads spinning while they wait too, so its ratios mean nothing; "
                            "give --clock cpu with --threads 1, or the wall clock on an idle machine")
    for option, values in (("--workload", names), ("--threads", threads or [])):  # (timed twice, a column each)
        if (twice := next((v for i, v in enumerate(values) if v in values[:i]), None)) is not None:
            raise GradflowError(f"{option} {twice} is given twice; give each once")
    threads = threads or [1]
    if min(threads) < 1:  # (a run's threads=0 means torch's default; here each count is one to time)
        raise GradflowError(f"--threads {min(threads)} is not allowed: give intra-op thread counts of 1 or more")
    if max(threads) > MAX_THREADS:  # (torch.set_num_threads's int: it failed with a traceback, "Overflow")
        raise GradflowError(f"--threads {max(threads)} is too many: at most {MAX_THREADS}")
    for n in threads:  # (as `gradflow run threads=64` warns: a 2-core machine's bare step was 20x slower)
        if too_many := more_than_cores(n, f"--threads {n}"):
            print_note(f"warning: {too_many}")
    if resolve_device(device, "--device").type == "cpu":  # (elsewhere the probes always batch)
        with console.status("loading the probes' fused CPU kernels ..."):
            loaded = time.perf_counter()
            load_fused()
            loaded = time.perf_counter() - loaded
        console.print(f"fused CPU kernels loaded in {loaded:.2f} s (once per process: gradflow's loops here "
                      f"time a long run, which loads them once it probes {FUSED_AFTER}+ steps)", highlight=False)
    results = []
    for name in names:  # a line per workload as it finishes: a run cut short keeps what it measured
        with console.status(f"timing {name} ..."):
            done = bench_mod.run([name], threads, steps, rounds, [f"device={device}"], clock)
        for r in done:
            # (its spread as the table gives it: "(rounds 1.64)", the rounds' median, read as the rounds' value)
            ratios = ", ".join(f"{loop} {_ratio(r, loop)}".replace(" ", NBSP)  # (a loop's words on one line)
                               for loop in bench_mod.LOOPS if loop != "bare")
            print_note(f"{name}, {r.threads} thr: bare {r.median_ms('bare'):.2f} ms/step; {ratios}")
        results += done
    rounds_of = f"{rounds} rounds" if rounds > 1 else "1 round"
    turns = (f"the loops taking turns of {bench_mod.TURN} (each turn's first {bench_mod.WARM} steps untimed)"
             if steps + 1 > bench_mod.TURN  # (a run: steps 0..steps)
             else f"each loop run whole in one turn (its first {bench_mod.WARM} steps untimed)")
    note = (f"{clock} ms/step, medians over {rounds_of} of {steps} steps, {turns}; ratio to bare"
            + (" (the rounds' own ratios: min-max)" if rounds > 1 else ""))
    loop_tables = [name for name in ("reference", "deep") if any(r.workload == name for r in results)]
    for name in loop_tables:
        print_table(_loop_table([r for r in results if r.workload == name], f"{name} workload: {note}"))
    families = [r for r in results if r.workload not in ("reference", "deep")]
    for n in dict.fromkeys(r.threads for r in families):
        print_table(_family_table([r for r in families if r.threads == n], f"model families, {n} thr: {note}"))
    for loop, text in bench_mod.LOOP_TITLES.items():  # the rows' short names, spelled out once, under the tables
        console.print(f"  {loop}: {text}", highlight=False)
    if resolve_device(device, "--device").type == "cpu":
        print_note(bench_mod.STEP_NOTE)
    if clock == "wall":
        for line in bench_mod.busy_cores(results):
            print_note(f"warning: {line}")
    for line in bench_mod.outside_rounds(results) + bench_mod.subset_above(results):
        print_note(f"warning: {line}")
    if rounds < 3:  # (on a shared machine one slow spell moves a round's ratio by 0.1 or more)
        print_note(f"note: {rounds_of} only: its ratios move by 0.1 or more between runs on a busy machine; "
                   "--rounds 5 or more for numbers to compare")


def _ratio(r, loop: str, two_lines: bool = False) -> str:
    """The ratio, and the min-max of the rounds' own ratios where there are several rounds."""
    if len(r.ms[loop]) < 2 or loop == "bare":  # (the bare loop's own: 1 in every round)
        return f"{r.ratio(loop):.2f}"
    lo, hi = r.spread(loop)
    return f"{r.ratio(loop):.2f}\n{lo:.2f}-{hi:.2f}" if two_lines else f"{r.ratio(loop):.2f} ({lo:.2f}-{hi:.2f})"


def _loop_table(rows, title: str) -> Table:
    """One row per loop, a ms/step and a ratio column per thread count (the reference table)."""
    from gradflow.bench import LOOPS

    # each spread under its ratio where they would not fit beside it (three thread counts at 80 columns, or two at
    # 60, were cut: "(1.00-1…"), the headers then on two lines
    two_lines = 15 + 33 * len(rows) > console.width
    table = Table(title=title, title_justify="left")
    table.add_column("loop")
    for r in rows:
        table.add_column(f"{r.threads} thr:{chr(10) if two_lines else ' '}ms", justify="right")
        table.add_column("ratio", justify="right", min_width=9 if two_lines else None)
    for loop in LOOPS:
        table.add_row(loop, *[c for r in rows for c in (f"{r.median_ms(loop):.2f}", _ratio(r, loop, two_lines))])
    return table


def _family_table(rows, title: str) -> Table:
    """A column per family (at one thread count), a row per loop: the bare loop's ms/step, then each loop's
    ratio with its spread below it (a column per loop would not fit 80 columns)."""
    from gradflow.bench import LOOPS

    table = Table(title=title, title_justify="left")
    table.add_column("loop", no_wrap=True)
    for r in rows:  # (a spread whole, "1.05-1.07": it was cut, "1.05-…")
        table.add_column(r.workload + (" (Adam)" if r.workload == "transformer" else ""), justify="right",
                         min_width=9)
    table.add_row("bare: ms", *[f"{r.median_ms('bare'):.2f}" for r in rows])
    for loop in LOOPS:
        if loop != "bare":
            table.add_row(loop, *[_ratio(r, loop, two_lines=True) for r in rows])
    return table


def sweep_machinery() -> None:
    """`bench --sweep`: each step of the sweep machinery against its target, on 200 tiny runs, then the
    machinery's share and joblib's speed-up on 12 MNIST-1D runs."""
    import tempfile
    from pathlib import Path

    from gradflow import benchsweep
    from gradflow import sweep as sweep_mod
    from gradflow.query import runs_view
    from gradflow.plots.standard import standard_figures

    def listed(root: Path) -> None:  # what `gradflow ls` does: the table read, then drawn (into a capture)
        from gradflow.cli.ls import show_runs

        df, swept = runs_view(root)
        with console.capture():
            show_runs(df, swept, title=str(root))

    views = {"ls": listed, "plot": lambda root: standard_figures(root, store.figures_dir(root), "png")}
    parallel = benchsweep.JOBLIB
    try:
        sweep_mod.check_launcher("joblib")
    except GradflowError as e:
        console.print(escape(f"{e}; the joblib row is left out"), style="yellow", soft_wrap=True)
        parallel = None
    with tempfile.TemporaryDirectory(prefix="gradflow-bench-") as tmp:
        with console.status("200 tiny runs ..."):
            timings = benchsweep.time_machinery(Path(tmp), views=views)
        with console.status("12 MNIST-1D runs" + (", then `gradflow sweep` of them with the basic launcher and with "
                                                  "joblib (2 workers), 3 rounds ..." if parallel else " ...")):
            timings += benchsweep.time_launchers(Path(tmp), parallel=parallel)
    title = "sweep machinery: 200 runs of 1 step, then 12 MNIST-1D runs"
    table = Table(title=title)
    for col in ("step", "measured", "target", ""):
        table.add_column(col, justify="right")
    for t in timings:
        at = ">= " if t.unit == benchsweep.SPEEDUP else "<= "
        spread = f" ({t.spread[0]:.2f}-{t.spread[1]:.2f})" if t.spread else ""
        table.add_row(t.step, _measured(t.value, t.unit) + spread, at + _measured(t.target, t.unit, named=False),
                      "[green]met[/]" if t.met else "[red]over[/]" if t.unit != benchsweep.SPEEDUP else "[red]under[/]")
    print_table(table)


def _measured(value: float, unit: str, named: bool = True) -> str:
    """A timing in its unit: "1.2 ms per job", "4.5 s total", "6.1% of training", "1.71x faster"."""
    from gradflow.benchsweep import SPEEDUP

    if unit == SPEEDUP:
        text, name = f"{value:.2f}x", "faster"
    elif unit == "of training":
        text, name = f"{100 * value:.3g}%", unit
    else:
        scale, seconds = (1, "s") if unit == "total" else (1000, "ms")
        text, name = f"{value * scale:.3g} {seconds}", unit
    return f"{text} {name}" if named else text
