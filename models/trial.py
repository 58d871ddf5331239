"""Emulated trials: a study spec in target-trial terms (:func:`parse_study`) and the
average effect of its treatment under DP, a doubly robust (AIPW) estimate with an
interval that accounts for the noise (:func:`aipw`), run through the governed cohort
path and the project's ledger, and released through steward review like any output
(:func:`run`; ``hub trial``, ``POST /v1/projects/{id}/trials``). Not yet: the cohort SQL
generated from the protocol (the study states both; the steward reads both).

Given a person-level cohort with features ``x`` in [0, 1] (the declared confounders),
a 0/1 treatment ``t`` and an outcome ``y`` scaled to [0, 1] by declared bounds:

1. **Nuisances, by AdaSSP** (:mod:`models.adassp`): the outcome in each arm on ``x``
   (the arms are disjoint: parallel composition) and the propensity ``e(x)`` as a linear
   probability model of ``t`` on ``x``, clipped to ``[CLIP, 1 − CLIP]``.
2. **AIPW pseudo-outcomes** ``ψ = m₁ − m₀ + t (y − m₁)/e − (1 − t)(y − m₀)/(1 − e)``,
   each in ``[−B, B]`` with ``B = 1 + 1/CLIP`` whatever the data (the nuisances are
   post-processing of DP releases, so one person moves one ψ, by at most ``2B`` in value
   and ``B`` in the add/remove sense used here). The sum of ψ, the sum of ψ² and the
   count are released with Gaussian noise (L2 sensitivities ``B``, ``B²`` and 1).
3. **The naive difference in means** (what a table of outcomes by arm would show): the
   sum of y and the count in each arm (disjoint arms: parallel), Gaussian noise.

All releases are Gaussian mechanisms accounted in zCDP (ρ adds) and converted to
(ε, δ) once (:func:`governance.privacy.accounting.zcdp_epsilon`). The interval is
``τ̂ ± 1.96 √(V/n + σ_S²/n²)``: the sampling variance of the mean ψ (from the noisy
sums) plus the variance of the noise on the sum, divided by the (noisy) count.
"""

from __future__ import annotations

import hashlib
import math
import secrets
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from governance.access.people import Principal
from governance.audit.events import AuditEvent
from governance.errors import InvalidRequest
from governance.outputs import submissions
from governance.outputs.exact import FAILED_REASON as _QUERY_FAILED
from governance.outputs.review import download_url
from governance.privacy import accounting
from governance.privacy.accounting import DEFAULT_TRAINING_DELTA
from models import adassp, cohort, dpsgd
from models import spec as specs
from models.spec import Spec

if TYPE_CHECKING:
    from governance.queries import QueryService

CLIP: Final = 0.1  # propensities are clipped to [0.1, 0.9]
BOUND: Final = 1.0 + 1.0 / CLIP  # |ψ| ≤ B
# ρ shares: outcome models, propensity, Σψ, Σψ², count, naive sums and counts
SHARES: Final = {
    "outcome": 0.25, "propensity": 0.15, "psi_sum": 0.35, "psi_square_sum": 0.1,
    "count": 0.05, "naive": 0.1,
}  # fmt: skip
Z95: Final = 1.959963984540054


@dataclass(frozen=True)
class Estimate:
    ate: float  # on the outcome's [0, 1] scale (multiply by its range for units)
    ci95: tuple[float, float]
    se: float
    naive: float  # the noisy difference in means, same scale
    epsilon: float
    delta: float
    rho: float


def _gaussian(value: float, sensitivity: float, rho: float) -> tuple[float, float]:
    """``value`` plus N(0, σ²) from the CSPRNG with σ = Δ/√(2ρ); returns (noisy, σ)."""
    sigma = sensitivity / math.sqrt(2 * rho)
    return value + float(dpsgd.secure_normal((1,), sigma)[0]), sigma


# L2 sensitivities of the released sums when one person is added or removed (the privacy
# unit: the cohort has one row per person), from the declared bounds alone: |ψ| ≤ B,
# y ∈ [0, 1]; each arm's sums are moved only by that arm's people (parallel composition)
SENSITIVITY: Final = {
    "psi_sum": BOUND, "psi_square_sum": BOUND**2, "count": 1.0,
    "arm_outcome_sum": 1.0, "arm_count": 1.0,
}  # fmt: skip


