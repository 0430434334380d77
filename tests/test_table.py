"""The canonical frame table: construction checks, Parquet round trip, atomic writes,
content digest, finite features, permissions."""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data_prep.atomic import atomic_output
from data_prep.digest import content_digest
from data_prep.errors import DataError
from data_prep.table import (
    CARD_KEY,
    DatasetCard,
    FrameTable,
    Split,
    VideoLabels,
    read_card,
    read_table,
    summarize,
    write_table,
)


def _card(**kw) -> DatasetCard:
    base = dict(
        name="toy", fps=15.0, classes=("SIL", "take", "pour"), background="SIL",
        source_format="test", converter_version="1",
        splits=(Split("split1", ("P1_a", "P1_b"), ("P2_a",)),), input_hash="abc",
    )
    base.update(kw)
    return DatasetCard(**base)


def _videos() -> list[VideoLabels]:
    return [
        VideoLabels("P2_a", np.array([0, 1, 1, 2, 0]), "P2", "tea", "cam01"),
        VideoLabels("P1_b", np.array([2, 2]), "P1", None, None),
        VideoLabels("P1_a", np.array([0, 1, 2]), "P1", "coffee", "cam02"),
    ]


def test_from_videos_sorts_and_concatenates():
    t = FrameTable.from_videos(_card(), _videos())
    assert t.videos == ["P1_a", "P1_b", "P2_a"]
    np.testing.assert_array_equal(t.offsets, [0, 3, 5, 10])
    np.testing.assert_array_equal(t.labels, [0, 1, 2, 2, 2, 0, 1, 1, 2, 0])
    assert t.labels.dtype == np.int16 and t.labels.flags.c_contiguous
    assert t.participant == ["P1", "P1", "P2"]
    np.testing.assert_array_equal(t.video_labels(2), [0, 1, 1, 2, 0])
    train, test = t.split_indices(1)
    assert train.tolist() == [0, 1] and test.tolist() == [2]


def test_round_trip_with_features(tmp_path):
    t = FrameTable.from_videos(_card(), _videos())
    feats = np.random.default_rng(0).random((t.num_frames, 3), dtype=np.float32)
    t = t.with_features(feats, {"kind": "test"})
    out = write_table(t, tmp_path / "toy.parquet")
    back = read_table(out)
    assert back.videos == t.videos and back.card == t.card
    assert back.card.features == {"kind": "test", "dim": 3}
    np.testing.assert_array_equal(back.labels, t.labels)
    np.testing.assert_array_equal(back.features, feats)
    assert back.features.flags.c_contiguous
    assert back.activity == ["coffee", None, "tea"] and back.view == ["cam02", None, "cam01"]
    assert read_table(out, features=False).features is None
    s = summarize(back)
    assert (s["videos"], s["frames"], s["classes"], s["participants"]) == (3, 10, 3, 2)
    assert s["splits"] == [{"name": "split1", "train": 2, "test": 1}]


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(splits=(Split("split1", ("P1_a",), ("P9_x",)),)), "not in the dataset"),
        (dict(splits=(Split("split1", ("P1_a",), ("P1_b",)),)), "not leave-person-out"),
        (dict(splits=(Split("split1", ("P1_a",), ("P1_a",)),)), "in train and test"),
        (dict(background="none"), "background class"),
    ],
)
def test_bad_cards_are_rejected(change, message):
    with pytest.raises(DataError, match=message):
        FrameTable.from_videos(_card(**change), _videos(), source="x.txt")


def test_duplicate_and_out_of_range():
    vids = _videos() + [VideoLabels("P1_a", np.array([0]), "P1")]
    with pytest.raises(DataError, match="duplicate video id 'P1_a'"):
        FrameTable.from_videos(_card(), vids, source="in.csv")
    bad = [VideoLabels("P1_a", np.array([0, 3]), "P1")]
    with pytest.raises(DataError, match="out of range"):
        FrameTable.from_videos(_card(splits=()), bad)
    empty = [VideoLabels("P1_a", np.array([], dtype=int), "P1")]
    with pytest.raises(DataError, match="without frames"):
        FrameTable.from_videos(_card(splits=()), empty)


def test_error_names_file_and_line():
    e = DataError("end before start", "ann/P03.txt", 7)
    assert str(e) == "ann/P03.txt:7: end before start"
    assert (e.path.name, e.line, e.reason) == ("P03.txt", 7, "end before start")


def test_converter_notes_travel_in_the_card(tmp_path):
    from data_prep import mpii

    csv = tmp_path / "ann.csv"
    csv.write_text(
        "8,s08-d02-cam-002,1,10,1, Background activity\n"
        "8,s08-d02-cam-002,10,20,5,take out\n"  # overlaps the row before by one frame
        "9,s09-d01-cam-002,3,8,5,take out\n"
        "10,s10-d01-cam-002,1,5,5,take out\n"
        "11,s11-d01-cam-002,1,5,5,take out\n"
    )
    table = mpii.convert(csv)
    out = write_table(table, tmp_path / "m.parquet")
    assert read_card(out).notes == table.card.notes
    assert any("1 row(s) overlap" in n for n in table.card.notes)


