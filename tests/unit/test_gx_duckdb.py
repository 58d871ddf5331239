"""The GX-on-DuckDB adapter: each upstream defect shows without it and is gone with it."""

from __future__ import annotations

import duckdb
import great_expectations as gx
import great_expectations.expectations as gxe
import pytest
from sqlalchemy.pool import StaticPool

from connectors.quality import gx_duckdb


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "t.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE TABLE t AS SELECT range AS id, 'A' || range AS code FROM range(100)")
        con.execute("INSERT INTO t VALUES (100, 'zz')")
    return path


def validate(path, expectation):
    context = gx.get_context(mode="ephemeral")
    source = context.data_sources.add_sql(
        name="s",
        connection_string=f"duckdb:///{path}",
        kwargs={"poolclass": StaticPool},
        create_temp_table=False,
    )
    batch = (
        source.add_table_asset(name="t", table_name="t")
        .add_batch_definition_whole_table("b")
        .get_batch()
    )
    try:
        return batch.validate(expectation, result_format={"result_format": "BASIC"})
    finally:
        gx_duckdb.dispose_engines(path)


def test_without_the_adapter_metrics_come_back_empty_and_regex_is_unsupported(db):
    gx_duckdb.uninstall()
    try:
        result = validate(db, gxe.ExpectColumnValuesToNotBeNull(column="code"))
        assert not result.success
        assert "list index out of range" in str(result.exception_info)
        result = validate(db, gxe.ExpectColumnValuesToMatchRegex(column="code", regex="^A"))
        assert not result.success and result.exception_info
    finally:
        gx_duckdb.install()


def test_with_the_adapter_counts_and_regex_are_right(db):
    gx_duckdb.install()
    result = validate(db, gxe.ExpectColumnValuesToNotBeNull(column="code"))
    assert result.success and result.result["element_count"] == 101
    result = validate(
        db, gxe.ExpectColumnValuesToMatchRegex(column="code", regex="^A[0-9]+$", mostly=0.5)
    )
    assert result.success and result.result["unexpected_count"] == 1
    # the connection is released: the file opens again for writing
    duckdb.connect(str(db)).close()


def test_the_adapter_refuses_untested_versions(monkeypatch):
    gx_duckdb.uninstall()
    monkeypatch.setattr(gx, "__version__", "0.0.1")
    try:
        with pytest.raises(gx_duckdb.UnsupportedGXVersion, match="not tested"):
            gx_duckdb.install()
    finally:
        monkeypatch.undo()
        gx_duckdb.install()
