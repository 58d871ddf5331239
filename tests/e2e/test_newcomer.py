"""A newcomer's path: a fresh clone, no HUB_HOME, the commands exactly as documented."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

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


def test_make_demo_command_runs_in_a_fresh_clone_with_the_default_hub_home(fresh_clone):
    # `make demo` runs `.venv/bin/hub demo`; the same entry point, without serving
    makefile = (fresh_clone / "Makefile").read_text()
    assert "$(BIN)/hub demo" in makefile
    result = subprocess.run(
        [sys.executable, "-m", "hub.cli", "demo", "--patients", "3000", "--dummy-patients",
         "500", "--no-serve"],
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
