"""A training job's configs, importable without torch: the planner, the spec checker and the
query side validate with them.

- :class:`TrainConfig`: the model (``model``: one of the registered temporal models'
  configs, :data:`trainables.temporal.ModelConfig`, chosen by its ``kind``; default the
  paper's LSTM) and the optimisation (batch 128, Adam at lr 0.001, seed, clipping, the joint
  ratio 5:3, evaluation batch).
- :class:`TrainSpec`: what one job needs on top (data, split, mode, arrangement, iterations,
  evaluation points, resources): the config of the study's trial and of
  ``kitchen-study train``.

**Flat keys.** The study spec's ``model`` block, ``--set KEY=VALUE``, the search spaces and
checkpoints written before models were plug-ins all speak *flat*: ``{history: 64, hidden: 32,
batch_size: 16}``, optionally with ``kind``. A mapping given to these configs may mix both: a
flat key that belongs to the chosen model's config is moved into ``model`` (over the value
there). :meth:`TrainConfig.flat` gives the flat form back (``kind`` left out for the
default model, so the paper's LSTM keeps its task keys and MLflow params).

The job itself (:mod:`trainables.train_job`) states what each mode does.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from .arrangements import ARRANGEMENTS
from .job import StrictConfig, checked_eval_at, parse_iterations
from .temporal import DEFAULT_KIND, MODELS, ModelConfig

__all__ = ["MAX_ITERATIONS", "TrainConfig", "TrainSpec"]

MAX_BATCH = 65_536
#: beyond this an iteration count is a typo (the paper's longest run is 300,000 iterations)
MAX_ITERATIONS = 100_000_000


class TrainConfig(StrictConfig):
    """Model (``model``, by ``kind``) and optimisation hyperparameters."""

    model: ModelConfig = Field(default_factory=lambda: MODELS[DEFAULT_KIND].config())
    batch_size: int = Field(128, ge=1, le=MAX_BATCH, description="samples per batch")
    lr: float = Field(1e-3, gt=0, lt=1, description="Adam learning rate (below 1)")
    seed: int = Field(0, ge=0, lt=2**63)
    clip: float | None = Field(None, gt=0, description="max gradient norm; None: no clipping")
    joint_ratio: tuple[int, int] = Field((5, 3), description="target:source per joint batch")
    eval_batch: int = Field(64, ge=1, le=MAX_BATCH, description="test videos per evaluation batch")

    @model_validator(mode="before")
    @classmethod
    def _nest_flat_model_keys(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        data = dict(data)
        model = data.get("model")
        if model is not None and not isinstance(model, Mapping):
            if hasattr(model, "model_dump"):
                model = model.model_dump()
            else:
                return data  # pydantic says what is wrong with it
        model = dict(model or {})
        kind = data.pop("kind", None)
        if kind is not None:
            if model.get("kind", kind) != kind:
                raise ValueError(f"kind {kind!r} disagrees with model.kind {model['kind']!r}")
            model["kind"] = kind
        entry = MODELS.get(model.get("kind", DEFAULT_KIND))
        if entry is not None:
            for key in set(entry.config.model_fields) - {"kind"}:
                if key in data:
                    model[key] = data.pop(key)
        if model or "model" in data:
            model.setdefault("kind", DEFAULT_KIND)  # the discriminator needs it
            data["model"] = model
        return data

    @field_validator("joint_ratio")
    @classmethod
    def _ratio(cls, v: tuple[int, int]) -> tuple[int, int]:
        if min(v) < 0 or sum(v) <= 0:
            raise ValueError(f"must be two non-negative integers with a positive sum, got {v}")
        return v

    def train_config(self) -> TrainConfig:
        """The model and optimisation part alone (what a trainer needs)."""
        return TrainConfig.model_validate(self.model_dump(include=set(TrainConfig.model_fields)))

    def flat(self, **dump: Any) -> dict[str, Any]:
        """The flat form (see the module docstring); ``dump``: ``model_dump`` options."""
        d = self.model_dump(mode="json", **dump)
        model = d.pop("model", {}) or {}
        if model.get("kind", DEFAULT_KIND) == DEFAULT_KIND:
            model.pop("kind", None)
        return {**d, **model}


class TrainSpec(TrainConfig):
    """One training job: :class:`TrainConfig` plus data, mode and schedule.

    Paths should be absolute when the job runs under Ray Tune (trials run in their own
    directory; relative paths are resolved against the driver's working directory).
    """

    target_path: str
    target_split: int | str = 1
    source_path: str | None = None
    source_split: int | str = 1
    mode: Literal["none", "joint", "transfer", "pretrain"] = "none"
    arrangement: str | None = Field(None, description="default: merged when there is a source")
    arrangement_k: int = Field(3, ge=1, le=1024, description="maps of multiple_random")
    arrangement_seed: int = Field(0, ge=0, lt=2**63)
    init_checkpoint: str | None = None
    iterations: int = Field(4096, ge=0, le=MAX_ITERATIONS)
    pretrain_iterations: int | None = Field(None, ge=1, le=MAX_ITERATIONS)
    iterations_per_step: int = Field(256, ge=1)
    eval_at: tuple[int, ...] = ()
    device: str | None = Field(None, description="cpu, cuda, cuda:N; None: cuda if available")
    validation: Literal["none", "people"] = Field(
        "none", description="people: carve a validation part from the target split's training "
        "people, evaluate it at every evaluation point and report the test metrics of the "
        "best validation iteration; none: the paper's protocol (no validation, the last "
        "iteration)")
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
