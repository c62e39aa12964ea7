"""`gradflow ls` and the sweep summary as a user sees them: 80 columns, piped, numbers whole and in numeric order;
--sort, --json at full precision, --steps-to and --rate against hand computation."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from gradflow import store
from gradflow.summary import steps_to
from tests.commands import piped, real, real_stdout

SWEEP = ["data=gaussian", "data.n_train=256", "data.n_test=128", "data.dim=16", "model.width=16", "train.steps=12",
         "train.batch_size=32", "train.eval_every=3", "threads=1", "model.depth=5,10,20",
         "init=orthogonal,xavier_normal"]


def gradflow(*args: str, columns: int = 80) -> str:
    """What the command prints, piped, at `columns` columns, run in this process (byte for byte what the
    real pipe gets: tests.commands.piped; a process of its own costs a Python, torch and Hydra import)."""
    return piped(*args, columns=columns).stdout


def made(*args: str) -> None:
    """Runs made in this process (`gradflow sweep|run` under CliRunner): for tests whose subject is what ls
    shows of them, not the command that made them (a process of its own costs a Python and torch import)."""
    from gradflow.cli import app

    out = CliRunner().invoke(app, list(args), catch_exceptions=False)
    assert out.exit_code == 0, out.output


@pytest.fixture(scope="module")
def swept(tmp_path_factory) -> tuple[Path, str]:
    results = tmp_path_factory.mktemp("ls") / "results"
    summary = real_stdout("sweep", *SWEEP, f"results={results}", "--name", "grid")
    return results / "grid", summary


def table_rows(text: str, first_cell: str = r"\d+") -> list[list[str]]:
    """The body rows of a printed table: lines that start with a cell matching `first_cell`, split on 2+ spaces."""
    return [re.split(r"\s{2,}", line.strip()) for line in text.splitlines() if re.match(rf"\s*{first_cell}\s{{2,}}", line)]


def check_readable(text: str) -> None:
    """80 columns, nothing cut short, no word broken across lines. A line of one word, a folder's path, may be
    longer: nothing breaks it (a test's own folder, under pytest's numbered basetemp, reached 81); so may a
    command to copy, on a line of its own (copied across a break, a shell ran its first line alone)."""
    for line in text.splitlines():
        assert len(line) <= 80 or " " not in line.strip() or re.fullmatch(r"`gradflow [^`]*`", line.strip()), line
    assert "…" not in text
    words = {w for line in text.splitlines() for w in re.findall(r"[A-Za-z_]+", line)}
    for broken in ("dep", "th", "ini", "rel", "lo", "ss", "stat", "us", "theo", "ry"):
        assert broken not in words, (broken, text)


def runs_json(path: Path, *args: str) -> pd.DataFrame:
    from gradflow.cli import app  # in-process: JSON does not depend on the terminal

    out = CliRunner().invoke(app, ["ls", str(path), "--json", *args], catch_exceptions=False)
    assert out.exit_code == 0, out.output
    return pd.DataFrame(json.loads(out.output))


@pytest.mark.parametrize("which", ["ls", "sweep summary"])
def test_table_reads_right_at_80_columns_piped(swept, which):
    root, summary = swept
    text = real_stdout("ls", str(root)) if which == "ls" else summary
    # the table from its title on (the sweep's header line is soft-wrapped: it holds a path)
    text = text[re.search(rf"^{re.escape(str(root))} *$", text, re.M).start():]
    check_readable(text)
    header = "\n".join(text.splitlines()[:6])
    assert re.search(r"\bdepth\b", header) and re.search(r"\binit\b", header) and "status" in header
    rows = table_rows(text)
    assert len(rows) == 6
    # numeric order (5 < 10 < 20, not "10" < "20" < "5"), and each swept group's choice is shown
    assert [int(r[0]) for r in rows] == [5, 5, 10, 10, 20, 20]
    assert [r[1] for r in rows] == ["orthogonal", "xavier_normal"] * 3
    # numbers intact: the train loss cells are the measured values to 4 significant digits
    runs = runs_json(root).sort_values(["model.depth", "init.name"])
    cells = [float(r[3]) for r in rows]  # depth, init, status, train loss
    assert cells == [float(f"{v:.4g}") for v in runs["final.train_loss"]]
    # depth 5 is too shallow for the chi1 fit: its "-" is explained under the table
    assert runs["chi1_measured"].isna().tolist() == [True, True, False, False, False, False], runs
    assert ("chi1 meas -: no fit, fewer than 3 layers with a signal between the 3 left out at each end"
            in " ".join(text.split())), text


def test_the_signal_ratio_shows_what_the_weight_gradient_ratio_hides(tmp_path):
    """Standard init on a depth-20 tanh MLP: the back-propagated signal reaching layer 0 is ~(1/3)^(19/2)
    of the head's (chi1 = 1/3), while the weight-gradient ratio stays near 1 (the forward signal shrinks
    too). ls shows both at 80 columns, the signal ratio named under the table."""
    results = tmp_path / "results"
    made("run", "data=gaussian", "data.n_train=256", "data.n_test=64", "data.dim=16", "model.width=64",
         "model.depth=20", "init=standard", "train.steps=0", f"results={results}", "name=std")
    runs = runs_json(results / "std")
    signal, weight = float(runs["signal_ratio.init"].iloc[0]), float(runs["grad_ratio.init"].iloc[0])
    assert signal < 1e-3 and 0.1 < weight < 10, (signal, weight)
    text = gradflow("ls", str(results / "std"))
    assert max(len(line) for line in text.splitlines()[1:]) <= 80, text  # (the title is a path)
    assert "signal ratio = ‖∂L/∂z‖ first layer / last layer, at init" in text
    (row,) = [line.split() for line in text.splitlines() if " ok " in line]
    assert f"{signal:.4g}" in row and f"{weight:.4g}" in row, (row, signal, weight)


def test_wide_shows_every_column_and_narrow_names_what_it_hides(swept):
    root, _ = swept
    narrow, wide = gradflow("ls", str(root)), gradflow("ls", str(root), "--wide")
    assert "--wide shows all" in narrow
    hidden = re.search(r"not shown \(80 columns\): (.*?); --wide", " ".join(narrow.split())).group(1).split(", ")
    assert hidden and all(label.split()[0] in wide for label in hidden)
    assert "not shown" not in wide


def test_a_damaged_sweep_spec_is_said_under_the_table(swept, tmp_path):
    # read as no spec without a word: a stale run there would read as live
    copy = tmp_path / "grid"
    shutil.copytree(swept[0], copy)
    (copy / "sweep.yaml").write_text("{{{ not yaml")
    text = " ".join(gradflow("ls", str(copy)).split())
    assert f"{copy / 'sweep.yaml'}: not a readable sweep spec, so stale runs there read as live" in text, text


def test_the_counts_line_keeps_each_count_beside_its_status_on_a_narrow_terminal(swept):
    # at 17 columns it read "ok: 6  diverged:" / "0  failed: 0"
    lines = gradflow("ls", str(swept[0]), columns=17).splitlines()
    counts = lines[max(i for i, line in enumerate(lines) if line.startswith("ok: ")):]
    assert " ".join(counts) == "ok: 6 diverged: 0 failed: 0", counts


def test_keys_a_group_choice_sets_are_named_under_the_table_and_status_always_shows(tmp_path):
    """init.gain (xavier) and init.sw2, init.sb2 (meanfield) vary only with the init choice: shown as
    columns they pushed status and every result off an 80-column table (and a folder of studies with a
    few data and init choices went to 276 columns). They are named under it instead; notes break
    between labels, never inside one ("chi1" / "fit"); --wide shows them, and no two headers read alike
    (train.steps and the steps done were both "steps")."""
    results = tmp_path / "results"
    base = [o for o in SWEEP if not o.startswith(("model.depth=", "init=", "train.steps="))]
    swept = gradflow("sweep", *base, "model.depth=4", "init=xavier_normal,meanfield", "train.steps=3,4",
                     f"results={results}", "--name", "mixed")
    # the table at the sweep's end, as ls's (it named no key the init choice sets)
    assert "not shown, as each init choice sets them: sw2, sb2, gain; --wide shows all" in " ".join(swept.split())
    for columns in (80, 50):
        text = gradflow("ls", str(results / "mixed"), columns=columns)
        assert max(len(line) for line in text.splitlines()[1:]) <= columns, text  # (the title is a path)
        assert all(line == line.rstrip() for line in text.splitlines())
        header = text.splitlines()[1:3]
        assert re.search(r"\binit\b", "\n".join(header)) and "status" in "\n".join(header), text
        assert not re.search(r"\b(gain|sw2|sb2)\b", "\n".join(header)), text
        notes = " ".join(text.split("─")[-1].split())
        assert "not shown, as each init choice sets them: sw2, sb2, gain; --wide shows all" in notes, text
        for line in text.split("─")[-1].splitlines():  # a two-word label in a note is never split at a line's end
            # ("signal ratio" is a whole label: its "ratio" ends it)
            assert not re.search(r"(\bchi1|\btrain|\btest|(?<!signal\s)\bratio|\bsteps|\btime),?$", line), (line, text)
    # the meanfield runs alone have sw2 and sb2 and no gain: no note about keys their choice would set
    alone = gradflow("ls", str(results / "mixed"), "--where", "init=meanfield")
    assert "not shown, as each" not in alone and "meanfield" in alone, alone
    wide = gradflow("ls", str(results / "mixed"), "--wide")
    labels = re.split(r"\s{2,}", wide.splitlines()[1].strip())
    assert {"gain", "sw2", "sb2", "steps", "steps done", "status"} <= set(labels) and len(labels) == len(set(labels))


def test_sort_descending_numeric_and_by_short_name(swept):
    root, _ = swept
    down = table_rows(gradflow("ls", str(root), "--sort", "-depth"))
    assert [int(r[0]) for r in down] == [20, 20, 10, 10, 5, 5]
    by_loss = runs_json(root, "--sort", "final.train_loss")
    assert list(by_loss["final.train_loss"]) == sorted(by_loss["final.train_loss"])
    # a result by the header the table shows it under
    by_header = runs_json(root, "--sort", "train loss")
    assert list(by_header["run"]) == list(by_loss["run"])
    by_ratio = runs_json(root, "--sort", "-ratio_end")
    assert list(by_ratio["grad_ratio.final"]) == sorted(by_ratio["grad_ratio.final"], reverse=True)
    # the column sorted by is shown, however narrow the table: rows in an order one cannot see read as random
    plain, by_time = gradflow("ls", str(root), columns=60), gradflow("ls", str(root), "--sort", "time s", columns=60)
    assert "time s" in " ".join(plain.split()).split("not shown")[1]
    assert "time" in by_time.splitlines()[1] + by_time.splitlines()[2] and "time s" not in \
        " ".join(by_time.split()).partition("not shown")[2], by_time


@pytest.mark.parametrize("args, meant", [
    (["--sort", "accuracy"], "--sort key 'accuracy' is not a column (did you mean final.train_acc or final.test_acc?)"),
    (["--sort", "-test_accuracy"], "--sort key 'test_accuracy' is not a column (did you mean final.test_acc?)"),
    (["--where", "accuracy=0.5"], "--where key 'accuracy' is not a column (did you mean final.train_acc or "
                                  "final.test_acc?)"),
    (["--where", "learning_rate=0.1"], "--where key 'learning_rate' is not a column (did you mean optim.lr?)"),
    (["--sort", "epochs"], "--sort key 'epochs' is not a column (did you mean train.steps?)"),
])
def test_an_unknown_sort_or_where_key_offers_the_columns_it_may_mean(swept, args, meant):
    """A key no spelling is near (accuracy: its columns say acc) is offered the columns that share a word with it,
    or that its usual other name is (learning_rate: optim.lr), as a mistyped override is; it listed the
    column names alone."""
    root, _ = swept
    out = piped("ls", root, *args, code=1)
    assert out.exit_code == 1 and out.stdout == "", out
    assert out.stderr.startswith(f"error: {meant}; choices: ") and len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_where_with_a_comma_list_keeps_the_runs_of_any_of_its_values(swept):
    # as a sweep lists them: model.depth=5,20 matched no run, and the error named the values given ("here: 5, 10, 20")
    root, _ = swept
    kept = runs_json(root, "--where", "model.depth=5,20")
    assert sorted(kept["model.depth"]) == [5, 5, 20, 20]
    assert sorted(runs_json(root, "--where", "depth=20,99", "--where", "init=orthogonal")["model.depth"]) == [20]
    from gradflow.cli import app

    out = CliRunner().invoke(app, ["ls", str(root), "--where", "model.depth=7,9"])
    assert out.exit_code == 1 and out.stderr.strip() == "error: --where model.depth=7,9 matches no run; model.depth " \
                                                        "here: 5, 10, 20", out.output


@pytest.mark.parametrize("cond, meant", [
    ("depth==10", "write --where depth=10"),
    ("depth!=10", "to keep all but 10, list the others: --where depth=5,20 (model.depth here: 5, 10, 20)"),
    ("model.depth!=5", "to keep all but 5, list the others: --where model.depth=10,20 (model.depth here: 5, 10, 20)"),
    ("depth>=10", "list the values to keep: --where depth=V1,V2 (model.depth here: 5, 10, 20)"),
    ("depth<10", "list the values to keep: --where depth=V1,V2 (model.depth here: 5, 10, 20)"),
])
def test_where_with_a_comparison_says_it_takes_key_equals_value(swept, tmp_path, cond, meant):
    """--where takes KEY=VALUE: depth==10 matched no run ("model.depth here: 5, 10, 20", 10 among them) and
    depth!=10 read a key 'depth!' that is no column; each is one line saying so and how to write it, in ls,
    plot and compare alike."""
    root, _ = swept
    other = tmp_path / "grid-copy"
    shutil.copytree(root, other)
    head = f"error: --where {cond}: --where takes KEY=VALUE, with one = (==, !=, <, >, <=, >= are not supported); "
    for args in (["ls", root], ["plot", root, "--kind", "profile", "--out", tmp_path],
                 ["compare", root, other, "--out", tmp_path]):
        out = piped(*args, "--where", cond, code=1, columns=400)
        assert out.exit_code == 1 and out.stdout == "", out
        assert out.stderr.strip() == head + meant, out.stderr


@pytest.mark.parametrize("descending", [False, True])
def test_sorting_keeps_the_listed_order_within_ties_in_a_long_table(descending):
    """--sort model.depth over 40 runs (20 seeds at each of two depths): the runs of one depth keep the order
    ls found them in (by seed). An unstable sort kept it only for tables of up to 16 rows and shuffled the
    seeds of longer ones."""
    from gradflow.columns import sort_runs

    df = pd.DataFrame({"model.depth": [3, 2] * 20, "seed": [i // 2 for i in range(40)]})
    out = sort_runs(df, ["model.depth"], descending=descending)
    for depth in (2, 3):
        assert out.loc[out["model.depth"] == depth, "seed"].tolist() == list(range(20))


@pytest.mark.parametrize("descending", [False, True])
def test_sorting_puts_missing_values_last_either_way(descending):
    """A diverged or failed run has no final loss: its row goes last whichever way the column sorts (first
    would put the runs with no result above every one that has one); numbers sort as numbers, lists of
    numbers element by element, text as text."""
    from gradflow.columns import sort_runs

    df = pd.DataFrame({"loss": [2.0, math.nan, 10.0, 1.0], "betas": ["[0.9, 0.999]", None, "[0.9, 0.99]", "[0.8, 1]"],
                       "act": ["tanh", "relu", None, "elu"]})
    order = lambda key: list(sort_runs(df, [key], descending=descending).index)
    assert order("loss") == ([2, 0, 3, 1] if descending else [3, 0, 2, 1])
    assert order("betas") == ([0, 2, 3, 1] if descending else [3, 2, 0, 1])
    assert order("act") == ([0, 1, 3, 2] if descending else [3, 1, 0, 2])


def test_json_keeps_full_precision(swept):
    root, _ = swept
    listed = runs_json(root)
    for _, r in listed.iterrows():
        run = json.loads((root / r["run"] / "run.json").read_text())
        assert r["final.train_loss"] == run["final"]["train_loss"]  # exactly, not rounded
        layers = pd.read_parquet(root / r["run"] / "layers.parquet")
        g = layers[(layers["quantity"] == "grad_norm") & (layers["step"] == 0)].sort_values("layer")["value"]
        assert r["grad_ratio.init"] == g.iloc[0] / g.iloc[-1]


def test_steps_to_threshold_against_hand_computation(swept):
    root, _ = swept
    listed = runs_json(root, "--steps-to", "train_loss<=2.2", "--steps-to", "test_acc>=0.2")
    for _, r in listed.iterrows():
        m = pd.read_parquet(root / r["run"] / "metrics.parquet")
        for col, split, metric, hit in (("steps_to.train_loss<=2.2", "train", "loss", lambda v: v <= 2.2),
                                        ("steps_to.test_acc>=0.2", "test", "acc", lambda v: v >= 0.2)):
            expected = math.nan
            for step, s, name, value in sorted(m.itertuples(index=False)):  # step first: chronological
                if s == split and name == metric and hit(value):
                    expected = step
                    break
            got = r[col]
            assert (pd.isna(got) and math.isnan(expected)) or got == expected, (r["run"], col)
    # and in the table, beside the swept keys
    text = gradflow("ls", str(root), "--steps-to", "train_loss<=2.2")
    check_readable(text)
    assert "train_loss<=2.2" in text


def test_steps_to_a_metric_a_diverged_run_lacks_reads_dash(tmp_path):
    # lr 1e6 diverges before its first minibatch window is logged: it has no batch_loss, the other run does;
    # that run gets "-" (the whole listing failed with "metric 'batch_loss' was not recorded")
    results = tmp_path / "results"
    base = [o for o in SWEEP if not o.startswith(("model.depth=", "init="))]
    made("sweep", *base, "model.depth=3", "optim.lr=0.05,1e6", "optim.momentum=0", "train.check_every=1",
         "model.activation=relu", f"results={results}", "--name", "dv")
    listed = runs_json(results / "dv", "--steps-to", "batch_loss<=5").set_index("optim.lr")
    assert listed.loc[1e6, "status"] == "diverged" and pd.isna(listed.loc[1e6, "steps_to.batch_loss<=5"])
    assert listed.loc[0.05, "steps_to.batch_loss<=5"] == 3  # the first window, logged at the step-3 evaluation
    # a metric no run recorded is still an error naming the choices
    out = real("ls", results / "dv", "--steps-to", "batch_los<=5")
    assert out.returncode == 1 and "metric 'batch_los' was not recorded (did you mean batch_loss?); choices: batch_acc, batch_loss" in out.stderr


def test_steps_to_function():
    m = pd.DataFrame({"step": [0, 0, 5, 5, 10, 10], "split": ["train", "test"] * 3, "metric": ["loss"] * 6,
                      "value": [2.0, 2.1, 1.2, 1.3, 0.9, 1.0]})
    assert steps_to(m, "train_loss", "<=", 1.2) == 5
    assert steps_to(m, "train_loss", "<", 1.2) == 10
    assert steps_to(m, "test_loss", "<=", 1.0) == 10
    assert math.isnan(steps_to(m, "train_loss", "<", 0.5))


def test_rate_against_hand_fit(swept):
    root, _ = swept
    listed = runs_json(root, "--rate", "grad_norm", "--rate", "signal_norm")
    for _, r in listed.iterrows():
        layers = pd.read_parquet(root / r["run"] / "layers.parquet")
        for q in ("grad_norm", "signal_norm"):
            p = layers[(layers["quantity"] == q) & (layers["step"] == 0)].sort_values("layer")
            bulk = p.iloc[3:-3]  # the input layer, the head and their neighbours are not the bulk
            if len(bulk) < 3:
                assert pd.isna(r[f"rate.{q}"])
                continue
            slope = np.polyfit(bulk["layer"], np.log(bulk["value"] ** 2), 1)[0]
            assert r[f"rate.{q}"] == pytest.approx(math.exp(-slope), rel=1e-9)
            assert r[f"rate.{q}.layers"] == f"{bulk['layer'].iloc[0]}-{bulk['layer'].iloc[-1]}"
        assert r["rate.signal_norm"] == r["chi1_measured"] or pd.isna(r["chi1_measured"])  # chi_1: the signal's rate
    # depth 5 has no bulk to fit: its "-" is explained under the table, as chi1 meas's is
    text = " ".join(gradflow("ls", str(root), "--rate", "grad_norm", columns=200).split())
    assert "rate -: no fit, fewer than 3 layers with the quantity between the 3 left out at each end" in text


def test_a_rate_at_80_columns_shows_the_chi1_theory_it_is_read_against(swept):
    # the prediction gave way to the other results, so a measured rate stood with nothing to compare it with
    root, _ = swept
    text = gradflow("ls", str(root), "--rate", "signal_norm")
    body, _, hidden = text.partition("not shown")
    assert "signal_norm" in body and "rate" in body and "theory" in body, text
    assert "chi1 theory" not in " ".join(hidden.split()), text
    check_readable(text)


def test_two_rates_on_a_narrow_terminal_keep_the_chi1_theory_and_the_second_gives_way(swept):
    # the second --rate took the room of the theory, so the two rates stood with nothing to read them against
    # (at 80 columns, beside four swept keys): the first rate and the theory show, then the other rate
    root, _ = swept
    rates = ["--rate", "grad_norm", "--rate", "signal_norm"]
    seen = set()
    for columns in range(44, 82, 3):
        text = gradflow("ls", str(root), *rates, columns=columns)
        header = " ".join(text.partition("─")[0].splitlines()[1:]).split()
        shown = {name for name in ("grad_norm", "signal_norm") if name in header}
        hidden = " ".join(text.partition("not shown (")[2].split())
        if len(shown) == 2:  # (narrower, the keys leave room for the first result alone)
            assert "theory" in header, (columns, text)
        if shown:
            assert "grad_norm" in shown, (columns, text)  # (the first asked for)
        if shown == {"grad_norm"} and "theory" in header:  # the second rate gave way, and says so
            assert "signal_norm rate" in hidden, (columns, text)
            seen.add("first rate and theory")
        elif len(shown) == 2:
            seen.add("both rates and theory")
    assert seen == {"first rate and theory", "both rates and theory"}, seen  # (each at some width)


def test_a_rate_fit_leaves_out_points_without_a_positive_value():
    """A signal norm that halves per layer over 15 points, but 0 at the head (a head with no signal): the
    fit is over the positive points' bulk, layers 3-10 (with the 0 counted among them it read 3-11)."""
    from gradflow.summary import rate

    values = [2 ** (-layer / 2) for layer in range(15)]
    values[14] = 0.0
    layers = pd.DataFrame({"run": "r", "step": 0, "quantity": "signal_norm", "layer": range(15),
                           "name": [f"linear{i}" for i in range(15)], "value": values})
    factor, span = rate(layers, "signal_norm", 0)
    assert factor == pytest.approx(2.0) and span == "3-10"


