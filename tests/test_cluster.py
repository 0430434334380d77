"""A real two-node Ray cluster on loopback: ``ray start --head`` + ``ray start --address``,
a study submitted as docs/cluster.md says (``ray job submit --working-dir PROJECT --
kitchen-study run SPEC --data-root PROJECT --tracking-uri sqlite:////ABS``); without
``--data-root`` (the data is git-ignored, so not uploaded) or with the default relative
SQLite store it is refused before any trial; tasks must run on both nodes and every run must
be in the tracking store afterwards. The cluster runs in its own temp dir and ports
(never the default ones, so other Ray users on the machine are untouched) and is always
stopped afterwards, by the ids of the processes this test started.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from study.plan import make_plan
from study.spec_data import open_study
from study.tracking import MlflowRunLogger
from tests.study_data import write_kitchens

pytestmark = [pytest.mark.slow, pytest.mark.timeout(540)]

BIN = Path(sys.executable).parent
A, B = "synth_breakfast", "synth_salads"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node_ports(worker_base: int) -> list[str]:
    return [
        "--node-manager-port", str(_free_port()),
        "--object-manager-port", str(_free_port()),
        "--dashboard-agent-listen-port", str(_free_port()),
        "--dashboard-agent-grpc-port", str(_free_port()),
        "--runtime-env-agent-port", str(_free_port()),
        "--metrics-export-port", str(_free_port()),
        "--min-worker-port", str(worker_base),
        "--max-worker-port", str(worker_base + 99),
    ]


def _mine(tag: str) -> list[int]:
    """Pids of processes whose command line names this test's temp dir."""
    pids = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            with contextlib.suppress(OSError):
                if tag in (p / "cmdline").read_bytes().decode(errors="replace"):
                    pids.append(int(p.name))
    return [p for p in pids if p != os.getpid()]


