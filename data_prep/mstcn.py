"""Any dataset in the MS-TCN layout: `groundTruth/`, `mapping.txt`, `splits/`, optional `features/`.

Where the data comes from: the layout of Farha & Gall's MS-TCN (CVPR 2019) data release,
which most action-segmentation code reads (Breakfast, 50 Salads, GTEA, ...)::

    ROOT/mapping.txt                          "<index> <label>" per line, 0..C-1 in order
    ROOT/groundTruth/<video>.txt              one label name per line, one line per frame
    ROOT/splits/{train,test}.split<K>.bundle  one "<video>.txt" per line
    ROOT/features/<video>.npy                 optional, float array of shape (D, T)

The command::

    kitchen-study prepare mstcn --root ../shared/data/50salads --out 50salads_mid.parquet \\
        --fps 30 --participant-pattern 'rgb-(?P<participant>\\d+)-'

Expected counts: on ``../shared/data/50salads`` 50 videos, 577,595 frames, 19 classes,
25 participants, 5 splits of 40 train / 10 test videos; on ``../shared/data/breakfast``
1712 videos, 3,590,899 frames, 48 classes, 52 participants, 4 splits (but use
``prepare breakfast`` there: it knows Breakfast's fps, background and cameras).

Rules (stated, not guessed):

* **Participant** (and, optionally, activity and view) come from the video id through a
  regular expression with a named group ``participant`` (optional groups ``activity`` and
  ``view``), applied with :func:`re.search` (anchor it with ``^``/``$`` to match the whole
  id). The default, ``(?P<participant>[A-Za-z]*\\d+)``, takes the first run of letters
  followed by digits: ``P03`` in ``P03_cam01_P03_cereals``, ``01`` in ``rgb-01-1``, ``S1``
  in ``S1_Cheese_C1``. A video id the pattern does not match is an error naming its file.
* **Splits**: every ``train/test.split<K>.bundle`` pair in ``splits/`` becomes split
  ``split<K>``; ``splits/`` must hold at least one pair. A bundle naming a video without a
  groundTruth file, naming a video twice, a video in both train and test, or a participant
  in both train and test (the splits must be leave-person-out) is an error naming the
  bundle file and line.
* **Features**: if ``features/`` exists, every video needs ``features/<video>.npy`` of
  shape (D, T) with the same D for all videos and T equal to its number of groundTruth
  lines (a length mismatch is an error naming the ``.npy`` file); they become the
  ``features`` column (float32, one D-vector per frame). A NaN or infinite value is an
  error naming the ``.npy`` file, the video and the frame.
* **Files**: every input is UTF-8 text (else an error naming the file and line); a
  ``groundTruth/<video>.txt`` that is a folder or a symlink loop is an error, never skipped.
* **Background**: none unless ``--background LABEL`` names one (it must be a class).

The reader (:func:`data_prep.layout.read_layout`) is shared with the ``breakfast``
converter; the card is filled in by :meth:`data_prep.layout.Layout.to_table`.
* **Name** defaults to the root folder's name; **fps** to 30.
"""

from __future__ import annotations

from pathlib import Path

import typer

from .commands import checked_option, write_prepared
from .layout import DEFAULT_PARTICIPANT_PATTERN, compile_pattern, read_layout
from .table import FrameTable

__all__ = ["BACKGROUND", "NAME", "VERSION", "command", "convert"]

NAME = "mstcn"
VERSION = "1"
#: The layout has no background convention: ``--background`` names one, else None.
BACKGROUND: str | None = None


# -- converter --------------------------------------------------------------------------


def convert(
    root: str | Path,
    name: str | None = None,
    fps: float = 30.0,
    background: str | None = BACKGROUND,
    participant_pattern: str = DEFAULT_PARTICIPANT_PATTERN,
) -> FrameTable:
    """Convert a dataset in the MS-TCN layout (see the module docstring for the rules)."""
    root = Path(root)
    layout = read_layout(root, participant_pattern)
    return layout.to_table(
        name=name or root.resolve().name,
        fps=fps,
        background=background,
        source_format=NAME,
        converter=NAME,
        version=VERSION,
    )


def command(
    root: Path = typer.Option(
        ..., "--root", help="Dataset folder (groundTruth/, mapping.txt, splits/)."
    ),
    out: Path = typer.Option(..., "--out", help="Output Parquet file (written atomically)."),
    name: str | None = typer.Option(None, "--name", help="Dataset name [default: ROOT's name]."),
    fps: float = typer.Option(30.0, "--fps", min=0.001, help="Frames per second."),
    background: str | None = typer.Option(
        None, "--background", help="The background class (must be in mapping.txt)."
    ),
    participant_pattern: str = typer.Option(
        DEFAULT_PARTICIPANT_PATTERN,
        "--participant-pattern",
        callback=checked_option(compile_pattern),
        help="Regex with a named group 'participant' (optional 'activity', 'view'), "
        "searched in each video id.",
    ),
) -> None:
    """Convert a dataset in the MS-TCN layout."""
    write_prepared(convert(root, name, fps, background, participant_pattern), out)
