"""`gradflow clean`: remove the runs that no longer count (stale, incomplete, interrupted)."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Annotated

import typer

from gradflow import store
from gradflow.cli.app import app
from gradflow.cli.console import NBSP, console, folder, print_note, user_errors
from gradflow.errors import GradflowError


SHOWN = 20  # runs named before asking; the rest counted


@app.command()
@user_errors
def clean(
    path: Annotated[str, typer.Argument(help="A sweep's (or a run's) folder, or a results folder of them.",
                                        show_default=False, metavar="PATH")],
    stale: Annotated[bool, typer.Option("--stale", help="Remove stale, incomplete and interrupted runs (and "
                                                          "folders of runs cut off before their run.json).")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask first.")] = False,
) -> None:
    """Remove runs that are not part of the current sweep (stale), broken (incomplete) or interrupted."""
    path = folder(path, "clean")  # (`gradflow clean "$UNSET" --stale -y` cleaned the current folder)
    if not stale:
        raise GradflowError("say what to remove: --stale (stale, incomplete and interrupted runs); "
                            "finished runs of the current sweep are never removed")
    if path.is_symlink():  # (said before the runs to remove were listed, not after: the lock refused it then)
        raise GradflowError(f"{path} is a symbolic link (to {path.readlink()}); gradflow removes only from real "
                            "folders: give the folder itself")
    real, home = path.resolve(), Path.home().resolve()
    if real == Path(real.anchor) or real == home or real in home.parents:  # (`clean / --stale` went through the
        # whole disk, offering other projects' runs under /tmp for removal)
        what = "the file system's root" if real == Path(real.anchor) else "your home folder" if real == home else \
            "a folder that holds your home folder"
        raise GradflowError(f"{path} is {what}: give a results folder, or a study in it (gradflow clean results "
                            "--stale)")
    doomed, left, kept = store.removable(path)
    if kept:  # said before asking, not after
        console.print(f"{len(kept)} {' and '.join(sorted({r[store.STATUS] for r in kept}))} run"
                      f"{'s' * (len(kept) != 1)} kept: {'they hold' if len(kept) > 1 else 'it holds'} files gradflow "
                      "did not write (gradflow deletes only its own): " + ", ".join(r[store.RUN] for r in kept),
                      soft_wrap=True, highlight=False, markup=False)
    if not doomed and not left:
        console.print(f"nothing {'else ' * bool(kept)}to remove in {path}: no stale, incomplete or interrupted "
                      "runs", soft_wrap=True)
        return
    counts = Counter(r[store.STATUS] for r in doomed)
    if left:  # (folders of a run cut off before its run.json was written, or while it was cleared)
        staged = sum(store.is_staging(p.name) for p in left)
        if len(left) > staged:
            counts["left over (no run.json)"] = len(left) - staged
        if staged:  # (a replacement's hidden folder, its process killed: see store.staging_dir)
            counts["left over (a replacement cut off)"] = staged
    n = len(doomed) + len(left)
    console.print(f"{n} run{'s' * (n != 1)} to remove from {path}: "
                  + ", ".join(f"{k} {s}" for s, k in counts.items()), soft_wrap=True, highlight=False)
    named = [f"{r[store.RUN]} ({r[store.STATUS]})" for r in doomed] + \
        [f"{p.relative_to(path) if p.is_relative_to(path) else p} (left over)" for p in left]
    for line in named[:SHOWN] + ([f"... and {len(named) - SHOWN} more"] if len(named) > SHOWN else []):
        console.print(f"  {line}", soft_wrap=True, highlight=False, markup=False)
    store.check_cleanable(path, [Path(r[store.PATH]) for r in doomed] + left)  # (before asking, not after a yes)
    it = "it" if n == 1 else "them"
    if not yes and not _agreed(f"remove {it}?", it):
        console.print("nothing removed", highlight=False)
        raise typer.Exit(1)
    # (a folder left over, with no run.json, is a run no figure or page ever showed)
    shown = {Path(r[store.PATH]): _shown(Path(r[store.PATH]), r[store.STATUS]) for r in doomed}
    removed, kept = store.clean(path)
    console.print(f"removed {len(removed)} run{'s' * (len(removed) != 1)}", soft_wrap=True)
    if kept:  # (gained such files while we asked)
        console.print(f"kept {len(kept)} that hold files gradflow did not write (gradflow deletes only its own): "
                      + ", ".join(str(k) for k in kept), soft_wrap=True)
    _say_drawn_before(path, [shown[job] for job in removed if job in shown])


def _ended(job: Path) -> float | None:
    """When a run's folder last changed (its run.json written)."""
    try:
        return max(p.stat().st_mtime for p in (job, *job.iterdir()))
    except OSError:
        return None


