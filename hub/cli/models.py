"""`hub train`, `hub trial`, `hub audit-model` and `hub models`: DP models and emulated
trials from the command line.

These run on the hub's machine as the user whose API key is in ``$HUB_API_KEY`` (or
``--key-file``): a modeller trains, a steward audits. Everything goes through the same
governance checks and audit log as the HTTP API.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from governance.errors import HubError
from governance.settings import get_settings
from hub.cli.keys import KeyFile, read_key
from hub.console import console
from hub.console import fail as _fail

if TYPE_CHECKING:
    from models.trainer import Trainer

models_app = typer.Typer(help="Trained models in a project's workspace.", no_args_is_help=True)


def _workbench(key_file: Path | None) -> Trainer:
    from models.trainer import Trainer

    gov = get_settings().governance()
    return Trainer(gov.queries, gov.people.authenticate(read_key(key_file)))


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
        m = card["metrics"]
        console.print(
            f"trained [bold]{card['model_id']}[/] ({card['model_kind']}): ε = "
            f"{card['epsilon_total']:.3f} (training {card['epsilon']:.3f} + DP metrics "
            f"{card['metrics_epsilon']:.3f}), δ = {card['delta']:.2g}, noise multiplier "
            f"{card['noise_multiplier']:.2f}"
        )
        for key in ("held_out_people", "auroc", "brier", "outcome_rate",
                    "mean_predicted_benefit", "outcome_rmse"):  # fmt: skip
            if isinstance(m.get(key), int | float):
                console.print(f"  {key} (DP): {m[key]:.4g}")
        console.print(f"  card and weights: {model.folder}")
        if submit:
            output_id = bench.submit(project, card["model_id"])
            console.print(f"  submitted for release as output {output_id} (pending review)")
    except HubError as exc:
        raise _fail(str(exc)) from None


def trial(
    project: Annotated[str, typer.Option("--project", help="The approved project.")],
    study: Annotated[Path, typer.Option("--study", help="The study spec (TOML, [protocol]).")],
    key_file: KeyFile = None,
) -> None:
    """Estimate an emulated trial's average effect under DP (AIPW); ε is charged to the
    project's ledger and the estimate goes to a steward for review (read it once approved:
    GET /v1/outputs/OUTPUT/download, or the client)."""
    from models import trial as trials

    try:
        bench = _workbench(key_file)
        resolved = trials.load_study(study)
        result = trials.run(bench.service, bench.principal, project, resolved)
    except HubError as exc:
        raise _fail(str(exc)) from None
    console.print(
        f"{escape(result['study'])} on release {result['release']}: trial "
        f"{result['trial_id']} estimated (DP AIPW; ε = {result['epsilon']:.3f}, δ = "
        f"{result['delta']:.2g} charged) and sent for steward review as output "
        f"{result['output_id']} (pending)"
    )
    console.print(f"  contrast: {escape(str(result['protocol']['causal_contrast']))}")
    console.print(f"  once approved: GET {result['download_url']}")


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
        f"{report['attack_auc']:.3f}, TPR at FPR 0.1% {report['tpr_at_fpr_0_1pct']:.3f}, "
        f"at FPR 1% {report['tpr_at_fpr_1pct']:.3f} ({report['members']} members vs "
        f"{report['non_members']} non-members; accountant ε {report['accountant_epsilon']:.3g})"
    )
    console.print(report["limits"])


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
    table.add_column("model", no_wrap=True, min_width=14)  # ids are never truncated
    for col in ("name", "kind", "ε", "DP headline metric", "trained"):
        table.add_column(col)
    for c in cards:
        m = c["metrics"]
        headline = (
            f"AUROC {m['auroc']:.3f}"
            if m.get("auroc") is not None
            else f"mean benefit {m.get('mean_predicted_benefit', float('nan')):.3f}"
        )
        table.add_row(
            c["model_id"], c["name"], c["model_kind"], f"{c['epsilon_total']:.2f}", headline,
            c["created_at"],
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
