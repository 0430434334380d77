"""Decoded RGB frames of a dataset's videos, matched to its frame table.

A :class:`FrameSource` finds each video of a frame table under a root folder, either as a
**video file** (decoded with PyAV, i.e. FFmpeg) or as a **folder of frame images** (JPEG or
PNG, decoded with Pillow), and :func:`read_frames` yields the frames the table asks for as
``uint8`` arrays of shape ``(height, width, 3)``.

Where a video is
    ``root / pattern`` with ``pattern`` a :meth:`str.format` template over the table's
    per-video fields ``{video}``, ``{participant}``, ``{activity}``, ``{view}`` (e.g.
    Breakfast's ``"{participant}/{view}/{participant}_{activity}.avi"``; 50 Salads'
    ``"{video}.avi"``). Without a pattern: the folder ``root/<video>`` if it exists, else the
    first existing ``root/<video><ext>`` for ``ext`` in :data:`VIDEO_EXTENSIONS`. ``kind``
    (``video`` / ``folder``) restricts which of the two is accepted; ``auto`` takes either.

The rules (the same for training, evaluation and export):

1. **Frame rate.** Table frame ``i`` (table rate ``F_t``, the dataset card's ``fps`` unless
   overridden) shows source frame ``j(i) = floor(i * F_s / F_t + 1e-6)``, the source frame
   on screen at time ``i / F_t`` (sample and hold). ``F_s`` is the video stream's average
   frame rate, or the source's ``fps`` override; a frame folder has no rate of its own and
   is taken to be at ``F_t`` unless ``fps`` says otherwise. Equal rates give ``j(i) = i``;
   a 30 fps video under a 15 fps table gives ``j(i) = 2i``.
2. **Frame order.** Video frames are numbered 0, 1, ... in presentation order as decoded.
   Folder images are ordered by the last run of digits in their file stem (``img_00001.jpg``,
   ``frame_0000000000.jpg``); the numbers must be consecutive (the first one may be any
   number, e.g. 1 for TSN-style folders): a gap or a duplicate number is a
   :class:`DataError` naming the folder and the missing number, since renumbering would
   silently shift every later label. Files without an image extension are ignored.
3. **End of video.** Source frames past the table's last frame are ignored (annotations are
   commonly cut to a feature length). If the source ends early, the table frames with no
   source frame are *missing*: up to ``tail_tolerance`` of them (default 5) repeat the last
   decoded frame and are reported through ``on_pad(video, missing)``; more is a
   :class:`DataError` naming the video and both counts. A subsampled read that does not
   reach the end of the source cannot see a short video; the full read of an export does.
4. **Bad input.** A missing video or folder, a file FFmpeg cannot open or decode (corrupt,
   truncated), a container without a video stream, and an image Pillow cannot decode are
   :class:`DataError` naming the video (and the frame, for a decoding failure mid-way).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from data_prep.errors import DataError

__all__ = ["FrameSource", "frame_map", "read_frames", "scaled_size"]

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
PATTERN_FIELDS = ("video", "participant", "activity", "view")
KINDS = ("auto", "video", "folder")

_DIGITS = re.compile(r"(\d+)(?!.*\d)")
_EPS = 1e-6  # keeps floor() from landing one frame early on rates like 30/15 in float


def frame_map(n_table: int, table_fps: float, source_fps: float) -> np.ndarray:
    """Source frame index shown at each of ``n_table`` table frames (rule 1), int64."""
    if table_fps <= 0 or source_fps <= 0:
        raise ValueError(f"frame rates must be positive (table {table_fps}, source {source_fps})")
    i = np.arange(n_table, dtype=np.float64)
    return np.floor(i * (float(source_fps) / float(table_fps)) + _EPS).astype(np.int64)


def scaled_size(width: int, height: int, short_side: int | None) -> tuple[int, int]:
    """(width, height) with the shorter side scaled to ``short_side`` (aspect kept)."""
    if short_side is None or min(width, height) == short_side:
        return width, height
    scale = short_side / min(width, height)
    if width <= height:
        return short_side, max(1, round(height * scale))
    return max(1, round(width * scale)), short_side


@dataclass(frozen=True)
class FrameSource:
    """Where a dataset's frames are: a root folder of video files or of frame folders.

    ``fps`` overrides the source frame rate (rule 1); ``tail_tolerance`` is rule 3's
    allowance of missing trailing frames; ``threads`` is FFmpeg's decoder thread count (0: its
    own choice; data-loader workers use 1 so they don't oversubscribe the cores).
    """

    root: Path
    kind: str = "auto"
    pattern: str | None = None
    fps: float | None = None
    tail_tolerance: int = 5
    threads: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))
        if self.kind not in KINDS:
            raise ValueError(
                f"frame source kind must be one of {', '.join(KINDS)}, got {self.kind!r}"
            )
        if self.fps is not None and self.fps <= 0:
            raise ValueError(f"source fps must be positive, got {self.fps}")
        if self.tail_tolerance < 0:
            raise ValueError(f"tail_tolerance must be >= 0, got {self.tail_tolerance}")
        if self.pattern is not None:
            try:
                self.pattern.format_map(dict.fromkeys(PATTERN_FIELDS, "x"))
            except (KeyError, IndexError, ValueError) as e:
                raise ValueError(
                    f"bad frame path pattern {self.pattern!r} ({e}); it may use "
                    + ", ".join("{" + f + "}" for f in PATTERN_FIELDS)
                ) from None

    def with_threads(self, threads: int) -> FrameSource:
        return dataclasses.replace(self, threads=threads)

    def locate(self, video: str, meta: Mapping[str, str | None] | None = None) -> tuple[str, Path]:
        """(``"video"`` or ``"folder"``, path) of one video; DataError if it is not there."""
        if not self.root.is_dir():
            raise DataError("frame root folder does not exist", self.root)
        if self.pattern is not None:
            fields = {f: "" for f in PATTERN_FIELDS} | {
                k: ("" if v is None else str(v)) for k, v in (meta or {}).items()
            }
            fields["video"] = video
            candidates = [self.root.joinpath(*PurePosixPath(self.pattern.format_map(fields)).parts)]
        else:
            candidates = [self.root / video] + [
                self.root / f"{video}{ext}" for ext in VIDEO_EXTENSIONS
            ]
        for path in candidates:
            if path.is_dir() and self.kind in ("auto", "folder"):
                return "folder", path
            if path.is_file() and self.kind in ("auto", "video"):
                return "video", path
        what = {
            "auto": "video file or frame folder", "video": "video file", "folder": "frame folder"
        }
        raise DataError(
            f"video {video!r}: no {what[self.kind]} found (looked for "
            + ", ".join(str(c.relative_to(self.root)) for c in candidates[:3])
            + (", ..." if len(candidates) > 3 else "")
            + ")",
            self.root,
        )


def read_frames(
    source: FrameSource,
    video: str,
    frames: np.ndarray,
    *,
    n_table: int,
    table_fps: float,
    meta: Mapping[str, str | None] | None = None,
    short_side: int | None = None,
    on_pad: Callable[[str, int], None] | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(table_frame, rgb_uint8_hwc)`` for each entry of ``frames``.

    ``frames`` are table frame indices of ``video`` (0 <= f < ``n_table``, any order,
    repeats allowed); they come back ordered by frame, each repeat yielded again. Decoding
    is sequential and stops after the last needed source frame. ``short_side`` scales each
    frame while decoding (shorter side to that many pixels). Rules 1–4 of the module apply.
    """
    wanted = np.sort(np.asarray(frames, dtype=np.int64))
    if wanted.size == 0:
        return
    if wanted[0] < 0 or wanted[-1] >= n_table:
        raise ValueError(f"video {video!r}: frame indices must lie in [0, {n_table})")
    kind, path = source.locate(video, meta)
    reader = _VideoReader(video, path, source.threads) if kind == "video" else _FolderReader(
        video, path
    )
    with reader:
        src_fps = source.fps or (reader.fps if kind == "video" else None) or table_fps
        full_map = frame_map(n_table, table_fps, src_fps)
        src = full_map[wanted]
        needed = np.unique(src)
        pos = 0  # next entry of wanted/src to serve
        for j, img in reader.frames(needed, short_side, full_map):
            while pos < len(src) and src[pos] == j:
                yield int(wanted[pos]), img
                pos += 1
        if pos == len(src):
            return
        # The source ended before some wanted frame: rule 3.
        decoded = reader.decoded
        covered = int(np.searchsorted(full_map, decoded, side="left"))
        missing = n_table - covered
        if decoded == 0:
            raise DataError(f"video {video!r}: no frames could be decoded", path)
        if missing > source.tail_tolerance:
            raise DataError(
                f"video {video!r}: {decoded} source frames at {src_fps:g} fps cover only "
                f"{covered} of the table's {n_table} frames at {table_fps:g} fps; "
                f"{missing} trailing frames are missing "
                f"(tail_tolerance is {source.tail_tolerance})",
                path,
            )
        last = reader.last_frame(short_side)
        if on_pad is not None:
            on_pad(video, missing)
        while pos < len(src):
            yield int(wanted[pos]), last
            pos += 1


