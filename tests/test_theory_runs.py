"""Measured vs predicted chi_1 through real runs at initialization, and `ls` showing both."""

from __future__ import annotations

import json

import pytest

import gradflow
from gradflow import theory

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
