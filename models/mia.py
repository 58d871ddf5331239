"""Empirical privacy audit: membership-inference attacks on a trained model.

The attacker knows a person's features and outcome and sees the model's loss on them;
the question is whether that loss tells whether the person was in the training set.

* **Loss threshold** (Yeom et al., 2018): members have lower loss. The attack's AUC over
  members (the training rows) and non-members (the held-out rows) is reported.
* **Reference-calibrated** (Watson et al., 2022; the offline variant of LiRA, Carlini et
  al., 2022): some people are simply easy. Reference models of the same architecture,
  trained without privacy on data that does *not* contain the target, give each target
  a baseline loss; the score is how much lower the audited model's loss is than that
  baseline. The held-out rows are split in two halves; a reference model trained on each
  half scores the other half and the members, so every reference is "out" for the rows
  it scores.

An AUC of 0.5 is a coin toss. DP bounds what any attack can achieve: at (ε, δ) the true
positive rate is at most e^ε times the false positive rate plus δ, so these numbers are
evidence, not proof, and a DP model's guarantee does not rest on them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch

from models import dpsgd
from models.metrics import auroc


@dataclass(frozen=True)
class AttackResult:
    attack_auc: float  # the stronger of the two attacks
    loss_threshold_auc: float
    calibrated_auc: float
    members: int
    non_members: int
    reference_models: int
    # the true-positive rate at a low false-positive rate: what matters for privacy
    # (Carlini et al. 2022); NaN when there are too few non-members to reach that FPR
    tpr_at_fpr_0_1pct: float = float("nan")
    tpr_at_fpr_1pct: float = float("nan")

    def as_dict(self) -> dict[str, float | int | str]:
        return {**asdict(self), "attack": "loss-threshold and reference-calibrated (offline LiRA)"}


def tpr_at_fpr(scores: np.ndarray, labels: np.ndarray, fpr: float) -> float:
    """The attack's TPR at the threshold whose FPR is at most ``fpr`` (higher = member).

    >>> tpr_at_fpr(np.array([3.0, 2.0, 1.0, 0.0]), np.array([1, 1, 0, 0]), 0.5)
    1.0
    >>> tpr_at_fpr(np.array([3.0, 2.0, 1.0, 0.0]), np.array([1, 1, 0, 0]), 0.01)
    nan
    """
    neg = np.sort(scores[labels == 0])[::-1]
    pos = scores[labels == 1]
    if len(pos) == 0 or len(neg) * fpr < 1:  # too few non-members to measure that FPR
        return float("nan")
    threshold = neg[int(np.floor(fpr * len(neg)))]
    return float(np.mean(pos > threshold))


def _balanced(n_members: int, n_non: int, seed: int) -> np.ndarray:
    """Indices of as many members as there are non-members (a balanced attack set)."""
    rng = np.random.default_rng(seed)
    k = min(n_members, n_non)
    return np.sort(rng.choice(n_members, size=k, replace=False))


def audit(
    model: torch.nn.Module,
    *,
    fresh: Callable[[], torch.nn.Module] | None = None,
    members: tuple[np.ndarray, np.ndarray],
    non_members: tuple[np.ndarray, np.ndarray],
    loss: dpsgd.Loss,
    config: dpsgd.FitConfig,
    seed: int = 0,
) -> AttackResult:
    """Run both attacks against ``model``; ``fresh`` makes untrained reference models."""
    xm, ym = members
    xn, yn = non_members
    pick = _balanced(len(ym), len(yn), seed)
    xm, ym = xm[pick], ym[pick]
    loss_m = dpsgd.per_sample_loss(model, xm, ym, loss=loss)
    loss_n = dpsgd.per_sample_loss(model, xn, yn, loss=loss)
    labels = np.concatenate([np.ones(len(ym)), np.zeros(len(yn))])
    threshold_auc = auroc(-np.concatenate([loss_m, loss_n]), labels)

    calibrated_auc = float("nan")
    references = 0
    if fresh is not None and len(yn) >= 40:
        rng = np.random.default_rng(seed + 1)
        half = rng.permutation(len(yn))
        parts = (half[: len(yn) // 2], half[len(yn) // 2 :])
        ref_n = np.zeros(len(yn))
        ref_m = np.zeros(len(ym))
        # each member is scored by one reference chosen at random, as each non-member is
        # (averaging two would shrink the members' baseline noise and bias the AUC)
        member_ref = rng.integers(0, len(parts), len(ym))
        for i, part in enumerate(parts):
            torch.manual_seed(seed + 10 + i)
            reference = fresh()
            fitted = dpsgd.fit(
                reference, xn[part], yn[part], loss=loss, config=config, epsilon=None
            ).model
            other = parts[1 - i]
            ref_n[other] = dpsgd.per_sample_loss(fitted, xn[other], yn[other], loss=loss)
            mine = member_ref == i
            ref_m[mine] = dpsgd.per_sample_loss(fitted, xm[mine], ym[mine], loss=loss)
            references += 1
        scores = np.concatenate([ref_m - loss_m, ref_n - loss_n])
        calibrated_auc = auroc(scores, labels)
    strongest = np.nanmax([threshold_auc, calibrated_auc])
    best = (
        np.concatenate([ref_m - loss_m, ref_n - loss_n])
        if references
        else -np.concatenate([loss_m, loss_n])
    )
    return AttackResult(
        tpr_at_fpr_0_1pct=tpr_at_fpr(best, labels, 0.001),
        tpr_at_fpr_1pct=tpr_at_fpr(best, labels, 0.01),
        attack_auc=float(strongest),
        loss_threshold_auc=float(threshold_auc),
        calibrated_auc=float(calibrated_auc),
        members=len(ym),
        non_members=len(yn),
        reference_models=references,
    )