def test_a_corrupt_table_that_rate_or_steps_to_reads_is_one_line(cli, run_job):
    # damaged in place, its Parquet magic marks kept: the run still reads as whole (ok), and only --rate and
    # --steps-to read the table itself (they read it with pandas, and pyarrow's traceback came through)
    job = run_job("data=gaussian", "data.n_train=64", "data.n_test=32", "data.dim=8", "model.width=8",
                  "model.depth=9", "train.steps=2", "train.batch_size=32", "train.eval_every=1", name="bad")
    for table, option in (("layers", ["--rate", "grad_norm"]), ("metrics", ["--steps-to", "train_loss<=5"])):
        f = job / store.TABLE_FILES[table]
        whole = f.read_bytes()
        f.write_bytes(b"PAR1" + bytes(range(256)) * 8 + b"PAR1")
        assert cli("ls", str(job.parent)).exit_code == 0  # (the listing alone reads no table)
        out = cli("ls", str(job.parent), *option)
        err = out.stderr.strip()
        assert out.exit_code == 1 and len(err.splitlines()) == 1 and "Traceback" not in out.output, out.output
        assert err.startswith(f"error: {f} cannot be read (damaged: its Parquet footer does not read); remove its "
                              f"run folder ({job})"), err  # (pyarrow's words, cut mid-number: "footer's (42949…")
        f.write_bytes(whole)
        assert cli("ls", str(job.parent), *option).exit_code == 0
    # a run interrupted before it wrote its tables, beside one that did: its rate and steps-to are '-' (an
    # empty stand-in frame without the tables' types raised a TypeError from np.isfinite)
    cut = job.parent / "cut"
    shutil.copytree(job, cut)
    for table in ("layers", "metrics"):
        (cut / store.TABLE_FILES[table]).unlink()
    record = json.loads((cut / store.RUN_FILE).read_text())
    (cut / store.RUN_FILE).write_text(json.dumps({**record, "status": "interrupted"}))
    for option in (["--rate", "grad_norm"], ["--steps-to", "train_loss<=5"]):
        out = cli("ls", str(job.parent), *option)
        assert out.exit_code == 0 and "cut " in out.output and "Traceback" not in out.output, out.output


def test_bad_options_are_one_line(cli, swept):
    root, _ = swept
    for args, words in ((["--sort", "nope"], ["--sort", "depth"]), (["--steps-to", "loss"], ["train_loss<=1.0"]),
                        (["--steps-to", "train_nope<=1"], ["train_loss"]), (["--rate", "nope"], ["grad_norm"]),
                        (["--steps-to", "foo<1"], ["'foo' is not a metric; choices: train_loss, train_acc"]),
                        (["--steps-to", "test_acc>=high"], ["'high' is not a number"])):
        out = cli("ls", str(root), *args)
        assert out.exit_code == 1
        assert all(w in out.output for w in words), out.output
        assert "Traceback" not in out.output


