"""The study runner: executes a plan on Ray Tune, logs everything to MLflow, resumes.

Design (one Tune run per invocation, no stage barrier):

* **One Tune run over** :class:`StudyTrainable` (``LSTMTrainable`` plus study plumbing).
  A custom :class:`~ray.tune.search.Searcher` (:class:`StudySearcher`) hands out the
  plan's trial configs: a task's config is released as soon as its dependencies are done,
  so a fine-tune starts the moment its pre-train's checkpoint is stored, while unrelated
  tasks keep running. ``suggest`` returns None while nothing is ready and
  ``Searcher.FINISHED`` once every task has been released (or skipped because a dependency
  failed). Ready tasks are released in plan order (pre-trains first: they unblock the most).
* **Searches** run inside the same Tune run: each search task owns a seeded-TPE
  ``OptunaSearch`` (define-by-run space from :mod:`search_spaces`, optional Optuna RDB
  storage) wrapped in a ``ConcurrencyLimiter``, and an ``AsyncHyperBandScheduler`` (ASHA,
  ``time_attr="iteration"``) that :class:`StudyScheduler` consults for that search's trials
  only (other trials are FIFO). A trial ASHA stops early is told to Optuna as PRUNED (its
  metric at a lower rung is not comparable with finished trials'); OptunaSearch ignores
  Optuna pruners, which is why ASHA does the early stopping.
* **Tracking from the driver only** (:class:`TrackingCallback`, a ``tune.Callback``):
  one MLflow child run per task (search trials nested under their search task's run),
  params = the task config, metrics per result, the ``ks.node`` tag from the first result.
  Pre-train checkpoints are uploaded as the artifact ``checkpoint/lstm.pt``; fine-tunes
  receive its artifact URI as ``init_checkpoint`` and :class:`StudyTrainable` fetches it
  (a local file is used in place; other URIs are downloaded with MLflow), so a cluster
  needs no shared disk for checkpoints, only a tracking server that serves artifacts.
* **Failures**: ``FailureConfig(max_failures)`` restarts a crashed trial from its last
  Tune checkpoint (one per step); the retry is recorded as tags ``ks.retries`` and
  ``ks.last_error`` on the same run. A trial that exhausts its retries ends FAILED with
  the reason in ``ks.error``; tasks depending on it are skipped (reported, no run). Ctrl-C
  / SIGTERM ends every open run KILLED and the study run KILLED.
* **Idempotent resume**: before starting, runs of this study hash still RUNNING (a driver
  that died) are closed KILLED, and tasks with a FINISHED run are skipped; so ``run`` and
  ``resume`` after a crash finish the study without redoing finished tasks. An interrupted
  task restarts from the beginning in a new run (its old run stays KILLED); each task ends
  with exactly one FINISHED run. A search is one task: an interrupted search restarts
  (with Optuna RDB storage its Optuna study keeps the earlier trials' history).
* **Where Ray comes from**: an already initialised Ray is used as is; else ``address``
  (CLI ``--address``, then the spec's ``ray_address``); else ``ray.init()``, which joins
  ``$RAY_ADDRESS`` when set (as under ``ray job submit``) or starts a local Ray.

One driver per study at a time: a second driver on the same study hash would close the
first one's runs as stale.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from ray import tune
from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher

from trainables.lstm_trainable import LSTMTrainable

from .plan import Plan, Task, make_plan
from .spec import LoadedStudy, SpecError
from .tracking import (
    CHECKPOINT_ARTIFACT,
    RunLogger,
    TaskMeta,
    log_checkpoint,
    log_result,
)

__all__ = [
    "STUDY_KEY",
    "StudyOutcome",
    "StudyScheduler",
    "StudySearcher",
    "StudyTrainable",
    "TrackingCallback",
    "preflight",
    "run_study",
    "study_status",
]

#: Config key with the runner's per-trial metadata; :class:`StudyTrainable` removes it
#: before the LSTM config is validated, and it is never logged as a param.
STUDY_KEY = "_study"

log = logging.getLogger(__name__)


# -- the trainable ---------------------------------------------------------------------------


def _local_checkpoint(uri: str, tracking_uri: str | None, dst: Callable[[], Path]) -> Path:
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
                _local_checkpoint(init, self._study_meta.get("tracking_uri"), self._download_dir)
            )
        self._node_id = ray.get_runtime_context().get_node_id()
        super().setup(cfg)

    def step(self) -> dict[str, Any]:
        out = super().step()
        fault = self._study_meta.get("fail_once")
        if fault and out["iteration"] >= fault["iteration"]:
            marker = Path(fault["marker"])
            if not marker.exists():
                marker.parent.mkdir(parents=True, exist_ok=True)
                marker.write_text(str(out["iteration"]))
                raise RuntimeError(f"injected fault at iteration {out['iteration']}")
        out["node_id"] = self._node_id
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


# -- shared state between the searcher, the scheduler and the callback -----------------------


@dataclass
class _Search:
    task: Task
    searcher: Any  # ConcurrencyLimiter(OptunaSearch)
    scheduler: Any | None  # AsyncHyperBandScheduler
    metric: str
    suggested: int = 0
    completed: int = 0
    succeeded: int = 0
    run_id: str | None = None
    params: dict[str, dict[str, Any]] = field(default_factory=dict)  # trial id -> Optuna params
    best: tuple[float, str] | None = None  # (value, trial run id)
    best_params: dict[str, Any] | None = None


class _NotPickled:
    """Tune pickles its searcher, scheduler and callbacks into its experiment state (for
    ``Tuner.restore``, which the study does not use: it resumes through MLflow). The
    driver-side objects hold locks and MLflow clients, so they pickle as empty shells."""

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)


class _State(_NotPickled):
    """What the searcher, scheduler and callback share (all in the driver process)."""

    def __init__(self, plan: Plan, todo: list[Task], done: dict[str, str], *,
                 checkpoint_uri: Callable[[str], str], meta: Mapping[str, Any],
                 faults: Mapping[str, int] | None, fault_dir: Callable[[], Path]):
        self.plan = plan
        self.tasks = {t.id: t for t in plan}
        self.pending: list[str] = [t.id for t in todo]
        self.done: dict[str, str] = dict(done)  # task id -> FINISHED run id
        self.failed: dict[str, str] = {}  # task id -> reason
        self.skipped: dict[str, str] = {}  # task id -> why never started
        self.trial_task: dict[str, str] = {}  # Tune trial id -> task id
        self.searches: dict[str, _Search] = {}
        self._ckpt_uri: dict[str, str] = {}
        self._checkpoint_uri = checkpoint_uri
        self.meta = dict(meta)
        self.faults = dict(faults or {})
        self.fault_dir = fault_dir
        self.lock = threading.RLock()

    def checkpoint_uri(self, pretrain_id: str) -> str:
        if pretrain_id not in self._ckpt_uri:
            self._ckpt_uri[pretrain_id] = self._checkpoint_uri(self.done[pretrain_id])
        return self._ckpt_uri[pretrain_id]

    def task_of(self, trial_id: str) -> Task | None:
        tid = self.trial_task.get(trial_id)
        return None if tid is None else self.tasks[tid]

    def search_of(self, trial_id: str) -> _Search | None:
        t = self.task_of(trial_id)
        return None if t is None else self.searches.get(t.id)

    def config_for(self, task: Task, trial_id: str, overrides: Mapping[str, Any] | None = None
                   ) -> dict[str, Any]:
        cfg = dict(task.config)
        if overrides:
            cfg.update(overrides)
        if task.kind == "finetune":
            cfg["init_checkpoint"] = self.checkpoint_uri(task.deps[0])
        meta = {**self.meta, "task_id": task.id}
        if task.id in self.faults:
            # once per task (the first trial of a search), marker keyed by task
            safe = re.sub(r"[^A-Za-z0-9_.-]", "_", task.id)
            meta["fail_once"] = {"iteration": self.faults.pop(task.id),
                                 "marker": str(self.fault_dir() / "faults" / safe)}
        cfg[STUDY_KEY] = meta
        self.trial_task[trial_id] = task.id
        return cfg


class StudySearcher(_NotPickled, Searcher):
    """Releases the plan's trial configs as their dependencies complete (see module doc)."""

    def __init__(self, state: _State):
        super().__init__(metric=None, mode=None)
        self.state = state

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True  # each search has its own metric; the study as a whole has none

    def suggest(self, trial_id: str) -> dict | str | None:
        st = self.state
        with st.lock:
            for tid in list(st.pending):
                task = st.tasks[tid]
                bad = [d for d in task.deps if d in st.failed or d in st.skipped]
                if bad:
                    st.pending.remove(tid)
                    st.skipped[tid] = f"dependency {bad[0]} did not finish"
                    continue
                if any(d not in st.done for d in task.deps):
                    continue
                if task.kind == "search":
                    cfg = self._suggest_search(st.searches[tid], trial_id)
                    if cfg is None:
                        continue
                    return cfg
                st.pending.remove(tid)
                return st.config_for(task, trial_id)
            return Searcher.FINISHED if not st.pending else None

    def _suggest_search(self, s: _Search, trial_id: str) -> dict | None:
        st = self.state
        params = s.searcher.suggest(trial_id)
        if params is None:
            return None  # at the search's concurrency limit
        s.suggested += 1
        if s.suggested >= s.task.trials:
            st.pending.remove(s.task.id)
        config = params.pop(_SPACE_KEY)
        s.params[trial_id] = params
        return st.config_for(s.task, trial_id, config)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        s = self.state.search_of(trial_id)
        if s is not None and s.metric in result:
            s.searcher.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        s = self.state.search_of(trial_id)
        if s is None:
            return
        complete = (
            not error and result is not None and s.metric in result
            and result.get("iteration", 0) >= s.task.config["iterations"]
        )
        # stopped early by ASHA (or never reported): PRUNED for Optuna
        s.searcher.on_trial_complete(trial_id, result if complete else None, error=error)

    # Resume goes through MLflow, not Tune's experiment checkpoints.
    def save(self, checkpoint_path: str) -> None:
        pass

    def restore(self, checkpoint_path: str) -> None:
        pass

    def save_to_dir(self, *args, **kwargs) -> None:
        pass

    def restore_from_dir(self, *args, **kwargs) -> None:
        pass

    def get_state(self) -> dict:
        return {}

    def set_state(self, state: dict) -> None:
        pass


