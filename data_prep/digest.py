"""The two hashes a dataset card carries: what a table was made from and what it holds.

* ``input_hash`` (:func:`hash_inputs`): sha256 over the converter's input files (names and
  bytes), so a card says which annotation files it came from.
* ``content_digest`` (:func:`content_digest`): sha256 over the frames themselves (video ids,
  offsets, labels, features), independent of how Parquet laid them out, so two files with
  the same frames have the same digest and a study can key its results on it. Every writer
  records it through :func:`with_content_digest`, in the one pass over the features that
  also refuses non-finite values (:func:`scan_features`, which :func:`data_prep.table.
  read_table` runs too, feeding the same digest to check the card).

**Verified against the card** (:func:`check_content`, :func:`is_verified`,
:func:`remember_verified`): reading a table's features recomputes its digest in that same
pass and refuses a table whose frames do not match its card (a feature value rewritten
outside the project's writer, zeroed bytes): one line naming the file. So that a large table
is hashed once, not at every study open or trial, a verified digest is cached by the file's
identity: resolved path, device, inode, size, ``mtime_ns`` and ``ctime_ns`` (the last cannot
be set back by ``touch``/``os.utime``; any write, rename or chmod moves it). A cache entry
is trusted only when every one of those and the card's digest are the same. The cache is a
small JSON file, ``$XDG_CACHE_HOME/kitchen-study/verified-tables.json`` (default
``~/.cache/...``), written atomically and owner-only; a cache that cannot be read or
written only costs a re-hash.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .errors import DataError

if TYPE_CHECKING:  # table.py imports this module to write and read
    from .table import FrameTable

__all__ = [
    "cache_file",
    "check_content",
    "content_digest",
    "hash_inputs",
    "is_verified",
    "remember_verified",
    "with_content_digest",
]

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


def check_content(table: FrameTable, where: str | Path, complete: bool = True) -> None:
    """Refuse non-finite features and, when the card carries a digest and ``table`` holds
    all of the file (``complete``: its features were read, if it has any), a table whose
    frames do not match it; one pass over the features (:func:`scan_features`). A match is
    remembered for ``where`` (:func:`remember_verified`)."""
    expected = table.card.content_digest
    if not expected or expected.startswith("file-") or not complete:
        scan_features(table, where)
        return
    h = _digest_head(table)
    scan_features(table, where, h)
    if h.hexdigest() != expected:
        raise DataError(
            f"the frames do not match the table's dataset card (content digest "
            f"{h.hexdigest()[:12]}, card {expected[:12]}): it was changed outside "
            "kitchen-study's writer or is damaged; prepare it again", where)
    remember_verified(where, expected)


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


# -- the verified-digest cache (module docstring) ---------------------------------------------

_CACHE_NAME = "verified-tables.json"
_CACHE_ENTRIES = 512  # files remembered; the oldest are dropped first


def cache_file() -> Path:
    """Where verified digests are cached: ``$XDG_CACHE_HOME/kitchen-study/`` (else
    ``~/.cache/kitchen-study/``) ``verified-tables.json``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kitchen-study" / _CACHE_NAME


def _file_key(path: str | Path) -> str | None:
    try:
        p = Path(path).resolve()
        st = p.stat()
    except (OSError, RuntimeError):
        return None
    return "|".join(map(str, (p, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns,
                              st.st_ctime_ns)))


def _read_cache() -> dict[str, str]:
    try:
        data = json.loads(cache_file().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def is_verified(path: str | Path, digest: str) -> bool:
    """Whether ``path``, exactly as it is now, was verified to hold ``digest``."""
    key = _file_key(path)
    return bool(digest) and key is not None and _read_cache().get(key) == digest


def remember_verified(path: str | Path, digest: str) -> None:
    """Cache that ``path`` (as it is now) holds ``digest``. Best effort: a cache that cannot
    be written means the next read hashes the table again, nothing worse."""
    key = _file_key(path)
    if key is None or not digest:
        return
    target = cache_file()
    cache = _read_cache()
    cache.pop(key, None)
    cache[key] = digest  # last in: kept longest
    cache = dict(list(cache.items())[-_CACHE_ENTRIES:])
    try:
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".verified-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(cache, f)
            os.replace(tmp, target)  # mkstemp made it 0600: the cache stays the user's
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError:
        pass
