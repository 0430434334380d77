"""Query API latency over a 500-run study, against a naive per-run baseline.

    .venv/bin/python bench/bench_query.py [--repeats 7] [--store DIR]

Populates a SQLite MLflow store once through the tracking API (``MlflowRunLogger``): 5
datasets x 2 splits x 5 seeds -> 50 baselines, 50 pre-trains, 200 transfer and 200 joint
runs (every ordered pair into every split), each with ~25 params and loss/frame_acc
histories at 6 evaluation points (frame_acc's history is the convergence curve). Then, in
the same process:

* fast: ``load_study(name, uri).best_transfer_pairs()`` — what the CLI's ``best`` does; on
  SQLite it reads the store with four read-only SQL queries (``MlflowRunLogger.study_runs``);
* search_runs: the same through MLflow's ``search_runs`` (one paged bulk call; the path used
  for a tracking server), ``MlflowRunLogger(uri, fast_read=False)``;
* naive: list the run ids, then ``MlflowClient.get_run`` per run, then the same statistics.

and, second table, load + ``convergence()`` (every run's curve: ``metric_histories``) for
fast (one more SQL query) and search_runs (``get_metric_history`` per run, 8 at a time),
each beside its own load + ``best_transfer_pairs`` from the first table.

Reports the median of ``--repeats`` calls each (after one warm-up call, so imports and the
SQLAlchemy engine are not counted) and the ratio. ``--store DIR`` reuses a populated store.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from study.mlflow_layout import TaskMeta  # noqa: E402
from study.query import StudyResults, load_study  # noqa: E402
from study.tracking import MlflowRunLogger, _to_record, log_result  # noqa: E402

NAME = "bench-query"
HASH = "bench500"
DATASETS = [f"d{i}" for i in range(5)]
SPLITS = ["split1", "split2"]
SEEDS = range(5)
EVALS = [512, 1024, 2048, 4096, 8192, 16384]


def _tasks():
    for seed in SEEDS:
        for ds in DATASETS:
            for sp in SPLITS:
                yield TaskMeta(f"baseline:{ds}.{sp}:s{seed}", "baseline", "none", ds, sp,
                               arrangement="identity", seed=seed)
                yield TaskMeta(f"pretrain:{ds}.{sp}:s{seed}", "pretrain", "none", ds, sp,
                               arrangement="identity", seed=seed)
        for src in DATASETS:
            for tgt in DATASETS:
                if src == tgt:
                    continue
                for sp in SPLITS:
                    for kind, mode in (("finetune", "transfer"), ("joint", "joint")):
                        yield TaskMeta(f"{kind}:{src}.split1>{tgt}.{sp}:concat:s{seed}", kind,
                                       mode, tgt, sp, src, "split1", "concat", seed)


def populate(uri: str) -> int:
    logger = MlflowRunLogger(uri)
    sid = logger.start_study(NAME, HASH)
    n = 0
    for i, meta in enumerate(_tasks()):
        config = {"history": 300, "depth": 1, "hidden": 128, "batch_size": 128, "lr": 1e-3,
                  "seed": meta.seed, "iterations": EVALS[-1], "eval_at": EVALS,
                  "target_split": meta.target_split, "mode": meta.mode,
                  "arrangement": meta.arrangement, "target_path": f"/data/{meta.target}.parquet",
                  **{f"extra_{j}": j for j in range(12)}}
        rid = logger.start_task(sid, meta, params=config)
        base = 40.0 + (i * 7919 % 200) / 10
        for k, it in enumerate(EVALS):
            final = ({"input_acc": base - 10, "edit": base - 5, "f1@10": base - 8,
                      "f1@25": base - 12, "f1@50": base - 20} if it == EVALS[-1] else {})
            log_result(logger, rid, {"iteration": it, "loss": 3.0 / (k + 1),
                                     "frame_acc": base + 2 * k, **final})
        logger.end_task(rid)
        n += 1
    logger.end_study(sid)
    return n


def naive(uri: str) -> StudyResults:
    """One request per run: what a loop over ``get_run`` costs."""
    logger = MlflowRunLogger(uri)
    exp = logger.client.get_experiment_by_name(f"kitchen-study/{NAME}")
    ids = [r.info.run_id for r in logger.client.search_runs([exp.experiment_id],
                                                            max_results=50_000)]
    records = [_to_record(logger.client.get_run(rid)) for rid in ids]
    return StudyResults.from_records(NAME, HASH, records)


def timed(fn, repeats: int) -> tuple[float, float, object]:
    """Median wall and CPU seconds of ``repeats`` calls after one warm-up call."""
    out = fn()  # warm-up: imports, engine
    wall, cpu = [], []
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        out = fn()
        wall.append(time.perf_counter() - w)
        cpu.append(time.process_time() - c)
    return statistics.median(wall), statistics.median(cpu), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--store", type=Path, default=None,
                    help="directory for (or of) the populated store; default a temp dir")
    args = ap.parse_args()
    store = args.store or Path(tempfile.mkdtemp(prefix="bench-query-"))
    store.mkdir(parents=True, exist_ok=True)
    db = store / "mlflow.db"
    uri = f"sqlite:///{db.resolve()}"
    if not db.exists():
        t = time.perf_counter()
        n = populate(uri)
        print(f"populated {n} task runs in {time.perf_counter() - t:.1f}s ({db})")

    def search_runs() -> StudyResults:
        return StudyResults.from_logger(MlflowRunLogger(uri, fast_read=False), NAME)

    variants = {
        "fast (load_study)": (lambda: load_study(NAME, uri), args.repeats),
        "search_runs bulk": (search_runs, args.repeats),
        "naive get_run per run": (lambda: naive(uri), max(3, args.repeats // 2)),
    }
    results = {}
    for label, (load, repeats) in variants.items():
        results[label] = timed(lambda load=load: load().best_transfer_pairs(k=None), repeats)
    answers = [r[2] for r in results.values()]
    assert all(a.equals(answers[0]) for a in answers), "the variants' answers differ"
    print(f"{len(load_study(NAME, uri).results())} finished task runs, "
          f"{len(answers[0])} transfer pairs; median of {args.repeats} (naive: "
          f"{max(3, args.repeats // 2)}) calls of load + best_transfer_pairs(k=None)")
    base = results["naive get_run per run"][0]
    print("| variant | wall (ms) | CPU (ms) | vs naive |")
    print("|---|---|---|---|")
    for label, (wall, cpu, _) in results.items():
        print(f"| {label} | {wall * 1000:.0f} | {cpu * 1000:.0f} | {base / wall:.1f}x |")

    curves = {label: timed(lambda load=load: load().convergence(), args.repeats)
              for label, (load, _) in list(variants.items())[:2]}
    answers = [r[2] for r in curves.values()]
    assert all(a.equals(answers[0]) for a in answers), "the variants' curves differ"
    print(f"\n{len(answers[0])} curve points; median of {args.repeats} calls of load + "
          "convergence(), beside load + best_transfer_pairs(k=None) above")
    print("| variant | load + convergence wall (ms) | CPU (ms) | load + best wall (ms) |")
    print("|---|---|---|---|")
    for label, (wall, cpu, _) in curves.items():
        print(f"| {label} | {wall * 1000:.0f} | {cpu * 1000:.0f} | "
              f"{results[label][0] * 1000:.0f} |")


if __name__ == "__main__":
    main()
