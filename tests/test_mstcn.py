"""The generic MS-TCN layout converter: rules, features, splits, every bad input, real data."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from data_prep import layout, mstcn
from data_prep.errors import DataError
from data_prep.table import read_table
from tests.formats import mstcn as fmt


@pytest.fixture
def root(tmp_path) -> Path:
    return fmt.write(tmp_path / "tiny")


def test_labels_metadata_and_features(root):
    table = mstcn.convert(root, name="t", fps=15, background="background",
                          participant_pattern=fmt.PATTERN)  # fmt: skip
    assert table.videos == sorted(fmt.RUNS)
    assert table.card.classes == fmt.CLASSES and table.card.background_index == 0
    for i, video in enumerate(table.videos):
        names = [fmt.CLASSES[k] for k in table.video_labels(i)]
        assert names == fmt.frames(video)
        seg = table.features[table.offsets[i] : table.offsets[i + 1]]
        np.testing.assert_array_equal(seg, fmt.features(video).T)  # (D, T) on disk -> (T, D)
        participant, activity, view = video.split("_", 2)
        assert (table.participant[i], table.activity[i], table.view[i]) == (
            participant, activity, view,
        )  # fmt: skip
    assert table.features.dtype == np.float32 and table.features.flags.c_contiguous
    assert table.card.features["dim"] == fmt.DIM
    assert [s.name for s in table.card.splits] == ["split1", "split2"]
    s2 = table.card.split(2)
    assert set(s2.test) == {v for v in fmt.RUNS if v[:2] in ("S2", "S3")}
    assert set(s2.train) == {v for v in fmt.RUNS if v.startswith("S1")}


def test_default_pattern_and_name(root):
    """The default pattern takes the first letters+digits run; the name defaults to the
    folder's; without features/ there is no features column."""
    import shutil

    shutil.rmtree(root / "features")
    table = mstcn.convert(root)
    assert table.card.name == "tiny" and table.card.fps == 30.0
    assert table.card.background is None
    assert set(table.participant) == {"S1", "S2", "S3"}
    assert set(table.activity) == {None} and set(table.view) == {None}
    assert table.features is None and table.card.features is None


@pytest.mark.parametrize(
    ("video", "participant"),
    [("P03_cam01_P03_cereals", "P03"), ("rgb-01-1", "01"), ("S1_Cheese_C1", "S1")],
)
def test_default_pattern_examples(video, participant):
    rx = layout.compile_pattern(layout.DEFAULT_PARTICIPANT_PATTERN)
    assert layout.parse_video_id(video, rx, "f").participant == participant


def test_input_hash_tracks_the_inputs(root):
    a = mstcn.convert(root, participant_pattern=fmt.PATTERN).card.input_hash
    assert a == mstcn.convert(root, participant_pattern=fmt.PATTERN).card.input_hash
    (root / "groundTruth" / "S2_coffee_cam_a.txt").write_text("take_cup\n" * 6)
    np.save(root / "features" / "S2_coffee_cam_a.npy", np.zeros((fmt.DIM, 6), np.float32))
    assert mstcn.convert(root, participant_pattern=fmt.PATTERN).card.input_hash != a


def test_every_bundle_pair_becomes_a_split(root):
    for part, videos in (("train", ["S1_tea_cam_a", "S2_tea_cam_a"]), ("test", ["S3_tea_cam_b"])):
        (root / "splits" / f"{part}.split7.bundle").write_text("\n".join(videos) + "\n")
    table = mstcn.convert(root, participant_pattern=fmt.PATTERN)
    assert [s.name for s in table.card.splits] == ["split1", "split2", "split7"]
    assert table.card.split(7).test == ("S3_tea_cam_b",)


def test_views_selection_restricts_splits(root):
    kept = layout.read_layout(root, fmt.PATTERN, views=["cam_b"])
    assert [v.video for v in kept.videos] == ["S1_coffee_cam_b", "S3_tea_cam_b"]
    assert kept.splits[0].test == ("S1_coffee_cam_b",)
    with pytest.raises(DataError, match="no videos from view"):
        layout.read_layout(root, fmt.PATTERN, views=["cam"])  # exact match, not a prefix


