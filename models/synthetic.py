"""DP synthetic data inside the hub: spec in, a pending output with its data card out.

A life-science company prototyping a product asks for rows to build against. The hub
makes a differentially private synthetic copy of the project's granted person-level
table (:mod:`models.synthesis`, MST on ``mbi``) and sends it to steward review; the
researcher downloads it as Parquet once approved. The order follows training
(:mod:`models.training`), so every refusal is free and nothing after the read depends
on the data:

1. **Plan, no data**: the cohort SQL is checked person-local with one row per person,
   granted columns only (``Governance.cohorts.prepare``, purpose ``synthetic``); OpenDP
   certifies the noise of every measurement for ρ-zCDP converted from (ε, δ).
2. **Reserve** ε and δ in the project's ledger (atomic; a refusal says which of ε or δ
   ran out and by how much).
3. **Read, generate, evaluate**: the rows are read through governance (audited), split by
   a keyed hash into the generator's input and held-out people, encoded (totally),
   synthesised, and evaluated (:mod:`models.synthetic_eval`: aggregates only). The
   Parquet file and the data card are written, then the spend is committed and the output
   entered for review in one transaction. Whatever fails after the read, the reservation
   is committed: nothing is refunded once data was read.
"""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from governance.access import roles
from governance.access.people import Principal
from governance.errors import Conflict, InvalidRequest
from governance.outputs import submissions
from governance.privacy.accounting import DEFAULT_TRAINING_DELTA
from models import cohort, synthesis, synthetic_eval
from models.synthetic_spec import SyntheticSpec

if TYPE_CHECKING:
    from governance.queries import QueryService

__all__ = ["datasets", "generate", "steward_record"]

STEWARD_RECORD = "steward_evaluation.json"

DEFAULT_DELTA = DEFAULT_TRAINING_DELTA  # far below 1/n for any release the hub holds
FAILED = "the synthetic dataset could not be made (no output; the reservation is kept)"


class SynthesisFailed(Conflict):
    """Generation failed after data was read (a fixed, data-free message)."""

    code = "no_answer"


def folder(service: QueryService, project_id: str) -> Path:
    return service.workspace(project_id) / "synthetic"


def generate(
    service: QueryService,
    principal: Principal,
    project_id: str,
    spec: SyntheticSpec,
    *,
    split_key: bytes | None = None,
) -> dict[str, Any]:
    """Plan, reserve, read, generate, evaluate, enter for review (see the module doc)."""
    gov = service.gov
    user = principal.user
    prepared = gov.cohorts.prepare(principal, project_id, spec.sql, purpose="synthetic")
    population = prepared.population
    delta = spec.delta if spec.delta is not None else DEFAULT_DELTA
    if not 0 < delta <= 0.1 / max(population, 1):
        raise InvalidRequest(
            f"δ = {delta:g} must be above 0 and at most {0.1 / population:.2g} for a release "
            f"of {population:,} people (leave it out for the default)"
        )
    planned = synthesis.plan(spec, delta)
    spend = gov.ledger.reserve(
        project_id, epsilon=spec.epsilon, delta=delta, purpose=f"synthetic data {spec.name}",
        actor=user.user_id, key_id=principal.key_id, role=user.role,
    )  # fmt: skip
    started = time.perf_counter()
    # data is read from here on: the reservation is committed whatever happens
    try:
        rows = gov.cohorts.read(principal, prepared)
        # without the key column the split falls back on row order (never on a value)
        keys = list(rows.columns.get(spec.key) or range(len(rows)))
        codes = synthesis.encode(spec, rows.columns)
        salt = split_key if split_key is not None else secrets.token_bytes(16)
        held_out = cohort.split(keys, salt, spec.holdout)
        train = {c: v[~held_out] for c, v in codes.items()}
        holdout = {c: v[held_out] for c, v in codes.items()}
        synthetic, measured = synthesis.generate(spec, planned, train)
        evaluation: dict[str, Any] = {
            "utility": synthetic_eval.utility(spec, train, synthetic),
            "train_on_synthetic": synthetic_eval.tstr(spec, train, holdout, synthetic),
            "membership": synthetic_eval.membership(spec, train, holdout, synthetic),
        }
        dataset_id = "s-" + secrets.token_hex(6)
        out = folder(service, project_id) / dataset_id
        out.mkdir(parents=True, exist_ok=True)
        parquet = out / "data.parquet"
        decoded = synthesis.decode(spec, synthetic)
        pq.write_table(pa.table({c: pa.array(v, pa.string()) for c, v in decoded.items()}),
                       parquet)  # fmt: skip
        card = _card(spec, project_id, dataset_id, rows.release, user.user_id, delta, planned,
                     measured, len(decoded[spec.columns[0]]))  # fmt: skip
        # how long it took grows with the real cohort's size, an exact figure: the
        # steward's, like the evaluation
        evaluation["seconds"] = round(time.perf_counter() - started, 2)
        (out / "card.json").write_text(json.dumps(card, indent=2, default=str))
        # the exact evaluation on real people is the steward's record, never released
        (out / STEWARD_RECORD).write_text(json.dumps(evaluation, indent=2, default=str))
        (out / "spec.toml").write_text(spec.source)
    except BaseException as exc:
        gov.ledger.commit(spend, actor=user.user_id)  # data was read: no refund
        if not isinstance(exc, Exception):
            raise
        service.audit(principal, action="synthetic.generate", project=project_id,
                      reason=FAILED, details={"outcome": "no_answer"})  # fmt: skip
        raise SynthesisFailed(FAILED) from None
    output_id = submissions.submit_synthetic(
        gov.outputs, principal, project_id, dataset_id=dataset_id, release=rows.release,
        card=card, parquet=parquet, spend_id=spend, epsilon=spec.epsilon, delta=delta,
    )  # fmt: skip
    return {"dataset_id": dataset_id, "output_id": output_id, "status": "pending", "card": card}


