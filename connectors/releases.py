"""The release catalogue: immutable, numbered DuckDB files and a pointer to the current one.

Layout under ``$HUB_HOME/releases/``::

    release-0001.duckdb   read-only once published
    release-0001.json     its manifest
    CURRENT               the current release id (replaced atomically)
    .lock                 held by the one ingestion that may run at a time
    .staging-*            work in progress; never current; removed by the next ingestion

Publishing renames a finished staging file to its release name and then replaces
``CURRENT`` with ``os.replace`` after an fsync, so a crash at any point leaves either the
old release current or the new one, complete; never a half-written current release.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from connectors.errors import ReleaseError

_NAME = re.compile(r"release-(\d{4,})\.duckdb")


@dataclass(frozen=True)
class Release:
    id: str
    number: int
    path: Path
    manifest: dict[str, Any]
    current: bool


def releases_dir(home: Path) -> Path:
    return home / "releases"


def vault_dir(home: Path) -> Path:
    return home / "vault"


def release_id(number: int) -> str:
    return f"release-{number:04d}"


def current_id(home: Path) -> str | None:
    pointer = releases_dir(home) / "CURRENT"
    if not pointer.exists():
        return None
    value = pointer.read_text().strip()
    return value or None


def list_releases(home: Path) -> list[Release]:
    folder = releases_dir(home)
    if not folder.is_dir():
        return []
    current = current_id(home)
    out = []
    for path in sorted(folder.glob("release-*.duckdb")):
        match = _NAME.fullmatch(path.name)
        if not match:
            continue
        rid = path.stem
        manifest_path = path.with_suffix(".json")
        manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
        out.append(Release(rid, int(match.group(1)), path, manifest, rid == current))
    return out


# published releases already read, per file: (inode, mtime) of the release file -> its
# manifest; a published file is never rewritten (publish moves a new file in), so a
# changed inode or mtime can only be a different file and is read afresh
_PUBLISHED: dict[Path, tuple[tuple[int, int], int, dict[str, Any]]] = {}
_PUBLISHED_MAX = 256
_published_lock = threading.Lock()


def get_release(home: Path, rid: str | None = None) -> Release:
    """A release by id, or the current one.

    Reads the ``CURRENT`` pointer (so a release published by another process is seen at
    once) and only the wanted release's own files; its manifest is read once per process.
    """
    current = current_id(home)
    wanted = rid or current
    if wanted is None:
        raise ReleaseError("no release has been published yet: run `hub ingest` first")
    match = _NAME.fullmatch(f"{wanted}.duckdb") if isinstance(wanted, str) else None
    if match is None:
        raise ReleaseError(f"unknown release {wanted!r}")
    path = releases_dir(home) / f"{wanted}.duckdb"
    try:
        st = path.stat()
    except OSError:
        raise ReleaseError(f"unknown release {wanted!r}") from None
    stamp = (st.st_ino, st.st_mtime_ns)
    with _published_lock:
        known = _PUBLISHED.get(path)
    if known is None or known[0] != stamp:
        manifest_path = path.with_suffix(".json")
        manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
        known = (stamp, int(match.group(1)), manifest)
        with _published_lock:
            if len(_PUBLISHED) >= _PUBLISHED_MAX:
                _PUBLISHED.clear()
            _PUBLISHED[path] = known
    return Release(wanted, known[1], path, known[2], wanted == current)


def next_number(home: Path) -> int:
    return max((r.number for r in list_releases(home)), default=0) + 1


@contextmanager
def ingest_lock(home: Path) -> Iterator[None]:
    folder = releases_dir(home)
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / ".lock").open("w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ReleaseError("another ingestion is running; try again when it ends") from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def remove_stale_staging(home: Path) -> int:
    """Remove what interrupted ingestions left behind (call with the lock held)."""
    removed = 0
    for folder in (releases_dir(home), vault_dir(home)):
        if not folder.is_dir():
            continue
        for path in folder.glob(".staging-*"):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed += 1
    return removed


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_durably(path: Path, text: str) -> None:
    tmp = path.with_name(f".staging-{path.name}")
    with tmp.open("w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def quality_dir(release_path: Path) -> Path:
    """Where a release's quality report and GX Data Docs live."""
    return release_path.with_name(release_path.stem + ".quality")


QUALITY_REPORT = "quality.json"  # the gate's report, in a release's quality folder


def quality_report(release_path: Path) -> Path:
    """A release's stored quality report (``quality.json`` in its quality folder)."""
    return quality_dir(release_path) / QUALITY_REPORT


def publish(
    home: Path,
    *,
    number: int,
    staging_db: Path,
    staging_vault: Path,
    manifest: dict[str, Any],
    staging_quality: Path | None = None,
) -> Release:
    """Move a finished build into place and make it current (call with the lock held)."""
    rid = release_id(number)
    folder = releases_dir(home)
    final_db = folder / f"{rid}.duckdb"
    final_vault = vault_dir(home) / f"{rid}.vault.parquet"
    if final_db.exists():
        raise ReleaseError(f"{rid} already exists; releases are immutable")
    with staging_db.open("rb") as fh:
        os.fsync(fh.fileno())
    os.chmod(staging_db, 0o444)
    os.replace(staging_vault, final_vault)
    os.chmod(final_vault, 0o400)
    if staging_quality is not None:
        os.replace(staging_quality, quality_dir(final_db))
    _write_durably(folder / f"{rid}.json", json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    os.replace(staging_db, final_db)
    _fsync_dir(folder)
    _write_durably(folder / "CURRENT", rid + "\n")
    return Release(rid, number, final_db, manifest, True)


def content_hash(con: duckdb.DuckDBPyConnection) -> str:
    """An order-independent digest of every research table's rows.

    Sum of per-row hashes, per table, then SHA-256 over the table digests: the same
    rows give the same hash whatever order a parallel load wrote them in. DuckDB's
    ``hash`` is stable within a DuckDB version (recorded in the manifest beside it).
    """
    import hashlib

    tables = [
        r[0]
        for r in con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE NOT temporary ORDER BY 1"
        ).fetchall()
    ]
    digest = hashlib.sha256()
    for table in tables:
        cols = [
            r[0]
            for r in con.execute(
                "SELECT column_name FROM duckdb_columns() WHERE table_name = $t "
                "AND database_name <> 'temp' ORDER BY column_index",
                {"t": table},
            ).fetchall()
        ]
        row_hash = "hash(" + ", ".join(f'"{c}"' for c in cols) + ")"
        rows, total = con.execute(
            f'SELECT count(*), coalesce(sum({row_hash}::HUGEINT), 0) FROM "{table}"'
        ).fetchall()[0]
        digest.update(f"{table}:{rows}:{total}\n".encode())
    return digest.hexdigest()
