"""Studies: spec, planner, runner, MLflow tracking and the query API.

``from study import load_study`` works without importing pandas/MLflow at package import
time (the CLI's ``--help`` stays instant): the query API is loaded on first use.
"""

from __future__ import annotations

from typing import Any

__all__ = ["StudyResults", "load_study"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import query

        return getattr(query, name)
    raise AttributeError(f"module 'study' has no attribute {name!r}")
