"""The importable API for modellers' scripts.

>>> # from models.workbench import Workbench
>>> # bench = Workbench.connect()                  # HUB_HOME and HUB_API_KEY
>>> # model = bench.train("p-…", "models/examples/risk_model.toml")
>>> # model.card["metrics"]["auroc"], model.card["epsilon"]

A script runs on the hub's machine (inside the trusted research environment) with the
modeller's own API key: every extraction and spend is checked and audited as that user,
exactly as ``hub train`` does it. Rows never leave the process; the model and its card
go to the project's workspace, and leave the hub only through a steward's review
(:meth:`Workbench.submit`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from governance.access.people import Principal
from governance.errors import InvalidRequest
from governance.facade import Governance
from governance.queries import QueryService
from models import artifacts, training
from models import spec as specs
from models.artifacts import TrainedModel


class Workbench:
    def __init__(self, service: QueryService, principal: Principal) -> None:
        self.service = service
        self.principal = principal

    @classmethod
    def connect(cls, home: Path | None = None, key: str | None = None) -> Workbench:
        """Open the hub at ``home`` (default ``$HUB_HOME``) as the owner of ``key``
        (default ``$HUB_API_KEY``)."""
        home = (home or Path(os.environ.get("HUB_HOME", "var"))).resolve()
        key = key or os.environ.get("HUB_API_KEY")
        if not key:
            raise InvalidRequest("set HUB_API_KEY to your API key (or pass key=)")
        gov = Governance.open(home, signing_seed_hex=os.environ.get("HUB_AUDIT_SIGNING_KEY"))
        return cls(gov.queries, gov.people.authenticate(key))

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
