"""Statistical disclosure control for exact outputs, pure: no I/O, no state.

Rules, as OpenSAFELY and most UK TREs apply them:

1. **Small counts**: a count at or below ``REDACTION_THRESHOLD`` (7) is redacted.
2. **Rounding**: every other count is rounded to the nearest ``ROUNDING_MULTIPLE`` (5),
   halves up, so differences between outputs do not reveal exact values.
3. **Secondary suppression**: in a table broken down by one or two categories, a line
   (a row or column of the table) with exactly one redacted cell would let its total give
   the cell back; the smallest other cell of that line is redacted too, until no line has a
   lone redaction.
4. **Sums and means** (as SACRO's ``acro`` checks them): released only when more than
   ``REDACTION_THRESHOLD`` people contribute to the cell, the largest contribution cannot
   be estimated within ``P_PERCENT`` % by the second largest contributor (the p% rule),
   and the two largest contributors make up no more than ``DOMINANCE_K`` % of the cell
   (the (2, k) dominance rule); sums are then rounded to ``ROUNDING_MULTIPLE`` and means to
   ``MEAN_DECIMALS`` places. Counts pass the same people and dominance checks, so a count
   of one person's many rows is redacted like a count of few people.
5. **Extremes**: minimum and maximum values describe one person; exact outputs refuse
   them before anything runs (``exact_plan``); a table that has them gets them suppressed.
6. **Rows**: a grouped row whose every count is small (or unsafe) is left out of the
   table (rule ``row_suppressed``): its group keys alone would say that a combination of
   them exists, and with fine keys (birth year, sex, deprivation decile) that one person
   has it. It leaves no trace: the rules above then run on the other rows as if it had
   never been there (a secondary redaction on its account, or a count of what was done
   to it, would say that a small group exists). A row redacted only by secondary
   suppression stays (its group is not small); a table without group keys keeps its
   one row. What was done to a left-out row is listed for the steward only.

A project may set its own threshold and rounding; they apply to every rule here and to
the disclosure ledger's checks for differencing and trackers.

Every action is listed (cell, rule, reason) in the manifest a steward reviews.

>>> round_count(8), round_count(12), round_count(13)
(10, 10, 15)
>>> [redacted(n) for n in (6, 7, 8)]
[True, True, False]
>>> cell_risk(Contributions(persons=50, total=500.0, top1=12.0, top2=11.0)) is None
True
>>> cell_risk(Contributions(persons=50, total=1049.0, top1=1000.0, top2=1.0))[0]
'p_percent'
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final

REDACTION_THRESHOLD: Final = 7
ROUNDING_MULTIPLE: Final = 5
P_PERCENT: Final = 10.0  # acro's default p
DOMINANCE_K: Final = 90.0  # acro's default (n = 2, k = 90 %)
MEAN_DECIMALS: Final = 1


@dataclass(frozen=True)
class Contributions:
    """Who is behind one cell of one aggregate: people, the total of their absolute
    contributions, and the two largest contributions."""

    persons: int
    total: float
    top1: float
    top2: float
    low1: float = 0.0  # the two smallest contributions
    low2: float = 0.0


def cell_risk(
    c: Contributions,
    *,
    threshold: int = REDACTION_THRESHOLD,
    p: float = P_PERCENT,
    k: float = DOMINANCE_K,
) -> tuple[str, str] | None:
    """(rule, reason) when a cell would disclose a contributor, else None."""
    if c.persons <= threshold:
        return "small_count", f"{threshold} or fewer people are behind this cell"
    if c.total - c.top1 - c.top2 < p / 100 * c.top1:
        return "p_percent", f"the largest contribution could be estimated within {p:g}%"
    if c.top1 + c.top2 > k / 100 * c.total:
        return "dominance", f"two people make up more than {k:g}% of this cell"
    return None


def known_others(c: Contributions) -> tuple[str, str] | None:
    """(rule, reason) when all but one person behind a sum or mean give the same value.

    Then the others' values are known to whoever chose them (a filter or a key that
    fixes them: people born in December) and the cell gives the one person's value: a
    red team read a chosen person's decile from ``avg(month_of_birth)`` of 25 people,
    12.0 in every cell but theirs (11.7). When everyone gives the same value, the cell
    says it of each of them.

    >>> known_others(Contributions(persons=25, total=291.0, top1=12.0, top2=12.0, low1=3.0,
    ...                            low2=12.0))[0]
    'known_others'
    >>> known_others(Contributions(persons=25, total=200.0, top1=12.0, top2=11.0, low1=3.0,
    ...                            low2=4.0)) is None
    True
    """
    if c.persons >= 2 and (c.top2 == c.low1 or c.top1 == c.low2):
        return "known_others", "all but one person behind this cell give the same value"
    return None


def round_value(value: float, multiple: int = ROUNDING_MULTIPLE) -> float | int:
    """A sum to the nearest multiple, halves up; integers stay integers.

    >>> round_value(1234.4), round_value(12.5)
    (1235, 15)
    """
    out = math.floor(float(value) / multiple + 0.5) * multiple
    return int(out)


def redacted(count: int, threshold: int = REDACTION_THRESHOLD) -> bool:
    return count <= threshold


def round_count(count: int, multiple: int = ROUNDING_MULTIPLE) -> int:
    """Nearest multiple, halves rounded up (12.5 → 15)."""
    return int(math.floor(count / multiple + 0.5) * multiple)


@dataclass(frozen=True)
class CellAction:
    row: int
    column: str
    rule: str  # "small_count", "secondary", "p_percent", "dominance", "rounded", "extreme"
    reason: str
    left_out: bool = False  # on a row left out of the table: for the steward's eyes only


@dataclass
class SdcResult:
    rows: list[dict[str, Any]]
    actions: list[CellAction] = field(default_factory=list)
    threshold: int = REDACTION_THRESHOLD  # the rules actually applied (a project's policy)
    multiple: int = ROUNDING_MULTIPLE

    def manifest(self) -> dict[str, Any]:
        by_rule: dict[str, int] = defaultdict(int)
        for a in self.actions:
            if not a.left_out:  # the counts members see never tell that a row was left out
                by_rule[a.rule] += 1
        return {
            "rules": {
                "redaction_threshold": self.threshold,
                "rounding_multiple": self.multiple,
            },
            "sum_rules": {
                "p_percent": P_PERCENT,
                "dominance_k": DOMINANCE_K,
                "mean_decimals": MEAN_DECIMALS,
            },
            "counts": dict(sorted(by_rule.items())),
            "cells": [a.__dict__ for a in self.actions if a.rule != "rounded"],
        }


def apply_sdc(
    rows: Sequence[dict[str, Any]],
    *,
    count_columns: Sequence[str],
    group_columns: Sequence[str] = (),
    extreme_columns: Sequence[str] = (),
    sum_columns: Sequence[str] = (),
    mean_columns: Sequence[str] = (),
    unsafe: Mapping[tuple[int, str], tuple[str, str]] | None = None,
    threshold: int = REDACTION_THRESHOLD,
    multiple: int = ROUNDING_MULTIPLE,
) -> SdcResult:
    """Apply the rules to a result table; returns the safe table and what was done.

    ``unsafe`` names cells found disclosive from who is behind them (``cell_risk``),
    keyed by (row, column), with the rule and reason.
    """
    if threshold < 0 or multiple < 1:
        raise ValueError("threshold must be >= 0 and rounding multiple >= 1")
    unsafe = unsafe or {}
    gone: list[int] = []
    if group_columns and count_columns:
        gone = [
            i
            for i, row in enumerate(rows)
            if all(_primary(row, i, c, unsafe, threshold) for c in count_columns)
        ]
    if not gone:
        return _apply(rows, count_columns, group_columns, extreme_columns, sum_columns,
                      mean_columns, unsafe, threshold, multiple)  # fmt: skip
    # the rows left out go first, before anything else looks at the table
    kept = [i for i in range(len(rows)) if i not in set(gone)]
    position = {old: new for new, old in enumerate(kept)}
    result = _apply(
        [rows[i] for i in kept], count_columns, group_columns, extreme_columns, sum_columns,
        mean_columns, {(position[i], c): v for (i, c), v in unsafe.items() if i in position},
        threshold, multiple,
    )  # fmt: skip
    actions = [replace(a, row=kept[a.row]) for a in result.actions]
    for i in gone:
        for col in count_columns:
            value = rows[i].get(col)
            if value is not None and redacted(int(value), threshold):
                small = f"count at or below {threshold}"
                actions.append(CellAction(i, col, "small_count", small, left_out=True))
            elif (i, col) in unsafe:
                actions.append(CellAction(i, col, *unsafe[(i, col)], left_out=True))
        reason = "every count of this row was redacted: its group is not shown"
        actions.append(CellAction(i, "*", "row_suppressed", reason, left_out=True))
    result.actions = sorted(actions, key=lambda a: a.row)
    return result


def _primary(
    row: Mapping[str, Any],
    i: int,
    col: str,
    unsafe: Mapping[tuple[int, str], tuple[str, str]],
    threshold: int,
) -> bool:
    """The cell is redacted by itself (small or unsafe), before secondary suppression."""
    value = row.get(col)
    if value is not None and redacted(int(value), threshold):
        return True
    return (i, col) in unsafe


def _apply(
    rows: Sequence[dict[str, Any]],
    count_columns: Sequence[str],
    group_columns: Sequence[str],
    extreme_columns: Sequence[str],
    sum_columns: Sequence[str],
    mean_columns: Sequence[str],
    unsafe: Mapping[tuple[int, str], tuple[str, str]],
    threshold: int,
    multiple: int,
) -> SdcResult:
    out = [dict(r) for r in rows]
    result = SdcResult(out, threshold=threshold, multiple=multiple)
    hidden: set[tuple[int, str]] = set()
    for i, row in enumerate(out):
        for col in count_columns:
            value = row.get(col)
            if value is not None and redacted(int(value), threshold):
                hidden.add((i, col))
                result.actions.append(
                    CellAction(i, col, "small_count", f"count at or below {threshold}")
                )
            elif (i, col) in unsafe:
                hidden.add((i, col))
                result.actions.append(CellAction(i, col, *unsafe[(i, col)]))
        for col in extreme_columns:
            if row.get(col) is not None:
                row[col] = None
                result.actions.append(
                    CellAction(i, col, "extreme", "minimum and maximum describe one person")
                )
    _secondary(out, count_columns, group_columns, hidden, result)
    rows_hidden = {i for i, _ in hidden}
    for i, row in enumerate(out):
        for col in count_columns:
            if (i, col) in hidden:
                row[col] = None
            elif row.get(col) is not None:
                exact = int(row[col])
                row[col] = round_count(exact, multiple)
                result.actions.append(CellAction(i, col, "rounded", f"rounded to {multiple}"))
        for col in [*sum_columns, *mean_columns]:
            if row.get(col) is None:
                continue
            if (i, col) in unsafe:
                row[col] = None
                result.actions.append(CellAction(i, col, *unsafe[(i, col)]))
            elif i in rows_hidden:
                row[col] = None
                result.actions.append(
                    CellAction(i, col, "small_count", "its row's count was redacted")
                )
            elif col in sum_columns:
                row[col] = round_value(row[col], multiple)
                result.actions.append(CellAction(i, col, "rounded", f"rounded to {multiple}"))
            else:
                row[col] = round(float(row[col]), MEAN_DECIMALS)
                result.actions.append(
                    CellAction(i, col, "rounded", f"rounded to {MEAN_DECIMALS} decimal place")
                )
    return result


def _lines(
    rows: list[dict[str, Any]], count_columns: Sequence[str], group_columns: Sequence[str]
) -> list[list[tuple[int, str]]]:
    """Sets of cells that add up to a total someone could know (table rows and columns)."""
    lines: list[list[tuple[int, str]]] = []
    if not group_columns:
        # one row of counts: the columns together are a line only if there are several
        for i, _ in enumerate(rows):
            lines.append([(i, c) for c in count_columns])
        return lines
    for col in count_columns:
        # every grouping column, with the others fixed, is a margin of the table
        for g in group_columns:
            others = [o for o in group_columns if o != g]
            groups: dict[tuple[Any, ...], list[tuple[int, str]]] = defaultdict(list)
            for i, row in enumerate(rows):
                groups[tuple(row.get(o) for o in others)].append((i, col))
            lines.extend(groups.values())
    return lines


def _secondary(
    rows: list[dict[str, Any]],
    count_columns: Sequence[str],
    group_columns: Sequence[str],
    hidden: set[tuple[int, str]],
    result: SdcResult,
) -> None:
    lines = [line for line in _lines(rows, count_columns, group_columns) if len(line) > 1]
    changed = True
    while changed:
        changed = False
        for line in lines:
            lone = [cell for cell in line if cell in hidden]
            if len(lone) != 1:
                continue
            visible = [
                cell
                for cell in line
                if cell not in hidden and rows[cell[0]].get(cell[1]) is not None
            ]
            if not visible:
                continue
            cell = min(visible, key=lambda c: (int(rows[c[0]][c[1]]), c))
            hidden.add(cell)
            result.actions.append(
                CellAction(
                    cell[0],
                    cell[1],
                    "secondary",
                    "redacted so that a redacted cell cannot be recomputed from the total",
                )
            )
            changed = True
