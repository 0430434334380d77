"""One driver per study (study.lease): the pure rules, then real SQLite MLflow stores with
drivers simulated as separate processes (a subprocess takes the lease and holds it)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from data_prep.errors import DataError
from study import lease as lease_mod
from study.lease import (
    EXPIRY_S,
    Holder,
    LeaseHeld,
    acquire_lease,
    check_store,
    decide,
    lease_name,
    stale_reason,
)

ROOT = Path(__file__).resolve().parents[1]
HASH = "ab" * 32
NOW = 1_800_000_000.0


def _holder(gen=1, host="h1", pid=100, beat_ago=1.0, released=False) -> Holder:
    return Holder(gen, host, pid, NOW - 3600, NOW - beat_ago, released)


def _alive(pid: int) -> bool:
    return pid == 100


# -- the rules ---------------------------------------------------------------------------------


def test_no_lease_or_a_released_one_gives_the_next_generation():
    assert decide([], now=NOW, host="h2", takeover=False) == (1, None)
    held = [_holder(1, released=True), _holder(2, released=True)]
    assert decide(held, now=NOW, host="h2", takeover=False, alive=_alive) == (3, None)


def test_a_live_lease_refuses_naming_its_holder():
    with pytest.raises(LeaseHeld) as e:
        decide([_holder(1, released=True), _holder(2)], now=NOW, host="h2", takeover=True,
               study="s", short_hash="abab", where="spec.yaml", alive=_alive)
    msg = str(e.value)
    assert msg.startswith("spec.yaml: study 's' (hash abab) is already being run")
    assert "host h1, pid 100, since " in msg and "\n" not in msg
    assert e.value.holder.generation == 2


def test_stale_by_heartbeat_or_by_a_dead_pid_on_this_host():
    assert stale_reason(_holder(beat_ago=1), now=NOW, host="h2", alive=_alive) is None
    assert "no heartbeat" in stale_reason(_holder(beat_ago=EXPIRY_S + 1), now=NOW, host="h2",
                                          alive=_alive)
    dead = _holder(pid=7)  # fresh heartbeat, but on this host and its process is gone
    assert "no longer exists" in stale_reason(dead, now=NOW, host="h1", alive=_alive)
    # another host's pid says nothing here
    assert stale_reason(dead, now=NOW, host="h2", alive=_alive) is None


def test_resume_takes_over_a_stale_lease_run_refuses_it():
    stale = _holder(3, beat_ago=EXPIRY_S * 2)
    assert decide([stale], now=NOW, host="h2", takeover=True, alive=_alive) == (4, stale)
    with pytest.raises(LeaseHeld, match="`kitchen-study resume` takes over"):
        decide([stale], now=NOW, host="h2", takeover=False, alive=_alive)


# -- real stores, drivers as processes ---------------------------------------------------------

_DRIVER = textwrap.dedent("""
    import os, sys, time
    sys.path.insert(0, sys.argv[1])
    from study.lease import LeaseHeld, acquire_lease
    go = sys.argv[3]
    if go != "-":
        while not os.path.exists(go):
            time.sleep(0.01)
    try:
        lease = acquire_lease(sys.argv[2], "s", sys.argv[4], takeover=False, where="s.yaml")
    except LeaseHeld as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"acquired {lease.holder.generation} {os.getpid()}", flush=True)
    sys.stdin.read()  # hold the lease until the test closes stdin
    lease.release()
