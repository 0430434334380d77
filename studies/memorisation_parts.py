"""Split the memorisation check's ``own_gap`` (docs/data.md, "Calibration") into its parts
(``data_prep.calibration.memorisation_parts``): the recalibration classifier fitted on one
draw's training frames, scored on those frames, on the same frames of a fresh draw (same
videos and labels, new noise) and on the held-out test frames.

    python studies/memorisation_parts.py data/salads_sim.parquet [--split 1] [--c 0.01]

own − new noise is noise fitted in-sample; new noise − test is the held-out people. The table
must be a simulation the running version can redraw (its card names the model).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("table", type=Path)
    ap.add_argument("--split", default="1")
    ap.add_argument("--c", type=float, default=0.01, help="the regularisation C")
    a = ap.parse_args(argv)

    from data_prep.calibration import memorisation_parts
    from data_prep.simulate import redraw
    from data_prep.table import read_table

    table = read_table(a.table)
    draw = redraw(table)
    if draw is None:
        print(f"error: {a.table}: not a simulation this version can redraw", file=sys.stderr)
        return 2
    split = int(a.split) if a.split.isdigit() else a.split
    p = memorisation_parts(table, split, draw, a.c)
    print("| dataset | argmax fit / test | own frames | same frames, new noise | held-out "
          "test | own − new noise | new noise − test |")
    print("|---|---|---|---|---|---|---|")
    print(f"| {table.card.name} | {p['argmax_fit']:.2f} / {p['argmax_test']:.2f} | "
          f"{p['own_frames']:.2f} | {p['new_noise']:.2f} | {p['heldout']:.2f} | "
          f"{p['noise_part']:.2f} | {p['people_part']:.2f} |")
    return 0


if __name__ == "__main__":
    from _cli import run  # studies/ is the script's own folder, first on sys.path

    raise SystemExit(run(main))
