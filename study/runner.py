"""The study driver: executes a plan on Ray Tune, logs everything to MLflow, resumes.

What runs where (one module per process role):

* the driver (this module): :func:`run_study` checks the plan (:func:`preflight`), connects
  to Ray, resumes from MLflow and runs ONE Tune run over the whole plan (no stage barrier);
* the Tune glue in the driver (:mod:`study.scheduling`): a searcher that releases each
  task's config as soon as its dependencies are done, and a scheduler that applies each
  search's ASHA to that search's trials only;
* the MLflow writer in the driver (:mod:`study.callback`): a Tune callback, the only writer
  to the tracking store (layout: :mod:`study.mlflow_layout`);
* the worker (:mod:`study.worker`): :class:`~study.worker.StudyTrainable`, the trainable
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

**One driver per study** (:mod:`study.lease`): ``run``/``resume`` take the study's lease
in the tracking store (host, pid, start time; a heartbeat) before touching its runs; a second
driver refuses with one line naming the holder, and ``resume`` takes over a stale lease (its
driver dead or its heartbeat expired), closing that driver's runs KILLED. **Fencing**: every
write goes through the logger's fence (the lease's check), so a driver that lost its lease
(stopped past the lease's expiry, then woken) stops and writes nothing more; it ends with
:class:`~study.lease.LeaseLost`, one line, exit 2. **Resources**: a
trial asking more CPUs/GPUs than the largest node has is refused before anything is written
(a local Ray) or as soon as Ray is connected (a cluster; :func:`resource_problems`).
Ray, Tune and torch are imported only when a study runs, so ``preflight``
(``kitchen-study run --dry-run``) needs neither.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data_prep.errors import DataError

from .mlflow_layout import CHECKPOINT_ARTIFACT
from .plan import Plan, make_plan
from .spec import SpecError
from .spec_data import LoadedStudy
from .store_checks import full_disk
from .tracking import RunLogger
from .uri import check_store_outlives_job, resolve_tracking_uri

__all__ = ["StudyOutcome", "preflight", "run_study"]

log = logging.getLogger(__name__)

#: Trials one study may plan: a bound on what a spec can ask for (a typo such as 10^6 seeds
#: would otherwise queue a million trials). The paper's study plans a few hundred.
MAX_TRIALS = 20_000


def preflight(plan: Plan, source: Path | None = None) -> None:
    """Sample each search space once and validate the trial config it makes, before any
    trial starts: a bad combination is a :class:`SpecError` naming the task, not a failed
    trial an hour later. (Every other task config is a ``TrainSpec`` the planner validated.)"""
    if plan.trial_count > MAX_TRIALS:
        raise SpecError([("experiments", f"the plan has {plan.trial_count:,} trials in "
                          f"{len(plan):,} tasks, above the limit of {MAX_TRIALS:,} per study: "
                          "fewer seeds, edges or search samples, or split the study")], source)
    searches = [t for t in plan if t.search is not None]
    if not searches:
        return
    import optuna

    from search_spaces import get_space
    from trainables.train_config import TrainSpec

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
    reused: list[str] = field(default_factory=list)  # adopted from earlier versions

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _checkpoint_uri_fn(logger: RunLogger, stage: Callable[[], Path]) -> Callable[[str], str]:
    """run id -> a URI of its checkpoint that a worker can read."""

    def uri(run_id: str) -> str:
        from .reuse import origin_run

        run_id = origin_run(logger, run_id)  # an adopted run's checkpoint is its original's
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


def resource_problems(cpu: float, gpu: float, nodes: list[Mapping[str, float]]
                      ) -> list[tuple[str, str]]:
    """``(key, message)`` when a trial's ``resources`` exceed the largest node in ``nodes``
    (Ray's per-node resources): such a trial could never start and Tune would wait forever.
    A resource no node reports (GPUs of a local Ray not started yet) is not checked. An
    autoscaler that could add a larger node is not foreseen: start one first."""
    problems = []
    for key, want, res in (("resources.cpu", cpu, "CPU"), ("resources.gpu", gpu, "GPU")):
        have = [float(n[res]) for n in nodes if res in n]
        if want > 0 and have and want > max(have):
            problems.append((key, f"{want:g} {res}s per trial, but the largest Ray node has "
                                  f"{max(have):g} ({len(have)} node(s)): no trial could start"))
    return problems


def _check_local_resources(spec: Any, address: str | None, num_cpus: int | None) -> None:
    """Before anything is written: the CPUs of the local Ray this call would start."""
    import sys

    ray = sys.modules.get("ray")
    if address or spec.ray_address:  # nothing listening there: one line, before any write
        from .local_ray import probe_address

        probe_address(address or spec.ray_address)
    if (address or spec.ray_address or os.environ.get("RAY_ADDRESS")
            or (ray is not None and ray.is_initialized())):
        return  # a cluster or a running Ray: checked once connected (_fit)
    if num_cpus is not None and num_cpus < 1:  # a Ray with no CPU would run nothing, forever
        raise SpecError([("--num-cpus", f"{num_cpus}: a local Ray needs at least 1 CPU")],
                        spec.source)
    problems = resource_problems(spec.resources.cpu, 0.0, [{"CPU": num_cpus or os.cpu_count()}])
    if problems:
        raise SpecError(problems, spec.source)


def _take_lease(logger: RunLogger, loaded: LoadedStudy, resume: bool) -> Any:
    """The study's lease (:mod:`study.lease`), or None for a logger without an MLflow store
    (the tests' in-memory logger)."""
    from .tracking import MlflowRunLogger

    if not isinstance(logger, MlflowRunLogger):  # (not hasattr: that opens the store)
        return None
    uri = logger.tracking_uri
    import _thread

    from .lease import acquire_lease

    on_lost = None
    if threading.current_thread() is threading.main_thread():
        def on_lost(holder: Any) -> None:  # stop like Ctrl-C; the runs are not ours now
            _thread.interrupt_main()
    lease = acquire_lease(uri, loaded.spec.name, loaded.hash, takeover=resume,
                          where=loaded.spec.source, on_lost=on_lost)
    logger.fence = lease.check  # every write from now on: only while the lease is ours
    return lease


def run_study(loaded: LoadedStudy, **kwargs: Any) -> StudyOutcome:
    """Run (or resume) a study (:func:`_run_study` has the parameters and rules), holding
    the study's lease (:mod:`study.lease`) from before the first write until it returns."""
    leases: list[Any] = []
    try:
        out = _run_study(loaded, leases=leases, **kwargs)
    except BaseException:
        _raise_if_lost(leases)  # whatever stopped it, the one line says the lease was lost
        raise
    finally:
        for lease in leases:
            lease.release()
    _raise_if_lost(leases)
    return out


def _raise_if_lost(leases: list[Any]) -> None:
    """A driver that lost its lease (fencing, :mod:`study.lease`) ends with
    :class:`~study.lease.LeaseLost`: one line, never a status that looks like its own."""
    for lease in leases:
        if lease.lost:
            try:
                lease.check()
            except Exception as e:
                raise e from None


def _run_study(
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
    leases: list[Any] | None = None,
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
    plan = make_plan(spec, loaded.cards)
    preflight(plan, spec.source)
    _check_local_resources(spec, address, num_cpus)
    uri = resolve_tracking_uri(tracking_uri, spec.tracking_uri)  # the one rule: study.uri
    check_store_outlives_job(uri)  # a SQLite file in a Ray job's temp dir: refused
    # MLflow prints "View run ... at: URL" per ended run on a tracking server: not progress
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    # MLflow's SQL store logs every database error with its whole traceback before raising
    # it (hundreds of lines for a full disk); the error reaches this driver, which says it
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
    logger = logger or MlflowRunLogger(uri)
    uri = getattr(logger, "tracking_uri", uri)  # absolute for sqlite: workers chdir
    lease = _take_lease(logger, loaded, resume)
    if lease is not None and leases is not None:
        leases.append(lease)
    if resume:
        try:
            logger.study_runs(spec.name, loaded.hash)
        except StudyNotFound:
            from .reuse import version_change

            change = version_change(logger, loaded)
            if change is not None:
                raise StudyNotFound(
                    f"nothing to resume: study {spec.name!r} (hash {loaded.short_hash}) is a new "
                    f"version of the study: since version {change[0]}, {change[1]}; start it "
                    "with `kitchen-study run` (its tasks whose inputs did not change are "
                    "reused)") from None
            raise StudyNotFound(
                f"nothing to resume: study {spec.name!r} (hash {loaded.short_hash}) has no runs "
                f"at {uri}; start it with `kitchen-study run`") from None
    stale = logger.close_running(
        loaded.hash, "KILLED", "the study driver stopped before this run ended")
    finished_before = {k: v for k, v in logger.finished_tasks(loaded.hash).items()
                       if k in set(plan.ids)}
    from .reuse import adopt_finished, study_params, version_change

    change = None if finished_before else version_change(logger, loaded)
    study_run = logger.start_study(spec.name, loaded.hash, params={
        "study": spec.name, "hash": loaded.hash, "tasks": len(plan),
        "trials": plan.trial_count, **study_params(loaded),
    })
    # finished tasks of earlier versions with the same task key: adopted, not run again
    reused = adopt_finished(logger, study_run, plan, finished_before, spec.name)
    finished_before.update(reused)
    todo = [t for t in plan if t.id not in finished_before]
    out = StudyOutcome(spec.name, loaded.hash, study_run, "FINISHED", len(plan),
                       sorted(finished_before), [], {}, {}, stale, 0.0, sorted(reused))
    pr = _progress(sum(t.trials for t in todo), enabled=progress)
    if change is not None:
        pr.line(f"new version of study {spec.name} (was {change[0]}): {change[1]}")
    if reused:
        pr.line(f"reused {len(reused)} finished task(s) of earlier versions (same task key)")
    pr.line(f"study {spec.name} ({loaded.short_hash}): {len(plan)} tasks, "
            f"{len(finished_before)} already finished, {len(todo)} to run "
            f"({pr.total} trials); tracking {uri}")
    if lease is not None and lease.previous is not None:
        pr.line(f"took over the lease of a driver that is gone ({lease.previous.describe()})")
    if stale:
        pr.line(f"closed {len(stale)} run(s) left RUNNING by an earlier driver (KILLED)")
    if not todo:
        _end_study(logger, study_run, "FINISHED")
        out.seconds = time.monotonic() - t0
        return out

    from .callback import TrackingCallback
    from .local_ray import connect_ray
    from .scheduling import StudyState, make_search
    from .worker import StudyTrainable

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
    state.logger = logger  # study.budget: reads and tags the estimate runs it decides on
    for t in todo:
        if t.kind == "search":
            state.searches[t.id] = make_search(t, spec.name, loaded.short_hash)
    from .packed_trial import make_packer

    state.packer = make_packer(spec, loaded.cards, say=pr.line)  # None: packing is off
    from .run_view import start_view

    view = start_view(logger, study_run, plan, loaded, uri, finished_before)
    callback = TrackingCallback(state, logger, study_run, pr, view)
    status, reason = "FINISHED", None
    try:
        with _sigterm_as_interrupt():
            _fit(state, callback, trainable or StudyTrainable, spec, loaded,
                 storage_path, pr.total, verbose)
    except KeyboardInterrupt as e:
        status, reason = "KILLED", _interrupt_reason(e)
    except BaseException as e:
        full = full_disk(e)
        if full is None:
            status, reason = ("FAILED",
                              f"study driver error: {e!r}\n{traceback.format_exc()[-3000:]}")
            raise
        # a full disk (tracking store or artifacts): stop, close every run KILLED (no
        # task failed: `resume` reruns them once there is space) and say so in one line
        status, reason = "KILLED", f"the disk is full ({full})"
        raise DataError(f"the disk is full ({full}) writing to the tracking store; the study "
                        f"stopped (its open runs closed KILLED): free space, then `kitchen-study "
                        f"resume {spec.source or spec.name}`", uri) from None
    finally:
        leftover = callback.close_open("KILLED" if status != "FAILED" else "FAILED",
                                       reason or "the Tune run ended before this run did")
        if lease is None or not lease.lost:  # a lost lease: the runs are the new holder's
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
            if lease is None or not lease.lost:
                _end_study(logger, study_run, status, reason)
        for d in staged:
            shutil.rmtree(d, ignore_errors=True)
        if started_ray:
            import ray

            ray.shutdown()
        out.seconds = time.monotonic() - t0
        this_call = (f"{len(out.finished)} finished, {len(out.failed)} failed, "
                     f"{len(out.not_run)} not run"
                     + (f", {len(finished_before)} skipped (done before)"
                        if finished_before else ""))
        stored = _stored_summary(logger, plan, spec.name, loaded.hash)
        pr.line(f"study {spec.name}: {status} in {out.seconds:.0f}s - "
                + (f"tasks: {stored} (as `kitchen-study status` counts them); this call: "
                   f"{this_call}" if stored else this_call))
    return out


def _stored_summary(logger: RunLogger, plan: Plan, name: str, study_hash: str) -> str | None:
    """The tasks by the status of the run that counts for each, read back from the store
    with ``kitchen-study status``'s rule (:func:`study.status.status_rows`), so the two
    never disagree; None when the store cannot be read (the driver's own counts then)."""
    try:
        from .status import status_rows, summary_text

        return summary_text(status_rows(plan, logger.study_runs(name, study_hash)))
    except Exception as e:
        log.warning("could not read the study's runs back: %r", e)
        return None


def _interrupt_reason(e: KeyboardInterrupt) -> str:
    """What stopped the driver, in words (the ``ks.error`` of the runs it ends KILLED)."""
    text = str(e)
    m = re.fullmatch(r"signal (\d+)", text)  # _sigterm_as_interrupt
    if m:
        return (f"stopped by {signal.Signals(int(m.group(1))).name} (`ray job stop`, "
                "`kill`)")
    return f"interrupted ({text})" if text else "interrupted by the user (SIGINT, Ctrl-C)"


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

    # a live node that reports no GPU has none: a GPU trial would wait forever
    problems = resource_problems(spec.resources.cpu, spec.resources.gpu,
                                 [{"CPU": 0.0, "GPU": 0.0, **n.get("Resources", {})}
                                  for n in ray.nodes() if n.get("Alive")])
    if problems:
        raise SpecError(problems, spec.source)
    slots = ray.cluster_resources().get("CPU", 1) / max(spec.resources.cpu, 1e-9)
    os.environ.setdefault("TUNE_MAX_PENDING_TRIALS_PG", str(max(2, math.ceil(slots))))
    storage = storage_path or spec.storage_path
    if storage and "://" not in storage:
        storage = str(Path(storage).expanduser().resolve())
    from .uri import leave_job_dir

    leave_job_dir()  # Ray may replace a job's working dir; every path is absolute by now
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
    """End the parent run; a FINISHED study first gets its convergence plots, a FINISHED or
    FAILED one the summary of its best pair (:func:`study.run_view.publish_best_pair`). A
    plot or summary that fails is a warning, never a study left RUNNING."""
    if status == "FINISHED":
        try:
            from .report import publish_convergence_plots

            publish_convergence_plots(logger, study_run)
        except Exception as e:  # the results are stored; only the figures are missing
            log.warning("convergence plots not logged: %r", e)
    if status in ("FINISHED", "FAILED"):  # (an interrupted driver stops without it)
        try:  # the best pair as `kitchen-study best` names it, where the MLflow UI shows it
            from .run_view import publish_best_pair

            publish_best_pair(logger, study_run)
        except Exception as e:
            log.warning("the best pair's summary not logged: %r", e)
    logger.end_study(study_run, status, reason)
