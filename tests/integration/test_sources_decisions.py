"""The data controllers' decisions as governance keeps them: who may decide, the states a
feed goes through, and what a project may read of a release built from feeds."""

from __future__ import annotations

import datetime as dt

import pytest

from governance.access.sources import Feed
from governance.errors import AccessDenied, Conflict, InvalidRequest, NotFound
from governance.facade import Governance
from tests.homes import add_people, approved_project

FEEDS = [
    Feed("gp-a", "GP practices on supplier A", "the A practices"),
    Feed("trust-x", "Trust X", "Trust X NHS FT"),
]
MANIFEST = {
    "linkage": {
        "feeds": [
            {"name": f.name, "organisation": f.organisation, "controller": f.controller}
            for f in FEEDS
        ]
    }
}


@pytest.fixture
def gov(tmp_path):
    gov = Governance.open(tmp_path / "hub", create_keys=True)
    gov.projects.feeds = lambda: FEEDS  # the current release is built from these feeds
    return gov


def _controller(gov: Governance, user_id: str, controls: str):
    _, key = gov.people.add(
        user_id=user_id, name=user_id, role="controller", organisation=controls,
        organisation_type="nhs_trust", actor="cli:test",
        accreditation_expires=dt.date.today() + dt.timedelta(days=30),
    )  # fmt: skip
    return gov.people.authenticate(key).user


def test_a_feed_goes_pending_approved_withdrawn_and_back_with_reasons(gov):
    who = add_people(gov, ana="researcher", sam="steward")
    pid = approved_project(gov, who["ana"], who["sam"], {"patients": ["sex"]})
    trust = _controller(gov, "tx", "  trust x nhs ft ")  # names compared loosely
    assert {s.source: s.status for s in gov.sources.for_project(pid)} == {
        "gp-a": "pending",
        "trust-x": "pending",
    }
    with pytest.raises(AccessDenied, match="awaiting: gp-a, trust-x"):
        gov.sources.scope(pid, MANIFEST)
    with pytest.raises(InvalidRequest, match="give a reason"):
        gov.sources.decide(pid, "trust-x", controller=trust, decision="refuse")
    with pytest.raises(Conflict):  # only an approved feed can be withdrawn
        gov.sources.decide(pid, "trust-x", controller=trust, decision="withdraw", reason="later")
    gov.sources.decide(pid, "trust-x", controller=trust, decision="approve")
    scope = gov.sources.scope(pid, MANIFEST)
    assert scope is not None and scope.systems == frozenset({"feeds:trust-x"})
    gov.sources.decide(pid, "trust-x", controller=trust, decision="withdraw", reason="audit due")
    with pytest.raises(AccessDenied, match="withheld: trust-x: withdrawn by tx: audit due"):
        gov.sources.scope(pid, MANIFEST)
    gov.sources.decide(pid, "trust-x", controller=trust, decision="approve")
    assert gov.sources.scope(pid, MANIFEST).sources == frozenset({"trust-x"})
    # a release not built from feeds has one source and no decisions to make
    assert gov.sources.scope(pid, {"source": "synthea"}) is None


def test_only_the_feeds_controller_decides_and_others_learn_nothing(gov):
    who = add_people(gov, ana="researcher", sam="steward")
    pid = approved_project(gov, who["ana"], who["sam"], {"patients": ["sex"]})
    gp = _controller(gov, "gpa", "the A practices")
    for project, feed in ((pid, "trust-x"), (pid, "no-such-feed"), ("p-nothere", "gp-a")):
        with pytest.raises(NotFound, match="under your control"):
            gov.sources.decide(project, feed, controller=gp, decision="approve")
    with pytest.raises(AccessDenied):  # a steward is not a data controller
        gov.sources.decide(pid, "gp-a", controller=who["sam"].user, decision="approve")
    assert [s.source for s in gov.sources.awaiting(gp)] == ["gp-a"]
    assert len(gov.sources.awaiting(who["sam"].user)) == 2
    # the controller sees the project that uses its data, the researcher only their own
    assert [p.project_id for p in gov.projects.visible_to(gp)] == [pid]


def test_a_project_that_lists_no_feed_of_the_release_is_told_how_to_fix_it(gov):
    who = add_people(gov, ana="researcher", sam="steward")
    gov.projects.feeds = list  # approved before the region's feeds arrived
    pid = approved_project(gov, who["ana"], who["sam"], {"patients": ["sex"]})
    with pytest.raises(AccessDenied, match="lists none of this release's feeds"):
        gov.sources.scope(pid, MANIFEST)
    gov.projects.feeds = lambda: FEEDS
    gov.projects.suspend(pid, steward=who["sam"].user, reason="feeds arrived")
    with pytest.raises(InvalidRequest, match="the release has no feed 'trust-y'"):
        gov.projects.approve(pid, steward=who["sam"].user, epsilon=1, delta=0, sources=["trust-y"])
    gov.projects.approve(pid, steward=who["sam"].user, epsilon=1, delta=0, sources=["gp-a"])
    assert {s.source: s.status for s in gov.sources.for_project(pid)} == {"gp-a": "pending"}
    with pytest.raises(AccessDenied, match="awaiting: gp-a"):
        gov.sources.scope(pid, MANIFEST)
