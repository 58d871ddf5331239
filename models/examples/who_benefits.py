"""Study script: who benefits from referral to the NHS Diabetes Prevention Programme?

    HUB_URL=http://127.0.0.1:8000 HUB_API_KEY=<your key> \
        python -m models.examples.who_benefits <project-id>

Trains the DP S-learner of ``who_benefits.toml`` inside the hub (ε = 3 plus the DP
metrics' ε, charged to the project's budget; the plan is checked against the budget
first), prints the DP held-out mean benefit, submits the model for release and, once a
steward has approved it, predicts the benefit of three archetypes from raw features.
Nothing here sees the generator's ground truth: ``python -m benchmarks.models`` checks
the estimates against it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from models import spec
from models.workbench import Workbench, WorkbenchError

HERE = Path(__file__).parent


def main(project_id: str) -> None:
    bench = Workbench.connect()
    s = spec.load(HERE / "who_benefits.toml")
    bench.ensure_budget(project_id, [s])  # refuse before spending anything
    model = bench.train(project_id, s)
    m = model.card["metrics"]  # DP held-out metrics
    print(
        f"{s.name}: ε={model.card['epsilon_total']:.2f}; mean expected fall in 12-month "
        f"HbA1c with referral {m['mean_predicted_benefit']:.2f} mmol/mol (DP, held out)"
    )
    output_id = bench.submit(project_id, model.model_id)
    print(f"sent for release review as {output_id}")
    try:
        released = bench.release(project_id, model.model_id)
    except WorkbenchError as exc:
        print(f"weights stay in the hub until a steward approves the release ({exc.code})")
        return
    # who: the expected benefit of archetypes, given as raw features (encoded inside)
    for label, person in (
        ("age 45, BMI 38, IMD 7", {"age": 45, "under_60": 1, "bmi": 38, "imd_decile": 7}),
        ("age 70, BMI 26, IMD 7", {"age": 70, "under_60": 0, "bmi": 26, "imd_decile": 7}),
        ("age 45, BMI 38, IMD 2", {"age": 45, "under_60": 1, "bmi": 38, "imd_decile": 2,
                                   "most_deprived": 1}),
    ):  # fmt: skip
        raw = pd.DataFrame([{"most_deprived": 0, "hba1c": 44.5, "sex": "F",
                             "ethnicity": "White", **person}])  # fmt: skip
        print(f"  {label}: expected benefit {released.predict(raw)[0]:.2f} mmol/mol")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m models.examples.who_benefits <project-id>")
    main(sys.argv[1])
