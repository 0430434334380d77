"""The packed LSTM's equivalence on a CUDA device (skipped without one).

The unpacked reference runs cuDNN's LSTM; TF32 is switched off for both sides (cuDNN allows
it by default), so both are float32 and differ only in summation order and algorithm:
1e-4 absolute for one step's losses and gradients and for parameters after 8 steps.
The optional fast paths are checked against the exact one: ``compile`` (the same float32
math, fused) at 1e-4, ``tf32`` (10-bit mantissa matmuls) at 1e-2 on the losses.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests.helpers import TOY_CLASSES, build_trainers, packed_members, toy_table
from trainables.packed_lstm import PackedTrainer
from trainables.sampler import IGNORE
from trainables.split_data import SplitData

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

ATOL = 1e-4


@pytest.fixture(autouse=True)
def _exact_float32():
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


@pytest.fixture(scope="module")
def datasets() -> list[SplitData]:
    return [SplitData.load(toy_table(seed), 1, device="cuda") for seed in (0, 1)]


@pytest.mark.parametrize("depth", [1, 2])
@pytest.mark.parametrize("cell", ["cudnn", "peephole"])
def test_one_step_same_loss_and_gradients_on_cuda(datasets, cell, depth):
    trainers = build_trainers(packed_members(datasets, cell=cell, depth=depth))
    assert trainers[0].device.type == "cuda"
    batches = [t.sampler.sample() for t in trainers]
    pack = PackedTrainer(trainers)
    losses = pack.loss_and_grad(torch.stack([b.x for b in batches]),
                                torch.stack([b.y for b in batches]))
    for k, (t, b) in enumerate(zip(trainers, batches, strict=True)):
        logits, _ = t.model(b.x)
        loss = F.cross_entropy(logits.reshape(-1, TOY_CLASSES), b.y.reshape(-1),
                               ignore_index=IGNORE)
        t.model.zero_grad()
        loss.backward()
        assert abs(losses[k].item() - loss.item()) < ATOL
        for name, p in t.model.named_parameters():
            torch.testing.assert_close(pack.model.param(name).grad[k], p.grad, atol=ATOL,
                                       rtol=0, msg=f"member {k} {name}")


@pytest.mark.parametrize("cell", ["cudnn", "peephole"])
def test_n_packed_steps_match_separate_trainers_on_cuda(datasets, cell):
    specs = packed_members(datasets, cell=cell, depth=1)
    pack = PackedTrainer(build_trainers(specs))
    separate = build_trainers(specs)
    stats = pack.train(8)
    for k, t in enumerate(separate):
        alone = t.train(8)
        assert stats.loss[k] == pytest.approx(alone.loss, abs=ATOL)
        unpacked = pack.unpack(k)
        for name, p in t.model.named_parameters():
            torch.testing.assert_close(unpacked.model.state_dict()[name], p.detach(),
                                       atol=ATOL, rtol=0, msg=f"member {k} {name}")


@pytest.mark.parametrize("cell", ["cudnn", "peephole"])
def test_compiled_cells_equal_the_eager_pack(datasets, cell):
    specs = packed_members(datasets, cell=cell, depth=1)
    eager = PackedTrainer(build_trainers(specs))
    fused = PackedTrainer(build_trainers(specs), compile=True)
    a, b = eager.train(4), fused.train(4)
    for k in range(len(specs)):
        assert b.loss[k] == pytest.approx(a.loss[k], abs=ATOL)
        for key in eager.model.keys:
            torch.testing.assert_close(fused.model.param(key)[k], eager.model.param(key)[k],
                                       atol=ATOL, rtol=0)


def test_tf32_stays_close_and_restores_the_global_flag(datasets):
    specs = packed_members(datasets, cell="cudnn", depth=1)
    exact = PackedTrainer(build_trainers(specs)).train(4)
    fast = PackedTrainer(build_trainers(specs), tf32=True).train(4)
    assert torch.backends.cuda.matmul.allow_tf32 is False
    for k in range(len(specs)):
        assert fast.loss[k] == pytest.approx(exact.loss[k], abs=1e-2)