# -- readers -------------------------------------------------------------------------------


class _VideoReader:
    """Sequential PyAV decoding of one video file."""

    def __init__(self, video: str, path: Path, threads: int):
        self.video, self.path, self.threads = video, path, threads
        self.decoded = 0
        self._last = None  # the last decoded frame (not converted unless needed)

    def __enter__(self) -> _VideoReader:
        import av  # lazy: keeps `import trainables` light

        self._av = av
        try:
            self.container = av.open(str(self.path))
        except (av.error.FFmpegError, OSError) as e:
            raise DataError(
                f"video {self.video!r}: cannot open ({_reason(e)})", self.path
            ) from None
        if not self.container.streams.video:
            self.container.close()
            raise DataError(f"video {self.video!r}: file has no video stream", self.path)
        self.stream = self.container.streams.video[0]
        if self.threads != 1:
            self.stream.thread_type = "AUTO"
        if self.threads:
            self.stream.codec_context.thread_count = self.threads
        rate = self.stream.average_rate or self.stream.guessed_rate
        self.fps = float(rate) if rate else None
        return self

    def __exit__(self, *exc: object) -> None:
        self.container.close()

    def frames(
        self, needed: np.ndarray, short_side: int | None, full_map: np.ndarray
    ) -> Iterator[tuple[int, np.ndarray]]:
        stop = int(needed[-1])
        need = set(needed.tolist())
        j = -1
        it = self.container.decode(self.stream)
        while j < stop:
            try:
                frame = next(it)
            except StopIteration:
                return
            except (self._av.error.FFmpegError, OSError) as e:
                at = int(np.searchsorted(full_map, j + 1))
                raise DataError(
                    f"video {self.video!r}: decoding failed at source frame {j + 1} "
                    f"(table frame {at}): {_reason(e)}",
                    self.path,
                ) from None
            j += 1
            self.decoded = j + 1
            self._last = frame
            if j in need:
                yield j, self._convert(frame, short_side)

    def _convert(self, frame, short_side: int | None) -> np.ndarray:
        w, h = scaled_size(frame.width, frame.height, short_side)
        return frame.to_ndarray(format="rgb24", width=w, height=h)

    def last_frame(self, short_side: int | None) -> np.ndarray:
        """The last decoded frame (called after decoding reached the end of the stream)."""
        return self._convert(self._last, short_side)