def _shown(job: Path, status: str) -> tuple[Path, float | None, float]:
    """A run to be removed, and when a drawing could show it: a report page drawn once it had ended (its runs
    table lists every run, stale ones too), figures drawn in that time too, but for a stale run only until its
    study's current sweep.yaml was written (it was a point before, and `plot` leaves stale runs out)."""
    spec = job.parent / store.SWEEP_FILE
    try:
        until = spec.stat().st_mtime if status == store.STALE else math.inf
    except OSError:
        until = math.inf
    return job, _ended(job), until


def _say_drawn_before(path: Path, removed: list[tuple[Path, float | None, float]]) -> None:
    """The figures and report pages that `plot` and `report` drew, in `path` or a folder between it and a run
    removed, when they could show that run (`_shown`): they may show it. clean leaves them as they are (a
    figures folder may hold files of the user's, and which runs a figure shows is not recorded), and says how
    to redraw. Figures drawn since a stale run became stale do not show it (unless drawn with --all)."""
    folders: dict[Path, list[tuple[float, float]]] = {}
    for job, ended, until in removed:
        for up in [job.parent, *job.parent.parents]:
            if ended is not None:
                folders.setdefault(up, []).append((ended, until))
            if up == path or not up.is_relative_to(path):
                break
    for where, spans in folders.items():
        figures = store.figures_dir(where)
        page = where / store.REPORT_HTML
        drawn = [p for p in (*(sorted(f for f in figures.iterdir() if f.suffix.lstrip(".") in store.FIGURE_FORMATS)
                               if figures.is_dir() else []), page)  # (a file of the user's there is no figure)
                 if p.is_file() and any(ended <= p.stat().st_mtime < (math.inf if p == page else until)
                                        for ended, until in spans)]
        if not drawn:
            continue
        page = drawn[-1].name == store.REPORT_HTML
        what = " and ".join([*([f"{store.FIGURES_DIR}/"] if len(drawn) > page else []),
                             *([store.REPORT_HTML] if page else [])])
        it = "it" if what == store.REPORT_HTML else "them"
        head = f"{what} in {where} predate{'s' * (what == store.REPORT_HTML)} this cleaning and "
        if not any(where.rglob(store.RUN_FILE)):  # (no run left to draw: `plot` and `report` refuse the folder)
            print_note(head + f"show{'s' * (it == 'it')} only runs it removed; no run is left there to redraw {it} "
                       f"from: delete {it} where no longer wanted", style="yellow")
            continue
        redraw = [*([f"gradflow plot {where}"] if len(drawn) > page else []),
                  *([f"gradflow report {where}"] if page else [])]
        print_note(head + f"may show the runs it removed; redraw {it} from the runs left: "
                   + ", ".join(f"`{c}`".replace(" ", NBSP) for c in redraw), style="yellow")


def _agreed(question: str, it: str) -> bool:
    """y (or yes) to `question` from standard input. No input at all (a script's, < /dev/null, or standard
    input closed) is one line saying --yes removes `it` without asking (typer's prompt said `Aborted.` on
    the prompt's line); a Ctrl-C is said on a line of its own."""
    console.print(f"{question} [y/N]: ", end="", highlight=False, markup=False)
    try:
        answer = input()
    except KeyboardInterrupt:
        console.print()
        raise
    except (EOFError, RuntimeError):  # (RuntimeError: input(): lost sys.stdin, where it was closed)
        console.print()
        raise GradflowError(f"nothing removed: no answer came (standard input is empty or closed); --yes removes "
                            f"{it} without asking") from None
    return answer.strip().lower() in ("y", "yes")
