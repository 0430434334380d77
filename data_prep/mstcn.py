"""Any dataset in the MS-TCN layout: `groundTruth/`, `mapping.txt`, `splits/`, optional `features/`.

Where the data comes from: the layout of Farha & Gall's MS-TCN (CVPR 2019) data release,
which most action-segmentation code reads (Breakfast, 50 Salads, GTEA, ...)::

    ROOT/mapping.txt                          "<index> <label>" per line, 0..C-1 in order
    ROOT/groundTruth/<video>.txt              one label name per line, one line per frame
    ROOT/splits/{train,test}.split<K>.bundle  one "<video>.txt" per line
    ROOT/features/<video>.npy                 optional, float array of shape (D, T)

The command::

    kitchen-study prepare mstcn --root ../shared/data/50salads --out 50salads_mid.parquet \\
        --fps 30 --participant-pattern 'rgb-(?P<participant>\\d+)-'

Expected counts: on ``../shared/data/50salads`` 50 videos, 577,595 frames, 19 classes,
25 participants, 5 splits of 40 train / 10 test videos; on ``../shared/data/breakfast``
1712 videos, 3,590,899 frames, 48 classes, 52 participants, 4 splits (but use
``prepare breakfast`` there: it knows Breakfast's fps, background and cameras).

Rules (stated, not guessed):

* **Participant** (and, optionally, activity and view) come from the video id through a
  regular expression with a named group ``participant`` (optional groups ``activity`` and
  ``view``), applied with :func:`re.search` (anchor it with ``^``/``$`` to match the whole
  id). The default, ``(?P<participant>[A-Za-z]*\\d+)``, takes the first run of letters
  followed by digits: ``P03`` in ``P03_cam01_P03_cereals``, ``01`` in ``rgb-01-1``, ``S1``
  in ``S1_Cheese_C1``. A video id the pattern does not match is an error naming its file.
* **Splits**: every ``train/test.split<K>.bundle`` pair in ``splits/`` becomes split
  ``split<K>``; ``splits/`` must hold at least one pair. A bundle naming a video without a
  groundTruth file, naming a video twice, a video in both train and test, or a participant
  in both train and test (the splits must be leave-person-out) is an error naming the
  bundle file and line.
* **Features**: if ``features/`` exists, every video needs ``features/<video>.npy`` of
  shape (D, T) with the same D for all videos and T equal to its number of groundTruth
  lines (a length mismatch is an error naming the ``.npy`` file); they become the
  ``features`` column (float32, one D-vector per frame).
* **Background**: none unless ``--background LABEL`` names one (it must be a class).
* **Name** defaults to the root folder's name; **fps** to 30.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import typer

from .commands import write_prepared
from .errors import DataError
from .layout import read_bundle, read_label_file, read_mapping, split_bundles
from .table import (
    DatasetCard,
    FrameTable,
    Split,
    VideoLabels,
    hash_inputs,
)

__all__ = [
    "DEFAULT_PARTICIPANT_PATTERN",
    "NAME",
    "VERSION",
    "Layout",
    "VideoMeta",
    "bundle_splits",
    "command",
    "compile_pattern",
    "convert",
    "parse_video_id",
    "read_layout",
    "select_views",
]

NAME = "mstcn"
VERSION = "1"
DEFAULT_PARTICIPANT_PATTERN = r"(?P<participant>[A-Za-z]*\d+)"


# -- video ids --------------------------------------------------------------------------


@dataclass(frozen=True)
class VideoMeta:
    """What a video id says about a video, and the file it came from."""

    video: str
    path: Path
    participant: str
    activity: str | None = None
    view: str | None = None


def compile_pattern(pattern: str | re.Pattern[str]) -> re.Pattern[str]:
    """Compile a video-id pattern; ``ValueError`` unless it is valid and has a named group
    ``participant`` (groups ``activity`` and ``view`` are optional)."""
    try:
        rx = pattern if isinstance(pattern, re.Pattern) else re.compile(pattern)
    except re.error as e:
        raise ValueError(f"not a regular expression ({e}): {pattern!r}") from None
    if "participant" not in rx.groupindex:
        raise ValueError(
            f"the pattern needs a named group 'participant', e.g. "
            f"{DEFAULT_PARTICIPANT_PATTERN!r}; got {rx.pattern!r}"
        )
    return rx


def parse_video_id(video: str, pattern: re.Pattern[str], path: str | Path) -> VideoMeta:
    """Participant / activity / view of ``video`` by ``pattern`` (see :func:`compile_pattern`);
    a :class:`DataError` naming ``path`` if the id does not match or the participant is empty."""
    m = pattern.search(video)
    if m is None or not m.group("participant"):
        raise DataError(
            f"video id {video!r} does not match the participant pattern {pattern.pattern!r}",
            path,
        )
    groups = m.groupdict()
    return VideoMeta(
        video=video,
        path=Path(path),
        participant=groups["participant"],
        activity=groups.get("activity") or None,
        view=groups.get("view") or None,
    )


# -- the layout -------------------------------------------------------------------------


@dataclass
class Layout:
    """A dataset read from its source files, before the dataset card is filled in.

    Converters of other formats (e.g. Breakfast's raw coarse files) build one too, so
    all of them share :meth:`to_table`.
    """

    root: Path
    classes: tuple[str, ...]
    videos: list[VideoLabels]
    splits: tuple[Split, ...]
    #: every file the table depends on (hashed into the card's ``input_hash``)
    inputs: list[Path] = field(default_factory=list)
    #: the card's ``features`` entry when the videos carry features
    features: dict[str, Any] | None = None
    #: the file that defines the class list (for error messages), if any
    class_source: Path | None = None

    def to_table(
        self,
        *,
        name: str,
        fps: float,
        background: str | None,
        source_format: str,
        converter_version: str,
    ) -> FrameTable:
        """Fill in the dataset card and build the validated :class:`FrameTable`."""
        if not fps > 0:
            raise ValueError(f"fps must be positive, got {fps}")
        if background is not None and background not in self.classes:
            raise DataError(
                f"background class {background!r} is not one of the {len(self.classes)} "
                f"classes ({', '.join(self.classes[:5])}, ...)",
                self.class_source or self.root,
            )
        card = DatasetCard(
            name=name,
            fps=float(fps),
            classes=self.classes,
            background=background,
            source_format=source_format,
            converter_version=converter_version,
            splits=self.splits,
            input_hash=hash_inputs(self.inputs, self.root),
            features=self.features,
        )
        return FrameTable.from_videos(card, self.videos, source=self.root)


def read_layout(
    root: str | Path,
    pattern: str | re.Pattern[str] = DEFAULT_PARTICIPANT_PATTERN,
    views: Collection[str] | None = None,
) -> Layout:
    """Read a dataset in the MS-TCN layout (rules in the module docstring).

    ``views``: keep only videos whose ``view`` (from the pattern's ``view`` group) is one of
    these, compared exactly; splits are then restricted to the kept videos. Files of the
    other videos are not read (their ids must still match the pattern, and bundles may name
    them).
    """
    root = Path(root)
    rx = compile_pattern(pattern)
    if not root.is_dir():
        raise DataError("no such folder", root)
    mapping = root / "mapping.txt"
    classes = read_mapping(mapping)
    gt_dir = root / "groundTruth"
    if not gt_dir.is_dir():
        raise DataError("no groundTruth/ folder (not the MS-TCN layout)", root)
    files = sorted(gt_dir.glob("*.txt"))
    if not files:
        raise DataError("no <video>.txt files", gt_dir)
    metas = {p.stem: parse_video_id(p.stem, rx, p) for p in files}
    kept = select_views(list(metas.values()), views, root)

    class_index = {c: i for i, c in enumerate(classes)}
    labels = {m.video: read_label_file(m.path, class_index) for m in kept}
    features, feature_files, description = _read_features(root / "features", kept, labels)
    videos = [
        VideoLabels(
            video=m.video,
            labels=labels[m.video],
            participant=m.participant,
            activity=m.activity,
            view=m.view,
            features=features.get(m.video),
        )
        for m in kept
    ]
    splits, bundle_files = bundle_splits(root / "splits", metas, {m.video for m in kept})
    return Layout(
        root=root,
        classes=classes,
        videos=videos,
        splits=splits,
        inputs=[mapping, *(m.path for m in kept), *bundle_files, *feature_files],
        features=description,
        class_source=mapping,
    )


def select_views(
    metas: Sequence[VideoMeta], views: Collection[str] | None, where: Path
) -> list[VideoMeta]:
    """The videos whose view is exactly one of ``views`` (all when ``views`` is None); a
    :class:`DataError` naming ``where`` if a requested view has no videos (a typo would
    otherwise silently shrink the dataset)."""
    if views is None:
        return list(metas)
    wanted = set(views)
    present = {m.view for m in metas if m.view is not None}
    absent = sorted(wanted - present)
    if absent:
        raise DataError(
            f"no videos from view(s) {', '.join(absent)}; "
            f"views present: {', '.join(sorted(present)) or 'none'}",
            where,
        )
    return [m for m in metas if m.view in wanted]


def _read_features(
    feat_dir: Path, kept: Sequence[VideoMeta], labels: dict[str, np.ndarray]
) -> tuple[dict[str, np.ndarray], list[Path], dict[str, Any] | None]:
    """``features/<video>.npy`` (D, T) for every kept video, as (T, D) views."""
    if not feat_dir.is_dir():
        return {}, [], None
    out: dict[str, np.ndarray] = {}
    files: list[Path] = []
    dim: int | None = None
    for m in kept:
        p = feat_dir / f"{m.video}.npy"
        if not p.is_file():
            raise DataError(f"features/ exists but video {m.video!r} has no features file", p)
        try:
            arr = np.load(p, allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise DataError(f"not a .npy array ({e})", p) from None
        if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.number):
            raise DataError(
                f"expected a numeric array of shape (D, T), got {arr.dtype} {arr.shape}", p
            )
        n = len(labels[m.video])
        if arr.shape[1] != n:
            raise DataError(
                f"features have {arr.shape[1]} frames (shape D x T = {arr.shape}) but "
                f"groundTruth/{m.video}.txt has {n} labels",
                p,
            )
        if dim is None:
            dim = int(arr.shape[0])
        elif arr.shape[0] != dim:
            raise DataError(f"features have dimension {arr.shape[0]}, other videos have {dim}", p)
        out[m.video] = arr.T  # (T, D) view; FrameTable concatenates into one contiguous block
        files.append(p)
    description = {"kind": "precomputed", "source": "features/<video>.npy (D x T)", "dim": dim}
    return out, files, description


def _bundle_line(path: Path, video: str) -> int | None:
    """1-based line of ``video`` in a bundle file (for error messages only)."""
    for lineno, raw in enumerate(path.read_text().splitlines(), start=1):
        name = raw.strip()
        if name in (video, f"{video}.txt"):
            return lineno
    return None


def bundle_splits(
    splits_dir: Path, metas: dict[str, VideoMeta], kept: Collection[str]
) -> tuple[tuple[Split, ...], list[Path]]:
    """Splits from every bundle pair in ``splits_dir``, checked against all videos
    (``metas``), then restricted to the ``kept`` ones. Returns (splits, bundle files)."""
    if not splits_dir.is_dir():
        raise DataError(
            "no splits/ folder (the MS-TCN layout needs split bundles)", splits_dir.parent
        )
    found = split_bundles(splits_dir)
    if not found:
        raise DataError("no train/test.split<K>.bundle files", splits_dir)
    splits: list[Split] = []
    files: list[Path] = []
    for k, paths in found.items():
        train_path, test_path = paths["train"], paths["test"]
        files += [train_path, test_path]
        train = read_bundle(train_path, metas)
        test = read_bundle(test_path, metas)
        in_train = set(train)
        people_train = {metas[v].participant: v for v in train}
        for v in test:
            if v in in_train:
                raise DataError(
                    f"video {v!r} is in both {train_path.name} and {test_path.name}",
                    test_path,
                    _bundle_line(test_path, v),
                )
            p = metas[v].participant
            if p in people_train:
                raise DataError(
                    f"split {k} is not leave-person-out: participant {p!r} is in the test "
                    f"video {v!r} and in the train video {people_train[p]!r} "
                    f"({train_path.name} line {_bundle_line(train_path, people_train[p])})",
                    test_path,
                    _bundle_line(test_path, v),
                )
        parts = []
        for listed, path in ((train, train_path), (test, test_path)):
            selected = tuple(sorted(v for v in listed if v in kept))
            if not selected:
                raise DataError(
                    "lists none of the selected videos" if listed else "lists no videos", path
                )
            parts.append(selected)
        splits.append(Split(f"split{k}", *parts))
    return tuple(splits), files


# -- converter --------------------------------------------------------------------------


def convert(
    root: str | Path,
    name: str | None = None,
    fps: float = 30.0,
    background: str | None = None,
    participant_pattern: str = DEFAULT_PARTICIPANT_PATTERN,
) -> FrameTable:
    """Convert a dataset in the MS-TCN layout (see the module docstring for the rules)."""
    root = Path(root)
    layout = read_layout(root, participant_pattern)
    return layout.to_table(
        name=name or root.resolve().name,
        fps=fps,
        background=background,
        source_format=NAME,
        converter_version=VERSION,
    )


def _pattern_option(value: str) -> str:
    try:
        compile_pattern(value)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    return value


def command(
    root: Path = typer.Option(
        ..., "--root", help="Dataset folder (groundTruth/, mapping.txt, splits/)."
    ),
    out: Path = typer.Option(..., "--out", help="Output Parquet file (written atomically)."),
    name: str | None = typer.Option(None, "--name", help="Dataset name [default: ROOT's name]."),
    fps: float = typer.Option(30.0, "--fps", min=0.001, help="Frames per second."),
    background: str | None = typer.Option(
        None, "--background", help="The background class (must be in mapping.txt)."
    ),
    participant_pattern: str = typer.Option(
        DEFAULT_PARTICIPANT_PATTERN,
        "--participant-pattern",
        callback=_pattern_option,
        help="Regex with a named group 'participant' (optional 'activity', 'view'), "
        "searched in each video id.",
    ),
) -> None:
    """Convert a dataset in the MS-TCN layout."""
    write_prepared(convert(root, name, fps, background, participant_pattern), out)