def test_a_run_that_learned_nothing_is_flagged_not_read_as_a_success(tmp_path):
    # lr 0: the loss stays at chance (ln 10), so the run ends ok but flagged; lr 0.05 learns
    results = tmp_path / "results"
    made("sweep", *SWEEP[:8], "model.depth=3", "optim.lr=0,0.05", f"results={results}", "--name", "fl")
    runs = json.loads(gradflow("ls", str(results / "fl"), "--json"))
    flags = {r["optim.lr"]: r["flags"] for r in runs}
    assert flags[0.05] == "" and flags[0].startswith("learned nothing: final train loss")
    table = gradflow("ls", str(results / "fl"))
    rows = {line.split()[0]: line.split()[1] for line in table.splitlines() if re.match(r"\s*0(\.05)?\s", line)}
    assert rows == {"0": "ok*", "0.05": "ok"}
    assert "*: finished but flagged: learned nothing (1 run)" in table and "flagged: 1" in table
    # the report page and compare show it as ls does (both said "ok"): the page's status cell gives the reason
    from gradflow import report, store

    page = report.write([results / "fl"]).read_text()
    cells = re.findall(r'<td data-value="(ok\*?)"( title="[^"]*")?>', page)
    assert sorted(cells) == [("ok", ""), ("ok*", f' title="{flags[0]}"')]
    assert "*: finished but flagged: learned nothing (1 run); hover over a status for why" in page
    lr0, lr05 = sorted(store.find_runs(results / "fl"), key=lambda job: "optim.lr=0.05" in job.name)
    compared = gradflow("compare", str(lr0), str(lr05), "--kind", "curves", "--out", str(tmp_path / "cmp"))
    assert re.search(r"│ runs +│ +ok\* │ +ok │", compared), compared
    assert "*: finished but flagged: learned nothing (1 run)" in " ".join(compared.split())


def test_unrelated_runs_differing_in_many_keys_still_fit_and_show_a_result():
    # seven keys of 11 characters, the status, then the results: the keys alone are wider than 80
    # columns; the table keeps the status, the keys that leave room for the first result, and that result
    from gradflow.cli.ls import SEP, choose
    from gradflow.columns import KEY_PRIORITY, Column

    keys = [Column(f"k.{i}", f"key{i}", KEY_PRIORITY, ["x" * 11], False) for i in range(7)]
    status = Column("status", "status", KEY_PRIORITY, ["ok"], False)
    results = [Column("final.test_acc", "test acc", 2, ["0.5"], True),
               Column("final.train_loss", "loss", 3, ["1.25"], True)]
    shown, hidden = choose([*keys, status, *results], 80)
    assert sum(c.width + SEP for c in shown) - SEP <= 80
    assert [c.key for c in shown] == ["k.0", "k.1", "k.2", "k.3", "status", "final.test_acc", "final.train_loss"]
    assert [c.key for c in hidden] == ["k.4", "k.5", "k.6"]  # named under the table; --wide shows them
    # when everything fits, nothing is left out; with no width (--wide), neither
    assert choose([*keys[:3], status, *results], 80)[1] == [] and choose([*keys, status, *results], None)[1] == []


def test_keys_left_out_at_80_columns_are_those_that_tell_no_rows_apart():
    # a folder of single runs: depth, width, lr and steps kept, sw2 left out, though it alone told the two
    # depth-60 meanfield runs apart (`60 96 tanh meanfield 0.001 300 ok` twice); the keys that tell rows apart
    # are taken first, in display order, and those the others already imply are the ones left out
    from gradflow.cli.ls import choose
    from gradflow.columns import KEY_PRIORITY, Column

    def key(name, cells):
        return Column(name, name.split(".")[-1], KEY_PRIORITY, [c.ljust(11) for c in cells], False)

    keys = [key("model.depth", ["20", "30", "60", "60"]), key("model.width", ["128", "128", "96", "96"]),
            key("optim.lr", ["0.05", "0.05", "0.001", "0.001"]), key("train.steps", ["1000", "1000", "300", "300"]),
            key("model.activation", ["tanh", "relu", "tanh", "tanh"]), key("init.sw2", ["-", "-", "1.76", "4"])]
    status = Column("status", "status", KEY_PRIORITY, ["ok"] * 4, False)
    loss = Column("final.train_loss", "loss", 2, ["1.25"] * 4, True)
    shown, hidden = choose([*keys, status, loss], 80)
    assert "init.sw2" in [c.key for c in shown] and hidden, (shown, hidden)
    assert len({row for row in zip(*(c.cells for c in shown if c.key not in ("status", "final.train_loss")))}) == 4
    assert [c.key for c in shown][:1] == ["model.depth"]  # (the display order kept: depth first)


def test_keys_that_tell_no_rows_apart_leave_room_for_the_test_accuracy():
    # `sweep '+experiment=glob(*)'`: the experiment tells its three runs apart, and depth, width, skip and data
    # took the room of the test accuracy (cells of 7 characters), which a narrower test loss of priority 5 filled
    from gradflow.cli.ls import SEP, choose
    from gradflow.columns import KEY_PRIORITY, RESULT_COLUMNS, Column

    def key(name, cells):
        return Column(name, name.split(".")[-1], KEY_PRIORITY, cells, False)

    def result(name, cells):
        return Column(name, *RESULT_COLUMNS[name], cells, True)

    keys = [key("experiment", ["depth-study", "edge-of-chaos", "residual-vs-plain"]),
            key("model.depth", ["20", "60", "50"]), key("model.width", ["128", "500", "128"]),
            key("model.skip", ["none", "none", "residual"]), key("data.name", ["mnist1d", "gaussian", "mnist1d"])]
    status = Column("status", "status", KEY_PRIORITY, ["ok", "ok*", "ok"], False)
    results = [result("final.train_loss", ["2.127", "2.295", "2.05"]),
               result("final.train_acc", ["0.1832", "0.1172", "0.241"]),
               result("final.test_loss", ["2.133", "2.319", "2.043"]),
               result("final.test_acc", ["0.193", "0.09473", "0.218"])]
    shown, hidden = choose([*keys, status, *results], 80)
    names = [c.key for c in shown]
    assert sum(c.width + SEP for c in shown) - SEP <= 80
    assert {"experiment", "status", "final.train_loss", "final.test_acc"} <= set(names), names
    # the rows stay told apart: the key that gave way is one of those the experiment already tells
    assert len(set(zip(*(c.cells for c in shown if c.priority == KEY_PRIORITY)))) == 3
    assert "data.name" in [c.key for c in hidden] and "final.test_loss" in [c.key for c in hidden]
    # a key that tells rows apart still comes before the second result: two runs told apart by depth alone
    told = [key("model.depth", ["20", "60"]), key("model.width", ["1", "1"]), *(key(f"k.{i}", ["x" * 11] * 2)
                                                                               for i in range(3))]
    loss, acc = (Column(c.key, c.label, c.priority, c.cells[:2], True) for c in (results[0], results[3]))
    shown, hidden = choose([key("x.y", ["a" * 50] * 2), *told, status, loss, acc], 80)
    assert "model.depth" in [c.key for c in shown] and "model.width" in [c.key for c in hidden], shown


def test_a_folder_of_studies_keeps_room_for_the_loss_and_the_accuracy_beside_many_keys():
    # a folder of studies names its rows by study, and its keys (a dozen kinds across studies) leave room
    # for two results, the loss and the accuracy: one alone read "study ... status loss" with no accuracy
    from gradflow.cli.ls import SEP, choose
    from gradflow.columns import KEY_PRIORITY, Column
    from gradflow.summary import STUDY

    study = Column(STUDY, STUDY, KEY_PRIORITY, ["he2015-quick/train"], False)
    keys = [Column(f"k.{i}", f"key{i}", KEY_PRIORITY, ["x" * 11], False) for i in range(7)]
    status = Column("status", "status", KEY_PRIORITY, ["ok"], False)
    results = [Column("final.train_loss", "loss", 2, ["1.25"], True),
               Column("final.test_acc", "acc", 2, ["0.5"], True),
               Column("grad_ratio.init", "ratio", 3, ["0.75"], True)]
    shown, hidden = choose([study, *keys, status, *results], 80)
    assert sum(c.width + SEP for c in shown) - SEP <= 80
    keys_shown = [c.key for c in shown if c.key.startswith("k.")]
    assert [c.key for c in shown][:len(keys_shown) + 4] == [STUDY, *keys_shown, "status", "final.train_loss",
                                                            "final.test_acc"], shown
    assert keys_shown and [c.key for c in hidden][0] == f"k.{len(keys_shown)}"
    # without the study column (one study's own keys), the first result alone is kept room for
    alone = [c.key for c in choose([*keys, status, *results], 80)[0]]
    assert "final.train_loss" in alone and len([k for k in alone if k.startswith("k.")]) > len(keys_shown)


def test_json_gives_a_number_or_word_keys_number_as_a_number():
    # model.alpha takes 1.0 or inv_sqrt_depth, a string in the schema: --json read "1.0" beside every other
    # key's numbers; its words stay strings, and a missing one null
    from gradflow.cli.ls import records

    df = pd.DataFrame({"model.alpha": ["1.0", "inv_sqrt_depth", None], "data.scale": ["qstar", "2", "0.5"],
                       "model.depth": [2, 4, 8]})
    assert [(r["model.alpha"], r["data.scale"]) for r in records(df)] == [
        (1.0, "qstar"), ("inv_sqrt_depth", 2.0), (None, 0.5)]


def test_json_gives_null_where_there_was_no_fit(run_job):
    # two hidden layers leave no layers to fit chi1 over: its value and its layers are both null
    job = run_job("data=gaussian", "data.n_train=64", "data.n_test=32", "data.dim=8", "model.width=8",
                  "model.depth=2", "train.steps=2", "train.batch_size=32", name="nofit")
    from gradflow.cli import app

    out = CliRunner().invoke(app, ["ls", str(job.parent), "--json"], catch_exceptions=False)
    (row,) = json.loads(out.output)
    assert row["chi1_measured"] is None and row["chi1_layers"] is None  # (was "")
    # so is --rate's own fit, beside a run deep enough for one
    run_job("data=gaussian", "data.n_train=64", "data.n_test=32", "data.dim=8", "model.width=8",
            "model.depth=10", "train.steps=2", "train.batch_size=32", name="nofit")
    out = CliRunner().invoke(app, ["ls", str(job.parent), "--json", "--rate", "grad_norm"], catch_exceptions=False)
    rows = {r["model.depth"]: r for r in json.loads(out.output)}
    assert rows[2]["rate.grad_norm"] is None and rows[2]["rate.grad_norm.layers"] is None, rows[2]
    assert rows[10]["rate.grad_norm"] > 0 and rows[10]["rate.grad_norm.layers"] == "3-7", rows[10]
    # the table says "-" in both of the shallow run's cells, as chi1 meas and chi1 fit do (its fit cell was blank)
    text = gradflow("ls", str(job.parent), "--rate", "grad_norm", "--wide")
    header = text.splitlines()[1]
    rate_end, fit_start = header.index("grad_norm rate") + len("grad_norm rate"), header.index("grad_norm fit")
    cells = {int(line.split()[0]): (line[:rate_end].split()[-1], line[fit_start:].split()[0])
             for line in text.splitlines()[3:] if re.match(r"\s+\d+\s", line)}
    assert cells[2] == ("-", "-") and cells[10][1] == "3-7", text


def test_notes_break_at_spaces_and_leave_none_at_a_line_end():
    # "loss 2.716  acc 0.085": the double space that falls at a break used to leave "2.716 " at a line end
    from gradflow.cli.console import NBSP, console, print_note

    with console.capture() as cap:
        print_note(f"test{NBSP}loss{NBSP}2.716  acc{NBSP}0.085  and more", width=16)
    assert cap.get().splitlines() == ["test loss 2.716", "acc 0.085  and", "more"]
    # a line exactly as wide as the width is full, not over: it breaks after the word that fills it
    with console.capture() as cap:
        print_note("abcd efg hi jklmnop q", width=11)
    assert cap.get().splitlines() == ["abcd efg hi", "jklmnop q"]


def test_a_users_own_top_level_key_is_a_config_key_across_studies(tmp_path):
    # +tag=... is the README's label to sweep and filter by: across two studies it was no column, so
    # its two runs showed as identical rows, and figures took them for seeds of one setting
    from dataclasses import fields

    import gradflow
    from gradflow import store
    from gradflow.cli import app
    from gradflow.config import SECTIONS, Config
    from gradflow.keys import swept_keys

    assert set(store.TOP_KEYS) == {f.name for f in fields(Config)} - set(SECTIONS)
    results = tmp_path / "results"
    small = ["data=gaussian", "data.n_train=64", "data.n_test=32", "data.dim=8", "model.width=8", "model.depth=2",
             "train.steps=2", "train.batch_size=32", f"results={results}"]
    for args in (["sweep", *small, "+tag=baseline,wider", "--name", "tags"], ["run", *small, "name=other"]):
        assert CliRunner().invoke(app, args, catch_exceptions=False).exit_code == 0
    rows = json.loads(CliRunner().invoke(app, ["ls", str(results), "--json"], catch_exceptions=False).output)
    assert sorted(str(r.get("tag")) for r in rows) == ["None", "baseline", "wider"]
    wide = CliRunner().invoke(app, ["ls", str(results), "--wide"], catch_exceptions=False).output
    assert wide.splitlines()[1].split()[:3] == ["study", "tag", "status"] and "baseline" in wide and "wider" in wide
    assert gradflow.load(results / "tags").attrs["user_keys"] == ["tag"]  # (not run, source, status)
    assert "tag" in swept_keys(gradflow.load(results / "tags")) and "tag" in swept_keys(gradflow.load(results, "runs"))
    assert not {"pid", "host", "job", "fused_steps"} & set(swept_keys(gradflow.load(results, "runs"), exclude=()))


