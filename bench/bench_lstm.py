"""LSTM training throughput at the paper's shapes, against a bare torch.nn.LSTM loop.

    .venv/bin/python bench/bench_lstm.py [--device cpu|cuda] [--threads 1] [--repeats 5]
                                         [--iters 3] [--write-doc]

Measured side by side in one process, interleaved (bare, trainer, bare, trainer, ...), on
the same device and thread count, median over ``--repeats`` rounds:

1. **trainer**: :class:`trainables.train_job.Trainer` ``train(n)`` — batch 128 × history 300
   drawn by the sampler from a 48-class table (simulated softmax input, mapped through the
   identity arrangement), hidden 128, depth 1, cuDNN/oneDNN cell, Adam, masked mean CE;
2. **bare**: ``torch.nn.LSTM(48, 128)`` + ``Linear(128, 48)`` + Adam + cross-entropy on one
   fixed pre-made batch of the same shape (no sampling at all);
3. **sampling alone**: ``SubsequenceSampler.sample()`` for the same batch;
4. **peephole**: the trainer with ``cell: peephole`` (the paper's vanilla LSTM).

Throughput is training frames per second (batch × history per iteration). Targets (issue 3):
trainer ≥ 0.9 × bare on CPU; sampling ≥ 20 × faster than a training step. ``--write-doc``
replaces the ``## LSTM training`` section of docs/benchmarks.md (other sections untouched).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from data_prep.table import DatasetCard, FrameTable, Split, VideoLabels
from trainables.arrangements import make_arrangement
from trainables.split_data import SplitData
from trainables.train_job import TrainConfig, Trainer

CLASSES, HIDDEN, BATCH, HISTORY = 48, 128, 128, 300
DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
SECTION = "## LSTM training"


def make_table(videos: int = 120, seed: int = 0) -> FrameTable:
    """Random 48-class videos of 600-6000 frames with softmax features (about Breakfast's
    shapes; the values do not matter for throughput)."""
    rng = np.random.default_rng(seed)
    made = []
    for i in range(videos):
        n = int(rng.integers(600, 6000))
        labels = rng.integers(0, CLASSES, n)
        logits = rng.normal(size=(n, CLASSES)).astype(np.float32)
        feats = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        made.append(VideoLabels(f"v{i:03d}", labels, f"P{i:03d}", features=feats))
    ids = [v.video for v in made]
    card = DatasetCard("bench", 15.0, tuple(f"c{c}" for c in range(CLASSES)), "c0", "bench", "1",
                       splits=(Split("split1", tuple(ids[20:]), tuple(ids[:20])),))
    return FrameTable.from_videos(card, made)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class Bare:
    """The baseline: the same model, loss and optimiser on one fixed batch."""

    def __init__(self, device: torch.device):
        torch.manual_seed(0)
        self.lstm = torch.nn.LSTM(CLASSES, HIDDEN, 1, batch_first=True).to(device)
        self.head = torch.nn.Linear(HIDDEN, CLASSES).to(device)
        self.opt = torch.optim.Adam([*self.lstm.parameters(), *self.head.parameters()], lr=1e-3)
        self.x = torch.softmax(torch.randn(BATCH, HISTORY, CLASSES, device=device), -1)
        self.y = torch.randint(0, CLASSES, (BATCH, HISTORY), device=device)
        self.device = device

    def train(self, n: int) -> None:
        for _ in range(n):
            out, _ = self.lstm(self.x)
            logits = self.head(out)
            loss = torch.nn.functional.cross_entropy(
                logits.reshape(-1, CLASSES), self.y.reshape(-1)
            )
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
        sync(self.device)


def timed(fn, *args) -> float:
    t = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--iters", type=int, default=3, help="training iterations per timing")
    # 1 thread by default: on a shared 2-core machine, 2 OpenMP threads competing with other
    # jobs made a bare step ~6x slower (8 s instead of 1.2 s) and the timings erratic
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    ap.add_argument("--write-doc", action="store_true")
    args = ap.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    data = SplitData.load(make_table(), 1, device)
    arr = make_arrangement("identity", data.space)
    cfg = TrainConfig(history=HISTORY, hidden=HIDDEN, batch_size=BATCH)
    trainer = Trainer(cfg, arr, data)
    peephole = Trainer(cfg.model_copy(update={"cell": "peephole"}), arr, data)
    bare = Bare(device)
    frames = BATCH * HISTORY

    # warm-up (allocator, oneDNN primitive creation, cuDNN autotuning)
    bare.train(2)
    trainer.train(2)
    peephole.train(1)
    sync(device)

    t_bare, t_trainer, t_peep, t_sample = [], [], [], []
    for _ in range(args.repeats):
        t_bare.append(timed(bare.train, args.iters) / args.iters)
        t_trainer.append(timed(lambda: (trainer.train(args.iters), sync(device))) / args.iters)
        t_peep.append(timed(lambda: (peephole.train(1), sync(device))))
        t_sample.append(
            timed(lambda: ([trainer.sampler.sample() for _ in range(50)], sync(device))) / 50
        )
    med = {k: statistics.median(v) for k, v in
           {"bare": t_bare, "trainer": t_trainer, "peephole": t_peep, "sample": t_sample}.items()}
    fps = {k: frames / med[k] for k in ("bare", "trainer", "peephole")}
    ratio = fps["trainer"] / fps["bare"]
    sample_x = med["trainer"] / med["sample"]
    peep = fps["peephole"] / fps["trainer"]

    cpu = f"{platform.processor() or platform.machine()} CPU"
    where = (torch.cuda.get_device_name(device) if device.type == "cuda"
             else f"{cpu}, {torch.get_num_threads()} torch thread(s)")
    rows = [
        ("bare torch.nn.LSTM loop (fixed batch)", f"{med['bare'] * 1e3:.0f} ms",
         f"{fps['bare']:,.0f}", "1.00"),
        ("Trainer (sampler + model + masked CE + Adam)", f"{med['trainer'] * 1e3:.0f} ms",
         f"{fps['trainer']:,.0f}", f"{ratio:.2f}"),
        ("Trainer, peephole cell", f"{med['peephole'] * 1e3:.0f} ms", f"{fps['peephole']:,.0f}",
         f"{fps['peephole'] / fps['bare']:.2f}"),
        ("batch sampling alone", f"{med['sample'] * 1e3:.2f} ms", "", ""),
    ]
    table = ["| what | per iteration | frames/s | vs bare |", "|---|---:|---:|---:|"]
    table += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    summary = [
        f"- trainer / bare throughput: **{ratio:.2f}×** (target ≥ 0.9× on CPU)",
        f"- a training step takes **{sample_x:.0f}×** as long as sampling its batch (target ≥ 20×)",
        f"- peephole / cuDNN-cell trainer throughput: **{peep:.2f}×** (recorded, no target)",
    ]
    text = "\n".join(table + [""] + summary)
    load = os.getloadavg()[0]
    print(f"device: {where}; torch {torch.__version__}; median of {args.repeats} rounds; "
          f"load average {load:.1f}")
    print(text)

    if args.write_doc:
        section = "\n".join([
            SECTION,
            "",
            f"`.venv/bin/python bench/bench_lstm.py --device {args.device} --threads "
            f"{args.threads} --repeats {args.repeats} --iters {args.iters} --write-doc`"
            f" — {where}, torch {torch.__version__}. Paper shapes: batch {BATCH} × history "
            f"{HISTORY}, {CLASSES} classes, hidden {HIDDEN}, depth 1. Median of {args.repeats} "
            f"interleaved rounds ({args.iters} iterations each for bare and trainer, 1 for "
            "peephole, 50 batches for sampling), all in one process on the same device. "
            f"The machine is shared with other jobs: load average {load:.1f} at the end of "
            "the run, so absolute times are inflated; the ratios are measured side by side.",
            "",
            text,
            "",
            "Notes: 1 torch thread because on this shared 2-core machine 2 threads competing "
            "with other jobs made every step ~6× slower and erratic (a bare step took 8 s "
            "instead of 1.2 s). The peephole cell is a Python loop over time; stepping it "
            "with `unbind(1)` rather than `x[:, t]` slices took it from 46 s to 1.7 s per "
            "iteration here (slice gradients are full-size tensors, quadratic in history). "
            "No GPU was available when these figures were taken; run the same command with "
            "`--device cuda` on a GPU machine to add them (expect the peephole cell to fall "
            "much further behind cuDNN there).",
            "",
        ])
        write_section(section)
        print(f"wrote {SECTION!r} in {DOC}")


def write_section(section: str) -> None:
    """Replace (or append) our section of docs/benchmarks.md, leaving the others alone."""
    old = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.S | re.M)
    new = pattern.sub(lambda _: section + "\n", old) if pattern.search(old) else (
        old.rstrip("\n") + "\n\n" + section
    )
    DOC.parent.mkdir(parents=True, exist_ok=True)
    tmp = DOC.with_suffix(".md.tmp")
    tmp.write_text(new)
    tmp.replace(DOC)


if __name__ == "__main__":
    main()
