"""One driver per study: a lease in the tracking store; opening that store safely.

**The lease.** A study version (study name + content hash) is driven by at most one
``run``/``resume`` at a time. The lease lives in the tracking store itself, so every driver
that can log the study sees it: on one machine (SQLite) and on a cluster (a tracking server).

* A lease is an MLflow *experiment* named ``kitchen-study-lease/<study>@<hash[:16]>#<n>``
  (:func:`lease_name`); ``n`` is its generation. Tags (set in the same call that creates it):
  the holder's host, pid and start time (:data:`TAG_HOST`, :data:`TAG_PID`,
  :data:`TAG_SINCE`), and :data:`TAG_HEARTBEAT`, the holder's clock at its last heartbeat.
* **Compare-and-set**: MLflow experiment names are unique in every store (a database
  constraint in SQL stores, enforced by the server behind a tracking URI), so creating
  generation ``n + 1`` is atomic: of several drivers trying at once exactly one succeeds, the
  others get "already exists", read the winner's lease back and refuse. No ordering of clocks
  or run ids is needed to decide who won.
* **The rule** (:func:`decide`, pure): look at the highest generation ``n``. None, or
  released: create ``n + 1``. Live: refuse (:class:`LeaseHeld`, one line naming its host, pid
  and start time). Stale: ``resume`` takes it over by creating ``n + 1``; ``run`` refuses and
  says that ``resume`` takes over (a stale lease means a driver died mid-study).
* **Stale** (:func:`stale_reason`): the last heartbeat is older than :data:`EXPIRY_S`, or the
  holder is on this host and its pid no longer exists. (Hosts' clocks must agree to well
  under :data:`EXPIRY_S`, as NTP gives; a reused pid keeps a dead driver's lease "live" until
  its heartbeat expires.)
* **Heartbeat**: a daemon thread rewrites :data:`TAG_HEARTBEAT` every :data:`HEARTBEAT_S`,
  then checks that no generation ``n + 1`` exists. If one does (this driver was taken for
  dead), the lease is *lost*: :attr:`Lease.lost` is set and ``on_lost`` is called (the runner
  interrupts itself).
* **Fencing** (:meth:`Lease.check`, called by the tracking logger before *every* write): a
  holder trusts its lease for :func:`trust_s` (``EXPIRY_S - 2 * HEARTBEAT_S``) after the
  start of its last successful heartbeat, measured on a clock that keeps running while the
  process is stopped (``CLOCK_BOOTTIME``). Another driver can take over only after
  :data:`EXPIRY_S` without a heartbeat, so a write inside the trust window lands before any
  takeover, with ``2 * HEARTBEAT_S`` to spare for clock skew between hosts. Past the window
  (the driver was SIGSTOPped, the machine slept, or the store did not take a heartbeat for
  that long) the lease is lost *for good*: a later heartbeat may not revive it, because
  another driver may have decided it was stale in the meantime. A lost lease makes every
  later write raise :class:`LeaseLost` (one line), so a driver that wakes up after a
  takeover writes nothing more: no second FINISHED run, no KILLED run switched back. What
  remains is a write already past its check when the process was stopped (the few
  milliseconds of one MLflow call); the store offers no conditional write to close that.
* **Release**: at the end the holder tags its lease released and deletes the experiment
  (MLflow keeps a deleted experiment's name, so generations still only grow; ``mlflow gc``
  may remove released ones, which is harmless).
* **Whose runs a takeover closes**: the lease is per study hash, and the runner closes only
  ``RUNNING`` runs of that hash, so with the lease held those are exactly the runs of the
  earlier holders (dead, or taken for dead), never those of a live driver of another hash.

**Opening the store** (:func:`check_store`, :func:`init_store`). A bad tracking URI is a
one-line :class:`~data_prep.errors.DataError`: a ``sqlite:///`` file that is not an SQLite
database, or one that fails SQLite's ``PRAGMA quick_check`` (a damaged page), names the
file; an ``http(s)://`` server that does not answer within :data:`PROBE_TIMEOUT_S` names the
URI (MLflow's own client would retry for about four minutes:
``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` 7 with backoff factor 2; the probe leaves those defaults
to the study's real requests, where riding out a server restart is wanted). A fresh SQLite
store is created by one process at a time: MLflow creates its tables (alembic migrations) on
first use, and two processes doing that at once break it, so :func:`init_store` holds an
exclusive ``flock`` on ``<db>.lock`` beside the database while it opens the store (and
retries a migration race once more, for file systems where ``flock`` is advisory only).
Readers open a SQLite store under the same lock (:func:`open_client`:
:attr:`study.tracking.MlflowRunLogger.client`, ``kitchen-study train``).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import socket
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from data_prep.errors import DataError

__all__ = [
    "EXPIRY_S",
    "HEARTBEAT_S",
    "PROBE_TIMEOUT_S",
    "Holder",
    "Lease",
    "LeaseHeld",
    "LeaseLost",
    "acquire_lease",
    "check_store",
    "decide",
    "init_store",
    "lease_name",
    "open_client",
    "stale_reason",
    "trust_s",
]

log = logging.getLogger(__name__)

#: Seconds between heartbeats of a lease's holder.
HEARTBEAT_S = 10.0
#: A lease whose last heartbeat is older than this is stale (six missed heartbeats). It must
#: exceed :data:`HEARTBEAT_S` by several beats (``tests/test_lease.py`` pins the margin):
#: below it a live driver's lease could be taken between two of its heartbeats.
EXPIRY_S = 60.0
#: Seconds an ``http(s)`` tracking server gets to answer the reachability probe.
PROBE_TIMEOUT_S = 5.0
#: Seconds a read of an SQLite store waits for another process's write lock. A lock held
#: longer is a driver stopped mid-write (Ctrl-Z, SIGSTOP, a suspended laptop): SQLite cannot
#: break a live process's lock, so the command says who to wake instead of a traceback.
LOCK_WAIT_S = 10.0
LEASE_PREFIX = "kitchen-study-lease/"

_T = "ks.lease."
TAG_HOST, TAG_PID, TAG_SINCE = f"{_T}host", f"{_T}pid", f"{_T}since"
TAG_HEARTBEAT, TAG_RELEASED = f"{_T}heartbeat", f"{_T}released"
TAG_STUDY, TAG_HASH = f"{_T}study", f"{_T}study_hash"
_SQLITE_MAGIC = b"SQLite format 3\x00"


# -- the rules (pure) ------------------------------------------------------------------------


def trust_s() -> float:
    """Seconds a holder trusts its lease after the start of its last successful heartbeat
    (the fencing rule in the module docstring): :data:`EXPIRY_S` less two heartbeats."""
    return EXPIRY_S - 2 * HEARTBEAT_S


def _clock() -> float:
    """Seconds on a clock that keeps counting while this process is stopped (SIGSTOP) and
    while the machine sleeps (``CLOCK_BOOTTIME``; ``monotonic`` elsewhere): a pause must age
    the lease's trust just as it ages the heartbeat that other drivers see."""
    boot = getattr(time, "CLOCK_BOOTTIME", None)
    return time.clock_gettime(boot) if boot is not None else time.monotonic()


