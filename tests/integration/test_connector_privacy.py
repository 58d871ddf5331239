"""What the Synthea and FHIR connectors must never publish, on edited real exports.

Each test loads a copy of a real fixture export into which a red team put something:
identifiers inside sentences, ``resourceType`` strings that are data, bad values, two
files for one table. Published ids are keyed: no published value equals a source id of
the export, or an unkeyed hash of one.
"""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
from pathlib import Path

import duckdb
import pytest

from connectors import build
from connectors.errors import SourceError
from connectors.ingest import ingest
from connectors.quality.identifier_scan import IdentifierLeak
from connectors.secrets import resolve_keys
from connectors.sources import fhir
from tests.conftest import FIXTURES, SHARED, release_con

SYNTHEA_2023 = FIXTURES / "synthea-3.x-2023"  # Lyndon118 Reid278 Greenholt190, ...
SYNTHEA_2025 = FIXTURES / "synthea-3.x-2025"  # with organizations and providers
FHIR_BULK = FIXTURES / "fhir-bulk-10"
FHIR_BUNDLES = FIXTURES / "fhir-bundles-3.x"
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)


def copy(export: Path, tmp_path: Path) -> Path:
    out = tmp_path / export.name
    shutil.copytree(export, out)
    return out


def read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    with path.open(newline="") as fh:
        rows = list(csv.reader(fh))
    return rows[0], rows[1:]


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    path.write_text(out.getvalue())


def set_cell(path: Path, column: str, value: str, row: int = 0) -> None:
    header, rows = read_csv(path)
    rows[row][header.index(column)] = value
    write_csv(path, header, rows)


def ndjson(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_ndjson(path: Path, resources: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in resources))


def source_ids(export: Path) -> set[str]:
    """Every id and reference of an export: its UUIDs, and every FHIR resource's ``id``."""
    found: set[str] = set()
    for path in export.iterdir():
        if path.suffix not in (".csv", ".ndjson", ".json"):
            continue
        text = path.read_text()
        found.update(m.lower() for m in UUID.findall(text))
        found.update(UUID.findall(text))
        if path.suffix == ".ndjson":
            found.update(r["id"] for r in ndjson(path) if "id" in r)
        elif path.suffix == ".json":
            entries = json.loads(text).get("entry", [])
            found.update(e["resource"]["id"] for e in entries if "id" in e.get("resource", {}))
    return found


def published_source_ids(release: Path, ids: set[str]) -> dict[str, int]:
    """Columns of the release holding a source id, or its unkeyed hash, as a value."""
    con = duckdb.connect()
    con.execute(f"ATTACH '{release}' AS rel (READ_ONLY)")
    con.execute("CREATE TEMP TABLE ids (id VARCHAR)")
    con.executemany("INSERT INTO ids VALUES (?)", [[i] for i in sorted(ids)])
    con.execute(
        """CREATE TEMP TABLE unkeyed AS
           SELECT DISTINCT h FROM (
               SELECT md5_number_lower(id)::HUGEINT AS h FROM ids
               UNION ALL SELECT (md5_number_lower(id) >> 1)::HUGEINT FROM ids
               UNION ALL SELECT md5_number_upper(id)::HUGEINT FROM ids
               UNION ALL SELECT (md5_number_upper(id) >> 1)::HUGEINT FROM ids)"""
    )
    columns = con.execute(
        """SELECT table_name, column_name, data_type FROM duckdb_columns()
           WHERE database_name = 'rel'"""
    ).fetchall()
    hits: dict[str, int] = {}
    for table, column, kind in columns:
        ref = f'rel.main."{table}"."{column}"'
        if kind == "VARCHAR":
            sql = f"""SELECT count(*) FROM (SELECT DISTINCT "{column}" AS x
                      FROM rel.main."{table}" WHERE "{column}" IS NOT NULL) v
                      WHERE EXISTS (SELECT 1 FROM ids WHERE contains(v.x, ids.id))"""
        elif kind in ("BIGINT", "UBIGINT", "HUGEINT", "INTEGER"):
            sql = f"""SELECT count(*) FROM rel.main."{table}"
                      WHERE "{column}"::HUGEINT IN (SELECT h FROM unkeyed)"""
        else:
            continue
        n = con.execute(sql).fetchall()[0][0]
        if n:
            hits[ref] = n
    return hits


# -- 5. published ids are keyed -------------------------------------------------------


