"""``kitchen-study prepare | simulate | synth | info``: the data commands."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from .commands import reports_data_errors
from .converters import CONVERTERS
from .table import read_table, summarize

__all__ = ["info", "prepare_app"]

prepare_app = typer.Typer(
    help="Convert a dataset's annotation files into a canonical Parquet frame table.",
    no_args_is_help=True,
)
for _name, _conv in CONVERTERS.items():
    prepare_app.command(_name, help=(_conv.__doc__ or "").strip().split("\n\n")[0])(
        reports_data_errors(_conv.command)
    )


@reports_data_errors
def info(
    path: Path = typer.Argument(..., help="A prepared frame table (.parquet)."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Summarise a prepared dataset: videos, frames, classes, participants, splits."""
    s = summarize(read_table(path, features=False))
    if json_out:
        typer.echo(json.dumps(s))
        return
    typer.echo(f"{s['name']} ({path})")
    typer.echo(f"  videos        {s['videos']}")
    typer.echo(f"  frames        {s['frames']:,}")
    typer.echo(f"  classes       {s['classes']} (background {s['background']!r})")
    typer.echo(f"  participants  {s['participants']}")
    typer.echo(f"  fps           {s['fps']}")
    typer.echo(f"  feature dim   {s['feature_dim']}")
    for sp in s["splits"]:
        typer.echo(f"  {sp['name']:<13} train {sp['train']:>4}  test {sp['test']:>4}")
