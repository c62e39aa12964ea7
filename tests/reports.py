"""Reading a reproduction's REPORT.md in tests: its claim rows, one row by its words, its figures."""

from __future__ import annotations

from pathlib import Path


def report_rows(root: Path) -> list[str]:
    """The claim rows of REPORT.md's table (header and rule left out)."""
    text = (root / "REPORT.md").read_text()
    return [line for line in text.splitlines() if line.startswith("| ") and "**" in line]


def rows_with(rows: list[str], words: str) -> list[str]:
    hits = [r for r in rows if words in r]
    assert hits, f"no claim row contains {words!r}"
    return hits


def row(rows: list[str], words: str) -> str:
    hits = rows_with(rows, words)
    assert len(hits) == 1, f"{words!r} matches {len(hits)} claim rows"
    return hits[0]


def figures_drawn(root: Path, names) -> None:
    for name in names:
        assert (root / "figures" / f"{name}.png").stat().st_size > 10_000, name
