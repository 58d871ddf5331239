"""Governed DP training: extraction through the policy and audit, Opacus, the shared ledger,
model cards in the workspace, membership-inference audits, models as outputs."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json

import numpy as np
import opendp.prelude as dp
import pytest
from opacus.accountants import RDPAccountant

from connectors.ingest import ingest
from connectors.secrets import resolve_keys
from governance.errors import (
    AccessDenied,
    BudgetExhausted,
    Conflict,
    InvalidRequest,
    NotFound,
    PolicyViolation,
)
from governance.facade import Governance
from governance.queries import QueryService
from models import audits, cohort, dpsgd, training, trial
from models.spec import parse

dp.enable_features("contrib")

SPEC = """
name = "t2d-by-age"

[cohort]
sql = '''
SELECT p.person_id, max(p.year_of_birth) AS year_of_birth, max(p.imd_decile) AS imd_decile,
       max(p.sex) AS sex,
       coalesce(bool_or(c.code = '44054006'), false) AS t2d
FROM patients p LEFT JOIN conditions c USING (person_id) GROUP BY p.person_id
'''
outcome = "t2d"

[features.numeric]
year_of_birth = [1910, 2025]
imd_decile = [1, 10]

[features.categorical]
sex = ["F", "M"]

[model]
kind = "logistic"

[privacy]
epsilon = 3.0