class StudyScheduler(_NotPickled, FIFOScheduler):
    """FIFO for every trial, except a search's trials, which its ASHA decides on."""

    def __init__(self, state: _State):
        super().__init__()
        self.state = state

    def set_search_properties(self, metric, mode, **spec) -> bool:
        return True

    def _asha(self, trial) -> Any | None:
        s = self.state.search_of(trial.trial_id)
        return None if s is None else s.scheduler

    def on_trial_add(self, tune_controller, trial) -> None:
        a = self._asha(trial)
        if a is not None:
            a.on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial, result) -> str:
        a = self._asha(trial)
        if a is None:
            return TrialScheduler.CONTINUE
        return a.on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller, trial, result) -> None:
        a = self._asha(trial)
        if a is not None and trial.trial_id in a._trial_info:
            a.on_trial_complete(tune_controller, trial, result)

    def on_trial_error(self, tune_controller, trial) -> None:
        self.on_trial_remove(tune_controller, trial)

    def on_trial_remove(self, tune_controller, trial) -> None:
        a = self._asha(trial)
        if a is not None and trial.trial_id in a._trial_info:
            a.on_trial_remove(tune_controller, trial)

    def debug_string(self) -> str:
        return "Study scheduler: FIFO, ASHA per search"


# Key under which a wrapped search space returns its config values (the Optuna parameter
# names may differ from config keys, e.g. target_eighths -> joint_ratio).
_SPACE_KEY = "__config__"


