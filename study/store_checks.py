"""A study's stores, checked before a command touches them: the MLflow tracking URI and a
search's Optuna storage. A bad one is one line (``error: URI: reason``, exit 2) instead of an
MLflow or SQLAlchemy traceback, and nothing is written: MLflow creates its tables in any
SQLite file it is pointed at, so a typo in ``--tracking-uri`` could otherwise add them to
someone else's database.

Rules (:func:`check_tracking_uri`, :func:`check_search_storage`):

* **Schemes**: a tracking URI's scheme is one MLflow's tracking store accepts
  (:data:`TRACKING_SCHEMES`, a ``+driver`` suffix allowed for the databases); an Optuna
  storage is an SQLAlchemy database URL (:data:`STORAGE_SCHEMES`). Anything else is
  ``unknown scheme``.
* **SQLite files** (``sqlite:///PATH``, relative to the working directory): a symlink loop,
  a folder, or a folder that does not exist (a typo, even for a command that only reads:
  an absent file in an existing folder is an empty store) is refused. An
  existing SQLite tracking file that has tables but not MLflow's (``experiments``, ``runs``,
  ``alembic_version``) is refused: it is another program's database.
* **Tracking servers** (``http(s)://``): asked for one experiment, with the credentials
  MLflow itself would send (``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD`` or
  ``MLFLOW_TRACKING_TOKEN``); HTTP 401/403 is "not authorized", with what to set. A server
  that does not answer at all is :func:`study.lease.check_store`'s error.

Pure standard library (no MLflow, SQLAlchemy, Ray or torch import).
"""

from __future__ import annotations

import base64
import errno
import functools
import os
import re
import sqlite3
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from data_prep.errors import DataError

__all__ = [
    "check_search_storage",
    "check_tracking_uri",
    "full_disk",
    "stops_on_full_disk",
    "storage_problem",
]

#: What MLflow's tracking store accepts (``mlflow.tracking._tracking_service.utils``).
TRACKING_SCHEMES = frozenset(
    {"file", "databricks", "databricks-uc", "uc", "http", "https", "postgresql", "mysql",
     "sqlite", "mssql"})
#: SQLAlchemy database URLs, what ``optuna.storages.RDBStorage`` opens.
STORAGE_SCHEMES = frozenset({"sqlite", "postgresql", "mysql", "oracle", "mssql"})
#: Tables every MLflow SQL store has; a database with tables but not these is not one.
MLFLOW_TABLES = frozenset({"experiments", "runs", "alembic_version"})
#: Seconds the authorization probe waits (a silent server is the lease's check).
PROBE_TIMEOUT_S = 5.0

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9.-]*)(\+[A-Za-z0-9_]+)?://")


def _scheme(uri: str) -> str | None:
    m = _SCHEME.match(uri)
    return m.group(1).lower() if m else None


def _sqlite_file(uri: str) -> Path | None:
    """The file of a ``sqlite:///PATH`` URI, absolute but with symlinks kept (resolving a
    symlink loop raises; it is reported instead)."""
    m = re.match(r"^sqlite(\+[A-Za-z0-9_]+)?:///", uri)
    if m is None:
        return None
    rest = uri[m.end():].split("?", 1)[0]
    if rest in ("", ":memory:"):
        return None
    return Path(os.path.abspath(os.path.expanduser(rest)))


def _check_sqlite_path(db: Path, uri: str, *, what: str) -> bool:
    """Refuse a path SQLite cannot open; True when the file exists."""
    try:
        os.stat(db)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise DataError(f"{what} {uri}: the path is a symlink loop", db) from None
        if e.errno != errno.ENOENT:
            raise DataError(f"{what} {uri}: cannot open ({e.strerror})", db) from None
        if os.path.islink(db):  # dangling: SQLite would create the target, where the link says
            return False
        parent = db.parent
        if not parent.is_dir():  # a typo, not an empty store (even for a read)
            raise DataError(f"{what} {uri}: the folder {parent} does not exist (create it, or "
                            "give another URI)", db) from None
        return False
    if db.is_dir():
        raise DataError(f"{what} {uri}: is a folder, not an SQLite file", db)
    return True


def _tables(db: Path) -> set[str] | None:
    """The table names of an SQLite file (read-only, nothing created); None when it is not
    an SQLite database (the lease's check words that error)."""
    try:
        con = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, timeout=10)
    except sqlite3.Error:
        return None
    try:
        rows = con.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    except sqlite3.DatabaseError:
        return None
    finally:
        con.close()
    return {r[0] for r in rows}


def _credentials(environ: Mapping[str, str]) -> str | None:
    user, password = (environ.get("MLFLOW_TRACKING_USERNAME"),
                      environ.get("MLFLOW_TRACKING_PASSWORD"))
    if user or password:
        token = base64.b64encode(f"{user or ''}:{password or ''}".encode()).decode()
        return f"Basic {token}"
    token = environ.get("MLFLOW_TRACKING_TOKEN")
    return f"Bearer {token}" if token else None


