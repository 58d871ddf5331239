"""`hub users`, `hub projects` and `hub audit`: the governance jobs from the command line.

The CLI acts as the local operator (``cli:<os user>`` in the audit log) for user
administration; project decisions name the steward or researcher they are made as
(``--as``), and that user's role and accreditation are checked like any other.
"""

from __future__ import annotations

import datetime as dt
import getpass
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from governance.access.projects import Grants
from governance.facade import Governance
from governance.privacy.accounting import DEFAULT_PROJECT_DELTA
from governance.settings import get_settings
from hub.cli.keys import KeyFile, acting_as
from hub.console import console

users_app = typer.Typer(help="Users, roles and API keys.", no_args_is_help=True)
projects_app = typer.Typer(help="Project requests, approvals and budgets.", no_args_is_help=True)
audit_app = typer.Typer(help="The tamper-evident audit log.", no_args_is_help=True)
sources_app = typer.Typer(
    help="Data controllers' decisions on the use of their feeds, project by project.",
    no_args_is_help=True,
)
# wide enough for tables when piped (rich assumes 80 columns then)
out = Console(width=None if sys.stdout.isatty() else 200)


def operator() -> str:
    return f"cli:{getpass.getuser()}"


def _gov(*, create_keys: bool = False) -> Governance:
    return get_settings().governance(create_keys=create_keys)


def _grants(values: list[str]) -> Grants:
    grants: Grants = {}
    for value in values:
        table, _, columns = value.partition(":")
        if not columns:
            raise typer.BadParameter(f"{value!r}: use table:col1,col2")
        grants.setdefault(table.strip(), []).extend(
            c.strip() for c in columns.split(",") if c.strip()
        )
    return grants


# ------------------------------------------------------------------------ users
@users_app.command("add")
def users_add(
    user_id: Annotated[str, typer.Argument(help="Short login, e.g. ana.smith")],
    name: Annotated[str, typer.Option(help="Full name.")],
    role: Annotated[
        str,
        typer.Option(
            help="researcher, steward, modeller, admin or controller (a data controller: "
            "--organisation is the controller's name as the feeds manifest gives it)."
        ),
    ],
    organisation: Annotated[str, typer.Option(help="Employing organisation.")],
    organisation_type: Annotated[
        str, typer.Option(help="nhs_trust, university, life_science_company or other.")
    ] = "university",
    accredited_until: Annotated[
        str | None, typer.Option(help="Accreditation expiry, YYYY-MM-DD (default: in a year).")
    ] = None,
) -> None:
    """Create a user and their API key (printed once, on stdout)."""
    gov = _gov(create_keys=True)
    expires = (
        dt.date.fromisoformat(accredited_until)
        if accredited_until
        else dt.date.today() + dt.timedelta(days=365)
    )
    user, key = gov.people.add(
        user_id=user_id,
        name=name,
        role=role,
        organisation=organisation,
        organisation_type=organisation_type,
        accreditation_expires=expires,
        actor=operator(),
    )
    console.print(
        f"[green]added[/] {user.user_id} ({user.role}, "
        f"{user.organisation}), accredited until {expires}"
    )
    console.print("[yellow]The key below is shown once. Store it now; it cannot be recovered.")
    sys.stdout.write(key + "\n")


@users_app.command("list")
def users_list() -> None:
    """List users, roles, accreditation and active key ids."""
    gov = _gov()
    table = Table()
    for col in ("user", "name", "role", "organisation", "accredited until", "active", "keys"):
        table.add_column(col)
    for user, keys in gov.people.list():
        expired = user.accreditation_expires < dt.date.today()
        table.add_row(
            user.user_id,
            user.name,
            user.role,
            user.organisation,
            f"[red]{user.accreditation_expires}" if expired else str(user.accreditation_expires),
            "yes" if user.active else "[red]revoked",
            ", ".join(keys),
        )
    out.print(table)


@users_app.command("revoke")
def users_revoke(user_id: Annotated[str, typer.Argument()]) -> None:
    """Revoke every key of a user and deactivate them."""
    n = _gov().people.revoke(user_id=user_id, actor=operator())
    console.print(f"revoked {user_id} ({n} key(s))")


