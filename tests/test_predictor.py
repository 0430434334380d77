"""The streaming predictor: one frame at a time equals the batch evaluation frame by frame."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.helpers import recipe_table
from trainables.arrangements import make_arrangement
from trainables.predictor import FramewisePredictor
from trainables.split_data import SplitData
from trainables.train_config import TrainConfig
from trainables.train_job import Trainer, save_checkpoint


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _trained(tmp_path, *, cell="cudnn", eval_reset=False, joint=False):
    target = SplitData.load(recipe_table(videos=6, classes=5, name="tgt", seed=3), 1)
    cfg = TrainConfig(history=8, hidden=8, batch_size=4, lr=0.02, cell=cell,
                     eval_reset=eval_reset)
    if joint:
        source = SplitData.load(recipe_table(videos=6, classes=4, name="src", seed=4), 1)
        arr = make_arrangement("concat", target.space, source.space)
        tr = Trainer(cfg, arr, target, source, batches="joint")
    else:
        tr = Trainer(cfg, make_arrangement("identity", target.space), target)
    tr.train(20)
    path = save_checkpoint(tmp_path / "lstm.pt", tr.checkpoint())
    return tr, target, path


@pytest.mark.parametrize(
    ("cell", "eval_reset", "joint"),
    [("cudnn", False, False), ("peephole", False, False), ("cudnn", True, False),
     ("cudnn", False, True)],
)
def test_step_by_step_equals_batch_evaluation(tmp_path, cell, eval_reset, joint):
    tr, data, path = _trained(tmp_path, cell=cell, eval_reset=eval_reset, joint=joint)
    batch = tr.predict()
    p = FramewisePredictor.from_checkpoint(path)
    assert p.classes == data.space.classes
    table = data.table
    for v, expected in zip(data.test, batch, strict=True):
        frames = table.features[table.offsets[v]:table.offsets[v + 1]]
        p.reset()
        probs = np.stack([p.step(f) for f in frames])
        assert probs.shape == (len(frames), len(p.classes))
        np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
        np.testing.assert_array_equal(probs.argmax(1), expected)
        # the one-pass video form is the same computation
        np.testing.assert_allclose(p.predict_video(frames), probs, atol=1e-5)


def test_causal_a_future_frame_never_changes_the_past(tmp_path):
    _, data, path = _trained(tmp_path)
    p = FramewisePredictor.from_checkpoint(path)
    frames = data.table.features[:30]
    first = np.stack([p.step(f) for f in frames[:20]])
    p.reset()
    changed = frames.copy()
    changed[20:] = changed[20:][::-1]
    again = np.stack([p.step(f) for f in changed])[:20]
    np.testing.assert_allclose(first, again, atol=1e-6)


def test_reset_starts_a_new_video(tmp_path):
    _, data, path = _trained(tmp_path)
    p = FramewisePredictor.from_checkpoint(path)
    frames = data.table.features[:10]
    a = np.stack([p.step(f) for f in frames])
    b = np.stack([p.step(f) for f in frames])  # state carried: differs
    p.reset()
    c = np.stack([p.step(f) for f in frames])
    assert not np.allclose(a, b)
    np.testing.assert_allclose(a, c, atol=1e-6)


def test_a_frame_of_the_wrong_width_is_refused(tmp_path):
    _, _, path = _trained(tmp_path)
    p = FramewisePredictor.from_checkpoint(path)
    with pytest.raises(ValueError, match="a frame has 5 features"):
        p.step(np.zeros(7, dtype=np.float32))
