"""The connectors' rules on their own: Synthea layouts, files, the identifier scan."""

from __future__ import annotations

import os
from pathlib import Path

import duckdb
import pytest

from connectors.errors import SourceError
from connectors.quality.identifier_scan import IdentifierLeak, scan
from connectors.sources import synthea_layouts as layouts
from connectors.staging import csv_header, describe, require_regular_file
from tests.conftest import FIXTURES


@pytest.mark.parametrize("version", sorted(layouts.LAYOUTS))
def test_every_documented_column_is_known(version):
    for file, header in layouts.LAYOUTS[version].items():
        known = layouts.known_columns(file)
        assert set(header.split(",")) <= known, (version, file)


def test_identifying_columns_are_known_by_meaning_in_every_spelling():
    owners = layouts.IDENTIFYING["payer_transitions"]
    assert owners["OWNER_NAME"] == owners["OWNERNAME"] == "name"
    published = {s for f in layouts.FIELDS["payer_transitions"] for s in f.spellings}
    assert not published & set(owners)
    for file, columns in layouts.IDENTIFYING.items():
        published = {s for f in layouts.FIELDS.get(file, ()) for s in f.spellings}
        # the exact birth date goes to the vault; only its year and month are published
        assert not published & set(columns) - {"BIRTHDATE"}, file


@pytest.mark.parametrize(
    ("export", "expected"),
    [
        ("synthea-2.x-2019", "2.x-2019"),
        ("synthea-2.x-2022", "2.x-2021"),
        ("synthea-3.x-2025", "3.x"),
    ],
)
def test_fixture_headers_match_their_release_line(export, expected):
    for file in ("procedures", "payer_transitions"):
        header = csv_header(FIXTURES / export / f"{file}.csv")
        assert layouts.match_layout(file, header) == expected, file


def test_file_names_that_carry_a_patient_name_are_never_printed(tmp_path):
    bundle = tmp_path / "Alfred550_West559_6872def5-772f-427c-3053-de6e1c71ce0a.json"
    assert "Alfred" not in describe(bundle, "0123456789abcdef")
    assert describe(Path("Patient.000.ndjson")) == "Patient.000.ndjson"
    assert describe(Path("procedures.csv")) == "procedures.csv"


@pytest.mark.parametrize(
    "name",
    [
        "Alfred_West_1961-07-03.json", "MRN-0012345.json", "Sumiko Medhurst.ndjson",
        "west_alfred.csv", "9434765919.parquet", "patients-of-dr-jones.csv",
    ],
)  # fmt: skip
def test_a_file_named_after_a_person_is_never_named_in_an_error(tmp_path, name):
    """A red-team's truncated Bundle saved as Alfred_West_1961-07-03.json was refused
    with its name printed: names are printed only when exporters write them."""
    folder = tmp_path / "Alfred_West"
    message = describe(folder / name) + describe(folder / name, "0123456789abcdef")
    for word in ("Alfred", "West", "1961", "0012345", "Sumiko", "west", "9434765919", "jones"):
        assert word not in message


def test_the_names_exporters_write_are_named_in_errors():
    from connectors.linkage import layouts as feed_layouts
    from connectors.sources import native

    names = [f"{f}.csv" for f in layouts.FIELDS]
    names += [f"{t}.csv" for t in native.TABLES] + ["part-00000.parquet", "feeds.json"]
    names += [f"{lay.patients}.{lay.ext}" for lay in feed_layouts.LAYOUTS.values()]
    names += [f"{lay.encounters}.csv" for lay in feed_layouts.LAYOUTS.values() if lay.encounters]
    names += ["Patient.ndjson", "Observation.000.ndjson", "ExplanationOfBenefit.2.ndjson"]
    for name in names:
        assert describe(Path(name)) == name


def test_only_regular_files_are_read(tmp_path):
    fifo = tmp_path / "patients.csv"
    os.mkfifo(fifo)
    with pytest.raises(SourceError, match="FIFO"):
        require_regular_file(fifo)
    link = tmp_path / "encounters.csv"
    link.symlink_to("/dev/null")
    with pytest.raises(SourceError, match="symbolic link"):
        require_regular_file(link)


