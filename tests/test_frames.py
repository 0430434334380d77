"""Frame sources: decoding video files and frame folders, matched to the frame table."""

from __future__ import annotations

import shutil
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from data_prep.errors import DataError
from trainables.frames import (
    FrameSource,
    frame_map,
    read_frames,
    render_toy_dataset,
    scaled_size,
)

# Colour of each toy action's shape (background: no shape), see render_toy_dataset.
_SHAPE = {1: 0, 2: 1, 3: 2}  # label -> RGB channel that dominates the shape


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    table = render_toy_dataset(root, participants=3, seed=1)
    return root, table


def _all(source, table, v, **kw):
    n = int(table.lengths[v])
    fps = table.card.fps
    return list(read_frames(source, table.videos[v], np.arange(n), n_table=n, table_fps=fps, **kw))


def _diffs(a, b) -> list[float]:
    """Mean absolute pixel difference of paired frames."""
    pairs = zip(a, b, strict=True)
    return [np.abs(x.astype(int) - y.astype(int)).mean() for (_, x), (_, y) in pairs]


def _dominant_shape(img: np.ndarray) -> int:
    """0 if the frame shows only background grey, else 1 + the channel of the shape colour."""
    px = img.reshape(-1, 3).astype(int)
    spread = px.max(1) - px.min(1)
    coloured = px[spread > 80]
    if len(coloured) < 10:
        return 0
    return 1 + int(np.argmax(coloured.mean(0)))


def test_frame_map_rule():
    assert frame_map(5, 15, 15).tolist() == [0, 1, 2, 3, 4]
    assert frame_map(4, 15, 30).tolist() == [0, 2, 4, 6]  # 30 fps video under a 15 fps table
    assert frame_map(5, 30, 15).tolist() == [0, 0, 1, 1, 2]  # sample and hold
    m = frame_map(3000, 30, 29.97)  # NTSC video under a nominal 30 fps table
    assert m[0] == 0 and m[-1] == 2996 and np.all(np.diff(m) >= 0)
    with pytest.raises(ValueError):
        frame_map(3, 0, 30)


def test_scaled_size_keeps_aspect():
    assert scaled_size(320, 240, 120) == (160, 120)
    assert scaled_size(240, 320, 120) == (120, 160)
    assert scaled_size(64, 48, None) == (64, 48)


@pytest.mark.parametrize("kind", ["video", "folder"])
def test_frames_match_labels(toy, kind):
    root, table = toy
    sub = "videos" if kind == "video" else "frames"
    source = FrameSource(root / sub, kind=kind)
    for v in range(table.num_videos):
        got = _all(source, table, v)
        assert [f for f, _ in got] == list(range(int(table.lengths[v])))
        assert got[0][1].shape == (48, 64, 3) and got[0][1].dtype == np.uint8
        shapes = np.array([_dominant_shape(img) for _, img in got])
        labels = table.video_labels(v)
        expected = np.array([0 if lab == 0 else 1 + _SHAPE[int(lab)] for lab in labels])
        assert np.mean(shapes == expected) > 0.95


def test_video_and_folder_give_the_same_frames(toy):
    root, table = toy
    vid = _all(FrameSource(root / "videos"), table, 0)
    jpg = _all(FrameSource(root / "frames"), table, 0)
    assert np.mean(_diffs(vid, jpg)) < 6  # H.264 (crf 18) and JPEG (q 90) of the same rendering


def test_resampled_video_matches_table_rate(tmp_path):
    # the videos are encoded at 30 fps, the table is at 15 fps: table frame i = video frame 2i
    table = render_toy_dataset(tmp_path, participants=2, video_fps=30, seed=3)
    with av.open(str(tmp_path / "videos" / f"{table.videos[0]}.mp4")) as c:
        assert float(c.streams.video[0].average_rate) == 30
        assert sum(1 for _ in c.decode(video=0)) == 2 * int(table.lengths[0])
    vid = _all(FrameSource(tmp_path / "videos"), table, 0)
    jpg = _all(FrameSource(tmp_path / "frames"), table, 0)
    assert len(vid) == len(jpg) == table.lengths[0]
    assert max(_diffs(vid, jpg)) < 8
    # overriding the source rate to 15 fps would pair table frame i with video frame i instead
    wrong = _all(FrameSource(tmp_path / "videos", fps=15), table, 0)
    assert max(_diffs(wrong, jpg)) > 8


