"""The command line: one thin module per command group (parse, call the library, show the result).

`gradflow.cli.app` holds the Typer app; importing a command module registers its commands.
"""

import gc

from gradflow.cli.app import app

# importing a command module registers its commands; this order is the order of `gradflow --help`
from gradflow.cli import run, ls, sweep, clean, reproduce, report, bench, gradcheck, theory, plots  # noqa: E402,F401  isort: skip


def main() -> None:
    try:
        app()
    finally:
        # Leaving: the interpreter's last garbage collections would walk the millions of objects torch
        # leaves alive (~0.9 s after a run); set them aside, the OS frees the memory anyway.
        gc.freeze()


__all__ = ["app", "main"]
