"""Split the memorisation check's ``own_gap`` (docs/data.md, "Calibration") into its parts:
the recalibration classifier fitted on one draw's training frames, scored on those frames,
on the same frames of a fresh draw (same videos and labels, new noise) and on the held-out
test frames.

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

    import numpy as np

    from data_prep import calibration as cal
    from data_prep.simulate import redraw
    from data_prep.table import read_table

    table = read_table(a.table)
    draw = redraw(table)
    if draw is None:
        print(f"error: {a.table}: not a simulation this version can redraw", file=sys.stderr)
        return 2
    split = int(a.split) if a.split.isdigit() else a.split
    f = cal._scores(table)
    sf = cal._SplitFrames(table, split, cal.TRAIN_FRAMES)
    x = cal._x(f[sf.fit], "table")
    model = cal._model(a.c, 0).fit(x, sf.y_fit)
    fresh = cal._x(draw(1)[sf.fit], "fresh draw 1")
    argmax_fit = 100 * np.mean(f[sf.fit].argmax(1) == sf.y_fit)
    argmax_test = 100 * np.mean(f[sf.test].argmax(1) == sf.y_test)
    own = 100 * np.mean(model.predict(x) == sf.y_fit)
    new_noise = 100 * np.mean(model.predict(fresh) == sf.y_fit)
    held = 100 * cal._hits_on(model, f, sf.test, sf.y_test, "table") / sf.test.size
    print("| dataset | argmax fit / test | own frames | same frames, new noise | held-out "
          "test | own − new noise | new noise − test |")
    print("|---|---|---|---|---|---|---|")
    print(f"| {table.card.name} | {argmax_fit:.2f} / {argmax_test:.2f} | {own:.2f} | "
          f"{new_noise:.2f} | {held:.2f} | {own - new_noise:.2f} | {new_noise - held:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
