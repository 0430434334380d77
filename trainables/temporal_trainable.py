"""``TemporalTrainable``: a thin Ray Tune class trainable around
:class:`trainables.train_job.TrainRun`, for any registered temporal model.

Config: the keys of :class:`trainables.train_config.TrainSpec`, flat or with a nested
``model`` (the model's ``kind`` and fields, the optimiser's keys, plus ``target_path,
target_split, source_path, source_split, mode, arrangement, arrangement_k,
arrangement_seed, init_checkpoint, iterations, pretrain_iterations, iterations_per_step,
eval_at, validation, device, num_cpus, num_gpus``). Unknown keys fail the trial with an
error naming them. Pass absolute paths (trials run in their own directory; relative ones
are tried against ``TUNE_ORIG_WORKING_DIR``).

Each ``step()`` is :meth:`TrainRun.step` plus ``num_threads``: it trains up to
``iterations_per_step`` iterations, stopping at the next ``eval_at`` point, and returns
``iteration, loss, frames_per_s, done`` plus, at evaluation points and at the end, the
metrics and ``curve``. The trial ends itself (``done``) after ``iterations``.

Resources (:mod:`trainables.tune_base`): ``num_cpus`` CPUs and ``num_gpus`` GPUs
(fractions allowed); ``tune.with_resources(TemporalTrainable, {"cpu": 2, "gpu": 0.5})``
overrides them; in ``setup`` the trial's actual allocation decides threads and device.
``save_checkpoint(dir)`` writes ``dir/lstm.pt`` (the job's self-describing checkpoint, the
file name kept from before models were plug-ins); restoring one continues exactly.
"""

from __future__ import annotations

from typing import Any

import torch
from ray import tune

from .job import TEMPORAL_CHECKPOINT_FILE
from .train_config import TrainSpec
from .train_job import TrainRun
from .tune_base import checkpoint_path, claim_device, resource_request

__all__ = ["CHECKPOINT_FILE", "TemporalTrainable"]

#: The file ``save_checkpoint(dir)`` writes (:data:`trainables.job.TEMPORAL_CHECKPOINT_FILE`).
CHECKPOINT_FILE = TEMPORAL_CHECKPOINT_FILE


class TemporalTrainable(tune.Trainable):
    """Ray Tune class trainable for one training job (see the module docstring)."""

    run: TrainRun

    @classmethod
    def default_resource_request(cls, config: dict[str, Any]) -> Any:
        return resource_request(config)

    def setup(self, config: dict[str, Any]) -> None:
        spec = TrainSpec.parse(config)
        device, _ = claim_device(self.trial_resources, spec.device, spec.num_cpus,
                                 spec.num_gpus)
        self.run = TrainRun.create(spec, device=device)

    def step(self) -> dict[str, Any]:
        result = self.run.step()
        result["num_threads"] = torch.get_num_threads()  # what the trial's allocation gave
        return result

    def save_checkpoint(self, checkpoint_dir: str) -> None:
        self.run.save(checkpoint_path(checkpoint_dir, CHECKPOINT_FILE))

    def load_checkpoint(self, checkpoint: str | dict | None) -> None:
        self.run.load(checkpoint_path(checkpoint, CHECKPOINT_FILE))
