"""The study driver: executes a plan on Ray Tune, logs everything to MLflow, resumes.

What runs where (one module per process role):

* the driver (this module): :func:`run_study` checks the plan (:func:`preflight`), connects
  to Ray, resumes from MLflow and runs ONE Tune run over the whole plan (no stage barrier);
* the Tune glue in the driver (:mod:`study.scheduling`): a searcher that releases each
  task's config as soon as its dependencies are done, and a scheduler that applies each
  search's ASHA to that search's trials only;
* the MLflow writer in the driver (:mod:`study.callback`): a Tune callback, the only writer
  to the tracking store (layout: :mod:`study.mlflow_layout`);
* the worker (:mod:`study.trial`): :class:`~study.trial.StudyTrainable`, the LSTM trainable
  plus the study's plumbing (fetching a pre-train's checkpoint by URI, fault injection);
* read-only status (:mod:`study.status`) and queries (:mod:`study.query`) need no Ray.

Rules:

* **Checkpoints**: pre-train checkpoints are uploaded as the artifact ``checkpoint/lstm.pt``;
  fine-tunes receive its artifact URI as ``init_checkpoint`` and the worker fetches it (a
  local file is used in place; other URIs are downloaded with MLflow), so a cluster needs no
  shared disk for checkpoints, only a tracking server that serves artifacts.
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
* **Where Ray comes from** (:func:`study.local_ray.connect_ray`): an already initialised Ray
  is used as is; else ``address`` (CLI ``--address``, then the spec's ``ray_address``); else
  ``$RAY_ADDRESS`` when set (as under ``ray job submit``); else a local Ray of its own,
  bound to 127.0.0.1.
* A study that FINISHES gets its convergence plots on the parent run
  (:func:`study.report.publish_convergence_plots`).

One driver per study at a time: a second driver on the same study hash would close the
first one's runs as stale. Ray, Tune and torch are imported only when a study runs, so
``preflight`` (``kitchen-study run --dry-run``) needs neither.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import shutil
import signal
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .mlflow_layout import CHECKPOINT_ARTIFACT
from .plan import Plan, make_plan
from .spec import LoadedStudy, SpecError
from .tracking import RunLogger

__all__ = ["StudyOutcome", "preflight", "run_study"]

log = logging.getLogger(__name__)


def preflight(plan: Plan, source: Path | None = None) -> None:
    """Sample each search space once and validate the trial config it makes, before any
    trial starts: a bad combination is a :class:`SpecError` naming the task, not a failed
    trial an hour later. (Every other task config is a ``TrainSpec`` the planner validated.)"""
    searches = [t for t in plan if t.search is not None]
    if not searches:
        return
    import optuna

    from search_spaces import get_space
    from trainables.lstm_config import TrainSpec

    problems: list[tuple[str, str]] = []
    for t in searches:
        try:
            optuna.logging.set_verbosity(optuna.logging.WARNING)
            trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(0)).ask()
            cfg = {**t.trial_config(), **get_space(t.search.space, **t.search.space_args)(trial)}
        except (ValueError, TypeError) as e:
            problems.append(("search.space_args", f"space {t.search.space!r}: {e}"))
            continue
        try:
            TrainSpec.parse(cfg)
        except ValueError as e:
            problems.append((f"task {t.id}", str(e)))
    if problems:
        raise SpecError(problems, source)


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
    from .mlflow_layout import StudyNotFound
    from .tracking import MlflowRunLogger

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
    pr = _progress(sum(t.trials for t in todo), enabled=progress)
    pr.line(f"study {spec.name} ({loaded.short_hash}): {len(plan)} tasks, "
            f"{len(finished_before)} already finished, {len(todo)} to run "
            f"({pr.total} trials); tracking {uri}")
    if stale:
        pr.line(f"closed {len(stale)} run(s) left RUNNING by an earlier driver (KILLED)")
    if not todo:
        _end_study(logger, study_run, "FINISHED")
        out.seconds = time.monotonic() - t0
        return out

    from .callback import TrackingCallback
    from .local_ray import connect_ray
    from .scheduling import StudyState, make_search
    from .trial import StudyTrainable

    started_ray = connect_ray(address or spec.ray_address, num_cpus, verbose)
    staged: list[Path] = []

    def stage() -> Path:  # made only when needed (fault markers, staged checkpoints)
        if not staged:
            staged.append(Path(tempfile.mkdtemp(prefix="ks-study-")))
        return staged[0]

    state = StudyState(
        plan, todo, finished_before,
        checkpoint_uri=_checkpoint_uri_fn(logger, stage),
        meta={"tracking_uri": uri, "study": spec.name, "hash": loaded.hash},
        faults=inject_faults, fault_dir=stage,
    )
    for t in todo:
        if t.kind == "search":
            state.searches[t.id] = make_search(t, spec.name, loaded.short_hash)
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
            _end_study(logger, study_run, status, reason)
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


def _fit(state: Any, callback: Any, trainable: type, spec: Any, loaded: LoadedStudy,
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
    from ray import tune

    from .scheduling import StudyScheduler, StudySearcher

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


def _progress(total: int, enabled: bool) -> Any:
    from .callback import Progress

    return Progress(total, enabled=enabled)


def _end_study(logger: RunLogger, study_run: str, status: str, reason: str | None = None
               ) -> None:
    """End the parent run; a FINISHED study first gets its convergence plots. A plot that
    fails is a warning, never a study left RUNNING."""
    if status == "FINISHED":
        try:
            from .report import publish_convergence_plots

            publish_convergence_plots(logger, study_run)
        except Exception as e:  # the results are stored; only the figures are missing
            log.warning("convergence plots not logged: %r", e)
    logger.end_study(study_run, status, reason)
