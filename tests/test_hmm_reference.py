"""The HMM / HSMM reference decoders against brute force on tiny hand-built cases, their
causality and normalisation, the statistics fitted from labels, and one run on real
Breakfast labels (skipped without ../shared/data)."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import numpy as np
import pytest

from data_prep.errors import DataError
from data_prep.table import DatasetCard, FrameTable, Split, VideoLabels
from trainables.hmm_reference import (
    DECODERS,
    emission_scores,
    fit_label_model,
    forward_filter,
    hmm_params,
    hsmm_filter,
    hsmm_params,
    hsmm_viterbi,
    reference,
    viterbi,
)


def _log_stochastic(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    p = rng.dirichlet(np.ones(shape[-1]), size=shape[:-1])
    return np.log(p)


def _hmm_case(seed: int, k: int = 3, t: int = 6):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(t, k)) * 2.0, _log_stochastic(rng, (k,)),
            _log_stochastic(rng, (k, k)))


def _path_score(path, e, li, lt) -> float:
    s = li[path[0]] + e[0, path[0]]
    for t in range(1, len(path)):
        s += lt[path[t - 1], path[t]] + e[t, path[t]]
    return float(s)


@pytest.mark.parametrize("seed", range(6))
def test_viterbi_equals_brute_force_over_all_paths(seed):
    e, li, lt = _hmm_case(seed)
    if seed == 0:
        lt[0, 2] = -np.inf  # a forbidden transition is never taken
    best = max(itertools.product(range(3), repeat=len(e)),
               key=lambda p: _path_score(p, e, li, lt))
    path, score = viterbi(e, li, lt)
    assert tuple(path) == best
    assert score == pytest.approx(_path_score(best, e, li, lt))


@pytest.mark.parametrize("seed", range(4))
def test_forward_filter_equals_brute_force_marginals(seed):
    e, li, lt = _hmm_case(seed, k=3, t=5)
    post = forward_filter(e, li, lt)
    for t in range(len(e)):
        w = np.zeros(3)
        for p in itertools.product(range(3), repeat=t + 1):
            w[p[-1]] += np.exp(_path_score(p, e[:t + 1], li, lt))
        np.testing.assert_allclose(np.exp(post[t]), w / w.sum(), rtol=1e-9)
    np.testing.assert_allclose(np.exp(post).sum(1), 1.0, rtol=1e-12)


def _compositions(n: int, dmax: int):
    if n == 0:
        yield ()
        return
    for d in range(1, min(dmax, n) + 1):
        for rest in _compositions(n - d, dmax):
            yield (d, *rest)


def _hsmm_case(seed: int, k: int = 3, t: int = 7, dmax: int = 4, reentry: bool = True):
    rng = np.random.default_rng(seed)
    e = rng.normal(size=(t, k)) * 2.0
    li = _log_stochastic(rng, (k,))
    ls = _log_stochastic(rng, (k, k))
    if not reentry:
        p = np.exp(ls)
        np.fill_diagonal(p, 0.0)
        with np.errstate(divide="ignore"):
            ls = np.log(p / p.sum(1, keepdims=True))
    ld = _log_stochastic(rng, (k, dmax))
    return e, li, ls, ld


def _segmentations(t: int, k: int, dmax: int):
    """Every (durations, classes) covering t frames with segments of 1..dmax frames."""
    for durs in _compositions(t, dmax):
        for cls in itertools.product(range(k), repeat=len(durs)):
            yield durs, cls


def _seg_score(durs, cls, e, li, ls, dur_term) -> float:
    s, t = li[cls[0]], 0
    for i, (d, c) in enumerate(zip(durs, cls, strict=True)):
        s += e[t:t + d, c].sum() + dur_term[c, d - 1]
        if i:
            s += ls[cls[i - 1], c]
        t += d
    return float(s)


@pytest.mark.parametrize(("seed", "reentry"), [(0, True), (1, True), (2, False), (3, False)])
def test_hsmm_viterbi_equals_brute_force_over_segmentations(seed, reentry):
    e, li, ls, ld = _hsmm_case(seed, reentry=reentry)
    best = max(_segmentations(len(e), 3, ld.shape[1]),
               key=lambda s: _seg_score(*s, e, li, ls, ld))
    path, score = hsmm_viterbi(e, li, ls, ld)
    assert score == pytest.approx(_seg_score(*best, e, li, ls, ld))
    assert tuple(path) == tuple(np.repeat(best[1], best[0]))


def test_hsmm_viterbi_with_a_cap_longer_than_the_video():
    e, li, ls, ld = _hsmm_case(5, t=4, dmax=6)
    best = max(_segmentations(4, 3, 6), key=lambda s: _seg_score(*s, e, li, ls, ld))
    assert hsmm_viterbi(e, li, ls, ld)[1] == pytest.approx(_seg_score(*best, e, li, ls, ld))


@pytest.mark.parametrize("seed", range(3))
def test_hsmm_filter_equals_brute_force_marginals(seed):
    """p(label_t | x_0..t): every segmentation of frames 0..t whose last segment has lasted
    d frames so far weighs S_c(d) = P(duration >= d) for that segment."""
    e, li, ls, ld = _hsmm_case(seed, t=6, dmax=3)
    p = np.exp(ld)
    surv = np.log(np.cumsum(p[:, ::-1], axis=1)[:, ::-1])
    post = hsmm_filter(e, li, ls, ld)
    for t in range(len(e)):
        w = np.zeros(3)
        for durs, cls in _segmentations(t + 1, 3, 3):
            full = _seg_score(durs[:-1], cls[:-1], e, li, ls, ld) if len(durs) > 1 else 0.0
            c, d = cls[-1], durs[-1]
            start = t + 1 - d
            last = e[start:t + 1, c].sum() + surv[c, d - 1]
            last += ls[cls[-2], c] if len(durs) > 1 else li[c]
            w[c] += np.exp(full + last)
        np.testing.assert_allclose(np.exp(post[t]), w / w.sum(), rtol=1e-9)


@pytest.mark.parametrize("decoder", ["hmm", "hsmm"])
def test_causal_filters_do_not_read_later_frames(decoder):
    rng = np.random.default_rng(3)
    k, t_len, cut = 4, 40, 23
    e = rng.normal(size=(t_len, k))
    li, lt = _log_stochastic(rng, (k,)), _log_stochastic(rng, (k, k))
    ld = _log_stochastic(rng, (k, 9))
    filt = (lambda x: forward_filter(x, li, lt)) if decoder == "hmm" else (
        lambda x: hsmm_filter(x, li, lt, ld))
    a = filt(e)
    changed = e.copy()
    changed[cut:] = rng.normal(size=(t_len - cut, k)) * 5.0
    b = filt(changed)
    np.testing.assert_array_equal(a[:cut], b[:cut])  # bit-identical up to the change
    assert not np.allclose(a[cut:], b[cut:])
    np.testing.assert_allclose(np.exp(a).sum(1), 1.0, rtol=1e-12)


def _labels_table() -> tuple[FrameTable, list[np.ndarray]]:
    """Two people: training videos follow 0 -> 1 -> 2 with durations ~10 / ~20 / ~5."""
    rng = np.random.default_rng(0)
    vids, train = [], []
    for n in range(8):
        y = np.repeat([0, 1, 2], [10 + n % 3, 20 - n % 2, 5])
        vids.append(VideoLabels(f"v{n}", y, "A" if n < 6 else "B",
                                features=rng.dirichlet(np.ones(3), size=y.size)))
        if n < 6:
            train.append(y)
    card = DatasetCard("toy", 15.0, ("a", "b", "c"), None, "test", "1",
                       splits=(Split("split1", tuple(f"v{n}" for n in range(6)),
                                     ("v6", "v7")),))
    return FrameTable.from_videos(card, vids), train


def test_label_statistics_from_training_labels():
    _, train = _labels_table()
    m = fit_label_model(train, 3, quantile=1.0)
    b = np.exp(m.log_bigram)
    assert np.diag(b).sum() == 0 and np.allclose(b.sum(1), 1.0)
    assert b[0, 1] > 0.9 and b[1, 2] > 0.9  # 0 -> 1 and 1 -> 2 every time, alpha smoothing
    assert np.argmax(m.log_init) == 0
    np.testing.assert_allclose(m.mean_duration, [11.0, 19.5, 5.0])
    assert m.max_duration == 20 and m.segments == 18
    assert np.allclose(np.exp(m.log_duration).sum(1), 1.0)
    assert np.argmax(m.log_duration[1]) + 1 in (19, 20)
    li, lt = hmm_params(m)
    assert np.allclose(np.exp(lt).sum(1), 1.0)
    assert np.exp(lt[1, 1]) == pytest.approx(1 - 1 / 19.5)
    li, ls, ld = hsmm_params(m)
    assert np.allclose(np.exp(ls).sum(1), 1.0)
    with pytest.raises(ValueError, match="0..2"):
        fit_label_model([np.array([0, 3])], 3)


def test_emissions_are_scaled_log_likelihoods():
    prior = np.log(np.array([0.5, 0.25, 0.25]))
    e = emission_scores(np.array([[0.5, 0.25, 0.25], [1.0, 0.0, 0.0]]), prior)
    np.testing.assert_allclose(e[0], 0.0, atol=1e-12)  # posterior == prior: no evidence
    assert np.isfinite(e).all() and e[1, 0] > e[1, 1]
    np.testing.assert_allclose(emission_scores([[0.2, 0.3, 0.5]], prior, 0.0),
                               np.log([[0.2, 0.3, 0.5]]))
    with pytest.raises(ValueError, match="class probabilities"):
        emission_scores([[0.5, -0.1, 0.6]], prior)


def test_reference_on_a_toy_table_and_its_bad_input():
    table, _ = _labels_table()
    r = reference(table, 1)
    assert list(r["metrics"]) == list(DECODERS)
    assert r["test_videos"] == 2 and r["test_frames"] == 2 * 35
    assert r["prior_weight"] in r["prior_weight_train_acc"]
    # label statistics alone decode the fixed recipe far better than random scores
    assert r["metrics"]["hsmm_offline"]["frame_acc"] > r["metrics"]["input"]["frame_acc"]
    assert reference(table, "split1", prior_weight=1.0)["prior_weight_train_acc"] == {}
    with pytest.raises(DataError, match="no split 'split2'"):
        reference(table, 2)
    bare = FrameTable.from_videos(table.card, [
        VideoLabels(v, table.video_labels(i), table.participant[i])
        for i, v in enumerate(table.videos)])
    with pytest.raises(DataError, match="needs class scores"):
        reference(bare, 1)


def test_hsmm_offline_on_real_breakfast_split1_in_reasonable_time(real_data: Path):
    """Breakfast cam01 with the default simulation: the offline HSMM (cap 0.99 quantile,
    2,700 frames) decodes ten test videos in well under a minute. Not a benchmark: the
    bound only catches an accidental O(T^2 D) decoder."""
    from data_prep.breakfast import convert
    from data_prep.simulate import simulate

    table = simulate(convert(real_data / "breakfast", cameras="cam01"), seed=0)
    train, test = table.split_indices(1)
    m = fit_label_model([table.video_labels(i) for i in train], table.card.num_classes)
    li, ls, ld = hsmm_params(m)
    assert 1000 < m.max_duration < 5000
    frames = 0
    start = time.perf_counter()
    for i in test[:10]:
        x = table.features[table.offsets[i]:table.offsets[i + 1]]
        path, score = hsmm_viterbi(emission_scores(x, m.log_prior), li, ls, ld)
        assert path.shape == (len(x),) and np.isfinite(score)
        frames += len(x)
    assert time.perf_counter() - start < 120, f"{frames} frames"
