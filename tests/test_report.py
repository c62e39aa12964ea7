"""`gradflow report`: the page parsed (one figure per standard kind, the ls columns, nothing external), a
reproduction's claims read back, and the page rendered in a real headless Chromium."""

from __future__ import annotations

import base64
import html
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from html import escape as html_escape
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
import yaml

import gradflow
from gradflow import report, store
from gradflow import columns
from gradflow.config import NUMBER_OR_WORD_KEYS
from gradflow.errors import GradflowError

SWEEP = ["data=gaussian", "data.n_train=128", "data.n_test=64", "data.dim=8", "model.width=8", "train.steps=6",
         "train.batch_size=32", "train.eval_every=3", "threads=1", "model.depth=2,10",
         "model.activation=tanh,relu"]


class Page(HTMLParser):
    """Figures, the runs table (header keys, rows), every table's header texts and the box it sits in, the
    text of elements with an id, the style sheet and every URL-bearing attribute of one HTML page."""

    def __init__(self, text: str):
        super().__init__()
        self.figures: list[dict] = []
        self.images: list[str] = []
        self.alts: list[str] = []  # each image's alt text, which its caption says too
        self.urls: list[str] = []
        self.keys: list[str] = []
        self.rows: list[str] = []
        self.tables: list[str] = []
        self.headers: dict[str, list[str]] = {}  # table id -> its <th> texts
        self.boxes: dict[str, str] = {}  # table id -> class of the element it sits directly in
        self.texts: dict[str, str] = {}  # element id -> its text
        self.style = ""
        self._open: list[tuple[str, dict]] = []  # open elements (void ones are never pushed)
        self._th: list[str] | None = None
        self.feed(text)

    VOID = {"meta", "img", "br", "hr", "link", "input", "source"}

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self.boxes[a.get("id", "")] = self._open[-1][1].get("class", "") if self._open else ""
        if tag == "th":
            self._th = []
        if tag not in self.VOID:
            self._open.append((tag, a))
        if tag == "figure":
            self.figures.append(a)
        if tag == "img":
            self.images.append(a.get("src", ""))
            self.alts.append(a.get("alt", ""))
        if tag == "table":
            self.tables.append(a.get("id", ""))
        if tag == "th" and "data-key" in a and self.tables[-1] == "runs":
            self.keys.append(a["data-key"])
        if tag == "tr" and "data-run" in a:
            self.rows.append(a["data-run"])
        self.urls += [v for k, v in attrs if k in ("src", "href") and v]

    def handle_endtag(self, tag):
        if tag == "th" and self._th is not None:
            self.headers.setdefault(self.tables[-1], []).append("".join(self._th).strip())
            self._th = None
        while self._open:  # close up to the matching element (tolerates an unclosed <p> or <td>)
            name, _ = self._open.pop()
            if name == tag:
                break

    def handle_data(self, data):
        if self._th is not None:
            self._th.append(data)
        if self._open and self._open[-1][0] == "style":
            self.style += data
        for _, a in self._open:
            if "id" in a:
                self.texts[a["id"]] = self.texts.get(a["id"], "") + data


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    from typer.testing import CliRunner

    from gradflow.cli import app

    results = tmp_path_factory.mktemp("report") / "results"
    out = CliRunner().invoke(app, ["sweep", *SWEEP, f"results={results}", "--name", "grid", "--report"],
                             catch_exceptions=False)
    assert out.exit_code == 0, out.output
    assert f"report: {results / 'grid' / 'report.html'}" in " ".join(out.output.split())
    return results / "grid"


def test_a_sweep_without_report_says_whether_the_page_it_names_is_from_before(study, tmp_path, cli):
    results = tmp_path / "results"
    shutil.copytree(study, results / "grid")
    again = cli("sweep", *SWEEP, f"results={results}", "--name", "grid")  # resumes: every run finished
    assert again.exit_code == 0, again.output
    text = " ".join(again.output.split())
    assert f"report page from an earlier command (--report updates it): {results / 'grid' / 'report.html'}" in text
    (results / "grid" / "report.html").unlink()
    text = " ".join(cli("sweep", *SWEEP, f"results={results}", "--name", "grid").output.split())
    page = results / "grid" / "report.html"
    assert f"report page not written; --report or `gradflow report` writes it to: {page}" in text


def test_the_page_of_a_sweep_cut_short_says_what_is_not_run(study, tmp_path):
    from gradflow import report

    cut = tmp_path / "cut"
    shutil.copytree(study, cut)
    shutil.rmtree(cut / "model.activation=relu,model.depth=10")
    text = " ".join(re.sub(r"<[^>]+>", " ", report.build([cut]).replace("&#x27;", "'")).split())
    assert "not run yet: 1 of the sweep's 4 runs: `gradflow sweep" in text and "--name cut` runs them" in text
    assert "not run yet" not in (study / "report.html").read_text()  # (report.build's page of the whole sweep)


def test_the_page_of_a_shrunk_grid_says_what_stale_means_and_its_theory_leaves_those_runs_out(study, tmp_path, cli):
    # the runs table listed the stale runs without ls's note, and the theory table had a row of them alone
    from gradflow import report

    results = tmp_path / "results"
    shutil.copytree(study, results / "grid")
    tanh = [o if not o.startswith("model.activation=") else "model.activation=tanh" for o in SWEEP]
    assert cli("sweep", *tanh, f"results={results}", "--name", "grid").exit_code == 0  # relu's two now stale
    page = report.build([results / "grid"])
    text = " ".join(re.sub(r"<[^>]+>", " ", page.replace("&#x27;", "'")).split())
    assert (f"stale: 2 runs of an earlier spec of the sweep (points it no longer has, or settings it changed); "
            f"--where status=ok leaves them out, gradflow clean {results / 'grid'} --stale deletes them") in text
    theory = page[page.index("Mean-field theory beside the measurement"):]
    theory = " ".join(re.sub(r"<[^>]+>", " ", theory[:theory.index("<h2")]).split())
    assert " tanh " in theory and " relu " not in theory, theory


