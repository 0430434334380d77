"""Table 3's CNN baselines on a frame table's ``features`` (normally an exported CNN
softmax, but any features column works): "CNN + Softmax" (argmax accuracy) and "CNN + SVM"
(an RBF SVM). Uses no CNN and no torch: scikit-learn on the table alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from data_prep.errors import DataError
from data_prep.table import FrameTable

__all__ = ["argmax_accuracy", "svm_baseline"]


def rows_of(table: FrameTable, videos: np.ndarray, stride: int = 1) -> np.ndarray:
    """Table rows of ``videos``, every ``stride``-th frame of each, in video order."""
    parts = [np.arange(table.offsets[v], table.offsets[v + 1], stride) for v in np.asarray(videos)]
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)


def argmax_accuracy(pred: np.ndarray, table: FrameTable, videos: np.ndarray) -> float | None:
    """Percent of ``videos``' frames whose ``pred`` (one per table row) is the label;
    None without frames."""
    rows = rows_of(table, videos)
    return float(np.mean(pred[rows] == table.labels[rows]) * 100.0) if rows.size else None


def svm_baseline(
    table: FrameTable,
    split: str | int,
    *,
    max_train: int = 50_000,
    folds: int = 5,
    C: Sequence[float] = (0.1, 1.0, 10.0, 100.0),
    gamma: Sequence[float] = (0.01, 0.1, 1.0, 10.0),
    test_stride: int = 1,
    seed: int = 0,
    jobs: int = 1,
) -> dict[str, Any]:
    """Table 3's CNN baselines on a table's ``features`` (normally an exported softmax).

    "CNN + Softmax": argmax accuracy of the features on the split's test frames (only when
    the feature dimension equals the class count). "CNN + SVM": scikit-learn's RBF ``SVC``
    trained on ``max_train`` training frames sampled uniformly without replacement (all of
    them when fewer; the paper: 50,000), ``C`` and ``gamma`` chosen by ``folds``-fold grid
    search on that sample (stratified folds; plain shuffled folds when a class has fewer
    frames than folds), then refit on the whole sample and scored on every
    ``test_stride``-th test frame. Accuracies in percent.
    """
    from sklearn.model_selection import GridSearchCV, KFold, StratifiedKFold
    from sklearn.svm import SVC

    if table.features is None:
        raise DataError(
            f"table {table.card.name!r} has no features column: export the CNN softmax first "
            "(kitchen-study cnn export)"
        )
    name = table.card.split(split).name
    train, test = table.split_indices(name)
    rng = np.random.default_rng(seed)
    rows = rows_of(table, train)
    if rows.size > max_train:
        rows = np.sort(rng.choice(rows, size=max_train, replace=False))
    x, y = table.features[rows], table.labels[rows].astype(np.int64)
    counts = np.bincount(y)
    counts = counts[counts > 0]
    if counts.size < 2:
        raise DataError(f"split {name}: the sampled training frames hold fewer than 2 classes")
    cv = (
        StratifiedKFold(folds, shuffle=True, random_state=seed)
        if counts.min() >= folds
        else KFold(folds, shuffle=True, random_state=seed)
    )
    search = GridSearchCV(
        SVC(kernel="rbf"), {"C": list(C), "gamma": list(gamma)}, cv=cv, n_jobs=jobs, refit=True
    )
    search.fit(x, y)
    test_rows = rows_of(table, test, test_stride)
    pred = np.concatenate(
        [search.predict(table.features[test_rows[i : i + 20_000]])
         for i in range(0, test_rows.size, 20_000)]
    ) if test_rows.size else np.zeros(0, np.int64)
    gt = table.labels[test_rows]
    softmax = None
    if table.feature_dim == table.card.num_classes and test_rows.size:
        softmax = float(np.mean(table.features[test_rows].argmax(1) == gt) * 100.0)
    return {
        "split": name,
        "softmax_acc": softmax,
        "svm_acc": float(np.mean(pred == gt) * 100.0) if test_rows.size else None,
        "C": float(search.best_params_["C"]),
        "gamma": float(search.best_params_["gamma"]),
        "cv_acc": float(search.best_score_ * 100.0),
        "train_frames": int(rows.size),
        "test_frames": int(test_rows.size),
    }
