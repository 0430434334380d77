"""``kitchen-study train``: train one frame-wise LSTM outside any study.

Examples::

    kitchen-study train data/synth/synth_breakfast.parquet --split 1 --iterations 1024 --json
    kitchen-study train T.parquet --split 1 --source S.parquet --source-split 1 \\
        --mode transfer --arrangement merged --pretrain-iterations 2048 --eval-at 512,1024

Prints one JSON object (``--json``) with the final ``frame_acc, input_acc, edit, f1@10,
f1@25, f1@50, iterations, frames_per_s`` and, with ``--eval-at``, the ``curve``
(``{iteration: frame_acc}``); otherwise a short human summary. Progress goes to stderr
(rich), with ``--json`` too, so stdout stays one JSON object: a live bar on a terminal, else
one line per step (``iteration 512/4096 (12%): loss ..., ~3.1 min left (estimate)``); a
transfer run without ``--init`` says first that it pre-trains on the source.
A bad config (unknown ``--set`` key, bad value, missing split, ``--source`` without a mode,
...) or bad input file prints ``error: ...`` and exits 2. torch is imported inside the
command so that ``kitchen-study --help`` stays instant.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import typer

from .job import MAX_ITERATIONS
from .job_cli import apply_settings, fail, final_result, fmt_num, split_key

__all__ = ["command", "train"]


def _ratio(value: str) -> tuple[int, int]:
    parts = value.replace("/", ":").split(":")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise ValueError(f"joint ratio must look like 5:3, got {value!r}")
    return int(parts[0]), int(parts[1])


def train(
    data: Path = typer.Argument(..., help="Target frame table (.parquet) with features."),
    split: str = typer.Option("1", "--split", help="Target split: number or name."),
    source: Path | None = typer.Option(None, "--source", help="Source frame table (.parquet)."),
    source_split: str = typer.Option("1", "--source-split", help="Source split."),
    mode: str | None = typer.Option(
        None, "--mode", help="none | joint | transfer | pretrain (required with --source)."
    ),
    arrangement: str | None = typer.Option(
        None, "--arrangement", help="merged | random | multiple_random | concat (default merged)."
    ),
    init: Path | None = typer.Option(None, "--init", help="Checkpoint to start from."),
    iterations: int = typer.Option(4096, "--iterations", help="Training iterations."),
    pretrain_iterations: int | None = typer.Option(
        None, "--pretrain-iterations", help="Source pre-training iterations (transfer)."
    ),
    eval_at: str = typer.Option("", "--eval-at", help="Evaluate at these iterations: 512,1024"),
    history: int = typer.Option(300, "--history", help="Frames per training subsequence."),
    depth: int = typer.Option(1, "--depth", help="Stacked LSTM layers."),
    hidden: int = typer.Option(128, "--hidden", help="Hidden units."),
    batch: int = typer.Option(128, "--batch", help="Subsequences per batch."),
    lr: float = typer.Option(1e-3, "--lr", help="Adam learning rate."),
    cell: str = typer.Option("cudnn", "--cell", help="cudnn | peephole"),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    clip: float | None = typer.Option(None, "--clip", help="Max gradient norm."),
    joint_ratio: str = typer.Option("5:3", "--joint-ratio", help="Target:source per batch."),
    device: str | None = typer.Option(None, "--device", help="cpu | cuda (default: auto)."),
    settings: list[str] = typer.Option(
        [], "--set", help="Any other config key: --set KEY=VALUE (e.g. eval_reset=true)."
    ),
    save: Path | None = typer.Option(None, "--save", help="Write the final checkpoint here."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Train (and evaluate) one frame-wise LSTM on a prepared dataset."""
    from data_prep.errors import DataError

    from .train_job import CheckpointMismatch, ConfigError, TrainRun

    if source is not None and mode is None:
        fail("--source needs --mode joint, transfer or pretrain")
    if not (0 if init is not None else 1) <= iterations <= MAX_ITERATIONS:  # as a study's
        fail(f"--iterations must be 1..{MAX_ITERATIONS:,} (0 only with --init: evaluate the "
             f"checkpoint), got {iterations}")
    try:
        config: dict[str, Any] = {
            "target_path": str(data),
            "target_split": split_key(split),
            "mode": mode or "none",
            "iterations": iterations,
            "eval_at": eval_at,
            "history": history,
            "depth": depth,
            "hidden": hidden,
            "batch_size": batch,
            "lr": lr,
            "cell": cell,
            "seed": seed,
            "joint_ratio": _ratio(joint_ratio),
        }
        optional = {
            "source_path": None if source is None else str(source),
            "source_split": split_key(source_split) if source is not None else None,
            "arrangement": arrangement,
            "init_checkpoint": None if init is None else str(init),
            "pretrain_iterations": pretrain_iterations,
            "clip": clip,
            "device": device,
        }
        config.update({k: v for k, v in optional.items() if v is not None})
        apply_settings(config, settings)
        run = TrainRun.create(config)
        with _Progress(run) as progress:
            result = run.run(progress)
        if save is not None:
            run.save(save)
    except (ConfigError, CheckpointMismatch, DataError, ValueError) as e:
        fail(str(e))
    result = final_result(result, save)
    if json_out:
        typer.echo(json.dumps(result))
        return
    typer.echo(
        f"{run.spec.mode} on {data} ({run.trainer.eval_data.describe()}): "
        f"{result['iterations']} iterations at {result['frames_per_s']:,.0f} frames/s"
    )
    for key in ("frame_acc", "input_acc", "edit", "f1@10", "f1@25", "f1@50"):
        typer.echo(f"  {key:<10} {fmt_num(result.get(key))}")
    if save is not None:
        typer.echo(f"  checkpoint {save}")
    sys.stdout.flush()


