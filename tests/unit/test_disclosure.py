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
    rows = [
        {"sex": "F", "n": 120, "k": 1},
        {"sex": "F", "n": 3, "k": 2},
        {"sex": "U", "n": 40, "k": 1},
    ]
    result = apply_sdc(rows, count_columns=["n"], group_columns=["sex", "k"])
    assert [(r["sex"], r["n"]) for r in result.rows] == [("F", 120), ("U", 40)]
    # a row with two counts, one small: the row stays, and the smallest other cell of
    # the small one's line (its column, over the groups) is redacted with it
    rows = [{"sex": "F", "a": 120, "b": 3}, {"sex": "M", "a": 90, "b": 50}]
    result = apply_sdc(rows, count_columns=["a", "b"], group_columns=["sex"])
    assert [(r["sex"], r["a"], r["b"]) for r in result.rows] == [("F", 120, None), ("M", 90, None)]
    rules = {(a.row, a.column, a.rule) for a in result.actions if a.rule != "rounded"}
    assert rules == {(0, "b", "small_count"), (1, "b", "secondary")}


def test_a_row_left_out_leaves_no_trace():
    """A red-team grouped by ``(<one person's traits> AND decile = d)``: the one-person
    row was left out, but its neighbour in the same sex was redacted on its account and
    the counts members see listed it, so each approved table told whether the decile
    was d. The table with the small group and the table without it now differ only in
    the values that person is counted in."""
    with_ = [
        {"sex": "M", "k": False, "n": 1465}, {"sex": "M", "k": True, "n": 1},
        {"sex": "F", "k": False, "n": 1535},
    ]  # fmt: skip
    without = [{"sex": "M", "k": False, "n": 1466}, {"sex": "F", "k": False, "n": 1535}]
    a = apply_sdc(with_, count_columns=["n"], group_columns=["sex", "k"])
    b = apply_sdc(without, count_columns=["n"], group_columns=["sex", "k"])
    assert a.rows == b.rows == [
        {"sex": "M", "k": False, "n": 1465}, {"sex": "F", "k": False, "n": 1535},
    ]  # fmt: skip
    assert a.manifest()["counts"] == b.manifest()["counts"] == {"rounded": 2}
    # the steward still sees what was left out, and why
    steward = {(c["row"], c["rule"], c["left_out"]) for c in a.manifest()["cells"]}
    assert steward == {(1, "small_count", True), (1, "row_suppressed", True)}


def test_a_table_of_fine_groups_lists_only_the_groups_that_are_not_small():
    """A red-team listed one person's birth year, sex and decile as a row whose count
    alone was redacted; such rows are not published at all."""
    rows = [
        {"yob": 1915, "sex": "F", "decile": 1, "n": 1},
        {"yob": 1916, "sex": "F", "decile": 3, "n": 1},
        {"yob": 1950, "sex": "M", "decile": 5, "n": 40},
        {"yob": 1951, "sex": "M", "decile": 5, "n": 41},
    ]
    result = apply_sdc(rows, count_columns=["n"], group_columns=["yob", "sex", "decile"])
    assert [r["yob"] for r in result.rows] == [1950, 1951]
    assert all(r["yob"] not in (1915, 1916) for r in result.rows)


def _with_dropped(rows, result, keys):
    """The published table with each left-out row back in, its count as None."""
    kept = {tuple(r[k] for k in keys): r for r in result.rows}
    return [kept.get(tuple(r[k] for k in keys), {**r, "n": None}) for r in rows]


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
    published = {(r["a"], r["b"]) for r in result.rows}
    for original in rows:
        if (original["a"], original["b"]) not in published:
            assert original["n"] <= 7  # only small groups are left out
    for original, safe in zip(rows, _with_dropped(rows, result, ("a", "b")), strict=True):
        if safe["n"] is not None:
            assert original["n"] > 7
            assert safe["n"] % ROUNDING_MULTIPLE == 0
            assert abs(safe["n"] - original["n"]) <= ROUNDING_MULTIPLE / 2


@given(tables)
def test_no_line_of_the_published_table_has_a_lone_redaction(cells):
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


@given(tables)
def test_what_is_published_is_what_the_table_without_its_left_out_rows_publishes(cells):
    rows = [{"a": a, "b": b, "n": n} for a, b, n in cells]
    result = apply_sdc(rows, count_columns=["n"], group_columns=["a", "b"])
    published = {(r["a"], r["b"]) for r in result.rows}
    rest = [r for r in rows if (r["a"], r["b"]) in published]
    again = apply_sdc(rest, count_columns=["n"], group_columns=["a", "b"])
    assert again.rows == result.rows
    assert again.manifest()["counts"] == result.manifest()["counts"]


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
    assert [r["g"] for r in result.rows] == ["b"]  # 8 is small under a threshold of 10
