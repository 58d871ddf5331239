"""Privacy accounting: validation at the edges and sound basic composition."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from governance.privacy import accounting


@pytest.mark.parametrize("bad", [-1, 0, math.nan, math.inf, -math.inf, 1e-320, 101.0, True, "1"])
def test_nonsense_epsilons_are_refused(bad):
    with pytest.raises(ValueError):
        accounting.validate_epsilon(bad)


@pytest.mark.parametrize("bad", [-0.1, 1.0, math.nan, math.inf])
def test_nonsense_deltas_are_refused(bad):
    with pytest.raises(ValueError):
        accounting.validate_delta(bad)


@given(
    total=st.floats(0.01, 10),
    requests=st.lists(st.floats(accounting.MIN_EPSILON, 5), max_size=50),
)
def test_accepting_only_what_fits_never_exceeds_the_total(total, requests):
    spent = (0.0, 0.0)
    for eps in requests:
        if accounting.fits(total=(total, 1e-5), spent=spent, request=(eps, 0.0)):
            spent = accounting.compose([spent, (eps, 0.0)])
    assert spent[0] <= total + accounting.TOLERANCE
    remaining = accounting.remaining(total=(total, 1e-5), spent=spent)
    assert remaining[0] >= 0


@given(st.lists(st.tuples(st.floats(0, 10), st.floats(0, 1e-3)), max_size=20))
def test_composition_is_the_sum_in_any_order(spends):
    forward = accounting.compose(spends)
    backward = accounting.compose(list(reversed(spends)))
    assert forward == pytest.approx(backward)
    assert forward[0] == pytest.approx(sum(e for e, _ in spends))
