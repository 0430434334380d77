"""What every data command shares: how bad input is reported, and how a table is written.

Kept apart from :mod:`data_prep.cli` (which imports every converter) so that converters can
use it without an import cycle.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import ParamSpec, TypeVar

import typer

from .errors import DataError
from .table import FrameTable, describe, write_table

__all__ = ["reports_data_errors", "write_prepared"]

P = ParamSpec("P")
R = TypeVar("R")


def reports_data_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Wrap a typer command so bad input prints ``error: FILE:LINE: message`` and exits 2.

    Done per command rather than only in ``main()`` so the exit status is the same under
    typer's test runner and inside other programs that invoke the app.
    """

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except DataError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2) from None

    return wrapper


def write_prepared(table: FrameTable, out: Path) -> None:
    """Write a converted table atomically, then print one line about it and its notes
    (what the converter's stated rules did: overlaps resolved, files skipped, ...; they also
    travel in the dataset card)."""
    write_table(table, out)
    typer.echo(describe(table, out))
    for note in table.card.notes:
        typer.echo(f"  note: {note}")
