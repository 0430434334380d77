"""How a frame classifier's class scores err: the statistics a simulated classifier is
calibrated against (two-sided, per dataset), measured the same way on any table with
class-score features.

Perrett & Damen measured, with their real RGB frame CNN (``../shared/paper/tables.md``):

* **frame accuracy** (Table 4, CNN column): argmax accuracy of the per-frame scores;
* **recalibration gain** (Table 3, "CNN + SVM" vs "CNN + Softmax", +1.65 points on
  Breakfast): how much a classifier trained on the scores alone, frame by frame, beats
  their argmax. Large: the scores are badly calibrated per frame (e.g. they ignore the
  class prior), which a temporal model would get credit for fixing. Strongly negative: the
  classifier learns something about the training videos that does not transfer, i.e. the
  scores are memorisable (issue 16), which a temporal model would overfit to as well;
* **segment consensus** (Table 2: TSN's 25-frame consensus over each pre-segmented clip,
  18.6 % against 20.6 % single frames): how much averaging the scores over a true segment
  helps. Near or below zero: the classifier's confusions persist for the segment; large:
  its errors are independent noise that any smoother averages away.

And one check the paper did not need (its CNN was a fixed function of the pixels): the
**memorisation check** — a per-frame classifier fitted on the scores of one simulation draw
must do as well on held-out videos as one fitted on eight fresh draws, and not much better
on its own frames than on held-out ones; otherwise the scores carry per-video noise that a
learner can memorise.

The rules, stated once (every function here is pure: a :class:`FrameTable` in, numbers out):

* Features must be class scores: ``dim == num_classes``, finite, non-negative (a softmax;
  rows need not sum to exactly 1). Their log is taken after clipping at
  :data:`LOG_FLOOR`, so a score of 0 (float32 underflow) is a large negative log-score,
  not ``-inf``.
* ``frame_accuracy``: correct frames / all frames of the table, in percent.
* ``recalibration``: a multinomial logistic regression (scikit-learn ``LogisticRegression``,
  lbfgs to ``tol=1e-3``, L2, features standardised) on the per-frame log-scores alone,
  fitted on :data:`TRAIN_FRAMES` (50,000, as the paper's SVM) of the split's TRAIN frames,
  evenly spaced over all of them (all of them if there are fewer), scored on all its TEST
  frames; the gain is its test accuracy minus the argmax accuracy on the same test frames.
  The regularisation ``C`` is chosen from :data:`C_GRID` by :data:`CV_FOLDS`-fold
  cross-validation over whole training videos (``GroupKFold``: no video in both parts),
  highest mean held-out accuracy, ties to the stronger regularisation.
* ``segment_consensus``: for every ground-truth segment (a maximal run of one label inside
  a video) the mean log-score over :data:`CONSENSUS_FRAMES` (25, as TSN) evenly spaced
  frames of it (all its frames when shorter; frame ``floor((i + 1/2) L / 25)``), argmax,
  compared with the segment's label; the percentage of segments right (each segment counts
  once), over all videos of the table. ``consensus_gain`` = segment consensus - frame
  accuracy.
* ``memorisation``: the recalibration classifier (same frames, the ``C`` the
  cross-validation chose) fitted (a) on one draw's training frames and (b) on the same
  frame positions taken from :data:`MEMORISATION_DRAWS` fresh draws in turn (position
  ``i`` from fresh draw ``i mod 8``), both scored on the test frames of the first draw:
  ``draws_gap`` = (b) - (a); ``own_gap`` = (a)'s accuracy on its own training frames minus
  its held-out accuracy; ``argmax_own_gap``, the same difference for the argmax, which fits
  nothing: how much of ``own_gap`` needs no fit at all, the held-out people being harder
  (docs/data.md). A table that is not a simulation (no draws) has none.

:func:`bounds_for` states what the default simulation is calibrated to, per dataset:
frame accuracy within 0.5 of the paper's; on Breakfast recalibration gain +1.65 +- 1.0 and
consensus gain -2.0 +- 1.5 (the paper's numbers), on the other datasets (the paper measured
neither there) recalibration in [-1, +3] and consensus in [-5, +2]; everywhere
``|draws_gap| < 2`` and ``own_gap < 5``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import numpy as np

from .table import FrameTable

__all__ = [
    "MEMORISATION_DRAWS",
    "Bounds",
    "CalibrationReport",
    "bounds_for",
    "calibration_report",
    "frame_accuracy",
    "memorisation",
    "recalibration",
    "segment_consensus",
]

#: Scores are clipped here before the log (float32 softmax underflows to 0).
LOG_FLOOR = 1e-12

#: Training frames the recalibration classifier is fitted on (the paper's SVM: 50,000).
TRAIN_FRAMES = 50_000

#: Frames per segment averaged by the consensus (TSN's 25).
CONSENSUS_FRAMES = 25

#: Regularisation strengths the cross-validation chooses from, and its folds.
C_GRID: tuple[float, ...] = (0.001, 0.01, 0.1, 1.0)
CV_FOLDS = 3

#: Fresh draws the memorisation check fits its second classifier on.
MEMORISATION_DRAWS = 8
#: Fresh draws simulated at once by the memorisation check (each holds a whole table of
#: scores while it is drawn)
MAX_DRAW_THREADS = 4

#: Frames per block when reducing over the whole table (bounds the float64 temporaries).
_BLOCK_FRAMES = 1 << 18


@dataclass(frozen=True)
class Bounds:
    """What a calibrated simulation must satisfy, in percentage points: closed intervals
    for the gains, strict limits for the memorisation check."""

    accuracy_tolerance: float = 0.5
    recalibration: tuple[float, float] = (-1.0, 3.0)
    consensus: tuple[float, float] = (-5.0, 2.0)
    max_draws_gap: float = 2.0
    max_own_gap: float = 5.0


#: Breakfast: the paper's own measurements (Table 3: +1.65; Table 2: 18.59 - 20.57 = -2.0).
BREAKFAST_BOUNDS = Bounds(recalibration=(0.65, 2.65), consensus=(-3.5, -0.5))

#: Datasets the paper measured neither gain on: wide two-sided intervals.
OTHER_BOUNDS = Bounds()


def bounds_for(name: str) -> Bounds:
    """The bounds of a dataset by card name (``breakfast*``: the paper's; else the wide)."""
    return BREAKFAST_BOUNDS if name.lower().startswith("breakfast") else OTHER_BOUNDS


@dataclass(frozen=True)
class CalibrationReport:
    """The statistics of one table's class scores (percent / percentage points); the
    recalibration fields are None without a split, the memorisation ones without draws."""

    frames: int
    frame_accuracy: float
    segments: int
    segment_consensus: float
    consensus_gain: float
    split: str | None = None
    test_frames: int | None = None
    train_frames_used: int | None = None
    regularisation_c: float | None = None
    argmax_test_accuracy: float | None = None
    recalibrated_test_accuracy: float | None = None
    recalibration_gain: float | None = None
    memorisation_draws: int | None = None
    one_draw_heldout: float | None = None
    fresh_draws_heldout: float | None = None
    draws_gap: float | None = None
    own_frames_accuracy: float | None = None
    own_gap: float | None = None
    argmax_own_gap: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CalibrationReport:
        """From :meth:`to_dict` (a card's ``calibration``; fields it lacks are None)."""
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in names})

    def problems(self, target_accuracy: float | None, bounds: Bounds = OTHER_BOUNDS) -> list[str]:
        """Which bounds these statistics break (empty: calibrated). ``target_accuracy``
        None skips the accuracy check; a missing recalibration (no split) or memorisation
        check (no draws) skips that one."""
        out = []
        if target_accuracy is not None:
            off = self.frame_accuracy - target_accuracy
            if abs(off) > bounds.accuracy_tolerance:
                out.append(
                    f"frame accuracy {self.frame_accuracy:.2f}% is {off:+.2f} from the target "
                    f"{target_accuracy}% (tolerance {bounds.accuracy_tolerance})"
                )
        g = self.recalibration_gain
        lo, hi = bounds.recalibration
        if g is not None and not lo <= g <= hi:
            out.append(f"recalibration gain {g:+.2f} points is outside [{lo:+}, {hi:+}]")
        lo, hi = bounds.consensus
        if not lo <= self.consensus_gain <= hi:
            out.append(
                f"segment consensus gain {self.consensus_gain:+.2f} points is outside "
                f"[{lo:+}, {hi:+}]"
            )
        if self.draws_gap is not None and not abs(self.draws_gap) < bounds.max_draws_gap:
            out.append(
                f"memorisation: fitted on {self.memorisation_draws} fresh draws the per-frame "
                f"classifier differs by {self.draws_gap:+.2f} points on held-out videos from "
                f"one fitted on one draw (limit {bounds.max_draws_gap})"
            )
        if self.own_gap is not None and not self.own_gap < bounds.max_own_gap:
            out.append(
                f"memorisation: the per-frame classifier is {self.own_gap:+.2f} points better "
                f"on its own frames than on held-out videos (limit {bounds.max_own_gap})"
                + ("" if self.argmax_own_gap is None else
                   f"; the argmax alone, which fits nothing, is {self.argmax_own_gap:+.2f} "
                   "better on those frames")
            )
        return out


