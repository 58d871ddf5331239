"""AdaSSP, the private linear learner of effect models: its (ε, δ) accounting, that its
noise follows the spec's declared bounds (one person's rows move the statistics by no
more than the sensitivities the noise is scaled to), and that it learns."""

from __future__ import annotations

import math

import numpy as np
import opendp.prelude as dp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from governance.errors import InvalidRequest
from governance.privacy import accounting
from models import adassp, learners, metrics
from models.spec import Spec, dumps, parse

dp.enable_features("contrib")


def _opendp_epsilon(rho: float, delta: float) -> float:
    """OpenDP's own conversion of a ρ-zCDP Gaussian mechanism to (ε, δ)."""
    gaussian = dp.m.make_gaussian(
        dp.atom_domain(T=float, nan=False), dp.absolute_distance(T=float), scale=1.0
    )
    # scale 1 and sensitivity √(2ρ): ρ-zCDP
    return float(dp.c.make_zCDP_to_approxDP(gaussian).map(math.sqrt(2 * rho)).epsilon(delta))


@settings(max_examples=60, deadline=None)
@given(
    rho=st.floats(1e-4, 20.0),
    delta=st.sampled_from([1e-5, 1e-6, 1e-7, 1e-9, 1e-12]),
)
def test_the_zcdp_conversion_is_opendps_and_never_above_the_classic_bound(rho, delta):
    ours = accounting.zcdp_epsilon(rho, delta)
    assert ours == pytest.approx(_opendp_epsilon(rho, delta), rel=1e-7)
    assert ours <= rho + 2 * math.sqrt(rho * math.log(1 / delta)) + 1e-12


@settings(max_examples=60, deadline=None)
@given(epsilon=st.floats(0.01, 50.0), delta=st.sampled_from([1e-5, 1e-7, 1e-9]))
def test_the_planned_rho_spends_the_whole_epsilon_and_never_more(epsilon, delta):
    rho = accounting.zcdp_rho(epsilon, delta)
    assert accounting.zcdp_epsilon(rho, delta) <= epsilon
    assert accounting.zcdp_epsilon(rho * (1 + 1e-6), delta) > epsilon * (1 - 1e-6)


@settings(max_examples=60, deadline=None)
@given(
    epsilon=st.floats(0.05, 20.0),
    delta=st.sampled_from([1e-6, 1e-7, 1e-9]),
    inputs=st.integers(1, 60),
)
def test_the_three_gaussian_releases_compose_to_the_spec_epsilon(epsilon, delta, inputs):
    plan = adassp.plan(epsilon, delta, inputs)
    # each release is Δ²/(2σ²)-zCDP; zCDP adds; the sum converts within (ε, δ)
    rho = sum(d**2 / (2 * s**2) for d, s in zip(plan.sensitivity, plan.sigma, strict=True))
    assert rho == pytest.approx(plan.rho, rel=1e-12)
    assert _opendp_epsilon(rho, delta) <= epsilon * (1 + 1e-9)
    assert plan.epsilon == pytest.approx(epsilon, rel=1e-5)
    # the sensitivities are the declared bounds': every centred entry in [-1/2, 1/2]
    assert plan.row_bound**2 == pytest.approx(0.25 * (inputs + 1))
    assert plan.sensitivity == pytest.approx(
        (plan.row_bound**2, plan.row_bound**2, plan.row_bound * 0.5)
    )


# values anywhere, in and far out of the declared [0, 1]: the learner clips them
values = st.floats(-5.0, 5.0, allow_nan=False)


@settings(max_examples=80, deadline=None)
@given(
    data=st.integers(1, 6).flatmap(
        lambda d: st.tuples(
            arrays(np.float64, st.tuples(st.integers(2, 30), st.just(d)), elements=values),
            st.data(),
        )
    )
)
def test_removing_one_person_moves_the_statistics_within_the_sensitivity_used(data):
    x, draw = data
    y = draw.draw(arrays(np.float64, (len(x),), elements=values))
    who = draw.draw(st.integers(0, len(x) - 1))
    keep = np.arange(len(x)) != who
    plan = adassp.plan(1.0, 1e-7, x.shape[1])
    xtx, xty, lam = adassp.statistics(x, y)
    xtx_n, xty_n, lam_n = adassp.statistics(x[keep], y[keep])
    tol = 1e-9
    # the noise is scaled to these: XᵀX (Frobenius, hence also its upper triangle), Xᵀy
    # and the smallest eigenvalue each move by at most Δ when one person leaves
    assert np.linalg.norm(xtx - xtx_n) <= plan.sensitivity[1] + tol
    assert np.linalg.norm(xty - xty_n) <= plan.sensitivity[2] + tol
    assert abs(lam - lam_n) <= plan.sensitivity[0] + tol


def test_a_person_at_the_corner_of_the_declared_bounds_moves_them_by_exactly_the_sensitivity():
    """The sensitivity is tight: it is what the declared bounds allow, no more."""
    rng = np.random.default_rng(0)
    x = rng.random((50, 4))
    y = rng.random(50)
    corner_x, corner_y = np.ones((1, 4)), np.ones(1)
    plan = adassp.plan(1.0, 1e-7, 4)
    with_p = adassp.statistics(np.vstack([x, corner_x]), np.concatenate([y, corner_y]))
    without = adassp.statistics(x, y)
    assert np.linalg.norm(with_p[0] - without[0]) == pytest.approx(plan.sensitivity[1])
    assert np.linalg.norm(with_p[1] - without[1]) == pytest.approx(plan.sensitivity[2])


