"""A tiny Breakfast in both input formats, describing the same frames.

One participant from each standard test group (P03, P16, P29, P42), two cameras each
(``cam01`` and ``webcam01``: the exact-match case), two activities. ``write_raw`` writes
raw coarse files (``segmentation_coarse/<activity>/<video>.txt``, lines ``start-end label``,
1-based inclusive); ``write_mstcn`` the MS-TCN layout of the same labels.
"""

from __future__ import annotations

from pathlib import Path

PARTICIPANTS = ("P03", "P16", "P29", "P42")
CAMERAS = ("cam01", "webcam01")
CLASSES = ("SIL", "take_bowl", "pour_cereals", "pour_milk", "pour_water")
# activity -> segments (label, frames); a camera offsets nothing (same labels per view)
SEGMENTS = {
    "cereals": [("SIL", 3), ("take_bowl", 4), ("pour_cereals", 5), ("pour_milk", 2), ("SIL", 2)],
    "tea": [("SIL", 2), ("pour_water", 6), ("SIL", 1)],
}
VIDEOS = sorted(f"{p}_{c}_{p}_{a}" for p in PARTICIPANTS for c in CAMERAS for a in SEGMENTS)


def activity(video: str) -> str:
    return video.rsplit("_", 1)[1]


def frames(video: str) -> list[str]:
    return [label for label, n in SEGMENTS[activity(video)] for _ in range(n)]


def coarse_lines(video: str) -> list[str]:
    lines, start = [], 1
    for label, n in SEGMENTS[activity(video)]:
        lines.append(f"{start}-{start + n - 1} {label}")
        start += n
    return lines


def write_raw(root: Path, mapping: bool = True) -> Path:
    for video in VIDEOS:
        folder = root / "segmentation_coarse" / activity(video)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{video}.txt").write_text("\n".join(coarse_lines(video)) + "\n")
    if mapping:
        (root / "mapping.txt").write_text("".join(f"{i} {c}\n" for i, c in enumerate(CLASSES)))
    return root


def write_mstcn(root: Path) -> Path:
    (root / "groundTruth").mkdir(parents=True, exist_ok=True)
    (root / "splits").mkdir(exist_ok=True)
    (root / "mapping.txt").write_text("".join(f"{i} {c}\n" for i, c in enumerate(CLASSES)))
    for video in VIDEOS:
        (root / "groundTruth" / f"{video}.txt").write_text("\n".join(frames(video)) + "\n")
    for k, person in enumerate(PARTICIPANTS, start=1):
        test = [v for v in VIDEOS if v.startswith(person)]
        train = [v for v in VIDEOS if v not in test]
        for part, videos in (("train", train), ("test", test)):
            (root / "splits" / f"{part}.split{k}.bundle").write_text(
                "".join(f"{v}.txt\n" for v in videos)
            )
    return root


def example(root: Path) -> dict:
    write_raw(root)
    return {"root": root, "cameras": "all"}


def cli_args(root: Path) -> list[str]:
    return ["--root", str(root), "--cameras", "all"]
