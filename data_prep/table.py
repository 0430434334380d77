"""The canonical frame table: one Parquet file per prepared dataset, one row per frame.

Columns (sorted by ``video`` then ``frame``):

================  ==========================================  ===========================
column            type                                        meaning
================  ==========================================  ===========================
``video``         dictionary<int32, string>                   video id
``frame``         int32                                       0-based frame index
``label``         int16                                       index into ``card.classes``
``participant``   dictionary<int32, string>                   person recorded
``activity``      dictionary<int32, string> (nullable)        recipe / dish, where known
``view``          dictionary<int32, string> (nullable)        camera, where known
``features``      fixed_size_list<float32>[D] (optional)      softmax or other features
================  ==========================================  ===========================

The :class:`DatasetCard` travels in the schema metadata (JSON under ``kitchen_study.card``),
so a Parquet file alone says what its labels mean, which splits exist and where it came from.
Its ``content_digest`` (:func:`data_prep.digest.content_digest`) identifies the frames
themselves: every writer goes through :func:`write_table` / :func:`write_tables`, which
compute it from the in-memory arrays in the pass that checks them, just before writing (no
second read).

Rules every table obeys, checked when written and when read: features are finite (NaN or
inf is a :class:`DataError` naming the file, video and frame); a video has at most
:data:`MAX_FRAMES_PER_VIDEO` frames. Outputs are written atomically
(:mod:`data_prep.atomic`: temporary file beside the target, then rename) with the user's
umask; a target that is a folder, an unwritable folder or a full disk is a one-line
:class:`DataError`, the previous file left as it was.

In memory a dataset is a :class:`FrameTable`: per-video metadata plus *contiguous* per-frame
numpy arrays (``labels``, ``features``) and per-video ``offsets``. Trainables sample
subsequences straight out of these arrays, so :func:`read_table` builds them without any
Python loop over frames.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .atomic import atomic_outputs
from .digest import check_content, is_verified, remember_verified, with_content_digest
from .errors import DataError

__all__ = [
    "CARD_KEY",
    "FORMAT_VERSION",
    "MAX_FRAMES_PER_VIDEO",
    "DatasetCard",
    "FrameTable",
    "Split",
    "VideoLabels",
    "describe",
    "read_card",
    "read_table",
    "verify_table",
    "summarize",
    "write_table",
    "write_tables",
]

CARD_KEY = b"kitchen_study.card"
FORMAT_VERSION = 1
#: The most frames one video may have (10^8: 39 days at 30 fps). Converters refuse frame
#: numbers beyond it while reading, before allocating anything per frame, so a typo such as
#: an end frame of 10^12 is an error naming its line, not a 7 TiB allocation.
MAX_FRAMES_PER_VIDEO = 10**8

_META_COLUMNS = ("participant", "activity", "view")


@dataclass(frozen=True)
class Split:
    """One train/test split, by video id. Splits here are always leave-person-out."""

    name: str
    train: tuple[str, ...]
    test: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "train": list(self.train), "test": list(self.test)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Split:
        _check_keys(d, {"name", "train", "test"}, "split")
        return cls(str(d["name"]), tuple(d["train"]), tuple(d["test"]))


@dataclass(frozen=True)
class DatasetCard:
    """What a prepared dataset is: label vocabulary, splits and provenance."""

    name: str
    fps: float
    classes: tuple[str, ...]
    background: str | None
    source_format: str
    converter_version: str
    splits: tuple[Split, ...] = ()
    input_hash: str = ""
    #: Description of the ``features`` column (kind, dim, and how it was made), or None.
    features: dict[str, Any] | None = None
    #: What the converter's stated rules did (overlaps resolved, files skipped, ...), so
    #: nothing a conversion decided is silent or lost once the file is written.
    notes: tuple[str, ...] = ()
    #: sha256 of the frames themselves (:func:`~data_prep.digest.content_digest`), filled in
    #: by the writer; "" until the table is written (or in files written before the field
    #: existed).
    content_digest: str = ""
    format_version: int = FORMAT_VERSION

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def background_index(self) -> int | None:
        return None if self.background is None else self.classes.index(self.background)

    def split(self, name_or_number: str | int) -> Split:
        """A split by name (``"split1"``) or 1-based number (``1``)."""
        key = f"split{name_or_number}" if isinstance(name_or_number, int) else name_or_number
        for s in self.splits:
            if s.name == key:
                return s
        names = ", ".join(s.name for s in self.splits) or "none"
        raise KeyError(f"dataset {self.name!r} has no split {key!r} (it has: {names})")

    def replace(self, **changes: Any) -> DatasetCard:
        return dataclasses.replace(self, **changes)

    def to_json(self) -> str:
        d = dataclasses.asdict(self)
        d["classes"] = list(self.classes)
        d["splits"] = [s.to_dict() for s in self.splits]
        d["notes"] = list(self.notes)
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> DatasetCard:
        d = json.loads(text)
        if not isinstance(d, dict):
            raise ValueError("expected a JSON object")
        _check_keys(d, {f.name for f in dataclasses.fields(cls)}, "dataset card")
        _check_card_types(d)
        if d.get("format_version", FORMAT_VERSION) > FORMAT_VERSION:
            raise ValueError(
                f"dataset card format {d['format_version']} is newer than this "
                f"kitchen-study understands ({FORMAT_VERSION}); upgrade kitchen-study"
            )
        d["classes"] = tuple(d["classes"])
        d["splits"] = tuple(Split.from_dict(s) for s in d.get("splits", ()))
        d["notes"] = tuple(d.get("notes", ()))
        return cls(**d)


@dataclass
class VideoLabels:
    """One video's frame labels as a converter produces them."""

    video: str
    labels: np.ndarray  # int, one per frame
    participant: str
    activity: str | None = None
    view: str | None = None
    features: np.ndarray | None = None  # (frames, D) float32


