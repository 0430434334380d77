"""Packed LSTM training (issue 13): K members as one computation vs K sequential trainers.

    .venv/bin/python bench/bench_packing.py --device cpu  [--k 1,2,4] [--repeats 3]
    .venv/bin/python bench/bench_packing.py --device cuda [--k 1,8,32,64] [--repeats 3]
                                           [--variants exact,fast]

For every K, in one process, interleaved per round (packed, then sequential), median of
``--repeats`` rounds of ``--iters`` iterations each after ``--warmup`` iterations:

1. **packed**: :class:`trainables.packed_lstm.PackedTrainer` over K Trainers (seeds 0..K-1,
   one 48-class table of simulated softmax, ``cudnn`` cell: nn.LSTM's math), sampling
   included: the real training path;
2. **sequential**: the same K Trainers unpacked (``torch.nn.LSTM``: cuDNN on a GPU with
   torch's defaults, oneDNN on a CPU), each ``train(iters)`` in turn. At K = 1 this is one
   of today's trials.

Aggregate throughput is training frames per second summed over members (batch × history per
member iteration). Both sides start from the same seeds and draw the same batches, so
``max |Δ loss|`` (mean loss of the last round, packed vs sequential, over members) is an
equivalence check measured in the same run (exact variant only).

Shapes: ``--device cuda``: the paper's (history 300, hidden 128, batch 128, depth 1);
``--device cpu``: the demo study's (history 128, hidden 32, batch 16). On CUDA also: GPU
memory per member (peak allocated during the packed rounds, above what was allocated before
the pack was built, / K; one sequential trial's the same way) and the projected wall time
of ``studies/paper.yaml``: its training frames (the planner's iterations × batch × history)
over the measured aggregate rate, and the critical path (a pre-train then its fine-tune)
over the per-member rate (aggregate / K): the projection is the larger of the two.
Evaluation and data loading are not in it.

Variants (CUDA only): ``exact`` (float32), ``tf32`` (TF32 matmuls), ``compile``
(``torch.compile`` of the gate arithmetic), ``fast`` (both).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from data_prep.table import DatasetCard, FrameTable, Split, VideoLabels
from trainables.arrangements import make_arrangement
from trainables.packed_lstm import PackedTrainer
from trainables.split_data import SplitData
from trainables.train_config import TrainConfig
from trainables.train_job import Trainer

CLASSES = 48
SHAPES = {
    "cuda": {"history": 300, "hidden": 128, "batch_size": 128},  # the paper's
    "cpu": {"history": 128, "hidden": 32, "batch_size": 16},  # studies/demo.yaml's
}
VARIANTS = {"exact": {}, "tf32": {"tf32": True}, "compile": {"compile": True},
            "fast": {"tf32": True, "compile": True}}
PAPER = Path(__file__).resolve().parents[1] / "studies" / "paper.yaml"


def make_table(videos: int = 60, seed: int = 0) -> FrameTable:
    """Random 48-class videos of 600-6000 frames with softmax features (values do not
    matter for throughput)."""
    rng = np.random.default_rng(seed)
    made = []
    for i in range(videos):
        n = int(rng.integers(600, 6000))
        logits = rng.normal(size=(n, CLASSES)).astype(np.float32)
        feats = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        made.append(VideoLabels(f"v{i:03d}", rng.integers(0, CLASSES, n), f"P{i:03d}",
                                features=feats))
    ids = [v.video for v in made]
    card = DatasetCard("bench", 15.0, tuple(f"c{c}" for c in range(CLASSES)), "c0", "bench", "1",
                       splits=(Split("split1", tuple(ids[10:]), tuple(ids[:10])),))
    return FrameTable.from_videos(card, made)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def paper_frames() -> tuple[int, int, int]:
    """studies/paper.yaml: (training frames of the plan, frames of its critical path, frames
    per iteration)."""
    from study.plan import make_plan
    from study.spec import load_spec

    def field(task, name: str) -> int:
        # a task's config is a dict or a TrainSpec, depending on the planner's version
        cfg = task.config
        return int(cfg[name] if isinstance(cfg, dict) else getattr(cfg, name))

    plan = make_plan(load_spec(PAPER))
    tasks = {t.id: t for t in plan}
    chain: dict[str, int] = {}

    def longest(tid: str) -> int:
        if tid not in chain:
            t = tasks[tid]
            chain[tid] = field(t, "iterations") * t.trials + max(
                (longest(d) for d in t.deps), default=0)
        return chain[tid]

    t0 = next(iter(plan))
    per_iter = field(t0, "batch_size") * field(t0, "history")
    critical = max(longest(t.id) for t in plan)
    iterations = sum(field(t, "iterations") * t.trials for t in plan)
    return iterations * per_iter, critical * per_iter, per_iter


def measure(k: int, data: SplitData, cfg: TrainConfig, device: torch.device, variant: str,
            args: argparse.Namespace) -> dict:
    arr = make_arrangement("identity", data.space)
    seq = [Trainer(cfg.model_copy(update={"seed": s}), arr, data) for s in range(k)]
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    members = [Trainer(cfg.model_copy(update={"seed": s}), arr, data) for s in range(k)]
    pack = PackedTrainer(members, **VARIANTS[variant])
    frames = cfg.batch_size * cfg.history * args.iters
    pack.train(args.warmup)  # compilation, allocator, cuBLAS handles
    sync(device)
    mem = None
    if device.type == "cuda":
        mem = (torch.cuda.max_memory_allocated(device) - before) / k
    for t in seq:
        t.train(args.warmup)
    sync(device)
    t_pack, t_seq = [], []
    for _ in range(args.repeats):
        t = time.perf_counter()
        stats = pack.train(args.iters)
        sync(device)
        t_pack.append(time.perf_counter() - t)
        t = time.perf_counter()
        losses = [tr.train(args.iters).loss for tr in seq]
        sync(device)
        t_seq.append(time.perf_counter() - t)
    if pack.failures:
        raise SystemExit(f"error: a packed member failed: {pack.failures}")
    dloss = max(abs(a - b) for a, b in zip(stats.loss, losses, strict=True))  # type: ignore[operator]
    return {
        "k": k, "variant": variant,
        "packed": k * frames / statistics.median(t_pack),
        "sequential": k * frames / statistics.median(t_seq),
        "packed_s": statistics.median(t_pack) / args.iters,
        "sequential_s": statistics.median(t_seq) / args.iters,
        "dloss": dloss, "mem": mem,
    }


def one_trial_memory(data: SplitData, cfg: TrainConfig, device: torch.device) -> float:
    sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    Trainer(cfg, make_arrangement("identity", data.space), data).train(2)
    sync(device)
    return torch.cuda.max_memory_allocated(device) - before


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--k", default=None, help="pack sizes (default: cpu 1,2,4; cuda 1,8,32,64)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--iters", type=int, default=None, help="iterations per round (cpu 2, cuda 5)")
    ap.add_argument("--warmup", type=int, default=None, help="warm-up iterations (cpu 1, cuda 3)")
    ap.add_argument("--variants", default=None, help="cuda: exact,tf32,compile,fast")
    # 1 thread on the CPU: this shared 2-core machine makes 2 competing threads erratic
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda: CUDA is not available")
    ks = [int(v) for v in (args.k or ("1,8,32,64" if cuda else "1,2,4")).split(",")]
    variants = (args.variants or ("exact,fast" if cuda else "exact")).split(",")
    bad = [v for v in variants if v not in VARIANTS or (v != "exact" and not cuda)]
    if bad:
        raise SystemExit(f"error: variant {bad[0]!r} (cpu: exact; cuda: {', '.join(VARIANTS)})")
    args.iters = args.iters or (5 if cuda else 2)
    args.warmup = args.warmup or (3 if cuda else 1)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    data = SplitData.load(make_table(), 1, device)
    cfg = TrainConfig(**SHAPES[args.device], depth=1, cell="cudnn")
    where = (torch.cuda.get_device_name(device) if cuda
             else f"{platform.processor() or platform.machine()} CPU, "
                  f"{torch.get_num_threads()} torch thread(s)")
    print(f"device: {where}; torch {torch.__version__}; shapes history {cfg.history} hidden "
          f"{cfg.hidden} batch {cfg.batch_size}, {CLASSES} classes; median of {args.repeats} "
          f"rounds of {args.iters} iterations after {args.warmup} warm-up")
    rows = []
    for variant in variants:
        for k in ks:
            r = measure(k, data, cfg, device, variant, args)
            rows.append(r)
            print(f"  measured {variant} K={k}", flush=True)
    single = next((r["sequential"] for r in rows if r["k"] == 1), None)
    head = "| variant | K | packed frames/s | sequential frames/s | packed / sequential |"
    sep = "|---|---:|---:|---:|---:|"
    if single is not None:
        head += " packed / one trial |"
        sep += "---:|"
    head += " packed s/iter | max abs Δ loss |"
    sep += "---:|---:|"
    if cuda:
        head += " GPU MiB per member |"
        sep += "---:|"
    lines = [head, sep]
    for r in rows:
        line = (f"| {r['variant']} | {r['k']} | {r['packed']:,.0f} | {r['sequential']:,.0f} | "
                f"{r['packed'] / r['sequential']:.2f} |")
        if single is not None:
            line += f" {r['packed'] / single:.2f} |"
        line += f" {r['packed_s'] * 1e3:.0f} ms |"
        line += f" {r['dloss']:.1e} |" if r["variant"] == "exact" else " (not exact) |"
        if cuda:
            line += f" {r['mem'] / 2**20:,.0f} |"
        lines.append(line)
    print("\n".join(lines))
    if cuda:
        print(f"\none sequential trial: {one_trial_memory(data, cfg, device) / 2**20:,.0f} MiB "
              "peak GPU memory above its data")
        total, critical, per_iter = paper_frames()
        print(f"\nstudies/paper.yaml: {total:.3e} training frames, critical path "
              f"{critical:.3e} frames ({critical // per_iter:,} iterations)")
        print("| variant | K | by throughput | by critical path | projected wall time |")
        print("|---|---:|---:|---:|---:|")
        for r in rows:
            a = total / r["packed"]
            b = critical / (r["packed"] / r["k"])
            print(f"| {r['variant']} | {r['k']} | {a / 3600:.2f} h | {b / 3600:.2f} h | "
                  f"{max(a, b) / 3600:.2f} h |")
    print(f"\nload average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
