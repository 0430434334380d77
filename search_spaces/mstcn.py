"""Optuna define-by-run search spaces for MS-TCN (``kind: mstcn``).

Each returns the flat config values it decides (``trainables.tcn_config.TCNConfig`` fields
and ``lr``; see :mod:`search_spaces.lstm` for the conventions). The memory bound is MS-TCN's
own formula (:meth:`trainables.tcn_config.TCNKind.memory_estimate`, the one the job checks)
at ``batch_size`` samples of ``window`` frames with ``input_dim`` inputs and ``classes``
classes: ``maps`` is bounded by what fits once stages and layers are chosen.
"""

from __future__ import annotations

from typing import Any

from trainables.tcn_config import MSTCN_KIND, TCNConfig

from .lstm import largest

__all__ = ["SPACES", "mstcn", "mstcn_small"]


def _fits(stages: int, layers: int, maps: int, *, batch_size: int, window: int,
          input_dim: int, classes: int, memory_budget_mb: float) -> bool:
    cfg = TCNConfig(stages=stages, layers=layers, maps=maps)
    need = MSTCN_KIND.memory_estimate(cfg, input_dim, classes, batch_size, window)
    return need <= memory_budget_mb * 2**20


def mstcn(
    trial: Any,
    *,
    memory_budget_mb: float = 2048.0,
    max_stages: int = 5,
    min_layers: int = 6,
    max_layers: int = 12,
    maps: tuple[int, int] = (16, 128),
    smooth_weight: tuple[float, float] = (0.05, 0.5),
    lr: tuple[float, float] = (1e-4, 5e-3),
    batch_size: int = 1,
    window: int = 2048,
    input_dim: int = 48,
    classes: int = 48,
) -> dict[str, Any]:
    """Stages, layers, feature maps (memory-bounded), the smoothing weight λ and lr (the
    paper's Breakfast setting, 4 x 10 x 64, λ 0.15, lr 0.0005, lies inside)."""
    def ok(s: int, n: int, m: int) -> bool:
        return _fits(s, n, m, batch_size=batch_size, window=window, input_dim=input_dim,
                     classes=classes, memory_budget_mb=memory_budget_mb)

    lo_m, hi_m = maps
    if not ok(1, min_layers, lo_m):
        raise ValueError(f"memory_budget_mb={memory_budget_mb} cannot fit even 1 stage of "
                         f"{min_layers} layers with {lo_m} maps at batch {batch_size} x "
                         f"{window} frames")
    s = trial.suggest_int("stages", 1, largest(1, max_stages, lambda v: ok(v, min_layers, lo_m)))
    n = trial.suggest_int("layers", min_layers, largest(min_layers, max_layers,
                                                        lambda v: ok(s, v, lo_m)))
    m = trial.suggest_int("maps", lo_m, largest(lo_m, hi_m, lambda v: ok(s, n, v)), log=True)
    lam = trial.suggest_float("smooth_weight", smooth_weight[0], smooth_weight[1], log=True)
    rate = trial.suggest_float("lr", lr[0], lr[1], log=True)
    return {"kind": "mstcn", "stages": s, "layers": n, "maps": m, "smooth_weight": lam,
            "lr": rate}


def mstcn_small(trial: Any, *, lr: tuple[float, float] = (1e-3, 3e-2),
                classes: int = 48) -> dict[str, Any]:
    """A narrow, cheap MS-TCN space for the demo and tests."""
    return mstcn(trial, memory_budget_mb=64.0, max_stages=2, min_layers=2, max_layers=4,
                 maps=(8, 16), lr=lr, window=256, input_dim=classes, classes=classes)


#: This model's spaces (collected by ``search_spaces``).
SPACES = {"mstcn": mstcn, "mstcn_small": mstcn_small}