@dataclass
class FrameTable:
    """A dataset in memory: per-video metadata and contiguous per-frame arrays.

    ``labels[offsets[i]:offsets[i + 1]]`` are the frames of ``videos[i]``; videos are
    sorted by id, as in the Parquet file.
    """

    card: DatasetCard
    videos: list[str]
    participant: list[str]
    activity: list[str | None]
    view: list[str | None]
    offsets: np.ndarray  # int64, len(videos) + 1
    labels: np.ndarray  # int16, contiguous
    features: np.ndarray | None = None  # float32 (frames, D), C-contiguous
    _index: dict[str, int] = field(default_factory=dict, repr=False, compare=False)

    # -- construction ------------------------------------------------------------------
    @classmethod
    def from_videos(
        cls, card: DatasetCard, videos: Iterable[VideoLabels], source: str | Path | None = None
    ) -> FrameTable:
        """Concatenate per-video labels (sorted by video id) and validate the result."""
        vids = sorted(videos, key=lambda v: v.video)
        seen: set[str] = set()
        for v in vids:
            if v.video in seen:
                raise DataError(f"duplicate video id {v.video!r}", source)
            seen.add(v.video)
        lengths = np.array([len(v.labels) for v in vids], dtype=np.int64)
        offsets = np.zeros(len(vids) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        labels = (
            np.concatenate([np.asarray(v.labels) for v in vids])
            if vids
            else np.zeros(0, dtype=np.int64)
        )
        features = None
        has_feat = [v.features is not None for v in vids]
        if any(has_feat):
            if not all(has_feat):
                missing = next(v.video for v in vids if v.features is None)
                raise DataError(f"video {missing!r} has no features while others do", source)
            features = np.ascontiguousarray(
                np.concatenate([np.asarray(v.features, dtype=np.float32) for v in vids])
            )
        if labels.size and (labels.min() < 0 or labels.max() >= card.num_classes):
            raise DataError(f"label index out of range 0..{card.num_classes - 1}", source)
        table = cls(
            card=card,
            videos=[v.video for v in vids],
            participant=[v.participant for v in vids],
            activity=[v.activity for v in vids],
            view=[v.view for v in vids],
            offsets=offsets,
            labels=labels.astype(np.int16),
            features=features,
        )
        table.validate(source)
        return table

    # -- queries -----------------------------------------------------------------------
    @property
    def num_videos(self) -> int:
        return len(self.videos)

    @property
    def num_frames(self) -> int:
        return int(self.offsets[-1])

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def feature_dim(self) -> int | None:
        return None if self.features is None else int(self.features.shape[1])

    def index_of(self, video: str) -> int:
        if not self._index:
            self._index = {v: i for i, v in enumerate(self.videos)}
        try:
            return self._index[video]
        except KeyError:
            raise KeyError(f"dataset {self.card.name!r} has no video {video!r}") from None

    def video_indices(self, videos: Iterable[str]) -> np.ndarray:
        return np.array([self.index_of(v) for v in videos], dtype=np.int64)

    def split_indices(self, split: str | int) -> tuple[np.ndarray, np.ndarray]:
        """(train, test) video indices of a split, by name or 1-based number."""
        s = self.card.split(split)
        return self.video_indices(s.train), self.video_indices(s.test)

    def video_labels(self, i: int) -> np.ndarray:
        return self.labels[self.offsets[i] : self.offsets[i + 1]]

    def with_features(self, features: np.ndarray, description: dict[str, Any]) -> FrameTable:
        """A copy whose ``features`` column is replaced (e.g. by simulated softmax)."""
        features = np.ascontiguousarray(features, dtype=np.float32)
        if features.ndim != 2 or features.shape[0] != self.num_frames:
            raise ValueError(
                f"features must have shape ({self.num_frames}, D), got {features.shape}"
            )
        card = self.card.replace(
            features={**description, "dim": int(features.shape[1])}, content_digest=""
        )
        return dataclasses.replace(self, card=card, features=features, _index={})

    # -- checks ------------------------------------------------------------------------
    def validate(self, source: str | Path | None = None) -> None:
        """Check the invariants every converter and reader must uphold."""
        n = self.num_videos
        for name in ("participant", "activity", "view"):
            if len(getattr(self, name)) != n:
                raise DataError(
                    f"{name} has {len(getattr(self, name))} entries for {n} videos", source
                )
        if len(self.offsets) != n + 1 or self.offsets[0] != 0 or np.any(np.diff(self.offsets) <= 0):
            empty = [self.videos[i] for i in np.flatnonzero(np.diff(self.offsets) <= 0)[:3]]
            raise DataError(f"videos without frames: {empty}", source)
        if n and int(self.lengths.max()) > MAX_FRAMES_PER_VIDEO:
            i = int(np.argmax(self.lengths))
            raise DataError(
                f"video {self.videos[i]!r} has {int(self.lengths[i]):,} frames, more than the "
                f"limit of {MAX_FRAMES_PER_VIDEO:,} per video",
                source,
            )
        if self.videos != sorted(self.videos) or len(set(self.videos)) != n:
            raise DataError("video ids must be unique and sorted", source)
        if self.labels.shape != (self.num_frames,):
            raise DataError(f"{self.labels.shape[0]} labels for {self.num_frames} frames", source)
        if self.features is not None and self.features.shape[0] != self.num_frames:
            raise DataError(
                f"features have {self.features.shape[0]} rows for {self.num_frames} frames", source
            )
        if self.card.background is not None and self.card.background not in self.card.classes:
            raise DataError(f"background class {self.card.background!r} is not a class", source)
        known = set(self.videos)
        person = dict(zip(self.videos, self.participant, strict=True))
        for s in self.card.splits:
            for part in (s.train, s.test):
                missing = [v for v in part if v not in known]
                if missing:
                    raise DataError(
                        f"split {s.name} names {len(missing)} video(s) not in the dataset, "
                        f"e.g. {missing[0]!r}",
                        source,
                    )
            both = set(s.train) & set(s.test)
            if both:
                raise DataError(
                    f"split {s.name}: video {sorted(both)[0]!r} in train and test", source
                )
            shared = {person[v] for v in s.train} & {person[v] for v in s.test}
            if shared:
                raise DataError(
                    f"split {s.name} is not leave-person-out: participant "
                    f"{sorted(shared)[0]!r} is in both train and test",
                    source,
                )


# -- Parquet I/O -------------------------------------------------------------------------


def _dict_column(per_video: Sequence[str | None], video_index: np.ndarray) -> pa.Array:
    """A per-frame dictionary column built from per-video values without a frame loop."""
    uniq = sorted({v for v in per_video if v is not None})
    pos = {v: i for i, v in enumerate(uniq)}
    codes = np.array([pos.get(v, -1) if v is not None else -1 for v in per_video], dtype=np.int32)
    frame_codes = codes[video_index]
    mask = frame_codes < 0
    indices = pa.array(frame_codes, mask=mask if mask.any() else None, type=pa.int32())
    return pa.DictionaryArray.from_arrays(indices, pa.array(uniq, type=pa.string()))


def to_arrow(table: FrameTable) -> pa.Table:
    lengths = table.lengths
    video_index = np.repeat(np.arange(table.num_videos, dtype=np.int32), lengths)
    frame = np.arange(table.num_frames, dtype=np.int64) - np.repeat(table.offsets[:-1], lengths)
    cols: dict[str, pa.Array] = {
        "video": pa.DictionaryArray.from_arrays(
            pa.array(video_index, type=pa.int32()), pa.array(table.videos, type=pa.string())
        ),
        "frame": pa.array(frame.astype(np.int32)),
        "label": pa.array(table.labels.astype(np.int16)),
    }
    for name in _META_COLUMNS:
        cols[name] = _dict_column(getattr(table, name), video_index)
    fields = [pa.field(name, col.type) for name, col in cols.items()]
    if table.features is not None:
        flat = pa.array(np.ascontiguousarray(table.features, dtype=np.float32).ravel())
        ftype = pa.list_(pa.field("element", pa.float32(), nullable=False), table.features.shape[1])
        cols["features"] = pa.FixedSizeListArray.from_arrays(flat, type=ftype)
        # Declared non-null (vectors and their values): Parquet then stores no definition
        # levels for the 10^8 values, which makes loading ~30 % faster (bench/bench_data.py).
        fields.append(pa.field("features", ftype, nullable=False))
    arrow = pa.Table.from_arrays(list(cols.values()), schema=pa.schema(fields))
    return arrow.replace_schema_metadata({CARD_KEY: table.card.to_json().encode()})


def write_table(table: FrameTable, path: str | Path, row_group_frames: int = 1 << 20) -> Path:
    """Validate ``table``, record its content digest in its card (refusing non-finite
    features: :func:`~data_prep.digest.with_content_digest`) and write it atomically as
    Parquet (see :class:`~data_prep.atomic.atomic_outputs`)."""
    return write_tables({Path(path): table}, row_group_frames)[0]


def write_tables(
    tables: Mapping[Path, FrameTable], row_group_frames: int = 1 << 20
) -> list[Path]:
    """:func:`write_table` for several tables at once: all files written, or none."""
    arrows = [to_arrow(with_content_digest(t)) for t in tables.values()]
    paths = [Path(p) for p in tables]
    with atomic_outputs(paths) as tmps:
        for arrow, tmp in zip(arrows, tmps, strict=True):
            pq.write_table(arrow, tmp, row_group_size=row_group_frames, **_parquet_options(arrow))
    for p, t in zip(paths, tables.values(), strict=True):
        # the digest was computed from the very arrays just written: verified at no cost
        remember_verified(p, t.card.content_digest)
    return paths


def _parquet_options(arrow: pa.Table) -> dict[str, Any]:
    """Per-column Parquet settings: the small per-frame columns zstd + dictionary encoded;
    the ``features`` column plain, uncompressed and without statistics.

    Why: float32 softmax / CNN features barely compress (zstd saves ~10 % on Breakfast's
    48-dim softmax, simulated or random) but decoding zstd costs more CPU than the saved
    bytes, and a dictionary or min/max statistics over 10^8 floats only cost write time
    (``bench/bench_data.py --variants`` measures the alternatives; see docs/benchmarks.md).
    Nested columns are addressed by their Parquet leaf path, hence the compliant
    ``list.element`` naming.
    """
    flat = [f.name for f in arrow.schema if not pa.types.is_fixed_size_list(f.type)]
    nested = [f"{f.name}.list.element" for f in arrow.schema if f.name not in flat]
    return {
        "compression": {**{c: "zstd" for c in flat}, **{c: "none" for c in nested}},
        "use_dictionary": flat,
        "write_statistics": flat,
        "use_compliant_nested_type": True,
        # a CRC per page, checked on every read (_CHECKSUMS): damaged bytes are an error,
        # not features that silently became zeros
        "write_page_checksum": True,
    }


def read_card(path: str | Path) -> DatasetCard:
    """The dataset card of a prepared Parquet file, without reading any rows."""
    path = Path(path)
    try:
        meta = pq.read_schema(path).metadata or {}
    except FileNotFoundError:
        raise DataError("no such file", path) from None
    except (pa.ArrowInvalid, OSError) as e:
        raise DataError(f"not a Parquet file ({e})", path) from None
    if CARD_KEY not in meta:
        raise DataError("not a kitchen-study frame table (no dataset card in its metadata)", path)
    try:
        return DatasetCard.from_json(meta[CARD_KEY])
    except (ValueError, TypeError, KeyError) as e:
        raise DataError(f"bad dataset card: {e}", path) from None


def _per_video(column: pa.ChunkedArray, starts: np.ndarray) -> list[str | None]:
    return column.take(pa.array(starts)).to_pylist()


def _read_features(path: Path, n: int) -> np.ndarray:
    """The ``features`` column as one C-contiguous float32 (n, D) array.

    Decoded one row group at a time straight into the preallocated output (measured in
    ``bench/bench_data.py``: less CPU and half the peak memory of decoding the whole column
    first, then copying it).
    """
    pf = pq.ParquetFile(path, memory_map=True, page_checksum_verification=True)
    dim = pf.schema_arrow.field("features").type.list_size
    out = np.empty((n, dim), dtype=np.float32)
    pos = 0
    for i in range(pf.num_row_groups):
        col = pf.read_row_group(i, columns=["features"], use_threads=False).column("features")
        for chunk in col.chunks:  # one iteration per row group, not per frame
            m = len(chunk)
            if pos + m > n or chunk.null_count:
                raise DataError("the features column does not match the frames", path)
            out[pos : pos + m] = chunk.flatten().to_numpy().reshape(m, dim)
            pos += m
    if pos != n:
        raise DataError(f"features have {pos} rows for {n} frames", path)
    return out


def read_table(path: str | Path, features: bool = True) -> FrameTable:
    """Load a prepared dataset into contiguous arrays (no Python loop over frames).

    ``features=False`` skips the (large) features column. Non-finite features are a
    :class:`DataError` naming the file, video and frame. Verified against the card
    (:func:`~data_prep.digest.check_content`, in the one pass that checks the features):
    frames that do not match the card's ``content_digest``, or a page that fails its
    checksum, are a one-line :class:`DataError`; a file already verified as it is now
    (the digest cache) skips that pass altogether.
    """
    path = Path(path)
    card = read_card(path)
    verified = is_verified(path, card.content_digest)  # the file as it is before reading
    with _damaged_pages(path):
        table, complete = _read_table(path, card, features)
    if not verified:
        check_content(table, path, complete)  # non-finite features are refused too
    return table


@contextlib.contextmanager
def _damaged_pages(path: Path) -> Iterator[None]:
    try:
        yield
    except OSError as e:
        if "checksum" not in str(e).lower():
            raise
        raise DataError("damaged: a Parquet page fails its checksum (the file was changed "
                        "or corrupted after it was written); prepare it again", path) from None


def verify_table(path: str | Path) -> DatasetCard:
    """The card of ``path`` once its frames are verified against it (a table already
    verified as it is now costs two ``stat`` calls; another is read once: :func:`read_table`).
    """
    card = read_card(path)
    if card.content_digest and not is_verified(path, card.content_digest):
        read_table(path)
    return card


def _read_table(path: Path, card: DatasetCard, features: bool) -> tuple[FrameTable, bool]:
    """The table and whether it holds all of the file (the features read, if any)."""
    schema = pq.read_schema(path)
    _check_schema(schema, path)
    columns = ["video", "frame", "label", *_META_COLUMNS]
    want_features = features and "features" in schema.names
    # memory_map: the decoder reads pages straight from the page cache instead of first
    # copying the whole file into Arrow buffers.
    arrow = pq.read_table(path, columns=columns, memory_map=True,
                          page_checksum_verification=True)
    n = arrow.num_rows

    video = arrow.column("video").unify_dictionaries() if n else arrow.column("video")
    chunks = video.chunks
    dictionary = chunks[0].dictionary if chunks else pa.array([], pa.string())
    codes = (
        np.concatenate([c.indices.to_numpy(zero_copy_only=False) for c in chunks])
        if chunks
        else np.zeros(0, np.int32)
    )
    change = np.flatnonzero(codes[1:] != codes[:-1]) + 1
    starts = np.concatenate([[0], change]).astype(np.int64) if n else np.zeros(0, np.int64)
    offsets = np.append(starts, n).astype(np.int64)
    videos = dictionary.take(pa.array(codes[starts])).to_pylist() if n else []

    frame = arrow.column("frame").to_numpy()
    # contiguous = each video starts at 0 and steps by 1 (two int32 passes; the int64
    # "expected frame" array is built only to locate an error)
    step = np.diff(frame)
    step[starts[1:] - 1] = 1
    if n and (np.any(step != 1) or frame[starts].any()):
        expected = np.arange(n, dtype=np.int64) - np.repeat(starts, np.diff(offsets))
        bad = int(np.flatnonzero(frame != expected)[0])
        raise DataError(
            f"frames are not contiguous from 0 per video (row {bad}, video "
            f"{dictionary[codes[bad]].as_py()!r})",
            path,
        )
    labels = np.ascontiguousarray(arrow.column("label").to_numpy(), dtype=np.int16)

    feats = _read_features(path, n) if want_features else None

    table = FrameTable(
        card=card,
        videos=videos,
        participant=_per_video(arrow.column("participant"), starts),
        activity=_per_video(arrow.column("activity"), starts),
        view=_per_video(arrow.column("view"), starts),
        offsets=offsets,
        labels=labels,
        features=feats,
    )
    table.validate(path)
    if labels.size and (labels.min() < 0 or labels.max() >= card.num_classes):
        raise DataError(f"label index out of range 0..{card.num_classes - 1}", path)
    return table, want_features or "features" not in schema.names


def summarize(table: FrameTable) -> dict[str, Any]:
    """The ``kitchen-study info --json`` object."""
    card = table.card
    return {
        "name": card.name,
        "videos": table.num_videos,
        "frames": table.num_frames,
        "classes": card.num_classes,
        "background": card.background,
        "background_index": card.background_index,
        "participants": len(set(table.participant)),
        "fps": card.fps,
        "source_format": card.source_format,
        "splits": [
            {"name": s.name, "train": len(s.train), "test": len(s.test)} for s in card.splits
        ],
        # from the card too, so a table read with features=False still reports it
        "feature_dim": (card.features or {}).get("dim", table.feature_dim),
        "features": card.features,
        "input_hash": card.input_hash,
        "content_digest": card.content_digest,
    }


def describe(table: FrameTable, path: str | Path | None = None) -> str:
    """One human line about a table, as the converters print after writing it."""
    where = f"wrote {path}: " if path is not None else ""
    splits = ", ".join(f"{s.name} {len(s.train)}/{len(s.test)}" for s in table.card.splits)
    feat = f", features dim {table.feature_dim}" if table.features is not None else ""
    return (
        f"{where}{table.card.name}: {table.num_videos} videos, {table.num_frames:,} frames, "
        f"{table.card.num_classes} classes (background {table.card.background!r}), "
        f"{len(set(table.participant))} participants{feat}; splits train/test: {splits or 'none'}"
    )


#: A card's fields and the JSON types they must have (a card edited by hand, e.g.
#: ``"fps": "fast"``, is refused when read rather than trusted).
_CARD_TYPES: dict[str, tuple[type, ...]] = {
    "name": (str,), "fps": (int, float), "classes": (list,), "background": (str, type(None)),
    "source_format": (str,), "converter_version": (str,), "splits": (list,),
    "input_hash": (str,), "features": (dict, type(None)), "notes": (list,),
    "content_digest": (str,), "format_version": (int,),
}


def _check_card_types(d: dict[str, Any]) -> None:
    for key, types in _CARD_TYPES.items():
        v = d.get(key)
        if key in d and (not isinstance(v, types) or isinstance(v, bool)):
            want = " or ".join("null" if t is type(None) else {
                str: "a string", int: "an integer", float: "a number", list: "a list",
                dict: "an object"}[t] for t in types if not (t is int and float in types))
            raise ValueError(f"{key}: expected {want}, got {v!r}")
    fps = d.get("fps")
    if isinstance(fps, int | float) and not (0 < fps < 1e6):
        raise ValueError(f"fps: expected a positive frame rate, got {fps!r}")
    if any(not isinstance(c, str) for c in d.get("classes", ())):
        raise ValueError("classes: expected a list of strings")
    for sp in d.get("splits", ()):
        if not isinstance(sp, dict) or not all(
                isinstance(sp.get(k), list) for k in ("train", "test")):
            raise ValueError("splits: expected objects with train and test lists")


#: Columns every frame table has, and what their Arrow type must be.
_COLUMN_TYPES = {"video": "a string", "frame": "an integer", "label": "an integer",
                 "participant": "a string", "activity": "a string", "view": "a string"}


def _column_ok(t: pa.DataType, want: str) -> bool:
    if pa.types.is_dictionary(t):
        t = t.value_type
    if want == "an integer":
        return pa.types.is_integer(t)
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_null(t)


def _check_schema(schema: pa.Schema, path: Path) -> None:
    """Every column of the layout, of its type: a file without ``label`` or with float
    labels (which would be truncated to class indices) is refused naming the column."""
    for name, want in _COLUMN_TYPES.items():
        if name not in schema.names:
            raise DataError(f"not a frame table: no {name!r} column", path)
        t = schema.field(name).type
        if not _column_ok(t, want):
            raise DataError(f"column {name!r} is {t}, expected {want} column", path)
    if "features" in schema.names:
        t = schema.field("features").type
        if not (pa.types.is_fixed_size_list(t) and pa.types.is_floating(t.value_type)):
            raise DataError(f"column 'features' is {t}, expected fixed_size_list<float>",
                            path)


def _check_keys(d: dict[str, Any], allowed: set[str], what: str) -> None:
    unknown = sorted(set(d) - allowed)
    if unknown:
        raise ValueError(f"unknown key(s) in {what}: {', '.join(unknown)}")
