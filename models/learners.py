"""The model of a spec: risk models and the S- and T-learners of a treatment's effect.

Model kinds: ``logistic`` and ``mlp`` risk models, and ``effect`` models of a treatment's
individual effect built from DP models (trained with DP-SGD, or, for linear effect models
of a continuous outcome, by sufficient-statistics perturbation, :mod:`models.adassp`, or
by a DP stratified analysis of the arms within strata of the modifiers,
:mod:`models.strata`): an
S-learner (one model on features, treatment and their interactions) or a T-learner (one
model per arm; the arms are disjoint, so by parallel composition the pair costs the ε of
one).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from models import adassp, dpsgd, features, strata
from models.spec import Spec


def loss_of(outcome_type: str) -> dpsgd.Loss:
    """The one place the loss follows from the outcome: binary → BCE, continuous → MSE."""
    return "bce" if outcome_type == "binary" else "mse"


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


def design(x: np.ndarray, t: np.ndarray | float, modifiers: list[int] | None) -> np.ndarray:
    """S-learner inputs: features, treatment, and treatment × the effect modifiers."""
    tt = np.broadcast_to(np.asarray(t, dtype=np.float32), (len(x),))[:, None]
    xm = x if modifiers is None else x[:, modifiers]
    return np.concatenate([x, tt, xm * tt], axis=1).astype(np.float32)


def predict(
    card: dict[str, Any], module: torch.nn.Module, x: np.ndarray, *, extra: torch.nn.Module | None
) -> np.ndarray:
    """Risk for risk models; expected benefit (untreated − treated outcome) for effect models."""
    loss = loss_of(card["outcome_type"])
    if card["model_kind"] != "effect":
        return dpsgd.predict(module, x, loss=loss)
    if card["learner"] == "s":
        mods = card.get("modifier_columns")
        treated = dpsgd.predict(module, design(x, 1.0, mods), loss=loss)
        untreated = dpsgd.predict(module, design(x, 0.0, mods), loss=loss)
    else:
        assert extra is not None
        treated = dpsgd.predict(module, x, loss=loss)
        untreated = dpsgd.predict(extra, x, loss=loss)
    scale = 1.0
    if card["outcome_type"] == "continuous":
        lo, hi = card["outcome_bounds"]
        scale = hi - lo
    return np.asarray((untreated - treated) * scale, dtype=np.float64)


Fitter = Callable[[np.ndarray, np.ndarray, float | None, float], dpsgd.FitResult]


def replay(spec: Spec) -> Fitter:
    """The spec's one-release learner (AdaSSP or strata) as ``(x, y, ε, δ) → fit``:
    what training runs, and what the steward's membership audit replays."""

    def run(x: np.ndarray, y: np.ndarray, epsilon: float | None, delta: float) -> dpsgd.FitResult:
        private = epsilon is not None and math.isfinite(epsilon)
        if spec.learning_method == "strata":
            p = strata.plan(spec, float(epsilon) if private else 1.0, delta)  # type: ignore[arg-type]
            return strata.fit(x, y, p, private=private)
        return adassp.fit(x, y, epsilon=epsilon, delta=delta)

    return run


def fit_config(spec: Spec, planned_rows: int) -> dpsgd.FitConfig:
    """The DP-SGD configuration; ``planned_rows`` (never the cohort's size) sets the
    sample rate, so that the steps and noise on the card reveal nothing about the data."""
    t = spec.training
    return dpsgd.FitConfig(
        epochs=t.epochs, batch_size=t.batch_size, max_grad_norm=t.max_grad_norm,
        learning_rate=t.learning_rate, optimizer=t.optimizer,
        grad_sample_mode=t.grad_sample_mode, seed=t.seed, planned_rows=planned_rows,
    )  # fmt: skip


def module(spec: Spec, inputs: int) -> torch.nn.Module:
    torch.manual_seed(spec.training.seed)
    return dpsgd.build("logistic" if spec.linear else "mlp", inputs, hidden=spec.hidden)


def inputs(spec: Spec, encoded: int) -> int:
    """The model's input width for ``encoded`` feature columns."""
    if spec.kind == "effect" and spec.learner == "s":
        mods = modifier_columns(spec)
        return encoded + 1 + (encoded if mods is None else len(mods))
    return encoded


def fit(
    spec: Spec,
    x: np.ndarray,
    y: np.ndarray,
    t: np.ndarray | None,
    *,
    planned_rows: int,
    epsilon: float | None,
    delta: float,
    on_step: Callable[[int], None] | None = None,
) -> tuple[torch.nn.Module, torch.nn.Module | None, list[dpsgd.FitResult]]:
    """Fit the model of ``spec`` on training rows (``epsilon=None``: non-private baseline).

    Never fails on the data: an empty arm or cohort trains on nothing (noise only).
    """
    config = fit_config(spec, planned_rows)
    loss = loss_of(spec.outcome_type)

    def one(xs: np.ndarray, ys: np.ndarray) -> dpsgd.FitResult:
        if spec.learning_method in ("adassp", "strata"):
            result = replay(spec)(xs, ys, epsilon, delta)
            if on_step is not None:
                on_step(1)
            return result
        return dpsgd.fit(module(spec, xs.shape[1]), xs, ys, loss=loss, config=config,
                         epsilon=epsilon, delta=delta, on_step=on_step)  # fmt: skip

    if spec.kind != "effect":
        r = one(x, y)
        return r.model, None, [r]
    assert t is not None
    if spec.learner == "s":
        r = one(design(x, t, modifier_columns(spec)), y)
        return r.model, None, [r]
    treated, untreated = one(x[t == 1.0], y[t == 1.0]), one(x[t == 0.0], y[t == 0.0])
    return treated.model, untreated.model, [treated, untreated]


def steps(spec: Spec, planned_rows: int) -> int:
    """Optimiser steps a training run takes (known before any data is read)."""
    runs = 2 if spec.kind == "effect" and spec.learner == "t" else 1
    if spec.learning_method in ("adassp", "strata"):
        return runs  # one release of the noisy statistics per model
    config = fit_config(spec, planned_rows)
    return runs * config.steps_per_epoch(planned_rows) * config.epochs
