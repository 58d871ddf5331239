"""DP-SGD's weights must not tell whether a cohort held anyone, nor how many.

A red-team round found two tells: an empty Poisson batch skipped its noise (a cohort
nobody joined returned its seeded initial weights, hash for hash), and Opacus divided
each noisy sum by ``int(len(cohort) * q)`` (0 below one person per step, so the weights
became NaN exactly then: a yes/no answer to "fewer than 1/q people?").
"""

from __future__ import annotations

import numpy as np
import torch

from models import dpsgd


def _config(planned_rows: int = 1_000) -> dpsgd.FitConfig:
    return dpsgd.FitConfig(
        epochs=2, batch_size=16, learning_rate=0.5, seed=7, planned_rows=planned_rows
    )


def _fit(n: int, config: dpsgd.FitConfig, *, optimizer: str = "sgd") -> torch.nn.Module:
    rng = np.random.default_rng(n)
    x = rng.uniform(0, 1, size=(n, 2)).astype(np.float32)
    y = (rng.uniform(size=n) < 0.5).astype(np.float32)
    cfg = dpsgd.FitConfig(**{**config.__dict__, "optimizer": optimizer})
    model = dpsgd.build("logistic", 2)
    return dpsgd.unwrap(
        dpsgd.fit(model, x, y, loss="bce", config=cfg, epsilon=1.0, delta=1e-6).model
    )


def _weights(model: torch.nn.Module) -> np.ndarray:
    return np.concatenate([p.detach().numpy().ravel() for p in model.parameters()])


def _initial() -> np.ndarray:
    torch.manual_seed(7)
    return _weights(dpsgd.build("logistic", 2))


def test_a_cohort_nobody_joined_is_noised_like_any_other():
    runs = [_weights(_fit(0, _config())) for _ in range(2)]
    for w in runs:
        assert np.all(np.isfinite(w))
        assert not np.allclose(w, _initial())  # the initial weights never come back
    assert not np.allclose(runs[0], runs[1])  # fresh noise each run


def test_fewer_people_than_steps_still_gives_finite_weights():
    # 1,000 planned rows in batches of 16: 62 steps an epoch; 3 people is far below one
    # person a step, where Opacus' own divisor was int(3 / 62) = 0
    for optimizer in ("sgd", "adam"):
        for n in (1, 3, 61, 62, 200):
            w = _weights(_fit(n, _config(), optimizer=optimizer))
            assert np.all(np.isfinite(w)), (optimizer, n)


def test_the_divisor_is_planned_not_counted():
    config = _config()
    assert config.expected_batch(0) == config.expected_batch(5) == config.expected_batch(10_000)
    assert abs(config.expected_batch(0) - 1_000 / 62) < 1e-9


def test_a_diverged_model_predicts_a_fixed_value_not_an_error():
    model = dpsgd.build("logistic", 2)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))
    x = np.ones((4, 2), dtype=np.float32)
    assert dpsgd.predict(model, x, loss="bce").tolist() == [0.5] * 4
    assert dpsgd.predict(model, x, loss="mse").tolist() == [0.0] * 4


class _PoisonedLogistic(torch.nn.Module):
    """A logistic model whose output is NaN for one marked row: one person's value that
    overflows, as bounds of ±1e308 made it (a red-team find)."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.linear(x)
        return torch.where(x[:, :1] > 0.999, out * float("nan"), out)


def test_one_persons_non_finite_gradient_cannot_diverge_the_model():
    """A NaN per-sample gradient survived Opacus' clipping and turned every weight NaN,
    so whether the model diverged told whether that one person was in the cohort. Such a
    gradient now counts as zero: the weights stay finite, and a cohort with the person
    trains like one without them, up to noise."""
    rng = np.random.default_rng(3)
    x = rng.uniform(0, 0.9, size=(400, 2)).astype(np.float32)
    y = (rng.uniform(size=400) < 0.5).astype(np.float32)
    x[17, 0] = 1.0  # the marked person
    trained = dpsgd.fit(
        _PoisonedLogistic(), x, y, loss="bce", config=_config(400), epsilon=1.0, delta=1e-6
    )
    weights = _weights(dpsgd.unwrap(trained.model))
    assert np.isfinite(weights).all()
    assert np.isfinite(dpsgd.predict(trained.model, x, loss="bce")).all()


def test_non_finite_inputs_are_trained_on_as_zeros_never_as_nan():
    x = np.array([[np.nan, 1.0], [np.inf, 0.0], [0.5, -np.inf]] * 50, dtype=np.float32)
    y = np.array([1.0, np.nan, 0.0] * 50, dtype=np.float32)
    trained = dpsgd.fit(
        dpsgd.build("logistic", 2), x, y, loss="bce", config=_config(150), epsilon=1.0,
        delta=1e-6,
    )  # fmt: skip
    assert np.isfinite(_weights(dpsgd.unwrap(trained.model))).all()