""")


def _driver(uri: str, go: str = "-") -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", _DRIVER, str(ROOT), uri, go, HASH],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_acquired(p: subprocess.Popen) -> int:
    line = p.stdout.readline()
    assert line.startswith("acquired"), (line, p.stderr.read() if p.poll() is not None else "")
    return int(line.split()[2])


def test_a_second_driver_refuses_while_the_first_holds_the_lease(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first = _driver(uri)
    try:
        pid = _wait_acquired(first)
        with pytest.raises(LeaseHeld, match=f"already being run by another driver .*pid {pid}"):
            acquire_lease(uri, "s", HASH, takeover=True)
    finally:
        first.stdin.close()
        first.wait(60)
    assert first.returncode == 0
    # released at its end: the next driver gets the next generation
    with acquire_lease(uri, "s", HASH, takeover=False) as lease:
        assert lease.holder.generation == 2 and lease.previous is None
        assert lease.held
    # another study hash is another lease
    with acquire_lease(uri, "s", "cd" * 32, takeover=False) as other:
        assert other.holder.generation == 1


def test_a_killed_drivers_lease_is_taken_over_by_resume_only(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first = _driver(uri)
    pid = _wait_acquired(first)
    os.kill(first.pid, signal.SIGKILL)
    first.wait(30)
    with pytest.raises(LeaseHeld, match=f"driver that is gone .*pid {pid}.*no longer exists"):
        acquire_lease(uri, "s", HASH, takeover=False)  # `run`
    with acquire_lease(uri, "s", HASH, takeover=True) as lease:  # `resume`
        assert lease.holder.generation == 2
        assert lease.previous is not None and lease.previous.pid == pid
        with pytest.raises(LeaseHeld, match=f"pid {os.getpid()}"):
            acquire_lease(uri, "s", HASH, takeover=True)  # now live again: ours


def test_two_drivers_on_a_fresh_store_one_wins_the_other_gets_one_line(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    go = tmp_path / "go"
    drivers = [_driver(uri, str(go)) for _ in range(2)]
    try:
        time.sleep(3)  # both have imported and wait for the go file (not a timing assertion)
        go.touch()
        # the loser exits 2; the winner holds until stdin closes
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and all(d.poll() is None for d in drivers):
            time.sleep(0.1)
        losers = [d for d in drivers if d.poll() is not None]
        assert len(losers) == 1, "both drivers still running (both hold the lease?)"
        loser = losers[0]
        winner = next(d for d in drivers if d is not loser)
        err = loser.stderr.read()
        assert loser.returncode == 2, err
        assert "Traceback" not in err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: s.yaml: study 's'"), err
        assert f"pid {winner.pid}" in lines[0]
        assert _wait_acquired(winner) == winner.pid
    finally:
        for d in drivers:
            if d.poll() is None:
                d.stdin.close()
                d.wait(60)


def test_a_reader_opens_a_store_a_driver_is_creating_only_after_it(tmp_path):
    """A reader (``kitchen-study status`` beside a new ``run``) must not run MLflow's schema
    migrations while a driver does: two at once break the database (``_alembic_tmp_*``
    tables left behind; seen in CI). Holding the store's lock as a creating driver does, the
    reader's first MLflow access waits; after it, the store is whole and readable."""
    import fcntl

    from study.tracking import MlflowRunLogger

    # MLflow imported and one store made first, so that an unguarded open of the new one
    # would finish well inside the wait below (about 1 s here; 2.5 s with the imports)
    (tmp_path / "warm").mkdir()
    MlflowRunLogger(f"sqlite:///{tmp_path / 'warm' / 'mlflow.db'}").client.search_experiments()
    db = tmp_path / "mlflow.db"
    reader = MlflowRunLogger(f"sqlite:///{db}", fast_read=False)
    opened = threading.Event()
    failed: list[BaseException] = []

    def read() -> None:
        try:
            reader.client.search_experiments(max_results=1)
            opened.set()
        except BaseException as e:  # noqa: BLE001 - reported by the assertion below
            failed.append(e)

    fd = os.open(db.with_name(db.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # "a driver is creating the store"
        t = threading.Thread(target=read)
        t.start()
        assert not opened.wait(5.0), "the reader opened the store under a creating driver"
        assert not db.exists()  # and created nothing meanwhile
    finally:
        os.close(fd)
    t.join(120)
    assert opened.is_set() and not failed, failed
    con = sqlite3.connect(db)
    try:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        con.close()
    assert "runs" in tables and not [t for t in tables if t.startswith("_alembic_tmp")]


def test_a_driver_taken_for_dead_notices_it_lost_the_lease(tmp_path, monkeypatch):
    monkeypatch.setattr(lease_mod, "HEARTBEAT_S", 0.05)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    lost = threading.Event()
    lease = acquire_lease(uri, "s", HASH, takeover=False, on_lost=lambda h: lost.set())
    try:
        # another driver took over generation 2 (as `resume` does after EXPIRY_S)
        lease.client.create_experiment(lease_name("s", HASH, 2))
        assert lost.wait(60)
        assert lease.lost and not lease.held
    finally:
        lease.release()


# -- the store ---------------------------------------------------------------------------------


def test_a_corrupt_store_and_a_silent_server_are_one_line_errors(tmp_path):
    db = tmp_path / "mlflow.db"
    db.write_bytes(b"this is not a database\n" * 10)
    with pytest.raises(DataError, match="not an SQLite database") as e:
        check_store(f"sqlite:///{db}")
    assert str(db) in str(e.value)
    # a port nobody listens on (connection refused) answers at once
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DataError, match="does not answer"):
        check_store(f"http://127.0.0.1:{port}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlflow.db"]


# -- the margins the rules rely on (a planted EXPIRY_S < HEARTBEAT_S passed every test) --------


def test_expiry_leaves_a_live_driver_several_heartbeats_of_margin():
    from study.lease import HEARTBEAT_S, trust_s

    # a live holder that missed a heartbeat or two (a busy machine) is still live
    late = Holder(1, "h1", 100, NOW - 3600, NOW - 2.5 * HEARTBEAT_S)
    assert stale_reason(late, now=NOW, host="h2", alive=_alive) is None
    assert EXPIRY_S >= 4 * HEARTBEAT_S
    # fencing: the holder trusts its lease for two heartbeats less than a takeover needs,
    # and long enough that its own heartbeats keep the trust fresh
    assert HEARTBEAT_S * 2 <= trust_s() <= EXPIRY_S - 2 * HEARTBEAT_S


# -- fencing: a driver stopped past the expiry, taken over, then woken, writes nothing ---------

# A driver in miniature, as the runner does it: take the lease (run or resume), fence the
# logger with it, close the RUNNING runs of the study hash (a takeover), then run each task
# not yet FINISHED: start its run, log, sleep, end it FINISHED. Short lease times, so the
# test's SIGSTOP outlasts the expiry in seconds.
_FENCED_DRIVER = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, sys.argv[1])
    from study import lease as L
    L.HEARTBEAT_S, L.EXPIRY_S = 0.5, 5.0
    from data_prep.errors import DataError
    from study.mlflow_layout import TaskMeta
    from study.tracking import MlflowRunLogger
    uri, study_hash, takeover, tasks = sys.argv[2], sys.argv[3], sys.argv[4] == "1", 12
    try:
        logger = MlflowRunLogger(uri)
        lease = L.acquire_lease(uri, "s", study_hash, takeover=takeover, where="s.yaml")
        logger.fence = lease.check
        closed = logger.close_running(study_hash, "KILLED", "the study driver stopped")
        print(f"closed {len(closed)}", flush=True)
        study = logger.start_study("s", study_hash)
        for i in range(tasks):
            task = f"t{i:02d}"
            if task in logger.finished_tasks(study_hash):
                continue
            rid = logger.start_task(study, TaskMeta(task, "baseline", "single", "b", "s1"))
            print(f"started {task}", flush=True)
            for step in range(5):
                logger.log_metrics(rid, {"frame_acc": float(step)}, step=step)
                time.sleep(0.1)
            logger.end_task(rid, "FINISHED")
        logger.end_study(study, "FINISHED")
        lease.release()
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print("done", flush=True)
""")


def _fenced(uri: str, takeover: bool) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", _FENCED_DRIVER, str(ROOT), uri, HASH,
                             "1" if takeover else "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _read_until(p: subprocess.Popen, prefix: str) -> str:
    for line in p.stdout:
        if line.startswith(prefix):
            return line
    raise AssertionError(f"no {prefix!r} line; stderr: {p.stderr.read()}")


def _stop_between_writes(pid: int, db: Path) -> None:
    """SIGSTOP ``pid`` at a moment it holds no SQLite lock. A process stopped inside a
    transaction keeps the file locked for everyone (SQLite cannot break a live process's
    lock: ``test_a_store_locked_by_a_stopped_process_is_one_line``); the frozen driver
    this test is about stopped between two writes."""
    for _ in range(200):
        os.kill(pid, signal.SIGSTOP)
        con = sqlite3.connect(db, timeout=0)
        try:
            con.execute("BEGIN EXCLUSIVE")  # no reader or writer holds any lock
            con.rollback()
            return
        except sqlite3.OperationalError:
            os.kill(pid, signal.SIGCONT)
            time.sleep(0.02)
        finally:
            con.close()
    raise AssertionError("the driver never left the database unlocked")


def test_a_store_locked_by_a_stopped_process_is_one_line(tmp_path, monkeypatch):
    L = lease_mod
    db = tmp_path / "mlflow.db"
    uri = f"sqlite:///{db}"
    L.init_store(uri)
    monkeypatch.setattr(L, "LOCK_WAIT_S", 0.5)
    holder = sqlite3.connect(db)
    holder.execute("BEGIN EXCLUSIVE")  # what a driver stopped mid-commit leaves behind
    try:
        with pytest.raises(DataError) as e:
            L.acquire_lease(uri, "s", HASH, takeover=True, where="s.yaml")
    finally:
        holder.rollback()
        holder.close()
    assert str(e.value).startswith(f"{db}: the MLflow tracking database stays locked")
    assert "fuser" in str(e.value) and "\n" not in str(e.value)
    lease = L.acquire_lease(uri, "s", HASH, takeover=True, where="s.yaml")  # unlocked: fine
    lease.release()


def test_a_driver_woken_after_a_takeover_writes_nothing_more(tmp_path):
    from study.tracking import MlflowRunLogger

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    a = _fenced(uri, takeover=False)
    b = None
    try:
        _read_until(a, "started t02")
        _stop_between_writes(a.pid, tmp_path / "mlflow.db")  # its run of t02 is RUNNING
        stopped = time.monotonic()
        time.sleep(5.0 + 1.5)  # past the expiry (the driver's EXPIRY_S): stale for `resume`
        b = _fenced(uri, takeover=True)
        closed = int(_read_until(b, "closed").split()[1])
        assert closed >= 1
        killed_by_b = {r.run_id for r in MlflowRunLogger(uri).study_runs("s", HASH)
                       if r.status == "KILLED"}
        assert killed_by_b
        _read_until(b, "started")  # B is writing its own runs when A wakes up
        os.kill(a.pid, signal.SIGCONT)
        assert time.monotonic() - stopped > 5.0
        a_out, a_err = a.communicate(timeout=60)
        b_out, b_err = b.communicate(timeout=120)
    finally:
        for p in (a, b):
            if p is not None and p.poll() is None:
                os.kill(p.pid, signal.SIGCONT)
                p.kill()
                p.wait(30)
    assert b.returncode == 0, b_err
    # the loser: exit 2, one line naming the study and why, no traceback
    assert a.returncode == 2, a_err
    lines = [ln for ln in a_err.strip().splitlines() if " INFO " not in ln]  # MLflow's
    assert "Traceback" not in a_err and len(lines) == 1, a_err
    assert lines[0].startswith("error: s.yaml: this driver lost the lease of study 's'")
    assert "done" not in a_out
    runs = MlflowRunLogger(uri).study_runs("s", HASH)
    tasks = [r for r in runs if r.role == "task"]
    finished: dict[str, list[str]] = {}
    for r in tasks:
        if r.status == "FINISHED":
            finished.setdefault(r.tags["ks.task_id"], []).append(r.run_id)
    assert sorted(finished) == [f"t{i:02d}" for i in range(12)]
    assert not [t for t, ids in finished.items() if len(ids) > 1], finished  # none twice
    status = {r.run_id: r.status for r in runs}
    assert all(status[rid] == "KILLED" for rid in killed_by_b)  # A switched none back
    assert not [r for r in runs if r.status == "RUNNING"]
