"""`hub synth`, `hub demo`, `hub ingest`, `hub releases` and `hub quality`: the data jobs."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from connectors.releases import Release
from governance.settings import get_settings
from hub.console import console, counting
from hub.console import fail as _fail
from hub.linkage_summary import print_linkage

if TYPE_CHECKING:  # the generator (numpy, scipy, pyarrow) is imported by `hub synth` only
    from synthetic_data.nhs import NhsRange
    from synthetic_data.writers import OutputFormat

app = typer.Typer()
releases_app = typer.Typer(help="The published releases.", no_args_is_help=True)
quality_app = typer.Typer(help="The data-quality gate and its reports.", no_args_is_help=True)


@app.command()
def synth(
    patients: Annotated[int, typer.Option("--patients", "-n", help="People to generate.")] = 10_000,
    seed: Annotated[
        int, typer.Option(help="Random seed; same seed and arguments, same bytes.")
    ] = 42,
    out: Annotated[
        Path | None,
        typer.Option(help="Output folder (default: $HUB_HOME/synthetic/real or .../dummy)."),
    ] = None,
    format: Annotated[
        str,
        typer.Option(
            "--format",
            help="parquet, csv, fhir (FHIR R4 Bulk Data NDJSON) or feeds (a region's "
            "separate extracts: GP suppliers, trusts, A&E, deaths; `hub ingest --format feeds`).",
        ),
    ] = "parquet",
    defects: Annotated[
        float, typer.Option(help="Share of rows given a data-quality defect (0 to 0.5).")
    ] = 0.0,
    start_year: Annotated[int, typer.Option(help="First calendar year of the records.")] = 2015,
    years: Annotated[int, typer.Option(help="Years of records (at least 10 recommended).")] = 10,
    dummy: Annotated[
        bool, typer.Option("--dummy", help="Make the dummy population (disjoint people).")
    ] = False,
    nhs_range: Annotated[
        str,
        typer.Option(
            help="NHS numbers from 'test' (999..., 450,000 people) or 'synthetic' (9..., 45M)."
        ),
    ] = "test",
    workers: Annotated[
        int | None, typer.Option(help="Worker processes (default: all cores).")
    ] = None,
) -> None:
    """Generate a synthetic West Midlands population with ten years of EHR records."""
    if format not in ("parquet", "csv", "fhir", "feeds"):
        raise _fail("--format must be parquet, csv, fhir or feeds")
    if nhs_range not in ("test", "synthetic"):
        raise _fail("--nhs-range must be test or synthetic")
    from synthetic_data.generator import SynthConfig, generate

    feeds = format == "feeds"
    fmt: OutputFormat = "parquet" if feeds else format  # type: ignore[assignment]
    rng_name: NhsRange = nhs_range  # type: ignore[assignment]
    config = SynthConfig(
        patients=patients,
        seed=seed,
        format=fmt,
        defects=defects,
        start_year=start_year,
        years=years,
        dummy=dummy,
        nhs_range=rng_name,
    )
    target = out or get_settings().synthetic_dir / (
        ("dummy" if dummy else "real") + ("-feeds" if feeds else "")
    )
    config.validate()
    population = target.with_name(f".{target.name}.population") if feeds else target
    with counting(patients, "generating") as advance:
        result = generate(config, population, workers=workers, on_chunk=advance)
    if feeds:
        _write_feeds(population, target, seed)
        return
    console.print(f"[green]wrote[/] {result.out}")
    for table, rows in sorted(result.rows.items()):
        console.print(f"  {table:<14} {rows:>12,} rows")
    if result.defects:
        total = sum(result.defects.values())
        console.print(f"  defects        {total:>12,} rows (see defects/)")


def _write_feeds(population: Path, target: Path, seed: int) -> None:
    import shutil

    from synthetic_data.feeds import write_feeds

    try:
        if target.exists() and (target / "feeds.json").is_file():
            shutil.rmtree(target)  # an earlier set of feeds: replaced
        elif target.exists() and any(target.iterdir()):
            raise ValueError(f"{target} exists and is not a folder of feeds: choose another --out")
        with console.status("writing the region's feeds") as status:
            result = write_feeds(
                population, target, seed=seed,
                progress=lambda label: status.update(f"writing feeds: {label}"),
            )  # fmt: skip
    except ValueError as exc:
        raise _fail(str(exc)) from None
    finally:
        shutil.rmtree(population, ignore_errors=True)
    console.print(f"[green]wrote[/] {result.out} ({result.records:,} feed records)")
    for feed in result.feeds:
        console.print(f"  {feed['name']:<16} {feed['organisation']}")
    console.print(
        "  truth/           which person each record belongs to: for tests and benchmarks, "
        "never ingest"
    )
    console.print(f"next: hub ingest {result.out} --format feeds")


@app.command()
def demo(
    patients: Annotated[
        int, typer.Option("--patients", "-n", help="People in the real population.")
    ] = 50_000,
    dummy_patients: Annotated[int, typer.Option(help="People in the dummy population.")] = 5_000,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 42,
    serve: Annotated[
        bool, typer.Option("--serve/--no-serve", help="Start the API when set up (default).")
    ] = True,
    port: Annotated[int, typer.Option(help="Port for the API.")] = 8000,
) -> None:
    """The main job on an embedded default: populations, releases, people, a study, the API."""
    from hub.demo import run_demo

    run_demo(patients=patients, dummy_patients=dummy_patients, seed=seed, serve=serve, port=port)


@app.command()
def ingest(
    src: Annotated[Path, typer.Argument(help="A file or folder to load.")],
    format: Annotated[
        str,
        typer.Option(
            "--format",
            help="auto (the default: told from the files' names), native (hub synth "
            "output), synthea (CSV), fhir, or feeds (a region's separate extracts with a "
            "feeds.json, linked to persons).",
        ),
    ] = "auto",
    dummy: Annotated[
        bool, typer.Option("--dummy", help="Publish as the dummy release researchers develop on.")
    ] = False,
    linkage_engine: Annotated[
        str,
        typer.Option(
            help="feeds only: duckdb (this machine) or spark (score pairs on local Spark)."
        ),
    ] = "duckdb",
) -> None:
    """Load a source into a new release and publish it if every step succeeds."""
    from connectors.errors import SourceError
    from connectors.ingest import GateFailed, detect_format
    from connectors.ingest import ingest as run_ingest
    from connectors.quality import gate_when_it_runs
    from connectors.secrets import resolve_keys

    settings = get_settings()
    # the dummy release has a catalogue (and keys) of its own under $HUB_HOME/dummy
    home = settings.home / "dummy" if dummy else settings.home
    if format == "auto":
        try:
            format = detect_format(src)
        except SourceError as exc:
            raise _fail(str(exc)) from None
        console.print(f"format: {format} (told from the files' names; --format to choose)")
    try:
        keys = settings.keys(create=True) if not dummy else resolve_keys(home, create=True)
        with console.status("ingesting") as status:
            result = run_ingest(
                src,
                fmt=format,
                home=home,
                keys=keys,
                progress=lambda label: status.update(f"ingesting: {label}"),
                gate=gate_when_it_runs,
                linkage_engine=linkage_engine,
            )
    except GateFailed as exc:
        _print_quality(exc.report, only_failed=True)
        raise _fail(str(exc)) from None
    release = result.release
    kind = "current dummy release" if dummy else "current release"
    console.print(f"[green]published[/] {release.id} ({kind}) from {format} source")
    for table, counts in result.counts.items():
        quarantined = sum(counts.quarantined.values())
        note = f", {quarantined:,} quarantined" if quarantined else ""
        console.print(f"  {table:<28} {counts.published:>12,} rows{note}")
    for rtype, n in result.skipped.items():
        what = rtype if rtype.startswith("(") else f"{rtype} resources (no warehouse table)"
        console.print(f"  [yellow]skipped[/] {n:,} {what}")
    source = release.manifest.get("source", {})
    not_read = source.get("not_read", {})
    if not_read:
        columns = sum(n for k, n in not_read.items() if k.startswith("column"))
        files = not_read.get("files", 0)
        console.print(
            f"  [yellow]not read[/] {columns:,} unknown column(s), {files:,} unknown file(s) "
            f"(listed in the manifest)"
        )
    print_linkage(release.manifest.get("linkage"))
    scan = release.manifest.get("identifier_scan")
    if scan:
        console.print(
            f"identifier scan clean: {scan['identifying_values']:,} identifying values "
            f"looked for in {scan['relations']} tables and views and the manifest"
        )
    quality = release.manifest.get("quality")
    if quality:
        s = quality["summary"]
        console.print(
            f"quality gate passed: {s['checks']} checks, {s['failed_warnings']} warning(s); "
            f"`hub quality report {release.id}` for details"
        )


@releases_app.command("list")
def releases_list() -> None:
    """List the releases and show which one is current."""
    from rich.table import Table

    from connectors.releases import list_releases

    found = list_releases(get_settings().home)
    if not found:
        console.print("no releases yet: run `hub ingest SRC`")
        return
    table = Table()
    for col in ("release", "current", "source", "published", "people", "quarantined"):
        table.add_column(col)
    for r in found:
        m = r.manifest
        tables = m.get("tables", {})
        quarantined = sum(sum(t.get("quarantined", {}).values()) for t in tables.values())
        table.add_row(
            r.id,
            "✓" if r.current else "",
            m.get("source", {}).get("format", "?"),
            m.get("published_at", "unpublished"),
            f"{tables.get('patients', {}).get('published', 0):,}",
            f"{quarantined:,}",
        )
    Console().print(table)


def _print_quality(
    report: dict[str, Any], *, only_failed: bool = False, show_all: bool = False
) -> None:
    from rich.table import Table

    title = "that failed" if only_failed else "" if show_all else "with violations"
    table = Table(title=f"Quality checks {title}".strip())
    for col in ("check", "severity", "violations", "share", "threshold", "result", "examples"):
        table.add_column(col)
    for c in report.get("checks", []):
        if only_failed and c["passed"]:
            continue
        if not show_all and c["passed"] and not c["violations"]:
            continue
        result = (
            "[green]pass"
            if c["passed"]
            else ("[red]FAIL" if c["severity"] == "error" else "[yellow]warn")
        )
        table.add_row(
            c["id"], c["severity"], f"{c['violations']:,}", f"{c['share']:.3%}",
            f"{c['threshold']:.1%}", result, ", ".join(str(k) for k in c["examples"][:3]),
        )  # fmt: skip
    Console(width=200).print(table)
    for c in report.get("checks", []):
        if not c["passed"] and c["severity"] == "warning":
            console.print(f"[yellow]warning[/] {c['id']}: {c['description']}")


def _release_or_fail(home: Path, release: str | None) -> Release:
    """A release by id (default: current), or a clear CLI error."""
    from connectors.releases import get_release

    return get_release(home, release)


@quality_app.command("run")
def quality_run(
    release: Annotated[str | None, typer.Argument(help="Release id (default: current).")] = None,
) -> None:
    """Run the quality gate on a published release and store its report and Data Docs."""
    from connectors.quality import run_gate
    from connectors.releases import list_releases, quality_dir

    home = get_settings().home
    rel = _release_or_fail(home, release)
    previous = [r for r in list_releases(home) if r.number < rel.number]
    with console.status(f"validating {rel.id}"):
        result = run_gate(
            rel.path,
            manifest=rel.manifest,
            previous_db=previous[-1].path if previous else None,
            out_dir=quality_dir(rel.path),
        )
    _print_quality(result.report)
    verdict = "[green]passed" if result.passed else "[red]FAILED"
    console.print(f"{rel.id}: quality gate {verdict}; report in {quality_dir(rel.path)}")
    if not result.passed:
        raise typer.Exit(1)


@quality_app.command("report")
def quality_report(
    release: Annotated[str | None, typer.Argument(help="Release id (default: current).")] = None,
    all_checks: Annotated[
        bool, typer.Option("--all", help="List every check, not only those with violations.")
    ] = False,
) -> None:
    """Show the stored quality report of a release (from its ingestion or last run)."""
    import json

    from connectors.releases import quality_dir, quality_report

    home = get_settings().home
    rel = _release_or_fail(home, release)
    path = quality_report(rel.path)
    if not path.exists():
        raise _fail(f"{rel.id} has no quality report: run `hub quality run {rel.id}`")
    report = json.loads(path.read_text())
    _print_quality(report, show_all=all_checks)
    s = report["summary"]
    console.print(
        f"{rel.id}: {'passed' if report['passed'] else 'FAILED'}; {s['checks']} checks "
        f"({s['by_category']}); Data Docs: {quality_dir(rel.path) / 'data_docs' / 'index.html'}"
    )
