"""``hub demo``'s intervention test: one emulated trial and one who-benefits model, each
printed against the generator's ground truth.

The demo's population is synthetic, so the truth is known (the generator wrote it beside
the population; it is never loaded into a release) and printing it beside the DP answers
is the point: a newcomer sees how near a private estimate comes. The trial goes the way
a real one does: the modeller runs it (ε charged), the demo steward approves the
estimate after reading its protocol, and only then is it read.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from rich.console import Console

from models import metrics, training
from models import trial as trials
from models.examples import EXAMPLES
from models.trainer import Trainer

if TYPE_CHECKING:
    from governance.access.people import Principal
    from governance.queries import QueryService


def _ground_truth(population: Path) -> pd.DataFrame:
    """Everyone with a first prediabetes diagnosis: the features the study's cohort SQL
    derives (from the generator's own values) and the true benefit of referral."""
    truth = pd.read_parquet(population / "ground_truth")
    people = pd.read_parquet(
        population / "patients", columns=["patient_id", "date_of_birth", "sex", "ethnicity"]
    )
    g = truth.merge(people, on="patient_id")
    age = pd.to_datetime(g["index_date"]).dt.year - pd.to_datetime(g["date_of_birth"]).dt.year
    return pd.DataFrame({
        "age": age, "under_60": (age < 60).astype(int), "bmi": g["bmi_at_index"],
        "hba1c": g["hba1c_at_index"], "imd_decile": g["imd_decile"],
        "most_deprived": (g["imd_decile"] <= 3).astype(int), "sex": g["sex"],
        "ethnicity": g["ethnicity"], "true_benefit": -g["effect_hba1c_change_12m"],
    })  # fmt: skip


def show_against_truth(
    service: QueryService,
    *,
    modeller: Principal,
    steward: Principal,
    project_id: str,
    population: Path,
    out: Console,
) -> dict[str, Any]:
    """Run the example trial (reviewed and approved by ``steward``) and score the project's
    latest who-benefits model; print both beside the truth; return the figures."""
    truth = _ground_truth(population)
    true_mean = float(truth["true_benefit"].mean())
    out.rule("Testing the intervention against the truth (synthetic, so the truth is known)")
    study = trials.load_study(EXAMPLES / "dpp_trial.toml")
    receipt = trials.run(service, modeller, project_id, study)
    output_id = receipt["output_id"]
    out.print(
        f"emulated trial {receipt['trial_id']} ({study.spec.name}): ε = "
        f"{receipt['epsilon']:.2f} charged; estimate sent for review as {output_id}"
    )
    service.gov.outputs.review(steward, output_id, decision="approve", reason="demo review")
    est = service.gov.outputs.download(modeller, output_id)
    # the study's effect is on the HbA1c change: its benefit is the fall
    low, high = -est["ci95"][1], -est["ci95"][0]
    out.print(
        f"  steward approved it; average fall in 12-month HbA1c with referral: DP AIPW "
        f"[bold]{-est['average_effect']:.2f}[/] mmol/mol (95% CI {low:.2f} to {high:.2f}); "
        f"naive difference {-est['naive_difference']:.2f}; "
        f"[bold]truth {true_mean:.2f}[/] (mean over the {len(truth):,} eligible people)",
        soft_wrap=True,  # one line, whatever the terminal: a reader compares the figures
    )
    result: dict[str, Any] = {
        "trial": {"estimate": -est["average_effect"], "ci95": [low, high],
                  "naive": -est["naive_difference"], "truth": true_mean},
    }  # fmt: skip
    cards = [
        c for c in Trainer(service, modeller).models(project_id) if c["model_kind"] == "effect"
    ]
    if not cards:
        out.print("  no who-benefits model in the project to score")
        return result
    card = cards[0]
    model = training.load(service, project_id, card["model_id"])
    predicted = np.asarray(model.predict(truth), dtype=np.float64)
    actual = truth["true_benefit"].to_numpy(dtype=np.float64)
    share = metrics.top_decile_overlap(predicted, actual)
    out.print(
        f"  who benefits ({card['model_id']}, {_learner(card)}, "
        f"ε {card['epsilon']:.2f}): finds [bold]{share:.0%}[/] of the true top-decile "
        f"benefiters (chance: 10%); RMSE of the individual benefit "
        f"{metrics.rmse(predicted, actual):.2f} mmol/mol; true benefit ranges "
        f"{actual.min():.1f} to {actual.max():.1f}",
        soft_wrap=True,
    )
    result["who_benefits"] = {"top_decile": share, "rmse": metrics.rmse(predicted, actual)}
    return result


def _learner(card: dict[str, Any]) -> str:
    name = f"{card.get('learner', 's').upper()}-learner"
    if card.get("method") == "strata":
        [mech] = card["mechanism"]
        return f"DP stratified {name}, {mech['cells_kept']} of {mech['cells']} cells kept"
    return f"{name}, {card.get('method', 'dp-sgd')}"


__all__ = ["show_against_truth"]