@pytest.mark.parametrize("export", [SYNTHEA_2023, SYNTHEA_2025], ids=lambda p: p.name)
def test_synthea_ids_are_keyed_stable_and_still_join(export, tmp_path, keys):
    first = ingest(export, fmt="synthea", home=tmp_path / "a", keys=keys)
    assert published_source_ids(first.release.path, source_ids(export)) == {}
    con = release_con(first.release.path)
    tables = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}

    def unjoined(sql: str) -> tuple[int, int]:
        return tuple(con.execute(sql).fetchall()[0])  # (references, not found)

    # the extras publish the keyed encounter id: they join to encounters as they did
    for table, column in (
        ("synthea_supplies", "encounter"),
        ("synthea_imaging_studies", "encounter"),
        ("synthea_claims", "appointment_id"),
    ):
        if table in tables:
            refs, missing = unjoined(
                f"""SELECT count({column}), count({column}) FILTER (e.encounter_id IS NULL)
                    FROM {table} x LEFT JOIN encounters e ON e.encounter_id = x.{column}"""
            )
            assert refs > 0 and missing == 0, table
            kind = con.execute(
                f"SELECT data_type FROM duckdb_columns() WHERE table_name = '{table}' "
                f"AND column_name = '{column}'"
            ).fetchall()
            assert kind == [("BIGINT",)], table
    refs, missing = unjoined(
        """SELECT count(payer), count(payer) FILTER (p.payer_id IS NULL)
           FROM synthea_payer_transitions t LEFT JOIN synthea_payers p ON p.payer_id = t.payer"""
    )
    assert refs > 0 and missing == 0
    if "synthea_providers" in tables:
        refs, missing = unjoined(
            """SELECT count(organisation_id),
                      count(organisation_id) FILTER (o.organisation_code IS NULL)
               FROM synthea_providers p
               LEFT JOIN organisations o ON o.organisation_code = p.organisation_id::VARCHAR"""
        )
        assert refs > 0 and missing == 0
        refs, missing = unjoined(
            """SELECT count(e.organisation_code),
                      count(e.organisation_code) FILTER (o.organisation_code IS NULL)
               FROM encounters e LEFT JOIN organisations o USING (organisation_code)"""
        )
        assert refs > 0 and missing == 0
    # the same keys give the same ids; another key, others; the key is never stored
    again = ingest(export, fmt="synthea", home=tmp_path / "b", keys=keys)
    assert again.release.manifest["content_hash"] == first.release.manifest["content_hash"]
    ids = "SELECT list(encounter_id ORDER BY encounter_id) FROM encounters"
    assert release_con(again.release.path).execute(ids).fetchall() == con.execute(ids).fetchall()
    other_keys = resolve_keys(tmp_path / "c", create=True)
    other = ingest(export, fmt="synthea", home=tmp_path / "c", keys=other_keys)
    theirs = set(release_con(other.release.path).execute(ids).fetchall()[0][0])
    assert not theirs & set(con.execute(ids).fetchall()[0][0])
    blob = first.release.path.read_bytes()
    assert build.id_key(keys.pseudonym).encode() not in blob
    assert build.id_key(keys.pseudonym) not in json.dumps(first.release.manifest)


@pytest.mark.parametrize("export", [FHIR_BULK, FHIR_BUNDLES], ids=lambda p: p.name)
def test_fhir_ids_are_keyed_and_still_join(export, tmp_path, keys):
    result = ingest(export, fmt="fhir", home=tmp_path / "a", keys=keys)
    assert published_source_ids(result.release.path, source_ids(export)) == {}
    con = release_con(result.release.path)
    refs, missing = con.execute(
        """SELECT count(c.encounter_id), count(c.encounter_id) FILTER (e.encounter_id IS NULL)
           FROM conditions c LEFT JOIN encounters e USING (encounter_id)"""
    ).fetchall()[0]
    assert refs > 0 and missing == 0
    refs, missing = con.execute(
        """SELECT count(r.organisation_code),
                  count(r.organisation_code) FILTER (o.organisation_code IS NULL)
           FROM fhir_practitioner_roles r LEFT JOIN organisations o USING (organisation_code)"""
    ).fetchall()[0]
    assert refs > 0 and missing == 0


def test_fhir_ods_codes_stay_and_a_care_plan_reason_is_a_code(tmp_path, keys):
    patient = {
        "resourceType": "Patient", "id": "p-1", "gender": "female", "birthDate": "1961-04-02",
        "generalPractitioner": [{"identifier": {
            "system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": "A81001"}}],
    }  # fmt: skip
    condition = {
        "resourceType": "Condition", "id": "c-1", "subject": {"reference": "Patient/p-1"},
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "44054006"}]},
        "onsetDateTime": "2020-01-01",
    }  # fmt: skip
    plan = {
        "resourceType": "CarePlan", "id": "cp-1", "subject": {"reference": "Patient/p-1"},
        "addresses": [{"reference": "Condition/c-1"}], "period": {"start": "2020-01-02"},
        "category": [{"coding": [{"system": "http://snomed.info/sct", "code": "698360004"}]}],
    }  # fmt: skip
    folder = tmp_path / "fhir"
    folder.mkdir()
    write_ndjson(folder / "Resources.000.ndjson", [patient, condition, plan])
    result = ingest(folder, fmt="fhir", home=tmp_path / "hub", keys=keys)
    con = release_con(result.release.path)
    assert con.execute("SELECT practice_code FROM patients").fetchall() == [("A81001",)]
    assert con.execute("SELECT reason_code FROM care_plans").fetchall() == [("44054006",)]


# -- 1. mother's maiden name and birth place, whatever the URL's case --------------------


def test_fhir_maiden_name_and_birth_place_are_vaulted_and_looked_for(tmp_path, keys):
    con = duckdb.connect()
    build.install_macros(con)
    fhir.stage(con, FHIR_BULK)
    build.install_id_key(con, keys.pseudonym)
    maidens = [
        e["valueString"]
        for p in ndjson(FHIR_BULK / "Patient.000.ndjson")
        for e in p.get("extension", [])
        if e["url"].endswith("patient-mothersMaidenName")
    ]
    assert maidens
    identifiers = " ".join(
        r[0] for r in con.execute("SELECT identifiers FROM stage_patients").fetchall()
    )
    for maiden in maidens:
        assert maiden in identifiers
    assert "Olathe" in identifiers  # a birth place
    looked_for = {
        (m, v)
        for m, v in con.execute("SELECT meaning, value FROM stage_identifying_values").fetchall()
    }
    assert {("name", m) for m in maidens} <= looked_for
    assert ("birthplace", "Olathe Kansas US") in looked_for
    assert ("coordinate", "38.37796654358168") in looked_for
    # free text repeating the maiden name is now redacted (it is among the identifiers)
    src = copy(FHIR_BULK, tmp_path)
    patients = ndjson(src / "Patient.000.ndjson")
    person = next(p for p in patients if any("aiden" in e["url"] for e in p.get("extension", [])))
    maiden = next(e["valueString"] for e in person["extension"] if "aiden" in e["url"])
    for e in person["extension"]:
        e["url"] = e["url"].replace("mothersMaidenName", "MothersMaidenname")  # odd case
    write_ndjson(src / "Patient.000.ndjson", patients)
    note = {
        "resourceType": "Observation", "id": "note-1", "status": "final",
        "code": {"text": "Carer's note"}, "subject": {"reference": f"Patient/{person['id']}"},
        "effectiveDateTime": "2020-01-01", "valueString": f"Mother's maiden name {maiden}",
    }  # fmt: skip
    write_ndjson(src / "Observation.000.ndjson", [note])
    result = ingest(src, fmt="fhir", home=tmp_path / "hub", keys=keys)
    assert result.release.manifest["tables"]["observations"]["redacted_free_text"] == 1
    assert maiden.encode() not in result.release.path.read_bytes()


