"""Tracking: where a study's runs, metrics and checkpoints go (MLflow layout of INTERFACES.md).

One small protocol, :class:`RunLogger`, with two implementations:

* :class:`MlflowRunLogger` — the real one. **Driver-side only**: exactly one process (the study
  driver) writes, every call is serialised by a lock, so a SQLite store never sees concurrent
  writers. Workers report results to the driver, which logs them.
* :class:`InMemoryRunLogger` — the same observable behaviour in plain dicts, for fast tests of
  the runner without MLflow. ``tests/test_tracking.py`` runs ONE contract suite over both.

Layout (see ``INTERFACES.md``, "MLflow layout"):

* experiment ``kitchen-study/<study name>``; a parent run per (study name, study hash) with tags
  ``ks.role=study``, ``ks.study``, ``ks.study_hash``, ``ks.code_version``;
* a child run per task (tag ``mlflow.parentRunId`` = parent) with the tags of
  :meth:`TaskMeta.to_tags`; search trials (``role="trial"``) nest under their search task;
* params: the flattened task config (:func:`flatten_params`);
* metrics: ``loss`` and ``frame_acc`` with step = iteration; final ``frame_acc``, ``input_acc``,
  ``edit``, ``f1_10``, ``f1_25``, ``f1_50`` (MLflow keys cannot hold ``@``: :func:`metric_key`);
  the convergence curve also as flat metrics ``curve.frame_acc.<iteration>``
  (:func:`metrics_from_result`), so one bulk search returns everything the query API needs;
* artifacts: pre-train checkpoints at ``checkpoint/lstm.pt`` (:func:`log_checkpoint`,
  :func:`fetch_checkpoint`), one convergence plot per target on the parent run
  (``plots/convergence_<target>.png``, written by ``end_study``).

Rules (stated, not silently applied):

* Params are immutable. Re-logging a key with the SAME value is a no-op (a resumed task may
  log its config again); a DIFFERENT value raises :class:`ParamConflict` naming the keys.
* A param value longer than MLflow's limit (:data:`MAX_PARAM_VALUE`) is stored truncated with
  an explicit, deterministic marker ``...[truncated N chars, sha256 H]``, so a resumed task
  re-logs the identical value.
* No run is left ``RUNNING``: :meth:`RunLogger.end_task` takes ``FAILED``/``KILLED`` with a
  reason (tag ``ks.error``), and :meth:`RunLogger.close_running` ends every ``RUNNING`` task or
  trial run of a study (call it before resuming after a crash).
* ``start_study`` with a name and hash that already have a parent run resumes that run instead
  of creating a second one. A changed spec (new hash) gets a new parent run in the same
  experiment.
* Each ``start_task`` creates a new child run (an attempt). A task counts as done when one of
  its runs is ``FINISHED`` (:meth:`RunLogger.finished_tasks`); failed attempts stay as records.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
import shutil
import sqlite3
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "CHECKPOINT_ARTIFACT",
    "DEFAULT_TRACKING_URI",
    "sqlite_path",
    "EXPERIMENT_PREFIX",
    "MAX_PARAM_VALUE",
    "RESULT_METRICS",
    "InMemoryRunLogger",
    "MlflowRunLogger",
    "ParamConflict",
    "RunLogger",
    "RunRecord",
    "StudyNotFound",
    "TaskMeta",
    "code_version",
    "experiment_name",
    "fetch_checkpoint",
    "flatten_params",
    "log_checkpoint",
    "log_result",
    "metric_key",
    "metrics_from_result",
]

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
EXPERIMENT_PREFIX = "kitchen-study/"
CHECKPOINT_ARTIFACT = "checkpoint/lstm.pt"
#: MLflow's limits (mlflow/utils/validation.py in 3.x).
MAX_PARAM_VALUE = 6000
_MAX_TAG_VALUE = 8000
_PARAMS_PER_BATCH = 100
_METRICS_PER_BATCH = 1000

#: Result keys (as the LSTM trainable reports them) that become metrics; everything else a
#: Tune result carries (timestamps, pids, ...) is not a study metric.
RESULT_METRICS = ("loss", "frame_acc", "input_acc", "edit", "f1@10", "f1@25", "f1@50",
                  "frames_per_s")
_STATUSES = ("RUNNING", "FINISHED", "FAILED", "KILLED")
_END_STATUSES = ("FINISHED", "FAILED", "KILLED")
_ROLES = ("task", "trial")


class ParamConflict(ValueError):
    """A param was logged again with a different value (MLflow params are immutable)."""


class StudyNotFound(LookupError):
    """No tracked study of that name (and hash) at the tracking URI."""


@dataclass(frozen=True)
class TaskMeta:
    """What identifies a task run; becomes the ``ks.*`` tags of its child run.

    ``source``/``source_split`` are "" for tasks without a source (baselines, pre-training is
    tagged with its dataset as ``target``). ``role`` is ``"task"`` or ``"trial"`` (a search trial,
    nested under its search task's run).
    """

    task_id: str
    kind: str  # pretrain | baseline | finetune | joint | search
    mode: str  # none | transfer | joint
    target: str
    target_split: str
    source: str = ""
    source_split: str = ""
    arrangement: str = ""
    seed: int = 0
    node: str = ""
    role: str = "task"

    @classmethod
    def from_task(cls, task: Any, *, node: str = "", role: str = "task") -> TaskMeta:
        """From a planner task (``study.plan.Task``: ``id, kind, mode, target, target_split,
        source, source_split, arrangement, seed``; None source fields become "")."""
        return cls(task_id=task.id, kind=task.kind, mode=task.mode, target=task.target,
                   target_split=task.target_split, source=task.source or "",
                   source_split=task.source_split or "", arrangement=task.arrangement or "",
                   seed=int(task.seed), node=node, role=role)

    def to_tags(self) -> dict[str, str]:
        if self.role not in _ROLES:
            raise ValueError(f"TaskMeta.role must be one of {_ROLES}, got {self.role!r}")
        return {
            "ks.role": self.role,
            "ks.task_id": self.task_id,
            "ks.kind": self.kind,
            "ks.mode": self.mode,
            "ks.target": self.target,
            "ks.target_split": str(self.target_split),
            "ks.source": self.source or "",
            "ks.source_split": str(self.source_split or ""),
            "ks.arrangement": self.arrangement or "",
            "ks.seed": str(int(self.seed)),
            "ks.node": self.node or "",
        }


@dataclass(frozen=True)
class RunRecord:
    """A run as read back: status, tags, params and the LATEST value of each metric."""

    run_id: str
    status: str
    tags: Mapping[str, str] = field(default_factory=dict)
    params: Mapping[str, str] = field(default_factory=dict)
    metrics: Mapping[str, float] = field(default_factory=dict)
    start_time: float | None = None  # seconds since the epoch
    end_time: float | None = None

    @property
    def parent_run_id(self) -> str | None:
        return self.tags.get("mlflow.parentRunId")

    @property
    def role(self) -> str:
        return self.tags.get("ks.role", "")


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
                  reason: str | None = None, *, plots: bool = True) -> None:
        """End the parent run; when FINISHED and ``plots``, log a convergence plot per target."""
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


# ---------------------------------------------------------------------------------------------
# pure helpers


def experiment_name(study_name: str) -> str:
    return f"{EXPERIMENT_PREFIX}{study_name}"


def metric_key(name: str) -> str:
    """MLflow metric key for a result name: ``f1@10`` -> ``f1_10`` (keys cannot hold '@')."""
    return name.replace("@", "_")


def _param_value(v: Any) -> str:
    if isinstance(v, str):
        s = v
    elif v is None or isinstance(v, bool | int | float | Path):
        s = str(v)
    else:
        # lists/tuples/sets and anything JSON-able: one stable JSON string (sorted sets)
        s = json.dumps(sorted(v) if isinstance(v, set | frozenset) else v,
                       sort_keys=True, default=str)
    if len(s) > MAX_PARAM_VALUE:
        h = hashlib.sha256(s.encode()).hexdigest()[:16]
        marker = f"...[truncated {len(s)} chars, sha256 {h}]"
        s = s[: MAX_PARAM_VALUE - len(marker)] + marker
    return s


def flatten_params(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested mappings -> dotted keys (``{"a": {"b": 1}}`` -> ``{"a.b": "1"}``); sequences are
    one JSON value; values longer than :data:`MAX_PARAM_VALUE` are truncated with a marker."""
    out: dict[str, str] = {}
    for k, v in config.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(flatten_params(v, prefix=f"{key}."))
        else:
            out[key] = _param_value(dict(v) if isinstance(v, Mapping) else v)
    return out


def metrics_from_result(result: Mapping[str, Any]) -> dict[str, float]:
    """The study metrics of one trainable result: :data:`RESULT_METRICS` present (keys made
    MLflow-safe) plus the ``curve`` ``{iteration: frame_acc}`` as ``curve.frame_acc.<it>``.
    Non-numeric values and None are skipped (they are not metrics)."""
    out: dict[str, float] = {}
    for name in RESULT_METRICS:
        v = result.get(name)
        if isinstance(v, int | float) and not isinstance(v, bool):
            out[metric_key(name)] = float(v)
    for it, acc in (result.get("curve") or {}).items():
        out[f"curve.frame_acc.{int(it)}"] = float(acc)
    return out


def log_result(logger: RunLogger, run_id: str, result: Mapping[str, Any]) -> None:
    """Log one trainable result at step = ``result["iteration"]`` (plus the metric
    ``iteration``, so the query API knows how far a task trained)."""
    step = int(result["iteration"])
    metrics = metrics_from_result(result)
    metrics["iteration"] = float(step)
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


def _check_status(status: str) -> str:
    if status not in _END_STATUSES:
        raise ValueError(f"end status must be one of {_END_STATUSES}, got {status!r}")
    return status


def _error_tag(status: str, reason: str | None) -> dict[str, str]:
    if status == "FINISHED":
        return {}
    reason = reason or f"ended {status} without a reason"
    if len(reason) > _MAX_TAG_VALUE:
        reason = reason[: _MAX_TAG_VALUE - 40] + f"...[truncated {len(reason)} chars]"
    return {"ks.error": reason}


_HASH_RE = re.compile(r"[A-Za-z0-9_.:-]+")


def _check_hash(study_hash: str) -> str:
    # hashes go into MLflow filter strings: allow only characters that need no quoting
    if not isinstance(study_hash, str) or not _HASH_RE.fullmatch(study_hash):
        raise ValueError(f"study hash must match {_HASH_RE.pattern}, got {study_hash!r}")
    return study_hash


def _study_tags(name: str, study_hash: str) -> dict[str, str]:
    _check_hash(study_hash)
    return {"ks.study": name, "ks.study_hash": study_hash, "ks.code_version": code_version()}


def _clean_metrics(metrics: Mapping[str, float]) -> dict[str, float]:
    """MLflow-safe keys, float values; None means "not measured" and is not logged."""
    return {metric_key(k): float(v) for k, v in metrics.items() if v is not None}


def _pick_finished(records: list[RunRecord], study_hash: str) -> dict[str, str]:
    """Latest-started FINISHED task run per task id."""
    best: dict[str, RunRecord] = {}
    for r in records:
        if (r.role == "task" and r.status == "FINISHED"
                and r.tags.get("ks.study_hash") == study_hash):
            tid = r.tags.get("ks.task_id", "")
            cur = best.get(tid)
            if cur is None or (r.start_time or 0) >= (cur.start_time or 0):
                best[tid] = r
    return {tid: r.run_id for tid, r in best.items()}


def _select_hash(records: list[RunRecord], name: str, study_hash: str | None) -> str:
    parents = [r for r in records if r.role == "study"]
    if study_hash is not None:
        if not any(r.tags.get("ks.study_hash") == study_hash for r in parents):
            raise StudyNotFound(f"study {name!r} has no run with hash {study_hash!r}")
        return study_hash
    if not parents:
        raise StudyNotFound(f"study {name!r} has no study run")
    latest = max(parents, key=lambda r: r.start_time or 0)
    return latest.tags["ks.study_hash"]


def _log_convergence_plots(logger: RunLogger, name: str, study_hash: str,
                           study_run_id: str) -> None:
    # Lazy: query imports this module; plots need pandas/matplotlib only at the study's end.
    from .query import StudyResults

    results = StudyResults.from_records(name, study_hash, logger.study_runs(name, study_hash))
    curves = results.convergence()
    if curves.empty:
        return
    with tempfile.TemporaryDirectory() as tmp:
        for target in sorted(curves["target"].unique()):
            # a bare Figure (no pyplot): nothing to close, no GUI backend involved
            path = Path(tmp) / f"convergence_{target}.png"
            results.plot_convergence(target).savefig(path, dpi=100)
            logger.log_artifact(study_run_id, path, "plots")


# ---------------------------------------------------------------------------------------------
# in-memory implementation


@dataclass
class _MemRun:
    run_id: str
    experiment: str
    status: str
    tags: dict[str, str]
    params: dict[str, str] = field(default_factory=dict)
    # key -> list of (step, timestamp, value); "latest" = max (step, timestamp) as in MLflow
    metrics: dict[str, list[tuple[int, float, float]]] = field(default_factory=dict)
    artifacts: dict[str, bytes] = field(default_factory=dict)
    start_time: float = 0.0
    end_time: float | None = None


class InMemoryRunLogger:
    """:class:`RunLogger` over plain dicts (thread-safe); for tests of the runner and planner.

    Behaves like :class:`MlflowRunLogger` in everything the contract suite checks.
    ``metric_history(run_id, key)`` is an extra for tests.
    """

    def __init__(self) -> None:
        self._runs: dict[str, _MemRun] = {}
        self._lock = threading.RLock()
        self._clock = 0.0

    def _now(self) -> float:
        # strictly increasing, so "latest started" is well defined even within one clock tick
        self._clock = max(self._clock + 1e-6, time.time())
        return self._clock

    def _run(self, run_id: str) -> _MemRun:
        try:
            return self._runs[run_id]
        except KeyError:
            raise KeyError(f"no run {run_id!r}") from None

    def start_study(self, name: str, study_hash: str, *,
                    params: Mapping[str, Any] | None = None) -> str:
        with self._lock:
            exp = experiment_name(name)
            for r in self._runs.values():
                if (r.experiment == exp and r.tags.get("ks.role") == "study"
                        and r.tags.get("ks.study_hash") == study_hash):
                    r.status, r.end_time = "RUNNING", None
                    r.tags.pop("ks.error", None)
                    if params:
                        self.log_params(r.run_id, params)
                    return r.run_id
            rid = uuid.uuid4().hex
            self._runs[rid] = _MemRun(rid, exp, "RUNNING",
                                      {"ks.role": "study", **_study_tags(name, study_hash)},
                                      start_time=self._now())
            if params:
                self.log_params(rid, params)
            return rid

    def start_task(self, study_run_id: str, meta: TaskMeta, *,
                   params: Mapping[str, Any] | None = None,
                   parent_run_id: str | None = None) -> str:
        with self._lock:
            study = self._run(study_run_id)
            parent = self._run(parent_run_id or study_run_id)
            tags = {**meta.to_tags(),
                    **_study_tags(study.tags["ks.study"], study.tags["ks.study_hash"]),
                    "mlflow.parentRunId": parent.run_id}
            rid = uuid.uuid4().hex
            self._runs[rid] = _MemRun(rid, study.experiment, "RUNNING", tags,
                                      start_time=self._now())
            if params:
                self.log_params(rid, params)
            return rid

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        with self._lock:
            self._run(run_id).tags.update({k: str(v) for k, v in tags.items()})

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        flat = flatten_params(params)
        with self._lock:
            run = self._run(run_id)
            conflicts = sorted(k for k, v in flat.items() if k in run.params and run.params[k] != v)
            if conflicts:
                raise ParamConflict(_conflict_message(run_id, conflicts, run.params, flat))
            run.params.update(flat)

    def log_metrics(self, run_id: str, metrics: Mapping[str, float],
                    step: int | None = None) -> None:
        with self._lock:
            run = self._run(run_id)
            ts = self._now()
            for k, v in _clean_metrics(metrics).items():
                run.metrics.setdefault(k, []).append((int(step or 0), ts, v))

    def log_artifact(self, run_id: str, local_path: str | Path,
                     artifact_path: str | None = None) -> None:
        local_path = Path(local_path)
        with self._lock:
            run = self._run(run_id)
            base = Path(artifact_path) if artifact_path else Path()
            if local_path.is_dir():
                for f in sorted(local_path.rglob("*")):
                    if f.is_file():
                        key = base / local_path.name / f.relative_to(local_path)
                        run.artifacts[key.as_posix()] = f.read_bytes()
            else:
                run.artifacts[(base / local_path.name).as_posix()] = local_path.read_bytes()

    def download_artifact(self, run_id: str, artifact_path: str, dst_dir: str | Path) -> Path:
        with self._lock:
            arts = self._run(run_id).artifacts
            key = Path(artifact_path).as_posix()
            files = {k: v for k, v in arts.items() if k == key or k.startswith(key + "/")}
        if not files:
            raise FileNotFoundError(f"run {run_id} has no artifact {artifact_path!r}")
        # MLflow's layout: a file lands as dst/<its name>, a directory as dst/<dir name>/...
        dst = Path(dst_dir) / Path(key).name
        for k, data in files.items():
            out = dst if k == key else dst / Path(k).relative_to(key)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(data)
        return dst

    def _end(self, run_id: str, status: str, reason: str | None) -> None:
        with self._lock:
            run = self._run(run_id)
            run.tags.update(_error_tag(_check_status(status), reason))
            run.status, run.end_time = status, self._now()

    def end_task(self, run_id: str, status: str = "FINISHED", reason: str | None = None) -> None:
        self._end(run_id, status, reason)

    def end_study(self, study_run_id: str, status: str = "FINISHED",
                  reason: str | None = None, *, plots: bool = True) -> None:
        _check_status(status)
        if status == "FINISHED" and plots:
            run = self._run(study_run_id)
            _log_convergence_plots(self, run.tags["ks.study"], run.tags["ks.study_hash"],
                                   study_run_id)
        self._end(study_run_id, status, reason)

    def finished_tasks(self, study_hash: str) -> dict[str, str]:
        _check_hash(study_hash)
        with self._lock:
            records = [self._record(r) for r in self._runs.values()]
        return _pick_finished(records, study_hash)

    def close_running(self, study_hash: str, status: str = "KILLED",
                      reason: str = "driver stopped before the run ended") -> list[str]:
        _check_status(status)
        _check_hash(study_hash)
        with self._lock:
            ids = [r.run_id for r in self._runs.values()
                   if r.status == "RUNNING" and r.tags.get("ks.role") in _ROLES
                   and r.tags.get("ks.study_hash") == study_hash]
            for rid in ids:
                self._end(rid, status, reason)
        return ids

    def _record(self, r: _MemRun) -> RunRecord:
        latest = {k: max(v)[2] for k, v in r.metrics.items()}
        return RunRecord(r.run_id, r.status, dict(r.tags), dict(r.params), latest,
                         r.start_time, r.end_time)

    def get_run(self, run_id: str) -> RunRecord:
        with self._lock:
            return self._record(self._run(run_id))

    def study_runs(self, name: str, study_hash: str | None = None) -> list[RunRecord]:
        exp = experiment_name(name)
        with self._lock:
            records = [self._record(r) for r in self._runs.values() if r.experiment == exp]
        if not records:
            raise StudyNotFound(f"no study named {name!r} in memory")
        h = _select_hash(records, name, study_hash and _check_hash(study_hash))
        return [r for r in records if r.tags.get("ks.study_hash") == h]

    def metric_history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        """``[(step, value), ...]`` in logging order (tests only)."""
        with self._lock:
            return [(s, v) for s, _, v in self._run(run_id).metrics.get(metric_key(key), [])]


def _conflict_message(run_id: str, keys: list[str], old: Mapping[str, str],
                      new: Mapping[str, str]) -> str:
    shown = ", ".join(f"{k}: {old[k]!r} -> {new[k]!r}" for k in keys[:5])
    more = f" (and {len(keys) - 5} more)" if len(keys) > 5 else ""
    return (f"run {run_id}: params are immutable and were already logged with other values: "
            f"{shown}{more}")


# ---------------------------------------------------------------------------------------------
# MLflow implementation


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
    both give identical records. ``fast_read=False`` always uses ``search_runs``.
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

    @functools.cached_property
    def client(self) -> Any:
        """The ``MlflowClient`` (created, and MLflow imported, on first use)."""
        from mlflow import MlflowClient

        if self._db is not None:
            self._db.parent.mkdir(parents=True, exist_ok=True)
        return MlflowClient(self.tracking_uri)

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
            exp_id = self._experiment_id(name, create=True)
            existing = self._search(
                [exp_id], f"tags.`ks.role` = 'study' AND tags.`ks.study_hash` = '{study_hash}'")
            if existing:
                rid = min(existing, key=lambda r: r.start_time or 0).run_id
                self.client.update_run(rid, status="RUNNING")
                if "ks.error" in self.get_run(rid).tags:
                    self.client.delete_tag(rid, "ks.error")  # the resumed run has not failed
            else:
                rid = self.client.create_run(
                    exp_id, run_name=f"study {name}",
                    tags={"ks.role": "study", **_study_tags(name, study_hash)}).info.run_id
            if params:
                self.log_params(rid, params)
            return rid

    def start_task(self, study_run_id: str, meta: TaskMeta, *,
                   params: Mapping[str, Any] | None = None,
                   parent_run_id: str | None = None) -> str:
        with self._lock:
            exp_id, name, study_hash = self._study_of(study_run_id)
            tags = {**meta.to_tags(), **_study_tags(name, study_hash),
                    "mlflow.parentRunId": parent_run_id or study_run_id}
            rid = self.client.create_run(exp_id, tags=tags, run_name=meta.task_id).info.run_id
            if params:
                self._log_new_params(rid, flatten_params(params))  # a new run has none yet
            return rid

    def _study_of(self, study_run_id: str) -> tuple[str, str, str]:
        """(experiment id, study name, hash) of a parent run; cached (they never change)."""
        if study_run_id not in self._studies:
            run = self.client.get_run(study_run_id)
            self._studies[study_run_id] = (run.info.experiment_id, run.data.tags["ks.study"],
                                           run.data.tags["ks.study_hash"])
        return self._studies[study_run_id]

    def _log_new_params(self, run_id: str, flat: Mapping[str, str]) -> None:
        from mlflow.entities import Param

        new = [Param(k, v) for k, v in flat.items()]
        for i in range(0, len(new), _PARAMS_PER_BATCH):
            self.client.log_batch(run_id, params=new[i:i + _PARAMS_PER_BATCH])

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        from mlflow.entities import RunTag

        with self._lock:
            self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        flat = flatten_params(params)
        with self._lock:
            old = self.client.get_run(run_id).data.params
            conflicts = sorted(k for k, v in flat.items() if k in old and old[k] != v)
            if conflicts:
                raise ParamConflict(_conflict_message(run_id, conflicts, old, flat))
            self._log_new_params(run_id, {k: v for k, v in flat.items() if k not in old})

    def log_metrics(self, run_id: str, metrics: Mapping[str, float],
                    step: int | None = None) -> None:
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        items = [Metric(k, v, ts, int(step or 0)) for k, v in _clean_metrics(metrics).items()]
        with self._lock:
            for i in range(0, len(items), _METRICS_PER_BATCH):
                self.client.log_batch(run_id, metrics=items[i:i + _METRICS_PER_BATCH])

    def log_artifact(self, run_id: str, local_path: str | Path,
                     artifact_path: str | None = None) -> None:
        local_path = Path(local_path)
        with self._lock:
            if local_path.is_dir():
                sub = f"{artifact_path}/{local_path.name}" if artifact_path else local_path.name
                self.client.log_artifacts(run_id, str(local_path), sub)
            else:
                self.client.log_artifact(run_id, str(local_path), artifact_path)

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
        _check_status(status)
        with self._lock:
            tags = _error_tag(status, reason)
            if tags:
                self.set_tags(run_id, tags)
            self.client.set_terminated(run_id, status)

    def end_task(self, run_id: str, status: str = "FINISHED", reason: str | None = None) -> None:
        self._end(run_id, status, reason)

    def end_study(self, study_run_id: str, status: str = "FINISHED",
                  reason: str | None = None, *, plots: bool = True) -> None:
        _check_status(status)
        if status == "FINISHED" and plots:
            tags = self.client.get_run(study_run_id).data.tags
            _log_convergence_plots(self, tags["ks.study"], tags["ks.study_hash"], study_run_id)
        self._end(study_run_id, status, reason)

    def finished_tasks(self, study_hash: str) -> dict[str, str]:
        _check_hash(study_hash)
        with self._lock:
            records = self._search(
                self._study_experiments(),
                f"tags.`ks.study_hash` = '{study_hash}' AND tags.`ks.role` = 'task' "
                "AND attributes.status = 'FINISHED'")
        return _pick_finished(records, study_hash)

    def close_running(self, study_hash: str, status: str = "KILLED",
                      reason: str = "driver stopped before the run ended") -> list[str]:
        _check_status(status)
        _check_hash(study_hash)
        with self._lock:
            records = self._search(
                self._study_experiments(),
                f"tags.`ks.study_hash` = '{study_hash}' AND attributes.status = 'RUNNING'")
            ids = [r.run_id for r in records if r.role in _ROLES]
            for rid in ids:
                self._end(rid, status, reason)
        return ids

    def get_run(self, run_id: str) -> RunRecord:
        return _to_record(self.client.get_run(run_id))

    def study_runs(self, name: str, study_hash: str | None = None) -> list[RunRecord]:
        if study_hash is not None:
            _check_hash(study_hash)
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
                parents = self._search([exp_id], "tags.`ks.role` = 'study'")
                study_hash = _select_hash(parents, name, None)
            _check_hash(study_hash)
            records = self._search([exp_id], f"tags.`ks.study_hash` = '{study_hash}'")
        _select_hash(records, name, study_hash)  # raises when the hash has no parent run
        return records


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
                "JOIN tags t ON t.run_uuid = r.run_uuid AND t.key = 'ks.role' "
                "AND t.value = 'study' "
                "JOIN tags h ON h.run_uuid = r.run_uuid AND h.key = 'ks.study_hash' "
                "WHERE r.experiment_id = ? AND r.lifecycle_stage = 'active'", (exp_id,)
            ).fetchall()
            study_hash = _select_hash(
                [RunRecord(rid, "", {"ks.role": "study", "ks.study_hash": h}, {}, {},
                           st / 1000 if st is not None else None) for rid, st, h in parents],
                name, None)
        selected = ("SELECT r.run_uuid FROM runs r JOIN tags h ON h.run_uuid = r.run_uuid "
                    "AND h.key = 'ks.study_hash' AND h.value = ? "
                    "WHERE r.experiment_id = ? AND r.lifecycle_stage = 'active'")
        args = (study_hash, exp_id)
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
    _select_hash(records, name, study_hash)  # raises when the hash has no parent run
    return records


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

