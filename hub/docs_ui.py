"""The API docs at ``/docs``, served from the package: no CDN, so they work offline.

FastAPI's default page loads Swagger UI from a CDN, which a trusted research
environment cannot reach. The assets come from ``fastapi-swagger`` (a maintained
package that vendors the current Swagger UI 5, which renders OpenAPI 3.1) and are served
under ``/docs/assets`` (FastAPI's documented self-hosting recipe). The OpenAPI schema
declares the Bearer scheme, so the page's Authorize button takes an API key.
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS = "/docs/assets"


def install(app: FastAPI) -> None:
    """Serve ``/docs`` (and its OAuth2 redirect) from local assets."""
    assets = files("fastapi_swagger") / "resources"
    app.mount(ASSETS, StaticFiles(directory=str(assets)), name="swagger-assets")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} — API docs",
            oauth2_redirect_url="/docs/oauth2-redirect",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon-32x32.png",
            swagger_ui_parameters={"persistAuthorization": False},
        )

    @app.get("/docs/oauth2-redirect", include_in_schema=False)
    def oauth2_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()
