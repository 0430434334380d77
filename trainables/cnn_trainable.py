"""``CNNTrainable``: a thin Ray Tune class trainable around :class:`trainables.cnn_job.CNNRun`.

Config: the keys of :class:`trainables.cnn_config.CNNSpec` (the
:class:`~trainables.cnn_config.CNNConfig` model and training settings plus ``table_path,
split, frames_root, frames_kind, frames_pattern, source_fps, table_fps, tail_tolerance,
iterations, iterations_per_step, eval_at, eval_stride, export_path, export_batch, device,
num_cpus, num_gpus``). Unknown keys fail the trial with an error naming them. Pass absolute
paths (trials run in their own directory; relative ones are tried against
``TUNE_ORIG_WORKING_DIR``).

Each ``step()`` trains up to ``iterations_per_step`` iterations, stopping at the next
``eval_at`` point, and returns ``iteration, loss, frames_per_s, data_wait, done`` plus, at
evaluation points and at the end, ``frame_acc`` and ``curve``; the last step with
``export_path`` writes the softmax table and adds ``export``. The trial ends itself
(``done``) after ``iterations`` (and the export).

Resources, as :class:`trainables.temporal_trainable.TemporalTrainable`
(:mod:`trainables.tune_base`): ``default_resource_request``
asks for ``num_cpus`` CPUs and ``num_gpus`` GPUs (fractions allowed);
``tune.with_resources`` overrides it. In ``setup`` the trial's actual allocation decides:
``torch.set_num_threads`` = its CPU count, CUDA when it holds a GPU (and CUDA works), else
the CPU; bf16 autocast and channels-last only on CUDA; data-loader workers (unless
``workers`` is set) = CPUs - 1 (at most 8) on CUDA, none on the CPU.
``save_checkpoint(dir)`` writes ``dir/cnn.pt``; restoring continues from its iteration with
the same weights, optimiser and RNG state (the data stream restarts at an epoch seeded by
the iteration, see :mod:`trainables.cnn_data`).
"""

from __future__ import annotations

from typing import Any

from ray import tune

from .cnn_config import CNNSpec
from .cnn_job import CHECKPOINT_FILE, CNNRun
from .tune_base import checkpoint_path, claim_device, resource_request

__all__ = ["CHECKPOINT_FILE", "CNNTrainable"]


class CNNTrainable(tune.Trainable):
    """Ray Tune class trainable for one CNN training (and export) job."""

    run: CNNRun

    @classmethod
    def default_resource_request(cls, config: dict[str, Any]) -> Any:
        return resource_request(config)

    def setup(self, config: dict[str, Any]) -> None:
        spec = CNNSpec.parse(config)
        device, threads = claim_device(self.trial_resources, spec.device, spec.num_cpus,
                                       spec.num_gpus)
        self.run = CNNRun.create(spec, device=device, cpus=threads)

    def save_checkpoint(self, checkpoint_dir: str) -> None:
        self.run.save(checkpoint_path(checkpoint_dir, CHECKPOINT_FILE))

    def load_checkpoint(self, checkpoint: str | dict | None) -> None:
        self.run.load(checkpoint_path(checkpoint, CHECKPOINT_FILE))

    def step(self) -> dict[str, Any]:
        return self.run.step()

    def cleanup(self) -> None:
        self.run.close()
