"""Model cards: what the modeller sees (DP metrics only) and the steward's extra page.

The card never carries an exact statistic of the cohort: not its size, not exact
metrics, not an exact attack result. Those go to ``steward.json`` beside the model.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import IO, Any

from governance import clock
from models import dpsgd, learners
from models.spec import Spec

AUDIT_LIMITS = (
    "What the audit can show: that a model leaks membership (an attack doing better than "
    "its ε allows means the training or the accounting is broken). What it cannot show: "
    "that the model is private. Attacks are lower bounds; the guarantee is the "
    "accountant's ε, which rests on the cohort being person-local and on the DP-SGD "
    "implementation. Under ε = 1 the best possible attack has AUC 0.73 and TPR at most "
    "e^ε × FPR + δ, so a weak attack result is expected either way."
)


def now() -> str:
    """The hub's one timestamp format (``governance.clock``)."""
    return clock.now()


def build(
    *,
    model_id: str,
    spec: Spec,
    project_id: str,
    release: str,
    author: str,
    columns: list[str],
    planned_rows: int,
    delta: float,
    fits: list[dpsgd.FitResult],
    dp_metrics: dict[str, Any],
) -> dict[str, Any]:
    spent = max(f.epsilon for f in fits)
    return {
        "model_id": model_id,
        "name": spec.name,
        "project": project_id,
        "release": release,
        "author": author,
        "created_at": now(),
        "model_kind": spec.kind,
        "learner": spec.learner if spec.kind == "effect" else None,
        "architecture": "linear" if spec.linear else f"mlp(tanh, {spec.hidden})",
        "hidden": spec.hidden,
        "outcome": spec.outcome,
        "outcome_type": spec.outcome_type,
        "outcome_bounds": list(spec.outcome_bounds) if spec.outcome_bounds else None,
        "treatment": spec.treatment,
        "modifiers": spec.modifiers,
        "modifier_columns": learners.modifier_columns(spec),
        "cohort_sql_sha256": hashlib.sha256(spec.sql.encode()).hexdigest(),
        "cohort_sql": spec.sql,
        "features": {
            "numeric": {k: list(v) for k, v in spec.numeric.items()},
            "categorical": spec.categorical,
            "encoded_columns": columns,
            "scaling": "declared bounds, clipped; missing → midpoint + indicator",
        },
        "privacy_unit": "one person (the cohort is checked person-local, one row per person)",
        "planned_rows": planned_rows,
        "epsilon": spent,
        "epsilon_target": spec.epsilon,
        "metrics_epsilon": dp_metrics["epsilon"],
        "epsilon_total": spent + dp_metrics["epsilon"],
        "delta": delta,
        **_training_record(spec, fits),
        "metrics": dp_metrics,
        "audit_limits": AUDIT_LIMITS,
        "intended_use": intended_use(spec, release),
        "limitations": limitations(spec, spent),
    }


_one_release = {  # the DP-SGD fields a one-release learner does not have
    "max_grad_norm": None, "epochs": None, "sample_rate": None, "expected_batch_size": None,
    "steps": None, "optimizer": None, "learning_rate": None, "grad_sample_mode": None,
}  # fmt: skip