def test_card_rejects_unknown_keys():
    d = json.loads(_card().to_json())
    d["colour"] = "blue"
    with pytest.raises(ValueError, match="unknown key.*colour"):
        DatasetCard.from_json(json.dumps(d))
    assert DatasetCard.from_json(_card().to_json()) == _card()


def test_read_rejects_foreign_and_missing_files(tmp_path):
    pq.write_table(pa.table({"x": [1]}), tmp_path / "plain.parquet")
    with pytest.raises(DataError, match="plain.parquet: not a kitchen-study frame table"):
        read_table(tmp_path / "plain.parquet")
    with pytest.raises(DataError, match="no such file"):
        read_card(tmp_path / "absent.parquet")
    (tmp_path / "junk.parquet").write_text("not parquet")
    with pytest.raises(DataError, match="not a Parquet file"):
        read_card(tmp_path / "junk.parquet")


def test_read_checks_frame_contiguity(tmp_path):
    t = FrameTable.from_videos(_card(), _videos())
    from data_prep.table import to_arrow

    arrow = to_arrow(t)
    frames = arrow.column("frame").to_numpy().copy()
    frames[4] = 7  # second frame of P1_b
    arrow = arrow.set_column(1, "frame", pa.array(frames))
    pq.write_table(arrow, tmp_path / "gap.parquet")
    with pytest.raises(DataError, match="not contiguous.*'P1_b'"):
        read_table(tmp_path / "gap.parquet")


