"""The driver's Tune glue: which trial config runs next, and which trials a search's ASHA
may stop. Runs in the driver process only.

* :class:`StudySearcher` (a Tune ``Searcher``) hands out the plan's trial configs: a task's
  config is released as soon as its dependencies are done, so a fine-tune starts the moment
  its pre-train's checkpoint is stored, while unrelated tasks keep running. ``suggest``
  returns None while nothing is ready and ``Searcher.FINISHED`` once every task has been
  released (or skipped because a dependency failed). Ready tasks are released in plan order
  (pre-trains first: they unblock the most). With ``all_pairs.budget`` the conditional
  fine-tunes wait outside ``pending`` until every estimate task of their group has ended;
  then only the k best-estimated are released (:func:`study.budget.release`: the rule,
  the ties, the tags on the estimate runs); the others are recorded in
  ``StudyState.budget.skipped`` ("estimated, not trained"), which is not a failure.
* A search task owns a seeded-TPE ``OptunaSearch`` (define-by-run space from
  :mod:`search_spaces`, optional Optuna RDB storage) wrapped in a ``ConcurrencyLimiter``, and
  an ``AsyncHyperBandScheduler`` (ASHA, ``time_attr="iteration"``) that
  :class:`StudyScheduler` consults for that search's trials only (other trials are FIFO). A
  trial ASHA stops early is told to Optuna as PRUNED (its metric at a lower rung is not
  comparable with finished trials'); OptunaSearch ignores Optuna pruners, which is why ASHA
  does the early stopping. Intermediate values reach Optuna at the training iteration (the
  result's ``iteration``), not at Tune's step index, so optuna-dashboard's plots share the
  x axis of the MLflow curves. Each Optuna trial gets the user attribute
  :data:`USER_ATTR_RUN_ID` (its MLflow run id) once the callback has started that run
  (:meth:`SearchState.link_run`).
* :class:`StudyState` is what the searcher, the scheduler and the tracking callback
  (:mod:`study.callback`) share: pending, done, failed and skipped tasks, and which trial
  runs which task.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray.air.constants import TRAINING_ITERATION
from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher

from .budget import BudgetBook, release
from .estimates import estimate_request
from .halving import HalvingBook, mark_halved
from .mlflow_layout import (
    BEST_PREFIX,
    ITERATION_METRIC,
    RESULT_METRICS,
    TAG_OPTUNA_STUDY,
    TAG_OPTUNA_TRIAL,
    TAG_SEARCH_METRIC,
    TAG_TRIAL_PARAMS,
    clean_metrics,
    selection_metric,
)
from .plan import Plan, Task
from .tracking import RunLogger
from .trial import STUDY_KEY

__all__ = [
    "NotPickled",
    "SearchState",
    "StudyScheduler",
    "StudySearcher",
    "StudyState",
    "make_search",
]

#: The Optuna user attribute that links a trial to its MLflow run (``trial.user_attrs``).
USER_ATTR_RUN_ID = "mlflow_run_id"


@dataclass
class SearchState:
    """One search task's Optuna searcher, ASHA and progress (driver side)."""

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
    optuna_study: str = ""  # the Optuna study name (printed, and a tag on the search run)
    searched: frozenset[str] = frozenset()  # config keys the space decides
    configs: dict[str, dict[str, Any]] = field(default_factory=dict)  # trial id -> config values
    best_config: dict[str, Any] | None = None  # the best trial's config values
    best_result: dict[str, Any] | None = None  # the best trial's final result
    best_number: int | None = None  # the best trial's Optuna number (ties: the lower wins)
    reported: dict[str, int] = field(default_factory=dict)  # trial id -> last Optuna step

    def base_params(self) -> dict[str, Any]:
        """The search run's params before it ends: the task config without the keys the
        space decides (those become the best trial's values when the search ends; MLflow
        params cannot change once logged)."""
        return {k: v for k, v in self.task.trial_config().items() if k not in self.searched}

    def optuna_trial(self, trial_id: str) -> Any | None:
        """The Optuna trial behind a Tune trial. Ray's OptunaSearch keeps it in a private
        dict (``_ot_trials``) and offers no accessor; None if that ever changes."""
        inner = getattr(self.searcher, "searcher", self.searcher)  # ConcurrencyLimiter
        return getattr(inner, "_ot_trials", {}).get(trial_id)

    def link_run(self, trial_id: str, run_id: str) -> int | None:
        """Store the MLflow run id as the Optuna trial's :data:`USER_ATTR_RUN_ID` (written
        through the study's storage); returns the Optuna trial number (None: unknown)."""
        t = self.optuna_trial(trial_id)
        if t is None:
            return None
        t.set_user_attr(USER_ATTR_RUN_ID, run_id)
        return int(t.number)

    # -- what the tracking callback records (study.callback) ------------------------------
    def announce(self) -> str:
        """The line printed when the search starts: where to find it in Optuna."""
        storage = self.task.search.storage if self.task.search else None
        where = (f"storage {_mask_password(storage)}" if storage
                 else "in-memory storage (set search.storage to keep it)")
        return f"search {self.task.id}: Optuna study {self.optuna_study!r}, {where}"

    def run_tags(self) -> dict[str, str]:
        """Tags of the search task's run."""
        return {TAG_OPTUNA_STUDY: self.optuna_study, TAG_SEARCH_METRIC: self.metric}

    def trial_tags(self, trial_id: str, run_id: str) -> dict[str, str]:
        """Tags of a trial's run (its Optuna params and trial number); links the Optuna
        trial to ``run_id`` on the way (:meth:`link_run`)."""
        tags = {TAG_TRIAL_PARAMS: json.dumps(self.params.get(trial_id, {}), sort_keys=True,
                                             default=str)}
        number = self.link_run(trial_id, run_id)
        if number is not None:
            tags[TAG_OPTUNA_TRIAL] = str(number)
        return tags

    def record(self, trial_id: str, run_id: str, result: dict[str, Any], full: bool) -> None:
        """A trial ended: it becomes the best when it ran to the end (COMPLETE for Optuna)
        with a higher value than every other; a tie goes to the lower Optuna trial number,
        as Optuna's ``best_trial`` (and :func:`study.search_results.search_summary`) decide,
        whichever of the two finished first."""
        value = result.get(self.metric)
        if not (full and isinstance(value, int | float)):
            return
        t = self.optuna_trial(trial_id)
        number = int(t.number) if t is not None else None
        better = self.best is None or value > self.best[0] or (
            value == self.best[0] and number is not None and self.best_number is not None
            and number < self.best_number)
        if better:
            self.best_number = number
            self.best = (float(value), run_id)
            self.best_params = self.params.get(trial_id)
            self.best_config = self.configs.get(trial_id)
            self.best_result = dict(result)

    def best_metrics(self) -> dict[str, float]:
        """The search run's metrics when it ends: ``best.<metric>`` and the best trial's
        final evaluation metrics and iteration as the search run's own."""
        assert self.best is not None
        r = self.best_result or {}
        own = {m: r[m] for m in (*RESULT_METRICS, ITERATION_METRIC)
               if m not in ("loss", "frames_per_s") and isinstance(r.get(m), int | float)}
        return clean_metrics({**own, f"{BEST_PREFIX}{self.metric}": self.best[0]})

    def best_run_params(self) -> dict[str, Any]:
        """The searched config keys at the best trial's values (the rest was logged at
        the start, :meth:`base_params`)."""
        return {k: v for k, v in (self.best_config or {}).items() if k in self.searched}


