"""The reproduction framework: every spec composes, claims are checked as data, failures exit 1."""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gradflow import reproduce as rep
from gradflow import theory
from gradflow.config import compose
from gradflow.errors import GradflowError
from gradflow.fmt import fmt
from tests.reproducing import figures_drawn, reproduce, verdicts


# the sweep points composed so far in this module: a point met again (an arm of one point, whose two
# corners are one; a scale that leaves an arm as another scale has it) was composed without an error
# already, and composing the same overrides again does the same (a third of the points, ~2 s)
_COMPOSED: set[tuple[str, ...]] = set()


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
            if tuple(point) not in _COMPOSED:
                compose(point, sweep_point=True)  # a sweep point: it may set keys of another choice
                _COMPOSED.add(tuple(point))
    for claim in rep.expand(spec.claims):
        assert claim["measure"]["fn"] in rep.MEASURES or claim["measure"]["fn"] in ("difference", "min_difference",
                                                                                    "ratio")
        assert claim["measure"].get("arm", "") in spec.arms or "a" in claim["measure"]


@pytest.mark.parametrize("measure, message", [
    # a misspelled argument was a TypeError from the measure after the whole sweep had run
    ({"fn": "final", "arm": "grid", "metirc": "train_acc"},
     "claim measure final: 'metirc' is not an argument of it (did you mean metric?); choices: where, metric"),
    ({"fn": "chi1_error", "arm": "chi1", "trim": 1}, "claim measure chi1_error: 'trim' is not an argument of it"),
    ({"fn": "chi1_eror", "arm": "chi1"}, "claim measure fn='chi1_eror' is not known (did you mean chi1_error?)"),
    ({"fn": "final", "arm": "chi"}, "claim measure final: arm='chi' is not an arm; choices: chi1, grid"),
    # a measure against another arm needs it (it was an AttributeError after the sweep); others take none
    ({"fn": "rescale_exponent", "arm": "grid"},
     "claim measure rescale_exponent: reference=None is not an arm; choices: chi1, grid"),
    ({"fn": "rescale_exponent", "arm": "grid", "reference": "chi"},
     "claim measure rescale_exponent: reference='chi' is not an arm; choices: chi1, grid"),
    ({"fn": "layer_ratio", "arm": "grid", "reference": "chi1"},
     "claim measure layer_ratio: 'reference' is not an argument of it"),
    # difference and ratio of a list of b read its first alone
    ({"fn": "difference", "a": {"fn": "final", "arm": "grid"}, "b": [{"fn": "final", "arm": "chi1"}] * 2},
     "claim measure fn=difference takes one b; min_difference takes a list"),
    ({"fn": "ratio", "a": {"fn": "final", "arm": "grid"}, "b": {"fn": "final", "arm": "chi1", "step": 0}},
     "claim measure final: 'step' is not an argument of it"),
])
def test_a_claims_measure_is_checked_when_its_spec_loads(measure, message):
    with pytest.raises(GradflowError) as e:
        rep.check_measure(measure, ["chi1", "grid"])
    assert str(e.value).startswith(message), str(e.value)
    rep.check_measure({"fn": "min_difference", "a": {"fn": "final", "arm": "grid", "metric": "train_acc"},
                       "b": [{"fn": "final", "arm": "chi1"}, {"fn": "chi1_error", "arm": "chi1"}]}, ["chi1", "grid"])


@pytest.mark.parametrize("old, new, message", [
    ("{fn: chi1_error, arm: chi1}", "{fn: chi1_error, arm: chi1, trim: 1}",
     "claim measure chi1_error: 'trim' is not an argument of it"),
    ("for_each: {init.sw2: [1.0, 1.5, 1.761, 2.0, 2.5, 4.0]}", "for_each: {init.sw2: 1.0}",
     "for_each must be one key with a list of values"),
    ("measure: {fn: chi1_error, arm: chi1}", "measure: {fn: difference, A: {fn: chi1_error, arm: chi1}, b: {fn: chi1_error, arm: chi1}}",
     "for_each fills in a measure {fn: NAME, ...} (a combination's a); got None"),
    # each was a TypeError or AttributeError as the spec loaded, or ran with the default sizes under the
    # quick label, or a KeyError after the whole sweep had run
    ("\nclaims:\n", "\nclaim:\n", "unknown key 'claim' (did you mean claims?); a spec's keys: paper, summary"),
    ("\nruntime: ", "\n# runtime: ", "runtime is missing; a spec needs paper, summary, runtime, arms, claims"),
    ("\nscales:\n  quick:", "\nscales:\n  qiuck:", "scales.qiuck is not a scale (did you mean quick?); choices:"),
    ("\n  quick:\n    chi1:", "\n  quick:\n    chi:", "scales.quick.chi is not an arm (did you mean chi1?); choices: chi1, grid, all"),
    ("{kind: grid, arm: grid,", "{kind: gird, arm: grid,", "figures[1]: kind='gird' is not a figure (did you mean grid?)"),
    ("{kind: grid, arm: grid,", "{kind: grid, arm: gird,", "figures[1] (grid): arm='gird' is not an arm (did you mean grid?)"),
    ("expect: {lt: 0.03}", "expect: {approx: 0.03}", "expect={'approx': 0.03} is not one test; write {lt|le|gt|ge: NUMBER}"),
    ("expect: {lt: 0.03}", "expect: {between: 0.5}", "expect={'between': 0.5} is not one test"),
    ("expect: {lt: 0.03}", "expect: {lt: abc}", "expect={'lt': 'abc'} is not one test"),
    ("expect: {lt: 0.03}", "expect: {lessthan: 0.03}", "expect={'lessthan': 0.03} is not one test"),
    ("{kind: grid, arm: grid,", "{kind: [grid], arm: grid,", "figures[1]: kind=['grid'] is not a figure"),
    ("\n  quick:\n    chi1: [seed=0]", "\n  quick:\n    chi1:", "scales.quick.chi1 is None, not a list of key=value"),
    ("\nscaled:\n  quick: ", "\nscaled:\n  quick: 5  # ", "scaled.quick is 5, not a sentence"),
    # (a misspelled key of `where` picked no run: the claim FAILed after the sweep)
    ("where: {init.sw2: 1.76, model.depth: 60}", "where: {init.sw2: 1.76, model.dpth: 60}",
     "where key 'model.dpth' is not a config key (did you mean model.depth?)"),
])
def test_a_spec_with_a_bad_claim_measure_is_one_line_when_it_loads(tmp_path, monkeypatch, old, new, message):
    # (a misspelled argument was a TypeError after the sweep; a for_each over a bad measure a KeyError)
    text = (rep.SPEC_DIR / "schoenholz2017.yaml").read_text()
    assert old in text, old
    (tmp_path / "typo.yaml").write_text(text.replace(old, new, 1))
    monkeypatch.setattr(rep, "SPEC_DIR", tmp_path)
    with pytest.raises(GradflowError) as e:
        rep.Spec.load("typo")
    assert str(e.value).startswith(f"{tmp_path / 'typo.yaml'}: ") and message in str(e.value), str(e.value)


