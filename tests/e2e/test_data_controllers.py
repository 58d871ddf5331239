"""Data controllers decide, as a region's hub runs it: a release built from feeds with
`hub ingest --format feeds`, a steward approving a project's feeds with `hub projects
approve --source`, each organisation's controller deciding over HTTP or with `hub
sources decide`, and a researcher's DP queries on a real `hub serve`.

The expected figures are read from the release file itself (the test's view, never the
researcher's), filtered to the approved feeds' rows.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import duckdb
import httpx
import pytest

from governance.facade import Governance
from tests.e2e.steward_fixtures import _serve, csrf_of
from tests.homes import add_people

HUB = [sys.executable, "-m", "hub.cli"]
GRANTS = {
    "patients": ["person_id", "sex", "year_of_birth", "practice_code"],
    "conditions": ["person_id", "code"],
}
EPSILON = 8.0  # Laplace scale 0.125 for a count: the answers below are within 2 of the truth


def hub(home: Path, *args: str, key: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HUB_HOME": str(home), "COLUMNS": "200"}
    extra = ["--key-file", str(key)] if key else []
    return subprocess.run(
        [*HUB, *args, *extra], capture_output=True, text=True, env=env, timeout=600
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])
    return result.stdout + result.stderr


class Region:
    def __init__(self, home: Path, url: str, project: str, trust: str, gp: str) -> None:
        self.home, self.url, self.project, self.trust, self.gp = home, url, project, trust, gp

    def api(self, who: str) -> httpx.Client:
        key = (self.home / f"{who}.key").read_text().strip()
        return httpx.Client(
            base_url=self.url + "/v1", headers={"Authorization": f"Bearer {key}"}, timeout=120
        )

    def truth(self, sql: str, feeds: set[str]) -> int:
        """``sql`` on the release with ``{feeds}`` replaced by the approved feeds' systems."""
        # a copy: this process's governance already holds the release open, configured
        # as the engine configures it, and DuckDB opens a file one way per process
        release = sorted((self.home / "releases").glob("release-*.duckdb"))[-1]
        copy = self.home.parent / "truth.duckdb"
        if not copy.exists():
            shutil.copyfile(release, copy)
        systems = ", ".join(f"'feeds:{f}'" for f in sorted(feeds)) or "NULL"
        con = duckdb.connect(str(copy), read_only=True)
        try:
            return int(con.execute(sql.format(feeds=systems)).fetchall()[0][0])
        finally:
            con.close()

    def count(self, sql: str) -> httpx.Response:
        with self.api("ana") as ana:
            return ana.post(
                f"/projects/{self.project}/queries",
                json={"sql": sql, "target": "real", "mode": "dp", "epsilon": EPSILON},
            )


PEOPLE_SQL = (
    "SELECT count(DISTINCT person_id) FROM _person_sources WHERE source_system IN ({feeds})"
)
CONDITIONS_SQL = "SELECT count(DISTINCT person_id) FROM conditions WHERE source_system IN ({feeds})"
PRACTICE_SQL = (
    "SELECT count(DISTINCT person_id) FROM _person_sources "
    "WHERE supplies = 'registration' AND source_system IN ({feeds})"
)


@pytest.fixture(scope="module")
def region(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Region]:
    home = tmp_path_factory.mktemp("controllers") / "hub"
    ok(hub(home, "synth", "-n", "900", "--format", "feeds", "--seed", "21"))
    ok(hub(home, "ingest", str(home / "synthetic" / "real-feeds"), "--format", "feeds"))
    gov = Governance.open(home, create_keys=True)
    feeds = {f.name: f for f in gov.release_feeds()}
    trust = sorted(n for n in feeds if n.startswith("trust-"))[0]
    gp = "gp-supplier-a"
    add_people(gov, keys_to=home, ana="researcher", sam="steward")
    for who, feed in (("trustdc", trust), ("gpdc", gp)):
        _, key = gov.people.add(
            user_id=who,
            name=who,
            role="controller",
            organisation=feeds[feed].controller,
            organisation_type="nhs_trust",
            accreditation_expires=dt.date.today() + dt.timedelta(days=30),
            actor="cli:test",
        )
        (home / f"{who}.key").write_text(key + "\n")
    ana = gov.people.get("ana")
    project = gov.projects.request(
        requester=ana, title="Linked care", purpose="p", lay_summary="l", grants=GRANTS, days=30
    ).project_id
    approved = ok(
        hub(
            home, "projects", "approve", project, "--epsilon", "100",
            "--source", trust, "--source", gp, key=home / "sam.key",
        )
    )  # fmt: skip
    assert "2 feed(s) now await their data controllers" in approved
    proc, url = _serve(home)
    yield Region(home, url, project, trust, gp)
    proc.terminate()
    proc.wait(10)


def test_nothing_is_read_until_a_controller_approves(region):
    refused = region.count("SELECT count(DISTINCT person_id) FROM conditions")
    assert refused.status_code == 403
    assert "no data controller has approved" in refused.json()["detail"]
    assert region.trust in refused.json()["detail"]
    # a controller sees the project's use of its own feed, and nothing else
    with region.api("trustdc") as dc:
        mine = dc.get("/sources").json()["sources"]
    assert [(s["project_id"], s["source"], s["status"]) for s in mine] == [
        (region.project, region.trust, "pending")
    ]


