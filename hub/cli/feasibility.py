"""`hub feasibility`: trial feasibility specs answered with DP counts per site and area.

Runs on the hub's machine as the user whose API key is in ``$HUB_API_KEY`` (or
``--key-file``), through the same governance checks, ledger and audit log as
``POST /v1/projects/{id}/feasibility``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from governance.errors import HubError
from governance.settings import get_settings
from hub.cli.keys import KeyFile, read_key
from hub.console import console
from hub.console import fail as _fail

feasibility_app = typer.Typer(
    help="Trial feasibility: how many people meet a spec, per trust and local authority.",
    no_args_is_help=True,
)


def _principal(key_file: Path | None) -> tuple[Any, Any]:
    gov = get_settings().governance()
    return gov, gov.people.authenticate(read_key(key_file))


@feasibility_app.command("run")
def run(
    project: Annotated[str, typer.Option("--project", help="The approved project.")],
    spec: Annotated[
        Path, typer.Option("--spec", help="The feasibility spec (TOML, or JSON if .json).")
    ],
    key_file: KeyFile = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the whole answer as JSON.")
    ] = False,
) -> None:
    """Count the people who meet SPEC per acute trust and local authority (DP, charged)."""
    from governance.feasibility import load_spec

    try:
        text = spec.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise _fail(f"cannot read {spec}: {exc}") from None
    try:
        gov, principal = _principal(key_file)
        parsed = load_spec(text, fmt="json" if spec.suffix.lower() == ".json" else "toml")
        answer = gov.feasibility.run(principal, project, parsed)
    except HubError as exc:
        raise _fail(str(exc)) from None
    if as_json:
        typer.echo(json.dumps(answer, indent=2, default=str))
        return
    show(answer)


@feasibility_app.command("show")
def show_run(
    project: Annotated[str, typer.Option("--project", help="The project.")],
    run_id: Annotated[str, typer.Option("--run", help="The run id (f-...).")],
    key_file: KeyFile = None,
) -> None:
    """Show a stored run: the spec as it was answered and its counts."""
    try:
        gov, principal = _principal(key_file)
        answer = gov.feasibility.get(principal, project, run_id)
    except HubError as exc:
        raise _fail(str(exc)) from None
    show(answer)


def show(answer: dict[str, Any], printer: Console = console) -> None:
    """Print a run's counts per site and per area, with their 95% intervals."""
    title = answer["spec"].get("title") or "feasibility"
    printer.print(
        f"{escape(title)} (run {answer['run_id']}, release {answer['release']}, as of "
        f"{answer['spec']['as_of']}): ε {answer['epsilon_spent']:g} spent, "
        f"{answer['epsilon_remaining']:g} left"
    )
    if answer.get("no_answer"):
        printer.print(escape(answer["reason"]))
        return
    seen = answer["spec"]["seen_within_days"]
    for key, label in (("sites", "acute trust"), ("areas", "local authority")):
        table = Table(title=f"per {label} (DP counts, 95% intervals)")
        for col in (label, "eligible", "95% interval", f"seen in {seen} days", "95% interval"):
            table.add_column(col, justify="left" if col == label else "right")
        for row in answer[key]:
            name = row.get("name") or row["code"]
            table.add_row(
                escape(f"{name} ({row['code']})" if row.get("name") else str(name)),
                f"{row['eligible']:,}",
                "{:,}–{:,}".format(*row["eligible_ci95"]),
                f"{row['seen_recently']:,}",
                "{:,}–{:,}".format(*row["seen_recently_ci95"]),
            )
        printer.print(table)
