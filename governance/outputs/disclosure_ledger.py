"""The disclosure ledger: every exact output's population, checked for trackers.

Each exact output describes a population (the people its FROM and WHERE select). Counts
of several outputs over the same base population can be added and subtracted: with
``A`` = everyone with diabetes, ``B`` = the same born before 1950 and ``C`` = the same
in practice X, the Venn regions of A, B and C (``A − B − C``, ``A ∩ B − C`` ...) follow
from a few more counts, and a region of one person is that person (a *tracker*). So the
ledger flags, for a new output and every one or two earlier outputs of the project, any
region of their Venn diagram holding from 1 to ``threshold`` people (the project's own
disclosure threshold): pairs (differencing) and triples (trackers). A region that is a
whole output is left to that output's own redaction. The steward sees the flags beside
the output.

Populations are files of pseudonymous person keys (``<output>.population.parquet``),
written under a temporary name, fsynced and renamed, so a crash never leaves a
half-written population; ``sweep_partials`` removes what a killed process left, once,
when the server starts. In memory they are rows of a bit matrix in a
``PopulationIndex``, which finds the same flags as ``tracker_flags`` (the rule, stated
on sets, on Python integers as bitmaps) by arithmetic on sizes and pairwise
intersections, so a project with a thousand outputs is checked in milliseconds. Each
process reads a stored output's population once: the store's rows after the last one it
read (``seen``).

>>> def bitmap(people): return sum(1 << p for p in people)
>>> a, b = bitmap(range(10)), bitmap([1, 2, 3, 4, 5, 10, 11, 12])
>>> c = bitmap([6, 7, 8, 9, 13, 14, 15])
>>> [(f["rule"], f["region"]) for f in tracker_flags(a, {"o-b": b, "o-c": c}, threshold=1)]
[('tracker', 'this output and not o-b and not o-c')]
>>> tracker_flags(bitmap(range(9)), {"o-a": a}, threshold=1)[0]["rule"]
'differencing'
"""

from __future__ import annotations

import itertools
import os
import re
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq

from governance.outputs.population_index import MAX_FLAGS, PopulationIndex
from governance.outputs.population_index import flag as _flag

SUFFIX: Final = ".population.parquet"
ROW_KEYS: Final = ".rowkeys.parquet"  # hash(person, rows) of each person, beside it
PART: Final = "~"  # an aggregate's own population: <output>~<k>


def _regions(sets: Sequence[int]) -> list[tuple[tuple[bool, ...], int]]:
    """(membership pattern, bitmap) of every Venn region of ``sets`` inside their union,
    the first set's membership first."""
    union = 0
    for s in sets:
        union |= s
    out = []
    for pattern in itertools.product((True, False), repeat=len(sets)):
        if not any(pattern):
            continue
        region = union
        for inside, s in zip(pattern, sets, strict=True):
            region &= s if inside else ~s
        out.append((pattern, region))
    return out


def tracker_flags(
    new: int, earlier: Mapping[str, int], *, threshold: int, limit: int = MAX_FLAGS
) -> list[dict[str, Any]]:
    """Regions of the new population with one or two earlier ones that isolate 1 to
    ``threshold`` people: every pair, then triples, the first ``limit`` flags (one is
    enough to hold an output; the steward is told when there are more). Pure:
    populations are bitmaps (bit i = person i)."""
    flags: list[dict[str, Any]] = []
    ids = sorted(earlier)
    paired: set[str] = set()
    for other in ids:
        if _small(new, earlier[other], threshold) is not None:
            pattern, size = _small(new, earlier[other], threshold) or ((), 0)
            flags.append(_flag("differencing", [other], pattern, size, threshold))
            paired.add(other)
    if len(flags) >= limit:
        return flags[:limit]
    for first, second in itertools.combinations(ids, 2):
        if first in paired or second in paired:
            continue  # already flagged as a pair
        if not (new & earlier[first] or new & earlier[second]):
            continue  # disjoint from both: nothing new to combine
        sets = [new, earlier[first], earlier[second]]
        for pattern, region in _regions(sets):
            size = region.bit_count()
            if 0 < size <= threshold and region not in sets:
                flags.append(_flag("tracker", [first, second], pattern, size, threshold))
                break
        if len(flags) >= limit:
            break
    return flags


def _small(a: int, b: int, threshold: int) -> tuple[tuple[bool, ...], int] | None:
    """A difference of two populations holding 1 to ``threshold`` people, if any."""
    for pattern, region in (((True, False), a & ~b), ((False, True), b & ~a)):
        size = region.bit_count()
        # a region that is a whole output is that output's own count: SDC's to redact
        if 0 < size <= threshold and region not in (a, b):
            return pattern, size
    return None


