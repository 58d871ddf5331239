"""The `/v1` routes, one module per resource. Each translates HTTP to one governance
call; errors map to problem+json in ``hub.http_errors``."""

from __future__ import annotations

from fastapi import APIRouter

from hub.api.routes import (
    audit,
    datasets,
    feasibility,
    models,
    outputs,
    projects,
    public,
    quality,
    queries,
    service,
    sources,
    synthetic,
    trials,
)
from hub.api.schemas import ERRORS

router = APIRouter(prefix="/v1", responses=ERRORS)
MODULES = (
    service, datasets, projects, sources, queries, feasibility, outputs, models, trials,
    audit, quality, public, synthetic,
)  # fmt: skip
for module in MODULES:
    router.include_router(module.router)
