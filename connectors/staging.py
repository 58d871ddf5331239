"""Reading source files into DuckDB without Python row loops.

Only regular files are read: a symbolic link, FIFO, device or folder where a source
file is expected is refused by name before anything opens it (a FIFO would block the
load forever). A file is known in the release by its content hash (``label``), never by
its path or name: exporters put patients' names into file names.

CSV has one explicit dialect, used both to read the header and to read the rows:
comma-separated, ``"`` quoted, ``""`` escaped, UTF-8, a header line. Every row must have
the header's number of fields: a short or long row, or one that is not UTF-8, is
rejected by DuckDB's reader (``store_rejects``) and quarantined with its reason and line
number; a quote left open is refused, because it swallows the rows after it.

Every relation carries ``filename`` (the file's label) and ``file_row_number`` (1-based
data row within its file), so a quarantined row can be found in its source without
copying its content.

A source file's extensions are matched whatever their case (``Conditions.CSV``,
``Condition.000.NDJSON``), and a file may be gzip-compressed (``conditions.csv.gz``): it
is read as it is, by DuckDB's gzip reader (``split_name``, ``open_binary``).
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import os
import re
import stat
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import duckdb

from connectors.errors import SourceError

HEADER_LIMIT: Final = 1 << 16  # bytes of a header line
# DuckDB's reject error types -> the quarantine reason of the row
REJECT_REASONS: Final = {
    "MISSING COLUMNS": "short row (fewer fields than the header)",
    "TOO MANY COLUMNS": "long row (more fields than the header)",
    "INVALID ENCODING": "not UTF-8",
    "LINE SIZE OVER MAXIMUM": "line too long",
    "CAST ERROR": "unreadable value",
}


# a source file's compression suffix -> DuckDB's name for it (read natively)
COMPRESSIONS: Final = {".gz": "gzip"}
# notes an export ships beside its data (README.md, SOURCE.md): never data, not counted
NOTE_SUFFIXES: Final = frozenset({".md"})


def split_name(path: Path) -> tuple[str, str, str]:
    """A source file's name as ``(stem, suffix, compression)``, whatever its case.

    ``Condition.000.NDJSON.gz`` -> ``("Condition.000", ".ndjson", "gzip")``;
    ``patients.csv`` -> ``("patients", ".csv", "none")``. The suffix is lower-cased;
    the stem keeps its case.
    """
    name = path.name
    compression = "none"
    base, dot, ext = name.rpartition(".")
    if dot and base and f".{ext.lower()}" in COMPRESSIONS:
        compression = COMPRESSIONS[f".{ext.lower()}"]
        name = base
    base, dot, ext = name.rpartition(".")
    if dot and base:
        return base, f".{ext.lower()}", compression
    return name, "", compression


def compression_of(path: Path) -> str:
    """DuckDB's ``compression`` for a source file: ``gzip`` or ``none``."""
    return split_name(path)[2]


def open_binary(path: Path) -> io.BufferedIOBase:
    """A source file's bytes, decompressed when it is gzip-compressed."""
    if compression_of(path) == "gzip":
        return gzip.GzipFile(path, "rb")
    return path.open("rb")


@dataclass
class SourceFiles:
    kind: str = ""
    tables: dict[str, list[Path]] = field(default_factory=dict)
    labels: dict[Path, str] = field(default_factory=dict)  # path -> content label
    hashes: dict[Path, str] = field(default_factory=dict)  # path -> sha256
    ignored: dict[str, int] = field(default_factory=dict)  # what was not read, counted
    layouts: dict[str, str] = field(default_factory=dict)  # file -> layout it matched
    # warehouse table -> fields this load's source does not carry (the gate skips them)
    unguaranteed: dict[str, list[str]] = field(default_factory=dict)

    def all_files(self) -> list[Path]:
        return sorted({p for paths in self.tables.values() for p in paths})

    def add(self, table: str, path: Path) -> None:
        """Register a file (refusing anything but a regular file) and hash it."""
        require_regular_file(path)
        digest = sha256_file(path)
        self.tables.setdefault(table, []).append(path)
        self.hashes[path] = digest
        self.labels[path] = digest[:16]

    def manifest_entries(self) -> list[dict[str, object]]:
        """What the manifest says of the files read: table, content hash and size only."""
        out = [
            {"table": table, "sha256": self.hashes[p], "bytes": p.stat().st_size}
            for table, paths in self.tables.items()
            for p in paths
        ]
        return sorted(out, key=lambda e: (str(e["table"]), str(e["sha256"])))


