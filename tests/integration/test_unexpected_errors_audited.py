"""An unexpected error still gets its request's one audit outcome entry.

Starlette answers an unhandled exception with a 500 from its outermost middleware, past
the hub's request audit, so such a request was answered with no outcome entry at all (a
red-team round met one: a training run whose model diverged to NaN).
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3

from fastapi.testclient import TestClient

from governance.facade import Governance
from hub.app import create_app


def test_a_500_is_answered_with_a_fixed_message_and_audited_once(tmp_path, monkeypatch):
    gov = Governance.open(tmp_path / "hub", create_keys=True)
    _, key = gov.people.add(
        user_id="ana", name="Ana", role="researcher", organisation="University of Birmingham",
        organisation_type="university",
        accreditation_expires=dt.date.today() + dt.timedelta(days=365), actor="cli:test",
    )  # fmt: skip

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("patient 943 476 5919 broke it")

    monkeypatch.setattr(gov.queries, "catalogue", broken)
    with TestClient(create_app(gov), raise_server_exceptions=False) as client:
        r = client.get("/v1/datasets", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 500
    assert r.json()["code"] == "internal_error" and "943" not in r.text
    con = sqlite3.connect(tmp_path / "hub" / "governance" / "governance.sqlite3")
    bodies = [json.loads(b) for (b,) in con.execute("SELECT body FROM audit_entries")]
    con.close()
    mine = [e for e in bodies if e.get("request_id") == r.headers["x-request-id"]]
    assert len(mine) == 1
    details = mine[0]["details"]
    details = json.loads(details) if isinstance(details, str) else details
    assert mine[0]["decision"] == "denied" and details["status"] == 500
    assert mine[0]["target"] == "/v1/datasets" and "943" not in json.dumps(bodies)
