"""Synthetic kitchens: a tiny procedural generator of related frame-labelled datasets.

For the demo and fast tests: a few "kitchens" (datasets) whose action vocabularies overlap,
like Breakfast, 50 Salads and MPII Cooking do, so cross-dataset transfer has something to
transfer. Each kitchen is made from its row of :data:`KITCHENS`:

* **Vocabulary**: the background class ``background`` at index 0, then, sorted, the
  :data:`SHARED_ACTIONS` every kitchen has (``take_bowl``, ``pour_milk``, ...) and the
  kitchen's own actions (some of which also appear in one other kitchen, e.g. ``add_salt``).
* **Recipes** (the ``activity`` column): one per dish of the kitchen, each a partially
  ordered action list: 6-10 actions drawn from the vocabulary, cut into stages of one
  action or (with probability 0.35) two; stages happen in order, the actions inside a
  stage in random order, and each action is skipped with probability 0.1.
* **Durations**: each action has a mean duration (3-8 s) per kitchen; an occurrence lasts
  a Gamma(shape 8) draw around it times the participant's speed (0.8-1.25). Background
  fills 1-2 s at both ends and, with probability 0.3, 0.3-1.5 s between actions.
  At 15 fps a video is roughly 300-1500 frames.
* **Participants**: ``participants`` people per kitchen (``P01``...), videos dealt to them
  in turn, so :func:`data_prep.splits.person_folds` gives 4 leave-person-out splits.
* **Features**: :func:`data_prep.simulate.simulate_softmax`'s ``ar1`` model (the
  optimistic one, on purpose) at the kitchen's accuracy (default 30-40 %) with 0.5 s
  error correlation.

The structure is deliberately easy to learn (few recipes, strong order, steady durations):
a temporal model over the simulated softmax should beat the input accuracy within a few
hundred iterations, which is what the demo needs. Everything is deterministic for a seed,
and kitchen ``k`` depends only on ``(seed, k)``: asking for fewer kitchens gives the same
first ones.

    kitchen-study synth --out data/synth --seed 0

The command writes every kitchen's file or none (:func:`data_prep.table.write_tables`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import typer

from .commands import usage_errors
from .layout import converter_version
from .simulate import DEFAULT_CONFUSION, simulate
from .splits import person_folds
from .table import DatasetCard, FrameTable, VideoLabels, describe, write_tables

__all__ = [
    "BACKGROUND",
    "KITCHENS",
    "NAME",
    "SHARED_ACTIONS",
    "VERSION",
    "Kitchen",
    "command",
    "make_kitchen",
    "make_kitchens",
]

NAME = "synth"
VERSION = "1"
BACKGROUND = "background"

#: Actions every synthetic kitchen has: what transfer between kitchens can share.
SHARED_ACTIONS: tuple[str, ...] = (
    "pour_milk",
    "pour_water",
    "stir_bowl",
    "take_bowl",
    "take_cup",
    "take_knife",
)


@dataclass(frozen=True)
class Kitchen:
    """One synthetic dataset's recipe for being generated."""

    name: str
    actions: tuple[str, ...]  # its own actions, besides SHARED_ACTIONS
    dishes: tuple[str, ...]  # activity names; one recipe each
    accuracy: float  # simulated frame-classifier accuracy, percent


KITCHENS: tuple[Kitchen, ...] = (
    Kitchen(
        "synth_breakfast",
        ("pour_cereals", "pour_coffee", "spoon_sugar", "crack_egg", "fry_egg", "butter_toast",
         "take_plate", "stir_coffee", "pour_juice", "add_salt"),
        ("cereals", "coffee", "fried_egg"),
        30.0,
    ),
    Kitchen(
        "synth_salads",
        ("cut_tomato", "cut_cucumber", "cut_lettuce", "peel_cucumber", "add_oil", "add_vinegar",
         "mix_dressing", "mix_salad", "serve_salad", "add_salt"),
        ("mixed_salad", "tomato_salad", "cucumber_salad"),
        40.0,
    ),
    Kitchen(
        "synth_cooking",
        ("cut_onion", "fry_onion", "boil_water", "stir_pot", "take_pot", "open_fridge",
         "cut_carrot", "wash_carrot", "pour_oil", "take_plate"),
        ("soup", "stir_fry", "pasta"),
        35.0,
    ),
)

_FPS = 15.0
_PAIR_P = 0.35  # chance that a stage holds two actions (in either order) rather than one
_SKIP_P = 0.1
_GAP_P = 0.3
_DURATION_SHAPE = 8.0  # Gamma shape: coefficient of variation 1/sqrt(8) ~ 0.35


def _recipes(rng: np.random.Generator, vocab: list[str], dishes: int) -> list[list[list[int]]]:
    """Per dish, its stages (lists of action indices into ``vocab``, 1-based classes)."""
    out = []
    for _ in range(dishes):
        n = int(rng.integers(6, 11))
        actions = (rng.choice(len(vocab), size=n, replace=False) + 1).tolist()
        stages: list[list[int]] = []
        i = 0
        while i < n:
            size = 2 if rng.random() < _PAIR_P else 1
            stages.append(actions[i : i + size])
            i += size
        out.append(stages)
    return out


