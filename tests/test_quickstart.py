"""Every quick-start command of the README, read from the README itself, runs here with the same
settings but fewer steps, and reaches what the README says it shows."""

from __future__ import annotations

import json
import math
import re
import shlex
from pathlib import Path

import pandas as pd
import pytest

from gradflow.overrides import job_name
from gradflow.summary import grad_ratio

README = Path(__file__).resolve().parents[1] / "README.md"


def quickstart_commands() -> list[list[str]]:
    """The overrides of each `gradflow run` line in the README's first bash block."""
    block = re.search(r"```bash\n(.*?)```", README.read_text().split("## Quick start", 1)[1], re.S).group(1)
    lines = [ln.split("#")[0].strip() for ln in block.splitlines()]
    return [shlex.split(ln)[2:] for ln in lines if ln.startswith("gradflow run") and "--help" not in ln]


def _steps(overrides: list[str]) -> int:
    return next((int(o.split("=")[1]) for o in overrides if o.startswith("train.steps=")), 1000)


def _run(cli, results: Path, overrides: list[str], steps: int) -> tuple[dict, pd.DataFrame, str]:
    """The command with train.steps (and the evaluation interval) reduced; nothing else changes."""
    shorter = [o for o in overrides if not o.startswith("train.steps=")] + [f"train.steps={steps}",
                                                                            f"train.eval_every={steps // 4}"]
    out = cli("run", *shorter, f"results={results}", "name=q")
    assert out.exit_code == 0, out.output
    job = results / "q" / job_name(shorter)
    return json.loads((job / "run.json").read_text()), pd.read_parquet(job / "layers.parquet"), out.output


def _claim(overrides: list[str]) -> str:
    text = " ".join(overrides)
    for key, needle in (("meanfield", "init=meanfield"), ("relu", "model.activation=relu"),
                        ("standard", "init=standard"), ("default", "")):
        if needle in text:
            return key
    raise AssertionError(text)


def test_the_readme_quickstart_is_the_tested_one():
    commands = quickstart_commands()
    assert sorted(map(_claim, commands)) == ["default", "meanfield", "relu", "standard"]
    assert [] in commands  # the first command is plain `gradflow run`


@pytest.mark.parametrize("overrides", quickstart_commands(), ids=lambda o: " ".join(o) or "gradflow run")
def test_quickstart_command_does_what_the_readme_says(cli, results, overrides):
    claim = _claim(overrides)
    if claim == "default":
        # 20-layer tanh MLP, Xavier init: it learns (README: train acc 0.69 after 1000 steps)
        rec, layers, _ = _run(cli, results, overrides, 300)
        assert rec["status"] == "ok" and not rec["flags"]
        assert rec["final"]["train_acc"] > 0.35
    elif claim == "standard":
        # Glorot & Bengio's baseline: the back-propagated signal reaching layer 0 is ~1e-5 of the head's,
        # the weight-gradient ratio is not (0.52): the two ratios tell different stories; nothing learns
        rec, layers, output = _run(cli, results, overrides, 100)
        assert 3e-6 < grad_ratio(layers, 0, "signal_norm") < 3e-5
        assert 0.3 < grad_ratio(layers, 0, "grad_norm") < 1.0
        assert rec["status"] == "ok" and any("chance" in f for f in rec["flags"])
        assert "back-prop signal ratio" in output and "learned nothing" in output
    elif claim == "relu":
        # ReLU with Xavier's sigma_w^2 = 1 (half of He's 2): the signal halves per layer (2.7e-5 over
        # 30 layers), the loss never leaves chance, and by step ~700 every ReLU is dead
        rec, layers, _ = _run(cli, results, overrides, 800)
        assert grad_ratio(layers, 0, "signal_norm") < 1e-4
        hidden = layers.query(f"quantity == 'grad_norm' and step == 800 and layer < {layers['layer'].max()}")
        assert (hidden["value"] == 0).all()
        assert rec["status"] == "ok" and len(rec["flags"]) == 2  # exactly-0 gradients and chance loss
    else:
        # at the edge of chaos (chi_1 = 1 at sigma_w^2 = 1.76) 60 tanh layers train; chaotic 4.0 does not
        steps = _steps(overrides)
        rec, layers, _ = _run(cli, results, overrides, steps)
        assert rec["final"]["train_acc"] > 0.3 and not rec["flags"]
        chaotic = [o if not o.startswith("init.sw2=") else "init.sw2=4.0" for o in overrides]
        rec4, _, _ = _run(cli, results, chaotic, steps)
        assert rec4["final"]["train_acc"] < rec["final"]["train_acc"] - 0.15
        assert math.isfinite(rec4["final"]["train_loss"])
