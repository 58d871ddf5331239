"""Exports as they arrive: compressed, upper-case, with a bad line, with contained resources.

Each test loads a copy of a real fixture export altered the way exporters and transfers
leave them (red-team breaks B3, B6, B4): gzip-compressed files (``Condition.000.ndjson.gz``,
``conditions.csv.gz``), upper-case extensions (``Condition.000.NDJSON``), a line of an
NDJSON file cut short or holding a Latin-1 byte, and MedicationRequests naming their drug
by a Medication in their own ``contained[]``. Every file is either read or counted in the
manifest; a bad line is quarantined by file and line number, never quoted.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import pytest

from connectors.errors import SourceError
from connectors.ingest import IngestResult, ingest
from tests.conftest import release_con
from tests.integration.test_connector_privacy import (
    FHIR_BULK,
    SYNTHEA_2023,
    copy,
    ndjson,
    write_ndjson,
)


def gzip_file(path: Path, name: str | None = None) -> Path:
    """Compress a file in place (``x.csv`` -> ``x.csv.gz``), as ``gzip`` does."""
    out = path.with_name(name or path.name + ".gz")
    out.write_bytes(gzip.compress(path.read_bytes()))
    path.unlink()
    return out


def published(result: IngestResult) -> dict[str, int]:
    return {name: c.published for name, c in result.counts.items()}


def events(result: IngestResult, table: str) -> list[tuple]:
    """A table's rows without its own ids: who, and what (code, dates)."""
    con = release_con(result.release.path)
    columns = [
        r[0] for r in con.execute(f"DESCRIBE {table}").fetchall()
        if not r[0].endswith("_id") or r[0] == "person_id"
    ]  # fmt: skip
    return sorted(con.execute(f"SELECT {', '.join(columns)} FROM {table}").fetchall(), key=repr)


def lines(path: Path) -> int:
    return sum(1 for line in path.read_bytes().splitlines() if line.strip())


# -- B3: gzip and upper-case extensions ------------------------------------------------


def test_a_gzipped_or_upper_case_fhir_export_loads_every_table(tmp_path, keys):
    plain = ingest(FHIR_BULK, fmt="fhir", home=tmp_path / "plain", keys=keys)
    src = copy(FHIR_BULK, tmp_path)
    (src / "Condition.000.ndjson").rename(src / "Condition.000.NDJSON")  # upper case
    gzip_file(src / "Device.000.ndjson", "Device.000.NDJSON.GZ")  # both
    for path in sorted(src.glob("*.ndjson")):
        if path.name != "log.ndjson":
            gzip_file(path)
    result = ingest(src, fmt="fhir", home=tmp_path / "gz", keys=keys)
    assert published(result) == published(plain)
    assert result.counts["conditions"].rows_in == lines(FHIR_BULK / "Condition.000.ndjson")
    assert result.counts["devices"].published == lines(FHIR_BULK / "Device.000.ndjson")
    assert result.release.manifest["content_hash"] == plain.release.manifest["content_hash"]
    assert len(result.release.manifest["source"]["files"]) == 12
    # the export's log.ndjson is not read, and says so
    assert result.release.manifest["source"]["not_read"] == {"files": 1}


def test_one_gzipped_file_in_a_plain_export_is_read_not_dropped(tmp_path, keys):
    src = copy(FHIR_BULK, tmp_path)
    gzip_file(src / "Condition.000.ndjson")
    result = ingest(src, fmt="fhir", home=tmp_path / "fhir", keys=keys)
    assert result.counts["conditions"].published == lines(FHIR_BULK / "Condition.000.ndjson")

    syn = copy(SYNTHEA_2023, tmp_path)
    gzip_file(syn / "conditions.csv")
    result = ingest(syn, fmt="synthea", home=tmp_path / "synthea", keys=keys)
    assert result.counts["conditions"].published == lines(SYNTHEA_2023 / "conditions.csv") - 1


