"""The access policy by organisation type (governance/access/commercial.py)."""

from __future__ import annotations

import datetime as dt

import pytest

from governance.access import commercial
from governance.access.people import ORGANISATION_TYPES, User
from governance.access.projects import Project, authorize
from governance.errors import AccessDenied, InvalidRequest

TODAY = dt.date(2025, 6, 30)
BENEFIT = "Faster recruitment to diabetes trials for the region's patients."


def _user(org_type, organisation="Acme Bio", user_id="cara", role="researcher"):
    return User(user_id, user_id, role, organisation, org_type, TODAY + dt.timedelta(days=99), True)


def _project(org_type, *, daa_expires=None, reviewers=1):
    return Project(
        project_id="p-1", title="t", purpose="p", lay_summary="l", organisation="Acme Bio",
        requested_by="cara", requested_grants={}, requested_days=30, status="approved",
        granted={}, expires_at=TODAY + dt.timedelta(days=60), epsilon_total=1.0,
        delta_total=0.0, sdc_threshold=7, sdc_rounding=5, decided_by="sam",
        decision_reason=None, created_at="", members={"cara": True},
        output_reviewers=commercial.reviewers(org_type, reviewers),
        organisation_type=org_type, daa_reference="DAA-1", daa_expires=daa_expires,
    )  # fmt: skip


def test_every_organisation_type_has_a_policy():
    assert set(commercial.POLICIES) == set(ORGANISATION_TYPES)


@pytest.mark.parametrize(
    ("org_type", "kind", "allowed"),
    [
        ("life_science_company", "dp", True),
        ("life_science_company", "feasibility", True),
        ("life_science_company", "synthetic", True),
        ("life_science_company", "exact", True),
        ("life_science_company", "train", False),
        ("university", "train", True),
        ("nhs_trust", "feasibility", True),
        ("other", "exact", True),
    ],
)
def test_what_a_project_may_do_depends_on_its_organisation_type(org_type, kind, allowed):
    project = _project(org_type, daa_expires=TODAY + dt.timedelta(days=5))
    if allowed:
        authorize(project, _user(org_type), kind=kind, today=TODAY)
    else:
        with pytest.raises(AccessDenied, match="not part of the access"):
            authorize(project, _user(org_type), kind=kind, today=TODAY)


def test_a_company_cannot_train_models_by_default():
    project = _project("life_science_company", daa_expires=TODAY + dt.timedelta(days=5))
    with pytest.raises(AccessDenied, match="model training"):
        authorize(project, _user("life_science_company"), train=True, today=TODAY)


def test_every_use_is_refused_after_the_agreement_expires():
    project = _project("life_science_company", daa_expires=TODAY)
    authorize(project, _user("life_science_company"), kind="dp", today=TODAY)  # last day
    with pytest.raises(AccessDenied, match="DAA-1 of project p-1 expired on 2025-06-30"):
        authorize(project, _user("life_science_company"), kind="dp", today=TODAY + dt.timedelta(1))


def test_exact_outputs_of_a_company_need_two_stewards_whatever_the_steward_chose():
    assert _project("life_science_company", reviewers=1).output_reviewers == 2
    assert _project("university", reviewers=1).output_reviewers == 1
    assert _project("university", reviewers=2).output_reviewers == 2


def test_a_company_project_states_its_benefit_and_a_dated_agreement():
    company = _user("life_science_company")
    ok = commercial.terms_for_request(
        company, public_benefit=BENEFIT, daa_reference="DAA-2025/001",
        daa_expires="2026-01-01", today=TODAY,
    )  # fmt: skip
    assert ok.commercial and ok.daa_expires == dt.date(2026, 1, 1)
    with pytest.raises(InvalidRequest, match="must state public_benefit, daa_reference"):
        commercial.terms_for_request(
            company, public_benefit=None, daa_reference="", daa_expires="2026-01-01", today=TODAY
        )
    with pytest.raises(InvalidRequest, match="at least 40 characters"):
        commercial.terms_for_request(
            company, public_benefit="profit", daa_reference="DAA-1", daa_expires="2026-01-01",
            today=TODAY,
        )  # fmt: skip
    with pytest.raises(InvalidRequest, match="expired on 2025-06-30"):
        commercial.terms_for_request(
            company, public_benefit=BENEFIT, daa_reference="DAA-1", daa_expires=TODAY, today=TODAY
        )
    with pytest.raises(InvalidRequest, match="YYYY-MM-DD"):
        commercial.terms_for_request(
            company, public_benefit=BENEFIT, daa_reference="DAA-1", daa_expires="soon",
            today=TODAY,
        )  # fmt: skip
    # a university need not, and its terms say it is not commercial
    plain = commercial.terms_for_request(
        _user("university", "UoB"), public_benefit=None, daa_reference=None, daa_expires=None
    )
    assert not plain.commercial


def test_a_companys_users_are_never_stewards_and_its_projects_stay_in_house():
    with pytest.raises(InvalidRequest, match="researchers or modellers only"):
        commercial.check_role(role="steward", organisation_type="life_science_company")
    commercial.check_role(role="steward", organisation_type="nhs_trust")
    cara = _user("life_science_company")
    with pytest.raises(InvalidRequest, match="eve do not"):
        commercial.check_members(cara, [cara, _user("life_science_company", "Beta", "eve")])
    uni = _user("university", "UoB", "ana")
    commercial.check_members(uni, [uni, _user("nhs_trust", "UHB", "tom")])


def test_the_register_shows_the_terms_and_the_commercial_flag():
    shown = commercial.register_fields(
        _project("life_science_company", daa_expires=dt.date(2026, 1, 1))
    )
    assert shown["commercial"] is True and shown["data_access_agreement"] == "DAA-1"
    assert shown["agreement_expires"] == "2026-01-01" and shown["exact_output_reviewers"] == 2
    assert "train" not in shown["access"] and "synthetic" in shown["access"]
