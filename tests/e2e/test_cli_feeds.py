"""A region's feeds, as a trust's data engineer runs them: `hub synth --format feeds`,
then `hub ingest --format feeds` with the quality gate on, then next month's extract.

The generator writes which person each feed record belongs to (``truth/``), so linkage
is scored here against the truth, not against itself.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from connectors.errors import IngestError
from connectors.linkage import index as person_index
from connectors.secrets import resolve_keys

HUB = [sys.executable, "-m", "hub.cli"]
PEOPLE = 1500


def hub(home: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HUB_HOME": str(home), "COLUMNS": "200"}
    return subprocess.run([*HUB, *args], capture_output=True, text=True, env=env, timeout=timeout)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def region(tmp_path_factory) -> dict:
    home = tmp_path_factory.mktemp("region")
    synth = ok(hub(home, "synth", "-n", str(PEOPLE), "--format", "feeds", "--seed", "5"))
    feeds = home / "synthetic" / "real-feeds"
    ingested = ok(hub(home, "ingest", str(feeds), "--format", "feeds"))
    releases = sorted((home / "releases").glob("release-*.duckdb"))
    manifest = json.loads(releases[-1].with_suffix(".json").read_text())
    return {"home": home, "feeds": feeds, "synth": synth, "ingest": ingested,
            "db": releases[-1], "manifest": manifest}  # fmt: skip


def test_synth_writes_every_kind_of_feed_and_says_how_to_ingest_it(region):
    out = region["synth"]
    for name in ("gp-supplier-a", "gp-supplier-b", "trust-", "ae", "deaths", "truth/"):
        assert name in out
    assert f"hub ingest {region['feeds']} --format feeds" in out
    manifest = json.loads((region["feeds"] / "feeds.json").read_text())
    layouts = {f["layout"] for f in manifest["feeds"]}
    assert layouts == {"gp-supplier-a", "gp-supplier-b", "acute-pas", "ae", "death-register"}
    assert all(f["controller"] for f in manifest["feeds"])
    # each supplier writes its own conventions
    a = (region["feeds"] / "gp-supplier-a" / "patients.csv").read_text().splitlines()[0]
    assert a.startswith("PatientGuid,NhsNumber,Forenames,Surname,DateOfBirth")
    b = duckdb.sql(
        f"SELECT nhs_no FROM '{region['feeds']}/gp-supplier-b/patients.parquet' "
        "WHERE nhs_no IS NOT NULL LIMIT 1"
    ).fetchall()[0][0]
    assert b.count(" ") == 2  # "999 000 0018"


def test_every_feed_is_read_into_one_release_with_its_provenance(region):
    con = duckdb.connect(str(region["db"]), read_only=True)
    try:
        systems = {
            r[0] for r in con.execute("SELECT DISTINCT source_system FROM encounters").fetchall()
        }
        people = con.execute("SELECT count(*) FROM patients").fetchall()[0][0]
        event_systems = {
            r[0]
            for r in con.execute(
                "SELECT DISTINCT source_system FROM conditions UNION "
                "SELECT DISTINCT source_system FROM observations"
            ).fetchall()
        }
        gp_details = con.execute(
            "SELECT count(*) FILTER (WHERE practice_code IS NOT NULL), "
            "count(*) FILTER (WHERE imd_decile IS NOT NULL) FROM patients"
        ).fetchall()[0]
        deaths = con.execute(
            "SELECT count(*) FROM patients WHERE death_date IS NOT NULL"
        ).fetchall()[0][0]
    finally:
        con.close()
    assert {"feeds:gp-supplier-a", "feeds:gp-supplier-b", "feeds:ae"} <= systems
    assert any(s.startswith("feeds:trust-") for s in systems)
    assert {"feeds:gp-supplier-a", "feeds:gp-supplier-b"} <= event_systems
    assert any(s.startswith("feeds:trust-") for s in event_systems)
    # one patient per person: the region has PEOPLE people
    assert abs(people - PEOPLE) <= PEOPLE * 0.002
    assert gp_details[0] >= PEOPLE * 0.99 and gp_details[1] >= PEOPLE * 0.99
    truth_deaths = duckdb.sql(
        f"SELECT count(*) FROM '{region['feeds']}/deaths/deaths.csv'"
    ).fetchall()[0][0]
    assert deaths == truth_deaths


def test_linkage_quality_is_measured_against_the_truth_and_printed(region):
    linkage = region["manifest"]["linkage"]
    truth = linkage["against_truth"]
    assert truth["precision"] >= 0.999 and truth["recall"] >= 0.99, truth
    for group, scores in truth["by_group"]["ethnic_group"].items():
        assert scores["recall"] >= truth["recall"] - 0.02, (group, scores)
    rates = linkage["match_rates"]
    # A&E records lack NHS numbers most often: they need probabilistic linkage most
    assert rates["ae"]["share"].get("probabilistic", 0) > rates["gp-supplier-a"]["share"].get(
        "probabilistic", 0
    )
    assert {f["name"] for f in linkage["feeds"]} == set(rates)
    out = region["ingest"]
    assert "linked" in out and "against the generator's truth: precision" in out
    assert "data controller" in out


def test_no_identifier_of_any_feed_reaches_a_research_table(region):
    feeds = region["feeds"]
    nhs = {
        r[0]
        for r in duckdb.sql(
            f"SELECT DISTINCT regexp_replace(nhs_number, '[^0-9]', '', 'g') FROM read_csv("
            f"'{feeds}/ae/attendances.csv', all_varchar=true) WHERE nhs_number IS NOT NULL"
        ).fetchall()
    }
    postcodes = {
        r[0]
        for r in duckdb.sql(
            f"SELECT DISTINCT Postcode FROM read_csv('{feeds}/gp-supplier-a/patients.csv', "
            "all_varchar=true)"
        ).fetchall()
    }
    con = duckdb.connect(str(region["db"]), read_only=True)
    try:
        text_columns = con.execute(
            "SELECT table_name, column_name FROM duckdb_columns() WHERE data_type = 'VARCHAR' "
            "AND NOT internal AND schema_name = 'main'"
        ).fetchall()
        for table, column in text_columns:
            values = {
                r[0] for r in con.execute(f'SELECT DISTINCT "{column}" FROM "{table}"').fetchall()
            }
            assert not values & nhs, (table, column)
            assert not values & postcodes, (table, column)
    finally:
        con.close()
    # nor the manifest
    text = json.dumps(region["manifest"])
    assert not any(n in text for n in list(nhs)[:500])


def test_the_person_index_is_encrypted_private_and_needs_the_vault_key(region):
    home = region["home"]
    path = person_index.path_in(home / "vault")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    blob = path.read_bytes()
    surnames = duckdb.sql(
        f"SELECT DISTINCT Surname FROM read_csv('{region['feeds']}/gp-supplier-a/patients.csv', "
        "all_varchar=true) WHERE length(Surname) > 5 LIMIT 50"
    ).fetchall()
    assert not any(s[0].encode() in blob for s in surnames)
    keys = resolve_keys(home, create=False)
    index = person_index.load(home / "vault", keys.vault)
    assert abs(index.people - PEOPLE) <= PEOPLE * 0.002
    with pytest.raises(IngestError, match="cannot be read with this vault key"):
        person_index.load(home / "vault", bytes(reversed(keys.vault)))


def _people(db: Path) -> dict[int, tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return {
            r[0]: r[1:]
            for r in con.execute(
                "SELECT person_id, year_of_birth, month_of_birth, sex, practice_code FROM patients"
            ).fetchall()
        }
    finally:
        con.close()


def test_a_later_extract_links_to_known_people_and_keeps_every_pseudonym(region, tmp_path):
    """First the GP feeds alone, then every feed: the trusts', A&E's and the death
    register's records link to the people already in the index (almost no one is new), and
    every person keeps the pseudonym of the first release. Then the same extract again:
    every record is already known."""
    home = tmp_path / "home"
    first = tmp_path / "gp-only"
    shutil.copytree(region["feeds"], first)
    manifest = json.loads((first / "feeds.json").read_text())
    manifest["feeds"] = [f for f in manifest["feeds"] if f["layout"].startswith("gp-")]
    (first / "feeds.json").write_text(json.dumps(manifest))
    ok(hub(home, "ingest", str(first), "--format", "feeds"))
    before = _people(sorted((home / "releases").glob("release-*.duckdb"))[-1])
    out = ok(hub(home, "ingest", str(region["feeds"]), "--format", "feeds"))
    releases = sorted((home / "releases").glob("release-*.duckdb"))
    linkage = json.loads(releases[-1].with_suffix(".json").read_text())["linkage"]
    assert linkage["people_before"] == len(before), out
    # everyone has a GP record: a new person is a record the linkage missed (recall)
    assert linkage["people_in_index"] - len(before) <= len(before) * 0.005, out
    after = _people(releases[-1])
    assert set(before) <= set(after)
    assert sum(after[p] == before[p] for p in before) >= len(before) * 0.995
    assert linkage["match_rates"]["gp-supplier-a"]["share"]["known"] == 1.0
    assert linkage["match_rates"]["ae"]["share"].get("known", 0) == 0
    assert linkage["against_truth"]["precision"] >= 0.999
    assert linkage["against_truth"]["recall"] >= 0.99
    # the same extract again: every record is already known, every pseudonym the same
    ok(hub(home, "ingest", str(region["feeds"]), "--format", "feeds"))
    releases = sorted((home / "releases").glob("release-*.duckdb"))
    again = json.loads(releases[-1].with_suffix(".json").read_text())["linkage"]
    assert all(r["share"].get("known") == 1.0 for r in again["match_rates"].values())
    assert _people(releases[-1]).keys() == after.keys()


def test_a_broken_feeds_manifest_is_refused_in_one_line(region, tmp_path):
    copy = tmp_path / "feeds"
    shutil.copytree(region["feeds"], copy, ignore=shutil.ignore_patterns("truth"))
    manifest = json.loads((copy / "feeds.json").read_text())
    manifest["feeds"][0]["layout"] = "gp-supplier-z"
    (copy / "feeds.json").write_text(json.dumps(manifest))
    result = hub(tmp_path / "home", "ingest", str(copy), "--format", "feeds")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "unknown feed layout 'gp-supplier-z'" in result.stderr
    manifest["feeds"][0]["layout"] = "gp-supplier-a"
    manifest["feeds"][0]["path"] = "../../etc"
    (copy / "feeds.json").write_text(json.dumps(manifest))
    result = hub(tmp_path / "home", "ingest", str(copy), "--format", "feeds")
    assert result.returncode == 2 and "not inside the feeds folder" in result.stderr
    assert not list((tmp_path / "home" / "releases").glob("release-*.duckdb"))


def test_researchers_stewards_and_the_public_read_the_linkage(region, tmp_path):
    """The data dictionary, `GET /v1/datasets` and the steward's quality page show the
    feeds, their data controllers and the linkage quality of the release."""
    from governance.facade import Governance
    from tests.e2e.steward_fixtures import _serve, csrf_of
    from tests.homes import add_people, approved_project

    home = region["home"]
    gov = Governance.open(home, create_keys=True)
    who = add_people(gov, keys_to=tmp_path, ana="researcher", sam="steward")
    keys = {u: (tmp_path / f"{u}.key").read_text().strip() for u in who}
    project_id = approved_project(
        gov, who["ana"], who["sam"], {"encounters": ["person_id", "encounter_type"]},
        title="Linked care", epsilon=1.0,
    )  # fmt: skip
    proc, url = _serve(home)
    try:
        import httpx

        page = httpx.get(url + "/dictionary", timeout=60).text
        assert page.count("How the records were linked") == 1
        title = page.split("<title>", 1)[1].split("</title>", 1)[0]
        assert title.startswith("Data dictionary") and "<" not in title
        assert "Walsall Healthcare NHS Trust" in page and "the registration service" in page
        assert "precision" in page and "by ethnic group" in page
        body = httpx.get(
            url + "/v1/datasets", params={"project_id": project_id},
            headers={"Authorization": f"Bearer {keys['ana']}"}, timeout=60,
        ).json()  # fmt: skip
        linkage = body["linkage"]
        assert {f["name"] for f in linkage["feeds"]} >= {"gp-supplier-a", "ae", "deaths"}
        assert linkage["against_truth"]["precision"] >= 0.999
        assert "people" not in linkage["against_truth"]  # rates only, no counts
        with httpx.Client(base_url=url, timeout=60) as browser:
            sign_in = browser.get("/steward/sign-in")
            browser.post("/steward/sign-in",
                         data={"key": keys["sam"], "csrf_token": csrf_of(sign_in.text)})  # fmt: skip
            listing = browser.get("/steward/quality").text
            assert "10 feeds from" in listing and "linkage precision" in listing
            release_id = region["db"].stem
            detail = browser.get(f"/steward/quality/real/{release_id}").text
            assert "Feeds, data controllers and linkage" in detail
            assert "The Royal Wolverhampton NHS Trust" in detail
    finally:
        proc.terminate()
        proc.wait(10)


def test_a_date_of_birth_typed_after_the_death_yields_to_the_other_records(region, tmp_path):
    """The GP record of someone who died says they were born after their death (a typing
    error): the person's date of birth comes from what the other records agree on, and
    the gate's death-after-birth check passes."""
    import csv

    feeds = tmp_path / "feeds"
    shutil.copytree(region["feeds"], feeds)
    truth = duckdb.sql(
        f"""SELECT g.local_id, d.date_of_death
            FROM '{feeds}/truth/records.parquet' g
            JOIN '{feeds}/truth/records.parquet' r USING (patient_id)
            JOIN read_csv('{feeds}/deaths/deaths.csv', all_varchar=true) d
              ON d.registration_id = r.local_id
            WHERE g.feed = 'gp-supplier-a' AND r.feed = 'deaths' LIMIT 1"""
    ).fetchall()
    local_id, died = truth[0]
    path = feeds / "gp-supplier-a" / "patients.csv"
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    year, month, day = (int(x) for x in died.split("-"))
    for row in rows:
        if row["PatientGuid"] == local_id:
            row["DateOfBirth"] = f"{min(day, 28):02d}/{month:02d}/{year + 1}"
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    out = ok(hub(tmp_path / "home", "ingest", str(feeds), "--format", "feeds"))
    assert "quality gate passed" in out
