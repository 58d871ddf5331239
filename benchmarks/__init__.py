"""Benchmarks: run with `make bench` (python -m benchmarks). Never timed in tests."""
