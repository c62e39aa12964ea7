"""`gradflow sweep`: a grid of runs through Hydra multirun."""

from __future__ import annotations

from typing import Annotated, Optional

import pandas as pd
import typer

from gradflow.cli.app import app
from gradflow.cli.console import console, user_errors
from gradflow.cli.app import progress_bar
from gradflow.cli.ls import runs_view, show_runs


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@user_errors
def sweep(
    overrides: Annotated[Optional[list[str]], typer.Argument(
        help="Hydra multirun overrides: model.depth=5,10,20 init=xavier_normal,kaiming_normal seed=range(3) "
             "hydra/launcher=joblib ...", show_default=False)] = None,
    name: Annotated[Optional[str], typer.Option("--name", help="Results go to results/NAME/.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Rerun runs that already finished.")] = False,
    report: Annotated[bool, typer.Option("--report", help="Write the HTML report page (gradflow report).")] = False,
) -> None:
    """Run a grid of runs with Hydra multirun (any launcher); rerunning resumes where it stopped."""
    from gradflow import sweep as sweep_mod

    p = sweep_mod.plan(list(overrides or []), name, force)
    df = run_plan(p)
    report_page([p.root], report)
    if (df["status"] == "failed").any():
        raise typer.Exit(1)


def report_page(paths: list, write: bool) -> None:
    """Write the study's HTML page, or say where `--report` would write it."""
    from gradflow import report as report_mod

    if write:
        with console.status("writing the report page"):
            console.print(f"report: {report_mod.write(paths)}", highlight=False)
    else:
        console.print(f"report page (--report writes it): {report_mod.page_path(paths)}", highlight=False)


def run_plan(p, table: bool = True) -> pd.DataFrame:
    """Launch a planned sweep with a progress display, then show (or count) and return its runs table."""
    from gradflow import sweep as sweep_mod

    skipped = len(p.jobs) - len(p.to_run)
    console.print(f"sweep [bold]{p.root}[/]: {len(p.jobs)} runs over {', '.join(p.swept) or 'no swept key'}"
                  f" with the {p.launcher} launcher" + (f"; {skipped} already finished, skipped" if skipped else ""))
    with progress_bar(transient=False) as progress:
        runs = progress.add_task("runs", total=len(p.to_run))
        current = progress.add_task("current run", total=None, visible=p.launcher == "basic" and bool(p.to_run))

        def on_step(job: str, t: int, n: int) -> None:
            progress.update(current, description=job[:48], completed=t + 1, total=n + 1)

        watcher = sweep_mod.Watcher(p, lambda done: progress.update(runs, completed=done))
        watcher.start()
        try:
            sweep_mod.launch(p, on_step)
        finally:
            watcher.stop.set()
            progress.update(runs, completed=watcher.count())
            progress.update(current, visible=False)
    df, swept = runs_view(p.root)
    df = df[df["run"].isin([j.name for j in p.jobs])]
    if table:
        show_runs(df, p.swept or swept, title=str(p.root), skipped=skipped)
    else:
        counts = df["status"].value_counts().to_dict()
        console.print("  ".join(f"{k}: {counts.get(k, 0)}" for k in ("ok", "diverged", "failed")) + f"  skipped: {skipped}")
    return df
