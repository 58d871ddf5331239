"""What every source connector provides: the ``Source`` protocol.

A source reads one kind of export (the hub's own generator output, Synthea CSV, FHIR R4)
and defines TEMP staging views on a DuckDB connection (see ``connectors.build``): it
never writes a table itself. Each source maps an explicit allow-list of its fields to
the hub's schema and names its identifying fields by meaning, so that the identifier
scan (``connectors.quality.identifier_scan``) knows what must never be published.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import duckdb

from connectors.staging import SourceFiles


class Source(Protocol):
    """A connector module: ``SOURCE`` and ``VERSION`` name it in the manifest."""

    SOURCE: str
    VERSION: str

    def stage(self, con: duckdb.DuckDBPyConnection, src: Path) -> SourceFiles:
        """Define the ``stage_*`` TEMP views over ``src``; return the files read."""
        ...
