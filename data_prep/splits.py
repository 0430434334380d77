"""Leave-person-out splits shared by the converters that have no official split files, and the
validation part every split's training people give up for choices (:func:`validation_people`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from .table import Split

__all__ = ["person_folds", "validation_people"]

#: The share of a split's training videos its validation people hold at least.
VALIDATION_FRACTION = 0.15


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


def validation_people(train: Sequence[int], participants: Sequence[str], key: str,
                      fraction: float = VALIDATION_FRACTION) -> tuple[np.ndarray, np.ndarray]:
    """Carve a validation part out of a split's training videos, by whole people.

    ``train``: the split's training video indices; ``participants``: the person of every
    video of the table (indexed by video); ``key``: names the split (e.g. ``"breakfast/s1"``),
    so each split draws its own people. People are ordered by ``sha256(key + person)`` (a
    fixed, seed-free order that does not follow the names) and taken until they hold at least
    ``fraction`` of the training videos; at least one person, and at least one person is
    left for training. Returns ``(train, validation)`` video indices, both sorted; no person
    is in both (nor, since the split is leave-person-out, in the test part).
    """
    train = np.asarray(sorted(int(v) for v in train), dtype=np.int64)
    person = np.asarray([participants[v] for v in train], dtype=object)
    people = sorted(set(person.tolist()),
                    key=lambda p: hashlib.sha256(f"{key}\0{p}".encode()).hexdigest())
    if len(people) < 2:
        raise ValueError(f"{key}: the training part has {len(people)} person(s); a validation "
                         "part needs one of at least two (or use the paper's protocol)")
    need = max(1, int(np.ceil(fraction * len(train))))
    chosen: set[str] = set()
    held = 0
    for p in people[:-1]:  # the last person always stays in training
        chosen.add(p)
        held += int(np.count_nonzero(person == p))
        if held >= need:
            break
    is_val = np.isin(person, list(chosen))
    return train[~is_val], train[is_val]
