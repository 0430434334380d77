"""What temporal context can give without training: HMM and hidden semi-Markov decoding of
per-frame class scores with statistics taken from a split's training labels.

Pure functions (numpy, scipy); no torch, no Ray, no MLflow. The question it answers: the
input classifier gets X % of frames right; how much would a temporal model that only knows
*label statistics* (which action follows which, how long actions last) make of the same
scores? Nothing here is fitted to the scores or tuned on test videos, so the numbers are a
reference for the LSTM (which learns from the scores), not a competitor tuned to win.

**Statistics** (:func:`fit_label_model`, from the per-video label sequences of the split's
TRAINING videos only; segments are maximal runs of equal labels):

* ``log_init``: class of the first segment of a video, add-``alpha`` smoothed;
* ``log_bigram``: class of the next segment given the current one (a != b), add-``alpha``
  smoothed over the K - 1 other classes (``alpha = 0.1`` by default: a choice, not tuned;
  add-one would give unseen transitions about half the mass of a class with ~50 observed
  transitions and wash out the recipe order);
* ``mean_duration``: mean segment length (frames) per class; classes without a training
  segment take the mean over all segments;
* durations for the HSMM: a log-normal per class (mean and standard deviation of
  ``log(length)``; classes with fewer than 2 training segments take the pooled fit, and
  the standard deviation is at least 0.1), evaluated at 1..D, mixed with weight
  ``1e-4`` with the uniform distribution on 1..D (so no duration has probability 0) and
  renormalised. **Cap**: ``D = ceil(quantile_q(training segment lengths))``, ``q = 0.99``
  by default (Breakfast split 1: 2,719 frames). A segment longer than D is represented as
  consecutive segments of the same class: the HSMM's segment transition ``c -> c`` has the
  log-normal's mass beyond D, ``rho_c``, and ``c -> c'`` has ``(1 - rho_c) * bigram``;
* ``log_prior``: the training frames' class frequencies (add-one smoothed counts), for
  the emissions.

**Emissions** (:func:`emission_scores`): the ``features`` column is the classifier's
softmax p(c | x_t), floored at 1e-30 (so a 0 stays finite) and renormalised (a float32
softmax does not sum to exactly 1). As in hybrid NN/HMM systems (Bourlard & Morgan) it is
divided by the training class prior, ``log p(c | x_t) - w * log p_train(c)``: ``w = 1`` is
the *scaled likelihood* (∝ p(x_t | c)). The HMMs assume frames independent given the
label; a classifier whose errors persist over a segment (every simulated model here)
breaks that, and the prior term, counted once per frame, then outweighs the evidence:
on Breakfast split 1 (``segment`` v1 simulation) with ``w = 1`` the argmax of the scaled
likelihood alone falls from 20.2 % to 8.5 % and the HMM decoders to ~9 %
(docs/reproduction.md, "HMM reference").
So ``w`` is a choice made on TRAINING videos (:func:`choose_prior_weight`: the weight in
:data:`PRIOR_WEIGHTS` whose offline HMM decoding is most accurate on every 4th training
video), never on test; ``--prior-weight 1`` forces the textbook hybrid. No other emission
weight or temperature.

**Decoders** (per video, all log space except where said):

* HMM (:func:`hmm_params`): one state per class, self-loop ``1 - 1/mean_duration_c``
  (geometric durations with the training mean), leaving with ``1/mean_duration_c`` to
  the next class by the bigram. :func:`viterbi` (offline: the best label path given the
  whole video) and :func:`forward_filter` (causal: the argmax at frame t of
  ``p(label_t | x_0..t)``, which never reads a later frame);
* HSMM (:func:`hsmm_params`): explicit durations as above. :func:`hsmm_viterbi` (offline,
  exact over all segmentations with segments of 1..D frames, O(T K D + T K^2)); the video
  starts with a segment and ends where its last segment ends (annotations cover whole
  videos). :func:`hsmm_filter` (causal): ``p(label_t | x_0..t)`` summed over how long the
  segment in progress has lasted, in the expanded (class, elapsed) state space. It works
  with probabilities rescaled to sum 1 at every frame (Rabiner's scaling; exact, and about
  ten times cheaper than a log-sum-exp over the K x D states per frame); emissions enter as
  ``exp(E_t - max E_t)``, bounded below by the 1e-30 softmax floor, so nothing underflows.

:func:`reference` evaluates all of them on a table's split with
:func:`trainables.metrics.evaluate` (MS-TCN metrics; no class dropped,
:func:`~trainables.metrics.segment_background`). ``kitchen-study hmm TABLE --split N``
prints it (:mod:`trainables.hmm_cli`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from data_prep.errors import DataError
from data_prep.table import FrameTable

from .metrics import evaluate, segment_background

__all__ = [
    "DECODERS",
    "emission_scores",
    "fit_label_model",
    "forward_filter",
    "hmm_params",
    "hsmm_filter",
    "hsmm_params",
    "hsmm_viterbi",
    "reference",
    "viterbi",
]

#: The prior weights :func:`choose_prior_weight` tries (0: posteriors, 1: hybrid).
PRIOR_WEIGHTS: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
#: The decoders :func:`reference` reports, in order (``input``: argmax of the scores).
DECODERS: tuple[str, ...] = ("input", "hmm_causal", "hmm_offline", "hsmm_causal", "hsmm_offline")

_SOFTMAX_FLOOR = 1e-30
_UNIFORM_MIX = 1e-4
_MIN_LOG_SD = 0.1


def _log(x: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.log(x)


# -- statistics ------------------------------------------------------------------------------


@dataclass(frozen=True)
class LabelModel:
    """Label statistics of a split's training videos (see the module doc)."""

    num_classes: int
    log_init: np.ndarray  # (K,)
    log_bigram: np.ndarray  # (K, K), diagonal -inf
    mean_duration: np.ndarray  # (K,) frames
    log_duration: np.ndarray  # (K, D): log p_c(d) at d = 1..D
    log_reentry: np.ndarray  # (K,): log rho_c, mass of the duration fit beyond D
    log_prior: np.ndarray  # (K,) training frame class frequencies
    max_duration: int  # D
    quantile: float
    segments: int  # training segments the statistics come from
    mean_segment: float  # their mean length, frames

    def to_dict(self) -> dict[str, Any]:
        """The scalars worth printing (the arrays are in the object)."""
        return {"num_classes": self.num_classes, "segments": self.segments,
                "mean_segment": self.mean_segment, "max_duration": self.max_duration,
                "quantile": self.quantile}


