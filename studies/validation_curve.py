"""The LSTM's learning curve on one split: frame accuracy on its own training videos, on the
validation people and on the test people, beside the input's argmax on each, at every
evaluation point (issue 16: on `segment` v1 input the LSTM fell 15.2 -> 8.6 % on test while
its training-video accuracy rose; this shows whether the default simulation still lets it
memorise).

    python studies/validation_curve.py data/breakfast_sim.parquet --iterations 3000 \
        --eval-at 250,500,1000,1500,2000,2500,3000 --out curve.json

Same model and optimisation as studies/reproduction.yaml (history 330, hidden 64, batch 16,
lr 0.01, gradient norm clipped at 1) unless given. Training-video accuracy is over every
training video of the split (validation people excluded). Prints one Markdown table;
``--out`` also writes the rows as JSON with the arguments under ``config``
(``studies/lr_choice.py`` reads them). The model reported under the validation protocol is
the best-validation row.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("table", type=Path)
    ap.add_argument("--split", default="1")
    ap.add_argument("--iterations", type=int, default=3000)
    ap.add_argument("--eval-at", default="250,500,1000,1500,2000,2500,3000")
    ap.add_argument("--history", type=int, default=330)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--clip", type=float, default=1.0,
                    help="max gradient norm (0: no clipping)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args(argv)

    from trainables.train_job import TrainRun

    eval_at = tuple(sorted({int(x) for x in a.eval_at.split(",") if x} | {a.iterations}))
    eval_at = tuple(x for x in eval_at if x <= a.iterations)
    run = TrainRun.create({
        "target_path": str(a.table), "target_split": a.split, "mode": "none",
        "iterations": a.iterations, "eval_at": eval_at, "iterations_per_step": 250,
        "history": a.history, "hidden": a.hidden, "batch_size": a.batch, "lr": a.lr,
        "clip": a.clip or None, "seed": a.seed, "validation": "people", "device": "cpu",
    })
    tr = run.trainer
    data = tr.eval_data
    rows = []
    t0 = time.perf_counter()
    # the trainer directly, not run.step(): a finished run restores its best-validation
    # weights, and this curve wants every evaluation point's own weights
    for stop in eval_at:
        tr.train(stop - tr.iteration)
        it = tr.iteration
        train = tr.evaluate(data.train)
        val = tr.evaluate(data.val)
        test = tr.evaluate()
        rows.append({
            "iteration": it,
            "train_acc": train["frame_acc"], "train_input": train["input_acc"],
            "val_acc": val["frame_acc"], "val_input": val["input_acc"],
            "test_acc": test["frame_acc"], "test_input": test["input_acc"],
            "gap_train_minus_test": train["frame_acc"] - test["frame_acc"],
            "seconds": round(time.perf_counter() - t0, 1),
        })
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    # the validation protocol's rule (trainables/train_job.py): best validation, ties earlier
    best = max(rows, key=lambda r: (r["val_acc"], -r["iteration"]))
    print(f"{data.table.card.name} split {a.split}: {len(data.train)} training, {len(data.val)} "
          f"validation, {len(data.test)} test videos; history {a.history}, hidden {a.hidden}, "
          f"batch {a.batch}, lr {a.lr}, clip {a.clip or 'none'}, seed {a.seed}\n")
    print("| iteration | train videos (input) | validation (input) | test (input) | "
          "train − validation | train − test |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        mark = " **(best val)**" if r is best else ""
        print(f"| {r['iteration']}{mark} | {r['train_acc']:.2f} ({r['train_input']:.2f}) | "
              f"{r['val_acc']:.2f} ({r['val_input']:.2f}) | {r['test_acc']:.2f} "
              f"({r['test_input']:.2f}) | {r['train_acc'] - r['val_acc']:+.2f} | "
              f"{r['gap_train_minus_test']:+.2f} |")
    if a.out:
        config = {"table": str(a.table), "split": a.split, "iterations": a.iterations,
                  "history": a.history, "hidden": a.hidden, "batch": a.batch, "lr": a.lr,
                  "clip": a.clip or None, "seed": a.seed}
        a.out.write_text(json.dumps(
            {"config": config, "rows": rows, "best_iteration": best["iteration"]}, indent=1))
    return 0


if __name__ == "__main__":
    from _cli import run  # studies/ is the script's own folder, first on sys.path

    raise SystemExit(run(main))