def test_page_has_one_figure_per_standard_kind_and_the_ls_columns(study, tmp_path):
    page = Page((study / "report.html").read_text())
    # the standard set drawn independently from the same results
    from gradflow.plots.figures import standard_set

    tables = {t: gradflow.load(study, table=t) for t in ("layers", "metrics", "runs")}
    expected = standard_set(tables["layers"], tables["metrics"], tables["runs"], tmp_path, "png")
    assert sorted(f["data-name"] for f in page.figures) == sorted(p.stem for p in expected)
    kinds = {f["data-kind"] for f in page.figures}
    assert {"profile", "curves", "ratio"} <= kinds
    # each captioned with what it shows, not its file's name alone
    said = dict(zip((f["data-name"] for f in page.figures), page.alts))
    assert said["profile-grad_norm-step0"] == "Weight-gradient norm per layer, at initialization (step 0)"
    assert said["ratio-signal_norm-init"] == ("First/last-layer ratio of the back-propagated signal norm against "
                                              "depth, at initialization")
    assert said["curves"] == "Loss and accuracy over training" and all(said.values()), said
    for src in page.images:  # every figure inline, a real PNG
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert all(u.startswith("data:") for u in page.urls)  # opens offline: nothing fetched from anywhere
    # the runs table: one row per run, the same columns as `gradflow ls --wide`
    df, swept = columns.listing(study)
    assert sorted(page.rows) == sorted(df["run"]) and len(page.rows) == 4
    assert page.keys == [c.key for c in columns.table_columns(df, swept)]
    assert "theory" in page.tables  # tanh and relu MLPs: the mean-field point beside the measurement
    # each point's mean is over the runs with a fit: depth 10's, not depth 2's (too shallow for one)
    from gradflow.report import theory_rows

    fitted = df.groupby("model.activation")["chi1_measured"].apply(lambda v: v.notna().sum())
    assert sorted((r["activation"], r["runs fitted"]) for r in theory_rows(df)) == \
        [(a, f"{fitted[a]} of 2") for a in ("relu", "tanh")] and set(fitted) == {1}
    for r in theory_rows(df):  # the mean of the fitted runs alone (over both, it read half of it)
        fits = df.loc[df["model.activation"] == r["activation"], "chi1_measured"].dropna()
        assert r["χ₁ measured (mean)"] == pytest.approx(fits.mean()) and len(fits) == 1
    text = (study / "report.html").read_text()
    assert "gradflow sweep " in text and "model.depth=2,10" in text  # the command that made it
    # a point whose forward length decays to q* = 0 (each here, under Xavier's sigma_w^2 = 1, sigma_b^2 = 0) reads
    # xi_c = inf beside "ordered": the page says what `gradflow theory` says of it (it said nothing)
    for r in theory_rows(df):
        assert r["q*"] == 0 and (f"{r['activation']}, σ_w² 1, σ_b² 0: q* = 0: the signal variance decays to 0 with "
                                 "depth.") in html.unescape(text), r
    assert html.unescape(text).count("ξ_c = ∞ says nothing about trainability here.") == 2


def test_the_theory_table_marks_a_chi1_that_is_only_the_q_star_zero_limits():
    # tanh under Xavier's sw2 = 1, sb2 = 0 read "critical, chi1 1" beside a measured 0.88, with nothing said
    from gradflow.report import theory_rows

    df = pd.DataFrame({"model.name": ["mlp"] * 3, "model.activation": ["tanh", "tanh", "relu"],
                       "init.name": ["xavier_normal", "kaiming_normal", "xavier_normal"],
                       "chi1_measured": [0.88, 1.3, 0.47]})
    got = {(r["activation"], r["σ_w²"]): r["χ₁ theory"] for r in theory_rows(df)}
    assert got[("tanh", 1.0)] == "1†" and not got[("relu", 1.0)].endswith("†"), got
    assert [v for k, v in got.items() if k[0] == "tanh" and k[1] != 1.0][0] == "1.21", got


def tables_scroll_in_their_own_box(page: Page) -> None:
    """Every table sits directly in a box of class `scroll`, and the style sheet lets that box (not the
    page) scroll sideways when the table is wider than the window."""
    assert page.tables and all(page.boxes[t] == "scroll" for t in page.tables), page.boxes
    assert re.search(r"(^|[\s}])\.scroll\s*\{[^}]*overflow-x\s*:\s*auto", page.style), page.style


def test_resolved_config_is_the_first_run_in_the_table(study):
    page = Page((study / "report.html").read_text())
    first = page.rows[0]
    df = columns.listing(study)[0]
    assert first == df["run"].iloc[0] and int(df["model.depth"].iloc[0]) == 2  # numbers as numbers: 2 before 10
    assert sorted(p.name for p in study.iterdir() if p.is_dir())[0] != first  # the folder order differs ("depth=10")
    assert page.texts.get("config-run") == first
    # config.yaml less the keys of another init choice (Hydra resolves them all; the run uses its own):
    # the page's keys are run.json's settings, with config.yaml's values
    shown = store.flatten(yaml.safe_load(page.texts["config"]))
    resolved = store.flatten(yaml.safe_load((study / first / "config.yaml").read_text()))
    settings = json.loads((study / first / "run.json").read_text())["config"]
    # (a number-or-word key's number, a string in config.yaml ('1.0'), as typed: 1.0)
    assert set(shown) == set(settings) and all(resolved[k] == (str(v) if k in NUMBER_OR_WORD_KEYS else v)
                                               for k, v in shown.items())
    assert "data.scale" in shown and not isinstance(shown["data.scale"], str)
    assert set(resolved) - set(shown) and "init.sb2" not in shown  # (this sweep's init has no bias variance)


@pytest.mark.parametrize("alpha, shown", [("0.5", "alpha: 0.5"), ("1e-3", "alpha: 0.001"),
                                          ("inv_sqrt_depth", "alpha: inv_sqrt_depth"),
                                          ("learnable", "alpha: learnable")])
def test_the_resolved_config_shows_a_number_or_word_keys_number_as_typed(tmp_path, cli, alpha, shown):
    # model.alpha is a str key (it also takes inv_sqrt_depth and learnable), so config.yaml holds its number
    # as the string '0.5', and the page showed `alpha: '0.5'`, a value no one typed
    results = tmp_path / "results"
    out = cli("run", "model.width=8", "model.depth=3", "model.skip=residual", f"model.alpha={alpha}",
              "train.steps=1", "train.batch_size=32", "data=gaussian", "data.n_train=64", "data.n_test=32",
              "data.dim=8", "data.scale=0.5", f"results={results}", "name=r")
    assert out.exit_code == 0, out.output
    (job,) = store.find_runs(results / "r")
    assert isinstance(yaml.safe_load((job / "config.yaml").read_text())["model"]["alpha"], str)  # ('0.5' there)
    config = html.unescape(Page(report.build([results / "r"])).texts["config"])
    lines = config.splitlines()
    assert shown in [ln.strip() for ln in lines] and "scale: 0.5" in [ln.strip() for ln in lines], config
    assert yaml.safe_load(config)["model"]["alpha"] == yaml.safe_load(shown)["alpha"]  # read back as typed


