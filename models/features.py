"""Encoding a cohort into model inputs without reading private statistics.

Every transformation is fixed by the spec, never fitted to the data (a fitted mean or
standard deviation would be a non-private release folded into the model):

* numeric features are clipped to their declared bounds and scaled to [0, 1]; a missing
  value becomes the midpoint, with a ``<name>_missing`` indicator column beside it;
* categorical features are one-hot over their declared levels; an undeclared or missing
  value is the all-zero vector (an implicit "other");
* booleans are numeric features with bounds [0, 1].

>>> enc = Encoder({"age": (18.0, 100.0)}, {"sex": ["F", "M"]})
>>> enc.columns
['age', 'age_missing', 'sex=F', 'sex=M']
>>> enc.encode({"age": [59.0, None], "sex": ["F", "X"]}).tolist()
[[0.5, 0.0, 1.0, 0.0], [0.5, 1.0, 0.0, 0.0]]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def _scaled(raw: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Values clipped to ``[lo, hi]`` and scaled to [0, 1], always finite: whatever a
    cohort holds, nothing it holds can make an input NaN (a NaN survives DP-SGD's
    clipping and diverges the whole model, so one person's value would show), and no
    warning about a value reaches the user's terminal.

    >>> _scaled(np.array([-5.0, 50.0, np.inf, np.nan]), 0.0, 100.0).tolist()
    [0.0, 0.5, 1.0, 0.5]
    """
    with np.errstate(all="ignore"):
        scaled = (np.clip(raw, lo, hi) - lo) / (hi - lo)
    out: np.ndarray = np.clip(np.nan_to_num(scaled, nan=0.5, posinf=1.0, neginf=0.0), 0.0, 1.0)
    return out


def _numbers(values: Sequence[Any]) -> np.ndarray:
    out = np.empty(len(values), dtype=np.float64)
    for i, v in enumerate(values):
        if v is None:
            out[i] = np.nan
        else:
            try:
                out[i] = float(v)
            except (TypeError, ValueError):
                out[i] = np.nan
    return out


class Encoder:
    def __init__(
        self, numeric: Mapping[str, tuple[float, float]], categorical: Mapping[str, list[str]]
    ) -> None:
        self.numeric = dict(numeric)
        self.categorical = dict(categorical)
        self.columns: list[str] = []
        for name in self.numeric:
            self.columns += [name, f"{name}_missing"]
        for name, levels in self.categorical.items():
            self.columns += [f"{name}={level}" for level in levels]

    def encode(self, data: Mapping[str, Sequence[Any]]) -> np.ndarray:
        n = len(next(iter(data.values()))) if data else 0
        parts: list[np.ndarray] = []
        for name, (lo, hi) in self.numeric.items():
            raw = _numbers(data[name])
            missing = np.isnan(raw)
            scaled = _scaled(np.where(missing, (lo + hi) / 2, raw), lo, hi)
            parts += [scaled, missing.astype(np.float64)]
        for name, levels in self.categorical.items():
            values = ["" if v is None else str(v) for v in data[name]]
            for level in levels:
                parts.append(np.array([v == level for v in values], dtype=np.float64))
        if not parts:
            return np.zeros((n, 0), dtype=np.float32)
        return np.stack(parts, axis=1).astype(np.float32)


def binary(values: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    """A 0/1 column and where it is known: anything but true/false/0/1 is missing.

    Never an error: a cohort's values are read after the budget is reserved, and what
    happens then must not depend on them.

    >>> [v.tolist() for v in binary([True, 0, "x", None])]
    [[1.0, 0.0, 0.0, 0.0], [True, True, False, False]]
    """
    out = np.zeros(len(values), dtype=np.float32)
    known = np.zeros(len(values), dtype=bool)
    for i, v in enumerate(values):
        if isinstance(v, bool | int | float | np.integer | np.floating) and v in (0, 1):
            out[i] = float(v)
            known[i] = True
    return out, known


def bounded(values: Sequence[Any], bounds: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """A continuous outcome clipped to declared bounds and scaled to [0, 1]; rows missing it."""
    lo, hi = bounds
    raw = _numbers(values)
    present = ~np.isnan(raw)
    return _scaled(np.where(present, raw, lo), lo, hi).astype(np.float32), present
