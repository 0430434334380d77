"""The LSTM job's configs, importable without torch: the planner, the spec checker and the
query side validate with them.

- :class:`LSTMConfig`: the model and optimisation hyperparameters (paper defaults: history
  300, depth 1, hidden 128, batch 128, Adam at lr 0.001).
- :class:`TrainSpec`: what one training job needs on top (data, split, mode, arrangement,
  iterations, evaluation points): the config of
  :class:`trainables.lstm_trainable.LSTMTrainable` and of ``kitchen-study train``.

The job itself (:mod:`trainables.lstm_job`) states what each mode does.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from .arrangements import ARRANGEMENTS
from .job import StrictConfig, checked_eval_at, parse_iterations

__all__ = ["MAX_BATCH", "MAX_DEPTH", "MAX_HIDDEN", "MAX_HISTORY", "LSTMConfig", "TrainSpec"]

#: Bounds on the state, beyond which a value is a typo rather than a setting (the paper:
#: history 300, depth 1, hidden 128, batch 128). Whether a valid size fits the machine is
#: checked when the job starts (``trainables.lstm_job.memory_estimate``).
MAX_HISTORY = 100_000
MAX_DEPTH = 16
MAX_HIDDEN = 16_384
MAX_BATCH = 65_536


class LSTMConfig(StrictConfig):
    """Model and optimisation hyperparameters (defaults: the paper's, §4.2)."""

    history: int = Field(300, ge=1, le=MAX_HISTORY, description="frames per training subsequence")
    depth: int = Field(1, ge=1, le=MAX_DEPTH, description="stacked LSTM layers")
    hidden: int = Field(128, ge=1, le=MAX_HIDDEN, description="LSTM hidden units")
    batch_size: int = Field(128, ge=1, le=MAX_BATCH, description="subsequences per batch")
    lr: float = Field(1e-3, gt=0, lt=1, description="Adam learning rate (below 1)")
    cell: Literal["cudnn", "peephole"] = "cudnn"
    seed: int = Field(0, ge=0)
    clip: float | None = Field(None, gt=0, description="max gradient norm; None: no clipping")
    joint_ratio: tuple[int, int] = Field((5, 3), description="target:source per joint batch")
    eval_reset: bool = Field(False, description="reset the state every `history` test frames")
    eval_batch: int = Field(64, ge=1, description="test videos per evaluation batch")

    @field_validator("joint_ratio")
    @classmethod
    def _ratio(cls, v: tuple[int, int]) -> tuple[int, int]:
        if min(v) < 0 or sum(v) <= 0:
            raise ValueError(f"must be two non-negative integers with a positive sum, got {v}")
        return v

    def lstm_config(self) -> LSTMConfig:
        return LSTMConfig.model_validate(self.model_dump(include=set(LSTMConfig.model_fields)))


class TrainSpec(LSTMConfig):
    """One training job: :class:`LSTMConfig` plus data, mode and schedule.

    Paths should be absolute when the job runs under Ray Tune (trials run in their own
    directory; relative paths are resolved against the driver's working directory).
    """

    target_path: str
    target_split: int | str = 1
    source_path: str | None = None
    source_split: int | str = 1
    mode: Literal["none", "joint", "transfer", "pretrain"] = "none"
    arrangement: str | None = Field(None, description="default: merged when there is a source")
    arrangement_k: int = Field(3, ge=1, description="maps of multiple_random")
    arrangement_seed: int = Field(0, ge=0)
    init_checkpoint: str | None = None
    iterations: int = Field(4096, ge=0)
    pretrain_iterations: int | None = Field(None, ge=1)
    iterations_per_step: int = Field(256, ge=1)
    eval_at: tuple[int, ...] = ()
    device: str | None = Field(None, description="cpu, cuda, cuda:N; None: cuda if available")
    num_cpus: float = Field(1, gt=0, description="Ray Tune CPUs per trial (and torch threads)")
    num_gpus: float = Field(0, ge=0, description="Ray Tune GPUs per trial (fractions allowed)")

    @field_validator("eval_at", mode="before")
    @classmethod
    def _eval_at(cls, v: Any) -> Any:
        return parse_iterations(v)

    @field_validator("device")
    @classmethod
    def _device(cls, v: str | None) -> str | None:
        # the names trainables.job.resolve_device takes; checked here (without torch) so a
        # study refuses `device: tpu` at validation, not in every trial
        if v is not None and not re.fullmatch(r"cpu|auto|cuda(:\d+)?", v):
            raise ValueError(f"unknown device {v!r} (cpu, cuda, cuda:N or auto)")
        return v

    @field_validator("arrangement")
    @classmethod
    def _arrangement(cls, v: str | None) -> str | None:
        if v is not None and v not in ARRANGEMENTS:
            raise ValueError(f"unknown arrangement {v!r} (choose from {', '.join(ARRANGEMENTS)})")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> TrainSpec:
        has_source = self.source_path is not None
        if self.mode == "none":
            if has_source:
                raise ValueError(
                    "source_path is set but mode is 'none': choose mode joint, transfer or pretrain"
                )
            if self.arrangement not in (None, "identity"):
                raise ValueError(
                    f"arrangement {self.arrangement!r} needs a source (mode is 'none')"
                )
        else:
            if self.arrangement == "identity":
                raise ValueError(
                    f"mode {self.mode!r} needs a two-dataset arrangement, not identity"
                )
            if self.mode in ("joint", "pretrain") and not has_source:
                raise ValueError(f"mode {self.mode!r} needs source_path")
            if self.mode == "transfer" and not has_source and self.init_checkpoint is None:
                raise ValueError(
                    "mode 'transfer' needs init_checkpoint or source_path to pre-train on"
                )
        if self.pretrain_iterations is not None and (
            self.mode != "transfer" or self.init_checkpoint is not None
        ):
            raise ValueError(
                "pretrain_iterations applies only to mode 'transfer' without init_checkpoint"
            )
        if self.mode == "joint" and min(self.joint_ratio) == 0:
            raise ValueError(
                f"joint_ratio {self.joint_ratio[0]}:{self.joint_ratio[1]} leaves one dataset out "
                "of every joint batch: both sides must be positive (or use mode 'none'/'transfer')"
            )
        if self.init_checkpoint is not None and self.mode in ("joint", "pretrain"):
            raise ValueError(f"init_checkpoint does not apply to mode {self.mode!r}")
        object.__setattr__(self, "eval_at", checked_eval_at(self.eval_at, self.iterations))
        return self

    @property
    def arrangement_kind(self) -> str:
        if self.mode == "none":
            return "identity"
        return self.arrangement or "merged"
