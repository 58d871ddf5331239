"""DP-SGD's batches are the Poisson sample the accountant assumes, drawn from the OS
CSPRNG: every row in independently with probability q."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.dpsgd import secure_poisson_indices


@settings(max_examples=60, deadline=None)
@given(n=st.integers(0, 5_000), q=st.floats(0.0, 1.0))
def test_rows_are_distinct_in_range_and_in_order(n, q):
    rows = secure_poisson_indices(n, q)
    assert rows.dtype == np.int64
    assert np.all(np.diff(rows) > 0)
    assert len(rows) == 0 or (rows[0] >= 0 and rows[-1] < n)


@pytest.mark.parametrize("n, q", [(2_000, 0.01), (1_000, 0.3), (50, 0.9)])
def test_each_row_is_in_with_probability_q_independently(n, q):
    draws = 3_000
    hits = np.zeros(n)
    sizes = np.empty(draws)
    for i in range(draws):
        rows = secure_poisson_indices(n, q)
        hits[rows] += 1
        sizes[i] = len(rows)
    # batch size: binomial(n, q); mean within 5 standard errors
    se = math.sqrt(n * q * (1 - q) / draws)
    assert abs(sizes.mean() - n * q) < 5 * se
    assert abs(sizes.var() / (n * q * (1 - q)) - 1) < 0.15
    # the first, the middle and the last rows are all picked at rate q (no edge bias)
    for row in (0, n // 2, n - 1):
        assert abs(hits[row] / draws - q) < 5 * math.sqrt(q * (1 - q) / draws) + 1e-9
    # pairs of neighbouring rows: independent (P(both) = q²)
    both = np.zeros(draws)
    for i in range(draws):
        rows = set(secure_poisson_indices(n, q).tolist())
        both[i] = 0 in rows and 1 in rows
    assert abs(both.mean() - q * q) < 5 * math.sqrt(q * q * (1 - q * q) / draws) + 1e-9


def test_a_rate_outside_zero_to_one_is_refused():
    with pytest.raises(ValueError, match="probability"):
        secure_poisson_indices(10, 1.5)


def test_secure_noise_has_the_asked_standard_deviation_and_no_mean():
    from models.dpsgd import secure_normal

    draws = secure_normal((200_000,), 3.0).numpy()
    assert abs(draws.mean()) < 5 * 3.0 / math.sqrt(200_000)
    assert abs(draws.std() / 3.0 - 1) < 0.01
    # normal tails: about 4.55% beyond 2 sd
    assert abs(np.mean(np.abs(draws) > 6.0) - 0.0455) < 0.003


@pytest.mark.parametrize("rows", [0, 3, 400])
def test_the_progress_a_modeller_watches_counts_every_planned_step_whatever_the_cohort(rows):
    """A red-team read a cohort's size from `hub train`'s progress bar, which advanced
    only on non-empty Poisson batches (0/120 steps for an empty cohort, 9/120 for one
    person). Every planned step is reported, empty or not."""
    import torch

    from models.dpsgd import FitConfig, fit

    x = np.random.default_rng(0).normal(size=(rows, 3))
    y = (x[:, 0] > 0).astype(np.float32) if rows else np.zeros(0, np.float32)
    reported = []
    config = FitConfig(epochs=3, batch_size=64, planned_rows=3_000)
    result = fit(
        torch.nn.Linear(3, 1), x, y, loss="bce", config=config, epsilon=1.0, delta=1e-6,
        on_step=reported.append,
    )  # fmt: skip
    assert sum(reported) == result.steps == 3 * config.steps_per_epoch(3_000)
