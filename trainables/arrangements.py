"""Label arrangements: how a target and a source label space share one joint label space.

Paper §4.3 (Perrett & Damen, *Recurrent Assistance*): to train one LSTM on two datasets L
(the target, ``l`` classes) and M (the source, ``m`` classes), both the input softmax
vectors and the frame labels of each dataset are placed into a joint space of ``dim``
classes through an injective index map. An :class:`Arrangement` holds those maps:

* ``target_map`` (``l``,): target label ``i`` -> joint index ``target_map[i]``;
* ``source_maps`` (``k``, ``m``): source label ``j`` -> ``source_maps[r, j]``; ``k`` = 1
  except for the ``multiple_random`` kinds, whose ``k`` maps are drawn per source
  subsequence as augmentation; shape (0, 0) without a source.

Kinds (registry :data:`ARRANGEMENTS`; rules stated once here and in
``docs/arrangements.md``). The paper's equations, exactly (``paper = True``); ``s`` is the
smaller space (``n_s`` labels), the larger one stays unchanged (identity; on a tie
``l == m`` the target is the one kept):

``identity``  no source; ``dim = l``; ``target_map = arange(l)``.
``merged``    eq. 2: ``dim = max(l, m)``; label ``i`` of the smaller space -> ``i``.
``random``    eq. 3: ``dim = max(l, m)``; the smaller space's labels -> a seeded random
              permutation of the FIRST ``n_s`` indices of the larger space (nothing pinned:
              background is a label like the others).
``multiple_random``  ``k`` eq. 3 maps (default 3). Source smaller (or equal): the target is
              unchanged and each ``source_maps[r]`` is an independent eq. 3 permutation
              of ``[0, m)``. Target smaller: ``dim = m``, the target gets one fixed eq. 3
              map ``p_0`` (the one ``random`` draws) and arrangement ``r`` (target ``i`` <->
              source ``p_r(i)``) is expressed through the source: ``source_maps[r][p_r(i)]
              = p_0(i)``, source labels ``>= l`` unchanged; ``source_maps[0]`` is the
              identity. So every source subsequence sees a different correspondence while
              the target's map (and evaluation) stays fixed. ``k = 1`` equals ``random``
              for the same seed; the ``k`` maps need not be distinct.
``concat``    eq. 4: ``dim = l + m``; target at ``[0, l)``, source at ``[l, l + m)``;
              nothing is identified, each dataset keeps its own background.

Documented deviations (``paper = False``; kitchen-study's behaviour before issue 10),
selected by name: when BOTH spaces have a background class, background maps onto
background in every map and no other label is placed on it (when only one side has
one, it is an ordinary class):

``merged_pinned``   the other labels in index order.
``random_pinned``   the other labels onto a seeded random choice among ALL the larger
                    space's other indices (not only the first ``n_s``).
``multiple_random_pinned``  ``k`` such maps; target smaller: the target gets the
                    ``random_pinned`` map, ``source_maps[0]`` is the identity and the others
                    random permutations of all the source's indices (background kept).

Evaluation under an arrangement predicts among the TARGET's classes only:
``restrict(joint_logits, arrangement.target_indices).argmax(-1)`` gives target labels.

The map functions (:func:`map_labels`, :func:`map_features`, :func:`restrict`) take numpy
arrays or torch tensors and return the same kind. Maps are validated when an
:class:`Arrangement` is built; pass a device tensor of a map to avoid a host copy per call.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from data_prep.table import DatasetCard

if TYPE_CHECKING:  # torch only where tensors are passed in: the registry is torch-free
    import torch

__all__ = [
    "ARRANGEMENTS",
    "Arrangement",
    "ArrangementKind",
    "LabelSpace",
    "make_arrangement",
    "map_features",
    "map_labels",
    "restrict",
]

FORMAT_VERSION = 1


def _is_int(x: Any) -> bool:
    return isinstance(x, int | np.integer) and not isinstance(x, bool | np.bool_)


def _check_keys(d: Mapping[str, Any], required: set[str], optional: set[str], what: str) -> None:
    if not isinstance(d, Mapping):
        raise ValueError(f"{what} must be a mapping, got {type(d).__name__}")
    unknown = sorted(set(d) - required - optional)
    if unknown:
        raise ValueError(f"unknown key(s) in {what}: {', '.join(unknown)}")
    missing = sorted(required - set(d))
    if missing:
        raise ValueError(f"missing key(s) in {what}: {', '.join(missing)}")


# -- label spaces --------------------------------------------------------------------------


@dataclass(frozen=True)
class LabelSpace:
    """A dataset's label index space: class names in index order and the background index."""

    name: str
    classes: tuple[str, ...]
    background: int | None

    def __post_init__(self) -> None:
        object.__setattr__(self, "classes", tuple(self.classes))
        if not self.classes:
            raise ValueError(f"label space {self.name!r} has no classes")
        if not all(isinstance(c, str) for c in self.classes):
            raise ValueError(f"label space {self.name!r}: class names must be strings")
        if len(set(self.classes)) != len(self.classes):
            dup = next(c for c in self.classes if self.classes.count(c) > 1)
            raise ValueError(f"label space {self.name!r}: duplicate class {dup!r}")
        if self.background is not None:
            if not _is_int(self.background) or not 0 <= self.background < len(self.classes):
                raise ValueError(
                    f"label space {self.name!r}: background {self.background!r} is not an "
                    f"index in 0..{len(self.classes) - 1}"
                )
            object.__setattr__(self, "background", int(self.background))

    @classmethod
    def from_card(cls, card: DatasetCard) -> LabelSpace:
        return cls(card.name, tuple(card.classes), card.background_index)

    @property
    def size(self) -> int:
        return len(self.classes)

    def same_vocabulary(self, other: LabelSpace | None) -> bool:
        """Same classes in the same order and the same background; the dataset name may
        differ (e.g. the same dataset prepared with other features)."""
        return (other is not None and self.classes == tuple(other.classes)
                and self.background == other.background)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "classes": list(self.classes), "background": self.background}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LabelSpace:
        _check_keys(d, {"name", "classes", "background"}, set(), "label space")
        return cls(str(d["name"]), tuple(d["classes"]), d["background"])


