"""A company's researcher gets a DP synthetic dataset through a live `hub serve`: request,
steward approval, Parquet download; nothing downloads before the approval."""

from __future__ import annotations

import io

import pyarrow.parquet as pq
import pytest

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
    assert card["method"].startswith("MST") and "membership" in card["evaluation"]
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
