"""Shared fixtures: populations generated once per test session into a temp folder."""

from __future__ import annotations

import sys
from pathlib import Path

import duckdb
import pytest

from synthetic_data import summary
from synthetic_data.generator import SynthConfig, generate

# A pytest-xdist worker's __main__ has neither a spec nor a file. pyspark (imported by
# Great Expectations when it is installed, for the linkage's Spark engine) takes that to
# mean "running pyspark's own doctests" and exits the process. Give the worker's main an
# empty file (multiprocessing's spawned children re-run it as theirs).
_main = sys.modules["__main__"]
if getattr(_main, "__spec__", None) is None and not hasattr(_main, "__file__"):
    _main.__file__ = str(Path(__file__).with_name("worker_main.py"))

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(scope="session")
def population_50k(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pop") / "real"
    generate(SynthConfig(patients=50_000, seed=7), out)
    return out


@pytest.fixture(scope="session")
def con_50k(population_50k: Path) -> duckdb.DuckDBPyConnection:
    return summary.connect(population_50k)


@pytest.fixture(scope="session")
def population_3k(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pop3k") / "real"
    generate(SynthConfig(patients=3_000, seed=13), out)
    return out


@pytest.fixture
def hub_home(tmp_path: Path) -> Path:
    home = tmp_path / "hub"
    home.mkdir()
    return home


@pytest.fixture
def keys(hub_home: Path):
    from connectors.secrets import resolve_keys

    return resolve_keys(hub_home, create=True)


def release_con(path: Path) -> duckdb.DuckDBPyConnection:
    return duckdb.connect(str(path), read_only=True)
