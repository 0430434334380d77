"""The calibration statistics (data_prep.calibration) on hand-made scores, and the point of
them: on the real Breakfast cam01, 50 Salads fine and MPII labels the default (confuser)
simulation is within the two-sided, paper-anchored bounds, segment v1 fails the
memorisation check and ar1 the gains."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from data_prep.calibration import (
    CalibrationReport,
    bounds_for,
    calibration_report,
    frame_accuracy,
    memorisation,
    memorisation_parts,
    recalibration,
    segment_consensus,
)
from data_prep.simulate import simulate
from data_prep.table import DatasetCard, FrameTable, Split, VideoLabels


def _table(labels_per_video, features=None, splits=()) -> FrameTable:
    made = [VideoLabels(f"v{i}", np.asarray(y), f"p{i}") for i, y in enumerate(labels_per_video)]
    card = DatasetCard("toy", 10.0, ("bg", "a", "b"), "bg", "t", "0", splits=tuple(splits))
    t = FrameTable.from_videos(card, made)
    return t if features is None else t.with_features(np.asarray(features, np.float32), {})


def _onehot(pred, k=3, p=0.8):
    f = np.full((len(pred), k), (1 - p) / (k - 1))
    f[np.arange(len(pred)), pred] = p
    return f


def test_frame_accuracy_and_consensus_by_hand():
    # video 0: segments [0 0 0][1 1]; video 1: [2 2 2 2] (a new video starts a new segment)
    labels = [[0, 0, 0, 1, 1], [2, 2, 2, 2]]
    pred = [0, 1, 0, 1, 0, 2, 1, 1, 2]
    t = _table(labels, _onehot(pred))
    assert frame_accuracy(t) == pytest.approx(100 * 5 / 9)
    # mean log-score per segment: seg 0 -> class 0 (2 of 3), seg 1 -> tie 1/0 -> first
    # maximum (0, wrong), seg 2 -> 2 vs 1 tie -> 1 (wrong)
    consensus, n = segment_consensus(t)
    assert n == 3 and consensus == pytest.approx(100 / 3)
    r = calibration_report(t, split=None)
    assert r.consensus_gain == pytest.approx(100 / 3 - 100 * 5 / 9)
    assert r.recalibration_gain is None and r.split is None


def test_consensus_uses_log_scores_not_votes():
    # two frames barely for class 1, one frame strongly for class 0: votes say 1, the mean
    # log-score says 0
    f = [[0.32, 0.36, 0.32], [0.32, 0.36, 0.32], [0.98, 0.01, 0.01]]
    t = _table([[0, 0, 0]], f)
    assert segment_consensus(t)[0] == 100.0
    assert frame_accuracy(t) == pytest.approx(100 / 3)


def test_recalibration_finds_a_missing_prior():
    # scores that ignore a 70 % majority class: a per-frame classifier on the log-scores
    # learns the prior and gains; scores that already carry it leave nothing to gain
    rng = np.random.default_rng(0)
    videos, noisy, fair = [], [], []
    for _ in range(8):
        y = rng.choice(3, size=300, p=[0.7, 0.15, 0.15])
        videos.append(y)
        ev = rng.normal(size=(300, 3)) + 0.8 * np.eye(3)[y]
        noisy.append(np.exp(ev) / np.exp(ev).sum(1, keepdims=True))
        post = ev + np.log([0.7, 0.15, 0.15])
        fair.append(np.exp(post) / np.exp(post).sum(1, keepdims=True))
    split = Split("split1", tuple(f"v{i}" for i in range(6)), ("v6", "v7"))
    flat = _table(videos, np.concatenate(noisy), [split])
    good = _table(videos, np.concatenate(fair), [split])
    r = recalibration(flat, 1)
    assert r["split"] == "split1" and r["test_frames"] == 600 and r["train_frames_used"] == 1800
    assert r["recalibration_gain"] > 10
    assert recalibration(good, 1)["recalibration_gain"] < 3
    assert recalibration(good, 1, max_train_frames=500)["train_frames_used"] <= 500


def test_memorisation_parts_add_up_to_the_own_gap():
    # the two parts are the check's own_gap split at "same frames, new noise": a classifier
    # that fitted its draw's noise scores its own frames above a fresh draw of them
    rng = np.random.default_rng(1)
    videos = [rng.choice(3, size=200, p=[0.5, 0.25, 0.25]) for _ in range(8)]
    y = np.concatenate(videos)

    def scores(seed: int) -> np.ndarray:
        ev = np.random.default_rng(seed).normal(size=(y.size, 3)) + 0.7 * np.eye(3)[y]
        return np.exp(ev) / np.exp(ev).sum(1, keepdims=True)

    split = Split("split1", tuple(f"v{i}" for i in range(6)), ("v6", "v7"))
    t = _table(videos, scores(0), [split])
    parts = memorisation_parts(t, 1, scores, c=1.0)
    check = memorisation(t, 1, scores, c=1.0, draws=1)
    assert parts["own_frames"] == pytest.approx(check["own_frames_accuracy"])
    assert parts["heldout"] == pytest.approx(check["one_draw_heldout"])
    assert parts["noise_part"] + parts["people_part"] == pytest.approx(check["own_gap"])
    assert parts["argmax_test"] == pytest.approx(
        100 * np.mean(scores(0)[1200:].argmax(1) == y[1200:]))  # the test videos' argmax
    # the argmax's own difference (fits nothing), by hand: all 1,200 training frames are fit
    argmax_fit = 100 * np.mean(scores(0)[:1200].argmax(1) == y[:1200])
    assert check["argmax_own_gap"] == pytest.approx(argmax_fit - parts["argmax_test"])
    assert parts["argmax_fit"] == pytest.approx(argmax_fit)


def test_bad_features_are_errors():
    t = _table([[0, 1, 2]])
    with pytest.raises(ValueError, match="no features"):
        frame_accuracy(t)
    wide = t.with_features(np.ones((3, 5), np.float32) / 5, {})
    with pytest.raises(ValueError, match="not class scores"):
        segment_consensus(wide)
    neg = t.with_features(-np.ones((3, 3), np.float32), {})
    with pytest.raises(ValueError, match="non-negative"):
        frame_accuracy(neg)


def test_problems_name_each_broken_bound():
    t = _table([[0, 0, 1, 1]], _onehot([0, 0, 1, 1]))
    r = calibration_report(t, split=None)
    assert r.problems(100.0) == []
    probs = r.problems(50.0)
    assert len(probs) == 1 and "frame accuracy" in probs[0]


# -- the real labels: the default model calibrated (two-sided), segment v1 and ar1 not ------


def test_consensus_takes_25_evenly_spaced_frames():
    from data_prep.calibration import consensus_frames

    frames, count = consensus_frames(np.array([0, 10, 110]), np.array([10, 110, 113]))
    assert count.tolist() == [10, 25, 3]
    assert frames[:10].tolist() == list(range(10))  # shorter than 25: every frame
    assert frames[10:35].tolist() == [10 + (2 * i + 1) * 100 // 50 for i in range(25)]
    assert frames[35:].tolist() == [110, 111, 112]
    # a segment whose sampled frames disagree with its unsampled ones: only the 25 count
    y = np.zeros(100, dtype=int)
    pred = np.ones(100, dtype=int)
    pred[(2 * np.arange(25) + 1) * 100 // 50] = 0
    t = _table([y], _onehot(pred))
    assert segment_consensus(t)[0] == 100.0 and frame_accuracy(t) == 25.0


def test_bounds_are_two_sided_and_per_dataset():
    assert bounds_for("breakfast").recalibration == (0.65, 2.65)
    assert bounds_for("breakfast").consensus == (-3.5, -0.5)
    assert bounds_for("mpii_cooking").recalibration == (-1.0, 3.0)
    r = CalibrationReport(1, 20.6, 1, 10.0, -10.6, recalibration_gain=-9.5, draws_gap=3.0,
                          own_gap=30.0, memorisation_draws=8)
    probs = r.problems(20.6, bounds_for("breakfast"))
    assert len(probs) == 4, probs  # too pessimistic is as wrong as too optimistic
    assert any("recalibration gain -9.50" in p for p in probs)
    assert not any("argmax alone" in p for p in probs)  # not measured: not claimed
    probs = replace(r, argmax_own_gap=3.03).problems(20.6, bounds_for("breakfast"))
    assert any("+30.00 points better" in p and "argmax alone, which fits nothing, is +3.03"
               in p for p in probs), probs


@pytest.fixture(scope="module")
def real_tables(real_data: Path) -> dict[str, tuple[FrameTable, float]]:
    from data_prep import breakfast, mpii, salads

    return {
        "breakfast": (breakfast.convert(real_data / "breakfast", cameras="cam01"), 20.6),
        "50salads": (salads.convert(real_data / "50salads", level="fine"), 37.5),
        "mpii": (mpii.convert(real_data / "mpii_cooking" / "detectionGroundtruth-1-0.csv"),
                 36.1),
    }


@pytest.mark.realdata
def test_default_model_within_bounds_on_breakfast_quick(real_tables):
    """The fast check (one C instead of the cross-validation, no memorisation draws); the
    full report on all three datasets is the slow test below."""
    table, target = real_tables["breakfast"]
    r = calibration_report(simulate(table, seed=0), 1, grid=(0.01,))
    assert r.train_frames_used == 50_000
    assert r.problems(target, bounds_for("breakfast")) == [], r.to_dict()


_OWN_GAP = (
    "open (issue 16): on split 1 own frames - held-out is 7.9 (50 Salads) / 5.4 (MPII) > 5 "
    "although fresh draws do not help held-out (draws_gap +0.9 / +0.2); on the other splits "
    "-0.0 to 6.2 / 1.5 to 10.5, decided by which people are held out; see docs/data.md"
)


@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.parametrize(
    "name",
    [
        "breakfast",
        pytest.param("50salads", marks=pytest.mark.xfail(strict=True, reason=_OWN_GAP)),
        pytest.param("mpii", marks=pytest.mark.xfail(strict=True, reason=_OWN_GAP)),
    ],
)
def test_default_model_within_all_bounds(real_tables, name):
    from data_prep.simulate import redraw

    table, target = real_tables[name]
    sim = simulate(table, seed=0)
    r = calibration_report(sim, 1, draw=redraw(sim))
    assert r.draws_gap is not None and r.own_gap is not None
    assert r.problems(target, bounds_for(name)) == [], r.to_dict()


@pytest.mark.slow
@pytest.mark.realdata
def test_segment_v1_fails_the_memorisation_check(real_tables):
    from data_prep.simulate import redraw

    table, target = real_tables["breakfast"]
    sim = simulate(table, seed=0, model="segment")
    # one fresh draw, not eight: the own-frames gap, the half of the check v1 fails by far
    # (+13 against a limit of 5), does not depend on the fresh draws at all
    r = calibration_report(sim, 1, draw=redraw(sim), draws=1, grid=(1.0,))
    assert abs(r.frame_accuracy - target) <= 0.5
    probs = r.problems(target, bounds_for("breakfast"))
    assert any("memorisation: the per-frame classifier" in p for p in probs), r.to_dict()
    assert r.own_gap >= 5.0, r.to_dict()


@pytest.mark.realdata
def test_ar1_outside_the_bounds(real_tables):
    table, target = real_tables["50salads"]
    ar1 = calibration_report(simulate(table, seed=0, model="ar1"), 1, grid=(1.0,),
                             max_train_frames=10_000)
    assert abs(ar1.frame_accuracy - target) <= 0.5  # same accuracy...
    # ...but a per-frame linear layer and a segment average both beat it by far
    assert ar1.recalibration_gain > 8 and ar1.consensus_gain > 15
    assert len(ar1.problems(target, bounds_for("50salads"))) == 2
