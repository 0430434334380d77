"""A study's searches as Optuna reports them, read from MLflow alone (no Optuna storage):
what ``StudyResults.search_trials`` and ``search_summary`` (:mod:`study.query`) return.

Rules:

* :func:`search_trials` is one row per trial of each search, read from MLflow
  alone, in the shape of Optuna's ``Study.trials_dataframe()`` (``number``, ``state``,
  ``value``, ``params_<name>``); states are Optuna's: ``COMPLETE`` (ran every iteration),
  ``PRUNED`` (ASHA stopped it, or it never reported), ``FAIL`` (crashed, or its driver was
  interrupted: Optuna itself may still list such a trial as RUNNING), ``RUNNING``.
  :func:`search_summary`: per search, its best COMPLETE trial (ties: the lowest
  trial number) with params and score, as ``optuna.load_study(...).best_trial`` reports.
* The search run that counts for a task is its FINISHED run (the latest-finished rule),
  else its latest attempt; ``all_attempts`` lists the trials of every attempt.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from .mlflow_layout import (
    BEST_PREFIX,
    ITERATION_METRIC,
    ROLE_TASK,
    ROLE_TRIAL,
    TAG_EARLY_STOPPED,
    TAG_OPTUNA_STUDY,
    TAG_OPTUNA_TRIAL,
    TAG_SEARCH_METRIC,
    TAG_TRIAL_PARAMS,
    RunRecord,
    int_or_none,
    metric_column,
    metric_key,
    task_tag,
)

__all__ = ["search_summary", "search_trials"]


def _search_runs(records: Sequence[RunRecord], all_attempts: bool) -> list[RunRecord]:
    runs = [r for r in records
            if r.role == ROLE_TASK and r.tags.get(task_tag("kind")) == "search"]
    if all_attempts:
        return sorted(runs, key=lambda r: (r.task_id, r.start_time or 0))
    counted: dict[str, RunRecord] = {}
    for r in sorted(runs, key=lambda r: r.start_time or 0):
        cur = counted.get(r.task_id)
        # the FINISHED run counts (latest_finished's rule); else the latest attempt
        if cur is None or cur.status != "FINISHED" or r.status == "FINISHED":
            counted[r.task_id] = r
    return [counted[k] for k in sorted(counted)]


def _search_metric(run: RunRecord) -> str:
    name = run.tags.get(TAG_SEARCH_METRIC)
    if name:
        return name
    best = [k[len(BEST_PREFIX):] for k in run.metrics if k.startswith(BEST_PREFIX)]
    return metric_column(best[0]) if best else "frame_acc"


def search_trials(records: Sequence[RunRecord], task_id: str | None = None, *,
                  all_attempts: bool = False) -> pd.DataFrame:
    """One row per trial of each search (``task_id``: one search), like Optuna's
    ``Study.trials_dataframe()``, read from MLflow alone. Columns: search_task_id,
    number (Optuna's trial number), state (COMPLETE, PRUNED, FAIL, RUNNING), value (as
    Optuna records it: the objective of a COMPLETE trial, the last intermediate value of
    a PRUNED one, else NaN), last_value (the objective at the trial's last evaluation),
    iterations (reached),
    ``params_<name>`` (Optuna's parameter names), run_id (the trial's MLflow run),
    search_run_id, optuna_study, metric, duration_s. Trials of the search run that
    counts (its FINISHED run, else its latest); ``all_attempts``: of every run."""
    rows = []
    for srun in _search_runs(records, all_attempts):
        if task_id is not None and srun.task_id != task_id:
            continue
        metric = _search_metric(srun)
        key = metric_key(metric)
        for r in records:
            if r.role != ROLE_TRIAL or r.parent_run_id != srun.run_id:
                continue
            it = int_or_none(r.metrics.get(ITERATION_METRIC))
            goal = int_or_none(r.params.get("iterations"))
            last = r.metrics.get(key, math.nan)
            if r.status in ("FAILED", "KILLED"):
                state = "FAIL"
            elif r.status != "FINISHED":
                state = "RUNNING"
            elif (TAG_EARLY_STOPPED not in r.tags and it is not None and goal is not None
                  and it >= goal and not math.isnan(last)):
                state = "COMPLETE"
            else:  # stopped by ASHA, or ended without reaching its last evaluation
                state = "PRUNED"
            row: dict[str, Any] = {
                "search_task_id": srun.task_id,
                "number": int_or_none(r.tags.get(TAG_OPTUNA_TRIAL)),
                "state": state,
                # Optuna's value: a PRUNED trial keeps its last intermediate value
                "value": last if state in ("COMPLETE", "PRUNED") else math.nan,
                "last_value": last,
                "iterations": it,
            }
            params = json.loads(r.tags.get(TAG_TRIAL_PARAMS) or "{}")
            row.update({f"params_{k}": v for k, v in sorted(params.items())})
            row.update({
                "run_id": r.run_id, "search_run_id": srun.run_id,
                "optuna_study": srun.tags.get(TAG_OPTUNA_STUDY, ""), "metric": metric,
                "duration_s": ((r.end_time - r.start_time)
                               if r.end_time is not None and r.start_time is not None
                               else math.nan),
                "_start": r.start_time or 0,
            })
            rows.append(row)
    head = ["search_task_id", "number", "state", "value", "last_value", "iterations"]
    tail = ["run_id", "search_run_id", "optuna_study", "metric", "duration_s"]
    if not rows:
        return pd.DataFrame(columns=[*head, *tail])
    df = pd.DataFrame(rows)
    df = df.sort_values(["search_task_id", "number", "_start"], na_position="last",
                        ignore_index=True).drop(columns="_start")
    params = sorted(c for c in df.columns if c.startswith("params_"))
    df = df[[*head, *params, *tail]]
    df["number"] = df["number"].astype("Int64")
    df["iterations"] = df["iterations"].astype("Int64")
    return df


def search_summary(records: Sequence[RunRecord]) -> pd.DataFrame:
    """One row per search: task_id, optuna_study, metric, best_value, best_number,
    best_params (dict of Optuna's names; what ``optuna.load_study(...).best_params``
    says), best_run_id, trials, complete, pruned, failed, search_run_id, status (of the
    search run). The best is the COMPLETE trial with the highest value (ties: the lowest
    number); none: NaN / None."""
    trials = search_trials(records)
    rows = []
    for srun in _search_runs(records, all_attempts=False):
        t = trials[trials["search_task_id"] == srun.task_id]
        done = t[t["state"] == "COMPLETE"]
        best = (done.sort_values(["value", "number"], ascending=[False, True]).iloc[0]
                if len(done) else None)
        params = ({c[len("params_"):]: _plain(best[c]) for c in t.columns
                   if c.startswith("params_") and not _missing(best[c])}
                  if best is not None else None)
        rows.append({
            "task_id": srun.task_id,
            "optuna_study": srun.tags.get(TAG_OPTUNA_STUDY, ""),
            "metric": _search_metric(srun),
            "best_value": math.nan if best is None else float(best["value"]),
            "best_number": None if best is None or _missing(best["number"])
            else int(best["number"]),
            "best_params": params,
            "best_run_id": None if best is None else best["run_id"],
            "trials": len(t),
            "complete": int((t["state"] == "COMPLETE").sum()),
            "pruned": int((t["state"] == "PRUNED").sum()),
            "failed": int((t["state"] == "FAIL").sum()),
            "search_run_id": srun.run_id,
            "status": srun.status,
        })
    cols = ["task_id", "optuna_study", "metric", "best_value", "best_number", "best_params",
            "best_run_id", "trials", "complete", "pruned", "failed", "search_run_id",
            "status"]
    return pd.DataFrame(rows, columns=cols)


def _missing(v: Any) -> bool:
    return v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v))


def _plain(v: Any) -> Any:
    """numpy scalars -> Python numbers (JSON, equality with Optuna's params)."""
    return v.item() if isinstance(v, np.generic) else v
