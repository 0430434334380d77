"""Synthetic kitchens: related vocabularies, learnable recipes, leave-person-out splits,
determinism, and the `kitchen-study synth` command."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from data_prep.digest import content_digest
from data_prep.synth import BACKGROUND, KITCHENS, SHARED_ACTIONS, make_kitchen, make_kitchens
from data_prep.table import FrameTable, read_table

NAMES = [k.name for k in KITCHENS]


@pytest.fixture(scope="module")
def kitchens() -> dict[str, FrameTable]:
    return make_kitchens(seed=0)


def test_default_is_three_named_kitchens(kitchens):
    assert list(kitchens) == NAMES[:3] == ["synth_breakfast", "synth_salads", "synth_cooking"]
    for name, t in kitchens.items():
        assert t.card.name == name
        assert t.num_videos == 40
        assert t.lengths.min() >= 150 and t.lengths.max() <= 2000
        assert 10_000 < t.num_frames < 40_000


def test_vocabularies_overlap_but_differ(kitchens):
    vocab = {n: set(t.card.classes) for n, t in kitchens.items()}
    for t in kitchens.values():
        assert t.card.classes[0] == BACKGROUND == t.card.background
        assert t.card.background_index == 0
        assert list(t.card.classes[1:]) == sorted(t.card.classes[1:])
    common = set.intersection(*vocab.values())
    assert common == {BACKGROUND, *SHARED_ACTIONS}
    for n, v in vocab.items():
        others = set.union(*(w for m, w in vocab.items() if m != n))
        assert len(v - others) >= 5, f"{n} needs actions of its own"
    # and every kitchen actually performs shared actions (they are not just listed)
    for t in kitchens.values():
        used = {t.card.classes[i] for i in np.unique(t.labels)}
        assert len(used & set(SHARED_ACTIONS)) >= 3


def test_splits_are_four_leave_person_out_folds(kitchens):
    for t in kitchens.values():
        assert len(t.card.splits) == 4
        assert len(set(t.participant)) == 8
        person = dict(zip(t.videos, t.participant, strict=True))
        tested = []
        for s in t.card.splits:
            assert set(s.train) | set(s.test) == set(t.videos)
            assert not {person[v] for v in s.train} & {person[v] for v in s.test}
            tested += s.test
        assert sorted(tested) == t.videos  # every video tested exactly once


def test_features_are_simulated_softmax_at_the_kitchens_accuracy(kitchens):
    for k, t in enumerate(kitchens.values()):
        assert t.features.shape == (t.num_frames, t.card.num_classes)
        np.testing.assert_allclose(t.features.sum(axis=1), 1.0, atol=1e-5)
        acc = 100.0 * np.mean(t.features.argmax(axis=1) == t.labels)
        assert abs(acc - KITCHENS[k].accuracy) <= 1.0
        assert t.card.features["kind"] == "simulated"
        assert t.card.features["accuracy_target"] == KITCHENS[k].accuracy


def _segments(t: FrameTable, i: int) -> list[int]:
    """The non-background action sequence of video i (one entry per segment)."""
    y = t.video_labels(i)
    starts = np.flatnonzero(np.diff(y, prepend=-1))
    return [int(a) for a in y[starts] if a != 0]


def test_recipes_make_the_next_action_predictable(kitchens):
    """The structure an LSTM exploits: given the dish and the current action, the next one
    is nearly determined (partial order, few skips), far from uniform over the actions."""
    for t in kitchens.values():
        counts: dict[tuple, dict[int, int]] = {}
        for i in range(t.num_videos):
            seq = _segments(t, i)
            assert len(seq) >= 4
            for a, b in zip(seq[:-1], seq[1:], strict=True):
                nxt = counts.setdefault((t.activity[i], a), {})
                nxt[b] = nxt.get(b, 0) + 1
        total = sum(sum(c.values()) for c in counts.values())
        entropy = 0.0
        for c in counts.values():
            p = np.array(list(c.values()), dtype=float)
            n = p.sum()
            p /= n
            entropy += n / total * float(-(p * np.log2(p)).sum())
        assert entropy < 1.2, entropy  # uniform over 16 actions would be 4 bits


def test_durations_depend_on_the_action(kitchens):
    t = kitchens["synth_breakfast"]
    y = t.labels
    change = np.diff(y, prepend=-1) != 0
    change[t.offsets[:-1]] = True  # a segment never spans two videos
    starts = np.flatnonzero(change)
    lengths = np.diff(np.append(starts, len(y)))
    labels = y[starts]
    means = [lengths[labels == a].mean() for a in np.unique(labels) if a != 0]
    assert max(means) > 1.5 * min(means)


def test_deterministic_for_a_seed_and_kitchen():
    a = make_kitchens(seed=5, kitchens=2, videos=8, participants=4)
    b = make_kitchens(seed=5, kitchens=2, videos=8, participants=4)
    c = make_kitchens(seed=6, kitchens=2, videos=8, participants=4)
    for n in a:
        np.testing.assert_array_equal(a[n].labels, b[n].labels)
        np.testing.assert_array_equal(a[n].features, b[n].features)
        assert a[n].card == b[n].card and a[n].videos == b[n].videos
        assert a[n].card.input_hash != c[n].card.input_hash
        assert a[n].num_frames != c[n].num_frames or not np.array_equal(a[n].labels, c[n].labels)
    # kitchen k depends only on (seed, k): asking for fewer gives the same first ones
    one = make_kitchen(1, seed=5, videos=8, participants=4)
    np.testing.assert_array_equal(one.features, a["synth_salads"].features)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kitchens": 0}, "kitchens must be"),
        ({"kitchens": len(KITCHENS) + 1}, "kitchens must be"),
        ({"participants": 3}, "4 leave-person-out"),
        ({"videos": 5, "participants": 6}, "cannot cover"),
    ],
)
def test_bad_parameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_kitchens(seed=0, **kwargs)


def test_cli_writes_one_file_per_kitchen(tmp_path):
    from study.cli import app

    out = tmp_path / "synth"
    res = CliRunner().invoke(app, ["synth", "--out", str(out), "--seed", "3", "--videos", "12"])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{n}.parquet" for n in NAMES)
    lines = [ln for ln in res.output.splitlines() if ln.startswith("wrote ")]
    assert len(lines) == 3 and all("simulated accuracy" in ln for ln in lines)
    want = make_kitchens(seed=3, videos=12)
    for n, t in want.items():
        back = read_table(out / f"{n}.parquet")
        assert back.card == t.card.replace(content_digest=content_digest(t))
        np.testing.assert_array_equal(back.labels, t.labels)
        np.testing.assert_array_equal(back.features, t.features)


def test_cli_bad_parameter_writes_nothing(tmp_path):
    from study.cli import app

    out = tmp_path / "synth"
    res = CliRunner().invoke(app, ["synth", "--out", str(out), "--kitchens", "9"])
    assert res.exit_code == 2
    assert "kitchens must be" in res.output
    assert not out.exists()


@pytest.mark.slow
def test_an_lstm_beats_its_input_quickly():
    """The point of the generator: a small causal LSTM over the simulated softmax beats the
    softmax's own argmax on held-out people within a few hundred iterations. (Measured on
    this seed: 27.1 % vs the input's 28.8 % after 300 iterations, 45.0 % after 600; the test
    once asked for 300 and had not been run since the kitchens changed.)"""
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(0)
    t = make_kitchens(seed=0, kitchens=1)["synth_breakfast"]
    train, test = t.split_indices(1)
    x_all = torch.from_numpy(t.features)
    y_all = torch.from_numpy(t.labels.astype(np.int64))
    c, window = t.card.num_classes, 300
    lstm, head = torch.nn.LSTM(c, 128, batch_first=True), torch.nn.Linear(128, c)
    opt = torch.optim.Adam([*lstm.parameters(), *head.parameters()], lr=5e-3)
    rng = np.random.default_rng(0)
    for _ in range(600):
        xs, ys = [], []
        for v in rng.choice(train, 32):
            a, b = int(t.offsets[v]), int(t.offsets[v + 1])
            end = int(rng.integers(a + 1, b + 1))
            start = max(a, end - window)
            pad = window - (end - start)
            xs.append(torch.cat([torch.zeros(pad, c), x_all[start:end]]))
            ys.append(torch.cat([torch.full((pad,), -100), y_all[start:end]]))
        logits = head(lstm(torch.stack(xs))[0])
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, c), torch.stack(ys).reshape(-1), ignore_index=-100
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
    hit = base = total = 0
    with torch.no_grad():
        for v in test:
            a, b = int(t.offsets[v]), int(t.offsets[v + 1])
            pred = head(lstm(x_all[a:b][None])[0])[0].argmax(dim=1)
            hit += int((pred == y_all[a:b]).sum())
            base += int((x_all[a:b].argmax(dim=1) == y_all[a:b]).sum())
            total += b - a
    assert hit / total > base / total + 0.03, (hit / total, base / total)
