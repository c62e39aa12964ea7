"""The clean, sweep and reproduce commands at their corners: what clean counts, names and takes as a yes; a
sweep's --points given twice, its stale runs left out of its table and said, its piped lines numbered one by
one; reproduce --report without a name, and a claim's result in its colour."""
from __future__ import annotations

import io
import json
import shutil

import pytest

from gradflow import store
from tests.commands import undeletable

SMALL = ["data=gaussian", "data.n_train=128", "data.n_test=64", "data.dim=8", "model.width=8", "model.depth=2",
         "train.steps=3", "train.batch_size=32", "train.eval_every=3", "threads=1"]


def _sweep(cli, results, *args, name="s"):
    return cli("sweep", *SMALL, *args, f"results={results}", "--name", name)


@pytest.fixture(scope="module")
def reported(tmp_path_factory):
    """`gradflow sweep model.depth=2,3,4 --report` once for the module (its page the costly part): a test
    copies the study into its own results folder (copytree keeps every file's and folder's time, which is
    all clean reads of it)."""
    from typer.testing import CliRunner

    from gradflow.cli import app

    results = tmp_path_factory.mktemp("reported") / "results"
    out = CliRunner().invoke(app, ["sweep", *SMALL, "model.depth=2,3,4", f"results={results}", "--name", "s",
                                   "--report"], catch_exceptions=False)
    assert out.exit_code == 0, out.output
    return results / "s"


def _reported(study, results):
    """The module's reported study, as this test's `s` (as `_sweep(..., "model.depth=2,3,4", "--report")`)."""
    shutil.copytree(study, results / "s")
    assert (results / "s" / store.REPORT_HTML).is_file()


# --- clean -----------------------------------------------------------------------------------------------

def test_clean_counts_and_names_leftovers_of_both_kinds_and_at_most_SHOWN(cli, results):
    """The count line counts every folder it would remove (leftovers too), each kind once; the list names
    SHOWN of them and counts the rest, so named + counted = the count line's number."""
    from gradflow.cli.clean import SHOWN

    assert _sweep(cli, results, "model.depth=2,3").exit_code == 0
    root = results / "s"
    plain = SHOWN + 1  # runs cut off before their run.json (a config.yaml alone, in a job's folder)
    for i in range(plain):
        (root / f"model.depth={100 + i}").mkdir()
        shutil.copy(root / "model.depth=2" / store.CONFIG_FILE, root / f"model.depth={100 + i}" / store.CONFIG_FILE)
    shutil.copytree(root / "model.depth=2", store.staging_dir(root / "model.depth=2"))  # a replacement cut off
    total = plain + 1
    out = cli("clean", str(root), "--stale", input="n\n")
    assert out.exit_code == 1, out.output
    lines = out.output.splitlines()
    assert lines[0] == (f"{total} runs to remove from {root}: {plain} left over (no run.json), "
                        "1 left over (a replacement cut off)"), out.output
    named = [ln for ln in lines[1:] if ln.startswith("  ") and "(left over)" in ln]
    assert len(named) == SHOWN, out.output
    assert f"  ... and {total - SHOWN} more" in lines, out.output
    assert all((root / f"model.depth={100 + i}").exists() for i in range(plain))  # said no: nothing removed


def test_clean_takes_yes_spelled_out_as_a_yes(cli, results):
    assert _sweep(cli, results, "model.depth=2,3,4").exit_code == 0
    assert _sweep(cli, results, "model.depth=2,3").exit_code == 0  # depth 4 now stale
    root = results / "s"
    out = cli("clean", str(root), "--stale", input="Yes\n")
    assert out.exit_code == 0 and "removed 1 run\n" in out.output, out.output
    assert not (root / "model.depth=4").exists() and (root / "model.depth=3").exists()


