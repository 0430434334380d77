"""How well transferability estimates rank the measured gains of transfer edges: rank
correlations with bootstrap confidence intervals, and top-1 hits per target.

Pure functions (numpy, scipy, pandas); no torch, no Ray, no MLflow. Estimates are oriented by
:data:`trainables.transferability.ESTIMATORS` (``higher_is_better``; True for unregistered
names), so a useful estimator always shows positive correlations.
``study.estimates.quality_table`` applies :func:`estimator_quality` to a study's edges.

Two trivial controls (:data:`CONTROLS`) any estimator must beat are scored the same way,
beside the estimators: :func:`control_estimates` gives, per edge, the source's size in
training frames and the share of the target's classes the source also names. They need
no model: an estimator that does not rank gains better than these adds nothing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from .transferability import ESTIMATORS

__all__ = ["CONTROLS", "control_estimates", "estimator_quality", "label_overlap",
           "top1_by_target"]

#: The trivial controls, by name (as ``estimate.<name>`` beside the estimators), and what
#: they are. Higher predicts a larger gain for both (the obvious guesses: more source
#: data helps; a source that shares the target's actions helps).
CONTROLS: dict[str, str] = {
    "control_size": "frames of the source's training videos in its split",
    "control_overlap": "share of the target's class names that the source also has",
}


def _class_name(name: str) -> str:
    return "_".join(name.strip().lower().replace("-", " ").replace("_", " ").split())


def label_overlap(target_classes: Sequence[str], source_classes: Sequence[str]) -> float:
    """The share of the target's classes whose name the source also has, in [0, 1], names
    compared case-insensitively with ``-``, ``_`` and runs of spaces taken as one separator
    (``Pour-Milk`` == ``pour_milk``). 1 for a source with the target's vocabulary (e.g.
    another split of the same dataset). Of the target, not symmetric (Jaccard would
    penalise a source for the classes it has beyond the target's)."""
    target = {_class_name(c) for c in target_classes}
    if not target:
        raise ValueError("the target has no classes")
    return len(target & {_class_name(c) for c in source_classes}) / len(target)


def control_estimates(source_videos: Sequence[Any], target_classes: Sequence[str],
                      source_classes: Sequence[str]) -> dict[str, float]:
    """The :data:`CONTROLS` of one edge: ``control_size`` = frames of ``source_videos``
    (per-video label arrays of the source split's training videos), ``control_overlap`` =
    :func:`label_overlap`."""
    return {"control_size": float(sum(len(v) for v in source_videos)),
            "control_overlap": label_overlap(target_classes, source_classes)}



def _ranks(a: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(a, axis=-1)


def _pearson_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    xc = x - x.mean(-1, keepdims=True)
    yc = y - y.mean(-1, keepdims=True)
    den = np.sqrt((xc * xc).sum(-1) * (yc * yc).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (xc * yc).sum(-1) / np.where(den > 0, den, 1.0), np.nan)


def _spearman_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman's rho per row (ties get average ranks; NaN where a row is constant)."""
    return _pearson_rows(_ranks(x), _ranks(y))


def _kendall_rows(x: np.ndarray, y: np.ndarray, chunk_cells: int = 1 << 22) -> np.ndarray:
    """Kendall's tau-b per row: ``sum s_x s_y / sqrt(sum s_x^2 sum s_y^2)`` over pairs
    ``i < j`` with ``s = sign(difference)`` (scipy's default variant; NaN where a row is
    constant). Vectorised over rows in chunks of about ``chunk_cells`` pair cells."""
    rows, n = x.shape
    iu, ju = np.triu_indices(n, 1)
    out = np.full(rows, np.nan)
    if iu.size == 0:
        return out
    step = max(1, chunk_cells // iu.size)
    for lo in range(0, rows, step):
        xs, ys = x[lo:lo + step], y[lo:lo + step]
        sx = np.sign(xs[:, iu] - xs[:, ju])
        sy = np.sign(ys[:, iu] - ys[:, ju])
        den = np.sqrt((sx * sx).sum(1) * (sy * sy).sum(1))
        with np.errstate(invalid="ignore", divide="ignore"):
            out[lo:lo + step] = np.where(den > 0, (sx * sy).sum(1) / np.where(den > 0, den, 1.0),
                                         np.nan)
    return out


def _orientation(names: Sequence[str], higher_is_better: Mapping[str, bool] | None
                 ) -> dict[str, bool]:
    given = dict(higher_is_better or {})
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise ValueError(f"higher_is_better names estimators not in the estimates: {unknown}")
    return {n: given.get(n, ESTIMATORS[n].higher_is_better if n in ESTIMATORS else True)
            for n in names}


def _as_frame(estimates: Any, gains: Any, targets: Any
              ) -> tuple[pd.DataFrame, np.ndarray, np.ndarray | None]:
    est = estimates if isinstance(estimates, pd.DataFrame) else pd.DataFrame(dict(estimates))
    if est.shape[1] == 0:
        raise ValueError("no estimators: the estimates have no columns")
    if isinstance(gains, pd.Series) and not gains.index.equals(est.index):
        raise ValueError("gains and estimates have different indexes (align them first)")
    g = np.asarray(gains, dtype=np.float64)
    if g.shape != (len(est),):
        raise ValueError(f"gains have shape {g.shape}, expected ({len(est)},): one per edge")
    t = None
    if targets is not None:
        t = np.asarray(targets, dtype=object)
        if t.shape != (len(est),):
            raise ValueError(f"targets have shape {t.shape}, expected ({len(est)},)")
    for c in est.columns:
        if not pd.api.types.is_numeric_dtype(est[c]):
            raise ValueError(f"estimate column {c!r} is not numeric")
    return est, g, t


def top1_by_target(
    estimates: pd.DataFrame | Mapping[str, Sequence[float]],
    gains: Sequence[float],
    targets: Sequence[Any],
    *,
    higher_is_better: Mapping[str, bool] | None = None,
) -> pd.DataFrame:
    """Per estimator and target: does the best-estimated source have the best measured
    gain? One row per (estimator, target) with ``n_sources`` (edges of that target with a
    finite estimate and gain), ``best_estimated`` / ``best_measured`` (the row labels of
    ``estimates`` at the maximum, ties joined by ``", "``) and ``hit`` in [0, 1]:
    ``|E & G| / |E|`` for E the best-estimated rows and G the best-measured ones — the
    chance that picking uniformly among tied estimates picks a best source (1 or 0 without
    ties). Targets with fewer than two such edges have nothing to choose: ``hit`` is NaN.
    Estimates are oriented by ``higher_is_better`` (default:
    :data:`~trainables.transferability.ESTIMATORS`'s, True for unregistered names).
    """
    if targets is None:
        raise ValueError("top1_by_target needs each edge's target")
    est, g, t = _as_frame(estimates, gains, targets)
    orient = _orientation([str(c) for c in est.columns], higher_is_better)
    labels = np.asarray([str(i) for i in est.index], dtype=object)
    rows = []
    for col in est.columns:
        sign = 1.0 if orient[str(col)] else -1.0
        e = sign * est[col].to_numpy(dtype=np.float64)
        ok = np.isfinite(e) & np.isfinite(g)
        for target in pd.unique(t):
            sel = ok & (t == target)
            n = int(sel.sum())
            row = {"estimator": str(col), "target": target, "n_sources": n,
                   "best_estimated": None, "best_measured": None, "hit": math.nan}
            if n >= 1:
                es, gs, ls = e[sel], g[sel], labels[sel]
                best_e = es == es.max()
                best_g = gs == gs.max()
                row["best_estimated"] = ", ".join(ls[best_e])
                row["best_measured"] = ", ".join(ls[best_g])
                if n >= 2:
                    row["hit"] = float((best_e & best_g).sum() / best_e.sum())
            rows.append(row)
    return pd.DataFrame(rows, columns=["estimator", "target", "n_sources", "best_estimated",
                                       "best_measured", "hit"])


def estimator_quality(
    estimates: pd.DataFrame | Mapping[str, Sequence[float]],
    gains: Sequence[float],
    targets: Sequence[Any] | None = None,
    *,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    higher_is_better: Mapping[str, bool] | None = None,
) -> pd.DataFrame:
    """How well each estimator ranks the measured gains: one flat row per estimator.

    ``estimates``: one row per edge, one numeric column per estimator (a DataFrame or a
    mapping of equal-length sequences); ``gains``: the measured gain of each edge, by
    position (a Series must share the DataFrame's index); ``targets``: each edge's target,
    for the top-1 columns (None: they are NaN).

    Per estimator, over the edges where both the estimate and the gain are finite
    (``n_edges``; the others are left out and counted in ``n_missing``), with the estimate
    oriented so that higher predicts a larger gain (``higher_is_better``; default from
    :data:`~trainables.transferability.ESTIMATORS`, True for unregistered names):

    * ``spearman`` (rho, average ranks for ties) and ``kendall`` (tau-b) — NaN with fewer
      than 3 edges or a constant side;
    * ``*_lo`` / ``*_hi``: percentile bootstrap ``confidence`` interval: ``n_boot``
      resamples of the edges with replacement from ``numpy.random.default_rng(seed)``
      (the same resamples for every estimator with the same ``n_edges``); resamples where
      the statistic is undefined (constant) are left out and ``n_boot_valid`` counts the
      rest. Edges are resampled independently (edges sharing a target are not, strictly);
    * ``top1_hit_pct``: the mean of :func:`top1_by_target`'s ``hit`` over targets with at
      least two edges (``top1_targets`` of them), in percent.

    * ``control``: whether the column is one of the trivial :data:`CONTROLS`.

    Columns: estimator, higher_is_better, n_edges, n_missing, spearman, spearman_lo,
    spearman_hi, kendall, kendall_lo, kendall_hi, n_boot_valid, top1_hit_pct,
    top1_targets, control.
    """
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    est, g, t = _as_frame(estimates, gains, targets)
    orient = _orientation([str(c) for c in est.columns], higher_is_better)
    top1 = (top1_by_target(est, g, t, higher_is_better=orient) if t is not None else None)
    q = (1 - confidence) / 2 * 100
    rows = []
    for col in est.columns:
        name = str(col)
        sign = 1.0 if orient[name] else -1.0
        e = sign * est[col].to_numpy(dtype=np.float64)
        ok = np.isfinite(e) & np.isfinite(g)
        x, y = e[ok], g[ok]
        n = int(ok.sum())
        row: dict[str, Any] = {"estimator": name, "higher_is_better": orient[name],
                               "n_edges": n, "n_missing": int(len(e) - n)}
        stats = {"spearman": math.nan, "kendall": math.nan}
        bounds = {k: (math.nan, math.nan) for k in stats}
        valid = 0
        if n >= 3:
            stats["spearman"] = float(_spearman_rows(x[None], y[None])[0])
            stats["kendall"] = float(_kendall_rows(x[None], y[None])[0])
            idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
            boots = {"spearman": _spearman_rows(x[idx], y[idx]),
                     "kendall": _kendall_rows(x[idx], y[idx])}
            valid = int(np.isfinite(boots["spearman"]).sum())
            for k, b in boots.items():
                b = b[np.isfinite(b)]
                if b.size:
                    lo, hi = np.percentile(b, [q, 100 - q])
                    bounds[k] = (float(lo), float(hi))
        for k in ("spearman", "kendall"):
            row[k] = stats[k]
            row[f"{k}_lo"], row[f"{k}_hi"] = bounds[k]
        row["n_boot_valid"] = valid
        if top1 is not None:
            hits = top1.loc[top1["estimator"] == name, "hit"].dropna()
            row["top1_hit_pct"] = float(hits.mean() * 100) if len(hits) else math.nan
            row["top1_targets"] = int(len(hits))
        else:
            row["top1_hit_pct"], row["top1_targets"] = math.nan, 0
        row["control"] = name in CONTROLS
        rows.append(row)
    return pd.DataFrame(rows, columns=[
        "estimator", "higher_is_better", "n_edges", "n_missing", "spearman", "spearman_lo",
        "spearman_hi", "kendall", "kendall_lo", "kendall_hi", "n_boot_valid", "top1_hit_pct",
        "top1_targets", "control",
    ])
