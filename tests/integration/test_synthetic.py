"""DP synthetic data through governance: the ledger's charge and refusals, the governed
cohort, the evaluation's figures, and the file that would be released."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from governance.errors import AccessDenied, BudgetExhausted, PolicyViolation
from governance.facade import Governance
from models import synthetic
from models.synthetic_spec import parse
from tests.homes import add_people, approved_project, publish
from tests.synthetic_specs import small_spec

GRANTS = {
    "patients": ["person_id", "year_of_birth", "imd_decile", "sex"],
    "conditions": ["person_id", "code"],
}


@pytest.fixture(scope="module")
def hub(population_3k, tmp_path_factory):
    home = tmp_path_factory.mktemp("synthetic") / "hub"
    publish(population_3k, home)
    gov = Governance.open(home, create_keys=True)
    who = add_people(gov, ana="researcher", sam="steward", mo="modeller")
    return gov, who


def _project(hub, epsilon: float, delta: float = 1e-5) -> str:
    gov, who = hub
    return approved_project(gov, who["ana"], who["sam"], GRANTS, epsilon=epsilon, delta=delta)


def _steward_record(hub, project_id: str, made: dict) -> dict:
    gov, who = hub
    return synthetic.steward_record(gov.queries, who["sam"], project_id, made["dataset_id"])


def _actions(gov: Governance, project_id: str) -> list[tuple[str, str]]:
    entries = gov.audit.entries(project=project_id, limit=1000)
    return [(e["action"], e["decision"]) for e in reversed(entries)]  # oldest first


def test_a_synthetic_dataset_charges_its_epsilon_and_delta_and_waits_for_review(hub):
    gov, who = hub
    pid = _project(hub, epsilon=2.0)
    out = synthetic.generate(gov.queries, who["ana"], pid, parse(small_spec(1.0)))
    state = gov.ledger.state(pid)
    assert state.epsilon_spent == pytest.approx(1.0)
    assert state.delta_spent == pytest.approx(1e-7)
    card = out["card"]
    assert card["epsilon"] == 1.0 and card["rho_certified"] <= card["rho_zcdp"]
    assert out["status"] == "pending"
    assert gov.outputs.row(out["output_id"])["kind"] == "synthetic"
    actions = _actions(gov, pid)
    assert ("synthetic.extract", "allowed") in actions
    assert ("synthetic.generate", "allowed") in actions
    assert actions.index(("budget.reserve", "allowed")) < actions.index(
        ("synthetic.extract", "allowed")
    )


def test_over_budget_is_refused_before_any_row_is_read_saying_what_ran_out(hub):
    gov, who = hub
    pid = _project(hub, epsilon=0.5)
    with pytest.raises(BudgetExhausted, match=r"epsilon runs out: asked 1, 0\.5 left"):
        synthetic.generate(gov.queries, who["ana"], pid, parse(small_spec(1.0)))
    tight = _project(hub, epsilon=5.0, delta=1e-8)
    with pytest.raises(BudgetExhausted, match="delta runs out"):
        synthetic.generate(gov.queries, who["ana"], tight, parse(small_spec(1.0)))
    for project in (pid, tight):
        assert gov.ledger.state(project).epsilon_spent == 0
        assert ("synthetic.extract", "allowed") not in _actions(gov, project)
        assert not synthetic.folder(gov.queries, project).exists()


def test_ungranted_columns_and_non_members_are_refused_for_free(hub):
    gov, who = hub
    pid = _project(hub, epsilon=2.0)
    spec = small_spec(1.0).replace("max(p.sex) AS sex", "max(p.ethnicity) AS sex")
    with pytest.raises(PolicyViolation):
        synthetic.generate(gov.queries, who["ana"], pid, parse(spec))
    with pytest.raises(AccessDenied):  # a steward is not a project's researcher
        synthetic.generate(gov.queries, who["sam"], pid, parse(small_spec(1.0)))
    assert gov.ledger.state(pid).epsilon_spent == 0


def test_more_epsilon_gives_closer_marginals(hub):
    gov, who = hub
    pid = _project(hub, epsilon=20.0)
    errors = {}
    fits = {}
    for eps in (0.05, 10.0):
        made = synthetic.generate(gov.queries, who["ana"], pid, parse(small_spec(eps)))
        errors[eps] = _steward_record(hub, pid, made)["utility"]
        fits[eps] = made["card"]["evaluation"]["fit_to_measurements"]
    # the released fit to the DP measurements is a figure of the DP outputs: it exists at
    # any ε and is near zero where the noise is small
    assert fits[10.0]["marginal_tv_2way"] < 0.05 and fits[0.05]["marginal_tv_2way"] is not None
    assert errors[10.0]["marginal_tv_2way"] < errors[0.05]["marginal_tv_2way"]
    assert errors[10.0]["marginal_tv_1way"] < errors[0.05]["marginal_tv_1way"]
    assert errors[10.0]["marginal_tv_2way"] < 0.05


def test_the_evaluation_and_the_file_carry_no_real_identifier(hub):
    gov, who = hub
    pid = _project(hub, epsilon=5.0)
    out = synthetic.generate(gov.queries, who["ana"], pid, parse(small_spec(3.0)))
    # figures computed on real people never reach the requester: not in what generate
    # returns, not in the stored card that is downloaded once approved
    released = out["card"]["evaluation"]
    assert set(released) == {"fit_to_measurements", "steward_review"}
    stored = gov.outputs.row(out["output_id"])["result"]
    assert set(json.loads(stored)["evaluation"]) == {"fit_to_measurements", "steward_review"}
    assert "attack_auc" not in stored and "auroc" not in stored and "cramer" not in stored
    with pytest.raises(AccessDenied):  # the requester cannot read the steward's record
        synthetic.steward_record(gov.queries, who["ana"], pid, out["dataset_id"])
    ev = _steward_record(hub, pid, out)
    # the membership check finds no signal: the generator's people are not closer
    assert 0.4 <= ev["membership"]["attack_auc"] <= 0.6
    t = ev["train_on_synthetic"]
    assert t["outcome"] == "t2d" and t["auroc_train_synthetic"] is not None
    assert t["auroc_train_real"] - t["auroc_train_synthetic"] < 0.1
    table = pq.read_table(synthetic.folder(gov.queries, pid) / out["dataset_id"] / "data.parquet")
    assert table.column_names == ["year_of_birth", "imd_decile", "sex", "t2d"]
    assert "person_id" not in table.column_names
    assert table.num_rows > 2000
    declared = out["card"]["columns"]
    for name in table.column_names:
        assert set(table.column(name).to_pylist()) <= {*declared[name], None}
    people = {str(r[0]) for r in gov.queries.engine(gov.queries.release_for("real")).run(
        "SELECT person_id FROM patients", max_rows=10_000).rows}  # fmt: skip
    cells = {str(v) for c in table.column_names for v in table.column(c).to_pylist()}
    assert not people & cells
