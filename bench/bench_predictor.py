"""Per-frame latency of the streaming predictor (``FramewisePredictor.step``) on the CPU.

The paper's setting is real-time monitoring at 30 fps: one frame every 33.3 ms. This times
``step`` one frame at a time (model at the paper's shapes: hidden 128, depth 1; Breakfast's
48 classes as input and output; one torch thread), reports the median and 99th percentile of
the per-call wall time, and as the baseline measured in the same run the per-frame cost of the
batch evaluation (one pass over the same frames, as ``predict_video`` does).

    .venv/bin/python bench/bench_predictor.py [--frames 3000] [--repeats 5] [--cell cudnn]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from trainables.arrangements import LabelSpace, make_arrangement
from trainables.lstm_model import FramewiseLSTM
from trainables.predictor import FramewisePredictor
from trainables.train_config import TrainConfig
from trainables.train_job import CHECKPOINT_FORMAT, ModelCheckpoint, save_checkpoint


def _checkpoint(path: Path, classes: int, hidden: int, depth: int, cell: str) -> Path:
    space = LabelSpace("bench", tuple(f"c{i}" for i in range(classes)), 0)
    cfg = TrainConfig(hidden=hidden, depth=depth, cell=cell)
    model = FramewiseLSTM(classes, classes, hidden, depth, cell)
    meta = {"config": cfg.model_dump(mode="json"),
            "arrangement": make_arrangement("identity", space).to_dict(),
            "batches": "target", "input_dim": classes, "num_classes": classes,
            "feature_mapped": True, "iteration": 0, "torch": torch.__version__}
    state = {"model": model.state_dict(), "optimizer": {},
             "generator": torch.Generator().get_state()}
    return save_checkpoint(path, ModelCheckpoint(CHECKPOINT_FORMAT, meta, state))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=3000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--classes", type=int, default=48)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--depth", type=int, default=1)
    ap.add_argument("--cell", default="cudnn", choices=["cudnn", "peephole"])
    args = ap.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    frames = rng.dirichlet(np.ones(args.classes), size=args.frames).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        path = _checkpoint(Path(tmp) / "lstm.pt", args.classes, args.hidden, args.depth,
                           args.cell)
        p = FramewisePredictor.from_checkpoint(path)
    for f in frames[:50]:  # warm-up (allocator, oneDNN primitive cache)
        p.step(f)
    per_call: list[float] = []
    batch_per_frame: list[float] = []
    for _ in range(args.repeats):
        p.reset()
        for f in frames:
            t0 = time.perf_counter()
            p.step(f)
            per_call.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        p.predict_video(frames)
        batch_per_frame.append((time.perf_counter() - t0) / len(frames))
    ms = np.array(per_call) * 1e3
    batch = statistics.median(batch_per_frame) * 1e3
    print(f"shape: input {args.classes}, hidden {args.hidden}, depth {args.depth}, "
          f"cell {args.cell}; {args.frames} frames x {args.repeats} repeats; 1 thread")
    print(f"step():          median {np.median(ms):.3f} ms, p99 {np.percentile(ms, 99):.3f} ms "
          f"per frame ({1000 / np.median(ms):.0f} frames/s)")
    print(f"baseline batch:  {batch:.4f} ms per frame (predict_video, median of repeats)")
    print(f"frame period at 30 fps: 33.3 ms -> median step uses {np.median(ms) / 33.33:.2%}")


if __name__ == "__main__":
    main()
