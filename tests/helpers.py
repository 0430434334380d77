"""Helpers shared by test modules (one place: no test module imports another).

- :func:`recipe_table`: a toy frame table whose videos perform their classes in order.
"""

from __future__ import annotations

import numpy as np

from data_prep.table import DatasetCard, FrameTable, Split, VideoLabels

__all__ = ["recipe_table"]


def recipe_table(
    videos: int = 8,
    classes: int = 6,
    seed: int = 0,
    accuracy: float = 0.6,
    min_len: int = 20,
    max_len: int = 60,
    name: str = "recipe",
    feature_dim: int | None = None,
    repeat: bool = False,
) -> FrameTable:
    """A toy dataset: every video performs classes 0..C-1 left to right (class 0 is the
    background), with random durations; features are a noisy softmax whose argmax is right
    with probability ``accuracy`` (errors i.i.d. per frame). ``repeat``: every video is the
    same sequence with the same features. ``feature_dim`` other than ``classes``: random
    projections instead (features that are not class scores). One participant per video;
    split1 tests on the first two videos, split2 on the next two."""
    rng = np.random.default_rng(seed)
    proj = rng.normal(size=(classes, feature_dim)) if feature_dim not in (None, classes) else None
    made = []
    first = None
    for i in range(videos):
        if repeat and first is not None:
            labels, feats = first
        else:
            span = rng.integers(max(1, min_len // classes), max(2, max_len // classes) + 1, classes)
            labels = np.repeat(np.arange(classes), span)
            guess = np.where(rng.random(len(labels)) < accuracy, labels,
                             rng.integers(0, classes, len(labels)))
            noise = rng.normal(scale=0.5, size=(len(labels), classes))
            logits = 3.0 * np.eye(classes)[guess] + noise
            feats = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
            if proj is not None:
                feats = logits @ proj
            first = labels, feats
        made.append(
            VideoLabels(f"v{i:02d}", labels, f"P{i:02d}", features=feats.astype(np.float32))
        )
    ids = [v.video for v in made]
    splits = (Split("split1", tuple(ids[2:]), tuple(ids[:2])),
              Split("split2", tuple(ids[:2] + ids[4:]), tuple(ids[2:4])))
    card = DatasetCard(name, 15.0, tuple(f"{name}_{c}" for c in range(classes)),
                       f"{name}_0", "toy", "1", splits=splits)
    return FrameTable.from_videos(card, made)