class _FolderReader:
    """One folder of frame images, numbered by the digits in their names (rule 2)."""

    def __init__(self, video: str, path: Path):
        self.video, self.path = video, path
        self.fps = None

    def __enter__(self) -> _FolderReader:
        numbered: list[tuple[int, Path]] = []
        for p in self.path.iterdir():
            if p.suffix.lower() not in IMAGE_EXTENSIONS or not p.is_file():
                continue
            m = _DIGITS.search(p.stem)
            if m is None:
                raise DataError(
                    f"video {self.video!r}: frame image without a number in its name", p
                )
            numbered.append((int(m.group(1)), p))
        numbered.sort()
        numbers = np.array([n for n, _ in numbered], dtype=np.int64)
        if numbers.size:
            expected = numbers[0] + np.arange(numbers.size)
            bad = np.flatnonzero(numbers != expected)
            if bad.size:
                k = int(bad[0])
                what = (
                    f"frame number {numbers[k]} appears twice"
                    if numbers[k] == numbers[k - 1]
                    else f"frame number {expected[k]} is missing (next is {numbers[k]})"
                )
                raise DataError(f"video {self.video!r}: {what}", self.path)
        self.files = [p for _, p in numbered]
        self.decoded = len(self.files)
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def frames(
        self, needed: np.ndarray, short_side: int | None, full_map: np.ndarray
    ) -> Iterator[tuple[int, np.ndarray]]:
        for j in needed.tolist():
            if j >= len(self.files):
                return
            yield j, self._load(j, int(np.searchsorted(full_map, j)), short_side)

    def _load(self, j: int, table_frame: int | None, short_side: int | None) -> np.ndarray:
        from PIL import Image

        path = self.files[j]
        try:
            with Image.open(path) as img:
                size = scaled_size(img.width, img.height, short_side)
                if size != (img.width, img.height):
                    img.draft("RGB", size)  # JPEG: decode at a reduced scale (much faster)
                rgb = img.convert("RGB")
                if rgb.size != size:
                    rgb = rgb.resize(size, Image.Resampling.BILINEAR)
                return np.asarray(rgb, dtype=np.uint8)
        except (OSError, SyntaxError, ValueError) as e:
            where = f"frame {table_frame}" if table_frame is not None else f"source frame {j}"
            raise DataError(
                f"video {self.video!r} {where}: cannot decode image ({_reason(e)})", path
            ) from None

    def last_frame(self, short_side: int | None) -> np.ndarray:
        return self._load(len(self.files) - 1, None, short_side)


