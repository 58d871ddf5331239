"""DP models: utility against ε, empirical privacy, and the speed cost of DP-SGD.

`python -m benchmarks.models [patients]` (default 100,000) generates a population, ingests
it, and trains the example specs of ``models/examples`` through the governed extraction
at ε ∈ {0.5, 1, 3, 8, ∞} (∞: the same model, sampler and optimiser without privacy).

* Risk models (logistic, MLP): held-out AUROC and Brier score.
* Effect models (S- and T-learner): against the generator's ground truth, which only
  this benchmark reads (it is never in a release; people are matched by recomputing
  their pseudonyms with the hub's key, as only an operator can): RMSE of estimated vs
  true individual effects on 12-month HbA1c, the normalised Qini coefficient, and the
  share of the true top-decile benefiters in the predicted top decile.
* Membership inference: attack AUC against the ε = 3 and non-private models.
* Speed: seconds per epoch, DP vs non-private, same model, data and Poisson sampler,
  for each Opacus per-sample-gradient mode, and Opacus' own row-wise DataLoader path.

Each utility number is the mean over ``SEEDS`` training seeds (the spread is reported).
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import duckdb
import numpy as np
import torch

from connectors import pseudonym
from connectors.ingest import ingest
from connectors.secrets import resolve_keys
from governance.facade import Governance
from governance.queries import QueryService
from models import cohort as cohorts
from models import dpsgd, learners, metrics, mia, spec
from synthetic_data.generator import SynthConfig, generate

EPSILONS = (0.5, 1.0, 3.0, 8.0, math.inf)
SEEDS = (1, 2, 3, 4, 5)
EXAMPLES = Path(__file__).resolve().parents[1] / "models" / "examples"
RESULTS = Path(__file__).with_name("results")
PLOTS = Path(__file__).with_name("plots")


def _mlp(s: spec.Spec) -> spec.Spec:
    """The risk spec as an MLP, with the settings that suited DP-SGD best in tuning
    (a small hidden layer, larger batches, more epochs)."""
    return dataclasses.replace(
        s, kind="mlp", hidden=8,
        training=dataclasses.replace(s.training, batch_size=512, learning_rate=0.02, epochs=60),
    )  # fmt: skip


def _setup(patients: int, work: Path) -> tuple[QueryService, Any, str, Path]:
    nhs_range = "synthetic" if patients > 450_000 else "test"
    src = generate(SynthConfig(patients=patients, nhs_range=nhs_range), work / "src").out
    home = work / "hub"
    ingest(src, fmt="native", home=home, keys=resolve_keys(home, create=True))
    # a generous query time limit: the benchmark machine may be shared and slow
    gov = Governance.open(home, create_keys=True, query_timeout_s=300.0)
    import datetime as dt

    until = dt.date.today() + dt.timedelta(days=30)
    people = {}
    for user_id, role in (("ana", "researcher"), ("mo", "modeller"), ("sam", "steward")):
        _, key = gov.people.add(
            user_id=user_id, name=user_id, role=role, organisation="bench",
            organisation_type="university", accreditation_expires=until, actor="bench",
        )  # fmt: skip
        people[user_id] = gov.people.authenticate(key)
    grants = {
        "patients": ["person_id", "year_of_birth", "sex", "ethnicity", "imd_decile",
                     "registration_end", "death_date"],
        "conditions": ["person_id", "code", "onset_date"],
        "observations": ["person_id", "code", "value", "observed_date"],
        "procedures": ["person_id", "code", "procedure_date"],
    }  # fmt: skip
    project = gov.projects.request(
        requester=people["ana"].user, title="bench", purpose="models benchmark",
        lay_summary="benchmark", grants=grants, days=30, members=["mo"],
    )  # fmt: skip
    gov.projects.approve(
        project.project_id, steward=people["sam"].user, epsilon=100.0, delta=1e-3,
        trainers=["mo"],
    )  # fmt: skip
    return QueryService(gov, timeout_s=gov.query_timeout_s), people, project.project_id, src


def _extract(service: QueryService, who: Any, project_id: str, s: spec.Spec) -> cohorts.Cohort:
    """The cohort as arrays, read through governance as the hub's training does (the
    benchmark is the operator's code, running inside the hub)."""
    prepared = service.gov.cohorts.prepare(who, project_id, s.sql)
    return cohorts.encode(s, service.gov.cohorts.read(who, prepared))


SIX_MODIFIERS = ["age", "under_60", "bmi", "imd_decile", "most_deprived", "hba1c"]


def six_modifiers(s: spec.Spec, method: Literal["dp-sgd", "adassp"] = "dp-sgd") -> spec.Spec:
    """The example who-benefits spec as it was before the stratified learner: the same
    cohort and features, a linear S-learner with six modifiers (continuous age and IMD
    decile, baseline HbA1c and the missing-value indicators included) trained by DP-SGD
    (or AdaSSP), the outcome clipped to ±15 mmol/mol."""
    return dataclasses.replace(
        s, method=method, modifiers=SIX_MODIFIERS, strata=None, outcome_bounds=(-15.0, 15.0)
    )


