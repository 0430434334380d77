"""The study runner on a real local Ray with a real MLflow (SQLite) store.

Default run: one small study end to end (every task kind, a search with ASHA), the MLflow
layout it leaves, idempotent re-run, and a permanent trial failure. Slow: a crash that
recovers from its checkpoint with results equal to a clean run's, and a driver killed
mid-study followed by ``resume``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from study.plan import make_plan
from study.spec_data import open_study
from study.tracking import MlflowRunLogger
from tests.study_data import A, B, edge_and_search_spec, link_data

ray = pytest.importorskip("ray")

ROOT = Path(__file__).resolve().parents[1]


def _runs(uri: str, name: str):
    return MlflowRunLogger(uri).study_runs(name)


def _tasks(runs):
    return [r for r in runs if r.role == "task"]


def _watch(proc, uri: str, name: str, folder: Path, seconds: float = 240, every: float = 2.0):
    """Every ``every`` s while the driver ``proc`` runs: the study's task runs, once its store
    in ``folder`` answers (a store mid-creation is skipped, not an error)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(every)
        if not (folder / "mlflow.db").exists():
            continue
        try:
            tasks = _tasks(_runs(uri, name))
        except Exception:
            continue
        yield tasks


def test_study_end_to_end(kitchens_root, local_ray, capsys):
    from study.runner import run_study

    spec_path = edge_and_search_spec(kitchens_root)
    loaded = open_study(spec_path)
    out = run_study(loaded)
    assert out.status == "FINISHED", out
    plan = make_plan(loaded.spec)
    assert sorted(out.finished) == sorted(plan.ids) and not out.failed
    printed = capsys.readouterr().out
    assert "[  6/6]" in printed and "FINISHED" in printed

    uri = loaded.spec.tracking_uri
    runs = _runs(uri, "rt")
    assert not [r for r in runs if r.status == "RUNNING"]
    tasks = _tasks(runs)
    by_task = {r.tags["ks.task_id"]: r for r in tasks}
    # exactly one FINISHED run per planned task
    assert sorted(by_task) == sorted(plan.ids) and len(tasks) == len(plan)
    assert all(r.status == "FINISHED" for r in tasks)
    parent = next(r for r in runs if r.role == "study")
    assert parent.status == "FINISHED" and parent.tags["ks.study_hash"] == loaded.hash

    pre = by_task[f"pretrain:{A}.split1:s0"]
    ft = by_task[f"finetune:{A}.split1>{B}.split1:concat:s0"]
    joint = by_task[f"joint:{A}.split1>{B}.split1:concat:5-3:s0"]
    base = by_task[f"baseline:{B}.split1:s0"]
    for r, kind, mode in ((pre, "pretrain", "none"), (ft, "finetune", "transfer"),
                          (joint, "joint", "joint"), (base, "baseline", "none")):
        assert r.tags["ks.kind"] == kind and r.tags["ks.mode"] == mode
        assert r.parent_run_id == parent.run_id
        assert r.tags["ks.node"] and r.tags["ks.study"] == "rt"
        assert r.metrics["iteration"] == 30 and 0 <= r.metrics["frame_acc"] <= 100
        assert {"edit", "f1_10", "f1_25", "f1_50", "input_acc", "loss"} <= set(r.metrics)
    assert ft.tags["ks.source"] == A and ft.tags["ks.target"] == B
    # the curve: frame_acc's history at the eval points and the end, once each (no flat
    # curve.* metrics)
    logger = MlflowRunLogger(uri)
    curve = logger.metric_histories([ft.run_id], "frame_acc")[ft.run_id]
    assert [it for it, _ in curve] == [10, 20, 30] and curve[-1][1] == ft.metrics["frame_acc"]
    assert not [k for k in ft.metrics if k.startswith("curve")]
    # the fine-tune read the pre-train's checkpoint artifact, and started after it was stored
    art = logger.client.get_run(pre.run_id).info.artifact_uri
    assert ft.params["init_checkpoint"] == f"{art}/checkpoint/lstm.pt"
    local = logger.download_artifact(pre.run_id, "checkpoint/lstm.pt", kitchens_root / "dl")
    assert local.stat().st_size > 0
    assert ft.start_time >= pre.end_time
    # params are the task config, without the runner's private key
    assert ft.params["mode"] == "transfer" and "_study" not in ft.params
    assert ft.params["target_path"] == str(kitchens_root / "data" / f"{B}.parquet")

    # the search: one task run, its trials nested under it, the best one recorded
    search = by_task[f"search:{B}.split1:small:s0"]
    trials = [r for r in runs if r.role == "trial"]
    assert len(trials) == 2 and all(t.parent_run_id == search.run_id for t in trials)
    assert all(t.status == "FINISHED" for t in trials)
    # the validation protocol (the default): the search maximises the validation part's
    # frame_acc, never the test videos'
    assert search.tags["ks.search_metric"] == "val.frame_acc"
    best = max(t.metrics["val.frame_acc"] for t in trials if "ks.early_stopped" not in t.tags)
    assert search.metrics["best.val.frame_acc"] == pytest.approx(best)
    assert "history" in search.tags["ks.best_params"]
    assert all(int(t.params["history"]) <= 128 for t in trials)

    # what the MLflow UI shows of the result (issue 19): the study run names the pair
    # `kitchen-study best` ranks first, with its mean gain, and holds the transfer heatmap
    from study.query import load_study
    from study.run_view import BEST_PAIR_TAG, HEATMAP_ARTIFACT, pair_label
    from study.status import study_status, summary_text

    top = load_study("rt", uri).best_transfer_pairs(k=None).iloc[0]
    assert parent.tags[BEST_PAIR_TAG] == pair_label(top)
    assert parent.metrics["best.gain.frame_acc"] == pytest.approx(top["gain"])
    assert parent.metrics["best_gain.frame_acc"] == pytest.approx(top["gain"])
    assert parent.metrics["best.seeds"] == 1 and "best.gain_ci_low.frame_acc" not in \
        parent.metrics  # one seed: no interval, and the description says so
    assert "one seed: no interval" in parent.tags["mlflow.note.content"]
    assert parent.tags["mlflow.runName"].startswith(f"study rt · best {A}→{B} concat ")
    arts = logger.client.list_artifacts(parent.run_id, "plots")
    assert HEATMAP_ARTIFACT in [a.path for a in arts]
    # the driver's last line counts the tasks as `kitchen-study status` does
    assert ("FINISHED in" in printed and f"tasks: {summary_text(study_status(loaded))} "
            "(as `kitchen-study status` counts them)" in printed)
    # each task's model (all named `model`) is told apart by its tags, and carries its
    # accuracy and gain (MLflow 3 logged-model metrics)
    from study.models import logged_model_id

    model = logger.client.get_logged_model(logged_model_id(logger.client, ft.run_id))
    assert model.name == "model" and model.model_type == "lstm"
    assert model.tags["ks.task_id"] == ft.tags["ks.task_id"]
    assert model.tags["ks.run_name"] == ft.tags["mlflow.runName"]
    assert f"runs:/{ft.run_id}/model" in model.tags["mlflow.note.content"]  # its description
    on_model = {m.key: m.value for m in model.metrics}
    assert on_model["frame_acc"] == ft.metrics["frame_acc"]
    assert on_model["gain.frame_acc"] == ft.metrics["gain.frame_acc"]
    assert logger.client.get_run(ft.run_id).info.status == "FINISHED"

    # idempotent: running again skips every finished task and adds no task run
    again = run_study(loaded)
    assert again.status == "FINISHED" and again.finished == []
    assert sorted(again.skipped_done) == sorted(plan.ids)
    assert len(_tasks(_runs(uri, "rt"))) == len(plan)


