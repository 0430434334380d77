"""Verdicts on the paper's claims from a finished reproduction study, as markdown tables.

    .venv/bin/python studies/reproduction_verdicts.py studies/reproduction.yaml \
        [--tracking-uri sqlite:///…] > verdicts.md

Reads the study through the query API only (no Ray, no torch). Every number is a mean over
seeds with a 95 % confidence interval (Student t over the seeds); differences between two
conditions are paired by seed (same seed: same initialisation and batch draws where the
conditions allow) and tested with a paired t-test. The verdict rule, the same for every claim:

- **supported**: the interval of the claimed difference lies entirely on the claimed side;
- **contradicted**: it lies entirely on the other side;
- **inconclusive**: it contains 0 (or fewer than 2 seeds: no interval).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from study import load_study
from study.lease import check_store
from study.spec import load_spec
from study.store_checks import check_tracking_uri
from study.uri import resolve_tracking_uri

SOURCES_ORDER = ("breakfast", "salads", "mpii")


def ci(values: Sequence[float]) -> tuple[float, float, float, float]:
    """mean, CI low, CI high, p (two-sided one-sample t-test of the mean against 0)."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    m = float(x.mean()) if x.size else math.nan
    if x.size < 2:
        return m, math.nan, math.nan, math.nan
    sd = float(x.std(ddof=1))
    if sd == 0:
        return m, m, m, (0.0 if m != 0 else 1.0)
    half = float(stats.t.ppf(0.975, x.size - 1)) * sd / math.sqrt(x.size)
    p = float(stats.ttest_1samp(x, 0.0).pvalue)
    return m, m - half, m + half, p


def verdict(lo: float, hi: float, claimed_positive: bool = True) -> str:
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "inconclusive"
    if lo > 0:
        return "supported" if claimed_positive else "contradicted"
    if hi < 0:
        return "contradicted" if claimed_positive else "supported"
    return "inconclusive"


def fmt(m: float, lo: float, hi: float, p: float | None = None) -> str:
    if not math.isfinite(lo):
        return f"{m:+.2f} (no CI)"
    s = f"{m:+.2f} [{lo:+.2f}, {hi:+.2f}]"
    return s + (f", p={p:.3f}" if p is not None and math.isfinite(p) else "")


def by_seed(df: pd.DataFrame, col: str) -> pd.Series:
    return df.groupby("seed")[col].mean()