def _wrap_space(fn: Callable[[Any], dict[str, Any]]) -> Callable[[Any], dict[str, Any]]:
    def space(trial: Any) -> dict[str, Any]:
        return {_SPACE_KEY: fn(trial)}

    return space


def _make_search(task: Task, study_name: str, short_hash: str) -> _Search:
    import optuna
    from ray.tune.schedulers import AsyncHyperBandScheduler
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    from search_spaces import get_space

    s = task.search
    assert s is not None
    storage = optuna.storages.RDBStorage(s.storage) if s.storage else None
    optuna_search = OptunaSearch(
        space=_wrap_space(get_space(s.space, **s.space_args)),
        metric=s.metric,
        mode="max",
        sampler=optuna.samplers.TPESampler(seed=s.seed),
        study_name=f"{study_name}-{short_hash}-{task.id}",
        storage=storage,
    )
    limited = ConcurrencyLimiter(optuna_search, max_concurrent=s.max_concurrent)
    asha = None
    if s.asha is not None:
        asha = AsyncHyperBandScheduler(
            time_attr="iteration",
            metric=s.metric,
            mode="max",
            max_t=task.config["iterations"],
            grace_period=s.asha.grace_period,
            reduction_factor=s.asha.reduction_factor,
        )
    return _Search(task=task, searcher=limited, scheduler=asha, metric=s.metric)


