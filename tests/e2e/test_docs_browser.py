"""The API docs at ``/docs`` in a real browser with the network blocked.

A trusted research environment has no internet: the page must load Swagger UI from the
hub itself, list the operations, and take an API key through its Authorize button.
Skipped, with the reason, where Chromium is absent.
"""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "docs"

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="browser tests need Chromium at /usr/bin/chromium (apt-get install chromium)",
)


def test_docs_work_offline_and_take_an_api_key(live_hub):
    from playwright.sync_api import sync_playwright

    leaks: list[str] = []
    # one exact output of ana's, for her outputs view to show
    pid = live_hub.projects["ana"]
    live_hub.client("ana").post(
        f"/projects/{pid}/queries",
        json={"sql": "SELECT sex, count(*) AS n FROM patients GROUP BY sex", "target": "real",
              "mode": "exact"},
    )  # fmt: skip
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        context = browser.new_context(
            base_url=live_hub.url, viewport={"width": 1366, "height": 900}
        )
        context.set_default_timeout(20_000)
        # nothing outside the hub may be fetched: no CDN
        context.route(
            re.compile(r"^(?!" + re.escape(live_hub.url) + ").*"),
            lambda route: (leaks.append(route.request.url), route.abort()),
        )
        page = context.new_page()
        page.goto("/docs")
        # each operation's path (Swagger UI breaks it with <wbr>, so match its data-path)
        page.locator('[data-path="/v1/projects/{project_id}/queries"]').first.wait_for()
        assert page.locator(".opblock").count() >= 15
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "01-docs.png"), full_page=False)
        page.get_by_role("button", name=re.compile("Authorize")).first.click()
        dialog = page.locator(".auth-container").first  # the Available authorizations box
        dialog.wait_for()
        text = dialog.inner_text()
        assert "API key" in text and "bearer" in text.lower(), text
        dialog.locator("input").first.fill(live_hub.keys["ana"])
        dialog.locator("button", has_text="Authorize").click()
        assert "Authorized" in page.locator(".auth-container").first.inner_text()
        page.screenshot(path=str(ARTIFACTS / "02-authorize.png"), full_page=False)
        dialog.locator("button.btn-done, button:has-text('Close')").first.click()
        # the researcher's view of their outputs: GET /v1/outputs, tried in the page
        operation = page.locator('[data-path="/v1/outputs"]').first.locator("xpath=..")
        operation.click()
        block = page.locator(".opblock.is-open").first
        block.get_by_role("button", name="Try it out").click()
        block.get_by_role("button", name="Execute").click()
        body = block.locator(".responses-wrapper .live-responses-table .microlight").first
        body.wait_for()
        assert '"outputs"' in body.inner_text() and '"pending"' in body.inner_text()
        page.screenshot(path=str(ARTIFACTS / "03-researcher-outputs.png"), full_page=False)
        browser.close()
    assert not leaks, f"/docs asked for something outside the hub: {leaks}"


def test_the_schema_declares_the_key_and_types_query_answers(live_hub):
    schema = httpx.get(live_hub.url + "/openapi.json", timeout=10).json()
    assert schema["components"]["securitySchemes"]["API key"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "Your hub API key",
    }
    post = schema["paths"]["/v1/projects/{project_id}/queries"]["post"]
    assert {"API key": []} in post["security"]
    answer = post["responses"]["200"]["content"]["application/json"]["schema"]
    assert answer == {"$ref": "#/components/schemas/QueryAnswer"}
    fields = schema["components"]["schemas"]["QueryAnswer"]["properties"]
    assert {"status", "rows", "columns", "epsilon_spent", "output_id"} <= set(fields)
