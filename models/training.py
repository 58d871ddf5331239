"""Governed DP-SGD training: features through governance, Opacus, the shared budget ledger.

A modeller named as a trainer of an approved project defines a cohort with SQL against
the real release (a :class:`~models.spec.Spec`). The SQL passes the same policy as any
query (granted tables and columns, allow-listed functions; row-level output is allowed
here and only here, for trainers), the extraction is audited, and the rows stay in this
process as arrays: nothing but the trained model and its card is written, and both go
to the project's workspace inside the hub.

Before training, the target ε is reserved in the project's ledger; training runs with
Opacus (Poisson sampling, per-sample clipping, calibrated Gaussian noise, RDP
accountant, δ well below 1/n); the ε the accountant reports is committed when training
ends, and a run that crashes keeps its reservation (it may have released something).

Model kinds: ``logistic`` and ``mlp`` risk models, and ``effect`` models of a treatment's
individual effect built from DP models: an S-learner (one model on features, treatment
and their interactions) or a T-learner (one model per arm; the arms are disjoint, so by
parallel composition the pair costs the ε of one).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import math
import os
import re
import secrets
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from governance.access.people import Principal
from governance.access.projects import authorize
from governance.audit.events import AuditEvent
from governance.errors import AccessDenied, Conflict, InvalidRequest, NotFound
from governance.queries import QueryService
from governance.sql import policy as sql_policy
from models import dpsgd, features, metrics, mia
from models.spec import Spec, Training

MIN_TRAINING_ROWS = 200
MODEL_ID = re.compile(r"m-[0-9a-f]{12}")


@dataclass(frozen=True)
class Cohort:
    """A governed, encoded training table; it exists only in this process."""

    keys: list[Any]
    x: np.ndarray  # (n, d) float32 in [0, 1]
    y: np.ndarray  # (n,) float32: 0/1, or a continuous outcome scaled to [0, 1]
    present: np.ndarray  # (n,) bool: the outcome is recorded
    treatment: np.ndarray | None  # (n,) float32 0/1 for effect models
    columns: list[str]
    release: str


@dataclass
class TrainedModel:
    model_id: str
    module: torch.nn.Module  # the effect models' treated/untreated pair share one module
    card: dict[str, Any]
    folder: Path
    extra: torch.nn.Module | None = None  # the T-learner's untreated-arm model

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Risk (probability) for risk models; expected benefit for effect models."""
        return predict(self.card, self.module, x, extra=self.extra)


# ---------------------------------------------------------------------- extraction
def extract(service: QueryService, principal: Principal, project_id: str, spec: Spec) -> Cohort:
    """The cohort of ``spec`` as arrays for one of the project's named trainers
    (modellers): checked by the policy, audited, in memory."""
    return _extract(service, principal, project_id, spec, purpose="train", release_id=None)


def _extract(
    service: QueryService,
    principal: Principal,
    project_id: str,
    spec: Spec,
    *,
    purpose: str,
    release_id: str | None,
) -> Cohort:
    """``purpose="train"``: a trainer, on the current release; ``purpose="audit"``: an
    accredited steward re-reading a trained model's own cohort on the model's release
    (only :func:`audit_model` calls it, with the spec stored beside the model)."""
    project = service.project_for(principal, project_id)
    event: dict[str, Any] = {
        "action": "train.extract" if purpose == "train" else "model.audit.extract",
        "project": project_id,
        "query_text": spec.sql,
    }
    try:
        user = principal.user
        if purpose == "train":
            if user.role != "modeller":
                raise AccessDenied("only modellers extract training data")
            authorize(project, user, train=True)
        elif user.role != "steward" or not user.accredited():
            raise AccessDenied("only accredited stewards audit models")
        release = (
            service.release_for("real") if release_id is None else service.real_release(release_id)
        )
        engine = service.engine(release)
        cur = engine.cursor()
        try:
            sql_policy.check(cur, spec.sql, granted=project.granted or {}, real=False)
        finally:
            cur.close()
        result = engine.run(spec.sql, max_rows=5_000_000)
        missing = [c for c in spec.columns if c not in result.columns]
        if missing:
            raise InvalidRequest(f"the cohort query must return column(s): {', '.join(missing)}")
        data = {c: [row[i] for row in result.rows] for i, c in enumerate(result.columns)}
        encoder = features.Encoder(spec.numeric, spec.categorical)
        x = encoder.encode(data)
        if spec.outcome_type == "binary":
            y = features.binary(data[spec.outcome], name=spec.outcome)
            present = np.ones(len(y), dtype=bool)
        else:
            assert spec.outcome_bounds is not None
            y, present = features.bounded(data[spec.outcome], spec.outcome_bounds)
        t = features.binary(data[spec.treatment], name=spec.treatment) if spec.treatment else None
    except ValueError as exc:
        service.audit(principal, decision="denied", reason=str(exc), **event)
        raise InvalidRequest(str(exc)) from None
    except Exception as exc:
        service.audit(principal, decision="denied", reason=str(exc), **event)
        raise
    service.audit(principal, row_count=len(y), release=release.id, **event)
    return Cohort(data[spec.key], x, y, present, t, encoder.columns, release.id)