def lease_name(study: str, study_hash: str, generation: int) -> str:
    """The experiment name of a lease generation."""
    return f"{LEASE_PREFIX}{study}@{study_hash[:16]}#{generation}"


def _generation(study: str, study_hash: str, name: str) -> int | None:
    head = lease_name(study, study_hash, 0)[:-1]
    tail = name[len(head):] if name.startswith(head) else ""
    return int(tail) if tail.isdigit() else None


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@dataclass(frozen=True)
class Holder:
    """One lease generation as read back from the store."""

    generation: int
    host: str
    pid: int
    since: float  # the holder's clock, seconds since the epoch
    heartbeat: float
    released: bool = False

    def describe(self, now: float | None = None) -> str:
        ago = "" if now is None else f", last heartbeat {max(now - self.heartbeat, 0):.0f}s ago"
        return f"host {self.host}, pid {self.pid}, since {_iso(self.since)}{ago}"

    @classmethod
    def from_tags(cls, generation: int, tags: dict[str, str], deleted: bool) -> Holder:
        def num(key: str) -> float:
            try:
                return float(tags.get(key, "0"))
            except ValueError:
                return 0.0  # an unreadable tag counts as "long ago": stale, never live forever

        return cls(generation, tags.get(TAG_HOST, "?"), int(num(TAG_PID)), num(TAG_SINCE),
                   num(TAG_HEARTBEAT), released=deleted or TAG_RELEASED in tags)


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host (any user's)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, another user's
    return True


def stale_reason(holder: Holder, *, now: float, host: str,
                 alive: Callable[[int], bool] = pid_alive) -> str | None:
    """Why ``holder``'s lease is stale, or None when it is live (the module's rule)."""
    if holder.host == host and not alive(holder.pid):
        return f"its process {holder.pid} no longer exists on {host}"
    if now - holder.heartbeat > EXPIRY_S:
        return f"no heartbeat for {now - holder.heartbeat:.0f}s (expiry {EXPIRY_S:.0f}s)"
    return None


class LeaseLost(DataError):
    """This driver's lease was taken over (or it went unconfirmed past :func:`trust_s`): it
    must write nothing more to the study. One line; the CLI exits 2."""


class LeaseHeld(DataError):
    """Another driver holds the study's lease (or a dead one does and ``run`` will not take
    it over). One line; the CLI prints it as ``error: SPEC: message`` with exit status 2."""

    def __init__(self, message: str, holder: Holder, where: str | Path | None = None):
        self.holder = holder
        super().__init__(message, where)


def decide(holders: Iterable[Holder], *, now: float, host: str, takeover: bool,
           study: str = "", short_hash: str = "", where: str | Path | None = None,
           alive: Callable[[int], bool] = pid_alive) -> tuple[int, Holder | None]:
    """The generation to create and the stale holder it replaces (None if none), or
    :class:`LeaseHeld` when the highest generation is live, or stale and not ``takeover``."""
    holders = list(holders)
    if not holders:
        return 1, None
    top = max(holders, key=lambda h: h.generation)
    if top.released:
        return top.generation + 1, None
    what = f"study {study!r} (hash {short_hash})" if study else "the study"
    why = stale_reason(top, now=now, host=host, alive=alive)
    if why is None:
        raise LeaseHeld(f"{what} is already being run by another driver ({top.describe(now)}); "
                        "wait for it to end or stop it", top, where)
    if not takeover:
        raise LeaseHeld(f"{what} was being run by a driver that is gone ({top.describe(now)}; "
                        f"{why}): `kitchen-study resume` takes over and closes its runs",
                        top, where)
    return top.generation + 1, top


# -- the store -------------------------------------------------------------------------------


def _sqlite_file(uri: str) -> Path | None:
    prefix = "sqlite:///"
    return Path(uri[len(prefix):]).resolve() if uri.startswith(prefix) else None


def is_locked(e: BaseException) -> bool:
    """SQLite's "database is locked", however wrapped (sqlite3, SQLAlchemy, MLflow)."""
    return "database is locked" in str(e)


def locked_store(db: Path) -> DataError:
    """The one line for an SQLite store another process keeps write-locked."""
    return DataError(
        "the MLflow tracking database stays locked by another process (waited, then gave "
        "up): a process stopped mid-write (Ctrl-Z, SIGSTOP, a suspended "
        f"machine) holds it; `fuser {db}` names it: continue it (`kill -CONT PID`) or end "
        "it, then run again", db)


def check_store(uri: str) -> None:
    """A one-line :class:`DataError` when the tracking store at ``uri`` cannot be used:
    an existing SQLite file that is not a database (or cannot be read), or an ``http(s)``
    server that does not answer within :data:`PROBE_TIMEOUT_S`. Writes nothing."""
    db = _sqlite_file(uri)
    if db is not None:
        if not db.exists():
            return
        try:
            with db.open("rb") as f:
                head = f.read(len(_SQLITE_MAGIC))
        except OSError as e:
            raise DataError(f"cannot read the MLflow tracking database ({e.strerror})",
                            db) from None
        if head and head != _SQLITE_MAGIC:
            raise DataError("not an SQLite database: the MLflow tracking store is corrupt or "
                            "another file (move it away or give another --tracking-uri)", db)
        try:
            con = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, timeout=LOCK_WAIT_S)
            try:
                con.execute("SELECT count(*) FROM sqlite_master").fetchone()
                # a damaged page: refuse before anything reads it, or writes more into it
                found = [r[0] for r in con.execute("PRAGMA quick_check(3)").fetchall()]
            finally:
                con.close()
        except sqlite3.DatabaseError as e:
            if is_locked(e):
                raise locked_store(db) from None
            raise DataError(f"the MLflow tracking database is unreadable ({e})", db) from None
        if found != ["ok"]:
            what = " ".join(" ".join(found).replace("*** in database main ***", "").split())
            raise DataError("the MLflow tracking database fails SQLite's integrity check "
                            f"({what[:200]}): restore it from a backup, or try "
                            f"`sqlite3 {db.name} .recover`", db)
        return
    if uri.startswith(("http://", "https://")):
        _probe(uri)


