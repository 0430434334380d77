"""bench/gpu_check.py (issue 18): the prepared GPU check cannot rot.

Its ``--smoke`` mode runs every step's real code (trainer, packs, profiles, projection, CNN,
TCN, a real study under a local Ray with a SQLite MLflow store) at tiny shapes, in
subprocesses, on whatever this machine has; here it must end with every step ``ok`` or
``skipped`` with a reason, and write the JSON and the Markdown section. On a machine
without CUDA the CUDA test modules run and skip cleanly (the ``cuda_tests`` step records
pytest's counts). The figures of a smoke run mean nothing and are not asserted on, only
that they were measured.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_check.py"
STEPS = ["env", "cuda_tests", "lstm_trial", "packing", "projection", "cnn", "tcn", "study"]


def _run(*args: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _log(out: Path, step: str) -> str:
    path = out / "logs" / f"{step}.log"
    return path.read_text()[-3000:] if path.exists() else "(no log)"


@pytest.mark.timeout(620)
def test_smoke_runs_every_step_and_writes_json_and_markdown(tmp_path):
    # the limits are safety nets for a heavily loaded machine, not a timed assert: the smoke
    # run takes about 2 minutes on the 2-core CPU (docs/benchmarks.md, GPU check)
    out = tmp_path / "out"
    proc = _run("--smoke", "--out", str(out), timeout=600)
    report = json.loads((out / "gpu_check.json").read_text())
    md = (out / "gpu_check.md").read_text()
    steps = report["steps"]
    assert list(steps) == STEPS
    for name, s in steps.items():
        assert s["status"] in ("ok", "skipped"), (name, s, _log(out, name))
        if s["status"] == "skipped":
            assert s["reason"], name
        assert f"| {name} | {s['status']} |" in md
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert report["smoke"] and md.startswith("## GPU check") and "Smoke run" in md

    env = steps["env"]["result"]
    assert env["torch"] and env["cuda_available"] == _cuda()

    cuda = steps["cuda_tests"]
    assert "tests/test_packed_lstm_cuda.py" in cuda["result"]["modules"]
    counts = cuda["result"]["counts"]
    assert counts["tests"] > 0 and counts["failures"] == counts["errors"] == 0
    if not _cuda():  # they ran, and every one of them skipped
        assert cuda["status"] == "skipped" and counts["skipped"] == counts["tests"]
        assert "no CUDA device" in cuda["reason"]

    trial = steps["lstm_trial"]["result"]
    assert trial["trainer_fps"] > 0 and trial["bare_fps"] > 0 and trial["repeats"] >= 3
    # a smoke run always profiles, so the profile code cannot rot either
    assert (out / trial["profile"]["file"]).read_text().strip()

    rows = steps["packing"]["result"]["rows"]
    assert [(r["variant"], r["k"]) for r in rows] == [
        (v, k) for k in (1, 2, 3) for v in ("exact", "fast")]
    for r in rows:
        assert r["packed_fps"] > 0 and r["sequential_fps"] > 0
        if r["variant"] == "exact":  # same seeds, same batches: the same training
            assert r["max_abs_dloss"] < 1e-4
    if not _cuda():  # the pack refuses its CUDA options on a CPU: dropped, with the reason
        fast = next(r for r in rows if r["variant"] == "fast")
        assert fast["pack_options"] == [] and all(fast["dropped_options"].values())

    proj = steps["projection"]["result"]
    assert len(proj["rows"]) == 1 + len(rows)  # the single trial, then every pack row
    assert proj["critical_iterations"] < proj["iterations"]
    for r in proj["rows"]:
        assert r["wall_s"] >= max(r["by_throughput_s"], r["by_critical_path_s"]) * 0.999

    cnn = steps["cnn"]["result"]["rows"]
    assert {(r["amp"], r["kind"]) for r in cnn} == {
        (a, k) for a in (False, True) for k in ("train", "inference")}

    tcn = steps["tcn"]
    has_registry = importlib.util.find_spec("trainables.temporal") is not None
    assert tcn["status"] == ("ok" if has_registry else "skipped"), tcn
    if has_registry:
        assert tcn["result"]["tcn_fps"] > 0

    study = steps["study"]["result"]
    assert study["outcome"]["status"] == "FINISHED" and study["one_run_per_task"]
    assert study["mlflow_task_runs"] == study["mlflow_finished"] == study["tasks"]
    assert study["packed_runs"] == study["tasks"]  # every task ran in a pack
    # Ray handed resources to the trials (sampled while the study ran); GPUs on a device
    assert study["ray_in_use"]["CPU"] > 0
    assert (study["ray_in_use"]["GPU"] > 0) == _cuda()


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if text in cmd:
                found.append(cmd)
    return found


def test_a_step_over_its_timeout_is_killed_and_the_others_kept(tmp_path):
    out = tmp_path / "out"
    proc = _run("--smoke", "--out", str(out), "--steps", "env,packing",
                "--timeout", "packing=1", timeout=180)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    report = json.loads((out / "gpu_check.json").read_text())
    assert report["steps"]["env"]["status"] == "ok"
    packing = report["steps"]["packing"]
    assert packing["status"] == "failed" and "timed out after 1 s" in packing["reason"]
    assert "| packing | failed |" in (out / "gpu_check.md").read_text()
    if os.path.isdir("/proc"):  # its process group is gone
        assert not _processes_mentioning(f"--step packing --out {out}")


@pytest.mark.parametrize("args, message", [
    (["--steps", "env,nope"], "unknown step 'nope'"),
    (["--repeats", "2"], "at least 3"),
    (["--timeout", "packing=soon"], "--timeout"),
    (["--write-doc"], "smoke numbers are not figures"),
])
def test_bad_arguments_one_line_exit_2_nothing_written(tmp_path, args, message):
    out = tmp_path / "out"
    proc = _run("--smoke", "--out", str(out), *args, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert not out.exists()


def test_the_full_check_refuses_a_machine_without_cuda(tmp_path):
    if _cuda():
        pytest.skip("this machine has CUDA: the full check would run")
    proc = _run("--out", str(tmp_path / "out"), timeout=60)
    assert proc.returncode == 2 and proc.stderr.startswith("error: no CUDA device here")
    assert not (tmp_path / "out").exists()


def _script(monkeypatch):
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "gpu_check", module)  # dataclasses look themselves up
    spec.loader.exec_module(module)
    return module


def test_write_doc_replaces_only_its_section(tmp_path, monkeypatch):
    gc = _script(monkeypatch)
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\n## A\n\na\n\n## GPU check (`bench/gpu_check.py`)\n\n"
                   "**Not measured (no GPU lent).**\n\n### sub\n\nold\n\n## Z\n\nz\n")
    monkeypatch.setattr(gc, "DOC", doc)
    report = {"smoke": False, "command": "python bench/gpu_check.py", "started": "now",
              "repeats": 3, "seconds": 1.0,
              "steps": {"env": {"status": "failed", "seconds": 0.0, "result": {},
                                "reason": "timed out after 30 s"}}}
    for _ in range(2):  # a second write replaces the first, it does not add another
        gc.write_doc(gc.render_md(report))
    text = doc.read_text()
    assert text.count("## GPU check") == 1 and "old" not in text and "Not measured" not in text
    assert "| env | failed | 0 | timed out after 30 s |" in text
    assert text.startswith("# Benchmarks\n\n## A\n\na\n\n## GPU check")
    assert text.endswith("## Z\n\nz\n")
