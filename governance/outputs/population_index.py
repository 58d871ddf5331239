"""The disclosure ledger's fast path: trackers among many outputs without O(N²) set work.

``disclosure_ledger.tracker_flags`` states the rule on sets (every Venn region of the new
population with one or two earlier ones); this index answers the same question with
arithmetic. Every region size follows by inclusion–exclusion from the sizes ``a, b, c``,
the pairwise intersections ``ab, ac, bc`` (``bc`` kept in a matrix as outputs arrive)
and the triple intersection ``abc``. Before ``abc`` is known it lies in
``[max(0, ab+ac−a, ab+bc−b, ac+bc−c), min(ab, ac, bc)]``, so each region's size lies in
an interval; only pairs of earlier outputs for which some region *could* hold 1 to
``threshold`` people get the exact three-way intersection (one AND and a popcount).
The candidates are found for all pairs at once with numpy.

>>> index = PopulationIndex()
>>> index.add("o-a", sum(1 << p for p in range(10)))
>>> index.add("o-b", sum(1 << p for p in [1, 2, 3, 4, 5, 10, 11, 12]))
>>> [f["rule"] for f in index.flags(sum(1 << p for p in [6, 7, 8, 9, 13, 14, 15]), threshold=1)]
['tracker']
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np

MAX_FLAGS: Final = 20  # flags kept per output (the manifest says when there were more)
# Venn regions of (new, first, second), in disclosure_ledger._regions' order, as
# (pattern, coefficients of [1, a, b, c, ab, ac, bc] and of abc)
REGIONS: Final[tuple[tuple[tuple[bool, ...], tuple[int, ...], int], ...]] = (
    ((True, True, True), (0, 0, 0, 0, 0, 0, 0), 1),
    ((True, True, False), (0, 0, 0, 0, 1, 0, 0), -1),
    ((True, False, True), (0, 0, 0, 0, 0, 1, 0), -1),
    ((True, False, False), (0, 1, 0, 0, -1, -1, 0), 1),
    ((False, True, True), (0, 0, 0, 0, 0, 0, 1), -1),
    ((False, True, False), (0, 0, 1, 0, -1, 0, -1), 1),
    ((False, False, True), (0, 0, 0, 1, 0, -1, -1), 1),
)


def flag(
    rule: str, others: list[str], pattern: tuple[bool, ...], size: int, threshold: int
) -> dict[str, Any]:
    names = ["this output", *others]
    parts = zip(names, pattern, strict=True)
    region = " and ".join(n if inside else f"not {n}" for n, inside in parts)
    return {
        "rule": rule,
        "with_output": others[0],
        "with_outputs": others,
        "people_in_difference": size,
        "region": region,
        "reason": f"{region}: {size} people ({threshold} or fewer) can be isolated by "
        "combining these outputs' counts",
    }


class PopulationIndex:
    """Earlier outputs' populations (bitmaps), their sizes and pairwise intersections."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.maps: list[int] = []
        self.sizes: list[int] = []
        self._inter = np.zeros((0, 0), dtype=np.int64)

    def __contains__(self, output_id: str) -> bool:
        return output_id in self.ids

    def add(self, output_id: str, bitmap: int) -> None:
        row = np.array([(bitmap & m).bit_count() for m in self.maps], dtype=np.int64)
        n = len(self.ids)
        grown = np.zeros((n + 1, n + 1), dtype=np.int64)
        grown[:n, :n] = self._inter
        grown[n, :n] = row
        grown[:n, n] = row
        grown[n, n] = bitmap.bit_count()
        self._inter = grown
        self.ids.append(output_id)
        self.maps.append(bitmap)
        self.sizes.append(bitmap.bit_count())

    def flags(self, new: int, *, threshold: int, limit: int = MAX_FLAGS) -> list[dict[str, Any]]:
        """The flags ``tracker_flags(new, {earlier outputs}, threshold=..., limit=...)``
        gives (the same ones, in the same order)."""
        flags: list[dict[str, Any]] = []
        a = new.bit_count()
        order = sorted(range(len(self.ids)), key=lambda i: self.ids[i])
        if not order:
            return flags
        ab = np.array([(new & self.maps[i]).bit_count() for i in order], dtype=np.int64)
        b = np.array([self.sizes[i] for i in order], dtype=np.int64)
        paired = np.zeros(len(order), dtype=bool)
        for k, i in enumerate(order):
            pairs: tuple[tuple[tuple[bool, ...], int], ...] = (
                ((True, False), int(a - ab[k])),
                ((False, True), int(b[k] - ab[k])),
            )
            for pair, size in pairs:
                if 0 < size <= threshold and ab[k] > 0:  # ab = 0: the region is a whole output
                    flags.append(flag("differencing", [self.ids[i]], pair, size, threshold))
                    paired[k] = True
                    break
        if len(flags) >= limit:
            return flags[:limit]
        inter = self._inter[np.ix_(order, order)]
        first, second = np.triu_indices(len(order), k=1)
        keep = ~paired[first] & ~paired[second] & ((ab[first] > 0) | (ab[second] > 0))
        first, second = first[keep], second[keep]
        terms = [np.ones_like(first), np.full_like(first, a), b[first], b[second], ab[first],
                 ab[second], inter[first, second]]  # fmt: skip
        lo = np.maximum.reduce(
            [
                np.zeros_like(first),
                terms[4] + terms[5] - a,
                terms[4] + terms[6] - terms[2],
                terms[5] + terms[6] - terms[3],
            ]
        )
        hi = np.minimum.reduce([terms[4], terms[5], terms[6]])
        maybe = np.zeros(len(first), dtype=bool)
        for _, coef, sign in REGIONS:
            base = sum(c * t for c, t in zip(coef, terms, strict=True))
            low, high = (base + lo, base + hi) if sign > 0 else (base - hi, base - lo)
            maybe |= (high >= 1) & (low <= threshold)
        for f, s in zip(first[maybe].tolist(), second[maybe].tolist(), strict=True):
            i, j = order[f], order[s]
            abc = (new & self.maps[i] & self.maps[j]).bit_count()
            values = [1, a, self.sizes[i], self.sizes[j], int(ab[f]), int(ab[s]),
                      int(inter[f, s])]  # fmt: skip
            whole = (a, self.sizes[i], self.sizes[j])
            for pattern, coef, sign in REGIONS:
                size = sum(c * v for c, v in zip(coef, values, strict=True)) + sign * abc
                inside = [w for w, p in zip(whole, pattern, strict=True) if p]
                if 0 < size <= threshold and size not in inside:
                    flags.append(
                        flag("tracker", [self.ids[i], self.ids[j]], pattern, size, threshold)
                    )
                    break
            if len(flags) >= limit:
                break
        return flags
