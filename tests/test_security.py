"""A local Ray started by the platform (study.local_ray.connect_ray) listens on loopback
only, and a driver killed with SIGKILL leaves no Ray process behind once the next driver
has started and stopped (the next start reaps the dead driver's session, by pid).

The listening sockets are read from /proc (Linux): /proc/net/tcp{,6} for sockets in LISTEN
state, /proc/<pid>/fd to map them to Ray's processes."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from study.local_ray import connect_ray, session_processes, sessions_dir  # noqa: E402

pytestmark = pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc")

ROOT = Path(__file__).resolve().parents[1]


def _listening() -> dict[int, tuple[str, int]]:
    """socket inode -> (local address, port) of every TCP socket in LISTEN state."""
    out = {}
    for name, width in (("tcp", 8), ("tcp6", 32)):
        for line in Path(f"/proc/net/{name}").read_text().splitlines()[1:]:
            f = line.split()
            if f[3] != "0A":  # LISTEN
                continue
            hexaddr, hexport = f[1].split(":")
            raw = bytes.fromhex(hexaddr)
            # /proc prints the address as 32-bit words in host (little-endian) order
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            addr = ipaddress.ip_address(raw)
            assert len(hexaddr) == width
            out[int(f[9])] = (str(addr), int(hexport, 16))
    return out


def _sockets_of(pids) -> list[tuple[int, str, int]]:
    """(pid, address, port) of the listening sockets the processes hold."""
    listening = _listening()
    found = []
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inode = int(target[8:-1])
                if inode in listening:
                    found.append((pid, *listening[inode]))
    return found


def _is_loopback(addr: str) -> bool:
    ip = ipaddress.ip_address(addr)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped  # [::ffff:127.0.0.1]
    return ip.is_loopback


def test_is_loopback_is_not_vacuous():
    assert _is_loopback("127.0.0.1") and _is_loopback("::1") and _is_loopback("::ffff:127.0.0.1")
    assert not _is_loopback("0.0.0.0") and not _is_loopback("::")
    assert not _is_loopback("10.1.2.3")


def test_socket_listing_sees_a_wildcard_listener():
    # the helper itself must find a listener on 0.0.0.0 (else the tests below prove nothing)
    import socket

    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        s.listen()
        port = s.getsockname()[1]
        socks = _sockets_of([os.getpid()])
    assert ("0.0.0.0", port) in [(a, p) for _, a, p in socks]


@pytest.fixture
def own_cache(tmp_path, monkeypatch):
    """Session records in a private cache dir (this test's drivers only)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    return tmp_path


def _session_dir() -> str:
    return ray._private.worker.global_worker.node.get_session_dir_path()


def test_local_ray_listens_on_loopback_only(own_cache):
    if ray.is_initialized():
        pytest.skip("a Ray started by another test is still running in this process")
    assert connect_ray(None, 1, False) is True
    try:
        @ray.remote
        def node_ip() -> str:
            return ray.util.get_node_ip_address()

        assert ray.get(node_ip.remote()) == "127.0.0.1"  # a worker process is up too
        time.sleep(1.0)  # the agents open their ports right after start
        pids = session_processes(_session_dir())
        names = {Path(f"/proc/{p}/comm").read_text().strip() for p in pids}
        assert {"gcs_server", "raylet"} <= names, names
        socks = _sockets_of(pids + [os.getpid()])
        assert len({pid for pid, _, _ in socks}) >= 3, socks  # GCS, raylet, agents, ...
        exposed = [s for s in socks if not _is_loopback(s[1])]
        assert not exposed, f"Ray listens beyond loopback: {exposed}"
        # the session is recorded for reaping after a SIGKILL
        assert list(sessions_dir().glob("*.json"))
    finally:
        ray.shutdown()
    # connect_ray restores Ray's node-IP switch for later cluster connections
    assert os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER") is None or \
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] != "0"


DRIVER = textwrap.dedent("""
    import sys, time
    import ray
    from study.local_ray import connect_ray
    assert connect_ray(None, 1, False)
    ray.get(ray.remote(lambda: 1).remote())
    print(ray._private.worker.global_worker.node.get_session_dir_path(), flush=True)
    time.sleep(600)
""")


def test_sigkilled_driver_leaves_no_ray_behind(own_cache):
    if ray.is_initialized():
        pytest.skip("a Ray started by another test is still running in this process")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    driver = subprocess.Popen([sys.executable, "-c", DRIVER], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True, env=env, cwd=ROOT)
    left: list[int] = []
    try:
        session = driver.stdout.readline().strip()
        assert session and Path(session).is_dir(), session
        before = session_processes(session)
        assert before, "the driver's Ray has no processes?"
        driver.send_signal(signal.SIGKILL)
        driver.wait(30)
        # the next platform driver starts (and reaps the dead one's session), then stops
        assert connect_ray(None, 1, False) is True
        ray.shutdown()
        left = session_processes(session)
        assert not left, f"processes of the killed driver's Ray survive: {left}"
        assert not _sockets_of(before), "a socket of the killed driver's Ray still listens"
        assert not list(sessions_dir().glob(f"{Path(session).name}.json"))
    finally:
        if driver.poll() is None:
            driver.kill()
        for pid in left:  # leave nothing behind even when the assertion failed
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


TOKEN_DRIVER = textwrap.dedent("""
    import os, ray
    os.umask(0o022)  # the usual umask: Ray alone would write the token 0644
    from study.local_ray import connect_ray
    assert connect_ray(None, 1, False)
    ray.shutdown()
""")


def test_the_ray_auth_token_is_owner_only(own_cache):
    home = own_cache / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "PYTHONPATH": str(ROOT)}
    env.pop("RAY_AUTH_MODE", None)
    res = subprocess.run([sys.executable, "-c", TOKEN_DRIVER], env=env, capture_output=True,
                         text=True, timeout=180)
    assert res.returncode == 0, res.stderr
    token = home / ".ray" / "auth_token"
    if not token.exists():
        pytest.skip("this Ray wrote no auth token (token authentication off)")
    assert token.stat().st_mode & 0o777 == 0o600
    assert (home / ".ray").stat().st_mode & 0o777 == 0o700
