"""The study spec: schema errors name the key path, data checks run before any trial,
the content hash is stable and ignores execution settings."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from data_prep.table import read_table, write_table
from study.spec import EXECUTION_FIELDS, SpecError, load_spec, parse_spec
from study.spec_data import check_spec, content_hash, open_study
from tests.study_data import write_kitchens

A, B, C = "synth_breakfast", "synth_salads", "synth_cooking"


def _spec(**over) -> dict:
    d = {
        "name": "t",
        "datasets": {
            A: {"path": f"data/{A}.parquet", "splits": [1, 2]},
            B: {"path": f"data/{B}.parquet", "splits": ["split1"]},
            C: {"path": f"data/{C}.parquet", "splits": [1]},
        },
        "model": {"history": 16, "hidden": 8, "batch_size": 4},
        "experiments": {
            "seeds": [0, 1],
            "iterations": 20,
            "eval_at": [10],
            "all_pairs": True,
            "edges": [{"source": A, "target": B, "mode": "joint", "ratio": "5:3"}],
        },
    }
    d.update(over)
    return d


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("spec")
    write_kitchens(root / "data")
    return root


def _write(root: Path, d: dict, name: str = "s.yaml") -> Path:
    p = root / name
    p.write_text(yaml.safe_dump(d))
    return p


def _problems(d: dict) -> dict[str, str]:
    with pytest.raises(SpecError) as ei:
        parse_spec(d, path="x.yaml")
    return dict(ei.value.problems)


def test_valid_spec_normalises_scalars_and_splits():
    s = parse_spec(_spec())
    assert s.datasets[A].splits == ["split1", "split2"]
    e = s.experiments.edges[0]
    assert e.mode == ["joint"] and e.arrangement == ["concat"] and e.ratio == (5, 3)
    assert s.experiments.baselines == ["*"] and s.baseline_datasets() == [A, B, C]
    # all_pairs: every ordered pair of distinct datasets, then the explicit edges
    pairs = [(e.source, e.target) for _, e in s.edges()]
    assert len(pairs) == 6 + 1 and all(a != b for a, b in pairs)
    assert s.tracking_uri == "sqlite:///mlflow.db"


def test_unknown_keys_and_wrong_types_name_the_key_path():
    d = _spec()
    d["experiments"]["edges"][0]["mdoe"] = "joint"
    d["experiments"]["iterations"] = "many"
    d["datasets"][A]["splits"] = [True]
    d["bogus"] = 1
    p = _problems(d)
    assert p["experiments.edges[0].mdoe"] == "unknown key"
    assert "integer" in p["experiments.iterations"]
    assert "datasets.synth_breakfast.splits[0]" in p
    assert p["bogus"] == "unknown key"


def test_a_model_error_names_the_key_as_written(data_dir):
    d = _spec(model={"kind": "mstcn", "stages": 0})
    with pytest.raises(SpecError) as ei:
        check_spec(load_spec(_write(data_dir, d)))
    p = dict(ei.value.problems)
    assert "greater than or equal to 1" in p["model.stages"], p  # not model.mstcn.stages


def test_wrong_literal_names_list_index():
    d = _spec()
    d["experiments"]["edges"][0]["mode"] = ["joint", "transfr"]
    p = _problems(d)
    assert "experiments.edges[0].mode[1]" in p and "'transfer'" in p["experiments.edges[0].mode[1]"]


@pytest.mark.parametrize(
    ("change", "key", "words"),
    [
        (lambda d: d["experiments"]["edges"].append({"source": "nope", "target": B}),
         "experiments.edges[1].source", "unknown dataset 'nope'"),
        (lambda d: d["experiments"]["edges"].append({"source": B, "target": B}),
         "experiments.edges[1]", "to itself"),
        (lambda d: d["experiments"]["edges"].append({"source": A, "target": B, "source_split": 3}),
         "experiments.edges[1].source_split", "'split3' is not declared"),
        (lambda d: d["experiments"].update(eval_at=[10, 40]),
         "experiments.eval_at[1]", "past experiments.iterations"),
        (lambda d: d["model"].update(mode="joint"), "model.mode", "set per task"),
        (lambda d: d.update(search={"space": "nope", "target": A, "num_samples": 2}),
         "search.space", "unknown search space"),
        (lambda d: d.update(search={"space": "lstm", "target": A, "num_samples": 2,
                                    "space_args": {"budget": 1}}),
         "search.space_args.budget", "unknown argument"),
        (lambda d: d.update(search={"space": "small", "target": A, "num_samples": 2,
                                    "mode": "joint"}),
         "search.source", "needs a source"),
        (lambda d: d["experiments"].update(baselines=["zzz"]),
         "experiments.baselines[0]", "unknown dataset"),
    ],
)
def test_reference_errors(change, key, words):
    d = _spec()
    change(d)
    p = _problems(d)
    assert key in p, p
    assert words in p[key]


def test_cli_style_message_names_file_and_key(tmp_path):
    d = _spec()
    d["experiments"]["edges"][0]["target"] = A
    path = _write(tmp_path, d)
    with pytest.raises(SpecError) as ei:
        load_spec(path)
    msg = f"{path}: experiments.edges[0]: an edge from a dataset to itself"
    assert str(ei.value).startswith(msg)


def test_yaml_syntax_error_has_line(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("name: x\ndatasets: [\n  a: 1\n")
    with pytest.raises(Exception) as ei:
        load_spec(p)
    assert f"{p}:" in str(ei.value) and "not valid YAML" in str(ei.value)


def test_check_spec_accepts_good_data(data_dir):
    spec = load_spec(_write(data_dir, _spec()))
    cards = check_spec(spec)
    assert set(cards) == {A, B, C}
    assert spec.dataset_path(A) == (data_dir / "data" / f"{A}.parquet").resolve()


def test_missing_file_and_missing_split(data_dir):
    d = _spec()
    d["datasets"][C]["path"] = "data/none.parquet"
    d["datasets"][A]["splits"] = [1, 7]
    with pytest.raises(SpecError) as ei:
        check_spec(load_spec(_write(data_dir, d)))
    p = dict(ei.value.problems)
    assert "no such file" in p[f"datasets.{C}.path"]
    assert "has no split 'split7'" in p[f"datasets.{A}.splits[1]"]


def test_bad_model_key_is_named(data_dir):
    d = _spec(model={"hiden": 8, "depth": 0})
    with pytest.raises(SpecError) as ei:
        check_spec(load_spec(_write(data_dir, d)))
    p = dict(ei.value.problems)
    assert p["model.hiden"] == "unknown key" and "model.depth" in p


def test_arrangement_the_features_cannot_support(data_dir, tmp_path):
    # a dataset whose features are not class scores (dim != classes) cannot be remapped
    # into a joint space beside one whose features are
    t = read_table(data_dir / "data" / f"{B}.parquet")
    raw = t.with_features(np.zeros((t.num_frames, 5), np.float32), {"kind": "i3d-like"})
    write_table(raw, tmp_path / "data" / "raw.parquet")
    for name, p in write_kitchens(tmp_path / "data", kitchens=1).items():
        assert p.exists(), name
    d = {
        "name": "t",
        "datasets": {A: {"path": f"data/{A}.parquet", "splits": [1]},
                     "raw": {"path": "data/raw.parquet", "splits": [1]}},
        "experiments": {"iterations": 10,
                        "edges": [{"source": A, "target": "raw", "arrangement": "concat"}]},
    }
    with pytest.raises(SpecError) as ei:
        check_spec(load_spec(_write(tmp_path, d)))
    p = dict(ei.value.problems)
    assert "cannot mix class-score features" in p["experiments.edges[0].arrangement[0]"]


def test_table_without_features(tmp_path):
    paths = write_kitchens(tmp_path / "data", kitchens=1)
    t = read_table(paths[A])
    from dataclasses import replace

    write_table(replace(t, features=None, card=t.card.replace(features=None)), paths[A])
    d = {"name": "t", "datasets": {A: {"path": f"data/{A}.parquet", "splits": [1]}},
         "experiments": {"iterations": 10}}
    with pytest.raises(SpecError) as ei:
        check_spec(load_spec(_write(tmp_path, d)))
    assert "no features column" in dict(ei.value.problems)[f"datasets.{A}.path"]


def test_hash_stable_and_ignores_execution_settings(data_dir):
    a = open_study(_write(data_dir, _spec(), "a.yaml"))
    b = open_study(_write(data_dir, _spec(), "b.yaml"))
    assert a.hash == b.hash and len(a.hash) == 64
    moved = _spec(tracking_uri="http://head:5000", ray_address="ray://x:10001",
                  resources={"cpu": 2, "gpu": 0.5}, max_failures=5, iterations_per_step=7,
                  description="on the cluster", storage_path="s3://bucket/ray",
                  reuse_actors=False, packing={"max_trials": 8})
    assert set(EXECUTION_FIELDS) <= set(moved)
    # the data moved elsewhere: same content, same study
    (data_dir / "moved").mkdir(exist_ok=True)
    shutil.copy(data_dir / "data" / f"{A}.parquet", data_dir / "moved" / f"{A}.parquet")
    moved["datasets"][A]["path"] = f"moved/{A}.parquet"
    assert open_study(_write(data_dir, moved, "c.yaml")).hash == a.hash
    changed = _spec()
    changed["experiments"]["iterations"] = 21
    assert open_study(_write(data_dir, changed, "d.yaml")).hash != a.hash


def test_hash_follows_dataset_content(tmp_path):
    d = {"name": "t", "datasets": {A: {"path": f"data/{A}.parquet", "splits": [1]}},
         "experiments": {"iterations": 10}}
    spec_path = _write(tmp_path, d)
    write_kitchens(tmp_path / "data", kitchens=1, seed=0)
    h0 = open_study(spec_path).hash
    write_kitchens(tmp_path / "data", kitchens=1, seed=1)
    assert open_study(spec_path).hash != h0


def test_hash_follows_feature_values_under_the_same_path_and_card(tmp_path):
    """Issue 9: replacing a table's features (same path, same card otherwise) is a new
    version of the study; the card's content digest is what says so."""
    from study.spec_data import card_identity, dataset_digest

    d = {"name": "t", "datasets": {A: {"path": f"data/{A}.parquet", "splits": [1]}},
         "experiments": {"iterations": 10}}
    spec_path = _write(tmp_path, d)
    (path,) = write_kitchens(tmp_path / "data", kitchens=1, seed=0).values()
    before = open_study(spec_path)
    t = read_table(path)
    t.features = (t.features[:, ::-1]).copy()  # same shape, same card fields, other values
    write_table(t, path)
    after = open_study(spec_path)
    assert after.hash != before.hash
    old, new = card_identity(before.cards[A]), card_identity(after.cards[A])
    assert {k for k in old if old[k] != new[k]} == {"content_digest"}
    assert dataset_digest(before.cards[A]) != dataset_digest(after.cards[A])
    # the same bytes again: the same study
    write_table(read_table(path), tmp_path / "copy.parquet")
    d["datasets"][A]["path"] = "copy.parquet"
    assert open_study(_write(tmp_path, d, "copy.yaml")).hash == after.hash


