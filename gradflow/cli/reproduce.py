"""`gradflow reproduce`: rerun a published experiment and check its claims.

Its tables read right at 80 columns and when piped: each column is at least as wide as its longest
word, so rich wraps their text between words and never folds a word, and nothing is cut short."""

from __future__ import annotations

import shlex
from contextlib import closing, nullcontext
from typing import Annotated, Optional

import typer
from rich.cells import cell_len
from rich.markup import escape
from rich.table import Table

from gradflow.cli.app import app
from gradflow.cli.console import (console, err_console, interruption, near_options, note_replaced, print_note,
                                  unknown_option, user_errors)
from gradflow.cli.sweep import report_page, run_plan
from gradflow.errors import GradflowError, UsageError, shorten
from gradflow.fmt import and_list
from gradflow.overrides import home_expanded


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@user_errors
def reproduce(
    ctx: typer.Context,
    name: Annotated[Optional[str], typer.Argument(help="An experiment (see --list), or `all`.", show_default=False)] = None,
    overrides: Annotated[Optional[list[str]], typer.Argument(
        help="Overrides for every arm, e.g. hydra/launcher=joblib or data.root=DIR (where CIFAR-10 is).",
        show_default=False)] = None,
    list_: Annotated[bool, typer.Option("--list", help="List the experiments (with a NAME: that one).")] = False,
    quick: Annotated[bool, typer.Option("--quick", help="The smallest honest size (same as --scale quick).")] = False,
    scale: Annotated[Optional[str], typer.Option(help="quick | default (CPU-sized, the default) | paper (the "
                                                      "paper's scale, for a GPU).", show_default=False)] = None,
    force: Annotated[bool, typer.Option("--force", help="Rerun runs that already finished.")] = False,
    report_: Annotated[bool, typer.Option("--report", help="Write the HTML report page (gradflow report).")] = False,
) -> None:
    """Rerun a published depth experiment, draw its figure, and check the paper's claims (PASS/FAIL)."""
    from gradflow import reproduce as rep
    from gradflow.sweep import check_overrides

    near_options(ctx, [name] if name else [])  # `--lst` is taken for the name: say which option it is near
    if name and name.startswith("--"):  # (--dry-run was "not a known experiment")
        raise UsageError(unknown_option(name.split("=", 1)[0], ctx))
    # (as typed, with its value: --list's advice to drop it gave `--scale` alone, which then had no value)
    given = [o if v is True else f"{o} {v}" for o, v in (("--quick", quick), ("--scale", scale), ("--force", force),
                                                         ("--report", report_)) if v]
    if more := [o for o in overrides or [] if o in (*rep.names(), "all")]:  # (read as an override: "write key=value")
        _second_name(name, more, [o for o in overrides or [] if o not in more], list_, given, scale, quick)
    if not name and given:  # (they printed the list, silently)
        raise GradflowError(f"{' and '.join(given)} appl{'y' if len(given) > 1 else 'ies'} to a run of an experiment: "
                            "give its name "
                            f"(gradflow reproduce NAME {given[0]}); gradflow reproduce --list lists them")
    if list_ and (given := given + [shorten(o, 40) for o in overrides or []]):  # (--list NAME printed its table,
        raise GradflowError(  # the options and overrides, a misspelled key among them, passed over without a word)
            f"{and_list(given)} appl{'y' if len(given) > 1 else 'ies'} to a run of {name}, and --list runs nothing; "
            f"drop --list to run it (gradflow reproduce {name} {' '.join(given)}), or the rest to list it")
    if list_ or not name:
        specs = [rep.Spec.load(n) for n in (rep.names() if name in (None, "all") else [name])]
        print_note("reproducible experiments" if len(specs) > 1 else f"experiment {name}")
        console.print(list_table(specs, console.width, scales=len(specs) == 1))  # --list NAME: what each scale runs
        return
    scale = _one_scale(quick, scale)
    near_options(ctx, overrides)
    note_replaced(overrides)
    overrides = home_expanded(overrides)
    rep.check_scale(scale)  # before anything is printed, as a bad name is (Spec.load)
    check_overrides(list(overrides or []), "reproduce")  # (rep.run checks them again, with every arm's keys)
    outcomes, started = [], []
    # (planning every experiment takes seconds before the first header: on a terminal, a spinner says so)
    planning = console.status("planning the arms of every experiment ...") if name == "all" else None

    def header(n: str) -> None:  # once every arm is planned: a misspelled key is the only line printed
        if planning:
            planning.stop()
        started.append(n)
        console.rule(f"[bold]{escape(n)}[/]")
        print_note(f"paper: {rep.Spec.load(n).paper}")  # whole: a rule's title would be cut to one line

    # every experiment's arms planned before the first runs: a bad override or missing data files are the
    # one line printed, not an error after the experiments before it
    with closing(rep.runs(rep.names() if name == "all" else [name], scale, list(overrides or []), force,
                          launch=lambda p: run_plan(p, table=False), on_planned=header)) as results, \
            planning or nullcontext():  # (stopped however the block ends: an error's line came under it)
        while True:
            try:  # (a Ctrl-C inside a sweep is the sweep's: its line, exit 130)
                outcome = next(results, None)
            except KeyboardInterrupt:  # between arms, or while the claims are checked and the figures drawn
                word, code = interruption()
                said = (f"{word}: {started[-1]}'s finished runs are kept; rerun the same command to resume and "
                        "check its claims") if started else f"{word} while planning, before any run; nothing changed"
                err_console.print(said, highlight=False, soft_wrap=True)
                raise typer.Exit(code) from None
            if outcome is None:
                break
            print_outcome(outcome, report_)
            outcomes.append(outcome)
    failed = not all(o.passed for o in outcomes)
    if len(outcomes) > 1:  # (after 1200 lines, the whole in one: the last line was the last experiment's figure)
        console.rule("[bold]all[/]")
        print_note(rep.overall(outcomes), style="red" if failed else "green")
    if failed:
        raise typer.Exit(1)