def _training_record(spec: Spec, fits: list[dpsgd.FitResult]) -> dict[str, Any]:
    """How the model was trained and accounted, in one form for every learner: the
    method, accountant, composition, noise multiplier (noise sd / sensitivity) and, for
    each learner, its own parameters (DP-SGD's steps; AdaSSP's ρ, σ and Δ)."""
    arms = (
        "parallel (disjoint treatment arms)"
        if spec.kind == "effect" and spec.learner == "t"
        else None
    )
    common = {
        "method": spec.learning_method,
        "secure_rng": True,
        "seed": spec.training.seed,  # initial weights only (DP-SGD); AdaSSP has none
    }
    if spec.learning_method == "strata":
        return {
            **_one_release,
            **common,
            "accountant": "zCDP (Gaussian mechanism; Canonne-Kamath-Steinke conversion to (ε, δ))",
            "composition": "one stratified release: noisy counts and outcome sums per stratum "
            "and arm (each person in one: parallel composition), two Gaussian releases "
            "composed in zCDP; DP held-out metrics composed sequentially",
            "noise_multiplier": fits[0].noise_multiplier,
            "mechanism": [f.mechanism for f in fits],
            "rng": "OS CSPRNG (os.urandom) for the Gaussian noise",
        }
    if spec.learning_method == "adassp":
        return {
            **common,
            "accountant": "zCDP (Gaussian mechanism; Canonne-Kamath-Steinke conversion to (ε, δ))",
            "composition": (arms or "one AdaSSP fit")
            + "; three Gaussian releases (λ_min, XᵀX, Xᵀy) composed in zCDP; DP held-out "
            "metrics composed sequentially",
            "noise_multiplier": fits[0].noise_multiplier,
            "mechanism": [f.mechanism for f in fits],
            "max_grad_norm": None,
            "epochs": None,
            "sample_rate": None,
            "expected_batch_size": None,
            "steps": None,
            "optimizer": None,
            "learning_rate": None,
            "grad_sample_mode": None,
            "rng": "OS CSPRNG (os.urandom) for the Gaussian noise",
        }
    return {
        **common,
        "accountant": "rdp (Opacus RDPAccountant)",
        "composition": (arms or "single DP-SGD run")
        + "; DP held-out metrics composed sequentially",
        "noise_multiplier": fits[0].noise_multiplier,
        "max_grad_norm": spec.training.max_grad_norm,
        "epochs": spec.training.epochs,
        "sample_rate": fits[0].sample_rate,
        "expected_batch_size": spec.training.batch_size,
        "steps": sum(f.steps for f in fits),
        "optimizer": spec.training.optimizer,
        "learning_rate": spec.training.learning_rate,
        "grad_sample_mode": spec.training.grad_sample_mode,
        "rng": "OS CSPRNG (os.urandom) for Poisson masks and Gaussian noise",
    }


def intended_use(spec: Spec, release: str) -> str:
    """What the model is for, in the words a clinician reviewing it would use."""
    if spec.kind == "effect":
        what = (
            f"research into who benefits from {spec.treatment}: the expected change in "
            f"{spec.outcome} for a person like those in the cohort, if treated"
        )
    else:
        what = f"research into the risk of {spec.outcome} among people like those in the cohort"
    return (
        f"For {what}, in the population of release {release} (the cohort is the one its "
        "SQL defines). Not for decisions about individual patients without external "
        "validation and clinical governance approval."
    )


def limitations(spec: Spec, epsilon: float) -> list[str]:
    """What a reader must keep in mind (the same for every model of this recipe)."""
    out = [
        f"Trained with differential privacy (ε = {epsilon:.3g}): noise added to protect "
        "each person costs accuracy, most for small cohorts and rare outcomes.",
        "Held-out metrics shown to the modeller are noisy (differentially private); "
        "intervals are wide for small held-out sets.",
        "Validated only on held-out people of the same release: performance elsewhere "
        "(other regions, later years, other recording practices) is unknown.",
        "Features are those the cohort SQL selects; anything not recorded in primary or "
        "secondary care (diet, exercise, income) is not seen by the model.",
    ]
    if spec.kind == "effect":
        out.append(
            "Effects are estimated from observational records: they are causal only if "
            "every confounder of treatment and outcome is among the features."
        )
    return out


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def markdown(card: dict[str, Any]) -> str:
    """The model card as a human-readable page (what the modeller may read)."""
    m = card["metrics"]
    lines = [
        f"# Model card: {card['name']} ({card['model_id']})",
        "",
        f"- Project: {card['project']}; release: {card['release']}",
        f"- Author: {card['author']}; trained: {card['created_at']}",
        f"- Model: {card['model_kind']} ({card['architecture']})"
        + (f", {card['learner'].upper()}-learner" if card.get("learner") else ""),
        f"- Outcome: {card['outcome']} ({card['outcome_type']})"
        + (f"; treatment: {card['treatment']}" if card.get("treatment") else ""),
        f"- Cohort SQL sha256: {card['cohort_sql_sha256']}",
        "",
        "## Privacy",
        "",
        f"- Unit: {card['privacy_unit']}",
        f"- Training ε = {card['epsilon']:.4g} (target {card['epsilon_target']}), "
        f"δ = {card['delta']:.3g}; held-out metrics ε = {card['metrics_epsilon']:.4g}; "
        f"total ε = {card['epsilon_total']:.4g}",
        f"- Accountant: {card['accountant']}; composition: {card['composition']}",
        *_method_lines(card),
        f"- Randomness: {card['rng']}",
        "",
        "## Held-out metrics (differentially private)",
        "",
    ]
    for key, value in m.items():
        if key != "thresholds":
            lines.append(f"- {key}: {_fmt(value)}")
    for r in m.get("thresholds", []):
        lines.append(
            f"- at risk ≥ {r['threshold']}: sensitivity {_fmt(r['sensitivity'])}, "
            f"specificity {_fmt(r['specificity'])}"
        )
    if card.get("intended_use"):
        lines += ["", "## Intended use", "", card["intended_use"]]
    if card.get("limitations"):
        lines += ["", "## Limitations", ""] + [f"- {x}" for x in card["limitations"]]
    lines += ["", "## What an audit can and cannot show", "", card["audit_limits"], ""]
    lines += [f"Artifact sha256: {card.get('artifact_sha256', '')}", ""]
    return "\n".join(lines)


