"""Generator → ingest → release: counts, values, pseudonyms, identifiers, atomicity."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from connectors import releases, vault
from connectors.errors import IngestError, SecretError, SourceError
from connectors.ingest import ingest
from connectors.secrets import resolve_keys
from synthetic_data import summary
from synthetic_data.generator import SynthConfig, generate
from tests.conftest import release_con

OMOP = (
    "person", "observation_period", "visit_occurrence", "condition_occurrence",
    "drug_exposure", "measurement", "procedure_occurrence", "death",
)  # fmt: skip


@pytest.fixture
def loaded(population_3k, hub_home, keys):
    return ingest(population_3k, fmt="native", home=hub_home, keys=keys)


def test_round_trip_preserves_counts_and_values(population_3k, loaded):
    source = summary.connect(population_3k)
    src_counts = summary.row_counts(source)
    con = release_con(loaded.release.path)
    for table, n in src_counts.items():
        assert con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0] == n, table
        assert loaded.counts[table].rows_in == n
    # values survive: per-code sums of observation values and condition counts by code
    for sql in (
        "SELECT code, round(sum(value), 3), count(*) FROM observations GROUP BY 1 ORDER BY 1",
        "SELECT code_system, code, count(*) FROM conditions GROUP BY ALL ORDER BY ALL",
        "SELECT year(date_of_birth) AS y, count(*) FROM patients GROUP BY 1 ORDER BY 1",
    ):
        release_sql = sql.replace("year(date_of_birth)", "year_of_birth")
        assert source.execute(sql).fetchall() == con.execute(release_sql).fetchall()
    # events keep their person: each person's event count is unchanged
    src = source.execute(
        "SELECT count(*) FROM encounters GROUP BY patient_id ORDER BY 1"
    ).fetchall()
    rel = con.execute("SELECT count(*) FROM encounters GROUP BY person_id ORDER BY 1").fetchall()
    assert src == rel


def test_every_release_offers_omop_shaped_views(loaded):
    con = release_con(loaded.release.path)
    for view in OMOP:
        con.execute(f"SELECT * FROM {view} LIMIT 5").fetchall()
    genders = dict(
        con.execute("SELECT gender_concept_id, count(*) FROM person GROUP BY 1").fetchall()
    )
    assert set(genders) == {8507, 8532}
    visits = {
        r[0]
        for r in con.execute("SELECT DISTINCT visit_concept_id FROM visit_occurrence").fetchall()
    }
    assert visits == {9201, 9202, 9203, 581477}
    vocab = {
        r[0]
        for r in con.execute(
            "SELECT DISTINCT condition_source_vocabulary_id FROM condition_occurrence"
        ).fetchall()
    }
    assert vocab == {"SNOMED", "ICD10"}
    assert con.execute("SELECT count(*) FROM observation_period").fetchall()[0][0] == 3_000


def test_no_identifier_is_anywhere_in_the_release_file(population_3k, loaded):
    patients = pq.read_table(population_3k / "patients").to_pylist()
    blob = loaded.release.path.read_bytes()
    needles = set()
    for p in patients:
        needles |= {
            p["nhs_number"],
            f"{p['given_name']} {p['family_name']}",
            p["address_line"],
            p["postcode"],
        }
    found = [n for n in needles if n.encode() in blob]
    assert found == []
    con = release_con(loaded.release.path)
    columns = {r[0] for r in con.execute("SELECT column_name FROM duckdb_columns()").fetchall()}
    assert not columns & {
        "nhs_number",
        "given_name",
        "family_name",
        "address_line",
        "postcode",
        "date_of_birth",
    }


def test_vault_reidentifies_only_with_the_right_key_and_place(
    population_3k, loaded, keys, hub_home
):
    con = release_con(loaded.release.path)
    person = con.execute("SELECT person_id FROM patients LIMIT 1").fetchall()[0][0]
    vault_file = releases.vault_dir(hub_home) / loaded.release.manifest["vault"]["file"]
    record = vault.reidentify(keys.vault, vault_file, person)
    source_numbers = set(
        pq.read_table(population_3k / "patients", columns=["nhs_number"]).column(0).to_pylist()
    )
    assert record["nhs_number"] in source_numbers
    with pytest.raises(IngestError, match="failed authentication"):
        vault.reidentify(b"\x01" * 16 + b"\x02" * 16, vault_file, person)
    assert oct(vault_file.stat().st_mode & 0o777) == "0o400"


def test_same_input_twice_gives_same_content_and_stable_pseudonyms(
    population_3k, loaded, hub_home, keys, tmp_path
):
    again = ingest(population_3k, fmt="native", home=hub_home, keys=keys)
    assert again.release.id == "release-0002"
    assert again.release.manifest["previous_release"] == "release-0001"
    assert again.release.manifest["content_hash"] == loaded.release.manifest["content_hash"]
    first = {
        r[0]
        for r in release_con(loaded.release.path)
        .execute("SELECT person_id FROM patients")
        .fetchall()
    }
    second = {
        r[0]
        for r in release_con(again.release.path)
        .execute("SELECT person_id FROM patients")
        .fetchall()
    }
    assert first == second and len(first) == 3_000
    other_home = tmp_path / "other"
    other = ingest(
        population_3k, fmt="native", home=other_home, keys=resolve_keys(other_home, create=True)
    )
    third = {
        r[0]
        for r in release_con(other.release.path)
        .execute("SELECT person_id FROM patients")
        .fetchall()
    }
    assert not first & third  # another key: unlinkable pseudonyms
    assert other.release.manifest["pseudonym_key_id"] != loaded.release.manifest["pseudonym_key_id"]


def test_manifest_accounts_for_every_row(loaded, population_3k):
    m = loaded.release.manifest
    for table, c in m["tables"].items():
        assert c["rows_in"] == c["published"] + sum(c["quarantined"].values()), table
    # files are known by table and content hash only, never by path or name
    hashes = {(f["table"], f["sha256"]) for f in m["source"]["files"]}
    part = "patients/part-00000.parquet"
    assert ("patients", hashlib.sha256((population_3k / part).read_bytes()).hexdigest()) in hashes
    assert "path" not in m["source"] and str(population_3k) not in json.dumps(m)
    assert m["connector"] == {"name": "native", "version": "1.0"}
    listed = releases.list_releases(Path(loaded.release.path).parents[1])
    assert [r.id for r in listed if r.current] == ["release-0001"]


def test_published_release_is_read_only_on_disk(loaded):
    assert not os.access(loaded.release.path, os.W_OK) or os.geteuid() == 0
    assert loaded.release.path.stat().st_mode & 0o222 == 0


def make_csv_population(tmp_path: Path) -> Path:
    out = tmp_path / "csvpop"
    generate(SynthConfig(patients=400, seed=3, format="csv"), out)
    return out


def test_malformed_rows_are_quarantined_with_reasons_and_nothing_is_lost(tmp_path, hub_home, keys):
    src = make_csv_population(tmp_path)
    obs = src / "observations" / "part-00000.csv"
    lines = obs.read_text().splitlines()
    header = lines[0].split(",")
    value_at = header.index('"value"')
    date_at = header.index('"observed_date"')
    row = lines[1].split(",")
    row[value_at] = '"not-a-number"'
    lines[1] = ",".join(row)
    row = lines[2].split(",")
    row[date_at] = '"2019-13-45"'
    lines[2] = ",".join(row)
    lines.append(lines[3][: len(lines[3]) // 2])  # a truncated last line
    obs.write_text("\n".join(lines) + "\n")
    pats = src / "patients" / "part-00000.csv"
    plines = pats.read_text().splitlines()
    dup = plines[5].split(",")
    dup[0] = '"999999"'  # new local id, same NHS number: the same person twice
    bad = plines[6].split(",")
    nhs = bad[1].strip('"')
    bad[0] = '"999998"'
    bad[1] = '"' + nhs[:-1] + str((int(nhs[-1]) + 1) % 10) + '"'
    lettered = plines[7].split(",")
    lettered[0] = '"999997"'
    lettered[1] = '"' + nhs[:-1] + 'A"'  # a letter where a digit belongs: refused, not fatal
    pats.write_text("\n".join([*plines, ",".join(dup), ",".join(bad), ",".join(lettered)]) + "\n")

    result = ingest(src, fmt="native", home=hub_home, keys=keys)
    q = result.counts["observations"].quarantined
    assert q.get("unparseable number") == 1 and q.get("unparseable date", 0) >= 1
    p = result.counts["patients"].quarantined
    assert p == {"duplicate person": 1, "invalid NHS number": 2}
    for table, c in result.counts.items():
        assert c.rows_in == c.published + sum(c.quarantined.values()), table
    con = release_con(result.release.path)
    reasons = con.execute(
        "SELECT table_name, reason, source_row IS NOT NULL FROM _quarantine"
    ).fetchall()
    assert ("patients", "invalid NHS number", True) in reasons
    # quarantine rows never carry a patient identifier
    assert (
        con.execute(
            "SELECT count(*) FROM _quarantine WHERE table_name = 'patients' AND source_id IS NOT NULL"
        ).fetchall()[0][0]
        == 0
    )


def test_unreadable_source_fails_and_keeps_the_current_release(
    population_3k, loaded, hub_home, keys, tmp_path
):
    before = releases.current_id(hub_home)
    broken = tmp_path / "broken"
    (broken / "patients").mkdir(parents=True)
    (broken / "patients" / "part-00000.parquet").write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(SourceError, match="could not read"):
        ingest(broken, fmt="native", home=hub_home, keys=keys)
    with pytest.raises(SourceError, match="holds no patients"):
        ingest(tmp_path, fmt="native", home=hub_home, keys=keys)
    assert releases.current_id(hub_home) == before
    assert [p.name for p in (hub_home / "releases").glob(".staging*")] == []


def test_a_load_failing_after_its_people_leaves_no_vault_or_staging_behind(
    population_3k, loaded, hub_home, keys, tmp_path
):
    """People are pseudonymised and their identifiers are being encrypted (on a thread of
    their own) when an event file turns out to be corrupt: the load fails cleanly."""
    before = releases.current_id(hub_home)
    src = tmp_path / "src"
    shutil.copytree(population_3k, src)
    damaged = sorted((src / "observations").glob("*.parquet"))[0]
    data = bytearray(damaged.read_bytes())
    # the footer (schema, row groups) stays readable, the column pages do not
    for at in range(64, len(data) - 4096, 97):
        data[at] ^= 0xFF
    damaged.write_bytes(bytes(data))
    with pytest.raises(SourceError, match="the source could not be read"):
        ingest(src, fmt="native", home=hub_home, keys=keys)
    assert releases.current_id(hub_home) == before
    assert list((hub_home / "releases").glob(".staging*")) == []
    assert list(releases.vault_dir(hub_home).glob(".staging*")) == []


def test_kill_9_mid_load_leaves_the_current_release_untouched(
    tmp_path, hub_home, keys, population_3k, loaded
):
    big = tmp_path / "big"
    generate(SynthConfig(patients=200_000, seed=2), big)
    digest = hashlib.sha256(loaded.release.path.read_bytes()).hexdigest()
    env = {**os.environ, "HUB_HOME": str(hub_home)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "hub.cli", "ingest", str(big)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 60
    while time.time() < deadline and not list((hub_home / "releases").glob(".staging-*.duckdb")):
        time.sleep(0.05)
    time.sleep(1.0)
    assert proc.poll() is None, "ingestion finished before it could be interrupted"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert releases.current_id(hub_home) == "release-0001"
    assert hashlib.sha256(loaded.release.path.read_bytes()).hexdigest() == digest
    assert [r.id for r in releases.list_releases(hub_home)] == ["release-0001"]
    # the next ingestion clears what the killed one left and publishes normally
    result = ingest(population_3k, fmt="native", home=hub_home, keys=keys)
    assert result.release.id == "release-0002"
    assert list((hub_home / "releases").glob(".staging*")) == []


def test_weak_short_or_exposed_keys_are_refused(hub_home):
    with pytest.raises(SecretError, match="too short"):
        resolve_keys(hub_home, pseudonym_hex="ab" * 8, vault_hex="cd" * 32)
    with pytest.raises(SecretError, match="trivially weak"):
        resolve_keys(hub_home, pseudonym_hex="00" * 32, vault_hex="cd" * 32)
    with pytest.raises(SecretError, match="hexadecimal"):
        resolve_keys(hub_home, pseudonym_hex="changeme", vault_hex="cd" * 32)
    with pytest.raises(SecretError, match="no pseudonym key"):
        resolve_keys(hub_home)
    keys = resolve_keys(hub_home, create=True)
    key_file = hub_home / "keys" / "pseudonym.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert keys.pseudonym.hex() not in repr(keys)
    key_file.chmod(0o644)
    with pytest.raises(SecretError, match="readable by other users"):
        resolve_keys(hub_home)


def test_cli_ingest_and_releases_list(population_3k, hub_home):
    env = {**os.environ, "HUB_HOME": str(hub_home), "COLUMNS": "200"}
    run = subprocess.run(
        [sys.executable, "-m", "hub.cli", "ingest", str(population_3k)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert "published release-0001" in run.stderr
    key = (hub_home / "keys" / "pseudonym.key").read_text().strip()
    assert key not in run.stdout + run.stderr
    listing = subprocess.run(
        [sys.executable, "-m", "hub.cli", "releases", "list"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "release-0001" in listing.stdout and "3,000" in listing.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "hub.cli", "ingest", str(population_3k)],
        env={**env, "HUB_PSEUDONYM_KEY": "00" * 32},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "trivially weak" in bad.stderr and "Traceback" not in bad.stderr
    manifest = json.loads((hub_home / "releases" / "release-0001.json").read_text())
    assert manifest["release_id"] == "release-0001"
    assert duckdb.connect(str(hub_home / "releases" / "release-0001.duckdb"), read_only=True)


def test_one_impossible_record_is_quarantined_not_a_refused_release(tmp_path, hub_home, keys):
    """A red team refused whole loads with one parseable but impossible value (a BMI of
    2,331, a birth date of 1800-01-01, a death before birth): each check failed at a 0%
    threshold. The record is quarantined at the build instead, with its reason, and the
    gate (on, as ``hub ingest`` runs it) judges the quarantined share."""
    from connectors.quality import gate_when_it_runs

    src = make_csv_population(tmp_path)
    obs = src / "observations" / "part-00000.csv"
    lines = obs.read_text().splitlines()
    assert lines[1].split(",")[4] == '"60621009"'  # a BMI
    row = lines[1].split(",")
    row[6] = "2331"
    lines[1] = ",".join(row)
    obs.write_text("\n".join(lines) + "\n")
    pats = src / "patients" / "part-00000.csv"
    plines = pats.read_text().splitlines()
    header = plines[0].split(",")
    born, died = header.index('"date_of_birth"'), header.index('"date_of_death"')
    first = plines[1].split(",")
    first[born] = "1800-01-01"  # an exporter's "unknown"
    plines[1] = ",".join(first)
    second = plines[2].split(",")
    second[died] = "1901-01-01"
    plines[2] = ",".join(second)
    pats.write_text("\n".join(plines) + "\n")

    result = ingest(src, fmt="native", home=hub_home, keys=keys, gate=gate_when_it_runs)
    assert result.release is not None  # published, the gate passed
    assert result.counts["observations"].quarantined.get("impossible value") == 1
    people = result.counts["patients"].quarantined
    assert people == {"impossible birth date": 1, "death before birth": 1}
    for table, c in result.counts.items():
        assert c.rows_in == c.published + sum(c.quarantined.values()), table
    con = release_con(result.release.path)
    assert (
        con.execute("SELECT max(value) FROM observations WHERE code = '60621009'").fetchone()[0]
        < 100
    )
    assert con.execute("SELECT min(year_of_birth) FROM patients").fetchone()[0] >= 1900
