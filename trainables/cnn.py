"""The paper's first stage: a per-frame RGB CNN, its softmax export, and the CNN baselines.

Pipeline (Perrett & Damen §5): (1) fine-tune an ImageNet CNN on the training frames of one
split, (2) write its softmax for **every** frame of the dataset into the frame table's
``features`` column (a new Parquet file per split), (3) the LSTM trains on that file.
Table 3's baselines come from the same export: "CNN + Softmax" is the argmax accuracy of the
exported features, "CNN + SVM" an RBF SVM on them (:func:`svm_baseline`).

Pure PyTorch / scikit-learn, no Ray or MLflow: :class:`CNNTrainer` trains and evaluates,
:func:`export_features` writes the softmax table, the Ray Tune trainable
(:mod:`trainables.cnn_trainable`) and the CLI (:mod:`trainables.cnn_cli`) are thin shells.

Model
    Any torchvision classification model by name; ``inception_v3`` by default (the closest
    torchvision has to the paper's BN-Inception RGB stream; built without its auxiliary
    head). The 1000-way ImageNet head (the last ``nn.Linear`` with 1000 outputs) is replaced
    by a fresh one over the dataset's classes. ``weights``: None (random init), a path to a
    local torchvision-format ImageNet state dict, or ``"imagenet"``, which looks for
    torchvision's own file in the torch hub cache and is a :class:`DataError` when it is not
    there: nothing is downloaded at run time. Input normalisation (ImageNet mean/std) happens
    inside :class:`FrameClassifier`, on the device, so the loader ships ``uint8``.

Images
    ``image_size`` defaults to the model's torchvision crop size (299 for Inception-v3, 224
    for most others). Frames are decoded with the shorter side scaled to ``resize =
    round(image_size / 0.875)`` (torchvision's resize size, e.g. 342 for 299). Training:
    TSN-style random resized crop (area fraction in ``crop_scale``, aspect 3/4..4/3) and a
    horizontal flip; evaluation and export: the centre ``image_size`` square.

Training data
    Each epoch draws a plan of (video, frame) pairs from the split's training videos:
    ``plain`` takes every ``stride``-th frame from a random phase per video; ``balanced``
    draws the same number of frames with replacement, frame probability inversely
    proportional to its class's training frame count. Videos are decoded sequentially (random
    access into compressed video is slow); each loader worker reads ``interleave`` videos
    at once and mixes their frames through a ``shuffle_buffer``, so a batch holds frames of
    several videos. Iterations count optimiser steps (batches). Resuming from a checkpoint
    restores weights, optimiser, iteration and RNG, and restarts the data stream at an epoch
    seeded by the iteration: it does not replay the interrupted epoch's exact frame order.

Devices
    CUDA when asked for and available, else CPU. On CUDA only: bf16 autocast (``amp``) and
    channels-last memory format (``channels_last``); on CPU both are off (bf16 autocast on
    CPU is slower than fp32 on most CPUs and would change results).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal
from urllib.parse import urlparse

import numpy as np
import torch
from pydantic import Field, field_validator, model_validator
from torch import nn
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from data_prep.errors import DataError
from data_prep.table import FrameTable, write_table

from .frames import FrameSource, read_frames
from .job import (
    CheckpointMismatch,
    ConfigError,
    StrictConfig,
    parse_iterations,
    resolve_trial_path,
)

__all__ = [
    "CHECKPOINT_FILE",
    "CHECKPOINT_FORMAT",
    "CNNConfig",
    "CNNRun",
    "CNNSpec",
    "CNNTrainer",
    "CheckpointMismatch",
    "ConfigError",
    "FrameClassifier",
    "build_model",
    "export_features",
    "image_sizes",
    "load_checkpoint",
    "plan_epoch",
    "resolve_weights",
    "svm_baseline",
]

CHECKPOINT_FORMAT = "kitchen-study.cnn/1"
CHECKPOINT_FILE = "cnn.pt"
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
# Constructor arguments some torchvision models need to be built without their auxiliary
# classifiers (which only matter for their original ImageNet training recipe).
_MODEL_KWARGS: dict[str, dict[str, Any]] = {
    "inception_v3": {"aux_logits": False, "init_weights": True},
    "googlenet": {"aux_logits": False, "init_weights": True},
}
# Keys of auxiliary heads present in ImageNet state dicts but not in the models built above.
_AUX_PREFIXES = ("AuxLogits.", "aux1.", "aux2.")


class CNNConfig(StrictConfig):
    """Model and training settings (unknown keys and wrong types are errors naming the key)."""

    model: str = "inception_v3"
    weights: str | None = None
    image_size: int | None = Field(None, ge=32)
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float | None = Field(None, gt=0, description="None: 1e-3 for sgd, 1e-4 for adamw")
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(1e-4, ge=0)
    batch_size: int = Field(32, ge=1)
    sampling: Literal["plain", "balanced"] = "plain"
    stride: int = Field(8, ge=1)
    crop_scale: tuple[float, float] = (0.25, 1.0)
    flip: bool = True
    interleave: int = Field(4, ge=1)
    shuffle_buffer: int = Field(256, ge=1)
    workers: int | None = Field(None, ge=0, description="None: 0 on CPU, CPUs-1 (<=8) on GPU")
    amp: bool = True
    channels_last: bool = True
    seed: int = 0

    @model_validator(mode="after")
    def _check(self) -> CNNConfig:
        lo, hi = self.crop_scale
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"crop_scale must satisfy 0 < low <= high <= 1, got {self.crop_scale}")
        return self

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else {"sgd": 1e-3, "adamw": 1e-4}[self.optimizer]


# -- model -------------------------------------------------------------------------------


class FrameClassifier(nn.Module):
    """A torchvision backbone with its head over the dataset's classes; takes uint8 or
    float images in [0, 1], shape (B, 3, H, W), and normalises them itself."""

    def __init__(self, backbone: nn.Module, name: str, num_classes: int):
        super().__init__()
        self.backbone = backbone
        self.name = name
        self.num_classes = num_classes
        mean, std = torch.tensor(_IMAGENET_MEAN), torch.tensor(_IMAGENET_STD)
        self.register_buffer("mean", mean.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", std.view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.uint8:
            x = x.float().div_(255.0)
        return self.backbone((x - self.mean) / self.std)


def image_sizes(model: str, image_size: int | None = None) -> tuple[int, int]:
    """(crop size, decode short side) for a model: torchvision's own unless given."""
    import torchvision.models as tvm

    crop, resize = 224, 256
    try:
        keywords = getattr(tvm.get_model_weights(model).DEFAULT.transforms, "keywords", {})
        crop = int(keywords.get("crop_size", crop))
        resize = int(keywords.get("resize_size", resize))
    except (ValueError, KeyError, AttributeError):
        pass
    if image_size is not None:
        return image_size, round(image_size / 0.875)
    return crop, max(resize, crop)


