"""Named Optuna search spaces (define-by-run functions) that a study spec refers to.

``SPACES[name](trial, **space_args) -> dict`` of LSTM config values; see
:mod:`search_spaces.lstm` for the spaces and the memory constraint.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from . import lstm as _lstm

__all__ = ["SPACES", "SpaceFn", "get_space"]

SpaceFn = Callable[..., dict[str, Any]]

#: Registry: adding a space is one function and one entry here.
SPACES: dict[str, SpaceFn] = {
    "paper": _lstm.paper,
    "lstm": _lstm.lstm,
    "lstm_joint": _lstm.lstm_joint,
    "small": _lstm.small,
}


def get_space(name: str, **space_args: Any) -> Callable[[Any], dict[str, Any]]:
    """The space ``name`` with its keyword options bound: a one-argument function of an
    Optuna trial, as ``ray.tune.search.optuna.OptunaSearch`` expects."""
    try:
        fn = SPACES[name]
    except KeyError:
        raise KeyError(f"unknown search space {name!r} (known: {', '.join(SPACES)})") from None
    return partial(fn, **space_args) if space_args else fn