def test_a_measure_may_pick_runs_by_a_custom_models_arguments():
    # model.kwargs.width is a column of a custom model's runs: it was refused as no config key
    rep.check_measure({"fn": "final", "arm": "a", "where": {"model.kwargs.width": 64, "layer": 3}}, ["a"])
    with pytest.raises(GradflowError, match="where key 'model.widht' is not a config key"):
        rep.check_measure({"fn": "final", "arm": "a", "where": {"model.widht": 64}}, ["a"])


def test_a_papers_place_may_be_written_out():
    # "Figure 7" was refused as naming no figure: only abbreviations counted
    for where in ("Figure 7", "Section 4.1", "Figures 6-7", "Eqs. 3-4", "Theorem 1", "Tab. 2", "Appendix B",
                  "Thm. 1", "Sect. 3", "§3.2", "Table IV", "Eq. (4)"):
        assert rep.claim_source({"text": "t", "source": {"paper": where}}) == ("paper", where)
    # a word alone names no place (the written-out words first let prose through)
    for prose in ("a figurative reading", "the results section", "as the tables report", "a lemma they prove",
                  "see their figures", "the experiments show it"):
        with pytest.raises(GradflowError, match="names no figure"):
            rep.claim_source({"text": "t", "source": {"paper": prose}})


def test_sigmoid_textbooks_references_are_gradflow_theorys_numbers():
    # its claims cite gradflow's theory for numbers the spec writes down (0.236, 0.632, the first/head band):
    # they are that theory's, to the digits shown, so neither the theory nor the spec drifts from the other
    claims = {c["text"].split(":")[0] + (": ratio" if "head" in c["text"] else ""): c["expect"]
              for c in rep.Spec.load("sigmoid-textbook").claims}
    for sw2 in (1.0, 16.0):
        factor = math.sqrt(theory.point("sigmoid", sw2, 0.0).chi1)
        assert claims[f"σ_w² = {sw2:g}"]["approx"] == pytest.approx(factor, abs=5e-4), sw2
    low, high = claims["σ_w² = 1: ratio"]["between"]
    assert low < theory.point("sigmoid", 1.0, 0.0).grad_ratio(10) < high
    assert high / low == pytest.approx(4)  # (a factor 2 either way, as its tolerance says)


def test_user_overrides_replace_the_arms_values_for_the_same_key():
    spec = rep.Spec.load("sigmoid-textbook")
    merged = spec.overrides("init", "quick", ["init.sw2=2.0", "hydra/launcher=joblib"])
    assert "init.sw2=2.0" in merged and "init.sw2=1.0,16.0" not in merged
    assert "model.width=300" in merged and "model.width=500" not in merged  # the quick scale's own value
    assert merged[-1] == "hydra/launcher=joblib"


@pytest.mark.parametrize("value, expect, ok", [
    (0.1, {"lt": 0.2}, True), (0.3, {"lt": 0.2}, False), (0.2, {"le": 0.2}, True), (3, {"ge": 3}, True),
    (0.5, {"between": [0.4, 0.6]}, True), (0.61, {"between": [0.4, 0.6]}, False), (0.3, {"between": [0.4, 0.6]}, False),
    (0.72, {"approx": 0.707, "tol": 0.03}, True), (0.75, {"approx": 0.707, "tol": 0.03}, False),
    (float("nan"), {"approx": 1.0, "tol": 0.1}, False), (float("nan"), {"gt": 0}, False),
    # strict bounds at the bound: hochreiter1991's {lt: 0.0} on a difference of rates, two identical arms
    (0.2, {"lt": 0.2}, False), (0.2, {"gt": 0.2}, False), (0.0, {"lt": 0.0}, False), (3, {"le": 2.9}, False),
    (0.5, {"between": [0.5, 0.5]}, True), (0.4, {"between": [0.4, 0.6]}, True), (0.6, {"between": [0.4, 0.6]}, True),
])
def test_claim_tests(value, expect, ok):
    assert rep.passes(value, expect)[0] is ok


def _arm(**tables) -> rep.Arm:
    """An arm whose tables are given (each a list of row dicts), as if loaded from its folder."""
    import pandas as pd

    arm = rep.Arm(Path("arm"))
    arm._tables.update({name: pd.DataFrame(rows) for name, rows in tables.items()})
    return arm


def test_min_difference_is_against_the_nearest_reference():
    """A measure minus the closest of several (a depth scale against each of two references): 0.5 beside 0.1
    and 0.4 is 0.1 from the second; the difference to the first, 0.4, would pass a claim it should not."""
    arms = {name: _arm(runs=[{"run": "r", "status": "ok", "final.train_loss": loss}])
            for name, loss in (("a", 0.5), ("b1", 0.1), ("b2", 0.4))}
    measured = rep.compute({"fn": "min_difference", "a": {"fn": "final", "arm": "a"},
                            "b": [{"fn": "final", "arm": "b1"}, {"fn": "final", "arm": "b2"}]}, arms)
    assert measured.value == pytest.approx(0.1)


