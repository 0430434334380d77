"""A simulated frame classifier: per-frame softmax vectors from real label sequences.

The paper's LSTM reads a frame CNN's softmax, but the videos (tens of GB) are not here;
the label sequences are. This module draws softmax vectors from a documented model of a
frame classifier, so the *temporal* model can be studied on real label structure. Results
on simulated features are about the temporal model, not about vision (see docs/data.md).

Two models (registry :data:`MODELS`; :data:`DEFAULT_MODEL` is ``segment``):

``segment`` (default): how a cross-entropy-trained frame CNN errs. Its softmax is the
posterior of a Gaussian evidence model, so it carries the class prior, and the evidence
noise is drawn mostly per ground-truth segment and per video, so its confusions persist::

    x_t      = a * T[y_t] + n_t                     (evidence: template + noise, n_t ~ N(0, I_C))
    n_t      = sqrt(s) * u_seg(t) + sqrt(v) * u_video(t) + sqrt(1 - s - v) * w_t
    logits_t = log pi + a * T x_t - a^2 * |T_j|^2 / 2   (log posterior of class j, up to a constant)
    softmax_t = softmax(logits_t / temperature)        (temperature 1: the exact posterior)

* ``T = I + confusion * S`` (``S``: :func:`class_similarity`, as in ``ar1``): evidence for
  a class leaks to classes sharing words, so those are the ones it is confused with.
* ``u_seg`` ~ N(0, I) is drawn once per ground-truth segment (a maximal run of one label in
  a video), ``u_video`` once per video (a viewpoint/person bias), ``w_t`` is unit AR(1)
  noise with correlation time ``correlation_s`` (within-segment variation, as ``ar1``'s).
  Their variances ``s = segment_share``, ``v = video_share`` and ``1 - s - v`` sum to 1, so
  every frame's noise is N(0, I): the per-frame posterior above is exact, and no per-frame
  recalibration of the scores can beat their argmax (a trained CNN is near that on its
  own training distribution); averaging over a segment removes only the ``w`` part.
* ``pi``: the table's own class frequencies over all frames, add-one smoothed (the prior a
  CNN absorbs from its training frames).
* Accuracy is calibrated through the evidence scale ``a`` (argmax accuracy grows with it
  from the prior's majority share to 100 %): bisection on an evenly spaced sample of
  frames, then secant steps on all frames until the achieved accuracy is within
  :data:`_ACCURACY_TOLERANCE` of the target. A target at or below the majority class's
  share (what the prior alone gives) is an error.
* Calibrated against the paper's measurements by :mod:`data_prep.calibration`: the
  defaults keep the per-frame recalibration gain <= +3 and the segment-consensus gain
  <= +5 points on Breakfast, 50 Salads and MPII Cooking (docs/data.md has the numbers).

``ar1`` (the optimistic model, kept for comparison; version 1, unchanged)::

    logits_t = margin * T[y_t] + n_t            softmax_t = softmax(logits_t / temperature)
    n_t      = rho * n_{t-1} + sqrt(1 - rho^2) * eps_t,   eps_t ~ N(0, I_C),  n_0 = eps_0
    rho      = exp(-1 / (correlation_s * fps))  (AR(1) per class, reset at every video start)

  No class prior and errors that average out within a segment: a per-frame linear layer
  on its scores gains ~15 points on Breakfast and a segment average classifies ~70 % of
  segments, so a temporal model gets credit for fixing what no real CNN gets wrong.

* **Calibrated accuracy, exactly** (``ar1``): for fixed noise, frame ``t`` is classified
  correctly iff ``margin > max_{j != y} (n_tj - n_ty) / (1 - confusion * S[y, j])``
  (``0 <= confusion < 1`` keeps the denominator positive, so correctness is monotone in
  ``margin``); the margin reaching the target is the quantile of these thresholds.
* **Confidence** (``ar1``): by default the temperature is chosen so that the mean top
  softmax probability equals the accuracy (bisection on a sample of frames). The
  ``segment`` model's posterior is confidence-calibrated by construction (temperature 1).
  A fixed ``temperature`` never changes the argmax.
* **Structured confusions** (both): ``S`` is the overlap of the lower-cased word sets of
  two class names (shared words / words of the shorter name: ``pour_milk``/
  ``pour_coffee``: 1/2), zero on the diagonal and for the background class. It enters the
  *mean* evidence, not the noise: correlated noise between two classes would make them
  *less* likely to swap.
* **Deterministic**: one numpy ``Generator`` seeded with ``seed``, drawn in a fixed order.

Accuracy is argmax frame accuracy over all frames of the table (background included), in
percent, as the rest of the platform reports metrics. The defaults per dataset are the
paper's Table 4 CNN column, looked up in :data:`DEFAULT_ACCURACY` by the card's name.

Everything is vectorised numpy/scipy over chunks of whole videos (the AR(1) filter runs
with ``scipy.signal.lfilter`` over each chunk, with resets at video starts applied in
closed form); there is no Python loop over frames.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import typer

from .errors import DataError
from .table import FrameTable, describe, read_table, write_table

__all__ = [
    "DEFAULT_ACCURACY",
    "DEFAULT_BOUNDARY_S",
    "DEFAULT_CONFUSION",
    "DEFAULT_MODEL",
    "DEFAULT_SEGMENT_SHARE",
    "DEFAULT_VIDEO_SHARE",
    "MODELS",
    "VERSIONS",
    "class_similarity",
    "command",
    "default_accuracy",
    "record_calibration",
    "simulate",
    "simulate_softmax",
]

#: The simulation models, by name: what ``--model`` accepts and the card's ``model``.
MODELS: tuple[str, ...] = ("segment", "ar1")

#: The default: the model calibrated against the paper's measurements.
DEFAULT_MODEL = "segment"

#: Version of each model; recorded in the card (bump when a model's output changes).
VERSIONS: dict[str, str] = {"segment": "1", "ar1": "1"}

#: Frame CNN accuracy (%) per dataset name: Perrett & Damen, Table 4, CNN column.
#: Looked up by the card's name, exactly or by the longest key that prefixes it (so
#: ``salads_fine`` finds ``salads``). MPII Cooking 1 stands in for MPII Cooking 2 here.
DEFAULT_ACCURACY: dict[str, float] = {
    "breakfast": 20.6,
    "salads": 37.5,
    "50salads": 37.5,
    "50_salads": 37.5,
    "mpii": 36.1,
    "mpii_cooking": 36.1,
    "mpii_cooking2": 36.1,
}

#: Default strength of the word-similarity leak: at 0.7 a Breakfast frame's errors go to
#: word-sharing classes 2.5-3x as often per class as to the others (0 switches it off).
DEFAULT_CONFUSION = 0.7

#: ``segment`` model: shares of the evidence-noise variance drawn once per ground-truth
#: segment and once per video (the rest varies within the segment). Calibrated with
#: data_prep.calibration on Breakfast cam01, 50 Salads and MPII Cooking (docs/data.md).
DEFAULT_SEGMENT_SHARE = 0.6
DEFAULT_VIDEO_SHARE = 0.2

#: ``segment`` model: decay length (seconds) of the neighbouring segment's evidence near a
#: boundary (transition frames look like both actions; short segments suffer most).
DEFAULT_BOUNDARY_S = 0.5

#: Frames per chunk: bounds the temporaries (chunk x classes float32) while keeping numpy
#: calls large. Chunks are whole videos.
_CHUNK_FRAMES = 1 << 18

#: Frames sampled to fit the confidence-calibrating temperature (ar1) and to bracket the
#: evidence scale (segment).
_CALIBRATION_FRAMES = 1 << 14
_SCALE_SAMPLE_FRAMES = 1 << 17

#: ``segment``: how close (percentage points) the achieved accuracy must come to the target.
_ACCURACY_TOLERANCE = 0.05

_WORD = re.compile(r"[A-Za-z0-9]+")
def default_accuracy(name: str) -> float:
    """The paper's CNN accuracy (%) for a dataset name; ``KeyError`` when unknown."""
    key = name.lower()
    if key in DEFAULT_ACCURACY:
        return DEFAULT_ACCURACY[key]
    prefixes = [k for k in DEFAULT_ACCURACY if key.startswith(k)]
    if prefixes:
        return DEFAULT_ACCURACY[max(prefixes, key=len)]
    known = ", ".join(sorted(DEFAULT_ACCURACY))
    raise KeyError(f"no default accuracy for dataset {name!r} (known: {known}); pass --accuracy")


