"""`gradflow plot` and `gradflow compare`: figures and comparisons drawn from results on disk.

Parse, call, print: the kinds and their option checks live in gradflow.plots.kinds, the standard
set in gradflow.plots.standard, the matching of runs across folders in gradflow.compare.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Optional

import numpy as np
import pandas as pd
import typer
from rich.cells import cell_len
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from gradflow import compare as matching
from gradflow import store
from gradflow.cli.app import app, progress_bar
from gradflow.cli.console import console, err_console, folder, labels, out_path, print_note, user_errors
from gradflow.query import keep_where
from gradflow.errors import GradflowError, NotVaried
from gradflow.fmt import and_list, fmt as number, key_value
from gradflow.plots.kinds import (
    COMPARE_KINDS, KIND_HELP, KINDS, Options, check_options, choose, draw, figure_parts, load_table, overlay_facet,
    part_names, refuse_unused, say_part, split_note,
)
from gradflow.keys import abbreviate, full_key, is_missing, partial_keys, partial_phrase, swept_keys
from gradflow.plots.save import FORMATS, file_part, save
from gradflow.plots.series import parse_step
from gradflow.columns import FLAGGED, LIMIT_MARK, LIMIT_NOTE, NOTES, in_time, mark_flagged
from gradflow.summary import DEPTH_KEY, MODULE_DEPTH_NOTE, module_depth_rows

COMPARE_DIR = Path("results") / "compare"
AllOpt = Annotated[bool, typer.Option(
    "--all", help="Also draw stale runs (not in the folder's current sweep spec); incomplete ones "
             "(a damaged or missing file) never are.")]


def _print_paths(paths: list[Path]) -> None:
    for p in paths:
        console.print(str(p), markup=False, highlight=False, soft_wrap=True)


def _left_out(path: Path, where: list[str] | None = None) -> None:
    """A line for the runs no figure can draw (`store.untabled`): incomplete ones (a damaged or missing file),
    failed ones that finished no step, ones killed before they wrote a table and ones still running (they were
    left out without a word, and a figure of 2 of 8 runs read as the whole sweep); of those `where` keeps, where
    given (a failed run of another study was counted under a figure of the runs --where kept)."""
    listed = store.runs(path)
    runs = {str(r[store.RUN]): kind for r in listed if (kind := store.untabled(r))}
    if where and runs:
        kept = set(_where(load_table(path, "runs", include_stale=True), where)["run"].astype(str))
        runs = {run: kind for run, kind in runs.items() if run in kept}
    kinds = Counter(runs.values())
    said = {store.FAILED: lambda n: f"{n} run{'s' * (n != 1)} that failed before {'their' if n != 1 else 'its'} "
                                    "first step",
            store.INCOMPLETE: lambda n: f"{n} incomplete run{'s' * (n != 1)} (a damaged or missing file)",
            store.INTERRUPTED: lambda n: f"{n} run{'s' * (n != 1)} interrupted before writing a table (killed)",
            store.RUNNING: lambda n: f"{n} run{'s' * (n != 1)} still running (tables are written at the end)"}
    parts = [words(kinds[k]) for k, words in said.items() if kinds[k]]
    if not where:  # the sweep's points that have no run yet (a sweep stopped early): `ls` says them, plot did not
        from gradflow.summary import not_run

        n = sum(m.missing for m in not_run(path, {str(r[store.RUN]): r[store.STATUS] for r in listed}, []))
        parts += [f"{n} point{'s' * (n != 1)} of the sweep not run yet"] if n else []
    if parts:  # (on stderr: stdout is the figures' paths, one a line)
        print_note(f"not drawn: {' and '.join(parts)}; gradflow ls {path} says why", style="yellow", to=err_console)


# --- gradflow plot ---------------------------------------------------------------------------------
@user_errors
def plot(
    path: Annotated[str, typer.Argument(metavar="PATH", help="A run folder, a sweep folder, or a folder of sweeps.",
                                         show_default=False)],
    kind: Annotated[Optional[str], typer.Option("--kind", "-k", help=f"What to draw. {KIND_HELP}.",
                                                show_default=False)] = None,
    quantity: Annotated[Optional[str], typer.Option(
        help="profile/heatmap: the per-layer quantity (grad_norm, signal_norm, weight_norm, update_ratio, "
             "act_std, ...).",
        show_default="grad_norm")] = None,
    step: Annotated[Optional[str], typer.Option(
        help="profile/hist/spectrum: a probed step or 'last'; ratio: 0 (init) or last (end).",
        show_default="0")] = None,
    color: Annotated[Optional[str], typer.Option(
        help="profile, curves, gradnorm, ratio, spectrum: the swept key that colours the lines.",
        show_default="the swept key with the fewest values, not depth")] = None,
    facet: Annotated[Optional[str], typer.Option(
        help="profile, curves, gradnorm, grid: one panel (curves: a train | test pair) per value of this swept key.",
        show_default=False)] = None,
    x: Annotated[Optional[str], typer.Option("--x", help="grid: the key along x, e.g. init.sw2.",
                                             show_default=False)] = None,
    y: Annotated[Optional[str], typer.Option("--y", help="grid: the key along y, e.g. model.depth.",
                                             show_default=False)] = None,
    value: Annotated[Optional[str], typer.Option(
        help="grid: the per-run number in the cells (final.test_acc, final.train_acc, final.train_loss, "
             "grad_ratio.init, chi1_measured, ...).", show_default="final.test_acc")] = None,
    theory: Annotated[Optional[str], typer.Option(
        help="grid: draw the mean-field 6xi_c or xi_c depth scale, or chi1=1 (needs init.sw2 on an axis).",
        show_default=False)] = None,
    run: Annotated[Optional[str], typer.Option(help="heatmap/hist: which run, when PATH holds several (its folder "
                                                    "name relative to PATH).", show_default=False)] = None,
    fmt: Annotated[Optional[str], typer.Option("--format", help="Figure format: png, pdf or svg.",
                                               show_default="png, or --out's suffix")] = None,
    out: Annotated[Optional[str], typer.Option(
        help="The folder to write the figures into; or, for one --kind, the file (fig.png, fig.pdf, fig.svg). "
             "A folder of sweeps without --kind: each sweep's set into SWEEP/figures, or --out/SWEEP.",
        show_default="PATH/figures")] = None,
    where: Annotated[Optional[list[str]], typer.Option(
        metavar="KEY=VALUE", help="With --kind: draw only the runs whose KEY reads VALUE (repeatable), as "
                                  "ls --where keeps them, e.g. --where seed=0.", show_default=False)] = None,
    include_stale: AllOpt = False,
) -> None:
    """Draw figures from a run or a sweep on disk and print their paths."""
    path, out = folder(path, "plot"), out_path(out)
    if (kind or "").lower() == "phase":  # (a figure of the theory, not of runs: it was refused as any unknown kind)
        raise GradflowError(f"--kind {kind!r} is not allowed: the phase diagram is mean-field theory's, drawn from no "
                            "runs: `gradflow theory phase --activation tanh`; choices: " + ", ".join(KINDS))
    kind = choose("--kind", kind or "standard", KINDS)
    if where and kind == "standard":
        raise GradflowError(f"--where {where[0]} needs --kind: the standard set draws every run of its folder; "
                            f"choices: {', '.join(k for k in KINDS if k != 'standard')}")
    out_dir, out_file, fmt = figure_target(out, path / store.FIGURES_DIR, fmt, several=kind == "standard")
    o = Options(quantity=quantity, step=_step(step), color=color, facet=facet, x=x, y=y, value=value,
                theory=theory, run=run)
    refuse_unused(kind, {k: getattr(o, k) for k in ("quantity", "step", "color", "facet", "x", "y", "value",
                                                      "theory", "run")})
    store.find_runs(path)  # a missing folder or one without runs: say so before anything else
    if kind == "standard":
        _standard_sets(path, out, out_dir, fmt, include_stale)
        return
    store.check_writable(out_dir, option="--out")
    df = load_table(path, KINDS[kind][0], include_stale)
    if where:  # (before the options' checks: a key it fixes is no axis)
        df = _where(df, where).copy()
    beside = f"-where-{file_part(','.join(where))}" if where else ""  # (beside the figure of every run)
    # --all's figure beside the one of the current runs, not over it, its title saying what it adds
    stale = int((df.drop_duplicates("run")[store.STATUS] == store.STALE).sum()) if include_stale else 0
    beside += "-all" if stale else ""
    try:
        check_options(df, kind, o, f"{path} (the runs of --where {' '.join(where)})" if where else str(path))
        tell = _draw_parts(kind, df, o, where, fmt, lambda stem, tail: _part_file(out_file, tail)
                           or out_dir / f"{stem}{beside}{_part_suffix(tail)}.{fmt}", stale)
    except NotVaried as e:  # (a ratio over model.depth "does not vary": its other depths' runs were stale)
        if not include_stale and not where and \
                (stale := sum(r[store.STATUS] == store.STALE for r in store.runs(path))):
            e.args = (f"{e}; {stale} stale run{'s' * (stale != 1)} (of an earlier sweep spec) left out: --all "
                      f"draws {'them' if stale != 1 else 'it'}",)
        raise _kept_by(e, where)
    tell()
    _left_out(path, where)


def _draw_parts(kind: str, df: pd.DataFrame, o: Options, where: list[str] | None, fmt: str,
                file_of: Callable[[str, str], Path], stale: int = 0) -> Callable[[], None]:
    """Draws `kind` of `df` as `figure_parts` splits it (one figure; of curves, gradnorm and profile, one per value
    of a key left no channel), each into `file_of(its stem, its part's name)` (`part_names`'); returns what prints
    their paths, the line saying it split them, and the figures of the same name there from an earlier drawing
    (`_earlier_parts`)."""
    parts = figure_parts(kind, df, o)
    written = []
    for (items, part), tail in zip(parts, part_names(parts)):
        fig, stem = draw(kind, part, o)
        _say_where(fig, where)
        if stale:  # (--all: the runs of earlier sweep specs drawn with the current ones)
            fig.suptitle(f"{fig.get_suptitle()}\nwith {stale} stale run{'s' * (stale != 1)} of an earlier sweep "
                         "spec (--all)", fontsize=10)
        say_part(fig, items, kind)
        written.append(save(fig, file_of(stem, tail), fmt))

    def tell() -> None:
        _print_paths(written)
        if note := split_note(kind, parts):
            print_note(note, style="yellow", to=err_console)
        _earlier_parts(Path(file_of(stem, "")).with_suffix(written[0].suffix), written)
    return tell


def _earlier_parts(whole: Path, written: list[Path]) -> None:
    """A line naming the figures beside `whole` (the file of one figure of every run) that are it or one of its
    per-value figures (`whole`'s stem, `-KEY=VALUE`) and that this command did not draw: drawn before the runs
    split otherwise (a key more swept, or one less), they read as current beside the new ones. Named, not
    removed, as the standard set's (`_earlier_figures`): the folder may hold a user's own figures."""
    import glob as globbing

    family = re.compile(rf"{re.escape(whole.stem)}(-[\w.+]+=.*)?{re.escape(whole.suffix)}")
    earlier = sorted(p.name for p in whole.parent.glob(f"{globbing.escape(whole.stem)}*{whole.suffix}")
                     if p.is_file() and p not in written and family.fullmatch(p.name))
    _say_earlier(whole.parent, earlier, "from an earlier drawing, whose runs were split into figures otherwise; "
                 "they may no longer apply")


def _part_suffix(tail: str) -> str:
    """A figure of `figure_parts`' file name ending from its `part_names` name: `-optim.lr=0.1` (nothing for
    the one figure of all runs)."""
    return f"-{tail}" if tail else ""


def _part_file(out_file: Path | None, tail: str) -> Path | None:
    """--out FILE for one of several figures: FILE's name with the part's ending (curves-optim.lr=0.1.png)."""
    return out_file.with_name(f"{out_file.stem}{_part_suffix(tail)}{out_file.suffix}") if out_file else None


def _say_where(fig, where: list[str] | None) -> None:
    """The title's last line names the runs --where kept: a value titles leave out as the default (skip=none,
    norm=none) read as a figure of plain nets, with no word that the study swept skips."""
    if where:
        fig.suptitle(f"{fig.get_suptitle()}\nonly the runs with {' '.join(where)} (--where)", fontsize=10)


def _values_of(runs: pd.DataFrame, sources: list[str], where: list[str]) -> str:
    """The values the sources have of the keys --where names (it said which kept none, not what they hold):
    " (rs: init.name standard; mn: ...)", or "" where no key is a column."""
    keys = [k for k in dict.fromkeys(full_key(runs, c.partition("=")[0].strip()) or c.partition("=")[0].strip()
                                     for c in where) if k in runs.columns]
    if not keys:
        return ""
    parts = []
    for s in sources:  # (of several keys, the combinations it has: each key's values alone read as a match)
        mine = runs.loc[runs[store.SOURCE] == s, keys]
        held = list(dict.fromkeys("/".join(number(v) for v in row) for row in mine.itertuples(index=False)))
        parts.append(f"{s}: {'/'.join(keys)} {', '.join(held)}")
    return f" ({'; '.join(parts)})"


def _kept_by(e: NotVaried, where: list[str] | None) -> NotVaried:
    """A key "does not vary" said with the --where that left it one value ("model.depth, which does not vary in
    this data (values: 10)" under --where depth=10 read as a sweep of one depth)."""
    if where and "--where" not in str(e):
        e.args = (f"{e}: --where {' '.join(where)} kept only those runs",)
    return e


def _where(df: pd.DataFrame, where: list[str]) -> pd.DataFrame:
    """The rows --where keeps (plot's and compare's), KEY a swept key or the status, as ls takes them."""
    swept = swept_keys(df)
    return keep_where(df, where, swept, [*swept, store.STATUS])


def _standard_sets(path: Path, out: Path | None, out_dir: Path, fmt: str, include_stale: bool) -> None:
    """Draws and prints the standard set of PATH; of a folder of several sweeps, each sweep's own
    (`studies`), into its figures folder as `gradflow plot SWEEP` draws it, or into --out/SWEEP. A sweep
    with nothing to draw (every run stale, or none probed) is said and passed over, unless none has
    anything."""
    from gradflow.plots.standard import standard_sets, studies

    folders = studies(path)
    targets = {folder: out_dir if folder == path else (out_dir / folder.relative_to(path) if out is not None
                                                       else folder / store.FIGURES_DIR) for folder in folders}
    for target in targets.values():
        store.check_writable(target, option="--out")
    left_out: list[str] = []
    with progress_bar() as bar:  # a big sweep's set takes seconds
        task = bar.add_task("figures", total=None)
        drawn, passed_over, failed = standard_sets(
            folders, targets.__getitem__, fmt, include_stale,
            on_saved=lambda _, n: bar.update(task, total=n, advance=1),
            on_folder=lambda f: bar.update(task, description="figures" if f == path else str(f.relative_to(path))[:40],
                                           completed=0, total=None), left_out=left_out)
    written = [p for _, figures in drawn for p in figures]
    if not written and not failed:
        raise GradflowError(f"{path}: nothing to draw in any of its {len(folders)} folders of runs")
    _print_paths(written)
    for line in left_out:  # the usual figures the runs cannot make (a frozen backbone's profiles were left out
        print_note(line, style="yellow", to=err_console)  # without a word)
    for why in passed_over:  # (on stderr, after the paths: stdout is the figures' paths, one a line)
        print_note(f"passed over: {why}", style="yellow", to=err_console)
    for target in dict.fromkeys(targets.values()):
        _earlier_figures(target, set(written), fmt)
    _left_out(path)
    if len(failed) == 1:  # the rest of the set is drawn: an error all the same
        raise GradflowError(failed[0])
    if failed:  # (a full disk fails every figure: a line each, not one line of them all)
        for why in failed:
            print_note(why, style="red", to=err_console)
        raise GradflowError(f"{len(failed)} figures not drawn (each said above); the others are drawn")


def _earlier_figures(target: Path, written: set[Path], fmt: str) -> None:
    """A line naming the figures of this format in `target` that this command did not draw: a figure the set
    leaves out now (no run clips any more, a run removed) stayed there from an earlier drawing, and read as
    current beside the new set. They are named, not removed: the folder may hold a user's own figures."""
    earlier = sorted(p.name for p in target.glob(f"*.{fmt}") if p.is_file() and p not in written)
    _say_earlier(target, earlier, "from an earlier drawing; one the set leaves out now may no longer apply")


def _say_earlier(folder: Path, earlier: list[str], why: str) -> None:
    """The line naming the figures `earlier` in `folder` that this command did not draw (the first four), and
    `why` they may not apply; none where there are none."""
    if earlier:
        names = ", ".join(earlier[:4]) + (f" and {len(earlier) - 4} more" if len(earlier) > 4 else "")
        print_note(f"also in {folder}, not drawn by this command: {names} ({why})", style="yellow", to=err_console)


OTHER_IMAGES = ("jpg", "jpeg", "tif", "tiff", "eps", "ps", "webp", "gif", "bmp")  # image files gradflow does not write
# files no figure goes in: `--out notes.txt` made a folder of that name (and one named run.json in a sweep)
NOT_FIGURES = ("txt", "md", "json", "csv", "yaml", "yml", "html", "htm", "parquet", "py", "log", "ipynb")


def figure_target(out: Path | None, folder: Path, fmt: str | None, several: bool = False
                  ) -> tuple[Path, Path | None, str]:
    """Where figures go, as (folder, file or None, format): into `out` (default `folder`); or, drawing one
    figure, into the file `out` names by a figure suffix (`--out fig.pdf` made a folder named fig.pdf),
    unless a folder of that name is there already."""
    suffix = out.suffix.lower().lstrip(".") if out is not None and not out.is_dir() else ""
    if out is not None and not out.is_dir() and not out.parent.exists():  # (a mistyped folder was made without a
        # word, as `report --out` refuses: the figures would be lost in it)
        raise GradflowError(f"--out {out}: the folder {out.parent} does not exist; create it first or write "
                            "elsewhere")
    if suffix in OTHER_IMAGES or suffix in NOT_FIGURES:  # (each made a folder of that name)
        raise GradflowError(f"--out {out} names a .{suffix} file; figures are {', '.join(FORMATS)}: give "
                            f"{out.with_suffix('.png')}, or a folder")
    if suffix not in FORMATS:
        return (out if out is not None else folder), None, choose("--format", (fmt or "png").lower(), FORMATS)
    if several:
        raise GradflowError(f"--out {out} names a .{suffix} file, and the standard set is several figures: give a "
                            "folder, or --kind KIND for one figure")
    if fmt is not None and fmt.lower() != suffix:
        raise GradflowError(f"--out {out} names a .{suffix} file but --format is {fmt}: give one of them")
    return out.parent, out, suffix


# --- gradflow compare ------------------------------------------------------------------------------
def _step(text: str | None) -> int | str | None:
    return None if text is None else parse_step(text.strip(), "--step ")


def _difference(a: float, b: float, how: str) -> str:
    d = matching.difference(a, b, how)
    if math.isnan(d):
        return "-"
    return f"×{number(d, 3)}" if how == "ratio" else ("+" if d >= 0 else "") + number(d, 3)


SHORT_LABEL = 12  # a source label longer than this is a letter in the comparison table


def _widths(heads: list[tuple[str, bool]], blocks: list[list[list[str]]]) -> list[int]:
    """Each column's width unfolded, in a table of these headers and blocks of rows (rich markup)."""
    rows = [row for block in blocks for row in block]
    return [max([cell_len(line) for line in h.split("\n")] + [cell_len(Text.from_markup(row[j]).plain) for row in rows])
            for j, (h, _) in enumerate(heads)]


def _span(widths: list[int]) -> int:
    """The terminal columns a table of these column widths takes: a bar and two spaces per column, one bar
    at the end."""
    return sum(w + 3 for w in widths) + 1


def show_comparison(table: pd.DataFrame, sources: list[str], by: list[str], differ: dict[str, list],
                    pooled: list[str] = (), flagged: list[str] = (), apart: dict[str, list] | None = None,
                    partial: list[str] = (), where: list[str] = (), module_depth: bool = False,
                    runs: pd.DataFrame | None = None) -> None:
    """The comparison table and its notes (`runs`: the runs compared, whose ratios a recurrent net's notes say
    in time steps). `partial`: the keys of `differ` that only some sources set at
    all (a Recorder's runs beside `gradflow run`'s), named by group rather than one by one; `where`: the
    --where filters that left no swept key to match on; `module_depth`: some runs' model.depth is a custom
    module's, read from its probe points (said under the table, as under ls's)."""
    shown = [(c, label, how) for c, label, how in matching.COMPARED
             if c in table.columns and np.isfinite(pd.to_numeric(table[c], errors="coerce")).any()]
    # long labels (a run's folder name) as letters in the table, each named above it: folded into a column
    # they broke mid-name
    names = sources if max(map(len, sources)) <= SHORT_LABEL else \
        [chr(ord("A") + i) if i < 26 else f"S{i + 1}" for i in range(len(sources))]
    if names != sources:
        for name, s in zip(names, sources):
            print_note(f"{name} = {s}")
    print_note(f"compare: {' vs '.join(names)}")  # (a rich title is padded to the table's width)
    heads, lines, widths = _layout(_blocks(table, sources, shown), by, names)
    need = _span(widths)
    columns, hidden, fits = _fit_columns(heads, lines, widths, len(names) - 1)
    t = Table()
    for header, right, _ in columns:  # (too wide with every difference column gone: cells fold, never end in "…")
        t.add_column(header, justify="right" if right else "left", no_wrap=fits,
                     overflow="ellipsis" if fits else "fold")
    ends = [i == len(block) - 1 for block in lines for i in range(len(block))]
    for i, end in enumerate(ends):
        t.add_row(*(cells[i] for _, _, cells in columns), end_section=end)
    console.print(t)
    for note in _comparison_notes(table, names, by, differ, shown, pooled, flagged, apart, partial, hidden, need,
                                  where, module_depth, runs):
        print_note(note)
    if any(c == "chi1_theory" for c, _, _ in shown) and matching.LIMIT in table and table[matching.LIMIT].any():
        print_note(LIMIT_NOTE)


def _blocks(table: pd.DataFrame, sources: list[str], shown: list[tuple]) -> list[tuple[list[str], list[list[str]]]]:
    """Each config's block: its key values and its rows (label, a value per source, a difference per other
    source), the cells rich markup."""
    blocks = []
    for cell in dict.fromkeys(table["cell"]):
        part = table[table["cell"] == cell].set_index("source")
        keys = [number(v) if v != "\0nan" else "-" for v in cell]
        status = []
        for s in sources:
            st, n = part.loc[s, "status"], part.loc[s, "runs"]
            word = st.split()[-1].rstrip(FLAGGED) if st else ""
            status.append(f"[{store.STATUS_COLOURS.get(word, 'white')}]{escape(st)}[/]" if n else "[dim]no run[/]")
        rows = [["runs", *status, *([""] * (len(sources) - 1))]]
        for col, label, how in shown:
            vals = [float(part.loc[s, col]) if part.loc[s, "runs"] else math.nan for s in sources]
            marks = [LIMIT_MARK if col == "chi1_theory" and bool(part.loc[s].get(matching.LIMIT, False)) else ""
                     for s in sources]
            rows.append([label, *(number(v, 3) + m for v, m in zip(vals, marks)),
                         *(_difference(vals[0], v, how) for v in vals[1:])])
        blocks.append((keys, rows))
    return blocks


def _layout(blocks: list[tuple[list[str], list[list[str]]]], by: list[str], names: list[str]
            ) -> tuple[list[tuple[str, bool]], list[list[list[str]]], list[int]]:
    """The table's headers (text, right-aligned), its lines block by block and its column widths: a column
    per key where the whole table fits so, else one column that stacks each block's keys as key=value lines
    beside its rows (folded into narrow columns, keys and values broke mid-word)."""
    # the short names ls shows: a group's choice as it is set (model=mlp, not name=mlp), a key by its last part
    # (depth, grad_clip), unless two would read alike (a Recorder's flat depth beside model.depth: both whole)
    named = abbreviate(by)
    short = [named[k] for k in by]
    values = [("", False)] + [(s, True) for s in names] + [(f"{s} vs {names[0]}", True) for s in names[1:]]
    heads = [(k, False) for k in short] + values
    lines = [[keys + row if i == 0 else [""] * len(keys) + row for i, row in enumerate(rows)] for keys, rows in blocks]
    widths = _widths(heads, lines)
    if by and _span(widths) > console.width:
        blank = [""] * len(values)
        stacked = []
        for keys, rows in blocks:
            named = [f"{k}={v}" for k, v in zip(short, keys)]
            stacked.append([[named[i] if i < len(named) else ""] + (rows[i] if i < len(rows) else blank)
                            for i in range(max(len(named), len(rows)))])
        narrow = _widths([("config", False)] + values, stacked)
        if _span(narrow) < _span(widths):
            return [("config", False)] + values, stacked, narrow
    return heads, lines, widths


def _fit_columns(heads: list[tuple[str, bool]], lines: list[list[list[str]]], widths: list[int], n_differences: int
                 ) -> tuple[list[tuple[str, bool, list[str]]], list[str], bool]:
    """The columns (header, right-aligned, cells) that fit the terminal, the difference columns (the last
    `n_differences`) going last first, their headers on two lines where that keeps more of them; the
    headers of those left out; and whether the rest fits."""
    columns = [(h, right, [row[j] for block in lines for row in block]) for j, (h, right) in enumerate(heads)]
    hidden = []
    fixed = len(columns) - n_differences  # the columns before the difference columns

    def fitting(cols) -> int:  # how many columns fit, the difference columns going last first
        ws = _widths([(h, right) for h, right, _ in cols], lines)
        n = len(cols)
        while _span(ws[:n]) > console.width and n > fixed:
            n -= 1
        return n

    two_lines = columns[:fixed] + [(h.replace(" vs ", "\nvs ", 1), right, cells) for h, right, cells in columns[fixed:]]
    if fitting(two_lines) > fitting(columns):  # the differences' headers on two lines keep more of them
        columns = two_lines
        widths = _widths([(h, right) for h, right, _ in columns], lines)
    while _span(widths) > console.width and len(columns) > fixed:
        hidden.insert(0, columns.pop()[0])  # the last difference column first
        widths.pop()
    return columns, hidden, _span(widths) <= console.width


def _comparison_notes(table: pd.DataFrame, names: list[str], by: list[str], differ: dict[str, list],
                      shown: list[tuple], pooled: list[str], flagged: list[str], apart: dict[str, list] | None,
                      partial: list[str], hidden: list[str], need: int, where: list[str] = (),
                      module_depth: bool = False, runs: pd.DataFrame | None = None) -> list[str]:
    """The notes under the comparison table: what its ratios are, what runs were matched on, where the
    sources differ, what its numbers are over, which runs are flagged, how differences read and which
    difference columns (`hidden`) the terminal left out, `need` columns showing all."""
    notes = [in_time(k, NOTES[k], runs) for k, shows in (("grad_ratio.init", lambda c: c.startswith("grad_ratio.")),
                                       ("signal_ratio.init", lambda c: c == "signal_ratio.init"))
             if any(shows(c) for c, _, _ in shown)]  # (as under ls: each ratio the table shows, defined)
    notes.append(f"matched on {', '.join(by)}" if by else
                 f"only the runs with {' '.join(where)} (--where): every run of a source in one row" if where else
                 "no swept key in common: every run of a source in one row")
    if module_depth and (DEPTH_KEY in by or DEPTH_KEY in differ):
        notes.append(MODULE_DEPTH_NOTE)
    if apart:
        notes.append("no configuration is in more than one source: " + "; ".join(
            f"{k} " + ", ".join(f"{'/'.join(map(key_value, v)) or '-'} in {n}" for n, v in zip(names, vals))
            for k, vals in apart.items()) + "; --by KEY matches on fewer keys, pooling the rest")
    if differ:
        named = [f"{k} ({' | '.join(map(key_value, v))})" for k, v in differ.items() if k not in partial]
        # the keys only some sources set, by group and by who sets them (every default key of `gradflow
        # run` beside a Recorder's, `- | 4` each, or a Gaussian source's data.* beside MNIST-1D's, filled
        # 15 lines at 80 columns)
        shown_groups = {k.split(".")[0] for k in differ if k not in partial and "." in k}
        for setting, keys in matching.setters(differ, partial, names).items():
            # a few by name and value (init.gain=1 of init=xavier_normal beside kaiming_normal's init.mode:
            # `the other keys of init` twice named neither), more by group
            if len(keys) <= matching.NAMED_PARTIAL:
                said = and_list([f"{k}={key_value(next(v for v in differ[k] if not is_missing(v)))}" for k in keys])
            else:
                whose = "the other keys" if shown_groups & {k.split(".")[0] for k in keys if "." in k} else "the keys"
                said = partial_phrase(keys, whose)
            named.append(f"{said}, which only {and_list(list(setting))} set{'s' * (len(setting) == 1)}")
        notes.append("sources differ in " + "; ".join(named))
    if (table["runs"] > 1).any():  # (`pooled`: the keys those runs differ in)
        ended = [{part.split("× ")[-1].rstrip(FLAGGED) for part in str(cell).split(", ")} for cell in table[store.STATUS]]
        mixed = any(store.OK in st and len(st) > 1 for st in ended)  # (a cell of ok runs beside diverged ones)
        notes.append("numbers are medians over the runs in a cell" +
                     (f", which differ in {', '.join(abbreviate(list(pooled)).values())}" if pooled else "") +
                     ("; after training (ratio end, loss, acc) over its runs that ended ok" if mixed else ""))
    if flagged:
        notes.append(f"{FLAGGED}: finished but flagged: {labels(flagged)}; gradflow ls --json shows why")
    others = names[1:len(names) - len(hidden)]  # the sources whose difference columns are shown
    if others:  # (in the sources' own names, as the columns' headers: `B vs A`)
        notes.append(f"differences: ratios as {and_list([f'×({n} / {names[0]})' for n in others])}, the rest as "
                     f"{and_list([f'{n} − {names[0]}' for n in others])}")
    if hidden:
        # (a column's header is two lines, "gelu" over "vs relu": one label here, never broken inside)
        notes.append(f"not shown ({console.width} columns): {labels(' '.join(h.split()) for h in hidden)}; "
                     f"{need} columns show all")
    return notes


@user_errors
def compare(
    paths: Annotated[list[str], typer.Argument(metavar="PATH",
                                                help="Two or more run or sweep folders (or folders of sweeps).",
                                                show_default=False)],
    kind: Annotated[str, typer.Option("--kind", "-k", help=f"The figure: {', '.join(COMPARE_KINDS)}.")] = "profile",
    quantity: Annotated[Optional[str], typer.Option(help="profile: the per-layer quantity.",
                                                    show_default="grad_norm")] = None,
    step: Annotated[Optional[str], typer.Option(
        help="profile/spectrum: a probed step or 'last'; ratio: 0 (init) or last (end).", show_default="0")] = None,
    color: Annotated[Optional[str], typer.Option(help="The swept key that colours the lines.",
                                                 show_default="the swept key with the fewest values, not depth")] = None,
    by: Annotated[Optional[list[str]], typer.Option(
        "--by", metavar="KEY", help="Line runs up across sources by their values of this key (repeatable); "
                                    "default: every key some source sweeps, seed aside (a cell of "
                                    "values one source lacks reads 'no run').",
        show_default=False)] = None,
    panels: Annotated[bool, typer.Option(
        "--panels", help="profile, curves, gradnorm: one panel per source instead of one line style per "
                         "source.")] = False,
    fmt: Annotated[Optional[str], typer.Option("--format", help="Figure format: png, pdf or svg.",
                                               show_default="png, or --out's suffix")] = None,
    out: Annotated[Optional[str], typer.Option(
        help="The folder to write the figure into, or the file (fig.png, fig.pdf, fig.svg).",
        show_default=str(COMPARE_DIR))] = None,
    where: Annotated[Optional[list[str]], typer.Option(
        metavar="KEY=VALUE", help="Compare only the runs whose KEY reads VALUE (repeatable), in every source, "
                                  "as ls --where keeps them, e.g. --where seed=0.", show_default=False)] = None,
    include_stale: AllOpt = False,
) -> None:
    """Overlay runs or sweeps from several results folders and tabulate their key numbers side by side."""
    paths, out = [folder(p, "compare") for p in paths], out_path(out)
    if len(paths) < 2:
        raise GradflowError(f"compare needs two or more folders; got {len(paths)}")
    kind = choose("--kind", kind, COMPARE_KINDS)
    out_dir, out_file, fmt = figure_target(out, COMPARE_DIR, fmt)
    o = Options(quantity=quantity, step=_step(step), color=color, by_source=panels)
    refuse_unused(kind, {k: getattr(o, k) for k in ("quantity", "step", "color")}, COMPARE_KINDS)
    if panels and kind not in ("profile", "curves", "gradnorm"):
        raise GradflowError(f"--panels does not apply to --kind {kind} (it applies to: profile, curves, gradnorm)")
    sources = matching.source_labels(paths)
    for p in paths:
        store.find_runs(p)
    store.check_writable(out_dir, option="--out")
    store.check_distinct(paths, "compare")

    runs = matching.load_runs(paths, sources, include_stale)
    matched_before = [] if by or not where else matching.match_keys(runs, sources)
    if where:  # (before --by and the matching: a key it fixes is matched on no more)
        every = runs
        runs = _where(runs, where)
        if lacking := [s for s in sources if not (runs[store.SOURCE] == s).any()]:
            raise GradflowError(f"--where {' '.join(where)} keeps no run of {', '.join(lacking)}"
                                f"{_values_of(every, lacking, where)}; gradflow ls "
                                f"{' '.join(str(p) for p, s in zip(paths, sources) if s in lacking)} shows their runs")
    given, by = by or [], [full_key(runs, k) or k for k in by or []]  # a key by its short name too (depth)
    matching.check_by(runs, sources, by, given)
    by = list(by or matching.match_keys(runs, sources))
    differ = matching.differing_keys(runs, sources)
    df = matching.overlay_table(paths, sources, runs, KINDS[kind][0], list(differ), include_stale)
    check_options(df, kind, o, " and ".join(map(str, paths)))
    o.facet = overlay_facet(df, kind, o)
    name = file_part("-vs-".join(file_part(s, 40) for s in sources), 160)
    name += f"-where-{file_part(','.join(where))}" if where else ""  # (beside the figure of every run)
    # (the stem's facet dropped: the panels follow from the data; the name says what was asked)
    try:
        tell = _draw_parts(kind, df, o, where, fmt, lambda stem, tail: _part_file(out_file, tail) or out_dir
                           / f"compare-{stem.split('-facet-')[0]}-{name}{_part_suffix(tail)}.{fmt}")
    except NotVaried as e:
        raise _kept_by(e, where)

    marked, flagged = mark_flagged(runs)  # ok*, as ls shows it: a run that learned nothing is no success
    show_comparison(matching.comparison(marked, sources, by), sources, by, differ, matching.pooled_keys(runs, by),
                    flagged, matching.unmatched(runs, sources, by), partial_keys(runs, list(differ), store.SOURCE),
                    where if matched_before and not by else [],  # (one row per source: --where's doing)
                    bool(module_depth_rows(runs).any()), runs)
    tell()


app.command("plot")(plot)
app.command("compare")(compare)
