"""Data quality: each release's gate result, its manifest, and its GX Data Docs.

Data Docs are static HTML that Great Expectations wrote next to the release. They are
served only to a signed-in steward, only from inside that release's ``data_docs``
folder, only for a few file types, and under a policy that runs no script and loads
nothing from outside the hub (the CDN links GX writes stay unfetched, so the pages
work offline, plainly styled).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final, Literal

from fastapi import APIRouter, Response
from fastapi.responses import FileResponse

from connectors import releases
from governance import linkage_report
from governance.errors import NotFound
from hub.steward.web import PREFIX, HtmlRoute, SignedIn

router = APIRouter(prefix=PREFIX, route_class=HtmlRoute, include_in_schema=False)
Population = Literal["real", "dummy"]
DOC_TYPES: Final = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css",
    ".png": "image/png",
    ".gif": "image/gif",
    ".ico": "image/x-icon",
    ".otf": "font/otf",
}
DOCS_POLICY: Final = (
    "default-src 'none'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "font-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'; "
    "sandbox allow-same-origin"
)


def _home(desk: SignedIn, population: Population) -> Path:
    return desk.gov.home if population == "real" else desk.gov.home / "dummy"


def _report(release: releases.Release) -> dict[str, Any] | None:
    path = releases.quality_report(release.path)
    report: dict[str, Any] | None = json.loads(path.read_text()) if path.exists() else None
    return report


def _docs(release: releases.Release) -> Path:
    return releases.quality_dir(release.path) / "data_docs"


@router.get("/quality")
def quality(desk: SignedIn) -> Response:
    populations = []
    for population in ("real", "dummy"):
        found = []
        for release in reversed(releases.list_releases(_home(desk, population))):
            report = _report(release)
            found.append(
                {
                    "release": release,
                    "report": report,
                    "failed": [c for c in (report or {}).get("checks", []) if not c["passed"]],
                    "docs": (_docs(release) / "index.html").is_file(),
                    "linkage": linkage_report.public_summary(release.manifest),
                }
            )
        populations.append((population, found))
    return desk.page("quality.html", section="quality", populations=populations)


def _release(desk: SignedIn, population: Population, release_id: str) -> releases.Release:
    wanted = {r.id: r for r in releases.list_releases(_home(desk, population))}
    release = wanted.get(release_id)
    if release is None:
        raise NotFound(f"no release {release_id}")
    return release


@router.get("/quality/{population}/{release_id}")
def release_checks(desk: SignedIn, population: Population, release_id: str) -> Response:
    """Every check of one release's gate, in the hub's own words, by category."""
    release = _release(desk, population, release_id)
    report = _report(release)
    by_category: dict[str, list[dict[str, Any]]] = {}
    for check in (report or {}).get("checks", []):
        by_category.setdefault(str(check.get("category", "other")), []).append(check)
    return desk.page(
        "quality_release.html",
        section="quality",
        population=population,
        release=release,
        report=report,
        by_category=sorted(by_category.items()),
        docs=(_docs(release) / "index.html").is_file(),
        linkage=linkage_report.public_summary(release.manifest),
    )


@router.get("/quality/{population}/{release_id}/docs/{path:path}")
def data_docs(desk: SignedIn, population: Population, release_id: str, path: str) -> Response:
    release = _release(desk, population, release_id)
    root = _docs(release).resolve()
    target = (root / path).resolve()
    kind = DOC_TYPES.get(target.suffix.lower())
    if not target.is_relative_to(root) or kind is None or not target.is_file():
        raise NotFound("no such Data Docs page")
    return FileResponse(target, media_type=kind, headers={"content-security-policy": DOCS_POLICY})
