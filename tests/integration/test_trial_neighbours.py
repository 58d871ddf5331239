"""Neighbour and charge properties of the intervention-testing paths through the service:
an emulated trial's DP estimate (``models.trial.run``) and AdaSSP training.

The cohort is read through governance exactly as the service reads it (checked,
person-local, one row per person, audited), encoded with the study's declared bounds,
and then one person is removed. Every statistic the estimate or the learner releases
with noise must move by no more than the sensitivity its noise is scaled to, for any
person and any nuisance models (the nuisances are earlier DP releases: fixed by
post-processing). And the ledger must be charged exactly the declared (ε, δ), no more
and no less, whatever ε the study declares."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from governance.errors import Conflict
from governance.facade import Governance
from models import adassp, cohort, learners, strata, training, trial
from models.spec import parse
from synthetic_data.generator import SynthConfig, generate
from tests.e2e.test_cli_trial import STUDY
from tests.homes import add_people, approved_project, publish

GRANTS = {"patients": ["person_id", "year_of_birth", "sex", "imd_decile"]}
ADASSP_SPEC = STUDY.split("[protocol]")[0] + STUDY.split('confounders = ["year_of_birth"]')[
    1
].replace("outcome_bounds = [1, 10]", 'outcome_bounds = [1, 10]\nmethod = "adassp"')
STRATA_SPEC = ADASSP_SPEC.replace(
    'method = "adassp"', 'method = "strata"\nmodifiers = ["year_of_birth"]'
) + ("\n[model.strata]\nyear_of_birth = [1940, 1960, 1980, 2000]\n")
MODULE_SETTINGS = settings(
    deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("trial-neighbours")
    src = generate(SynthConfig(patients=600, seed=31), root / "src").out
    home = root / "hub"
    publish(src, home)
    gov = Governance.open(home, create_keys=True)
    who = add_people(gov, ana="researcher", mo="modeller", sam="steward")
    pid = approved_project(
        gov, who["ana"], who["sam"], GRANTS, epsilon=100.0, delta=1e-3, members=["mo"],
        trainers=["mo"],
    )  # fmt: skip
    study = trial.parse_study(STUDY)
    prepared = gov.cohorts.prepare(who["mo"], pid, study.spec.sql)
    data = cohort.encode(study.spec, gov.cohorts.read(who["mo"], prepared))
    assert data.treatment is not None
    keep = data.present
    return gov, who, pid, study, (data.x[keep], data.treatment[keep], data.y[keep])


@MODULE_SETTINGS
@given(
    who=st.integers(0, 10_000),
    nuisance=st.tuples(*(st.floats(-3.0, 3.0) for _ in range(6))),
)
def test_removing_one_person_moves_each_released_trial_sum_within_its_sensitivity(
    world, who, nuisance
):
    _, _, _, _, (x, t, y) = world
    person = who % len(x)
    # any nuisance models: linear in the confounder, fixed for both neighbours
    a1, b1, a0, b0, ae, be = nuisance
    m1, m0, e = a1 + b1 * x[:, 0], a0 + b0 * x[:, 0], ae + be * x[:, 0]
    psi = trial.pseudo_outcomes(m1, m0, e, t, y)
    full = trial.statistics(psi, t, y)
    rest = np.arange(len(x)) != person
    without = trial.statistics(psi[rest], t[rest], y[rest])
    sens = trial.SENSITIVITY
    tol = 1e-9
    assert abs(full["psi_sum"] - without["psi_sum"]) <= sens["psi_sum"] + tol
    assert abs(full["psi_square_sum"] - without["psi_square_sum"]) <= (sens["psi_square_sum"] + tol)
    assert full["count"] - without["count"] == sens["count"]
    # the naive sums: only the person's own arm moves (parallel composition)
    own, other = ("treated", "untreated") if t[person] == 1 else ("untreated", "treated")
    assert abs(full[f"{own}_outcome_sum"] - without[f"{own}_outcome_sum"]) <= (
        sens["arm_outcome_sum"] + tol
    )
    assert full[f"{own}_count"] - without[f"{own}_count"] == sens["arm_count"]
    for key in (f"{other}_outcome_sum", f"{other}_count"):
        assert full[key] == without[key]


@MODULE_SETTINGS
@given(who=st.integers(0, 10_000), epsilon=st.floats(0.1, 10.0))
def test_removing_one_person_moves_adasspss_statistics_within_the_planned_sensitivity(
    world, who, epsilon
):
    """AdaSSP on the service's cohort (the S-learner design of features, treatment and
    interactions): the plan the card reports bounds what one person can move."""
    *_, (x, t, y) = world
    spec = parse(ADASSP_SPEC)
    design = learners.design(x, t, learners.modifier_columns(spec))
    plan = adassp.plan(epsilon, 1e-7, design.shape[1])
    person = who % len(x)
    rest = np.arange(len(x)) != person
    xtx, xty, lam = adassp.statistics(design, y)
    xtx_n, xty_n, lam_n = adassp.statistics(design[rest], y[rest])
    tol = 1e-9
    assert np.linalg.norm(xtx - xtx_n) <= plan.sensitivity[1] + tol
    assert np.linalg.norm(xty - xty_n) <= plan.sensitivity[2] + tol
    assert abs(lam - lam_n) <= plan.sensitivity[0] + tol


@MODULE_SETTINGS
@given(who=st.integers(0, 10_000), epsilon=st.floats(0.1, 10.0))
def test_removing_one_person_moves_one_stratum_count_and_sum_within_the_planned_sensitivity(
    world, who, epsilon
):
    """The stratified learner on the service's cohort: one person is in one stratum and
    arm, so leaving moves one count by exactly 1 and one outcome sum by at most ½."""
    *_, (x, t, y) = world
    spec = parse(STRATA_SPEC)
    plan = strata.plan(spec, epsilon, 1e-7)
    design = learners.design(x, t, learners.modifier_columns(spec))
    rest = np.arange(len(x)) != who % len(x)
    counts, sums = strata.tabulate(plan, design, y)
    counts_n, sums_n = strata.tabulate(plan, design[rest], y[rest])
    assert np.flatnonzero(counts != counts_n).size == 1
    assert np.abs(counts - counts_n).sum() == plan.sensitivity[0]
    assert np.linalg.norm(sums - sums_n) <= plan.sensitivity[1] + 1e-9


@settings(max_examples=5, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    epsilon=st.floats(0.1, 4.0),
    delta=st.sampled_from([None, 1e-7, 5e-7, 1e-6]),
)
def test_a_trial_through_the_service_charges_exactly_what_it_declares(world, epsilon, delta):
    gov, who, pid, study, _ = world
    spec = dataclasses.replace(study.spec, epsilon=epsilon, delta=delta)
    before = gov.ledger.state(pid)
    receipt = trial.run(gov.queries, who["mo"], pid, dataclasses.replace(study, spec=spec))
    after = gov.ledger.state(pid)
    declared_delta = 1e-7 if delta is None else delta  # the default training δ
    assert after.epsilon_spent - before.epsilon_spent == pytest.approx(epsilon, rel=1e-6)
    assert after.delta_spent - before.delta_spent == pytest.approx(declared_delta, rel=1e-9)
    assert receipt["epsilon"] == pytest.approx(epsilon, rel=1e-6)
    [entry] = gov.audit.entries(project=pid, action="trial.estimate", limit=1)
    assert entry["target"] == receipt["output_id"]
    assert entry["epsilon"] == pytest.approx(epsilon, rel=1e-6)
    output = gov.outputs.row(receipt["output_id"])
    assert output["status"] == "pending" and output["kind"] == "trial"


@settings(max_examples=4, deadline=None, suppress_health_check=list(HealthCheck))
@given(epsilon=st.floats(0.2, 4.0))
def test_adassp_training_through_the_service_charges_exactly_what_its_card_declares(world, epsilon):
    gov, who, pid, _, _ = world
    spec = dataclasses.replace(parse(ADASSP_SPEC), epsilon=epsilon)
    before = gov.ledger.state(pid).epsilon_spent
    model = training.train(gov.queries, who["mo"], pid, spec)
    card = model.card
    assert card["epsilon"] == pytest.approx(epsilon, rel=1e-6)
    assert card["epsilon_total"] == pytest.approx(card["epsilon"] + card["metrics_epsilon"])
    # the whole reservation: the spec's ε and the metrics' (the same whether it failed)
    assert gov.ledger.state(pid).epsilon_spent - before == pytest.approx(
        epsilon + card["metrics_epsilon"], rel=1e-9
    )
    [mech] = card["mechanism"]
    plan = adassp.plan(epsilon, card["delta"], mech["width"] - 1)
    assert mech["sigma"]["xtx"] == pytest.approx(plan.sigma[1])


def test_a_trial_that_fails_after_the_read_answers_like_one_that_succeeded(world, monkeypatch):
    """A study whose estimation failed only when one person was in the cohort (bounds of
    ±1e308 made their value NaN, and AdaSSP's eigenvalues did not converge: exit code 1,
    HTTP 500, a red-team find) told the modeller a bit about that person. A failure after
    the read now answers with the same receipt as a success, charges the same, and the
    steward reads that it failed."""
    import json

    gov, who, pid, study, _ = world
    ids = ("trial_id", "output_id", "download_url")
    before = gov.ledger.state(pid).epsilon_spent
    good = trial.run(gov.queries, who["mo"], pid, study)

    def diverges(*args, **kwargs):
        raise np.linalg.LinAlgError("Eigenvalues did not converge")

    monkeypatch.setattr(trial, "aipw", diverges)
    bad = trial.run(gov.queries, who["mo"], pid, study)
    assert {k: v for k, v in bad.items() if k not in ids} == {
        k: v for k, v in good.items() if k not in ids
    }
    assert gov.ledger.state(pid).epsilon_spent - before == pytest.approx(
        2 * study.spec.epsilon, rel=1e-6
    )
    output = gov.outputs.row(bad["output_id"])
    assert output["status"] == "pending"
    result = json.loads(output["result"])
    assert result["failed"] is True and "nothing is released" in result["reason"]
    assert "average_effect" not in result
    with pytest.raises(Conflict, match="no result to release"):
        gov.outputs.review(who["sam"], bad["output_id"], decision="approve")
    # the steward's Trials page shows both: the estimate, and the failure with no table
    from hub.steward.web import ENV, PREFIX

    pending = [o for o in gov.outputs.pending(who["sam"]) if o.get("kind") == "trial"]
    page = ENV.get_template("trials.html").render(
        prefix=PREFIX, outputs=[{**o, "signed": True} for o in pending], section="trials",
        steward=who["sam"].user, csrf="x", counts=dict.fromkeys(("projects", "outputs", "models", "trials"), 0), commercial=set(), flashes=[],
    )  # fmt: skip
    failed_card = page.split(f'id="output-{bad["output_id"]}"')[1].split("</article>")[0]
    assert "estimation failed after reading" in failed_card
    assert "Adjusted (AIPW)" not in failed_card and 'name="decision"' not in failed_card
    assert "Adjusted (AIPW)" in page.split(f'id="output-{good["output_id"]}"')[1]
