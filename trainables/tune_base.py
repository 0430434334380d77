"""What every Ray Tune class trainable of this project shares, as functions its trainables
call (composition; no trainable inherits another's implementation).

- :func:`resource_request`: a trial asks for ``num_cpus`` CPUs and ``num_gpus`` GPUs from its
  config (fractions allowed, e.g. 0.25 to pack four trials on a GPU); a trainable's
  ``default_resource_request`` returns it, and ``tune.with_resources`` overrides it.
- :func:`claim_device`: in ``setup`` the trial's *actual* allocation decides:
  ``torch.set_num_threads`` = its CPU count, and the device by
  :func:`trainables.job.resolve_device` with the trial's GPUs: CUDA when it holds a GPU and
  CUDA works, else the CPU (with a warning).
- A job's ``save(path)`` / ``load(path)`` write and read ``<checkpoint dir>/<file>``
  (:func:`checkpoint_path`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from ray.tune.execution.placement_groups import PlacementGroupFactory

from .job import resolve_device

__all__ = ["checkpoint_path", "claim_device", "resource_request"]


def resource_request(config: dict[str, Any]) -> PlacementGroupFactory:
    """One bundle of the config's ``num_cpus`` CPUs and ``num_gpus`` GPUs."""
    cpus = float(config.get("num_cpus", 1))
    gpus = float(config.get("num_gpus", 0))
    return PlacementGroupFactory([{"CPU": cpus, **({"GPU": gpus} if gpus > 0 else {})}])


def claim_device(trial_resources: PlacementGroupFactory | None, device: str | None,
                 num_cpus: float, num_gpus: float) -> tuple[torch.device, int]:
    """Set torch's threads from the trial's allocation and pick its device.

    ``trial_resources`` is the trainable's ``self.trial_resources`` (None outside Tune:
    ``num_cpus``/``num_gpus``, the config's values, are used); ``device`` forces one."""
    held = (trial_resources.required_resources if trial_resources is not None
            else {"CPU": num_cpus, "GPU": num_gpus})
    cpus, gpus = float(held.get("CPU", 1)), float(held.get("GPU", 0))
    threads = max(1, int(cpus))
    torch.set_num_threads(threads)
    return resolve_device(device, gpus=gpus), threads


def checkpoint_path(checkpoint: str | dict | None, file: str) -> Path:
    """``<checkpoint dir>/<file>`` of a checkpoint Tune hands back (a directory)."""
    if not isinstance(checkpoint, str):
        raise TypeError(f"expected a checkpoint directory, got {type(checkpoint).__name__}")
    return Path(checkpoint) / file
