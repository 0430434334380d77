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
  ``f1_10``); the convergence curve is ``frame_acc``'s step history (:data:`CURVE_METRIC`,
  one value per step: :func:`one_per_step`), read in bulk by
  ``RunLogger.metric_histories``; a search's best as ``best.<metric>`` (:data:`BEST_PREFIX`).
  Stores written before issue 11 also hold the curve as flat metrics
  ``curve.frame_acc.<iteration>`` (the same values): nothing logs them now and the query
  API ignores them;
* artifacts: pre-train checkpoints at :data:`CHECKPOINT_ARTIFACT`; convergence plots per
  target on the parent run under :data:`PLOTS_DIR` (published by :mod:`study.report`);
  every final LSTM as the MLflow model ``model`` (:mod:`study.models`).

What the MLflow UI shows (made for comparing runs there):

* run names (:func:`task_run_name`, :func:`trial_run_name`): unique within a study and
  readable, e.g. ``finetune salads→breakfast s1 concat seed0``, ``trial 3 · h128 d1 lr1e-3``;
  a trial that ASHA stopped early gets the suffix ``· stopped @ <iteration>``
  (:func:`stopped_name`) besides the tag :data:`TAG_EARLY_STOPPED`;
* the datasets a task read, as MLflow dataset inputs (:class:`DatasetRef`: name, digest =
  the card's content digest, else its input hash, source = the Parquet path);
* the experiment's description (tag :data:`NOTE_TAG`) from the spec (:func:`experiment_note`);
* ``gain.<metric>`` (:data:`GAIN_PREFIX`) on each transfer/joint run: its metric minus the
  mean of the baselines of the same target, target split and seed, logged by the driver when
  the later of the two finishes (:class:`GainBook`; the query API's pairing rule), and once
  the pair has two seeds or more ``gain_ci_low.<metric>`` / ``gain_ci_high.<metric>`` and
  :data:`GAIN_SEEDS_METRIC` on every run of the pair (:meth:`GainBook.intervals`);
* on the study run: :data:`TASKS_FINISHED_METRIC` (step = count) and
  ``best_gain.<metric>`` (the best per-run gain so far).

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
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from trainables.job import TEMPORAL_CHECKPOINT_FILE
from trainables.metrics import METRIC_NAMES

__all__ = [
    "BEST_GAIN_PREFIX",
    "BEST_PREFIX",
    "CHECKPOINT_ARTIFACT",
    "CURVE_METRIC",
    "DEFAULT_TRACKING_URI",
    "ESTIMATE_PREFIX",
    "EXPERIMENT_PREFIX",
    "GAIN_CI_HIGH_PREFIX",
    "GAIN_CI_LOW_PREFIX",
    "GAIN_PREFIX",
    "GAIN_SEEDS_METRIC",
    "ITERATION_METRIC",
    "MAX_PARAM_VALUE",
    "NOTE_TAG",
    "EXPERIMENT_KIND",
    "EXPERIMENT_KIND_TAG",
    "RUN_NAME_TAG",
    "PLOTS_DIR",
    "RESULT_METRICS",
    "ROLE_STUDY",
    "ROLE_TASK",
    "ROLE_TRIAL",
    "RUN_ROLES",
    "TAG_BEST_PARAMS",
    "TAG_BEST_TRIAL_RUN",
    "TAG_EARLY_STOPPED",
    "TAG_ERROR",
    "TAG_HOST",
    "TAG_LAST_ERROR",
    "TAG_OPTUNA_STUDY",
    "TAG_OPTUNA_TRIAL",
    "TAG_PACK",
    "TAG_PARENT",
    "TAG_RETRIES",
    "TAG_ROLE",
    "TAG_SEARCH_METRIC",
    "TAG_STUDY",
    "TAG_REUSED_FROM",
    "TAG_REUSED_FROM_STUDY",
    "TAG_STUDY_HASH",
    "TAG_TASK_KEY",
    "TAG_TRIAL_PARAMS",
    "TASKS_FINISHED_METRIC",
    "DatasetRef",
    "GainBook",
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
    "experiment_note",
    "finite_or_none",
    "int_or_none",
    "metric_column",
    "flatten_params",
    "latest_finished",
    "metric_key",
    "metrics_from_result",
    "one_per_step",
    "select_hash",
    "stopped_name",
    "study_tags",
    "task_run_name",
    "task_tag",
    "trial_run_name",
]

EXPERIMENT_PREFIX = "kitchen-study/"
#: where a study is tracked when nothing else is said (the precedence: :mod:`study.uri`)
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
#: A stored checkpoint's artifact path: the trial's checkpoint file, under ``checkpoint/``.
CHECKPOINT_ARTIFACT = f"checkpoint/{TEMPORAL_CHECKPOINT_FILE}"
PLOTS_DIR = "plots"
#: MLflow's limits (mlflow/utils/validation.py in 3.x).
MAX_PARAM_VALUE = 6000
_MAX_TAG_VALUE = 8000

#: Prefixes of the validation protocol's result keys: the validation part's metrics, and the
#: last iteration's test metrics when the reported model is an earlier (best validation) one.
VAL_PREFIX = "val."
LAST_PREFIX = "last."
#: Result keys (as the trainable reports them) that become metrics; everything else a
#: Tune result carries (timestamps, pids, ...) is not a study metric.
RESULT_METRICS: tuple[str, ...] = (
    "loss", *METRIC_NAMES, "frames_per_s",
    # the validation protocol (trainables.train_job.TrainRun.evaluate_at): the validation
    # part's metrics, the reported (best validation) iteration and the last iteration's test
    *(f"{VAL_PREFIX}{m}" for m in METRIC_NAMES), "best_iteration",
    *(f"{LAST_PREFIX}{m}" for m in METRIC_NAMES),
)
ITERATION_METRIC = "iteration"
#: The metric whose step history (step = iteration) is a run's convergence curve.
CURVE_METRIC = "frame_acc"
BEST_PREFIX = "best."
GAIN_PREFIX = "gain."
#: the 95 % interval of the gain over seeds, on every run of a pair with two seeds or more
GAIN_CI_LOW_PREFIX = "gain_ci_low."
GAIN_CI_HIGH_PREFIX = "gain_ci_high."
GAIN_SEEDS_METRIC = "gain_seeds"
BEST_GAIN_PREFIX = "best_gain."
TASKS_FINISHED_METRIC = "tasks_finished"
#: MLflow's experiment (and run) description tag, shown on the experiment page
NOTE_TAG = "mlflow.note.content"
#: MLflow's experiment kind tag: a study is model training, so the UI (3.x) opens the
#: experiment on its runs table rather than on the GenAI traces overview
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
#: MLflow's run name tag (setting it renames the run)
RUN_NAME_TAG = "mlflow.runName"
#: MLflow's limit on a dataset digest's length (mlflow/utils/validation.py)
_MAX_DIGEST = 36

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
#: On the task run of a member of a pack (``study.packed_trial``): the pack's Tune trial id,
#: the same on every member.
TAG_PACK = f"{_TAG}pack"
#: A task's identity by content (``study.plan.task_key``), on every task run.
TAG_TASK_KEY = f"{_TAG}task_key"
#: On a task run that adopts a finished run of an earlier study version with the same task
#: key (``study.reuse``): the original run's id and its study hash. Its metrics are the
#: original's final values; its checkpoint is the original's.
TAG_REUSED_FROM = f"{_TAG}reused_from"
TAG_REUSED_FROM_STUDY = f"{_TAG}reused_from_study"
#: Transferability estimates of a transfer edge, as metrics ``estimate.<name>`` (names:
#: ``trainables.transferability.ESTIMATORS``).
ESTIMATE_PREFIX = "estimate."
#: A search's Optuna study name and objective (on the search run); a trial's Optuna trial
#: number (on the trial run).
TAG_OPTUNA_STUDY = f"{_TAG}optuna_study"
TAG_SEARCH_METRIC = f"{_TAG}search_metric"
TAG_OPTUNA_TRIAL = f"{_TAG}optuna_trial"


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
    task_key: str = ""

    @classmethod
    def from_task(cls, task: Any, *, node: str = "", role: str = ROLE_TASK) -> TaskMeta:
        """From a planner task (``study.plan.Task``: ``id, kind, mode, target, target_split,
        source, source_split, arrangement, seed``; None source fields become "")."""
        return cls(task_id=task.id, kind=task.kind, mode=task.mode, target=task.target,
                   target_split=task.target_split, source=task.source or "",
                   source_split=task.source_split or "", arrangement=task.arrangement or "",
                   seed=int(task.seed), node=node, role=role,
                   task_key=getattr(task, "key", "") or "")

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


def selection_metric(metric: str, validation: str) -> str:
    """The result key a choice reads for ``metric`` (a search's objective, ASHA's and
    halving's rungs): the validation part's (``val.<metric>``) when the task validates
    (``TrainSpec.validation == "people"``), else the metric itself (the paper's protocol)."""
    return f"{VAL_PREFIX}{metric}" if validation == "people" else metric


def metric_key(name: str) -> str:
    """MLflow metric key for a result name: ``f1@10`` -> ``f1_10`` (keys cannot hold '@')."""
    return name.replace("@", "_")


def metric_column(metric: str) -> str:
    """The result name of a metric given either way: ``f1@10`` or its MLflow key ``f1_10``
    (the query API's columns and its readers accept both)."""
    name = {metric_key(m): m for m in METRIC_NAMES}.get(metric, metric)
    if name not in METRIC_NAMES:
        raise ValueError(f"unknown metric {metric!r} (known: {', '.join(METRIC_NAMES)})")
    return name


def int_or_none(v: Any) -> int | None:
    """An integer read back from MLflow (params and tags are strings, ``"3"`` or ``"3.0"``;
    metrics are floats); None when absent or not a number."""
    try:
        return int(float(v))
    except (TypeError, ValueError):
        return None


def finite_or_none(v: Any) -> float | None:
    """A result or metric value as a float when it is a finite number, else None (a missing,
    NaN or infinite value ranks last wherever values are compared)."""
    return float(v) if isinstance(v, int | float) and math.isfinite(v) else None


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
    MLflow-safe). Non-numeric values and None are skipped (they are not metrics); so is the
    result's ``curve`` ``{iteration: frame_acc}``: logged at step = iteration, ``frame_acc``
    already holds it as its history."""
    out: dict[str, float] = {}
    for name in RESULT_METRICS:
        v = result.get(name)
        if isinstance(v, int | float) and not isinstance(v, bool):
            out[metric_key(name)] = float(v)
    return out


def one_per_step(points: Iterable[tuple[int, float, float]]) -> list[tuple[int, float]]:
    """A metric's history ``(step, timestamp, value)`` -> ``[(step, value)]`` by step, one
    value per step: the one MLflow's latest-value rule would pick among them (the largest
    ``(timestamp, value)``; a value logged twice at one step, e.g. by a retried trial, counts
    once). NaN values stay NaN."""
    best: dict[int, tuple[float, float, float]] = {}  # step -> (timestamp, rank, value)
    for step, ts, value in points:
        v = float(value)
        cand = (float(ts), -math.inf if math.isnan(v) else v, v)
        cur = best.get(int(step))
        if cur is None or cand[:2] >= cur[:2]:
            best[int(step)] = cand
    return [(s, best[s][2]) for s in sorted(best)]


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


# -- what the MLflow UI shows ----------------------------------------------------------------


def _split(name: str) -> str:
    """``split1`` -> ``s1``; other split names stay as they are."""
    m = re.fullmatch(r"split(\d+)", name)
    return f"s{m.group(1)}" if m else name


def task_run_name(meta: TaskMeta, detail: str = "") -> str:
    """A task run's name: kind, datasets, split, arrangement, ``detail``, seed. E.g.
    ``baseline breakfast s1 seed0``, ``finetune salads→breakfast s1 concat seed0``,
    ``joint salads s2→breakfast s1 merged 5:3 seed1`` (source split shown only when it
    differs). The arrangement is shown for transfers and whenever it is not ``identity``."""
    ts = _split(meta.target_split)
    if meta.source:
        ss = _split(meta.source_split)
        where = (f"{meta.source}→{meta.target} {ts}" if ss == ts
                 else f"{meta.source} {ss}→{meta.target} {ts}")
    else:
        where = f"{meta.target} {ts}"
    parts = [meta.kind, where]
    if meta.arrangement and (meta.source or meta.arrangement != "identity"):
        parts.append(meta.arrangement)
    if detail:
        parts.append(detail)
    parts.append(f"seed{int(meta.seed)}")
    return " ".join(parts)


#: short names of search parameters in trial run names (others appear as ``key=value``)
_PARAM_ABBREV = {"hidden": "h", "depth": "d", "lr": "lr", "history": "hist",
                 "batch_size": "b", "dropout": "drop", "target_eighths": "t8=",
                 "arrangement": ""}


def _short_value(v: Any) -> str:
    if isinstance(v, float):
        if v != 0 and (abs(v) < 0.01 or abs(v) >= 1e4):
            mant, exp = f"{v:.1e}".split("e")
            return f"{mant.rstrip('0').rstrip('.')}e{int(exp)}"
        return f"{v:.3g}"
    return str(v)


def trial_run_name(number: int, params: Mapping[str, Any]) -> str:
    """A search trial's name: ``trial <number> · <params>``, e.g. ``trial 3 · hist16 d1 h128
    b8 lr1e-3`` (params in the order the search suggested them)."""
    shown = []
    for k, v in params.items():
        ab = _PARAM_ABBREV.get(k)
        shown.append(f"{k}={_short_value(v)}" if ab is None else f"{ab}{_short_value(v)}")
    return f"trial {number}" + (f" · {' '.join(shown)}" if shown else "")


def stopped_name(name: str, iteration: Any) -> str:
    """The name of a trial ASHA stopped early: ``<name> · stopped @ <iteration>``."""
    return f"{name} · stopped @ {iteration}"


def experiment_note(name: str, description: str, datasets: Iterable[str],
                    counts: Mapping[str, int], study_hash: str) -> str:
    """The experiment description (Markdown, tag :data:`NOTE_TAG`): the spec's description,
    its datasets and tasks, and how to read the runs."""
    lines = [f"**kitchen-study {name}**" + (f" — {description.strip()}" if description.strip()
                                            else "")]
    lines.append("")
    lines.append(f"Datasets: {', '.join(datasets)}. Tasks: "
                 + ", ".join(f"{n} {k}" for k, n in counts.items())
                 + f". Study hash `{study_hash[:12]}`.")
    lines.append("")
    lines.append("Run names: `<kind> <source>→<target> <split> <arrangement> seed<N>`; search "
                 "trials `trial <N> · <params>` (`· stopped @ <it>` when ASHA stopped them). "
                 "Metrics are percentages; `gain.frame_acc` = a transfer/joint run's "
                 "frame_acc minus its baseline's (same target, split, seed).")
    return "\n".join(lines)


@dataclass(frozen=True)
class DatasetRef:
    """A dataset as an MLflow dataset input: the spec's name, a digest (the card's content
    digest, else its input hash; cut to MLflow's 36 characters) and the Parquet path."""

    name: str
    digest: str
    source: str
    profile: str = ""

    @classmethod
    def from_card(cls, name: str, card: Any, path: str | Path) -> DatasetRef:
        digest = getattr(card, "content_digest", "") or card.input_hash or "unknown"
        profile = json.dumps({"classes": len(card.classes), "fps": card.fps,
                              "splits": [s.name for s in card.splits]}, sort_keys=True)
        return cls(name, digest[:_MAX_DIGEST], str(path), profile)


