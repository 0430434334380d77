"""The CNN job's configs, importable without torch (the spec checker and the CLI validate
with them).

- :class:`CNNConfig`: model and training settings of the per-frame CNN.
- :class:`CNNSpec`: one CNN job on top (data, frames, schedule, export): the config of
  :class:`trainables.cnn_trainable.CNNTrainable` and of ``kitchen-study cnn train``.

What the settings do: :mod:`trainables.cnn_model` (model, weights, image sizes),
:mod:`trainables.cnn_data` (sampling and augmentation), :mod:`trainables.cnn_job`
(training, evaluation, export, devices).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from .frames import FrameSource
from .job import StrictConfig, checked_eval_at, parse_iterations, resolve_trial_path

__all__ = ["CNNConfig", "CNNSpec"]


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
        object.__setattr__(self, "eval_at", checked_eval_at(self.eval_at, self.iterations))
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
