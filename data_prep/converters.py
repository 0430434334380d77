"""The converter registry: one module per source format, all behind one small Protocol.

``kitchen-study prepare <name>`` is built from this table, so adding a format means
adding a module and one entry here, never an ``if`` in an entry point. Every converter is a
peer: it reads its files into a :class:`data_prep.layout.Layout` and finishes through
:meth:`~data_prep.layout.Layout.to_table` (one card-building path, one converter-version
scheme ``<NAME>-<VERSION>``), and its command writes through
:func:`data_prep.commands.write_prepared`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from .table import FrameTable

__all__ = ["CONVERTERS", "Converter"]


class Converter(Protocol):
    """A source format. ``convert`` reads the raw files and returns a validated table;
    ``command`` is its typer CLI function (options mirror ``convert``'s arguments plus
    ``--out``). ``VERSION`` is an integer string, bumped when the output for the same input
    changes; ``BACKGROUND`` is the background class its cards name by default (None: the
    format has no convention, and the caller names one or none)."""

    NAME: str
    VERSION: str
    BACKGROUND: str | None

    def convert(self, *args: Any, **kwargs: Any) -> FrameTable: ...

    command: Callable[..., None]


def _load() -> dict[str, Converter]:
    from . import breakfast, mpii, mstcn, salads

    return {m.NAME: m for m in (breakfast, salads, mpii, mstcn)}  # type: ignore[misc]


CONVERTERS: dict[str, Converter] = _load()
