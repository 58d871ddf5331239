"""A 50,000-person population: integrity, distributions, prevalence and the study."""

from __future__ import annotations

import json

import numpy as np
import pytest

from synthetic_data import nhs, summary
from synthetic_data import reference as ref

PREVALENCE_TOLERANCE = 0.35  # relative, as stated in reference.PREVALENCE_TARGETS


def scalar(con, sql, params=None):
    return con.execute(sql, params or {}).fetchall()[0][0]


def test_every_nhs_number_is_valid_unique_and_in_the_test_range(con_50k):
    numbers = con_50k.execute("SELECT nhs_number::BIGINT FROM patients").fetchnumpy()
    values = next(iter(numbers.values()))
    assert nhs.is_valid(values).all()
    assert (values >= 999_000_0000).all() and (values <= 999_999_9999).all()
    assert np.unique(values).size == values.size


def test_events_refer_to_existing_people_encounters_and_organisations(con_50k):
    for table in ("encounters", "conditions", "observations", "medications", "procedures"):
        orphans = scalar(
            con_50k,
            f"SELECT count(*) FROM {table} t ANTI JOIN patients p USING (patient_id)",
        )
        assert orphans == 0, table
    for table in ("conditions", "observations", "medications", "procedures"):
        mismatched = scalar(
            con_50k,
            f"""SELECT count(*) FROM {table} t LEFT JOIN encounters e USING (encounter_id)
                WHERE t.encounter_id IS NOT NULL
                  AND (e.encounter_id IS NULL OR e.patient_id <> t.patient_id)""",
        )
        assert mismatched == 0, table


def test_practices_and_trusts_exist_and_postcodes_are_west_midlands(con_50k, population_50k):
    orgs = {p.name for p in population_50k.glob("organisations.*")}
    assert orgs == {"organisations.parquet"}
    con_50k.read_parquet(str(population_50k / "organisations.parquet")).create_view("orgs")
    assert (
        scalar(
            con_50k,
            "SELECT count(*) FROM patients ANTI JOIN orgs ON practice_code = organisation_code",
        )
        == 0
    )
    assert (
        scalar(con_50k, "SELECT count(*) FROM encounters ANTI JOIN orgs USING (organisation_code)")
        == 0
    )
    areas = con_50k.execute(
        "SELECT DISTINCT regexp_extract(postcode, '^([A-Z]+)', 1) FROM patients"
    ).fetchall()
    assert {a[0] for a in areas} <= {"B", "CV", "DY", "WS", "WV"}
    assert (
        scalar(
            con_50k,
            "SELECT count(*) FROM patients WHERE NOT regexp_full_match(postcode, '[A-Z]{1,2}[0-9]{1,2} [0-9][A-Z]{2}')",
        )
        == 0
    )


def test_no_event_before_birth_after_death_or_outside_registration(con_50k):
    for table, date in (
        ("encounters", "start_date"),
        ("observations", "observed_date"),
        ("procedures", "procedure_date"),
        ("conditions", "onset_date"),
        ("medications", "start_date"),
    ):
        bad = scalar(
            con_50k,
            f"""SELECT count(*) FROM {table} t JOIN patients p USING (patient_id)
                WHERE t.{date} < p.date_of_birth OR t.{date} > p.date_of_death""",
        )
        assert bad == 0, table
    # care recorded in the window happens while registered (history rows have no encounter)
    outside = scalar(
        con_50k,
        """SELECT count(*) FROM encounters e JOIN patients p USING (patient_id)
           WHERE e.start_date < p.registration_start OR e.start_date >= p.registration_end""",
    )
    assert outside == 0
    assert scalar(con_50k, "SELECT count(*) FROM encounters WHERE end_date < start_date") == 0


def expected_share(weights_by_la, pick):
    la_w = np.array(ref.LOCAL_AUTHORITY_POPULATION) / sum(ref.LOCAL_AUTHORITY_POPULATION)
    rows = np.array(weights_by_la, dtype=float)
    rows = rows / rows.sum(axis=1, keepdims=True)
    return float((la_w * rows[:, pick]).sum())


