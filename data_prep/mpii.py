"""MPII Cooking Activities (Rohrbach et al., CVPR 2012) and MPII Cooking 2 (Rohrbach et
al., IJCV 2016): people cooking dishes in a kitchen, filmed at 29.4 fps.

Data: https://www.mpi-inf.mpg.de/departments/computer-vision-and-machine-learning/research/
human-activity-recognition/mpii-cooking-activities-dataset (MPII Cooking 1:
``detectionGroundtruth-1-0.csv``; MPII Cooking 2 ships its temporal annotation in the same
CSV schema, 88 classes, 273 videos). The real MPII Cooking 1 file used by the tests is in
``../shared/data/mpii_cooking`` (see its README).

Commands and the counts they give on the real annotations::

    kitchen-study prepare mpii --csv ../shared/data/mpii_cooking/detectionGroundtruth-1-0.csv \\
        --out mpii_cooking.parquet
    # 44 videos, 881,655 frames, 65 classes (background 'Background activity' at index 0),
    # 12 participants, 4 leave-person-out splits (train/test videos 31/13, 31/13, 34/10,
    # 36/8); notes: 525 rows overlap an earlier-starting row (524 of them the row just
    # before; 649 frames shared), 18,299 frames covered by no row (1426 gaps) are background
    kitchen-study prepare mpii --csv PATH/TO/MPII_COOKING_2.csv --out mpii2.parquet \\
        --name mpii_cooking2     # MPII Cooking 2 (not in ../shared/data): 88 classes

The CSV: no header, one row per annotated segment, columns ``subject, file_name,
start_frame, end_frame, activity_category_id, activity_category_name``; frames 1-based and
inclusive. Rules:

* Every row has exactly 6 columns; subject, frames and category id are integers (surrounding
  spaces allowed); frames are >= 1, at most :data:`~data_prep.table.MAX_FRAMES_PER_VIDEO`
  (10^8: a video's frames are allocated from its largest end frame), and ``end_frame >=
  start_frame``; the file is UTF-8 text; anything else is a DataError naming the file and
  line. A CSV without rows is an error.
* Class names are stripped of surrounding whitespace (`` Background activity`` ->
  ``Background activity``) and otherwise kept as written (e.g. ``take \\& put in fridge``).
  One category id always has one name and one name one id, else DataError (file:line).
* Classes: the categories that occur in the CSV, ordered by category id, except that the
  background class comes first (index 0). The background class is the category whose name
  is ``--background`` (default ``Background activity``, compared case-insensitively); if no
  row uses it, a class of that name is added at index 0 for the uncovered frames (noted).
* A video's length is the largest end frame of its rows (frames after it are unknown).
  Frames no row covers (gaps, and frames before the first row) are background.
* Overlapping rows: rows are painted in order of start frame (ties: file order), each over
  the frames it covers, so the later-starting row wins on shared frames and a row nested in
  a longer one labels only its own frames (:func:`data_prep.segments.paint_segments`).
  Overlaps and gaps are counted in the notes the command prints.
* Participant: ``s`` + the subject zero-padded to two digits (``8`` -> ``s08``), which is
  the prefix of the video id; a video id ``sNN-...`` whose ``NN`` differs from its subject,
  or a video listed under two subjects, is an error. Activity and view come from ids of
  the form ``s08-d02-cam-002``: activity = the dish/recording field ``d02``, view =
  ``cam-002``; other ids leave both unknown (None).
* Splits: 4 leave-person-out folds over the sorted participants (75/25;
  :func:`data_prep.splits.person_folds`, deterministic).
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import typer

from .commands import usage_errors, write_prepared
from .errors import DataError
from .layout import Layout
from .readers import check_frame_limit, read_text
from .segments import paint_segments
from .splits import person_folds
from .table import FrameTable, VideoLabels

__all__ = ["BACKGROUND", "NAME", "VERSION", "Row", "command", "convert", "read_rows"]

NAME = "mpii"
VERSION = "1"
FPS = 29.4
BACKGROUND = "Background activity"

_COLUMNS = ("subject", "file_name", "start_frame", "end_frame", "activity_category_id",
            "activity_category_name")  # fmt: skip
_VIDEO = re.compile(r"^s(\d+)-(d\d+)-(cam-\d+)$")
_SUBJECT_PREFIX = re.compile(r"^s(\d+)-")

K = TypeVar("K")
V = TypeVar("V")


@dataclass(frozen=True)
class Row:
    """One CSV row, validated; frames 1-based inclusive as in the file."""

    subject: int
    video: str
    start: int
    end: int
    category: int
    name: str
    line: int


def _int(value: str, column: str, path: Path, line: int) -> int:
    v = value.strip()
    if not re.fullmatch(r"[+-]?\d+", v):
        raise DataError(f"{column} {value!r} is not an integer", path, line)
    return int(v)


def read_rows(path: str | Path) -> list[Row]:
    """All rows of an MPII Cooking (1 or 2) annotation CSV, validated one by one."""
    path = Path(path)
    if not path.exists():
        raise DataError("annotation CSV not found", path)
    rows: list[Row] = []
    with io.StringIO(read_text(path), newline="") as f:
        reader = csv.reader(f)
        for fields in reader:
            line = reader.line_num
            if not fields or (len(fields) == 1 and not fields[0].strip()):
                continue  # blank line
            if len(fields) != len(_COLUMNS):
                raise DataError(
                    f"expected {len(_COLUMNS)} columns ({', '.join(_COLUMNS)}), got {len(fields)}",
                    path,
                    line,
                )
            subject = _int(fields[0], "subject", path, line)
            start = _int(fields[2], "start_frame", path, line)
            end = _int(fields[3], "end_frame", path, line)
            category = _int(fields[4], "activity_category_id", path, line)
            video, name = fields[1].strip(), fields[5].strip()
            if subject < 0:
                raise DataError(f"subject {subject} is negative", path, line)
            if start < 1 or end < 1:
                raise DataError(f"frames are 1-based: got {start}-{end}", path, line)
            if end < start:
                raise DataError(f"end_frame {end} is before start_frame {start}", path, line)
            check_frame_limit(end, "end_frame", path, line)
            if not video:
                raise DataError("empty file_name", path, line)
            if not name:
                raise DataError("empty activity_category_name", path, line)
            rows.append(Row(subject, video, start, end, category, name, line))
    if not rows:
        raise DataError("annotation CSV has no rows", path)
    return rows


def _same_as_first(
    first: dict[K, tuple[V, int]], key: K, value: V, line: int, path: Path, message: str
) -> None:
    """Record that ``key`` goes with ``value`` on ``line``, or, if it went with another value
    on an earlier line, a :class:`DataError` on this line: ``message`` formatted with
    ``key``, ``value``, ``first`` (the earlier value) and ``first_line``."""
    seen, first_line = first.setdefault(key, (value, line))
    if seen != value:
        raise DataError(
            message.format(key=key, value=value, first=seen, first_line=first_line), path, line
        )


def _classes(
    rows: list[Row], path: Path, background: str
) -> tuple[tuple[str, ...], dict[int, int], bool]:
    """(class names, category id -> class index, background added?)."""
    name_of: dict[int, tuple[str, int]] = {}
    id_of: dict[str, tuple[int, int]] = {}
    for r in rows:
        _same_as_first(name_of, r.category, r.name, r.line, path,
                       "category id {key} is named {value!r} here but {first!r} on line "
                       "{first_line}")
        _same_as_first(id_of, r.name, r.category, r.line, path,
                       "category {key!r} has id {value} here but {first} on line {first_line}")
    ids = sorted(name_of)
    bg = [c for c in ids if name_of[c][0].casefold() == background.casefold()]
    added = not bg
    ordered = bg + [c for c in ids if c not in bg]
    names = ([background] if added else []) + [name_of[c][0] for c in ordered]
    first = 1 if added else 0
    return tuple(names), {c: i + first for i, c in enumerate(ordered)}, added


def _participant(subject: int) -> str:
    return f"s{subject:02d}"


def convert(
    csv_path: str | Path,
    fps: float = FPS,
    name: str = "mpii_cooking",
    background: str = BACKGROUND,
) -> FrameTable:
    """Convert an MPII Cooking (1 or 2) annotation CSV into a frame table (module
    docstring); what the stated rules did (overlaps, gaps) is in ``table.card.notes``."""
    path = Path(csv_path)
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    rows = read_rows(path)
    classes, index, added = _classes(rows, path, background)

    by_video: dict[str, list[Row]] = {}
    subject_of: dict[str, tuple[int, int]] = {}
    for r in rows:
        _same_as_first(subject_of, r.video, r.subject, r.line, path,
                       "video {key!r} has subject {value} here but {first} on line {first_line}")
        m = _SUBJECT_PREFIX.match(r.video)
        if m and int(m.group(1)) != r.subject:
            raise DataError(
                f"video {r.video!r} does not belong to subject {r.subject}", path, r.line
            )
        by_video.setdefault(r.video, []).append(r)

    videos: list[VideoLabels] = []
    n_overlap = n_shared = n_gap_frames = 0
    for video, vrows in by_video.items():
        length = max(r.end for r in vrows)
        painted = paint_segments(
            length,
            [r.start - 1 for r in vrows],  # 1-based inclusive -> 0-based half-open
            [r.end for r in vrows],
            [index[r.category] for r in vrows],
            fill=0,
        )
        n_overlap += painted.overlapping
        n_shared += painted.contested_frames
        n_gap_frames += painted.uncovered_frames
        m = _VIDEO.match(video)
        videos.append(
            VideoLabels(
                video,
                painted.labels,
                participant=_participant(vrows[0].subject),
                activity=m.group(2) if m else None,
                view=m.group(3) if m else None,
            )
        )
    names = sorted(by_video)
    people = [_participant(subject_of[v][0]) for v in names]
    try:
        splits = person_folds(names, people, folds=4)
    except ValueError as e:  # fewer than 4 subjects: bad input, not a usage error
        raise DataError(str(e), path) from None
    notes = [
        f"{n_overlap} row(s) overlap an earlier-starting row ({n_shared} frame(s) shared; "
        "the later-starting row labels them)",
        f"{n_gap_frames} frame(s) covered by no row are background",
    ]
    if added:
        notes.insert(0, f"no row uses {background!r}: added it as class 0 for uncovered frames")
    layout = Layout(
        root=path.parent,
        classes=classes,
        videos=videos,
        splits=splits,
        inputs=[path],
        class_source=path,
        notes=notes,
    )
    return layout.to_table(
        name=name,
        fps=float(fps),
        background=classes[0],
        source_format="mpii-cooking-csv",
        converter=NAME,
        version=VERSION,
    )


def command(
    csv_path: Path = typer.Option(..., "--csv", help="The annotation CSV (no header)."),
    out: Path = typer.Option(..., "--out", help="Output Parquet file."),
    fps: float = typer.Option(FPS, "--fps", help="Frame rate of the videos."),
    name: str = typer.Option("mpii_cooking", "--name", help="Dataset name (e.g. mpii_cooking2)."),
    background: str = typer.Option(
        BACKGROUND, "--background", help="Name of the background category."
    ),
) -> None:
    """MPII Cooking 1 or 2 from its annotation CSV (gaps are background)."""
    with usage_errors():
        table = convert(csv_path, fps, name, background)
    write_prepared(table, out)