class NotPickled:
    """Tune pickles its searcher, scheduler and callbacks into its experiment state (for
    ``Tuner.restore``, which the study does not use: it resumes through MLflow). The
    driver-side objects hold locks and MLflow clients, so they pickle as empty shells."""

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)


class StudyState(NotPickled):
    """What the searcher, scheduler and callback share (all in the driver process)."""

    def __init__(self, plan: Plan, todo: list[Task], done: dict[str, str], *,
                 checkpoint_uri: Callable[[str], str], meta: Mapping[str, Any],
                 faults: Mapping[str, int] | None, fault_dir: Callable[[], Path]):
        self.plan = plan
        self.tasks = {t.id: t for t in plan}
        #: study.budget: conditional fine-tunes wait in budget.held, not in pending
        self.budget = None if plan.budget is None else BudgetBook.start(
            plan.budget, [t.id for t in todo])
        held = set(self.budget.held) if self.budget is not None else set()
        #: study.halving: the rung decisions over the all_pairs fine-tunes
        self.halving = None if plan.halving is None else HalvingBook(plan.halving)
        if self.halving is not None:  # finished before this driver: no rung values here
            for tid in plan.halving.members & set(done):
                self.halving.drop(tid)
        self.pending: list[str] = [t.id for t in todo if t.id not in held]
        #: the RunLogger (the runner sets it): budget decisions read and tag estimate runs
        self.logger: RunLogger | None = None
        self.done: dict[str, str] = dict(done)  # task id -> FINISHED run id
        self.failed: dict[str, str] = {}  # task id -> reason
        self.skipped: dict[str, str] = {}  # task id -> why never started
        self.trial_task: dict[str, str] = {}  # Tune trial id -> task id
        self.searches: dict[str, SearchState] = {}
        self._ckpt_uri: dict[str, str] = {}
        self._checkpoint_uri = checkpoint_uri
        self.meta = dict(meta)
        self.faults = dict(faults or {})
        self.fault_dir = fault_dir
        #: study.packed_trial.Packer when packing is on (the runner sets it), else None
        self.packer: Any = None
        self.lock = threading.RLock()

    def checkpoint_uri(self, pretrain_id: str) -> str:
        if pretrain_id not in self._ckpt_uri:
            self._ckpt_uri[pretrain_id] = self._checkpoint_uri(self.done[pretrain_id])
        return self._ckpt_uri[pretrain_id]

    def task_of(self, trial_id: str) -> Task | None:
        tid = self.trial_task.get(trial_id)
        return None if tid is None else self.tasks[tid]

    def search_of(self, trial_id: str) -> SearchState | None:
        t = self.task_of(trial_id)
        return None if t is None else self.searches.get(t.id)

    def config_for(self, task: Task, trial_id: str, overrides: Mapping[str, Any] | None = None
                   ) -> dict[str, Any]:
        cfg = task.trial_config()
        if overrides:
            cfg.update(overrides)
        meta = {**self.meta, "task_id": task.id}
        if task.kind in ("finetune", "estimate"):
            cfg["init_checkpoint"] = self.checkpoint_uri(task.deps[0])
            # a budgeted edge's estimate task has estimated it (same config: same numbers)
            if self.budget is None or task.id not in self.budget.plan.conditional:
                meta["estimate"] = estimate_request(task, self.tasks[task.deps[0]])
            if task.kind == "estimate":
                meta["estimate_only"] = True  # study.trial: estimate, then end untrained
        if task.id in self.faults:
            # once per task (the first trial of a search), marker keyed by task
            safe = re.sub(r"[^A-Za-z0-9_.-]", "_", task.id)
            meta["fail_once"] = {"iteration": self.faults.pop(task.id),
                                 "marker": str(self.fault_dir() / "faults" / safe)}
        cfg[STUDY_KEY] = meta
        self.trial_task[trial_id] = task.id
        return cfg


