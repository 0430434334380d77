"""50 Salads (Stein & McKenna, UbiComp 2013): 25 people each preparing two mixed salads,
filmed by a static top-down RGB camera at 30 fps.

Data: https://cvip.computing.dundee.ac.uk/datasets/foodpreparation/50salads/ (annotations
in ``activityAnnotations/``); the MS-TCN layout (``groundTruth/``, ``mapping.txt``,
``splits/``) from the MS-TCN release (Farha & Gall, CVPR 2019). The real files used by the
tests live in ``../shared/data/50salads`` (see its README).

Commands and the counts they give on the real annotations::

    kitchen-study prepare salads --root ../shared/data/50salads --out 50salads.parquet
    # fine (default, the paper's 52 classes) from groundTruth_fine_derived/:
    # 50 videos, 577,595 frames, 52 classes (background 'background' at index 0),
    # 25 participants, 4 leave-person-out splits (train/test videos 36/14, 38/12, 38/12, 38/12)
    kitchen-study prepare salads --root ../shared/data/50salads --out 50salads_raw.parquet \\
        --source raw            # alignment: groundTruth_fine_derived/ALIGNMENT_REPORT.json
    # the same 50 videos and frames; 99.994 % of frames agree with the derived labels (the
    # 36 others sit on boundaries that fall within ~0.05 frame of a half frame, where the
    # report's rounded fps/offset decide); notes: 4 annotation
    # files without groundTruth (08-*, 12-*) not converted, 169 high-level annotations
    # skipped, 95 fine annotations overlap an earlier-starting one (3,547 frames shared),
    # 1 maps to zero frames, none clipped
    kitchen-study prepare salads --root ../shared/data/50salads --out 50salads_mid.parquet \\
        --level mid --splits ../shared/data/50salads/splits
    # 50 videos, 577,595 frames, 19 classes (no background), 5 MS-TCN splits 40/10

Levels and sources (``--level`` / ``--source``):

* ``fine`` (the paper's 52 classes): index 0 is the background class, canonically named
  ``background`` (frames no fine annotation covers; the derived files spell it ``null``),
  then the 51 fine labels (17 actions x ``_prep``/``_core``/``_post``) in alphabetical order,
  as in the release's ``label_lists/low_level_actions.txt``.

  - ``--source derived`` (default): per-frame labels from ``groundTruth_fine_derived/``
    (one label per line; ``null`` = background). Each file must have exactly as many lines
    as the video's ``groundTruth/`` file, when there is one.
  - ``--source raw``: the release's ``activityAnnotations/NN-M-activityAnnotation.txt``,
    lines ``<start> <end> <label>`` with non-negative integer microsecond timestamps of the
    recording clock, mapped to frames by ``--alignment PATH`` (see below). Rules:
    the high-level labels ``cut_and_mix_ingredients``, ``prepare_dressing`` and
    ``serve_salad`` span many fine actions and are *not* frame labels (skipped, counted);
    any other label outside the 51 fine labels is an error. A segment covers frames
    ``[frame(start), frame(end))``; ``end == start`` is allowed (covers nothing, counted),
    ``end < start`` is an error. Overlapping fine segments: the later-starting one wins on
    the shared frames (ties: file order; see :func:`data_prep.segments.paint_segments`) —
    the rule that reproduces ``groundTruth_fine_derived``; counted. Segment parts outside
    ``[0, frames)`` are clipped (counted, never silent). Uncovered frames are background.
    The number of frames of a video is the length of its ``groundTruth/`` file; without a
    ``groundTruth/`` folder, the length of its timestamp file, or (fitted clock) the end
    frame of its last fine segment. With a ``groundTruth/`` folder the videos converted are
    exactly those it lists: an annotation file without a groundTruth video is not
    converted (listed in the notes), a groundTruth video without an annotation file is an
    error.

* ``mid`` (the MS-TCN 19 classes): ``groundTruth/`` + ``mapping.txt`` (mapping order).
  ``background`` is None: none of the 19 is background (``action_start`` and
  ``action_end`` mark the recording's ends; they are ordinary classes here).

Alignment (``--source raw``; default: ``groundTruth_fine_derived/ALIGNMENT_REPORT.json``,
else a ``timestamps/`` folder under the root):

* a JSON file ``{"NN-M": {"fps": F, "offset_frames": O, ...}, ...}`` (a fitted recording
  clock per video): ``frame(t) = floor(t / 1e6 * F - O + 0.5)`` (nearest frame);
* a folder of per-frame timestamp files ``timestamps-NN-M.txt``: line ``i`` (0-based) is
  frame ``i``, its first whitespace-separated token the frame's integer microsecond
  timestamp (further tokens are ignored), strictly increasing, no blank lines; ``frame(t)``
  is the frame with the nearest timestamp (ties: the earlier frame); before the first or
  after the last frame the clock runs on at the mean frame interval (so such times give
  frames outside the video, clipped and counted).

A video without an alignment entry is an error; so is a fitted-clock video whose last
segment ends beyond :data:`~data_prep.table.MAX_FRAMES_PER_VIDEO` (10^8) frames, a
timestamp of 2^62 microseconds or more, a ``*.txt`` that is a folder or a symlink loop, and
text that is not UTF-8 (naming the file and line).

Participant: from the video id, ``rgb-01-2`` -> ``01``; activity ``salad``; view ``top``.
Splits: by default 4 leave-person-out folds over the sorted participants (75/25, the
paper's protocol; :func:`data_prep.splits.person_folds`, deterministic); ``--splits DIR``
reads MS-TCN ``{train,test}.splitK.bundle`` files instead.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import typer

from .commands import usage_errors, write_prepared
from .errors import DataError
from .layout import Layout
from .readers import read_bundle, read_label_file, read_mapping, read_text, split_bundles
from .segments import paint_segments
from .splits import person_folds
from .table import MAX_FRAMES_PER_VIDEO, FrameTable, Split, VideoLabels

__all__ = [
    "BACKGROUND",
    "FINE_CLASSES",
    "HIGH_LEVEL_LABELS",
    "NAME",
    "VERSION",
    "command",
    "convert",
]

NAME = "salads"
VERSION = "1"
FPS = 30.0

#: The 17 mid-level actions (``label_lists/mid_level_actions.txt``).
MID_ACTIONS = (
    "add_dressing", "add_oil", "add_pepper", "add_salt", "add_vinegar", "cut_cheese",
    "cut_cucumber", "cut_lettuce", "cut_tomato", "mix_dressing", "mix_ingredients",
    "peel_cucumber", "place_cheese_into_bowl", "place_cucumber_into_bowl",
    "place_lettuce_into_bowl", "place_tomato_into_bowl", "serve_salad_onto_plate",
)  # fmt: skip
BACKGROUND = "background"
#: How ``groundTruth_fine_derived`` spells the background class.
DERIVED_BACKGROUND = "null"
#: The paper's 52 fine classes: background, then the 51 fine labels alphabetically.
FINE_CLASSES = (
    BACKGROUND,
    *sorted(f"{a}_{p}" for a in MID_ACTIONS for p in ("prep", "core", "post")),
)
#: Labels of ``activityAnnotations`` that span many fine actions: not frame labels.
HIGH_LEVEL_LABELS = ("cut_and_mix_ingredients", "prepare_dressing", "serve_salad")

_VIDEO = re.compile(r"^rgb-(\d+)-(\d+)$")
_ANNOTATION = re.compile(r"^(\d+-\d+)-activityAnnotation\.txt$")
_INT = re.compile(r"^[+-]?\d+$")
#: Timestamps must fit int64 arithmetic (2^62 us is ~146,000 years: any real clock fits).
_MAX_TIMESTAMP = 1 << 62


# -- raw annotations ---------------------------------------------------------------------


@dataclass(frozen=True)
class Annotation:
    """One line of an ``activityAnnotation`` file (timestamps in microseconds)."""

    start: int
    end: int
    label: str
    line: int


def _timestamp(token: str, what: str, path: Path, line: int) -> int:
    if not _INT.match(token):
        raise DataError(f"{what} timestamp {token!r} is not an integer", path, line)
    value = int(token)
    if value < 0:
        raise DataError(f"{what} timestamp {value} is negative", path, line)
    if value >= _MAX_TIMESTAMP:
        raise DataError(f"{what} timestamp {value} is beyond 2^62 microseconds", path, line)
    return value


def read_activity_annotations(path: str | Path) -> list[Annotation]:
    """All annotations of one raw file, validated (labels: fine or high-level)."""
    path = Path(path)
    known = set(FINE_CLASSES[1:]) | set(HIGH_LEVEL_LABELS)
    out: list[Annotation] = []
    for lineno, raw in enumerate(read_text(path).splitlines(), start=1):
        parts = raw.split()
        if not parts:
            continue
        if len(parts) != 3:
            raise DataError(f"expected '<start> <end> <label>', got {raw.strip()!r}", path, lineno)
        start = _timestamp(parts[0], "start", path, lineno)
        end = _timestamp(parts[1], "end", path, lineno)
        if end < start:
            raise DataError(f"end {end} is before start {start}", path, lineno)
        if parts[2] not in known:
            raise DataError(
                f"label {parts[2]!r} is not a 50 Salads fine or high-level label", path, lineno
            )
        out.append(Annotation(start, end, parts[2], lineno))
    if not out:
        raise DataError("annotation file is empty", path)
    return out


# -- alignment: recording-clock timestamps -> frame indices ------------------------------

FrameMap = Callable[[np.ndarray], np.ndarray]


def _fitted_clock(fps: float, offset: float) -> FrameMap:
    def frames(t: np.ndarray) -> np.ndarray:
        return np.floor(np.asarray(t, dtype=np.float64) / 1e6 * fps - offset + 0.5).astype(np.int64)

    return frames


def _timestamp_table(ts: np.ndarray) -> FrameMap:
    # Outside the recorded frames the clock runs on at the mean frame interval, so a time
    # before the first (after the last) frame maps to a negative (>= len) frame and is
    # clipped and counted like the fitted clock's, instead of sticking to the end frames.
    step = (ts[-1] - ts[0]) / (len(ts) - 1) if len(ts) > 1 else 1.0

    def frames(t: np.ndarray) -> np.ndarray:
        t = np.asarray(t, dtype=np.int64)
        right = np.searchsorted(ts, t, side="left").clip(0, len(ts) - 1)
        left = (right - 1).clip(0, None)
        # nearest timestamp; on a tie the earlier frame (<=)
        inside = np.where(np.abs(t - ts[left]) <= np.abs(ts[right] - t), left, right)
        before = np.floor((t - ts[0]) / step + 0.5).astype(np.int64)
        after = len(ts) - 1 + np.floor((t - ts[-1]) / step + 0.5).astype(np.int64)
        return np.where(t < ts[0], before, np.where(t > ts[-1], after, inside))

    return frames


@dataclass
class Alignment:
    """Per-video timestamp -> frame maps from a fitted-clock JSON or a timestamp folder."""

    path: Path
    fitted: dict[str, tuple[float, float]] | None = None  # None: a timestamps folder
    _read: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def files(self, keys: list[str]) -> list[Path]:
        if self.fitted is not None:
            return [self.path]
        return [self._timestamp_file(k) for k in keys]

    def _timestamp_file(self, key: str) -> Path:
        return self.path / f"timestamps-{key}.txt"

    def frame_map(self, key: str) -> FrameMap:
        """The map for video ``NN-M``; DataError if the alignment has none."""
        if self.fitted is not None:
            if key not in self.fitted:
                raise DataError(f"no alignment for video {key!r}", self.path)
            return _fitted_clock(*self.fitted[key])
        ts = self.timestamps(key)
        return _timestamp_table(ts)

    def timestamps(self, key: str) -> np.ndarray:
        """Per-frame timestamps of video ``NN-M`` (timestamps folder only)."""
        if key in self._read:
            return self._read[key]
        path = self._timestamp_file(key)
        if not path.is_file():
            raise DataError(f"no alignment for video {key!r} (no {path.name})", self.path)
        values: list[int] = []
        for lineno, raw in enumerate(read_text(path).rstrip().splitlines(), start=1):
            parts = raw.split()
            if not parts:  # line i is frame i: a blank line would shift every later frame
                raise DataError("blank line: expected one timestamp per frame", path, lineno)
            t = _timestamp(parts[0], "frame", path, lineno)
            if values and t <= values[-1]:
                raise DataError(f"timestamp {t} does not increase", path, lineno)
            values.append(t)
        if not values:
            raise DataError("timestamp file is empty", path)
        self._read[key] = np.array(values, dtype=np.int64)
        return self._read[key]


def load_alignment(path: str | Path) -> Alignment:
    """A fitted-clock JSON file or a folder of ``timestamps-NN-M.txt`` files."""
    path = Path(path)
    if path.is_dir():
        return Alignment(path)
    if not path.is_file():
        raise DataError("alignment not found (a JSON file or a timestamps folder)", path)
    try:
        data = json.loads(read_text(path))
    except json.JSONDecodeError as e:
        raise DataError(f"not valid JSON ({e.msg})", path, e.lineno) from None
    if not isinstance(data, dict):
        raise DataError('expected {"NN-M": {"fps": ..., "offset_frames": ...}, ...}', path)
    fitted: dict[str, tuple[float, float]] = {}
    for key, fit in data.items():
        try:
            fps, offset = float(fit["fps"]), float(fit["offset_frames"])
        except (TypeError, KeyError, ValueError):
            raise DataError(
                f"video {key!r}: expected numbers 'fps' and 'offset_frames'", path
            ) from None
        if not (math.isfinite(fps) and math.isfinite(offset) and fps > 0):
            raise DataError(f"video {key!r}: bad fit fps={fps}, offset_frames={offset}", path)
        fitted[key] = (fps, offset)
    return Alignment(path, fitted=fitted)


# -- conversion --------------------------------------------------------------------------


def _participant(video: str, path: Path) -> str:
    m = _VIDEO.match(video)
    if not m:
        raise DataError(f"video id {video!r} does not look like 'rgb-NN-M'", path)
    return m.group(1)


def _video_files(folder: Path, what: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise DataError(f"no {what} folder", folder)
    files = {p.stem: p for p in sorted(folder.glob("*.txt"))}
    if not files:
        raise DataError(f"no annotation files (*.txt) in {what}", folder)
    return files


def _frame_count(path: Path) -> int:
    n = len(read_text(path).split())
    if n == 0:
        raise DataError("annotation file is empty", path)
    return n


def _read_fine_derived(root: Path) -> tuple[dict[str, np.ndarray], list[Path], list[str]]:
    files = _video_files(root / "groundTruth_fine_derived", "groundTruth_fine_derived/")
    index = {name: i for i, name in enumerate(FINE_CLASSES)}
    del index[BACKGROUND]
    index[DERIVED_BACKGROUND] = 0
    gt_dir = root / "groundTruth"
    labels: dict[str, np.ndarray] = {}
    used = list(files.values())
    for video, path in files.items():
        labels[video] = read_label_file(path, index, vocabulary="the 50 Salads fine labels")
        gt = gt_dir / path.name
        if gt.exists() or gt.is_symlink():  # a folder or a loop there is an error
            used.append(gt)
            n = _frame_count(gt)
            if n != len(labels[video]):
                raise DataError(
                    f"{len(labels[video])} frames, but groundTruth/{path.name} has {n}", path
                )
    return labels, used, []


def _read_mid(root: Path) -> tuple[tuple[str, ...], dict[str, np.ndarray], list[Path]]:
    mapping = root / "mapping.txt"
    classes = read_mapping(mapping)
    index = {c: i for i, c in enumerate(classes)}
    files = _video_files(root / "groundTruth", "groundTruth/")
    labels = {v: read_label_file(p, index) for v, p in files.items()}
    return classes, labels, [mapping, *files.values()]


def _default_alignment(root: Path) -> Path:
    report = root / "groundTruth_fine_derived" / "ALIGNMENT_REPORT.json"
    for candidate in (report, root / "timestamps"):
        if candidate.exists():
            return candidate
    raise DataError(
        "--source raw needs --alignment (a fitted-clock JSON or a timestamps folder); "
        "found neither groundTruth_fine_derived/ALIGNMENT_REPORT.json nor timestamps/",
        root,
    )


def _read_fine_raw(
    root: Path, alignment_path: Path | None
) -> tuple[dict[str, np.ndarray], list[Path], list[str]]:
    ann_dir = root / "activityAnnotations"
    if not ann_dir.is_dir():
        raise DataError("no activityAnnotations/ folder", ann_dir)
    ann_files: dict[str, Path] = {}
    for p in sorted(ann_dir.glob("*-activityAnnotation.txt")):
        m = _ANNOTATION.match(p.name)
        if not m:
            raise DataError("expected a name like 'NN-M-activityAnnotation.txt'", p)
        ann_files[m.group(1)] = p
    if not ann_files:
        raise DataError("no *-activityAnnotation.txt files", ann_dir)
    alignment = load_alignment(alignment_path or _default_alignment(root))

    gt_dir = root / "groundTruth"
    notes: list[str] = []
    lengths: dict[str, int | None] = {}
    used: list[Path] = []
    if gt_dir.is_dir():
        gt = _video_files(gt_dir, "groundTruth/")
        keys = []
        for video, path in gt.items():
            key = video.removeprefix("rgb-")
            if key not in ann_files:
                raise DataError(
                    f"video {video!r} has no activityAnnotations/{key}-activityAnnotation.txt",
                    path,
                )
            keys.append(key)
            lengths[key] = _frame_count(path)
            used.append(path)
        skipped = sorted(set(ann_files) - set(keys))
        if skipped:
            notes.append(
                f"{len(skipped)} annotation file(s) without a groundTruth video not converted: "
                + ", ".join(skipped)
            )
    else:
        keys = list(ann_files)
        lengths = dict.fromkeys(keys)

    index = {name: i for i, name in enumerate(FINE_CLASSES)}
    high = set(HIGH_LEVEL_LABELS)
    labels: dict[str, np.ndarray] = {}
    n_high = n_empty = n_overlap = n_contested = n_clipped = n_clipped_frames = 0
    for key in keys:
        path = ann_files[key]
        used.append(path)
        every = read_activity_annotations(path)
        anns = [a for a in every if a.label not in high]
        n_high += len(every) - len(anns)
        to_frame = alignment.frame_map(key)
        starts = to_frame(np.array([a.start for a in anns], dtype=np.int64))
        ends = to_frame(np.array([a.end for a in anns], dtype=np.int64))
        n = lengths[key]
        if n is None:
            if alignment.fitted is None:
                n = len(alignment.timestamps(key))
            else:
                n = int(ends.max()) if anns else 0
                if n <= 0:
                    raise DataError("no fine annotation ends after frame 0", path)
                if n > MAX_FRAMES_PER_VIDEO:
                    raise DataError(
                        f"ends at frame {n:,}, beyond the limit of {MAX_FRAMES_PER_VIDEO:,} "
                        "frames per video",
                        path,
                        anns[int(ends.argmax())].line,
                    )
        lo, hi = starts.clip(0, n), ends.clip(0, n)
        cut = (hi - lo) < (ends - starts)
        n_clipped += int(cut.sum())
        n_clipped_frames += int(((ends - starts) - (hi - lo))[cut].sum())
        n_empty += int(np.sum(ends == starts))
        painted = paint_segments(n, lo, hi, [index[a.label] for a in anns], fill=0)
        n_overlap += painted.overlapping
        n_contested += painted.contested_frames
        labels[f"rgb-{key}"] = painted.labels
    used.extend(alignment.files(keys))
    notes.append(
        f"{n_high} high-level annotation(s) ({', '.join(HIGH_LEVEL_LABELS)}) are not frame labels"
    )
    notes.append(
        f"{n_overlap} fine annotation(s) overlap an earlier-starting one "
        f"({n_contested} frame(s) shared; the later-starting one labels them)"
    )
    if n_empty:
        notes.append(f"{n_empty} fine annotation(s) map to zero frames")
    if n_clipped:
        notes.append(
            f"{n_clipped} fine annotation(s) reach outside the video; {n_clipped_frames} "
            "frame(s) clipped"
        )
    return labels, used, notes


def convert(
    root: str | Path,
    level: Literal["fine", "mid"] = "fine",
    source: Literal["derived", "raw"] = "derived",
    alignment: str | Path | None = None,
    splits: str | Path | None = None,
) -> FrameTable:
    """Convert 50 Salads under ``root`` into a validated frame table (module docstring);
    what the stated rules did is in ``table.card.notes``."""
    root = Path(root)
    if not root.is_dir():
        raise DataError("50 Salads root folder not found", root)
    if level not in ("fine", "mid"):
        raise ValueError(f"level must be 'fine' or 'mid', not {level!r}")
    if source not in ("derived", "raw"):
        raise ValueError(f"source must be 'derived' or 'raw', not {source!r}")
    if level == "mid" and source == "raw":
        raise ValueError("--source raw gives fine labels only; use --level fine")
    if alignment is not None and source != "raw":
        raise ValueError("--alignment applies to --source raw only")

    if level == "mid":
        classes, labels, used = _read_mid(root)
        background, fmt, notes = None, "mstcn-groundTruth(50salads mid)", []
    else:
        if source == "derived":
            labels, used, notes = _read_fine_derived(root)
        else:
            align = None if alignment is None else Path(alignment)
            labels, used, notes = _read_fine_raw(root, align)
        classes, background = FINE_CLASSES, BACKGROUND
        fmt = f"50salads-fine-{source}"

    videos = sorted(labels)
    where = root / ("groundTruth" if level == "mid" else "groundTruth_fine_derived")
    participants = [_participant(v, where) for v in videos]
    if splits is None:
        try:
            split_list = person_folds(videos, participants, folds=4)
        except ValueError as e:  # fewer than 4 participants: bad input, not a usage error
            raise DataError(str(e), where) from None
    else:
        bundles = split_bundles(splits)
        if not bundles:
            raise DataError("no {train,test}.splitK.bundle files", splits)
        split_list = tuple(
            Split(f"split{k}", read_bundle(p["train"], labels), read_bundle(p["test"], labels))
            for k, p in bundles.items()
        )
        used += [p for parts in bundles.values() for p in parts.values()]
    layout = Layout(
        root=root,
        classes=tuple(classes),
        videos=[
            VideoLabels(v, labels[v], participant=p, activity="salad", view="top")
            for v, p in zip(videos, participants, strict=True)
        ],
        splits=split_list,
        inputs=used,
        class_source=root / "mapping.txt" if level == "mid" else None,
        notes=notes,
    )
    return layout.to_table(
        name="50salads" if level == "fine" else "50salads_mid",
        fps=FPS,
        background=background,
        source_format=fmt,
        converter=NAME,
        version=VERSION,
    )


def command(
    root: Path = typer.Option(..., "--root", help="50 Salads folder (groundTruth/, ...)."),
    out: Path = typer.Option(..., "--out", help="Output Parquet file."),
    level: Literal["fine", "mid"] = typer.Option(
        "fine", "--level", help="fine: the paper's 52 classes; mid: the MS-TCN 19 classes."
    ),
    source: Literal["derived", "raw"] = typer.Option(
        "derived",
        "--source",
        help="fine labels from groundTruth_fine_derived/ or raw activityAnnotations/.",
    ),
    alignment: Path | None = typer.Option(
        None, "--alignment", help="raw: fitted-clock JSON or folder of timestamps-NN-M.txt."
    ),
    splits: Path | None = typer.Option(
        None, "--splits", help="Read MS-TCN split bundles from this folder (default: 4 folds)."
    ),
) -> None:
    """50 Salads (fine 52 or mid 19 classes) from derived per-frame or raw annotations."""
    with usage_errors():
        table = convert(root, level, source, alignment, splits)
    write_prepared(table, out)
