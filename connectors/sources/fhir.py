"""Connector for FHIR R4: Bulk Data NDJSON exports and Bundles (collection, transaction).

Resources are read with DuckDB (``read_json_objects``) and picked apart with JSON paths,
never looped over in Python. Bundle entries are unnested; a resource's key is its ``id``
or, failing that, the UUID of its ``urn:uuid:`` fullUrl, and references by
``urn:uuid:``, ``Type/id`` or absolute URL all resolve. Conditional references
(``Practitioner?identifier=...``) and references to resources outside the export
(DiagnosticReport, DocumentReference, ...) are kept as they are or left empty, never
fatal. Resource types the warehouse has no table for are counted in the manifest
(``skipped_resources``), not dropped silently: by type when the type is a FHIR R4
resource type name, otherwise under one fixed label (a ``resourceType`` is data).

Direct identifiers (identifiers, names, telecom, address, birth date, the narrative
``text``, mother's maiden name and birth place extensions, whatever the case of their
URL) go to the vault only. Published ids are the hub's keyed ids (``hub_id``) of
resource ids and references; an organisation keeps its ODS code. No source value is
cast in a way that can raise: a value of the wrong type is NULL or quarantines its row.
"""

from __future__ import annotations

import re
import zlib
from pathlib import Path
from typing import Final

import duckdb
import pyarrow as pa

from connectors.errors import SourceError
from connectors.staging import (
    FHIR_RESOURCE_TYPES,
    NOTE_SUFFIXES,
    SourceFiles,
    compression_of,
    describe,
    ensure_rejects,
    open_binary,
    quote,
    split_name,
)

SOURCE = "fhir"
VERSION = "1.0"
NHS_NUMBER_SYSTEM: Final = "https://fhir.nhs.uk/Id/nhs-number"
ODS_SYSTEM: Final = "https://fhir.nhs.uk/Id/ods-organization-code"
LOADED_TYPES: Final = (
    "Patient", "Encounter", "Condition", "Observation", "MedicationRequest",
    "MedicationStatement", "Procedure", "Immunization", "AllergyIntolerance", "Device",
    "Organization", "Location", "Practitioner", "PractitionerRole", "CarePlan",
)  # fmt: skip

# every resource type of FHIR R4 (4.0.1): the only type names a manifest may give; any
# other resourceType is data (a line can put a patient's name there) and is only counted
R4_RESOURCE_TYPES: Final = FHIR_RESOURCE_TYPES  # one list: connectors.staging
NOT_A_RESOURCE_TYPE: Final = "(not a FHIR R4 resource type)"

MACROS = r"""
CREATE OR REPLACE TEMP MACRO fhir_ref(x) AS (
    CASE
        WHEN x IS NULL OR contains(x, '?') OR starts_with(x, '#') THEN NULL
        WHEN starts_with(x, 'urn:uuid:') THEN substr(x, 10)
        ELSE regexp_extract(x, '([A-Za-z]+)/([^/]+?)(/_history/[^/]+)?$', 2)
    END
);
-- a local reference ('#med') names a resource in the resource's own contained[] (of the
-- given type): that resource, else NULL
CREATE OR REPLACE TEMP MACRO fhir_contained(r, ref, rtype) AS (
    CASE WHEN starts_with(ref, '#') THEN
        list_filter(json_extract(r, '$.contained[*]'),
                    lambda c: (c ->> '$.id') = substr(ref, 2)
                              AND (c ->> '$.resourceType') = rtype)[1]
    END
);
CREATE OR REPLACE TEMP MACRO fhir_first(j, path) AS (json_extract(j, path || '[0]'));
CREATE OR REPLACE TEMP MACRO fhir_coding(cc) AS (json_extract(cc, '$.coding[0]'));
-- a Patient extension that identifies (mother's maiden name, birth place): the URL's
-- case varies between profiles (patient-mothersMaidenName, patient-birthPlace)
CREATE OR REPLACE TEMP MACRO fhir_identifying_extension(url) AS (
    contains(lower(url), 'maiden') OR contains(lower(url), 'birthplace')
);
-- an organisation named by an identifier: an ODS code is public and published as it is;
-- any other identifier or resource id of the export only as the hub's keyed id
CREATE OR REPLACE TEMP MACRO fhir_org_code(system, value, ref) AS (
    CASE WHEN system = 'ODS_SYSTEM' AND regexp_full_match(trim(value), '[A-Z0-9]{3,8}')
         THEN trim(value)
         ELSE hub_id(coalesce(nullif(trim(value), ''), ref))::VARCHAR END
);
""".replace("ODS_SYSTEM", ODS_SYSTEM)


