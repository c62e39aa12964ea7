"""The one rich Console the CLI prints through, and the one place user errors become red lines."""

from __future__ import annotations

import functools
import os
import re
import signal
import sys
import warnings
from pathlib import Path
from typing import Callable, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from gradflow.errors import (CANNOT_WRITE, GradflowError, UsageError, cannot_write, did_you_mean, file_in,
                             given_path, shorten)

class OutputClosed(KeyboardInterrupt):
    """Standard output was closed by its reader (`gradflow ls | head -3`): an interruption, as SIGPIPE is a
    shell's (the run in flight is recorded `interrupted` with its tables), said by a command that wrote
    results as its Ctrl-C is, and by one that only prints by nothing but its exit status, 141."""


class _Console(Console):
    closed = False  # whether standard output's reader has left (the interruption turned into others on its way)
    lives = 0  # live displays (progress bars) drawn now

    def set_live(self, live):
        shown = super().set_live(live)
        self.lives += 1
        return shown

    def clear_live(self) -> None:
        super().clear_live()
        self.lives -= 1

    def on_broken_pipe(self) -> None:
        # (rich's own raised SystemExit(1) from inside the training loop's progress line: the run was left
        # `running`, without its tables, and nothing said why)
        devnull = os.open(os.devnull, os.O_WRONLY)  # what is printed from here on goes nowhere
        os.dup2(devnull, sys.stdout.fileno())
        _Console.closed = True
        raise OutputClosed


console = _Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable)


def folder(text: str, command: str) -> Path:
    """A folder argument as given: an empty one is refused (Path("") is the current folder, so
    `gradflow COMMAND "$UNSET"` worked on whatever folder the shell was in)."""
    return given_path(text, f"gradflow {command} results/my-sweep, or . for this folder")


def out_path(text: str | None, option: str = "--out") -> Path | None:
    """An --out option as given: absent is None, empty is refused (it wrote the figures into the current folder)."""
    if text is None:
        return None
    if not text.strip():
        raise GradflowError(f"{option} is empty (an unset variable?); give a folder or a figure file, e.g. "
                            f"{option} figures/, or drop it for the default")
    return Path(text)