def test_clean_of_a_run_that_cannot_be_removed_is_one_line_and_removes_nothing(cli, results):
    # a run folder that could not be deleted (a shared folder; an immutable file) was a PermissionError's
    # traceback from shutil, after the runs before it had gone: every run is checked before any goes, and asked
    # of nothing
    assert _sweep(cli, results, "model.depth=2,3,4,5").exit_code == 0
    assert _sweep(cli, results, "model.depth=2,3").exit_code == 0  # depths 4 and 5 now stale
    root = results / "s"
    with undeletable(root / "model.depth=5" / store.RUN_FILE):
        out = cli("clean", str(root), "--stale")
        assert out.exit_code == 1, out.output
        text = " ".join(out.stderr.split())  # (the file that cannot go, or the first of a read-only folder's)
        assert text.startswith(f"error: cannot remove {root / 'model.depth=5'}") and text.endswith(
            f"; nothing removed: make it removable (or move it out of {root}) and clean again") and \
            len(out.stderr.splitlines()) == 1, out.output
        assert "remove them?" not in out.output and "Traceback" not in out.output, out.output
        assert sorted(p.name for p in root.iterdir() if p.name.startswith("model")) == \
            [f"model.depth={d}" for d in (2, 3, 4, 5)]
        assert store.read_run(root / "model.depth=4")["status"] == "ok"
    out = cli("clean", str(root), "--stale", "-y")
    assert out.exit_code == 0 and "removed 2 runs" in out.output, out.output


def test_clean_stale_keeps_a_failed_run_and_its_error(cli, results):
    # a failed run is the record of what went wrong (its error, its traceback): `clean --stale` removes stale,
    # incomplete and interrupted runs, never a failed one (nor an ok or diverged one)
    assert _sweep(cli, results, "model.depth=2,3,4").exit_code == 0
    assert _sweep(cli, results, "model.depth=2,3").exit_code == 0  # depth 4 now stale
    root = results / "s"
    record = json.loads((root / "model.depth=3" / store.RUN_FILE).read_text())
    record.update(status="failed", error="RuntimeError: boom", steps_done=1)
    (root / "model.depth=3" / store.RUN_FILE).write_text(json.dumps(record))
    out = cli("clean", str(root), "--stale", input="y\n")
    assert out.exit_code == 0 and "removed 1 run\n" in out.output, out.output
    assert not (root / "model.depth=4").exists()
    assert json.loads((root / "model.depth=3" / store.RUN_FILE).read_text())["error"] == "RuntimeError: boom"
    assert (root / "model.depth=2" / store.RUN_FILE).exists()


def test_clean_says_which_figures_and_page_predate_it_and_keeps_them(cli, results, reported):
    """After a grid shrinks, the figures and report page drawn from the old grid stay, whole, with the user's
    own file beside them; clean names them and the commands that redraw them from the runs left (nothing
    said they were out of date). Figures drawn before the removed run had ended cannot show it: no word."""
    import os

    _reported(reported, results)  # depth 2, 3, 4 with its report page
    root = results / "s"
    assert cli("plot", str(root)).exit_code == 0
    figures = store.figures_dir(root)
    (figures / "notes.txt").write_text("mine\n")
    drawn = sorted(p.name for p in figures.iterdir())
    assert len(drawn) > 1 and (root / store.REPORT_HTML).is_file()
    assert _sweep(cli, results, "model.depth=2,3").exit_code == 0  # depth 4 now stale
    out = cli("clean", str(root), "--stale", "-y")
    said = " ".join(out.output.split())
    assert out.exit_code == 0 and "removed 1 run" in said, out.output
    assert (f"figures/ and report.html in {root} predate this cleaning and may show the runs it removed; redraw "
            f"them from the runs left: `gradflow plot {root}`, `gradflow report {root}`") in said, out.output
    assert sorted(p.name for p in figures.iterdir()) == drawn and (root / store.REPORT_HTML).is_file()

    assert _sweep(cli, results, "model.depth=2,3,4").exit_code == 0  # depth 4 again, ended after the figures
    for p in [*figures.iterdir(), root / store.REPORT_HTML]:
        os.utime(p, (p.stat().st_atime, (root / "model.depth=4").stat().st_mtime - 3600))
    assert _sweep(cli, results, "model.depth=2,3").exit_code == 0
    out = cli("clean", str(root), "--stale", "-y")
    assert out.exit_code == 0 and "removed 1 run" in out.output and "predate" not in out.output, out.output

    # a file of the user's in figures/, written after the run ended and before the grid shrank (when a figure
    # drawn then would show it), is no figure drawn from it
    assert _sweep(cli, results, "model.depth=2,3,4").exit_code == 0
    (figures / "notes.txt").write_text("mine, again\n")
    assert _sweep(cli, results, "model.depth=2,3").exit_code == 0
    out = cli("clean", str(root), "--stale", "-y")
    assert out.exit_code == 0 and "removed 1 run" in out.output and "predate" not in out.output, out.output
    assert (figures / "notes.txt").read_text() == "mine, again\n"


