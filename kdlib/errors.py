"""kdlib's user-facing errors: bad input caught before compute, named so that the CLI prints them as one line.

Every message names the field or file, what was expected, what was found, and the fix.
"""
from __future__ import annotations


class KdlibError(Exception):
    """Base of the errors a user can fix (the CLI prints them as ``kdlib: error: ...`` with exit code 2)."""


class ConfigError(KdlibError, ValueError):
    """A config field of the wrong type or out of range, an unknown name, a reserved ``--set`` field."""


class DataFileError(KdlibError, ValueError):
    """A data file that cannot be read (damaged, truncated, of the wrong format)."""


class TeacherError(KdlibError, ValueError):
    """Teacher logits that fail verification (checksum, row count, non-finite rows, misalignment)."""


class OutputDirError(KdlibError, OSError):
    """An output directory that cannot be created or written."""


class CellsFailed(RuntimeError):
    """Some cells of a sweep were lost (a worker died) or raised; the finished ones are stored (CLI exit 1)."""
