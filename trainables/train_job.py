"""Training and evaluation of any registered temporal model in plain PyTorch (no Ray, no
MLflow). The job never names a concrete model: it reaches the network and its rules through
:data:`trainables.temporal.MODELS` (the paper's LSTM, MS-TCN, ...).

Layers, from the inside out:

- :class:`~trainables.train_config.TrainConfig`: the model (``model``, by ``kind``) and the
  optimisation (batch, Adam's lr, seed, clip, joint ratio). :class:`TrainSpec` adds what one
  training job needs (data, split, mode, arrangement, iterations, evaluation points) and is
  the config of the study's trial and of ``kitchen-study train``. Both are validated: an
  unknown key or a bad value raises :class:`ConfigError` naming it.
- :class:`~trainables.split_data.SplitData` (its own module): a frame table and one of its
  splits, resident on the training device.
- :class:`Trainer`: a model, its optimiser and sampler in one label arrangement;
  ``train(n)``, ``evaluate()``, ``state_dict()`` / ``restore(checkpoint)`` /
  ``init_from(checkpoint)`` (weight transfer).
- :class:`TrainRun`: one job as the CLI and the trial run it — (pre-training,) training
  in steps that stop exactly at the requested evaluation points, evaluation, checkpoints.

**Samples.** A batch holds ``batch_size`` samples of the model's training window
(:meth:`~trainables.temporal.ModelKind.train_window`: the LSTM's ``history``; a whole video,
or a crop of ``window`` frames, for MS-TCN), drawn by :mod:`trainables.sampler`; shorter
videos are padded at the end with masked labels. The loss is the model's own
(``model.loss``: cross-entropy for the LSTM; stage-wise cross-entropy plus T-MSE for MS-TCN).

**Inputs.** A dataset whose feature dimension equals its class count is taken to hold class
scores (a CNN's or simulated softmax): its features are mapped into the run's joint label
space with the arrangement's maps, exactly like its labels. Any other features (e.g. I3D)
pass through unchanged; a run mixing datasets then needs the same feature dimension on both
sides, and mixing a class-score dataset with a non-class-score one is an error.

**Modes.** ``none``: train on the target from a random init, in the target's own space.
``joint``: every batch mixes target and source subsequences at ``joint_ratio`` (5:3 by
default) in the arrangement's joint space. ``transfer``: fine-tune on the target in the joint
space starting from a checkpoint (``init_checkpoint``), or from a pre-training on the source
run first (``pretrain_iterations``). ``pretrain``: the pre-training alone, on the source
(``source_path``), saved for later ``transfer`` runs: in the source's own label space
(reusable for every target), except for ``multiple_random``, which pre-trains in the joint
space with its k maps (one per subsequence) and so belongs to that target.

**Weight transfer** (:meth:`Trainer.init_from`). A checkpoint in the run's own arrangement
loads wholesale. A checkpoint in the source's own space is copied in through
``source_maps[0]``: along the parameter axes the model declares
(:meth:`~trainables.temporal.ModelKind.transfer_axes`: for the LSTM the layer-0 input columns
when features are mapped and the head's output rows; for MS-TCN every stage's class rows and
class-softmax input columns), source index j goes to joint index ``source_maps[0][j]``; every
other parameter as it is; every other row and column keeps the fresh initialisation.
Anything else raises :class:`CheckpointMismatch`. Fine-tuning starts a fresh Adam at the same
learning rate (as the paper does).

**Evaluation** feeds each test video as the model says
(:meth:`~trainables.temporal.ModelKind.eval_window`): the LSTM streams, causally, with its
state carried (in chunks, batched over videos sorted by length; a video leaves the batch when
it ends), optionally resetting the state every ``history`` frames (``eval_reset``); MS-TCN
takes each whole video (masked in a batch). It predicts
among the evaluated dataset's own classes only (argmax over ``restrict(logits, its map)``).
Metrics are :func:`trainables.metrics.evaluate`'s, in percent; edit and F1 count every class,
the background included, on every dataset (:func:`trainables.metrics.segment_background`: the
one rule, as MS-TCN's published Breakfast numbers count ``SIL``); ``input_acc`` is the frame
accuracy of the argmax of the input features alone (the paper's "CNN" column), or None when
the features are not class scores.

**Checkpoints** are the shared self-describing file of :mod:`trainables.job` (format
``kitchen-study.temporal/1``; ``kitchen-study.lstm/1`` files of earlier versions read too):
meta = config, arrangement with both label spaces, model shape, iteration, run state;
state = model and Adam state, the CPU generator that draws the batches and the model's own
RNG state (dropout). They load with ``torch.load(weights_only=True)`` (no arbitrary
unpickling); a file that is not a temporal model's checkpoint (empty, corrupt, a CNN's) is a
:class:`CheckpointError`. Restoring one reproduces the uninterrupted run exactly on a CPU
(same config, seed and thread count).

**Poisoned numbers are refused.** A loss that becomes NaN or infinite stops training with
:class:`NonFiniteLoss` (``non-finite loss at iteration N``; the losses stay on the device and
are checked at the one host sync per :meth:`Trainer.train` call, so the check costs nothing
per step); a Ray trial then ends FAILED with that reason and its numbers never become a
result. At job start (:meth:`TrainRun.create`) a training window (``history``) longer than every
training video
of a dataset that feeds the batches is a :class:`ConfigError` naming the longest video, and so
is (in :class:`Trainer`, before the model exists) a batch whose
:func:`memory_estimate` exceeds the device's memory.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from data_prep.table import read_card

from .arrangements import ARRANGEMENTS, Arrangement, LabelSpace, make_arrangement, restrict
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
from .metrics import evaluate as evaluate_metrics
from .metrics import frame_accuracy, segment_background
from .sampler import SamplerPart, SubsequenceSampler, split_batch, window_index
from .split_data import SplitData
from .temporal import ModelKind, kind_of
from .train_config import TrainConfig, TrainSpec

__all__ = [
    "CHECKPOINT_FORMAT",
    "Batches",
    "Checkpoint",
    "CheckpointError",
    "CheckpointMismatch",
    "ConfigError",
    "ModelCheckpoint",
    "TrainConfig",
    "NonFiniteLoss",
    "TrainRun",
    "TrainSpec",
    "Trainer",
    "load_checkpoint",
    "memory_estimate",
    "save_checkpoint",
]

#: the checkpoint format of every temporal model's job; ``kitchen-study.lstm/1`` files (written
#: before models were plug-ins, with flat LSTM configs) read as the same thing
CHECKPOINT_FORMAT = "kitchen-study.temporal/1"
LEGACY_FORMATS = ("kitchen-study.lstm/1",)
PRETRAIN_KEYS = ("pretrain_iterations", "pretrain_loss", "pretrain_seconds")
#: which data feeds a :class:`Trainer`'s batches
Batches = Literal["target", "joint", "source"]


class NonFiniteLoss(ValueError):
    """The training loss became NaN or infinite (diverged, or poisoned inputs)."""


def memory_estimate(config: TrainConfig, input_dim: int, num_classes: int,
                    window: int) -> int:
    """Bytes one training step of ``config`` needs at least: its model's own formula
    (:meth:`trainables.temporal.ModelKind.memory_estimate`) at ``config.batch_size`` samples
    of ``window`` frames."""
    return kind_of(config.model).memory_estimate(config.model, input_dim, num_classes,
                                                 config.batch_size, window)


def device_memory(device: torch.device) -> int:
    """Total memory of ``device`` in bytes (the machine's RAM for the CPU)."""
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def _gib(n: float) -> str:
    return f"{n / 2**30:,.1f} GiB"


def _space_str(s: LabelSpace | None) -> str:
    return "none" if s is None else f"{s.name!r} ({s.size} classes)"


def _arrangement_str(a: Arrangement) -> str:
    src = f" + source {_space_str(a.source)}" if a.source is not None else ""
    return f"{a.kind} arrangement of target {_space_str(a.target)}{src}, dim {a.dim}"


# -- checkpoints ---------------------------------------------------------------------------


@dataclass
class ModelCheckpoint(Checkpoint):
    """The shared checkpoint file (:class:`trainables.job.Checkpoint`) of a temporal model's
    job, with typed views of its meta."""

    @property
    def arrangement(self) -> Arrangement:
        """Both label spaces and the maps the model was trained in."""
        return Arrangement.from_dict(self.meta["arrangement"])

    @property
    def config(self) -> TrainConfig:
        """The model and optimisation config (flat legacy configs included)."""
        return TrainConfig.parse(self.meta["config"])

    @property
    def space(self) -> LabelSpace:
        """The label space the model's outputs live in when it is a single-dataset model."""
        return self.arrangement.target


def save_checkpoint(path: str | Path, checkpoint: Checkpoint) -> Path:
    """Write an LSTM checkpoint atomically (:func:`trainables.job.write_checkpoint`)."""
    return write_checkpoint(path, checkpoint)


def load_checkpoint(path: str | Path) -> ModelCheckpoint:
    """Read a temporal model's checkpoint onto the CPU; anything else is a
    :class:`CheckpointError`."""
    c = read_checkpoint(path, CHECKPOINT_FORMAT, LEGACY_FORMATS)
    return ModelCheckpoint(c.format, c.meta, c.state, c.path)


# -- the trainer ---------------------------------------------------------------------------


@dataclass
class TrainStats:
    """What :meth:`Trainer.train` did. ``frames`` counts batch × history per iteration
    (padding of short videos included): the frames the model processed."""

    iterations: int
    loss: float | None
    frames: int
    seconds: float

    @property
    def frames_per_s(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


class Trainer:
    """A temporal model (from the registry), its Adam optimiser and batch sampler in one
    label arrangement.

    ``batches`` says which data feeds the batches: ``"target"`` the target alone (in
    ``arrangement``'s space, through ``target_map``); ``"joint"`` target and source mixed
    at ``config.joint_ratio``; ``"source"`` the source alone through all of its
    ``source_maps`` (multiple_random pre-training). Evaluation is on the trained dataset's
    test split (``target``'s, or ``source``'s with ``"source"`` batches, through map 0).
    """

    def __init__(
        self,
        config: TrainConfig,
        arrangement: Arrangement,
        target: SplitData | None,
        source: SplitData | None = None,
        *,
        batches: Batches = "target",
        device: torch.device | str | None = None,
    ):
        self.config = TrainConfig.parse(config).train_config()
        self.kind: ModelKind = kind_of(self.config.model)
        self.arrangement = arrangement
        self.batches = batches
        self.device = resolve_device(device) if device is not None else (
            (target or source).features.device  # type: ignore[union-attr]
        )
        a = arrangement
        if batches not in ("target", "joint", "source"):
            raise ValueError(f"unknown trainer batches {batches!r} (target, joint or source)")
        if batches in ("target", "joint"):
            if target is None:
                raise ValueError(f"{batches!r} batches need target data")
            if not target.space.same_vocabulary(a.target):
                raise ConfigError(
                    f"target data {target.describe()} is not the arrangement's target "
                    f"({_arrangement_str(a)})"
                )
        if batches in ("joint", "source"):
            if source is None or a.source is None:
                raise ValueError(f"{batches!r} batches need source data and arrangement")
            if not source.space.same_vocabulary(a.source):
                raise ConfigError(
                    f"source data {source.describe()} is not the arrangement's source "
                    f"({_arrangement_str(a)})"
                )
        if batches == "joint" and min(self.config.joint_ratio) == 0:
            raise ConfigError(f"joint batches need both sides of joint_ratio positive, got "
                              f"{self.config.joint_ratio[0]}:{self.config.joint_ratio[1]}")
        used = [d for d in ((target if batches != "source" else None),
                            (source if batches != "target" else None)) if d is not None]
        if len({d.mapped for d in used}) > 1:
            raise ConfigError(
                "one dataset's features are class scores (dim == classes) and the other's are "
                "not: " + ", ".join(f"{d.describe()} dim {d.feature_dim}" for d in used)
            )
        if len({d.feature_dim for d in used if not d.mapped}) > 1:
            raise ConfigError(
                "features that are not class scores pass through unchanged, so both datasets "
                "need the same feature dimension: "
                + ", ".join(f"{d.describe()} dim {d.feature_dim}" for d in used)
            )
        self.feature_mapped = used[0].mapped
        self.input_dim = a.dim if self.feature_mapped else used[0].feature_dim
        self.num_classes = a.dim

        def part(data: SplitData, maps: np.ndarray) -> SamplerPart:
            maps = np.atleast_2d(maps)
            return SamplerPart(
                features=data.features, labels=data.labels, offsets=data.table.offsets,
                videos=data.train, label_maps=maps,
                feature_maps=maps if self.feature_mapped else None,
            )

        if batches == "target":
            parts, counts = [part(target, a.target_map)], [self.config.batch_size]
        elif batches == "joint":
            parts = [part(target, a.target_map), part(source, a.source_maps)]
            counts = split_batch(self.config.batch_size, self.config.joint_ratio)
        else:
            parts, counts = [part(source, a.source_maps)], [self.config.batch_size]
        self.eval_data = target if batches != "source" else source
        self.eval_map = np.asarray(a.target_map if batches != "source" else a.source_maps[0])

        c = self.config
        lengths = [np.diff(np.asarray(d.table.offsets))[d.train] for d in used]
        longest = max((int(n.max()) for n in lengths if len(n)), default=1)
        #: frames per training sample (the LSTM's history; a whole video for MS-TCN)
        self.window = self.kind.train_window(c.model, longest)
        need = memory_estimate(c, self.input_dim, self.num_classes, self.window)
        have = device_memory(self.device)
        if need > have:  # before the model exists: its parameters alone may not fit
            shape = ", ".join(f"{k} {getattr(c.model, k)}" for k in self.kind.shape_fields)
            raise ConfigError(
                f"batch_size {c.batch_size} x {self.window} frames of a {self.kind.name} "
                f"({shape}) needs at least {_gib(need)} per training step "
                f"({self.kind.name}'s memory_estimate), but {self.device} has {_gib(have)}"
            )
        init_seed, sample_seed, model_seed = np.random.SeedSequence(
            self.config.seed).generate_state(3)
        # a private RNG for the init, so constructing a trainer never disturbs global state
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(init_seed))
            self.model = self.kind.build(c.model, self.input_dim, self.num_classes)
        self.model.to(self.device)
        self.generator = torch.Generator().manual_seed(int(sample_seed))
        # the model's own randomness (MS-TCN's dropout) draws from torch's global RNG: a
        # private state, swapped in while training and saved in checkpoints, keeps runs
        # deterministic and resumes exact whatever else uses that RNG
        self._model_rng = torch.Generator().manual_seed(int(model_seed)).get_state()
        self.sampler = SubsequenceSampler(
            parts, counts, self.window, a.dim, self.generator
        )
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=self.config.lr)
        self.iteration = 0
        self._input_acc: float | None | bool = False  # False: not computed yet

    # -- training ----------------------------------------------------------------------
    def train(self, iterations: int, tick: Callable[[int], None] | None = None) -> TrainStats:
        """Run ``iterations`` optimiser steps; the mean loss over them and the throughput.
        ``tick(iteration)`` after every step: a caller's wall-clock progress (it must be
        cheap; it sees no loss, which would cost a host sync per step)."""
        self.model.train()
        losses = torch.empty(iterations, device=self.device)
        start = time.perf_counter()
        with torch.random.fork_rng(devices=[]):
            torch.set_rng_state(self._model_rng)
            for i in range(iterations):
                losses[i] = self._step()
                self.iteration += 1
                if tick is not None:
                    tick(self.iteration)
            self._model_rng = torch.get_rng_state()
        mean = losses.mean().item() if iterations else None  # the one host sync
        if mean is not None and not math.isfinite(mean):
            bad = int(torch.nonzero(~torch.isfinite(losses))[0].item())
            raise NonFiniteLoss(
                f"non-finite loss at iteration {self.iteration - iterations + bad + 1} "
                f"({losses[bad].item()}); lower lr, set clip, or check the input features"
            )
        seconds = time.perf_counter() - start
        frames = iterations * self.config.batch_size * self.window
        return TrainStats(iterations, mean, frames, seconds)

    def _step(self) -> torch.Tensor:
        """One optimiser step on a fresh batch; the loss, on the device (no host sync)."""
        model, opt = self.model, self.optimizer
        batch = self.sampler.sample()
        # the model's own objective; padded frames carry IGNORE labels
        loss = model.loss(batch.x, batch.y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), self.config.clip)
        opt.step()
        return loss.detach()

    # -- evaluation --------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, data: SplitData | None = None, videos: np.ndarray | None = None,
                label_map: np.ndarray | None = None) -> list[np.ndarray]:
        """Predictions (in ``data``'s own class indices) per video, fed as the model's
        :meth:`~trainables.temporal.ModelKind.eval_window` says: the LSTM streams each video
        in chunks with its state carried (causal), MS-TCN takes whole videos.

        Defaults: the evaluated dataset's test videos through its map.
        """
        data = self.eval_data if data is None else data
        videos = data.test if videos is None else np.asarray(videos, dtype=np.int64)
        label_map = self.eval_map if label_map is None else np.asarray(label_map)
        cfg, model, dev = self.config, self.model, self.device
        model.eval()
        fmap = torch.as_tensor(np.array(label_map, dtype=np.int64), device=dev)
        from .arrangements import map_features  # local: only evaluation of mapped inputs

        identity = self.feature_mapped and len(label_map) == self.num_classes and bool(
            np.array_equal(label_map, np.arange(self.num_classes))
        )
        offsets = data.table.offsets
        lengths = np.diff(offsets)[videos]
        order = np.argsort(-lengths, kind="stable")  # longest first: active videos = a prefix
        chunk, carry = self.kind.eval_window(cfg.model)
        pred_flat = torch.zeros(data.table.num_frames, dtype=torch.int64, device=dev)
        # a model fed whole videos sees each alone: padding a shorter video to its batch's
        # longest would leak into its last frames through a non-causal model's convolutions
        per_batch = cfg.eval_batch if chunk is not None else 1
        for lo in range(0, len(order), per_batch):
            sel = videos[order[lo : lo + per_batch]]
            lens = np.diff(offsets)[sel]
            first_d = torch.as_tensor(offsets[:-1][sel], device=dev)
            lens_d = torch.as_tensor(lens, device=dev)
            state = None
            width = int(lens[0]) if chunk is None else chunk
            for t0 in range(0, int(lens[0]), width):
                active = int(np.count_nonzero(lens > t0))
                if not carry:
                    state = None
                elif state is not None:  # videos that ended leave the batch (a prefix stays)
                    state = model.narrow_state(state, active)
                idx, valid = window_index(first_d[:active], lens_d[:active], t0, width)
                x = data.features[idx]
                if self.feature_mapped and not identity:
                    x = map_features(x, fmap, self.num_classes)
                logits, state = model(x, state, valid)
                pred = restrict(logits, fmap).argmax(-1)
                pred_flat[idx[valid]] = pred[valid]
        flat = pred_flat.cpu().numpy()
        return [flat[offsets[v] : offsets[v + 1]] for v in videos]

    def input_accuracy(self) -> float | None:
        """Frame accuracy (%) of the input features' argmax on the test split; None when the
        features are not class scores."""
        if self._input_acc is False:
            data = self.eval_data
            if not data.mapped:
                self._input_acc = None
            else:
                feats = data.table.features
                rows = np.concatenate(
                    [np.arange(data.table.offsets[v], data.table.offsets[v + 1]) for v in data.test]
                )
                pred = feats[rows].argmax(axis=1)
                gt = data.table.labels[rows].astype(np.int64)
                self._input_acc = float(frame_accuracy(pred, gt))
        return self._input_acc  # type: ignore[return-value]

    def evaluate(self, videos: np.ndarray | None = None) -> dict[str, float | None]:
        """``frame_acc, edit, f1@10, f1@25, f1@50`` (percent) and ``input_acc`` on the
        evaluated dataset's test videos (or ``videos``, e.g. its validation part)."""
        data = self.eval_data
        videos = data.test if videos is None else np.asarray(videos, dtype=np.int64)
        if videos is not data.test:
            return self._evaluate_videos(videos)
        preds = self.predict()
        gts = [data.table.video_labels(v).astype(np.int64) for v in data.test]
        metrics = evaluate_metrics(preds, gts, background=segment_background(data.space.classes))
        out: dict[str, float | None] = {k: float(v) for k, v in metrics.items()}
        out["input_acc"] = self.input_accuracy()
        return out

    def _evaluate_videos(self, videos: np.ndarray) -> dict[str, float | None]:
        data = self.eval_data
        preds = self.predict(videos=videos)
        gts = [data.table.video_labels(v).astype(np.int64) for v in videos]
        metrics = evaluate_metrics(preds, gts, background=segment_background(data.space.classes))
        out: dict[str, float | None] = {k: float(v) for k, v in metrics.items()}
        if data.mapped:
            pred = np.concatenate([data.table.features[data.table.offsets[v]:
                                                       data.table.offsets[v + 1]].argmax(1)
                                   for v in videos])
            out["input_acc"] = float(frame_accuracy(pred, np.concatenate(gts)))
        else:
            out["input_acc"] = None
        return out

    # -- state -------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """The JSON-able half of a checkpoint."""
        return {
            "config": self.config.model_dump(mode="json"),
            "arrangement": self.arrangement.to_dict(),
            "batches": self.batches,
            "input_dim": self.input_dim,
            "num_classes": self.num_classes,
            "feature_mapped": self.feature_mapped,
            "iteration": self.iteration,
            "torch": torch.__version__,
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "optimizer": _to_cpu(self.optimizer.state_dict()),
            "generator": self.generator.get_state(),
            "model_rng": self._model_rng,
        }

    def checkpoint(self, **extra: Any) -> ModelCheckpoint:
        meta = self.describe()
        meta.update(extra)
        return ModelCheckpoint(CHECKPOINT_FORMAT, meta, self.state_dict())

    def _check_shape(self, ckpt: ModelCheckpoint) -> None:
        theirs, ours = ckpt.config.model, self.config.model
        if theirs.kind != ours.kind:
            raise CheckpointMismatch(
                f"{ckpt.where()} holds a {theirs.kind} model; this run trains a {ours.kind}")
        diffs = [
            f"{k} {getattr(theirs, k)!r} vs {getattr(ours, k)!r}"
            for k in self.kind.shape_fields
            if getattr(theirs, k) != getattr(ours, k)
        ]
        if bool(ckpt.meta["feature_mapped"]) != self.feature_mapped:
            diffs.append("inputs are class scores in one and raw features in the other")
        if diffs:
            raise CheckpointMismatch(
                f"{ckpt.where()} has another model shape (checkpoint vs this run): "
                + "; ".join(diffs)
            )

    def restore(self, ckpt: ModelCheckpoint) -> None:
        """Resume exactly: model, optimiser, sampler RNG and iteration from ``ckpt``."""
        self._check_shape(ckpt)
        theirs = ckpt.arrangement
        if not theirs.same_joint_space(self.arrangement) or (
            int(ckpt.meta["input_dim"]) != self.input_dim
        ):
            raise CheckpointMismatch(
                f"{ckpt.where()} was trained in the {_arrangement_str(theirs)} with "
                f"input dim {ckpt.meta['input_dim']}; this run uses the "
                f"{_arrangement_str(self.arrangement)} with input dim {self.input_dim}"
            )
        self.model.load_state_dict(ckpt.state["model"])
        self.optimizer.load_state_dict(ckpt.state["optimizer"])
        self.generator.set_state(ckpt.state["generator"])
        if "model_rng" in ckpt.state:  # absent from checkpoints of earlier versions
            self._model_rng = ckpt.state["model_rng"]
        self.iteration = ckpt.iteration

    def init_from(self, ckpt: ModelCheckpoint) -> str:
        """Initialise the weights from a (pre-trained) checkpoint; see the module docstring.

        Returns how: ``"same-space"`` or ``"source-map"``. The optimiser, sampler and
        iteration count are left as they are (fine-tuning starts fresh)."""
        self._check_shape(ckpt)
        theirs = ckpt.state["model"]
        a, ca = self.arrangement, ckpt.arrangement
        if ca.same_joint_space(a):
            if int(ckpt.meta["input_dim"]) != self.input_dim:
                raise CheckpointMismatch(
                    f"{ckpt.where()} has input dim {ckpt.meta['input_dim']}, this run "
                    f"{self.input_dim}"
                )
            self.model.load_state_dict(theirs)
            return "same-space"
        single = ca.source is None
        if not (single and ca.target.same_vocabulary(a.source)):
            expected = (
                f"the same arrangement or the source's own space {_space_str(a.source)}"
                if a.source is not None
                else f"the same label space {_space_str(a.target)}"
            )
            raise CheckpointMismatch(
                f"{ckpt.where()} was trained in the {_arrangement_str(ca)}; "
                f"this run ({_arrangement_str(a)}) can load only {expected}"
            )
        smap = torch.as_tensor(np.array(a.source_maps[0], dtype=np.int64))
        ours = {k: v.detach().clone().cpu() for k, v in self.model.state_dict().items()}
        axes = self.kind.transfer_axes(self.config.model)
        for key, value in theirs.items():
            axis, by = axes.get(key, (None, None))
            if axis is not None and (by == "classes" or self.feature_mapped):
                # source index j (a class, or a class-score input) -> joint index smap[j]
                ours[key].index_copy_(axis, smap, value)
            elif key not in ours or ours[key].shape != value.shape:
                need = tuple(ours[key].shape) if key in ours else "no such parameter"
                raise CheckpointMismatch(
                    f"{ckpt.where()}: parameter {key} has shape {tuple(value.shape)}, this run "
                    f"needs {need}"
                )
            else:
                ours[key] = value
        self.model.load_state_dict(ours)
        return "source-map"


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_cpu(v) for v in obj]
    return obj


