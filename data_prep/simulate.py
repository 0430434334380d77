"""A simulated frame classifier: per-frame softmax vectors from real label sequences.

The paper's LSTM reads a frame CNN's softmax, but the videos (tens of GB) are not here;
the label sequences are. This module draws softmax vectors from a documented model of a
frame classifier, so the *temporal* model can be studied on real label structure. Results
on simulated features are about the temporal model, not about vision (see docs/data.md).

The model, for frame ``t`` of class ``y_t`` in a dataset of ``C`` classes::

    logits_t = margin * T[y_t] + n_t            softmax_t = softmax(logits_t / temperature)
    T[y]     = e_y + confusion * S[y]           (class template: evidence leaks to similar classes)
    n_t      = rho * n_{t-1} + sqrt(1 - rho^2) * eps_t,   eps_t ~ N(0, I_C),  n_0 = eps_0
    rho      = exp(-1 / (correlation_s * fps))  (AR(1) per class, reset at every video start)

* **Errors correlated in time**: the logit noise is an AR(1) process with a correlation
  time in seconds (converted to frames with the card's fps), so a wrong class that wins on
  one frame tends to keep winning for about ``correlation_s`` seconds, as a CNN's
  confusions persist over similar-looking consecutive frames. ``correlation_s=0`` gives
  i.i.d. noise.
* **Structured confusions**: ``S`` is a class-similarity matrix, the overlap of the
  lower-cased word sets of two class names (shared words / words of the shorter name:
  ``pour_milk``/``pour_coffee`` share ``pour``: 1/2), zero on the diagonal and for the
  background class. It enters the *mean* logits,
  not the noise: correlated noise between two classes would make them *less* likely to
  swap (their difference varies less), whereas a frame of ``pour_milk`` that also gives
  evidence for ``pour_coffee`` narrows exactly that margin, by ``margin*confusion*S``.
* **Calibrated accuracy, exactly**: for fixed noise, frame ``t`` is classified correctly
  iff ``margin > max_{j != y} (n_tj - n_ty) / (1 - confusion * S[y, j])`` (the right-hand
  side is the frame's *threshold margin*; ``0 <= confusion < 1`` keeps the denominator
  positive, so correctness is monotone in ``margin``). The argmax accuracy as a function
  of ``margin`` is therefore the empirical CDF of the thresholds, and the margin that
  reaches the target accuracy is their quantile: one pass over the whole dataset, no
  bisection, achieved accuracy equal to the target to within one frame.
* **Confidence**: by default the temperature is chosen so that the mean top softmax
  probability equals the accuracy (a confidence-calibrated classifier; bisection on a
  sample of frames). A fixed ``temperature`` can be given instead; it never changes the
  argmax.
* **Deterministic**: one numpy ``Generator`` seeded with ``seed``, drawn in a fixed order.

Accuracy is argmax frame accuracy over all frames of the table (background included), in
percent, as the rest of the platform reports metrics. The defaults per dataset are the
paper's Table 4 CNN column, looked up in :data:`DEFAULT_ACCURACY` by the card's name.

Everything is vectorised numpy/scipy over chunks of whole videos (the AR(1) filter runs
with ``scipy.signal.lfilter`` over each chunk, with resets at video starts applied in
closed form); there is no Python loop over frames.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import typer

from .errors import DataError
from .table import FrameTable, describe, read_table, write_table

__all__ = [
    "DEFAULT_ACCURACY",
    "DEFAULT_CONFUSION",
    "VERSION",
    "class_similarity",
    "command",
    "default_accuracy",
    "simulate",
    "simulate_softmax",
]

#: Version of the simulation model; recorded in the card (bump when the output changes).
VERSION = "1"

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

#: Default strength of the word-similarity leak: at 0.7 a Breakfast frame's errors go to
#: word-sharing classes 2.5-3x as often per class as to the others (0 switches it off).
DEFAULT_CONFUSION = 0.7

#: Frames per chunk: bounds the temporaries (chunk x classes float32) while keeping numpy
#: calls large. Chunks are whole videos, so the result does not depend on this value.
_CHUNK_FRAMES = 1 << 18

#: Frames sampled to fit the confidence-calibrating temperature.
_CALIBRATION_FRAMES = 1 << 14

_WORD = re.compile(r"[A-Za-z0-9]+")


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


def class_similarity(
    classes: tuple[str, ...] | list[str], background: str | None = None
) -> np.ndarray:
    """(C, C) overlap of the classes' lower-cased word sets: shared words over the words of
    the shorter name (split on anything not a letter or digit, so ``pour_milk``,
    ``pour milk`` and ``Pour-Milk`` are the same words; ``pour_milk``/``pour_coffee``: 1/2).
    Zero on the diagonal and in the background class's row and column: background frames
    are not "similar" to any action by name."""
    words = [set(_WORD.findall(c.lower())) for c in classes]
    n = len(classes)
    sim = np.zeros((n, n), dtype=np.float64)
    for i in range(n):  # C^2 set operations, C <= a few hundred: negligible
        for j in range(i + 1, n):
            shorter = min(len(words[i]), len(words[j]))
            if shorter:
                sim[i, j] = sim[j, i] = len(words[i] & words[j]) / shorter
    if background is not None and background in classes:
        b = list(classes).index(background)
        sim[b, :] = 0.0
        sim[:, b] = 0.0
    return sim


def _chunks(offsets: np.ndarray, target: int = _CHUNK_FRAMES) -> list[tuple[int, int]]:
    """Video index ranges [a, b) of about ``target`` frames each (at least one video)."""
    out: list[tuple[int, int]] = []
    a = 0
    nv = len(offsets) - 1
    while a < nv:
        b = int(np.searchsorted(offsets, offsets[a] + target, side="right")) - 1
        b = min(max(b, a + 1), nv)
        out.append((a, b))
        a = b
    return out


def _ar1_noise(
    rng: np.random.Generator, offsets: np.ndarray, classes: int, rho: float
) -> np.ndarray:
    """Unit-variance AR(1) noise (frames, classes) float32 for the videos of ``offsets``
    (relative to the chunk), restarted from the stationary distribution at each video.

    One ``lfilter`` over the chunk, then the reset: the filter is linear, so the value
    with a reset at video start ``s`` is the unreset value minus ``rho^(t-s+1) * y[s-1]``.
    """
    n = int(offsets[-1])
    eps = rng.standard_normal((classes, n), dtype=np.float32)
    if rho == 0.0:
        return np.ascontiguousarray(eps.T)
    c = np.float32(np.sqrt(1.0 - rho * rho))
    starts = offsets[:-1]
    eps[:, starts] /= c  # so a video's first value is eps itself: stationary variance 1
    from scipy.signal import lfilter  # here, not at import: scipy.signal costs seconds of CLI start

    # (classes, frames) layout: lfilter runs along contiguous rows, ~2x faster than axis=0
    y = lfilter(np.array([c], np.float32), np.array([1.0, -rho], np.float32), eps, axis=1)
    if len(starts) > 1:
        lengths = np.diff(offsets)
        prev = np.zeros((classes, len(starts)), dtype=np.float32)
        prev[:, 1:] = y[:, starts[1:] - 1]  # unreset value just before each video
        since = np.arange(n) - np.repeat(starts, lengths) + 1  # t - s + 1
        decay = np.power(np.float32(rho), since, dtype=np.float32)
        vid = np.repeat(np.arange(len(starts)), lengths)
        live = decay > 1e-12  # beyond this the previous video's influence is below float32
        y[:, live] -= prev[:, vid[live]] * decay[live]
    return np.ascontiguousarray(y.T)


def _softmax_rows(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


def _confidence_temperature(
    noise: np.ndarray, labels: np.ndarray, template: np.ndarray, margin: float, accuracy: float
) -> float:
    """The temperature at which the mean top softmax probability equals the accuracy (a
    confidence-calibrated classifier), by bisection on log T over an evenly spaced sample
    of at most ``_CALIBRATION_FRAMES`` frames. The top probability of every frame grows as
    T falls (from 1/C to 1), so the mean is monotone and the root unique."""
    step = max(1, len(labels) // _CALIBRATION_FRAMES)
    idx = np.arange(0, len(labels), step)
    logits = noise[idx] + np.float32(margin) * template[labels[idx]]
    lo, hi = np.log(1e-2), np.log(1e2)
    for _ in range(24):  # T to 1e-6 relative: far below the sample's own noise
        mid = (lo + hi) / 2.0
        top = float(_softmax_rows(logits / np.float32(np.exp(mid))).max(axis=1).mean())
        if top > accuracy:
            lo = mid  # too confident: raise the temperature
        else:
            hi = mid
    return float(np.exp((lo + hi) / 2.0))


def _check_params(
    accuracy: float, correlation_s: float, confusion: float, temperature: float | None
) -> None:
    if not 1.0 < accuracy < 100.0:
        raise ValueError(
            f"accuracy is a percentage strictly between 1 and 100 (e.g. 20.6), got {accuracy}"
        )
    if not correlation_s >= 0.0:
        raise ValueError(f"correlation_s must be >= 0 seconds, got {correlation_s}")
    if not 0.0 <= confusion < 1.0:
        raise ValueError(f"confusion (similarity strength) must be in [0, 1), got {confusion}")
    if temperature is not None and not temperature > 0.0:
        raise ValueError(f"temperature must be > 0, got {temperature}")


def _simulate(
    table: FrameTable,
    accuracy: float,
    seed: int,
    correlation_s: float = 1.0,
    confusion: float = DEFAULT_CONFUSION,
    temperature: float | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """The softmax array and the description of how it was made (see module docstring)."""
    _check_params(accuracy, correlation_s, confusion, temperature)
    card = table.card
    n, k = table.num_frames, card.num_classes
    if k < 2:
        raise ValueError(f"dataset {card.name!r} has {k} class(es); simulation needs at least 2")
    frames_per_corr = correlation_s * card.fps
    rho = float(np.exp(-1.0 / frames_per_corr)) if frames_per_corr > 0 else 0.0
    sim = class_similarity(card.classes, card.background)
    # 1 - confusion*S: how much of the margin a class keeps against each other class
    keep = (1.0 - confusion * sim).astype(np.float32)
    template = (np.eye(k) + confusion * sim).astype(np.float32)
    labels = table.labels.astype(np.intp)

    rng = np.random.default_rng(seed)
    out = np.empty((n, k), dtype=np.float32)
    thresholds = np.empty(n, dtype=np.float32)
    chunks = _chunks(table.offsets)
    # pass 1: noise into `out`, and each frame's threshold margin
    for a, b in chunks:
        lo, hi = int(table.offsets[a]), int(table.offsets[b])
        noise = _ar1_noise(rng, table.offsets[a : b + 1] - lo, k, rho)
        y = labels[lo:hi]
        rows = np.arange(hi - lo)
        gap = (noise - noise[rows, y][:, None]) / keep[y]
        gap[rows, y] = -np.inf
        thresholds[lo:hi] = gap.max(axis=1)
        out[lo:hi] = noise

    # the margin at which exactly round(accuracy% * n) frames are correct
    correct = int(round(accuracy / 100.0 * n))
    if correct <= 0 or correct >= n:
        raise ValueError(f"accuracy {accuracy}% of {n} frames leaves no frame right or wrong")
    part = np.partition(thresholds, (correct - 1, correct))
    margin = float((part[correct - 1] + part[correct]) / 2.0)
    if margin < 0:
        chance = 100.0 * float(np.mean(thresholds < 0))
        raise ValueError(
            f"accuracy {accuracy}% is below what pure noise gives on {card.name!r} "
            f"({chance:.1f}%): a classifier that avoids the true class is not modelled"
        )

    fitted = temperature is None
    if temperature is None:
        temperature = _confidence_temperature(out, labels, template, margin, accuracy / 100.0)

    # pass 2: logits -> softmax in place
    hits = 0
    for a, b in chunks:
        lo, hi = int(table.offsets[a]), int(table.offsets[b])
        logits = out[lo:hi]
        y = labels[lo:hi]
        logits += np.float32(margin) * template[y]
        hits += int(np.count_nonzero(logits.argmax(axis=1) == y))
        logits /= np.float32(temperature)
        logits -= logits.max(axis=1, keepdims=True)
        np.exp(logits, out=logits)
        logits /= logits.sum(axis=1, keepdims=True)

    info = {
        "kind": "simulated",
        "model": "ar1-logit-noise+word-similarity",
        "version": VERSION,
        "accuracy_target": float(accuracy),
        "accuracy_achieved": round(100.0 * hits / n, 4),
        "seed": int(seed),
        "correlation_s": float(correlation_s),
        "rho": rho,
        "confusion": float(confusion),
        "temperature": float(temperature),
        "temperature_fitted": fitted,
        "margin": margin,
    }
    return out, info


def simulate_softmax(
    table: FrameTable,
    accuracy: float,
    seed: int,
    correlation_s: float = 1.0,
    confusion: float = DEFAULT_CONFUSION,
    temperature: float | None = None,
) -> np.ndarray:
    """Per-frame softmax (frames, classes) float32 of a simulated frame classifier.

    ``accuracy``: target argmax accuracy in percent over all frames (1 < accuracy < 100);
    ``correlation_s``: AR(1) correlation time of the logit noise in seconds (0: i.i.d.);
    ``confusion``: strength in [0, 1) of the word-similarity leak between classes;
    ``temperature``: divides the logits (lower = peakier softmax; argmax unchanged);
    None (default) picks the one at which the mean top probability equals the accuracy,
    i.e. a confidence-calibrated classifier.
    Deterministic for ``seed``. Raises ``ValueError`` for parameters outside those ranges.
    """
    return _simulate(table, accuracy, seed, correlation_s, confusion, temperature)[0]


def simulate(
    table: FrameTable,
    accuracy: float | None = None,
    seed: int = 0,
    correlation_s: float = 1.0,
    confusion: float = DEFAULT_CONFUSION,
    temperature: float | None = None,
) -> FrameTable:
    """``table`` with its ``features`` replaced by simulated softmax vectors; the card's
    ``features`` description records the model, its parameters and the achieved accuracy.
    ``accuracy=None`` takes the paper's value for the card's name (``KeyError`` if none)."""
    if accuracy is None:
        accuracy = default_accuracy(table.card.name)
    feats, info = _simulate(table, accuracy, seed, correlation_s, confusion, temperature)
    return table.with_features(feats, info)


def command(
    path: Path = typer.Argument(..., help="A prepared frame table (.parquet)."),
    out: Path = typer.Option(..., "--out", help="Where to write the table with features."),
    accuracy: float | None = typer.Option(
        None,
        "--accuracy",
        help="Target frame accuracy in percent (e.g. 20.6). Default: the paper's CNN "
        "accuracy for the dataset (Table 4: breakfast 20.6, salads 37.5, mpii 36.1).",
    ),
    seed: int = typer.Option(0, "--seed", help="Random seed (same seed, same features)."),
    correlation_s: float = typer.Option(
        1.0, "--correlation-s", help="Correlation time of the errors in seconds (0: i.i.d.)."
    ),
    confusion: float = typer.Option(
        DEFAULT_CONFUSION,
        "--confusion",
        help="How strongly classes sharing words are confused, in [0, 1).",
    ),
    temperature: float | None = typer.Option(
        None,
        "--temperature",
        help="Softmax temperature (lower: peakier; accuracy unchanged). Default: "
        "confidence-calibrated (mean top probability = accuracy).",
    ),
) -> None:
    """Add simulated frame-classifier softmax features to a prepared dataset."""
    table = read_table(path, features=False)
    try:
        result = simulate(table, accuracy, seed, correlation_s, confusion, temperature)
    except KeyError as e:
        raise DataError(str(e.args[0]), path) from None
    except ValueError as e:
        raise DataError(str(e), path) from None
    write_table(result, out)
    f = result.card.features or {}
    typer.echo(
        f"{describe(result, out)}; simulated accuracy {f['accuracy_achieved']:.2f}% "
        f"(target {f['accuracy_target']}%, seed {seed})"
    )