def _scores(table: FrameTable) -> np.ndarray:
    f = table.features
    if f is None:
        raise ValueError(f"dataset {table.card.name!r} has no features column")
    k = table.card.num_classes
    if f.ndim != 2 or f.shape[1] != k:
        raise ValueError(
            f"features of dim {f.shape[1] if f.ndim == 2 else f.shape} are not class scores "
            f"of the card's {k} classes"
        )
    return f


def log_scores(scores: np.ndarray) -> np.ndarray:
    """``log(max(scores, LOG_FLOOR))`` as float32 (a new array)."""
    out = np.maximum(scores, np.float32(LOG_FLOOR), dtype=np.float32)
    np.log(out, out=out)
    return out


def _check_scores(scores: np.ndarray, what: str) -> None:
    if not np.isfinite(scores).all() or (scores < 0).any():
        raise ValueError(f"{what}: class scores must be finite and non-negative (a softmax)")


def frame_accuracy(table: FrameTable) -> float:
    """Argmax accuracy of the class scores over all frames, in percent."""
    f = _scores(table)
    hits = 0
    for lo in range(0, table.num_frames, _BLOCK_FRAMES):
        blk = f[lo : lo + _BLOCK_FRAMES]
        _check_scores(blk, f"dataset {table.card.name!r}")
        hits += int(np.count_nonzero(blk.argmax(axis=1) == table.labels[lo : lo + _BLOCK_FRAMES]))
    return 100.0 * hits / table.num_frames


