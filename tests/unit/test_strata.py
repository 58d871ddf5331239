"""The DP stratified analysis of who benefits (models.strata): its accounting, that one
person moves its releases by no more than the sensitivities the noise is scaled to,
that it finds a planted effect, and that specs asking for it are checked clearly."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from governance.errors import InvalidRequest
from governance.privacy import accounting
from models import learners, metrics, strata
from models.spec import Spec, dumps, parse

SPEC = Spec(
    sql="SELECT 1", outcome="y", treatment="t", kind="effect", effect_architecture="linear",
    outcome_type="continuous", outcome_bounds=(0.0, 1.0), method="strata",
    numeric={"bmi": (15.0, 60.0), "young": (0.0, 1.0), "c": (0.0, 1.0)},
    categorical={"sex": ["F", "M"]},
    modifiers=["bmi", "young", "sex"], strata={"bmi": [25.0, 30.0, 35.0, 40.0]},
)  # fmt: skip
WIDTH = 3 * 2 + 2  # three numeric features with missing indicators, two sex levels
CARD = {"model_kind": "effect", "learner": "s", "outcome_type": "continuous",
        "outcome_bounds": [0.0, 1.0], "modifier_columns": learners.modifier_columns(SPEC)}  # fmt: skip


def _design(x: np.ndarray, t: np.ndarray) -> np.ndarray:
    return learners.design(x, t, learners.modifier_columns(SPEC))


@settings(max_examples=60, deadline=None)
@given(epsilon=st.floats(0.05, 20.0), delta=st.sampled_from([1e-6, 1e-7, 1e-9]))
def test_the_two_gaussian_releases_compose_to_the_spec_epsilon(epsilon, delta):
    p = strata.plan(SPEC, epsilon, delta)
    rho = sum(d**2 / (2 * s**2) for d, s in zip(p.sensitivity, p.sigma, strict=True))
    assert rho == pytest.approx(p.rho, rel=1e-12)
    assert accounting.zcdp_epsilon(rho, delta) <= epsilon * (1 + 1e-9)
    assert p.epsilon == pytest.approx(epsilon, rel=1e-5)
    # however many strata are declared: a person is in one, so Δ is 1 and ½
    assert p.sensitivity == (1.0, 0.5)
    assert p.strata == (4 + 2) * 3 * 3  # bmi bins + missing; 0/1 + missing; F, M, other


# encoded rows anywhere, in and out of [0, 1], and either arm
row = st.tuples(
    arrays(np.float64, (WIDTH,), elements=st.floats(-2.0, 3.0, allow_nan=False)),
    st.sampled_from([0.0, 1.0]),
    st.floats(-3.0, 4.0, allow_nan=False),
)


@settings(max_examples=100, deadline=None)
@given(people=st.lists(row, min_size=1, max_size=25), data=st.data())
def test_removing_one_person_moves_one_count_by_one_and_one_sum_by_at_most_a_half(people, data):
    x = np.array([p[0] for p in people])
    t = np.array([p[1] for p in people])
    y = np.array([p[2] for p in people])
    who = data.draw(st.integers(0, len(people) - 1))
    keep = np.arange(len(people)) != who
    p = strata.plan(SPEC, 1.0, 1e-7)
    counts, sums = strata.tabulate(p, _design(x, t), y)
    counts_n, sums_n = strata.tabulate(p, _design(x[keep], t[keep]), y[keep])
    moved = np.flatnonzero((counts != counts_n) | (sums != sums_n))
    assert len(moved) == 1  # one stratum and arm: parallel composition over the rest
    assert np.linalg.norm(counts - counts_n) == pytest.approx(p.sensitivity[0])
    assert np.linalg.norm(sums - sums_n) <= p.sensitivity[1] + 1e-12
    assert counts.sum() == len(people)  # every person is in exactly one cell


def _people(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Encoded people with a planted benefit: larger for higher BMI and the young;
    treatment is confounded by BMI."""
    rng = np.random.default_rng(seed)
    bmi = rng.uniform(18, 48, n)
    young = rng.random(n) < 0.4
    female = rng.random(n) < 0.5
    x = np.zeros((n, WIDTH), np.float32)
    x[:, 0] = (bmi - 15) / 45
    x[:, 2] = young
    x[:, 4] = rng.random(n)
    x[:, 6], x[:, 7] = female, ~female
    t = (rng.random(n) < 1 / (1 + np.exp(-(bmi - 30) / 5))).astype(np.float32)
    benefit = 0.1 * (bmi - 15) / 45 + 0.05 * young  # on the [0, 1] outcome scale
    y = 0.5 + 0.05 * (bmi - 30) / 10 - t * benefit + 0.08 * rng.standard_normal(n)
    return x, t, np.clip(y, 0, 1).astype(np.float32), benefit


