"""Small synthetic kitchens on disk and the tiny study specs the study-layer tests run
(spec, runner, packing, growing graph, cluster). The fixtures that use them
(``kitchens_root``, ``local_ray``) are in ``tests/conftest.py``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from data_prep.synth import make_kitchens
from data_prep.table import write_table

__all__ = ["A", "B", "C", "link_data", "merged", "small_spec", "store_settings",
           "write_kitchens", "write_spec"]

#: The synthetic kitchens' dataset names (``make_kitchens``), in the order it writes them.
A, B, C = "synth_breakfast", "synth_salads", "synth_cooking"


def write_kitchens(
    root: Path, kitchens: int = 3, videos: int = 8, seed: int = 0
) -> dict[str, Path]:
    """Write ``kitchens`` synthetic datasets (with simulated softmax) under ``root``."""
    out = {}
    for name, table in make_kitchens(seed, kitchens, videos, participants=4).items():
        out[name] = write_table(table, Path(root) / f"{name}.parquet")
    return out


def merged(d: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``d`` with ``over``'s keys: a mapping given for a mapping is merged one level deep
    (``experiments={"seeds": [0, 1]}`` keeps the other experiment keys), anything else
    replaces (``search=None`` removes the search)."""
    out = dict(d)
    for k, v in over.items():
        out[k] = {**out[k], **v} if isinstance(v, Mapping) and isinstance(out.get(k),
                                                                          Mapping) else v
    return out


def store_settings(root: Path) -> dict[str, str]:
    """A spec's MLflow store (SQLite) and Ray results under ``root``."""
    return {"tracking_uri": f"sqlite:///{Path(root) / 'mlflow.db'}",
            "storage_path": str(Path(root) / "ray_results")}


def small_spec(name: str, datasets: Sequence[str] = (A, B), *, store: Path | None = None,
               **over: Any) -> dict[str, Any]:
    """A tiny study spec (a dict, as read from YAML): ``datasets`` at
    ``data/<name>.parquet`` (split1 each), a 16-unit LSTM over 16 frames, 30 iterations
    (pre-trains too) in steps of 10 with evaluations at 10 and 20, seed 0, no experiments
    beyond that; ``store``: :func:`store_settings` under it. ``over``: top-level keys,
    applied by :func:`merged`."""
    d: dict[str, Any] = {
        "name": name,
        "datasets": {n: {"path": f"data/{n}.parquet", "splits": [1]} for n in datasets},
        "model": {"history": 16, "hidden": 8, "batch_size": 4},
        "experiments": {"seeds": [0], "iterations": 30, "pretrain_iterations": 30,
                        "eval_at": [10, 20]},
        "iterations_per_step": 10,
    }
    if store is not None:
        d.update(store_settings(store))
    return merged(d, over)


def write_spec(root: Path, d: Mapping[str, Any], filename: str | None = None) -> Path:
    """``d`` as YAML at ``root / filename`` (default ``<name>.yaml``)."""
    p = Path(root) / (filename or f"{d['name']}.yaml")
    p.write_text(yaml.safe_dump(dict(d)))
    return p


def link_data(src_root: Path, dst_root: Path) -> None:
    """``dst_root/data/*``: symlinks to each file of ``src_root/data`` (a second study
    folder over the same tables, with a store of its own)."""
    (Path(dst_root) / "data").mkdir(parents=True, exist_ok=True)
    for f in (Path(src_root) / "data").iterdir():
        link = Path(dst_root) / "data" / f.name
        if not link.exists():
            link.symlink_to(f)