SUFFIXES: Final = (".ndjson", ".json")  # any case, gzip-compressed or not (.ndjson.gz)
# what a FHIR R4 resource of each type does not guarantee (the gate does not require it)
# (a Device has no period of use; a Patient need not carry a district or an ethnicity)
UNGUARANTEED: Final = {
    "devices": ("start_date", "end_date"),
    "patients": ("local_authority", "ethnicity"),
}
# the table a resource type fills: a line of that type that cannot be read is
# quarantined there (and counts against the gate's quarantine check)
TABLE_OF_TYPE: Final = {
    "Patient": "patients", "Encounter": "encounters", "Condition": "conditions",
    "Observation": "observations", "MedicationRequest": "medications",
    "MedicationStatement": "medications", "Procedure": "procedures",
    "Immunization": "immunizations", "AllergyIntolerance": "allergies", "Device": "devices",
    "CarePlan": "care_plans", "Organization": "organisations", "Location": "fhir_locations",
    "Practitioner": "fhir_practitioners", "PractitionerRole": "fhir_practitioner_roles",
}  # fmt: skip
# a line that cannot be read and names no table's type is counted under these
BAD_LINE: Final = {"not valid JSON": "(line not valid JSON)", "not UTF-8": "(line not UTF-8)"}
_LINE_TYPE = re.compile(rb'"resourceType"\s*:\s*"([A-Za-z]{1,64})"')
_PART_NUMBER = re.compile(r"[._-]?[0-9]+$")
_BATCH_BYTES: Final = 1 << 26  # lines handed to DuckDB at a time by the line reader


def discover(src: Path) -> SourceFiles:
    files = SourceFiles(kind="json")
    if src.is_file() or src.is_symlink() or not src.is_dir():
        files.add("resources", src)
        return files
    for path in sorted(src.rglob("*")):
        if path.is_dir() and not path.is_symlink():
            continue  # its files are walked
        stem, suffix, _compression = split_name(path)
        if suffix in SUFFIXES and not (suffix == ".ndjson" and stem.lower() == "log"):
            files.add("resources", path)  # a FIFO, link or device here is refused by name
        elif suffix not in NOTE_SUFFIXES:  # README.md, SOURCE.md: notes, not data
            # the export's log.ndjson, other files: counted, never named, never dropped
            files.ignored["files"] = files.ignored.get("files", 0) + 1
    if not files.tables:
        raise SourceError(
            f"{describe(src)} holds no .ndjson or .json FHIR files (nor .ndjson.gz, .json.gz)"
        )
    return files


def _read(con: duckdb.DuckDBPyConnection, files: SourceFiles) -> None:
    """Every file's JSON values into TEMP ``fhir_raw``.

    A .json file holds one value and is refused if it is not JSON. An NDJSON file is read
    whole when it can be; if DuckDB's reader refuses it, it is read again one line at a
    time (``_read_lines``): a line that is not UTF-8 or not JSON goes to TEMP
    ``fhir_bad_lines`` (file label, line number, reason; never its content) and the rest
    loads. An NDJSON file without one readable JSON object is refused.
    """
    con.execute(
        """CREATE OR REPLACE TEMP TABLE fhir_raw
           (json JSON, source_file VARCHAR, source_row BIGINT)"""
    )
    con.execute(
        """CREATE OR REPLACE TEMP TABLE fhir_bad_lines
           (table_name VARCHAR, source_file VARCHAR, source_row BIGINT, reason VARCHAR)"""
    )
    for path in files.tables["resources"]:
        label = files.labels[path]
        # NDJSON holds one value per line; a .json file one value (a resource or a
        # Bundle), pretty-printed or not. A top-level array is kept whole (and counted
        # as not a resource), never unnested by guesswork
        ndjson = split_name(path)[1] == ".ndjson"
        fmt = "newline_delimited" if ndjson else "unstructured"
        compression = compression_of(path)
        try:
            con.execute(
                f"""
                INSERT INTO fhir_raw
                SELECT json, {quote(label)}, ordinality
                FROM read_json_objects({quote(str(path))}, format = '{fmt}',
                                       compression = '{compression}',
                                       maximum_object_size = 268435456) WITH ORDINALITY
                """
            )
        except duckdb.InvalidInputException:
            if not ndjson:
                raise SourceError(
                    f"{describe(path, label)} cannot be loaded: it is not valid JSON"
                ) from None
            _read_lines(con, path, label)
        except duckdb.Error as exc:
            cause = {
                "IOException": "it cannot be read"
                + (
                    " (not a complete gzip file: corrupt, or cut short)"
                    if compression != "none"
                    else ""
                ),
                "OutOfMemoryException": "it does not fit in memory",
            }.get(type(exc).__name__, "the JSON reader failed")
            raise SourceError(f"{describe(path, label)} cannot be loaded: {cause}") from None


def _file_type(path: Path) -> str | None:
    """The resource type a Bulk Data file is named after (``Condition.000.ndjson``)."""
    stem = _PART_NUMBER.sub("", split_name(path)[0])
    return stem if stem in TABLE_OF_TYPE else None