def _card(
    spec: SyntheticSpec,
    project_id: str,
    dataset_id: str,
    release: str,
    author: str,
    delta: float,
    planned: synthesis.Plan,
    measured: dict[str, Any],
    rows: int,
) -> dict[str, Any]:
    """The data card: what the table is, what it cost, how good and how private it is."""
    return {
        "dataset_id": dataset_id,
        "name": spec.name,
        "project": project_id,
        "release": release,
        "author": author,
        "method": "MST (Private-PGM / mbi 2.0), OpenDP noise",
        "epsilon": spec.epsilon,
        "delta": delta,
        "rho_zcdp": planned.rho,
        "rho_certified": planned.certified_rho,
        "noise": {
            "sigma_1way": planned.sigma_one,
            "sigma_2way": planned.sigma_two,
            "selection_gumbel_scale": planned.gumbel_scale,
        },
        "measured": measured,
        "rows": rows,
        "columns": {c: spec.levels(c) for c in spec.columns},
        "generator_input_share": 1 - spec.holdout,
        # released: figures from DP outputs only (post-processing). The exact utility,
        # train-on-synthetic and membership figures on real people stay with the steward
        "evaluation": {
            "fit_to_measurements": measured.get("fit_to_measurements"),
            "steward_review": "a steward approved this dataset after reading its exact "
            "utility, train-on-synthetic and membership figures, computed on real people "
            "and kept in the hub",
        },
        "intended_use": spec.intended_use,
        "limitations": [
            "Numbers are binned to the declared levels; 'missing' (null) stands for absent "
            "or undeclared values.",
            "Only the measured marginals (all 1-way, the listed 2-way) are kept; relations "
            "among three or more columns come from the model, not the data.",
            "The figures released with the card come from DP outputs only (how closely "
            "the rows fit the noisy marginals); figures computed on real people are the "
            "steward's and never leave the hub.",
            f"Generated from {1 - spec.holdout:.0%} of the cohort; the rest is held out for "
            "the evaluation.",
        ],
        "cohort_sql": spec.sql,
    }


def steward_record(
    service: QueryService, principal: Principal, project_id: str, dataset_id: str
) -> dict[str, Any]:
    """The exact evaluation on real people (utility, train-on-synthetic, membership), for
    the stewards who review the dataset; its requester never sees it."""
    roles.require(principal.user, "output.review")
    if not dataset_id.startswith("s-") or not dataset_id[2:].isalnum():
        raise InvalidRequest("not a synthetic dataset id")
    path = folder(service, project_id) / dataset_id / STEWARD_RECORD
    if not path.is_file():
        return {}
    record: dict[str, Any] = json.loads(path.read_text())
    return record


def datasets(service: QueryService, principal: Principal, project_id: str) -> list[dict[str, Any]]:
    """The project's synthetic datasets with their review status (members and stewards)."""
    service.project_for(principal, project_id)
    return [
        {
            "output_id": o["output_id"],
            "dataset_id": o["query_id"],
            "status": o["status"],
            "download_url": o.get("download_url"),
        }
        for o in service.gov.outputs.find(principal, project_id=project_id)
        if o.get("kind") == "synthetic"
    ]