@users_app.command("rotate-key")
def users_rotate(user_id: Annotated[str, typer.Argument()]) -> None:
    """Revoke a user's keys and print a new one (shown once)."""
    key = _gov().people.rotate_key(user_id=user_id, actor=operator())
    console.print("[yellow]The new key is shown once; the old one no longer works.")
    sys.stdout.write(key + "\n")


# --------------------------------------------------------------------- projects
@projects_app.command("request")
def projects_request(
    title: Annotated[str, typer.Option()],
    purpose: Annotated[str, typer.Option()],
    lay_summary: Annotated[
        str, typer.Option(help="Plain-language summary for the public register.")
    ],
    grant: Annotated[list[str], typer.Option(help="table:col1,col2 (repeat for each table).")],
    days: Annotated[int, typer.Option(help="Requested duration in days.")] = 365,
    member: Annotated[list[str] | None, typer.Option(help="Another member (repeatable).")] = None,
    as_user: Annotated[
        str | None,
        typer.Option("--as", help="The requesting researcher (checked against the key)."),
    ] = None,
    key_file: KeyFile = None,
    public_benefit: Annotated[
        str | None, typer.Option(help="The public benefit (required of a company's project).")
    ] = None,
    daa_reference: Annotated[
        str | None, typer.Option(help="The data access agreement's reference (companies).")
    ] = None,
    daa_expires: Annotated[
        str | None, typer.Option(help="The agreement's expiry date, YYYY-MM-DD (companies).")
    ] = None,
) -> None:
    """Request a project (as a researcher). A life-science company's project also states
    its public benefit and its data access agreement (reference and expiry)."""
    gov = _gov()
    project = gov.projects.request(
        requester=(me := acting_as(gov, as_user, key_file)).user,
        key_id=me.key_id,
        title=title,
        purpose=purpose,
        lay_summary=lay_summary,
        grants=_grants(grant),
        days=days,
        members=member or [],
        public_benefit=public_benefit,
        daa_reference=daa_reference,
        daa_expires=daa_expires,
    )
    console.print(f"[green]requested[/] {project.project_id}: {project.title}")
    sys.stdout.write(project.project_id + "\n")


@projects_app.command("approve")
def projects_approve(
    project_id: Annotated[str, typer.Argument()],
    epsilon: Annotated[float, typer.Option(help="Total privacy budget ε.")],
    delta: Annotated[float, typer.Option(help="Total privacy budget δ.")] = DEFAULT_PROJECT_DELTA,
    days: Annotated[int | None, typer.Option(help="Duration (default: as requested).")] = None,
    grant: Annotated[list[str] | None, typer.Option(help="Narrower grants, table:cols.")] = None,
    sdc_threshold: Annotated[int, typer.Option(help="Redact counts at or below.")] = 7,
    sdc_rounding: Annotated[int, typer.Option(help="Round other counts to.")] = 5,
    trainer: Annotated[list[str] | None, typer.Option(help="Member who may train models.")] = None,
    source: Annotated[
        list[str] | None,
        typer.Option(
            help="A release built from feeds: a feed the project may use (repeatable; "
            "default all). Each waits for its data controller's decision."
        ),
    ] = None,
    as_user: Annotated[
        str | None, typer.Option("--as", help="The approving steward (checked against the key).")
    ] = None,
    key_file: KeyFile = None,
) -> None:
    """Approve a requested or suspended project (as a steward)."""
    gov = _gov()
    project = gov.projects.approve(
        project_id,
        steward=(me := acting_as(gov, as_user, key_file)).user,
        key_id=me.key_id,
        epsilon=epsilon,
        delta=delta,
        days=days,
        grants=_grants(grant) if grant else None,
        sdc_threshold=sdc_threshold,
        sdc_rounding=sdc_rounding,
        trainers=trainer or [],
        sources=source or None,
    )
    console.print(
        f"[green]approved[/] {project.project_id} until "
        f"{project.expires_at}, ε={epsilon:g}, δ={delta:g}"
    )
    waiting = [s for s in gov.sources.for_project(project_id) if s.status == "pending"]
    if waiting:
        console.print(
            f"{len(waiting)} feed(s) now await their data controllers "
            f"(`hub sources list` as a controller): {', '.join(s.source for s in waiting)}"
        )


