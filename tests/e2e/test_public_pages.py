"""The data dictionary and the project register, as a researcher and the public see them."""

from __future__ import annotations

import html
import re
from pathlib import Path

import httpx
import pytest

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "public"


def test_datasets_describe_granted_columns_in_words_with_units_and_codes(live_hub):
    pid = live_hub.projects["ana"]
    got = live_hub.client("ana").get("/datasets", params={"project_id": pid}).json()
    patients = got["tables"]["patients"]
    assert "pseudonym" in patients["description"]
    imd = next(c for c in patients["columns"] if c["name"] == "imd_decile")
    assert imd["description"].startswith("Index of Multiple Deprivation 2019 decile")
    assert {c["name"] for c in patients["columns"]} == {
        "person_id",
        "sex",
        "year_of_birth",
        "imd_decile",
    }  # fmt: skip  (granted columns only)
    observations = got["tables"]["observations"]
    unit = next(c for c in observations["columns"] if c["name"] == "value")
    assert "unit" in unit["description"]
    codes = {(c["system"], c["code"]): c for c in observations["codes_in_use"]}
    bmi = codes[("SNOMED CT", "60621009")]
    assert bmi["term"] == "Body mass index" and bmi["unit"] == "kg/m2"
    conditions = {c["code"] for c in got["tables"]["conditions"]["codes_in_use"]}
    assert "44054006" in conditions  # type 2 diabetes, recorded for many people
    assert "asthma-snomed" in got["codelists"]


def test_building_the_dictionary_is_audited_once(live_hub):
    steward = live_hub.client("sam")
    for _ in range(2):
        live_hub.client("ana").get("/datasets", params={"project_id": live_hub.projects["ana"]})
    built = steward.get("/audit", params={"action": "dictionary.build"}).json()["entries"]
    assert len(built) == 1 and built[0]["actor"] == "hub"


def test_the_pages_need_no_key_and_show_the_register_and_dictionary(live_hub):
    page = httpx.get(live_hub.url + "/dictionary", timeout=30)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "Index of Multiple Deprivation" in page.text and "type2-diabetes-snomed" in page.text
    register = httpx.get(live_hub.url + "/register", timeout=30)
    assert register.status_code == 200
    text = html.unescape(register.text)
    assert "ana's study" in text and "Evaluate the DPP" in text


@pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="browser tests need Chromium at /usr/bin/chromium (apt-get install chromium)",
)
def test_the_pages_render_offline_in_a_browser(live_hub):
    from playwright.sync_api import sync_playwright

    leaks: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"]
        )
        context = browser.new_context(
            base_url=live_hub.url, viewport={"width": 1366, "height": 900}
        )
        context.route(
            re.compile(r"^(?!" + re.escape(live_hub.url) + ").*"),
            lambda route: (leaks.append(route.request.url), route.abort()),
        )
        page = context.new_page()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.goto("/dictionary")
        page.get_by_role("heading", name="observations").wait_for()
        page.screenshot(path=str(ARTIFACTS / "dictionary.png"))
        page.get_by_role("link", name="Project register").click()
        page.get_by_role("heading", name="ana's study").wait_for()
        page.screenshot(path=str(ARTIFACTS / "register.png"))
        browser.close()
    assert not leaks, leaks
