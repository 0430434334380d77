"""The one contract every registered temporal model keeps (``trainables.temporal.MODELS``).

Each test runs over every entry, with a small config of that model: shapes, determinism,
the checkpoint round trip (exact resume), weight transfer between label spaces under every
arrangement, the memory estimate, and for causal models that the output at a frame ignores
later frames and that frame-at-a-time streaming equals the batch evaluation.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from data_prep.table import write_table
from tests.helpers import recipe_table
from trainables.arrangements import ARRANGEMENTS
from trainables.predictor import FramewisePredictor
from trainables.split_data import SplitData
from trainables.temporal import MODELS, kind_of
from trainables.train_config import TrainConfig
from trainables.train_job import TrainRun, load_checkpoint

#: a small config per registered model: adding a model to MODELS without one fails here
SMALL: dict[str, dict] = {
    "lstm": {"history": 12, "hidden": 8},
    "mstcn": {"stages": 2, "layers": 3, "maps": 8, "window": 40},
}
CAUSAL_VARIANTS: dict[str, list[dict]] = {
    "lstm": [{}, {"cell": "peephole"}],
    "mstcn": [{"causal": True}],
}


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def test_every_registered_model_has_a_small_config_here():
    assert set(SMALL) == set(MODELS)


@pytest.fixture(params=sorted(MODELS))
def kind(request) -> str:
    return request.param


def _cfg(kind: str, **kw) -> dict:
    return {"kind": kind, **SMALL[kind], "batch_size": 4, "lr": 0.01, **kw}


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    d = tmp_path_factory.mktemp("contract")
    t = write_table(recipe_table(videos=6, classes=6, name="tgt", seed=1), d / "t.parquet")
    s = write_table(recipe_table(videos=6, classes=4, name="src", seed=2), d / "s.parquet")
    return str(t), str(s)


def test_config_round_trips_flat_and_nested(kind):
    c = TrainConfig.parse(_cfg(kind))
    assert c.model.kind == kind and kind_of(c.model) is MODELS[kind]
    assert TrainConfig.parse(c.flat()) == c == TrainConfig.parse(c.model_dump())


def test_shapes_and_loss(kind):
    cfg = TrainConfig.parse(_cfg(kind)).model
    net = kind_of(cfg).build(cfg, 5, 7)
    x = torch.rand(3, 20, 5)
    logits, _ = net(x)
    assert logits.shape == (3, 20, 7)
    rep, _ = net.representation(x)
    assert rep.shape[:2] == (3, 20)
    y = torch.randint(0, 7, (3, 20))
    y[0, 15:] = -100  # padding is masked
    loss = net.loss(x, y)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None for p in net.parameters())


def test_memory_estimate_grows_with_batch_and_window(kind):
    k = MODELS[kind]
    cfg = TrainConfig.parse(_cfg(kind)).model
    base = k.memory_estimate(cfg, 48, 48, 8, 100)
    assert 0 < base < k.memory_estimate(cfg, 48, 48, 16, 100)
    assert base < k.memory_estimate(cfg, 48, 48, 8, 200)


def test_same_seed_same_run_other_seed_other(kind, tables):
    def run(seed):
        return TrainRun.create({**_cfg(kind, seed=seed), "target_path": tables[0],
                                "iterations": 4}).run()
    a, b, c = run(0), run(0), run(1)
    assert a["loss"] == b["loss"] and a["frame_acc"] == b["frame_acc"]
    assert a["loss"] != c["loss"]


def test_checkpoint_round_trip_resumes_exactly(kind, tables, tmp_path):
    spec = {**_cfg(kind), "target_path": tables[0], "iterations": 6, "iterations_per_step": 3}
    whole = TrainRun.create(spec).run()
    first = TrainRun.create(spec)
    first.step()
    path = first.save(tmp_path / "ck.pt")
    ckpt = load_checkpoint(path)
    assert ckpt.config.model.kind == kind and ckpt.iteration == 3
    second = TrainRun.create(spec)
    second.load(path)
    rest = second.run()
    assert rest["loss"] == whole["loss"] and rest["frame_acc"] == whole["frame_acc"]


@pytest.mark.parametrize("arrangement", [a for a, k in ARRANGEMENTS.items() if k.needs_source])
def test_weight_transfer_moves_exactly_the_declared_axes(kind, tables, tmp_path, arrangement):
    t, s = tables
    pre = TrainRun.create({**_cfg(kind), "target_path": t, "source_path": s, "mode": "pretrain",
                           "arrangement": arrangement, "iterations": 2})
    pre.run()
    path = pre.save(tmp_path / "pre.pt")
    fine = TrainRun.create({**_cfg(kind), "target_path": t, "mode": "transfer",
                            "arrangement": arrangement, "init_checkpoint": str(path),
                            "iterations": 0})
    before = {k: v.clone() for k, v in fine.trainer.model.state_dict().items()}
    fine._start()
    ours = fine.trainer.model.state_dict()
    theirs = load_checkpoint(path).state["model"]
    if fine.init_how == "same-space":  # multiple_random pre-trains in the joint space
        for key, value in theirs.items():
            torch.testing.assert_close(ours[key], value)
        return
    smap = torch.as_tensor(np.array(fine.trainer.arrangement.source_maps[0]))
    axes = kind_of(fine.spec.model).transfer_axes(fine.spec.model)
    for key, value in theirs.items():
        if key in axes:
            axis, _ = axes[key]
            torch.testing.assert_close(ours[key].index_select(axis, smap), value)
            rest = torch.ones(ours[key].shape[axis], dtype=torch.bool)
            rest[smap] = False  # rows/columns no source index maps to keep their init
            torch.testing.assert_close(ours[key].index_select(axis, rest.nonzero()[:, 0]),
                                       before[key].index_select(axis, rest.nonzero()[:, 0]))
        else:
            torch.testing.assert_close(ours[key], value)


def _causal_configs():
    return [(k, v) for k in sorted(CAUSAL_VARIANTS) for v in CAUSAL_VARIANTS[k]]


@pytest.mark.parametrize(("kind", "extra"), _causal_configs())
def test_causal_output_ignores_later_frames(kind, extra):
    cfg = TrainConfig.parse(_cfg(kind, **extra)).model
    k = kind_of(cfg)
    assert k.causal(cfg)
    torch.manual_seed(0)
    net = k.build(cfg, 5, 4).eval()
    x = torch.rand(1, 30, 5)
    y = x.clone()
    y[:, 17:] = torch.rand(1, 13, 5)
    with torch.no_grad():
        a, _ = net(x)
        b, _ = net(y)
    torch.testing.assert_close(a[:, :17], b[:, :17])
    assert not torch.allclose(a[:, 17:], b[:, 17:])


@pytest.mark.parametrize(("kind", "extra"), _causal_configs())
def test_streaming_equals_batch_evaluation(kind, extra, tables, tmp_path):
    run = TrainRun.create({**_cfg(kind, **extra), "target_path": tables[0], "iterations": 3})
    run.run()
    path = run.save(tmp_path / "m.pt")
    batch_preds = run.trainer.predict()
    p = FramewisePredictor.from_checkpoint(path)
    data: SplitData = run.trainer.eval_data
    for v, want in zip(data.test, batch_preds, strict=True):
        frames = data.table.features[data.table.offsets[v]:data.table.offsets[v + 1]]
        p.reset()
        stepped = np.stack([p.step(f) for f in frames])
        whole = p.predict_video(frames)
        np.testing.assert_allclose(stepped, whole, atol=1e-5)
        np.testing.assert_array_equal(stepped.argmax(1), want)


def test_a_model_that_is_not_causal_refuses_to_stream(tables, tmp_path):
    non_causal = [k for k, m in MODELS.items() if not m.causal(m.config())]
    for kind in non_causal:
        run = TrainRun.create({**_cfg(kind), "target_path": tables[0], "iterations": 2})
        run.run()
        p = FramewisePredictor.from_checkpoint(run.save(tmp_path / f"{kind}.pt"))
        data = run.trainer.eval_data
        v = data.test[0]
        frames = data.table.features[data.table.offsets[v]:data.table.offsets[v + 1]]
        with pytest.raises(ValueError, match="not causal"):
            p.step(frames[0])
        assert p.predict_video(frames).argmax(1).tolist() == run.trainer.predict()[0].tolist()


def test_a_checkpoint_of_another_model_kind_is_a_clear_mismatch(tables, tmp_path):
    from trainables.job import CheckpointMismatch

    kinds = sorted(MODELS)
    a = TrainRun.create({**_cfg(kinds[0]), "target_path": tables[0], "iterations": 1})
    a.run()
    path = a.save(tmp_path / "a.pt")
    b = TrainRun.create({**_cfg(kinds[1]), "target_path": tables[0], "iterations": 1})
    with pytest.raises(CheckpointMismatch, match=f"holds a {kinds[0]} model"):
        b.load(path)
