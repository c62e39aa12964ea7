"""The Typer app every command module registers on; only the CLI layer prints."""

from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path

import typer
from typer.core import TyperCommand, TyperGroup, TyperOption
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from gradflow.cli.console import console, unknown_option

app = typer.Typer(
    help="gradflow: run, measure, plot and reproduce gradient-flow experiments (vanishing and exploding gradients).",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    """--version: gradflow's, Python's and torch's versions (a bug report's first line), then exit."""
    if value:
        from importlib.metadata import PackageNotFoundError, version

        from gradflow import __version__

        try:  # (torch's version from its metadata: importing it takes a second)
            torch = f", torch {version('torch')}"
        except PackageNotFoundError:
            torch = ""
        typer.echo(f"gradflow {__version__} (python {sys.version.split()[0]}{torch})")
        raise typer.Exit()


@app.callback()
def _options(
    version: bool = typer.Option(False, "--version", help="Print gradflow's, Python's and torch's versions and exit.",
                                 callback=_version, is_eager=True),
) -> None:
    pass  # (the app's own options; its help is the Typer's above)


# typer 0.29 prints a type placeholder such as <bool> beside every flag, --help included; a flag takes no value.
# Older typers (>= 0.12, which pyproject allows) have no such method and print no placeholder.
_display_type = getattr(TyperOption, "display_type_rich", None)
if _display_type is not None:
    TyperOption.display_type_rich = lambda self, ctx: None if self.is_flag else _display_type(self, ctx)


_UsageError = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")  # (Click's, or Typer's copy)


def _given_once(make_parser):
    """`make_parser` whose parser refuses an option given twice, where Click keeps the last value without a
    word (`reproduce he2015 --scale paper --scale quick` ran the quick scale; `plot --format pdf --format svg`
    drew svg). Options that take several values (`multiple`, a count) are left alone."""
    def made(self, ctx):
        parser = make_parser(self, ctx)
        parse = parser.parse_args

        def parse_args(args):
            given = list(args)  # (the parser consumes the list)
            opts, rest, order = parse(args)
            if "--help" in given[:given.index("--")] if "--" in given else "--help" in given:
                return opts, rest, order  # (the help is what was asked for: `ls --help --help` shows it)
            counts = Counter(p for p in order if p.param_type_name == "option" and not p.multiple
                             and not getattr(p, "count", False))
            for param, n in counts.items():
                if n > 1:
                    typed = _typed(param, given)
                    raise _UsageError(f"{max(param.opts, key=len)} is given {'twice' if n == 2 else f'{n} times'}"
                                      + (f" ({', '.join(typed)})" if typed else "") + "; give it once", ctx)
            return opts, rest, order

        parser.parse_args = parse_args
        return parser

    return made


def _typed(param, args: list[str]) -> list[str]:
    """Each time `args` give the option `param`, as typed (`--scale paper`, `--out=a.html`, `--no-wide`)."""
    names = [*param.opts, *param.secondary_opts]
    out = []
    for i, arg in enumerate(args):
        if arg == "--":
            break
        if arg in names:
            takes = not param.is_flag and i + 1 < len(args)
            out.append(f"{arg} {args[i + 1]}" if takes else arg)
        elif any(arg.startswith(f"{name}=") for name in names if name.startswith("--")):
            out.append(arg)
    return out


for _command in (TyperCommand, TyperGroup):
    _command.make_parser = _given_once(_command.make_parser)


def _usage_error(e) -> None:
    """A usage error (unknown option or command, a missing argument, an option's bad value) as the one
    line every other error is, with Click's own suggestion in it, instead of Typer's boxed panel."""
    if type(e).__name__ == "NoArgsIsHelpError":  # the help was shown: nothing to add
        return
    message = " ".join(e.format_message().split()).rstrip(".")
    given = _given(getattr(e, "param", None), getattr(e, "ctx", None))
    if given is not None and message.startswith("Invalid value for"):  # Click's message names no value
        message = message.replace(":", f" ({given!r}):", 1)
    # (Typer's parser says it as a validator does: "Input should be a valid integer, unable to parse ...")
    message = re.sub(r"Input should be a valid (number|integer)(, unable to parse string as an? \w+)?",
                     lambda m: "not a whole number" if m.group(1) == "integer" else "not a number", message)
    ctx = getattr(e, "ctx", None)
    if type(e).__name__ == "NoSuchOption" and ctx is not None:  # as run's and sweep's say it: Click's said
        message = unknown_option(e.option_name, ctx)  # "No such option", its suggestions only sometimes
    elif type(e).__name__ == "BadOptionUsage" and ctx is None and "requires" in message:
        # (the parser raises it with no context: "Option '--sort' requires an argument", and no word of the help)
        message = f"{e.option_name} needs a value; see `{_command_path()} --help`"
    elif ctx is not None:
        if message.startswith("No such command") and hasattr(ctx.command, "list_commands"):  # (as bad values do)
            message += f"{'' if message.endswith('?') else ';'} commands: {', '.join(ctx.command.list_commands(ctx))}"
        message += f"{' See' if message.endswith('?') else '; see'} `{ctx.command_path} --help`"
    typer.echo(f"error: {message}", err=True)


def _command_path() -> str:
    """`gradflow ls` (`gradflow theory phase`) for the command on the command line, read from sys.argv as _given
    reads it, where Click gave no context to take it from; `gradflow` where none is there to read (in-process)."""
    if Path(sys.argv[0]).name not in ("gradflow", "__main__.py"):
        return "gradflow"
    from typer.main import get_command

    path, command = ["gradflow"], get_command(app)  # (as Click's own paths name it, under python -m too)
    for word in (a for a in sys.argv[1:] if not a.startswith("-")):
        sub = getattr(command, "commands", {}).get(word)
        if sub is None:
            break
        path.append(word)
        command = sub
    return " ".join(path)


def _given(param, ctx) -> str | None:
    """The value the command line gave an option (--sw2 abc, --sw2=abc; given twice, it is refused before), or
    None. Read from sys.argv, so only in the gradflow process itself (not
    where the app is called in-process, e.g. a test's CliRunner, whose arguments are not there)."""
    opts = getattr(param, "opts", None) or []
    if Path(sys.argv[0]).name not in ("gradflow", "__main__.py") or ctx is None or ctx.info_name not in sys.argv:
        return None
    args = sys.argv[sys.argv.index(ctx.info_name) + 1:]
    for i in reversed(range(len(args))):
        for opt in opts:
            if args[i] == opt and i + 1 < len(args):
                return args[i + 1]
            if args[i].startswith(f"{opt}="):
                return args[i].split("=", 1)[1]
    return None


try:  # Typer calls rich_utils.rich_format_error(e) for usage errors (exit code 2)
    from typer import rich_utils as _rich_utils

    _rich_utils.rich_format_error = _usage_error
except ImportError:  # a Typer without it shows Click's three plain lines instead
    pass


def progress_bar(transient: bool = True, piped: bool | None = None) -> Progress:
    """A bar on the console; piped (not a terminal), its last frame is printed where `piped` (default: where
    it is not transient: piped, a transient one would leave a blank line)."""
    shown_piped = not transient if piped is None else piped
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=transient,
                    disable=not (console.is_terminal or shown_piped))