def _probe(uri: str) -> None:
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=PROBE_TIMEOUT_S):
            pass
    except urllib.error.HTTPError:
        return  # it answered (perhaps 401 or 404): reachable; MLflow reports the rest
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", None) or e
        raise DataError(f"the MLflow tracking server does not answer within "
                        f"{PROBE_TIMEOUT_S:.0f}s ({reason}); is it running, and is this the "
                        "right --tracking-uri?", uri) from None


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def init_store(uri: str) -> Any:
    """An ``MlflowClient`` on ``uri`` whose store exists (created, one process at a time, if
    it did not): see the module docstring. Bad stores are :func:`check_store`'s errors."""
    check_store(uri)
    client = open_client(uri)
    if _sqlite_file(uri) is None:
        client.search_experiments(max_results=1)  # a server: answers (open_client did not ask)
    return client


def open_client(uri: str) -> Any:
    """An ``MlflowClient`` on ``uri``, without :func:`check_store`'s checks (the caller's, or
    :func:`init_store`'s). A SQLite store is opened under its file lock, so that it is
    created - MLflow's schema migrations - by one process at a time, readers included (see
    the module docstring); a server's client is only constructed."""
    from mlflow import MlflowClient

    db = _sqlite_file(uri)
    if db is None:
        return MlflowClient(uri)
    db.parent.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{db}"
    for attempt in range(3):
        try:
            with _file_lock(db.with_name(db.name + ".lock")):
                client = MlflowClient(uri)
                client.search_experiments(max_results=1)  # opens the store: creates tables
            return client
        except Exception as e:
            if attempt == 2 or "already exists" not in str(e):
                if is_locked(e):
                    raise locked_store(db) from None
                if "file is not a database" in str(e) or "malformed" in str(e):
                    raise DataError(f"the MLflow tracking database is unreadable ({e})",
                                    db) from None
                raise
            time.sleep(0.5 + attempt)  # another process's migration won the race: reopen
    raise AssertionError("unreachable")


