"""Tracking: the MLflow backend that stores a study's runs, metrics and checkpoints.

Where things live (experiment, parent and child runs, tag keys, metric keys, params) is
:mod:`study.mlflow_layout`; this module only writes and reads that layout.

:class:`RunLogger` is the protocol the runner logs through and resume/status read back;
:class:`MlflowRunLogger` is its implementation. **Driver-side only**: exactly one process
(the study driver) writes, every call is serialised by a lock, so a SQLite store never sees
concurrent writers. Workers report results to the driver, which logs them.
(``tests/memory_logger.py`` holds an in-memory implementation for tests;
``tests/test_tracking.py`` runs ONE contract suite over both.)

Rules (the layout's rules, :mod:`study.mlflow_layout`, plus):

* No run is left ``RUNNING``: :meth:`RunLogger.end_task` takes ``FAILED``/``KILLED`` with a
  reason (tag ``ks.error``), and :meth:`RunLogger.close_running` ends every ``RUNNING`` task or
  trial run of a study (call it before resuming after a crash).
* **Fencing**: :attr:`MlflowRunLogger.fence` (set by the runner to the study lease's
  :meth:`~study.lease.Lease.check`) is called before every write, inside the lock; it raises
  :class:`~study.lease.LeaseLost` once the driver lost its lease, so a driver taken for dead
  writes nothing more (reads stay allowed).
* ``start_study`` with a name and hash that already have a parent run resumes that run instead
  of creating a second one. A changed spec (new hash) gets a new parent run in the same
  experiment.
* Each ``start_task`` creates a new child run (an attempt). A task counts as done when one of
  its runs is ``FINISHED`` (:meth:`RunLogger.finished_tasks`); failed attempts stay as records.
"""

from __future__ import annotations

import functools
import math
import shutil
import sqlite3
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from .mlflow_layout import (
    CHECKPOINT_ARTIFACT,
    DEFAULT_TRACKING_URI,
    EXPERIMENT_KIND,
    EXPERIMENT_KIND_TAG,
    EXPERIMENT_PREFIX,
    ITERATION_METRIC,
    NOTE_TAG,
    ROLE_STUDY,
    ROLE_TASK,
    RUN_ROLES,
    TAG_ERROR,
    TAG_PARENT,
    TAG_ROLE,
    TAG_STUDY,
    TAG_STUDY_HASH,
    DatasetRef,
    RunRecord,
    StudyNotFound,
    TaskMeta,
    check_end_status,
    check_hash,
    check_params,
    clean_metrics,
    error_tags,
    experiment_name,
    flatten_params,
    latest_finished,
    metric_key,
    metrics_from_result,
    one_per_step,
    select_hash,
    study_tags,
)

__all__ = [
    "DEFAULT_TRACKING_URI",
    "MlflowRunLogger",
    "RunLogger",
    "code_version",
    "fetch_checkpoint",
    "log_checkpoint",
    "log_result",
    "sqlite_path",
]

_PARAMS_PER_BATCH = 100
_METRICS_PER_BATCH = 1000
#: run ids per SQL ``IN (...)`` (SQLite before 3.32 allows 999 variables per statement)
_IDS_PER_QUERY = 500
#: concurrent ``get_metric_history`` requests against a tracking server
_HISTORY_THREADS = 8


