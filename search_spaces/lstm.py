"""Optuna define-by-run search spaces for the paper's frame-wise LSTM.

Every space is a function ``space(trial, *, ...options) -> dict`` that only calls
``trial.suggest_*`` and returns the **complete** set of config values it decides, in the
flat form of ``trainables.train_config.TrainConfig`` (the LSTM's fields beside the
optimisation ones). The study runner merges that dict into the task's base config; the
suggested parameters themselves (as Optuna records them) may be named differently, e.g.
``target_eighths`` → ``joint_ratio``. Keyword-only options are set from a spec's
``search.space_args``.

The memory constraint (the paper's history-versus-depth trade-off) is the model's own
formula, :meth:`trainables.lstm_config.LSTMKind.memory_estimate` (the one the job checks at
start), at ``classes`` input and output classes (default 48, Breakfast's). The spaces
suggest ``history`` and ``depth`` first, then bound ``hidden`` by what is left at the
smallest batch, then bound ``batch_size`` by what is left: every suggested configuration
fits ``memory_budget_mb``. Bounds that depend on earlier suggestions are dynamic ranges,
which Optuna's samplers support (a categorical's choices may not change between trials, so
none is used for them).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from trainables.arrangements import ARRANGEMENTS
from trainables.lstm_config import LSTM, LSTMConfig

__all__ = ["SPACES", "PAPER_CONFIG", "fits", "largest", "lstm", "lstm_joint", "paper", "small"]

#: The paper's LSTM (Perrett & Damen §4.2): history 300, depth 1, hidden 128, batch 128,
#: Adam at 0.001.
PAPER_CONFIG: dict[str, Any] = {
    "history": 300,
    "depth": 1,
    "hidden": 128,
    "batch_size": 128,
    "lr": 1e-3,
}

#: Label arrangements a joint search may choose among: every registered arrangement of two
#: label spaces (``trainables.arrangements.ARRANGEMENTS`` without ``identity``).
JOINT_ARRANGEMENTS: tuple[str, ...] = tuple(
    name for name, kind in ARRANGEMENTS.items() if kind.needs_source)

#: Default memory budget per training step: about 4x the paper's configuration (at 48
#: classes its estimate is ~119 MiB).
DEFAULT_MEMORY_BUDGET_MB = 512.0

_MIN_BATCH = 8
_MIN_HIDDEN = 16
_HIDDEN_STEP = 16


def fits(history: int, depth: int, hidden: int, batch_size: int, *, classes: int,
         memory_budget_mb: float) -> bool:
    """Whether the LSTM's memory estimate (the job's own) is within the budget."""
    cfg = LSTMConfig(history=history, depth=depth, hidden=hidden)
    need = LSTM.memory_estimate(cfg, classes, classes, batch_size, history)
    return need <= memory_budget_mb * 2**20


def largest(lo: int, hi: int, ok: Callable[[int], bool], step: int = 1) -> int:
    """The largest ``v`` in ``lo, lo+step, ..., <= hi`` with ``ok(v)`` for a monotone ``ok``
    (true up to a point); ``lo`` when none is (the caller checked ``lo`` fits)."""
    n = (hi - lo) // step
    a, b = 0, n  # ok(lo + a*step) holds; find the last index that holds
    while a < b:
        mid = (a + b + 1) // 2
        if ok(lo + mid * step):
            a = mid
        else:
            b = mid - 1
    return lo + a * step


def _bounded_shape(
    trial: Any,
    *,
    history: tuple[int, int],
    max_depth: int,
    max_hidden: int,
    max_batch: int,
    memory_budget_mb: float,
    classes: int,
) -> dict[str, int]:
    """Suggest history, depth, then hidden and batch within the memory budget."""
    lo_h, hi_h = history

    def ok(h: int, d: int, hid: int, b: int) -> bool:
        return fits(h, d, hid, b, classes=classes, memory_budget_mb=memory_budget_mb)

    # The smallest configuration must fit, else no suggestion can: a clear error, not a
    # silent shrink of the user's ranges.
    if not ok(lo_h, 1, _MIN_HIDDEN, _MIN_BATCH):
        raise ValueError(
            f"memory_budget_mb={memory_budget_mb} cannot fit even history {lo_h}, depth 1, "
            f"hidden {_MIN_HIDDEN}, batch {_MIN_BATCH} ({classes} classes)"
        )
    hi_h = largest(lo_h, hi_h, lambda h: ok(h, 1, _MIN_HIDDEN, _MIN_BATCH))
    h = trial.suggest_int("history", lo_h, hi_h, log=True)
    d_hi = largest(1, max(1, max_depth), lambda d: ok(h, d, _MIN_HIDDEN, _MIN_BATCH))
    d = trial.suggest_int("depth", 1, d_hi)
    top = max(_MIN_HIDDEN, max_hidden - (max_hidden - _MIN_HIDDEN) % _HIDDEN_STEP)
    hid_hi = largest(_MIN_HIDDEN, top, lambda x: ok(h, d, x, _MIN_BATCH), _HIDDEN_STEP)
    hid = trial.suggest_int("hidden", _MIN_HIDDEN, hid_hi, step=_HIDDEN_STEP)
    b_hi = largest(_MIN_BATCH, max(_MIN_BATCH, max_batch), lambda b: ok(h, d, hid, b))
    b = trial.suggest_int("batch_size", _MIN_BATCH, b_hi, log=True)
    return {"history": h, "depth": d, "hidden": hid, "batch_size": b}


def paper(trial: Any) -> dict[str, Any]:
    """The paper's fixed configuration (no suggestions): a search over it only repeats it."""
    del trial
    return dict(PAPER_CONFIG)


