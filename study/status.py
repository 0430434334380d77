"""Where a study stands, task by task, read from MLflow: ``kitchen-study status``.

Read-only and light: it plans the spec (pure) and reads the store in bulk
(:meth:`~study.tracking.MlflowRunLogger.study_runs`); it imports neither Ray nor torch.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

from .budget import NOT_TRAINED, budget_decisions
from .mlflow_layout import (
    BEST_PREFIX,
    ROLE_TASK,
    TAG_ERROR,
    RunRecord,
    StudyNotFound,
    latest_finished,
)
from .plan import make_plan
from .spec_data import LoadedStudy
from .tracking import MlflowRunLogger, sqlite_path
from .uri import resolve_tracking_uri

__all__ = ["status_rows", "study_status", "summary_text"]


def study_status(loaded: LoadedStudy, tracking_uri: str | None = None) -> list[dict[str, Any]]:
    """One row per planned task: ``id, kind, deps, trials, status`` (``FINISHED``,
    ``RUNNING``, ``FAILED``, ``KILLED`` of its latest run, or ``PENDING`` when it has none),
    ``run_id``, ``frame_acc``, ``attempts``, ``error`` and ``budget`` (a budgeted study's
    conditional fine-tunes: ``conditional`` until their group is decided, then ``chosen``
    or ``skipped``; None for every other task). A skipped fine-tune without a run has the
    status ``estimated, not trained`` (:data:`study.budget.NOT_TRAINED`).

    The run shown is the task's latest-started FINISHED run (the one that counts, see
    :func:`~study.mlflow_layout.latest_finished`), else its latest-started run. A missing
    SQLite store or study means every task is PENDING (a query never creates a store).
    """
    spec = loaded.spec
    plan = make_plan(spec)
    uri = resolve_tracking_uri(tracking_uri, spec.tracking_uri)
    runs: list[RunRecord] = []
    db = sqlite_path(uri)
    if db is None or db.is_file():
        with contextlib.suppress(StudyNotFound):
            runs = MlflowRunLogger(uri).study_runs(spec.name, loaded.hash)
    return status_rows(plan, runs)


def status_rows(plan: Any, runs: list[RunRecord]) -> list[dict[str, Any]]:
    """:func:`study_status`'s rows for a plan and the study's run records (pure): the one
    rule both ``kitchen-study status`` and the driver's closing line count with."""
    by_task: dict[str, list[RunRecord]] = {}
    for r in runs:
        if r.role == ROLE_TASK:
            by_task.setdefault(r.task_id, []).append(r)
    finished = latest_finished(runs)
    decided = budget_decisions(plan, finished)
    rows = []
    for t in plan:
        rs = sorted(by_task.get(t.id, []), key=lambda r: r.start_time or 0)
        r = finished.get(t.id) or (rs[-1] if rs else None)
        if t.id in decided and r is None and decided[t.id] == "skipped":
            rows.append({"id": t.id, "kind": t.kind, "deps": list(t.deps), "trials": t.trials,
                         "status": NOT_TRAINED, "run_id": None, "frame_acc": None,
                         "attempts": 0, "error": None, "budget": "skipped"})
            continue
        acc = None if r is None else r.metrics.get("frame_acc")
        if acc is None and r is not None:
            acc = r.metrics.get(f"{BEST_PREFIX}frame_acc")
        rows.append({
            "id": t.id, "kind": t.kind, "deps": list(t.deps), "trials": t.trials,
            "status": "PENDING" if r is None else r.status,
            "run_id": None if r is None else r.run_id,
            "frame_acc": None if acc is None or (isinstance(acc, float) and math.isnan(acc))
            else float(acc),
            "attempts": len(rs),
            "error": None if r is None else r.tags.get(TAG_ERROR),
            "budget": decided.get(t.id),
        })
    return rows


def status_counts(rows: list[dict[str, Any]]) -> dict[str, int]:
    """``{status: tasks}`` of :func:`study_status` rows, by status name."""
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    return dict(sorted(counts.items()))


def summary_text(rows: list[dict[str, Any]]) -> str:
    """``1 failed, 6 finished, 1 killed, 25 pending``: the tasks by the status of the run
    that counts for each (``kitchen-study status``'s header and the driver's last line)."""
    return ", ".join(f"{n} {s.lower()}" for s, n in status_counts(rows).items())
