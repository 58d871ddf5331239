"""A newcomer's path: a fresh clone, no HUB_HOME, the commands exactly as documented."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def fresh_clone(tmp_path_factory) -> Path:
    """What a clone of this tree holds: the files git tracks or would commit, nothing ignored.

    (The tree as it stands, so that uncommitted work is tested too; CI itself runs on a
    fresh clone of main. No .venv, no var/, no caches come along.)
    """
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("git and a git checkout are needed to clone the repository")
    clone = tmp_path_factory.mktemp("newcomer") / "hub"
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, check=True,
    ).stdout.decode().split("\0")  # fmt: skip
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file():
            (clone / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, clone / name)
    return clone


def _newcomer_env(clone: Path) -> dict[str, str]:
    """No HUB_HOME, no active virtualenv: only this project's interpreter, run in the clone."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    env.pop("VIRTUAL_ENV", None)
    env["PYTHONPATH"] = str(clone)  # the clone's code, with the installed dependencies
    env["COLUMNS"] = "160"
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(clone: Path, port: int) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "hub.cli", "serve", "--port", str(port)],
        cwd=clone, env=_newcomer_env(clone), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.kill()
    raise AssertionError("hub serve did not start: " + (proc.stdout.read() if proc.stdout else ""))


def test_make_demo_command_runs_in_a_fresh_clone_with_the_default_hub_home(fresh_clone):
    # `make demo` runs `.venv/bin/hub demo`; the same entry point, without serving
    makefile = (fresh_clone / "Makefile").read_text()
    assert "$(BIN)/hub demo" in makefile
    result = subprocess.run(
        [sys.executable, "-m", "hub.cli", "demo", "--patients", "3000", "--dummy-patients",
         "500", "--no-serve", "--port", str(port := _free_port())],
        cwd=fresh_clone, env=_newcomer_env(fresh_clone), capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    # the default HUB_HOME is ./var in the clone, resolved to an absolute path
    assert f"HUB_HOME = {fresh_clone / 'var'}" in result.stdout
    assert list((fresh_clone / "var" / "releases").glob("*"))
    # Data Docs, which need an absolute folder, were built under it
    assert list((fresh_clone / "var").rglob("index.html"))
    # the commands the demo prints work as printed, from a shell with no venv active
    printed = result.stdout.split("try\n", 1)[1].strip().splitlines()
    assert len(printed) == 4 and all(str(port) in line for line in printed)
    server = _serve(fresh_clone, port)
    try:
        shell_env = _newcomer_env(fresh_clone)
        shell_env["PATH"] = "/usr/bin:/bin"  # no venv on the PATH: the printed python is explicit
        shell_env.pop("PYTHONPATH")  # as a newcomer's shell: the interpreter finds the hub
        answers = [
            subprocess.run(["bash", "-c", line], cwd=fresh_clone, env=shell_env,
                           capture_output=True, text=True, timeout=120)
            for line in printed
        ]  # fmt: skip
        # the demo project is granted the OMOP views too, and queries can name codelists
        key = re.search(r"demo\.researcher\s+(\S+)", result.stdout).group(1)  # type: ignore[union-attr]
        project = re.search(r"project (p-[0-9a-f]+) approved", result.stdout).group(1)  # type: ignore[union-attr]
        omop = httpx.post(
            f"http://127.0.0.1:{port}/v1/projects/{project}/queries",
            headers={"Authorization": f"Bearer {key}"},
            json={
                "sql": "SELECT count(DISTINCT person_id) FROM condition_occurrence "
                "WHERE condition_source_value IN codelist('type2-diabetes-snomed')",
                "target": "real", "mode": "dp", "epsilon": 0.1,
            },
            timeout=60,
        )  # fmt: skip
    finally:
        server.terminate()
        server.wait(10)
    for line, answer in zip(printed, answers, strict=True):
        assert answer.returncode == 0, (line[:60], answer.stderr[-2000:])
        assert "Traceback" not in answer.stderr
    dp, queue, approval, client = (a.stdout for a in answers)
    assert '"epsilon_spent"' in dp and '"status":"done"' in dp
    assert '"output_id"' in queue
    assert '"approved"' in approval
    assert client.split()[:2] == ["sex", "year_of_birth"]  # a DataFrame of dummy rows
    assert omop.status_code == 200 and omop.json()["rows"][0][0] > 0, omop.text


def _readme_block(heading: str) -> str:
    text = (REPO / "README.md").read_text()
    section = text.split(f"## {heading}", 1)[1]
    return section.split("```sh\n", 1)[1].split("```", 1)[0]


def test_the_readme_step_by_step_block_runs_as_written(fresh_clone):
    block = _readme_block("Step by step, on your own population")
    (fresh_clone / ".venv").symlink_to(REPO / ".venv")  # what `make .venv/.installed` makes
    env = _newcomer_env(fresh_clone)
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block], cwd=fresh_clone, env=env,
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer["status"] == "done" and answer["columns"] == ["sex", "count"]
    assert answer["epsilon_spent"] == 0.5
