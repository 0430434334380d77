"""Wall time of ``kitchen-study status`` and ``kitchen-study best`` on a finished demo study.

    .venv/bin/python bench/bench_cli_start.py [--repeats 5] [--spec demo_out/demo.yaml]

Without ``--spec`` it prepares a store without Ray: the demo's three synthetic kitchens
(as ``kitchen-study demo`` generates them), ``studies/demo.yaml`` pointed at them, and one
FINISHED MLflow run per planned task (``MlflowRunLogger``, the layout the runner writes, with
made-up metrics), so the commands read what they would read after ``kitchen-study demo``.
With ``--spec`` it times against that spec's existing store (e.g. after ``kitchen-study demo``).

Each command runs as a fresh process (what a user waits for: interpreter start, imports,
spec and card checks, the MLflow read), ``--repeats`` times; the median is reported. In the
same run, two baselines: ``kitchen-study --help`` (the CLI's own start) and
``python -c "import ray, torch"`` (what ``status`` used to import before it needed neither).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def prepare(work: Path) -> Path:
    """The demo spec over synthetic kitchens, with a FINISHED run per task in MLflow."""
    import yaml

    from data_prep.synth import make_kitchens
    from data_prep.table import write_table
    from study.mlflow_layout import TaskMeta
    from study.plan import make_plan
    from study.spec_data import open_study
    from study.tracking import MlflowRunLogger, log_result

    spec = yaml.safe_load((ROOT / "studies" / "demo.yaml").read_text())
    names = list(spec["datasets"])
    for name, table in make_kitchens(0, len(names), videos=40, participants=8).items():
        write_table(table, work / "data" / f"{name}.parquet")
    for n in names:
        spec["datasets"][n]["path"] = f"data/{n}.parquet"
    spec["tracking_uri"] = f"sqlite:///{work / 'mlflow.db'}"
    path = work / "demo.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    loaded = open_study(path)
    logger = MlflowRunLogger(loaded.spec.tracking_uri)
    sid = logger.start_study(loaded.spec.name, loaded.hash)
    for i, t in enumerate(make_plan(loaded.spec)):
        rid = logger.start_task(sid, TaskMeta.from_task(t), params=t.trial_config())
        acc = 40.0 + (i * 37 % 20)
        its = t.config.iterations
        log_result(logger, rid, {"iteration": its, "loss": 1.0, "frame_acc": acc,
                                 "input_acc": 30.0, "edit": acc - 5, "f1@10": acc - 8,
                                 "f1@25": acc - 12, "f1@50": acc - 20,
                                 "curve": {p: acc - 10 + p / its * 10
                                           for p in (*t.config.eval_at, its)}})
        logger.end_task(rid)
    logger.end_study(sid)
    return path


def timed(cmd: list[str], repeats: int) -> float:
    """Median wall seconds of ``repeats`` runs of ``cmd`` (each must exit 0)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        times.append(time.perf_counter() - t0)
        if out.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stdout}{out.stderr}")
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--spec", type=Path, default=None, help="a spec whose study already ran")
    args = ap.parse_args()
    spec = args.spec or prepare(Path(tempfile.mkdtemp(prefix="bench-cli-")))
    exe = str(Path(sys.executable).with_name("kitchen-study"))
    rows = [
        ("baseline: `kitchen-study --help`", [exe, "--help"]),
        ("baseline: `python -c \"import ray, torch\"`",
         [sys.executable, "-c", "import ray, torch"]),
        ("`kitchen-study status SPEC`", [exe, "status", str(spec)]),
        ("`kitchen-study best SPEC`", [exe, "best", str(spec)]),
    ]
    print(f"spec {spec}; median of {args.repeats} runs each (wall seconds)")
    print("| command | wall (s) |\n|---|---|")
    for label, cmd in rows:
        print(f"| {label} | {timed(cmd, args.repeats):.2f} |", flush=True)


if __name__ == "__main__":
    main()
