"""Breakfast Actions (Kuehne et al., CVPR 2014): MS-TCN layout or raw coarse segmentation files.

Where the data comes from: the Breakfast project page
(https://serre-lab.clps.brown.edu/resource/breakfast-actions-dataset/) publishes the videos
(15 fps) and the coarse segmentation (``segmentation_coarse.tar.gz``); the MS-TCN data
release (Farha & Gall, CVPR 2019) repackages the same labels per frame. The real
annotations used here are at ``../shared/data/breakfast`` (MS-TCN layout; see its README).

The command::

    kitchen-study prepare breakfast --root ../shared/data/breakfast --out breakfast.parquet
    kitchen-study prepare breakfast --root ../shared/data/breakfast --out bf_cam01.parquet \\
        --cameras cam01

Expected counts: 1712 videos, 3,590,899 frames, 48 classes (background ``SIL``), 52
participants (P03-P54), 10 activities, 5 cameras; 4 leave-person-out splits with
1460/252, 1261/451, 1279/433, 1136/576 train/test videos. ``--cameras cam01``: 433 videos
(the paper's sequence count), splits restricted to them.

Rules (stated, not guessed):

* **Input format, auto-detected**: if ``ROOT/groundTruth/`` is a folder, ROOT is read as
  the MS-TCN layout by :func:`data_prep.layout.read_layout` (``mapping.txt``, ``splits/``
  bundles and optional ``features/`` as stated in :mod:`data_prep.mstcn`). Otherwise ROOT
  holds **raw coarse files**: every ``*.txt`` file under ROOT, in any sub-folder (the
  release's ``segmentation_coarse/<activity>/<video>.txt``), except ``ROOT/mapping.txt`` and files
  under ``ROOT/splits/``; the video id is the file name without ``.txt``.
* **Raw coarse files**: one segment per line, ``<start>-<end> <label>``, frames 1-based and
  inclusive (``1-30 SIL``). Segments must tile the video: the first starts at frame 1 and
  each next one starts right after the previous end. A gap is an **error**, not background
  (the format is a run-length encoding, so a gap means a damaged file; filling it with
  ``SIL`` would invent labels); so are overlaps, an end before its start, non-integer,
  negative or zero frames, frames beyond :data:`~data_prep.table.MAX_FRAMES_PER_VIDEO`
  (10^8), a label not in ``mapping.txt``, a malformed or empty file, a ``*.txt`` that is a
  folder, a symlink loop or not UTF-8, and two files with the same video id. Blank lines
  are ignored. The video has ``<end>`` of the last segment frames.
* **Classes** (raw files): ``ROOT/mapping.txt`` if present (then every label must be in
  it), else the sorted set of labels found, with ``SIL`` at index 0 (even if unused).
* **Video ids** ``P03_cam01_P03_cereals`` give participant ``P03``, camera ``cam01`` and
  activity ``cereals`` (:data:`VIDEO_ID`; both participant fields must agree). An id
  that does not match is an error naming its file.
* **Cameras**: ``--cameras all`` (default) or a comma-separated list; a camera is kept if
  its field equals one of them exactly (``cam01`` does not select ``webcam01``).
* **Splits**: MS-TCN layout: the ``splits/`` bundles; raw files: the standard rule, split
  K tests on participants P03-P15, P16-P28, P29-P41, P42-P54 (K = 1..4) and trains on the
  rest (a participant outside P03-P54 is an error). Both are restricted to the kept videos.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import typer

from .commands import checked_option, write_prepared
from .errors import DataError
from .layout import (
    Layout,
    VideoMeta,
    compile_pattern,
    parse_video_id,
    read_layout,
    select_views,
)
from .readers import check_frame_limit, read_mapping, read_text
from .table import FrameTable, Split, VideoLabels

__all__ = [
    "BACKGROUND",
    "CAMERAS",
    "FPS",
    "NAME",
    "VERSION",
    "command",
    "convert",
    "detect_format",
]

NAME = "breakfast"
VERSION = "1"
FPS = 15.0
BACKGROUND = "SIL"
#: Breakfast's video id: participant, camera, participant again, activity.
VIDEO_ID = re.compile(
    r"^(?P<participant>P\d+)_(?P<view>[A-Za-z]+\d+)_(?P=participant)_(?P<activity>[A-Za-z]+)$"
)
CAMERAS = ("cam01", "cam02", "stereo01", "webcam01", "webcam02")
#: test participants (inclusive number ranges) of the 4 standard splits
TEST_PARTICIPANTS = ((3, 15), (16, 28), (29, 41), (42, 54))

_SEGMENT = re.compile(r"(-?[^-\s]+)-(-?[^-\s]+)")
_INT = re.compile(r"-?\d+")


def detect_format(root: str | Path) -> str:
    """``"mstcn"`` if ``ROOT/groundTruth/`` is a folder, else ``"coarse"`` (raw files)."""
    return "mstcn" if (Path(root) / "groundTruth").is_dir() else "coarse"


def _frame(text: str, what: str, path: Path, lineno: int) -> int:
    if not _INT.fullmatch(text):
        raise DataError(f"{what} frame {text!r} is not an integer", path, lineno)
    value = int(text)
    if value < 0:
        raise DataError(f"{what} frame {value} is negative", path, lineno)
    if value == 0:
        raise DataError(f"{what} frame is 0, but frames are 1-based", path, lineno)
    check_frame_limit(value, f"{what} frame", path, lineno)
    return value


def read_coarse_file(path: str | Path) -> tuple[np.ndarray, list[str], list[int]]:
    """One raw coarse file as (segment lengths, labels, line numbers), checked to tile the
    video from frame 1 (rules in the module docstring)."""
    path = Path(path)
    lengths: list[int] = []
    labels: list[str] = []
    lines: list[int] = []
    prev_end, prev_line = 0, 0
    for lineno, raw in enumerate(read_text(path).splitlines(), start=1):
        parts = raw.split()
        if not parts:
            continue
        m = _SEGMENT.fullmatch(parts[0]) if len(parts) == 2 else None
        if m is None:
            raise DataError(f"expected '<start>-<end> <label>', got {raw.strip()!r}", path, lineno)
        start = _frame(m.group(1), "start", path, lineno)
        end = _frame(m.group(2), "end", path, lineno)
        if end < start:
            raise DataError(f"end frame {end} is before start frame {start}", path, lineno)
        if start <= prev_end:
            raise DataError(
                f"segment {start}-{end} overlaps the previous segment, which ends at frame "
                f"{prev_end} (line {prev_line})",
                path,
                lineno,
            )
        if start > prev_end + 1:
            missing = (
                f"frame {prev_end + 1} has"
                if start == prev_end + 2
                else f"frames {prev_end + 1}-{start - 1} have"
            )
            where = (
                f"the previous segment ends at frame {prev_end}, line {prev_line}"
                if prev_end
                else "the first segment must start at frame 1"
            )
            raise DataError(
                f"gap: {missing} no label ({where}; gaps are errors, not background)",
                path,
                lineno,
            )
        lengths.append(end - start + 1)
        labels.append(parts[1])
        lines.append(lineno)
        prev_end, prev_line = end, lineno
    if not lengths:
        raise DataError("annotation file is empty", path)
    return np.asarray(lengths, dtype=np.int64), labels, lines


def _raw_files(root: Path) -> list[Path]:
    # Not filtered by is_file(): a "<video>.txt" that is a folder or a symlink loop is an
    # error when it is read, never a video silently left out.
    skip = {root / "mapping.txt"}
    return sorted(
        p for p in root.rglob("*.txt") if p not in skip and (root / "splits") not in p.parents
    )


def _standard_splits(kept: Sequence[VideoMeta], root: Path) -> tuple[Split, ...]:
    number = {}
    for m in kept:
        n = int(m.participant[1:])
        if not TEST_PARTICIPANTS[0][0] <= n <= TEST_PARTICIPANTS[-1][1]:
            raise DataError(
                f"participant {m.participant} is outside the standard Breakfast splits (P03-P54)",
                m.path,
            )
        number[m.video] = n
    splits = []
    for k, (lo, hi) in enumerate(TEST_PARTICIPANTS, start=1):
        test = tuple(sorted(v for v, n in number.items() if lo <= n <= hi))
        train = tuple(sorted(v for v, n in number.items() if not lo <= n <= hi))
        if not test or not train:
            empty = "test" if not test else "train"
            raise DataError(
                f"split {k} (test participants P{lo:02d}-P{hi:02d}) has no {empty} videos "
                f"among the {len(number)} selected",
                root,
            )
        splits.append(Split(f"split{k}", train, test))
    return tuple(splits)


def read_raw(root: str | Path, cameras: Sequence[str] | None = None) -> Layout:
    """Read raw coarse segmentation files (rules in the module docstring)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError("no such folder", root)
    files = _raw_files(root)
    if not files:
        raise DataError("neither a groundTruth/ folder nor raw coarse <video>.txt files", root)
    first: dict[str, Path] = {}
    metas = []
    for p in files:
        if p.stem in first:
            raise DataError(f"duplicate video id {p.stem!r} (also in {first[p.stem]})", p)
        first[p.stem] = p
        metas.append(parse_video_id(p.stem, VIDEO_ID, p))
    kept = select_views(metas, cameras, root)

    segments = {m.video: read_coarse_file(m.path) for m in kept}
    mapping = root / "mapping.txt"
    if mapping.is_file():
        classes = read_mapping(mapping)
    else:
        found = {label for _, labels, _ in segments.values() for label in labels}
        classes = (BACKGROUND, *sorted(found - {BACKGROUND}))
    index = {c: i for i, c in enumerate(classes)}
    videos = []
    for m in kept:
        lengths, labels, lines = segments[m.video]
        for label, lineno in zip(labels, lines, strict=True):
            if label not in index:
                raise DataError(f"label {label!r} is not in {mapping}", m.path, lineno)
        codes = np.fromiter(map(index.__getitem__, labels), dtype=np.int16, count=len(labels))
        videos.append(
            VideoLabels(
                video=m.video,
                labels=np.repeat(codes, lengths),
                participant=m.participant,
                activity=m.activity,
                view=m.view,
            )
        )
    return Layout(
        root=root,
        classes=classes,
        videos=videos,
        splits=_standard_splits(kept, root),
        inputs=[*(m.path for m in kept), *([mapping] if mapping.is_file() else [])],
        class_source=mapping if mapping.is_file() else None,
    )