def unique_keys(people: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """Person keys sorted, each once (a sort and a comparison: ``np.unique`` hashes,
    several times slower on tens of thousands of keys).

    >>> unique_keys([5, -3, 5, 2]).tolist()
    [-3, 2, 5]
    """
    keys = np.asarray(people, dtype=np.int64)
    if len(keys) < 2:
        return keys.copy()
    if not (keys[1:] >= keys[:-1]).all():  # a kept population is already in order
        keys = np.sort(keys)
    return keys[np.concatenate(([True], keys[1:] != keys[:-1]))]


class _Bits:
    """Bit positions of a project's people, given in the order they first appear.

    A population becomes a Python integer with one bit per person; the keys are looked
    up in a sorted array and the bits set in a byte array, so a population of 100,000
    people costs milliseconds (one ``|=`` per person on a growing integer cost seconds).

    >>> bits = _Bits()
    >>> bin(bits.bitmap(np.array([70, 30, 70])))  # 30 and 70: bits 0 and 1
    '0b11'
    >>> bin(bits.bitmap(np.array([50, 30])))  # 30 keeps bit 0; 50 is new: bit 2
    '0b101'
    """

    def __init__(self) -> None:
        self.keys = np.empty(0, dtype=np.int64)  # sorted person keys
        self.positions = np.empty(0, dtype=np.int64)  # the bit of each key

    def bitmap(self, people: npt.NDArray[np.int64]) -> int:
        people = unique_keys(people)
        at = np.searchsorted(self.keys, people)
        known = at < len(self.keys)
        known[known] = self.keys[at[known]] == people[known]
        fresh = people[~known]
        if len(fresh):  # merged into the sorted keys (both are sorted: no sort needed)
            first = len(self.keys)
            where = np.searchsorted(self.keys, fresh)
            self.keys = np.insert(self.keys, where, fresh)
            self.positions = np.insert(
                self.positions, where, np.arange(first, first + len(fresh), dtype=np.int64)
            )
        if not len(people):
            return 0
        mine = self.positions[np.searchsorted(self.keys, people)]
        flags = np.zeros(int(mine.max()) + 1, dtype=bool)
        flags[mine] = True
        return int.from_bytes(np.packbits(flags, bitorder="little").tobytes(), "little")


class DisclosureLedger:
    """Population files under ``outputs/<project>/`` and their bitmaps, per process."""

    def __init__(self, outputs_dir: Path) -> None:
        self.outputs_dir = outputs_dir
        self._lock = threading.Lock()
        self._bits: dict[str, _Bits] = {}  # project -> its people's bit positions
        self._index: dict[str, PopulationIndex] = {}  # project -> earlier populations
        self._seen: dict[str, int] = {}  # project -> the last stored output read (rowid)

    def index(self, project_id: str) -> PopulationIndex:
        """The project's populations as checked so far in this process."""
        with self._lock:
            return self._index.setdefault(project_id, PopulationIndex())

    def seen(self, project_id: str) -> int:
        """The store's row id of the last of the project's outputs this process has read:
        only later ones need reading (outputs are never deleted, so row ids only grow)."""
        with self._lock:
            return self._seen.get(project_id, 0)

    def path(self, project_id: str, output_id: str) -> Path:
        return self.outputs_dir / project_id / f"{output_id}{SUFFIX}"

    def row_keys_path(self, project_id: str, output_id: str) -> Path:
        return self.outputs_dir / project_id / f"{output_id}{ROW_KEYS}"

    def write(
        self,
        project_id: str,
        output_id: str,
        population: npt.ArrayLike,
        row_keys: npt.ArrayLike | None = None,
    ) -> Path:
        """The population file (and its row keys' beside it, written first),
        atomically (OSError if it cannot be written)."""
        path = self.path(project_id, output_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        if row_keys is not None:
            _write_keys(self.row_keys_path(project_id, output_id), row_keys)
        _write_keys(path, population)
        return path

    def remove(self, project_id: str, output_id: str) -> None:
        """No population without its output: its files go (its aggregates' too)."""
        for part in [output_id, *self._parts(project_id, output_id)]:
            self.path(project_id, part).unlink(missing_ok=True)
            self.row_keys_path(project_id, part).unlink(missing_ok=True)

    def _parts(self, project_id: str, output_id: str) -> list[str]:
        """The ids of an output's own aggregates' populations stored beside its own
        (``<output>~<k>``: people an aggregate skips, a NULL value, are not in them)."""
        folder = self.outputs_dir / project_id
        return sorted(
            f.name.removesuffix(SUFFIX) for f in folder.glob(f"{output_id}{PART}*{SUFFIX}")
        )

    def _bitmap(self, project_id: str, people: npt.ArrayLike) -> int:
        """The population as a bitmap over the project's people (``_Bits``)."""
        bits = self._bits.setdefault(project_id, _Bits())
        return bits.bitmap(np.asarray(people, dtype=np.int64))

    def check(
        self,
        project_id: str,
        output_id: str,
        population: npt.ArrayLike,
        *,
        stored: Sequence[str],
        stored_up_to: int,
        threshold: int,
        row_keys: npt.ArrayLike | None = None,
        parts: Sequence[tuple[str, npt.ArrayLike, npt.ArrayLike]] = (),
    ) -> list[dict[str, Any]]:
        """Flags for a new output against the project's stored outputs: differencing and
        trackers over people, then, with ``row_keys``, differencing over rows.

        Differencing over rows: an earlier output whose people are nearly this one's (at
        most ``threshold`` people in or out) and whose people's row counts differ for 1
        to ``threshold`` people. Their counts then differ by those people's rows alone: a
        red team read a decile from two outputs over the same 1,548 people, one of which
        added a chosen person's other records (4,155 rows against 4,125). The earlier
        outputs near enough are found from the index's bitmaps; only their row-key files
        are read, so a project of ordinary outputs pays almost nothing.

        ``stored`` are the project's outputs stored since ``seen`` (this process's
        mark), up to row ``stored_up_to``: each earlier output is read once per process.
        ``parts``: (id, people, row keys) of the output's aggregates' own populations
        where they differ from the whole (written beside it as ``<output>~<k>``): each
        is checked, and flags name the output, whichever of its parts they concern.
        """
        with self._lock:
            index = self._index.setdefault(project_id, PopulationIndex())
            # only outputs this process has not read yet (another worker's, or a
            # restart's) are read: their population files are written before their
            # rows, so a stored output without a file never gets one (failed, a model)
            for other_id in stored:
                if other_id in index or other_id == output_id:
                    continue
                for part in [other_id, *self._parts(project_id, other_id)]:
                    other = self.path(project_id, part)
                    if other.exists() and part not in index:
                        people = pq.read_table(other).column("person_id").to_numpy()
                        index.add(part, self._bitmap(project_id, people))
            self._seen[project_id] = max(self._seen.get(project_id, 0), stored_up_to)
            mine = [(output_id, population, row_keys), *parts]
            bitmaps = [self._bitmap(project_id, people) for _, people, _ in mine]
            flags: list[dict[str, Any]] = []
            near: list[tuple[str, int, npt.ArrayLike | None]] = []
            for (_, _, keys), bitmap in zip(mine, bitmaps, strict=True):
                flags += index.flags(bitmap, threshold=threshold)
                near += [(other, moved, keys) for other, moved in index.near(bitmap, threshold)]
            for (part_id, _, _), bitmap in zip(mine, bitmaps, strict=True):
                index.add(part_id, bitmap)  # after all are checked: never against itself
        flags = _by_output(flags)
        if row_keys is None:
            return flags[:MAX_FLAGS]
        paired = {f["with_output"] for f in flags if f["rule"] == "differencing"}
        for other_id, moved, keys in near:
            if len(flags) >= MAX_FLAGS or keys is None:
                break
            if _base(other_id) in paired:  # flagged already: its people differ by few
                continue
            path = self.row_keys_path(project_id, other_id)
            if not path.exists():  # an output stored before row keys were kept
                continue
            theirs = pq.read_table(path).column(0).to_numpy()
            differ = len(np.setdiff1d(unique_keys(keys), theirs, assume_unique=True))
            other_id = _base(other_id)
            if 1 <= differ <= threshold:
                paired.add(other_id)
                flags.append(
                    {
                        "rule": "differencing",
                        "with_output": other_id,
                        "with_outputs": [other_id],
                        "people_in_difference": differ,
                        "region": f"this output and {other_id}: the same people but "
                        f"{differ} give other rows",
                        "reason": f"the same people as {other_id} ({moved} in or out) but "
                        f"{differ} of them give other rows ({threshold} or fewer): the "
                        "counts' difference is those people's rows",
                    }
                )
        return flags


def _base(part_id: str) -> str:
    """The output an aggregate's population belongs to."""
    return part_id.split(PART, 1)[0]


def _by_output(flags: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Flags named by output (not by an aggregate's population), each once, in order."""
    out: list[dict[str, Any]] = []
    seen: set[tuple[Any, ...]] = set()
    for f in flags:
        others = [_base(o) for o in f["with_outputs"]]
        if len(set(others)) < len(others):
            continue  # one earlier output's own figures beside each other: its own SDC's
        named = {
            **f,
            "with_output": others[0],
            "with_outputs": others,
            "region": _renamed(f["region"]),
            "reason": _renamed(f["reason"]),
        }
        key = (named["rule"], tuple(others), named["region"], named["people_in_difference"])
        if key not in seen:
            seen.add(key)
            out.append(named)
    return out


def _renamed(text: str) -> str:
    return re.sub(rf"(o-[0-9a-f]+){re.escape(PART)}[0-9]+", r"\1", text)


def _write_keys(path: Path, keys: npt.ArrayLike) -> None:
    """Sorted unique keys as a one-column Parquet file, fsynced and renamed into place."""
    partial = path.with_name(f".{path.name}.partial")
    try:
        table = pa.table({"person_id": pa.array(unique_keys(keys), pa.int64())})
        pq.write_table(table, partial, use_dictionary=False)  # unique keys: no repeats
        with open(partial, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(partial, path)
    except OSError:
        partial.unlink(missing_ok=True)
        raise


def sweep_partials(outputs_dir: Path, *, older_than_s: float) -> int:
    """Remove half-written population files a killed process left (older than
    ``older_than_s``, so a running query's file is never touched); the number removed."""
    cutoff = time.time() - older_than_s
    removed = 0
    for partial in outputs_dir.glob("*/.*.partial"):
        try:
            if partial.stat().st_mtime < cutoff:
                partial.unlink()
                removed += 1
        except FileNotFoundError:
            continue
    return removed
