"""Study versions: what changed since the last one, and which finished tasks carry over.

A study's hash (:func:`study.spec_data.content_hash`) names one *version*: any change to what it
computes makes a new one. Tasks are keyed by their own content (:func:`study.plan.task_key`),
so a new version reuses every finished task whose key an earlier version of the same study
(same name, same tracking store) already has.

Rules:

* **Which run is reused.** For each task key, the latest-started FINISHED task run
  (``ks.role=task``) of any version of the study that carries that key (tag
  :data:`~study.mlflow_layout.TAG_TASK_KEY`), except a fine-tune that successive halving
  stopped (:mod:`study.halving`: it ran only part of its iterations).
* **How.** The runner *adopts* it (:func:`adopt`): a light task run in the new version,
  with the new task's tags (id, kind, key), the original run's params and final metric
  values (one value per metric, at step = its last iteration: the per-step history stays on
  the original), its ``ks.`` tags (node, host, search results), and
  :data:`~study.mlflow_layout.TAG_REUSED_FROM` = the original run's id (a run adopted from
  an adopted run points at the first one) plus
  :data:`~study.mlflow_layout.TAG_REUSED_FROM_STUDY` = its study hash. So ``status``,
  ``best``, ``report`` and :func:`study.query.load_study` read one version as before and
  include the reused tasks. A fine-tune that depends on a reused pre-train (or baseline)
  starts from the original run's checkpoint (:func:`origin_run`).
* **What changed** (:func:`version_change`): the parent run of each version records its
  datasets' digests as params ``datasets.<name>`` (:func:`study_params`); a version that
  is not the latest one names the datasets whose digest differs, else says the spec did.

Pure over a :class:`~study.tracking.RunLogger` (no Ray, no torch).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .halving import halved_rung
from .mlflow_layout import (
    ROLE_STUDY,
    ROLE_TASK,
    TAG_REUSED_FROM,
    TAG_REUSED_FROM_STUDY,
    TAG_ROLE,
    TAG_STUDY_HASH,
    TAG_TASK_KEY,
    RunRecord,
    StudyNotFound,
    TaskMeta,
    experiment_name,
    task_tag,
)
from .plan import Plan, Task
from .spec_data import LoadedStudy, dataset_digest
from .tracking import MlflowRunLogger, RunLogger, sqlite_path

__all__ = ["adopt", "adopt_finished", "finished_by_key", "origin_run", "reusable",
           "study_params", "version_change"]

#: Param prefix of the datasets' digests on a study's parent run.
_DATASETS = "datasets."
#: Tags a light run gets from the new task, never copied from the original.
_OWN_TAGS = {task_tag(f) for f in TaskMeta.__dataclass_fields__ if f != "node"} | {
    TAG_REUSED_FROM, TAG_REUSED_FROM_STUDY}


def study_params(loaded: LoadedStudy) -> dict[str, Any]:
    """The parent run's version params: ``{"datasets": {name: dataset digest}}``."""
    return {"datasets": {n: dataset_digest(c) for n, c in sorted(loaded.cards.items())}}


def version_change(logger: RunLogger, loaded: LoadedStudy) -> tuple[str, str] | None:
    """``(earlier short hash, what changed)`` against the most recently started version of
    the study with another hash, or None when there is none (or it is this version).
    "What changed" names the datasets whose content digest differs (or that were added or
    removed), else says the spec changed."""
    name = loaded.spec.name
    try:
        records = logger.study_runs(name, None)
    except StudyNotFound:
        return None
    parents = [r for r in records if r.role == ROLE_STUDY]
    if not parents:
        return None
    latest = max(parents, key=lambda r: r.start_time or 0)
    old_hash = latest.tags.get(TAG_STUDY_HASH, "")
    if old_hash == loaded.hash:
        return None
    old = {k[len(_DATASETS):]: v for k, v in latest.params.items() if k.startswith(_DATASETS)}
    new = study_params(loaded)["datasets"]
    why = []
    for ds in sorted(set(old) | set(new)):
        if ds not in old:
            why.append(f"dataset {ds!r} was added")
        elif ds not in new:
            why.append(f"dataset {ds!r} was removed")
        elif old[ds] != new[ds]:
            why.append(f"the content of dataset {ds!r} changed "
                       f"(digest {old[ds][:12]} -> {new[ds][:12]})")
    if not old:
        why = ["its datasets or spec changed (that version recorded no dataset digests)"]
    return old_hash[:12], "; ".join(why) if why else "the spec changed"


