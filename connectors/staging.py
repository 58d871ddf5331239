"""Reading source files into DuckDB without Python row loops.

Every relation carries ``filename`` and ``file_row_number`` (1-based data row within
its file), so a quarantined row can be found in its source without copying its content.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class SourceFiles:
    kind: str = ""
    tables: dict[str, list[Path]] = field(default_factory=dict)

    def all_files(self) -> list[Path]:
        return sorted({p for paths in self.tables.values() for p in paths})


def quote(value: str) -> str:
    """A SQL string literal (file paths come from the operator, not from users)."""
    return "'" + value.replace("'", "''") + "'"


def relation_sql(files: list[Path], kind: str) -> str:
    if kind == "parquet":
        listed = ", ".join(quote(str(p)) for p in files)
        return (
            f"(SELECT * EXCLUDE (file_row_number), file_row_number + 1 AS file_row_number "
            f"FROM read_parquet([{listed}], filename = true, file_row_number = true))"
        )
    if kind == "csv":
        parts = [
            f"SELECT * EXCLUDE (ordinality), ordinality AS file_row_number "
            f"FROM read_csv({quote(str(p))}, all_varchar = true, header = true, "
            f"filename = true, strict_mode = false, null_padding = true, quote = '\"', "
            f"escape = '\"') WITH ORDINALITY"
            for p in files
        ]
        return "(" + " UNION ALL BY NAME ".join(parts) + ")"
    if kind == "json":
        parts = [
            f"SELECT json, filename, ordinality AS file_row_number "
            f"FROM read_json_objects({quote(str(p))}, filename = true, "
            f"format = 'auto') WITH ORDINALITY"
            for p in files
        ]
        return "(" + " UNION ALL ".join(parts) + ")"
    raise ValueError(f"unknown source kind {kind!r}")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