def test_clean_that_leaves_no_run_does_not_advise_redrawing_from_none(cli, results):
    # an interrupted run, drawn, then cleaned: clean advised `gradflow plot FOLDER` and `gradflow report
    # FOLDER`, each then refused ("holds no runs")
    assert cli("run", *SMALL, "train.steps=3", f"results={results}", "name=one").exit_code == 0
    root = results / "one"
    (job,) = [p for p in root.iterdir() if p.is_dir()]
    record = store.read_run(job)
    record["status"] = store.INTERRUPTED
    (job / store.RUN_FILE).write_text(json.dumps(record))
    assert cli("plot", str(root)).exit_code == 0 and cli("report", str(root)).exit_code == 0
    out = cli("clean", str(root), "--stale", "-y")
    said = " ".join(out.output.split())
    assert out.exit_code == 0 and "removed 1 run" in said, out.output
    assert (f"figures/ and report.html in {root} predate this cleaning and show only runs it removed; no run is "
            "left there to redraw them from: delete them where no longer wanted") in said, said
    assert "gradflow plot" not in said and cli("plot", str(root)).exit_code == 1  # (as the note says)
    # the report page alone: it "shows" (it said "predates ... and show")
    shutil.rmtree(root / store.FIGURES_DIR)
    assert cli("run", *SMALL, "train.steps=3", f"results={results}", "name=one").exit_code == 0
    (job,) = [p for p in root.iterdir() if p.is_dir()]
    record = store.read_run(job)
    record["status"] = store.INTERRUPTED
    (job / store.RUN_FILE).write_text(json.dumps(record))
    assert cli("report", str(root)).exit_code == 0
    said = " ".join(cli("clean", str(root), "--stale", "-y").output.split())
    assert (f"report.html in {root} predates this cleaning and shows only runs it removed; no run is left there "
            "to redraw it from: delete it where no longer wanted") in said, said


def test_clean_says_nothing_of_figures_drawn_without_what_it_removes(cli, results, reported):
    """Figures drawn after the grid shrank leave its stale runs out, and no figure shows a folder left over
    with no run.json: clean said they `may show the runs it removed` all the same. The report page, whose runs
    table lists the stale run, still does."""
    _reported(reported, results)  # depth 2, 3, 4 with its report page
    assert _sweep(cli, results, "model.depth=2,3").exit_code == 0  # depth 4 now stale
    root = results / "s"
    assert cli("plot", str(root)).exit_code == 0  # (without depth 4)
    out = cli("clean", str(root), "--stale", "-y")
    said = " ".join(out.output.split())
    assert out.exit_code == 0 and "removed 1 run" in said, out.output
    assert f"report.html in {root} predates this cleaning" in said and "figures/" not in said, said

    (root / "model.depth=9").mkdir()  # a run cut off before its run.json
    shutil.copy(root / "model.depth=2" / store.CONFIG_FILE, root / "model.depth=9" / store.CONFIG_FILE)
    assert cli("plot", str(root)).exit_code == 0 and cli("report", str(root)).exit_code == 0
    out = cli("clean", str(root), "--stale", "-y")
    assert out.exit_code == 0 and "removed 1 run" in out.output and "predate" not in out.output, out.output
    assert not (root / "model.depth=9").exists()


def test_clean_says_nothing_of_figures_drawn_after_a_run_became_stale_and_the_sweep_resumed(cli, results):
    """Resuming the sweep rewrote sweep.yaml, whose time clean reads as when its stale runs became stale:
    figures drawn between (without the stale run) were said to `may show the runs it removed`."""
    assert _sweep(cli, results, "model.depth=2,3,4").exit_code == 0
    assert _sweep(cli, results, "model.depth=2,3").exit_code == 0  # depth 4 now stale
    root = results / "s"
    spec = (root / store.SWEEP_FILE).read_text()
    assert cli("plot", str(root)).exit_code == 0  # (without depth 4)
    assert _sweep(cli, results, "model.depth=2,3").exit_code == 0  # resumed, all finished
    assert (root / store.SWEEP_FILE).read_text() == spec  # (as it was, its time too)
    out = cli("clean", str(root), "--stale", "-y")
    said = " ".join(out.output.split())
    assert out.exit_code == 0 and "removed 1 run" in said and "predate" not in said, said
    assert _sweep(cli, results, "model.depth=2").exit_code == 0  # its points changed: written anew
    assert (root / store.SWEEP_FILE).read_text() != spec

