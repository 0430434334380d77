"""What every data command shares: how bad input and bad options are reported, and how a
table is written.

Kept apart from :mod:`data_prep.cli` (which imports every converter) so that converters can
use it without an import cycle.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import ParamSpec, TypeVar

import typer

from .errors import DataError
from .table import FrameTable, describe, write_table

__all__ = ["checked_option", "reports_data_errors", "usage_errors", "write_prepared"]

P = ParamSpec("P")
R = TypeVar("R")


def reports_data_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Wrap a typer command so bad input prints ``error: FILE:LINE: message`` and exits 2.

    Rules, the same for every wrapped command:

    * a :class:`DataError` is printed as one line, exit status 2, no traceback;
    * so is an ``OSError`` about a named file (unreadable, a folder, a symlink loop):
      ``error: FILE: reason``;
    * an ``out`` argument that is the same file as another path argument (``simulate X
      --out X``) is refused before anything runs: a command never writes over its input.

    Done per command rather than only in ``main()`` so the exit status is the same under
    typer's test runner and inside other programs that invoke the app.
    """

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            _refuse_writing_over_input(kwargs)
            return command(*args, **kwargs)
        except DataError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2) from None
        except OSError as e:
            if e.filename is None:
                raise
            typer.echo(f"error: {e.filename}: {e.strerror or e}", err=True)
            raise typer.Exit(2) from None

    return wrapper


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet): compare where they would be
        try:
            return a.resolve() == b.resolve()
        except (OSError, RuntimeError):  # a symlink loop: reported where it is read
            return False


def _refuse_writing_over_input(kwargs: dict[str, object]) -> None:
    out = kwargs.get("out")
    if not isinstance(out, Path):
        return
    for name, value in kwargs.items():
        if name != "out" and isinstance(value, Path) and _same_file(value, out):
            raise DataError(
                f"--out is the input {name.upper()} itself; write the result elsewhere",
                out,
            )


@contextmanager
def usage_errors() -> Iterator[None]:
    """A ``ValueError`` raised in the block (an option out of range) becomes a
    :class:`DataError`: one line ``error: message``, exit 2, like bad input (typer's usage
    box is seven lines)."""
    try:
        yield
    except DataError:
        raise
    except ValueError as e:
        raise DataError(str(e)) from None


def checked_option(check: Callable[[str], object]) -> Callable[..., str]:
    """A typer option callback: the value unchanged if ``check(value)`` accepts it, else one
    line ``error: --option: message`` and exit 2 (it runs while the options are parsed,
    before :func:`reports_data_errors` can catch anything)."""

    def callback(param: typer.CallbackParam, value: str) -> str:
        try:
            check(value)
        except ValueError as e:
            flag = (param.opts or [param.name or "option"])[0]
            typer.echo(f"error: {flag}: {e}", err=True)
            raise typer.Exit(2) from None
        return value

    return callback


def write_prepared(table: FrameTable, out: Path) -> None:
    """Write a converted table atomically, then print one line about it and its notes
    (what the converter's stated rules did: overlaps resolved, files skipped, ...; they also
    travel in the dataset card)."""
    write_table(table, out)
    typer.echo(describe(table, out))
    for note in table.card.notes:
        typer.echo(f"  note: {note}")
