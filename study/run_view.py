"""What the MLflow UI shows of a study's runs, written by the driver (:mod:`study.callback`).

The layout's rules are in :mod:`study.mlflow_layout` ("What the MLflow UI shows"); this
module applies them as tasks start and finish:

* names: every planned task gets a readable name (:func:`~study.mlflow_layout.task_run_name`)
  made unique over the plan (a collision adds ``· <task id>``), the same on every resume;
  search trials are named ``trial <Optuna number> · <params>``; a trial ASHA stopped early
  gets ``· stopped @ <iteration>``;
* the datasets a run read (target, and source when it has one) as MLflow dataset inputs,
  when the logger supports them (:meth:`~study.tracking.MlflowRunLogger.log_inputs`);
* per-run ``gain.frame_acc`` by :class:`~study.mlflow_layout.GainBook` (seeded with the
  runs finished before this call, so a resumed study pairs with earlier baselines), and the
  study run's ``tasks_finished`` / ``best_gain.frame_acc``;
* each finished task's final LSTM as the MLflow model ``model``
  (:func:`study.models.log_temporal_model`) when ``log_models`` is on.

No Ray import: it is driven by plain calls (tests call it directly).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from . import mlflow_layout as layout
from .mlflow_layout import (
    BEST_GAIN_PREFIX,
    GAIN_CI_HIGH_PREFIX,
    GAIN_CI_LOW_PREFIX,
    GAIN_PREFIX,
    GAIN_SEEDS_METRIC,
    RUN_NAME_TAG,
    TASKS_FINISHED_METRIC,
    DatasetRef,
    GainBook,
    RunRecord,
    TaskMeta,
    experiment_note,
    stopped_name,
    task_run_name,
    trial_run_name,
)
from .tracking import RunLogger

__all__ = ["RunView", "plan_run_names", "start_view"]

log = logging.getLogger(__name__)
_METRIC = "frame_acc"


def _detail(task: Any) -> str:
    """What tells two tasks of the same kind, datasets, arrangement and seed apart."""
    if task.kind == "joint":
        ratio = getattr(task.config, "joint_ratio", None)
        return f"{ratio[0]}:{ratio[1]}" if ratio else ""
    if task.kind == "search" and getattr(task, "search", None) is not None:
        return str(task.search.space)
    if task.kind == "pretrain" and getattr(task.config, "arrangement_k", None) and \
            task.arrangement == "multiple_random":
        return f"k{task.config.arrangement_k}"
    return ""


def plan_run_names(tasks: Iterable[Any]) -> dict[str, str]:
    """``{task id: run name}`` for planner tasks, unique: a name two tasks would share gets
    ``· <task id>`` on each of them."""
    names = {t.id: task_run_name(TaskMeta.from_task(t), _detail(t)) for t in tasks}
    counts: dict[str, int] = {}
    for n in names.values():
        counts[n] = counts.get(n, 0) + 1
    return {tid: n if counts[n] == 1 else f"{n} · {tid}" for tid, n in names.items()}


class RunView:
    """Applies the UI rules (module doc) through a :class:`~study.tracking.RunLogger`."""

    def __init__(self, logger: RunLogger, study_run_id: str, tasks: Iterable[Any], *,
                 datasets: Mapping[str, DatasetRef] | None = None,
                 tracking_uri: str | None = None, log_models: bool = False,
                 finished: Iterable[RunRecord] = ()):
        tasks = list(tasks)
        self.logger, self.study_run = logger, study_run_id
        self.names = plan_run_names(tasks)
        self.tasks = {t.id: t for t in tasks}
        self.datasets = dict(datasets or {})
        self.tracking_uri, self.log_models = tracking_uri, log_models
        self.gains = GainBook()
        self.finished = 0
        for r in finished:  # earlier calls' runs: baselines and transfers to pair with
            t = self.tasks.get(r.task_id)
            if t is not None:
                self.finished += 1
                self.gains.add(TaskMeta.from_task(t), r.run_id, r.metrics.get(_METRIC))

    def _quiet(self, what: str, fn: Callable[[], Any]) -> None:
        """UI extras never fail a task: a failure is a warning."""
        try:
            fn()
        except Exception as e:
            log.warning("%s failed: %r", what, e)

    def _inputs(self, task: Any, run_id: str) -> None:
        log_inputs = getattr(self.logger, "log_inputs", None)
        refs = [self.datasets[n] for n in dict.fromkeys((task.target, task.source))
                if n and n in self.datasets]
        if log_inputs is not None and refs:
            self._quiet("logging dataset inputs", lambda: log_inputs(run_id, refs))

    def task_started(self, task: Any, run_id: str) -> None:
        """A task's (or a search's) run: its name and dataset inputs."""
        name = self.names.get(task.id, task.id)
        self.logger.set_tags(run_id, {RUN_NAME_TAG: name})
        self._inputs(task, run_id)

    def trial_started(self, task: Any, run_id: str, order: int,
                      params: Mapping[str, Any]) -> None:
        """A search trial's run: ``trial <N> · <params>`` with N the Optuna trial number
        when the run carries it (else ``order``, the suggestion order from 0)."""
        number: Any = order
        key = getattr(layout, "TAG_OPTUNA_TRIAL", None)
        if key is not None:
            with contextlib.suppress(Exception):
                number = self.logger.get_run(run_id).tags.get(key, order)
        self.logger.set_tags(run_id, {RUN_NAME_TAG: trial_run_name(number, params)})
        self._inputs(task, run_id)

    def trial_stopped(self, run_id: str, iteration: Any) -> None:
        """ASHA stopped the trial early: say so in its name."""
        name = self.logger.get_run(run_id).tags.get(RUN_NAME_TAG, "")
        if "stopped @" not in name:
            self.logger.set_tags(run_id, {RUN_NAME_TAG: stopped_name(name, iteration)})

    def task_finished(self, task: Any, run_id: str, result: Mapping[str, Any],
                      checkpoint: Callable[[], Any] | None = None) -> None:
        """A task's run FINISHED: its model, gains (its own or those it completes) and the
        study run's progress metrics. ``checkpoint()`` opens the final checkpoint directory
        (a context manager), for the model."""
        # a budget's estimate task trained nothing: no model of its own
        if self.log_models and checkpoint is not None and task.kind not in ("search",
                                                                             "estimate"):
            self._quiet(f"logging the model of {task.id}", lambda: self._model(run_id, checkpoint))
        self.finished += 1
        metrics = {TASKS_FINISHED_METRIC: float(self.finished)}
        meta = TaskMeta.from_task(task)
        changed = self.gains.add(meta, run_id, result.get(_METRIC))
        for rid, g in changed.items():
            self.logger.log_metrics(rid, {f"{GAIN_PREFIX}{_METRIC}": g})
        for rid, (lo, hi, n) in self.gains.intervals(changed).items():
            self.logger.log_metrics(rid, {f"{GAIN_CI_LOW_PREFIX}{_METRIC}": lo,
                                          f"{GAIN_CI_HIGH_PREFIX}{_METRIC}": hi,
                                          GAIN_SEEDS_METRIC: float(n)})
        if self.gains.best is not None:
            metrics[f"{BEST_GAIN_PREFIX}{_METRIC}"] = self.gains.best
        self.logger.log_metrics(self.study_run, metrics, step=self.finished)

    def _model(self, run_id: str, checkpoint: Callable[[], Any]) -> None:
        import os
        import warnings

        from .mlflow_layout import CHECKPOINT_ARTIFACT

        # MLflow's advice on type hints, input examples and cloudpickle, and its download
        # progress bar, once per task in the study's progress output: not news here
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        pyfunc_log = logging.getLogger("mlflow.pyfunc")
        level = pyfunc_log.level
        pyfunc_log.setLevel(logging.ERROR)
        # mlflow.start_run(run_id) below writes around the logger (it sets the run RUNNING,
        # then FINISHED): only while this driver still holds the study's lease
        getattr(self.logger, "check_fence", lambda: None)()
        try:
            with checkpoint() as d, warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                from .models import log_temporal_model

                log_temporal_model(run_id, Path(d) / Path(CHECKPOINT_ARTIFACT).name,
                               self.tracking_uri)
        finally:
            pyfunc_log.setLevel(level)



def start_view(logger: RunLogger, study_run_id: str, plan: Any, loaded: Any, tracking_uri: str,
               finished_before: Mapping[str, str]) -> RunView:
    """The driver's :class:`RunView` for a study call: the experiment's description from the
    spec, dataset refs from the cards, earlier finished runs for the gains, models logged
    when the logger is MLflow's."""
    spec = loaded.spec
    note = getattr(logger, "set_experiment_note", None)
    if note is not None:
        text = experiment_note(spec.name, spec.description, list(spec.datasets),
                               plan.counts(), loaded.hash)
        with contextlib.suppress(Exception):  # a description is not worth failing a study
            note(spec.name, text)
    refs = {n: DatasetRef.from_card(n, card, spec.dataset_path(n))
            for n, card in loaded.cards.items()}
    done = set(finished_before.values())
    finished = ([r for r in logger.study_runs(spec.name, loaded.hash) if r.run_id in done]
                if done else [])
    return RunView(logger, study_run_id, plan, datasets=refs, tracking_uri=tracking_uri,
                   log_models=hasattr(logger, "client"), finished=finished)
