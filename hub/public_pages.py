"""Public pages, no key needed: the project register and the data dictionary, in HTML.

The same content as ``/v1/public/projects`` and (for every table) ``/v1/datasets``, for
people rather than programs. Nothing here is patient-level: the register is what the
hub publishes about projects, the dictionary is metadata and codes used by more than the
disclosure threshold of people.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from governance.access import commercial
from governance.outputs.disclosure import REDACTION_THRESHOLD
from hub.api.deps import Service

_ENV = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=select_autoescape(["html"]),
)

router = APIRouter(include_in_schema=False)


@router.get("/dictionary", response_class=HTMLResponse)
def dictionary_page(request: Request, service: Service) -> HTMLResponse:
    data = service.public_dictionary()
    html = _ENV.get_template("dictionary.html").render(
        section="dictionary",
        release=data["release"],
        tables=data["tables"],
        codelists=data["codelists"],
        linkage=data.get("linkage"),
        threshold=REDACTION_THRESHOLD,
    )
    return HTMLResponse(html)


@router.get("/register", response_class=HTMLResponse)
def register_page(request: Request, service: Service) -> HTMLResponse:
    projects = service.gov.public_register()
    html = _ENV.get_template("register.html").render(
        section="register", projects=projects, policy=commercial.describe()
    )
    return HTMLResponse(html)


def install(app: FastAPI) -> None:
    app.include_router(router)