def _runs(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels)
    starts = np.flatnonzero(np.r_[True, y[1:] != y[:-1]])
    return y[starts].astype(np.int64), np.diff(np.r_[starts, y.size])


def fit_label_model(videos: Sequence[Any], num_classes: int, *, quantile: float = 0.99,
                    alpha: float = 0.1) -> LabelModel:
    """Transition and duration statistics of per-video label sequences (the training videos
    of a split), as the module doc states. Raises ValueError without frames or for labels
    outside ``0..num_classes - 1``."""
    from scipy.stats import norm

    k = int(num_classes)
    if k < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if not 0 < quantile <= 1:
        raise ValueError(f"quantile must be in (0, 1], got {quantile}")
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    vids = [np.asarray(v).astype(np.int64) for v in videos if len(v)]
    if not vids:
        raise ValueError("no training frames to take label statistics from")
    for v in vids:
        if v.ndim != 1 or v.min() < 0 or v.max() >= k:
            raise ValueError(f"labels must be 1-D in 0..{k - 1}")
    init = np.zeros(k)
    bigram = np.zeros((k, k))
    frames = np.zeros(k)
    classes, lengths = [], []
    for v in vids:
        c, n = _runs(v)
        init[c[0]] += 1
        np.add.at(bigram, (c[:-1], c[1:]), 1.0)
        np.add.at(frames, c, n)
        classes.append(c)
        lengths.append(n)
    cls = np.concatenate(classes)
    dur = np.concatenate(lengths).astype(np.float64)

    off = ~np.eye(k, dtype=bool)
    b = np.where(off, bigram + alpha, 0.0)
    with np.errstate(invalid="ignore"):
        b = b / b.sum(1, keepdims=True) if k > 1 else np.zeros((1, 1))
    log_bigram = np.where(off, _log(b), -np.inf)

    counts = np.bincount(cls, minlength=k)
    mean = np.full(k, dur.mean())
    seen = counts > 0
    mean[seen] = np.bincount(cls, weights=dur, minlength=k)[seen] / counts[seen]

    cap = max(1, math.ceil(float(np.quantile(dur, quantile))))
    logd = np.log(dur)
    mu = np.full(k, logd.mean())
    sd = np.full(k, max(logd.std(), _MIN_LOG_SD))
    for c in np.flatnonzero(counts >= 2):
        x = logd[cls == c]
        mu[c], sd[c] = x.mean(), max(x.std(), _MIN_LOG_SD)
    d = np.arange(1, cap + 1, dtype=np.float64)
    # log-normal density of the length at d (the 1/d Jacobian included), per class
    dens = norm.pdf((np.log(d)[None] - mu[:, None]) / sd[:, None]) / (sd[:, None] * d[None])
    pmf = dens / dens.sum(1, keepdims=True)
    pmf = (1 - _UNIFORM_MIX) * pmf + _UNIFORM_MIX / cap
    pmf /= pmf.sum(1, keepdims=True)
    rho = norm.sf((np.log(cap + 0.5) - mu) / sd)  # mass of longer segments than the cap
    prior = frames + 1.0
    return LabelModel(
        num_classes=k,
        log_init=_log((init + alpha) / (init + alpha).sum()),
        log_bigram=log_bigram,
        mean_duration=mean,
        log_duration=np.log(pmf),
        log_reentry=_log(rho),
        log_prior=np.log(prior / prior.sum()),
        max_duration=cap,
        quantile=float(quantile),
        segments=int(dur.size),
        mean_segment=float(dur.mean()),
    )