def _read_lines(con: duckdb.DuckDBPyConnection, path: Path, label: str) -> None:
    """An NDJSON file one line at a time, numbered by line; bad lines are set aside.

    Python only splits the bytes into lines and checks UTF-8; DuckDB decides which line
    is JSON (``json_valid``, the test its reader makes). A bad line is quarantined in
    the table of its resource type (the file's Bulk Data name, else the line's first
    ``resourceType``), else counted (``BAD_LINE``); its content is never kept.
    """
    con.execute("CREATE OR REPLACE TEMP TABLE fhir_lines (n BIGINT, line VARCHAR, hint VARCHAR)")
    file_type = _file_type(path)
    bad: list[tuple[str | None, int, str]] = []
    numbers: list[int] = []
    lines: list[str] = []
    hints: list[str | None] = []
    size = 0

    def hint_of(raw: bytes) -> str | None:
        if file_type:
            return file_type
        found = _LINE_TYPE.search(raw)
        return found.group(1).decode() if found else None

    def flush() -> None:
        nonlocal size
        if numbers:
            batch = pa.table(
                {"n": pa.array(numbers, pa.int64()), "line": pa.array(lines, pa.string()),
                 "hint": pa.array(hints, pa.string())}
            )  # fmt: skip
            con.register("fhir_line_batch", batch)
            try:
                con.execute("INSERT INTO fhir_lines SELECT n, line, hint FROM fhir_line_batch")
            finally:
                con.unregister("fhir_line_batch")
        numbers.clear()
        lines.clear()
        hints.clear()
        size = 0

    try:
        with open_binary(path) as fh:
            for n, raw in enumerate(fh, start=1):
                raw = raw.rstrip(b"\r\n")
                if n == 1 and raw.startswith(b"\xef\xbb\xbf"):
                    raw = raw[3:]  # a byte-order mark
                if not raw.strip():
                    continue  # a blank line holds no value
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError:
                    bad.append((hint_of(raw), n, "not UTF-8"))
                    continue
                numbers.append(n)
                lines.append(text)
                hints.append(None if file_type else hint_of(raw))
                size += len(raw)
                if size >= _BATCH_BYTES:
                    flush()
            flush()
    except (OSError, EOFError, zlib.error):  # a gzip file that is corrupt or cut short
        raise SourceError(
            f"{describe(path, label)} cannot be loaded: it cannot be read (not a complete "
            "gzip file: corrupt, or cut short)"
        ) from None
    objects = con.execute(
        "SELECT count(*) FROM fhir_lines WHERE json_type(try_cast(line AS JSON)) = 'OBJECT'"
    ).fetchall()[0][0]
    if not objects:
        raise SourceError(
            f"{describe(path, label)} cannot be loaded: it is not valid JSON or "
            "newline-delimited JSON"
        )
    con.execute(
        f"""INSERT INTO fhir_raw SELECT line::JSON, {quote(label)}, n FROM fhir_lines
            WHERE json_valid(line)"""
    )
    # the type a line names becomes the table it is quarantined in, else NULL (counted)
    cases = " ".join(f"WHEN {quote(t)} THEN {quote(table)}" for t, table in TABLE_OF_TYPE.items())
    con.execute(
        f"""INSERT INTO fhir_bad_lines
            SELECT CASE coalesce($file_type, hint) {cases} END, {quote(label)}, n,
                   'not valid JSON'
            FROM fhir_lines WHERE NOT json_valid(line)""",
        {"file_type": file_type},
    )
    if bad:
        con.executemany(
            f"INSERT INTO fhir_bad_lines VALUES (?, {quote(label)}, ?, ?)",
            [[TABLE_OF_TYPE.get(t or ""), n, reason] for t, n, reason in bad],
        )
    con.execute("DROP TABLE fhir_lines")