[training]
epochs = 20
batch_size = 256
learning_rate = 0.05
seed = 3
"""


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
        "patients": ["person_id", "year_of_birth", "imd_decile", "sex"],
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
        project.project_id, steward=people["sam"].user, epsilon=12.0, delta=1e-5, trainers=["mo"]
    )
    return gov, QueryService(gov), project.project_id, people


@pytest.fixture(scope="module")
def trained(setup):
    gov, service, pid, who = setup
    before = gov.ledger.state(pid).epsilon_spent
    model = training.train(service, who["mo"], pid, parse(SPEC))
    return model, before


def test_a_dp_model_learns_the_planted_age_signal_and_the_ledger_is_charged_exactly(setup, trained):
    gov, _, pid, _ = setup
    model, before = trained
    card = model.card
    # older people (earlier birth years) get type 2 diabetes more: a real, held-out signal,
    # seen by the modeller only through DP metrics
    assert card["metrics"]["auroc"] > 0.6, card["metrics"]["thresholds"]
    assert card["metrics"]["kind"].startswith("differentially private")
    # the ε on the card is what Opacus' RDP accountant says for the steps this training
    # must have taken, derived independently: epochs × round(N / batch) at q = 1 / that,
    # N the planned people (the release's 3,000), never the cohort's own size
    assert card["planned_rows"] == 3_000
    per_epoch = round(3_000 / 256)
    assert card["steps"] == 20 * per_epoch and card["sample_rate"] == 1 / per_epoch
    accountant = RDPAccountant()
    accountant.history = [(card["noise_multiplier"], 1 / per_epoch, 20 * per_epoch)]
    assert card["epsilon"] == pytest.approx(accountant.get_epsilon(card["delta"]), rel=1e-9)
    assert 2.9 < card["epsilon"] <= 3.0
    # training and the DP held-out metrics are charged together
    assert card["epsilon_total"] == pytest.approx(card["epsilon"] + card["metrics_epsilon"])
    # the ledger takes the whole reservation (the spec's ε and the metrics'), as it does
    # when a run fails: which runs failed must not show on the public register
    spec = parse(SPEC)
    assert gov.ledger.state(pid).epsilon_spent == pytest.approx(
        before + spec.epsilon + card["metrics_epsilon"]
    )
    assert card["epsilon_total"] <= spec.epsilon + card["metrics_epsilon"]


def test_the_model_card_is_complete_and_written_beside_the_weights(trained):
    model, _ = trained
    card = json.loads((model.folder / "card.json").read_text())
    for key in (
        "release", "cohort_sql", "features", "model_kind", "epsilon", "delta", "accountant",
        "noise_multiplier", "max_grad_norm", "epochs", "sample_rate", "metrics", "created_at",
        "author", "secure_rng", "audit_limits", "privacy_unit",
    ):  # fmt: skip
        assert key in card, key
    assert card["author"] == "mo" and card["features"]["encoded_columns"] == [
        "year_of_birth", "year_of_birth_missing", "imd_decile", "imd_decile_missing",
        "sex=F", "sex=M",
    ]  # fmt: skip
    weights = (model.folder / "model.pt").read_bytes()
    assert card["artifact_sha256"] == hashlib.sha256(weights).hexdigest()
    assert (model.folder / "calibration.png").read_bytes().startswith(b"\x89PNG")
    text = (model.folder / "card.md").read_text()
    assert "ε = " in text and "## Intended use" in text and "## Limitations" in text
    assert "Not for decisions about individual patients" in card["intended_use"]
    assert any("differential privacy" in line for line in card["limitations"])
    # the card carries no exact statistic of the cohort: no row counts, no exact metrics
    assert "rows" not in card and "auroc_ci95" not in card["metrics"]
    assert card["secure_rng"] is True
    steward = json.loads((model.folder / "steward.json").read_text())
    assert steward["rows"]["training"] > 1_000 and "auroc_ci95" in steward["exact_metrics"]
    # the workspace holds the model, never the rows it was trained on
    assert sorted(p.name for p in model.folder.iterdir()) == [
        "calibration.png", "card.json", "card.md", "model.pt", "spec.json", "split.key",
        "steward.json",
    ]  # fmt: skip


def test_only_named_trainers_train_within_grants_and_budget(setup):
    gov, service, pid, who = setup
    spec = parse(SPEC)
    spent = gov.ledger.state(pid).epsilon_spent
    with pytest.raises(AccessDenied):
        training.train(service, who["max"], pid, spec)  # a member, not a trainer
    with pytest.raises(AccessDenied):
        training.train(service, who["ana"], pid, spec)  # a researcher
    outside = dataclasses.replace(spec, sql=spec.sql.replace("max(p.sex)", "max(p.ethnicity)"))
    with pytest.raises(PolicyViolation):
        training.train(service, who["mo"], pid, outside)
    with pytest.raises(BudgetExhausted, match=r"epsilon runs out.*short by"):
        training.train(service, who["mo"], pid, dataclasses.replace(spec, epsilon=50.0))
    assert gov.ledger.state(pid).epsilon_spent == spent
    denied = [e for e in gov.audit.entries(project=pid, limit=50) if e["decision"] == "denied"]
    assert {e["actor"] for e in denied} >= {"max", "ana", "mo"}


def test_the_noise_is_not_replayable_from_the_seed_on_the_card(setup, trained):
    _, service, pid, who = setup
    model, _ = trained
    again = training.train(service, who["mo"], pid, dataclasses.replace(parse(SPEC), epsilon=0.3))
    first = training.load(service, pid, model.model_id)
    assert first.card["seed"] == again.card["seed"] == 3
    assert first.card["features"] == again.card["features"]
    # same spec seed, fresh noise and batches: the weights differ
    w1 = dpsgd.unwrap(first.module).weight.detach().numpy()
    w2 = dpsgd.unwrap(again.module).weight.detach().numpy()
    assert not np.allclose(w1, w2)


def test_refusals_come_before_any_spend(setup):
    gov, service, pid, who = setup
    spent = gov.ledger.state(pid).epsilon_spent
    with pytest.raises(InvalidRequest, match="too large"):
        training.train(service, who["mo"], pid, dataclasses.replace(parse(SPEC), delta=1e-4))
    with pytest.raises(NotFound):
        training.load(service, pid, "m-000000000000/../../../p-other/models/m-000000000000")
    assert gov.ledger.state(pid).epsilon_spent == spent


def test_a_crashed_training_run_keeps_its_reservation(setup, monkeypatch):
    gov, service, pid, who = setup
    spent = gov.ledger.state(pid).epsilon_spent

    def crash(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(dpsgd, "fit", crash)
    with pytest.raises(RuntimeError):
        training.train(service, who["mo"], pid, dataclasses.replace(parse(SPEC), epsilon=0.5))
    # data was read and noise may have touched a gradient: the reservation stays spent
    assert gov.ledger.state(pid).epsilon_spent == pytest.approx(spent + 0.5 + 0.3)


def test_a_steward_audits_and_reviews_a_submitted_model(setup, trained):
    _, service, pid, who = setup
    model, _ = trained
    with pytest.raises(AccessDenied):
        training.submit(service, who["max"], pid, model.model_id)  # not its author
    output_id = training.submit(service, who["mo"], pid, model.model_id)
    pending = [o for o in service.pending(who["sam"]) if o["output_id"] == output_id]
    assert pending and pending[0]["kind"] == "model"
    assert pending[0]["result"]["epsilon"] == model.card["epsilon"]
    with pytest.raises(AccessDenied):
        audits.audit_model(service, who["mo"], pid, model.model_id)  # stewards only
    report = audits.audit_model(service, who["sam"], pid, model.model_id)
    assert 0.3 < report["attack_auc"] < 0.7 and report["members"] > 100
    assert 0.0 <= report["tpr_at_fpr_1pct"] <= 0.2 and "cannot show" in report["limits"]
    reviewed = service.output(who["sam"], output_id)
    assert reviewed["manifest"]["membership_inference"]["attack_auc"] == report["attack_auc"]
    with pytest.raises(Conflict):
        service.download(who["mo"], output_id)  # pending: not yet
    service.review(who["sam"], output_id, approve=True)
    body = service.download(who["mo"], output_id)
    assert body["artifact_sha256"] == model.card["artifact_sha256"]
    assert body["model_card"]["model_id"] == model.model_id


def test_effect_models_estimate_who_benefits_with_either_learner(setup):
    _, service, pid, who = setup
    # the 3k population has too few DPP index events; an effect of sex on recorded T2D
    # stands in for a treatment here (the machinery, not the science, is under test)
    effect = parse(
        SPEC.replace("max(p.sex) AS sex,", "max(p.sex) = 'F' AS female,")
        .replace('[features.categorical]\nsex = ["F", "M"]\n', "")
        .replace('outcome = "t2d"', 'outcome = "t2d"\ntreatment = "female"')
        .replace('kind = "logistic"', 'kind = "effect"\nlearner = "t"')
        .replace("epsilon = 3.0", "epsilon = 0.4")
    )
    people = np.array([[0.2, 0.0, 0.5, 0.0], [0.9, 0.0, 0.5, 0.0]], np.float32)
    t_model = training.train(service, who["mo"], pid, effect)
    assert t_model.card["composition"].startswith("parallel")
    assert t_model.card["epsilon"] <= 0.4
    s_linear = dataclasses.replace(effect, learner="s", effect_architecture="linear")
    s_model = training.train(service, who["mo"], pid, s_linear)
    assert s_model.card["architecture"] == "linear"
    # only the declared modifiers interact with the treatment: 4 features + t + 2 products
    s_mods = dataclasses.replace(s_linear, modifiers=["year_of_birth"])
    m_model = training.train(service, who["mo"], pid, s_mods)
    assert m_model.card["modifier_columns"] == [0, 1]
    assert dpsgd.unwrap(m_model.module).weight.shape == (1, 4 + 1 + 2)
    for model in (t_model, s_model, m_model):
        benefit = model.predict(people)
        reloaded = training.load(service, pid, model.model_id)
        assert reloaded.card["model_kind"] == "effect"
        assert np.allclose(reloaded.predict(people), benefit, atol=1e-6)


ADASSP = (
    SPEC.replace("max(p.sex) AS sex,", "max(p.sex) = 'F' AS female,")
    .replace('[features.categorical]\nsex = ["F", "M"]\n', "")
    .replace("imd_decile = [1, 10]", "t2d = [0, 1]")
    .replace('outcome = "t2d"', 'outcome = "imd_decile"\ntreatment = "female"')
    .replace(
        'kind = "logistic"',
        'kind = "effect"\narchitecture = "linear"\noutcome = "continuous"\n'
        'outcome_bounds = [1, 10]\nmethod = "adassp"',
    )
)


def _effects_project(gov, who, title: str) -> str:
    """A project of its own for an effect model (the module's project budget is for the
    DP-SGD tests)."""
    project = gov.projects.request(
        requester=who["ana"].user, title=title, purpose="who benefits",
        lay_summary="Who benefits", grants={"patients": ["person_id", "year_of_birth",
        "imd_decile", "sex"], "conditions": ["person_id", "code"]}, days=30, members=["mo"],
    )  # fmt: skip
    gov.projects.approve(
        project.project_id, steward=who["sam"].user, epsilon=20.0, delta=1e-5, trainers=["mo"]
    )
    return project.project_id


def _opendp_epsilon(rho: float, delta: float) -> float:
    """OpenDP's own zCDP → (ε, δ) conversion of a ρ-zCDP Gaussian mechanism."""
    gaussian = dp.m.make_gaussian(
        dp.atom_domain(T=float, nan=False), dp.absolute_distance(T=float), scale=1.0
    )
    return float(dp.c.make_zCDP_to_approxDP(gaussian).map((2 * rho) ** 0.5).epsilon(delta))


