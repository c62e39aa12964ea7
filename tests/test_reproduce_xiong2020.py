"""xiong2020 through the real CLI at --quick: every claim passes, a claim value agrees with a recomputation
from layers.parquet with pandas, and forcing pre-LN in every arm makes the post-LN claims FAIL (exit 1).
Both tests share one results folder, so the breaking run redoes only the runs its override changes."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from gradflow import reproduce as rep
from gradflow import sweep as sweep_mod

# one thread per run, a results folder shared by the module's tests, torch's thread count restored after each
from tests.test_reproduce_rnn_resnet import THREADS, restore_threads, shared  # noqa: E402, F401


def claims(results: Path, user: list[str]) -> dict[str, rep.ClaimResult]:
    """The claim objects of the quick scale for the runs these overrides plan (text -> result)."""
    spec = rep.Spec.load("xiong2020")
    root = rep.root_for("xiong2020", "quick", str(results))
    user = [*user, f"results={results}"]
    jobs = {arm: [j.name for j in sweep_mod.plan(spec.overrides(arm, "quick", user),
                                                   f"{root.relative_to(results).as_posix()}/{arm}", False).jobs]
            for arm in spec.arms}
    return {r.text: r for r in rep.check(spec, root, jobs)}


def grad_at_init(arm_dir: Path, depth: int, name: str) -> float:
    """Mean over seeds of ||dL/dW|| at step 0 for the probe point `name`, read with pandas alone."""
    values = []
    for job in arm_dir.glob(f"*model.depth={depth},*"):
        layers = pd.read_parquet(job / "layers.parquet")
        row = layers[(layers["step"] == 0) & (layers["quantity"] == "grad_norm") & (layers["name"] == name)]
        values.append(float(row["value"].iloc[0]))
    assert len(values) == 2  # two seeds at --quick
    return sum(values) / len(values)


@pytest.mark.slow
def test_xiong2020_quick_passes(cli, shared):
    out = cli("reproduce", "xiong2020", "--quick", THREADS, f"results={shared}")
    assert out.exit_code == 0, out.output
    results = claims(shared, [THREADS])
    assert len(results) == 9
    assert all(r.passed for r in results.values()), [(t, r.measured.value) for t, r in results.items() if not r.passed]
    root = shared / "reproduce" / "xiong2020-quick"
    expect = grad_at_init(root / "post_init", 24, "b23.mlp.out") / grad_at_init(root / "pre_init", 24, "b23.mlp.out")
    assert results["the same ratio, L = 24"].measured.value == pytest.approx(expect, rel=1e-6)


def test_xiong2020_pre_ln_everywhere_fails_the_post_ln_claims(cli, shared):
    out = cli("reproduce", "xiong2020", "--quick", "model.ln=pre", THREADS, f"results={shared}")
    assert out.exit_code == 1
    results = claims(shared, ["model.ln=pre", THREADS])
    failing = [t for t, r in results.items() if not r.passed]
    assert all(not results[t].passed for t in results if "post-LN" in t or "ratio" in t), failing
    assert len(failing) == 8
    # the claim about the pre-LN profile alone still holds
    assert results["pre-LN, L = 12: MLP-out ‖∂L/∂W‖, last block / first block at init"].passed
    ratio = results["the same ratio, L = 12"].measured.value
    assert ratio == pytest.approx(1.0, rel=1e-6)  # both "arms" are now the same pre-LN nets
