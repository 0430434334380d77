"""The simulated frame classifier's models: per-frame softmax from real label sequences.

:mod:`data_prep.simulate` is the command and the public functions; this module is the math
of the two older models and what all models share. Three models (registry
:data:`MODELS`; :data:`DEFAULT_MODEL` is ``confuser``, stated in
:mod:`data_prep.sim_confuser`, calibrated two-sided per dataset, issue 16).

``segment`` (version 1, the default before issue 16; kept, memorisable): how a
cross-entropy-trained frame CNN errs. Its softmax is the
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
* Issue 16 found it memorisable: 80 % of each frame's noise is an isotropic vector shared
  by a segment or a video, so a per-frame classifier (or an LSTM) fitted on the training
  videos learns their "fingerprints" (held-out 10.4 % vs 40.6 % on its own frames on
  Breakfast). Its prior also counts the test frames. Kept for comparison only.

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
percent, as the rest of the platform reports metrics.

Everything is vectorised numpy/scipy over chunks of whole videos (the AR(1) filter runs
with ``scipy.signal.lfilter`` over each chunk, with resets at video starts applied in
closed form); there is no Python loop over frames. Both models share the chunking, the
validation and the last pass (logits -> argmax hits -> softmax in place).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from .table import FrameTable

__all__ = [
    "DEFAULT_AR_SHARE",
    "DEFAULT_BOUNDARY_S",
    "DEFAULT_CONFUSERS",
    "DEFAULT_CONFUSER_WEIGHT",
    "DEFAULT_CONFUSION",
    "DEFAULT_CORRELATION_S",
    "DEFAULT_MODEL",
    "DEFAULT_PRIOR_WEIGHT",
    "DEFAULT_SEGMENT_SHARE",
    "DEFAULT_VIDEO_SHARE",
    "CONFUSER_DATASET_DEFAULTS",
    "MODELS",
    "VERSIONS",
    "SimOptions",
    "class_similarity",
    "resolve_options",
    "Segments",
    "ar1_noise",
    "count_hits",
    "sim_info",
    "sim_setup",
    "simulate_ar1",
    "simulate_segment",
    "softmax_rows",
]

#: The simulation models, by name: what ``--model`` accepts and the card's ``model``.
MODELS: tuple[str, ...] = ("confuser", "segment", "ar1")

#: The default: the model calibrated (two-sided) against the paper's measurements.
DEFAULT_MODEL = "confuser"

#: Version of each model; recorded in the card (bump when a model's output changes).
VERSIONS: dict[str, str] = {"confuser": "1", "segment": "1", "ar1": "1"}

#: Default correlation time (seconds) of the (within-segment) noise.
DEFAULT_CORRELATION_S = 1.0

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

#: ``confuser`` model (data_prep.sim_confuser): confuser classes per class, the share of a
#: frame's mean evidence that goes to its segment's confuser, the weight of the training
#: prior in the logits and the AR(1) share of the noise. Calibrated with
#: data_prep.calibration on Breakfast cam01, 50 Salads fine and MPII Cooking (docs/data.md).
DEFAULT_CONFUSERS = 2
DEFAULT_CONFUSER_WEIGHT = 0.45
DEFAULT_PRIOR_WEIGHT = 2.0
DEFAULT_AR_SHARE = 0.9

#: ``confuser`` model: the knobs calibrated per dataset (docs/data.md has the measurements),
#: looked up by card name like the accuracy (exact, else the longest prefix); a dataset not
#: listed gets :data:`DEFAULT_CONFUSER_WEIGHT` and :data:`DEFAULT_BOUNDARY_S`. The datasets
#: differ in how short their segments are (50 Salads fine: many sub-second prep/post
#: segments; MPII: 47 % of segments are short background gaps), so one blur does not fit all.
CONFUSER_DATASET_DEFAULTS: dict[str, dict[str, float]] = {
    "breakfast": {"confuser_weight": 0.45, "boundary_s": 0.5},
    "salads": {"confuser_weight": 0.42, "boundary_s": 0.25},
    "50salads": {"confuser_weight": 0.42, "boundary_s": 0.25},
    "50_salads": {"confuser_weight": 0.42, "boundary_s": 0.25},
    "mpii": {"confuser_weight": 0.4, "boundary_s": 0.9},
}

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


@dataclass(frozen=True)
class SimOptions:
    """How to simulate, besides the target accuracy and the seed (meanings as in
    :func:`data_prep.simulate.simulate_softmax`; the ``segment_share``, ``video_share`` and
    ``boundary_s`` are the ``segment`` model's, ignored by ``ar1``)."""

    correlation_s: float = DEFAULT_CORRELATION_S
    confusion: float = DEFAULT_CONFUSION
    temperature: float | None = None
    model: str = DEFAULT_MODEL
    segment_share: float = DEFAULT_SEGMENT_SHARE
    video_share: float = DEFAULT_VIDEO_SHARE
    boundary_s: float | None = None  # None: the model's (and dataset's) default
    confusers: int = DEFAULT_CONFUSERS
    confuser_weight: float | None = None  # None: the dataset's default
    prior_weight: float = DEFAULT_PRIOR_WEIGHT
    ar_share: float = DEFAULT_AR_SHARE


def dataset_defaults(name: str) -> dict[str, float]:
    """The ``confuser`` knobs calibrated for a dataset name (empty when not listed)."""
    key = name.lower()
    if key in CONFUSER_DATASET_DEFAULTS:
        return dict(CONFUSER_DATASET_DEFAULTS[key])
    prefixes = [k for k in CONFUSER_DATASET_DEFAULTS if key.startswith(k)]
    return dict(CONFUSER_DATASET_DEFAULTS[max(prefixes, key=len)]) if prefixes else {}


def resolve_options(options: SimOptions, name: str) -> SimOptions:
    """``options`` with its None knobs filled in: the dataset's calibrated values for the
    ``confuser`` model, the module defaults otherwise."""
    known = dataset_defaults(name) if options.model == "confuser" else {}
    changes: dict[str, Any] = {}
    if options.boundary_s is None:
        changes["boundary_s"] = known.get("boundary_s", DEFAULT_BOUNDARY_S)
    if options.confuser_weight is None:
        changes["confuser_weight"] = known.get("confuser_weight", DEFAULT_CONFUSER_WEIGHT)
    return dataclasses.replace(options, **changes) if changes else options


# -- shared pieces -----------------------------------------------------------------------


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


class _Chunk(NamedTuple):
    """Whole videos processed together: frames ``[lo, hi)`` of the table and the videos'
    offsets relative to ``lo``."""

    lo: int
    hi: int
    offsets: np.ndarray


def _chunks(offsets: np.ndarray, target: int = _CHUNK_FRAMES) -> list[_Chunk]:
    """Runs of whole videos of about ``target`` frames each (at least one video)."""
    out: list[_Chunk] = []
    a = 0
    nv = len(offsets) - 1
    while a < nv:
        b = int(np.searchsorted(offsets, offsets[a] + target, side="right")) - 1
        b = min(max(b, a + 1), nv)
        lo, hi = int(offsets[a]), int(offsets[b])
        out.append(_Chunk(lo, hi, offsets[a : b + 1] - lo))
        a = b
    return out


def ar1_noise(
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


def softmax_rows(logits: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Row-wise softmax; into ``out`` (which may be ``logits`` itself) when given."""
    z = np.subtract(logits, logits.max(axis=1, keepdims=True), out=out)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


def count_hits(logits: np.ndarray, y: np.ndarray) -> int:
    """Frames whose argmax is their label."""
    return int(np.count_nonzero(logits.argmax(axis=1) == y))


class _Setup(NamedTuple):
    """What both models start from (after the common checks)."""

    n: int  # frames
    k: int  # classes
    rho: float  # AR(1) coefficient of the within-segment noise
    sim: np.ndarray  # class_similarity, float64 (C, C)
    template: np.ndarray  # I + confusion * sim, float64 (C, C)
    labels: np.ndarray  # intp, per frame
    chunks: list[_Chunk]


#: turns a chunk's rows of the output into logits in place: (rows, chunk, labels)
_MakeLogits = Callable[[np.ndarray, _Chunk, np.ndarray], None]


def sim_setup(table: FrameTable, accuracy: float, options: SimOptions) -> _Setup:
    """Check the parameters both models take (``ValueError``) and derive what they share."""
    o = options
    if not 1.0 < accuracy < 100.0:
        raise ValueError(
            f"accuracy is a percentage strictly between 1 and 100 (e.g. 20.6), got {accuracy}"
        )
    if not o.correlation_s >= 0.0:
        raise ValueError(f"correlation_s must be >= 0 seconds, got {o.correlation_s}")
    if not 0.0 <= o.confusion < 1.0:
        raise ValueError(f"confusion (similarity strength) must be in [0, 1), got {o.confusion}")
    if o.temperature is not None and not o.temperature > 0.0:
        raise ValueError(f"temperature must be > 0, got {o.temperature}")
    if o.model == "segment":  # checked before the table, as they always were
        _check_segment_options(o)
    if o.model == "confuser":
        _check_confuser_options(o)
    card = table.card
    k = card.num_classes
    if k < 2:
        raise ValueError(f"dataset {card.name!r} has {k} class(es); simulation needs at least 2")
    frames_per_corr = o.correlation_s * card.fps
    rho = float(np.exp(-1.0 / frames_per_corr)) if frames_per_corr > 0 else 0.0
    sim = class_similarity(card.classes, card.background)
    return _Setup(
        n=table.num_frames,
        k=k,
        rho=rho,
        sim=sim,
        template=np.eye(k) + o.confusion * sim,
        labels=table.labels.astype(np.intp),
        chunks=_chunks(table.offsets),
    )


def _to_softmax(
    out: np.ndarray, s: _Setup, temperature: float, make_logits: _MakeLogits
) -> int:
    """The last pass of both models, chunk by chunk in place: ``make_logits(rows, chunk, y)``
    turns the chunk's rows of ``out`` into logits, their argmax hits are counted, then the
    rows become the softmax at ``temperature``. Returns the hits over all frames."""
    hits = 0
    for c in s.chunks:
        logits = out[c.lo : c.hi]
        y = s.labels[c.lo : c.hi]
        make_logits(logits, c, y)
        hits += count_hits(logits, y)
        if temperature != 1.0:  # (x / 1.0 is x exactly: skipping it changes no bit)
            logits /= np.float32(temperature)
        softmax_rows(logits, out=logits)
    return hits


def sim_info(
    model: str, description: str, accuracy: float, hits: int, seed: int, s: _Setup,
    options: SimOptions, **details: Any,
) -> dict[str, Any]:
    """The card's ``features`` description: what both models record, then ``details``."""
    return {
        "kind": "simulated",
        "model": model,
        "description": description,
        "version": VERSIONS[model],
        "accuracy_target": float(accuracy),
        "accuracy_achieved": round(100.0 * hits / s.n, 4),
        "seed": int(seed),
        "correlation_s": float(options.correlation_s),
        "rho": s.rho,
        "confusion": float(options.confusion),
        **details,
    }


# -- ar1 ---------------------------------------------------------------------------------


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
        top = float(softmax_rows(logits / np.float32(np.exp(mid))).max(axis=1).mean())
        if top > accuracy:
            lo = mid  # too confident: raise the temperature
        else:
            hi = mid
    return float(np.exp((lo + hi) / 2.0))


def simulate_ar1(
    table: FrameTable, accuracy: float, seed: int, options: SimOptions
) -> tuple[np.ndarray, dict[str, Any]]:
    """The ``ar1`` model's softmax array and how it was made (see module docstring)."""
    s = sim_setup(table, accuracy, options)
    n, k = s.n, s.k
    # 1 - confusion*S: how much of the margin a class keeps against each other class
    keep = (1.0 - options.confusion * s.sim).astype(np.float32)
    template = s.template.astype(np.float32)

    rng = np.random.default_rng(seed)
    out = np.empty((n, k), dtype=np.float32)
    thresholds = np.empty(n, dtype=np.float32)
    # pass 1: noise into `out`, and each frame's threshold margin
    for c in s.chunks:
        noise = ar1_noise(rng, c.offsets, k, s.rho)
        y = s.labels[c.lo : c.hi]
        rows = np.arange(c.hi - c.lo)
        gap = (noise - noise[rows, y][:, None]) / keep[y]
        gap[rows, y] = -np.inf
        thresholds[c.lo : c.hi] = gap.max(axis=1)
        out[c.lo : c.hi] = noise

    # the margin at which exactly round(accuracy% * n) frames are correct
    correct = int(round(accuracy / 100.0 * n))
    if correct <= 0 or correct >= n:
        raise ValueError(f"accuracy {accuracy}% of {n} frames leaves no frame right or wrong")
    part = np.partition(thresholds, (correct - 1, correct))
    margin = float((part[correct - 1] + part[correct]) / 2.0)
    if margin < 0:
        chance = 100.0 * float(np.mean(thresholds < 0))
        raise ValueError(
            f"accuracy {accuracy}% is below what pure noise gives on {table.card.name!r} "
            f"({chance:.1f}%): a classifier that avoids the true class is not modelled"
        )

    temperature = options.temperature
    if temperature is None:
        temperature = _confidence_temperature(out, s.labels, template, margin, accuracy / 100.0)

    def logits_of(logits: np.ndarray, c: _Chunk, y: np.ndarray) -> None:
        logits += np.float32(margin) * template[y]

    hits = _to_softmax(out, s, temperature, logits_of)
    return out, sim_info(
        "ar1",
        "ar1-logit-noise+word-similarity (optimistic: no class prior, "
        "errors average out within a segment)",
        accuracy, hits, seed, s, options,
        temperature=float(temperature),
        temperature_fitted=options.temperature is None,
        margin=margin,
    )


# -- segment -----------------------------------------------------------------------------


class Segments:
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

    def __init__(self, log_prior: np.ndarray, template: np.ndarray, segs: Segments):
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

    def count_hits(self, z: np.ndarray, bias: np.ndarray, y: np.ndarray, a: float) -> int:
        return count_hits(self.logits(z, bias, a), y)


def _check_segment_options(o: SimOptions) -> None:
    if not (o.segment_share >= 0.0 and o.video_share >= 0.0
            and o.segment_share + o.video_share <= 1.0):
        raise ValueError(
            "segment_share and video_share must be >= 0 with a sum <= 1 (they are shares of "
            f"the noise variance), got {o.segment_share} and {o.video_share}"
        )
    if not o.boundary_s >= 0.0:
        raise ValueError(f"boundary_s must be >= 0 seconds, got {o.boundary_s}")


def _check_confuser_options(o: SimOptions) -> None:
    if not (isinstance(o.confusers, int) and o.confusers >= 1):
        raise ValueError(f"confusers must be an integer >= 1, got {o.confusers}")
    if not 0.0 <= o.confuser_weight < 0.5:
        # at 1/2 or more a frame's confuser would outweigh its own class
        raise ValueError(f"confuser_weight must be in [0, 0.5), got {o.confuser_weight}")
    if not 0.0 <= o.prior_weight <= 10.0:
        raise ValueError(f"prior_weight must be in [0, 10], got {o.prior_weight}")
    if not 0.0 <= o.ar_share <= 1.0:
        raise ValueError(f"ar_share must be in [0, 1], got {o.ar_share}")
    if not o.boundary_s >= 0.0:
        raise ValueError(f"boundary_s must be >= 0 seconds, got {o.boundary_s}")


def _fit_scale(
    post: _Posterior, table: FrameTable, z: np.ndarray, accuracy: float, chunks: list[_Chunk]
) -> float:
    """The evidence scale ``a`` at which the argmax accuracy over all frames is within
    :data:`_ACCURACY_TOLERANCE` of ``accuracy`` (see module docstring)."""
    n = table.num_frames
    step = max(1, n // _SCALE_SAMPLE_FRAMES)
    idx = np.arange(0, n, step)
    zs, bias_s, ys = z[idx], post.bias(idx), post.segs.y[idx]  # the sample's bias: once

    def sample(a: float) -> float:
        return 100.0 * post.count_hits(zs, bias_s, ys, a) / idx.size

    def full(a: float) -> float:
        hits = 0
        for c in chunks:
            rows = slice(c.lo, c.hi)
            hits += post.count_hits(z[rows], post.bias(rows), post.segs.y[rows], a)
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


def simulate_segment(
    table: FrameTable, accuracy: float, seed: int, options: SimOptions
) -> tuple[np.ndarray, dict[str, Any]]:
    """The ``segment`` model's softmax array and how it was made (see module docstring)."""
    o = options
    s = sim_setup(table, accuracy, o)
    n, k = s.n, s.k
    within_share = max(0.0, 1.0 - o.segment_share - o.video_share)
    counts = np.bincount(s.labels, minlength=k) + 1.0  # add-one: no class is impossible
    segs = Segments(table, o.boundary_s)
    post = _Posterior(np.log(counts / counts.sum()), s.template, segs)
    vid_of = np.repeat(np.arange(table.num_videos), table.lengths)

    rng = np.random.default_rng(seed)
    seg_noise = rng.standard_normal((segs.count, k), dtype=np.float32)
    seg_noise *= np.float32(math.sqrt(o.segment_share))
    vid_noise = rng.standard_normal((table.num_videos, k), dtype=np.float32)
    vid_noise *= np.float32(math.sqrt(o.video_share))
    t32 = s.template.astype(np.float32)
    out = np.empty((n, k), dtype=np.float32)
    # pass 1: z = noise @ T per frame (all the posterior needs of the noise)
    for c in s.chunks:
        if within_share > 0.0:
            noise = ar1_noise(rng, c.offsets, k, s.rho)
            noise *= np.float32(math.sqrt(within_share))
        else:
            noise = np.zeros((c.hi - c.lo, k), dtype=np.float32)
        noise += seg_noise[segs.of[c.lo : c.hi]]
        noise += vid_noise[vid_of[c.lo : c.hi]]
        np.matmul(noise, t32, out=out[c.lo : c.hi])

    scale = _fit_scale(post, table, out, accuracy, s.chunks)
    temp = 1.0 if o.temperature is None else float(o.temperature)

    def logits_of(logits: np.ndarray, c: _Chunk, y: np.ndarray) -> None:
        post.logits(logits, post.bias(slice(c.lo, c.hi)), scale, out=logits)

    hits = _to_softmax(out, s, temp, logits_of)
    return out, sim_info(
        "segment",
        "posterior of Gaussian evidence with the class prior; noise drawn per "
        "segment, per video and AR(1) within; word-similarity templates",
        accuracy, hits, seed, s, o,
        segment_share=float(o.segment_share),
        video_share=float(o.video_share),
        within_share=within_share,
        boundary_s=float(o.boundary_s),
        prior="class frequencies of the table, add-one smoothed",
        scale=scale,
        temperature=temp,
        temperature_fitted=False,
    )
