from __future__ import annotations

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
