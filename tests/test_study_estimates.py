"""An edge's transferability estimates as the study computes them (study.estimates), without
Ray: from a fine-tune's TrainRun before it trains, on a real pre-train checkpoint."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from study.estimates import (
    TAG_ESTIMATE_ERROR,
    edge_estimates,
    estimate_request,
    result_estimates,
    source_train_labels,
)
from study.plan import make_plan
from study.spec import parse_spec
from tests.study_data import write_kitchens
from trainables.estimator_quality import CONTROLS
from trainables.transferability import ESTIMATORS

A, B = "synth_breakfast", "synth_salads"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("est")
    write_kitchens(root, kitchens=2)
    return root


def _pretrain(data: Path, tmp: Path) -> Path:
    from trainables.train_job import TrainRun

    run = TrainRun.create({"target_path": str(data / f"{A}.parquet"), "history": 16,
                           "hidden": 8, "batch_size": 4, "iterations": 20, "device": "cpu"})
    while not run.done:
        run.step()
    return run.save(tmp / "lstm.pt")


def test_edge_estimates_from_a_fine_tune_before_it_trains(data, tmp_path):
    from trainables.train_job import TrainRun

    ckpt = _pretrain(data, tmp_path)
    for arrangement in ("concat", "merged"):
        run = TrainRun.create({"target_path": str(data / f"{B}.parquet"), "history": 16,
                               "hidden": 8, "batch_size": 4, "iterations": 40,
                               "mode": "transfer", "arrangement": arrangement,
                               "init_checkpoint": str(ckpt), "device": "cpu", "seed": 1})
        est = edge_estimates(run, source_train_labels(str(data / f"{A}.parquet"), "split1"))
        assert set(est) == set(ESTIMATORS) - {"probe"} | set(CONTROLS)
        # the controls: the source's training frames, the target's class names it shares
        labels = source_train_labels(str(data / f"{A}.parquet"), "split1")
        assert est["control_size"] == sum(len(v) for v in labels)
        assert 0.0 <= est["control_overlap"] <= 1.0
        assert all(math.isfinite(v) for v in est.values())
        assert run.trainer.iteration == 0  # nothing of the fine-tune's budget spent
        # the same frames and the same model: the same numbers
        assert edge_estimates(run, source_train_labels(
            str(data / f"{A}.parquet"), "split1")) == est


def test_the_driver_says_where_the_source_is_and_logs_what_comes_back():
    spec = parse_spec({
        "name": "e", "datasets": {A: {"path": "/d/a.parquet", "splits": [1]},
                                  B: {"path": "/d/b.parquet", "splits": [1]}},
        "experiments": {"iterations": 10, "pretrain_iterations": 20, "all_pairs": True,
                        "edges": [{"source": A, "target": B,
                                   "arrangement": "multiple_random"}]},
    })
    plan = make_plan(spec)
    for t in plan.of_kind("finetune"):
        req = estimate_request(t, plan[t.deps[0]])
        src = spec.dataset_path(t.source)
        assert req == {"source_path": str(src), "source_split": t.source_split}
    assert estimate_request(plan.of_kind("baseline")[0], plan.of_kind("baseline")[0]) is None
    m, tags = result_estimates({"estimates": {"logme": 1.5}, "estimate_seconds": 0.2})
    assert m == {"estimate.logme": 1.5, "estimate_seconds": 0.2} and tags == {}
    m, tags = result_estimates({"estimate_error": "ValueError: x", "estimate_seconds": 0.1})
    assert m == {"estimate_seconds": 0.1} and tags == {TAG_ESTIMATE_ERROR: "ValueError: x"}


def test_transferability_and_estimator_quality_from_the_store():
    """Three sources into one target, two seeds: one row per edge with its estimates
    (mean over seeds) and its measured gain; an estimate that ranks the gains perfectly
    has Spearman = Kendall = 1 and hits the best source."""
    from study.mlflow_layout import TaskMeta
    from study.query import StudyResults
    from tests.memory_logger import InMemoryRunLogger

    log = InMemoryRunLogger()
    sid = log.start_study("q", "h")

    def run(tid, kind, mode, source, arr, seed, metrics):
        meta = TaskMeta(tid, kind, mode, "t", "split1", source, "split1" if source else "",
                        arr, seed)
        rid = log.start_task(sid, meta)
        log.log_metrics(rid, metrics, step=10)
        log.end_task(rid)

    gains = {"a": 4.0, "b": 1.0, "c": -2.0, "d": 0.5}
    for seed in (0, 1):
        run(f"baseline:t:s{seed}", "baseline", "none", "", "identity", seed,
            {"frame_acc": 50.0})
        for src, g in gains.items():
            run(f"finetune:{src}>t:s{seed}", "finetune", "transfer", src, "concat", seed,
                {"frame_acc": 50.0 + g + seed, "estimate.logme": g + 0.1 * seed,
                 "estimate.label_structure": -g})
    res = StudyResults.from_logger(log, "q", "h")
    tab = res.transferability()
    assert len(tab) == 4 and list(tab["source"]) == ["a", "b", "c", "d"]
    assert list(tab.columns[:8]) == ["source", "source_split", "target", "target_split",
                                     "mode", "arrangement", "logme", "label_structure"]
    a = tab.iloc[0]
    assert a["logme"] == pytest.approx(4.05) and a["gain"] == pytest.approx(4.5)
    assert a["n_estimated"] == 2 and a["n_seeds"] == 2 and a["ci_low"] < a["gain"]
    q = res.estimator_quality(n_boot=200).set_index("estimator")
    assert q.loc["logme", "spearman"] == pytest.approx(1.0)
    assert q.loc["logme", "kendall"] == pytest.approx(1.0)
    assert q.loc["logme", "top1_hit_pct"] == 100.0
    assert q.loc["label_structure", "spearman"] == pytest.approx(-1.0)
    assert q.loc["label_structure", "top1_hit_pct"] == 0.0


def test_report_has_the_estimates_section_and_a_scatter_per_estimator(tmp_path):
    from study.mlflow_layout import TaskMeta
    from study.query import StudyResults
    from study.report import write_report
    from tests.memory_logger import InMemoryRunLogger

    log = InMemoryRunLogger()
    sid = log.start_study("r", "h")
    for seed in (0, 1):
        for tid, kind, mode, src, m in (
                (f"b:{seed}", "baseline", "none", "", {"frame_acc": 40.0}),
                (f"fa:{seed}", "finetune", "transfer", "a", {"frame_acc": 45.0 + seed,
                                                              "estimate.nce": -0.5}),
                (f"fb:{seed}", "finetune", "transfer", "b", {"frame_acc": 41.0,
                                                              "estimate.nce": -1.5}),
                (f"fc:{seed}", "finetune", "transfer", "c", {"frame_acc": 38.0 - seed,
                                                              "estimate.nce": -2.0})):
            rid = log.start_task(sid, TaskMeta(tid, kind, mode, "t", "split1", src,
                                               "split1" if src else "", "concat", seed))
            log.log_metrics(rid, m, step=10)
            log.end_task(rid)
    md = write_report(StudyResults.from_logger(log, "r", "h"), tmp_path / "rep").read_text()
    assert "## Transferability estimates" in md and "| nce | higher | 3 | 1.00" in md
    assert (tmp_path / "rep" / "estimate_nce.png").is_file()
