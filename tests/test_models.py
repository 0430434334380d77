"""Trained LSTMs as MLflow models (a real SQLite store): logged with a signature, loaded with
``mlflow.pyfunc.load_model``, registered, and streamed frame by frame."""

from __future__ import annotations

import os

import mlflow
import numpy as np
import pytest
import torch

from study.models import log_lstm_model, register_model
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
    model_uri = log_lstm_model(run.info.run_id, ckpt, tracking_uri=uri)
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
