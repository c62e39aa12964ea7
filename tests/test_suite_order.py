"""The suite's own order: files holding a slow test are collected first (tests/conftest.py), so that
under `make test` (xdist, --dist loadfile --no-loadscope-reorder) no reproduction is left to run alone
at the end; and `make test` asks xdist to keep that order."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]


def test_files_holding_a_slow_test_are_collected_first():
    files = ["tests/test_datasets.py", "tests/test_reproduce_xiong2020.py", "tests/test_train.py"]
    out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *files],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    order = list(dict.fromkeys(line.split("::")[0] for line in out.stdout.splitlines() if "::" in line))
    assert order == ["tests/test_reproduce_xiong2020.py", "tests/test_datasets.py", "tests/test_train.py"]


def test_make_test_keeps_the_collection_order():
    line = next(ln for ln in (ROOT / "Makefile").read_text().splitlines() if "pytest" in ln and "-n auto" in ln)
    assert "--dist loadfile" in line and "--no-loadscope-reorder" in line
