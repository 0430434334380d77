"""The worker side of a study: what runs inside a Ray trial process.

:class:`StudyTrainable` is ``LSTMTrainable`` plus the study's plumbing, all of it in the
:data:`STUDY_KEY` config key, which the driver (:mod:`study.scheduling`) adds to each trial
config and this class removes before the LSTM config is validated. Nothing here talks to
MLflow's tracking store: results go back to the driver, which logs them
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

from trainables.temporal_trainable import LSTMTrainable

__all__ = ["STUDY_KEY", "StudyTrainable", "local_checkpoint"]

#: Config key with the runner's per-trial metadata; :class:`StudyTrainable` removes it
#: before the LSTM config is validated, and it is never logged as a param.
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


class StudyTrainable(LSTMTrainable):
    """``LSTMTrainable`` plus the study's plumbing (all of it in the ``_study`` config key):

    * ``init_checkpoint`` may be an artifact URI (fetched to a local file first);
    * every result carries ``node_id`` (the Ray node), for the ``ks.node`` tag;
    * a fine-tune (``_study.estimate`` set by the driver) computes its edge's
      transferability estimates in ``setup``, before training
      (:func:`study.estimates.edge_estimates`), and reports them with its first result
      (``estimates``, ``estimate_seconds``, or ``estimate_error``: a failed estimate never
      fails the fine-tune); a budget's estimate task (``_study.estimate_only``) reports
      them as its one result (iteration 0, ``done``) and trains nothing;
    * fault injection for tests: ``_study.fail_once = {"iteration": N, "marker": PATH}``
      raises once (the marker file makes it once across restarts), right after the step
      that reaches iteration N, so the progress since the last checkpoint is lost.
    """

    def setup(self, config: dict[str, Any]) -> None:
        import ray

        cfg = dict(config)
        self._study_meta = dict(cfg.pop(STUDY_KEY, None) or {})
        init = cfg.get("init_checkpoint")
        if init:
            cfg["init_checkpoint"] = str(
                local_checkpoint(init, self._study_meta.get("tracking_uri"), self._download_dir)
            )
        self._node_id = ray.get_runtime_context().get_node_id()
        super().setup(cfg)
        self._estimate_result = self._estimate(self._study_meta.get("estimate"))
        # a budget's estimate task (study.budget): report the estimates, train nothing
        self._estimate_only = bool(self._study_meta.get("estimate_only"))

    def _estimate(self, request: dict[str, Any] | None) -> dict[str, Any]:
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
            out: dict[str, Any] = {RESULT_KEY: edge_estimates(self.run, labels)}
        except Exception as e:  # advice, not the task: the fine-tune still runs
            out = {ERROR_KEY: f"{type(e).__name__}: {e}"}
        out[SECONDS_KEY] = time.perf_counter() - t0
        return out

    def step(self) -> dict[str, Any]:
        if self._estimate_only:
            return {**self._estimate_result, "iteration": 0, "done": True,
                    "node_id": self._node_id}
        out = super().step()
        fault = self._study_meta.get("fail_once")
        if fault and out["iteration"] >= fault["iteration"]:
            marker = Path(fault["marker"])
            if not marker.exists():
                marker.parent.mkdir(parents=True, exist_ok=True)
                marker.write_text(str(out["iteration"]))
                raise RuntimeError(f"injected fault at iteration {out['iteration']}")
        out["node_id"] = self._node_id
        if self._estimate_result:
            out.update(self._estimate_result)
            self._estimate_result = {}
        return out

    _tmp: Path | None = None

    def _download_dir(self) -> Path:
        if self._tmp is None:
            self._tmp = Path(tempfile.mkdtemp(prefix="ks-init-"))
        return self._tmp

    def _drop_downloads(self) -> None:
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def reset_config(self, new_config: dict[str, Any]) -> bool:
        """Reuse this actor for the next trial (``reuse_actors``): a fresh process would
        spend seconds importing torch and Ray before its first step."""
        self._drop_downloads()
        self.setup(new_config)
        return True

    def cleanup(self) -> None:
        self._drop_downloads()
        super().cleanup()
