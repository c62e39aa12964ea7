"""gradflow.fmt: the one number formatter of tables and figure labels."""

import math

import numpy as np
import pytest

from gradflow.fmt import fmt


@pytest.mark.parametrize("x, text", [
    (None, "-"), (math.nan, "-"), (np.float32("nan"), "-"),
    (math.inf, "inf"), (-math.inf, "-inf"),
    (20, "20"), (np.int64(7), "7"), (1.0, "1"), (-3.0, "-3"), (0.0, "0"),
    (True, "true"), (np.bool_(False), "false"),
    (0.52041234, "0.5204"), (1.761, "1.761"), (0.05, "0.05"), (0.001, "0.001"), (0.00099, "9.9e-04"), (5e-4, "5e-04"), (1e-4, "1e-04"),
    # a value that rounds to the edge reads as its rounding does: -0.001 beside -0.009, not -1e-03
    (-0.00099996, "-0.001"), (0.0009994, "9.994e-04"),
    (6.02e-13, "6.02e-13"), (1.2e-5, "1.2e-05"), (-4e-7, "-4e-07"), (1.5e7, "1.5e+07"), (123456.0, "1.235e+05"),
    (99999.0, "99999"), (100000.0, "1e+05"),  # (whole numbers up to LARGE, exclusive)
    ("tanh", "tanh"), ([1, 2], "[1, 2]"),
])
def test_fmt(x, text):
    assert fmt(x) == text


def test_fmt_digits_and_missing():
    assert fmt(math.pi, digits=3) == "3.14"
    assert fmt(2.5e-9, digits=2) == "2.5e-09"
    assert fmt(None, missing="n/a") == "n/a"
    # round trip within the requested precision, whatever the magnitude
    for v in (3.3e-12, 0.0123456, 98.7654, 7.7e11):
        assert math.isclose(float(fmt(v)), v, rel_tol=5e-4)


def test_ellipsize_keeps_whole_items_from_both_ends_first_one_first():
    from gradflow.errors import ellipsize

    items = "model.activation=relu,model.depth=10,init=xavier_normal,seed=3".split(",")
    assert ellipsize(items, ",", 30) == ["model.activation=relu", "…", "seed=3"]
    assert ellipsize(items, ",", 100) == items  # every item fits: no ellipsis
    assert ellipsize(["a" * 40, "b" * 40], " ", 10) is None  # not one fits
    assert ellipsize(["a", "b" * 40, "c", "d"], " ", 9) == ["a", "…", "c", "d"]  # from the end once the head is full


def test_strict_json_reaches_numbers_inside_tuples_and_reads_them_back():
    """Every float, however nested (a spread as a tuple in a dict in a list), comes out strict JSON, which
    a strict parser takes; number_from_json gives the values back."""
    import json

    from gradflow.fmt import number_from_json, strict_json

    obj = {"runs": [{"spread": (math.nan, math.inf), "ratio": np.float32(0.5)}], "range": (-math.inf, 2.0)}
    text = json.dumps(strict_json(obj), allow_nan=False)  # raises on any NaN or Infinity left
    back = json.loads(text, parse_constant=lambda c: pytest.fail(f"not strict JSON: {c}"))
    spread = [number_from_json(v) for v in back["runs"][0]["spread"]]
    assert math.isnan(spread[0]) and spread[1] == math.inf
    assert [number_from_json(v) for v in back["range"]] == [-math.inf, 2.0] and back["runs"][0]["ratio"] == 0.5


def test_drop_shared_parts_keeps_each_names_last_part_and_the_shared_parts_asked_for():
    from gradflow.fmt import drop_shared_parts

    # runs all in one study's folder: the study keeps its own name, never an empty one
    assert drop_shared_parts(["s4", "s4"], "/") == ["s4", "s4"]
    assert drop_shared_parts(["reproduce/he2015-quick/train"] * 2, "/") == ["train", "train"]
    assert drop_shared_parts(["reproduce/he2015-quick/train", "reproduce/glorot2010-quick/init"], "/") == \
        ["he2015-quick/train", "glorot2010-quick/init"]
    # a GPT's blocks: transformer.h.0 ... read h.0 (keep=1), not a bare 0, 1 beside the axis
    blocks = [f"transformer.h.{i}" for i in range(3)]
    assert drop_shared_parts(blocks, ".", keep=1) == ["h.0", "h.1", "h.2"]
    assert drop_shared_parts(blocks, ".") == ["0", "1", "2"]