# FHIR R4's resource types (hl7.org/fhir/R4/resourcelist.html): bulk exports name their
# files after them ("Patient.ndjson", "Observation.000.ndjson")
FHIR_RESOURCE_TYPES: Final = frozenset(
    """Account ActivityDefinition AdverseEvent AllergyIntolerance Appointment
    AppointmentResponse AuditEvent Basic Binary BiologicallyDerivedProduct BodyStructure
    Bundle CapabilityStatement CarePlan CareTeam CatalogEntry ChargeItem
    ChargeItemDefinition Claim ClaimResponse ClinicalImpression CodeSystem Communication
    CommunicationRequest CompartmentDefinition Composition ConceptMap Condition Consent
    Contract Coverage CoverageEligibilityRequest CoverageEligibilityResponse
    DetectedIssue Device DeviceDefinition DeviceMetric DeviceRequest DeviceUseStatement
    DiagnosticReport DocumentManifest DocumentReference EffectEvidenceSynthesis Encounter
    Endpoint EnrollmentRequest EnrollmentResponse EpisodeOfCare EventDefinition Evidence
    EvidenceVariable ExampleScenario ExplanationOfBenefit FamilyMemberHistory Flag Goal
    GraphDefinition Group GuidanceResponse HealthcareService ImagingStudy Immunization
    ImmunizationEvaluation ImmunizationRecommendation ImplementationGuide InsurancePlan
    Invoice Library Linkage List Location Measure MeasureReport Media Medication
    MedicationAdministration MedicationDispense MedicationKnowledge MedicationRequest
    MedicationStatement MedicinalProduct MedicinalProductAuthorization
    MedicinalProductContraindication MedicinalProductIndication
    MedicinalProductIngredient MedicinalProductInteraction MedicinalProductManufactured
    MedicinalProductPackaged MedicinalProductPharmaceutical
    MedicinalProductUndesirableEffect MessageDefinition MessageHeader MolecularSequence
    NamingSystem NutritionOrder Observation ObservationDefinition OperationDefinition
    OperationOutcome Organization OrganizationAffiliation Parameters Patient
    PaymentNotice PaymentReconciliation Person PlanDefinition Practitioner
    PractitionerRole Procedure Provenance Questionnaire QuestionnaireResponse
    RelatedPerson RequestGroup ResearchDefinition ResearchElementDefinition
    ResearchStudy ResearchSubject RiskAssessment RiskEvidenceSynthesis Schedule
    SearchParameter ServiceRequest Slot Specimen SpecimenDefinition StructureDefinition
    StructureMap Subscription Substance SubstanceNucleicAcid SubstancePolymer
    SubstanceProtein SubstanceReferenceInformation SubstanceSourceMaterial
    SubstanceSpecification SupplyDelivery SupplyRequest Task TerminologyCapabilities
    TestReport TestScript ValueSet VerificationResult VisionPrescription""".split()  # noqa: SIM905
)
# the names of the files (and folders) exporters write: Synthea's CSV files, the hub's
# own tables and parts, the regional feeds' files, FHIR's resource types
KNOWN_FILE_STEMS: Final = frozenset(
    {
        "allergies", "careplans", "claims", "claims_transactions", "conditions", "devices",
        "encounters", "imaging_studies", "immunizations", "medications", "observations",
        "organizations", "patients", "payer_transitions", "payers", "procedures",
        "providers", "supplies", "patient_expenses", "organisations", "part", "data", "feeds", "attendances",
        "deaths", "spells", "truth", "records", "people", "fhir", "bulk", "output",
        "synthea", "csv", "export", "manifest", "real", "dummy", "src",
    }
    | {t.lower() for t in FHIR_RESOURCE_TYPES}
)  # fmt: skip
# an exporter's part number (Observation.000, Patient-1): short, never an identifier
# (Patient-9434765919.json carries an NHS number)
_NUMBERED = re.compile(r"[._-]?[0-9]{1,5}$")


def _known(name: str) -> bool:
    """Whether a file or folder name is one exporters write (then it carries no one's
    data): its stem, less extensions and a part number, is a known file or resource."""
    stem = name
    while True:
        base, dot, ext = stem.rpartition(".")
        if dot and base and ext.lower() in ("csv", "ndjson", "json", "parquet", "gz", "zst"):
            stem = base
        else:
            break
    stem = _NUMBERED.sub("", stem)
    return stem.lower() in KNOWN_FILE_STEMS and len(name) <= 60