# -- 2. a bad value never fails the load ----------------------------------------------


def test_fhir_values_of_the_wrong_type_are_null_or_quarantined(tmp_path, keys):
    src = copy(FHIR_BULK, tmp_path)
    practitioners = ndjson(src / "Practitioner.000.ndjson")
    practitioners[0]["active"] = "maybe"
    practitioners[1]["active"] = {"value": True}
    practitioners[2]["active"] = 12
    write_ndjson(src / "Practitioner.000.ndjson", practitioners)
    patients = ndjson(src / "Patient.000.ndjson")
    patients[0]["identifier"] = patients[0]["identifier"][0]  # an object, not a list
    patients[1]["extension"] = {"url": "x"}
    patients[2]["name"] = {"family": "Solo"}
    write_ndjson(src / "Patient.000.ndjson", patients)
    encounters = ndjson(src / "Encounter.000.ndjson")
    encounters[0]["period"] = {"start": {"year": 2020}}
    write_ndjson(src / "Encounter.000.ndjson", encounters)
    pid = patients[3]["id"]
    odd = {
        "resourceType": "Observation", "id": "o-1", "subject": {"reference": f"Patient/{pid}"},
        "code": {"coding": [{"system": "http://loinc.org", "code": "8302-2"}]},
        "effectiveDateTime": "2020-01-01", "valueQuantity": {"value": "tall", "unit": "cm"},
    }  # fmt: skip
    write_ndjson(src / "Observation.000.ndjson", [odd])
    result = ingest(src, fmt="fhir", home=tmp_path / "hub", keys=keys)
    con = release_con(result.release.path)
    active = dict(
        con.execute("SELECT active IS NULL, count(*) FROM fhir_practitioners GROUP BY 1").fetchall()
    )
    assert active[True] == 3 and active[False] == len(practitioners) - 3
    assert result.counts["encounters"].quarantined == {"unparseable date": 1}
    # a quantity that is no number is quarantined, as Synthea's are (it was NULL: lost
    # without a word, a red-team find for "5,4" written with a decimal comma)
    assert con.execute("SELECT value FROM observations").fetchall() == []
    assert result.counts["observations"].quarantined == {"unparseable number": 1}
    assert result.counts["patients"].published == len(patients)


# -- 3. two files of one Synthea table with different headers ---------------------------


@pytest.mark.parametrize("swap", [True, False])
def test_two_files_of_one_synthea_table_must_share_their_header(swap, tmp_path, keys):
    src = copy(SYNTHEA_2025, tmp_path)
    header, rows = read_csv(src / "patients.csv")
    write_csv(src / "patients.csv", header, rows[:1])
    if swap:  # the same columns, two swapped: BIRTHPLACE would be read as ETHNICITY
        i, j = header.index("ETHNICITY"), header.index("BIRTHPLACE")
        order = list(range(len(header)))
        order[i], order[j] = j, i
        write_csv(src / "Patients.csv", [header[k] for k in order],
                  [[r[k] for k in order] for r in rows[1:]])  # fmt: skip
        with pytest.raises(SourceError) as err:
            ingest(src, fmt="synthea", home=tmp_path / "hub", keys=keys)
        message = str(err.value)
        assert "patients.csv" in message and "Patients.csv" in message
        assert "another order" in message
        for row in rows:
            for value in row:
                if len(value) > 3:
                    assert value not in message
        assert not list((tmp_path / "hub" / "releases").glob("release-*.duckdb"))
    else:  # the same header: both files are read
        write_csv(src / "Patients.csv", header, rows[1:])
        result = ingest(src, fmt="synthea", home=tmp_path / "hub", keys=keys)
        assert result.counts["patients"].published == len(rows)


def test_a_renamed_column_in_a_second_file_is_refused(tmp_path, keys):
    src = copy(SYNTHEA_2025, tmp_path)
    header, rows = read_csv(src / "encounters.csv")
    write_csv(src / "ENCOUNTERS.csv", [h.replace("DESCRIPTION", "DESC") for h in header], rows)
    with pytest.raises(SourceError, match="different columns") as err:
        ingest(src, fmt="synthea", home=tmp_path / "hub", keys=keys)
    assert "encounters.csv" in str(err.value) and "ENCOUNTERS.csv" in str(err.value)


# -- 4. names from the export's structure are published only when known ----------------


def test_a_resource_type_that_is_data_is_only_counted(tmp_path, keys):
    src = copy(FHIR_BULK, tmp_path)
    junk = "Medhurst, Sumiko 1927-05-21 66801"
    lines = [{"resourceType": junk, "id": "x1"}, {"resourceType": "Claim", "id": "c1"}]
    write_ndjson(src / "Other.000.ndjson", lines)
    result = ingest(src, fmt="fhir", home=tmp_path / "hub", keys=keys)
    assert result.skipped == {fhir.NOT_A_RESOURCE_TYPE: 1, "Claim": 1}
    assert junk not in json.dumps(result.release.manifest)
    assert "Medhurst" not in json.dumps(result.release.manifest)


