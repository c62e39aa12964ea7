"""Probe overhead, measured side by side in one process: steps/s with probes off and on, interleaved."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from gradflow.config import compose

# name -> overrides: small, representative workloads for a CPU
WORKLOADS = {
    "mlp": ["data=mnist1d", "model.depth=20", "model.width=128"],
    "resnet20": ["data=mnist1d", "model=resnet20", "init=kaiming_normal"],
    "lstm": ["data=adding", "data.T=100", "model=lstm", "model.hidden=64"],
    "transformer": ["data=chars", "data.T=32", "model=transformer", "model.depth=6", "model.d_model=64", "optim=adam",
                    "optim.lr=1e-3", "train.batch_size=32"],
}
# "off": only step 0 and the last step are probed; "on": every step is probed
MODES = {"off": ["probe.every=0", "probe.points=2"], "on": ["probe.every=1"]}


@dataclass
class BenchResult:
    workload: str
    steps_per_s: dict[str, float]  # mode -> median steps/s

    @property
    def slowdown(self) -> float:
        return self.steps_per_s["off"] / self.steps_per_s["on"]


def step_rate(overrides: list[str], steps: int) -> float:
    """Updates per second of one short training run (setup excluded)."""
    from gradflow.job import prepare
    from gradflow.probes import Probes
    from gradflow.train import train

    cfg = compose([*overrides, f"train.steps={steps}", f"train.eval_every={steps}"])
    _, data, model = prepare(cfg)
    probes = Probes(model, cfg.model.activation)
    result = train(model, data, cfg, probes)
    probes.remove()
    return steps / result.train_time


def run(workloads: list[str], steps: int = 100, repeats: int = 3, extra: list[str] | None = None,
        on_result=None) -> list[BenchResult]:
    results = []
    for name in workloads:
        rates: dict[str, list[float]] = {m: [] for m in MODES}
        step_rate([*WORKLOADS[name], *MODES["off"], *(extra or [])], 5)  # warm-up: caches, allocator
        for _ in range(repeats):  # interleaved, so drifts in machine load hit both modes alike
            for mode, ov in MODES.items():
                rates[mode].append(step_rate([*WORKLOADS[name], *ov, *(extra or [])], steps))
        res = BenchResult(name, {m: statistics.median(v) for m, v in rates.items()})
        results.append(res)
        if on_result:
            on_result(res)
    return results
