"""The MLflow layout of a study: where its runs, tags, params, metrics and artifacts live.

The one owner of the layout: the writer (:mod:`study.tracking`) and the readers
(:mod:`study.query`, :mod:`study.status`) import these names instead of spelling keys.
Pure (no MLflow import) and a leaf: it imports nothing else from the study package.

Layout:

* experiment ``kitchen-study/<study name>`` (:func:`experiment_name`); a parent run per
  (study name, study hash) with tags :data:`TAG_ROLE` = ``study``, :data:`TAG_STUDY`,
  :data:`TAG_STUDY_HASH`, :data:`TAG_CODE_VERSION` (:func:`study_tags`);
* a child run per task (tag :data:`TAG_PARENT` = the parent) with the tags of
  :meth:`TaskMeta.to_tags` (``ks.<field>``, :func:`task_tag`); search trials
  (role ``trial``) nest under their search task's run;
* params: the flattened task config (:func:`flatten_params`);
* metrics: :data:`RESULT_METRICS` (``loss``, the evaluation metrics of
  ``trainables.metrics.METRIC_NAMES``, ``frames_per_s``) with step = iteration, plus
  :data:`ITERATION_METRIC`; MLflow keys cannot hold ``@`` (:func:`metric_key`: ``f1@10`` ->
  ``f1_10``); the convergence curve also as flat metrics ``curve.frame_acc.<iteration>``
  (:data:`CURVE_PREFIX`, :func:`metrics_from_result`), so one bulk read returns everything
  the query API needs; a search's best as ``best.<metric>`` (:data:`BEST_PREFIX`);
* artifacts: pre-train checkpoints at :data:`CHECKPOINT_ARTIFACT`; convergence plots per
  target on the parent run under :data:`PLOTS_DIR` (published by :mod:`study.report`).

Rules (stated, not silently applied):

* Params are immutable: re-logging a key with the SAME value is a no-op, a DIFFERENT value
  is :class:`ParamConflict` naming the keys (:func:`check_params`).
* A param value longer than :data:`MAX_PARAM_VALUE` is stored truncated with an explicit,
  deterministic marker ``...[truncated N chars, sha256 H]``, so a resumed task re-logs the
  identical value.
* A run ended ``FAILED``/``KILLED`` carries its reason in :data:`TAG_ERROR`
  (:func:`error_tags`).
* The run that counts for a task is its latest-started ``FINISHED`` task run
  (:func:`latest_finished`); failed attempts stay as records.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from trainables.metrics import METRIC_NAMES

__all__ = [
    "BEST_PREFIX",
    "CHECKPOINT_ARTIFACT",
    "CURVE_PREFIX",
    "END_STATUSES",
    "EXPERIMENT_PREFIX",
    "ITERATION_METRIC",
    "MAX_PARAM_VALUE",
    "PLOTS_DIR",
    "RESULT_METRICS",
    "ROLE_STUDY",
    "ROLE_TASK",
    "ROLE_TRIAL",
    "RUN_ROLES",
    "TAG_BEST_PARAMS",
    "TAG_BEST_TRIAL_RUN",
    "TAG_CODE_VERSION",
    "TAG_EARLY_STOPPED",
    "TAG_ERROR",
    "TAG_HOST",
    "TAG_LAST_ERROR",
    "TAG_PARENT",
    "TAG_RETRIES",
    "TAG_ROLE",
    "TAG_STUDY",
    "TAG_STUDY_HASH",
    "TAG_TRIAL_PARAMS",
    "ParamConflict",
    "RunRecord",
    "StudyNotFound",
    "TaskMeta",
    "check_end_status",
    "check_hash",
    "check_params",
    "clean_metrics",
    "error_tags",
    "experiment_name",
    "flatten_params",
    "latest_finished",
    "metric_key",
    "metrics_from_result",
    "select_hash",
    "study_tags",
    "task_tag",
]

EXPERIMENT_PREFIX = "kitchen-study/"
CHECKPOINT_ARTIFACT = "checkpoint/lstm.pt"
PLOTS_DIR = "plots"
#: MLflow's limits (mlflow/utils/validation.py in 3.x).
MAX_PARAM_VALUE = 6000
_MAX_TAG_VALUE = 8000

#: Result keys (as the LSTM trainable reports them) that become metrics; everything else a
#: Tune result carries (timestamps, pids, ...) is not a study metric.
RESULT_METRICS: tuple[str, ...] = ("loss", *METRIC_NAMES, "frames_per_s")
ITERATION_METRIC = "iteration"
CURVE_PREFIX = "curve.frame_acc."
BEST_PREFIX = "best."

END_STATUSES: tuple[str, ...] = ("FINISHED", "FAILED", "KILLED")

ROLE_STUDY, ROLE_TASK, ROLE_TRIAL = "study", "task", "trial"
#: Roles of the child runs (a task, or a search's trial).
RUN_ROLES: tuple[str, ...] = (ROLE_TASK, ROLE_TRIAL)

_TAG = "ks."
TAG_PARENT = "mlflow.parentRunId"
TAG_ROLE = f"{_TAG}role"
TAG_STUDY = f"{_TAG}study"
TAG_STUDY_HASH = f"{_TAG}study_hash"
TAG_CODE_VERSION = f"{_TAG}code_version"
TAG_ERROR = f"{_TAG}error"
#: Set by the runner: a retried trial's count and last error, the worker's host, a search
#: trial's Optuna params, where ASHA stopped a trial, a search's best trial and params.
TAG_RETRIES = f"{_TAG}retries"
TAG_LAST_ERROR = f"{_TAG}last_error"
TAG_HOST = f"{_TAG}host"
TAG_TRIAL_PARAMS = f"{_TAG}trial_params"
TAG_EARLY_STOPPED = f"{_TAG}early_stopped"
TAG_BEST_TRIAL_RUN = f"{_TAG}best_trial_run"
TAG_BEST_PARAMS = f"{_TAG}best_params"


class ParamConflict(ValueError):
    """A param was logged again with a different value (MLflow params are immutable)."""


class StudyNotFound(LookupError):
    """No tracked study of that name (and hash) at the tracking URI."""


def task_tag(name: str) -> str:
    """The tag key of a :class:`TaskMeta` field: ``kind`` -> ``ks.kind``."""
    return f"{_TAG}{name}"


@dataclass(frozen=True)
class TaskMeta:
    """What identifies a task run; becomes the ``ks.<field>`` tags of its child run.

    ``source``/``source_split`` are "" for tasks without a source (baselines; a pre-train
    is tagged with its dataset as ``target``). ``kind`` is a planner task kind
    (``study.plan.TASK_KINDS``), ``mode`` the task config's mode (``TrainSpec.mode``).
    ``role`` is ``"task"`` or ``"trial"`` (a search trial, nested under its search task's
    run).
    """

    task_id: str
    kind: str
    mode: str
    target: str
    target_split: str
    source: str = ""
    source_split: str = ""
    arrangement: str = ""
    seed: int = 0
    node: str = ""
    role: str = ROLE_TASK

    @classmethod
    def from_task(cls, task: Any, *, node: str = "", role: str = ROLE_TASK) -> TaskMeta:
        """From a planner task (``study.plan.Task``: ``id, kind, mode, target, target_split,
        source, source_split, arrangement, seed``; None source fields become "")."""
        return cls(task_id=task.id, kind=task.kind, mode=task.mode, target=task.target,
                   target_split=task.target_split, source=task.source or "",
                   source_split=task.source_split or "", arrangement=task.arrangement or "",
                   seed=int(task.seed), node=node, role=role)

    def to_tags(self) -> dict[str, str]:
        if self.role not in RUN_ROLES:
            raise ValueError(f"TaskMeta.role must be one of {RUN_ROLES}, got {self.role!r}")
        tags = {}
        for f in fields(self):
            v = getattr(self, f.name)
            tags[task_tag(f.name)] = (str(int(v)) if f.name == "seed"
                                      else "" if v is None else str(v))
        return tags


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
        return self.tags.get(TAG_PARENT)

    @property
    def role(self) -> str:
        return self.tags.get(TAG_ROLE, "")

    @property
    def task_id(self) -> str:
        return self.tags.get(task_tag("task_id"), "")


def experiment_name(study_name: str) -> str:
    return f"{EXPERIMENT_PREFIX}{study_name}"


def metric_key(name: str) -> str:
    """MLflow metric key for a result name: ``f1@10`` -> ``f1_10`` (keys cannot hold '@')."""
    return name.replace("@", "_")


def study_tags(name: str, study_hash: str, code_version: str) -> dict[str, str]:
    """The tags every run of a study carries (the parent adds its role)."""
    check_hash(study_hash)
    return {TAG_STUDY: name, TAG_STUDY_HASH: study_hash, TAG_CODE_VERSION: code_version}


# -- params ----------------------------------------------------------------------------------


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


def check_params(run_id: str, old: Mapping[str, str], new: Mapping[str, str]) -> None:
    """:class:`ParamConflict` when a flattened param in ``new`` differs from ``old``."""
    keys = sorted(k for k, v in new.items() if k in old and old[k] != v)
    if not keys:
        return
    shown = ", ".join(f"{k}: {old[k]!r} -> {new[k]!r}" for k in keys[:5])
    more = f" (and {len(keys) - 5} more)" if len(keys) > 5 else ""
    raise ParamConflict(f"run {run_id}: params are immutable and were already logged with "
                        f"other values: {shown}{more}")


# -- metrics ---------------------------------------------------------------------------------


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
        out[f"{CURVE_PREFIX}{int(it)}"] = float(acc)
    return out


def clean_metrics(metrics: Mapping[str, float]) -> dict[str, float]:
    """MLflow-safe keys, float values; None means "not measured" and is not logged."""
    return {metric_key(k): float(v) for k, v in metrics.items() if v is not None}


# -- statuses and reasons --------------------------------------------------------------------


def check_end_status(status: str) -> str:
    if status not in END_STATUSES:
        raise ValueError(f"end status must be one of {END_STATUSES}, got {status!r}")
    return status


def error_tags(status: str, reason: str | None) -> dict[str, str]:
    """``{TAG_ERROR: reason}`` for a run ending FAILED/KILLED (truncated to MLflow's tag
    limit with a marker); nothing for FINISHED."""
    if status == "FINISHED":
        return {}
    reason = reason or f"ended {status} without a reason"
    if len(reason) > _MAX_TAG_VALUE:
        reason = reason[: _MAX_TAG_VALUE - 40] + f"...[truncated {len(reason)} chars]"
    return {TAG_ERROR: reason}


_HASH_RE = re.compile(r"[A-Za-z0-9_.:-]+")


def check_hash(study_hash: str) -> str:
    """Hashes go into MLflow filter strings: only characters that need no quoting."""
    if not isinstance(study_hash, str) or not _HASH_RE.fullmatch(study_hash):
        raise ValueError(f"study hash must match {_HASH_RE.pattern}, got {study_hash!r}")
    return study_hash


# -- reading ---------------------------------------------------------------------------------


def latest_finished(records: Iterable[RunRecord], study_hash: str | None = None
                    ) -> dict[str, RunRecord]:
    """``{task_id: run}``: the latest-started FINISHED task run of each task (of
    ``study_hash`` when given). Equal start times: the later record wins."""
    best: dict[str, RunRecord] = {}
    for r in records:
        if r.role != ROLE_TASK or r.status != "FINISHED":
            continue
        if study_hash is not None and r.tags.get(TAG_STUDY_HASH) != study_hash:
            continue
        cur = best.get(r.task_id)
        if cur is None or (r.start_time or 0) >= (cur.start_time or 0):
            best[r.task_id] = r
    return best


def select_hash(records: Iterable[RunRecord], name: str, study_hash: str | None) -> str:
    """``study_hash`` if a parent run has it, else (None) the latest-started parent's hash;
    :class:`StudyNotFound` when there is no such parent run."""
    parents = [r for r in records if r.role == ROLE_STUDY]
    if study_hash is not None:
        if not any(r.tags.get(TAG_STUDY_HASH) == study_hash for r in parents):
            raise StudyNotFound(f"study {name!r} has no run with hash {study_hash!r}")
        return study_hash
    if not parents:
        raise StudyNotFound(f"study {name!r} has no study run")
    latest = max(parents, key=lambda r: r.start_time or 0)
    return latest.tags[TAG_STUDY_HASH]
