"""The vectorised subsequence sampler: windows, padding, joint ratio, label maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from tests.helpers import recipe_table
from trainables.arrangements import LabelSpace, make_arrangement
from trainables.sampler import IGNORE, SamplerPart, SubsequenceSampler, split_batch, window_index


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def part_of(table, videos=None, maps=None, mapped=True):
    maps = np.arange(table.card.num_classes)[None] if maps is None else np.atleast_2d(maps)
    return SamplerPart(
        features=torch.as_tensor(table.features),
        labels=torch.as_tensor(table.labels.astype(np.int64)),
        offsets=table.offsets,
        videos=np.arange(table.num_videos) if videos is None else videos,
        label_maps=maps,
        feature_maps=maps if mapped else None,
    )


def test_split_batch_paper_ratio():
    assert split_batch(128, (5, 3)) == [80, 48]
    assert split_batch(32, (5, 3)) == [20, 12]
    assert split_batch(10, (1, 0)) == [10, 0]


@given(st.integers(1, 512), st.lists(st.integers(0, 9), min_size=1, max_size=4))
def test_split_batch_sums_and_is_fair(batch, ratio):
    if sum(ratio) == 0:
        with pytest.raises(ValueError):
            split_batch(batch, ratio)
        return
    counts = split_batch(batch, ratio)
    assert sum(counts) == batch
    for c, r in zip(counts, ratio, strict=True):
        assert abs(c - batch * r / sum(ratio)) < len(ratio) + 1e-9
        if batch % sum(ratio) == 0:
            assert c == batch * r // sum(ratio)


def test_window_index_clamps_and_masks():
    idx, valid = window_index(torch.tensor([0, 10]), torch.tensor([3, 5]), torch.tensor([0, 2]), 4)
    assert idx.tolist() == [[0, 1, 2, 2], [12, 13, 14, 14]]
    assert valid.tolist() == [[True, True, True, False], [True, True, True, False]]


def test_windows_are_the_table_frames():
    table = recipe_table(videos=6, classes=5, min_len=8, max_len=30)
    history = 40  # longer than some videos: those are padded
    sampler = SubsequenceSampler(
        [part_of(table)], [64], history, table.card.num_classes, torch.Generator().manual_seed(0)
    )
    b = sampler.sample()
    assert b.x.shape == (64, history, 5) and b.y.shape == b.mask.shape == (64, history)
    lengths = table.lengths
    for i in range(64):
        v, s = int(b.video[i]), int(b.start[i])
        n = min(history, lengths[v] - s)
        assert 0 <= s <= max(lengths[v] - history, 0)
        lo = table.offsets[v] + s
        np.testing.assert_array_equal(b.x[i, :n].numpy(), table.features[lo : lo + n])
        np.testing.assert_array_equal(b.y[i, :n].numpy(), table.labels[lo : lo + n])
        assert b.mask[i, :n].all() and not b.mask[i, n:].any()
        assert (b.y[i, n:] == IGNORE).all()  # padded frames are ignored by the loss


def test_draws_cover_videos_and_starts_and_are_reproducible():
    table = recipe_table(videos=5, classes=4, min_len=30, max_len=60)
    train = np.array([0, 2, 4])

    def draw(seed):
        g = torch.Generator().manual_seed(seed)
        return SubsequenceSampler([part_of(table, train)], [200], 10, 4, g).sample()

    a, b, c = draw(7), draw(7), draw(8)
    torch.testing.assert_close(a.x, b.x)
    assert torch.equal(a.start, b.start) and not torch.equal(a.start, c.start)
    assert set(a.video.tolist()) == {0, 2, 4}  # only the training videos, all of them
    assert len(set(a.start.tolist())) > 10  # random starts, not one fixed offset


def test_joint_batch_holds_the_ratio_and_maps_each_dataset():
    target = recipe_table(videos=6, classes=5, name="tgt", seed=1)
    source = recipe_table(videos=6, classes=3, name="src", seed=2)
    arr = make_arrangement("concat", space(target), space(source))
    parts = [part_of(target, maps=arr.target_map), part_of(source, maps=arr.source_maps)]
    sampler = SubsequenceSampler(
        parts, split_batch(128, (5, 3)), 12, arr.dim, torch.Generator().manual_seed(0)
    )
    for _ in range(3):
        b = sampler.sample()
        assert b.x.shape == (128, 12, 8)
        assert (b.part == 0).sum() == 80 and (b.part == 1).sum() == 48
        tgt, src = b.part == 0, b.part == 1
        # target frames live in the target block [0, 5), source frames in [5, 8)
        assert b.x[tgt][..., 5:].abs().sum() == 0 and b.x[src][..., :5].abs().sum() == 0
        y = b.y[b.mask]
        part = b.part[:, None].expand_as(b.y)[b.mask]
        assert (y[part == 0] < 5).all() and (y[part == 1] >= 5).all()
        i = int(torch.nonzero(src)[0])
        v, s = int(b.video[i]), int(b.start[i])
        lo = source.offsets[v] + s
        np.testing.assert_array_equal(b.x[i, :, 5:].numpy(), source.features[lo : lo + 12])


def test_multiple_random_uses_a_random_map_per_subsequence():
    target = recipe_table(videos=6, classes=7, name="tgt", seed=1)
    source = recipe_table(videos=6, classes=4, name="src", seed=2)
    arr = make_arrangement("multiple_random", space(target), space(source), seed=3, k=3)
    sampler = SubsequenceSampler(
        [part_of(source, maps=arr.source_maps)], [90], 6, arr.dim, torch.Generator().manual_seed(1)
    )
    b = sampler.sample()
    assert set(b.map.tolist()) == {0, 1, 2}
    for i in range(90):
        m = arr.source_maps[int(b.map[i])]
        v, s = int(b.video[i]), int(b.start[i])
        lo = source.offsets[v] + s
        expected = np.zeros((6, arr.dim), np.float32)
        expected[:, m] = source.features[lo : lo + 6]
        np.testing.assert_array_equal(b.x[i].numpy(), expected)
        np.testing.assert_array_equal(b.y[i].numpy(), m[source.labels[lo : lo + 6]])


def test_unmapped_features_pass_through():
    table = recipe_table(videos=4, classes=3, feature_dim=7)
    sampler = SubsequenceSampler(
        [part_of(table, mapped=False)], [8], 5, 3, torch.Generator().manual_seed(0)
    )
    assert sampler.sample().x.shape == (8, 5, 7)


def test_mixing_mapped_and_unmapped_parts_is_an_error():
    a, b = recipe_table(classes=3), recipe_table(classes=3, feature_dim=7)
    with pytest.raises(ValueError, match="mapped"):
        SubsequenceSampler([part_of(a), part_of(b, mapped=False)], [2, 2], 5, 3, torch.Generator())


def space(table) -> LabelSpace:
    return LabelSpace.from_card(table.card)
