"""One tracking-URI rule (``--tracking-uri`` > ``$MLFLOW_TRACKING_URI`` > spec > default) for
every command and ``load_study``; data roots and the Ray-job checks of :mod:`study.uri`."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from data_prep.errors import DataError
from study.cli import app
from study.mlflow_layout import StudyNotFound, TaskMeta
from study.query import load_study
from study.spec import SpecError
from study.tracking import MlflowRunLogger
from study.uri import (
    check_store_outlives_job,
    open_study_at,
    ray_job_dir,
    resolve_tracking_uri,
)
from tests.study_data import write_kitchens

A, B = "synth_breakfast", "synth_salads"


@pytest.mark.parametrize("explicit, env, spec, expected", [
    ("sqlite:///flag.db", "http://env:5000", "sqlite:///spec.db", "sqlite:///flag.db"),
    (None, "http://env:5000", "sqlite:///spec.db", "http://env:5000"),
    (None, None, "sqlite:///spec.db", "sqlite:///spec.db"),
    (None, None, None, "sqlite:///mlflow.db"),
    ("", "", "", "sqlite:///mlflow.db"),
])
def test_precedence(explicit, env, spec, expected):
    environ = {} if env is None else {"MLFLOW_TRACKING_URI": env}
    assert resolve_tracking_uri(explicit, spec, environ) == expected


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    """Two stores: the spec's (empty) and another holding a finished task of the study."""
    root = tmp_path_factory.mktemp("uri")
    write_kitchens(root / "data", kitchens=2)
    spec = {"name": "u", "datasets": {A: {"path": f"data/{A}.parquet", "splits": [1]},
                                      B: {"path": f"data/{B}.parquet", "splits": [1]}},
            "model": {"history": 16, "hidden": 8, "batch_size": 4},
            "experiments": {"seeds": [0], "iterations": 10, "baselines": [B]},
            "tracking_uri": f"sqlite:///{root / 'spec.db'}"}
    path = root / "u.yaml"
    path.write_text(yaml.safe_dump(spec))
    loaded = open_study_at(path)
    other = f"sqlite:///{root / 'other.db'}"
    log = MlflowRunLogger(other)
    sid = log.start_study("u", loaded.hash)
    meta = TaskMeta("baseline:synth_salads.split1:s0", "baseline", "none", B, "split1")
    rid = log.start_task(sid, meta)
    log.log_metrics(rid, {"frame_acc": 42.0, "iteration": 10}, step=10)
    log.end_task(rid)
    log.end_study(sid)
    MlflowRunLogger(spec["tracking_uri"]).start_study("u", "0" * 64)  # another version only
    return path, other, root


def test_status_follows_the_environment_over_the_spec(tracked, monkeypatch):
    path, other, _ = tracked
    runner = CliRunner()
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    res = runner.invoke(app, ["status", str(path)])
    assert res.exit_code == 0, res.output
    assert "1 pending" in res.output  # the spec's store has no run of this version
    monkeypatch.setenv("MLFLOW_TRACKING_URI", other)
    res = runner.invoke(app, ["status", str(path)])
    assert res.exit_code == 0, res.output
    assert "1 finished" in res.output and "42.00" in res.output
    # the flag beats the environment
    res = runner.invoke(app, ["status", str(path), "--tracking-uri",
                              f"sqlite:///{tracked[2] / 'spec.db'}"])
    assert "1 pending" in res.output


def test_load_study_follows_the_same_rule(tracked, monkeypatch):
    path, other, root = tracked
    monkeypatch.setenv("MLFLOW_TRACKING_URI", other)
    assert load_study(path).results()["frame_acc"].tolist() == [42.0]
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert load_study(path, other).results()["frame_acc"].tolist() == [42.0]
    with pytest.raises(StudyNotFound):  # the spec's store holds another version only
        load_study(path)


def test_data_root_moves_relative_dataset_paths(tracked, tmp_path, monkeypatch):
    path, _, root = tracked
    spec = yaml.safe_load(path.read_text())
    moved = tmp_path / "elsewhere.yaml"
    moved.write_text(yaml.safe_dump(spec))
    with pytest.raises(SpecError, match="no such file"):
        open_study_at(moved)
    same = open_study_at(moved, data_root=root)
    assert same.hash == open_study_at(path).hash  # paths are not part of the identity
    monkeypatch.setenv("KITCHEN_DATA_ROOT", str(root))
    assert open_study_at(moved).hash == same.hash
    res = CliRunner().invoke(app, ["run", str(moved), "--dry-run"])
    assert res.exit_code == 0, res.output


def _fake_job_dir(tmp_path: Path) -> Path:
    d = tmp_path / "session_x" / "runtime_resources" / "working_dir_files" / "_ray_pkg_ab12"
    (d / "sub").mkdir(parents=True)
    return d


def test_a_ray_job_without_its_data_says_what_to_pass(tracked, tmp_path, monkeypatch):
    path, _, _ = tracked
    job = _fake_job_dir(tmp_path)
    (job / "u.yaml").write_text(path.read_text())  # the spec uploaded, the data not
    monkeypatch.chdir(job / "sub")
    assert ray_job_dir() == job
    with pytest.raises(SpecError) as e:
        open_study_at(job / "u.yaml")
    assert "no such file" in str(e.value) and "--data-root" in str(e.value)
    res = CliRunner().invoke(app, ["run", str(job / "u.yaml")])
    assert res.exit_code == 2 and "--data-root" in res.output
    assert "Traceback" not in res.output


def test_a_store_that_would_vanish_with_the_job_is_refused(tmp_path, monkeypatch):
    job = _fake_job_dir(tmp_path)
    with pytest.raises(DataError, match="--tracking-uri"):
        check_store_outlives_job("sqlite:///mlflow.db", cwd=job, environ={})
    with pytest.raises(DataError, match="MLFLOW_TRACKING_URI"):
        check_store_outlives_job(f"sqlite:///{job}/sub/m.db", cwd=job / "sub", environ={})
    # a relative path in any Ray job (no working dir upload) is refused too
    with pytest.raises(DataError):
        check_store_outlives_job("sqlite:///m.db", cwd=tmp_path,
                                 environ={"RAY_JOB_CONFIG_JSON_ENV_VAR": "{}"})
    # what is fine: absolute paths outside the job dir, servers, anything outside a job
    check_store_outlives_job(f"sqlite:///{tmp_path}/m.db", cwd=job, environ={"RAY_JOB_ID": "1"})
    check_store_outlives_job("http://head:5000", cwd=job, environ={"RAY_JOB_ID": "1"})
    check_store_outlives_job("sqlite:///mlflow.db", cwd=tmp_path, environ={})


def test_run_refuses_a_relative_store_in_a_job_before_anything(tracked, monkeypatch):
    path, _, root = tracked
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(root)
    res = CliRunner().invoke(app, ["run", str(path), "--tracking-uri", "sqlite:///rel.db"])
    assert res.exit_code == 2 and "--tracking-uri" in res.output, res.output
    assert not (root / "rel.db").exists()
