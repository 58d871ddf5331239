"""Run the check catalogue with Great Expectations inside DuckDB, and decide.

Each domain of the catalogue becomes a GX *query asset* on a SQL datasource over the
release file (read-only), with one expectation suite; GX bundles a domain's metrics
into one query, so each table is scanned about once. A checkpoint validates every
domain and writes GX Data Docs (HTML) beside the JSON report. The gate passes when no
``error`` check fails; failed ``warning`` checks are recorded with their explanation.

``plain_sql_counts`` computes the same checks as hand-written DuckDB SQL: the benchmark
compares the two engines' speed and the tests check that they agree.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import duckdb

from connectors.quality import checks as catalogue
from connectors.quality import gx_duckdb
from connectors.quality.checks import Catalogue, Check
from connectors.releases import QUALITY_REPORT

EXAMPLES: Final = 10


@dataclass
class QualityResult:
    passed: bool
    report: dict[str, Any]
    # every flagged row key per check id, only when run with complete=True (scoring)
    flagged: dict[str, list[Any]]


def _expectation(check: Check) -> Any:
    import great_expectations.expectations as gxe

    mostly = max(0.0, 1.0 - check.threshold)
    meta = {"check_id": check.id, "severity": check.severity}
    if check.kind == "not_null":
        return gxe.ExpectColumnValuesToNotBeNull(column=check.column, mostly=mostly, meta=meta)
    if check.kind == "flag":
        return gxe.ExpectColumnValuesToBeInSet(
            column=check.column, value_set=[True], mostly=mostly, meta=meta
        )
    if check.kind == "between":
        return gxe.ExpectColumnValuesToBeBetween(
            column=check.column, mostly=mostly, meta=meta, **check.kwargs
        )
    if check.kind == "regex":
        return gxe.ExpectColumnValuesToMatchRegex(
            column=check.column, regex=check.kwargs["regex"], mostly=mostly, meta=meta
        )
    if check.kind == "unique":
        return gxe.ExpectColumnValuesToBeUnique(column=check.column, mostly=mostly, meta=meta)
    if check.kind == "row_count":  # a count column of the one-row ``counts`` domain
        if "rows_in" in check.kwargs:
            limit = math.floor(check.kwargs["rows_in"] * check.threshold)
            return gxe.ExpectColumnMaxToBeBetween(
                column=check.column, min_value=0, max_value=limit, meta=meta
            )
        return gxe.ExpectColumnMaxToBeBetween(
            column=check.column,
            min_value=check.kwargs["min_value"],
            max_value=check.kwargs["max_value"],
            meta=meta,
        )
    if check.kind == "mean":
        return gxe.ExpectColumnMeanToBeBetween(
            column=check.column,
            min_value=check.kwargs["min_value"],
            max_value=check.kwargs["max_value"],
            meta=meta,
        )
    raise ValueError(f"unknown check kind {check.kind!r}")


def _context(docs_dir: Path | None) -> Any:
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    gx_duckdb.install()
    context = gx.get_context(mode="ephemeral")
    # an ephemeral context is never saved ("not saved", GX's docstring says), yet GX 1.x
    # serialises its whole project configuration to YAML after every asset, suite and
    # definition added: 40 times a run, a fifth of the gate's own time at 200k people
    context._save_project_config = lambda: None
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    if docs_dir is not None:
        context.add_data_docs_site(
            site_name="hub",
            site_config={
                "class_name": "SiteBuilder",
                "store_backend": {
                    "class_name": "TupleFilesystemStoreBackend",
                    "base_directory": str(docs_dir),
                },
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
                # the validation pages list every expectation with its result; a second
                # section rendering the same suites again costs a third of the build
                "site_section_builders": {"expectations": "0", "profiling": "0"},
            },
        )
    return context


class _Domains:
    """The domains of a gate run, computed once each, ahead of Great Expectations.

    GX computes a domain's metrics in several queries (one per round of its metric
    graph), and its own ``create_temp_table`` would rebuild a domain for every pass; so
    each domain is computed once into a table of the run's in-memory database, with only
    the columns its checks read, and every validation (both passes) reads that. The
    one-row ``counts`` domain (quarantine shares, row-count drift) is a view instead:
    its counts are lookups, cheaper than copying.

    A worker thread builds the tables, on its own cursor, in the order GX validates
    them (the views first), while the main thread does GX's set-up and validates the
    domains already built: DuckDB runs outside the GIL, so GX's Python work and the
    domain queries overlap instead of following each other. A GX query that names a
    domain still being built waits for it (``_WaitingConnection``).
    """

    def __init__(self, con: duckdb.DuckDBPyConnection, cat: Catalogue) -> None:
        by_domain: dict[str, list[Check]] = {}
        for check in cat.checks:
            by_domain.setdefault(check.domain, []).append(check)
        counted = [d for d, cs in by_domain.items() if all(c.kind == "row_count" for c in cs)]
        copied = [d for d in by_domain if d not in counted]
        self.order = [*counted, *copied]
        self.names = {d: f"memory.main.hub_domain_{i}" for i, d in enumerate(self.order)}
        self._ready = {self.names[d]: threading.Event() for d in copied}
        self._failed: BaseException | None = None
        for domain in counted:
            con.execute(f"CREATE VIEW {self.names[domain]} AS {cat.domains[domain].strip()}")
        cursor = con.cursor()
        cursor.execute(f"USE {RELEASE}")

        def build() -> None:
            try:
                for domain in copied:
                    read = dict.fromkeys(
                        ["row_key", *(c.column for c in by_domain[domain] if c.column)]
                    )
                    columns = ", ".join(f'"{c}"' for c in read)
                    cursor.execute(
                        f"CREATE TABLE {self.names[domain]} AS SELECT {columns} "
                        f"FROM ({cat.domains[domain].strip()})"
                    )
                    self._ready[self.names[domain]].set()
            except BaseException as exc:  # handed to whichever thread waits next
                self._failed = exc
            finally:
                cursor.close()
                for event in self._ready.values():
                    event.set()

        self._worker = threading.Thread(target=build, name="hub-gate-domains", daemon=True)
        self._worker.start()

    def wait_for(self, sql: str) -> None:
        for name in _DOMAIN_NAME.findall(sql):
            if name in self._ready:
                self._ready[name].wait()
        if self._failed is not None:
            raise self._failed

    def close(self) -> None:
        self._worker.join()


_DOMAIN_NAME: Final = re.compile(r"memory\.main\.hub_domain_\d+")
RELEASE: Final = "hub_release"


class _WaitingConnection:
    """The run's connection as GX's SQLAlchemy engine sees it: every statement first
    waits for the domains it names."""

    def __init__(self, con: duckdb.DuckDBPyConnection, domains: _Domains) -> None:
        self._con = con
        self._domains = domains

    def execute(self, statement: str, *args: Any) -> Any:
        self._domains.wait_for(statement)
        return self._con.execute(statement, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._con, name)


class _Session:
    """One GX context over the release for a whole gate run (see ``_Domains``).

    The second pass (row keys of violating checks) reuses the first pass's domain
    tables, and GX's connections are closed once, at the end.
    """

    def __init__(
        self, con: duckdb.DuckDBPyConnection, cat: Catalogue, docs_dir: Path | None
    ) -> None:
        import duckdb_engine
        from sqlalchemy.pool import StaticPool

        self.con = con
        self.cat = cat
        self.docs_dir = docs_dir
        self.domains = _Domains(con, cat)
        self.context = _context(docs_dir)
        # every engine GX makes is handed this one connection (ours): the materialised
        # domains live in its in-memory database, and closing it closes them all
        waiting: Any = _WaitingConnection(con, self.domains)  # duck-typed for duckdb_engine
        connection = duckdb_engine.ConnectionWrapper(waiting)
        self.source = self.context.data_sources.add_sql(
            name="release",
            connection_string="duckdb:///:memory:",
            create_temp_table=False,
            kwargs={"poolclass": StaticPool, "creator": lambda: connection},
        )
        self.batches: dict[str, Any] = {}
        self.passes = 0

    def _table(self, domain: str) -> str:
        return self.domains.names[domain]

    def _batch(self, domain: str) -> Any:
        # one asset per domain for the whole run: each one added rewrites GX's project
        # configuration
        if domain not in self.batches:
            asset = self.source.add_query_asset(
                name=domain, query=f"SELECT * FROM {self._table(domain)}"
            )
            self.batches[domain] = asset.add_batch_definition_whole_table(f"{domain}_all")
        return self.batches[domain]

    def validate(
        self, checks: list[Check], *, result_format: str, examples: int, docs: bool
    ) -> dict[str, Any]:
        """Run ``checks`` with GX; results by check id."""
        import great_expectations as gx

        self.passes += 1
        tag = "" if self.passes == 1 else f"_pass{self.passes}"
        by_domain: dict[str, list[Check]] = {}
        for check in sorted(checks, key=lambda c: self.domains.order.index(c.domain)):
            by_domain.setdefault(check.domain, []).append(check)
        definitions = []
        for domain, domain_checks in by_domain.items():
            suite = self.context.suites.add(
                gx.ExpectationSuite(
                    name=f"hub_{domain}{tag}",
                    expectations=[_expectation(c) for c in domain_checks],
                )
            )
            definitions.append(
                self.context.validation_definitions.add(
                    gx.ValidationDefinition(
                        name=f"validate_{domain}{tag}", data=self._batch(domain), suite=suite
                    )
                )
            )
        # Data Docs are built once, after the validations they show (an
        # UpdateDataDocsAction would rebuild the whole site once per validation definition)
        checkpoint = self.context.checkpoints.add(
            gx.Checkpoint(
                name=f"hub_quality_gate{tag}",
                validation_definitions=definitions,
                actions=[],
                result_format={
                    "result_format": result_format,
                    "unexpected_index_column_names": ["row_key"],
                    "return_unexpected_index_query": False,
                    # GX truncates SQL unexpected-value and index lists at this count,
                    # even in COMPLETE; 0 makes those queries free (LIMIT 0)
                    "partial_unexpected_count": examples,
                },
            )
        )
        run = checkpoint.run()
        if docs and self.docs_dir is not None:
            self.context.build_data_docs(site_names=["hub"])
        out: dict[str, Any] = {}
        for validation in run.run_results.values():
            for result in validation.results:
                out[result.expectation_config.meta["check_id"]] = result
        return out


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _exception(result: Any) -> str | None:
    """The message of an exception GX caught while computing a result's metrics.

    GX reports it either at the top of ``exception_info`` or once per failed metric
    (keyed by the metric's id); a check whose metric failed must never pass or fail
    silently as if it had counted rows.
    """
    info = result.exception_info or {}
    for entry in (info, *(v for v in info.values() if isinstance(v, dict))):
        if entry.get("raised_exception"):
            return str(entry.get("exception_message") or "an error in Great Expectations")
    return None


def _row(check: Check, result: Any, examples: list[Any]) -> dict[str, Any]:
    info = result.result or {}
    observed: Any
    if check.kind == "row_count":
        observed = int(info.get("observed_value") or 0)
        checked = int(check.kwargs.get("rows_in", observed))
        violations = observed if "rows_in" in check.kwargs else 0
    elif check.kind == "mean":
        observed = info.get("observed_value")
        checked = int(info.get("element_count") or 0)
        violations = 0
    else:
        checked = int(info.get("element_count") or 0) - int(info.get("missing_count") or 0)
        if check.kind == "not_null":
            checked = int(info.get("element_count") or 0)
        violations = int(info.get("unexpected_count") or 0)
        observed = None
    error = _exception(result)
    if error is not None:
        raise RuntimeError(f"check {check.id} could not run: {error}")
    row: dict[str, Any] = {
        "id": check.id,
        "category": check.category,
        "level": check.level,
        "severity": check.severity,
        "description": check.description,
        "threshold": check.threshold,
        "rows_checked": checked,
        "violations": violations,
        "share": (violations / checked) if checked else 0.0,
        "passed": bool(result.success),
        "examples": examples[:EXAMPLES],
    }
    if observed is not None:
        row["observed"] = observed
    return row


def _examples(result: Any) -> list[Any]:
    info = result.result or {}
    keys = info.get("partial_unexpected_index_list") or info.get("unexpected_index_list") or []
    out = []
    for k in keys:
        out.append(k.get("row_key") if isinstance(k, dict) else k)
    return out


def run_gate(
    release_db: Path,
    *,
    manifest: dict[str, Any],
    previous_db: Path | None = None,
    out_dir: Path | None = None,
    complete: bool = False,
) -> QualityResult:
    """Validate a release file; write ``quality.json`` and Data Docs under ``out_dir``."""
    started = time.perf_counter()
    previous = None
    if previous_db is not None and previous_db.exists():
        with duckdb.connect(str(previous_db), read_only=True) as prev:
            previous = catalogue.drift_baseline(prev)
    docs_dir = out_dir / "data_docs" if out_dir is not None else None
    rows = []
    flagged: dict[str, list[Any]] = {}
    # one connection for the whole run: the catalogue, GX's queries (handed this
    # connection, see _Session) and the quarantine listings
    with duckdb.connect(":memory:", config={"preserve_insertion_order": False}) as con:
        # the release is attached read-only; the run's own tables (its materialised
        # domains) go in the in-memory database, which every cursor of ``con`` shares
        con.execute(f"ATTACH {_literal(str(release_db))} AS {RELEASE} (READ_ONLY)")
        con.execute(f"USE {RELEASE}")
        cat = catalogue.build_catalogue(con, manifest=manifest, previous=previous)
        # pass 1: counts and decisions for every check (GX "BASIC": no per-row lists);
        # pass 2: row keys only for checks that found violations (examples, or all keys
        # when scoring), on the same materialised domains: a clean release costs one pass
        session = _Session(con, cat, docs_dir)
        try:
            results = session.validate(cat.checks, result_format="BASIC", examples=0, docs=True)
            violating = [
                c for c in cat.checks
                if c.kind in ("not_null", "flag", "between", "regex", "unique")
                and int((results[c.id].result or {}).get("unexpected_count") or 0) > 0
            ]  # fmt: skip
            detail = (
                session.validate(
                    violating,
                    result_format="COMPLETE" if complete else "SUMMARY",
                    examples=10**9 if complete else EXAMPLES,
                    docs=False,
                )
                if violating
                else {}
            )
            for check in cat.checks:
                result = results[check.id]
                examples = _examples(detail[check.id]) if check.id in detail else []
                if check.kind == "row_count" and "rows_in" in check.kwargs:
                    # the quarantine's rows are the violations: list them from the table
                    limit = "" if complete else f" LIMIT {EXAMPLES}"
                    found = con.execute(f"{check.kwargs['rows']}{limit}").fetchall()
                    examples = [r[0] for r in found[:EXAMPLES]]  # file label and row
                    if complete:  # scoring against injected defects: the source's own keys
                        flagged[check.id] = [r[-1] for r in found]
                elif complete and check.id in detail:
                    info = detail[check.id].result or {}
                    flagged[check.id] = [
                        k.get("row_key") if isinstance(k, dict) else k
                        for k in info.get("unexpected_index_list") or []
                    ]
                rows.append(_row(check, result, examples))
        finally:
            session.domains.close()  # the worker is done before its connection closes
    errors = [r for r in rows if not r["passed"] and r["severity"] == "error"]
    warnings = [r for r in rows if not r["passed"] and r["severity"] == "warning"]
    report = {
        "passed": not errors,
        "engine": "Great Expectations (SQL datasource on DuckDB)",
        "seconds": round(time.perf_counter() - started, 2),
        "summary": {
            "checks": len(rows),
            "failed_errors": len(errors),
            "failed_warnings": len(warnings),
            "by_category": {
                c: sum(1 for r in rows if r["category"] == c)
                for c in ("conformance", "completeness", "plausibility")
            },
        },
        "failed": [r["id"] for r in errors + warnings],
        "checks": rows,
    }
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / QUALITY_REPORT).write_text(json.dumps(report, indent=2, default=str) + "\n")
    return QualityResult(passed=not errors, report=report, flagged=flagged)


def ingest_gate(
    staging_db: Path,
    *,
    manifest: dict[str, Any],
    previous_db: Path | None,
    out_dir: Path,
) -> tuple[bool, dict[str, Any]]:
    """The gate as ``connectors.ingest`` calls it, before publication."""
    result = run_gate(staging_db, manifest=manifest, previous_db=previous_db, out_dir=out_dir)
    return result.passed, result.report


def plain_sql_counts(release_db: Path, *, manifest: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """The same checks in hand-written DuckDB SQL: (rows checked, violations) per check."""
    out: dict[str, tuple[int, int]] = {}
    with duckdb.connect(str(release_db), read_only=True) as con:
        cat = catalogue.build_catalogue(con, manifest=manifest)
        by_domain: dict[str, list[Check]] = {}
        for check in cat.checks:
            by_domain.setdefault(check.domain, []).append(check)
        for domain, domain_checks in by_domain.items():
            select = []
            for c in domain_checks:
                col = f'"{c.column}"' if c.column else None
                if c.kind == "not_null":
                    select += ["count(*)", f"count_if({col} IS NULL)"]
                elif c.kind == "flag":
                    select += [f"count({col})", f"count_if(NOT {col})"]
                elif c.kind == "between":
                    lo, hi = c.kwargs["min_value"], c.kwargs["max_value"]
                    select += [f"count({col})", f"count_if({col} NOT BETWEEN {lo} AND {hi})"]
                elif c.kind == "regex":
                    pattern = c.kwargs["regex"].replace("'", "''")
                    select += [
                        f"count({col})",
                        f"count_if(NOT regexp_matches({col}, '{pattern}'))",
                    ]
                elif c.kind == "unique":
                    # GX counts every row whose value is repeated
                    select += [
                        f"count({col})",
                        f"(SELECT coalesce(sum(n), 0) FROM (SELECT count(*) AS n FROM "
                        f"({cat.domains[domain]}) GROUP BY {col} HAVING count(*) > 1))",
                    ]
                elif c.kind == "row_count":
                    rows_in = c.kwargs.get("rows_in")
                    select += [
                        str(rows_in) if rows_in is not None else f"max({col})",
                        f"max({col})" if rows_in is not None else "0",
                    ]
                else:  # mean
                    select += [f"count({col})", "0"]
            values = con.execute(
                f"SELECT {', '.join(select)} FROM ({cat.domains[domain]})"
            ).fetchall()[0]
            for i, c in enumerate(domain_checks):
                out[c.id] = (int(values[2 * i]), int(values[2 * i + 1]))
    return out
