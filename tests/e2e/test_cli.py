"""The `hub` command as a user runs it: a real process, real files."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

HUB = [sys.executable, "-m", "hub.cli"]


def run(
    *args: str, home: Path, check: bool = True, timeout: int = 300
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HUB_HOME": str(home), "COLUMNS": "160"}
    result = subprocess.run([*HUB, *args], capture_output=True, text=True, env=env, timeout=timeout)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def test_help_lists_the_jobs(tmp_path):
    out = run("--help", home=tmp_path).stdout
    assert "synth" in out and "demo" in out
    synth = run("synth", "--help", home=tmp_path).stdout
    for option in (
        "--patients",
        "--seed",
        "--out",
        "--format",
        "--defects",
        "--start-year",
        "--dummy",
    ):
        assert option in synth


def test_synth_writes_into_hub_home_by_default_and_reports_counts(tmp_path):
    result = run("synth", "--patients", "1500", "--seed", "4", home=tmp_path)
    manifest = json.loads((tmp_path / "synthetic" / "real" / "manifest.json").read_text())
    assert manifest["rows"]["patients"] == 1500
    assert "patients" in result.stderr and "1,500" in result.stderr


def test_synth_fhir_with_defects_to_a_chosen_folder(tmp_path):
    out = tmp_path / "export"
    run(
        "synth",
        "-n",
        "300",
        "--format",
        "fhir",
        "--defects",
        "0.02",
        "--out",
        str(out),
        home=tmp_path,
    )
    assert (out / "fhir" / "Patient.000.ndjson").exists()
    assert list((out / "defects").glob("*.parquet"))


def test_bad_arguments_fail_with_a_clear_message_and_nothing_written(tmp_path):
    for args, message in (
        (("--patients", "0"), "at least 1"),
        (("--format", "xml"), "parquet, csv, fhir or feeds"),
        (("--patients", "600000"), "450,000"),
        (("--defects", "2"), "between 0 and 0.5"),
    ):
        result = run("synth", *args, home=tmp_path, check=False)
        assert result.returncode == 2, args
        assert message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr
    assert not (tmp_path / "synthetic").exists()


def test_demo_runs_the_whole_story_and_can_run_again(tmp_path):
    result = run(
        "demo", "--patients", "30000", "--dummy-patients", "1000", "--no-serve", home=tmp_path,
        timeout=900,
    )  # fmt: skip
    out = result.stdout
    # the real release is built from the region's feeds, linked, with a summary
    assert "the real population as 10 feeds" in out and "linked" in out
    assert "against the generator's truth: precision" in out and "data controller" in out
    assert "Rows per table" in out and "type2_diabetes" in out and "IMD decile" in out
    assert "Diabetes Prevention Programme" in out and "referred" in out
    assert "quality gate passed" in out and "approved" in out
    assert "sent for review as output o-" in out and "demo.researcher" in out and "hub_" in out
    assert "/docs" in out and "/steward/" in out and "curl" in out and "HubClient" in out
    # the DP models of the study: three ε, a privacy-utility plot, a card sent for review
    assert out.count("held-out AUROC") == 3 and "expected fall in 12-month HbA1c" in out
    plots = list((tmp_path / "projects").glob("*/privacy_utility.png"))
    assert len(plots) == 1 and plots[0].read_bytes().startswith(b"\x89PNG")
    cards = list((tmp_path / "projects").glob("*/models/m-*/card.md"))
    assert len(cards) == 4 and "sent for release review as o-" in out
    # one emulated trial, reviewed by the demo steward, and the who-benefits model, each
    # beside the generator's truth
    trial = re.search(r"DP AIPW ([0-9.-]+) mmol/mol \(95% CI ([0-9.-]+) to ([0-9.-]+)\)", out)
    truth = re.search(r"truth ([0-9.-]+) \(mean over the [0-9,]+ eligible people\)", out)
    assert trial and truth and "steward approved it" in out, out
    assert 0.5 < float(truth.group(1)) < 3.0  # the generator's mean benefit (mmol/mol)
    found = re.search(r"finds (\d+)% of the true top-decile benefiters", out)
    assert found and 0 <= int(found.group(1)) <= 100
    assert (tmp_path / "releases" / "CURRENT").exists() and (
        tmp_path / "dummy" / "releases" / "CURRENT"
    ).exists()
    again = run(
        "demo", "--patients", "3000", "--dummy-patients", "500", "--no-serve", home=tmp_path,
        timeout=600,
    )  # fmt: skip
    assert "setup finished" in again.stdout
    # too few people for the study's models: said plainly, the rest still runs
    assert "DP models skipped: too few training rows" in again.stdout
    verify = run("audit", "verify", home=tmp_path)
    assert "audit log verified" in verify.stderr


def test_demo_never_overwrites_a_hub_it_did_not_make(tmp_path):
    (tmp_path / "releases").mkdir()
    (tmp_path / "releases" / "precious.txt").write_text("keep me")
    refused = run("demo", "--no-serve", home=tmp_path, check=False)
    assert refused.returncode == 2 and "another HUB_HOME" in refused.stderr
    assert (tmp_path / "releases" / "precious.txt").read_text() == "keep me"


def test_serve_refuses_to_start_without_keys_or_a_release(tmp_path):
    result = run("serve", "--port", "0", home=tmp_path, check=False)
    assert result.returncode == 2
    assert "does not start" in result.stderr and "key" in result.stderr
    # weak keys given through the environment are refused too
    env_home = tmp_path / "weak"
    env = {
        **os.environ,
        "HUB_HOME": str(env_home),
        "HUB_PSEUDONYM_KEY": "00" * 32,
        "HUB_VAULT_KEY": "11" * 32,
    }
    weak = subprocess.run([*HUB, "serve"], capture_output=True, text=True, env=env, timeout=60)
    assert weak.returncode == 2 and "trivially weak" in weak.stderr
