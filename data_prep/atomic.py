"""All-or-nothing outputs: every file a command writes appears complete, or not at all.

Used for frame tables (:func:`data_prep.table.write_tables`) and for training checkpoints
(:func:`trainables.job.write_checkpoint`). The rules are in :class:`atomic_outputs`.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterable
from pathlib import Path

from .errors import DataError

__all__ = ["atomic_output", "atomic_outputs"]


def _output_error(e: OSError, where: Path) -> DataError:
    reason = e.strerror or str(e) or type(e).__name__
    return DataError(f"cannot write ({reason}); nothing was changed", where)


def _temp_beside(path: Path) -> Path:
    """A new empty file ``.<name>.<random>.tmp`` beside ``path``, created with mode 0666
    minus the umask (mkstemp's 0600 would make outputs private on shared storage)."""
    if path.is_dir():
        raise DataError("is a folder; expected the name of a file to write", path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _output_error(e, path.parent) from None
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        except OSError as e:
            raise _output_error(e, path) from None
        os.close(fd)
        return tmp


class atomic_outputs:
    """Context manager yielding temporary paths beside ``paths``; all renamed onto them
    when the block succeeds, all removed when it fails.

    So a reader never sees a half-written output, an existing file is left as it was, and a
    command writing several files leaves all of them or none (the renames happen together
    at the end, after every file is complete). An ``OSError`` (full disk, read-only folder)
    becomes a one-line :class:`DataError` naming the output; a target that is a folder is
    refused before anything is written. Files are created with the user's umask.
    """

    def __init__(self, paths: Iterable[str | Path]):
        self.paths = [Path(p) for p in paths]
        self.tmps: list[Path] = []

    def _where(self) -> Path:
        parents = {p.parent for p in self.paths}
        return self.paths[0] if len(self.paths) == 1 or len(parents) > 1 else parents.pop()

    def _clean(self) -> None:
        for tmp in self.tmps:
            tmp.unlink(missing_ok=True)

    def __enter__(self) -> list[Path]:
        try:
            for p in self.paths:
                self.tmps.append(_temp_beside(p))
        except BaseException:
            self._clean()
            raise
        return list(self.tmps)

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            try:
                for tmp, p in zip(self.tmps, self.paths, strict=True):
                    os.replace(tmp, p)
            except OSError as e:
                self._clean()
                raise _output_error(e, self._where()) from None
            return
        self._clean()
        if isinstance(exc, OSError):
            raise _output_error(exc, self._where()) from None


class atomic_output(atomic_outputs):
    """:class:`atomic_outputs` for one file: yields one temporary path."""

    def __init__(self, path: str | Path):
        super().__init__([path])
        self.path = Path(path)

    def __enter__(self) -> Path:  # type: ignore[override]
        return super().__enter__()[0]
