"""backprop-vs-fd at --quick: backprop agrees with central differences for every family and costs a fraction;
with a finite-difference step far too large (the differences no longer approximate the derivative) the
agreement claims FAIL."""

from __future__ import annotations

import copy

import pytest

from gradflow import reproduce as rep
from tests.reproducing import reproduce, verdicts

FAMILIES = ("mlp", "cnn", "resnet", "rnn", "lstm", "transformer")


@pytest.fixture(scope="module")
def outcome(tmp_path_factory) -> rep.Outcome:
    return reproduce("backprop-vs-fd", tmp_path_factory.mktemp("results"))


def test_backprop_vs_fd_quick_passes(outcome):
    assert len(outcome.claims) == 2 * len(FAMILIES) and outcome.passed, verdicts(outcome)
    for family in FAMILIES:
        assert outcome.claim(f"{family}: max relative error").measured.value < 1e-6
        assert outcome.claim(f"{family}: full gradient").source == "paper"


def test_a_step_too_large_fails(outcome):
    # eps = 0.3: the central difference's truncation error (eps² f''' / 6) is no longer negligible
    spec = copy.deepcopy(outcome.spec)
    for claim in spec.claims:
        claim["measure"]["eps"] = 0.3
    broken = rep.check(spec, outcome.root)
    errors = [r for r in broken if "max relative error" in r.text]
    assert len(errors) == len(FAMILIES) and not any(r.passed for r in errors), [r.measured.value for r in errors]


def test_gradients_below_the_floor_fail_with_why(tmp_path):
    # weights at init with sw2 = 1e-12: every gradient but the head's lies far below 1e-3 |L|, where the
    # relative error is judged against that floor and any backward, a wrong one too, would agree
    tiny = reproduce("backprop-vs-fd", tmp_path, "init=meanfield", "init.sw2=1e-12")
    for family in FAMILIES:
        claim = tiny.claim(f"{family}: max relative error")
        assert not claim.passed and "parameter tensors have a checked gradient" in claim.measured.note, claim