def _charged_audited_reloaded_and_replayed(setup, pid, model, before, method):
    """What every one-release learner owes, as DP-SGD does: the ledger charged exactly
    training + DP held-out metrics, a ``train.model`` entry naming the method, a saved
    model that reloads to the same predictions, and the steward's membership audit
    replaying the model's own recipe at its ε and δ. Returns the audit entry."""
    gov, service, _, who = setup
    card = model.card
    assert card["epsilon_total"] == pytest.approx(card["epsilon"] + card["metrics_epsilon"])
    # the ledger takes the whole reservation (the spec's ε and the metrics'), as it does
    # when a run fails: which runs failed must not show on the public register
    spec = parse(SPEC)
    assert gov.ledger.state(pid).epsilon_spent == pytest.approx(
        before + spec.epsilon + card["metrics_epsilon"]
    )
    assert card["epsilon_total"] <= spec.epsilon + card["metrics_epsilon"]
    [entry] = gov.audit.entries(project=pid, action="train.model", limit=1)
    details = entry["details"]
    details = json.loads(details) if isinstance(details, str) else details
    assert entry["target"] == model.model_id and details["method"] == method
    people = np.array([[0.2, 0.0, 1.0, 0.0], [0.9, 0.0, 0.0, 0.0]], np.float32)
    reloaded = training.load(service, pid, model.model_id)
    assert np.allclose(reloaded.predict(people), model.predict(people), atol=1e-5)
    report = audits.audit_model(service, who["sam"], pid, model.model_id)
    assert report["canary"]["accountant_epsilon"] == pytest.approx(card["epsilon"], rel=1e-12)
    assert 0.3 < report["attack_auc"] < 0.7
    return entry


