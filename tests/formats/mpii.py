"""A tiny MPII Cooking annotation CSV (the schema of MPII Cooking 1 and 2).

Four subjects, five videos; rows out of order (background rows last, as in the release),
a gap, a one-frame overlap and a nested row. ``EXPECTED`` holds the per-frame class names
the converter must produce under its stated rules (gaps -> background, the later-starting
row wins on shared frames).
"""

from __future__ import annotations

from pathlib import Path

BG = " Background activity"  # the leading space is in the release
CLASSES = {1: BG, 2: "change temperature", 5: "cut in", 16: "move from X to Y",
           48: "take \\& put in cupboard"}  # fmt: skip

# (subject, video, start, end, category id): 1-based inclusive frames
ROWS = [
    (8, "s08-d02-cam-002", 3, 6, 16),
    (8, "s08-d02-cam-002", 6, 9, 2),  # overlaps the previous row on frame 6
    (8, "s08-d02-cam-002", 12, 20, 5),  # frames 10-11: gap
    (8, "s08-d02-cam-002", 14, 15, 48),  # nested in the previous row
    (8, "s08-d02-cam-002", 1, 2, 1),
    (8, "s08-d04-cam-002", 1, 10, 5),
    (10, "s10-d02-cam-002", 2, 12, 48),
    (11, "s11-d01-cam-002", 1, 5, 1),
    (11, "s11-d01-cam-002", 6, 15, 2),
    (12, "s12-d05-cam-002", 1, 8, 16),
]


def _expected() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for _, video, _, end, _ in ROWS:
        out[video] = ["Background activity"] * max(end, len(out.get(video, [])))
    for _, video, start, end, cid in sorted(ROWS, key=lambda r: r[2]):
        out[video][start - 1 : end] = [CLASSES[cid].strip()] * (end - start + 1)
    return out


EXPECTED = _expected()


def csv_text(rows=ROWS, classes=CLASSES) -> str:
    return "".join(f"{s},{v},{a},{b},{c},{classes[c]}\n" for s, v, a, b, c in rows)


def example(root: Path) -> dict:
    root.mkdir(parents=True, exist_ok=True)
    path = root / "detectionGroundtruth-1-0.csv"
    path.write_text(csv_text())
    return {"csv_path": path}


def cli_args(root: Path) -> list[str]:
    return ["--csv", str(root / "detectionGroundtruth-1-0.csv")]
