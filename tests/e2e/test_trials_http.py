"""Emulated trials over HTTP, through a real `hub serve`: a modeller posts a study, the
hub charges its ε, audits it and sends the DP estimate to review; a steward reads the
protocol and the estimate on the dashboard and approves it; only then can the modeller
read the estimate; a second study that does not fit the budget is refused, audited,
and costs nothing."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import httpx
import pytest

from governance.facade import Governance
from tests.e2e.conftest import free_port
from tests.e2e.test_cli_trial import STUDY
from tests.homes import add_people, approved_project

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture(scope="module")
def hub(small_home, tmp_path_factory):
    work = tmp_path_factory.mktemp("trials-http")
    gov = Governance.open(small_home, create_keys=True)
    who = add_people(gov, keys_to=work, ana="researcher", mo="modeller", sam="steward")
    grants = {"patients": ["person_id", "year_of_birth", "sex", "imd_decile"]}
    pid = approved_project(
        gov, who["ana"], who["sam"], grants, title="trial", members=["mo"], epsilon=3.0,
        delta=1e-5, trainers=["mo"],
    )  # fmt: skip
    keys = {u: (work / f"{u}.key").read_text().strip() for u in ("ana", "mo", "sam")}
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "hub.cli", "serve", "--port", str(port)],
        env={**os.environ, "HUB_HOME": str(small_home)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(url + "/v1/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    yield url, keys, pid, gov
    proc.terminate()
    proc.wait(10)


def api(url: str, key: str) -> httpx.Client:
    return httpx.Client(
        base_url=url + "/v1", headers={"Authorization": f"Bearer {key}"}, timeout=120
    )


def test_a_trial_estimate_leaves_only_after_a_steward_reads_it_with_its_protocol(hub):
    url, keys, pid, gov = hub
    with api(url, keys["mo"]) as mo:
        posted = mo.post(f"/projects/{pid}/trials", json={"study": STUDY, "name": "female-imd"})
        assert posted.status_code == 202, posted.text
        receipt = posted.json()
        # the receipt: ids, protocol and privacy spent; no estimate before review
        assert receipt["status"] == "pending" and receipt["epsilon"] == pytest.approx(2.0)
        assert receipt["protocol"]["causal_contrast"] == "average effect"
        assert "average_effect" not in posted.text and "naive" not in posted.text
        # charged and audited before the answer came back
        assert gov.ledger.state(pid).epsilon_spent == pytest.approx(2.0, rel=1e-4)
        [entry] = gov.audit.entries(project=pid, action="trial.estimate", limit=5)
        assert entry["target"] == receipt["output_id"] and entry["epsilon"] == pytest.approx(2.0)
        trial_url = f"/projects/{pid}/trials/{receipt['trial_id']}"
        waiting = mo.get(trial_url).json()
        assert waiting["status"] == "pending" and "estimate" not in waiting
        assert mo.get(f"/outputs/{receipt['output_id']}/download").status_code == 409

    with httpx.Client(base_url=url, timeout=60) as browser:  # the steward's dashboard
        form = browser.get("/steward/sign-in")
        token = CSRF.search(form.text)
        assert token
        signed = browser.post(
            "/steward/sign-in", data={"key": keys["sam"], "csrf_token": token.group(1)}
        )
        assert signed.status_code == 303
        page = browser.get("/steward/trials")
        assert page.status_code == 200 and receipt["output_id"] in page.text
        for words in (
            "everyone in the release",
            "registration",
            "year_of_birth",
            "Naive difference in means",
            "Adjusted (AIPW)",
            "95% interval",
        ):
            assert words in page.text, words  # fmt: skip
        assert re.search(r"ε 2(\.0+)?, δ", page.text)
        overview = browser.get("/steward/outputs")
        assert receipt["output_id"] not in overview.text  # tables only there

    with api(url, keys["sam"]) as sam:
        seen = sam.get(f"/outputs/{receipt['output_id']}").json()
        estimate = seen["result"]
        low, high = estimate["ci95"]
        assert low <= estimate["average_effect"] <= high
        assert seen["manifest"]["protocol"]["confounders"] == ["year_of_birth"]
        assert sam.post(f"/outputs/{receipt['output_id']}/approve").status_code == 200

    with api(url, keys["mo"]) as mo:
        released = mo.get(trial_url).json()
        assert released["status"] == "approved"
        assert released["estimate"]["average_effect"] == pytest.approx(estimate["average_effect"])
        csv = mo.get(f"/outputs/{receipt['output_id']}/download", params={"format": "csv"})
        assert csv.status_code == 200 and csv.text.startswith("average_effect,ci95_low")

        # 1.0 of ε is left: a second study at ε 2 is refused before any data is read
        refused = mo.post(f"/projects/{pid}/trials", json={"study": STUDY})
        assert refused.status_code == 403 and "budget" in refused.json()["detail"]
        assert refused.headers["content-type"].startswith("application/problem+json")
    assert gov.ledger.state(pid).epsilon_spent == pytest.approx(2.0, rel=1e-4)
    denied = gov.audit.entries(project=pid, action="budget.reserve", limit=10)
    assert any(e["decision"] == "denied" for e in denied)
    assert len(gov.audit.entries(project=pid, action="trial.estimate", limit=10)) == 1


def test_a_study_is_refused_clearly_when_it_cannot_run(hub):
    url, keys, pid, gov = hub
    spent = gov.ledger.state(pid).epsilon_spent
    with api(url, keys["mo"]) as mo:
        from_file = STUDY.replace("sql = '''", "sql_file = '/etc/passwd'\nignored = '''")
        response = mo.post(f"/projects/{pid}/trials", json={"study": from_file})
        assert response.status_code == 422 and "passwd" not in response.text
        no_protocol = STUDY.split("[cohort]")[1]
        response = mo.post(f"/projects/{pid}/trials", json={"study": "[cohort]" + no_protocol})
        assert response.status_code == 422 and "[protocol]" in response.json()["detail"]
    with api(url, keys["ana"]) as ana:  # researchers query; trials read a training cohort
        response = ana.post(f"/projects/{pid}/trials", json={"study": STUDY})
        assert response.status_code == 403
    assert gov.ledger.state(pid).epsilon_spent == spent