def test_synthea_header_names_are_published_only_when_known(tmp_path, keys):
    src = copy(SYNTHEA_2025, tmp_path)
    header, rows = read_csv(src / "supplies.csv")
    extra = ["LYNDON118", "SSN", "NOTES_2"]
    write_csv(src / "supplies.csv", header + extra, [[*r, "a", "b", "c"] for r in rows])
    result = ingest(src, fmt="synthea", home=tmp_path / "hub", keys=keys)
    not_read = result.release.manifest["source"]["not_read"]
    assert not_read == {
        "column supplies.SSN": 1,
        "columns of supplies unknown to the connector": 2,
    }


# -- 6. identifiers inside sentences ---------------------------------------------------


def _refused(src: Path, fmt: str, home: Path, keys, where: str, secret: str) -> None:
    with pytest.raises(IdentifierLeak) as err:
        ingest(src, fmt=fmt, home=home, keys=keys)
    message = str(err.value)
    assert where in message, message
    for word in re.split(r"[\s,]+", secret):
        assert word.lower() not in message.lower(), word
    assert not list((home / "releases").glob("release-*.duckdb"))


# (text put into the export, the identifying part of it)
SYNTHEA_LEAKS = [
    # Lyndon118 Reid278 Greenholt190: a full name, with Synthea's numbers or without
    ("Visit for Lyndon Greenholt", "Lyndon Greenholt"),
    ("Visit for Lyndon118 Reid278 Greenholt190", "Lyndon118 Reid278 Greenholt190"),
    ("Fall at home, 814 Padberg Street", "814 Padberg"),
    ("Patient SSN 999 87 7360", "999 87 7360"),
    ("Born in Stockholm, Stockholm SE", "Stockholm"),  # BIRTHPLACE
    ("Found at 59.25093149941897", "59.25093149941897"),  # LAT
]


def set_for_people(path: Path, column: str, value: str, people: int) -> None:
    """Put ``value`` in ``column`` of the first row of each of ``people`` patients."""
    header, rows = read_csv(path)
    key = header.index("PATIENT")
    seen: set[str] = set()
    for row in rows:
        if row[key] not in seen and len(seen) < people:
            seen.add(row[key])
            row[header.index(column)] = value
    assert len(seen) == people
    write_csv(path, header, rows)


def _text_cells(release: Path) -> list[str]:
    con = duckdb.connect(str(release), read_only=True)
    try:
        out: list[str] = []
        for table, column in con.execute(
            "SELECT table_name, column_name FROM duckdb_columns() WHERE data_type = 'VARCHAR' "
            "AND NOT internal"
        ).fetchall():
            out += [
                r[0] for r in con.execute(f'SELECT DISTINCT "{column}" FROM "{table}"').fetchall()
            ]
        return [str(v) for v in out if v is not None]
    finally:
        con.close()


@pytest.mark.parametrize(("text", "secret"), SYNTHEA_LEAKS)
def test_identifiers_one_patient_has_in_free_text_are_never_published(text, secret, tmp_path, keys):
    """Text that fewer than three people share is emptied, whatever it says: a name in
    any order or with initials, a street, a birth date, a number with any separators."""
    src = copy(SYNTHEA_2023, tmp_path)
    set_cell(src / "encounters.csv", "DESCRIPTION", text, row=3)
    result = ingest(src, fmt="synthea", home=tmp_path / "hub", keys=keys)
    assert all(secret not in cell for cell in _text_cells(result.release.path))
    assert result.release.manifest["tables"]["encounters"]["rare_text_removed"]["description"]


@pytest.mark.parametrize(
    "text",
    ["West, Alfred", "Home visit E. Mayert", "DOB 1955-09-01", "NHS no 943\u00a0476\u00a05919",
     "SSN 999\u201396\u20136821", "lives at B693DF", "ref 09434765919"],
)  # fmt: skip
def test_forms_no_scan_knows_are_removed_when_one_patient_has_them(text, tmp_path, keys):
    """A red-team's third round: surname first, initials, birth dates, non-breaking
    spaces and en dashes, postcodes without their space, an identifier inside a longer
    number. None is looked for; each is one person's text, so none is published."""
    src = copy(SYNTHEA_2023, tmp_path)
    set_cell(src / "conditions.csv", "DESCRIPTION", text, row=2)
    result = ingest(src, fmt="synthea", home=tmp_path / "hub", keys=keys)
    assert text not in _text_cells(result.release.path)


@pytest.mark.parametrize(("text", "secret"), SYNTHEA_LEAKS)
def test_identifiers_several_patients_share_in_free_text_refuse_the_release(
    text, secret, tmp_path, keys
):
    src = copy(SYNTHEA_2023, tmp_path)
    set_for_people(src / "encounters.csv", "DESCRIPTION", text, people=3)
    if text.startswith("Visit for Lyndon"):
        # a given and a family name of one person side by side: the text rules empty it
        # before the scan would refuse the release (any order, any separator)
        result = ingest(src, fmt="synthea", home=tmp_path / "hub", keys=keys)
        assert text not in _text_cells(result.release.path)
        return
    _refused(src, "synthea", tmp_path / "hub", keys, "encounters.description", secret)


FHIR_LEAKS = [
    ("Call 555 810 7203", "555 810 7203"),  # telecom 555-810-7203
    ("Born in Olathe, Kansas US", "Olathe"),  # birthPlace
    ("Seen at 38.37796654358168", "38.37796654358168"),  # the address's geolocation
    ("Visit for Harold594 VonRueden376", "Harold594 VonRueden376"),  # mother's maiden name
    ("Fall at home, 633 Abernathy Landing", "Abernathy"),
]


