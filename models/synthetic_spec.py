"""A synthetic-data spec: which person-level table, how it is discretised, at what ε.

Written as TOML, like a training spec (:mod:`models.spec`), so a steward reviews the
whole request beside the data card. See ``models/examples/synthetic_cohort.toml``.

.. code-block:: toml

    name = "region-flat-cohort"
    [cohort]
    sql_file = "flat_cohort.sql"  # one row per person, checked person-local
    key = "person_id"             # never a column of the synthetic table
    [columns.numeric]             # [low, high, bins]: declared, never read from the data
    age = [0, 100, 10]
    [columns.categorical]         # declared levels; anything else (and null) is "missing"
    sex = ["F", "M"]
    t2d = [true, false]
    [privacy]
    epsilon = 1.0                 # δ defaults to 1e-7
    [synthesis]
    method = "mst"
    pairs_with = "t2d"            # every 2-way marginal with this column is measured
    [evaluation]
    outcome = "t2d"               # train-on-synthetic / test-on-real AUROC
    positive = "true"
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

from governance.errors import InvalidRequest
from models.spec import check_bounds

MISSING: Final = "missing"  # the extra level of every column: null, out of the declared levels
MAX_LEVELS: Final = 64  # per column, the missing level included
MAX_COLUMNS: Final = 40
MAX_ITERATIONS: Final = 20_000
MAX_ROWS: Final = 2_000_000


def level(value: Any) -> str:
    """A value as a level's name: booleans lower-case, whole floats as integers.

    >>> [level(True), level(3.0), level(3.5), level("F")]
    ['true', '3', '3.5', 'F']
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return str(int(value))
    return str(value)


@dataclass(frozen=True)
class Numeric:
    low: float
    high: float
    bins: int

    def labels(self) -> list[str]:
        """Equal-width bins over the declared range; the last one is closed.

        >>> Numeric(0, 100, 4).labels()
        ['[0, 25)', '[25, 50)', '[50, 75)', '[75, 100]']
        """
        edges = [self.low + (self.high - self.low) * i / self.bins for i in range(self.bins + 1)]
        out = [f"[{level(edges[i])}, {level(edges[i + 1])})" for i in range(self.bins)]
        out[-1] = out[-1][:-1] + "]"
        return out


@dataclass(frozen=True)
class SyntheticSpec:
    sql: str
    numeric: dict[str, Numeric]
    categorical: dict[str, list[str]]
    key: str = "person_id"
    epsilon: float = 1.0
    delta: float | None = None
    method: Literal["mst"] = "mst"
    pairs_with: str | None = None
    iterations: int = 1000
    rows: int | None = None  # None: the model's DP estimate of the people
    holdout: float = 0.2  # people kept out of the generator, for the evaluation
    outcome: str | None = None
    positive: str = "true"
    features: list[str] | None = None  # None: every other column
    name: str = "synthetic"
    intended_use: str = (
        "Prototyping and testing software against realistically shaped records; not for "
        "clinical or statistical conclusions (run those as DP or reviewed queries)."
    )
    source: str = field(default="", repr=False)

    @property
    def columns(self) -> list[str]:
        return [*self.numeric, *self.categorical]

    def levels(self, column: str) -> list[str]:
        """The column's levels in code order, "missing" last."""
        if column in self.numeric:
            return [*self.numeric[column].labels(), MISSING]
        return [*self.categorical[column], MISSING]

    def __post_init__(self) -> None:
        cols = self.columns
        if not cols:
            raise InvalidRequest("declare at least one column in [columns.numeric] or .categorical")
        if len(cols) > MAX_COLUMNS:
            raise InvalidRequest(f"at most {MAX_COLUMNS} columns")
        if set(self.numeric) & set(self.categorical):
            raise InvalidRequest("a column is declared both numeric and categorical")
        if self.key in cols:
            raise InvalidRequest(f"the key {self.key!r} cannot be a column of the synthetic table")
        for name, num in self.numeric.items():
            check_bounds(num.low, num.high, f"[columns.numeric] {name}")
            if not 1 <= num.bins < MAX_LEVELS:
                raise InvalidRequest(f"[columns.numeric] {name}: 1 to {MAX_LEVELS - 1} bins")
        for name, levels in self.categorical.items():
            if not 1 <= len(levels) < MAX_LEVELS or len(set(levels)) != len(levels):
                raise InvalidRequest(
                    f"[columns.categorical] {name}: 1 to {MAX_LEVELS - 1} distinct levels"
                )
            if MISSING in levels:
                raise InvalidRequest(f"[columns.categorical] {name}: {MISSING!r} is reserved")
        if self.method != "mst":
            raise InvalidRequest('[synthesis] method must be "mst"')
        if self.pairs_with is not None and self.pairs_with not in cols:
            raise InvalidRequest(f"[synthesis] pairs_with names no column: {self.pairs_with!r}")
        if not 10 <= self.iterations <= MAX_ITERATIONS:
            raise InvalidRequest(f"[synthesis] iterations must be 10 to {MAX_ITERATIONS}")
        if self.rows is not None and not 1 <= self.rows <= MAX_ROWS:
            raise InvalidRequest(f"[synthesis] rows must be 1 to {MAX_ROWS}")
        if not 0.05 <= self.holdout <= 0.5:
            raise InvalidRequest("[synthesis] holdout must be 0.05 to 0.5")
        if self.outcome is not None:
            if self.outcome not in cols:
                raise InvalidRequest(f"[evaluation] outcome names no column: {self.outcome!r}")
            if self.positive not in self.levels(self.outcome):
                raise InvalidRequest(f"[evaluation] positive is not a level of {self.outcome}")
            unknown = [f for f in self.features or [] if f not in cols or f == self.outcome]
            if unknown:
                raise InvalidRequest(f"[evaluation] features that are no other column: {unknown}")