def _effect_cohorts(
    service: QueryService, who: Any, project_id: str, specs: dict[str, spec.Spec]
) -> dict[str, cohorts.Cohort]:
    """One governed read of the (shared) cohort SQL, encoded by each spec (the outcome
    bounds differ between them)."""
    first = next(iter(specs.values()))
    prepared = service.gov.cohorts.prepare(who, project_id, first.sql)
    rows = service.gov.cohorts.read(who, prepared)
    return {name: cohorts.encode(s, rows) for name, s in specs.items()}


def _truth(src: Path, home: Path) -> dict[int, float]:
    """person_id → true benefit of referral (reduction in 12-month HbA1c, mmol/mol)."""
    key = resolve_keys(home).pseudonym
    rows = (
        duckdb.connect()
        .execute(
            f"SELECT p.nhs_number, -g.effect_hba1c_change_12m "
            f"FROM '{src}/ground_truth/*.parquet' g JOIN '{src}/patients/*.parquet' p USING (patient_id)"
        )
        .fetchall()
    )
    return {
        pseudonym.person_id(key, "nhs:" + pseudonym.normalise_nhs_number(n)): float(b)
        for n, b in rows
    }


def _risk(cohort: cohorts.Cohort, s: spec.Spec) -> dict[str, Any]:
    """Each seed has its own train/held-out split (and initial weights), so the means
    average over splits as well as over DP noise."""
    out: dict[str, Any] = {}
    for eps in EPSILONS:
        runs = []
        for seed in SEEDS:
            held = cohorts.split(cohort.keys, f"benchmark-{seed}".encode(), s.training.holdout)
            tr, te = ~held, held
            sp = dataclasses.replace(s, training=dataclasses.replace(s.training, seed=seed))
            delta = dpsgd.default_delta(int(tr.sum()))
            module, _, fits = learners.fit(
                sp, cohort.x[tr], cohort.y[tr], None, planned_rows=int(tr.sum()),
                epsilon=None if math.isinf(eps) else eps, delta=delta,
            )  # fmt: skip
            p = dpsgd.predict(module, cohort.x[te], loss="bce")
            run = {"auroc": metrics.auroc(p, cohort.y[te]), "brier": metrics.brier(p, cohort.y[te])}
            if eps in (3.0, math.inf):
                width = cohort.x.shape[1]

                def fresh(sp: spec.Spec = sp, width: int = width) -> torch.nn.Module:
                    return learners.module(sp, width)

                attack = mia.audit(
                    module, fresh=fresh,
                    members=(cohort.x[tr], cohort.y[tr]), non_members=(cohort.x[te], cohort.y[te]),
                    loss="bce", config=learners.fit_config(sp, int(tr.sum())), seed=seed,
                )  # fmt: skip
                run["attack_auc"] = attack.attack_auc
                run["tpr_at_fpr_1pct"] = attack.tpr_at_fpr_1pct
            run["epsilon"] = fits[0].epsilon
            runs.append(run)
        out[_key(eps)] = _summarise(runs)
    return out


def _effect(
    cohort: cohorts.Cohort,
    s: spec.Spec,
    truth: dict[int, float],
    epsilons: tuple[float, ...] = EPSILONS,
) -> dict[str, Any]:
    """Effect models trained on every cohort member with an outcome, scored against the
    true effect of everyone in the cohort (the question is who, among these people,
    benefits)."""
    known = np.array([k in truth for k in cohort.keys])
    rows = cohort.present & known
    true_benefit = np.array([truth[k] for k, ok in zip(cohort.keys, known, strict=True) if ok])
    assert cohort.treatment is not None
    out: dict[str, Any] = {"people": int(known.sum()), "trained_on": int(rows.sum())}
    card = {"model_kind": "effect", "learner": s.learner, "outcome_type": s.outcome_type,
            "outcome_bounds": list(s.outcome_bounds or (0, 1)),
            "modifier_columns": learners.modifier_columns(s)}  # fmt: skip
    for eps in epsilons:
        runs = []
        for seed in SEEDS:
            sp = dataclasses.replace(s, training=dataclasses.replace(s.training, seed=seed))
            module, extra, fits = learners.fit(
                sp, cohort.x[rows], cohort.y[rows], cohort.treatment[rows],
                planned_rows=int(rows.sum()), epsilon=None if math.isinf(eps) else eps,
                delta=dpsgd.default_delta(int(rows.sum())),
            )  # fmt: skip
            est = learners.predict(card, module, cohort.x[known], extra=extra)
            runs.append({
                "rmse": metrics.rmse(est, true_benefit),
                "qini": metrics.qini(est, true_benefit),
                "top_decile": metrics.top_decile_overlap(est, true_benefit),
                "epsilon": max(f.epsilon for f in fits),
            })  # fmt: skip
        out[_key(eps)] = _summarise(runs)
    return out


