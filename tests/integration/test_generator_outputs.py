"""Determinism, formats (CSV, FHIR) and the defect manifest."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import duckdb
import pytest
from fhir.resources.R4B import get_fhir_model_class

from synthetic_data import catalogue as cat
from synthetic_data import summary
from synthetic_data.generator import GenerationError, SynthConfig, generate


def digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_same_seed_gives_byte_identical_output_whatever_the_workers(tmp_path):
    config = SynthConfig(patients=45_000, seed=11)  # three chunks
    one = generate(config, tmp_path / "a", workers=1).out
    two = generate(config, tmp_path / "b", workers=2).out
    assert digests(one) == digests(two)
    other = generate(SynthConfig(patients=45_000, seed=12), tmp_path / "c", workers=2).out
    assert (
        digests(other)["patients/part-00000.parquet"] != digests(one)["patients/part-00000.parquet"]
    )


def test_dummy_population_has_the_same_schema_and_no_shared_people(tmp_path):
    real = generate(SynthConfig(patients=3_000, seed=5), tmp_path / "real").out
    dummy = generate(SynthConfig(patients=3_000, seed=5, dummy=True), tmp_path / "dummy").out
    con = duckdb.connect()
    con.read_parquet(str(real / "patients/*.parquet")).create_view("r")
    con.read_parquet(str(dummy / "patients/*.parquet")).create_view("d")
    assert con.execute("SELECT count(*) FROM r JOIN d USING (nhs_number)").fetchall()[0][0] == 0
    assert con.execute("SELECT count(*) FROM r JOIN d USING (patient_id)").fetchall()[0][0] == 0
    for table in summary.TABLES:
        r = duckdb.read_parquet(str(real / table / "*.parquet")).columns
        d = duckdb.read_parquet(str(dummy / table / "*.parquet")).columns
        assert r == d, table
    assert json.loads((dummy / "manifest.json").read_text())["population"] == "dummy"


def test_csv_output_holds_the_same_rows_as_parquet(tmp_path):
    parquet = generate(SynthConfig(patients=2_000, seed=3), tmp_path / "p").out
    csv = generate(SynthConfig(patients=2_000, seed=3, format="csv"), tmp_path / "c").out
    assert summary.row_counts(summary.connect(parquet)) == summary.row_counts(summary.connect(csv))
    head = (csv / "patients" / "part-00000.csv").read_text().splitlines()[0]
    assert head.startswith('"patient_id","nhs_number","given_name"')


def test_fhir_output_parses_as_r4_with_resolvable_references(tmp_path):
    out = generate(SynthConfig(patients=400, seed=9, format="fhir"), tmp_path / "f").out
    files = sorted((out / "fhir").glob("*.ndjson"))
    types = {p.name.split(".")[0] for p in files}
    assert types == {
        "Patient",
        "Encounter",
        "Condition",
        "Observation",
        "MedicationRequest",
        "Procedure",
    }
    ids: dict[str, set[str]] = {}
    references: list[str] = []
    for path in files:
        for line in path.read_text().splitlines():
            resource = json.loads(line)
            model = get_fhir_model_class(resource["resourceType"])
            model.model_validate_json(line)  # raises on anything R4B does not accept
            ids.setdefault(resource["resourceType"], set()).add(resource["id"])
            for key in ("subject", "encounter"):
                if key in resource:
                    references.append(resource[key]["reference"])
    assert len(ids["Patient"]) == 400
    for ref in references:
        kind, ident = ref.split("/")
        assert ident in ids[kind], ref
    patient = json.loads((out / "fhir" / "Patient.000.ndjson").read_text().splitlines()[0])
    assert patient["identifier"][0]["system"] == "https://fhir.nhs.uk/Id/nhs-number"


@pytest.fixture(scope="module")
def defective(tmp_path_factory):
    out = tmp_path_factory.mktemp("defects") / "pop"
    result = generate(SynthConfig(patients=6_000, seed=21, defects=0.03), out)
    con = summary.connect(out)
    con.read_parquet(str(out / "defects" / "*.parquet")).create_view("manifest")
    return result, con


KEYS = {
    "patients": "patient_id",
    "encounters": "encounter_id",
    "conditions": "condition_id",
    "observations": "observation_id",
    "medications": "medication_id",
    "procedures": "procedure_id",
}
DATES = {
    "encounters": "start_date",
    "conditions": "onset_date",
    "observations": "observed_date",
    "medications": "start_date",
    "procedures": "procedure_date",
}


def found(con, table: str, where: str) -> set[int]:
    key = KEYS[table]
    rows = con.execute(f"SELECT DISTINCT {key} FROM {table} t WHERE {where}").fetchall()
    return {r[0] for r in rows}


def listed(con, table: str, defect: str) -> set[int]:
    rows = con.execute(
        'SELECT row_key FROM manifest WHERE "table" = $t AND defect = $d', {"t": table, "d": defect}
    ).fetchall()
    return {r[0] for r in rows}


def test_defect_manifest_matches_the_injected_rows_exactly(defective):
    result, con = defective
    assert (
        sum(result.defects.values())
        == con.execute("SELECT count(*) FROM manifest").fetchall()[0][0]
    )
    assert set(result.defects) == {
        "missing_required", "invalid_nhs_check_digit", "impossible_value", "wrong_unit",
        "unknown_code", "date_before_birth", "date_after_death", "end_before_start",
        "orphan_event", "duplicate_row",
    }  # fmt: skip
    known_codes = ", ".join(f"'{c.code}'" for c in cat.CONCEPTS if c not in cat.UNKNOWN_CODES)
    ranges = " OR ".join(
        f"(code = '{m.concept.code}' AND NOT value BETWEEN {lo} AND {hi})"
        for m in __import__("synthetic_data.reference", fromlist=["MEASURES"]).MEASURES
        for lo, hi in [cat.PLAUSIBLE_RANGES[m.key]]
    )
    units = " OR ".join(
        f"(code = '{m.concept.code}' AND unit <> '{m.unit}')"
        for m in __import__("synthetic_data.reference", fromlist=["MEASURES"]).MEASURES
    )
    people = "(SELECT patient_id, any_value(date_of_birth) AS dob, any_value(date_of_death) AS dod FROM patients GROUP BY 1)"
    checks = [
        ("patients", "invalid_nhs_check_digit", "NOT (SELECT bool_and(true))"),  # replaced below
        ("patients", "missing_required", "date_of_birth IS NULL"),
    ]
    # invalid check digits, computed in SQL from the Modulus-11 rule
    mod11 = """(11 - (list_sum(list_transform(range(9), lambda i:
                   (substr(nhs_number, i + 1, 1)::INT) * (10 - i))) % 11)) % 11"""
    checks[0] = (
        "patients",
        "invalid_nhs_check_digit",
        f"{mod11} = 10 OR {mod11} <> right(nhs_number, 1)::INT",
    )
    for table in ("encounters", "conditions", "observations", "medications", "procedures"):
        date = DATES[table]
        checks += [
            (table, "orphan_event", "patient_id NOT IN (SELECT patient_id FROM patients)"),
            (
                table,
                "date_before_birth",
                f"{date} < (SELECT dob FROM {people} p WHERE p.patient_id = t.patient_id)",
            ),
            (
                table,
                "date_after_death",
                f"{date} > (SELECT dod FROM {people} p WHERE p.patient_id = t.patient_id)",
            ),
        ]
        if table != "encounters":
            checks += [
                (table, "missing_required", "code IS NULL"),
                (table, "unknown_code", f"code NOT IN ({known_codes})"),
            ]
        else:
            checks.append((table, "missing_required", "start_date IS NULL"))
        if table in ("encounters", "medications"):
            checks.append((table, "end_before_start", "end_date < start_date"))
    checks += [
        ("observations", "impossible_value", ranges),
        ("observations", "wrong_unit", units),
    ]
    for table, key in KEYS.items():
        checks.append(
            (
                table,
                "duplicate_row",
                f"{key} IN (SELECT {key} FROM {table} GROUP BY 1 HAVING count(*) > 1)",
            )
        )
    for table, defect, where in checks:
        manifest = listed(con, table, defect)
        data = found(con, table, where)
        if defect in ("date_before_birth", "date_after_death"):
            # people whose own date of birth was blanked cannot be checked
            blank = found(
                con,
                table,
                "patient_id IN (SELECT patient_id FROM patients WHERE date_of_birth IS NULL)",
            )
            manifest -= blank
            data -= blank
        assert data == manifest, (table, defect, len(data), len(manifest))


def test_refuses_bad_arguments_and_foreign_folders(tmp_path):
    with pytest.raises(GenerationError, match="450,000"):
        generate(SynthConfig(patients=500_000), tmp_path / "x")
    with pytest.raises(GenerationError, match=r"between 0 and 0\.5"):
        generate(SynthConfig(patients=10, defects=0.9), tmp_path / "x")
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.docx").write_text("precious")
    with pytest.raises(GenerationError, match="refusing to replace"):
        generate(SynthConfig(patients=10), foreign)
    assert (foreign / "thesis.docx").read_text() == "precious"


def test_regenerating_replaces_the_population_atomically(tmp_path):
    out = tmp_path / "pop"
    generate(SynthConfig(patients=500, seed=1), out)
    generate(SynthConfig(patients=300, seed=2), out)
    assert json.loads((out / "manifest.json").read_text())["config"]["patients"] == 300
    assert [p.name for p in tmp_path.iterdir()] == ["pop"]  # no staging folders left behind
