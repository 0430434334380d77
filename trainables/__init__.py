"""Trainables: the frame-wise LSTM (plain PyTorch core and a Ray Tune class trainable), label
arrangements and metrics.

Names are imported lazily (PEP 562), so ``import trainables`` — and ``kitchen-study --help``,
which mounts ``trainables.lstm_cli`` — does not pay for torch or Ray until they are used.

- ``trainables.lstm_job``: :class:`LSTMConfig`, :class:`TrainSpec`, :class:`Trainer`,
  :class:`TrainRun`, checkpoints (:func:`load_checkpoint`, :func:`save_checkpoint`),
  :class:`ConfigError`, :class:`CheckpointMismatch`.
- ``trainables.lstm_model``: :class:`FramewiseLSTM` (cells ``cudnn`` and ``peephole``).
- ``trainables.sampler``: :class:`SubsequenceSampler`, :func:`split_batch`.
- ``trainables.lstm_trainable``: :class:`LSTMTrainable` (imports Ray).
- ``trainables.arrangements`` / ``trainables.metrics``: label spaces, arrangements, MS-TCN
  metrics.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "ARRANGEMENTS",
    "Arrangement",
    "Checkpoint",
    "CheckpointMismatch",
    "ConfigError",
    "FramewiseLSTM",
    "LSTMConfig",
    "LSTMTrainable",
    "LabelSpace",
    "SplitData",
    "SubsequenceSampler",
    "TrainRun",
    "TrainSpec",
    "Trainer",
    "load_checkpoint",
    "make_arrangement",
    "save_checkpoint",
    "split_batch",
]

_WHERE = {
    "ARRANGEMENTS": "arrangements",
    "Arrangement": "arrangements",
    "LabelSpace": "arrangements",
    "make_arrangement": "arrangements",
    "Checkpoint": "lstm_job",
    "CheckpointMismatch": "job",
    "ConfigError": "job",
    "LSTMConfig": "lstm_config",
    "SplitData": "lstm_job",
    "TrainRun": "lstm_job",
    "TrainSpec": "lstm_config",
    "Trainer": "lstm_job",
    "load_checkpoint": "lstm_job",
    "save_checkpoint": "lstm_job",
    "FramewiseLSTM": "lstm_model",
    "SubsequenceSampler": "sampler",
    "split_batch": "sampler",
    "LSTMTrainable": "lstm_trainable",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
