"""`gradflow sweep`: a grid of runs through Hydra multirun."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Annotated, Optional

import pandas as pd
import typer
from rich.markup import escape

from gradflow import store, workers
from gradflow.cli.app import app, progress_bar
from gradflow.cli.console import (INTERRUPTED_EXIT, console, leave_interrupted, near_options,
                                    note_replaced, print_note, said_changes, user_errors)
from gradflow.cli.ls import counts_line, reused_phrase, show_runs
from gradflow.query import runs_view
from gradflow.errors import GradflowError
from gradflow.fmt import fmt
from gradflow.keys import swept_keys
from gradflow.overrides import home_expanded
from gradflow.columns import replacement_failed, study_columns



LAUNCHERS_HELP = ("Launchers: basic (the default: one run at a time, here); joblib (several at once here: "
                  "hydra/launcher=joblib hydra.launcher.n_jobs=2); slurm (a job a run on a SLURM cluster: "
                  "hydra/launcher=slurm hydra.launcher.partition=gpu, and gpus_per_node, cpus_per_task, mem_gb, "
                  "timeout_min as in gradflow's conf/hydra/launcher/slurm.yaml); submitit_local.")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True}, epilog=LAUNCHERS_HELP)
@user_errors
def sweep(
    ctx: typer.Context,
    overrides: Annotated[Optional[list[str]], typer.Argument(
        help="Hydra multirun overrides: model.depth=5,10,20 norm=none,batchnorm seed=range(3) "
             "hydra/launcher=joblib ... (every key, its default and choices: gradflow run --help)",
        show_default=False)] = None,
    name: Annotated[Optional[str], typer.Option("--name", help="Results go to results/NAME/.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Rerun runs that already finished.")] = False,
    report: Annotated[bool, typer.Option("--report", help="Write the HTML report page (gradflow report).")] = False,
    points_files: Annotated[Optional[list[Path]], typer.Option(
        "--points", help="A YAML list of points swept together, each a mapping of keys to values, e.g. "
                         "- {model.activation: tanh, init.sw2: 1.76, init.sb2: 0.05}", show_default=False,
        metavar="<path>")] = None,
) -> None:
    """Run a grid of runs with Hydra multirun (any launcher); rerunning resumes where it stopped."""
    from gradflow import sweep as sweep_mod

    near_options(ctx, overrides)
    note_replaced(overrides)
    overrides = home_expanded(overrides)
    if points_files and len(points_files) > 1:  # (the last was taken, the others dropped without a word)
        raise GradflowError(f"--points is given {len(points_files)} times ({', '.join(map(str, points_files))}); "
                            "give one file, with every point in it")
    points = points_files[0] if points_files else None
    explicit = sweep_mod.read_points(points) if points is not None else None
    p = sweep_mod.plan(list(overrides or []), name, force, points=explicit,
                       points_file=str(points) if points is not None else None)
    df = run_plan(p)
    report_page([p.root], report)
    if (df[store.STATUS] == store.FAILED).any() or replacement_failed(df).any():
        raise typer.Exit(1)


def report_page(paths: list, write: bool) -> None:
    """Write the study's HTML page, or say where `--report` would write it."""
    from gradflow import report as report_mod

    if write:
        with console.status("writing the report page"):
            print_note(f"report: {report_mod.write(paths)}")  # (a long path on a line of its own, whole)
    else:
        page = report_mod.page_path(paths)
        made = ("report page from an earlier command (--report updates it)" if page.exists()
                else "report page not written; --report or `gradflow report` writes it to")
        print_note(f"{made}: {page}")


def _say_moved(moved: list) -> None:
    """The finished runs moved to their new names, said once they are (launch's on_moved): said before the move,
    a move that then failed, or a study another command held, read as done."""
    one, over = len(moved) == 1, sum(j.replaces for j in moved)
    more = "" if one else f" and {len(moved) - 1} more"
    print_note(f"{len(moved)} finished run{'' if one else 's'} {'was' if one else 'were'} under another name (the "
               f"sweep before named its points otherwise): {moved[0].moved_from} -> {moved[0].name}{more}, "
               f"moved, not trained again"
               + (f", over {over} run{'s' * (over != 1)} of other settings there" if over else ""))


def _header(p, skipped: int) -> None:
    n = len(p.jobs)
    # (a run still under its old name is moved at launch, and `_say_moved` says so once it is: counted here as
    # finished in its folder, it read as done before the move, which may yet find it changed and train it)
    moving = 0 if p.force else min(skipped, sum(j.moved_from is not None for j in p.jobs))
    done = skipped - moving
    print_note(f"sweep {p.root}: {n} run{'s' * (n != 1)} over {', '.join(p.swept) or 'no swept key'} with the "
               f"{p.launcher} launcher" + (f"; {done} already finished, skipped" if done else "")
               + (f"; {moving} finished under another name, to be moved (not trained again)" if moving else ""))
    if p.force and (there := sum((p.root / j.name / store.RUN_FILE).exists() for j in p.jobs)):
        one = there == 1  # (their folders went without a word)
        print_note(f"--force: {there} run{'' if one else 's'} of this sweep in {p.root} {'is' if one else 'are'} "
                   f"deleted and trained again", style="yellow")
    if p.replaced and not p.force:
        one = p.replaced == 1
        changes = _changes([j for j in p.jobs if j.replaces and j.moved_from is None])
        print_note(f"{p.replaced} finished run{'' if one else 's'} in {p.root} "
                   f"{'was' if one else 'were'} made with other settings and will be replaced"
                   + (f" ({said_changes(changes, 3, whole=True)})" if changes else "")
                   + ", each kept until its replacement has finished", style="yellow")
    if p.stale:
        one = p.stale == 1
        are = "is not a point" if one else "are not points"
        print_note(f"{p.stale} run{'' if one else 's'} in {p.root} {are} of this sweep (stale); "
                   f"`gradflow clean {p.root} --stale` removes {'it' if one else 'them'}", style="yellow")


