"""`gradflow ls`: one row per run, readable at 80 columns and when piped."""

from __future__ import annotations

import json
import math
import shlex
from pathlib import Path
from typing import Annotated, Optional

import numpy as np
import pandas as pd
import typer
from rich.markup import escape

from gradflow import store
from gradflow.cli.app import app
from gradflow.cli.console import NBSP, console, folder, labels, print_note, user_errors
from gradflow.errors import GradflowError
from gradflow.fmt import fmt, strict_json
from gradflow.keys import abbreviate, implied_keys, n_distinct, partial_keys, partial_phrase
from gradflow.columns import (FLAGGED, KEY_PRIORITY, LS_COLUMNS, RESULT_COLUMNS, STUDY_PRIORITY, Column, column_notes,
                              failure_notes, mark_flagged, replacement_failed, study_columns, swept_columns,
                              stale_note, table_columns, transient_warning)
from gradflow.query import NOT_RUN, PARTIAL, WHERE, runs_view
from gradflow.summary import (DECLARED, DEPTH_KEY, MODULE_DEPTH_NOTE, STUDY, UNREADABLE, module_depth_rows,
                              not_run_note, run_folders)

SEP = 3  # characters between two columns of the SIMPLE_HEAD table

DEPTH_READ = "depth_from_probes"  # --json / --csv: whether a row's model.depth was read from its probe points


HEADLINE = 2  # result columns the keys of a folder of studies leave room for (a study's own keys leave room for one)


def choose(columns: list[Column], width: int | None, always: str | None = None) -> tuple[list[Column], list[Column]]:
    """The columns that fit in `width` characters (all when None), taken by priority, then in display
    order; and those left out. The status, the first column and the column `always` (the one sorted by: a
    key's, which the keys before it crowded out, left rows in an order one could not see) always show, then
    the keys in order while they leave room for the first result (two in a folder of studies, and beside a
    key that tells no rows apart that the keys before it do not): unrelated runs that differ in a dozen keys
    still give a table within `width` with its results in it, and its note names the keys left out."""
    if width is None:
        return columns, []
    first = {i for i, c in enumerate(columns) if c.key in (store.STATUS, always)} | {0}
    rank, _ = _telling_first(columns, first)
    # (by the keys alone: a stale run's id, cut short, `init=xavier_normal,…`, told apart the rows whose init
    # its replacement's id, `model.activation=relu`, does not show)
    keyed = [i for i, c in enumerate(columns) if c.key != store.RUN]
    telling = {keyed[j] for j in _telling_first([columns[i] for i in keyed], set())[1]}
    order = sorted(range(len(columns)), key=lambda i: (columns[i].priority, i not in first, rank.get(i, i)))
    results = [i for i in order if columns[i].priority != KEY_PRIORITY]
    # room for the headline result (train loss and test accuracy in a folder of studies, whose rows the study
    # names and whose keys `ls` of each study shows: one alone left keys of a dozen kinds and steps done); a
    # key that tells no rows apart leaves room for both (three experiments' depth, width, skip and data, told
    # apart by the experiment, left no room for the test accuracy, and a narrower test loss took its place)
    headline = HEADLINE if any(c.key == STUDY for c in columns) else 1
    reserve = {n: sum(columns[i].width + SEP for i in results[:n]) for n in (headline, HEADLINE)}
    keep: set[int] = set()
    used, keys_full = -SEP, False
    for i in order:
        need = columns[i].width + SEP
        if i in first:
            fits = True
        elif columns[i].priority == KEY_PRIORITY:
            fits = not keys_full and used + need + reserve[headline if i in telling else HEADLINE] <= width
            keys_full = not fits
        else:
            fits = used + need <= width
        if fits:
            keep.add(i)
            used += need
    return [c for i, c in enumerate(columns) if i in keep], [c for i, c in enumerate(columns) if i not in keep]


def _telling_first(columns: list[Column], first: set[int]) -> tuple[dict[int, int], set[int]]:
    """The keys' columns in the order `choose` takes them: those that tell more rows apart, as shown, than the
    keys before them (the first column's among them) first, in display order, then those that tell none
    apart that the others have not (a folder of single runs kept width, lr and steps, alike in the rows, and
    left out sw2, the one key two depth-60 meanfield runs differ in: they read alike); and the first ones."""
    keys = [i for i, c in enumerate(columns) if c.priority == KEY_PRIORITY and c.key != store.STATUS]
    telling = [i for i in keys if i in first]

    def rows(cols: list[int]) -> int:
        return len(set(zip(*(columns[i].cells for i in cols)))) if cols else 1

    for i in keys:
        if i not in telling and rows(telling + [i]) > rows(telling):
            telling.append(i)
    return {i: n for n, i in enumerate([*telling, *(i for i in keys if i not in telling)])}, set(telling)