def test_the_noise_released_has_the_planned_standard_deviation():
    rng = np.random.default_rng(1)
    x, y = rng.random((200, 3)), rng.random(200)
    plan = adassp.plan(2.0, 1e-7, 3)
    xtx, xty, lam = adassp.statistics(x, y)
    draws = [adassp.release(x, y, plan) for _ in range(400)]
    upper = np.triu_indices(plan.width)
    xtx_noise = np.concatenate([(r.xtx - xtx)[upper] for r in draws])
    xty_noise = np.concatenate([r.xty - xty for r in draws])
    lam_noise = np.array([r.lambda_min - lam for r in draws])
    # 4,000 / 1,600 / 400 draws: the sample sd is within a few percent of σ
    assert np.std(xtx_noise) == pytest.approx(plan.sigma[1], rel=0.06)
    assert np.std(xty_noise) == pytest.approx(plan.sigma[2], rel=0.08)
    assert np.std(lam_noise) == pytest.approx(plan.sigma[0], rel=0.15)
    assert abs(np.mean(xty_noise)) < 0.1 * plan.sigma[2]
    # the released XᵀX is symmetric (noise mirrored, not drawn twice)
    assert all(np.array_equal(r.xtx, r.xtx.T) for r in draws[:5])
    # a wider declared design means more noise: the bound, not the data, sets it
    assert adassp.plan(2.0, 1e-7, 12).sigma[1] > plan.sigma[1]


def _people(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """People with a planted effect: treatment lowers the outcome more for higher x0."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, 3)).astype(np.float32)
    t = (rng.random(n) < 0.4).astype(np.float32)
    effect = 0.2 * x[:, 0]  # on the [0, 1] outcome scale
    y = 0.5 + 0.1 * x[:, 1] - t * effect + 0.05 * rng.standard_normal(n)
    return x, t, np.clip(y, 0, 1).astype(np.float32), effect


EFFECT = Spec(
    sql="SELECT 1", outcome="y", treatment="t", kind="effect", effect_architecture="linear",
    outcome_type="continuous", outcome_bounds=(0.0, 1.0), method="adassp",
    numeric={"a": (0.0, 1.0), "b": (0.0, 1.0), "c": (0.0, 1.0)},
)  # fmt: skip
CARD = {"model_kind": "effect", "learner": "s", "outcome_type": "continuous",
        "outcome_bounds": [0.0, 1.0], "modifier_columns": None}  # fmt: skip


def test_the_non_private_learner_is_least_squares_and_the_private_one_finds_who_benefits():
    x, t, y, effect = _people(20_000, 3)
    design = learners.design(x, t, None)
    exact = adassp.fit(design, y, epsilon=None, delta=1e-7)
    assert not exact.private and exact.accountant == "none"
    benefit = learners.predict(CARD, exact.model, x, extra=None)
    assert np.corrcoef(benefit, effect)[0, 1] > 0.98
    found = []
    for _ in range(5):
        private = adassp.fit(design, y, epsilon=3.0, delta=1e-7)
        assert private.private and private.epsilon <= 3.0 and private.method == "adassp"
        estimate = learners.predict(CARD, private.model, x, extra=None)
        found.append(metrics.top_decile_overlap(estimate, effect))
    # chance is 0.1: with 20,000 people at ε = 3 most of the top decile is found
    assert np.mean(found) > 0.5, found


def test_with_little_budget_the_fit_is_mostly_noise_and_never_fails_on_empty_data():
    x, t, y, _ = _people(300, 4)
    design = learners.design(x, t, None)
    a = adassp.fit(design, y, epsilon=0.05, delta=1e-7).model.weight.detach().numpy()
    b = adassp.fit(design, y, epsilon=0.05, delta=1e-7).model.weight.detach().numpy()
    assert not np.allclose(a, b)  # fresh CSPRNG noise each time: nothing to replay
    empty = adassp.fit(design[:0], y[:0], epsilon=1.0, delta=1e-7)
    assert np.all(np.isfinite(empty.model.weight.detach().numpy()))


def test_the_spec_selects_the_learner_and_refuses_adassp_where_least_squares_does_not_fit():
    assert EFFECT.learning_method == "adassp"
    assert parse(dumps(EFFECT)).method == "adassp"
    assert Spec(sql="SELECT 1", outcome="y", numeric={"a": (0, 1)}).learning_method == "dp-sgd"
    with pytest.raises(InvalidRequest, match="adassp"):
        Spec(sql="SELECT 1", outcome="y", numeric={"a": (0, 1)}, method="adassp")
    with pytest.raises(InvalidRequest, match="adassp"):  # an MLP outcome model
        Spec(sql="SELECT 1", outcome="y", treatment="t", kind="effect", numeric={"a": (0, 1)},
             outcome_type="continuous", outcome_bounds=(0, 1), method="adassp")  # fmt: skip
    with pytest.raises(InvalidRequest, match="method must be"):
        parse(dumps(EFFECT).replace('"method" = "adassp"', '"method" = "ssp"'))