def test_an_adassp_effect_model_is_accounted_charged_audited_and_carded(setup):
    """A linear effect model by sufficient-statistics perturbation, through the same
    governed path as DP-SGD: the ε on the card is the zCDP conversion of the ρ its three
    Gaussian releases spend, the ledger is charged that plus the DP metrics, the audit
    entry names the method, and the noise on the card follows the declared bounds."""
    gov, service, _, who = setup
    pid = _effects_project(gov, who, "effects")
    spec = parse(ADASSP)
    assert spec.learning_method == "adassp"
    before = gov.ledger.state(pid).epsilon_spent
    model = training.train(service, who["mo"], pid, spec)
    card = model.card
    assert card["method"] == "adassp" and card["accountant"].startswith("zCDP")
    [mech] = card["mechanism"]
    # ε derived independently with OpenDP's zCDP → (ε, δ) conversion of the card's ρ
    assert card["epsilon"] == pytest.approx(_opendp_epsilon(mech["rho"], card["delta"]), rel=1e-7)
    assert 2.99 < card["epsilon"] <= 3.0
    # each release is Δ²/(2σ²)-zCDP and they add up to ρ
    parts = [mech["sensitivity"][k] ** 2 / (2 * mech["sigma"][k] ** 2) for k in mech["sigma"]]
    assert sum(parts) == pytest.approx(mech["rho"])
    # the bounds set the sensitivity: 4 encoded columns + t + 4 products + intercept,
    # every centred entry in [-1/2, 1/2]: ‖x‖² ≤ 10/4; the outcome's |y| ≤ 1/2
    assert mech["width"] == 10 and mech["sensitivity"]["xtx"] == pytest.approx(2.5)
    assert mech["sensitivity"]["xty"] == pytest.approx(2.5**0.5 * 0.5)
    # no DP-SGD parameter pretends to describe this model
    assert card["steps"] is None and card["epochs"] is None and card["sample_rate"] is None
    entry = _charged_audited_reloaded_and_replayed(setup, pid, model, before, "adassp")
    assert entry["epsilon"] == pytest.approx(card["epsilon_total"])
    # the DP held-out metrics of an effect model, as for DP-SGD
    assert card["metrics"]["kind"].startswith("differentially private")
    assert {"mean_predicted_benefit", "outcome_rmse"} <= set(card["metrics"])
    text = (model.folder / "card.md").read_text()
    assert "AdaSSP" in text and "ρ = " in text and "zCDP" in text
    # the T-learner: one fit per disjoint arm, parallel composition, the ε of one
    t_model = training.train(service, who["mo"], pid, dataclasses.replace(spec, learner="t"))
    assert t_model.card["composition"].startswith("parallel")
    assert len(t_model.card["mechanism"]) == 2 and t_model.card["epsilon"] <= 3.0


STRATA = ADASSP.replace(
    'method = "adassp"', 'method = "strata"\nmodifiers = ["year_of_birth", "t2d"]'
) + ("\n[model.strata]\nyear_of_birth = [1950, 1980]\n")


