"""Runnable study scripts and their training specs (see README: DP models)."""

from pathlib import Path

EXAMPLES = Path(__file__).parent
