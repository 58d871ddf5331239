"""schemathesis against the hub's own OpenAPI schema, on the live server.

Every operation, each generated request sent as every role (no key, member researcher,
other researcher, steward, modeller, admin), with a fixed seed and bounded examples (a
longer run is in `make bench`): no 5xx, and every response conforms to the schema
(documented status, content type and body; errors are problem+json). schemathesis'
pytest plugin does not support this pytest yet, so its Hypothesis strategies are driven
directly (benchmarks/fuzz.py).
"""

from __future__ import annotations

from benchmarks.fuzz import ROLES, fuzz


def test_no_generated_request_fails_or_breaks_the_schema_for_any_role(live_hub):
    ana, sam = live_hub.client("ana"), live_hub.client("sam")
    # a project of its own: fuzzed approvals, suspensions and queries may change it
    created = ana.post(
        "/projects",
        json={"title": "fuzz", "purpose": "fuzz the API", "lay_summary": "fuzz the API",
              "grants": {"patients": ["person_id", "sex", "imd_decile"]}, "days": 30},
    )  # fmt: skip
    project_id = created.json()["project_id"]
    assert sam.post(f"/projects/{project_id}/approve", json={"epsilon": 5.0}).status_code == 200
    keys = {
        "member": live_hub.keys["ana"],
        "other": live_hub.keys["bob"],
        "steward": live_hub.keys["tess"],
        "modeller": live_hub.keys["mo"],
        "admin": live_hub.keys["root"],
    }
    result = fuzz(live_hub.url, keys, project_id=project_id, max_examples=8)
    assert result["operations"] >= 15
    assert set(result["by_role"]) == set(ROLES)
    assert result["failures"] == []
    # the fuzz reached the governed layer, not only the front door
    assert {"200", "401", "403", "404", "422"} <= set(result["statuses"])