def user_errors(fn: F) -> F:
    """Turn a GradflowError raised inside a command into one red line and exit code 1, and a Ctrl-C that
    no command took itself (drawing figures, checking claims) into the line `interrupted` and exit 130
    (Typer's own exit 130 says nothing, which reads like a crash or a hang cut short). A file the machine
    would not take (a full disk: errors.CANNOT_WRITE) is such a line too: a sweep's own files, a figure,
    a table written with --out were Python's traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            try:
                with warnings.catch_warnings():
                    warnings.showwarning = _warning_line
                    return fn(*args, **kwargs)
            except OSError as e:
                if e.errno not in CANNOT_WRITE:
                    raise
                raise cannot_write(file_in(e.filename) if e.filename else "a file", e) from e
        except GradflowError as e:
            err_console.print(f"[bold red]error:[/] {escape(_short_words(str(e)))}", highlight=False, soft_wrap=True)
            raise typer.Exit(getattr(e, "exit_code", 1)) from None
        except OutputClosed:
            raise typer.Exit(PIPE_CLOSED_EXIT) from None
        except KeyboardInterrupt:
            err_console.print("interrupted", highlight=False)
            raise typer.Exit(INTERRUPTED_EXIT) from None

    return wrapper  # type: ignore[return-value]


def _warning_line(message, category, filename, lineno, file=None, line=None) -> None:
    """A UserWarning raised inside a command (gradflow's: a layer not probed, tied weights) as one yellow
    line, `warning: ...`, as errors are one red line: Python's own form named the file and line of the
    code that called the command (typer's) and printed that line of code after it. Others keep that form."""
    if category is UserWarning:
        # over a progress bar on a terminal, the line goes above the bar, as the bar's own console prints
        # it (on standard error it was glued to the bar's line: rich's proxy lets a console's writes pass);
        # standard error sent elsewhere (2>log) keeps it
        to = console if console.lives and console.is_terminal and err_console.is_terminal else err_console
        to.print(f"[yellow]warning:[/] {escape(str(message))}", highlight=False, soft_wrap=True)
    else:
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def _short_words(message: str, limit: int = 100) -> str:
    """The message on one line, each over-long word (a pasted value) shortened around an ellipsis; the
    path of an existing file stays whole, it is what the user must find (also as a key's value:
    results=PATH)."""
    def existing(word: str) -> bool:
        try:
            return any(os.path.exists(w.strip("`'\",;:()")) for w in (word, word.partition("=")[2]) if w)
        except (OSError, ValueError):
            return False

    return " ".join(w if len(w) <= limit or existing(w) else shorten(w, limit) for w in message.split())


NBSP = "\u00a0"  # a space print_note never breaks a line at (it prints as a plain space)


def labels(items) -> str:
    """Labels as a comma-separated list for print_note, whose lines break between labels only."""
    return ", ".join(str(item).replace(" ", NBSP) for item in items)


def said_changes(changes: list[tuple], most: int = 4, whole: bool = False) -> str:
    """`key old → new, ...` for the first `most` of `changes` ((key, old, new) each), `and N more` beyond;
    `whole`: each change kept on one line by print_note (NBSP for its spaces), where it fits one with the
    punctuation around it (a long value's change breaks at its spaces: kept whole, it ran past the width)."""
    from gradflow.fmt import fmt

    said = [f"{k} {fmt(a)} → {fmt(b)}" for k, a, b in changes[:most]]
    said = [s.replace(" ", NBSP) if whole and len(s) + 2 <= console.width else s for s in said]
    return ", ".join(said) + (f" and {len(changes) - most} more" if len(changes) > most else "")


def print_note(text: str, width: int | None = None, style: str | None = None, to: Console | None = None) -> None:
    """A note under a table, its lines broken at spaces only (not at NBSP, which keeps a label such as
    "chi1 fit" whole) to the console's width, with no trailing spaces; a word longer than a line keeps
    a line of its own. `to`: the console it goes to (err_console for a note beside stdout's results)."""
    to = to or console
    width = width or to.width
    # a command to copy (`gradflow sweep ...`) is never broken: copied across a break, the shell ran its
    # first line on its own, another sweep; longer than a line, it takes a line of its own (the terminal
    # folds it, a copy of it is one line)
    text = re.sub(r"`gradflow [^`]*`", lambda m: m.group(0).replace(" ", NBSP), text)
    lines: list[str] = []
    for word in text.split(" "):
        if lines and len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    for line in lines:  # (a double space that fell at a break leaves no space at either end)
        to.print(escape(line.strip(" ").replace(NBSP, " ")), highlight=False, soft_wrap=True, style=style)


def formulas_whole(text: str) -> str:
    """`text` with its formulas' spaces as NBSP, so that print_note keeps each on one line: `a = b` (`ξ_c = ∞`
    ran onto two lines) and `ln N` ("chance is ln" / "10 = 2.303")."""
    return re.sub(r"\bln (?=\d)", f"ln{NBSP}", text.replace(" = ", f"{NBSP}={NBSP}"))


def print_table(table) -> None:
    """A rich Table, its title printed as a note above it: rich pads a title to the table's width, which
    leaves trailing spaces on the line when piped and breaks a long title mid-phrase."""
    if table.title:
        print_note(str(table.title))
        table.title = None
    console.print(table)


INTERRUPTED_EXIT = 130  # 128 + SIGINT, as a shell reports a Ctrl-C'd command
PIPE_CLOSED_EXIT = 141  # 128 + SIGPIPE, as a shell reports a command whose reader left (`git log | head`)


def interruption() -> tuple[str, int]:
    """How an interruption is said, and its exit status: `interrupted`, 130 after a Ctrl-C (or SIGTERM);
    `interrupted (standard output closed)`, 141 where the output's reader left (`OutputClosed`)."""
    if _Console.closed:
        return "interrupted (standard output closed)", PIPE_CLOSED_EXIT
    return "interrupted", INTERRUPTED_EXIT


def leave_interrupted(message: str) -> None:
    """After Ctrl-C: one line on stderr, then exit 130 at once (141 where standard output was closed:
    `OutputClosed`, said in the line). A second Ctrl-C while saying it leaves
    at once too. The exit skips interpreter shutdown, where a late signal would otherwise end the
    process as killed by SIGINT instead of with its exit code; locks are the OS's and go with it.
    Of that shutdown, only multiprocessing's finalizers of priority 0 and up run first: they unlink
    the semaphores a joblib sweep made for its workers, which multiprocessing's resource tracker
    would otherwise find and warn about as "leaked" on the terminal. Those that join a queue's thread
    (negative priorities) are left out; a Pool's or a Manager's would wait, and gradflow makes neither.
    joblib's pool deletes its memory-map folder in an exit handler of its own: that runs here too
    (`workers.drop_pool_folders`), or the folder stays in /dev/shm and loky's tracker warns of it; and
    multiprocessing's own temporary folder goes too (`workers.exit_now`)."""
    from multiprocessing import util

    from gradflow.workers import exit_now

    word, code = interruption()
    message = message.replace("interrupted", word, 1)
    signal.signal(signal.SIGINT, lambda *_: exit_now(code))
    util._run_finalizers(0)  # noqa: SLF001  (the first step of multiprocessing's own exit handler)
    if "joblib" in sys.modules:  # (a joblib sweep's pool: its memory-map folder, as its exit handler would)
        from gradflow.workers import drop_pool_folders

        drop_pool_folders()
    err_console.print(message, highlight=False, soft_wrap=True)
    sys.stdout.flush()
    sys.stderr.flush()
    exit_now(code)


def note_replaced(overrides: list[str] | None) -> None:
    """A note for each override that replaces an earlier one of its key (`seed=0,1 seed=2`: Hydra keeps the
    last without a word)."""
    from gradflow.overrides import replaced

    for note in replaced(list(overrides or [])):
        print_note(f"note: {note}", style="yellow")


def _options(ctx) -> list[str]:
    """The command's long options, --help among them (a mistyped --hlep is named too)."""
    return [*(opt for p in ctx.command.params for opt in p.opts if opt.startswith("--")), "--help"]


def near_options(ctx: typer.Context, overrides: list[str] | None) -> None:
    """A mistyped option (Typer hands it on with the overrides, `--nmae x`): one line naming the option it
    is nearest to. Anything else that starts with "-" is left to the overrides' own check."""
    for o in overrides or []:
        option = o.split("=", 1)[0]
        if o.startswith("--") and (did_you_mean(option, _options(ctx)) or _other_command(option, ctx)):
            raise UsageError(unknown_option(option, ctx))


# commands whose options another of the same kind is given by mistake: the launching ones take sweep's and
# reproduce's alone (`run --steps 3` is train.steps=3, not bench's --steps), the reading ones each other's
SIBLINGS = {"run": ("sweep", "reproduce"), "sweep": ("reproduce",), "reproduce": ("sweep",),
            **{c: ("ls", "plot", "compare", "report", "clean") for c in ("ls", "plot", "compare", "report", "clean")}}


def _other_command(option: str, ctx) -> str | None:
    """The sibling command that has `option` (`gradflow sweep` for run's --points, which was taken for
    probe.points by its last part; `gradflow plot` for ls's --kind), unless it names a config key whole (--name,
    --seed: name=x, seed=1 is the advice)."""
    from gradflow.config import GROUPS, known_keys

    if option.lstrip("-").replace("-", "_") in (*GROUPS, *known_keys()) or ctx.parent is None:
        return None
    commands = getattr(ctx.find_root().command, "commands", {})
    return next((f"gradflow {name}" for name in SIBLINGS.get(ctx.info_name, ()) if name != ctx.info_name
                 and name in commands and any(option in p.opts for p in commands[name].params)), None)


def unknown_option(option: str, ctx) -> str:
    """One line for an option the command does not have: the command that has it, else the nearest it has, else
    all of them."""
    options = _options(ctx)
    other = _other_command(option, ctx)
    said = did_you_mean(option, options) or (f"; its options: {', '.join(options)}" if options else "; it takes none")
    names = []  # the command's own names, not the program's ("python -m gradflow", or "root" in-process)
    at = ctx
    while at.parent is not None:
        names.append(at.info_name)
        at = at.parent
    command = " ".join(["gradflow", *reversed(names)])
    if other:
        return f"{option} is an option of `{other}`, not of `{command}`; see `{command} --help`"
    return f"{option} is not an option of `{command}`{said}; see `{command} --help`"
