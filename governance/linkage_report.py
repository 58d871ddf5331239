"""What a release says about its linkage, in the form researchers and the public read.

A release built from a region's feeds records in its manifest how its records were
linked to people (``connectors.linkage``). Researchers need it to judge bias (linkage
error falls unevenly on groups), so the data dictionary and ``/v1/datasets`` carry it:
the feeds with their organisations and data controllers, the share of each feed's
records linked by each method, the model's threshold, and, where the release was built
from generated feeds, precision, recall and F1 against the generator's truth overall and
by group. Rates only: no counts of people per group.
"""

from __future__ import annotations

from typing import Any

SCORES = ("precision", "recall", "f1")


def public_summary(manifest: dict[str, Any]) -> dict[str, Any] | None:
    """The linkage section for researchers (None when the release was not linked)."""
    linkage = manifest.get("linkage")
    if not isinstance(linkage, dict):
        return None
    model = linkage.get("model", {})
    out: dict[str, Any] = {
        "method": (
            "deterministic on a valid NHS number, then probabilistic (Fellegi-Sunter, "
            "Splink) on names, date of birth, sex and postcode"
        ),
        "engine": model.get("engine"),
        "match_probability_threshold": model.get("threshold"),
        "feeds": [
            {
                **{k: f.get(k) for k in ("name", "organisation", "controller")},
                "records": linkage.get("match_rates", {}).get(f["name"], {}).get("records", 0),
                "linked_by": linkage.get("match_rates", {}).get(f["name"], {}).get("share", {}),
            }
            for f in linkage.get("feeds", [])
        ],
    }
    truth = linkage.get("against_truth")
    out["against_truth"] = None
    if isinstance(truth, dict):
        out["against_truth"] = {
            **{k: truth.get(k) for k in SCORES},
            "by_group": {
                group: {value: {k: s.get(k) for k in SCORES} for value, s in values.items()}
                for group, values in truth.get("by_group", {}).items()
            },
        }
    return out