def split(keys: list[Any], salt: bytes, holdout: float) -> np.ndarray:
    """True for held-out rows: a keyed hash of the row key, stable across extractions."""
    out = np.empty(len(keys), dtype=bool)
    for i, k in enumerate(keys):
        digest = hmac.new(salt, str(k).encode(), hashlib.sha256).digest()
        out[i] = int.from_bytes(digest[:8], "big") / 2**64 < holdout
    return out


# ---------------------------------------------------------------------- models
def modifier_columns(spec: Spec) -> list[int] | None:
    """Encoded columns of the spec's effect modifiers (None: every column)."""
    if spec.modifiers is None:
        return None
    columns = features.Encoder(spec.numeric, spec.categorical).columns
    return [
        i
        for i, c in enumerate(columns)
        if c.split("=")[0] in spec.modifiers or c.removesuffix("_missing") in spec.modifiers
    ]


def _design(x: np.ndarray, t: np.ndarray | float, modifiers: list[int] | None) -> np.ndarray:
    """S-learner inputs: features, treatment, and treatment × the effect modifiers."""
    tt = np.broadcast_to(np.asarray(t, dtype=np.float32), (len(x),))[:, None]
    xm = x if modifiers is None else x[:, modifiers]
    return np.concatenate([x, tt, xm * tt], axis=1).astype(np.float32)


def _loss(card: dict[str, Any]) -> dpsgd.Loss:
    return "bce" if card["outcome_type"] == "binary" else "mse"


def _spec_loss(spec: Spec) -> dpsgd.Loss:
    return "bce" if spec.outcome_type == "binary" else "mse"


def predict(
    card: dict[str, Any], module: torch.nn.Module, x: np.ndarray, *, extra: torch.nn.Module | None
) -> np.ndarray:
    loss = _loss(card)
    if card["model_kind"] != "effect":
        return dpsgd.predict(module, x, loss=loss)
    if card["learner"] == "s":
        mods = card.get("modifier_columns")
        treated = dpsgd.predict(module, _design(x, 1.0, mods), loss=loss)
        untreated = dpsgd.predict(module, _design(x, 0.0, mods), loss=loss)
    else:
        assert extra is not None
        treated = dpsgd.predict(module, x, loss=loss)
        untreated = dpsgd.predict(extra, x, loss=loss)
    scale = 1.0
    if card["outcome_type"] == "continuous":
        lo, hi = card["outcome_bounds"]
        scale = hi - lo
    # benefit: how much lower the outcome is with the treatment (risk points or units)
    return np.asarray((untreated - treated) * scale, dtype=np.float64)


def _fit_config(spec: Spec) -> dpsgd.FitConfig:
    t = spec.training
    return dpsgd.FitConfig(
        epochs=t.epochs, batch_size=t.batch_size, max_grad_norm=t.max_grad_norm,
        learning_rate=t.learning_rate, optimizer=t.optimizer,
        grad_sample_mode=t.grad_sample_mode, seed=t.seed,
    )  # fmt: skip


