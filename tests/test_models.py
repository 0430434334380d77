"""Trained temporal models as MLflow models (a real SQLite store): logged with a signature,
loaded with ``mlflow.pyfunc.load_model`` (models from code: never a pickle), registered, and
streamed frame by frame."""

from __future__ import annotations

import os

import mlflow
import numpy as np
import pytest
import torch

from study.models import log_temporal_model, register_model
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
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        model = mlflow.pyfunc.load_model(model_uri)
    finally:
        mlflow.set_tracking_uri(previous)
    meta = model.metadata.metadata
    assert meta["model_kind"] == "mstcn" and meta["causal"] is False
    for v, expected in zip(data.test, tr.predict(), strict=True):
        frames = data.table.features[data.table.offsets[v]:data.table.offsets[v + 1]]
        np.testing.assert_array_equal(model.predict(frames).argmax(1), expected)
