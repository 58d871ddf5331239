"""`hub train`, `hub audit-model` and `hub models`: DP models from the command line.

These run on the hub's machine as the user whose API key is in ``$HUB_API_KEY`` (or
``--key-file``): a modeller trains, a steward audits. Everything goes through the same
governance checks and audit log as the HTTP API.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from governance.errors import HubError
from governance.settings import get_settings
from hub.console import console
from hub.console import fail as _fail

if TYPE_CHECKING:
    from models.workbench import Workbench

models_app = typer.Typer(help="Trained models in a project's workspace.", no_args_is_help=True)

KeyFile = Annotated[
    Path | None,
    typer.Option("--key-file", help="A file holding your API key (default: $HUB_API_KEY)."),
]


def _workbench(key_file: Path | None) -> Workbench:
    from governance.queries import QueryService
    from models.workbench import Workbench

    key = os.environ.get("HUB_API_KEY")
    if key_file is not None:
        try:
            key = key_file.read_text().strip()
        except OSError as exc:
            raise _fail(f"cannot read {key_file}: {exc.strerror}") from None
    if not key:
        raise _fail("give your API key in $HUB_API_KEY or with --key-file")
    gov = get_settings().governance()
    return Workbench(QueryService(gov), gov.people.authenticate(key))


def train(
    project: Annotated[str, typer.Option("--project", help="The approved project.")],
    spec: Annotated[Path, typer.Option("--spec", help="The training spec (TOML).")],
    key_file: KeyFile = None,
    submit: Annotated[
        bool, typer.Option("--submit", help="Also ask a steward to release the model.")
    ] = False,
) -> None:
    """Train a DP model on a project's data; ε is charged to the project's ledger."""
    from models import spec as specs

    try:
        bench = _workbench(key_file)
        resolved = specs.load(spec)
        model = bench.train(project, resolved)
        card = model.card
        console.print(
            f"trained [bold]{card['model_id']}[/] ({card['model_kind']}) on "
            f"{card['rows']['training']:,} people: ε = {card['epsilon']:.3f}, "
            f"δ = {card['delta']:.2g}, noise multiplier {card['noise_multiplier']:.2f}"
        )
        for key, value in card["metrics"].items():
            if isinstance(value, float):
                ci = card["metrics"].get(f"{key}_ci95")
                extra = f" (95% CI {ci[0]:.3f}-{ci[1]:.3f})" if ci else ""
                console.print(f"  {key}: {value:.4f}{extra}")
        attack = card["membership_inference"]
        console.print(f"  membership-inference attack AUC: {attack['attack_auc']:.3f}")
        console.print(f"  card and weights: {model.folder}")
        if submit:
            output_id = bench.submit(project, card["model_id"])
            console.print(f"  submitted for release as output {output_id} (pending review)")
    except HubError as exc:
        raise _fail(str(exc)) from None


def audit_model(
    project: Annotated[str, typer.Option("--project", help="The model's project.")],
    model: Annotated[str, typer.Option("--model", help="The model id (m-...).")],
    key_file: KeyFile = None,
) -> None:
    """Stewards: run the membership-inference audit of a model before releasing it."""
    try:
        bench = _workbench(key_file)
        report = bench.audit(project, model)
    except HubError as exc:
        raise _fail(str(exc)) from None
    console.print(
        f"membership-inference audit of {escape(model)}: attack AUC "
        f"{report['attack_auc']:.3f} (loss threshold {report['loss_threshold_auc']:.3f}, "
        f"reference-calibrated {report['calibrated_auc']:.3f}; "
        f"{report['members']} members vs {report['non_members']} non-members)"
    )
    verdict = (
        "no measurable membership signal (≤ 0.55)"
        if report["attack_auc"] <= 0.55
        else "[bold red]the model leaks membership: do not release it as is[/]"
    )
    console.print(verdict)


@models_app.command("list")
def list_models(
    project: Annotated[str, typer.Option("--project", help="The project.")],
    key_file: KeyFile = None,
) -> None:
    """The project's trained models, newest first."""
    try:
        cards = _workbench(key_file).models(project)
    except HubError as exc:
        raise _fail(str(exc)) from None
    if not cards:
        console.print("no models in this project yet (`hub train --project ... --spec ...`)")
        return
    table = Table(title=f"Models of {project}")
    for col in ("model", "name", "kind", "ε", "rows", "headline metric", "attack AUC", "trained"):
        table.add_column(col)
    for c in cards:
        m = c["metrics"]
        headline = (
            f"AUROC {m['auroc']:.3f}"
            if "auroc" in m
            else f"mean benefit {m.get('mean_predicted_benefit', float('nan')):.3f}"
        )
        table.add_row(
            c["model_id"], c["name"], c["model_kind"], f"{c['epsilon']:.2f}",
            f"{c['rows']['training']:,}", headline,
            f"{c['membership_inference']['attack_auc']:.3f}", c["created_at"],
        )  # fmt: skip
    console.print(table)


@models_app.command("submit")
def submit_model(
    project: Annotated[str, typer.Option("--project", help="The project.")],
    model: Annotated[str, typer.Option("--model", help="The model id (m-...).")],
    key_file: KeyFile = None,
) -> None:
    """Ask a steward to release a model out of the hub."""
    try:
        output_id = _workbench(key_file).submit(project, model)
    except HubError as exc:
        raise _fail(str(exc)) from None
    console.print(f"model {escape(model)} submitted as output {output_id}: pending review")
