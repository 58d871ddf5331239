"""What `hub` imports before it needs it: nothing heavy that the command does not use.

Great Expectations (with pandas) is imported only when a quality gate runs, the
synthetic-data generator (numpy, scipy, pyarrow) only by `hub synth` and `hub demo`.
Checked on the modules a fresh process has loaded, never on a clock.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _loaded(code: str, tmp_path: Path) -> set[str]:
    probe = code + "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "HUB_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def _top(modules: set[str]) -> set[str]:
    return {m.split(".")[0] for m in modules}


def test_the_cli_starts_without_the_gate_or_the_generator(tmp_path):
    loaded = _top(_loaded("import hub.cli, connectors.ingest", tmp_path))
    assert "great_expectations" not in loaded and "pandas" not in loaded
    assert "scipy" not in loaded
    assert "synthetic_data.generator" not in _loaded("import hub.cli", tmp_path)


def test_a_command_that_does_not_generate_never_imports_the_generator(tmp_path):
    code = (
        "from hub.cli import app\n"
        "try:\n"
        "    app(['releases', 'list'])\n"
        "except SystemExit as e:\n"
        "    assert not e.code\n"
    )
    loaded = _loaded(code, tmp_path)
    assert "synthetic_data.generator" not in loaded and "scipy" not in _top(loaded)


def test_an_ingest_that_fails_before_its_gate_never_imports_great_expectations(tmp_path):
    code = (
        "import sys\n"
        "from hub.cli import app\n"
        "try:\n"
        f"    app(['ingest', {str(tmp_path / 'missing')!r}])\n"
        "except SystemExit as e:\n"
        "    assert e.code != 0\n"
    )
    assert "great_expectations" not in _top(_loaded(code, tmp_path))
