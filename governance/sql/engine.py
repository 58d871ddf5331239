"""The query engine: a read-only, locked-down DuckDB connection per release.

Defence in depth behind the SQL policy: even a query the policy missed cannot reach a
file, the network, an extension or a setting, cannot outlive its time limit or exhaust
memory, and leaves nothing behind (the policy admits only SELECT, so no temp table,
macro, view or variable can be created; each query also gets a fresh cursor).

Settings applied before the configuration is locked: ``enable_external_access=false``
(files, network, extensions), ``autoinstall/autoload_known_extensions=false``,
``memory_limit``, ``threads``, ``max_temp_directory_size``, ``max_execution_time``;
then ``lock_configuration=true`` so that nothing later can change them.
"""

from __future__ import annotations

import copy
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import duckdb
import numpy as np

from governance.errors import InvalidRequest
from governance.sql import policy, scope
from governance.sql.cache import Bounded

DEFAULT_TIMEOUT_S: Final = 30.0
DEFAULT_MEMORY: Final = "2GB"
DEFAULT_THREADS: Final = 2
MAX_ROWS: Final = 10_000
CHECKED_QUERIES: Final = 512  # checked parses kept per release (least recently used dropped)
KEPT_ANSWERS: Final = 1024  # exact intermediate answers kept per release (see ``Engine.run``)
KEPT_BYTES: Final = 64 * 2**20  # ... and roughly how many bytes they may take
_CELL_BYTES: Final = 64  # a Python value in a result row, roughly, with its share of the tuple

Grants = dict[str, list[str]]


def grants_key(granted: Grants) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """A project's grants as a hashable key (the order of columns does not matter).

    >>> grants_key({"patients": ["sex", "age"]}) == grants_key({"patients": ["age", "sex"]})
    True
    >>> grants_key({"patients": ["sex"]}) == grants_key({"patients": ["sex", "age"]})
    False
    """
    return tuple(sorted((t, tuple(sorted(set(cols)))) for t, cols in granted.items()))


@dataclass(frozen=True)
class _Checked:
    """A checked query as cached: the parse tree kept as text, so every caller gets its own
    copy (the DP and exact compilers read the tree; none may change another's)."""

    sql: str
    tables: frozenset[str]
    columns: dict[str, frozenset[str]]
    aggregate: bool
    node_json: str

    def fresh(self) -> policy.CheckedQuery:
        return policy.CheckedQuery(
            sql=self.sql,
            tables=self.tables,
            columns=dict(self.columns),
            aggregate=self.aggregate,
            node=json.loads(self.node_json),
        )


class QueryFailed(InvalidRequest):
    """A query was refused by the engine (timeout, memory, a runtime error)."""

    code = "query_failed"


@dataclass(frozen=True)
class Result:
    columns: list[str]
    rows: list[tuple[Any, ...]]
    truncated: bool


def _weight(answer: Any) -> int:
    """Roughly the bytes a kept answer holds (a result, rows, or a numpy column)."""
    if isinstance(answer, np.ndarray):
        return int(answer.nbytes)
    if isinstance(answer, tuple) and all(isinstance(a, np.ndarray) for a in answer):
        return sum(int(a.nbytes) for a in answer)
    rows = answer.rows if isinstance(answer, Result) else answer
    return sum(len(r) for r in rows) * _CELL_BYTES + 64


