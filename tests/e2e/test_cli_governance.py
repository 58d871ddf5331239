"""`hub users`, `hub projects` and `hub audit` as an operator runs them."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys


def hub(home, *args, check=True, key=None):
    env = {**os.environ, "HUB_HOME": str(home), "COLUMNS": "200"}
    env.pop("HUB_API_KEY", None)
    if key is not None:
        env["HUB_API_KEY"] = key
    result = subprocess.run(
        [sys.executable, "-m", "hub.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def test_users_projects_and_audit_from_the_command_line(tmp_path):
    home = tmp_path / "hub"
    key = hub(
        home,
        "users",
        "add",
        "ana",
        "--name",
        "Ana Smith",
        "--role",
        "researcher",
        "--organisation",
        "University of Birmingham",
    ).stdout.strip()
    added = hub(
        home,
        "users",
        "add",
        "sam",
        "--name",
        "Sam Jones",
        "--role",
        "steward",
        "--organisation",
        "UHB NHS FT",
        "--organisation-type",
        "nhs_trust",
    )
    assert key.startswith("hub_") and "shown once" in added.stderr
    sam_key = added.stdout.strip()
    listing = hub(home, "users", "list").stdout
    assert "ana" in listing and "steward" in listing and key not in listing
    project_id = hub(
        home,
        "projects",
        "request",
        "--as",
        "ana",
        "--title",
        "DPP outcomes",
        "--purpose",
        "Evaluate the DPP",
        "--lay-summary",
        "Who benefits from a prevention programme",
        "--grant",
        "patients:person_id,sex",
        "--grant",
        "observations:code,value",
        "--days",
        "90",
        key=key,
    ).stdout.strip()
    refused = hub(
        home,
        "projects",
        "approve",
        project_id,
        "--as",
        "ana",
        "--epsilon",
        "1",
        check=False,
        key=key,
    )
    assert refused.returncode == 2 and "only stewards" in refused.stderr
    # acting as someone takes their key: ana's key cannot act as sam
    impostor = hub(
        home, "projects", "approve", project_id, "--as", "sam", "--epsilon", "1", check=False,
        key=key,
    )  # fmt: skip
    assert impostor.returncode == 2 and "not sam's" in impostor.stderr
    keyless = hub(home, "projects", "approve", project_id, "--as", "sam", "--epsilon", "1",
                  check=False)  # fmt: skip
    assert keyless.returncode == 2 and "HUB_API_KEY" in keyless.stderr
    assert "Traceback" not in impostor.stderr + keyless.stderr
    hub(
        home,
        "projects",
        "approve",
        project_id,
        "--as",
        "sam",
        "--epsilon",
        "2",
        "--grant",
        "patients:person_id",
        key=sam_key,
    )
    shown = hub(home, "projects", "show", project_id).stdout
    assert '"status": "approved"' in shown and '"epsilon_total": 2.0' in shown
    assert project_id in hub(home, "projects", "list").stdout
    bad = hub(
        home,
        "projects",
        "approve",
        project_id,
        "--as",
        "sam",
        "--epsilon",
        "nan",
        check=False,
        key=sam_key,
    )
    assert bad.returncode == 2
    rotated = hub(home, "users", "rotate-key", "ana").stdout.strip()
    assert rotated.startswith("hub_") and rotated != key
    assert "audit log verified" in hub(home, "audit", "verify").stderr
    tail = hub(home, "audit", "tail", "-n", "50").stdout
    assert "project.approve" in tail and "user.rotate_key" in tail
    export = tmp_path / "audit.jsonl"
    hub(home, "audit", "export", "--out", str(export))
    pem = tmp_path / "audit.pem"
    pem.write_text(hub(home, "audit", "public-key").stdout)
    assert (
        "verified"
        in hub(home, "audit", "verify-export", str(export), "--public-key", str(pem)).stderr
    )
    # tamper with the store: verify fails, names the entry, exits non-zero
    con = sqlite3.connect(home / "governance" / "governance.sqlite3")
    with con:
        con.execute(
            "UPDATE audit_entries SET body = replace(body, 'DPP outcomes', 'Other') WHERE seq = 3"
        )
    con.close()
    broken = hub(home, "audit", "verify", check=False)
    assert broken.returncode == 1 and "entry 3" in broken.stderr
    assert hub(home, "users", "revoke", "ana").returncode == 0


def test_a_request_for_an_identifier_column_is_refused_in_one_line(tmp_path):
    home = tmp_path / "hub"
    key = hub(
        home, "users", "add", "ana", "--name", "Ana", "--role", "researcher",
        "--organisation", "UoB",
    ).stdout.strip()  # fmt: skip
    refused = hub(
        home, "projects", "request", "--title", "t", "--purpose", "p", "--lay-summary", "l",
        "--grant", "patients:sex,nhs_number", key=key, check=False,
    )  # fmt: skip
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "identifier columns are never granted (patients: nhs_number)" in refused.stderr
