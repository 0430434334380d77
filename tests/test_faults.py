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


# -- a damaged tracking store is refused by every command that opens it ------------------------


def _damage_a_page(db: Path) -> None:
    import random

    raw = bytearray(db.read_bytes())
    page = len(raw) // 4096 // 2  # a page in the middle: some table's or index's b-tree
    rng = random.Random(0)
    raw[page * 4096:(page + 1) * 4096] = bytes(rng.randrange(256) for _ in range(4096))
    db.write_bytes(raw)


def test_a_store_that_fails_the_integrity_check_is_refused(tmp_path, kitchens_root):
    from data_prep.errors import DataError
    from study.lease import check_store, init_store
    from tests.study_data import link_data, small_spec, write_spec

    db = tmp_path / "mlflow.db"
    init_store(f"sqlite:///{db}")
    check_store(f"sqlite:///{db}")  # sound: passes
    _damage_a_page(db)
    with sqlite3.connect(db) as con:  # the damage is real: SQLite's own check says so
        assert con.execute("PRAGMA quick_check").fetchone()[0] != "ok"
    with pytest.raises(DataError, match="fails SQLite's integrity check") as e:
        check_store(f"sqlite:///{db}")
    assert "\n" not in str(e.value) and str(db) in str(e.value)
    link_data(kitchens_root, tmp_path)
    spec = write_spec(tmp_path, small_spec("damaged", store=tmp_path))
    before = db.read_bytes()
    for command in (["status"], ["best"], ["report", "--out", str(tmp_path / "r")],
                    ["run", "--num-cpus", "1"],
                    ["resume", "--num-cpus", "1"]):
        line = _one_error_line(_cli(*command, str(spec), cwd=tmp_path, timeout=120))
        assert "fails SQLite's integrity check" in line and str(db) in line, (command, line)
    assert db.read_bytes() == before  # nothing wrote into it


# -- no hangs: each of these used to wait for minutes without a word ---------------------------


def _spec(tmp_path: Path, kitchens_root: Path, **over) -> Path:
    from tests.study_data import link_data, small_spec, write_spec

    link_data(kitchens_root, tmp_path)
    return write_spec(tmp_path, small_spec("hang", store=tmp_path, **over))


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_address_where_no_ray_listens_is_one_line_in_seconds(tmp_path, kitchens_root):
    spec = _spec(tmp_path, kitchens_root)
    t0 = time.monotonic()
    res = _cli("run", str(spec), "--address", f"127.0.0.1:{_free_port()}", cwd=tmp_path,
               timeout=60)
    line = _one_error_line(res)
    assert "no Ray cluster answers at 127.0.0.1:" in line
    assert time.monotonic() - t0 < 60
    assert not (tmp_path / "mlflow.db").exists()  # refused before anything was written


def test_zero_cpus_is_one_line_before_anything_starts(tmp_path, kitchens_root):
    spec = _spec(tmp_path, kitchens_root)
    line = _one_error_line(_cli("run", str(spec), "--num-cpus", "0", cwd=tmp_path,
                                timeout=60))
    assert "--num-cpus" in line and "at least 1" in line
    assert not (tmp_path / "mlflow.db").exists()


def test_zero_cpus_through_the_api_is_refused_too(tmp_path, kitchens_root):
    from study.runner import run_study
    from study.spec import SpecError
    from study.spec_data import open_study

    loaded = open_study(_spec(tmp_path, kitchens_root))
    with pytest.raises(SpecError, match="a local Ray needs at least 1 CPU"):
        run_study(loaded, num_cpus=0, progress=False)
    assert not (tmp_path / "mlflow.db").exists()


def _has_gpu() -> bool:
    import shutil

    return torch.cuda.is_available() or shutil.which("nvidia-smi") is not None


@pytest.mark.skipif(_has_gpu(), reason="this machine has a GPU: a GPU trial would run")
def test_a_gpu_trial_on_a_machine_without_one_is_one_line(tmp_path, kitchens_root):
    spec = _spec(tmp_path, kitchens_root, resources={"cpu": 1, "gpu": 1})
    res = _cli("run", str(spec), "--num-cpus", "1", cwd=tmp_path, timeout=240)
    line = _one_error_line(res)
    assert "resources.gpu: 1 GPUs per trial, but the largest Ray node has 0" in line
    from study.tracking import MlflowRunLogger

    runs = MlflowRunLogger(f"sqlite:///{tmp_path / 'mlflow.db'}").study_runs("hang")
    assert not [r for r in runs if r.status == "RUNNING"]  # the study run ended, not left


def test_prepare_from_a_fifo_nobody_writes_to_is_one_line(tmp_path):
    from data_prep.readers import FIFO_WAIT_S

    fifo = tmp_path / "annotations.csv"
    os.mkfifo(fifo)
    t0 = time.monotonic()
    res = _cli("prepare", "mpii", "--csv", str(fifo), "--out", str(tmp_path / "m.parquet"),
               cwd=tmp_path, timeout=60)
    line = _one_error_line(res)
    assert line == (f"error: {fifo}: a FIFO that nothing wrote to within "
                    f"{FIFO_WAIT_S:.0f}s")
    assert time.monotonic() - t0 < 60
    assert sorted(p.name for p in tmp_path.iterdir()) == ["annotations.csv"]


def test_a_fifo_with_a_writer_is_read(tmp_path):
    from data_prep.readers import read_bytes

    fifo = tmp_path / "a.csv"
    os.mkfifo(fifo)
    writer = subprocess.Popen(["sh", "-c", f"sleep 1; printf 'a,b\\n' > '{fifo}'"])
    try:
        assert read_bytes(fifo) == b"a,b\n"
    finally:
        writer.wait(30)