# -- one job -------------------------------------------------------------------------------


def _check_window(spec: TrainSpec, target: SplitData | None, source: SplitData | None
                  ) -> None:
    """The model's training window (the LSTM's ``history``) against the training videos of
    the datasets that feed the batches: a window no video fills is a typo, not a setting."""
    kind = kind_of(spec.model)
    feeds = {"none": [target], "transfer": [target, source], "joint": [target, source],
             "pretrain": [source]}[spec.mode]
    for data in feeds:
        if data is None:
            continue
        lengths = np.diff(np.asarray(data.table.offsets))[data.train]
        longest = int(lengths.max()) if len(lengths) else 0
        window = kind.train_window(spec.model, longest)
        if window > longest:
            raise ConfigError(
                f"{kind.window_field} {window} is longer than every training video of "
                f"{data.describe()} (the longest has {longest} frames)"
            )



@dataclass
class TrainRun:
    """One training job (see the module docstring): ``step()`` until ``done``.

    Each step trains up to ``iterations_per_step`` iterations, stopping exactly at the next
    ``eval_at`` point or the end, and returns ``iteration, loss, frames_per_s, done``; at an
    evaluation point and at the end also ``frame_acc, input_acc, edit, f1@10, f1@25, f1@50``
    and ``curve`` (``{str(iteration): frame_acc}`` of every evaluation so far). The first
    step of a transfer run without ``init_checkpoint`` pre-trains first and adds
    ``pretrain_iterations, pretrain_loss, pretrain_seconds``.
    """

    spec: TrainSpec
    device: torch.device
    trainer: Trainer
    target: SplitData | None
    source: SplitData | None
    init: ModelCheckpoint | None = None
    curve: dict[str, float] = field(default_factory=dict)
    started: bool = False
    init_how: str | None = None
    train_frames: int = 0
    train_seconds: float = 0.0
    #: ``tick(phase, iteration)`` after every optimiser step, ``phase`` "pretrain" (a transfer
    #: run's source pre-training) or "train": wall-clock progress for a command line
    tick: Callable[[str, int], None] | None = None
    #: validation: the best validation evaluation so far (iteration, val frame_acc) and its
    #: weights (CPU), the model a finished run reports
    best: dict[str, Any] | None = None
    best_state: dict[str, torch.Tensor] | None = None

    @classmethod
    def create(cls, spec: TrainSpec | Mapping[str, Any], device: str | torch.device | None = None
               ) -> TrainRun:
        spec = TrainSpec.parse(spec)
        device = resolve_device(spec.device if spec.device is not None else device)
        mode, kind = spec.mode, spec.arrangement_kind
        init = (
            load_checkpoint(resolve_trial_path(spec.init_checkpoint))
            if spec.init_checkpoint
            else None
        )
        source = (
            SplitData.load(resolve_trial_path(spec.source_path), spec.source_split, device,
                           validation=spec.validation == "people")
            if spec.source_path is not None
            else None
        )
        if mode == "pretrain":
            target_space = LabelSpace.from_card(read_card(resolve_trial_path(spec.target_path)))
            target = None
        else:
            target = SplitData.load(resolve_trial_path(spec.target_path), spec.target_split,
                                    device, validation=spec.validation == "people")
            target_space = target.space
        cfg = spec.train_config()
        assert mode == "none" or source is not None or init is not None
        _check_window(spec, target, source)
        if mode == "none":
            trainer = Trainer(cfg, make_arrangement("identity", target_space), target)
        else:
            if source is not None:
                source_space = source.space
            else:  # transfer from a checkpoint alone: its source space comes from the checkpoint
                ca = init.arrangement  # type: ignore[union-attr]
                source_space = ca.target if ca.source is None else ca.source
            arr = make_arrangement(
                kind, target_space, source_space, seed=spec.arrangement_seed, k=spec.arrangement_k
            )
            if mode == "joint":
                trainer = Trainer(cfg, arr, target, source, batches="joint")
            elif mode == "transfer":
                trainer = Trainer(cfg, arr, target)
            elif ARRANGEMENTS[kind].multi:  # pretrain in the joint space with the k maps
                trainer = Trainer(cfg, arr, None, source, batches="source")
            else:  # pretrain in the source's own space: reusable for every target
                trainer = Trainer(cfg, make_arrangement("identity", source_space), source)
        return cls(spec=spec, device=device, trainer=trainer, target=target, source=source,
                   init=init)

    @property
    def iteration(self) -> int:
        return self.trainer.iteration

    @property
    def done(self) -> bool:
        return self.started and self.trainer.iteration >= self.spec.iterations

    def _start(self) -> dict[str, Any]:
        """Initialise from ``init_checkpoint`` or by pre-training (transfer); once."""
        out: dict[str, Any] = {}
        spec = self.spec
        if self.init is not None:
            self.init_how = self.trainer.init_from(self.init)
        elif spec.mode == "transfer":
            kind = spec.arrangement_kind
            cfg = spec.train_config()
            a = self.trainer.arrangement
            if ARRANGEMENTS[kind].multi:
                pre = Trainer(cfg, a, None, self.source, batches="source")
            else:
                pre = Trainer(cfg, make_arrangement("identity", a.source), self.source)
            n = spec.pretrain_iterations or spec.iterations
            tick = self.tick
            stats = pre.train(n, None if tick is None else lambda it: tick("pretrain", it))
            self.init_how = self.trainer.init_from(pre.checkpoint())
            out = dict(zip(PRETRAIN_KEYS, (n, stats.loss, stats.seconds), strict=True))
        self.started = True
        return out

    def next_stop(self) -> int:
        spec = self.spec
        return next_stop(
            self.trainer.iteration, spec.iterations, spec.iterations_per_step, spec.eval_at
        )

    def step(self) -> dict[str, Any]:
        result = {} if self.started else self._start()
        stop = self.next_stop()
        tick = self.tick
        stats = self.trainer.train(max(stop - self.trainer.iteration, 0),
                                   None if tick is None else lambda it: tick("train", it))
        self.train_frames += stats.frames
        self.train_seconds += stats.seconds
        it = self.trainer.iteration
        done = it >= self.spec.iterations
        result.update(
            iteration=it, loss=stats.loss, frames_per_s=stats.frames_per_s, done=done,
        )
        if it in self.spec.eval_at or done:
            result.update(self.evaluate_at(it, done))
        return result

    @property
    def validating(self) -> bool:
        return self.spec.validation == "people" and len(self.trainer.eval_data.val) > 0

    def evaluate_at(self, it: int, done: bool) -> dict[str, Any]:
        """The result keys of an evaluation point (the trainer holds the weights of
        iteration ``it``): the test metrics and ``curve``; with validation also ``val.*``,
        ``best_iteration`` and, when the run ends, the *reported* model's test metrics (the
        best validation iteration's weights, restored into the trainer) with the last
        iteration's under ``last.*``."""
        out: dict[str, Any] = {}
        metrics = self.trainer.evaluate()
        if self.validating:
            val = self.trainer.evaluate(self.trainer.eval_data.val)
            out.update({f"val.{k}": v for k, v in val.items()})
            # ties keep the earlier iteration: fewer updates for the same validation score
            if self.best is None or float(val["frame_acc"]) > self.best["val"]:
                self.best = {"iteration": it, "val": float(val["frame_acc"]), "metrics": val}
                self.best_state = {k: v.detach().cpu().clone()
                                   for k, v in self.trainer.model.state_dict().items()}
            out["best_iteration"] = int(self.best["iteration"])
            if done and self.best["iteration"] != it:
                out.update({f"last.{k}": v for k, v in metrics.items()})
                # the reported model's own validation score: what a search maximises
                out.update({f"val.{k}": v for k, v in self.best["metrics"].items()})
                self._restore_best()
                metrics = self.trainer.evaluate()
        self.curve[str(it)] = metrics["frame_acc"]  # type: ignore[assignment]
        out.update(metrics)
        out["curve"] = dict(self.curve)
        return out

    def _restore_best(self) -> None:
        """Put the reported (best validation) weights into the trainer: a finished run
        trains no more, so its checkpoint and every later use get the selected model."""
        if self.best_state is not None:
            self.trainer.model.load_state_dict(self.best_state)

    def run(self, callback: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Step until done and return the final result: the last step's keys plus
        ``iterations`` and ``frames_per_s`` over all training of this run (pre-training
        excluded). ``callback(result)`` sees every step's result."""
        result: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        while not self.done:
            result = self.step()
            extra.update({k: result[k] for k in PRETRAIN_KEYS if k in result})
            if callback is not None:
                callback(result)
        if "frame_acc" not in result:  # restored from a finished run: evaluate again
            result = {"iteration": self.iteration, "done": True, **self.trainer.evaluate(),
                      "curve": dict(self.curve)}
        result = {**extra, **result}
        result["iterations"] = self.trainer.iteration
        result["frames_per_s"] = (
            self.train_frames / self.train_seconds if self.train_seconds > 0 else 0.0
        )
        return result

    # -- checkpoints -------------------------------------------------------------------
    def checkpoint(self) -> ModelCheckpoint:
        if self.done and self.validating:
            self._restore_best()  # the model a finished run reports is the selected one
        ckpt = self.trainer.checkpoint(
            run={"spec": self.spec.model_dump(mode="json"), "curve": self.curve,
                 "started": self.started, "init_how": self.init_how, "best": self.best}
        )
        if self.best_state is not None:
            ckpt.state["best_model"] = self.best_state
        return ckpt

    def save(self, path: str | Path) -> Path:
        return save_checkpoint(path, self.checkpoint())

    def load(self, path_or_ckpt: str | Path | ModelCheckpoint) -> None:
        """Resume from a checkpoint this run (or an identical one) saved."""
        ckpt = path_or_ckpt
        if not isinstance(ckpt, ModelCheckpoint):
            ckpt = load_checkpoint(ckpt)
        self.trainer.restore(ckpt)
        run = ckpt.meta.get("run") or {}
        self.curve = {str(k): float(v) for k, v in run.get("curve", {}).items()}
        self.init_how = run.get("init_how")
        self.best = run.get("best")
        self.best_state = ckpt.state.get("best_model")
        self.started = True