def _video_labels(
    rng: np.random.Generator,
    stages: list[list[int]],
    mean_s: np.ndarray,
    speed: float,
    fps: float,
) -> np.ndarray:
    """One video's frame labels: background, the recipe's actions, background."""
    segments: list[tuple[int, float]] = [(0, rng.uniform(1.0, 2.0))]
    for stage in stages:
        for a in rng.permutation(stage).tolist():
            if rng.random() < _SKIP_P:
                continue
            if rng.random() < _GAP_P:
                segments.append((0, rng.uniform(0.3, 1.5)))
            seconds = rng.gamma(_DURATION_SHAPE, mean_s[a] / _DURATION_SHAPE) * speed
            segments.append((a, seconds))
    segments.append((0, rng.uniform(1.0, 2.0)))
    labels = np.array([s[0] for s in segments], dtype=np.int16)
    frames = np.maximum(1, np.round(np.array([s[1] for s in segments]) * fps)).astype(np.int64)
    return np.repeat(labels, frames)


def make_kitchen(
    k: int,
    seed: int = 0,
    videos: int = 40,
    participants: int = 8,
    accuracy: float | None = None,
    correlation_s: float = 0.5,
    confusion: float = DEFAULT_CONFUSION,
    fps: float = _FPS,
) -> FrameTable:
    """Kitchen ``k`` (index into :data:`KITCHENS`) with simulated softmax features.

    ``accuracy=None`` uses the kitchen's own value. Deterministic for ``(seed, k)``.
    """
    if not 0 <= k < len(KITCHENS):
        raise ValueError(f"kitchen index {k} out of range 0..{len(KITCHENS) - 1}")
    if participants < 4:
        raise ValueError(f"{participants} participants cannot make 4 leave-person-out folds")
    if videos < participants:
        raise ValueError(f"{videos} videos cannot cover {participants} participants")
    spec = KITCHENS[k]
    rng = np.random.default_rng([seed, k])
    vocab = sorted(set(SHARED_ACTIONS) | set(spec.actions))
    classes = (BACKGROUND, *vocab)
    mean_s = np.concatenate([[0.0], rng.uniform(3.0, 8.0, size=len(vocab))])
    recipes = _recipes(rng, vocab, len(spec.dishes))
    people = [f"P{p + 1:02d}" for p in range(participants)]
    speed = rng.uniform(0.8, 1.25, size=participants)

    made = []
    for i in range(videos):
        p = i % participants
        d = int(rng.integers(len(spec.dishes)))
        labels = _video_labels(rng, recipes[d], mean_s, float(speed[p]), fps)
        made.append(VideoLabels(f"{people[p]}_{spec.dishes[d]}_{i:03d}", labels, people[p],
                                activity=spec.dishes[d], view="synth"))

    params = {"generator": VERSION, "kitchen": spec.name, "seed": seed, "videos": videos,
              "participants": participants, "fps": fps}
    card = DatasetCard(
        name=spec.name,
        fps=fps,
        classes=classes,
        background=BACKGROUND,
        source_format=NAME,
        converter_version=converter_version(NAME, VERSION),
        input_hash=hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest(),
    )
    splits = person_folds([v.video for v in made], [v.participant for v in made], folds=4)
    table = FrameTable.from_videos(card.replace(splits=splits), made)
    feature_seed = int(np.random.SeedSequence([seed, k, 1]).generate_state(1)[0])
    return simulate(
        table,
        spec.accuracy if accuracy is None else accuracy,
        feature_seed,
        correlation_s=correlation_s,
        confusion=confusion,
        # the fast-learning toy the demo and tests need: the optimistic model on purpose
        model="ar1",
    )


def make_kitchens(
    seed: int = 0,
    kitchens: int = 3,
    videos: int = 40,
    participants: int = 8,
    accuracy: float | None = None,
    correlation_s: float = 0.5,
    confusion: float = DEFAULT_CONFUSION,
) -> dict[str, FrameTable]:
    """The first ``kitchens`` synthetic datasets by name (see the module docstring)."""
    if not 1 <= kitchens <= len(KITCHENS):
        raise ValueError(f"kitchens must be 1..{len(KITCHENS)}, got {kitchens}")
    out = {}
    for k in range(kitchens):
        t = make_kitchen(k, seed, videos, participants, accuracy, correlation_s, confusion)
        out[t.card.name] = t
    return out


def command(
    out: Path = typer.Option(..., "--out", help="Directory for <name>.parquet per kitchen."),
    seed: int = typer.Option(0, "--seed", help="Random seed (same seed, same datasets)."),
    videos: int = typer.Option(40, "--videos", help="Videos per kitchen."),
    kitchens: int = typer.Option(3, "--kitchens", help=f"How many kitchens (1..{len(KITCHENS)})."),
    participants: int = typer.Option(8, "--participants", help="People per kitchen (>= 4)."),
    accuracy: float | None = typer.Option(
        None, "--accuracy", help="Simulated frame accuracy in percent (default: per kitchen)."
    ),
    correlation_s: float = typer.Option(
        0.5, "--correlation-s", help="Correlation time of simulated errors in seconds."
    ),
) -> None:
    """Generate small related synthetic kitchen datasets with simulated features."""
    with usage_errors():
        tables = make_kitchens(seed, kitchens, videos, participants, accuracy, correlation_s)
    # all files or none: a full disk half-way leaves no mix of new and old kitchens
    paths = write_tables({Path(out) / f"{name}.parquet": t for name, t in tables.items()})
    for path, table in zip(paths, tables.values(), strict=True):
        acc = (table.card.features or {}).get("accuracy_achieved")
        typer.echo(f"{describe(table, path)}; simulated accuracy {acc:.1f}%")