def _signal_rows(run: str, sw2: float, chi1: float, cut_below: int = 0) -> list[dict]:
    """A run's back-propagated signal over 41 layers, growing by chi1 per layer towards the input (squared),
    0 below layer `cut_below` (a backward pass cut short there)."""
    return [{"run": run, "init.sw2": sw2, "step": 0, "layer": lv, "name": f"linear{lv}", "quantity": "signal_norm",
             "value": 0.0 if lv < cut_below else math.sqrt(chi1) ** (40 - lv)} for lv in range(41)]


@pytest.mark.parametrize("cut_below", [0, 20])
def test_a_crossing_needs_a_factor_on_both_sides(cut_below):
    """χ₁ crosses 1 between σ_w² = 1.5 and 2.0 only where both sides are measured: the side of a backward pass
    cut short has no factor (the fit over its layers left read 1.1), and the other side alone decided the claim."""
    arm = _arm(layers=_signal_rows("a", 1.5, 0.9) + _signal_rows("b", 2.0, 1.1, cut_below))
    measured = rep.compute({"fn": "crossing", "arm": "x", "below": {"init.sw2": 1.5}, "above": {"init.sw2": 2.0}},
                           {"x": arm})
    if cut_below:
        assert math.isnan(measured.value) and not rep.passes(measured.value, {"ge": 0.024})[0]
    else:
        assert measured.value == pytest.approx(0.1) and rep.passes(measured.value, {"ge": 0.024})[0]


@pytest.mark.parametrize("schedule", [["optim.warmup=7", "optim.schedule=cosine"], ["optim.warmup=7"],
                                      ["optim.schedule=step", "optim.milestones=[5]", "optim.gamma=0.1"]])
def test_the_rate_reached_of_a_run_recorded_before_opt_lr_is_its_schedules(tmp_path, schedule):
    # xiong2020's warm-up arms reused from a version that logged no opt/lr read no value, and its claim FAILed
    import pandas as pd

    from gradflow import store
    from tests.conftest import execute_job

    job = execute_job(tmp_path, "data=gaussian", "data.n_train=64", "data.n_test=16", "data.dim=8", "model.width=8",
                      "model.depth=2", "train.batch_size=16", "train.steps=12", "train.eval_every=4", "optim.lr=0.5",
                      "threads=1", *schedule, name="lr")
    logged = rep.lr_reached(rep.Arm(tmp_path / "lr")).value
    metrics = pd.read_parquet(job / store.METRICS_FILE)
    assert logged == pytest.approx(float(metrics[metrics["metric"] == "lr"].sort_values("step")["value"].iloc[-1]))
    store.write_table(job / store.METRICS_FILE, metrics[metrics["metric"] != "lr"].reset_index(drop=True))
    assert rep.lr_reached(rep.Arm(tmp_path / "lr")).value == pytest.approx(logged, rel=1e-6)


def test_a_gradient_norm_gone_nan_is_an_infinite_spike_not_the_largest_finite_one():
    """A run whose logged gradient norm turns NaN exploded: its spike is inf, so `largest norm < 100` FAILs; read
    as its largest finite norm (5x the first) it passed."""
    rows = [{"run": "r", "split": "opt", "metric": "grad_norm", "step": step, "value": value}
            for step, value in enumerate((1.0, 5.0, float("nan")))]
    measured = rep.compute({"fn": "grad_spike", "arm": "x"}, {"x": _arm(metrics=rows)})
    assert measured.value == math.inf and not rep.passes(measured.value, {"lt": 100})[0]
    finite = [dict(r, value=v) for r, v in zip(rows, (1.0, 5.0, 2.0))]
    assert rep.compute({"fn": "grad_spike", "arm": "x"}, {"x": _arm(metrics=finite)}).value == pytest.approx(5.0)


def test_reach_is_the_share_of_runs_that_get_below_the_level():
    """One of three seeds gets its train loss below 1.5: a share of 1/3, each run's own 1 or 0 in run order (a
    claim that every seed trains, ge 1.0, must fail; the largest per run, 1.0, would pass it)."""
    rows = [{"run": run, "split": "train", "metric": "loss", "step": step, "value": value}
            for run, curve in (("s0", (2.3, 1.2)), ("s1", (2.3, 2.0)), ("s2", (2.3, 1.9))) for step, value in enumerate(curve)]
    measured = rep.compute({"fn": "reach", "arm": "x", "below": 1.5}, {"x": _arm(metrics=rows)})
    assert measured.value == pytest.approx(1 / 3) and measured.per_run == [1.0, 0.0, 0.0]
    assert not rep.passes(measured.value, {"ge": 1.0})[0]


def _layers(values_by_step: dict, quantity: str) -> list[dict]:
    """A layers table's rows of one run: `quantity`'s values per layer at each step."""
    return [{"run": "r", "step": step, "layer": layer, "name": f"l{layer}", "quantity": quantity, "value": v}
            for step, values in values_by_step.items() for layer, v in enumerate(values)]


def test_growth_factor_fits_the_bulk_per_layer_or_per_block():
    # act_std doubling over layers 4-6 only: trim=4 fits a factor 2 exactly (the trim's 1.0s taken in: 1.15)
    arm = _arm(layers=_layers({0: [2.0 ** n if 4 <= n <= 6 else 1.0 for n in range(11)]}, "act_std"))
    assert rep.growth_factor(arm, trim=4).value == pytest.approx(2.0, rel=1e-12)
    assert rep.growth_factor(arm, trim=4, per=2).value == pytest.approx(4.0, rel=1e-12)
    assert rep.growth_factor(arm, trim=4, squared=True).value == pytest.approx(4.0, rel=1e-12)


def test_hidden_median_is_over_the_hidden_layers_at_the_last_step():
    # 1, 2, 10 between the input layer's 100 and the head's 1000: 2 (with the head, 6; the mean, 4.33; step 0, 7)
    arm = _arm(layers=_layers({0: [7.0] * 5, 5: [100.0, 1.0, 2.0, 10.0, 1000.0]}, "grad_norm"))
    assert rep.hidden_median(arm).value == 2.0


