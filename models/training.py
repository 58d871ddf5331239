"""Governed DP training inside the hub: spec in, card out, rows never leave.

Only the hub's process runs this (``hub train``, ``POST /v1/projects/{id}/models``); a
modeller's script talks to the hub over HTTP (:mod:`models.workbench`). The order makes
every refusal free and every failure after data is read data-independent:

1. **Plan, no data**: the cohort SQL is checked person-local with one row per person
   (``Governance.cohorts.prepare``); the sample rate comes from the planned number of
   people (``[training] expected_rows``, default the release's people), never the
   cohort's size; Opacus' accountant must reach ε for exactly those steps (or, for
   ``method = "adassp"``, the zCDP plan of its noisy statistics, :mod:`models.adassp`),
   and OpenDP must certify the held-out metrics' ε. δ is the spec's or ``DEFAULT_TRAINING_DELTA``.
2. **Reserve** training ε + metrics ε and δ in the project's ledger (atomic; a refusal
   says which of ε or δ ran out and by how much).
3. **Read, train, evaluate**: the rows are read through governance (audited), encoded
   (totally: an odd value is missing, never an error), split by a keyed hash, trained
   with DP-SGD (CSPRNG noise and Poisson masks) or AdaSSP (CSPRNG noise), evaluated
   with DP metrics for the card and exact metrics for the steward's file. Whatever
   happens, the reservation is committed: nothing is refunded once data was read.
"""

from __future__ import annotations

import io
import secrets
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from opacus.accountants.utils import get_noise_multiplier

from governance.access.people import Principal
from governance.audit.events import AuditEvent
from governance.errors import AccessDenied, InvalidRequest
from governance.privacy import accounting
from governance.privacy.accounting import DEFAULT_TRAINING_DELTA
from models import adassp, artifacts, cards, cohort, evaluation, features, learners, strata
from models.artifacts import TrainedModel
from models.spec import Spec

if TYPE_CHECKING:
    from governance.queries import QueryService

__all__ = ["TrainedModel", "load", "submit", "train"]


def _check_accountant(spec: Spec, planned_rows: int, delta: float) -> None:
    """The learner's accountant must reach ε (before any spend): Opacus' RDP accountant
    for the planned DP-SGD steps; for AdaSSP, the zCDP plan of its three releases."""
    if spec.learning_method == "adassp":
        width = learners.inputs(spec, len(features.Encoder(spec.numeric, spec.categorical).columns))
        planned = adassp.plan(spec.epsilon, delta, width)
        if not accounting.reachable(requested=spec.epsilon, certified=planned.epsilon):
            raise InvalidRequest(
                f"AdaSSP cannot reach ε = {spec.epsilon:g} at δ = {delta:g} (nothing was spent)"
            )
        return
    if spec.learning_method == "strata":
        if not accounting.reachable(
            requested=spec.epsilon, certified=strata.plan(spec, spec.epsilon, delta).epsilon
        ):
            raise InvalidRequest(
                f"the stratified release cannot reach ε = {spec.epsilon:g} at δ = {delta:g} "
                "(nothing was spent)"
            )
        return
    config = learners.fit_config(spec, planned_rows)
    steps = config.steps_per_epoch(planned_rows) * config.epochs
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            get_noise_multiplier(
                target_epsilon=spec.epsilon, target_delta=delta,
                sample_rate=config.sample_rate(planned_rows), steps=steps, accountant="rdp",
            )  # fmt: skip
    except Exception:
        raise InvalidRequest(
            f"the accountant cannot reach ε = {spec.epsilon:g} at δ = {delta:g} in {steps} "
            "steps: raise ε or δ, or train for fewer epochs (nothing was spent)"
        ) from None


