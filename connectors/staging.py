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
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
import stat
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


# file names that carry no personal data: exporters' fixed names and numbered parts
_SAFE_NAME = re.compile(
    r"[a-z_]+\.csv|[A-Z][A-Za-z]+(\.[0-9]+)?\.ndjson|part-[0-9]+\.(parquet|csv)"
    r"|[a-z_]+\.(parquet|csv)|[A-Za-z0-9_.-]{1,40}",
    re.IGNORECASE,
)
# ... unless they look like Synthea's "<Given><n>_<Family><n>_<uuid>.json"
_PERSONAL_NAME = re.compile(r".*[A-Za-z]+[0-9]+_.*|.*[0-9a-f]{8}-[0-9a-f]{4}-.*", re.IGNORECASE)


def describe(path: Path, label: str | None = None) -> str:
    """How a file is named in an error: its name, unless the name may be personal data.

    Synthea names each FHIR Bundle after its patient: such a file is named by its
    content hash (``sha256sum`` finds it) or, before it can be read, by its suffix.
    """
    name = path.name
    if _SAFE_NAME.fullmatch(name) and not _PERSONAL_NAME.fullmatch(name):
        return name
    if label:
        return f"the {path.suffix or 'extensionless'} file with sha256 {label}..."
    return f"a {path.suffix or 'extensionless'} file in {path.parent.name or 'the folder'}"


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
    with path.open("rb") as fh:
        raw = fh.readline(HEADER_LIMIT + 1)
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
        con.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE raw_part AS
            SELECT * EXCLUDE (ordinality), ordinality AS file_row_number,
                   {quote(label)} AS filename
            FROM read_csv({quote(str(path))}, auto_detect = false, header = true,
                          delim = ',', quote = '"', escape = '"', encoding = 'utf-8',
                          columns = {columns}, strict_mode = true, ignore_errors = true,
                          store_rejects = true, rejects_table = '{rej}',
                          rejects_scan = '{rej}_scan', max_line_size = 4194304)
                 WITH ORDINALITY
            """
        )
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


def _last_line(path: Path) -> int:
    """The number of the file's last line (1-based, counting the header)."""
    lines, last = 0, b""
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            lines += chunk.count(b"\n")
            last = chunk[-1:]
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
