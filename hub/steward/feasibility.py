"""Feasibility runs: each company's trial feasibility spec beside its DP answer.

A feasibility answer is released to its project at once (DP counts at a pre-approved,
fixed ε: no disclosure review is needed); the steward reviews afterwards what was asked
and answered, and can suspend a project whose questions stray from its purpose.
"""

from __future__ import annotations

from typing import Any, Final

from fastapi import APIRouter, Response

from hub.steward.web import PREFIX, HtmlRoute, SignedIn

router = APIRouter(prefix=PREFIX, route_class=HtmlRoute, include_in_schema=False)
SHOWN: Final = 100  # the newest runs shown


@router.get("/feasibility")
def feasibility(desk: SignedIn) -> Response:
    runs: list[dict[str, Any]] = []
    for project in desk.gov.projects.find():
        for run in desk.gov.feasibility.find(desk.principal, project.project_id):
            runs.append({**run, "project": project})
    runs.sort(key=lambda r: str(r["created_at"]), reverse=True)
    for run in runs[:SHOWN]:
        run["answer"] = desk.gov.feasibility.get(
            desk.principal, run["project"].project_id, run["run_id"]
        )
    return desk.page("feasibility.html", section="feasibility", runs=runs[:SHOWN], total=len(runs))
