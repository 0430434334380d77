"""MPII Cooking converter: the stated rules, MPII Cooking 2's class count, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from data_prep import mpii
from data_prep.errors import DataError
from data_prep.table import read_table
from tests.formats import mpii as fmt


@pytest.fixture
def csv_path(tmp_path) -> Path:
    return fmt.example(tmp_path)["csv_path"]


def names(table, video: str) -> list[str]:
    return [table.card.classes[i] for i in table.video_labels(table.index_of(video))]


def test_rules(csv_path):
    t = mpii.convert(csv_path)
    notes = t.card.notes
    # classes by category id, stripped, background first
    assert t.card.classes == ("Background activity", "change temperature", "cut in",
                              "move from X to Y", "take \\& put in cupboard")  # fmt: skip
    assert t.card.background == "Background activity" and t.card.background_index == 0
    assert t.card.fps == 29.4 and t.card.name == "mpii_cooking"
    s08 = names(t, "s08-d02-cam-002")
    assert len(s08) == 20  # video length = max end frame
    assert s08[:2] == ["Background activity"] * 2
    assert s08[2:5] == ["move from X to Y"] * 3
    assert s08[5] == "change temperature"  # frame 6 is in both rows: the later start wins
    assert s08[9:11] == ["Background activity"] * 2  # the gap
    assert s08[11:13] == ["cut in"] * 2
    assert s08[13:15] == ["take \\& put in cupboard"] * 2  # nested row
    assert s08[15:] == ["cut in"] * 5  # the enclosing row resumes
    assert names(t, "s10-d02-cam-002")[0] == "Background activity"  # before the first row
    for video, want in fmt.EXPECTED.items():
        assert names(t, video) == want
    i = t.index_of("s08-d02-cam-002")
    assert (t.participant[i], t.activity[i], t.view[i]) == ("s08", "d02", "cam-002")
    assert sorted(set(t.participant)) == ["s08", "s10", "s11", "s12"]
    assert [s.test for s in t.card.splits] == [
        ("s08-d02-cam-002", "s08-d04-cam-002"), ("s10-d02-cam-002",), ("s11-d01-cam-002",),
        ("s12-d05-cam-002",),
    ]  # fmt: skip
    assert notes[0].startswith("2 row(s) overlap an earlier-starting row (3 frame(s) shared")
    assert notes[1] == "3 frame(s) covered by no row are background"


def test_unparsed_ids_and_missing_background(tmp_path):
    rows = [(1, "kitchen_a", 1, 5, 3), (2, "kitchen_b", 2, 4, 7), (3, "kitchen_c", 1, 3, 3),
            (4, "kitchen_d", 1, 1, 7)]  # fmt: skip
    path = tmp_path / "x.csv"
    path.write_text(fmt.csv_text(rows, {3: "stir", 7: "pour"}))
    t = mpii.convert(path)
    notes = t.card.notes
    assert t.card.classes == ("Background activity", "stir", "pour")
    assert "added it as class 0" in notes[0]
    assert t.activity == [None] * 4 and t.view == [None] * 4
    assert t.participant == ["s01", "s02", "s03", "s04"]
    np.testing.assert_array_equal(t.video_labels(1), [0, 2, 2, 2])


def test_mpii_cooking_2_style_csv(tmp_path):
    """MPII Cooking 2: the same schema with 88 categories and 30 subjects."""
    rng = np.random.default_rng(0)
    classes = {1: " Background activity", **{c: f"activity {c:02d}" for c in range(2, 89)}}
    rows, video_ids = [], []
    for subject in range(8, 38):
        video = f"s{subject:02d}-d{subject % 7 + 20:02d}-cam-002"
        video_ids.append(video)
        frame = 1
        for cid in rng.permutation(np.arange(1, 89))[:30]:
            n = int(rng.integers(5, 40))
            rows.append((subject, video, frame, frame + n - 1, int(cid)))
            frame += n + int(rng.integers(0, 3))  # some gaps
    rows[5:] = [rows[i] for i in rng.permutation(np.arange(5, len(rows)))]  # any row order
    path = tmp_path / "detectionGroundtruth-2-0.csv"
    path.write_text(fmt.csv_text(rows, classes))
    t = mpii.convert(path, name="mpii_cooking2")
    seen = {cid for *_, cid in rows}
    assert t.card.num_classes == len(seen) and t.card.classes[0] == "Background activity"
    assert t.card.name == "mpii_cooking2" and t.num_videos == 30
    assert len(t.card.splits) == 4
    assert {len(s.test) for s in t.card.splits} == {7, 8}  # 30 subjects: 8/8/7/7
    for _, video, start, end, cid in rows:
        got = t.video_labels(t.index_of(video))[start - 1 : end]
        assert set(got.tolist()) == {t.card.classes.index(classes[cid].strip())}


def test_fps_must_be_positive(csv_path):
    with pytest.raises(ValueError, match="fps"):
        mpii.convert(csv_path, fps=0)


# -- the command line: success and every bad input ---------------------------------------


def run(args: list[str]):
    from study.cli import app

    return CliRunner().invoke(app, ["prepare", "mpii", *args])


def test_cli_writes_and_prints_notes(csv_path, tmp_path):
    out = tmp_path / "o" / "m.parquet"
    res = run(["--csv", str(csv_path), "--out", str(out), "--fps", "25", "--name", "mini"])
    assert res.exit_code == 0, res.output
    assert "mini: 5 videos, 65 frames, 5 classes (background 'Background activity')" in res.output
    assert "note: 2 row(s) overlap" in res.output
    back = read_table(out)
    assert back.card.fps == 25.0 and back.card.input_hash


def _with_line(csv_path: Path, lineno: int, text: str) -> None:
    lines = csv_path.read_text().splitlines()
    lines[lineno - 1] = text
    csv_path.write_text("\n".join(lines) + "\n")


BAD = {
    "end before start": (
        lambda p: _with_line(p, 3, "8,s08-d02-cam-002,12,10,5,cut in"),
        ":3: end_frame 10 is before start_frame 12",
    ),
    "non-integer frame": (
        lambda p: _with_line(p, 2, "8,s08-d02-cam-002,6.5,9,2,change temperature"),
        ":2: start_frame '6.5' is not an integer",
    ),
    "negative frame": (
        lambda p: _with_line(p, 4, "8,s08-d02-cam-002,-14,15,48,take \\& put in cupboard"),
        ":4: frames are 1-based: got -14-15",
    ),
    "zero frame": (
        lambda p: _with_line(p, 6, "8,s08-d04-cam-002,0,10,5,cut in"),
        ":6: frames are 1-based",
    ),
    "empty csv": (
        lambda p: p.write_text("\n\n"),
        "detectionGroundtruth-1-0.csv: annotation CSV has no rows",
    ),
    "wrong column count": (
        lambda p: _with_line(p, 7, "10,s10-d02-cam-002,2,12,48"),
        ":7: expected 6 columns",
    ),
    "id with two names": (
        lambda p: _with_line(p, 9, "11,s11-d01-cam-002,6,15,2,change temp"),
        ":9: category id 2 is named 'change temp' here but 'change temperature' on line 2",
    ),
    "name with two ids": (
        lambda p: _with_line(p, 9, "11,s11-d01-cam-002,6,15,3,change temperature"),
        ":9: category 'change temperature' has id 3 here but 2 on line 2",
    ),
    "video under two subjects": (
        lambda p: _with_line(p, 9, "12,s11-d01-cam-002,6,15,2,change temperature"),
        ":9: video 's11-d01-cam-002' has subject 12 here but 11 on line 8",
    ),
    "subject not the video's": (
        lambda p: _with_line(p, 10, "13,s12-d05-cam-002,1,8,16,move from X to Y"),
        ":10: video 's12-d05-cam-002' does not belong to subject 13",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_cli_bad_input(case, csv_path, tmp_path):
    damage, message = BAD[case]
    damage(csv_path)
    out = tmp_path / "o" / "m.parquet"
    res = run(["--csv", str(csv_path), "--out", str(out)])
    assert res.exit_code == 2, res.output
    assert "error: " in res.output and message in res.output, res.output
    assert f"{csv_path}" in res.output
    assert not out.exists() and not out.parent.exists()


def test_missing_csv(tmp_path):
    with pytest.raises(DataError, match="not found"):
        mpii.convert(tmp_path / "nope.csv")


# -- the real annotations (../shared/data; skipped when absent) ---------------------------


@pytest.mark.realdata
def test_real_mpii_cooking(real_data):
    path = real_data / "mpii_cooking" / "detectionGroundtruth-1-0.csv"
    t = mpii.convert(path)
    notes = t.card.notes
    assert (t.num_videos, t.card.num_classes, len(set(t.participant))) == (44, 65, 12)
    assert t.card.classes[0] == "Background activity" == t.card.background
    assert len(t.card.splits) == 4
    for s in t.card.splits:
        assert len(s.train) + len(s.test) == 44 and len(s.test) >= 8
    assert set(t.view) == {"cam-002"}
    # every video is as long as its furthest row
    rows = mpii.read_rows(path)
    ends: dict[str, int] = {}
    for r in rows:
        ends[r.video] = max(ends.get(r.video, 0), r.end)
    assert dict(zip(t.videos, t.lengths.tolist(), strict=True)) == ends
    assert notes[0].startswith("525 row(s) overlap")
