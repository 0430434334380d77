"""``LSTMTrainable``: a thin Ray Tune class trainable around :class:`trainables.train_job.TrainRun`.

Config: the keys of :class:`trainables.lstm_config.TrainSpec` (the :class:`LSTMConfig`
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
CUDA works), else the CPU. ``save_checkpoint(dir)`` writes ``dir/lstm.pt`` (the LSTM job's
self-describing checkpoint); restoring one continues exactly where it stopped.
"""

from __future__ import annotations

from typing import Any

import torch

from .job import TEMPORAL_CHECKPOINT_FILE
from .train_config import TrainSpec
from .train_job import TrainRun
from .tune_base import TorchTrainable

__all__ = ["CHECKPOINT_FILE", "LSTMTrainable"]

#: The file ``save_checkpoint(dir)`` writes (:data:`trainables.job.TEMPORAL_CHECKPOINT_FILE`).
CHECKPOINT_FILE = TEMPORAL_CHECKPOINT_FILE


class LSTMTrainable(TorchTrainable):
    """Ray Tune class trainable for one LSTM training job (see the module docstring)."""

    checkpoint_file = CHECKPOINT_FILE

    def setup(self, config: dict[str, Any]) -> None:
        spec = TrainSpec.parse(config)
        device, _ = self.claim_device(spec.device, spec.num_cpus, spec.num_gpus)
        self.run = TrainRun.create(spec, device=device)

    def step(self) -> dict[str, Any]:
        result = self.run.step()
        result["num_threads"] = torch.get_num_threads()  # what the trial's allocation gave
        return result