def test_permanent_failure_is_recorded(kitchens_root, local_ray):
    from study.runner import run_study

    spec_path = edge_and_search_spec(kitchens_root, name="rtfail", max_failures=0, search=None,
                                     experiments={"edges": [{"source": A, "target": B}]})
    loaded = open_study(spec_path)
    pid = f"pretrain:{A}.split1:s0"
    out = run_study(loaded, inject_faults={pid: 10}, progress=False)
    assert out.status == "FAILED"
    assert set(out.failed) == {pid} and "injected fault" in out.failed[pid]
    ft = f"finetune:{A}.split1>{B}.split1:concat:s0"
    assert ft in out.not_run and "did not finish" in out.not_run[ft]
    assert out.finished == [f"baseline:{B}.split1:s0"]
    runs = _runs(loaded.spec.tracking_uri, "rtfail")
    assert not [r for r in runs if r.status == "RUNNING"]
    failed = [r for r in _tasks(runs) if r.status == "FAILED"]
    assert len(failed) == 1 and "injected fault at iteration 10" in failed[0].tags["ks.error"]
    parent = next(r for r in runs if r.role == "study")
    assert parent.status == "FAILED" and "1 task(s) failed" in parent.tags["ks.error"]


def _final_metrics(uri: str, name: str) -> dict[str, dict[str, float]]:
    keep = ("frame_acc", "edit", "f1_10", "f1_25", "f1_50", "input_acc", "loss")
    return {r.tags["ks.task_id"]: {k: r.metrics[k] for k in keep if k in r.metrics}
            for r in _tasks(_runs(uri, name)) if r.status == "FINISHED"}