@runtime_checkable
class RunLogger(Protocol):
    """What the study runner logs through and what resume/status read back.

    Run ids are strings. ``artifact_path`` in :meth:`log_artifact` is the *directory* inside
    the run (MLflow semantics): ``log_artifact(rid, "x/lstm.pt", "checkpoint")`` stores
    ``checkpoint/lstm.pt``.
    """

    def start_study(self, name: str, study_hash: str, *,
                    params: Mapping[str, Any] | None = None) -> str:
        """Parent run id; resumes (status back to RUNNING) an existing one of the same hash."""
        ...

    def start_task(self, study_run_id: str, meta: TaskMeta, *,
                   params: Mapping[str, Any] | None = None,
                   parent_run_id: str | None = None) -> str:
        """New child run under the study run (or under ``parent_run_id``, e.g. for trials)."""
        ...

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None: ...

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        """Flattened via :func:`flatten_params`; same value again is a no-op, a different one
        raises :class:`ParamConflict`."""
        ...

    def log_metrics(self, run_id: str, metrics: Mapping[str, float],
                    step: int | None = None) -> None: ...

    def log_artifact(self, run_id: str, local_path: str | Path,
                     artifact_path: str | None = None) -> None: ...

    def download_artifact(self, run_id: str, artifact_path: str, dst_dir: str | Path) -> Path:
        """Local path of the downloaded file (or directory) under ``dst_dir``."""
        ...

    def end_task(self, run_id: str, status: str = "FINISHED", reason: str | None = None) -> None:
        """End a task/trial run; FAILED/KILLED record ``reason`` as tag ``ks.error``."""
        ...

    def end_study(self, study_run_id: str, status: str = "FINISHED",
                  reason: str | None = None) -> None:
        """End the parent run (FAILED/KILLED record ``reason`` as tag ``ks.error``)."""
        ...

    def finished_tasks(self, study_hash: str) -> dict[str, str]:
        """``{task_id: run_id}`` of FINISHED task runs of the study hash (latest if several)."""
        ...

    def close_running(self, study_hash: str, status: str = "KILLED",
                      reason: str = "driver stopped before the run ended") -> list[str]:
        """End every RUNNING task/trial run of the study hash; returns their run ids."""
        ...

    def get_run(self, run_id: str) -> RunRecord: ...

    def study_runs(self, name: str, study_hash: str | None = None) -> list[RunRecord]:
        """All runs (parent, tasks, trials; any status) of a study in bulk. ``study_hash``
        None: the hash of the most recently started parent run. :class:`StudyNotFound` if none.
        """
        ...

    def metric_histories(self, run_ids: Sequence[str], key: str
                         ) -> dict[str, list[tuple[int, float]]]:
        """``{run_id: [(step, value), ...]}``: metric ``key``'s history of each run that has
        it, by step, one value per step (:func:`~study.mlflow_layout.one_per_step`), in
        bulk. Runs without it (or unknown ids) are absent."""
        ...


def log_result(logger: RunLogger, run_id: str, result: Mapping[str, Any]) -> None:
    """Log one trainable result at step = ``result["iteration"]`` (plus the metric
    ``iteration``, so the query API knows how far a task trained)."""
    step = int(result[ITERATION_METRIC])
    metrics = metrics_from_result(result)
    metrics[ITERATION_METRIC] = float(step)
    logger.log_metrics(run_id, metrics, step=step)


def log_checkpoint(logger: RunLogger, run_id: str, checkpoint: str | Path) -> None:
    """Store a checkpoint file at :data:`CHECKPOINT_ARTIFACT` (renamed to ``lstm.pt``)."""
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise FileNotFoundError(f"checkpoint {checkpoint} does not exist")
    name = Path(CHECKPOINT_ARTIFACT)
    if checkpoint.name == name.name:
        logger.log_artifact(run_id, checkpoint, str(name.parent))
        return
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / name.name
        shutil.copyfile(checkpoint, staged)
        logger.log_artifact(run_id, staged, str(name.parent))


