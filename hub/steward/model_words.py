"""Model-card metrics in words, with units and sign conventions, for the steward's page.

>>> label("auroc")
'Discrimination (AUROC)'
>>> shown("outcome_rate", 0.08123)
'8.1%'
>>> shown("mean_predicted_benefit", -1.23456)
'−1.23 mmol/mol'
"""

from __future__ import annotations

import re
from typing import Any, Final

# key -> (words, what the number means, unit: "%", "mmol/mol" or "")
METRICS: Final[dict[str, tuple[str, str, str]]] = {
    "auroc": (
        "Discrimination (AUROC)",
        "chance that a person with the outcome is ranked above one without: 0.5 is "
        "chance, 1 is perfect",
        "",
    ),
    "brier": ("Brier score", "mean squared error of the predicted risk: lower is better", ""),
    "outcome_rate": ("Outcome rate", "share of held-out people with the outcome", "%"),
    "calibration_intercept": (
        "Calibration intercept",
        "0 when predicted risks are right on average; above 0, risks are too low",
        "",
    ),
    "calibration_slope": (
        "Calibration slope",
        "1 is ideal; below 1, predictions are too extreme; above 1, too modest",
        "",
    ),
    "held_out_rows": ("Held-out people", "people kept out of training for evaluation", ""),
    "held_out_people": ("Held-out people (noisy)", "differentially private count", ""),
    "mean_predicted_benefit": (
        "Mean predicted effect of treatment",
        "on 12-month HbA1c: negative is a fall (a benefit)",
        "mmol/mol",
    ),
    "epsilon": ("ε spent on these metrics", "privacy cost of evaluating, charged", ""),
    "attack_auc": (
        "Attack AUC (membership inference)",
        "how well an attacker tells training members from others: 0.5 is no signal",
        "",
    ),
    "loss_threshold_auc": (
        "Loss-threshold attack AUC",
        "the simplest attack, on each person's loss: 0.5 is no signal",
        "",
    ),
    "members": ("People in the attack test", "training members compared with non-members", ""),
    "tpr_at_fpr_1pct": (
        "Attack true-positive rate at 1% false positives",
        "members found when almost no non-member is accused: near 0.01 is no signal",
        "",
    ),
    "tpr_at_fpr_0_1pct": (
        "Attack true-positive rate at 0.1% false positives",
        "near 0.001 is no signal; needs 1,000 or more non-members to measure",
        "",
    ),
}


def label(key: str) -> str:
    return METRICS.get(key, (key.replace("_", " ").capitalize(), "", ""))[0]


def meaning(key: str) -> str:
    return METRICS.get(key, ("", "", ""))[1]


def shown(key: str, value: Any) -> str:
    """A metric rounded for reading, with its unit (percentages as %)."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return str(value)
    unit = METRICS.get(key, ("", "", ""))[2]
    if unit == "%":
        return f"{value * 100:.1f}%"
    if isinstance(value, int):
        return f"{value:,}"
    text = f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    if unit == "mmol/mol":
        text = f"{value:.2f}".replace("-", "−") + " mmol/mol"
    return text


_CLAUSE = re.compile(
    r"\s+(SELECT|FROM|LEFT JOIN|INNER JOIN|JOIN|WHERE|GROUP BY|HAVING|ORDER BY)\b", re.I
)


def sql_text(sql: str) -> str:
    """One-line SQL broken before its main clauses, for reading (text already laid out
    on several lines is left as its author wrote it).

    >>> print(sql_text("SELECT a FROM t WHERE b = 1"))
    SELECT a
    FROM t
    WHERE b = 1
    """
    if "\n" in sql.strip():
        return sql.strip()
    return _CLAUSE.sub(lambda m: "\n" + m.group(1), sql.strip())


def card_text(card: dict[str, Any]) -> str:
    """The card as the modeller reads it (Markdown), or its fields one per line."""
    from models import cards

    try:
        return cards.markdown(card)
    except (KeyError, TypeError, ValueError):
        return "\n".join(f"{k.replace('_', ' ')}: {v}" for k, v in card.items())
