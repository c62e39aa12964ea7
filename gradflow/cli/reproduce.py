"""`gradflow reproduce`: rerun a published experiment and check its claims."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.table import Table

from gradflow.cli.app import app
from gradflow.cli.console import console, user_errors
from gradflow.errors import GradflowError
from gradflow.cli.sweep import report_page, run_plan


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@user_errors
def reproduce(
    name: Annotated[Optional[str], typer.Argument(help="An experiment (see --list), or `all`.", show_default=False)] = None,
    overrides: Annotated[Optional[list[str]], typer.Argument(
        help="Overrides for every arm, e.g. hydra/launcher=joblib hydra.launcher.n_jobs=2 or data.root=/data/cifar10.",
        show_default=False)] = None,
    list_: Annotated[bool, typer.Option("--list", help="List the experiments.")] = False,
    quick: Annotated[bool, typer.Option("--quick", help="The smallest honest size (same as --scale quick).")] = False,
    scale: Annotated[str, typer.Option(help="quick | default (CPU-sized) | paper (the paper's scale, for a GPU).")]
    = "default",
    force: Annotated[bool, typer.Option("--force", help="Rerun runs that already finished.")] = False,
    report_: Annotated[bool, typer.Option("--report", help="Write the HTML report page (gradflow report).")] = False,
) -> None:
    """Rerun a published depth experiment, draw its figure, and check the paper's claims (PASS/FAIL)."""
    import time

    from gradflow import reproduce as rep
    from gradflow import sweep as sweep_mod

    if list_ or not name:
        table = Table(title="reproducible experiments", title_justify="left")
        for col in ("name", "paper", "claim", "CPU runtime (default scale)"):
            table.add_column(col, overflow="fold")
        for n in rep.names():
            spec = rep.Spec.load(n)
            table.add_row(n, spec.paper, spec.summary, spec.runtime)
        console.print(table)
        return
    scale = "quick" if quick else scale
    if scale not in rep.SCALES:
        raise GradflowError(f"--scale {scale!r} is not allowed; choices: {', '.join(rep.SCALES)}")
    user = list(overrides or [])
    results_root = next((o.split("=", 1)[1] for o in user if o.startswith("results=")), "results")
    failed = False
    for n in rep.names() if name == "all" else [name]:
        spec = rep.Spec.load(n)
        root = rep.root_for(n, scale, results_root)
        console.rule(f"[bold]{n}[/]: {spec.paper}")
        start = time.perf_counter()
        used, jobs = {}, {}
        for arm in spec.arms:
            used[arm] = spec.overrides(arm, scale, user)
            p = sweep_mod.plan(used[arm], f"{root.relative_to(results_root).as_posix()}/{arm}", force)
            run_plan(p, table=False)
            jobs[arm] = [j.name for j in p.jobs]
        results = rep.check(spec, root, jobs)
        figures = rep.draw(spec, root, jobs)
        report = rep.write_report(spec, root, scale, results, figures, used, time.perf_counter() - start)
        table = Table(title=f"{n}: claims", title_justify="left")
        for col in ("claim", "paper", "measured", "test", "result"):
            table.add_column(col, overflow="fold")
        for r in results:
            spread = r.measured.spread()
            verdict = "[green]PASS[/]" if r.passed else "[red]FAIL[/]"
            table.add_row(r.text, r.paper, rep.fmt_number(r.measured.value) + (f"\n{spread}" if spread else ""), r.test,
                          verdict + (" (qualitative)" if r.qualitative else ""))
        console.print(table)
        console.print(f"report: {report}")
        for f in figures:
            console.print(f"figure: {f}")
        report_page([root], report_)
        failed |= not all(r.passed for r in results)
    if failed:
        raise typer.Exit(1)
