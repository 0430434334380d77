"""The import graph's rules, checked on the source and on a fresh interpreter.

- The read side (queries, status, report, search tables, plots) loads neither torch, Ray nor
  Optuna: a laptop with only the MLflow store must be able to read a study, and ``kitchen-study
  status`` must stay fast. Each import runs in a fresh subprocess, since this test process may
  already hold torch from other tests.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

READ_SIDE = ["study.query", "study.status", "study.report", "study.search_results", "study.plots"]
HEAVY = ("torch", "ray", "optuna")


def _loaded_after_import(module: str) -> list[str]:
    """The heavy top-level packages present in ``sys.modules`` after importing ``module``
    in a fresh interpreter."""
    code = (
        "import importlib, json, sys\n"
        f"importlib.import_module({module!r})\n"
        f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("module", READ_SIDE)
def test_read_side_loads_no_torch_ray_or_optuna(module: str) -> None:
    assert _loaded_after_import(module) == []


def test_the_check_sees_a_heavy_import() -> None:
    # The probe itself must be able to fail: a module that does load torch is reported.
    pytest.importorskip("torch")
    assert "torch" in _loaded_after_import("trainables.train_job")
