"""Privacy budgets: per project, ε spent over time, what is left, the largest spends."""

from __future__ import annotations

import datetime as dt
from typing import Any, Final

from fastapi import APIRouter, Response

from hub.steward.charts import spend_chart
from hub.steward.web import PREFIX, HtmlRoute, SignedIn

router = APIRouter(prefix=PREFIX, route_class=HtmlRoute, include_in_schema=False)
LARGEST: Final = 5


def _moment(text: Any) -> dt.datetime:
    moment = dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


@router.get("/budgets")
def budgets(desk: SignedIn) -> Response:
    now = dt.datetime.now(dt.UTC)
    cards = []
    for project in desk.gov.projects.find():
        if project.epsilon_total is None:
            continue  # never approved: no budget yet
        state = desk.gov.ledger.state(project.project_id)
        # reserved spends count against the budget (a crashed run keeps its reservation)
        spends = [
            s
            for s in desk.gov.ledger.history(project.project_id)
            if s["state"] in ("reserved", "committed")
        ]
        points = [(_moment(s["created_at"]), float(str(s["epsilon"]))) for s in spends]
        cards.append(
            {
                "project": project,
                "state": state,
                "used": state.epsilon_spent / state.epsilon_total if state.epsilon_total else 0,
                "spends": len(spends),
                "largest": sorted(spends, key=lambda s: -float(str(s["epsilon"])))[:LARGEST],
                "chart": spend_chart(
                    points,
                    budget=state.epsilon_total,
                    now=now,
                    label=f"{project.project_id} {project.title}",
                )
                if points
                else None,
            }
        )
    return desk.page("budgets.html", section="budgets", cards=cards)