def test_a_stratified_effect_model_is_accounted_charged_audited_and_carded(setup):
    """Who benefits by a DP stratified analysis, through the same governed path: one
    release of noisy stratum-by-arm counts and sums whose ρ converts to the card's ε
    (OpenDP's conversion), the ledger charged that plus the DP metrics, the audit entry
    naming the method, a card that says what was released, and the steward's audit
    replaying the recipe."""
    gov, service, _, who = setup
    pid = _effects_project(gov, who, "strata")
    spec = parse(STRATA)
    assert spec.learning_method == "strata"
    before = gov.ledger.state(pid).epsilon_spent
    model = training.train(service, who["mo"], pid, spec)
    card = model.card
    assert card["method"] == "strata" and card["accountant"].startswith("zCDP")
    [mech] = card["mechanism"]
    assert card["epsilon"] == pytest.approx(_opendp_epsilon(mech["rho"], card["delta"]), rel=1e-7)
    assert 2.99 < card["epsilon"] <= 3.0
    assert mech["sensitivity"] == {"counts": 1.0, "sums": 0.5}
    # year of birth in 3 bins + missing, t2d 0/1 + missing: 12 strata, two arms each
    assert mech["cells"] == 24 and mech["strata"]["year_of_birth"][-1] == "missing"
    assert card["steps"] is None and card["learning_rate"] is None
    _charged_audited_reloaded_and_replayed(setup, pid, model, before, "strata")
    text = (model.folder / "card.md").read_text()
    assert "stratified" in text and "cells kept" in text and "ρ = " in text


def test_specs_are_checked_with_clear_errors():
    with pytest.raises(InvalidRequest, match="outcome_bounds"):
        parse(SPEC.replace('kind = "logistic"', 'kind = "effect"\noutcome = "continuous"')
              .replace('outcome = "t2d"', 'outcome = "t2d"\ntreatment = "sex"'))  # fmt: skip
    with pytest.raises(InvalidRequest, match="lower < upper"):
        parse(SPEC.replace("imd_decile = [1, 10]", "imd_decile = [10, 1]"))
    # finite bounds whose width overflows made one person's value NaN, which diverged
    # DP-SGD (a red-team find): bounds lie within ±1e12, the outcome's too
    with pytest.raises(InvalidRequest, match="within"):
        parse(SPEC.replace("imd_decile = [1, 10]", "imd_decile = [-1e308, 1e308]"))
    effect = SPEC.replace('kind = "logistic"', 'kind = "effect"\noutcome = "continuous"').replace(
        'outcome = "t2d"', 'outcome = "t2d"\ntreatment = "sex"'
    )
    for bounds in ("[-1e308, 1e308]", "[5, 1]", "[0, inf]"):
        with pytest.raises(InvalidRequest, match="outcome_bounds"):
            parse(effect.replace('kind = "effect"', f'kind = "effect"\noutcome_bounds = {bounds}'))
    with pytest.raises(InvalidRequest, match="epsilon"):
        parse(SPEC.replace("epsilon = 3.0", "epsilon = 0"))
    with pytest.raises(InvalidRequest, match="unknown"):
        parse(SPEC + "\n[extra]\nx = 1\n")
    with pytest.raises(InvalidRequest, match="TOML"):
        parse("[cohort\n")
    with pytest.raises(InvalidRequest, match="modifiers"):
        parse(SPEC.replace('kind = "logistic"', 'kind = "logistic"\nmodifiers = ["sex"]'))
    with pytest.raises(InvalidRequest, match="modifiers must be features"):
        parse(
            SPEC.replace('kind = "logistic"', 'kind = "effect"\nmodifiers = ["bmi"]').replace(
                'outcome = "t2d"', 'outcome = "t2d"\ntreatment = "sex"'
            )
        )