def class_similarity(
    classes: tuple[str, ...] | list[str], background: str | None = None
) -> np.ndarray:
    """(C, C) overlap of the classes' lower-cased word sets: shared words over the words of
    the shorter name (split on anything not a letter or digit, so ``pour_milk``,
    ``pour milk`` and ``Pour-Milk`` are the same words; ``pour_milk``/``pour_coffee``: 1/2).
    Zero on the diagonal and in the background class's row and column: background frames
    are not "similar" to any action by name."""
    words = [set(_WORD.findall(c.lower())) for c in classes]
    n = len(classes)
    sim = np.zeros((n, n), dtype=np.float64)
    for i in range(n):  # C^2 set operations, C <= a few hundred: negligible
        for j in range(i + 1, n):
            shorter = min(len(words[i]), len(words[j]))
            if shorter:
                sim[i, j] = sim[j, i] = len(words[i] & words[j]) / shorter
    if background is not None and background in classes:
        b = list(classes).index(background)
        sim[b, :] = 0.0
        sim[:, b] = 0.0
    return sim


def _chunks(offsets: np.ndarray, target: int = _CHUNK_FRAMES) -> list[tuple[int, int]]:
    """Video index ranges [a, b) of about ``target`` frames each (at least one video)."""
    out: list[tuple[int, int]] = []
    a = 0
    nv = len(offsets) - 1
    while a < nv:
        b = int(np.searchsorted(offsets, offsets[a] + target, side="right")) - 1
        b = min(max(b, a + 1), nv)
        out.append((a, b))
        a = b
    return out


