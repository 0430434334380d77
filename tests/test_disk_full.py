"""A full disk in the middle of a real study (issue 19): ``kitchen-study run`` ends with one
``error:`` line, exit 2, and leaves no run RUNNING (``resume`` finishes the study once
there is space again).

Fault injection, as in ``test_bad_input.py`` (there is no tiny filesystem to fill without
root): in the driver's process, (a) the write of a checkpoint into the MLflow artifact
store puts half a file on disk and raises ``OSError(ENOSPC)``, every time (the disk stays
full for files that size); (b) the SQLite tracking database refuses to grow: after the first
result's metrics, every ``INSERT`` (metrics, tags, params, runs) fails with SQLite's own
"database or disk is full" (raised at the DB-API cursor, below SQLAlchemy and MLflow),
while updates in place (a run's status) still succeed, as on a real full disk. The study
runs on a real local Ray with a real MLflow store.
"""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from study.cli import app
from study.spec_data import open_study
from study.tracking import MlflowRunLogger
from tests.study_data import A, B, link_data, small_spec, write_spec

pytest.importorskip("ray")


def _spec(root: Path, kitchens_root: Path) -> Path:
    link_data(kitchens_root, root)
    return write_spec(root, small_spec("full", store=root, experiments={
        "baselines": [B], "edges": [{"source": A, "target": B}]}))


def _checkpoint_writes_fail(monkeypatch) -> None:
    real = shutil.copyfileobj

    def copy(src, dst, *args, **kw):
        # MLflow's local artifact store copies a logged file into a staged temporary file
        if str(getattr(src, "name", "")).endswith(".pt"):
            dst.write(src.read(100))
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(src, dst, *args, **kw)

    monkeypatch.setattr(shutil, "copyfileobj", copy)


def _metric_inserts_fail() -> Callable[[], None]:
    """Arm (b) of the module docstring; returns the undo."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    seen = {"metrics": 0}

    def refuse(conn, cursor, statement, parameters, context, executemany):
        sql = statement.lstrip().upper()
        if sql.startswith("INSERT INTO METRICS"):
            seen["metrics"] += 1
        # the first result's metrics are stored; from then on no new row fits (metrics,
        # tags, params, runs), while an UPDATE in place (a run's status) still does
        if seen["metrics"] > 1 and sql.startswith("INSERT"):
            raise sqlite3.OperationalError("database or disk is full")

    def undo() -> None:
        if event.contains(Engine, "before_cursor_execute", refuse):
            event.remove(Engine, "before_cursor_execute", refuse)

    event.listen(Engine, "before_cursor_execute", refuse)
    return undo


@pytest.mark.slow
@pytest.mark.parametrize("where", ["checkpoint artifact", "metric insert"])
def test_a_full_disk_mid_study_is_one_line_and_leaves_nothing_running(
        tmp_path, kitchens_root, monkeypatch, request, where):
    # each command starts (and shuts down) its own local Ray, as on the command line: a Tune
    # run stopped mid-way leaves its trial actors to the Ray it ran on
    spec = _spec(tmp_path, kitchens_root)
    loaded = open_study(spec)
    # the store exists (with its experiment) before the disk fills up
    assert CliRunner().invoke(app, ["status", str(spec)]).exit_code == 0
    undo = monkeypatch.undo
    if where == "checkpoint artifact":
        _checkpoint_writes_fail(monkeypatch)
    else:
        undo = _metric_inserts_fail()
        request.addfinalizer(undo)  # also when an assert below fails first
    res = CliRunner().invoke(app, ["run", str(spec), "--num-cpus", "2"])
    undo()  # space again (for resume below)
    out = res.output
    assert res.exit_code == 2, out
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, res.stderr[-3000:]
    assert "No space left on device" in errors[0] or "disk is full" in errors[0], errors
    assert "Traceback" not in out
    runs = MlflowRunLogger(loaded.spec.tracking_uri).study_runs("full")
    assert runs and not [r for r in runs if r.status == "RUNNING"], [
        (r.tags.get("ks.task_id"), r.status) for r in runs]
    # space again: resume finishes the study
    again = CliRunner().invoke(app, ["resume", str(spec), "--num-cpus", "2"])
    assert again.exit_code == 0, again.output
    runs = MlflowRunLogger(loaded.spec.tracking_uri).study_runs("full")
    finished = {r.tags["ks.task_id"] for r in runs if r.role == "task" and r.status == "FINISHED"}
    assert len(finished) == 3
    killed = [r for r in runs if r.status == "KILLED" and r.role == "task"]
    assert killed and all("disk is full" in r.tags.get("ks.error", "disk is full")
                          for r in killed)
