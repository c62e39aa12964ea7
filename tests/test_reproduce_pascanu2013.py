"""pascanu2013 at --quick: at init the signal through time vanishes at spectral radius 0.5 (at least as fast as
the bound 0.5 per step) and grows at 3; the unclipped RNN explodes and diverges, the clipped one trains; with a
learning rate ten times smaller the explosion claim FAILS. The measures are recomputed from the tables with
pandas."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gradflow.fmt import fmt

from tests.reproducing import figures_drawn, reproduce, reproduce_edited, verdicts


@pytest.mark.slow
def test_pascanu2013_quick_passes(shared):
    outcome = reproduce("pascanu2013", shared)
    assert len(outcome.claims) == 8 and outcome.passed, verdicts(outcome)
    figures_drawn(outcome, ["curves-clip", "gradnorm-clip", "profile-signal-time"])
    # the rates through time at init, refitted from layers.parquet: log ||dL/dh_(T-k)|| / ||dL/dh_(T-1)||
    # against k = 1..40 (time steps are layers 0..T-1, the head T)
    for gain, words in ((0.5, "spectral radius 0.5"), (3.0, "spectral radius 3")):
        layers = pd.read_parquet(outcome.root / "through_time" / f"model.gain={gain}" / "layers.parquet")
        s = layers[(layers["quantity"] == "signal_norm") & (layers["step"] == 0)].set_index("layer")["value"]
        T = int(s.index.max())
        k = np.arange(1, 41)
        rate = np.polyfit(k, np.log(s.loc[T - k].to_numpy() / s.loc[T - 1]), 1)[0]
        assert outcome.claim(words).measured.value == pytest.approx(rate, rel=1e-9)
    assert outcome.claim("spectral radius 0.5").measured.value < np.log(0.5)  # (the bound of Sec. 2.1)
    arm = outcome.root / "clip"
    unclipped, clipped = arm / "train.grad_clip=0", arm / "train.grad_clip=1"
    assert json.loads((unclipped / "run.json").read_text())["status"] == "diverged"

    # the clipped run's spike and clip share, from metrics.parquet
    m = pd.read_parquet(clipped / "metrics.parquet")
    norms = m[(m["split"] == "opt") & (m["metric"] == "grad_norm")].sort_values("step")["value"].to_numpy()
    clips = m[(m["split"] == "opt") & (m["metric"] == "clipped")]["value"].sum()
    assert outcome.claim("clipping at 1: largest").measured.value == pytest.approx(norms.max() / norms[0])
    assert outcome.claim("share of updates clipped").measured.value == pytest.approx(clips / 400)
    assert np.all(norms[1:] > 0)
    # a difference says what it is made of: the unclipped net's inf and the clipped one's final loss
    final = json.loads((clipped / "run.json").read_text())["final"]["train_loss"]
    assert outcome.claim("minus clipping at 1's").measured.cell().startswith(f"inf (inf − {fmt(final, 3)}")


def test_pascanu2013_small_steps_do_not_explode(shared, tmp_path, monkeypatch):
    # lr 0.01 instead of 0.1: the updates never carry the recurrent weights into the exploding region, so the
    # gradient norm never rises above its first window's (measured: a spectral radius of 0.5 at init with
    # lr 0.1 still explodes; it is the large steps that find the explosion). (The clip arm edited alone: the
    # untrained through_time arm's runs are reused)
    broken = reproduce_edited("pascanu2013", shared, tmp_path / "specs", monkeypatch, {"clip": ["optim.lr=0.01"]})
    assert not broken.claim("no clipping: largest gradient norm").passed, verdicts(broken)


def test_pascanu2013_untrained_fails_the_claim_that_clipping_is_what_trains(shared):
    # no training: the unclipped net sits at its initial loss (1.3), above 1/12, which a claim on the
    # unclipped loss alone would PASS; the clipped net's 1.3 is above the constant predictor's 1/6: it did
    # not train, inf, and 1.3 − inf FAILs (against the clipped loss itself the difference was 0)
    broken = reproduce("pascanu2013", shared, "train.steps=0")
    claim = broken.claim("no clipping: final training loss (inf = diverged) minus clipping at 1's")
    assert not claim.passed and claim.measured.value == -math.inf, verdicts(broken)


@pytest.mark.parametrize("unclipped, clipped, passed", [
    (math.inf, 0.03, True),  # diverged without clipping, trained with it
    (0.5, 0.03, True),  # 0.47 above: at least 1/12
    (0.17, 0.16, False),  # 0.01 apart (it PASSed when the unclipped side's 0.17, above 1/6, read inf)
    (0.165, 0.09, False),  # 0.075 apart
    (math.inf, 3.9e6, False),  # the clipped net did not train either: inf − inf, no value
    (0.3, 0.2, False),  # the clipped net no better than predicting 1: 0.3 − inf
])
def test_pascanu2013_clipping_is_what_trains_on_final_losses(unclipped, clipped, passed):
    from gradflow import reproduce as rep

    spec = rep.Spec.load("pascanu2013")
    (claim,) = [c for c in spec.claims if c["text"].endswith("minus clipping at 1's")]
    runs = [{"run": f"c{clip}", "status": "ok" if math.isfinite(loss) else "diverged", "train.grad_clip": clip,
             "final.train_loss": loss if math.isfinite(loss) else float("nan")}
            for clip, loss in ((0, unclipped), (1, clipped))]
    arm = rep.Arm(Path("clip"))
    arm._tables["runs"] = pd.DataFrame(runs)
    measured = rep.compute(claim["measure"], {"clip": arm, "through_time": arm})
    assert rep.passes(measured.value, claim["expect"])[0] == passed, measured.cell()


def test_pascanu2013_a_net_that_does_not_move_fails_the_claims_of_clipped_training(tmp_path):
    # lr 0: no update moves the net, so its gradient norm never spikes (1.04) and every update is clipped (its
    # gradient's norm is above 1): both claims PASSed; they are claims of a net that trained
    broken = reproduce("pascanu2013", tmp_path, "optim.lr=0")
    for words in ("clipping at 1: largest (unclipped) gradient norm", "clipping at 1: share of updates clipped"):
        claim = broken.claim(words)
        assert not claim.passed and math.isnan(claim.measured.value), verdicts(broken)
        assert claim.measured.note == ("1 of the 1 runs did not train (a final training loss of 0.167 or more, or "
                                       "none): this is a claim of training"), claim.measured.note


def test_pascanu2013_a_clipped_net_that_does_not_train_either_fails_it(shared, tmp_path):
    # lr 1000: the clipped net ends at a loss of millions, not diverged, so inf − 3.9e6 = inf PASSed; a
    # final loss at or above 1/6 (predicting 1) counts as not training, so the difference has no value
    broken = reproduce("pascanu2013", tmp_path, "optim.lr=1000")
    claim = broken.claim("no clipping: final training loss (inf = diverged) minus clipping at 1's")
    clipped = json.loads((broken.root / "clip" / "train.grad_clip=1" / "run.json").read_text())
    assert clipped["status"] == "ok" and clipped["final"]["train_loss"] > 1 / 6, clipped
    assert not claim.passed and claim.measured.note == "both sides are inf", verdicts(broken)
