"""The locked-down engine: runaway queries end cleanly, nothing escapes, it stays usable."""

from __future__ import annotations

import pytest

from connectors.ingest import ingest
from governance.sql.engine import Engine, QueryFailed


@pytest.fixture(scope="module")
def engine(population_3k, tmp_path_factory):
    from connectors.secrets import resolve_keys

    home = tmp_path_factory.mktemp("engine") / "hub"
    release = ingest(
        population_3k, fmt="native", home=home, keys=resolve_keys(home, create=True)
    ).release
    e = Engine(release.path, timeout_s=2, memory_limit="200MB")
    yield e
    e.close()


def test_a_never_ending_recursive_query_times_out_and_the_next_one_works(engine):
    with pytest.raises(QueryFailed, match="longer than 2 s"):
        engine.run(
            "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r"
        )
    assert engine.run("SELECT count(*) FROM patients").rows == [(3000,)]


def test_a_huge_join_hits_the_memory_limit_cleanly(engine):
    with pytest.raises(QueryFailed):
        engine.run("SELECT list(a.encounter_id) FROM encounters a, encounters b, encounters c")
    assert engine.run("SELECT count(*) FROM patients").rows == [(3000,)]


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM read_csv('/etc/passwd')",
        "COPY (SELECT 1) TO '{tmp}/leak.csv'",
        "ATTACH '{tmp}/other.duckdb'",
        "INSTALL httpfs",
        "SET threads = 64",
        "SET enable_external_access = true",
        "CREATE TABLE x AS SELECT 1",
    ],
)
def test_files_network_settings_and_writes_are_out_of_reach(engine, sql, tmp_path):
    with pytest.raises(QueryFailed) as refused:
        engine.run(sql.format(tmp=tmp_path))
    assert "passwd" not in str(refused.value) and "root" not in str(refused.value)
    assert list(tmp_path.iterdir()) == []


def test_results_are_capped(engine):
    result = engine.run("SELECT encounter_id FROM encounters", max_rows=50)
    assert len(result.rows) == 50 and result.truncated
