"""The pure rules of exact outputs: column classification, sum disclosure, trackers."""

from __future__ import annotations

import duckdb
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from governance.outputs.disclosure import (
    REDACTION_THRESHOLD,
    ROUNDING_MULTIPLE,
    Contributions,
    cell_risk,
    round_value,
)
from governance.outputs.disclosure_ledger import tracker_flags
from governance.outputs.exact_plan import classify
from governance.sql.policy import PolicyError, parse

CON = duckdb.connect()


def _kinds(sql: str) -> list[str]:
    return [c.kind for c in classify(parse(CON, sql)).columns]


# ---------------------------------------------------------------- what a column computes
wrapped = st.recursive(
    st.sampled_from(["count(*)", "count(value)", "sum(value)", "avg(value)"]),
    lambda inner: st.one_of(
        inner.map(lambda e: f"CAST({e} AS DOUBLE)"),
        inner.map(lambda e: f"round({e})"),
        inner.map(lambda e: f"round({e}, 2)"),
    ),
    max_leaves=4,
)


@given(wrapped)
def test_casts_and_rounding_keep_an_aggregate_what_it_is(expr):
    kind = {"count": "count", "sum(": "sum", "avg(": "mean"}
    expected = next(v for k, v in kind.items() if k in expr)
    assert _kinds(f"SELECT count(*) AS n, {expr} AS x FROM obs") == ["count", expected]


@given(wrapped, st.sampled_from(["+ 1", "* 2", "/ 3", "> 0", "= 1", "- count(*)"]))
def test_any_other_expression_over_an_aggregate_is_refused(expr, op):
    with pytest.raises(PolicyError, match="exact_expression"):
        classify(parse(CON, f"SELECT count(*) AS n, {expr} {op} AS x FROM obs"))


@given(
    st.sampled_from(["person_id", "encounter_id", "condition_id"]),
    st.sampled_from(
        [
            "SELECT k, count(*) FROM (SELECT {c} AS k FROM t) d GROUP BY k",
            "WITH w AS (SELECT {c} * 1 AS k FROM t) SELECT k, count(*) FROM w GROUP BY k",
            "SELECT k, count(*) FROM (SELECT {c} FROM t) d(k) GROUP BY k",
            "WITH w(k) AS (SELECT {c} FROM t) SELECT k, count(*) FROM w GROUP BY k",
            "SELECT k, count(*) FROM (SELECT * RENAME ({c} AS k) FROM t) d GROUP BY k",
            "SELECT k, count(*) FROM (SELECT m AS k FROM (SELECT {c} AS m FROM t) a) b GROUP BY k",
        ]
    ),
)
def test_a_person_or_record_key_by_any_other_name_is_refused(column, template):
    with pytest.raises(PolicyError, match="exact_person_key"):
        classify(parse(CON, template.format(c=column)))


def test_group_keys_counts_sums_and_means_are_what_they_are():
    sql = "SELECT sex AS s, count(DISTINCT person_id), sum(v), avg(v) FROM t GROUP BY s"
    assert _kinds(sql) == ["group", "count", "sum", "mean"]
    assert _kinds("SELECT d.k, count(*) FROM (SELECT sex AS k FROM t) d GROUP BY 1") == [
        "group",
        "count",
    ]


# ---------------------------------------------------------------- sums and means
@given(st.integers(REDACTION_THRESHOLD + 1, 10_000), st.floats(0.001, 1e6, allow_nan=False))
def test_equal_contributions_from_enough_people_are_safe(persons, each):
    c = Contributions(persons=persons, total=persons * each, top1=each, top2=each)
    assert cell_risk(c) is None


@given(st.integers(0, REDACTION_THRESHOLD), st.floats(0, 1e6, allow_nan=False))
def test_few_people_are_never_safe_whatever_they_contribute(persons, total):
    c = Contributions(persons=persons, total=total, top1=total, top2=0.0)
    assert cell_risk(c) == cell_risk(c, threshold=REDACTION_THRESHOLD)
    assert cell_risk(c) is not None and cell_risk(c)[0] == "small_count"


@given(st.integers(REDACTION_THRESHOLD + 1, 1000), st.floats(1, 100), st.floats(20, 1000))
def test_one_dominant_contributor_is_always_caught(persons, each, factor):
    big = each * (persons - 1) * factor  # at least 20 times everyone else together
    c = Contributions(persons=persons, total=big + each * (persons - 1), top1=big, top2=each)
    risk = cell_risk(c)
    assert risk is not None and risk[0] in ("p_percent", "dominance")


@given(st.floats(-1e9, 1e9, allow_nan=False), st.integers(1, 50))
def test_sums_are_rounded_to_the_multiple_and_no_further(value, multiple):
    rounded = round_value(value, multiple)
    assert rounded % multiple == 0 and abs(rounded - value) <= multiple / 2 + 1e-6


def test_rounding_defaults_come_from_one_place():
    assert round_value(12) == 10 and ROUNDING_MULTIPLE == 5


# ---------------------------------------------------------------- trackers
people = st.sets(st.integers(0, 60), min_size=12, max_size=50)


def _bits(s: set[int]) -> int:
    return sum(1 << p for p in s)