def _module(spec: Spec, inputs: int) -> torch.nn.Module:
    torch.manual_seed(spec.training.seed)
    return dpsgd.build("logistic" if spec.linear else "mlp", inputs, hidden=spec.hidden)


def fit_spec(
    spec: Spec,
    x: np.ndarray,
    y: np.ndarray,
    t: np.ndarray | None,
    *,
    epsilon: float | None,
    delta: float,
    on_step: Callable[[int], None] | None = None,
) -> tuple[torch.nn.Module, torch.nn.Module | None, list[dpsgd.FitResult]]:
    """Fit the model of ``spec`` on training rows (``epsilon=None``: non-private baseline)."""
    config = _fit_config(spec)
    loss = _spec_loss(spec)
    if spec.kind != "effect":
        r = dpsgd.fit(_module(spec, x.shape[1]), x, y, loss=loss, config=config,
                      epsilon=epsilon, delta=delta, on_step=on_step)  # fmt: skip
        return r.model, None, [r]
    assert t is not None
    if spec.learner == "s":
        design = _design(x, t, modifier_columns(spec))
        r = dpsgd.fit(_module(spec, design.shape[1]), design, y, loss=loss, config=config,
                      epsilon=epsilon, delta=delta, on_step=on_step)  # fmt: skip
        return r.model, None, [r]
    arms = []
    for arm in (1.0, 0.0):
        rows = t == arm
        if rows.sum() < MIN_TRAINING_ROWS // 2:
            raise InvalidRequest("too few people in a treatment arm to train privately")
        arms.append(
            dpsgd.fit(
                _module(spec, x.shape[1]),
                x[rows],
                y[rows],
                loss=loss,
                config=config,
                epsilon=epsilon,
                delta=delta,
                on_step=on_step,
            )
        )
    return arms[0].model, arms[1].model, arms


def _steps(spec: Spec, n: int, t: np.ndarray | None) -> int:
    config = _fit_config(spec)
    if spec.kind == "effect" and spec.learner == "t" and t is not None:
        arms = [int((t == a).sum()) for a in (1.0, 0.0)]
        return sum(config.steps_per_epoch(max(a, 1)) * config.epochs for a in arms)
    return config.steps_per_epoch(n) * config.epochs


# ---------------------------------------------------------------------- training
def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def models_dir(service: QueryService, project_id: str) -> Path:
    return service.workspace(project_id) / "models"


