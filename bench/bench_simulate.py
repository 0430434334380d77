"""Benchmark: simulating frame-classifier softmax for all of Breakfast (3.59 M frames x 48),
and measuring the calibration statistics of the default model on Breakfast cam01.

    .venv/bin/python bench/bench_simulate.py [--repeats 3] [--report-repeats 3]

Reads the real Breakfast labels (../shared/data or $KITCHEN_DATA; skips when absent) with
the MS-TCN layout readers, then times :func:`data_prep.simulate.simulate_softmax` at the
paper's 20.6 % with every model of :data:`data_prep.sim_models.MODELS` against a baseline
measured in the same run: drawing the (frames, classes) float32 Gaussian noise alone, the
floor any such simulation pays. The runs of all timings are interleaved, so machine load
hits them alike. The table has no splits, so ``confuser`` scores each participant's videos
with the other participants' parameters (its folds without splits, docs/data.md).

Then, on the converter's Breakfast cam01 table (with its four splits) simulated once with
the default model, times :func:`data_prep.calibration.calibration_report` on split 1 - what
``kitchen-study simulate --report`` measures - without the memorisation check
(``--draws 0``) and with it (8 fresh draws), against the same noise baseline at that
table's size. Prints medians and ratios.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from data_prep import breakfast, real_data_dir
from data_prep.calibration import calibration_report
from data_prep.readers import read_label_file, read_mapping
from data_prep.sim_models import MODELS
from data_prep.simulate import redraw, simulate, simulate_softmax
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


def _interleaved(work: dict, repeats: int) -> dict[str, float]:
    runs: dict[str, list[float]] = {name: [] for name in work}
    for _ in range(repeats):
        for name, fn in work.items():
            runs[name].append(_time_s(fn))
    return {name: statistics.median(r) for name, r in runs.items()}


def _noise(n: int, c: int):
    return lambda: np.random.default_rng(0).standard_normal((n, c), dtype=np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--report-repeats", type=int, default=3)
    args = ap.parse_args()
    if args.repeats < 1 or args.report_repeats < 1:
        ap.error("--repeats and --report-repeats must be at least 1 (a median needs a run)")
    table = _breakfast()
    if table is None:
        print("skipped: real annotations not found (set KITCHEN_DATA)")
        return
    n, c = table.num_frames, table.card.num_classes
    work = {"baseline": _noise(n, c)}
    for model in MODELS:
        work[model] = lambda m=model: simulate_softmax(table, 20.6, seed=0, model=m)
    med = _interleaved(work, args.repeats)
    base = med["baseline"]
    print(f"breakfast: {table.num_videos} videos, {n:,} frames x {c} classes")
    print(f"baseline (draw the noise only): median {base:.2f} s over {args.repeats} runs")
    for model in MODELS:
        print(f"simulate_softmax 20.6% {model:<9} median {med[model]:.2f} s over "
              f"{args.repeats} runs ({med[model] / base:.1f}x baseline)")

    cam01 = simulate(breakfast.convert(real_data_dir() / "breakfast", cameras="cam01"), seed=0)
    draw = redraw(cam01)
    n1 = cam01.num_frames
    report = {
        "baseline": _noise(n1, c),
        "report --draws 0": lambda: calibration_report(cam01, 1),
        "report (8 draws)": lambda: calibration_report(cam01, 1, draw=draw),
    }
    med = _interleaved(report, args.report_repeats)
    print(f"breakfast cam01: {cam01.num_videos} videos, {n1:,} frames; "
          f"baseline median {med['baseline']:.2f} s over {args.report_repeats} runs")
    for name in list(report)[1:]:
        print(f"calibration {name:<17} median {med[name]:.2f} s over {args.report_repeats} "
              f"runs ({med[name] / med['baseline']:.1f}x baseline)")


if __name__ == "__main__":
    main()
