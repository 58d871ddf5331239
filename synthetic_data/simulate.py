"""Simulate one chunk of people: demographics, ten years of care, and the DPP study.

Everything is vectorised over the people of a chunk; time advances a calendar year at a
step. Each year, for everyone alive and registered, the latent physiology (BMI, blood
pressure, HbA1c, cholesterol, eGFR, smoking) moves on; some people have a review at
which measurements are recorded, and measurements drive diagnoses (HbA1c >= 48 is type 2
diabetes, 42-47 prediabetes, systolic >= 140 hypertension, eGFR < 60 CKD); other
conditions arrive by hazards that depend on age, sex, ethnicity, deprivation, smoking and
comorbidity; diagnoses start medicines, and medicines lower the values that drove them.

A new prediabetes diagnosis is the index event of the embedded study: the person may be
referred to the NHS Diabetes Prevention Programme (more likely when older, heavier and
less deprived: confounded), and their HbA1c at 12 and 24 months is drawn in both worlds
(referred and not) from shared noise, so both potential outcomes are known. See
``synthetic_data/study.py`` and the README for the causal model.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from synthetic_data import catalogue as cat
from synthetic_data import nhs, study
from synthetic_data import reference as ref
from synthetic_data.world import World

# numpy's dtype generics do not survive arithmetic in mypy; the names document intent
Int = npt.NDArray[Any]
Float = npt.NDArray[Any]
Bool = npt.NDArray[Any]
Columns = dict[str, npt.NDArray[Any]]

NULL = np.iinfo(np.int64).min
DAYS_PER_YEAR = 365.25
ID_STRIDE = 10**9


@dataclass(frozen=True)
class ChunkSpec:
    seed: int
    chunk_index: int
    first_person: int  # global index of the chunk's first person
    size: int
    start_year: int
    years: int
    population: int  # 0 real, 1 dummy
    nhs_range: nhs.NhsRange


def day_of(year: int) -> int:
    return int(np.datetime64(f"{year}-01-01", "D").astype(np.int64))


class _Rows:
    """Append-only column store for one table of one chunk."""

    def __init__(self, id_column: str, id_base: int) -> None:
        self.id_column = id_column
        self.parts: defaultdict[str, list[npt.NDArray[np.generic]]] = defaultdict(list)
        self.next_id = id_base

    def add(self, **columns: npt.ArrayLike) -> Int:
        arrays = {k: np.asarray(v) for k, v in columns.items()}
        n = len(next(iter(arrays.values())))
        ids = np.arange(self.next_id, self.next_id + n, dtype=np.int64)
        self.next_id += n
        self.parts[self.id_column].append(ids)
        for k, v in arrays.items():
            self.parts[k].append(np.broadcast_to(v, (n,)) if v.ndim == 0 else v)
        return ids

    def finish(self) -> Columns:
        return {k: np.concatenate(v) for k, v in self.parts.items()}


def _categorical(rng: np.random.Generator, cum: Float) -> Int:
    """Draw one category per row from per-row cumulative probabilities (rows x k)."""
    u = rng.random((cum.shape[0], 1))
    return np.asarray((u > cum).sum(axis=1), dtype=np.int64)


def _cumulative(table: tuple[tuple[float, ...], ...] | tuple[tuple[int, ...], ...]) -> Float:
    arr = np.array(table, dtype=np.float64)
    cum = np.cumsum(arr / arr.sum(axis=1, keepdims=True), axis=1)
    cum[:, -1] = 1.0
    return cum


_ETHNICITY_CUM = _cumulative(ref.ETHNICITY_BY_AUTHORITY)
_IMD_CUM = _cumulative(ref.IMD_DECILES_BY_AUTHORITY)
_AGE_P = np.array(ref.AGE_BANDS_PERCENT) / sum(ref.AGE_BANDS_PERCENT)
_LA_P = np.array(ref.LOCAL_AUTHORITY_POPULATION) / sum(ref.LOCAL_AUTHORITY_POPULATION)
_N_COND = len(ref.CONDITIONS)
_CHRONIC = np.array([i != ref.PRE for i in range(_N_COND)])
_HAZARD_CONDITIONS = (ref.CHD, ref.STROKE, ref.COPD, ref.ASTHMA, ref.DEPRESSION)


def _sigmoid(x: Float) -> Float:
    return np.asarray(1.0 / (1.0 + np.exp(-x)), dtype=np.float64)


class ChunkSimulator:
    def __init__(self, spec: ChunkSpec, world: World) -> None:
        self.spec = spec
        self.world = world
        self.rng = np.random.default_rng([spec.seed, spec.population, spec.chunk_index])
        self.n = spec.size
        self.window_start = day_of(spec.start_year)
        self.window_end = day_of(spec.start_year + spec.years)  # exclusive
        base = (spec.population * 100_000 + spec.chunk_index + 1) * ID_STRIDE
        self.encounters = _Rows("encounter_id", base)
        self.conditions = _Rows("condition_id", base)
        self.observations = _Rows("observation_id", base)
        self.medications = _Rows("medication_id", base)
        self.procedures = _Rows("procedure_id", base)
        self.ground_truth: list[Columns] = []

    # ------------------------------------------------------------------ people
    def _people(self) -> Columns:
        rng, n, w = self.rng, self.n, self.world
        female = rng.random(n) < 0.505
        la = rng.choice(len(_LA_P), size=n, p=_LA_P)
        eth = _categorical(rng, _ETHNICITY_CUM[la])
        imd = _categorical(rng, _IMD_CUM[la]) + 1
        years = self.spec.years
        born_in_window = rng.random(n) < ref.BIRTHS_PER_PERSON_YEAR * years
        band = rng.choice(len(_AGE_P), size=n, p=_AGE_P)
        band_width = np.where(band == len(_AGE_P) - 1, 10.0, 5.0)
        age0 = band * 5.0 + rng.random(n) * band_width
        age0 = np.where(born_in_window, -rng.random(n) * years, age0)
        dob = self.window_start - np.round(age0 * DAYS_PER_YEAR).astype(np.int64)

        in_mover = (~born_in_window) & (rng.random(n) < 0.18)
        settled = self.window_start - np.round(rng.exponential(9.0, n) * DAYS_PER_YEAR)
        reg_start = np.maximum(dob, settled.astype(np.int64))
        joined = self.window_start + (rng.random(n) * (self.window_end - self.window_start - 30))
        reg_start = np.where(in_mover, joined.astype(np.int64), reg_start)
        reg_start = np.where(born_in_window, dob + rng.integers(0, 43, n), reg_start)
        reg_start = np.maximum(reg_start, dob)
        leave = np.maximum(reg_start, self.window_start) + np.round(
            rng.exponential(1 / 0.02, n) * DAYS_PER_YEAR
        ).astype(np.int64)
        reg_end = np.where(leave < self.window_end, leave, NULL)

        practice = np.empty(n, dtype=np.int64)
        for i in range(len(ref.LOCAL_AUTHORITIES)):
            mask = la == i
            practice[mask] = rng.choice(
                w.practices[i], size=int(mask.sum()), p=w.practice_weights[i]
            )
        district = np.empty(n, dtype=np.int64)
        for i in range(len(ref.LOCAL_AUTHORITIES)):
            mask = la == i
            district[mask] = rng.choice(w.districts_by_authority[i], size=int(mask.sum()))
        given = np.where(
            female,
            rng.choice(len(w.female_names.names), size=n, p=w.female_names.weights),
            len(w.female_names.names)
            + rng.choice(len(w.male_names.names), size=n, p=w.male_names.weights),
        )
        index = self.spec.first_person + np.arange(n, dtype=np.int64)
        return {
            "patient_id": self.spec.population * 10**10 + index + 1,
            "nhs_number": nhs.number_for_index(
                index, population=self.spec.population, nhs_range=self.spec.nhs_range
            ),
            "given_name": given,
            "family_name": rng.choice(len(w.family_names.names), size=n, p=w.family_names.weights),
            "house_number": rng.integers(1, 240, n),
            "street": rng.integers(0, len(w.streets), n),
            "district": district,
            "inward": rng.integers(0, len(w.inward_codes), n),
            "date_of_birth": dob,
            "sex": np.where(female, 0, 1),
            "ethnicity": eth,
            "local_authority": la,
            "imd_decile": imd,
            "practice": practice,
            "registration_start": reg_start,
            "registration_end": reg_end,
            "date_of_death": np.full(n, NULL, dtype=np.int64),
        }

    # ------------------------------------------------------------------ physiology
    def _init_state(self, p: Columns) -> None:
        rng, n = self.rng, self.n
        self.female = p["sex"] == 0
        self.male = ~self.female
        self.asian = p["ethnicity"] == ref.ASIAN
        self.black = p["ethnicity"] == ref.BLACK
        self.dep = (10 - p["imd_decile"].astype(np.float64)) / 9.0  # 1 most deprived
        self.bmi_re = rng.normal(0, 3.6, n)
        self.glyc_re = rng.normal(0, 2.6, n) + rng.exponential(3.0, n) - 3.0
        self.glyc_slope = rng.gamma(2.0, 0.04, n)  # extra mmol/mol per year
        self.bp_re = rng.normal(0, 10.0, n)
        self.chol_re = rng.normal(0, 0.75, n)
        self.renal_re = rng.normal(0, 9.0, n)
        self.bmi_dev = rng.normal(0, 1.0, n)
        self.bp_dev = rng.normal(0, 5.0, n)
        self.glyc_dev = rng.normal(0, 1.5, n)
        self.glyc_offset = np.zeros(n)
        self.consult_re = rng.gamma(2.0, 0.5, n)
        self.has = np.zeros((n, _N_COND), dtype=bool)
        self.on = np.zeros((n, len(ref.MEDICINES)), dtype=bool)
        self.smoking = np.zeros(n, dtype=np.int64)
        self.dead = np.zeros(n, dtype=bool)
        self.pending12 = np.full(n, NULL, dtype=np.int64)
        self.pending24 = np.full(n, NULL, dtype=np.int64)
        self.pending_value12 = np.zeros(n)
        self.pending_value24 = np.zeros(n)

    def _values(self, age: Float) -> dict[str, Float]:
        adult = age >= 18
        a = np.maximum(age, 0)
        bmi_adult = (
            24.3
            + 0.085 * np.clip(a - 18, 0, 40)
            - 0.06 * np.maximum(a - 70, 0)
            + 1.6 * self.dep
            + 0.9 * self.dep * self.female
            + 1.4 * (self.black & self.female)
            - 0.6 * self.asian
            + self.bmi_re
        )
        bmi_child = 15.5 + 0.22 * np.maximum(a - 6, 0) + 0.5 * self.bmi_re
        bmi = np.where(adult, bmi_adult, bmi_child) + self.bmi_dev
        bmi = np.clip(bmi, 13.0, 65.0)
        antihyp = self.on[:, ref.AMLODIPINE] | self.on[:, ref.RAMIPRIL]
        sbp = (
            106.0
            + 0.55 * np.maximum(a - 20, 0)
            + 0.7 * (bmi - 27)
            + 3.0 * self.male
            + 4.0 * self.black
            + self.bp_re
            + self.bp_dev
            - 11.0 * antihyp
        )
        sbp = np.clip(sbp, 75.0, 230.0)
        dbp = np.clip(0.4 * sbp + 24.0 + 0.3 * self.bp_re, 40.0, 140.0)
        hba1c = (
            31.3
            + 0.10 * np.maximum(a - 30, 0)
            + 0.42 * (bmi - 27)
            + 4.5 * self.asian
            + 1.8 * self.black
            + 2.0 * self.dep
            + self.glyc_re
            + self.glyc_dev
            + self.glyc_slope * np.maximum(a - 40, 0)
            + self.glyc_offset
            - 9.0 * self.on[:, ref.METFORMIN]
        )
        hba1c = np.clip(hba1c, 22.0, 150.0)
        chol = (
            4.5
            + 0.022 * np.clip(a - 20, 0, 45)
            + 0.04 * (bmi - 27)
            + self.chol_re
            - 1.3 * self.on[:, ref.ATORVASTATIN]
        )
        chol = np.clip(chol, 2.0, 12.0)
        egfr = (
            113.0
            - 0.95 * np.maximum(a - 25, 0)
            - 5.0 * self.has[:, ref.T2D]
            - 4.0 * self.has[:, ref.HYP]
            + self.renal_re
        )
        egfr = np.clip(egfr, 5.0, 140.0)
        return {"bmi": bmi, "sbp": sbp, "dbp": dbp, "hba1c": hba1c, "chol": chol, "egfr": egfr}

    def _hazards(self, age: Float, v: dict[str, Float]) -> Float:
        """Annual probability of each hazard-driven condition (rows x 5)."""
        smoker = self.smoking == ref.SMOKER
        ex = self.smoking == ref.EX_SMOKER
        n_chronic = (self.has & _CHRONIC).sum(axis=1)
        t2d = self.has[:, ref.T2D]
        chd = _sigmoid(
            -11.7 + 0.082 * age + 0.75 * self.male + 0.6 * smoker + 0.2 * ex
            + 0.012 * (v["sbp"] - 130) + 0.25 * (v["chol"] - 5) + 0.6 * t2d
            + 0.35 * self.asian + 0.4 * self.dep
        ) * (age >= 30)  # fmt: skip
        stroke = _sigmoid(
            -12.0 + 0.09 * age + 0.018 * (v["sbp"] - 130) + 0.5 * t2d + 0.45 * smoker
            + 0.3 * self.black + 0.3 * self.dep
        ) * (age >= 30)  # fmt: skip
        copd = _sigmoid(
            -12.0 + 0.07 * age + 2.2 * smoker + 1.5 * ex + 0.7 * self.dep
        ) * (age >= 35)  # fmt: skip
        asthma = np.where(age < 16, 0.0028, 0.0007 + 0.0005 * self.female) * (1 + 0.4 * self.dep)
        depression = _sigmoid(
            -5.6 + 0.55 * self.female + 0.6 * self.dep + 0.2 * n_chronic
            - 0.015 * np.maximum(age - 50, 0)
        ) * (age >= 12)  # fmt: skip
        return np.stack([chd, stroke, copd, asthma, depression], axis=1)

    # ------------------------------------------------------------------ history
    def _baseline(self, p: Columns) -> None:
        """Conditions and medicines recorded before the window opens (prior history)."""
        rng, n, ws = self.rng, self.n, self.window_start
        age0 = (ws - p["date_of_birth"]) / DAYS_PER_YEAR
        adult0 = age0 >= 18
        smoker_p = np.where(age0 >= 16, 0.04 + 0.22 * self.dep, 0.0)
        ex_p = np.where(age0 >= 25, 0.15 + 0.003 * age0, 0.0)
        u = rng.random(n)
        self.smoking = np.where(
            u < smoker_p, ref.SMOKER, np.where(u < smoker_p + ex_p, ref.EX_SMOKER, ref.NEVER)
        )
        v = self._values(age0)
        onset = np.full((n, _N_COND), NULL, dtype=np.int64)

        def past(min_age: float, max_years: float) -> Int:
            # a date between max(dob + min_age, ws - max_years) and the window start
            first = np.maximum(
                p["date_of_birth"] + int(min_age * DAYS_PER_YEAR),
                ws - int(max_years * DAYS_PER_YEAR),
            )
            span = np.maximum(ws - first, 1)
            return np.asarray(first + (rng.random(n) * span).astype(np.int64), dtype=np.int64)

        driven = {
            ref.T2D: (v["hba1c"] >= 48) & (rng.random(n) < 0.85) & (age0 >= 30),
            ref.PRE: (v["hba1c"] >= 42) & (v["hba1c"] < 48) & (rng.random(n) < 0.2) & adult0,
            ref.HYP: (v["sbp"] >= 140) & (rng.random(n) < 0.55) & adult0,
            ref.CKD: (v["egfr"] < 60) & (rng.random(n) < 0.15) & adult0,
        }
        for k, has in driven.items():
            self.has[:, k] = has
            onset[:, k] = np.where(has, past(30 if k == ref.T2D else 18, 15), NULL)
        # hazard conditions: cumulative risk over the years at risk (4-point rule)
        min_age = {ref.CHD: 30, ref.STROKE: 30, ref.COPD: 35, ref.ASTHMA: 0, ref.DEPRESSION: 12}
        risk_years = np.zeros((n, len(_HAZARD_CONDITIONS)))
        cum_hazard = np.zeros((n, len(_HAZARD_CONDITIONS)))
        for j, k in enumerate(_HAZARD_CONDITIONS):
            risk_years[:, j] = np.clip(age0 - min_age[k], 0, 40 if k != ref.DEPRESSION else 10)
        for q in (0.125, 0.375, 0.625, 0.875):
            for j in range(len(_HAZARD_CONDITIONS)):
                h = self._hazards(age0 - risk_years[:, j] * (1 - q), v)[:, j]
                cum_hazard[:, j] += -np.log1p(-np.minimum(h, 0.99)) * risk_years[:, j] / 4
        got = rng.random(cum_hazard.shape) < 1 - np.exp(-cum_hazard)
        for j, k in enumerate(_HAZARD_CONDITIONS):
            self.has[:, k] = got[:, j]
            onset[:, k] = np.where(got[:, j], past(min_age[k], risk_years[:, j].max()), NULL)
        # only people alive (born) before the window carry history
        self.has &= (age0 > 0)[:, None]
        rows, cond = np.nonzero(self.has)
        self.conditions.add(
            patient=rows,
            encounter_id=np.full(rows.size, NULL, dtype=np.int64),
            concept=np.asarray(cat.SNOMED_CONDITION)[cond],
            onset_date=onset[rows, cond],
        )
        for k in range(_N_COND):
            self._prescribe(np.nonzero(self.has[:, k])[0], k, onset[self.has[:, k], k], NULL)

    # ------------------------------------------------------------------ events
    def _prescribe(self, who: Int, condition: int, day: Int, encounter: Int | int) -> None:
        rng = self.rng
        enc = np.broadcast_to(np.asarray(encounter, dtype=np.int64), who.shape)
        plan: list[tuple[int, float]] = {
            ref.T2D: [(ref.METFORMIN, 0.9), (ref.ATORVASTATIN, 0.6)],
            ref.HYP: [(ref.AMLODIPINE, 0.5), (ref.RAMIPRIL, 0.35)],
            ref.CHD: [(ref.ATORVASTATIN, 0.9), (ref.ASPIRIN, 0.8)],
            ref.STROKE: [(ref.ATORVASTATIN, 0.85), (ref.ASPIRIN, 0.7)],
            ref.CKD: [(ref.RAMIPRIL, 0.4)],
            ref.COPD: [(ref.TIOTROPIUM, 0.7), (ref.SALBUTAMOL, 0.9)],
            ref.ASTHMA: [(ref.SALBUTAMOL, 0.95), (ref.BECLOMETASONE, 0.6)],
            ref.DEPRESSION: [(ref.SERTRALINE, 0.45), (ref.CITALOPRAM, 0.3)],
        }.get(condition, [])
        for medicine, prob in plan:
            start = (rng.random(who.size) < prob) & ~self.on[who, medicine]
            if not start.any():
                continue
            pick = who[start]
            self.on[pick, medicine] = medicine not in (ref.SERTRALINE, ref.CITALOPRAM)
            end = np.full(pick.size, NULL, dtype=np.int64)
            if medicine in (ref.SERTRALINE, ref.CITALOPRAM):
                end = day[start] + rng.integers(180, 366, pick.size)
            self.medications.add(
                patient=pick,
                encounter_id=enc[start],
                concept=cat.MEDICINE[medicine],
                start_date=day[start],
                end_date=end,
            )

    def _encounter(self, who: Int, day: Int, kind: int, org: Int, end: Int | None = None) -> Int:
        return self.encounters.add(
            patient=who,
            encounter_type=np.full(who.size, kind, dtype=np.int64),
            organisation=org,
            start_date=day,
            end_date=day if end is None else end,
        )

    def _observe(self, who: Int, enc: Int, day: Int, measure: int, value: Float) -> None:
        m = ref.MEASURES[measure]
        self.observations.add(
            patient=who,
            encounter_id=enc,
            concept=cat.MEASURE[measure],
            value=np.round(value, m.decimals),
            unit=cat.MEASURE_UNIT[measure],
            observed_date=day,
        )

    def _diagnose(self, who: Int, enc: Int, day: Int, condition: int) -> None:
        self.has[who, condition] = True
        self.conditions.add(
            patient=who,
            encounter_id=enc,
            concept=cat.SNOMED_CONDITION[condition],
            onset_date=day,
        )
        self._prescribe(who, condition, day, enc)

    def _trust(self, who: Int, la: Int) -> Int:
        local = np.asarray(ref.TRUST_FOR_AUTHORITY)[la[who]]
        other = self.rng.integers(0, len(ref.ACUTE_TRUSTS), who.size)
        pick = np.where(self.rng.random(who.size) < 0.9, local, other)
        return np.asarray(self.world.trust_offset + pick, dtype=np.int64)

    def _admit(self, who: Int, day: Int, hi: Int, la: Int, primary: Int) -> None:
        """A&E attendance and inpatient spell coded in ICD-10 with comorbidities."""
        rng = self.rng
        org = self._trust(who, la)
        los = np.minimum(rng.geometric(0.25, who.size), 30)
        end = np.minimum(day + los, hi[who])
        self._encounter(who, day, ref.AE, org)
        enc = self._encounter(who, day, ref.INPATIENT, org, end)
        self.conditions.add(patient=who, encounter_id=enc, concept=primary, onset_date=day)
        rows, cond = np.nonzero(self.has[who] & _CHRONIC)
        if rows.size:
            self.conditions.add(
                patient=who[rows],
                encounter_id=enc[rows],
                concept=np.asarray(cat.ICD10_CONDITION)[cond],
                onset_date=day[rows],
            )

    def _year(self, y: int, p: Columns) -> None:
        rng, n = self.rng, self.n
        ys = day_of(self.spec.start_year + y)
        ye = day_of(self.spec.start_year + y + 1)
        dob = p["date_of_birth"]
        reg_end = np.where(p["registration_end"] == NULL, self.window_end, p["registration_end"])
        lo = np.maximum.reduce([np.full(n, ys), p["registration_start"], dob])
        hi = np.minimum(np.full(n, ye - 1), reg_end - 1)
        active = (lo <= hi) & ~self.dead
        age = (ys + 182 - dob) / DAYS_PER_YEAR

        # deaths first, so that nothing happens after them
        n_chronic = (self.has & _CHRONIC).sum(axis=1)
        mult = (
            1.0 + 0.6 * self.has[:, ref.CHD] + 0.8 * self.has[:, ref.STROKE]
            + 0.4 * self.has[:, ref.T2D] + 1.0 * self.has[:, ref.COPD]
            + 0.5 * self.has[:, ref.CKD] + 0.5 * (self.smoking == ref.SMOKER)
        )  # fmt: skip
        h_death = np.where(age < 1, 0.004, np.exp(-10.9 + 0.094 * age) * mult)
        dies = active & (rng.random(n) < np.minimum(h_death, 0.6))
        span = np.maximum(hi - lo + 1, 1)
        death_day = lo + (rng.random(n) * span).astype(np.int64)
        p["date_of_death"] = np.where(dies, death_day, p["date_of_death"])
        hi = np.where(dies, death_day, hi)
        self.dead |= dies
        span = np.maximum(hi - lo + 1, 1)

        def when(who: Int) -> Int:
            return np.asarray(lo[who] + (rng.random(who.size) * span[who]).astype(np.int64))

        # physiology moves on
        self.bmi_dev = 0.8 * self.bmi_dev + rng.normal(0, 0.6, n)
        self.bp_dev = 0.6 * self.bp_dev + rng.normal(0, 4.0, n)
        self.glyc_dev = 0.7 * self.glyc_dev + rng.normal(0, 1.0, n)
        quit_ = (self.smoking == ref.SMOKER) & (rng.random(n) < 0.05)
        start = (self.smoking == ref.NEVER) & (age >= 16) & (age < 25) & (rng.random(n) < 0.02)
        self.smoking = np.where(quit_, ref.EX_SMOKER, np.where(start, ref.SMOKER, self.smoking))
        v = self._values(age)
        adult = age >= 18

        # study follow-up measurements due this year (before routine care)
        self._follow_up(lo, hi, active, p)
        in_follow_up = (self.pending24 != NULL) & (self.pending24 >= ys)

        # annual review with measurements
        chronic_any = n_chronic > 0
        p_review = np.where(
            adult,
            np.minimum(0.22 + 0.2 * (age >= 40) + 0.15 * (age >= 65) + 0.4 * chronic_any, 0.95),
            0.0,
        )
        who = np.nonzero(active & (rng.random(n) < p_review))[0]
        day = when(who)
        enc = self._encounter(who, day, ref.GP, p["practice"][who])
        self._review(who, enc, day, v, age, in_follow_up, p)

        # hazard-driven diagnoses, recorded at a GP consultation
        h = self._hazards(age, v)
        for j, k in enumerate(_HAZARD_CONDITIONS):
            new = np.nonzero(active & ~self.has[:, k] & (rng.random(n) < h[:, j]))[0]
            if new.size == 0:
                continue
            d = when(new)
            if k in (ref.CHD, ref.STROKE):
                primary = cat.index_of(ref.ACUTE_MI) if k == ref.CHD else cat.ICD10_CONDITION[k]
                acute = rng.random(new.size) < 0.6
                self._admit(
                    new[acute],
                    d[acute],
                    hi,
                    p["local_authority"],
                    np.full(int(acute.sum()), primary),
                )
                d = np.where(acute, np.minimum(d + 14, hi[new]), d)
            enc = self._encounter(new, d, ref.GP, p["practice"][new])
            self._diagnose(new, enc, d, k)

        # ordinary GP consultations and hospital contacts
        n_chronic = (self.has & _CHRONIC).sum(axis=1)
        rate = self.consult_re * (
            1.0 + 0.022 * age + 0.45 * n_chronic + 0.7 * (self.female & (age >= 16) & (age < 50))
        )
        self._contacts(active, rate, ref.GP, p["practice"], when)
        la = p["local_authority"]
        for kind, r in (
            (ref.AE, 0.2 + 0.003 * age + 0.08 * n_chronic),
            (ref.OUTPATIENT, 0.3 + 0.012 * age + 0.25 * n_chronic),
        ):
            counts = rng.poisson(np.where(active, r, 0.0))
            who = np.repeat(np.arange(n), counts)
            self._encounter(who, when(who), kind, self._trust(who, la))
        counts = rng.poisson(np.where(active, 0.03 + 0.0015 * age + 0.04 * n_chronic, 0.0))
        who = np.repeat(np.arange(n), counts)
        reasons = np.asarray(cat.ADMISSION_REASON)[
            rng.integers(0, len(cat.ADMISSION_REASON), who.size)
        ]
        self._admit(who, when(who), hi, la, reasons)

    def _contacts(self, active: Bool, rate: Float, kind: int, org: Int, when: object) -> None:
        counts = self.rng.poisson(np.where(active, rate, 0.0))
        who = np.repeat(np.arange(self.n), counts)
        self._encounter(who, when(who), kind, org[who])  # type: ignore[operator]

    def _review(
        self, who: Int, enc: Int, day: Int, v: dict[str, Float], age: Float,
        in_follow_up: Bool, p: Columns,
    ) -> None:  # fmt: skip
        rng = self.rng
        a = age[who]
        has = self.has[who]
        k = who.size
        noise = {"bmi": 0.3, "sbp": 6.0, "dbp": 4.0, "hba1c": 1.5, "chol": 0.25, "egfr": 4.0}

        def measured(key: str, prob: Float | float, mask: Bool | None = None) -> tuple[Bool, Float]:
            take = rng.random(k) < prob
            if mask is not None:
                take &= mask
            value = v[key][who] + rng.normal(0, noise[key], k)
            return take, value

        take, bmi = measured("bmi", 0.8)
        self._observe(who[take], enc[take], day[take], ref.BMI, np.clip(bmi[take], 12.0, 70.0))
        take, sbp = measured("sbp", 0.95)
        sbp = np.clip(sbp, 70.0, 250.0)
        dbp = np.clip(v["dbp"][who] + rng.normal(0, noise["dbp"], k), 35.0, 150.0)
        self._observe(who[take], enc[take], day[take], ref.SBP, sbp[take])
        self._observe(who[take], enc[take], day[take], ref.DBP, dbp[take])
        new_hyp = take & ~has[:, ref.HYP] & (np.round(sbp) >= 140) & (rng.random(k) < 0.4)
        self._diagnose(who[new_hyp], enc[new_hyp], day[new_hyp], ref.HYP)

        diabetic = has[:, ref.T2D]
        prediabetic = has[:, ref.PRE]
        p_hba1c = 0.12 + 0.25 * ((v["bmi"][who] >= 30) | (a >= 40)) + 0.6 * (diabetic | prediabetic)
        take, hba1c = measured("hba1c", p_hba1c, ~in_follow_up[who])
        hba1c = np.round(np.clip(hba1c, 20.0, 180.0))
        self._observe(who[take], enc[take], day[take], ref.HBA1C, hba1c[take])
        new_t2d = take & ~diabetic & (hba1c >= 48)
        self._diagnose(who[new_t2d], enc[new_t2d], day[new_t2d], ref.T2D)
        new_pre = (
            take & ~diabetic & ~prediabetic & (hba1c >= 42) & (hba1c < 48) & (rng.random(k) < 0.3)
        )
        self._diagnose(who[new_pre], enc[new_pre], day[new_pre], ref.PRE)
        self._index(who[new_pre], enc[new_pre], day[new_pre], hba1c[new_pre], v, age, p)

        take, chol = measured("chol", np.where(a >= 40, 0.5, 0.15))
        self._observe(who[take], enc[take], day[take], ref.CHOL, np.clip(chol[take], 1.5, 15.0))
        p_egfr = 0.25 + 0.55 * (diabetic | has[:, ref.HYP] | has[:, ref.CKD])
        take, egfr = measured("egfr", p_egfr)
        egfr = np.round(np.clip(egfr, 3.0, 150.0))
        self._observe(who[take], enc[take], day[take], ref.EGFR, egfr[take])
        new_ckd = take & ~has[:, ref.CKD] & (egfr < 60) & (rng.random(k) < 0.2)
        self._diagnose(who[new_ckd], enc[new_ckd], day[new_ckd], ref.CKD)

        take = rng.random(k) < 0.7
        status = np.asarray(cat.SMOKING)[self.smoking[who[take]]]
        self.observations.add(
            patient=who[take],
            encounter_id=enc[take],
            concept=status,
            value=np.full(int(take.sum()), np.nan),
            unit=-1,
            observed_date=day[take],
        )

    def _index(
        self, who: Int, enc: Int, day: Int, hba1c: Float, v: dict[str, Float],
        age: Float, p: Columns,
    ) -> None:  # fmt: skip
        """A new prediabetes diagnosis: the DPP study's index event."""
        if who.size == 0:
            return
        features = study.Features(
            age=age[who],
            female=self.female[who],
            bmi=v["bmi"][who],
            imd_decile=p["imd_decile"][who],
            asian=self.asian[who],
            hba1c=hba1c.astype(np.float64),
        )
        outcome = study.draw(features, self.rng)
        referred = outcome.referred
        self.procedures.add(
            patient=who[referred],
            encounter_id=enc[referred],
            concept=cat.index_of(ref.DPP_REFERRAL),
            procedure_date=day[referred],
        )
        self.pending12[who] = day + 365 + self.rng.integers(-30, 31, who.size)
        self.pending24[who] = day + 730 + self.rng.integers(-30, 31, who.size)
        self.pending_value12[who] = outcome.observed_hba1c_12m
        self.pending_value24[who] = outcome.observed_hba1c_24m
        self.ground_truth.append(
            {"patient": who, "index_date": day, **study.ground_truth_columns(features, outcome)}
        )

    def _follow_up(self, lo: Int, hi: Int, active: Bool, p: Columns) -> None:
        for pending, values, final in (
            (self.pending12, self.pending_value12, False),
            (self.pending24, self.pending_value24, True),
        ):
            due = active & (pending != NULL) & (pending >= lo) & (pending <= hi)
            # a due date that fell while the person was away or after they left is dropped
            missed = (pending != NULL) & (pending < lo)
            pending[missed] = NULL
            who = np.nonzero(due)[0]
            if who.size == 0:
                continue
            day = pending[who]
            enc = self._encounter(who, day, ref.GP, p["practice"][who])
            value = np.round(values[who])
            self._observe(who, enc, day, ref.HBA1C, value)
            # latent HbA1c continues from where the study left it
            self.glyc_offset[who] += values[who] - self._latent_hba1c(who, day, p)
            new = (value >= 48) & ~self.has[who, ref.T2D]
            self._diagnose(who[new], enc[new], day[new], ref.T2D)
            pending[who] = NULL
            if not final:
                self.pending24[who[new]] = NULL  # diagnosed at 12 months: follow-up ends

    def _latent_hba1c(self, who: Int, day: Int, p: Columns) -> Float:
        age = np.zeros(self.n)
        age[who] = (day - p["date_of_birth"][who]) / DAYS_PER_YEAR
        return self._values(age)["hba1c"][who]

    # ------------------------------------------------------------------ run
    def run(self) -> dict[str, Columns]:
        p = self._people()
        self._init_state(p)
        self._baseline(p)
        for y in range(self.spec.years):
            self._year(y, p)
        return self._finish(p)

    def _finish(self, p: Columns) -> dict[str, Columns]:
        pid = p["patient_id"]
        death = p["date_of_death"]
        out: dict[str, Columns] = {"patients": p}
        stop = np.where(death == NULL, np.iinfo(np.int64).max, death)
        for name, rows in (
            ("encounters", self.encounters),
            ("conditions", self.conditions),
            ("observations", self.observations),
            ("medications", self.medications),
            ("procedures", self.procedures),
        ):
            cols = rows.finish()
            who = cols.pop("patient")
            # inpatient spells and medicine courses end by death at the latest
            for end_col in ("end_date",):
                if end_col in cols:
                    end = cols[end_col]
                    cap = stop[who]
                    cols[end_col] = np.where((end != NULL) & (end > cap), cap, end)
            if name == "medications":
                reg_end = p["registration_end"][who]
                leaver = (cols["end_date"] == NULL) & ((death[who] != NULL) | (reg_end != NULL))
                last = np.where(death[who] != NULL, death[who], reg_end)
                cols["end_date"] = np.where(leaver, last, cols["end_date"])
                # a course that ended before the window opened is history, keep as is
                cols["end_date"] = np.where(
                    (cols["end_date"] != NULL) & (cols["end_date"] >= self.window_end),
                    NULL,
                    cols["end_date"],
                )
            out[name] = {"_patient": who, "patient_id": pid[who], **cols}
        gt = _concat(self.ground_truth)
        if gt:
            who = gt.pop("patient")
            reg_end = np.where(
                p["registration_end"] == NULL, self.window_end, p["registration_end"]
            )
            last = np.minimum(reg_end, np.where(death == NULL, self.window_end, death))[who]
            complete = gt["index_date"] + 760 < last
            out["ground_truth"] = {"patient_id": pid[who], **gt, "follow_up_complete": complete}
        return out


def _concat(parts: list[Columns]) -> Columns:
    if not parts:
        return {}
    return {k: np.concatenate([part[k] for part in parts]) for k in parts[0]}


def simulate_chunk(spec: ChunkSpec, world: World) -> dict[str, Columns]:
    return ChunkSimulator(spec, world).run()
