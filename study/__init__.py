"""Studies: spec, planner, runner, MLflow tracking and the query API.

>>> from study import open_study, make_plan, run_study, load_study
>>> s = open_study("studies/demo.yaml")     # validated spec + dataset cards + content hash
>>> make_plan(s.spec).counts()              # tasks per kind (pure, no Ray)
>>> run_study(s)                            # on Ray; finished tasks are skipped
>>> load_study("studies/demo.yaml").best_transfer_pairs()

Names are loaded on first use, so ``import study`` (and the CLI's ``--help``) stays fast:
the query API needs pandas and MLflow, the runner Ray and torch (status and queries need
neither Ray nor torch).
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "LoadedStudy",
    "Plan",
    "SpecError",
    "StudyOutcome",
    "StudyResults",
    "StudySpec",
    "Task",
    "load_spec",
    "load_study",
    "make_plan",
    "open_study",
    "run_study",
    "study_status",
]

_WHERE = {
    "LoadedStudy": "spec_data",
    "SpecError": "spec",
    "StudySpec": "spec",
    "load_spec": "spec",
    "open_study": "spec_data",
    "Plan": "plan",
    "Task": "plan",
    "make_plan": "plan",
    "StudyOutcome": "runner",
    "run_study": "runner",
    "study_status": "status",
    "StudyResults": "query",
    "load_study": "query",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module 'study' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
