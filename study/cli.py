"""The ``kitchen-study`` console script: one typer app that mounts each package's commands.

Heavy imports (torch, ray, mlflow) happen inside the commands, so ``--help`` is instant.
"""

from __future__ import annotations

import sys

import typer

from data_prep.cli import info, prepare_app
from data_prep.errors import DataError

__all__ = ["app", "main"]

app = typer.Typer(
    help="Cross-dataset training studies of frame-wise action recognition (Perrett & Damen).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(prepare_app, name="prepare")
app.command("info")(info)
from trainables.cnn_cli import cnn_app  # noqa: E402 - light: torch loads inside its commands

app.add_typer(cnn_app, name="cnn")


def _mount_optional() -> None:
    """Mount the commands of modules that exist (simulate, synth, train, study commands)."""
    import importlib

    for module, names in (
        ("data_prep.simulate", ("simulate",)),
        ("data_prep.synth", ("synth",)),
        ("trainables.cli", ("train",)),
    ):
        mod = importlib.import_module(module)
        for name in names:
            app.command(name)(getattr(mod, "command"))


_mount_optional()

from study.commands import register as _register_study  # noqa: E402 - Ray loads inside them

_register_study(app)


def main() -> None:
    try:
        app()
    except DataError as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(2)