def _one_scale(quick: bool, scale: str | None) -> str:
    """The scale asked for: --quick, or --scale's (case counts for nothing in a choice: Quick), else default;
    both at once are refused unless they agree."""
    scale = scale.lower() if scale else scale
    if quick and scale not in (None, "quick"):
        raise GradflowError(f"--quick and --scale {scale} ask for two scales; give one")
    return "quick" if quick else scale or "default"


def _second_name(name: str | None, more: list[str], rest: list[str], list_: bool, given: list[str],
                 scale: str | None, quick: bool) -> None:
    """Refuse a second experiment's name (`reproduce he2015 he2016`), with the commands that run (or list) each,
    the rest of the command line in every one; a misspelled first name, or two scales, is refused as alone."""
    from gradflow import reproduce as rep

    if name and name != "all":
        rep.Spec.load(name)  # (its own error: the commands would repeat a misspelled name)
    names = list(dict.fromkeys(n for n in (name, *more) if n))
    if list_:
        one = next((n for n in names if n != "all"), None)
        raise GradflowError("--list takes one experiment" + (f": `gradflow reproduce --list {one}` lists it, " if one
                                                             else ", or none: ") + "`gradflow reproduce --list` lists them all")
    _one_scale(quick, scale)
    tail = "".join(f" {o}" for o in given)
    tail += "".join(f" {shlex.quote(o)}" for o in rest)
    each = [n for n in names if n != "all"]
    if names == each[:1]:  # (he2015 he2015)
        raise GradflowError(f"{each[0]} is given twice; give it once: `gradflow reproduce {each[0]}{tail}`")
    runs = f"{', then '.join(f'`gradflow reproduce {n}{tail}`' for n in each)}; or " if each else ""
    raise GradflowError(f"gradflow reproduce runs one experiment, or all of them: {runs}"
                        f"`gradflow reproduce all{tail}`")


def print_outcome(outcome, report_: bool) -> None:
    """One experiment's claims table, its verdict line, and where its report and figures are."""
    from gradflow import reproduce as rep

    n = outcome.spec.name
    print_note(f"{n}: claims")
    table, shared = claims_table(outcome.claims, console.width)
    console.print(table)
    for texts, under in shared:
        print_note(f"reference and source, {texts}: {under}")
    for texts, note in rep.tolerance_notes(outcome.claims):
        print_note(f"tolerance, {texts}: {note}")
    print_note(f"{n}: {outcome.verdict}", style="green" if outcome.passed else "red")
    print_note(f"report: {outcome.report}")
    for f in outcome.figures:
        print_note(f"figure: {f}")
    for why in outcome.not_drawn:
        print_note(f"figure not drawn, {why}", style="yellow")
    report_page([outcome.report.parent], report_)


WIDE = 120  # columns from which every claim field (and every --list field) gets its own column