def lstm(
    trial: Any,
    *,
    memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB,
    min_history: int = 32,
    max_history: int = 1024,
    max_depth: int = 3,
    max_hidden: int = 512,
    max_batch: int = 256,
    lr: tuple[float, float] = (1e-4, 1e-2),
    classes: int = 48,
) -> dict[str, Any]:
    """History, depth, hidden size, batch size (memory-bounded) and learning rate."""
    shape = _bounded_shape(
        trial,
        history=(min_history, max_history),
        max_depth=max_depth,
        max_hidden=max_hidden,
        max_batch=max_batch,
        memory_budget_mb=memory_budget_mb,
        classes=classes,
    )
    rate = trial.suggest_float("lr", lr[0], lr[1], log=True)
    return {**shape, "lr": rate}


def lstm_joint(
    trial: Any,
    *,
    memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB,
    min_history: int = 32,
    max_history: int = 1024,
    max_depth: int = 3,
    max_hidden: int = 512,
    max_batch: int = 256,
    lr: tuple[float, float] = (1e-4, 1e-2),
    arrangements: tuple[str, ...] = JOINT_ARRANGEMENTS,
    classes: int = 48,
) -> dict[str, Any]:
    """:func:`lstm` plus the joint ratio (target:source, in eighths of a batch: 5 → the
    paper's 5:3) and the label arrangement."""
    out = lstm(
        trial,
        memory_budget_mb=memory_budget_mb,
        min_history=min_history,
        max_history=max_history,
        max_depth=max_depth,
        max_hidden=max_hidden,
        max_batch=max_batch,
        lr=lr,
        classes=classes,
    )
    eighths = trial.suggest_int("target_eighths", 1, 7)
    arrangement = trial.suggest_categorical("arrangement", list(arrangements))
    return {**out, "joint_ratio": [eighths, 8 - eighths], "arrangement": arrangement}


def small(
    trial: Any,
    *,
    memory_budget_mb: float = 16.0,
    max_history: int = 128,
    lr: tuple[float, float] = (1e-3, 3e-2),
    classes: int = 48,
) -> dict[str, Any]:
    """A narrow, cheap space for the demo and tests: short histories, one layer."""
    return lstm(
        trial,
        memory_budget_mb=memory_budget_mb,
        min_history=16,
        max_history=max_history,
        max_depth=1,
        max_hidden=64,
        max_batch=32,
        lr=lr,
        classes=classes,
    )


#: This model's spaces (collected by ``search_spaces``).
SPACES = {"paper": paper, "lstm": lstm, "lstm_joint": lstm_joint, "small": small}