def _fhir_text_for_people(src: Path, text: str, people: int) -> None:
    """Put ``text`` in the first Condition display of each of ``people`` patients."""
    conditions = ndjson(src / "Condition.000.ndjson")
    seen: set[str] = set()
    for c in conditions:
        who = str(c.get("subject", {}).get("reference"))
        if who not in seen and len(seen) < people:
            seen.add(who)
            c["code"]["coding"][0]["display"] = text
    assert len(seen) == people
    write_ndjson(src / "Condition.000.ndjson", conditions)


@pytest.mark.parametrize(("text", "secret"), FHIR_LEAKS)
def test_fhir_identifiers_inside_text_are_removed_or_refuse_the_release(
    text, secret, tmp_path, keys
):
    src = copy(FHIR_BULK, tmp_path)
    _fhir_text_for_people(src, text, people=1)
    result = ingest(src, fmt="fhir", home=tmp_path / "one", keys=keys)
    assert all(secret not in cell for cell in _text_cells(result.release.path))
    src = copy(FHIR_BULK, tmp_path / "shared")
    _fhir_text_for_people(src, text, people=3)
    if text.startswith("Visit for Harold"):
        # a person's two name words side by side: emptied by the text rules before the scan
        shared = ingest(src, fmt="fhir", home=tmp_path / "hub", keys=keys)
        assert all(secret not in cell for cell in _text_cells(shared.release.path))
        return
    _refused(src, "fhir", tmp_path / "hub", keys, "conditions.description", secret)


@pytest.mark.parametrize(
    "text",
    ["Stockholm", "Padberg Street", "Greenholt Street", "Lyndon", "Amount 7619.099999999998",
     "Code 428251000124104", "Massachusetts US", "Mr Greenholt"],
)  # fmt: skip
def test_plain_words_city_names_and_numbers_do_not_refuse(text, tmp_path, keys):
    src = copy(SYNTHEA_2023, tmp_path)
    set_cell(src / "encounters.csv", "DESCRIPTION", text, row=3)
    result = ingest(src, fmt="synthea", home=tmp_path / "hub", keys=keys)
    assert result.release.manifest["identifier_scan"]["passed"]


def test_a_patient_written_in_the_wrong_shape_is_still_looked_for(tmp_path, keys):
    """An exporter that writes one object where FHIR has a list (``identifier: {...}``,
    ``name: {...}``) or a string where it has one (``given: "Ann"``) took that patient's
    values out of what the scan looks for; every shape is read now."""
    src = copy(FHIR_BULK, tmp_path)
    patients = ndjson(src / "Patient.000.ndjson")
    target = patients[0]
    ssn = next(i for i in target["identifier"] if "ssn" in str(i.get("system", "")).lower())
    target["identifier"] = ssn  # one object, not a list
    name = target["name"][0]
    target["name"] = {"family": name["family"], "given": name["given"][0]}  # and a string
    write_ndjson(src / "Patient.000.ndjson", patients)
    full = f"{name['given'][0]} {name['family']}"
    # shared by three people, so that the scan (not the rare-text rule) must find the SSN
    _fhir_text_for_people(src, f"Visit, SSN {ssn['value']}", people=3)
    _refused(src, "fhir", tmp_path / "hub", keys, "conditions.description", ssn["value"])
    # and the name, read from its odd shape, is a name: the text rules empty it
    src = copy(FHIR_BULK, tmp_path / "named")
    write_ndjson(src / "Patient.000.ndjson", patients)
    _fhir_text_for_people(src, f"Visit for {full}", people=3)
    result = ingest(src, fmt="fhir", home=tmp_path / "named-hub", keys=keys)
    assert all(full not in cell for cell in _text_cells(result.release.path))


def test_a_name_written_surname_first_in_a_table_of_no_one_is_never_published(tmp_path, keys):
    """A payer's, organisation's or location's name belongs to no person, so the
    rare-text rule cannot apply there: a patient's name written surname first ("Mayert,
    Eustolia (self-pay)", a red-team's third round) is looked for in both orders."""
    src = copy(SYNTHEA_2023, tmp_path)
    set_cell(src / "payers.csv", "NAME", "Greenholt, Lyndon (self-pay)", row=0)
    # a person's two name words side by side: the text rules empty it before the scan
    result = ingest(src, fmt="synthea", home=tmp_path / "hub", keys=keys)
    assert "Greenholt, Lyndon (self-pay)" not in _text_cells(result.release.path)
    set_cell(src / "payers.csv", "NAME", "Greenholt Lyndon Insurance", row=0)
    result = ingest(src, fmt="synthea", home=tmp_path / "hub2", keys=keys)
    assert "Greenholt Lyndon Insurance" not in _text_cells(result.release.path)


SHARED_SYNTHEA = SHARED / "fixtures" / "synthea-csv"
_TIMESTAMP_TEXT = r"[0-9]{4}-[0-9]{2}-[0-9]{2}"


@pytest.mark.parametrize(
    "export",
    [SYNTHEA_2023, SYNTHEA_2025, SHARED_SYNTHEA],
    ids=lambda p: p.parent.name + "/" + p.name,
)
def test_no_published_text_holds_a_date_and_side_tables_publish_days_or_years(
    export, tmp_path, keys
):
    """The side tables (payer transitions, claims, transactions, expenses, supplies,
    imaging) published Synthea's timestamps as text, to the second: a newborn's first
    rows held their birth instant, while ``patients`` keeps only year and month."""
    if not export.exists():
        pytest.skip(f"{export} is not on this machine")
    result = ingest(export, fmt="synthea", home=tmp_path / "h", keys=keys)
    con = release_con(result.release.path)
    columns = con.execute(
        "SELECT table_name, column_name, data_type FROM duckdb_columns() "
        "WHERE database_name = current_database() AND table_name NOT LIKE '\\_%' ESCAPE '\\'"
    ).fetchall()
    for table, column, kind in columns:
        if kind == "VARCHAR":
            n = con.execute(
                f'SELECT count(*) FROM "{table}" WHERE regexp_matches("{column}", ?)',
                [_TIMESTAMP_TEXT],
            ).fetchone()[0]
            assert n == 0, (table, column)
    kinds = {(t, c): k for t, c, k in columns}
    for table, column, kind in [
        ("synthea_payer_transitions", "start", "INTEGER"),
        ("synthea_claims", "service_date", "DATE"),
        ("synthea_claims_transactions", "from_date", "DATE"),
        ("synthea_patient_expenses", "year", "INTEGER"),
    ]:
        if (table, column) in kinds:
            assert kinds[(table, column)] == kind, (table, column)
    years = con.execute("SELECT count(start), min(start) FROM synthea_payer_transitions").fetchone()
    assert years[0] > 0 and 1900 < years[1] < 2100  # the years are read, not dropped