def test_subset_repeats_and_short_side(toy):
    root, table = toy
    source = FrameSource(root / "videos")
    n = int(table.lengths[0])
    got = list(read_frames(source, table.videos[0], np.array([5, 1, 5, 9]), n_table=n,
                           table_fps=15, short_side=24))
    assert [f for f, _ in got] == [1, 5, 5, 9]
    assert got[0][1].shape == (24, 32, 3)
    assert got[1][1] is got[2][1]  # decoded once, yielded twice


def test_pattern_uses_table_fields(toy, tmp_path):
    root, table = toy
    v = table.videos[0]
    nested = tmp_path / table.participant[0]
    nested.mkdir()
    shutil.copy(root / "videos" / f"{v}.mp4", nested / f"{v}.mp4")
    source = FrameSource(tmp_path, pattern="{participant}/{video}.mp4")
    meta = {"participant": table.participant[0], "activity": "toy", "view": None}
    assert source.locate(v, meta) == ("video", nested / f"{v}.mp4")
    with pytest.raises(ValueError, match="bad frame path pattern"):
        FrameSource(tmp_path, pattern="{person}/{video}.mp4")


def test_kind_restricts_lookup(toy):
    root, table = toy
    with pytest.raises(DataError, match="no frame folder found"):
        FrameSource(root / "videos", kind="folder").locate(table.videos[0])


# -- rule 3: the end of a video ------------------------------------------------------------


def test_short_video_within_tolerance_repeats_last_frame(toy):
    root, table = toy
    n = int(table.lengths[0]) + 3  # the table claims 3 more frames than the video has
    padded = {}
    got = list(read_frames(
        FrameSource(root / "videos", tail_tolerance=5), table.videos[0], np.arange(n), n_table=n,
        table_fps=15, on_pad=lambda v, k: padded.__setitem__(v, k),
    ))
    assert len(got) == n
    assert padded == {table.videos[0]: 3}
    assert all(np.array_equal(got[-k][1], got[-4][1]) for k in (1, 2, 3))
    # the repeated frame is the video's last one even when it was not itself wanted
    action = int(np.flatnonzero(table.video_labels(0) != 0)[0])  # a frame showing a shape
    sub = list(read_frames(
        FrameSource(root / "videos"), table.videos[0], np.array([action, n - 1]), n_table=n,
        table_fps=15,
    ))
    assert np.array_equal(sub[1][1], got[-4][1]) and not np.array_equal(sub[0][1], sub[1][1])


def test_short_video_beyond_tolerance_is_an_error(toy):
    root, table = toy
    n = int(table.lengths[0]) + 6
    with pytest.raises(DataError) as e:
        list(read_frames(FrameSource(root / "videos", tail_tolerance=5), table.videos[0],
                         np.arange(n), n_table=n, table_fps=15))
    msg = str(e.value)
    assert table.videos[0] in msg and f"of the table's {n} frames" in msg and "6 trailing" in msg


def test_short_folder_beyond_tolerance_is_an_error(toy):
    root, table = toy
    n = int(table.lengths[0]) + 6
    with pytest.raises(DataError, match="6 trailing frames are missing"):
        list(read_frames(FrameSource(root / "frames"), table.videos[0], np.arange(n), n_table=n,
                         table_fps=15))


def test_only_tail_frames_wanted(toy):
    root, table = toy
    n = int(table.lengths[0]) + 2
    for sub in ("videos", "frames"):
        got = list(read_frames(FrameSource(root / sub), table.videos[0], np.array([n - 1]),
                               n_table=n, table_fps=15))
        assert len(got) == 1 and got[0][0] == n - 1 and got[0][1].shape == (48, 64, 3)


# -- rule 4: bad input ---------------------------------------------------------------------


def test_missing_video_names_it(toy, tmp_path):
    root, table = toy
    with pytest.raises(DataError, match=f"video '{table.videos[0]}': no video file or frame"):
        FrameSource(tmp_path).locate(table.videos[0])
    with pytest.raises(DataError, match="frame root folder does not exist"):
        FrameSource(tmp_path / "nope").locate(table.videos[0])