def test_every_string_key_whose_default_is_a_number_is_shown_as_typed():
    import dataclasses

    from gradflow.config import schema

    groups = {schema.ModelConfig: "model", schema.DataConfig: "data"}
    found = set()
    for cls in vars(schema).values():
        if isinstance(cls, type) and dataclasses.is_dataclass(cls):
            group = next((g for base, g in groups.items() if issubclass(cls, base)), None)
            for f in dataclasses.fields(cls):
                if group and f.type in (str, "str") and isinstance(f.default, str) \
                        and re.fullmatch(r"[-+]?[0-9.]+(e[-+]?[0-9]+)?", f.default):
                    found.add(f"{group}.{f.name}")
    assert found == set(NUMBER_OR_WORD_KEYS)


def test_tables_scroll_in_their_own_box_and_wide_runs_tables_are_set_smaller(study, tmp_path):
    page = Page((study / "report.html").read_text())
    assert {"runs", "theory"} <= set(page.tables)
    tables_scroll_in_their_own_box(page)
    df, swept = columns.listing(study)
    wide = len(columns.table_columns(df, swept)) > report.WIDE_COLUMNS
    assert ('<table id="runs" class=wide>' in (study / "report.html").read_text()) == wide
    assert re.search(r"#runs\.wide\s*\{[^}]*font-size", page.style)


def test_a_figure_of_several_panels_takes_the_pages_width_and_a_click_enlarges_any(tmp_path):
    # every figure was shown at most 560 px wide, and none could be opened larger: a comparison's three
    # panels (2130 px) at a quarter of their size, their labels unreadable
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def png(panels):
        fig, _ = plt.subplots(1, panels, figsize=(5.25 * panels, 3.4), dpi=200)
        out = io.BytesIO()
        fig.savefig(out, format="png")
        plt.close(fig)
        return out.getvalue()

    one, three = png(1), png(3)
    assert report._png_width(one) == 1050 and report._png_width(three) == 3150
    html_text = report.figures_html([("profile-grad_norm-step0", one), ("curves", three)])
    classes = re.findall(r'<figure( class="wide")? data-kind="(\w+)"', html_text)
    assert classes == [("", "profile"), (' class="wide"', "curves")]
    assert re.search(r"figure\.wide[^{]*\{display:block\}", report.STYLE) and "max-width:100%" in report.STYLE
    assert "classList.toggle('big')" in report.SCRIPT


def test_comparison_and_single_run(study, tmp_path):
    out = report.write([study / "model.activation=relu,model.depth=10", study / "model.activation=tanh,model.depth=10"],
                       tmp_path / "cmp.html")
    page = Page(out.read_text())
    assert page.keys[0] == "source" and len(page.rows) == 2
    # which source has which value of the keys they differ in (it said only that they differ)
    assert page.texts["differ"] == ("The sources differ in what each fixes: model.activation=relu,model.depth=10 "
                                    "has model.activation=relu; model.activation=tanh,model.depth=10 has "
                                    "model.activation=tanh."), page.texts
    assert page.figures and all(src.startswith("data:image/png") for src in page.images)
    # the sources in the order given, as compare letters them (they were sorted by name)
    given = ["model.activation=tanh,model.depth=10", "model.activation=relu,model.depth=10"]
    rows = Page(report.build([study / g for g in given])).rows
    assert [r.split("/", 1)[0] for r in rows] == given, rows
    text = report.write([study / "model.activation=tanh,model.depth=10"], tmp_path / "one.html").read_text()
    single = Page(text)
    assert {"profile", "heatmap", "curves"} <= {f["data-kind"] for f in single.figures}
    assert len(single.rows) == 1 and "<p class=meta>1 run from " in text and "2 runs from " in out.read_text()
    # the config says which device `device: auto` picked
    used = store.read_run(study / "model.activation=tanh,model.depth=10")["device"]
    assert f"device: auto  # ran on {used}" in text
    # --out an existing folder: the page goes in it under its default name (os.replace onto the folder raised)
    (tmp_path / "pages").mkdir()
    assert report.write([study], tmp_path / "pages") == tmp_path / "pages" / "report.html"
    assert (tmp_path / "pages" / "report.html").read_text().startswith("<!DOCTYPE html>")


def test_a_sweeps_point_given_alone_is_said_made_by_a_run_command_with_the_sweeps_fixed_settings(
        study, tmp_path, cli):
    # a point of a sweep given alone (a comparison of two jobs) read `gradflow run model.activation=relu
    # model.depth=10 results=... name=grid`: without the sweep's data=gaussian, width, steps, a command that
    # `gradflow run` refuses (data.dim is no key of data=mnist1d) or that trains another net
    import shlex

    copy = tmp_path / "results" / "grid"
    shutil.copytree(study, copy)
    job = copy / "model.activation=relu,model.depth=10"
    (cmd,) = report.commands([job])
    fixed = [o for o in SWEEP if not o.startswith(("model.depth=", "model.activation="))]
    assert cmd == " ".join(["gradflow run", *fixed, "model.activation=relu", "model.depth=10",
                            f"results={copy.parent}", "name=grid"]), cmd
    # a sweep's override quoted on its command line stays one override (+tag=x,y read as two values, which
    # `gradflow run` refuses), and the sweep's name= is given once
    spec = yaml.safe_load((copy / store.SWEEP_FILE).read_text())
    edited = {**spec, "overrides": [*spec["overrides"], '+tag="x,y"', "name=grid"]}
    (copy / store.SWEEP_FILE).write_text(yaml.safe_dump(edited))
    (tagged,) = report.commands([job])
    args = shlex.split(tagged)
    assert '+tag="x,y"' in args and sum(a.startswith("name=") for a in args) == 1, tagged
    (copy / store.SWEEP_FILE).write_text(yaml.safe_dump(spec))
    before = store.read_run(job)["config_hash"]
    out = cli(*shlex.split(cmd)[1:])  # (the command as the page gives it: it reruns that very point)
    assert out.exit_code == 0, out.output
    assert store.read_run(job)["config_hash"] == before
    assert report.commands([job]) == [cmd]  # (remade by it, its run.json keeps it)


def test_report_names_a_long_page_path_whole_on_its_line(study, tmp_path):
    # at 80 columns the path of a page in a run folder of a long name broke mid-word over two lines, so a
    # copy of it named no file (`gradflow run` and `plot` print theirs whole)
    from tests.commands import piped

    deep = tmp_path / ("study-of-a-long-name-" * 4) / "grid"
    shutil.copytree(study, deep)
    out = piped("report", str(deep), columns=80)
    assert f"report: {deep / 'report.html'}" in out.stdout.splitlines(), out.stdout


