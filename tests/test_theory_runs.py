"""Measured vs predicted chi_1 through real runs at initialization, and `ls` showing both."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

import gradflow
from gradflow import store, theory
from tests.commands import piped

WIDE = ["data=gaussian", "data.dim=64", "data.n_train=256", "model.depth=60", "model.width=500", "train.steps=0",
        "train.batch_size=256", "model.activation=tanh", "init=meanfield", "init.sb2=0.05"]
SW2 = (1.0, 1.5, 1.761, 2.5, 4.0)


def test_chi1_measured_within_3_percent_of_theory_across_the_edge_of_chaos(cli, results):
    out = cli("sweep", *WIDE, f"init.sw2={','.join(map(str, SW2))}", f"results={results}", "--name", "eoc")
    assert out.exit_code == 0, out.output
    runs = gradflow.load(results / "eoc", table="runs").sort_values("init.sw2")
    assert list(runs["init.sw2"]) == list(SW2)
    for sw2, measured, predicted in zip(runs["init.sw2"], runs["chi1_measured"], runs["chi1_theory"]):
        assert predicted == pytest.approx(theory.point("tanh", sw2, 0.05).chi1)
        assert measured == pytest.approx(predicted, rel=0.03), sw2
    # ordered below the edge, chaotic above: the measured factor crosses 1 between 1.5 and 2.5
    assert runs["chi1_measured"].iloc[1] < 1 < runs["chi1_measured"].iloc[3]

    listed = json.loads(cli("ls", str(results / "eoc"), "--json").output)
    assert all("chi1_measured" in r and "chi1_theory" in r for r in listed)
    table = cli("ls", str(results / "eoc")).output
    assert "chi1 meas" in table and "chi1 theory" in table


def test_no_prediction_no_column(cli, results):
    out = cli("sweep", "data=gaussian", "data.dim=8", "data.n_train=64", "model.width=8", "model.depth=2,3",
              "norm=batchnorm", "train.steps=0", "train.batch_size=64", f"results={results}", "--name", "bn")
    assert out.exit_code == 0, out.output
    runs = gradflow.load(results / "bn", table="runs")
    assert runs["chi1_theory"].isna().all()  # batchnorm is outside the theory: no number rather than a wrong one
    assert "chi1 theory" not in cli("ls", str(results / "bn")).output


GELU = ["data=gaussian", "data.dim=64", "data.n_train=256", "model.depth=60", "model.width=500", "train.steps=0",
        "train.batch_size=256", "model.activation=gelu", "init=meanfield", "init.sw2=2", "init.sb2=0.05"]


def test_a_fit_in_the_transient_is_marked_whichever_side_of_q_star_it_starts():
    # inputs whose variance starts below q* bias the fit the other way: the bias is negative, and its cell lost
    # the "!" that the warning under the table (which counts it) points to
    import pandas as pd

    from gradflow.columns import TRANSIENT_TOL, _fit_cell

    for bias, mark in ((-0.05, "!"), (0.05, "!"), (-TRANSIENT_TOL / 2, ""), (TRANSIENT_TOL / 2, "")):
        assert _fit_cell(pd.Series({"chi1_layers": "3-17", "chi1_transient": bias})) == "15 (3-17)" + mark, bias


def test_ls_warns_when_the_chi1_fit_sits_in_the_length_maps_transient(cli, results):
    """gelu at sw2 = 2, sb2 = 0.05 from unit-variance inputs: q_0 = 2.05 against q* = 0.124, and the length map
    takes ~30 layers to get there, so a fit over layers 3-57 does not read the fixed-point chi_1. Mean field
    predicts the fit high; the measurement is high too (more so: the transient layers also break the
    gradient-independence assumption), and ls says so. Started at q* (data.scale=qstar), no warning."""
    out = cli("sweep", *GELU, "data.scale=1.0,qstar", f"results={results}", "--name", "gelu")
    assert out.exit_code == 0, out.output
    unit, qstar = sorted(json.loads(cli("ls", str(results / "gelu"), "--json").output), key=lambda r: r["start_qstar"])
    measured_bias = unit["chi1_measured"] / unit["chi1_theory"] - 1
    assert measured_bias > 0.05 and unit["chi1_transient"] > 0.05
    assert unit["chi1_layers"] == qstar["chi1_layers"] == "3-57" and qstar["start_qstar"] is True
    assert qstar["chi1_transient"] == 0.0 and qstar["chi1_measured"] == pytest.approx(qstar["chi1_theory"], rel=0.03)
    table = " ".join(cli("ls", str(results / "gelu")).output.split())
    assert "55 (3-57)! " in table and "55 (3-57) q* " in table
    assert "1 run's chi1 fit starts in the length map's transient" in table and "data.scale=qstar" in table
    assert "q*: inputs at the fixed point" in table and "!: still in the length map's transient (see below)" in table
    # at 80 columns too the fits the warning is about show, with their marks and values
    narrow = piped("ls", results / "gelu", columns=80).stdout
    assert "warning: 1 run's" in narrow and re.search(r"\d\.\d+ +55 \(3-57\)!", narrow), narrow
    # the run at q* alone: neither mark is explained where no cell carries it, nor a warning promised "below"
    alone = " ".join(cli("ls", str(results / "gelu"), "--where", "data.scale=qstar").output.split())
    assert "55 (3-57) q* " in alone and "q*: inputs at the fixed point" in alone
    assert "!" not in alone and "see below" not in alone and "warning" not in alone
    # the report page says as much under its table (it showed the marks and explained neither)
    assert cli("report", str(results / "gelu"), "--out", str(results / "gelu.html")).exit_code == 0
    page = (results / "gelu.html").read_text()
    assert "q*: inputs at the fixed point" in page and "!: still in the length map&#x27;s transient" in page
    assert "<p class=warn>warning: 1 run&#x27;s chi1 fit starts in the length map&#x27;s transient" in page


def test_transient_bias_by_hand():
    """Iterate the length map with numpy quadrature, independently of gradflow.theory's integrator, and fit
    the predicted profile log s_l^2 = sum_{k >= l} log(sw2 E[phi'(h_k)^2]) by least squares."""
    from gradflow import summary
    from gradflow.activations import get

    act = get("gelu")
    z, w = np.polynomial.hermite_e.hermegauss(201)
    w = w / w.sum()
    sw2, sb2, q = 2.0, 0.05, 2.0 * 1.0 + 0.05
    local = []
    for _ in range(58):
        local.append(np.log(sw2 * w @ act.dphi(np.sqrt(q) * z) ** 2))
        q = sw2 * w @ act.phi(np.sqrt(q) * z) ** 2 + sb2
    log_sq = [sum(local[k:]) for k in range(3, 58)]
    slope = np.polyfit(np.arange(3, 58), log_sq, 1)[0]
    config = {"model.name": "mlp", "model.activation": "gelu", "init.name": "meanfield", "init.sw2": sw2,
              "init.sb2": sb2, "data.name": "gaussian", "data.scale": 1.0}
    expected = np.exp(-slope) / theory.point("gelu", sw2, sb2).chi1 - 1
    assert summary.transient_bias(config, (3, 57)) == pytest.approx(expected, rel=1e-4)
    assert summary.transient_bias({**config, "data.scale": "qstar"}, (3, 57)) == 0.0
    assert np.isnan(summary.transient_bias({**config, "data.name": "mnist1d"}, (3, 57)))


def test_the_transient_warning_counts_the_runs_and_names_the_worst():
    import pandas as pd

    from gradflow.columns import transient_warning

    runs = pd.DataFrame({"chi1_transient": [0.2, -0.05, 0.004, None]})
    assert transient_warning(runs).startswith("warning: 2 runs' chi1 fits start in the length map's transient "
                                              "(mean-field theory puts the fit up to 20.0% off chi1 at q*)")
    assert transient_warning(runs.iloc[1:]).startswith("warning: 1 run's chi1 fit starts in the length map's "
                                                       "transient (mean-field theory puts the fit up to 5.0% off")
    assert transient_warning(runs.iloc[2:]) == "" and transient_warning(pd.DataFrame({"x": [1]})) == ""


def test_the_transient_warning_advises_the_fixed_point_unless_every_run_off_has_q_star_0():
    import pandas as pd

    from gradflow.columns import limit_only, transient_warning
    from gradflow.config import compose

    runs = []
    # tanh under Xavier (q* = 0: no input scale starts there) and gelu at sw2 = 2 (q* > 0: data.scale=qstar does)
    for overrides in (["model.activation=tanh", "init=xavier_normal"],
                      ["model.activation=gelu", "init=meanfield", "init.sw2=2", "init.sb2=0.05"]):
        flat = store.flatten(compose(["data=gaussian", *overrides]))
        runs.append({**flat, "chi1_theory": theory.predict(flat).chi1, "chi1_transient": 0.2})
    runs = pd.DataFrame(runs)
    assert [limit_only(r) for _, r in runs.iterrows()] == [True, False]
    assert transient_warning(runs.iloc[:1]).endswith("; fit deeper layers (q* = 0: no input starts there)")
    fix = "; start at the fixed point with data.scale=qstar or fit deeper layers"
    assert transient_warning(runs.iloc[1:]).endswith(fix) and transient_warning(runs).endswith(fix)


NARROW_IN = ["data=gaussian", "data.dim=16", "data.n_train=256", "model.depth=30", "model.width=256", "train.steps=0",
             "train.batch_size=256", "model.activation=selu", "init=orthogonal"]


def test_a_narrower_input_layer_starts_the_transient_the_theory_predicts(cli, results):
    """orthogonal (and xavier) give the input layer (data.dim -> model.width) its own sigma_w^2: dim 16 into width
    256 starts selu at q_0 = 1/16, not at its q* = 1. The measured fit is then off chi_1 by the transient
    predicted from that q_0, within the seeds' spread and the 1/width finite-width error; taken from the
    bulk's sigma_w^2, q_0 read 1 = q*, predicted no transient, and no `!` was shown."""
    out = cli("sweep", *NARROW_IN, "seed=0,1,2", f"results={results}", "--name", "narrow")
    assert out.exit_code == 0, out.output
    runs = gradflow.load(results / "narrow", table="runs")
    chi1 = theory.point("selu", 1.0, 0.0).chi1
    assert (runs["chi1_theory"] == chi1).all()
    assert (runs["chi1_transient"] > 0.01).all()  # the `!`: a transient beyond TRANSIENT_TOL
    predicted = chi1 * (1.0 + runs["chi1_transient"].iloc[0])
    measured = runs["chi1_measured"].to_numpy()
    tolerance = 3.0 * measured.std(ddof=1) / np.sqrt(len(measured)) + chi1 / 256
    assert abs(measured.mean() - predicted) < tolerance, (measured, predicted, tolerance)
    assert abs(measured.mean() - chi1) > tolerance  # the transient is there to be seen
    assert re.search(r"\(3-27\)!", cli("ls", str(results / "narrow")).output)


@pytest.mark.parametrize("init", ["init=xavier_normal", "init=orthogonal", "init=kaiming_normal init.mode=fan_out",
                                  "init=meanfield"])
@pytest.mark.parametrize("dim, width", [(16, 256), (256, 64)])  # (wider inputs: orthogonal's min(1, dim/width) is 1)
def test_input_q_is_the_built_input_layers_variance(init, dim, width):
    """theory.input_q against the first layer of the built net (data.dim -> model.width, narrower and wider
    than its inputs): mean over units of z_0^2, within 4 standard errors of the estimate (units x examples
    samples)."""
    import torch

    from gradflow.config import compose
    from gradflow.data import build
    from gradflow.models import build as build_model
    from gradflow.models.init import initialize
    from gradflow.store import flatten

    cfg = compose(["data=gaussian", f"data.dim={dim}", "data.n_train=512", f"model.width={width}", "model.depth=3",
                   "model.activation=tanh", *init.split(), "seed=0"])
    x = build(cfg.data, torch.device("cpu"), 1.0).x_train.float()
    torch.manual_seed(0)
    model = build_model(cfg, tuple(x.shape[1:]), 10)
    initialize(model, cfg.init, "tanh")
    first = model.probe_points[0].layer
    with torch.no_grad():
        z = first(x).double()
    measured = float(z.pow(2).mean())
    sw2, sb2 = theory.equivalent_sw2(flatten(cfg), "tanh")
    d = x.shape[1]  # a unit's squared row norm and an example's ||x||^2 each vary by 2/d relative (Gaussian)
    se = measured * (np.sqrt(2.0 / (d * z.shape[1])) + np.sqrt(2.0 / (d * z.shape[0])))
    assert theory.input_q(flatten(cfg), sw2, sb2) == pytest.approx(measured, abs=4 * se), init


def test_qstar_scale_puts_a_narrower_input_layer_at_the_fixed_point():
    """data.scale=qstar scales the inputs by the input layer's own sigma_w^2: orthogonal dim 16 -> width 256 has
    a sixteenth of the bulk's, and the first layer started at q*/16."""
    import torch

    from gradflow.config import compose
    from gradflow.data import build
    from gradflow.models import build as build_model
    from gradflow.models.init import initialize
    from gradflow.theory import input_scale

    cfg = compose(["data=gaussian", "data.dim=16", "data.n_train=512", "model.width=256", "model.depth=3",
                   "model.activation=tanh", "init=orthogonal", "init.gain=1.2", "data.scale=qstar"])
    x = build(cfg.data, torch.device("cpu"), input_scale(cfg)).x_train.float()
    torch.manual_seed(0)
    model = build_model(cfg, tuple(x.shape[1:]), 10)
    initialize(model, cfg.init, "tanh")
    with torch.no_grad():
        measured = float(model.probe_points[0].layer(x).double().pow(2).mean())
    d = x.shape[1]
    se = measured * (np.sqrt(2.0 / (d * 256)) + np.sqrt(2.0 / (d * x.shape[0])))
    assert measured == pytest.approx(theory.q_star("tanh", 1.44, 0.0), abs=4 * se)


def test_a_qstar_run_listed_from_before_the_input_layers_own_sigma_w2_did_not_start_at_qstar(cli, results):
    """A run made before `transient_rule` scaled data.scale=qstar's inputs by the bulk's sigma_w^2: orthogonal
    dim 16 -> width 64 put selu's first layer at q*/4, not at q* = 1, so it had the transient of a run at
    data.scale=1.0 (the same inputs: q* = 1 = the bulk's sigma_w^2). Listed, it read ` q*` with no transient
    and no `!`, its fit off chi_1 unexplained; it reads as the data.scale=1.0 run does."""
    out = cli("sweep", "data=gaussian", "data.dim=16", "data.n_train=64", "train.batch_size=64", "model.depth=30",
              "model.width=64", "train.steps=0", "model.activation=selu", "init=orthogonal", "data.scale=qstar,1.0",
              f"results={results}", "--name", "before")
    assert out.exit_code == 0, out.output
    for path in (results / "before").glob("*/run.json"):  # as the runs made before the rule were stored
        record = json.loads(path.read_text())
        del record["summary"]["transient_rule"]
        path.write_text(json.dumps(record))
    runs = gradflow.load(results / "before", table="runs").set_index("data.scale")
    assert runs.loc["1.0", "chi1_transient"] > 0.01  # dim 16 into width 64: q_0 = 1/4
    assert runs.loc["qstar", "chi1_transient"] == pytest.approx(runs.loc["1.0", "chi1_transient"], rel=1e-9)
    assert not runs.loc["qstar", "start_qstar"]
    text = cli("ls", str(results / "before")).output
    assert "q*" not in text.split("ratio =")[0] and len(re.findall(r"\(3-27\)!", text)) == 2, text
