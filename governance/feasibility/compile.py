"""A feasibility spec → the two DP queries the hub runs for it (pure, no I/O).

The spec becomes plain SQL in the shape the DP query compiler
(``governance.privacy.dp_query``) accepts, so it goes through the same policy check,
plan, contribution bounding, OpenDP mechanism, ledger and audit as any DP query; no
other path to the data exists. Every criterion is a person-local semi-join
(``person_id IN (SELECT person_id FROM <events> WHERE <row-local>)``), an exclusion its
negation:

* **areas**: ``patients`` (one row per person) grouped by ``local_authority``: the
  people who meet the criteria, and those of them seen (any encounter) in the window;
  one person moves each vector by at most 1.
* **sites**: hospital ``encounters`` grouped by the trust (``organisation_code``, a
  declared domain of the region's acute trusts): the people who meet the criteria and
  were seen at that trust, ever and in the window. A person counts once per trust they
  attended, so one person moves each vector by at most the number of trusts
  (``SITE_ROWS_PER_PERSON``), which is the sensitivity the noise is scaled to.

The SQL is built by string formatting on purpose (S608 is off for this file): every piece is a
constant of this module, a date or number re-rendered from a checked value, or a code
that matched ``spec.CODE``; and the result is checked by the SQL policy and the DP
compiler like any researcher's SQL.

>>> import datetime as dt
>>> from governance.feasibility.spec import parse_spec
>>> spec = parse_spec({"population": {"sex": "F", "age": [40, 75]},
...     "include": [{"kind": "condition", "codes": ["44054006"]}]}, today=dt.date(2025, 1, 1))
>>> print(criteria_sql(spec, on_patients=True).replace(" AND ", "\\n"))
sex IN ('F')
make_date(year_of_birth, month_of_birth, 1) > DATE '1949-01-01'
make_date(year_of_birth, month_of_birth, 1) <= DATE '1985-01-01'
person_id IN (SELECT e.person_id FROM conditions e WHERE e.code IN ('44054006'))
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Final

from governance.feasibility.spec import Criterion, FeasibilitySpec
from governance.privacy import domains

AREA_KEY: Final = "local_authority"
SITE_KEY: Final = "organisation_code"
HOSPITAL_ENCOUNTERS: Final = ("ae", "inpatient", "outpatient")
# a person counts at most once per trust: k = G, so nothing is truncated
SITE_ROWS_PER_PERSON: Final = len(domains.DOMAINS["encounters"][SITE_KEY])
ELIGIBLE: Final = "eligible"
SEEN: Final = "seen_recently"


@dataclass(frozen=True)
class Compiled:
    """The SQL of the two DP queries and the bound each is compiled with."""

    areas_sql: str
    sites_sql: str
    sites_rows_per_person: int = SITE_ROWS_PER_PERSON


def compile_spec(spec: FeasibilitySpec) -> Compiled:
    seen_from = spec.as_of - dt.timedelta(days=spec.seen_within_days)
    window = f"start_date > {_date(seen_from)} AND start_date <= {_date(spec.as_of)}"
    seen_any = (
        "person_id IN (SELECT v.person_id FROM encounters v WHERE "
        f"v.start_date > {_date(seen_from)} AND v.start_date <= {_date(spec.as_of)})"
    )
    areas = (
        f"SELECT {AREA_KEY}, count(*) AS {ELIGIBLE}, "
        f"count(*) FILTER (WHERE {seen_any}) AS {SEEN} "
        f"FROM patients WHERE {criteria_sql(spec, on_patients=True)} GROUP BY {AREA_KEY}"
    )
    hospital = ", ".join(f"'{t}'" for t in HOSPITAL_ENCOUNTERS)
    sites = (
        f"SELECT {SITE_KEY}, count(DISTINCT person_id) AS {ELIGIBLE}, "
        f"count(DISTINCT person_id) FILTER (WHERE {window}) AS {SEEN} "
        f"FROM encounters WHERE encounter_type IN ({hospital}) AND "
        f"{criteria_sql(spec, on_patients=False)} GROUP BY {SITE_KEY}"
    )
    return Compiled(areas, sites)


def criteria_sql(spec: FeasibilitySpec, *, on_patients: bool) -> str:
    """The spec's criteria as one row-local predicate of a person-level or event source."""
    # columns inside a semi-join are qualified by its own alias: the SQL policy then
    # knows which table each one reads
    p = "" if on_patients else "p."
    person: list[str] = []
    if spec.sexes:
        person.append(f"{p}sex IN (" + ", ".join(f"'{s}'" for s in spec.sexes) + ")")
    if spec.age is not None:
        youngest, oldest = spec.age
        # born after as_of - (oldest + 1) years and no later than as_of - youngest years
        born = f"make_date({p}year_of_birth, {p}month_of_birth, 1)"
        person.append(f"{born} > {_date(_years_before(spec.as_of, oldest + 1))}")
        person.append(f"{born} <= {_date(_years_before(spec.as_of, youngest))}")
    parts: list[str] = []
    if person:
        joined = " AND ".join(person)
        parts.append(
            joined
            if on_patients
            else f"person_id IN (SELECT p.person_id FROM patients p WHERE {joined})"
        )
    parts += [_semijoin(c) for c in spec.include]
    parts += [f"NOT ({_semijoin(c)})" for c in spec.exclude]
    return " AND ".join(parts) if parts else "TRUE"


