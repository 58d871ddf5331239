"""`hub ingest` on real third-party exports and on broken ones, as a data engineer runs it.

Every fixture export either publishes with the quality gate on, the identifier scan
clean and every row accounted for, or is refused with one clear line and exit code 2.
Broken inputs never end in a traceback, never echo a value of the data, and never
change the current release.
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

from tests.conftest import FIXTURES

HUB = [sys.executable, "-m", "hub.cli"]
SYNTHEA_EXPORTS = ["synthea-2.x-2019", "synthea-2.x-2022", "synthea-3.x-2023", "synthea-3.x-2025"]
FHIR_EXPORTS = ["fhir-bulk-10", "fhir-bundles-3.x"]


def ingest(
    src: Path, fmt: str | None, home: Path, timeout: int = 300
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HUB_HOME": str(home), "COLUMNS": "200"}
    return subprocess.run(
        [*HUB, "ingest", str(src), *(["--format", fmt] if fmt else [])],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


def refused(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    """Exit 2, one error line naming what is wrong, no traceback; the line is returned."""
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def nothing_published(home: Path) -> None:
    assert not list((home / "releases").glob("release-*.duckdb"))


def patient_values(export: Path, *columns: str) -> list[str]:
    with (export / "patients.csv").open(newline="") as fh:
        return [row[c] for row in csv.DictReader(fh) for c in columns if row.get(c)]


def manifest(home: Path) -> dict:
    return json.loads(next((home / "releases").glob("release-*.json")).read_text())


def release_file(home: Path) -> Path:
    return next((home / "releases").glob("release-*.duckdb"))


def copy(name: str, tmp_path: Path) -> Path:
    out = tmp_path / name
    shutil.copytree(FIXTURES / name, out)
    return out


@pytest.mark.parametrize("name", SYNTHEA_EXPORTS + FHIR_EXPORTS)
def test_every_real_export_publishes_with_the_scan_clean_and_rows_accounted_for(name, tmp_path):
    src = FIXTURES / name
    fmt = "fhir" if name.startswith("fhir") else "synthea"
    result = ingest(src, fmt, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "quality gate passed" in result.stderr
    m = manifest(tmp_path)
    assert m["identifier_scan"]["passed"] and m["identifier_scan"]["identifying_values"] > 0
    for table, c in m["tables"].items():
        assert c["rows_in"] == c["published"] + sum(c["quarantined"].values()), table
    # files are known by content hash only: Synthea names Bundles after their patients
    text = json.dumps(m)
    for path in src.iterdir():
        assert path.name not in text
    assert str(src) not in text
    release = next((tmp_path / "releases").glob("release-*.duckdb")).read_bytes()
    for path in src.glob("*.json"):
        first_name = path.name.split("_")[0]
        assert first_name.encode() not in release
    if fmt == "synthea":
        for value in patient_values(src, "SSN", "DRIVERS", "PASSPORT", "FIRST", "LAST", "ADDRESS"):
            assert value.encode() not in release


def test_synthea_csv_rows_all_arrive(tmp_path):
    src = FIXTURES / "synthea-3.x-2025"
    assert ingest(src, "synthea", tmp_path).returncode == 0
    m = manifest(tmp_path)
    with (src / "procedures.csv").open(newline="") as fh:
        rows = sum(1 for _ in csv.reader(fh)) - 1
    # procedures have no Id and genuine repeats: none is lost as a "duplicate"
    procedures = m["tables"]["procedures"]
    assert {k: procedures[k] for k in ("rows_in", "published", "quarantined")} == {
        "rows_in": rows, "published": rows, "quarantined": {},
    }  # fmt: skip
    # rows all arrive; descriptions fewer than three people share are emptied, not lost
    assert set(procedures) <= {"rows_in", "published", "quarantined", "rare_text_removed"}
    assert m["source"]["layouts"]["procedures"] == "3.x"


def test_owner_names_of_every_spelling_stay_out(tmp_path):
    src = FIXTURES / "synthea-2.x-2022"  # OWNERNAME, not OWNER_NAME
    assert ingest(src, "synthea", tmp_path).returncode == 0
    with (src / "payer_transitions.csv").open(newline="") as fh:
        owners = {r["OWNERNAME"] for r in csv.DictReader(fh) if r["OWNERNAME"]}
    assert owners
    release = next((tmp_path / "releases").glob("release-*.duckdb"))
    blob = release.read_bytes()
    assert not [o for o in owners if o.encode() in blob]
    con = duckdb.connect(str(release), read_only=True)
    columns = {r[0] for r in con.execute("DESCRIBE synthea_payer_transitions").fetchall()}
    assert columns == {"person_id", "start", "end", "payer", "secondary_payer", "ownership"}


def test_unknown_columns_of_a_side_file_are_dropped_and_counted(tmp_path):
    src = copy("synthea-3.x-2025", tmp_path)
    name, ssn = patient_values(src, "FIRST")[0], patient_values(src, "SSN")[0]
    lines = (src / "supplies.csv").read_text().splitlines()
    lines = [lines[0] + ",PATIENT_NAME,SSN_COPY,SSN"] + [
        f"{x},{name},{ssn},{ssn}" for x in lines[1:]
    ]
    (src / "supplies.csv").write_text("\n".join(lines) + "\n")
    home = tmp_path / "hub"
    assert ingest(src, "synthea", home).returncode == 0
    m = manifest(home)
    # a header name is published only when it is a column Synthea documents (SSN, in
    # patients.csv); any other may be data and is only counted
    assert m["source"]["not_read"]["column supplies.SSN"] == 1
    assert m["source"]["not_read"]["columns of supplies unknown to the connector"] == 2
    assert "PATIENT_NAME" not in json.dumps(m)
    blob = next((home / "releases").glob("release-*.duckdb")).read_bytes()
    assert name.encode() not in blob and ssn.encode() not in blob


def test_a_patients_name_as_an_organisations_is_never_published(tmp_path):
    # a patient whose surname is an organisation's name: the name is published as the
    # organisation's (every encounter is made to name it, so that enough people's
    # records refer to it and its name is kept), so the scan must refuse, not publish
    src = copy("synthea-3.x-2025", tmp_path)
    with (src / "organizations.csv").open(newline="") as fh:
        first = next(csv.DictReader(fh))
        org = first["NAME"]
    with (src / "encounters.csv").open(newline="") as fh:
        encounters = list(csv.DictReader(fh))
    with (src / "encounters.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(encounters[0]))
        writer.writeheader()
        writer.writerows([{**e, "ORGANIZATION": first["Id"]} for e in encounters])
    with (src / "patients.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
        fields = list(rows[0])
    rows[0]["LAST"] = org
    with (src / "patients.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    home = tmp_path / "hub"
    result = ingest(src, "synthea", home)
    if result.returncode == 0:
        # the text rules found the organisation's name to be a person's (two of their
        # name words side by side) and emptied it before the scan looked
        con = duckdb.connect(str(release_file(home)), read_only=True)
        names = {r[0] for r in con.execute("SELECT name FROM organisations").fetchall()}
        con.close()
        assert org not in names and org not in result.stdout + result.stderr
        return
    line = refused(result, "identifier scan", "organisations.name")
    assert org not in line
    nothing_published(home)


def test_text_that_names_a_patient_in_a_table_of_no_person_is_never_published(tmp_path):
    # a trust's export names a self-pay account after its one patient, and writes a
    # patient's name and street into a unit: neither is shared by enough people's
    # records, so both are emptied and the load publishes without them
    src = copy("synthea-3.x-2025", tmp_path)
    last = patient_values(src, "LAST")[0]
    with (src / "encounters.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    counts: dict[str, set[str]] = {}
    for row in rows:
        counts.setdefault(row["ORGANIZATION"], set()).add(row["PATIENT"])
    lonely = min(counts, key=lambda o: len(counts[o]))
    assert len(counts[lonely]) < 3
    text = (src / "organizations.csv").read_text()
    with (src / "organizations.csv").open(newline="") as fh:
        name = next(r["NAME"] for r in csv.DictReader(fh) if r["Id"] == lonely)
    (src / "organizations.csv").write_text(text.replace(name, f"{last} (self-pay)", 1))
    obs = (src / "observations.csv").read_text().splitlines()
    header = obs[0].split(",")
    at = header.index("UNITS")
    first = next(i for i, line in enumerate(obs[1:], 1) if line.split(",")[at] == "/min")
    cells = obs[first].split(",")
    cells[at] = f"/min({last}s_watch)"  # a unit's form: only who shares it tells
    obs[first] = ",".join(cells)
    (src / "observations.csv").write_text("\n".join(obs) + "\n")
    home = tmp_path / "hub"
    result = ingest(src, "synthea", home)
    assert result.returncode == 0, result.stderr
    con = duckdb.connect(str(release_file(home)), read_only=True)
    names = [r[0] for r in con.execute("SELECT name FROM organisations").fetchall()]
    units = [r[0] for r in con.execute("SELECT DISTINCT unit FROM observations").fetchall()]
    con.close()
    assert names and not [n for n in names if n and last in n]
    assert not [u for u in units if u and last in u] and "/min" in units


def test_a_column_named_like_a_patient_is_counted_never_named(tmp_path):
    # a header cell that is no documented Synthea column may be data (here a patient's
    # name): the manifest counts it, never names it (the manifest is scanned besides)
    src = copy("synthea-3.x-2025", tmp_path)
    name = patient_values(src, "FIRST")[0].upper()
    lines = (src / "supplies.csv").read_text().splitlines()
    lines = [lines[0] + f",{name}"] + [x + ",1" for x in lines[1:]]
    (src / "supplies.csv").write_text("\n".join(lines) + "\n")
    home = tmp_path / "hub"
    result = ingest(src, "synthea", home)
    assert result.returncode == 0, result.stderr
    m = manifest(home)
    assert m["source"]["not_read"] == {"columns of supplies unknown to the connector": 1}
    assert name not in json.dumps(m).upper() and name not in result.stderr.upper()


def test_a_renamed_required_column_is_refused_by_name(tmp_path):
    src = copy("synthea-3.x-2025", tmp_path)
    text = (src / "procedures.csv").read_text()
    (src / "procedures.csv").write_text(text.replace("START,STOP", "BEGIN,STOP", 1))
    refused(ingest(src, "synthea", tmp_path / "hub"), "procedures.csv", "START or DATE")
    nothing_published(tmp_path / "hub")


def test_a_synthea_2019_export_with_procedure_dates_loads(tmp_path):
    src = FIXTURES / "synthea-2.x-2019"
    assert "DATE,PATIENT" in (src / "procedures.csv").read_text().splitlines()[0]
    assert ingest(src, "synthea", tmp_path).returncode == 0
    assert manifest(tmp_path)["source"]["layouts"]["procedures"] == "2.x-2019"


def test_a_patients_file_cut_mid_row_is_refused_and_names_the_short_row(tmp_path):
    src = copy("synthea-3.x-2023", tmp_path)
    text = (src / "patients.csv").read_text().rstrip("\n")
    (src / "patients.csv").write_text(text[: text.rfind(",", 0, len(text) - 200)])
    home = tmp_path / "hub"
    result = ingest(src, "synthea", home)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "conformance.patients.quarantine" in result.stderr
    nothing_published(home)


@pytest.mark.parametrize(
    ("damage", "needles"),
    [
        ("cut", ("quality gate failed", "conformance.encounters.quarantine")),
        ("quote", ("encounters.csv", "quote opened on line 3")),
    ],
)
def test_a_broken_encounters_file_is_refused(damage, needles, tmp_path):
    src = copy("synthea-3.x-2025", tmp_path)
    lines = (src / "encounters.csv").read_text().splitlines()
    if damage == "cut":
        lines[-1] = lines[-1][: len(lines[-1]) // 2]
    else:
        lines[2] = lines[2].replace(",", ',"', 3)
    (src / "encounters.csv").write_text("\n".join(lines) + "\n")
    home = tmp_path / "hub"
    result = ingest(src, "synthea", home)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    for needle in needles:
        assert needle in last, last
    nothing_published(home)


@pytest.mark.parametrize(
    ("content", "needle"),
    [("", "patients.csv is empty"), (None, "no ID column")],
)
def test_an_empty_or_headerless_patients_file_is_refused(content, needle, tmp_path):
    src = copy("synthea-3.x-2025", tmp_path)
    lines = (src / "patients.csv").read_text().splitlines()
    body = content if content is not None else "\n".join(lines[1:]) + "\n"
    (src / "patients.csv").write_text(body)
    line = refused(ingest(src, "synthea", tmp_path / "hub"), needle)
    for value in patient_values(FIXTURES / "synthea-3.x-2025", "Id", "SSN", "FIRST"):
        assert value not in line


def test_special_files_are_refused_by_name_and_never_hang(tmp_path):
    src = copy("synthea-3.x-2025", tmp_path)
    (src / "patients.csv").unlink()
    (src / "patients.csv").symlink_to("/dev/zero")
    refused(ingest(src, "synthea", tmp_path / "h1", timeout=60), "patients.csv", "symbolic link")
    (src / "patients.csv").unlink()
    os.mkfifo(src / "patients.csv")
    refused(ingest(src, "synthea", tmp_path / "h2", timeout=60), "patients.csv", "FIFO")
    fhir = copy("fhir-bulk-10", tmp_path)
    os.mkfifo(fhir / "Observation.000.ndjson")
    refused(ingest(fhir, "fhir", tmp_path / "h3", timeout=60), "Observation.000.ndjson", "FIFO")


def test_a_fhir_file_that_is_not_json_is_named_with_the_cause(tmp_path):
    fhir = copy("fhir-bulk-10", tmp_path)
    (fhir / "Observation.000.ndjson").write_text('{"resourceType": "Observation", "id": \n')
    refused(ingest(fhir, "fhir", tmp_path / "hub"), "Observation.000.ndjson", "not valid JSON")


def _bundle(*entries: object, entry_as_object: bool = False) -> dict:
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": entries[0] if entry_as_object else list(entries),
    }


PATIENT = {
    "fullUrl": "urn:uuid:7f0e3a52-1b4c-4a51-9d1e-0c2a3b4c5d6e",
    "resource": {
        "resourceType": "Patient",
        "id": "7f0e3a52-1b4c-4a51-9d1e-0c2a3b4c5d6e",
        "name": [{"family": "Quixotic812", "given": ["Zebedee345"]}],
        "gender": "female",
        "birthDate": "1961-04-02",
    },
}


def _encounter(start: str) -> dict:
    return {
        "resource": {
            "resourceType": "Encounter",
            "id": "e-" + start.replace(":", ""),
            "class": {"code": "AMB"},
            "subject": {"reference": PATIENT["fullUrl"]},
            "period": {"start": start},
        }
    }


def test_fhir_oddities_are_counted_not_lost(tmp_path):
    folder = tmp_path / "fhir"
    folder.mkdir()
    # a Bundle whose entry is one object still brings its Patient
    (folder / "one.json").write_text(json.dumps(_bundle(PATIENT, entry_as_object=True)))
    # the same condition twice, without id or fullUrl (a POST needs neither): two rows
    condition = {
        "resource": {
            "resourceType": "Condition",
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "38341003"}]},
            "subject": {"reference": PATIENT["fullUrl"]},
            "onsetDateTime": "2023-03-01",
        },
        "request": {"method": "POST", "url": "Condition"},
    }
    odd = _bundle(
        _encounter("2023-03-01T09:00:00Z"),
        {"request": {"method": "DELETE", "url": "Patient/1"}},
        {"resource": {"id": "x"}},
        condition,
        condition,
    )
    (folder / "two.json").write_text(json.dumps(odd))
    (folder / "more.ndjson").write_text(json.dumps([PATIENT["resource"]]) + "\n")
    home = tmp_path / "hub"
    result = ingest(folder, "fhir", home)
    assert result.returncode == 0, result.stderr
    m = manifest(home)
    assert m["tables"]["patients"]["published"] == 1
    assert m["tables"]["encounters"]["published"] == 1
    assert m["tables"]["conditions"] == {"rows_in": 2, "published": 2, "quarantined": {}}
    assert m["skipped_resources"] == {
        "(Bundle entry without resource)": 1,
        "(no resourceType)": 1,
        "(not a JSON object: array)": 1,
    }
    assert "(Bundle entry without resource)" in result.stderr


def test_fhir_times_out_of_range_are_quarantined_and_refused(tmp_path):
    folder = tmp_path / "fhir"
    folder.mkdir()
    bundle = _bundle(
        PATIENT, _encounter("2023-03-01T09:00:00Z"), _encounter("2023-03-02T25:99:00Z")
    )
    (folder / "b.json").write_text(json.dumps(bundle))
    home = tmp_path / "hub"
    result = ingest(folder, "fhir", home)
    assert result.returncode == 2 and "conformance.encounters.quarantine" in result.stderr
    rejected = next((home / "releases" / "rejected").iterdir())
    report = json.loads((rejected / "quality.json").read_text())
    assert "conformance.encounters.quarantine" in report["failed"]


def test_non_finite_numbers_never_publish(tmp_path):
    # one load with each kind of non-finite number in a row of its own
    values = ["inf", "-inf", "NaN", "1e400"]
    src = copy("synthea-3.x-2025", tmp_path)
    lines = (src / "observations.csv").read_text().splitlines()
    rows = [i for i, x in enumerate(lines) if ",cm," in x][: len(values)]
    assert len(rows) == len(values)
    for row, value in zip(rows, values, strict=True):
        cells = next(csv.reader([lines[row]]))
        cells[6] = value
        lines[row] = ",".join(f'"{c}"' if "," in c else c for c in cells)
    (src / "observations.csv").write_text("\n".join(lines) + "\n")
    home = tmp_path / "hub"
    result = ingest(src, "synthea", home)
    assert result.returncode == 0, result.stderr
    quarantined = manifest(home)["tables"]["observations"]["quarantined"]
    assert quarantined == {"non-finite number": len(values)}
    release = next((home / "releases").glob("release-*.duckdb"))
    con = duckdb.connect(str(release), read_only=True)
    assert con.execute(
        "SELECT count(*) FROM observations WHERE NOT isfinite(value)"
    ).fetchall() == [(0,)]


@pytest.mark.parametrize("value", ["1e308", "5000"])
def test_an_impossible_value_is_quarantined_and_the_release_published(value, tmp_path):
    """A 5,000 cm head circumference once refused the whole release (the check's 0%
    threshold): the row is now quarantined with its reason and the rest is published."""
    src = copy("synthea-3.x-2025", tmp_path)
    lines = (src / "observations.csv").read_text().splitlines()
    # a head circumference (LOINC 9843-4, cm) has no reference range of its own
    row = next(i for i, x in enumerate(lines) if ",cm," in x)
    cells = next(csv.reader([lines[row]]))
    cells[4:7] = ["9843-4", "Head Occipital-frontal circumference", value]
    lines[row] = ",".join(f'"{c}"' if "," in c else c for c in cells)
    (src / "observations.csv").write_text("\n".join(lines) + "\n")
    home = tmp_path / "hub"
    result = ingest(src, "synthea", home)
    assert result.returncode == 0, result.stderr
    quarantined = manifest(home)["tables"]["observations"]["quarantined"]
    assert quarantined == {"impossible value": 1}
    release = next((home / "releases").glob("release-*.duckdb"))
    con = duckdb.connect(str(release), read_only=True)
    assert con.execute(
        "SELECT count(*) FROM observations WHERE code = '9843-4' AND value > 300"
    ).fetchall() == [(0,)]


@pytest.mark.parametrize(
    ("export", "fmt"),
    [("synthea-3.x-2023", "synthea"), ("fhir-bulk-10", "fhir"), ("fhir-bundles-3.x", "fhir")],
)
def test_ingest_tells_the_format_from_the_files_names(export, fmt, tmp_path):
    result = ingest(FIXTURES / export, None, tmp_path / "home")
    assert result.returncode == 0, result.stderr
    out = result.stdout + result.stderr
    assert f"format: {fmt}" in out and "published release-0001" in out


def test_a_folder_of_no_known_format_or_a_missing_path_is_named_not_echoed(tmp_path):
    person = tmp_path / "Alfred_West_1961-07-03"
    person.mkdir()
    (person / "notes.txt").write_text("nothing the hub reads")
    line = refused(ingest(person, None, tmp_path / "home"), "pass --format")
    assert "Alfred" not in line and "1961" not in line
    line = refused(ingest(tmp_path / "Alfred_West_1961-07-03.json", None, tmp_path / "h2"))
    assert "does not exist" in line and "Alfred" not in line
