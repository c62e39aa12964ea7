"""Gradient propagation at initialization, measured through `gradflow run` itself, against theory.

Mean-field theory: the squared back-propagated signal grows by chi_1 = sw2 E[phi'(sqrt(q*) z)^2] per
layer towards the input. The expected values below are computed by hand from that formula
(ReLU: E[relu'^2] = 1/2 exactly; tanh: Gauss-Hermite quadrature), independently of gradflow.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import layers_of

WIDE = ["data=gaussian", "data.dim=64", "data.n_train=256", "model.depth=60", "model.width=500", "train.steps=0",
        "train.batch_size=256"]


def measured_chi1(job_dir, trim: int = 5) -> float:
    """exp(-slope) of log ||dL/dz_l||^2 against l over the bulk layers: the geometric-mean per-layer ratio."""
    df = layers_of(job_dir)
    s = df[(df.quantity == "signal_norm") & (df.step == 0)].sort_values("layer")["value"].to_numpy()
    layer = np.arange(len(s))
    bulk = (layer >= trim) & (layer < len(s) - trim)
    slope = np.polyfit(layer[bulk], np.log(s[bulk] ** 2), 1)[0]
    return float(np.exp(-slope))


@pytest.mark.parametrize("overrides, chi1", [
    (["model.activation=relu", "init=kaiming_normal"], 1.00),
    (["model.activation=relu", "init=xavier_normal"], 0.50),
    (["model.activation=tanh", "init=meanfield", "init.sw2=1.0", "init.sb2=0.05"], 0.759),
    (["model.activation=tanh", "init=meanfield", "init.sw2=4.0", "init.sb2=0.05"], 1.342),
])
def test_backprop_ratio_matches_mean_field(cli, results, overrides, chi1):
    out = cli("run", *WIDE, *overrides, f"results={results}", "name=mf")
    assert out.exit_code == 0, out.output
    from gradflow.config import job_name

    job_dir = results / "mf" / job_name(WIDE + overrides)
    assert measured_chi1(job_dir) == pytest.approx(chi1, rel=0.05)
