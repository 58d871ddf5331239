"""The synthetic-data spec, its encoding and its privacy plan: pure logic."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from governance.errors import InvalidRequest
from governance.privacy import accounting
from models import synthesis, synthetic_eval
from models.synthetic_spec import parse
from tests.synthetic_specs import small_spec

values = st.one_of(
    st.none(), st.booleans(), st.integers(-10**6, 10**6), st.text(max_size=5),
    st.floats(allow_nan=True, allow_infinity=True),
)  # fmt: skip


@given(st.lists(st.tuples(values, values, values, values), max_size=40))
def test_any_value_encodes_to_a_declared_level_never_an_error(rows):
    spec = parse(small_spec())
    columns = {c: [r[i] for r in rows] for i, c in enumerate(spec.columns)}
    codes = synthesis.encode(spec, columns)
    decoded = synthesis.decode(spec, codes)
    for c in spec.columns:
        assert all(0 <= x < len(spec.levels(c)) for x in codes[c])
        assert set(decoded[c]) <= {*spec.levels(c)[:-1], None}


def test_numbers_fall_in_their_declared_bins_and_out_of_range_ones_in_the_end_bins():
    spec = parse(small_spec())
    codes = synthesis.encode(spec, {"year_of_birth": [1900, 1920, 1959.9, 1960, 2020, 2099],
                                    "imd_decile": [None] * 6, "sex": ["F"] * 6,
                                    "t2d": [True] * 6})  # fmt: skip
    assert codes["year_of_birth"].tolist() == [0, 0, 1, 2, 4, 4]
    assert synthesis.decode(spec, codes)["imd_decile"] == [None] * 6
    assert synthesis.decode(spec, codes)["t2d"] == ["true"] * 6


@given(st.floats(0.01, 20), st.sampled_from([1e-9, 1e-7, 1e-5]))
def test_openDP_certifies_no_more_than_the_ledgers_epsilon_and_delta_buy(eps, delta):
    planned = synthesis.plan(parse(small_spec(eps)), delta)
    assert 0 < planned.certified_rho <= planned.rho * (1 + 1e-9)
    assert accounting.zcdp_epsilon(planned.certified_rho, delta) <= eps * (1 + 1e-6)
    # three steps of about a third each: nothing left unspent by a bad split
    assert planned.certified_rho >= 0.99 * planned.rho


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("t2d = [true, false]", 't2d = [true, false]\nperson_id = ["a"]'), "key"),
        (('pairs_with = "t2d"', 'pairs_with = "nope"'), "pairs_with"),
        (('outcome = "t2d"', 'outcome = "t2d"\npositive = "maybe"'), "positive"),
        (("iterations = 200", "iterations = 1"), "iterations"),
        (("imd_decile = [1, 11, 5]", "imd_decile = [11, 1, 5]"), "lower < upper"),
        # finite bounds whose width is not (a red-team find for models' features)
        (("imd_decile = [1, 11, 5]", "imd_decile = [-1e308, 1e308, 5]"), "within"),
        (('sex = ["F", "M"]', 'sex = ["F", "missing"]'), "reserved"),
    ],
)
def test_a_bad_spec_is_refused_with_its_reason(change, message):
    with pytest.raises(InvalidRequest, match=message):
        parse(small_spec().replace(*change))


def test_the_plans_noise_grows_as_epsilon_shrinks():
    small = synthesis.plan(parse(small_spec(0.1)), 1e-7)
    large = synthesis.plan(parse(small_spec(5.0)), 1e-7)
    assert small.sigma_one > large.sigma_one and small.sigma_two > large.sigma_two
    assert math.isfinite(small.sigma_one)


def test_the_membership_check_tells_a_copy_of_the_training_rows_from_fresh_rows():
    spec = parse(small_spec())
    rng = np.random.default_rng(3)
    levels = {"year_of_birth": 20, "imd_decile": 5, "sex": 2, "t2d": 2}

    def people(n: int) -> dict[str, np.ndarray]:
        return {c: rng.integers(0, k, n).astype(np.uint8) for c, k in levels.items()}

    # few people over 400 cells: a fresh person rarely matches a row exactly, a member always
    train, holdout, fresh = people(300), people(300), people(300)
    copied = synthetic_eval.membership(spec, train, holdout, train)
    independent = synthetic_eval.membership(spec, train, holdout, fresh)
    assert copied["signal_detected"] and copied["attack_auc"] > 0.6
    assert not independent["signal_detected"]
    assert abs(independent["attack_auc"] - 0.5) <= independent["no_signal_within"]
    # 300 a side: no signal means within about ±0.046 of 0.5
    assert independent["people_each"] == 300
    assert 0.04 < independent["no_signal_within"] < 0.05