def stage(con: duckdb.DuckDBPyConnection, src: Path) -> SourceFiles:
    files = discover(src)
    con.execute(MACROS)
    _read(con, files)
    # Bundles are unnested (an ``entry`` that is one object counts as one entry); what is
    # not a resource (an array line, an object without resourceType, a request-only
    # entry) is counted in fhir_unread, never dropped silently
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE fhir_values AS
        SELECT json, source_file, source_row,
               CASE WHEN json_type(json) <> 'OBJECT' THEN '(not a JSON object: ' ||
                         lower(json_type(json)) || ')'
                    WHEN (json ->> '$.resourceType') IS NULL THEN '(no resourceType)'
               END AS problem
        FROM fhir_raw
        """
    )
    # a line that cannot be read is quarantined in its type's table (file and line
    # number only, as the CSV reader's rejected rows), else counted as not read
    ensure_rejects(con)
    con.execute(
        """INSERT INTO stage_rejects SELECT table_name, source_file, source_row, reason
           FROM fhir_bad_lines WHERE table_name IS NOT NULL"""
    )
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE fhir_entries AS
        SELECT unnest(entries) AS e, generate_subscripts(entries, 1) AS entry_no,
               source_file, source_row
        FROM (
            SELECT CASE json_type(json -> '$.entry')
                       WHEN 'ARRAY' THEN from_json(json -> '$.entry', '["JSON"]')
                       WHEN 'OBJECT' THEN [json -> '$.entry']
                       ELSE []::JSON[] END AS entries,
                   source_file, source_row
            FROM fhir_values WHERE problem IS NULL AND (json ->> '$.resourceType') = 'Bundle'
        )
        """
    )
    bad_cases = " ".join(f"WHEN {quote(k)} THEN {quote(v)}" for k, v in BAD_LINE.items())
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE fhir_unread AS
        SELECT problem, count(*) AS n FROM (
            SELECT problem FROM fhir_values WHERE problem IS NOT NULL
            UNION ALL
            SELECT CASE reason BAD_CASES ELSE '(line not read)' END
            FROM fhir_bad_lines WHERE table_name IS NULL
            UNION ALL
            SELECT CASE WHEN json_type(e) <> 'OBJECT' THEN '(Bundle entry not an object)'
                        WHEN (e -> '$.resource') IS NULL THEN '(Bundle entry without resource)'
                        WHEN json_type(e -> '$.resource') <> 'OBJECT'
                            THEN '(Bundle entry resource not an object)'
                        WHEN (e ->> '$.resource.resourceType') IS NULL THEN '(no resourceType)'
                   END
            FROM fhir_entries
        ) WHERE problem IS NOT NULL GROUP BY 1
        """.replace("BAD_CASES", bad_cases)
    )
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE fhir_resources AS
        -- rkey: the resource's id, else its place in its file (a POST entry may carry
        -- neither id nor fullUrl: it is still one resource, never a duplicate)
        SELECT json ->> '$.resourceType' AS rtype, json ->> '$.id' AS rid, json AS r,
               NULL::VARCHAR AS full_url, source_file, source_row,
               coalesce(json ->> '$.id', source_file || ':' || source_row) AS rkey
        FROM fhir_values WHERE problem IS NULL AND (json ->> '$.resourceType') <> 'Bundle'
        UNION ALL
        SELECT e ->> '$.resource.resourceType',
               coalesce(e ->> '$.resource.id', fhir_ref(e ->> '$.fullUrl')),
               e -> '$.resource', e ->> '$.fullUrl', source_file, source_row,
               coalesce(e ->> '$.resource.id', fhir_ref(e ->> '$.fullUrl'),
                        source_file || ':' || source_row || ':' || entry_no)
        FROM fhir_entries
        WHERE json_type(e) = 'OBJECT' AND json_type(e -> '$.resource') = 'OBJECT'
          AND (e ->> '$.resource.resourceType') IS NOT NULL
        """
    )
    if not con.execute("SELECT count(*) FROM fhir_resources WHERE rtype = 'Patient'").fetchall()[0][
        0
    ]:
        raise SourceError(f"{describe(src)} holds no Patient resources: nothing can be linked")
    # every way a resource may be referred to, mapped to its key
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE fhir_alias AS
        SELECT DISTINCT alias, rid FROM (
            SELECT rtype || '/' || rid AS alias, rid FROM fhir_resources WHERE rid IS NOT NULL
            UNION ALL
            SELECT full_url, rid FROM fhir_resources WHERE full_url IS NOT NULL
        )
        """
    )
    con.execute(
        """
        CREATE OR REPLACE TEMP MACRO fhir_key(x) AS (
            CASE WHEN starts_with(x, 'urn:uuid:')
                 THEN coalesce((SELECT rid FROM fhir_alias WHERE alias = x LIMIT 1), fhir_ref(x))
                 ELSE fhir_ref(x) END
        )
        """
    )
    _patients(con)
    identifying_values(con)
    _events(con)
    _organisations(con)
    return files


def _patients(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(
        f"""
        CREATE TEMP VIEW stage_patients AS
        WITH p AS (
            SELECT r, rid, source_file, source_row,
                   from_json(coalesce(r -> '$.identifier', '[]'), '["JSON"]') AS idents,
                   from_json(coalesce(r -> '$.extension', '[]'), '["JSON"]') AS exts
            FROM fhir_resources WHERE rtype = 'Patient'
        )
        SELECT rid AS source_patient_id,
               regexp_replace(
                   list_filter(idents, lambda i: i ->> '$.system' = '{NHS_NUMBER_SYSTEM}')[1]
                       ->> '$.value', '[\\s-]', '', 'g') AS nhs_number,
               hub_date(r ->> '$.birthDate') AS birth_date,
               NOT regexp_full_match(trim(r ->> '$.birthDate'), '[0-9]{{4}}')
                   AS birth_month_known,
               CASE r ->> '$.gender' WHEN 'male' THEN 'M' WHEN 'female' THEN 'F'
                    ELSE r ->> '$.gender' END AS sex,
               coalesce(
                   list_filter(exts, lambda e: ends_with(lower(e ->> '$.url'), 'ethniccategory'))[1]
                       ->> '$.valueCodeableConcept.text',
                   list_filter(
                       from_json(coalesce(list_filter(exts, lambda e: ends_with(lower(e ->> '$.url'), 'us-core-race'))[1]
                           -> '$.extension', '[]'), '["JSON"]'),
                       lambda e: e ->> '$.url' = 'text')[1] ->> '$.valueString'
               ) AS ethnicity,
               r ->> '$.address[0].district' AS local_authority,
               NULL::INTEGER AS imd_decile,
               CASE WHEN (r ->> '$.generalPractitioner[0].identifier.value') IS NOT NULL
                    THEN fhir_org_code(r ->> '$.generalPractitioner[0].identifier.system',
                                       r ->> '$.generalPractitioner[0].identifier.value', NULL)
               END AS practice_code,
               NULL::DATE AS registration_start, NULL::DATE AS registration_end,
               hub_date(r ->> '$.deceasedDateTime') AS death_date,
               json_object(
                   'identifier', r -> '$.identifier', 'name', r -> '$.name',
                   'telecom', r -> '$.telecom', 'address', r -> '$.address',
                   'contact', r -> '$.contact',
                   'birthDate', r ->> '$.birthDate',
                   'extension', [e FOR e IN exts IF fhir_identifying_extension(e ->> '$.url')]
               )::VARCHAR AS identifiers,
               CASE WHEN hub_bad_date(r ->> '$.birthDate') OR hub_bad_date(r ->> '$.deceasedDateTime')
                    THEN 'unparseable date' END AS bad_reason,
               source_file, source_row
        FROM p
        """
    )


def _coded(path: str) -> str:
    return (
        f"hub_code_system(r ->> '{path}.coding[0].system') AS code_system, "
        f"r ->> '{path}.coding[0].code' AS code, "
        f"coalesce(r ->> '{path}.coding[0].display', r ->> '{path}.text') AS description"
    )


def _careplan_coded() -> str:
    """A care plan's code: the SNOMED CT coding among its categories (US Core puts the
    generic 'assess-plan' category first), else the first category."""
    snomed = (
        "list_filter(from_json(coalesce(json_extract(r, '$.category[*].coding[*]'), '[]'), "
        "'[\"JSON\"]'), lambda c: c ->> '$.system' = 'http://snomed.info/sct')[1]"
    )
    first = "json_extract(r, '$.category[0].coding[0]')"
    return (
        f"hub_code_system(coalesce({snomed}, {first}) ->> '$.system') AS code_system, "
        f"coalesce({snomed}, {first}) ->> '$.code' AS code, "
        f"coalesce(coalesce({snomed}, {first}) ->> '$.display', r ->> '$.category[0].text') "
        "AS description"
    )


def _org_code(path: str, key: str = "fhir_key") -> str:
    """The organisation a reference names: by its identifier, by the identifier of the
    Organization in the resource's own ``contained[]`` that a local reference (``#org``)
    names, else by the referenced resource's keyed id."""
    contained = f"fhir_contained(r, r ->> '{path}.reference', 'Organization')"
    # the system and the value of one identifier: the reference's own, else a conditional
    # reference's (``Organization?identifier=SYSTEM|VALUE``, as Synthea writes
    # serviceProvider; the bar may be URL-encoded), else the contained Organization's (a
    # reference's system beside a contained local id published it)
    inline = f"r ->> '{path}.identifier.value' IS NOT NULL"
    ref = f"replace(replace(r ->> '{path}.reference', '%7C', '|'), '%7c', '|')"
    pattern = r"'^Organization\?identifier=(?:([^|]*)\|)?(.+)$'"
    conditional = f"regexp_matches({ref}, {pattern})"
    return (
        f"fhir_org_code(CASE WHEN {inline} THEN r ->> '{path}.identifier.system' "
        f"WHEN {conditional} THEN regexp_extract({ref}, {pattern}, 1) "
        f"ELSE {contained} ->> '$.identifier[0].system' END, "
        f"CASE WHEN {inline} THEN r ->> '{path}.identifier.value' "
        f"WHEN {conditional} THEN regexp_extract({ref}, {pattern}, 2) "
        f"ELSE {contained} ->> '$.identifier[0].value' END, "
        f"{key}(r ->> '{path}.reference'))"
    )


