"""A real `hub serve` on a free localhost port, over a prepared hub home."""

from __future__ import annotations

import datetime as dt
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from connectors.ingest import ingest
from connectors.secrets import resolve_keys
from governance.facade import Governance
from synthetic_data.generator import SynthConfig, generate


@dataclass
class LiveHub:
    url: str
    home: Path
    keys: dict[str, str]
    projects: dict[str, str]

    def client(self, who: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.keys[who]}"} if who else {}
        return httpx.Client(base_url=self.url + "/v1", headers=headers, timeout=60)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def live_hub(population_3k, tmp_path_factory):
    home = tmp_path_factory.mktemp("live") / "hub"
    ingest(population_3k, fmt="native", home=home, keys=resolve_keys(home, create=True))
    dummy = generate(
        SynthConfig(patients=500, seed=77, dummy=True), tmp_path_factory.mktemp("dummy") / "d"
    ).out
    ingest(dummy, fmt="native", home=home / "dummy", keys=resolve_keys(home / "dummy", create=True))
    gov = Governance.open(home, create_keys=True)
    keys, users = {}, {}
    until = dt.date.today() + dt.timedelta(days=90)
    for user_id, role in (
        ("ana", "researcher"),
        ("bob", "researcher"),
        ("sam", "steward"),
        ("tess", "steward"),
        ("mo", "modeller"),
        ("root", "admin"),
        ("gone", "researcher"),
    ):
        user, key = gov.people.add(
            user_id=user_id,
            name=user_id.title(),
            role=role,
            organisation="UoB",
            organisation_type="university",
            accreditation_expires=until,
            actor="cli:test",
        )
        keys[user_id], users[user_id] = key, user
    grants = {
        "patients": ["person_id", "sex", "year_of_birth", "imd_decile"],
        "conditions": ["person_id", "code", "onset_date"],
        "observations": ["person_id", "code", "value"],
    }
    projects = {}
    for owner, eps in (("ana", 3.0), ("bob", 1.0)):
        p = gov.projects.request(
            requester=users[owner],
            title=f"{owner}'s study",
            purpose="Evaluate the DPP",
            lay_summary="Who benefits from prevention",
            grants=grants,
            days=60,
        )
        gov.projects.approve(p.project_id, steward=users["sam"], epsilon=eps, delta=1e-6)
        projects[owner] = p.project_id
    gov.people.revoke(user_id="gone", actor="cli:test")
    port = free_port()
    env = {**os.environ, "HUB_HOME": str(home)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "hub.cli", "serve", "--port", str(port), "--query-timeout", "5"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if httpx.get(url + "/v1/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    else:
        proc.kill()
        raise RuntimeError(
            "hub serve did not start: " + (proc.stdout.read() if proc.stdout else "")
        )
    yield LiveHub(url, home, keys, projects)
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="module")
def small_home(population_3k, tmp_path_factory) -> Path:
    """A hub home of its own (3,000-person real, 500-person dummy release), no users yet:
    for tests that start their own server and may change or break what it serves."""
    home = tmp_path_factory.mktemp("small") / "hub"
    ingest(population_3k, fmt="native", home=home, keys=resolve_keys(home, create=True))
    dummy = generate(
        SynthConfig(patients=500, seed=78, dummy=True), tmp_path_factory.mktemp("dummy") / "d"
    ).out
    ingest(dummy, fmt="native", home=home / "dummy", keys=resolve_keys(home / "dummy", create=True))
    return home