def test_a_lag_ratio_over_seeds_is_their_geometric_mean():
    """Two runs whose lag-3 ratios are 1e-8 and 1e-10: their geometric mean, 1e-9, said so under the value;
    the arithmetic mean, 5.05e-9, is the larger run's (hochreiter1991's quick seeds straddled its 1e-8 bound,
    and the mean passed on one seed's pull). A run at 0 makes it 0 (a floor fails it), as the mean did not."""
    def run(name: str, ratio: float) -> list[dict]:
        values = [0.5, ratio, 0.5, 1.0, 9.0]  # (time steps 0-3, then the head T = 4: lag 3 is t = 1 over t = 3)
        return [dict(row, run=name) for row in _layers({0: values}, "signal_norm")]

    m = rep.lag_ratio(_arm(layers=run("a", 1e-8) + run("b", 1e-10)), k=3)
    assert m.value == pytest.approx(1e-9, rel=1e-9) and m.spread() == "[1e-10, 1e-08] over 2 runs, geometric mean"
    assert rep.lag_ratio(_arm(layers=run("a", 1e-8) + run("b", 0.0)), k=3).value == 0.0


def test_lags_through_time_are_against_the_last_time_step_not_the_head():
    """Ten time steps whose signal halves per step back from the last (t = 9), then the head (123): the
    signal k steps back over the last step's is 0.5^(k-1), its log-rate fitted over k = 1..kmax."""
    steps = 10
    values = [0.5 ** (steps - 1 - t) for t in range(steps)] + [123.0]
    assert rep.lag_ratio(_arm(layers=_layers({0: values}, "signal_norm")), k=3).value == pytest.approx(0.25)
    values[steps - 5] *= 10.0  # lag 5 off the exponential: over k = 1..5 the slope is ln 0.5 + 0.2 ln 10
    rate = rep.lag_rate(_arm(layers=_layers({0: values}, "signal_norm")), kmax=5).value
    assert rate == pytest.approx(math.log(0.5) + 0.2 * math.log(10.0), rel=1e-9)
    values[steps - 3] = 0.0  # a backward pass cut short at lag 3: no rate
    assert math.isnan(rep.lag_rate(_arm(layers=_layers({0: values}, "signal_norm")), kmax=5).value)
    # a state detached from the graph at lag 3: the steps before it have no rows at all (their hooks never ran),
    # which read as no ratio and no rate, each claim on them failed (it was a KeyError that stopped the check)
    cut = [row for row in _layers({0: values}, "signal_norm") if row["layer"] > steps - 3]
    assert math.isnan(rep.lag_ratio(_arm(layers=cut), k=5).value)
    assert math.isnan(rep.lag_rate(_arm(layers=cut), kmax=5).value)
    # a lag past the sequence's start (data.T=50 against a lag of 100): no value either, not a KeyError
    values = [0.5 ** (steps - 1 - t) for t in range(steps)] + [123.0]
    assert math.isnan(rep.lag_ratio(_arm(layers=_layers({0: values}, "signal_norm")), k=20).value)
    assert math.isnan(rep.lag_rate(_arm(layers=_layers({0: values}, "signal_norm")), kmax=20).value)


def test_ratio_is_a_over_b_and_says_why_it_has_none():
    arms = {name: _arm(runs=[{"run": "r", "status": "ok", "final.train_loss": loss}])
            for name, loss in (("a", 0.5), ("b", 2.0), ("none", math.nan), ("zero", 0.0))}

    def ratio(a: str, b: str) -> rep.Measured:
        return rep.compute({"fn": "ratio", "a": {"fn": "final", "arm": a}, "b": {"fn": "final", "arm": b}}, arms)

    assert ratio("a", "b").value == pytest.approx(0.25)
    none = ratio("none", "b")
    assert math.isnan(none.value) and none.note == "no value in the 1 run of arm none", none.note
    # over 0 (an LSTM that keeps no error at all, 0 over 0): no value, which FAILs any bound (it raised)
    for a in ("zero", "a"):
        over = ratio(a, "zero")
        assert math.isnan(over.value) and over.note == "its divisor is 0", over.note
        assert not rep.passes(over.value, {"lt": 0.01})[0]


def test_tolerances_that_tell_a_broken_mechanism_apart():
    """he2015: Kaiming's init keeps the signal level within its claim's band, and a gain 25% off in
    sigma_w^2 (sqrt(0.75), sqrt(1.25) per layer) falls outside it; backprop-vs-fd holds every agreement
    claim to gradcheck's own bound, TOL (a looser bound passed a wrong backward off by 1e-4)."""
    from gradflow import gradcheck

    (kaiming,) = [c["expect"] for c in rep.Spec.load("he2015").claims if c["measure"]["fn"] == "layer_factor"
                  and c["measure"]["where"]["init.name"] == "kaiming_normal"]
    for per_layer in (math.sqrt(0.75), math.sqrt(1.25)):
        assert not rep.passes(per_layer, kaiming)[0], (per_layer, kaiming)
    assert rep.passes(1.0, kaiming)[0]
    bounds = [c["expect"] for c in rep.Spec.load("backprop-vs-fd").claims if "relative error" in c["text"]]
    assert bounds and all(b == {"lt": gradcheck.TOL} for b in bounds), bounds


def test_a_mean_over_runs_one_of_which_has_no_value_has_none_and_fails_its_claim():
    """A diverged seed's missing value must not drop out of the mean (the others alone could pass the
    claim); the spread and standard error still read the finite values."""
    m = rep._mean([1.0, math.nan, 3.0])
    assert math.isnan(m.value) and not rep.passes(m.value, {"lt": 10})[0]
    assert m.se == pytest.approx(1.0) and "[1, 3] over 3 runs" in m.cell()
    assert rep._mean([1.0, 3.0]).value == 2.0 and math.isnan(rep._mean([]).value)


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


def test_ctrl_c_outside_a_sweep_says_what_is_kept(cli, monkeypatch, tmp_path):
    # a Ctrl-C between arms or while the claims are checked (run_plan takes one inside a sweep): one line
    # saying the finished runs are kept and how to go on, exit 130; Typer's own exit 130 said nothing
    def stopped(names, *args, on_planned, **kwargs):  # (a generator, as rep.runs is)
        on_planned(names[0])  # (every arm planned, its header printed: then the Ctrl-C)
        raise KeyboardInterrupt
        yield

    monkeypatch.setattr(rep, "runs", stopped)
    out = cli("reproduce", "he2015", "--quick", f"results={tmp_path}")
    assert out.exit_code == 130, out.output
    assert "interrupted: he2015's finished runs are kept; rerun the same command" in " ".join(out.output.split())

    def planning(*args, **kwargs):  # (`reproduce all` plans every experiment first: it said "all's finished runs")
        raise KeyboardInterrupt
        yield

    monkeypatch.setattr(rep, "runs", planning)
    out = cli("reproduce", "all", "--quick", f"results={tmp_path}")
    assert out.exit_code == 130 and out.stderr.strip() == "interrupted while planning, before any run; nothing changed"


