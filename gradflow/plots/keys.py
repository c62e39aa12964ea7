"""Which config keys vary in a results table: the one definition of a swept key.

Shared by the figures, `gradflow compare` and `gradflow ls`; it needs only pandas, so a command
that tabulates results does not pay for importing matplotlib. gradflow.plots.common re-exports it.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

SEED_KEYS = ("seed",)  # config keys aggregated over (median line + min-max band), never swept axes


def config_columns(df: pd.DataFrame) -> list[str]:
    """Config keys among the columns: dotted keys (model.depth) and seed, not the result summaries."""
    return [c for c in df.columns
            if isinstance(c, str) and (("." in c and not c.startswith(("final.", "grad_ratio."))) or c == "seed")]


def _hashable(s: pd.Series) -> pd.Series:
    """Lists/tuples/dicts (e.g. optim.betas) as strings, so they can be counted and grouped."""
    if s.dtype == object and s.map(lambda v: isinstance(v, (list, tuple, dict, np.ndarray))).any():
        return s.map(lambda v: str(list(v)) if isinstance(v, (list, tuple, np.ndarray))
                     else str(v) if isinstance(v, dict) else v)
    return s


def n_distinct(s: pd.Series) -> int:
    """Distinct values, NaN counted as one value (init.sw2=NaN next to 1.0 is a different config)."""
    return int(_hashable(s).nunique(dropna=False))


def swept_keys(df: pd.DataFrame, exclude: Sequence[str] = SEED_KEYS) -> list[str]:
    """Config columns that take more than one value in `df`, in column order (seed excluded;
    pass exclude=() to count it, as `gradflow ls` does)."""
    return [c for c in config_columns(df) if c not in exclude and n_distinct(df[c]) > 1]
