"""The embedded precision-intervention study: referral to the NHS Diabetes Prevention
Programme (DPP) after a new prediabetes diagnosis.

Causal model, for a person with index HbA1c ``h0`` (42-47 mmol/mol), age, sex, BMI,
IMD decile and ethnicity ``x``:

* Referral ``T ~ Bernoulli(propensity(x))`` with
  ``logit propensity = -0.9 + 0.035 (age - 55) + 0.10 (BMI - 30) + 0.15 (IMD - 5.5)``:
  older, heavier and less deprived people are referred more often (confounding).
* HbA1c at 12 months in world ``w`` (0 not referred, 1 referred):
  ``h12_w = h0 + drift12(x) - w * benefit(x) + 2.5 Z1``; at 24 months
  ``h24_w = h12_w + drift24(x) + 2.0 Z2``, with ``Z1, Z2`` standard normal and shared by
  both worlds, so the individual potential outcomes are coupled.
* ``benefit(x) = max(0, 0.5 + 4.0 sigmoid((BMI - 32) / 2) + 1.5 [age < 60]
  - 1.2 [IMD decile <= 3])`` mmol/mol: large for younger people with obesity, small for
  older, leaner or very deprived people (lower programme engagement).
* Type 2 diabetes within 2 years in world ``w``: ``Y_w = [h12_w >= 47.5 or h24_w >= 47.5]``
  (a recorded HbA1c of 48 or more after rounding).

The ground truth records, per index person, both potential outcomes, the expected risks
``P(Y_w = 1 | x, h0)`` (computed by quadrature), their difference (the conditional
average treatment effect on risk, negative when the programme helps) and the individual
effect on the 12-month HbA1c change (``-benefit(x)``).

>>> f = Features(age=np.array([45.0, 75.0]), female=np.array([True, False]),
...              bmi=np.array([38.0, 24.0]), imd_decile=np.array([6, 6]),
...              asian=np.array([False, False]), hba1c=np.array([45.0, 45.0]))
>>> np.round(benefit(f), 2)
array([5.99, 0.51])
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.special import ndtr

Float = npt.NDArray[np.float64]
Bool = npt.NDArray[np.bool_]

THRESHOLD = 47.5  # a value that rounds to 48 mmol/mol or more
SIGMA_12 = 2.5
SIGMA_24 = 2.0
_NODES, _WEIGHTS = np.polynomial.legendre.leggauss(48)


@dataclass(frozen=True)
class Features:
    age: Float
    female: Bool
    bmi: Float
    imd_decile: npt.NDArray[np.int64]
    asian: Bool
    hba1c: Float


@dataclass(frozen=True)
class Outcome:
    propensity: Float
    referred: Bool
    hba1c_12m: tuple[Float, Float]  # untreated, treated
    hba1c_24m: tuple[Float, Float]

    @property
    def observed_hba1c_12m(self) -> Float:
        return np.where(self.referred, self.hba1c_12m[1], self.hba1c_12m[0])

    @property
    def observed_hba1c_24m(self) -> Float:
        return np.where(self.referred, self.hba1c_24m[1], self.hba1c_24m[0])


def _sigmoid(x: Float) -> Float:
    return np.asarray(1.0 / (1.0 + np.exp(-x)), dtype=np.float64)


def propensity(f: Features) -> Float:
    return _sigmoid(-0.9 + 0.05 * (f.age - 55) + 0.10 * (f.bmi - 30) + 0.25 * (f.imd_decile - 5.5))


def benefit(f: Features) -> Float:
    """Reduction in 12-month HbA1c (mmol/mol) that referral brings this person."""
    b = 0.3 + 2.5 * _sigmoid((f.bmi - 32) / 2) + 1.0 * (f.age < 60) - 0.8 * (f.imd_decile <= 3)
    return np.asarray(np.maximum(b, 0.0), dtype=np.float64)


def drift_12(f: Features) -> Float:
    return np.asarray(0.1 + 0.08 * (f.bmi - 30) + 0.5 * f.asian, dtype=np.float64)


def drift_24(f: Features) -> Float:
    return np.asarray(0.8 + 0.05 * (f.bmi - 30), dtype=np.float64)


def diabetes_risk(f: Features, treated: bool) -> Float:
    """P(HbA1c crosses the diabetes threshold at 12 or 24 months | x, world).

    1 - P(h12 < c, h24 < c), integrating over Z1 with Gauss-Legendre on [-8, upper].
    """
    m1 = f.hba1c + drift_12(f) - (benefit(f) if treated else 0.0)
    upper = (THRESHOLD - m1) / SIGMA_12
    lower = np.full_like(upper, -8.0)
    upper_c = np.maximum(upper, lower)
    half = (upper_c - lower) / 2
    z = lower[:, None] + half[:, None] * (_NODES[None, :] + 1)
    inner = ndtr((THRESHOLD - m1[:, None] - SIGMA_12 * z - drift_24(f)[:, None]) / SIGMA_24)
    phi = np.exp(-0.5 * z**2) / np.sqrt(2 * np.pi)
    p_stay = (phi * inner * _WEIGHTS[None, :]).sum(axis=1) * half
    return np.asarray(np.clip(1.0 - p_stay, 0.0, 1.0), dtype=np.float64)


def draw(f: Features, rng: np.random.Generator) -> Outcome:
    n = f.age.size
    prop = propensity(f)
    referred = rng.random(n) < prop
    z1 = rng.standard_normal(n)
    z2 = rng.standard_normal(n)
    base12 = f.hba1c + drift_12(f) + SIGMA_12 * z1
    h12 = (base12, base12 - benefit(f))
    step = drift_24(f) + SIGMA_24 * z2
    h24 = (h12[0] + step, h12[1] + step)
    return Outcome(prop, referred, h12, h24)


def ground_truth_columns(f: Features, o: Outcome) -> dict[str, npt.NDArray[np.generic]]:
    def t2d(w: int) -> Bool:
        return (np.round(o.hba1c_12m[w]) >= 48) | (np.round(o.hba1c_24m[w]) >= 48)

    p0 = diabetes_risk(f, treated=False)
    p1 = diabetes_risk(f, treated=True)
    return {
        "age_at_index": np.round(f.age, 2),
        "bmi_at_index": np.round(f.bmi, 2),
        "hba1c_at_index": f.hba1c,
        "imd_decile": f.imd_decile,
        "referred": o.referred,
        "propensity": o.propensity,
        "t2d_2y_untreated": t2d(0),
        "t2d_2y_treated": t2d(1),
        "risk_t2d_2y_untreated": p0,
        "risk_t2d_2y_treated": p1,
        "effect_risk_t2d_2y": p1 - p0,
        "hba1c_change_12m_untreated": o.hba1c_12m[0] - f.hba1c,
        "hba1c_change_12m_treated": o.hba1c_12m[1] - f.hba1c,
        "effect_hba1c_change_12m": -benefit(f),
    }
