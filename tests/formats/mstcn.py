"""A tiny dataset in the MS-TCN layout, with features.

Three participants (``S1``..``S3``) x two recipes, from two views; 2 leave-person-out splits;
``features/<video>.npy`` of shape (D, T) with D = 4. Video ids like ``S1_tea_cam_a`` are
read by :data:`PATTERN` (participant, activity and view groups).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

CLASSES = ("background", "take_cup", "pour_water", "stir")
PATTERN = r"^(?P<participant>S\d+)_(?P<activity>[a-z]+)_(?P<view>cam_[ab])$"
DIM = 4
# video -> per-frame labels (run-length: (label, frames))
RUNS = {
    "S1_tea_cam_a": [("background", 3), ("take_cup", 4), ("pour_water", 5), ("background", 2)],
    "S1_coffee_cam_b": [("take_cup", 2), ("stir", 6)],
    "S2_tea_cam_a": [("background", 1), ("pour_water", 7), ("stir", 3)],
    "S2_coffee_cam_a": [("take_cup", 5)],
    "S3_tea_cam_b": [("background", 2), ("take_cup", 2), ("stir", 2), ("background", 3)],
    "S3_coffee_cam_a": [("pour_water", 4), ("stir", 4)],
}
# split K: test participants
TEST = {1: ("S1",), 2: ("S2", "S3")}


def frames(video: str) -> list[str]:
    return [label for label, n in RUNS[video] for _ in range(n)]


def features(video: str) -> np.ndarray:
    """(D, T) features: a fixed function of the video and frame, so tests can check them."""
    t = len(frames(video))
    seed = sorted(RUNS).index(video)
    return (np.arange(DIM * t, dtype=np.float32).reshape(DIM, t) + 100 * seed) / 7


def write(root: Path, with_features: bool = True) -> Path:
    """Write the dataset under ``root``; returns ``root``."""
    (root / "groundTruth").mkdir(parents=True, exist_ok=True)
    (root / "splits").mkdir(exist_ok=True)
    (root / "mapping.txt").write_text("".join(f"{i} {c}\n" for i, c in enumerate(CLASSES)))
    for video in RUNS:
        (root / "groundTruth" / f"{video}.txt").write_text("\n".join(frames(video)) + "\n")
    for k, test_people in TEST.items():
        test = [v for v in sorted(RUNS) if v.split("_")[0] in test_people]
        train = [v for v in sorted(RUNS) if v not in test]
        for part, videos in (("train", train), ("test", test)):
            (root / "splits" / f"{part}.split{k}.bundle").write_text(
                "".join(f"{v}.txt\n" for v in videos)
            )
    if with_features:
        (root / "features").mkdir(exist_ok=True)
        for video in RUNS:
            np.save(root / "features" / f"{video}.npy", features(video))
    return root


def example(root: Path) -> dict:
    write(root)
    return {
        "root": root,
        "name": "tiny_mstcn",
        "fps": 15.0,
        "background": "background",
        "participant_pattern": PATTERN,
    }


def cli_args(root: Path) -> list[str]:
    return [
        "--root", str(root), "--name", "tiny_mstcn", "--fps", "15",
        "--background", "background", "--participant-pattern", PATTERN,
    ]  # fmt: skip