# -- tracking ---------------------------------------------------------------------------------


def _task_meta(task: Task, role: str = "task") -> TaskMeta:
    return TaskMeta(
        task_id=task.id,
        kind=task.kind,
        mode=task.mode,
        target=task.target,
        target_split=task.target_split,
        source=task.source or "",
        source_split=task.source_split or "",
        arrangement=task.arrangement,
        seed=task.seed,
        role=role,
    )


def _params(config: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k != STUDY_KEY}


def _error_reason(trial: Any) -> str:
    """The trial's latest error: its last line first, then the end of the traceback."""
    text = None
    # Tune appends every failure to the trial's local error file right away; the copy in
    # storage (``trial.get_error()``) may lag behind the callbacks
    with contextlib.suppress(Exception):
        if trial.error_file and Path(trial.error_file).is_file():
            text = Path(trial.error_file).read_text().split("Failure # ")[-1]
            text = text.split("\n", 1)[1] if "\n" in text else text
    if not text:
        with contextlib.suppress(Exception):
            text = trial.get_error()
    text = str(text) if text else "trial failed (no error recorded)"
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    last = lines[-1].strip() if lines else text
    return last if len(text) <= len(last) + 1 else f"{last}\n\n{text[-4000:]}"


class _Progress:
    """One line per finished / failed task on stdout (visible under ``ray job submit``)."""

    def __init__(self, total: int, enabled: bool = True, stream: Any = None):
        self.total, self.count, self.enabled = total, 0, enabled
        self.stream = stream or sys.stdout
        self.t0 = time.monotonic()

    def line(self, text: str) -> None:
        if self.enabled:
            print(text, file=self.stream, flush=True)

    def trial(self, status: str, name: str, result: Mapping[str, Any] | None, seconds: float
              ) -> None:
        self.count += 1
        acc = (result or {}).get("frame_acc")
        acc_s = f"frame_acc {acc:5.1f}" if isinstance(acc, int | float) else " " * 15
        el = time.monotonic() - self.t0
        self.line(f"[{self.count:>3}/{self.total}] {status:<8} {acc_s}  {seconds:6.1f}s  "
                  f"(+{el:6.0f}s)  {name}")


