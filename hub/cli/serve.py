"""`hub serve`: the HTTP API, the steward dashboard and the docs."""

from __future__ import annotations

import os
import secrets
from typing import Annotated

import typer

from governance.settings import get_settings
from hub.console import console
from hub.console import fail as _fail

app = typer.Typer()


def default_workers() -> int:
    """Worker processes when ``--workers`` is not given: the cores this process may run on
    (its CPU affinity, which a container or ``taskset`` narrows), else the machine's."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # no affinity on this platform
        return os.cpu_count() or 1


@app.command()
def serve(
    host: Annotated[
        str, typer.Option(help="Address to listen on (localhost by default).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
    query_timeout: Annotated[float, typer.Option(help="Seconds a query may run.")] = 30.0,
    workers: Annotated[
        int | None,
        typer.Option(min=1, max=64, help="Worker processes (default: the cores the hub may use)."),
    ] = None,
) -> None:
    """Serve the HTTP API (docs at /docs). Refuses to start without its keys and a release."""
    import uvicorn

    from connectors.errors import IngestError
    from connectors.releases import get_release
    from governance.errors import HubError
    from governance.outputs.disclosure_ledger import sweep_partials
    from hub.app import QUERY_TIMEOUT_ENV, SESSION_SECRET_ENV, session_file
    from hub.steward import audit_log
    from hub.steward.sessions import SharedSessionStore

    settings = get_settings()
    try:
        settings.keys()  # refuses missing, short, default or exposed keys
        gov = settings.governance(query_timeout_s=query_timeout)  # refuses a missing signing key
        release = get_release(settings.home)
    except (IngestError, HubError) as exc:
        raise _fail(f"{exc}; the hub does not start without it") from None
    # half-written population files a killed process left: once, at start, and only
    # those older than a query may run (a `hub train` or CLI query may be writing one)
    swept = sweep_partials(gov.outputs.outputs_dir, older_than_s=query_timeout)
    if swept:
        console.print(f"removed {swept} half-written output file(s) left by a stopped process")
    n = workers or default_workers()
    # the workers share one secret for the steward sessions, drawn now: a restart draws a
    # new one, so it signs everyone out; the sessions of an earlier run are cleared too
    secret = secrets.token_bytes(32)
    SharedSessionStore(session_file(gov.home), secret).clear()
    audit_log.report_file(gov.home).unlink(missing_ok=True)  # the dashboard verifies afresh
    os.environ[SESSION_SECRET_ENV] = secret.hex()
    os.environ[QUERY_TIMEOUT_ENV] = str(query_timeout)
    os.environ["HUB_HOME"] = str(settings.home)
    plural = "es" if n > 1 else ""
    console.print(
        f"serving release {release.id} on http://{host}:{port} (docs: /docs), {n} process{plural}"
    )
    uvicorn.run(
        "hub.app:serve_app", factory=True, workers=n, host=host, port=port, log_level="warning"
    )
