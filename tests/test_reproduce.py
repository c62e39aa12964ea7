"""The reproduction framework: every spec composes, claims are checked as data, failures exit 1."""

from __future__ import annotations

import pytest

from gradflow import reproduce as rep
from gradflow.config import compose
from gradflow.errors import GradflowError


@pytest.mark.parametrize("name", rep.names())
@pytest.mark.parametrize("scale", rep.SCALES)
def test_every_experiment_composes_at_every_scale(name, scale):
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    spec = rep.Spec.load(name)
    assert spec.paper and spec.summary and spec.claims and spec.arms
    for arm in spec.arms:
        overrides = [o for o in spec.overrides(arm, scale, []) if not o.startswith("hydra")]
        parsed = OverridesParser.create().parse_overrides(overrides)
        grid = BasicSweeper.split_arguments(parsed, max_batch_size=None)[0]
        for point in (grid[0], grid[-1]):  # the corners of the grid
            compose(point)
    for claim in rep.expand(spec.claims):
        assert claim["measure"]["fn"] in rep.MEASURES or claim["measure"]["fn"] in ("difference", "min_difference",
                                                                                    "ratio")
        assert claim["measure"].get("arm", "") in spec.arms or "a" in claim["measure"]


def test_user_overrides_replace_the_arms_values_for_the_same_key():
    spec = rep.Spec.load("sigmoid-textbook")
    merged = spec.overrides("init", "quick", ["init.sw2=2.0", "hydra/launcher=joblib"])
    assert "init.sw2=2.0" in merged and "init.sw2=1.0,16.0" not in merged
    assert "model.width=300" in merged and "model.width=500" not in merged  # the quick scale's own value
    assert merged[-1] == "hydra/launcher=joblib"


@pytest.mark.parametrize("value, expect, ok", [
    (0.1, {"lt": 0.2}, True), (0.3, {"lt": 0.2}, False), (0.2, {"le": 0.2}, True), (3, {"ge": 3}, True),
    (0.5, {"between": [0.4, 0.6]}, True), (0.61, {"between": [0.4, 0.6]}, False),
    (0.72, {"approx": 0.707, "tol": 0.03}, True), (0.75, {"approx": 0.707, "tol": 0.03}, False),
    (float("nan"), {"approx": 1.0, "tol": 0.1}, False), (float("nan"), {"gt": 0}, False),
])
def test_claim_tests(value, expect, ok):
    assert rep.passes(value, expect)[0] is ok


def test_unknown_expect_and_measure_are_user_errors():
    with pytest.raises(GradflowError, match="expect"):
        rep.passes(1.0, {"roughly": 1})
    with pytest.raises(GradflowError, match="fn='nope' is not known"):
        rep.compute({"fn": "nope", "arm": "a"}, {})


def test_for_each_expands_claims():
    claims = rep.expand([{"text": "chi1 at {init.sw2}", "measure": {"fn": "chi1_error", "arm": "a"},
                          "expect": {"lt": 0.03}, "for_each": {"init.sw2": [1.0, 4.0]}}])
    assert [c["text"] for c in claims] == ["chi1 at 1.0", "chi1 at 4.0"]
    assert claims[1]["measure"]["where"] == {"init.sw2": 4.0}


def test_unknown_experiment_lists_the_choices(cli):
    out = cli("reproduce", "nope")
    assert out.exit_code == 1 and "sigmoid-textbook" in out.output and "Traceback" not in out.output


def test_list_names_every_experiment(cli):
    out = cli("reproduce", "--list")
    assert out.exit_code == 0
    for name in rep.names():
        assert name in out.output


def test_sigmoid_textbook_quick_passes_and_a_broken_claim_fails(cli, tmp_path):
    out = cli("reproduce", "sigmoid-textbook", "--quick", f"results={tmp_path}")
    assert out.exit_code == 0, out.output
    root = tmp_path / "reproduce" / "sigmoid-textbook-quick"
    report = (root / "REPORT.md").read_text()
    assert report.count("**PASS**") == 3 and "FAIL" not in report
    assert (root / "figures" / "profile-signal-init.png").stat().st_size > 10_000
    # tanh instead of sigmoid: the factor is no longer 0.236, and the report says so
    broken = cli("reproduce", "sigmoid-textbook", "--quick", "model.activation=tanh", f"results={tmp_path}")
    assert broken.exit_code == 1
    assert "FAIL" in (root / "REPORT.md").read_text()
