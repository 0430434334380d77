"""What every training job shares (LSTM and CNN alike), importable without torch or Ray.

- :class:`StrictConfig`: the base of validated configs: unknown keys and wrong types are
  :class:`ConfigError` naming the key.
- :func:`parse_iterations`: ``"512,1024"`` as the CLI and YAML write iteration lists.
- :func:`resolve_trial_path`: a driver-relative path seen from inside a Ray Tune trial.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

__all__ = [
    "CheckpointMismatch",
    "ConfigError",
    "StrictConfig",
    "parse_iterations",
    "resolve_trial_path",
]


class ConfigError(ValueError):
    """A training config that cannot run: unknown key, bad value, inconsistent options."""


class CheckpointMismatch(ValueError):
    """A checkpoint that does not fit the run: other label space, arrangement or model shape."""


def _format_validation(e: ValidationError, what: str) -> str:
    parts = []
    for err in e.errors():
        key = ".".join(str(x) for x in err["loc"]) or what
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


def resolve_trial_path(path: str) -> Path:
    """Relative paths are the driver's: Ray Tune runs a trial in its own directory and keeps
    the original one in ``TUNE_ORIG_WORKING_DIR``."""
    p = Path(path)
    if not p.is_absolute() and not p.exists() and "TUNE_ORIG_WORKING_DIR" in os.environ:
        p = Path(os.environ["TUNE_ORIG_WORKING_DIR"]) / p
    return p
