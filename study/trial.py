"""The worker side of a study, one task: :class:`TaskJob`, the job a study trial
(:class:`study.worker.StudyTrainable`) runs when its config is one task's.

A ``TaskJob`` is a :class:`~trainables.train_job.TrainRun` plus the study's plumbing, all of
it in the :data:`STUDY_KEY` config key, which the driver (:mod:`study.scheduling`) adds to
each trial config and the job removes before the training config is validated. Nothing here
talks to MLflow's tracking store: results go back to the driver, which logs them
(:mod:`study.callback`); the one MLflow call is fetching a pre-train checkpoint by URI.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from trainables.temporal_trainable import CHECKPOINT_FILE
from trainables.tune_base import checkpoint_path, claim_device

__all__ = ["STUDY_KEY", "Downloads", "TaskJob", "estimate_for", "local_checkpoint"]

#: Config key with the runner's per-trial metadata; a job removes it before the training
#: config is validated, and it is never logged as a param.
STUDY_KEY = "_study"


def local_checkpoint(uri: str, tracking_uri: str | None, dst: Callable[[], Path]) -> Path:
    """A local path for a checkpoint URI: ``file://`` and plain paths are used in place,
    anything else (``mlflow-artifacts:/``, ``s3://``, ``runs:/``) is downloaded into
    ``dst()`` (a directory made only then)."""
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        p = Path(unquote(parsed.path) if parsed.scheme == "file" else uri)
        if p.is_file():
            return p
    import mlflow

    local = mlflow.artifacts.download_artifacts(
        artifact_uri=uri, dst_path=str(dst()), tracking_uri=tracking_uri
    )
    return Path(local)


class Downloads:
    """A temporary folder for fetched checkpoints, made on first use, removed by
    :meth:`close` (a trial's actor is reused: each job cleans up after itself)."""

    def __init__(self) -> None:
        self._tmp: Path | None = None

    def __call__(self) -> Path:
        if self._tmp is None:
            self._tmp = Path(tempfile.mkdtemp(prefix="ks-init-"))
        return self._tmp

    def close(self) -> None:
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None


def estimate_for(run: Any, request: dict[str, Any] | None) -> dict[str, Any]:
    """A fine-tune's transferability estimates (``_study.estimate``) on its ``TrainRun``
    before training (:func:`study.estimates.edge_estimates`), as result keys; a failed
    estimate is reported, never raised (advice, not the task)."""
    if not request:
        return {}
    from study.estimates import (
        ERROR_KEY,
        RESULT_KEY,
        SECONDS_KEY,
        edge_estimates,
        source_train_labels,
    )

    t0 = time.perf_counter()
    try:
        labels = source_train_labels(request["source_path"], request["source_split"])
        out: dict[str, Any] = {RESULT_KEY: edge_estimates(run, labels)}
    except Exception as e:  # advice, not the task: the fine-tune still runs
        out = {ERROR_KEY: f"{type(e).__name__}: {e}"}
    out[SECONDS_KEY] = time.perf_counter() - t0
    return out


class TaskJob:
    """One task's training job with the study's plumbing (all of it in ``_study``):

    * ``init_checkpoint`` may be an artifact URI (fetched to a local file first);
    * every result carries ``node_id`` (the Ray node), for the ``ks.node`` tag;
    * a fine-tune (``_study.estimate`` set by the driver) computes its edge's
      transferability estimates before training (:func:`estimate_for`) and reports them
      with its first result (``estimates``, ``estimate_seconds``, or ``estimate_error``: a
      failed estimate never fails the fine-tune); a budget's estimate task
      (``_study.estimate_only``) reports them as its one result (iteration 0, ``done``) and
      trains nothing;
    * fault injection for tests: ``_study.fail_once = {"iteration": N, "marker": PATH}``
      raises once (the marker file makes it once across restarts), right after the step
      that reaches iteration N, so the progress since the last checkpoint is lost.
    """

    def __init__(self, config: dict[str, Any], trial_resources: Any, node_id: str):
        from trainables.train_config import TrainSpec
        from trainables.train_job import TrainRun

        cfg = dict(config)
        self.meta = dict(cfg.pop(STUDY_KEY, None) or {})
        self.downloads = Downloads()
        self.node_id = node_id
        init = cfg.get("init_checkpoint")
        if init:
            cfg["init_checkpoint"] = str(
                local_checkpoint(init, self.meta.get("tracking_uri"), self.downloads))
        spec = TrainSpec.parse(cfg)
        device, _ = claim_device(trial_resources, spec.device, spec.num_cpus, spec.num_gpus)
        self.run = TrainRun.create(spec, device=device)
        self._estimate_result = estimate_for(self.run, self.meta.get("estimate"))
        # a budget's estimate task (study.budget): report the estimates, train nothing
        self._estimate_only = bool(self.meta.get("estimate_only"))

    def step(self) -> dict[str, Any]:
        import torch

        if self._estimate_only:
            return {**self._estimate_result, "iteration": 0, "done": True,
                    "node_id": self.node_id}
        out = self.run.step()
        out["num_threads"] = torch.get_num_threads()  # what the trial's allocation gave
        fault = self.meta.get("fail_once")
        if fault and out["iteration"] >= fault["iteration"]:
            marker = Path(fault["marker"])
            if not marker.exists():
                marker.parent.mkdir(parents=True, exist_ok=True)
                marker.write_text(str(out["iteration"]))
                raise RuntimeError(f"injected fault at iteration {out['iteration']}")
        out["node_id"] = self.node_id
        if self._estimate_result:
            out.update(self._estimate_result)
            self._estimate_result = {}
        return out

    def save(self, checkpoint_dir: str) -> None:
        self.run.save(checkpoint_path(checkpoint_dir, CHECKPOINT_FILE))

    def load(self, checkpoint: str | dict | None) -> None:
        self.run.load(checkpoint_path(checkpoint, CHECKPOINT_FILE))

    def close(self) -> None:
        self.downloads.close()
