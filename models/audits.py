"""A steward's empirical privacy audit of a trained model (never shown to the modeller).

The cohort is read again through governance on the model's own release (audited as
``model.audit.extract``; rows stay in the hub's process), split exactly as in training
with the model's split key, and the membership-inference attacks of :mod:`models.mia`
are run. The result goes to the model's steward file and, if the model awaits release,
to its output for review. See ``cards.AUDIT_LIMITS`` for what it can and cannot show.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from governance.access.people import Principal
from governance.errors import Conflict
from models import artifacts, cards, cohort, learners, mia
from models.spec import Spec

if TYPE_CHECKING:
    from governance.queries import QueryService


def audit_model(
    service: QueryService, principal: Principal, project_id: str, model_id: str
) -> dict[str, Any]:
    trained = artifacts.load(artifacts.models_dir(service, project_id), project_id, model_id)
    folder = trained.folder
    assert folder is not None
    spec = artifacts.spec_from_dict(json.loads((folder / "spec.json").read_text()))
    if hashlib.sha256(spec.sql.encode()).hexdigest() != trained.card["cohort_sql_sha256"]:
        raise Conflict(f"model {model_id}: its stored cohort does not match its card")
    gov = service.gov
    prepared = gov.cohorts.prepare(
        principal, project_id, spec.sql, purpose="audit", release_id=trained.card["release"]
    )
    data = cohort.encode(spec, gov.cohorts.read(principal, prepared))
    held_out = cohort.split(data.keys, (folder / "split.key").read_bytes(), spec.training.holdout)
    report = membership(
        spec, trained.module, data, data.present & ~held_out, data.present & held_out,
        card=trained.card,
    )  # fmt: skip
    report.update(
        run_by=principal.user.user_id, at=cards.now(),
        accountant_epsilon=trained.card["epsilon"], limits=cards.AUDIT_LIMITS,
    )  # fmt: skip
    record = artifacts.steward_record(folder)
    record["membership_inference"] = report
    (folder / "steward.json").write_text(json.dumps(record, indent=2) + "\n")
    output_id = service.model_output(model_id)
    if output_id is not None:
        service.record_model_audit(principal, output_id, report)
    else:
        service.audit(
            principal, action="model.audit", project=project_id, target=model_id,
            details={"attack_auc": report["attack_auc"]},
        )  # fmt: skip
    return report


def membership(
    spec: Spec,
    module: torch.nn.Module,
    data: cohort.Cohort,
    members: np.ndarray,
    non_members: np.ndarray,
    *,
    card: dict[str, Any],
) -> dict[str, Any]:
    """The attacks on ``module`` over the rows it was and was not trained on, with
    reference models and a canary run of the model's own recipe (its ε, δ, steps)."""
    x, y, t = data.x, data.y, data.treatment
    if spec.kind == "effect":
        assert t is not None
        if spec.learner == "s":
            x = learners.design(x, t, learners.modifier_columns(spec))
        else:  # the T-learner's treated-arm model, attacked on the treated
            members, non_members = members & (t == 1), non_members & (t == 1)
    config = learners.fit_config(spec, int(card["planned_rows"]))
    loss = learners.loss_of(spec.outcome_type)
    # DP-SGD is replayed by mia from ``config``; a one-release learner by its own recipe
    recipe = "dp-sgd" if spec.learning_method == "dp-sgd" else learners.replay(spec)
    width = x.shape[1]

    def fresh() -> torch.nn.Module:
        return learners.module(spec, width)

    result = mia.audit(
        module, fresh=fresh, members=(x[members], y[members]),
        non_members=(x[non_members], y[non_members]), loss=loss, config=config,
        epsilon=card["epsilon_target"], delta=card["delta"], method=recipe,
    )  # fmt: skip
    canary = mia.canary_audit(
        fresh, x[members], y[members], loss=loss, config=config,
        epsilon=card["epsilon_target"], delta=card["delta"], method=recipe,
    )  # fmt: skip
    return {**result.as_dict(), "canary": canary.as_dict()}
