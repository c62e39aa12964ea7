"""The one exception type for mistakes a user can fix (bad key, bad value, missing file)."""

import difflib
import errno
import os
import sys
from pathlib import Path
from typing import Callable


class GradflowError(Exception):
    """A user-fixable error. The CLI prints its message as one red line and exits with code 1.

    The message must name the key, value or path at fault and, where there is a fixed set,
    the valid choices.
    """


class UsageError(GradflowError):
    """A command line the command cannot take (a mistyped option): exit code 2, as Typer's own refusals."""

    exit_code = 2


class NotVaried(GradflowError):
    """A figure asked of a key that the runs drawn hold at one value (a ratio over model.depth, a --color key):
    runs left out (stale ones) may be what it lacks."""


class NoRows(GradflowError):
    """A results folder whose runs hold no row of the table a figure needs (no probed step, no probe=full)."""


class CodeExited(Exception):
    """sys.exit called by a model's code (argparse's parse_args() at import, reading gradflow's own command
    line): an error of the run, recorded as failed, not the command's exit. It ended `gradflow run` silently
    (the run recorded interrupted) and took a sweep down with it, its other points never run."""

    def __init__(self, e: SystemExit):
        hint = (": argparse's parse_args() exits so on a command line it does not know, gradflow's; give it "
                "parse_args([]), or use parse_known_args()") if e.code == 2 else ""
        super().__init__(f"the model's code called sys.exit({e.code!r}){hint}")


def run_error(e: BaseException) -> BaseException:
    """`e` as the run's error: a SystemExit the model's code raised is its CodeExited, any other error as it is."""
    return CodeExited(e) if isinstance(e, SystemExit) else e


# a write refused by the machine, not by a mistake in the command: a full disk or quota, a file-size limit
# (SLURM's, ulimit -f), a read-only mount (not EACCES: a file that cannot be read says it too)
CANNOT_WRITE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}


def cannot_write(what, e: OSError) -> GradflowError:
    """The one line for `what` (a run's folder, a file) that could not be written (CANNOT_WRITE; any other
    OSError, a permission, as a full disk)."""
    permission = "fix the folder's permissions (or write elsewhere: results=<a writable folder>)"
    fix = {errno.EROFS: "write elsewhere (results=<a writable folder>)",
           errno.EFBIG: "raise the file-size limit (ulimit -f, or the job's)",
           errno.EACCES: permission, errno.EPERM: permission}.get(e.errno, "make room (or fix the folder's "
                                                                              "permissions)")
    return GradflowError(f"cannot write {what}: {e.strerror or e}; {fix} and run the same command again: a sweep "
                         "resumes where it stopped")


def file_in(path) -> str:
    """A file as `NAME in FOLDER`: a message's long words are shortened unless they are a path that exists (the
    folder does, where the file a full disk would not take does not)."""
    path = Path(os.fsdecode(path))  # (an OSError's filename may be bytes)
    return f"{path.name} in {path.parent}"


def given_path(path, example: str) -> Path:
    """A path as the user gave it, refused where it is empty (an unset variable): Path("") is the current
    folder, so `gradflow ls "$UNSET"`, `gradflow.load(os.environ.get(...,""))` or a Recorder given "" worked on
    whatever folder the process was in. `example`: how to give one. A leading ~ is the home folder, as a shell
    reads it (`gradflow.load("~/results/x")` looked for a folder named ~ in this one)."""
    if isinstance(path, str) and not path.strip():
        raise GradflowError(f"the path is empty (an unset variable?); give the folder, e.g. {example}")
    if not isinstance(path, (str, os.PathLike)):  # (None: Path's own TypeError named no folder to give)
        raise GradflowError(f"the path is {shorten(repr(path), 40)}, no folder; give one, e.g. {example}")
    return Path(path).expanduser()


def shorten(text, limit: int = 60) -> str:
    """A value short enough for a one-line message: its start and end around an ellipsis."""
    text = str(text)
    if len(text) <= limit:
        return text
    keep = (limit - 1) // 2
    return f"{text[:keep]}…{text[-keep:]} ({len(text)} characters)"


def one_line(e: BaseException, limit: int = 200) -> str:
    """An exception as `Type: message` on one line: the message's first line (torch's go on with a C++
    trace), shortened to `limit` characters."""
    first = (str(e).strip().splitlines() or [""])[0]
    return f"{type(e).__name__}: {shorten(first, limit)}"


def ellipsize(items: list[str], sep: str, limit: int) -> list[str] | None:
    """As many whole items as fit in `limit` characters joined by `sep`, taken from both ends in turn (the
    first first) around an "…" item; every item where all fit; None where not even one does."""
    head: list[str] = []
    tail: list[str] = []  # from the end inwards
    while len(head) + len(tail) < len(items):
        ends = [(head, items[len(head)]), (tail, items[-1 - len(tail)])]
        fits = [(side, item) for side, item in (ends if len(head) <= len(tail) else ends[::-1])
                if len(sep.join([*head, "…", *tail, item])) <= limit]
        if not fits:
            break
        fits[0][0].append(fits[0][1])
    if len(head) + len(tail) == len(items):
        return list(items)
    return [*head, "…", *reversed(tail)] if head or tail else None


