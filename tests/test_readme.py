"""The README's "Use" examples run as written after ``make demo`` (issue 19, stumble 4).

The blocks are read from README.md by their marker comments (``# README example: NAME``)
and run unchanged in a folder laid out as ``make demo`` leaves the project folder:
``demo_out/demo.yaml`` (a study named ``demo`` over ``synth_breakfast`` and
``synth_salads`` in ``demo_out/data/``) and its MLflow store ``mlflow.db`` in the working
directory. The study's runs are a small fake study of known numbers (no Ray: the runner's
own logging of runs and models is tested in ``test_runner.py``/``test_tracking.py``), with
a real trained LSTM logged as the model of each transfer run, so ``register`` and the
predictor work on a real MLflow model. Shell lines run through the ``kitchen-study`` app.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from study.cli import app
from study.models import log_temporal_model
from study.spec_data import open_study
from study.tracking import MlflowRunLogger
from tests.study_data import A, B, populate, small_spec, write_kitchens, write_spec
from trainables.arrangements import make_arrangement
from trainables.split_data import SplitData
from trainables.train_config import TrainConfig
from trainables.train_job import Trainer, save_checkpoint

ROOT = Path(__file__).resolve().parents[1]
MARK = "# README example: "

# (kind, mode, source, source_split, target, target_split, arrangement, seed, frame_acc,
#  curve): B -> A helps by 5 and 4 points over A's baseline (the pair `register` picks)
RUNS = [
    ("baseline", "none", "", "", A, "split1", "", 0, 50.0, None),
    ("baseline", "none", "", "", A, "split1", "", 1, 52.0, None),
    ("finetune", "transfer", B, "split1", A, "split1", "concat", 0, 55.0, None),
    ("finetune", "transfer", B, "split1", A, "split1", "concat", 1, 56.0, None),
]


def readme_block(name: str) -> tuple[str, str]:
    """(language, code) of the fenced block whose first line is ``# README example: name``."""
    text = (ROOT / "README.md").read_text()
    found = [(lang, code) for lang, code in re.findall(r"```(\w+)\n(.*?)```", text, re.S)
             if code.startswith(f"{MARK}{name}\n")]
    assert len(found) == 1, f"README.md has {len(found)} blocks marked {MARK}{name}"
    return found[0]


@pytest.fixture(scope="module")
def demo_folder(tmp_path_factory) -> Path:
    """A project folder as ``make demo`` leaves it (see the module docstring)."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("project")
    data = write_kitchens(root / "demo_out" / "data", kitchens=2)
    spec = write_spec(root / "demo_out", small_spec("demo", (A, B)), "demo.yaml")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    logger = MlflowRunLogger(uri)
    populate(logger, "demo", study_hash=open_study(spec).hash, runs=RUNS)
    # a real LSTM on the target's data, as each transfer run's model
    target = SplitData.load(data[A], 1)
    trainer = Trainer(TrainConfig(history=8, hidden=8, batch_size=4, lr=0.02),
                      make_arrangement("identity", target.space), target)
    trainer.train(10)
    ckpt = save_checkpoint(root / "lstm.pt", trainer.checkpoint())
    for run in logger.study_runs("demo"):
        if run.role == "task" and run.tags.get("ks.kind") == "finetune":
            log_temporal_model(run.run_id, ckpt, tracking_uri=uri)
    return root


@pytest.fixture
def in_demo_folder(demo_folder, monkeypatch):
    import mlflow

    monkeypatch.chdir(demo_folder)
    had = os.environ.get("MLFLOW_TRACKING_URI")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    previous = mlflow.get_tracking_uri()
    yield demo_folder
    mlflow.set_tracking_uri(previous)  # the model example sets it for this process
    # ... and set_tracking_uri exports $MLFLOW_TRACKING_URI, which would then outrank every
    # later test's spec (monkeypatch restores it only when it existed before)
    if had is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)


def _shell_lines(code: str) -> list[list[str]]:
    return [shlex.split(ln, comments=True) for ln in code.splitlines()
            if ln.strip() and not ln.lstrip().startswith("#")]


def test_the_readme_examples_run_as_written(in_demo_folder, capsys):
    lang, code = readme_block("demo commands")
    assert lang == "sh"
    outputs = []
    for argv in _shell_lines(code):
        assert argv[0] == "kitchen-study", argv
        res = CliRunner().invoke(app, argv[1:])
        assert res.exit_code == 0, f"{shlex.join(argv)}:\n{res.output}"
        outputs.append(res.stdout)
    # what register prints is the URI the model example loads
    assert outputs[-1].strip().splitlines()[-1] == "models:/demo-synth_breakfast/1"

    lang, code = readme_block("query")
    assert lang == "python"
    ns: dict = {}
    exec(compile(code, "README.md (query)", "exec"), ns)
    pairs = ns["s"].best_transfer_pairs(target=A)
    assert pairs.iloc[0]["source"] == B and pairs.iloc[0]["gain"] == pytest.approx(4.5)

    lang, code = readme_block("model")
    assert lang == "python"
    ns = {}
    exec(compile(code, "README.md (model)", "exec"), ns)
    frames, probs, video = ns["video_frames"], ns["probs"], ns["video_probs"]
    classes = ns["p"].classes
    assert len(frames) > 0 and probs.shape == (len(classes),)
    assert video.shape == (len(frames), len(classes))
    # streaming and the pyfunc agree on the last frame
    np.testing.assert_allclose(probs, video[-1], atol=1e-5)
    assert f"last frame: {classes[probs.argmax()]}" in capsys.readouterr().out


def test_the_readme_keeps_two_setup_commands():
    text = (ROOT / "README.md").read_text()
    setup = text.split("## Set up", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    assert [ln.split("#")[0].strip() for ln in setup.strip().splitlines()] == [
        "make demo", "make test"]