def fetch_checkpoint(logger: RunLogger, run_id: str, dst_dir: str | Path) -> Path:
    """Download a pre-train run's checkpoint; returns the local ``lstm.pt`` path."""
    return logger.download_artifact(run_id, CHECKPOINT_ARTIFACT, dst_dir)


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """``git describe --always --dirty --tags`` of this checkout, else the package version."""
    root = Path(__file__).resolve().parents[1]
    if (root / ".git").exists():
        try:
            out = subprocess.run(
                ["git", "describe", "--always", "--dirty", "--tags"], cwd=root,
                capture_output=True, text=True, timeout=10, check=True,
            )
            if out.stdout.strip():
                return f"git:{out.stdout.strip()}"
        except (OSError, subprocess.SubprocessError):
            pass  # no git binary or not a work tree: fall back to the installed version
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"kitchen-study=={version('kitchen-study')}"
    except PackageNotFoundError:
        return "unknown"


def _study_tags(name: str, study_hash: str) -> dict[str, str]:
    return study_tags(name, study_hash, code_version())


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///PATH`` URI (relative to cwd), else None."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix):
        return None
    return Path(uri[len(prefix):]).resolve()


def _safe_dir_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


class MlflowRunLogger:
    """:class:`RunLogger` writing to an MLflow tracking URI through one ``MlflowClient``.

    ``tracking_uri`` defaults to ``sqlite:///mlflow.db`` in the working directory (MLflow >= 3.13
    refuses plain folders); a tracking server (``http://head:5000``) for clusters. New
    experiments on a SQLite store keep artifacts beside the database in ``mlartifacts/<study>``
    (``artifact_root`` overrides); on a server the server decides (``--artifacts-destination``).

    Driver-side only: not for use from Ray workers. All calls hold one lock.

    Reading a study (:meth:`study_runs`) from a SQLite store goes straight to the database
    (read-only, four queries, no MLflow import): MLflow's ``search_runs`` builds an ORM
    object per tag/param/metric row, about 2 s for 500 runs here. Rule: only the columns
    MLflow's schema has had since 1.x are read (``experiments``, ``runs``, ``tags``,
    ``params``, ``latest_metrics``); on any SQLite error or a name shared by several
    experiments it falls back to ``search_runs``, and ``tests/test_tracking.py`` checks that
    both give identical records. ``fast_read=False`` always uses ``search_runs``. Metric
    histories (:meth:`metric_histories`) the same way: one SQL query on ``metrics`` per 500
    runs, else ``get_metric_history`` per run (8 at a time: a server's path).
    """

    def __init__(self, tracking_uri: str | None = None, *, artifact_root: str | None = None,
                 fast_read: bool = True):
        self.tracking_uri = tracking_uri or DEFAULT_TRACKING_URI
        self._db = sqlite_path(self.tracking_uri)
        if self._db is not None:
            self.tracking_uri = f"sqlite:///{self._db}"  # absolute: a later chdir must not move it
            if artifact_root is None:
                artifact_root = (self._db.parent / "mlartifacts").as_uri()
        self.artifact_root = artifact_root
        self.fast_read = fast_read
        self._lock = threading.RLock()
        self._studies: dict[str, tuple[str, str, str]] = {}
        #: called before every write (the study lease's check: see the module docstring)
        self.fence: Callable[[], None] | None = None

    def check_fence(self) -> None:
        """Raise (:class:`~study.lease.LeaseLost`) if this logger may no longer write. For
        writers that go around the logger (``mlflow.start_run`` when logging a model)."""
        if self.fence is not None:
            self.fence()

    @functools.cached_property
    def client(self) -> Any:
        """The ``MlflowClient`` (created, and MLflow imported, on first use). On a SQLite
        store it is opened under the store's file lock, as a driver opens it
        (:func:`~study.lease.open_client`): opening a store that does not exist yet, or one a
        driver is creating at that moment, runs MLflow's schema migrations, and two processes
        migrating one database at once break it (``_alembic_tmp_*`` tables left behind) - a
        reader such as ``kitchen-study status`` started beside a new ``run`` must wait, not
        race. The store's checks are the commands' (``study.lease.check_store``)."""
        from .lease import open_client

        return open_client(self.tracking_uri)

    # -- experiments --------------------------------------------------------------------------
    def _experiment_id(self, name: str, *, create: bool) -> str | None:
        exp_name = experiment_name(name)
        exp = self.client.get_experiment_by_name(exp_name)
        if exp is not None:
            if exp.lifecycle_stage != "active":
                raise StudyNotFound(
                    f"experiment {exp_name!r} is deleted at {self.tracking_uri}; restore it "
                    f"(mlflow experiments restore --experiment-id {exp.experiment_id}) or "
                    f"remove it for good (mlflow gc) before running the study again")
            return exp.experiment_id
        if not create:
            return None
        location = (f"{self.artifact_root.rstrip('/')}/{_safe_dir_name(name)}"
                    if self.artifact_root else None)
        return self.client.create_experiment(exp_name, artifact_location=location)

    def _study_experiments(self) -> list[str]:
        exps = self.client.search_experiments(
            filter_string=f"name LIKE '{EXPERIMENT_PREFIX}%'")
        return [e.experiment_id for e in exps]

    def _search(self, experiment_ids: list[str], filter_string: str) -> list[RunRecord]:
        """All matching runs, paged in bulk (one query per 50,000 runs)."""
        if not experiment_ids:
            return []
        out: list[RunRecord] = []
        token = None
        while True:
            page = self.client.search_runs(experiment_ids, filter_string,
                                           max_results=50_000, page_token=token)
            out.extend(_to_record(r) for r in page)
            token = page.token
            if not token:
                return out

    # -- RunLogger ----------------------------------------------------------------------------
    def start_study(self, name: str, study_hash: str, *,
                    params: Mapping[str, Any] | None = None) -> str:
        with self._lock:
            self.check_fence()
            exp_id = self._experiment_id(name, create=True)
            existing = self._search(
                [exp_id], f"tags.`{TAG_ROLE}` = '{ROLE_STUDY}' "
                f"AND tags.`{TAG_STUDY_HASH}` = '{study_hash}'")
            if existing:
                rid = min(existing, key=lambda r: r.start_time or 0).run_id
                self.client.update_run(rid, status="RUNNING")
                if TAG_ERROR in self.get_run(rid).tags:
                    self.client.delete_tag(rid, TAG_ERROR)  # the resumed run has not failed
            else:
                rid = self.client.create_run(
                    exp_id, run_name=f"study {name}",
                    tags={TAG_ROLE: ROLE_STUDY, **_study_tags(name, study_hash)}).info.run_id
            if params:
                self.log_params(rid, params)
            return rid

    def start_task(self, study_run_id: str, meta: TaskMeta, *,
                   params: Mapping[str, Any] | None = None,
                   parent_run_id: str | None = None) -> str:
        with self._lock:
            self.check_fence()
            exp_id, name, study_hash = self._study_of(study_run_id)
            tags = {**meta.to_tags(), **_study_tags(name, study_hash),
                    TAG_PARENT: parent_run_id or study_run_id}
            rid = self.client.create_run(exp_id, tags=tags, run_name=meta.task_id).info.run_id
            if params:
                self._log_new_params(rid, flatten_params(params))  # a new run has none yet
            return rid

    def _study_of(self, study_run_id: str) -> tuple[str, str, str]:
        """(experiment id, study name, hash) of a parent run; cached (they never change)."""
        if study_run_id not in self._studies:
            run = self.client.get_run(study_run_id)
            self._studies[study_run_id] = (run.info.experiment_id, run.data.tags[TAG_STUDY],
                                           run.data.tags[TAG_STUDY_HASH])
        return self._studies[study_run_id]

    def _log_new_params(self, run_id: str, flat: Mapping[str, str]) -> None:
        from mlflow.entities import Param

        new = [Param(k, v) for k, v in flat.items()]
        for i in range(0, len(new), _PARAMS_PER_BATCH):
            self.check_fence()
            self.client.log_batch(run_id, params=new[i:i + _PARAMS_PER_BATCH])

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        from mlflow.entities import RunTag

        with self._lock:
            self.check_fence()
            self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        flat = flatten_params(params)
        with self._lock:
            old = self.client.get_run(run_id).data.params
            check_params(run_id, old, flat)
            self._log_new_params(run_id, {k: v for k, v in flat.items() if k not in old})

    def log_metrics(self, run_id: str, metrics: Mapping[str, float],
                    step: int | None = None) -> None:
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        items = [Metric(k, v, ts, int(step or 0)) for k, v in clean_metrics(metrics).items()]
        with self._lock:
            for i in range(0, len(items), _METRICS_PER_BATCH):
                self.check_fence()
                self.client.log_batch(run_id, metrics=items[i:i + _METRICS_PER_BATCH])

    def log_artifact(self, run_id: str, local_path: str | Path,
                     artifact_path: str | None = None) -> None:
        local_path = Path(local_path)
        with self._lock:
            self.check_fence()
            if local_path.is_dir():
                sub = f"{artifact_path}/{local_path.name}" if artifact_path else local_path.name
                self.client.log_artifacts(run_id, str(local_path), sub)
            else:
                self.client.log_artifact(run_id, str(local_path), artifact_path)

    # -- for the MLflow UI (not part of RunLogger: a logger without them skips them) ----------
    def log_inputs(self, run_id: str, datasets: list[DatasetRef]) -> None:
        """Record the datasets a run read as MLflow dataset inputs (context ``train``)."""
        from mlflow.entities import Dataset, DatasetInput, InputTag

        inputs = [DatasetInput(Dataset(d.name, d.digest, "local", d.source, profile=d.profile),
                               tags=[InputTag("mlflow.data.context", "train")])
                  for d in datasets]
        with self._lock:
            self.check_fence()
            self.client.log_inputs(run_id, datasets=inputs)

    def set_experiment_note(self, name: str, text: str) -> None:
        """The study experiment's description (shown on the MLflow experiment page)."""
        with self._lock:
            self.check_fence()
            exp_id = self._experiment_id(name, create=True)
            self.client.set_experiment_tag(exp_id, NOTE_TAG, text)
            self.client.set_experiment_tag(exp_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)

    def download_artifact(self, run_id: str, artifact_path: str, dst_dir: str | Path) -> Path:
        from mlflow.exceptions import MlflowException

        Path(dst_dir).mkdir(parents=True, exist_ok=True)
        try:
            local = self.client.download_artifacts(run_id, artifact_path, str(dst_dir))
        except (MlflowException, OSError) as e:
            raise FileNotFoundError(
                f"run {run_id} has no artifact {artifact_path!r} ({e})") from e
        return Path(local)

    def _end(self, run_id: str, status: str, reason: str | None) -> None:
        check_end_status(status)
        with self._lock:
            tags = error_tags(status, reason)
            tag_error: Exception | None = None
            if tags:
                try:
                    self.set_tags(run_id, tags)
                except Exception as e:  # e.g. a full disk: new rows fail, an update may not;
                    tag_error = e  # the run's status matters more than its reason
            self.check_fence()  # again, right before the write that decides the run's fate
            self.client.set_terminated(run_id, status)
            if tag_error is not None:
                raise tag_error

    def end_task(self, run_id: str, status: str = "FINISHED", reason: str | None = None) -> None:
        self._end(run_id, status, reason)

    def end_study(self, study_run_id: str, status: str = "FINISHED",
                  reason: str | None = None) -> None:
        self._end(study_run_id, status, reason)

    def finished_tasks(self, study_hash: str) -> dict[str, str]:
        check_hash(study_hash)
        with self._lock:
            records = self._search(
                self._study_experiments(),
                f"tags.`{TAG_STUDY_HASH}` = '{study_hash}' AND tags.`{TAG_ROLE}` = '{ROLE_TASK}' "
                "AND attributes.status = 'FINISHED'")
        return {tid: r.run_id for tid, r in latest_finished(records, study_hash).items()}

    def close_running(self, study_hash: str, status: str = "KILLED",
                      reason: str = "driver stopped before the run ended") -> list[str]:
        check_end_status(status)
        check_hash(study_hash)
        with self._lock:
            self.check_fence()
            records = self._search(
                self._study_experiments(),
                f"tags.`{TAG_STUDY_HASH}` = '{study_hash}' AND attributes.status = 'RUNNING'")
            ids = [r.run_id for r in records if r.role in RUN_ROLES]
            first: Exception | None = None
            for rid in ids:  # one that cannot be closed must not leave the rest RUNNING
                try:
                    self._end(rid, status, reason)
                except Exception as e:
                    first = first or e
            if first is not None:
                raise first
        return ids

    def get_run(self, run_id: str) -> RunRecord:
        return _to_record(self.client.get_run(run_id))

    def study_runs(self, name: str, study_hash: str | None = None) -> list[RunRecord]:
        if study_hash is not None:
            check_hash(study_hash)
        if self.fast_read and self._db is not None and self._db.is_file():
            try:
                return _sqlite_study_runs(self._db, name, study_hash)
            except (sqlite3.Error, _UseSearchRuns):
                pass  # an unexpected schema or a locked file: MLflow's own reader below
        with self._lock:
            exp_id = self._experiment_id(name, create=False)
            if exp_id is None:
                raise StudyNotFound(
                    f"no study named {name!r} at {self.tracking_uri} "
                    f"(no experiment {experiment_name(name)!r})")
            if study_hash is None:
                parents = self._search([exp_id], f"tags.`{TAG_ROLE}` = '{ROLE_STUDY}'")
                study_hash = select_hash(parents, name, None)
            check_hash(study_hash)
            records = self._search([exp_id], f"tags.`{TAG_STUDY_HASH}` = '{study_hash}'")
        select_hash(records, name, study_hash)  # raises when the hash has no parent run
        return records

    def metric_histories(self, run_ids: Sequence[str], key: str
                         ) -> dict[str, list[tuple[int, float]]]:
        ids = list(dict.fromkeys(run_ids))
        key = metric_key(key)
        if not ids:
            return {}
        if self.fast_read and self._db is not None and self._db.is_file():
            try:
                return _sqlite_histories(self._db, ids, key)
            except sqlite3.Error:
                pass  # an unexpected schema or a locked file: MLflow's own reader below
        from mlflow.exceptions import MlflowException

        client = self.client  # created once, before the threads share it

        def history(rid: str) -> list[tuple[int, float, float]]:
            try:
                return [(m.step, m.timestamp, m.value)
                        for m in client.get_metric_history(rid, key)]
            except MlflowException:
                return []  # no such run

        with ThreadPoolExecutor(_HISTORY_THREADS) as pool:
            points = dict(zip(ids, pool.map(history, ids), strict=True))
        return {rid: one_per_step(p) for rid, p in points.items() if p}


