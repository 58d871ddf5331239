"""Exact outputs: run a checked query, apply disclosure control, hand it to a steward.

    classify (exact_plan: every column a key, count, sum or mean) ─┐ before any data:
    bind the hub's per-person statistics queries (EXPLAIN)        ─┘ refusals are 4xx
    ─────────────────────────────────── data is read from here on ─────────────────────
    run → who is behind each cell (people, largest two contributions, per relation of
    the FROM clause) → SDC (disclosure) → disclosure ledger (differencing, trackers)
    → signed manifest → output pending review

Once data has been read, success or failure must not depend on it: a failure from here on
is not returned to the researcher but stored as an output the steward sees (status
pending, ``manifest.failed``); the researcher is told "pending review" either way.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import duckdb
import numpy as np
import numpy.typing as npt

from governance.outputs import disclosure
from governance.outputs.disclosure_ledger import unique_keys
from governance.outputs.exact_plan import (
    ExactPlan,
    OutputColumn,
    check_cte_names,
    check_person_joins,
    classify,
    column_ref,
    constant,
    relation_tables,
    row_level_tree,
)
from governance.outputs.person_keys import PERSON
from governance.sql.engine import MAX_ROWS, Engine
from governance.sql.policy import PolicyError

FAILED_REASON: Final = (
    "the query failed after reading the real release; a steward reviews what happened "
    "(nothing is released)"
)
Key = tuple[Any, ...]


@dataclass(frozen=True)
class Prepared:
    """An exact query checked and bound before any data is read."""

    plan: ExactPlan
    statistics: tuple[str, ...]  # one hub-written SQL per person attribution
    populations: tuple[str, ...]


@dataclass
class Computed:
    columns: list[str]
    rows: list[dict[str, Any]]
    sdc: disclosure.SdcResult
    population: npt.NDArray[np.int64]  # the person keys behind the output, sorted, unique
    row_keys: npt.NDArray[np.int64]  # hash(person, rows) of each, sorted, unique
    # per aggregate, the (people, row keys) behind its published cells, each set once
    parts: list[tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]]


def _sql(cur: duckdb.DuckDBPyConnection, tree: dict[str, Any]) -> str:
    text: str = cur.execute("SELECT json_deserialize_sql($j)", {"j": json.dumps(tree)}).fetchall()[
        0
    ][0]
    return text


def _contribution(j: int, col: OutputColumn) -> str:
    cond = f"coalesce(TRY_CAST(f{j} AS BOOLEAN), FALSE)"
    if col.kind == "count":
        if col.function == "count_star" or not col.node.get("arguments"):
            return f"nullif(count(*) FILTER (WHERE {cond}), 0)"
        distinct = "DISTINCT " if col.distinct or col.function == "approx_count_distinct" else ""
        return f"nullif(count({distinct}v{j}) FILTER (WHERE {cond}), 0)"
    return f"sum(abs(TRY_CAST(v{j} AS DOUBLE))) FILTER (WHERE {cond} AND v{j} IS NOT NULL)"


def _select_items(plan: ExactPlan, relation: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for i, col in enumerate(c for c in plan.columns if c.kind == "group"):
        items.append({**col.node, "alias": f"g{i}"})
    items.append(column_ref(relation, PERSON, alias="pid"))
    for j, col in enumerate(plan.aggregates):
        args = [(a or {}).get("expression") for a in col.node.get("arguments") or []]
        value = args[0] if args and isinstance(args[0], dict) else constant("1")
        items.append({**value, "alias": f"v{j}"})
        flt = col.node.get("filter") or constant("true", "BOOLEAN")
        items.append({**flt, "alias": f"f{j}"})
    return items


STATS: Final = 6  # per aggregate and cell: people, total, two largest, two smallest


def _population_sql(rows: str, keys: list[str], plan: ExactPlan) -> str:
    """The people behind each cell, with how many of their rows each aggregate counts.

    The people are the disclosure ledger's populations (differencing and trackers), one
    per aggregate and only from the cells the output publishes (``populations``): a
    left-out row's person, or one whose value an aggregate skips (NULL), adds nothing
    to what is published, and counted as a member they hid a one-person difference (a
    red team's differencing by people with NULL values, and by a left-out row). The rows
    give the row keys (``hash(person, rows)``) that tell two outputs over the same people
    apart when one person's rows differ (``WHERE o.code = 'X' OR <one person>``).
    """
    counted = ", ".join(
        f"count(*) FILTER (WHERE coalesce(TRY_CAST(f{j} AS BOOLEAN), FALSE)"
        + (
            ")"
            if col.function == "count_star" or not col.node.get("arguments")
            else f" AND v{j} IS NOT NULL)"
        )
        + f" AS c{j}"
        for j, col in enumerate(plan.aggregates)
    )
    return (
        f"SELECT {', '.join([*keys, 'pid'])}, {counted} FROM ({rows}) AS r "  # noqa: S608
        "WHERE pid IS NOT NULL GROUP BY ALL"
    )


def _mix(people: npt.NDArray[np.int64], rows: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """A key per (person, number of rows): equal only for the same person with the same
    rows (a 64-bit mix, non-negative)."""
    with np.errstate(over="ignore"):
        a = people.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        b = rows.astype(np.uint64) * np.uint64(0xC2B2AE3D27D4EB4F)
        mixed = (a ^ (b + np.uint64(0x165667B19E3779F9) + (a << np.uint64(6)))) >> np.uint64(1)
    return mixed.astype(np.int64)


def populations(
    plan: ExactPlan,
    names: Sequence[str],
    rows: list[dict[str, Any]],
    sdc: disclosure.SdcResult,
    frames: list[tuple[Any, ...]],
) -> list[tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]]:
    """(people, row keys) behind each aggregate's published cells, each set once.

    ``frames``: per person attribution, the columns of ``_population_sql`` (group keys,
    person, rows per aggregate)."""
    keys = [names[p] for p in plan.positions("group")]
    left = {a.row for a in sdc.actions if a.left_out}
    kept = [i for i in range(len(rows)) if i not in left]
    out: list[tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]] = []
    seen: set[bytes] = set()
    for j, col in enumerate(plan.aggregates):
        name = names[col.position]
        shown = {
            tuple(rows[i][k] for k in keys)
            for at, i in enumerate(kept)
            if sdc.rows[at].get(name) is not None
        }
        people_parts, row_parts = [], []
        for frame in frames:
            n_keys = len(keys)
            pid = np.asarray(frame[n_keys], dtype=np.int64)
            counts = np.asarray(frame[n_keys + 1 + j], dtype=np.int64)
            mask = counts > 0
            if n_keys:
                cells = zip(*(frame[k] for k in range(n_keys)), strict=True)
                mask &= np.fromiter((c in shown for c in cells), dtype=bool, count=len(pid))
            elif () not in shown:
                mask[:] = False
            people_parts.append(pid[mask])
            row_parts.append(counts[mask])
        people = np.concatenate(people_parts) if people_parts else np.empty(0, np.int64)
        counts = np.concatenate(row_parts) if row_parts else np.empty(0, np.int64)
        unique, inverse = np.unique(people, return_inverse=True)
        totals = np.bincount(inverse, weights=counts, minlength=len(unique)).astype(np.int64)
        if unique.tobytes() in seen:
            continue
        seen.add(unique.tobytes())
        out.append((unique, unique_keys(_mix(unique, totals))))
    return out


def prepare(
    engine: Engine,
    cur: duckdb.DuckDBPyConnection,
    node: dict[str, Any],
    catalogue: dict[str, dict[str, str]],
) -> Prepared:
    """Classify the output columns and bind the hub's own queries: reads no data."""
    plan = classify(node)
    check_cte_names(node, catalogue)
    check_person_joins(node, catalogue)
    keys = [f"g{i}" for i, _ in enumerate(plan.positions("group"))]
    stats, pops = [], []
    for relation, table in relation_tables(node):
        tree = row_level_tree(node, _select_items(plan, relation))
        try:
            rows = _sql(cur, tree)
        except duckdb.Error:
            rows = ""
        per = ", ".join([*keys, "pid", *(f"{_contribution(j, c)} AS c{j}" for j, c in
                                          enumerate(plan.aggregates))])  # fmt: skip
        summary = ", ".join(
            [*keys]
            + [
                f"count(c{j}) AS n{j}, coalesce(sum(c{j}), 0) AS t{j}, "
                f"coalesce(max(c{j}), 0) AS a{j}, coalesce(list_sort(list(c{j}) FILTER "
                f"(WHERE c{j} IS NOT NULL), 'DESC')[2], 0) AS b{j}, "
                f"coalesce(min(c{j}), 0) AS l{j}, coalesce(list_sort(list(c{j}) FILTER "
                f"(WHERE c{j} IS NOT NULL))[2], 0) AS m{j}"
                for j, _ in enumerate(plan.aggregates)
            ]
        )
        group = " GROUP BY ALL" if keys else ""
        sql = (  # hub-written around DuckDB's own rendering of the checked tree
            f"WITH r AS ({rows}), per AS (SELECT {per} FROM r WHERE pid IS NOT NULL "  # noqa: S608
            f"GROUP BY ALL) SELECT {summary} FROM per{group}"
        )
        population = _population_sql(rows, keys, plan)
        if rows and engine.explain(cur, sql) and engine.explain(cur, population):
            stats.append(sql)
            pops.append(population)
            continue
        if table is not None and PERSON not in catalogue.get(table.lower(), {PERSON: ""}):
            continue  # a reference table (codes, terms): nobody's rows
        raise PolicyError(
            "exact_person_unknown",
            f"the hub cannot tell whose rows {relation!r} holds: keep each table's own "
            "person_id reachable (and give derived tables an alias)",
        )
    return Prepared(plan, tuple(stats), tuple(pops))


def _unsafe(
    plan: ExactPlan,
    names: Sequence[str],
    rows: list[dict[str, Any]],
    stats: list[dict[Key, list[disclosure.Contributions]]],
    threshold: int,
) -> dict[tuple[int, str], tuple[str, str]]:
    keys = [names[p] for p in plan.positions("group")]
    out: dict[tuple[int, str], tuple[str, str]] = {}
    for i, row in enumerate(rows):
        key = tuple(row[k] for k in keys)
        for by_key in stats:
            cells = by_key.get(key)
            for j, col in enumerate(plan.aggregates):
                name = names[col.position]
                if (i, name) in out:
                    continue
                risk = (
                    ("small_count", "no one could be counted behind this cell")
                    if cells is None
                    else disclosure.cell_risk(cells[j], threshold=threshold)
                )
                if risk is None and cells is not None and col.kind in ("sum", "mean"):
                    risk = disclosure.known_others(cells[j])
                if risk is not None:
                    out[(i, name)] = risk
    return out


def compute(
    engine: Engine,
    sql: str,
    prepared: Prepared,
    *,
    threshold: int,
    multiple: int,
    owner: str | None = None,
) -> Computed:
    """Run the query and the hub's statistics and apply disclosure control (reads data:
    any exception from here is a data-dependent failure for the steward). With an
    ``owner`` (the project), the exact answers read are kept for its next identical
    query (``Engine.run``); disclosure control and the ledger's check run every time."""
    result = engine.run(sql, owner=owner)
    if result.truncated:
        # rows cut before disclosure control would decide which small groups show
        raise ValueError(f"the output has more than {MAX_ROWS:,} rows")
    plan = prepared.plan
    names = result.columns
    if len(set(names)) != len(names):
        raise ValueError("two output columns share a name")  # the steward sees a failed output
    rows = [dict(zip(names, r, strict=True)) for r in result.rows]
    n_keys = len(plan.positions("group"))
    stats: list[dict[Key, list[disclosure.Contributions]]] = []
    frames: list[tuple[Any, ...]] = []
    cur = engine.cursor()
    try:
        for stat_sql, pop_sql in zip(prepared.statistics, prepared.populations, strict=True):
            by_key: dict[Key, list[disclosure.Contributions]] = {}
            for r in engine.fetch(cur, stat_sql, owner=owner):
                cells = [
                    disclosure.Contributions(
                        int(r[at]), *(float(v) for v in r[at + 1 : at + STATS])
                    )
                    for at in (n_keys + STATS * j for j, _ in enumerate(plan.aggregates))
                ]
                by_key[tuple(r[:n_keys])] = cells
            stats.append(by_key)
            if n_keys:  # group keys as Python values, NULLs as None: compared with rows'
                fetched = engine.fetch(cur, pop_sql, owner=owner)
                width = n_keys + 1 + len(plan.aggregates)
                frames.append(tuple(zip(*fetched, strict=True)) if fetched else ((),) * width)
            else:  # columns as arrays (tens of thousands of people at 1M: a Python object
                # per key cost more than the query)
                frames.append(engine.fetch_columns(cur, pop_sql, owner=owner))
    finally:
        cur.close()
    sdc = disclosure.apply_sdc(
        rows,
        count_columns=[names[p] for p in plan.positions("count")],
        group_columns=[names[p] for p in plan.positions("group")],
        sum_columns=[names[p] for p in plan.positions("sum")],
        mean_columns=[names[p] for p in plan.positions("mean")],
        unsafe=_unsafe(plan, names, rows, stats, threshold),
        threshold=threshold,
        multiple=multiple,
    )
    parts = populations(plan, names, rows, sdc, frames)
    population = (
        unique_keys(np.concatenate([p for p, _ in parts])) if parts else np.empty(0, np.int64)
    )
    weighted = unique_keys(np.concatenate([k for _, k in parts])) if parts else population
    return Computed(names, rows, sdc, population, weighted, parts)