def _table(data: dict[str, Any], name: str) -> dict[str, Any]:
    value = data.get(name, {})
    if not isinstance(value, dict):
        raise InvalidRequest(f"[{name}] must be a table")
    return value


def parse(text: str, *, base: Path | None = None, name: str | None = None) -> SyntheticSpec:
    """A spec from TOML; ``sql_file`` is read relative to ``base`` (None: inline SQL only)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidRequest(f"the spec is not valid TOML: {exc}") from None
    cohort, columns = _table(data, "cohort"), _table(data, "columns")
    privacy, synthesis = _table(data, "privacy"), _table(data, "synthesis")
    evaluation = _table(data, "evaluation")
    sql = cohort.get("sql")
    if sql is None and "sql_file" in cohort:
        if base is None:
            raise InvalidRequest("give the cohort SQL inline ([cohort] sql = ...)")
        try:
            sql = (base / str(cohort["sql_file"])).read_text()
        except OSError as exc:
            raise InvalidRequest(f"cannot read the cohort SQL: {exc.strerror}") from None
    if not isinstance(sql, str) or not sql.strip():
        raise InvalidRequest("[cohort] needs sql or sql_file")
    try:
        numeric = {
            str(k): Numeric(float(v[0]), float(v[1]), int(v[2]))
            for k, v in _table(columns, "numeric").items()
        }
        categorical = {
            str(k): [level(x) for x in v] for k, v in _table(columns, "categorical").items()
        }
        return SyntheticSpec(
            sql=sql,
            numeric=numeric,
            categorical=categorical,
            key=str(cohort.get("key", "person_id")),
            epsilon=float(privacy.get("epsilon", 1.0)),
            delta=None if privacy.get("delta") is None else float(privacy["delta"]),
            method=synthesis.get("method", "mst"),
            pairs_with=synthesis.get("pairs_with"),
            iterations=int(synthesis.get("iterations", 1000)),
            rows=None if synthesis.get("rows") is None else int(synthesis["rows"]),
            holdout=float(synthesis.get("holdout", 0.2)),
            outcome=evaluation.get("outcome"),
            positive=level(evaluation.get("positive", "true")),
            features=evaluation.get("features"),
            name=str(name or data.get("name", "synthetic"))[:100],
            intended_use=str(data.get("intended_use", SyntheticSpec.intended_use))[:2000],
            source=text,
        )
    except (TypeError, ValueError, IndexError, KeyError) as exc:
        raise InvalidRequest(f"the spec has a value of the wrong shape: {exc}") from None


def load(path: Path) -> SyntheticSpec:
    try:
        text = path.read_text()
    except OSError as exc:
        raise InvalidRequest(f"cannot read {path}: {exc.strerror}") from None
    return parse(text, base=path.parent)
