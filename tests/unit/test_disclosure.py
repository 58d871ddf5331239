"""Disclosure control at its boundaries, and as properties over random tables."""

from __future__ import annotations

from collections import defaultdict

from hypothesis import given
from hypothesis import strategies as st

from governance.outputs.disclosure import ROUNDING_MULTIPLE, apply_sdc, redacted, round_count


def test_the_named_boundaries():
    assert [redacted(n) for n in (0, 6, 7, 8)] == [True, True, True, False]
    assert [round_count(n) for n in (8, 10, 12, 13, 17, 18)] == [10, 10, 10, 15, 15, 20]


def test_a_lone_small_cell_takes_its_smallest_neighbour_with_it():
    rows = [{"sex": "F", "n": 120}, {"sex": "M", "n": 3}, {"sex": "U", "n": 40}]
    result = apply_sdc(rows, count_columns=["n"], group_columns=["sex"])
    assert [r["n"] for r in result.rows] == [120, None, None]
    rules = {(a.row, a.rule) for a in result.actions if a.rule != "rounded"}
    assert rules == {(1, "small_count"), (2, "secondary")}
    assert result.manifest()["counts"] == {"rounded": 1, "secondary": 1, "small_count": 1}


def test_minimum_and_maximum_are_suppressed():
    rows = [{"n": 50, "min_age": 18, "max_age": 97}]
    result = apply_sdc(rows, count_columns=["n"], extreme_columns=["min_age", "max_age"])
    assert result.rows == [{"n": 50, "min_age": None, "max_age": None}]


tables = st.lists(
    st.tuples(st.sampled_from("ABCD"), st.sampled_from("xyz"), st.integers(0, 60)),
    min_size=1,
    max_size=12,
    unique_by=lambda t: (t[0], t[1]),
)


@given(tables)
def test_no_small_count_is_published_and_every_count_is_rounded(cells):
    rows = [{"a": a, "b": b, "n": n} for a, b, n in cells]
    result = apply_sdc(rows, count_columns=["n"], group_columns=["a", "b"])
    for original, safe in zip(rows, result.rows, strict=True):
        if safe["n"] is not None:
            assert original["n"] > 7
            assert safe["n"] % ROUNDING_MULTIPLE == 0
            assert abs(safe["n"] - original["n"]) <= ROUNDING_MULTIPLE / 2


@given(tables)
def test_no_line_of_the_table_has_a_lone_redaction(cells):
    rows = [{"a": a, "b": b, "n": n} for a, b, n in cells]
    result = apply_sdc(rows, count_columns=["n"], group_columns=["a", "b"])
    for key in ("a", "b"):
        other = "b" if key == "a" else "a"
        lines = defaultdict(list)
        for r in result.rows:
            lines[r[other]].append(r["n"])
        for values in lines.values():
            if len(values) > 1:
                assert sum(v is None for v in values) != 1, values


def test_the_manifest_records_the_projects_own_rules_not_the_defaults():
    from governance.outputs.disclosure import apply_sdc

    result = apply_sdc(
        [{"g": "a", "n": 8}, {"g": "b", "n": 120}],
        count_columns=["n"],
        group_columns=["g"],
        threshold=10,
        multiple=10,
    )
    rules = result.manifest()["rules"]
    assert rules == {"redaction_threshold": 10, "rounding_multiple": 10}
    assert result.rows[0]["n"] is None  # 8 is redacted under a threshold of 10
