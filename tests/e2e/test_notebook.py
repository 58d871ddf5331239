"""The study notebook runs end to end against a live hub, as a researcher runs it."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[2] / "docs" / "notebooks" / "first_study.ipynb"


def test_the_first_study_notebook_walks_dummy_dp_exact_and_download(
    live_hub, tmp_path, monkeypatch
):
    pid = live_hub.projects["ana"]
    for name, value in {
        "HUB_URL": live_hub.url,
        "HUB_API_KEY": live_hub.keys["ana"],
        "HUB_PROJECT": pid,
        "HUB_STEWARD_KEY": live_hub.keys["sam"],
    }.items():
        monkeypatch.setenv(name, value)
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()  # raises CellExecutionError, naming the cell, if any cell fails
    outputs = [
        "".join(
            o.get("text", "") + str(o.get("data", {}).get("text/plain", "")) for o in cell.outputs
        )
        for cell in notebook.cells
        if cell.cell_type == "code"
    ]
    assert "signed in as ana (researcher)" in outputs[0]
    assert "patients: One row per person" in outputs[1] and "type2-diabetes-snomed" in outputs[1]
    assert "imd_decile" in outputs[2]  # dummy rows
    assert "people at 95%" in outputs[3] and "ε spent 0.2" in outputs[3]
    assert "is pending review by a data steward" in outputs[4]
    assert outputs[5].startswith("approved")
    saved = list(tmp_path.glob("o-*.parquet"))
    assert len(saved) == 1 and f"saved {saved[0].name}" in outputs[6]
    assert os.environ["HUB_PROJECT"] == pid
    pytest.importorskip("pandas").read_parquet(saved[0])