def test_the_exact_fit_recovers_the_planted_benefit_and_the_private_one_finds_who_benefits():
    x, t, y, benefit = _people(20_000, 3)
    p = strata.plan(SPEC, 3.0, 1e-7)
    exact = strata.fit(_design(x, t), y, p, private=False)
    assert not exact.private and exact.accountant == "none"
    estimate = learners.predict(CARD, exact.model, x, extra=None)
    assert np.corrcoef(estimate, benefit)[0, 1] > 0.95
    found = []
    for _ in range(5):
        private = strata.fit(_design(x, t), y, p, private=True)
        assert private.private and private.epsilon <= 3.0 and private.method == "strata"
        found.append(metrics.top_decile_overlap(
            learners.predict(CARD, private.model, x, extra=None), benefit))  # fmt: skip
    # chance is 0.1: with 20,000 people at ε = 3 most of the top decile is found
    assert np.mean(found) > 0.6, found
    # the card's record: what was released, at what noise, and how many cells were kept
    mech = private.mechanism
    assert mech["cells"] == 2 * p.strata and 0 < mech["cells_kept"] <= mech["cells"]
    assert mech["strata"]["bmi"] == ["15–25", "25–30", "30–35", "35–40", "40–60", "missing"]


def test_fresh_noise_each_time_and_an_empty_cohort_gives_noise_not_an_error():
    x, t, y, _ = _people(500, 4)
    p = strata.plan(SPEC, 1.0, 1e-7)
    a = _parameters(strata.fit(_design(x, t), y, p, private=True).model)
    b = _parameters(strata.fit(_design(x, t), y, p, private=True).model)
    assert not np.allclose(a, b)  # CSPRNG noise: nothing to replay
    # too little budget for 500 people: no cell's noisy count clears the threshold, and
    # the model says so (no effect for anyone, 0 cells kept on the card), not an error
    starved = strata.fit(_design(x, t), y, strata.plan(SPEC, 0.05, 1e-7), private=True)
    assert starved.mechanism["cells_kept"] <= 2
    empty = strata.fit(_design(x, t)[:0], y[:0], p, private=True)
    assert np.all(np.isfinite(_parameters(empty.model)))
    # the controls (here "c") play no part: only the modifiers do
    model = strata.fit(_design(x, t), y, p, private=False).model
    moved = x.copy()
    moved[:, 4] = 1.0 - moved[:, 4]
    assert np.array_equal(
        learners.predict(CARD, model, moved, extra=None),
        learners.predict(CARD, model, x, extra=None),
    )


def _parameters(model: torch.nn.Module) -> np.ndarray:
    return np.concatenate([p.detach().numpy().ravel() for p in model.parameters()])


def test_a_persons_benefit_follows_their_own_value_between_the_bins_midpoints():
    """The effect of a binned modifier is one value per bin at the bin's midpoint and
    linear between midpoints: a BMI of 32.5 (midpoint of 30-35) gets that bin's effect,
    30 the average of the 25-30 and 30-35 bins' effects, beyond the outermost
    midpoints the outermost effect."""
    x, t, y, _ = _people(20_000, 5)
    p = strata.plan(SPEC, 3.0, 1e-7)
    model = strata.fit(_design(x, t), y, p, private=False).model

    def benefit(bmi: float) -> float:
        row = np.zeros((1, WIDTH), np.float32)
        row[0, 0] = (bmi - 15) / 45
        return float(learners.predict(CARD, model, row, extra=None)[0])

    assert benefit(30.0) == pytest.approx((benefit(27.5) + benefit(32.5)) / 2, abs=1e-5)
    assert benefit(16.0) == pytest.approx(benefit(20.0), abs=1e-6)  # below the first midpoint
    assert benefit(59.0) == pytest.approx(benefit(50.0), abs=1e-6)  # above the last
    assert benefit(45.0) > benefit(27.5)  # the planted effect grows with BMI


def test_specs_for_the_stratified_learner_are_checked_with_clear_errors():
    assert parse(dumps(SPEC)).strata == SPEC.strata  # a spec sent over HTTP keeps its cuts
    with pytest.raises(InvalidRequest, match=r"\[model.strata\] bmi: give its cut points"):
        dataclasses.replace(SPEC, strata=None)
    with pytest.raises(InvalidRequest, match="strictly between its bounds 15 and 60"):
        dataclasses.replace(SPEC, strata={"bmi": [25.0, 70.0]})
    with pytest.raises(InvalidRequest, match="increasing"):
        dataclasses.replace(SPEC, strata={"bmi": [30.0, 25.0]})
    with pytest.raises(InvalidRequest, match="only numeric modifiers"):
        dataclasses.replace(SPEC, strata={"bmi": [25.0], "c": [0.5]})
    with pytest.raises(InvalidRequest, match="needs kind = effect"):
        dataclasses.replace(SPEC, modifiers=None)
    with pytest.raises(InvalidRequest, match="applies to method = strata"):
        dataclasses.replace(SPEC, method="adassp")
    with pytest.raises(InvalidRequest, match="declare fewer modifiers"):
        dataclasses.replace(SPEC, strata={"bmi": [float(b) for b in range(16, 59)]},
                            categorical={"sex": [str(i) for i in range(200)]})  # fmt: skip
    assert math.isfinite(strata.plan(SPEC, 3.0, 1e-7).sigma[1])
