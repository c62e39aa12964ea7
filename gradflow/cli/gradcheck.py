"""`gradflow gradcheck`: backprop gradients against central finite differences, and what each costs."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.table import Table

from gradflow.cli.app import app
from gradflow.fmt import fmt
from gradflow.cli.console import console, user_errors


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@user_errors
def gradcheck(
    overrides: Annotated[Optional[list[str]], typer.Argument(
        help="Config overrides, as for `gradflow run`: model=resnet20 data=mnist1d ...", show_default=False)] = None,
    entries: Annotated[int, typer.Option(min=1, help="Random entries checked per parameter tensor.")] = 8,
    batch: Annotated[int, typer.Option(min=1, help="Training examples in the loss.")] = 8,
    eps: Annotated[float, typer.Option(help="Central-difference step (float64).")] = 1e-6,
) -> None:
    """Check backprop (gradcheck.mode=forward: forward-mode AD) against float64 central differences, and time both."""
    from gradflow.config import compose
    from gradflow.gradcheck import gradcheck as check

    with console.status("finite differences ..."):
        r = check(compose(list(overrides or [])), entries=entries, batch=batch, eps=eps)
    method = "backprop" if r.mode == "reverse" else "forward mode"
    table = Table(title=f"{method} vs central differences (float64, eps {eps:g}, batch {batch})",
                  title_justify="left")
    for col, justify in (("parameter", "left"), ("entries", "right"), ("checked", "right"),
                         ("max rel err", "right"), ("median rel err", "right")):
        table.add_column(col, justify=justify, overflow="fold")
    for p in r.params:
        table.add_row(p.name, str(p.size), str(p.checked), fmt(p.max_rel, 3), fmt(p.median_rel, 3))
    console.print(table)
    console.print(f"max relative error {fmt(r.max_rel, 3)} over {sum(p.checked for p in r.params)} entries of "
                  f"{r.n_params} parameters", highlight=False)
    how = "" if r.mode == "reverse" else " (one JVP per entry, projected)"
    console.print(f"{method}: {fmt(r.grad_s, 3)} s for the full gradient{how}; finite differences: "
                  f"{fmt(r.fd_entry_s, 3)} s per entry, {fmt(r.fd_full_s, 3)} s projected for all "
                  f"{r.n_params}: {fmt(r.cost_ratio, 3)}x the cost", highlight=False)
