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
# Venn regions of (new, first, second), in disclosure_ledger._regions' order; their sizes
# by inclusion–exclusion are written out in PopulationIndex._exact
REGIONS: Final[tuple[tuple[bool, bool, bool], ...]] = (
    (True, True, True),
    (True, True, False),
    (True, False, True),
    (True, False, False),
    (False, True, True),
    (False, True, False),
    (False, False, True),
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


def _words(bitmap: int, width: int) -> np.ndarray:
    """The first ``width`` 64-bit words of a bitmap (bit i of word j is person 64 j + i),
    zero-padded: a read-only view, no copy beyond the bytes.

    >>> _words((1 << 64) | 5, 3).tolist()
    [5, 1, 0]
    """
    need = -(-bitmap.bit_length() // 64)
    raw = bitmap.to_bytes(max(need, width) * 8, "little")
    return np.frombuffer(raw, dtype="<u8")[:width]


class PopulationIndex:
    """Earlier outputs' populations (bits in a matrix), their sizes and pairwise
    intersections.

    What a check costs does not grow with what the project stored beyond what the rule
    needs: the populations are rows of one 64-bit word matrix, so a new population's
    intersection with every earlier one is one vectorised AND and popcount (not a Python
    loop over outputs); outputs are found by id in a map, the matrices grow
    geometrically (not a copy per output), the outputs' order by id is kept as they
    arrive, and pairs of earlier outputs are screened in blocks, in the rule's order,
    stopping at the ``limit``-th flag (one flag holds an output; more only fill the
    steward's list).
    """

    BLOCK = 64  # first outputs of pairs screened at once
    CHUNK = 256  # candidate pairs whose three-way intersection is counted at once
    SCRATCH = 1 << 20  # words of population rows ANDed at once (8 MB)

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.sizes: list[int] = []
        self._at: dict[str, int] = {}  # output id -> its row
        self._sorted: list[str] = []  # ids in order
        self._inter = np.zeros((0, 0), dtype=np.int64)  # capacity >= len(ids)
        self._bits = np.zeros((0, 0), dtype=np.uint64)  # row per output, word per 64 people
        self._width = 0  # words in use

    def __contains__(self, output_id: str) -> bool:
        return output_id in self._at

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def maps(self) -> list[int]:
        """The populations as bitmaps (Python integers), in the order they were added."""
        return [
            int.from_bytes(self._bits[r, : self._width].tobytes(), "little")
            for r in range(len(self.ids))
        ]

    def _fit(self, rows: int, width: int) -> None:
        """Room for ``rows`` populations of ``width`` words (grown by half again, so an
        output costs amortised O(its row), and at most a third of the room is unused)."""
        have_rows, have_width = self._bits.shape
        if rows <= have_rows and width <= have_width:
            return
        new_rows = have_rows if rows <= have_rows else max(8, rows + rows // 2)
        new_width = have_width if width <= have_width else width + width // 4
        grown = np.zeros((new_rows, new_width), dtype=np.uint64)
        grown[: len(self.ids), : self._width] = self._bits[: len(self.ids), : self._width]
        self._bits = grown

    def _overlaps(self, words: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """|population ∩ each row's| (all rows, or ``rows``), a block of rows at a time."""
        width = min(len(words), self._width)
        count = len(self.ids) if rows is None else len(rows)
        out = np.zeros(count, dtype=np.int64)
        step = max(1, self.SCRATCH // max(1, width))
        for lo in range(0, count, step):
            hi = min(lo + step, count)
            picked = self._bits[lo:hi] if rows is None else self._bits[rows[lo:hi]]
            block = picked[:, :width] & words[:width]
            out[lo:hi] = np.bitwise_count(block).sum(axis=1, dtype=np.int64)
        return out

    def add(self, output_id: str, bitmap: int) -> None:
        if output_id in self._at:
            raise ValueError(f"{output_id} is already in the index")
        n = len(self.ids)
        if n + 1 > len(self._inter):  # grow by doubling: amortised O(n) per output
            grown = np.zeros((max(8, 2 * (n + 1)),) * 2, dtype=np.int64)
            grown[:n, :n] = self._inter[:n, :n]
            self._inter = grown
        width = max(self._width, -(-bitmap.bit_length() // 64))
        self._fit(n + 1, width)
        words = _words(bitmap, width)
        row = self._overlaps(words)
        self._inter[n, :n] = row
        self._inter[:n, n] = row
        self._inter[n, n] = bitmap.bit_count()
        self._bits[n, :width] = words
        self._width = width
        self._at[output_id] = n
        bisect.insort(self._sorted, output_id)
        self.ids.append(output_id)
        self.sizes.append(bitmap.bit_count())

    def near(self, new: int, threshold: int) -> list[tuple[str, int]]:
        """(output id, people in or out) of the earlier outputs whose populations differ
        from ``new`` by at most ``threshold`` people, in the order they were added."""
        size = new.bit_count()
        rows = np.flatnonzero(np.abs(np.asarray(self.sizes, dtype=np.int64) - size) <= threshold)
        if not len(rows):
            return []
        words = _words(new, self._width)
        # |A △ B| = |A| + |B| − 2|A ∩ B| (people beyond the width are in A alone)
        moved = (
            size + np.asarray(self.sizes, dtype=np.int64)[rows] - 2 * self._overlaps(words, rows)
        )
        return [
            (self.ids[r], int(m))
            for r, m in zip(rows.tolist(), moved.tolist(), strict=True)
            if m <= threshold
        ]

    def flags(self, new: int, *, threshold: int, limit: int = MAX_FLAGS) -> list[dict[str, Any]]:
        """The flags ``tracker_flags(new, {earlier outputs}, threshold=..., limit=...)``
        gives (the same ones, in the same order)."""
        flags: list[dict[str, Any]] = []
        a = new.bit_count()
        order = np.array([self._at[i] for i in self._sorted], dtype=np.int64)
        n = len(order)
        if not n:
            return flags
        words = _words(new, self._width)
        ab = self._overlaps(words)[order]  # |A ∩ each|, in id order
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
            # every (f, s) with s > f: s runs from f + 1 to n − 1 within each f's run
            runs = n - 1 - firsts
            first = np.repeat(firsts, runs)
            offsets = np.repeat(np.cumsum(runs) - runs, runs)
            second = np.arange(len(first)) - offsets + first + 1
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
                    words, order, a, b, ab, bc[pick], first[pick], second[pick], threshold
                )
                for region, f, s, size in done:
                    others = [self.ids[int(order[f])], self.ids[int(order[s])]]
                    flags.append(flag("tracker", others, region, size, threshold))
                    if len(flags) >= limit:
                        return flags
        return flags

    def _exact(
        self,
        words: np.ndarray,
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
        width = min(len(words), self._width)
        abc = np.zeros(len(first), dtype=np.int64)
        step = max(1, self.SCRATCH // max(1, width))
        for lo in range(0, len(first), step):
            f, s = order[first[lo : lo + step]], order[second[lo : lo + step]]
            block = self._bits[f, :width] & self._bits[s, :width]
            block &= words[:width]
            abc[lo : lo + step] = np.bitwise_count(block).sum(axis=1, dtype=np.int64)
        x, y, z, k = ab[first], ab[second], bc, abc
        b1, b2 = b[first], b[second]
        # each region's size, in REGIONS' order, and whether it is a whole output (a
        # region inside an output is that output only if their sizes are equal)
        sizes = np.stack([k, x - k, y - k, a - x - y + k, z - k, b1 - x - z + k, b2 - y - z + k])
        ok = (sizes > 0) & (sizes <= threshold)
        for r, membership in enumerate(REGIONS):
            for whole, inside in zip((a, b1, b2), membership, strict=True):
                if inside:
                    ok[r] &= sizes[r] != whole
        hit = np.flatnonzero(ok.any(axis=0))
        found = ok[:, hit].argmax(axis=0)  # the first flaggable region of each
        return [
            (REGIONS[int(r)], int(first[h]), int(second[h]), int(sizes[r, h]))
            for r, h in zip(found.tolist(), hit.tolist(), strict=True)
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
        ``[1, threshold]``: only these need the exact three-way intersection.

        With ``x = |A∩B|``, ``y = |A∩C|``, ``z = |B∩C|`` and ``k = |A∩B∩C|`` in
        ``[lo, hi]``, the regions are ``k``, ``x − k``, ``y − k``, ``z − k`` and
        ``a − x − y + k``, ``|B| − x − z + k``, ``|C| − y − z + k`` (``REGIONS``),
        written out: a few dozen array operations per block of pairs.
        """
        x, y, z = ab[first], ab[second], bc
        b1, b2 = b[first], b[second]
        lo = np.maximum(np.maximum(x + y - a, x + z - b1), np.maximum(y + z - b2, 0))
        hi = np.minimum(np.minimum(x, y), z)
        # k itself, then the regions that fall as k grows: [base − hi, base − lo]
        maybe: np.ndarray = (hi >= 1) & (lo <= threshold)
        for base in (x, y, z):
            maybe |= (base - hi <= threshold) & (base - lo >= 1)
        # and those that grow with k: [base + lo, base + hi]
        for base in (a - x - y, b1 - x - z, b2 - y - z):
            maybe |= (base + lo <= threshold) & (base + hi >= 1)
        return maybe