# -- arrangement kinds ---------------------------------------------------------------------


class ArrangementKind(Protocol):
    """One registered arrangement. ``build`` returns ``(dim, target_map, source_maps)``.

    The flags describe the kind to callers and to the contract test:
    ``needs_source`` (a source space is required, else forbidden), ``seeded`` (the maps
    depend on the seed), ``multi`` (``k`` source maps instead of one), ``shared`` (source
    labels are identified with target labels in ``max(l, m)`` dims; otherwise the two
    blocks are disjoint), ``paper`` (the paper's equation as written; False for the
    documented deviations), ``pins_background`` (background onto background when both
    spaces have one).
    """

    name: str
    needs_source: bool
    seeded: bool
    multi: bool
    shared: bool
    paper: bool
    pins_background: bool

    def build(
        self, target: LabelSpace, source: LabelSpace | None, rng: np.random.Generator, k: int
    ) -> tuple[int, np.ndarray, np.ndarray]: ...


def _paired(a: LabelSpace, b: LabelSpace) -> bool:
    """Backgrounds correspond only when both spaces have one."""
    return a.background is not None and b.background is not None


def _slots(
    small: LabelSpace, large: LabelSpace, paired: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Start of a map of ``small`` into ``large``: the background fixed (when paired), and the
    small's remaining labels and the large's remaining indices, both in index order."""
    out = np.full(small.size, -1, dtype=np.int64)
    free_small = np.arange(small.size, dtype=np.int64)
    free_large = np.arange(large.size, dtype=np.int64)
    if paired:
        out[small.background] = large.background
        free_small = free_small[free_small != small.background]
        free_large = free_large[free_large != large.background]
    return out, free_small, free_large


def _in_order(small: LabelSpace, large: LabelSpace, paired: bool) -> np.ndarray:
    out, free_small, free_large = _slots(small, large, paired)
    out[free_small] = free_large[: free_small.size]
    return out


def _at_random(
    small: LabelSpace, large: LabelSpace, paired: bool, rng: np.random.Generator
) -> np.ndarray:
    """The pinned variants' map: background onto background (when paired), the other
    labels onto a random choice among ALL the large space's other indices."""
    out, free_small, free_large = _slots(small, large, paired)
    out[free_small] = rng.permutation(free_large)[: free_small.size]
    return out


def _arange(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.int64)


def _first_entries(small: LabelSpace, rng: np.random.Generator) -> np.ndarray:
    """Equation 3: a random permutation of the small space's ``l`` labels onto the FIRST
    ``l`` entries of the larger space (nothing pinned)."""
    return rng.permutation(small.size).astype(np.int64)


@dataclass(frozen=True)
class _Kind:
    """A registered kind's flags (documented on :class:`ArrangementKind`); each subclass
    adds the ``build`` of one equation. The defaults are those of a shared two-dataset kind
    of the paper; a pinned deviation is the same class registered with ``paper=False,
    pins_background=True``, so its maps come from the same code as the paper's."""

    name: str
    needs_source: bool = True
    seeded: bool = False
    multi: bool = False
    shared: bool = True
    paper: bool = True
    pins_background: bool = False


class _Identity(_Kind):
    def build(self, target, source, rng, k):
        return target.size, _arange(target.size), np.zeros((0, 0), dtype=np.int64)


class _Merged(_Kind):
    """Equation 2: label ``i`` of the smaller space is label ``i`` of the larger. Pinned:
    background onto background first, the other labels in index order."""

    def build(self, target, source, rng, k):
        paired = self.pins_background and _paired(target, source)
        if target.size >= source.size:  # ties: the target stays unchanged
            return target.size, _arange(target.size), _in_order(source, target, paired)[None]
        return source.size, _in_order(target, source, paired), _arange(source.size)[None]


class _Random(_Kind):
    """Equation 3, ``k`` times for a ``multi`` kind (else once: ``random`` draws what
    ``multiple_random`` draws first for the same seed): each map sends the smaller space's
    labels to a random permutation of the larger space's first ``l`` entries. Pinned:
    background onto background, the other labels onto random indices anywhere in the
    larger space."""

    def _draw(self, small: LabelSpace, large: LabelSpace, rng: np.random.Generator
              ) -> np.ndarray:
        """One random map of ``small`` into ``large``."""
        if self.pins_background:
            return _at_random(small, large, _paired(small, large), rng)
        return _first_entries(small, rng)

    def build(self, target, source, rng, k):
        k = k if self.multi else 1
        if target.size >= source.size:
            maps = [self._draw(source, target, rng) for _ in range(k)]
            return target.size, _arange(target.size), np.stack(maps)
        # Target smaller: its map is drawn once and stays fixed, so evaluation is well
        # defined; the augmentation varies the correspondence by moving the source instead.
        target_map = self._draw(target, source, rng)
        maps = [_arange(source.size)]
        for _ in range(k - 1):
            if self.pins_background:
                # a random permutation of the source's own indices (shared background kept)
                maps.append(_at_random(source, source, _paired(target, source), rng))
            else:
                # arrangement r (target label i <-> source label p_r(i), p_r a permutation
                # of the first l source labels): source label p_r(i) goes where target i
                # sits, p_0(i); so map r permutes the source's first l labels among
                # themselves and labels >= l stay put
                m = _arange(source.size)
                m[_first_entries(target, rng)] = target_map
                maps.append(m)
        return source.size, target_map, np.stack(maps)


class _Concat(_Kind):
    """Equation 4: target at ``[0, l)``, source at ``[l, l + m)``."""

    def build(self, target, source, rng, k):
        nt, ns = target.size, source.size
        return nt + ns, _arange(nt), (nt + _arange(ns))[None]


ARRANGEMENTS: dict[str, ArrangementKind] = {
    kind.name: kind
    for kind in (
        _Identity("identity", needs_source=False, shared=False),
        _Merged("merged"),
        _Random("random", seeded=True),
        _Random("multiple_random", seeded=True, multi=True),
        _Concat("concat", shared=False),
        _Merged("merged_pinned", paper=False, pins_background=True),
        _Random("random_pinned", seeded=True, paper=False, pins_background=True),
        _Random("multiple_random_pinned", seeded=True, multi=True, paper=False,
                pins_background=True),
    )
}


def _kind(name: str) -> ArrangementKind:
    try:
        return ARRANGEMENTS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown arrangement {name!r}; known: {', '.join(sorted(ARRANGEMENTS))}"
        ) from None