def test_a_users_own_key_stays_a_key_when_compare_and_report_join_folders(tmp_path):
    # folders naming different sets of the user's keys: pandas' concat keeps attrs only where all agree,
    # so `compare --by tag` said tag was no config key and the report's runs table lost it
    from gradflow import compare, report, store
    from gradflow.cli import app

    results = tmp_path / "results"
    small = ["data=gaussian", "data.n_train=64", "data.n_test=32", "data.dim=8", "model.width=8", "model.depth=2",
             "train.steps=2", "train.batch_size=32", f"results={results}"]
    for args in (["sweep", *small, "+tag=baseline,wider", "--name", "a"],
                 ["sweep", *small, "+tag=baseline", "+note=rerun", "--name", "b"]):
        assert CliRunner().invoke(app, args, catch_exceptions=False).exit_code == 0
    out = CliRunner().invoke(app, ["compare", str(results / "a"), str(results / "b"), "--by", "tag",
                                      "--out", str(results / "figures")])  # (not the working folder's results/)
    assert out.exit_code == 0, out.output
    assert "matched on tag" in " ".join(out.output.split())
    pooled = CliRunner().invoke(app, ["compare", str(results / "a"), str(results / "b"), "--by", "model.depth",
                                         "--out", str(results / "figures")])
    assert "numbers are medians over the runs in a cell, which differ in tag" in " ".join(pooled.output.split())
    runs = compare.load_runs([results / "a", results / "b"], ["a", "b"])
    assert runs.attrs[store.USER_KEYS] == ["tag", "note"]
    df, swept = report.runs([results / "a", results / "b"])
    assert "tag" in swept and sorted(df["tag"]) == ["baseline", "baseline", "wider"]


def test_runs_the_keys_do_not_tell_apart_are_named_by_their_study_or_run(tmp_path, monkeypatch):
    # a folder of studies: b's one run and c's seed-0 run have the same keys (depth 3, seed 0); without a
    # study column the two rows read as one run listed twice. The study's name tells them apart: the run ids
    # (b's is its whole override list, 100+ characters) would fill an 80-column line and leave no result
    from gradflow.cli import app
    from gradflow.cli.console import console

    monkeypatch.setattr(console, "width", 80)

    def ls(folder: Path) -> tuple[list[str], list[str]]:
        out = CliRunner().invoke(app, ["ls", str(folder)], catch_exceptions=False).output.splitlines()
        header = next(i for i, line in enumerate(out) if line.startswith("─")) - 1
        assert max(map(len, out[header:])) <= 80, "\n".join(out)  # (above the header: the folder's path, whole)
        return out[header].split(), [line.split() for line in out[header + 2:] if line.split()]

    results = tmp_path / "results"
    small = ["data=gaussian", "data.n_train=64", "data.n_test=32", "data.dim=8", "model.width=8", "model.depth=3",
             "train.steps=2", "train.batch_size=32", f"results={results}"]
    for args in (["run", *small, "name=b"], ["sweep", *small, "seed=0,1", "--name", "c"]):
        assert CliRunner().invoke(app, args, catch_exceptions=False).exit_code == 0
    header, rows = ls(results)
    assert header[:3] == ["study", "seed", "status"] and "loss" in header
    assert sorted(r[:2] for r in rows if r[0] in "bc") == [["b", "0"], ["c", "0"], ["c", "1"]]
    header, _ = ls(results / "c")  # one study: its keys alone tell its runs apart
    assert header[:2] == ["seed", "status"]

    # a copy of a sweep beside it (the same grid run again, with another launcher, say): every row's keys
    # twice, told apart by the study's name, with the swept key and a result still on the line
    shutil.copytree(results / "c", tmp_path / "two" / "c")
    shutil.copytree(results / "c", tmp_path / "two" / "c-again")
    header, rows = ls(tmp_path / "two")
    assert header[:3] == ["study", "seed", "status"] and "loss" in header
    assert sorted(r[:2] for r in rows if r[0].startswith("c")) == [["c", "0"], ["c", "1"], ["c-again", "0"],
                                                                    ["c-again", "1"]]

    # where even the study and the keys do not tell runs apart, the run's id does, shortened around "…"
    from gradflow.columns import short_ids
    long = ["b/data.dim=8,data.n_test=32,data.n_train=64,model.depth=3,train.steps=2", "c/seed=0"]
    assert short_ids(long) == ["b/data.dim=8,…,train.steps=2", "c/seed=0"]
    # whole key=value items only: cut inside one, model.depth=10 read as model.depth=1…
    # and the last item too, where a larger budget gives it (data=gaussian,… named one run by its first alone)
    assert short_ids(["model.depth=10,model.width=64,train.steps=100"]) == ["model.depth=10,…,train.steps=100"]
    assert short_ids(["a=1," * 9 + "model.depth=10,model.width=64,train.steps=100"]) == ["a=1,a=1,…,train.steps=100"]
    assert short_ids(["+note=" + "x" * 40]) == ["+note=xxxxxxx…xxxxxxxxxxxxxx"]  # one item: its ends


def test_where_keeps_as_columns_only_the_keys_the_kept_runs_own_sweeps_sweep(tmp_path, monkeypatch):
    # `ls results --where study=A` kept B's swept width as a column, one value on every row (every sweep's
    # spec under the folder counted), pushing A's results off the line
    from gradflow.cli import app
    from gradflow.cli.console import console

    monkeypatch.setattr(console, "width", 80)
    results = tmp_path / "results"
    small = ["data=gaussian", "data.n_train=64", "data.n_test=32", "data.dim=8", "train.steps=2", "train.batch_size=32"]
    for name, swept in (("A", ["model.depth=2,3", "model.width=8"]), ("B", ["model.width=8,16", "model.depth=2"])):
        args = ["sweep", *small, *swept, f"results={results}", "--name", name]
        assert CliRunner().invoke(app, args, catch_exceptions=False).exit_code == 0
    text = gradflow("ls", str(results), "--where", "study=A")
    header = " ".join(text.splitlines()[1:3]).split()
    assert "depth" in header and "width" not in header and "study" not in header, text
    assert "the same in every run --where keeps: width 8" in " ".join(text.split()), text
    assert "width" in " ".join(gradflow("ls", str(results / "B")).splitlines()[1:3]).split()


def test_rows_whose_shown_keys_are_alike_are_said_to_be_so_whatever_their_results(swept):
    """Depth x init at a width that leaves init out: two rows of each depth differ in their loss, yet which
    is orthogonal's cannot be told; a line says so (it compared the results too, and said nothing)."""
    root, _ = swept
    text = gradflow("ls", str(root), columns=34)
    assert text.splitlines()[2].split()[:2] == ["depth", "status"], text
    assert "rows that read alike differ in keys left out at 34 columns; --wide shows all" in " ".join(text.split())
    assert "read alike" not in gradflow("ls", str(root))


def test_a_folder_of_studies_keeps_its_loss_and_accuracy_beside_fits_in_the_transient(tmp_path):
    """Deep enough for chi1 fits, from Gaussian inputs away from q* (the transient warning): the fits'
    columns took the two result columns a folder of studies keeps for the loss and accuracy; they come
    after those now (a study of its own still shows them)."""
    from gradflow.cli import app

    small = ["data=gaussian", "data.n_train=64", "data.n_test=32", "data.dim=8", "model.depth=10", "train.steps=2",
             "train.batch_size=32", "model.width=8", "seed=0,1"]
    for name, act in (("one", "tanh"), ("two", "relu")):
        args = ["sweep", *small, f"model.activation={act}", f"results={tmp_path}", "--name", name]
        assert CliRunner().invoke(app, args, catch_exceptions=False).exit_code == 0
    text = gradflow("ls", str(tmp_path))
    assert "chi1 fits start in the length map's transient" in " ".join(text.split()), text
    header = text.splitlines()[2].split()
    assert header[:6] == ["study", "seed", "activation", "status", "loss", "acc"] and "meas" in header, text
    one = gradflow("ls", str(tmp_path / "one")).splitlines()[2].split()
    assert one[:4] == ["seed", "status", "loss", "acc"] and {"meas", "fit", "theory"} <= set(one), one


def test_runs_of_nested_studies_are_named_by_their_own_folder_and_keys_within_a_study_come_first(tmp_path,
                                                                                                 monkeypatch):
    # `ls results` after two reproductions: every run's study read `reproduce` (its id's first part), the
    # keys that told a reproduction's runs apart (init, seed) were left out at 80 columns for those that
    # only told the reproductions apart (width, data), and the rows read as the same run listed thrice
    from gradflow.cli import app
    from gradflow.cli.console import console

    monkeypatch.setattr(console, "width", 80)
    results = tmp_path / "results"
    small = ["data=gaussian", "data.n_train=64", "data.n_test=32", "data.dim=8", "model.depth=2", "train.steps=2",
             "train.batch_size=32", "init=xavier_normal,orthogonal", "seed=0,1"]
    for name, more in (("a-quick/init", ["model.width=8", "optim.lr=0.1"]),
                       ("b-quick/train", ["model.width=16", "optim.lr=0.2"]),
                       ("b-quick/init", ["model.width=16", "optim.lr=0.2"])):
        folder = results / "reproduce" / name
        args = ["sweep", *small, *more, f"results={folder.parent}", "--name", folder.name]
        assert CliRunner().invoke(app, args, catch_exceptions=False).exit_code == 0
    text = gradflow("ls", str(results))
    check_readable(text)
    header = text.splitlines()[2].split()
    assert header[:3] == ["study", "init", "seed"], text  # (width and lr after: the study tells them)
    rows = table_rows(text, r"[ab]-quick\S*")
    assert [r[:3] for r in rows[:4]] == [["a-quick/init", "orthogonal", "0"], ["a-quick/init", "orthogonal", "1"],
                                         ["a-quick/init", "xavier_normal", "0"], ["a-quick/init", "xavier_normal", "1"]]
    assert [r[0] for r in rows] == ["a-quick/init"] * 4 + ["b-quick/init"] * 4 + ["b-quick/train"] * 4, text
    # --where study=NAME keeps the folders that hold NAME as whole parts: a reproduction, an arm, all
    # (a comma list of studies, as of a key's values: it read the list whole and matched none)
    for name, kept in (("b-quick", 8), ("init", 8), ("reproduce", 12), ("a-quick/init", 4), ("a-quick,b-quick/train", 8)):
        assert len(runs_json(results, "--where", f"study={name}")) == kept, name
    # too narrow for the keys that tell a study's runs apart: the study, the status and the two headline
    # results (the keys took the line, and left no result but steps done), and a line saying how to list one
    # study with its own keys (a folder of a dozen studies left three `norm 5 relu ok` rows unexplained)
    narrow = gradflow("ls", str(results), columns=44)
    assert " ".join(narrow.splitlines()[1:3]).split() == ["train", "test", "study", "status", "loss", "acc"], narrow
    text = " ".join(narrow.split())
    assert "rows that read alike differ in keys left out at 44 columns; `gradflow ls " \
           f"{results / 'reproduce' / 'a-quick' / 'init'}` lists one study with its own keys" in text, text
    assert "read alike" not in gradflow("ls", str(results))
    # the keys --where leaves at one value (those the study told) are one line, not columns that push the
    # seed off the line; the keys its sweeps sweep stay
    text = gradflow("ls", str(results), "--where", "study=b-quick/train", "--where", "seed=1")
    assert text.splitlines()[2].split()[:2] == ["init", "seed"], text
    assert "the same in every run --where keeps: width 16, lr 0.2" in " ".join(text.split()), text
    out = CliRunner().invoke(app, ["ls", str(results), "--where", "study=quick"])
    assert out.exit_code == 1 and "study here: a-quick/init, b-quick/init, b-quick/train" in out.output