def train(
    service: QueryService,
    principal: Principal,
    project_id: str,
    spec: Spec,
    *,
    on_step: Callable[[int], None] | None = None,
    on_start: Callable[[int], None] | None = None,
    split_key: bytes | None = None,
) -> TrainedModel:
    """Extract, reserve ε, train with DP-SGD, commit the spend, evaluate, write the card.

    ``on_start`` receives the number of optimiser steps to come and ``on_step`` each
    step (progress bars). Models given the same ``split_key`` share their train/held-out
    split (to compare them on the same held-out people); by default each run draws its own.
    """
    cohort = extract(service, principal, project_id, spec)
    salt = split_key if split_key is not None else secrets.token_bytes(16)
    held_out = split(cohort.keys, salt, spec.training.holdout)
    usable = cohort.present
    train_rows = usable & ~held_out
    test_rows = usable & held_out
    n = int(train_rows.sum())
    if n < MIN_TRAINING_ROWS:
        raise InvalidRequest(
            f"too few training rows to train privately ({n}; at least {MIN_TRAINING_ROWS})"
        )
    delta = spec.delta if spec.delta is not None else dpsgd.default_delta(n)
    if delta > 0.1 / n:
        raise InvalidRequest(
            f"δ = {delta:g} is too large for {n:,} training rows: it must be at most "
            f"1/(10 n) = {0.1 / n:.2g} (leave it out for the default)"
        )
    x, y = cohort.x[train_rows], cohort.y[train_rows]
    t = cohort.treatment[train_rows] if cohort.treatment is not None else None
    if spec.kind == "effect" and t is not None:
        arms = [int((t == a).sum()) for a in (1.0, 0.0)]
        if spec.learner == "t" and min(arms) < MIN_TRAINING_ROWS // 2:
            raise InvalidRequest(
                f"too few people in a treatment arm to train privately ({min(arms)}; at "
                f"least {MIN_TRAINING_ROWS // 2} per arm for a T-learner)"
            )
        if min(arms) == 0:
            raise InvalidRequest("every training row has the same treatment: no effect to learn")
    gov = service.gov
    user = principal.user
    spend = gov.ledger.reserve(
        project_id, epsilon=spec.epsilon, delta=delta, purpose=f"dp-sgd {spec.kind} {spec.name}",
        actor=user.user_id, key_id=principal.key_id, role=user.role,
    )  # fmt: skip
    if on_start is not None:
        on_start(_steps(spec, n, t))
    # a crash from here on keeps the reservation: the ledger counts it as spent
    module, extra, fits = fit_spec(spec, x, y, t, epsilon=spec.epsilon, delta=delta,
                                   on_step=on_step)  # fmt: skip
    spent = max(f.epsilon for f in fits)
    gov.ledger.commit(spend, epsilon=spent, delta=delta, actor=user.user_id)

    model_id = "m-" + secrets.token_hex(6)
    card: dict[str, Any] = {
        "model_id": model_id,
        "name": spec.name,
        "project": project_id,
        "release": cohort.release,
        "author": user.user_id,
        "created_at": _now(),
        "model_kind": spec.kind,
        "learner": spec.learner if spec.kind == "effect" else None,
        "architecture": "linear" if spec.linear else f"mlp(tanh, {spec.hidden})",
        "hidden": spec.hidden,
        "outcome": spec.outcome,
        "outcome_type": spec.outcome_type,
        "outcome_bounds": list(spec.outcome_bounds) if spec.outcome_bounds else None,
        "treatment": spec.treatment,
        "modifiers": spec.modifiers,
        "modifier_columns": modifier_columns(spec),
        "cohort_sql_sha256": hashlib.sha256(spec.sql.encode()).hexdigest(),
        "cohort_sql": spec.sql,
        "features": {
            "numeric": {k: list(v) for k, v in spec.numeric.items()},
            "categorical": spec.categorical,
            "encoded_columns": cohort.columns,
            "scaling": "declared bounds, clipped; missing → midpoint + indicator",
        },
        "rows": {"training": n, "held_out": int(test_rows.sum())},
        "epsilon": spent,
        "epsilon_target": spec.epsilon,
        "delta": delta,
        "accountant": "rdp (Opacus RDPAccountant)",
        "composition": (
            "parallel (disjoint treatment arms)"
            if spec.kind == "effect" and spec.learner == "t"
            else "single DP-SGD run"
        ),
        "arms": (
            [
                {
                    "arm": arm,
                    "rows": int((t == a).sum()),
                    "epsilon": f.epsilon,
                    "noise_multiplier": f.noise_multiplier,
                    "sample_rate": f.sample_rate,
                    "steps": f.steps,
                }
                for arm, a, f in zip(("treated", "untreated"), (1.0, 0.0), fits, strict=True)
            ]
            if len(fits) == 2 and t is not None
            else None
        ),  # the T-learner's two DP-SGD runs, each on its own arm
        "noise_multiplier": fits[0].noise_multiplier,
        "max_grad_norm": spec.training.max_grad_norm,
        "epochs": spec.training.epochs,
        "sample_rate": fits[0].sample_rate,
        "expected_batch_size": spec.training.batch_size,
        "steps": sum(f.steps for f in fits),
        "optimizer": spec.training.optimizer,
        "learning_rate": spec.training.learning_rate,
        "grad_sample_mode": spec.training.grad_sample_mode,
        "secure_rng": False,
        "seed": spec.training.seed,  # initial weights only: noise and batches use OS entropy
    }
    xt, yt = cohort.x[test_rows], cohort.y[test_rows]
    tt = cohort.treatment[test_rows] if cohort.treatment is not None else None
    card["metrics"], plot = evaluate(card, module, extra, xt, yt, tt)
    card["membership_inference"] = _membership_audit(
        spec, module, cohort, train_rows, test_rows, actor=user.user_id
    )
    folder = _write(service, project_id, model_id, card, module, extra, spec, salt, plot)
    gov.audit.record(AuditEvent(
        action="train.model", actor=user.user_id, key_id=principal.key_id, role=user.role,
        project=project_id, release=cohort.release, epsilon=spent, delta=delta, row_count=n,
        target=model_id, result_sha256=card["artifact_sha256"],
        details={"kind": spec.kind, "noise_multiplier": card["noise_multiplier"],
                 "epochs": spec.training.epochs},
    ))  # fmt: skip
    return TrainedModel(model_id, module, card, folder, extra)


