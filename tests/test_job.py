"""What every training job shares (``trainables.job``): the device rule and the checkpoint
file, whose foreign or broken inputs are one clean :class:`CheckpointError`. The two jobs'
own checkpoints given to each other: tests/test_cnn.py."""

from __future__ import annotations

import json
import logging
import os
import random
import sys
import zipfile

import pytest
import torch

from data_prep.errors import DataError
from trainables.job import (
    Checkpoint,
    CheckpointError,
    ConfigError,
    read_checkpoint,
    resolve_device,
    write_checkpoint,
)

CUDA = torch.cuda.is_available()
FORMAT = "kitchen-study.test/1"


# -- devices ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [None, "auto"])
def test_auto_device_is_cuda_when_available(name):
    assert resolve_device(name).type == ("cuda" if CUDA else "cpu")


def test_named_devices_and_bad_names():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(ConfigError, match="unknown device 'gpu'"):
        resolve_device("gpu")
    if CUDA:
        assert resolve_device("cuda").type == "cuda"
        with pytest.raises(ConfigError, match="'cuda:99' requested but only"):
            resolve_device("cuda:99")
    else:
        with pytest.raises(ConfigError, match="'cuda' requested but CUDA is not available"):
            resolve_device("cuda")


def test_a_trial_uses_cuda_only_when_it_holds_a_gpu(caplog):
    assert resolve_device(None, gpus=0) == torch.device("cpu")
    assert resolve_device("cpu", gpus=1) == torch.device("cpu")  # a named device wins
    with caplog.at_level(logging.WARNING, logger="trainables.job"):
        device = resolve_device(None, gpus=0.5)
    if CUDA:
        assert device.type == "cuda" and not caplog.records
    else:
        assert device.type == "cpu" and "CUDA is not available" in caplog.text


def test_job_module_imports_without_torch():
    import subprocess

    code = "import sys, trainables.job, trainables.lstm_config, trainables.cnn_config; " \
           "sys.exit('torch' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    assert subprocess.run([sys.executable, "-c", code], env=env).returncode == 0


# -- checkpoint files -----------------------------------------------------------------------------


def _checkpoint(iteration: int = 3) -> Checkpoint:
    meta = {"config": {"hidden": 4}, "iteration": iteration, "classes": ["a", "b"]}
    return Checkpoint(FORMAT, meta, {"model": {"w": torch.arange(4.0)}})


def test_checkpoint_round_trip_is_plain_tensors(tmp_path):
    path = write_checkpoint(tmp_path / "sub" / "c.pt", _checkpoint())
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == FORMAT and json.loads(raw["meta"])["iteration"] == 3
    c = read_checkpoint(path, FORMAT)
    assert c.format == FORMAT and c.iteration == 3 and c.meta["classes"] == ["a", "b"]
    assert torch.equal(c.state["model"]["w"], torch.arange(4.0)) and c.path == path
    assert [p.name for p in path.parent.iterdir()] == ["c.pt"]  # no temporary file left


def _zip_not_torch(path):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("a", "b")


def _pickled_object(path):
    torch.save({"format": FORMAT, "when": logging.getLogger("x")}, path)


def _foreign_tag(path):
    write_checkpoint(path, Checkpoint("kitchen-study.other/1", _checkpoint().meta, {}))


def _bad_meta(path):
    torch.save({"format": FORMAT, "meta": "{not json"}, path)


def _no_iteration(path):
    torch.save({"format": FORMAT, "meta": json.dumps({"config": {}})}, path)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.write_bytes(b""), "not a loadable checkpoint (empty file)"),
        (lambda p: p.write_bytes(random.Random(0).randbytes(4096)),
         "not a loadable checkpoint (not a torch.save"),
        (lambda p: p.write_text("not a checkpoint"), "not a loadable checkpoint (not a torch.save"),
        (_zip_not_torch, "not a loadable checkpoint ("),
        (_pickled_object, "it holds pickled objects"),
        (lambda p: torch.save(torch.zeros(3), p), "not a kitchen-study checkpoint"),
        (lambda p: torch.save({"format": 1}, p), "not a kitchen-study checkpoint"),
        (_foreign_tag, f"a kitchen-study.other/1 checkpoint, not the {FORMAT}"),
        (_bad_meta, f"broken {FORMAT} checkpoint metadata"),
        (_no_iteration, f"broken {FORMAT} checkpoint metadata"),
        (lambda p: None, "no such checkpoint file"),
    ],
)
def test_anything_but_a_checkpoint_is_one_clean_error(tmp_path, make, message):
    path = tmp_path / "c.pt"
    make(path)
    with pytest.raises(CheckpointError) as e:
        read_checkpoint(path, FORMAT)
    text = str(e.value)
    assert isinstance(e.value, DataError) and e.value.path == path
    assert text.startswith(f"{path}: ") and message in text, text
    assert "\n" not in text and "weights_only" not in text  # one line, no advice to unpickle
