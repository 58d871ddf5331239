"""A trained model's weights leave the hub only after a steward approved its output.

The check and its audit entry (``output.download``) are the output review's own
(``QueryService.download``); this module only finds the model's output.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from governance.errors import Conflict

if TYPE_CHECKING:
    from governance.access.people import Principal
    from governance.queries import QueryService


def released_artifact(
    service: QueryService, principal: Principal, project_id: str, model_id: str
) -> str:
    """The approved weights' sha256; Conflict (audited) while the model is not released."""
    service.project_for(principal, project_id)
    row = (
        service.gov.store.cached()
        .execute(
            "SELECT output_id FROM outputs WHERE kind = 'model' AND query_id = ? "
            "AND project_id = ? ORDER BY (status = 'approved') DESC, created_at DESC LIMIT 1",
            (model_id, project_id),
        )
        .fetchone()
    )
    if row is None:
        raise Conflict(
            f"model {model_id} has not been submitted for release: its weights stay in the hub"
        )
    body = service.download(principal, row["output_id"])
    return str(body["artifact_sha256"])