def test_a_measure_in_another_ucum_unit_is_converted_not_refused(tmp_path, keys):
    """FHIR's vital-signs profile allows a weight in [lb_av] and a height in [in_i]; the
    gate accepts one unit per measured code, so a US export refused the whole load (a
    red-team find). The build converts them to the code's one unit."""
    from connectors.quality import gate_when_it_runs

    src = copy(SYNTHEA_2023, tmp_path)
    header, rows = read_csv(src / "observations.csv")
    code, value, unit = header.index("CODE"), header.index("VALUE"), header.index("UNITS")
    kilos = {}
    for i, row in enumerate(rows):
        if row[code] == "29463-7" and row[unit] == "kg":
            kilos[i] = float(row[value])
            row[value], row[unit] = f"{float(row[value]) / 0.45359237:.4f}", "[lb_av]"
        elif row[code] == "8302-2" and row[unit] == "cm":
            row[value], row[unit] = f"{float(row[value]) / 2.54:.4f}", "[in_i]"
    assert kilos
    write_csv(src / "observations.csv", header, rows)
    result = ingest(src, fmt="synthea", home=tmp_path / "h", keys=keys, gate=gate_when_it_runs)
    con = release_con(result.release.path)
    units = dict(
        con.execute(
            "SELECT code, list(DISTINCT unit) FROM observations "
            "WHERE code IN ('29463-7', '8302-2') GROUP BY code"
        ).fetchall()
    )
    assert units == {"29463-7": ["kg"], "8302-2": ["cm"]}
    weights = sorted(r[0] for r in con.execute(
        "SELECT value FROM observations WHERE code = '29463-7'").fetchall())  # fmt: skip
    assert weights == pytest.approx(sorted(kilos.values()), abs=1e-3)


@pytest.mark.parametrize(
    "shape, family, text",
    [
        ("structured", "Schmitt", "Home visit, Schmitt family"),
        # a name written only as text: no family part to read it from
        ("text only", "Schmitt", "Home visit, Schmitt family"),
        # a surname of two letters
        ("structured", "Li", "Home visit, Li family"),
        # the text without the accent, and a plural
        ("structured", "Müller", "Home visit, Muller family"),
        ("structured", "Schmitt", "Home visit to the Schmitts"),
        # transliterated, and with the apostrophe left out (a second round's finds)
        ("structured", "Müller", "Home visit, Mueller family"),
        ("structured", "O'Brien", "Home visit, OBrien family"),
    ],
)
def test_a_text_naming_the_family_that_shares_it_is_emptied(shape, family, text, tmp_path, keys):
    """Three patients of one family (Synthea's numbers off) each had an encounter typed
    with their surname: three people share it, so the rare-text rule kept it, and the
    scan takes a surname alone for an everyday word (red-team finds: the structured
    name, then a name written only as ``text``, a two-letter surname, a text without the
    accent, a plural). A text whose word is a name of most of its holders is emptied,
    whatever the name's shape; other shared texts stay."""
    src = copy(FHIR_BULK, tmp_path)
    patients = ndjson(src / "Patient.000.ndjson")
    members = [p["id"] for p in patients[:3]]
    for p in patients:
        for name in p.get("name", []):
            name["given"] = [re.sub(r"\d+$", "", g) for g in name.get("given", [])]
            name["family"] = family if p["id"] in members else re.sub(r"\d+$", "", name["family"])
        if shape == "text only" and p["id"] in members:
            p["name"] = [{"text": f"{p['name'][0]['given'][0]} {family}"}]
    write_ndjson(src / "Patient.000.ndjson", patients)
    encounters = ndjson(src / "Encounter.000.ndjson")
    typed: set[str] = set()
    for e in encounters:
        who = e["subject"]["reference"].split("/")[-1].removeprefix("urn:uuid:")
        if who in members and who not in typed:
            e["type"][0]["text"] = text
            typed.add(who)
    assert len(typed) == 3
    write_ndjson(src / "Encounter.000.ndjson", encounters)
    result = ingest(src, fmt="fhir", home=tmp_path / "h", keys=keys)
    con = release_con(result.release.path)
    found = con.execute("SELECT count(*) FROM encounters WHERE encounter_type = ?", [text])
    assert found.fetchone()[0] == 0
    assert result.counts["encounters"].rare_text.get("encounter_type", 0) >= 3
    assert con.execute("SELECT count(encounter_type) FROM encounters").fetchone()[0] > 0


def _fhir_observations(src: Path, units: list[str]) -> None:
    """Heart rates for the export's first patients, one per unit given."""
    patients = ndjson(src / "Patient.000.ndjson")
    write_ndjson(
        src / "Observation.000.ndjson",
        [
            {
                "resourceType": "Observation",
                "id": f"obs-{i}",
                "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
                "subject": {"reference": f"Patient/{patients[i % len(patients)]['id']}"},
                "effectiveDateTime": "2020-01-10T10:00:00Z",
                "valueQuantity": {"value": 70 + i, "unit": "beats/min", "code": unit},
            }
            for i, unit in enumerate(units)
        ],
    )


