"""Where a study's tracking store and data are: one rule for every command and the query API.

Rules (stated once, used by ``kitchen-study run|resume|status|best|report|register|demo``,
:func:`study.query.load_study` and :func:`study.runner.run_study`):

* **Tracking URI** (:func:`resolve_tracking_uri`): ``--tracking-uri`` (or the
  ``tracking_uri=`` argument) > ``$MLFLOW_TRACKING_URI`` > the spec's ``tracking_uri`` >
  ``sqlite:///mlflow.db``. A relative SQLite path is relative to the working directory.
* **Data root** (:func:`open_study_at`): relative dataset paths in a spec resolve against
  ``--data-root`` > ``$KITCHEN_DATA_ROOT`` > the spec file's folder. The study hash does not
  depend on it (it hashes the datasets' cards, not their paths).
* **Inside a Ray job** (``ray job submit --working-dir .``): the driver runs in a temporary
  copy of the working directory (``.../runtime_resources/working_dir_files/_ray_pkg_<hash>``)
  that holds only the uploaded files (git-ignored ones, e.g. prepared tables, are not
  uploaded) and vanishes with the Ray session. So a missing dataset there is an error that
  says to pass ``--data-root`` (:func:`open_study_at`), and a SQLite store inside that folder,
  or a relative SQLite path in any Ray job, is refused before anything runs
  (:func:`check_store_outlives_job`): the runs would vanish with the session.

Pure: no MLflow, Ray or torch import.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from data_prep.errors import DataError

from .mlflow_layout import DEFAULT_TRACKING_URI
from .spec import SpecError, load_spec
from .spec_data import LoadedStudy, check_spec, content_hash

__all__ = [
    "DATA_ROOT_ENV",
    "DEFAULT_TRACKING_URI",
    "TRACKING_URI_ENV",
    "check_store_outlives_job",
    "leave_job_dir",
    "open_study_at",
    "ray_job_dir",
    "resolve_tracking_uri",
]

TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
DATA_ROOT_ENV = "KITCHEN_DATA_ROOT"
#: set by Ray for a job's driver process (``ray job submit``): the job's runtime env as JSON
_RAY_JOB_ENV = ("RAY_JOB_CONFIG_JSON_ENV_VAR", "RAY_JOB_ID")
_RAY_PKG_PREFIX = "_ray_pkg_"


def resolve_tracking_uri(explicit: str | None = None, spec_uri: str | None = None,
                         environ: Mapping[str, str] | None = None) -> str:
    """``explicit`` > ``$MLFLOW_TRACKING_URI`` > ``spec_uri`` > ``sqlite:///mlflow.db``.
    Empty strings count as not given."""
    env = os.environ if environ is None else environ
    return explicit or env.get(TRACKING_URI_ENV) or spec_uri or DEFAULT_TRACKING_URI


def ray_job_dir(cwd: str | Path | None = None) -> Path | None:
    """The Ray job's temporary working directory that ``cwd`` lies in (a ``_ray_pkg_*``
    folder, as made by ``--working-dir``), else None."""
    try:
        p = Path.cwd() if cwd is None else Path(cwd)
    except FileNotFoundError:  # the folder we were in is gone: not one we can stay in
        return None
    parts = p.parts
    for i, part in enumerate(parts):
        if part.startswith(_RAY_PKG_PREFIX):
            return Path(*parts[: i + 1])
    return None


def _in_ray_job(environ: Mapping[str, str]) -> bool:
    return any(environ.get(k) for k in _RAY_JOB_ENV)


def check_store_outlives_job(uri: str, *, cwd: str | Path | None = None,
                             environ: Mapping[str, str] | None = None) -> None:
    """:class:`DataError` when ``uri`` is a SQLite file that would vanish with a Ray job:
    inside the job's temporary working directory, or a relative path in a Ray job."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix):
        return
    env = os.environ if environ is None else environ
    path = uri[len(prefix):]
    job_dir = ray_job_dir(cwd)
    here = Path.cwd() if cwd is None else Path(cwd)
    absolute = (here / path) if not Path(path).is_absolute() else Path(path)
    inside = job_dir is not None and Path(os.path.normpath(absolute)).is_relative_to(job_dir)
    if inside or (not Path(path).is_absolute() and _in_ray_job(env)):
        where = f" ({job_dir})" if job_dir is not None else ""
        raise DataError(
            f"tracking URI {uri} is a SQLite file in this Ray job's temporary working "
            f"directory{where}: every run would vanish with the Ray session. Pass "
            f"--tracking-uri (or set {TRACKING_URI_ENV} in the job's runtime_env) to a "
            f"tracking server (http://HEAD:5000) or an absolute sqlite:////PATH on the head")


def leave_job_dir(environ: Mapping[str, str] | None = None) -> None:
    """In a Ray job, move the driver out of its working directory (to the temp folder).

    That folder is Ray's package cache: Ray may replace it while the job runs (seen with
    two nodes on one host), leaving the process in a deleted folder where Tune's
    ``os.getcwd()`` fails. Call it once every relative path has been made absolute."""
    env = os.environ if environ is None else environ
    if _in_ray_job(env) or ray_job_dir() is not None:
        import tempfile

        os.chdir(tempfile.gettempdir())


def open_study_at(path: str | Path, data_root: str | Path | None = None, *,
                  environ: Mapping[str, str] | None = None) -> LoadedStudy:
    """:func:`study.spec_data.open_study` with relative dataset paths resolved against
    ``data_root`` > ``$KITCHEN_DATA_ROOT`` > the spec's folder. Inside a Ray job, a missing
    dataset error says what to pass."""
    env = os.environ if environ is None else environ
    root = data_root or env.get(DATA_ROOT_ENV) or None
    spec = load_spec(path)
    if root is not None:
        # the spec keeps its dataset paths as written; only what they are relative to moves
        spec._base_dir = Path(root).expanduser().resolve()
    try:
        cards = check_spec(spec)
    except SpecError as e:
        job_dir = ray_job_dir()
        missing = any(m.startswith("no such file") for _, m in e.problems)
        if missing and (job_dir is not None or _in_ray_job(env)):
            raise SpecError([*e.problems, (
                "datasets", "this runs in a Ray job's working directory"
                + (f" ({job_dir})" if job_dir else "")
                + ", which holds only the uploaded files (git-ignored files such as "
                "prepared tables are not uploaded): pass --data-root DIR (or set "
                f"{DATA_ROOT_ENV}) to the folder that holds the data on every node, or use "
                "absolute dataset paths in the spec")], e.path) from None
        raise
    return LoadedStudy(spec, cards, content_hash(spec, cards))
