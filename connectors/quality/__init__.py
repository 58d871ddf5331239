"""The data-quality gate (OHDSI DQD-style checks run by Great Expectations in DuckDB) and
the release-time identifier scan.

The gate is imported on first use: Great Expectations is heavy, and a load without the
gate (or the identifier scan alone) does not need it.
"""

from __future__ import annotations

from typing import Any

__all__ = ["QualityResult", "ingest_gate", "run_gate"]


def gate_when_it_runs(*args: Any, **kwargs: Any) -> Any:
    """``ingest_gate``, importing Great Expectations only when the gate runs: a load that
    fails before its gate (a bad source, a leak) never pays for the import."""
    from connectors.quality.gate import ingest_gate

    return ingest_gate(*args, **kwargs)


def __getattr__(name: str) -> Any:
    if name in __all__:
        from connectors.quality import gate

        return getattr(gate, name)
    raise AttributeError(name)
