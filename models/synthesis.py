"""MST (McKenna, Miklau and Sheldon 2021): DP synthetic data from noisy marginals.

The marginal-based family (MST, AIM) leads published benchmarks for DP tabular data;
``mbi`` (Private-PGM, the library behind both) fits a graphical model to the noisy
marginals and samples rows from it. The budget is ρ-zCDP, converted from the ledger's
(ε, δ) by ``accounting.zcdp_rho``, split in three as in the paper:

1. ρ/3: every 1-way marginal, discrete Gaussian noise (OpenDP, L2 sensitivity 1 each);
2. ρ/3: a maximum spanning tree of 2-way marginals picked by the exponential mechanism
   (OpenDP's report-noisy-max with Gumbel noise), scoring each pair by how badly the
   independent model of step 1 fits it (L1 error, sensitivity 1);
3. ρ/3: the chosen 2-way marginals, discrete Gaussian noise.

One extension: ``pairs_with`` names a column (the outcome a product will predict) whose
every 2-way marginal is measured in step 3 without selection (the choice is declared,
so it costs nothing), and the tree is drawn over the other columns. OpenDP's privacy maps
certify each measurement's ρ before any data is read (:func:`plan`); the certified sum
never exceeds the ρ the ledger's ε and δ buy.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import numpy as np
import opendp.prelude as dp

from governance.errors import InvalidRequest
from governance.privacy import accounting
from models.synthetic_spec import MISSING, SyntheticSpec, level

dp.enable_features("contrib")


@dataclass(frozen=True)
class Plan:
    """The noise of each step, certified by OpenDP's privacy maps (no data read)."""

    rho: float  # what (ε, δ) buys
    sigma_one: float  # 1-way marginals' noise scale (counts)
    gumbel_scale: float  # each selection round's report-noisy-max scale
    rounds: int
    sigma_two: float  # 2-way marginals' noise scale
    pairs: int  # 2-way marginals measured
    certified_rho: float  # OpenDP's sum over every measurement


def _gaussian(sigma: float) -> Any:
    return dp.m.make_gaussian(
        dp.vector_domain(dp.atom_domain(T="i64")), dp.l2_distance(T="i64"), scale=sigma
    )


def _noisy_max(scale: float) -> Any:
    return dp.m.make_noisy_max(
        dp.vector_domain(dp.atom_domain(T="f64", nan=False)),
        dp.linf_distance(T="f64"),
        dp.zero_concentrated_divergence(),
        scale=scale,
    )


def _fit(make: Any, scale: float, d_in: Any, rho: float) -> tuple[float, float]:
    """The smallest scale (from ``scale`` up) whose certified ρ is at most ``rho``."""
    for _ in range(40):
        certified = float(make(scale).map(d_in))
        if certified <= rho:
            return scale, certified
        scale *= 1.0 + 1e-6
    raise InvalidRequest("OpenDP cannot certify this ε; raise it (nothing was spent)")


def plan(spec: SyntheticSpec, delta: float) -> Plan:
    """Certify the three steps' noise for ``spec`` at (spec.epsilon, delta)."""
    rho = accounting.zcdp_rho(spec.epsilon, delta)
    d = len(spec.columns)
    tree_columns = d - 1 if spec.pairs_with else d
    rounds = max(tree_columns - 1, 0)
    pairs = rounds + (d - 1 if spec.pairs_with else 0)
    steps = 1 + (rounds > 0) + (pairs > 0)
    part = rho / steps * (1 - 1e-9)
    sigma_one, one = _fit(_gaussian, math.sqrt(d / (2 * part)), 1, part / d)
    certified = one * d
    gumbel = sigma_two = 0.0
    if rounds:
        each = part / rounds
        gumbel, sel = _fit(_noisy_max, 1.0 / math.sqrt(2 * each), 1.0, each)
        certified += sel * rounds
    if pairs:
        sigma_two, two = _fit(_gaussian, math.sqrt(pairs / (2 * part)), 1, part / pairs)
        certified += two * pairs
    if not 0 < certified <= rho * (1 + 1e-9):
        raise InvalidRequest("OpenDP cannot certify this ε; raise it (nothing was spent)")
    return Plan(rho, sigma_one, gumbel, rounds, sigma_two, pairs, certified)


def encode(spec: SyntheticSpec, columns: dict[str, list[Any]]) -> dict[str, np.ndarray]:
    """Each column as level codes; total: an odd or missing value is the missing level."""
    out: dict[str, np.ndarray] = {}
    for name in spec.columns:
        values = columns.get(name)
        n = len(next(iter(columns.values()), [])) if values is None else len(values)
        missing = len(spec.levels(name)) - 1
        if values is None:
            out[name] = np.full(n, missing, dtype=np.int64)
        elif name in spec.numeric:
            num = spec.numeric[name]
            x = np.array([_number(v) for v in values], dtype=np.float64)
            codes = np.floor((np.clip(x, num.low, num.high) - num.low) / (num.high - num.low)
                             * num.bins)  # fmt: skip
            codes = np.where(np.isnan(x), missing, np.minimum(np.nan_to_num(codes), num.bins - 1))
            out[name] = codes.astype(np.int64)
        else:
            index = {lv: i for i, lv in enumerate(spec.categorical[name])}
            out[name] = np.array(
                [missing if v is None else index.get(level(v), missing) for v in values],
                dtype=np.int64,
            )
    return out


def _number(v: Any) -> float:
    if isinstance(v, bool) or v is None:
        return math.nan
    try:
        x = float(v)
    except (TypeError, ValueError):
        return math.nan
    return x if math.isfinite(x) else math.nan