def test_the_run_command_of_a_folder_named_by_a_list_gives_the_list_as_typed(tmp_path):
    # a run folder without its command (an incomplete run) is read back from its name: optim.betas=_0.9,0.99_
    # there gave `gradflow run optim.betas=_0.9,0.99_`, which `gradflow run` refuses; the list is read from
    # the run's config.yaml, and an item its config does not hold as a list stays as named
    job = tmp_path / "results" / "s" / "model.depth=2,optim.betas=_0.9,0.99_,tag=_x_"
    job.mkdir(parents=True)
    (job / store.CONFIG_FILE).write_text(yaml.safe_dump({"model": {"depth": 2}, "optim": {"betas": [0.9, 0.99]},
                                                         "tag": "_x_"}))
    cmd = report._run_command(job)
    assert cmd == (f"gradflow run model.depth=2 'optim.betas=[0.9,0.99]' tag=_x_ results={job.parent.parent} "
                   "name=s"), cmd
    (job / store.CONFIG_FILE).unlink()  # (no config: the name's items as they are)
    assert "optim.betas=_0.9,0.99_" in report._run_command(job)


def test_a_comparisons_figures_are_drawn_as_compare_draws_them(study, tmp_path, cli):
    """Two sweeps of depth x activation, the second with residual connections: the page's figures split
    their panels by a key each source sweeps (activation), and model.skip, which only tells the sources
    apart, is their line style and legend (the concatenated tables split panels by it, the residual one
    first), the sources in the order given."""
    from gradflow.plots import standard

    out = cli("sweep", *SWEEP, "model.skip=residual", "probe=full", f"results={tmp_path}", "--name", "resid")
    assert out.exit_code == 0, out.output
    tables = report._overlays([study, tmp_path / "resid"])
    assert list(tables["layers"]["source"].unique()) == ["grid", "resid"]
    assert "model.skip" not in tables["layers"].columns and "model.skip" not in tables["runs"].columns
    profiles = [p for p in standard.plan(tables["layers"], tables["metrics"], tables["runs"])
                if p.name.startswith("profile-")]
    fig = profiles[0].draw(*profiles[0].args, **profiles[0].kwargs)
    assert [ax.get_title() for ax in fig.axes if ax.get_title()] == ["activation=relu", "activation=tanh"]
    legend = [" ".join(t.get_text().split()) for lg in fig.legends for t in lg.get_texts()]
    assert legend[0].startswith("grid (model.skip=none") and legend[1].startswith("resid (model.skip=residual"), legend
    page = Page(report.build([study, tmp_path / "resid"]))
    # (the histograms and spectra of the source that has them: a table one source lacked drew none)
    assert {"profile", "curves", "ratio", "hist", "spectrum"} <= {f["data-kind"] for f in page.figures}, page.figures


def test_sources_whose_folder_and_parent_names_match_stay_two_sources(study, tmp_path):
    """x/a/run and y/a/run are labelled as `gradflow compare` labels them (a counter after the parent), and
    "." by its own name: both were `a/run`, the two runs one source, and "." an empty label."""
    run = study / "model.activation=tanh,model.depth=10"
    for parent in ("x", "y"):
        shutil.copytree(run, tmp_path / parent / "a" / "run")
    page = Page(report.build([tmp_path / "x" / "a" / "run", tmp_path / "y" / "a" / "run"]))
    assert [r.rsplit("/", 1)[0] for r in page.rows] == ["a/run#1", "a/run#2"], page.rows
    here = os.getcwd()
    try:
        os.chdir(tmp_path / "x" / "a" / "run")
        page = Page(report.build([Path("."), run]))
    finally:
        os.chdir(here)
    assert [r.split("/", 1)[0] for r in page.rows] == ["run", run.name], page.rows


def test_a_run_whose_run_json_is_cut_short_is_listed_incomplete(study, tmp_path):
    """The page is written, the damaged run a row `incomplete` (its run.json read as None: an AttributeError),
    and it says why, as ls does: over the status and in a note under the table (the page said nothing)."""
    copy = tmp_path / "grid"
    shutil.copytree(study, copy)
    damaged = copy / "model.activation=tanh,model.depth=10" / store.RUN_FILE
    damaged.write_text(damaged.read_text()[:50])
    why = f"{damaged} is missing or unreadable"
    for path in (copy, damaged.parent):
        text = report.build([path])
        row = re.search(r'<tr data-run="[^"]*model.activation=tanh,model.depth=10[^"]*">(.*?)</tr>', text)
        assert row and f'<td data-value="incomplete" title="{html.escape(why)}">incomplete</td>' in row.group(1), \
            (path, row and row.group(1))
        assert "<p class=note>incomplete (" in text and f"): {html.escape(why)}</p>" in text, path


def test_a_missing_number_sorts_last_on_the_page(study):
    # its cell's sort value is "" (the page's script puts those last), not the word "nan", sorted among words
    from gradflow.columns import listing

    df, swept = listing(study)
    df.loc[df.index[0], "final.train_loss"] = float("nan")
    rows = re.findall(r"<tr data-run=[^>]*>(.*?)</tr>", report.runs_html(df, swept))
    assert 'data-value=""' in rows[0] and 'data-value="nan"' not in "".join(rows), rows[0]


def test_a_comparison_of_sources_with_different_data_names_the_keys_only_one_sets_by_group(tmp_path, cli):
    # a Gaussian source's data.dim, data.distribution, ... beside MNIST-1D's own keys: one phrase each, not
    # every key of both groups listed under each source
    results = tmp_path / "results"
    common = ["model.width=8", "model.depth=2", "train.steps=2", "train.batch_size=32", "train.eval_every=2"]
    for name, data in (("ga", ["data=gaussian", "data.n_train=64", "data.n_test=32", "data.dim=8"]),
                       ("mn", ["data=mnist1d", "init=orthogonal"])):
        out = cli("run", *common, *data, f"results={results}", f"name={name}")
        assert out.exit_code == 0, out.output
    text = report.build([results / "ga", results / "mn"])
    note = Page(text).texts["differ"]
    assert note.startswith("The sources differ in what each fixes: ga has data.name=gaussian, ") and \
        "; mn has data.name=mnist1d, " in note and "init.name=orthogonal" in note, note
    # (ga's many by group; mn's one, data.cache, named, as compare names a few)
    assert note.count("which only it sets") == 1 and "data.dim" not in note, note
    assert note.split("; mn has ")[1].endswith(", data.cache=''."), note
    # the swept note below it said the runs differ "only there", leaving out what the sources fix
    swept = re.search(r"<p class=note>Swept: ([^<]*)</p>", text).group(1)
    assert swept.endswith("other runs differ only there and in what each source fixes (above)."), swept