class _UseSearchRuns(Exception):
    """The SQLite fast path cannot answer; use MLflow's search_runs."""


def _sqlite_study_runs(db: Path, name: str, study_hash: str | None) -> list[RunRecord]:
    """:meth:`MlflowRunLogger.study_runs` by four read-only SQL queries (see the class doc)."""
    con = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, timeout=10)
    try:
        exps = con.execute("SELECT experiment_id, lifecycle_stage FROM experiments "
                           "WHERE name = ?", (experiment_name(name),)).fetchall()
        if len(exps) != 1 or exps[0][1] != "active":
            raise _UseSearchRuns  # absent or deleted (MLflow's path words the error), or
            # several workspaces share the name
        exp_id = exps[0][0]
        if study_hash is None:
            parents = con.execute(
                "SELECT r.run_uuid, r.start_time, h.value FROM runs r "
                "JOIN tags t ON t.run_uuid = r.run_uuid AND t.key = ? AND t.value = ? "
                "JOIN tags h ON h.run_uuid = r.run_uuid AND h.key = ? "
                "WHERE r.experiment_id = ? AND r.lifecycle_stage = 'active'",
                (TAG_ROLE, ROLE_STUDY, TAG_STUDY_HASH, exp_id)
            ).fetchall()
            study_hash = select_hash(
                [RunRecord(rid, "", {TAG_ROLE: ROLE_STUDY, TAG_STUDY_HASH: h}, {}, {},
                           st / 1000 if st is not None else None) for rid, st, h in parents],
                name, None)
        selected = ("SELECT r.run_uuid FROM runs r JOIN tags h ON h.run_uuid = r.run_uuid "
                    "AND h.key = ? AND h.value = ? "
                    "WHERE r.experiment_id = ? AND r.lifecycle_stage = 'active'")
        args = (TAG_STUDY_HASH, study_hash, exp_id)
        runs = con.execute(
            "SELECT run_uuid, status, start_time, end_time FROM runs "
            f"WHERE run_uuid IN ({selected})", args).fetchall()
        tags: dict[str, dict[str, str]] = {r[0]: {} for r in runs}
        params: dict[str, dict[str, str]] = {r[0]: {} for r in runs}
        metrics: dict[str, dict[str, float]] = {r[0]: {} for r in runs}
        for rid, k, v in con.execute(
                f"SELECT run_uuid, key, value FROM tags WHERE run_uuid IN ({selected})", args):
            tags[rid][k] = v
        for rid, k, v in con.execute(
                f"SELECT run_uuid, key, value FROM params WHERE run_uuid IN ({selected})", args):
            params[rid][k] = v
        for rid, k, v, nan in con.execute(
                "SELECT run_uuid, key, value, is_nan FROM latest_metrics "
                f"WHERE run_uuid IN ({selected})", args):
            metrics[rid][k] = math.nan if nan else float(v)
    finally:
        con.close()
    # MLflow's order: start_time DESC, then run id
    runs.sort(key=lambda r: (-(r[2] or 0), r[0]))
    records = [RunRecord(rid, status, tags[rid], params[rid], metrics[rid],
                         st / 1000 if st is not None else None,
                         et / 1000 if et is not None else None)
               for rid, status, st, et in runs]
    select_hash(records, name, study_hash)  # raises when the hash has no parent run
    return records