@settings(max_examples=200)
@given(people, st.integers(1, REDACTION_THRESHOLD), st.data())
def test_removing_a_few_people_from_an_earlier_output_is_flagged(base, k, data):
    removed = set(data.draw(st.lists(st.sampled_from(sorted(base)), min_size=k, max_size=k)))
    flags = tracker_flags(_bits(base - removed), {"o-1": _bits(base)}, threshold=7)
    if base - removed:
        assert [f["people_in_difference"] for f in flags] == [len(removed)]


@settings(max_examples=200)
@given(people, st.data())
def test_a_tracker_isolating_one_person_from_two_halves_is_flagged(base, data):
    target = data.draw(st.sampled_from(sorted(base)))
    rest = sorted(base - {target})
    cut = data.draw(st.integers(0, len(rest)))
    b, c = set(rest[:cut]), set(rest[cut:])
    assume(c)  # an output that describes nobody adds nothing to combine
    flags = tracker_flags(_bits(c), {"o-a": _bits(base), "o-b": _bits(b)}, threshold=7)
    assert flags, "A − B − C is one person: the three outputs together are a tracker"
    assert all(0 < f["people_in_difference"] <= 7 for f in flags)


@given(people, people)
def test_flags_never_name_an_empty_or_large_region(a, b):
    for f in tracker_flags(_bits(a), {"o-b": _bits(b)}, threshold=7):
        assert 0 < f["people_in_difference"] <= 7


@settings(max_examples=300)
@given(
    st.lists(st.sets(st.integers(0, 40), max_size=40), min_size=0, max_size=7),
    st.sets(st.integers(0, 40), max_size=40),
    st.integers(1, 8),
    st.integers(1, 25),
)
def test_the_ledgers_index_finds_exactly_the_flags_the_set_rule_states(earlier, new, t, limit):
    from governance.outputs.population_index import PopulationIndex

    maps = {f"o-{i}": _bits(s) for i, s in enumerate(earlier)}
    index = PopulationIndex()
    for output_id, bitmap in maps.items():
        index.add(output_id, bitmap)

    def key(flags):
        return sorted((f["rule"], tuple(f["with_outputs"]), f["region"]) for f in flags)

    assert key(index.flags(_bits(new), threshold=t, limit=limit)) == key(
        tracker_flags(_bits(new), maps, threshold=t, limit=limit)
    )


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.sets(st.integers(0, 30), max_size=30), min_size=0, max_size=30),
    st.sets(st.integers(0, 30), max_size=30),
    st.integers(1, 6),
    st.integers(1, 25),
    st.sampled_from([1, 3, 64]),
)
def test_the_index_screens_pairs_in_blocks_and_still_finds_the_rules_flags_in_order(
    earlier, new, t, limit, block
):
    """Many outputs, added in any order of ids: the index's flags are the set rule's, in
    its order, however many pairs of earlier outputs it screens at once."""
    from governance.outputs.population_index import PopulationIndex

    maps = {f"o-{(7 * i) % 31:02d}-{i}": _bits(s) for i, s in enumerate(earlier)}
    index = PopulationIndex()
    index.BLOCK = block
    index.CHUNK = max(1, block // 2)
    for output_id, bitmap in maps.items():
        index.add(output_id, bitmap)
    assert len(index) == len(maps) and all(i in index for i in maps)

    def key(flags):
        return [(f["rule"], tuple(f["with_outputs"]), f["region"]) for f in flags]

    assert key(index.flags(_bits(new), threshold=t, limit=limit)) == key(
        tracker_flags(_bits(new), maps, threshold=t, limit=limit)
    )


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.sets(st.integers(0, 40), max_size=40), min_size=0, max_size=6),
    st.sets(st.integers(0, 40), max_size=40),
    st.integers(1, 8),
    st.randoms(use_true_random=False),
)
def test_the_ledger_flags_what_the_set_rule_flags_on_pseudonymous_keys(earlier, new, t, rnd):
    """Populations as a query returns them (64-bit pseudonyms, any order, repeats): the
    ledger's flags for a new output are the set rule's over the same people."""
    from pathlib import Path

    import numpy as np

    from governance.outputs.disclosure_ledger import DisclosureLedger

    # distinct, as keyed pseudonyms are: random high bits, the person in the low six
    # (drawn independently, Hypothesis shrinks them all to one value: a collision)
    pseudonym = {p: ((rnd.getrandbits(56) << 6) | p) - 2**61 for p in range(41)}

    def keys(s):
        people = [pseudonym[p] for p in s] * 2
        rnd.shuffle(people)
        return np.array(people, dtype=np.int64)

    ledger = DisclosureLedger(Path("/nonexistent"))  # nothing stored: no file is read
    for i, s in enumerate(earlier):
        ledger.check("p-1", f"o-{i}", keys(s), stored=[], stored_up_to=0, threshold=t)
    got = ledger.check("p-1", "o-new", keys(new), stored=[], stored_up_to=0, threshold=t)
    expected = tracker_flags(_bits(new), {f"o-{i}": _bits(s) for i, s in enumerate(earlier)},
                             threshold=t)  # fmt: skip
    assert sorted((f["rule"], tuple(f["with_outputs"]), f["region"]) for f in got) == sorted(
        (f["rule"], tuple(f["with_outputs"]), f["region"]) for f in expected
    )