def describe(path: Path, label: str | None = None) -> str:
    """How a file is named in an error: its name only when it is one exporters write.

    Exporters name files after patients (Synthea's Bundles ``Alfred550_West559_<uuid>``,
    a trust's ``Alfred_West_1961-07-03.json`` or ``MRN-0012345.json``): any other file is
    named by its content hash (``sha256sum`` finds it) or, before it can be read, by its
    suffix and, when known, its folder's name.
    """
    name = path.name
    if _known(name):
        return name
    suffix = "".join(c for c in path.suffix if c.isalnum() or c == ".")[:12]
    if label:
        return f"the {suffix or 'extensionless'} file with sha256 {label}..."
    folder = path.parent.name if _known(path.parent.name) else "the folder"
    return f"a {suffix or 'extensionless'} file in {folder}"


def require_regular_file(path: Path) -> None:
    """Refuse anything that is not a regular file, without opening it."""
    try:
        info = os.lstat(path)
    except OSError as exc:
        raise SourceError(f"{describe(path)} cannot be read ({exc.strerror})") from None
    if stat.S_ISLNK(info.st_mode):
        kind = "a symbolic link"
    elif stat.S_ISFIFO(info.st_mode):
        kind = "a FIFO"
    elif stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode):
        kind = "a device"
    elif stat.S_ISDIR(info.st_mode):
        kind = "a folder"
    elif stat.S_ISSOCK(info.st_mode):
        kind = "a socket"
    elif stat.S_ISREG(info.st_mode):
        if not os.access(path, os.R_OK):
            raise SourceError(f"{describe(path)} cannot be read (permission denied)")
        return
    else:
        kind = "not a regular file"
    raise SourceError(f"{describe(path)} is {kind}: only regular files are read")


def harden_connection(con: duckdb.DuckDBPyConnection) -> None:
    """Set up a connection that reads source files so that no cast of a source value raises.

    DuckDB 2.0's ``type_pushdown`` optimizer pushes a cast over a CSV column
    (``try_cast(col AS DATE)``, ``AS INTEGER``, ``AS TIMESTAMP``...) into the CSV reader,
    which then raises a ConversionException on a value it cannot convert instead of
    giving NULL (DuckDB 2.0.1: ``SELECT try_cast(d AS DATE) FROM read_csv('t.csv',
    all_varchar = true)`` fails on a ``31/03/2015``): one bad value would stop a whole
    load where its row should be quarantined. Parquet and JSON readers are not affected.
    Every connection that reads source files during ingest is set up here; a DuckDB
    without that optimizer needs nothing.
    """
    known = {r[0] for r in con.execute("SELECT name FROM duckdb_optimizers()").fetchall()}
    if "type_pushdown" not in known:
        return
    current = con.execute("SELECT current_setting('disabled_optimizers')").fetchall()[0][0]
    disabled = {n.strip() for n in str(current or "").split(",") if n.strip()}
    if "type_pushdown" not in disabled:
        disabled.add("type_pushdown")
        con.execute(f"SET disabled_optimizers = {quote(', '.join(sorted(disabled)))}")


def quote(value: str) -> str:
    """A SQL string literal (file paths come from the operator, not from users)."""
    return "'" + value.replace("'", "''") + "'"


def csv_header(path: Path) -> list[str]:
    """The header of a CSV file in the one dialect, or a refusal naming the file.

    The header's names are only compared with known names; a header that is data (a
    file without one) is never quoted back.
    """
    try:
        with open_binary(path) as fh:
            raw = fh.readline(HEADER_LIMIT + 1)
    except (OSError, EOFError, zlib.error):  # a gzip file that is corrupt or cut short
        raise SourceError(f"{describe(path)} cannot be read: {_gzip_cause(path)}") from None
    if not raw.strip():
        raise SourceError(f"{describe(path)} is empty: a header line was expected")
    if len(raw) > HEADER_LIMIT:
        raise SourceError(f"{describe(path)}: the first line is too long to be a header")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise SourceError(f"{describe(path)} is not UTF-8 text") from None
    try:
        rows = list(csv.reader([text], delimiter=",", quotechar='"', doublequote=True, strict=True))
    except csv.Error:
        raise SourceError(f"{describe(path)}: the header line is not valid CSV") from None
    names = [n.strip() for n in rows[0]] if rows else []
    if not names or all(not n for n in names):
        raise SourceError(f"{describe(path)} is empty: a header line was expected")
    return names


