"""The linkage summary of a release built from feeds, as `hub ingest` and the demo print it."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from hub.console import console as stderr


def print_linkage(linkage: dict[str, Any] | None, to: Console | None = None) -> None:
    """The linkage summary of a release built from feeds (nothing for other sources)."""
    if not linkage:
        return
    console = to or stderr
    model = linkage.get("model", {})
    console.print(
        f"linked {sum(r['records'] for r in linkage['match_rates'].values()):,} feed records "
        f"to {linkage['people_in_index']:,} people ({linkage['people_before']:,} known before) "
        f"with {model.get('engine', 'splink')}, match probability ≥ {model.get('threshold')}"
    )
    table = Table("feed", "records", "known", "NHS no.", "probabilistic", "new person",
                  "data controller", box=None)  # fmt: skip
    for feed in linkage["feeds"]:
        rates = linkage["match_rates"].get(feed["name"], {"records": 0, "share": {}})
        share = rates["share"]
        table.add_row(
            feed["name"], f"{rates['records']:,}",
            *(f"{share.get(m, 0):.1%}" for m in ("known", "nhs", "probabilistic", "new person")),
            feed["controller"],
        )  # fmt: skip
    console.print(table)
    truth = linkage.get("against_truth")
    if truth:
        worst: tuple[str, dict[str, Any]] = min(
            truth["by_group"].get("ethnic_group", {}).items(),
            key=lambda kv: float(kv[1]["recall"]),
            default=("", {}),
        )
        line = (
            f"against the generator's truth: precision {truth['precision']:.4f}, "
            f"recall {truth['recall']:.4f}, F1 {truth['f1']:.4f}"
        )
        if worst[0]:
            line += f"; lowest recall by ethnic group {worst[1]['recall']:.4f} ({worst[0]})"
        console.print(line)