def test_no_run_or_sweep_goes_where_reproduce_keeps_its_studies_and_one_there_is_said_to_be_in_its_way(cli,
                                                                                                       tmp_path):
    # `gradflow run name=reproduce` was accepted, and every `gradflow reproduce` under that results folder then
    # failed saying name=reproduce/he2016/depth (a name= never typed, which reproduce refuses) was inside a folder
    # of runs
    results = tmp_path / "results"
    small = ["data=gaussian", "data.n_train=64", "data.n_test=32", "data.dim=8", "model.width=8", "train.steps=2",
             "train.batch_size=32", "train.eval_every=2", f"results={results}"]
    for args in (["run", *small, "name=reproduce"], ["run", *small, "name=reproduce/he2016/"],
                 ["sweep", *small, "model.depth=2,3", "--name", "reproduce"],
                 ["sweep", *small, "model.depth=2,3", "name=reproduce/mine"],
                 ["sweep", *small, "model.depth=2,3", "--name", "reproduce/he2016/depth"]):  # (no arm there yet)
        out = cli(*args)
        name = args[-1] if args[-2] != "--name" else f"--name {args[-1]}"
        assert out.exit_code == 1 and " ".join(out.stderr.split()) == (
            f"error: {name} is refused: {results / 'reproduce'}/ is where `gradflow reproduce` keeps its studies, "
            "and runs there would be in their way; give another name"), out.output
    assert not results.exists()
    # (an arm that is there is the reproduction's own: its command, as REPORT.md gives it, reruns it: see
    # test_report_md_gives_each_arms_command_as_run)
    # one there from before (a gradflow that took it; here copied there): what is in the way, and what to do
    assert cli("run", *small, "name=mine").exit_code == 0
    (results / "reproduce").mkdir()
    run = next((results / "mine").iterdir())
    shutil.copytree(run, results / "reproduce" / run.name)
    out = cli("reproduce", "he2016", "--quick", f"results={results}")
    assert out.exit_code == 1 and " ".join(out.stderr.split()) == (
        f"error: {results / 'reproduce'} is in the way of gradflow reproduce, which keeps its studies in "
        f"{results / 'reproduce'}/: it is a folder of 1 run (gradflow run name=...), no reproduction; move or "
        f"rename it (mv {results / 'reproduce'} {results / 'ANOTHER_NAME'}) and reproduce again, or give "
        "results=FOLDER"), out.output
    shutil.rmtree(results / "reproduce" / run.name)
    assert cli("sweep", *small, "model.depth=2,3", "--name", "s").exit_code == 0  # a sweep as an experiment's folder
    shutil.copytree(results / "s", results / "reproduce" / "he2016-quick")
    out = cli("reproduce", "he2016", "--quick", f"results={results}")
    assert out.exit_code == 1 and " ".join(out.stderr.split()).startswith(
        f"error: {results / 'reproduce' / 'he2016-quick'} is in the way of gradflow reproduce, which keeps its "
        f"studies in {results / 'reproduce'}/: it is a sweep's folder (gradflow sweep --name ...), no "
        "reproduction; move or rename it"), out.output
    assert sorted(p.name for p in (results / "reproduce" / "he2016-quick").iterdir()) == sorted(
        p.name for p in (results / "s").iterdir())


def test_list_names_every_experiment(cli):
    out = cli("reproduce", "--list")
    assert out.exit_code == 0
    for name in rep.names():
        assert name in out.output


def test_every_claim_names_its_source():
    """Every claim of every spec: source paper (with a figure, table or section), theory (the formula) or
    design (the reason); read from the raw YAML, independently of Spec.load's own check."""
    import re

    from omegaconf import OmegaConf

    place = re.compile(r"Fig|Table|Sec|Eq|Algorithm|Exp|§")
    for name in rep.names():
        raw = OmegaConf.to_container(OmegaConf.load(rep.SPEC_DIR / f"{name}.yaml"))
        for claim in raw["claims"]:
            src = claim.get("source")
            assert isinstance(src, dict) and len(src) == 1, (name, claim["text"])
            (kind, where), = src.items()
            assert kind in ("paper", "theory", "design") and isinstance(where, str) and len(where) > 5, (name, claim)
            if kind == "paper":
                assert place.search(where), (name, claim["text"], where)
            assert claim.get("reference"), (name, claim["text"])


@pytest.mark.parametrize("source, message", [
    (None, "must be one of"), ({"paper": "the paper says so"}, "names no figure"), ({"design": ""}, "needs its"),
    ({"opinion": "x"}, "choices: paper, theory, design"), ({"paper": "Fig. 2", "design": "x"}, "must be one of"),
])
def test_a_claim_without_a_proper_source_is_refused(source, message):
    claim = {"text": "t", "measure": {"fn": "final", "arm": "a"}, "expect": {"lt": 1}}
    if source is not None:
        claim["source"] = source
    with pytest.raises(GradflowError, match=message):
        rep.claim_source(claim)
    assert rep.claim_source(claim | {"source": {"paper": "Table 6"}}) == ("paper", "Table 6")


@pytest.fixture(scope="module")
def sigmoid(tmp_path_factory):
    results = tmp_path_factory.mktemp("results")
    return results, reproduce("sigmoid-textbook", results)