def _medication_coded() -> str:
    """A medication's code, inline, from the Medication it references in the export, or
    from the Medication in its own ``contained[]`` that a local reference (``#med``)
    names."""
    contained = (
        "fhir_contained(r, r ->> '$.medicationReference.reference', 'Medication') -> '$.code'"
    )
    cc = f"coalesce(r -> '$.medicationCodeableConcept', {contained}, med.med_code)"
    return (
        f"hub_code_system({cc} ->> '$.coding[0].system') AS code_system, "
        f"{cc} ->> '$.coding[0].code' AS code, "
        f"coalesce({cc} ->> '$.coding[0].display', {cc} ->> '$.text') AS description"
    )


def _events(con: duckdb.DuckDBPyConnection) -> None:
    # target table, resource types, patient path, body SQL, raw date paths
    specs: list[tuple[str, tuple[str, ...], str, str, tuple[str, ...]]] = [
        (
            "encounters", ("Encounter",), "$.subject.reference",
            "coalesce(r ->> '$.type[0].text', r ->> '$.class.code') AS encounter_type, "
            + _coded("$.type[0]") + ", "
            + _org_code("$.serviceProvider", "fhir_ref") + " AS organisation_code, "
            "hub_date(r ->> '$.period.start') AS start_date, "
            "hub_date(r ->> '$.period.end') AS end_date",
            ("$.period.start", "$.period.end"),
        ),
        (
            "conditions", ("Condition",), "$.subject.reference",
            "{enc}, " + _coded("$.code") + ", "
            "hub_date(coalesce(r ->> '$.onsetDateTime', r ->> '$.onsetPeriod.start', "
            "r ->> '$.recordedDate', r ->> '$.assertedDate')) AS onset_date, "
            "hub_date(coalesce(r ->> '$.abatementDateTime', r ->> '$.abatementPeriod.end')) "
            "AS end_date",
            ("$.onsetDateTime", "$.onsetPeriod.start", "$.recordedDate", "$.assertedDate",
             "$.abatementDateTime", "$.abatementPeriod.end"),
        ),
        (
            "observations", ("Observation",), "$.subject.reference",
            "{enc}, " + _coded("$.code") + ", "
            "try_cast(r ->> '$.valueQuantity.value' AS DOUBLE) AS value, "
            "coalesce(r ->> '$.valueCodeableConcept.coding[0].display', "
            "r ->> '$.valueCodeableConcept.text', r ->> '$.valueString') AS value_text, "
            # the UCUM code first: ``unit`` is a display text ("lbs", "kg (Mrs. Medhurst,
            # home scale)"), kept only when it has a unit's form (no spaces, short)
            "coalesce(r ->> '$.valueQuantity.code', CASE WHEN regexp_full_match("
            # (the template is formatted: its braces are doubled)
            r"r ->> '$.valueQuantity.unit', '[A-Za-z0-9%/.*^_{{}}\[\]()-]{{1,20}}') "
            "THEN r ->> '$.valueQuantity.unit' END) AS unit, "
            "hub_date(coalesce(r ->> '$.effectiveDateTime', r ->> '$.effectivePeriod.start', "
            "r ->> '$.issued')) AS observed_date",
            ("$.effectiveDateTime", "$.effectivePeriod.start", "$.issued"),
        ),
        (
            "medications", ("MedicationRequest", "MedicationStatement"), "$.subject.reference",
            "{enc}, " + _medication_coded() + ", "
            "hub_date(coalesce(r ->> '$.authoredOn', r ->> '$.effectiveDateTime', "
            "r ->> '$.effectivePeriod.start', r ->> '$.dispenseRequest.validityPeriod.start')) "
            "AS start_date, "
            "hub_date(coalesce(r ->> '$.effectivePeriod.end', "
            "r ->> '$.dispenseRequest.validityPeriod.end')) AS end_date",
            ("$.authoredOn", "$.effectiveDateTime", "$.effectivePeriod.start",
             "$.effectivePeriod.end"),
        ),
        (
            "procedures", ("Procedure",), "$.subject.reference",
            "{enc}, " + _coded("$.code") + ", "
            "hub_date(coalesce(r ->> '$.performedDateTime', r ->> '$.performedPeriod.start')) "
            "AS procedure_date",
            ("$.performedDateTime", "$.performedPeriod.start", "$.performedPeriod.end"),
        ),
        (
            "immunizations", ("Immunization",), "$.patient.reference",
            "{enc}, " + _coded("$.vaccineCode") + ", "
            # STU3 (Synthea's STU3 exporter) writes the date as ``date``
            "hub_date(coalesce(r ->> '$.occurrenceDateTime', r ->> '$.date')) "
            "AS immunization_date",
            ("$.occurrenceDateTime", "$.date"),
        ),
        (
            "allergies", ("AllergyIntolerance",), "$.patient.reference",
            "{enc}, " + _coded("$.code") + ", "
            "r ->> '$.category[0]' AS category, "
            "hub_date(coalesce(r ->> '$.onsetDateTime', r ->> '$.recordedDate', "
            "r ->> '$.assertedDate')) AS start_date, NULL::DATE AS end_date",
            ("$.onsetDateTime", "$.recordedDate", "$.assertedDate"),
        ),
        (
            "devices", ("Device",), "$.patient.reference",
            "NULL::BIGINT AS encounter_id, " + _coded("$.type") + ", "
            "NULL::DATE AS start_date, NULL::DATE AS end_date",
            (),
        ),
        (
            "care_plans", ("CarePlan",), "$.subject.reference",
            "{enc}, " + _careplan_coded() + ", "
            "coalesce(fhir_contained(r, r ->> '$.addresses[0].reference', 'Condition') "
            "->> '$.code.coding[0].code', reason.reason_code) AS reason_code, "
            "hub_date(r ->> '$.period.start') AS start_date, "
            "hub_date(r ->> '$.period.end') AS end_date",
            ("$.period.start", "$.period.end"),
        ),
    ]  # fmt: skip
    enc = "hub_id(fhir_key(r ->> '$.encounter.reference')) AS encounter_id"
    # an Observation's components (a blood pressure panel's systolic and diastolic) are
    # observations of their own: each its code and value, the panel's subject, encounter
    # and time (read as the panel alone, they were published as a panel without values)
    con.execute(
        """INSERT INTO fhir_resources
           SELECT 'Observation', NULL, json_merge_patch(o.r, json_object(
                      'id', NULL, 'component', NULL, 'code', c -> '$.code',
                      'valueQuantity', c -> '$.valueQuantity',
                      'valueCodeableConcept', c -> '$.valueCodeableConcept',
                      'valueString', c -> '$.valueString')),
                  NULL, o.source_file, o.source_row, o.rkey || '#component-' || c_no
           FROM (SELECT r, source_file, source_row, rkey,
                        from_json(r -> '$.component', '["JSON"]') AS cs
                 FROM fhir_resources
                 WHERE rtype = 'Observation' AND json_type(r -> '$.component') = 'ARRAY') o,
                unnest(cs) WITH ORDINALITY AS u(c, c_no)
           WHERE json_type(c) = 'OBJECT'"""
    )
    con.execute(
        """CREATE OR REPLACE TEMP TABLE fhir_medications AS
           SELECT DISTINCT ON (rid) rid AS med_rid, r -> '$.code' AS med_code FROM fhir_resources
           WHERE rtype = 'Medication' AND rid IS NOT NULL"""
    )
    # a care plan's reason is a reference to a Condition: published as that condition's
    # code (as Synthea's CSV REASONCODE), never as the reference (a source id)
    con.execute(
        """CREATE OR REPLACE TEMP TABLE fhir_condition_codes AS
           SELECT DISTINCT ON (rid) rid AS condition_rid,
                  r ->> '$.code.coding[0].code' AS reason_code
           FROM fhir_resources WHERE rtype = 'Condition' AND rid IS NOT NULL"""
    )
    joins = {
        "medications": "LEFT JOIN fhir_medications med "
        "ON med.med_rid = fhir_key(r ->> '$.medicationReference.reference')",
        "care_plans": "LEFT JOIN fhir_condition_codes reason "
        "ON reason.condition_rid = fhir_key(r ->> '$.addresses[0].reference')",
    }
    for target, types, patient, body, dates in specs:
        listed = ", ".join(f"'{t}'" for t in types)
        checks = " OR ".join(f"hub_bad_date(r ->> '{d}')" for d in dates) or "false"
        # a quantity that is not a number ("5,4" with a decimal comma) is quarantined,
        # as Synthea's are: read as NULL it was lost without a word
        numbers = (
            "(r ->> '$.valueQuantity.value') IS NOT NULL AND "
            "try_cast(r ->> '$.valueQuantity.value' AS DOUBLE) IS NULL"
            if target == "observations"
            else "false"
        )
        join = joins.get(target, "")
        con.execute(
            f"""
            CREATE TEMP VIEW stage_{target} AS
            SELECT hub_id(rkey) AS id, rid AS source_id,
                   fhir_key(r ->> '{patient}') AS source_patient_id,
                   {body.format(enc=enc)},
                   CASE WHEN {checks} THEN 'unparseable date'
                        WHEN {numbers} THEN 'unparseable number' END AS bad_reason,
                   source_file, source_row
            FROM fhir_resources {join} WHERE rtype IN ({listed})
            """
        )