def one_line_headers(columns: list[Column], width: int | None) -> None:
    """Headers on one line each where the table still fits in `width` that way (always when None)."""
    if width is None or sum(max(len(c.label), c.width) + SEP for c in columns) - SEP <= width:
        for c in columns:
            c.one_line = True


def show_runs(df: pd.DataFrame, swept: list[str], title: str = "", skipped: int | None = None,
              wide: bool = False, paths: list[Path] | None = None) -> None:
    """The runs table: swept values, then status, finals, gradient ratios and chi_1, as many as fit. `paths`:
    the folders listed where they are several (`ls A B`: `title` names them all), their runs' ids relative to
    the folder they are all under (`store.common_root`)."""
    root = str(store.common_root(paths)) if paths and len(paths) > 1 else title
    swept = swept_columns(df, swept)
    if not wide:  # (keys of runs --where left out: the Recorder's lr beside `--where model=mlp`)
        swept = [k for k in swept if df[k].notna().any()]
    # keys --where left at one value are no columns (they took the room of the seed that tells the rows
    # apart) but one line: the runs --where keeps are a folder of their own; a key a sweep's spec sweeps
    # stays, as it does in a sweep cut short
    declared = {k for folder in set(run_folders(df)) for k in df.attrs.get(DECLARED, {}).get(folder, ())}
    same = [k for k in swept if n_distinct(df[k]) == 1 and k not in declared] \
        if df.attrs.get(WHERE) and not wide else []
    names = abbreviate(swept)  # (of all: data.seed beside seed)
    swept = [k for k in swept if k not in same]
    implied = {} if wide else implied_keys(df, swept)
    # (the folder's, from runs_view, where --where kept only some runs)
    partial = [] if wide else [k for k in (df.attrs[PARTIAL] if PARTIAL in df.attrs else partial_keys(df, swept))
                               if k in swept]
    implied = {k: c for k, c in implied.items() if k not in partial}  # (model.width: set by model, and partial)
    # (the key sorted by shows, set by a choice or not: rows in an order one cannot see read as random)
    sorted_by = df.attrs.get("sorted_by")
    implied = {k: c for k, c in implied.items() if k != sorted_by}
    partial = [k for k in partial if k != sorted_by]
    swept = [k for k in swept if k not in implied and k not in partial]
    df, flagged = mark_flagged(df)  # ended ok, yet no success: never read as one
    columns = table_columns(df, swept, short=not wide, width=console.width)
    warning = transient_warning(df)
    # (the fits the warning is about, with the theory they are off from)
    fits = ("chi1_measured", "chi1_layers", "chi1_theory") if warning else ()
    together = fits or ("chi1_measured", "chi1_theory")  # (a measured chi1 is read against the theory's)
    headline = RESULT_COLUMNS["final.train_loss"][1]  # (the loss and accuracy's)
    # --rate: the prediction its rates are read against shows beside them (it gave way to the other results),
    # after the first rate asked for and before the others (it gave way to a second one: two rates and
    # nothing to read them against)
    rates = [c.key for c in columns if c.key.startswith("rate.") and not c.key.endswith(".layers")]
    rated = "chi1_theory" if rates and any(c.key == "chi1_theory" for c in columns) else None
    for c in columns:  # shown whatever the width: the column sorted by; the fits the warning is about next
        if c.key == sorted_by:  # to the loss and accuracy (in a folder of studies, three chi1
            c.priority = min(c.priority, STUDY_PRIORITY)  # columns took the room its rows had for those)
        elif c.key == rated:  # (before the rates' fitted layers)
            c.priority = min(c.priority, STUDY_PRIORITY + 0.5)
        elif rated and c.key in rates[1:]:
            c.priority = STUDY_PRIORITY + 0.75
        elif c.key in together and sorted_by in together:  # (sorted by chi1 meas: its theory beside it)
            c.priority = min(c.priority, STUDY_PRIORITY + 0.5)
        elif c.key in fits:
            c.priority = min(c.priority, headline)
    shown, hidden = choose(columns, None if wide else console.width, sorted_by)
    if {c.key for c in hidden} & set(together):  # the three together or none: a fit's `!` beside no theory (or
        # a theory without the fit it is about) reads as nothing to see, and without the warning, a measured chi1
        # beside no theory as a number with no reference; the column sorted by stays, whatever, and so does
        # the theory --rate's rates are read against (the warning is about their fits too)
        apart = [c for c in columns if c.key in together and c.key not in (sorted_by, rated)]
        shown, hidden = choose([c for c in columns if c not in apart], console.width, sorted_by)
        hidden += apart
    one_line_headers(shown, None if wide else console.width)
    console.print(render(shown, len(df), title), highlight=False, soft_wrap=True)
    notes = column_notes(shown, df)
    if same:
        values = [f"{names[k]} {fmt(df[k].iloc[0]) or '-'}" for k in same]
        more = f" and {len(values) - 6} more; --wide shows them" if len(values) > 7 else ""
        notes.insert(0, f"the same in every run --where keeps: {', '.join(values[:6] if more else values)}{more}")
        if DEPTH_KEY in same and MODULE_DEPTH_NOTE not in notes and module_depth_rows(df).any():
            notes.insert(1, MODULE_DEPTH_NOTE)  # (the depth that line shows is read, as the column's is)
    implied = {k: c for k, c in implied.items() if n_distinct(df[k]) > 1}  # (say so only where shown runs differ)
    if implied:
        names = abbreviate([*swept, *implied])
        by = list(dict.fromkeys(names[c] for c in implied.values()))
        notes.append(f"not shown, as each {'/'.join(by)} choice sets them: "
                     + labels(names[k] for k in implied) + "; --wide shows all")
    if partial:  # (a Recorder's runs beside gradflow run's: the groups only one kind has, by group)
        notes.append(f"not shown, as only some of the folder's runs set them, each to one value: "
                     f"{partial_phrase(partial)}; --wide shows all")
    if hidden:
        notes.append(f"not shown ({console.width} columns): {labels(c.label for c in hidden)}; --wide shows all")
        alike = alike_note(df, shown, hidden, root)
        if alike:
            notes.append(alike)
    if flagged:
        notes.append(f"{FLAGGED}: finished but flagged: {labels(flagged)}; --json shows why")
    notes += failure_notes(df, FAILURES_SHOWN, "--json gives each run's error")
    if bad := df.attrs.get(UNREADABLE):  # (read as no spec, without a word)
        notes.append(f"{', '.join(map(str, bad[:3]))}{' and more' if len(bad) > 3 else ''}: not a readable sweep "
                     "spec, so stale runs there read as live; rerun the sweep's command to write it again")
    missing = df.attrs.get(NOT_RUN) or []
    if missing:
        notes.append(not_run_note(missing))
    if note := stale_note(df, stale_folder(df, title, paths)):
        notes.append(note)
    for n in notes:
        print_note(n)
    if warning:  # (a warning of columns the width left out read as of nothing on the screen)
        print_note(warning + ("; its chi1 columns do not all fit in the width: --wide shows them"
                              if set(fits) & {c.key for c in hidden} else ""), style="yellow")
    counts = df["status"].value_counts().to_dict() if "status" in df else {}
    n_flagged = counts.get(store.OK + FLAGGED, 0)
    counts[store.OK] = counts.get(store.OK, 0) + n_flagged
    parts = [(k, counts.get(k, 0)) for k in store.STATUSES if k in store.ENDED or counts.get(k)]
    parts += [("flagged", n_flagged)] if n_flagged else []
    n_kept = int(replacement_failed(df).sum())  # (the runs their failed replacements left: stale in a sweep)
    parts += [("replacement failed", n_kept)] if n_kept else []
    parts += [("not run", sum(m.missing for m in missing))] if any(m.missing for m in missing) else []
    print_note(counts_line(parts) + reused_phrase(skipped))


