"""``kitchen-study simulate``: simulated frame-classifier softmax for a prepared table.

The paper's LSTM reads a frame CNN's softmax, but the videos (tens of GB) are not here;
the label sequences are. :func:`simulate` draws softmax vectors from a documented model of a
frame classifier (the two models, ``segment`` by default and the optimistic ``ar1``, are
stated in :mod:`data_prep.sim_models`), so the *temporal* model can be studied on real
label structure. Results on simulated features are about the temporal model, not about
vision (see docs/data.md).

Accuracy is argmax frame accuracy over all frames of the table (background included), in
percent, as the rest of the platform reports metrics. The defaults per dataset are the
paper's Table 4 CNN column, looked up in :data:`DEFAULT_ACCURACY` by the card's name.

The command writes the table with the features and records in the card how they were made
and how they err (:func:`record_calibration`); ``--report`` only measures the class scores
a table already has (:mod:`data_prep.calibration`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import typer

from .errors import DataError
from .sim_models import (
    DEFAULT_BOUNDARY_S,
    DEFAULT_CONFUSION,
    DEFAULT_CORRELATION_S,
    DEFAULT_MODEL,
    DEFAULT_SEGMENT_SHARE,
    DEFAULT_VIDEO_SHARE,
    MODELS,
    VERSIONS,
    SimOptions,
    class_similarity,
    simulate_features,
)
from .table import FrameTable, describe, read_table, write_table

__all__ = [
    "DEFAULT_ACCURACY",
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
    boundary_s: float = DEFAULT_BOUNDARY_S,
) -> np.ndarray:
    """Per-frame softmax (frames, classes) float32 of a simulated frame classifier.

    ``accuracy``: target argmax accuracy in percent over all frames (1 < accuracy < 100);
    ``correlation_s``: AR(1) correlation time of the (within-segment) noise in seconds
    (0: i.i.d.); ``confusion``: strength in [0, 1) of the word-similarity leak between
    classes; ``temperature``: divides the logits (lower = peakier softmax; argmax
    unchanged); None (default) gives a confidence-calibrated classifier (``segment``: the
    exact posterior, temperature 1; ``ar1``: the temperature at which the mean top
    probability equals the accuracy). ``model``: one of :data:`MODELS`;
    ``segment_share``/``video_share``: the ``segment`` model's shares of the noise variance
    drawn per segment and per video, ``boundary_s``: how far (seconds) a neighbouring
    segment's template reaches into a segment (the three ignored by ``ar1``).
    Deterministic for ``seed``. Raises ``ValueError`` for parameters outside those ranges.
    """
    options = SimOptions(
        correlation_s, confusion, temperature, model, segment_share, video_share, boundary_s
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
    boundary_s: float = DEFAULT_BOUNDARY_S,
) -> FrameTable:
    """``table`` with its ``features`` replaced by simulated softmax vectors; the card's
    ``features`` description records the model, its parameters and the achieved accuracy.
    ``accuracy=None`` takes the paper's value for the card's name (``KeyError`` if none).
    Parameters as :func:`simulate_softmax`."""
    if accuracy is None:
        accuracy = default_accuracy(table.card.name)
    options = SimOptions(
        correlation_s, confusion, temperature, model, segment_share, video_share, boundary_s
    )
    feats, info = simulate_features(table, accuracy, seed, options)
    return table.with_features(feats, info)


def record_calibration(table: FrameTable, split: str | int | None = 1) -> FrameTable:
    """``table`` with :func:`data_prep.calibration.calibration_report` of its features
    recorded in the card's ``features`` description under ``calibration`` (split ``split``
    for the recalibration; None or a table without splits: no recalibration)."""
    from .calibration import calibration_report

    report = calibration_report(table, split).to_dict()
    description = {**(table.card.features or {}), "calibration": report}
    return table.with_features(table.features, description)


def _report_lines(report: dict[str, Any], target: float | None) -> list[str]:
    from .calibration import BOUNDS

    lines = [
        f"frame accuracy      {report['frame_accuracy']:.2f}%"
        + (f" (paper's CNN: {target}%)" if target is not None else ""),
    ]
    if report["recalibration_gain"] is not None:
        lines.append(
            f"recalibration gain  {report['recalibration_gain']:+.2f} points on "
            f"{report['split']} test ({report['argmax_test_accuracy']:.2f}% argmax -> "
            f"{report['recalibrated_test_accuracy']:.2f}% logistic regression on the "
            f"log-scores, fitted on {report['train_frames_used']:,} training frames; "
            f"bound +{BOUNDS.max_recalibration_gain}, paper +1.65)"
        )
    else:
        lines.append("recalibration gain  - (no split)")
    lines.append(
        f"segment consensus   {report['segment_consensus']:.2f}% of {report['segments']:,} "
        f"segments ({report['consensus_gain']:+.2f} points over frames; bound "
        f"+{BOUNDS.max_consensus_gain}, paper -2.0)"
    )
    return lines


def _echo_report(report: dict[str, Any], target: float | None, skip: int = 0) -> None:
    """Print the report's lines (from the ``skip``-th) and what lies outside the bounds."""
    from .calibration import CalibrationReport

    for line in _report_lines(report, target)[skip:]:
        typer.echo(f"  {line}")
    for p in CalibrationReport(**report).problems(target):
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
        "1", "--split", help="Split whose train/test frames the recalibration uses."
    ),
    model: str = typer.Option(
        DEFAULT_MODEL,
        "--model",
        help="segment: calibrated to the paper's CNN (default); ar1: the optimistic model "
        "(no class prior, errors average out within a segment).",
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
    boundary_s: float = typer.Option(
        DEFAULT_BOUNDARY_S,
        "--boundary-s",
        help="segment model: how far (seconds) evidence of a neighbouring segment's class "
        "reaches into a segment (0: none).",
    ),
    temperature: float | None = typer.Option(
        None,
        "--temperature",
        help="Softmax temperature (lower: peakier; accuracy unchanged). Default: "
        "confidence-calibrated (segment: the posterior; ar1: mean top probability = "
        "accuracy).",
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

            rep = calibration_report(table, split_key).to_dict()
        except (KeyError, ValueError) as e:
            raise DataError(str(e.args[0]), path) from None
        typer.echo(f"{describe(table)}")
        _echo_report(rep, target)
        return
    if out is None:
        raise DataError("--out is required (or --report to only measure the features)", path)
    table = read_table(path, features=False)
    try:
        _check_split(table, split_key)
        result = simulate(
            table, accuracy, seed, correlation_s, confusion, temperature, model,
            segment_share, video_share, boundary_s,
        )
        result = record_calibration(result, split_key)
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
    _echo_report(f["calibration"], f["accuracy_target"], skip=1)
