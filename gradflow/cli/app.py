"""The Typer app every command module registers on; only the CLI layer prints."""

from __future__ import annotations

import typer
from typer.core import TyperOption
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from gradflow.cli.console import console

app = typer.Typer(
    help="gradflow: run, measure, plot and reproduce gradient-flow experiments (vanishing and exploding gradients).",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    add_completion=False,
)


# typer 0.29 prints a type placeholder such as <bool> beside every flag, --help included; a flag takes no value.
# Older typers (>= 0.12, which pyproject allows) have no such method and print no placeholder.
_display_type = getattr(TyperOption, "display_type_rich", None)
if _display_type is not None:
    TyperOption.display_type_rich = lambda self, ctx: None if self.is_flag else _display_type(self, ctx)


def progress_bar(transient: bool = True) -> Progress:
    """A bar on the console; a transient one shows on a terminal only (piped, it would leave a blank line)."""
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=transient,
                    disable=transient and not console.is_terminal)