def resolve_weights(model: str, weights: str | Path | None) -> Path | None:
    """The local ImageNet state dict to start from (rule in the module docstring)."""
    if weights is None or str(weights) in ("", "none"):
        return None
    if str(weights) == "imagenet":
        import torchvision.models as tvm

        default = tvm.get_model_weights(model).DEFAULT
        name = PurePosixPath(urlparse(default.url).path).name
        path = Path(torch.hub.get_dir()) / "checkpoints" / name
        if not path.is_file():
            raise DataError(
                f"ImageNet weights for {model} are not on disk and nothing is downloaded at run "
                f"time: fetch {default.url} and pass --weights PATH (or put it at this path)",
                path,
            )
        return path
    path = Path(weights)
    if not path.is_file():
        raise DataError("weights file does not exist", path)
    return path


def build_model(
    name: str,
    num_classes: int,
    weights: str | Path | None = None,
    *,
    transform_input: bool | None = None,
) -> FrameClassifier:
    """A torchvision classifier by name, optionally ImageNet-initialised from a local file,
    with its 1000-way head replaced by a fresh ``num_classes``-way one.

    ``transform_input`` (Inception-v3 / GoogLeNet only) defaults to whether ImageNet weights
    are loaded, as torchvision does; checkpoints record it so a reloaded model sees its
    input exactly as in training."""
    import torchvision.models as tvm

    known = tvm.list_models(module=tvm)
    if name not in known:
        raise ValueError(
            f"unknown torchvision classification model {name!r} "
            f"(e.g. inception_v3, resnet18, resnet50, mobilenet_v3_small)"
        )
    path = resolve_weights(name, weights)
    kwargs = dict(_MODEL_KWARGS.get(name, {}))
    if "aux_logits" in kwargs:
        # ImageNet Inception/GoogLeNet weights expect torchvision's transform_input remap.
        kwargs["transform_input"] = path is not None if transform_input is None else transform_input
    net = tvm.get_model(name, weights=None, **kwargs)
    if path is not None:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any unreadable file is the same bad input
            raise DataError(f"cannot read weights file ({e})", path) from None
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise DataError("weights file is not a state dict", path)
        state = {k: v for k, v in state.items() if not k.startswith(_AUX_PREFIXES)}
        result = net.load_state_dict(state, strict=False)
        if result.missing_keys or result.unexpected_keys:
            bad = (result.missing_keys or result.unexpected_keys)[:3]
            raise DataError(
                f"weights do not fit {name}: {len(result.missing_keys)} missing and "
                f"{len(result.unexpected_keys)} unexpected keys, e.g. {bad}",
                path,
            )
    _replace_head(net, name, num_classes)
    return FrameClassifier(net, name, num_classes)