def test_a_recorders_run_beside_a_sweep_leaves_the_sweeps_constant_keys_out(swept, tmp_path):
    # a Recorder's run has its own config ({lr, depth}) and none of `gradflow run`'s: each of the sweep's
    # constant keys (model.name, train.steps, ..., seed) read as swept, mlp against -, so ~30 key columns
    # took the 80 columns and no result was left on the line
    import torch
    from torch import nn

    from gradflow import Recorder, load
    from gradflow.keys import swept_keys

    results = tmp_path / "results"
    shutil.copytree(swept[0], results / "grid")
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
    with Recorder(model, results / "mine" / "run0", config={"lr": 0.1, "depth": 2}, every=1) as rec:
        for step in range(3):
            with rec.step(step):
                model(torch.randn(8, 4)).square().mean().backward()
    text = gradflow("ls", str(results))
    check_readable(text)
    header = " ".join(text.splitlines()[1:3])
    assert {"study", "lr", "depth", "init", "status"} <= set(header.split()), text
    assert {"loss", "meas"} & set(header.split()), text  # a result (the chi1 fit the warning is about)
    assert not {"model", "data", "steps", "seed"} & set(header.split()), text
    assert "only some of the folder's runs set them, each to one value: seed, and the other keys of model, data" in " ".join(text.split())
    rows = table_rows(text, r"grid|mine")
    assert len(rows) == 7 and [r[:5] for r in rows].count(["mine", "-", "-", "0.1", "2"]) == 1, text
    assert "model" in gradflow("ls", str(results), "--wide").splitlines()[1].split()  # --wide: every key
    # --where keeps the sweep's runs: their constant keys stay no columns, and the Recorder's keys, which
    # none of them has, go
    text = gradflow("ls", str(results), "--where", "model=mlp")
    header = " ".join(text.splitlines()[1:3]).split()
    assert "depth" in header and "init" in header and not {"lr", "model", "data", "steps"} & set(header), text
    assert len(table_rows(text)) == 6 and "loss" in header, text
    # compare names those keys by group too: each was a `key (- | value)` of its own, 15 lines of them
    text = " ".join(gradflow("compare", str(results / "mine"), str(results / "grid"), "--out",
                             str(results / "figures")).split())
    assert ("sources differ in lr (0.1 | -); depth (2 | -); seed, and the keys of model, data, init, norm, optim, "
            "probe, train and gradcheck, which only grid sets") in text, text
    assert swept_keys(load(results, "runs")) == ["model.depth", "init.name", "lr", "depth"]  # (the figures' axes)


def test_where_takes_values_as_ls_shows_them():
    # the error lists values through fmt (0.001761, true); typing one back must match
    from gradflow.summary import matches

    values = pd.Series([0.0017612, 0.001, 4.0, float("nan")])
    assert list(matches(values, "0.001761")) == [True, False, False, False]
    assert list(matches(values, "4")) == [False, False, True, False] == list(matches(values, "4.0"))
    assert list(matches(values, "-")) == [False, False, False, True]
    flags = pd.Series([True, False])
    assert list(matches(flags, "true")) == [True, False] and list(matches(flags, "True")) == [True, False]
    names = pd.Series(["none", "batchnorm", None])
    assert list(matches(names, "none")) == [True, False, False]  # a value, not a missing one


def test_runs_are_found_in_the_order_of_their_values(tmp_path):
    # by name, model.depth=10 came before model.depth=2, and optim.lr=0.01 before 1e-3
    names = ["model.depth=10,seed=0", "model.depth=2,seed=1", "model.depth=2,seed=0", "model.depth=3,seed=0"]
    names += ["b/init.sb2=0", "b/init.sb2=-1", "b/init.sb2=-10", "b/init.sb2=-2"]
    for name in [*names, "lr/optim.lr=0.01", "lr/optim.lr=1E-4", "lr/optim.lr=1e-3", "lr/optim.lr=0.1"]:
        (tmp_path / name).mkdir(parents=True)
        (tmp_path / name / store.RUN_FILE).write_text("{}")
    found = [p.relative_to(tmp_path).as_posix() for p in store.find_runs(tmp_path)]
    assert found == ["b/init.sb2=-10", "b/init.sb2=-2", "b/init.sb2=-1", "b/init.sb2=0",
                     "lr/optim.lr=1E-4", "lr/optim.lr=1e-3", "lr/optim.lr=0.01", "lr/optim.lr=0.1", "model.depth=2,seed=0",
                     "model.depth=2,seed=1", "model.depth=3,seed=0", "model.depth=10,seed=0"], found


@pytest.mark.parametrize("statuses, shown", [(["ok", "ok"], False), (["ok", "interrupted"], True),
                                             (["ok", "diverged"], True), (["failed", "ok"], True)])
def test_steps_done_shows_at_80_columns_where_a_run_stopped_early(statuses, shown):
    """A run that diverged, failed or was interrupted: how far it got is among the first results shown
    (finished runs all did their steps, so there it gives way first)."""
    from gradflow.cli.ls import choose
    from gradflow.columns import RESULT_COLUMNS, table_columns

    df = pd.DataFrame({"run": ["a", "b"], "model.depth": [2, 3], "status": statuses,
                       **{k: [1.5, 2.5] for k in RESULT_COLUMNS if k not in ("status", "chi1_layers")}})
    kept, _ = choose(table_columns(df, ["model.depth"]), 80)
    assert ("steps done" in [c.label for c in kept]) == shown