def stale_folder(df: pd.DataFrame, title: str, paths: list[Path] | None) -> str:
    """The folder `gradflow clean --stale` is to be given for the stale runs of `df`: the one listed; of several
    listed (`ls A B`), the one that holds them all, else PATH (no one folder holds them and nothing else)."""
    if not paths or len(paths) < 2:
        return shlex.quote(title or "PATH")
    stale = [Path(p) for p in df.loc[df[store.STATUS] == store.STALE, store.PATH]]
    holders = [p for p in paths if all(q.is_relative_to(p) for q in stale)]
    return shlex.quote(str(holders[0])) if holders else "PATH"


FAILURES_SHOWN = 3  # distinct errors named under the table; --json gives every run's


def counts_line(parts: list[tuple[str, int]]) -> str:
    """`ok: 3  failed: 1`, each count kept on the line of its name where a narrow terminal breaks it."""
    return "  ".join(f"{name}: {n}".replace(" ", NBSP) for name, n in parts)


def alike_note(df: pd.DataFrame, shown: list[Column], hidden: list[Column], title: str) -> str | None:
    """Where rows read alike because the keys that tell them apart were left out (a folder of a dozen
    studies has more keys than 80 columns hold: three runs of its norm study read `norm 5 relu ok`), a
    line saying so and, in a folder of studies whose keys were left out, the command that lists one of
    them with its own keys (one whose rows read alike; else the first of several runs)."""
    if not any(c.priority == KEY_PRIORITY for c in hidden):
        return None
    # (by their keys: two rows of one depth and activation, xavier's and orthogonal's with init left out,
    # differ in their loss but cannot be told apart, which is which)
    rows = list(zip(*(c.cells for c in shown if c.priority == KEY_PRIORITY and c.key != store.STATUS)))
    seen: set[tuple] = set()
    alike = next((i for i, row in enumerate(rows) if row in seen or seen.add(row)), None)
    folders = run_folders(df) if any(c.key == STUDY for c in shown) else None
    if alike is None and folders is None:
        return None
    text = f"rows that read alike differ in keys left out at {console.width} columns" if alike is not None else \
        f"keys left out at {console.width} columns"
    if folders is not None:
        several = folders.duplicated(keep=False).to_numpy()
        at = alike if alike is not None else int(several.argmax()) if several.any() else 0
        folder = Path(title or ".") / folders.iloc[at]
        text += f"; `gradflow ls {shlex.quote(str(folder))}` lists one study with its own keys"
    return text + "; --wide shows all"


