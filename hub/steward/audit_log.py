"""The audit log: filtered pages newest first, one entry in full, CSV export, integrity."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import RedirectResponse

from governance.access.people import ROLES
from governance.audit.chain import canonical, entry_hash
from governance.audit.events import ACTIONS as AUDIT_ACTIONS
from governance.audit.events import SUPPORTING_ACTIONS
from governance.audit.log import VerifyReport
from governance.errors import InvalidRequest, NotFound
from hub.steward.web import PREFIX, CheckedForm, Desk, HtmlRoute, SignedIn, pretty

router = APIRouter(prefix=PREFIX, route_class=HtmlRoute, include_in_schema=False)

PAGE: Final = 50
EXPORT_PAGE: Final = 5_000
EXPORT_MAX: Final = 200_000  # rows per export: narrow the filters for more
ACTIONS: Final = tuple(sorted(AUDIT_ACTIONS))
CSV_COLUMNS: Final = (
    "seq",
    "time",
    "actor",
    "key_id",
    "role",
    "project",
    "action",
    "decision",
    "target",
    "reason",
    "release",
    "query_text",
    "query_sha256",
    "epsilon",
    "delta",
    "row_count",
    "result_sha256",
    "details",
    "prev_hash",
    "hash",
)
Text = Annotated[str, Query(max_length=200)]


@dataclass(frozen=True)
class Filters:
    actor: str = ""
    role: str = ""
    project: str = ""
    action: str = ""
    decision: str = ""
    since: str = ""
    until: str = ""
    tz: str = ""  # the browser's offset from UTC in minutes (set by localtime.js)
    text: str = ""

    def query(self) -> dict[str, str]:
        """The filters as URL parameters (empty ones left out)."""
        return {k: v for k, v in self.__dict__.items() if v}

    def _moment(self, value: str, *, end: bool) -> str | None:
        if not value:
            return None
        try:
            local = dt.datetime.fromisoformat(value)
        except ValueError:
            raise InvalidRequest("times must look like 2025-01-31T14:30") from None
        offset = 0
        if self.tz:
            try:
                offset = int(self.tz)
            except ValueError:
                raise InvalidRequest("the time zone offset must be whole minutes") from None
            if not -16 * 60 <= offset <= 16 * 60:
                raise InvalidRequest("the time zone offset is out of range")
        if local.tzinfo is None:
            local = local.replace(tzinfo=dt.timezone(dt.timedelta(minutes=offset)))
        moment = local.astimezone(dt.UTC)
        if end and moment.second == 0 and len(value) <= len("2025-01-31T14:30"):
            moment += dt.timedelta(seconds=59)  # "until 14:30" includes that minute
        # audit times are ISO strings with milliseconds and Z, so they compare as text
        return moment.strftime("%Y-%m-%dT%H:%M:%S") + (".999Z" if end else ".000Z")

    def arguments(self) -> dict[str, Any]:
        """Keyword arguments for ``AuditLog.entries``."""
        if self.role and self.role not in ROLES:
            raise InvalidRequest(f"role must be one of {', '.join(ROLES)}")
        if self.decision and self.decision not in ("allowed", "denied"):
            raise InvalidRequest("decision must be allowed or denied")
        return {
            "actor": self.actor.strip() or None,
            "role": self.role or None,
            "project": self.project.strip() or None,
            "action": self.action.strip() or None,
            "decision": self.decision or None,
            "since": self._moment(self.since, end=False),
            "until": self._moment(self.until, end=True),
            "text": self.text or None,
        }


def _filters(
    actor: Text = "",
    role: Text = "",
    project: Text = "",
    action: Text = "",
    decision: Text = "",
    since: Text = "",
    until: Text = "",
    tz: Text = "",
    text: Text = "",
) -> Filters:
    return Filters(actor, role, project, action, decision, since, until, tz, text)


Chosen = Annotated[Filters, Depends(_filters)]


def report_file(home: Path) -> Path:
    """Where the dashboard keeps the chain's last verification (``hub serve`` clears it
    as it starts, so every run verifies afresh)."""
    return home / "run" / "steward-audit-verify.json"


def _report_file(desk: Desk) -> Path:
    return report_file(desk.gov.home)


def last_report(desk: Desk) -> VerifyReport | None:
    """The chain's last verification, shared by every worker process of the server."""
    try:
        return VerifyReport(**json.loads(_report_file(desk).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def save_report(desk: Desk, report: VerifyReport) -> None:
    path = _report_file(desk)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.write_text(json.dumps(report.as_dict()))
    os.replace(partial, path)


def integrity(desk: Desk) -> dict[str, Any]:
    """The chain's state as last verified (verifying now if it never was)."""
    report = last_report(desk)
    if report is None:
        report = desk.gov.audit.verify()
        save_report(desk, report)
    newest = desk.gov.audit.entries(limit=1)
    latest = newest[0]["seq"] if newest else 0
    up_to = report.entries if report.ok else (report.first_bad or 1) - 1
    verified_entry = desk.gov.audit.entries(before_seq=up_to + 1, limit=1) if up_to > 0 else []
    return {
        "report": report,
        "up_to": up_to,
        "up_to_time": verified_entry[0]["time"] if verified_entry else None,
        "newer": max(0, latest - report.entries) if report.ok else 0,
    }


def _complete(entry: dict[str, Any]) -> dict[str, Any]:
    """An entry with every field present (the signed body leaves empty ones out)."""
    return {**dict.fromkeys(CSV_COLUMNS), **entry}


def by_request(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per request: its outcome entry, with the budget entries it caused.

    A DP query writes ``budget.reserve``, ``budget.commit`` and its ``query.real.dp``
    outcome under one request id; the steward reads them as one line. Entries without a
    request id, and supporting entries whose outcome is not on this page, stay rows of
    their own.

    >>> rows = by_request([
    ...     {"seq": 3, "action": "query.real.dp", "request_id": "r1"},
    ...     {"seq": 2, "action": "budget.commit", "request_id": "r1"},
    ...     {"seq": 1, "action": "budget.reserve", "request_id": "r1"},
    ... ])
    >>> [(r["seq"], [s["seq"] for s in r["supporting"]]) for r in rows]
    [(3, [1, 2])]
    """
    outcomes = {
        e["request_id"]: e
        for e in entries
        if e.get("request_id") and e.get("action") not in SUPPORTING_ACTIONS
    }
    rows: list[dict[str, Any]] = []
    for e in entries:
        owner = outcomes.get(e.get("request_id") or "")
        if e.get("action") in SUPPORTING_ACTIONS and owner is not None:
            continue
        rows.append({**e, "supporting": []})
    by_seq = {r["seq"]: r for r in rows}
    for e in sorted(entries, key=lambda e: e["seq"]):
        owner = outcomes.get(e.get("request_id") or "")
        if e.get("action") in SUPPORTING_ACTIONS and owner is not None:
            by_seq[owner["seq"]]["supporting"].append(e)
    return rows


def _entry(desk: Desk, seq: int) -> dict[str, Any]:
    found = desk.gov.audit.entries(before_seq=seq + 1, limit=1)
    if not found or found[0]["seq"] != seq:
        raise NotFound(f"no audit entry {seq}")
    return found[0]


@router.get("/audit")
def audit(
    desk: SignedIn,
    filters: Chosen,
    before: Annotated[int | None, Query(ge=1)] = None,
) -> Response:
    entries = desk.gov.audit.entries(**filters.arguments(), limit=PAGE + 1, before_seq=before)
    older = entries[PAGE - 1]["seq"] if len(entries) > PAGE else None
    entries = entries[:PAGE]
    desk.audit(action="audit.read", row_count=len(entries))
    return desk.page(
        "audit.html",
        section="audit",
        entries=by_request([_complete(e) for e in entries]),
        shown=len(entries),
        filters=filters,
        query=filters.query(),
        before=before,
        older=older,
        roles=ROLES,
        actions=ACTIONS,
        chain=integrity(desk),
    )


@router.get("/audit/export.csv")
def export_csv(
    desk: SignedIn,
    filters: Chosen,
) -> Response:
    """Every entry the filters select (not only one page), newest first."""
    arguments = filters.arguments()
    rows: list[dict[str, Any]] = []
    before: int | None = None
    while True:
        batch = desk.gov.audit.entries(**arguments, limit=EXPORT_PAGE, before_seq=before)
        rows.extend(batch)
        if len(batch) < EXPORT_PAGE or len(rows) >= EXPORT_MAX:
            break
        before = batch[-1]["seq"]
    rows = rows[:EXPORT_MAX]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        writer.writerow([_cell(row.get(c)) for c in CSV_COLUMNS])
    # written before the response, like every read of the log
    desk.audit(action="audit.read", row_count=len(rows), details={"format": "csv"})
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return Response(
        buffer.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="audit-{stamp}.csv"'},
    )


def _cell(value: Any) -> str:
    """A CSV cell that a spreadsheet will not run as a formula."""
    text = "" if value is None else str(value)
    if text[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + text
    return text


@router.get("/audit/{seq}")
def entry(desk: SignedIn, seq: int) -> Response:
    found = _entry(desk, seq)
    body = {k: v for k, v in found.items() if k != "hash"}
    recomputed = entry_hash(found.get("prev_hash", ""), canonical(body))
    details = found.get("details")
    try:
        shown = pretty(json.loads(details)) if isinstance(details, str) else details
    except ValueError:
        shown = details
    desk.audit(action="audit.read", row_count=1, target=f"entry {seq}")
    return desk.page(
        "audit_entry.html",
        section="audit",
        entry={**_complete(found), "details": shown},
        hash_matches=recomputed == found["hash"],
        chain=integrity(desk),
    )


@router.post("/audit/verify")
def reverify(request: Request, desk: CheckedForm) -> Response:
    report = desk.gov.audit.verify()
    save_report(desk, report)
    if report.ok:
        desk.flash("ok", f"Re-verified: {report.reason}.")
    else:
        desk.flash("error", f"The audit log does not verify: {report.reason}.")
    return RedirectResponse(f"{PREFIX}/audit", status_code=303)
