"""The paper's first stage as a job: fine-tune a per-frame RGB CNN, export its softmax.

Pipeline (Perrett & Damen §5): (1) fine-tune an ImageNet CNN on the training frames of one
split, (2) write its softmax for **every** frame of the dataset into the frame table's
``features`` column (a new Parquet file per split), (3) the LSTM trains on that file.
Table 3's baselines come from the same export (:mod:`trainables.svm_baseline`).

Pure PyTorch, no Ray or MLflow: :class:`CNNTrainer` trains and evaluates,
:func:`export_features` writes the softmax table, :class:`CNNRun` is one job (what the Ray
Tune trainable :mod:`trainables.cnn_trainable` and the CLI :mod:`trainables.cnn_cli` run).
The model is :mod:`trainables.cnn_model`'s, the frame streams :mod:`trainables.cnn_data`'s,
the configs :mod:`trainables.cnn_config`'s. Iterations count optimiser steps (batches).

Devices
    :func:`trainables.job.resolve_device`: CUDA when asked for or (``auto``) available, else
    the CPU. On CUDA only: bf16 autocast (``amp``) and channels-last memory format
    (``channels_last``); on CPU both are off (bf16 autocast on CPU is slower than fp32 on
    most CPUs and would change results).

Checkpoints
    The shared self-describing file of :mod:`trainables.job` (format ``kitchen-study.cnn/1``):
    meta = config, dataset and classes (the label space), split, iteration, image sizes and
    the job's run state; state = weights, optimiser and torch RNG. Resuming restores all of
    them and restarts the data stream at an epoch seeded by the iteration. A file that is not
    a CNN checkpoint (empty, corrupt, an LSTM's) is a :class:`CheckpointError`; one trained on
    other classes or another model a :class:`CheckpointMismatch`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from data_prep.errors import DataError
from data_prep.table import FrameTable, read_table, write_table

from .cnn_config import CNNConfig, CNNSpec
from .cnn_data import EvalFrames, Failure, Padded, TrainFrames, Videos, make_loader
from .cnn_model import FrameClassifier, build_model, image_sizes
from .frames import FrameSource
from .job import (
    Checkpoint,
    CheckpointError,
    CheckpointMismatch,
    ConfigError,
    next_stop,
    read_checkpoint,
    resolve_device,
    resolve_trial_path,
    write_checkpoint,
)
from .svm_baseline import argmax_accuracy

__all__ = [
    "CHECKPOINT_FILE",
    "CHECKPOINT_FORMAT",
    "CNNRun",
    "CNNTrainer",
    "CheckpointError",
    "CheckpointMismatch",
    "ConfigError",
    "check_classes",
    "export_features",
    "load_checkpoint",
]

CHECKPOINT_FORMAT = "kitchen-study.cnn/1"
CHECKPOINT_FILE = "cnn.pt"


# -- training ----------------------------------------------------------------------------


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
        self.videos = Videos.of(table, table_fps)
        self.size, self.resize = image_sizes(cfg.model, cfg.image_size)
        self.device = resolve_device(device)
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
            ds = TrainFrames(
                self.source, self.videos, self.train_videos, self.cfg, self.size, self.resize,
                start_epoch=self.iteration,
            )
            self._loader = make_loader(ds, self.train_workers, self.cuda)
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
            if isinstance(item, Failure):
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
        frames = EvalFrames(self.source, self.videos, which, self.size, self.resize,
                            batch_size or self.cfg.batch_size, stride)
        return _predict(
            self.model, frames, workers=self.workers if workers is None else workers,
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
    def checkpoint(self, run: dict[str, Any] | None = None) -> Checkpoint:
        """The checkpoint: meta (config, classes, split, iteration, image sizes and ``run``:
        whatever the caller's loop needs to resume) and state (weights, optimiser, RNG)."""
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
        state = {
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "torch_rng": torch.get_rng_state(),
        }
        return Checkpoint(CHECKPOINT_FORMAT, meta, state)

    def save(self, path: str | Path, run: dict[str, Any] | None = None) -> Path:
        """Write the checkpoint atomically (loadable with ``torch.load(weights_only=True)``)."""
        return write_checkpoint(path, self.checkpoint(run))

    def load(self, path: str | Path) -> dict[str, Any]:
        """Restore weights, optimiser, iteration and RNG (the data stream restarts at an
        epoch seeded by the iteration); returns the checkpoint's metadata."""
        ckpt = read_checkpoint(path, CHECKPOINT_FORMAT)
        meta = ckpt.meta
        check_classes(meta, self.table, path)
        if meta["config"]["model"] != self.cfg.model:
            raise CheckpointMismatch(
                f"{path}: checkpoint holds a {meta['config']['model']} model, the config asks "
                f"for {self.cfg.model}"
            )
        self.model.load_state_dict(ckpt.state["model"])
        self.optimizer.load_state_dict(ckpt.state["optimizer"])
        torch.set_rng_state(ckpt.state["torch_rng"])
        self.iteration = int(meta["iteration"])
        self.close()
        return meta

    def close(self) -> None:
        """Stop the data-loader workers (a new stream starts on the next ``train``)."""
        self._stream = None
        self._loader = None


def check_classes(meta: dict[str, Any], table: FrameTable, path: str | Path) -> None:
    """A :class:`CheckpointMismatch` unless the checkpoint was trained on ``table``'s classes."""
    if list(meta["classes"]) != list(table.card.classes):
        raise CheckpointMismatch(
            f"{path}: checkpoint was trained on {meta['dataset']!r} with "
            f"{len(meta['classes'])} classes; the table {table.card.name!r} has "
            f"{table.card.num_classes} different classes"
        )


def load_checkpoint(path: str | Path) -> tuple[FrameClassifier, dict[str, Any]]:
    """The trained model of a CNN checkpoint and its metadata (config, classes, split, ...)."""
    ckpt = read_checkpoint(path, CHECKPOINT_FORMAT)
    meta = ckpt.meta
    model = build_model(
        meta["config"]["model"], len(meta["classes"]), None,
        transform_input=meta.get("transform_input"),
    )
    model.load_state_dict(ckpt.state["model"])
    model.eval()
    return model, meta


# -- inference and export ------------------------------------------------------------------


@torch.no_grad()
def _predict(
    model: FrameClassifier,
    frames: EvalFrames,
    *,
    workers: int,
    device: torch.device,
    amp: bool,
    channels_last: bool,
) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """(rows, softmax (len(rows), C), padded frames per video) of the batches of ``frames``
    (every ``stride``-th frame of its videos, centre-cropped) through ``model``."""
    was_training = model.training
    model.eval()
    row_parts: list[np.ndarray] = []
    prob_parts: list[np.ndarray] = []
    padded: dict[str, int] = {}
    try:
        for item in make_loader(frames, workers, device.type == "cuda"):
            if isinstance(item, Failure):
                item.raise_()
            if isinstance(item, Padded):
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
    dev = resolve_device(device)
    cuda = dev.type == "cuda"
    model = model.to(dev)
    if channels_last and cuda:
        model = model.to(memory_format=torch.channels_last)
    size, resize = image_sizes(model.name, image_size)
    videos = Videos.of(table, table_fps)
    start = time.perf_counter()
    frames = EvalFrames(source, videos, np.arange(table.num_videos), size, resize,
                        batch_size, stride=1)
    rows, probs, padded = _predict(
        model, frames, workers=workers, device=dev, amp=amp and cuda,
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
    bad = np.flatnonzero(~np.isfinite(features).all(axis=1))
    if bad.size:  # a diverged or corrupt model: refuse before anything is written
        row = int(bad[0])
        i = int(np.searchsorted(table.offsets, row, side="right")) - 1
        raise DataError(
            f"video {table.videos[i]!r} frame {row - int(table.offsets[i])}: the model's "
            f"softmax is not finite ({features[row][~np.isfinite(features[row])][0]}; "
            f"{bad.size} frame(s) in all): the CNN diverged or its weights are corrupt; "
            "nothing written", out)
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
            "train": argmax_accuracy(pred, table, train),
            "test": argmax_accuracy(pred, table, test),
        },
    }


# -- one job (what the CLI and the Ray Tune trainable run) ---------------------------------


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
        spec = self.spec
        return next_stop(
            self.trainer.iteration, spec.iterations, spec.iterations_per_step, spec.eval_at
        )

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
