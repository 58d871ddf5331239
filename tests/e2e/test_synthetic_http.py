"""A company's researcher gets a DP synthetic dataset through a live `hub serve`: request,
steward approval, Parquet download; nothing downloads before the approval."""

from __future__ import annotations

import io

import httpx
import pyarrow.parquet as pq
import pytest

from tests.e2e.steward_fixtures import csrf_of
from tests.synthetic_specs import small_spec


def test_request_then_steward_approval_then_parquet_download(live_hub):
    pid = live_hub.projects["ana"]
    ana, sam = live_hub.client("ana"), live_hub.client("sam")
    before = ana.get(f"/projects/{pid}").json()
    r = ana.post(f"/projects/{pid}/synthetic-datasets", json={"spec": small_spec(0.2)})
    assert r.status_code == 200, r.text
    made = r.json()
    output_id = made["output_id"]
    assert made["status"] == "pending" and made["card"]["epsilon"] == 0.2
    assert "rows" not in made and "parquet" not in made  # the card, never the rows
    after = ana.get(f"/projects/{pid}").json()
    assert _spent(after) - _spent(before) == pytest.approx(0.2)

    refused = ana.get(f"/outputs/{output_id}/download", params={"format": "parquet"})
    assert refused.status_code == 409 and "only approved" in refused.json()["detail"]
    listed = ana.get(f"/projects/{pid}/synthetic-datasets").json()["datasets"]
    assert {"output_id": output_id, "status": "pending"}.items() <= next(
        d for d in listed if d["output_id"] == output_id
    ).items()
    assert ana.post(f"/outputs/{output_id}/approve").status_code == 403  # not a steward

    page = live_hub.client("sam")  # the steward's queue shows the data card
    queue = page.get("/outputs").json()["outputs"]
    card = next(o for o in queue if o["output_id"] == output_id)["result"]
    assert card["method"].startswith("MST") and "fit_to_measurements" in card["evaluation"]
    # exact figures on real people are on the steward's dashboard only, never in the card
    assert "membership" not in card["evaluation"] and "utility" not in card["evaluation"]
    assert sam.post(f"/outputs/{output_id}/approve", json={"reason": "ok"}).status_code == 200

    got = ana.get(f"/outputs/{output_id}/download", params={"format": "parquet"})
    assert got.status_code == 200
    assert got.headers["content-type"] == "application/vnd.apache.parquet"
    table = pq.read_table(io.BytesIO(got.content))
    assert table.column_names == ["year_of_birth", "imd_decile", "sex", "t2d"]
    assert table.num_rows > 1000
    card_only = ana.get(f"/outputs/{output_id}/download").json()
    assert card_only["data_card"]["dataset_id"] == made["dataset_id"]
    bob = live_hub.client("bob")  # another project's researcher cannot see it
    other = bob.get(f"/outputs/{output_id}/download", params={"format": "parquet"})
    assert other.status_code == 404
    entries = sam.get("/audit", params={"project": pid, "action": "output.download"}).json()
    assert any(e["target"] == output_id and e["decision"] == "allowed" for e in entries["entries"])


def test_a_bad_spec_is_a_422_and_costs_nothing(live_hub):
    pid = live_hub.projects["ana"]
    ana = live_hub.client("ana")
    before = _spent(ana.get(f"/projects/{pid}").json())
    r = ana.post(f"/projects/{pid}/synthetic-datasets", json={"spec": "[columns"})
    assert r.status_code == 422 and "TOML" in r.json()["detail"]
    r = ana.post(f"/projects/{pid}/synthetic-datasets", json={"spec": small_spec(99.0)})
    assert r.status_code == 403 and "epsilon runs out" in r.json()["detail"]
    assert _spent(ana.get(f"/projects/{pid}").json()) == before


def _spent(project: dict) -> float:
    budget = project.get("budget") or {}
    return float(budget.get("epsilon_spent", project.get("epsilon_spent", 0.0)))


def test_the_steward_dashboard_shows_the_data_card_and_approves_it(live_hub):
    pid = live_hub.projects["ana"]
    ana = live_hub.client("ana")
    made = ana.post(f"/projects/{pid}/synthetic-datasets", json={"spec": small_spec(0.1)}).json()
    output_id = made["output_id"]
    with httpx.Client(base_url=live_hub.url, timeout=60) as browser:
        page = browser.get("/steward/sign-in")
        signed = browser.post(
            "/steward/sign-in", data={"key": live_hub.keys["sam"], "csrf_token": csrf_of(page.text)}
        )
        assert signed.status_code == 303
        models = browser.get("/steward/models")
        assert models.status_code == 200
        text = models.text
        assert "Synthetic datasets awaiting release" in text and output_id in text
        assert "Membership check AUC" in text and "Intended use" in text
        approved = browser.post(
            f"/steward/outputs/{output_id}/approve",
            data={"csrf_token": csrf_of(text), "reason": "card checked", "return_to": "models"},
        )
        assert approved.status_code == 303
        assert f"Output {output_id} approved" in browser.get("/steward/models").text
    got = ana.get(f"/outputs/{output_id}/download", params={"format": "parquet"})
    assert got.status_code == 200 and pq.read_table(io.BytesIO(got.content)).num_rows > 1000