def test_bad_pattern_is_a_value_error():
    with pytest.raises(ValueError, match="named group 'participant'"):
        layout.compile_pattern(r"^(S\d+)_")
    with pytest.raises(ValueError, match="not a regular expression"):
        layout.compile_pattern(r"(?P<participant>")


# -- the command line: success and every bad input ---------------------------------------


def run(args: list[str]):
    from study.cli import app

    return CliRunner().invoke(app, ["prepare", "mstcn", *args])


def test_cli_writes_and_reads_back(root, tmp_path):
    out = tmp_path / "o" / "t.parquet"
    res = run([*fmt.cli_args(root), "--out", str(out)])
    assert res.exit_code == 0, res.output
    frames = sum(len(fmt.frames(v)) for v in fmt.RUNS)
    assert f"tiny_mstcn: {len(fmt.RUNS)} videos, {frames} frames, 4 classes" in res.output
    back = read_table(out)
    assert back.feature_dim == fmt.DIM and back.card.fps == 15.0


def test_cli_rejects_a_pattern_without_participant(root, tmp_path):
    out = tmp_path / "t.parquet"
    res = run(["--root", str(root), "--out", str(out), "--participant-pattern", r"S\d"])
    assert res.exit_code == 2
    text = " ".join(res.output.translate(str.maketrans("", "", "│╭╮╰╯─")).split())
    assert "--participant-pattern" in text and "named group 'participant'" in text, text
    assert not out.exists()


def _replace_line(path: Path, lineno: int, text: str) -> None:
    lines = path.read_text().splitlines()
    lines[lineno - 1] = text
    path.write_text("\n".join(lines) + "\n")


def _gt(root: Path, video: str) -> Path:
    return root / "groundTruth" / f"{video}.txt"