def test_a_comparison_names_a_key_only_some_runs_read_by_the_value_they_read(tmp_path, cli):
    # model.alpha, read where model.skip=residual: a skip=none,residual sweep (alpha unset where skip=none)
    # beside a residual one at alpha 0.5 was no difference of what each source fixes
    results = tmp_path / "results"
    common = ["model.width=8", "model.depth=2", "train.steps=2", "train.batch_size=32", "data=gaussian",
              "data.n_train=64", "data.n_test=32", "data.dim=8", f"results={results}"]
    for name, skip in (("a", ["model.skip=none,residual"]), ("b", ["model.skip=residual", "model.alpha=0.5"])):
        out = cli("sweep", *common, *skip, "--name", name)
        assert out.exit_code == 0, out.output
    (alpha,) = {store.read_run(job)["config"].get("model.alpha") for job in store.find_runs(results / "a")} - {None}
    text = report.build([results / "a", results / "b"])
    note = Page(text).texts["differ"]
    assert note == f"The sources differ in what each fixes: a has model.alpha={alpha}; b has model.alpha=0.5.", note
    # ... and named once: the swept note below it listed model.alpha again, as if a source swept it
    swept = re.search(r"<p class=note>Swept: ([^<]*)</p>", text).group(1)
    assert swept == "source, model.skip; other runs differ only there and in what each source fixes (above).", swept


def test_a_comparison_of_sweeps_of_depth_by_different_keys_has_the_depth_ratio_figures(tmp_path, cli):
    # depth x norm beside depth x skip ("does BatchNorm or a residual rescue a deep net?"): each source a sweep
    # along depth, together no grid (no batchnorm run with a residual), and the ratio against depth, the
    # figure that answers it, was left out of the page without a word (compare --kind ratio draws it)
    from gradflow.plots import standard

    results = tmp_path / "results"
    common = ["model.width=8", "model.depth=2,4", "train.steps=2", "train.batch_size=32", "data=gaussian",
              "data.n_train=64", "data.n_test=32", "data.dim=8", f"results={results}"]
    for name, swept in (("bn", "norm=none,batchnorm"), ("skip", "model.skip=none,residual")):
        out = cli("sweep", *common, swept, "--name", name)
        assert out.exit_code == 0, out.output
    tables = report._overlays([results / "bn", results / "skip"])
    names = [p.name for p in standard.plan(tables["layers"], tables["metrics"], tables["runs"])]
    assert {"ratio-init", "ratio-signal_norm-init"} <= set(names), names
    # a source that is no grid along depth itself (its batchnorm run at depth 2 gone) still gets none
    runs = tables["runs"]
    kept = runs[~((runs["source"] == "bn") & (runs["model.depth"] == 2) & (runs["norm.name"] == "batchnorm"))]
    rows = tables["layers"][tables["layers"]["run"].isin(kept["run"])]
    assert not any(p.name.startswith("ratio") for p in standard.plan(rows, None, kept))


def test_a_folder_of_sweeps_shows_each_sweeps_own_figures_under_its_name(study, tmp_path):
    # as `gradflow plot results/` draws them: drawn together, unrelated studies were one line per run
    folder = tmp_path / "results"
    shutil.copytree(study, folder / "grid", ignore=shutil.ignore_patterns("report.html", "figures"))
    run = "model.activation=tanh,model.depth=10"
    shutil.copytree(study / run, folder / "one" / run)
    # and a study with nothing to draw (below)
    (folder / "empty" / "run").mkdir(parents=True)
    (folder / "empty" / "run" / store.RUN_FILE).write_text("{}")  # a run that never wrote anything
    text = report.write([folder], tmp_path / "folder.html").read_text()
    page = Page(text)
    names = [f["data-name"] for f in page.figures]
    grid = sorted(n.split("/", 1)[1] for n in names if n.startswith("grid/"))
    assert grid == sorted(f["data-name"] for f in Page((study / "report.html").read_text()).figures)
    assert {"profile", "heatmap", "curves"} <= {f["data-kind"] for f in page.figures
                                                if f["data-name"].startswith("one/")}
    assert len(names) == len(grid) + sum(n.startswith("one/") for n in names)
    assert re.findall(r"<h3>(\w+)</h3>", text) == ["grid", "one"]
    assert sorted(r.split("/", 1)[0] for r in page.rows) == ["empty"] + ["grid"] * 4 + ["one"], page.rows
    # a study with nothing to draw is said on the page, by name, as `gradflow plot` says it; it was left out unsaid
    assert f"<p class=note>Passed over: every run of {folder / 'empty'} failed before its first step" in text


def _write_reproduction(folder, results, given=(), not_drawn=()):
    """What `gradflow reproduce` writes for a spec's claim results: REPORT.md and claims.json."""
    from gradflow import reproduce as rep

    spec = rep.Spec.load("sigmoid-textbook")
    folder.mkdir(parents=True, exist_ok=True)
    rep.write_report(spec, folder, "quick", results, [], {}, 1.0, list(given), not_drawn=list(not_drawn))


def test_reproduction_claims_read_back_from_its_report(tmp_path):
    from gradflow import reproduce as rep

    results = [rep.ClaimResult("gradient vanishes", "< 1e-3", "paper", "Fig. 2", rep.Measured(1e-5, [1e-5, 2e-5]),
                               "< 0.01", True),
               rep.ClaimResult("accuracy | falls", "0.9", "design", "a reason", rep.Measured(0.4, [0.4]), "> 0.5",
                               False, qualitative=True, tolerance="wider, because")]
    folder = tmp_path / "repro"
    _write_reproduction(folder, results)
    rows = report.claims(folder)
    assert [r["claim"] for r in rows] == ["gradient vanishes", "accuracy | falls"]
    assert [r["result"] for r in rows] == ["PASS", "FAIL (qualitative)"]
    assert [r["passed"] for r in rows] == [True, False] and rows[0]["value"] == 1e-5
    assert [r["source"] for r in rows] == [rep.claim_cells(c)["source"] for c in results]
    assert rows[1]["test"] == "> 0.5" and rows[0]["reference"] == "< 1e-3"
    (folder / "claims.json").write_text("{truncated")
    with pytest.raises(GradflowError, match="claims.json"):
        report.claims(folder)


