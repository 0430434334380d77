"""The study's one Ray Tune trainable: :class:`StudyTrainable`, a shell around a job.

A study trial's config is either one task's (a :class:`~study.trial.TaskJob`) or a pack's
(``PACK_KEY``: a :class:`~study.packed_trial.PackJob`). The trainable holds the job and
delegates ``step``, ``save``, ``load`` and cleanup to it (composition: the trainable
inherits only Ray's ``tune.Trainable``); resources come from the config
(:func:`trainables.tune_base.resource_request`). An actor is reused across trials of either
kind (``reuse_actors``): a fresh process would spend seconds importing torch and Ray before
its first step.
"""

from __future__ import annotations

from typing import Any

from ray import tune

from trainables.tune_base import resource_request

from .packed_trial import PACK_KEY, PackJob
from .trial import TaskJob

__all__ = ["StudyTrainable"]


class StudyTrainable(tune.Trainable):
    """The study's trainable (see the module docstring)."""

    job: TaskJob | PackJob | None = None

    @classmethod
    def default_resource_request(cls, config: dict[str, Any]) -> Any:
        return resource_request(config)

    def setup(self, config: dict[str, Any]) -> None:
        import ray

        node_id = ray.get_runtime_context().get_node_id()
        job_type = PackJob if PACK_KEY in config else TaskJob
        self.job = job_type(config, self.trial_resources, node_id)

    def step(self) -> dict[str, Any]:
        assert self.job is not None
        return self.job.step()

    def save_checkpoint(self, checkpoint_dir: str) -> None:
        assert self.job is not None
        self.job.save(checkpoint_dir)

    def load_checkpoint(self, checkpoint: str | dict | None) -> None:
        assert self.job is not None
        self.job.load(checkpoint)

    def reset_config(self, new_config: dict[str, Any]) -> bool:
        self.cleanup()
        self.setup(new_config)
        return True

    def cleanup(self) -> None:
        if self.job is not None:
            self.job.close()
            self.job = None
