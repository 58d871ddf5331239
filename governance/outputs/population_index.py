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

import bisect
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
    """Earlier outputs' populations (bitmaps), their sizes and pairwise intersections.

    What a check costs does not grow with what the project stored beyond what the rule
    needs: outputs are found by id in a map, the intersection matrix grows by doubling
    (not a copy per output), the outputs' order by id is kept as they arrive, and pairs
    of earlier outputs are screened in blocks, in the rule's order, stopping at the
    ``limit``-th flag (one flag holds an output; more only fill the steward's list).
    """

    BLOCK = 64  # first outputs of pairs screened at once
    CHUNK = 256  # candidate pairs whose three-way intersection is counted at once

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.maps: list[int] = []
        self.sizes: list[int] = []
        self._at: dict[str, int] = {}  # output id -> its position in ids
        self._sorted: list[str] = []  # ids in order
        self._inter = np.zeros((0, 0), dtype=np.int64)  # capacity >= len(ids)

    def __contains__(self, output_id: str) -> bool:
        return output_id in self._at

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, output_id: str, bitmap: int) -> None:
        if output_id in self._at:
            raise ValueError(f"{output_id} is already in the index")
        n = len(self.ids)
        if n + 1 > len(self._inter):  # grow by doubling: amortised O(n) per output
            grown = np.zeros((max(8, 2 * (n + 1)),) * 2, dtype=np.int64)
            grown[:n, :n] = self._inter[:n, :n]
            self._inter = grown
        row = np.array([(bitmap & m).bit_count() for m in self.maps], dtype=np.int64)
        self._inter[n, :n] = row
        self._inter[:n, n] = row
        self._inter[n, n] = bitmap.bit_count()
        self._at[output_id] = n
        bisect.insort(self._sorted, output_id)
        self.ids.append(output_id)
        self.maps.append(bitmap)
        self.sizes.append(bitmap.bit_count())

    def flags(self, new: int, *, threshold: int, limit: int = MAX_FLAGS) -> list[dict[str, Any]]:
        """The flags ``tracker_flags(new, {earlier outputs}, threshold=..., limit=...)``
        gives (the same ones, in the same order)."""
        flags: list[dict[str, Any]] = []
        a = new.bit_count()
        order = np.array([self._at[i] for i in self._sorted], dtype=np.int64)
        n = len(order)
        if not n:
            return flags
        within = [new & self.maps[i] for i in order.tolist()]  # A ∩ each, in id order
        ab = np.array([x.bit_count() for x in within], dtype=np.int64)
        b = np.array(self.sizes, dtype=np.int64)[order]
        # pairs: A − B, else B − A, holding 1 to threshold people (ab = 0: a whole output)
        a_only, b_only = a - ab, b - ab
        first_small = (a_only > 0) & (a_only <= threshold) & (ab > 0)
        second_small = (b_only > 0) & (b_only <= threshold) & (ab > 0)
        paired = first_small | second_small
        for k in np.flatnonzero(paired).tolist():
            pattern, size = (
                ((True, False), int(a_only[k]))
                if first_small[k]
                else ((False, True), int(b_only[k]))
            )
            flags.append(flag("differencing", [self.ids[order[k]]], pattern, size, threshold))
            if len(flags) >= limit:
                return flags
        # triples: pairs (f, s), f < s in id order, in blocks of first outputs
        useful = ~paired
        touches = ab > 0
        for start in range(0, n - 1, self.BLOCK):
            firsts = np.arange(start, min(start + self.BLOCK, n - 1))
            firsts = firsts[useful[firsts]]
            if not len(firsts):
                continue
            first = np.repeat(firsts, n - 1 - firsts)
            second = np.concatenate([np.arange(f + 1, n) for f in firsts.tolist()])
            keep = useful[second] & (touches[first] | touches[second])
            first, second = first[keep], second[keep]
            if not len(first):
                continue
            bc = self._inter[order[first], order[second]]
            maybe = np.flatnonzero(self._candidates(a, b, ab, bc, first, second, threshold))
            # the exact three-way intersections, a chunk at a time in the rule's order:
            # the check stops as soon as it has its flags
            for lo in range(0, len(maybe), self.CHUNK):
                pick = maybe[lo : lo + self.CHUNK]
                done = self._exact(
                    new, within, order, a, b, ab, bc[pick], first[pick], second[pick], threshold
                )
                for region, f, s, size in done:
                    others = [self.ids[int(order[f])], self.ids[int(order[s])]]
                    flags.append(flag("tracker", others, region, size, threshold))
                    if len(flags) >= limit:
                        return flags
        return flags

    def _exact(
        self,
        new: int,
        within: list[int],
        order: np.ndarray,
        a: int,
        b: np.ndarray,
        ab: np.ndarray,
        bc: np.ndarray,
        first: np.ndarray,
        second: np.ndarray,
        threshold: int,
    ) -> list[tuple[tuple[bool, ...], int, int, int]]:
        """(region, first, second, size) of the first flaggable region of each pair, in
        order, for the pairs that have one (``tracker_flags``' rule, by arithmetic)."""
        abc = np.array(
            [
                (within[f] & self.maps[int(order[s])]).bit_count()
                for f, s in zip(first.tolist(), second.tolist(), strict=True)
            ],
            dtype=np.int64,
        )
        values = [np.ones_like(first), np.full_like(first, a), b[first], b[second], ab[first],
                  ab[second], bc]  # fmt: skip
        whole = (np.full_like(first, a), b[first], b[second])
        found = np.full(len(first), -1, dtype=np.int64)  # the first flaggable region
        sizes = np.zeros(len(first), dtype=np.int64)
        for r, (membership, coef, sign) in enumerate(REGIONS):
            size = sum(c * v for c, v in zip(coef, values, strict=True)) + sign * abc
            ok = (size > 0) & (size <= threshold) & (found < 0)
            for w, inside in zip(whole, membership, strict=True):
                if inside:
                    ok &= size != w
            found[ok] = r
            sizes[ok] = size[ok]
        return [
            (REGIONS[int(found[k])][0], int(first[k]), int(second[k]), int(sizes[k]))
            for k in np.flatnonzero(found >= 0).tolist()
        ]

    @staticmethod
    def _candidates(
        a: int,
        b: np.ndarray,
        ab: np.ndarray,
        bc: np.ndarray,
        first: np.ndarray,
        second: np.ndarray,
        threshold: int,
    ) -> np.ndarray:
        """Which pairs some region's size interval (``abc`` unknown) meets
        ``[1, threshold]``: only these need the exact three-way intersection."""
        terms = [np.ones_like(first), np.full_like(first, a), b[first], b[second], ab[first],
                 ab[second], bc]  # fmt: skip
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
        return maybe
