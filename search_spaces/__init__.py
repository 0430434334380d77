"""Named Optuna search spaces (define-by-run functions) that a study spec refers to.

One module per registered temporal model, named by its kind (``search_spaces/<kind>.py`` for
every key of ``trainables.temporal.MODELS``: :mod:`search_spaces.lstm`,
:mod:`search_spaces.mstcn`), each with a ``SPACES`` dict of its spaces. This package collects
them: ``SPACES[name](trial, **space_args) -> dict`` of flat config values for the model
``SPACE_MODELS[name]``. A study's search must use a space of its model's kind (checked when
the spec is read). Adding a model's spaces is its module here; nothing else lists them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from functools import partial
from typing import Any

from trainables.temporal import MODELS

__all__ = ["SPACES", "SPACE_MODELS", "get_space"]

SpaceFn = Callable[..., dict[str, Any]]

#: Every space by name, and the temporal model each searches (``MODELS`` keys).
SPACES: dict[str, SpaceFn] = {}
SPACE_MODELS: dict[str, str] = {}
for _kind in MODELS:
    _module = importlib.import_module(f".{_kind}", __name__)
    for _name, _fn in _module.SPACES.items():
        if _name in SPACES:
            raise RuntimeError(f"search space {_name!r} is defined for {SPACE_MODELS[_name]} "
                               f"and {_kind}")
        SPACES[_name] = _fn
        SPACE_MODELS[_name] = _kind


def get_space(name: str, **space_args: Any) -> Callable[[Any], dict[str, Any]]:
    """The space ``name`` with its keyword options bound: a one-argument function of an
    Optuna trial, as ``ray.tune.search.optuna.OptunaSearch`` expects."""
    try:
        fn = SPACES[name]
    except KeyError:
        raise KeyError(f"unknown search space {name!r} (known: {', '.join(SPACES)})") from None
    return partial(fn, **space_args) if space_args else fn
