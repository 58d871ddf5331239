"""Stands in as a pytest-xdist worker's ``__main__`` file (see ``tests/conftest.py``).

A worker's ``__main__`` has neither a spec nor a file; pyspark takes that for its own
doctest run and exits. Processes that multiprocessing spawns from a worker re-run this
file as their main module, so it must stay empty of side effects.
"""