# name -> (damage the dataset, where the message points (after root), message part)
BAD: dict[str, tuple[Callable[[Path], None], str, str]] = {
    "label not in mapping": (
        lambda r: _replace_line(_gt(r, "S2_tea_cam_a"), 4, "pour_milk"),
        "/groundTruth/S2_tea_cam_a.txt:4:",
        "label 'pour_milk' is not in mapping.txt",
    ),
    "blank line between frames": (
        lambda r: _replace_line(_gt(r, "S2_tea_cam_a"), 2, ""),
        "/groundTruth/S2_tea_cam_a.txt:2:",
        "blank line",
    ),
    "empty annotation file": (
        lambda r: _gt(r, "S1_tea_cam_a").write_text("\n"),
        "/groundTruth/S1_tea_cam_a.txt:",
        "annotation file is empty",
    ),
    "video id not matching the pattern": (
        lambda r: _gt(r, "S1_tea_cam_a").rename(_gt(r, "X1_tea_cam_a")),
        "/groundTruth/X1_tea_cam_a.txt:",
        "does not match the participant pattern",
    ),
    "split naming a missing video": (
        lambda r: _replace_line(r / "splits" / "train.split1.bundle", 2, "S9_tea_cam_a.txt"),
        "/splits/train.split1.bundle:2:",
        "split names video 'S9_tea_cam_a', which has no annotation file",
    ),
    "video listed twice in a bundle": (
        lambda r: _replace_line(r / "splits" / "test.split2.bundle", 3, "S2_coffee_cam_a.txt"),
        "/splits/test.split2.bundle:3:",
        "is listed twice (first on line 1)",
    ),
    "video in train and test": (
        lambda r: _replace_line(r / "splits" / "test.split1.bundle", 2, "S2_tea_cam_a.txt"),
        "/splits/test.split1.bundle:2:",
        "is in both train.split1.bundle and test.split1.bundle",
    ),
    "participant in train and test": (
        # move S1_tea_cam_a from test to train: S1 is then on both sides
        lambda r: (
            _replace_line(r / "splits" / "test.split1.bundle", 2, "")
            or _replace_line(r / "splits" / "train.split1.bundle", 1, "S1_tea_cam_a.txt")
        ),
        "/splits/test.split1.bundle:1:",
        "split 1 is not leave-person-out: participant 'S1' is in the test video "
        "'S1_coffee_cam_b' and in the train video 'S1_tea_cam_a' (train.split1.bundle line 1)",
    ),
    "features length differs from labels": (
        lambda r: np.save(r / "features" / "S3_tea_cam_b.npy", np.zeros((fmt.DIM, 8))),
        "/features/S3_tea_cam_b.npy:",
        "features have 8 frames (shape D x T = (4, 8)) but groundTruth/S3_tea_cam_b.txt has 9",
    ),
    "features not (D, T)": (
        lambda r: np.save(r / "features" / "S3_tea_cam_b.npy", np.zeros(9)),
        "/features/S3_tea_cam_b.npy:",
        "expected a numeric array of shape (D, T)",
    ),
    "features of another dimension": (
        lambda r: np.save(r / "features" / "S3_tea_cam_b.npy", np.zeros((3, 9))),
        "/features/S3_tea_cam_b.npy:",
        "features have dimension 3, other videos have 4",
    ),
    "a video without features": (
        lambda r: (r / "features" / "S2_tea_cam_a.npy").unlink(),
        "/features/S2_tea_cam_a.npy:",
        "has no features file",
    ),
    "features file not .npy": (
        lambda r: (r / "features" / "S2_tea_cam_a.npy").write_bytes(b"not numpy"),
        "/features/S2_tea_cam_a.npy:",
        "not a .npy array",
    ),
    "no splits": (
        lambda r: [p.unlink() for p in (r / "splits").iterdir()],
        "/splits:",
        "no train/test.split<K>.bundle files",
    ),
    "a bundle without its pair": (
        lambda r: (r / "splits" / "test.split2.bundle").unlink(),
        "/splits:",
        "split 2 has no test.split2.bundle",
    ),
    "an empty bundle": (
        lambda r: (r / "splits" / "test.split2.bundle").write_text(""),
        "/splits/test.split2.bundle:",
        "lists no videos",
    ),
    "mapping with a bad index": (
        lambda r: _replace_line(r / "mapping.txt", 3, "5 pour_water"),
        "/mapping.txt:3:",
        "expected index 2",
    ),
    "no groundTruth folder": (
        lambda r: (
            [p.rename(r / p.name) for p in (r / "groundTruth").iterdir()]
            and (r / "groundTruth").rmdir()
        ),
        ":",
        "no groundTruth/ folder",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_cli_bad_input(case, root, tmp_path):
    damage, where, message = BAD[case]
    damage(root)
    out = tmp_path / "out" / "t.parquet"
    res = run([*fmt.cli_args(root), "--out", str(out)])
    assert res.exit_code == 2, res.output
    assert "error: " in res.output and message in res.output, res.output
    assert f"{root}{where}" in res.output, res.output
    assert "Traceback" not in res.output
    assert not out.exists()
    assert not out.parent.exists() or not any(out.parent.iterdir())


def test_cli_background_must_be_a_class(root, tmp_path):
    out = tmp_path / "t.parquet"
    res = run([*fmt.cli_args(root), "--background", "SIL", "--out", str(out)])
    assert res.exit_code == 2, res.output
    assert f"error: {root}/mapping.txt: background class 'SIL' is not one of" in res.output
    assert not out.exists()


# -- real data ------------------------------------------------------------------------------


def test_real_50salads_mid_level(real_data):
    table = mstcn.convert(real_data / "50salads", fps=30)
    assert (table.num_videos, table.num_frames, table.card.num_classes) == (50, 577_595, 19)
    assert len(set(table.participant)) == 25
    assert [(len(s.train), len(s.test)) for s in table.card.splits] == [(40, 10)] * 5
