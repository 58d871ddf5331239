"""A training cohort as arrays, inside the hub's process only.

The rows come from ``governance.cohorts`` (checked person-local, one row per person, read
after the budget is reserved). Encoding is total: a value that is not what the spec
declares becomes "missing" (a label that is not true/false drops that person from
training and evaluation), never an error, so nothing that happens after the data is
read depends on it.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

import numpy as np

from governance.cohorts import CohortRows
from models import features
from models.spec import Spec


@dataclass(frozen=True)
class Cohort:
    """A governed, encoded training table; it exists only in the hub's process."""

    keys: list[Any]
    x: np.ndarray  # (n, d) float32 in [0, 1]
    y: np.ndarray  # (n,) float32: 0/1, or a continuous outcome scaled to [0, 1]
    present: np.ndarray  # (n,) bool: the outcome (and treatment) are recorded
    treatment: np.ndarray | None  # (n,) float32 0/1 for effect models
    columns: list[str]
    release: str


def encode(spec: Spec, rows: CohortRows) -> Cohort:
    """The cohort's arrays; columns the spec names but the cohort lacks are all missing."""
    n = len(rows)
    data = {c: rows.columns.get(c, [None] * n) for c in spec.columns}
    encoder = features.Encoder(spec.numeric, spec.categorical)
    x = encoder.encode(data) if n else np.zeros((0, len(encoder.columns)), dtype=np.float32)
    if spec.outcome_type == "binary":
        y, present = features.binary(data[spec.outcome])
    else:
        assert spec.outcome_bounds is not None
        y, present = features.bounded(data[spec.outcome], spec.outcome_bounds)
    t = None
    if spec.treatment:
        t, known = features.binary(data[spec.treatment])
        present = present & known
    return Cohort(list(data[spec.key]), x, y, present, t, encoder.columns, rows.release)


def split(keys: list[Any], salt: bytes, holdout: float) -> np.ndarray:
    """True for held-out rows: a keyed hash of the row key, stable across extractions.

    >>> split(["a", "b", "c"], b"salt", 0.0).tolist()
    [False, False, False]
    """
    out = np.empty(len(keys), dtype=bool)
    for i, k in enumerate(keys):
        digest = hmac.new(salt, str(k).encode(), hashlib.sha256).digest()
        out[i] = int.from_bytes(digest[:8], "big") / 2**64 < holdout
    return out
