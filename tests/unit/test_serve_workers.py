"""`hub serve` starts one worker per core it may use unless told otherwise (--workers)."""

from __future__ import annotations

import os
import subprocess
import sys

from typer.testing import CliRunner

from hub.cli.serve import app, default_workers


def test_the_default_is_the_cores_this_process_may_use():
    assert default_workers() == len(os.sched_getaffinity(0)) >= 1


def test_a_hub_held_to_one_core_starts_one_worker():
    code = (
        "import os; os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]}); "
        "from hub.cli.serve import default_workers; print(default_workers())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "1"


def test_help_names_the_flag_and_its_default():
    out = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"}).output
    assert "--workers" in out and "the cores the hub may use" in out
