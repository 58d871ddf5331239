"""The one timestamp format of the hub's records.

Every stored time (audit entries, the ledger, people, projects, queries, outputs, models)
is UTC in ISO 8601 with milliseconds and a ``Z``: it sorts as text, which the audit
filters rely on, and says its zone.

>>> len(now()) == len("2026-01-31T14:30:00.000Z") and now().endswith("Z")
True
"""

from __future__ import annotations

import datetime as dt


def now() -> str:
    """UTC now, e.g. ``2026-01-31T14:30:00.123Z``."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
