"""experiments/*.yaml: `+experiment=NAME` presets that hold only what they change, each with its reason."""

from __future__ import annotations

import json
import re

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


def test_an_unknown_experiment_is_refused_with_the_choices(cli, results):
    out = cli("run", "+experiment=doesnotexist", f"results={results}")
    assert out.exit_code == 1
    assert "experiment='doesnotexist'" in out.output
    assert all(p.stem in out.output for p in EXPERIMENTS)
    # where presets are read from (a user's ./experiments/NAME.yaml is not one of them)
    assert f"(the files of {EXPERIMENTS[0].parent}/)" in " ".join(out.output.split())
    assert not results.exists()
