"""The command line: one thin module per command group (parse, call the library, show the result).

`gradflow.cli.app` holds the Typer app; importing a command module registers its commands.
"""

import gc
import os
import signal
import sys
import threading

from gradflow.cli.app import app

# importing a command module registers its commands; this order is the order of `gradflow --help`
from gradflow.cli import run, ls, sweep, clean, reproduce, report, bench, gradcheck, theory, plots  # noqa: E402,F401  isort: skip


def main() -> None:
    code: int | str | None = 1  # (an error Typer did not turn into an exit status)
    try:
        app()
    except SystemExit as e:
        code = e.code
        raise
    finally:
        # Leaving: the interpreter's last garbage collections would walk the millions of objects torch
        # leaves alive (~0.9 s after a run); set them aside, the OS frees the memory anyway.
        gc.freeze()
        leave_on_ctrl_c(0 if code is None else code if isinstance(code, int) else 1)


def leave_on_ctrl_c(status: int) -> None:
    """From here on a Ctrl-C leaves at once with the command's own exit `status`: the command has ended
    (its results written, its last line printed) and the interpreter is shutting down (a joblib pool's
    exit, torch's), where a Ctrl-C printed a KeyboardInterrupt traceback as "Exception ignored", or
    ended the process by SIGINT (status -2, no line) after every run had finished."""
    def leave(signum, frame) -> None:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # (a closed pipe)
                pass
        os._exit(status)

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, leave)


__all__ = ["app", "main"]
