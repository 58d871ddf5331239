"""A training spec: what to extract, how to encode it, which model, at what privacy cost.

Written as TOML so a study's whole definition can be reviewed by a steward next to its
model card (the spec is copied into the model's folder). See ``models/examples/``.

.. code-block:: toml

    [cohort]
    sql_file = "dpp_cohort.sql"   # or sql = "SELECT ..." (checked like any query)
    key = "person_id"             # the row key: splits and audits, never a feature
    outcome = "t2d_2y"
    treatment = "referred"        # effect models only

    [features.numeric]            # declared bounds: clip and scale, no private statistic
    age = [18, 100]
    [features.categorical]        # declared levels: one-hot, anything else all-zero
    sex = ["F", "M"]

    [model]
    kind = "logistic"             # logistic | mlp | effect
    method = "dp-sgd"             # or "adassp" / "strata" (linear effect models,
                                  # continuous outcome; strata: DP stratified analysis)
    [model.strata]                # method = "strata": cut points of numeric modifiers
    bmi = [25, 30, 35, 40]
    [privacy]
    epsilon = 1.0
    metrics_epsilon = 0.3         # the DP held-out metrics, charged beside the training
"""

from __future__ import annotations

import itertools
import json
import math
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, cast

from governance.errors import InvalidRequest

ModelKind = Literal["logistic", "mlp", "effect"]
Learner = Literal["s", "t"]
Outcome = Literal["binary", "continuous"]
Method = Literal["dp-sgd", "adassp", "strata"]


