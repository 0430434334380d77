"""Small synthetic kitchens on disk and the tiny study specs the study-layer tests run
(spec, runner, packing, growing graph, cluster, plan, search results), and a fake study's
finished runs for the query API and the report (:data:`RUNS`, :func:`populate`). The
fixtures that use them (``kitchens_root``, ``local_ray``) are in ``tests/conftest.py``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from data_prep.synth import make_kitchens
from data_prep.table import write_table
from study.mlflow_layout import TaskMeta
from study.spec import StudySpec, parse_spec
from study.tracking import log_result

__all__ = ["A", "B", "C", "RUNS", "S1", "S2", "edge_and_search_spec", "link_data", "merged",
           "plan_spec", "populate", "small_spec", "store_settings", "task_id",
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


def edge_and_search_spec(root: Path, name: str = "rt", **over: Any) -> Path:
    """A spec file under ``root``: one edge A -> B (transfer and joint), B's baseline and an
    ASHA search into B (the runner's end-to-end study); ``over`` as :func:`small_spec`."""
    d = small_spec(name, store=root, experiments={
        "baselines": [B], "edges": [{"source": A, "target": B, "mode": ["transfer", "joint"]}]},
        search={"space": "small", "target": B, "num_samples": 2, "max_concurrent": 2,
                "iterations": 20, "asha": {"grace_period": 10, "reduction_factor": 2}})
    return write_spec(root, merged(d, over))


def plan_spec(**experiments: Any) -> StudySpec:
    """A parsed spec over three datasets a (splits 1, 2), b (1), c (1, 3) that are never
    read (the planner's tests): two seeds, a search into b; ``experiments`` overrides."""
    ex = {"seeds": [0, 1], "iterations": 40, "pretrain_iterations": 60, "eval_at": [10, 20]}
    ex.update(experiments)
    return parse_spec(
        {
            "name": "p",
            "datasets": {
                "a": {"path": "a.parquet", "splits": [1, 2]},
                "b": {"path": "b.parquet", "splits": [1]},
                "c": {"path": "c.parquet", "splits": [1, 3]},
            },
            "model": {"hidden": 8},
            "experiments": ex,
            "search": {"space": "small", "target": "b", "num_samples": 5,
                       "asha": {"grace_period": 10, "reduction_factor": 2}},
        },
        base_dir="/data/study",
    )


# -- a fake study's runs (the query API, the report) --------------------------------------------

# (kind, mode, source, source_split, target, target_split, arrangement, seed, frame_acc,
#  curve {iteration: frame_acc} before the end or None). Every run reports frame_acc at its
#  evaluation points and at the end (iteration 1024), as the trainable does: frame_acc's
#  step history is the convergence curve.
S1, S2 = "split1", "split2"
RUNS = [
    # no-transfer baselines
    ("baseline", "none", "", "", "b", S1, "", 0, 50.0, {512: 30.0}),
    ("baseline", "none", "", "", "b", S1, "", 1, 52.0, {512: 31.0}),
    ("baseline", "none", "", "", "b", S1, "", 2, 54.0, {512: 32.0}),
    ("baseline", "none", "", "", "b", S2, "", 0, 60.0, {512: 20.0}),
    ("baseline", "none", "", "", "c", S1, "", 0, 40.0, None),
    ("baseline", "none", "", "", "c", S1, "", 1, 41.0, None),
    # pre-training (not a baseline, not a transfer)
    ("pretrain", "none", "", "", "a", S1, "", 0, 70.0, None),
    ("pretrain", "none", "", "", "b", S1, "", 0, 71.0, None),
    ("pretrain", "none", "", "", "c", S1, "", 0, 72.0, None),
    # a -> b transfer, concat: diffs on split1 5, 4, 6; on split2 -2
    ("finetune", "transfer", "a", S1, "b", S1, "concat", 0, 55.0, {512: 45.0}),
    ("finetune", "transfer", "a", S1, "b", S1, "concat", 1, 56.0, {512: 46.0}),
    ("finetune", "transfer", "a", S1, "b", S1, "concat", 2, 60.0, {512: 47.0}),
    ("finetune", "transfer", "a", S1, "b", S2, "concat", 0, 58.0, {512: 44.0}),
    # a -> b transfer, merged, one seed: diff 7
    ("finetune", "transfer", "a", S1, "b", S1, "merged", 0, 57.0, {512: 47.0}),
    # c -> b transfer: diffs -1, 1, -1
    ("finetune", "transfer", "c", S1, "b", S1, "concat", 0, 49.0, None),
    ("finetune", "transfer", "c", S1, "b", S1, "concat", 1, 53.0, None),
    ("finetune", "transfer", "c", S1, "b", S1, "concat", 2, 53.0, None),
    # a -> c transfer: diffs 5, 2
    ("finetune", "transfer", "a", S1, "c", S1, "concat", 0, 45.0, None),
    ("finetune", "transfer", "a", S1, "c", S1, "concat", 1, 43.0, None),
    # b -> c transfer: seed 0 diff 2; seed 5 has no baseline (no gain)
    ("finetune", "transfer", "b", S1, "c", S1, "concat", 0, 42.0, None),
    ("finetune", "transfer", "b", S1, "c", S1, "concat", 5, 99.0, None),
    # a -> b joint: diffs 1, 1, 1 (zero variance)
    ("joint", "joint", "a", S1, "b", S1, "concat", 0, 51.0, None),
    ("joint", "joint", "a", S1, "b", S1, "concat", 1, 53.0, None),
    ("joint", "joint", "a", S1, "b", S1, "concat", 2, 55.0, None),
]


def task_id(run) -> str:
    """The task id of a :data:`RUNS` row."""
    kind, mode, src, ssplit, tgt, tsplit, arr, seed = run[:8]
    return f"{kind}/{src}:{ssplit}>{tgt}:{tsplit}/{arr}/s{seed}"


def populate(logger, name: str, study_hash: str = "hq", runs=RUNS) -> str:
    """Write ``runs`` as a study's finished task runs through ``logger`` (any ``RunLogger``),
    with one FAILED attempt whose absurd value must count nowhere; the study run's id."""
    sid = logger.start_study(name, study_hash)
    for run in runs:
        kind, mode, src, ssplit, tgt, tsplit, arr, seed, acc, curve = run
        meta = TaskMeta(task_id(run), kind, mode, tgt, tsplit, src, ssplit, arr, seed)
        rid = logger.start_task(sid, meta, params={"iterations": 1024, "lr": 0.001})
        for it, v in (curve or {}).items():
            log_result(logger, rid, {"iteration": it, "loss": 1.0, "frame_acc": v})
        log_result(logger, rid, {"iteration": 1024, "frame_acc": acc, "input_acc": acc - 20,
                                 "edit": acc - 5, "f1@10": acc - 10, "f1@25": acc - 15,
                                 "f1@50": acc - 30})
        if run is runs[0]:
            # what a store written before issue 11 also holds: ignored by the query
            logger.log_metrics(rid, {"curve.frame_acc.256": 1.0, "curve.frame_acc.1024": 2.0})
        logger.end_task(rid)
    # a failed attempt with an absurd number: must not count anywhere
    bad = logger.start_task(sid, TaskMeta("finetune/bad", "finetune", "transfer", "b", S1,
                                          "a", S1, "concat", 3))
    logger.log_metrics(bad, {"frame_acc": 99.0}, step=10)
    logger.end_task(bad, "FAILED", reason="boom")
    logger.end_study(sid)
    return sid
