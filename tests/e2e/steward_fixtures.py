"""A live `hub serve` of its own for the steward dashboard tests, with work waiting.

Separate from ``live_hub``: these tests approve projects, review outputs and tamper with
the audit store, which the API tests must not see. Import the fixtures into a test
module with ``from tests.e2e.steward_fixtures import steward_hub  # noqa: F401``.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from connectors.ingest import ingest
from connectors.quality import ingest_gate
from connectors.secrets import resolve_keys
from governance.facade import Governance
from synthetic_data.generator import SynthConfig, generate
from tests.e2e.conftest import free_port

GRANTS = {
    "patients": ["person_id", "sex", "year_of_birth", "imd_decile"],
    "conditions": ["person_id", "code", "onset_date"],
}
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
MODEL_CARD = {  # the shape `hub train` writes (abridged)
    "name": "t2d-risk",
    "model_kind": "risk",
    "architecture": "logistic",
    "outcome": "t2d_2y",
    "outcome_type": "binary",
    "epsilon": 1.0,
    "delta": 1e-6,
    "accountant": "rdp",
    "noise_multiplier": 1.1,
    "max_grad_norm": 1.0,
    "epochs": 5,
    "sample_rate": 0.01,
    "steps": 500,
    "rows": {"training": 800, "held_out": 200},
    "features": {
        "numeric": {"age": [18, 100]},
        "categorical": {"imd_decile": list(range(1, 11))},
        "encoded_columns": ["age", *[f"imd_decile={i}" for i in range(1, 11)]],
    },
    "metrics": {"auroc": 0.71},
}


@dataclass
class StewardHub:
    url: str
    home: Path
    keys: dict[str, str]
    projects: dict[str, str]
    outputs: dict[str, str] = field(default_factory=dict)

    def api(self, who: str) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.keys[who]}"}
        return httpx.Client(base_url=self.url + "/v1", headers=headers, timeout=60)

    def browser(self) -> httpx.Client:
        """A cookie-keeping client for the dashboard, as a browser would be."""
        return httpx.Client(base_url=self.url, timeout=60, follow_redirects=False)

    @contextmanager
    def sign_in(self, who: str = "sam") -> Iterator[httpx.Client]:
        """A dashboard client signed in as ``who``."""
        with self.browser() as client:
            page = client.get("/steward/sign-in")
            response = client.post(
                "/steward/sign-in",
                data={"key": self.keys[who], "csrf_token": csrf_of(page.text)},
            )
            assert response.status_code == 303, response.text
            yield client

    def sql(self, statement: str, *args: object) -> list[tuple[object, ...]]:
        con = sqlite3.connect(self.home / "governance" / "governance.sqlite3")
        try:
            with con:
                return con.execute(statement, args).fetchall()
        finally:
            con.close()

    def audit(self, **where: str) -> list[dict[str, object]]:
        """Audit entries (newest first) through the API, as a steward."""
        with self.api("tess") as tess:
            body = tess.get("/audit", params={**where, "limit": 1000}).json()
        return list(body["entries"])

    @contextmanager
    def tampered(self, seq: int) -> Iterator[None]:
        """One audit entry's stored body edited, then put back as it was."""
        (body,) = self.sql("SELECT body FROM audit_entries WHERE seq = ?", seq)[0]
        edited = str(body).replace('"decision":"', '"decision":"x', 1)
        self.sql("UPDATE audit_entries SET body = ? WHERE seq = ?", edited, seq)
        try:
            yield
        finally:
            self.sql("UPDATE audit_entries SET body = ? WHERE seq = ?", body, seq)


def csrf_of(page: str) -> str:
    match = CSRF.search(page)
    assert match, "no CSRF token on the page"
    return match.group(1)


