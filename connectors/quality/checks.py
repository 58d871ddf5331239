"""The check catalogue, modelled on the OHDSI Data Quality Dashboard.

Each check has a Kahn category (conformance, completeness, plausibility), a level
(table, field, concept), a severity (``error`` blocks publication, ``warning`` is
recorded) and a DQD-style threshold: it fails when the share of violating rows exceeds
the threshold (GX ``mostly = 1 - threshold``).

Checks run on *domains*: SQL queries over the release that return one row per checked
record with a ``row_key`` (an event id or a pseudonymous ``person_id``, never an
identifier) and the columns an expectation reads. Several checks share one domain, so
Great Expectations bundles their metrics into a single scan. Checks on counts (the
quarantine's share of each table, row-count drift) read the one-row ``counts`` domain,
a column per count.

The catalogue is built from what the release holds (tables, code systems present), the
connector's row accounting (quarantine shares) and, for drift, the previous release.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import duckdb

from connectors.quality import reference as ref

Category = Literal["conformance", "completeness", "plausibility"]
Level = Literal["table", "field", "concept"]
Severity = Literal["error", "warning"]
Kind = Literal["not_null", "flag", "between", "regex", "unique", "row_count", "mean"]

# tables with a primary key, a main date and possibly an end date
EVENTS: Final = {
    "encounters": ("encounter_id", "start_date", "end_date"),
    "conditions": ("condition_id", "onset_date", "end_date"),
    "observations": ("observation_id", "observed_date", None),
    "medications": ("medication_id", "start_date", "end_date"),
    "procedures": ("procedure_id", "procedure_date", None),
    "immunizations": ("immunization_id", "immunization_date", None),
    "allergies": ("allergy_id", "start_date", "end_date"),
    "devices": ("device_id", "start_date", "end_date"),
    "care_plans": ("care_plan_id", "start_date", "end_date"),
}
CODED: Final = tuple(t for t in EVENTS if t != "encounters")


@dataclass(frozen=True)
class Check:
    id: str
    domain: str
    category: Category
    level: Level
    severity: Severity
    kind: Kind
    column: str | None
    description: str
    threshold: float = 0.0
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class Catalogue:
    domains: dict[str, str]
    checks: list[Check]


def _q(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _tables(con: duckdb.DuckDBPyConnection) -> set[str]:
    return {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}


def _count(con: duckdb.DuckDBPyConnection, table: str) -> int:
    return int(con.execute(f'SELECT count(*) FROM "{table}"').fetchall()[0][0])


def build_catalogue(
    con: duckdb.DuckDBPyConnection,
    *,
    manifest: dict[str, Any],
    previous: dict[str, Any] | None = None,
) -> Catalogue:
    """Checks for the release open on ``con`` (read-only).

    ``previous`` holds the previous release's row counts and prevalences (see
    ``drift_baseline``) when there is one from the same kind of source.
    """
    tables = _tables(con)
    domains: dict[str, str] = {}
    checks: list[Check] = []
    this_year = dt.date.today().year

    # --- people -------------------------------------------------------------------
    domains["patients"] = f"""
        SELECT p.person_id AS row_key, p.year_of_birth, p.month_of_birth, p.sex,
               p.ethnicity, p.local_authority,
               coalesce(p.death_date IS NULL OR p.year_of_birth IS NULL
                        OR (year(p.death_date) - p.year_of_birth) <= {ref.MAX_AGE_YEARS + 1},
                        true)
                   AS age_at_death_plausible,
               coalesce(p.death_date >= make_date(p.year_of_birth, coalesce(p.month_of_birth, 1), 1),
                        true) AS death_after_birth,
               coalesce(p.registration_end >= p.registration_start, true) AS registration_ordered,
               EXISTS (SELECT 1 FROM encounters e WHERE e.person_id = p.person_id) AS has_encounter
        FROM patients p"""
    checks += [
        Check("conformance.patients.person_id.unique", "patients", "conformance", "field",
              "error", "unique", "row_key", "Every person appears once (primary key)."),
        Check("completeness.patients.year_of_birth", "patients", "completeness", "field",
              "error", "not_null", "year_of_birth", "Year of birth is recorded.", 0.001),
        Check("completeness.patients.sex", "patients", "completeness", "field", "warning",
              "not_null", "sex", "Sex is recorded.", 0.01),
        *_core_person_checks(manifest),
        Check("plausibility.patients.year_of_birth.range", "patients", "plausibility", "field",
              "error", "between", "year_of_birth",
              f"Year of birth between {ref.EARLIEST_BIRTH_YEAR} and {this_year}.", 0.0,
              {"min_value": ref.EARLIEST_BIRTH_YEAR, "max_value": this_year}),
        Check("plausibility.patients.age_at_death", "patients", "plausibility", "field",
              "error", "flag", "age_at_death_plausible",
              f"Age at death at most {ref.MAX_AGE_YEARS} years.", 0.0),
        Check("plausibility.patients.death_after_birth", "patients", "plausibility", "field",
              "error", "flag", "death_after_birth", "Death is not before birth.", 0.0),
        Check("plausibility.patients.registration_ordered", "patients", "plausibility",
              "field", "error", "flag", "registration_ordered",
              "Registration ends after it starts.", 0.0),
        Check("completeness.patients.has_encounter", "patients", "completeness", "table",
              "warning", "flag", "has_encounter",
              "Share of persons with at least one encounter (DQD measurePersonCompleteness).",
              0.05),
    ]  # fmt: skip

    # --- events ---------------------------------------------------------------------
    for table, (key, date, end) in EVENTS.items():
        if table not in tables or _count(con, table) == 0:
            continue
        coded = table in CODED
        # the encounters this table names, found by scanning encounter ids against this
        # table's (small) set: testing every row against all encounters would build a
        # hash table of every encounter id for each coded table (1 s per table at 1M)
        encounter_fk = (
            "(t.encounter_id IS NULL OR t.encounter_id IN (SELECT encounter_id FROM encounters "
            f"WHERE encounter_id IN (SELECT encounter_id FROM {table})))"
            if coded
            else "true"
        )
        registration = (
            f"coalesce(p.registration_start IS NULL OR t.{date} IS NULL OR t.{date} BETWEEN "
            f"p.registration_start AND coalesce(p.registration_end, p.death_date, t.{date}), true)"
            if table == "encounters"
            else "true"
        )
        sex_rule = _sex_rule() if table == "conditions" else "true"
        domains[table] = f"""
            SELECT t.{key} AS row_key, t.{date} IS NOT NULL AS has_date,
                   p.person_id IS NOT NULL AS person_exists,
                   {encounter_fk} AS encounter_exists,
                   coalesce(p.year_of_birth IS NULL OR t.{date} >=
                            make_date(p.year_of_birth, coalesce(p.month_of_birth, 1), 1), true)
                       AS not_before_birth,
                   coalesce(t.{date} <= p.death_date, true) AS not_after_death,
                   {f"coalesce(t.{end} >= t.{date}, true)" if end else "true"} AS start_before_end,
                   {registration} AS within_registration,
                   {sex_rule} AS sex_consistent
            FROM {table} t LEFT JOIN patients p USING (person_id)"""
        checks += [
            Check(f"conformance.{table}.person_exists", table, "conformance", "field", "error",
                  "flag", "person_exists", "Every event's person exists (foreign key).", 0.0),
            *([] if date in _unguaranteed(manifest, table) else [
                Check(f"completeness.{table}.{date}", table, "completeness", "field", "error",
                      "flag", "has_date", f"The event date ({date}) is recorded.", 0.001)]),
            Check(f"plausibility.{table}.not_before_birth", table, "plausibility", "field",
                  "error", "flag", "not_before_birth",
                  "No event before the person's birth (month precision: research tables hold "
                  "year and month of birth).", 0.001),
            Check(f"plausibility.{table}.not_after_death", table, "plausibility", "field",
                  "error", "flag", "not_after_death",
                  "No event after the person's death (DQD's 1% threshold leaves room for "
                  "administrative records such as a death certification days later).", 0.01),
        ]  # fmt: skip
        if coded:
            checks += [
                Check(f"conformance.{table}.encounter_exists", table, "conformance", "field",
                      "warning", "flag", "encounter_exists",
                      "The event's encounter exists (foreign key). Truncated exports leave "
                      "some references dangling.", 0.01),
            ]  # fmt: skip
            checks += _code_format_checks(con, table, key, domains)
        if end:
            checks.append(
                Check(f"plausibility.{table}.start_before_end", table, "plausibility", "field",
                      "error", "flag", "start_before_end", "Nothing ends before it starts.",
                      0.001)
            )  # fmt: skip
        if table == "encounters":
            checks.append(
                Check("completeness.encounters.within_registration", table, "completeness",
                      "table", "warning", "flag", "within_registration",
                      "Encounters fall inside the person's registration (observation period "
                      "coverage).", 0.01)
            )  # fmt: skip
        if table == "conditions":
            checks.append(
                Check("plausibility.conditions.sex_specific", table, "plausibility", "concept",
                      "error", "flag", "sex_consistent",
                      "Sex-specific conditions (pregnancy, prostate) match the recorded sex.",
                      0.001)
            )  # fmt: skip

    if "observations" in tables and _count(con, "observations"):
        checks += _measure_checks(domains)
    checks += _quarantine_checks(domains, manifest)
    if previous:
        checks += _drift_checks(con, domains, previous, tables)
    return Catalogue(domains=domains, checks=checks)


# the person table's core fields: a load that leaves one empty for most people is broken
# (a row cut short, a column misread), unless the source does not carry the field
CORE_PERSON_FIELDS: Final = ("year_of_birth", "month_of_birth", "sex", "ethnicity",
                             "local_authority")  # fmt: skip
CORE_MISSING_LIMIT: Final = 0.5


def _unguaranteed(manifest: dict[str, Any], table: str) -> set[str]:
    fields = manifest.get("connector", {}).get("unguaranteed_fields", {})
    return set(fields.get(table, []))


def _core_person_checks(manifest: dict[str, Any]) -> list[Check]:
    skip = _unguaranteed(manifest, "patients")
    return [
        Check(f"completeness.patients.{f}.core", "patients", "completeness", "field", "error",
              "not_null", f, f"{f} is recorded for most people (a core field the source "
              f"carries; more than {CORE_MISSING_LIMIT:.0%} empty means a broken load).",
              CORE_MISSING_LIMIT)
        for f in CORE_PERSON_FIELDS if f not in skip
    ]  # fmt: skip


def _sex_rule() -> str:
    female = " OR ".join(
        f"(t.code_system = {_q(s)} AND t.code = {_q(c)})" for s, c in sorted(ref.FEMALE_ONLY)
    )
    male = " OR ".join(
        f"(t.code_system = {_q(s)} AND t.code = {_q(c)})" for s, c in sorted(ref.MALE_ONLY)
    )
    pregnancy_icd = (
        f"(t.code_system LIKE 'ICD-10%' AND starts_with(t.code, '{ref.FEMALE_ONLY_ICD10_PREFIX}'))"
    )
    return (
        f"NOT coalesce((p.sex = 'M' AND ({female} OR {pregnancy_icd})) "
        f"OR (p.sex = 'F' AND ({male})), false)"
    )


def _code_format_checks(
    con: duckdb.DuckDBPyConnection, table: str, key: str, domains: dict[str, str]
) -> list[Check]:
    """Completeness and format of codes, one domain per table (one scan for all)."""
    systems = sorted(
        r[0]
        for r in con.execute(
            f"SELECT DISTINCT code_system FROM {table} WHERE code_system IS NOT NULL"
        ).fetchall()
        if r[0] in ref.CODE_FORMATS
    )
    flags = "".join(
        f", (code_system IS DISTINCT FROM {_q(system)} OR code IS NULL "
        f"OR regexp_full_match(code, {_q(ref.CODE_FORMATS[system])})) AS format_{i}"
        for i, system in enumerate(systems)
    )
    domains[f"{table}__codes"] = (
        f"SELECT {key} AS row_key, code IS NOT NULL AS has_code, code_system{flags} FROM {table}"
    )
    out = [
        Check(f"completeness.{table}.code", f"{table}__codes", "completeness", "field",
              "error", "flag", "has_code", "The event is coded.", 0.001),
        Check(f"completeness.{table}.code_system", f"{table}__codes", "completeness", "field",
              "error", "not_null", "code_system", "The code's system is recorded.", 0.001),
        Check(f"conformance.{table}.code_system_known", f"{table}__codes", "conformance",
              "field", "warning", "regex", "code_system",
              "The code system is one the hub knows (SNOMED CT, ICD-10, LOINC, RxNorm, CVX, "
              "BNF, dm+d). Synthea's own summary scores (QALY, DALY, QOLS) carry the system "
              "'Synthea' and are expected here.", 0.01,
              {"regex": "^(" + "|".join(s.replace("+", r"\+") for s in ref.CODE_FORMATS) + ")$"}),
    ]  # fmt: skip
    for i, system in enumerate(systems):
        out.append(
            Check(f"conformance.{table}.code_format.{system}", f"{table}__codes", "conformance",
                  "concept", "error", "flag", f"format_{i}",
                  f"{system} codes have a valid {system} format "
                  f"(pattern {ref.CODE_FORMATS[system]}).", 0.001)
        )  # fmt: skip
    return out


def _measure_checks(domains: dict[str, str]) -> list[Check]:
    values = ", ".join(
        f"({_q(m.code_system)}, {_q(m.code)}, {_q(m.unit)}, {m.low}, {m.high})"
        for m in ref.MEASURES
    )
    code_ranges = ", ".join(
        f"({_q(m.code_system)}, {_q(m.code)}, {m.low}, {m.high})" for m in ref.MEASURES
    )
    unit_ranges = ", ".join(f"({_q(u)}, {lo}, {hi})" for u, (lo, hi) in ref.UNIT_RANGES.items())
    low, high = ref.ANY_UNIT_RANGE
    domains["observation_values"] = f"""
        WITH by_code(code_system, code, low, high) AS (VALUES {code_ranges}),
             by_unit(unit, low, high) AS (VALUES {unit_ranges})
        SELECT o.observation_id AS row_key,
               isfinite(o.value) AND o.value BETWEEN coalesce(c.low, u.low, {low})
                                              AND coalesce(c.high, u.high, {high})
                   AS value_possible
        FROM observations o LEFT JOIN by_code c USING (code_system, code)
        LEFT JOIN by_unit u ON u.unit = o.unit
        WHERE o.value IS NOT NULL"""
    domains["measurements"] = f"""
        WITH reference(code_system, code, unit, low, high) AS (VALUES {values})
        SELECT o.observation_id AS row_key, o.value,
               coalesce(o.unit = r.unit, false) AS unit_valid,
               coalesce(o.value BETWEEN r.low AND r.high, o.value IS NULL) AS value_in_range
        FROM observations o JOIN reference r USING (code_system, code)"""
    return [
        Check("conformance.observations.unit_valid", "measurements", "conformance", "concept",
              "error", "flag", "unit_valid",
              "Each measured code carries its one valid unit (e.g. HbA1c in mmol/mol).", 0.001),
        Check("plausibility.observations.value_in_range", "measurements", "plausibility",
              "concept", "error", "flag", "value_in_range",
              "Measured values lie within possible clinical ranges for their code and unit.",
              0.001),
        Check("completeness.observations.value", "measurements", "completeness", "field",
              "warning", "not_null", "value", "Measured codes carry a value.", 0.01),
        Check("plausibility.observations.value_possible", "observation_values",
              "plausibility", "concept", "error", "flag", "value_possible",
              "Every numeric value is finite and possible: within its code's range, else its "
              "unit's (a 5,000 cm length is impossible), else a bound no record reaches.",
              0.0),
    ]  # fmt: skip


COUNTS: Final = "counts"  # one-row domain: a column per counted thing (quarantine, drift)


def _counts_domain(domains: dict[str, str], column: str, sql: str) -> str:
    """Add a count (``sql``, a scalar query) to the one-row ``counts`` domain.

    Every quarantine share and row-count drift check reads this one row: one domain, so
    GX validates them in one pass, and counting a table is a lookup, not a scan.
    """
    columns = domains.get(COUNTS, "SELECT 'release' AS row_key").split(", ", 1)
    listed = [columns[1]] if len(columns) > 1 else []
    domains[COUNTS] = ", ".join([columns[0], *listed, f"({sql}) AS {_ident(column)}"])
    return column


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _quarantine_checks(domains: dict[str, str], manifest: dict[str, Any]) -> list[Check]:
    out = []
    for table, counts in sorted(manifest.get("tables", {}).items()):
        rows_in = int(counts.get("rows_in", 0))
        if rows_in == 0:
            continue
        where = f"FROM _quarantine WHERE table_name = {_q(table)}"
        column = _counts_domain(domains, f"quarantined_{table}", f"SELECT count(*) {where}")
        # a quarantined row is named by its file's label and its row, never its source id
        # (an export's record id is a patient-level value; the report reaches stewards)
        rows = (
            f"SELECT source_file || ':' || source_row AS row_key, "
            f"coalesce(source_id, source_file || ':' || source_row) AS source_key {where}"
        )
        out.append(
            Check(f"conformance.{table}.quarantine", COUNTS, "conformance", "table", "error",
                  "row_count", column,
                  "Rows the connector could not admit (unparseable, unknown person, duplicate "
                  "key) stay under 1% of the table.", 0.01, {"rows_in": rows_in, "rows": rows})
        )  # fmt: skip
        if table == "patients":
            where = f"{where} AND reason = 'invalid NHS number'"
            column = _counts_domain(domains, "invalid_nhs_numbers", f"SELECT count(*) {where}")
            out.append(
                Check("conformance.patients.nhs_number_check_digit", COUNTS,
                      "conformance", "field", "error", "row_count", column,
                      "NHS numbers pass the Modulus-11 check (checked on the staging side; "
                      "failures are quarantined).", 0.001,
                      {"rows_in": rows_in,
                       "rows": f"SELECT source_file || ':' || source_row AS row_key {where}"})
            )  # fmt: skip
    return out


def drift_baseline(con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    """Row counts and the prevalence of the commonest condition codes, for the next release."""
    tables = _tables(con)
    counts = {t: _count(con, t) for t in ("patients", *EVENTS) if t in tables}
    people = max(counts.get("patients", 0), 1)
    prevalence = {}
    if "conditions" in tables:
        for code_system, code, persons in con.execute(
            """SELECT code_system, code, count(DISTINCT person_id) FROM conditions
               WHERE code IS NOT NULL GROUP BY ALL ORDER BY 3 DESC, 2 LIMIT 5"""
        ).fetchall():
            prevalence[f"{code_system}|{code}"] = persons / people
    return {"row_counts": counts, "prevalence": prevalence}


DRIFT_TOLERANCE: Final = 0.25  # relative change that counts as drift


def _drift_checks(
    con: duckdb.DuckDBPyConnection,
    domains: dict[str, str],
    previous: dict[str, Any],
    tables: set[str],
) -> list[Check]:
    out = []
    for table, before in previous.get("row_counts", {}).items():
        if table not in tables or before == 0:
            continue
        column = _counts_domain(domains, f"rows_{table}", f"SELECT count(*) FROM {table}")
        out.append(
            Check(f"plausibility.{table}.row_count_drift", COUNTS, "plausibility",
                  "table", "warning", "row_count", column,
                  f"Row count within ±{DRIFT_TOLERANCE:.0%} of the previous release ({before:,}).",
                  0.0, {"min_value": int(before * (1 - DRIFT_TOLERANCE)),
                        "max_value": int(before * (1 + DRIFT_TOLERANCE)) + 1})
        )  # fmt: skip
    prevalence = previous.get("prevalence", {})
    if prevalence and "conditions" in tables:
        columns = []
        for i, key in enumerate(sorted(prevalence)):
            system, code = key.split("|", 1)
            columns.append(
                f"coalesce(max(c.code_system = {_q(system)} AND c.code = {_q(code)}), false)::INT "
                f"AS has_{i}"
            )
        domains["drift__prevalence"] = (
            f"SELECT p.person_id AS row_key, {', '.join(columns)} FROM patients p "
            "LEFT JOIN conditions c USING (person_id) GROUP BY p.person_id"
        )
        for i, key in enumerate(sorted(prevalence)):
            before = prevalence[key]
            out.append(
                Check(f"plausibility.conditions.prevalence_drift.{key}", "drift__prevalence",
                      "plausibility", "concept", "warning", "mean", f"has_{i}",
                      f"Prevalence of {key} within ±{DRIFT_TOLERANCE:.0%} of the previous "
                      f"release ({before:.2%}).", 0.0,
                      {"min_value": before * (1 - DRIFT_TOLERANCE),
                       "max_value": before * (1 + DRIFT_TOLERANCE)})
            )  # fmt: skip
    return out
