"""A trained model's folder in the project workspace: written whole or not at all.

models/<model_id>/
    model.pt       weights (state dicts)
    card.json      the card the modeller reads (DP metrics only)
    card.md        the same, as a page
    spec.json      the spec as trained (its cohort SQL inlined)
    split.key      the train/held-out split key (for the steward's audit), 0600
    steward.json   exact held-out metrics and audits: for the steward only
    calibration.png  exact calibration by group of risk: for the steward only
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from governance.errors import InvalidRequest, NotFound
from models import dpsgd, features, learners, strata
from models.spec import Spec, Training

if TYPE_CHECKING:
    from governance.queries import QueryService

MODEL_ID = re.compile(r"m-[0-9a-f]{12}")


@dataclass
class TrainedModel:
    model_id: str
    module: torch.nn.Module  # the effect models' treated/untreated pair share one module
    card: dict[str, Any]
    folder: Path | None = None
    extra: torch.nn.Module | None = None  # the T-learner's untreated-arm model

    def predict(self, x: Any) -> np.ndarray:
        """Risk (probability) for risk models; expected benefit for effect models.

        ``x`` is either the encoded matrix or raw features: a pandas DataFrame (or a
        mapping of column → values) with the spec's feature columns, encoded here with
        the card's declared bounds and levels.
        """
        return learners.predict(self.card, self.module, encode(self.card, x), extra=self.extra)


def encode(card: dict[str, Any], x: Any) -> np.ndarray:
    """Raw features (DataFrame or mapping) → the model's encoded inputs."""
    if isinstance(x, np.ndarray):
        return x
    numeric = {k: (float(v[0]), float(v[1])) for k, v in card["features"]["numeric"].items()}
    categorical = card["features"]["categorical"]
    columns = list(x.columns) if hasattr(x, "columns") else list(x.keys())
    missing = [c for c in [*numeric, *categorical] if c not in columns]
    if missing:
        raise InvalidRequest(f"the features lack column(s): {', '.join(missing)}")
    data = {c: list(x[c]) for c in [*numeric, *categorical]}
    return features.Encoder(numeric, categorical).encode(data)


def models_dir(service: QueryService, project_id: str) -> Path:
    return service.workspace(project_id) / "models"


def _json(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def write(
    root: Path,
    trained: TrainedModel,
    *,
    spec: Spec,
    salt: bytes,
    steward: dict[str, Any],
    calibration_png: bytes | None,
    markdown: str,
) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{trained.model_id}.partial"
    tmp.mkdir()
    try:
        weights = {"model": dpsgd.unwrap(trained.module).state_dict()}
        if trained.extra is not None:
            weights["untreated"] = dpsgd.unwrap(trained.extra).state_dict()
        torch.save(weights, tmp / "model.pt")
        card = trained.card
        card["artifact_sha256"] = hashlib.sha256((tmp / "model.pt").read_bytes()).hexdigest()
        (tmp / "spec.json").write_text(json.dumps(spec_dict(spec), indent=2) + "\n")
        (tmp / "split.key").write_bytes(salt)
        os.chmod(tmp / "split.key", 0o600)
        (tmp / "steward.json").write_text(json.dumps(steward, indent=2, default=_json) + "\n")
        if calibration_png:
            (tmp / "calibration.png").write_bytes(calibration_png)
        (tmp / "card.json").write_text(json.dumps(card, indent=2, default=_json) + "\n")
        (tmp / "card.md").write_text(markdown.replace(
            "Artifact sha256: ", f"Artifact sha256: {card['artifact_sha256']}"
        ))  # fmt: skip
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        tmp.rename(root / trained.model_id)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    trained.folder = root / trained.model_id
    return trained.folder


def load(root: Path, project_id: str, model_id: str) -> TrainedModel:
    folder = root / model_id
    if not MODEL_ID.fullmatch(model_id) or not (folder / "card.json").is_file():
        raise NotFound(f"no model {model_id} in project {project_id}")
    card = json.loads((folder / "card.json").read_text())
    trained = from_weights(model_id, card, torch.load(folder / "model.pt", weights_only=True))
    trained.folder = folder
    return trained


def from_weights(model_id: str, card: dict[str, Any], weights: dict[str, Any]) -> TrainedModel:
    """A model from its card and state dicts (as saved in ``model.pt``)."""
    inputs = len(card["features"]["encoded_columns"])
    if card["model_kind"] == "effect" and card["learner"] == "s":
        mods = card.get("modifier_columns")
        inputs = inputs + 1 + (inputs if mods is None else len(mods))
    kind: Literal["logistic", "mlp"] = "logistic" if card["architecture"] == "linear" else "mlp"
    module: torch.nn.Module
    if card.get("method") == "strata":  # its layout (columns, knots) is on the card
        module = strata.StrataModel(card["mechanism"][0]["layout"])
    else:
        module = dpsgd.build(kind, inputs, hidden=card["hidden"])
    module.load_state_dict(weights["model"])
    extra = None
    if "untreated" in weights:
        extra = dpsgd.build(kind, inputs, hidden=card["hidden"])
        extra.load_state_dict(weights["untreated"])
    return TrainedModel(model_id, module, card, None, extra)


def steward_record(folder: Path) -> dict[str, Any]:
    path = folder / "steward.json"
    record: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
    return record


def spec_dict(spec: Spec) -> dict[str, Any]:
    """The spec as trained, as JSON (its SQL inlined, whatever file it came from)."""
    out = asdict(spec)
    out.pop("source")
    return out


def spec_from_dict(data: dict[str, Any]) -> Spec:
    data = dict(data)
    data["training"] = Training(**data["training"])
    data["numeric"] = {k: tuple(v) for k, v in data["numeric"].items()}
    if data.get("outcome_bounds") is not None:
        data["outcome_bounds"] = tuple(data["outcome_bounds"])
    return Spec(**data)