@pytest.mark.slow
def test_crash_once_recovers_from_checkpoint_with_equal_results(tmp_path, kitchens_root,
                                                                 local_ray):
    from study.runner import run_study

    clean_root, crash_root = tmp_path / "clean", tmp_path / "crash"
    for r in (clean_root, crash_root):
        link_data(kitchens_root, r)
    over = {"search": None, "experiments": {"edges": [{"source": A, "target": B}]}}
    clean = open_study(edge_and_search_spec(clean_root, name="rec", **over))
    crash = open_study(edge_and_search_spec(crash_root, name="rec", **over))
    assert clean.hash == crash.hash
    assert run_study(clean, progress=False).status == "FINISHED"
    pid, ft = f"pretrain:{A}.split1:s0", f"finetune:{A}.split1>{B}.split1:concat:s0"
    out = run_study(crash, progress=False, inject_faults={pid: 20, ft: 10})
    assert out.status == "FINISHED", out
    runs = _tasks(_runs(crash.spec.tracking_uri, "rec"))
    retried = {r.tags["ks.task_id"]: r for r in runs if "ks.retries" in r.tags}
    assert set(retried) == {pid, ft}
    assert "injected fault" in retried[pid].tags["ks.last_error"]
    # one run per task: the retry continued the same run from its last checkpoint
    assert len(runs) == len(make_plan(crash.spec))
    assert _final_metrics(crash.spec.tracking_uri, "rec") == _final_metrics(
        clean.spec.tracking_uri, "rec")


def _kitchen_study(*args: str, **kw) -> subprocess.Popen:
    exe = Path(sys.executable).with_name("kitchen-study")
    return subprocess.Popen([str(exe), *args], cwd=kw.pop("cwd"), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True, **kw)


