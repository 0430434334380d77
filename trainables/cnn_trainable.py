"""``CNNTrainable``: a thin Ray Tune class trainable around :class:`trainables.cnn.CNNRun`.

Config: the keys of :class:`trainables.cnn.CNNSpec` (the :class:`~trainables.cnn.CNNConfig`
model and training settings plus ``table_path, split, frames_root, frames_kind,
frames_pattern, source_fps, table_fps, tail_tolerance, iterations, iterations_per_step,
eval_at, eval_stride, export_path, export_batch, device, num_cpus, num_gpus``). Unknown keys
fail the trial with an error naming them. Pass absolute paths (trials run in their own
directory; relative ones are tried against ``TUNE_ORIG_WORKING_DIR``).

Each ``step()`` trains up to ``iterations_per_step`` iterations, stopping at the next
``eval_at`` point, and returns ``iteration, loss, frames_per_s, data_wait, done`` plus, at
evaluation points and at the end, ``frame_acc`` and ``curve``; the last step with
``export_path`` writes the softmax table and adds ``export``. The trial ends itself
(``done``) after ``iterations`` (and the export).

Resources, as :class:`trainables.lstm.LSTMTrainable`: ``default_resource_request`` asks for
``num_cpus`` CPUs and ``num_gpus`` GPUs (fractions allowed); ``tune.with_resources`` overrides
it. In ``setup`` the trial's actual allocation decides: ``torch.set_num_threads`` = its CPU
count, CUDA when it holds a GPU (and CUDA works), else the CPU; bf16 autocast and
channels-last only on CUDA; data-loader workers (unless ``workers`` is set) = CPUs - 1 (at
most 8) on CUDA, none on the CPU. ``save_checkpoint(dir)`` writes ``dir/cnn.pt``; restoring
continues from its iteration with the same weights, optimiser and RNG state (the data
stream restarts at an epoch seeded by the iteration, see :mod:`trainables.cnn`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from ray import tune
from ray.tune.execution.placement_groups import PlacementGroupFactory

from .cnn import CHECKPOINT_FILE, CNNRun, CNNSpec

__all__ = ["CHECKPOINT_FILE", "CNNTrainable"]

log = logging.getLogger(__name__)


class CNNTrainable(tune.Trainable):
    """Ray Tune class trainable for one CNN training (and export) job."""

    @classmethod
    def default_resource_request(cls, config: dict[str, Any]) -> PlacementGroupFactory:
        cpus = float(config.get("num_cpus", 1))
        gpus = float(config.get("num_gpus", 0))
        bundle = {"CPU": cpus, **({"GPU": gpus} if gpus > 0 else {})}
        return PlacementGroupFactory([bundle])

    def setup(self, config: dict[str, Any]) -> None:
        spec = CNNSpec.parse(config)
        pgf = self.trial_resources
        held = pgf.required_resources if pgf is not None else {
            "CPU": spec.num_cpus, "GPU": spec.num_gpus
        }
        cpus, gpus = float(held.get("CPU", 1)), float(held.get("GPU", 0))
        threads = max(1, int(cpus))
        torch.set_num_threads(threads)
        device = spec.device
        if device is None:
            device = "cuda" if gpus > 0 and torch.cuda.is_available() else "cpu"
            if gpus > 0 and device == "cpu":
                log.warning("trial holds %s GPU but CUDA is not available: using the CPU", gpus)
        self.run = CNNRun.create(spec, device=device, cpus=threads)

    def step(self) -> dict[str, Any]:
        return self.run.step()

    def save_checkpoint(self, checkpoint_dir: str) -> None:
        self.run.save(Path(checkpoint_dir) / CHECKPOINT_FILE)

    def load_checkpoint(self, checkpoint: str | dict | None) -> None:
        if not isinstance(checkpoint, str):
            raise TypeError(f"expected a checkpoint directory, got {type(checkpoint).__name__}")
        self.run.load(Path(checkpoint) / CHECKPOINT_FILE)

    def cleanup(self) -> None:
        self.run.close()