def decode(spec: SyntheticSpec, codes: dict[str, np.ndarray]) -> dict[str, list[str | None]]:
    """Level names (the missing level back to null)."""
    out: dict[str, list[str | None]] = {}
    for name in spec.columns:
        labels: list[str | None] = [None if lv == MISSING else lv for lv in spec.levels(name)]
        out[name] = [labels[int(c)] for c in codes[name]]
    return out


def _marginal(codes: dict[str, np.ndarray], clique: tuple[str, ...], sizes: dict[str, int]) -> Any:
    shape = tuple(sizes[c] for c in clique)
    flat = np.ravel_multi_index(tuple(codes[c] for c in clique), shape)
    return np.bincount(flat, minlength=math.prod(shape))


def generate(
    spec: SyntheticSpec, planned: Plan, codes: dict[str, np.ndarray]
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """MST on the encoded rows; returns synthetic codes and what was measured."""
    import jax

    # mbi stalls in float32 past ~100k rows; its JIT cache only slows many small programs
    jax.config.update("jax_enable_x64", True)  # type: ignore[no-untyped-call]
    jax.config.update("jax_enable_compilation_cache", False)  # type: ignore[no-untyped-call]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from mbi import Domain, LinearMeasurement, estimation

    cols = spec.columns
    sizes = {c: len(spec.levels(c)) for c in cols}
    domain = Domain(cols, [sizes[c] for c in cols])
    measurements = []
    one_way = {}
    noise_one = _gaussian(planned.sigma_one)
    for c in cols:
        noisy = np.asarray(noise_one(_marginal(codes, (c,), sizes).tolist()), dtype=np.float64)
        one_way[c] = noisy
        measurements.append(LinearMeasurement(noisy, (c,), stddev=planned.sigma_one))
    fixed = [(spec.pairs_with, c) for c in cols if spec.pairs_with and c != spec.pairs_with]
    tree = _select(spec, planned, codes, sizes, one_way)
    noise_two = _gaussian(planned.sigma_two) if planned.pairs else None
    for clique in fixed + tree:
        assert noise_two is not None
        noisy = np.asarray(noise_two(_marginal(codes, clique, sizes).tolist()), dtype=np.float64)
        measurements.append(LinearMeasurement(noisy, clique, stddev=planned.sigma_two))
    model = estimation.MirrorDescent().estimate(domain, measurements, iters=spec.iterations)
    total = max(1, round(float(model.total)))
    rows = spec.rows or total
    synthetic = model.synthetic_data(rows=rows)
    out = {c: np.asarray(synthetic.data[c], dtype=np.int64) for c in cols}
    return out, {
        "one_way": len(cols),
        "two_way": [list(c) for c in fixed + tree],
        "estimated_people": total,
        "fit_to_measurements": _fit_to_measurements(out, measurements, sizes),
    }


def _fit_to_measurements(
    synthetic: dict[str, np.ndarray], measurements: list[Any], sizes: dict[str, int]
) -> dict[str, float | None]:
    """How closely the synthetic rows match the noisy marginals they were fitted to:
    average total-variation distance, 1-way and 2-way. Computed from DP outputs only (the
    measurements and the synthetic rows), so it is post-processing: free, and safe to
    release with the data card, unlike any figure computed on the real rows."""
    by_size: dict[int, list[float]] = {1: [], 2: []}
    for m in measurements:
        noisy = np.clip(np.asarray(m.noisy_measurement, dtype=np.float64), 0, None)
        if noisy.sum() <= 0:
            continue
        made = _marginal(synthetic, tuple(m.clique), sizes).astype(np.float64)
        if made.sum() <= 0:
            continue
        tv = 0.5 * float(np.abs(made / made.sum() - noisy / noisy.sum()).sum())
        by_size.setdefault(len(m.clique), []).append(tv)
    return {
        f"marginal_tv_{k}way": (round(float(np.mean(v)), 6) if v else None)
        for k, v in sorted(by_size.items())
    }


def _select(
    spec: SyntheticSpec,
    planned: Plan,
    codes: dict[str, np.ndarray],
    sizes: dict[str, int],
    one_way: dict[str, np.ndarray],
) -> list[tuple[str, str]]:
    """The exponential mechanism's spanning tree over the columns (pairs_with excluded)."""
    cols = [c for c in spec.columns if c != spec.pairs_with]
    if planned.rounds == 0:
        return []
    n = max(1.0, float(np.mean([max(v.sum(), 1.0) for v in one_way.values()])))
    positive = {c: np.clip(v, 0, None) for c, v in one_way.items()}
    probs = {c: v / max(v.sum(), 1.0) for c, v in positive.items()}
    candidates = list(combinations(cols, 2))
    scores = []
    for a, b in candidates:
        independent = np.outer(probs[a], probs[b]).ravel() * n
        scores.append(float(np.abs(_marginal(codes, (a, b), sizes) - independent).sum()))
    component = {c: c for c in cols}

    def root(c: str) -> str:
        while component[c] != c:
            c = component[c]
        return c

    chosen: list[tuple[str, str]] = []
    noisy_max = _noisy_max(planned.gumbel_scale)
    for _ in range(planned.rounds):
        open_pairs = [i for i, (a, b) in enumerate(candidates) if root(a) != root(b)]
        pick = open_pairs[int(noisy_max([scores[i] for i in open_pairs]))]
        a, b = candidates[pick]
        component[root(a)] = root(b)
        chosen.append((a, b))
    return chosen