def _reason(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0]


# -- a tiny rendered dataset (tests, benchmarks, demos) ------------------------------------

TOY_CLASSES = ("background", "stir", "chop", "pour")


def render_toy_dataset(
    root: str | Path,
    *,
    participants: int = 4,
    fps: float = 15.0,
    video_fps: float | None = None,
    size: tuple[int, int] = (64, 48),
    segment: tuple[int, int] = (6, 12),
    seed: int = 0,
    videos: bool = True,
    folders: bool = True,
):
    """Render a tiny kitchen-like dataset of coloured shapes and return its frame table.

    One video per participant ``P1..Pn``: background, then the three actions in a random
    order, then background again, each segment ``segment`` table frames long (random).
    Each action has its own shape, colour and motion (``stir``: a red disc circling,
    ``chop``: a green bar moving up and down, ``pour``: a blue triangle sliding down), so a
    per-frame CNN can learn it; each participant has its own background grey. Written as
    ``root/videos/<id>.mp4`` (H.264 at ``video_fps``, default ``fps``) and
    ``root/frames/<id>/img_00001.jpg ...`` (1-based, TSN style, at ``fps``). The returned
    table has one split, ``split1``: the last participant is the test set.
    """
    import av
    from PIL import Image

    from data_prep.table import DatasetCard, FrameTable, Split, VideoLabels

    root = Path(root)
    rng = np.random.default_rng(seed)
    vfps = float(video_fps or fps)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out: list[VideoLabels] = []
    for p in range(1, participants + 1):
        vid = f"P{p}_toy"
        order = [0, *(rng.permutation(3) + 1).tolist(), 0]
        lengths = rng.integers(segment[0], segment[1] + 1, size=len(order))
        labels = np.repeat(order, lengths).astype(np.int64)
        starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
        grey = (80, 120, 95, 100, 110, 85)[(p - 1) % 6]
        n_table = labels.size

        def render(t: float, _labels=labels, _starts=starts, _grey=grey, _n=n_table) -> np.ndarray:
            i = min(int(t * fps + 1e-6), _n - 1)  # the table frame on screen at time t
            img = np.full((h, w, 3), _grey, np.uint8)
            phase = (t - _starts[i] / fps) * 2 * np.pi
            label = int(_labels[i])
            if label == 1:
                cx, cy = w / 2 + w / 5 * np.cos(phase), h / 2 + h / 5 * np.sin(phase)
                img[(xx - cx) ** 2 + (yy - cy) ** 2 < (h / 5) ** 2] = (220, 40, 40)
            elif label == 2:
                top = h / 2 + h / 4 * np.sin(2 * phase) - h / 8
                img[(yy >= top) & (yy < top + h / 4) & (np.abs(xx - w / 2) < w / 3)] = (40, 200, 60)
            elif label == 3:
                top = (phase * h / 8) % (h / 2)
                tri = (yy >= top) & (yy < top + h / 2) & (np.abs(xx - w / 2) < (yy - top) / 1.2)
                img[tri] = (40, 60, 220)
            return img

        if videos:
            vdir = root / "videos"
            vdir.mkdir(parents=True, exist_ok=True)
            n_video = int(np.ceil(n_table * vfps / fps - 1e-6))
            with av.open(str(vdir / f"{vid}.mp4"), "w") as container:
                stream = container.add_stream("libx264", rate=round(vfps))
                stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
                stream.options = {"crf": "18"}
                for k in range(n_video):
                    frame = av.VideoFrame.from_ndarray(render(k / vfps), format="rgb24")
                    container.mux(stream.encode(frame))
                container.mux(stream.encode())
        if folders:
            fdir = root / "frames" / vid
            fdir.mkdir(parents=True, exist_ok=True)
            for k in range(n_table):
                Image.fromarray(render(k / fps)).save(fdir / f"img_{k + 1:05d}.jpg", quality=90)
        out.append(VideoLabels(vid, labels, participant=f"P{p}", activity="toy"))
    names = sorted(v.video for v in out)
    card = DatasetCard(
        name="toy",
        fps=float(fps),
        classes=TOY_CLASSES,
        background="background",
        source_format="toy",
        converter_version="1",
        splits=(Split("split1", tuple(names[:-1]), tuple(names[-1:])),),
    )
    return FrameTable.from_videos(card, out)