@pytest.mark.slow
def test_driver_killed_then_resume(tmp_path, kitchens_root):
    link_data(kitchens_root, tmp_path)
    # longer tasks so that the kill lands mid-study
    spec_path = edge_and_search_spec(tmp_path, name="kill", search=None, experiments={
        "seeds": [0, 1], "iterations": 300, "pretrain_iterations": 300, "eval_at": [100]},
        iterations_per_step=50)
    loaded = open_study(spec_path)
    plan = make_plan(loaded.spec)
    uri = loaded.spec.tracking_uri
    proc = _kitchen_study("run", str(spec_path), "--num-cpus", "2", cwd=tmp_path)
    finished_before: dict[str, str] = {}
    try:
        for tasks in _watch(proc, uri, "kill", tmp_path, every=0.5):
            fin = {r.tags["ks.task_id"]: r.run_id for r in tasks if r.status == "FINISHED"}
            # a run at most half-way (of 300 iterations): it cannot end before the kill lands
            running = [r for r in tasks if r.status == "RUNNING"
                       and r.metrics.get("iteration", 0) <= 150]
            if len(fin) >= 2 and running:
                finished_before = fin
                break
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # the driver and the Ray it started
        proc.wait(30)
    assert finished_before, "the study never reached a mid-point: " + (proc.stdout.read() or "")
    tasks = _tasks(_runs(uri, "kill"))
    assert any(r.status == "RUNNING" for r in tasks)  # left behind by the killed driver
    # another task may have ended between the last look and the kill: what the store holds
    # now is what the resume must keep
    finished_at_kill = {r.tags["ks.task_id"]: r.run_id for r in tasks if r.status == "FINISHED"}
    assert finished_before.items() <= finished_at_kill.items()
    finished_before = finished_at_kill

    res = subprocess.run([str(Path(sys.executable).with_name("kitchen-study")), "resume",
                          str(spec_path), "--num-cpus", "2"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=400)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"{len(finished_before)} already finished" in res.stdout
    runs = _runs(uri, "kill")
    assert not [r for r in runs if r.status == "RUNNING"]
    tasks = _tasks(runs)
    fin = {}
    for r in tasks:
        if r.status == "FINISHED":
            assert r.tags["ks.task_id"] not in fin, "a task finished twice"
            fin[r.tags["ks.task_id"]] = r.run_id
    assert sorted(fin) == sorted(plan.ids)
    # tasks finished before the kill were not run again
    assert all(fin[t] == rid for t, rid in finished_before.items())
    killed = [r for r in tasks if r.status == "KILLED"]
    assert killed and all("driver stopped" in r.tags["ks.error"] for r in killed)
    assert not {r.tags["ks.task_id"] for r in killed} & set(finished_before)


@pytest.mark.slow
def test_ctrl_c_every_run_says_why_and_the_counts_agree_with_status(tmp_path, kitchens_root):
    """Ctrl-C in the terminal (SIGINT to the driver's process group, as a shell sends it)
    mid-study: the driver exits 130; its last line counts the tasks as `kitchen-study
    status` does; every run it did not finish is KILLED (none FAILED: a finished task stays
    finished even when the interrupt lands while its model is logged) with a reason that says
    what happened and where."""
    link_data(kitchens_root, tmp_path)
    spec_path = edge_and_search_spec(tmp_path, name="sigint", search=None, experiments={
        "seeds": [0, 1], "iterations": 1000, "pretrain_iterations": 1000, "eval_at": [500]},
        iterations_per_step=100)
    uri = open_study(spec_path).spec.tracking_uri
    # as an interactive shell starts a foreground job: SIGINT at its default. Under a
    # non-interactive shell's `&` (how CI may start `make test`) every descendant inherits
    # SIGINT ignored, and the driver rightly keeps ignoring it, as `nohup ... &` asks
    proc = _kitchen_study("run", str(spec_path), "--num-cpus", "2", cwd=tmp_path,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    interrupted = False
    try:
        for tasks in _watch(proc, uri, "sigint", tmp_path, every=0.5):
            # a run still at most half-way (of 1,000 iterations, reported every 100): two
            # tasks that start together end together, so "the other one is running" alone
            # let the interrupt land after its last iteration on a loaded machine (then it
            # rightly stays FINISHED and nothing is left to kill)
            running = [r for r in tasks if r.status == "RUNNING"
                       and 0 < r.metrics.get("iteration", 0) <= 500]
            if any(r.status == "FINISHED" for r in tasks) and running:
                os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the whole foreground group
                interrupted = True
                break
        out, _ = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
    assert interrupted, "the study never reached a mid-point: " + (out or "")
    assert proc.returncode == 130, out
    last = next((ln for ln in out.splitlines() if ln.startswith("study sigint: KILLED in ")),
                None)
    assert last, out
    exe = str(Path(sys.executable).with_name("kitchen-study"))
    status = subprocess.run([exe, "status", str(spec_path)], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120)
    assert status.returncode == 0, status.stdout + status.stderr
    counts = status.stdout.splitlines()[0].split(": ", 1)[1]
    assert f"tasks: {counts} (as `kitchen-study status` counts them)" in last, (last, counts)
    assert "killed" in counts and "failed" not in counts

    runs = _runs(uri, "sigint")
    assert not [r for r in runs if r.status == "RUNNING"]
    ended = [r for r in _tasks(runs) if r.status != "FINISHED"]
    assert ended and all(r.status == "KILLED" for r in ended), [r.status for r in ended]
    for r in ended:
        why = r.tags["ks.error"]
        assert why.startswith("interrupted by the user (SIGINT, Ctrl-C) "), why
        # where it stopped: the iteration it last reported, or that it reported none
        it = r.metrics.get("iteration")
        assert (f"at iteration {int(it)}" in why if it is not None
                else "before its first result" in why), (why, it)
    parent = next(r for r in runs if r.role == "study")
    assert parent.status == "KILLED"
    assert parent.tags["ks.error"].startswith("interrupted by the user (SIGINT, Ctrl-C)")
