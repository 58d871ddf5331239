"""Empirical privacy audit: membership-inference attacks on a trained model.

The attacker knows a person's features and outcome and sees the model's loss on them;
the question is whether that loss tells whether the person was in the training set.

* **Loss threshold** (Yeom et al., 2018): members have lower loss. The attack's AUC over
  members (the training rows) and non-members (the held-out rows) is reported.
* **Reference-calibrated** (Watson et al., 2022; the offline variant of LiRA, Carlini et
  al., 2022): some people are simply easy. Several reference models trained with the
  audited model's own recipe (same architecture, optimiser and DP-SGD settings) on random
  halves of the non-members give each target a baseline loss and spread from the
  references that did *not* train on it; the score is how many spreads lower the audited
  model's loss is.
* The result is reported as **TPR at FPR 0.1% and 1%** (what matters for privacy:
  confidently identifying a few people), beside the AUC.
* **One-run canary audit** (Steinke, Nasr and Jagielski 2023): made-up canaries, each
  added with probability ½, one training run of the same recipe, and in/out guesses
  from their losses give an empirical ε lower bound to set beside the accountant's ε.

DP bounds what any attack can achieve: at (ε, δ) the true positive rate is at most e^ε
times the false positive rate plus δ (under ε = 1 the best AUC is 0.73). So these
numbers can show that a model leaks (an attack beating its ε means a broken pipeline),
never that it is private: a DP model's guarantee does not rest on them.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch
from scipy.stats import binom

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
    references: int = 4,
    epsilon: float | None = None,
    delta: float | None = None,
    method: str | Fitter = "dp-sgd",
) -> AttackResult:
    """Run both attacks against ``model``; ``fresh`` makes untrained reference models.

    ``references`` reference models are trained with the audited model's own recipe
    (``config``, and DP-SGD at ``epsilon``/``delta`` when given), each on a random half
    of the non-members. Each target is scored against the references that did not train
    on it (offline LiRA in loss space: how far below their mean loss, in units of the
    references' global spread, the audited model's loss is).
    """
    xm, ym = members
    xn, yn = non_members
    pick = _balanced(len(ym), len(yn), seed)
    xm, ym = xm[pick], ym[pick]
    loss_m = dpsgd.per_sample_loss(model, xm, ym, loss=loss)
    loss_n = dpsgd.per_sample_loss(model, xn, yn, loss=loss)
    labels = np.concatenate([np.ones(len(ym)), np.zeros(len(yn))])
    threshold_scores = -np.concatenate([loss_m, loss_n])
    threshold_auc = auroc(threshold_scores, labels)

    calibrated_auc = float("nan")
    best = threshold_scores
    trained = 0
    if fresh is not None and len(yn) >= 40 and references >= 2:
        rng = np.random.default_rng(seed + 1)
        ref_m = np.full((references, len(ym)), np.nan)
        ref_n = np.full((references, len(yn)), np.nan)
        # members are "out" of every reference; to score both groups alike, each member
        # uses a random half of the references, as each non-member has the half that did
        # not train on it (otherwise members' baselines would average more models)
        member_half = rng.random((references, len(ym))) < 0.5
        for r in range(references):
            inside = np.zeros(len(yn), dtype=bool)
            inside[rng.permutation(len(yn))[: len(yn) // 2]] = True
            torch.manual_seed(seed + 10 + r)
            fitted = _fit(
                method, fresh, xn[inside], yn[inside], loss=loss, config=config,
                epsilon=epsilon, delta=delta,
            ).model  # fmt: skip
            mine = member_half[r]
            ref_m[r, mine] = dpsgd.per_sample_loss(fitted, xm[mine], ym[mine], loss=loss)
            out = ~inside
            ref_n[r, out] = dpsgd.per_sample_loss(fitted, xn[out], yn[out], loss=loss)
            trained += 1
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a row no reference scored
            mean_m, mean_n = np.nanmean(ref_m, axis=0), np.nanmean(ref_n, axis=0)
        # one global spread (LiRA's advice with few reference models)
        spread = float(np.nanstd(np.concatenate([ref_m.ravel(), ref_n.ravel()]))) + 1e-6
        scores = np.concatenate([(mean_m - loss_m) / spread, (mean_n - loss_n) / spread])
        scores = np.nan_to_num(scores, nan=0.0)
        calibrated_auc = auroc(scores, labels)
        best = scores
    strongest = np.nanmax([threshold_auc, calibrated_auc])
    return AttackResult(
        attack_auc=float(strongest),
        loss_threshold_auc=float(threshold_auc),
        calibrated_auc=float(calibrated_auc),
        members=len(ym),
        non_members=len(yn),
        reference_models=trained,
        tpr_at_fpr_0_1pct=tpr_at_fpr(best, labels, 0.001),
        tpr_at_fpr_1pct=tpr_at_fpr(best, labels, 0.01),
    )


# ---------------------------------------------------------------------------- canaries
def epsilon_lower_bound(guesses: int, correct: int, *, confidence: float = 0.95) -> float:
    """The one-run audit's empirical ε lower bound (Steinke, Nasr and Jagielski 2023,
    δ = 0 form): the largest ε that an ε-DP training would make ``correct`` or more right
    guesses out of ``guesses`` less likely than ``1 - confidence``.

    >>> epsilon_lower_bound(100, 50)
    0.0
    >>> round(epsilon_lower_bound(100, 90), 2)
    1.63
    """
    if guesses == 0:
        return 0.0

    def tail(eps: float) -> float:
        p = math.exp(eps) / (1 + math.exp(eps))
        return float(binom.sf(correct - 1, guesses, p))

    beta = 1 - confidence
    if tail(0.0) >= beta:
        return 0.0
    lo, hi = 0.0, 50.0
    for _ in range(100):  # the tail grows with ε: bisect for tail(ε) = β
        mid = (lo + hi) / 2
        if tail(mid) < beta:
            lo = mid
        else:
            hi = mid
    return lo


@dataclass(frozen=True)
class CanaryResult:
    canaries: int
    guesses: int
    correct: int
    epsilon_lower_bound: float  # at 95% confidence
    accountant_epsilon: float

    def as_dict(self) -> dict[str, float | int | str]:
        return {**asdict(self), "method": "one-run canary audit (Steinke, Nasr, Jagielski 2023)"}


Fitter = Callable[[np.ndarray, np.ndarray, float | None, float], dpsgd.FitResult]


def _fit(
    method: str | Fitter,
    fresh: Callable[[], torch.nn.Module],
    x: np.ndarray,
    y: np.ndarray,
    *,
    loss: dpsgd.Loss,
    config: dpsgd.FitConfig,
    epsilon: float | None,
    delta: float | None,
) -> dpsgd.FitResult:
    """A model of the audited recipe: DP-SGD, or a one-release learner's own recipe
    (AdaSSP, strata: ``method`` a callable, :func:`models.learners.replay`)."""
    if callable(method):
        return method(x, y, epsilon, delta or dpsgd.default_delta(len(y)))
    return dpsgd.fit(fresh(), x, y, loss=loss, config=config, epsilon=epsilon, delta=delta)


def canary_audit(
    fresh: Callable[[], torch.nn.Module],
    x: np.ndarray,
    y: np.ndarray,
    *,
    loss: dpsgd.Loss,
    config: dpsgd.FitConfig,
    epsilon: float,
    delta: float,
    canaries: int = 200,
    guess_fraction: float = 0.2,
    method: str | Fitter = "dp-sgd",
) -> CanaryResult:
    """One training run of the same recipe with ``canaries`` made-up people added, each
    with probability ½ (a fresh coin per canary, from the CSPRNG); the auditor guesses
    in/out for the canaries with the lowest and highest loss and counts right guesses.

    Canaries are outliers (random corners of the feature cube, random labels), as easy to
    memorise as any real person can be; the bound is for the recipe (same steps, noise
    and clipping), not only for the released weights.
    """
    d = x.shape[1]
    generator = np.random.default_rng(int.from_bytes(os.urandom(8), "big"))
    # corners of the feature cube with random labels: far from each other and from most
    # people, so including one canary says little about another
    cx = (generator.random((canaries, d)) < 0.5).astype(np.float32)
    cy = (generator.random(canaries) < 0.5).astype(np.float32)
    included = generator.random(canaries) < 0.5
    train_x = np.concatenate([x, cx[included]])
    train_y = np.concatenate([y, cy[included]])
    fitted = _fit(
        method, fresh, train_x, train_y, loss=loss, config=config, epsilon=epsilon, delta=delta
    )
    score = -dpsgd.per_sample_loss(fitted.model, cx, cy, loss=loss)
    k = max(1, int(guess_fraction * canaries / 2))
    order = np.argsort(score)
    guessed_in, guessed_out = order[-k:], order[:k]
    correct = int(included[guessed_in].sum() + (~included[guessed_out]).sum())
    return CanaryResult(
        canaries=canaries,
        guesses=2 * k,
        correct=correct,
        epsilon_lower_bound=epsilon_lower_bound(2 * k, correct),
        accountant_epsilon=fitted.epsilon,
    )