def _key(eps: float) -> str:
    return "inf" if math.isinf(eps) else f"{eps:g}"


def _summarise(runs: list[dict[str, float]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for name in runs[0]:
        values = [float(r[name]) for r in runs if name in r]
        out[name] = statistics.fmean(values)
        if len(values) > 1 and all(math.isfinite(v) for v in values):
            out[f"{name}_sd"] = statistics.stdev(values)
    return out


def _speed(cohort: cohorts.Cohort, rows: int = 100_000) -> list[dict[str, Any]]:
    """Seconds per epoch on ``rows`` rows resampled from the cohort's encoded features."""
    rng = np.random.default_rng(0)
    pick = rng.integers(0, len(cohort.y), rows)
    x, y = cohort.x[pick], cohort.y[pick]
    out: list[dict[str, Any]] = []
    for kind, hidden in (("logistic", 0), ("mlp", 8), ("mlp", 32)):
        name = kind if kind == "logistic" else f"mlp ({hidden} hidden)"
        base = dpsgd.FitConfig(epochs=10, batch_size=1024, learning_rate=0.02, optimizer="adam")

        def model(kind: Any = kind, hidden: int = hidden) -> torch.nn.Module:
            return dpsgd.build(kind, x.shape[1], hidden=max(hidden, 1))

        # the first epoch warms caches and allocators: time the later ones (median of 9)
        plain = dpsgd.fit(model(), x, y, loss="bce", config=base, epsilon=None)
        plain_s = statistics.median(plain.epoch_seconds[1:])
        dp_runs: list[tuple[str, dpsgd.FitResult | str]] = []
        for mode in ("hooks", "ew", "ghost"):
            cfg = dataclasses.replace(base, grad_sample_mode=mode)
            try:
                dp_runs.append(
                    (mode, dpsgd.fit(model(), x, y, loss="bce", config=cfg, epsilon=3.0))
                )
            except Exception as exc:  # a mode Opacus cannot apply to this model
                dp_runs.append((mode, type(exc).__name__))
        # the non-private run again, after the private ones: drift shows in both halves
        again = dpsgd.fit(model(), x, y, loss="bce", config=base, epsilon=None)
        plain_s = (plain_s + statistics.median(again.epoch_seconds[1:])) / 2
        for mode, run in dp_runs:
            pipeline = f"vectorised Poisson, {mode}"
            if isinstance(run, str):
                out.append({"model": name, "pipeline": pipeline, "error": run})
                continue
            dp_s = statistics.median(run.epoch_seconds[1:])
            out.append({
                "model": name, "pipeline": pipeline,
                "non_private_s": plain_s, "dp_s": dp_s, "ratio": dp_s / plain_s,
            })  # fmt: skip
        out.append({"model": name, "pipeline": "Opacus DataLoader (row-wise), hooks",
                    **_opacus_loader(model, x, y)})  # fmt: skip
    return out


def _secure_cost(cohort: cohorts.Cohort, rows: int = 100_000) -> list[dict[str, Any]]:
    """The cost of CSPRNG noise and masks: DP seconds per epoch with the hub's secure
    randomness against Opacus' own torch-generator noise, same model and data (best of
    3, alternating, so that load on the machine hits both alike)."""
    from opacus.optimizers.optimizer import DPOptimizer

    rng = np.random.default_rng(0)
    pick = rng.integers(0, len(cohort.y), rows)
    x, y = cohort.x[pick], cohort.y[pick]
    secure = dpsgd._secure_add_noise
    out = []
    models: tuple[tuple[Literal["logistic", "mlp"], int], ...] = (
        ("logistic", 1), ("mlp", 8), ("mlp", 32),
    )  # fmt: skip
    for kind, hidden in models:
        cfg = dpsgd.FitConfig(epochs=4, batch_size=1024, learning_rate=0.02, optimizer="adam")
        best: dict[str, float] = {}
        try:
            for _ in range(3):
                for label in ("non_private", "secure", "torch_rng"):
                    dpsgd._secure_add_noise = (
                        DPOptimizer.add_noise if label == "torch_rng" else secure
                    )
                    run = dpsgd.fit(
                        dpsgd.build(kind, x.shape[1], hidden=hidden), x, y, loss="bce",
                        config=cfg, epsilon=None if label == "non_private" else 3.0,
                    )  # fmt: skip
                    best[label] = min(best.get(label, math.inf), min(run.epoch_seconds[1:]))
        finally:
            dpsgd._secure_add_noise = secure
        out.append({
            "model": kind if kind == "logistic" else f"mlp ({hidden} hidden)", **best,
            "secure_vs_non_private": best["secure"] / best["non_private"],
            "secure_vs_torch_rng": best["secure"] / best["torch_rng"],
        })  # fmt: skip
    return out


def _opacus_loader(
    make: Callable[[], torch.nn.Module], x: np.ndarray, y: np.ndarray
) -> dict[str, float]:
    """Opacus' documented path: a DataLoader over a TensorDataset, Poisson-resampled."""
    from opacus import PrivacyEngine

    data = torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y))

    def epoch(private: bool) -> float:
        torch.manual_seed(0)
        model = make()
        opt = torch.optim.Adam(model.parameters(), lr=0.02)
        loader = torch.utils.data.DataLoader(data, batch_size=1024)
        if private:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model, opt, loader = PrivacyEngine().make_private_with_epsilon(
                    module=model, optimizer=opt, data_loader=loader, target_epsilon=3.0,
                    target_delta=1e-6, epochs=1, max_grad_norm=1.0,
                )  # fmt: skip
        fn = torch.nn.BCEWithLogitsLoss()
        started = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for xb, yb in loader:
                if len(xb) == 0:
                    continue
                opt.zero_grad()
                fn(model(xb).squeeze(-1), yb).backward()
                opt.step()
        return time.perf_counter() - started

    plain = statistics.median(epoch(False) for _ in range(2))
    dp = statistics.median(epoch(True) for _ in range(2))
    return {"non_private_s": plain, "dp_s": dp, "ratio": dp / plain}


