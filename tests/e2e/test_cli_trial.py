"""`hub trial`: a modeller estimates an emulated trial's average effect from the
command line; the estimate goes to steward review, the spend shows in the ledger, and an
over-budget study is refused."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from governance.facade import Governance
from tests.homes import add_people, approved_project, publish

STUDY = """
name = "female-imd"

[protocol]
eligibility = "everyone in the release"
treatment_strategies = ["female", "not female"]
assignment = { time_zero = "registration", grace_period_days = 0 }
follow_up = "none (a stand-in: the machinery, not the science, is under test)"
outcome = "IMD decile"
causal_contrast = "average effect"
confounders = ["year_of_birth"]

[cohort]
sql = '''
SELECT person_id, year_of_birth, sex = 'F' AS female, imd_decile FROM patients
'''
outcome = "imd_decile"
treatment = "female"

[features.numeric]
year_of_birth = [1910, 2025]

[model]
kind = "effect"
architecture = "linear"
outcome = "continuous"
outcome_bounds = [1, 10]

[privacy]
epsilon = 2.0
"""


@pytest.fixture(scope="module")
def hub_with_project(population_3k, tmp_path_factory):
    work = tmp_path_factory.mktemp("cli-trial")
    home = work / "hub"
    publish(population_3k, home)
    gov = Governance.open(home, create_keys=True)
    who = add_people(gov, keys_to=work, ana="researcher", mo="modeller", sam="steward")
    grants = {"patients": ["person_id", "year_of_birth", "sex", "imd_decile"]}
    pid = approved_project(
        gov, who["ana"], who["sam"], grants, title="trial", members=["mo"], delta=1e-5,
        trainers=["mo"],
    )  # fmt: skip
    (work / "study.toml").write_text(STUDY)
    return work, home, pid, gov


def hub(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HUB_HOME": str(home), "COLUMNS": "200"}
    env.pop("HUB_API_KEY", None)
    done = subprocess.run(
        [sys.executable, "-m", "hub.cli", *args], capture_output=True, text=True, env=env,
        timeout=300,
    )  # fmt: skip
    done.stdout = done.stdout + done.stderr
    return done


def test_a_modeller_estimates_a_trial_and_a_second_one_does_not_fit(hub_with_project):
    work, home, pid, gov = hub_with_project
    args = ("trial", "--project", pid, "--study", str(work / "study.toml"))
    done = hub(home, *args, "--key-file", str(work / "mo.key"))
    assert done.returncode == 0, done.stdout
    found = re.search(r"sent for steward review as output (o-[0-9a-f]+) \(pending\)", done.stdout)
    assert found, done.stdout
    assert "ε = 2.000" in done.stdout and "average effect" in done.stdout  # the contrast
    output = gov.outputs.row(found.group(1))
    assert output["kind"] == "trial" and output["status"] == "pending"
    assert gov.ledger.state(pid).epsilon_spent == pytest.approx(2.0, rel=1e-4)
    again = hub(home, *args, "--key-file", str(work / "mo.key"))
    assert again.returncode == 2 and "budget" in again.stdout.lower()
    steward = hub(home, *args, "--key-file", str(work / "sam.key"))
    assert steward.returncode == 2 and "error:" in steward.stdout
