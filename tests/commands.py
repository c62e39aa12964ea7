"""gradflow's commands run in this process as a pipe sees them: the real Typer app under CliRunner (stdout is
not a terminal, so no colour), its consoles at `columns` columns. For tests whose subject is what a command
prints, not its process: a process of its own costs a Python, torch and Hydra import (~0.7 s). The tests
of the installed entry point and of signals keep real processes; `real` runs one for a test of a real pipe."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

from typer.testing import CliRunner

CHECKOUT = Path(__file__).parents[1]


@contextmanager
def terminal_width(columns: int):
    """The CLI's consoles at `columns` columns for the block (they read COLUMNS once, at import)."""
    from gradflow.cli.console import console, err_console

    before = console._width, err_console._width
    console.width = err_console.width = columns
    try:
        yield
    finally:
        console._width, err_console._width = before


def piped(*args, columns: int = 80, code: int | None = 0):
    """`gradflow ARGS | cat` at `columns` columns: the click Result (.stdout, .stderr, .exit_code). `code`:
    the exit code it must end with (None: any), the stderr in the assertion message otherwise."""
    from gradflow.cli import app

    with terminal_width(columns):
        out = CliRunner(env={"COLUMNS": str(columns)}).invoke(app, [str(a) for a in args], catch_exceptions=False)
    assert code is None or out.exit_code == code, out.stderr
    return out


def real(*args, columns: int = 80) -> subprocess.CompletedProcess:
    """`python -m gradflow ARGS | cat` in a process of its own, this checkout's gradflow, at `columns` columns:
    for the properties of a real process and a real pipe."""
    path = os.pathsep.join([str(CHECKOUT), *filter(None, [os.environ.get("PYTHONPATH")])])
    env = {**os.environ, "COLUMNS": str(columns), "PYTHONPATH": path, "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, "-m", "gradflow", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=300)


def real_stdout(*args, columns: int = 80, ok: bool = True) -> str:
    """What `real` prints on stdout, its exit status checked (0, or not 0 where `ok` is False)."""
    out = real(*args, columns=columns)
    assert (out.returncode == 0) == ok, out.stdout + out.stderr
    return out.stdout


def on_a_terminal(*args, columns: int = 80, stderr=None, pythonpath: str | None = None,
                  code: int = 0) -> str:
    """What `python -m gradflow ARGS` writes to a pseudo-terminal of `columns` columns (standard error too,
    unless `stderr` is a file to send it to), its exit status checked against `code`. `pythonpath`: a
    folder put first on the import path (a user's models)."""
    import pty

    main, sub = pty.openpty()
    path = os.pathsep.join(filter(None, [pythonpath, str(CHECKOUT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "COLUMNS": str(columns), "TERM": "xterm", "PYTHONPATH": path, "MPLBACKEND": "Agg"}
    proc = subprocess.Popen([sys.executable, "-m", "gradflow", *map(str, args)], stdin=subprocess.DEVNULL,
                            stdout=sub, stderr=stderr or sub, env=env)
    os.close(sub)
    raw = b""
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:  # (the other end closed: the process is done)
            chunk = b""
        if not chunk:
            break
        raw += chunk
    os.close(main)
    assert proc.wait(timeout=300) == code, raw.decode(errors="replace")[-2000:]
    return raw.decode()


@contextmanager
def unwritable(folder: Path):
    """Nothing can be made in `folder` for the block, as in a read-only share: its mode 0o555 (for root, whose
    writes pass any mode, chattr +i). Skips where neither can be."""
    import pytest

    folder = Path(folder)
    if os.geteuid() != 0:
        mode = folder.stat().st_mode
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(mode)
        return
    with _immutable(folder, pytest):
        yield


@contextmanager
def _immutable(path: Path, pytest):
    """`path` immutable (chattr +i) for the block; skips where it cannot be."""
    made = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True) if shutil.which("chattr") \
        else None
    if made is None or made.returncode != 0:
        pytest.skip(f"cannot make {path} immutable here (chattr: {made.stderr.strip() if made else 'missing'})")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


@contextmanager
def undeletable(path: Path):
    """`path` cannot be deleted for the block, as in a folder shared with others: its folder made read-only
    (for root, whose writes pass any mode, `path` made immutable: chattr +i). Skips where neither can be."""
    import pytest

    path = Path(path)
    if os.geteuid() != 0:
        mode = path.parent.stat().st_mode
        path.parent.chmod(0o555)
        try:
            yield
        finally:
            path.parent.chmod(mode)
        return
    with _immutable(path, pytest):
        yield
