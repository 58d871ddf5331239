"""``hub ingest``: load a source into a new release, publish it only if every step works.

    lock → stage (connector views) → build (pseudonymise, quarantine, tables, views)
         → vault (encrypt identifiers) → identifier scan → content hash
         → [quality gate] → publish

The identifier scan runs on every load, gate or not: a value of a source's identifying
fields found in any research table, view or the manifest refuses the release.

Nothing is written where the current release lives until the last step; any failure
(or ``kill -9``) leaves the current release current and untouched.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import duckdb

from connectors import build, releases, schema, staging, vault
from connectors.errors import IngestError, SourceError
from connectors.linkage import index as person_index
from connectors.quality import identifier_scan
from connectors.secrets import Keys
from connectors.sources import feeds, fhir, native, synthea

FORMATS: Final = ("native", "synthea", "fhir", "feeds")


CONNECTORS: Final[dict[str, Any]] = {
    "native": native, "synthea": synthea, "fhir": fhir, "feeds": feeds,
}  # fmt: skip
_FHIR_SUFFIXES: Final = (".ndjson", ".json", ".ndjson.gz", ".json.gz")
# a path is not repeated back: exporters and engineers name files and folders after people
MISSING: Final = "the file or folder given does not exist (check the path)"


def detect_format(src: Path) -> str:
    """The format of an export, from the names its exporter writes (no file is read):
    a region's ``feeds.json``, Synthea's ``patients.csv``, the hub's own ``patients/``
    folder, or FHIR's ``.ndjson``/``.json`` files (Bulk Data or Bundles)."""
    if not src.exists():
        raise SourceError(MISSING)
    if src.is_file():
        if src.name.lower().endswith(_FHIR_SUFFIXES):
            return "fhir"
        raise SourceError(
            "cannot tell this file's format: pass --format (native, synthea, fhir or feeds)"
        )
    names = {p.name.lower(): p for p in src.iterdir()}
    if "feeds.json" in names:
        return "feeds"
    if "patients.csv" in names or "patients.csv.gz" in names:
        return "synthea"
    if "patients" in names and names["patients"].is_dir():
        return "native"
    if any(p.name.lower().endswith(_FHIR_SUFFIXES) for p in src.rglob("*") if p.is_file()):
        return "fhir"
    raise SourceError(
        "cannot tell this folder's format (no feeds.json, patients.csv, patients/ folder "
        "or FHIR .ndjson/.json files): pass --format (native, synthea, fhir or feeds)"
    )


# A quality gate validates the finished staging file before publication:
# gate(staging_db, manifest=..., previous_db=..., out_dir=...) -> (passed, report).
# It lives in governance (which may import connectors, not the reverse). A gate with a
# ``prepare()`` method has it called as the build starts, to set up while it runs.
Gate = Callable[..., tuple[bool, dict[str, Any]]]


@dataclass(frozen=True)
class IngestResult:
    release: releases.Release
    counts: dict[str, build.TableCounts]
    skipped: dict[str, int]


class GateFailed(IngestError):
    """The quality gate blocked publication; the current release is unchanged."""

    def __init__(self, report: dict[str, Any], saved_to: Path) -> None:
        failed = ", ".join(report.get("failed_errors", [])) or "see the report"
        super().__init__(
            f"the quality gate failed ({failed}); the current release is unchanged; "
            f"report: {saved_to}"
        )
        self.report = report
        self.saved_to = saved_to


def _safe_duckdb_error(exc: duckdb.Error) -> SourceError:
    # DuckDB's reader errors can quote the offending line: never pass them on
    kind = type(exc).__name__.removesuffix("Exception")
    return SourceError(
        f"the source could not be read ({kind} error in the reader); nothing was published"
    )


