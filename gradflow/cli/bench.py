"""`gradflow bench`: what probing costs, measured side by side."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.table import Table

from gradflow.cli.app import app
from gradflow.cli.console import console, user_errors
from gradflow.errors import GradflowError


@app.command()
@user_errors
def bench(
    workload: Annotated[Optional[list[str]], typer.Option(help="mlp | resnet20 | lstm (repeatable; default all).")]
    = None,
    steps: Annotated[int, typer.Option(help="Updates per timed run.")] = 100,
    repeats: Annotated[int, typer.Option(help="Interleaved off/on repetitions; the median is reported.")] = 3,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | mps")] = "auto",
    sweep: Annotated[bool, typer.Option("--sweep", help="Time the sweep machinery instead (200 tiny runs: "
                                        "planning, per job, resume, ls, plot) against its targets.")] = False,
) -> None:
    """Measure what probing costs: steps/s with probes off and at every step, side by side."""
    from gradflow import bench as bench_mod

    if sweep:
        return sweep_machinery()

    for option, value in (("--steps", steps), ("--repeats", repeats)):
        if value < 1:
            raise GradflowError(f"{option} {value} must be at least 1")
    names = workload or list(bench_mod.WORKLOADS)
    for n in names:
        if n not in bench_mod.WORKLOADS:
            raise GradflowError(f"--workload {n!r} is not known; choices: {', '.join(bench_mod.WORKLOADS)}")
    table = Table(title=f"probe overhead ({steps} steps x {repeats}, median)", title_justify="left")
    for col in ("workload", "steps/s probes off", "steps/s probes every step", "slowdown"):
        table.add_column(col, justify="right")
    with console.status("timing ..."):
        results = bench_mod.run(names, steps, repeats, [f"device={device}"])
    for r in results:
        table.add_row(r.workload, f"{r.steps_per_s['off']:.1f}", f"{r.steps_per_s['on']:.1f}", f"{r.slowdown:.2f}x")
    console.print(table)


def sweep_machinery() -> None:
    """`bench --sweep`: each step of the sweep machinery against its target, on 200 tiny runs."""
    import tempfile
    from pathlib import Path

    from gradflow import sweep as sweep_mod
    from gradflow.cli.ls import runs_view
    from gradflow.cli.plots import standard

    views = {"ls": runs_view, "plot": lambda root: standard(root, root / "figures", "png")}
    with tempfile.TemporaryDirectory(prefix="gradflow-bench-") as tmp, console.status("200 tiny runs ..."):
        timings = sweep_mod.time_machinery(Path(tmp), views=views)
    table = Table(title="sweep machinery (200 runs of 1 step)", title_justify="left")
    for col in ("step", "measured", "target", ""):
        table.add_column(col, justify="right")
    for t in timings:
        scale, unit = (1000, "ms") if t.unit != "total" else (1, "s")
        table.add_row(t.step, f"{t.seconds * scale:.3g} {unit} {t.unit}", f"{t.target * scale:g} {unit}",
                      "[green]met[/]" if t.met else "[red]over[/]")
    console.print(table)