def _replace_head(net: nn.Module, name: str, num_classes: int) -> None:
    heads = [
        (n, m)
        for n, m in net.named_modules()
        if isinstance(m, nn.Linear) and m.out_features == 1000
    ]
    if not heads:
        raise ValueError(f"model {name!r} has no 1000-way nn.Linear head to replace; not supported")
    path, old = heads[-1]
    parent = net.get_submodule(path.rpartition(".")[0]) if "." in path else net
    setattr(parent, path.rpartition(".")[2], nn.Linear(old.in_features, num_classes))


# -- data --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Videos:
    """The slice of a frame table the loaders need (picklable, no features)."""

    names: tuple[str, ...]
    meta: tuple[dict[str, str | None], ...]
    offsets: np.ndarray
    labels: np.ndarray
    table_fps: float

    @classmethod
    def of(cls, table: FrameTable, table_fps: float | None = None) -> _Videos:
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
class _Failure:
    """A DataError raised in a loader worker, carried to the main process intact."""

    reason: str
    path: str | None
    line: int | None

    @classmethod
    def of(cls, e: DataError) -> _Failure:
        return cls(e.reason, None if e.path is None else str(e.path), e.line)

    def raise_(self) -> None:
        raise DataError(self.reason, self.path, self.line)


@dataclass(frozen=True)
class _Padded:
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