def evaluate(
    card: dict[str, Any],
    module: torch.nn.Module,
    extra: torch.nn.Module | None,
    x: np.ndarray,
    y: np.ndarray,
    t: np.ndarray | None,
) -> tuple[dict[str, Any], list[dict[str, float]] | None]:
    """Held-out metrics with 95% bootstrap intervals (and calibration bins for the plot)."""
    out: dict[str, Any] = {"held_out_rows": len(y)}
    if len(y) == 0:
        return out, None
    if card["model_kind"] != "effect":
        p = dpsgd.predict(module, x, loss="bce")
        out["auroc"] = metrics.auroc(p, y)
        out["auroc_ci95"] = metrics.bootstrap_ci(lambda i: metrics.auroc(p[i], y[i]), len(y))
        out["brier"] = metrics.brier(p, y)
        out["brier_ci95"] = metrics.bootstrap_ci(lambda i: metrics.brier(p[i], y[i]), len(y))
        intercept, slope = metrics.calibration(p, y)
        out["calibration_intercept"], out["calibration_slope"] = intercept, slope
        out["calibration_slope_ci95"] = metrics.bootstrap_ci(
            lambda i: metrics.calibration(p[i], y[i])[1], len(y), resamples=100
        )
        out["outcome_rate"] = float(np.mean(y))
        return out, metrics.calibration_bins(p, y)
    assert t is not None
    benefit = predict(card, module, x, extra=extra)
    out["mean_predicted_benefit"] = float(np.mean(benefit))
    out["mean_predicted_benefit_ci95"] = metrics.bootstrap_ci(
        lambda i: float(np.mean(benefit[i])), len(y)
    )
    out["predicted_benefit_deciles"] = [
        float(v) for v in np.percentile(benefit, range(10, 100, 10))
    ]
    # how well the outcome model fits the observed arm of each held-out person
    loss = _loss(card)
    if card["learner"] == "s":
        observed = dpsgd.predict(module, _design(x, t, card.get("modifier_columns")), loss=loss)
    else:
        assert extra is not None
        observed = np.where(
            t == 1, dpsgd.predict(module, x, loss=loss), dpsgd.predict(extra, x, loss=loss)
        )
    if loss == "bce":
        out["outcome_auroc"] = metrics.auroc(observed, y)
        out["outcome_auroc_ci95"] = metrics.bootstrap_ci(
            lambda i: metrics.auroc(observed[i], y[i]), len(y)
        )
    else:
        lo, hi = card["outcome_bounds"]
        out["outcome_rmse"] = metrics.rmse(observed, y) * (hi - lo)
        out["outcome_rmse_ci95"] = tuple(
            v * (hi - lo)
            for v in metrics.bootstrap_ci(lambda i: metrics.rmse(observed[i], y[i]), len(y))
        )
    return out, None


def _write(
    service: QueryService,
    project_id: str,
    model_id: str,
    card: dict[str, Any],
    module: torch.nn.Module,
    extra: torch.nn.Module | None,
    spec: Spec,
    salt: bytes,
    calibration: list[dict[str, float]] | None,
) -> Path:
    """The model's folder in the project workspace, written whole or not at all."""
    root = models_dir(service, project_id)
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{model_id}.partial"
    tmp.mkdir()
    try:
        weights = {"model": dpsgd.unwrap(module).state_dict()}
        if extra is not None:
            weights["untreated"] = dpsgd.unwrap(extra).state_dict()
        torch.save(weights, tmp / "model.pt")
        card["artifact_sha256"] = hashlib.sha256((tmp / "model.pt").read_bytes()).hexdigest()
        (tmp / "spec.json").write_text(json.dumps(spec_dict(spec), indent=2) + "\n")
        (tmp / "split.key").write_bytes(salt)  # the train/held-out split, for audits
        os.chmod(tmp / "split.key", 0o600)
        if calibration:
            card["calibration_bins"] = calibration
            _calibration_plot(calibration, card, tmp / "calibration.png")
        (tmp / "card.json").write_text(json.dumps(card, indent=2, default=_json) + "\n")
        (tmp / "card.md").write_text(card_markdown(card))
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        tmp.rename(root / model_id)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root / model_id