class GainBook:
    """Per-run gains as runs finish, by the query API's pairing rule: a transfer/joint run's
    ``metric`` minus the mean of the baselines with the same (target, target split, seed).

    :meth:`add` returns ``{run_id: gain}`` to log now: the new run's gain when its baseline
    is known, or every waiting run's gain when a baseline arrives (the later of the two
    triggers it; a second baseline of the same key re-logs the changed means)."""

    _PAIRED_MODES = ("transfer", "joint")

    def __init__(self) -> None:
        self.baselines: dict[tuple[str, str, int], dict[str, float]] = {}
        self.runs: dict[tuple[str, str, int], dict[str, float]] = {}
        self.gains: dict[str, float] = {}
        # the query's pair of each paired run (source, splits, mode, arrangement) and its seed
        self.pair_of: dict[str, tuple[str, ...]] = {}
        self.seed_of: dict[str, int] = {}

    def add(self, meta: TaskMeta, run_id: str, value: float | None) -> dict[str, float]:
        if value is None or not isinstance(value, int | float) or value != value:
            return {}
        key = (meta.target, meta.target_split, int(meta.seed))
        if meta.kind == "baseline":
            self.baselines.setdefault(key, {})[run_id] = float(value)
            todo = self.runs.get(key, {})
        elif meta.role == ROLE_TASK and meta.mode in self._PAIRED_MODES:
            self.runs.setdefault(key, {})[run_id] = float(value)
            self.pair_of[run_id] = (meta.source, meta.source_split, meta.target,
                                    meta.target_split, meta.mode, meta.arrangement)
            self.seed_of[run_id] = int(meta.seed)
            todo = {run_id: float(value)} if key in self.baselines else {}
        else:
            return {}
        if not todo:
            return {}
        base = self.baselines[key]
        mean = sum(base.values()) / len(base)
        out = {rid: v - mean for rid, v in todo.items()}
        self.gains.update(out)
        return out

    def intervals(self, run_ids: Iterable[str]) -> dict[str, tuple[float, float, int]]:
        """``{run_id: (ci_low, ci_high, seeds)}`` for every run of the pairs of ``run_ids``
        whose gain is known on two seeds or more: the 95 % t-interval of the mean per-seed
        gain (several runs of one seed averaged first), the rule of
        :meth:`study.query.StudyResults.best_transfer_pairs`, so the UI's columns match
        ``kitchen-study best`` once the study is complete."""
        from scipy.special import stdtrit  # driver side only; the read side never calls this

        pairs = {self.pair_of[r] for r in run_ids if r in self.pair_of}
        out: dict[str, tuple[float, float, int]] = {}
        for pair in pairs:
            members = [r for r, p in self.pair_of.items() if p == pair and r in self.gains]
            by_seed: dict[int, list[float]] = {}
            for r in members:
                by_seed.setdefault(self.seed_of[r], []).append(self.gains[r])
            d = [sum(v) / len(v) for v in by_seed.values()]
            n = len(d)
            if n < 2:
                continue
            mean = sum(d) / n
            sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1))
            half = float(stdtrit(n - 1, 0.975)) * sd / math.sqrt(n)
            out.update({r: (mean - half, mean + half, n) for r in members})
        return out

    @property
    def best(self) -> float | None:
        """The largest per-run gain so far (None before the first pair)."""
        return max(self.gains.values()) if self.gains else None
