"""Trained temporal models as MLflow models (a real SQLite store): logged with a signature,
loaded with ``mlflow.pyfunc.load_model`` (models from code: never a pickle), registered, and
streamed frame by frame."""

from __future__ import annotations

import os

import mlflow
import numpy as np
import pytest
import torch

from study.models import log_temporal_model, register_model, using_tracking_uri
from tests.helpers import recipe_table
from trainables.arrangements import make_arrangement
from trainables.predictor import FramewisePredictor
from trainables.split_data import SplitData
from trainables.train_config import TrainConfig
from trainables.train_job import Trainer, save_checkpoint


@pytest.fixture
def logged(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    data = SplitData.load(recipe_table(videos=6, classes=5, name="tgt", seed=3), 1)
    tr = Trainer(TrainConfig(history=8, hidden=8, batch_size=4, lr=0.02),
                 make_arrangement("identity", data.space), data)
    tr.train(20)
    ckpt = save_checkpoint(tmp_path / "lstm.pt", tr.checkpoint())
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    exp = client.create_experiment("models", artifact_location=str(tmp_path / "artifacts"))
    run = client.create_run(exp)
    client.set_terminated(run.info.run_id)
    env = os.environ.get("MLFLOW_TRACKING_URI")
    model_uri = log_temporal_model(run.info.run_id, ckpt, tracking_uri=uri)
    # logging a model must not change which store this process resolves to afterwards
    assert os.environ.get("MLFLOW_TRACKING_URI") == env
    # loading by runs:/ and models:/ URIs reads the process's store, as a user's session does
    previous = mlflow.get_tracking_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    yield tr, data, model_uri, uri, run.info.run_id
    mlflow.set_tracking_uri(previous)


def test_pyfunc_predicts_what_the_batch_evaluation_predicted(logged):
    tr, data, model_uri, uri, run_id = logged
    model = mlflow.pyfunc.load_model(model_uri)
    inputs = model.metadata.get_input_schema().inputs
    assert inputs[0].shape == (-1, 5)
    assert model.metadata.metadata["classes"] == list(data.space.classes)
    batch = tr.predict()
    for v, expected in zip(data.test, batch, strict=True):
        frames = data.table.features[data.table.offsets[v]:data.table.offsets[v + 1]]
        probs = model.predict(frames)
        assert probs.shape == (len(frames), 5)
        np.testing.assert_array_equal(probs.argmax(1), expected)
    # logging a model leaves the run as it was (finished)
    assert mlflow.MlflowClient(uri).get_run(run_id).info.status == "FINISHED"


def test_streaming_from_mlflow_equals_the_pyfunc(logged):
    tr, data, model_uri, uri, _ = logged
    p = FramewisePredictor.from_mlflow(model_uri, tracking_uri=uri)
    v = data.test[0]
    frames = data.table.features[data.table.offsets[v]:data.table.offsets[v + 1]]
    stepped = np.stack([p.step(f) for f in frames])
    np.testing.assert_allclose(stepped, mlflow.pyfunc.load_model(model_uri).predict(frames),
                               atol=1e-5)


def test_register_makes_versions(logged):
    _, _, model_uri, uri, _ = logged
    assert int(register_model(model_uri, "kitchen-lstm", tracking_uri=uri).version) == 1
    assert int(register_model(model_uri, "kitchen-lstm", tracking_uri=uri).version) == 2
    loaded = mlflow.pyfunc.load_model("models:/kitchen-lstm/2")
    assert loaded.metadata.metadata["input_dim"] == 5


def _model_dir(uri: str, run_id: str):
    from pathlib import Path

    art = mlflow.MlflowClient(uri).get_run(run_id).info.artifact_uri
    # MLflow 3 keeps logged models under the experiment's models/ folder: find ours by name
    root = Path(art.removeprefix("file://")).parents[1]
    found = [p.parent for p in root.rglob("MLmodel")]
    assert len(found) == 1, found
    return found[0]


def test_loading_a_model_never_unpickles(logged, tmp_path):
    """Models from code: the logged model has no python_model.pkl, and a planted pickle whose
    __reduce__ would run a command is never opened by the documented loader."""
    import pickle

    tr, data, model_uri, uri, run_id = logged
    d = _model_dir(uri, run_id)
    assert not list(d.rglob("*.pkl")), list(d.rglob("*"))
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (d / "python_model.pkl").write_bytes(pickle.dumps(Evil()))
    model = mlflow.pyfunc.load_model(model_uri)
    v = data.test[0]
    model.predict(data.table.features[data.table.offsets[v]:data.table.offsets[v + 1]])
    assert not marker.exists()


def test_a_checkpoint_changed_after_logging_is_refused(logged):
    tr, data, model_uri, uri, run_id = logged
    d = _model_dir(uri, run_id)
    (ckpt,) = [p for p in d.rglob("*.pt")]
    other = Trainer(TrainConfig(history=8, hidden=8, batch_size=4, lr=0.02, seed=9),
                    make_arrangement("identity", data.space), data)
    save_checkpoint(ckpt, other.checkpoint())  # a valid checkpoint, just not the logged one
    with pytest.raises(Exception, match="does not match the digest"):
        mlflow.pyfunc.load_model(model_uri)


def test_an_offline_tcn_logs_and_predicts_whole_videos(tmp_path):
    torch.set_num_threads(1)
    data = SplitData.load(recipe_table(videos=6, classes=5, name="tgt", seed=3), 1)
    tr = Trainer(TrainConfig(kind="mstcn", stages=2, layers=3, maps=8, batch_size=2, lr=0.01),
                 make_arrangement("identity", data.space), data)
    tr.train(5)
    ckpt = save_checkpoint(tmp_path / "tcn.pt", tr.checkpoint())
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    run = client.create_run(client.create_experiment(
        "tcn", artifact_location=str(tmp_path / "artifacts")))
    model_uri = log_temporal_model(run.info.run_id, ckpt, tracking_uri=uri)
    # the models module's own context: sets the URI for the call only, and restores
    # $MLFLOW_TRACKING_URI too (mlflow.set_tracking_uri exports it: it would leak into
    # every later test)
    with using_tracking_uri(uri):
        model = mlflow.pyfunc.load_model(model_uri)
    meta = model.metadata.metadata
    assert meta["model_kind"] == "mstcn" and meta["causal"] is False
    for v, expected in zip(data.test, tr.predict(), strict=True):
        frames = data.table.features[data.table.offsets[v]:data.table.offsets[v + 1]]
        np.testing.assert_array_equal(model.predict(frames).argmax(1), expected)


def _one_video(data):
    v = data.test[0]
    return data.table.features[data.table.offsets[v]:data.table.offsets[v + 1]]


def test_logged_models_are_told_apart_and_carry_their_metrics(logged, tmp_path):
    """What the MLflow UI shows of a logged model (issue 19): every task's model is named
    ``model`` (so ``runs:/<run>/model`` finds it), told apart by its tags and kind, and its
    page lists the metrics linked to it (MLflow 3 ``model_id``), the gain added later."""
    from study.models import log_model_metrics, logged_model_id

    tr, data, _, uri, run_id = logged
    client = mlflow.MlflowClient(uri)
    run = client.create_run(client.get_run(run_id).info.experiment_id)
    rid = run.info.run_id
    client.set_terminated(rid)
    ckpt = save_checkpoint(tmp_path / "other.pt", tr.checkpoint())
    log_temporal_model(rid, ckpt, tracking_uri=uri,
                       tags={"ks.task_id": "finetune:a>b:s0", "ks.run_name": "finetune a→b"},
                       metrics={"frame_acc": 61.5, "edit": 40.0}, step=20)
    mid = logged_model_id(client, rid)
    assert mid is not None and mid != logged_model_id(client, run_id)
    log_model_metrics(client, rid, mid, {"gain.frame_acc": 3.25})
    model = client.get_logged_model(mid)
    assert model.name == "model" and model.model_type == "lstm"
    assert model.tags["ks.task_id"] == "finetune:a>b:s0"
    assert model.tags["ks.run_name"] == "finetune a→b"
    assert {m.key: m.value for m in model.metrics} == {"frame_acc": 61.5, "edit": 40.0,
                                                       "gain.frame_acc": 3.25}
    after = client.get_run(rid)
    assert after.info.status == "FINISHED" and after.data.metrics["gain.frame_acc"] == 3.25


def test_an_interrupted_model_log_leaves_a_finished_run_finished(logged, monkeypatch,
                                                                 tmp_path):
    """Ctrl-C while a finished task's model is being logged (the driver logs it right after
    the task ends): the run stays FINISHED, as it was (MLflow's ``with start_run`` would end
    it FAILED, with no reason). The interrupt is injected where the upload happens."""
    tr, data, _, uri, run_id = logged

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(mlflow.pyfunc, "log_model", interrupted)
    client = mlflow.MlflowClient(uri)
    ckpt = save_checkpoint(tmp_path / "again.pt", tr.checkpoint())
    with pytest.raises(KeyboardInterrupt):
        log_temporal_model(run_id, ckpt, tracking_uri=uri)
    assert client.get_run(run_id).info.status == "FINISHED"
    assert mlflow.active_run() is None


def test_a_registered_version_says_what_it_is_without_mlflow_warnings(logged, caplog):
    """``register_model`` registers from the logged model's ``models:/<id>`` (no "has no
    artifacts at artifact path 'model'" warning), with a description and tags."""
    import logging

    from study.models import logged_model_id

    _, _, model_uri, uri, run_id = logged
    caplog.set_level(logging.WARNING)
    v = register_model(model_uri, "described", tracking_uri=uri,
                       description="the best pair's seed 0", tags={"ks.target": "b"})
    assert not [r for r in caplog.records if "no artifacts" in r.getMessage()]
    client = mlflow.MlflowClient(uri)
    got = client.get_model_version("described", v.version)
    assert got.description == "the best pair's seed 0" and got.tags == {"ks.target": "b"}
    assert got.run_id == run_id
    assert got.source == f"models:/{logged_model_id(client, run_id)}"
    assert mlflow.pyfunc.load_model("models:/described/1").metadata.metadata["input_dim"] == 5


def test_a_read_only_array_predicts_without_a_warning(logged, tmp_path):
    """Frames in a read-only array (a pyarrow or pandas zero-copy column) predict without
    torch's non-writable-array warning. In a fresh interpreter: torch warns once per
    process."""
    import subprocess
    import sys

    tr, data, model_uri, uri, _ = logged
    frames = np.ascontiguousarray(_one_video(data), dtype=np.float32)
    np.save(tmp_path / "frames.npy", frames)
    ckpt = save_checkpoint(tmp_path / "p.pt", tr.checkpoint())
    code = ("import sys, numpy as np, warnings\n"
            "from trainables.predictor import FramewisePredictor\n"
            "f = np.load(sys.argv[1], mmap_mode='r')\n"  # a read-only array
            "assert not f.flags.writeable\n"
            "p = FramewisePredictor.from_checkpoint(sys.argv[2])\n"
            "with warnings.catch_warnings():\n"
            "    warnings.simplefilter('error')\n"
            "    out = p.predict_video(f)\n"
            "    p.reset(); p.step(f[0])\n"
            "print(out.shape)\n")
    res = subprocess.run([sys.executable, "-c", code, str(tmp_path / "frames.npy"),
                          str(ckpt)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == f"({len(frames)}, 5)"
