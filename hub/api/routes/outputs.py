"""Outputs: the steward's review, and what researchers see of their own."""

from __future__ import annotations

import csv
import io
from typing import Annotated, Any, Literal

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from fastapi import APIRouter, Query
from fastapi.responses import PlainTextResponse, Response

from hub.api.deps import CurrentPrincipal, Gov, Steward
from hub.api.schemas import OptionalReason, Reason

router = APIRouter()
Status = Literal["pending", "approved", "rejected", "returned"]


@router.get("/outputs", tags=["outputs"])
def list_outputs(
    principal: CurrentPrincipal,
    gov: Gov,
    status: Annotated[Status | None, Query()] = None,
    project_id: Annotated[str | None, Query(max_length=64)] = None,
) -> dict[str, Any]:
    """Stewards: outputs by status (default: those awaiting review), with manifests and
    flags. Researchers and modellers: their projects' outputs, with each decision, the
    reviewers' reasons and, once approved, a download link."""
    if status is None and gov.outputs.is_reviewer(principal):
        status = "pending"
    return {"outputs": gov.outputs.find(principal, status=status, project_id=project_id)}


@router.get("/outputs/{output_id}", tags=["outputs"])
def get_output(output_id: str, principal: CurrentPrincipal, gov: Gov) -> dict[str, Any]:
    """One output: in full for stewards; status, reasons and link for its project."""
    return gov.outputs.output(principal, output_id)


@router.post("/outputs/{output_id}/approve", tags=["outputs"])
def approve_output(
    output_id: str, principal: Steward, gov: Gov, body: OptionalReason | None = None
) -> dict[str, Any]:
    """Approve (the last of the reviewers the project's policy asks for releases it)."""
    reason = body.reason if body else None
    return gov.outputs.review(principal, output_id, decision="approve", reason=reason)


@router.post("/outputs/{output_id}/reject", tags=["outputs"])
def reject_output(output_id: str, body: Reason, principal: Steward, gov: Gov) -> dict[str, Any]:
    return gov.outputs.review(principal, output_id, decision="reject", reason=body.reason)


@router.post("/outputs/{output_id}/return", tags=["outputs"])
def return_output(output_id: str, body: Reason, principal: Steward, gov: Gov) -> dict[str, Any]:
    """Return for changes: the researcher sees the reason and can submit a revised query."""
    return gov.outputs.review(principal, output_id, decision="return", reason=body.reason)


@router.get(
    "/outputs/{output_id}/download",
    tags=["outputs"],
    response_model=None,
    responses={
        200: {
            "content": {
                "text/csv": {"schema": {"type": "string"}},
                "application/vnd.apache.parquet": {
                    "schema": {"type": "string", "format": "binary"}
                },
            }
        }
    },
)
def download_output(
    output_id: str,
    principal: CurrentPrincipal,
    gov: Gov,
    format: Annotated[Literal["json", "csv", "parquet"], Query()] = "json",
) -> dict[str, Any] | Response:
    """An approved output: JSON, or a file (CSV or Parquet) named after the output."""
    body = gov.outputs.download(principal, output_id)
    disposition = {"content-disposition": f'attachment; filename="{output_id}.{format}"'}
    if "parquet" in body:  # a synthetic dataset: its data card, or the approved file
        if format == "json":
            return {"data_card": body["data_card"], "parquet_sha256": body["parquet_sha256"]}
        if format == "csv":
            table = pq.read_table(io.BytesIO(body["parquet"]))
            sink = io.BytesIO()
            pa_csv.write_csv(table, sink)
            return Response(sink.getvalue(), media_type="text/csv", headers=disposition)
        return Response(
            body["parquet"], media_type="application/vnd.apache.parquet", headers=disposition
        )
    if format == "json":
        return body
    if format == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(body["columns"])
        writer.writerows(body["rows"])
        return PlainTextResponse(buffer.getvalue(), media_type="text/csv", headers=disposition)
    names = body["columns"]
    table = pa.table({name: [row[i] for row in body["rows"]] for i, name in enumerate(names)})
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return Response(
        sink.getvalue(), media_type="application/vnd.apache.parquet", headers=disposition
    )