class LoopbackCluster:
    """Head + one worker node, each ``ray start --block`` (stopping it stops its node)."""

    def __init__(self, temp_dir: Path):
        self.temp_dir = temp_dir
        self.gcs_port = _free_port()
        self.dashboard_port = _free_port()
        self.procs: list[subprocess.Popen] = []
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
        self.env["PATH"] = f"{BIN}{os.pathsep}{self.env.get('PATH', '')}"
        self.env["RAY_USAGE_STATS_ENABLED"] = "0"
        # Ray 2.5x+ token authentication: every process of the test (ray start, ray status,
        # ray job submit, the job's driver) uses the token in ~/.ray/auth_token, created
        # by the head when missing
        self.env["RAY_AUTH_MODE"] = "token"

    def _start(self, args: list[str], log: str) -> None:
        out = open(self.temp_dir / log, "w")  # noqa: SIM115 - closed with the process
        self.procs.append(subprocess.Popen(
            [str(BIN / "ray"), "start", "--block", "--num-cpus", "1",
             "--node-ip-address", "127.0.0.1", *args],
            stdout=out, stderr=subprocess.STDOUT, env=self.env, start_new_session=True))

    def start(self) -> None:
        # worker ports below Linux's ephemeral range (where _free_port's come from) and
        # above Ray's default worker range (10002-19999) that other local Rays use
        base = random.randrange(20000, 32000, 200)
        self._start(["--head", "--port", str(self.gcs_port), "--temp-dir", str(self.temp_dir),
                     "--include-dashboard", "true", "--dashboard-host", "127.0.0.1",
                     "--dashboard-port", str(self.dashboard_port),
                     "--ray-client-server-port", str(_free_port()), *_node_ports(base)],
                    "head.log")
        self._wait_for_nodes(1)
        self._start(["--address", f"127.0.0.1:{self.gcs_port}", *_node_ports(base + 100)],
                    "worker.log")
        self._wait_for_nodes(2)

    def _wait_for_nodes(self, n: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for p in self.procs:
                if p.poll() is not None:
                    raise RuntimeError(f"ray start exited {p.returncode}: {self.logs()}")
            res = subprocess.run([str(BIN / "ray"), "status", "--address",
                                  f"127.0.0.1:{self.gcs_port}"], capture_output=True,
                                 text=True, env=self.env, timeout=60)
            if res.returncode == 0 and res.stdout.count(" node_") >= n:
                return
            time.sleep(2)
        raise TimeoutError(f"{n} node(s) not up in {timeout}s: {self.logs()}")

    def logs(self) -> str:
        return "\n".join(f"--- {f.name}\n{f.read_text()[-3000:]}"
                         for f in sorted(self.temp_dir.glob("*.log")))

    def stop(self) -> None:
        for p in reversed(self.procs):  # worker first, then the head
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait(10)
        # anything of this cluster still alive (e.g. a worker that lost its raylet)
        for pid in _mine(str(self.temp_dir)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_study_on_a_two_node_cluster_via_job_submission(tmp_path):
    # short socket paths: Ray's unix sockets live under the temp dir
    tdir = Path(tempfile.mkdtemp(prefix="ksrc", dir="/tmp"))
    cluster = LoopbackCluster(tdir)
    try:
        # the project folder as a user has it: the spec beside git-ignored prepared data
        project = tmp_path / "project"
        write_kitchens(project / "data", kitchens=2)
        (project / ".gitignore").write_text("data/\n")
        spec = {
            "name": "cluster",
            "datasets": {A: {"path": f"data/{A}.parquet", "splits": [1]},
                         B: {"path": f"data/{B}.parquet", "splits": [1]}},
            "model": {"history": 16, "hidden": 8, "batch_size": 4},
            "experiments": {"seeds": [0, 1], "iterations": 40, "pretrain_iterations": 40,
                            "eval_at": [20], "all_pairs": True},
            "iterations_per_step": 20,
            # a fresh actor per trial: with trials this short, a reused warm actor on the
            # head would take every trial before the second node's first actor is up
            "reuse_actors": False,
            "storage_path": str(tmp_path / "ray_results"),
        }  # tracking_uri: the default sqlite:///mlflow.db, relative (refused in a job)
        spec_path = project / "cluster.yaml"
        spec_path.write_text(yaml.safe_dump(spec))
        store = f"sqlite:///{tmp_path / 'mlflow.db'}"
        cluster.start()

        def submit(*args: str) -> subprocess.CompletedProcess:
            # as in docs/cluster.md: the project as the job's working dir, paths relative
            return subprocess.run(
                [str(BIN / "ray"), "job", "submit", "--address",
                 f"http://127.0.0.1:{cluster.dashboard_port}", "--working-dir", str(project),
                 "--", str(BIN / "kitchen-study"), "run", "cluster.yaml", *args],
                capture_output=True, text=True, env=cluster.env, timeout=360)

        # without --data-root the uploaded copy has no data (git-ignored): refused, saying
        # what to pass, before any trial
        job = submit("--tracking-uri", store)
        assert job.returncode != 0 and "--data-root" in job.stdout + job.stderr, job.stdout
        assert not (tmp_path / "mlflow.db").exists()
        # without --tracking-uri the default SQLite file would vanish with the job's dir
        job = submit("--data-root", str(project))
        assert job.returncode != 0 and "--tracking-uri" in job.stdout + job.stderr, job.stdout
        # a package of its own: Ray cleans up the refused jobs' copy of the same package
        # asynchronously, which on this one-host cluster is also this job's working dir
        (project / "attempt.txt").write_text("3\n")
        job = submit("--data-root", str(project), "--tracking-uri", store)
        assert job.returncode == 0, job.stdout[-5000:] + job.stderr[-3000:] + cluster.logs()
        assert "study cluster" in job.stdout and "FINISHED" in job.stdout

        loaded = open_study(spec_path)
        plan = make_plan(loaded.spec, loaded.cards)
        runs = MlflowRunLogger(store).study_runs("cluster")
        tasks = [r for r in runs if r.role == "task"]
        assert sorted(r.tags["ks.task_id"] for r in tasks) == sorted(plan.ids)
        assert all(r.status == "FINISHED" for r in runs)
        assert all("frame_acc" in r.metrics for r in tasks)
        nodes = {r.tags["ks.node"] for r in tasks}
        assert len(nodes) == 2, f"all tasks ran on {nodes}"
    finally:
        cluster.stop()
        assert not _mine(str(tdir)), "processes of the test cluster are still running"
        shutil.rmtree(tdir, ignore_errors=True)
