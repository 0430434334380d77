"""Breakfast: both input formats, cameras, splits, every bad raw input, and the real data."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from data_prep import breakfast
from data_prep.errors import DataError
from data_prep.table import FrameTable, read_table
from tests.formats import breakfast as fmt


@pytest.fixture
def raw_root(tmp_path) -> Path:
    return fmt.write_raw(tmp_path / "raw")


def _names(table: FrameTable, i: int) -> list[str]:
    return [table.card.classes[k] for k in table.video_labels(i)]


def test_raw_files(raw_root):
    table = breakfast.convert(raw_root)
    assert table.card.source_format == "breakfast-coarse"
    assert table.card.fps == 15.0 and table.card.background == "SIL"
    assert table.card.classes == fmt.CLASSES  # from mapping.txt
    assert table.videos == fmt.VIDEOS
    for i, video in enumerate(table.videos):
        assert _names(table, i) == fmt.frames(video)
        p, cam, _, act = video.split("_")
        assert (table.participant[i], table.view[i], table.activity[i]) == (p, cam, act)
    # the standard rule: split K tests on participant group K (here one person each)
    for k, person in enumerate(fmt.PARTICIPANTS, start=1):
        s = table.card.split(k)
        assert s.test == tuple(v for v in fmt.VIDEOS if v.startswith(person))
        assert s.train == tuple(v for v in fmt.VIDEOS if not v.startswith(person))


def test_raw_without_mapping_sorts_labels_with_sil_first(tmp_path):
    root = fmt.write_raw(tmp_path / "raw", mapping=False)
    table = breakfast.convert(root)
    assert table.card.classes == ("SIL", *sorted(set(fmt.CLASSES) - {"SIL"}))
    for i, video in enumerate(table.videos):
        assert _names(table, i) == fmt.frames(video)


def test_both_formats_give_the_same_table(raw_root, tmp_path):
    ms_root = fmt.write_mstcn(tmp_path / "ms")
    assert breakfast.detect_format(ms_root) == "mstcn"
    assert breakfast.detect_format(raw_root) == "coarse"
    a, b = breakfast.convert(raw_root), breakfast.convert(ms_root)
    assert b.card.source_format == "breakfast-mstcn"
    assert a.videos == b.videos and a.participant == b.participant and a.view == b.view
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.offsets, b.offsets)
    assert a.card.splits == b.card.splits


@pytest.mark.parametrize("layout", ["raw", "mstcn"])
def test_cameras_match_exactly_and_restrict_splits(layout, tmp_path):
    write = fmt.write_raw if layout == "raw" else fmt.write_mstcn
    root = write(tmp_path / layout)
    table = breakfast.convert(root, cameras="cam01")
    assert table.videos == [v for v in fmt.VIDEOS if v.split("_")[1] == "cam01"]
    assert set(table.view) == {"cam01"}  # webcam01 contains 'cam01' but is another camera
    for s in table.card.splits:
        assert set(s.train) | set(s.test) <= set(table.videos)
        assert s.test and s.train
    both = breakfast.convert(root, cameras="webcam01,cam01")
    assert both.num_videos == len(fmt.VIDEOS)


def test_unknown_camera_is_an_error(raw_root):
    with pytest.raises(DataError, match="no videos from view.s. cam02; views present: cam01"):
        breakfast.convert(raw_root, cameras="cam01,cam02")


def test_participant_outside_the_standard_groups(raw_root):
    src = next(raw_root.rglob("P42_cam01_P42_tea.txt"))
    shutil.copy(src, src.with_name("P55_cam01_P55_tea.txt"))
    with pytest.raises(DataError, match=r"participant P55 is outside the standard Breakfast"):
        breakfast.convert(raw_root)


# -- the command line: success and every bad raw input -----------------------------------


def run(args: list[str]):
    from study.cli import app

    return CliRunner().invoke(app, ["prepare", "breakfast", *args])


def test_cli_cameras(raw_root, tmp_path):
    out = tmp_path / "o" / "b.parquet"
    res = run([*fmt.cli_args(raw_root)[:2], "--cameras", "cam01", "--out", str(out)])
    assert res.exit_code == 0, res.output
    back = read_table(out)
    assert set(back.view) == {"cam01"} and back.num_videos == len(fmt.VIDEOS) // 2
    assert f"breakfast: {back.num_videos} videos" in res.output

    res = run([*fmt.cli_args(raw_root)[:2], "--cameras", " ,", "--out", str(out)])
    assert res.exit_code == 2 and "--cameras" in res.output


def _coarse(root: Path, video: str) -> Path:
    return root / "segmentation_coarse" / fmt.activity(video) / f"{video}.txt"


def _set_line(root: Path, video: str, lineno: int, text: str) -> None:
    path = _coarse(root, video)
    lines = path.read_text().splitlines()
    lines[lineno - 1] = text
    path.write_text("\n".join(lines) + "\n")


V = "P16_cam01_P16_cereals"  # 1-3 SIL, 4-7 take_bowl, 8-12 pour_cereals, 13-14 pour_milk, 15-16 SIL
RAW = f"/segmentation_coarse/cereals/{V}.txt"

# name -> (damage, where the message points (after root), message part)
BAD: dict[str, tuple[Callable[[Path], None], str, str]] = {
    "label not in mapping": (
        lambda r: _set_line(r, V, 2, "4-7 take_plate"),
        f"{RAW}:2:",
        "label 'take_plate' is not in",
    ),
    "end before start": (
        lambda r: _set_line(r, V, 2, "4-3 take_bowl"),
        f"{RAW}:2:",
        "end frame 3 is before start frame 4",
    ),
    "non-integer frame": (
        lambda r: _set_line(r, V, 3, "8-12.5 pour_cereals"),
        f"{RAW}:3:",
        "end frame '12.5' is not an integer",
    ),
    "negative frame": (
        lambda r: _set_line(r, V, 1, "-1-3 SIL"),
        f"{RAW}:1:",
        "start frame -1 is negative",
    ),
    "frame zero": (
        lambda r: _set_line(r, V, 1, "0-3 SIL"),
        f"{RAW}:1:",
        "start frame is 0, but frames are 1-based",
    ),
    "overlapping segments": (
        lambda r: _set_line(r, V, 3, "7-12 pour_cereals"),
        f"{RAW}:3:",
        "segment 7-12 overlaps the previous segment, which ends at frame 7 (line 2)",
    ),
    "gap between segments": (
        lambda r: _set_line(r, V, 3, "9-12 pour_cereals"),
        f"{RAW}:3:",
        "gap: frame 8 has no label (the previous segment ends at frame 7, line 2; gaps are "
        "errors, not background)",
    ),
    "gap at the start": (
        lambda r: _set_line(r, V, 1, "3-3 SIL"),
        f"{RAW}:1:",
        "gap: frames 1-2 have no label (the first segment must start at frame 1;",
    ),
    "malformed line": (
        lambda r: _set_line(r, V, 2, "4 7 take_bowl"),
        f"{RAW}:2:",
        "expected '<start>-<end> <label>', got '4 7 take_bowl'",
    ),
    "empty file": (
        lambda r: _coarse(r, V).write_text("\n  \n"),
        f"{RAW}:",
        "annotation file is empty",
    ),
    "duplicate video id": (
        lambda r: shutil.copy(_coarse(r, V), r / "segmentation_coarse" / f"{V}.txt"),
        f"{RAW}:",
        f"duplicate video id '{V}' (also in {{root}}/segmentation_coarse/{V}.txt)",
    ),
    "video id not Breakfast's": (
        lambda r: _coarse(r, V).rename(_coarse(r, V).with_name("P16_cam01_P17_cereals.txt")),
        "/segmentation_coarse/cereals/P16_cam01_P17_cereals.txt:",
        "video id 'P16_cam01_P17_cereals' does not match",
    ),
    "no annotation files": (
        lambda r: shutil.rmtree(r / "segmentation_coarse"),
        ":",
        "neither a groundTruth/ folder nor raw coarse <video>.txt files",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_cli_bad_raw_input(case, raw_root, tmp_path):
    damage, where, message = BAD[case]
    damage(raw_root)
    out = tmp_path / "out" / "b.parquet"
    res = run([*fmt.cli_args(raw_root), "--out", str(out)])
    assert res.exit_code == 2, res.output
    assert "error: " in res.output, res.output
    assert message.format(root=raw_root) in res.output, res.output
    assert f"{raw_root}{where}" in res.output, res.output
    assert "Traceback" not in res.output
    assert not out.exists()
    assert not out.parent.exists() or not any(out.parent.iterdir())


def test_cli_bad_bundle_in_mstcn_layout(tmp_path):
    root = fmt.write_mstcn(tmp_path / "ms")
    (root / "splits" / "test.split2.bundle").write_text(
        "P16_cam01_P16_tea.txt\nP03_cam01_P03_tea.txt\n"
    )
    out = tmp_path / "b.parquet"
    res = run(["--root", str(root), "--out", str(out)])
    assert res.exit_code == 2, res.output
    assert f"error: {root}/splits/test.split2.bundle:2: " in res.output
    assert "video 'P03_cam01_P03_tea' is in both train.split2.bundle and test.split2.bundle" in (
        res.output
    )
    assert not out.exists()


# -- real data ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_table(real_data) -> FrameTable:
    return breakfast.convert(real_data / "breakfast")


def test_real_counts(real_table):
    t = real_table
    assert (t.num_videos, t.num_frames, t.card.num_classes) == (1712, 3_590_899, 48)
    assert t.card.background == "SIL" and t.card.background_index == 0
    assert len(set(t.participant)) == 52 and len(set(t.activity)) == 10
    assert sorted(set(t.view)) == list(breakfast.CAMERAS)
    assert [len(s.test) for s in t.card.splits] == [252, 451, 433, 576]
    assert all(len(s.train) + len(s.test) == 1712 for s in t.card.splits)


def test_real_cam01_via_cli(real_data, real_table, tmp_path):
    out = tmp_path / "bf_cam01.parquet"
    res = run(["--root", str(real_data / "breakfast"), "--cameras", "cam01", "--out", str(out)])
    assert res.exit_code == 0, res.output
    t = read_table(out)
    assert t.num_videos == 433 and set(t.view) == {"cam01"}
    for full, kept in zip(real_table.card.splits, t.card.splits, strict=True):
        assert set(kept.test) == {v for v in full.test if "_cam01_" in v}
        assert set(kept.train) == {v for v in full.train if "_cam01_" in v}


def _write_coarse_files(table: FrameTable, root: Path) -> None:
    """Run-length encode every video's labels into a raw coarse file, in the release's
    ``<activity>/<video>.txt`` folders."""
    for i, video in enumerate(table.videos):
        labels = table.video_labels(i)
        starts = np.flatnonzero(np.r_[True, labels[1:] != labels[:-1]])
        ends = np.r_[starts[1:], len(labels)]
        lines = [
            f"{s + 1}-{e} {table.card.classes[labels[s]]}"
            for s, e in zip(starts.tolist(), ends.tolist(), strict=True)
        ]
        folder = root / table.activity[i]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{video}.txt").write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("mapping", [True, False])
def test_real_raw_coarse_files_convert_back(real_data, real_table, tmp_path, mapping):
    root = tmp_path / "segmentation_coarse"
    _write_coarse_files(real_table, root)
    if mapping:
        shutil.copy(real_data / "breakfast" / "mapping.txt", root / "mapping.txt")
    back = breakfast.convert(root)
    assert back.card.source_format == "breakfast-coarse"
    assert back.videos == real_table.videos
    assert back.participant == real_table.participant and back.view == real_table.view
    assert back.activity == real_table.activity
    np.testing.assert_array_equal(back.offsets, real_table.offsets)
    if mapping:
        assert back.card.classes == real_table.card.classes
        np.testing.assert_array_equal(back.labels, real_table.labels)
    else:
        assert back.card.classes[0] == "SIL"
        assert sorted(back.card.classes) == sorted(real_table.card.classes)
        to_back = np.array([back.card.classes.index(c) for c in real_table.card.classes])
        np.testing.assert_array_equal(back.labels, to_back[real_table.labels])
    # the standard participant rule reproduces the published bundles
    assert back.card.splits == real_table.card.splits
