"""Re-identification from the vault: one person, with a reason, from the command line."""

import json
import os
import subprocess
import sys

import pyarrow.parquet as pq

from connectors.ingest import ingest
from tests.conftest import release_con


def test_reidentify_prints_one_persons_identifiers_and_demands_a_reason(
    population_3k, hub_home, keys
):
    result = ingest(population_3k, fmt="native", home=hub_home, keys=keys)
    person = (
        release_con(result.release.path)
        .execute("SELECT min(person_id) FROM patients")
        .fetchall()[0][0]
    )
    env = {**os.environ, "HUB_HOME": str(hub_home)}
    base = [sys.executable, "-m", "hub.cli"]
    keys_of = {}
    for user, role in (("root.admin", "admin"), ("ana", "researcher")):
        made = subprocess.run(
            [*base, "users", "add", user, "--name", user, "--role", role, "--organisation", "UHB"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert made.returncode == 0, made.stderr
        keys_of[user] = made.stdout.strip()
    as_ana = {**env, "HUB_API_KEY": keys_of["ana"]}
    denied = subprocess.run(
        [*base, "reidentify", str(person), "--as", "ana", "--reason", "curious about this one"],
        env=as_ana,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert denied.returncode == 2 and "only accredited admins" in denied.stderr
    # naming the admin is not enough: the command takes the admin's own key
    borrowed = subprocess.run(
        [*base, "reidentify", str(person), "--as", "root.admin", "--reason", "clinical recall"],
        env=as_ana, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert borrowed.returncode == 2 and "not root.admin's" in borrowed.stderr
    env = {**env, "HUB_API_KEY": keys_of["root.admin"]}
    cmd = [*base, "reidentify", str(person), "--as", "root.admin"]
    refused = subprocess.run(
        [*cmd, "--reason", "x"], env=env, capture_output=True, text=True, timeout=60
    )
    assert refused.returncode == 2 and "--reason" in refused.stderr
    ok = subprocess.run(
        [*cmd, "--reason", "clinical recall REF-2291"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ok.returncode == 0, ok.stderr
    record = json.loads(ok.stdout)
    numbers = set(
        pq.read_table(population_3k / "patients", columns=["nhs_number"]).column(0).to_pylist()
    )
    assert record["nhs_number"] in numbers and record["postcode"]
    missing = subprocess.run(
        [
            *base,
            "reidentify",
            "12345",
            "--as",
            "root.admin",
            "--reason",
            "clinical recall REF-2291",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode == 2 and "not in" in missing.stderr
    log = subprocess.run(
        [*base, "audit", "tail", "-n", "10"], env=env, capture_output=True, text=True, timeout=60
    ).stdout
    assert "reidentify" in log and "denied" in log and "allowed" in log
    assert str(record["nhs_number"]) not in log  # the audit entry names the pseudonym only
