"""Clean stops and no hangs under faults (issue 19): damaged checkpoints and tracking
stores refused in one line, a full disk, the Ray token's permissions, and inputs that used
to hang for minutes answered within seconds (each bounded by a timeout here)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def _cli(*args: str, cwd: Path, timeout: float, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "kitchen-study"), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **env})


def _one_error_line(res: subprocess.CompletedProcess) -> str:
    assert res.returncode == 2, res.stdout + res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    lines = [ln for ln in res.stderr.strip().splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, res.stderr
    return lines[0]


# -- checkpoints: a checksum verified on load, finite state ------------------------------------

torch = pytest.importorskip("torch")


def _checkpoint(path: Path) -> Path:
    from trainables.job import Checkpoint, write_checkpoint

    meta = {"config": {"hidden": 4}, "iteration": 3}
    state = {"model": {"w": torch.linspace(0.1, 0.9, 4096)},
             "optimizer": {"state": {0: {"exp_avg": torch.full((64,), 0.5)}},
                           "param_groups": [{"lr": 0.01}]}}
    return write_checkpoint(path, Checkpoint("test/1", meta, state))


def test_a_checkpoint_round_trips_with_its_checksum(tmp_path):
    from trainables.job import read_checkpoint

    c = read_checkpoint(_checkpoint(tmp_path / "c.pt"), "test/1")
    assert "checksum" not in c.state and torch.equal(c.state["model"]["w"],
                                                     torch.linspace(0.1, 0.9, 4096))


def test_flipped_bytes_in_a_checkpoint_are_refused(tmp_path):
    from trainables.job import CheckpointError, read_checkpoint

    path = _checkpoint(tmp_path / "c.pt")
    raw = bytearray(path.read_bytes())
    # a weight's bytes, found in the file: flip one bit of its float32
    at = raw.index(torch.linspace(0.1, 0.9, 4096)[2000:2001].numpy().tobytes())
    raw[at + 1] ^= 0x10
    path.write_bytes(raw)
    with pytest.raises(CheckpointError) as e:
        read_checkpoint(path, "test/1")
    msg = str(e.value)
    assert msg.startswith(f"{path}: ") and "\n" not in msg
    assert "do not match the checksum" in msg  # torch.load itself checks no CRC


def test_nan_in_optimizer_state_is_refused(tmp_path):
    from trainables.job import Checkpoint, CheckpointError, read_checkpoint, write_checkpoint

    state = {"model": {"w": torch.ones(3)},
             "optimizer": {"state": {0: {"exp_avg_sq": torch.tensor([1.0, float("nan")])}}}}
    path = write_checkpoint(tmp_path / "c.pt",
                            Checkpoint("test/1", {"config": {}, "iteration": 1}, state))
    with pytest.raises(CheckpointError, match=r"non-finite values .* in optimizer\.state\.0"
                                              r"\.exp_avg_sq"):
        read_checkpoint(path, "test/1")
