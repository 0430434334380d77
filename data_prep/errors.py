"""The one error type for bad input data.

Every converter raises :class:`DataError` naming the offending file (and line where
there is one); the CLI prints it as ``error: FILE:LINE: message`` and exits 2, with
no traceback and no output file left behind.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["DataError"]


class DataError(ValueError):
    """Bad input data, located by file and (optionally) 1-based line number."""

    def __init__(self, message: str, path: str | Path | None = None, line: int | None = None):
        self.path = None if path is None else Path(path)
        self.line = line
        self.reason = message
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(where + message)
