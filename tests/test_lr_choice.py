"""studies/lr_choice.py: the learning rate is chosen on validation accuracy only, from the
curves studies/validation_curve.py writes; bad input is one line and exit status 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "studies" / "lr_choice.py"
sys.path.insert(0, str(ROOT / "studies"))

import lr_choice  # noqa: E402


def _curve(path: Path, lr: float, seed: int, rows: list[tuple[int, float, float]],
           **config) -> Path:
    cfg = {"table": "t.parquet", "split": "1", "iterations": 3000, "history": 330,
           "hidden": 64, "batch": 16, "lr": lr, "seed": seed, **config}
    path.write_text(json.dumps({"config": cfg, "rows": [
        {"iteration": it, "val_acc": v, "test_acc": t, "test_input": 20.0} for it, v, t in rows
    ]}))
    return path


def test_the_choice_follows_validation_where_test_disagrees(tmp_path):
    # lr 0.01: better on validation, worse on test; lr 0.1 the other way round
    files = [
        _curve(tmp_path / "a0.json", 0.01, 0, [(1000, 30.0, 20.0), (2000, 35.0, 22.0)]),
        _curve(tmp_path / "a1.json", 0.01, 1, [(1000, 33.0, 21.0), (2000, 31.0, 40.0)]),
        _curve(tmp_path / "b0.json", 0.1, 0, [(1000, 25.0, 45.0), (2000, 28.0, 44.0)]),
        _curve(tmp_path / "b1.json", 0.1, 1, [(1000, 29.0, 46.0), (2000, 20.0, 47.0)]),
    ]
    chosen, table = lr_choice.choose([lr_choice._load(f) for f in files])
    assert chosen == 0.01
    first = table[0]
    assert first["lr"] == 0.01
    # each curve reports its best-validation checkpoint: 2000 (35) and 1000 (33)
    assert first["iterations"] == [2000, 1000]
    assert first["val"] == pytest.approx(34.0)
    assert first["test"] == pytest.approx(21.5)  # the checkpoints' test, not the best test
    assert table[1]["val"] == pytest.approx(28.5)


def test_a_tie_goes_to_the_smaller_rate_and_the_earlier_checkpoint(tmp_path):
    files = [
        _curve(tmp_path / "a.json", 0.03, 0, [(1000, 30.0, 1.0), (2000, 30.0, 2.0)]),
        _curve(tmp_path / "b.json", 0.003, 0, [(1000, 10.0, 1.0), (3000, 30.0, 9.0)]),
    ]
    chosen, table = lr_choice.choose([lr_choice._load(f) for f in files])
    assert chosen == 0.003
    assert [t["iterations"] for t in table] == [[3000], [1000]]


def test_the_script_prints_the_table(tmp_path):
    files = [
        _curve(tmp_path / "a.json", 0.01, 0, [(1000, 30.0, 20.0)]),
        _curve(tmp_path / "b.json", 0.1, 0, [(1000, 25.0, 45.0)]),
    ]
    r = subprocess.run([sys.executable, str(SCRIPT), *map(str, files)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "| 0.01 **(chosen)** | 1 | 30.00 (30.00) | 1000 | 20.00 | +0.00 |" in r.stdout
    assert "| 0.1 | 1 | 25.00" in r.stdout


@pytest.mark.parametrize("case, needle", [
    ("not_json", "not JSON"),
    ("no_config", "no config or rows"),
    ("other_shape", "differ in more than lr and seed: hidden"),
    ("twice", "given twice"),
    ("uneven", "same number of seeds"),
    ("missing", "missing.json: No such file or directory"),
])
def test_bad_input_is_one_line(tmp_path, case, needle):
    a = _curve(tmp_path / "a.json", 0.01, 0, [(1000, 30.0, 20.0)])
    files = [a]
    if case == "not_json":
        bad = tmp_path / "bad.json"
        bad.write_text("{\n oops")
        files.append(bad)
    elif case == "no_config":
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps({"rows": []}))
        files.append(bad)
    elif case == "other_shape":
        files.append(_curve(tmp_path / "b.json", 0.1, 0, [(1000, 1.0, 1.0)], hidden=128))
    elif case == "missing":
        files.append(tmp_path / "missing.json")
    elif case == "twice":
        files.append(_curve(tmp_path / "b.json", 0.01, 0, [(1000, 1.0, 1.0)]))
    else:
        files.append(_curve(tmp_path / "b.json", 0.01, 1, [(1000, 1.0, 1.0)]))
        files.append(_curve(tmp_path / "c.json", 0.1, 0, [(1000, 1.0, 1.0)]))
    r = subprocess.run([sys.executable, str(SCRIPT), *map(str, files)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], r.stderr
    assert r.stdout == ""


def test_validation_curves_feed_the_chooser(tmp_path):
    """studies/validation_curve.py end to end on a toy table (validation people carved from
    the training people): its rows, its recorded arguments, and lr_choice reading them."""
    from data_prep.table import write_table
    from tests.helpers import recipe_table

    table = write_table(recipe_table(videos=12, classes=4), tmp_path / "t.parquet")
    curve = ROOT / "studies" / "validation_curve.py"
    outs = []
    for lr in (0.01, 0.1):
        out = tmp_path / f"{lr}.json"
        r = subprocess.run(
            [sys.executable, str(curve), str(table), "--iterations", "20", "--eval-at", "10",
             "--history", "8", "--hidden", "8", "--batch", "4", "--lr", str(lr),
             "--out", str(out)],
            capture_output=True, text=True, timeout=300, cwd=ROOT)
        assert r.returncode == 0, r.stderr
        assert "| 10 " in r.stdout and "| 20 " in r.stdout  # every evaluation point
        doc = json.loads(out.read_text())
        assert doc["config"]["lr"] == lr and doc["config"]["iterations"] == 20
        assert [row["iteration"] for row in doc["rows"]] == [10, 20]
        best = max(doc["rows"], key=lambda row: (row["val_acc"], -row["iteration"]))
        assert doc["best_iteration"] == best["iteration"]
        outs.append(out)
    r = subprocess.run([sys.executable, str(SCRIPT), *map(str, outs)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("**(chosen)**") == 1