class TrackingCallback(_NotPickled, tune.Callback):
    """Writes every task and trial to MLflow from the driver (see the module doc)."""

    def __init__(self, state: _State, logger: RunLogger, study_run_id: str,
                 progress: _Progress):
        self.state, self.logger, self.study_run = state, logger, study_run_id
        self.progress = progress
        self.runs: dict[str, str] = {}  # trial id -> run id
        self.open: set[str] = set()  # run ids not yet ended
        self.logged_to: dict[str, int] = {}  # trial id -> last logged iteration
        self.node_tagged: set[str] = set()
        self.started: dict[str, float] = {}

    # -- runs ---------------------------------------------------------------------
    def _ensure_run(self, trial) -> str:
        tid = trial.trial_id
        if tid in self.runs:
            return self.runs[tid]
        task = self.state.task_of(tid)
        assert task is not None, f"trial {tid} has no task"
        params = _params(trial.config)
        s = self.state.searches.get(task.id)
        if s is None:
            rid = self.logger.start_task(self.study_run, _task_meta(task), params=params)
        else:
            if s.run_id is None:
                s.run_id = self.logger.start_task(
                    self.study_run, _task_meta(task), params=_params(task.config))
                self.open.add(s.run_id)
            rid = self.logger.start_task(
                self.study_run, _task_meta(task, role="trial"), params=params,
                parent_run_id=s.run_id)
            self.logger.set_tags(rid, {"ks.trial_params": json.dumps(
                s.params.get(tid, {}), sort_keys=True, default=str)})
        self.runs[tid] = rid
        self.open.add(rid)
        self.started[tid] = time.monotonic()
        return rid

    def _end(self, rid: str, status: str, reason: str | None = None) -> None:
        if rid in self.open:
            self.logger.end_task(rid, status, reason)
            self.open.discard(rid)

    # -- Tune hooks -----------------------------------------------------------------
    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        with self.state.lock:
            self._ensure_run(trial)

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        with self.state.lock:
            rid = self._ensure_run(trial)
            tid = trial.trial_id
            if tid not in self.node_tagged and result.get("node_id"):
                self.logger.set_tags(rid, {"ks.node": str(result["node_id"]),
                                           "ks.host": str(result.get("hostname", ""))})
                self.node_tagged.add(tid)
            it = int(result.get("iteration", 0))
            # a trial restored from a checkpoint replays nothing it already reported,
            # except after a crash mid-step: skip iterations already logged
            if it > self.logged_to.get(tid, -1):
                log_result(self.logger, rid, result)
                self.logged_to[tid] = it

    def on_trial_recover(self, iteration, trials, trial, **info) -> None:
        with self.state.lock:
            rid = self._ensure_run(trial)
            reason = _error_reason(trial)
            self.logger.set_tags(rid, {"ks.retries": str(trial.num_failures),
                                       "ks.last_error": reason[:4000]})
            self.progress.line(f"          retry    {trial.num_failures}: "
                               f"{self.state.trial_task.get(trial.trial_id)}: "
                               f"{reason.splitlines()[0]}")

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        with self.state.lock:
            self._complete(trial)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        with self.state.lock:
            self._fail(trial, _error_reason(trial))

    def _complete(self, trial) -> None:
        st, tid = self.state, trial.trial_id
        task = st.task_of(tid)
        rid = self._ensure_run(trial)
        result = dict(trial.last_result or {})
        seconds = time.monotonic() - self.started.get(tid, time.monotonic())
        if task.kind == "pretrain":
            try:
                ckpt = trial.checkpoint
                if ckpt is None:
                    raise RuntimeError("the pre-train ended without a checkpoint")
                with ckpt.as_directory() as d:
                    log_checkpoint(self.logger, rid, Path(d) / Path(CHECKPOINT_ARTIFACT).name)
            except Exception as e:  # the fine-tunes cannot start without it
                self._fail(trial, f"storing the checkpoint failed: {e!r}")
                return
        s = st.searches.get(task.id)
        if s is None:
            self._end(rid, "FINISHED")
            st.done[task.id] = rid
            self.progress.trial("done", task.id, result, seconds)
            return
        full = result.get("iteration", 0) >= task.config["iterations"]
        if not full:
            self.logger.set_tags(rid, {"ks.early_stopped": str(result.get("iteration"))})
        self._end(rid, "FINISHED")
        s.completed += 1
        s.succeeded += 1
        value = result.get(s.metric)
        if full and isinstance(value, int | float) and (s.best is None or value > s.best[0]):
            s.best = (float(value), rid)
            s.best_params = s.params.get(tid)
        label = f"{task.id} #{s.completed}/{task.trials}"
        self.progress.trial("done" if full else "stopped", label, result, seconds)
        self._maybe_finish_search(s)

    def _fail(self, trial, reason: str) -> None:
        st, tid = self.state, trial.trial_id
        task = st.task_of(tid)
        if task is None:
            return
        rid = self._ensure_run(trial)
        self._end(rid, "FAILED", reason)
        seconds = time.monotonic() - self.started.get(tid, time.monotonic())
        s = st.searches.get(task.id)
        if s is None:
            st.failed[task.id] = reason
            self.progress.trial("FAILED", f"{task.id}: {reason.splitlines()[0]}", None, seconds)
            return
        s.completed += 1
        self.progress.trial("FAILED", f"{task.id} #{s.completed}/{task.trials}: "
                            f"{reason.splitlines()[0]}", None, seconds)
        self._maybe_finish_search(s)

    def _maybe_finish_search(self, s: _Search) -> None:
        if s.completed < s.task.trials or s.run_id is None:
            return
        st = self.state
        if s.best is not None:
            self.logger.log_metrics(s.run_id, {f"best.{s.metric}": s.best[0]})
            self.logger.set_tags(s.run_id, {
                "ks.best_trial_run": s.best[1],
                "ks.best_params": json.dumps(s.best_params, sort_keys=True, default=str),
            })
            self._end(s.run_id, "FINISHED")
            st.done[s.task.id] = s.run_id
        else:
            reason = f"none of the {s.task.trials} trials ran to the end"
            self._end(s.run_id, "FAILED", reason)
            st.failed[s.task.id] = reason

    def close_open(self, status: str, reason: str) -> list[str]:
        """End every run still open (interrupt or error): no run is left RUNNING."""
        closed = []
        for rid in list(self.open):
            with contextlib.suppress(Exception):
                self._end(rid, status, reason)
                closed.append(rid)
        return closed