def test_demographics_are_plausible_for_the_west_midlands(con_50k):
    n = scalar(con_50k, "SELECT count(*) FROM patients")
    female = scalar(con_50k, "SELECT count(*) FROM patients WHERE sex = 'F'") / n
    assert 0.49 <= female <= 0.52
    white = scalar(con_50k, "SELECT count(*) FROM patients WHERE ethnicity = 'White'") / n
    assert white == pytest.approx(expected_share(ref.ETHNICITY_BY_AUTHORITY, ref.WHITE), abs=0.015)
    asian = (
        scalar(
            con_50k,
            f"SELECT count(*) FROM patients WHERE ethnicity = '{ref.ETHNIC_GROUPS[ref.ASIAN]}'",
        )
        / n
    )
    assert asian == pytest.approx(expected_share(ref.ETHNICITY_BY_AUTHORITY, ref.ASIAN), abs=0.015)
    most_deprived = scalar(con_50k, "SELECT count(*) FROM patients WHERE imd_decile = 1") / n
    assert most_deprived == pytest.approx(
        expected_share(ref.IMD_DECILES_BY_AUTHORITY, 0), abs=0.015
    )
    birmingham = (
        scalar(con_50k, "SELECT count(*) FROM patients WHERE local_authority = 'Birmingham'") / n
    )
    assert birmingham == pytest.approx(1145 / 2917, abs=0.015)
    ages = con_50k.execute(
        """SELECT avg((date_diff('year', date_of_birth, DATE '2015-01-01') < 18)::INT),
                  avg((date_diff('year', date_of_birth, DATE '2015-01-01') >= 65)::INT)
           FROM patients WHERE date_of_birth < DATE '2015-01-01'"""
    ).fetchall()[0]
    assert 0.19 <= ages[0] <= 0.26  # ONS West Midlands: about 22% under 18
    assert 0.15 <= ages[1] <= 0.21  # and about 18% aged 65+
    died = scalar(con_50k, "SELECT count(*) FROM patients WHERE date_of_death IS NOT NULL") / n
    assert 0.05 <= died <= 0.12  # about 0.9% a year over ten years


@pytest.fixture(scope="module")
def prevalence(con_50k, population_50k):
    return {p.condition: p for p in summary.prevalence(con_50k, summary.window_end(population_50k))}


@pytest.mark.parametrize("target", ref.PREVALENCE_TARGETS, ids=lambda t: t.condition)
def test_recorded_prevalence_is_close_to_published_uk_figures(prevalence, target):
    got = prevalence[target.condition].percent
    assert got == pytest.approx(target.percent, rel=PREVALENCE_TOLERANCE), target.source


@pytest.mark.parametrize("condition", ["type2_diabetes", "copd", "depression", "chd"])
def test_prevalence_falls_with_deprivation(prevalence, condition):
    by = prevalence[condition].by_imd_decile
    most, least = np.nanmean(by[:2]), np.nanmean(by[8:])
    assert most > 1.3 * least, by


def test_diagnoses_agree_with_the_measurements_that_drive_them(con_50k):
    rules = {
        "44054006": ("999791000000106", "value >= 48"),  # type 2 diabetes: HbA1c
        "714628002": ("999791000000106", "value BETWEEN 42 AND 47"),  # prediabetes
        "38341003": ("271649006", "value >= 140"),  # hypertension: systolic BP
        "433144002": ("1011481000000105", "value < 60"),  # CKD: eGFR
    }
    for diagnosis, (measure, rule) in rules.items():
        total, supported = con_50k.execute(
            f"""SELECT count(*), count(*) FILTER (WHERE EXISTS (
                    SELECT 1 FROM observations o
                    WHERE o.encounter_id = c.encounter_id AND o.code = $measure AND {rule}))
                FROM conditions c
                WHERE c.code = $diagnosis AND c.encounter_id IS NOT NULL
                  AND c.encounter_id IN (SELECT encounter_id FROM encounters WHERE encounter_type = 'gp')""",
            {"measure": measure, "diagnosis": diagnosis},
        ).fetchall()[0]
        assert total > 50 and supported == total, (diagnosis, total, supported)


