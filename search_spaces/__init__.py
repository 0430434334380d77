"""Named Optuna search spaces (define-by-run functions) that a study spec refers to.

``SPACES[name](trial, **space_args) -> dict`` of flat config values for the model
``SPACE_MODELS[name]`` (a kind of ``trainables.temporal.MODELS``): the LSTM's spaces are in
:mod:`search_spaces.lstm`, MS-TCN's in :mod:`search_spaces.tcn`. A study's search must use a
space of its model's kind (checked when the spec is read).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from . import lstm as _lstm
from . import tcn as _tcn

__all__ = ["SPACES", "SPACE_MODELS", "SpaceFn", "get_space"]

SpaceFn = Callable[..., dict[str, Any]]

#: Registry: adding a space is one function and one entry here (and its model kind below).
SPACES: dict[str, SpaceFn] = {
    "paper": _lstm.paper,
    "lstm": _lstm.lstm,
    "lstm_joint": _lstm.lstm_joint,
    "small": _lstm.small,
    "mstcn": _tcn.mstcn,
    "mstcn_small": _tcn.mstcn_small,
}

#: The temporal model each space's configs are for (``trainables.temporal.MODELS`` keys).
SPACE_MODELS: dict[str, str] = {
    "paper": "lstm", "lstm": "lstm", "lstm_joint": "lstm", "small": "lstm",
    "mstcn": "mstcn", "mstcn_small": "mstcn",
}
assert set(SPACE_MODELS) == set(SPACES)


def get_space(name: str, **space_args: Any) -> Callable[[Any], dict[str, Any]]:
    """The space ``name`` with its keyword options bound: a one-argument function of an
    Optuna trial, as ``ray.tune.search.optuna.OptunaSearch`` expects."""
    try:
        fn = SPACES[name]
    except KeyError:
        raise KeyError(f"unknown search space {name!r} (known: {', '.join(SPACES)})") from None
    return partial(fn, **space_args) if space_args else fn
