"""Governed DP-SGD: extraction through the policy and audit, Opacus, the shared ledger."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
import torch

from connectors.ingest import ingest
from connectors.secrets import resolve_keys
from governance.errors import AccessDenied, BudgetExhausted, PolicyViolation
from governance.queries import QueryService
from governance.service import Governance
from models.training import auroc, extract, train_logistic

SQL = (
    "SELECT max(p.year_of_birth) AS year_of_birth, max(p.imd_decile) AS imd_decile, "
    "max(CASE WHEN c.code = '44054006' THEN 1 ELSE 0 END) AS t2d "
    "FROM patients p LEFT JOIN conditions c USING (person_id) GROUP BY p.person_id"
)
BOUNDS = {"year_of_birth": (1910.0, 2025.0), "imd_decile": (1.0, 10.0)}


@pytest.fixture(scope="module")
def setup(population_3k, tmp_path_factory):
    home = tmp_path_factory.mktemp("train") / "hub"
    ingest(population_3k, fmt="native", home=home, keys=resolve_keys(home, create=True))
    gov = Governance.open(home, create_keys=True)
    until = dt.date.today() + dt.timedelta(days=30)
    people = {}
    for user_id, role in (
        ("ana", "researcher"),
        ("mo", "modeller"),
        ("max", "modeller"),
        ("sam", "steward"),
    ):
        _, key = gov.people.add(
            user_id=user_id,
            name=user_id,
            role=role,
            organisation="UoB",
            organisation_type="university",
            accreditation_expires=until,
            actor="test",
        )
        people[user_id] = gov.people.authenticate(key)
    grants = {
        "patients": ["person_id", "year_of_birth", "imd_decile"],
        "conditions": ["person_id", "code"],
    }
    project = gov.projects.request(
        requester=people["ana"].user,
        title="risk",
        purpose="T2D risk model",
        lay_summary="Predicting diabetes",
        grants=grants,
        days=30,
        members=["mo", "max"],
    )
    gov.projects.approve(
        project.project_id, steward=people["sam"].user, epsilon=4.0, delta=1e-5, trainers=["mo"]
    )
    return gov, QueryService(gov), project.project_id, people


def test_a_dp_logistic_regression_learns_the_planted_age_signal_and_is_charged_exactly(setup):
    gov, service, pid, who = setup
    table, release = extract(service, who["mo"], pid, sql=SQL, label="t2d", bounds=BOUNDS)
    assert (
        table.features.shape == (3000, 2)
        and table.features.min() >= 0
        and table.features.max() <= 1
    )
    before = gov.ledger.state(pid).epsilon_spent
    model, card = train_logistic(
        service, who["mo"], pid, table, release=release, epsilon=3.0, epochs=10, seed=1
    )
    with torch.no_grad():
        scores = model(torch.from_numpy(table.features)).squeeze(-1).numpy()
    auc = auroc(scores, table.labels)
    assert auc > 0.65, auc  # older people (earlier birth years) get type 2 diabetes more
    assert card.epsilon <= 3.0 + 1e-6 and card.noise_multiplier > 0 and card.accountant == "rdp"
    assert gov.ledger.state(pid).epsilon_spent == pytest.approx(before + card.epsilon)
    actions = [e["action"] for e in gov.audit.entries(project=pid, limit=20)]
    assert "train.extract" in actions and "train.logistic" in actions


def test_only_named_trainers_train_and_only_within_grants_and_budget(setup):
    _, service, pid, who = setup
    with pytest.raises(AccessDenied):
        extract(service, who["max"], pid, sql=SQL, label="t2d", bounds=BOUNDS)
    with pytest.raises(AccessDenied):
        extract(service, who["ana"], pid, sql=SQL, label="t2d", bounds=BOUNDS)
    with pytest.raises(PolicyViolation):
        extract(
            service,
            who["mo"],
            pid,
            sql="SELECT sex, year_of_birth AS t2d FROM patients",
            label="t2d",
            bounds=BOUNDS,
        )
    table, release = extract(service, who["mo"], pid, sql=SQL, label="t2d", bounds=BOUNDS)
    with pytest.raises(BudgetExhausted):
        train_logistic(service, who["mo"], pid, table, release=release, epsilon=50.0)


def test_auroc_matches_its_definition():
    labels = np.array([0, 0, 1, 1])
    assert auroc(np.array([0.1, 0.4, 0.35, 0.8]), labels) == 0.75
    assert auroc(np.array([1, 2, 3, 4]), labels) == 1.0
