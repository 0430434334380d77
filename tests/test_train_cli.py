"""``kitchen-study train``: one JSON object, the curve, checkpoints, and exit 2 on bad input."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from typer.testing import CliRunner

from data_prep.table import write_table
from study.cli import app
from tests.helpers import recipe_table
from trainables import train_cli

SMALL = ["--history", "16", "--hidden", "16", "--batch", "8", "--lr", "0.01"]


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    torch.set_num_threads(1)
    # a tracking URI in the caller's environment would log every run of this module there
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture
def data(tmp_path):
    t = write_table(recipe_table(videos=6, classes=6, name="tgt", seed=1), tmp_path / "t.parquet")
    s = write_table(recipe_table(videos=6, classes=4, name="src", seed=2), tmp_path / "s.parquet")
    return t, s


def invoke(*args):
    return CliRunner().invoke(app, ["train", *map(str, args)])


def test_json_result_with_curve_and_checkpoint(data, tmp_path):
    ck = tmp_path / "out" / "lstm.pt"
    r = invoke(data[0], "--split", "1", "--iterations", "12", "--eval-at", "4,8", *SMALL,
               "--save", ck, "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    for key in ("frame_acc", "input_acc", "edit", "f1@10", "f1@25", "f1@50", "iterations",
                "frames_per_s", "curve"):
        assert key in out, key
    assert out["iterations"] == 12 and out["frames_per_s"] > 0
    assert list(out["curve"]) == ["4", "8", "12"] and out["curve"]["12"] == out["frame_acc"]
    assert ck.is_file() and out["checkpoint"] == str(ck)

    # the saved model fine-tunes further on the same dataset: --init loads it
    r2 = invoke(data[0], "--iterations", "2", *SMALL, "--init", ck, "--json")
    assert r2.exit_code == 0, r2.output


def test_progress_on_stderr_with_json(data):
    """--json keeps stdout one JSON object; progress lines go to stderr, one per step."""
    r = invoke(data[0], "--iterations", "12", "--set", "iterations_per_step=4", *SMALL, "--json")
    assert r.exit_code == 0, r.output
    json.loads(r.stdout)  # nothing but the JSON object on stdout
    err = r.stderr.splitlines()
    assert err[0] == "training 12 iterations"
    steps = [ln for ln in err if ln.startswith("iteration ")]
    assert [ln.split(":")[0] for ln in steps] == [
        "iteration 4/12 (33%)", "iteration 8/12 (67%)", "iteration 12/12 (100%)"]
    assert "frame_acc" in steps[-1]  # the final evaluation
    # the time left, labelled as an estimate (not on the last line: nothing is left)
    assert "left (estimate)" in steps[1] and "left" not in steps[-1]


def test_progress_is_paced_by_the_clock_not_by_steps(data, monkeypatch):
    """A step of 1000 iterations (the whole run) still shows progress while it trains, in
    pre-training too: with PROGRESS_EVERY_S at 0 every iteration is due for a line."""
    monkeypatch.setattr(train_cli, "PROGRESS_EVERY_S", 0.0)
    r = invoke(data[0], "--source", data[1], "--mode", "transfer", "--pretrain-iterations", "3",
               "--iterations", "4", "--set", "iterations_per_step=1000", *SMALL, "--json")
    assert r.exit_code == 0, r.output
    err = r.stderr.splitlines()
    assert err[0] == "training 4 iterations after pre-training 3 on the source"
    assert [ln.split(",")[0] for ln in err[1:4]] == [
        "pre-training iteration 1/3 (33%)", "pre-training iteration 2/3 (67%)",
        "pre-training iteration 3/3 (100%)"]
    assert [ln.split(",")[0].split(":")[0] for ln in err[4:]] == [
        "iteration 1/4 (25%)", "iteration 2/4 (50%)", "iteration 3/4 (75%)",
        "iteration 4/4 (100%)", "iteration 4/4 (100%)"]  # the last: the step's own line
    assert "left (estimate)" in err[5] and "frame_acc" in err[-1]


def test_progress_lines_come_every_few_seconds():
    """The pacing rule on a fake clock (1 s per optimiser step): a line once
    PROGRESS_EVERY_S have passed since the last one, none in between."""
    now = [0.0]
    spec = SimpleNamespace(iterations=40, mode="none", init_checkpoint=None, source_path=None,
                           pretrain_iterations=None)
    lines: list[str] = []
    progress = train_cli._Progress(SimpleNamespace(spec=spec, tick=None), every_s=5.0,
                                   clock=lambda: now[0])
    progress.console.print = lambda text, **_: lines.append(text)
    with progress:
        for it in range(1, 21):
            now[0] += 1.0
            progress.tick("train", it)
    assert lines[0] == "training 40 iterations"
    assert [ln.split(" (")[0] for ln in lines[1:]] == [
        "iteration 5/40", "iteration 10/40", "iteration 15/40", "iteration 20/40"]
    # 20 steps took 20 s (the fake clock): half the run, so about 20 s left
    assert lines[-1].endswith("~20 s left (estimate)")


def test_transfer_pretrains_then_fine_tunes(data):
    r = invoke(data[0], "--source", data[1], "--source-split", "2", "--mode", "transfer",
               "--arrangement", "concat", "--pretrain-iterations", "4", "--iterations", "4",
               *SMALL, "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["pretrain_iterations"] == 4 and out["iterations"] == 4
    assert "after pre-training 4 on the source" in r.stderr


def test_human_summary(data):
    r = invoke(data[0], "--iterations", "3", *SMALL, "--set", "eval_reset=true")
    assert r.exit_code == 0, r.output
    assert "frame_acc" in r.stdout and "3 iterations" in r.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "histroy=3"], "unknown key 'histroy'"),
        (["--set", "nonsense"], "--set expects KEY=VALUE"),
        (["--history", "0"], "history: Input should be greater than or equal to 1"),
        (["--split", "7"], "has no split 'split7'"),
        (["--source", "{s}"], "--source needs --mode"),
        (["--source", "{s}", "--mode", "none"], "source_path is set but mode is 'none'"),
        (["--mode", "joint"], "mode 'joint' needs source_path"),
        (["--cell", "gru"], "cell: Input should be 'cudnn' or 'peephole'"),
        (["--joint-ratio", "5"], "joint ratio must look like 5:3"),
        (["--init", "{missing}"], "no such checkpoint file"),
        (["--device", "gpu"], "unknown device 'gpu'"),
    ],
)
def test_config_errors_exit_2(data, tmp_path, args, message):
    args = [a.format(s=data[1], missing=tmp_path / "nope.pt") for a in args]
    r = invoke(data[0], "--iterations", "1", *SMALL, *args)
    assert r.exit_code == 2, r.output
    assert message in r.stderr and "Traceback" not in r.output


def test_missing_data_file_exits_2(tmp_path):
    r = invoke(tmp_path / "absent.parquet", "--iterations", "1")
    assert r.exit_code == 2 and "no such file" in r.stderr


def test_mismatched_checkpoint_exits_2(data, tmp_path):
    ck = tmp_path / "src.pt"
    assert invoke(data[1], "--iterations", "1", *SMALL, "--save", ck).exit_code == 0
    r = invoke(data[0], "--iterations", "1", *SMALL, "--init", ck)
    assert r.exit_code == 2 and "'src' (4 classes)" in r.stderr


# -- MLflow, only when asked ------------------------------------------------------------------


def _mlflow_runs(uri: str, experiment: str):
    import mlflow

    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no experiment {experiment!r}"
    return client, client.search_runs([exp.experiment_id])


def test_tracking_uri_logs_one_run(data, tmp_path):
    from trainables.train_job import load_checkpoint

    (tmp_path / "store").mkdir()
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    r = invoke(data[0], "--iterations", "12", "--eval-at", "4,8", "--set",
               "iterations_per_step=4", *SMALL, "--tracking-uri", uri, "--experiment", "mine",
               "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    client, runs = _mlflow_runs(uri, "mine")
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    # params: the spec's flat form (the model block's keys at the top level)
    p = run.data.params
    assert p["history"] == "16" and p["hidden"] == "16" and p["batch_size"] == "8"
    assert p["mode"] == "none" and p["iterations"] == "12" and p["target_path"] == str(data[0])
    assert "model" not in p
    # metrics: every step's loss, the evaluations at step = iteration
    curve = client.get_metric_history(run.info.run_id, "frame_acc")
    assert [(m.step, m.value) for m in curve] == [
        (int(k), v) for k, v in out["curve"].items()]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [4, 8, 12]
    assert run.data.metrics["f1_50"] == pytest.approx(out["f1@50"])
    # the final checkpoint is the run's artifact, beside the database
    local = client.download_artifacts(run.info.run_id, "checkpoint/lstm.pt", str(tmp_path))
    assert load_checkpoint(local).iteration == 12
    assert (tmp_path / "store" / "mlartifacts").is_dir()


def test_mlflow_tracking_uri_env_is_honoured(data, tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    r = invoke(data[0], "--iterations", "2", *SMALL)
    assert r.exit_code == 0, r.output
    assert "MLflow run " in r.stdout and "'kitchen-study-train'" in r.stdout
    _, runs = _mlflow_runs(uri, "kitchen-study-train")
    assert [x.info.status for x in runs] == ["FINISHED"]


def test_default_stays_offline(data, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    r = invoke(data[0], "--iterations", "2", *SMALL)
    assert r.exit_code == 0, r.output
    assert "MLflow" not in r.stdout and list(work.iterdir()) == []


def test_bad_tracking_uri_is_one_line_before_training(data, tmp_path):
    r = invoke(data[0], "--iterations", "2", *SMALL, "--tracking-uri", "bogus://x")
    assert r.exit_code == 2, r.output
    assert r.stderr.startswith("error: ") and len(r.stderr.strip().splitlines()) == 1
    assert "unknown tracking URI scheme 'bogus'" in r.stderr
    assert "training" not in r.stderr  # refused before the run started


def test_a_full_disk_ends_the_run_failed_in_one_line(data, tmp_path, monkeypatch):
    """ENOSPC at the final checkpoint write (fault injection: ``torch.save`` writes half a
    file, then fails as a full disk does): one line, exit 2, the MLflow run FAILED (not
    RUNNING), no partial checkpoint left."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"

    def full(obj, f, *a, **kw):
        Path(f).write_bytes(b"half a checkpoint")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(f))

    monkeypatch.setattr(torch, "save", full)
    ck = tmp_path / "out" / "lstm.pt"
    ck.parent.mkdir()
    r = invoke(data[0], "--iterations", "4", *SMALL, "--tracking-uri", uri, "--save", ck)
    assert r.exit_code == 2, r.output
    errors = [ln for ln in r.stderr.splitlines() if "error" in ln.lower()]
    assert errors == [f"error: {ck}: cannot write (No space left on device); nothing was "
                      "changed"]
    assert "Traceback" not in r.output and list(ck.parent.iterdir()) == []
    _, runs = _mlflow_runs(uri, "kitchen-study-train")
    assert [x.info.status for x in runs] == ["FAILED"]
    assert "No space left on device" in runs[0].data.tags["ks.error"]


def test_another_registered_model_trains_from_the_command_line(data, tmp_path):
    """`--set kind=mstcn`: the LSTM's options are not handed to another model (they are sent
    only when given), and its checkpoint says which model it holds."""
    ck = tmp_path / "tcn.pt"
    r = invoke(data[0], "--iterations", "3", "--batch", "2", "--set", "kind=mstcn",
               "--set", "stages=2", "--set", "layers=3", "--set", "maps=8", "--save", ck,
               "--json")
    assert r.exit_code == 0, r.output
    assert 0 <= json.loads(r.stdout)["frame_acc"] <= 100
    from trainables.train_job import load_checkpoint

    assert load_checkpoint(ck).config.model.kind == "mstcn"
    bad = invoke(data[0], "--iterations", "3", "--set", "kind=mstcn", "--history", "16")
    assert bad.exit_code == 2 and "unknown key 'history'" in bad.output
    # an error names the key as written (`model.stages`), not pydantic's union tag in the path
    zero = invoke(data[0], "--iterations", "3", "--set", "kind=mstcn", "--set", "stages=0")
    assert zero.exit_code == 2 and "model.stages: Input should be greater than or equal to 1" \
        in zero.output and "mstcn.stages" not in zero.output, zero.output
