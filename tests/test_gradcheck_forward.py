"""Forward-mode AD as the negative control of backprop-vs-fd's cost claim: its gradient is exact, so the
agreement claims still pass, but it costs one pass per parameter like finite differences, so the claim
that reverse mode is about (parameter count) times cheaper FAILs."""

from __future__ import annotations

import pytest

from gradflow.config import compose
from gradflow.gradcheck import gradcheck
from tests.reproducing import reproduce, verdicts

FAMILIES = ("mlp", "cnn", "resnet", "rnn", "lstm", "transformer")


def test_forward_mode_is_exact_and_costs_one_pass_per_parameter():
    cfg = ["data=mnist1d", "model.depth=3", "model.width=16", "threads=1"]
    forward = gradcheck(compose([*cfg, "gradcheck.mode=forward"]), entries=6)
    reverse = gradcheck(compose(cfg), entries=6)
    assert forward.mode == "forward" and forward.max_rel < 1e-6, [(p.name, p.max_rel) for p in forward.params]
    # the same entries are checked (one seed), and they agree as closely as backprop's do
    assert [(p.name, p.checked) for p in forward.params] == [(p.name, p.checked) for p in reverse.params]
    # a JVP and a central difference both cost a pass or two: the ratio is O(1), not O(parameters)
    assert 0.05 < forward.cost_ratio < 20 < 0.1 * forward.n_params < reverse.cost_ratio, (
        forward.cost_ratio, reverse.cost_ratio, forward.n_params)


@pytest.fixture(scope="module")
def forward(tmp_path_factory):
    return reproduce("backprop-vs-fd", tmp_path_factory.mktemp("results"), "gradcheck.mode=forward")


def test_forward_mode_fails_the_cost_claims_and_passes_the_accuracy_claims(forward):
    cost, accuracy = forward.claims_with("full gradient"), forward.claims_with("max relative error")
    assert len(cost) == len(accuracy) == len(FAMILIES), verdicts(forward)
    assert not any(r.passed for r in cost), verdicts(forward)
    assert all(r.passed for r in accuracy), verdicts(forward)
    assert all("gradcheck.mode=forward" in forward.overrides[family] for family in FAMILIES), forward.overrides