def ingest(
    src: Path,
    *,
    fmt: str,
    home: Path,
    keys: Keys,
    progress: Callable[[str], None] | None = None,
    gate: Gate | None = None,
    threads: int | None = None,
    memory_limit: str = "4GB",
    linkage_engine: str = "duckdb",
) -> IngestResult:
    """Load ``src`` into a new release; publish it if every step and the gate pass.

    ``linkage_engine`` (feeds only): ``duckdb`` links on this machine; ``spark`` scores
    the candidate pairs on a local Spark session (the path past one machine).
    """
    if linkage_engine not in ("duckdb", "spark"):
        raise IngestError("the linkage engine must be duckdb or spark")
    if fmt not in CONNECTORS:
        raise IngestError(f"unknown format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if not src.exists() and not src.is_symlink():
        raise SourceError(MISSING)
    src = src.absolute()
    connector = CONNECTORS[fmt]
    step = progress or (lambda _label: None)
    with releases.ingest_lock(home):
        releases.remove_stale_staging(home)
        folder = releases.releases_dir(home)
        vdir = releases.vault_dir(home)
        vdir.mkdir(parents=True, exist_ok=True)
        os.chmod(vdir, 0o700)
        token = uuid.uuid4().hex[:12]
        staging_db = folder / f".staging-{token}.duckdb"
        staging_vault = vdir / f".staging-{token}.vault.parquet"
        try:
            return _run(
                connector, src, home, keys, staging_db, staging_vault, step, gate,
                threads, memory_limit, linkage_engine,
            )  # fmt: skip
        finally:
            staging_index = vdir / f".staging-{token}.{person_index.INDEX_FILE}"
            for leftover in (
                staging_db, staging_vault, Path(f"{staging_db}.wal"), staging_index,
            ):  # fmt: skip
                leftover.unlink(missing_ok=True)
            shutil.rmtree(f"{staging_db}.tmp", ignore_errors=True)
            shutil.rmtree(staging_db.with_name(staging_db.stem + ".quality"), ignore_errors=True)


def _run(
    connector: Any,
    src: Path,
    home: Path,
    keys: Keys,
    staging_db: Path,
    staging_vault: Path,
    step: Callable[[str], None],
    gate: Gate | None,
    threads: int | None,
    memory_limit: str,
    linkage_engine: str = "duckdb",
) -> IngestResult:
    started = dt.datetime.now(dt.UTC)
    previous = releases.current_id(home)
    con = duckdb.connect(str(staging_db))
    try:
        con.execute(f"SET threads = {int(threads or os.cpu_count() or 1)}")
        con.execute(f"SET memory_limit = '{memory_limit}'")
        con.execute("SET preserve_insertion_order = false")
        con.execute("SET enable_progress_bar = false")
        con.execute(f"SET temp_directory = '{staging_db}.tmp'")
        staging.harden_connection(con)  # no cast of a source value may raise
        build.install_macros(con)
        step("reading source")
        linked: feeds.Linked | None = None
        try:
            if connector is feeds:
                vdir = releases.vault_dir(home)
                spark = None
                if linkage_engine == "spark":
                    from connectors.linkage.link import spark_session

                    step("starting Spark (local)")
                    spark = spark_session(cores=int(threads or os.cpu_count() or 1))
                try:
                    files, linked = feeds.stage_linked(
                        con, src, index=person_index.load(vdir, keys.vault),
                        threads=threads, memory_limit=memory_limit, progress=step,
                        spark=spark,
                    )  # fmt: skip
                finally:
                    if spark is not None:
                        spark.stop()
            else:
                files = connector.stage(con, src)
            prepare = getattr(gate, "prepare", None)
            if prepare is not None:
                # a gate's slow set-up (importing GX: Python, holding the GIL) overlaps
                # the build's long DuckDB statements, which run outside it; not the
                # staging's many small queries, which it would starve
                prepare()
            # the identifiers are encrypted on a thread of their own (Python, holding the
            # GIL) while the event tables are built (DuckDB, outside it)
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="vault") as pool:
                encrypting: list[Future[int]] = []

                def people_ready() -> None:
                    batches = build.identifier_table(con).to_batches(max_chunksize=100_000)
                    encrypting.append(
                        pool.submit(vault.encrypt_batches, keys.vault, batches, staging_vault)
                    )

                counts = build.build(
                    con, source=connector.SOURCE, pseudonym_key=keys.pseudonym,
                    progress=step, people_ready=people_ready,
                )  # fmt: skip
                step("encrypting identifiers")
                vault_rows = encrypting[0].result()
            skipped: dict[str, int] = getattr(connector, "skipped", lambda _con: {})(con)
        except duckdb.Error as exc:
            raise _safe_duckdb_error(exc) from None
        # the manifest says what was read by content hash and size, never by path or
        # name: exporters name files after patients
        source: dict[str, Any] = {"format": connector.SOURCE, "files": files.manifest_entries()}
        if files.layouts:
            source["layouts"] = files.layouts
        if files.ignored:
            source["not_read"] = dict(sorted(files.ignored.items()))
        connector_info: dict[str, Any] = {"name": connector.SOURCE, "version": connector.VERSION}
        unguaranteed = {k: list(v) for k, v in getattr(connector, "UNGUARANTEED", {}).items()}
        for table, missing in files.unguaranteed.items():
            unguaranteed[table] = sorted({*unguaranteed.get(table, []), *missing})
        if unguaranteed:
            connector_info["unguaranteed_fields"] = dict(sorted(unguaranteed.items()))
        manifest: dict[str, Any] = {
            "source": source,
            "connector": connector_info,
            "schema_version": schema.SCHEMA_VERSION,
            "duckdb_version": duckdb.__version__,
            "previous_release": previous,
            "pseudonym_key_id": keys.pseudonym_key_id,
            "vault": {"rows": vault_rows, "key_id": keys.vault_key_id},
            "tables": {k: v.as_dict() for k, v in counts.items()},
            "skipped_resources": skipped,
        }
        if linked is not None:
            manifest["linkage"] = linked.report
        _check_accounting(counts)
        step("identifier scan")
        try:
            scanned = identifier_scan.scan(con, manifest=manifest)
        except duckdb.Error as exc:
            raise _safe_duckdb_error(exc) from None
        manifest["identifier_scan"] = scanned.as_dict()
        for temp in ("stage_people", "person_map", "identifier_values"):
            con.execute(f"DROP TABLE IF EXISTS {temp}")
        step("checksumming")
        manifest["content_hash"] = releases.content_hash(con)
        con.execute("CHECKPOINT")
    finally:
        con.close()
    staging_quality = staging_db.with_name(staging_db.stem + ".quality")
    if gate is not None:
        step("quality gate")
        previous_release = releases.get_release(home, previous) if previous else None
        if previous_release and (
            previous_release.manifest.get("source", {}).get("format") != connector.SOURCE
        ):
            previous_release = None  # drift is only meaningful between like sources
        passed, report = gate(
            staging_db,
            manifest=manifest,
            previous_db=previous_release.path if previous_release else None,
            out_dir=staging_quality,
        )
        manifest["quality"] = {
            "passed": passed,
            "summary": report.get("summary", {}),
            "failed": report.get("failed", []),
        }
        staging_quality.mkdir(exist_ok=True)
        report_file = staging_quality / releases.QUALITY_REPORT
        if not report_file.exists():
            report_file.write_text(json.dumps(report, indent=2, default=str) + "\n")
        if not passed:
            stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
            rejected = releases.releases_dir(home) / "rejected" / stamp
            rejected.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(staging_quality), rejected)
            errors = [
                c["id"] for c in report.get("checks", [])
                if not c["passed"] and c["severity"] == "error"
            ]  # fmt: skip
            raise GateFailed({**report, "failed_errors": errors}, rejected)
    number = releases.next_number(home)
    rid = releases.release_id(number)
    manifest["release_id"] = rid
    manifest["vault"]["file"] = f"{rid}.vault.parquet"
    manifest["started_at"] = started.isoformat(timespec="seconds")
    manifest["published_at"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    staged_index = None
    if linked is not None:
        # the index that gave this release its pseudonyms: in place once it publishes
        staged_index = person_index.write_staged(
            releases.vault_dir(home), keys.vault, linked.result.index,
            staging_db.stem.removeprefix(".staging-"),
        )  # fmt: skip
    step("publishing")
    release = releases.publish(
        home,
        number=number,
        staging_db=staging_db,
        staging_vault=staging_vault,
        staging_quality=staging_quality if staging_quality.exists() else None,
        manifest=manifest,
    )
    if staged_index is not None:
        person_index.commit(releases.vault_dir(home), staged_index)
    return IngestResult(release, counts, skipped)


def _check_accounting(counts: dict[str, build.TableCounts]) -> None:
    """Rows in = rows published + rows quarantined, for every table; or refuse."""
    for name, c in counts.items():
        if c.rows_in != c.published + sum(c.quarantined.values()):
            raise IngestError(
                f"row accounting failed for {name}: {c.rows_in} in, {c.published} "
                f"published, {sum(c.quarantined.values())} quarantined"
            )
