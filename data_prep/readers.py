"""File readers shared by the converters: strict text reading and the MS-TCN layout's
text files.

Every input is read through :func:`read_bytes` / :func:`read_text`, so a path that is a
folder, a symlink loop or unreadable, and text that is not UTF-8, is a :class:`DataError`
naming the file (and, for bad bytes, the line) rather than a traceback or a silent skip.

The layout (Farha & Gall, MS-TCN, CVPR 2019; used by most action segmentation code)::

    ROOT/mapping.txt               "<index> <label>" per line, indices 0..C-1 in order
    ROOT/groundTruth/<video>.txt   one label name per line, one line per frame
    ROOT/splits/{train,test}.split<K>.bundle   one "<video>.txt" per line
    ROOT/features/<video>.npy      optional, shape (D, T)
"""

from __future__ import annotations

import os
import re
import select
import stat
from collections.abc import Collection
from pathlib import Path

import numpy as np

from .errors import DataError
from .table import MAX_FRAMES_PER_VIDEO

__all__ = [
    "check_frame_limit",
    "read_bundle",
    "read_bytes",
    "read_text",
    "read_label_file",
    "read_mapping",
    "split_bundles",
]


def read_bytes(path: str | Path) -> bytes:
    """A file's bytes; a :class:`DataError` naming it if it is missing, a folder, a symlink
    loop or otherwise unreadable."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
        if stat.S_ISFIFO(mode):  # a pipe (`<(zcat x)`) is read; one nobody writes to is not
            return _read_fifo(path)
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISSOCK(mode):
            raise DataError("not a regular file (a device or socket)", path)
        return path.read_bytes()
    except FileNotFoundError:
        raise DataError("no such file", path) from None
    except IsADirectoryError:
        raise DataError("is a folder, expected a file", path) from None
    except OSError as e:  # ELOOP, EACCES, EIO, ...
        raise DataError(f"cannot read ({e.strerror or e})", path) from None


#: seconds a FIFO gets to start delivering before it is refused (opening one for reading
#: would otherwise wait forever for a writer)
FIFO_WAIT_S = 5.0


def _read_fifo(path: Path) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # returns at once, writer or not
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN | select.POLLHUP)
        if not poller.poll(FIFO_WAIT_S * 1000):
            raise DataError(f"a FIFO that nothing wrote to within {FIFO_WAIT_S:.0f}s", path)
        os.set_blocking(fd, True)
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read()
    finally:
        os.close(fd)


def utf8_error(data: bytes, e: UnicodeDecodeError, path: str | Path) -> DataError:
    """The :class:`DataError` for bytes that are not UTF-8: file, line and the byte."""
    line = data.count(b"\n", 0, e.start) + 1
    return DataError(f"not UTF-8 text (byte 0x{data[e.start]:02x})", path, line)


def read_text(path: str | Path) -> str:
    """A file's text, decoded as strict UTF-8 (see :func:`read_bytes` for other errors)."""
    data = read_bytes(path)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise utf8_error(data, e, path) from None


def check_frame_limit(value: int, what: str, path: str | Path, line: int | None) -> None:
    """A :class:`DataError` naming the line if frame number ``value`` (``what``: how the
    file names it, e.g. ``end_frame``) lies beyond :data:`~data_prep.table.
    MAX_FRAMES_PER_VIDEO`: checked while reading, before anything is allocated per frame."""
    if value > MAX_FRAMES_PER_VIDEO:
        raise DataError(
            f"{what} {value} is beyond the limit of {MAX_FRAMES_PER_VIDEO:,} frames per video",
            path,
            line,
        )


def read_mapping(path: str | Path) -> tuple[str, ...]:
    """Class names in index order from ``mapping.txt``."""
    path = Path(path)
    if not path.exists():
        raise DataError("mapping file not found", path)
    names: list[str] = []
    for lineno, raw in enumerate(read_text(path).splitlines(), start=1):
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


def read_label_file(
    path: str | Path, class_index: dict[str, int], vocabulary: str = "mapping.txt"
) -> np.ndarray:
    """Per-frame label indices (int16) from a groundTruth file: one label name per line.

    Whitespace around a name and blank lines at the end of the file are ignored; a blank
    line between frames, or a name not in ``class_index``, is a :class:`DataError` naming
    the line. ``vocabulary`` names the label list in that error (e.g. for files that
    have no ``mapping.txt``).
    """
    path = Path(path)
    data = read_bytes(path).rstrip()
    if not data:
        raise DataError("annotation file is empty", path)
    # Hot path (millions of lines per dataset): split the bytes once and look every line up
    # in a bytes-keyed dict through map(), with no per-line Python frame or decode; about
    # 1.5x faster than a generator over decoded lines. Anything unusual (stray spaces,
    # unknown names) falls to the slow path below, which also finds the offending line.
    lookup = {name.encode(): idx for name, idx in class_index.items()}
    lines = data.splitlines()
    try:
        return np.fromiter(map(lookup.__getitem__, lines), dtype=np.int16, count=len(lines))
    except KeyError:
        pass
    out = np.empty(len(lines), dtype=np.int16)
    for lineno, raw in enumerate(lines, start=1):
        name = raw.strip()
        if not name:
            raise DataError("blank line: expected one label name per frame", path, lineno)
        idx = lookup.get(name)
        if idx is None:
            try:
                label = name.decode()
            except UnicodeDecodeError as e:
                byte = name[e.start]
                raise DataError(f"not UTF-8 text (byte 0x{byte:02x})", path, lineno) from None
            raise DataError(f"label {label!r} is not in {vocabulary}", path, lineno)
        out[lineno - 1] = idx
    return out


def read_bundle(path: str | Path, known_videos: Collection[str]) -> tuple[str, ...]:
    """Video ids listed in a split bundle (``<video>.txt`` per line); every one must exist
    and be listed once."""
    path = Path(path)
    videos: list[str] = []
    first_line: dict[str, int] = {}
    for lineno, raw in enumerate(read_text(path).splitlines(), start=1):
        name = raw.strip()
        if not name:
            continue
        video = name[:-4] if name.endswith(".txt") else name
        if video not in known_videos:
            raise DataError(
                f"split names video {video!r}, which has no annotation file", path, lineno
            )
        if video in first_line:
            raise DataError(
                f"video {video!r} is listed twice (first on line {first_line[video]})", path, lineno
            )
        first_line[video] = lineno
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