class StudySearcher(NotPickled, Searcher):
    """Releases the plan's trial configs as their dependencies complete (see module doc)."""

    def __init__(self, state: StudyState):
        super().__init__(metric=None, mode=None)
        self.state = state

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True  # each search has its own metric; the study as a whole has none

    def suggest(self, trial_id: str) -> dict | str | None:
        st = self.state
        with st.lock:
            release(st)  # study.budget: a group whose estimates are in releases its k best
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
                halved = st.halving is not None and tid in st.halving.plan.members
                if st.packer is not None and not halved:  # with the ready tasks of its shape
                    pack = st.packer.take(st, task, trial_id)
                    if pack is not None:
                        return pack
                return st.config_for(task, trial_id)
            if release(st):  # an estimate skipped just now (its pre-train failed) ended a group
                return self.suggest(trial_id)
            held = st.budget is not None and st.budget.held
            return Searcher.FINISHED if not st.pending and not held else None

    def _suggest_search(self, s: SearchState, trial_id: str) -> dict | None:
        st = self.state
        params = s.searcher.suggest(trial_id)
        if params is None:
            return None  # at the search's concurrency limit
        s.suggested += 1
        if s.suggested >= s.task.trials:
            st.pending.remove(s.task.id)
        config = params.pop(_SPACE_KEY)
        s.params[trial_id] = params
        s.configs[trial_id] = dict(config)
        return st.config_for(s.task, trial_id, config)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        s = self.state.search_of(trial_id)
        if s is not None:
            self._report(s, trial_id, result)

    @staticmethod
    def _report(s: SearchState, trial_id: str, result: dict | None) -> None:
        """An evaluation result becomes an Optuna intermediate value, once per iteration,
        at the training iteration (OptunaSearch reads Tune's step index 1, 2, ...)."""
        if not result or s.metric not in result or "iteration" not in result:
            return
        it = int(result["iteration"])
        if s.reported.get(trial_id, -1) >= it:
            return
        s.reported[trial_id] = it
        s.searcher.on_trial_result(trial_id, {**result, TRAINING_ITERATION: it})

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        st = self.state
        if st.budget is not None and not error:  # an estimate task's values (study.budget)
            task = st.task_of(trial_id)
            if task is not None and task.kind == "estimate":
                st.budget.record(task.id, result)
        s = st.search_of(trial_id)
        if s is None:
            return
        complete = (
            not error and result is not None and s.metric in result
            and result.get("iteration", 0) >= s.task.config.iterations
        )
        # Tune hands the result on which ASHA stopped a trial to on_trial_complete only:
        # report it, so a pruned trial shows where it was pruned
        if not error:
            self._report(s, trial_id, result)
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


