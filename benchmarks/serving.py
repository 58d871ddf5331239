"""What a governed query costs before it runs, with and without the per-release caches,
and a DP person count on a one-row-per-person table with and without its per-person bound
(issue 20), measured side by side in one process, interleaved, on one release.

    python -m benchmarks.serving 200000

* light query (``GROUP BY sex`` on patients, ``target: dummy``) through the governed path
  below HTTP (policy, engine, audit, stored query): every cache emptied before each call
  (what each request paid before the caches) against caches kept; raw DuckDB beside it.
* the SQL policy check alone, uncached (``policy.check``) against ``Engine.check``.
* the researcher's catalogue (``/v1/datasets``) and the current release, cold and cached.
* a DP person count on patients (``count(DISTINCT person_id) ... GROUP BY sex``): the SQL
  the hub wrote before (de-duplication and a ``row_number()`` window per person) against
  the SQL it writes now for a source declared one row per person; and, for scale, the
  same bound on the row count.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import duckdb

from benchmarks.api import _timed, fresh_home
from connectors import releases
from governance.facade import Governance
from governance.privacy import dp_query, dp_sql
from governance.sql import policy

LIGHT = "SELECT sex, count(*) AS n FROM patients GROUP BY sex"
PERSONS = "SELECT sex, count(DISTINCT person_id) AS people FROM patients GROUP BY sex"
GRANTS = {"patients": ["person_id", "sex", "year_of_birth", "imd_decile"]}


def _p50(values: list[float]) -> float:
    return round(statistics.median(values), 2)


def _side_by_side(before: Any, after: Any, repeats: int) -> dict[str, float]:
    b: list[float] = []
    a: list[float] = []
    before()
    after()  # warm both
    for _ in range(repeats):  # interleaved, so both see the same machine
        b += _timed(before, 1)
        a += _timed(after, 1)
    return {
        "before_p50_ms": _p50(b),
        "after_p50_ms": _p50(a),
        "ratio": round(statistics.median(b) / max(statistics.median(a), 1e-9), 2),
    }


def run(patients: int = 200_000, repeats: int = 40) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    try:
        home = fresh_home(patients, work / "hub")
        gov = Governance.open(home, create_keys=True)
        who = {}
        for user_id, role in (("ana", "researcher"), ("sam", "steward")):
            _, key = gov.people.add(
                user_id=user_id,
                name=user_id,
                role=role,
                organisation="UoB",
                organisation_type="university",
                accreditation_expires=dt.date.today() + dt.timedelta(days=30),
                actor="bench",
            )
            who[user_id] = gov.people.authenticate(key)
        project = gov.projects.request(
            requester=who["ana"].user,
            title="bench",
            purpose="bench",
            lay_summary="bench",
            grants=GRANTS,
            days=30,
        )
        gov.projects.approve(project.project_id, steward=who["sam"].user, epsilon=100.0, delta=1e-6)
        pid = project.project_id
        service = gov.queries
        dummy = service.release_for("dummy")
        engine = service.engine(dummy)
        real_engine = service.engine(service.release_for("real"))

        def forget() -> None:
            for e in (engine, real_engine):
                e._checks.clear()
                e._bound.clear()
                e._kept.clear()
                e._catalogue = None
            service._catalogues.clear()
            releases._PUBLISHED.clear()

        def governed_kept() -> None:
            service.run(who["ana"], pid, sql=LIGHT, target="dummy")

        def governed() -> None:
            # the query itself runs: the answer kept from the last call is dropped
            engine._kept.clear()
            governed_kept()

        def governed_cold() -> None:
            forget()
            governed()

        # raw DuckDB on a copy: one process may not open the engine's file differently
        shutil.copy(dummy.path, work / "raw.duckdb")
        raw = duckdb.connect(str(work / "raw.duckdb"), read_only=True)
        out: dict[str, Any] = {"patients": patients, "repeats": repeats}
        out["light_query"] = _side_by_side(governed_cold, governed, repeats)
        out["light_query"]["raw_duckdb_p50_ms"] = _p50(
            _timed(lambda: raw.execute(LIGHT).fetchall(), repeats)
        )
        out["light_query"]["overhead_after_p50_ms"] = round(
            out["light_query"]["after_p50_ms"] - out["light_query"]["raw_duckdb_p50_ms"], 2
        )
        out["light_query"]["overhead_before_p50_ms"] = round(
            out["light_query"]["before_p50_ms"] - out["light_query"]["raw_duckdb_p50_ms"], 2
        )
        # the same project asking the same again: its answer kept (checked, audited, stored)
        out["light_query"]["kept_answer_p50_ms"] = _p50(_timed(governed_kept, repeats))

        cur = engine.cursor()
        out["policy_check"] = _side_by_side(
            lambda: policy.check(cur, LIGHT, granted=GRANTS, real=False),
            lambda: engine.check(cur, LIGHT, granted=GRANTS, real=False),
            repeats,
        )

        def catalogue_cold() -> None:
            forget()
            service.catalogue(who["ana"], pid)

        out["catalogue"] = _side_by_side(
            catalogue_cold, lambda: service.catalogue(who["ana"], pid), repeats
        )

        def release_cold() -> None:
            releases._PUBLISHED.clear()
            service.release_for("real")

        out["current_release"] = _side_by_side(
            release_cold, lambda: service.release_for("real"), repeats
        )

        # DP person count on a one-row-per-person table: the SQL before and now
        rcur = real_engine.cursor()
        tree = json.loads(
            rcur.execute("SELECT json_serialize_sql($q)", {"q": PERSONS}).fetchall()[0][0]
        )
        plan = dp_query.compile_plan(tree["statements"][0]["node"], real_engine.catalogue(rcur))
        bounded = dataclasses.replace(plan, person_level=False)  # what ran before
        now_sql = dp_sql.statements(plan, salt="bench")[0].sql
        before_sql = dp_sql.statements(bounded, salt="bench")[0].sql
        assert "row_number" in before_sql and "row_number" not in now_sql
        assert sorted(rcur.execute(now_sql).fetchall()) == sorted(
            rcur.execute(before_sql).fetchall()
        )
        out["dp_person_count"] = _side_by_side(
            lambda: rcur.execute(before_sql).fetchall(),
            lambda: rcur.execute(now_sql).fetchall(),
            repeats,
        )
        tree = json.loads(
            rcur.execute("SELECT json_serialize_sql($q)", {"q": LIGHT}).fetchall()[0][0]
        )
        rows_plan = dp_query.compile_plan(
            tree["statements"][0]["node"], real_engine.catalogue(rcur)
        )
        out["dp_row_count_bound_for_scale"] = _side_by_side(
            lambda: rcur.execute(
                dp_sql.statements(dataclasses.replace(rows_plan, person_level=False), salt="bench")[
                    0
                ].sql
            ).fetchall(),
            lambda: rcur.execute(dp_sql.statements(rows_plan, salt="bench")[0].sql).fetchall(),
            repeats,
        )

        def dp_persons() -> None:
            service.run(who["ana"], pid, sql=PERSONS, target="real", mode="dp", epsilon=0.01)

        out["dp_person_count_governed_p50_ms"] = _p50(_timed(dp_persons, repeats // 2))
        cur.close()
        rcur.close()
        raw.close()
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)


def markdown(r: dict[str, Any]) -> str:
    def row(name: str, key: str) -> str:
        m = r[key]
        return f"| {name} | {m['before_p50_ms']} ms | {m['after_p50_ms']} ms | {m['ratio']}× |"

    light = r["light_query"]
    return "\n".join(
        [
            f"### Per-release caches and the person-level DP bound ({r['patients']:,} patients)",
            "",
            "| p50, interleaved in one run | before | after | before / after |",
            "|---|---:|---:|---:|",
            row("light query, governed (no HTTP), every cache emptied vs kept", "light_query"),
            row("SQL policy check alone", "policy_check"),
            row("researcher's catalogue (`/v1/datasets`)", "catalogue"),
            row("current release (pointer + manifest)", "current_release"),
            row("DP person count on patients: window + DISTINCT vs none", "dp_person_count"),
            row("(scale) DP row count on patients with vs without a window", "dp_row_count_bound_for_scale"),
            "",
            f"Raw DuckDB for the light query: p50 {light['raw_duckdb_p50_ms']} ms; governed "
            f"overhead {light['overhead_before_p50_ms']} ms before, "
            f"{light['overhead_after_p50_ms']} ms after; the same project's repeated query "
            f"with its answer kept: p50 {light['kept_answer_p50_ms']} ms. Governed DP person "
            "count: p50 "
            f"{r['dp_person_count_governed_p50_ms']} ms.",
        ]
    )  # fmt: skip


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    result = run(n)
    print(json.dumps(result, indent=2))
    print(markdown(result))
