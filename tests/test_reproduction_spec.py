"""The shipped study specs pass `kitchen-study run --dry-run`: `studies/reproduction.yaml` and its
second-draw copy on the real annotations prepared as its header says (the full runs are not
part of `make test`: docs/reproduction.md), with the plans docs/reproduction.md reports."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from data_prep.table import write_table

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.realdata
def test_reproduction_spec_dry_run(real_data, tmp_path, monkeypatch):
    from data_prep import breakfast, mpii, salads
    from data_prep.simulate import simulate
    from study.cli import app

    tables = {
        "breakfast": breakfast.convert(real_data / "breakfast", cameras="cam01"),
        "salads": salads.convert(real_data / "50salads", level="fine"),
        "mpii": mpii.convert(real_data / "mpii_cooking" / "detectionGroundtruth-1-0.csv"),
    }
    spec = yaml.safe_load((ROOT / "studies" / "reproduction.yaml").read_text())
    for name, table in tables.items():
        # the features' values do not matter to a dry run, only that they are class scores
        path = write_table(simulate(table, seed=0, model="ar1"), tmp_path / f"{name}.parquet")
        spec["datasets"][name]["path"] = str(path)
    spec["tracking_uri"] = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spec_path = tmp_path / "reproduction.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))

    res = CliRunner().invoke(app, ["run", str(spec_path), "--dry-run", "--num-cpus", "2"])
    assert res.exit_code == 0, res.output
    # v2 as run (docs/reproduction.md), 5 seeds: a pre-train per source (and per seed in the
    # joint space for multiple_random), concat transfer between every pair (split 1 of each
    # target), the Table 5 grid on 50 Salads -> Breakfast, every baseline on all four splits
    # of every dataset (claim 1), transfer and joint tasks on split 1 only
    assert "20 pretrain, 45 finetune, 20 joint, 60 baseline" in res.output
    assert "estimated trials: 145" in res.output
    for name in ("breakfast", "salads", "mpii"):
        for split in (1, 2, 3, 4):
            assert f"baseline:{name}.split{split}:s4" in res.output
    assert ">salads.split2" not in res.output and ">mpii.split2" not in res.output
    assert "finetune:mpii.split1>breakfast.split1:concat:s0" in res.output
    assert ">breakfast.split2" not in res.output
    assert "estimate (not a measurement)" in res.output
    assert not (tmp_path / "mlflow.db").exists()  # a dry run writes nothing

    # the second simulator draw (docs/reproduction.md): the same study on split 1 only, from
    # tables simulated with seed 1; everything but the name, description and data is copied
    draw1 = yaml.safe_load((ROOT / "studies" / "reproduction_draw1.yaml").read_text())
    shipped = yaml.safe_load((ROOT / "studies" / "reproduction.yaml").read_text())
    assert sorted(draw1) == sorted(shipped)
    for key in set(shipped) - {"name", "description", "datasets"}:
        assert draw1[key] == shipped[key], key
    for name, d in draw1["datasets"].items():
        assert d == {"path": f"../data/{name}_sim_seed1.parquet", "splits": [1]}
        d["path"] = spec["datasets"][name]["path"]
    draw1["tracking_uri"] = spec["tracking_uri"]
    draw1_path = tmp_path / "reproduction_draw1.yaml"
    draw1_path.write_text(yaml.safe_dump(draw1))
    res = CliRunner().invoke(app, ["run", str(draw1_path), "--dry-run", "--num-cpus", "2"])
    assert res.exit_code == 0, res.output
    assert "20 pretrain, 45 finetune, 20 joint, 15 baseline" in res.output
    assert "estimated trials: 100" in res.output
    assert ".split2" not in res.output
    assert not (tmp_path / "mlflow.db").exists()