class _Progress:
    """Training progress on stderr through rich: a live bar when stderr is a terminal, else
    one plain line per step (logs, CI, ``2> file``). The time left is an estimate from the
    steps so far and says so."""

    def __init__(self, run: Any):
        from rich.console import Console

        self.total = int(run.spec.iterations)
        self.console = Console(stderr=True, highlight=False, soft_wrap=True)
        self.t0 = time.monotonic()
        self.first_it: int | None = None
        self.bar: Any = None
        spec = run.spec
        pre = (spec.mode == "transfer" and not spec.init_checkpoint
               and spec.source_path is not None)
        self.intro = (f"training {self.total:,} iterations"
                      + (f" after pre-training {spec.pretrain_iterations or spec.iterations:,} "
                         "on the source (no progress shown during pre-training)" if pre else ""))

    def __enter__(self) -> _Progress:
        self.console.print(self.intro, markup=False)
        if self.console.is_terminal:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(TextColumn("iteration"), MofNCompleteColumn(), BarColumn(),
                                TimeElapsedColumn(), TextColumn("left ~"),
                                TimeRemainingColumn(), TextColumn("{task.fields[note]}"),
                                console=self.console)
            self.bar.start()
            self.task = self.bar.add_task("train", total=self.total, note="")
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.stop()

    def __call__(self, result: dict[str, Any]) -> None:
        it = int(result["iteration"])
        note = f"loss {fmt_num(result.get('loss'))}"
        if "frame_acc" in result:
            note += f", frame_acc {result['frame_acc']:.2f}%"
        if self.bar is not None:
            self.bar.update(self.task, completed=it, note=note)
            return
        if self.first_it is None:  # the first step includes start-up (and pre-training)
            self.first_it, self.t_first = it, time.monotonic()
            left = ""
        else:
            rate = (it - self.first_it) / max(time.monotonic() - self.t_first, 1e-9)
            left = (f", ~{_duration((self.total - it) / rate)} left (estimate)"
                    if rate > 0 and it < self.total else "")
        self.console.print(f"iteration {it}/{self.total} ({100 * it / max(self.total, 1):.0f}%): "
                           f"{note}{left}", markup=False)


def _duration(s: float) -> str:
    return f"{s:.0f} s" if s < 90 else f"{s / 60:.1f} min" if s < 5400 else f"{s / 3600:.1f} h"


#: the typer command function ``study.cli`` mounts as ``kitchen-study train``
command = train
