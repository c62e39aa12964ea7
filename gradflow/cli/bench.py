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
) -> None:
    """Measure what probing costs: steps/s with probes off and at every step, side by side."""
    from gradflow import bench as bench_mod

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
