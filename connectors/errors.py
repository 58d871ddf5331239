"""Errors raised while loading data. The CLI maps each to a message and exit code 2.

    IngestError
     ├── SecretError      a key is missing, malformed, weak or too widely readable
     ├── SourceError      an input cannot be read at all (the load fails, nothing changes)
     └── ReleaseError     the release catalogue refuses (locked, unknown release, ...)

Messages name files, tables, counts and rules; never a patient-level value.
"""


class IngestError(Exception):
    """Base class of every error a load can end with."""


class SecretError(IngestError):
    """A key is missing, malformed, weak or readable by other users."""


class SourceError(IngestError):
    """An input file or folder cannot be read at all."""


class ReleaseError(IngestError):
    """The release catalogue cannot do what was asked."""
