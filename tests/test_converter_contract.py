"""One contract, every converter (as Optuna runs every storage through one suite)."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from data_prep.converters import CONVERTERS
from data_prep.table import FrameTable, read_table, write_table
from study.cli import app

NAMES = sorted(CONVERTERS)


def _example(name: str, root: Path) -> tuple[object, dict]:
    fmt = importlib.import_module(f"tests.formats.{name}")
    return fmt, fmt.example(root)


@pytest.fixture(params=NAMES)
def converted(request, tmp_path) -> tuple[str, FrameTable, Path]:
    name = request.param
    _, kwargs = _example(name, tmp_path / "src")
    table = CONVERTERS[name].convert(**kwargs)
    out = write_table(table, tmp_path / f"{name}.parquet")
    return name, table, out


def test_schema_and_dtypes(converted):
    _, _, out = converted
    schema = pq.read_schema(out)
    assert pa.types.is_dictionary(schema.field("video").type)
    assert schema.field("frame").type == pa.int32()
    assert schema.field("label").type == pa.int16()
    for col in ("participant", "activity", "view"):
        assert col in schema.names
    if "features" in schema.names:
        t = schema.field("features").type
        assert pa.types.is_fixed_size_list(t) and t.value_type == pa.float32()
    card = json.loads(schema.metadata[b"kitchen_study.card"])
    for key in ("name", "fps", "classes", "background", "source_format", "converter_version",
                "splits", "input_hash"):
        assert key in card, key
    assert card["input_hash"], "the input hash must be filled in"


def test_one_card_scheme(converted):
    """Every converter finishes through Layout.to_table: one converter-version scheme, a
    named background class (its declared default, or the one the example asks for), and
    the notes in the card only."""
    name, table, _ = converted
    conv = CONVERTERS[name]
    assert table.card.converter_version == f"{name}-{conv.VERSION}"
    assert conv.VERSION.isdigit()
    assert table.card.background is not None, "the example datasets all have a background"
    assert table.card.background in table.card.classes
    if conv.BACKGROUND is not None:
        assert table.card.background == conv.BACKGROUND
    assert not hasattr(importlib.import_module(f"data_prep.{name}"), "convert_with_notes")


def test_round_trip_and_invariants(converted):
    _, table, out = converted
    back = read_table(out)
    assert back.videos == table.videos == sorted(table.videos)
    np.testing.assert_array_equal(back.offsets, table.offsets)
    np.testing.assert_array_equal(back.labels, table.labels)
    assert back.participant == table.participant
    assert back.card == table.card
    # frames contiguous from 0 per video, sorted by (video, frame)
    arrow = pq.read_table(out, columns=["video", "frame"])
    frames = arrow.column("frame").to_numpy()
    expected = np.arange(len(frames)) - np.repeat(back.offsets[:-1], back.lengths)
    np.testing.assert_array_equal(frames, expected)
    assert back.labels.min() >= 0 and back.labels.max() < back.card.num_classes
    assert back.card.background is None or back.card.background in back.card.classes


def test_splits_leave_person_out(converted):
    _, table, _ = converted
    assert table.card.splits, "every converter must provide splits"
    person = dict(zip(table.videos, table.participant, strict=True))
    for s in table.card.splits:
        assert s.train and s.test
        assert not set(s.train) & set(s.test)
        assert not {person[v] for v in s.train} & {person[v] for v in s.test}


@pytest.mark.parametrize("name", NAMES)
def test_cli_writes_atomically(name, tmp_path, monkeypatch):
    fmt, _ = _example(name, tmp_path / "src")
    out = tmp_path / "out" / "x.parquet"
    runner = CliRunner()
    ok = runner.invoke(app, ["prepare", name, *fmt.cli_args(tmp_path / "src"), "--out", str(out)])
    assert ok.exit_code == 0, ok.output
    assert read_table(out).num_frames > 0

    # a write that dies half-way leaves the previous file untouched and no temporary behind
    before = out.read_bytes()

    def broken(table, where, **kw):
        Path(where).write_bytes(b"PAR1 half")
        raise OSError("disk full")

    monkeypatch.setattr(pq, "write_table", broken)
    res = runner.invoke(app, ["prepare", name, *fmt.cli_args(tmp_path / "src"), "--out", str(out)])
    assert res.exit_code != 0
    assert out.read_bytes() == before
    assert sorted(p.name for p in out.parent.iterdir()) == ["x.parquet"]
