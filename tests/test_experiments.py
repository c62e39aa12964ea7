"""experiments/*.yaml: `+experiment=NAME` presets that hold only what they change, each with its reason."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from gradflow.config import EXPERIMENTS_DIR, compose
from gradflow.store import flatten

EXPERIMENTS = sorted(EXPERIMENTS_DIR.glob("*.yaml"))
# every experiment at a tiny size: the experiment's own values stay, only sizes shrink
TINY = ["data=gaussian", "data.n_train=64", "data.n_test=16", "data.dim=8", "model.width=8", "model.depth=3",
        "train.steps=2", "train.batch_size=16", "train.eval_every=1", "probe.points=2"]


def test_there_are_at_least_three_experiments():
    assert {"depth-study", "edge-of-chaos", "residual-vs-plain"} <= {p.stem for p in EXPERIMENTS}


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_experiment_file_is_global_says_how_to_run_it_and_gives_reasons(path):
    lines = path.read_text().splitlines()
    assert lines[0] == "# @package _global_"
    assert any(re.match(rf"#\s+gradflow (sweep|run) \+experiment={path.stem}\b", line) for line in lines)
    leaves = [line for line in lines if re.match(r"\s*[\w.]+:\s*[^\s#]", line) or re.match(r"\s*- override", line)]
    assert leaves and all("#" in line for line in leaves), "every key says why it changes"


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_experiment_sets_only_keys_that_change(path):
    node = OmegaConf.load(path)
    groups = [f"{key.removeprefix('override /')}={value}" for entry in node.pop("defaults", [])
              for key, value in entry.items()]
    base = flatten(compose(groups))
    with_experiment = flatten(compose([f"+experiment={path.stem}"]))
    for key, value in flatten(node).items():
        assert with_experiment[key] == value, key  # the experiment's value arrives
        assert base[key] != value, f"{key}={value} repeats the default"


def test_every_experiment_runs_at_a_tiny_size_through_a_real_sweep(cli, results):
    out = cli("sweep", "+experiment=glob(*)", *TINY, "--name", "experiments", f"results={results}")
    assert out.exit_code == 0, out.output
    runs = {p.name: p for p in (results / "experiments").iterdir() if p.is_dir()}
    assert set(runs) == {f"+experiment={p.stem}" for p in EXPERIMENTS}
    for path in EXPERIMENTS:
        job = runs[f"+experiment={path.stem}"]
        assert json.loads((job / "run.json").read_text())["status"] == "ok"
        saved = flatten(OmegaConf.load(job / "config.yaml"))
        for key, value in flatten(OmegaConf.load(path)).items():
            if key != "defaults" and key not in {o.split("=")[0] for o in TINY}:
                assert saved[key] == value, (path.stem, key)
    eoc = flatten(OmegaConf.load(runs["+experiment=edge-of-chaos"] / "config.yaml"))
    assert eoc["init.name"] == "meanfield" and eoc["data.scale"] == "qstar"  # its group overrides took effect
    # the preset is the sweep's key: ls's first column, which --where reads (it had no column, its settings
    # the only keys, and `--where experiment=...` was "not a column")
    from gradflow import columns

    df, swept = columns.listing(results / "experiments")
    assert swept[0] == "experiment" and sorted(df["experiment"]) == sorted(p.stem for p in EXPERIMENTS), swept
    out = cli("ls", str(results / "experiments"), "--where", "experiment=depth-study", "--csv")
    assert out.exit_code == 0 and out.output.count("\n") == 2 and "depth-study" in out.output, out.output


def test_an_unknown_experiment_is_refused_with_the_choices(cli, results):
    out = cli("run", "+experiment=doesnotexist", f"results={results}")
    assert out.exit_code == 1
    assert "experiment='doesnotexist'" in out.output
    assert all(p.stem in out.output for p in EXPERIMENTS)
    # where presets are read from (a user's ./experiments/NAME.yaml is not one of them)
    assert f"(the files of {EXPERIMENTS[0].parent}/)" in " ".join(out.output.split())
    assert not results.exists()
    # a name with a slash was read as a group of no choices: "experiment/nope='x' ...; choices:" and nothing
    out = cli("run", "+experiment=nope/x", f"results={results}")
    assert out.exit_code == 1 and "experiment='nope/x' is not a known choice" in out.output, out.output
    assert all(p.stem in out.output for p in EXPERIMENTS)
    out = cli("run", "+experiment=reproduce/he2015", f"results={results}")  # (a reproduction's spec)
    assert out.exit_code == 1 and "+experiment=reproduce/he2015 is not a preset: the reproductions run by " \
        "`gradflow reproduce he2015`; presets: " in " ".join(out.output.split()), out.output
    assert not results.exists()


def test_an_unreadable_preset_is_named_when_asked_for_and_takes_no_other_command_down(tmp_path):
    """A half-written experiments/NAME.yaml was read as gradflow imported its configs: every command, `--help`
    too, ended in the YAML parser's traceback."""
    import os
    import shutil
    import subprocess
    import sys

    from gradflow.config import CONF_DIR

    package = Path(__import__("gradflow").__file__).parent
    for folder in (package, CONF_DIR, EXPERIMENTS_DIR):  # (a copy of the checkout's layout, with the bad file)
        shutil.copytree(folder, tmp_path / folder.name, ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "experiments" / "half-written.yaml").write_text("model:\n  depth: [4\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "COLUMNS": "200"}

    def gradflow(*args):
        return subprocess.run([sys.executable, "-m", "gradflow", *args], capture_output=True, text=True, env=env,
                              cwd=tmp_path, timeout=120)

    out = gradflow("--help")
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr[-2000:]
    out = gradflow("run", "+experiment=half-written", "train.steps=1")
    assert out.returncode == 1 and out.stderr.startswith(
        f"error: +experiment=half-written: {tmp_path / 'experiments' / 'half-written.yaml'} cannot be read: "
        "while parsing a flow sequence"), out.stderr[-2000:]
    assert len(out.stderr.strip().splitlines()) == 1
    out = gradflow("sweep", "+experiment=glob(*)", "train.steps=1")  # (it passed over the file without a word)
    assert out.returncode == 1 and out.stderr.startswith(
        f"error: +experiment=glob(*) matches {tmp_path / 'experiments' / 'half-written.yaml'}, which cannot be read: "
        "while parsing a flow sequence"), out.stderr[-2000:]
    # a preset's misspelled key: said with its section and its file ("unknown key 'dpth'", no file)
    (tmp_path / "experiments" / "typo.yaml").write_text("# @package _global_\nmodel:\n  dpth: 4\n")
    out = gradflow("run", "+experiment=typo", "train.steps=1")
    assert out.returncode == 1 and out.stderr.startswith(
        f"error: +experiment=typo: in {tmp_path / 'experiments' / 'typo.yaml'}, unknown key 'model.dpth' (did you "
        "mean model.depth?)"), out.stderr[-2000:]
    # a preset's misspelled choice, or a value out of range: said as if typed on the command line, no file
    (tmp_path / "experiments" / "choice.yaml").write_text("# @package _global_\ndefaults:\n  - override /init: "
                                                          "meanfeld\n")
    (tmp_path / "experiments" / "zero.yaml").write_text("# @package _global_\nmodel:\n  depth: 0\n")
    for name, said in [("choice", "init='meanfeld' is not a known choice (did you mean meanfield?)"),
                       ("zero", "model.depth=0 must be >= 1")]:
        out = gradflow("run", f"+experiment={name}", "train.steps=1")
        assert out.returncode == 1 and out.stderr.startswith(
            f"error: +experiment={name}: in {tmp_path / 'experiments' / name}.yaml, {said}"), out.stderr[-2000:]
    out = gradflow("run", "+experiment=zero", "model.depth=0")  # (typed too: the command line's, as it was)
    assert out.stderr.startswith("error: model.depth=0 must be >= 1"), out.stderr[-2000:]
    # a key the preset's own choices leave unread is the preset's error, named with its file
    (tmp_path / "experiments" / "unread.yaml").write_text("# @package _global_\nmodel:\n  skip: none\n  alpha: 0.5\n")
    out = gradflow("run", "+experiment=unread", "train.steps=1")
    assert out.returncode == 1 and out.stderr.startswith(
        f"error: +experiment=unread: in {tmp_path / 'experiments' / 'unread.yaml'}, model.alpha=0.5 does not apply "
        "to this run"), out.stderr[-2000:]
    # a group choice written as Hydra's plain defaults entry, then as Hydra's advice said: the form that works
    for name, entry, said in [("plain", "- /init: meanfield", "a preset chooses init as a change to the default: "
                                                               "write `- override /init: meanfield` in its defaults list"),
                              ("relative", "- override init: meanfield", "a preset's group is written from the top: "
                                                                         "`- override /init: CHOICE` in its defaults")]:
        (tmp_path / "experiments" / f"{name}.yaml").write_text(f"# @package _global_\ndefaults:\n  {entry}\n")
        out = gradflow("run", f"+experiment={name}", "train.steps=1")
        assert out.returncode == 1 and out.stderr.startswith(
            f"error: +experiment={name}: in {tmp_path / 'experiments' / name}.yaml, {said}"), out.stderr[-2000:]


def test_a_presets_key_that_a_command_line_choice_leaves_unread_is_left_out(cli, results):
    """residual-vs-plain's plain net alone, depth-study probed every step: the preset set model.alpha and
    probe.points for the runs that read them, as a sweep point does; both were refused (`leave it out, or
    set model.alpha=1.0 where a preset sets it`). A value typed for a run that does not read it still is."""
    from gradflow import store

    small = ("train.steps=1", "model.depth=3", "model.width=8", "data=gaussian", f"results={results}")
    for preset, choice, unread in [("residual-vs-plain", "model.skip=none", "model.alpha"),
                                   ("depth-study", "probe=every", "probe.points")]:
        out = cli("run", f"+experiment={preset}", choice, *small)
        assert out.exit_code == 0, out.output
        run = max(store.find_runs(results / "run"), key=lambda job: job.stat().st_mtime)
        assert preset in run.name and unread not in store.read_run(run)["config"], run.name
    out = cli("run", "+experiment=residual-vs-plain", "model.skip=none", "model.alpha=0.5", *small)
    assert out.exit_code == 1 and out.stderr.startswith("error: model.alpha=0.5 does not apply to this run: "
                                                        "it scales residual branches"), out.output


@pytest.mark.slow
def test_residual_vs_plain_shows_the_residual_net_learning_and_the_plain_one_not(cli, results):
    """The preset's claim, in 150 of its 500 steps (~12 s): the residual net's train loss falls well below
    chance (ln 10 = 2.30; 1.13 here), the plain one's stays at it (2.28). With branches at scale 1 the
    residual net's signal exploded (ratio 72 at init) and it ended at a loss of 5.9, far above chance."""
    from gradflow import store

    out = cli("sweep", "+experiment=residual-vs-plain", "model.skip=none,residual", "train.steps=150", "threads=1",
              "--name", "rvp", f"results={results}")
    assert out.exit_code == 0, out.output
    loss = {store.read_run(job)["config"]["model.skip"]: store.read_run(job)["final"]["train_loss"]
            for job in store.find_runs(results / "rvp")}
    assert loss["residual"] < 1.5 and loss["none"] > 2.2, loss
