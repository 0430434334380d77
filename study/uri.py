"""Where a study's tracking store and data are: one rule for every command and the query API.

Rules (stated once, used by ``kitchen-study run|resume|status|best|report|register|demo``,
:func:`study.query.load_study` and :func:`study.runner.run_study`):

* **Tracking URI** (:func:`resolve_tracking_uri`): ``--tracking-uri`` (or the
  ``tracking_uri=`` argument) > ``$MLFLOW_TRACKING_URI`` > the spec's ``tracking_uri`` >
  ``sqlite:///mlflow.db``. A relative SQLite path is relative to the working directory.
* **Data root** (:func:`open_study_at`, :func:`data_base_dir`): ``--data-root`` (or
  ``$KITCHEN_DATA_ROOT``) is the *project folder* where the data is (on a cluster: on every
  node), standing for the folder the command runs in. Relative dataset paths resolve as if
  the spec sat at the same place under it: ``kitchen-study run studies/paper.yaml
  --data-root /srv/ks`` reads ``../data/breakfast_sim.parquet`` as
  ``/srv/ks/studies/../data/breakfast_sim.parquet`` = ``/srv/ks/data/...``, exactly as in
  the project folder itself. (The spec's place is its path as given when relative; for an
  absolute path, its place under a Ray job's working directory or the working directory;
  a spec elsewhere has the data root as its folder.) Without a data root they resolve
  against the spec file's folder. The study hash does not depend on it (it hashes the
  datasets' cards, not their paths).
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
from .spec import SpecError, read_spec
from .spec_data import LoadedStudy, check_spec, content_hash

__all__ = [
    "DATA_ROOT_ENV",
    "DEFAULT_TRACKING_URI",
    "check_store_outlives_job",
    "data_base_dir",
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


def _spec_place(path: Path, cwd: Path | None = None) -> Path:
    """Where the spec's folder is relative to the project folder (see the module
    docstring): its folder as given when relative, else relative to the Ray job's working
    directory or the working directory it lies under, else ``.``."""
    if not path.is_absolute():
        return Path(os.path.normpath(path.parent))
    here = cwd
    if here is None:
        try:
            here = Path.cwd()
        except FileNotFoundError:
            here = None
    folder = Path(os.path.normpath(path.parent))
    for top in (ray_job_dir(folder), here):
        if top is not None and folder.is_relative_to(top):
            return folder.relative_to(top)
    return Path(".")


def data_base_dir(spec_path: str | Path, data_root: str | Path, *,
                  cwd: str | Path | None = None) -> Path:
    """The folder relative dataset paths resolve against under ``data_root``: the data root
    is the project folder, and the spec's folder is at the same place under it."""
    root = Path(data_root).expanduser().resolve()
    place = _spec_place(Path(spec_path), None if cwd is None else Path(cwd))
    return Path(os.path.normpath(root / place))


def open_study_at(path: str | Path, data_root: str | Path | None = None, *,
                  environ: Mapping[str, str] | None = None) -> LoadedStudy:
    """:func:`study.spec_data.open_study` with relative dataset paths resolved under
    ``data_root`` > ``$KITCHEN_DATA_ROOT`` (:func:`data_base_dir`) > the spec's folder.
    A missing dataset says how its path was formed, and inside a Ray job without a data
    root, what to pass. Every stage's problems are reported together."""
    env = os.environ if environ is None else environ
    root = data_root or env.get(DATA_ROOT_ENV) or None
    spec, problems = read_spec(path)
    if spec is None:
        raise SpecError(problems, path)
    if root is not None:
        # the spec keeps its dataset paths as written; only what they are relative to moves
        spec._base_dir = data_base_dir(path, root)
    try:
        cards = check_spec(spec, problems)
    except SpecError as e:
        missing = any(m.startswith("no such file") for _, m in e.problems)
        if not missing:
            raise
        job_dir = ray_job_dir()
        if root is not None:
            place = _spec_place(Path(path))
            how = (f"relative dataset paths resolve against {spec.base_dir}: the data root "
                   f"{Path(root).expanduser()} stands for the project folder and the spec's "
                   f"folder is {place.as_posix()!r} under it")
            where = ("; the data must be there on every node that runs trials"
                     if job_dir is not None or _in_ray_job(env) else "")
            raise SpecError([*e.problems, ("datasets", how + where)], e.path) from None
        if job_dir is not None or _in_ray_job(env):
            raise SpecError([*e.problems, (
                "datasets", "this runs in a Ray job's working directory"
                + (f" ({job_dir})" if job_dir else "")
                + ", which holds only the uploaded files (git-ignored files such as "
                "prepared tables are not uploaded): pass --data-root DIR (or set "
                f"{DATA_ROOT_ENV}) to the project folder as it is on every node, or use "
                "absolute dataset paths in the spec")], e.path) from None
        raise
    return LoadedStudy(spec, cards, content_hash(spec, cards))
