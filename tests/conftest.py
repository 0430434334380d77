from __future__ import annotations

import os
from pathlib import Path

import pytest

from data_prep import real_data_dir


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The real annotations (../shared/data or $KITCHEN_DATA); skip when absent."""
    d = real_data_dir()
    if d is None:
        pytest.skip("real annotations not found (set KITCHEN_DATA or place ../shared/data)")
    return d


@pytest.fixture(scope="module")
def kitchens_root(tmp_path_factory) -> Path:
    """A folder whose ``data/`` holds the three small synthetic kitchens of
    ``tests.study_data`` (A, B, C), written once per test module; a spec written into the
    folder finds them at ``data/<name>.parquet``."""
    from tests.study_data import write_kitchens

    root = tmp_path_factory.mktemp("kitchens")
    write_kitchens(root / "data", kitchens=3)
    return root


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray (2 CPUs) for a test module: a study reuses an initialised Ray."""
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             logging_level="WARNING")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def store(request, tmp_path_factory) -> tuple[str, str]:
    """(tracking URI, study name): an MLflow SQLite store holding the fake study of known
    numbers ``tests.study_data.RUNS`` (one store per test module)."""
    import uuid

    from study.tracking import MlflowRunLogger
    from tests.helpers import empty_mlflow_db
    from tests.study_data import populate

    db = empty_mlflow_db(request.config, tmp_path_factory.mktemp("q") / "mlflow.db")
    uri = f"sqlite:///{db}"
    name = f"q{uuid.uuid4().hex[:8]}"
    populate(MlflowRunLogger(uri), name)
    return uri, name


@pytest.fixture(scope="module")
def study(store):
    """``load_study`` of :func:`store`'s fake study (a ``StudyResults``)."""
    from study.query import load_study

    uri, name = store
    return load_study(name, uri)


#: Process environment the commands under test set for the rest of their process (as a
#: real command-line process would: `--data-root` exports KITCHEN_DATA_ROOT, and
#: mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI). In-process tests (CliRunner) would
#: carry them into every later test, so each test gets them back as they were.
_PROCESS_ENV = ("KITCHEN_DATA_ROOT", "MLFLOW_TRACKING_URI")


@pytest.fixture(autouse=True)
def _restore_process_env():
    before = {k: os.environ.get(k) for k in _PROCESS_ENV}
    yield
    for k, v in before.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
