"""The hub-side trainer: what ``hub train``, the demo and ``/v1/.../models`` call.

It runs in the hub's own process, as the principal whose key was given: every extraction
and spend is checked and audited as that user. Rows never leave this process; the model
and its card go to the project's workspace, and leave the hub only through a steward's
review. Modellers' scripts use :class:`models.workbench.Workbench`, an HTTP client.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from governance.access.people import Principal
from governance.errors import Conflict
from governance.models_release import released_artifact
from governance.queries import QueryService
from models import artifacts, training
from models import spec as specs
from models.artifacts import TrainedModel


class Trainer:
    def __init__(self, service: QueryService, principal: Principal) -> None:
        self.service = service
        self.principal = principal

    def spec(self, spec: specs.Spec | Path | str) -> specs.Spec:
        if isinstance(spec, specs.Spec):
            return spec
        path = Path(spec)
        if path.suffix == ".toml" and path.is_file():
            return specs.load(path)
        return specs.parse(str(spec))

    def train(
        self,
        project_id: str,
        spec: specs.Spec | Path | str,
        *,
        progress: bool = True,
        split_key: bytes | None = None,
    ) -> TrainedModel:
        """Train the spec's model on the project's data (ε charged to its ledger).

        Models trained with the same ``split_key`` are evaluated on the same held-out
        people (e.g. one model at several ε, for a privacy-utility curve).
        """
        resolved = self.spec(spec)
        if not progress:
            return training.train(
                self.service, self.principal, project_id, resolved, split_key=split_key
            )
        with Progress(
            TextColumn(f"training {resolved.name} ({resolved.kind}, ε={resolved.epsilon:g})"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("steps"),
            TimeElapsedColumn(),
            transient=False,
        ) as bar:
            task = bar.add_task("train", total=None)

            def start(total: int) -> None:
                bar.update(task, total=total)

            step: Callable[[int], None] = lambda k: bar.advance(task, k)  # noqa: E731
            return training.train(
                self.service, self.principal, project_id, resolved,
                on_start=start, on_step=step, split_key=split_key,
            )  # fmt: skip

    def models(self, project_id: str) -> list[dict[str, Any]]:
        """The project's trained models (their cards), newest first."""
        self.service.project_for(self.principal, project_id)
        root = artifacts.models_dir(self.service, project_id)
        cards = [
            json.loads((d / "card.json").read_text())
            for d in (root.iterdir() if root.is_dir() else [])
            if d.is_dir() and (d / "card.json").is_file()
        ]
        return sorted(cards, key=lambda c: str(c["created_at"]), reverse=True)

    def card(self, project_id: str, model_id: str) -> dict[str, Any]:
        """A model's card (what a project member may read: DP metrics only)."""
        self.service.project_for(self.principal, project_id)
        return training.load(self.service, project_id, model_id).card

    def weights(self, project_id: str, model_id: str) -> bytes:
        """The model's weights file, once a steward has approved its release."""
        sha = released_artifact(self.service, self.principal, project_id, model_id)
        trained = training.load(self.service, project_id, model_id)
        assert trained.folder is not None
        data = (trained.folder / "model.pt").read_bytes()
        if hashlib.sha256(data).hexdigest() != sha:
            raise Conflict(f"model {model_id}: its weights do not match the approved release")
        return data

    def load(self, project_id: str, model_id: str) -> TrainedModel:
        self.service.project_for(self.principal, project_id)
        return training.load(self.service, project_id, model_id)

    def submit(self, project_id: str, model_id: str) -> str:
        """Ask a steward to release the model; returns the output id."""
        return training.submit(self.service, self.principal, project_id, model_id)

    def audit(self, project_id: str, model_id: str) -> dict[str, Any]:
        """Stewards: run the membership-inference audit of a model."""
        from models.audits import audit_model

        return audit_model(self.service, self.principal, project_id, model_id)

    def budget(self, project_id: str) -> tuple[float, float]:
        """The project's remaining (ε, δ)."""
        self.service.project_for(self.principal, project_id)
        state = self.service.gov.ledger.state(project_id)
        return state.epsilon_remaining, state.delta_remaining

    def ensure_budget(self, project_id: str, plan: list[specs.Spec]) -> None:
        """Refuse, before anything is spent, a plan of trainings the budget cannot cover."""
        from governance.errors import BudgetExhausted
        from governance.privacy import accounting

        need = (
            sum(s.epsilon + s.metrics_epsilon for s in plan),
            sum(s.delta or accounting.DEFAULT_TRAINING_DELTA for s in plan),
        )
        state = self.service.gov.ledger.state(project_id)
        total = (state.epsilon_total, state.delta_total)
        spent = (state.epsilon_spent, state.delta_spent)
        if not accounting.fits(total=total, spent=spent, request=need):
            raise BudgetExhausted(
                f"this plan of {len(plan)} training(s) does not fit; nothing was spent: "
                + accounting.shortfall(total=total, spent=spent, request=need)
            )


def steward_record(service: QueryService, project_id: str, model_id: str) -> dict[str, Any]:
    """A model's steward-only record (exact metrics, audits); {} if there is none."""
    if not artifacts.MODEL_ID.fullmatch(model_id):
        return {}
    return artifacts.steward_record(artifacts.models_dir(service, project_id) / model_id)
