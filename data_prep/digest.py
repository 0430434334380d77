"""The two hashes a dataset card carries: what a table was made from and what it holds.

* ``input_hash`` (:func:`hash_inputs`): sha256 over the converter's input files (names and
  bytes), so a card says which annotation files it came from.
* ``content_digest`` (:func:`content_digest`): sha256 over the frames themselves (video ids,
  offsets, labels, features), independent of how Parquet laid them out, so two files with
  the same frames have the same digest and a study can key its results on it. Every writer
  records it through :func:`with_content_digest`, in the one pass over the features that
  also refuses non-finite values (:func:`scan_features`, which :func:`data_prep.table.
  read_table` runs too, without a digest).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .errors import DataError

if TYPE_CHECKING:  # table.py imports this module to write and read
    from .table import FrameTable

__all__ = ["content_digest", "hash_inputs", "scan_features", "with_content_digest"]

_CHUNK_ROWS = 1 << 16  # rows per pass over the features: a few MB, stays in cache


def scan_features(
    table: FrameTable, where: str | Path | None, digest: hashlib._Hash | None = None
) -> None:
    """One pass over the features: refuse non-finite values (naming the video and frame)
    and, when ``digest`` is given, feed the bytes to it. A chunk's float sum is finite iff
    every value is (NaN and inf propagate; only an overflow of huge finite values could
    make it inf, and then the exact check below finds nothing and the chunk passes)."""
    feats = table.features
    if feats is None:
        return
    for lo in range(0, feats.shape[0], _CHUNK_ROWS):
        chunk = feats[lo : lo + _CHUNK_ROWS]
        if not np.isfinite(chunk.sum()):
            bad = np.flatnonzero(~np.isfinite(chunk).all(axis=1))
            if bad.size:
                row = lo + int(bad[0])
                i = int(np.searchsorted(table.offsets, row, side="right")) - 1
                value = feats[row][~np.isfinite(feats[row])][0]
                raise DataError(
                    f"video {table.videos[i]!r} frame {row - int(table.offsets[i])}: feature "
                    f"value {value} (features must be finite)",
                    where,
                )
        if digest is not None:
            digest.update(chunk)


def content_digest(table: FrameTable) -> str:
    """sha256 identifying a table's frames, independent of how Parquet laid them out.

    Over, in order: ``b"kitchen-study frames v1\\0"``; the video ids, each UTF-8 + ``\\0``;
    ``offsets`` as little-endian int64; ``labels`` as little-endian int16; then
    ``b"features\\0"`` + D as decimal ASCII + ``\\0`` + the features as little-endian
    float32, row-major (or ``b"no features\\0"``). Splits, classes and provenance are in
    the card itself. Also refuses non-finite features (:class:`DataError`).
    """
    h = _digest_head(table)
    scan_features(table, None, h)
    return h.hexdigest()


def _digest_head(table: FrameTable) -> hashlib._Hash:
    h = hashlib.sha256(b"kitchen-study frames v1\0")
    for v in table.videos:
        h.update(v.encode() + b"\0")
    h.update(np.ascontiguousarray(table.offsets, dtype="<i8"))
    h.update(np.ascontiguousarray(table.labels, dtype="<i2"))
    if table.features is None:
        h.update(b"no features\0")
    else:
        h.update(b"features\0%d\0" % table.features.shape[1])
    return h


def with_content_digest(table: FrameTable) -> FrameTable:
    """Validate ``table`` and record its content digest in its card (in place: the digest
    is a function of the arrays, so the caller's table then matches the file)."""
    table.validate()
    if table.features is not None and table.features.dtype != np.float32:
        table.features = np.ascontiguousarray(table.features, dtype=np.float32)
    table.card = table.card.replace(content_digest=content_digest(table))
    return table


def hash_inputs(paths: Iterable[str | Path], root: str | Path | None = None) -> str:
    """sha256 over the (relative names and bytes of the) input files, in sorted order."""
    h = hashlib.sha256()
    root = None if root is None else Path(root)
    for p in sorted(Path(p) for p in paths):
        name = str(p.relative_to(root)) if root is not None else p.name
        h.update(name.encode() + b"\0")
        h.update(p.read_bytes())
        h.update(b"\0")
    return h.hexdigest()
