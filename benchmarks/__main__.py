"""`make bench`: run every benchmark and write benchmarks/report.md.

    python -m benchmarks            # every benchmark in BENCHMARKS, then the report
    python -m benchmarks load fuzz  # only these; the report keeps the others' last results

Each benchmark is a module with ``run(**options) -> result`` and
``markdown(result) -> str``; its result is kept in ``results/<name>.json`` (with the date
it was measured) and plots go under ``plots/``. To add one, append a ``Benchmark`` to
``BENCHMARKS``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from benchmarks import (
    api,
    audit,
    dp_accuracy,
    feasibility,
    fuzz,
    generator,
    ingest,
    linkage,
    load,
    models,
    outputs,
    quality,
    scaling,
    synthetic,
)

REPORT = Path(__file__).with_name("report.md")
RESULTS = Path(__file__).with_name("results")  # raw JSON, per machine (not committed)
PLOTS = Path(__file__).with_name("plots")  # PNGs the report shows (committed with it)


@dataclass(frozen=True)
class Benchmark:
    name: str
    module: ModuleType
    options: Callable[[], dict[str, Any]] = field(default=dict)


BENCHMARKS: list[Benchmark] = [
    Benchmark("generator", generator),
    Benchmark("ingest", ingest),
    Benchmark("quality", quality),
    Benchmark("scaling", scaling),
    Benchmark("audit", audit),
    Benchmark("api", api),
    Benchmark("load", load, lambda: {"results": PLOTS}),
    Benchmark("fuzz", fuzz),
    Benchmark("dp_accuracy", dp_accuracy),
    Benchmark("outputs", outputs),
    Benchmark("models", models, lambda: {"plots": PLOTS}),
    Benchmark("linkage", linkage),
    Benchmark("feasibility", feasibility),
    Benchmark("synthetic", synthetic),
]


def _stored(name: str) -> tuple[Any, str | None] | None:
    path = RESULTS / f"{name}.json"
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    if isinstance(data, dict) and set(data) == {"measured", "result"}:
        return data["result"], data["measured"]
    return data, None  # written before results carried their date


def report() -> str:
    sections = []
    for bench in BENCHMARKS:
        stored = _stored(bench.name)
        if stored is None:
            sections.append(
                f"### {bench.name}\n\nNot run yet: `python -m benchmarks {bench.name}`."
            )
            continue
        result, measured = stored
        text = bench.module.markdown(result)
        if measured:
            text += f"\n\n_Measured on {measured}._"
        sections.append(text)
    header = [
        "# Benchmark report",
        "",
        f"Written by `make bench` on {dt.date.today().isoformat()}: "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, {platform.machine()}.",
        "Ratios are measured side by side in one run; absolute times vary with the machine. "
        "Raw results are in [`results/`](results/), one JSON file per benchmark.",
        "",
    ]
    return "\n".join(header) + "\n" + "\n\n".join(sections) + "\n"


def main(names: list[str]) -> None:
    known = {b.name: b for b in BENCHMARKS}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"unknown benchmark(s) {unknown}; known: {', '.join(known)}")
    RESULTS.mkdir(exist_ok=True)
    for bench in BENCHMARKS:
        if names and bench.name not in names:
            continue
        print(f"{bench.name} ...", flush=True)
        result = bench.module.run(**bench.options())
        (RESULTS / f"{bench.name}.json").write_text(
            json.dumps({"measured": dt.date.today().isoformat(), "result": result}, indent=2)
        )
    REPORT.write_text(report())
    print(REPORT.read_text())


if __name__ == "__main__":
    main(sys.argv[1:])