def test_ls_without_a_path_lists_the_results_folder(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = cli("ls")
    assert out.exit_code == 1 and "no results folder here" in out.output and "gradflow ls PATH" in out.output
    assert cli("run", "data=gaussian", "model.depth=2", "model.width=8", "train.steps=2").exit_code == 0
    out = cli("ls")
    assert out.exit_code == 0 and "ok: 1" in " ".join(out.output.split()), out.output


def test_a_sweep_cut_short_keeps_its_swept_keys_and_says_what_is_not_run(swept, tmp_path):
    # its depth-5 runs alone share one depth: listed without it, they read as an init sweep, and
    # nothing said that four of its six runs were missing
    root, _ = swept
    assert "not run" not in gradflow("ls", str(root))
    cut = tmp_path / "cut"  # (copied under another name: its command names this folder, absolute)
    shutil.copytree(root, cut)
    for job in cut.glob("*model.depth=[12]0*"):
        shutil.rmtree(job)
    text = gradflow("ls", str(cut))
    check_readable(text)
    assert text.splitlines()[2].split()[:2] == ["depth", "init"], text
    assert [row[:2] for row in table_rows(text)] == [["5", "orthogonal"], ["5", "xavier_normal"]], text
    flat = " ".join(text.split())
    assert "not run yet: 4 of the sweep's 6 runs: `gradflow sweep" in flat, text
    assert f"results={tmp_path} --name cut` runs them" in flat and "results=/" not in flat.replace(str(tmp_path), "")
    assert flat.endswith("not run: 4"), text
    assert set(runs_json(cut)["model.depth"]) == {5}
    # while the sweep is running (it holds the folder's lock) its command would be refused: ls says it runs
    with store.lock(cut, "gradflow sweep ... --name cut"):  # (held by this process: ls in one of its own)
        flat = " ".join(real_stdout("ls", str(cut)).split())
    assert f"not run yet: 4 of the sweep's 6 runs; the sweep is running (pid {os.getpid()} on " in flat, flat
    assert "runs them" not in flat
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    # a holder killed (its file left, the lock gone with it), also where its pid is a live process's since
    for pid in (int(gone.stdout), 1):
        (cut / store.HOLDER_FILE).write_text(json.dumps({"pid": pid, "host": socket.gethostname(),
                                                         "command": "gradflow sweep"}))
        assert "--name cut` runs them" in " ".join(gradflow("ls", str(cut)).split()), pid
    # one on another host: its lock cannot be seen from here
    (cut / store.HOLDER_FILE).write_text(json.dumps({"pid": 7, "host": "elsewhere", "command": "gradflow sweep"}))
    flat = " ".join(gradflow("ls", str(cut)).split())
    assert "the sweep may be running (pid 7 on elsewhere (gradflow sweep)); if it is not, `gradflow sweep" in flat
    (cut / store.HOLDER_FILE).unlink()
    # --where counts the runs it would keep; from the folder above, each sweep's count
    assert gradflow("ls", str(cut), "--where", "init=orthogonal").split()[-2:] == ["run:", "2"]
    assert "not run" not in gradflow("ls", str(cut), "--where", "depth=5")
    # a comma list counts the runs not run of any of its values, as it keeps the runs of any (it counted none)
    assert gradflow("ls", str(cut), "--where", "depth=5,10").split()[-2:] == ["run:", "2"]
    shutil.copytree(cut, tmp_path / "cut2")
    flat = " ".join(gradflow("ls", str(tmp_path)).split())
    assert "not run yet: cut 4 of 6 runs, cut2 4 of 6 runs; `gradflow ls SWEEP` gives the command" in flat
    assert flat.endswith("not run: 8"), flat
    # a sweep named twice, by itself and by the folder above it: its runs and its runs not run count once
    for paths in ((tmp_path, cut), (cut, tmp_path)):
        flat = " ".join(gradflow("ls", *map(str, paths)).split())
        assert flat.endswith("ok: 4 diverged: 0 failed: 0 not run: 8") and flat.count("4 of 6 runs") == 2, flat
    # --where study=NAME: the runs (and the runs not yet run) of that folder, as its column names it
    text = gradflow("ls", str(tmp_path), "--where", "study=cut2")
    assert [row[:2] for row in table_rows(text)] == [["5", "orthogonal"], ["5", "xavier_normal"]], text
    flat = " ".join(text.split())
    assert "not run yet: 4 of the sweep's 6 runs" in flat and "--name cut2`" in flat and flat.endswith("not run: 4")
    # an interrupted run beside them: the command reruns it too ("2 of 12 runs" when it would run 4)
    record = next((cut2 := tmp_path / "cut2").glob("*/run.json"))
    record.write_text(json.dumps(json.loads(record.read_text()) | {"status": store.INTERRUPTED}))
    flat = " ".join(gradflow("ls", str(cut2)).split())
    assert "not run yet: 4 of the sweep's 6 runs: `gradflow sweep" in flat, flat
    assert "--name cut2` runs them and reruns the 1 interrupted (and keeps the runs done)" in flat, flat
    assert flat.endswith("interrupted: 1 not run: 4"), flat
    # every point has a folder, one unfinished: nothing said of it, and no command, before
    shutil.copytree(root, full := tmp_path / "full")
    record = next(full.glob("*/run.json"))
    record.write_text(json.dumps(json.loads(record.read_text()) | {"status": store.INTERRUPTED}))
    flat = " ".join(gradflow("ls", str(full)).split())
    assert "not finished: 1 interrupted of the sweep's 6 runs: `gradflow sweep" in flat, flat
    assert "--name full` reruns them (and keeps the runs done)" in flat and "not run:" not in flat, flat
    flat = " ".join(gradflow("ls", str(tmp_path)).split())  # (several sweeps: it read "full 0 of 6 runs")
    assert "full 1 of 6 runs to rerun" in flat and "cut2 4 of 6 runs (1 to rerun)" in flat, flat


def test_json_and_csv_give_steps_as_whole_numbers_beside_a_missing_one(run_job):
    # a diverged run's diverged_step beside a finished run's none: pandas made the column float, 2.0
    import io

    from gradflow.cli import app

    small = ["data=gaussian", "data.n_train=64", "data.n_test=32", "data.dim=8", "model.width=8", "model.depth=3",
             "train.batch_size=32", "train.steps=6", "train.check_every=1"]
    diverged = run_job(*small, "model.activation=linear", "optim.lr=1e6", name="steps")
    run_job(*small, name="steps")
    step = store.read_run(diverged)["diverged_step"]
    assert isinstance(step, int)
    out = CliRunner().invoke(app, ["ls", str(diverged.parent), "--json"], catch_exceptions=False).output
    rows = {r["model.activation"]: r for r in json.loads(out)}
    assert rows["linear"]["diverged_step"] == step and isinstance(rows["linear"]["diverged_step"], int)
    assert rows["tanh"]["diverged_step"] is None and rows["tanh"]["steps_done"] == 6
    out = CliRunner().invoke(app, ["ls", str(diverged.parent), "--csv"], catch_exceptions=False).output
    csv = pd.read_csv(io.StringIO(out), dtype=str)
    assert set(csv["diverged_step"].dropna()) == {str(step)} and set(csv["steps_done"]) == {str(step), "6"}
    # so is the step a metric first reached a threshold at, beside a run that never did (tanh's train loss
    # starts at 2.39, the linear net's at 3.28 and then diverges)
    reach, column = ["--steps-to", "train_loss<=3"], "steps_to.train_loss<=3"
    out = CliRunner().invoke(app, ["ls", str(diverged.parent), "--json", *reach], catch_exceptions=False).output
    rows = {r["model.activation"]: r for r in json.loads(out)}
    assert rows["tanh"][column] == 0 and isinstance(rows["tanh"][column], int) and rows["linear"][column] is None
    out = CliRunner().invoke(app, ["ls", str(diverged.parent), "--csv", *reach], catch_exceptions=False).output
    assert set(pd.read_csv(io.StringIO(out), dtype=str)[column].dropna()) == {"0"}, out


def test_json_and_csv_give_a_key_its_type_in_the_config_beside_runs_that_lack_it(tmp_path):
    # an MLP's model.width beside a Recorder's run, which has none: pandas made the column float, so
    # --json and --csv said 8.0 (8 for the MLPs' folder alone), and a bool the other lacks True, not true
    import io

    import torch
    import yaml
    from torch import nn

    from gradflow import Recorder
    from gradflow.cli import app

    results = tmp_path / "results"
    made("run", "data=gaussian", "data.n_train=64", "data.n_test=32", "data.dim=8", "model.width=8", "model.depth=2",
         "train.steps=2", "train.batch_size=32", f"results={results}", "name=mlp")
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
    with Recorder(model, results / "mine" / "run0", config={"lr": 0.1, "depth": 2, "ema": True}, every=1) as rec:
        for step in range(2):
            with rec.step(step):
                model(torch.randn(8, 4)).square().mean().backward()
    config = yaml.safe_load(next((results / "mlp").glob("*/config.yaml")).read_text())  # (as the run holds them)
    keys = {f"{group}.{k}": v for group in ("model", "data") for k, v in config[group].items()
            if type(v) in (int, bool)}
    assert {"model.width", "model.depth", "data.seed"} <= set(keys)

    def listed(path: Path, form: str) -> dict[str, dict]:
        out = CliRunner().invoke(app, ["ls", str(path), form], catch_exceptions=False).output
        rows = json.loads(out) if form == "--json" else pd.read_csv(io.StringIO(out), dtype=str,
                                                                   keep_default_na=False).to_dict("records")
        return {r["run"].rpartition("/")[0] or "mlp": r for r in rows}

    alone, rows = listed(results / "mlp", "--json")["mlp"], listed(results, "--json")
    for k, v in keys.items():
        assert rows["mlp"][k] == v and type(rows["mlp"][k]) is type(v), (k, rows["mlp"][k])
        assert type(alone.get(k, v)) is type(v) and rows["mine"][k] is None, k
    assert rows["mine"]["depth"] == 2 and rows["mine"]["ema"] is True and rows["mlp"]["ema"] is None
    # the CSV writes each as --json and the config do: 8, not 8.0; true, not True; missing as empty
    rows = listed(results, "--csv")
    for k, v in keys.items():
        assert rows["mlp"][k] == (str(v).lower() if isinstance(v, bool) else str(v)) and rows["mine"][k] == "", k
    assert (rows["mine"]["depth"], rows["mine"]["ema"], rows["mlp"]["ema"]) == ("2", "true", "")
    assert rows["mlp"]["start_qstar"] == "false"  # (a bool every run has: False before)


def test_the_stale_note_is_left_out_where_every_listed_run_is_stale(cli, results):
    """The "stale: N runs ... --where status=ok leaves them out" line tells stale rows from live ones; where
    every run listed is stale (--where status=stale) there is nothing to tell apart, and its advice would
    leave nothing: no such line (it printed one whenever a listed run was stale)."""
    small = ["data=gaussian", "data.n_train=32", "data.n_test=16", "data.dim=4", "model.width=4", "train.steps=2",
             "train.batch_size=16", "threads=1", f"results={results}"]
    assert cli("sweep", *small, "model.depth=2,3", "--name", "s").exit_code == 0
    assert cli("sweep", *small, "model.depth=2", "--name", "s").exit_code == 0
    note = "--where status=ok leaves them out"
    assert note in " ".join(cli("ls", results / "s").output.split())
    only = cli("ls", results / "s", "--where", "status=stale")
    assert only.exit_code == 0 and "stale: 1" in " ".join(only.output.split())  # (the counts line)
    assert note not in " ".join(only.output.split()), only.output


def test_stale_runs_of_a_shrunk_grid_leave_the_keys_and_a_result_on_80_columns(cli, results, monkeypatch):
    # a grid rerun shrunk with --force (without it, each remaining point's run would move to its new name):
    # each remaining point's run beside its stale namesake, so a run column tells them apart. Its ids (init=xavier_normal,model.activation=tanh,seed=0) had no budget that kept them
    # distinct across the grid, so they showed whole and left only the status and one result at 80 columns
    from gradflow.cli.console import console

    monkeypatch.setattr(console, "width", 80)
    small = ["data=gaussian", "data.n_train=32", "data.n_test=16", "data.dim=4", "model.width=4", "model.depth=3",
             "train.steps=2", "train.batch_size=16", f"results={results}"]
    grid = ["model.activation=tanh,relu", "init=xavier_normal,kaiming_normal", "seed=0,1"]
    assert cli("sweep", *small, *grid, "--name", "s").exit_code == 0
    assert cli("sweep", *small, "model.activation=tanh,relu", "init=xavier_normal", "seed=0",
               "--name", "s", "--force").exit_code == 0
    out = cli("ls", results / "s").output.splitlines()
    at = next(i for i, line in enumerate(out) if line.startswith("─")) - 1
    assert max(map(len, out[at:at + 11])) <= 80, "\n".join(out)
    header = out[at].split()
    assert header[:5] == ["run", "activation", "init", "seed", "status"] and len(header) > 5, "\n".join(out)
    rows = [line.split() for line in out[at + 2:at + 12]]
    assert sorted(r[0] for r in rows if r[4] == "ok" or r[4] == "ok*") == ["model.activation=relu",
                                                                            "model.activation=tanh"]
    assert len({tuple(r[:4]) for r in rows}) == 10  # each row told apart by its run id beside its keys
    # ... and a line says what the stale rows are and how to leave them out, which does
    flat = " ".join(" ".join(out).split())
    assert ("stale: 8 runs of an earlier spec of the sweep (points it no longer has, or settings it changed); "
            f"--where status=ok leaves them out, gradflow clean {results / 's'} --stale deletes them") in flat, flat
    kept = cli("ls", results / "s", "--where", "status=ok").output
    assert "stale:" not in kept and "ok: 2" in kept, kept  # (the tmp folder name has "stale" in it)
    # the flagged run by its mark as the table shows it (status=ok* matched nothing, listing "ok, stale")
    marked = [r for r in rows if r[4] == "ok*"]
    flagged = cli("ls", results / "s", "--where", "status=ok*").output
    assert len(marked) == 1 and marked[0][1] in flagged and "ok: 1" in flagged and "flagged: 1" in flagged, flagged
    both = cli("ls", results / "s", "--where", "status=ok*,stale").output  # (a list: it matched none)
    assert "flagged: 1" in both and "stale: 8" in " ".join(both.split()) and "ok: 1" in both, both
    none = cli("ls", results / "s", "--where", "status=diverged").output
    assert "status here: ok, ok*, stale" in " ".join(none.split()), none


def test_a_failed_runs_dash_is_not_explained_as_a_net_too_shallow_to_fit():
    # a run that failed before its first probe reads - in every result: the note under the table said its chi1
    # meas - was a net with fewer than 3 layers to fit (the net was of depth 8)
    from gradflow.columns import RESULT_COLUMNS, column_notes, table_columns

    def notes(statuses, signal, chi1):
        df = pd.DataFrame({"run": ["a", "b"], "model.depth": [8, 9], "status": statuses,
                           **{k: [1.5, 2.5] for k in RESULT_COLUMNS if k not in ("status", "chi1_layers")},
                           "signal_ratio.init": signal, "chi1_measured": chi1})
        return " ".join(column_notes(table_columns(df, ["model.depth"]), df))

    assert "chi1 meas -" not in notes(["failed", "ok"], [np.nan, 0.5], [np.nan, 0.9])
    assert "chi1 meas -: no fit" in notes(["ok", "ok"], [0.4, 0.5], [np.nan, 0.9])  # (a shallow net: probed)


def test_no_run_deep_enough_for_a_chi1_fit_is_said_not_left_out_silently():
    # a sweep of depths 3 and 4 had no chi1 meas column (a result no run has) and no word why, where the README
    # says a shallow net reads -
    from gradflow.columns import RESULT_COLUMNS, column_notes, table_columns

    df = pd.DataFrame({"run": ["a", "b"], "model.name": ["mlp", "mlp"], "model.depth": [3, 4], "status": ["ok", "ok"],
                       **{k: [1.5, 2.5] for k in RESULT_COLUMNS if k not in ("status", "chi1_layers")},
                       "chi1_measured": [np.nan, np.nan]})
    columns = table_columns(df, ["model.depth"])
    assert "chi1_measured" not in [c.key for c in columns]
    assert any(n.startswith("no chi1 meas: no run has 3 layers") and "depth 8 or more" in n
               for n in column_notes(columns, df))
    # a Recorder's own model (an MLP with an attention layer whose projections have no signal) was left
    # without a word: the README's own_loop example
    own = df.assign(**{"model.name": "own_loop"})
    assert any(n.startswith("no chi1 meas: no run has 3 layers") and "9 probe points or more with a back-propagated "
               "signal" in n for n in column_notes(table_columns(own, ["model.depth"]), own))
    # ... and a shallow transformer's fit is per block, with nothing left out: the reason is its blocks
    tf = df.assign(**{"model.name": "transformer"})
    assert "no chi1 meas: no run has 3 blocks to fit its growth per block over" in \
        column_notes(table_columns(tf, ["model.depth"]), tf)
    rnn = df.assign(**{"model.name": "rnn"})  # (a recurrent net's time steps: no such fit to expect)
    assert not any(n.startswith("no chi1 meas") for n in column_notes(table_columns(rnn, ["model.depth"]), rnn))


def test_piped_table_lines_end_without_spaces_whatever_the_last_column():
    """A text column last is left-aligned, padded to its width: the status (its colour markup around the
    padding, out of the line's rstrip's reach), or a key with an empty value; piped, no line ends in spaces."""
    from gradflow.cli.console import console
    from gradflow.cli.ls import render
    from gradflow.columns import KEY_PRIORITY, Column

    depth = Column("model.depth", "depth", KEY_PRIORITY, ["2", "3", "4"], True)
    status = Column(store.STATUS, "status", KEY_PRIORITY, [store.OK, store.FAILED, store.DIVERGED], False)
    tag = Column("tag", "tag", KEY_PRIORITY, ["baseline", "", "wider"], False)
    for columns in ([depth, status], [depth, tag], [status, depth, tag]):
        with console.capture() as cap:
            console.print(render(columns, 3), highlight=False, soft_wrap=True)
        lines = cap.get().splitlines()
        assert len(lines) == 5 and all(line == line.rstrip() for line in lines), lines
        assert [line.split() for line in lines[2:]] == [[c for c in row if c] for row in zip(*(c.cells for c in columns))]


def test_a_key_none_of_the_runs_where_keeps_has_is_left_out_but_wide_shows_it(tmp_path):
    """Recorder runs of their own configs: `--where model=mlp` keeps the two that have no lr. lr is no column
    and is not named among the keys the same in every run kept ("lr -"); --wide shows every column, lr too."""
    import torch
    from torch import nn

    from gradflow import Recorder
    from gradflow.cli import app

    for name, config in (("a", {"lr": 0.1, "depth": 2}), ("b", {"model": "mlp", "depth": 3}),
                         ("c", {"model": "mlp", "depth": 4})):
        model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
        with Recorder(model, tmp_path / name, config=config, every=1) as rec:
            with rec.step(0):
                model(torch.randn(8, 4)).square().mean().backward()
    out = CliRunner().invoke(app, ["ls", str(tmp_path), "--where", "model=mlp"], catch_exceptions=False)
    text = " ".join(out.output.split())
    assert out.exit_code == 0 and "the same in every run --where keeps: model mlp " in text, out.output
    assert "lr" not in out.output.splitlines()[1].split(), out.output
    wide = CliRunner().invoke(app, ["ls", str(tmp_path), "--where", "model=mlp", "--wide"], catch_exceptions=False)
    assert wide.output.splitlines()[1].split()[:3] == ["lr", "depth", "model"], wide.output


@pytest.fixture(scope="module")
def inits(tmp_path_factory) -> Path:
    """Eight 20-layer nets at init (tanh and relu under four inits), whose chi1 fits start in the transient:
    swept once for the two tests that list them."""
    from gradflow.cli import app

    results = tmp_path_factory.mktemp("inits") / "results"
    args = ["sweep", "data=gaussian", "data.n_train=64", "data.n_test=32", "train.batch_size=64", "model.width=32",
            "model.depth=20", "model.activation=tanh,relu", "init=xavier_normal,kaiming_normal,orthogonal,standard",
            "train.steps=0", f"results={results}", "--name", "inits"]
    out = CliRunner().invoke(app, args, catch_exceptions=False)
    assert out.exit_code == 0, out.output
    return results / "inits"


def test_the_chi1_columns_of_a_transient_warning_show_together_and_the_signal_ratio_first(inits):
    """With the warning that fits start in the length map's transient, chi1 meas, fit and theory show all three
    or none (at 80 columns the fit, with its `!`, showed without the theory it is off from); and where one ratio
    fits, it is the signal's (an exploding net read `ratio init 0.16`, its signal ratio of 905 left out)."""
    labels = ("chi1 meas", "chi1 fit", "chi1 theory")
    for columns in (80, 90, 100):
        text = gradflow("ls", str(inits), columns=columns)
        assert "warning: " in text and "transient" in text, text  # (tanh under Xavier: its length still moving)
        header = " ".join(" ".join(text.splitlines()[1:3]).split())
        shown = [label for label in labels if label.split()[1] in header.split()]
        assert shown in ([], ["chi1 meas", "chi1 fit", "chi1 theory"]), (columns, header)
        assert (shown != []) == (columns > 80), (columns, header)  # (at 80 the fit and meas showed, no theory)
        # the warning says where its columns are when the width left them out
        said = "its chi1 columns do not all fit in the width: --wide shows them"
        assert (said in " ".join(text.split())) == (shown == []), (columns, text)
        if columns == 100:  # room for one ratio beside the three: the signal's
            words = header.split()  # (the two header lines: "signal" over "ratio"; "init" is the key's column)
            assert "signal" in words and words.count("ratio") == 1 and words.count("init") == 1, header
    # sorted by one at 60 columns, that one shows and the other two do not: said too
    text = gradflow("ls", str(inits), "--sort", "chi1_measured", columns=60)
    assert "meas" in " ".join(text.splitlines()[1:3]).split() and said in " ".join(text.split()), text


def test_a_chi1_theory_that_is_only_the_q_star_zero_limits_is_marked(inits):
    """tanh under Xavier (sw2 = 1, sb2 = 0) read `chi1 theory 1` ("critical") beside a measured ~0.9, the
    warning advising to start at q* with data.scale=qstar (q* is 0). The theory's 1 is the limit of a length
    that falls as ~1/l, which the signal never reaches (theory.signal_law_applies): marked, and said why;
    relu's (scale-free) and tanh's with q* > 0 are not."""
    text = gradflow("ls", str(inits), "--wide", columns=200)
    rows = {(r[0], r[1]): r for r in table_rows(text, r"[a-z_]+")}
    header = " ".join(text.splitlines()[1:3]).split()
    assert header[-2:] == ["chi1", "theory"] or "theory" in header, header
    for (act, init), row in rows.items():
        limit = act == "tanh" and init in ("xavier_normal", "orthogonal")  # (both sw2 = 1: chi1 = 1 at q* = 0)
        assert row[-1].endswith("†") == limit, (act, init, row)
        if limit:
            assert row[-1] == "1†" and row[-2].endswith("!"), row  # (its fit in the transient towards the limit)
    flat = " ".join(text.split())
    assert "†: chi1 theory's limit at q* = 0 (no bias), which the forward signal approaches only as ~1/l" in flat
    assert flat.count("chi1 fits start in the length map's transient") == 1 and "data.scale=qstar" not in flat, flat
    assert "(mean-field theory puts the fit up to 10.6% off chi1 at q*); fit deeper layers (q* = 0: no input" in flat
    kept = gradflow("ls", str(inits), "--where", "model.activation=relu", "--wide", columns=200)
    assert "†" not in kept, kept
    # a q* of infinity is no such limit (elu at sw2 = 4: chi1 ~2, chaotic), nor a q* > 0 (tanh under kaiming)
    from gradflow.columns import limit_only

    for config in ({"model.activation": "elu", "init.name": "meanfield", "init.sw2": 4.0, "init.sb2": 0.1},
                   {"model.activation": "tanh", "init.name": "kaiming_normal"}):
        assert not limit_only(pd.Series({"model.name": "mlp", "chi1_theory": 2.0, **config})), config


def test_a_recurrent_nets_notes_speak_of_time_steps_and_the_head():
    # the note under an RNN sweep read "first layer / last layer", where its points are time steps and the head
    from gradflow.columns import RESULT_COLUMNS, column_notes, table_columns

    df = pd.DataFrame({"run": ["a", "b"], "model.name": ["rnn", "lstm"], "model.recurrent_init": ["orthogonal"] * 2,
                       "data.T": [10, 40], "status": ["ok", "ok"],
                       **{k: [0.5, 0.01] for k in RESULT_COLUMNS if k not in ("status", "chi1_layers")},
                       "chi1_layers": ["3-7", "3-37"]})
    notes = column_notes(table_columns(df, ["model.name", "data.T"]), df)
    assert "signal ratio = ‖∂L/∂z‖ first time step / head, at init" in notes, notes
    assert "chi1 fit = time steps fitted (first-last)" in notes, notes
    # a Recorder's run of a user's model named gru (no model.recurrent_init) has layers, as an MLP beside it does
    user = df.assign(**{"model.recurrent_init": [None, None]})
    assert "signal ratio = ‖∂L/∂z‖ first layer / last layer, at init" in column_notes(
        table_columns(user, ["model.name", "data.T"]), user)


def test_ratio_end_alone_is_explained_as_the_ratio_is():
    # a Recorder's loop counting steps from 1 has no step-0 ratio: ls showed `ratio end` with no line saying what
    # the ratio is
    from gradflow.columns import column_notes, table_columns

    df = pd.DataFrame({"run": ["a"], "status": ["ok"], "steps_done": [21], "grad_ratio.final": [0.8562]})
    columns = table_columns(df, [])
    assert "grad_ratio.final" in [c.key for c in columns] and "grad_ratio.init" not in [c.key for c in columns]
    assert column_notes(columns, df) == ["ratio = ‖∂L/∂W‖ first layer / last layer"]


def test_a_chi1_column_sorted_by_shows_though_its_group_does_not_fit(inits):
    """The chi1 columns of a transient warning show all three or none; the one `--sort` names shows whatever the
    width (at 80 columns --sort chi1_theory left all three out: rows in an order one cannot see)."""
    for key, word in (("chi1_theory", "theory"), ("-chi1_measured", "meas")):
        text = gradflow("ls", str(inits), "--sort", key, columns=80)
        assert "warning: " in text and "transient" in text, text
        header = " ".join(text.splitlines()[1:3]).split()
        assert word in header, (key, text)
        # (the rows in the column's order; a theory's † marks a limit: columns.LIMIT_MARK)
        values = [float(line.split()[-1].rstrip("†")) for line in text.splitlines()[4:12]]
        assert values == sorted(values, reverse=key.startswith("-")), (key, text)
    # a key each init choice sets (init.gain), which the table leaves out otherwise, shows when sorted by
    text = gradflow("ls", str(inits), "--sort", "-init.gain", columns=100)
    assert "gain" in " ".join(text.splitlines()[1:3]).split() and "set them: mode, gain" not in text, text


def test_a_key_one_choice_sets_gives_way_to_a_studys_own_axis_in_a_folder_of_studies(tmp_path):
    # a skip x norm sweep beside a skip sweep with model.alpha=0.5: alpha, set where skip=residual and unset
    # elsewhere, counted as varying within both studies, went before norm, which one of them sweeps, and on a
    # full line norm gave way: that study's rows read alike (its own ls shows skip and norm, and no alpha)
    from gradflow.cli import app

    results = tmp_path / "results"
    small = ["data=gaussian", "data.n_train=64", "data.n_test=32", "data.dim=8", "model.width=8", "train.steps=2",
             "train.batch_size=32", "model.skip=none,residual", "model.depth=2,3"]
    for name, more in (("normskip", ["norm=none,batchnorm"]), ("halfskip", ["model.alpha=0.5"])):
        args = ["sweep", *small, *more, f"results={results}", "--name", name]
        assert CliRunner().invoke(app, args, catch_exceptions=False).exit_code == 0
    def header(text: str) -> list[str]:
        lines = text.splitlines()
        rule = next(i for i, line in enumerate(lines) if line.startswith("─"))
        return " ".join(lines[1:rule]).split()

    wide = header(gradflow("ls", str(results), "--wide"))
    assert wide.index("norm") < wide.index("alpha"), wide
    # one key too many for the line: alpha gives way, the axis both studies sweep stays
    text = gradflow("ls", str(results), columns=72)
    assert {"study", "skip", "norm", "depth", "status"} <= set(header(text)) and "alpha" not in header(text), text
    assert "read alike" not in text, text
    # sorted by it, alpha shows whatever the width: a key's column that the keys before it crowded out left the
    # rows in an order one could not see (the README: the sorted column always shows)
    text = gradflow("ls", str(results), "--sort", "-alpha", columns=72)
    hidden = text.split("not shown (72 columns)")[1] if "not shown (72 columns)" in text else ""
    assert "alpha" in header(text) and "alpha" not in hidden.split("\n\n")[0], text


def test_a_folder_of_studies_sorts_each_studys_rows_by_the_columns_as_shown(tmp_path):
    # an lr x seed study beside a width x seed one: the table's first key column is seed (both studies vary it),
    # but the first study's rows went by lr first (the keys' order in the config), reading as shuffled
    results = tmp_path / "results"
    small = ["data=gaussian", "data.n_train=64", "data.n_test=32", "data.dim=8", "model.depth=2", "train.steps=2",
             "train.batch_size=32", "seed=0,1"]
    made("sweep", *small, "model.width=8", "optim.lr=0.1,0.01", f"results={results}", "--name", "lr")
    made("sweep", *small, "model.width=8,9", f"results={results}", "--name", "width")
    text = gradflow("ls", str(results), "--wide")
    header = text.splitlines()[1:3]
    words = " ".join(header).split()
    assert words.index("seed") < words.index("lr"), header
    rows = json.loads(gradflow("ls", str(results), "--json"))
    lr = [(r["seed"], r["optim.lr"]) for r in rows if r["run"].startswith("lr/")]
    assert lr == [(0, 0.01), (0, 0.1), (1, 0.01), (1, 0.1)], lr


def test_ls_of_several_paths_lists_them_together_as_a_folder_of_studies(tmp_path, monkeypatch):
    # `gradflow ls A B` (results in two places) was refused: "Got unexpected extra argument(s)"
    from gradflow.cli import app

    small = ["data=gaussian", "data.n_train=64", "data.n_test=32", "data.dim=8", "train.steps=2",
             "train.batch_size=32", "threads=1"]
    a, b = tmp_path / "lab" / "results", tmp_path / "laptop" / "results"
    for results, name, swept in ((a, "depth", ["model.depth=2,8", "model.width=8"]),
                                 (b, "width", ["model.width=8,16", "model.depth=8"])):
        args = ["sweep", *small, *swept, f"results={results}", "--name", name]
        assert CliRunner().invoke(app, args, catch_exceptions=False).exit_code == 0
    text = gradflow("ls", str(b / "width"), str(a / "depth"))
    check_readable(text[text.index("\n") + 1:])  # (the first line names the paths, whole)
    header = text.splitlines()[2].split()
    assert header[:3] == ["study", "depth", "width"] and "loss" in header, text
    rows = table_rows(text, r"lab\S*|laptop\S*")
    # each row named by its folder, the paths' runs in the order given, each study's runs in its keys' order
    assert [r[:3] for r in rows] == [["laptop/results/width", "8", "8"], ["laptop/results/width", "8", "16"],
                                     ["lab/results/depth", "2", "8"], ["lab/results/depth", "8", "8"]], text
    assert text.splitlines()[-1].split()[:6] == ["ok:", "4", "diverged:", "0", "failed:", "0"], text  # (all four)

    def listed(*paths: Path | str, args: tuple[str, ...] = ()) -> pd.DataFrame:
        out = CliRunner().invoke(app, ["ls", *map(str, paths), "--json", *args], catch_exceptions=False)
        assert out.exit_code == 0, out.output
        return pd.DataFrame(json.loads(out.output))

    both = listed(a / "depth", b / "width", args=("--rate", "signal_norm", "--steps-to", "train_loss<=100"))
    assert list(both["run"]) == ["lab/results/depth/model.depth=2", "lab/results/depth/model.depth=8",
                                 "laptop/results/width/model.width=8", "laptop/results/width/model.width=16"]
    # each run's numbers as ls of its own folder gives them
    for folder in (a / "depth", b / "width"):
        alone = listed(folder, args=("--rate", "signal_norm", "--steps-to", "train_loss<=100"))
        mine = both[both["run"].str.startswith(folder.relative_to(tmp_path).as_posix())]
        for column in ("final.train_loss", "rate.signal_norm", "steps_to.train_loss<=100", "final.test_acc"):
            pd.testing.assert_series_equal(mine[column].reset_index(drop=True), alone[column], obj=column)
    assert both["rate.signal_norm"].notna().sum() == 3  # (the depth-8 runs: a fit)
    # --where study=, --sort across them, --csv
    kept = listed(a / "depth", b / "width", args=("--where", "study=laptop", "--sort", "-width"))
    assert list(kept["model.width"]) == [16, 8]
    assert list(listed(a / "depth", b / "width", args=("--sort", "train loss"))["final.train_loss"]) == \
        sorted(both["final.train_loss"])
    csv = CliRunner().invoke(app, ["ls", str(a / "depth"), str(b / "width"), "--csv"], catch_exceptions=False)
    assert len(pd.read_csv(__import__("io").StringIO(csv.output))) == 4
    # a path given twice (or as ./PATH/, or inside another given) is listed once
    monkeypatch.chdir(tmp_path)
    assert len(listed("lab/results/depth", "./lab/results/depth/", a / "depth" / "model.depth=2", b)) == 4
    assert len(listed(a / "depth", a / "depth")) == 2  # (one path: as ls of it)
    # paths far apart: each study named by its folders from the one both are under, a long one shortened
    # around "…" (three folders deep it took 90 columns and left no result at 80), whole folders kept
    deep = tmp_path / "scratch" / "a-rather-long-folder-name" / "with-another-level-below-it" / "results"
    shutil.copytree(b / "width", deep / "width")
    text = gradflow("ls", str(a / "depth"), str(deep / "width"))
    body = text.splitlines()[1:]
    assert max(map(len, body)) <= 80 and body[1].split()[0] == "study" and "loss" in body[1].split(), text
    studies = [r[0] for r in table_rows(text, r"\S+/\S+")]
    assert studies == ["lab/results/depth"] * 2 + ["scratch/…/width"] * 2, text
    whole = "scratch/a-rather-long-folder-name/with-another-level-below-it/results/width"
    assert whole in gradflow("ls", str(a / "depth"), str(deep / "width"), "--wide")  # (--wide: whole)
    # a path that does not exist, or holds no run: one line naming it
    (tmp_path / "empty").mkdir()
    for bad, says in (("lab/results/dpeth", "lab/results/dpeth does not exist (did you mean lab/results/depth?)"),
                      ("empty", "empty holds no runs")):
        out = CliRunner().invoke(app, ["ls", "lab/results/depth", bad])
        assert out.exit_code == 1 and says in out.output and "Traceback" not in out.output, out.output
        assert len(out.output.strip().splitlines()) == 1, out.output


def test_ls_of_several_paths_says_what_is_not_run_and_which_folder_to_clean(tmp_path):
    # the notes under the table of `ls A B`: a sweep of A cut short (its command), B's stale runs (the path
    # of B to clean, not the folder both are under, whose clean would reach beyond them)
    from gradflow.cli import app

    small = ["data=gaussian", "data.n_train=32", "data.n_test=16", "data.dim=4", "model.width=4", "train.steps=2",
             "train.batch_size=16", "threads=1"]
    for name, swept in (("cut", ["model.depth=2,3"]), ("shrunk", ["seed=0,1"]), ("shrunk", ["seed=0", "--force"])):
        args = ["sweep", *small, *swept, f"results={tmp_path / name}", "--name", "s"]
        assert CliRunner().invoke(app, args, catch_exceptions=False).exit_code == 0
    shutil.rmtree(tmp_path / "cut" / "s" / "model.depth=3")
    text = gradflow("ls", str(tmp_path / "cut" / "s"), str(tmp_path / "shrunk" / "s"))
    flat = " ".join(text.split())
    assert "not run yet: 1 of the sweep's 2 runs: `gradflow sweep" in flat, text
    assert f"results={tmp_path / 'cut'} --name s` runs them" in flat, text
    assert f"gradflow clean {tmp_path / 'shrunk' / 's'} --stale deletes them" in flat, text
    assert re.search(r"ok: 2 .*stale: 2 not run: 1$", flat), text
    # a sweep cut short before its first run began: "holds no runs", with nothing said of the sweep or its command
    shutil.rmtree(tmp_path / "cut" / "s" / "model.depth=2")
    for command in ("ls", "plot"):
        out = CliRunner().invoke(app, [command, str(tmp_path / "cut" / "s")])
        said = " ".join(out.output.split())
        assert out.exit_code == 1 and len(out.output.strip().splitlines()) <= 3, out.output
        assert "holds no runs yet: none of its sweep's 2 runs has begun; `gradflow sweep" in said, said
        assert f"results={tmp_path / 'cut'} --name s` runs them" in said, said
    # a holder on another host, whose lock is not to be seen from here: it may be running (it said "is running",
    # and no command)
    (tmp_path / "cut" / "s" / store.HOLDER_FILE).write_text(json.dumps({"pid": 7, "host": "elsewhere",
                                                                        "command": "gradflow sweep"}))
    said = " ".join(CliRunner().invoke(app, ["ls", str(tmp_path / "cut" / "s")]).output.split())
    assert "none of its sweep's 2 runs has begun; the sweep may be running (pid 7 on elsewhere (gradflow sweep)); " \
        "if it is not, `gradflow sweep" in said, said


def test_a_study_beside_others_in_its_folder_keeps_that_folders_name():
    # two reproductions' arms: at its 20 characters the study column read he2015-quick/train, then …/chi1 and
    # …/grid, distinct but naming no experiment; a study alone in its folder still loses the folders between
    from gradflow.columns import short_studies

    arms = ["he2015-quick/train", "he2015-quick/init", "schoenholz2017-quick/chi1", "schoenholz2017-quick/grid"]
    assert short_studies(arms * 2) == arms * 2
    deep = [f"reproduce/{a}" for a in arms]  # (35 characters: the folders above the experiment give way)
    assert short_studies(deep) == [*deep[:2], "…/schoenholz2017-quick/chi1", "…/schoenholz2017-quick/grid"]
    apart = ["lab/results/depth", "scratch/a-rather-long-folder-name/with-another-level-below-it/results/width"]
    assert short_studies(apart) == ["lab/results/depth", "scratch/…/width"]
    # arms whose folder and name outrun every budget are cut as before, and take no one else's cut with them
    # (every study came back whole, an unrelated long path too)
    long = ["results/skipinit2020-quick/resnet_batchnorm", "results/skipinit2020-quick/resnet_skipinit",
            "home/user/projects/2024/experiments/results/depth-study"]
    assert short_studies(long) == ["…/resnet_batchnorm", "…/resnet_skipinit", "home/…/depth-study"]


def test_studies_that_differ_only_in_a_middle_folder_are_told_apart_by_it():
    # one sweep copied to two nodes' folders: no budget of folders from the ends told them apart, every study came
    # back whole (a 90-column study column, no result beside it); and a lone long study had its own name cut
    from gradflow.columns import short_studies

    twins = [f"nest2/node-{n}/project-gradient-flow/depth-study-long-name" for n in ("alpha", "beta")]
    other = "nest/experiments-2024/cluster-node-alpha/project-gradient-flow/depth-study-long-name"
    assert short_studies([other, "nest/short", *twins]) == [
        "nest/…/depth-study-long-name", "nest/short", "nest2/node-alpha/…/depth-study-long-name",
        "nest2/node-beta/…/depth-study-long-name"]
    assert short_studies([other, "nest/short"]) == ["nest/…/depth-study-long-name", "nest/short"]
    # a study inside another of its name: no folder left to tell them apart by, so whole (never alike)
    nested = ["node-alpha-cluster/experiments-2024/depth-study-long",
              "node-alpha-cluster/experiments-2024/depth-study-long/depth-study-long"]
    assert short_studies(nested) == nested
    # distinct, but node-alpha's own folder left out beside node-beta's: `nest/…/depth-study`
    deeper = [f"nest/node-{n}/experiments-2024/project-gradient-flow/depth-study" for n in ("alpha", "beta")]
    assert short_studies([*deeper, "other/x"]) == ["nest/node-alpha/…/depth-study", "nest/node-beta/…/depth-study",
                                                   "other/x"]


def test_a_long_key_value_is_cut_around_an_ellipsis_at_80_columns_and_whole_when_wide():
    # a 200-character +tag made the table 207 columns wide piped, the status and results off the screen
    from gradflow.cli.ls import choose
    from gradflow.columns import RESULT_COLUMNS, short_values, table_columns

    long = "t" * 100 + "u" * 100
    df = pd.DataFrame({"run": ["a", "b", "c"], "tag": [long, "short", long[:-1] + "v"], "status": ["ok"] * 3,
                       **{k: [1.5, 2.5, 3.5] for k in RESULT_COLUMNS if k not in ("status", "chi1_layers")}})
    kept, _ = choose(table_columns(df, ["tag"], short=True), 80)
    tag = next(c for c in kept if c.key == "tag")
    assert tag.cells[1] == "short" and max(map(len, tag.cells)) <= 24 and "…" in tag.cells[0]
    assert len(set(tag.cells)) == 3 and tag.cells[0].startswith("t") and tag.cells[0].endswith("u")
    assert "status" in [c.key for c in kept]
    assert [c for c in table_columns(df, ["tag"]) if c.key == "tag"][0].cells[0] == long  # (--wide, the page)
    assert short_values(["x" * 30, "x" * 31]) == ["x" * 30, "x" * 31]  # (cut alike at 24: whole, at 40)
    wider = [c for c in table_columns(df, ["tag"], short=True, width=200) if c.key == "tag"][0].cells
    assert max(map(len, wider)) == 50 and wider[1] == "short"  # (a quarter of a 200-column terminal)


def test_a_run_of_an_activation_this_gradflow_lacks_is_listed_without_a_prediction(tmp_path):
    # a results folder holding a run of an activation added on another branch (mish): `ls`, `report` and the
    # standard plots failed for the whole folder with "model.activation='mish' is not a known activation"
    from gradflow import load as gradflow_load
    from gradflow.report import theory_rows

    results = tmp_path / "results"
    base = [o for o in SWEEP if not o.startswith(("model.depth=", "init="))]
    made("sweep", *base, "model.depth=3", "model.activation=tanh,relu", f"results={results}", "--name", "ext")
    (relu,) = (results / "ext").glob("*relu*")
    for name in ("run.json", "config.yaml"):
        (relu / name).write_text((relu / name).read_text().replace("relu", "mish"))
    listed = runs_json(results / "ext").set_index("model.activation")
    assert sorted(listed.index) == ["mish", "tanh"]
    assert listed.loc["tanh", "chi1_theory"] > 0  # (mish's is its branch's, as its run.json holds it)
    assert "mish" in gradflow("ls", results / "ext")
    assert [r["activation"] for r in theory_rows(gradflow_load(results / "ext", table="runs"))] == ["tanh"]
    # its init's sigma_w^2 stays known where the scheme needs no activation (the titles say it): kaiming's does
    from gradflow.theory import effective_sw2

    assert effective_sw2({"model.activation": "mish", "init.name": "xavier_normal"}) == 1.0
    assert effective_sw2({"model.activation": "mish", "init.name": "kaiming_normal"}) is None


def test_a_measured_chi1_shows_beside_its_theory_or_neither_does(tmp_path):
    # with no transient warning (inputs at q*): at some widths `chi1 meas` showed while `chi1 theory` gave way,
    # a number with nothing to read it against
    results = tmp_path / "results"
    made("sweep", *SWEEP[:-2], "model.depth=20", "init=meanfield", "init.sw2=1.5,1.9", "data.scale=qstar",
         "model.activation=tanh,relu", f"results={results}", "--name", "q")
    assert "warning" not in gradflow("ls", results / "q")
    split = []
    # (sorted by one of them, that one shows whatever the width: then its partner beside it)
    for sort in ([], ["--sort", "chi1_measured"], ["--sort", "-chi1_theory"]):
        for width in range(60, 161, 4 if sort else 2):
            text = gradflow("ls", results / "q", *sort, columns=width)
            header = " ".join(text.splitlines()[1:3])
            hidden = " ".join(line for line in text.replace("\n", " ").split("not shown (")[1:2])
            shown = {c: c in header for c in ("meas", "theory")}
            assert "chi1 meas" in hidden or shown["meas"]  # (the folder's runs have a measured chi1)
            if shown["meas"] != shown["theory"]:
                split.append((sort, width))
    assert not split, split


def test_the_table_measures_each_column_once_not_once_per_cell():
    # each cell asked its column's width, itself a pass over every cell: a 4000-run `ls` spent 16 of 26 s there
    from gradflow.cli.ls import render
    from gradflow.columns import Column

    asked = []

    class Counted(Column):
        @property
        def width(self) -> int:
            asked.append(self.key)
            return super().width

    rows = 300
    columns = [Counted(k, k, 1.0, [f"{k}{i}" for i in range(rows)], numeric=False) for k in ("a", "b", "c")]
    text = render(columns, rows)
    assert len(text.splitlines()) == rows + 2 and text.splitlines()[-1].split() == ["a299", "b299", "c299"]
    assert len(asked) <= 2 * len(columns), len(asked)  # (a header's words may ask again: never a row's cells)


def test_a_sweep_spec_read_twice_is_the_file_as_it_is_now(tmp_path):
    # sweep.yaml is read once per version of the file: a changed file is read again, and a caller that
    # changes what it was given changes no other caller's copy
    study = tmp_path / "s"
    study.mkdir()
    (study / store.SWEEP_FILE).write_text("command: a\nruns: {x: '1'}\n")
    first = store.sweep_spec(study)
    first["runs"]["y"] = "2"
    assert store.sweep_spec(study) == {"command": "a", "runs": {"x": "1"}}
    (study / store.SWEEP_FILE).write_text("command: bb\nruns: {x: '1'}\n")
    assert store.sweep_spec(study)["command"] == "bb"
    (study / store.SWEEP_FILE).write_text("[not, a, spec]\n")
    assert store.sweep_spec(study) is None