def train(
    service: QueryService,
    principal: Principal,
    project_id: str,
    spec: Spec,
    *,
    on_step: Callable[[int], None] | None = None,
    on_start: Callable[[int], None] | None = None,
    split_key: bytes | None = None,
) -> TrainedModel:
    """Plan, reserve, read, train, evaluate and write the model (see the module doc)."""
    gov = service.gov
    user = principal.user
    prepared = gov.cohorts.prepare(principal, project_id, spec.sql)
    population = prepared.population
    planned = spec.training.expected_rows or population
    delta = spec.delta if spec.delta is not None else DEFAULT_TRAINING_DELTA
    if delta > 0.1 / max(population, 1):
        raise InvalidRequest(
            f"δ = {delta:g} is too large for a release of {population:,} people: at most "
            f"{0.1 / population:.2g} (leave it out for the default)"
        )
    _check_accountant(spec, planned, delta)
    dp_plan = evaluation.plan(spec)
    spend = gov.ledger.reserve(
        project_id, epsilon=spec.epsilon + dp_plan.epsilon, delta=delta,
        purpose=f"{spec.learning_method} {spec.kind} {spec.name}", actor=user.user_id,
        key_id=principal.key_id, role=user.role,
    )  # fmt: skip
    if on_start is not None:
        on_start(learners.steps(spec, planned))
    # data is read from here on: the reservation is committed whatever happens
    try:
        rows = gov.cohorts.read(principal, prepared)
        data = cohort.encode(spec, rows)
        salt = split_key if split_key is not None else secrets.token_bytes(16)
        held_out = cohort.split(data.keys, salt, spec.training.holdout)
        train_rows, test_rows = data.present & ~held_out, data.present & held_out
        t = data.treatment
        module, extra, fits = learners.fit(
            spec, data.x[train_rows], data.y[train_rows],
            t[train_rows] if t is not None else None, planned_rows=planned,
            epsilon=spec.epsilon, delta=delta, on_step=on_step,
        )  # fmt: skip
        model_id = "m-" + secrets.token_hex(6)
        xt, yt = data.x[test_rows], data.y[test_rows]
        tt = t[test_rows] if t is not None else None
        shell: dict[str, Any] = {
            "model_kind": spec.kind, "learner": spec.learner, "outcome_type": spec.outcome_type,
            "outcome_bounds": list(spec.outcome_bounds) if spec.outcome_bounds else None,
            "modifier_columns": learners.modifier_columns(spec),
        }  # fmt: skip
        noisy = evaluation.dp_metrics(dp_plan, shell, module, extra, xt, yt, tt)
        card = cards.build(
            model_id=model_id, spec=spec, project_id=project_id, release=rows.release,
            author=user.user_id, columns=data.columns, planned_rows=planned, delta=delta,
            fits=fits, dp_metrics=noisy,
        )  # fmt: skip
        exact, bins = evaluation.exact_metrics(card, module, extra, xt, yt, tt)
        png = None
        if bins:
            buffer = io.BytesIO()
            cards.calibration_plot(
                bins, card["name"], buffer, intercept=exact.get("calibration_intercept"),
                slope=exact.get("calibration_slope"),
            )  # fmt: skip
            png = buffer.getvalue()
        steward = {
            "note": "exact statistics of held-out people: for output review only",
            "rows": {"training": int(train_rows.sum()), "held_out": int(test_rows.sum())},
            "exact_metrics": exact,
            "calibration_bins": bins,
        }
        trained = TrainedModel(model_id, module, card, None, extra)
        artifacts.write(
            artifacts.models_dir(service, project_id), trained, spec=spec, salt=salt,
            steward=steward, calibration_png=png, markdown=cards.markdown(card),
        )  # fmt: skip
    except BaseException:
        gov.ledger.commit(spend, actor=user.user_id)  # data was read: no refund
        raise
    # the whole reservation is spent, as it is when a run fails: committing the
    # accountant's certified ε instead (a hair below) would publish, on the public
    # register's ε used, which runs failed, and a failure can depend on the data
    spent = spec.epsilon + dp_plan.epsilon
    gov.ledger.commit(spend, actor=user.user_id)
    gov.audit.record(AuditEvent(
        action="train.model", actor=user.user_id, key_id=principal.key_id, role=user.role,
        project=project_id, release=rows.release, epsilon=spent, delta=delta,
        target=model_id, result_sha256=card["artifact_sha256"],
        details={"kind": spec.kind, "method": card["method"],
                 "certified_epsilon": card["epsilon_total"],
                 "noise_multiplier": card["noise_multiplier"], "epochs": card["epochs"]},
    ))  # fmt: skip
    return trained


def load(service: QueryService, project_id: str, model_id: str) -> TrainedModel:
    return artifacts.load(artifacts.models_dir(service, project_id), project_id, model_id)


def submit(service: QueryService, principal: Principal, project_id: str, model_id: str) -> str:
    """Ask a steward to release a model out of the hub (its card and weights' hash)."""
    trained = load(service, project_id, model_id)
    if trained.card["author"] != principal.user.user_id:
        raise AccessDenied("only the model's author submits it for release")
    return service.submit_model(
        principal, project_id, model_id=model_id, release=trained.card["release"],
        card=trained.card, artifact_sha256=trained.card["artifact_sha256"],
    )  # fmt: skip
