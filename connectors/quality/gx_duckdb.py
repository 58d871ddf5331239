"""A small, version-pinned adapter that lets Great Expectations validate DuckDB via SQL.

Two upstream defects stop GX Core 1.x from working on DuckDB through duckdb-engine
(fivetran/great_expectations issues 10738 and 11579):

1. ``SqlAlchemyExecutionEngine.execute_query`` returns its result *after* leaving the
   ``with get_connection()`` block. With duckdb-engine the cursor is gone by then, so
   every bundled metric query reads no rows ("list index out of range"). The fix
   buffers the rows (``Result.freeze()``) while the connection is still open.
2. ``get_dialect_regex_expression`` knows no DuckDB dialect, so regex expectations
   raise ``NotImplementedError``. The fix maps them to DuckDB's ``regexp_matches``
   (a search, like Python's ``re.search``, which is GX's semantics).

``install()`` applies both once and only for the GX versions listed in
``TESTED_GX_VERSIONS``; ``tests/unit/test_gx_duckdb.py`` shows each defect on the
unpatched library and its absence after ``install()``, so an upgrade that fixes (or
moves) the code upstream is noticed.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Any, Final

import great_expectations as gx
import sqlalchemy as sa
from great_expectations.execution_engine import sqlalchemy_execution_engine as sa_engine
from great_expectations.expectations.metrics import util as metric_util

TESTED_GX_VERSIONS: Final = ("1.24.1",)
_REGEX_MODULES: Final = (
    "great_expectations.expectations.metrics.column_map_metrics.column_values_match_regex",
    "great_expectations.expectations.metrics.column_map_metrics.column_values_not_match_regex",
    "great_expectations.expectations.metrics.column_map_metrics.column_values_match_regex_list",
    "great_expectations.expectations.metrics.column_map_metrics.column_values_not_match_regex_list",
    "great_expectations.expectations.metrics.column_aggregate_metrics.column_values_match_regex_values",
    "great_expectations.expectations.metrics.column_aggregate_metrics.column_values_not_match_regex_values",
)

_original_execute_query = sa_engine.SqlAlchemyExecutionEngine.execute_query
_original_regex = getattr(metric_util, "get_dialect_regex_expression")  # noqa: B009
_installed = False


class UnsupportedGXVersion(RuntimeError):
    """The installed Great Expectations is not one this adapter was tested with."""


def _buffered_execute_query(self: Any, query: Any) -> Any:
    with self.get_connection() as connection:
        result = self._execute_query_with_recovery(connection, query)
        if not result.returns_rows:
            return result
        # read every row before the connection (and duckdb's cursor) goes away
        return result.freeze()()


def _is_duckdb(dialect: Any) -> bool:
    for candidate in (dialect, getattr(dialect, "dialect", None)):
        if getattr(candidate, "name", None) == "duckdb":
            return True
    return "duckdb" in str(getattr(dialect, "__name__", ""))


def _regex_with_duckdb(column: Any, regex: str, dialect: Any, positive: bool = True) -> Any:
    if _is_duckdb(dialect):
        expression = sa.func.regexp_matches(column, sa.literal(regex))
        return expression if positive else sa.not_(expression)
    return _original_regex(column, regex, dialect, positive)


def dispose_engines(path: Path) -> int:
    """Close every SQLAlchemy engine GX made for ``path``; return how many.

    GX's datasource and each execution engine keep their own pooled connection, and
    ``Datasource.get_engine().dispose()`` reaches only the first; DuckDB refuses other
    connections to the file while one with a different configuration lives.
    """
    import gc

    from sqlalchemy.engine import Engine

    disposed = 0
    for obj in gc.get_objects():
        if isinstance(obj, Engine) and str(path) in str(obj.url):
            obj.dispose()
            disposed += 1
    gc.collect()
    return disposed


def _set_regex_builder(builder: Any) -> None:
    """GX imports the regex builder by name into each metric module: replace every copy."""
    setattr(metric_util, "get_dialect_regex_expression", builder)  # noqa: B010
    for name in _REGEX_MODULES:
        module = importlib.import_module(name)
        if hasattr(module, "get_dialect_regex_expression"):
            setattr(module, "get_dialect_regex_expression", builder)  # noqa: B010


def install() -> None:
    """Patch the two defects (idempotent). Refuses untested GX versions."""
    global _installed
    if _installed:
        return
    if gx.__version__ not in TESTED_GX_VERSIONS:
        raise UnsupportedGXVersion(
            f"great_expectations {gx.__version__} is not tested with the DuckDB adapter "
            f"(tested: {', '.join(TESTED_GX_VERSIONS)}); pin it in pyproject.toml"
        )
    sa_engine.SqlAlchemyExecutionEngine.execute_query = _buffered_execute_query
    _set_regex_builder(_regex_with_duckdb)
    # GX's own progress bars and INFO logging are noise in normal runs
    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    _installed = True


def uninstall() -> None:
    """Undo ``install()`` (tests use it to show the upstream defects)."""
    global _installed
    sa_engine.SqlAlchemyExecutionEngine.execute_query = _original_execute_query
    _set_regex_builder(_original_regex)
    _installed = False
