"""Optuna define-by-run search spaces for the frame-wise LSTM.

Every space is a function ``space(trial, *, ...options) -> dict`` that only calls
``trial.suggest_*`` and returns the **complete** set of LSTM config values it decides
(field names of ``trainables.lstm_config.LSTMConfig``). The study runner merges that dict into
the task's base config; the suggested parameters themselves (as Optuna records them) may
be named differently, e.g. ``target_eighths`` → ``joint_ratio``. Keyword-only options are
set from a spec's ``search.space_args``.

The memory constraint (the paper's history-versus-depth trade-off): the activations an
LSTM keeps for back-propagation through time grow with ``history × depth × hidden ×
batch``. :func:`activation_bytes` estimates them (4 gates + cell + hidden state per unit,
float32; the input and output layers over softmax inputs are small beside them). The
spaces suggest ``history`` and ``depth`` first, then bound ``hidden`` by what is left at
the smallest batch, then bound ``batch_size`` by what is left: every suggested
configuration fits ``memory_budget_mb`` (the paper's configuration needs ~113 MiB).
Bounds that depend on earlier suggestions are dynamic ranges, which Optuna's samplers
support (a categorical's choices may not change between trials, so none is used for them).
"""

from __future__ import annotations

from typing import Any

from trainables.arrangements import ARRANGEMENTS

__all__ = [
    "BYTES_PER_UNIT",
    "JOINT_ARRANGEMENTS",
    "DEFAULT_MEMORY_BUDGET_MB",
    "PAPER_CONFIG",
    "activation_bytes",
    "lstm",
    "lstm_joint",
    "paper",
    "small",
]

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

#: float32 bytes kept per (frame, layer, hidden unit, sequence): 4 gates + cell + hidden.
BYTES_PER_UNIT = 4 * 6

#: Default activation budget: about 4.5x the paper's configuration.
DEFAULT_MEMORY_BUDGET_MB = 512.0

_MIN_BATCH = 8
_MIN_HIDDEN = 16
_HIDDEN_STEP = 16


def activation_bytes(history: int, depth: int, hidden: int, batch_size: int) -> int:
    """Estimated bytes of LSTM activations kept for one training step."""
    return BYTES_PER_UNIT * history * depth * hidden * batch_size


def _budget_units(memory_budget_mb: float) -> int:
    return int(memory_budget_mb * 2**20) // BYTES_PER_UNIT


def _bounded_shape(
    trial: Any,
    *,
    history: tuple[int, int],
    max_depth: int,
    max_hidden: int,
    max_batch: int,
    memory_budget_mb: float,
) -> dict[str, int]:
    """Suggest history, depth, then hidden and batch within the memory budget."""
    units = _budget_units(memory_budget_mb)
    lo_h, hi_h = history
    # The smallest configuration must fit, else no suggestion can: a clear error, not a
    # silent shrink of the user's ranges.
    if lo_h * _MIN_HIDDEN * _MIN_BATCH > units:
        raise ValueError(
            f"memory_budget_mb={memory_budget_mb} cannot fit even history {lo_h}, depth 1, "
            f"hidden {_MIN_HIDDEN}, batch {_MIN_BATCH}"
        )
    h = trial.suggest_int("history", lo_h, hi_h, log=True)
    d_hi = max(1, min(max_depth, units // (h * _MIN_HIDDEN * _MIN_BATCH)))
    d = trial.suggest_int("depth", 1, d_hi)
    hid_hi = min(max_hidden, units // (h * d * _MIN_BATCH))
    hid_hi = max(_MIN_HIDDEN, hid_hi - hid_hi % _HIDDEN_STEP)
    hid = trial.suggest_int("hidden", _MIN_HIDDEN, hid_hi, step=_HIDDEN_STEP)
    b_hi = max(_MIN_BATCH, min(max_batch, units // (h * d * hid)))
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
) -> dict[str, Any]:
    """History, depth, hidden size, batch size (memory-bounded) and learning rate."""
    shape = _bounded_shape(
        trial,
        history=(min_history, max_history),
        max_depth=max_depth,
        max_hidden=max_hidden,
        max_batch=max_batch,
        memory_budget_mb=memory_budget_mb,
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
    )

