"""One bad value or line in a regional feed never stops the load: feeds are read by the
hub's CSV reader, like the other connectors' CSV, through the real CLI with the gate on.

A row that cannot be read (too few or too many fields, not UTF-8) is quarantined with
its reason under the table it feeds; a value that does not parse (a date in another
convention) is NULL and its row quarantined; a rejected identity record is not linked,
so its encounters are quarantined as ``unknown person``. A file without a column the
layout reads is refused, naming the file and the column, never a value.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from synthetic_data.feeds import write_feeds
from synthetic_data.generator import SynthConfig, generate

HUB = [sys.executable, "-m", "hub.cli"]


def hub(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HUB_HOME": str(home), "COLUMNS": "200"}
    return subprocess.run([*HUB, *args], capture_output=True, text=True, env=env, timeout=600)


@pytest.fixture(scope="module")
def region(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("feeds-bad-rows")
    generate(SynthConfig(patients=400, seed=8), root / "pop", workers=1)
    write_feeds(root / "pop", root / "feeds", seed=8)
    return root / "feeds"


def _copy(region: Path, to: Path) -> Path:
    shutil.copytree(region, to, ignore=shutil.ignore_patterns("truth"))
    return to


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().split(b"\n")


def test_bad_values_and_lines_are_quarantined_with_reasons_and_counted(region, tmp_path):
    feeds = _copy(region, tmp_path / "feeds")
    ae = feeds / "ae" / "attendances.csv"
    lines = _lines(ae)
    header = lines[0].split(b",")
    row = lines[5].split(b",")
    row[header.index(b"arrival_date")] = b"31/03/2015"  # not ISO: NULL, then quarantined
    lines[5] = b",".join(row)
    lines[9] += b",one field too many"
    ae.write_bytes(b"\n".join(lines))

    obs = feeds / "gp-supplier-a" / "observations.csv"
    lines = _lines(obs)
    lines[3] = lines[3].replace(b",", b",\xff\xfe", 1)  # not UTF-8
    obs.write_bytes(b"\n".join(lines))

    # a trust patient with spells loses a field: the record is not linked, so its spells
    # cannot be placed and are quarantined as an unknown person
    trust = next(p for p in sorted(feeds.iterdir()) if p.name.startswith("trust-"))
    with (trust / "spells.csv").open(newline="") as fh:
        spells = list(csv.DictReader(fh))
    patients = trust / "patients.csv"
    lines = _lines(patients)
    header = lines[0].split(b",")
    at = header.index(b"hospital_number")
    short = next(
        i
        for i, line in enumerate(lines[1:], 1)
        if line and line.split(b",")[at].decode() in {s["hospital_number"] for s in spells}
    )
    hospital_number = lines[short].split(b",")[at].decode()
    lines[short] = b",".join(lines[short].split(b",")[:-1])
    patients.write_bytes(b"\n".join(lines))
    n_spells = sum(s["hospital_number"] == hospital_number for s in spells)

    result = hub(tmp_path / "home", "ingest", str(feeds), "--format", "feeds")
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    assert "quality gate passed" in out
    assert "31/03/2015" not in out and hospital_number not in out

    release = sorted((tmp_path / "home" / "releases").glob("release-*.duckdb"))[-1]
    manifest = json.loads(release.with_suffix(".json").read_text())
    for table, c in manifest["tables"].items():
        assert c["rows_in"] == c["published"] + sum(c["quarantined"].values()), table
    quarantined = {t: c["quarantined"] for t, c in manifest["tables"].items()}
    assert quarantined["encounters"] == {
        "unparseable date": 1,
        "long row (more fields than the header)": 1,
        "unknown person": n_spells,
    }
    assert quarantined["observations"] == {"not UTF-8": 1}
    assert quarantined["patients"] == {"short row (fewer fields than the header)": 1}
    con = duckdb.connect(str(release), read_only=True)
    try:
        rows = set(
            con.execute(
                "SELECT table_name, source_row, reason FROM _quarantine "
                "WHERE reason NOT IN ('unparseable date', 'unknown person')"
            ).fetchall()
        )
    finally:
        con.close()
    # a row the reader rejected is named by its file's hash and its data row, nothing else
    assert rows == {
        ("encounters", 9, "long row (more fields than the header)"),
        ("observations", 3, "not UTF-8"),
        ("patients", short, "short row (fewer fields than the header)"),
    }


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda header: b"", "ae/attendances.csv is empty: a header line was expected"),
        (
            lambda header: header.replace(b"surname", b"family_name"),
            "a feed has no surname column in ae/attendances.csv",
        ),
        (
            lambda header: header.replace(b"postcode", b"Surname"),
            "ae/attendances.csv names the surname column 2 times",
        ),
    ],
    ids=["empty file", "missing column", "duplicated column"],
)
def test_a_feed_file_without_its_columns_is_refused_naming_file_and_column(
    region, tmp_path, damage, message
):
    feeds = _copy(region, tmp_path / "feeds")
    ae = feeds / "ae" / "attendances.csv"
    lines = _lines(ae)
    header = damage(lines[0])
    ae.write_bytes(b"\n".join([header, *lines[1:]]) if header else b"")
    result = hub(tmp_path / "home", "ingest", str(feeds), "--format", "feeds")
    assert result.returncode == 2, result.stderr[-3000:]
    assert message in result.stderr and "Traceback" not in result.stderr
    assert "error in the reader" not in result.stderr
    assert not list((tmp_path / "home" / "releases").glob("release-*.duckdb"))


def test_published_event_ids_do_not_lead_back_to_a_trusts_records(region, tmp_path):
    """Spell, attendance and event ids were published as the feeds' own numbers, so a
    trust could map every published event (and its pseudonymous person) back to its own
    records; they are a keyed hash of the feed and the local id now."""
    feeds = _copy(region, tmp_path / "feeds")
    done = hub(tmp_path / "home", "ingest", str(feeds), "--format", "feeds")
    assert done.returncode == 0, done.stderr[-2000:]
    raw: set[int] = set()
    for path in feeds.rglob("*.csv"):
        with path.open(newline="") as fh:
            for row in csv.DictReader(fh):
                for key, value in row.items():
                    digits = "".join(c for c in (value or "") if c.isdigit())
                    if key and key.endswith("_id") and digits:
                        raw.add(int(digits[:18]))
    release = sorted((tmp_path / "home" / "releases").glob("release-*.duckdb"))[-1]
    con = duckdb.connect(str(release), read_only=True)
    try:
        published = {
            r[0]
            for table, column in (
                ("encounters", "encounter_id"),
                ("conditions", "condition_id"),
                ("observations", "observation_id"),
                ("conditions", "encounter_id"),
            )
            for r in con.execute(f"SELECT DISTINCT {column} FROM {table}").fetchall()
        }
    finally:
        con.close()
    assert len(published) > 100 and not published & raw