def finished_by_key(logger: RunLogger, name: str) -> dict[str, RunRecord]:
    """``{task key: run}``: the latest-started FINISHED task run of each key over every
    version of study ``name``. Empty when the store or the study does not exist (nothing
    is created). Loggers other than :class:`~study.tracking.MlflowRunLogger` take part
    through a ``finished_task_runs(name)`` method returning records, else reuse nothing."""
    find = getattr(logger, "finished_task_runs", None)
    if find is not None:
        records = list(find(name))
    elif isinstance(logger, MlflowRunLogger):
        db = sqlite_path(logger.tracking_uri)
        if db is not None and not db.is_file():
            return {}
        exp = logger.client.get_experiment_by_name(experiment_name(name))
        if exp is None or exp.lifecycle_stage != "active":
            return {}
        records = logger._search(
            [exp.experiment_id],
            f"tags.`{TAG_ROLE}` = '{ROLE_TASK}' AND attributes.status = 'FINISHED'")
    else:
        return {}
    best: dict[str, RunRecord] = {}
    for r in records:
        key = r.tags.get(TAG_TASK_KEY)
        if r.role != ROLE_TASK or r.status != "FINISHED" or not key:
            continue
        if halved_rung(r.tags) is not None:  # study.halving stopped it: not a finished task
            continue
        cur = best.get(key)
        if cur is None or (r.start_time or 0) >= (cur.start_time or 0):
            best[key] = r
    return best


def reusable(plan: Plan, by_key: Mapping[str, RunRecord], done: Mapping[str, str] | None = None
             ) -> dict[str, RunRecord]:
    """``{task id: run}`` of the plan's tasks not in ``done`` (finished in this version)
    whose key has a finished run in some version."""
    done = done or {}
    return {t.id: by_key[t.key] for t in plan
            if t.id not in done and t.key and t.key in by_key}


def origin_run(logger: RunLogger, run_id: str) -> str:
    """The run that actually trained: ``run_id``, or the run it was adopted from."""
    return logger.get_run(run_id).tags.get(TAG_REUSED_FROM) or run_id


def adopt(logger: RunLogger, study_run: str, task: Task, record: RunRecord) -> str:
    """A light FINISHED run of ``task`` in this version standing for ``record`` (see the
    module doc); returns its id."""
    rid = logger.start_task(study_run, TaskMeta.from_task(task), params=dict(record.params))
    tags = {k: v for k, v in record.tags.items()
            if k.startswith("ks.") and k not in _OWN_TAGS and k != TAG_STUDY_HASH
            and not k.startswith("ks.study") and k != "ks.code_version"}
    tags[TAG_REUSED_FROM] = record.tags.get(TAG_REUSED_FROM) or record.run_id
    tags[TAG_REUSED_FROM_STUDY] = (record.tags.get(TAG_REUSED_FROM_STUDY)
                                   or record.tags.get(TAG_STUDY_HASH, ""))
    logger.set_tags(rid, tags)
    if record.metrics:
        step = record.metrics.get("iteration")
        logger.log_metrics(rid, dict(record.metrics), step=int(step) if step else None)
    logger.end_task(rid, "FINISHED")
    return rid


def adopt_finished(logger: RunLogger, study_run: str, plan: Plan, done: Mapping[str, str],
                   name: str) -> dict[str, str]:
    """Adopt every reusable task of ``plan`` (:func:`reusable`); ``{task id: new run id}``."""
    found = reusable(plan, finished_by_key(logger, name), done)
    return {tid: adopt(logger, study_run, plan[tid], rec) for tid, rec in found.items()}
