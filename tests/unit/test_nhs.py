"""NHS numbers: valid, in the reserved range, unique, and disjoint between populations."""

import nhs_number
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from synthetic_data import nhs

TEST_CAP = nhs.capacity("test")


@given(st.lists(st.integers(0, TEST_CAP - 1), min_size=1, max_size=50), st.sampled_from([0, 1]))
def test_every_number_is_valid_and_in_the_test_range(indices, population):
    numbers = nhs.number_for_index(np.array(indices), population=population)
    for n in numbers:
        assert 999_000_0000 <= n <= 999_999_9999
        assert nhs_number.is_valid(str(n)), n


@given(st.integers(100_000_000, 999_999_999))
def test_vectorised_check_digit_agrees_with_the_nhs_number_package(stem):
    ours = int(nhs.check_digits(np.array([stem]))[0])
    theirs = nhs_number.calculate_checksum(str(stem))
    assert ours == theirs  # 10 means "stem unusable" in both


@given(st.integers(0, TEST_CAP - 1), st.integers(0, TEST_CAP - 1))
def test_real_and_dummy_populations_never_share_a_number(i, j):
    real = nhs.number_for_index(np.array([i]), population=0)[0]
    dummy = nhs.number_for_index(np.array([j]), population=1)[0]
    assert real != dummy


def test_numbers_are_unique_across_a_whole_population():
    numbers = nhs.number_for_index(np.arange(TEST_CAP), population=0)
    assert np.unique(numbers).size == TEST_CAP
    assert nhs.is_valid(numbers).all()


def test_synthetic_range_is_never_issued_and_larger():
    numbers = nhs.number_for_index(
        np.arange(0, 4_000_000, 997), population=0, nhs_range="synthetic"
    )
    assert (numbers >= 900_000_0000).all() and nhs.is_valid(numbers).all()
    assert nhs.capacity("synthetic") == 45_000_000


def test_asking_beyond_the_range_is_refused_with_the_capacity():
    with pytest.raises(ValueError, match="450,000"):
        nhs.number_for_index(np.array([TEST_CAP]), population=0)


@given(st.integers(1_000_000_000, 9_999_999_999))
def test_is_valid_agrees_with_the_package_checksum_for_any_ten_digit_number(number):
    digits = str(number)
    expected = nhs_number.calculate_checksum(digits[:9]) == int(digits[9])
    assert bool(nhs.is_valid(np.array([number]))[0]) == expected
