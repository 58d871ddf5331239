"""A researcher learns what happened to their exact outputs, through a live `hub serve`."""

from __future__ import annotations

import pytest

from hub.client import HubClient
from hub.client import HubError as ClientError

SQL = "SELECT sex, count(*) AS n FROM patients WHERE year_of_birth < 1970 GROUP BY sex"


def test_a_researcher_sees_each_decision_its_reason_and_a_download_link(live_hub):
    pid = live_hub.projects["ana"]
    ana = HubClient(live_hub.url, live_hub.keys["ana"], project=pid)
    sam = HubClient(live_hub.url, live_hub.keys["sam"])
    assert pid in {p["project_id"] for p in ana.projects()}
    returned = ana.query(SQL, target="real", mode="exact").attrs
    approved = ana.query(SQL, target="real", mode="exact").attrs
    sam.return_output(returned["output_id"], "band year of birth into decades first")
    sam.approve_output(approved["output_id"], "fine to release")
    # the query no longer says pending_review: it says what the steward decided, and why
    status = ana.query_status(returned["query_id"])
    assert status["status"] == "returned"
    assert status["output"]["reasons"] == ["band year of birth into decades first"]
    mine = {o["output_id"]: o for o in ana.outputs()}
    assert mine[returned["output_id"]]["status"] == "returned"
    assert mine[returned["output_id"]]["download_url"] is None
    assert "result" not in mine[returned["output_id"]]  # no table before approval
    link = mine[approved["output_id"]]["download_url"]
    assert mine[approved["output_id"]]["status"] == "approved" and link
    assert ana.output(approved["output_id"])["reasons"] == ["fine to release"]
    table = live_hub.client("ana").get(link.removeprefix("/v1")).json()
    assert table["columns"] == ["sex", "n"] and all(n % 5 == 0 for _, n in table["rows"])
    listed = {q["query_id"]: q["status"] for q in ana.queries()}
    assert listed[approved["query_id"]] == "approved"
    assert listed[returned["query_id"]] == "returned"


def test_another_projects_researcher_sees_none_of_it(live_hub):
    ana = HubClient(live_hub.url, live_hub.keys["ana"], project=live_hub.projects["ana"])
    bob = HubClient(live_hub.url, live_hub.keys["bob"], project=live_hub.projects["bob"])
    out = ana.query(SQL, target="real", mode="exact").attrs
    assert out["output_id"] not in {o["output_id"] for o in bob.outputs()}
    with pytest.raises(ClientError) as refused:
        bob.output(out["output_id"])
    assert refused.value.status == 404
    with pytest.raises(ClientError) as not_steward:
        bob.return_output(out["output_id"], "not yours to review")
    assert not_steward.value.status == 403