def _method_lines(card: dict[str, Any]) -> list[str]:
    if card.get("method") == "strata":
        lines = [
            "- Learner: DP stratified analysis: Gaussian noise on each stratum's count and "
            "outcome sum per arm, then weighted least squares of the outcome on treatment × "
            "modifiers over the strata kept"
        ]
        for m in card.get("mechanism", []):
            sigma, strata_ = m["sigma"], m["strata"]
            cuts = "; ".join(f"{k}: {', '.join(v)}" for k, v in strata_.items())
            lines.append(
                f"- ρ = {m['rho']:.4g}; noise sd: counts {sigma['counts']:.4g} (sensitivity 1), "
                f"sums {sigma['sums']:.4g} (sensitivity ½); {m['cells_kept']:,} of "
                f"{m['cells']:,} stratum-arm cells kept (noisy count above "
                f"{m['threshold_count']:.3g}); strata: {cuts}"
            )
        return lines
    if card.get("method") == "adassp":
        lines = [
            "- Learner: AdaSSP (sufficient-statistics perturbation, Wang 2018): Gaussian "
            "noise on XᵀX and Xᵀy, ridge from a noisy smallest eigenvalue"
        ]
        for m in card.get("mechanism", []):
            sigma, sens = m["sigma"], m["sensitivity"]
            lines.append(
                f"- ρ = {m['rho']:.4g}; noise sd (sensitivity): λ_min {sigma['lambda_min']:.4g} "
                f"({sens['lambda_min']:.4g}), XᵀX {sigma['xtx']:.4g} ({sens['xtx']:.4g}), "
                f"Xᵀy {sigma['xty']:.4g} ({sens['xty']:.4g}); ridge {m['ridge']:.4g}"
            )
        return lines
    return [
        f"- Noise multiplier {card['noise_multiplier']:.4g}, clipping norm "
        f"{card['max_grad_norm']}, sample rate {card['sample_rate']:.4g} (planned for "
        f"{card['planned_rows']:,} people), {card['epochs']} epochs, {card['steps']} steps"
    ]


def calibration_plot(
    bins: list[dict[str, float]],
    title: str,
    path: Path | IO[bytes],
    *,
    intercept: float | None = None,
    slope: float | None = None,
) -> None:
    """The steward's calibration plot (exact held-out data: never on the card), with the
    calibration intercept and slope written in it when known (perfect: 0 and 1)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=100)
    pred = [b["predicted"] for b in bins]
    obs = [b["observed"] for b in bins]
    top = max([*pred, *obs, 0.05]) * 1.1
    ax.plot([0, top], [0, top], color="grey", linestyle="--", label="perfect calibration")
    ax.plot(pred, obs, marker="o", label="held-out groups of predicted risk")
    ax.set_title(f"{title}: calibration", fontsize=10)
    ax.set_xlabel("mean predicted risk")
    ax.set_ylabel("observed rate")
    if intercept is not None and slope is not None:
        ax.text(
            0.97, 0.03, f"calibration intercept {intercept:+.3f} (perfect 0)\n"
            f"calibration slope {slope:.3f} (perfect 1)", transform=ax.transAxes,
            ha="right", va="bottom", fontsize=8,
        )  # fmt: skip
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
