"""A registered model other than the LSTM through the whole platform: an MS-TCN study
(baseline, transfer, joint, a search with ASHA) on a real local Ray with a real MLflow store,
its logged models, and 2048-d features (as the MS-TCN I3D release) trained on directly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from study.plan import make_plan
from study.spec import SpecError
from study.spec_data import open_study
from study.tracking import MlflowRunLogger
from tests.study_data import A, B, small_spec, write_spec

ray = pytest.importorskip("ray")

ROOT = Path(__file__).resolve().parents[1]
TCN = {"kind": "mstcn", "stages": 2, "layers": 3, "maps": 8, "window": 64, "batch_size": 2,
       "lr": 0.01}


def _tcn_spec(root: Path, name: str, **over) -> Path:
    d = small_spec(name, store=root, model=TCN, experiments={
        "baselines": [B], "edges": [{"source": A, "target": B, "mode": ["transfer", "joint"]}]},
        search={"space": "mstcn_small", "target": B, "num_samples": 2, "max_concurrent": 2,
                "iterations": 20, "asha": {"grace_period": 10, "reduction_factor": 2}})
    d["model"] = dict(TCN)  # replace, not merge, the LSTM defaults
    d.update(over)
    return write_spec(root, d)


def test_tcn_study_end_to_end(kitchens_root, local_ray):
    from study.runner import run_study

    loaded = open_study(_tcn_spec(kitchens_root, "tcn"))
    out = run_study(loaded)
    assert out.status == "FINISHED", out
    plan = make_plan(loaded.spec)
    assert sorted(out.finished) == sorted(plan.ids) and not out.failed
    runs = MlflowRunLogger(loaded.spec.tracking_uri).study_runs("tcn")
    tasks = [r for r in runs if r.role == "task"]
    assert len(tasks) == len(plan) and all(r.status == "FINISHED" for r in tasks)
    for r in tasks:  # every task trained the MS-TCN, with its params flat in MLflow
        assert r.params["kind"] == "mstcn" and r.params["stages"] == "2"
        assert "history" not in r.params
    ft = next(r for r in tasks if r.tags["ks.kind"] == "finetune")
    assert 0 <= ft.metrics["frame_acc"] <= 100 and ft.metrics["iteration"] == 30
    trials = [r for r in runs if r.role == "trial"]
    assert len(trials) == 2 and all(t.params["kind"] == "mstcn" for t in trials)
    assert all("maps" in t.params for t in trials)


def test_a_space_of_another_model_and_packing_are_refused(kitchens_root):
    bad = _tcn_spec(kitchens_root, "tcn-bad", search={"space": "small", "target": B,
                                                      "num_samples": 2},
                    packing={"max_trials": 4})
    with pytest.raises(SpecError) as e:
        open_study(bad)
    text = str(e.value)
    assert "space 'small' searches a lstm model, but model.kind is 'mstcn'" in text
    assert "model.kind 'mstcn' does not pack" in text


def test_demo_tcn_spec_is_valid():
    d = yaml.safe_load((ROOT / "studies" / "demo_tcn.yaml").read_text())
    from study.spec import StudySpec

    spec = StudySpec.model_validate(d)
    assert spec.model["kind"] == "mstcn"


def test_2048d_features_train_directly(tmp_path):
    """A user with I3D features (2048-d, not class scores) trains and transfers on them: the
    features pass through unchanged, transfer moves the class rows only."""
    import torch

    from data_prep.table import write_table
    from tests.helpers import recipe_table
    from trainables.train_job import TrainRun

    torch.set_num_threads(1)
    t = write_table(recipe_table(videos=6, classes=5, name="tgt", seed=1, feature_dim=2048),
                    tmp_path / "t.parquet")
    s = write_table(recipe_table(videos=6, classes=4, name="src", seed=2, feature_dim=2048),
                    tmp_path / "s.parquet")
    for kind in ({"kind": "mstcn", "stages": 2, "layers": 3, "maps": 8},
                 {"history": 16, "hidden": 8}):
        run = TrainRun.create({**kind, "batch_size": 2, "lr": 0.01, "target_path": str(t),
                               "source_path": str(s), "mode": "transfer",
                               "arrangement": "concat", "pretrain_iterations": 3,
                               "iterations": 3})
        res = run.run()
        assert run.trainer.input_dim == 2048 and not run.trainer.feature_mapped
        assert res["input_acc"] is None and np.isfinite(res["loss"])
