"""The data dictionary of a release: tables and columns in words, units, and codes in use.

Words come from ``connectors/dictionary.py``. *Codes in use* are computed from the
release once, when it is first described, and cached beside the hub's other state: for
each coded table, every (coding system, code) recorded for **more than** the disclosure
threshold of distinct people, with its most common term (and, for observations, its most
common unit). No counts are published, and a code used by few people is not listed, so
the list says nothing about any one person. Building it reads the release, so it is
audited (``dictionary.build``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from connectors import dictionary as words
from governance.audit.events import AuditEvent
from governance.outputs.disclosure import REDACTION_THRESHOLD

if TYPE_CHECKING:
    from connectors import releases
    from governance.queries import QueryService

CODED_TABLES: Final = (
    "conditions",
    "observations",
    "medications",
    "procedures",
    "immunizations",
    "allergies",
    "devices",
    "care_plans",
    "encounters",
)


def _cache(service: QueryService, release: releases.Release) -> Path:
    return service.gov.home / "dictionary" / f"{release.id}.json"


def codes_in_use(service: QueryService, release: releases.Release) -> dict[str, list[Any]]:
    """Per coded table: the codes more than the threshold of people have, with terms."""
    path = _cache(service, release)
    if path.exists():
        cached: dict[str, list[Any]] = json.loads(path.read_text())
        return cached
    cur = service.engine(release).cursor()
    try:
        present = {
            r[0] for r in cur.execute("SELECT DISTINCT table_name FROM duckdb_columns()").fetchall()
        }
        found: dict[str, list[Any]] = {}
        for table in CODED_TABLES:
            if table not in present:
                continue
            unit = ", mode(unit) AS unit" if table == "observations" else ""
            rows = cur.execute(
                f"SELECT code_system, code, mode(description) AS term{unit} "  # noqa: S608
                f"FROM {table} WHERE code IS NOT NULL GROUP BY code_system, code "
                "HAVING count(DISTINCT person_id) > $k ORDER BY code_system, code",
                {"k": REDACTION_THRESHOLD},
            ).fetchall()
            keys = ("system", "code", "term", "unit")
            found[table] = [dict(zip(keys, row, strict=False)) for row in rows]
    finally:
        cur.close()
    service.gov.audit.record(
        AuditEvent(
            action="dictionary.build",
            actor="hub",
            release=release.id,
            row_count=sum(len(v) for v in found.values()),
            details={"threshold": REDACTION_THRESHOLD},
        )
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(found))
    os.replace(partial, path)
    return found


def annotate(
    tables: dict[str, list[dict[str, Any]]], codes: dict[str, list[Any]]
) -> dict[str, dict[str, Any]]:
    """The catalogue's tables with their words and codes in use."""
    out: dict[str, dict[str, Any]] = {}
    for table, columns in tables.items():
        described = [
            {**c, "description": words.column_description(table, c["name"])} for c in columns
        ]
        entry: dict[str, Any] = {
            "description": words.table_description(table),
            "columns": described,
        }
        if table in codes and any(c["name"] == "code" for c in columns):
            entry["codes_in_use"] = codes[table]
        out[table] = entry
    return out
