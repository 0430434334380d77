"""The ``kitchen-study`` console script: one typer app that mounts each package's commands.

Heavy imports (torch, ray, mlflow) happen inside the commands, so ``--help`` is instant.
Every command reports bad input the same way: ``error: FILE:LINE: message``, exit status 2.
"""

from __future__ import annotations

import sys

import typer

from data_prep import simulate, synth
from data_prep.cli import info, prepare_app
from data_prep.commands import reports_data_errors
from data_prep.errors import DataError
from study.commands import register as register_study_commands
from trainables import train_cli as train_cli
from trainables.cnn_cli import cnn_app
from trainables.hmm_cli import command as hmm_command

__all__ = ["app", "main"]

app = typer.Typer(
    help="Cross-dataset training studies of frame-wise action recognition (Perrett & Damen).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(prepare_app, name="prepare")
app.add_typer(cnn_app, name="cnn")
app.command("info")(info)
for _name, _command in (
    ("simulate", simulate.command),
    ("synth", synth.command),
    ("train", train_cli.command),
    ("hmm", hmm_command),
):
    app.command(_name)(reports_data_errors(_command))
register_study_commands(app)


def main() -> None:
    try:
        app()
    except DataError as e:  # commands mounted elsewhere than above
        typer.echo(f"error: {e}", err=True)
        sys.exit(2)
