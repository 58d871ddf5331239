"""`hub synthetic-data`: DP synthetic copies of a project's person-level table.

Runs on the hub's machine as the user whose API key is in ``$HUB_API_KEY`` (or
``--key-file``), through the same governance checks, ledger and audit log as
``POST /v1/projects/{id}/synthetic-datasets``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from governance.errors import HubError
from hub.cli.keys import KeyFile
from hub.cli.models import _workbench
from hub.console import console
from hub.console import fail as _fail

if TYPE_CHECKING:
    from governance.access.people import Principal
    from governance.queries import QueryService

synthetic_app = typer.Typer(
    help="DP synthetic data: request (ε charged, steward review), then download as Parquet.",
    no_args_is_help=True,
)


def _principal(key_file: Path | None) -> tuple[QueryService, Principal]:
    bench = _workbench(key_file)
    return bench.service, bench.principal


@synthetic_app.command("request")
def request(
    project: Annotated[str, typer.Option("--project", help="The approved project.")],
    spec: Annotated[Path, typer.Option("--spec", help="The synthetic-data spec (TOML).")],
    key_file: KeyFile = None,
) -> None:
    """Generate a DP synthetic table; ε and δ are charged, a steward reviews it."""
    from models import synthetic, synthetic_spec

    try:
        service, principal = _principal(key_file)
        out = synthetic.generate(service, principal, project, synthetic_spec.load(spec))
    except HubError as exc:
        raise _fail(str(exc)) from None
    card = out["card"]
    fit = card["evaluation"].get("fit_to_measurements") or {}
    console.print(
        f"generated [bold]{out['dataset_id']}[/]: {card['rows']:,} rows, ε = {card['epsilon']:g},"
        f" δ = {card['delta']:.2g} ({card['method']})"
    )
    console.print(
        "  fit to its DP measurements (average TV): "
        + ", ".join(f"{k.removeprefix('marginal_tv_')} {v:.4f}" for k, v in fit.items() if v)
    )
    console.print(
        "  a steward reviews its exact utility, train-on-synthetic and membership figures "
        "(computed on real people; they never leave the hub)"
    )
    console.print(f"  output {out['output_id']} is pending a steward's review")


@synthetic_app.command("download")
def download(
    output_id: Annotated[str, typer.Argument(help="The approved output.")],
    out: Annotated[Path, typer.Option("--out", help="Where to write the Parquet file.")],
    key_file: KeyFile = None,
) -> None:
    """Write an approved synthetic dataset to a Parquet file."""
    try:
        service, principal = _principal(key_file)
        body = service.gov.outputs.download(principal, output_id)
    except HubError as exc:
        raise _fail(str(exc)) from None
    if "parquet" not in body:
        raise _fail(f"output {output_id} is not a synthetic dataset")
    out.write_bytes(body["parquet"])
    console.print(f"wrote {out} ({len(body['parquet']):,} bytes)")
