"""The base of the Ray Tune class trainables (LSTM and CNN): resources and checkpoints.

A trial asks for ``num_cpus`` CPUs and ``num_gpus`` GPUs from its config (fractions allowed,
e.g. 0.25 to pack four trials on a GPU); ``tune.with_resources`` overrides that. In
``setup`` the trial's *actual* allocation decides: ``torch.set_num_threads`` = its CPU
count, and the device by :func:`trainables.job.resolve_device` with the trial's GPUs: CUDA
when it holds a GPU and CUDA works, else the CPU (with a warning). A job's
``save(path)`` / ``load(path)`` write and read ``<checkpoint dir>/<checkpoint_file>``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from ray import tune
from ray.tune.execution.placement_groups import PlacementGroupFactory

from .job import resolve_device

__all__ = ["TorchTrainable"]


class TorchTrainable(tune.Trainable):
    """A class trainable whose resources come from ``num_cpus`` / ``num_gpus`` config keys.

    Subclasses set ``self.run`` (an object with ``step``, ``save(path)`` and ``load(path)``)
    in ``setup`` and name their checkpoint file; checkpoints are ``dir/<checkpoint_file>``.
    """

    checkpoint_file: str

    @classmethod
    def default_resource_request(cls, config: dict[str, Any]) -> PlacementGroupFactory:
        cpus = float(config.get("num_cpus", 1))
        gpus = float(config.get("num_gpus", 0))
        bundle = {"CPU": cpus, **({"GPU": gpus} if gpus > 0 else {})}
        return PlacementGroupFactory([bundle])

    def claim_device(
        self, device: str | None, num_cpus: float, num_gpus: float
    ) -> tuple[torch.device, int]:
        """Set torch's threads from the trial's allocation and pick its device.

        ``device`` forces one (e.g. ``"cpu"``); ``num_cpus``/``num_gpus`` are the config's
        values, used only when the trial runs outside Tune (no allocation known).
        """
        pgf = self.trial_resources
        held = pgf.required_resources if pgf is not None else {"CPU": num_cpus, "GPU": num_gpus}
        cpus, gpus = float(held.get("CPU", 1)), float(held.get("GPU", 0))
        threads = max(1, int(cpus))
        torch.set_num_threads(threads)
        return resolve_device(device, gpus=gpus), threads

    def save_checkpoint(self, checkpoint_dir: str) -> None:
        self.run.save(Path(checkpoint_dir) / self.checkpoint_file)

    def load_checkpoint(self, checkpoint: str | dict | None) -> None:
        if not isinstance(checkpoint, str):
            raise TypeError(f"expected a checkpoint directory, got {type(checkpoint).__name__}")
        self.run.load(Path(checkpoint) / self.checkpoint_file)