def test_each_controller_decides_only_on_its_own_feed(region):
    with region.api("gpdc") as gpdc:
        other = gpdc.post(
            f"/projects/{region.project}/sources/{region.trust}/decision",
            json={"decision": "approve"},
        )
        assert other.status_code == 404
    with region.api("ana") as ana:
        assert (
            ana.post(
                f"/projects/{region.project}/sources/{region.trust}/decision",
                json={"decision": "approve"},
            ).status_code
            == 403
        )


def test_queries_see_only_approved_feeds_and_lose_a_withdrawn_one(region):
    with region.api("trustdc") as dc:
        decided = dc.post(
            f"/projects/{region.project}/sources/{region.trust}/decision",
            json={"decision": "approve"},
        )
    assert decided.status_code == 200 and decided.json()["status"] == "approved"
    trust_only = {region.trust}

    def answers() -> tuple[float, float, float]:
        out = []
        for sql in (
            # people, not rows: a DP count bounds each person's rows, so rows can be cut
            "SELECT count(DISTINCT person_id) FROM conditions",
            "SELECT count(*) FROM patients",
            "SELECT count(*) FROM patients WHERE practice_code IS NOT NULL",
        ):
            r = region.count(sql)
            assert r.status_code == 200, r.text
            out.append(r.json()["rows"][0][0])
        return out[0], out[1], out[2]

    conditions, people, registered = answers()
    assert abs(conditions - region.truth(CONDITIONS_SQL, trust_only)) <= 2
    assert abs(people - region.truth(PEOPLE_SQL, trust_only)) <= 2
    # GP registration details come from the GP feeds, which are not approved
    assert abs(registered) <= 2
    # the GP practices' controller approves too (with the CLI): more rows and people
    ok(
        hub(
            region.home, "sources", "decide", region.project, region.gp,
            "--decision", "approve", key=region.home / "gpdc.key",
        )
    )  # fmt: skip
    both = {region.trust, region.gp}
    conditions2, people2, registered2 = answers()
    assert abs(conditions2 - region.truth(CONDITIONS_SQL, both)) <= 2
    assert abs(people2 - region.truth(PEOPLE_SQL, both)) <= 2
    assert abs(registered2 - region.truth(PRACTICE_SQL, {region.gp})) <= 2
    assert conditions2 > conditions + 10 and people2 > people + 10
    # ... and withdraws: later queries lose its rows, and the audit says why
    with region.api("gpdc") as gpdc:
        withdrawn = gpdc.post(
            f"/projects/{region.project}/sources/{region.gp}/decision",
            json={"decision": "withdraw", "reason": "patient objections under review"},
        )
    assert withdrawn.json()["status"] == "withdrawn"
    conditions3, people3, _ = answers()
    assert abs(conditions3 - region.truth(CONDITIONS_SQL, trust_only)) <= 2
    assert abs(people3 - region.truth(PEOPLE_SQL, trust_only)) <= 2
    with region.api("sam") as sam:
        entries = sam.get(
            "/audit", params={"project": region.project, "action": "query.real.dp"}
        ).json()["entries"]
    last = entries[0]  # newest first
    assert last["sources"] == [region.trust]
    assert last["withheld"] == [f"{region.gp}: withdrawn by gpdc: patient objections under review"]
    with region.api("sam") as sam:
        decisions = sam.get(
            "/audit", params={"project": region.project, "action": "source.withdraw"}
        ).json()["entries"]
    assert decisions[0]["actor"] == "gpdc" and decisions[0]["target"] == region.gp


def test_the_register_shows_each_project_sources_and_their_controllers(region):
    register = httpx.get(region.url + "/v1/public/projects").json()
    (mine,) = [p for p in register["projects"] if p["project_id"] == region.project]
    by_feed = {s["source"]: s for s in mine["sources"]}
    assert set(by_feed) == {region.trust, region.gp}
    assert all(s["controller"] for s in by_feed.values())
    text = json.dumps(register)
    assert "nhs_number" not in text and "postcode" not in text
    # and on the register's page, in words
    page = httpx.get(region.url + "/register").text
    assert f"<code>{region.gp}</code>" in page and ": withdrawn</li>" in page


def test_the_steward_dashboard_lists_feeds_controllers_and_decisions(region):
    key = (region.home / "sam.key").read_text().strip()
    with httpx.Client(base_url=region.url, timeout=60) as browser:
        page = browser.get("/steward/sign-in")
        signed = browser.post(
            "/steward/sign-in", data={"key": key, "csrf_token": csrf_of(page.text)}
        )
        assert signed.status_code == 303
        projects = browser.get("/steward/projects").text
        quality = browser.get("/steward/quality").text
    row = projects[projects.index(f'id="project-{region.project}"') :]
    row = row[: row.index("</tr>")]
    assert f"<code>{region.trust}</code>" in row and "<strong>approved</strong>" in row
    assert f"<code>{region.gp}</code>" in row and "<strong>withdrawn</strong>" in row
    assert "patient objections under review" in row
    # the release's feeds and controllers, with linkage quality, on the quality page
    assert region.trust in quality and "gp-supplier-b" in quality
