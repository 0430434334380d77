"""What the job commands (``kitchen-study train``, ``kitchen-study cnn …``) share: how an
argument becomes a split key or a config value, how bad input is reported, how a finished
job's result is printed.

Rules: bad input prints one line ``error: <message>`` on stderr and exits 2 (no traceback);
``--set KEY=VALUE`` parses VALUE as JSON when it is JSON (``true``, ``8``, ``[1, 2]``) and
keeps it as a string otherwise, and an item without ``=`` is a
:class:`~trainables.job.ConfigError`; a split argument of digits is a split number, anything
else a split name. Imports typer and json only, so ``kitchen-study --help`` stays instant.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NoReturn

import typer

__all__ = ["apply_settings", "fail", "final_result", "fmt_num", "split_key"]


def split_key(value: str) -> int | str:
    """A split argument: digits are the split's number, anything else its name."""
    return int(value) if value.isdigit() else value


def fail(message: str) -> NoReturn:
    """Report bad input the one way: ``error: <message>`` on stderr, exit status 2."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def fmt_num(x: Any) -> str:
    """A metric for a human summary: four significant digits, ``n/a`` for None."""
    return "n/a" if x is None else f"{x:.4g}"


def apply_settings(config: dict[str, Any], settings: list[str]) -> None:
    """Put ``--set KEY=VALUE`` items into ``config`` (see the module rules)."""
    from .job import ConfigError

    for item in settings:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            config[key.strip()] = json.loads(value)
        except ValueError:
            config[key.strip()] = value


def final_result(result: dict[str, Any], save: Path | None, **extra: Any) -> dict[str, Any]:
    """A finished job's result as the command prints it: the run's final result without the
    per-step ``done`` and ``iteration``, then ``extra``, then ``checkpoint`` (the ``--save``
    path) when one was written."""
    result.pop("done", None)
    result.pop("iteration", None)
    result.update(extra)
    if save is not None:
        result["checkpoint"] = str(save)
    return result
