"""Transferability estimates: which source will help a target, before the fine-tune is paid.

Pure functions (numpy, scipy). No torch, no Ray, no MLflow: the runner computes an edge's
estimates with these and logs them as ``estimate.<name>`` (names: :data:`ESTIMATORS`, the
one registry of estimator names).

Three families of scores (details, costs and citations in each docstring and in
docs/transferability.md), and two neighbouring modules:

* **feature-based**, on the pre-trained source LSTM run over a budgeted sample of the target's
  training frames in the edge's arrangement (that run is
  :mod:`trainables.transfer_responses`, budgeted by :func:`frame_budget`): :func:`logme` on
  its hidden states, :func:`leep` on its output distribution, :func:`nce` on its argmax, all
  against the target labels (:func:`feature_scores` computes the three);
* **label structure**, no model at all: :func:`label_structure` compares the label dynamics
  of the two datasets under the arrangement (segment lengths, joint-space transitions for
  the shared kinds, a symbol-free entropy rate for ``concat``);
* **short probe**: :func:`probe_score` on two loss curves (the runner obtains them with
  :func:`trainables.transfer_responses.target_loss` after :func:`probe_iterations`);
* **validation** of the estimators against measured gains is
  :mod:`trainables.estimator_quality` (Spearman, Kendall tau-b, bootstrap CIs, top-1 hits).

Orientation: every registered estimator says whether a HIGHER value predicts a larger gain
(:attr:`Estimator.higher_is_better`); ``estimator_quality`` orients each one by it, so a
useful estimator always shows positive correlations.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .arrangements import ARRANGEMENTS, Arrangement

if TYPE_CHECKING:
    from .transfer_responses import SourceResponses

__all__ = [
    "ESTIMATORS",
    "Estimator",
    "feature_scores",
    "frame_budget",
    "label_structure",
    "leep",
    "logme",
    "nce",
    "probe_iterations",
    "probe_score",
]


# -- the registry --------------------------------------------------------------------------


@dataclass(frozen=True)
class Estimator:
    """One registered estimate: its name (``estimate.<name>`` in MLflow), its orientation
    and a one-line description."""

    name: str
    higher_is_better: bool
    what: str


ESTIMATORS: dict[str, Estimator] = {
    e.name: e
    for e in (
        Estimator("logme", True, "LogME evidence of the source LSTM's hidden states "
                                 "(You et al., ICML'21)"),
        Estimator("leep", True, "LEEP of the source LSTM's output distribution "
                                "(Nguyen et al., ICML'20)"),
        Estimator("nce", True, "negative conditional entropy of target labels given the "
                               "source LSTM's argmax (Tran et al., ICCV'19)"),
        Estimator("label_structure", True, "minus the label-dynamics distance of the two "
                                           "datasets under the arrangement"),
        Estimator("label_segment_length", False, "W1 distance of log segment lengths"),
        Estimator("label_transition", False, "JS divergence of joint-space segment bigrams"),
        Estimator("label_entropy", False, "gap of normalised segment entropy rates"),
        Estimator("probe", False, "target loss after a short fine-tune minus the "
                                  "baseline's at the same iteration"),
    )
}


# -- budgets -------------------------------------------------------------------------------


def frame_budget(iterations: int, batch_size: int, history: int, fraction: float = 0.05) -> int:
    """The most target frames a feature-based estimate may run the LSTM over.

    Rule: ``floor(fraction * iterations * batch_size * history)``: the frames a fine-tune
    of ``iterations`` steps processes, times ``fraction``. A fine-tune runs forward AND
    backward (about 3x a forward) plus an Adam step on each of its frames; the estimate runs
    a forward only, so its LSTM cost is at most about ``fraction / 3`` of the fine-tune's,
    leaving the rest of ``fraction`` for the scores, which cost O(N D (D + K)) for N frames,
    D hidden units and K classes — less than the LSTM's O(N 8 D (D + input)) forward. That
    is an operation count, not a measurement. Cap it further (``min(budget, cap)``) when the
    target's training set is smaller or memory is short.
    """
    for name, v in (("iterations", iterations), ("batch_size", batch_size),
                    ("history", history)):
        if v < 1:
            raise ValueError(f"{name} must be >= 1, got {v}")
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    return int(math.floor(fraction * iterations * batch_size * history))


def probe_iterations(iterations: int, fraction: float = 0.05) -> int:
    """Iterations of the short probe: ``max(1, floor(fraction * iterations))`` (5 % of the
    fine-tune by default, so the probe costs that fraction of it)."""
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    return max(1, int(math.floor(fraction * iterations)))


# -- feature-based scores ------------------------------------------------------------------


def _labels(labels: Any, n: int) -> np.ndarray:
    y = np.asarray(labels)
    if y.shape != (n,):
        raise ValueError(f"labels have shape {y.shape}, expected ({n},)")
    if y.dtype.kind not in "iu":
        raise TypeError(f"labels must be integers, got {y.dtype}")
    if n and y.min() < 0:
        raise ValueError("labels must be >= 0 (mask padded frames out first)")
    return y.astype(np.int64, copy=False)


def _class_evidence(
    x: np.ndarray, res_x2: float, sigma: np.ndarray, n: int, d: int, max_iter: int, tol: float
) -> tuple[float, float, float]:
    """Maximised log evidence / n of one indicator target (LogME's fixed point, see
    :func:`logme`), with its alpha and beta. ``x = U^T y``, ``sigma`` the D eigenvalues of
    ``F^T F`` (zeros included), ``res_x2 = |y|^2 - |x|^2``."""
    k = x.size
    sig_k = sigma[:k]
    x2 = x * x
    alpha, beta = 1.0, 1.0
    m2 = res2 = 0.0
    for _ in range(max_iter):
        t = alpha / beta
        gamma = float((sig_k / (sig_k + t)).sum())
        m2 = float((sig_k * x2 / (t + sig_k) ** 2).sum())
        res2 = float((x2 / (1.0 + sig_k / t) ** 2).sum()) + res_x2
        # the reference's 1e-5 guards: a perfectly fitted or all-zero target stays finite
        alpha = gamma / (m2 + 1e-5)
        beta = (n - gamma) / (res2 + 1e-5)
        if abs(alpha / beta - t) / t <= tol:
            break
    evidence = (
        d / 2.0 * math.log(alpha)
        + n / 2.0 * math.log(beta)
        - 0.5 * float(np.log(alpha + beta * sigma).sum())
        - beta / 2.0 * res2
        - alpha / 2.0 * m2
        - n / 2.0 * math.log(2 * math.pi)
    )
    return evidence / n, alpha, beta


def logme(features: Any, labels: Any, *, max_iter: int = 11, tol: float = 1e-3) -> float:
    """LogME (You, Liu, Wang, Long, "LogME: Practical Assessment of Pre-trained Models for
    Transfer Learning", ICML 2021; fixed-point form of You et al., "Ranking and Tuning
    Pre-trained Models", arXiv:2110.10545 / JMLR 2022, as in the reference code
    github.com/thuml/LogME).

    Rule: for each target class c present in ``labels``, fit a Bayesian linear regression
    ``y_c = F w + e`` of the class indicator on the features F (N x D) with prior
    ``w ~ N(0, alpha^-1 I)`` and noise ``e ~ N(0, beta^-1 I)``, and maximise the log
    evidence ``log p(y_c | F, alpha, beta)`` over alpha, beta by MacKay's fixed point
    (``gamma = sum sigma_i / (sigma_i + alpha/beta)``, ``alpha = gamma / |m|^2``,
    ``beta = (N - gamma) / |y - F m|^2``), from alpha = beta = 1, at most ``max_iter``
    rounds, stopping when alpha/beta moves by <= ``tol`` relatively. Everything is
    expressed in the SVD ``F = U S V^T`` (``sigma = s^2``), computed once. The score is the
    mean over classes of the maximised evidence divided by N (higher: the features explain
    the labels linearly with less complexity).

    Two deliberate differences from the reference code, both toward the paper's Algorithm
    1: the log-determinant sums over all D eigenvalues of ``F^T F`` (the reference drops the
    zero ones when F is rank-deficient, N < D or constant columns), and classes absent from
    ``labels`` are skipped (the reference fits an all-zero target for every index up to the
    largest label, whose "evidence" only grows with the 1e-5 guards).

    Cost: one SVD, O(N D min(N, D)), plus O(N k) per class for ``U^T y`` and O(k) per
    fixed-point round (k = min(N, D)); no gradient steps.
    """
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2:
        raise ValueError(f"features must be 2-D (frames, dims), got shape {f.shape}")
    n, d = f.shape
    if n < 2 or d < 1:
        raise ValueError(f"LogME needs >= 2 frames and >= 1 feature, got shape {f.shape}")
    if not np.isfinite(f).all():
        raise ValueError("features hold NaN or infinity")
    y = _labels(labels, n)
    u, s, _ = np.linalg.svd(f, full_matrices=False)
    sigma = np.zeros(d)
    sigma[: s.size] = s * s
    evidences = []
    for c in np.unique(y):
        yc = (y == c).astype(np.float64)
        x = u.T @ yc
        res_x2 = max(float(yc @ yc - x @ x), 0.0)  # the part of y outside F's column space
        evidences.append(_class_evidence(x, res_x2, sigma, n, d, max_iter, tol)[0])
    return float(np.mean(evidences))


def _probabilities(probs: Any) -> np.ndarray:
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] < 1 or p.shape[1] < 1:
        raise ValueError(f"probabilities must be 2-D (frames, source classes), got {p.shape}")
    if not np.isfinite(p).all() or p.min() < 0:
        raise ValueError("probabilities must be finite and non-negative")
    if not np.allclose(p.sum(1), 1.0, atol=1e-4):
        raise ValueError("each row of probabilities must sum to 1 (pass a softmax)")
    return p


def leep(probs: Any, labels: Any) -> float:
    """LEEP, the Log Expected Empirical Prediction (Nguyen, Hassner, Seeger, Archambeau,
    "LEEP: A New Measure to Evaluate Transferability of Learned Representations", ICML 2020).

    Rule: with ``theta_i`` (Z,) the source model's output distribution on frame i and
    ``y_i`` its target label, the empirical joint is ``P(y, z) = 1/n sum_{i: y_i = y}
    theta_i[z]``, ``P(z) = sum_y P(y, z)`` and ``P(y | z) = P(y, z) / P(z)``; then
    ``LEEP = 1/n sum_i log sum_z P(y_i | z) theta_i[z]`` — the average log-likelihood of
    the target labels under the "expected empirical predictor" that reads the source
    distribution through ``P(y | z)``. <= 0; higher is better. Source classes that no
    frame puts mass on (``P(z) = 0``) carry no evidence and contribute nothing.

    Cost: O(n Y Z) for n frames, Y target and Z source classes.
    """
    p = _probabilities(probs)
    n = p.shape[0]
    y = _labels(labels, n)
    _, yi = np.unique(y, return_inverse=True)
    joint = np.zeros((int(yi.max()) + 1, p.shape[1]))
    np.add.at(joint, yi, p)
    joint /= n
    pz = joint.sum(0)
    cond = np.divide(joint, pz, out=np.zeros_like(joint), where=pz > 0)
    eep = (p * cond[yi]).sum(1)
    return float(np.log(eep).mean())


def nce(source_labels: Any, labels: Any) -> float:
    """NCE, the Negative Conditional Entropy ``-H(Y | Z)`` (Tran, Nguyen, Hassner,
    "Transferability and Hardness of Supervised Classification Tasks", ICCV 2019).

    Rule: ``z_i`` is the source model's label for frame i (the argmax of its output, for
    frames of the target dataset), ``y_i`` the target label; with the empirical joint
    ``P(y, z)`` of the pairs, ``NCE = sum_{y,z} P(y, z) log P(y | z)``. <= 0; 0 when the
    source label determines the target label; higher is better.

    Cost: O(n) to count the pairs, O(Y Z) for the sum.
    """
    z = np.asarray(source_labels)
    if z.ndim != 1:
        raise ValueError(f"source labels must be 1-D, got shape {z.shape}")
    n = z.shape[0]
    if n < 1:
        raise ValueError("NCE needs at least one frame")
    z = _labels(z, n)
    y = _labels(labels, n)
    _, yi = np.unique(y, return_inverse=True)
    _, zi = np.unique(z, return_inverse=True)
    joint = np.zeros((int(yi.max()) + 1, int(zi.max()) + 1))
    np.add.at(joint, (yi, zi), 1.0)
    joint /= n
    pz = joint.sum(0, keepdims=True)
    nz = joint > 0
    return float((joint[nz] * np.log((joint / pz)[nz])).sum())


def feature_scores(responses: SourceResponses) -> dict[str, float]:
    """``{"logme", "leep", "nce"}`` of one edge's
    :class:`~trainables.transfer_responses.SourceResponses`: LogME on the hidden states,
    LEEP on the output distribution, NCE on its argmax, all against the target labels."""
    return {
        "logme": logme(responses.hidden, responses.labels),
        "leep": leep(responses.probs, responses.labels),
        "nce": nce(responses.probs.argmax(1), responses.labels),
    }


# -- label structure -----------------------------------------------------------------------


def _runs(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Segment classes and lengths (maximal runs of equal labels) of one video."""
    y = np.asarray(labels)
    if y.ndim != 1 or y.size == 0:
        raise ValueError(f"a video's labels must be a non-empty 1-D array, got shape {y.shape}")
    starts = np.flatnonzero(np.r_[True, y[1:] != y[:-1]])
    lengths = np.diff(np.r_[starts, y.size])
    return y[starts].astype(np.int64), lengths