def test_two_trainings_with_and_without_one_person_no_longer_reveal_the_label(setup):
    """The attack of the audit: same split key, the cohort with and without one held-out
    person; exact held-out counts on the card differed by that person's label. Now the
    modeller sees only OpenDP-noised counts (scale ≥ 5 per cell), never the exact ones."""
    gov, service, pid, who = setup
    spec = dataclasses.replace(
        parse(SPEC), epsilon=1.0, training=dataclasses.replace(parse(SPEC).training, epochs=2)
    )
    rows = gov.cohorts.read(who["mo"], gov.cohorts.prepare(who["mo"], pid, spec.sql))
    key = b"same-split-for-both"
    keys = rows.columns["person_id"]
    held = cohort.split(keys, key, spec.training.holdout)
    target = next(k for k, h in zip(keys, held, strict=True) if h)
    without_sql = spec.sql.replace(
        "GROUP BY p.person_id", f"WHERE p.person_id <> '{target}' GROUP BY p.person_id"
    )
    with_p = training.train(service, who["mo"], pid, spec, split_key=key)
    without_p = training.train(
        service, who["mo"], pid, dataclasses.replace(spec, sql=without_sql), split_key=key
    )
    for model in (with_p, without_p):
        card, metrics = model.card, model.card["metrics"]
        exact = json.loads((model.folder / "steward.json").read_text())
        assert "rows" not in card and "held_out_rows" not in metrics
        assert metrics["noise_scale"]["risk_band_counts"] >= 5
        exact_n = exact["exact_metrics"]["held_out_rows"]
        exact_pos = round(exact["exact_metrics"]["outcome_rate"] * exact_n)
        noisy_pos = round(metrics["outcome_rate"] * metrics["held_out_people"])
        # the exact pair (held-out people, positives) is not what the modeller sees
        assert (metrics["held_out_people"], noisy_pos) != (exact_n, exact_pos)
    # the exact counts of the two trainings differ by the person (and their label)...
    exact_ns = [
        json.loads((m.folder / "steward.json").read_text())["exact_metrics"]["held_out_rows"]
        for m in (with_p, without_p)
    ]
    assert exact_ns[0] == exact_ns[1] + 1
    # ...but the modeller's numbers differ by noise far wider than one person
    gap = with_p.card["metrics"]["held_out_people"] - without_p.card["metrics"]["held_out_people"]
    assert gap != 1 or with_p.card["metrics"]["held_out_people"] != exact_ns[0]


STUDY = (
    """
[protocol]
eligibility = "everyone in the release"
treatment_strategies = ["female", "not female"]
assignment = { time_zero = "registration", grace_period_days = 0 }
follow_up = "none (a stand-in: the machinery, not the science, is under test)"
outcome = "IMD decile"
causal_contrast = "average effect"
confounders = ["year_of_birth", "t2d"]
"""
    + ADASSP
)


def test_an_emulated_trial_estimates_its_average_effect_charged_and_audited(setup):
    """The study's DP AIPW estimate through the governed path: ε and δ reserved and
    charged to the ledger, one ``trial.estimate`` audit entry without values, the
    estimate pending review as an output, and a receipt without it."""
    gov, service, _, who = setup
    project = gov.projects.request(
        requester=who["ana"].user, title="trial", purpose="emulated trial",
        lay_summary="A trial", grants={"patients": ["person_id", "year_of_birth",
        "imd_decile", "sex"], "conditions": ["person_id", "code"]}, days=30, members=["mo"],
    )  # fmt: skip
    gov.projects.approve(
        project.project_id, steward=who["sam"].user, epsilon=5.0, delta=1e-5, trainers=["mo"]
    )
    pid = project.project_id
    study = trial.parse_study(STUDY)
    result = trial.run(service, who["mo"], pid, study)
    assert result["status"] == "pending" and "average_effect" not in result
    output = gov.outputs.row(result["output_id"])  # what the steward reviews
    assert output["kind"] == "trial" and output["status"] == "pending"
    estimate = json.loads(output["result"])
    assert estimate["ci95"][0] <= estimate["average_effect"] <= estimate["ci95"][1]
    assert -9 <= estimate["average_effect"] <= 9 and result["protocol"]["outcome"] == "IMD decile"
    assert 2.99 < result["epsilon"] <= 3.0 and result["delta"] == 1e-7
    assert gov.ledger.state(pid).epsilon_spent == pytest.approx(result["epsilon"])
    [entry] = gov.audit.entries(project=pid, action="trial.estimate", limit=5)
    assert entry["epsilon"] == pytest.approx(result["epsilon"]) and entry["actor"] == "mo"
    # no count and no row in what comes back or in the audit entry
    assert not {"rows", "people", "n", "held_out_rows"} & (set(result) | set(estimate))
    assert entry["target"] == result["output_id"]
    assert "row_count" not in entry or entry["row_count"] is None
    # a second study does not fit the remaining budget: refused before reading
    with pytest.raises(BudgetExhausted):
        trial.run(service, who["mo"], pid, study)
    assert gov.ledger.state(pid).epsilon_spent == pytest.approx(result["epsilon"])