def _copy_video(root: Path, table, tmp_path: Path) -> Path:
    dst = tmp_path / "videos"
    dst.mkdir()
    path = dst / f"{table.videos[0]}.mp4"
    shutil.copy(root / "videos" / path.name, path)
    return path


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_corrupt_video_names_it(toy, tmp_path, damage):
    root, table = toy
    path = _copy_video(root, table, tmp_path)
    data = path.read_bytes()
    path.write_bytes({"garbage": b"not a video" * 50, "truncated": data[: len(data) // 2],
                      "empty": b""}[damage])
    with pytest.raises(DataError) as e:
        _all(FrameSource(path.parent), table, 0)
    assert table.videos[0] in str(e.value) and str(path) in str(e.value)


def test_video_without_video_stream(toy, tmp_path):
    root, table = toy
    path = tmp_path / f"{table.videos[0]}.m4v"
    with av.open(str(path), "w", format="mp4") as c:
        s = c.add_stream("aac", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp",
                                           layout="mono")
        frame.sample_rate = 8000
        for _ in range(3):
            c.mux(s.encode(frame))
        c.mux(s.encode())
    with pytest.raises(DataError, match="no video stream"):
        _all(FrameSource(tmp_path), table, 0)


def _copy_folder(root: Path, table, tmp_path: Path) -> Path:
    dst = tmp_path / "frames" / table.videos[0]
    shutil.copytree(root / "frames" / table.videos[0], dst)
    return dst


def test_undecodable_image_names_video_and_frame(toy, tmp_path):
    root, table = toy
    folder = _copy_folder(root, table, tmp_path)
    (folder / "img_00008.jpg").write_bytes(b"\xff\xd8\xff garbage")  # table frame 7 (1-based)
    with pytest.raises(DataError) as e:
        _all(FrameSource(folder.parent), table, 0)
    msg = str(e.value)
    assert f"video '{table.videos[0]}' frame 7: cannot decode image" in msg
    assert "img_00008.jpg" in msg


def test_truncated_image_is_an_error(toy, tmp_path):
    root, table = toy
    folder = _copy_folder(root, table, tmp_path)
    img = folder / "img_00003.jpg"
    img.write_bytes(img.read_bytes()[:200])
    with pytest.raises(DataError, match="frame 2: cannot decode image"):
        _all(FrameSource(folder.parent), table, 0)


def test_gap_in_frame_numbers_is_an_error(toy, tmp_path):
    root, table = toy
    folder = _copy_folder(root, table, tmp_path)
    (folder / "img_00005.jpg").unlink()
    with pytest.raises(DataError, match="frame number 5 is missing"):
        _all(FrameSource(folder.parent), table, 0)


def test_duplicate_frame_numbers_is_an_error(toy, tmp_path):
    root, table = toy
    folder = _copy_folder(root, table, tmp_path)
    shutil.copy(folder / "img_00004.jpg", folder / "frame4.png")
    with pytest.raises(DataError, match="frame number 4 appears twice"):
        _all(FrameSource(folder.parent), table, 0)


def test_folder_numbering_from_zero_and_other_files_ignored(toy, tmp_path):
    root, table = toy
    src = root / "frames" / table.videos[0]
    dst = tmp_path / table.videos[0]
    dst.mkdir()
    for p in src.iterdir():  # renumber 1-based img_00001.jpg -> 0-based frame_0.jpg
        k = int(p.stem.split("_")[1]) - 1
        shutil.copy(p, dst / f"frame_{k}.jpg")
    (dst / "notes.txt").write_text("not a frame")
    a = _all(FrameSource(tmp_path), table, 0)
    b = _all(FrameSource(root / "frames"), table, 0)
    assert all(np.array_equal(x, y) for (_, x), (_, y) in zip(a, b, strict=True))
    Image.fromarray(a[0][1]).save(dst / "cover.jpg")  # an image without a number
    with pytest.raises(DataError, match="without a number"):
        _all(FrameSource(tmp_path), table, 0)


def test_truncated_stream_has_fewer_frames_than_the_table(toy, tmp_path):
    # a streamable container (Matroska) cut short decodes fine up to the cut: the table's
    # frame count then decides (rule 3), naming the video and both counts
    root, table = toy
    v, n = table.videos[0], int(table.lengths[0])
    path = tmp_path / f"{v}.mkv"
    with av.open(str(root / "videos" / f"{v}.mp4")) as src, av.open(str(path), "w") as dst:
        s = dst.add_stream("libx264", rate=15)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        for frame in src.decode(video=0):
            dst.mux(s.encode(frame.reformat(format="yuv420p")))
        dst.mux(s.encode())
    assert len(_all(FrameSource(tmp_path), table, 0)) == n
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=rf"video '{v}': \d+ source frames .* trailing frames"):
        _all(FrameSource(tmp_path), table, 0)
    # a subsampled read that stays before the cut does not see it (documented)
    assert len(list(read_frames(FrameSource(tmp_path), v, np.array([0, 1]), n_table=n,
                                table_fps=15))) == 2
