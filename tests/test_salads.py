"""50 Salads converter: fine (derived and raw) and mid levels, the stated rules, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from data_prep import salads
from data_prep.errors import DataError
from data_prep.table import read_table
from tests.formats import salads as fmt

FINE = {c: i for i, c in enumerate(salads.FINE_CLASSES)}


@pytest.fixture
def root(tmp_path) -> Path:
    return fmt.write(tmp_path / "50salads")


def expected_fine() -> np.ndarray:
    return np.array([0 if x == "null" else FINE[x] for x in fmt.fine_frames()])


def test_fine_vocabulary():
    assert len(salads.FINE_CLASSES) == 52 == len(set(salads.FINE_CLASSES))
    assert salads.FINE_CLASSES[0] == salads.BACKGROUND == "background"
    assert all(c.rsplit("_", 1)[1] in ("prep", "core", "post") for c in salads.FINE_CLASSES[1:])
    assert not set(salads.HIGH_LEVEL_LABELS) & set(salads.FINE_CLASSES)


def test_fine_derived(root):
    t = salads.convert(root)
    assert t.card.name == "50salads" and t.card.fps == 30.0
    assert t.card.classes == salads.FINE_CLASSES
    assert t.card.background == "background" and t.card.background_index == 0
    assert t.videos == fmt.VIDEOS and t.num_frames == 8 * fmt.FRAMES
    for i in range(t.num_videos):
        np.testing.assert_array_equal(t.video_labels(i), expected_fine())
    assert t.participant == ["01", "01", "02", "02", "03", "03", "04", "04"]
    assert set(t.activity) == {"salad"} and set(t.view) == {"top"}
    assert t.card.source_format == "50salads-fine-derived"
    # 4 leave-person-out folds, one participant (two videos) tested in each, deterministic
    assert [s.test for s in t.card.splits] == [
        (f"rgb-0{p}-1", f"rgb-0{p}-2") for p in (1, 2, 3, 4)
    ]
    assert salads.convert(root).card == t.card


@pytest.mark.parametrize("alignment", ["report", "timestamps"])
def test_raw_matches_derived(root, alignment):
    path = {
        "report": root / "groundTruth_fine_derived" / "ALIGNMENT_REPORT.json",
        "timestamps": root / "timestamps",
    }[alignment]
    raw = salads.convert(root, source="raw", alignment=path)
    notes = raw.card.notes
    derived = salads.convert(root)
    np.testing.assert_array_equal(raw.labels, derived.labels)
    np.testing.assert_array_equal(raw.offsets, derived.offsets)
    assert raw.card.source_format == "50salads-fine-raw"
    assert raw.card.input_hash != derived.card.input_hash
    # the high-level annotation of each video is counted, not painted
    assert any(n.startswith("8 high-level annotation") for n in notes)


def test_raw_default_alignment_is_the_report(root):
    a = salads.convert(root, source="raw")
    report = root / "groundTruth_fine_derived" / "ALIGNMENT_REPORT.json"
    b = salads.convert(root, source="raw", alignment=report)
    assert a.card == b.card


@pytest.mark.parametrize(
    "alignment", ["groundTruth_fine_derived/ALIGNMENT_REPORT.json", "timestamps"]
)
def test_raw_overlap_rule_clipping_and_notes(tmp_path, alignment):
    segments = [
        (-5, 4, "cut_tomato_prep"),  # starts before frame 0: clipped (counted)
        (4, 20, "cut_tomato_core"),
        (8, 10, "add_salt_core"),  # nested: wins on 8-9, cut_tomato_core resumes at 10
        (18, 25, "cut_tomato_post"),  # overlaps 18-19: the later start wins
        (30, 30, "add_oil_core"),  # zero frames
        (36, 45, "add_oil_post"),  # runs past the last frame (40): clipped
    ]
    root = fmt.write(tmp_path / "r")
    (root / "activityAnnotations" / "01-1-activityAnnotation.txt").write_text(
        "\n".join(fmt.raw_lines(segments)) + "\n"
    )
    t = salads.convert(root, source="raw", alignment=root / alignment)
    notes = t.card.notes
    want = ["background"] * 40
    want[0:4] = ["cut_tomato_prep"] * 4
    want[4:18] = ["cut_tomato_core"] * 14
    want[8:10] = ["add_salt_core"] * 2
    want[18:25] = ["cut_tomato_post"] * 7
    want[36:40] = ["add_oil_post"] * 4
    assert [t.card.classes[i] for i in t.video_labels(0)] == want
    np.testing.assert_array_equal(t.video_labels(1), expected_fine())  # the others as before
    text = "\n".join(notes)
    assert "2 fine annotation(s) overlap an earlier-starting one (4 frame(s) shared" in text
    assert "1 fine annotation(s) map to zero frames" in text
    assert "2 fine annotation(s) reach outside the video; 10 frame(s) clipped" in text


def test_raw_frame_count_and_video_set_come_from_groundtruth(root):
    # an annotation file without a groundTruth video is not converted, and said so
    extra = root / "activityAnnotations" / "09-1-activityAnnotation.txt"
    extra.write_text("\n".join(fmt.raw_lines()) + "\n")
    t = salads.convert(root, source="raw", alignment=root / "timestamps")
    notes = t.card.notes
    assert "rgb-09-1" not in t.videos
    assert any("not converted: 09-1" in n for n in notes)
    # a groundTruth video without an annotation file is an error
    (root / "activityAnnotations" / "01-1-activityAnnotation.txt").unlink()
    with pytest.raises(DataError, match="no activityAnnotations/01-1-activityAnnotation.txt"):
        salads.convert(root, source="raw")


def test_raw_without_groundtruth_uses_timestamp_length(root):
    import shutil

    shutil.rmtree(root / "groundTruth")
    t = salads.convert(root, source="raw", alignment=root / "timestamps")
    assert t.num_frames == 8 * fmt.FRAMES
    # with a fitted clock the video ends with its last fine annotation (frame 37)
    t = salads.convert(root, source="raw")
    assert set(t.lengths) == {37}


def test_mid_level_and_bundles(root):
    t = salads.convert(root, level="mid", splits=root / "splits")
    assert t.card.name == "50salads_mid" and t.card.num_classes == 19
    assert t.card.background is None
    assert t.card.classes[17:] == ("action_start", "action_end")
    assert [s.name for s in t.card.splits] == ["split1", "split2"]
    assert t.card.splits[0].test == ("rgb-01-1", "rgb-01-2", "rgb-02-1", "rgb-02-2")
    first = [t.card.classes[i] for i in t.video_labels(0)]
    assert first == fmt.mid_frames(fmt.fine_frames())


def test_usage_errors(root):
    with pytest.raises(ValueError, match="fine labels only"):
        salads.convert(root, level="mid", source="raw")
    with pytest.raises(ValueError, match="raw only"):
        salads.convert(root, alignment=root / "timestamps")


# -- the command line: success and every bad input ---------------------------------------


def run(args: list[str]):
    from study.cli import app

    return CliRunner().invoke(app, ["prepare", "salads", *args])


def test_cli_writes_and_prints_notes(root, tmp_path):
    out = tmp_path / "o" / "s.parquet"
    res = run(["--root", str(root), "--source", "raw", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "50salads: 8 videos, 320 frames, 52 classes (background 'background')" in res.output
    assert "note: 8 high-level annotation(s)" in res.output
    assert read_table(out).card.source_format == "50salads-fine-raw"


def _ann(root: Path) -> Path:
    return root / "activityAnnotations" / "02-1-activityAnnotation.txt"


def _edit_line(path: Path, lineno: int, text: str) -> None:
    lines = path.read_text().splitlines()
    lines[lineno - 1] = text
    path.write_text("\n".join(lines) + "\n")


BAD_RAW = {
    "unknown label": (
        lambda r: _edit_line(_ann(r), 3, f"{fmt.timestamp(10)} {fmt.timestamp(18)} cut_bread_core"),
        "02-1-activityAnnotation.txt:3: label 'cut_bread_core' is not a 50 Salads",
    ),
    "end before start": (
        lambda r: _edit_line(_ann(r), 4, f"{fmt.timestamp(22)} {fmt.timestamp(18)} add_oil_core"),
        "02-1-activityAnnotation.txt:4: end",
    ),
    "non-integer timestamp": (
        lambda r: _edit_line(_ann(r), 2, "1.5e5 433333 cut_tomato_prep"),
        "02-1-activityAnnotation.txt:2: start timestamp '1.5e5' is not an integer",
    ),
    "negative timestamp": (
        lambda r: _edit_line(_ann(r), 5, "-100 433333 add_oil_core"),
        "02-1-activityAnnotation.txt:5: start timestamp -100 is negative",
    ),
    "wrong field count": (
        lambda r: _edit_line(_ann(r), 2, "100 433333"),
        "02-1-activityAnnotation.txt:2: expected '<start> <end> <label>'",
    ),
    "empty file": (
        lambda r: _ann(r).write_text("\r\n\r\n"),
        "02-1-activityAnnotation.txt: annotation file is empty",
    ),
    "missing alignment": (
        lambda r: (r / "groundTruth_fine_derived" / "ALIGNMENT_REPORT.json").write_text(
            json.dumps({k: {"fps": 30, "offset_frames": 10} for k in ("01-1", "01-2")})
        ),
        "ALIGNMENT_REPORT.json: no alignment for video '02-1'",
    ),
    "bad alignment fit": (
        lambda r: (r / "groundTruth_fine_derived" / "ALIGNMENT_REPORT.json").write_text(
            json.dumps({"01-1": {"fps": "fast"}})
        ),
        "ALIGNMENT_REPORT.json: video '01-1': expected numbers 'fps' and 'offset_frames'",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_RAW))
def test_cli_bad_raw_input(case, root, tmp_path):
    damage, message = BAD_RAW[case]
    damage(root)
    out = tmp_path / "o" / "s.parquet"
    res = run(["--root", str(root), "--source", "raw", "--out", str(out)])
    assert res.exit_code == 2, res.output
    assert "error: " in res.output and message in res.output, res.output
    assert not out.exists()
    assert not out.parent.exists() or not any(out.parent.iterdir())  # no temporary left


def test_cli_bad_timestamp_file(root, tmp_path):
    ts = root / "timestamps" / "timestamps-03-2.txt"
    _edit_line(ts, 7, f"{fmt.timestamp(2)} frame.png")
    (root / "timestamps" / "timestamps-04-1.txt").unlink()
    out = tmp_path / "s.parquet"
    res = run(["--root", str(root), "--source", "raw", "--alignment", str(root / "timestamps"),
               "--out", str(out)])  # fmt: skip
    assert res.exit_code == 2
    assert "timestamps-03-2.txt:7: timestamp" in res.output and "does not increase" in res.output
    assert not out.exists()
    _edit_line(ts, 7, f"{fmt.timestamp(6)} frame.png")
    res = run(["--root", str(root), "--source", "raw", "--alignment", str(root / "timestamps"),
               "--out", str(out)])  # fmt: skip
    assert res.exit_code == 2 and "no alignment for video '04-1'" in res.output
    assert not out.exists()


BAD_DERIVED = {
    "unknown fine label": (
        lambda r: _edit_line(r / "groundTruth_fine_derived" / "rgb-03-1.txt", 12, "cut_bread"),
        "rgb-03-1.txt:12: label 'cut_bread' is not in the 50 Salads fine labels",
    ),
    "length differs from groundTruth": (
        lambda r: (r / "groundTruth" / "rgb-02-2.txt").write_text("action_start\n" * 39),
        "rgb-02-2.txt: 40 frames, but groundTruth/rgb-02-2.txt has 39",
    ),
    "empty derived file": (
        lambda r: (r / "groundTruth_fine_derived" / "rgb-01-2.txt").write_text(""),
        "rgb-01-2.txt: annotation file is empty",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_DERIVED))
def test_cli_bad_derived_input(case, root, tmp_path):
    damage, message = BAD_DERIVED[case]
    damage(root)
    out = tmp_path / "s.parquet"
    res = run(["--root", str(root), "--out", str(out)])
    assert res.exit_code == 2, res.output
    assert "error: " in res.output and message in res.output, res.output
    assert not out.exists()


def test_cli_bad_bundle_and_usage(root, tmp_path):
    out = tmp_path / "s.parquet"
    (root / "splits" / "test.split2.bundle").write_text("rgb-03-1.txt\nrgb-99-1.txt\n")
    res = run(["--root", str(root), "--level", "mid", "--splits", str(root / "splits"),
               "--out", str(out)])  # fmt: skip
    assert res.exit_code == 2 and "test.split2.bundle:2: split names video 'rgb-99-1'" in res.output
    res = run(["--root", str(root), "--level", "mid", "--source", "raw", "--out", str(out)])
    assert res.exit_code == 2 and "fine labels only" in res.output
    assert not out.exists()


# -- the real annotations (../shared/data; skipped when absent) ---------------------------


@pytest.mark.realdata
def test_real_fine_and_mid(real_data):
    root = real_data / "50salads"
    fine = salads.convert(root)
    assert (fine.num_videos, fine.num_frames, fine.card.num_classes) == (50, 577_595, 52)
    assert len(set(fine.participant)) == 25 and len(fine.card.splits) == 4
    assert np.bincount(fine.labels, minlength=52).min() > 0  # every fine class occurs
    mid = salads.convert(root, level="mid", splits=root / "splits")
    assert (mid.num_videos, mid.num_frames, mid.card.num_classes) == (50, 577_595, 19)
    assert len(mid.card.splits) == 5
    assert {(len(s.train), len(s.test)) for s in mid.card.splits} == {(40, 10)}
    lists = root / "activityAnnotations" / "label_lists"
    assert sorted(salads.FINE_CLASSES[1:]) == sorted(
        (lists / "low_level_actions.txt").read_text().split()
    )
    assert sorted(salads.HIGH_LEVEL_LABELS) == sorted(
        (lists / "high_level_actions.txt").read_text().split()
    )


@pytest.mark.realdata
def test_real_raw_agrees_with_derived(real_data):
    root = real_data / "50salads"
    raw = salads.convert(root, source="raw")
    notes = raw.card.notes
    derived = salads.convert(root)
    assert raw.videos == derived.videos
    np.testing.assert_array_equal(raw.offsets, derived.offsets)
    agreement = float(np.mean(raw.labels == derived.labels))
    assert agreement >= 0.99, agreement
    assert any("not converted: 08-1, 08-2, 12-1, 12-2" in n for n in notes)
    assert len(raw.card.splits) == 4


def test_timestamp_file_blank_line_is_an_error(root):
    ts = root / "timestamps" / "timestamps-01-1.txt"
    _edit_line(ts, 5, "   ")
    with pytest.raises(DataError, match=r"timestamps-01-1.txt:5: blank line"):
        salads.convert(root, source="raw", alignment=root / "timestamps")