def _decide(
    action: str, project_id: str, as_user: str | None, reason: str, key_file: Path | None
) -> None:
    gov = _gov()
    me = acting_as(gov, as_user, key_file)
    project = getattr(gov.projects, action)(
        project_id, steward=me.user, reason=reason, key_id=me.key_id
    )
    console.print(f"{project.project_id} is now {project.status}")


@projects_app.command("reject")
def projects_reject(
    project_id: Annotated[str, typer.Argument()],
    reason: Annotated[str, typer.Option(help="Why, for the researcher.")],
    as_user: Annotated[
        str | None, typer.Option("--as", help="The steward (checked against the key).")
    ] = None,
    key_file: KeyFile = None,
) -> None:
    """Reject a requested project with a reason."""
    _decide("reject", project_id, as_user, reason, key_file)


@projects_app.command("suspend")
def projects_suspend(
    project_id: Annotated[str, typer.Argument()],
    reason: Annotated[str, typer.Option()],
    as_user: Annotated[
        str | None, typer.Option("--as", help="The steward (checked against the key).")
    ] = None,
    key_file: KeyFile = None,
) -> None:
    """Suspend an approved project (re-approve to resume)."""
    _decide("suspend", project_id, as_user, reason, key_file)


@projects_app.command("close")
def projects_close(
    project_id: Annotated[str, typer.Argument()],
    reason: Annotated[str, typer.Option()],
    as_user: Annotated[
        str | None, typer.Option("--as", help="The steward (checked against the key).")
    ] = None,
    key_file: KeyFile = None,
) -> None:
    """Close a project for good."""
    _decide("close", project_id, as_user, reason, key_file)


@projects_app.command("list")
def projects_list(
    status: Annotated[str | None, typer.Option(help="Only this state.")] = None,
) -> None:
    """List projects with their state, expiry and budget."""
    gov = _gov()
    table = Table()
    for col in ("project", "title", "status", "requested by", "expires", "ε used / total", ""):
        table.add_column(col)
    for p in gov.projects.find(status=status):
        budget = ""
        if p.epsilon_total is not None:
            state = gov.ledger.state(p.project_id)
            budget = f"{state.epsilon_spent:.3g} / {state.epsilon_total:g}"
        table.add_row(
            p.project_id,
            p.title,
            p.status,
            p.requested_by,
            str(p.expires_at or ""),
            budget,
            "commercial" if p.commercial else "",
        )
    out.print(table)


@projects_app.command("show")
def projects_show(project_id: Annotated[str, typer.Argument()]) -> None:
    """Everything about one project, with its budget and spends."""
    gov = _gov()
    project = gov.projects.get(project_id)
    data = project.as_dict()
    if project.epsilon_total is not None:
        state = gov.ledger.state(project_id)
        data["budget"] = {
            "epsilon_total": state.epsilon_total,
            "epsilon_spent": state.epsilon_spent,
            "epsilon_remaining": state.epsilon_remaining,
            "delta_total": state.delta_total,
            "delta_spent": state.delta_spent,
            "spends": gov.ledger.history(project_id),
        }
    sources = gov.sources.for_project(project_id)
    if sources:  # a release built from feeds: each feed and its controller's decision
        data["sources"] = [s.as_dict() for s in sources]
    out.print_json(data=data)


# ------------------------------------------------------------------------ audit
@audit_app.command("verify")
def audit_verify(
    public_key: Annotated[
        Path | None, typer.Option(help="Verify against this exported public key (PEM).")
    ] = None,
) -> None:
    """Check the whole hash chain, every signed checkpoint and the signed head."""
    from governance.audit.signer import load_public_key

    gov = _gov()
    key = load_public_key(public_key.read_text()) if public_key else None
    report = gov.audit.verify(key)
    if report.ok:
        console.print(
            f"[green]audit log verified[/]: {report.entries:,} entries, "
            f"{report.checkpoints} checkpoints, head {report.head_hash[:16]}…"
        )
        return
    console.print(f"[bold red]audit log BROKEN[/] at entry {report.first_bad}: {report.reason}")
    raise typer.Exit(1)