# --- the sweep CLI ---------------------------------------------------------------------------------------

def test_points_given_twice_is_refused_before_anything_runs(cli, results, tmp_path):
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("- {seed: 1}\n")
    b.write_text("- {seed: 2}\n")
    out = cli("sweep", *SMALL, f"results={results}", "--name", "p", "--points", str(a), "--points", str(b))
    assert out.exit_code == 1 and "--points is given 2 times" in out.output, out.output
    assert not (results / "p").exists()


def test_a_narrowed_sweep_counts_its_stale_runs_and_leaves_them_out_of_its_table(cli, results):
    assert _sweep(cli, results, "model.depth=2,3,4,5").exit_code == 0
    out = _sweep(cli, results, "model.depth=2,3")
    root = results / "s"
    assert out.exit_code == 0, out.output
    flat = " ".join(out.output.split())
    assert (f"2 runs in {root} are not points of this sweep (stale); `gradflow clean {root} --stale` removes them"
            in flat), out.output
    lines = out.output.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("─")) + 1  # the runs table's rows
    rows = lines[start:next(i for i, ln in enumerate(lines) if i >= start and not ln.startswith(" "))]
    assert [r.split()[0] for r in rows] == ["2", "3"], out.output  # the points of this sweep only


def test_piped_progress_counts_runs_that_ended_together_one_by_one(capsys):
    from gradflow.cli.sweep import _EndedLines

    lines = _EndedLines()
    lines.show({"model.depth=2": {store.STATUS: "ok", "wall_time": 1.0}}, 3)
    lines.show({"model.depth=2": {store.STATUS: "ok", "wall_time": 1.0},  # (the watcher's whole dict each time)
                "model.depth=3": {store.STATUS: "ok", "wall_time": 1.0},
                "model.depth=4": {store.STATUS: "failed", "wall_time": 1.0}}, 3)
    heads = [ln.split()[0] for ln in capsys.readouterr().out.splitlines() if ln.strip()]
    assert heads == ["1/3", "2/3", "3/3"], heads


# --- reproduce's CLI -------------------------------------------------------------------------------------

def test_reproduce_report_without_a_name_is_refused(cli):
    out = cli("reproduce", "--report")
    assert out.exit_code == 1 and "--report applies to a run of an experiment" in " ".join(out.output.split()), \
        out.output


def test_a_failed_claims_result_is_red_and_a_passed_ones_green():
    from rich.console import Console

    from gradflow import reproduce as rep
    from gradflow.cli.reproduce import claims_table

    def claim(passed):
        return rep.ClaimResult("claim text", "ref", "theory", "src", rep.Measured(1.0, [1.0]), "in [0.5, 2]", passed)

    for passed, colour in ((True, "\x1b[32m"), (False, "\x1b[31m")):
        out = io.StringIO()
        Console(file=out, width=120, force_terminal=True, color_system="standard").print(
            claims_table([claim(passed)], 120)[0])
        text = out.getvalue()
        result = rep.claim_cells(claim(passed))["result"]
        assert f"{colour}{result}" in text, repr(text)


def test_a_piped_bar_that_stays_prints_its_last_frame_and_a_transient_one_prints_nothing():
    # piped (a log, CI), `sweep`'s bar (not transient) leaves its count; run's and plot's (transient) would
    # leave a blank line, so they print nothing there
    from gradflow.cli.app import progress_bar
    from gradflow.cli.console import console

    assert not console.is_terminal  # (the premise: pytest captures stdout)
    for transient, piped in ((False, None), (True, None), (False, False)):
        with console.capture() as captured:
            with progress_bar(transient=transient, piped=piped) as bar:
                task = bar.add_task("runs", total=3)
                bar.advance(task, 3)
        shown = piped if piped is not None else not transient
        assert ("3/3" in captured.get()) == shown, (transient, piped, captured.get())