def test_report_md_gives_each_arms_command_as_run(sigmoid, tmp_path):
    # "the exact sweep commands": each arm's line is its sweep's own command, --name included (without
    # it, pasted, the sweep wrote into results/multirun-...): run again, it finds every run finished
    results, outcome = sigmoid
    lines = [ln for ln in outcome.report.read_text().splitlines() if ln.startswith("- `") and "gradflow sweep" in ln]
    assert len(lines) == len(outcome.spec.arms), lines
    for line in lines:
        arm, command = re.fullmatch(r"- `([^`]+)`: `([^`]+)`", line).groups()
        assert f"--name reproduce/sigmoid-textbook-quick/{arm}" in command, command
    args = shlex.split(command)[1:]  # the last arm's, pasted
    out = subprocess.run([sys.executable, "-m", "gradflow", *args], capture_output=True, text=True, timeout=300,
                         cwd=Path(__file__).parents[1], env={**os.environ, "COLUMNS": "120"})
    assert out.returncode == 0, out.stdout + out.stderr
    assert re.search(r"sigmoid-textbook-quick/\w+: (\d+) runs over .*; \1 already finished, skipped",
                     " ".join(out.stdout.split())), out.stdout


def test_sigmoid_textbook_quick_passes(sigmoid):
    _, outcome = sigmoid
    assert len(outcome.claims) == 3 and outcome.passed, verdicts(outcome)
    assert [r.source for r in outcome.claims] == ["theory"] * 3
    # the theory column is gradflow.theory's: sqrt(chi_1) of sigmoid at sw2 = 1 and 16, sb2 = 0
    assert outcome.claim("σ_w² = 1: per-layer").measured.value == pytest.approx(
        math.sqrt(theory.point("sigmoid", 1.0, 0.0).chi1), abs=0.01)
    assert outcome.claim("σ_w² = 16: per-layer").measured.value == pytest.approx(
        math.sqrt(theory.point("sigmoid", 16.0, 0.0).chi1), abs=0.02)
    figures_drawn(outcome, ["profile-signal-init"])
    assert outcome.report.is_file()


def test_sigmoid_textbook_with_tanh_fails(sigmoid):
    # tanh instead of sigmoid: tanh' is 1 at the origin, not 0.25, so the per-layer factor is far from 0.236
    results, _ = sigmoid
    broken = reproduce("sigmoid-textbook", results, "model.activation=tanh")
    assert not broken.claim("σ_w² = 1: per-layer").passed and not broken.claim("σ_w² = 16: per-layer").passed
    assert not broken.claim("first layer / head").passed
    # several experiments end on one line saying the whole (reproduce all printed none after ~1200 lines)
    fails = sum(not c.passed for c in broken.claims)
    assert rep.overall([sigmoid[1], broken]) == (f"1 of 2 experiments pass every claim; {6 - fails} of 6 claims "
                                                 f"pass; FAIL: sigmoid-textbook ({fails})")


def test_sigmoid_textbook_one_layer_short_fails_its_ratio(sigmoid):
    # 9 layers instead of 10: the per-layer factors still hold, and the first/head ratio, ~2e-6, is out of its
    # band (a band up to 1e-3 passed it)
    results, _ = sigmoid
    short = reproduce("sigmoid-textbook", results, "model.depth=9")
    assert short.claim("σ_w² = 1: per-layer").passed, verdicts(short)
    ratio = short.claim("first layer / head")
    assert not ratio.passed and 1.5e-6 < ratio.measured.value < 4e-6, verdicts(short)


def test_cli_shows_the_source_column_and_exits_1_on_a_fail(cli, sigmoid):
    results, _ = sigmoid  # after the tanh test: the CLI reuses its finished runs
    out = cli("reproduce", "sigmoid-textbook", "--quick", "model.activation=tanh", "threads=1", f"results={results}")
    assert out.exit_code == 1 and "FAIL" in out.output
    assert "source" in out.output and "theory: √χ₁" in out.output
    # the verdict line names the failing claims; claims.json and REPORT.md record the override
    said = " ".join(out.output.split())
    assert "sigmoid-textbook: 0 of 3 claims pass; FAIL: σ_w² = 1: per-layer factor" in said
    # each failing claim with how close it came (the values were in the table above only)
    verdict = said[said.index("sigmoid-textbook: 0 of 3 claims pass"):]
    outcome = reproduce("sigmoid-textbook", results, "model.activation=tanh")  # (the same runs, reused)
    for r in outcome.claims:
        assert f"{r.text} (measured {fmt(r.measured.value, 3)}, test {r.test})" in verdict, (r.text, verdict)
    root = rep.root_for("sigmoid-textbook", "quick", str(results))
    record = json.loads(rep.store.claims_path(root).read_text())
    assert record["overrides"] == ["model.activation=tanh", "threads=1"] and record["passed"] == 0
    report = (root / "REPORT.md").read_text()
    assert "**Overrides:** `model.activation=tanh threads=1`" in report and "0 of 3 claims pass." in report


def test_results_given_twice_puts_claims_beside_the_runs_the_last_one_holds(cli, sigmoid, tmp_path):
    # the runs took the last results= (as Hydra composes), the claims and REPORT.md the first one
    results, _ = sigmoid
    first = tmp_path / "first"
    out = cli("reproduce", "sigmoid-textbook", "--quick", "model.activation=tanh", "threads=1", f"results={first}",
              f"results={results}")
    assert out.exit_code == 1 and "0 of 3 claims pass" in out.output
    assert rep.store.claims_path(rep.root_for("sigmoid-textbook", "quick", str(results))).exists()
    assert not first.exists()


def test_runs_redone_under_a_reproduction_take_its_old_verdicts_away_first(tmp_path):
    # a forced rerun whose check then raised, or that a Ctrl-C stopped, left claims.json and REPORT.md of the
    # runs it replaced: the report page read "3 of 3 claims pass" beside runs that were never checked
    root = reproduce("sigmoid-textbook", tmp_path / "results").root  # (its own: other tests rerun the module's)
    (root / rep.store.REPORT_HTML).write_text("<html></html>")

    def stopped(plan):  # (an error as the first run to redo began; a Ctrl-C takes the same way out)
        if plan.to_run:
            raise OSError("the machine went away")

    def outcomes(force: bool):
        return list(rep.runs(["sigmoid-textbook"], "quick", ["threads=1", f"results={tmp_path / 'results'}"],
                             force=force, launch=stopped))

    before = torch.get_num_threads()
    try:
        assert len(outcomes(force=False)) == 1  # (every run finished: none launched, the verdicts rewritten)
        assert rep.store.claims_path(root).exists() and (root / rep.store.REPORT_HTML).exists()
        with pytest.raises(OSError, match="went away"):
            outcomes(force=True)
    finally:
        torch.set_num_threads(before)
    assert not [p.name for p in root.iterdir() if p.name in ("claims.json", "REPORT.md", "report.html")]
    assert (root / "init").is_dir()  # (the runs themselves are the sweep's to keep or redo)


