"""A trial feasibility spec: a small, fixed shape, read strictly (pure, no I/O).

A spec is TOML or JSON with these keys and nothing else::

    title = "Adults with type 2 diabetes on metformin, HbA1c 58-97"   # optional
    as_of = 2024-12-31            # the date ages and windows count from (default today)
    seen_within_days = 365        # "seen in the last year": any encounter in the window

    [population]                  # optional
    sex = ["F", "M"]              # F and/or M
    age = [40, 75]                # inclusive, in whole years at as_of

    [[include]]                   # every criterion must hold (AND); at most 6
    kind = "condition"            # condition | medication | lab
    codelist = "type2-diabetes-snomed"   # or codes = ["44054006", ...]
                                  # (a stored spec has both: they must agree)
    within_days = 3650            # optional: recorded in the last N days before as_of
                                  # (or from = / to = dates, not both)

    [[include]]
    kind = "lab"
    codes = ["999791000000106"]
    min = 58                      # a lab criterion needs min and/or max (its units)
    max = 97
    from = 2023-01-01

    [[exclude]]                   # no exclusion may hold; at most 6
    kind = "condition"
    codelist = "ckd-snomed"

Anything else (an unknown key, a wrong type, an empty code list, a date window the wrong
way round, an unknown codelist) is refused with a :class:`SpecError` naming the key.

>>> spec = parse_spec({"include": [{"kind": "condition", "codes": ["44054006"]}]},
...                   today=dt.date(2025, 1, 1))
>>> spec.as_of.isoformat(), spec.seen_within_days, spec.include[0].table
('2025-01-01', 365, 'conditions')
>>> parse_spec({"include": [], "colour": "red"})  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
governance.feasibility.spec.SpecError: unknown key 'colour' in the spec (allowed: as_of, ...)
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import tomllib
from dataclasses import dataclass
from typing import Any, Final

from governance import codelists
from governance.errors import InvalidRequest

MAX_CRITERIA: Final = 6  # per list (include, exclude): a small fixed shape
MAX_CODES: Final = 200
MAX_SPEC_BYTES: Final = 20_000
MAX_WINDOW_DAYS: Final = 36_500
CODE: Final = re.compile(r"[A-Za-z0-9.]{1,40}")
SEXES: Final = ("F", "M")
# kind -> (table, date column)
KINDS: Final = {
    "condition": ("conditions", "onset_date"),
    "medication": ("medications", "start_date"),
    "lab": ("observations", "observed_date"),
}
_TOP: Final = ("as_of", "exclude", "include", "population", "seen_within_days", "title")
_POPULATION: Final = ("age", "sex")
_CRITERION: Final = ("codelist", "codes", "from", "kind", "max", "min", "to", "within_days")


class SpecError(InvalidRequest):
    """A feasibility spec that is not of the fixed shape (the message names the key)."""

    code = "invalid_spec"


@dataclass(frozen=True)
class Criterion:
    kind: str
    codes: tuple[str, ...]
    codelist: str | None = None
    since: dt.date | None = None  # inclusive
    until: dt.date | None = None  # inclusive
    low: float | None = None  # lab values, inclusive
    high: float | None = None

    @property
    def table(self) -> str:
        return KINDS[self.kind][0]

    @property
    def date_column(self) -> str:
        return KINDS[self.kind][1]


@dataclass(frozen=True)
class FeasibilitySpec:
    as_of: dt.date
    seen_within_days: int = 365
    title: str | None = None
    sexes: tuple[str, ...] = ()
    age: tuple[int, int] | None = None
    include: tuple[Criterion, ...] = ()
    exclude: tuple[Criterion, ...] = ()

    def canonical(self) -> dict[str, Any]:
        """The spec as stored with its answer: every default filled in, codelists expanded."""

        def one(c: Criterion) -> dict[str, Any]:
            out: dict[str, Any] = {"kind": c.kind, "codes": list(c.codes)}
            for key, value in (
                ("codelist", c.codelist),
                ("from", c.since.isoformat() if c.since else None),
                ("to", c.until.isoformat() if c.until else None),
                ("min", c.low),
                ("max", c.high),
            ):
                if value is not None:
                    out[key] = value
            return out

        population: dict[str, Any] = {}
        if self.sexes:
            population["sex"] = list(self.sexes)
        if self.age:
            population["age"] = list(self.age)
        out: dict[str, Any] = {
            "as_of": self.as_of.isoformat(),
            "seen_within_days": self.seen_within_days,
            "population": population,
            "include": [one(c) for c in self.include],
            "exclude": [one(c) for c in self.exclude],
        }
        if self.title:
            out["title"] = self.title
        return out


def load_spec(
    text: str, *, fmt: str | None = None, today: dt.date | None = None
) -> FeasibilitySpec:
    """Parse spec text: ``fmt`` "toml" or "json" (guessed from the first character if None)."""
    if len(text.encode()) > MAX_SPEC_BYTES:
        raise SpecError(f"a spec is at most {MAX_SPEC_BYTES:,} bytes")
    fmt = fmt or ("json" if text.lstrip().startswith("{") else "toml")
    try:
        if fmt == "json":
            data = json.loads(text)
        elif fmt == "toml":
            data = tomllib.loads(text)
        else:
            raise SpecError("a spec is TOML or JSON")
    except (ValueError, RecursionError) as exc:
        # the parsers' messages quote only the spec's own text (no data)
        raise SpecError(f"the spec is not valid {fmt.upper()}: {exc}") from None
    return parse_spec(data, today=today)


def parse_spec(data: Any, *, today: dt.date | None = None) -> FeasibilitySpec:
    """Check a parsed spec (a dict from TOML or JSON) against the fixed shape."""
    if not isinstance(data, dict):
        raise SpecError("a spec is a table (TOML) or an object (JSON)")
    _known(data, _TOP, "the spec")
    as_of = _date(data.get("as_of"), "as_of") if "as_of" in data else today or dt.date.today()
    seen = _int(data.get("seen_within_days", 365), "seen_within_days", 1, MAX_WINDOW_DAYS)
    title = data.get("title")
    if title is not None and (not isinstance(title, str) or not 0 < len(title.strip()) <= 200):
        raise SpecError("title: text of 1 to 200 characters")
    population = data.get("population", {})
    if not isinstance(population, dict):
        raise SpecError("population: a table with sex and/or age")
    _known(population, _POPULATION, "population")
    sexes: tuple[str, ...] = ()
    if "sex" in population:
        sex = population["sex"]
        if isinstance(sex, str):
            sex = [sex]
        if (
            not isinstance(sex, list)
            or not sex
            or any(s not in SEXES for s in sex)
            or len(set(sex)) != len(sex)
        ):
            raise SpecError('population.sex: "F", "M" or both, each once')
        sexes = tuple(sorted(sex))
    age: tuple[int, int] | None = None
    if "age" in population:
        pair = population["age"]
        if not isinstance(pair, list) or len(pair) != 2:
            raise SpecError("population.age: [youngest, oldest] in whole years")
        lo = _int(pair[0], "population.age", 0, 120)
        hi = _int(pair[1], "population.age", 0, 120)
        if lo > hi:
            raise SpecError("population.age: the youngest age comes first")
        age = (lo, hi)
    include = _criteria(data.get("include", []), "include", as_of)
    exclude = _criteria(data.get("exclude", []), "exclude", as_of)
    if not include and not sexes and age is None:
        raise SpecError("name at least one inclusion criterion, a sex or an age range")
    return FeasibilitySpec(
        as_of=as_of,
        seen_within_days=seen,
        title=title.strip() if isinstance(title, str) else None,
        sexes=sexes,
        age=age,
        include=include,
        exclude=exclude,
    )


def _criteria(items: Any, where: str, as_of: dt.date) -> tuple[Criterion, ...]:
    if not isinstance(items, list):
        raise SpecError(f"{where}: a list of criteria ([[{where}]] tables in TOML)")
    if len(items) > MAX_CRITERIA:
        raise SpecError(f"{where}: at most {MAX_CRITERIA} criteria")
    return tuple(_criterion(item, f"{where}[{n}]", as_of) for n, item in enumerate(items))


def _criterion(item: Any, where: str, as_of: dt.date) -> Criterion:
    if not isinstance(item, dict):
        raise SpecError(f"{where}: a table with kind and codes or codelist")
    _known(item, _CRITERION, where)
    kind = item.get("kind")
    if kind not in KINDS:
        raise SpecError(f"{where}.kind: one of {', '.join(KINDS)}")
    if "codes" not in item and "codelist" not in item:
        raise SpecError(f"{where}: give codes or codelist")
    listname: str | None = None
    if "codelist" in item:
        listname = item["codelist"]
        if not isinstance(listname, str):
            raise SpecError(f"{where}.codelist: a codelist's name")
        listname = listname.strip().lower()
        lists = codelists.load()
        if listname not in lists:
            raise SpecError(
                f"{where}.codelist: there is no codelist named {listname!r} "
                "(GET /v1/datasets lists them)"
            )
        codes = tuple(c for c, _ in lists[listname])
        # a stored spec carries both (the codes as answered): they must still agree
        if "codes" in item and item["codes"] != list(codes):
            raise SpecError(
                f"{where}: the codes given are not those of codelist {listname!r} "
                "(give codes or codelist, not a mix)"
            )
    else:
        raw = item["codes"]
        if isinstance(raw, str):
            raw = [raw]
        if not isinstance(raw, list) or not raw or len(raw) > MAX_CODES:
            raise SpecError(f"{where}.codes: a list of 1 to {MAX_CODES} codes")
        if not all(isinstance(c, str) and CODE.fullmatch(c) for c in raw):
            raise SpecError(f"{where}.codes: codes are letters, digits and dots (1-40)")
        codes = tuple(dict.fromkeys(raw))
    since = _date(item["from"], f"{where}.from") if "from" in item else None
    until = _date(item["to"], f"{where}.to") if "to" in item else None
    if "within_days" in item:
        if since is not None or until is not None:
            raise SpecError(f"{where}: give within_days or from/to, not both")
        days = _int(item["within_days"], f"{where}.within_days", 1, MAX_WINDOW_DAYS)
        since, until = as_of - dt.timedelta(days=days), as_of
    if since and until and since > until:
        raise SpecError(f"{where}: from is after to")
    low = _number(item["min"], f"{where}.min") if "min" in item else None
    high = _number(item["max"], f"{where}.max") if "max" in item else None
    if kind == "lab":
        if low is None and high is None:
            raise SpecError(f"{where}: a lab criterion needs min and/or max")
        if low is not None and high is not None and low > high:
            raise SpecError(f"{where}: min is above max")
    elif low is not None or high is not None:
        raise SpecError(f"{where}: min and max are for lab criteria")
    return Criterion(kind, codes, listname, since, until, low, high)


def _known(table: dict[str, Any], allowed: tuple[str, ...], where: str) -> None:
    for key in table:
        if key not in allowed:
            raise SpecError(
                f"unknown key {key!r} in {where} (allowed: {', '.join(sorted(allowed))})"
            )


def _date(value: Any, where: str) -> dt.date:
    if isinstance(value, dt.datetime):
        raise SpecError(f"{where}: a date (YYYY-MM-DD), not a date and time")
    if isinstance(value, dt.date):
        out = value
    elif isinstance(value, str):
        try:
            out = dt.date.fromisoformat(value)
        except ValueError:
            raise SpecError(f"{where}: a date, YYYY-MM-DD") from None
    else:
        raise SpecError(f"{where}: a date, YYYY-MM-DD")
    if not 1900 <= out.year <= 2100:
        raise SpecError(f"{where}: a date from 1900 to 2100")
    return out


def _int(value: Any, where: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise SpecError(f"{where}: a whole number from {lo} to {hi}")
    return value


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SpecError(f"{where}: a number")
    out = float(value)
    if not math.isfinite(out) or abs(out) > 1e9:
        raise SpecError(f"{where}: a finite number")
    return out