def shorten_command(command, limit: int = 60) -> str:
    """A command line short enough to be named in parentheses inside a message: its first and last words
    whole around an ellipsis, without `shorten`'s "(98 characters)", which read as a note nested inside the
    command ("(gradflow run name=x train… results=r (98 characters))")."""
    command = str(command)
    if len(command) <= limit:
        return command
    kept = ellipsize(command.split(), " ", limit)
    if kept is None or kept[0] == "…":  # a first word longer than the limit (a pasted path): cut within it
        keep = (limit - 1) // 2
        return f"{command[:keep]}…{command[-keep:]}"
    return " ".join(kept)


def nearest(word: str, choices, cutoff: float = 0.75, within: float = 0.05) -> list[str]:
    """The choices closest to a misspelled `word`: the best match and any as close as it (`within`); case
    counts for nothing (TANH: tanh), and a dotted key is also matched by its last part, for a word without
    a dot (dpth: model.depth, as tables show it as depth)."""
    def score(c) -> float:
        text = str(c).lower()
        parts = [text] + ([text.rsplit(".", 1)[1]] if "." in text and "." not in word else [])
        w = word.lower()
        return max(TRANSPOSED if _transposed(w, p) else difflib.SequenceMatcher(None, w, p).ratio() for p in parts)

    scored = sorted(((score(c), c) for c in choices), reverse=True)
    return [c for r, c in scored if r >= cutoff and r >= scored[0][0] - within][:3] if scored else []


TRANSPOSED = 0.9  # how near two neighbouring letters swapped reads (mpl: mlp, --hlep: --help scored 0.67)


def _transposed(a: str, b: str) -> bool:
    """b is a with two neighbouring characters swapped."""
    diff = [i for i, (x, y) in enumerate(zip(a, b)) if x != y]
    return len(a) == len(b) and len(diff) == 2 and diff[1] == diff[0] + 1 and a[diff[0]] == b[diff[1]] \
        and a[diff[1]] == b[diff[0]]


def did_you_mean(word: str, choices, show: Callable[[str], str] = str, same: dict | None = None) -> str:
    """ (did you mean X or Y?) for a misspelled `word`, naming its nearest choices, or else up to 3 that
    begin with it, where it has 4 characters or more (init=xavier: xavier_normal or xavier_uniform) or 2 or
    more that begin at most 3 choices (reproduce he: he2015 or he2016); "" where none. `show`: how a choice
    is named (a folder's name as its path). `same`: choices that are another's other name (activation:
    model.activation), named once, by that other name, where the nearer of the two stands."""
    begun = [c for c in choices if c.startswith(word)] if word else []
    near = nearest(word, choices) or (begun[:3] if len(word) >= 4 or len(word) >= 2 and len(begun) <= 3 else [])
    if same:
        near = list(dict.fromkeys(same.get(c, c) for c in near))
    return f" (did you mean {' or '.join(map(show, near))}?)" if near else ""


def by_words(word: str, choices, aliases: dict | None = None, most: int = 3) -> list[str]:
    """The choices that share the most words with `word` (accuracy: final.train_acc and final.test_acc;
    test_accuracy: final.test_acc), where no spelling is near (`nearest`). A name's words are its parts
    between `.`, `_`, `-` and spaces, and those of its `aliases` (a column's header); two words match where
    one begins with the other of 3 letters or more (acc, accuracy), or they are the same."""
    import re

    def words(text) -> set[str]:
        return {w for w in re.split(r"[._\-\s]+", str(text).lower()) if w}

    def same(a: str, b: str) -> bool:
        return a == b or (len(b) >= 3 and a.startswith(b)) or (len(a) >= 3 and b.startswith(a))

    asked = words(word)
    scored = []
    for c in dict.fromkeys(choices):
        own = words(c) | set().union(*(words(a) for a in (aliases or {}).get(c, ())))
        score = sum(any(same(w, o) for o in own) for w in asked)
        if score:
            scored.append((score, c))
    best = max((score for score, _ in scored), default=0)
    return [c for score, c in scored if score == best][:most]


def user_stacklevel() -> int:
    """The `warnings.warn` stacklevel, for the function that calls this, of the first frame outside gradflow and
    torch: the user's own line (a Recorder's warnings at discovery, made in a hook inside the model's first
    forward pass, pointed at gradflow's recorder.py; one in a `with` block's start, at contextlib's). Where
    there is none (a Recorder closed at the script's exit), the outermost frame's: past it, Python says `sys:1`."""
    frame, level = _user_frame(sys._getframe(1))
    return level if frame is not None else level - 1


def user_file() -> str | None:
    """The file of the user's code that called into gradflow (its first frame outside gradflow and torch: a
    script, a test, a module run with -m), or None where that code is in no file (`python -c`, a notebook's
    cell) or there is no such frame."""
    frame, _ = _user_frame(sys._getframe(1))
    name = frame.f_code.co_filename if frame is not None else ""
    return name if name and os.path.isfile(name) else None


def _user_frame(frame):
    """(The first frame from `frame` outwards outside gradflow, torch and contextlib, its stacklevel counting
    `frame` as 1), or (None, one past the outermost frame's) where there is none."""
    import contextlib

    roots = tuple(os.path.dirname(m.__file__) + os.sep for m in (sys.modules.get("gradflow"), sys.modules.get("torch"))
                  if m is not None and getattr(m, "__file__", None))
    level = 1
    while frame is not None and (frame.f_code.co_filename.startswith(roots)
                                 or frame.f_code.co_filename == contextlib.__file__):
        frame, level = frame.f_back, level + 1
    return frame, level