def _bigrams(videos: Sequence[np.ndarray], mapping: np.ndarray, dim: int) -> np.ndarray:
    """Counts (dim, dim) of consecutive segment pairs (a -> b, a != b) in joint indices."""
    counts = np.zeros((dim, dim))
    for v in videos:
        cls, _ = _runs(v)
        joint = mapping[cls]
        if joint.size > 1:
            np.add.at(counts, (joint[:-1], joint[1:]), 1.0)
    return counts


def _js(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon divergence (nats, in [0, log 2]) of two count arrays, normalised."""
    p = p.ravel() / p.sum()
    q = q.ravel() / q.sum()
    m = 0.5 * (p + q)

    def kl(a: np.ndarray) -> float:
        nz = a > 0
        return float((a[nz] * np.log(a[nz] / m[nz])).sum())

    return 0.5 * kl(p) + 0.5 * kl(q)


def _entropy_rate(videos: Sequence[np.ndarray], num_classes: int) -> float:
    """``H(next segment class | current)`` from pooled segment bigrams, divided by
    ``log(K - 1)`` (the most it can be: the next class differs from the current one), so
    it lies in [0, 1] whatever the vocabulary size; 0 for K <= 2 (the next is forced)."""
    counts = _bigrams(videos, np.arange(num_classes), num_classes)
    total = counts.sum()
    if total == 0:
        raise ValueError("no segment transitions: every video is a single segment")
    if num_classes <= 2:
        return 0.0
    joint = counts / total
    rows = joint.sum(1, keepdims=True)
    nz = joint > 0
    h = -float((joint[nz] * np.log((joint / np.where(rows > 0, rows, 1.0))[nz])).sum())
    return h / math.log(num_classes - 1)


@dataclass(frozen=True)
class LabelStructure:
    """The label-dynamics comparison of a target and a source (see :func:`label_structure`).

    ``segment_length``: W1 distance of log segment lengths (log-frames); ``transition``:
    JS divergence (nats) of joint-space segment bigrams, mean over the source maps;
    ``entropy``: gap of normalised segment entropy rates (in [0, 1]); ``score``: minus the
    distance the arrangement's kind uses (higher: more alike).
    """

    kind: str
    segment_length: float
    transition: float
    entropy: float
    score: float

    def estimates(self) -> dict[str, float]:
        """The registered names (:data:`ESTIMATORS`) and values, as the runner logs them."""
        return {
            "label_structure": self.score,
            "label_segment_length": self.segment_length,
            "label_transition": self.transition,
            "label_entropy": self.entropy,
        }


def label_structure(
    target_videos: Sequence[Any], source_videos: Sequence[Any], arrangement: Arrangement
) -> LabelStructure:
    """How alike the two datasets' label dynamics are under the edge's arrangement — no
    model, no training. An LSTM over per-frame scores learns durations and the order of
    actions; this compares exactly those (a heuristic of this project, not a published
    estimator; its worth is what :func:`trainables.estimator_quality.estimator_quality`
    measures).

    ``target_videos`` / ``source_videos``: per-video label arrays (the training videos),
    each in its dataset's own indices. Three distances, all 0 for identical data:

    * ``segment_length``: 1-Wasserstein distance between the distributions of
      ``log(segment length in frames)`` pooled over videos (symbol-free; frames, not
      seconds, because frames are what the LSTM sees);
    * ``transition``: Jensen-Shannon divergence between the distributions of consecutive
      segment pairs (a -> b, a != b) in the JOINT space (target through ``target_map``,
      source through each of its maps, averaged over them): what ``merged``/``random``/
      ``multiple_random`` make the model learn as one grammar. Under ``concat`` the spaces
      are disjoint and it is always log 2 (reported, not used);
    * ``entropy``: ``|h_T - h_S|`` with h the entropy rate of the next segment's class given
      the current one, normalised by ``log(K - 1)`` of each dataset's own K: how
      predictable the next action is, whatever the symbols (for ``concat``).

    ``score = -(segment_length + transition)`` for the shared kinds and
    ``-(segment_length + entropy)`` for ``concat``: the sum of two dimensionless distances
    with unit weights (a choice stated here, not tuned). Higher is better.

    Cost: O(total frames) for the run-length encoding plus O(dim^2) for the bigram table.
    Raises ValueError without a source, or when a dataset has no segment transitions.
    """
    from scipy.stats import wasserstein_distance

    if arrangement.source is None:
        raise ValueError(f"arrangement {arrangement.kind!r} has no source to compare with")
    if not len(target_videos) or not len(source_videos):
        raise ValueError("label_structure needs at least one video on each side")
    t_videos = [np.asarray(v) for v in target_videos]
    s_videos = [np.asarray(v) for v in source_videos]
    for what, vids, size in (("target", t_videos, arrangement.target.size),
                             ("source", s_videos, arrangement.source.size)):
        for v in vids:
            if v.ndim == 1 and v.size and (v.min() < 0 or v.max() >= size):
                raise ValueError(f"a {what} label is outside 0..{size - 1}")
    t_len = np.log(np.concatenate([_runs(v)[1] for v in t_videos]))
    s_len = np.log(np.concatenate([_runs(v)[1] for v in s_videos]))
    seg = float(wasserstein_distance(t_len, s_len))

    tb = _bigrams(t_videos, np.asarray(arrangement.target_map), arrangement.dim)
    if tb.sum() == 0:
        raise ValueError("no segment transitions in the target: every video is one segment")
    divs = []
    for smap in arrangement.source_maps:
        sb = _bigrams(s_videos, np.asarray(smap), arrangement.dim)
        if sb.sum() == 0:
            raise ValueError("no segment transitions in the source: every video is one segment")
        divs.append(_js(tb, sb))
    trans = float(np.mean(divs))
    ent = abs(_entropy_rate(t_videos, arrangement.target.size)
              - _entropy_rate(s_videos, arrangement.source.size))
    shared = ARRANGEMENTS[arrangement.kind].shared
    score = -(seg + (trans if shared else ent))
    return LabelStructure(arrangement.kind, seg, trans, ent, score)


# -- short probe ---------------------------------------------------------------------------


def _loss_at(curve: Mapping[Any, float], at: int, what: str) -> float:
    values = {int(k): float(v) for k, v in curve.items()}
    if at not in values:
        have = ", ".join(str(k) for k in sorted(values)[:8]) or "none"
        raise ValueError(f"the {what} loss curve has no value at iteration {at} (has: {have})")
    v = values[at]
    if not math.isfinite(v):
        raise ValueError(f"the {what} loss at iteration {at} is not finite ({v})")
    return v


def probe_score(transfer: Mapping[Any, float], baseline: Mapping[Any, float], at: int) -> float:
    """The short probe: ``transfer[at] - baseline[at]``, the target loss after ``at``
    iterations of the edge's fine-tune minus the no-transfer baseline's after as many
    (negative: the transferred initialisation is ahead). An early-learning-curve proxy of
    this project (issue 12), not a published estimator.

    Curves are ``{iteration: loss}`` (int or str keys, as ``TrainRun.curve`` writes them);
    both must hold ``at`` exactly — nothing is interpolated. Lower is better
    (``ESTIMATORS["probe"].higher_is_better`` is False).

    How the runner obtains the curves: ``at = probe_iterations(iterations)`` (5 %); the
    edge's fine-tune stops at ``at`` (put ``at`` in its ``eval_at``, so a step ends exactly
    there) and the baseline of the same target and split stops there too (it runs anyway;
    the stop costs one evaluation). At that stop each scores
    :func:`trainables.transfer_responses.target_loss` on the same ``seed`` (the same target
    training frames) in its own arrangement — identity for the baseline — so both losses
    are over the target's classes on the same frames. Cost: the probe's ``at`` iterations
    (5 % of a fine-tune; nothing extra when the edge goes on to train in full) plus two
    forward passes of at most :func:`frame_budget` frames.
    """
    if at < 1:
        raise ValueError(f"at must be >= 1, got {at}")
    return _loss_at(transfer, at, "transfer") - _loss_at(baseline, at, "baseline")