def reused_phrase(skipped: int | None, also: str = "") -> str:
    """After a sweep's counts by status: how many of them it reused (it said "ok: 12 ... skipped: 12", as if
    12 more), and `also` in the same parentheses."""
    said = [f"{skipped} of these finished before, skipped"] * bool(skipped) + [also] * bool(also)
    return f"  ({'; '.join(said)})" if said else ""


def render(columns: list[Column], n_rows: int, title: str = "") -> str:
    """The table as rich markup, laid out here (widths are known): rich's own Table takes ~1 s for 200 runs.
    Headers sit on their last lines, numbers align right, status is coloured."""
    sep = " " * SEP
    headers = [c.header().split("\n") for c in columns]
    widths = [c.width for c in columns]  # (each a pass over its cells: once, not once per cell)
    depth = max((len(h) for h in headers), default=1)
    lines = [title] if title else []
    for k in range(depth):
        cells = []
        for c, h, width in zip(columns, headers, widths):
            text = h[k - depth + len(h)] if k >= depth - len(h) else ""
            cells.append(text.rjust(width) if c.numeric else text.ljust(width))
        lines.append(escape(sep.join(cells).rstrip()))
    lines.append("─" * (sum(widths) + SEP * (len(columns) - 1)))
    for i in range(n_rows):
        cells = []
        for j, (c, width) in enumerate(zip(columns, widths)):
            cell = c.cells[i].rjust(width) if c.numeric else c.cells[i].ljust(width)
            if j == len(columns) - 1:
                cell = cell.rstrip()  # (inside a status's colour markup, the line's rstrip cannot reach it)
            status = c.cells[i].rstrip(FLAGGED)  # ok*: ok, flagged
            cells.append(f"[{store.STATUS_COLOURS[status]}]{escape(cell)}[/]" if c.key == store.STATUS and
                         status in store.STATUS_COLOURS else escape(cell))
        lines.append(sep.join(cells).rstrip())
    return "\n".join(lines)


WHOLE = ("steps_done", "diverged_step")  # columns of whole numbers (steps), some of them missing


def _whole(values: pd.Series) -> bool:
    numbers = pd.to_numeric(values, errors="coerce")
    return bool(numbers.notna().eq(values.notna()).all() and (numbers.dropna() % 1 == 0).all())