def test_a_wholly_gzipped_synthea_export_loads_as_the_plain_one(tmp_path, keys):
    plain = ingest(SYNTHEA_2023, fmt="synthea", home=tmp_path / "plain", keys=keys)
    src = copy(SYNTHEA_2023, tmp_path)
    for path in sorted(src.glob("*.csv")):
        gzip_file(path)
    (src / "procedures.csv.gz").rename(src / "PROCEDURES.CSV.GZ")
    (src / "devices.csv").write_bytes(gzip.decompress((src / "devices.csv.gz").read_bytes()))
    (src / "devices.csv.gz").unlink()
    (src / "devices.csv").rename(src / "Devices.CSV")
    result = ingest(src, fmt="synthea", home=tmp_path / "gz", keys=keys)
    assert published(result) == published(plain)
    # the same people and events (an event without an Id is keyed by its file's hash and
    # row: those ids differ, as they do for any re-written file)
    for table in ("patients", "conditions", "procedures", "devices", "medications"):
        assert events(result, table) == events(plain, table)
    assert (
        result.release.manifest["source"]["layouts"] == plain.release.manifest["source"]["layouts"]
    )


@pytest.mark.parametrize("fmt", ["fhir", "synthea"])
def test_a_file_the_connector_skips_is_counted_never_named(fmt, tmp_path, keys):
    src = copy(FHIR_BULK if fmt == "fhir" else SYNTHEA_2023, tmp_path)
    data = "Condition.000.ndjson" if fmt == "fhir" else "conditions.csv"
    # a compression the connector does not read, and a file of no known kind
    (src / data).rename(src / f"{data}.bz2")
    (src / "Alfred_West_1961-07-03.txt").write_text("notes\n")
    result = ingest(src, fmt=fmt, home=tmp_path / "hub", keys=keys)
    manifest = json.dumps(result.release.manifest)
    assert result.release.manifest["source"]["not_read"]["files"] == (3 if fmt == "fhir" else 2)
    assert "Alfred" not in manifest and ".bz2" not in manifest
    assert "conditions" not in result.counts or result.counts["conditions"].published == 0