@pytest.mark.parametrize(
    ("content", "message"), [(b"", "empty"), (b"\n\n", "empty"), (b"\xff\xfe,x\n", "UTF-8")]
)
def test_a_file_without_a_readable_header_is_refused(content, message, tmp_path):
    path = tmp_path / "patients.csv"
    path.write_bytes(content)
    with pytest.raises(SourceError, match=message):
        csv_header(path)


def _staged(
    rows: list[tuple[str, str]], values: list[tuple[str, str]]
) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("CREATE TABLE conditions (code VARCHAR, description VARCHAR)")
    con.executemany("INSERT INTO conditions VALUES (?, ?)", rows)
    con.execute("CREATE TEMP TABLE ids (meaning VARCHAR, value VARCHAR)")
    con.executemany("INSERT INTO ids VALUES (?, ?)", values)
    con.execute("CREATE TEMP VIEW stage_identifying_values AS SELECT * FROM ids")
    return con


def test_the_scan_finds_full_names_and_distinctive_words_but_never_prints_them():
    ids = [("name", "Jacinto644"), ("name", "Jacinto644 Kris249"), ("ssn", "999-12-3456")]
    for cell in ("jacinto644 kris249", "Seen by Jacinto644 today", "SSN 999-12-3456"):
        con = _staged([("1", cell)], ids)
        with pytest.raises(IdentifierLeak, match=r"conditions\.description") as err:
            scan(con, manifest={})
        assert "Jacinto" not in str(err.value) and "999-12" not in str(err.value)


def test_an_everyday_word_that_is_also_a_surname_is_not_a_leak():
    con = _staged([("1", "White"), ("2", "Green")], [("name", "White"), ("name", "Ann White")])
    assert scan(con, manifest={}).leaks == {}


def test_the_scan_reads_the_manifest_too():
    con = _staged([("1", "fine")], [("name", "Zebedee345")])
    with pytest.raises(IdentifierLeak, match="the manifest"):
        scan(con, manifest={"source": {"not_read": {"column supplies.ZEBEDEE345": 1}}})


IDS = [
    ("name", "Lyndon118"), ("name", "Greenholt190"), ("name", "Lyndon118 Greenholt190"),
    ("name", "Mr. Greenholt190"), ("name", "O'Neill"), ("address", "814 Padberg Street"),
    ("address", "668 Blanda Parade Unit 56"), ("ssn", "999-87-7360"),
    ("telecom", "555-810-7203"), ("identifier", "9990000018"),
    ("birthplace", "Stockholm  Stockholm  SE"), ("birthplace", "Boston"),
    ("coordinate", "59.25093149941897"),
]  # fmt: skip


@pytest.mark.parametrize(
    "cell",
    [
        "Visit for Lyndon Greenholt", "Seen: Mr. Lyndon118 Greenholt190.",
        "Fall at home, 814 Padberg Street", "lives at 668 Blanda Parade", "SSN 999 87 7360",
        "call (555) 810-7203 today", "555.810.7203", "+1 555 810 7203", "NHS 999 000 0018",
        "born in Stockholm, Stockholm SE", "at 59.25093149941897",
    ],
)  # fmt: skip
def test_the_scan_finds_identifiers_inside_sentences_and_in_digit_groups(cell):
    con = _staged([("1", cell)], IDS)
    with pytest.raises(IdentifierLeak, match=r"conditions\.description") as err:
        scan(con, manifest={})
    for word in ("lyndon", "greenholt", "padberg", "7360", "7203", "0018", "stockholm", "59.25"):
        assert word not in str(err.value).lower()


@pytest.mark.parametrize(
    "cell",
    [
        "Stockholm", "Boston", "Padberg Street", "Greenholt Street", "Lyndon", "Mr Greenholt",
        "O'Neill Health Centre", "Amount 7619.099999999998", "Code 428251000124104",
        "1999877360", "x9998773600", "2020-02-06T08:45:50Z",
    ],
)  # fmt: skip
def test_plain_words_city_names_codes_and_amounts_are_not_leaks(cell):
    con = _staged([("1", cell)], IDS)
    assert scan(con, manifest={}).leaks == {}