class _TrainFrames(IterableDataset):
    """Endless stream of augmented training batches ``(uint8 (B,3,S,S), int64 (B,))``."""

    def __init__(
        self,
        source: FrameSource,
        videos: _Videos,
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
            yield _Failure.of(e)

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


class _EvalFrames(IterableDataset):
    """Centre-cropped frames of whole videos in batches ``(rows int64 (B,), uint8 (B,3,S,S))``;
    ``rows`` are global table rows. Every ``stride``-th frame (1: all)."""

    def __init__(
        self,
        source: FrameSource,
        videos: _Videos,
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
        padded: list[_Padded] = []
        try:
            for v in self.which[wid::nw].tolist():
                frames = np.arange(0, vids.length(v), self.stride, dtype=np.int64)
                gen = read_frames(
                    source, vids.names[v], frames, n_table=vids.length(v), table_fps=vids.table_fps,
                    meta=vids.meta[v], short_side=self.resize,
                    on_pad=lambda name, n: padded.append(_Padded(name, n)),
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
            yield _Failure.of(e)


def _loader(dataset: IterableDataset, workers: int, pin: bool) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=None,  # the datasets batch themselves (frames of one worker's videos)
        num_workers=workers,
        pin_memory=pin,
        prefetch_factor=4 if workers else None,
        persistent_workers=False,
    )


# -- training ----------------------------------------------------------------------------


def _device(device: str | torch.device | None) -> torch.device:
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device cuda was asked for but CUDA is not available")
    return dev


class CNNTrainer:
    """Fine-tunes a :class:`FrameClassifier` on one split's training frames.

    ``table`` is a frame table (its ``features`` are ignored); ``split`` a split name or
    1-based number; ``source`` says where the frames are; ``table_fps`` overrides the card's
    frame rate. ``workers`` None follows :class:`CNNConfig` (0 on CPU, CPUs-1 up to 8 on GPU).
    """

    def __init__(
        self,
        cfg: CNNConfig,
        table: FrameTable,
        split: str | int,
        source: FrameSource,
        *,
        device: str | torch.device | None = "auto",
        table_fps: float | None = None,
        cpus: int | None = None,
    ):
        self.cfg = cfg
        self.table = table
        self.split = table.card.split(split).name
        self.source = source
        self.train_videos, self.test_videos = table.split_indices(self.split)
        if not self.train_videos.size:
            raise ConfigError(f"split {self.split} of {table.card.name!r} has no training videos")
        self.videos = _Videos.of(table, table_fps)
        self.size, self.resize = image_sizes(cfg.model, cfg.image_size)
        self.device = _device(device)
        self.cuda = self.device.type == "cuda"
        self.amp = cfg.amp and self.cuda
        self.channels_last = cfg.channels_last and self.cuda
        cpus = cpus or torch.get_num_threads()
        auto_workers = min(8, max(0, cpus - 1)) if self.cuda else 0
        self.workers = cfg.workers if cfg.workers is not None else auto_workers
        # a training worker without videos of its own would have nothing to stream
        self.train_workers = min(self.workers, int(self.train_videos.size))
        torch.manual_seed(cfg.seed)
        self.model = build_model(cfg.model, table.card.num_classes, cfg.weights).to(self.device)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        params = self.model.parameters()
        if cfg.optimizer == "sgd":
            self.optimizer: torch.optim.Optimizer = torch.optim.SGD(
                params, lr=cfg.learning_rate, momentum=cfg.momentum, weight_decay=cfg.weight_decay
            )
        else:
            self.optimizer = torch.optim.AdamW(
                params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay
            )
        self.loss_fn = nn.CrossEntropyLoss()
        self.iteration = 0
        self._stream: Iterator[Any] | None = None
        self._loader: DataLoader | None = None

    # -- training ------------------------------------------------------------------------
    def _batches(self) -> Iterator[Any]:
        if self._stream is None:
            ds = _TrainFrames(
                self.source, self.videos, self.train_videos, self.cfg, self.size, self.resize,
                start_epoch=self.iteration,
            )
            self._loader = _loader(ds, self.train_workers, self.cuda)
            self._stream = iter(self._loader)
        return self._stream

    def train(self, n: int) -> dict[str, float]:
        """Run ``n`` optimiser steps; returns mean ``loss``, ``frames_per_s`` and the share
        of wall time spent waiting for data (``data_wait``)."""
        self.model.train()
        stream = self._batches()
        total = torch.zeros((), device=self.device)
        frames, waited = 0, 0.0
        start = time.perf_counter()
        for _ in range(n):
            t0 = time.perf_counter()
            item = next(stream)
            waited += time.perf_counter() - t0
            if isinstance(item, _Failure):
                self.close()
                item.raise_()
            x, y = item
            x = x.to(self.device, non_blocking=True)
            y = y.to(self.device, non_blocking=True)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                loss = self.loss_fn(self.model(x), y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            total += loss.detach().float()
            frames += int(y.numel())
            self.iteration += 1
        if self.cuda:
            torch.cuda.synchronize(self.device)
        wall = time.perf_counter() - start
        return {
            "loss": float(total.item() / max(n, 1)),
            "frames_per_s": frames / wall if wall > 0 else 0.0,
            "data_wait": waited / wall if wall > 0 else 0.0,
        }

    # -- inference -----------------------------------------------------------------------
    def predict(
        self, which: np.ndarray, stride: int = 1, batch_size: int | None = None,
        workers: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
        """(rows, softmax (len(rows), C), padded frames per video) over videos ``which``;
        rows in the loader's order (by video per worker)."""
        return _predict(
            self.model, self.source, self.videos, which, size=self.size, resize=self.resize,
            batch_size=batch_size or self.cfg.batch_size, stride=stride,
            workers=self.workers if workers is None else workers,
            device=self.device, amp=self.amp, channels_last=self.channels_last,
        )

    def evaluate(self, stride: int = 1) -> dict[str, float]:
        """Argmax frame accuracy (percent) on every ``stride``-th frame of the test videos."""
        rows, probs, _ = self.predict(self.test_videos, stride)
        pred = probs.argmax(1)
        acc = float(np.mean(pred == self.table.labels[rows]) * 100.0) if rows.size else float("nan")
        return {"frame_acc": acc, "eval_frames": int(rows.size)}

    def export(self, out: str | Path, batch_size: int | None = None) -> dict[str, Any]:
        """Softmax of every frame of every video into a new table at ``out`` (atomic)."""
        return export_features(
            self.model, self.table, self.source, out, split=self.split,
            batch_size=batch_size or max(self.cfg.batch_size, 64), workers=self.workers,
            device=self.device, amp=self.amp, channels_last=self.channels_last,
            table_fps=self.videos.table_fps, image_size=self.size,
            description={"iteration": self.iteration, "config": self.cfg.model_dump(mode="json")},
        )

    # -- checkpoints ---------------------------------------------------------------------
    def state_dict(self, run: dict[str, Any] | None = None) -> dict[str, Any]:
        """The checkpoint: tensors plus a JSON ``meta`` string (config, classes, split,
        iteration, image sizes and ``run``: whatever the caller's loop needs to resume)."""
        meta = {
            "config": self.cfg.model_dump(mode="json"),
            "dataset": self.table.card.name,
            "classes": list(self.table.card.classes),
            "split": self.split,
            "iteration": self.iteration,
            "image_size": self.size,
            "resize": self.resize,
            "transform_input": getattr(self.model.backbone, "transform_input", None),
            "run": run or {},
        }
        return {
            "format": CHECKPOINT_FORMAT,
            "meta": json.dumps(meta),
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "torch_rng": torch.get_rng_state(),
        }

    def save(self, path: str | Path, run: dict[str, Any] | None = None) -> Path:
        """Write the checkpoint atomically (loadable with ``torch.load(weights_only=True)``)."""
        from data_prep.table import atomic_output

        path = Path(path)
        with atomic_output(path) as tmp:
            torch.save(self.state_dict(run), tmp)
        return path

    def load(self, path: str | Path) -> dict[str, Any]:
        """Restore weights, optimiser, iteration and RNG (the data stream restarts at an
        epoch seeded by the iteration); returns the checkpoint's metadata."""
        ckpt, meta = _read_checkpoint(path)
        _check_classes(meta, self.table, path)
        if meta["config"]["model"] != self.cfg.model:
            raise CheckpointMismatch(
                f"{path}: checkpoint holds a {meta['config']['model']} model, the config asks "
                f"for {self.cfg.model}"
            )
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        torch.set_rng_state(ckpt["torch_rng"])
        self.iteration = int(meta["iteration"])
        self.close()
        return meta

    def close(self) -> None:
        """Stop the data-loader workers (a new stream starts on the next ``train``)."""
        self._stream = None
        self._loader = None


def _read_checkpoint(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        raise DataError("checkpoint file does not exist", path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same bad input
        raise DataError(f"cannot read checkpoint ({e})", path) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointMismatch(f"{path}: not a kitchen-study CNN checkpoint")
    return ckpt, json.loads(ckpt["meta"])


def _check_classes(meta: dict[str, Any], table: FrameTable, path: str | Path) -> None:
    if list(meta["classes"]) != list(table.card.classes):
        raise CheckpointMismatch(
            f"{path}: checkpoint was trained on {meta['dataset']!r} with "
            f"{len(meta['classes'])} classes; the table {table.card.name!r} has "
            f"{table.card.num_classes} different classes"
        )


def load_checkpoint(path: str | Path) -> tuple[FrameClassifier, dict[str, Any]]:
    """The trained model of a CNN checkpoint and its metadata (config, classes, split, ...)."""
    ckpt, meta = _read_checkpoint(path)
    model = build_model(
        meta["config"]["model"], len(meta["classes"]), None,
        transform_input=meta.get("transform_input"),
    )
    model.load_state_dict(ckpt["model"])
    model.eval()
    return model, meta


# -- inference and export ------------------------------------------------------------------


@torch.no_grad()
def _predict(
    model: FrameClassifier,
    source: FrameSource,
    videos: _Videos,
    which: np.ndarray,
    *,
    size: int,
    resize: int,
    batch_size: int,
    stride: int,
    workers: int,
    device: torch.device,
    amp: bool,
    channels_last: bool,
) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    was_training = model.training
    model.eval()
    ds = _EvalFrames(source, videos, which, size, resize, batch_size, stride)
    row_parts: list[np.ndarray] = []
    prob_parts: list[np.ndarray] = []
    padded: dict[str, int] = {}
    try:
        for item in _loader(ds, workers, device.type == "cuda"):
            if isinstance(item, _Failure):
                item.raise_()
            if isinstance(item, _Padded):
                padded[item.video] = item.frames
                continue
            rows, x = item
            x = x.to(device, non_blocking=True)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                logits = model(x)
            prob_parts.append(torch.softmax(logits.float(), dim=1).cpu().numpy())
            row_parts.append(rows.numpy())
    finally:
        model.train(was_training)
    c = model.num_classes
    rows = np.concatenate(row_parts) if row_parts else np.zeros(0, np.int64)
    probs = np.concatenate(prob_parts) if prob_parts else np.zeros((0, c), np.float32)
    return rows, probs.astype(np.float32, copy=False), padded


def export_features(
    model: FrameClassifier,
    table: FrameTable,
    source: FrameSource,
    out: str | Path,
    *,
    split: str,
    batch_size: int = 64,
    workers: int = 0,
    device: str | torch.device | None = "auto",
    amp: bool = True,
    channels_last: bool = True,
    table_fps: float | None = None,
    image_size: int | None = None,
    source_path: str | Path | None = None,
    description: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write ``table`` with the model's softmax for every frame in ``features`` to ``out``.

    Every video is decoded once, in batches through the model (never all frames in memory
    as images); the (frames, classes) float32 result is written by :func:`write_table`, so an
    error anywhere (a missing or broken video) leaves no file at ``out``. ``out`` must not be
    the input table (``source_path``). Returns a summary: frames, videos, dim, frames/s,
    padded frames per video (rule 3 of :mod:`trainables.frames`) and the softmax argmax
    accuracy (percent) on the split's train and test frames.
    """
    out = Path(out)
    if source_path is not None and out.resolve() == Path(source_path).resolve():
        raise DataError("export would overwrite its input table; write a new file", out)
    if model.num_classes != table.card.num_classes:
        raise CheckpointMismatch(
            f"model has {model.num_classes} outputs, table {table.card.name!r} has "
            f"{table.card.num_classes} classes"
        )
    dev = _device(device)
    cuda = dev.type == "cuda"
    model = model.to(dev)
    if channels_last and cuda:
        model = model.to(memory_format=torch.channels_last)
    size, resize = image_sizes(model.name, image_size)
    videos = _Videos.of(table, table_fps)
    start = time.perf_counter()
    rows, probs, padded = _predict(
        model, source, videos, np.arange(table.num_videos), size=size, resize=resize,
        batch_size=batch_size, stride=1, workers=workers, device=dev, amp=amp and cuda,
        channels_last=channels_last and cuda,
    )
    wall = time.perf_counter() - start
    features = np.empty((table.num_frames, model.num_classes), dtype=np.float32)
    seen = np.zeros(table.num_frames, dtype=bool)
    features[rows] = probs
    seen[rows] = True
    if not seen.all():  # cannot happen unless a reader skipped frames: never write a gap
        first = int(np.flatnonzero(~seen)[0])
        video = table.videos[int(np.searchsorted(table.offsets, first, side="right") - 1)]
        raise DataError(f"video {video!r}: frame rows were not produced (first row {first})")
    desc = {
        "kind": "cnn_softmax",
        "model": model.name,
        "split": split,
        "image_size": size,
        "table_fps": videos.table_fps,
        "padded_frames": int(sum(padded.values())),
        **(description or {}),
    }
    exported = table.with_features(features, desc)
    write_table(exported, out)
    train, test = table.split_indices(split)
    pred = features.argmax(1)
    return {
        "out": str(out),
        "videos": table.num_videos,
        "frames": table.num_frames,
        "dim": model.num_classes,
        "split": split,
        "frames_per_s": table.num_frames / wall if wall > 0 else 0.0,
        "padded": padded,
        "softmax_acc": {
            "train": _accuracy(pred, table, train),
            "test": _accuracy(pred, table, test),
        },
    }


def _rows_of(table: FrameTable, videos: np.ndarray, stride: int = 1) -> np.ndarray:
    parts = [np.arange(table.offsets[v], table.offsets[v + 1], stride) for v in np.asarray(videos)]
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)


def _accuracy(pred: np.ndarray, table: FrameTable, videos: np.ndarray) -> float | None:
    rows = _rows_of(table, videos)
    return float(np.mean(pred[rows] == table.labels[rows]) * 100.0) if rows.size else None


# -- the CNN + SVM baseline -----------------------------------------------------------------


def svm_baseline(
    table: FrameTable,
    split: str | int,
    *,
    max_train: int = 50_000,
    folds: int = 5,
    C: Sequence[float] = (0.1, 1.0, 10.0, 100.0),
    gamma: Sequence[float] = (0.01, 0.1, 1.0, 10.0),
    test_stride: int = 1,
    seed: int = 0,
    jobs: int = 1,
) -> dict[str, Any]:
    """Table 3's CNN baselines on a table's ``features`` (normally an exported softmax).

    "CNN + Softmax": argmax accuracy of the features on the split's test frames (only when
    the feature dimension equals the class count). "CNN + SVM": scikit-learn's RBF ``SVC``
    trained on ``max_train`` training frames sampled uniformly without replacement (all of
    them when fewer; the paper: 50,000), ``C`` and ``gamma`` chosen by ``folds``-fold grid
    search on that sample (stratified folds; plain shuffled folds when a class has fewer
    frames than folds), then refit on the whole sample and scored on every
    ``test_stride``-th test frame. Accuracies in percent.
    """
    from sklearn.model_selection import GridSearchCV, KFold, StratifiedKFold
    from sklearn.svm import SVC

    if table.features is None:
        raise DataError(
            f"table {table.card.name!r} has no features column: export the CNN softmax first "
            "(kitchen-study cnn export)"
        )
    name = table.card.split(split).name
    train, test = table.split_indices(name)
    rng = np.random.default_rng(seed)
    rows = _rows_of(table, train)
    if rows.size > max_train:
        rows = np.sort(rng.choice(rows, size=max_train, replace=False))
    x, y = table.features[rows], table.labels[rows].astype(np.int64)
    counts = np.bincount(y)
    counts = counts[counts > 0]
    if counts.size < 2:
        raise DataError(f"split {name}: the sampled training frames hold fewer than 2 classes")
    cv = (
        StratifiedKFold(folds, shuffle=True, random_state=seed)
        if counts.min() >= folds
        else KFold(folds, shuffle=True, random_state=seed)
    )
    search = GridSearchCV(
        SVC(kernel="rbf"), {"C": list(C), "gamma": list(gamma)}, cv=cv, n_jobs=jobs, refit=True
    )
    search.fit(x, y)
    test_rows = _rows_of(table, test, test_stride)
    pred = np.concatenate(
        [search.predict(table.features[test_rows[i : i + 20_000]])
         for i in range(0, test_rows.size, 20_000)]
    ) if test_rows.size else np.zeros(0, np.int64)
    gt = table.labels[test_rows]
    softmax = None
    if table.feature_dim == table.card.num_classes and test_rows.size:
        softmax = float(np.mean(table.features[test_rows].argmax(1) == gt) * 100.0)
    return {
        "split": name,
        "softmax_acc": softmax,
        "svm_acc": float(np.mean(pred == gt) * 100.0) if test_rows.size else None,
        "C": float(search.best_params_["C"]),
        "gamma": float(search.best_params_["gamma"]),
        "cv_acc": float(search.best_score_ * 100.0),
        "train_frames": int(rows.size),
        "test_frames": int(test_rows.size),
    }


# -- one job (what the CLI and the Ray Tune trainable run) ---------------------------------


class CNNSpec(CNNConfig):
    """One CNN job: :class:`CNNConfig` plus data, frames, schedule and export.

    ``frames_*`` build the :class:`~trainables.frames.FrameSource`; ``table_fps`` overrides
    the card's frame rate. ``eval_at``: iterations at which to measure test frame accuracy
    on every ``eval_stride``-th test frame. At the end, with ``export_path``, the softmax of
    every frame goes to that new table and the final ``frame_acc`` is the export's (all test
    frames); without it, a last evaluation at ``eval_stride``. ``num_cpus`` / ``num_gpus``
    are the Ray Tune request (and the thread count outside Tune).
    """

    table_path: str
    split: int | str = 1
    frames_root: str
    frames_kind: Literal["auto", "video", "folder"] = "auto"
    frames_pattern: str | None = None
    source_fps: float | None = Field(None, gt=0)
    table_fps: float | None = Field(None, gt=0)
    tail_tolerance: int = Field(5, ge=0)
    iterations: int = Field(1000, ge=0)
    iterations_per_step: int = Field(100, ge=1)
    eval_at: tuple[int, ...] = ()
    eval_stride: int = Field(1, ge=1)
    export_path: str | None = None
    export_batch: int = Field(64, ge=1)
    device: str | None = Field(None, description="cpu, cuda, cuda:N; None: cuda if available")
    num_cpus: float = Field(1, gt=0)
    num_gpus: float = Field(0, ge=0)

    @field_validator("eval_at", mode="before")
    @classmethod
    def _eval_at(cls, v: Any) -> Any:
        return parse_iterations(v)

    @model_validator(mode="after")
    def _schedule(self) -> CNNSpec:
        bad = [i for i in self.eval_at if not 1 <= i <= self.iterations]
        if bad:
            raise ValueError(f"eval_at {bad[0]} is outside 1..iterations ({self.iterations})")
        object.__setattr__(self, "eval_at", tuple(sorted(set(self.eval_at))))
        if self.frames_pattern is not None:
            FrameSource(Path("."), pattern=self.frames_pattern)  # checks the template
        return self

    def cnn_config(self) -> CNNConfig:
        return CNNConfig.model_validate(self.model_dump(include=set(CNNConfig.model_fields)))

    def frame_source(self) -> FrameSource:
        return FrameSource(
            resolve_trial_path(self.frames_root), self.frames_kind, self.frames_pattern,
            self.source_fps, self.tail_tolerance,
        )


class CNNRun:
    """One CNN job: ``step()`` until ``done`` (or ``run()``), ``save`` / ``load`` to resume.

    Each step trains up to ``iterations_per_step`` iterations, stopping exactly at the next
    ``eval_at`` point or the end, and returns ``iteration, loss, frames_per_s, data_wait,
    done``; at evaluation points and at the end also ``frame_acc`` (percent) and ``curve``
    (``{str(iteration): frame_acc}``); at the end with ``export_path`` also ``export`` (the
    :func:`export_features` summary).
    """

    def __init__(self, spec: CNNSpec, trainer: CNNTrainer):
        self.spec, self.trainer = spec, trainer
        self.curve: dict[str, float] = {}
        self.train_frames = 0
        self.train_seconds = 0.0
        self.exported: dict[str, Any] | None = None

    @classmethod
    def create(
        cls, spec: CNNSpec | Mapping[str, Any], device: str | torch.device | None = None,
        cpus: int | None = None,
    ) -> CNNRun:
        spec = CNNSpec.parse(spec)
        from data_prep.table import read_table

        table = read_table(resolve_trial_path(spec.table_path), features=False)
        try:
            table.card.split(spec.split if isinstance(spec.split, str) else int(spec.split))
        except KeyError as e:
            raise ConfigError(str(e.args[0])) from None
        trainer = CNNTrainer(
            spec.cnn_config(), table, spec.split, spec.frame_source(),
            device=spec.device or device or "auto", table_fps=spec.table_fps,
            cpus=cpus or max(1, int(spec.num_cpus)),
        )
        return cls(spec, trainer)

    @property
    def iteration(self) -> int:
        return self.trainer.iteration

    @property
    def done(self) -> bool:
        return self.trainer.iteration >= self.spec.iterations and (
            self.spec.export_path is None or self.exported is not None
        )

    def next_stop(self) -> int:
        it, spec = self.trainer.iteration, self.spec
        later = [e for e in spec.eval_at if e > it]
        return min([it + spec.iterations_per_step, spec.iterations, *later[:1]])

    def step(self) -> dict[str, Any]:
        n = max(self.next_stop() - self.trainer.iteration, 0)
        t0 = time.perf_counter()
        stats = self.trainer.train(n) if n else {"loss": float("nan"), "frames_per_s": 0.0,
                                                 "data_wait": 0.0}
        self.train_seconds += time.perf_counter() - t0
        self.train_frames += n * self.spec.batch_size
        it = self.trainer.iteration
        finished = it >= self.spec.iterations
        result: dict[str, Any] = {"iteration": it, **stats, "done": finished}
        if finished and self.spec.export_path is not None:
            self.trainer.close()  # free the training loader's workers before exporting
            self.exported = self.trainer.export(
                resolve_trial_path(self.spec.export_path), batch_size=self.spec.export_batch
            )
            result["export"] = self.exported
            result["frame_acc"] = self.exported["softmax_acc"]["test"]
        elif it in self.spec.eval_at or finished:
            result.update(self.trainer.evaluate(self.spec.eval_stride))
        if "frame_acc" in result:
            self.curve[str(it)] = result["frame_acc"]
            result["curve"] = dict(self.curve)
        return result

    def run(self, callback: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Step until done; the final result adds ``iterations`` and ``frames_per_s`` over
        all of this run's training."""
        result: dict[str, Any] = {}
        while not self.done:
            result = self.step()
            if callback is not None:
                callback(result)
        if "frame_acc" not in result:  # restored from a finished run: evaluate again
            result = {"iteration": self.iteration, "done": True,
                      **self.trainer.evaluate(self.spec.eval_stride), "curve": dict(self.curve)}
        result["iterations"] = self.trainer.iteration
        result["frames_per_s"] = (
            self.train_frames / self.train_seconds if self.train_seconds > 0 else 0.0
        )
        return result

    def save(self, path: str | Path) -> Path:
        return self.trainer.save(path, run={"spec": self.spec.model_dump(mode="json"),
                                            "curve": self.curve})

    def load(self, path: str | Path) -> None:
        meta = self.trainer.load(path)
        self.curve = {str(k): float(v) for k, v in (meta.get("run") or {}).get("curve", {}).items()}

    def close(self) -> None:
        self.trainer.close()
