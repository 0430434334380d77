"""``kitchen-study train``: train one frame-wise LSTM outside any study.

Examples::

    kitchen-study train data/synth/synth_breakfast.parquet --split 1 --iterations 1024 --json
    kitchen-study train T.parquet --split 1 --source S.parquet --source-split 1 \\
        --mode transfer --arrangement merged --pretrain-iterations 2048 --eval-at 512,1024

Prints one JSON object (``--json``) with the final ``frame_acc, input_acc, edit, f1@10,
f1@25, f1@50, iterations, frames_per_s`` and, with ``--eval-at``, the ``curve``
(``{iteration: frame_acc}``); otherwise a short human summary. Progress goes to stderr
(rich), with ``--json`` too, so stdout stays one JSON object: a live bar on a terminal, else
one line per step (``iteration 512/4096 (12%): loss ..., ~3.1 min left (estimate)``) and,
between steps, a line at least every :data:`PROGRESS_EVERY_S` seconds of wall time
(``iteration 37/4096 (1%), ~20 min left (estimate)``; ``pre-training iteration ...`` while a
transfer run without ``--init`` pre-trains on the source): a step is a number of
iterations, which on a loaded CPU can be many minutes, so the pace is set by the clock.

MLflow, only when asked: with ``--tracking-uri URI`` (or ``$MLFLOW_TRACKING_URI``) the run
is logged as one MLflow run in ``--experiment`` (default :data:`DEFAULT_EXPERIMENT`): the
config's flat form (``TrainSpec.flat``) as params, every step's metrics at step =
iteration (``loss``, and ``frame_acc, edit, f1_10, ...`` at each evaluation, as a study's
task runs log them), the final checkpoint as the artifact ``checkpoint/lstm.pt``; the run
ends FINISHED, or FAILED (``ks.error``) / KILLED (Ctrl-C). Without a URI nothing is
imported from MLflow and nothing is written. The URI is checked before training starts
(``study.store_checks``, ``study.lease.check_store``): a bad one is one ``error:`` line.
A bad config (unknown ``--set`` key, bad value, missing split, ``--source`` without a mode,
...) or bad input file prints ``error: ...`` and exits 2. torch is imported inside the
command so that ``kitchen-study --help`` stays instant.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import typer

from .job import MAX_ITERATIONS
from .job_cli import apply_settings, fail, final_result, fmt_num, split_key

__all__ = ["PROGRESS_EVERY_S", "command", "train"]

#: the longest a run goes without a progress line on stderr (between steps: wall time)
PROGRESS_EVERY_S = 5.0
#: the MLflow experiment of ``train`` runs when ``--experiment`` is not given
DEFAULT_EXPERIMENT = "kitchen-study-train"


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
    # the LSTM's options: None (not given) leaves the model's own default (300, 1, 128,
    # cudnn), so another model (--set kind=mstcn) is not handed LSTM fields
    history: int | None = typer.Option(
        None, "--history", help="LSTM: frames per training subsequence [default: 300]."),
    depth: int | None = typer.Option(None, "--depth", help="LSTM: stacked layers [default: 1]."),
    hidden: int | None = typer.Option(None, "--hidden", help="LSTM: hidden units [default: 128]."),
    batch: int = typer.Option(128, "--batch", help="Subsequences per batch."),
    lr: float = typer.Option(1e-3, "--lr", help="Adam learning rate."),
    cell: str | None = typer.Option(
        None, "--cell", help="LSTM: cudnn | peephole [default: cudnn]."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    clip: float | None = typer.Option(None, "--clip", help="Max gradient norm."),
    joint_ratio: str = typer.Option("5:3", "--joint-ratio", help="Target:source per batch."),
    device: str | None = typer.Option(None, "--device", help="cpu | cuda (default: auto)."),
    settings: list[str] = typer.Option(
        [], "--set", help="Any other config key: --set KEY=VALUE (e.g. eval_reset=true)."
    ),
    save: Path | None = typer.Option(None, "--save", help="Write the final checkpoint here."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object."),
    tracking_uri: str | None = typer.Option(
        None, "--tracking-uri", envvar="MLFLOW_TRACKING_URI", show_envvar=True,
        help="Log this run to MLflow there (sqlite:///mlflow.db, http://HOST:5000); "
             "default: not logged."),
    experiment: str = typer.Option(
        DEFAULT_EXPERIMENT, "--experiment", help="MLflow experiment (with --tracking-uri)."),
) -> None:
    """Train (and evaluate) one temporal model on a prepared dataset (the paper's LSTM by
    default; --set kind=mstcn for MS-TCN)."""
    from data_prep.errors import DataError

    from .train_job import CheckpointMismatch, ConfigError, TrainRun

    tracking_uri = tracking_uri or None  # MLFLOW_TRACKING_URI="" means not set
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
            "batch_size": batch,
            "lr": lr,
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
            "history": history,
            "depth": depth,
            "hidden": hidden,
            "cell": cell,
        }
        config.update({k: v for k, v in optional.items() if v is not None})
        apply_settings(config, settings)
        tracker = None if tracking_uri is None else _Tracker.check(tracking_uri, experiment)
        run = TrainRun.create(config)
        if tracker is None:
            with _Progress(run) as progress:
                result = run.run(progress)
            if save is not None:
                run.save(save)
        else:
            with tracker.started(run) as log, _Progress(run) as progress:
                result = run.run(lambda r: (progress(r), log(r)))
                tracker.finish(run, result, save)
    except (ConfigError, CheckpointMismatch, DataError, ValueError) as e:
        fail(str(e))
    except OSError as e:  # a full disk or a folder we may not write, at a checkpoint write
        where = e.filename or save or "checkpoint"
        fail(f"{where}: cannot write ({e.strerror or e})")
    except Exception as e:
        # a tracking store that refuses a write after the checks passed (a server's 401, a
        # locked or full database): one line, the run already ended FAILED where possible
        if type(e).__module__.split(".", 1)[0] not in ("mlflow", "sqlalchemy"):
            raise
        fail(f"{tracking_uri}: the MLflow store refused the request: {_first_line(e)}")
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
    if tracker is not None:
        typer.echo(f"  MLflow run {tracker.run_id} in {experiment!r} at {tracker.uri}")
    sys.stdout.flush()


class _Tracker:
    """One ``train`` run as one MLflow run (see the module docstring). MLflow is imported
    only here, so that a run without ``--tracking-uri`` stays offline and starts fast."""

    def __init__(self, uri: str, experiment: str):
        self.uri, self.experiment = uri, experiment
        self.run_id: str | None = None
        self.client: Any = None

    @classmethod
    def check(cls, uri: str, experiment: str) -> _Tracker:
        """A tracker for ``uri``, checked before any training: a URI MLflow could not use is
        one line (a :class:`~data_prep.errors.DataError`), nothing written."""
        from data_prep.errors import DataError
        from study.lease import check_store
        from study.store_checks import check_tracking_uri

        if not experiment.strip():
            raise DataError("--experiment must not be empty")
        check_tracking_uri(uri)
        check_store(uri)
        return cls(uri, experiment)

    def _experiment_id(self) -> str:
        from study.tracking import sqlite_path

        exp = self.client.get_experiment_by_name(self.experiment)
        if exp is not None:
            if exp.lifecycle_stage != "active":
                raise ValueError(f"MLflow experiment {self.experiment!r} is deleted at "
                                 f"{self.uri}; restore it or give another --experiment")
            return str(exp.experiment_id)
        db = sqlite_path(self.uri)
        # a SQLite store keeps artifacts beside the database, as a study's experiments do
        # (MLflow's default is ./mlruns under whatever folder the command ran in)
        location = (None if db is None
                    else (db.parent / "mlartifacts" / "train").as_uri())
        return str(self.client.create_experiment(self.experiment, artifact_location=location))

    @contextmanager
    def started(self, run: Any) -> Iterator[Callable[[dict[str, Any]], None]]:
        """Create the MLflow run (params: the spec's flat form) and yield the per-step logger;
        the run ends FAILED (or KILLED on Ctrl-C) if the body raises."""
        from mlflow.exceptions import MlflowException

        from data_prep.errors import DataError
        from study.lease import open_client
        from study.mlflow_layout import metrics_from_result

        spec = run.spec
        try:
            # checked in `check`; a SQLite store opened under its file lock: two `train`
            # calls on one new store must not run MLflow's schema migrations at once
            self.client = open_client(self.uri)
            target = Path(spec.target_path).stem
            mlrun = self.client.create_run(
                self._experiment_id(), run_name=f"train {spec.mode} {target}",
                tags={"ks.command": "train", "ks.mode": spec.mode, "ks.target": target})
            self.run_id = mlrun.info.run_id
            flat = {k: json.dumps(v) if isinstance(v, list | dict) else str(v)
                    for k, v in spec.flat().items()}
            self.client.log_batch(self.run_id, params=_params(flat))
        except MlflowException as e:
            raise DataError(f"the MLflow store refused the run: {_first_line(e)}",
                            self.uri) from None

        def log(result: dict[str, Any]) -> None:
            from mlflow.entities import Metric

            step = int(result["iteration"])
            now = int(time.time() * 1000)
            metrics = metrics_from_result(result)
            metrics["iteration"] = float(step)
            self.client.log_batch(self.run_id, metrics=[
                Metric(k, v, now, step) for k, v in sorted(metrics.items())])

        try:
            yield log
        except KeyboardInterrupt:
            self._end("KILLED", "interrupted (Ctrl-C)")
            raise
        except BaseException as e:
            self._end("FAILED", f"{type(e).__name__}: {e}")
            raise

    def finish(self, run: Any, result: dict[str, Any], save: Path | None) -> None:
        """The final checkpoint as the run's artifact, the whole run's throughput, FINISHED."""
        import tempfile

        from study.mlflow_layout import CHECKPOINT_ARTIFACT

        self.client.log_metric(self.run_id, "frames_per_s_overall",
                               float(result["frames_per_s"]), step=int(result["iterations"]))
        art = Path(CHECKPOINT_ARTIFACT)
        with tempfile.TemporaryDirectory() as tmp:
            # written once (--save, else a temporary file); the artifact is always named as
            # a study's (checkpoint/lstm.pt), whatever --save calls it
            ckpt = run.save(save if save is not None else Path(tmp) / art.name)
            if ckpt.name != art.name:
                ckpt = Path(shutil.copyfile(ckpt, Path(tmp) / art.name))
            self.client.log_artifact(self.run_id, str(ckpt), str(art.parent))
        self.client.set_terminated(self.run_id, "FINISHED")

    def _end(self, status: str, reason: str) -> None:
        """Best effort: the run must not stay RUNNING, but a store that fails here (the
        reason the body failed, perhaps) must not hide the body's own error."""
        with suppress(Exception):
            self.client.set_tag(self.run_id, "ks.error", reason[:5000])
        with suppress(Exception):
            self.client.set_terminated(self.run_id, status)


def _params(flat: dict[str, str]) -> list[Any]:
    from mlflow.entities import Param

    return [Param(k, v[:6000]) for k, v in sorted(flat.items())]


def _first_line(e: BaseException) -> str:
    text = (getattr(e, "message", None) or str(e)).strip().splitlines()
    return text[0] if text else type(e).__name__


class _Progress:
    """Training progress on stderr through rich: a live bar when stderr is a terminal, else
    plain lines (logs, CI, ``2> file``): one per step, and one whenever
    :data:`PROGRESS_EVERY_S` seconds have passed since the last line (``tick``, called by
    the trainer after every optimiser step, pre-training included). The time left is an
    estimate from the iterations so far of the current phase and says so."""

    def __init__(self, run: Any, every_s: float | None = None,
                 clock: Callable[[], float] = time.monotonic):
        from rich.console import Console

        spec = run.spec
        self.total = int(spec.iterations)
        self.console = Console(stderr=True, highlight=False, soft_wrap=True)
        self.every_s = PROGRESS_EVERY_S if every_s is None else every_s
        self.clock = clock
        self.last_line = clock()
        #: phase -> (first iteration seen, its time): the rate behind the estimate
        self.first: dict[str, tuple[int, float]] = {}
        self.bar: Any = None
        self.run = run
        pre = (spec.mode == "transfer" and not spec.init_checkpoint
               and spec.source_path is not None)
        self.pretrain_total = int(spec.pretrain_iterations or spec.iterations) if pre else 0
        self.intro = (f"training {self.total:,} iterations"
                      + (f" after pre-training {self.pretrain_total:,} on the source"
                         if pre else ""))

    def __enter__(self) -> _Progress:
        self.console.print(self.intro, markup=False)
        self.run.tick = self.tick
        if self.console.is_terminal:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(TextColumn("{task.description}"), MofNCompleteColumn(),
                                BarColumn(), TimeElapsedColumn(), TextColumn("left ~"),
                                TimeRemainingColumn(), TextColumn("{task.fields[note]}"),
                                console=self.console)
            self.bar.start()
            self.task = self.bar.add_task(
                "pre-training" if self.pretrain_total else "iteration",
                total=self.pretrain_total or self.total, note="")
        return self

    def __exit__(self, *exc: Any) -> None:
        self.run.tick = None
        if self.bar is not None:
            self.bar.stop()

    def _left(self, phase: str, it: int, total: int) -> str:
        """``, ~T left (estimate)`` from this phase's rate so far, or "" before it has one."""
        now = self.clock()
        first = self.first.setdefault(phase, (it, now))
        done, seconds = it - first[0], now - first[1]
        if done <= 0 or seconds <= 0 or it >= total:
            return ""
        return f", ~{_duration((total - it) * seconds / done)} left (estimate)"

    def tick(self, phase: str, it: int) -> None:
        """After every optimiser step: a line when :attr:`every_s` has passed since the last
        one (cheap otherwise: one clock read)."""
        if self.bar is not None:
            if phase == "train" and self.task is not None and self.pretrain_total:
                # pre-training is over: the bar now counts the target's iterations
                self.bar.update(self.task, description="iteration", total=self.total,
                                completed=0)
                self.pretrain_total = 0
            self.bar.update(self.task, completed=it)
            return
        total = self.pretrain_total if phase == "pretrain" else self.total
        left = self._left(phase, it, total)
        if self.clock() - self.last_line < self.every_s:
            return
        what = "pre-training iteration" if phase == "pretrain" else "iteration"
        self._line(f"{what} {it}/{total} ({100 * it / max(total, 1):.0f}%){left}")

    def _line(self, text: str) -> None:
        self.console.print(text, markup=False)
        self.last_line = self.clock()

    def __call__(self, result: dict[str, Any]) -> None:
        it = int(result["iteration"])
        note = f"loss {fmt_num(result.get('loss'))}"
        if "frame_acc" in result:
            note += f", frame_acc {result['frame_acc']:.2f}%"
        if self.bar is not None:
            self.bar.update(self.task, completed=it, note=note)
            return
        left = self._left("train", it, self.total)
        self._line(f"iteration {it}/{self.total} ({100 * it / max(self.total, 1):.0f}%): "
                   f"{note}{left}")


def _duration(s: float) -> str:
    return f"{s:.0f} s" if s < 90 else f"{s / 60:.1f} min" if s < 5400 else f"{s / 3600:.1f} h"


#: the typer command function ``study.cli`` mounts as ``kitchen-study train``
command = train
