"""How good and how private a synthetic table is, measured inside the hub.

Every figure is an aggregate over many people (a mean distance between distributions, an
AUROC, an attack's AUC): no real value or row ever leaves this module. The figures go
on the data card, which a steward reviews before anything is released.

* **Utility**: the average total-variation distance between the real (generator's input)
  and synthetic 1-way and 2-way marginals, the average absolute difference of every
  pair's association (Cramér's V), and, for a stated binary outcome, the AUROC on real
  held-out people of a logistic regression trained on the synthetic rows, beside the
  same model trained on the real rows (train-on-synthetic / test-on-real).
* **Privacy**: a distance-to-closest-record membership check. For people the generator
  saw and held-out people it never saw, the Hamming distance to the nearest synthetic
  row; an attacker who calls the closer ones members scores an AUC of 0.5 when the
  synthetic rows carry no trace of who was in the input.
"""

from __future__ import annotations

import math
import warnings
from itertools import combinations
from typing import Any, Final

import numpy as np

from models.metrics import auroc
from models.synthetic_spec import SyntheticSpec

MIA_PEOPLE: Final = 5000  # members and as many non-members (fewer in a small cohort)
MIA_CHUNK: Final = 64


def _dist(codes: dict[str, np.ndarray], clique: tuple[str, ...], sizes: dict[str, int]) -> Any:
    shape = tuple(sizes[c] for c in clique)
    flat = np.ravel_multi_index(tuple(codes[c] for c in clique), shape)
    counts = np.bincount(flat, minlength=math.prod(shape)).astype(np.float64)
    return counts / max(counts.sum(), 1.0)


def tv(p: np.ndarray, q: np.ndarray) -> float:
    """Total-variation distance of two distributions.

    >>> tv(np.array([0.5, 0.5]), np.array([1.0, 0.0]))
    0.5
    """
    return float(0.5 * np.abs(p - q).sum())


def cramers_v(table: np.ndarray) -> float:
    """Association of a 2-way count table, 0 (independent) to 1.

    >>> cramers_v(np.array([[5, 0], [0, 5]]))
    1.0
    """
    table = table[table.sum(axis=1) > 0][:, table.sum(axis=0) > 0]
    n = table.sum()
    if n == 0 or min(table.shape) < 2:
        return 0.0
    expected = np.outer(table.sum(axis=1), table.sum(axis=0)) / n
    chi2 = float(((table - expected) ** 2 / expected).sum())
    return float(math.sqrt(chi2 / (n * (min(table.shape) - 1))))


def utility(
    spec: SyntheticSpec, real: dict[str, np.ndarray], synthetic: dict[str, np.ndarray]
) -> dict[str, float]:
    sizes = {c: len(spec.levels(c)) for c in spec.columns}
    cols = spec.columns
    one = [tv(_dist(real, (c,), sizes), _dist(synthetic, (c,), sizes)) for c in cols]
    pairs = list(combinations(cols, 2))
    two, assoc = [], []
    for a, b in pairs:
        pr, ps = _dist(real, (a, b), sizes), _dist(synthetic, (a, b), sizes)
        two.append(tv(pr, ps))
        shape = (sizes[a], sizes[b])
        assoc.append(abs(cramers_v(pr.reshape(shape)) - cramers_v(ps.reshape(shape))))
    return {
        "marginal_tv_1way": float(np.mean(one)),
        "marginal_tv_2way": float(np.mean(two)) if two else 0.0,
        "marginal_tv_2way_max": float(np.max(two)) if two else 0.0,
        "correlation_difference": float(np.mean(assoc)) if assoc else 0.0,
    }


def _one_hot(spec: SyntheticSpec, codes: dict[str, np.ndarray], features: list[str]) -> Any:
    blocks = []
    for c in features:
        eye = np.eye(len(spec.levels(c)), dtype=np.float32)
        blocks.append(eye[codes[c]])
    return np.hstack(blocks)


