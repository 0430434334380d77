"""The CNN's frame streams: training batches and whole-video evaluation batches, as
``torch.utils.data`` iterable datasets over a :class:`~trainables.frames.FrameSource`.

Training data
    Each epoch draws a plan of (video, frame) pairs from the split's training videos
    (:func:`plan_epoch`): ``plain`` takes every ``stride``-th frame from a random phase per
    video; ``balanced`` draws the same number of frames with replacement, frame probability
    inversely proportional to its class's training frame count. Videos are decoded
    sequentially (random access into compressed video is slow); each loader worker reads
    ``interleave`` videos at once and mixes their frames through a ``shuffle_buffer``, so a
    batch holds frames of several videos. The stream of epoch ``e`` is seeded by
    ``(seed, e)`` (plan) and ``(seed, start epoch, worker)`` (augmentation), so a job that
    resumes at iteration ``i`` restarts the stream at epoch ``i``: it does not replay the
    interrupted epoch's exact frame order.

Augmentation
    Training: TSN-style random resized crop (area fraction in ``crop_scale``, aspect
    3/4..4/3) and a horizontal flip; evaluation and export: the centre ``image_size`` square.
    Frames are decoded with the shorter side at the model's resize size
    (:func:`trainables.cnn_model.image_sizes`).

Errors
    A :class:`DataError` in a loader worker (a missing or broken video) travels to the main
    process as a :class:`Failure` item, which the consumer re-raises intact.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from data_prep.errors import DataError
from data_prep.table import FrameTable

from .cnn_config import CNNConfig
from .frames import FrameSource, read_frames

__all__ = [
    "EvalFrames",
    "Failure",
    "Padded",
    "TrainFrames",
    "Videos",
    "make_loader",
    "plan_epoch",
]


@dataclass(frozen=True)
class Videos:
    """The slice of a frame table the loaders need (picklable, no features)."""

    names: tuple[str, ...]
    meta: tuple[dict[str, str | None], ...]
    offsets: np.ndarray
    labels: np.ndarray
    table_fps: float

    @classmethod
    def of(cls, table: FrameTable, table_fps: float | None = None) -> Videos:
        meta = tuple(
            {"participant": p, "activity": a, "view": v}
            for p, a, v in zip(table.participant, table.activity, table.view, strict=True)
        )
        fps = float(table_fps or table.card.fps)
        return cls(tuple(table.videos), meta, table.offsets, table.labels, fps)

    def length(self, v: int) -> int:
        return int(self.offsets[v + 1] - self.offsets[v])


def plan_epoch(
    offsets: np.ndarray,
    labels: np.ndarray,
    videos: np.ndarray,
    stride: int,
    balanced: bool,
    rng: np.random.Generator,
) -> list[tuple[int, np.ndarray]]:
    """One epoch's training frames as ``[(video, sorted frame indices), ...]``, videos in
    random order (the sampling rules are in the module docstring)."""
    videos = np.asarray(videos, dtype=np.int64)
    lengths = offsets[videos + 1] - offsets[videos]
    if not balanced:
        plan = []
        for v, n in zip(videos.tolist(), lengths.tolist(), strict=True):
            phase = int(rng.integers(min(stride, n)))
            plan.append((v, np.arange(phase, n, stride, dtype=np.int64)))
    else:
        rows = np.concatenate([np.arange(offsets[v], offsets[v + 1]) for v in videos])
        lab = labels[rows].astype(np.int64)
        counts = np.bincount(lab)
        p = 1.0 / counts[lab]
        draws = int(np.sum(-(-lengths // stride)))
        picked = np.sort(rows[rng.choice(rows.size, size=draws, replace=True, p=p / p.sum())])
        owner = np.searchsorted(offsets, picked, side="right") - 1
        plan = []
        for v in np.unique(owner).tolist():
            plan.append((v, picked[owner == v] - offsets[v]))
    order = rng.permutation(len(plan))
    return [plan[i] for i in order]


@dataclass(frozen=True)
class Failure:
    """A DataError raised in a loader worker, carried to the main process intact."""

    reason: str
    path: str | None
    line: int | None

    @classmethod
    def of(cls, e: DataError) -> Failure:
        return cls(e.reason, None if e.path is None else str(e.path), e.line)

    def raise_(self) -> None:
        raise DataError(self.reason, self.path, self.line)


@dataclass(frozen=True)
class Padded:
    video: str
    frames: int


def _worker() -> tuple[int, int]:
    info = get_worker_info()
    return (0, 1) if info is None else (info.id, info.num_workers)


def _random_resized_crop(
    img: np.ndarray, rng: np.random.Generator, size: int, scale: tuple[float, float]
) -> torch.Tensor:
    """torchvision's RandomResizedCrop (aspect 3/4..4/3), drawn from a numpy generator so the
    stream is reproducible per (seed, epoch, worker)."""
    from torchvision.transforms.v2 import functional as TF

    h, w = img.shape[:2]
    area = h * w
    top, left, ch, cw = 0, 0, h, w
    for _ in range(10):
        target = area * rng.uniform(*scale)
        ratio = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        cw_ = round(math.sqrt(target * ratio))
        ch_ = round(math.sqrt(target / ratio))
        if 0 < cw_ <= w and 0 < ch_ <= h:
            top, left = int(rng.integers(h - ch_ + 1)), int(rng.integers(w - cw_ + 1))
            ch, cw = ch_, cw_
            break
    else:  # fall back to the central square-ish crop, as torchvision does
        ch = cw = min(h, w)
        top, left = (h - ch) // 2, (w - cw) // 2
    t = torch.from_numpy(np.ascontiguousarray(img[top : top + ch, left : left + cw]))
    return TF.resize(t.permute(2, 0, 1).contiguous(), [size, size], antialias=True)


def _center_crop(img: np.ndarray, size: int) -> torch.Tensor:
    h, w = img.shape[:2]
    if h < size or w < size:  # only for frames smaller than asked: scale up first
        from torchvision.transforms.v2 import functional as TF

        t = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).contiguous()
        s = size / min(h, w)
        t = TF.resize(t, [max(size, round(h * s)), max(size, round(w * s))], antialias=True)
        img = t.permute(1, 2, 0).numpy()
        h, w = img.shape[:2]
    top, left = (h - size) // 2, (w - size) // 2
    crop = np.ascontiguousarray(img[top : top + size, left : left + size])
    return torch.from_numpy(crop).permute(2, 0, 1)


class TrainFrames(IterableDataset):
    """Endless stream of augmented training batches ``(uint8 (B,3,S,S), int64 (B,))``."""

    def __init__(
        self,
        source: FrameSource,
        videos: Videos,
        train: np.ndarray,
        cfg: CNNConfig,
        size: int,
        resize: int,
        start_epoch: int,
    ):
        self.source, self.videos, self.train = source, videos, np.asarray(train, np.int64)
        self.cfg, self.size, self.resize, self.start_epoch = cfg, size, resize, start_epoch

    def __iter__(self) -> Iterator[Any]:
        wid, nw = _worker()
        source = self.source.with_threads(1) if nw > 1 else self.source
        cfg, vids = self.cfg, self.videos
        aug = np.random.default_rng([cfg.seed, self.start_epoch, wid, 1])
        buffer: list[tuple[torch.Tensor, int]] = []
        batch_x: list[torch.Tensor] = []
        batch_y: list[int] = []
        epoch = self.start_epoch
        idle = 0  # consecutive epochs in which this worker's share of the plan was empty
        try:
            while idle < 1000:
                plan_rng = np.random.default_rng([cfg.seed, epoch, 0])
                balanced = cfg.sampling == "balanced"
                plan = plan_epoch(
                    vids.offsets, vids.labels, self.train, cfg.stride, balanced, plan_rng
                )[wid::nw]
                idle = 0 if plan else idle + 1
                for frame, label in self._interleaved(source, plan, aug):
                    x = _random_resized_crop(frame, aug, self.size, cfg.crop_scale)
                    if cfg.flip and aug.random() < 0.5:
                        x = x.flip(-1)
                    buffer.append((x, label))
                    if len(buffer) < cfg.shuffle_buffer:
                        continue
                    k = int(aug.integers(len(buffer)))
                    buffer[k], buffer[-1] = buffer[-1], buffer[k]
                    x, y = buffer.pop()
                    batch_x.append(x)
                    batch_y.append(y)
                    if len(batch_x) == cfg.batch_size:
                        yield torch.stack(batch_x), torch.tensor(batch_y, dtype=torch.int64)
                        batch_x, batch_y = [], []
                epoch += 1
        except DataError as e:
            yield Failure.of(e)

    def _interleaved(
        self, source: FrameSource, plan: list[tuple[int, np.ndarray]], rng: np.random.Generator
    ) -> Iterator[tuple[np.ndarray, int]]:
        vids = self.videos
        pending = iter(plan)
        active: list[Iterator[tuple[np.ndarray, int]]] = []

        def open_next() -> bool:
            for v, frames in pending:
                if frames.size:
                    labels = vids.labels[vids.offsets[v] : vids.offsets[v + 1]]
                    gen = read_frames(
                        source, vids.names[v], frames, n_table=vids.length(v),
                        table_fps=vids.table_fps, meta=vids.meta[v], short_side=self.resize,
                    )
                    active.append(((img, int(labels[f])) for f, img in gen))
                    return True
            return False

        while len(active) < self.cfg.interleave and open_next():
            pass
        while active:
            k = int(rng.integers(len(active)))
            try:
                yield next(active[k])
            except StopIteration:
                active.pop(k)
                open_next()


class EvalFrames(IterableDataset):
    """Centre-cropped frames of whole videos in batches ``(rows int64 (B,), uint8 (B,3,S,S))``;
    ``rows`` are global table rows. Every ``stride``-th frame (1: all)."""

    def __init__(
        self,
        source: FrameSource,
        videos: Videos,
        which: np.ndarray,
        size: int,
        resize: int,
        batch_size: int,
        stride: int = 1,
    ):
        self.source, self.videos, self.which = source, videos, np.asarray(which, np.int64)
        self.size, self.resize, self.batch_size, self.stride = size, resize, batch_size, stride

    def __iter__(self) -> Iterator[Any]:
        wid, nw = _worker()
        source = self.source.with_threads(1) if nw > 1 else self.source
        vids = self.videos
        rows: list[int] = []
        xs: list[torch.Tensor] = []
        padded: list[Padded] = []
        try:
            for v in self.which[wid::nw].tolist():
                frames = np.arange(0, vids.length(v), self.stride, dtype=np.int64)
                gen = read_frames(
                    source, vids.names[v], frames, n_table=vids.length(v), table_fps=vids.table_fps,
                    meta=vids.meta[v], short_side=self.resize,
                    on_pad=lambda name, n: padded.append(Padded(name, n)),
                )
                for f, img in gen:
                    rows.append(int(vids.offsets[v]) + f)
                    xs.append(_center_crop(img, self.size))
                    if len(xs) == self.batch_size:
                        yield torch.tensor(rows, dtype=torch.int64), torch.stack(xs)
                        rows, xs = [], []
                yield from padded
                padded.clear()
            if xs:
                yield torch.tensor(rows, dtype=torch.int64), torch.stack(xs)
        except DataError as e:
            yield Failure.of(e)


def make_loader(dataset: IterableDataset, workers: int, pin: bool) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=None,  # the datasets batch themselves (frames of one worker's videos)
        num_workers=workers,
        pin_memory=pin,
        prefetch_factor=4 if workers else None,
        persistent_workers=False,
    )