def _check_authorized(uri: str, environ: Mapping[str, str]) -> None:
    url = f"{uri.rstrip('/')}/api/2.0/mlflow/experiments/search?max_results=1"
    request = urllib.request.Request(url)
    auth = _credentials(environ)
    if auth is not None:
        request.add_header("Authorization", auth)
    try:
        with urllib.request.urlopen(request, timeout=PROBE_TIMEOUT_S):
            return
    except urllib.error.HTTPError as e:
        if e.code in (401, 403):
            sent = ("the credentials in MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD "
                    "(or MLFLOW_TRACKING_TOKEN) were refused" if auth is not None else
                    "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or "
                    "MLFLOW_TRACKING_TOKEN)")
            raise DataError(f"the MLflow tracking server says HTTP {e.code} "
                            f"({'unauthorized' if e.code == 401 else 'forbidden'}): "
                            f"{sent}", uri) from None
        return  # another answer: MLflow words it (or the request works for MLflow)
    except (urllib.error.URLError, OSError, ValueError):
        return  # no answer: study.lease.check_store says so, within its timeout


def check_tracking_uri(uri: str, *, environ: Mapping[str, str] | None = None) -> None:
    """A one-line :class:`DataError` when MLflow could not use ``uri`` as this command
    would (see the module docstring). Writes nothing."""
    env = os.environ if environ is None else environ
    scheme = _scheme(uri)
    if scheme is None:
        if "://" in uri or ":" in uri.split("/", 1)[0]:
            raise DataError("not a tracking URI (expected e.g. sqlite:///mlflow.db or "
                            "http://HOST:5000)", uri)
        return  # a plain path: MLflow's own rule (a folder store), its own message
    if scheme not in TRACKING_SCHEMES:
        raise DataError(f"unknown tracking URI scheme {scheme!r} (MLflow accepts: "
                        f"{', '.join(sorted(TRACKING_SCHEMES))})", uri)
    db = _sqlite_file(uri)
    if db is not None:
        if not _check_sqlite_path(db, uri, what="tracking URI"):
            return
        tables = _tables(db)
        if tables and not MLFLOW_TABLES.issubset(tables):
            shown = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
            raise DataError(f"an SQLite database with other tables ({shown}), not an MLflow "
                            "tracking store: MLflow would add its tables to it; give "
                            "another --tracking-uri", db)
        return
    if scheme in ("http", "https"):
        _check_authorized(uri, env)


def storage_problem(storage: str) -> str | None:
    """Pure: why ``storage`` is not a database URL Optuna can open (its scheme), or None."""
    scheme = _scheme(storage)
    if scheme in STORAGE_SCHEMES:
        return None
    got = f"scheme {scheme!r}" if scheme else "no scheme"
    return (f"{storage!r} is not a database URL Optuna can open ({got}; expected "
            f"{', '.join(sorted(STORAGE_SCHEMES))}, e.g. sqlite:///optuna.db)")


def check_search_storage(storage: str | None, *, key: str = "search.storage",
                         source: str | Path | None = None) -> None:
    """A one-line :class:`DataError` (naming the spec and ``key``) when ``storage`` is not a
    database URL Optuna can open, or an SQLite file in a missing folder or a symlink loop;
    None (in-memory) is fine."""
    if storage is None:
        return
    where = source if source is not None else storage
    problem = storage_problem(storage)
    if problem is not None:
        raise DataError(f"{key}: {problem}", where)
    db = _sqlite_file(storage)
    if db is not None:
        try:
            _check_sqlite_path(db, storage, what="Optuna storage")
        except DataError as e:
            raise DataError(f"{key}: {e.reason}", where) from None


#: errno values and texts that say a store's disk is full (an OSError's errno; SQLite's
#: SQLITE_FULL as sqlite3/SQLAlchemy/MLflow word it; Ray Tune passes a callback's error on
#: as a TuneError whose message is the original traceback, so text is all there is)
_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
_FULL_TEXTS = ("No space left on device", "Disk quota exceeded", "database or disk is full")


def full_disk(e: BaseException) -> str | None:
    """What the disk said (``No space left on device``, ...) when ``e``, an exception it
    was raised from, or a traceback carried in its message, is a full disk; else None. A
    full disk is the machine's state, not a task's fault: the runner stops the study on it
    (one line, ``resume`` later) instead of failing one task after another."""
    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, OSError) and cur.errno in _FULL_ERRNOS:
            return os.strerror(cur.errno)
        text = str(cur)
        for t in _FULL_TEXTS:
            if t in text:
                return t
        cur = cur.__cause__ or cur.__context__
    return None


class DiskFull(BaseException):  # noqa: N818 (a stop, like KeyboardInterrupt, not an error)
    """Raised from a study's Ray Tune callback when a write found the disk full. A
    BaseException on purpose: Tune turns a callback's ``Exception`` into a trial error and
    retries the trial (which cannot help); this one reaches the runner, which stops the
    study (:func:`full_disk` finds the original error as its ``__cause__``)."""


def stops_on_full_disk(method: Callable[..., Any]) -> Callable[..., Any]:
    """``method`` (a Tune callback hook) raising :class:`DiskFull` from a full-disk error."""

    @functools.wraps(method)
    def hook(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except Exception as e:
            what = full_disk(e)
            if what is None:
                raise
            raise DiskFull(what) from e

    return hook