def _auroc(x: Any, y: np.ndarray, x_test: Any, y_test: np.ndarray) -> float | None:
    if len(set(y.tolist())) < 2 or len(set(y_test.tolist())) < 2:
        return None  # one class only: no AUROC to state
    from sklearn.linear_model import LogisticRegression  # slow to import: only when used

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = LogisticRegression(max_iter=1000).fit(x, y)
    return auroc(model.predict_proba(x_test)[:, 1], y_test)


def tstr(
    spec: SyntheticSpec,
    train: dict[str, np.ndarray],
    holdout: dict[str, np.ndarray],
    synthetic: dict[str, np.ndarray],
) -> dict[str, Any]:
    """Train-on-synthetic and train-on-real AUROC, both tested on real held-out people."""
    if spec.outcome is None:
        return {}
    outcome = spec.outcome
    features = spec.features or [c for c in spec.columns if c != outcome]
    positive = spec.levels(outcome).index(spec.positive)
    y = {k: (v[outcome] == positive).astype(int) for k, v in
         (("train", train), ("holdout", holdout), ("synthetic", synthetic))}  # fmt: skip
    x_test = _one_hot(spec, holdout, features)
    on_synthetic = _auroc(_one_hot(spec, synthetic, features), y["synthetic"], x_test,
                          y["holdout"])  # fmt: skip
    on_real = _auroc(_one_hot(spec, train, features), y["train"], x_test, y["holdout"])
    gap = None if on_synthetic is None or on_real is None else on_real - on_synthetic
    return {
        "outcome": outcome,
        "positive": spec.positive,
        "features": features,
        "auroc_train_synthetic": on_synthetic,
        "auroc_train_real": on_real,
        "auroc_gap": gap,
    }


def _matrix(spec: SyntheticSpec, codes: dict[str, np.ndarray]) -> np.ndarray:
    return np.stack([codes[c].astype(np.uint8) for c in spec.columns], axis=1)


def _nearest(rows: np.ndarray, synthetic: np.ndarray) -> np.ndarray:
    out = np.empty(len(rows), dtype=np.int64)
    for i in range(0, len(rows), MIA_CHUNK):
        block = rows[i : i + MIA_CHUNK]
        distances = (block[:, None, :] != synthetic[None, :, :]).sum(axis=2)
        out[i : i + MIA_CHUNK] = distances.min(axis=1)
    return out


def membership(
    spec: SyntheticSpec,
    train: dict[str, np.ndarray],
    holdout: dict[str, np.ndarray],
    synthetic: dict[str, np.ndarray],
    *,
    seed: int = 0,
    people: int = MIA_PEOPLE,
) -> dict[str, Any]:
    """Distance-to-closest-record attack: AUC of "closer means member" (0.5: no signal)."""
    rng = np.random.default_rng(seed)
    members, others, syn = _matrix(spec, train), _matrix(spec, holdout), _matrix(spec, synthetic)
    k = min(people, len(members), len(others))
    if k < 10 or len(syn) == 0:
        return {"attack_auc": None, "people_each": k}
    members = members[rng.choice(len(members), k, replace=False)]
    others = others[rng.choice(len(others), k, replace=False)]
    d_in, d_out = _nearest(members, syn), _nearest(others, syn)
    labels = np.r_[np.ones(k), np.zeros(k)]
    auc = auroc(-np.r_[d_in, d_out], labels)
    # the AUC's spread when there is no signal (Mann-Whitney null, k members and k others):
    # an AUC within 0.5 ± this is no detectable signal at the 5% level
    null_half_width = 1.96 * math.sqrt((2 * k + 1) / (12 * k * k))
    return {
        "method": "distance to closest synthetic record (Hamming, discretised columns)",
        "attack_auc": auc,
        "no_signal_within": null_half_width,
        "signal_detected": bool(abs(auc - 0.5) > null_half_width),
        "people_each": k,
        "exact_match_members": float(np.mean(d_in == 0)),
        "exact_match_non_members": float(np.mean(d_out == 0)),
    }
