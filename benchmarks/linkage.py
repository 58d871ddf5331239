"""Regional linkage: quality against the generator's truth, and speed.

    python -m benchmarks.linkage [patients] [larger] [spark_patients]

For ``patients`` people (default 100,000): the feeds of `hub synth --format feeds`
linked by the hub (valid NHS number, then Splink) and, side by side, by the NHS number
alone (records without a valid one stay unlinked), both scored against the truth:
pairwise precision, recall and F1, overall and by ethnic group, sex, age band and IMD
decile. Targets (issue 17): precision ≥ 0.999, recall ≥ 0.995, and no ethnic group's
recall more than 0.5 percentage points below the overall figure.

Speed, in separate processes (wall time and peak memory of the process tree): the whole
`hub ingest --format feeds` against `hub ingest --format native` of the same population
(the same rows without linkage), at ``patients`` and at ``larger`` people; and the
linkage step alone on DuckDB and on a local Spark session at ``spark_patients``.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from benchmarks._measure import run_measured
from connectors.linkage import link, quality
from connectors.linkage.index import PersonIndex
from connectors.sources.feeds import read_identities
from synthetic_data.feeds import write_feeds
from synthetic_data.generator import SynthConfig, generate

HUB = [sys.executable, "-m", "hub.cli"]


def _nhs_only(batch: pa.Table) -> pa.Table:
    """Deterministic linkage on a valid NHS number alone; every other record alone."""
    con = duckdb.connect()
    con.register("b", batch)
    return con.sql(
        """SELECT record_key,
                  CASE WHEN nhs_valid THEN dense_rank() OVER (ORDER BY nhs_number)
                       ELSE 10000000000 + row_number() OVER () END AS person,
                  'nhs' AS method, NULL::DOUBLE AS match_probability
           FROM b"""
    ).to_arrow_table()


def _population(patients: int, work: Path) -> tuple[Path, Path]:
    pop = work / f"pop-{patients}"
    big = patients > 450_000  # the test NHS number range holds 450,000 people
    generate(SynthConfig(patients=patients, seed=17, nhs_range="synthetic" if big else "test"), pop)
    feeds = work / f"feeds-{patients}"
    write_feeds(pop, feeds, seed=17)
    return pop, feeds


def _quality(feeds: Path) -> dict[str, Any]:
    batch = read_identities(feeds)
    started = time.perf_counter()
    linked = link.link(batch, PersonIndex.empty())
    seconds = time.perf_counter() - started
    truth = feeds / "truth"
    return {
        "records": batch.num_rows,
        "link_seconds": seconds,
        "model": linked.model,
        "match_rates": quality.match_rates(linked.assignments),
        "hub": quality.against_truth(linked.assignments, truth),
        "nhs_only": quality.against_truth(_nhs_only(batch), truth),
    }


def _ingest_pair(pop: Path, feeds: Path, work: Path) -> dict[str, Any]:
    """`hub ingest --format feeds` vs `--format native` of the same people, gate on."""
    out: dict[str, Any] = {}
    for fmt, src in (("native", pop), ("feeds", feeds)):
        home = work / f"home-{fmt}-{pop.name}"
        env = {**os.environ, "HUB_HOME": str(home)}
        measured = run_measured([*HUB, "ingest", str(src), "--format", fmt], env=env)
        out[fmt] = {"seconds": measured.seconds, "peak_rss_mb": measured.peak_rss_mb}
        shutil.rmtree(home, ignore_errors=True)
    out["ratio"] = out["feeds"]["seconds"] / out["native"]["seconds"]
    return out


def _spark(feeds: Path) -> dict[str, Any]:
    batch = read_identities(feeds)
    started = time.perf_counter()
    on_duckdb = link.link(batch, PersonIndex.empty())
    duck = time.perf_counter() - started
    started = time.perf_counter()
    spark = link.spark_session(cores=os.cpu_count() or 2)
    session = time.perf_counter() - started
    try:
        started = time.perf_counter()
        on_spark = link.link(batch, PersonIndex.empty(), spark=spark)
        spark_seconds = time.perf_counter() - started
    finally:
        spark.stop()
    same = quality.against_truth(on_spark.assignments, feeds / "truth")
    return {
        "records": batch.num_rows,
        "duckdb_seconds": duck,
        "spark_session_seconds": session,
        "spark_seconds": spark_seconds,
        "spark_f1": same["f1"],
        "duckdb_f1": quality.against_truth(on_duckdb.assignments, feeds / "truth")["f1"],
    }


def run(
    patients: int = 100_000, larger: int | None = 1_000_000, spark_patients: int = 20_000
) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="bench-linkage-"))
    try:
        pop, feeds = _population(patients, work)
        result: dict[str, Any] = {"patients": patients, "quality": _quality(feeds)}
        result["ingest"] = {str(patients): _ingest_pair(pop, feeds, work)}
        shutil.rmtree(pop)
        if larger:
            big_pop, big_feeds = _population(larger, work)
            result["ingest"][str(larger)] = _ingest_pair(big_pop, big_feeds, work)
            shutil.rmtree(big_pop)
            shutil.rmtree(big_feeds)
        if spark_patients:
            _, small = _population(spark_patients, work)
            result["spark"] = {"patients": spark_patients, **_spark(small)}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return result


def _row(name: str, s: dict[str, Any]) -> str:
    return f"| {name} | {s['precision']:.5f} | {s['recall']:.5f} | {s['f1']:.5f} |"


def markdown(r: dict[str, Any]) -> str:
    q = r["quality"]
    hub, nhs = q["hub"], q["nhs_only"]
    lines = [
        "## Regional linkage (`python -m benchmarks.linkage`)",
        "",
        f"{r['patients']:,} generated people, {q['records']:,} feed records (two GP "
        "suppliers, six trusts, A&E, the death register); pairwise scores against the "
        "generator's truth. Targets: precision ≥ 0.999, recall ≥ 0.995, no ethnic group's "
        "recall more than 0.5 points below the overall figure.",
        "",
        "| linkage | precision | recall | F1 |",
        "|---|---|---|---|",
        _row("hub: NHS number, then Splink", hub),
        _row("NHS number only", nhs),
        "",
        "| ethnic group | hub recall | NHS-only recall |",
        "|---|---|---|",
    ]
    for group, scores in hub["by_group"]["ethnic_group"].items():
        other = nhs["by_group"]["ethnic_group"][group]
        lines.append(f"| {group} | {scores['recall']:.5f} | {other['recall']:.5f} |")
    lines += ["", "| size | native ingest s | feeds ingest s (linked) | ratio | peak MB |",
              "|---|---|---|---|---|"]  # fmt: skip
    for size, s in r.get("ingest", {}).items():
        lines.append(
            f"| {int(size):,} | {s['native']['seconds']:.1f} | {s['feeds']['seconds']:.1f} "
            f"| {s['ratio']:.2f}× | {s['feeds']['peak_rss_mb']:.0f} |"
        )
    spark = r.get("spark")
    if spark:
        lines += [
            "",
            f"Spark (local, {spark['patients']:,} people, {spark['records']:,} records): "
            f"linkage {spark['spark_seconds']:.1f} s (plus {spark['spark_session_seconds']:.1f} s "
            f"to start the session) against {spark['duckdb_seconds']:.1f} s on DuckDB; F1 "
            f"{spark['spark_f1']:.5f} vs {spark['duckdb_f1']:.5f}.",
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:]]
    names = ("patients", "larger", "spark_patients")
    result = run(**dict(zip(names, args, strict=False)))
    print(json.dumps({k: v for k, v in result.items()}, indent=2, default=str))
    print(markdown(result))