def _cameras(cameras: str) -> tuple[str, ...] | None:
    if cameras.strip() == "all":
        return None
    chosen = tuple(c.strip() for c in cameras.split(",") if c.strip())
    if not chosen:
        raise ValueError(f"--cameras: expected 'all' or camera names, got {cameras!r}")
    return chosen


def convert(root: str | Path, cameras: str = "all") -> FrameTable:
    """Convert Breakfast from either input format (see the module docstring).

    ``cameras``: ``"all"`` or a comma-separated list of camera names (``"cam01"``).
    """
    root = Path(root)
    fmt = detect_format(root)
    chosen = _cameras(cameras)
    if fmt == "mstcn":
        layout = read_layout(root, compile_pattern(VIDEO_ID), views=chosen)
    else:
        layout = read_raw(root, chosen)
    return layout.to_table(
        name=NAME,
        fps=FPS,
        background=BACKGROUND,
        source_format=f"breakfast-{fmt}",
        converter=NAME,
        version=VERSION,
    )


def command(
    root: Path = typer.Option(
        ..., "--root", help="groundTruth/ + mapping.txt + splits/, or raw coarse .txt files."
    ),
    out: Path = typer.Option(..., "--out", help="Output Parquet file (written atomically)."),
    cameras: str = typer.Option(
        "all",
        "--cameras",
        callback=checked_option(_cameras),
        help="'all' or comma-separated cameras to keep (exact match), e.g. cam01.",
    ),
) -> None:
    """Convert Breakfast (MS-TCN layout or raw coarse segmentation files)."""
    write_prepared(convert(root, cameras), out)