def test_reproduction_page_has_its_claims_and_own_figures(study, tmp_path):
    from gradflow import reproduce as rep

    folder = tmp_path / "repro"
    shutil.copytree(study, folder / "arm")
    results = [rep.ClaimResult("gradient vanishes", "< 1e-3", "paper", "Fig. 2", rep.Measured(1e-5, [1e-5]), "< 0.01",
                               True),
               rep.ClaimResult("it trains", "< 0.5", "design", "a reason", rep.Measured(0.7, [0.7]), "< 0.5", False,
                               tolerance="half the chance loss, our margin")]
    _write_reproduction(folder, results, given=["init.sw2=1.0"],
                        not_drawn=["profile (its colour key init.sw2 is not a swept key of this data)"])
    (folder / "figures").mkdir()
    png = next(p for p in Page((study / "report.html").read_text()).images)
    (folder / "figures" / "paper-figure.png").write_bytes(base64.b64decode(png.split(",", 1)[1]))
    page = Page(report.write([folder]).read_text())
    assert report.kind(folder) == "reproduction" and "claims" in page.tables
    assert [f["data-name"] for f in page.figures] == ["paper-figure"]
    assert len(page.rows) == 4  # the arm's runs
    # the claims table shows REPORT.md's cells only, not claims.json's raw `passed` and `value` beside them
    assert page.headers["claims"] == list(rep.CLAIM_COLUMNS)
    claims_text = page.texts["claims"]
    assert rep.claim_cells(results[0])["measured"] in claims_text and "PASS" in claims_text
    assert "True" not in claims_text  # no raw `passed` cell
    # what the terminal and REPORT.md say around the table: the verdict with the scale and the overrides
    # given, the tolerance notes, and why a figure is missing (the page had none of these)
    assert page.texts["verdict"] == "1 of 2 claims pass, at the quick scale; overrides given to every arm: init.sw2=1.0."
    html = (folder / "report.html").read_text()
    assert "Tolerance, it trains: half the chance loss, our margin" in html
    assert "Figure not drawn, profile (its colour key init.sw2 is not a swept key of this data)." in html
    # the paper, the claim, what the scale changed and the notes, as REPORT.md has them (the page had none,
    # while its claims' sources said "see the notes")
    spec = rep.Spec.load("sigmoid-textbook")
    assert page.texts["paper"] == f"Paper: {spec.paper}" and page.texts["summary"] == f"Claim: {spec.summary}"
    assert page.texts["scale_text"] == f"Scale quick: {' '.join(spec.scaled['quick'].split())}"
    assert spec.notes and "<h2>Notes (written of the default scale's runs)</h2>" in html
    assert html_escape(" ".join(spec.notes.split("\n\n")[0].split())) in html
    # notes are REPORT.md's markdown: their bold and code marks become the page's (schoenholz2017's "**χ₁ (a).**")
    assert report._inline_markdown(html_escape("**χ₁ (a).** see `init=xavier_normal` & <b>")) == \
        "<b>χ₁ (a).</b> see <code>init=xavier_normal</code> &amp; &lt;b&gt;"
    tables_scroll_in_their_own_box(page)


def test_a_folder_of_reproductions_shows_each_ones_verdict_linked_to_its_page(study, tmp_path):
    # the page of a folder of reproductions showed their runs and figures but no claim, pass or fail
    from gradflow import reproduce as rep

    folder = tmp_path / "results"
    good = [rep.ClaimResult("gradient vanishes", "< 1e-3", "paper", "Fig. 2", rep.Measured(1e-5, [1e-5]), "< 0.01",
                            True)]
    bad = [*good, rep.ClaimResult("it trains", "< 0.5", "design", "a reason", rep.Measured(0.7, [0.7]), "< 0.5",
                                  False)]
    for name, results in (("a-quick", good), ("b-quick", bad)):
        shutil.copytree(study, folder / "reproduce" / name / "arm", ignore=shutil.ignore_patterns("report.html"))
        _write_reproduction(folder / "reproduce" / name, results)
    report.write([folder / "reproduce" / "a-quick"])  # a's own page; b has only REPORT.md
    page = Page(report.write([folder]).read_text())
    assert report.kind(folder) == "folder" and "reproductions" in page.tables
    assert page.texts["verdict"].startswith("1 of 2 reproductions pass every claim")
    rows = page.texts["reproductions"]
    assert "reproduce/a-quick" in rows and "1 of 1 pass" in rows and "2 of 2" not in rows
    assert "reproduce/b-quick" in rows and "1 of 2 pass" in rows and "it trains" in rows
    assert "gradient vanishes" not in rows  # (only the failed claims are named)
    assert {"reproduce/a-quick/report.html", "reproduce/b-quick/REPORT.md"} <= set(page.urls)
    assert all((folder / url).exists() for url in page.urls if url.startswith("reproduce/"))
    assert "reproductions" not in Page((study / "report.html").read_text()).tables  # (a sweep has none)
    # a claims.json of no claims (written by hand) passes nothing: its own page said PASS, the folder's FAIL
    empty = folder / "reproduce" / "c-quick"
    shutil.copytree(study, empty / "arm", ignore=shutil.ignore_patterns("report.html"))
    _write_reproduction(empty, [])
    assert 'class="FAIL" id="verdict"' in report.write([empty]).read_text()
    assert Page(report.write([folder]).read_text()).texts["verdict"].startswith("1 of 3 reproductions pass")


def test_bad_path_is_one_line(cli, tmp_path):
    out = cli("report", str(tmp_path / "nothing"))
    assert out.exit_code == 1 and "does not exist" in out.output and "Traceback" not in out.output
    assert not (tmp_path / "nothing").exists()


def test_out_under_a_file_says_it_is_a_file(cli, study, tmp_path):
    # (it said "the folder afile does not exist", beside the file of that name)
    (tmp_path / "afile").write_text("mine")
    out = cli("report", str(study), "--out", str(tmp_path / "afile" / "x.html"))
    assert out.exit_code == 1 and out.stderr.strip() == (f"error: --out {tmp_path / 'afile' / 'x.html'}: "
                                                         f"{tmp_path / 'afile'} is a file, not a folder; write the "
                                                         "page elsewhere"), out.output


def test_out_onto_another_studys_own_page_is_refused(cli, study, tmp_path):
    """--out into another study's folder wrote this page as that study's report.html, which its sweep then
    called its own page "from an earlier command"; another name there, or this study's own page, is fine."""
    other = tmp_path / "other"
    shutil.copytree(study, other)
    before = (other / "report.html").read_bytes() if (other / "report.html").exists() else None
    for out in (other, other / "report.html"):
        said = cli("report", study, "--out", out)
        assert said.exit_code == 1 and " ".join(said.output.split()) == (
            f"error: --out {out}: {other / 'report.html'} is the page of {other} (`gradflow report {other}` writes "
            f"it there); give this page another name ({other / 'grid.html'}) or folder"), said.output
    assert ((other / "report.html").read_bytes() if (other / "report.html").exists() else None) == before
    assert cli("report", study, "--out", other / "grid.html").exit_code == 0 and (other / "grid.html").exists()
    # a folder of studies' own page too (`gradflow report` of it writes there)
    said = cli("report", study, "--out", tmp_path)
    assert said.exit_code == 1 and f"is the page of {tmp_path} (`gradflow report {tmp_path}`" in said.output
    # a folder of no runs (looked into a few folders down, not walked whole) takes a page named report.html
    (tmp_path / "pages" / "a" / "b").mkdir(parents=True)
    assert cli("report", study, "--out", tmp_path / "pages" / "report.html").exit_code == 0
    assert cli("report", study, "--out", study).exit_code == 0


