"""Project requests and decisions: approve (narrowing grants), reject, suspend."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Response

from governance.access.projects import DEFAULT_SDC_ROUNDING, DEFAULT_SDC_THRESHOLD, Project
from governance.errors import InvalidRequest
from governance.privacy.accounting import DEFAULT_PROJECT_DELTA
from hub.steward.web import PREFIX, CheckedForm, HtmlRoute, SignedIn, act, finite

router = APIRouter(prefix=PREFIX, route_class=HtmlRoute, include_in_schema=False)
BACK = f"{PREFIX}/projects"
Reason = Annotated[str, Form(max_length=2000)]


@router.get("/projects")
def projects(desk: SignedIn) -> Response:
    every = desk.gov.projects.find()
    by_status: dict[str, list[Project]] = {}
    for project in every:
        by_status.setdefault(project.status, []).append(project)
    budgets = {}
    for project in every:
        if project.epsilon_total is not None:
            budgets[project.project_id] = desk.gov.ledger.state(project.project_id)
    return desk.page(
        "projects.html",
        section="projects",
        requested=by_status.get("requested", []),
        approved=by_status.get("approved", []),
        suspended=by_status.get("suspended", []),
        decided=by_status.get("rejected", []) + by_status.get("closed", []),
        budgets=budgets,
        sdc=(DEFAULT_SDC_THRESHOLD, DEFAULT_SDC_ROUNDING),
        # a release built from feeds: what the approval lists, and each controller's say
        feeds=desk.gov.release_feeds(),
        sources={p.project_id: desk.gov.sources.for_project(p.project_id) for p in every},
    )


def _grants(chosen: list[str]) -> dict[str, list[str]]:
    """``table.column`` checkboxes as grants; the governance layer checks they narrow."""
    grants: dict[str, list[str]] = {}
    for item in chosen:
        table, dot, column = item.partition(".")
        if not dot:
            raise InvalidRequest(f"not a table.column: {item}")
        grants.setdefault(table, []).append(column)
    if not grants:
        raise InvalidRequest("grant at least one column")
    return grants


@router.post("/projects/{project_id}/approve")
def approve(
    project_id: str,
    desk: CheckedForm,
    epsilon: Annotated[str, Form(max_length=40)] = "",
    delta: Annotated[str, Form(max_length=40)] = str(DEFAULT_PROJECT_DELTA),
    days: Annotated[str, Form(max_length=10)] = "",
    grant: Annotated[list[str] | None, Form(max_length=500)] = None,
    sdc_threshold: Annotated[str, Form(max_length=10)] = str(DEFAULT_SDC_THRESHOLD),
    sdc_rounding: Annotated[str, Form(max_length=10)] = str(DEFAULT_SDC_ROUNDING),
    trainer: Annotated[list[str] | None, Form(max_length=50)] = None,
    output_reviewers: Annotated[str, Form(max_length=2)] = "1",
    source: Annotated[list[str] | None, Form(max_length=200)] = None,
) -> Response:
    def decide() -> None:
        duration = int(finite(days, "days", integer=True)) if days.strip() else None
        if duration is not None and not 1 <= duration <= 3650:
            raise InvalidRequest("days must be 1 to 3650")
        threshold = int(finite(sdc_threshold, "the redaction threshold", integer=True))
        rounding = int(finite(sdc_rounding, "the rounding multiple", integer=True))
        if not (1 <= threshold <= 100 and 1 <= rounding <= 100):
            raise InvalidRequest("the redaction threshold and rounding must be 1 to 100")
        desk.gov.projects.approve(
            project_id,
            steward=desk.principal.user,
            epsilon=finite(epsilon, "epsilon"),
            delta=finite(delta, "delta"),
            days=duration,
            grants=_grants(grant or []),
            sdc_threshold=threshold,
            sdc_rounding=rounding,
            trainers=trainer or [],
            output_reviewers=int(finite(output_reviewers, "output reviewers", integer=True)),
            key_id=desk.principal.key_id,
            # the form lists the release's feeds: none ticked is refused, not "all"
            sources=(source or []) if desk.gov.release_feeds() else None,
        )

    return act(desk, BACK, f"Project {project_id} approved.", decide)


@router.post("/projects/{project_id}/reject")
def reject(project_id: str, desk: CheckedForm, reason: Reason = "") -> Response:
    return act(
        desk,
        BACK,
        f"Project {project_id} rejected.",
        lambda: desk.gov.projects.reject(
            project_id, steward=desk.principal.user, reason=reason, key_id=desk.principal.key_id
        ),
    )


@router.post("/projects/{project_id}/suspend")
def suspend(project_id: str, desk: CheckedForm, reason: Reason = "") -> Response:
    return act(
        desk,
        BACK,
        f"Project {project_id} suspended.",
        lambda: desk.gov.projects.suspend(
            project_id, steward=desk.principal.user, reason=reason, key_id=desk.principal.key_id
        ),
    )