def test_a_unit_written_by_one_patient_is_emptied_in_every_connector(tmp_path, keys):
    """A unit is text the source wrote: "/min (Mr West's watch)" in a FHIR quantity's
    UCUM code, or in a Synthea export's UNITS, was published as it was (red-team finds:
    the earlier form check covered the FHIR display only). Units neither the reference
    data knows nor three people share, or without a unit's form, are emptied; known
    units stay."""
    src = copy(FHIR_BULK, tmp_path / "fhir")
    odd = ["/min (Mr West's watch)", "/min(WestWatch)"]
    _fhir_observations(src, [*odd, "/min", "/min", "/min"])
    result = ingest(src, fmt="fhir", home=tmp_path / "h1", keys=keys)
    con = release_con(result.release.path)
    units = [r[0] for r in con.execute("SELECT unit FROM observations ORDER BY value").fetchall()]
    assert units == [None, None, "/min", "/min", "/min"]

    src = copy(SYNTHEA_2023, tmp_path / "synthea")
    header, rows = read_csv(src / "observations.csv")
    at = header.index("UNITS")
    picked = [i for i, r in enumerate(rows) if r[at] == "/min"][:2]
    for i, unit in zip(picked, odd, strict=True):
        rows[i][at] = unit
    write_csv(src / "observations.csv", header, rows)
    result = ingest(src, fmt="synthea", home=tmp_path / "h2", keys=keys)
    con = release_con(result.release.path)
    published = {r[0] for r in con.execute("SELECT DISTINCT unit FROM observations").fetchall()}
    assert not published & set(odd) and "/min" in published
    assert result.counts["observations"].rare_text["unit"] >= 2


def test_a_synthea_value_type_in_another_case_keeps_its_numbers(tmp_path, keys):
    """An export writing TYPE as "Numeric" lost every number to the text column (a
    red-team find): the type is read without case or padding."""
    src = copy(SYNTHEA_2023, tmp_path / "plain")
    expected = release_con(ingest(src, fmt="synthea", home=tmp_path / "h1", keys=keys).release.path)
    numbers = expected.execute("SELECT count(value) FROM observations").fetchone()[0]
    header, rows = read_csv(src / "observations.csv")
    at = header.index("TYPE")
    for row in rows:
        row[at] = {"numeric": " Numeric", "text": "TEXT"}.get(row[at], row[at])
    write_csv(src / "observations.csv", header, rows)
    con = release_con(ingest(src, fmt="synthea", home=tmp_path / "h2", keys=keys).release.path)
    assert con.execute("SELECT count(value) FROM observations").fetchone()[0] == numbers > 0


def test_fhir_encounters_name_their_organisation_by_a_conditional_reference(tmp_path, keys):
    """Synthea's FHIR names an encounter's organisation as
    ``Organization?identifier=SYSTEM|VALUE``: it was read as a missing resource, so no
    encounter named its organisation. Each now does, by the organisation's keyed code."""
    src = copy(FHIR_BULK, tmp_path)
    encounters = ndjson(src / "Encounter.000.ndjson")
    assert all("?identifier=" in e["serviceProvider"]["reference"] for e in encounters)
    encounters[0]["serviceProvider"]["reference"] = encounters[0]["serviceProvider"][
        "reference"
    ].replace("|", "%7C")  # URL-encoded, as some servers write it
    write_ndjson(src / "Encounter.000.ndjson", encounters)
    con = release_con(ingest(src, fmt="fhir", home=tmp_path / "h", keys=keys).release.path)
    linked = con.execute(
        "SELECT count(o.organisation_code), count(*) FROM encounters e "
        "LEFT JOIN organisations o USING (organisation_code)"
    ).fetchone()
    assert linked[0] == linked[1] == len(encounters)


def _fhir_encounter_texts(src: Path, text: str, people: int, skip: int = 0) -> list[str]:
    """The first encounter of ``people`` patients (after the first ``skip``) typed
    ``text``; their ids."""
    patients = [p["id"] for p in ndjson(src / "Patient.000.ndjson")][skip : skip + people]
    encounters = ndjson(src / "Encounter.000.ndjson")
    typed: set[str] = set()
    for e in encounters:
        who = e["subject"]["reference"].split("/")[-1].removeprefix("urn:uuid:")
        if who in patients and who not in typed:
            e["type"][0]["text"] = text
            typed.add(who)
    write_ndjson(src / "Encounter.000.ndjson", encounters)
    return patients


@pytest.mark.parametrize(
    "text",
    [
        "Safeguarding: household of Mrs B. Schmitt",
        "Contact tracing: exposed to Mr A. Schmitt",
        "Schmitt, B (self-pay, household)",
    ],
)
def test_a_text_naming_anyone_behind_a_title_or_an_initial_is_emptied(text, tmp_path, keys):
    """A mother's name on her children's records (they are Webers: not most holders'
    name), or a patient's on three others' (a second red-team round's finds): a title or
    an initial before anyone's name word, or a name written surname first with its
    initial, empties the text, however many share it."""
    src = copy(FHIR_BULK, tmp_path)
    patients = ndjson(src / "Patient.000.ndjson")
    patients[0]["name"] = [{"family": "Schmitt", "given": ["Berta"]}]
    write_ndjson(src / "Patient.000.ndjson", patients)
    _fhir_encounter_texts(src, text, people=3, skip=1)
    con = release_con(ingest(src, fmt="fhir", home=tmp_path / "h", keys=keys).release.path)
    types = [r[0] for r in con.execute("SELECT DISTINCT encounter_type FROM encounters").fetchall()]
    assert text not in types and len(types) > 1


