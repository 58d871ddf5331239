"""Study script: who benefits from referral to the NHS Diabetes Prevention Programme?

    HUB_HOME=var HUB_API_KEY=<your key> python -m models.examples.who_benefits <project-id>

Trains the DP S-learner of ``who_benefits.toml`` (ε = 3, charged to the project's
budget) and prints each predicted-benefit decile's mean, the features that mark the
people expected to benefit most, and the model card's location. Nothing here sees the
generator's ground truth: ``python -m benchmarks.models`` checks the estimates against it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from models import spec
from models.workbench import Workbench

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
    # who: the expected benefit of archetypes, given as raw features (encoded inside)
    for label, person in (
        ("age 45, BMI 38, IMD 7", {"age": 45, "under_60": 1, "bmi": 38, "imd_decile": 7}),
        ("age 70, BMI 26, IMD 7", {"age": 70, "under_60": 0, "bmi": 26, "imd_decile": 7}),
        ("age 45, BMI 38, IMD 2", {"age": 45, "under_60": 1, "bmi": 38, "imd_decile": 2,
                                   "most_deprived": 1}),
    ):  # fmt: skip
        raw = pd.DataFrame([{"most_deprived": 0, "hba1c": 44.5, "sex": "F",
                             "ethnicity": "White", **person}])  # fmt: skip
        benefit = model.predict(raw)[0]
        print(f"  {label}: expected benefit {benefit:.2f} mmol/mol")
    print(f"card: {model.folder}/card.md")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m models.examples.who_benefits <project-id>")
    main(sys.argv[1])