class Planner:
    """A release's schema without its data, for rule 4's plans.

    An in-memory database holding every table of the release, empty, with the same
    column types, and every view with the same definition; DuckDB's
    ``statistics_propagation`` optimiser is off. A plan made here depends only on the
    SQL and the schema: the columns a scan reads are those the optimised plan of the
    real release reads, or more (statistics only ever prune), so a verdict made here is
    the same whatever the release holds. Shared by threads (one cursor each).
    """

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        tables = con.execute(
            """SELECT table_name, list(column_name ORDER BY column_index),
                      list(data_type ORDER BY column_index)
               FROM duckdb_columns() c
               WHERE NOT internal AND schema_name = 'main'
                 AND database_name = current_database()
                 AND table_name IN (SELECT table_name FROM duckdb_tables()
                                    WHERE database_name = current_database()
                                      AND schema_name = 'main')
               GROUP BY table_name ORDER BY table_name"""
        ).fetchall()
        views = con.execute(
            """SELECT sql FROM duckdb_views() WHERE NOT internal AND NOT temporary
                 AND schema_name = 'main' AND database_name = current_database()
               ORDER BY view_oid"""
        ).fetchall()
        self._con = duckdb.connect(
            ":memory:",
            config={
                "enable_external_access": False,
                "autoinstall_known_extensions": False,
                "autoload_known_extensions": False,
                "threads": 1,
                "memory_limit": "256MB",
                "max_temp_directory_size": "0B",
            },
        )
        for table, columns, types in tables:
            body = ", ".join(f"{scope.ident(c)} {t}" for c, t in zip(columns, types, strict=True))
            self._con.execute(f"CREATE TABLE {scope.ident(table)} ({body})")
        for (view,) in views:
            self._con.execute(view)
        self._con.execute("SET disabled_optimizers = 'statistics_propagation'")
        self._con.execute("SET lock_configuration = true")

    def explain(self, sql: str) -> list[tuple[Any, ...]]:
        cur = self._con.cursor()
        try:
            return cur.execute(f"EXPLAIN (FORMAT json) {sql}").fetchall()
        finally:
            cur.close()


