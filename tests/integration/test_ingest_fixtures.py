"""Real third-party exports (Synthea CSV, FHIR Bulk Data) and FHIR from the generator."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from connectors.ingest import ingest
from synthetic_data import summary
from synthetic_data.generator import SynthConfig, generate
from tests.conftest import FIXTURES, release_con

SYNTHEA = FIXTURES / "synthea-3.x-2023"
FHIR_BULK = FIXTURES / "fhir-bulk-10"

needs_fixtures = pytest.mark.skipif(not SYNTHEA.exists(), reason="fixtures not found")


def csv_rows(path: Path) -> int:
    with path.open(newline="") as fh:
        return sum(1 for _ in csv.reader(fh)) - 1


@needs_fixtures
def test_synthea_export_loads_every_file_with_its_code_systems(hub_home, keys):
    result = ingest(SYNTHEA, fmt="synthea", home=hub_home, keys=keys)
    con = release_con(result.release.path)
    tables = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    renamed = {"careplans": "care_plans", "payers": "synthea_payers"}
    for path in SYNTHEA.glob("*.csv"):
        name = renamed.get(path.stem, path.stem)
        if name not in tables:
            name = f"synthea_{path.stem}"
        assert name in tables, path.name
        c = result.counts[name]
        assert c.rows_in == csv_rows(path), path.name
        assert c.rows_in == c.published + sum(c.quarantined.values())
    systems = dict(
        con.execute(
            "SELECT 'obs', list(DISTINCT code_system ORDER BY code_system) FROM observations UNION ALL SELECT 'med', list(DISTINCT code_system) FROM medications UNION ALL SELECT 'imm', list(DISTINCT code_system) FROM immunizations UNION ALL SELECT 'cond', list(DISTINCT code_system) FROM conditions"
        ).fetchall()
    )
    # Synthea's own QALY, DALY and QOLS scores are not LOINC: they keep the system "Synthea"
    assert systems == {
        "obs": ["LOINC", "Synthea"],
        "med": ["RxNorm"],
        "imm": ["CVX"],
        "cond": ["SNOMED CT"],
    }
    for table in (
        "conditions",
        "observations",
        "medications",
        "procedures",
        "immunizations",
        "allergies",
    ):
        assert (
            con.execute(f"SELECT count(*) FROM {table} WHERE code_system IS NULL").fetchall()[0][0]
            == 0
        )
    # observations without an encounter (QALY/DALY summaries) are kept, not lost
    assert (
        con.execute("SELECT count(*) FROM observations WHERE encounter_id IS NULL").fetchall()[0][0]
        == 42
    )
    blob = result.release.path.read_bytes()
    with (SYNTHEA / "patients.csv").open(newline="") as fh:
        for row in csv.DictReader(fh):
            for column in ("SSN", "FIRST", "LAST", "ADDRESS", "ZIP", "PASSPORT", "DRIVERS"):
                if row[column]:
                    assert row[column].encode() not in blob, column
    with (SYNTHEA / "payer_transitions.csv").open(newline="") as fh:
        owners = {row["OWNER_NAME"] for row in csv.DictReader(fh) if row["OWNER_NAME"]}
    assert not [o for o in owners if o.encode() in blob]


@needs_fixtures
def test_fhir_bulk_export_loads_every_resource_type(hub_home, keys):
    result = ingest(FHIR_BULK, fmt="fhir", home=hub_home, keys=keys)
    expected = {
        "Patient": "patients", "Encounter": "encounters", "Condition": "conditions",
        "MedicationRequest": "medications", "Procedure": "procedures",
        "Immunization": "immunizations", "AllergyIntolerance": "allergies",
        "Device": "devices", "Organization": "organisations",
        "Location": "fhir_locations", "Practitioner": "fhir_practitioners",
        "PractitionerRole": "fhir_practitioner_roles",
    }  # fmt: skip
    for rtype, table in expected.items():
        lines = (FHIR_BULK / f"{rtype}.000.ndjson").read_text().splitlines()
        assert result.counts[table].rows_in == len(lines), rtype
        assert result.counts[table].published == len(lines), rtype
    assert result.skipped == {}
    con = release_con(result.release.path)
    linked = con.execute(
        """SELECT count(*) FILTER (e.encounter_id IS NOT NULL), count(*)
           FROM conditions c LEFT JOIN encounters e USING (encounter_id)"""
    ).fetchall()[0]
    assert linked[0] == linked[1]
    systems = {r[0] for r in con.execute("SELECT DISTINCT code_system FROM medications").fetchall()}
    assert systems == {"RxNorm"}
    blob = result.release.path.read_bytes()
    for line in (FHIR_BULK / "Patient.000.ndjson").read_text().splitlines():
        patient = json.loads(line)
        for name in patient.get("name", []):
            for part in [name.get("family"), *name.get("given", [])]:
                if part:
                    assert part.encode() not in blob, "a patient name reached the release"
        for ident in patient.get("identifier", []):
            if len(ident.get("value", "")) >= 9:
                assert ident["value"].encode() not in blob


def test_generator_fhir_output_round_trips(tmp_path, hub_home, keys):
    src = generate(SynthConfig(patients=300, seed=17, format="fhir"), tmp_path / "f").out
    parquet = generate(SynthConfig(patients=300, seed=17), tmp_path / "p").out
    result = ingest(src / "fhir", fmt="fhir", home=hub_home, keys=keys)
    expected = summary.row_counts(summary.connect(parquet))
    for table, n in expected.items():
        assert result.counts[table].published == n, table
    con = release_con(result.release.path)
    # NHS numbers were the pseudonym input: the same people as a native load would give
    assert con.execute("SELECT count(DISTINCT person_id) FROM patients").fetchall()[0][0] == 300
    values = con.execute(
        "SELECT count(*) FROM observations WHERE value IS NOT NULL AND unit IS NOT NULL"
    ).fetchall()[0][0]
    assert values > 1000
    assert con.execute("SELECT list(DISTINCT local_authority) FROM patients").fetchall()[0][0]


def test_a_transaction_bundle_with_urn_uuid_references_loads(tmp_path, hub_home, keys):
    patient = "urn:uuid:7f0e3a52-1b4c-4a51-9d1e-0c2a3b4c5d6e"
    encounter = "urn:uuid:0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9"
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": patient,
                "resource": {
                    "resourceType": "Patient",
                    "identifier": [
                        {"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "999 000 0018"}
                    ],
                    "name": [{"family": "Quixotic", "given": ["Zebedee"]}],
                    "gender": "female",
                    "birthDate": "1961-04",
                },
                "request": {"method": "POST", "url": "Patient"},
            },
            {
                "fullUrl": encounter,
                "resource": {
                    "resourceType": "Encounter",
                    "status": "finished",
                    "class": {"code": "AMB"},
                    "subject": {"reference": patient},
                    "period": {"start": "2023-03-01T09:00:00Z"},
                },
                "request": {"method": "POST", "url": "Encounter"},
            },
            {
                "fullUrl": "urn:uuid:5a6b7c8d-9e0f-4a1b-8c2d-3e4f5a6b7c8d",
                "resource": {
                    "resourceType": "Observation",
                    "status": "final",
                    "code": {
                        "coding": [
                            {
                                "system": "http://loinc.org",
                                "code": "4548-4",
                                "display": "Hemoglobin A1c",
                            }
                        ]
                    },
                    "subject": {"reference": patient},
                    "encounter": {"reference": encounter},
                    "effectiveDateTime": "2023-03-01",
                    "valueQuantity": {"value": 6.1, "unit": "%"},
                },
                "request": {"method": "POST", "url": "Observation"},
            },
            {
                "fullUrl": "urn:uuid:6a6b7c8d-9e0f-4a1b-8c2d-3e4f5a6b7c8e",
                "resource": {
                    "resourceType": "Observation",
                    "status": "final",
                    "code": {"text": "Carer's note"},
                    "subject": {"reference": patient},
                    "effectiveDateTime": "2023-03-02",
                    "valueString": "Spoke with Zebedee Quixotic about the results",
                },
            },
        ],
    }
    path = tmp_path / "bundle.json"
    path.write_text(json.dumps(bundle))
    result = ingest(path, fmt="fhir", home=hub_home, keys=keys)
    con = release_con(result.release.path)
    row = con.execute(
        """SELECT p.year_of_birth, p.month_of_birth, p.sex, o.code_system, o.value, e.start_date
           FROM observations o JOIN patients p USING (person_id)
           JOIN encounters e ON e.encounter_id = o.encounter_id AND e.person_id = p.person_id
           WHERE o.value IS NOT NULL"""
    ).fetchall()
    assert row == [(1961, 4, "F", "LOINC", 6.1, __import__("datetime").date(2023, 3, 1))]
    assert b"Quixotic" not in result.release.path.read_bytes()
    # free text that repeats the person's name is replaced, and counted
    note = con.execute("SELECT value_text FROM observations WHERE value IS NULL").fetchall()
    assert note == [("[removed: identifying text]",)]
    assert result.release.manifest["tables"]["observations"]["redacted_free_text"] == 1


def test_an_observations_components_are_observations_of_their_own(tmp_path, keys):
    """A blood pressure panel holds its systolic and diastolic values as components: read
    as the panel alone, the export's 12 panels were published without a value, and no
    systolic or diastolic reading existed (a red-team find). Each component is now an
    observation with its own code, value and unit, the panel's person and time."""
    src = FIXTURES / "fhir-bundles-3.x"
    panels = 0
    for path in sorted(src.glob("*.json")):
        bundle = json.loads(path.read_text())
        for entry in bundle.get("entry", []):
            res = entry.get("resource", {})
            codes = [
                coding.get("code")
                for c in res.get("component", [])
                for coding in c.get("code", {}).get("coding", [])
            ]
            if res.get("resourceType") == "Observation" and "8480-6" in codes:
                panels += 1  # a blood pressure panel
    assert panels > 0
    result = ingest(src, fmt="fhir", home=tmp_path / "h", keys=keys)
    con = release_con(result.release.path)
    readings = dict(
        con.execute(
            "SELECT code, count(value) FROM observations WHERE code IN ('8480-6', '8462-4') "
            "AND unit = 'mm[Hg]' GROUP BY code"
        ).fetchall()
    )
    assert readings == {"8480-6": panels, "8462-4": panels}


def test_a_birth_date_of_a_year_alone_has_no_month(tmp_path, keys):
    """FHIR allows a birthDate of "1961": it was published as born in January 1961."""
    src = tmp_path / "fhir"
    src.mkdir()
    for path in (FIXTURES / "fhir-bulk-10").glob("*.ndjson"):
        (src / path.name).write_text(path.read_text())
    lines = (src / "Patient.000.ndjson").read_text().splitlines()
    first = json.loads(lines[0])
    year = first["birthDate"][:4]
    first["birthDate"] = year
    lines[0] = json.dumps(first)
    (src / "Patient.000.ndjson").write_text("\n".join(lines) + "\n")
    con = release_con(ingest(src, fmt="fhir", home=tmp_path / "h", keys=keys).release.path)
    rows = con.execute(
        "SELECT count(*) FILTER (WHERE month_of_birth IS NULL), "
        "count(*) FILTER (WHERE year_of_birth = ?), count(*) FROM patients",
        [int(year)],
    ).fetchone()
    assert rows[0] == 1 and rows[1] >= 1 and rows[2] == len(lines)
