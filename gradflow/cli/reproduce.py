"""`gradflow reproduce`: rerun a published experiment and check its claims."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from gradflow.cli.app import app
from gradflow.cli.console import console, user_errors
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
    from gradflow import reproduce as rep

    if list_ or not name:
        table = Table(title="reproducible experiments", title_justify="left", expand=True, show_lines=True)
        for col, ratio in (("name", None), ("paper", 3), ("claim", 4), ("runtime (default scale)", 2)):
            table.add_column(col, overflow="fold", ratio=ratio, no_wrap=ratio is None)
        for n in rep.names():
            spec = rep.Spec.load(n)
            table.add_row(*map(escape, (n, spec.paper, spec.summary, spec.runtime)))
        console.print(table)
        return
    scale = "quick" if quick else scale
    failed = False
    for n in rep.names() if name == "all" else [name]:
        console.rule(f"[bold]{n}[/]: {rep.Spec.load(n).paper}")
        outcome = rep.run(n, scale, list(overrides or []), force, launch=lambda p: run_plan(p, table=False))
        console.print(claims_table(f"{n}: claims", outcome.claims))
        for texts, note in rep.tolerance_notes(outcome.claims):
            console.print(f"tolerance, {'; '.join(texts)}: {note}", style="dim", highlight=False, markup=False)
        console.print(f"report: {outcome.report}")
        for f in outcome.figures:
            console.print(f"figure: {f}")
        report_page([outcome.report.parent], report_)
        failed |= not outcome.passed
    if failed:
        raise typer.Exit(1)


WIDE = 120  # columns from which every claim field gets its own column


def claims_table(title: str, claims) -> Table:
    """The claims, one row each. Narrower than WIDE, the reference and the source are lines under the
    claim's text, so that six columns are not each cut to a word per line at 80 columns."""
    from gradflow import reproduce as rep

    wide = console.width >= WIDE
    columns = rep.CLAIM_COLUMNS if wide else ("claim", "measured", "test", "result")
    table = Table(title=title, title_justify="left", expand=not wide, show_lines=not wide)
    ratios = {} if wide else {"claim": 3, "measured": 2, "test": 1}  # the claim's text gets the room
    for col in columns:
        table.add_column(col, overflow="fold", ratio=ratios.get(col))
    for r in claims:
        # spec text is not markup: "exp(E[log R] / 2)" must print as written
        cells = {c: escape(v) for c, v in rep.claim_cells(r, source_width=60).items()}  # REPORT.md: the whole reference
        cells["measured"] = cells["measured"].replace(" (", "\n(", 1)
        cells["result"] = f"[{'green' if r.passed else 'red'}]{cells['result']}[/]"
        if not wide:
            cells["claim"] += f"\n[dim]reference: {cells['reference']}\nsource: {cells['source']}[/]"
        table.add_row(*(cells[c] for c in columns))
    return table
