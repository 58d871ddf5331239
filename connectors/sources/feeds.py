"""A region's feeds (``feeds.json`` and one folder per feed) linked into one release.

The manifest names each feed, its layout (``connectors.linkage.layouts``), format,
organisation and data controller. Staging reads every feed's identity records, links
them to persons in the identifier zone (``connectors.linkage``), and defines the usual
``stage_*`` views with one patient per linked person:

- a person's details come from the GP record (practice, registration, ethnic group,
  derived geography), the death date from the death register, and the date of birth and
  sex from the GP record where there is one, else the most common across records;
- every encounter and clinical event keeps its feed as ``source_system`` (``feeds:<feed>``)
  so that the release says which organisation each row came from;
- ``source_patient_id`` is the person index's id (``p<n>``): the pseudonym is the keyed
  hash of it, so a person keeps one pseudonym across releases for as long as the index
  (in the vault folder) is kept.

Every CSV file is read once, by the CSV reader the other connectors use
(``connectors.staging.read_csv_table``: one explicit dialect, columns by position). Its
header must name every column the layout reads, once; otherwise the load is refused,
naming the file and the column. A row the reader cannot read (too few or too many
fields, not UTF-8) is quarantined with its reason and counted under the table it feeds
(``layouts.target``); a rejected identity record is not linked, so its encounters and
events are quarantined as ``unknown person``. A value that does not parse (a date in
another convention) is NULL, never an error (``staging.harden_connection``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import duckdb
import pyarrow as pa

from connectors.errors import IngestError, SourceError
from connectors.linkage import index as person_index
from connectors.linkage import layouts, link, quality
from connectors.staging import (
    SourceFiles,
    csv_header,
    harden_connection,
    quote,
    read_csv_table,
)

SOURCE: Final = "feeds"
VERSION: Final = "1.0"
MANIFEST: Final = "feeds.json"
TABLES: Final = ("conditions", "observations", "medications", "procedures")


@dataclass
class Linked:
    """What staging linked: to be committed to the index when the release publishes."""

    result: link.LinkResult
    report: dict[str, Any] = field(default_factory=dict)


def read_manifest(src: Path) -> dict[str, Any]:
    """The feeds manifest, checked: every feed named once, with a known layout and a
    folder inside ``src``."""
    path = src / MANIFEST
    if not path.is_file():
        raise SourceError(f"no {MANIFEST} in the feeds folder: it must name every feed")
    try:
        manifest: Any = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError):
        raise SourceError(f"{MANIFEST} is not valid JSON") from None
    if not isinstance(manifest, dict):
        raise SourceError(f"{MANIFEST} is not a JSON object")
    feeds = manifest.get("feeds")
    if not isinstance(feeds, list) or not feeds:
        raise SourceError(f"{MANIFEST} names no feeds")
    names = set()
    for feed in feeds:
        for key in ("name", "layout", "path", "organisation", "controller"):
            if not isinstance(feed.get(key), str) or not feed[key]:
                raise SourceError(f"a feed in {MANIFEST} has no {key}")
        if feed["name"] in names or "|" in feed["name"]:
            raise SourceError(f"feed names must be unique and without '|': {feed['name']!r}")
        names.add(feed["name"])
        layouts.layout(feed["layout"])
        folder = (src / feed["path"]).resolve()
        if src.resolve() not in folder.parents or not folder.is_dir():
            raise SourceError(f"feed {feed['name']!r}: its folder is not inside the feeds folder")
    return manifest


def identities_sql(src: Path, feeds: list[dict[str, Any]], tables: dict[Path, str]) -> str:
    """Every feed record's key and identifiers, with ``nhs_valid`` (needs the hub's
    macros on the connection: ``connectors.build.install_macros``; ``tables``: the CSV
    files read by ``read_csv_files``)."""
    union = " UNION ALL ".join(
        layouts.identity_sql(f["name"], layouts.layout(f["layout"]), src / f["path"], tables)
        for f in feeds
    )
    return f"SELECT *, coalesce(hub_nhs_valid(nhs_number), false) AS nhs_valid FROM ({union})"


def read_csv_files(
    con: duckdb.DuckDBPyConnection,
    src: Path,
    feeds: list[dict[str, Any]],
    files: SourceFiles,
    *,
    identities_only: bool = False,
) -> dict[Path, str]:
    """Read every CSV file the feeds' layouts read (registered in ``files``), once each,
    into a TEMP table; return, for each file, the relation the layouts read it from.

    The header is checked first: each column the layout reads must be named exactly once
    (matched without regard to case, as DuckDB matches names); a file that is empty or
    lacks one is refused, naming the file and the column, never a value. The rows are
    read by position (``read_csv_table``) and the relation names the columns the layout
    reads. Rows the reader rejects are in ``stage_rejects`` under the warehouse table the
    file feeds (``layouts.target``).
    """
    tables: dict[Path, str] = {}
    for n, feed in enumerate(feeds):
        lay = layouts.layout(feed["layout"])
        for path, needed in layouts.columns_read(con, lay, src / feed["path"]).items():
            if identities_only and path.stem != lay.patients:
                continue
            where = path.relative_to(src).as_posix()
            with _naming(where, path):
                names = csv_header(path)
            at: dict[str, list[int]] = {}
            for i, name in enumerate(names):
                at.setdefault(name.lower(), []).append(i)
            for column in needed:
                found = at.get(column.lower(), [])
                if not found:
                    raise SourceError(f"a feed has no {column} column in {where}")
                if len(found) > 1:
                    raise SourceError(
                        f"{where} names the {column} column {len(found)} times: "
                        "a column the feed's layout reads must be named once"
                    )
            key = f"feed{n}_{path.stem}"
            reader = SourceFiles(
                kind="csv", tables={key: [path]}, labels={path: files.labels[path]}
            )
            with _naming(where, path):
                read_csv_table(
                    con, files=reader, table=key, width=len(names),
                    target=layouts.target(lay, path),
                )  # fmt: skip
            columns = ", ".join(f'c{at[c.lower()][0]} AS "{c}"' for c in needed)
            con.execute(
                f"CREATE OR REPLACE TEMP VIEW {key} AS "
                f"SELECT {columns}, file_row_number, filename FROM raw_{key}"
            )
            tables[path] = key
    return tables


@contextmanager
def _naming(where: str, path: Path) -> Iterator[None]:
    """A refusal of the CSV reader names the file by its place in the feeds folder
    (``ae/attendances.csv``, where the reader says ``attendances.csv``)."""
    try:
        yield
    except SourceError as exc:
        message = str(exc)
        if message.startswith(path.name):
            raise SourceError(where + message.removeprefix(path.name)) from None
        raise SourceError(f"{where}: {message}") from None


def read_identities(src: Path) -> pa.Table:
    """The identity records of the feeds in ``src`` (for benchmarks and tests of linkage)."""
    from connectors import build

    con = duckdb.connect()
    try:
        harden_connection(con)
        build.install_macros(con)
        feeds = read_manifest(src)["feeds"]
        files = SourceFiles(kind="feeds")
        for f in feeds:
            lay = layouts.layout(f["layout"])
            files.add(
                f"{f['name']}/{lay.patients}",
                layouts.file_of(src / f["path"], lay.patients, lay.ext),
            )
        tables = read_csv_files(con, src, feeds, files, identities_only=True)
        return con.sql(identities_sql(src, feeds, tables)).to_arrow_table()
    finally:
        con.close()


def stage(con: duckdb.DuckDBPyConnection, src: Path) -> SourceFiles:
    raise SourceError(
        "feeds are linked against the person index: ingest them with `hub ingest "
        "--format feeds`, which passes the index"
    )


def stage_linked(
    con: duckdb.DuckDBPyConnection,
    src: Path,
    *,
    index: person_index.PersonIndex,
    threads: int | None = None,
    memory_limit: str = "4GB",
    progress: Any = None,
    spark: Any = None,
) -> tuple[SourceFiles, Linked]:
    """Read and link the feeds; define the ``stage_*`` views over the linked records."""
    step = progress or (lambda _label: None)
    manifest = read_manifest(src)
    files = SourceFiles(kind="feeds")
    feeds = manifest["feeds"]
    for feed in feeds:
        lay = layouts.layout(feed["layout"])
        folder = src / feed["path"]
        for path in sorted(folder.iterdir()):
            if path.suffix in (".csv", ".parquet") and path.is_file():
                files.add(f"{feed['name']}/{path.stem}", path)
        files.layouts[feed["name"]] = feed["layout"]
        layouts.files_read(lay, folder)  # a file the layout needs is missing: refused
    step("reading feed files")
    tables = read_csv_files(con, src, feeds, files)
    step("reading feed identities")
    con.execute(f"CREATE TEMP TABLE feed_identities AS {identities_sql(src, feeds, tables)}")
    duplicates = con.execute(
        "SELECT count(*) - count(DISTINCT record_key) FROM feed_identities"
    ).fetchall()[0]
    if duplicates and duplicates[0]:
        raise SourceError(f"{duplicates[0]} feed records repeat a local id within their feed")
    batch = con.sql("SELECT * FROM feed_identities").to_arrow_table()
    batch_table = batch.read_all() if isinstance(batch, pa.RecordBatchReader) else batch
    try:
        result = link.link(
            batch_table, index, threads=threads, memory_limit=memory_limit, progress=step,
            spark=spark,
        )  # fmt: skip
    except Exception as exc:  # any engine failure: one clear line
        # the linkage engine's own message may quote identifiers: only its kind is named
        raise IngestError(
            f"record linkage failed ({type(exc).__name__}); nothing was published"
        ) from None
    con.register("linked_in", result.assignments)
    con.execute(
        "CREATE TEMP TABLE record_person AS SELECT record_key, 'p' || person AS pid FROM linked_in"
    )
    con.unregister("linked_in")
    _stage_people(con, src, feeds, tables)
    _stage_events(con, src, feeds, tables)
    if (src / "organisations.parquet").is_file():
        files.add("organisations", src / "organisations.parquet")
        con.execute(
            f"""CREATE TEMP VIEW stage_organisations AS
                SELECT organisation_code::VARCHAR AS organisation_code, name::VARCHAR AS name,
                       kind::VARCHAR AS kind, local_authority::VARCHAR AS local_authority
                FROM read_parquet({quote(str(src / "organisations.parquet"))})"""
        )
    report: dict[str, Any] = {
        "feeds": [
            {k: f[k] for k in ("name", "layout", "organisation", "controller") if k in f}
            for f in feeds
        ],
        "model": result.model,
        "match_rates": quality.match_rates(result.assignments),
        "people_in_index": result.index.people,
        "people_before": index.people,
    }
    truth = src / "truth"
    if (truth / "records.parquet").is_file() and (truth / "people.parquet").is_file():
        step("linkage quality against the generator's truth")
        report["against_truth"] = quality.against_truth(result.assignments, truth)
    return files, Linked(result, report)


def _stage_people(
    con: duckdb.DuckDBPyConnection,
    src: Path,
    feeds: list[dict[str, Any]],
    tables: dict[Path, str],
) -> None:
    details = [
        sql
        for f in feeds
        if (
            sql := layouts.details_sql(
                f["name"], layouts.layout(f["layout"]), src / f["path"], tables
            )
        )
    ]
    detail_sql = (
        " UNION ALL ".join(details)
        if details
        else "SELECT NULL::VARCHAR AS record_key, NULL::VARCHAR AS practice_code, "
        "NULL::DATE AS registration_start, NULL::DATE AS registration_end, "
        "NULL::VARCHAR AS ethnicity, NULL::VARCHAR AS local_authority, "
        "NULL::INTEGER AS imd_decile, NULL::DATE AS death_date WHERE false"
    )
    con.execute(f"CREATE TEMP TABLE feed_details AS {detail_sql}")
    # one row per person; GP details from the latest registration
    con.execute(
        """
        CREATE TEMP TABLE feed_people AS
        WITH r AS (
            SELECT m.pid, i.*, d.practice_code, d.registration_start, d.registration_end,
                   d.ethnicity, d.local_authority, d.imd_decile, d.death_date,
                   d.practice_code IS NOT NULL AS from_gp
            FROM feed_identities i JOIN record_person m USING (record_key)
            LEFT JOIN feed_details d USING (record_key)
        ), dob AS (
            SELECT pid, birth_date, count(*) AS n, bool_or(from_gp) AS gp
            FROM r WHERE birth_date IS NOT NULL GROUP BY pid, birth_date
        ), votes AS (
            -- the date most records agree on (the GP's on a tie), and the earliest
            SELECT pid, arg_max(birth_date, (n, gp)) AS voted, min(birth_date) AS earliest
            FROM dob GROUP BY pid
        ), people AS (
        SELECT pid AS source_patient_id,
               arg_max(nhs_number, (nhs_valid, from_gp)) FILTER (WHERE nhs_valid)
                   AS nhs_number,
               coalesce(arg_max(sex, registration_start) FILTER (WHERE from_gp), mode(sex))
                   AS sex,
               arg_max(ethnicity, registration_start) FILTER (WHERE from_gp) AS ethnicity,
               arg_max(local_authority, registration_start) FILTER (WHERE from_gp)
                   AS local_authority,
               arg_max(imd_decile, registration_start) FILTER (WHERE from_gp) AS imd_decile,
               arg_max(practice_code, registration_start) FILTER (WHERE from_gp)
                   AS practice_code,
               max(registration_start) FILTER (WHERE from_gp) AS registration_start,
               arg_max(registration_end, registration_start) FILTER (WHERE from_gp)
                   AS registration_end,
               max(death_date) AS death_date,
               arg_max(given_name, from_gp) AS given_name,
               arg_max(family_name, from_gp) AS family_name,
               arg_max(postcode, coalesce(registration_start, DATE '1900-01-01'))
                   AS postcode,
               min(record_key) AS first_record
        FROM r GROUP BY pid
        )
        -- a typed date of birth after the registered death yields to the earliest one
        SELECT p.*, CASE WHEN v.voted > p.death_date THEN v.earliest ELSE v.voted END
                        AS birth_date
        FROM people p LEFT JOIN votes v ON v.pid = p.source_patient_id
        """
    )
    # which feeds hold a record of each person, and which supplied the GP registration
    # details and the date of death: the release's _person_sources, by which a project
    # sees only the people and details of the feeds its data controllers approved
    con.execute(
        """
        CREATE TEMP VIEW stage_extra__person_sources AS
        WITH r AS (
            SELECT m.pid, split_part(i.record_key, '|', 1) AS feed,
                   d.practice_code IS NOT NULL AS from_gp, d.registration_start, d.death_date
            FROM feed_identities i JOIN record_person m USING (record_key)
            LEFT JOIN feed_details d USING (record_key)
        ), supplied AS (
            SELECT DISTINCT pid, feed, 'record' AS supplies FROM r
            UNION
            SELECT pid, arg_max(feed, registration_start) FILTER (WHERE from_gp),
                   'registration'
            FROM r GROUP BY pid HAVING bool_or(from_gp)
            UNION
            SELECT r.pid, r.feed, 'death'
            FROM r JOIN feed_people p ON p.source_patient_id = r.pid
            WHERE r.death_date IS NOT NULL AND r.death_date = p.death_date
        )
        SELECT pid AS source_patient_id, 'feeds:' || feed AS source_system, supplies,
               'linked' AS source_file, row_number() OVER (ORDER BY pid, feed, supplies)
                   AS source_row
        FROM supplied
        """
    )
    con.execute(
        """
        CREATE TEMP VIEW stage_identifying_values AS
        SELECT 'identifier' AS meaning, nhs_number AS value FROM feed_identities
        UNION ALL SELECT 'name', given_name FROM feed_identities
        UNION ALL SELECT 'name', family_name FROM feed_identities
        UNION ALL SELECT 'name', given_name || ' ' || family_name FROM feed_identities
        UNION ALL SELECT 'address', postcode FROM feed_identities
        """
    )
    con.execute(
        """
        CREATE TEMP VIEW stage_patients AS
        SELECT source_patient_id, NULL::VARCHAR AS nhs_number, birth_date, sex, ethnicity,
               local_authority, imd_decile, practice_code, registration_start,
               registration_end, death_date,
               json_object('nhs_number', nhs_number, 'given_name', given_name,
                           'family_name', family_name, 'postcode', postcode,
                           'date_of_birth', birth_date::VARCHAR)::VARCHAR AS identifiers,
               CASE WHEN birth_date IS NULL THEN 'no date of birth in any record' END
                   AS bad_reason,
               'linked' AS source_file,
               row_number() OVER (ORDER BY source_patient_id) AS source_row
        FROM feed_people
        """
    )


def _stage_events(
    con: duckdb.DuckDBPyConnection,
    src: Path,
    feeds: list[dict[str, Any]],
    tables: dict[Path, str],
) -> None:
    orgs = {f["name"]: f.get("organisation_code") for f in feeds}
    encounters = [
        sql
        for f in feeds
        if (
            sql := layouts.encounters_sql(
                f["name"], layouts.layout(f["layout"]), src / f["path"], orgs[f["name"]], tables
            )
        )
    ]
    linked = """
        SELECT s.* EXCLUDE (record_key, feed), m.pid AS source_patient_id,
               'feeds:' || s.feed AS source_system,
               'feed ' || s.feed AS source_file, row_number() OVER () AS source_row
        FROM ({sql}) s LEFT JOIN record_person m USING (record_key)
    """
    if encounters:
        con.execute(
            f"CREATE TEMP VIEW stage_encounters AS "
            f"{linked.format(sql=' UNION ALL BY NAME '.join(encounters))}"
        )
    for table in TABLES:
        parts = [
            sql
            for f in feeds
            if (
                sql := layouts.events_sql(
                    f["name"], layouts.layout(f["layout"]), src / f["path"], table, tables
                )
            )
        ]
        if parts:
            con.execute(
                f"CREATE TEMP VIEW stage_{table} AS "
                f"{linked.format(sql=' UNION ALL BY NAME '.join(parts))}"
            )


def commit(vault_dir: Path, staged: Path) -> None:
    person_index.commit(vault_dir, staged)