def _organisations(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(
        """
        CREATE TEMP VIEW stage_organisations AS
        SELECT fhir_org_code(r ->> '$.identifier[0].system', r ->> '$.identifier[0].value', rid)
                   AS organisation_code,
               r ->> '$.name' AS name,
               coalesce(r ->> '$.type[0].text', r ->> '$.type[0].coding[0].display') AS kind,
               r ->> '$.address[0].city' AS local_authority
        FROM fhir_resources WHERE rtype = 'Organization'
        """
    )
    # staff and places name no patient; names, telecom and addresses stay out
    con.execute(
        f"""
        CREATE TEMP VIEW stage_unlinked_fhir_locations AS
        SELECT hub_id(rkey) AS location_id, r ->> '$.name' AS name, r ->> '$.status' AS status,
               {_org_code("$.managingOrganization")} AS organisation_code
        FROM fhir_resources WHERE rtype = 'Location'
        """
    )
    con.execute(
        """
        CREATE TEMP VIEW stage_unlinked_fhir_practitioners AS
        SELECT hub_id(rkey) AS practitioner_id, r ->> '$.gender' AS gender,
               try_cast(r ->> '$.active' AS BOOLEAN) AS active
        FROM fhir_resources WHERE rtype = 'Practitioner'
        """
    )
    con.execute(
        f"""
        CREATE TEMP VIEW stage_unlinked_fhir_practitioner_roles AS
        SELECT hub_id(rkey) AS practitioner_role_id,
               {_org_code("$.organization")} AS organisation_code,
               r ->> '$.specialty[0].coding[0].code' AS specialty_code,
               r ->> '$.specialty[0].coding[0].display' AS specialty
        FROM fhir_resources WHERE rtype = 'PractitionerRole'
        """
    )


def skipped(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Resources the warehouse has no table for, and values that are not resources.

    A resource is counted under its type only when that is a FHIR R4 resource type name:
    a ``resourceType`` is the export's text, and anything else is counted under one
    fixed label, never published.
    """
    listed = ", ".join(f"'{t}'" for t in (*LOADED_TYPES, "Medication"))
    known = ", ".join(f"'{t}'" for t in sorted(R4_RESOURCE_TYPES))
    rows = con.execute(
        f"""SELECT CASE WHEN rtype IN ({known}) THEN rtype ELSE $other END, count(*)
            FROM fhir_resources WHERE rtype NOT IN ({listed})
            GROUP BY 1 UNION ALL SELECT problem, n FROM fhir_unread""",
        {"other": NOT_A_RESOURCE_TYPE},
    ).fetchall()
    return {str(r[0]): int(r[1]) for r in sorted(rows)}


def identifying_values(con: duckdb.DuckDBPyConnection) -> None:
    """``stage_identifying_values``: patients' names, identifiers, telecom, addresses,
    coordinates (the address's geolocation extension), birth place and mother's maiden
    name (extensions whatever the case of their URL)."""
    # a name part FHIR holds as a list of strings, also when an exporter wrote one string
    con.execute(
        """CREATE OR REPLACE TEMP MACRO fhir_words(n, k) AS (
               CASE json_type(n -> ('$.' || k))
                    WHEN 'VARCHAR' THEN n ->> ('$.' || k)
                    ELSE array_to_string(json_extract_string(n, '$.' || k || '[*]'), ' ')
               END)"""
    )
    con.execute(
        r"""
        CREATE TEMP VIEW stage_identifying_values AS
        WITH p AS (SELECT r FROM fhir_resources WHERE rtype IN ('Patient', 'RelatedPerson')),
        names AS (SELECT unnest(CASE json_type(r -> '$.name') WHEN 'OBJECT' THEN [r -> '$.name']
                                ELSE from_json(coalesce(r -> '$.name', '[]'), '["JSON"]') END)
                             AS n
                  FROM p),
        -- the same fields whatever their shape: an exporter that writes one object where
        -- FHIR has a list (identifier: {...}), or a string where it has one (given: "Ann")
        -- (only the identifying fields are walked: json_tree's memory grows with the
        -- square of nesting depth, and an array nested 40,000 deep in an ignored meta.tag
        -- stopped a whole load)
        leaves AS (SELECT t.fullkey, t.value ->> '$' AS value
                   FROM p, json_tree(json_object(
                       'name', p.r -> '$.name', 'address', p.r -> '$.address',
                       'telecom', p.r -> '$.telecom', 'identifier', p.r -> '$.identifier'))
                       AS t WHERE t.type = 'VARCHAR'),
        exts AS (SELECT unnest(from_json(coalesce(r -> '$.extension', '[]'), '["JSON"]')) AS e
                 FROM p),
        places AS (SELECT e -> '$.valueAddress' AS a FROM exts
                   WHERE contains(lower(e ->> '$.url'), 'birthplace')),
        geo AS (SELECT unnest(json_extract(r, '$.address[*].extension[*]')) AS e FROM p),
        -- a patient's contacts (next of kin, carers): their names, phones and addresses
        contacts AS (SELECT unnest(from_json(coalesce(r -> '$.contact', '[]'), '["JSON"]'))
                            AS c FROM p),
        contact_names AS (SELECT json_extract(c, '$.name') AS n FROM contacts)
        SELECT 'name' AS meaning, unnest(json_extract_string(r, '$.name[*].given[*]')) AS value
        FROM p
        UNION ALL SELECT 'name', unnest(json_extract_string(r, '$.name[*].family')) FROM p
        UNION ALL SELECT 'name', unnest(json_extract_string(r, '$.name[*].text')) FROM p
        UNION ALL SELECT 'name', concat_ws(' ', fhir_words(n, 'given'), n ->> '$.family')
        FROM names
        UNION ALL SELECT 'name', concat_ws(' ', fhir_words(n, 'prefix'), fhir_words(n, 'given'),
                     n ->> '$.family') FROM names
        UNION ALL SELECT 'identifier', unnest(json_extract_string(r, '$.identifier[*].value'))
        FROM p
        UNION ALL SELECT 'telecom', unnest(json_extract_string(r, '$.telecom[*].value')) FROM p
        UNION ALL SELECT 'name', concat_ws(' ', fhir_words(n, 'given'), n ->> '$.family')
        FROM contact_names
        UNION ALL SELECT 'name', n ->> '$.text' FROM contact_names
        UNION ALL SELECT 'name', n ->> '$.family' FROM contact_names
        UNION ALL SELECT 'telecom', unnest(json_extract_string(c, '$.telecom[*].value'))
        FROM contacts
        UNION ALL SELECT 'address', unnest(json_extract_string(c, '$.address.line[*]'))
        FROM contacts
        UNION ALL SELECT 'address', unnest(json_extract_string(r, '$.address[*].line[*]'))
        FROM p
        UNION ALL SELECT 'address', unnest(json_extract_string(r, '$.address[*].text')) FROM p
        UNION ALL SELECT 'name', e ->> '$.valueString' FROM exts
        WHERE contains(lower(e ->> '$.url'), 'maiden')
        UNION ALL SELECT 'birthplace', concat_ws(' ', a ->> '$.city', a ->> '$.district',
                     a ->> '$.state', a ->> '$.country') FROM places
        UNION ALL SELECT 'birthplace', a ->> '$.text' FROM places
        UNION ALL SELECT 'coordinate', unnest(json_extract_string(e, '$.extension[*].valueDecimal'))
        FROM geo WHERE contains(lower(e ->> '$.url'), 'geolocation')
        UNION ALL SELECT CASE WHEN fullkey LIKE '$.name%' THEN 'name'
                              WHEN fullkey LIKE '$.address%' THEN 'address'
                              WHEN fullkey LIKE '$.telecom%' THEN 'telecom'
                              ELSE 'identifier' END, value
        FROM leaves WHERE regexp_full_match(fullkey,
            '\$\.(name(\[[0-9]+\])?\.(given|family|text)|identifier(\[[0-9]+\])?\.value'
            || '|telecom(\[[0-9]+\])?\.value|address(\[[0-9]+\])?\.(line|text))'
            || '(\[[0-9]+\])?')
        """
    )
