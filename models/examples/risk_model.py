"""Study script: a DP risk model for type 2 diabetes after a prediabetes diagnosis.

Run as a modeller named as a trainer of an approved project, against a running hub
(``hub serve``); training happens inside the hub, and rows never reach this script:

    HUB_URL=http://127.0.0.1:8000 HUB_API_KEY=<your key> \
        python -m models.examples.risk_model <project-id>

It trains the DP logistic regression of ``risk_model.toml`` and a DP MLP of the same
cohort (each charged to the project's budget; the whole plan is checked against the
budget first), prints their DP held-out metrics, and leaves both model cards in the
project's workspace.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from models import spec
from models.workbench import Workbench

HERE = Path(__file__).parent


def main(project_id: str) -> None:
    bench = Workbench.connect()
    logistic = spec.load(HERE / "risk_model.toml")
    mlp = dataclasses.replace(
        logistic, kind="mlp", name=logistic.name + "-mlp", epsilon=3.0, hidden=8,
        training=dataclasses.replace(logistic.training, batch_size=512, learning_rate=0.02,
                                     epochs=60),
    )  # fmt: skip
    bench.ensure_budget(project_id, [logistic, mlp])  # refuse before spending anything
    for s in (logistic, mlp):
        model = bench.train(project_id, s)
        m = model.card["metrics"]  # DP held-out metrics (charged with the training)
        print(
            f"{s.name}: ε={model.card['epsilon_total']:.2f} (training {model.card['epsilon']:.2f}"
            f" + metrics {model.card['metrics_epsilon']:.2f}); DP held-out AUROC "
            f"{m['auroc']:.3f}, Brier {m['brier']:.4f}, ~{m['held_out_people']:,} people"
        )
        print(f"  model {model.model_id}: `hub models list --project {project_id}`")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m models.examples.risk_model <project-id>")
    main(sys.argv[1])
