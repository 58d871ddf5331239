"""The steward dashboard in a real browser (Debian's Chromium, driven by Playwright).

Against a live `hub serve`: sign in, filter the audit log, approve a project, approve
and reject outputs, a tampered audit store flagged in red, a form posted without its
CSRF token refused, a researcher's key refused. Every page is saved as a screenshot
under ``test-artifacts/steward/``. Skipped, with the reason, where Chromium is absent.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.e2e.steward_fixtures import StewardHub, steward_hub  # noqa: F401

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "steward"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="browser tests need Chromium at /usr/bin/chromium (apt-get install chromium)",
)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, steward_hub: StewardHub):  # noqa: F811
    context = browser.new_context(
        base_url=steward_hub.url,
        viewport={"width": 1366, "height": 900},
        locale="en-US",
        timezone_id="America/New_York",  # times must show in this zone, not UTC
        offline=False,
    )
    context.set_default_timeout(15_000)
    # the hub must work offline: any request that leaves it fails the test
    leaks: list[str] = []
    context.route(
        re.compile(r"^(?!" + re.escape(steward_hub.url) + ").*"),
        lambda route: (leaks.append(route.request.url), route.abort()),
    )
    tab = context.new_page()
    yield tab
    context.close()
    assert not leaks, f"the dashboard asked for something outside the hub: {leaks}"


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def nav(page, section: str) -> None:
    """Follow a link of the dashboard's main navigation."""
    menu = page.get_by_role("navigation", name="Dashboard sections")
    menu.get_by_role("link", name=re.compile("^" + section)).click()


def sign_in(page, hub: StewardHub, who: str = "sam") -> None:
    page.goto("/steward/sign-in")
    page.get_by_label("Steward API key").fill(hub.keys[who])
    page.get_by_role("button", name="Sign in").click()


def test_a_researcher_key_is_refused_and_a_steward_signs_in(page, steward_hub):  # noqa: F811
    page.goto("/steward/audit")
    assert page.url.endswith("/steward/sign-in")  # not signed in: sent to sign in
    shot(page, "01-sign-in")
    sign_in(page, steward_hub, "ana")
    alert = page.get_by_role("alert")
    assert "for accredited data stewards" in alert.inner_text()
    assert page.url.endswith("/steward/sign-in")
    shot(page, "02-sign-in-refused")
    sign_in(page, steward_hub, "sam")
    page.wait_for_url("**/steward/")
    assert page.get_by_role("heading", name="Overview").is_visible()
    assert "Sam Jones" in page.locator("header").inner_text()
    shot(page, "03-overview")
    # keyboard: the first Tab reaches the skip link, which moves focus to the content
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/steward/sign-in?signed_out=1")
    page.goto("/steward/projects")
    assert page.url.endswith("/steward/sign-in")


def test_filter_the_audit_log_and_read_an_entry(page, steward_hub):  # noqa: F811
    sign_in(page, steward_hub)
    nav(page, "Audit log")
    assert page.locator("#chain").inner_text().startswith("Audit chain verified")
    shot(page, "04-audit-log")
    page.get_by_label("Actor").fill("ana")
    page.get_by_label("Action").fill("query.real.exact")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url(re.compile(r".*action=query\.real\.exact.*"))
    rows = page.locator("table.log tbody tr")
    expect(rows).to_have_count(4)  # waits for the filtered page, unlike count()
    for i in range(rows.count()):
        cells = rows.nth(i).locator("td")
        assert cells.nth(2).inner_text() == "ana"
        assert cells.nth(5).inner_text() == "query.real.exact"
    # times show in the browser's zone (New York), with the zone named
    assert re.search(r"\b(EST|EDT)\b", rows.first.locator("td").nth(1).inner_text())
    shot(page, "05-audit-filtered")
    page.get_by_label("Query text contains").fill("AND person_id <>")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("table.log tbody tr")).to_have_count(1)
    # a time range that ends before anything happened selects nothing
    page.get_by_label("Query text contains").fill("")
    page.get_by_label("Until").fill("2020-01-01T00:00:00")
    page.get_by_role("button", name="Filter").click()
    assert page.get_by_text("No audit entries match these filters.").is_visible()
    page.get_by_label("Until").fill("")
    page.get_by_label("Actor").fill("")
    page.get_by_label("Action").fill("")
    page.get_by_label("Decision").select_option("denied")
    page.get_by_label("Role").select_option("researcher")
    page.get_by_role("button", name="Filter").click()
    page.locator("table.log tbody tr", has_text="<script>").first.locator("a").first.click()
    # the query text is shown as text, never run as markup
    assert page.locator("#query-text").inner_text() == "SELECT '<script>alert(1)</script>' AS x"
    assert "matches its body" in page.locator("dl.hashes").inner_text()
    shot(page, "06-audit-entry")
    with page.expect_download() as download:
        page.goto("/steward/audit?actor=ana&action=query.real.exact")
        page.get_by_role("link", name="Export these entries as CSV").click()
    text = Path(download.value.path()).read_text()
    lines = text.strip().splitlines()
    assert lines[0].startswith("seq,time,actor") and len(lines) == 5


