"""The one way gradflow writes a number (or a config value) into a table, a title or a legend.

Every table (`run`, `ls`, `compare`, `theory`, reproduction claims) and every figure label goes
through `fmt`, so the same value reads the same everywhere. Machines get full precision from
`--json`/`--csv` instead, never from this.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

SMALL, LARGE = 1e-3, 1e5  # outside [SMALL, LARGE): scientific notation, so 6e-13 never reads as 0.000


def fmt(x: Any, digits: int = 4, missing: str = "-") -> str:
    """`x` for people: `digits` significant digits, whole numbers as integers (1.0 -> "1", depth 20
    -> "20"), tiny and huge magnitudes in scientific notation (6.02e-13, 1.5e+07), None and NaN as
    `missing`, booleans as true/false, anything else (a name, a list) as its string."""
    if x is None:
        return missing
    if isinstance(x, (bool, np.bool_)):
        return "true" if x else "false"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    if isinstance(x, (float, np.floating)):
        v = float(x)
        if math.isnan(v):
            return missing
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        if v.is_integer() and abs(v) < LARGE:
            return str(int(v))
        # (the magnitude as it will read: -0.0009999 reads -0.001, as -0.009 beside it does, not -1e-03)
        if SMALL <= abs(float(f"{v:.{max(digits, 1)}g}")) < LARGE:
            return f"{v:.{digits}g}"
        mantissa, exponent = f"{v:.{max(digits - 1, 0)}e}".split("e")
        if "." in mantissa:
            mantissa = mantissa.rstrip("0").rstrip(".")
        return f"{mantissa}e{exponent}"
    if isinstance(x, (list, tuple, np.ndarray)):
        return str(list(x))
    return str(x)


def and_list(items) -> str:
    """`a`, `a and b`, `a, b and c` ('' for none)."""
    items = list(items)
    return ", ".join(items[:-1]) + " and " * (len(items) > 1) + items[-1] if items else ""


def key_value(v: Any) -> str:
    """A config key's value in a note (`gradflow compare`'s, the report's): as `fmt`, an empty string as ''
    (bare, `data.cache (- | )` read as nothing)."""
    return "''" if isinstance(v, str) and not v else fmt(v)


def json_number(x: float) -> float | str | None:
    """A float for strict JSON (`json.dumps` writes NaN and Infinity, which JSON parsers refuse), at full
    precision: inf as "inf"/"-inf", undefined (nan) as null."""
    x = float(x)
    if math.isnan(x):
        return None
    return x if math.isfinite(x) else ("inf" if x > 0 else "-inf")


def strict_json(obj):
    """`obj` with every float made strict-JSON-ready by `json_number` and numpy scalars made Python
    ones, through dicts, lists and tuples; `number_from_json` reads such a number back."""
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float):
        return json_number(obj)
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    return obj


def number_from_json(x):
    """A number `json_number` wrote, back as a float (null as nan, "inf"/"-inf" as infinities); any
    other value as it is."""
    if x is None:
        return math.nan
    if x in ("inf", "-inf"):
        return float(x)
    return x


def drop_shared_parts(names: list[str], sep: str, keep: int = 0) -> list[str]:
    """`sep`-separated names without the leading parts every one of them shares, each keeping at least
    its last part, and `keep` of the shared ones (studies `reproduce/he2015-quick/train` beside
    `reproduce/glorot2010-quick/init`: `he2015-quick/train`; a GPT's blocks `transformer.h.3`, keep=1:
    `h.3`)."""
    parts = [n.split(sep) for n in names]
    common = 0
    while parts and all(len(p) > common + 1 and p[common] == parts[0][common] for p in parts):
        common += 1
    return [sep.join(p[max(common - keep, 0):]) for p in parts]
