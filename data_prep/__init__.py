"""Dataset preparation: real annotation formats and synthetic data → canonical frame tables."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import DataError
from .table import (
    DatasetCard,
    FrameTable,
    Split,
    VideoLabels,
    read_card,
    read_table,
    summarize,
    write_table,
)

__all__ = [
    "DataError",
    "DatasetCard",
    "FrameTable",
    "Split",
    "VideoLabels",
    "read_card",
    "read_table",
    "real_data_dir",
    "summarize",
    "write_table",
]


def real_data_dir() -> Path | None:
    """Where the real annotations live: ``$KITCHEN_DATA``, else ``../shared/data`` beside the
    checkout. None when absent (a user's fresh clone): tests and benchmarks then skip."""
    env = os.environ.get("KITCHEN_DATA")
    candidates = [Path(env)] if env else [Path(__file__).resolve().parents[2] / "shared" / "data"]
    for c in candidates:
        if c.is_dir():
            return c
    return None
