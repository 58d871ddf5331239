"""The feasibility spec's fixed shape: strict errors that name the key, and round trips."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from governance.feasibility.compile import compile_spec, missing_grants
from governance.feasibility.spec import MAX_CRITERIA, SpecError, load_spec, parse_spec

TODAY = dt.date(2025, 6, 30)

GOOD_TOML = """
title = "T2D on metformin, HbA1c 58-97"
as_of = 2024-12-31
seen_within_days = 365

[population]
sex = ["F", "M"]
age = [40, 75]

[[include]]
kind = "condition"
codelist = "type2-diabetes-snomed"

[[include]]
kind = "lab"
codes = ["999791000000106"]
min = 58
max = 97
from = 2023-01-01

[[exclude]]
kind = "condition"
codelist = "ckd-snomed"
"""


def test_a_toml_spec_and_its_json_twin_read_the_same():
    spec = load_spec(GOOD_TOML)
    assert spec.age == (40, 75) and spec.sexes == ("F", "M")
    assert spec.include[1].low == 58 and spec.include[1].since == dt.date(2023, 1, 1)
    assert spec.include[0].codes and spec.include[0].codelist == "type2-diabetes-snomed"
    import json

    twin = load_spec(json.dumps(spec.canonical()))
    assert twin == spec


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"population": {"sex": "F"}, "colour": 1}, "unknown key 'colour' in the spec"),
        ({"population": {"sex": "X"}}, "population.sex"),
        ({"population": {"height": 2}}, "unknown key 'height' in population"),
        ({"population": {"age": [70, 40]}}, "the youngest age comes first"),
        ({"population": {"age": [40, 200]}}, "population.age: a whole number from 0 to 120"),
        ({"population": {"age": [40.5, 60]}}, "population.age: a whole number"),
        ({"include": [{"kind": "gene", "codes": ["x"]}]}, "include[0].kind: one of"),
        ({"include": [{"kind": "condition"}]}, "include[0]: give codes or codelist"),
        (
            {"include": [{"kind": "condition", "codes": ["1"], "codelist": "ckd-snomed"}]},
            "not those of codelist 'ckd-snomed'",
        ),
        ({"include": [{"kind": "condition", "codelist": "ckd"}]}, "no codelist named 'ckd'"),
        ({"include": [{"kind": "condition", "codes": []}]}, "include[0].codes: a list of 1"),
        ({"include": [{"kind": "condition", "codes": ["1'; DROP"]}]}, "letters, digits and dots"),
        ({"include": [{"kind": "lab", "codes": ["1"]}]}, "needs min and/or max"),
        ({"include": [{"kind": "lab", "codes": ["1"], "min": 9, "max": 1}]}, "min is above max"),
        ({"include": [{"kind": "lab", "codes": ["1"], "min": float("nan")}]}, "a finite number"),
        ({"include": [{"kind": "medication", "codes": ["1"], "min": 1}]}, "for lab criteria"),
        (
            {
                "include": [
                    {"kind": "condition", "codes": ["1"], "from": "2024-02-01", "to": "2024-01-01"}
                ]
            },
            "from is after to",
        ),
        (
            {
                "include": [
                    {"kind": "condition", "codes": ["1"], "within_days": 30, "from": "2024-01-01"}
                ]
            },
            "within_days or from/to, not both",
        ),
        ({"as_of": "31/12/2024", "population": {"sex": "F"}}, "as_of: a date, YYYY-MM-DD"),
        ({"seen_within_days": 0, "population": {"sex": "F"}}, "seen_within_days: a whole"),
        ({"seen_within_days": True, "population": {"sex": "F"}}, "seen_within_days: a whole"),
        ({}, "name at least one inclusion criterion"),
        (
            {"include": [{"kind": "condition", "codes": ["1"]}] * (MAX_CRITERIA + 1)},
            f"at most {MAX_CRITERIA} criteria",
        ),
        ({"exclude": {"kind": "condition"}}, "exclude: a list of criteria"),
        ([1, 2], "a spec is a table"),
    ],
)
def test_a_spec_off_the_fixed_shape_is_refused_naming_the_key(data, message):
    with pytest.raises(SpecError) as err:
        parse_spec(data, today=TODAY)
    assert message in str(err.value)
    assert err.value.code == "invalid_spec"


def test_unparseable_or_oversized_text_is_a_clear_spec_error():
    with pytest.raises(SpecError, match="not valid TOML"):
        load_spec("as_of = = 1")
    with pytest.raises(SpecError, match="not valid JSON"):
        load_spec('{"as_of": ')
    with pytest.raises(SpecError, match="at most 20,000 bytes"):
        load_spec("# " + "x" * 20_001)


def test_a_project_is_told_exactly_which_grants_a_spec_needs():
    spec = load_spec(GOOD_TOML)
    lacking = missing_grants(spec, {"patients": ["person_id", "sex"], "conditions": ["code"]})
    assert lacking["patients"] == ["year_of_birth", "month_of_birth", "local_authority"]
    assert lacking["conditions"] == ["person_id", "onset_date"]
    assert "observations" in lacking and "medications" not in lacking


codes = st.lists(st.from_regex(r"[A-Za-z0-9.]{1,12}", fullmatch=True), min_size=1, max_size=4)
criteria = st.fixed_dictionaries(
    {"kind": st.sampled_from(["condition", "medication"]), "codes": codes},
    optional={"within_days": st.integers(1, 3650)},
)


@given(
    st.fixed_dictionaries(
        {"include": st.lists(criteria, min_size=1, max_size=MAX_CRITERIA)},
        optional={
            "exclude": st.lists(criteria, max_size=MAX_CRITERIA),
            "population": st.fixed_dictionaries({}, optional={"sex": st.sampled_from(["F", "M"])}),
        },
    )
)
def test_any_valid_spec_round_trips_and_compiles_to_one_semi_join_per_criterion(data):
    spec = parse_spec(data, today=TODAY)
    assert parse_spec(spec.canonical(), today=TODAY) == spec
    compiled = compile_spec(spec)
    n = len(spec.include) + len(spec.exclude)
    # every criterion is a person-local semi-join; exclusions are negated
    assert compiled.areas_sql.count("person_id IN (SELECT e.person_id") == n
    assert compiled.areas_sql.count("NOT (person_id IN") == len(spec.exclude)
    assert compiled.sites_sql.count("person_id IN (SELECT e.person_id") == n
