"""The generator's one error, in a module of its own so that catching it (the `hub` CLI
does, for every command) does not import the generator and its numerical stack."""

from __future__ import annotations


class GenerationError(Exception):
    """The arguments or the output folder do not allow a population to be generated."""