class Engine:
    """One locked-down connection to one release file; a cursor per query."""

    def __init__(
        self,
        release_path: Path,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        memory_limit: str = DEFAULT_MEMORY,
        threads: int = DEFAULT_THREADS,
    ) -> None:
        self.path = release_path
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._con = duckdb.connect(
            str(release_path),
            read_only=True,
            config={
                "enable_external_access": False,
                "autoinstall_known_extensions": False,
                "autoload_known_extensions": False,
                "memory_limit": memory_limit,
                "threads": threads,
                "max_temp_directory_size": "0B",
            },
        )
        try:
            self._con.execute(f"SET GLOBAL max_execution_time = {int(timeout_s * 1000)}")
            self._con.execute("SET GLOBAL lock_configuration = true")
        except duckdb.InvalidInputException as exc:
            # another Engine of this process opened the file first: DuckDB shares one
            # database instance per file and process, whose settings that Engine set and
            # locked (the connect above proved the configuration is the same)
            if "configuration has been locked" not in str(exc):
                raise
        # what never changes while this release file is read (it is immutable once
        # published): its catalogue, and the checked parse of repeated SQL per grants
        self._catalogue: dict[str, dict[str, str]] | None = None
        # the policy's names and schema-only planner, made once per release and shared
        # with this engine's scoped copies (``scoped``), like the caches below
        self._schema: Bounded[str, Any] = Bounded(2)
        self._checks: Bounded[tuple[str, tuple[Any, ...], bool], _Checked] = Bounded(
            CHECKED_QUERIES
        )
        self._bound: Bounded[tuple[tuple[str, ...], str], bool] = Bounded(CHECKED_QUERIES)
        # exact answers of repeated SQL, per owner (a project) and scope: see ``run``
        self._kept: Bounded[tuple[Any, ...], Any] = Bounded(
            KEPT_ANSWERS, weigh=_weight, max_weight=KEPT_BYTES
        )
        self._views: tuple[str, ...] = ()  # a scoped engine's TEMP views (see ``scoped``)
        self._scopes: Bounded[frozenset[str], tuple[str, ...]] = Bounded(CHECKED_QUERIES)

    def scoped(self, systems: frozenset[str]) -> Engine:
        """This engine restricted to rows whose feeds carry ``systems`` (``sql.scope``):
        every cursor it gives defines the filtering views first. It shares the
        connection and the caches (a check does not depend on rows)."""

        def make() -> tuple[str, ...]:
            cur = self.cursor()
            try:
                catalog = str(cur.execute("SELECT current_database()").fetchall()[0][0])
                return tuple(scope.statements(catalog, self.catalogue(cur), systems))
            finally:
                cur.close()

        restricted = copy.copy(self)
        # the views depend only on the release (immutable) and the feeds: made once each
        restricted._views = self._scopes.get_or_make(systems, make)
        return restricted

    def check(
        self, cur: duckdb.DuckDBPyConnection, sql: str, *, granted: Grants, real: bool
    ) -> policy.CheckedQuery:
        """The SQL policy's verdict on ``sql`` for these grants (``policy.check``), cached
        per release, query text, grants and target: a refusal is raised again each time
        (and not cached), an accepted query is checked once."""

        def make() -> _Checked:
            if not self._views:
                c = policy.check(
                    cur, sql, granted=granted, real=real, names=self._names(cur),
                    planner=self._planner(cur),
                )  # fmt: skip
            else:  # the verdict is on the release as granted, not on the filtering views
                with self._lock:
                    plain = self._con.cursor()
                try:
                    c = policy.check(
                        plain, sql, granted=granted, real=real, names=self._names(plain),
                        planner=self._planner(plain),
                    )  # fmt: skip
                finally:
                    plain.close()
            return _Checked(c.sql, c.tables, dict(c.columns), c.aggregate, json.dumps(c.node))

        return self._checks.get_or_make((sql, grants_key(granted), real), make).fresh()

    def _names(self, plain: duckdb.DuckDBPyConnection) -> policy.Names:
        """The policy's names of the release (read once: it never changes), from a
        cursor without this engine's filtering views."""
        names: policy.Names = self._schema.get_or_make("names", lambda: policy.release_names(plain))
        return names

    def _planner(self, plain: duckdb.DuckDBPyConnection) -> Planner:
        """The release's schema without its data, for rule 4's plans (made once)."""
        planner: Planner = self._schema.get_or_make("planner", lambda: Planner(plain))
        return planner

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A fresh cursor (policy checks use one too: they must see the same catalogue)."""
        with self._lock:
            cur = self._con.cursor()
        for statement in self._views:
            cur.execute(statement)
        return cur

    def run(
        self, sql: str, *, max_rows: int = MAX_ROWS, offset: int = 0, owner: str | None = None
    ) -> Result:
        """At most ``max_rows`` rows after the first ``offset`` (``truncated``: more remain).

        With an ``owner`` (a project), the answer is kept for that owner's next identical
        request (same SQL, page and scope): the release never changes, so neither does
        the answer, and only the time it takes tells a request that it was kept. Keyed by
        owner, that time says nothing about any other project's queries. What is kept is
        bounded (``KEPT_ANSWERS``, ``KEPT_BYTES``; least recently used dropped); a
        failure is never kept. DP noise is never kept: only the exact answers it is added
        to (``privacy.dp_answer``), so every DP answer is noised afresh.
        """
        if owner is None:
            return self._run(sql, max_rows=max_rows, offset=offset)
        key = ("run", owner, self._views, sql, max_rows, offset)
        kept: Result = self._kept.get_or_make(
            key, lambda: self._run(sql, max_rows=max_rows, offset=offset)
        )
        return Result(list(kept.columns), list(kept.rows), kept.truncated)

    def _run(self, sql: str, *, max_rows: int, offset: int) -> Result:
        cur = self.cursor()
        try:
            rel = cur.execute(sql)
            columns = [d[0] for d in rel.description or []]
            skipped = 0
            while skipped < offset:  # paging: the rows before this page are read, not sent
                batch = rel.fetchmany(min(offset - skipped, 50_000))
                if not batch:
                    break
                skipped += len(batch)
            rows = rel.fetchmany(max_rows + 1)
        except duckdb.Error as exc:
            raise self.failure(exc) from None
        finally:
            cur.close()
        return Result(columns, rows[:max_rows], truncated=len(rows) > max_rows)

    def fetch(
        self, cur: duckdb.DuckDBPyConnection, sql: str, *, owner: str | None = None
    ) -> list[tuple[Any, ...]]:
        """All rows of hub-written SQL on ``cur``; engine errors become fixed messages.
        With an ``owner``, kept for that owner as ``run`` keeps answers."""

        def read() -> list[tuple[Any, ...]]:
            try:
                return cur.execute(sql).fetchall()
            except duckdb.Error as exc:
                raise self.failure(exc) from None

        if owner is None:
            return read()
        rows: list[tuple[Any, ...]] = self._kept.get_or_make(
            ("fetch", owner, self._views, sql), read
        )
        return list(rows)

    def fetch_columns(
        self, cur: duckdb.DuckDBPyConnection, sql: str, *, owner: str | None = None
    ) -> tuple[np.ndarray[Any, Any], ...]:
        """Every column of hub-written SQL on ``cur`` as numpy arrays (no Python object
        per row); engine errors become fixed messages. With an ``owner``, kept for that
        owner as ``run`` keeps answers (read-only: nobody changes them)."""

        def read() -> tuple[np.ndarray[Any, Any], ...]:
            try:
                columns = cur.execute(sql).fetchnumpy()
            except duckdb.Error as exc:
                raise self.failure(exc) from None
            arrays = tuple(np.array(values) for values in columns.values())
            for array in arrays:
                array.flags.writeable = False
            return arrays

        if owner is None:
            return read()
        kept: tuple[np.ndarray[Any, Any], ...] = self._kept.get_or_make(
            ("columns", owner, self._views, sql), read
        )
        return kept

    def catalogue(self, cur: duckdb.DuckDBPyConnection) -> dict[str, dict[str, str]]:
        """Every table and view of the release: column name → type (no row is read).

        Read once per release (it never changes once published); each caller gets a copy.
        """
        if self._catalogue is None:
            out: dict[str, dict[str, str]] = {}
            rows = cur.execute(
                "SELECT table_name, column_name, data_type FROM duckdb_columns() "
                "WHERE NOT internal AND schema_name = 'main' AND database_name <> 'temp'"
            ).fetchall()
            for table, column, dtype in rows:
                out.setdefault(str(table).lower(), {})[str(column).lower()] = str(dtype)
            self._catalogue = out
        return {table: dict(columns) for table, columns in self._catalogue.items()}

    def explain(self, cur: duckdb.DuckDBPyConnection, sql: str) -> bool:
        """Whether DuckDB can bind and plan ``sql``, planned on the release's schema alone
        (``Planner``: no data, no statistics), so the verdict cannot depend on what the
        release holds; the engine's scope views only filter rows, so they bind the same.

        A ``True`` verdict is kept per SQL text and scope; a refusal is asked again each
        time, like the policy's.
        """
        key = (self._views, sql)
        if key in self._bound:
            return True
        try:
            self._planner(cur).explain(sql)
        except duckdb.Error:
            return False
        self._bound.get_or_make(key, lambda: True)
        return True

    def failure(self, exc: BaseException) -> QueryFailed:
        """A fixed message for an engine error: DuckDB's own text can quote data values,
        so it is only classified (timeout, memory, other), never passed on."""
        if isinstance(exc, duckdb.InterruptException):
            return QueryFailed(f"the query ran longer than {self.timeout_s:g} s and was stopped")
        if isinstance(exc, duckdb.OutOfMemoryException):
            return QueryFailed("the query needed more memory than a query may use")
        message = str(exc).lower()
        if "timeout" in message or "execution time" in message or "interrupted" in message:
            return QueryFailed(f"the query ran longer than {self.timeout_s:g} s and was stopped")
        if "out of memory" in message or "memory limit" in message:
            return QueryFailed("the query needed more memory than a query may use")
        kind = type(exc).__name__ if type(exc).__module__.startswith("duckdb") else "Error"
        return QueryFailed(f"the query failed in the engine ({kind})")

    def close(self) -> None:
        self._con.close()