def _segment_starts(table: FrameTable) -> np.ndarray:
    """Start frame of every ground-truth segment (label change or video start), sorted."""
    y = table.labels
    change = np.flatnonzero(y[1:] != y[:-1]) + 1
    return np.union1d(change, table.offsets[:-1]).astype(np.int64)


def consensus_frames(starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(frames, per-segment counts): :data:`CONSENSUS_FRAMES` evenly spaced frames of each
    segment ``[start, end)`` (all of a shorter one), segment after segment."""
    length = ends - starts
    count = np.minimum(length, CONSENSUS_FRAMES)
    seg = np.repeat(np.arange(starts.size), count)
    i = np.arange(int(count.sum())) - np.repeat(np.cumsum(count) - count, count)
    # floor((i + 1/2) * L / n) in integers: the middle of the i-th of n equal parts
    frames = starts[seg] + ((2 * i + 1) * length[seg]) // (2 * count[seg])
    return frames, count


def segment_consensus(table: FrameTable) -> tuple[float, int]:
    """(percent of ground-truth segments whose mean log-score over 25 evenly spaced frames
    has its label as argmax, number of segments), over all videos of the table."""
    f = _scores(table)
    starts = _segment_starts(table)
    ends = np.append(starts[1:], table.num_frames)
    right = 0
    per_block = max(1, _BLOCK_FRAMES // CONSENSUS_FRAMES)
    for a in range(0, starts.size, per_block):
        b = min(a + per_block, starts.size)
        frames, count = consensus_frames(starts[a:b], ends[a:b])
        scores = f[frames]
        _check_scores(scores, f"dataset {table.card.name!r}")
        first = np.cumsum(count) - count
        sums = np.add.reduceat(log_scores(scores), first, axis=0)
        # the mean's argmax is the sum's divided by a positive count: same argmax
        right += int(np.count_nonzero(sums.argmax(axis=1) == table.labels[starts[a:b]]))
    return 100.0 * right / starts.size, int(starts.size)


def _frames_of(table: FrameTable, videos: np.ndarray) -> np.ndarray:
    lengths = table.lengths[videos]
    starts = np.repeat(table.offsets[videos], lengths)
    within = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return starts + within


def _video_of_frame(table: FrameTable) -> np.ndarray:
    return np.repeat(np.arange(table.num_videos), table.lengths)


class _SplitFrames:
    """The frames a split's recalibration uses: the evenly spaced training sample (with
    each frame's video, for grouped cross-validation) and all test frames."""

    def __init__(self, table: FrameTable, split: str | int, max_train_frames: int):
        if max_train_frames < 2:
            raise ValueError(f"max_train_frames must be >= 2, got {max_train_frames}")
        self.name = table.card.split(split).name
        train_v, test_v = table.split_indices(split)
        train, self.test = _frames_of(table, train_v), _frames_of(table, test_v)
        if train.size == 0 or self.test.size == 0:
            raise ValueError(
                f"split {self.name} of {table.card.name!r} has no train or no test frames"
            )
        n = min(max_train_frames, train.size)
        self.fit = train[(np.arange(n, dtype=np.int64) * train.size) // n]
        self.groups = _video_of_frame(table)[self.fit]
        self.y_fit = table.labels[self.fit].astype(np.int64)
        self.y_test = table.labels[self.test].astype(np.int64)
        if np.unique(self.y_fit).size < 2:
            raise ValueError(f"split {self.name}: the training frames hold fewer than 2 classes")


def _model(c: float, seed: int) -> Any:
    from sklearn.linear_model import LogisticRegression  # here: sklearn costs ~1 s to import
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(
        StandardScaler(), LogisticRegression(C=c, max_iter=300, tol=1e-3, random_state=seed)
    )


def _x(scores: np.ndarray, what: str) -> np.ndarray:
    _check_scores(scores, what)
    return log_scores(scores)


def _hits_on(model: Any, f: np.ndarray, frames: np.ndarray, y: np.ndarray, what: str) -> int:
    hits = 0
    for lo in range(0, frames.size, _BLOCK_FRAMES):
        x = _x(f[frames[lo : lo + _BLOCK_FRAMES]], what)
        hits += int(np.count_nonzero(model.predict(x) == y[lo : lo + _BLOCK_FRAMES]))
    return hits


def _argmax_hits(f: np.ndarray, frames: np.ndarray, y: np.ndarray) -> int:
    """Frames among ``frames`` whose argmax score is the label (block by block)."""
    hits = 0
    for lo in range(0, frames.size, _BLOCK_FRAMES):
        s = f[frames[lo : lo + _BLOCK_FRAMES]]
        hits += int(np.count_nonzero(s.argmax(axis=1) == y[lo : lo + _BLOCK_FRAMES]))
    return hits


class _OneDraw(NamedTuple):
    """The memorisation check's first classifier: fitted on ``table``'s training sample
    (regularisation ``c``), with its accuracy on those frames and on the test frames."""

    f: np.ndarray
    sf: _SplitFrames
    what: str
    x: np.ndarray
    model: Any
    own: float
    held: float


def _one_draw(table: FrameTable, split: str | int, c: float, max_train_frames: int,
              seed: int) -> _OneDraw:
    f = _scores(table)
    what = f"dataset {table.card.name!r}"
    sf = _SplitFrames(table, split, max_train_frames)
    x = _x(f[sf.fit], what)
    model = _model(c, seed).fit(x, sf.y_fit)
    own = 100.0 * float(np.mean(model.predict(x) == sf.y_fit))
    held = 100.0 * _hits_on(model, f, sf.test, sf.y_test, what) / sf.test.size
    return _OneDraw(f, sf, what, x, model, own, held)


def choose_c(
    x: np.ndarray, y: np.ndarray, groups: np.ndarray, grid: tuple[float, ...] = C_GRID,
    folds: int = CV_FOLDS, seed: int = 0,
) -> float:
    """The ``C`` of ``grid`` with the best mean held-out accuracy over ``folds`` folds of
    whole groups (videos); ties to the smaller ``C``. One value in ``grid``: that one."""
    from sklearn.model_selection import GroupKFold

    if len(grid) == 1:
        return float(grid[0])
    folds = min(folds, np.unique(groups).size)
    if folds < 2:
        return float(max(grid))
    jobs = [(c, tr, te) for tr, te in GroupKFold(n_splits=folds).split(x, y, groups)
            for c in grid]

    def held_out(job: tuple[float, np.ndarray, np.ndarray]) -> float:
        c, tr, te = job
        return float(np.mean(_model(c, seed).fit(x[tr], y[tr]).predict(x[te]) == y[te]))

    # independent deterministic fits, mostly BLAS (the GIL released): threads; the sums
    # below run in the jobs' order, so the choice does not depend on the thread count
    with ThreadPoolExecutor(max_workers=max(1, min(len(jobs), os.cpu_count() or 1))) as pool:
        accs = list(pool.map(held_out, jobs))
    scores = {c: 0.0 for c in grid}
    for (c, _, _), acc in zip(jobs, accs, strict=True):
        scores[c] += acc
    best = max(scores.values())
    return float(min(c for c in grid if scores[c] >= best - 1e-12))


def recalibration(
    table: FrameTable, split: str | int, max_train_frames: int = TRAIN_FRAMES, seed: int = 0,
    grid: tuple[float, ...] = C_GRID,
) -> dict[str, Any]:
    """Argmax vs a per-frame logistic regression on the log-scores (see module doc):
    ``{split, test_frames, train_frames_used, regularisation_c, argmax_test_accuracy,
    recalibrated_test_accuracy, recalibration_gain}``."""
    f = _scores(table)
    what = f"dataset {table.card.name!r}"
    sf = _SplitFrames(table, split, max_train_frames)
    x_fit = _x(f[sf.fit], what)
    c = choose_c(x_fit, sf.y_fit, sf.groups, grid, seed=seed)
    model = _model(c, seed).fit(x_fit, sf.y_fit)
    argmax_acc = 100.0 * _argmax_hits(f, sf.test, sf.y_test) / sf.test.size
    lr_acc = 100.0 * _hits_on(model, f, sf.test, sf.y_test, what) / sf.test.size
    return {
        "split": sf.name,
        "test_frames": int(sf.test.size),
        "train_frames_used": int(sf.fit.size),
        "regularisation_c": c,
        "argmax_test_accuracy": argmax_acc,
        "recalibrated_test_accuracy": lr_acc,
        "recalibration_gain": lr_acc - argmax_acc,
    }


def memorisation(
    table: FrameTable,
    split: str | int,
    draw: Callable[[int], np.ndarray],
    c: float,
    draws: int = MEMORISATION_DRAWS,
    max_train_frames: int = TRAIN_FRAMES,
    seed: int = 0,
) -> dict[str, Any]:
    """The memorisation check (module doc) of ``table``'s features against ``draws`` fresh
    draws ``draw(1)``, ..., ``draw(draws)`` (each a (frames, classes) score array of the
    same model), with regularisation ``c``: ``{memorisation_draws, one_draw_heldout,
    fresh_draws_heldout, draws_gap, own_frames_accuracy, own_gap, argmax_own_gap}``."""
    if draws < 1:
        raise ValueError(f"draws must be >= 1, got {draws}")
    one = _one_draw(table, split, c, max_train_frames, seed)
    f, sf, what, own, one_held = one.f, one.sf, one.what, one.own, one.held
    x_fresh = np.empty_like(one.x)
    which = np.arange(sf.fit.size) % draws

    def fresh_rows(d: int) -> np.ndarray:
        return _x(draw(d + 1)[sf.fit[which == d]], f"{what}, fresh draw {d + 1}")

    # the draws are independent (each its own seed) and numpy releases the GIL in the
    # large array operations that dominate a draw: threads cut the check's wall time on a
    # multi-core machine; at most MAX_DRAW_THREADS whole tables are held at once
    workers = max(1, min(draws, os.cpu_count() or 1, MAX_DRAW_THREADS))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for d, rows in enumerate(pool.map(fresh_rows, range(draws))):
            x_fresh[which == d] = rows
    fresh = _model(c, seed).fit(x_fresh, sf.y_fit)
    fresh_held = 100.0 * _hits_on(fresh, f, sf.test, sf.y_test, what) / sf.test.size
    return {
        "memorisation_draws": int(draws),
        "one_draw_heldout": one_held,
        "fresh_draws_heldout": fresh_held,
        "draws_gap": fresh_held - one_held,
        "own_frames_accuracy": own,
        "own_gap": own - one_held,
        "argmax_own_gap": 100.0 * (_argmax_hits(f, sf.fit, sf.y_fit) / sf.fit.size
                                   - _argmax_hits(f, sf.test, sf.y_test) / sf.test.size),
    }


def memorisation_parts(
    table: FrameTable,
    split: str | int,
    draw: Callable[[int], np.ndarray],
    c: float,
    max_train_frames: int = TRAIN_FRAMES,
    seed: int = 0,
) -> dict[str, float]:
    """The memorisation check's ``own_gap`` in its two parts: the classifier of
    :func:`memorisation` (fitted on ``table``'s training sample, regularisation ``c``) scored
    on its own frames, on the same frames of fresh draw ``draw(1)`` (same videos and labels,
    new noise) and on the held-out test frames. ``own - new_noise`` is noise fitted
    in-sample; ``new_noise - heldout`` the held-out videos themselves (docs/data.md).
    ``{argmax_fit, argmax_test, own_frames, new_noise, heldout, noise_part, people_part}``."""
    one = _one_draw(table, split, c, max_train_frames, seed)
    sf = one.sf
    fresh_x = _x(draw(1)[sf.fit], f"{one.what}, fresh draw 1")
    fresh = 100.0 * float(np.mean(one.model.predict(fresh_x) == sf.y_fit))
    return {
        "argmax_fit": 100.0 * _argmax_hits(one.f, sf.fit, sf.y_fit) / sf.fit.size,
        "argmax_test": 100.0 * _argmax_hits(one.f, sf.test, sf.y_test) / sf.test.size,
        "own_frames": one.own,
        "new_noise": fresh,
        "heldout": one.held,
        "noise_part": one.own - fresh,
        "people_part": fresh - one.held,
    }


def calibration_report(
    table: FrameTable,
    split: str | int | None = 1,
    max_train_frames: int = TRAIN_FRAMES,
    seed: int = 0,
    draw: Callable[[int], np.ndarray] | None = None,
    draws: int = MEMORISATION_DRAWS,
    grid: tuple[float, ...] = C_GRID,
) -> CalibrationReport:
    """The statistics of ``table``'s class scores. ``split`` names the split for the
    recalibration and the memorisation check (None, or a table without splits: neither);
    ``draw`` gives fresh draws of the same simulation (None: no memorisation check)."""
    acc = frame_accuracy(table)
    consensus, nseg = segment_consensus(table)
    rec: dict[str, Any] = {}
    mem: dict[str, Any] = {}
    if split is not None and table.card.splits:
        rec = recalibration(table, split, max_train_frames, seed, grid)
        if draw is not None:
            mem = memorisation(
                table, split, draw, rec["regularisation_c"], draws, max_train_frames, seed
            )
    return CalibrationReport(
        frames=table.num_frames,
        frame_accuracy=acc,
        segments=nseg,
        segment_consensus=consensus,
        consensus_gain=consensus - acc,
        **rec,
        **mem,
    )
