"""Small synthetic kitchens on disk for the study-layer tests (spec, runner, cluster)."""

from __future__ import annotations

from pathlib import Path

from data_prep.synth import make_kitchens
from data_prep.table import write_table

__all__ = ["write_kitchens"]


def write_kitchens(
    root: Path, kitchens: int = 3, videos: int = 8, seed: int = 0
) -> dict[str, Path]:
    """Write ``kitchens`` synthetic datasets (with simulated softmax) under ``root``."""
    out = {}
    for name, table in make_kitchens(seed, kitchens, videos, participants=4).items():
        out[name] = write_table(table, Path(root) / f"{name}.parquet")
    return out
