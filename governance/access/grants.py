"""What a project may be granted: tables and columns of the release, never an identifier.

Used when a researcher requests a project and when a steward approves one (API, CLI and
dashboard all call ``Projects.request``/``approve``, which call :func:`validate_grants`).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Final

from governance.errors import InvalidRequest

Grants = dict[str, list[str]]  # table -> columns

# columns that would identify a person: never in a research table and never grantable,
# whatever a request calls them (identifiers stay in the vault; tables hold pseudonyms)
IDENTIFIER_COLUMNS: Final = frozenset(
    {
        "nhs_number", "given_name", "family_name", "first_name", "last_name", "name",
        "full_name", "prefix", "suffix", "maiden", "date_of_birth", "birth_date", "birthdate",
        "dob", "postcode", "address", "street", "phone", "telephone", "telecom", "email",
        "ssn", "passport", "drivers", "licence", "mrn", "hospital_number",
    }
)  # fmt: skip

Schema = dict[str, frozenset[str]]  # a release's grantable tables -> columns


def _closest(name: str, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, sorted(options), n=3, cutoff=0.6)
    return ("; did you mean " + " or ".join(map(repr, close)) + "?") if close else ""


def validate_grants(grants: Grants, schema: Schema | None = None) -> Grants:
    """The grants, normalised; refused with the reason when they cannot be granted.

    Identifier columns are never granted; with the release's ``schema`` known, every
    table and column must exist in it (names are metadata, so the refusal names them).

    >>> validate_grants({"patients": ["sex", "sex", "imd_decile"]})
    {'patients': ['imd_decile', 'sex']}
    >>> validate_grants({"patients": ["nhs_number"]})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    governance.errors.InvalidRequest: identifier columns are never granted (patients: nhs_n...
    >>> validate_grants({"patient": ["sex"]}, {"patients": frozenset({"sex"})})
    Traceback (most recent call last):
    ...
    governance.errors.InvalidRequest: the release has no table 'patient'; did you mean 'patients'?
    """
    if not isinstance(grants, dict) or not grants:
        raise InvalidRequest("name at least one table and its columns")
    out = {}
    for table, columns in grants.items():
        if not isinstance(table, str) or not table.isidentifier():
            raise InvalidRequest(f"not a table name: {table!r}")
        if (
            not isinstance(columns, list)
            or not columns
            or not all(isinstance(c, str) and c.isidentifier() for c in columns)
        ):
            raise InvalidRequest(f"list the columns wanted from {table}")
        wanted = sorted({c.lower() for c in columns})
        identifiers = sorted(set(wanted) & IDENTIFIER_COLUMNS)
        if identifiers:
            raise InvalidRequest(
                f"identifier columns are never granted ({table}: {', '.join(identifiers)}): "
                "identifiers stay in the vault and research tables hold pseudonyms"
            )
        table = table.lower()
        if schema is not None:
            if table not in schema:
                raise InvalidRequest(f"the release has no table {table!r}{_closest(table, schema)}")
            for column in wanted:
                if column not in schema[table]:
                    raise InvalidRequest(
                        f"table {table} has no column {column!r}{_closest(column, schema[table])}"
                    )
        out[table] = wanted
    return out