# -- preflight ------------------------------------------------------------------------------


def preflight(plan: Plan, source: Path | None = None) -> None:
    """Validate every task config as the trainable will (and sample each search space
    once), before any trial starts: a bad combination is a :class:`SpecError` naming the
    task, not a failed trial an hour later."""
    import optuna

    from search_spaces import get_space
    from trainables.lstm_config import TrainSpec

    problems: list[tuple[str, str]] = []
    for t in plan:
        cfg = dict(t.config)
        if t.kind == "finetune":
            cfg["init_checkpoint"] = "<the pre-train's checkpoint>"
        if t.search is not None:
            try:
                optuna.logging.set_verbosity(optuna.logging.WARNING)
                trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(0)).ask()
                cfg.update(get_space(t.search.space, **t.search.space_args)(trial))
            except (ValueError, TypeError) as e:
                problems.append(("search.space_args", f"space {t.search.space!r}: {e}"))
                continue
        try:
            TrainSpec.parse(cfg)
        except ValueError as e:
            problems.append((f"task {t.id}", str(e)))
    if problems:
        raise SpecError(problems, source)


# -- the driver -----------------------------------------------------------------------------


@dataclass
class StudyOutcome:
    """What a :func:`run_study` call did."""

    name: str
    hash: str
    study_run_id: str
    status: str  # FINISHED | FAILED | KILLED
    planned: int
    skipped_done: list[str]  # finished before this call
    finished: list[str]  # finished in this call
    failed: dict[str, str]  # task id -> reason
    not_run: dict[str, str]  # task id -> why (dependency failed, interrupted)
    closed_stale: list[str]  # RUNNING runs of an earlier driver, closed KILLED
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _checkpoint_uri_fn(logger: RunLogger, stage: Callable[[], Path]) -> Callable[[str], str]:
    """run id -> a URI of its checkpoint that a worker can read."""

    def uri(run_id: str) -> str:
        client = getattr(logger, "client", None)
        if client is not None:
            base = client.get_run(run_id).info.artifact_uri.rstrip("/")
            return f"{base}/{CHECKPOINT_ARTIFACT}"
        # a logger without artifact URIs: stage a local copy (single-machine use)
        return str(logger.download_artifact(run_id, CHECKPOINT_ARTIFACT, stage() / run_id))

    return uri


def _connect_ray(address: str | None, num_cpus: int | None, verbose: bool) -> bool:
    """Initialise Ray unless it already is; True if this call did (and should shut down)."""
    import ray

    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {
        "logging_level": logging.INFO if verbose else logging.WARNING,
        "log_to_driver": verbose,
        "configure_logging": True,
    }
    if address:
        ray.init(address=address, **kwargs)
    elif os.environ.get("RAY_ADDRESS"):
        ray.init(**kwargs)  # joins $RAY_ADDRESS (e.g. under `ray job submit`)
    else:
        # "local": a new Ray of our own, never a cluster someone `ray start`ed on this machine
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, **kwargs)
    return True


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (``ray job stop``, ``kill``) ends the study like Ctrl-C: runs end KILLED."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", name)[:120]


