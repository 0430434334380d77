"""Frame-wise and segmental metrics with the MS-TCN conventions, in percent (0-100).

Reproduces ``eval.py`` of MS-TCN (Abu Farha & Gall, CVPR 2019; itself after Lea et al.'s
TCN metrics):

* frame accuracy: correct frames / all frames, pooled over videos (background frames
  count like any other);
* edit score: ``(1 - levenshtein(P, Y) / max(|P|, |Y|)) * 100`` over the sequences of
  segment labels (runs of equal labels, background segments removed), averaged over
  videos;
* F1@k: each predicted segment, in temporal order, takes the ground-truth segment of
  highest IoU (IoU counts only where the labels agree; ties go to the earliest); it is a
  true positive if that IoU >= k/100 and that ground-truth segment is not already matched,
  else a false positive (MS-TCN does not fall back to a second-best segment); unmatched
  ground-truth segments are false negatives. tp/fp/fn are summed over videos, then
  ``F1 = 2 tp / (2 tp + fp + fn)`` (== 2PR/(P+R)).

Background: ``background`` is a collection of label INDICES whose segments are dropped
before edit and F1 (never from frame accuracy); the functions take it explicitly. The
platform's rule, the same for every dataset, is :func:`segment_background`: **no class is
dropped; every class, the background class included, forms segments** (Breakfast's
``SIL``, 50 Salads' ``background``/``action_start``/``action_end``, MPII's
``Background activity``). Why: MS-TCN's published Breakfast and 50 Salads numbers count
every class. Its ``eval.py`` drops only a class literally named ``background``
(``bg_class=["background"]``, never overridden in ``main``), and neither MS-TCN mapping
has one (Breakfast's background is ``SIL``). A name-based rule would instead drop
background from 50 Salads fine only (its uncovered-frame class is named ``background``
here) and make its edit/F1 incomparable with the other datasets'.

Where MS-TCN divides 0 by 0 or crashes, the rules here are: a video with no segments on
either side has edit 100 (MS-TCN: NaN); F1 with tp = fp = fn = 0 summed over all videos
(nothing to find, nothing predicted) is 100 (MS-TCN prints 0 via ``nan_to_num``);
predicted segments in a video with no ground-truth segments are false positives (MS-TCN:
``argmax`` of an empty array raises). Every other case gives MS-TCN's numbers exactly.
Empty inputs with no frames at all are an error for frame accuracy and :func:`evaluate`.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import numpy as np

__all__ = [
    "METRIC_NAMES",
    "OVERLAPS",
    "edit_score",
    "evaluate",
    "f1_counts",
    "f1_score",
    "frame_accuracy",
    "segment_background",
    "segments",
]

#: F1 overlap thresholds reported by :func:`evaluate` (keys ``f1@10``, ``f1@25``, ``f1@50``).
OVERLAPS: tuple[float, ...] = (0.10, 0.25, 0.50)

# Bound on the (predicted x ground-truth) IoU block held at once in f1_counts.
#: The evaluation metrics, in percent: the one list of their names (MLflow keys, query
#: columns, report rows and ``best --metric`` choices all come from here). ``input_acc`` is
#: the argmax accuracy of the input class scores alone (the paper's "CNN" column).
METRIC_NAMES: tuple[str, ...] = ("frame_acc", "input_acc", "edit", "f1@10", "f1@25", "f1@50")

_IOU_BLOCK = 1 << 22


def _labels(x: Any, what: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise ValueError(f"{what} must be a 1-D array of frame labels, got shape {arr.shape}")
    if arr.size == 0:
        return arr.astype(np.int64)
    if arr.dtype.kind not in "iu":
        raise ValueError(f"{what} must hold integer labels, got dtype {arr.dtype}")
    return arr


def _pair(pred: Any, gt: Any) -> tuple[np.ndarray, np.ndarray]:
    p, g = _labels(pred, "pred"), _labels(gt, "gt")
    if p.shape != g.shape:
        raise ValueError(f"pred has {p.size} frames but gt has {g.size}")
    return p, g


def segment_background(classes: Sequence[str]) -> tuple[int, ...]:
    """The label indices whose segments the platform drops before edit and F1: none, for
    every dataset (see the module doc). Takes the class list so every caller states the
    dataset it evaluates; the answer deliberately does not depend on the names."""
    del classes
    return ()


def segments(
    labels: Any, background: Collection[int] = ()
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Runs of equal labels as ``(label, start, end)`` arrays (end exclusive), with the runs
    of ``background`` labels removed. Vectorised: no Python loop over frames."""
    x = _labels(labels, "labels")
    n = x.size
    if n == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    change = np.flatnonzero(x[1:] != x[:-1]) + 1
    starts = np.concatenate(([0], change)).astype(np.int64)
    ends = np.concatenate((change, [n])).astype(np.int64)
    labs = x[starts].astype(np.int64)
    if len(background):
        keep = ~np.isin(labs, np.fromiter(background, dtype=np.int64))
        labs, starts, ends = labs[keep], starts[keep], ends[keep]
    return labs, starts, ends


def frame_accuracy(pred: Any, gt: Any) -> float:
    """Percentage of frames whose predicted label equals the ground truth."""
    p, g = _pair(pred, gt)
    if g.size == 0:
        raise ValueError("frame accuracy of zero frames is undefined")
    return 100.0 * float(np.count_nonzero(p == g)) / g.size