def test_a_patients_contacts_are_vaulted_looked_for_and_their_names_never_published(tmp_path, keys):
    """FHIR's Patient.contact (next of kin, carers) was neither vaulted nor scanned: a
    carer's name and phone shared by three patients' records was published."""
    src = copy(FHIR_BULK, tmp_path)
    patients = ndjson(src / "Patient.000.ndjson")
    for p in patients[:3]:
        p["contact"] = [
            {
                "relationship": [{"text": "carer"}],
                "name": {"family": "Okafor", "given": ["Grace"]},
                "telecom": [{"system": "phone", "value": "07700 900123"}],
            }
        ]
    write_ndjson(src / "Patient.000.ndjson", patients)
    _fhir_encounter_texts(src, "Carer Grace Okafor visited", people=3)
    home = tmp_path / "h"
    result = ingest(src, fmt="fhir", home=home, keys=keys)
    con = release_con(result.release.path)
    texts = [r[0] for r in con.execute("SELECT DISTINCT encounter_type FROM encounters").fetchall()]
    assert not [t for t in texts if t and "Okafor" in t]


def test_text_in_columns_not_named_for_text_is_text(tmp_path, keys):
    """A Synthea payer transition's ownership "Guardian: Mr L. Greenholt" and a patient's
    county "Westfield House, Acacia Ave" were published: only columns named for text
    were counted, and the patients table not at all (a second round's finds)."""
    src = copy(SYNTHEA_2023, tmp_path)
    set_cell(src / "payer_transitions.csv", "PLAN_OWNERSHIP", "Guardian: Mr L. Greenholt", row=0)
    set_cell(src / "patients.csv", "COUNTY", "Westfield House, Acacia Ave", row=0)
    con = release_con(ingest(src, fmt="synthea", home=tmp_path / "h", keys=keys).release.path)
    owners = {
        r[0] for r in con.execute("SELECT ownership FROM synthea_payer_transitions").fetchall()
    }
    places = {r[0] for r in con.execute("SELECT local_authority FROM patients").fetchall()}
    assert "Guardian: Mr L. Greenholt" not in owners and len(owners - {None}) >= 1
    assert "Westfield House, Acacia Ave" not in places and len(places - {None}) >= 1


@pytest.mark.parametrize(
    "text",
    [
        "Exposed to Herr West",
        "Exposed to Mr A West at club",
        "Exposed to Mr.West",
        "Exposed at Mr West's house",
        "Exposed to Mr\u00a0West",
        "Exposed to Mr We\u200bst",
        "Exposed to Mr \uff37\uff45\uff53\uff54",
        "contact west_alfred",
    ],
)
def test_a_name_in_any_form_is_emptied(text, tmp_path, keys):
    """A third red-team round: other languages' titles, an initial without its dot, no
    space after a title, a possessive, a no-break or zero-width space, fullwidth
    letters, a name written as one code-like word. Texts are normalised (spaces,
    invisible and fullwidth characters) before any rule looks, and the rules read these
    forms."""
    src = copy(FHIR_BULK, tmp_path)
    patients = ndjson(src / "Patient.000.ndjson")
    patients[0]["name"] = [{"family": "West", "given": ["Alfred"]}]
    write_ndjson(src / "Patient.000.ndjson", patients)
    _fhir_encounter_texts(src, text, people=3, skip=1)
    con = release_con(ingest(src, fmt="fhir", home=tmp_path / "h", keys=keys).release.path)
    texts = [r[0] for r in con.execute("SELECT DISTINCT encounter_type FROM encounters").fetchall()]
    assert not [t for t in texts if t and "est" in t.lower() and "xpos" in t]
    assert not [t for t in texts if t and ("alfred" in t.lower() or "\uff37" in t)]


@pytest.mark.parametrize(
    "families, text",
    [
        (["Schmitt", "Weber", "Weber"], "Home visit, Schmitt household"),  # no title
        (["李", "李", "李"], "Home visit, Li family"),  # another script
        (["Иванов", "Иванова", "Иванова"], "Home visit, Ivanov family"),
    ],
)
def test_a_household_named_in_any_script_is_emptied(families, text, tmp_path, keys):
    """A text three people share that names one of them (a mother's surname on her
    children's records), or names them in another script than their records: emptied."""
    src = copy(FHIR_BULK, tmp_path)
    patients = ndjson(src / "Patient.000.ndjson")
    for p, family in zip(patients, families, strict=False):
        p["name"] = [{"family": family, "given": ["Berta"]}]
    write_ndjson(src / "Patient.000.ndjson", patients)
    _fhir_encounter_texts(src, text, people=3)
    con = release_con(ingest(src, fmt="fhir", home=tmp_path / "h", keys=keys).release.path)
    texts = [r[0] for r in con.execute("SELECT DISTINCT encounter_type FROM encounters").fetchall()]
    assert text not in texts and len(texts) > 1


def test_a_quarantined_rows_source_id_is_keyed(tmp_path, keys):
    """An export's ids can be names ("WEST-ALFRED-19610703-wt1"): a quarantined row named
    its source by that id in the release file's ``_quarantine``."""
    src = copy(FHIR_BULK, tmp_path)
    odd = {
        "resourceType": "Observation", "id": "WEST-ALFRED-19610703-wt1",
        "subject": {"reference": "Patient/nobody-here"},
        "code": {"coding": [{"system": "http://loinc.org", "code": "8302-2"}]},
        "effectiveDateTime": "2020-01-01", "valueQuantity": {"value": 170, "unit": "cm"},
    }  # fmt: skip
    write_ndjson(src / "Observation.000.ndjson", [odd])
    result = ingest(src, fmt="fhir", home=tmp_path / "h", keys=keys)
    assert b"WEST-ALFRED" not in result.release.path.read_bytes()
    con = release_con(result.release.path)
    assert (
        con.execute(
            "SELECT count(*) FROM _quarantine WHERE table_name = 'observations'"
        ).fetchone()[0]
        == 1
    )