def run_study(
    loaded: LoadedStudy,
    *,
    address: str | None = None,
    tracking_uri: str | None = None,
    resume: bool = False,
    logger: RunLogger | None = None,
    num_cpus: int | None = None,
    storage_path: str | None = None,
    progress: bool = True,
    verbose: bool = False,
    trainable: type | None = None,
    inject_faults: Mapping[str, int] | None = None,
) -> StudyOutcome:
    """Run (or resume) a study: skip finished tasks, run the rest on Ray, log to MLflow.

    ``address`` / ``tracking_uri`` / ``storage_path`` override the spec's; ``num_cpus``
    limits a local Ray that this call starts. ``resume=True`` requires an earlier run of
    the same study hash (else :class:`study.tracking.StudyNotFound`); otherwise run and
    resume behave the same. ``inject_faults`` (tests): ``{task_id: iteration}`` makes that
    task's trial crash once right after reaching the iteration.
    """
    from .tracking import MlflowRunLogger, StudyNotFound

    t0 = time.monotonic()
    spec = loaded.spec
    plan = make_plan(spec)
    preflight(plan, spec.source)
    uri = tracking_uri or spec.tracking_uri
    logger = logger or MlflowRunLogger(uri)
    uri = getattr(logger, "tracking_uri", uri)  # absolute for sqlite: workers chdir
    if resume:
        try:
            logger.study_runs(spec.name, loaded.hash)
        except StudyNotFound:
            raise StudyNotFound(
                f"nothing to resume: study {spec.name!r} (hash {loaded.short_hash}) has no runs "
                f"at {uri}; start it with `kitchen-study run`") from None
    stale = logger.close_running(
        loaded.hash, "KILLED", "the study driver stopped before this run ended")
    finished_before = {k: v for k, v in logger.finished_tasks(loaded.hash).items()
                       if k in set(plan.ids)}
    study_run = logger.start_study(spec.name, loaded.hash, params={
        "study": spec.name, "hash": loaded.hash, "tasks": len(plan),
        "trials": plan.trial_count,
    })
    todo = [t for t in plan if t.id not in finished_before]
    out = StudyOutcome(spec.name, loaded.hash, study_run, "FINISHED", len(plan),
                       sorted(finished_before), [], {}, {}, stale, 0.0)
    pr = _Progress(sum(t.trials for t in todo), enabled=progress)
    pr.line(f"study {spec.name} ({loaded.short_hash}): {len(plan)} tasks, "
            f"{len(finished_before)} already finished, {len(todo)} to run "
            f"({pr.total} trials); tracking {uri}")
    if stale:
        pr.line(f"closed {len(stale)} run(s) left RUNNING by an earlier driver (KILLED)")
    if not todo:
        logger.end_study(study_run, "FINISHED")
        out.seconds = time.monotonic() - t0
        return out

    started_ray = _connect_ray(address or spec.ray_address, num_cpus, verbose)
    staged: list[Path] = []

    def stage() -> Path:  # made only when needed (fault markers, staged checkpoints)
        if not staged:
            staged.append(Path(tempfile.mkdtemp(prefix="ks-study-")))
        return staged[0]

    state = _State(
        plan, todo, finished_before,
        checkpoint_uri=_checkpoint_uri_fn(logger, stage),
        meta={"tracking_uri": uri, "study": spec.name, "hash": loaded.hash},
        faults=inject_faults, fault_dir=stage,
    )
    for t in todo:
        if t.kind == "search":
            state.searches[t.id] = _make_search(t, spec.name, loaded.short_hash)
    callback = TrackingCallback(state, logger, study_run, pr)
    status, reason = "FINISHED", None
    try:
        with _sigterm_as_interrupt():
            _fit(state, callback, trainable or StudyTrainable, spec, loaded,
                 storage_path, pr.total, verbose)
    except KeyboardInterrupt as e:
        status, reason = "KILLED", f"interrupted ({e or 'KeyboardInterrupt'})"
    except BaseException as e:
        status, reason = "FAILED", f"study driver error: {e!r}\n{traceback.format_exc()[-3000:]}"
        raise
    finally:
        leftover = callback.close_open("KILLED" if status != "FAILED" else "FAILED",
                                       reason or "the Tune run ended before this run did")
        logger.close_running(loaded.hash, "KILLED", reason or "the study driver stopped")
        out.finished = sorted(t for t in state.done if t not in finished_before)
        out.failed = dict(state.failed)
        out.not_run = dict(state.skipped)
        for tid in state.pending:
            out.not_run.setdefault(tid, reason or "not started")
        if status == "FINISHED" and (out.failed or out.not_run or leftover):
            status = "FAILED"
            reason = (f"{len(out.failed)} task(s) failed, {len(out.not_run)} not run: "
                      + "; ".join(f"{k}: {v.splitlines()[0]}" for k, v in
                                  list(out.failed.items())[:5]))
        out.status = status
        with contextlib.suppress(Exception):
            logger.end_study(study_run, status, reason)
        for d in staged:
            shutil.rmtree(d, ignore_errors=True)
        if started_ray:
            import ray

            ray.shutdown()
        out.seconds = time.monotonic() - t0
        pr.line(f"study {spec.name}: {status} in {out.seconds:.0f}s - {len(out.finished)} "
                f"finished, {len(out.failed)} failed, {len(out.not_run)} not run"
                + (f", {len(finished_before)} skipped (done before)" if finished_before else ""))
    return out