@audit_app.command("tail")
def audit_tail(
    n: Annotated[int, typer.Option("-n", help="How many entries.")] = 20,
    project: Annotated[str | None, typer.Option()] = None,
    actor: Annotated[str | None, typer.Option()] = None,
) -> None:
    """The newest entries (query text shown escaped)."""
    table = Table()
    for col in ("seq", "time", "actor", "role", "project", "action", "decision", "details"):
        table.add_column(col)
    for e in _gov().audit.entries(project=project, actor=actor, limit=n):
        detail = e.get("reason") or (repr(e["query_text"])[:60] if e.get("query_text") else "")
        table.add_row(
            str(e["seq"]),
            e["time"],
            e.get("actor") or "",
            e.get("role") or "",
            e.get("project") or "",
            e["action"],
            e["decision"],
            escape(detail),
        )
    out.print(table)


@audit_app.command("export")
def audit_export(
    out_file: Annotated[Path | None, typer.Option("--out", help="File (default: stdout).")] = None,
) -> None:
    """Export the log as JSON lines with its checkpoints, head and public key."""
    lines = _gov().audit.export()
    if out_file is None:
        for line in lines:
            sys.stdout.write(line + "\n")
        return
    with out_file.open("w") as fh:
        for line in lines:
            fh.write(line + "\n")
    console.print(f"exported to {out_file}")


@audit_app.command("public-key")
def audit_public_key() -> None:
    """Print the audit signing public key (PEM) for outside auditors."""
    sys.stdout.write(_gov().audit.signer.public_key_pem())


@audit_app.command("verify-export")
def audit_verify_export(
    export_file: Annotated[Path, typer.Argument(help="A file written by `hub audit export`.")],
    public_key: Annotated[Path, typer.Option(help="The public key (PEM) to trust.")],
) -> None:
    """Verify an exported log against a public key, without the hub's store."""
    from governance.audit.log import verify_export
    from governance.audit.signer import load_public_key

    with export_file.open() as fh:
        ok, message = verify_export(iter(fh), load_public_key(public_key.read_text()))
    if ok:
        console.print(f"[green]{message}")
        return
    console.print(f"[bold red]export does not verify:[/] {message}")
    raise typer.Exit(1)


__all__ = ["audit_app", "projects_app", "users_app"]


# --------------------------------------------------------------------- re-identification
def reidentify(
    person_id: Annotated[int, typer.Argument(help="The pseudonymous person_id to look up.")],
    reason: Annotated[str, typer.Option(help="Why (e.g. a clinical recall reference).")],
    as_user: Annotated[
        str | None, typer.Option("--as", help="The admin doing this (checked against the key).")
    ] = None,
    key_file: KeyFile = None,
    release: Annotated[str | None, typer.Option(help="Release id (default: current).")] = None,
) -> None:
    """Admin only, with the admin's key: decrypt one person's identifiers from the vault."""
    from governance.access.reidentify import reidentify as decrypt_person

    settings = get_settings()
    gov = _gov()
    record = decrypt_person(
        gov,
        acting_as(gov, as_user, key_file),
        person_id,
        reason=reason,
        vault_key=settings.keys().vault,
        release_id=release,
        operator=operator(),
    )
    Console().print_json(data=record)


# ---------------------------------------------------------------------- sources
@sources_app.command("list")
def sources_list(key_file: KeyFile = None) -> None:
    """The projects using the feeds you control (a controller), or every project's
    sources (a steward or admin): pending decisions first."""
    gov = _gov()
    me = acting_as(gov, None, key_file)
    found = gov.sources.awaiting(me.user)
    table = Table()
    for col in ("project", "feed", "organisation", "status", "decided by", "reason"):
        table.add_column(col)
    for s in found:
        table.add_row(
            s.project_id, s.source, s.organisation, s.status, s.decided_by or "", s.reason or ""
        )
    console.print(table if found else "no project uses a feed you control")


@sources_app.command("decide")
def sources_decide(
    project_id: Annotated[str, typer.Argument()],
    feed: Annotated[str, typer.Argument(help="The feed's name in the release manifest.")],
    decision: Annotated[str, typer.Option(help="approve, refuse or withdraw.")],
    reason: Annotated[str, typer.Option(help="Required to refuse or withdraw.")] = "",
    key_file: KeyFile = None,
) -> None:
    """Approve, refuse or withdraw the use of a feed you control (as its data controller)."""
    gov = _gov()
    me = acting_as(gov, None, key_file)
    s = gov.sources.decide(
        project_id, feed, controller=me.user, decision=decision, reason=reason, key_id=me.key_id
    )
    console.print(f"{s.source} is now {s.status} in {s.project_id}")