def test_a_replacement_that_does_not_build_leaves_the_verdicts_of_the_runs_it_would_replace(tmp_path, monkeypatch):
    # the verdicts went before the replacement's build was checked: refused ("does not build; no run was
    # replaced": a custom model's new arguments, a size no memory holds), it left the runs without their verdicts
    from gradflow import sweep as sweep_mod

    root = reproduce("sigmoid-textbook", tmp_path / "results").root
    before = rep.store.claims_path(root).read_text()

    def refused(plan):
        raise GradflowError(f"{plan.root} holds a finished run of other settings, and its replacement does not "
                            "build: ...; no run was replaced")

    monkeypatch.setattr(sweep_mod, "check_replacement_builds", refused)
    with pytest.raises(GradflowError, match="no run was replaced"):
        reproduce("sigmoid-textbook", tmp_path / "results", "model.width=16")
    assert rep.store.claims_path(root).read_text() == before and (root / "REPORT.md").is_file()


def test_an_override_that_removes_a_figures_key_still_checks_every_claim(sigmoid):
    # init.sw2=1.0 in both rows of the init arm: the profile figure, coloured by init.sw2, has nothing to
    # colour by. It used to stop the reproduction before any claim was checked; now the figure is named as
    # not drawn, with why, and the claims are checked and written. The sigma_w^2 = 16 claim has no run and
    # says so; claims.json stays strict JSON (its value is null, not NaN)
    results, _ = sigmoid
    outcome = reproduce("sigmoid-textbook", results, "init.sw2=1.0")
    assert outcome.figures == [] and len(outcome.not_drawn) == 1
    assert outcome.not_drawn[0].startswith("profile-signal-init: color='init.sw2' is not a swept key")
    assert outcome.claim("σ_w² = 1: per-layer").passed and not outcome.claim("σ_w² = 16: per-layer").passed
    assert outcome.claim("σ_w² = 16: per-layer").measured.note == "no run of arm init has init.sw2=16"
    text = rep.store.claims_path(outcome.root).read_text()
    values = [c["value"] for c in json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in claims.json"))
              ["claims"]]
    assert values[2] is None and all(isinstance(v, float) for v in values[:2])
    assert "- not drawn: profile-signal-init: color='init.sw2'" in outcome.report.read_text()


def test_an_arm_reads_no_stale_run_of_a_planned_name(cli, tmp_path):
    # a point whose settings changed keeps its old run, stale, under the planned name until its replacement
    # finishes (and when the replacement fails): the claims' runs table took it in beside the current runs,
    # while their layer and metric tables left it out
    results = tmp_path / "results"
    out = cli("sweep", "data=gaussian", "data.n_train=64", "data.n_test=16", "data.dim=8", "model.width=8",
              "model.depth=2", "train.steps=2", "train.batch_size=16", "seed=0,1", f"results={results}",
              "--name", "arm")
    assert out.exit_code == 0, out.output
    spec = results / "arm" / "sweep.yaml"
    text = spec.read_text()
    old = re.search(r"seed=1: (\w+)", text).group(1)
    spec.write_text(text.replace(old, "0" * len(old)))  # (the plan's settings of seed=1 are no longer the run's)
    arm = rep.Arm(results / "arm", ["seed=0", "seed=1"])
    assert list(arm.load("runs")["run"]) == ["seed=0"]
    assert set(arm.load("layers")["run"]) == {"seed=0"}
    assert rep.MEASURES["final"](arm, metric="train_loss").per_run == \
        [pytest.approx(rep.store.read_run(results / "arm" / "seed=0")["final"]["train_loss"])]


def test_steps_to_measure_is_the_first_evaluation_reaching_the_threshold(cli, tmp_path):
    results = tmp_path / "results"
    out = cli("sweep", "data=gaussian", "data.n_train=256", "data.n_test=128", "data.dim=16", "model.width=16",
              "model.depth=2", "train.steps=30", "train.batch_size=32", "train.eval_every=5", "seed=0,1",
              f"results={results}", "--name", "speed")
    assert out.exit_code == 0, out.output
    arm = rep.Arm(results / "speed")
    metrics = arm.table("metrics", None)
    start = metrics[(metrics["split"] == "train") & (metrics["metric"] == "loss") & (metrics["step"] == 0)]
    threshold = float(start["value"].min()) - 0.01  # below every run's initial loss, so step 0 never counts
    by_hand = []
    for _, g in metrics.groupby("run"):
        loss = g[(g["split"] == "train") & (g["metric"] == "loss")].sort_values("step")
        hit = loss[loss["value"] <= threshold]
        by_hand.append(float(hit["step"].iloc[0]) if len(hit) else math.inf)
    got = rep.MEASURES["steps_to"](arm, metric="train_loss", op="<=", threshold=threshold)
    assert got.per_run == by_hand and all(0 < s <= 30 for s in by_hand), by_hand
    never = rep.MEASURES["steps_to"](arm, metric="train_loss", op="<=", threshold=-1.0)
    assert never.per_run == [math.inf, math.inf]


def test_several_values_are_refused_only_where_an_arm_would_pool_them_as_seeds():
    # an arm's runs are judged together as its seeds: tanh,linear in glorot2010 was one net; but a key an arm
    # sweeps itself (he2016's model.depth, model.skip) is one its claims pick runs by, and may take other values
    he2016 = rep.Spec.load("he2016")
    for ok in (["model.depth=7,19,55"], ["model.skip=none,residual"], ["seed=0,1,2"], ["optim.lr=0.05"]):
        rep._pooled(he2016, "quick", ok)
    with pytest.raises(GradflowError, match=r"^optim.lr=0.01,0.02 is several values, and he2016's arm depth judges "
                                            r"its runs together as seeds"):
        rep._pooled(he2016, "quick", ["optim.lr=0.01,0.02"])
    with pytest.raises(GradflowError, match=r"^model.activation=tanh,linear is several values, and glorot2010's "
                                            r"arms init and train judge their runs together as seeds"):
        rep._pooled(rep.Spec.load("glorot2010"), "quick", ["model.activation=tanh,linear"])


