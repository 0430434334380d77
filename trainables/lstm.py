"""``LSTMTrainable``: a thin Ray Tune class trainable around :class:`trainables.engine.TrainRun`.

Config: the keys of :class:`trainables.engine.TrainSpec` (the :class:`LSTMConfig`
hyperparameters plus ``target_path, target_split, source_path, source_split, mode,
arrangement, arrangement_k, arrangement_seed, init_checkpoint, iterations,
pretrain_iterations, iterations_per_step, eval_at, device, num_cpus, num_gpus``). Unknown
keys fail the trial with an error naming them. Pass absolute paths (trials run in their own
directory; relative ones are tried against ``TUNE_ORIG_WORKING_DIR``).

Each ``step()`` trains up to ``iterations_per_step`` iterations, stopping at the next
``eval_at`` point, and returns ``iteration, loss, frames_per_s, done, num_threads`` plus, at
evaluation points and at the end, ``frame_acc, input_acc, edit, f1@10, f1@25, f1@50`` and
``curve`` (``{str(iteration): frame_acc}`` so far). The trial ends itself (``done``) after
``iterations``.

Resources: ``default_resource_request`` asks for ``num_cpus`` CPUs and ``num_gpus`` GPUs
(fractions allowed, e.g. 0.25 to pack four trials on a GPU); ``tune.with_resources(
LSTMTrainable, {"cpu": 2, "gpu": 0.5})`` overrides it. In ``setup`` the trial's actual
allocation decides: ``torch.set_num_threads`` = its CPU count, CUDA when it holds a GPU (and
CUDA works), else the CPU. ``save_checkpoint(dir)`` writes ``dir/lstm.pt`` (the engine's
self-describing checkpoint); restoring one continues exactly where it stopped.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from ray import tune
from ray.tune.execution.placement_groups import PlacementGroupFactory

from .engine import TrainRun, TrainSpec

__all__ = ["CHECKPOINT_FILE", "LSTMTrainable"]

CHECKPOINT_FILE = "lstm.pt"

log = logging.getLogger(__name__)


class LSTMTrainable(tune.Trainable):
    """Ray Tune class trainable for one LSTM training job (see the module docstring)."""

    @classmethod
    def default_resource_request(cls, config: dict[str, Any]) -> PlacementGroupFactory:
        cpus = float(config.get("num_cpus", 1))
        gpus = float(config.get("num_gpus", 0))
        bundle = {"CPU": cpus, **({"GPU": gpus} if gpus > 0 else {})}
        return PlacementGroupFactory([bundle])

    def setup(self, config: dict[str, Any]) -> None:
        spec = TrainSpec.parse(config)
        pgf = self.trial_resources
        held = pgf.required_resources if pgf is not None else {
            "CPU": spec.num_cpus, "GPU": spec.num_gpus
        }
        cpus, gpus = float(held.get("CPU", 1)), float(held.get("GPU", 0))
        torch.set_num_threads(max(1, int(cpus)))
        device = spec.device
        if device is None:
            device = "cuda" if gpus > 0 and torch.cuda.is_available() else "cpu"
            if gpus > 0 and device == "cpu":
                log.warning("trial holds %s GPU but CUDA is not available: using the CPU", gpus)
        self.run = TrainRun.create(spec, device=device)

    def step(self) -> dict[str, Any]:
        result = self.run.step()
        result["num_threads"] = torch.get_num_threads()  # what the trial's allocation gave
        return result

    def save_checkpoint(self, checkpoint_dir: str) -> None:
        self.run.save(Path(checkpoint_dir) / CHECKPOINT_FILE)

    def load_checkpoint(self, checkpoint: str | dict | None) -> None:
        if not isinstance(checkpoint, str):
            raise TypeError(f"expected a checkpoint directory, got {type(checkpoint).__name__}")
        self.run.load(Path(checkpoint) / CHECKPOINT_FILE)
