"""``kitchen-study cnn train | export | svm``: the per-frame CNN stage outside any study.

Examples::

    # fine-tune Inception-v3 (ImageNet weights from a local file) on Breakfast split 1
    kitchen-study cnn train breakfast.parquet --split 1 --frames /data/breakfast/videos \\
        --pattern '{participant}/{view}/{participant}_{activity}.avi' \\
        --weights inception_v3_google-0cc3c7bd.pth --iterations 20000 \\
        --save cnn_split1.pt --export breakfast_cnn_split1.parquet --json
    # softmax of every frame with a saved checkpoint, into a new table
    kitchen-study cnn export cnn_split1.pt breakfast.parquet --frames /data/breakfast/videos \\
        --out breakfast_cnn_split1.parquet --json
    # Table 3's CNN + Softmax and CNN + SVM baselines on that table
    kitchen-study cnn svm breakfast_cnn_split1.parquet --split 1 --json

``--json`` prints one JSON object; progress goes to stderr. Bad input (a missing or broken
video, a config that cannot run) prints ``error: ...`` and exits 2 with no output file
written. torch is imported inside the commands so that ``kitchen-study --help`` stays fast.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import typer

from .job_cli import apply_settings, fail, final_result, fmt_num, split_key

__all__ = ["cnn_app", "export", "svm", "train"]

cnn_app = typer.Typer(
    help="Per-frame RGB CNN: fine-tune, export softmax features, CNN+SVM baseline.",
    no_args_is_help=True,
)

_FRAMES_HELP = "Root folder of the video files or frame folders."
_PATTERN_HELP = (
    "Path of a video under --frames, a template over {video}, {participant}, {activity}, "
    "{view} (default: <video> folder or <video>.mp4/.avi/...)."
)


@cnn_app.command("train")
def train(
    table: Path = typer.Argument(..., help="Frame table (.parquet) of the dataset."),
    split: str = typer.Option("1", "--split", help="Split to train on: number or name."),
    frames: Path = typer.Option(..., "--frames", help=_FRAMES_HELP),
    frames_kind: str = typer.Option("auto", "--frames-kind", help="auto | video | folder"),
    pattern: str | None = typer.Option(None, "--pattern", help=_PATTERN_HELP),
    source_fps: float | None = typer.Option(
        None, "--source-fps", help="Frame rate of the videos/folders (default: the stream's)."
    ),
    table_fps: float | None = typer.Option(
        None, "--table-fps", help="Frame rate of the table (default: its card's fps)."
    ),
    tail_tolerance: int = typer.Option(
        5, "--tail-tolerance", help="Missing trailing frames that repeat the last one."
    ),
    model: str = typer.Option("inception_v3", "--model", help="torchvision model name."),
    weights: str | None = typer.Option(
        None, "--weights", help="Local ImageNet state dict, or 'imagenet' (torch hub cache)."
    ),
    image_size: int | None = typer.Option(None, "--image-size", help="Crop size (px)."),
    iterations: int = typer.Option(1000, "--iterations", help="Optimiser steps."),
    batch: int = typer.Option(32, "--batch", help="Frames per batch."),
    optimizer: str = typer.Option("sgd", "--optimizer", help="sgd | adamw"),
    lr: float | None = typer.Option(None, "--lr", help="Learning rate (sgd 1e-3, adamw 1e-4)."),
    sampling: str = typer.Option("plain", "--sampling", help="plain | balanced"),
    stride: int = typer.Option(8, "--stride", help="Train on every N-th frame per epoch."),
    workers: int | None = typer.Option(None, "--workers", help="Data-loader processes."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    eval_at: str = typer.Option("", "--eval-at", help="Evaluate at these iterations: 500,1000"),
    eval_stride: int = typer.Option(1, "--eval-stride", help="Evaluate on every N-th frame."),
    device: str | None = typer.Option(None, "--device", help="cpu | cuda (default: auto)."),
    settings: list[str] = typer.Option(
        [], "--set", help="Any other config key: --set KEY=VALUE (e.g. interleave=8)."
    ),
    resume: Path | None = typer.Option(None, "--resume", help="Continue from this checkpoint."),
    save: Path | None = typer.Option(None, "--save", help="Write the final checkpoint here."),
    export_out: Path | None = typer.Option(
        None, "--export", help="Write the softmax table of every frame here after training."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Fine-tune a CNN on one split's training frames (optionally export its softmax)."""
    from data_prep.errors import DataError

    from .cnn_job import CheckpointMismatch, CNNRun, ConfigError

    try:
        config: dict[str, Any] = {
            "table_path": str(table),
            "split": split_key(split),
            "frames_root": str(frames),
            "frames_kind": frames_kind,
            "frames_pattern": pattern,
            "source_fps": source_fps,
            "table_fps": table_fps,
            "tail_tolerance": tail_tolerance,
            "model": model,
            "weights": weights,
            "image_size": image_size,
            "iterations": iterations,
            "batch_size": batch,
            "optimizer": optimizer,
            "lr": lr,
            "sampling": sampling,
            "stride": stride,
            "workers": workers,
            "seed": seed,
            "eval_at": eval_at,
            "eval_stride": eval_stride,
            "device": device,
            "export_path": None if export_out is None else str(export_out),
            "num_cpus": os.cpu_count() or 1,
        }
        apply_settings(config, settings)
        run = CNNRun.create(config, cpus=os.cpu_count() or 1)
        if export_out is not None and export_out.resolve() == table.resolve():
            raise DataError("export would overwrite its input table; write a new file", export_out)
        if resume is not None:
            run.load(resume)

        def progress(result: dict[str, Any]) -> None:
            line = (
                f"iteration {result['iteration']}: loss {fmt_num(result['loss'])}, "
                f"{result['frames_per_s']:.1f} frames/s"
            )
            if "frame_acc" in result:
                line += f", frame_acc {fmt_num(result['frame_acc'])}%"
            typer.echo(line, err=True)

        try:
            result = run.run(progress)
            if save is not None:
                run.save(save)
        finally:
            run.close()
    except (ConfigError, CheckpointMismatch, DataError, ValueError) as e:
        fail(str(e))
    result = final_result(result, save, split=run.trainer.split, model=run.spec.model)
    if json_out:
        typer.echo(json.dumps(result))
        return
    typer.echo(
        f"{run.spec.model} on {table} {run.trainer.split}: {result['iterations']} iterations "
        f"at {result['frames_per_s']:,.1f} frames/s; test frame_acc {fmt_num(result['frame_acc'])}%"
    )
    if save is not None:
        typer.echo(f"  checkpoint {save}")
    if "export" in result:
        typer.echo(f"  softmax table {result['export']['out']}")