def _fit(state: _State, callback: Any, trainable: type, spec: Any, loaded: LoadedStudy,
         storage_path: str | None, trials: int, verbose: bool) -> None:
    # Tune's per-trial CSV/JSON/TensorBoard loggers: MLflow is the record here.
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    # Ctrl-C must reach run_study as KeyboardInterrupt (runs end KILLED); Tune's own handler
    # would swallow it and return as if the study had ended
    os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # a checkpoint per step is the point (restore after a crash), not a problem to warn of
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # Tune's result files are off (above), so its end-of-run analysis finds none: not news
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)

    def name(trial) -> str:
        return state.trial_task.get(trial.trial_id, trial.trial_id)

    def dirname(trial) -> str:
        return f"{_safe(name(trial))}_{trial.trial_id}"

    # Tune keeps only one trial PENDING for a custom searcher: a trial then waits for a
    # fresh actor (seconds: torch and Ray imports) while the running one finishes and is
    # reused, so a 2-CPU machine ran one trial at a time. Queue one per trial slot.
    import ray

    slots = ray.cluster_resources().get("CPU", 1) / max(spec.resources.cpu, 1e-9)
    os.environ.setdefault("TUNE_MAX_PENDING_TRIALS_PG", str(max(2, math.ceil(slots))))
    storage = storage_path or spec.storage_path
    if storage and "://" not in storage:
        storage = str(Path(storage).expanduser().resolve())
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=StudySearcher(state),
            scheduler=StudyScheduler(state),
            num_samples=trials,
            reuse_actors=spec.reuse_actors,
            trial_name_creator=name,
            trial_dirname_creator=dirname,
        ),
        run_config=tune.RunConfig(
            name=f"{_safe(spec.name)}-{loaded.short_hash}-{time.strftime('%Y%m%d-%H%M%S')}",
            storage_path=storage,
            failure_config=tune.FailureConfig(max_failures=spec.max_failures),
            checkpoint_config=tune.CheckpointConfig(
                checkpoint_frequency=1, checkpoint_at_end=True, num_to_keep=2
            ),
            callbacks=[callback],
            verbose=1 if verbose else 0,
        ),
    )
    tuner.fit()


# -- status ---------------------------------------------------------------------------------


def study_status(loaded: LoadedStudy, tracking_uri: str | None = None) -> list[dict[str, Any]]:
    """One row per planned task: ``id, kind, deps, trials, status`` (``FINISHED``,
    ``RUNNING``, ``FAILED``, ``KILLED`` of its latest run, or ``PENDING`` when it has none),
    ``run_id``, ``frame_acc`` and ``error``. Reads MLflow in bulk; needs no Ray."""
    from .tracking import MlflowRunLogger, StudyNotFound, sqlite_path

    spec = loaded.spec
    plan = make_plan(spec)
    uri = tracking_uri or spec.tracking_uri
    runs = []
    db = sqlite_path(uri)
    if db is None or db.is_file():
        with contextlib.suppress(StudyNotFound):
            runs = MlflowRunLogger(uri).study_runs(spec.name, loaded.hash)
    by_task: dict[str, list] = {}
    for r in runs:
        if r.role == "task":
            by_task.setdefault(r.tags.get("ks.task_id", ""), []).append(r)
    rows = []
    for t in plan:
        rs = sorted(by_task.get(t.id, []), key=lambda r: r.start_time or 0)
        fin = [r for r in rs if r.status == "FINISHED"]
        r = fin[-1] if fin else (rs[-1] if rs else None)
        acc = None if r is None else r.metrics.get("frame_acc")
        if acc is None and r is not None:
            acc = r.metrics.get("best.frame_acc")
        rows.append({
            "id": t.id, "kind": t.kind, "deps": list(t.deps), "trials": t.trials,
            "status": "PENDING" if r is None else r.status,
            "run_id": None if r is None else r.run_id,
            "frame_acc": None if acc is None or (isinstance(acc, float) and math.isnan(acc))
            else float(acc),
            "attempts": len(rs),
            "error": None if r is None else r.tags.get("ks.error"),
        })
    return rows
