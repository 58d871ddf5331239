"""The modeller's API: an HTTP client of the hub's models endpoints.

>>> # from models.workbench import Workbench
>>> # bench = Workbench.connect()               # $HUB_URL and $HUB_API_KEY
>>> # model = bench.train("p-…", "models/examples/risk_model.toml")
>>> # model.card["metrics"]["auroc"], model.card["epsilon_total"]

Training runs inside the hub: the client sends the spec (its cohort SQL inline) and
gets back the model card, whose held-out metrics are differentially private and
charged to the project's budget. Rows never reach this process. Weights come back only
after a steward has approved the model's release (:meth:`Workbench.release`).
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch

from governance.errors import BudgetExhausted, HubError, InvalidRequest
from governance.privacy import accounting
from models import artifacts
from models import spec as specs


class WorkbenchError(HubError):
    """A refusal from the hub: its HTTP ``status``, problem ``code`` and ``detail``."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status, self.code, self.detail = status, code, detail


@dataclass
class RemoteModel:
    """A model trained in the hub: its card now, its weights once released."""

    model_id: str
    card: dict[str, Any]
    project_id: str
    released: artifacts.TrainedModel | None = field(default=None, repr=False)

    def predict(self, x: Any) -> np.ndarray:
        """Predictions from raw features (a DataFrame) or encoded inputs; needs the
        weights, which leave the hub only after a steward's release."""
        if self.released is None:
            raise InvalidRequest(
                f"model {self.model_id} has no weights here yet: submit it and fetch them "
                "with Workbench.release once a steward has approved it"
            )
        return self.released.predict(x)


class Workbench:
    def __init__(self, url: str, key: str, *, timeout: float = 3600.0) -> None:
        self._http = httpx.Client(
            base_url=url.rstrip("/") + "/v1",
            headers={"Authorization": f"Bearer {key}"},
            timeout=timeout,
        )

    @classmethod
    def connect(cls, url: str | None = None, key: str | None = None) -> Workbench:
        """The hub at ``url`` (default ``$HUB_URL`` or http://127.0.0.1:8000) as the owner
        of ``key`` (default ``$HUB_API_KEY``)."""
        key = key or os.environ.get("HUB_API_KEY")
        if not key:
            raise InvalidRequest("set HUB_API_KEY to your API key (or pass key=)")
        return cls(url or os.environ.get("HUB_URL", "http://127.0.0.1:8000"), key)

    def __enter__(self) -> Workbench:
        return self

    def __exit__(self, *_: object) -> None:
        self._http.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = self._http.request(method, path, **kwargs)
        if response.status_code >= 400:
            try:
                body = response.json()
            except ValueError:
                body = {}
            raise WorkbenchError(
                response.status_code, body.get("code", "error"), body.get("detail", "")
            )
        return response

    @staticmethod
    def spec(spec: specs.Spec | Path | str) -> specs.Spec:
        """A spec from a Spec, a .toml path (its sql_file read here) or TOML text."""
        if isinstance(spec, specs.Spec):
            return spec
        path = Path(spec)
        if path.suffix == ".toml" and path.is_file():
            return specs.load(path)
        return specs.parse(str(spec))

    def train(self, project_id: str, spec: specs.Spec | Path | str) -> RemoteModel:
        """Train in the hub; ε (training + DP metrics) is charged to the project."""
        resolved = self.spec(spec)
        body = self._call(
            "POST",
            f"/projects/{project_id}/models",
            json={"spec": specs.dumps(resolved), "name": resolved.name},
        ).json()
        return RemoteModel(body["model_id"], body["card"], project_id)

    def models(self, project_id: str) -> list[dict[str, Any]]:
        """The project's model cards, newest first."""
        return list(self._call("GET", f"/projects/{project_id}/models").json()["models"])

    def submit(self, project_id: str, model_id: str) -> str:
        """Ask a steward to release the model; returns the output id."""
        path = f"/projects/{project_id}/models/{model_id}/submit"
        return str(self._call("POST", path).json()["output_id"])

    def release(self, project_id: str, model_id: str) -> RemoteModel:
        """The released model with its weights (refused until a steward approves)."""
        card = self._call("GET", f"/projects/{project_id}/models/{model_id}").json()["card"]
        data = self._call("GET", f"/projects/{project_id}/models/{model_id}/weights").content
        weights = torch.load(io.BytesIO(data), weights_only=True)
        trained = artifacts.from_weights(model_id, card, weights)
        return RemoteModel(model_id, card, project_id, trained)

    def budget(self, project_id: str) -> tuple[float, float]:
        """The project's remaining (ε, δ)."""
        b = self._call("GET", f"/projects/{project_id}").json()["budget"]
        return float(b["epsilon_remaining"]), float(b["delta_remaining"])

    def ensure_budget(self, project_id: str, plan: list[specs.Spec]) -> None:
        """Refuse, before anything is spent, a plan of trainings the budget cannot cover."""
        need = (
            sum(s.epsilon + s.metrics_epsilon for s in plan),
            sum(s.delta or accounting.DEFAULT_TRAINING_DELTA for s in plan),
        )
        left = self.budget(project_id)
        if not accounting.fits(total=left, spent=(0.0, 0.0), request=need):
            raise BudgetExhausted(
                f"this plan of {len(plan)} training(s) does not fit; nothing was spent: "
                + accounting.shortfall(total=left, spent=(0.0, 0.0), request=need)
            )
