"""Benchmark: simulating frame-classifier softmax for all of Breakfast (3.59 M frames x 48).

    .venv/bin/python bench/bench_simulate.py [--repeats 3]

Reads the real Breakfast labels (../shared/data or $KITCHEN_DATA; skips when absent) with
the MS-TCN layout readers, then times :func:`data_prep.simulate.simulate_softmax` at the
paper's 20.6 % against a baseline measured in the same run: drawing the (frames, classes)
float32 Gaussian noise alone, the floor any such simulation pays. Prints the median of
``--repeats`` runs and the ratio.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from data_prep import real_data_dir
from data_prep.layout import read_label_file, read_mapping
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


def _median_s(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    table = _breakfast()
    if table is None:
        print("skipped: real annotations not found (set KITCHEN_DATA)")
        return
    n, c = table.num_frames, table.card.num_classes
    base = _median_s(
        lambda: np.random.default_rng(0).standard_normal((n, c), dtype=np.float32), args.repeats
    )
    sim = _median_s(lambda: simulate_softmax(table, 20.6, seed=0), args.repeats)
    print(f"breakfast: {table.num_videos} videos, {n:,} frames x {c} classes")
    print(f"baseline (draw the noise only): median {base:.2f} s over {args.repeats} runs")
    print(f"simulate_softmax 20.6%:         median {sim:.2f} s over {args.repeats} runs "
          f"({sim / base:.1f}x baseline)")


if __name__ == "__main__":
    main()
