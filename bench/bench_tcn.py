"""MS-TCN training throughput: the module's own objective against a bare loop of the same
network.

    .venv/bin/python bench/bench_tcn.py [--device cpu|cuda] [--threads 1] [--repeats 5]
                                        [--iters 3] [--batch 1] [--frames 2000]
                                        [--input-dim 2048] [--classes 48]

Every path trains its own copy of the paper's Breakfast model (4 stages × 10 layers × 64
maps, I3D 2048-d input, 48 classes; same seed, so the same weights) with Adam (lr 5e-4, the
reference's) on one fixed random batch — by default one video of 2000 frames, the
reference's batch size 1 at about a Breakfast video's length. Paths run interleaved
(bare, module, bare, module, ...) in one process on one device and thread count; each
timing is ``--iters`` optimiser steps, and the table gives the median over ``--repeats``
rounds. Throughput is training frames per second (batch × frames per step) of wall time;
the process CPU time per step is printed beside it (steadier when other jobs share the
cores).

1. **bare**: ``MSTCN.stage_logits`` and the reference's loss written out by hand here
   (cross-entropy + 0.15 × T-MSE clamped at 16 per stage), then Adam;
2. **module**: ``MSTCN.loss`` (the module's objective), then Adam.

3. **project Trainer**: :class:`trainables.train_job.Trainer` with ``kind: mstcn`` from the
   registry, sampling whole videos of the same length from a frame table on the device.

:data:`PATHS` maps a row name to a factory ``(Setup) -> step(n)``. Figures are printed;
``docs/benchmarks.md`` records them by hand with the machine and command.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from trainables.tcn_model import MSTCN

LR = 5e-4  # the reference's learning rate (main.py)


@dataclass(frozen=True)
class Setup:
    """What every path trains on: shapes, device, and the one fixed batch."""

    device: torch.device
    batch: int
    frames: int
    input_dim: int
    classes: int
    x: torch.Tensor  # (B, T, input_dim)
    y: torch.Tensor  # (B, T) labels, no padding

    def model(self) -> MSTCN:
        """The Breakfast configuration, identically initialised for every path."""
        torch.manual_seed(0)
        return MSTCN(self.input_dim, self.classes).to(self.device).train()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bare_path(s: Setup) -> Callable[[int], None]:
    """The network's stage outputs and the reference's loss, written out by hand."""
    model = s.model()
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    mask = s.y != -100
    later = mask[:, None, 1:].float()

    def step(n: int) -> None:
        for _ in range(n):
            loss = torch.zeros((), device=s.device)
            for p in model.stage_logits(s.x, mask).transpose(2, 3):  # (B, C, T) per stage
                loss = loss + F.cross_entropy(p, s.y, ignore_index=-100)
                sq = (F.log_softmax(p[:, :, 1:], 1) - F.log_softmax(p.detach()[:, :, :-1], 1)) ** 2
                loss = loss + 0.15 * (sq.clamp(0, 16) * later).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sync(s.device)

    return step


def module_path(s: Setup) -> Callable[[int], None]:
    """``MSTCN.loss``: what the generic trainer will call."""
    model = s.model()
    opt = torch.optim.Adam(model.parameters(), lr=LR)

    def step(n: int) -> None:
        for _ in range(n):
            loss = model.loss(s.x, s.y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sync(s.device)

    return step


def trainer_path(s: Setup) -> Callable[[int], None]:
    """The project's :class:`~trainables.train_job.Trainer` (``kind: mstcn``, the registry's
    MS-TCN at the paper's Breakfast configuration): it samples each batch from a frame
    table resident on the device (four training videos of ``frames`` frames, so every
    sample is one whole video, as the reference trains), runs the model's own loss, Adam,
    and keeps the losses on the device (one host sync per call)."""
    import numpy as np

    from data_prep.table import DatasetCard, FrameTable, Split, VideoLabels
    from trainables.arrangements import make_arrangement
    from trainables.split_data import SplitData
    from trainables.train_config import TrainConfig
    from trainables.train_job import Trainer

    rng = np.random.default_rng(0)
    names = tuple(f"c{i}" for i in range(s.classes))
    vids = [VideoLabels(f"v{i}", rng.integers(0, s.classes, s.frames), f"P{i}",
                        features=rng.standard_normal((s.frames, s.input_dim)).astype(np.float32))
            for i in range(5)]
    card = DatasetCard("bench", 15.0, names, None, "bench", "1",
                       splits=(Split("split1", tuple(f"v{i}" for i in range(4)), ("v4",)),))
    data = SplitData.load(FrameTable.from_videos(card, vids), 1, s.device)
    cfg = TrainConfig(kind="mstcn", batch_size=s.batch, lr=LR)
    torch.manual_seed(0)
    trainer = Trainer(cfg, make_arrangement("identity", data.space), data, device=s.device)

    def step(n: int) -> None:
        trainer.train(n)
        sync(s.device)

    return step


#: row name -> factory; the first row is the baseline the ratios are taken against.
PATHS: dict[str, Callable[[Setup], Callable[[int], None]]] = {
    "bare loop (stage_logits + hand-written loss + Adam)": bare_path,
    "module (MSTCN.loss + Adam)": module_path,
    "project Trainer (sampler + MSTCN.loss + Adam)": trainer_path,
}


def timed(fn: Callable[[int], None], n: int) -> tuple[float, float]:
    """Wall and process CPU seconds of ``fn(n)``. On a shared machine the CPU time is the
    steadier of the two: it leaves out the time other jobs held the cores."""
    t, c = time.perf_counter(), time.process_time()
    fn(n)
    return time.perf_counter() - t, time.process_time() - c


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--iters", type=int, default=3, help="optimiser steps per timing")
    # 1 thread by default, as bench_lstm: the machine is shared, and competing OpenMP
    # threads make the timings erratic
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--frames", type=int, default=2000)
    ap.add_argument("--input-dim", type=int, default=2048)
    ap.add_argument("--classes", type=int, default=48)
    args = ap.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(args.batch, args.frames, args.input_dim, generator=g)
    y = torch.randint(0, args.classes, (args.batch, args.frames), generator=g)
    setup = Setup(device, args.batch, args.frames, args.input_dim, args.classes,
                  x.to(device), y.to(device))  # fmt: skip
    steps = {name: make(setup) for name, make in PATHS.items()}
    for step in steps.values():  # warm-up: allocator, oneDNN primitives, cuDNN autotuning
        step(1)

    times: dict[str, list[float]] = {name: [] for name in steps}
    cpu: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.repeats):
        for name, step in steps.items():
            wall, used = timed(step, args.iters)
            times[name].append(wall / args.iters)
            cpu[name].append(used / args.iters)
    med = {name: statistics.median(ts) for name, ts in times.items()}
    med_cpu = {name: statistics.median(ts) for name, ts in cpu.items()}
    frames = args.batch * args.frames
    base = next(iter(med))

    where = (torch.cuda.get_device_name(device) if device.type == "cuda"
             else f"{platform.processor() or platform.machine()} CPU, "
                  f"{torch.get_num_threads()} torch thread(s)")  # fmt: skip
    print(f"device: {where}; torch {torch.__version__}; batch {args.batch} × {args.frames} "
          f"frames, {args.input_dim}-d input, {args.classes} classes, 4 stages × 10 layers × 64 "
          f"maps; median of {args.repeats} rounds × {args.iters} steps; "
          f"load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    print("| what | per step (wall) | frames/s (wall) | vs bare | CPU per step | vs bare (CPU) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, t in med.items():
        c = med_cpu[name]
        print(f"| {name} | {t * 1e3:.0f} ms | {frames / t:,.0f} | {med[base] / t:.2f} "
              f"| {c * 1e3:.0f} ms | {med_cpu[base] / c:.2f} |")  # fmt: skip
    spread = {name: (min(ts), max(ts)) for name, ts in times.items()}
    for name, (lo, hi) in spread.items():
        print(f"  {name}: per-step range {lo * 1e3:.0f}-{hi * 1e3:.0f} ms over the rounds")


if __name__ == "__main__":
    main()