@dataclass(frozen=True)
class Training:
    epochs: int = 30
    batch_size: int = 256
    learning_rate: float = 0.02
    optimizer: Literal["sgd", "adam"] = "adam"
    max_grad_norm: float = 0.5
    grad_sample_mode: Literal["hooks", "ew", "ghost"] = "ew"
    holdout: float = 0.25
    seed: int = 0
    # the people the sample rate is planned for (batch_size / expected_rows); never the
    # cohort's own size, which would make the card's steps depend on the data. Default:
    # the release's number of people (public). Take it from a DP count of the cohort.
    expected_rows: int | None = None

    def __post_init__(self) -> None:
        if self.expected_rows is not None and (
            not isinstance(self.expected_rows, int)
            or isinstance(self.expected_rows, bool)
            or not 1 <= self.expected_rows <= 100_000_000
        ):
            raise InvalidRequest("[training] expected_rows must be a whole number from 1")
        for name in ("epochs", "batch_size", "seed"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise InvalidRequest(f"[training] {name} must be a whole number")
        for name in ("learning_rate", "max_grad_norm", "holdout"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise InvalidRequest(f"[training] {name} must be a number")


@dataclass(frozen=True)
class Spec:
    sql: str
    outcome: str
    numeric: dict[str, tuple[float, float]]
    categorical: dict[str, list[str]] = field(default_factory=dict)
    key: str = "person_id"
    treatment: str | None = None
    kind: ModelKind = "logistic"
    learner: Learner = "s"
    outcome_type: Outcome = "binary"
    outcome_bounds: tuple[float, float] | None = None
    hidden: int = 32
    # effect models: the outcome model's architecture ("linear" or "mlp")
    effect_architecture: Literal["linear", "mlp"] = "mlp"
    # S-learner: the features whose effect on the outcome may depend on the treatment
    # (EconML's X); the others enter as controls only (its W). None: every feature.
    modifiers: list[str] | None = None
    # the private learner: "dp-sgd" (Opacus, every kind), "strata" (a DP stratified
    # analysis, models.strata) or "adassp" (sufficient-statistics perturbation,
    # models.adassp); the last two for linear effect models of a continuous outcome
    # only. None: dp-sgd, the one learner every model kind has (docs/models.md compares
    # them: the stratified one found the most of who benefits)
    method: Method | None = None
    # method = "strata": each numeric modifier's cut points, in its own units (a 0/1
    # feature needs none); models.strata
    strata: dict[str, list[float]] | None = None
    epsilon: float = 1.0
    delta: float | None = None
    # the held-out metrics the modeller sees are DP too, charged beside the training
    metrics_epsilon: float = 0.3
    training: Training = field(default_factory=Training)
    name: str = "model"
    source: str = ""  # the TOML text, copied beside the model

    def __post_init__(self) -> None:
        if self.kind not in ("logistic", "mlp", "effect"):
            raise InvalidRequest("[model] kind must be logistic, mlp or effect")
        if self.learner not in ("s", "t"):
            raise InvalidRequest("[model] learner must be s or t")
        if self.outcome_type not in ("binary", "continuous"):
            raise InvalidRequest("[model] outcome must be binary or continuous")
        if self.training.optimizer not in ("sgd", "adam"):
            raise InvalidRequest("[training] optimizer must be sgd or adam")
        if self.training.grad_sample_mode not in ("hooks", "ew", "ghost"):
            raise InvalidRequest("[training] grad_sample_mode must be hooks, ew or ghost")
        if self.modifiers is not None:
            unknown = [
                m for m in self.modifiers if m not in self.numeric and m not in self.categorical
            ]
            if unknown:
                raise InvalidRequest(f"[model] modifiers must be features: {', '.join(unknown)}")
            if self.kind != "effect" or self.learner != "s":
                raise InvalidRequest("[model] modifiers apply to the S-learner (kind = effect)")
        if self.effect_architecture not in ("linear", "mlp"):
            raise InvalidRequest("[model] architecture must be linear or mlp")
        if self.method not in (None, "dp-sgd", "adassp", "strata"):
            raise InvalidRequest("[model] method must be dp-sgd, adassp or strata")
        if self.method == "adassp" and not self.adassp_applies:
            raise InvalidRequest(
                "[model] method = adassp fits linear regression: it needs kind = effect, "
                "architecture = linear and outcome = continuous (use dp-sgd otherwise)"
            )
        self._check_strata()
        if not 1 <= self.hidden <= 1024:
            raise InvalidRequest("[model] hidden must be 1-1024")
        if not self.numeric and not self.categorical:
            raise InvalidRequest("the spec declares no features")
        for col, (lo, hi) in self.numeric.items():
            check_bounds(lo, hi, f"feature {col!r}")
        for col, levels in self.categorical.items():
            if not levels:
                raise InvalidRequest(f"feature {col!r}: declare at least one level")
        if self.kind == "effect" and not self.treatment:
            raise InvalidRequest("an effect model needs [cohort] treatment")
        if self.outcome_type == "continuous" and self.outcome_bounds is None:
            raise InvalidRequest("a continuous outcome needs [model] outcome_bounds")
        if self.outcome_bounds is not None:
            check_bounds(*self.outcome_bounds, "[model] outcome_bounds")
        if self.kind != "effect" and self.outcome_type != "binary":
            raise InvalidRequest("risk models (logistic, mlp) predict a binary outcome")
        if not (math.isfinite(self.epsilon) and 0.01 <= self.epsilon <= 100):
            raise InvalidRequest("[privacy] epsilon must be between 0.01 and 100")
        if not (math.isfinite(self.metrics_epsilon) and 0.01 <= self.metrics_epsilon <= 10):
            raise InvalidRequest("[privacy] metrics_epsilon must be between 0.01 and 10")
        if self.delta is not None and not (0 < self.delta < 1e-3):
            raise InvalidRequest("[privacy] delta must be in (0, 1e-3)")
        t = self.training
        if not (1 <= t.epochs <= 500 and 16 <= t.batch_size <= 1_000_000):
            raise InvalidRequest("[training] epochs must be 1-500 and batch_size at least 16")
        if not (0.05 <= t.holdout <= 0.5):
            raise InvalidRequest("[training] holdout must be between 0.05 and 0.5")
        if not (t.max_grad_norm > 0 and t.learning_rate > 0):
            raise InvalidRequest("[training] max_grad_norm and learning_rate must be positive")
        names = [self.outcome, self.key, *self.numeric, *self.categorical]
        if self.treatment:
            names.append(self.treatment)
        if len(set(names)) != len(names):
            raise InvalidRequest("key, outcome, treatment and features must be distinct columns")

    def _check_strata(self) -> None:
        if self.method != "strata":
            if self.strata is not None:
                raise InvalidRequest("[model.strata] applies to method = strata only")
            return
        if not (self.adassp_applies and self.learner == "s" and self.modifiers):
            raise InvalidRequest(
                "[model] method = strata compares the arms within strata of the effect "
                "modifiers: it needs kind = effect, learner = s, architecture = linear, "
                "outcome = continuous and [model] modifiers (use dp-sgd otherwise)"
            )
        cuts = self.strata or {}
        for name in cuts:
            if name not in (self.modifiers or []) or name not in self.numeric:
                raise InvalidRequest(
                    f"[model.strata] {name}: only numeric modifiers have cut points"
                )
        levels = 1
        for name in self.modifiers:
            if name in self.categorical:
                levels *= len(self.categorical[name]) + 1
                continue
            lo, hi = self.numeric[name]
            points = cuts.get(name)
            if points is None:
                if (lo, hi) != (0.0, 1.0):
                    raise InvalidRequest(
                        f"[model.strata] {name}: give its cut points, e.g. {name} = "
                        f"[{lo + (hi - lo) / 3:g}, {lo + 2 * (hi - lo) / 3:g}] (only a 0/1 "
                        "feature needs none)"
                    )
                levels *= 3
                continue
            if not (
                points
                and all(isinstance(c, int | float) and not isinstance(c, bool) for c in points)
                and all(lo < c < hi for c in points)
                and all(a < b for a, b in itertools.pairwise(points))
            ):
                raise InvalidRequest(
                    f"[model.strata] {name}: cut points must be increasing numbers strictly "
                    f"between its bounds {lo:g} and {hi:g}"
                )
            levels *= len(points) + 2  # the bins and a missing level
        if 2 * levels > 20_000:
            raise InvalidRequest(
                f"[model.strata] {levels:,} strata: each would hold a handful of people "
                "beside its noise; declare fewer modifiers or cut points (at most 10,000)"
            )

    @property
    def linear(self) -> bool:
        """A single linear layer (logistic regression, or a linear outcome model)."""
        return self.kind == "logistic" or (
            self.kind == "effect" and self.effect_architecture == "linear"
        )

    @property
    def adassp_applies(self) -> bool:
        """Least squares fits this model: a linear effect model of a continuous outcome."""
        return self.kind == "effect" and self.linear and self.outcome_type == "continuous"

    @property
    def learning_method(self) -> Method:
        """The private learner this spec trains with (``method``, or dp-sgd)."""
        return self.method if self.method is not None else "dp-sgd"

    @property
    def columns(self) -> list[str]:
        """The columns the cohort query must return."""
        out = [self.key, self.outcome, *self.numeric, *self.categorical]
        return [*out, self.treatment] if self.treatment else out


# the largest magnitude a declared bound may have: far beyond any clinical value, and
# small enough that a scale's width (upper − lower) and every value scaled by it stay
# finite (bounds of ±1e308 are finite, their width is not: one person's value became
# NaN, diverged DP-SGD and failed a trial, a one-bit answer about that person)
MAX_BOUND: Final = 1e12


def check_bounds(lo: float, hi: float, where: str) -> None:
    """Declared bounds: finite, lower < upper, within ±``MAX_BOUND`` (InvalidRequest).

    >>> check_bounds(-1e308, 1e308, "feature 'z'")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    governance.errors.InvalidRequest: feature 'z': bounds must be finite numbers within ±1e+12...
    """
    if not (math.isfinite(lo) and math.isfinite(hi) and -MAX_BOUND <= lo < hi <= MAX_BOUND):
        raise InvalidRequest(
            f"{where}: bounds must be finite numbers within ±{MAX_BOUND:g} with lower < upper"
        )


def _pair(value: Any, where: str) -> tuple[float, float]:
    if not (isinstance(value, list) and len(value) == 2):
        raise InvalidRequest(f"{where}: give [lower, upper]")
    try:
        return float(value[0]), float(value[1])
    except (TypeError, ValueError):
        raise InvalidRequest(f"{where}: bounds must be numbers") from None


def _strata(value: Any) -> dict[str, list[float]] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not all(isinstance(v, list) for v in value.values()):
        raise InvalidRequest("[model.strata]: give each modifier's cut points as a list")
    return {str(k): list(v) for k, v in value.items()}


def parse(
    text: str,
    *,
    base: Path | None = None,
    name: str = "model",
    files: bool = True,
    sections: frozenset[str] = frozenset(),
) -> Spec:
    """A spec from TOML text; ``sql_file`` is read relative to ``base``.

    ``files=False`` (a spec sent over HTTP): ``sql_file`` is refused, so that a spec
    can never make the hub read a file of its own choosing; the client inlines the SQL.
    ``sections``: further top-level sections the caller reads itself (a study's
    ``[protocol]``, :mod:`models.trial`).
    """
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidRequest(f"the spec is not valid TOML: {exc}") from None
    known = {"cohort", "features", "model", "privacy", "training", "name", *sections}
    unknown = set(doc) - known
    if unknown:
        raise InvalidRequest(f"unknown section(s) in the spec: {', '.join(sorted(unknown))}")
    cohort = doc.get("cohort", {})
    sql = cohort.get("sql")
    if sql is None and "sql_file" in cohort and not files:
        raise InvalidRequest("[cohort] sql_file is read by the client: send sql inline")
    if sql is None and "sql_file" in cohort:
        path = (base or Path.cwd()) / str(cohort["sql_file"])
        try:
            sql = path.read_text()
        except OSError as exc:
            raise InvalidRequest(f"cannot read the cohort SQL {path}: {exc.strerror}") from None
    if not isinstance(sql, str) or not sql.strip():
        raise InvalidRequest("[cohort] needs sql or sql_file")
    if "outcome" not in cohort:
        raise InvalidRequest("[cohort] needs outcome (the label column)")
    features = doc.get("features", {})
    numeric = {
        str(k): _pair(v, f"[features.numeric] {k}") for k, v in features.get("numeric", {}).items()
    }
    categorical = {str(k): [str(x) for x in v] for k, v in features.get("categorical", {}).items()}
    model = doc.get("model", {})
    privacy = doc.get("privacy", {})
    training_doc = doc.get("training", {})
    allowed = set(Training.__dataclass_fields__)
    if set(training_doc) - allowed:
        raise InvalidRequest(
            f"unknown [training] key(s): {', '.join(sorted(set(training_doc) - allowed))}"
        )
    try:
        training = Training(**training_doc)
        return Spec(
            sql=sql,
            outcome=str(cohort["outcome"]),
            key=str(cohort.get("key", "person_id")),
            treatment=cohort.get("treatment"),
            numeric=numeric,
            categorical=categorical,
            kind=cast(ModelKind, model.get("kind", "logistic")),
            learner=cast(Learner, model.get("learner", "s")),
            outcome_type=cast(Outcome, model.get("outcome", "binary")),
            outcome_bounds=(
                _pair(model["outcome_bounds"], "[model] outcome_bounds")
                if "outcome_bounds" in model
                else None
            ),
            hidden=int(model.get("hidden", 32)),
            effect_architecture=cast(Literal["linear", "mlp"], model.get("architecture", "mlp")),
            modifiers=[str(m) for m in model["modifiers"]] if "modifiers" in model else None,
            method=cast(Method | None, model.get("method")),
            strata=_strata(model.get("strata")),
            epsilon=float(privacy.get("epsilon", 1.0)),
            delta=float(privacy["delta"]) if "delta" in privacy else None,
            metrics_epsilon=float(privacy.get("metrics_epsilon", 0.3)),
            training=training,
            name=str(doc.get("name", name)),
            source=text,
        )
    except (TypeError, ValueError) as exc:
        raise InvalidRequest(f"the spec has a value of the wrong type: {exc}") from None


def read_text(path: Path, what: str = "spec") -> str:
    """A spec or study file's text, or a clear refusal naming it."""
    try:
        return path.read_text()
    except OSError as exc:
        raise InvalidRequest(f"cannot read the {what} {path}: {exc.strerror}") from None


def load(path: Path) -> Spec:
    return parse(read_text(path), base=path.parent, name=path.stem)


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # JSON's string escapes are valid TOML basic strings
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def dumps(spec: Spec) -> str:
    """The spec as TOML with its SQL inline (what a client sends to the hub).

    >>> s = parse(dumps(Spec(sql="SELECT 1", outcome="y", numeric={"age": (18.0, 100.0)})))
    >>> s.sql, s.numeric, s.training.epochs
    ('SELECT 1', {'age': (18.0, 100.0)}, 30)
    """
    cohort = {"sql": spec.sql, "key": spec.key, "outcome": spec.outcome}
    if spec.treatment:
        cohort["treatment"] = spec.treatment
    model: dict[str, Any] = {
        "kind": spec.kind, "learner": spec.learner, "outcome": spec.outcome_type,
        "hidden": spec.hidden, "architecture": spec.effect_architecture,
    }  # fmt: skip
    if spec.outcome_bounds is not None:
        model["outcome_bounds"] = list(spec.outcome_bounds)
    if spec.modifiers is not None:
        model["modifiers"] = spec.modifiers
    if spec.method is not None:
        model["method"] = spec.method
    privacy: dict[str, Any] = {"epsilon": spec.epsilon, "metrics_epsilon": spec.metrics_epsilon}
    if spec.delta is not None:
        privacy["delta"] = spec.delta
    training = {k: v for k, v in asdict(spec.training).items() if v is not None}
    sections: list[tuple[str, dict[str, Any]]] = [
        ("cohort", cohort),
        ("features.numeric", {k: list(v) for k, v in spec.numeric.items()}),
        ("features.categorical", dict(spec.categorical)),
        ("model", model),
        *([("model.strata", dict(spec.strata))] if spec.strata is not None else []),
        ("privacy", privacy),
        ("training", training),
    ]
    lines = [f"name = {_toml(spec.name)}"]
    for title, body in sections:
        lines.append(f"\n[{title}]")
        lines += [f"{json.dumps(k)} = {_toml(v)}" for k, v in body.items()]
    return "\n".join(lines) + "\n"