def test_a_file_for_a_folder_and_a_folder_twice_are_one_line_each(cli, study):
    # a run's run.json given: the page's default place beside it made the error about --out's folder
    run = next(study.rglob("run.json"))
    out = cli("report", str(run))
    assert out.exit_code == 1 and f"{run} is a file, not a run or a folder of runs: give its run's folder" in \
        " ".join(out.output.split()), out.output
    out = cli("report", str(study), str(study) + "/")  # a comparison of a folder with itself
    assert out.exit_code == 1 and "is given twice: a comparison page needs different folders" in out.output
    assert not list(study.parent.glob("compare-*"))


def open_report(study: Path, tmp_path: Path, browser_exit: int) -> tuple[subprocess.CompletedProcess, list[str]]:
    """`gradflow report --open` in its own process, as a user runs it, with $BROWSER (which Python's
    webbrowser tries first) a script that records the URL it is given and exits with `browser_exit`; PATH
    and the display variables are cleared so that no real browser is found besides it."""
    opened = tmp_path / "opened.txt"
    browser = tmp_path / "browser"
    browser.write_text(f'#!/bin/sh\necho "$1" >> "{opened}"\nexit {browser_exit}\n')
    browser.chmod(0o755)
    root = str(Path(gradflow.__file__).resolve().parents[1])
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "PATH")}
    env.update(BROWSER=f"{browser} %s", PATH=str(tmp_path / "empty"),
               PYTHONPATH=os.pathsep.join([root, *filter(None, [os.environ.get("PYTHONPATH")])]))
    out = subprocess.run([sys.executable, "-m", "gradflow", "report", str(study), "--out",
                          str(tmp_path / "page.html"), "--open"], env=env, capture_output=True, text=True,
                         timeout=300)
    return out, opened.read_text().split() if opened.exists() else []


def test_open_hands_the_page_to_the_browser(study, tmp_path):
    out, opened = open_report(study, tmp_path, browser_exit=0)
    assert out.returncode == 0, out.stderr
    assert opened == [(tmp_path / "page.html").resolve().as_uri()] and (tmp_path / "page.html").is_file()
    assert "no browser" not in out.stdout


def test_open_without_a_working_browser_says_where_the_page_is(study, tmp_path):
    out, opened = open_report(study, tmp_path, browser_exit=1)
    uri = (tmp_path / "page.html").resolve().as_uri()
    assert out.returncode == 0 and opened == [uri], out.stderr  # the page is written; only opening failed
    assert f"no browser could open it; open {uri} yourself" in " ".join(out.stdout.split())


def chromium() -> str | None:
    return next((shutil.which(b) for b in ("chromium", "chromium-browser") if shutil.which(b)), None)


def browse(page: Path, fragment: str, *args: str) -> str:
    """Render the page headless (offline, a fresh profile) and return the DOM after its scripts ran."""
    with tempfile.TemporaryDirectory() as profile:
        out = subprocess.run(
            [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
             "--virtual-time-budget=10000", *args, page.resolve().as_uri() + fragment],
            capture_output=True, text=True, timeout=120)
    return out.stdout


@pytest.mark.skipif(chromium() is None, reason="Chromium is not installed (Debian: apt-get install chromium); "
                                               "the page was checked with html.parser only")
def test_page_in_headless_chromium(study, tmp_path):
    page = study / "report.html"
    dom = browse(page, "#sort=-model.depth", "--dump-dom")
    parsed = Page(dom)
    n = len(parsed.images)
    assert n > 0 and f"figures loaded: {n} of {n}" in dom  # every figure decoded (naturalWidth > 0)
    runs = columns.listing(study)[0].set_index("run")
    depths = [int(runs.loc[r, "model.depth"]) for r in parsed.rows]
    assert depths == sorted(depths, reverse=True) and depths != sorted(depths)  # the column sort reordered rows
    losses = [runs.loc[r, "final.train_loss"] for r in Page(browse(page, "#sort=final.train_loss", "--dump-dom")).rows]
    assert losses == sorted(losses)
    shot = tmp_path / "report.png"
    browse(page, "", f"--screenshot={shot}", "--window-size=1280,2400")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("GRADFLOW_SCREENSHOT"):  # keep a copy where a person can look at it
        shutil.copy(shot, os.environ["GRADFLOW_SCREENSHOT"])


OVERFLOW_PROBE = ("<script>addEventListener('load', () => { const d = document.documentElement; "
                  "document.body.dataset.overflow = d.scrollWidth - d.clientWidth; });</script>")


@pytest.mark.skipif(chromium() is None, reason="Chromium is not installed (Debian: apt-get install chromium)")
@pytest.mark.parametrize("width", [1200, 800])
def test_page_fits_its_window(study, tmp_path, width):
    """The page never scrolls sideways: a table wider than the window scrolls in its own box."""
    probed = tmp_path / "probed.html"
    probed.write_text((study / "report.html").read_text().replace("</body>", OVERFLOW_PROBE + "</body>"))
    m = re.search(r'data-overflow="(-?\d+)"', browse(probed, "", "--dump-dom", f"--window-size={width},1000"))
    assert m, "the probe did not run"
    assert int(m.group(1)) <= 0, f"the page is {m.group(1)} px wider than a {width} px window"


def test_the_swept_note_leaves_out_keys_a_group_choice_sets_and_says_the_runs_differ_there_too(study, tmp_path, cli):
    # xavier_normal has init.gain and standard does not: gain varies, but only with the init choice
    results = tmp_path / "results"
    small = [a for a in SWEEP if not a.startswith(("model.depth=", "model.activation="))]
    out = cli("sweep", *small, "model.depth=2", "init=standard,xavier_normal", f"results={results}", "--name", "inits")
    assert out.exit_code == 0, out.output
    note = re.search(r"<p class=note>Swept: ([^<]*)</p>", report.build([results / "inits"])).group(1)
    # ... and says the runs also differ in it (it said they differ only in init.name)
    assert note == "init.name; the runs also differ in keys a choice sets or only some of them have: init.gain."
    note = re.search(r"<p class=note>Swept: ([^<]*)</p>", (study / "report.html").read_text()).group(1)
    assert note.endswith("; other runs differ only there."), note  # (a grid of depth x activation)


