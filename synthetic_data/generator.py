"""Generate a population in fixed-size chunks, in parallel, into an output folder.

Output layout (``DIR``)::

    manifest.json                    arguments, row counts, format; no timestamps
    organisations.<ext>              GP practices and acute trusts
    <table>/part-NNNNN.<ext>         patients, encounters, conditions, observations,
                                     medications, procedures (parquet or csv)
    fhir/<Type>.NNN.ndjson           with --format fhir: FHIR R4 Bulk Data NDJSON
    ground_truth/part-NNNNN.parquet  the DPP study's potential outcomes (never ingest!)
    defects/part-NNNNN.parquet       with --defects: every defective row and its kind

Each chunk depends only on (seed, population, chunk index), and chunks have a fixed
size, so the same arguments give byte-identical files whatever the number of workers.
The folder is built beside its destination and renamed into place when complete, so a
failed run never leaves a half-written population where a good one was.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import tempfile
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Final

import numpy as np
import pyarrow as pa

from synthetic_data import defects as defect_injection
from synthetic_data import nhs, writers
from synthetic_data.errors import GenerationError
from synthetic_data.simulate import ChunkSpec, simulate_chunk
from synthetic_data.world import World, build_world

CHUNK_SIZE: Final = 20_000
GENERATOR_VERSION: Final = "1.0"
MANIFEST: Final = "manifest.json"


@dataclass(frozen=True)
class SynthConfig:
    patients: int
    seed: int = 42
    format: writers.OutputFormat = "parquet"
    defects: float = 0.0
    start_year: int = 2015
    years: int = 10
    dummy: bool = False
    nhs_range: nhs.NhsRange = "test"

    def validate(self) -> None:
        if self.patients < 1:
            raise GenerationError("--patients must be at least 1")
        cap = nhs.capacity(self.nhs_range)
        if self.patients > cap:
            hint = " (use --nhs-range synthetic for more)" if self.nhs_range == "test" else ""
            raise GenerationError(
                f"the {self.nhs_range!r} NHS number range holds {cap:,} people per "
                f"population; asked for {self.patients:,}{hint}"
            )
        if not 0.0 <= self.defects <= 0.5:
            raise GenerationError("--defects must be a rate between 0 and 0.5")
        if not 1900 <= self.start_year <= 2100:
            raise GenerationError("--start-year must be between 1900 and 2100")
        if not 1 <= self.years <= 50:
            raise GenerationError("--years must be between 1 and 50")
        if self.format not in ("parquet", "csv", "fhir"):
            raise GenerationError("--format must be parquet, csv or fhir")


@dataclass
class GenerationResult:
    out: Path
    rows: dict[str, int] = field(default_factory=dict)
    defects: dict[str, int] = field(default_factory=dict)


def _chunk_specs(config: SynthConfig) -> list[ChunkSpec]:
    return [
        ChunkSpec(
            seed=config.seed,
            chunk_index=i,
            first_person=start,
            size=min(CHUNK_SIZE, config.patients - start),
            start_year=config.start_year,
            years=config.years,
            population=1 if config.dummy else 0,
            nhs_range=config.nhs_range,
        )
        for i, start in enumerate(range(0, config.patients, CHUNK_SIZE))
    ]


_WORLD: World | None = None


def _init_worker(seed: int) -> None:
    global _WORLD
    _WORLD = build_world(seed)


def _run_chunk(args: tuple[ChunkSpec, SynthConfig, str]) -> tuple[dict[str, int], dict[str, int]]:
    spec, config, out_dir = args
    assert _WORLD is not None, "worker not initialised"
    out = Path(out_dir)
    tables = simulate_chunk(spec, _WORLD)
    truth = tables.pop("ground_truth", None)
    defect_counts: dict[str, int] = {}
    if config.defects > 0:
        rng = np.random.default_rng([config.seed, spec.population, spec.chunk_index, 99])
        manifest = defect_injection.inject(tables, config.defects, rng, spec.population)
        kinds, counts = np.unique(manifest["defect"].astype(str), return_counts=True)
        defect_counts = {str(k): int(c) for k, c in zip(kinds, counts, strict=True)}
        writers.write(
            pa.table(
                {
                    "table": manifest["table"].astype(str),
                    "row_key": manifest["row_key"].astype(np.int64),
                    "defect": manifest["defect"].astype(str),
                    "column": manifest["column"].astype(str),
                }
            ),
            out / "defects" / f"part-{spec.chunk_index:05d}",
            "parquet",
        )
    rows: dict[str, int] = {}
    part = f"part-{spec.chunk_index:05d}"
    for name in writers.TABLES:
        table = writers.to_arrow(name, tables[name], _WORLD)
        rows[name] = table.num_rows
        if config.format == "fhir":
            writers.write_fhir(name, table, out / "fhir", spec.chunk_index)
        else:
            writers.write(table, out / name / part, config.format)
    if truth:
        writers.write(writers.ground_truth(truth), out / "ground_truth" / part, "parquet")
        rows["ground_truth"] = len(truth["patient_id"])
    return rows, defect_counts


def _prepare_destination(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise GenerationError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST).exists():
        raise GenerationError(
            f"{out} is not empty and holds no generated population; "
            "refusing to replace it (choose an empty or new folder)"
        )


def generate(
    config: SynthConfig,
    out: Path,
    *,
    workers: int | None = None,
    on_chunk: Callable[[int], None] | None = None,
) -> GenerationResult:
    """Generate ``config.patients`` people into ``out`` (replacing an earlier population).

    ``on_chunk`` is called with the number of people in each chunk as it completes.
    """
    config.validate()
    out = out.resolve()
    _prepare_destination(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        result = _generate_into(config, staging, workers, on_chunk)
        if out.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
            out.rename(trash / "old")
            staging.rename(out)
            shutil.rmtree(trash)
        else:
            staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    result.out = out
    return result


def _generate_into(
    config: SynthConfig,
    staging: Path,
    workers: int | None,
    on_chunk: Callable[[int], None] | None,
) -> GenerationResult:
    specs = _chunk_specs(config)
    world = build_world(config.seed)
    orgs = writers.organisations(world)
    if config.format == "fhir":
        (staging / "fhir").mkdir()
        writers.write(orgs, staging / "organisations", "csv")
    else:
        writers.write(orgs, staging / "organisations", config.format)
    result = GenerationResult(out=staging)
    jobs = [(spec, config, str(staging)) for spec in specs]
    n_workers = max(1, min(workers or os.cpu_count() or 1, len(specs)))

    def collect(spec: ChunkSpec, rows: dict[str, int], found: dict[str, int]) -> None:
        for k, v in rows.items():
            result.rows[k] = result.rows.get(k, 0) + v
        for k, v in found.items():
            result.defects[k] = result.defects.get(k, 0) + v
        if on_chunk:
            on_chunk(spec.size)

    if n_workers == 1:
        _init_worker(config.seed)
        for job in jobs:
            collect(job[0], *_run_chunk(job))
    else:
        # forkserver, not fork: a caller that has started threads (DuckDB's, torch's: a
        # benchmark that generates a second population after training) must not fork
        # them mid-lock, which crashed a worker
        with ProcessPoolExecutor(
            max_workers=n_workers, initializer=_init_worker, initargs=(config.seed,),
            mp_context=multiprocessing.get_context("forkserver"),
        ) as pool:  # fmt: skip
            for job, (rows, found) in zip(jobs, pool.map(_run_chunk, jobs), strict=True):
                collect(job[0], rows, found)
    result.rows["organisations"] = orgs.num_rows
    manifest = {
        "generator": "health-data-hub synthetic_data",
        "generator_version": GENERATOR_VERSION,
        "population": "dummy" if config.dummy else "real",
        "config": asdict(config),
        "chunk_size": CHUNK_SIZE,
        "chunks": len(specs),
        "rows": dict(sorted(result.rows.items())),
        "defects": dict(sorted(result.defects.items())),
        "window": {
            "start": f"{config.start_year}-01-01",
            "end_exclusive": f"{config.start_year + config.years}-01-01",
        },
    }
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return result
