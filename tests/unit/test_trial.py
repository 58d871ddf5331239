"""The emulated trial's DP average effect (AIPW): its pseudo-outcomes are bounded by the
sensitivity the noise uses, its (ε, δ) is the spec's, it removes confounding that the
naive difference keeps, and its interval covers the truth and widens as ε shrinks."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from governance.errors import InvalidRequest
from models import trial

anything = st.floats(-10.0, 10.0, allow_nan=False)


@settings(max_examples=100, deadline=None)
@given(
    st.integers(1, 40).flatmap(
        lambda n: st.tuples(*(arrays(np.float64, (n,), elements=anything) for _ in range(5)))
    )
)
def test_each_persons_pseudo_outcome_is_within_the_bound_the_noise_is_scaled_to(values):
    m1, m0, e, t, y = values
    psi = trial.pseudo_outcomes(m1, m0, e, np.round(t) % 2, y)
    assert np.all(np.abs(psi) <= trial.BOUND + 1e-12)


def test_the_shares_spend_the_whole_budget_once():
    # arms are disjoint (outcome models, naive sums): one share each; all add to 1
    assert sum(trial.SHARES.values()) == pytest.approx(1.0)


def _confounded(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Sicker people (high x0) are treated more and do worse: a confounded comparison.
    The treatment lowers the outcome by 0.05 on its [0, 1] scale for everyone."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, 2))
    t = (rng.random(n) < 0.2 + 0.6 * x[:, 0]).astype(np.float64)
    y = np.clip(
        0.3 + 0.3 * x[:, 0] + 0.1 * x[:, 1] - 0.05 * t + 0.05 * rng.standard_normal(n), 0, 1
    )
    return x, t, y, -0.05


def test_aipw_removes_the_confounding_the_naive_difference_keeps():
    x, t, y, truth = _confounded(20_000, 1)
    exact = trial.aipw(x, t, y, epsilon=None, delta=1e-7)
    assert exact.naive > 0  # the naive comparison says treatment *raises* the outcome
    assert exact.ate == pytest.approx(truth, abs=0.005)
    assert abs(exact.naive - truth) > 10 * abs(exact.ate - truth)
    assert exact.ci95[0] <= truth <= exact.ci95[1]


def test_at_epsilon_3_the_dp_interval_covers_the_truth_and_the_spend_is_the_specs():
    x, t, y, truth = _confounded(20_000, 2)
    draws = [trial.aipw(x, t, y, epsilon=3.0, delta=1e-7) for _ in range(30)]
    assert all(d.epsilon <= 3.0 and d.epsilon == pytest.approx(3.0, rel=1e-5) for d in draws)
    covered = np.mean([d.ci95[0] <= truth <= d.ci95[1] for d in draws])
    assert covered >= 0.8, covered
    assert abs(np.mean([d.ate for d in draws]) - truth) < 0.01
    # less budget, more noise: the interval says so
    tight = trial.aipw(x, t, y, epsilon=8.0, delta=1e-7)
    loose = trial.aipw(x, t, y, epsilon=0.3, delta=1e-7)
    assert loose.ci95[1] - loose.ci95[0] > tight.ci95[1] - tight.ci95[0]
    assert not math.isclose(draws[0].ate, draws[1].ate)  # fresh noise every time


def test_a_study_states_its_protocol_and_adjusts_for_exactly_its_confounders():
    study = trial.parse_study(trial.EXAMPLE)
    assert study.protocol["assignment"]["grace_period_days"] == 90
    with pytest.raises(InvalidRequest, match="causal_contrast"):
        trial.parse_study(trial.EXAMPLE.replace('causal_contrast = "intention to treat"\n', ""))
    with pytest.raises(InvalidRequest, match="confounders must be exactly"):
        trial.parse_study(trial.EXAMPLE.replace('confounders = ["age"]', 'confounders = ["bmi"]'))
    with pytest.raises(InvalidRequest, match="estimates an effect"):
        trial.parse_study(trial.EXAMPLE.replace('kind = "effect"', 'kind = "logistic"')
                          .replace('outcome = "continuous"', 'outcome = "binary"'))  # fmt: skip
