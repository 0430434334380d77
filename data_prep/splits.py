"""Leave-person-out splits shared by the converters that have no official split files."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .table import Split

__all__ = ["person_folds"]


def person_folds(
    videos: Sequence[str], participants: Sequence[str], folds: int = 4
) -> tuple[Split, ...]:
    """``folds`` leave-person-out splits: participants in sorted order, cut into ``folds``
    contiguous groups of (nearly) equal size; split k tests on group k and trains on the
    rest, so each split is about (folds-1)/folds train (75/25 for 4 folds, the paper's
    protocol). Deterministic: no random state, the same input gives the same splits.
    """
    people = sorted(set(participants))
    if len(people) < folds:
        raise ValueError(f"{len(people)} participants cannot make {folds} leave-person-out folds")
    groups = np.array_split(np.array(people, dtype=object), folds)
    out = []
    for k, group in enumerate(groups, start=1):
        test_people = set(group.tolist())
        test = tuple(v for v, p in zip(videos, participants, strict=True) if p in test_people)
        train = tuple(v for v, p in zip(videos, participants, strict=True) if p not in test_people)
        out.append(Split(f"split{k}", tuple(sorted(train)), tuple(sorted(test))))
    return tuple(out)