def hmm_params(model: LabelModel) -> tuple[np.ndarray, np.ndarray]:
    """``(log_init, log_trans)`` of the frame-level HMM: self-loop ``1 - 1/mean_c``, the
    rest ``1/mean_c`` times the segment bigram."""
    leave = 1.0 / model.mean_duration
    trans = np.exp(model.log_bigram) * leave[:, None]
    trans[np.diag_indices_from(trans)] = 1.0 - leave
    return model.log_init.copy(), _log(trans)


def hsmm_params(model: LabelModel) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(log_init, log_seg_trans, log_duration)`` of the HSMM: segment transitions with
    the re-entry ``c -> c`` (probability ``rho_c``) that lets a segment outlast the cap."""
    rho = np.exp(model.log_reentry)
    trans = np.exp(model.log_bigram) * (1.0 - rho)[:, None]
    trans[np.diag_indices_from(trans)] = rho
    if model.num_classes == 1:
        trans[0, 0] = 1.0
    return model.log_init.copy(), _log(trans), model.log_duration.copy()


def emission_scores(scores: Any, log_prior: np.ndarray, prior_weight: float = 1.0
                    ) -> np.ndarray:
    """Emission scores ``log p(c|x_t) - prior_weight * log p_train(c)`` (T, K) from softmax
    rows (renormalised, floored at 1e-30; see the module doc): ``prior_weight`` 1 gives the
    hybrid scaled log-likelihoods, 0 the log-posteriors. Raises ValueError for a wrong shape
    or a negative or non-finite score."""
    p = np.asarray(scores, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != log_prior.shape[0]:
        raise ValueError(f"scores must have shape (frames, {log_prior.shape[0]}), got {p.shape}")
    if not np.isfinite(p).all() or (p < 0).any():
        raise ValueError("scores must be class probabilities (finite, non-negative)")
    total = p.sum(1, keepdims=True)
    p = np.where(total > 0, p / np.where(total > 0, total, 1.0), 1.0 / p.shape[1])
    return np.log(np.maximum(p, _SOFTMAX_FLOOR)) - prior_weight * log_prior[None]


# -- HMM -------------------------------------------------------------------------------------


def _check(log_emis: Any, log_init: np.ndarray) -> np.ndarray:
    e = np.asarray(log_emis, dtype=np.float64)
    if e.ndim != 2 or e.shape[0] == 0 or e.shape[1] != np.shape(log_init)[0]:
        raise ValueError(f"emissions must have shape (frames >= 1, {np.shape(log_init)[0]}), "
                         f"got {e.shape}")
    return e


def viterbi(log_emis: Any, log_init: np.ndarray, log_trans: np.ndarray
            ) -> tuple[np.ndarray, float]:
    """The most likely state path of an HMM and its log score
    ``log_init[z_0] + sum_t log_trans[z_{t-1}, z_t] + sum_t log_emis[t, z_t]``. Ties go to
    the lowest state index."""
    e = _check(log_emis, log_init)
    t_len, k = e.shape
    back = np.empty((t_len, k), dtype=np.int32)
    v = log_init + e[0]
    for t in range(1, t_len):
        m = v[:, None] + log_trans  # (from, to)
        back[t] = m.argmax(0)
        v = m[back[t], np.arange(k)] + e[t]
    path = np.empty(t_len, dtype=np.int64)
    path[-1] = int(v.argmax())
    for t in range(t_len - 1, 0, -1):
        path[t - 1] = back[t, path[t]]
    return path, float(v.max())


def _logsumexp(x: np.ndarray, axis: int) -> np.ndarray:
    m = x.max(axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    return (np.log(np.exp(x - m).sum(axis, keepdims=True)) + m).squeeze(axis)


def forward_filter(log_emis: Any, log_init: np.ndarray, log_trans: np.ndarray) -> np.ndarray:
    """Causal filtering: ``log p(z_t | x_0..t)`` (T, K), each row normalised. Row t reads
    frames 0..t only; its argmax is the causal HMM decision at t."""
    e = _check(log_emis, log_init)
    out = np.empty_like(e)
    a = log_init + e[0]
    out[0] = a - _logsumexp(a, 0)
    for t in range(1, e.shape[0]):
        a = _logsumexp(out[t - 1][:, None] + log_trans, 0) + e[t]
        out[t] = a - _logsumexp(a, 0)
    return out


# -- HSMM ------------------------------------------------------------------------------------


def hsmm_viterbi(log_emis: Any, log_init: np.ndarray, log_seg_trans: np.ndarray,
                 log_duration: np.ndarray) -> tuple[np.ndarray, float]:
    """The most likely segmentation of an explicit-duration HSMM, as frame labels, and its
    log score ``log_init[c_1] + sum_i log_duration[c_i, d_i - 1] + sum_i
    log_seg_trans[c_i, c_{i+1}] + sum_t log_emis[t, label_t]`` over segments of 1..D frames
    (D = ``log_duration.shape[1]``) that cover the video exactly.

    ``V[t, c]``: the best score of frames [0, t) whose last segment has class c and ends at
    t; ``G[s, c]``: the best score of entering class c at s, minus the cumulative emission
    up to s, so that a segment [s, t) of c scores ``G[s, c] + cum[t, c] +
    log_duration[c, t - s - 1]`` (one add and one argmax over K x D per frame)."""
    e = _check(log_emis, log_init)
    t_len, k = e.shape
    dmax = log_duration.shape[1]
    if log_duration.shape[0] != k or dmax < 1:
        raise ValueError(f"log_duration must have shape ({k}, D >= 1)")
    cum = np.zeros((t_len + 1, k))
    np.cumsum(e, axis=0, out=cum[1:])
    # G in class-major layout, time reversed within a window: G_rev[:, j] = G[t - 1 - j]
    g = np.full((k, t_len + 1), -np.inf)  # G[s] at column s
    g[:, 0] = log_init  # cum[0] = 0
    dur_len = np.empty((t_len + 1, k), dtype=np.int32)  # best last-segment length at t
    prev = np.full((t_len + 1, k), -1, dtype=np.int32)  # best class before a segment at s
    v = np.full((t_len + 1, k), -np.inf)
    buf = np.empty((k, dmax))
    rows = np.arange(k)
    for t in range(1, t_len + 1):
        n = min(dmax, t)
        win = buf[:, :n]
        np.add(g[:, t - n:t][:, ::-1], log_duration[:, :n], out=win)  # d = 1..n
        j = win.argmax(1)
        dur_len[t] = j + 1
        v[t] = win[rows, j] + cum[t]
        if t < t_len:
            m = v[t][:, None] + log_seg_trans  # (from, to)
            best = m.argmax(0)
            prev[t] = best
            g[:, t] = m[best, rows] - cum[t]
    path = np.empty(t_len, dtype=np.int64)
    c = int(v[t_len].argmax())
    score = float(v[t_len, c])
    t = t_len
    while t > 0:
        d = int(dur_len[t, c])
        path[t - d:t] = c
        t -= d
        if t > 0:
            c = int(prev[t, c])
    return path, score


def hsmm_filter(log_emis: Any, log_init: np.ndarray, log_seg_trans: np.ndarray,
                log_duration: np.ndarray) -> np.ndarray:
    """Causal filtering of the HSMM: ``log p(label_t | x_0..t)`` (T, K), rows normalised.

    Expanded states (class c, frames d the current segment has lasted so far, 1..D); the
    segment continues from d to d + 1 with ``S_c(d + 1) / S_c(d)`` and ends after d frames
    with ``p_c(d) / S_c(d)``, ``S_c(d) = sum_{d' >= d} p_c(d')`` (so a segment lasting
    exactly d frames has probability ``p_c(d)``, as in :func:`hsmm_viterbi`). Probabilities
    rescaled to sum 1 at each frame (see the module doc). Row t reads frames 0..t only."""
    e = _check(log_emis, log_init)
    t_len, k = e.shape
    if log_duration.shape[0] != k:
        raise ValueError(f"log_duration must have shape ({k}, D)")
    p = np.exp(log_duration - log_duration.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    surv = np.cumsum(p[:, ::-1], axis=1)[:, ::-1]  # S_c(d), d = 1..D
    with np.errstate(invalid="ignore", divide="ignore"):
        end = np.where(surv > 0, p / surv, 1.0)  # hazard
        cont = np.where(surv[:, :-1] > 0, surv[:, 1:] / surv[:, :-1], 0.0)
    trans = np.exp(log_seg_trans)
    init = np.exp(log_init - log_init.max())
    out = np.empty_like(e)
    a = np.zeros_like(p)
    nxt = np.zeros_like(p)
    dmax = p.shape[1]
    for t in range(t_len):
        w = np.exp(e[t] - e[t].max())
        # at frame t a segment has lasted at most t + 1 frames: only those columns can hold
        # mass (the others stay 0), so short videos cost O(T^2), not O(T D)
        n = min(dmax, t + 1)
        if t == 0:
            nxt[:, 0] = init
        else:
            m = min(dmax, t)  # the columns that hold mass at t - 1
            ends = np.einsum("cd,cd->c", a[:, :m], end[:, :m])
            np.multiply(a[:, :n - 1], cont[:, :n - 1], out=nxt[:, 1:n])
            nxt[:, 0] = ends @ trans
        live = nxt[:, :n]
        live *= w[:, None]
        rows = live.sum(1)
        total = rows.sum()
        if not total > 0:
            raise ValueError(f"frame {t} has probability 0 under the model")
        live /= total
        with np.errstate(divide="ignore"):
            out[t] = np.log(rows / total)
        a, nxt = nxt, a
    return out


# -- a table's split -------------------------------------------------------------------------


def choose_prior_weight(model: LabelModel, scores: Sequence[np.ndarray],
                        labels: Sequence[np.ndarray],
                        grid: Sequence[float] = PRIOR_WEIGHTS) -> tuple[float, dict[float, float]]:
    """The prior weight (see :func:`emission_scores`) of ``grid`` whose offline HMM
    decoding is most accurate (pooled frame accuracy, %) on the given videos — the split's
    TRAINING videos, never its test videos; ties go to the larger weight (the hybrid
    choice). Returns ``(weight, {weight: accuracy})``."""
    log_init, log_trans = hmm_params(model)
    acc: dict[float, float] = {}
    total = sum(len(y) for y in labels)
    for w in grid:
        hits = 0
        for x, y in zip(scores, labels, strict=True):
            e = emission_scores(x, model.log_prior, w)
            hits += int(np.count_nonzero(viterbi(e, log_init, log_trans)[0] == y))
        acc[float(w)] = 100.0 * hits / total
    best = max(acc, key=lambda w: (acc[w], w))
    return best, acc


def reference(table: FrameTable, split: int | str, *, quantile: float = 0.99,
              alpha: float = 0.1, prior_weight: float | None = None,
              decoders: Sequence[str] = DECODERS, source: Any = None) -> dict[str, Any]:
    """Decode every TEST video of ``split`` with each of ``decoders`` (:data:`DECODERS`),
    label statistics from the split's TRAINING videos (:func:`fit_label_model`), and
    evaluate with :func:`trainables.metrics.evaluate`.

    ``prior_weight``: how much of the training class prior the emissions divide out
    (:func:`emission_scores`; 1: hybrid scaled likelihoods, 0: posteriors). None (default):
    chosen by :func:`choose_prior_weight` among :data:`PRIOR_WEIGHTS` on every 4th training
    video (by id; a quarter keeps it to seconds), so no test label enters any choice.

    Returns ``{"dataset", "split", "test_videos", "test_frames", "model":
    LabelModel.to_dict(), "prior_weight", "prior_weight_train_acc": {weight: accuracy} (empty
    when given), "metrics": {decoder: {frame_acc, edit, f1@10, f1@25, f1@50}}, "seconds":
    {decoder: wall seconds of its decoding}}``. A table without class-score features (dim
    != number of classes) or with negative or non-finite scores, an unknown split or one
    without training or test videos is a :class:`~data_prep.errors.DataError` naming
    ``source``."""
    unknown = sorted(set(decoders) - set(DECODERS))
    if unknown:
        raise ValueError(f"unknown decoder(s) {unknown}; known: {', '.join(DECODERS)}")
    card = table.card
    if table.features is None or table.features.shape[1] != card.num_classes:
        dim = None if table.features is None else table.features.shape[1]
        raise DataError(f"the HMM reference needs class scores (features of dim "
                        f"{card.num_classes}, one per class); the table has "
                        f"{'no features' if dim is None else f'dim {dim}'}", source)
    key: int | str = int(split) if isinstance(split, str) and split.isdigit() else split
    try:
        train, test = table.split_indices(key)
        name = card.split(key).name
    except KeyError as e:
        raise DataError(e.args[0], source) from None
    if len(train) == 0 or len(test) == 0:
        raise DataError(f"split {name} has no training or no test videos", source)

    def scores_of(i: int) -> np.ndarray:
        x = table.features[table.offsets[i]:table.offsets[i + 1]]
        if not np.isfinite(x).all() or (x < 0).any():
            raise DataError(f"video {table.videos[i]!r}: the features are not class "
                            "probabilities (negative or non-finite)", source)
        return x

    model = fit_label_model([table.video_labels(i) for i in train], card.num_classes,
                            quantile=quantile, alpha=alpha)
    chosen: dict[float, float] = {}
    if prior_weight is None:
        pick = sorted(train, key=lambda i: table.videos[i])[::4]
        prior_weight, chosen = choose_prior_weight(
            model, [scores_of(i) for i in pick],
            [table.video_labels(i).astype(np.int64) for i in pick])
    hmm = hmm_params(model)
    hsmm = hsmm_params(model)
    decode = {
        "input": lambda s, e: s.argmax(1),
        "hmm_causal": lambda s, e: forward_filter(e, *hmm).argmax(1),
        "hmm_offline": lambda s, e: viterbi(e, *hmm)[0],
        "hsmm_causal": lambda s, e: hsmm_filter(e, *hsmm).argmax(1),
        "hsmm_offline": lambda s, e: hsmm_viterbi(e, *hsmm)[0],
    }
    gts, preds = [], {d: [] for d in decoders}
    seconds = dict.fromkeys(decoders, 0.0)
    for i in test:
        scores = scores_of(i)
        e = emission_scores(scores, model.log_prior, prior_weight)
        gts.append(table.video_labels(i).astype(np.int64))
        for d in decoders:
            start = time.perf_counter()
            preds[d].append(np.asarray(decode[d](scores, e), dtype=np.int64))
            seconds[d] += time.perf_counter() - start
    bg = segment_background(card.classes)
    return {
        "dataset": card.name,
        "split": name,
        "test_videos": len(test),
        "test_frames": int(sum(len(g) for g in gts)),
        "model": model.to_dict(),
        "prior_weight": float(prior_weight),
        "prior_weight_train_acc": chosen,
        "metrics": {d: evaluate(preds[d], gts, bg) for d in decoders},
        "seconds": seconds,
    }