def _sqlite_histories(db: Path, run_ids: list[str], key: str
                      ) -> dict[str, list[tuple[int, float]]]:
    """:meth:`MlflowRunLogger.metric_histories` by read-only SQL on MLflow's ``metrics``
    table (its columns since 1.x: run_uuid, key, value, timestamp, step, is_nan)."""
    points: dict[str, list[tuple[int, float, float]]] = {}
    con = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, timeout=10)
    try:
        for i in range(0, len(run_ids), _IDS_PER_QUERY):
            chunk = run_ids[i:i + _IDS_PER_QUERY]
            marks = ",".join("?" * len(chunk))
            for rid, step, ts, v, nan in con.execute(
                    "SELECT run_uuid, step, timestamp, value, is_nan FROM metrics "
                    f"WHERE key = ? AND run_uuid IN ({marks})", (key, *chunk)):
                points.setdefault(rid, []).append(
                    (int(step), ts, math.nan if nan else float(v)))
    finally:
        con.close()
    return {rid: one_per_step(p) for rid, p in points.items()}


def _to_record(run: Any) -> RunRecord:
    info, data = run.info, run.data
    return RunRecord(
        run_id=info.run_id,
        status=info.status,
        tags=dict(data.tags),
        params=dict(data.params),
        metrics=dict(data.metrics),
        start_time=info.start_time / 1000 if info.start_time is not None else None,
        end_time=info.end_time / 1000 if info.end_time is not None else None,
    )


