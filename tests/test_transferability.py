"""Transferability estimates on constructed cases whose answer is known, and the validation
statistics on rankings whose correlation is known. No Ray, no MLflow."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import kendalltau, multivariate_normal, spearmanr

from data_prep.table import DatasetCard, FrameTable, Split, VideoLabels
from trainables.arrangements import LabelSpace, make_arrangement
from trainables.estimator_quality import _kendall_rows, estimator_quality, top1_by_target
from trainables.split_data import SplitData
from trainables.train_job import TrainConfig, Trainer
from trainables.transfer_responses import model_from_checkpoint, source_responses, target_loss
from trainables.transferability import (
    ESTIMATORS,
    _class_evidence,
    feature_scores,
    frame_budget,
    label_structure,
    leep,
    logme,
    nce,
    probe_iterations,
    probe_score,
)


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


# -- LEEP and NCE ----------------------------------------------------------------------------


def test_leep_equals_the_hand_computed_value():
    # theta_1 = (0.8, 0.2) with y = 0, theta_2 = (0.4, 0.6) with y = 1 (n = 2):
    # P(y, z) = [[0.4, 0.1], [0.2, 0.3]], P(z) = (0.6, 0.4),
    # P(y | z) = [[2/3, 1/4], [1/3, 3/4]];
    # frame 1: 0.8 * 2/3 + 0.2 * 1/4 = 7/12, frame 2: 0.4 * 1/3 + 0.6 * 3/4 = 7/12
    assert leep([[0.8, 0.2], [0.4, 0.6]], [0, 1]) == pytest.approx(math.log(7 / 12))


def test_leep_is_zero_when_the_source_distribution_names_the_target_label():
    y = np.array([0, 1, 2, 1, 0])
    assert leep(np.eye(3)[y], y) == pytest.approx(0.0, abs=1e-12)


def test_nce_equals_the_hand_computed_value():
    # pairs (z, y): (0,0) (0,0) (0,1) (1,1): P(y|z=0) = (2/3, 1/3), P(y|z=1) = (0, 1)
    # NCE = 2/4 log 2/3 + 1/4 log 1/3 + 1/4 log 1
    expected = 0.5 * math.log(2 / 3) + 0.25 * math.log(1 / 3)
    assert nce([0, 0, 0, 1], [0, 0, 1, 1]) == pytest.approx(expected)
    # a source label that determines the target label: H(Y|Z) = 0
    assert nce([3, 3, 5, 7], [1, 1, 0, 0]) == pytest.approx(0.0)


def test_leep_rejects_rows_that_are_not_distributions():
    with pytest.raises(ValueError, match="sum to 1"):
        leep([[0.5, 0.2]], [0])


# -- LogME -----------------------------------------------------------------------------------


def test_logme_class_evidence_is_the_gaussian_marginal_likelihood():
    # at the alpha, beta it returns, the closed form must equal log N(y; 0, I/beta + F F^T/alpha)
    rng = np.random.default_rng(0)
    n, d = 40, 5
    f = rng.normal(size=(n, d))
    # a class related to the features, so the evidence has an interior maximum
    y = (f[:, 0] + 0.5 * rng.normal(size=n) > 0).astype(np.float64)
    u, s, _ = np.linalg.svd(f, full_matrices=False)
    x = u.T @ y
    ev, alpha, beta = _class_evidence(x, float(y @ y - x @ x), s**2, n, d, 50, 1e-10)
    cov = np.eye(n) / beta + f @ f.T / alpha
    assert ev == pytest.approx(multivariate_normal(np.zeros(n), cov).logpdf(y) / n, rel=1e-6)
    # and the fixed point is (close to) the maximum over alpha, beta
    def direct(a: float, b: float) -> float:
        c = np.eye(n) / b + f @ f.T / a
        return multivariate_normal(np.zeros(n), c).logpdf(y) / n

    for fa, fb in ((1.5, 1), (1 / 1.5, 1), (1, 1.5), (1, 1 / 1.5), (1.1, 1.1), (0.9, 0.9)):
        assert direct(alpha * fa, beta * fb) <= ev + 1e-9


def test_logme_prefers_linearly_separable_features_to_random_ones():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, 800)
    separable = np.c_[3 * np.eye(4)[y] + 0.3 * rng.normal(size=(800, 4)),
                      rng.normal(size=(800, 12))]
    random = rng.normal(size=(800, 16))
    assert logme(separable, y) > logme(random, y) + 0.5


def test_logme_counts_every_eigenvalue_when_features_are_rank_deficient():
    # constant features (rank 1 of D = 8) must still give a finite evidence, lower than
    # informative ones
    y = np.repeat([0, 1], 50)
    const = np.ones((100, 8))
    informative = np.c_[np.eye(2)[y], np.zeros((100, 6))]
    assert math.isfinite(logme(const, y))
    assert logme(informative, y) > logme(const, y)


# -- label structure -------------------------------------------------------------------------


def recipe_videos(rng: np.random.Generator, n: int, classes: int, lo: int = 10, hi: int = 40,
                  order: np.ndarray | None = None) -> list[np.ndarray]:
    """Videos performing ``order`` (default 0..C-1) with random segment lengths in [lo, hi)."""
    order = np.arange(classes) if order is None else order
    return [np.repeat(order, rng.integers(lo, hi, len(order))) for _ in range(n)]


def space(name: str, classes: int) -> LabelSpace:
    return LabelSpace(name, tuple(f"{name}{i}" for i in range(classes)), 0)


@pytest.mark.parametrize("kind", ["merged", "random", "multiple_random", "concat"])
def test_label_structure_ranks_identical_best_and_shuffled_worst(kind):
    rng = np.random.default_rng(2)
    target = recipe_videos(rng, 12, 6)
    identical = [v.copy() for v in target]
    similar = recipe_videos(rng, 12, 6, lo=12, hi=45)  # same grammar, other durations
    shuffled = [rng.permutation(v) for v in target]  # the same labels, frame order lost
    tspace, sspace = space("t", 6), space("s", 6)
    arr = make_arrangement(kind, tspace, sspace, seed=3)
    scores = {name: label_structure(target, src, arr)
              for name, src in (("identical", identical), ("similar", similar),
                                ("shuffled", shuffled))}
    if kind in ("merged", "concat"):  # the identity correspondence: identical is distance 0
        assert scores["identical"].score == pytest.approx(0.0, abs=1e-12)
    assert scores["identical"].score >= scores["similar"].score > scores["shuffled"].score
    est = scores["shuffled"].estimates()
    assert set(est) <= set(ESTIMATORS)
    assert est["label_structure"] == scores["shuffled"].score


def test_label_structure_under_concat_uses_the_symbol_free_entropy():
    rng = np.random.default_rng(4)
    target = recipe_videos(rng, 8, 5)
    arr = make_arrangement("concat", space("t", 5), space("s", 5))
    r = label_structure(target, [v.copy() for v in target], arr)
    # disjoint blocks: the joint-space divergence is log 2 whatever the data, so it is not used
    assert r.transition == pytest.approx(math.log(2))
    assert r.entropy == pytest.approx(0.0) and r.score == pytest.approx(-r.segment_length)


def test_label_structure_rejects_labels_outside_the_space():
    arr = make_arrangement("merged", space("t", 3), space("s", 3))
    with pytest.raises(ValueError, match="source label is outside 0..2"):
        label_structure([np.array([0, 1, 2])], [np.array([0, 5])], arr)


# -- the source LSTM on target frames --------------------------------------------------------


def recipe_table(name: str, labels_of: list[np.ndarray], seed: int, classes: int = 5,
                 accuracy: float = 0.5) -> FrameTable:
    """Noisy softmax features whose argmax is right with probability ``accuracy``."""
    rng = np.random.default_rng(seed)
    made = []
    for i, labels in enumerate(labels_of):
        guess = np.where(rng.random(len(labels)) < accuracy, labels,
                         rng.integers(0, classes, len(labels)))
        logits = 2.0 * np.eye(classes)[guess] + rng.normal(scale=0.5, size=(len(labels), classes))
        feats = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        made.append(VideoLabels(f"v{i:02d}", labels, f"P{i:02d}",
                                features=feats.astype(np.float32)))
    ids = [v.video for v in made]
    card = DatasetCard(name, 15.0, tuple(f"c{c}" for c in range(classes)), "c0", "toy", "1",
                       splits=(Split("split1", tuple(ids[2:]), tuple(ids[:2])),))
    return FrameTable.from_videos(card, made)


@pytest.fixture(scope="module")
def trained():
    """A target, and two source LSTMs pre-trained in their own space: one on the target's
    own data (the identical source) and one on the same frames with the labels shuffled."""
    torch.set_num_threads(1)
    rng = np.random.default_rng(5)
    labels = recipe_videos(rng, 10, 5, lo=8, hi=25)
    target = SplitData.load(recipe_table("tgt", labels, seed=6), 1)
    perm = rng.permutation(np.concatenate(labels))
    shuffled = SplitData.load(recipe_table("tgt", labels, seed=6), 1)
    shuffled.labels = torch.as_tensor(perm)  # same features, labels shuffled over frames
    shuffled.table.labels = perm.astype(np.int16)
    cfg = TrainConfig(history=20, hidden=16, batch_size=16, lr=0.01)
    ckpts = {}
    for name, data in (("identical", target), ("shuffled", shuffled)):
        trainer = Trainer(cfg, make_arrangement("identity", data.space), data)
        trainer.train(100)
        ckpts[name] = trainer.checkpoint()
    return target, ckpts


def responses(target, ckpt, *, max_frames=2000, seed=0):
    arr = make_arrangement("merged", target.space, target.space)
    model, model_space = model_from_checkpoint(ckpt, arr)
    assert model_space == "source"
    return source_responses(model, target.features, target.labels, target.table.offsets,
                            target.train, arr, max_frames=max_frames, history=20,
                            model_space=model_space, seed=seed)


def test_feature_scores_rank_the_identical_source_above_the_shuffled_one(trained):
    target, ckpts = trained
    scores = {name: feature_scores(responses(target, c)) for name, c in ckpts.items()}
    for est in ("logme", "leep", "nce"):
        assert scores["identical"][est] > scores["shuffled"][est], est


def test_source_responses_keep_to_the_frame_budget_and_the_same_frames(trained):
    target, ckpts = trained
    a = responses(target, ckpts["identical"], max_frames=1010)
    b = responses(target, ckpts["shuffled"], max_frames=1010)
    assert a.windows == 1010 // 20 and a.frames_run == a.windows * 20 <= 1010
    assert len(a.labels) == a.hidden.shape[0] == a.probs.shape[0] <= a.frames_run
    assert a.hidden.shape[1] == 16 and a.probs.shape[1] == 5
    np.testing.assert_allclose(a.probs.sum(1), 1.0, atol=1e-9)
    # the frames drawn depend on the seed, never on the model
    np.testing.assert_array_equal(a.labels, b.labels)
    c = responses(target, ckpts["identical"], max_frames=1010, seed=1)
    assert not np.array_equal(a.labels, c.labels)


def test_source_responses_refuse_a_model_of_another_input_space(trained):
    target, ckpts = trained
    bigger = LabelSpace("big", tuple(f"b{i}" for i in range(7)), 0)
    arr = make_arrangement("merged", target.space, bigger)
    with pytest.raises(ValueError, match="not the edge's source space"):
        model_from_checkpoint(ckpts["identical"], arr)
    model, _ = model_from_checkpoint(ckpts["identical"],
                                     make_arrangement("merged", target.space, target.space))
    with pytest.raises(ValueError, match="the model takes 5 inputs"):
        source_responses(model, target.features, target.labels, target.table.offsets,
                         target.train, arr, max_frames=100, history=20, model_space="joint")


def test_target_loss_is_lower_for_the_model_trained_on_the_target(trained):
    target, ckpts = trained
    arr = make_arrangement("identity", target.space)
    losses = {}
    for name, c in ckpts.items():
        model, _ = model_from_checkpoint(c, make_arrangement("merged", target.space, target.space))
        losses[name] = target_loss(model, target.features, target.labels, target.table.offsets,
                                   target.train, arr, max_frames=1000, history=20)
    assert losses["identical"] < losses["shuffled"]
    assert losses["shuffled"] == pytest.approx(
        target_loss(model, target.features, target.labels, target.table.offsets, target.train,
                    arr, max_frames=1000, history=20))  # same seed, same frames, same value


# -- budgets and the probe -------------------------------------------------------------------


def test_budgets():
    assert frame_budget(4096, 128, 300) == int(0.05 * 4096 * 128 * 300)
    assert frame_budget(10, 2, 3, fraction=0.5) == 30
    assert probe_iterations(4096) == 204 and probe_iterations(10) == 1
    with pytest.raises(ValueError, match="fraction"):
        frame_budget(10, 2, 3, fraction=0)


def test_probe_score_is_transfer_minus_baseline_at_the_probe_iteration():
    transfer = {"100": 1.25, "200": 0.75}  # str keys, as TrainRun.curve writes them
    baseline = {100: 1.5, 200: 1.0, 300: 0.5}
    assert probe_score(transfer, baseline, 200) == pytest.approx(-0.25)
    with pytest.raises(ValueError, match="transfer loss curve has no value at iteration 300"):
        probe_score(transfer, baseline, 300)
    with pytest.raises(ValueError, match="not finite"):
        probe_score({100: float("nan")}, baseline, 100)


# -- validation statistics -------------------------------------------------------------------


def test_quality_of_a_monotone_and_a_reversed_estimate():
    rng = np.random.default_rng(7)
    gains = rng.normal(size=15)
    est = pd.DataFrame({"up": np.exp(gains), "down": -gains, "noise": rng.normal(size=15)})
    q = estimator_quality(est, gains, n_boot=200, seed=0).set_index("estimator")
    assert q.loc["up", ["spearman", "kendall"]].tolist() == [pytest.approx(1.0)] * 2
    assert q.loc["down", ["spearman", "kendall"]].tolist() == [pytest.approx(-1.0)] * 2
    for name in q.index:
        for stat in ("spearman", "kendall"):
            assert q.loc[name, f"{stat}_lo"] <= q.loc[name, stat] <= q.loc[name, f"{stat}_hi"]
    assert q.loc["up", "kendall_lo"] == pytest.approx(1.0)  # every resample is monotone too
    assert q.loc["noise", "kendall_lo"] < q.loc["noise", "kendall_hi"]
    assert (q["n_edges"] == 15).all() and (q["n_boot_valid"] == 200).all()
    # seeded: the same call gives the same frame
    pd.testing.assert_frame_equal(
        estimator_quality(est, gains, n_boot=200, seed=0).set_index("estimator"), q)


def test_quality_orients_registered_lower_is_better_estimators():
    gains = np.arange(10.0)
    q = estimator_quality({"probe": -gains, "label_transition": -gains}, gains, n_boot=50)
    assert not ESTIMATORS["probe"].higher_is_better
    assert q["kendall"].tolist() == [pytest.approx(1.0)] * 2
    assert q["higher_is_better"].tolist() == [False, False]
    q = estimator_quality({"mine": -gains}, gains, n_boot=50, higher_is_better={"mine": False})
    assert q["spearman"].iloc[0] == pytest.approx(1.0)


def test_quality_statistics_agree_with_scipy_with_ties():
    rng = np.random.default_rng(8)
    x = rng.integers(0, 4, (5, 25)).astype(float)
    y = rng.integers(0, 4, (5, 25)).astype(float)
    expected = [kendalltau(a, b)[0] for a, b in zip(x, y, strict=True)]
    np.testing.assert_allclose(_kendall_rows(x, y), expected)
    q = estimator_quality({"e": x[0]}, y[0], n_boot=20)
    assert q["spearman"].iloc[0] == pytest.approx(spearmanr(x[0], y[0])[0])
    assert q["kendall"].iloc[0] == pytest.approx(kendalltau(x[0], y[0])[0])


def test_quality_leaves_out_missing_edges_and_says_so():
    gains = np.array([1.0, 2.0, 3.0, 4.0, np.nan])
    q = estimator_quality({"e": [1.0, np.nan, 3.0, 4.0, 5.0]}, gains, n_boot=20)
    assert q[["n_edges", "n_missing"]].iloc[0].tolist() == [3, 2]
    q = estimator_quality({"e": [1.0, 2.0]}, [1.0, 2.0], n_boot=20)
    assert math.isnan(q["kendall"].iloc[0])  # fewer than 3 edges: no rank correlation


def test_top1_hits_per_target():
    edges = pd.DataFrame(
        {"good": [3.0, 1.0, 2.0, 0.0, 5.0], "tied": [1.0, 1.0, 0.0, 2.0, 2.0]},
        index=["A>T", "B>T", "C>T", "A>U", "B>U"],
    )
    gains = [0.9, 0.1, 0.5, 0.2, 0.7]
    targets = ["T", "T", "T", "U", "U"]
    hits = top1_by_target(edges, gains, targets).set_index(["estimator", "target"])
    assert hits.loc[("good", "T"), "hit"] == 1.0 and hits.loc[("good", "U"), "hit"] == 1.0
    assert hits.loc[("tied", "T"), "best_estimated"] == "A>T, B>T"
    assert hits.loc[("tied", "T"), "hit"] == 0.5  # one of two tied picks is the best source
    assert hits.loc[("tied", "U"), "hit"] == 0.5
    q = estimator_quality(edges, gains, targets, n_boot=20).set_index("estimator")
    assert q.loc["good", "top1_hit_pct"] == 100.0 and q.loc["tied", "top1_hit_pct"] == 50.0
    assert (q["top1_targets"] == 2).all()


def test_quality_rejects_misaligned_inputs():
    with pytest.raises(ValueError, match="one per edge"):
        estimator_quality({"e": [1.0, 2.0, 3.0]}, [1.0, 2.0])
    est = pd.DataFrame({"e": [1.0, 2.0, 3.0]}, index=["a", "b", "c"])
    with pytest.raises(ValueError, match="different indexes"):
        estimator_quality(est, pd.Series([1.0, 2.0, 3.0], index=["a", "c", "b"]))


def test_the_bootstrap_interval_reported_as_95_percent_is_a_95_percent_interval():
    """The default ``confidence`` is 0.95 and ``*_lo``/``*_hi`` are the 2.5th and 97.5th
    percentiles of the bootstrap distribution (recomputed here from the same resamples with
    scipy), so 95 % of the resampled correlations lie inside; a 90 % interval (5th/95th)
    reported as 95 % fails both checks."""
    from inspect import signature

    assert signature(estimator_quality).parameters["confidence"].default == 0.95
    rng = np.random.default_rng(11)
    n, n_boot = 30, 4000
    gains = rng.normal(size=n)
    est = gains + rng.normal(size=n) * 1.5
    q = estimator_quality({"e": est}, gains, n_boot=n_boot, seed=5).iloc[0]
    idx = np.random.default_rng(5).integers(0, n, size=(n_boot, n))
    boots = np.array([spearmanr(est[i], gains[i])[0] for i in idx])
    boots = boots[np.isfinite(boots)]
    lo, hi = np.percentile(boots, [2.5, 97.5])
    assert q["spearman_lo"] == pytest.approx(lo) and q["spearman_hi"] == pytest.approx(hi)
    inside = np.mean((boots >= q["spearman_lo"]) & (boots <= q["spearman_hi"]))
    assert 0.945 <= inside <= 0.955
    q90 = estimator_quality({"e": est}, gains, n_boot=n_boot, seed=5, confidence=0.9).iloc[0]
    assert q90["spearman_hi"] - q90["spearman_lo"] < q["spearman_hi"] - q["spearman_lo"]


def test_top1_does_not_score_a_target_with_a_single_source():
    """A target with one source has nothing to choose: its ``hit`` is NaN and it counts in
    neither ``top1_hit_pct`` nor ``top1_targets`` (scored, it would be a free hit)."""
    edges = pd.DataFrame({"e": [3.0, 1.0, 2.0, 9.0]}, index=["A>T", "B>T", "C>T", "A>U"])
    gains = [0.1, 0.9, 0.5, 0.7]  # on T the estimate picks the worst source
    targets = ["T", "T", "T", "U"]
    hits = top1_by_target(edges, gains, targets).set_index("target")
    assert hits.loc["U", "n_sources"] == 1 and math.isnan(hits.loc["U", "hit"])
    assert hits.loc["U", "best_estimated"] == "A>U"  # still says which, for the reader
    assert hits.loc["T", "hit"] == 0.0
    q = estimator_quality(edges, gains, targets, n_boot=20).iloc[0]
    assert q["top1_targets"] == 1 and q["top1_hit_pct"] == 0.0


def test_label_overlap_and_the_controls_of_an_edge():
    from trainables.estimator_quality import CONTROLS, control_estimates, label_overlap

    target = ["SIL", "pour_milk", "cut_tomato", "stir"]
    assert label_overlap(target, ["Pour-Milk", "cut  tomato", "background"]) == 0.5
    assert label_overlap(target, target) == 1.0
    assert label_overlap(target, ["other"]) == 0.0
    assert label_overlap(["a"], ["a", "b", "c"]) == 1.0  # of the target: extra source classes
    est = control_estimates([np.zeros(5), np.zeros(7)], target, ["stir"])
    assert est == {"control_size": 12.0, "control_overlap": 0.25} and set(est) == set(CONTROLS)


def test_controls_are_scored_beside_the_estimators():
    """The controls go through the same statistics and are flagged; the study's quality
    table (study.estimates.quality_table) keeps them beside the registered estimators."""
    from study.estimates import quality_table

    gains = np.array([4.0, 1.0, -2.0, 0.5, 3.0, 2.0])
    tab = pd.DataFrame({
        "source": list("abcdef"), "source_split": "split1",
        "target": ["t", "t", "t", "u", "u", "u"], "target_split": "split1",
        "logme": gains + np.array([0.1, -0.2, 0.0, 0.3, -0.1, 0.2]),
        "control_size": [10.0, 30.0, 20.0, 5.0, 5.0, 5.0],  # ranks t wrong, ties on u
        "control_overlap": [1.0, 0.5, 0.0, 0.2, 0.9, 0.4],
        "unregistered": np.arange(6.0), "gain": gains,
    })
    q = quality_table(tab, n_boot=50).set_index("estimator")
    assert list(q.index) == ["logme", "control_size", "control_overlap"]
    assert q["control"].tolist() == [False, True, True]
    assert q.loc["logme", "top1_hit_pct"] == 100.0
    assert q.loc["control_size", "top1_hit_pct"] == pytest.approx(100 / 6)  # t: 0, u: 1/3
    assert q.loc["control_overlap", "spearman"] == pytest.approx(
        spearmanr(tab["control_overlap"], gains)[0])