def statistics(psi: np.ndarray, t: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """The exact sums the estimate releases with noise (private: never returned).

    >>> statistics(np.array([2.0, -1.0]), np.array([1, 0]), np.array([0.5, 0.25]))
    ... # doctest: +NORMALIZE_WHITESPACE
    {'psi_sum': 1.0, 'psi_square_sum': 5.0, 'count': 2.0, 'treated_outcome_sum': 0.5,
     'treated_count': 1.0, 'untreated_outcome_sum': 0.25, 'untreated_count': 1.0}
    """
    treated = np.asarray(t) == 1
    y = np.clip(np.asarray(y, dtype=np.float64), 0.0, 1.0)
    psi = np.clip(np.asarray(psi, dtype=np.float64), -BOUND, BOUND)
    return {
        "psi_sum": float(np.sum(psi)),
        "psi_square_sum": float(np.sum(psi**2)),
        "count": float(len(psi)),
        "treated_outcome_sum": float(np.sum(y[treated])),
        "treated_count": float(np.sum(treated)),
        "untreated_outcome_sum": float(np.sum(y[~treated])),
        "untreated_count": float(np.sum(~treated)),
    }


def pseudo_outcomes(
    m1: np.ndarray, m0: np.ndarray, e: np.ndarray, t: np.ndarray, y: np.ndarray
) -> np.ndarray:
    """AIPW's per-person ψ, with every input clipped to its declared range first, so
    that ``|ψ| ≤ BOUND`` whatever the data (the sensitivity the noise is scaled to).

    >>> pseudo_outcomes(*(np.array([v]) for v in (1.0, 0.0, 0.0, 1.0, 0.0))).tolist()
    [-9.0]
    """
    m1, m0, y = (np.clip(np.asarray(v, dtype=np.float64), 0.0, 1.0) for v in (m1, m0, y))
    e = np.clip(np.asarray(e, dtype=np.float64), CLIP, 1 - CLIP)
    t = (np.asarray(t) == 1).astype(np.float64)
    return np.asarray(m1 - m0 + t * (y - m1) / e - (1 - t) * (y - m0) / (1 - e))


def aipw(
    x: np.ndarray, t: np.ndarray, y: np.ndarray, *, epsilon: float | None, delta: float
) -> Estimate:
    """The DP AIPW average effect of ``t`` on ``y`` (``epsilon=None``: no noise)."""
    private = epsilon is not None and math.isfinite(epsilon)
    rho = accounting.zcdp_rho(float(epsilon), delta) if private else math.inf  # type: ignore[arg-type]
    share = {k: v * rho for k, v in SHARES.items()}
    # every input bounded and finite, whatever the cohort held (np.clip keeps a NaN)
    x = np.clip(np.nan_to_num(np.asarray(x, dtype=np.float64), nan=0.0), 0.0, 1.0)
    t = (np.asarray(t) == 1).astype(np.float64)
    y = np.clip(np.nan_to_num(np.asarray(y, dtype=np.float64), nan=0.0), 0.0, 1.0)

    def fit(xs: np.ndarray, ys: np.ndarray, part: float) -> np.ndarray:
        # AdaSSP at ρ = part, i.e. at the (ε, δ) that ρ converts to
        eps = accounting.zcdp_epsilon(part, delta) if private else None
        model = adassp.fit(xs, ys, epsilon=eps, delta=delta).model
        return dpsgd.predict(model, x, loss="mse")

    treated = t == 1
    m1 = np.clip(fit(x[treated], y[treated], share["outcome"]), 0, 1)
    m0 = np.clip(fit(x[~treated], y[~treated], share["outcome"]), 0, 1)
    e = np.clip(fit(x, t, share["propensity"]), CLIP, 1 - CLIP)
    psi = pseudo_outcomes(m1, m0, e, t, y)
    if not private:
        mean = float(np.mean(psi)) if len(psi) else 0.0
        se = float(np.std(psi) / math.sqrt(max(len(psi), 1)))
        naive = float(np.mean(y[treated]) - np.mean(y[~treated])) if treated.any() else 0.0
        return Estimate(mean, (mean - Z95 * se, mean + Z95 * se), se, naive, math.inf, 0.0, 0.0)
    exact = statistics(psi, t, y)
    s, sigma_s = _gaussian(exact["psi_sum"], SENSITIVITY["psi_sum"], share["psi_sum"])
    q, _ = _gaussian(
        exact["psi_square_sum"], SENSITIVITY["psi_square_sum"], share["psi_square_sum"]
    )
    n_noisy, _ = _gaussian(exact["count"], SENSITIVITY["count"], share["count"])
    n = max(n_noisy, 1.0)
    mean = min(BOUND, max(-BOUND, s / n))
    variance = max(q / n - mean**2, 0.0)
    se = math.sqrt(variance / n + sigma_s**2 / n**2)
    naive_arms = []
    for arm in ("treated", "untreated"):  # disjoint: parallel composition, one share
        half = share["naive"] / 2
        total, _ = _gaussian(exact[f"{arm}_outcome_sum"], SENSITIVITY["arm_outcome_sum"], half)
        count, _ = _gaussian(exact[f"{arm}_count"], SENSITIVITY["arm_count"], half)
        naive_arms.append(min(1.0, max(0.0, total / max(count, 1.0))))
    return Estimate(
        ate=mean, ci95=(mean - Z95 * se, mean + Z95 * se), se=se,
        naive=naive_arms[0] - naive_arms[1], epsilon=accounting.zcdp_epsilon(rho, delta),
        delta=delta, rho=rho,
    )  # fmt: skip


ACCOUNTANT: Final = "zCDP (Gaussian mechanisms; Canonne-Kamath-Steinke conversion)"
FAILED_REASON: Final = _QUERY_FAILED.replace("the query", "the estimation")

PROTOCOL: Final = (
    "eligibility", "treatment_strategies", "assignment", "follow_up", "outcome",
    "causal_contrast", "confounders",
)  # fmt: skip


@dataclass(frozen=True)
class Study:
    """A target trial (Hernán and Robins) and the cohort that emulates it."""

    protocol: dict[str, Any]
    spec: Spec  # the cohort SQL, treatment, outcome and declared confounders


def parse_study(
    text: str, *, base: Path | None = None, name: str = "study", files: bool = True
) -> Study:
    """A study spec: ``[protocol]`` in the standard terms, and the cohort, features
    (the confounders, with declared bounds), outcome bounds and privacy of a model spec.

    >>> s = parse_study(EXAMPLE)
    >>> s.protocol["causal_contrast"], s.spec.treatment, sorted(s.spec.numeric)
    ('intention to treat', 'referred', ['age'])
    """
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidRequest(f"the study is not valid TOML: {exc}") from None
    protocol = doc.get("protocol")
    if not isinstance(protocol, dict):
        raise InvalidRequest("a study needs a [protocol] section")
    missing = [k for k in PROTOCOL if k not in protocol]
    if missing:
        raise InvalidRequest(f"[protocol] needs {', '.join(missing)}")
    assignment = protocol["assignment"]
    if not isinstance(assignment, dict) or not {"time_zero", "grace_period_days"} <= set(
        assignment
    ):
        raise InvalidRequest("[protocol.assignment] needs time_zero and grace_period_days")
    spec = specs.parse(text, base=base, name=name, files=files, sections=frozenset({"protocol"}))
    if spec.kind != "effect" or spec.outcome_type != "continuous" or not spec.treatment:
        raise InvalidRequest(
            'a study estimates an effect: [model] kind = "effect", outcome = "continuous" '
            "with outcome_bounds, and [cohort] treatment"
        )
    declared = set(spec.numeric) | set(spec.categorical)
    confounders = [str(c) for c in protocol["confounders"]]
    if set(confounders) != declared:
        raise InvalidRequest(
            "[protocol] confounders must be exactly the declared features "
            f"(declared: {', '.join(sorted(declared))})"
        )
    return Study(dict(protocol), spec)


def load_study(path: Path) -> Study:
    return parse_study(specs.read_text(path, "study"), base=path.parent, name=path.stem)


EXAMPLE: Final = """
[protocol]
eligibility = "adults with a first prediabetes diagnosis"
treatment_strategies = ["referral within 90 days", "no referral within 90 days"]
assignment = { time_zero = "first diagnosis", grace_period_days = 90 }
follow_up = "12 months"
outcome = "HbA1c change at 12 months"
causal_contrast = "intention to treat"
confounders = ["age"]

[cohort]
sql = "SELECT person_id, age, referred, change FROM t"
outcome = "change"
treatment = "referred"

[features.numeric]
age = [18, 100]

[model]
kind = "effect"
architecture = "linear"
outcome = "continuous"
outcome_bounds = [-15, 15]
"""


def run(
    service: QueryService, principal: Principal, project_id: str, study: Study
) -> dict[str, Any]:
    """Estimate a study's average effect in the hub and send it for steward review.

    As training does: plan (cohort checked, δ checked, nothing spent), reserve ε and δ in
    the project's ledger, read the cohort through governance (audited), estimate, commit
    (never refunded once data was read). The estimate then enters output review with its
    protocol, one ``trial.estimate`` audit entry written in the same transaction (before
    any answer). What comes back is the receipt: the trial and output ids, the protocol,
    ε and δ spent; the estimate itself is read from the approved output
    (``GET /v1/outputs/{id}/download``). Nothing in either is a count or a row."""
    spec = study.spec
    gov = service.gov
    user = principal.user
    prepared = gov.cohorts.prepare(principal, project_id, spec.sql)
    population = prepared.population
    delta = spec.delta if spec.delta is not None else DEFAULT_TRAINING_DELTA
    if delta > 0.1 / max(population, 1):
        raise InvalidRequest(
            f"δ = {delta:g} is too large for a release of {population:,} people: at most "
            f"{0.1 / population:.2g} (leave it out for the default)"
        )
    spend = gov.ledger.reserve(
        project_id, epsilon=spec.epsilon, delta=delta, purpose=f"trial aipw {spec.name}",
        actor=user.user_id, key_id=principal.key_id, role=user.role,
    )  # fmt: skip
    trial_id = "t-" + secrets.token_hex(6)
    release = prepared.release.id
    try:
        rows = gov.cohorts.read(principal, prepared)
        data = cohort.encode(spec, rows)
        assert data.treatment is not None
        keep = data.present
        est = aipw(data.x[keep], data.treatment[keep], data.y[keep], epsilon=spec.epsilon,
                   delta=delta)  # fmt: skip
        estimate = describe(study, est, delta=delta, release=release, trial_id=trial_id)
    except Exception:
        # whether a step after the read failed depends on the data: the modeller gets the
        # same receipt either way, and the steward reads that it failed (nothing leaves)
        estimate = failed(study, delta=delta, release=release, trial_id=trial_id)
    finally:
        # the whole reservation, failed or not: data was read, never refunded (see
        # ``models.training.train``)
        gov.ledger.commit(spend, actor=user.user_id)
    privacy = privacy_of(spec.epsilon, delta)  # the estimate's own, from the spec alone
    output_id = submissions.submit_trial(
        gov.outputs, principal, project_id, trial_id=trial_id, release=release,
        estimate=estimate,
        manifest={"study": spec.name, "protocol": study.protocol,
                  "cohort_sql_sha256": hashlib.sha256(spec.sql.encode()).hexdigest(),
                  **privacy,
                  # a failed one has nothing to release: review refuses to approve it
                  **({"failed": True, "reason": FAILED_REASON} if "failed" in estimate else {})},
        event=AuditEvent(
            action="trial.estimate", actor=user.user_id, key_id=principal.key_id,
            role=user.role, project=project_id, release=release, epsilon=spec.epsilon,
            delta=delta, details={"estimator": "aipw", "rho": privacy["rho"],
                                  "trial_id": trial_id, "certified_epsilon": privacy["epsilon"]},
        ),
    )  # fmt: skip
    return {
        "trial_id": trial_id,
        "output_id": output_id,
        "status": "pending",
        "study": spec.name,
        "protocol": study.protocol,
        "release": release,
        **privacy,
        "download_url": download_url(output_id),
    }


def privacy_of(epsilon: float, delta: float) -> dict[str, Any]:
    """What a trial spends, from its spec alone (never from what the estimate saw)."""
    rho = accounting.zcdp_rho(epsilon, delta)
    return {
        "epsilon": accounting.zcdp_epsilon(rho, delta),
        "delta": delta,
        "accountant": ACCOUNTANT,
        "rho": rho,
    }


def _about(study: Study, *, release: str, trial_id: str) -> dict[str, Any]:
    """What every trial output shows the steward, estimated or failed: the study."""
    spec = study.spec
    return {
        "trial_id": trial_id,
        "study": spec.name,
        "protocol": study.protocol,
        "cohort_sql": spec.sql,
        "treatment": spec.treatment,
        "outcome": spec.outcome,
        "release": release,
    }


def failed(study: Study, *, delta: float, release: str, trial_id: str) -> dict[str, Any]:
    """The output of a trial whose estimation failed after the read: for the steward
    (the protocol, the cohort and why nothing is released), the same privacy spent."""
    return {
        **_about(study, release=release, trial_id=trial_id),
        "failed": True,
        "reason": FAILED_REASON,
        **privacy_of(study.spec.epsilon, delta),
        "rho_shares": dict(SHARES),
    }


def describe(
    study: Study, est: Estimate, *, delta: float, release: str, trial_id: str
) -> dict[str, Any]:
    """The output a steward reviews: the protocol, the cohort SQL, the naive and the
    adjusted estimate with its interval in outcome units, and the privacy spent."""
    spec = study.spec
    lo, hi = spec.outcome_bounds or (0.0, 1.0)
    scale = hi - lo
    return {
        **_about(study, release=release, trial_id=trial_id),
        "estimator": "AIPW (AdaSSP nuisances; propensity clipped to "
        f"[{CLIP}, {1 - CLIP}]), differentially private",
        "average_effect": est.ate * scale,
        "ci95": [est.ci95[0] * scale, est.ci95[1] * scale],
        "naive_difference": est.naive * scale,
        "outcome_units": f"{spec.outcome} ({lo:g} to {hi:g})",
        "epsilon": est.epsilon,
        "delta": delta,
        "accountant": ACCOUNTANT,
        "rho": est.rho,
        "rho_shares": dict(SHARES),
    }
