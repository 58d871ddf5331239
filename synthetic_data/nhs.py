"""NHS numbers for synthetic people, drawn only from ranges that are never issued.

An NHS number is nine digits and a Modulus-11 check digit. Weights 10..2 multiply the
nine digits; the check digit is ``11 - (sum mod 11)``, with 11 read as 0, and a sum
giving 10 makes the nine digits unusable.

Two ranges are offered:

* ``test`` (default): 999 000 0000 - 999 999 9999, the range reserved for testing.
* ``synthetic``: 900 000 0000 - 999 999 9999, which NHS England never issues (the
  ``nhs-number`` package's ``REGION_SYNTHETIC``). It exists because the test range holds
  only 909,091 valid numbers, too few for a million-patient benchmark.

Numbers are handed out by index so that generation is vectorised and chunkable: the
nine-digit stems are grouped in tens (same first eight digits); each group holds nine or
ten valid numbers, of which the first nine are used, so index ``i`` lives in group
``i // 9``. Real and dummy populations take alternate groups (even and odd), so they are
disjoint whatever their sizes, and a fixed affine bijection scrambles the group order so
numbers do not look sequential.

>>> check_digits(np.array([999000001]))
array([8])
>>> number_for_index(np.array([0]), population=0, nhs_range="test")[0] // 10**9
9
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt

NhsRange = Literal["test", "synthetic"]

# first nine-digit stem and number of stems of each range
_RANGES: dict[str, tuple[int, int]] = {
    "test": (999_000_000, 1_000_000),
    "synthetic": (900_000_000, 100_000_000),
}
_WEIGHTS = np.array([10, 9, 8, 7, 6, 5, 4, 3, 2], dtype=np.int64)
_NUMBERS_PER_GROUP = 9
# multiplier of the group bijection; must be coprime with every half-group count used
_SCRAMBLE_MULTIPLIER = 7_368_787  # prime, does not divide 50_000 or 5_000_000
_SCRAMBLE_OFFSET = 12_345


def capacity(nhs_range: NhsRange) -> int:
    """How many distinct numbers one population (real or dummy) can take from a range.

    >>> capacity("test")
    450000
    """
    _, stems = _RANGES[nhs_range]
    return (stems // 10 // 2) * _NUMBERS_PER_GROUP


def check_digits(stems: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Modulus-11 check digit of nine-digit stems; 10 marks a stem that cannot be used."""
    digits = (stems[:, None] // (10 ** np.arange(8, -1, -1, dtype=np.int64))) % 10
    total = digits @ _WEIGHTS
    check = 11 - total % 11
    return np.where(check == 11, 0, check)


def is_valid(numbers: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
    """Vectorised Modulus-11 validity of ten-digit NHS numbers."""
    check = check_digits(numbers // 10)
    valid = (check != 10) & (check == numbers % 10) & (numbers >= 10**9) & (numbers < 10**10)
    return np.asarray(valid, dtype=np.bool_)


def number_for_index(
    index: npt.NDArray[np.int64], *, population: int, nhs_range: NhsRange = "test"
) -> npt.NDArray[np.int64]:
    """The NHS number of person ``index`` of a population (0 real, 1 dummy).

    Raises ``ValueError`` when the index is beyond the range's capacity.
    """
    if population not in (0, 1):
        raise ValueError("population must be 0 (real) or 1 (dummy)")
    index = np.asarray(index, dtype=np.int64)
    cap = capacity(nhs_range)
    if index.size and (index.min() < 0 or index.max() >= cap):
        raise ValueError(
            f"the {nhs_range!r} NHS number range holds {cap:,} numbers per population; "
            f"asked for index {int(index.max()):,}"
        )
    first_stem, stems = _RANGES[nhs_range]
    half_groups = stems // 10 // 2
    k = index // _NUMBERS_PER_GROUP
    j = index % _NUMBERS_PER_GROUP
    k = (k * _SCRAMBLE_MULTIPLIER + _SCRAMBLE_OFFSET) % half_groups
    group = 2 * k + population
    candidates = first_stem + group[:, None] * 10 + np.arange(10, dtype=np.int64)
    check = check_digits(candidates.ravel()).reshape(candidates.shape)
    valid = check != 10
    # position of the j-th valid candidate in each group
    rank = np.cumsum(valid, axis=1) - 1
    pick = np.argmax(valid & (rank == j[:, None]), axis=1)
    rows = np.arange(index.size)
    return np.asarray(candidates[rows, pick] * 10 + check[rows, pick], dtype=np.int64)
