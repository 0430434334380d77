"""Helpers shared by test modules (one place: no test module imports another; the study
layer's synthetic kitchens, specs and fake runs are in ``tests/study_data.py``).

- :func:`recipe_table`: a toy frame table whose videos perform their classes in order.
- :func:`empty_mlflow_db`: a fresh MLflow SQLite store, fast (a cached empty one, copied).
- :func:`toy_table`, :func:`toy_trainer`, :func:`packed_members`, :func:`build_trainers`:
  the packed LSTM's equivalence tests (CPU and CUDA), :data:`TOY_CLASSES` classes.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from data_prep.table import DatasetCard, FrameTable, Split, VideoLabels

if TYPE_CHECKING:
    import pytest

    from trainables.split_data import SplitData
    from trainables.train_job import Trainer

__all__ = ["TOY_CLASSES", "build_trainers", "empty_mlflow_db", "packed_members",
           "recipe_table", "toy_table", "toy_trainer"]

#: Classes of :func:`toy_table`.
TOY_CLASSES = 5


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


def empty_mlflow_db(config: pytest.Config, dst: Path) -> Path:
    """A fresh, empty MLflow SQLite store at ``dst``.

    Creating MLflow's tables runs its schema migrations (seconds, tens on a busy machine), so
    an empty store is built once per MLflow version in pytest's cache directory and copied.
    """
    import mlflow
    from mlflow import MlflowClient

    cache = config.cache.mkdir(f"mlflow-empty-db-{mlflow.__version__}")
    template = cache / "mlflow.db"
    if not template.is_file():
        building = cache / f"building-{uuid.uuid4().hex}.db"
        MlflowClient(f"sqlite:///{building}").search_experiments()  # creates the tables
        building.replace(template)
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template, dst)
    return dst


# -- the packed LSTM's equivalence tests ------------------------------------------------------
# torch and the trainables are imported inside: a test that only needs a table pays for neither.


def toy_table(seed: int, videos: int = 6, name: str = "toy") -> FrameTable:
    """Videos of 10-50 frames (some shorter than the history, so batches carry padding) with
    noisy softmax features over :data:`TOY_CLASSES` classes."""
    rng = np.random.default_rng(seed)
    made = []
    for i in range(videos):
        n = int(rng.integers(10, 50))
        labels = np.sort(rng.integers(0, TOY_CLASSES, n))
        logits = 2.0 * np.eye(TOY_CLASSES)[labels] + rng.normal(size=(n, TOY_CLASSES))
        feats = (np.exp(logits) / np.exp(logits).sum(1, keepdims=True)).astype(np.float32)
        made.append(VideoLabels(f"v{i}", labels, f"P{i}", features=feats))
    ids = tuple(v.video for v in made)
    card = DatasetCard(name, 15.0, tuple(f"c{c}" for c in range(TOY_CLASSES)), "c0", "toy",
                       "1", splits=(Split("split1", ids[2:], ids[:2]),))
    return FrameTable.from_videos(card, made)


def toy_trainer(data: SplitData, **cfg: Any) -> Trainer:
    """A small LSTM trainer on ``data`` (identity arrangement); ``cfg`` overrides."""
    from trainables.arrangements import make_arrangement
    from trainables.train_config import TrainConfig
    from trainables.train_job import Trainer

    config = TrainConfig(**{"history": 24, "hidden": 8, "batch_size": 4, "lr": 0.01, **cfg})
    return Trainer(config, make_arrangement("identity", data.space), data)


def packed_members(datasets: list[SplitData], **shape: Any) -> list[dict[str, Any]]:
    """Three members differing in data, seed, learning rate and clipping."""
    return [
        dict(data=datasets[0], seed=0, lr=0.01, **shape),
        dict(data=datasets[1], seed=1, lr=0.003, clip=0.5, **shape),
        dict(data=datasets[0], seed=2, lr=0.02, **shape),
    ]


def build_trainers(specs: list[dict[str, Any]]) -> list[Trainer]:
    return [toy_trainer(**s) for s in specs]