def test_approve_a_project_narrowing_its_grants(page, steward_hub):  # noqa: F811
    pid = steward_hub.projects["pending"]
    sign_in(page, steward_hub)
    nav(page, "Projects")
    card = page.locator(f"#project-{pid}")
    assert "Hypertension <control> & statins" in card.inner_text()
    shot(page, "07-projects")
    form = card.get_by_role("form", name=f"Approve project {pid}")
    form.get_by_label("imd_decile").uncheck()
    form.get_by_label("Budget ε").fill("2.5")
    form.get_by_label("Approved for (days)").fill("30")
    form.get_by_role("button", name="Approve project").click()
    assert f"Project {pid} approved." in page.get_by_role("status").first.inner_text()
    shot(page, "08-project-approved")
    with steward_hub.api("tess") as tess:
        project = tess.get(f"/projects/{pid}").json()
    assert project["status"] == "approved" and project["epsilon_total"] == 2.5
    assert "imd_decile" not in project["granted"]["patients"]
    (entry,) = steward_hub.audit(project=pid, action="project.approve")
    assert entry["actor"] == "sam" and entry["role"] == "steward" and entry["key_id"]


def test_approve_and_reject_outputs(page, steward_hub):  # noqa: F811
    fine, by_sex = steward_hub.outputs["fine"], steward_hub.outputs["by_sex"]
    sign_in(page, steward_hub)
    nav(page, "Outputs")
    card = page.locator(f"#output-{fine}")
    assert "cells redacted, and why" in card.inner_text()
    assert card.locator("td.redacted").count() > 0
    flagged = page.locator(f"#output-{steward_hub.outputs['women_but_one']}")
    assert "differs from output" in flagged.inner_text()
    shot(page, "09-outputs")
    card.get_by_label("Reason for rejecting (required)").fill("Too fine-grained to release")
    card.get_by_role("button", name="Reject").click()
    assert f"Output {fine} rejected." in page.get_by_role("status").first.inner_text()
    page.locator(f"#output-{by_sex}").get_by_role("button", name="Approve release").click()
    assert f"Output {by_sex} approved" in page.get_by_role("status").first.inner_text()
    expect(page.locator(f"#output-{fine}")).to_have_count(0)
    shot(page, "10-outputs-reviewed")
    with steward_hub.api("ana") as ana:
        assert ana.get(f"/outputs/{by_sex}/download").status_code == 200
        assert ana.get(f"/outputs/{fine}/download").status_code == 409
    (entry,) = steward_hub.audit(action="output.reject", actor="sam")
    assert entry["target"] == fine and entry["reason"] == "Too fine-grained to release"


def test_models_budgets_and_quality_pages(page, steward_hub):  # noqa: F811
    sign_in(page, steward_hub)
    nav(page, "Models")
    model = page.locator(f"#output-{steward_hub.outputs['model']}")
    assert (
        "Attack AUC (membership inference)" in model.inner_text() and "0.52" in model.inner_text()
    )
    assert "Intended use" not in model.inner_text() or "Limitations" in model.inner_text()
    assert "cannot show: that the model is private" in model.inner_text()
    assert "held out 200, training 800" in model.inner_text()
    raw = page.locator(f"#output-{steward_hub.outputs['raw']}")
    assert "No membership-inference audit yet" in raw.inner_text()
    shot(page, "11-models")
    nav(page, "Privacy budgets")
    budget = page.locator(f"#budget-{steward_hub.projects['study']}")
    expect(budget.locator("svg.chart")).to_have_count(1)
    assert "ε remaining: 2.2 " in budget.inner_text()
    shot(page, "12-budgets")
    nav(page, "Data quality")
    assert "Quality gate passed" in page.locator("#release-real-release-0001").inner_text()
    shot(page, "13-quality")
    card = page.locator("#release-real-release-0001")
    card.get_by_role("link", name=re.compile("^All .* checks of release-0001")).click()
    expect(page.get_by_role("heading", name="Completeness")).to_have_count(1)
    shot(page, "14-quality-checks")
    page.get_by_role("link", name="The same checks as Great Expectations Data Docs").click()
    assert page.url.endswith("/docs/index.html")
    shot(page, "15-data-docs")


def test_a_tampered_audit_store_is_flagged_in_red(page, steward_hub):  # noqa: F811
    sign_in(page, steward_hub)
    page.goto("/steward/audit")
    with steward_hub.tampered(5):
        page.get_by_role("button", name="Re-verify now").click()
        banner = page.locator("#chain")
        assert banner.inner_text().startswith("Audit chain broken at entry 5")
        red = banner.evaluate("el => getComputedStyle(el).color")
        assert red == "rgb(176, 0, 32)"
        shot(page, "15-audit-tampered")
        banner.get_by_role("link", name="5").click()
        assert "first entry at which the chain breaks" in page.locator("main").inner_text()
    page.get_by_role("button", name="Re-verify now").click()
    assert page.locator("#chain").inner_text().startswith("Audit chain verified")


def test_a_form_posted_without_its_csrf_token_is_refused(page, steward_hub):  # noqa: F811
    pid = steward_hub.projects["doomed"]
    sign_in(page, steward_hub)
    page.goto("/steward/projects")
    page.locator(f"#project-{pid} summary", has_text="Reject").click()
    form = page.get_by_role("form", name=f"Reject project {pid}")
    form.evaluate("f => f.querySelector('input[name=csrf_token]').remove()")
    form.get_by_role("textbox").fill("Far too broad a request")
    form.get_by_role("button", name="Reject project").click()
    assert page.get_by_role("heading", name="Refused").is_visible()
    assert "security token" in page.get_by_role("alert").inner_text()
    shot(page, "16-csrf-refused")
    with steward_hub.api("tess") as tess:
        assert tess.get(f"/projects/{pid}").json()["status"] == "requested"
