"""What every training job shares (LSTM and CNN alike), importable without torch or Ray.

- :class:`StrictConfig`: the base of validated configs: unknown keys and wrong types are
  :class:`ConfigError` naming the key.
- :func:`parse_iterations`: ``"512,1024"`` as the CLI and YAML write iteration lists;
  :func:`checked_eval_at` and :func:`next_stop`: the evaluation schedule of a run.
- :func:`resolve_trial_path`: a driver-relative path seen from inside a Ray Tune trial.
- :func:`resolve_device`: the one rule for where a job runs (:class:`ConfigError` when it
  cannot).
- :class:`Checkpoint`, :func:`write_checkpoint`, :func:`read_checkpoint`: one
  self-describing, checksummed (verified on load; NaN or inf in its tensors refused)
  checkpoint file for every job (format tag, config, label spaces,
  iteration, state), read with ``torch.load(weights_only=True)``; a file that is not such a
  checkpoint is a :class:`CheckpointError`, one that is but does not fit the run a
  :class:`CheckpointMismatch`.

torch is imported inside the functions that need it, so importing this module stays cheap.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, ValidationError

from data_prep.errors import DataError

if TYPE_CHECKING:
    import torch

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "CheckpointMismatch",
    "ConfigError",
    "MAX_ITERATIONS",
    "TEMPORAL_CHECKPOINT_FILE",
    "StrictConfig",
    "checked_eval_at",
    "load_tensors",
    "next_stop",
    "parse_iterations",
    "read_checkpoint",
    "resolve_device",
    "resolve_trial_path",
    "write_checkpoint",
]

log = logging.getLogger(__name__)

#: The most training iterations one job (or a study's ``iterations``) may ask for: beyond
#: it a value is a typo (10^9 iterations of the paper's batch are ~10^5 GPU-days), and an
#: integer past 2^63 would overflow where it meets numpy or torch.
MAX_ITERATIONS = 10**9

#: The file name of a temporal model's checkpoint (any registered model, not only the LSTM),
#: wherever one is written: a Tune checkpoint directory, a pack member's ``m<i>/``, the study's
#: MLflow artifact (``study.mlflow_layout.CHECKPOINT_ARTIFACT``). Still ``lstm.pt``: stores,
#: Tune results and packs written before other models existed hold that name, and resuming
#: or reusing them must find it.
TEMPORAL_CHECKPOINT_FILE = "lstm.pt"


class ConfigError(ValueError):
    """A training config that cannot run: unknown key, bad value, inconsistent options."""


class CheckpointMismatch(ValueError):
    """A checkpoint that does not fit the run: other label space, arrangement or model shape.
    (A file that is no checkpoint of the job's kind is a :class:`CheckpointError`.)"""


#: Tags of the discriminated unions under a ``model`` key: pydantic puts the chosen tag in an
#: error's location (``model.mstcn.stages``), a key the user never wrote. Filled by
#: ``trainables.temporal`` from its registry (this module cannot import it: a cycle).
UNION_TAGS: set[str] = set()


def error_path(loc: tuple[Any, ...] | list[Any]) -> list[Any]:
    """An error location as the user wrote it: without a union's tag after ``model``."""
    return [part for i, part in enumerate(loc)
            if not (i > 0 and loc[i - 1] == "model" and isinstance(part, str)
                    and part in UNION_TAGS)]


def _format_validation(e: ValidationError, what: str) -> str:
    parts = []
    for err in e.errors():
        key = ".".join(str(x) for x in error_path(err["loc"])) or what
        if err["type"] == "extra_forbidden":
            parts.append(f"unknown key {key!r}")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            parts.append(f"{key}: {msg}" if err["loc"] else msg)
    return f"bad {what}: " + "; ".join(parts)


class StrictConfig(BaseModel):
    """Base of validated configs: unknown keys and wrong types are errors naming the key."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())

    @classmethod
    def parse(cls, config: Mapping[str, Any] | BaseModel):
        """Validate ``config`` (a mapping or an instance); :class:`ConfigError` if it is bad."""
        if isinstance(config, cls):
            return config
        if isinstance(config, BaseModel):
            config = config.model_dump()
        try:
            return cls.model_validate(dict(config))
        except ValidationError as e:
            raise ConfigError(_format_validation(e, cls.__name__)) from None


def parse_iterations(v: Any) -> Any:
    """``"512,1024"`` (as the CLI and YAML give it) -> ``(512, 1024)``; other values as they
    are, for pydantic to validate."""
    if isinstance(v, str):
        try:
            return tuple(int(x) for x in v.split(",") if x.strip())
        except ValueError:
            raise ValueError(f"expected comma-separated iteration counts, got {v!r}") from None
    return v


def checked_eval_at(eval_at: tuple[int, ...], iterations: int) -> tuple[int, ...]:
    """``eval_at`` sorted, without repeats; a point outside ``1..iterations`` is a
    ValueError."""
    bad = [i for i in eval_at if not 1 <= i <= iterations]
    if bad:
        raise ValueError(f"eval_at {bad[0]} is outside 1..iterations ({iterations})")
    return tuple(sorted(set(eval_at)))


def next_stop(iteration: int, iterations: int, per_step: int, eval_at: tuple[int, ...]) -> int:
    """Where a step that starts at ``iteration`` stops: ``per_step`` iterations on, but no
    later than the end of the run or the next point of ``eval_at`` (sorted, as
    :func:`checked_eval_at` returns it)."""
    later = [e for e in eval_at if e > iteration]
    return min([iteration + per_step, iterations, *later[:1]])


def resolve_trial_path(path: str) -> Path:
    """Relative paths are the driver's: Ray Tune runs a trial in its own directory and keeps
    the original one in ``TUNE_ORIG_WORKING_DIR``."""
    p = Path(path)
    if not p.is_absolute() and not p.exists() and "TUNE_ORIG_WORKING_DIR" in os.environ:
        p = Path(os.environ["TUNE_ORIG_WORKING_DIR"]) / p
    return p


# -- devices -------------------------------------------------------------------------------


def resolve_device(name: str | torch.device | None = None, *, gpus: float | None = None
                   ) -> torch.device:
    """The one rule for where a job runs.

    ``name`` ``None`` or ``"auto"``: CUDA when it is available, else the CPU; with ``gpus``
    (a Ray Tune trial's GPU allocation) CUDA only when the trial holds a GPU, and a trial that
    holds one while CUDA does not work runs on the CPU with a warning. A named device (``cpu``,
    ``cuda``, ``cuda:N``) is taken as asked; one that cannot run here (no CUDA, no such GPU,
    not a device name) is a :class:`ConfigError`.
    """
    import torch

    if name is None or str(name) == "auto":
        cuda = torch.cuda.is_available()
        if gpus is None:
            return torch.device("cuda" if cuda else "cpu")
        if gpus > 0 and not cuda:
            log.warning("trial holds %s GPU but CUDA is not available: using the CPU", gpus)
        return torch.device("cuda" if gpus > 0 and cuda else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise ConfigError(f"unknown device {str(name)!r} (cpu, cuda, cuda:N or auto)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {str(device)!r} requested but CUDA is not available")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(
                f"device {str(device)!r} requested but only {torch.cuda.device_count()} "
                "CUDA device(s) exist"
            )
    return device


# -- checkpoints ---------------------------------------------------------------------------


class CheckpointError(DataError):
    """A file that is not a checkpoint of the expected kind: missing, empty, corrupt, not a
    ``torch.save`` file, holding pickled objects, or another job's checkpoint. A
    :class:`~data_prep.errors.DataError`, so a CLI reports it as ``error: FILE: message``."""


@dataclass
class Checkpoint:
    """A self-describing checkpoint: ``format`` (which job wrote it, e.g.
    ``kitchen-study.lstm/1``), ``meta`` (JSON-able: at least ``config`` and ``iteration``,
    plus the job's label spaces and whatever it needs to resume) and ``state`` (tensors and
    plain numbers: weights, optimiser, RNG)."""

    format: str
    meta: dict[str, Any]
    state: dict[str, Any]
    path: Path | None = None

    @property
    def iteration(self) -> int:
        return int(self.meta["iteration"])

    def where(self) -> str:
        return f"checkpoint {self.path}" if self.path is not None else "checkpoint"


#: keys every checkpoint's ``meta`` holds
_META_KEYS = ("config", "iteration")


def write_checkpoint(path: str | Path, checkpoint: Checkpoint) -> Path:
    """Write ``checkpoint`` atomically (temporary file, then rename) as one ``torch.save``
    dict: ``format``, ``meta`` (a JSON string) and the ``state`` entries beside them."""
    import torch

    from data_prep.atomic import atomic_output

    clash = {"format", "meta", _CHECKSUM} & set(checkpoint.state)
    missing = [k for k in _META_KEYS if k not in checkpoint.meta]
    if clash or missing:
        raise ValueError(f"bad checkpoint: state keys {sorted(clash)}, meta lacks {missing}")
    meta = json.dumps(checkpoint.meta)
    payload = {"format": checkpoint.format, "meta": meta, **checkpoint.state,
               _CHECKSUM: _state_checksum(checkpoint.format, meta, checkpoint.state)}
    path = Path(path)
    with atomic_output(path) as tmp:
        torch.save(payload, tmp)
    return path


def load_tensors(path: str | Path, what: str = "checkpoint") -> Any:
    """``torch.load(path, weights_only=True)`` onto the CPU: tensors and plain data only,
    never arbitrary unpickling. A missing, empty or unloadable file is a
    :class:`CheckpointError` in one line (not torch's advice to load it unsafely)."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no such {what} file", path)
    if path.stat().st_size == 0:
        raise CheckpointError(f"not a loadable {what} (empty file)", path)
    if not zipfile.is_zipfile(path):  # torch.save has written zip archives since torch 1.6
        raise CheckpointError(f"not a loadable {what} (not a torch.save file)", path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        reason = "it holds pickled objects, not only tensors and plain data"
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as e:
        lines = str(e).strip().splitlines()
        reason = lines[0] if lines else type(e).__name__
    raise CheckpointError(f"not a loadable {what} ({reason})", path)


def read_checkpoint(path: str | Path, format: str, legacy: tuple[str, ...] = ()
                    ) -> Checkpoint:
    """Read a checkpoint that :func:`write_checkpoint` wrote with this ``format`` tag (or one of
    the ``legacy`` tags the job still reads); any other file (see :func:`load_tensors`),
    another tag or broken metadata is a :class:`CheckpointError` naming the file."""
    path = Path(path)
    payload = load_tensors(path)
    theirs = payload.get("format") if isinstance(payload, dict) else None
    if not isinstance(theirs, str) or not isinstance(payload.get("meta"), str):
        raise CheckpointError(f"not a kitchen-study checkpoint (expected format {format})", path)
    if theirs != format and theirs not in legacy:
        raise CheckpointError(f"a {theirs} checkpoint, not the {format} this job reads", path)
    try:
        meta = json.loads(payload.pop("meta"))
    except ValueError:
        meta = None
    if not isinstance(meta, dict) or any(k not in meta for k in _META_KEYS):
        raise CheckpointError(f"broken {format} checkpoint metadata", path)
    payload.pop("format")
    _check_state(path, theirs, meta, payload)
    return Checkpoint(format=theirs, meta=meta, state=payload, path=path)


#: the payload key of the checksum over format, meta and state (:func:`_state_checksum`)
_CHECKSUM = "checksum"


def _state_checksum(format: str, meta: str, state: Any) -> str:
    """sha256 over the format tag, the meta JSON and every state entry in a fixed order
    (tensors by dtype, shape and raw bytes; plain data by ``repr``). Over the values, not
    the file: ``torch.save``'s zip layout may change between torch versions."""
    import numpy as np
    import torch

    h = hashlib.sha256(b"kitchen-study checkpoint v1\0")
    h.update(format.encode() + b"\0" + meta.encode() + b"\0")

    def feed(x: Any) -> None:
        if isinstance(x, torch.Tensor):
            t = x.detach().cpu().contiguous()
            h.update(f"T{t.dtype}{tuple(t.shape)}\0".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(x, np.ndarray):  # repr would elide the middle of a large one
            h.update(f"N{x.dtype.str}{x.shape}\0".encode())
            h.update(np.ascontiguousarray(x).tobytes())
        elif isinstance(x, dict):
            h.update(b"D%d\0" % len(x))
            for k in sorted(x, key=repr):
                h.update(repr(k).encode() + b"\0")
                feed(x[k])
        elif isinstance(x, list | tuple):
            h.update(b"L%d\0" % len(x))
            for v in x:
                feed(v)
        else:
            h.update(repr(x).encode() + b"\0")

    feed({k: v for k, v in state.items() if k != _CHECKSUM})
    return h.hexdigest()


def _check_state(path: Path, format: str, meta: dict[str, Any], state: dict[str, Any]
                 ) -> None:
    """The loaded state against its checksum (a checkpoint written before checkpoints
    carried one has none: still read, for runs reused from earlier versions), and every
    floating tensor finite: NaN or inf in weights or optimiser state would only resume a
    diverged run, silently. Either is a :class:`CheckpointError` naming the file."""
    import torch

    stored = state.pop(_CHECKSUM, None)
    if stored is not None and stored != _state_checksum(
            format, json.dumps(meta), state):
        raise CheckpointError("damaged checkpoint: its contents do not match the checksum "
                              "written with it", path)

    def walk(x: Any, where: str) -> None:
        if isinstance(x, torch.Tensor):
            if x.is_floating_point() and not bool(torch.isfinite(x).all()):
                raise CheckpointError(f"non-finite values (NaN or inf) in {where}", path)
        elif isinstance(x, dict):
            for k, v in x.items():
                walk(v, f"{where}.{k}")
        elif isinstance(x, list | tuple):
            for i, v in enumerate(x):
                walk(v, f"{where}[{i}]")

    for k, v in state.items():
        walk(v, k)
