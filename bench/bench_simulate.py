"""Benchmark: simulating frame-classifier softmax for all of Breakfast (3.59 M frames x 48).

    .venv/bin/python bench/bench_simulate.py [--repeats 3]

Reads the real Breakfast labels (../shared/data or $KITCHEN_DATA; skips when absent) with
the MS-TCN layout readers, then times :func:`data_prep.simulate.simulate_softmax` at the
paper's 20.6 % with each model (``segment``, the default, and ``ar1``) against a baseline
measured in the same run: drawing the (frames, classes) float32 Gaussian noise alone, the
floor any such simulation pays. Prints the median of ``--repeats`` runs and the ratios;
the runs of the three timings are interleaved, so machine load hits them alike.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from data_prep import real_data_dir
from data_prep.readers import read_label_file, read_mapping
from data_prep.simulate import simulate_softmax
from data_prep.table import DatasetCard, FrameTable, VideoLabels


def _breakfast() -> FrameTable | None:
    data = real_data_dir()
    if data is None:
        return None
    root = data / "breakfast"
    classes = read_mapping(root / "mapping.txt")
    index = {c: i for i, c in enumerate(classes)}
    made = [
        VideoLabels(f.stem, read_label_file(f, index), f.stem.split("_")[0])
        for f in sorted((root / "groundTruth").glob("*.txt"))
    ]
    card = DatasetCard("breakfast", 15.0, classes, "SIL", "bench", "0")
    return FrameTable.from_videos(card, made)


def _time_s(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    table = _breakfast()
    if table is None:
        print("skipped: real annotations not found (set KITCHEN_DATA)")
        return
    n, c = table.num_frames, table.card.num_classes
    runs: dict[str, list[float]] = {"baseline": [], "segment": [], "ar1": []}
    work = {
        "baseline": lambda: np.random.default_rng(0).standard_normal((n, c), dtype=np.float32),
        "segment": lambda: simulate_softmax(table, 20.6, seed=0, model="segment"),
        "ar1": lambda: simulate_softmax(table, 20.6, seed=0, model="ar1"),
    }
    for _ in range(args.repeats):
        for name, fn in work.items():
            runs[name].append(_time_s(fn))
    base = statistics.median(runs["baseline"])
    print(f"breakfast: {table.num_videos} videos, {n:,} frames x {c} classes")
    print(f"baseline (draw the noise only): median {base:.2f} s over {args.repeats} runs")
    for name in ("segment", "ar1"):
        med = statistics.median(runs[name])
        print(f"simulate_softmax 20.6% {name:<8} median {med:.2f} s over {args.repeats} runs "
              f"({med / base:.1f}x baseline)")


if __name__ == "__main__":
    main()