def records(df: pd.DataFrame) -> list[dict]:
    """Strict-JSON rows at full precision (`strict_json`: NaN as null, infinities as "inf"/"-inf"), a
    fit's layers (chi1_layers, rate.Q.layers) null where there was no fit, as its value is, and a key that
    takes a number or a word (model.alpha: 1.0 or inv_sqrt_depth, a string in the schema) a number where it
    is one (it read "1.0" beside every other key's numbers)."""
    from gradflow.config import NUMBER_OR_WORD_KEYS, number_in

    def clean(k, v):
        if v is pd.NA or (v == "" and (k == "chi1_layers" or k.endswith(".layers"))):
            return None
        if k in NUMBER_OR_WORD_KEYS and isinstance(v, str) and math.isfinite(number_in(v)):
            return strict_json(number_in(v))
        return strict_json(v)

    return [{k: clean(k, v) for k, v in row.items()} for row in df.to_dict(orient="records")]


def csv_text(df: pd.DataFrame) -> str:
    """`df` as CSV, a bool as the config and --json write it, true/false (pandas wrote Python's True/False)."""
    def cell(v):
        return ("true" if v else "false") if isinstance(v, (bool, np.bool_)) else v

    booleans = [c for c in df.columns if df[c].dtype == object or pd.api.types.is_bool_dtype(df[c])]
    return df.assign(**{c: df[c].astype(object).map(cell) for c in booleans}).to_csv(index=False)


@app.command("ls")
@user_errors
def ls(
    paths: Annotated[Optional[list[str]], typer.Argument(
        metavar="PATH", help="A run folder, a sweep folder, or a folder of sweeps (default: results); several "
                             "are listed together, in the order given.", show_default=False)] = None,
    where: Annotated[Optional[list[str]], typer.Option(
        metavar="KEY=VALUE", help="Keep rows with KEY=VALUE (repeatable).")] = None,
    sort: Annotated[Optional[str], typer.Option(
        help="Sort by this column (numbers as numbers), e.g. final.test_acc, depth or a header such as "
             "'train loss'; -KEY sorts descending.")] = None,
    steps_to: Annotated[Optional[list[str]], typer.Option(
        "--steps-to", metavar="CONDITION", help="First evaluation step where a metric reaches a threshold, e.g. "
                                                "'train_loss<=1.0' or 'test_acc>=0.9' (repeatable).")] = None,
    rate: Annotated[Optional[list[str]], typer.Option(
        metavar="QUANTITY", help="Per-layer growth factor of a probed quantity at step 0, e.g. grad_norm or "
                                 "signal_norm, with the fitted layers (repeatable).")] = None,
    wide: Annotated[bool, typer.Option("--wide", help="Show every column, however wide.")] = False,
    csv: Annotated[bool, typer.Option("--csv", help="Print CSV instead of a table.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON records (full precision) instead of a table.")]
    = False,
) -> None:
    """One row per run: swept values, status, final metrics, gradient ratios and chi_1 (measured and theory)."""
    if csv and as_json:
        raise GradflowError("--csv and --json are two formats of the same table; give one")
    if sort is not None and not sort.strip("- "):  # (--sort '' kept the order without a word; --sort - was refused)
        raise GradflowError(f"--sort {sort!r} names no column; give one, e.g. --sort final.test_acc (-KEY: descending)")
    # (a path given twice, or as ./results/a beside results/a, listed once)
    given = store.distinct_paths([folder(p, "ls") for p in paths or ["results"]])
    if given == [Path("results")] and not given[0].exists():
        raise GradflowError("no results folder here (the default of `gradflow ls`): `gradflow run` makes one, "
                            "or give the folder: gradflow ls PATH")
    df, swept = runs_view(given, where, sort, rate, steps_to)
    # (the table's line under it: which depths were read)
    if (csv or as_json) and (read := module_depth_rows(df)).any():
        df = df.assign(**{DEPTH_READ: read})
    cols = ["run"] + swept + [c for c in LS_COLUMNS if c in df.columns] + \
        [c for c in ("start_qstar", "chi1_transient", DEPTH_READ, store.FLAGS, "error") if c in df.columns] + \
        study_columns(df)
    if csv or as_json:  # (steps as whole numbers: a column with a missing one is float in pandas, 2.0)
        df = store.as_recorded(df)  # (so are a config's: model.width 128.0 of the MLPs beside a CNN)
        df = df.assign(**{c: df[c].astype("Int64") for c in cols if c in WHOLE or c.startswith("steps_to.")
                          if _whole(df[c])})
    if csv:
        console.file.write(csv_text(df[cols]))
    elif as_json:
        console.file.write(json.dumps(records(df[cols]), indent=1, allow_nan=False) + "\n")
    else:
        show_runs(df, swept, title=" ".join(shlex.quote(str(p)) if len(given) > 1 else str(p) for p in given),
                  wide=wide, paths=given)
