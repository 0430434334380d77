"""``kitchen-study simulate``: simulated frame-classifier softmax for a prepared table.

The paper's LSTM reads a frame CNN's softmax, but the videos (tens of GB) are not here;
the label sequences are. :func:`simulate` draws softmax vectors from a documented model of a
frame classifier (the models of :data:`data_prep.sim_models.MODELS`: ``confuser`` by
default, the memorisable ``segment`` v1 and the optimistic ``ar1``, stated in
:mod:`data_prep.sim_models` and :mod:`data_prep.sim_confuser`), so the *temporal* model can
be studied on real label structure. Results on simulated features are about the temporal
model, not about vision (see docs/data.md).

Accuracy is argmax frame accuracy over all frames of the table (background included), in
percent, as the rest of the platform reports metrics. The defaults per dataset are the
paper's Table 4 CNN column, looked up in :data:`DEFAULT_ACCURACY` by the card's name.

The command writes the table with the features and records in the card how they were made
and how they err (:func:`record_calibration`, with the memorisation check on fresh draws of
the same model); ``--report`` only measures the class scores a table already has
(:mod:`data_prep.calibration`; the memorisation check when its card names a simulation
this version can redraw).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import typer

from .calibration import MEMORISATION_DRAWS
from .errors import DataError
from .sim_confuser import simulate_confuser
from .sim_models import (
    DEFAULT_AR_SHARE,
    DEFAULT_BOUNDARY_S,
    DEFAULT_CONFUSERS,
    DEFAULT_CONFUSION,
    DEFAULT_CORRELATION_S,
    DEFAULT_MODEL,
    DEFAULT_PRIOR_WEIGHT,
    DEFAULT_SEGMENT_SHARE,
    DEFAULT_VIDEO_SHARE,
    MODELS,
    VERSIONS,
    SimOptions,
    class_similarity,
    resolve_options,
    simulate_ar1,
    simulate_segment,
)
from .table import FrameTable, describe, read_table, write_table

__all__ = [
    "DEFAULT_BOUNDARY_S",
    "DEFAULT_CONFUSION",
    "DEFAULT_MODEL",
    "DEFAULT_SEGMENT_SHARE",
    "DEFAULT_VIDEO_SHARE",
    "MODELS",
    "VERSIONS",
    "class_similarity",
    "command",
    "default_accuracy",
    "record_calibration",
    "redraw",
    "simulate",
    "simulate_softmax",
]

#: Frame CNN accuracy (%) per dataset name: Perrett & Damen, Table 4, CNN column.
#: Looked up by the card's name, exactly or by the longest key that prefixes it (so
#: ``salads_fine`` finds ``salads``). MPII Cooking 1 stands in for MPII Cooking 2 here.
DEFAULT_ACCURACY: dict[str, float] = {
    "breakfast": 20.6,
    "salads": 37.5,
    "50salads": 37.5,
    "50_salads": 37.5,
    "mpii": 36.1,
    "mpii_cooking": 36.1,
    "mpii_cooking2": 36.1,
}



def simulate_features(
    table: FrameTable, accuracy: float, seed: int, options: SimOptions
) -> tuple[np.ndarray, dict[str, Any]]:
    """The softmax array (frames, classes) float32 of ``options.model`` and how it was made
    (the card's ``features`` description). ``ValueError`` for parameters out of range.
    (The dispatch over ``sim_models.MODELS`` lives here, beside the command, so the models'
    modules never import each other back.)"""
    options = resolve_options(options, table.card.name)
    run = {"confuser": simulate_confuser, "segment": simulate_segment,
           "ar1": simulate_ar1}.get(options.model)
    if run is None:
        raise ValueError(
            f"unknown simulation model {options.model!r} (choose from {', '.join(MODELS)})")
    return run(table, accuracy, seed, options)

def default_accuracy(name: str) -> float:
    """The paper's CNN accuracy (%) for a dataset name; ``KeyError`` when unknown."""
    key = name.lower()
    if key in DEFAULT_ACCURACY:
        return DEFAULT_ACCURACY[key]
    prefixes = [k for k in DEFAULT_ACCURACY if key.startswith(k)]
    if prefixes:
        return DEFAULT_ACCURACY[max(prefixes, key=len)]
    known = ", ".join(sorted(DEFAULT_ACCURACY))
    raise KeyError(f"no default accuracy for dataset {name!r} (known: {known}); pass --accuracy")


def simulate_softmax(
    table: FrameTable,
    accuracy: float,
    seed: int,
    correlation_s: float = DEFAULT_CORRELATION_S,
    confusion: float = DEFAULT_CONFUSION,
    temperature: float | None = None,
    model: str = DEFAULT_MODEL,
    segment_share: float = DEFAULT_SEGMENT_SHARE,
    video_share: float = DEFAULT_VIDEO_SHARE,
    boundary_s: float | None = None,
    confusers: int = DEFAULT_CONFUSERS,
    confuser_weight: float | None = None,
    prior_weight: float = DEFAULT_PRIOR_WEIGHT,
    ar_share: float = DEFAULT_AR_SHARE,
) -> np.ndarray:
    """Per-frame softmax (frames, classes) float32 of a simulated frame classifier.

    ``accuracy``: target argmax accuracy in percent over all frames (1 < accuracy < 100);
    ``correlation_s``: AR(1) correlation time of the (within-segment) noise in seconds
    (0: i.i.d.); ``confusion``: strength in [0, 1) of the word-similarity leak between
    classes (``segment``, ``ar1``); ``temperature``: divides the logits (lower = peakier
    softmax; argmax unchanged); None (default) gives a confidence-calibrated classifier
    (``confuser``: mean top probability = accuracy on the training frames; ``segment``: the
    exact posterior, temperature 1; ``ar1``: mean top probability = accuracy). ``model``:
    one of :data:`MODELS`; ``segment_share``/``video_share``: the ``segment`` model's shares
    of the noise variance drawn per segment and per video; ``boundary_s``: how far
    (seconds) a neighbouring segment's class reaches into a segment (``segment``,
    ``confuser``; None: the model's default, for ``confuser`` the dataset's);
    ``confusers``, ``confuser_weight`` (None: the dataset's), ``prior_weight``,
    ``ar_share``: the ``confuser`` model's (:mod:`data_prep.sim_confuser`).
    Deterministic for ``seed``. Raises ``ValueError`` for parameters outside those ranges.
    """
    options = SimOptions(
        correlation_s, confusion, temperature, model, segment_share, video_share, boundary_s,
        confusers, confuser_weight, prior_weight, ar_share,
    )
    return simulate_features(table, accuracy, seed, options)[0]


def simulate(
    table: FrameTable,
    accuracy: float | None = None,
    seed: int = 0,
    correlation_s: float = DEFAULT_CORRELATION_S,
    confusion: float = DEFAULT_CONFUSION,
    temperature: float | None = None,
    model: str = DEFAULT_MODEL,
    segment_share: float = DEFAULT_SEGMENT_SHARE,
    video_share: float = DEFAULT_VIDEO_SHARE,
    boundary_s: float | None = None,
    confusers: int = DEFAULT_CONFUSERS,
    confuser_weight: float | None = None,
    prior_weight: float = DEFAULT_PRIOR_WEIGHT,
    ar_share: float = DEFAULT_AR_SHARE,
) -> FrameTable:
    """``table`` with its ``features`` replaced by simulated softmax vectors; the card's
    ``features`` description records the model, its parameters and the achieved accuracy.
    ``accuracy=None`` takes the paper's value for the card's name (``KeyError`` if none).
    Parameters as :func:`simulate_softmax`."""
    if accuracy is None:
        accuracy = default_accuracy(table.card.name)
    options = SimOptions(
        correlation_s, confusion, temperature, model, segment_share, video_share, boundary_s,
        confusers, confuser_weight, prior_weight, ar_share,
    )
    feats, info = simulate_features(table, accuracy, seed, options)
    return table.with_features(feats, info)


def options_from_card(features: dict[str, Any]) -> SimOptions | None:
    """The :class:`SimOptions` a card's ``features`` description was simulated with, or
    None when it is not a simulation this version makes the same way (another version, an
    unknown model, a real CNN's scores)."""
    model = features.get("model")
    if features.get("kind") != "simulated" or model not in MODELS:
        return None
    if str(features.get("version")) != VERSIONS[model]:
        return None
    d = SimOptions()
    temperature = None if features.get("temperature_fitted", True) else features["temperature"]
    return SimOptions(
        correlation_s=features.get("correlation_s", d.correlation_s),
        confusion=features.get("confusion", d.confusion),
        temperature=temperature,
        model=model,
        segment_share=features.get("segment_share", d.segment_share),
        video_share=features.get("video_share", d.video_share),
        boundary_s=features.get("boundary_s", d.boundary_s),
        confusers=features.get("confusers", d.confusers),
        confuser_weight=features.get("confuser_weight", d.confuser_weight),
        prior_weight=features.get("prior_weight", d.prior_weight),
        ar_share=features.get("ar_share", d.ar_share),
    )


def fresh_seed(seed: int, draw: int) -> int:
    """The seed of fresh draw ``draw`` (1, 2, ...) of a simulation made with ``seed``."""
    return int(np.random.SeedSequence([seed, 16, draw]).generate_state(1)[0])


def redraw(table: FrameTable) -> Callable[[int], np.ndarray] | None:
    """``draw(i)``: the features of fresh draw ``i`` of the simulation ``table``'s card
    describes (same model, parameters and accuracy, seed :func:`fresh_seed`), or None when
    the card describes no simulation this version can redraw."""
    f = table.card.features or {}
    options = options_from_card(f)
    if options is None:
        return None
    accuracy, seed = float(f["accuracy_target"]), int(f["seed"])

    def draw(i: int) -> np.ndarray:
        return simulate_features(table, accuracy, fresh_seed(seed, i), options)[0]

    return draw


def record_calibration(
    table: FrameTable, split: str | int | None = 1, draws: int = MEMORISATION_DRAWS
) -> FrameTable:
    """``table`` with :func:`data_prep.calibration.calibration_report` of its features
    recorded in the card's ``features`` description under ``calibration`` (split ``split``
    for the recalibration and the memorisation check, the latter on ``draws`` fresh draws
    when the card describes a simulation; None or a table without splits: neither)."""
    from .calibration import calibration_report

    draw = redraw(table) if draws > 0 else None
    report = calibration_report(table, split, draw=draw, draws=max(draws, 1)).to_dict()
    description = {**(table.card.features or {}), "calibration": report}
    return table.with_features(table.features, description)


def _report_lines(report: dict[str, Any], target: float | None, name: str) -> list[str]:
    from .calibration import bounds_for

    b = bounds_for(name)
    lines = [
        f"frame accuracy      {report['frame_accuracy']:.2f}%"
        + (f" (paper's CNN: {target}%)" if target is not None else ""),
    ]
    if report["recalibration_gain"] is not None:
        lines.append(
            f"recalibration gain  {report['recalibration_gain']:+.2f} points on "
            f"{report['split']} test ({report['argmax_test_accuracy']:.2f}% argmax -> "
            f"{report['recalibrated_test_accuracy']:.2f}% logistic regression on the "
            f"log-scores, fitted on {report['train_frames_used']:,} training frames, C = "
            f"{report['regularisation_c']:g} by grouped cross-validation; bounds "
            f"[{b.recalibration[0]:+}, {b.recalibration[1]:+}], paper +1.65 on Breakfast)"
        )
    else:
        lines.append("recalibration gain  - (no split)")
    lines.append(
        f"segment consensus   {report['segment_consensus']:.2f}% of {report['segments']:,} "
        f"segments, 25 frames each ({report['consensus_gain']:+.2f} points over frames; "
        f"bounds [{b.consensus[0]:+}, {b.consensus[1]:+}], paper -2.0 on Breakfast)"
    )
    if report.get("draws_gap") is not None:
        lines.append(
            f"memorisation        fitted on {report['memorisation_draws']} fresh draws "
            f"{report['draws_gap']:+.2f} points on held-out videos (limit +-"
            f"{b.max_draws_gap}); own frames - held-out {report['own_gap']:+.2f} (limit "
            f"{b.max_own_gap}"
            + ("" if report.get("argmax_own_gap") is None else
               f"; the argmax alone {report['argmax_own_gap']:+.2f}")
            + ")"
        )
    else:
        lines.append("memorisation        - (not measured: --draws 0, a table without splits, or "
                     "features this version cannot redraw)")
    return lines


def _echo_report(report: dict[str, Any], target: float | None, name: str, skip: int = 0) -> None:
    """Print the report's lines (from the ``skip``-th) and what lies outside the bounds."""
    from .calibration import CalibrationReport, bounds_for

    for line in _report_lines(report, target, name)[skip:]:
        typer.echo(f"  {line}")
    for p in CalibrationReport.from_dict(report).problems(target, bounds_for(name)):
        typer.echo(f"  outside the bounds: {p}")


def _check_split(table: FrameTable, split: str | int) -> None:
    """``KeyError`` if the table has splits but not ``split`` (a table without splits is
    measured without the recalibration)."""
    if table.card.splits:
        table.card.split(split)


def command(
    path: Path = typer.Argument(..., help="A prepared frame table (.parquet)."),
    out: Path | None = typer.Option(
        None, "--out", help="Where to write the table with features (required unless --report)."
    ),
    report: bool = typer.Option(
        False,
        "--report",
        help="Only measure the class-score features PATH already has (e.g. a real CNN's "
        "export): frame accuracy, per-frame recalibration gain, segment consensus. Writes "
        "nothing.",
    ),
    split: str = typer.Option(
        "1",
        "--split",
        help="Split whose train/test frames the recalibration and memorisation check use.",
    ),
    draws: int = typer.Option(
        MEMORISATION_DRAWS,
        "--draws",
        help="Fresh draws the memorisation check fits on (0: skip the check).",
    ),
    model: str = typer.Option(
        DEFAULT_MODEL,
        "--model",
        help="confuser: calibrated two-sided to the paper's CNN (default); segment: v1, "
        "memorisable (kept for comparison); ar1: the optimistic model (no class prior, "
        "errors average out within a segment).",
    ),
    accuracy: float | None = typer.Option(
        None,
        "--accuracy",
        help="Target frame accuracy in percent (e.g. 20.6). Default: the paper's CNN "
        "accuracy for the dataset (Table 4: breakfast 20.6, salads 37.5, mpii 36.1).",
    ),
    seed: int = typer.Option(0, "--seed", help="Random seed (same seed, same features)."),
    correlation_s: float = typer.Option(
        DEFAULT_CORRELATION_S,
        "--correlation-s",
        help="Correlation time of the (within-segment) errors in seconds (0: i.i.d.).",
    ),
    confusion: float = typer.Option(
        DEFAULT_CONFUSION,
        "--confusion",
        help="How strongly classes sharing words are confused, in [0, 1).",
    ),
    segment_share: float = typer.Option(
        DEFAULT_SEGMENT_SHARE,
        "--segment-share",
        help="segment model: share of the noise variance drawn once per true segment.",
    ),
    video_share: float = typer.Option(
        DEFAULT_VIDEO_SHARE,
        "--video-share",
        help="segment model: share of the noise variance drawn once per video.",
    ),
    boundary_s: float | None = typer.Option(
        None,
        "--boundary-s",
        help="segment and confuser models: how far (seconds) evidence of a neighbouring "
        f"segment's class reaches into a segment (0: none). Default: segment {DEFAULT_BOUNDARY_S}; "
        "confuser the dataset's calibrated value (docs/data.md).",
    ),
    confusers: int = typer.Option(
        DEFAULT_CONFUSERS, "--confusers",
        help="confuser model: confuser classes per class (most often adjacent in training).",
    ),
    confuser_weight: float | None = typer.Option(
        None, "--confuser-weight",
        help="confuser model: share of a frame's mean evidence on its segment's confuser, "
        "in [0, 0.5). Default: the dataset's calibrated value.",
    ),
    prior_weight: float = typer.Option(
        DEFAULT_PRIOR_WEIGHT, "--prior-weight",
        help="confuser model: weight of the training-frame class prior (1: a Bayes "
        "classifier's).",
    ),
    ar_share: float = typer.Option(
        DEFAULT_AR_SHARE, "--ar-share",
        help="confuser model: share of the noise that is AR(1) (the rest is i.i.d.).",
    ),
    temperature: float | None = typer.Option(
        None,
        "--temperature",
        help="Softmax temperature (lower: peakier; accuracy unchanged). Default: "
        "confidence-calibrated (confuser, ar1: mean top probability = accuracy; segment: "
        "the posterior).",
    ),
) -> None:
    """Add simulated frame-classifier softmax features to a prepared dataset (and measure
    how they err), or with --report measure the features a table already has."""
    split_key: str | int = int(split) if split.isdigit() else split
    if report:
        table = read_table(path)
        try:
            target = default_accuracy(table.card.name)
        except KeyError:
            target = None
        try:
            _check_split(table, split_key)
            from .calibration import calibration_report

            draw = redraw(table) if draws > 0 else None
            rep = calibration_report(table, split_key, draw=draw, draws=max(draws, 1)).to_dict()
        except (KeyError, ValueError) as e:
            raise DataError(str(e.args[0]), path) from None
        typer.echo(f"{describe(table)}")
        _echo_report(rep, target, table.card.name)
        return
    if out is None:
        raise DataError("--out is required (or --report to only measure the features)", path)
    table = read_table(path, features=False)
    try:
        _check_split(table, split_key)
        result = simulate(
            table, accuracy, seed, correlation_s, confusion, temperature, model,
            segment_share, video_share, boundary_s, confusers, confuser_weight, prior_weight,
            ar_share,
        )
        result = record_calibration(result, split_key, draws)
    except KeyError as e:
        raise DataError(str(e.args[0]), path) from None
    except ValueError as e:
        raise DataError(str(e), path) from None
    write_table(result, out)
    f = result.card.features or {}
    typer.echo(
        f"{describe(result, out)}; simulated accuracy {f['accuracy_achieved']:.2f}% "
        f"(target {f['accuracy_target']}%, model {model}, seed {seed})"
    )
    # the frame accuracy is in the line above: the rest of the report
    _echo_report(f["calibration"], f["accuracy_target"], result.card.name, skip=1)