def _plots(result: dict[str, Any], folder: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    finite = [e for e in EPSILONS if math.isfinite(e)]
    names = []
    panels = (
        ("models_risk.png", "Risk of type 2 diabetes: held-out AUROC", "risk", "auroc"),
        ("models_effect_top_decile.png", "Who benefits: true top-decile found", "effect",
         "top_decile"),
        ("models_effect_qini.png", "Who benefits: normalised Qini", "effect", "qini"),
    )  # fmt: skip
    # y-axis in words; the line chance gives; the target the text names (issue 18)
    words = {
        "auroc": "held-out AUROC",
        "top_decile": "share of the true top decile found",
        "qini": "normalised Qini coefficient",
    }
    chance = {"auroc": 0.5, "top_decile": 0.1, "qini": 0.0}
    targets = {"top_decile": 0.60}
    for filename, title, group, metric in panels:
        fig, ax = plt.subplots(figsize=(5.5, 3.8), dpi=100)
        for i, (label, series) in enumerate(result[group].items()):
            color = f"C{i}"
            ys = [series[_key(e)][metric] for e in finite]
            sd = [series[_key(e)].get(f"{metric}_sd", 0.0) for e in finite]
            ax.errorbar(finite, ys, yerr=sd, marker="o", capsize=3, color=color, label=label)
            ax.axhline(series["inf"][metric], color=color, linestyle="--", linewidth=1)
        ax.axhline(chance[metric], color="grey", linestyle=":", linewidth=1, label="chance")
        if metric in targets:
            ax.axhline(targets[metric], color="black", linestyle="-.", linewidth=1,
                       label=f"target {targets[metric]:g} at ε = 3")  # fmt: skip
        ax.set_xscale("log")
        ax.minorticks_off()
        ax.set_xticks(finite, [f"{e:g}" for e in finite])
        ax.set_xlabel("privacy budget ε (log scale; dashed lines: the same model non-private)")
        ax.set_ylabel(words[metric])
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(folder / filename)
        plt.close(fig)
        names.append(filename)
    return names


CURVE_SIZES = (50_000, 100_000, 200_000, 400_000, 1_000_000)
CURVE_EPSILONS = (1.0, 3.0, 8.0, math.inf)


def _curve_point(patients: int, epsilons: tuple[float, ...] = CURVE_EPSILONS) -> dict[str, Any]:
    """The example who-benefits model on a population of ``patients``: the share of the
    true top decile it finds at each ε (5 seeds), and the effect cohort's size."""
    work = Path(tempfile.mkdtemp(prefix="bench-models-curve-"))
    try:
        started = time.perf_counter()
        service, people, project_id, src = _setup(patients, work)
        truth = _truth(src, work / "hub")
        effect_spec = spec.load(EXAMPLES / "who_benefits.toml")
        cohort = _extract(service, people["mo"], project_id, effect_spec)
        return {
            "patients": patients,
            "cohort": int(cohort.present.sum()),
            "effect": _effect(cohort, effect_spec, truth, epsilons),
            "seconds": time.perf_counter() - started,
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def curve(
    sizes: tuple[int, ...] = CURVE_SIZES,
    on_point: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """`python -m benchmarks.models curve [sizes...]`: how big the region must be to
    find who benefits at each privacy level (one generated population per size;
    ``on_point`` gets each as it is measured, so a long run keeps what it has)."""
    points = []
    for n in sizes:
        print(f"  curve: {n:,} patients", file=sys.stderr, flush=True)
        points.append(_curve_point(n))
        if on_point is not None:
            on_point(points[-1])
    return {"points": points}


def _curve_plot(r: dict[str, Any], folder: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    sizes = [p["patients"] for p in r["points"]]
    for eps in CURVE_EPSILONS:
        key = _key(eps)
        mean = [p["effect"][key]["top_decile"] for p in r["points"]]
        sd = [p["effect"][key].get("top_decile_sd", 0.0) for p in r["points"]]
        label = "no privacy" if math.isinf(eps) else f"ε = {eps:g}"
        ax.errorbar(sizes, mean, yerr=sd, marker="o", capsize=3, label=label)
    ax.axhline(0.1, color="grey", linestyle=":", label="chance (0.10)")
    ax.axhline(0.6, color="tab:red", linestyle="--", linewidth=1, label="target at 100k (0.60)")
    ax.axhline(0.8, color="tab:purple", linestyle="--", linewidth=1, label="target at 1M (0.80)")
    ax.set_xscale("log")
    ax.set_xlabel("people in the region (generated population, log scale)")
    ax.set_ylabel("share of the true top-decile benefiters found")
    ax.set_ylim(0, 1)
    ax.set_title("Who benefits: how big must the region be? (5 seeds, ± sd)")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    folder.mkdir(parents=True, exist_ok=True)
    name = "models_effect_curve.png"
    fig.savefig(folder / name, dpi=110)
    plt.close(fig)
    return name


def curve_markdown(r: dict[str, Any]) -> str:
    head = " | ".join("no privacy" if math.isinf(e) else f"ε = {e:g}" for e in CURVE_EPSILONS)
    lines = [
        "Who benefits against population size (the example spec, DP stratified S-learner; "
        f"share of the true top decile found, {len(SEEDS)} seeds, ± sd):",
        "",
        f"| people | effect cohort | {head} |",
        "|---|---|" + "---|" * len(CURVE_EPSILONS),
    ]
    for p in r["points"]:
        cells = " | ".join(
            f"{p['effect'][_key(e)]['top_decile']:.2f} ± "
            f"{p['effect'][_key(e)].get('top_decile_sd', 0):.2f}"
            for e in CURVE_EPSILONS
        )
        lines.append(f"| {p['patients']:,} | {p['cohort']:,} | {cells} |")
    if r.get("plot"):
        lines += ["", f"![who benefits against population size](plots/{r['plot']})"]
    return "\n".join(lines)


def run(
    patients: int = 100_000,
    plots: Path = PLOTS,
    curve_sizes: tuple[int, ...] = CURVE_SIZES,
) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="bench-models-"))
    try:
        service, people, project_id, src = _setup(patients, work)
        truth = _truth(src, work / "hub")
        risk_spec = spec.load(EXAMPLES / "risk_model.toml")
        effect_spec = spec.load(EXAMPLES / "who_benefits.toml")
        six = six_modifiers(effect_spec)
        mo = people["mo"]
        risk_cohort = _extract(service, mo, project_id, risk_spec)
        effect_cohorts = _effect_cohorts(
            service, mo, project_id, {"strata": effect_spec, "six": six}
        )
        result: dict[str, Any] = {
            "patients": patients,
            "cohort": len(risk_cohort.y),
            "effect_cohort": int(effect_cohorts["strata"].present.sum()),
            "risk": {
                "logistic": _risk(risk_cohort, risk_spec),
                "mlp": _risk(risk_cohort, _mlp(risk_spec)),
            },
            "effect": {
                "S-learner, DP stratified (example spec)": _effect(
                    effect_cohorts["strata"], effect_spec, truth
                ),
                "S-learner (linear), DP-SGD, six modifiers": _effect(
                    effect_cohorts["six"], six, truth
                ),
                "S-learner (MLP), DP-SGD, six modifiers": _effect(
                    effect_cohorts["six"],
                    dataclasses.replace(six, effect_architecture="mlp"),
                    truth,
                ),
                "T-learner (linear), DP-SGD": _effect(
                    effect_cohorts["six"],
                    dataclasses.replace(six, learner="t", modifiers=None),
                    truth,
                ),
            },
            "speed": _speed(risk_cohort),
            "secure_noise": _secure_cost(risk_cohort),
        }
        result["plots"] = _plots(result, plots)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if curve_sizes:
        result["curve"] = curve(curve_sizes)
        result["curve"]["plot"] = _curve_plot(result["curve"], plots)
    return result


def markdown(r: dict[str, Any]) -> str:
    lines = [
        "## DP models (`python -m benchmarks.models`)",
        "",
        f"{r['patients']:,} generated patients; DPP study cohort of {r['cohort']:,} people "
        f"with two years of follow-up for the risk models (`models/examples/dpp_cohort.sql`), "
        f"{r.get('effect_cohort', 0):,} with a 12-month HbA1c for the effect models "
        f"(`dpp_effect_cohort.sql`). Means over {len(SEEDS)} seeds (± sd); for risk "
        "models each seed also draws its own 75/25 train/held-out split.",
        "",
        "### Risk of type 2 diabetes within 2 years (held-out)",
        "",
        "| model | ε | AUROC | Brier | attack AUC |",
        "|---|---|---|---|---|",
    ]
    for name, series in r["risk"].items():
        for eps in EPSILONS:
            s = series[_key(eps)]
            attack = f"{s['attack_auc']:.3f}" if "attack_auc" in s else ""
            lines.append(
                f"| {name} | {_key(eps)} | {s['auroc']:.3f} ± {s.get('auroc_sd', 0):.3f} "
                f"| {s['brier']:.4f} | {attack} |"
            )
    lines += [
        "",
        "### Who benefits from the prevention programme (vs the generator's ground truth)",
        "",
        "| learner | ε | top-decile found | Qini | RMSE (mmol/mol) |",
        "|---|---|---|---|---|",
    ]
    for name, series in r["effect"].items():
        for eps in EPSILONS:
            s = series[_key(eps)]
            lines.append(
                f"| {name} | {_key(eps)} | {s['top_decile']:.2f} ± {s.get('top_decile_sd', 0):.2f} "
                f"| {s['qini']:.2f} | {s['rmse']:.2f} |"
            )
    if r.get("curve"):
        lines += ["", curve_markdown(r["curve"])]
    lines += [
        "",
        "### Speed: seconds per epoch on 100,000 rows (batch 1,024)",
        "",
        "| model | pipeline | non-private s | DP s | DP / non-private |",
        "|---|---|---|---|---|",
    ]
    for s in r["speed"]:
        if "error" in s:
            lines.append(f"| {s['model']} | {s['pipeline']} | — | {s['error']} | — |")
            continue
        lines.append(
            f"| {s['model']} | {s['pipeline']} | {s['non_private_s']:.3f} | {s['dp_s']:.3f} "
            f"| {s['ratio']:.2f}× |"
        )
    lines += [
        "",
        "### Secure randomness: CSPRNG noise and masks (seconds per epoch, best of 3)",
        "",
        "| model | non-private | DP, CSPRNG | DP, torch generator | CSPRNG / non-private "
        "| CSPRNG / torch generator |",
        "|---|---|---|---|---|---|",
    ]
    for s in r.get("secure_noise", []):
        lines.append(
            f"| {s['model']} | {s['non_private']:.3f} | {s['secure']:.3f} | {s['torch_rng']:.3f} "
            f"| {s['secure_vs_non_private']:.2f}× | {s['secure_vs_torch_rng']:.2f}× |"
        )
    lines.append("")
    lines += [f"![{p}](plots/{p})" for p in r.get("plots", [])]
    return "\n".join(lines)


def speed_only(rows: int = 100_000, features: int = 24) -> dict[str, Any]:
    """Only the speed rows, on ``rows`` random rows of ``features`` features:
    `python -m benchmarks.models speed` (DP-SGD with the hub's CSPRNG noise against
    non-private training and against torch-generator noise; ``--all`` adds every Opacus
    per-sample-gradient mode)."""
    from types import SimpleNamespace

    rng = np.random.default_rng(7)
    x = rng.standard_normal((rows, features)).astype(np.float32)
    y = (rng.random(rows) < 1 / (1 + np.exp(-x[:, 0]))).astype(np.float32)
    cohort: Any = SimpleNamespace(x=x, y=y)
    out: dict[str, Any] = {"rows": rows, "secure_noise": _secure_cost(cohort, rows)}
    if "--all" in sys.argv:  # also every Opacus per-sample-gradient mode (slow)
        out["speed"] = _speed(cohort, rows)
    return out


EFFECT_LEARNERS: dict[str, Callable[[spec.Spec], spec.Spec]] = {
    "S-learner, DP stratified (example spec)": lambda s: s,
    "S-learner (linear), DP-SGD, six modifiers": six_modifiers,
    "S-learner (linear), AdaSSP, six modifiers": lambda s: six_modifiers(s, "adassp"),
    "T-learner (linear), AdaSSP": lambda s: dataclasses.replace(
        six_modifiers(s, "adassp"), learner="t", modifiers=None
    ),
}


def _reference(cohort: cohorts.Cohort, s: spec.Spec, truth: dict[int, float]) -> dict[str, Any]:
    """A non-private reference from a causal-ML library: EconML's ``LinearDML`` (double
    machine learning with a linear final stage, i.e. a linear R-learner) with the spec's
    modifiers as its X and the other features as its W, on the same rows and encoding,
    scored like the hub's learners (5 seeds of its cross-fitting)."""
    from econml.dml import LinearDML

    known = np.array([k in truth for k in cohort.keys])
    rows = cohort.present & known
    true_benefit = np.array([truth[k] for k, ok in zip(cohort.keys, known, strict=True) if ok])
    assert cohort.treatment is not None
    mods = learners.modifier_columns(s) or list(range(cohort.x.shape[1]))
    others = [i for i in range(cohort.x.shape[1]) if i not in mods]
    lo, hi = s.outcome_bounds or (0.0, 1.0)
    runs = []
    for seed in SEEDS:
        est = LinearDML(discrete_treatment=True, cv=3, random_state=seed)
        with warnings.catch_warnings():
            # never-missing features give all-zero indicator columns: EconML warns that
            # its own intervals are invalid, which the benchmark does not use; scikit-learn
            # announces changes of its defaults
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("ignore", FutureWarning)
            est.fit(
                cohort.y[rows], cohort.treatment[rows], X=cohort.x[rows][:, mods],
                W=cohort.x[rows][:, others] if others else None,
            )  # fmt: skip
        # the effect of referral on the [0, 1]-scaled change; benefit is its fall
        benefit = -np.asarray(est.effect(cohort.x[known][:, mods])) * (hi - lo)
        runs.append({
            "rmse": metrics.rmse(benefit, true_benefit),
            "qini": metrics.qini(benefit, true_benefit),
            "top_decile": metrics.top_decile_overlap(benefit, true_benefit),
        })  # fmt: skip
    return {"inf": _summarise(runs)}


def effect_only(patients: int = 100_000, epsilons: tuple[float, ...] = (1.0, 3.0, 8.0, math.inf)
                ) -> dict[str, Any]:  # fmt: skip
    """Only the who-benefits rows: `python -m benchmarks.models effect [patients]`. The
    example spec's linear S-learner with each private learner (DP-SGD, AdaSSP) and the
    T-learner with AdaSSP, at ``epsilons`` (∞: the same learner without privacy: plain
    least squares for AdaSSP), 5 seeds each, against the generator's ground truth."""
    work = Path(tempfile.mkdtemp(prefix="bench-models-effect-"))
    try:
        service, people, project_id, src = _setup(patients, work)
        truth = _truth(src, work / "hub")
        effect_spec = spec.load(EXAMPLES / "who_benefits.toml")
        variants = {name: make(effect_spec) for name, make in EFFECT_LEARNERS.items()}
        encoded = _effect_cohorts(service, people["mo"], project_id, variants)
        effect = {
            name: _effect(encoded[name], variants[name], truth, epsilons) for name in variants
        }
        cohort = encoded[next(iter(variants))]
        effect["EconML LinearDML (reference, non-private)"] = _reference(cohort, effect_spec, truth)
        return {"patients": patients, "effect_cohort": int(cohort.present.sum()), "effect": effect}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def effect_markdown(r: dict[str, Any]) -> str:
    lines = [
        f"Who benefits, {r['patients']:,} generated patients (effect cohort "
        f"{r['effect_cohort']:,}); means over {len(SEEDS)} seeds (± sd):",
        "",
        "| learner | ε | top-decile found | Qini | RMSE (mmol/mol) |",
        "|---|---|---|---|---|",
    ]
    for name, series in r["effect"].items():
        for key, v in series.items():
            if not isinstance(v, dict):
                continue
            lines.append(
                f"| {name} | {key} | {v['top_decile']:.2f} ± {v.get('top_decile_sd', 0):.2f} "
                f"| {v['qini']:.2f} ± {v.get('qini_sd', 0):.2f} "
                f"| {v['rmse']:.2f} ± {v.get('rmse_sd', 0):.2f} |"
            )
    return "\n".join(lines)


TRIAL_REPEATS = 200


def trial_only(patients: int = 100_000, plots: Path = PLOTS) -> dict[str, Any]:
    """The emulated trial's average effect: `python -m benchmarks.models trial [patients]`.
    DP AIPW (``models.trial``) on the example study's cohort at ε = 1, 3 (and without
    noise), ``TRIAL_REPEATS`` fresh noise draws each, against the cohort's true mean
    benefit from the generator: bias, spread, 95% interval coverage, and the naive
    difference in means beside it. One population: the spread and the coverage are
    over the privacy noise (the nuisances' and the released sums'), the interval also
    counts the sampling variance."""
    from models import trial

    work = Path(tempfile.mkdtemp(prefix="bench-models-trial-"))
    try:
        service, people, project_id, src = _setup(patients, work)
        truth = _truth(src, work / "hub")
        study = trial.load_study(EXAMPLES / "dpp_trial.toml")
        cohort = _extract(service, people["mo"], project_id, study.spec)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    assert cohort.treatment is not None
    rows = cohort.present & np.array([k in truth for k in cohort.keys])
    true_ate = statistics.fmean(truth[k] for k, r in zip(cohort.keys, rows, strict=True) if r)
    lo, hi = study.spec.outcome_bounds or (0.0, 1.0)
    x, t, y = cohort.x[rows], cohort.treatment[rows], cohort.y[rows]
    out: dict[str, Any] = {"patients": patients, "cohort": int(rows.sum()), "true": true_ate}
    for eps in (1.0, 3.0, math.inf):
        runs = []
        for _ in range(TRIAL_REPEATS if math.isfinite(eps) else 1):
            est = trial.aipw(x, t, y, epsilon=None if math.isinf(eps) else eps, delta=1e-7)
            # benefit = the fall in HbA1c change, in mmol/mol
            low, high = -est.ci95[1] * (hi - lo), -est.ci95[0] * (hi - lo)
            runs.append({
                "estimate": -est.ate * (hi - lo), "naive": -est.naive * (hi - lo),
                "covered": float(low <= true_ate <= high), "ci_width": high - low,
            })  # fmt: skip
        s = _summarise(runs)
        s["relative_bias"] = (s["estimate"] - true_ate) / true_ate
        s["relative_error_sd"] = s.get("estimate_sd", 0.0) / true_ate
        out[_key(eps)] = s
    out["plot"] = _trial_plot(out, plots)
    return out


def _trial_plot(r: dict[str, Any], folder: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(5.5, 3.8), dpi=100)
    labels = ["1", "3", "inf"]
    for i, key in enumerate(labels):
        s = r[key]
        ax.errorbar(i - 0.1, s["naive"], yerr=s.get("naive_sd", 0), fmt="s", color="C1",
                    label="naive difference in means" if i == 0 else None)  # fmt: skip
        ax.errorbar(i + 0.1, s["estimate"], yerr=s.get("estimate_sd", 0), fmt="o", color="C0",
                    label="DP AIPW (± sd over noise draws)" if i == 0 else None)  # fmt: skip
    ax.axhline(r["true"], color="black", linestyle="--", label="truth (generator)")
    ax.set_xticks(range(len(labels)), ["ε = 1", "ε = 3", "no noise"])
    ax.set_ylabel("mean fall in 12-month HbA1c (mmol/mol)")
    ax.set_title("Emulated trial: average effect of DPP referral", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    name = "models_trial_ate.png"
    fig.savefig(folder / name)
    plt.close(fig)
    return name


def trial_markdown(r: dict[str, Any]) -> str:
    lines = [
        f"Emulated trial, {r['patients']:,} generated patients (cohort {r['cohort']:,}); "
        f"true average benefit {r['true']:.3f} mmol/mol; {TRIAL_REPEATS} noise draws:",
        "",
        "| ε | DP AIPW (mean ± sd) | relative bias | 95% CI coverage | CI width | naive |",
        "|---|---|---|---|---|---|",
    ]
    for key in ("1", "3", "inf"):
        s = r[key]
        lines.append(
            f"| {key} | {s['estimate']:.3f} ± {s.get('estimate_sd', 0):.3f} "
            f"| {s['relative_bias']:+.1%} | {s['covered']:.0%} | {s['ci_width']:.2f} "
            f"| {s['naive']:.3f} ± {s.get('naive_sd', 0):.3f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__" and sys.argv[1:2] == ["trial"]:
    res = trial_only(int(sys.argv[2]) if len(sys.argv) > 2 else 100_000)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"models_trial_{res['patients']}.json").write_text(json.dumps(res, indent=2))
    print(trial_markdown(res))
elif __name__ == "__main__" and sys.argv[1:2] == ["speed"]:
    print(json.dumps(speed_only(), indent=2))
elif __name__ == "__main__" and sys.argv[1:2] == ["curve"]:
    sizes = tuple(int(a) for a in sys.argv[2:]) or CURVE_SIZES
    RESULTS.mkdir(exist_ok=True)
    done = RESULTS / "models_curve.json"

    def keep(point: dict[str, Any]) -> None:
        """Sizes measured earlier stay; a newer measurement of a size replaces it."""
        old = json.loads(done.read_text())["points"] if done.exists() else []
        points = [p for p in old if p["patients"] != point["patients"]] + [point]
        res = {"points": sorted(points, key=lambda p: p["patients"])}
        res["plot"] = _curve_plot(res, PLOTS)
        done.write_text(json.dumps(res, indent=2))

    curve(sizes, on_point=keep)
    print(curve_markdown(json.loads(done.read_text())))
elif __name__ == "__main__" and sys.argv[1:2] == ["effect"]:
    res = effect_only(int(sys.argv[2]) if len(sys.argv) > 2 else 100_000)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"models_effect_{res['patients']}.json").write_text(json.dumps(res, indent=2))
    print(effect_markdown(res))
elif __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    res = run(n)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "models.json").write_text(json.dumps(res, indent=2, default=str))
    print(markdown(res))
