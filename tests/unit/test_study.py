"""The embedded DPP study: the causal model behaves as the README documents."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from synthetic_data import study


def features(n, *, age, bmi, imd, hba1c=44.0, asian=False):
    return study.Features(
        age=np.full(n, float(age)),
        female=np.zeros(n, dtype=bool),
        bmi=np.full(n, float(bmi)),
        imd_decile=np.full(n, imd, dtype=np.int64),
        asian=np.full(n, asian),
        hba1c=np.full(n, float(hba1c)),
    )


@settings(max_examples=25, deadline=None)
@given(
    age=st.floats(20, 90),
    bmi=st.floats(18, 50),
    imd=st.integers(1, 10),
    hba1c=st.integers(42, 47),
)
def test_expected_risk_matches_simulated_outcomes(age, bmi, imd, hba1c):
    f = features(40_000, age=age, bmi=bmi, imd=imd, hba1c=hba1c)
    outcome = study.draw(f, np.random.default_rng(0))
    cols = study.ground_truth_columns(f, outcome)
    for world in ("untreated", "treated"):
        simulated = cols[f"t2d_2y_{world}"].mean()
        expected = cols[f"risk_t2d_2y_{world}"][0]
        assert abs(simulated - expected) < 0.015, (world, simulated, expected)


def test_referral_never_raises_hba1c_or_risk():
    rng = np.random.default_rng(1)
    f = study.Features(
        age=rng.uniform(18, 90, 5000),
        female=rng.random(5000) < 0.5,
        bmi=rng.uniform(18, 50, 5000),
        imd_decile=rng.integers(1, 11, 5000),
        asian=rng.random(5000) < 0.2,
        hba1c=rng.integers(42, 48, 5000).astype(float),
    )
    cols = study.ground_truth_columns(f, study.draw(f, rng))
    assert (cols["effect_hba1c_change_12m"] <= 0).all()
    assert (cols["effect_risk_t2d_2y"] <= 1e-9).all()
    # coupled potential outcomes: referral can prevent diabetes, never cause it
    assert not (cols["t2d_2y_treated"] & ~cols["t2d_2y_untreated"]).any()


def test_young_people_with_obesity_benefit_far_more_than_older_lean_people():
    young_obese = study.benefit(features(1, age=45, bmi=38, imd=6))[0]
    older_lean = study.benefit(features(1, age=72, bmi=24, imd=6))[0]
    deprived = study.benefit(features(1, age=45, bmi=38, imd=2))[0]
    assert young_obese > 5 * older_lean
    assert deprived < young_obese


def test_referral_is_confounded_by_age_bmi_and_deprivation():
    base = study.propensity(features(1, age=55, bmi=30, imd=5))[0]
    assert study.propensity(features(1, age=75, bmi=30, imd=5))[0] > base
    assert study.propensity(features(1, age=55, bmi=40, imd=5))[0] > base
    assert study.propensity(features(1, age=55, bmi=30, imd=1))[0] < base
