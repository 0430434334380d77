"""MS-TCN metrics: hand-computed cases, an oracle transcription of MS-TCN's eval.py on random
sequences, and the edge cases."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trainables.metrics import (
    OVERLAPS,
    edit_score,
    evaluate,
    f1_counts,
    f1_score,
    frame_accuracy,
    segment_background,
    segments,
)

# -- oracle: MS-TCN eval.py's algorithms, transcribed loop for loop ---------------------------


def ref_segments(x, bg):
    labels, starts, ends = [], [], []
    last = x[0]
    if x[0] not in bg:
        labels.append(x[0])
        starts.append(0)
    for i in range(len(x)):
        if x[i] != last:
            if x[i] not in bg:
                labels.append(x[i])
                starts.append(i)
            if last not in bg:
                ends.append(i)
            last = x[i]
    if last not in bg:
        ends.append(len(x))
    return labels, starts, ends


def ref_edit(p, y, bg):
    P, Y = ref_segments(p, bg)[0], ref_segments(y, bg)[0]
    D = np.zeros((len(P) + 1, len(Y) + 1))
    D[:, 0] = np.arange(len(P) + 1)
    D[0, :] = np.arange(len(Y) + 1)
    for j in range(1, len(Y) + 1):
        for i in range(1, len(P) + 1):
            if Y[j - 1] == P[i - 1]:
                D[i, j] = D[i - 1, j - 1]
            else:
                D[i, j] = min(D[i - 1, j] + 1, D[i, j - 1] + 1, D[i - 1, j - 1] + 1)
    return (1 - D[-1, -1] / max(len(P), len(Y))) * 100


def ref_f_score(p, y, overlap, bg):
    pl, ps, pe = ref_segments(p, bg)
    yl, ys, ye = ref_segments(y, bg)
    tp = fp = 0
    hits = np.zeros(len(yl))
    for j in range(len(pl)):
        inter = np.minimum(pe[j], ye) - np.maximum(ps[j], ys)
        union = np.maximum(pe[j], ye) - np.minimum(ps[j], ys)
        iou = (1.0 * inter / union) * [pl[j] == yl[x] for x in range(len(yl))]
        idx = np.array(iou).argmax()
        if iou[idx] >= overlap and not hits[idx]:
            tp += 1
            hits[idx] = 1
        else:
            fp += 1
    return tp, fp, len(yl) - int(hits.sum())


@st.composite
def runs(draw, n_classes=4, max_runs=12):
    """A label sequence built from runs (so segments are realistic, not per-frame noise)."""
    k = draw(st.integers(1, max_runs))
    labels = draw(st.lists(st.integers(0, n_classes - 1), min_size=k, max_size=k))
    lengths = draw(st.lists(st.integers(1, 6), min_size=k, max_size=k))
    return np.repeat(np.array(labels, dtype=np.int64), lengths)


@st.composite
def pairs(draw):
    gt = draw(runs())
    noise = draw(st.lists(st.integers(0, 3), min_size=gt.size, max_size=gt.size))
    flip = draw(st.lists(st.booleans(), min_size=gt.size, max_size=gt.size))
    pred = np.where(flip, noise, gt)
    return pred, gt


@settings(max_examples=150, deadline=None)
@given(pair=pairs(), bg=st.sampled_from([(), (0,), (0, 3)]))
def test_matches_mstcn_reference(pair, bg):
    pred, gt = pair
    p_ref, y_ref = ref_segments(pred.tolist(), bg), ref_segments(gt.tolist(), bg)
    ours = segments(pred, bg)
    assert [a.tolist() for a in ours] == [list(v) for v in p_ref]
    if p_ref[0] and y_ref[0]:  # MS-TCN is only defined when both sides have segments
        assert edit_score(pred, gt, bg) == pytest.approx(ref_edit(pred.tolist(), gt.tolist(), bg))
        for ov in OVERLAPS:
            assert f1_counts(pred, gt, ov, bg) == ref_f_score(pred.tolist(), gt.tolist(), ov, bg)


# -- hand-computed cases -------------------------------------------------------------------


def test_hand_example_basic():
    # gt   0 0 1 1 1 2 2 2 2 2   segments Y: 0[0,2) 1[2,5) 2[5,10)
    # pred 0 0 0 1 1 2 2 3 3 2   segments P: 0[0,3) 1[3,5) 2[5,7) 3[7,9) 2[9,10)
    # accuracy: frames 2, 7, 8 wrong -> 7/10 = 70
    # edit: [0,1,2,3,2] vs [0,1,2]: delete 3 and 2 -> distance 2, (1 - 2/5) = 60
    # IoU of each P with its best Y: P0-Y0 2/3, P1-Y1 2/3, P2-Y2 2/5, P3 none (0),
    #   P4-Y2 1/5 (but Y2 already taken by P2)
    # @10, @25: tp P0 P1 P2, fp P3 P4, fn 0 -> F1 = 2*3/(6+2+0) = 75
    # @50: tp P0 P1, fp P2 P3 P4, fn Y2 -> F1 = 4/(4+3+1) = 50
    gt = np.array([0, 0, 1, 1, 1, 2, 2, 2, 2, 2])
    pred = np.array([0, 0, 0, 1, 1, 2, 2, 3, 3, 2])
    assert frame_accuracy(pred, gt) == pytest.approx(70.0)
    assert edit_score(pred, gt) == pytest.approx(60.0)
    assert f1_counts(pred, gt, 0.10) == (3, 2, 0)
    assert f1_counts(pred, gt, 0.25) == (3, 2, 0)
    assert f1_counts(pred, gt, 0.50) == (2, 3, 1)
    assert evaluate([pred], [gt]) == pytest.approx(
        {"frame_acc": 70.0, "edit": 60.0, "f1@10": 75.0, "f1@25": 75.0, "f1@50": 50.0}
    )
    # excluding background 0: Y = 1[2,5) 2[5,10), P = 1[3,5) 2[5,7) 3[7,9) 2[9,10)
    # edit: [1,2,3,2] vs [1,2] -> 2/4 -> 50; accuracy unchanged (all frames count)
    # @10: tp P1 P2, fp P3 P4 -> 4/6 = 66.67; @50: tp P1 only, fp 3, fn 1 -> 2/6 = 33.33
    assert edit_score(pred, gt, background=(0,)) == pytest.approx(50.0)
    assert f1_counts(pred, gt, 0.10, background=(0,)) == (2, 2, 0)
    assert f1_counts(pred, gt, 0.50, background=(0,)) == (1, 3, 1)
    assert evaluate([pred], [gt], background=(0,)) == pytest.approx(
        {"frame_acc": 70.0, "edit": 50.0, "f1@10": 200 / 3, "f1@25": 200 / 3, "f1@50": 100 / 3}
    )


def test_hand_example_greedy_match_has_no_second_choice():
    # gt   1 1 1 1 1 1 2 2 1 1   Y: 1[0,6) 2[6,8) 1[8,10)
    # pred 1 2 1 1 1 1 1 1 1 1   P: 1[0,1) 2[1,2) 1[2,10)
    # P0-Y0 IoU 1/6; P1 vs Y1 is disjoint (IoU < 0), others mismatch -> best 0 -> fp;
    # P2: Y0 4/10 = 0.4 beats Y2 2/8 = 0.25, so P2 picks Y0 and never Y2.
    # @10: P0 takes Y0; P2's pick Y0 is taken -> fp (MS-TCN does not try Y2)
    #      tp 1, fp 2, fn 2 -> 2/6 = 33.33
    # @25: P0 (1/6) fp; P2 takes Y0 -> tp 1, fp 2, fn 2 -> 33.33
    # @50: nothing reaches 0.5 -> tp 0, fp 3, fn 3 -> 0
    # edit: [1,2,1] vs [1,2,1] -> 100; accuracy: frames 1, 6, 7 wrong -> 70
    gt = np.array([1, 1, 1, 1, 1, 1, 2, 2, 1, 1])
    pred = np.array([1, 2, 1, 1, 1, 1, 1, 1, 1, 1])
    assert f1_counts(pred, gt, 0.10) == (1, 2, 2)
    assert f1_counts(pred, gt, 0.25) == (1, 2, 2)
    assert f1_counts(pred, gt, 0.50) == (0, 3, 3)
    assert evaluate([pred], [gt]) == pytest.approx(
        {"frame_acc": 70.0, "edit": 100.0, "f1@10": 100 / 3, "f1@25": 100 / 3, "f1@50": 0.0}
    )


def test_hand_example_oversegmented_prediction():
    # gt   1 1 1 1 0 1 1 1 1 1   Y: 1[0,4) 0[4,5) 1[5,10)
    # pred all 1                 P: 1[0,10)
    # P0 vs Y0 4/10, vs Y2 5/10 -> picks Y2 (0.5 >= 0.5): tp 1, fp 0, fn 2 -> 2/4 = 50
    # edit: [1] vs [1,0,1] -> distance 2, 1 - 2/3 -> 33.33
    gt = np.array([1, 1, 1, 1, 0, 1, 1, 1, 1, 1])
    pred = np.ones(10, dtype=np.int64)
    assert f1_counts(pred, gt, 0.5) == (1, 0, 2)
    assert edit_score(pred, gt) == pytest.approx(100 / 3)
    assert frame_accuracy(pred, gt) == pytest.approx(90.0)


def test_evaluate_pools_frames_averages_edit_sums_counts():
    # video A: the basic example (70 % of 10 frames, edit 60, @50 counts 2/3/1)
    # video B: 30 frames, perfect, two segments (edit 100, @50 counts 2/0/0)
    # frame_acc pooled (7 + 30) / 40 = 92.5 (not the mean 85); edit mean (60 + 100)/2 = 80;
    # F1@50 from summed counts tp 4, fp 3, fn 1 -> 8/12 = 66.67 (not the mean 75)
    # F1@10: tp 5, fp 2, fn 0 -> 10/12 = 83.33
    a_gt = np.array([0, 0, 1, 1, 1, 2, 2, 2, 2, 2])
    a_pred = np.array([0, 0, 0, 1, 1, 2, 2, 3, 3, 2])
    b_gt = np.array([5] * 10 + [6] * 20)
    out = evaluate([a_pred, b_gt.copy()], [a_gt, b_gt])
    assert out == pytest.approx(
        {"frame_acc": 92.5, "edit": 80.0, "f1@10": 250 / 3, "f1@25": 250 / 3, "f1@50": 200 / 3}
    )


# -- edge cases ---------------------------------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(gt=runs(n_classes=6), bg=st.sampled_from([(), (0,)]))
def test_perfect_prediction_scores_100(gt, bg):
    out = evaluate([gt, gt[::-1]], [gt.copy(), gt[::-1].copy()], background=bg)
    assert out == {"frame_acc": 100.0, "edit": 100.0, "f1@10": 100.0, "f1@25": 100.0,
                   "f1@50": 100.0}


def test_single_segment():
    gt = np.full(50, 3)
    assert evaluate([gt], [gt.copy()])["f1@50"] == 100.0
    wrong = np.full(50, 4)
    assert f1_counts(wrong, gt, 0.1) == (0, 1, 1)
    assert evaluate([wrong], [gt]) == {
        "frame_acc": 0.0, "edit": 0.0, "f1@10": 0.0, "f1@25": 0.0, "f1@50": 0.0,
    }


def test_all_background_excluded():
    bg = np.zeros(20, dtype=np.int64)
    # nothing to find, nothing predicted: vacuous agreement scores 100 (MS-TCN: 0/0)
    assert edit_score(bg, bg, background=(0,)) == 100.0
    assert f1_counts(bg, bg, 0.5, background=(0,)) == (0, 0, 0)
    assert evaluate([bg], [bg.copy()], background=(0,))["f1@25"] == 100.0
    # a predicted action where the truth is all background: one false positive
    pred = bg.copy()
    pred[5:10] = 2
    assert f1_counts(pred, bg, 0.1, background=(0,)) == (0, 1, 0)
    assert edit_score(pred, bg, background=(0,)) == 0.0
    assert evaluate([pred], [bg], background=(0,)) == {
        "frame_acc": 75.0, "edit": 0.0, "f1@10": 0.0, "f1@25": 0.0, "f1@50": 0.0,
    }
    # and the reverse: a missed action is a false negative
    assert f1_counts(bg, pred, 0.1, background=(0,)) == (0, 0, 1)


def test_background_splits_runs_but_same_labels_stay_separate_segments():
    # 2 2 0 2 2 with background 0: two segments of 2, not one
    labs, starts, ends = segments(np.array([2, 2, 0, 2, 2]), background=(0,))
    assert labs.tolist() == [2, 2] and starts.tolist() == [0, 3] and ends.tolist() == [2, 5]


def test_empty_inputs():
    empty = np.array([], dtype=np.int64)
    with pytest.raises(ValueError, match="zero frames"):
        frame_accuracy(empty, empty)
    with pytest.raises(ValueError, match="no videos"):
        evaluate([], [])
    with pytest.raises(ValueError, match="no frames"):
        evaluate([empty], [empty])
    assert edit_score([], []) == 100.0 and f1_counts([], [], 0.5) == (0, 0, 0)
    assert [a.size for a in segments(empty)] == [0, 0, 0]
    # an empty video among others contributes nothing but its (vacuous) edit of 100
    gt = np.array([1, 1, 2])
    out = evaluate([empty, np.array([1, 2, 2])], [empty, gt])
    assert out["frame_acc"] == pytest.approx(200 / 3) and out["edit"] == 100.0


def test_input_errors():
    with pytest.raises(ValueError, match="3 frames but gt has 2"):
        frame_accuracy([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="video 1: pred has 1 frames"):
        evaluate([np.array([1]), np.array([1])], [np.array([1]), np.array([1, 2])])
    with pytest.raises(ValueError, match="2 predictions for 1"):
        evaluate([np.array([1]), np.array([1])], [np.array([1])])
    with pytest.raises(ValueError, match="integer"):
        edit_score(np.array([0.5]), np.array([1]))
    with pytest.raises(ValueError, match="1-D"):
        frame_accuracy(np.zeros((2, 2), int), np.zeros((2, 2), int))
    for ov in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="overlap"):
            f1_counts([1], [1], ov)


def test_one_background_rule_for_every_dataset():
    # every class forms segments, whatever a dataset calls its background: Breakfast's SIL,
    # 50 Salads fine's `background` (MS-TCN's name rule would drop it for Salads only),
    # MPII's ` Background activity`
    for classes in (
        ("SIL", "pour_milk", "take_cup"),
        ("background", "cut_tomato_core", "action_start"),
        (" Background activity", "peel", "background"),
    ):
        assert segment_background(classes) == ()
    # so a background segment is a segment like any other in edit and F1
    gt = np.array([0, 0, 1, 1, 0, 0])
    pred = np.array([0, 0, 1, 1, 1, 1])
    bg = segment_background(("background", "peel"))
    assert edit_score(pred, gt, bg) == pytest.approx(100 * (1 - 1 / 3))
    assert f1_counts(pred, gt, 0.5, bg) == (2, 0, 1)
    assert evaluate([pred], [gt], bg)["edit"] < evaluate([pred], [gt], (0,))["edit"]


def test_f1_score():
    assert f1_score(0, 0, 0) == 100.0 and f1_score(0, 3, 2) == 0.0
    assert f1_score(3, 2, 0) == pytest.approx(75.0)


def test_long_noisy_video_matches_reference():
    # a 12k-frame video with per-frame noise (thousands of predicted segments): the
    # vectorised path must agree with the loop-for-loop MS-TCN transcription
    rng = np.random.default_rng(0)
    gt = np.repeat(rng.integers(0, 10, size=60), rng.integers(100, 300, size=60))
    pred = np.where(rng.random(gt.size) < 0.05, rng.integers(0, 10, size=gt.size), gt)
    for ov in OVERLAPS:
        assert f1_counts(pred, gt, ov) == ref_f_score(pred.tolist(), gt.tolist(), ov, ())
    assert edit_score(pred, gt) == pytest.approx(ref_edit(pred.tolist(), gt.tolist(), ()))
