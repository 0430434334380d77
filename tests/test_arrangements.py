"""Label arrangements: one property contract over every registered kind, plus the worked
examples of each kind's rule and the validation errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from data_prep.table import DatasetCard
from trainables.arrangements import (
    ARRANGEMENTS,
    Arrangement,
    LabelSpace,
    make_arrangement,
    map_features,
    map_labels,
    restrict,
)

torch.set_num_threads(1)

PROPS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def space(name: str, n: int, background: int | None = 0) -> LabelSpace:
    return LabelSpace(name, tuple(f"{name}{i}" for i in range(n)), background)


@st.composite
def spaces(draw, name: str, max_size: int = 30) -> LabelSpace:
    n = draw(st.integers(1, max_size))
    bg = draw(st.one_of(st.none(), st.integers(0, n - 1)))
    return space(name, n, bg)


def all_maps(a: Arrangement) -> list[tuple[str, np.ndarray]]:
    return [("target", a.target_map)] + [(f"source[{r}]", m) for r, m in enumerate(a.source_maps)]


def number_of_maps(small: LabelSpace, large: LabelSpace, pinned: bool) -> int:
    """How many maps a seeded shared kind can draw for the smaller space: eq. 3 permutes
    the first n_s entries; the pinned deviations inject (background fixed) anywhere."""
    if not pinned:
        return math.factorial(small.size)
    paired = small.background is not None and large.background is not None
    return math.perm(large.size - paired, small.size - paired)


# -- the contract: every registered kind ----------------------------------------------------


@pytest.mark.parametrize("kind", sorted(ARRANGEMENTS))
@PROPS
@given(
    target=spaces("t"),
    source=spaces("s"),
    seed=st.integers(0, 2**32 - 1),
    k=st.integers(1, 4),
    data=st.data(),
)
def test_contract(kind, target, source, seed, k, data):
    impl = ARRANGEMENTS[kind]
    if not impl.needs_source:
        source = None
    a = make_arrangement(kind, target, source, seed=seed, k=k)
    nt, ns = target.size, (source.size if source else 0)

    # dimensions
    assert a.kind == kind and a.target_map.shape == (nt,)
    if source is None:
        assert a.dim == nt and a.source_maps.shape == (0, 0)
    else:
        assert a.source_maps.shape == (k if impl.multi else 1, ns)
        assert a.dim == (max(nt, ns) if impl.shared else nt + ns)
    assert np.array_equal(a.target_indices, a.target_map)

    # every map is injective into [0, dim): a bijection onto its image
    for what, mp in all_maps(a):
        assert mp.dtype == np.int64, what
        assert mp.min() >= 0 and mp.max() < a.dim, what
        assert np.unique(mp).size == mp.size, what

    if source is not None and not impl.shared:
        # disjoint blocks never mix
        for mp in a.source_maps:
            assert not set(a.target_map.tolist()) & set(mp.tolist())
    if source is not None and impl.shared:
        # the larger space is unchanged (ties: the target); for multi maps, map 0
        if nt >= ns:
            assert np.array_equal(a.target_map, np.arange(nt))
        else:
            assert np.array_equal(a.source_maps[0], np.arange(ns))
            if not impl.multi:
                assert all(np.array_equal(mp, np.arange(ns)) for mp in a.source_maps)
        # pinned deviations: background onto background in every map when both have one
        if impl.pins_background and target.background is not None and (
            source.background is not None
        ):
            joint_bg = a.target_map[target.background]
            assert (a.source_maps[:, source.background] == joint_bg).all()
        # the paper's equations 2 and 3: the smaller space lands on the first n_s entries
        if impl.paper:
            n_small = min(nt, ns)
            small_maps = [a.target_map] if nt < ns else list(a.source_maps)
            for mp in small_maps:
                assert sorted(mp.tolist()) == list(range(n_small))
            if nt < ns:  # the source's labels beyond the target's l stay where they are
                assert (a.source_maps[:, nt:] == np.arange(nt, ns)).all()

    # mapping back and forth is lossless, numpy and torch alike
    for what, mp in all_maps(a):
        n = mp.size
        y = np.array(data.draw(st.lists(st.integers(-1, n - 1), min_size=1, max_size=20)))
        joint = map_labels(y, mp)
        inverse = np.full(a.dim, -7)
        inverse[mp] = np.arange(n)
        back = np.where(joint < 0, joint, inverse[np.maximum(joint, 0)])
        assert np.array_equal(back, y), what
        assert np.array_equal(map_labels(torch.as_tensor(y), torch.tensor(mp)).numpy(), joint)

        logits = np.random.default_rng(n).normal(size=(2, 3, n))
        soft = (np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)).astype(np.float32)
        f = map_features(soft, mp, a.dim)
        assert f.shape == (2, 3, a.dim) and f.dtype == np.float32
        assert np.array_equal(restrict(f, mp), soft), what
        others = np.setdiff1d(np.arange(a.dim), mp)
        assert not f[..., others].any(), what
        ft = map_features(torch.as_tensor(soft), mp, a.dim)
        assert np.array_equal(ft.numpy(), f)
        assert np.array_equal(restrict(ft, mp).numpy(), soft)

    # deterministic for a seed; JSON round trip; stable signature
    again = make_arrangement(kind, target, source, seed=seed, k=k)
    assert again == a and again.signature() == a.signature() and hash(again) == hash(a)
    restored = Arrangement.from_dict(json.loads(json.dumps(a.to_dict())))
    assert restored == a and restored.signature() == a.signature()

    # the seed matters exactly for seeded kinds
    other_seeds = [make_arrangement(kind, target, source, seed=s, k=k) for s in range(8)]
    maps = {(o.target_map.tobytes(), o.source_maps.tobytes()) for o in other_seeds}
    if not impl.seeded:
        assert len(maps) == 1 and len({o.signature() for o in other_seeds}) == 1
    else:
        small, large = (source, target) if nt >= ns else (target, source)
        if number_of_maps(small, large, impl.pins_background) >= 24:  # chance <= 24**-7
            assert len(maps) > 1


# -- each kind's rule, worked out by hand -------------------------------------------------


def test_identity():
    a = make_arrangement("identity", space("t", 4))
    assert a.dim == 4 and a.target_map.tolist() == [0, 1, 2, 3] and a.k == 0


def test_merged_is_equation_2():
    # eq. 2: label i of the smaller space is label i of the larger; the larger unchanged
    a = make_arrangement("merged", space("t", 6), space("s", 4))
    assert a.dim == 6 and a.target_map.tolist() == list(range(6))
    assert a.source_maps.tolist() == [[0, 1, 2, 3]]
    # target smaller: the source stays, the target goes to the first indices
    b = make_arrangement("merged", space("t", 3), space("s", 5))
    assert b.dim == 5 and b.target_map.tolist() == [0, 1, 2]
    assert b.source_maps.tolist() == [[0, 1, 2, 3, 4]]
    # eq. 2 as written pins nothing: backgrounds elsewhere than 0 are not matched up
    c = make_arrangement("merged", space("t", 5, background=2), space("s", 3, background=0))
    assert c.source_maps.tolist() == [[0, 1, 2]]
    # and it maps the softmax by zero-padding the smaller vector at the end
    x = np.array([[0.5, 0.3, 0.2]], dtype=np.float32)
    assert map_features(x, c.source_maps[0], c.dim).tolist() == [
        pytest.approx([0.5, 0.3, 0.2, 0, 0])
    ]


def test_merged_pinned_background_elsewhere():
    # deviation: target bg at 2, source bg at 0: source 0 -> 2, then source 1, 2 -> 0, 1
    a = make_arrangement(
        "merged_pinned", space("t", 5, background=2), space("s", 3, background=0)
    )
    assert a.source_maps.tolist() == [[2, 0, 1]]
    # tie l == m: the target stays; source bg (3) -> target bg (1); the rest in order
    b = make_arrangement(
        "merged_pinned", space("t", 4, background=1), space("s", 4, background=3)
    )
    assert b.target_map.tolist() == [0, 1, 2, 3]
    assert b.source_maps.tolist() == [[0, 2, 3, 1]]
    # only one side has a background: no correspondence, labels in order (= eq. 2)
    c = make_arrangement(
        "merged_pinned", space("t", 5, background=0), space("s", 3, background=None)
    )
    assert c.source_maps.tolist() == [[0, 1, 2]]
    # backgrounds both at 0 (Breakfast, 50 Salads, MPII): the same maps as eq. 2
    for t, src in [(space("t", 48), space("s", 19)), (space("t", 19), space("s", 52))]:
        pinned, eq2 = make_arrangement("merged_pinned", t, src), make_arrangement("merged", t, src)
        assert np.array_equal(pinned.target_map, eq2.target_map)
        assert np.array_equal(pinned.source_maps, eq2.source_maps)


def test_random_is_equation_3_source_smaller():
    # eq. 3: the smaller space's l labels -> a random permutation of the first l entries
    t, s = space("t", 48, background=0), space("s", 19, background=5)
    maps = set()
    for seed in range(6):
        a = make_arrangement("random", t, s, seed=seed)
        assert a.dim == 48 and a.target_map.tolist() == list(range(48))
        src = a.source_maps[0]
        assert sorted(src.tolist()) == list(range(19))  # image = {0, ..., 18}
        maps.add(src.tobytes())
    assert len(maps) == 6  # random, and no background pinned: bg 5 goes anywhere in 0..18
    bg_lands = {int(make_arrangement("random", t, s, seed=x).source_maps[0][5]) for x in range(40)}
    assert len(bg_lands) > 5


def test_random_is_equation_3_target_smaller():
    t, s = space("t", 4, background=0), space("s", 10, background=3)
    a = make_arrangement("random", t, s, seed=1)
    assert a.dim == 10
    assert sorted(a.target_map.tolist()) == [0, 1, 2, 3]
    assert a.source_maps.tolist() == [list(range(10))]
    # evaluation: the target's columns are the first 4 joint entries (in its label order)
    logits = np.arange(10.0)[None]
    assert restrict(logits, a.target_indices).tolist() == [a.target_map.tolist()]


def test_random_pinned_keeps_background_and_uses_any_slot():
    t, s = space("t", 48, background=0), space("s", 19, background=5)
    a = make_arrangement("random_pinned", t, s, seed=3)
    src = a.source_maps[0]
    assert src[5] == 0
    assert 0 not in np.delete(src, 5)
    assert a.target_map.tolist() == list(range(48))
    # an injection into ALL of the larger space: some label lands beyond the first 19
    reach = max(
        int(make_arrangement("random_pinned", t, s, seed=x).source_maps[0].max())
        for x in range(5)
    )
    assert reach >= 19


@pytest.mark.parametrize("kind", ["multiple_random", "multiple_random_pinned"])
def test_multiple_random_k1_is_random_and_k_maps_vary(kind):
    single = kind.replace("multiple_random", "random")
    for t, s in [(space("t", 48), space("s", 19)), (space("t", 19), space("s", 48))]:
        r = make_arrangement(single, t, s, seed=11)
        m1 = make_arrangement(kind, t, s, seed=11, k=1)
        assert np.array_equal(r.target_map, m1.target_map)
        assert np.array_equal(r.source_maps, m1.source_maps)
        m3 = make_arrangement(kind, t, s, seed=11, k=3)
        assert m3.k == 3 and np.array_equal(m3.source_maps[0], r.source_maps[0])
        assert np.array_equal(m3.target_map, r.target_map)  # target map fixed
        assert len({row.tobytes() for row in m3.source_maps}) == 3


def test_multiple_random_is_equation_3_per_map():
    # source smaller: k independent permutations of the target's first m entries
    a = make_arrangement("multiple_random", space("t", 8), space("s", 3), seed=2, k=4)
    assert a.target_map.tolist() == list(range(8))
    for row in a.source_maps:
        assert sorted(row.tolist()) == [0, 1, 2]
    # target smaller: the target's map p_0 is fixed; map r realises target i <-> source
    # p_r(i), a permutation of the source's first l labels; source labels >= l stay put
    t, s = space("t", 4, background=0), space("s", 10, background=3)
    b = make_arrangement("multiple_random", t, s, seed=0, k=6)
    assert b.dim == 10 and sorted(b.target_map.tolist()) == [0, 1, 2, 3]
    assert b.source_maps[0].tolist() == list(range(10))
    partners = set()
    for row in b.source_maps:
        assert sorted(row[:4].tolist()) == [0, 1, 2, 3] and row[4:].tolist() == list(range(4, 10))
        # which source label shares target label i's joint index
        inverse = np.argsort(row)
        partner = inverse[b.target_map]
        assert sorted(partner.tolist()) == [0, 1, 2, 3]
        partners.add(partner.tobytes())
    assert len(partners) > 1  # the correspondence varies between maps


def test_multiple_random_pinned_target_smaller_permutes_source_space():
    t, s = space("t", 4, background=0), space("s", 10, background=3)
    a = make_arrangement("multiple_random_pinned", t, s, seed=0, k=5)
    assert a.dim == 10 and a.target_map[0] == 3
    assert a.source_maps[0].tolist() == list(range(10))
    for row in a.source_maps:
        assert sorted(row.tolist()) == list(range(10)) and row[3] == 3


def test_registry_marks_the_papers_kinds():
    paper = sorted(n for n, k in ARRANGEMENTS.items() if k.paper)
    assert paper == ["concat", "identity", "merged", "multiple_random", "random"]
    for name, kind in ARRANGEMENTS.items():
        assert kind.pins_background == name.endswith("_pinned")


def test_concat_is_equation_4():
    a = make_arrangement("concat", space("t", 3), space("s", 4))
    assert a.dim == 7
    assert a.target_map.tolist() == [0, 1, 2]
    assert a.source_maps.tolist() == [[3, 4, 5, 6]]
    x = np.array([[0.2, 0.5, 0.3]], dtype=np.float32)
    assert map_features(x, a.target_map, a.dim).tolist() == [
        pytest.approx([0.2, 0.5, 0.3, 0, 0, 0, 0])
    ]
    z = np.array([[0.1, 0.2, 0.3, 0.4]], dtype=np.float32)
    assert map_features(z, a.source_maps[0], a.dim).tolist() == [
        pytest.approx([0, 0, 0, 0.1, 0.2, 0.3, 0.4])
    ]
    # nothing identified, whatever the backgrounds
    b = make_arrangement("concat", space("t", 3, background=1), space("s", 4, background=2))
    assert b.target_map.tolist() == [0, 1, 2] and b.source_maps.tolist() == [[3, 4, 5, 6]]


def test_evaluation_restricts_to_target_classes():
    # a joint-space output whose overall argmax is a source-only column still predicts a
    # target class: argmax over the target's image only, in target label order
    a = make_arrangement("random", space("t", 3), space("s", 6), seed=1)
    logits = np.full((1, a.dim), -5.0)
    source_only = np.setdiff1d(np.arange(a.dim), a.target_map)[0]
    logits[0, source_only] = 10.0
    logits[0, a.target_map[2]] = 1.0
    assert restrict(logits, a.target_indices).argmax(-1).tolist() == [2]
    t = restrict(torch.as_tensor(logits), a.target_indices)
    assert t.argmax(-1).tolist() == [2]


def test_signature_and_repr():
    t, s = space("t", 48), space("s", 19)
    a = make_arrangement("multiple_random", t, s, seed=4, k=3)
    sig = a.signature()
    assert sig.startswith("multiple_random-48+19-d48-s4-k3-")
    assert make_arrangement("multiple_random", t, s, seed=5, k=3).signature() != sig
    assert make_arrangement("merged", t, s, seed=1).signature().startswith("merged-48+19-d48-")
    renamed = LabelSpace("t", tuple(f"x{i}" for i in range(48)), 0)
    assert make_arrangement("merged", renamed, s).signature() != make_arrangement(
        "merged", t, s
    ).signature()
    assert "multiple_random" in repr(a) and "k=3" in repr(a)


def test_label_space_from_card_and_round_trip():
    card = DatasetCard(
        name="toy", fps=15.0, classes=("a", "SIL", "b"), background="SIL",
        source_format="test", converter_version="0",
    )
    ls = LabelSpace.from_card(card)
    assert ls == LabelSpace("toy", ("a", "SIL", "b"), 1) and ls.size == 3
    assert LabelSpace.from_dict(json.loads(json.dumps(ls.to_dict()))) == ls
    nobg = LabelSpace.from_card(card.replace(background=None))
    assert nobg.background is None


# -- map functions ---------------------------------------------------------------------


def test_map_labels_types_padding_and_range():
    mp = np.array([4, 0, 2])
    y16 = np.array([0, 1, 2, 2, -100], dtype=np.int16)
    assert map_labels(y16, mp).tolist() == [4, 0, 2, 2, -100]
    yt = torch.tensor([[0, 2], [-100, 1]], dtype=torch.int16)
    out = map_labels(yt, mp)
    assert out.dtype == torch.int64 and out.tolist() == [[4, 2], [-100, 0]]
    with pytest.raises(IndexError):
        map_labels(np.array([3]), mp)
    with pytest.raises(IndexError):
        map_labels(torch.tensor([3]), mp)
    with pytest.raises(TypeError):
        map_labels(np.array([0.0]), mp)
    with pytest.raises(TypeError):
        map_labels(torch.tensor([0.0]), mp)


def test_map_features_checks_and_autograd():
    with pytest.raises(ValueError, match="3 columns"):
        map_features(np.zeros((2, 3)), np.array([0, 1]), 4)
    with pytest.raises(ValueError, match="outside"):
        map_features(np.zeros((2, 2)), np.array([0, 4]), 4)
    with pytest.raises(ValueError, match="3 columns"):
        map_features(torch.zeros(2, 3), torch.tensor([0, 1]), 4)
    x = torch.rand(2, 3, requires_grad=True)
    out = map_features(x, np.array([3, 0, 1]), 5)
    out.sum().backward()
    assert torch.equal(x.grad, torch.ones(2, 3))


# -- validation -------------------------------------------------------------------------


def test_make_arrangement_validation():
    t, s = space("t", 4), space("s", 3)
    with pytest.raises(ValueError, match="unknown arrangement 'shuffled'.*concat.*merged"):
        make_arrangement("shuffled", t, s)
    with pytest.raises(ValueError, match="needs a source"):
        make_arrangement("concat", t)
    with pytest.raises(ValueError, match="takes no source"):
        make_arrangement("identity", t, s)
    for bad_k in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="k must be"):
            make_arrangement("multiple_random", t, s, k=bad_k)
    for bad_seed in (-1, 0.5, None):
        with pytest.raises(ValueError, match="seed must be"):
            make_arrangement("random", t, s, seed=bad_seed)


def test_label_space_validation():
    with pytest.raises(ValueError, match="no classes"):
        LabelSpace("x", (), None)
    with pytest.raises(ValueError, match="duplicate class 'a'"):
        LabelSpace("x", ("a", "b", "a"), None)
    with pytest.raises(ValueError, match="background 3"):
        LabelSpace("x", ("a", "b"), 3)
    with pytest.raises(ValueError, match="unknown key"):
        LabelSpace.from_dict({"name": "x", "classes": ["a"], "background": None, "extra": 1})


def test_from_dict_rejects_broken_arrangements():
    good = make_arrangement("random", space("t", 5), space("s", 3), seed=2).to_dict()

    def broken(**changes):
        return Arrangement.from_dict({**good, **changes})

    with pytest.raises(ValueError, match="unknown key.*bogus"):
        broken(bogus=1)
    with pytest.raises(ValueError, match="missing key.*seed"):
        Arrangement.from_dict({k: v for k, v in good.items() if k != "seed"})
    with pytest.raises(ValueError, match="not injective"):
        broken(source_maps=[[1, 1, 2]])
    with pytest.raises(ValueError, match="outside"):
        broken(target_map=[0, 1, 2, 3, 5])
    with pytest.raises(ValueError, match="shape"):
        broken(target_map=[0, 1, 2])
    with pytest.raises(ValueError, match="integers"):
        broken(target_map=[0.0, 1, 2, 3, 4])
    with pytest.raises(ValueError, match="one source map"):
        broken(source_maps=[[0, 1, 2], [1, 2, 3]])
    with pytest.raises(ValueError, match="unknown arrangement"):
        broken(kind="nope")
    with pytest.raises(ValueError, match="newer"):
        broken(format_version=99)
    with pytest.raises(ValueError, match="takes no source"):
        broken(kind="identity")


def test_arrangement_is_immutable():
    a = make_arrangement("merged", space("t", 5), space("s", 3))
    with pytest.raises(ValueError):
        a.target_map[0] = 3
    with pytest.raises(AttributeError):
        a.dim = 9  # type: ignore[misc]