def test_a_folder_of_single_runs_page_gives_each_runs_command_beside_a_sweeps(study, tmp_path, cli):
    # "How it was made" read "not recorded" for a folder of `gradflow run`'s runs (they recorded no command;
    # one given alone had its command rebuilt from its folder's name), and beside a sweep, in a folder of
    # studies, they were left out. Each run.json keeps its command line now, whatever its name loses: a
    # quoted value with a comma (+tag="x,y" is named +tag=_x,y_), a name cut and hashed past 160 characters
    import shlex

    results = tmp_path / "results"
    shutil.copytree(study, results / "grid")
    small = [o for o in SWEEP if not o.startswith(("model.depth=", "model.activation="))]
    typed = [[*small, "model.depth=2", '+tag="x,y"', f"results={results}", "name=single"],
             [*small, "model.depth=3", *(f"+key{i}=value{i}" for i in range(12)), f"results={results}", "name=single"]]
    for args in typed:
        assert cli("run", *args).exit_code == 0
    single = report.commands([results / "single"])
    assert sorted(single) == sorted(shlex.join(["gradflow", "run", *args]) for args in typed), single
    before = {p.parent.name: store.read_run(p.parent)["config_hash"] for p in (results / "single").glob("*/run.json")}
    assert any("-" in name and len(name) < 170 for name in before)  # (the hashed name)
    for cmd in single:  # each as given reruns its own run, in its own folder
        assert cli(*shlex.split(cmd)[1:]).exit_code == 0
    assert {p.parent.name: store.read_run(p.parent)["config_hash"] for p in (results / "single").glob("*/run.json")} \
        == before
    both = report.commands([results])
    assert both[0].startswith("gradflow sweep ") and sorted(both[1:]) == sorted(single), both
    # a folder whose run.json cannot be read (a Recorder's, damaged) gives no command made up from its name
    (results / "mine" / "b2-lr1e-3").mkdir(parents=True)
    (results / "mine" / "b2-lr1e-3" / store.RUN_FILE).write_text("{broken")
    assert report.commands([results / "mine"]) == []


def test_a_recorders_runs_page_names_the_script_that_made_them(tmp_path):
    # "How it was made" read "not recorded" for a folder of a Recorder's runs, and for one run a `gradflow run`
    # command that never made it
    import shlex

    import torch

    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
    for name in ("a", "b"):
        with gradflow.Recorder(model, tmp_path / "mine" / name, every=1) as rec:
            with rec.step(0):
                model(torch.randn(8, 4)).sum().backward()
    script = shlex.join(["python", *sys.argv])
    assert store.read_run(tmp_path / "mine" / "a")["command"] == script
    assert report.commands([tmp_path / "mine"]) == [script] == report.commands([tmp_path / "mine" / "a"])
    page = (report.write([tmp_path / "mine"])).read_text()
    assert html_escape(script) in page and "not recorded" not in page


def test_a_studys_own_report_md_makes_it_no_reproduction_and_a_damaged_claims_file_is_one_line(study, tmp_path, cli):
    # a user's notes in REPORT.md made a sweep's page "gradflow reproduction: 0 of 0 claims pass", its figures
    # dropped; only claims.json marks a reproduction. A claims.json of claims that are no claims was a traceback
    notes = tmp_path / "notes"
    shutil.copytree(study, notes, ignore=shutil.ignore_patterns("report.html"))
    (notes / store.REPORT_FILE).write_text("# my notes\n")
    assert report.kind(notes) == "sweep"
    text = report.write([notes]).read_text()
    page = Page(text)
    assert "<h1>gradflow sweep: notes</h1>" in text and "verdict" not in page.texts and page.images
    damaged = tmp_path / "folder" / "damaged"
    shutil.copytree(study, damaged / "arm", ignore=shutil.ignore_patterns("report.html"))
    _write_reproduction(damaged, [])
    store.claims_path(damaged).write_text(json.dumps({"claims": ["x"]}))
    out = cli("report", str(damaged))
    assert out.exit_code == 1 and "is not a claims file gradflow wrote" in out.output, out.output
    assert len(out.output.strip().splitlines()) == 1 and "Traceback" not in out.output
    # the page of a folder holding it is still written, the damaged one's row saying so
    page = Page(report.write([tmp_path / "folder"]).read_text())
    assert "damaged" in page.texts["reproductions"] and "unreadable" in page.texts["reproductions"]


def test_a_reproductions_own_figures_get_no_caption_read_from_a_standard_name():
    # pascanu2013's `profile-signal-time` read "signal per layer, at step time"
    assert report.caption("profile-signal-time") == "" and report.caption("profile-act-std-unscaled") == ""
    assert report.caption("profile-signal_norm-step10") == "Back-propagated signal norm per layer, at step 10"
    assert report.caption("profile-grad_norm-last-model.width=16").endswith("at the last probed step (model.width=16)")


def test_missing_text_sorts_last_and_a_chi1_fit_by_its_number_of_layers(study):
    # a text column's missing "-" sorted first (as text); "45 (3-47)" sorted before "5 (3-7)"
    df, swept = report.runs([study])
    body = report.runs_html(df, swept)
    assert 'data-key="chi1_layers" data-numeric="1"' in body
    assert report._text_value("-") == "" and report._text_value("relu") == "relu"


def test_links_of_a_folder_page_are_url_encoded_and_dot_is_named_by_its_folder(study, tmp_path, monkeypatch):
    # a reproduction under `run#2/` was linked as href="run#2/...", a fragment; `gradflow report .` was titled
    # "gradflow sweep: " and a comparison from `.` written inside it as compare--vs-...
    folder = tmp_path / "results"
    shutil.copytree(study, folder / "run#2" / "arm", ignore=shutil.ignore_patterns("report.html"))
    _write_reproduction(folder / "run#2", [])
    assert 'href="run%232/REPORT.md"' in report.write([folder]).read_text()
    monkeypatch.chdir(study)
    assert f"<h1>gradflow sweep: {study.name}</h1>" in report.build([Path(".")])
    assert report.page_path([Path("."), Path("../other")]) == study.parent / f"compare-{study.name}-vs-other.html"


def test_the_run_command_of_a_folder_whose_name_replaced_characters_gives_the_value_as_typed(tmp_path):
    # a sweep's point of +tag="y&z" is the folder +tag=_y_z_: its command gave +tag=_y_z_, another tag, refused
    job = tmp_path / "results" / "s" / "+tag=_y_z_,model.depth=3"
    job.mkdir(parents=True)
    (job / store.CONFIG_FILE).write_text(yaml.safe_dump({"model": {"depth": 3}, "tag": "y&z"}))
    assert report._run_command(job) == f"gradflow run '+tag=\"y&z\"' model.depth=3 results={job.parent.parent} name=s"


def test_a_comparisons_note_names_every_source_that_sets_a_key_the_others_lack():
    # a sweep and a single run beside a Recorder's run: the keys both gradflow sources set read "which only it
    # sets" under each, where `gradflow compare` says "which only a and b set"
    keys = ["model.depth", "model.width", "data.dim", "optim.lr"]
    df = pd.DataFrame([{"source": "a", **dict.fromkeys(keys, 1)}, {"source": "b", **dict.fromkeys(keys, 1)},
                       {"source": "c", **dict.fromkeys(keys, float("nan"))}])
    note = report.differ_html(df, ["a", "b", "c"], {k: [1, 1, float("nan")] for k in keys})[0]
    assert note.count("which only a and b set") == 2 and "only it sets" not in note, note
    assert "c sets none of them" in note
