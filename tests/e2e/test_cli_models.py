"""`hub train`, `hub models` and `hub audit-model` as a modeller and a steward run them."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from governance.facade import Governance
from tests.homes import add_people, approved_project, publish

HUB = [sys.executable, "-m", "hub.cli"]

SPEC = """
name = "t2d-by-age"

[cohort]
sql = '''
SELECT p.person_id, max(p.year_of_birth) AS year_of_birth, max(p.imd_decile) AS imd_decile,
       coalesce(bool_or(c.code = '44054006'), false) AS t2d
FROM patients p LEFT JOIN conditions c USING (person_id) GROUP BY p.person_id
'''
outcome = "t2d"

[features.numeric]
year_of_birth = [1910, 2025]
imd_decile = [1, 10]

[model]
kind = "mlp"
hidden = 8

[privacy]
epsilon = 2.0

[training]
epochs = 5
"""


@pytest.fixture(scope="module")
def hub_with_project(population_3k, tmp_path_factory):
    work = tmp_path_factory.mktemp("cli-models")
    home = work / "hub"
    publish(population_3k, home)
    gov = Governance.open(home, create_keys=True)
    who = add_people(gov, keys_to=work, ana="researcher", mo="modeller", sam="steward")
    grants = {"patients": ["person_id", "year_of_birth", "imd_decile"],
              "conditions": ["person_id", "code"]}  # fmt: skip
    pid = approved_project(
        gov, who["ana"], who["sam"], grants, title="risk", members=["mo"], delta=1e-5,
        trainers=["mo"],
    )  # fmt: skip
    (work / "spec.toml").write_text(SPEC)
    return work, home, pid


def hub(home: Path, *args: str, key: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run `hub`; messages and progress go to stderr, so ``stdout`` here holds both."""
    env = {**os.environ, "HUB_HOME": str(home), "COLUMNS": "200"}
    env.pop("HUB_API_KEY", None)
    if key is not None:
        env["HUB_API_KEY"] = key
    done = subprocess.run([*HUB, *args], capture_output=True, text=True, env=env, timeout=300)
    done.stdout = done.stdout + done.stderr
    return done


def test_a_modeller_trains_lists_and_submits_and_a_steward_audits(hub_with_project):
    work, home, pid = hub_with_project
    mo, sam = work / "mo.key", work / "sam.key"
    trained = hub(home, "train", "--project", pid, "--spec", str(work / "spec.toml"),
                  "--key-file", str(mo), "--submit")  # fmt: skip
    assert trained.returncode == 0, trained.stdout + trained.stderr
    model_id = re.search(r"trained (m-[0-9a-f]+)", trained.stdout).group(1)
    assert "auroc" in trained.stdout and "submitted for release as output o-" in trained.stdout
    listed = hub(home, "models", "list", "--project", pid, "--key-file", str(mo))
    assert model_id in listed.stdout and "AUROC" in listed.stdout
    audited = hub(home, "audit-model", "--project", pid, "--model", model_id,
                  "--key-file", str(sam))  # fmt: skip
    assert audited.returncode == 0, audited.stdout + audited.stderr
    assert "attack AUC" in audited.stdout
    steward = home / "projects" / pid / "models" / model_id / "steward.json"
    report = json.loads(steward.read_text())["membership_inference"]
    assert report["run_by"] == "sam" and 0 <= report["attack_auc"] <= 1
    # the modeller cannot audit, the steward cannot train
    refused = hub(home, "audit-model", "--project", pid, "--model", model_id, "--key-file", str(mo))
    assert refused.returncode == 2 and "only stewards audit models" in refused.stdout
    refused = hub(home, "train", "--project", pid, "--spec", str(work / "spec.toml"),
                  "--key-file", str(sam))  # fmt: skip
    assert refused.returncode == 2 and "error:" in refused.stdout


def test_training_beyond_the_budget_or_without_a_key_is_refused_clearly(hub_with_project):
    work, home, pid = hub_with_project
    no_key = hub(home, "train", "--project", pid, "--spec", str(work / "spec.toml"))
    assert no_key.returncode == 2 and "HUB_API_KEY" in no_key.stdout
    greedy = work / "greedy.toml"
    greedy.write_text(SPEC.replace("epsilon = 2.0", "epsilon = 50.0"))
    over = hub(home, "train", "--project", pid, "--spec", str(greedy),
               key=(work / "mo.key").read_text().strip())  # fmt: skip
    assert over.returncode == 2 and "budget" in over.stdout.lower()
    bad = work / "bad.toml"
    bad.write_text(SPEC.replace("[model]", "[modle]"))
    broken = hub(home, "train", "--project", pid, "--spec", str(bad), "--key-file",
                 str(work / "mo.key"))  # fmt: skip
    assert broken.returncode == 2 and "unknown section" in broken.stdout
