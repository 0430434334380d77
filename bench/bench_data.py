"""Data preparation speed on all of Breakfast: converting to Parquet and loading it back.

    .venv/bin/python bench/bench_data.py [--runs 5] [--baseline-runs 3] [--variants] [--write-doc]

Needs the real annotations (``../shared/data`` or ``$KITCHEN_DATA``); skips otherwise.
Each figure is a median over ``--runs`` timed calls (``--baseline-runs`` for the slow naive
baselines); ours and its baseline alternate, so both see the same background load. Wall
time is what the targets are about; the process's CPU time is printed beside it because
this 2-core machine is shared and a high load average inflates wall time.

1. **convert**: ``breakfast.convert`` (1712 groundTruth files, 3,590,899 frames) +
   ``write_table`` (target ≤ 20 s), against a naive pandas conversion (``read_csv`` per
   file, ``Series.map`` to indices, one DataFrame per video, ``concat``, ``to_parquet``).
   Stage breakdown: reading the label files with the current ``read_label_file`` against
   the previous one (a generator of dict lookups over decoded lines).
2. **load labels**: ``read_table(features=False)`` (target ≤ 1 s), against
   ``pq.read_table(path).to_pandas()``.
3. **load with features**: the table plus a 48-dim float32 ``features`` column (random
   softmax vectors, seeded; simulated softmax compresses no better, see the docstring of
   ``data_prep.table._parquet_options``), ``read_table()`` (target ≤ 3 s), against
   (a) the previous Parquet settings and reader (zstd + dictionary + statistics on the
   features column, ``pq.read_table`` without memory map, then the same copy into one
   array) and (b) ``pq.read_table(path).to_pandas()`` + ``np.stack`` of the features.
   **Content digest**: ``write_table`` (which computes ``card.content_digest`` and checks
   the features are finite in one pass over the arrays) against the same write without
   that pass (baseline, timed alternately in the same run), and the digest alone.

4. ``--variants``: decoding the features column alone (``table._read_features``, on the
   433 cam01 videos) when it was written with other settings (nullable, v2 8 MiB pages, lz4, zstd,
   byte-stream-split + zstd),
   to back the choice in ``data_prep.table._parquet_options``.

``--write-doc`` replaces the ``## Data preparation`` section of docs/benchmarks.md (other
sections untouched; the file is created with a ``# Benchmarks`` header if missing).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from data_prep import breakfast, real_data_dir
from data_prep.atomic import atomic_output
from data_prep.digest import content_digest
from data_prep.readers import read_label_file, read_mapping
from data_prep.table import (
    FrameTable,
    _parquet_options,
    _read_features,
    read_table,
    to_arrow,
    write_table,
)

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
SECTION = "## Data preparation"


# -- baselines ------------------------------------------------------------------------------


def naive_convert(root: Path, out: Path) -> int:
    """What one writes without thinking about speed: pandas per file."""
    classes = read_mapping(root / "mapping.txt")
    index = {c: i for i, c in enumerate(classes)}
    frames = []
    for p in sorted((root / "groundTruth").glob("*.txt")):
        df = pd.read_csv(p, header=None, names=["name"])
        participant, view, _, activity = p.stem.split("_")
        frames.append(
            pd.DataFrame(
                {
                    "video": p.stem,
                    "frame": np.arange(len(df), dtype=np.int32),
                    "label": df["name"].map(index).astype(np.int16),
                    "participant": participant,
                    "activity": activity,
                    "view": view,
                }
            )
        )
    table = pd.concat(frames, ignore_index=True)
    table.to_parquet(out)
    return len(table)


def old_read_label_file(path: Path, class_index: dict[str, int]) -> np.ndarray:
    """``read_label_file`` before this benchmark (hot path only)."""
    lines = path.read_text().split()
    return np.fromiter((class_index[x] for x in lines), dtype=np.int16, count=len(lines))


def nullable_features(arrow: pa.Table) -> pa.Table:
    """The previous schema: a nullable features column of nullable floats."""
    i = arrow.schema.get_field_index("features")
    old = pa.list_(pa.float32(), arrow.schema.field(i).type.list_size)
    return arrow.set_column(i, pa.field("features", old), arrow.column(i).cast(old))


def old_write(table: FrameTable, path: Path) -> None:
    """The previous writer: nullable features, zstd (with dictionary and statistics) on
    every column."""
    arrow = nullable_features(to_arrow(table))
    with atomic_output(path) as tmp:
        pq.write_table(arrow, tmp, row_group_size=1 << 20, compression="zstd")


def old_read_features(path: Path) -> np.ndarray:
    """The previous reader's features path: no memory map, then one copy per chunk."""
    col = pq.read_table(path, columns=["label", "features"]).column("features")
    dim = col.type.list_size
    out = np.empty((len(col), dim), dtype=np.float32)
    pos = 0
    for chunk in col.chunks:
        m = len(chunk)
        out[pos : pos + m] = chunk.flatten().to_numpy().reshape(m, dim)
        pos += m
    return out


