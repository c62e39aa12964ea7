"""Running a reproduction in tests: in-process, at --quick, one intra-op thread, returning the computed claims."""

from __future__ import annotations

from pathlib import Path

import torch

from gradflow import reproduce as rep


def reproduce(name: str, results: Path, *overrides: str) -> rep.Outcome:
    """rep.run at the quick scale into `results`; threads=1 sets torch's thread count in this process, so
    it is given back afterwards."""
    before = torch.get_num_threads()
    try:
        return rep.run(name, "quick", [*overrides, "threads=1", f"results={results}"])
    finally:
        torch.set_num_threads(before)


def verdicts(outcome: rep.Outcome) -> str:
    """Every claim with its verdict and value, for assertion messages."""
    return "\n".join(f"{'PASS' if r.passed else 'FAIL'} {r.text}: {r.measured.value:.4g} {r.test}"
                     for r in outcome.claims)


def figures_drawn(outcome: rep.Outcome, names) -> None:
    drawn = {p.stem: p for p in outcome.figures}
    for name in names:
        assert name in drawn and drawn[name].is_file(), (name, sorted(drawn))


def reproduce_edited(name: str, results: Path, specs: Path, monkeypatch, arms: dict[str, list[str]],
                     quick: dict[str, list[str]] | None = None) -> rep.Outcome:
    """reproduce() of a copy of the spec (written into `specs`) in which the named arms take more overrides,
    as a user breaking the mechanism in those arms alone would edit it: the other arms keep their finished
    runs in `results`, which are reused (an override given to every arm would rerun them all). `quick`: more
    overrides for arms at the quick scale, which come after the arm's own (its train.steps, say)."""
    from omegaconf import OmegaConf

    raw = OmegaConf.to_container(OmegaConf.load(rep.SPEC_DIR / f"{name}.yaml"))
    for arm, more in arms.items():
        raw["arms"][arm] = [*raw["arms"][arm], *more]
    for arm, more in (quick or {}).items():
        raw["scales"]["quick"][arm] = [*raw["scales"]["quick"].get(arm, []), *more]
    specs.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(OmegaConf.create(raw), specs / f"{name}.yaml")
    monkeypatch.setattr(rep, "SPEC_DIR", specs)
    return reproduce(name, results)
