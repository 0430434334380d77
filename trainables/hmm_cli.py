"""``kitchen-study hmm TABLE --split N``: what temporal context can give without training.

Decodes a table's class scores with an HMM and a hidden semi-Markov model whose statistics
come from the split's training labels (:mod:`trainables.hmm_reference`) and prints the
MS-TCN metrics of each decoder beside the input's argmax::

    kitchen-study hmm data/breakfast_sim.parquet --split 1
    kitchen-study hmm data/breakfast_sim.parquet --split 1 --json --no-hsmm-causal

Bad input (no such file, no class-score features, an unknown split) prints ``error: ...``
and exits 2 (the command is mounted through ``data_prep.commands.reports_data_errors``).
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from .job_cli import fail

__all__ = ["command"]


def command(
    table: Path = typer.Argument(..., help="Frame table (.parquet) with class-score features."),
    split: str = typer.Option("1", "--split", help="Split: number or name."),
    quantile: float = typer.Option(
        0.99, "--quantile", help="HSMM duration cap: this quantile of training segment lengths."
    ),
    prior_weight: float | None = typer.Option(
        None,
        "--prior-weight",
        help="Divide the scores by the training class prior to this power (1: hybrid scaled "
        "likelihoods, 0: posteriors). Default: chosen on training videos.",
    ),
    hsmm_causal: bool = typer.Option(
        True, "--hsmm-causal/--no-hsmm-causal", help="Also run the (slowest) causal HSMM."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """HMM / hidden semi-Markov reference: the split's test videos decoded with label
    statistics from its training videos (no training), against the input's argmax."""
    from data_prep.table import read_table

    from .hmm_reference import DECODERS, reference

    if not 0 < quantile <= 1:
        fail(f"--quantile must be in (0, 1], got {quantile}")
    decoders = [d for d in DECODERS if hsmm_causal or d != "hsmm_causal"]
    result = reference(read_table(table), split, quantile=quantile, prior_weight=prior_weight,
                       decoders=decoders, source=table)
    if json_out:
        typer.echo(json.dumps(result))
        return
    m = result["model"]
    typer.echo(f"{result['dataset']} {result['split']}: {result['test_videos']} test videos, "
               f"{result['test_frames']:,} frames; statistics from {m['segments']:,} training "
               f"segments (mean {m['mean_segment']:.0f} frames), HSMM cap "
               f"{m['max_duration']} frames (quantile {m['quantile']:g}), prior weight "
               f"{result['prior_weight']:g}")
    names = list(next(iter(result["metrics"].values())))
    typer.echo(f"{'decoder':<14}" + "".join(f"{n:>10}" for n in names) + f"{'seconds':>10}")
    for d, row in result["metrics"].items():
        typer.echo(f"{d:<14}" + "".join(f"{row[n]:>10.2f}" for n in names)
                   + f"{result['seconds'][d]:>10.1f}")
