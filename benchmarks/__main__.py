"""`make bench`: run every benchmark and write benchmarks/report.md."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
from pathlib import Path

from benchmarks import api, audit, generator, ingest, quality

REPORT = Path(__file__).with_name("report.md")
RESULTS = Path(__file__).with_name("results")


def main() -> None:
    RESULTS.mkdir(exist_ok=True)
    sections = []
    print("generator ...", flush=True)
    gen = generator.run()
    (RESULTS / "generator.json").write_text(json.dumps(gen, indent=2))
    sections.append(generator.markdown(gen))
    print("ingest ...", flush=True)
    ing = ingest.run()
    (RESULTS / "ingest.json").write_text(json.dumps(ing, indent=2))
    sections.append(ingest.markdown(ing))
    print("quality gate ...", flush=True)
    qual = quality.run()
    (RESULTS / "quality.json").write_text(json.dumps(qual, indent=2))
    sections.append(quality.markdown(qual))
    print("audit log ...", flush=True)
    aud = audit.run()
    (RESULTS / "audit.json").write_text(json.dumps(aud, indent=2))
    sections.append(audit.markdown(aud))
    print("api ...", flush=True)
    ap = api.run()
    (RESULTS / "api.json").write_text(json.dumps(ap, indent=2))
    sections.append(api.markdown(ap))
    header = [
        "# Benchmark report",
        "",
        f"Written by `make bench` on {dt.date.today().isoformat()}: "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, {platform.machine()}.",
        "Ratios are measured side by side in one run; absolute times vary with the machine.",
        "",
    ]
    REPORT.write_text("\n".join(header) + "\n" + "\n\n".join(sections) + "\n")
    print(REPORT.read_text())


if __name__ == "__main__":
    main()
