"""The plain-PyTorch core: config validation, learning, streaming evaluation, determinism,
exact resume, transfer and checkpoints. No Ray here."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from data_prep.errors import DataError
from data_prep.table import read_table, write_table
from tests.helpers import recipe_table
from trainables import lstm_config
from trainables import train_job as engine
from trainables.arrangements import LabelSpace, make_arrangement, restrict
from trainables.metrics import METRIC_NAMES
from trainables.split_data import SplitData
from trainables.train_job import (
    CheckpointMismatch,
    ConfigError,
    TrainConfig,
    Trainer,
    TrainRun,
    TrainSpec,
    load_checkpoint,
)


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def small(**kw) -> dict:
    """A config small enough to train in well under a second per few iterations."""
    return {"history": 16, "hidden": 16, "batch_size": 8, "lr": 0.01, **kw}


@pytest.fixture
def tables(tmp_path):
    """Two toy datasets written to Parquet: target (6 classes) and source (4 classes)."""
    t = write_table(recipe_table(videos=6, classes=6, name="tgt", seed=1), tmp_path / "t.parquet")
    s = write_table(recipe_table(videos=6, classes=4, name="src", seed=2), tmp_path / "s.parquet")
    return str(t), str(s)


# -- config ----------------------------------------------------------------------------------


def test_config_defaults_are_the_papers():
    c = TrainConfig()
    m = c.model
    assert (m.kind, m.history, m.depth, m.hidden, c.batch_size, c.lr, m.cell) == (
        "lstm", 300, 1, 128, 128, 1e-3, "cudnn"
    )
    assert c.joint_ratio == (5, 3)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"histroy": 5}, "unknown key 'histroy'"),
        ({"history": 0}, "history: Input should be greater than or equal to 1"),
        ({"cell": "gru"}, "cell: Input should be 'cudnn' or 'peephole'"),
        ({"joint_ratio": (0, 0)}, "joint_ratio: must be two non-negative"),
        ({"source_path": "s.parquet"}, "source_path is set but mode is 'none'"),
        ({"mode": "joint"}, "mode 'joint' needs source_path"),
        ({"mode": "transfer"}, "needs init_checkpoint or source_path"),
        ({"arrangement": "merged"}, "needs a source"),
        ({"mode": "joint", "source_path": "s", "arrangement": "mixed"}, "unknown arrangement"),
        ({"iterations": 10, "eval_at": "5,20"}, "eval_at 20 is outside 1..iterations"),
        ({"pretrain_iterations": 5}, "pretrain_iterations applies only to mode 'transfer'"),
    ],
)
def test_bad_configs_are_clear_errors(config, message):
    with pytest.raises(ConfigError, match=message):
        TrainSpec.parse({"target_path": "t.parquet", **config})


def test_eval_at_accepts_a_comma_list_and_sorts_it():
    spec = TrainSpec.parse({"target_path": "t", "iterations": 100, "eval_at": "50, 10,50"})
    assert spec.eval_at == (10, 50)


def test_missing_split_and_missing_features(tables, tmp_path):
    with pytest.raises(ConfigError, match="has no split 'split9'.*split1, split2"):
        TrainRun.create({"target_path": tables[0], "target_split": 9})
    bare = recipe_table()
    bare.features = None
    path = write_table(bare, tmp_path / "bare.parquet")
    with pytest.raises(DataError, match="no features column"):
        TrainRun.create({"target_path": str(path)})


# -- learning ---------------------------------------------------------------------------------


def test_tiny_overfit_reaches_100_percent():
    """A few repeated sequences: the LSTM memorises them (test video == training videos)."""
    table = recipe_table(videos=4, classes=5, min_len=40, max_len=40, accuracy=0.3, repeat=True)
    data = SplitData.load(table, 1)
    tr = Trainer(TrainConfig(history=40, hidden=32, batch_size=2, lr=0.02),
                 make_arrangement("identity", data.space), data)
    tr.train(60)
    m = tr.evaluate()
    assert m["frame_acc"] >= 97.0
    assert m["input_acc"] < 50.0


def test_lstm_beats_its_input_on_synthetic_kitchens():
    """The paper's Table 4 claim on a fast-learning toy: synthetic kitchen 0 with a 50 %
    simulated classifier (i.i.d. errors), history 64, hidden 64, batch 32, lr 0.02, 80
    iterations on one CPU thread (~2 s). Measured: 88 % vs 51 % input."""
    from data_prep.synth import make_kitchen

    table = make_kitchen(0, 0, videos=24, accuracy=50, correlation_s=0.0)
    data = SplitData.load(table, 1)
    tr = Trainer(TrainConfig(history=64, hidden=64, batch_size=32, lr=0.02),
                 make_arrangement("identity", data.space), data)
    tr.train(80)
    m = tr.evaluate()
    assert m["frame_acc"] > m["input_acc"] + 10, m


# -- evaluation -------------------------------------------------------------------------------


@pytest.mark.parametrize("cell", ["cudnn", "peephole"])
def test_streaming_evaluation_equals_whole_videos(cell, monkeypatch):
    """Chunked, batched (sorted, videos dropping out) == each whole video in one pass."""
    table = recipe_table(videos=7, classes=5, min_len=5, max_len=50)
    data = SplitData.load(table, 1)
    data.test = np.arange(7)  # evaluate every video: many lengths
    tr = Trainer(TrainConfig(history=8, hidden=8, batch_size=4, eval_batch=3, cell=cell),
                 make_arrangement("identity", data.space), data)
    tr.train(3)
    monkeypatch.setattr(lstm_config, "EVAL_CHUNK", 7)
    preds = tr.predict()
    with torch.no_grad():
        for v, p in zip(data.test, preds, strict=True):
            x = torch.as_tensor(table.features[table.offsets[v] : table.offsets[v + 1]])[None]
            logits, _ = tr.model(x)
            np.testing.assert_array_equal(p, logits[0].argmax(-1).numpy())


def test_evaluation_reset_every_history_frames():
    table = recipe_table(videos=5, classes=4, min_len=10, max_len=40)
    data = SplitData.load(table, 1)
    tr = Trainer(TrainConfig(history=6, hidden=8, batch_size=4, eval_reset=True),
                 make_arrangement("identity", data.space), data)
    tr.train(3)
    preds = tr.predict()
    with torch.no_grad():
        for v, p in zip(data.test, preds, strict=True):
            x = torch.as_tensor(table.features[table.offsets[v] : table.offsets[v + 1]])
            chunks = [tr.model(x[i : i + 6][None])[0][0] for i in range(0, len(x), 6)]
            np.testing.assert_array_equal(p, torch.cat(chunks).argmax(-1).numpy())


def test_joint_run_predicts_only_target_classes(tables):
    run = TrainRun.create(small(target_path=tables[0], source_path=tables[1], mode="joint",
                                arrangement="concat", iterations=5, batch_size=16))
    assert run.trainer.sampler.counts == [10, 6]
    result = run.run()
    assert set(METRIC_NAMES) <= set(result) and result["iterations"] == 5
    preds = np.concatenate(run.trainer.predict())
    assert preds.min() >= 0 and preds.max() < 6  # target labels, never a source block index
    # restricting the joint logits to the target block is what makes that hold
    logits = torch.randn(2, 3, 10)
    assert torch.equal(restrict(logits, np.arange(6)), logits[..., :6])


def test_features_that_are_not_class_scores_pass_through(tmp_path):
    t = write_table(recipe_table(classes=5, feature_dim=9, name="a"), tmp_path / "a.parquet")
    s = write_table(recipe_table(classes=3, feature_dim=9, name="b"), tmp_path / "b.parquet")
    run = TrainRun.create(small(target_path=str(t), source_path=str(s), mode="joint",
                                iterations=2))
    assert run.trainer.input_dim == 9 and run.trainer.num_classes == 5
    result = run.run()
    assert result["input_acc"] is None and 0 <= result["frame_acc"] <= 100
    s2 = write_table(recipe_table(classes=3, feature_dim=4, name="c"), tmp_path / "c.parquet")
    with pytest.raises(ConfigError, match="same feature dimension"):
        TrainRun.create(small(target_path=str(t), source_path=str(s2), mode="joint"))
    s3 = write_table(recipe_table(classes=3, name="d"), tmp_path / "d.parquet")
    with pytest.raises(ConfigError, match="class scores"):
        TrainRun.create(small(target_path=str(t), source_path=str(s3), mode="joint"))


# -- determinism and resume -------------------------------------------------------------------


def _weights(run: TrainRun) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in run.trainer.model.state_dict().items()}


def test_same_seed_same_metrics_other_seed_other_model(tables):
    spec = small(target_path=tables[0], iterations=12, eval_at=[6])
    a, b = TrainRun.create(spec).run(), TrainRun.create(spec).run()
    for key in (*METRIC_NAMES, "loss", "curve"):
        assert a[key] == b[key], key
    r1, r2 = TrainRun.create(spec), TrainRun.create({**spec, "seed": 1})
    assert not torch.equal(_weights(r1)["head.weight"], _weights(r2)["head.weight"])


@pytest.mark.parametrize("mode", ["none", "joint"])
def test_resume_equals_uninterrupted(tables, tmp_path, mode):
    spec = small(target_path=tables[0], iterations=30, iterations_per_step=10, eval_at=[10, 20],
                 cell="peephole" if mode == "none" else "cudnn")
    if mode == "joint":
        spec.update(source_path=tables[1], mode="joint", arrangement="multiple_random")
    whole = TrainRun.create(spec)
    expected = [whole.step() for _ in range(3)]
    assert whole.done and [r["iteration"] for r in expected] == [10, 20, 30]

    for r in expected:
        r.pop("frames_per_s")  # a timing, the one key that may differ
    first = TrainRun.create(spec)
    step = first.step()
    step.pop("frames_per_s")
    assert step == expected[0]
    first.save(tmp_path / "ck.pt")
    resumed = TrainRun.create(spec)
    resumed.load(tmp_path / "ck.pt")
    got = [resumed.step(), resumed.step()]
    for g, e in zip(got, expected[1:], strict=True):
        g.pop("frames_per_s")
        assert g == e  # loss, every metric and the curve, exactly
    for k, v in _weights(whole).items():
        assert torch.equal(v, _weights(resumed)[k]), k


def test_checkpoint_loads_with_weights_only(tables, tmp_path):
    run = TrainRun.create(small(target_path=tables[0], iterations=2))
    run.run()
    path = run.save(tmp_path / "ck.pt")
    raw = torch.load(path, weights_only=True)
    meta = json.loads(raw["meta"])
    assert meta["arrangement"]["kind"] == "identity" and meta["iteration"] == 2
    assert meta["config"]["model"] == {**meta["config"]["model"], "kind": "lstm", "hidden": 16}
    assert meta["run"]["spec"]["target_path"] == tables[0]
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="not a loadable checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")


# -- transfer ---------------------------------------------------------------------------------


def _pretrained(tables, tmp_path, **kw):
    pre = TrainRun.create(small(target_path=tables[0], source_path=tables[1], mode="pretrain",
                                iterations=8, **kw))
    pre.run()
    return pre, pre.save(tmp_path / "pre.pt")


@pytest.mark.parametrize("arrangement", ["merged", "concat"])
def test_transfer_copies_the_source_weights_through_the_map(tables, tmp_path, arrangement):
    pre, path = _pretrained(tables, tmp_path)
    assert pre.trainer.arrangement.kind == "identity"  # pre-trained in the source's own space
    src = _weights(pre)
    spec = small(target_path=tables[0], source_path=tables[1], mode="transfer",
                 arrangement=arrangement, init_checkpoint=str(path), iterations=0)
    fresh = _weights(TrainRun.create(spec))
    run = TrainRun.create(spec)
    run.step()  # initialises (iterations=0: no training), then evaluates
    got, smap = _weights(run), np.array(run.trainer.arrangement.source_maps[0])
    assert run.init_how == "source-map"
    assert torch.equal(got["lstm.weight_hh_l0"], src["lstm.weight_hh_l0"])
    assert torch.equal(got["lstm.weight_ih_l0"][:, smap], src["lstm.weight_ih_l0"])
    assert torch.equal(got["head.weight"][smap], src["head.weight"])
    assert torch.equal(got["head.bias"][smap], src["head.bias"])
    others = np.setdiff1d(np.arange(run.trainer.num_classes), smap)
    assert torch.equal(got["head.weight"][others], fresh["head.weight"][others])
    assert not torch.equal(got["lstm.weight_hh_l0"], fresh["lstm.weight_hh_l0"])


def test_transfer_pretrains_on_the_source_first(tables):
    spec = small(target_path=tables[0], source_path=tables[1], mode="transfer",
                 pretrain_iterations=6, iterations=0)
    run = TrainRun.create(spec)
    result = run.step()
    assert result["pretrain_iterations"] == 6 and result["done"]
    # the same pre-training by hand gives exactly the weights the run started from
    source = SplitData.load(tables[1], 1)
    pre = Trainer(TrainConfig.parse(small()), make_arrangement("identity", source.space), source)
    pre.train(6)
    assert torch.equal(_weights(run)["lstm.weight_hh_l0"],
                       pre.model.state_dict()["lstm.weight_hh_l0"])


def test_multiple_random_pretraining_lives_in_the_joint_space(tables, tmp_path):
    pre, path = _pretrained(tables, tmp_path, arrangement="multiple_random")
    assert pre.trainer.arrangement.kind == "multiple_random" and pre.trainer.batches == "source"
    run = TrainRun.create(small(target_path=tables[0], source_path=tables[1], mode="transfer",
                                arrangement="multiple_random", init_checkpoint=str(path),
                                iterations=0))
    run.step()
    assert run.init_how == "same-space"
    for k, v in _weights(pre).items():
        assert torch.equal(_weights(run)[k], v), k
    other = TrainRun.create(small(target_path=tables[0], source_path=tables[1], mode="transfer",
                                  arrangement="multiple_random", arrangement_seed=5,
                                  init_checkpoint=str(path), iterations=0))
    with pytest.raises(CheckpointMismatch, match="multiple_random arrangement"):
        other.step()


def test_checkpoint_into_another_label_space_is_a_clear_error(tables, tmp_path):
    _, path = _pretrained(tables, tmp_path)  # a model of 'src' (4 classes)
    # transfer from the checkpoint alone: the source space comes from the checkpoint
    run = TrainRun.create(small(target_path=tables[0], init_checkpoint=str(path),
                                mode="transfer", iterations=0))
    run.step()
    assert run.init_how == "source-map" and run.trainer.arrangement.source.name == "src"
    wrong = TrainRun.create(small(target_path=tables[0], init_checkpoint=str(path)))
    with pytest.raises(CheckpointMismatch, match=r"'src' \(4 classes\).*'tgt' \(6 classes\)"):
        wrong.step()
    shape = TrainRun.create(small(target_path=tables[0], source_path=tables[1], mode="transfer",
                                  init_checkpoint=str(path), hidden=32))
    with pytest.raises(CheckpointMismatch, match="hidden 16 vs 32"):
        shape.step()
    resumed = TrainRun.create(small(target_path=tables[0]))
    with pytest.raises(CheckpointMismatch, match="was trained in the identity arrangement"):
        resumed.load(path)


def test_trainer_rejects_data_outside_its_arrangement(tables):
    t, s = SplitData.load(tables[0], 1), SplitData.load(tables[1], 1)
    with pytest.raises(ConfigError, match="not the arrangement's target"):
        Trainer(TrainConfig(), make_arrangement("identity", s.space), t)
    assert LabelSpace.from_card(t.table.card).size == 6


@pytest.mark.slow
@pytest.mark.realdata
def test_lstm_beats_its_input_on_real_breakfast(real_data):
    """Table 4's claim on real Breakfast labels (cam01, split 1, 433 videos) with a simulated
    20.6 % classifier (the paper's CNN column) whose errors average out in time — the
    optimistic ``ar1`` model, so this checks that the LSTM learns temporal structure at all:
    history 150, hidden 128, batch 32, lr 0.01, 600 iterations on one CPU thread (~2-3 min
    here; measured 37 % at 500 and 52 % at 750 iterations vs 20 % input). On the calibrated
    default model the LSTM does not beat its input at CPU scale (docs/reproduction.md)."""
    from data_prep.breakfast import convert
    from data_prep.simulate import simulate

    table = simulate(convert(real_data / "breakfast", cameras="cam01"), 20.6, seed=0,
                     model="ar1")
    data = SplitData.load(table, 1)
    tr = Trainer(TrainConfig(history=150, hidden=128, batch_size=32, lr=0.01),
                 make_arrangement("identity", data.space), data)
    tr.train(600)
    m = tr.evaluate()
    assert m["frame_acc"] > m["input_acc"] + 5, m


# -- poisoned numbers and absurd sizes (issue 9) ---------------------------------------------


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"lr": 1.0}, "lr: Input should be less than 1"),
        ({"history": 10**6}, "history: Input should be less than or equal to 100000"),
        ({"hidden": 10**6}, "hidden: Input should be less than or equal to 16384"),
        ({"batch_size": 10**7}, "batch_size: Input should be less than or equal to 65536"),
        ({"device": "tpu"}, "unknown device 'tpu'"),
        ({"mode": "joint", "source_path": "s", "joint_ratio": (5, 0)},
         "joint_ratio 5:0 leaves one dataset out"),
    ],
)
def test_absurd_hyperparameters_are_refused_at_validation(config, message):
    with pytest.raises(ConfigError, match=message):
        TrainSpec.parse({"target_path": "t.parquet", **config})


def test_a_zero_sided_ratio_is_fine_outside_joint_mode():
    assert TrainSpec.parse({"target_path": "t", "joint_ratio": (5, 0)}).joint_ratio == (5, 0)


def test_a_non_finite_loss_stops_training_naming_the_iteration():
    data = SplitData.load(recipe_table(), 1)
    tr = Trainer(TrainConfig(**small()), make_arrangement("identity", data.space), data)
    assert tr.train(3).loss is not None
    with torch.no_grad():
        next(tr.model.parameters()).fill_(float("nan"))  # poisoned weights
    with pytest.raises(engine.NonFiniteLoss, match="non-finite loss at iteration 4 "):
        tr.train(5)


def test_a_run_whose_loss_diverges_raises_instead_of_reporting(tables):
    t, _ = tables
    run = TrainRun.create({"target_path": t, "iterations": 20, "iterations_per_step": 5,
                           **small()})
    run.step()
    with torch.no_grad():
        for p in run.trainer.model.parameters():
            p.fill_(float("inf"))
    with pytest.raises(engine.NonFiniteLoss, match="non-finite loss at iteration 6 "):
        run.step()


def test_history_longer_than_every_training_video_is_refused_at_start(tables):
    t, s = tables
    longest = int(max(np.diff(read_table(t).offsets)))
    with pytest.raises(ConfigError, match=f"the longest has {longest} frames") as e:
        TrainRun.create({"target_path": t, **small(history=longest + 1)})
    assert "history" in str(e.value) and "tgt split1" in str(e.value)
    TrainRun.create({"target_path": t, **small(history=longest)})  # some video is long enough


def test_a_batch_beyond_the_machines_memory_is_refused_at_start(tables):
    t, _ = tables
    cfg = small(batch_size=65_536, hidden=16_384, depth=16)
    need = engine.memory_estimate(TrainConfig(**cfg), 6, 6, cfg["history"])
    assert need > engine.device_memory(torch.device("cpu"))
    with pytest.raises(ConfigError, match="needs at least .* GiB per training step"):
        TrainRun.create({"target_path": t, **cfg, "device": "cpu"})
    # the estimate: activations + 4x parameters, float32
    c = TrainConfig(history=10, hidden=4, batch_size=2, depth=1)
    params = 4 * 4 * (3 + 4 + 2) + 4 * 5 + 5
    assert engine.memory_estimate(c, 3, 5, 10) == 4 * (2 * 10 * (6 * 4 + 3 + 3 * 5) + 4 * params)


# -- the validation protocol --------------------------------------------------------------------


def test_validation_people_are_whole_people_apart_from_train_and_test():
    from data_prep.splits import validation_people

    table = recipe_table(videos=12, classes=4)  # one person per video
    data = SplitData.load(table, 1, validation=True)
    person = np.asarray(table.participant)
    train, val, test = (set(person[d].tolist()) for d in (data.train, data.val, data.test))
    assert val and train and not (train & val) and not (val & test) and not (train & test)
    # deterministic, and the validation part holds >= 15 % of the training videos
    again = SplitData.load(table, 1, validation=True)
    assert again.val.tolist() == data.val.tolist()
    assert len(data.val) >= 0.15 * (len(data.train) + len(data.val))
    # many videos per person: all of a person's videos go to one side
    tr, va = validation_people(range(8), ["a", "a", "b", "b", "c", "c", "d", "d"], "x")
    assert {p for v in va for p in "aabbccdd"[v]} & {p for v in tr for p in "aabbccdd"[v]} == set()
    with pytest.raises(ValueError, match="at least two"):
        validation_people([0, 1], ["a", "a"], "x")


def test_the_reported_model_is_the_best_validation_iteration(tables):
    """Test and validation disagree along the run: the reported iteration follows
    validation, the reported test metrics are that iteration's, and the last iteration's are
    kept under last.*"""
    spec = small(target_path=tables[0], iterations=60, eval_at=[10, 20, 30, 40, 50],
                 iterations_per_step=10, validation="people", lr=0.05)
    run = TrainRun.create(spec)
    steps = []
    while not run.done:
        steps.append(run.step())
    evals = [r for r in steps if "val.frame_acc" in r]
    final = evals[-1]
    by_val = max(evals[:-1] + [{**final, "val.frame_acc": final["val.frame_acc"]}],
                 key=lambda r: r["val.frame_acc"])
    best_it = final["best_iteration"]
    vals = {r["iteration"]: r["val.frame_acc"] for r in evals[:-1]}
    # on this seed an earlier iteration is best on validation (and another one on test)
    assert best_it < 60 and vals[best_it] == max(vals.values())
    earlier = next(r for r in evals if r["iteration"] == best_it)
    assert final["frame_acc"] == earlier["frame_acc"]  # that iteration's test metrics
    best_test = max(evals[:-1], key=lambda r: r["frame_acc"])
    assert best_test["iteration"] != best_it  # test would have picked another iteration
    assert final["last.frame_acc"] != final["frame_acc"]
    assert by_val["val.frame_acc"] == final["val.frame_acc"]
    # the saved model is the reported one
    ckpt = run.checkpoint()
    again = TrainRun.create(spec)
    again.load(ckpt)
    assert again.trainer.evaluate()["frame_acc"] == final["frame_acc"]
    # the paper's protocol: no validation part, the last iteration
    paper = TrainRun.create({**spec, "validation": "none"}).run()
    assert "val.frame_acc" not in paper and "best_iteration" not in paper