def test_a_group_chosen_in_place_of_an_arms_own_is_named_in_the_error(cli, tmp_path):
    # he2016's model.variant=batchnorm beside model=mlp was refused as if the user had typed the variant
    out = cli("reproduce", "he2016", "--quick", "model=mlp", f"results={tmp_path}")
    assert out.exit_code == 1 and out.stderr.strip() == ("error: he2016's arm depth with model=mlp for its "
                                                         "model=resnet: model.variant='batchnorm' is not allowed; "
                                                         "choices: standard, fixup"), out.output
    out = cli("reproduce", "he2016", "--quick", "model.variant=nope", f"results={tmp_path}")  # (a key: as typed)
    assert out.stderr.strip().startswith("error: model.variant='nope' is not allowed"), out.output


def test_signal_ratio_error_reads_hidden_layers_against_theory_and_no_other(results):
    # the theory's factors are the bulk's σ_w²: a ratio through the head's own weights, or with num after den
    # (an empty product, read against 1), was measured against a prediction that is not one
    from tests.conftest import execute_job

    job = execute_job(results, "data=gaussian", "data.dim=64", "model.width=256", "model.depth=6",
                      "model.activation=tanh", "init=xavier_normal", "train.steps=0", "train.batch_size=256",
                      "data.n_train=256", "threads=1", name="theory")
    arms = {"init": rep.Arm(job.parent)}
    measured = rep.compute({"fn": "signal_ratio_error", "arm": "init", "num": 1, "den": 5}, arms)
    assert measured.value < 0.05 and not measured.note, measured
    # its defaults, the first layer over the last hidden one (den=-1, the head, gave nothing)
    assert rep.compute({"fn": "signal_ratio_error", "arm": "init"}, arms).value < 0.05
    for num, den in ((5, 1), (1, -1), (1, 6)):
        measured = rep.compute({"fn": "signal_ratio_error", "arm": "init", "num": num, "den": den}, arms)
        assert math.isnan(measured.value) and "num before den" in measured.note, (num, den, measured)


def test_ls_of_a_cut_short_reproduction_gives_the_reproduce_command_that_resumes_it(cli, tmp_path, monkeypatch):
    # `ls` gave the arm's own `gradflow sweep` command, which runs the arm and checks no claim; the
    # reproduction's command, with the overrides it was given, resumes every arm and checks them
    monkeypatch.setenv("COLUMNS", "200")
    given = ["model.width=24", "data.dim=24"]
    out = cli("reproduce", "sigmoid-textbook", "--quick", *given, f"results={tmp_path}")
    assert "sigmoid-textbook: claims" in out.output, out.output
    root = tmp_path / "reproduce" / "sigmoid-textbook-quick"
    shutil.rmtree(root / "init" / "init.sw2=16.0,seed=2")  # (a run the sweep never began: cut short before it)
    listed = " ".join(cli("ls", root / "init").output.split())
    command = re.search(r"`(gradflow reproduce [^`]*)` runs them, then checks the experiment's claims", listed)
    assert command, listed
    words = shlex.split(command[1])
    assert words[:4] == ["gradflow", "reproduce", "sigmoid-textbook", "--quick"], words
    assert sorted(words[4:]) == sorted([*given, f"results={tmp_path}"]), " ".join(words)
    assert rep.resume_command(root / "init") == command[1]
    again = cli(*words[1:])  # (from another folder: its results folder is absolute)
    said = " ".join(again.output.split())
    assert "5 already finished, skipped" in said and "1 run in" in said, said
    assert "sigmoid-textbook: claims" in said and re.search(r"sigmoid-textbook: (\d of )?3 claims pass", said), said
    assert "not run yet" not in cli("ls", root).output
    assert (root / "init" / "init.sw2=16.0,seed=2" / "run.json").is_file()


def test_no_resume_command_where_the_arms_were_given_two_values_of_a_key(tmp_path):
    # arms run by hand with seed=7 and seed=9 (or a spec changed since): the command gave both, the last winning,
    # and the other arm's runs went stale; `ls` then gives each arm's own sweep command
    from omegaconf import OmegaConf

    spec, root = rep.Spec.load("pascanu2013"), tmp_path / "reproduce" / "pascanu2013-quick"

    def ran(seeds: dict[str, int]) -> str | None:
        for arm, seed in seeds.items():
            (root / arm).mkdir(parents=True, exist_ok=True)
            recorded = {"overrides": spec.overrides(arm, "quick", [f"seed={seed}", f"results={tmp_path}"])}
            (root / arm / "sweep.yaml").write_text(OmegaConf.to_yaml(recorded))
        return rep.resume_command(root / "clip")

    assert ran({"through_time": 7, "clip": 7}) == f"gradflow reproduce pascanu2013 --quick seed=7 results={tmp_path}"
    assert ran({"through_time": 7, "clip": 9}) is None


def test_one_command_resumes_every_arm_of_a_reproduction():
    from gradflow.summary import NotRun, not_run_note

    cmd = "gradflow reproduce he2015 --quick results=/r"
    both = not_run_note([NotRun("init", 2, 6, cmd), NotRun("train", 1, 12, cmd)])
    assert both == (f"not run yet: init 2 of 6 runs, train 1 of 12 runs; `{cmd}` runs them, then checks the "
                    "experiment's claims (and keeps the runs done)")
    other = not_run_note([NotRun("a", 2, 6, cmd), NotRun("b", 1, 12, "gradflow sweep x=1,2 --name b")])
    assert other.endswith("`gradflow ls SWEEP` gives the command that runs them")
    assert rep.resume_command(Path("/r/studies/he2015-quick/train")) is None  # (no reproduction's folder)
    assert rep.resume_command(Path("/r/reproduce/he2015-quick/nosuch")) is None  # (no arm of it)
