"""The packed LSTM (trainables.packed_lstm) against the ordinary Trainer, on the CPU.

Tolerances: one forward/backward agrees to 1e-5 (float32; only summation order differs).
N optimiser steps: PackedAdam forms torch.optim.Adam's scalars the same way, so the only
differences are the rounding of the forward/backward; Adam's normalised update can amplify a
1e-7 gradient difference on a near-zero gradient, so parameters are compared at 1e-4 absolute
after 8 steps and losses at 1e-5 relative.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests.helpers import TOY_CLASSES, build_trainers, packed_members, toy_table, toy_trainer
from trainables.lstm_model import FramewiseLSTM
from trainables.packed_lstm import PackedAdam, PackedLSTM, PackedTrainer, member_keys
from trainables.sampler import IGNORE
from trainables.split_data import SplitData
from trainables.train_job import load_checkpoint


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def datasets() -> list[SplitData]:
    return [SplitData.load(toy_table(seed), 1) for seed in (0, 1)]


@pytest.mark.parametrize("depth", [1, 2])
@pytest.mark.parametrize("cell", ["cudnn", "peephole"])
def test_one_step_same_loss_and_gradients(datasets, cell, depth):
    trainers = build_trainers(packed_members(datasets, cell=cell, depth=depth))
    batches = [t.sampler.sample() for t in trainers]
    assert any((b.y == IGNORE).any() for b in batches), "the batches should include padding"
    pack = PackedTrainer(trainers)
    x = torch.stack([b.x for b in batches])
    y = torch.stack([b.y for b in batches])
    losses = pack.loss_and_grad(x, y)
    for k, (t, b) in enumerate(zip(trainers, batches, strict=True)):
        logits, _ = t.model(b.x)
        loss = F.cross_entropy(logits.reshape(-1, TOY_CLASSES), b.y.reshape(-1),
                               ignore_index=IGNORE)
        t.model.zero_grad()
        loss.backward()
        assert abs(float(losses[k]) - loss.item()) < 1e-5
        for name, p in t.model.named_parameters():
            torch.testing.assert_close(pack.model.param(name).grad[k], p.grad, atol=1e-5,
                                       rtol=0, msg=f"member {k} {name}")


@pytest.mark.parametrize("cell", ["cudnn", "peephole"])
def test_forward_with_state_equals_framewise_lstm(cell):
    torch.manual_seed(0)
    models = [FramewiseLSTM(3, 4, hidden=6, depth=2, cell=cell) for _ in range(2)]
    pack = PackedLSTM.from_models(models)
    x = torch.randn(2, 5, 7, 3)
    state = (torch.randn(2, 2, 5, 6), torch.randn(2, 2, 5, 6))
    logits, (h, c) = pack(x, state)
    for k, m in enumerate(models):
        ref, (rh, rc) = m(x[k], (state[0][k], state[1][k]))
        torch.testing.assert_close(logits[k], ref, atol=1e-5, rtol=0)
        torch.testing.assert_close(h[k], rh, atol=1e-5, rtol=0)
        torch.testing.assert_close(c[k], rc, atol=1e-5, rtol=0)


def test_packed_adam_is_torch_adam_per_member():
    """Same gradients in: the same parameters out, bit for bit, with per-member lr and a
    member that skips steps (its state stays put, as if it had not been packed)."""
    torch.manual_seed(0)
    init = [torch.randn(3, 4) for _ in range(2)]
    lrs = [0.01, 0.003]
    singles = [torch.nn.Parameter(w.clone()) for w in init]
    opts = [torch.optim.Adam([p], lr=lr) for p, lr in zip(singles, lrs, strict=True)]
    stacked = torch.nn.Parameter(torch.stack(init))
    packed = PackedAdam([stacked], lrs)
    for step in range(6):
        grads = torch.randn(2, 3, 4)
        ok = torch.tensor([True, step % 2 == 0])
        stacked.grad = grads.clone()
        packed.step(ok)
        for k in range(2):
            if ok[k]:
                singles[k].grad = grads[k].clone()
                opts[k].step()
    for k in range(2):
        assert torch.equal(stacked.detach()[k], singles[k].detach())
        assert torch.equal(packed.exp_avg_sq[0][k], opts[k].state[singles[k]]["exp_avg_sq"])
    assert packed.step_count.tolist() == [6.0, 3.0]


@pytest.mark.parametrize("cell", ["cudnn", "peephole"])
def test_n_packed_steps_match_separate_trainers(datasets, cell):
    specs = packed_members(datasets, cell=cell, depth=1)
    pack = PackedTrainer(build_trainers(specs))
    separate = build_trainers(specs)  # same seeds: same initial weights and batch streams
    stats = pack.train(8)
    assert stats.iterations == [8, 8, 8]
    assert stats.frames == 3 * 8 * 4 * 24
    for k, t in enumerate(separate):
        alone = t.train(8)
        assert stats.loss[k] == pytest.approx(alone.loss, rel=1e-5)
        unpacked = pack.unpack(k)
        assert unpacked.iteration == 8
        for name, p in t.model.named_parameters():
            torch.testing.assert_close(unpacked.model.state_dict()[name], p.detach(),
                                       atol=1e-4, rtol=0, msg=f"member {k} {name}")
        # the generators drew the same batches: the next one is the same
        assert torch.equal(unpacked.generator.get_state(), t.generator.get_state())
        ours, theirs = unpacked.optimizer.state_dict(), t.optimizer.state_dict()
        assert ours["param_groups"][0]["lr"] == specs[k]["lr"]
        assert float(ours["state"][0]["step"]) == float(theirs["state"][0]["step"]) == 8


def test_unpacked_checkpoint_is_an_ordinary_checkpoint(datasets, tmp_path):
    specs = packed_members(datasets, cell="cudnn", depth=1)
    pack = PackedTrainer(build_trainers(specs))
    pack.train(3)
    path = pack.save(1, tmp_path / "m1.pt")
    ckpt = load_checkpoint(path)  # the ordinary loader (weights_only)
    assert ckpt.iteration == 3
    model = FramewiseLSTM(TOY_CLASSES, TOY_CLASSES, hidden=8)
    model.load_state_dict(ckpt.state["model"])  # strict: exactly FramewiseLSTM's keys
    assert list(ckpt.state["model"]) == member_keys("cudnn", 1)
    # resume: a fresh Trainer restored from it continues exactly as the pack does
    resumed = toy_trainer(**specs[1])
    resumed.restore(ckpt)
    resumed.train(2)
    pack.train(2)
    again = pack.unpack(1)
    assert again.iteration == resumed.iteration == 5
    for name, p in resumed.model.named_parameters():
        torch.testing.assert_close(again.model.state_dict()[name], p.detach(), atol=1e-5, rtol=0)
    metrics = again.evaluate()  # the ordinary evaluation of an unpacked member
    assert 0.0 <= metrics["frame_acc"] <= 100.0


def test_a_non_finite_member_is_reported_and_frozen_without_touching_the_others(datasets):
    specs = packed_members(datasets, cell="peephole", depth=1)
    pack = PackedTrainer(build_trainers(specs))
    separate = build_trainers(specs)
    pack.train(2)
    frozen = pack.model.member_state_dict(1)
    with torch.no_grad():
        pack.model.param("head.bias")[1, 0] = float("nan")  # member 1's loss turns NaN
    stats = pack.train(3)
    assert stats.iterations == [3, 0, 3]
    assert stats.loss[1] is None
    failure = pack.failures[1]
    assert (failure.iteration, failure.reason) == (3, "non-finite loss")
    assert set(pack.failures) == {1}
    # frozen where it failed: no update applied, no batch drawn, iteration not counted
    assert pack.unpack(1).iteration == 2
    after = pack.model.member_state_dict(1)
    for key in frozen:
        if key != "head.bias":
            assert torch.equal(after[key], frozen[key])
    assert float(pack.optimizer.step_count[1]) == 2
    # a member known to have failed draws no more batches and takes no more steps
    generator_before = pack.trainers[1].generator.get_state()
    assert pack.train(2).iterations == [2, 0, 2]
    assert torch.equal(pack.trainers[1].generator.get_state(), generator_before)
    assert pack.unpack(1).iteration == 2
    for k in (0, 2):
        t = separate[k]
        t.train(7)
        unpacked = pack.unpack(k)
        assert unpacked.iteration == 7
        for name, p in t.model.named_parameters():
            w = unpacked.model.state_dict()[name]
            assert torch.isfinite(w).all()
            torch.testing.assert_close(w, p.detach(), atol=1e-4, rtol=0)


def test_members_must_share_the_shape(datasets):
    a = toy_trainer(datasets[0])
    with pytest.raises(ValueError, match="hidden 16 vs 8"):
        PackedTrainer([a, toy_trainer(datasets[0], hidden=16)])
    with pytest.raises(ValueError, match="history 12 vs 24"):
        PackedTrainer([a, toy_trainer(datasets[0], history=12)])
    with pytest.raises(ValueError, match="CUDA options"):
        PackedTrainer([a], tf32=True)