def write_without_digest(table: FrameTable, path: Path) -> None:
    """``write_table`` minus the content-digest / finite-features pass: the baseline for
    the digest's cost."""
    table.validate()
    arrow = to_arrow(table)
    with atomic_output(path) as tmp:
        pq.write_table(arrow, tmp, row_group_size=1 << 20, **_parquet_options(arrow))


def pandas_read(path: Path, features: bool) -> int:
    df = pq.read_table(path).to_pandas()
    if features:
        np.stack(df["features"].to_numpy())
    return len(df)


def random_softmax(frames: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((frames, dim), dtype=np.float32)
    np.exp(x, out=x)
    x /= x.sum(axis=1, keepdims=True)
    return x


# -- timing ---------------------------------------------------------------------------------


class Timer:
    """Wall and CPU seconds of repeated calls, kept per name."""

    def __init__(self) -> None:
        self.wall: dict[str, list[float]] = {}
        self.cpu: dict[str, list[float]] = {}

    def __call__(self, name: str, fn: Callable[[], object]) -> object:
        c0, w0 = time.process_time(), time.perf_counter()
        result = fn()
        w, c = time.perf_counter() - w0, time.process_time() - c0
        self.wall.setdefault(name, []).append(w)
        self.cpu.setdefault(name, []).append(c)
        print(f"  {name:<34} {w:7.2f} s wall {c:7.2f} s CPU", flush=True)
        return result

    def median(self, name: str) -> float:
        return statistics.median(self.wall[name])

    def best(self, name: str) -> float:
        return min(self.wall[name])

    def median_cpu(self, name: str) -> float:
        return statistics.median(self.cpu[name])

    def n(self, name: str) -> int:
        return len(self.wall[name])


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    py = platform.python_version()
    return f"{model}, {os.cpu_count()} cores, Python {py}, pyarrow {pa.__version__}"


# -- the benchmark --------------------------------------------------------------------------


def run(
    root: Path, work: Path, runs: int, baseline_runs: int, with_variants: bool
) -> dict[str, object]:
    t = Timer()
    out = work / "breakfast.parquet"
    naive_out = work / "naive.parquet"
    load0 = os.getloadavg()[0]

    print("convert all of Breakfast to Parquet")
    for i in range(runs):
        t("convert", lambda: write_table(breakfast.convert(root), out))
        if i < baseline_runs:
            t("naive pandas convert", lambda: naive_convert(root, naive_out))
    table = breakfast.convert(root)

    print("read the groundTruth label files (stage of convert)")
    classes = read_mapping(root / "mapping.txt")
    index = {c: i for i, c in enumerate(classes)}
    files = sorted((root / "groundTruth").glob("*.txt"))
    for _ in range(runs):
        t("read labels: read_label_file", lambda: [read_label_file(p, index) for p in files])
        t("read labels: previous version", lambda: [old_read_label_file(p, index) for p in files])

    print("load labels into contiguous arrays")
    for i in range(runs):
        t("load labels", lambda: read_table(out, features=False))
        if i < baseline_runs:
            t("load labels: pq + to_pandas", lambda: pandas_read(out, features=False))

    sizes = with_features(t, table, work, runs, baseline_runs)
    found: tuple[int, list] = (0, [])
    if with_variants:
        print("features column under other writer settings")
        found = variants(root, work, runs)
    return {
        "variants": found,
        "timer": t,
        "frames": table.num_frames,
        "videos": table.num_videos,
        "size": out.stat().st_size,
        **sizes,
        "load": (load0, os.getloadavg()[0]),
    }


def with_features(
    t: Timer, table: FrameTable, work: Path, runs: int, baseline_runs: int
) -> dict[str, int]:
    """Write and load ``table`` with 48-dim features; returns the file sizes (the files
    and arrays are gone afterwards, so that later measurements have the memory)."""
    print("write and load with 48-dim float32 features")
    feats = random_softmax(table.num_frames, 48)
    ftable = table.with_features(feats, {"kind": "random softmax", "seed": 0})
    fout, fold = work / "features.parquet", work / "features_old.parquet"
    for _ in range(max(3, baseline_runs)):
        t("write with features", lambda: write_table(ftable, fout))
        t("write with features: no digest", lambda: write_without_digest(ftable, fold))
        t("content digest alone", lambda: content_digest(ftable))
        t("write with features: previous", lambda: old_write(ftable, fold))
    check = read_table(fout)
    assert np.array_equal(check.features, feats) and np.array_equal(check.labels, table.labels)
    del check
    for i in range(runs):
        t("load with features", lambda: read_table(fout))
        t("load with features: previous", lambda: old_read_features(fold))
        if i < baseline_runs:
            t("load with features: pq + to_pandas", lambda: pandas_read(fout, features=True))
    sizes = {"fsize": fout.stat().st_size, "fsize_old": fold.stat().st_size}
    fout.unlink()
    fold.unlink()
    return sizes


VARIANTS: dict[str, dict[str, object]] = {
    # writer settings for the features column; everything else as in write_table
    "ours: non-null, uncompressed": {},
    "nullable (the previous schema), uncompressed": {"nullable": True},
    "uncompressed, v2 data pages of 8 MiB": {"data_page_version": "2.0", "data_page_size": 8 << 20},
    "lz4": {"compression": "lz4"},
    "zstd": {"compression": "zstd"},
    "byte_stream_split + zstd": {"compression": "zstd", "encoding": "BYTE_STREAM_SPLIT"},
}


def variants(
    root: Path, work: Path, runs: int
) -> tuple[int, list[tuple[str, float, float, float]]]:
    """Decode time of the features column under other writer settings (same reader), on
    the cam01 videos (a quarter of Breakfast, so that all variants stay in the page cache).
    Returns (frames, [(variant, wall, CPU, file bytes)])."""
    table = breakfast.convert(root, "cam01")
    ftable = table.with_features(random_softmax(table.num_frames, 48), {"kind": "random"})
    arrow = to_arrow(ftable)
    base = _parquet_options(arrow)
    leaf = "features.list.element"
    paths = {}
    for name, v in VARIANTS.items():
        special = ("compression", "encoding", "nullable")
        opts = {**base, **{k: x for k, x in v.items() if k not in special}}
        if "compression" in v:
            opts["compression"] = {**base["compression"], leaf: v["compression"]}
        if "encoding" in v:
            opts["column_encoding"] = {leaf: v["encoding"]}
        paths[name] = work / f"variant{len(paths)}.parquet"
        data = nullable_features(arrow) if v.get("nullable") else arrow
        pq.write_table(data, paths[name], row_group_size=1 << 20, **opts)
    t = Timer()
    names = list(paths)
    for r in range(2 * runs):  # alternate the order, so no variant always runs first
        for name in names if r % 2 == 0 else names[::-1]:
            t(f"decode: {name}", lambda p=paths[name]: _read_features(p, ftable.num_frames))
    return ftable.num_frames, [
        (name, t.median(f"decode: {name}"), t.median_cpu(f"decode: {name}"),
         paths[name].stat().st_size)
        for name in VARIANTS
    ]  # fmt: skip


def report(res: dict[str, object]) -> str:
    t: Timer = res["timer"]  # type: ignore[assignment]
    rows = [
        ("convert + write (labels)", "convert", "naive pandas convert", "≤ 20 s"),
        ("load labels", "load labels", "load labels: pq + to_pandas", "≤ 1 s"),
        ("load with 48-dim features", "load with features",
         "load with features: previous", "≤ 3 s"),
        ("", "load with features", "load with features: pq + to_pandas", ""),
        ("write with 48-dim features", "write with features", "write with features: previous", ""),
        ("write with features: cost of the content digest", "write with features",
         "write with features: no digest", ""),
        ("stage: read 1712 label files", "read labels: read_label_file",
         "read labels: previous version", ""),
    ]  # fmt: skip
    lo, hi = res["load"]  # type: ignore[misc]
    lines = [
        SECTION,
        "",
        f"`.venv/bin/python bench/bench_data.py --write-doc` on all of Breakfast "
        f"({res['videos']} videos, {res['frames']:,} frames; features: 48-dim float32 random "
        f"softmax). Machine: {machine()}; shared with other jobs, load average "
        f"{lo:.1f} at the start and {hi:.1f} at the end, so wall times are inflated (the CPU "
        f"column is this process's own CPU time; wall ≈ CPU when the machine is idle). "
        f"Wall: median of n timed calls (best in brackets); CPU: median. Ours and the "
        f"baseline alternate within the run. Ratio = baseline / ours (median wall).",
        "",
        "| what | ours: wall (best), CPU | n | baseline | baseline: wall (best), CPU | n "
        "| ratio | target |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def cell(name: str) -> str:
        return f"{t.median(name):.2f} s ({t.best(name):.2f}), {t.median_cpu(name):.2f} s"

    for what, ours, base, target in rows:
        ratio = t.median(base) / t.median(ours)
        lines.append(
            f"| {what} | {cell(ours)} | {t.n(ours)} | {base} | {cell(base)} | {t.n(base)} | "
            f"{ratio:.1f}x | {target} |"
        )
    mb = 1e6
    w, nd, dg = "write with features", "write with features: no digest", "content digest alone"
    spread = max(t.wall[nd]) - min(t.wall[nd])
    diff = t.median(w) - t.median(nd)
    verdict = (
        "within that spread, so the digest-alone figure is the better measure of its cost"
        if abs(diff) < spread
        else "outside that spread"
    )
    lines += [
        "",
        f"Content digest (`card.content_digest`: sha256 over video ids, offsets, labels and "
        f"the {res['frames']:,} x 48 float32 features, with the finite-features check in the "
        f"same pass): computed alone, {t.median(dg):.2f} s wall ({t.median_cpu(dg):.2f} s "
        f"CPU), median of {t.n(dg)}. `write_table` with it against the same write without "
        f"it (baseline, alternating in this run, medians of {t.n(w)}): "
        f"{diff:+.2f} s wall, {t.median_cpu(w) - t.median_cpu(nd):+.2f} s CPU; the "
        f"baseline's own calls spread over {spread:.2f} s wall: {verdict}.",
        "",
        f"Files: labels only {res['size'] / mb:.1f} MB; with features {res['fsize'] / mb:.0f} MB "
        f"(features column uncompressed) against {res['fsize_old'] / mb:.0f} MB with the "
        f"previous zstd settings. `previous` = the settings before this benchmark (a nullable "
        f"features column, zstd with dictionary and statistics; the reader decoding the "
        f"whole column without memory map, then copying; label files read through a "
        f"generator over decoded lines).",
        "",
    ]
    vframes, found = res["variants"]  # type: ignore[misc]
    if found:
        lines += [
            f"Writer settings for the features column (`--variants`): decoding it alone "
            f"with the same reader, {vframes:,} frames (the cam01 videos) x 48, medians of "
            f"{2 * t.n('load with features')} alternating calls:",
            "",
            "| features column | decode: wall (CPU) | file |",
            "|---|---|---|",
            *(
                f"| {name} | {w:.2f} s ({c:.2f}) | {size / mb:.0f} MB |"
                for name, w, c, size in found  # type: ignore[union-attr]
            ),
            "",
        ]
    return "\n".join(lines)


def write_doc(section: str, doc: Path = DOC) -> None:
    """Replace (or append) this benchmark's section, leaving the others as they are."""
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text.rstrip("\n") + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--baseline-runs", type=int, default=3)
    ap.add_argument("--write-doc", action="store_true", help=f"update {DOC}")
    ap.add_argument(
        "--variants", action="store_true", help="also time other writer settings for features"
    )
    args = ap.parse_args(argv)
    data = real_data_dir()
    if data is None or not (data / "breakfast").is_dir():
        print("skip: the real annotations are not here (set KITCHEN_DATA)")
        return 0
    with tempfile.TemporaryDirectory(prefix="bench_data_") as work:
        res = run(
            data / "breakfast",
            Path(work),
            args.runs,
            min(args.baseline_runs, args.runs),
            args.variants,
        )
    section = report(res)
    print()
    print(section)
    if args.write_doc:
        write_doc(section)
        print(f"updated {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
