"""The ``hub`` command: one entry point with a subcommand for each job.

Errors of the hub's own kinds (bad input, refusals, a missing release or key) end in
one place, ``HubTyper``: one clear line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import sys
from typing import Any

import typer

from connectors.errors import IngestError
from governance.errors import HubError
from hub.cli import data, serve
from hub.cli.feasibility import feasibility_app
from hub.cli.governance import audit_app, projects_app, reidentify, sources_app, users_app
from hub.cli.models import audit_model as audit_model_command
from hub.cli.models import models_app
from hub.cli.models import train as train_command
from hub.cli.models import trial as trial_command
from hub.cli.synthetic import synthetic_app
from hub.console import DemoRefused, fail
from synthetic_data.errors import GenerationError


class HubTyper(typer.Typer):
    """A Typer app whose commands' known errors become one line and exit code 2."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except (HubError, IngestError, GenerationError, DemoRefused) as exc:
            fail(str(exc))
            sys.exit(2)


app = HubTyper(
    name="hub",
    help="Health data hub: a trusted research environment for NHS-style records.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.registered_commands += data.app.registered_commands + serve.app.registered_commands
app.add_typer(data.releases_app, name="releases")
app.add_typer(data.quality_app, name="quality")
app.add_typer(users_app, name="users")
app.add_typer(projects_app, name="projects")
app.add_typer(audit_app, name="audit")
app.add_typer(sources_app, name="sources")
app.add_typer(models_app, name="models")
app.add_typer(feasibility_app, name="feasibility")
app.add_typer(synthetic_app, name="synthetic-data")
app.command("train")(train_command)
app.command("trial")(trial_command)
app.command("audit-model")(audit_model_command)
app.command("reidentify")(reidentify)

__all__ = ["app"]