@cnn_app.command("export")
def export(
    checkpoint: Path = typer.Argument(..., help="CNN checkpoint (from cnn train --save)."),
    table: Path = typer.Argument(..., help="Frame table (.parquet) of the dataset."),
    out: Path = typer.Option(..., "--out", help="New frame table with the softmax features."),
    frames: Path = typer.Option(..., "--frames", help=_FRAMES_HELP),
    frames_kind: str = typer.Option("auto", "--frames-kind", help="auto | video | folder"),
    pattern: str | None = typer.Option(None, "--pattern", help=_PATTERN_HELP),
    source_fps: float | None = typer.Option(None, "--source-fps", help="Frame rate of the videos."),
    table_fps: float | None = typer.Option(None, "--table-fps", help="Frame rate of the table."),
    tail_tolerance: int = typer.Option(
        5, "--tail-tolerance", help="Missing trailing frames that repeat the last one."
    ),
    batch: int = typer.Option(64, "--batch", help="Frames per batch."),
    workers: int = typer.Option(0, "--workers", help="Data-loader processes."),
    device: str | None = typer.Option(None, "--device", help="cpu | cuda (default: auto)."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Write the softmax of every frame of every video into a new frame table (atomic)."""
    from data_prep.errors import DataError
    from data_prep.table import read_table

    from .cnn_job import (
        CheckpointMismatch,
        ConfigError,
        check_classes,
        export_features,
        load_checkpoint,
    )
    from .frames import FrameSource

    try:
        source = FrameSource(frames, frames_kind, pattern, source_fps, tail_tolerance)
        model, meta = load_checkpoint(checkpoint)
        data = read_table(table, features=False)
        check_classes(meta, data, checkpoint)
        data.card.split(meta["split"])  # the split the model was trained for must exist here
        summary = export_features(
            model, data, source, out, split=meta["split"], batch_size=batch, workers=workers,
            device=device or "auto", table_fps=table_fps, image_size=meta["image_size"],
            source_path=table,
            description={"iteration": meta["iteration"], "checkpoint": str(checkpoint)},
        )
    except KeyError as e:
        fail(str(e.args[0]))
    except (ConfigError, CheckpointMismatch, DataError, ValueError) as e:
        fail(str(e))
    if json_out:
        typer.echo(json.dumps(summary))
        return
    acc = summary["softmax_acc"]
    typer.echo(
        f"wrote {out}: {summary['videos']} videos, {summary['frames']:,} frames, softmax dim "
        f"{summary['dim']} at {summary['frames_per_s']:,.1f} frames/s; {summary['split']} "
        f"argmax accuracy train {fmt_num(acc['train'])}%, test {fmt_num(acc['test'])}%"
    )
    if summary["padded"]:
        typer.echo(f"  repeated last frame (short videos): {summary['padded']}")


@cnn_app.command("svm")
def svm(
    table: Path = typer.Argument(..., help="Frame table with CNN softmax features."),
    split: str = typer.Option("1", "--split", help="Split: number or name."),
    max_train: int = typer.Option(50_000, "--max-train", help="Sampled training frames."),
    folds: int = typer.Option(5, "--folds", help="Cross-validation folds of the grid search."),
    c_grid: str = typer.Option("0.1,1,10,100", "--c", help="Grid of C values."),
    gamma_grid: str = typer.Option("0.01,0.1,1,10", "--gamma", help="Grid of gamma values."),
    test_stride: int = typer.Option(1, "--test-stride", help="Score every N-th test frame."),
    seed: int = typer.Option(0, "--seed", help="Random seed (frame sample, folds)."),
    jobs: int = typer.Option(1, "--jobs", help="Parallel grid-search jobs."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Table 3's baselines: CNN + Softmax (argmax) and CNN + SVM (RBF, grid-searched)."""
    from data_prep.errors import DataError
    from data_prep.table import read_table

    from .svm_baseline import svm_baseline

    try:
        grid_c = [float(x) for x in c_grid.split(",") if x.strip()]
        grid_gamma = [float(x) for x in gamma_grid.split(",") if x.strip()]
        if max_train < folds or folds < 2 or test_stride < 1:
            raise ValueError("need --folds >= 2, --max-train >= --folds and --test-stride >= 1")
        result = svm_baseline(
            read_table(table), split_key(split), max_train=max_train, folds=folds, C=grid_c,
            gamma=grid_gamma, test_stride=test_stride, seed=seed, jobs=jobs,
        )
    except KeyError as e:
        fail(str(e.args[0]))
    except (DataError, ValueError) as e:
        fail(str(e))
    if json_out:
        typer.echo(json.dumps(result))
        return
    typer.echo(
        f"{table} {result['split']}: CNN + Softmax {fmt_num(result['softmax_acc'])}%, "
        f"CNN + SVM {fmt_num(result['svm_acc'])}% (C={result['C']:g}, gamma={result['gamma']:g}, "
        f"cv {result['cv_acc']:.2f}% on {result['train_frames']:,} frames)"
    )
