"""The same linkage model on Spark (local mode) as on DuckDB: the scale-out path.

Training stays on DuckDB (a sample); the candidate pairs, the step that grows with the
region, are scored on Spark. Both engines must put the same records together.
"""

from __future__ import annotations

import shutil

import pytest

from connectors.linkage import link
from connectors.linkage.index import PersonIndex
from connectors.sources.feeds import read_identities
from synthetic_data.feeds import write_feeds
from synthetic_data.generator import SynthConfig, generate

pytestmark = pytest.mark.skipif(
    shutil.which("java") is None, reason="Spark needs a Java runtime (java not on PATH)"
)


def _groups(result: link.LinkResult) -> set[frozenset[str]]:
    people: dict[int, set[str]] = {}
    for key, person in zip(
        result.assignments.column("record_key").to_pylist(),
        result.assignments.column("person").to_pylist(),
        strict=True,
    ):
        people.setdefault(person, set()).add(key)
    return {frozenset(v) for v in people.values()}


def test_spark_scores_the_same_links_as_duckdb(tmp_path):
    generate(SynthConfig(patients=400, seed=8), tmp_path / "pop", workers=1)
    write_feeds(tmp_path / "pop", tmp_path / "feeds", seed=8)
    batch = read_identities(tmp_path / "feeds")
    on_duckdb = link.link(batch, PersonIndex.empty(), threads=1)
    spark = link.spark_session(cores=2, memory="1g")
    try:
        on_spark = link.link(batch, PersonIndex.empty(), threads=1, spark=spark)
    finally:
        spark.stop()
    assert on_spark.model["engine"] == "splink (trained on DuckDB, scored on Spark)"
    methods = on_duckdb.assignments.column("method").to_pylist()
    assert methods.count("probabilistic") > 0  # the step Spark runs was exercised
    assert _groups(on_spark) == _groups(on_duckdb)
