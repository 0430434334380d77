"""An in-memory :class:`~study.tracking.RunLogger` for tests: the same observable behaviour
as :class:`~study.tracking.MlflowRunLogger` in plain dicts (``tests/test_tracking.py`` runs
one contract suite over both), without MLflow's seconds of start-up."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from study.mlflow_layout import (
    ROLE_STUDY,
    RUN_ROLES,
    TAG_ERROR,
    TAG_PARENT,
    TAG_ROLE,
    TAG_STUDY,
    TAG_STUDY_HASH,
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
    one_per_step,
    select_hash,
    study_tags,
)
from study.tracking import code_version

__all__ = ["InMemoryRunLogger"]


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
    """:class:`~study.tracking.RunLogger` over plain dicts (thread-safe)."""

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
                if (r.experiment == exp and r.tags.get(TAG_ROLE) == ROLE_STUDY
                        and r.tags.get(TAG_STUDY_HASH) == study_hash):
                    r.status, r.end_time = "RUNNING", None
                    r.tags.pop(TAG_ERROR, None)
                    if params:
                        self.log_params(r.run_id, params)
                    return r.run_id
            rid = uuid.uuid4().hex
            self._runs[rid] = _MemRun(rid, exp, "RUNNING",
                                      {TAG_ROLE: ROLE_STUDY, **_tags(name, study_hash)},
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
                    **_tags(study.tags[TAG_STUDY], study.tags[TAG_STUDY_HASH]),
                    TAG_PARENT: parent.run_id}
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
            check_params(run_id, run.params, flat)
            run.params.update(flat)

    def log_metrics(self, run_id: str, metrics: Mapping[str, float],
                    step: int | None = None) -> None:
        with self._lock:
            run = self._run(run_id)
            ts = self._now()
            for k, v in clean_metrics(metrics).items():
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
            run.tags.update(error_tags(check_end_status(status), reason))
            run.status, run.end_time = status, self._now()

    def end_task(self, run_id: str, status: str = "FINISHED", reason: str | None = None) -> None:
        self._end(run_id, status, reason)

    def end_study(self, study_run_id: str, status: str = "FINISHED",
                  reason: str | None = None) -> None:
        self._end(study_run_id, status, reason)

    def finished_tasks(self, study_hash: str) -> dict[str, str]:
        check_hash(study_hash)
        with self._lock:
            records = [self._record(r) for r in self._runs.values()]
        return {tid: r.run_id for tid, r in latest_finished(records, study_hash).items()}

    def close_running(self, study_hash: str, status: str = "KILLED",
                      reason: str = "driver stopped before the run ended") -> list[str]:
        check_end_status(status)
        check_hash(study_hash)
        with self._lock:
            ids = [r.run_id for r in self._runs.values()
                   if r.status == "RUNNING" and r.tags.get(TAG_ROLE) in RUN_ROLES
                   and r.tags.get(TAG_STUDY_HASH) == study_hash]
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
        h = select_hash(records, name, study_hash and check_hash(study_hash))
        return [r for r in records if r.tags.get(TAG_STUDY_HASH) == h]

    def metric_histories(self, run_ids: Sequence[str], key: str
                         ) -> dict[str, list[tuple[int, float]]]:
        key = metric_key(key)
        with self._lock:
            points = {rid: list(self._runs[rid].metrics.get(key, []))
                      for rid in dict.fromkeys(run_ids) if rid in self._runs}
        return {rid: one_per_step(p) for rid, p in points.items() if p}


def _tags(name: str, study_hash: str) -> dict[str, str]:
    return study_tags(name, study_hash, code_version())
