"""`gradflow reproduce` as a user reads it, piped at 80 (and 120+) columns: --list and the claims table wrap
between words only, every cell is whole (the claim's source is never cut short), a count of runs reads as one,
pascanu2013's claims are complete phrases and its figure names the recurrent init.

The claims come from one pascanu2013 --quick run (about 10 s), a real process through a real pipe, and he2015
at step 0 (two seeds, about 12 s); the other commands run in this process, as a pipe sees them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from gradflow import reproduce as rep
from gradflow import store
from tests.commands import piped, real, real_stdout


def gradflow(*args: str, columns: int = 80, ok: bool = True) -> str:
    """What the command prints, piped, at `columns` columns, run in this process (byte for byte what the
    real pipe gets: tests.commands.piped; a process of its own costs a Python, torch and Hydra import)."""
    out = piped(*args, columns=columns, code=None)
    assert (out.exit_code == 0) == ok, out.stdout + out.stderr
    return out.stdout


def words(text: str) -> str:
    return " ".join(text.split())


def table(text: str) -> tuple[list[str], list[list[str]]]:
    """A boxed rich table's header and body rows, each cell's lines joined by single spaces: a word folded
    across two lines ("trainabili" / "ty") then reads as two words, and no longer matches its text."""
    def cells(line: str) -> list[str]:
        return [c.strip() for c in line.split(line[0])[1:-1]]

    header: list[list[str]] = []
    rows, current = [], []
    for line in text.splitlines():
        if line.startswith(("┃", "│")):
            parts = cells(line)
            target = header if line[0] == "┃" else current
            if not target:
                target.extend([] for _ in parts)
            for lines, part in zip(target, parts):
                lines.append(part) if part else None
        elif line.startswith(("├", "└")) and current:
            rows.append([words(" ".join(c)) for c in current])
            current = []
    return [words(" ".join(c)) for c in header], rows


def check_lines(text: str, columns: int) -> None:
    """Every line within `columns` characters (not bytes) but for a path longer than a line, on a line of its
    own and whole; none ending in spaces; nothing cut with an ellipsis."""
    for line in text.splitlines():
        assert (len(line) <= columns or " " not in line) and line == line.rstrip(), repr(line)
    assert "…" not in text


# --- --list ---------------------------------------------------------------------------------------------
def test_list_at_80_columns_piped_wraps_between_words():
    text = gradflow("reproduce", "--list")
    header, rows = table(text)
    # each cell, its lines joined, is the spec's text: the old table broke "vanishing-gradien|t",
    # "trainabili|ty" and "initializa|tions" across lines
    pieces = {w for r in rows for cell in r for w in cell.split()}
    assert not {"vanishing-gradien", "trainabili", "initializa"} & pieces
    assert header == ["name", "experiment"]
    assert rows == [[s.name, words(f"paper: {s.paper} claim: {s.summary} runtime (default scale): {s.runtime}")]
                    for s in map(rep.Spec.load, rep.names())]
    check_lines(text, 80)


def test_list_wide_has_a_column_per_field():
    text = gradflow("reproduce", "--list", columns=140)
    header, rows = table(text)
    assert header == ["name", "paper", "claim", "runtime (default scale)"]
    assert rows == [[s.name, words(s.paper), words(s.summary), words(s.runtime)]
                    for s in map(rep.Spec.load, rep.names())]
    check_lines(text, 140)


def test_list_one_experiment_shows_what_each_scale_runs():
    spec = rep.Spec.load("he2015")
    for columns in (80, 140):
        text = gradflow("reproduce", "--list", "he2015", columns=columns)
        header, rows = table(text)
        scales = " ".join(f"--scale {sc}: {t}" for sc, t in spec.scaled.items())
        assert header == ["name", "experiment"] and rows == [["he2015", words(
            f"paper: {spec.paper} claim: {spec.summary} runtime (default scale): {spec.runtime} {scales}")]]
        assert "quick" in spec.scaled and other_names_absent(text, "he2015")
        check_lines(text, columns)


def other_names_absent(text: str, name: str) -> bool:
    return not [n for n in rep.names() if n != name and re.search(rf"(?<![\w-]){re.escape(n)}(?![\w-])", text)]


def test_mistyped_option_taken_for_the_name_says_which_option():
    out = real("reproduce", "--lst")
    assert out.returncode == 2 and out.stdout == ""  # (exit 2: a command line refused, as Typer's refusals)
    assert out.stderr.strip().splitlines() == [
        "error: --lst is not an option of `gradflow reproduce` (did you mean --list?); see `gradflow reproduce --help`"]


# --- the claims table: pascanu2013 -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def pascanu(tmp_path_factory) -> tuple[Path, str]:
    results = tmp_path_factory.mktemp("results")
    text = real_stdout("reproduce", "pascanu2013", "--quick", "threads=1", f"results={results}")
    return rep.root_for("pascanu2013", "quick", str(results)), text


def test_a_piped_reproduction_says_each_arms_counts_and_time_not_a_bars_last_frame(pascanu):
    # (a log's "runs ━━━━ 6/6 0:00:02 0:00:00": a bar whose time remaining says nothing once it is done)
    _, text = pascanu
    lines = text.splitlines()
    arms = [line for line in lines if line.split(" ")[0] == "sweep"]  # (alone on its line before a long path)
    counts = [line for line in lines if re.fullmatch(r"ok: \d+  diverged: \d+  failed: \d+  \(\d+ runs? in [\d.]+ s\)",
                                                     line)]
    assert len(arms) >= 2 and len(counts) == len(arms), text
    # (a bar's frame, not the arm's line "sweep PATH: 2 runs over ..." wrapped before "runs" by a long PATH)
    assert not [line for line in lines if re.match(r"runs\s+\S*[━╸╺-]{3}|current run", line)], text


def claim_rows(root: Path) -> list[dict]:
    """The claims' cells as the run wrote them (claims.json, REPORT.md's table): the text to find whole."""
    return json.loads(store.claims_path(root).read_text())["claims"]


def shown(text: str, title: str) -> str:
    """The output from the claims table's title on (the sweep's header above it holds a path, which
    takes a line of its own when long), up to the report page line, which belongs to `gradflow report`."""
    part = text[re.search(rf"^{title}: claims *$", text, re.M).start():]
    return part[:part.index("report page")]


def test_claims_at_80_columns_show_the_source_whole(pascanu):
    root, text = pascanu
    part = shown(text, "pascanu2013")
    header, rows = table(part)
    claims = claim_rows(root)
    # the reference and the source, whole, as lines under the claim (the old table cut the source to 60
    # characters: "design: clipping bounds each update, so the weights never r…")
    assert any("so the weights never reach the exploding region" in r[0] for r in rows), rows
    assert header == ["claim", "measured", "test", "result"]
    assert rows == [[words(f"{c['claim']} reference: {c['reference']} source: {c['source']}"), c["measured"],
                     c["test"], c["result"]] for c in claims]
    check_lines(part, 80)
    # the paper is whole too (the rule above the run used to cut it), and so is every tolerance note
    assert "training recurrent neural networks (ICML)" in words(text[:re.search(r"^sweep\s", text, re.M).start()])


@pytest.mark.parametrize("columns, header", [(80, ["claim", "measured", "test", "result"]),
                                             (60, ["claim", "measured", "result"]), (44, ["claim", "result"])])
def test_narrow_claims_tables_move_columns_under_the_claim_rather_than_fold_numbers(columns, header):
    # at 60 columns a claim's numbers were folded mid-number ("[2.5e-0" over "7,") and the header read
    # "resul" over "t": where the columns' words do not fit, the test, then the measured value, go under
    # the claim as lines of their own
    import io

    from rich.console import Console

    from gradflow.cli.reproduce import claims_table

    claims = [rep.ClaimResult("σ_w² = 1: ‖∂L/∂z‖ first layer / head", "≈ 5e-7 (0.236¹⁰)", "theory",
                              "√χ₁¹⁰ (MeanField.grad_ratio(10)), the per-layer factor compounded over the 10 layers",
                              rep.Measured(4.8e-7, [4.64e-7, 4.8e-7, 5.04e-7]), "in [2.5e-07, 1e-06]", True)]
    out = io.StringIO()
    Console(file=out, width=columns, color_system=None).print(claims_table(claims, columns)[0])
    text = out.getvalue()
    assert max(map(len, text.splitlines())) <= columns, text
    header_row, rows = table(text)
    assert header_row == header, text
    tokens = {w for line in text.splitlines() for w in line.strip("│ ").split()}
    assert {"[2.5e-07,", "([4.64e-07,", "(MeanField.grad_ratio(10)),"} <= tokens, text
    if "test" not in header:
        assert "test: in [2.5e-07, 1e-06]" in words(text), text


def test_claims_wide_give_the_source_its_own_column(pascanu):
    root, _ = pascanu
    text = gradflow("reproduce", "pascanu2013", "--quick", "threads=1", f"results={root.parents[1]}", columns=160)
    part = shown(text, "pascanu2013")
    header, rows = table(part)
    assert header == list(rep.CLAIM_COLUMNS)
    assert rows == [[words(c[k]) for k in rep.CLAIM_COLUMNS] for c in claim_rows(root)]
    check_lines(part, 160)


def test_pascanu2013_spike_claims_are_complete_phrases(pascanu):
    # "largest gradient norm over the first window's" lacked its noun, in the table, the tolerance lines
    # and REPORT.md alike: each place now says what the largest norm is a multiple of
    root, text = pascanu
    spikes = [c["claim"] for c in claim_rows(root) if "largest" in c["claim"]]
    assert len(spikes) == 2 and all(c.endswith("as a multiple of the first window's gradient norm") for c in spikes)
    notes = words(text[text.index("└"):])  # the tolerance lines, under the table
    for where in (notes, words(store.reproduction_md_path(root).read_text())):
        assert not re.search(r"window's(?! gradient norm)", where), where
    assert "tolerance, no clipping: largest gradient norm, as a multiple of the first window's gradient norm: ≥ 100" \
        in words(text)


def test_pascanu2013_figure_names_the_recurrent_init(pascanu):
    # the experiment is the recurrent matrix, orthogonal with gain 1.5; the title said only "xavier_normal
    # init ... sigma_w^2=1", which are the input weights'
    root, _ = pascanu
    spec = rep.Spec.load("pascanu2013")
    arms = rep.arms_of(spec, root, None)
    titles = {name: fig.get_suptitle() for fig, name in (rep.spec_figure(arms, i, f) for i, f in enumerate(spec.figures))}
    title = " ".join(titles["curves-clip"].split())
    assert "recurrent orthogonal init, gain 1.5" in title and "xavier_normal input init" in title, title
    assert r"input $\sigma_w^2$=1" in title, title
    # the gradient norm is drawn beside the curves, under the same title, with the clip threshold
    title = " ".join(titles["gradnorm-clip"].split())
    assert title.startswith("Gradient norm during training") and "recurrent orthogonal init, gain 1.5" in title, title


# --- counts of runs: he2015 ----------------------------------------------------------------------------
def test_a_share_of_runs_reads_as_one(tmp_path):
    # he2015's "share of seeds reaching train loss < 1.5" is a tally of runs: its spread was once "[0, 0] over
    # 2 runs", a range of 0/1 values; it reads "0 (0 of 2 runs)". Step 0 and two seeds keep this cheap (every
    # training claim then FAILs, hence exit 1, and the verdict line says which)
    text = gradflow("reproduce", "he2015", "--quick", "train.steps=0", "seed=0,1", "threads=1",
                    f"results={tmp_path}", ok=False)
    part = shown(text, "he2015")
    _, rows = table(part)
    shares = [r for r in rows if "seeds reaching" in r[0] and "minus" not in r[0]]
    assert len(shares) == 3 and all(r[1] == "0 (0 of 2 runs)" for r in shares), shares
    check_lines(part, 80)
    assert "over 2 runs" in text and "[0, 0]" not in text  # the per-layer factors keep their range
    assert "he2015: 2 of 6 claims pass; FAIL: depth 30, kaiming: share of seeds" in " ".join(text.split())
    root = rep.root_for("he2015", "quick", str(tmp_path))
    measured = [c["measured"] for c in claim_rows(root) if "seeds reaching" in c["claim"]]
    # (the difference of two shares says which: kaiming's 0 minus xavier's 0)
    assert measured == ["0 (0 of 2 runs)", "0 (0 − 0)", "0 (0 of 2 runs)", "0 (0 of 2 runs)"], measured


def test_a_share_of_runs_says_how_many():
    assert rep.Measured(1.0, [1.0, 1.0, 1.0], tally="share").cell() == "1 (3 of 3 runs)"
    assert rep.Measured(2 / 3, [1.0, 0.0, 1.0], tally="share").cell() == "0.667 (2 of 3 runs)"
    assert rep.Measured(0.7, [0.6, 0.8], se=0.1).cell() == "0.7 ([0.6, 0.8] over 2 runs, s.e. 0.1)"


def test_a_tolerance_shared_by_a_for_each_claim_names_it_once_with_its_values():
    # schoenholz2017's six χ₁ claims share one note: it repeated the whole claim text six times
    texts = [f"σ_w² = {v}: |measured χ₁ / mean-field χ₁ − 1|" for v in ("1.0", "1.5", "1.761", "4.0")]
    assert rep.merged_texts(texts) == "σ_w² = 1.0/1.5/1.761/4.0: |measured χ₁ / mean-field χ₁ − 1|"
    assert rep.merged_texts(["depth 10, xavier_normal: share", "depth 10, kaiming_normal: share"]) == \
        "depth 10, xavier_normal/kaiming_normal: share"
    # claims that differ in more than one value's place are each said in full
    assert rep.merged_texts(["plain-56 minus plain-20: loss", "the deeper net at init: ratio"]) == \
        "plain-56 minus plain-20: loss; the deeper net at init: ratio"
    assert rep.merged_texts(["one claim"]) == "one claim"
    rows = [{"claim": t, "tolerance": "3% is ours"} for t in texts] + [{"claim": "other", "tolerance": "why"}]
    assert rep.tolerance_notes(rows) == [(rep.merged_texts(texts), "3% is ours"), ("other", "why")]


@pytest.mark.parametrize("columns", [80, 160])
def test_a_reference_shared_by_a_for_each_claim_is_said_once_under_a_narrow_table(columns):
    # at 80 columns schoenholz2017's six χ₁ claims each carried the same reference and source, 7 lines a
    # claim of the 95-line table: they are said once, under it; a wide table keeps them in its columns
    import io

    from rich.console import Console

    from gradflow.cli.reproduce import claims_table

    source = "gradflow's mean-field theory (theory.point) against the fit over the bulk layers at init"
    texts = [f"σ_w² = {v}: |measured χ₁ / mean-field χ₁ − 1|" for v in ("1.0", "1.5", "4.0")]
    claims = [rep.ClaimResult(t, "χ₁ = σ_w² E[φ'(√q* z)²] per layer", "theory", source, rep.Measured(0.01, [0.01]),
                              "< 0.03", True) for t in texts]
    claims.append(rep.ClaimResult("measured χ₁ crosses 1", "> 0: ordered below", "paper", "Fig. 5",
                                  rep.Measured(0.04, [0.04]), "> 0", True))
    table, shared = claims_table(claims, columns)
    out = io.StringIO()
    Console(file=out, width=columns, color_system=None).print(table)
    text = words(out.getvalue())
    if columns == 160:
        assert shared == [] and text.count("E[φ'(√q* z)²]") == 3 and text.count("(theory.point)") == 3, text
        return
    assert shared == [("σ_w² = 1.0/1.5/4.0: |measured χ₁ / mean-field χ₁ − 1|",
                       f"χ₁ = σ_w² E[φ'(√q* z)²] per layer; theory: {source}")]
    assert "E[φ'(√q* z)²]" not in text and "(theory.point)" not in text, text
    assert text.count("reference and source: below the table") == 3, text
    assert "reference: > 0: ordered below" in text and "source: paper: Fig. 5" in text, text  # not shared


def test_a_qualitative_claims_result_is_two_lines_leaving_the_claim_its_room():
    # "PASS (qualitative)" on one line made the result column 18 wide at 80 columns, and xiong2020's claims
    # wrapped a word or two per line in what was left
    import io

    from rich.console import Console

    from gradflow.cli.reproduce import claims_table

    text = "last block's MLP-out ‖∂L/∂W‖ at init, post-LN / pre-LN, L = 6 " * 3
    claims = [rep.ClaimResult(text, "post-LN larger", "paper", "Sec. 3.2, Theorem 1", rep.Measured(1.64, [1.64]),
                              "> 1", True, qualitative=True)]
    out = io.StringIO()
    Console(file=out, width=80, color_system=None).print(claims_table(claims, 80)[0])
    lines = out.getvalue().splitlines()
    assert max(map(len, lines)) <= 80
    cells = [line.split("│")[1:-1] for line in lines if line.startswith("│")]
    assert [c.strip() for c in cells[0]][-1] == "PASS" and [c.strip() for c in cells[1]][-1] == "(qualitative)"
    assert len(cells[0][0]) >= 40, out.getvalue()  # the claim's column


def test_a_claims_test_cell_is_kept_whole_at_80_columns():
    # he2015's "0.707 ± 0.03" broke after its ± (a column as wide as its longest word, 5)
    from gradflow.cli.reproduce import column_widths

    cells = {"claim": ["depth 30, xavier: per-layer factor of the signal at init " * 6],
             "measured": ["0.701 ([0.69, 0.716] over 3 runs, s.e. 0.0079)" * 3], "test": ["0.707 ± 0.03", "< 0.1"],
             "result": ["PASS", "FAIL"]}
    weights = {"claim": 3, "measured": 2, "test": 1, "result": 1}
    widths = column_widths(cells, 80, weights, whole=("test",))
    assert widths["test"] == len("0.707 ± 0.03") and sum(widths.values()) + 3 * 4 + 1 <= 80, widths
    assert column_widths(cells, 80, weights)["test"] < len("0.707 ± 0.03")  # (as it was: by its longest word)