def _changes(jobs: list) -> list[tuple]:
    """What differs between the replaced runs and their replacements, a key at a time in the order the runs
    name them: (key, old, new), where every run changes it alike; else the first run's change and in how many
    of the runs (`seed 0 → 1 in 1 of 2 runs`), and how many change it otherwise (`train.steps 6 → 5 in 1 of
    3 runs, other values in 2`): a key some runs do not change was said as though each did."""
    seen: dict[str, list[tuple]] = {}
    for job in jobs:
        for key, old, new in job.changes:
            seen.setdefault(key, []).append((old, new))
    out = []
    for key, pairs in seen.items():
        (old, new), alike = pairs[0], sum(pair == pairs[0] for pair in pairs)
        others = len(pairs) - alike
        if alike < len(jobs):
            new = f"{fmt(new)} in {alike} of {len(jobs)} runs" + (f", other values in {others}" if others else "")
        out.append((key, old, new))
    return out


class _EndedLines:
    """A sweep's progress as plain lines, for a log: one per run as it ends, `3/12 ok (1.2 s) JOB`, however
    long JOB is (a log is read with grep and less, where a long line is whole)."""

    def __init__(self):
        self.shown: set[str] = set()
        self.lock = threading.Lock()  # (the watcher's thread, and the sweep's own once it is done)

    def show(self, ended: dict[str, dict], total: int) -> None:
        with self.lock:
            for job, rec in ended.items():
                if job not in self.shown:
                    self.shown.add(job)
                    took = rec.get("wall_time")
                    head = f"{len(self.shown)}/{total} {rec.get(store.STATUS)}" + (f" ({took:.3g} s)" if took else "")
                    head += " (its replacement; the run of the earlier settings kept)" * bool(rec.get("kept"))
                    # the run's folder name whole, on one line: it is the swept values alone, so any cut (to fit
                    # 80 columns) hid one that set the run apart, and lines of a log read alike
                    console.print(escape(f"{head} {job}"), highlight=False, soft_wrap=True)


def run_plan(p, table: bool = True) -> pd.DataFrame:
    """Launch a planned sweep with a progress display, then show (or count) and return its runs table.
    Ctrl-C: one line (runs finished, rerun resumes), the run in flight marked interrupted, exit 130."""
    from gradflow import sweep as sweep_mod

    skipped = p.skipped
    watcher = None  # counts the finished runs; Ctrl-C before it exists has finished none
    started = time.perf_counter()
    try:  # Ctrl-C is one line and exit 130, however early it comes
        store.refuse_if_written(p.root)  # (before the header: its stale and replaced runs are another's)
        sweep_mod.check_replacement_builds(p)  # (before the header says they will be replaced)
        _header(p, skipped)
        # piped (a log file), no bar's last frame (its "time remaining 0:00:00" says nothing there): a sweep's
        # own runs a line each as it ends, a reproduction's arm its counts and time below
        lines = _EndedLines() if table and not console.is_terminal else None
        with progress_bar(transient=False, piped=False) as progress:
            runs = progress.add_task("runs", total=len(p.to_run), visible=bool(p.to_run))
            current = progress.add_task("current run", total=None, visible=p.launcher == "basic" and bool(p.to_run))

            def on_step(job: str, t: int, n: int) -> None:
                progress.update(current, description=job[:48], completed=t + 1, total=n + 1)

            def on_ended(ended: dict[str, dict]) -> None:
                # (the total read again: a planned move that found its run changed under the lock trains it)
                progress.update(runs, completed=len(ended), total=len(p.to_run))
                if lines is not None:
                    lines.show(ended, len(p.to_run))

            watcher = sweep_mod.Watcher(p, on_ended)
            watcher.start()
            try:
                sweep_mod.launch(p, on_step, on_moved=_say_moved)
            finally:
                watcher.stop.set()
                watcher.join()  # (its last lines before these)
                on_ended(watcher.ended())
                progress.update(current, visible=False)
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, lambda *_: workers.exit_now(INTERRUPTED_EXIT))  # a second Ctrl-C: leave now
        workers.stop()
        done = watcher.count() if watcher is not None else 0
        leave_interrupted(f"interrupted: {done} of {len(p.to_run)} runs finished"
                          + (f" ({skipped} more from before)" if skipped else "")
                          + ("; rerun the same command to resume" if done < len(p.to_run) else
                             f"; `gradflow ls {p.root}` lists them"))
    df, _ = runs_view(p.root)
    df = df[df[store.RUN].isin([j.name for j in p.jobs])]
    if table:  # the swept keys first, then what varies with them (init.sw2 with init): ls's notes name those
        varying = swept_keys(df, exclude=study_columns(df), implied=True)
        show_runs(df, list(dict.fromkeys([*p.swept, *varying])), title=str(p.root), skipped=skipped)
    else:
        counts = df[store.STATUS].value_counts().to_dict()
        took = "" if console.is_terminal or not p.to_run else \
            f"{len(p.to_run)} run{'s' * (len(p.to_run) != 1)} in {time.perf_counter() - started:.1f} s"
        print_note(counts_line([(k, counts.get(k, 0)) for k in store.ENDED]) + reused_phrase(skipped, took))
    return df
