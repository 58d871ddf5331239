"""The data-quality gate: OHDSI DQD-style checks run by Great Expectations in DuckDB."""

from connectors.quality.gate import QualityResult, ingest_gate, run_gate

__all__ = ["QualityResult", "ingest_gate", "run_gate"]
