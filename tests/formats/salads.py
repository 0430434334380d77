"""A tiny 50 Salads in every layout the converter reads, all describing the same frames.

Four participants x two salads, 40 frames each. Per video, under ``root``:
``groundTruth_fine_derived/rgb-NN-M.txt`` (fine labels, ``null`` = background),
``groundTruth/rgb-NN-M.txt`` + ``mapping.txt`` (mid level), ``activityAnnotations/
NN-M-activityAnnotation.txt`` (microsecond timestamps of a 30 fps clock whose frame 0 is
at ``OFFSET`` frames, plus one high-level label), the matching fitted-clock
``groundTruth_fine_derived/ALIGNMENT_REPORT.json`` and per-frame ``timestamps/``, and MS-TCN
``splits/`` bundles (2 folds by participant).
"""

from __future__ import annotations

import json
from pathlib import Path

FRAMES = 40
FPS = 30.0
OFFSET = 10.0
VIDEOS = [f"rgb-{p:02d}-{m}" for p in (1, 2, 3, 4) for m in (1, 2)]
MID = (
    "cut_tomato", "place_tomato_into_bowl", "cut_cheese", "place_cheese_into_bowl",
    "cut_lettuce", "place_lettuce_into_bowl", "add_salt", "add_vinegar", "add_oil", "add_pepper",
    "mix_dressing", "peel_cucumber", "cut_cucumber", "place_cucumber_into_bowl", "add_dressing",
    "mix_ingredients", "serve_salad_onto_plate", "action_start", "action_end",
)  # fmt: skip

# (first frame, end frame exclusive, fine label); frames no segment covers are background
SEGMENTS = [
    (3, 10, "cut_tomato_prep"),
    (10, 18, "cut_tomato_core"),
    (18, 22, "cut_tomato_post"),
    (25, 31, "add_oil_core"),
    (31, 37, "mix_ingredients_core"),
]


def timestamp(frame: float) -> int:
    """Recording-clock microseconds of a frame index."""
    return round((frame + OFFSET) / FPS * 1e6)


def fine_frames(segments=SEGMENTS, frames: int = FRAMES) -> list[str]:
    out = ["null"] * frames
    for start, end, label in sorted(segments):
        out[start:end] = [label] * (end - start)
    return out


def mid_frames(fine: list[str]) -> list[str]:
    first = next(i for i, x in enumerate(fine) if x != "null")
    return [
        x.rsplit("_", 1)[0] if x != "null" else ("action_start" if i < first else "action_end")
        for i, x in enumerate(fine)
    ]


def raw_lines(segments=SEGMENTS) -> list[str]:
    lines = [f"{timestamp(3)} {timestamp(22)} cut_and_mix_ingredients"]
    lines += [f"{timestamp(s)} {timestamp(e)} {label}" for s, e, label in segments]
    return lines


def write(root: Path, videos=VIDEOS, segments=SEGMENTS) -> Path:
    """Write every layout for ``videos``; returns ``root``."""
    fine = fine_frames(segments)
    for sub in ("groundTruth", "groundTruth_fine_derived", "activityAnnotations", "timestamps",
                "splits"):  # fmt: skip
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / "mapping.txt").write_text("".join(f"{i} {c}\n" for i, c in enumerate(MID)))
    report = {}
    for v in videos:
        key = v.removeprefix("rgb-")
        (root / "groundTruth_fine_derived" / f"{v}.txt").write_text("\n".join(fine) + "\n")
        (root / "groundTruth" / f"{v}.txt").write_text("\n".join(mid_frames(fine)) + "\n")
        # CRLF line ends, as in the release
        (root / "activityAnnotations" / f"{key}-activityAnnotation.txt").write_text(
            "\r\n".join(raw_lines(segments)) + "\r\n"
        )
        (root / "timestamps" / f"timestamps-{key}.txt").write_text(
            "".join(f"{timestamp(f)} {v}-{f:05d}.png\n" for f in range(FRAMES))
        )
        report[key] = {"fps": FPS, "offset_frames": OFFSET, "boundary_med_abs_res": 0.0}
    (root / "groundTruth_fine_derived" / "ALIGNMENT_REPORT.json").write_text(json.dumps(report))
    people = sorted({v.split("-")[1] for v in videos})
    for k, test_people in enumerate((people[: len(people) // 2], people[len(people) // 2 :]), 1):
        test = [v for v in videos if v.split("-")[1] in test_people]
        train = [v for v in videos if v not in test]
        for part, vids in (("train", train), ("test", test)):
            (root / "splits" / f"{part}.split{k}.bundle").write_text(
                "".join(f"{v}.txt\n" for v in vids)
            )
    return root


def example(root: Path) -> dict:
    write(root)
    return {"root": root}


def cli_args(root: Path) -> list[str]:
    return ["--root", str(root)]
