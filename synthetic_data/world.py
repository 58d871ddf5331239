"""The fixed world a population lives in: GP practices, hospitals, name and street pools.

Built once per run from the seed (never per patient) so that every chunk shares it and
generation stays vectorised: a person's name or street is an index into these pools.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from faker import Faker
from faker.providers.person import en_GB as faker_person

from synthetic_data import reference as ref

# faker's en_GB street suffixes are US-flavoured ("Canyon", "Burgs"); British ones:
_STREET_SUFFIXES = (
    "Road", "Street", "Lane", "Avenue", "Close", "Drive", "Way", "Grove", "Crescent",
    "Gardens", "Place", "Court", "Walk", "Terrace", "Rise", "Park", "Green", "Hill",
)  # fmt: skip
_STREETS_IN_POOL = 4_000


@dataclass(frozen=True)
class NamePool:
    names: tuple[str, ...]
    weights: npt.NDArray[np.float64]


@dataclass(frozen=True)
class World:
    organisation_codes: tuple[str, ...]
    organisation_names: tuple[str, ...]
    organisation_kinds: tuple[str, ...]
    organisation_authority: npt.NDArray[np.int64]
    # practice organisation indices per authority, with list-size weights
    practices: tuple[npt.NDArray[np.int64], ...]
    practice_weights: tuple[npt.NDArray[np.float64], ...]
    trust_offset: int
    female_names: NamePool
    male_names: NamePool
    family_names: NamePool
    streets: tuple[str, ...]
    postcode_districts: tuple[str, ...]
    districts_by_authority: tuple[npt.NDArray[np.int64], ...]
    inward_codes: tuple[str, ...]


def _pool(names: Sequence[str] | dict[str, float]) -> NamePool:
    if isinstance(names, dict):
        keys = tuple(names)
        weights = np.array([names[k] for k in keys], dtype=np.float64)
    else:
        keys = tuple(dict.fromkeys(names))
        weights = np.ones(len(keys))
    return NamePool(keys, weights / weights.sum())


def build_world(seed: int) -> World:
    rng = np.random.default_rng([seed, 7])
    codes: list[str] = []
    names: list[str] = []
    kinds: list[str] = []
    authority: list[int] = []
    practices: list[npt.NDArray[np.int64]] = []
    weights: list[npt.NDArray[np.float64]] = []
    fake = Faker("en_GB")
    fake.seed_instance(seed)
    for la, count in enumerate(ref.PRACTICES_PER_AUTHORITY):
        first = len(codes)
        for i in range(count):
            # West Midlands practice codes start with M (ODS); numbered per authority
            codes.append(f"M{85 + la}{i + 1:03d}")
            names.append(
                f"{fake.last_name()} {rng.choice(['Medical Centre', 'Surgery', 'Health Centre'])}"
            )
            kinds.append("gp_practice")
            authority.append(la)
        practices.append(np.arange(first, len(codes), dtype=np.int64))
        sizes = rng.lognormal(mean=0.0, sigma=0.5, size=count)
        weights.append(sizes / sizes.sum())
    trust_offset = len(codes)
    for code, name, la_name in ref.ACUTE_TRUSTS:
        codes.append(code)
        names.append(name)
        kinds.append("acute_trust")
        authority.append(ref.LOCAL_AUTHORITIES.index(la_name))

    street_stems = rng.choice(np.array(list(faker_person.Provider.last_names)), _STREETS_IN_POOL)
    suffixes = rng.choice(np.array(_STREET_SUFFIXES), _STREETS_IN_POOL)
    streets = tuple(sorted({f"{a} {b}" for a, b in zip(street_stems, suffixes, strict=True)}))

    districts: list[str] = []
    by_la: list[npt.NDArray[np.int64]] = []
    for la_name in ref.LOCAL_AUTHORITIES:
        idx = []
        for d in ref.POSTCODE_DISTRICTS[la_name]:
            if d not in districts:
                districts.append(d)
            idx.append(districts.index(d))
        by_la.append(np.array(idx, dtype=np.int64))
    letters = ref.INWARD_LETTERS
    inward = tuple(f"{n}{a}{b}" for n in range(10) for a in letters for b in letters)

    return World(
        organisation_codes=tuple(codes),
        organisation_names=tuple(names),
        organisation_kinds=tuple(kinds),
        organisation_authority=np.array(authority, dtype=np.int64),
        practices=tuple(practices),
        practice_weights=tuple(weights),
        trust_offset=trust_offset,
        female_names=_pool(faker_person.Provider.first_names_female),
        male_names=_pool(faker_person.Provider.first_names_male),
        family_names=_pool(faker_person.Provider.last_names),
        streets=streets,
        postcode_districts=tuple(districts),
        districts_by_authority=tuple(by_la),
        inward_codes=inward,
    )