@pytest.mark.parametrize("fmt", ["fhir", "synthea"])
def test_a_gzip_file_cut_short_is_refused_naming_the_file_only(fmt, tmp_path, keys):
    src = copy(FHIR_BULK if fmt == "fhir" else SYNTHEA_2023, tmp_path)
    name = "Condition.000.ndjson" if fmt == "fhir" else "conditions.csv"
    packed = gzip.compress((src / name).read_bytes())
    (src / name).unlink()
    (src / f"{name}.gz").write_bytes(packed[: len(packed) // 2])
    with pytest.raises(SourceError, match="gzip") as refused:
        ingest(src, fmt=fmt, home=tmp_path / "hub", keys=keys)
    assert name in str(refused.value) and str(tmp_path) not in str(refused.value)


# -- B6: one bad NDJSON line is quarantined, the rest loads ------------------------------


def _cut_last_line(path: Path) -> None:
    rows = [x for x in path.read_bytes().split(b"\n") if x]
    rows[-1] = rows[-1][: len(rows[-1]) // 2]  # the transfer stopped mid-line
    path.write_bytes(b"\n".join(rows))


@pytest.mark.parametrize("variant", ["cut last line", "latin-1 byte", "gzipped, cut"])
def test_one_bad_ndjson_line_is_quarantined_and_the_rest_loads(variant, tmp_path, keys):
    src = copy(FHIR_BULK, tmp_path)
    path = src / "Condition.000.ndjson"
    total = lines(path)
    if variant == "latin-1 byte":
        rows = path.read_bytes().split(b"\n")
        assert b'"text":"' in rows[5]
        rows[5] = rows[5].replace(b'"text":"', b'"text":"Caf\xe9 ', 1)
        path.write_bytes(b"\n".join(rows))
        reason, line = "not UTF-8", 6
    else:
        _cut_last_line(path)
        reason, line = "not valid JSON", total
        if variant == "gzipped, cut":
            path = gzip_file(path)
    result = ingest(src, fmt="fhir", home=tmp_path / "hub", keys=keys)
    conditions = result.counts["conditions"]
    assert conditions.rows_in == total
    assert conditions.published == total - 1
    assert conditions.quarantined == {reason: 1}
    con = release_con(result.release.path)
    label = hashlib.sha256(path.read_bytes()).hexdigest()[:16]  # how a file is named
    assert con.execute(
        "SELECT table_name, source_file, source_row, reason FROM _quarantine"
    ).fetchall() == [("conditions", label, line, reason)]
    assert "Caf" not in json.dumps(result.release.manifest)


def test_a_bad_line_of_a_mixed_file_counts_against_its_own_type(tmp_path, keys):
    src = copy(FHIR_BULK, tmp_path)
    patients = ndjson(src / "Patient.000.ndjson")
    (src / "Patient.000.ndjson").unlink()
    text = "".join(json.dumps(p) + "\n" for p in patients)
    broken = json.dumps(patients[0])[:40]  # a Patient line cut short
    claim = '{"resourceType": "Claim", "id": "x", "patient": '  # a type with no table
    (src / "export.ndjson").write_text(text + broken + "\n" + claim + "\n")
    result = ingest(src, fmt="fhir", home=tmp_path / "hub", keys=keys)
    assert result.counts["patients"].published == len(patients)
    assert result.counts["patients"].quarantined == {"not valid JSON": 1}
    assert result.release.manifest["skipped_resources"] == {"(line not valid JSON)": 1}


def test_an_ndjson_file_with_no_json_line_is_still_refused(tmp_path, keys):
    src = copy(FHIR_BULK, tmp_path)
    (src / "Condition.000.ndjson").write_text("Alfred West,1961-07-03\nnot json\n")
    with pytest.raises(SourceError, match="not valid JSON") as refused:
        ingest(src, fmt="fhir", home=tmp_path / "hub", keys=keys)
    assert "Condition.000.ndjson" in str(refused.value) and "Alfred" not in str(refused.value)


# -- B4: contained resources --------------------------------------------------------------


def test_a_contained_medication_gives_its_code(tmp_path, keys):
    plain = ingest(FHIR_BULK, fmt="fhir", home=tmp_path / "plain", keys=keys)
    expected = (
        release_con(plain.release.path)
        .execute("SELECT medication_id, code_system, code, description FROM medications ORDER BY 1")
        .fetchall()
    )
    src = copy(FHIR_BULK, tmp_path)
    requests = ndjson(src / "MedicationRequest.000.ndjson")
    for r in requests:
        code = r.pop("medicationCodeableConcept")
        # another contained resource first, with the same id but another type
        r["contained"] = [
            {"resourceType": "Substance", "id": "med", "code": {"text": "not this"}},
            {"resourceType": "Medication", "id": "med", "code": code},
        ]
        r["medicationReference"] = {"reference": "#med"}
    write_ndjson(src / "MedicationRequest.000.ndjson", requests)
    result = ingest(src, fmt="fhir", home=tmp_path / "hub", keys=keys)
    got = (
        release_con(result.release.path)
        .execute("SELECT medication_id, code_system, code, description FROM medications ORDER BY 1")
        .fetchall()
    )
    assert got == expected
    assert all(row[2] for row in got)


def test_contained_organisations_and_conditions_resolve(tmp_path, keys):
    patient = {
        "resourceType": "Patient",
        "id": "p-1",
        "gender": "female",
        "birthDate": "1961-04-02",
    }
    encounter = {
        "resourceType": "Encounter", "id": "e-1", "subject": {"reference": "Patient/p-1"},
        "period": {"start": "2020-01-01"}, "serviceProvider": {"reference": "#org"},
        "contained": [{"resourceType": "Organization", "id": "org", "identifier": [
            {"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": "A81001"}]}],
    }  # fmt: skip
    local = {  # a local reference naming nothing contained: no organisation, never a shared id
        "resourceType": "Encounter", "id": "e-2", "subject": {"reference": "Patient/p-1"},
        "period": {"start": "2020-02-01"}, "serviceProvider": {"reference": "#gone"},
        "encounter": {"reference": "#gone"},
    }  # fmt: skip
    plan = {
        "resourceType": "CarePlan", "id": "cp-1", "subject": {"reference": "Patient/p-1"},
        "addresses": [{"reference": "#c"}], "period": {"start": "2020-01-02"},
        "category": [{"coding": [{"system": "http://snomed.info/sct", "code": "698360004"}]}],
        "contained": [{"resourceType": "Condition", "id": "c", "code": {"coding": [
            {"system": "http://snomed.info/sct", "code": "44054006"}]}}],
    }  # fmt: skip
    folder = tmp_path / "fhir"
    folder.mkdir()
    write_ndjson(folder / "Resources.000.ndjson", [patient, encounter, local, plan])
    result = ingest(folder, fmt="fhir", home=tmp_path / "hub", keys=keys)
    con = release_con(result.release.path)
    assert con.execute(
        "SELECT organisation_code FROM encounters ORDER BY start_date"
    ).fetchall() == [("A81001",), (None,)]
    assert con.execute("SELECT reason_code FROM care_plans").fetchall() == [("44054006",)]


# -- B5: STU3 date fields -----------------------------------------------------------------


def test_stu3_dates_load_as_their_r4_counterparts(tmp_path, keys):
    """Synthea's STU3 exporter writes an immunization's date as ``date`` (R4:
    ``occurrenceDateTime``) and a condition's or allergy's as ``assertedDate``: every
    immunization lost its date and the gate refused the load."""
    plain = ingest(FHIR_BULK, fmt="fhir", home=tmp_path / "r4", keys=keys)
    src = copy(FHIR_BULK, tmp_path)
    path = src / "Immunization.000.ndjson"
    resources = ndjson(path)
    for r in resources:
        r["date"] = r.pop("occurrenceDateTime")
    write_ndjson(path, resources)
    stu3 = ingest(src, fmt="fhir", home=tmp_path / "stu3", keys=keys)
    assert events(stu3, "immunizations") == events(plain, "immunizations")
    assert published(stu3)["immunizations"] == len(resources) > 0


# -- second round: what the new paths let through -----------------------------------------


def test_a_fhir_quantity_is_read_by_its_ucum_code_not_its_display(tmp_path, keys):
    """FHIR's ``unit`` is a display ("lbs", "kg (Mrs. Medhurst, home scale)"), its ``code``
    the UCUM unit: read display first, pounds were published as a weight in kg and a
    person's name went out in ``observations.unit``."""
    src = copy(FHIR_BULK, tmp_path)
    folder = src / "Observation.000.ndjson"
    extra = [
        {"resourceType": "Observation", "id": f"w-{i}", "status": "final",
         "subject": {"reference": f"Patient/{pid}"}, "effectiveDateTime": "2020-01-01",
         "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
         "valueQuantity": {"value": 185, "unit": unit, "system": "http://unitsofmeasure.org",
                           "code": "[lb_av]"}}
        for i, (pid, unit) in enumerate(
            [(p["id"], u) for p in ndjson(src / "Patient.000.ndjson")[:4]
             for u in ("lbs", "lb (Mrs. Medhurst, home scale)")]
        )
    ]  # fmt: skip
    write_ndjson(folder, extra)
    result = ingest(src, fmt="fhir", home=tmp_path / "hub", keys=keys)
    con = release_con(result.release.path)
    weights = con.execute(
        "SELECT DISTINCT unit, round(value, 2) FROM observations WHERE code = '29463-7'"
    ).fetchall()
    assert weights == [("kg", 83.91)]
    units = [u for (u,) in con.execute("SELECT DISTINCT unit FROM observations").fetchall()]
    assert not any(u and "Medhurst" in u for u in units)


def test_a_corrupt_gzip_byte_is_refused_in_one_line_not_a_traceback(tmp_path, keys):
    src = copy(SYNTHEA_2023, tmp_path)
    packed = bytearray(gzip.compress((src / "conditions.csv").read_bytes()))
    packed[40] ^= 0xFF  # one flipped byte early in the compressed data
    (src / "conditions.csv").unlink()
    (src / "conditions.csv.gz").write_bytes(bytes(packed))
    with pytest.raises(SourceError, match="gzip"):
        ingest(src, fmt="synthea", home=tmp_path / "hub", keys=keys)


def test_a_long_number_in_a_file_name_is_never_printed(tmp_path, keys):
    folder = tmp_path / "fhir"
    folder.mkdir()
    (folder / "Patient-9434765919.json").write_text("{ not json")
    with pytest.raises(SourceError) as refused:
        ingest(folder, fmt="fhir", home=tmp_path / "hub", keys=keys)
    assert "9434765919" not in str(refused.value)


def test_an_organisation_code_is_published_only_when_it_looks_like_an_ods_code(tmp_path, keys):
    """A contained Organization's local id under a reference's ODS system, or any text
    under the ODS system, was published as it was ("Home carer Mary Smith 1961-07-03")."""
    ods = "https://fhir.nhs.uk/Id/ods-organization-code"
    patient = {"resourceType": "Patient", "id": "p-1", "gender": "female",
               "birthDate": "1961-04-02"}  # fmt: skip
    encounters = [
        {"resourceType": "Encounter", "id": "e-1", "subject": {"reference": "Patient/p-1"},
         "period": {"start": "2020-01-01"},
         "serviceProvider": {"identifier": {"system": ods, "value": "Home carer Mary Smith"}}},
        {"resourceType": "Encounter", "id": "e-2", "subject": {"reference": "Patient/p-1"},
         "period": {"start": "2020-02-01"},
         "serviceProvider": {"reference": "#org", "identifier": {"system": ods}},
         "contained": [{"resourceType": "Organization", "id": "org", "identifier": [
             {"system": "urn:local", "value": "CARER-0012345"}]}]},
        {"resourceType": "Encounter", "id": "e-3", "subject": {"reference": "Patient/p-1"},
         "period": {"start": "2020-03-01"},
         "serviceProvider": {"identifier": {"system": ods, "value": "RRK02"}}},
    ]  # fmt: skip
    folder = tmp_path / "fhir"
    folder.mkdir()
    write_ndjson(folder / "Resources.000.ndjson", [patient, *encounters])
    result = ingest(folder, fmt="fhir", home=tmp_path / "hub", keys=keys)
    con = release_con(result.release.path)
    codes = [c for (c,) in con.execute(
        "SELECT organisation_code FROM encounters ORDER BY start_date").fetchall()]  # fmt: skip
    assert codes[2] == "RRK02"
    assert all(c is None or c.lstrip("-").isdigit() for c in codes[:2])  # keyed ids


def test_a_deeply_nested_ignored_field_does_not_stop_the_load(tmp_path, keys):
    """One Patient whose (ignored) meta.tag was an array nested 40,000 deep stopped the
    whole load with an out-of-memory error in the identifier scan's preparation."""
    src = copy(FHIR_BULK, tmp_path)
    path = src / "Patient.000.ndjson"
    lines = path.read_text().splitlines()
    deep = "[" * 40_000 + "]" * 40_000
    lines[0] = lines[0][:-1] + f', "meta": {{"tag": {deep}}}}}'
    path.write_text("\n".join(lines) + "\n")
    result = ingest(src, fmt="fhir", home=tmp_path / "hub", keys=keys)
    assert result.counts["patients"].published == len(lines)
