"""Scheduling overhead of a study: how much of the wall time do the trials spend training?

    .venv/bin/python bench/bench_study.py --task-seconds 10 --repeats 3 [--write-doc]

The study: two synthetic kitchens with splits 1 and 2, seeds 0 and 1, baselines on every
split and concat transfer both ways into every split: 8 baselines + 4 pre-trains + 8
fine-tunes = **20 tasks**, every task the same LSTM shape (history 128, hidden 64, batch
32) and the same number of iterations, calibrated so that one task trains for about
``--task-seconds`` seconds on one thread (the issue's target shape is 30 s tasks; the
default here is scaled down to 10 s so that a run takes minutes, not a quarter hour).
Each task reports 5 steps (checkpoint + MLflow log each) and is evaluated at the end.

Per repeat, the whole study runs through :func:`study.runner.run_study` on a fresh local
Ray with 2 CPUs (1 CPU per trial) and a fresh SQLite MLflow store. From MLflow afterwards:

* **training fraction** = Σ over tasks of pure training seconds (per step: iterations ×
  frames per iteration / the step's measured frames/s) / (2 slots × wall time);
  reported over the Tune window (first trial start → last trial end) and over the whole
  ``run_study`` call (Ray start, preflight, MLflow setup and shutdown included);
* **busy fraction** = Σ trial lifetimes (run start → end: setup, data loading,
  training, evaluation, checkpoints) / (2 × Tune window);
* **trial start latency**: for each trial end, the time until the next trial starts
  (a slot's turnover), median; and the time from the call to the first trial start.

Baseline, in the same run: the same 20 task configs trained directly with
``trainables.train_job.TrainRun`` in a pool of 2 processes (1 thread each; pre-trains first,
then the rest), no Ray, no MLflow: the wall time a perfect scheduler would approach.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODEL = {"history": 128, "hidden": 64, "batch_size": 32, "lr": 0.005}
STEPS = 5
SLOTS = 2


def _calibrate(data: Path, seconds: float) -> int:
    import torch

    from trainables.train_job import TrainRun

    torch.set_num_threads(1)
    cfg = {**MODEL, "target_path": str(data / "synth_breakfast.parquet"), "target_split": 1,
           "iterations": 60, "iterations_per_step": 60}
    run = TrainRun.create(cfg)
    run.trainer.train(5)  # warm-up
    t = time.perf_counter()
    run.trainer.train(40)
    per_it = (time.perf_counter() - t) / 40
    return max(STEPS, int(round(seconds / per_it / STEPS)) * STEPS)


def _spec(root: Path, data: Path, iterations: int, name: str) -> Path:
    d = {
        "name": name,
        "datasets": {n: {"path": str(data / f"{n}.parquet"), "splits": [1, 2]}
                     for n in ("synth_breakfast", "synth_salads")},
        "model": MODEL,
        "experiments": {"seeds": [0, 1], "iterations": iterations,
                        "pretrain_iterations": iterations, "all_pairs": True},
        "iterations_per_step": iterations // STEPS,
        "tracking_uri": f"sqlite:///{root / 'mlflow.db'}",
        "storage_path": str(root / "ray_results"),
    }
    p = root / "study.yaml"
    p.write_text(yaml.safe_dump(d))
    return p


def _train_seconds(history: list[tuple[int, float]], fps: list[tuple[int, float]]) -> float:
    """Pure training seconds of a run from its per-step iteration and frames/s metrics."""
    frames_per_it = MODEL["batch_size"] * MODEL["history"]
    fps_at = dict(fps)
    total, prev = 0.0, 0
    for step, _ in sorted(history):
        if fps_at.get(step):
            total += (step - prev) * frames_per_it / fps_at[step]
        prev = step
    return total


def _one_study(root: Path, data: Path, iterations: int, name: str) -> dict:
    from study.runner import run_study
    from study.spec_data import open_study
    from study.tracking import MlflowRunLogger

    loaded = open_study(_spec(root, data, iterations, name))
    t0 = time.time()
    out = run_study(loaded, num_cpus=SLOTS, progress=False)
    call = time.time() - t0
    assert out.status == "FINISHED" and len(out.finished) == 20, out
    logger = MlflowRunLogger(loaded.spec.tracking_uri)
    runs = [r for r in logger.study_runs(name) if r.role == "task"]
    train = 0.0
    for r in runs:
        hist = [(m.step, m.value) for m in logger.client.get_metric_history(r.run_id, "iteration")]
        fps = [(m.step, m.value) for m in logger.client.get_metric_history(r.run_id,
                                                                            "frames_per_s")]
        train += _train_seconds(hist, fps)
    starts = sorted(r.start_time for r in runs)
    ends = sorted(r.end_time for r in runs)
    window = ends[-1] - starts[0]
    gaps = []
    for e in ends:
        later = [s for s in starts if s >= e]
        if later:
            gaps.append(min(later) - e)
    busy = sum(r.end_time - r.start_time for r in runs)
    return {
        "call_s": call,
        "window_s": window,
        "train_s": train,
        "train_frac_window": train / (SLOTS * window),
        "train_frac_call": train / (SLOTS * call),
        "busy_frac_window": busy / (SLOTS * window),
        "start_gap_s": statistics.median(gaps) if gaps else float("nan"),
        "first_start_s": starts[0] - t0,
    }


def _bare(root: Path, data: Path, iterations: int) -> float:
    """The 20 tasks in a 2-process pool (pre-trains first), no Ray, no MLflow."""
    from study.plan import make_plan
    from study.spec import load_spec

    plan = make_plan(load_spec(_spec(root, data, iterations, "bare")))
    first, rest = [], []
    for t in plan:
        cfg = {k: v for k, v in t.trial_config().items() if v is not None}
        if t.kind == "pretrain":
            cfg["_save"] = str(root / f"{t.id.replace(':', '_')}.pt")
            first.append(cfg)
        else:
            if t.kind == "finetune":
                cfg["init_checkpoint"] = str(root / f"{t.deps[0].replace(':', '_')}.pt")
            rest.append(cfg)
    t0 = time.time()
    with mp.get_context("spawn").Pool(SLOTS) as pool:
        pool.map(_bare_task_entry, first)
        pool.map(_bare_task_entry, rest)
    return time.time() - t0


def _bare_task_entry(cfg: dict) -> float:
    save = cfg.pop("_save", None)
    import torch

    from trainables.train_job import TrainRun

    torch.set_num_threads(1)
    run = TrainRun.create(cfg)
    t = time.perf_counter()
    while not run.done:
        run.step()
    if save:
        run.save(save)
    return time.perf_counter() - t


def _doc(res: list[dict], bare: list[float], iterations: int, seconds: float, load: float
         ) -> str:
    def med(k: str) -> float:
        return statistics.median(r[k] for r in res)

    bare_m = statistics.median(bare)
    rows = [
        ("wall time of `run_study` (Ray start to shutdown)", f"{med('call_s'):.1f} s"),
        ("Tune window (first trial start to last trial end)", f"{med('window_s'):.1f} s"),
        ("baseline: the 20 tasks bare in a 2-process pool", f"{bare_m:.1f} s"),
        ("baseline / Tune window", f"{bare_m / med('window_s'):.2f}"),
        ("baseline / whole call", f"{bare_m / med('call_s'):.2f}"),
        ("training fraction over the Tune window", f"{100 * med('train_frac_window'):.0f} %"),
        ("training fraction over the whole call", f"{100 * med('train_frac_call'):.0f} %"),
        ("busy fraction (trial lifetimes) over the Tune window",
         f"{100 * med('busy_frac_window'):.0f} %"),
        ("trial start latency (slot turnover), median", f"{med('start_gap_s'):.2f} s"),
        ("call to first trial start (Ray start, actors)", f"{med('first_start_s'):.1f} s"),
    ]
    table = "\n".join(f"| {a} | {b} |" for a, b in rows)
    return f"""## Study scheduling (`bench/bench_study.py`)

