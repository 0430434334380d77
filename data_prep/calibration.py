"""How a frame classifier's class scores err: the three statistics a simulated classifier is
calibrated against, measured the same way on any table with class-score features.

Perrett & Damen measured, with their real RGB frame CNN (``../shared/paper/tables.md``):

* **frame accuracy** (Table 4, CNN column): argmax accuracy of the per-frame scores;
* **recalibration gain** (Table 3, "CNN + SVM" vs "CNN + Softmax", +1.65 points on
  Breakfast): how much a classifier trained on the scores alone, frame by frame, beats
  their argmax. A large gain means the scores are badly calibrated per frame (e.g. they
  ignore the class prior), which a temporal model would then get credit for fixing;
* **segment consensus** (Table 2: TSN's 25-frame consensus over each pre-segmented clip,
  18.6 % against 20.6 % single frames): how much averaging the scores over a whole true
  segment helps. Near zero means the classifier's confusions persist for the segment; a
  large value means its errors are independent noise that any smoother averages away.

The rules, stated once (every function here is pure: a :class:`FrameTable` in, numbers out):

* Features must be class scores: ``dim == num_classes``, finite, non-negative (a softmax;
  rows need not sum to exactly 1). Their log is taken after clipping at
  :data:`LOG_FLOOR`, so a score of 0 (float32 underflow) is a large negative log-score,
  not ``-inf``.
* ``frame_accuracy``: correct frames / all frames of the table, in percent.
* ``recalibration``: a multinomial logistic regression (scikit-learn ``LogisticRegression``,
  lbfgs to ``tol=1e-3``, L2 with ``C=1``, features standardised) on the per-frame log-scores alone,
  fitted on the split's TRAIN frames and scored on its TEST frames; the gain is its test
  accuracy minus the argmax accuracy on the same test frames. To bound the cost the fit
  uses at most ``max_train_frames`` training frames (default :data:`TRAIN_FRAMES`), taken
  evenly spaced over all training frames (every ``ceil(n / max)``-th frame, so every
  training video contributes); all test frames are scored.
* ``segment_consensus``: for every ground-truth segment (a maximal run of one label inside
  a video) the mean log-score over its frames, argmax, compared with the segment's label;
  the percentage of segments right (each segment counts once, whatever its length),
  over all videos of the table. ``consensus_gain`` = segment consensus - frame accuracy.

:data:`BOUNDS` states what the default simulation is calibrated to: frame accuracy within
0.5 of the paper's, recalibration gain <= +3, consensus gain <= +5 points.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .table import FrameTable

__all__ = [
    "BOUNDS",
    "LOG_FLOOR",
    "TRAIN_FRAMES",
    "Bounds",
    "CalibrationReport",
    "calibration_report",
    "frame_accuracy",
    "log_scores",
    "recalibration",
    "segment_consensus",
]

#: Scores are clipped here before the log (float32 softmax underflows to 0).
LOG_FLOOR = 1e-12

#: Default cap on the training frames the recalibration classifier is fitted on.
TRAIN_FRAMES = 10_000

#: Frames per block when reducing over the whole table (bounds the float64 temporaries).
_BLOCK_FRAMES = 1 << 18


@dataclass(frozen=True)
class Bounds:
    """What a calibrated simulation must satisfy, in percentage points."""

    accuracy_tolerance: float = 0.5
    max_recalibration_gain: float = 3.0
    max_consensus_gain: float = 5.0


#: The issue's targets (Table 4 accuracy +- 0.5; Table 3 gain +1.65 -> <= 3; Table 2 -> <= 5).
BOUNDS = Bounds()


@dataclass(frozen=True)
class CalibrationReport:
    """The statistics of one table's class scores (percent / percentage points)."""

    frames: int
    frame_accuracy: float
    segments: int
    segment_consensus: float
    consensus_gain: float
    split: str | None
    test_frames: int | None
    train_frames_used: int | None
    argmax_test_accuracy: float | None
    recalibrated_test_accuracy: float | None
    recalibration_gain: float | None

    def to_dict(self) -> dict[str, Any]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}

    def problems(self, target_accuracy: float | None, bounds: Bounds = BOUNDS) -> list[str]:
        """Which bounds these statistics break (empty: calibrated). ``target_accuracy``
        None skips the accuracy check; a missing recalibration (no split) skips that one."""
        out = []
        if target_accuracy is not None:
            off = self.frame_accuracy - target_accuracy
            if abs(off) > bounds.accuracy_tolerance:
                out.append(
                    f"frame accuracy {self.frame_accuracy:.2f}% is {off:+.2f} from the target "
                    f"{target_accuracy}% (tolerance {bounds.accuracy_tolerance})"
                )
        g = self.recalibration_gain
        if g is not None and g > bounds.max_recalibration_gain:
            out.append(
                f"recalibration gain {g:+.2f} points exceeds +{bounds.max_recalibration_gain}"
            )
        if self.consensus_gain > bounds.max_consensus_gain:
            out.append(
                f"segment consensus gain {self.consensus_gain:+.2f} points exceeds "
                f"+{bounds.max_consensus_gain}"
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


def segment_consensus(table: FrameTable) -> tuple[float, int]:
    """(percent of ground-truth segments whose mean log-score argmax is their label,
    number of segments), over all videos of the table."""
    f = _scores(table)
    starts = _segment_starts(table)
    bounds = np.append(starts, table.num_frames)
    right = 0
    # blocks of whole segments: reduceat over each block's own segment starts
    per_block = max(1, int(np.searchsorted(bounds, _BLOCK_FRAMES)))
    for a in range(0, starts.size, per_block):
        b = min(a + per_block, starts.size)
        lo, hi = int(bounds[a]), int(bounds[b])
        logs = log_scores(f[lo:hi])
        sums = np.add.reduceat(logs, starts[a:b] - lo, axis=0)
        # the mean's argmax is the sum's divided by a positive length: same argmax
        right += int(np.count_nonzero(sums.argmax(axis=1) == table.labels[starts[a:b]]))
    return 100.0 * right / starts.size, int(starts.size)


def _frames_of(table: FrameTable, videos: np.ndarray) -> np.ndarray:
    lengths = table.lengths[videos]
    starts = np.repeat(table.offsets[videos], lengths)
    within = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return starts + within


def recalibration(
    table: FrameTable, split: str | int, max_train_frames: int = TRAIN_FRAMES, seed: int = 0
) -> dict[str, Any]:
    """Argmax vs a per-frame logistic regression on the log-scores (see module doc):
    ``{split, test_frames, train_frames_used, argmax_test_accuracy,
    recalibrated_test_accuracy, recalibration_gain}``."""
    from sklearn.linear_model import LogisticRegression  # here: sklearn costs ~1 s to import
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if max_train_frames < 2:
        raise ValueError(f"max_train_frames must be >= 2, got {max_train_frames}")
    f = _scores(table)
    name = table.card.split(split).name
    train_v, test_v = table.split_indices(split)
    train, test = _frames_of(table, train_v), _frames_of(table, test_v)
    if train.size == 0 or test.size == 0:
        raise ValueError(f"split {name} of {table.card.name!r} has no train or no test frames")
    step = math.ceil(train.size / max_train_frames)
    fit = train[::step]
    y_fit = table.labels[fit].astype(np.int64)
    if np.unique(y_fit).size < 2:
        raise ValueError(f"split {name}: the training frames hold fewer than 2 classes")
    x_fit = log_scores(f[fit])
    _check_scores(f[fit], f"dataset {table.card.name!r}")
    model = make_pipeline(
        StandardScaler(),
        LogisticRegression(C=1.0, max_iter=300, tol=1e-3, random_state=seed),
    )
    model.fit(x_fit, y_fit)
    y_test = table.labels[test].astype(np.int64)
    hits_argmax = hits_lr = 0
    for lo in range(0, test.size, _BLOCK_FRAMES):
        idx = test[lo : lo + _BLOCK_FRAMES]
        s = f[idx]
        _check_scores(s, f"dataset {table.card.name!r}")
        y = y_test[lo : lo + _BLOCK_FRAMES]
        hits_argmax += int(np.count_nonzero(s.argmax(axis=1) == y))
        hits_lr += int(np.count_nonzero(model.predict(log_scores(s)) == y))
    argmax_acc = 100.0 * hits_argmax / test.size
    lr_acc = 100.0 * hits_lr / test.size
    return {
        "split": name,
        "test_frames": int(test.size),
        "train_frames_used": int(fit.size),
        "argmax_test_accuracy": argmax_acc,
        "recalibrated_test_accuracy": lr_acc,
        "recalibration_gain": lr_acc - argmax_acc,
    }


def calibration_report(
    table: FrameTable,
    split: str | int | None = 1,
    max_train_frames: int = TRAIN_FRAMES,
    seed: int = 0,
) -> CalibrationReport:
    """All three statistics of ``table``'s class scores. ``split`` names the split for the
    recalibration (None, or a table without splits: no recalibration, its fields None)."""
    acc = frame_accuracy(table)
    consensus, nseg = segment_consensus(table)
    rec: dict[str, Any] = dict.fromkeys(
        ("split", "test_frames", "train_frames_used", "argmax_test_accuracy",
         "recalibrated_test_accuracy", "recalibration_gain")
    )
    if split is not None and table.card.splits:
        rec = recalibration(table, split, max_train_frames, seed)
    return CalibrationReport(
        frames=table.num_frames,
        frame_accuracy=acc,
        segments=nseg,
        segment_consensus=consensus,
        consensus_gain=consensus - acc,
        **rec,
    )