def test_atomic_output_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.parquet"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_output(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.parquet"]
    with atomic_output(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new"


def test_card_metadata_is_self_describing(tmp_path):
    out = write_table(FrameTable.from_videos(_card(), _videos()), tmp_path / "t.parquet")
    meta = pq.read_schema(out).metadata[CARD_KEY]
    card = json.loads(meta)
    assert card["classes"] == ["SIL", "take", "pour"]
    assert card["splits"][0]["test"] == ["P2_a"]
    assert read_card(out).background_index == 0


def test_info_json_reports_the_feature_dim(tmp_path):
    from typer.testing import CliRunner

    from study.cli import app

    t = FrameTable.from_videos(_card(), _videos())
    t = t.with_features(np.full((t.num_frames, 3), 1 / 3, dtype=np.float32), {"kind": "test"})
    out = write_table(t, tmp_path / "f.parquet")
    res = CliRunner().invoke(app, ["info", str(out), "--json"])
    assert res.exit_code == 0, res.output
    s = json.loads(res.stdout)
    assert (s["feature_dim"], s["videos"], s["frames"]) == (3, 3, 10)
    assert s["splits"] == [{"name": "split1", "train": 2, "test": 1}]
    bad = CliRunner().invoke(app, ["info", str(tmp_path / "absent.parquet")])
    assert bad.exit_code == 2 and "absent.parquet: no such file" in bad.stderr


# -- content digest, finite features, permissions -----------------------------------------


def _featured(values: np.ndarray | None = None) -> FrameTable:
    t = FrameTable.from_videos(_card(), _videos())
    if values is None:
        values = np.arange(t.num_frames * 3, dtype=np.float32).reshape(t.num_frames, 3) / 7
    return t.with_features(values, {"kind": "test"})


def test_content_digest_is_recorded_and_follows_the_frames(tmp_path):
    t = _featured()
    assert t.card.content_digest == ""  # filled in by the writer
    out = write_table(t, tmp_path / "a.parquet")
    digest = read_card(out).content_digest
    assert digest == content_digest(t) == t.card.content_digest and len(digest) == 64
    # the same frames written again (another file, another row-group size): the same digest
    again = write_table(read_table(out), tmp_path / "b.parquet", row_group_frames=4)
    assert read_card(again).content_digest == digest
    # one feature value changed under the same card: a different digest
    changed = t.features.copy()
    changed[7, 1] += 1e-3
    assert content_digest(_featured(changed)) != digest
    # labels without features, and one label changed
    plain = FrameTable.from_videos(_card(), _videos())
    other = _videos()
    other[0].labels = np.array([0, 1, 1, 2, 1])
    assert content_digest(plain) not in (digest, content_digest(FrameTable.from_videos(
        _card(), other)))  # fmt: skip
    # replacing the features clears the digest until written
    assert t.with_features(t.features, {"kind": "x"}).card.content_digest == ""


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_features_are_refused_on_write_and_read(tmp_path, bad):
    values = np.full((10, 3), 0.5, dtype=np.float32)
    values[6, 2] = bad  # row 6 = video P2_a (frames 5..9), frame 1
    t = _featured(values)
    with pytest.raises(DataError, match=r"video 'P2_a' frame 1: feature value (nan|inf|-inf)"):
        write_table(t, tmp_path / "w.parquet")
    assert list(tmp_path.iterdir()) == []
    # a file written by something else: read_table names the file, video and frame
    from data_prep.table import to_arrow

    path = tmp_path / "r.parquet"
    pq.write_table(to_arrow(t), path)
    with pytest.raises(DataError, match=r"r\.parquet: video 'P2_a' frame 1: feature value"):
        read_table(path)
    assert read_table(path, features=False).num_frames == 10


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_outputs_follow_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        out = write_table(_featured(), tmp_path / "t.parquet")
        with atomic_output(tmp_path / "other.bin") as tmp:
            tmp.write_bytes(b"x")
    finally:
        os.umask(old)
    for p in (out, tmp_path / "other.bin"):
        assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~umask


def test_too_many_frames_per_video_is_refused(monkeypatch):
    from data_prep import table as table_mod

    t = FrameTable.from_videos(_card(), _videos())
    monkeypatch.setattr(table_mod, "MAX_FRAMES_PER_VIDEO", 4)
    with pytest.raises(DataError, match="'P2_a' has 5 frames, more than the limit of 4"):
        t.validate()


# -- verified against the card: a table changed outside the writer is refused -----------------


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    """Each test its own digest cache (never the user's ~/.cache)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def _big(frames: int = 40_000, dim: int = 8) -> FrameTable:
    labels = (np.arange(frames) // 500 % 3).astype(np.int64)
    card = _card(splits=(Split("split1", ("P1_a",), ("P2_a",)),))
    t = FrameTable.from_videos(card, [VideoLabels("P1_a", labels[: frames // 2], "P1"),
                                      VideoLabels("P2_a", labels[frames // 2:], "P2")])
    rng = np.random.default_rng(0)
    return t.with_features(rng.random((frames, dim), dtype=np.float32), {"kind": "test"})


def _one_line(e: pytest.ExceptionInfo, path) -> str:
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{path}: "), msg
    return msg


def _read_uncached(path):
    from data_prep.digest import cache_file

    cache_file().unlink(missing_ok=True)  # what a fresh node or a new user sees
    return read_table(path)


def test_a_feature_value_rewritten_outside_the_writer_is_refused(tmp_path):
    from data_prep.table import verify_table

    out = write_table(_big(), tmp_path / "a.parquet")
    card = verify_table(out)  # the writer's own file: verified
    arrow = pq.read_table(out)
    feats = arrow.column("features").combine_chunks()
    values = feats.flatten().to_numpy().copy()
    values[12_345] += 0.5  # one value, a plausible one
    arrow = arrow.set_column(arrow.schema.get_field_index("features"), "features",
                             pa.FixedSizeListArray.from_arrays(pa.array(values), 8))
    pq.write_table(arrow, out)  # pyarrow keeps the schema metadata: the card is unchanged
    assert read_card(out) == card
    for read in (_read_uncached, verify_table):
        with pytest.raises(DataError, match="do not match the table's dataset card") as e:
            read(out)
        _one_line(e, out)
    # the labels-only read cannot check the frames' digest, but still reads
    assert read_table(out, features=False).num_frames == 40_000


def test_zeroed_bytes_mid_file_are_refused(tmp_path):
    out = write_table(_big(), tmp_path / "a.parquet")
    raw = bytearray(out.read_bytes())
    mid = len(raw) // 2
    raw[mid:mid + 4096] = bytes(4096)
    out.write_bytes(raw)
    with pytest.raises(DataError, match="fails its checksum") as e:
        _read_uncached(out)
    _one_line(e, out)


def test_a_table_written_without_page_checksums_is_still_checked_by_its_digest(tmp_path):
    out = write_table(_big(), tmp_path / "a.parquet")
    arrow = pq.read_table(out)
    pq.write_table(arrow, out, compression="none", write_page_checksum=False)
    assert _read_uncached(out).num_frames == 40_000  # the same frames: fine
    raw = bytearray(out.read_bytes())
    mid = len(raw) // 2
    raw[mid:mid + 4096] = bytes(4096)
    out.write_bytes(raw)
    with pytest.raises(DataError, match="do not match the table's dataset card") as e:
        _read_uncached(out)
    _one_line(e, out)


def test_a_verified_table_is_hashed_once_and_any_change_is_hashed_again(tmp_path,
                                                                        monkeypatch):
    from data_prep import digest, table

    out = write_table(_big(), tmp_path / "a.parquet")
    _read_uncached(out)  # hashed and remembered
    hashed = []
    real = digest.check_content
    monkeypatch.setattr(table, "check_content", lambda *a: hashed.append(1) or real(*a))
    read_table(out)
    table.verify_table(out)
    assert hashed == []  # from the cache: no pass over the features
    # rewritten in place to the same size, its mtime set back: the ctime still differs
    st = out.stat()
    raw = bytearray(out.read_bytes())
    pos = raw.index(np.float32(read_table(out).features[100, 3]).tobytes())
    raw[pos:pos + 4] = np.float32(0.5).tobytes()
    with open(out, "r+b") as f:  # same inode
        f.write(raw)
    os.utime(out, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert out.stat().st_size == st.st_size and out.stat().st_mtime_ns == st.st_mtime_ns
    with pytest.raises(DataError):  # checksum or digest: either way not trusted from cache
        read_table(out)
    assert digest.cache_file().stat().st_mode & 0o077 == 0  # the user's own
