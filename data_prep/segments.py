"""Segments -> per-frame labels: the one overlap rule shared by the segment-format
converters (50 Salads raw annotations, MPII Cooking CSV)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["paint_segments"]


@dataclass(frozen=True)
class Painted:
    """Per-frame labels painted from segments, with counts of what the rules decided."""

    labels: np.ndarray  # int64, one per frame
    #: segments that start before an earlier-starting segment has ended
    overlapping: int
    #: frames covered by two or more segments (the later-starting one labels them)
    contested_frames: int
    #: frames no segment covers (labelled ``fill``)
    uncovered_frames: int


def paint_segments(
    length: int,
    starts: Sequence[int] | np.ndarray,
    ends: Sequence[int] | np.ndarray,
    labels: Sequence[int] | np.ndarray,
    fill: int,
) -> Painted:
    """Frame labels from half-open 0-based segments ``[start, end)``.

    The rule for overlaps: segments are painted in order of start (ties: in the given
    order, a stable sort), each overwriting the frames it covers, so on a shared frame the
    later-starting segment wins; a segment nested inside a longer one labels only its own
    frames and the longer one resumes after it. Frames no segment covers get ``fill``.
    Segments must lie inside ``0 <= start <= end <= length`` (callers clip and count first).
    """
    s = np.asarray(starts, dtype=np.int64)
    e = np.asarray(ends, dtype=np.int64)
    lab = np.asarray(labels, dtype=np.int64)
    if s.size and (s.min() < 0 or e.max() > length or np.any(e < s)):
        raise ValueError(f"segments must satisfy 0 <= start <= end <= {length}")
    order = np.argsort(s, kind="stable")
    out = np.full(length, fill, dtype=np.int64)
    for i in order:  # one slice assignment per segment, not per frame
        out[s[i] : e[i]] = lab[i]
    cover = np.zeros(length + 1, dtype=np.int64)
    np.add.at(cover, s, 1)
    np.add.at(cover, e, -1)
    cover = np.cumsum(cover[:-1])
    ss, ee = s[order], e[order]
    reach = np.maximum.accumulate(ee) if ee.size else ee
    overlapping = int(np.sum(ss[1:] < reach[:-1])) if ss.size > 1 else 0
    return Painted(
        labels=out,
        overlapping=overlapping,
        contested_frames=int(np.sum(cover >= 2)),
        uncovered_frames=int(np.sum(cover == 0)),
    )
