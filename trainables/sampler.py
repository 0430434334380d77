"""Vectorised subsequence sampling straight out of a frame table's contiguous arrays.

A training batch is ``batch_size`` subsequences of ``history`` frames. Each subsequence comes
from a training video chosen uniformly at random (every video equally likely, whatever its
length) at a start chosen uniformly among the positions where the whole window fits. A video
shorter than ``history`` starts at frame 0 and is padded at the end: the padded frames repeat
the video's last frame in ``x`` and carry the label :data:`IGNORE` (masked), so the loss
(cross-entropy with ``ignore_index=IGNORE``) averages over real frames only. Padding only at
the end keeps a causal LSTM's outputs on the real frames unaffected.

The frames of a batch are fetched with one gather per dataset: a ``(B, history)`` index into
the dataset's flat ``features`` and ``labels`` tensors, which live on the training device (on
a GPU the whole dataset is resident there, so a step never waits on the host). The random
numbers are drawn from a CPU :class:`torch.Generator` (a few hundred numbers per batch), so
the stream is the same on every device and its state goes into checkpoints.

Joint training mixes datasets in one batch: :func:`split_batch` turns ``joint_ratio`` into
exact per-dataset counts (5:3 at 128 → 80 target + 48 source). Each dataset's frames are
mapped into the run's joint label space with :func:`trainables.arrangements.map_features` /
:func:`~trainables.arrangements.map_labels`; a dataset with k maps (``multiple_random``)
uses a uniformly random one of them per subsequence.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .arrangements import map_features, map_labels

__all__ = ["IGNORE", "Batch", "SamplerPart", "SubsequenceSampler", "split_batch", "window_index"]

#: label of padded frames; ``torch.nn.functional.cross_entropy``'s default ``ignore_index``
IGNORE = -100


def split_batch(batch_size: int, ratio: Sequence[int]) -> list[int]:
    """Exact per-dataset sample counts for a batch mixed at ``ratio``.

    Counts are ``floor(batch_size * r_i / sum(ratio))`` with the remainder handed out one
    each to the first datasets, so they always sum to ``batch_size`` and hold the ratio
    exactly whenever ``sum(ratio)`` divides ``batch_size`` (5:3 at 128 → 80 + 48).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not ratio or any(r < 0 for r in ratio) or sum(ratio) <= 0:
        raise ValueError(f"ratio must be non-negative with a positive sum, got {tuple(ratio)}")
    total = sum(ratio)
    counts = [batch_size * r // total for r in ratio]
    for i in range(batch_size - sum(counts)):
        counts[i % len(counts)] += 1
    return counts


def window_index(
    first: Tensor, lengths: Tensor, offset: Tensor | int, width: int
) -> tuple[Tensor, Tensor]:
    """Flat frame indices ``(B, width)`` of windows starting ``offset`` frames into videos.

    ``first`` (B,) is each video's first flat frame, ``lengths`` (B,) its length. Positions
    past a video's end are clamped to its last frame and reported False in ``valid``.
    """
    dev = first.device
    pos = torch.arange(width, device=dev) + torch.as_tensor(offset, device=dev).reshape(-1, 1)
    valid = pos < lengths.reshape(-1, 1)
    pos = torch.minimum(pos, lengths.reshape(-1, 1) - 1)
    return first.reshape(-1, 1) + pos, valid


@dataclass
class SamplerPart:
    """One dataset's training videos, as the sampler draws from them.

    ``features`` (N, D) float32 and ``labels`` (N,) int64 are the dataset's whole flat
    arrays on the training device; ``offsets`` (V+1,) its per-video frame offsets (numpy);
    ``videos`` the indices of the videos to draw from (a split's training videos).
    ``feature_maps`` (k, D) int64 maps feature column j into the joint space (None: the
    features pass through unchanged); ``label_maps`` (k, C) int64 maps labels. Row r of
    both is one arrangement map; each subsequence uses a uniformly random row.
    """

    features: Tensor
    labels: Tensor
    offsets: np.ndarray
    videos: np.ndarray
    label_maps: np.ndarray
    feature_maps: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.videos = np.asarray(self.videos, dtype=np.int64)
        if self.videos.size == 0:
            raise ValueError("a sampler part needs at least one video")
        self.label_maps = np.atleast_2d(np.array(self.label_maps, dtype=np.int64))
        if self.feature_maps is not None:
            self.feature_maps = np.atleast_2d(np.array(self.feature_maps, dtype=np.int64))
            if len(self.feature_maps) != len(self.label_maps):
                raise ValueError("feature_maps and label_maps must have the same number of maps")
        lengths = np.diff(self.offsets)[self.videos]
        # CPU copies for drawing; device copies for building the gather index
        self._first = torch.as_tensor(self.offsets[:-1][self.videos])
        self._lengths = torch.as_tensor(lengths)
        device = self.features.device
        self._first_dev = self._first.to(device)
        self._lengths_dev = self._lengths.to(device)
        self._label_maps = [torch.as_tensor(m, device=device) for m in self.label_maps]
        self._feature_maps = (
            None if self.feature_maps is None
            else [torch.as_tensor(m, device=device) for m in self.feature_maps]
        )

    @property
    def num_maps(self) -> int:
        return len(self.label_maps)


@dataclass
class Batch:
    """A training batch. ``x`` (B, T, dim) float32, ``y`` (B, T) int64 joint labels with
    :data:`IGNORE` on padded frames, ``mask`` (B, T) bool (real frames). ``part``,
    ``video`` (index into the part's table), ``start`` and ``map`` are (B,) CPU tensors
    saying where each subsequence came from (for tests and diagnostics)."""

    x: Tensor
    y: Tensor
    mask: Tensor
    part: Tensor
    video: Tensor
    start: Tensor
    map: Tensor


class SubsequenceSampler:
    """Draws batches mixing ``parts`` at exact per-part ``counts`` (see :func:`split_batch`).

    ``dim`` is the joint space size (the model's input size when features are mapped, its
    output size always). Parts whose features pass through unchanged must all have the same
    feature dimension (checked).
    """

    def __init__(
        self,
        parts: Sequence[SamplerPart],
        counts: Sequence[int],
        history: int,
        dim: int,
        generator: torch.Generator,
    ):
        if len(parts) != len(counts) or not parts:
            raise ValueError("need one count per part and at least one part")
        if history < 1:
            raise ValueError(f"history must be >= 1, got {history}")
        mapped = {p.feature_maps is not None for p in parts}
        if len(mapped) > 1:
            raise ValueError("either every part's features are mapped or none are")
        if mapped == {False} and len({p.features.shape[1] for p in parts}) > 1:
            raise ValueError("unmapped features must have the same dimension in every part")
        self.parts = list(parts)
        self.counts = [int(c) for c in counts]
        self.history = history
        self.dim = dim
        self.generator = generator
        # per part and map: the device map, or None where mapping would be the identity
        # (copying the data for nothing)
        self._fmaps = [
            [None if fm is None or _is_identity(fm, dim) else fm
             for fm in (p._feature_maps or [None] * p.num_maps)]
            for p in self.parts
        ]
        self._lmaps = [
            [None if _is_identity(lm, dim) else lm for lm in p._label_maps] for p in self.parts
        ]

    @property
    def batch_size(self) -> int:
        return sum(self.counts)

    def sample(self) -> Batch:
        xs, ys, masks, part_ids, videos, starts, maps = [], [], [], [], [], [], []
        g, width = self.generator, self.history
        for pi, (part, n) in enumerate(zip(self.parts, self.counts, strict=True)):
            if n == 0:
                continue
            # all random numbers on the CPU generator: device-independent and checkpointable
            choice = torch.randint(len(part.videos), (n,), generator=g)
            room = (part._lengths[choice] - width).clamp(min=0) + 1
            start = (torch.rand(n, generator=g, dtype=torch.float64) * room).long()
            if part.num_maps > 1:
                r = torch.randint(part.num_maps, (n,), generator=g)
                # group by map (stable) so each map is applied to one contiguous slice
                order = torch.argsort(r, stable=True)
                choice, start, r = choice[order], start[order], r[order]
            else:
                r = torch.zeros(n, dtype=torch.int64)
            dev = part.features.device
            choice_dev = choice.to(dev, non_blocking=True)
            idx, valid = window_index(
                part._first_dev[choice_dev], part._lengths_dev[choice_dev],
                start.to(dev, non_blocking=True), width,
            )
            x = part.features[idx]  # the one gather of this dataset's frames
            y = part.labels[idx]
            counts = torch.bincount(r, minlength=part.num_maps).tolist()
            xs_p, ys_p, lo = [], [], 0
            for m, c in enumerate(counts):
                if c == 0:
                    continue
                sl = slice(lo, lo + c)
                lo += c
                fm, lm = self._fmaps[pi][m], self._lmaps[pi][m]
                xs_p.append(x[sl] if fm is None else map_features(x[sl], fm, self.dim))
                ys_p.append(y[sl] if lm is None else map_labels(y[sl], lm))
            x = xs_p[0] if len(xs_p) == 1 else torch.cat(xs_p)
            y = ys_p[0] if len(ys_p) == 1 else torch.cat(ys_p)
            y = y.masked_fill(~valid, IGNORE)
            xs.append(x)
            ys.append(y)
            masks.append(valid)
            part_ids.append(torch.full((n,), pi, dtype=torch.int64))
            videos.append(torch.as_tensor(part.videos)[choice])
            starts.append(start)
            maps.append(r)
        return Batch(*(_cat(t) for t in (xs, ys, masks, part_ids, videos, starts, maps)))


def _cat(tensors: list[Tensor]) -> Tensor:
    return tensors[0] if len(tensors) == 1 else torch.cat(tensors)


def _is_identity(mapping: Tensor, dim: int) -> bool:
    """True when ``mapping`` is ``arange(dim)``."""
    return bool(
        mapping.numel() == dim
        and torch.equal(mapping.cpu(), torch.arange(dim, dtype=mapping.dtype))
    )