def _ar1_noise(
    rng: np.random.Generator, offsets: np.ndarray, classes: int, rho: float
) -> np.ndarray:
    """Unit-variance AR(1) noise (frames, classes) float32 for the videos of ``offsets``
    (relative to the chunk), restarted from the stationary distribution at each video.

    One ``lfilter`` over the chunk, then the reset: the filter is linear, so the value
    with a reset at video start ``s`` is the unreset value minus ``rho^(t-s+1) * y[s-1]``.
    """
    n = int(offsets[-1])
    eps = rng.standard_normal((classes, n), dtype=np.float32)
    if rho == 0.0:
        return np.ascontiguousarray(eps.T)
    c = np.float32(np.sqrt(1.0 - rho * rho))
    starts = offsets[:-1]
    eps[:, starts] /= c  # so a video's first value is eps itself: stationary variance 1
    from scipy.signal import lfilter  # here, not at import: scipy.signal costs seconds of CLI start

    # (classes, frames) layout: lfilter runs along contiguous rows, ~2x faster than axis=0
    y = lfilter(np.array([c], np.float32), np.array([1.0, -rho], np.float32), eps, axis=1)
    if len(starts) > 1:
        lengths = np.diff(offsets)
        prev = np.zeros((classes, len(starts)), dtype=np.float32)
        prev[:, 1:] = y[:, starts[1:] - 1]  # unreset value just before each video
        since = np.arange(n) - np.repeat(starts, lengths) + 1  # t - s + 1
        decay = np.power(np.float32(rho), since, dtype=np.float32)
        vid = np.repeat(np.arange(len(starts)), lengths)
        live = decay > 1e-12  # beyond this the previous video's influence is below float32
        y[:, live] -= prev[:, vid[live]] * decay[live]
    return np.ascontiguousarray(y.T)