class StudyScheduler(NotPickled, FIFOScheduler):
    """FIFO for every trial, except a search's trials, which its ASHA decides on."""

    def __init__(self, state: StudyState):
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
            return self._halving(trial.trial_id, result)
        return a.on_trial_result(tune_controller, trial, result)

    def _halving(self, trial_id: str, result: Mapping[str, Any] | None) -> str:
        """study.halving: record a fine-tune's rung value, decide what can be decided, and
        STOP a halved fine-tune (CONTINUE every other trial)."""
        st = self.state
        h = st.halving
        task = st.task_of(trial_id)
        if h is None or task is None or task.id not in h.plan.members:
            return TrialScheduler.CONTINUE
        with st.lock:
            if result:
                h.observe(task.id, result)
            for tid in [*st.failed, *st.skipped]:
                if tid in h.plan.members:
                    h.drop(tid)
            for tid, rung in h.decide():
                if tid in st.done and st.logger is not None:  # ended before its rung decided
                    mark_halved(st.logger, st.done[tid], rung, st.tasks[tid].config.iterations)
            return TrialScheduler.STOP if h.stop(task.id) else TrialScheduler.CONTINUE

    def on_trial_complete(self, tune_controller, trial, result) -> None:
        self._halving(trial.trial_id, result)  # its last result may decide a rung
        a = self._asha(trial)
        if a is not None and trial.trial_id in a._trial_info:
            a.on_trial_complete(tune_controller, trial, result)

    def on_trial_error(self, tune_controller, trial) -> None:
        self.on_trial_remove(tune_controller, trial)
        task = self.state.task_of(trial.trial_id)
        if self.state.halving is not None and task is not None:
            self.state.halving.drop(task.id)  # no longer live: its group's rungs go on
            self._halving(trial.trial_id, None)

    def on_trial_remove(self, tune_controller, trial) -> None:
        a = self._asha(trial)
        if a is not None and trial.trial_id in a._trial_info:
            a.on_trial_remove(tune_controller, trial)

    def debug_string(self) -> str:
        return "Study scheduler: FIFO, ASHA per search, halving per target group"


# Key under which a wrapped search space returns its config values (the Optuna parameter
# names may differ from config keys, e.g. target_eighths -> joint_ratio).
_SPACE_KEY = "__config__"


def _wrap_space(fn: Callable[[Any], dict[str, Any]]) -> Callable[[Any], dict[str, Any]]:
    def space(trial: Any) -> dict[str, Any]:
        return {_SPACE_KEY: fn(trial)}

    return space


def _mask_password(url: str) -> str:
    """``scheme://user:secret@host`` -> ``scheme://user:***@host`` (printed, not stored)."""
    return re.sub(r"(//[^/:@]*:)[^/@]*@", r"\1***@", url)


def _searched_keys(space: Callable[[Any], dict[str, Any]]) -> frozenset[str]:
    """The config keys a space decides, from one throwaway in-memory sample (the spaces
    return a complete, fixed set of keys: see :mod:`search_spaces.lstm`)."""
    import optuna

    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(0)).ask()
    return frozenset(space(trial))


def optuna_study_name(study_name: str, short_hash: str, task_id: str) -> str:
    """The Optuna study of a search task: ``<study>-<short hash>-<task id>``."""
    return f"{study_name}-{short_hash}-{task_id}"


def make_search(task: Task, study_name: str, short_hash: str) -> SearchState:
    import optuna
    from ray.tune.schedulers import AsyncHyperBandScheduler
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    from search_spaces import get_space

    s = task.search
    assert s is not None
    storage = optuna.storages.RDBStorage(s.storage) if s.storage else None
    space = get_space(s.space, **s.space_args)
    name = optuna_study_name(study_name, short_hash, task.id)
    # what the search maximises: the validation part's metric under the validation protocol,
    # so neither Optuna nor ASHA ever reads a test video
    metric = selection_metric(s.metric, task.config.validation)
    optuna_search = OptunaSearch(
        space=_wrap_space(space),
        metric=metric,
        mode="max",
        sampler=optuna.samplers.TPESampler(seed=s.seed),
        study_name=name,
        storage=storage,
    )
    limited = ConcurrencyLimiter(optuna_search, max_concurrent=s.max_concurrent)
    asha = None
    if s.asha is not None:
        asha = AsyncHyperBandScheduler(
            time_attr="iteration",
            metric=metric,
            mode="max",
            max_t=task.config.iterations,
            grace_period=s.asha.grace_period,
            reduction_factor=s.asha.reduction_factor,
        )
    return SearchState(task=task, searcher=limited, scheduler=asha, metric=metric,
                       optuna_study=name, searched=_searched_keys(space))
