"""CNN stage throughput on this machine: training and softmax export, frames/s.

    .venv/bin/python bench/bench_cnn.py [--repeats 3] [--threads 2] [--no-inception]
        [--device cpu|cuda] [--workers N] [--json OUT]

Renders a toy dataset at Breakfast's resolution (320x240, 15 fps, H.264; 4 videos of
~70 frames, see ``trainables.frames.render_toy_dataset``) into a temporary folder, then in
one process, for each model:

* train: ``CNNTrainer.train(steps)`` (decode -> random resized crop + flip -> batch ->
  forward/backward/SGD step), frames/s and the share of wall time spent waiting for data;
  against **bare**: the same model and optimiser stepping on one fixed random uint8 batch
  (no decoding, no augmentation), measured right after in the same run;
* export: ``export_features`` (decode every frame -> centre crop -> forward -> softmax ->
  Parquet write) frames/s against bare inference on a fixed batch;
* loader: the training data stream alone (decode + augment, no model), frames/s.

Each figure is the median of ``--repeats`` timed calls after one warm-up call; pipeline and
baseline calls alternate so that both see the same background load, and the ratios are
medians of the per-repeat ratios. Models:
mobilenet_v3_small and resnet18 at 112x112 (the small configurations), and Inception-v3 at
299x299 (the paper's stage; export timed on one video to keep the run short). On a GPU
(``--device cuda``) bf16 autocast and channels-last are on, as in training.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from data_prep.table import write_table  # noqa: E402
from trainables.cnn_config import CNNConfig  # noqa: E402
from trainables.cnn_data import TrainFrames  # noqa: E402
from trainables.cnn_job import CNNTrainer, export_features  # noqa: E402
from trainables.frames import FrameSource, render_toy_dataset  # noqa: E402


def _median(xs: list[float]) -> float:
    return float(statistics.median(xs))


def _bare_train_step(trainer: CNNTrainer, batch: int):
    """One fixed random uint8 batch stepped through the same model and optimiser."""
    size, dev = trainer.size, trainer.device
    x = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, device=dev)
    y = torch.randint(0, trainer.table.card.num_classes, (batch,), device=dev)
    if trainer.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    model, opt, loss_fn = trainer.model, trainer.optimizer, trainer.loss_fn

    def run(n: int) -> float:
        model.train()
        t0 = time.perf_counter()
        for _ in range(n):
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=trainer.amp):
                loss = loss_fn(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        return n * batch / (time.perf_counter() - t0)

    return run


def _bare_infer_run(trainer: CNNTrainer, batch: int, frames: int):
    size, dev = trainer.size, trainer.device
    x = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, device=dev)
    if trainer.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    n = max(1, frames // batch)

    @torch.no_grad()
    def run() -> float:
        trainer.model.eval()
        t0 = time.perf_counter()
        for _ in range(n):
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=trainer.amp):
                torch.softmax(trainer.model(x).float(), 1).cpu()
        out = n * batch / (time.perf_counter() - t0)
        trainer.model.train()
        return out

    return run


def _loader_run(trainer: CNNTrainer, batches: int):
    ds = TrainFrames(trainer.source, trainer.videos, trainer.train_videos, trainer.cfg,
                      trainer.size, trainer.resize, start_epoch=0)
    it = iter(ds)
    next(it)

    def run() -> float:
        t0 = time.perf_counter()
        n = sum(int(next(it)[1].numel()) for _ in range(batches))
        return n / (time.perf_counter() - t0)

    return run


def bench_model(name: str, size: int, batch: int, steps: int, table, table_path: Path,
                source: FrameSource, args, export_videos: int | None) -> dict:
    """Pipeline and bare baseline alternate within each repeat (A B A B ...), so both see the
    same load from whatever else runs on the machine."""
    cfg = CNNConfig(model=name, image_size=size, batch_size=batch, stride=1, optimizer="sgd",
                    shuffle_buffer=2 * batch, interleave=4, workers=args.workers)
    trainer = CNNTrainer(cfg, table, 1, source, device=args.device, cpus=args.threads)
    bare_train = _bare_train_step(trainer, batch)
    loader = _loader_run(trainer, max(2, steps // 2))
    trainer.train(1)  # warm-up: loader start, first allocations
    bare_train(1)
    train_fps, bare_fps, waits, loader_fps = [], [], [], []
    for _ in range(args.repeats):
        r = trainer.train(steps)
        train_fps.append(r["frames_per_s"])
        waits.append(r["data_wait"])
        bare_fps.append(bare_train(steps))
        loader_fps.append(loader())
    trainer.close()

    export_batch = 64
    tmp = tempfile.TemporaryDirectory()
    if export_videos is None:  # the full export, Parquet write included
        frames = table.num_frames

        def export_once() -> float:
            out = export_features(
                trainer.model, table, source, Path(tmp.name) / "x.parquet", split="split1",
                batch_size=export_batch, workers=trainer.workers, device=trainer.device,
                image_size=size, source_path=table_path,
            )
            return out["frames_per_s"]
    else:  # the same decode -> crop -> forward -> softmax path on a few videos
        which = np.arange(export_videos)
        frames = int(table.lengths[:export_videos].sum())

        def export_once() -> float:
            t0 = time.perf_counter()
            trainer.predict(which, batch_size=export_batch)
            return frames / (time.perf_counter() - t0)

    bare_infer = _bare_infer_run(trainer, export_batch, min(frames, 128))
    export_once()
    bare_infer()
    export_fps, infer_fps = [], []
    for _ in range(args.repeats):
        export_fps.append(export_once())
        infer_fps.append(bare_infer())
    tmp.cleanup()
    return {
        "model": name, "size": size, "batch": batch, "device": str(trainer.device),
        "train_fps": _median(train_fps), "bare_train_fps": _median(bare_fps),
        "train_ratio": _median([a / b for a, b in zip(train_fps, bare_fps, strict=True)]),
        "data_wait": _median(waits), "loader_fps": _median(loader_fps),
        "export_fps": _median(export_fps), "bare_infer_fps": _median(infer_fps),
        "export_ratio": _median([a / b for a, b in zip(export_fps, infer_fps, strict=True)]),
        "export_frames": frames,
        # every repeat, to show the spread on a shared machine
        "runs": {"train": train_fps, "bare_train": bare_fps, "export": export_fps,
                 "bare_infer": infer_fps},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--no-inception", action="store_true")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        table = render_toy_dataset(root, participants=4, size=(320, 240), segment=(12, 16),
                                   folders=False)
        table_path = write_table(table, root / "toy.parquet")
        source = FrameSource(root / "videos", kind="video")
        print(f"# {table.num_videos} videos, {table.num_frames} frames at 320x240; "
              f"torch {torch.__version__}, {args.threads} threads, device {args.device}, "
              f"load average {os.getloadavg()[0]:.1f}", flush=True)
        plan = [("mobilenet_v3_small", 112, 16, 6, None), ("resnet18", 112, 16, 4, None)]
        if not args.no_inception:
            plan.append(("inception_v3", 299, 8, 2, 1))
        for name, size, batch, steps, export_videos in plan:
            r = bench_model(name, size, batch, steps, table, table_path, source, args,
                            export_videos)
            results.append(r)
            print(json.dumps(r), flush=True)
    print()
    print("| model | crop | batch | train frames/s | bare train | ratio | data wait | "
          "loader frames/s | export frames/s | bare inference | ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['model']} | {r['size']} | {r['batch']} | {r['train_fps']:.1f} | "
              f"{r['bare_train_fps']:.1f} | {r['train_ratio']:.2f} | {r['data_wait']:.0%} | "
              f"{r['loader_fps']:.0f} | {r['export_fps']:.1f} | {r['bare_infer_fps']:.1f} | "
              f"{r['export_ratio']:.2f} |")
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