def test_hash_is_the_same_in_another_process(data_dir):
    path = _write(data_dir, _spec(), "p.yaml")
    # cards read directly (check_spec would import torch: slow, and not what is tested)
    code = (
        "from data_prep.table import read_card; from study.spec import load_spec; "
        "from study.spec_data import content_hash; "
        f"s = load_spec({str(path)!r}); "
        "print(content_hash(s, {n: read_card(s.dataset_path(n)) for n in s.datasets}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={"PYTHONHASHSEED": "99", "PATH": ""})
    assert out.stdout.strip() == open_study(path).hash


def test_content_hash_direct(data_dir):
    spec = load_spec(_write(data_dir, _spec()))
    cards = check_spec(spec)
    assert content_hash(spec, cards) == content_hash(spec, dict(reversed(cards.items())))


@pytest.mark.parametrize("name", ["demo.yaml", "paper.yaml"])
def test_shipped_specs_parse(name):
    path = Path(__file__).resolve().parents[1] / "studies" / name
    spec = load_spec(path)
    assert spec.name


def test_names_come_from_the_registries():
    from typing import get_args

    from study.spec import ArrangementKind, EdgeMode, Metric, SearchMode
    from trainables.arrangements import ARRANGEMENTS
    from trainables.metrics import METRIC_NAMES
    from trainables.train_config import TrainSpec

    assert set(get_args(ArrangementKind)) == set(ARRANGEMENTS) - {"identity"}
    assert set(get_args(Metric)) == set(METRIC_NAMES) - {"input_acc"}
    modes = set(get_args(TrainSpec.model_fields["mode"].annotation))
    assert set(get_args(EdgeMode)) <= modes and set(get_args(SearchMode)) <= modes