# -- arrangements --------------------------------------------------------------------------


def _int_array(value: Any, what: str) -> np.ndarray:
    arr = np.array(value)  # a copy: the arrangement owns (and freezes) its maps
    if arr.size == 0:
        arr = arr.astype(np.int64)
    if arr.dtype.kind not in "iu":
        raise ValueError(f"{what} must hold integers, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    arr.setflags(write=False)
    return arr


def _check_map(mapping: np.ndarray, n: int, dim: int, what: str) -> None:
    if mapping.shape != (n,):
        raise ValueError(f"{what} has shape {mapping.shape}, expected ({n},)")
    if n and (mapping.min() < 0 or mapping.max() >= dim):
        raise ValueError(f"{what} has an index outside 0..{dim - 1}")
    if np.unique(mapping).size != n:
        raise ValueError(f"{what} is not injective (two labels share a joint index)")


@dataclass(frozen=True, eq=False)
class Arrangement:
    """How target (and optional source) labels sit in one joint space (see module doc).

    Immutable; maps are read-only int64 arrays, validated on construction (in range,
    injective, shapes matching the label spaces). Equality compares every field.
    """

    kind: str
    target: LabelSpace
    source: LabelSpace | None
    dim: int
    target_map: np.ndarray
    source_maps: np.ndarray
    seed: int

    def __post_init__(self) -> None:
        impl = _kind(self.kind)
        if not _is_int(self.dim) or self.dim < 1:
            raise ValueError(f"arrangement dim must be a positive integer, got {self.dim!r}")
        if not _is_int(self.seed) or self.seed < 0:
            raise ValueError(f"arrangement seed must be an integer >= 0, got {self.seed!r}")
        object.__setattr__(self, "dim", int(self.dim))
        object.__setattr__(self, "seed", int(self.seed))
        if impl.needs_source != (self.source is not None):
            need = "needs a source label space" if impl.needs_source else "takes no source"
            raise ValueError(f"arrangement {self.kind!r} {need}")
        tmap = _int_array(self.target_map, "target_map")
        smaps = _int_array(self.source_maps, "source_maps")
        object.__setattr__(self, "target_map", tmap)
        object.__setattr__(self, "source_maps", smaps)
        _check_map(tmap, self.target.size, self.dim, "target_map")
        if self.source is None:
            if smaps.shape != (0, 0):
                raise ValueError(f"source_maps has shape {smaps.shape} without a source")
            return
        if smaps.ndim != 2 or smaps.shape[0] < 1:
            raise ValueError(f"source_maps must have shape (k >= 1, m), got {smaps.shape}")
        if not impl.multi and smaps.shape[0] != 1:
            raise ValueError(f"arrangement {self.kind!r} has one source map, got {smaps.shape[0]}")
        for r, row in enumerate(smaps):
            _check_map(row, self.source.size, self.dim, f"source_maps[{r}]")

    # -- queries -----------------------------------------------------------------------
    @property
    def target_indices(self) -> np.ndarray:
        """Joint indices of the target's classes, in target label order (== target_map).
        Evaluation takes the argmax over these columns only."""
        return self.target_map

    @property
    def k(self) -> int:
        """Number of source maps (0 without a source)."""
        return int(self.source_maps.shape[0])

    def same_joint_space(self, other: Arrangement) -> bool:
        """Same kind, dim, maps and label vocabularies (:meth:`LabelSpace.same_vocabulary`):
        a model trained in one runs in the other. Dataset names and the seed may differ
        (the maps already say what the seed drew)."""
        if (self.source is None) != (other.source is None):
            return False
        return (
            self.kind == other.kind
            and self.dim == other.dim
            and self.target.same_vocabulary(other.target)
            and (self.source is None or self.source.same_vocabulary(other.source))
            and np.array_equal(self.target_map, other.target_map)
            and np.array_equal(self.source_maps, other.source_maps)
        )

    def signature(self) -> str:
        """A stable short id: ``kind-l[+m]-d<dim>[-s<seed>][-k<k>]-<hash>``.

        The hash covers the kind, both label spaces and every map, so equal signatures mean
        the same joint space; the seed appears only for seeded kinds (for the others it
        does not change the maps).
        """
        impl = ARRANGEMENTS[self.kind]
        sizes = str(self.target.size) + (f"+{self.source.size}" if self.source else "")
        parts = [self.kind, sizes, f"d{self.dim}"]
        if impl.seeded:
            parts.append(f"s{self.seed}")
        if impl.multi:
            parts.append(f"k{self.k}")
        content = self.to_dict()
        del content["seed"]
        digest = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()
        return "-".join([*parts, digest[:10]])

    # -- serialisation -----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (for checkpoints); :meth:`from_dict` restores it exactly."""
        return {
            "format_version": FORMAT_VERSION,
            "kind": self.kind,
            "target": self.target.to_dict(),
            "source": None if self.source is None else self.source.to_dict(),
            "dim": self.dim,
            "target_map": self.target_map.tolist(),
            "source_maps": self.source_maps.tolist(),
            "seed": self.seed,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Arrangement:
        """Rebuild from :meth:`to_dict` output. The stored maps are authoritative (they are
        not re-drawn), and are validated like any arrangement's."""
        keys = {"kind", "target", "source", "dim", "target_map", "source_maps", "seed"}
        _check_keys(d, keys, {"format_version"}, "arrangement")
        version = d.get("format_version", FORMAT_VERSION)
        if not _is_int(version) or version > FORMAT_VERSION:
            raise ValueError(
                f"arrangement format {version!r} is newer than this kitchen-study "
                f"understands ({FORMAT_VERSION})"
            )
        source = None if d["source"] is None else LabelSpace.from_dict(d["source"])
        smaps = d["source_maps"]
        if source is None and isinstance(smaps, list | tuple) and len(smaps) == 0:
            smaps = np.zeros((0, 0), dtype=np.int64)
        return cls(
            kind=d["kind"],
            target=LabelSpace.from_dict(d["target"]),
            source=source,
            dim=d["dim"],
            target_map=d["target_map"],
            source_maps=smaps,
            seed=d["seed"],
        )

    # -- value semantics (arrays make the dataclass defaults unusable) ------------------
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Arrangement):
            return NotImplemented
        return (
            (self.kind, self.target, self.source, self.dim, self.seed)
            == (other.kind, other.target, other.source, other.dim, other.seed)
            and np.array_equal(self.target_map, other.target_map)
            and np.array_equal(self.source_maps, other.source_maps)
        )

    def __hash__(self) -> int:
        return hash((self.kind, self.target, self.source, self.dim, self.seed,
                     self.target_map.tobytes(), self.source_maps.tobytes()))

    def __repr__(self) -> str:
        src = f"{self.source.name!r}({self.source.size})" if self.source else "None"
        return (
            f"Arrangement(kind={self.kind!r}, target={self.target.name!r}({self.target.size}), "
            f"source={src}, dim={self.dim}, k={self.k}, seed={self.seed})"
        )


def make_arrangement(
    kind: str,
    target: LabelSpace,
    source: LabelSpace | None = None,
    *,
    seed: int = 0,
    k: int = 3,
) -> Arrangement:
    """Build an arrangement of ``kind`` (see module doc); deterministic for a given seed.

    ``k`` (>= 1) is the number of source maps of ``multiple_random``; the other kinds have
    one map and ignore it. Raises ValueError for an unknown kind (listing the known ones),
    a missing or forbidden source, ``k < 1`` or a negative seed.
    """
    impl = _kind(kind)
    if impl.needs_source and source is None:
        raise ValueError(f"arrangement {kind!r} needs a source label space")
    if not impl.needs_source and source is not None:
        raise ValueError(
            f"arrangement {kind!r} takes no source (got {source.name!r}); with a source use "
            f"one of: {', '.join(sorted(n for n, a in ARRANGEMENTS.items() if a.needs_source))}"
        )
    if not _is_int(k) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    if not _is_int(seed) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    rng = np.random.default_rng(int(seed))
    dim, target_map, source_maps = impl.build(target, source, rng, int(k) if impl.multi else 1)
    return Arrangement(kind, target, source, dim, target_map, source_maps, int(seed))


# -- applying maps (numpy or torch) --------------------------------------------------------


def _numpy_map(mapping: Any, dim: int | None = None) -> np.ndarray:
    if _is_tensor(mapping):
        mapping = mapping.detach().cpu().numpy()
    m = np.asarray(mapping)
    if m.ndim != 1 or (m.size and m.dtype.kind not in "iu"):
        raise ValueError(f"a map must be a 1-D integer array, got shape {m.shape} {m.dtype}")
    m = m.astype(np.int64, copy=False)
    if dim is not None and m.size and (m.min() < 0 or m.max() >= dim):
        raise ValueError(f"map has an index outside 0..{dim - 1}")
    return m


def _is_tensor(x: Any) -> bool:
    # a tensor can only exist once torch is imported; checking sys.modules keeps this module
    # (and every config that validates arrangement names) importable without torch
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def _torch_map(mapping: Any, like: torch.Tensor) -> torch.Tensor:
    import torch

    if _is_tensor(mapping):
        return mapping.to(device=like.device, dtype=torch.long)
    # torch.tensor copies: an Arrangement's maps are read-only arrays, which
    # torch.as_tensor would wrap with a warning about non-writable memory
    return torch.tensor(_numpy_map(mapping), device=like.device)


def map_labels(labels: Any, mapping: Any) -> Any:
    """``mapping[labels]`` for a numpy array or torch tensor of integer labels (int64 out).

    Negative labels are "no label" markers (padding, ``ignore_index``) and pass through
    unchanged; a label >= len(mapping) is an IndexError (on CUDA a device-side assert).
    """
    if _is_tensor(labels):
        import torch

        if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
            raise TypeError(f"labels must be integers, got {labels.dtype}")
        lab = labels.long()
        out = _torch_map(mapping, lab)[lab.clamp(min=0)]
        return torch.where(lab < 0, lab, out)
    lab = np.asarray(labels)
    if lab.dtype.kind not in "iu":
        raise TypeError(f"labels must be integers, got {lab.dtype}")
    lab = lab.astype(np.int64, copy=False)
    out = _numpy_map(mapping)[np.maximum(lab, 0)]
    return np.where(lab < 0, lab, out)


def map_features(features: Any, mapping: Any, dim: int) -> Any:
    """Place per-class features ``(..., n)`` into the joint space: ``(..., dim)`` with column
    ``j`` at ``mapping[j]`` and zeros elsewhere (a softmax stays a distribution).

    ``mapping`` must be injective (an :class:`Arrangement`'s maps are); numpy maps are
    checked to lie in ``0..dim-1``.
    """
    n = features.shape[-1]
    if _is_tensor(features):
        idx = _torch_map(mapping, features)
        if idx.ndim != 1 or idx.shape[0] != n:
            raise ValueError(
                f"features have {n} columns but the map has shape {tuple(idx.shape)}"
            )
        out = features.new_zeros((*features.shape[:-1], dim))
        out[..., idx] = features
        return out
    feats = np.asarray(features)
    idx = _numpy_map(mapping, dim)
    if idx.shape[0] != n:
        raise ValueError(f"features have {n} columns but the map has {idx.shape[0]} entries")
    out = np.zeros((*feats.shape[:-1], dim), dtype=feats.dtype)
    out[..., idx] = feats
    return out


def restrict(logits: Any, indices: Any) -> Any:
    """``logits[..., indices]``: the target's columns only, in target label order, so that
    ``restrict(joint_logits, arrangement.target_indices).argmax(-1)`` is a target label."""
    if _is_tensor(logits):
        return logits.index_select(-1, _torch_map(indices, logits))
    return np.asarray(logits)[..., _numpy_map(indices, np.asarray(logits).shape[-1])]