def checked_study(spec: str, tracking_uri: str | None) -> Any:
    """``load_study`` after the checks `kitchen-study report` makes first: a bad spec or an
    unusable store is one line, and a silent tracking server is not waited on through
    MLflow's retries."""
    uri = resolve_tracking_uri(tracking_uri, load_spec(spec).tracking_uri)
    check_tracking_uri(uri)
    check_store(uri)
    return load_study(spec, tracking_uri=uri)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("spec")
    ap.add_argument("--tracking-uri", default=None)
    args = ap.parse_args()
    s = checked_study(args.spec, args.tracking_uri)
    res = s.results()
    base = res[res["kind"] == "baseline"]
    gains = s.gains()
    out: list[str] = []

    # -- Table 4: the LSTM vs the CNN (input) it reads --------------------------------------
    out += ["### Claim 1 — the LSTM beats the CNN it reads (Table 4)", "",
            "| dataset (split) | CNN input | LSTM baseline | LSTM − CNN, mean [95 % CI], p | "
            "paper (LSTM − CNN) | verdict |", "|---|---|---|---|---|---|"]
    paper_t4 = {"breakfast": 27.83 - 20.57, "salads": 42.67 - 37.48, "mpii": 39.19 - 36.10}
    for (t, sp), g in base.groupby(["target", "target_split"]):
        d = (g["frame_acc"] - g["input_acc"]).to_numpy()
        m, lo, hi, p = ci(d)
        out.append(f"| {t} ({sp}) | {g['input_acc'].mean():.2f} | {g['frame_acc'].mean():.2f} "
                   f"| {fmt(m, lo, hi, p)} | +{paper_t4.get(t, math.nan):.2f} (avg of 4 splits) "
                   f"| {verdict(lo, hi)} |")
    # the paper's Table 4 averages the splits: where a dataset ran on several, the same
    # average (per seed over the splits, then the interval over seeds)
    for t, g in base.groupby("target"):
        if g["target_split"].nunique() < 2:
            continue
        d = (g.assign(d=g["frame_acc"] - g["input_acc"]).groupby("seed")["d"].mean())
        m, lo, hi, p = ci(d.to_numpy())
        out.append(f"| {t} (mean of {g['target_split'].nunique()} splits) | "
                   f"{g['input_acc'].mean():.2f} | {g['frame_acc'].mean():.2f} | "
                   f"{fmt(m, lo, hi, p)} | +{paper_t4.get(t, math.nan):.2f} (avg of 4 splits) "
                   f"| {verdict(lo, hi)} |")

    # -- Table 5: arrangement x mode on 50 Salads -> Breakfast ------------------------------
    grid = gains[(gains["source"] == "salads") & (gains["target"] == "breakfast")]
    paper_t5 = {("joint", "merged"): 1.25, ("joint", "concat"): 0.91, ("joint", "random"): 1.45,
                ("joint", "multiple_random"): -0.51, ("transfer", "merged"): 1.27,
                ("transfer", "concat"): 1.84, ("transfer", "random"): 0.53,
                ("transfer", "multiple_random"): 0.16}
    out += ["", "### Claims 2–3 — arrangements and modes, 50 Salads → Breakfast (Table 5)", "",
            "Gain over the no-transfer baseline (same seed), frame accuracy points.", "",
            "| mode | arrangement | gain, mean [95 % CI], p | paper gain |", "|---|---|---|---|"]
    cell: dict[tuple[str, str], pd.Series] = {}
    for (mode, arr), g in grid.groupby(["mode", "arrangement"]):
        cell[(mode, arr)] = by_seed(g, "gain")
        m, lo, hi, p = ci(cell[(mode, arr)].to_numpy())
        out.append(f"| {mode} | {arr} | {fmt(m, lo, hi, p)} | "
                   f"{paper_t5.get((mode, arr), math.nan):+.2f} |")
    out += ["", "| claim | difference, mean [95 % CI], p | verdict |", "|---|---|---|"]
    if ("transfer", "multiple_random") in cell:
        mr = pd.concat([cell[("joint", "multiple_random")], cell[("transfer", "multiple_random")]],
                       axis=1).mean(axis=1)
        m, lo, hi, p = ci(mr.to_numpy())
        out.append(f"| multiple random maps hurt (gain < 0, both modes) | {fmt(m, lo, hi, p)} "
                   f"| {verdict(lo, hi, claimed_positive=False)} |")
    for arr in ("concat", "merged"):
        best = max((cell[(mo, arr)] for mo in ("joint", "transfer") if (mo, arr) in cell),
                   key=lambda x: x.mean(), default=None)
        if best is not None:
            m, lo, hi, p = ci(best.to_numpy())
            out.append(f"| {arr} beats no transfer (its better mode) | {fmt(m, lo, hi, p)} "
                       f"| {verdict(lo, hi)} |")
    for arr in ("merged", "concat", "random", "multiple_random"):
        if ("transfer", arr) in cell and ("joint", arr) in cell:
            d = (cell[("transfer", arr)] - cell[("joint", arr)]).dropna()
            m, lo, hi, p = ci(d.to_numpy())
            out.append(f"| transfer beats joint ({arr}) | {fmt(m, lo, hi, p)} | "
                       f"{verdict(lo, hi)} |")
    if ("transfer", "concat") in cell:
        tc = cell[("transfer", "concat")]
        for other, series in sorted(cell.items()):
            if other == ("transfer", "concat"):
                continue
            d = (tc - series).dropna()
            m, lo, hi, p = ci(d.to_numpy())
            out.append(f"| transfer+concat beats {other[0]}+{other[1]} | {fmt(m, lo, hi, p)} "
                       f"| {verdict(lo, hi)} |")

    # -- Tables 6-8: concat transfer between every pair -------------------------------------
    pairs = gains[(gains["mode"] == "transfer") & (gains["arrangement"] == "concat")]
    paper_68 = {("salads", "breakfast"): 0.68, ("mpii", "breakfast"): 1.08,
                ("breakfast", "salads"): 1.30, ("mpii", "salads"): 0.54,
                ("breakfast", "mpii"): 0.05, ("salads", "mpii"): 0.29}
    out += ["", "### Claims 4 and 6 — transfer with concatenated labels (Tables 6–8)", "",
            "| source → target | gain, mean [95 % CI], p | paper avg gain | verdict (gain > 0) |",
            "|---|---|---|---|"]
    per_source: dict[str, list[pd.Series]] = {}
    for (src, tgt), g in pairs.groupby(["source", "target"]):
        sd = by_seed(g, "gain")
        per_source.setdefault(src, []).append(sd)
        m, lo, hi, p = ci(sd.to_numpy())
        out.append(f"| {src} → {tgt} | {fmt(m, lo, hi, p)} | "
                   f"{paper_68.get((src, tgt), math.nan):+.2f} | {verdict(lo, hi)} |")
    means = {src: pd.concat(v, axis=1).mean(axis=1) for src, v in per_source.items()}
    out += ["", "| source | mean gain over its targets, mean [95 % CI] |", "|---|---|"]
    for src, v in sorted(means.items()):
        m, lo, hi, _ = ci(v.to_numpy())
        out.append(f"| {src} | {fmt(m, lo, hi)} |")
    if "mpii" in means:
        out += ["", "| claim | difference, mean [95 % CI], p | verdict |", "|---|---|---|"]
        for src, v in sorted(means.items()):
            if src == "mpii":
                continue
            d = (means["mpii"] - v).dropna()
            m, lo, hi, p = ci(d.to_numpy())
            out.append(f"| MPII transfers better than {src} | {fmt(m, lo, hi, p)} | "
                       f"{verdict(lo, hi)} |")

    # -- Table 9: convergence ----------------------------------------------------------------
    conv = s.convergence(mode="transfer")
    conv = conv[(conv["arrangement"].isin(["concat", ""])) | (conv["series"] == "baseline")]
    out += ["", "### Claim 5 — pre-trained LSTMs converge faster (Table 9)", "",
            "Concat transfer minus the no-transfer baseline at each evaluation point (same "
            "target, split and seed).", "",
            "| source → target | "
            + " | ".join(str(it) for it in sorted(conv["iteration"].unique()))
            + " | verdict (first point) |",
            "|---|" + "---|" * (conv["iteration"].nunique() + 1)]
    b = conv[conv["series"] == "baseline"].set_index(["target", "target_split", "seed",
                                                       "iteration"])["frame_acc"]
    tr = conv[conv["series"] != "baseline"]
    iters = sorted(conv["iteration"].unique())
    for (src, tgt), g in tr.groupby(["source", "target"]):
        cells, first = [], None
        for it in iters:
            gi = g[g["iteration"] == it]
            d = [r.frame_acc - b.get((r.target, r.target_split, r.seed, it), math.nan)
                 for r in gi.itertuples()]
            m, lo, hi, _ = ci(d)
            band = f" [{lo:+.1f}, {hi:+.1f}]" if math.isfinite(lo) else ""
            cells.append(f"{m:+.1f}{band}")
            if first is None:
                first = (lo, hi)
        out.append(f"| {src} → {tgt} | " + " | ".join(cells) + f" | {verdict(*first)} |")
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    from _cli import run  # studies/ is the script's own folder, first on sys.path

    raise SystemExit(run(main))
