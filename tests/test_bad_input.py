"""Every bad input is one line through the CLI: ``error: FILE[:LINE]: message``, exit 2, no
traceback, and no file or temporary file left behind (a previous output unchanged).

One table, one test: a case builds its inputs under a fresh folder and returns the
``kitchen-study`` arguments and the text the error line must contain (the file, and the
line where there is one). The data cases are below; the study cases (checkpoints, tracking
URIs, specs, ...) have their own section at the end of the table.

Full disk: there is no tiny tmpfs without root tricks here, so ENOSPC is a fault injection:
``pyarrow.parquet.write_table`` is replaced in-process by a writer that puts half a file
on disk and then raises ``OSError(ENOSPC)``, as a real full disk does mid-write.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from data_prep.table import DatasetCard, FrameTable, Split, VideoLabels, write_table
from study.cli import app
from tests.formats import breakfast as bf_fmt
from tests.formats import mpii as mpii_fmt
from tests.formats import mstcn as mstcn_fmt
from tests.formats import salads as salads_fmt


@dataclass(frozen=True)
class Case:
    """``setup(folder)`` writes the inputs and returns (CLI args, text the error names)."""

    id: str
    setup: Callable[[Path], tuple[list[str], str]]
    #: files made by ``setup`` that must be byte-for-byte unchanged afterwards
    unchanged: tuple[str, ...] = ()
    marks: tuple = field(default=())


# -- helpers ----------------------------------------------------------------------------


def _mstcn(d: Path, features: bool = False) -> Path:
    return mstcn_fmt.write(d / "ds", with_features=features)


def _mstcn_args(root: Path, out: Path) -> list[str]:
    return ["prepare", "mstcn", "--root", str(root), "--out", str(out),
            "--participant-pattern", mstcn_fmt.PATTERN]  # fmt: skip


def _append_bytes(path: Path, data: bytes) -> int:
    """Append ``data`` as a new line; returns its 1-based line number."""
    text = path.read_bytes()
    if not text.endswith(b"\n"):
        text += b"\n"
    path.write_bytes(text + data + b"\n")
    return text.count(b"\n") + 1


def _replace_line(path: Path, lineno: int, data: bytes) -> None:
    lines = path.read_bytes().splitlines()
    lines[lineno - 1] = data
    path.write_bytes(b"\n".join(lines) + b"\n")


def _loop(path: Path) -> None:
    os.symlink(path.name, path)  # a symlink to itself: ELOOP when read


def _small_table(path: Path) -> Path:
    card = DatasetCard(name="t", fps=15.0, classes=("bg", "a"), background="bg",
                       source_format="test", converter_version="test-1",
                       splits=(Split("split1", ("P1_a",), ("P2_a",)),))  # fmt: skip
    videos = [VideoLabels("P1_a", np.array([0, 1, 1]), "P1"),
              VideoLabels("P2_a", np.array([1, 0]), "P2")]  # fmt: skip
    return write_table(FrameTable.from_videos(card, videos), path)


def _raw_breakfast(d: Path) -> Path:
    return bf_fmt.write_raw(d / "bf")


def _raw_file(root: Path) -> Path:
    v = bf_fmt.VIDEOS[0]
    return root / "segmentation_coarse" / bf_fmt.activity(v) / f"{v}.txt"


# -- the data cases ---------------------------------------------------------------------


def gt_is_a_folder(d):
    root = _mstcn(d)
    bad = root / "groundTruth" / "S1_soup_cam_a.txt"
    bad.mkdir()
    return _mstcn_args(root, d / "out.parquet"), f"{bad}: is a folder"


def gt_is_a_symlink_loop(d):
    root = _mstcn(d)
    bad = root / "groundTruth" / "S1_soup_cam_a.txt"
    _loop(bad)
    return _mstcn_args(root, d / "out.parquet"), f"{bad}: cannot read"


def raw_breakfast_folder(d):
    root = _raw_breakfast(d)
    bad = root / "segmentation_coarse" / "tea" / "P03_cam02_P03_tea.txt"
    bad.mkdir()
    return ["prepare", "breakfast", "--root", str(root), "--out", str(d / "o.parquet")], str(bad)


def raw_breakfast_symlink_loop(d):
    root = _raw_breakfast(d)
    bad = root / "segmentation_coarse" / "tea" / "P03_cam02_P03_tea.txt"
    _loop(bad)
    return ["prepare", "breakfast", "--root", str(root), "--out", str(d / "o.parquet")], str(bad)


def mapping_not_utf8(d):
    root = _mstcn(d)
    line = _append_bytes(root / "mapping.txt", b"4 caf\xe9")
    return _mstcn_args(root, d / "o.parquet"), f"mapping.txt:{line}: not UTF-8"


def bundle_not_utf8(d):
    root = _mstcn(d)
    bundle = root / "splits" / "train.split1.bundle"
    _replace_line(bundle, 2, b"S2_t\xe9a_cam_a.txt")
    return _mstcn_args(root, d / "o.parquet"), f"{bundle}:2: not UTF-8"


def gt_not_utf8(d):
    root = _mstcn(d)
    gt = root / "groundTruth" / "S2_tea_cam_a.txt"
    _replace_line(gt, 3, b"pour_w\xffter")
    return _mstcn_args(root, d / "o.parquet"), f"{gt}:3: not UTF-8"


def raw_breakfast_not_utf8(d):
    root = _raw_breakfast(d)
    f = _raw_file(root)
    _replace_line(f, 2, b"4-7 take_b\xf6wl")
    return ["prepare", "breakfast", "--root", str(root), "--out", str(d / "o.parquet")], (
        f"{f}:2: not UTF-8"
    )


def mpii_csv_not_utf8(d):
    csv = mpii_fmt.example(d / "m")["csv_path"]
    _replace_line(csv, 3, b"8,s08-d02-cam-002,12,20,5,cut \xe0n")
    return ["prepare", "mpii", "--csv", str(csv), "--out", str(d / "o.parquet")], (
        f"{csv}:3: not UTF-8"
    )


def mpii_end_frame_too_large(d):
    csv = mpii_fmt.example(d / "m")["csv_path"]
    _replace_line(csv, 2, b"8,s08-d02-cam-002,6,1000000000000,2,change temperature")
    return ["prepare", "mpii", "--csv", str(csv), "--out", str(d / "o.parquet")], (
        f"{csv}:2: end_frame 1000000000000 is beyond the limit of 100,000,000 frames"
    )


def raw_breakfast_end_frame_too_large(d):
    root = _raw_breakfast(d)
    f = _raw_file(root)
    _replace_line(f, 1, b"1-1000000000000 SIL")
    return ["prepare", "breakfast", "--root", str(root), "--out", str(d / "o.parquet")], (
        f"{f}:1: end frame 1000000000000 is beyond the limit"
    )


def salads_fitted_clock_too_long(d):
    root = salads_fmt.write(d / "s")
    for p in (root / "groundTruth").iterdir():  # lengths then come from the fitted clock
        p.unlink()
    (root / "groundTruth").rmdir()
    ann = root / "activityAnnotations" / "01-1-activityAnnotation.txt"
    _replace_line(ann, 2, b"%d %d cut_tomato_prep" % (salads_fmt.timestamp(3), 10**15))
    return ["prepare", "salads", "--root", str(root), "--source", "raw",
            "--out", str(d / "o.parquet")], f"{ann}:2: ends at frame"  # fmt: skip


def nan_features(d):
    root = _mstcn(d, features=True)
    npy = root / "features" / "S2_tea_cam_a.npy"
    x = np.load(npy)
    x[1, 4] = np.nan
    np.save(npy, x)
    return _mstcn_args(root, d / "o.parquet"), (
        f"{npy}: video 'S2_tea_cam_a' frame 4: feature 1 is nan (features must be finite)"
    )


def inf_features(d):
    root = _mstcn(d, features=True)
    npy = root / "features" / "S3_tea_cam_b.npy"
    x = np.load(npy)
    x[0, 7] = -np.inf
    np.save(npy, x)
    return _mstcn_args(root, d / "o.parquet"), f"{npy}: video 'S3_tea_cam_b' frame 7"


def out_is_an_existing_folder(d):
    csv = mpii_fmt.example(d / "m")["csv_path"]
    (d / "out").mkdir()
    return ["prepare", "mpii", "--csv", str(csv), "--out", str(d / "out")], (
        f"{d / 'out'}: is a folder"
    )


def _writable(folder: Path) -> bool:
    probe = folder / ".kitchen_study_probe"
    try:
        probe.write_bytes(b"")
    except OSError:
        return False
    probe.unlink()
    return True


def out_in_a_read_only_folder(d):
    csv = mpii_fmt.example(d / "m")["csv_path"]
    ro = d / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    if _writable(ro):  # root ignores the mode: use a read-only system folder instead
        ro.chmod(0o755)
        ro = Path("/sys")
        if not ro.is_dir() or _writable(ro):
            pytest.skip("no read-only folder available to this user")
    out = ro / "kitchen_study_test.parquet"
    return ["prepare", "mpii", "--csv", str(csv), "--out", str(out)], f"{out}: cannot write"


def simulate_onto_its_input(d):
    x = _small_table(d / "x.parquet")
    return ["simulate", str(x), "--out", str(d / "." / "x.parquet"), "--accuracy", "50"], (
        f"{d / 'x.parquet'}: --out is the input PATH itself"
    )


def prepare_onto_its_input(d):
    csv = mpii_fmt.example(d / "m")["csv_path"]
    return ["prepare", "mpii", "--csv", str(csv), "--out", str(csv)], (
        f"{csv}: --out is the input CSV_PATH itself"
    )


DATA_CASES = [
    Case("groundTruth txt is a folder", gt_is_a_folder),
    Case("groundTruth txt is a symlink loop", gt_is_a_symlink_loop),
    Case("raw Breakfast txt is a folder", raw_breakfast_folder),
    Case("raw Breakfast txt is a symlink loop", raw_breakfast_symlink_loop),
    Case("mapping.txt not UTF-8", mapping_not_utf8),
    Case("split bundle not UTF-8", bundle_not_utf8),
    Case("groundTruth file not UTF-8", gt_not_utf8),
    Case("raw Breakfast file not UTF-8", raw_breakfast_not_utf8),
    Case("MPII CSV not UTF-8", mpii_csv_not_utf8),
    Case("MPII end_frame 10^12", mpii_end_frame_too_large),
    Case("raw Breakfast end frame 10^12", raw_breakfast_end_frame_too_large),
    Case("50 Salads fitted clock past the frame limit", salads_fitted_clock_too_long),
    Case("NaN feature", nan_features),
    Case("-inf feature", inf_features),
    Case("--out is an existing folder", out_is_an_existing_folder),
    Case("--out in a read-only folder", out_in_a_read_only_folder),
    Case("simulate X --out X", simulate_onto_its_input, unchanged=("x.parquet",)),
    Case("prepare --csv X --out X", prepare_onto_its_input,
         unchanged=("m/detectionGroundtruth-1-0.csv",)),
]  # fmt: skip


# -- the study cases (owned by the study side of issue 9) --------------------------------
# Add Case(...) rows here: a 0-byte or foreign checkpoint, an unreachable tracking URI,
# `best --metric bogus`, `--device tpu`, a duplicate YAML key, a corrupt mlflow.db, ...

def _feature_table(path: Path, frames: int = 40) -> Path:
    """A two-class table with softmax features, three videos of ``frames`` frames."""
    card = DatasetCard(name="t", fps=15.0, classes=("bg", "a"), background="bg",
                       source_format="test", converter_version="test-1",
                       splits=(Split("split1", ("P1_a", "P2_a"), ("P3_a",)),))  # fmt: skip
    labels = np.repeat([0, 1], [frames // 2, frames - frames // 2])
    feats = np.eye(2, dtype=np.float32)[labels] * 0.8 + 0.1
    videos = [VideoLabels(f"P{i}_a", labels, f"P{i}") for i in (1, 2, 3)]
    table = FrameTable.from_videos(card, videos)
    return write_table(table.with_features(np.tile(feats, (3, 1)), {"kind": "test"}), path)


def _study(d: Path, extra: str = "", experiments: str = "") -> Path:
    """A valid one-dataset study spec (tracking store inside ``d``); ``extra`` lines are
    appended at the top level, ``experiments`` lines inside ``experiments``."""
    _feature_table(d / "t.parquet")
    spec = d / "s.yaml"
    spec.write_text(
        "name: s\n"
        "datasets:\n  t: {path: t.parquet, splits: [1]}\n"
        "model: {history: 8, hidden: 4, batch_size: 2}\n"
        f"experiments:\n  iterations: 5\n{experiments}"
        f"tracking_uri: sqlite:///{d / 'mlflow.db'}\n{extra}")
    return spec


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends: connection refused


def best_bogus_metric(d):
    return ["best", str(_study(d)), "--metric", "bogus"], "--metric: unknown metric 'bogus'"


def spec_duplicate_key(d):
    spec = _study(d, experiments="  iterations: 6\n")
    return (["run", str(spec), "--dry-run"],
            f"{spec}:7: not valid YAML: duplicate key 'iterations' (first at line 6)")


def spec_cpu_above_the_machine(d):
    spec = _study(d, extra="resources: {cpu: 100000}\n")
    return (["run", str(spec), "--num-cpus", "2"],
            f"{spec}: resources.cpu: 100000 CPUs per trial, but the largest Ray node has 2")


def spec_too_many_seeds(d):
    # 10^6 seeds is refused by the same bound; 1001 keeps the YAML small
    spec = _study(d, experiments=f"  seeds: [{', '.join(map(str, range(1001)))}]\n")
    return ["run", str(spec), "--dry-run"], "experiments.seeds: List should have at most 1000"


def corrupt_mlflow_db_status(d):
    spec = _study(d)
    (d / "mlflow.db").write_bytes(b"not a database\n" * 100)
    return ["status", str(spec)], f"{d / 'mlflow.db'}: not an SQLite database"


def corrupt_mlflow_db_run(d):
    spec = _study(d)
    (d / "mlflow.db").write_bytes(b"\x00" * 4096)
    return ["run", str(spec)], f"{d / 'mlflow.db'}: not an SQLite database"


def unreachable_tracking_server(d):
    uri = f"http://127.0.0.1:{_closed_port()}"
    return (["status", str(_study(d)), "--tracking-uri", uri],
            f"{uri}: the MLflow tracking server does not answer")


def train_device_tpu(d):
    return (["train", str(_feature_table(d / "t.parquet")), "--device", "tpu"],
            "device: unknown device 'tpu'")


def train_lr_one(d):
    return (["train", str(_feature_table(d / "t.parquet")), "--lr", "1"],
            "lr: Input should be less than 1")


def train_history_longer_than_every_video(d):
    return (["train", str(_feature_table(d / "t.parquet")), "--history", "41"],
            "history 41 is longer than every training video of t split1 (the longest has 40")


def train_batch_beyond_memory(d):
    return (["train", str(_feature_table(d / "t.parquet")), "--history", "8", "--batch",
             "65536", "--hidden", "16384", "--depth", "16", "--device", "cpu"],
            "GiB per training step")


def train_empty_checkpoint(d):
    (d / "empty.pt").write_bytes(b"")
    return (["train", str(_feature_table(d / "t.parquet")), "--mode", "transfer", "--init",
             str(d / "empty.pt")], str(d / "empty.pt"))


# -- issue 19: each bad input of the audit, and more of the same kinds -------------------


def _rewrite_table(src: Path, dst: Path, edit: Callable) -> Path:
    """``dst``: the table at ``src`` with ``edit(arrow table) -> arrow table`` applied, its
    schema metadata (the card) kept, as a user editing a file with pyarrow would."""
    t = pq.read_table(src)
    pq.write_table(edit(t).replace_schema_metadata(t.schema.metadata), dst)
    return dst


def _edit_card(path: Path, **changes) -> None:
    import json

    t = pq.read_table(path)
    meta = dict(t.schema.metadata)
    card = json.loads(meta[b"kitchen_study.card"])
    card.update(changes)
    meta[b"kitchen_study.card"] = json.dumps(card).encode()
    pq.write_table(t.replace_schema_metadata(meta), path)


def _edit_spec(spec: Path, old: str, new: str) -> Path:
    text = spec.read_text()
    assert old in text, old
    spec.write_text(text.replace(old, new))
    return spec


def train_iterations_zero(d):
    return (["train", str(_feature_table(d / "t.parquet")), "--iterations", "0"],
            "--iterations must be 1..1,000,000,000")


def train_iterations_negative(d):
    return (["train", str(_feature_table(d / "t.parquet")), "--iterations", "-5"],
            "--iterations must be 1..")


def train_iterations_10_19(d):
    return (["train", str(_feature_table(d / "t.parquet")), "--iterations", str(10**19)],
            "--iterations must be 1..")


def table_without_label(d):
    bad = _rewrite_table(_feature_table(d / "t.parquet"), d / "nolabel.parquet",
                         lambda t: t.drop(["label"]))
    return ["info", str(bad)], f"{bad}: not a frame table: no 'label' column"


def train_on_table_without_label(d):
    bad = _rewrite_table(_feature_table(d / "t.parquet"), d / "nolabel.parquet",
                         lambda t: t.drop(["label"]))
    return ["train", str(bad), "--history", "8"], f"{bad}: not a frame table: no 'label'"


def float_label_column(d):
    import pyarrow as pa

    def to_float(t):
        i = t.schema.get_field_index("label")
        labels = t.column("label").to_numpy().astype(float) + 0.6  # would truncate to 0/1
        return t.set_column(i, pa.field("label", pa.float64()), pa.array(labels))

    bad = _rewrite_table(_feature_table(d / "t.parquet"), d / "float.parquet", to_float)
    return ["info", str(bad)], f"{bad}: column 'label' is double, expected an integer"


def card_fps_fast(d):
    t = _feature_table(d / "t.parquet")
    _edit_card(t, fps="fast")
    return ["info", str(t)], f"{t}: bad dataset card: fps: expected a number, got 'fast'"


def card_fps_fast_in_a_study(d):
    spec = _study(d)
    _edit_card(d / "t.parquet", fps="fast")
    return ["run", str(spec), "--dry-run"], "datasets.t.path: bad dataset card: fps"


def card_classes_not_strings(d):
    t = _feature_table(d / "t.parquet")
    _edit_card(t, classes=[0, 1])
    return ["info", str(t)], f"{t}: bad dataset card: classes: expected a list of strings"


def dataset_symlink_loop(d):
    spec = _study(d)
    (d / "t.parquet").unlink()
    _loop(d / "t.parquet")
    return ["run", str(spec), "--dry-run"], f"datasets.t.path: a symlink loop: {d / 't.parquet'}"


def store_symlink_loop(d):
    spec = _study(d)
    _loop(d / "mlflow.db")
    return ["status", str(spec)], f"{d / 'mlflow.db'}: the path is a symlink loop"


def search_seed_2_32(d):
    spec = _study(d, extra=f"search: {{space: small, target: t, num_samples: 2, "
                           f"seed: {2**32}}}\n")
    return ["run", str(spec), "--dry-run"], "search.seed: Input should be less than or equal"


def experiment_seed_2_32(d):
    spec = _study(d, experiments=f"  seeds: [0, {2**32}]\n")
    return ["run", str(spec), "--dry-run"], "experiments.seeds[1]: Input should be less than"


def search_storage_unknown_scheme(d):
    spec = _study(d, extra="search: {space: small, target: t, num_samples: 2, "
                           "storage: 'bogus://x'}\n")
    return (["run", str(spec), "--dry-run"],
            "search.storage: 'bogus://x' is not a database URL Optuna can open")


def search_storage_plain_path(d):
    spec = _study(d, extra="search: {space: small, target: t, num_samples: 2, "
                           "storage: optuna.db}\n")
    return ["run", str(spec), "--dry-run"], "search.storage: 'optuna.db' is not a database URL"


def search_storage_unopenable(d):
    spec = _study(d, extra="search: {space: small, target: t, num_samples: 2, "
                           f"storage: 'sqlite:///{d}/no/such/folder/o.db'}}\n")
    return (["run", str(spec), "--dry-run"],
            f"search.storage: Optuna storage sqlite:///{d}/no/such/folder/o.db: the folder")


def tracking_uri_unknown_scheme(d):
    return (["status", str(_study(d)), "--tracking-uri", "bogus://x"],
            "bogus://x: unknown tracking URI scheme 'bogus'")


def tracking_uri_unopenable(d):
    uri = f"sqlite:///{d}/no/such/folder/m.db"
    return ["status", str(_study(d)), "--tracking-uri", uri], f"{uri}: the folder"


def tracking_uri_unopenable_run(d):
    uri = f"sqlite:///{d}/no/such/folder/m.db"
    return ["run", str(_study(d)), "--tracking-uri", uri], f"{uri}: the folder"


def tracking_uri_is_a_folder(d):
    (d / "store").mkdir()
    uri = f"sqlite:///{d / 'store'}"
    return ["best", str(_study(d)), "--tracking-uri", uri], "is a folder, not an SQLite file"


class _Unauthorized:
    """A local HTTP server answering every request with 401, as an MLflow server with
    basic auth does to a client without credentials."""

    def __enter__(self) -> str:
        import http.server
        import threading

        class Handler(http.server.BaseHTTPRequestHandler):
            def _deny(self):
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="mlflow"')
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST = _deny  # noqa: N815

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def spec_history_100000(d):
    spec = _edit_spec(_study(d), "history: 8", "history: 100000")
    return (["run", str(spec), "--dry-run"],
            "model.history: 100000 is longer than every training video of t split1 (the "
            "longest has 40 frames)")


def spec_iterations_10_19(d):
    spec = _edit_spec(_study(d), "iterations: 5", f"iterations: {10**19}")
    return (["run", str(spec), "--dry-run"],
            "experiments.iterations: Input should be less than or equal to 1000000000")


def spec_eval_at_10_19(d):
    spec = _study(d, experiments=f"  eval_at: [{10**19}]\n")
    return ["run", str(spec), "--dry-run"], "experiments.eval_at[0]: Input should be less"


def spec_search_iterations_10_19(d):
    spec = _study(d, extra=f"search: {{space: small, target: t, num_samples: 2, "
                           f"iterations: {10**19}}}\n")
    return ["run", str(spec), "--dry-run"], "search.iterations: Input should be less"


def spec_dataset_key_with_slash(d):
    spec = _edit_spec(_study(d), "  t: {path", "  a/b: {path")
    return ["run", str(spec), "--dry-run"], "datasets: dataset name 'a/b' may hold only"


def spec_dataset_key_with_colon(d):
    spec = _edit_spec(_study(d), "  t: {path", "  'a:b': {path")
    return ["run", str(spec), "--dry-run"], "datasets: dataset name 'a:b' may hold only"


def best_k_zero(d):
    return ["best", str(_study(d)), "--k", "0"], "--k: must be at least 1, got 0"


def best_k_negative(d):
    return ["best", str(_study(d)), "--k", "-1"], "--k: must be at least 1, got -1"


def best_unknown_target(d):
    return (["best", str(_study(d)), "--target", "nope"],
            "--target: unknown dataset 'nope' (the study's datasets: t)")


def register_unknown_target(d):
    return (["register", str(_study(d)), "--target", "nope"],
            "--target: unknown dataset 'nope'")


def status_into_a_foreign_sqlite_file(d):
    import sqlite3

    spec = _study(d)
    con = sqlite3.connect(d / "mlflow.db")
    con.execute("CREATE TABLE invoices (id INTEGER, amount REAL)")
    con.commit()
    con.close()
    return (["status", str(spec)],
            f"{d / 'mlflow.db'}: an SQLite database with other tables (invoices), not an "
            "MLflow tracking store")


def run_num_cpus_zero(d):
    return (["run", str(_study(d)), "--dry-run", "--num-cpus", "0"],
            "--num-cpus: must be at least 1")


def synth_zero_videos(d):
    return (["synth", "--out", str(d / "s"), "--videos", "0"],
            "error: 0 videos cannot cover 8 participants")


def synth_zero_kitchens(d):
    return ["synth", "--out", str(d / "s"), "--kitchens", "0"], "kitchens must be 1..3, got 0"


ISSUE_19_CASES: list[Case] = [
    Case("train --iterations 0", train_iterations_zero),
    Case("train --iterations -5", train_iterations_negative),
    Case("train --iterations 10^19", train_iterations_10_19),
    Case("Parquet without its label column (info)", table_without_label),
    Case("Parquet without its label column (train)", train_on_table_without_label),
    Case("float label column", float_label_column),
    Case("card with fps 'fast'", card_fps_fast),
    Case("card with fps 'fast' in a study", card_fps_fast_in_a_study),
    Case("card with integer class names", card_classes_not_strings),
    Case("dataset path is a symlink loop", dataset_symlink_loop),
    Case("tracking store is a symlink loop", store_symlink_loop),
    Case("search.seed 2^32", search_seed_2_32),
    Case("experiments.seeds 2^32", experiment_seed_2_32),
    Case("search.storage unknown scheme", search_storage_unknown_scheme),
    Case("search.storage a plain path", search_storage_plain_path),
    Case("search.storage in a missing folder", search_storage_unopenable),
    Case("tracking URI unknown scheme", tracking_uri_unknown_scheme),
    Case("tracking URI in a missing folder (status)", tracking_uri_unopenable),
    Case("tracking URI in a missing folder (run)", tracking_uri_unopenable_run),
    Case("tracking URI is a folder", tracking_uri_is_a_folder),
    Case("model.history 100000 at spec level", spec_history_100000),
    Case("experiments.iterations 10^19", spec_iterations_10_19),
    Case("experiments.eval_at 10^19", spec_eval_at_10_19),
    Case("search.iterations 10^19", spec_search_iterations_10_19),
    Case("dataset key a/b", spec_dataset_key_with_slash),
    Case("dataset key a:b", spec_dataset_key_with_colon),
    Case("best --k 0", best_k_zero),
    Case("best --k -1", best_k_negative),
    Case("best --target nope", best_unknown_target),
    Case("register --target nope", register_unknown_target),
    Case("status on a foreign SQLite file", status_into_a_foreign_sqlite_file,
         unchanged=("mlflow.db",)),
    Case("run --num-cpus 0", run_num_cpus_zero),
    Case("synth --videos 0", synth_zero_videos),
    Case("synth --kitchens 0", synth_zero_kitchens),
]  # fmt: skip


STUDY_CASES: list[Case] = [
    Case("best --metric bogus", best_bogus_metric),
    Case("duplicate key in a YAML spec", spec_duplicate_key),
    Case("resources.cpu above the machine", spec_cpu_above_the_machine),
    Case("more seeds than a spec may ask for", spec_too_many_seeds),
    Case("corrupt mlflow.db (status)", corrupt_mlflow_db_status, unchanged=("mlflow.db",)),
    Case("corrupt mlflow.db (run)", corrupt_mlflow_db_run, unchanged=("mlflow.db",)),
    Case("unreachable tracking server", unreachable_tracking_server),
    Case("train --device tpu", train_device_tpu),
    Case("train --lr 1", train_lr_one),
    Case("train --history longer than every video", train_history_longer_than_every_video),
    Case("train batch beyond the machine's memory", train_batch_beyond_memory),
    Case("train --init 0-byte checkpoint", train_empty_checkpoint),
]  # fmt: skip


# -- the test ---------------------------------------------------------------------------


def _tree(d: Path) -> set[str]:
    return {str(p.relative_to(d)) for p in d.rglob("*")}


def assert_one_line_error(res, expected: str) -> None:
    assert res.exit_code == 2, (res.exit_code, res.output, res.exception)
    assert isinstance(res.exception, SystemExit), repr(res.exception)
    assert "Traceback" not in res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("error: "), lines[0]
    assert expected in lines[0], (expected, lines[0])


@pytest.mark.parametrize("case", DATA_CASES + STUDY_CASES + ISSUE_19_CASES, ids=lambda c: c.id)
def test_bad_input_is_one_line(case: Case, tmp_path):
    args, expected = case.setup(tmp_path)
    before = _tree(tmp_path)
    kept = {name: (tmp_path / name).read_bytes() for name in case.unchanged}
    res = CliRunner().invoke(app, args)
    assert_one_line_error(res, expected)
    assert _tree(tmp_path) == before, "a file or temporary file was left behind"
    for name, data in kept.items():
        assert (tmp_path / name).read_bytes() == data, f"{name} changed"


# -- full disk (fault injection, see the module docstring) --------------------------------


def _disk_full_after(monkeypatch, good_writes: int) -> None:
    real = pq.write_table
    calls = {"n": 0}

    def write(table, where, **kw):
        calls["n"] += 1
        if calls["n"] <= good_writes:
            return real(table, where, **kw)
        Path(where).write_bytes(b"PAR1 half a file")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(pq, "write_table", write)


def test_full_disk_leaves_the_previous_output(tmp_path, monkeypatch):
    csv = mpii_fmt.example(tmp_path / "m")["csv_path"]
    out = tmp_path / "out" / "mpii.parquet"
    args = ["prepare", "mpii", "--csv", str(csv), "--out", str(out)]
    assert CliRunner().invoke(app, args).exit_code == 0
    before, tree = out.read_bytes(), _tree(tmp_path)
    _disk_full_after(monkeypatch, 0)
    res = CliRunner().invoke(app, args)
    assert_one_line_error(res, f"{out}: cannot write (No space left on device)")
    assert out.read_bytes() == before
    assert _tree(tmp_path) == tree


@pytest.mark.parametrize("previous", [False, True], ids=["fresh folder", "over a previous run"])
def test_full_disk_synth_leaves_none_of_its_files(tmp_path, monkeypatch, previous):
    out = tmp_path / "synth"
    args = ["synth", "--out", str(out), "--videos", "8", "--participants", "4"]
    if previous:
        assert CliRunner().invoke(app, [*args, "--seed", "1"]).exit_code == 0
    else:
        out.mkdir()
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    _disk_full_after(monkeypatch, 1)  # the second of three files hits the full disk
    res = CliRunner().invoke(app, [*args, "--seed", "2"])
    assert_one_line_error(res, f"{out}: cannot write (No space left on device)")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


# -- issue 19: a tracking server that refuses us, every spec problem at once ------------


@pytest.mark.parametrize("command", ["status", "best", "run"])
def test_a_401_from_the_tracking_server_is_one_line(tmp_path, monkeypatch, command):
    for var in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    spec = _study(tmp_path)
    before = _tree(tmp_path)
    with _Unauthorized() as uri:
        res = CliRunner().invoke(app, [command, str(spec), "--tracking-uri", uri])
        assert_one_line_error(res, f"{uri}: the MLflow tracking server says HTTP 401 "
                              "(unauthorized): set MLFLOW_TRACKING_USERNAME")
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "me")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "wrong")
        res = CliRunner().invoke(app, [command, str(spec), "--tracking-uri", uri])
        assert_one_line_error(res, "the credentials in MLFLOW_TRACKING_USERNAME")
    assert _tree(tmp_path) == before


def test_every_spec_problem_is_reported_at_once(tmp_path):
    """Stumble 9: an unknown dataset (a reference check) must not hide a `histroy:` typo
    (the model's schema), a schema error elsewhere, or a missing file (a data check)."""
    spec = _study(tmp_path, extra="search: {space: small, target: nope, num_samples: 2}\n",
                  experiments="  bogus_key: 1\n")
    _edit_spec(spec, "history: 8", "histroy: 8")
    _edit_spec(spec, "datasets:\n", "datasets:\n  gone: {path: gone.parquet, splits: [1]}\n")
    res = CliRunner().invoke(app, ["run", str(spec), "--dry-run"])
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    lines = res.stderr.strip().splitlines()
    assert lines[0].startswith(f"error: {spec}: ")
    assert all(line.startswith("  also: ") for line in lines[1:]), lines
    text = "\n".join(lines)
    for problem in ("experiments.bogus_key: unknown key",
                    "search.target: unknown dataset 'nope'",
                    "model.histroy: unknown key",
                    f"datasets.gone.path: no such file: {tmp_path / 'gone.parquet'}"):
        assert text.count(problem) == 1, (problem, text)
    assert len(lines) == 4, text
