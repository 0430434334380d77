"""The driver's MLflow writer: a Tune callback that records every task and trial.

:class:`TrackingCallback` runs in the driver only (workers never write to the store): one
MLflow child run per task (search trials nested under their search task's run), params =
the task config, metrics per result, the ``ks.node`` tag from the first result. A pre-train's
checkpoint is uploaded as the artifact ``checkpoint/lstm.pt`` when it completes. A crashed
trial that Tune restarts from its checkpoint keeps its run (tags ``ks.retries`` and
``ks.last_error``); one that exhausts its retries ends FAILED with the reason in
``ks.error``. A search's run ends when its last trial does, with ``best.<metric>`` and the
best trial's searched params and final metrics as its own (:class:`SearchState`), tagged with
its Optuna study name; each trial run is tagged with its Optuna trial number, and the Optuna
trial carries the run id as the user attribute ``mlflow_run_id``. Progress: one line per
finished trial on stdout (:class:`Progress`).
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ray import tune

from .budget import TAG_BUDGET_BY
from .estimates import result_estimates
from .halving import HALVING, mark_halved
from .mlflow_layout import (
    CHECKPOINT_ARTIFACT,
    ROLE_TRIAL,
    TAG_BEST_PARAMS,
    TAG_BEST_TRIAL_RUN,
    TAG_EARLY_STOPPED,
    TAG_HOST,
    TAG_LAST_ERROR,
    TAG_PACK,
    TAG_RETRIES,
    TaskMeta,
    task_tag,
)
from .packed_trial import MEMBER_ERROR, PackMember, pack_members
from .plan import CHECKPOINT_KINDS
from .run_view import RunView
from .scheduling import NotPickled, SearchState, StudyState
from .store_checks import full_disk, stops_on_full_disk
from .tracking import RunLogger, log_checkpoint, log_result
from .trial import STUDY_KEY

__all__ = ["Progress", "TrackingCallback"]


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


class Progress:
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


class TrackingCallback(NotPickled, tune.Callback):
    """Writes every task and trial to MLflow from the driver (see the module doc)."""

    def __init__(self, state: StudyState, logger: RunLogger, study_run_id: str,
                 progress: Progress, view: RunView | None = None):
        self.state, self.logger, self.study_run = state, logger, study_run_id
        self.progress = progress
        self.view = view  # names, dataset inputs, gains, models (study.run_view)
        self.runs: dict[str, str] = {}  # trial id -> run id
        self.open: set[str] = set()  # run ids not yet ended
        self.logged_to: dict[str, int] = {}  # trial id -> last logged iteration
        self.node_tagged: set[str] = set()
        self.estimated: set[str] = set()  # trial ids whose edge estimates are logged
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
            rid = self.logger.start_task(self.study_run, TaskMeta.from_task(task), params=params)
            if self.view is not None:
                self.view.task_started(task, rid)
        else:
            if s.run_id is None:
                s.run_id = self.logger.start_task(
                    self.study_run, TaskMeta.from_task(task), params=s.base_params())
                self.open.add(s.run_id)
                if self.view is not None:
                    self.view.task_started(task, s.run_id)
                self.logger.set_tags(s.run_id, s.run_tags())
                self.progress.line(s.announce())
            rid = self.logger.start_task(
                self.study_run, TaskMeta.from_task(task, role=ROLE_TRIAL), params=params,
                parent_run_id=s.run_id)
            self.logger.set_tags(rid, s.trial_tags(tid, rid))
            if self.view is not None:
                order = list(s.params).index(tid) if tid in s.params else len(s.params)
                self.view.trial_started(task, rid, order, s.params.get(tid, {}))
        self.runs[tid] = rid
        self.open.add(rid)
        self.started[tid] = time.monotonic()
        if isinstance(trial, PackMember):
            self.logger.set_tags(rid, {TAG_PACK: trial.pack})
        return rid

    def _members(self, trial, result=None) -> list[tuple[Any, Any]]:
        """``[(trial, result)]``; for a pack trial (:mod:`study.packed_trial`) each member
        whose run is still open, as a trial of its own with its part of the result. A
        member whose part reports its failure ends FAILED here and is left out."""
        views = pack_members(trial, result)
        if views is None:
            return [(trial, result)]
        out = []
        with self.state.lock:
            for view, part in views:
                rid = self.runs.get(view.trial_id)
                if rid is not None and rid not in self.open:
                    continue  # ended earlier (failed)
                if part is not None and MEMBER_ERROR in part:
                    self._fail(view, part[MEMBER_ERROR])
                    continue
                out.append((view, part))
        return out

    def _end(self, rid: str, status: str, reason: str | None = None) -> None:
        if rid in self.open:
            self.logger.end_task(rid, status, reason)
            self.open.discard(rid)

    # -- Tune hooks -----------------------------------------------------------------
    @stops_on_full_disk  # a full disk stops the study (one line), not this trial
    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        with self.state.lock:
            for t, _ in self._members(trial):
                self._ensure_run(t)

    @stops_on_full_disk
    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        for t, r in self._members(trial, result):
            if r is not None:
                self._result(t, r)

    def _result(self, trial, result) -> None:
        with self.state.lock:
            rid = self._ensure_run(trial)
            tid = trial.trial_id
            if tid not in self.node_tagged and result.get("node_id"):
                self.logger.set_tags(rid, {task_tag("node"): str(result["node_id"]),
                                           TAG_HOST: str(result.get("hostname", ""))})
                self.node_tagged.add(tid)
            it = int(result.get("iteration", 0))
            # a trial restored from a checkpoint replays nothing it already reported,
            # except after a crash mid-step: skip iterations already logged
            if it > self.logged_to.get(tid, -1):
                log_result(self.logger, rid, result)
                self.logged_to[tid] = it
            if tid not in self.estimated and (result.get("estimates")
                                              or result.get("estimate_error")):
                self.estimated.add(tid)  # once per trial (a restored trial reports again)
                metrics, tags = result_estimates(result)
                self.logger.log_metrics(rid, metrics, step=0)
                if tags:
                    self.logger.set_tags(rid, tags)

    @stops_on_full_disk
    def on_trial_recover(self, iteration, trials, trial, **info) -> None:
        for t, _ in self._members(trial):
            self._recover(t)

    def _recover(self, trial) -> None:
        with self.state.lock:
            rid = self._ensure_run(trial)
            reason = _error_reason(trial)
            self.logger.set_tags(rid, {TAG_RETRIES: str(trial.num_failures),
                                       TAG_LAST_ERROR: reason[:4000]})
            self.progress.line(f"          retry    {trial.num_failures}: "
                               f"{self.state.trial_task.get(trial.trial_id)}: "
                               f"{reason.splitlines()[0]}")

    @stops_on_full_disk
    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        with self.state.lock:
            for t, _ in self._members(trial, trial.last_result):
                self._complete(t)

    @stops_on_full_disk
    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        with self.state.lock:
            for t, _ in self._members(trial):
                self._fail(t, _error_reason(trial))

    def _complete(self, trial) -> None:
        st, tid = self.state, trial.trial_id
        task = st.task_of(tid)
        rid = self._ensure_run(trial)
        result = dict(trial.last_result or {})
        seconds = time.monotonic() - self.started.get(tid, time.monotonic())
        if task.kind in CHECKPOINT_KINDS:  # a fine-tune may start from it, now or later
            try:
                ckpt = trial.checkpoint
                if ckpt is None:
                    raise RuntimeError("the pre-train ended without a checkpoint")
                with ckpt.as_directory() as d:
                    log_checkpoint(self.logger, rid, Path(d) / Path(CHECKPOINT_ARTIFACT).name)
            except Exception as e:  # the fine-tunes cannot start without it
                if full_disk(e) is not None:
                    raise  # not this task's fault: the study stops (stops_on_full_disk)
                self._fail(trial, f"storing the checkpoint failed: {e!r}")
                return
        s = st.searches.get(task.id)
        if s is None:
            h = st.halving
            if h is not None and task.id in h.plan.members:  # study.halving
                self.logger.set_tags(rid, {TAG_BUDGET_BY: HALVING})
            self._end(rid, "FINISHED")
            st.done[task.id] = rid
            if self.view is not None:
                self.view.task_finished(task, rid, result,
                                        lambda: trial.checkpoint.as_directory())
            if h is not None and h.stop(task.id):  # halved: after the view named the run
                mark_halved(self.logger, rid, h.halved[task.id], result.get("iteration"))
            self.progress.trial("done", task.id, result, seconds)
            return
        full = result.get("iteration", 0) >= task.config.iterations
        if not full:
            self.logger.set_tags(rid, {TAG_EARLY_STOPPED: str(result.get("iteration"))})
            if self.view is not None:
                self.view.trial_stopped(rid, result.get("iteration"))
        self._end(rid, "FINISHED")
        s.completed += 1
        s.succeeded += 1
        s.record(tid, rid, result, full)
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

    def _maybe_finish_search(self, s: SearchState) -> None:
        if s.completed < s.task.trials or s.run_id is None:
            return
        st = self.state
        if s.best is not None:
            # the best trial's params and metrics as the search run's own
            self.logger.log_params(s.run_id, s.best_run_params())
            self.logger.log_metrics(s.run_id, s.best_metrics())
            self.logger.set_tags(s.run_id, {
                TAG_BEST_TRIAL_RUN: s.best[1],
                TAG_BEST_PARAMS: json.dumps(s.best_params, sort_keys=True, default=str),
            })
            self._end(s.run_id, "FINISHED")
            st.done[s.task.id] = s.run_id
            if self.view is not None:
                self.view.task_finished(s.task, s.run_id, {})
        else:
            reason = f"none of the {s.task.trials} trials ran to the end"
            self._end(s.run_id, "FAILED", reason)
            st.failed[s.task.id] = reason

    def _where(self, rid: str) -> str:
        """How far an open run had come: ``at iteration N`` (its last logged result), or how
        many of a search's trials had ended."""
        for s in self.state.searches.values():
            if s.run_id == rid:
                return f"after {s.completed} of {s.task.trials} trials ended"
        tid = next((t for t, r in self.runs.items() if r == rid), None)
        it = self.logged_to.get(tid) if tid is not None else None
        return "before its first result" if it is None else f"at iteration {it}"

    def close_open(self, status: str, reason: str) -> list[str]:
        """End every run still open (interrupt or error): no run is left RUNNING, and each
        says why and where (``interrupted by the user (SIGINT, Ctrl-C) at iteration 200``)."""
        closed = []
        for rid in list(self.open):
            first, _, rest = reason.partition("\n")  # (a driver error's traceback after)
            with contextlib.suppress(Exception):
                self._end(rid, status, f"{first} {self._where(rid)}" + (f"\n{rest}" if rest
                                                                       else ""))
                closed.append(rid)
        return closed
