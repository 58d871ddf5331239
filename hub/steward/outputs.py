"""Outputs awaiting review: exact tables with their disclosure manifests, models and DP
synthetic datasets with their data cards (on the Models page), and emulated trials'
effect estimates with their protocols."""

from __future__ import annotations

import json
from typing import Annotated, Any, Final

from cryptography.exceptions import InvalidSignature
from fastapi import APIRouter, Form, Response
from fastapi.responses import RedirectResponse

from governance.errors import HubError
from governance.outputs.review import Decision
from hub.steward.web import PREFIX, CheckedForm, Desk, HtmlRoute, SignedIn
from models import trainer
from models.synthetic import steward_record

router = APIRouter(prefix=PREFIX, route_class=HtmlRoute, include_in_schema=False)
PAGES: Final = {
    "outputs": f"{PREFIX}/outputs", "models": f"{PREFIX}/models", "trials": f"{PREFIX}/trials",
}  # fmt: skip
Reason = Annotated[str, Form(max_length=2000)]
ReturnTo = Annotated[str, Form(max_length=20)]
DONE: Final = {
    "approved": "approved for release",
    "rejected": "rejected",
    "returned": "returned to its author for changes",
}


def _signed(desk: Desk, output: dict[str, Any]) -> bool:
    """Whether the manifest is the one the hub signed when it made the output."""
    try:
        desk.gov.audit.signer.public_key.verify(
            bytes.fromhex(output.get("signature") or ""),
            json.dumps(output["manifest"], sort_keys=True).encode(),
        )
    except (InvalidSignature, ValueError):
        return False
    return True


def _table(desk: Desk, output: dict[str, Any]) -> dict[str, Any]:
    manifest = output["manifest"]
    marks: dict[tuple[int, str], dict[str, Any]] = {}
    for n, cell in enumerate(manifest.get("cells", []), start=1):
        marks[(cell["row"], cell["column"])] = {**cell, "n": n}
    try:
        query = desk.service.get(desk.principal, output["project_id"], output["query_id"])
        # (a model's query_id is its model id: no stored query, so no SQL to show)
        sql = query.get("sql")
    except HubError:
        sql = None
    return {**output, "marks": marks, "sql": sql, "signed": _signed(desk, output)}


@router.get("/outputs")
def outputs(desk: SignedIn) -> Response:
    pending = [
        o for o in desk.gov.outputs.pending(desk.principal) if o.get("kind", "table") == "table"
    ]
    return desk.page(
        "outputs.html",
        section="outputs",
        outputs=[_table(desk, o) for o in pending],
    )


@router.get("/models")
def models(desk: SignedIn) -> Response:
    pending = [o for o in desk.gov.outputs.pending(desk.principal) if o.get("kind") == "model"]
    for o in pending:  # the exact metrics and audits the modeller never sees
        o["steward_record"] = trainer.steward_record(desk.service, o["project_id"], o["query_id"])
    synthetic = [
        o for o in desk.gov.outputs.pending(desk.principal) if o.get("kind") == "synthetic"
    ]
    for o in synthetic:  # the exact evaluation on real people: the steward's record only
        o["evaluation"] = steward_record(
            desk.service, desk.principal, o["project_id"], o["query_id"]
        )
    return desk.page("models.html", section="models", outputs=pending, synthetic=synthetic)


@router.get("/trials")
def trials(desk: SignedIn) -> Response:
    """Emulated trials' DP estimates beside their protocols and privacy cost."""
    pending = [o for o in desk.gov.outputs.pending(desk.principal) if o.get("kind") == "trial"]
    for o in pending:
        o["signed"] = _signed(desk, o)
    return desk.page("trials.html", section="trials", outputs=pending)


def _decide(
    desk: Desk, output_id: str, decision: Decision, reason: str, return_to: str
) -> Response:
    """One reviewer's decision; the flash says whether it was the final one."""
    try:
        out = desk.gov.outputs.review(
            desk.principal, output_id, decision=decision, reason=reason.strip() or None
        )
    except HubError as exc:
        desk.flash("error", str(exc))
    else:
        if out["status"] == "pending":
            desk.flash("ok", f"Output {output_id}: your approval is recorded; it needs "
                             "another steward's review before release.")  # fmt: skip
        else:
            desk.flash("ok", f"Output {output_id} {DONE[out['status']]}.")
    return RedirectResponse(PAGES.get(return_to, PAGES["outputs"]), status_code=303)


@router.post("/outputs/{output_id}/approve")
def approve(
    output_id: str, desk: CheckedForm, reason: Reason = "", return_to: ReturnTo = "outputs"
) -> Response:
    return _decide(desk, output_id, "approve", reason, return_to)


@router.post("/outputs/{output_id}/reject")
def reject(
    output_id: str, desk: CheckedForm, reason: Reason = "", return_to: ReturnTo = "outputs"
) -> Response:
    return _decide(desk, output_id, "reject", reason, return_to)


@router.post("/outputs/{output_id}/return")
def return_for_changes(
    output_id: str, desk: CheckedForm, reason: Reason = "", return_to: ReturnTo = "outputs"
) -> Response:
    return _decide(desk, output_id, "return", reason, return_to)
