"""Governed DP-SGD training: features through governance, Opacus, the shared budget ledger.

A modeller named as a trainer of an approved project asks for a person-level training
table with SQL against the real release. The SQL passes the same policy as any query
(granted tables and columns, allow-listed functions; row-level output is allowed here
and only here, for trainers), the extraction is audited, and the rows stay in this
process as tensors: nothing is written out.

Before training, the target ε is reserved in the project's ledger; training runs with
Opacus (Poisson sampling, per-sample clipping, calibrated Gaussian noise, RDP
accountant, δ well below 1/n); the ε the accountant reports is committed when training
ends, and a run that crashes keeps its reservation (it may have released something).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from opacus import PrivacyEngine

from governance import sql_policy
from governance.audit import AuditEvent
from governance.errors import AccessDenied, InvalidRequest
from governance.people import Principal
from governance.projects import authorize
from governance.queries import QueryService


@dataclass(frozen=True)
class TrainingTable:
    features: np.ndarray  # (n, d) float32, scaled to declared bounds
    labels: np.ndarray  # (n,) float32 in {0, 1}
    columns: list[str]


@dataclass
class ModelCard:
    project: str
    release: str
    model_kind: str
    features: list[str]
    epsilon: float
    delta: float
    accountant: str
    noise_multiplier: float
    max_grad_norm: float
    epochs: int
    sample_rate: float
    rows: int
    metrics: dict[str, float] = field(default_factory=dict)


def extract(
    service: QueryService,
    principal: Principal,
    project_id: str,
    *,
    sql: str,
    label: str,
    bounds: dict[str, tuple[float, float]],
) -> tuple[TrainingTable, str]:
    """A person-level table for training, checked, audited, kept in memory.

    ``bounds`` declares each feature's range: features are clipped and scaled to [0, 1]
    with these declared bounds, never with statistics of the private data.
    """
    project = service.project_for(principal, project_id)
    event: dict[str, Any] = {"action": "train.extract", "project": project_id, "query_text": sql}
    try:
        if principal.user.role != "modeller":
            raise AccessDenied("only modellers extract training data")
        authorize(project, principal.user, train=True)
        release = service.release_for("real")
        engine = service.engine(release)
        cur = engine.cursor()
        try:
            sql_policy.check(cur, sql, granted=project.granted or {}, real=False)
        finally:
            cur.close()
        result = engine.run(sql, max_rows=5_000_000)
        if label not in result.columns:
            raise InvalidRequest(f"the query must return the label column {label!r}")
        missing = [c for c in result.columns if c != label and c not in bounds]
        if missing:
            raise InvalidRequest(f"declare bounds for every feature: {', '.join(missing)}")
    except Exception as exc:
        service.audit(principal, decision="denied", reason=str(exc), **event)
        raise
    columns = [c for c in result.columns if c != label]
    data = np.array(result.rows, dtype=object)
    y = np.array(
        [1.0 if v else 0.0 for v in data[:, result.columns.index(label)]], dtype=np.float32
    )
    x = np.zeros((len(result.rows), len(columns)), dtype=np.float32)
    for j, col in enumerate(columns):
        lo, hi = bounds[col]
        raw = np.array(
            [np.nan if v is None else float(v) for v in data[:, result.columns.index(col)]]
        )
        raw = np.where(np.isnan(raw), (lo + hi) / 2, raw)  # missing: the declared midpoint
        x[:, j] = (np.clip(raw, lo, hi) - lo) / (hi - lo)
    service.audit(principal, row_count=len(result.rows), release=release.id, **event)
    return TrainingTable(x, y, columns), release.id


def train_logistic(
    service: QueryService,
    principal: Principal,
    project_id: str,
    table: TrainingTable,
    *,
    release: str,
    epsilon: float,
    delta: float | None = None,
    epochs: int = 5,
    batch_size: int = 256,
    max_grad_norm: float = 1.0,
    learning_rate: float = 0.5,
    seed: int = 0,
) -> tuple[torch.nn.Module, ModelCard]:
    """DP logistic regression; the ledger is charged the ε Opacus' RDP accountant reports."""
    n = len(table.labels)
    if n < 100:
        raise InvalidRequest("too few rows to train privately")
    delta = delta if delta is not None else min(1e-6, 0.1 / n)
    gov = service.gov
    spend = gov.ledger.reserve(
        project_id, epsilon=epsilon, delta=delta, purpose="dp-sgd logistic regression",
        actor=principal.user.user_id, key_id=principal.key_id, role=principal.user.role,
    )  # fmt: skip
    torch.manual_seed(seed)
    model = torch.nn.Linear(table.features.shape[1], 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=learning_rate)
    data = torch.utils.data.TensorDataset(
        torch.from_numpy(table.features), torch.from_numpy(table.labels)
    )
    loader = torch.utils.data.DataLoader(data, batch_size=batch_size)
    engine = PrivacyEngine(accountant="rdp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # opacus warns that secure_mode (torchcsprng) is off
        model, optimizer, loader = engine.make_private_with_epsilon(
            module=model, optimizer=optimizer, data_loader=loader, target_epsilon=epsilon,
            target_delta=delta, epochs=epochs, max_grad_norm=max_grad_norm,
        )  # fmt: skip
    loss_fn = torch.nn.BCEWithLogitsLoss()
    with warnings.catch_warnings():
        # torch notes that Opacus' per-sample hooks fire on outputs when inputs need no grad
        warnings.simplefilter("ignore", UserWarning)
        for _ in range(epochs):
            for xb, yb in loader:
                if len(xb) == 0:
                    continue
                optimizer.zero_grad()
                loss_fn(model(xb).squeeze(-1), yb).backward()
                optimizer.step()
    spent = float(engine.get_epsilon(delta))
    gov.ledger.commit(spend, epsilon=min(spent, epsilon), delta=delta, actor=principal.user.user_id)
    card = ModelCard(
        project=project_id, release=release, model_kind="dp_logistic_regression",
        features=table.columns, epsilon=spent, delta=delta, accountant="rdp",
        noise_multiplier=float(optimizer.noise_multiplier), max_grad_norm=max_grad_norm,
        epochs=epochs, sample_rate=batch_size / n, rows=n,
    )  # fmt: skip
    gov.audit.record(AuditEvent(
        action="train.logistic", actor=principal.user.user_id, key_id=principal.key_id,
        role=principal.user.role, project=project_id, release=release, epsilon=spent, delta=delta,
        row_count=n, details={"noise_multiplier": card.noise_multiplier, "epochs": epochs},
    ))  # fmt: skip
    return model, card


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney), ties counted half."""
    order = np.argsort(scores)
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    pos = labels == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
