"""The LSTM's data: a frame table and one of its splits, resident on the training device.

A :class:`SplitData` holds the table's flat per-frame ``features`` (N, F) and ``labels``
(N,) as device tensors (the sampler and evaluation index them directly, so no batch is
copied from the host), the split's training and test video indices and the dataset's
:class:`~trainables.arrangements.LabelSpace`. Whether the features are class scores
(``mapped``: feature dim == class count) decides how an arrangement places them
(``trainables.train_job``'s module docstring). A table without features, an unknown split
or a split without training or test videos is refused when loading. With ``validation``, the
split's training videos give up whole people to a validation part
(:func:`data_prep.splits.validation_people`): ``train`` then holds the rest, ``val`` those.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from data_prep.errors import DataError
from data_prep.splits import validation_people
from data_prep.table import FrameTable, read_table

from .arrangements import LabelSpace
from .job import ConfigError

__all__ = ["SplitData"]


@dataclass
class SplitData:
    """A frame table and one split of it, with features and labels on ``device``."""

    table: FrameTable
    split: str
    train: np.ndarray
    test: np.ndarray
    space: LabelSpace
    features: torch.Tensor
    labels: torch.Tensor
    path: Path | None = None
    #: validation videos (carved from the training people; empty without validation)
    val: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @classmethod
    def load(
        cls,
        table: FrameTable | str | Path,
        split: int | str,
        device: torch.device | str = "cpu",
        *,
        validation: bool = False,
    ) -> SplitData:
        path = None
        if not isinstance(table, FrameTable):
            path = Path(table)
            table = read_table(path)
        if table.features is None:
            raise DataError(
                "the table has no features column (the LSTM's input); add simulated softmax "
                "with `kitchen-study simulate` or a CNN's with `kitchen-study cnn export`",
                path,
            )
        key: int | str = int(split) if isinstance(split, str) and split.isdigit() else split
        try:
            train, test = table.split_indices(key)
        except KeyError as e:
            raise ConfigError(e.args[0]) from None
        name = table.card.split(key).name
        if len(train) == 0 or len(test) == 0:
            raise DataError(f"split {name} has no training or no test videos", path)
        val = np.zeros(0, dtype=np.int64)
        if validation:
            try:
                train, val = validation_people(train, table.participant,
                                               f"{table.card.name}/{name}")
            except ValueError as e:
                raise ConfigError(str(e)) from None
        device = torch.device(device)
        return cls(
            table=table,
            split=name,
            train=train,
            test=test,
            space=LabelSpace.from_card(table.card),
            features=torch.as_tensor(table.features).to(device),
            labels=torch.as_tensor(table.labels.astype(np.int64)).to(device),
            path=path,
            val=val,
        )

    @property
    def feature_dim(self) -> int:
        return int(self.features.shape[1])

    @property
    def mapped(self) -> bool:
        """Features are class scores over this dataset's classes (mapped like the labels)."""
        return self.feature_dim == self.space.size

    def describe(self) -> str:
        return f"{self.space.name} {self.split}"