def test_medicines_follow_their_diagnoses(con_50k):
    for medicine, diagnoses in (
        ("0601022B0", ("44054006",)),  # metformin after type 2 diabetes
        ("0301020Q0", ("13645005",)),  # tiotropium after COPD
    ):
        unexplained = scalar(
            con_50k,
            """SELECT count(*) FROM medications m WHERE m.code = $m AND NOT EXISTS (
                   SELECT 1 FROM conditions c WHERE c.patient_id = m.patient_id
                   AND list_contains($d, c.code) AND c.onset_date <= m.start_date)""",
            {"m": medicine, "d": list(diagnoses)},
        )
        assert unexplained == 0, medicine


def test_hospital_episodes_use_icd10_and_primary_care_snomed(con_50k):
    rows = dict(
        con_50k.execute(
            """SELECT e.encounter_type, list(DISTINCT c.code_system)
               FROM conditions c JOIN encounters e USING (encounter_id) GROUP BY 1"""
        ).fetchall()
    )
    assert rows["inpatient"] == ["ICD-10"]
    assert rows["gp"] == ["SNOMED CT"]


def test_observations_carry_units_and_vary_over_time(con_50k):
    units = dict(
        con_50k.execute(
            "SELECT code, list(DISTINCT unit) FROM observations WHERE value IS NOT NULL GROUP BY 1"
        ).fetchall()
    )
    assert units["999791000000106"] == ["mmol/mol"]
    assert units["60621009"] == ["kg/m2"]
    # trajectories: people measured repeatedly show change, not a constant
    spread = scalar(
        con_50k,
        """SELECT median(sd) FROM (SELECT stddev(value) AS sd FROM observations
           WHERE code = '60621009' GROUP BY patient_id HAVING count(*) >= 4)""",
    )
    assert 0.3 < spread < 3.0


def test_study_ground_truth_is_separate_heterogeneous_and_matches_the_records(
    con_50k, population_50k
):
    assert not list(population_50k.glob("ground_truth*.parquet"))  # only in its own folder
    n, index_ok = con_50k.execute(
        """SELECT count(*), count(*) FILTER (WHERE EXISTS (
               SELECT 1 FROM conditions c WHERE c.patient_id = g.patient_id
               AND c.code = '714628002' AND c.onset_date = g.index_date))
           FROM ground_truth g"""
    ).fetchall()[0]
    assert n > 500 and index_ok == n
    referred_ok = scalar(
        con_50k,
        """SELECT count(*) FROM ground_truth g WHERE referred <> EXISTS (
               SELECT 1 FROM procedures p WHERE p.patient_id = g.patient_id
               AND p.code = '1025321000000109')""",
    )
    assert referred_ok == 0
    high, low = con_50k.execute(
        """SELECT avg(effect_risk_t2d_2y) FILTER (WHERE bmi_at_index >= 35 AND age_at_index < 60 AND imd_decile > 3),
                  avg(effect_risk_t2d_2y) FILTER (WHERE bmi_at_index < 28 AND age_at_index >= 65)
           FROM ground_truth"""
    ).fetchall()[0]
    assert high < 3 * low < 0  # effects are negative: more negative is more benefit
    # confounding: the referred are older than the not referred
    older = con_50k.execute(
        "SELECT avg(age_at_index) FILTER (referred) - avg(age_at_index) FILTER (NOT referred) FROM ground_truth"
    ).fetchall()[0][0]
    assert older > 2


def test_manifest_records_arguments_and_counts(population_50k, con_50k):
    manifest = json.loads((population_50k / "manifest.json").read_text())
    assert manifest["config"]["patients"] == 50_000 and manifest["population"] == "real"
    assert manifest["rows"]["observations"] == summary.row_counts(con_50k)["observations"]
