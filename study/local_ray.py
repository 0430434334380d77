"""Connecting the study driver to Ray; a local Ray of the platform's own is loopback-only.

:func:`connect_ray` decides where Ray comes from (the rules the study runner documents):

* an already initialised Ray is used as is (returns False: the caller must not shut it down);
* ``address`` given: ``ray.init(address=address)``;
* else ``$RAY_ADDRESS`` set (as under ``ray job submit``): ``ray.init()`` joins it;
* else a new local Ray of our own (``address="local"``: never a cluster someone else
  ``ray start``-ed on this machine). Returns True for the last three: this call started
  (or joined) Ray, so the caller calls ``ray.shutdown()``.

**A local Ray listens on 127.0.0.1 only.** Ray binds its gRPC servers (GCS, raylet, object
manager, workers), the dashboard agent and the runtime-env agent to the node IP, and its
metrics/HTTP sidecars to all interfaces unless the node IP is loopback. On macOS and
Windows Ray already uses 127.0.0.1 as the node IP; on Linux it uses the address of the
default route. For a platform-started local Ray we switch Ray to the macOS/Windows
behaviour (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` for the processes it spawns, and the
same constant in this process, only while ``ray.init`` runs), so the node IP is 127.0.0.1
and every listening socket is loopback. The dashboard stays off (``include_dashboard=False``;
its host would be 127.0.0.1 anyway). Ray >= 2.59 turns token authentication on for such a
cluster by default (token in ``~/.ray/auth_token``); we leave that on, and make the token
file owner-only (0600; Ray writes it with the umask) and a ``~/.ray`` we create 0700. An
``address`` where nothing listens is refused in one line within seconds (a TCP probe). A Ray we join
(``address`` / ``$RAY_ADDRESS``) is configured by whoever started it.

**Orphans after SIGKILL: cleaned up on the next start, by pid, only our own.** A driver
killed with SIGKILL cannot shut Ray down; Ray's GCS and raylet then exit, but its dashboard
agent and runtime-env agent are re-parented to init and keep listening (loopback only, with
the binding above). Nothing can run in the killed process, so this module does not try to
prevent that; instead, every local Ray it starts is recorded in
``$XDG_CACHE_HOME/kitchen-study/ray-sessions/`` (default ``~/.cache/...``): the driver's pid
and start time, Ray's session directory, and the pids and start times of the Ray processes
that exist right after start. Every later :func:`connect_ray` (any process, any mode) first
reaps the records whose driver is dead (its pid gone or reused: the start time differs): it
sends SIGTERM, then SIGKILL after a grace period, to the processes of that record's Ray
session only, i.e. processes of the current user that are either a recorded pid with the
recorded start time or hold an open file under that session directory (Ray's processes keep
their log files there). Processes of another user, of a Ray someone else started, or of a
driver that is still alive are never touched. Records of a driver that exits normally are
removed at exit. The reaping needs Linux's ``/proc``; elsewhere it does nothing.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import signal
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "connect_ray",
    "probe_address",
    "reap_orphaned_ray",
    "session_processes",
    "sessions_dir",
]

log = logging.getLogger(__name__)

#: Ray's switch for "node IP = loopback" (its default on macOS and Windows).
_LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
#: seconds between SIGTERM and SIGKILL when reaping an orphaned session
_GRACE_S = 3.0
_PROC = Path("/proc")


def connect_ray(address: str | None, num_cpus: int | None, verbose: bool) -> bool:
    """Initialise Ray unless it already is; True if this call did (and should shut down).

    ``address`` (a cluster address or ``"auto"``) is joined as given; without it
    ``$RAY_ADDRESS`` is joined; without either a new local Ray bound to 127.0.0.1 is
    started with ``num_cpus`` CPUs (all when None). Before any of that, local Ray sessions
    left behind by killed drivers of this platform are reaped (see the module docstring).
    """
    import ray

    if ray.is_initialized():
        return False
    reap_orphaned_ray()
    kwargs: dict[str, Any] = {
        "logging_level": logging.INFO if verbose else logging.WARNING,
        "log_to_driver": verbose,
        "configure_logging": True,
    }
    if address:
        probe_address(address)
        ray.init(address=address, **kwargs)
    elif os.environ.get("RAY_ADDRESS"):
        ray.init(**kwargs)  # joins $RAY_ADDRESS (e.g. under `ray job submit`)
    else:
        _private_dir(Path.home() / ".ray")
        with _loopback_node_ip():
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False,
                     dashboard_host="127.0.0.1", **kwargs)
        _private_token()
        _record_session()
    return True


#: seconds a cluster address gets to accept a TCP connection before it is refused
PROBE_TIMEOUT_S = 5.0


def probe_address(address: str) -> None:
    """A ``host:port`` (or ``ray://host:port``) where nothing listens is one line within
    :data:`PROBE_TIMEOUT_S`, not ``ray.init`` retrying for minutes. ``auto``/``local`` and
    anything without a port are left to Ray."""
    import socket

    from data_prep.errors import DataError

    hostport = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit() or not host:
        return
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=PROBE_TIMEOUT_S):
            pass
    except OSError as e:
        raise DataError(f"no Ray cluster answers at {address} within {PROBE_TIMEOUT_S:.0f}s "
                        f"({e.strerror or e}); is `ray start --head` running there, and is "
                        "this its address?") from None


def _private_dir(d: Path) -> None:
    """Create Ray's ``~/.ray`` owner-only if it does not exist yet (an existing one is
    the user's to set)."""
    with contextlib.suppress(OSError):
        d.mkdir(mode=0o700, exist_ok=False)


def _private_token() -> None:
    """Ray writes ``~/.ray/auth_token`` with the process umask (0644 typically): the token
    lets anyone who reads it run code on the cluster, so it is made owner-only (0600)."""
    token = Path.home() / ".ray" / "auth_token"
    with contextlib.suppress(OSError):
        st = token.lstat()
        if st.st_uid == os.getuid() and token.is_file() and st.st_mode & 0o077:
            token.chmod(0o600)


@contextlib.contextmanager
def _loopback_node_ip():
    """While Ray starts: node IP 127.0.0.1 in this process and the processes Ray spawns.

    Ray reads the switch into a module constant at import (this process usually imported
    Ray before) and from the environment in its child processes, so both are set, and both
    restored afterwards: joining a remote cluster later from this process needs the real
    node IP again.
    """
    from ray._private import ray_constants

    old_env = os.environ.get(_LOOPBACK_ENV)
    old_const = ray_constants.ENABLE_RAY_CLUSTER
    os.environ[_LOOPBACK_ENV] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = old_const
        if old_env is None:
            os.environ.pop(_LOOPBACK_ENV, None)
        else:
            os.environ[_LOOPBACK_ENV] = old_env


# -- session records and reaping --------------------------------------------------------------


def sessions_dir() -> Path:
    """Where local Ray sessions started by this platform are recorded (per user)."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "kitchen-study" / "ray-sessions"


def _start_time(pid: int) -> int | None:
    """The process's start time (clock ticks since boot); None if it does not exist or has
    exited (a zombie waiting for its parent)."""
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may contain spaces and parentheses: split after the last ')'
    fields = stat[stat.rindex(")") + 2:].split()
    return None if fields[0] in ("Z", "X") else int(fields[19])


def _ppid(pid: int) -> int | None:
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2:].split()[1])


def _own_pids() -> list[int]:
    """Pids of the current user's processes (from /proc)."""
    uid = os.getuid()
    out = []
    for p in _PROC.iterdir():
        if p.name.isdigit():
            with contextlib.suppress(OSError):
                if p.stat().st_uid == uid:
                    out.append(int(p.name))
    return out


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for pid in _own_pids():
        ppid = _ppid(pid)
        if ppid is not None:
            children.setdefault(ppid, []).append(pid)
    out, todo = [], [root]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _uses_dir(pid: int, session_dir: str) -> bool:
    """Whether the process has an open file (or its cwd) under ``session_dir``."""
    prefix = session_dir.rstrip("/") + "/"
    base = _PROC / str(pid)
    with contextlib.suppress(OSError):
        if (os.readlink(base / "cwd") + "/").startswith(prefix):
            return True
    try:
        fds = list((base / "fd").iterdir())
    except OSError:
        return False
    for fd in fds:
        with contextlib.suppress(OSError):
            if os.readlink(fd).startswith(prefix):
                return True
    return False


def session_processes(session_dir: str, recorded: Iterable[Sequence[int]] = ()) -> list[int]:
    """Live processes of the current user that belong to a Ray session: a recorded
    ``[pid, start_time]`` still alive with that start time, or a process holding a file
    under ``session_dir``. Never this process or its ancestors."""
    if not _PROC.is_dir():
        return []
    spare = {os.getpid()}
    p = os.getpid()
    while (p := _ppid(p) or 0) > 1:
        spare.add(p)
    found = {pid for pid, start in recorded if _start_time(pid) == start}
    found |= {pid for pid in _own_pids()
              if _uses_dir(pid, session_dir) and _start_time(pid) is not None}
    return sorted(found - spare)


def _record_session() -> None:
    """Record the local Ray just started, for :func:`reap_orphaned_ray` after a SIGKILL."""
    if not _PROC.is_dir():
        return
    import ray

    session_dir = ray._private.worker.global_worker.node.get_session_dir_path()
    me = os.getpid()
    record = {
        "driver_pid": me,
        "driver_start": _start_time(me),
        "session_dir": session_dir,
        "pids": [[p, s] for p in _descendants(me) if (s := _start_time(p)) is not None],
    }
    d = sessions_dir()
    try:
        d.mkdir(parents=True, exist_ok=True)
        path = d / f"{Path(session_dir).name}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record))
        tmp.replace(path)
    except OSError as e:  # a read-only home must not stop a study; say what is lost
        log.warning("could not record the local Ray session in %s (%s): its processes "
                    "will not be cleaned up if this driver is killed", d, e)
        return
    atexit.register(_forget, path)


def _forget(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


def reap_orphaned_ray(grace_s: float = _GRACE_S) -> list[int]:
    """Terminate the processes of local Ray sessions whose driver (of this platform) is
    dead; returns their pids. See the module docstring for what counts as "ours"."""
    d = sessions_dir()
    if not _PROC.is_dir() or not d.is_dir():
        return []
    reaped: list[int] = []
    for path in sorted(d.glob("*.json")):
        try:
            rec = json.loads(path.read_text())
            driver, driver_start = int(rec["driver_pid"]), rec["driver_start"]
            session_dir, recorded = str(rec["session_dir"]), list(rec["pids"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.warning("ignoring unreadable Ray session record %s (%s)", path, e)
            continue
        if _start_time(driver) == driver_start:
            continue  # its driver is alive: its Ray is its own business
        # a few rounds: a dying raylet may still spawn a process while we stop the others
        for _ in range(3):
            pids = session_processes(session_dir, recorded)
            if not pids:
                break
            log.warning("stopping %d process(es) of the local Ray %s left by a killed "
                        "driver (pid %d): %s", len(pids), session_dir, driver, pids)
            _terminate(pids, grace_s)
            reaped += pids
        _forget(path)
    return reaped


def _terminate(pids: list[int], grace_s: float) -> None:
    starts = {p: _start_time(p) for p in pids}
    for p in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(p, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [p for p in alive if _start_time(p) == starts[p]]
    for p in alive:  # same pid and start time: still the process we signalled
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(p, signal.SIGKILL)
