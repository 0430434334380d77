"""How much a reproduction verdict owes to the simulated classifier's draw, as markdown.

    .venv/bin/python studies/draw_robustness.py \
        studies/reproduction.yaml sqlite:///…/draw0.db \
        studies/reproduction_draw1.yaml sqlite:///…/draw1.db > robustness.md

The two studies run the same tasks on two draws of the simulated classifier (different
simulation seeds, same labels, model, protocol and LSTM seeds). For every split-1 cell the
reproduction reports (the LSTM against its input per dataset; the gain of each mode and
arrangement, 50 Salads → Breakfast; the gain of each other concatenated-label transfer
pair),
each draw's mean over LSTM seeds with its 95 % interval and verdict (the rule of
studies/reproduction_verdicts.py), and the difference between the draws with a Welch
interval: a difference whose interval excludes 0 is variation the per-draw intervals, which
are over LSTM seeds on one draw, leave out. Reads through the query API only.
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import pandas as pd
from reproduction_verdicts import checked_study, ci, fmt, verdict
from scipy import stats

SPLIT = "split1"


def welch(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """mean(b) - mean(a) and its 95 % Welch interval (NaN with fewer than 2 values a side)."""
    d = float(b.mean() - a.mean())
    if a.size < 2 or b.size < 2:
        return d, math.nan, math.nan
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    se = math.sqrt(va + vb)
    if se == 0:
        return d, d, d
    dof = (va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1))
    half = float(stats.t.ppf(0.975, dof)) * se
    return d, d - half, d + half


def cells(spec: str, uri: str | None) -> dict[tuple[str, str], np.ndarray]:
    """(claim, cell) -> per-seed values (seed order), split 1 only."""
    s = checked_study(spec, uri)
    res, gains = s.results(), s.gains()
    out: dict[tuple[str, str], np.ndarray] = {}
    base = res[(res["kind"] == "baseline") & (res["target_split"] == SPLIT)]
    for t, g in base.groupby("target"):
        g = g.sort_values("seed")
        out[("LSTM − CNN", str(t))] = (g["frame_acc"] - g["input_acc"]).to_numpy(float)
    gains = gains[gains["target_split"] == SPLIT]
    grid = gains[(gains["source"] == "salads") & (gains["target"] == "breakfast")]
    for (mode, arr), g in grid.groupby(["mode", "arrangement"]):
        out[("50 Salads → Breakfast gain", f"{mode}, {arr}")] = _per_seed(g)
    pairs = gains[(gains["mode"] == "transfer") & (gains["arrangement"] == "concat")]
    for (src, tgt), g in pairs.groupby(["source", "target"]):
        if (src, tgt) != ("salads", "breakfast"):  # the grid's "transfer, concat" cell
            out[("concat transfer gain", f"{src} → {tgt}")] = _per_seed(g)
    return out


def _per_seed(g: pd.DataFrame) -> np.ndarray:
    return g.groupby("seed")["gain"].mean().sort_index().to_numpy(float)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("spec_a", help="the first draw's study spec")
    ap.add_argument("uri_a", help="its tracking URI")
    ap.add_argument("spec_b", help="the second draw's study spec (same tasks on split 1)")
    ap.add_argument("uri_b", help="its tracking URI")
    args = ap.parse_args()
    a, b = cells(args.spec_a, args.uri_a), cells(args.spec_b, args.uri_b)
    missing = sorted(set(a) ^ set(b))
    if missing:
        raise ValueError(f"the two studies do not hold the same split-1 cells: {missing}")
    rows = ["| claim | cell | draw A, mean [95 % CI] | verdict A | draw B, mean [95 % CI] "
            "| verdict B | B − A, mean [95 % Welch CI] |", "|---|---|---|---|---|---|---|"]
    same = moved = 0
    for key in a:
        va, vb = a[key], b[key]
        ma, la, ha, _ = ci(va)
        mb, lb, hb, _ = ci(vb)
        d, dl, dh = welch(va, vb)
        vda, vdb = verdict(la, ha), verdict(lb, hb)
        same += vda == vdb
        shifted = math.isfinite(dl) and (dl > 0 or dh < 0)
        moved += shifted
        band = f"{d:+.2f} [{dl:+.2f}, {dh:+.2f}]" + (" ≠ 0" if shifted else "")
        rows.append(f"| {key[0]} | {key[1]} | {fmt(ma, la, ha)} | {vda} | {fmt(mb, lb, hb)} "
                    f"| {vdb} | {band} |")
    rows += ["", f"Same verdict on both draws: {same} of {len(a)} cells. Cells whose "
             f"difference between the draws excludes 0: {moved} of {len(a)}."]
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    from _cli import run  # studies/ is the script's own folder, first on sys.path

    raise SystemExit(run(main))
