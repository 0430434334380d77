"""Readers for the MS-TCN dataset layout, shared by the Breakfast, 50 Salads and generic
MS-TCN converters.

The layout (Farha & Gall, MS-TCN, CVPR 2019; used by most action segmentation code)::

    ROOT/mapping.txt               "<index> <label>" per line, indices 0..C-1 in order
    ROOT/groundTruth/<video>.txt   one label name per line, one line per frame
    ROOT/splits/{train,test}.split<K>.bundle   one "<video>.txt" per line
    ROOT/features/<video>.npy      optional, shape (D, T)
"""

from __future__ import annotations

import re
from collections.abc import Collection
from pathlib import Path

import numpy as np

from .errors import DataError

__all__ = ["read_bundle", "read_label_file", "read_mapping", "split_bundles"]


def read_mapping(path: str | Path) -> tuple[str, ...]:
    """Class names in index order from ``mapping.txt``."""
    path = Path(path)
    if not path.is_file():
        raise DataError("mapping file not found", path)
    names: list[str] = []
    for lineno, raw in enumerate(path.read_text().splitlines(), start=1):
        if not raw.strip():
            continue
        parts = raw.split()
        if len(parts) != 2:
            raise DataError(f"expected '<index> <label>', got {raw!r}", path, lineno)
        idx, name = parts
        if not idx.isdigit() or int(idx) != len(names):
            raise DataError(f"expected index {len(names)}, got {idx!r}", path, lineno)
        if name in names:
            raise DataError(f"label {name!r} listed twice", path, lineno)
        names.append(name)
    if not names:
        raise DataError("mapping file is empty", path)
    return tuple(names)


def read_label_file(path: str | Path, class_index: dict[str, int]) -> np.ndarray:
    """Per-frame label indices (int16) from a groundTruth file: one label name per line."""
    path = Path(path)
    lines = path.read_text().split()
    if not lines:
        raise DataError("annotation file is empty", path)
    try:
        return np.fromiter((class_index[x] for x in lines), dtype=np.int16, count=len(lines))
    except KeyError:
        # Find the first offending line only on the error path, so the hot path stays lean.
        for lineno, raw in enumerate(path.read_text().splitlines(), start=1):
            if raw.strip() and raw.strip() not in class_index:
                raise DataError(f"label {raw.strip()!r} is not in mapping.txt", path, lineno) from None
        raise


def read_bundle(path: str | Path, known_videos: Collection[str]) -> tuple[str, ...]:
    """Video ids listed in a split bundle (``<video>.txt`` per line); every one must exist."""
    path = Path(path)
    videos: list[str] = []
    for lineno, raw in enumerate(path.read_text().splitlines(), start=1):
        name = raw.strip()
        if not name:
            continue
        video = name[:-4] if name.endswith(".txt") else name
        if video not in known_videos:
            raise DataError(f"split names video {video!r}, which has no annotation file", path, lineno)
        videos.append(video)
    return tuple(videos)


_BUNDLE = re.compile(r"^(train|test)\.split(\d+)\.bundle$")


def split_bundles(splits_dir: str | Path) -> dict[int, dict[str, Path]]:
    """``{k: {"train": path, "test": path}}`` for every split K found in ``splits_dir``."""
    splits_dir = Path(splits_dir)
    found: dict[int, dict[str, Path]] = {}
    for p in sorted(splits_dir.glob("*.bundle")):
        m = _BUNDLE.match(p.name)
        if m:
            found.setdefault(int(m.group(2)), {})[m.group(1)] = p
    for k, parts in found.items():
        if set(parts) != {"train", "test"}:
            missing = ({"train", "test"} - set(parts)).pop()
            raise DataError(f"split {k} has no {missing}.split{k}.bundle", splits_dir)
    return dict(sorted(found.items()))
