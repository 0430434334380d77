"""The dataset layout every converter finishes through, and the MS-TCN layout reader.

A converter reads its source files into a :class:`Layout` (classes, per-video labels,
splits, the input files, notes) and calls :meth:`Layout.to_table`, the one place a
:class:`~data_prep.table.DatasetCard` is filled in. So every card is built the same way:

* ``converter_version`` is ``<converter NAME>-<VERSION>`` (:func:`converter_version`, e.g.
  ``breakfast-1``); ``VERSION`` is an integer string, bumped whenever the converter's output
  for the same input changes;
* ``background`` names the background class, or None where the source has none; it must be
  one of the classes;
* ``input_hash`` is :func:`~data_prep.digest.hash_inputs` over every input file, names
  relative to ``root`` when every input lies under it (a portable hash), else bare names;
* ``notes`` are what the converter's stated rules did (overlaps resolved, files skipped).

The MS-TCN layout (Farha & Gall, CVPR 2019), read by :func:`read_layout` for the ``mstcn``
and ``breakfast`` converters::

    ROOT/mapping.txt                          "<index> <label>" per line, 0..C-1 in order
    ROOT/groundTruth/<video>.txt              one label name per line, one line per frame
    ROOT/splits/{train,test}.split<K>.bundle  one "<video>.txt" per line
    ROOT/features/<video>.npy                 optional, float array of shape (D, T)

Its rules are stated in :mod:`data_prep.mstcn`.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .digest import hash_inputs
from .errors import DataError
from .readers import read_bundle, read_label_file, read_mapping, read_text, split_bundles
from .table import DatasetCard, FrameTable, Split, VideoLabels

__all__ = [
    "DEFAULT_PARTICIPANT_PATTERN",
    "Layout",
    "VideoMeta",
    "compile_pattern",
    "converter_version",
    "parse_video_id",
    "read_layout",
    "select_views",
]

DEFAULT_PARTICIPANT_PATTERN = r"(?P<participant>[A-Za-z]*\d+)"


def converter_version(name: str, version: str) -> str:
    """The card's ``converter_version``: ``"<name>-<version>"`` (one scheme for all)."""
    return f"{name}-{version}"


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

    Every converter builds one and finishes through :meth:`to_table` (module docstring).
    """

    #: the dataset's folder (input names in the hash are relative to it)
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
    #: what the converter's stated rules did, for the card's ``notes``
    notes: list[str] = field(default_factory=list)

    def to_table(
        self,
        *,
        name: str,
        fps: float,
        background: str | None,
        source_format: str,
        converter: str,
        version: str,
    ) -> FrameTable:
        """Fill in the dataset card (rules in the module docstring) and build the validated
        :class:`FrameTable`. ``converter``/``version``: the converter's ``NAME``/``VERSION``."""
        if not fps > 0:
            raise ValueError(f"fps must be positive, got {fps}")
        if background is not None and background not in self.classes:
            raise DataError(
                f"background class {background!r} is not one of the {len(self.classes)} "
                f"classes ({', '.join(self.classes[:5])}, ...)",
                self.class_source or self.root,
            )
        under_root = all(Path(p).is_relative_to(self.root) for p in self.inputs)
        card = DatasetCard(
            name=name,
            fps=float(fps),
            classes=self.classes,
            background=background,
            source_format=source_format,
            converter_version=converter_version(converter, version),
            splits=self.splits,
            input_hash=hash_inputs(self.inputs, self.root if under_root else None),
            features=self.features,
            notes=tuple(self.notes),
        )
        return FrameTable.from_videos(card, self.videos, source=self.root)


def read_layout(
    root: str | Path,
    pattern: str | re.Pattern[str] = DEFAULT_PARTICIPANT_PATTERN,
    views: Collection[str] | None = None,
) -> Layout:
    """Read a dataset in the MS-TCN layout (rules in :mod:`data_prep.mstcn`).

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
        if np.issubdtype(arr.dtype, np.inexact) and not np.isfinite(arr.sum()):
            bad = ~np.isfinite(arr)
            if bad.any():  # (a finite sum can only overflow to inf: then bad is empty)
                t = int(bad.any(axis=0).argmax())
                d = int(bad[:, t].argmax())
                raise DataError(
                    f"video {m.video!r} frame {t}: feature {d} is {arr[d, t]} "
                    "(features must be finite)",
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
    for lineno, raw in enumerate(read_text(path).splitlines(), start=1):
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