`.venv/bin/python bench/bench_study.py --task-seconds {seconds:g} --repeats {len(res)}`: a
20-task study (8 baselines, 4 pre-trains, 8 fine-tunes on two synthetic kitchens; LSTM
history 128, hidden 64, batch 32, {iterations} iterations per task, about {seconds:g} s of
training each on one thread, 5 steps with a checkpoint and an MLflow log each) run by
`run_study` on a fresh local Ray with 2 CPUs, 1 CPU per trial; median of {len(res)} runs.
The issue's shape is 30-second tasks; this is scaled down to {seconds:g} s so that a run
takes minutes. Baseline in the same run: the same 20 configs trained directly with
`TrainRun` in a 2-process pool (no Ray, no MLflow). Machine: the 2-core CPU shared with
other jobs (load average {load:.1f} at the end), so absolute times are inflated.

| what | median |
|---|---|
{table}

Training fraction = pure training seconds (from each step's frames/s) summed over the 20
tasks / (2 slots × wall time); the rest is Ray/actor start-up, data loading and evaluation
inside the trials, checkpoints, MLflow writes from the driver and scheduling gaps. The
fraction grows with task length (fixed per-trial costs are amortised over more training);
the issue's target (>= 90 % for 30-second tasks) is about the Tune window.
"""


def _write_doc(text: str) -> None:
    doc = ROOT / "docs" / "benchmarks.md"
    old = doc.read_text() if doc.exists() else "# Benchmarks\n"
    head = "## Study scheduling"
    if head in old:
        start = old.index(head)
        nxt = old.find("\n## ", start + len(head))
        old = old[:start] + (old[nxt + 1:] if nxt != -1 else "")
    doc.write_text(old.rstrip() + "\n\n" + text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--task-seconds", type=float, default=10.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--write-doc", action="store_true")
    args = ap.parse_args()
    import os

    from data_prep.synth import make_kitchens
    from data_prep.table import write_table

    work = args.work or Path(tempfile.mkdtemp(prefix="bench-study-"))
    data = work / "data"
    for name, table in make_kitchens(0, 2, videos=24, participants=8).items():
        write_table(table, data / f"{name}.parquet")
    iterations = _calibrate(data, args.task_seconds)
    print(f"{iterations} iterations per task (~{args.task_seconds:g} s)", flush=True)
    results, bare = [], []
    for r in range(args.repeats):
        root = work / f"run{r}"
        root.mkdir(parents=True, exist_ok=True)
        res = _one_study(root, data, iterations, f"bench{r}")
        print(json.dumps(res), flush=True)
        results.append(res)
        broot = work / f"bare{r}"
        broot.mkdir(parents=True, exist_ok=True)
        bare.append(_bare(broot, data, iterations))
        print(f"bare: {bare[-1]:.1f} s", flush=True)
    text = _doc(results, bare, iterations, args.task_seconds, os.getloadavg()[0])
    print(text)
    if args.write_doc:
        _write_doc(text)


if __name__ == "__main__":
    main()