def _serve(home: Path) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "hub.cli", "serve", "--port", str(port), "--query-timeout", "5"],
        env={**os.environ, "HUB_HOME": str(home)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if httpx.get(url + "/v1/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("hub serve did not start: " + (proc.stdout.read() if proc.stdout else ""))


_SHARED: dict[str, StewardHub] = {}


@pytest.fixture(scope="session")
def steward_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StewardHub]:
    # each test module that imports this fixture gets a definition of its own, so the
    # hub is built once here and shared; the definition that built it stops it
    if "hub" in _SHARED:
        yield _SHARED["hub"]
        return
    with _started(tmp_path_factory) as hub:
        _SHARED["hub"] = hub
        try:
            yield hub
        finally:
            del _SHARED["hub"]


@contextmanager
def _started(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StewardHub]:
    root = tmp_path_factory.mktemp("steward")
    population = generate(SynthConfig(patients=1_000, seed=29), root / "real").out
    home = root / "hub"
    ingest(
        population, fmt="native", home=home, keys=resolve_keys(home, create=True), gate=ingest_gate
    )
    gov = Governance.open(home, create_keys=True)
    keys, users = {}, {}
    until = dt.date.today() + dt.timedelta(days=90)
    for user_id, role in (
        ("ana", "researcher"),
        ("bob", "researcher"),
        ("sam", "steward"),
        ("tess", "steward"),
        ("viv", "steward"),
        ("mo", "modeller"),
        ("root", "admin"),
    ):
        user, key = gov.people.add(
            user_id=user_id,
            name={"sam": "Sam Jones", "tess": "Tess Okafor"}.get(user_id, user_id.title()),
            role=role,
            organisation="UHB NHS FT" if role == "steward" else "University of Birmingham",
            organisation_type="nhs_trust" if role == "steward" else "university",
            accreditation_expires=until,
            actor="cli:test",
        )
        keys[user_id], users[user_id] = key, user
    projects = {}
    study = gov.projects.request(
        requester=users["ana"],
        title="DPP outcomes by deprivation",
        purpose="Estimate who benefits from the NHS Diabetes Prevention Programme.",
        lay_summary="We study whether a prevention programme helps people in every area.",
        grants=GRANTS,
        days=120,
        members=["mo"],
    )
    gov.projects.approve(
        study.project_id, steward=users["tess"], epsilon=3.0, delta=1e-6, trainers=["mo"]
    )
    projects["study"] = study.project_id
    for name, owner, title in (
        ("pending", "bob", "Hypertension <control> & statins"),
        ("doomed", "bob", "Everything about everyone"),
        ("to_reject", "bob", '=HYPERLINK("http://example.org") statin study'),
        ("to_suspend", "ana", "Asthma reviews"),
        ("to_suspend_api", "ana", "COPD reviews"),
    ):
        projects[name] = gov.projects.request(
            requester=users[owner],
            title=title,
            purpose="Compare blood pressure control between practices.",
            lay_summary="How well is high blood pressure treated in the West Midlands?",
            grants=GRANTS,
            days=90,
        ).project_id
    for name in ("to_suspend", "to_suspend_api"):
        gov.projects.approve(projects[name], steward=users["tess"], epsilon=1.0, delta=1e-6)
    service = gov.queries
    outputs = {}
    for name, audit in (
        ("to_release", {"attack_auc": 0.5, "members": 400}),
        (
            "model",
            {
                "attack_auc": 0.52,
                "loss_threshold_auc": 0.51,
                "members": 400,
                "at": "2025-01-31T10:00:00+00:00",
            },
        ),
        ("raw", None),
    ):
        card = {**MODEL_CARD, "membership_inference": audit}
        outputs[name] = service.submit_model(
            gov.people.authenticate(keys["mo"]),
            study.project_id,
            model_id=f"m-{name}",
            release="release-0001",
            card=card,
            artifact_sha256="ab" * 32,
        )
    # one woman's pseudonym, for an output that differs from another by one person
    # (through the engine: this process already holds the release open for grant checks)
    con = service.engine(service.release_for("real")).cursor()
    try:
        (one,) = con.execute("SELECT min(person_id) FROM patients WHERE sex = 'F'").fetchone()
    finally:
        con.close()
    proc, url = _serve(home)
    hub = StewardHub(url, home, keys, projects, outputs)
    pid = study.project_id
    with hub.api("ana") as ana:
        for epsilon in (0.2, 0.5, 0.1):
            answer = ana.post(
                f"/projects/{pid}/queries",
                json={
                    "sql": "SELECT sex, count(*) AS n FROM patients GROUP BY sex",
                    "target": "real",
                    "mode": "dp",
                    "epsilon": epsilon,
                },
            )
            assert answer.status_code == 200, answer.text
        for name, sql in (
            ("fine", "SELECT year_of_birth, count(*) AS n FROM patients GROUP BY year_of_birth"),
            ("women", "SELECT count(*) AS n FROM patients WHERE sex = 'F'"),
            (
                "women_but_one",
                f"SELECT count(*) AS n FROM patients WHERE sex = 'F' AND person_id <> {one}",
            ),
            ("by_sex", "SELECT sex, count(*) AS n FROM patients GROUP BY sex"),
        ):
            answer = ana.post(
                f"/projects/{pid}/queries", json={"sql": sql, "target": "real", "mode": "exact"}
            )
            assert answer.status_code == 200, answer.text
            hub.outputs[name] = answer.json()["output_id"]
        # a query whose text would be markup if it were not escaped (refused by the policy)
        ana.post(
            f"/projects/{pid}/queries",
            json={"sql": "SELECT '<script>alert(1)</script>' AS x", "target": "real", "mode": "dp"},
        )
    try:
        yield hub
    finally:
        proc.terminate()
        proc.wait(10)