def column_widths(cells: dict[str, list[str]], width: int, weights: dict[str, int],
                  whole: tuple[str, ...] = ()) -> dict[str, int]:
    """The text width of each column of a boxed rich table `width` characters wide (with its borders and
    padding): at least the column's longest word (header included), so no word is ever folded, or for a
    column of `whole` its longest line (a test, `0.707 ± 0.03`, broke after its ±), at most its longest line;
    the room left over is shared out by `weights`. Where even the longest words do not fit (a very narrow
    terminal), each column gets its longest word and the table is wider than `width`."""
    words = {c: max((cell_len(w) for t in [c, *v] for w in t.split()), default=1) for c, v in cells.items()}
    lines = {c: max(words[c], *(cell_len(ln) for t in [c, *v] for ln in t.splitlines())) for c, v in cells.items()}
    words.update({c: max((cell_len(ln) for t in cells[c] for ln in t.splitlines()), default=words[c])
                  for c in whole if c in cells})
    words.update({c: max(words[c], cell_len(c)) for c in whole if c in cells})
    out = dict(words)
    left = width - (3 * len(cells) + 1) - sum(out.values())  # a bar and two spaces per column, one bar at the end
    while left > 0:
        growing = [c for c in out if out[c] < lines[c]]
        if not growing:
            break
        total = sum(weights.get(c, 1) for c in growing)
        given = 0
        for c in growing:
            more = min(max(1, left * weights.get(c, 1) // total), lines[c] - out[c], left - given)
            out[c] += more
            given += more
        left -= given
    return out


def _table(cells: dict[str, list[str]], width: int, weights: dict[str, int], whole: tuple[str, ...] = ()) -> Table:
    """A table laid out by column_widths, its rows separated by lines; cells are rich markup (escaped by
    the caller) whose plain text `cells` holds."""
    table = Table(show_lines=True)
    for col, w in column_widths(cells, width, weights, whole).items():
        table.add_column(col, width=w, overflow="fold")
    return table


def list_table(specs, width: int, scales: bool = False) -> Table:
    """`--list`: one row per experiment. Narrower than WIDE (or with `scales`, each scale's size as a line
    of its own), the paper, the claim and the runtime are labelled lines of one cell beside the name, so
    that no column is a word wide at 80 columns."""
    rows = [{"name": s.name, "paper": s.paper, "claim": s.summary, "runtime (default scale)": s.runtime}
            for s in specs]
    if scales:
        for r, s in zip(rows, specs):
            r["runtime (default scale)"] += "".join(f"\n--scale {sc}: {text}" for sc, text in s.scaled.items())
    if width < WIDE or scales:
        rows = [{"name": r["name"], "experiment": f"paper: {r['paper']}\nclaim: {r['claim']}\n"
                 f"runtime (default scale): {r['runtime (default scale)']}"} for r in rows]
    columns = list(rows[0]) if rows else ["name"]
    table = _table({c: [r[c] for r in rows] for c in columns}, width,
                   {"name": 0, "paper": 3, "claim": 4, "runtime (default scale)": 2, "experiment": 1})
    for r in rows:
        table.add_row(*(escape(r[c]) for c in columns))
    return table


def claims_table(claims, width: int) -> tuple[Table, list[tuple[str, str]]]:
    """The claims, one row each, every cell whole. Narrower than WIDE, the reference and the source are
    lines under the claim's text, so that six columns are not each cut to a word per line at 80 columns;
    where claims share them (a for_each claim's), they are said once, under the table: the lines to print
    there, (the claims as one phrase, their reference and source), are returned with the table."""
    from gradflow import reproduce as rep

    wide = width >= WIDE
    columns = rep.CLAIM_COLUMNS if wide else ("claim", "measured", "test", "result")
    cells_of = [rep.claim_cells(r) for r in claims]
    for cells in cells_of:  # (a qualitative claim's result, "PASS (qualitative)" on one line, took the claim's room)
        cells["measured"], cells["result"] = (cells[c].replace(" (", "\n(", 1) for c in ("measured", "result"))

    def fits(cols) -> bool:  # every column at least its longest word (the claim's with the lines under it)
        under = [c for c in rep.CLAIM_COLUMNS if c not in cols]
        longest = [max((cell_len(w) for cells in cells_of for p in ([c, *under] if c == "claim" else [c])
                        for w in [c, *(cells[p].splitlines() if p == "test" and c == "test" else cells[p].split())]),
                       default=1) for c in cols]  # (a test is kept whole: column_widths' `whole`)
        return sum(longest) + 3 * len(cols) + 1 <= width

    if not wide:  # where the words do not fit as columns (60 columns folded "[2.5e-0" over "7,"), the test
        # and then the measured value go under the claim too
        columns = next((c for c in (columns, ("claim", "measured", "result")) if fits(c)), ("claim", "result"))
    under_claim = [c for c in ("reference", "source", "measured", "test") if c not in columns]
    sharing: dict[tuple[str, str], list[str]] = {}  # (reference, source) -> the claims they are under
    for cells in cells_of:
        if "reference" in under_claim:
            sharing.setdefault((cells["reference"], cells["source"]), []).append(cells["claim"])
    shared = {lines: texts for lines, texts in sharing.items() if len(texts) > 1}
    plain, markup = [], []
    for r, cells in zip(claims, cells_of):
        # spec text is not markup: "exp(E[log R] / 2)" must print as written
        marked = {c: escape(v) for c, v in cells.items()}
        marked["result"] = f"[{'green' if r.passed else 'red'}]{marked['result']}[/]"
        if under_claim:  # the reference and the source (and the test), whole, as dimmed lines under the claim
            under = "\n".join(f"{c}: {cells[c]}" for c in under_claim)
            if (cells["reference"], cells["source"]) in shared:
                under = under.replace(f"reference: {cells['reference']}\nsource: {cells['source']}",
                                      "reference and source: below the table", 1)
            cells["claim"] += f"\n{under}"
            marked["claim"] += f"\n[dim]{escape(under)}[/]"
        plain.append(cells)
        markup.append(marked)
    table = _table({c: [cells[c] for cells in plain] for c in columns}, width,
                   {"claim": 3, "source": 3, "reference": 2, "measured": 2, "test": 1, "result": 1}, whole=("test",))
    for marked in markup:
        table.add_row(*(marked[c] for c in columns))
    return table, [(rep.merged_texts(texts), f"{ref}; {source}") for (ref, source), texts in shared.items()]