def _softmax_rows(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


def _confidence_temperature(
    noise: np.ndarray, labels: np.ndarray, template: np.ndarray, margin: float, accuracy: float
) -> float:
    """The temperature at which the mean top softmax probability equals the accuracy (a
    confidence-calibrated classifier), by bisection on log T over an evenly spaced sample
    of at most ``_CALIBRATION_FRAMES`` frames. The top probability of every frame grows as
    T falls (from 1/C to 1), so the mean is monotone and the root unique."""
    step = max(1, len(labels) // _CALIBRATION_FRAMES)
    idx = np.arange(0, len(labels), step)
    logits = noise[idx] + np.float32(margin) * template[labels[idx]]
    lo, hi = np.log(1e-2), np.log(1e2)
    for _ in range(24):  # T to 1e-6 relative: far below the sample's own noise
        mid = (lo + hi) / 2.0
        top = float(_softmax_rows(logits / np.float32(np.exp(mid))).max(axis=1).mean())
        if top > accuracy:
            lo = mid  # too confident: raise the temperature
        else:
            hi = mid
    return float(np.exp((lo + hi) / 2.0))


def _check_params(
    accuracy: float, correlation_s: float, confusion: float, temperature: float | None
) -> None:
    if not 1.0 < accuracy < 100.0:
        raise ValueError(
            f"accuracy is a percentage strictly between 1 and 100 (e.g. 20.6), got {accuracy}"
        )
    if not correlation_s >= 0.0:
        raise ValueError(f"correlation_s must be >= 0 seconds, got {correlation_s}")
    if not 0.0 <= confusion < 1.0:
        raise ValueError(f"confusion (similarity strength) must be in [0, 1), got {confusion}")
    if temperature is not None and not temperature > 0.0:
        raise ValueError(f"temperature must be > 0, got {temperature}")


def _rho(table: FrameTable, correlation_s: float) -> float:
    frames_per_corr = correlation_s * table.card.fps
    return float(np.exp(-1.0 / frames_per_corr)) if frames_per_corr > 0 else 0.0


def _check_classes(table: FrameTable) -> int:
    k = table.card.num_classes
    if k < 2:
        raise ValueError(
            f"dataset {table.card.name!r} has {k} class(es); simulation needs at least 2"
        )
    return k


def _simulate_ar1(
    table: FrameTable,
    accuracy: float,
    seed: int,
    correlation_s: float,
    confusion: float,
    temperature: float | None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """The ``ar1`` model's softmax array and how it was made (see module docstring)."""
    _check_params(accuracy, correlation_s, confusion, temperature)
    card = table.card
    n, k = table.num_frames, _check_classes(table)
    rho = _rho(table, correlation_s)
    sim = class_similarity(card.classes, card.background)
    # 1 - confusion*S: how much of the margin a class keeps against each other class
    keep = (1.0 - confusion * sim).astype(np.float32)
    template = (np.eye(k) + confusion * sim).astype(np.float32)
    labels = table.labels.astype(np.intp)

    rng = np.random.default_rng(seed)
    out = np.empty((n, k), dtype=np.float32)
    thresholds = np.empty(n, dtype=np.float32)
    chunks = _chunks(table.offsets)
    # pass 1: noise into `out`, and each frame's threshold margin
    for a, b in chunks:
        lo, hi = int(table.offsets[a]), int(table.offsets[b])
        noise = _ar1_noise(rng, table.offsets[a : b + 1] - lo, k, rho)
        y = labels[lo:hi]
        rows = np.arange(hi - lo)
        gap = (noise - noise[rows, y][:, None]) / keep[y]
        gap[rows, y] = -np.inf
        thresholds[lo:hi] = gap.max(axis=1)
        out[lo:hi] = noise

    # the margin at which exactly round(accuracy% * n) frames are correct
    correct = int(round(accuracy / 100.0 * n))
    if correct <= 0 or correct >= n:
        raise ValueError(f"accuracy {accuracy}% of {n} frames leaves no frame right or wrong")
    part = np.partition(thresholds, (correct - 1, correct))
    margin = float((part[correct - 1] + part[correct]) / 2.0)
    if margin < 0:
        chance = 100.0 * float(np.mean(thresholds < 0))
        raise ValueError(
            f"accuracy {accuracy}% is below what pure noise gives on {card.name!r} "
            f"({chance:.1f}%): a classifier that avoids the true class is not modelled"
        )

    fitted = temperature is None
    if temperature is None:
        temperature = _confidence_temperature(out, labels, template, margin, accuracy / 100.0)

    # pass 2: logits -> softmax in place
    hits = 0
    for a, b in chunks:
        lo, hi = int(table.offsets[a]), int(table.offsets[b])
        logits = out[lo:hi]
        y = labels[lo:hi]
        logits += np.float32(margin) * template[y]
        hits += int(np.count_nonzero(logits.argmax(axis=1) == y))
        logits /= np.float32(temperature)
        logits -= logits.max(axis=1, keepdims=True)
        np.exp(logits, out=logits)
        logits /= logits.sum(axis=1, keepdims=True)

    info = {
        "kind": "simulated",
        "model": "ar1",
        "description": "ar1-logit-noise+word-similarity (optimistic: no class prior, "
        "errors average out within a segment)",
        "version": VERSIONS["ar1"],
        "accuracy_target": float(accuracy),
        "accuracy_achieved": round(100.0 * hits / n, 4),
        "seed": int(seed),
        "correlation_s": float(correlation_s),
        "rho": rho,
        "confusion": float(confusion),
        "temperature": float(temperature),
        "temperature_fitted": fitted,
        "margin": margin,
    }
    return out, info


class _Segments:
    """The ground-truth segments of a table (maximal runs of one label inside a video) and,
    per frame, the mixture of class templates its evidence is drawn around: its own class
    and, within about ``boundary_s`` of a boundary, the neighbouring segment's class."""

    def __init__(self, table: FrameTable, boundary_s: float):
        y = table.labels.astype(np.intp)
        n = table.num_frames
        first = np.zeros(n, dtype=bool)
        first[1:] = y[1:] != y[:-1]
        first[table.offsets[:-1]] = True
        self.of = np.cumsum(first, dtype=np.int64) - 1  # segment index of every frame
        starts = np.flatnonzero(first)
        ends = np.append(starts[1:], n)
        self.count = int(starts.size)
        self.y = y
        self.blur = boundary_s > 0.0
        if not self.blur:
            return
        # neighbours inside the same video (a video's first/last segment has none)
        video_start = np.zeros(n, dtype=bool)
        video_start[table.offsets[:-1]] = True
        has_prev = ~video_start[starts]
        has_next = np.append(has_prev[1:], False)
        seg_label = y[starts]
        prev_label = np.where(has_prev, np.roll(seg_label, 1), seg_label)
        next_label = np.where(has_next, np.roll(seg_label, -1), seg_label)
        t = np.arange(n)
        seg = self.of
        frames = np.float32(boundary_s * table.card.fps)
        # weight of a neighbour: 1/2 at the boundary, decaying with the distance to it
        self.w_prev = np.where(
            has_prev[seg], 0.5 * np.exp(-(t - starts[seg]) / frames), 0.0
        ).astype(np.float32)
        self.w_next = np.where(
            has_next[seg], 0.5 * np.exp(-(ends[seg] - 1 - t) / frames), 0.0
        ).astype(np.float32)
        self.y_prev = prev_label[seg].astype(np.intp)
        self.y_next = next_label[seg].astype(np.intp)


class _Posterior:
    """``logits = log_prior + a^2 * bias_t + a * z_t``: the ``segment`` model's log posterior
    of every class for evidence scale ``a``, from ``z = noise @ T`` (stored per frame) and
    ``bias_t[j] = m_t . T_j - |T_j|^2 / 2``, ``m_t`` the frame's template mixture (its own
    class's template, blended with the neighbour's near a boundary)."""

    def __init__(self, log_prior: np.ndarray, template: np.ndarray, segs: _Segments):
        gram = template @ template
        self.log_prior = log_prior.astype(np.float32)
        self.gram = gram.astype(np.float32)
        self.half_norm = (np.diag(gram) / 2.0).astype(np.float32)
        self.segs = segs

    def bias(self, rows: slice | np.ndarray) -> np.ndarray:
        s = self.segs
        out = self.gram[s.y[rows]]
        if s.blur:
            wp, wn = s.w_prev[rows][:, None], s.w_next[rows][:, None]
            out *= 1.0 - wp - wn
            out += wp * self.gram[s.y_prev[rows]]
            out += wn * self.gram[s.y_next[rows]]
        out -= self.half_norm
        return out

    def logits(
        self, z: np.ndarray, bias: np.ndarray, a: float, out: np.ndarray | None = None
    ) -> np.ndarray:
        """The logits of the frames whose ``z`` and :meth:`bias` rows are given."""
        out = np.multiply(z, np.float32(a), out=out)
        out += bias * np.float32(a * a)
        out += self.log_prior
        return out

    def hits(self, z: np.ndarray, bias: np.ndarray, y: np.ndarray, a: float) -> int:
        return int(np.count_nonzero(self.logits(z, bias, a).argmax(axis=1) == y))


def _check_shares(segment_share: float, video_share: float) -> None:
    if not (segment_share >= 0.0 and video_share >= 0.0 and segment_share + video_share <= 1.0):
        raise ValueError(
            "segment_share and video_share must be >= 0 with a sum <= 1 (they are shares of "
            f"the noise variance), got {segment_share} and {video_share}"
        )


def _fit_scale(
    post: _Posterior,
    table: FrameTable,
    z: np.ndarray,
    accuracy: float,
    chunks: list[tuple[int, int]],
) -> float:
    """The evidence scale ``a`` at which the argmax accuracy over all frames is within
    :data:`_ACCURACY_TOLERANCE` of ``accuracy`` (see module docstring)."""
    n = table.num_frames
    step = max(1, n // _SCALE_SAMPLE_FRAMES)
    idx = np.arange(0, n, step)
    zs, bias_s, ys = z[idx], post.bias(idx), post.segs.y[idx]  # the sample's bias: once

    def sample(a: float) -> float:
        return 100.0 * post.hits(zs, bias_s, ys, a) / idx.size

    def full(a: float) -> float:
        hits = 0
        for va, vb in chunks:
            lo, hi = int(table.offsets[va]), int(table.offsets[vb])
            rows = slice(lo, hi)
            hits += post.hits(z[rows], post.bias(rows), post.segs.y[rows], a)
        return 100.0 * hits / n

    prior_only = sample(1e-6)
    if prior_only >= accuracy:
        raise ValueError(
            f"accuracy {accuracy}% is at or below what the class prior alone gives on "
            f"{table.card.name!r} ({prior_only:.1f}%, always the most frequent class)"
        )
    lo, hi = 1e-6, 1.0
    while sample(hi) < accuracy:
        lo, hi = hi, hi * 2.0
        if hi > 1e6:
            raise ValueError(f"accuracy {accuracy}% is out of the model's reach")
    for _ in range(40):  # bisection on log a: the sample's accuracy to far below its noise
        mid = math.sqrt(lo * hi)
        if sample(mid) < accuracy:
            lo = mid
        else:
            hi = mid
    # secant steps on all frames: the sample's estimate is off by its sampling error
    a_prev = math.sqrt(lo * hi)
    f_prev = full(a_prev) - accuracy
    best = (abs(f_prev), a_prev)
    a_cur = a_prev * (1.01 if f_prev < 0 else 0.99)
    for _ in range(8):
        if best[0] <= _ACCURACY_TOLERANCE:
            break
        f_cur = full(a_cur) - accuracy
        best = min(best, (abs(f_cur), a_cur))
        if f_cur == f_prev:  # a flat step of the accuracy staircase: move on
            nxt = a_cur * (1.01 if f_cur < 0 else 0.99)
        else:
            nxt = a_cur - f_cur * (a_cur - a_prev) / (f_cur - f_prev)
        a_prev, f_prev, a_cur = a_cur, f_cur, max(nxt, 1e-6)
    return best[1]


def _simulate_segment(
    table: FrameTable,
    accuracy: float,
    seed: int,
    correlation_s: float,
    confusion: float,
    temperature: float | None,
    segment_share: float,
    video_share: float,
    boundary_s: float,
) -> tuple[np.ndarray, dict[str, Any]]:
    """The ``segment`` model's softmax array and how it was made (see module docstring)."""
    _check_params(accuracy, correlation_s, confusion, temperature)
    _check_shares(segment_share, video_share)
    if not boundary_s >= 0.0:
        raise ValueError(f"boundary_s must be >= 0 seconds, got {boundary_s}")
    card = table.card
    n, k = table.num_frames, _check_classes(table)
    within_share = max(0.0, 1.0 - segment_share - video_share)
    rho = _rho(table, correlation_s)
    template = np.eye(k) + confusion * class_similarity(card.classes, card.background)
    labels = table.labels.astype(np.intp)
    counts = np.bincount(labels, minlength=k) + 1.0  # add-one: no class is impossible
    segs = _Segments(table, boundary_s)
    post = _Posterior(np.log(counts / counts.sum()), template, segs)
    vid_of = np.repeat(np.arange(table.num_videos), table.lengths)

    rng = np.random.default_rng(seed)
    seg_noise = rng.standard_normal((segs.count, k), dtype=np.float32)
    seg_noise *= np.float32(math.sqrt(segment_share))
    vid_noise = rng.standard_normal((table.num_videos, k), dtype=np.float32)
    vid_noise *= np.float32(math.sqrt(video_share))
    t32 = template.astype(np.float32)
    out = np.empty((n, k), dtype=np.float32)
    chunks = _chunks(table.offsets)
    # pass 1: z = noise @ T per frame (all the posterior needs of the noise)
    for a, b in chunks:
        lo, hi = int(table.offsets[a]), int(table.offsets[b])
        if within_share > 0.0:
            noise = _ar1_noise(rng, table.offsets[a : b + 1] - lo, k, rho)
            noise *= np.float32(math.sqrt(within_share))
        else:
            noise = np.zeros((hi - lo, k), dtype=np.float32)
        noise += seg_noise[segs.of[lo:hi]]
        noise += vid_noise[vid_of[lo:hi]]
        np.matmul(noise, t32, out=out[lo:hi])

    scale = _fit_scale(post, table, out, accuracy, chunks)
    temp = 1.0 if temperature is None else float(temperature)

    # pass 2: logits -> softmax in place
    hits = 0
    for a, b in chunks:
        lo, hi = int(table.offsets[a]), int(table.offsets[b])
        logits = out[lo:hi]
        y = labels[lo:hi]
        post.logits(logits, post.bias(slice(lo, hi)), scale, out=logits)
        hits += int(np.count_nonzero(logits.argmax(axis=1) == y))
        if temp != 1.0:
            logits /= np.float32(temp)
        logits -= logits.max(axis=1, keepdims=True)
        np.exp(logits, out=logits)
        logits /= logits.sum(axis=1, keepdims=True)

    info = {
        "kind": "simulated",
        "model": "segment",
        "description": "posterior of Gaussian evidence with the class prior; noise drawn per "
        "segment, per video and AR(1) within; word-similarity templates",
        "version": VERSIONS["segment"],
        "accuracy_target": float(accuracy),
        "accuracy_achieved": round(100.0 * hits / n, 4),
        "seed": int(seed),
        "correlation_s": float(correlation_s),
        "rho": rho,
        "confusion": float(confusion),
        "segment_share": float(segment_share),
        "video_share": float(video_share),
        "within_share": within_share,
        "boundary_s": float(boundary_s),
        "prior": "class frequencies of the table, add-one smoothed",
        "scale": scale,
        "temperature": temp,
        "temperature_fitted": False,
    }
    return out, info


def _simulate(
    table: FrameTable,
    accuracy: float,
    seed: int,
    correlation_s: float = 1.0,
    confusion: float = DEFAULT_CONFUSION,
    temperature: float | None = None,
    model: str = DEFAULT_MODEL,
    segment_share: float = DEFAULT_SEGMENT_SHARE,
    video_share: float = DEFAULT_VIDEO_SHARE,
    boundary_s: float = DEFAULT_BOUNDARY_S,
) -> tuple[np.ndarray, dict[str, Any]]:
    if model == "segment":
        return _simulate_segment(
            table, accuracy, seed, correlation_s, confusion, temperature,
            segment_share, video_share, boundary_s,
        )
    if model == "ar1":
        return _simulate_ar1(table, accuracy, seed, correlation_s, confusion, temperature)
    raise ValueError(f"unknown simulation model {model!r} (choose from {', '.join(MODELS)})")


def simulate_softmax(
    table: FrameTable,
    accuracy: float,
    seed: int,
    correlation_s: float = 1.0,
    confusion: float = DEFAULT_CONFUSION,
    temperature: float | None = None,
    model: str = DEFAULT_MODEL,
    segment_share: float = DEFAULT_SEGMENT_SHARE,
    video_share: float = DEFAULT_VIDEO_SHARE,
    boundary_s: float = DEFAULT_BOUNDARY_S,
) -> np.ndarray:
    """Per-frame softmax (frames, classes) float32 of a simulated frame classifier.

    ``accuracy``: target argmax accuracy in percent over all frames (1 < accuracy < 100);
    ``correlation_s``: AR(1) correlation time of the (within-segment) noise in seconds
    (0: i.i.d.); ``confusion``: strength in [0, 1) of the word-similarity leak between
    classes; ``temperature``: divides the logits (lower = peakier softmax; argmax
    unchanged); None (default) gives a confidence-calibrated classifier (``segment``: the
    exact posterior, temperature 1; ``ar1``: the temperature at which the mean top
    probability equals the accuracy). ``model``: one of :data:`MODELS`;
    ``segment_share``/``video_share``: the ``segment`` model's shares of the noise variance
    drawn per segment and per video, ``boundary_s``: how far (seconds) a neighbouring
    segment's template reaches into a segment (the three ignored by ``ar1``).
    Deterministic for ``seed``. Raises ``ValueError`` for parameters outside those ranges.
    """
    return _simulate(
        table, accuracy, seed, correlation_s, confusion, temperature, model,
        segment_share, video_share, boundary_s,
    )[0]


def simulate(
    table: FrameTable,
    accuracy: float | None = None,
    seed: int = 0,
    correlation_s: float = 1.0,
    confusion: float = DEFAULT_CONFUSION,
    temperature: float | None = None,
    model: str = DEFAULT_MODEL,
    segment_share: float = DEFAULT_SEGMENT_SHARE,
    video_share: float = DEFAULT_VIDEO_SHARE,
    boundary_s: float = DEFAULT_BOUNDARY_S,
) -> FrameTable:
    """``table`` with its ``features`` replaced by simulated softmax vectors; the card's
    ``features`` description records the model, its parameters and the achieved accuracy.
    ``accuracy=None`` takes the paper's value for the card's name (``KeyError`` if none).
    Parameters as :func:`simulate_softmax`."""
    if accuracy is None:
        accuracy = default_accuracy(table.card.name)
    feats, info = _simulate(
        table, accuracy, seed, correlation_s, confusion, temperature, model,
        segment_share, video_share, boundary_s,
    )
    return table.with_features(feats, info)


def record_calibration(table: FrameTable, split: str | int | None = 1) -> FrameTable:
    """``table`` with :func:`data_prep.calibration.calibration_report` of its features
    recorded in the card's ``features`` description under ``calibration`` (split ``split``
    for the recalibration; None or a table without splits: no recalibration)."""
    from .calibration import calibration_report

    report = calibration_report(table, split).to_dict()
    description = {**(table.card.features or {}), "calibration": report}
    return table.with_features(table.features, description)


def _report_lines(report: dict[str, Any], target: float | None) -> list[str]:
    from .calibration import BOUNDS

    lines = [
        f"frame accuracy      {report['frame_accuracy']:.2f}%"
        + (f" (paper's CNN: {target}%)" if target is not None else ""),
    ]
    if report["recalibration_gain"] is not None:
        lines.append(
            f"recalibration gain  {report['recalibration_gain']:+.2f} points on "
            f"{report['split']} test ({report['argmax_test_accuracy']:.2f}% argmax -> "
            f"{report['recalibrated_test_accuracy']:.2f}% logistic regression on the "
            f"log-scores, fitted on {report['train_frames_used']:,} training frames; "
            f"bound +{BOUNDS.max_recalibration_gain}, paper +1.65)"
        )
    else:
        lines.append("recalibration gain  - (no split)")
    lines.append(
        f"segment consensus   {report['segment_consensus']:.2f}% of {report['segments']:,} "
        f"segments ({report['consensus_gain']:+.2f} points over frames; bound "
        f"+{BOUNDS.max_consensus_gain}, paper -2.0)"
    )
    return lines


def _problems(report: dict[str, Any], target: float | None) -> list[str]:
    from .calibration import CalibrationReport

    return CalibrationReport(**report).problems(target)


def command(
    path: Path = typer.Argument(..., help="A prepared frame table (.parquet)."),
    out: Path | None = typer.Option(
        None, "--out", help="Where to write the table with features (required unless --report)."
    ),
    report: bool = typer.Option(
        False,
        "--report",
        help="Only measure the class-score features PATH already has (e.g. a real CNN's "
        "export): frame accuracy, per-frame recalibration gain, segment consensus. Writes "
        "nothing.",
    ),
    split: str = typer.Option(
        "1", "--split", help="Split whose train/test frames the recalibration uses."
    ),
    model: str = typer.Option(
        DEFAULT_MODEL,
        "--model",
        help="segment: calibrated to the paper's CNN (default); ar1: the optimistic model "
        "(no class prior, errors average out within a segment).",
    ),
    accuracy: float | None = typer.Option(
        None,
        "--accuracy",
        help="Target frame accuracy in percent (e.g. 20.6). Default: the paper's CNN "
        "accuracy for the dataset (Table 4: breakfast 20.6, salads 37.5, mpii 36.1).",
    ),
    seed: int = typer.Option(0, "--seed", help="Random seed (same seed, same features)."),
    correlation_s: float = typer.Option(
        1.0,
        "--correlation-s",
        help="Correlation time of the (within-segment) errors in seconds (0: i.i.d.).",
    ),
    confusion: float = typer.Option(
        DEFAULT_CONFUSION,
        "--confusion",
        help="How strongly classes sharing words are confused, in [0, 1).",
    ),
    segment_share: float = typer.Option(
        DEFAULT_SEGMENT_SHARE,
        "--segment-share",
        help="segment model: share of the noise variance drawn once per true segment.",
    ),
    video_share: float = typer.Option(
        DEFAULT_VIDEO_SHARE,
        "--video-share",
        help="segment model: share of the noise variance drawn once per video.",
    ),
    boundary_s: float = typer.Option(
        DEFAULT_BOUNDARY_S,
        "--boundary-s",
        help="segment model: how far (seconds) evidence of a neighbouring segment's class "
        "reaches into a segment (0: none).",
    ),
    temperature: float | None = typer.Option(
        None,
        "--temperature",
        help="Softmax temperature (lower: peakier; accuracy unchanged). Default: "
        "confidence-calibrated (segment: the posterior; ar1: mean top probability = "
        "accuracy).",
    ),
) -> None:
    """Add simulated frame-classifier softmax features to a prepared dataset (and measure
    how they err), or with --report measure the features a table already has."""
    split_key: str | int = int(split) if split.isdigit() else split
    if report:
        table = read_table(path)
        try:
            target = default_accuracy(table.card.name)
        except KeyError:
            target = None
        try:
            if table.card.splits:
                table.card.split(split_key)
            from .calibration import calibration_report

            rep = calibration_report(table, split_key).to_dict()
        except (KeyError, ValueError) as e:
            raise DataError(str(e.args[0]), path) from None
        typer.echo(f"{describe(table)}")
        for line in _report_lines(rep, target):
            typer.echo(f"  {line}")
        for p in _problems(rep, target):
            typer.echo(f"  outside the bounds: {p}")
        return
    if out is None:
        raise DataError("--out is required (or --report to only measure the features)", path)
    table = read_table(path, features=False)
    try:
        if table.card.splits:
            table.card.split(split_key)
        result = simulate(
            table, accuracy, seed, correlation_s, confusion, temperature, model,
            segment_share, video_share, boundary_s,
        )
        result = record_calibration(result, split_key)
    except KeyError as e:
        raise DataError(str(e.args[0]), path) from None
    except ValueError as e:
        raise DataError(str(e), path) from None
    write_table(result, out)
    f = result.card.features or {}
    typer.echo(
        f"{describe(result, out)}; simulated accuracy {f['accuracy_achieved']:.2f}% "
        f"(target {f['accuracy_target']}%, model {model}, seed {seed})"
    )
    rep = f["calibration"]
    for line in _report_lines(rep, None)[1:]:
        typer.echo(f"  {line}")
    for p in _problems(rep, f["accuracy_target"]):
        typer.echo(f"  outside the bounds: {p}")
