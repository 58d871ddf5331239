"""DP training inside the hub over HTTP: a modeller's Workbench sends a spec to a real
`hub serve`, gets a card with DP metrics only, and the weights only after a steward's
release; the budget refuses a plan that does not fit before anything is spent."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time

import httpx
import pandas as pd
import pytest

from governance.errors import BudgetExhausted
from governance.facade import Governance
from models.spec import parse
from models.workbench import Workbench, WorkbenchError
from tests.e2e.conftest import free_port

SPEC = """
name = "t2d-by-age"
[cohort]
sql = '''
SELECT p.person_id, max(p.year_of_birth) AS year_of_birth, max(p.sex) AS sex,
       coalesce(bool_or(c.code = '44054006'), false) AS t2d
FROM patients p LEFT JOIN conditions c USING (person_id) GROUP BY p.person_id
'''
outcome = "t2d"
[features.numeric]
year_of_birth = [1910, 2025]
[features.categorical]
sex = ["F", "M"]
[privacy]
epsilon = 1.0
[training]
epochs = 5
batch_size = 256
learning_rate = 0.05
"""


@pytest.fixture(scope="module")
def hub(small_home):
    gov = Governance.open(small_home, create_keys=True)
    until = dt.date.today() + dt.timedelta(days=30)
    keys, users = {}, {}
    for user_id, role in (("ana", "researcher"), ("mo", "modeller"), ("sam", "steward")):
        user, key = gov.people.add(
            user_id=user_id, name=user_id, role=role, organisation="UoB",
            organisation_type="university", accreditation_expires=until, actor="test",
        )  # fmt: skip
        keys[user_id], users[user_id] = key, user
    project = gov.projects.request(
        requester=users["ana"], title="risk", purpose="T2D risk", lay_summary="risk",
        grants={"patients": ["person_id", "year_of_birth", "sex"],
                "conditions": ["person_id", "code"]},
        days=30, members=["mo"],
    )  # fmt: skip
    gov.projects.approve(
        project.project_id, steward=users["sam"], epsilon=2.5, delta=1e-5, trainers=["mo"]
    )
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "hub.cli", "serve", "--port", str(port)],
        env={**os.environ, "HUB_HOME": str(small_home)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(url + "/v1/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    yield url, keys, project.project_id, gov
    proc.terminate()
    proc.wait(10)


def test_a_modeller_trains_over_http_and_gets_weights_only_after_release(hub):
    url, keys, pid, gov = hub
    with Workbench(url, keys["mo"]) as bench:
        model = bench.train(pid, parse(SPEC))
        card = model.card
        assert card["metrics"]["kind"].startswith("differentially private")
        assert "rows" not in card and card["secure_rng"] is True
        assert card["epsilon_total"] == pytest.approx(card["epsilon"] + 0.3)
        assert any(c["model_id"] == model.model_id for c in bench.models(pid))
        with pytest.raises(WorkbenchError) as refused:
            bench.release(pid, model.model_id)  # not submitted: the weights stay
        assert refused.value.status == 409
        output_id = bench.submit(pid, model.model_id)
        with pytest.raises(WorkbenchError):
            bench.release(pid, model.model_id)  # pending review
        steward = httpx.Client(
            base_url=url + "/v1", headers={"Authorization": f"Bearer {keys['sam']}"}
        )
        assert steward.post(f"/outputs/{output_id}/approve").status_code == 200
        released = bench.release(pid, model.model_id)
        risk = released.predict(pd.DataFrame({"year_of_birth": [1940, 2000], "sex": ["F", "M"]}))
        assert 0 <= risk[1] < risk[0] <= 1  # older people are at higher risk
        # the plan of two more trainings does not fit: refused before any spend
        spent = gov.ledger.state(pid).epsilon_spent
        with pytest.raises(BudgetExhausted, match="epsilon runs out"):
            bench.ensure_budget(pid, [parse(SPEC), parse(SPEC)])
        assert gov.ledger.state(pid).epsilon_spent == spent


def test_a_spec_cannot_make_the_hub_read_a_file(hub):
    url, keys, pid, _ = hub
    text = SPEC.replace("sql = '''", "sql_file = '/etc/passwd'\nignored = '''")
    client = httpx.Client(base_url=url + "/v1", headers={"Authorization": f"Bearer {keys['mo']}"})
    response = client.post(f"/projects/{pid}/models", json={"spec": text})
    assert response.status_code == 422 and "passwd" not in response.text