def _levenshtein(a: np.ndarray, b: np.ndarray) -> int:
    """Edit distance (unit insert/delete/substitute). One numpy pass per element of the
    shorter sequence: within a row, D[i, j] = min(c[j], D[i, j-1] + 1) is a running minimum
    of c[j] - j, shifted back by j."""
    if a.size > b.size:
        a, b = b, a
    cols = np.arange(b.size + 1, dtype=np.int64)
    row = cols.copy()
    cand = np.empty(b.size + 1, dtype=np.int64)
    for i, x in enumerate(a, start=1):
        cand[0] = i
        np.minimum(row[1:] + 1, row[:-1] + (b != x), out=cand[1:])
        row = np.minimum.accumulate(cand - cols) + cols
    return int(row[-1])


def edit_score(pred: Any, gt: Any, background: Collection[int] = ()) -> float:
    """MS-TCN's normalised segmental edit score of one video, in percent."""
    p, g = _pair(pred, gt)
    return _edit(segments(p, background)[0], segments(g, background)[0])


def _edit(ps: np.ndarray, gs: np.ndarray) -> float:
    longest = max(ps.size, gs.size)
    if longest == 0:
        return 100.0  # no segments on either side: the sequences agree (MS-TCN: 0/0)
    return (1.0 - _levenshtein(ps, gs) / longest) * 100.0


def _best_matches(
    pseg: tuple[np.ndarray, ...], yseg: tuple[np.ndarray, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """For each predicted segment: the ground-truth segment of highest IoU (label-gated, first
    maximum like MS-TCN's ``argmax``) and that IoU. Needs both sides non-empty."""
    pl, ps, pe = pseg
    yl, ys, ye = yseg
    best_idx = np.empty(pl.size, dtype=np.int64)
    best_iou = np.empty(pl.size, dtype=np.float64)
    rows = max(1, _IOU_BLOCK // yl.size)
    for lo in range(0, pl.size, rows):
        sl = slice(lo, lo + rows)
        inter = np.minimum(pe[sl, None], ye) - np.maximum(ps[sl, None], ys)
        union = np.maximum(pe[sl, None], ye) - np.minimum(ps[sl, None], ys)
        iou = (inter / union) * (pl[sl, None] == yl)  # as MS-TCN: other labels count 0
        best_idx[sl] = iou.argmax(axis=1)
        best_iou[sl] = iou[np.arange(iou.shape[0]), best_idx[sl]]
    return best_idx, best_iou


def _counts(
    pseg: tuple[np.ndarray, ...],
    yseg: tuple[np.ndarray, ...],
    overlaps: Sequence[float],
) -> np.ndarray:
    """(len(overlaps), 3) array of tp, fp, fn."""
    n_pred, n_gt = pseg[0].size, yseg[0].size
    out = np.zeros((len(overlaps), 3), dtype=np.int64)
    if n_pred == 0 or n_gt == 0:
        out[:] = (0, n_pred, n_gt)
        return out
    best_idx, best_iou = _best_matches(pseg, yseg)
    for s, ov in enumerate(overlaps):
        # A prediction is a hit iff it qualifies and is the first qualifying prediction to
        # pick its ground-truth segment (MS-TCN's `hits` array): hits = distinct picks.
        tp = np.unique(best_idx[best_iou >= ov]).size
        out[s] = (tp, n_pred - tp, n_gt - tp)
    return out


def _check_overlap(overlap: float) -> None:
    if not 0.0 < overlap <= 1.0:
        raise ValueError(f"overlap must be in (0, 1], got {overlap!r}")


def f1_counts(
    pred: Any, gt: Any, overlap: float, background: Collection[int] = ()
) -> tuple[int, int, int]:
    """(tp, fp, fn) of one video at IoU threshold ``overlap`` (0 < overlap <= 1), with
    MS-TCN's greedy matching (see module doc)."""
    _check_overlap(overlap)
    p, g = _pair(pred, gt)
    tp, fp, fn = _counts(segments(p, background), segments(g, background), [overlap])[0]
    return int(tp), int(fp), int(fn)


def f1_score(tp: float, fp: float, fn: float) -> float:
    """F1 in percent from counts; 100 when there was nothing to find and nothing found."""
    denom = 2 * tp + fp + fn
    return 100.0 if denom == 0 else 100.0 * 2 * tp / denom


def evaluate(
    preds: Sequence[Any], gts: Sequence[Any], background: Collection[int] = ()
) -> dict[str, float]:
    """MS-TCN's evaluation over a set of videos: ``frame_acc`` pooled over all frames,
    ``edit`` averaged over videos, ``f1@10/25/50`` from tp/fp/fn summed over videos."""
    if len(preds) != len(gts):
        raise ValueError(f"{len(preds)} predictions for {len(gts)} ground-truth videos")
    if len(gts) == 0:
        raise ValueError("no videos to evaluate")
    correct = total = 0
    edit = 0.0
    counts = np.zeros((len(OVERLAPS), 3), dtype=np.int64)
    for i, (pred, gt) in enumerate(zip(preds, gts, strict=True)):
        try:
            p, g = _pair(pred, gt)
        except ValueError as e:
            raise ValueError(f"video {i}: {e}") from None
        correct += int(np.count_nonzero(p == g))
        total += g.size
        pseg, yseg = segments(p, background), segments(g, background)
        edit += _edit(pseg[0], yseg[0])
        counts += _counts(pseg, yseg, OVERLAPS)
    if total == 0:
        raise ValueError("no frames to evaluate")
    out = {"frame_acc": 100.0 * correct / total, "edit": edit / len(gts)}
    for s, ov in enumerate(OVERLAPS):
        out[f"f1@{round(ov * 100)}"] = f1_score(*(int(c) for c in counts[s]))
    return out
