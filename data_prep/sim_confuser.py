"""The ``confuser`` simulation model (version 1, the default of ``kitchen-study simulate``).

How a frame CNN trained on the *training* people of a split errs on the *test* people: its
mistakes are systematic (each class is mistaken for the same few classes in every video),
they last about a second (motion, occlusion), and its scores lean towards the classes that
were frequent in its training frames. Nothing in it is drawn once per segment or per video
as an isotropic random vector, so a per-frame classifier fitted on its scores cannot learn
"fingerprints" of the training videos (the failure of ``segment`` v1, issue 16)::

    mu_t     = (1 - wp - wn) * [(1 - lam) e[y_t] + lam e[c(s)]] + wp e[prev] + wn e[next]
    n_t      = sqrt(1 - r) * eps_t + sqrt(r) * u_t           eps ~ N(0, I_C), u unit AR(1) per video
    logits_t = (a_f * (a_f * mu_t + n_t) + beta * log pi_f) / T_f
    scores_t = softmax(logits_t)

``c(s)`` is one of ``y``'s confusers, per segment; ``wp``/``wn`` = 1/2 exp(-d / (boundary_s
fps)) at distance ``d`` frames from the boundary with the previous/next segment of the
video (0 where there is none), as in ``segment``'s boundary blend. The evidence
``a mu + n`` is weighted as a Gaussian log-likelihood (``a``), so ``beta = 1`` would be the
prior of a Bayes classifier and ``beta > 1`` over-weights it.

* **Folds.** Every video is scored with the parameters of *its fold*: the first split that
  lists it as a test video (a table whose splits are leave-person-out partitions gives each
  video exactly one). ``pi_f``, the confusers, ``a_f`` and ``T_f`` come from that split's
  TRAINING videos only, so no test label of the split enters any of its test videos'
  scores: change a test video's labels and the other test videos of its split keep their
  scores bit for bit (the random draws depend on frame counts only, never on labels). A
  video no split tests (or a table without splits) is scored as if its participant were
  held out: its fold's training videos are the other participants' (other videos when it
  has only one participant; its own as a last resort, recorded in the card).
* **Confusers** ``C_f[y]``: the ``m`` classes most often adjacent to ``y`` (the segment
  just before or after a ``y`` segment) in the fold's training videos — what a CNN sees
  around an action is what it takes it for. Ties go to the class sharing more name words
  (:func:`~data_prep.sim_models.class_similarity`), then to the more frequent training
  class, then to the lower index. Each ground-truth segment leans towards one of them,
  picked uniformly by a draw at the segment's first frame.
* **Noise**: unit variance per frame and class; a share ``r`` is AR(1) with correlation time
  ``correlation_s`` (restarted at each video start), the rest i.i.d.
* **Prior**: ``pi_f`` = class frequencies of the fold's training frames, add-one smoothed,
  over-weighted by ``beta`` (a CNN trained with cross-entropy on skewed classes
  over-predicts the frequent ones when the evidence is weak; it is what a per-frame
  recalibration on the scores can partly undo, as the paper's SVM on the softmax did).
* **Scale** ``a_f``: bisection until the argmax accuracy on an evenly spaced sample of the
  fold's *training* frames equals the target, each training participant scored with the
  prior and confusers of the *other* training participants (:data:`_INNER_GROUPS` groups
  of people): the fit sees the same train -> test mismatch as the test people, with no
  test label. The test frames' accuracy is an outcome (within a few tenths of the target
  on the real datasets, ``docs/data.md``). A target at or below what the prior alone gives
  is an error.
* **Temperature** ``T_f``: by default the one at which the mean top score on that sample
  equals the target accuracy (confidence-calibrated on training frames); a given
  ``temperature`` fixes it. It never changes the argmax.

Deterministic for ``seed``: one numpy ``Generator``, per chunk of whole videos the AR(1)
draws, the i.i.d. draws and one uniform per frame (used at segment starts).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from .sim_models import (
    SimOptions,
    ar1_noise,
    count_hits,
    sim_info,
    sim_setup,
    softmax_rows,
)
from .table import FrameTable

#: Frames sampled per fold to fit the scale and the temperature (evenly spaced over the
#: fold's training frames: every training video contributes).
_FIT_FRAMES = 1 << 16


class Fold(NamedTuple):
    """The videos scored with one parameter set and the videos those parameters come from."""

    name: str
    test: np.ndarray  # video indices scored with this fold's parameters
    train: np.ndarray  # video indices whose labels the parameters are computed from


def folds(table: FrameTable) -> list[Fold]:
    """The folds of the module docstring: per split (first split testing a video), then one
    per participant for the videos no split tests."""
    nv = table.num_videos
    fold_of = np.full(nv, -1, dtype=np.int64)
    out: list[Fold] = []
    for s in table.card.splits:
        test = table.video_indices(s.test)
        mine = test[fold_of[test] < 0]
        if mine.size == 0:
            continue
        fold_of[mine] = len(out)
        out.append(Fold(s.name, np.sort(mine), np.sort(table.video_indices(s.train))))
    rest = np.flatnonzero(fold_of < 0)
    if rest.size:
        people = np.asarray(table.participant, dtype=object)
        for p in dict.fromkeys(people[rest].tolist()):
            mine = rest[people[rest] == p]
            train = np.flatnonzero(people != p)
            if train.size == 0:  # one participant: the other videos, else the video itself
                train = np.setdiff1d(np.arange(nv), mine)
                if train.size == 0:
                    train = mine
            out.append(Fold(f"participant:{p}", mine, train))
    return out


class _Segs(NamedTuple):
    of: np.ndarray  # segment index per frame
    starts: np.ndarray  # first frame of each segment
    label: np.ndarray  # label of each segment
    video: np.ndarray  # video of each segment


def _segments(table: FrameTable) -> _Segs:
    y = table.labels.astype(np.intp)
    n = table.num_frames
    first = np.zeros(n, dtype=bool)
    first[1:] = y[1:] != y[:-1]
    first[table.offsets[:-1]] = True
    starts = np.flatnonzero(first)
    video = np.repeat(np.arange(table.num_videos), table.lengths)[starts]
    return _Segs(np.cumsum(first, dtype=np.int64) - 1, starts, y[starts], video)


def _frames_of(table: FrameTable, videos: np.ndarray) -> np.ndarray:
    lengths = table.lengths[videos]
    starts = np.repeat(table.offsets[videos], lengths)
    within = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return starts + within


def confusers(
    table: FrameTable, segs: _Segs, train: np.ndarray, m: int, sim: np.ndarray,
    counts: np.ndarray,
) -> np.ndarray:
    """(C, m) confuser classes of every class from the adjacencies in ``train`` videos."""
    k = table.card.num_classes
    in_train = np.zeros(table.num_videos, dtype=bool)
    in_train[train] = True
    keep = in_train[segs.video]
    lab, vid = segs.label[keep], segs.video[keep]
    pair = vid[1:] == vid[:-1]  # consecutive segments of the same video
    a, b = lab[:-1][pair], lab[1:][pair]
    adj = np.zeros((k, k), dtype=np.float64)
    np.add.at(adj, (a, b), 1.0)
    np.add.at(adj, (b, a), 1.0)
    freq = counts / counts.sum()
    # lexicographic keys as one float: adjacency count, then shared words (< 1), then
    # training frequency (< 1e-3): counts are integers, so the tie-breaks never outrank them
    key = adj + 0.5 * sim + 1e-3 * freq[None, :]
    np.fill_diagonal(key, -np.inf)
    order = np.argsort(-key, axis=1, kind="stable")  # stable: lower index wins exact ties
    return order[:, :m].astype(np.intp)


class _FoldParams(NamedTuple):
    log_prior: np.ndarray  # (C,) beta * log pi, float32
    conf: np.ndarray  # (C, m) confusers
    scale: float
    temperature: float


class _Blur(NamedTuple):
    """Per-frame weights and classes of the neighbouring segments near a boundary."""

    w_prev: np.ndarray
    w_next: np.ndarray
    y_prev: np.ndarray
    y_next: np.ndarray

    def rows(self, idx: np.ndarray | slice) -> _Blur:
        return _Blur(self.w_prev[idx], self.w_next[idx], self.y_prev[idx], self.y_next[idx])


def _logits_rows(
    noise: np.ndarray, y: np.ndarray, c: np.ndarray, scale: float, lam: float,
    log_prior: np.ndarray, blur: _Blur | None, out: np.ndarray | None = None,
) -> np.ndarray:
    """``a * (a * mu + n) + beta log pi`` for rows with labels ``y``, segment confusers
    ``c`` and boundary blend ``blur``: the evidence ``a * mu + n`` weighted as a Gaussian
    log-likelihood (``a``), so ``beta = 1`` is the prior a Bayes classifier would use."""
    out = np.multiply(noise, np.float32(scale), out=out)
    out += log_prior
    rows = np.arange(len(y))
    a2 = np.float32(scale * scale)
    if blur is None:
        out[rows, y] += a2 * np.float32(1.0 - lam)
        out[rows, c] += a2 * np.float32(lam)
        return out
    own = a2 * (np.float32(1.0) - blur.w_prev - blur.w_next)
    # += through fancy indexing adds once per (row, class) pair: each row's pairs are
    # distinct calls here, so a neighbour of the same class as the confuser adds up
    out[rows, y] += own * np.float32(1.0 - lam)
    out[rows, c] += own * np.float32(lam)
    out[rows, blur.y_prev] += a2 * blur.w_prev
    out[rows, blur.y_next] += a2 * blur.w_next
    return out


def simulate_confuser(
    table: FrameTable, accuracy: float, seed: int, options: SimOptions
) -> tuple[np.ndarray, dict[str, Any]]:
    """The ``confuser`` model's softmax array and how it was made (module docstring)."""

    o = options
    s = sim_setup(table, accuracy, o)
    n, k = s.n, s.k
    m = min(o.confusers, k - 1)
    lam, beta, r = float(o.confuser_weight), float(o.prior_weight), float(o.ar_share)
    segs = _segments(table)

    # pass 1: the label-free draws (noise into `out`, one uniform per frame)
    rng = np.random.default_rng(seed)
    out = np.empty((n, k), dtype=np.float32)
    pick = np.empty(n, dtype=np.float64)
    for c in s.chunks:
        noise = ar1_noise(rng, c.offsets, k, s.rho)
        noise *= np.float32(math.sqrt(r))
        eps = rng.standard_normal((c.hi - c.lo, k), dtype=np.float32)
        eps *= np.float32(math.sqrt(1.0 - r))
        noise += eps
        out[c.lo : c.hi] = noise
        pick[c.lo : c.hi] = rng.random(c.hi - c.lo)
    # which of its class's confusers each segment leans towards (label-free index)
    slot = np.minimum((pick[segs.starts] * m).astype(np.intp), m - 1)[segs.of]
    blur = None
    if o.boundary_s > 0.0:
        from .sim_models import Segments

        b = Segments(table, o.boundary_s)
        blur = _Blur(b.w_prev, b.w_next, b.y_prev, b.y_next)

    video_counts = np.zeros((table.num_videos, k), dtype=np.float64)
    vid_of = np.repeat(np.arange(table.num_videos), table.lengths)
    np.add.at(video_counts, (vid_of, s.labels), 1.0)

    fold_list = folds(table)
    people = np.asarray(table.participant, dtype=object)
    params: list[_FoldParams] = []
    fold_info: list[dict[str, Any]] = []

    def prior_and_confusers(train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        counts = video_counts[train].sum(axis=0) + 1.0  # add-one: no class impossible
        log_prior = (beta * np.log(counts / counts.sum())).astype(np.float32)
        return log_prior, confusers(table, segs, train, m, s.sim, counts)

    for f in fold_list:
        log_prior, conf = prior_and_confusers(f.train)
        # the fit sample: each inner group of training people scored with the prior and
        # confusers of the other training people, as the test people will be
        step = max(1, int(table.lengths[f.train].sum()) // _FIT_FRAMES)
        parts = []
        for held, rest in _inner_groups(people, f.train):
            lp, cf = prior_and_confusers(rest) if rest.size else (log_prior, conf)
            idx = _frames_of(table, held)[::step]
            y = s.labels[idx]
            parts.append((idx, y, cf[y, slot[idx]], np.broadcast_to(lp, (idx.size, k))))
        idx = np.concatenate([p[0] for p in parts])
        sb = None if blur is None else blur.rows(idx)
        y = np.concatenate([p[1] for p in parts])
        c_idx = np.concatenate([p[2] for p in parts])
        lp_rows = np.concatenate([p[3] for p in parts])
        scale = _fit_scale(out[idx], y, c_idx, lam, lp_rows, sb, accuracy, table.card.name)
        logits = _logits_rows(out[idx], y, c_idx, scale, lam, lp_rows, sb)
        temperature = (
            _confidence_temperature(logits, accuracy / 100.0, softmax_rows)
            if o.temperature is None else float(o.temperature)
        )
        params.append(_FoldParams(log_prior, conf, scale, temperature))
        fold_info.append({
            "fold": f.name, "test_videos": int(f.test.size), "train_videos": int(f.train.size),
            "inner_groups": len(parts), "scale": round(scale, 6),
            "temperature": round(temperature, 6),
            "fit_accuracy": round(100.0 * count_hits(logits, y) / y.size, 4),
            "own_frames_in_fit": bool(np.isin(f.test, f.train).any()),
        })

    # last pass, fold by fold over its test videos: logits -> hits -> softmax in place
    hits = 0
    for f, p in zip(fold_list, params, strict=True):
        for v in f.test:
            lo, hi = int(table.offsets[v]), int(table.offsets[v + 1])
            y = s.labels[lo:hi]
            rows = out[lo:hi]
            vb = None if blur is None else blur.rows(slice(lo, hi))
            _logits_rows(
                rows, y, p.conf[y, slot[lo:hi]], p.scale, lam, p.log_prior, vb, out=rows
            )
            hits += count_hits(rows, y)
            if p.temperature != 1.0:
                rows /= np.float32(p.temperature)
            softmax_rows(rows, out=rows)

    names = table.card.classes
    first = params[0].conf if params else np.zeros((k, 0), np.intp)
    info = sim_info(
        "confuser",
        "systematic confusions with adjacent classes (fixed per class, chosen from "
        "training labels), ~1 s correlated noise, over-weighted training-frame prior; "
        "every video scored with the parameters of the split that tests it",
        accuracy, hits, seed, s, o,
        confusers=m,
        confuser_weight=lam,
        prior_weight=beta,
        ar_share=r,
        boundary_s=float(o.boundary_s),
        prior="class frequencies of the fold's training frames, add-one smoothed",
        temperature=None if o.temperature is None else float(o.temperature),
        temperature_fitted=o.temperature is None,
        folds=fold_info,
        confusers_of_first_fold={names[i]: [names[j] for j in first[i]] for i in range(k)},
    )
    return out, info


#: Inner groups of training people the scale is fitted on (module docstring).
_INNER_GROUPS = 4


def _inner_groups(people: np.ndarray, train: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """(held-out, rest) video indices: the fold's training participants dealt round-robin,
    in order of first appearance, into at most :data:`_INNER_GROUPS` groups. One training
    participant: one group, held out against nothing (``rest`` empty: the fold's own
    prior is used)."""
    who = people[train]
    names = list(dict.fromkeys(who.tolist()))
    g = min(_INNER_GROUPS, len(names))
    group_of = {p: i % g for i, p in enumerate(names)}
    gid = np.array([group_of[p] for p in who], dtype=np.int64)
    if g == 1:
        return [(train, train[:0])]
    return [(train[gid == i], train[gid != i]) for i in range(g)]


def _fit_scale(
    noise: np.ndarray, y: np.ndarray, c: np.ndarray, lam: float, log_prior: np.ndarray,
    blur: _Blur | None, accuracy: float, name: str,
) -> float:
    """The scale at which the sample's argmax accuracy reaches ``accuracy`` (bisection)."""

    def acc(a: float) -> float:
        return 100.0 * count_hits(_logits_rows(noise, y, c, a, lam, log_prior, blur), y) / y.size

    prior_only = acc(0.0)
    if prior_only >= accuracy:
        raise ValueError(
            f"accuracy {accuracy}% is at or below what the class prior alone gives on "
            f"{name!r} ({prior_only:.1f}%, mostly the most frequent class)"
        )
    lo, hi = 0.0, 1.0
    while acc(hi) < accuracy:
        lo, hi = hi, hi * 2.0
        if hi > 1e6:
            raise ValueError(f"accuracy {accuracy}% is out of the model's reach")
    for _ in range(30):  # to ~1e-9 of the bracket: far below the sample's own noise
        mid = (lo + hi) / 2.0
        if acc(mid) < accuracy:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2.0


def _confidence_temperature(logits: np.ndarray, accuracy: float, softmax: Any) -> float:
    """The temperature at which the mean top softmax probability equals ``accuracy``
    (bisection on log T; the mean top probability falls monotonically as T grows)."""
    lo, hi = math.log(1e-2), math.log(1e2)
    for _ in range(24):
        mid = (lo + hi) / 2.0
        top = float(softmax(logits / np.float32(math.exp(mid))).max(axis=1).mean())
        if top > accuracy:
            lo = mid
        else:
            hi = mid
    return math.exp((lo + hi) / 2.0)
