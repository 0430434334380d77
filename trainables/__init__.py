"""Trainables: the per-frame jobs (the frame-wise LSTM and the per-frame CNN), their Ray Tune
class trainables, label arrangements and metrics. The module map is in docs/architecture.md.

Names are imported lazily (PEP 562), so ``import trainables`` — and ``kitchen-study --help``,
which mounts ``trainables.lstm_cli`` and ``trainables.cnn_cli`` — does not pay for torch or
Ray until they are used.

- ``trainables.job``: what every job shares, torch-free at import: :class:`StrictConfig`,
  :class:`ConfigError`, :func:`resolve_device`, the self-describing :class:`Checkpoint`
  file (:class:`CheckpointError` for a file that is none, :class:`CheckpointMismatch` for
  one that does not fit the run).
- LSTM: ``lstm_config`` (:class:`LSTMConfig`, :class:`TrainSpec`; no torch),
  ``lstm_model`` (:class:`FramewiseLSTM`, cells ``cudnn`` and ``peephole``), ``sampler``
  (:class:`SubsequenceSampler`, :func:`split_batch`), ``lstm_data`` (:class:`SplitData`),
  ``lstm_job`` (:class:`Trainer`, :class:`TrainRun`, :func:`load_checkpoint`,
  :func:`save_checkpoint`), ``lstm_trainable`` (:class:`LSTMTrainable`, imports Ray), ``lstm_cli``
  (``kitchen-study train``).
- CNN: ``cnn_config`` (:class:`CNNConfig`, :class:`CNNSpec`; no torch), ``cnn_model``,
  ``frames`` (video readers), ``cnn_data`` (frame streams), ``cnn_job`` (:class:`CNNTrainer`,
  :class:`CNNRun`, export), ``cnn_trainable`` (:class:`CNNTrainable`, imports Ray),
  ``cnn_cli`` (``kitchen-study cnn``); ``svm_baseline`` (Table 3's CNN baselines, no torch).
- ``tune_base``: the Ray Tune base class of both trainables (resources, checkpoints).
- ``arrangements`` / ``metrics``: label spaces, arrangements, MS-TCN metrics.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "ARRANGEMENTS",
    "Arrangement",
    "CNNConfig",
    "CNNRun",
    "CNNSpec",
    "CNNTrainable",
    "CNNTrainer",
    "Checkpoint",
    "CheckpointError",
    "CheckpointMismatch",
    "ConfigError",
    "FramewiseLSTM",
    "LSTMCheckpoint",
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
    "resolve_device",
    "save_checkpoint",
    "split_batch",
    "svm_baseline",
]

_WHERE = {
    "ARRANGEMENTS": "arrangements",
    "Arrangement": "arrangements",
    "LabelSpace": "arrangements",
    "make_arrangement": "arrangements",
    "Checkpoint": "job",
    "CheckpointError": "job",
    "CheckpointMismatch": "job",
    "ConfigError": "job",
    "resolve_device": "job",
    "LSTMConfig": "lstm_config",
    "TrainSpec": "lstm_config",
    "LSTMCheckpoint": "lstm_job",
    "SplitData": "lstm_data",
    "TrainRun": "lstm_job",
    "Trainer": "lstm_job",
    "load_checkpoint": "lstm_job",
    "save_checkpoint": "lstm_job",
    "FramewiseLSTM": "lstm_model",
    "SubsequenceSampler": "sampler",
    "split_batch": "sampler",
    "LSTMTrainable": "lstm_trainable",
    "CNNConfig": "cnn_config",
    "CNNSpec": "cnn_config",
    "CNNRun": "cnn_job",
    "CNNTrainer": "cnn_job",
    "CNNTrainable": "cnn_trainable",
    "svm_baseline": "svm_baseline",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