def _json(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def _calibration_plot(bins: list[dict[str, float]], card: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=100)
    pred = [b["predicted"] for b in bins]
    obs = [b["observed"] for b in bins]
    top = max([*pred, *obs, 0.05]) * 1.1
    ax.plot([0, top], [0, top], color="grey", linestyle="--", label="perfect")
    ax.plot(pred, obs, marker="o", label="held-out deciles")
    slope = card["metrics"].get("calibration_slope", math.nan)
    ax.set_title(f"{card['name']}: calibration (slope {slope:.2f})", fontsize=10)
    ax.set_xlabel("mean predicted risk")
    ax.set_ylabel("observed rate")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list | tuple) and value and all(isinstance(v, float) for v in value):
        return "[" + ", ".join(f"{v:.4g}" for v in value) + "]"
    return str(value)


def card_markdown(card: dict[str, Any]) -> str:
    """The model card as a human-readable page."""
    lines = [
        f"# Model card: {card['name']} ({card['model_id']})",
        "",
        f"- Project: {card['project']}; release: {card['release']}",
        f"- Author: {card['author']}; trained: {card['created_at']}",
        f"- Model: {card['model_kind']} ({card['architecture']})"
        + (f", {card['learner'].upper()}-learner" if card.get("learner") else ""),
        f"- Outcome: {card['outcome']} ({card['outcome_type']})"
        + (f"; treatment: {card['treatment']}" if card.get("treatment") else ""),
        f"- Cohort SQL sha256: {card['cohort_sql_sha256']}",
        f"- Rows: {card['rows']['training']:,} training, {card['rows']['held_out']:,} held out",
        "",
        "## Privacy",
        "",
        f"- ε = {card['epsilon']:.4g} (target {card['epsilon_target']}), δ = {card['delta']:.3g}",
        f"- Accountant: {card['accountant']}; composition: {card['composition']}",
        f"- Noise multiplier {card['noise_multiplier']:.4g}, clipping norm "
        f"{card['max_grad_norm']}, sample rate {card['sample_rate']:.4g}, "
        f"{card['epochs']} epochs, {card['steps']} steps",
        f"- Secure RNG: {'yes' if card['secure_rng'] else 'no (see README: secure noise)'}",
        "",
        "## Features",
        "",
    ]
    for name, (lo, hi) in card["features"]["numeric"].items():
        lines.append(f"- {name}: numeric, declared bounds [{lo}, {hi}]")
    for name, levels in card["features"]["categorical"].items():
        lines.append(f"- {name}: categorical, levels {'; '.join(levels)}")
    lines += ["", "## Held-out metrics (95% bootstrap intervals)", ""]
    for key, value in card["metrics"].items():
        lines.append(f"- {key}: {_fmt(value)}")
    attack = card.get("membership_inference") or {}
    if attack:
        lines += [
            "",
            "## Membership-inference audit",
            "",
            f"- Attack AUC {attack['attack_auc']:.3f} (loss threshold "
            f"{attack['loss_threshold_auc']:.3f}, reference-calibrated "
            f"{_fmt(attack['calibrated_auc'])}); {attack['members']} members vs "
            f"{attack['non_members']} non-members",
        ]
    lines += ["", f"Artifact sha256: {card.get('artifact_sha256', '')}", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------- loading, audits
def load(service: QueryService, project_id: str, model_id: str) -> TrainedModel:
    if not MODEL_ID.fullmatch(model_id):
        raise NotFound(f"no model {model_id!r} in project {project_id}")
    folder = models_dir(service, project_id) / model_id
    if not MODEL_ID.fullmatch(model_id) or not (folder / "card.json").is_file():
        raise NotFound(f"no model {model_id} in project {project_id}")
    card = json.loads((folder / "card.json").read_text())
    weights = torch.load(folder / "model.pt", weights_only=True)
    inputs = len(card["features"]["encoded_columns"])
    spec_like = card["model_kind"]
    if spec_like == "effect" and card["learner"] == "s":
        mods = card.get("modifier_columns")
        inputs = inputs + 1 + (inputs if mods is None else len(mods))
    kind: Literal["logistic", "mlp"] = "logistic" if card["architecture"] == "linear" else "mlp"
    module = dpsgd.build(kind, inputs, hidden=card["hidden"])
    module.load_state_dict(weights["model"])
    extra = None
    if "untreated" in weights:
        extra = dpsgd.build(kind, inputs, hidden=card["hidden"])
        extra.load_state_dict(weights["untreated"])
    return TrainedModel(model_id, module, card, folder, extra)


def audit_model(
    service: QueryService, principal: Principal, project_id: str, model_id: str
) -> dict[str, Any]:
    """A steward's membership-inference audit of a trained model.

    The cohort is extracted again through governance (audited as ``model.audit.extract``;
    the rows stay in memory), split exactly as in training with the model's split key,
    and both attacks are run. The result is written beside the model and, if the model
    awaits release, attached to its output for review.
    """
    trained = load(service, project_id, model_id)
    folder = trained.folder
    spec = spec_from_dict(json.loads((folder / "spec.json").read_text()))
    if hashlib.sha256(spec.sql.encode()).hexdigest() != trained.card["cohort_sql_sha256"]:
        raise Conflict(f"model {model_id}: its stored cohort does not match its card")
    cohort = _extract(
        service, principal, project_id, spec, purpose="audit", release_id=trained.card["release"]
    )
    held_out = split(cohort.keys, (folder / "split.key").read_bytes(), spec.training.holdout)
    report = _membership_audit(
        spec, trained.module, cohort, cohort.present & ~held_out, cohort.present & held_out,
        actor=principal.user.user_id,
    )  # fmt: skip
    (folder / "audit.json").write_text(json.dumps(report, indent=2) + "\n")
    output_id = service.model_output(model_id)
    if output_id is not None:
        service.record_model_audit(principal, output_id, report)
    else:
        service.audit(
            principal, action="model.audit", project=project_id, target=model_id,
            details={"attack_auc": report["attack_auc"]},
        )  # fmt: skip
    return report


def _membership_audit(
    spec: Spec,
    module: torch.nn.Module,
    cohort: Cohort,
    members: np.ndarray,
    non_members: np.ndarray,
    *,
    actor: str,
) -> dict[str, Any]:
    """Both membership-inference attacks on ``module``, over the cohort rows it was
    (``members``) and was not (``non_members``) trained on; the same at training time
    and in a steward's later audit."""
    x, y, t = cohort.x, cohort.y, cohort.treatment
    if spec.kind == "effect":
        assert t is not None
        if spec.learner == "s":
            x = _design(x, t, modifier_columns(spec))
        else:  # the T-learner's treated-arm model, attacked on the treated
            members, non_members = members & (t == 1), non_members & (t == 1)
    result = mia.audit(
        module, fresh=lambda: _module(spec, x.shape[1]), members=(x[members], y[members]),
        non_members=(x[non_members], y[non_members]), loss=_spec_loss(spec),
        config=_fit_config(spec),
    )  # fmt: skip
    return {**result.as_dict(), "run_by": actor, "at": _now()}


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


def submit(service: QueryService, principal: Principal, project_id: str, model_id: str) -> str:
    """Ask a steward to release a model out of the hub (its card and weights' hash)."""
    trained = load(service, project_id, model_id)
    if trained.card["author"] != principal.user.user_id:
        raise AccessDenied("only the model's author submits it for release")
    return service.submit_model(
        principal, project_id, model_id=model_id, release=trained.card["release"],
        card=trained.card, artifact_sha256=trained.card["artifact_sha256"],
    )  # fmt: skip