# -- the lease -------------------------------------------------------------------------------


class Lease:
    """A held lease (see the module docstring); a context manager that releases it."""

    def __init__(self, client: Any, study: str, study_hash: str, holder: Holder,
                 experiment_id: str, previous: Holder | None,
                 on_lost: Callable[[Holder | None], None] | None = None,
                 where: str | Path | None = None, beat_at: float | None = None):
        self.client, self.study, self.study_hash = client, study, study_hash
        self.holder, self.experiment_id, self.previous = holder, experiment_id, previous
        self.on_lost, self.where = on_lost, where
        self.lost = False
        self.why_lost = ""
        # the create that won generation n carried its first heartbeat, taken at beat_at
        self._beat_at = _clock() if beat_at is None else beat_at
        self._lose_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="kitchen-study-lease",
                                        daemon=True)
        self._thread.start()

    def _lose(self, why: str, notify: bool) -> None:
        """Mark the lease lost (once); ``notify``: call ``on_lost`` (the heartbeat thread
        does; a write that finds the lease lost raises instead of interrupting itself)."""
        with self._lose_lock:
            if self.lost:
                return
            self.lost, self.why_lost = True, why
        # no log line: the LeaseLost the driver ends with says it, once
        log.debug("study %s: lease lost: %s", self.study, why)
        if notify and self.on_lost is not None:
            self.on_lost(self.holder)

    def _untrusted(self) -> str | None:
        gap = _clock() - self._beat_at
        if gap < trust_s():
            return None
        return (f"its lease went {gap:.0f}s without a heartbeat (the process was stopped or "
                f"the store did not answer; after {EXPIRY_S:.0f}s another driver may take it "
                "over)")

    def _beat(self) -> None:
        nxt = lease_name(self.study, self.study_hash, self.holder.generation + 1)
        while not self._stop.wait(HEARTBEAT_S):
            why = self._untrusted()
            if why is not None:  # a later heartbeat must not revive it: see the docstring
                self._lose(why, notify=True)
                return
            t0 = _clock()  # before the write: the trust runs from the earliest moment
            try:
                self.client.set_experiment_tag(self.experiment_id, TAG_HEARTBEAT,
                                               f"{time.time():.3f}")
                if self.client.get_experiment_by_name(nxt) is not None:
                    self._lose("another driver took over the study's lease (`kitchen-study "
                               "resume`)", notify=True)
                    return
            except Exception as e:  # a tracking hiccup: try again at the next beat
                log.warning("lease heartbeat failed (%r); retrying in %.0fs", e, HEARTBEAT_S)
                continue
            if not self._stop.is_set():
                self._beat_at = max(self._beat_at, t0)

    def check(self) -> None:
        """Raise :class:`LeaseLost` unless this driver may still write (the fencing rule:
        not lost, and a heartbeat started within :func:`trust_s`). No I/O: cheap enough to
        call before every write."""
        if not self.lost:
            why = self._untrusted()
            if why is None:
                return
            self._lose(why, notify=False)
        short = self.study_hash[:12]
        raise LeaseLost(f"this driver lost the lease of study {self.study!r} (hash {short}): "
                        f"{self.why_lost}; it stopped and writes nothing more (its runs are "
                        "the new holder's; `kitchen-study status` shows them)", self.where)

    @property
    def held(self) -> bool:
        return not self.lost and not self._stop.is_set() and self._untrusted() is None

    def release(self) -> None:
        """Stop the heartbeat, mark the lease released and delete its experiment (not when
        it was lost: the store then belongs to the new holder). Idempotent."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join(timeout=HEARTBEAT_S)
        if self.lost or self._untrusted() is not None:
            return
        # the time of release is a new row, which a full disk refuses; the deletion alone
        # releases the lease (Holder.released) and is an update in place, which still fits
        with contextlib.suppress(Exception):
            self.client.set_experiment_tag(self.experiment_id, TAG_RELEASED, _iso(time.time()))
        try:
            self.client.delete_experiment(self.experiment_id)
        except Exception as e:  # the heartbeat stops regardless: the lease expires
            log.warning("lease not released (%r); it expires in %.0fs", e, EXPIRY_S)

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _holders(client: Any, study: str, study_hash: str) -> list[Holder]:
    from mlflow.entities import ViewType

    head = lease_name(study, study_hash, 0)[:-1]
    like = head.replace("%", "_")  # '%' and '_' are LIKE wildcards: filter exactly below
    out: list[Holder] = []
    token = None
    while True:
        page = client.search_experiments(view_type=ViewType.ALL, max_results=1000,
                                         filter_string=f"name LIKE '{like}%'",
                                         page_token=token)
        for e in page:
            gen = _generation(study, study_hash, e.name)
            if gen is not None:
                out.append(Holder.from_tags(gen, dict(e.tags),
                                            e.lifecycle_stage != "active"))
        token = page.token
        if not token:
            return out


def _already_exists(e: Exception) -> bool:
    code = getattr(e, "error_code", "")
    return code == "RESOURCE_ALREADY_EXISTS" or "already exists" in str(e).lower()


def acquire_lease(tracking_uri: str, study: str, study_hash: str, *, takeover: bool,
                  where: str | Path | None = None,
                  on_lost: Callable[[Holder | None], None] | None = None,
                  client: Any = None) -> Lease:
    """Take the study's lease (the module's rule) or raise :class:`LeaseHeld`. Opens (and if
    needed creates) the store first (:func:`init_store`)."""
    client = client or init_store(tracking_uri)
    host, pid = socket.gethostname(), os.getpid()
    for _ in range(5):  # each retry follows another driver's successful create
        beat_at, now = _clock(), time.time()
        gen, previous = decide(_holders(client, study, study_hash), now=now, host=host,
                               takeover=takeover, study=study, short_hash=study_hash[:12],
                               where=where)
        tags = {TAG_HOST: host, TAG_PID: str(pid), TAG_SINCE: f"{now:.3f}",
                TAG_HEARTBEAT: f"{now:.3f}", TAG_STUDY: study, TAG_HASH: study_hash}
        try:
            exp_id = client.create_experiment(lease_name(study, study_hash, gen), tags=tags)
        except Exception as e:
            if _already_exists(e):
                continue  # another driver created this generation first: read it, decide
            db = _sqlite_file(tracking_uri)
            if db is not None and is_locked(e):
                raise locked_store(db) from None
            raise
        if previous is not None:
            with contextlib.suppress(Exception):  # best effort: it is superseded anyway
                old = client.get_experiment_by_name(lease_name(study, study_hash,
                                                               previous.generation))
                client.set_experiment_tag(old.experiment_id, TAG_RELEASED,
                                          f"taken over by generation {gen}")
                client.delete_experiment(old.experiment_id)
        return Lease(client, study, study_hash,
                     Holder(gen, host, pid, now, now), exp_id, previous, on_lost, where,
                     beat_at)
    raise OSError(errno.EAGAIN, f"could not take the lease of study {study!r}: it changed "
                  "hands five times while trying")
