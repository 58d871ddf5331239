"""The layers of DESIGN.md, enforced on the code's own imports.

    hub ──▶ models ──▶ governance ──▶ connectors ──▶ synthetic_data

A package may import only packages to its right (hub may also skip a layer). Only
``governance/sql/engine.py`` opens a DuckDB database among hub, models and governance:
everything else reaches release data through the governance facade.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ORDER = ["hub", "models", "governance", "connectors", "synthetic_data"]
ENGINE = ROOT / "governance" / "sql" / "engine.py"


def _modules(package: str) -> list[Path]:
    return sorted(p for p in (ROOT / package).rglob("*.py") if "examples" not in p.parts)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names & set(ORDER)


@pytest.mark.parametrize("package", ORDER)
def test_no_package_imports_a_layer_above_it(package):
    above = set(ORDER[: ORDER.index(package)])
    offenders = {
        str(path.relative_to(ROOT)): sorted(_imports(path) & above)
        for path in _modules(package)
        if _imports(path) & above
    }
    assert offenders == {}, f"{package} must not import {sorted(above)}: {offenders}"


def test_only_the_engine_opens_a_database_among_hub_models_and_governance():
    openers = []
    for package in ("hub", "models", "governance"):
        for path in _modules(package):
            if path == ENGINE:
                continue
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                if (
                    isinstance(node, ast.Attribute)
                    and node.attr == "connect"
                    and isinstance(node.value, ast.Name)
                    and node.value.id == "duckdb"
                ):
                    openers.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert openers == [], f"open releases through governance.sql.engine only: {openers}"


def test_the_steward_pages_import_on_their_own():
    # the import cycle steward/web.py -> api -> app -> steward is gone
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", "import hub.steward"], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