def read_csv_table(
    con: duckdb.DuckDBPyConnection,
    *,
    files: SourceFiles,
    table: str,
    width: int,
    target: str,
) -> None:
    """Read every file of ``table`` (``width`` fields each) into TEMP ``raw_<table>``.

    Columns are named ``c0``, ``c1``, ... by position, never by what the header says.
    Rejected rows go to TEMP ``stage_rejects`` under ``target`` (the warehouse table).
    """
    ensure_rejects(con)
    columns = "{" + ", ".join(f"'c{i}': 'VARCHAR'" for i in range(width)) + "}"
    con.execute(f"DROP TABLE IF EXISTS raw_{table}")
    for n, path in enumerate(files.tables[table]):
        label = files.labels[path]
        rej = f"rej_{table}_{n}"
        compression = compression_of(path)
        try:
            con.execute(
                f"""
                CREATE OR REPLACE TEMP TABLE raw_part AS
                SELECT * EXCLUDE (ordinality), ordinality AS file_row_number,
                       {quote(label)} AS filename
                FROM read_csv({quote(str(path))}, auto_detect = false, header = true,
                              delim = ',', quote = '"', escape = '"', encoding = 'utf-8',
                              compression = '{compression}',
                              columns = {columns}, strict_mode = true, ignore_errors = true,
                              store_rejects = true, rejects_table = '{rej}',
                              rejects_scan = '{rej}_scan', max_line_size = 4194304)
                     WITH ORDINALITY
                """
            )
        except duckdb.IOException:
            if compression == "none":
                raise
            # DuckDB's message may quote the file's path: never passed on
            raise SourceError(
                f"{describe(path, label)} cannot be read: {_gzip_cause(path)}"
            ) from None
        open_quotes = con.execute(
            f"SELECT min(line) FROM {rej} WHERE error_type = 'UNQUOTED VALUE'"
        ).fetchall()[0][0]
        if open_quotes is not None and open_quotes == _last_line(path):
            # the file ends inside a quoted field: its last row was cut off
            con.execute(
                f"UPDATE {rej} SET error_type = 'MISSING COLUMNS' WHERE line = $l",
                {"l": open_quotes},
            )
        elif open_quotes is not None:
            raise SourceError(
                f"{describe(path)}: a quote opened on line {open_quotes} is never closed "
                "(or a field has text after its closing quote); the file cannot be read "
                "reliably and the load is refused"
            )
        reasons = " ".join(f"WHEN {quote(k)} THEN {quote(v)}" for k, v in REJECT_REASONS.items())
        con.execute(
            f"""
            INSERT INTO stage_rejects
            SELECT {quote(target)}, {quote(label)}, line - 1,
                   CASE error_type::VARCHAR {reasons} ELSE 'unreadable row' END
            FROM (SELECT DISTINCT line, error_type FROM {rej})
            """
        )
        exists = con.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE table_name = $t AND temporary",
            {"t": f"raw_{table}"},
        ).fetchall()[0][0]
        if exists:
            con.execute(f"INSERT INTO raw_{table} SELECT * FROM raw_part")
        else:
            con.execute(f"CREATE TEMP TABLE raw_{table} AS SELECT * FROM raw_part")
        con.execute(f"DROP TABLE raw_part; DROP TABLE {rej}; DROP TABLE {rej}_scan")


def _gzip_cause(path: Path) -> str:
    if compression_of(path) == "gzip":
        return "it is not a complete gzip file (corrupt, or cut short)"
    return "the file cannot be read"


def _last_line(path: Path) -> int:
    """The number of the file's last line (1-based, counting the header)."""
    lines, last = 0, b""
    try:
        with open_binary(path) as fh:
            while chunk := fh.read(1 << 20):
                lines += chunk.count(b"\n")
                last = chunk[-1:]
    except (OSError, EOFError, zlib.error):  # a gzip file that is corrupt or cut short
        raise SourceError(f"{describe(path)} cannot be read: {_gzip_cause(path)}") from None
    return lines if last == b"\n" else lines + 1


def ensure_rejects(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(
        """CREATE TEMP TABLE IF NOT EXISTS stage_rejects (
               table_name VARCHAR, source_file VARCHAR, source_row BIGINT, reason VARCHAR)"""
    )


def relation_sql(files: SourceFiles, table: str) -> str:
    """Parquet or newline-delimited JSON files of ``table`` as one relation."""
    paths = files.tables[table]
    if files.kind == "parquet":
        # one reader over every file (columns matched by name), not a union of one reader
        # per file: each branch of a union leaves its own part-filled row groups, which
        # the final CHECKPOINT then rewrites (4.9 s of a 1M load with 50 files a table).
        # A file is named by its label, never its path; the CASE runs only for the rows
        # whose file is asked for (the quarantined).
        listed = ", ".join(quote(str(p)) for p in paths)
        labels = " ".join(f"WHEN {quote(str(p))} THEN {quote(files.labels[p])}" for p in paths)
        return (
            "(SELECT * EXCLUDE (file_row_number, filename), "
            "file_row_number + 1 AS file_row_number, "
            f"CASE filename {labels} END AS filename "
            f"FROM read_parquet([{listed}], filename = true, file_row_number = true, "
            "union_by_name = true))"
        )
    raise ValueError(f"unknown source kind {files.kind!r}")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
