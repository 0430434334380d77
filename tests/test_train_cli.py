"""``kitchen-study train``: one JSON object, the curve, checkpoints, and exit 2 on bad input."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from data_prep.table import write_table
from study.cli import app
from tests.helpers import recipe_table

SMALL = ["--history", "16", "--hidden", "16", "--batch", "8", "--lr", "0.01"]


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


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
    # from the second step on, the time left, labelled as an estimate
    assert "left (estimate)" in steps[1] and "left" not in steps[0]


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
