"""The data-quality gate (OHDSI DQD-style checks run by Great Expectations in DuckDB) and
the release-time identifier scan.

The gate is imported on first use: Great Expectations is heavy, and a load without the
gate (or the identifier scan alone) does not need it.
"""

from __future__ import annotations

import importlib
import sys
import threading
from typing import Any, Final

__all__ = ["QualityResult", "ingest_gate", "run_gate"]


class _GateWhenItRuns:
    """``ingest_gate``, importing Great Expectations only when a gate is asked for.

    The import takes seconds of one core (GX pulls in pandas, scipy, altair). ``prepare``
    starts it on a background thread as the build begins, so it overlaps the build's
    DuckDB work (which runs outside the GIL) instead of following it; the gate itself
    waits for it. A load that runs no gate, or fails before its build, never imports it.
    """

    def __init__(self) -> None:
        self._import: threading.Thread | None = None

    def prepare(self) -> None:
        if self._import is None and GATE_MODULE not in sys.modules:
            self._import = threading.Thread(
                target=importlib.import_module, args=(GATE_MODULE,),
                name="hub-import-great-expectations", daemon=True,
            )  # fmt: skip
            self._import.start()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self._import is not None:
            self._import.join()
        from connectors.quality.gate import ingest_gate

        return ingest_gate(*args, **kwargs)


GATE_MODULE: Final = "connectors.quality.gate"
gate_when_it_runs: Final = _GateWhenItRuns()


def __getattr__(name: str) -> Any:
    if name in __all__:
        from connectors.quality import gate

        return getattr(gate, name)
    raise AttributeError(name)