def _semijoin(c: Criterion) -> str:
    where = ["e.code IN (" + ", ".join(f"'{code}'" for code in c.codes) + ")"]
    if c.since is not None:
        where.append(f"e.{c.date_column} >= {_date(c.since)}")
    if c.until is not None:
        where.append(f"e.{c.date_column} <= {_date(c.until)}")
    if c.low is not None:
        where.append(f"e.value >= {c.low!r}")
    if c.high is not None:
        where.append(f"e.value <= {c.high!r}")
    return f"person_id IN (SELECT e.person_id FROM {c.table} e WHERE {' AND '.join(where)})"


def _date(day: dt.date) -> str:
    return f"DATE '{day.isoformat()}'"


def _years_before(day: dt.date, years: int) -> dt.date:
    """The same day ``years`` earlier (29 February → 28 February).

    >>> _years_before(dt.date(2024, 2, 29), 1)
    datetime.date(2023, 2, 28)
    """
    year = day.year - years
    try:
        return day.replace(year=year)
    except ValueError:
        return day.replace(year=year, day=28)


def grants_needed(spec: FeasibilitySpec) -> dict[str, list[str]]:
    """The tables and columns a project needs granted to answer ``spec``."""
    needed = {t: list(FEASIBILITY_GRANTS[t]) for t in ("patients", "encounters")}
    for c in (*spec.include, *spec.exclude):
        needed[c.table] = list(FEASIBILITY_GRANTS[c.table])
    return needed


def missing_grants(spec: FeasibilitySpec, granted: dict[str, list[str]]) -> dict[str, list[str]]:
    """What ``spec`` needs that ``granted`` lacks (empty when the project can answer it).

    >>> import datetime as dt
    >>> from governance.feasibility.spec import parse_spec
    >>> spec = parse_spec({"population": {"sex": "F"}}, today=dt.date(2025, 1, 1))
    >>> missing_grants(spec, {"patients": ["person_id", "sex"]})["encounters"][:2]
    ['person_id', 'encounter_type']
    """
    out = {}
    for table, columns in grants_needed(spec).items():
        lacking = [c for c in columns if c not in granted.get(table, [])]
        if lacking:
            out[table] = lacking
    return out


# every column any spec may need: what a feasibility project asks for (the SQL policy
# refuses a column named anywhere in a query unless it is granted in every table read
# that has it, so encounters.code comes with the other tables' code)
FEASIBILITY_GRANTS: Final = {
    "patients": ["person_id", "sex", "year_of_birth", "month_of_birth", AREA_KEY],
    "encounters": ["person_id", "encounter_type", SITE_KEY, "start_date", "code"],
    "conditions": ["person_id", "code", "onset_date"],
    "medications": ["person_id", "code", "start_date"],
    "observations": ["person_id", "code", "value", "observed_date"],
}
