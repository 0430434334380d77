"""``kitchen-study run | resume | status | best | report | demo``: the study commands.

Every command takes a study spec (YAML). Bad specs and missing studies are errors printed
as ``error: ...`` with exit status 2 (no traceback). ``run``/``resume`` exit 0 when the
study finished, 1 when some task failed, 130 when interrupted. Heavy imports (Ray, torch,
MLflow, pandas) happen inside the commands, so ``kitchen-study --help`` stays instant.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import typer

from data_prep.errors import DataError
from trainables.metrics import METRIC_NAMES

__all__ = ["best", "demo", "register", "report", "resume", "run", "status"]

_SPEC = typer.Argument(..., help="Study spec (YAML), e.g. studies/demo.yaml.")
_ADDRESS = typer.Option(
    None, "--address", help="Ray address (default: the spec's ray_address, $RAY_ADDRESS, or a "
    "local Ray).")
_TRACKING = typer.Option(
    None, "--tracking-uri", help="MLflow tracking URI (default: the spec's tracking_uri).")
_CPUS = typer.Option(None, "--num-cpus", help="CPUs of a local Ray this command starts.")
_VERBOSE = typer.Option(False, "--verbose", help="Ray Tune's own progress tables and logs.")

_EXIT = {"FINISHED": 0, "FAILED": 1, "KILLED": 130}


def _open(spec: Path):
    from .spec import open_study

    return open_study(spec)


def _not_found(e: Exception) -> DataError:
    return DataError(str(e))


def _print_plan(loaded: Any, tracking_uri: str | None) -> None:
    from .plan import make_plan
    from .runner import preflight
    from .status import study_status

    plan = make_plan(loaded.spec)
    preflight(plan, loaded.spec.source)
    status = {r["id"]: r["status"] for r in study_status(loaded, tracking_uri)}
    done = sum(1 for s in status.values() if s == "FINISHED")
    typer.echo(f"study {loaded.spec.name} (hash {loaded.short_hash}): {len(plan)} tasks")
    for t in plan:
        deps = f"  <- {', '.join(t.deps)}" if t.deps else ""
        trials = f" x{t.trials}" if t.trials > 1 else ""
        mark = "done" if status.get(t.id) == "FINISHED" else "    "
        typer.echo(f"  {mark} {t.kind:<9} {t.id}{trials}  [{t.config.iterations} it]{deps}")
    counts = ", ".join(f"{n} {k}" for k, n in plan.counts().items())
    typer.echo(f"{counts}")
    left = plan.trial_count - _done_trials(plan, status)
    typer.echo(f"estimated trials: {plan.trial_count} ({left} still to run; {done} task(s) "
               f"already finished); training iterations <= {plan.training_iterations():,}")


def _done_trials(plan: Any, status: dict[str, str]) -> int:
    return sum(t.trials for t in plan if status.get(t.id) == "FINISHED")


def _run(spec: Path, address: str | None, tracking_uri: str | None, num_cpus: int | None,
         verbose: bool, resume: bool) -> None:
    from .mlflow_layout import StudyNotFound
    from .runner import run_study

    loaded = _open(spec)
    try:
        out = run_study(loaded, address=address, tracking_uri=tracking_uri, resume=resume,
                        num_cpus=num_cpus, verbose=verbose)
    except StudyNotFound as e:
        raise _not_found(e) from None
    if out.failed or out.not_run:
        for tid, why in {**out.failed, **out.not_run}.items():
            typer.echo(f"  not done: {tid}: {why.splitlines()[0]}", err=True)
    raise typer.Exit(_EXIT.get(out.status, 1))


def run(
    spec: Path = _SPEC,
    address: str | None = _ADDRESS,
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Print the plan (tasks, dependencies, trial count) and exit."),
    tracking_uri: str | None = _TRACKING,
    num_cpus: int | None = _CPUS,
    verbose: bool = _VERBOSE,
) -> None:
    """Run a study on Ray: tasks already finished (same spec hash) are skipped."""
    if dry_run:
        _print_plan(_open(spec), tracking_uri)
        return
    _run(spec, address, tracking_uri, num_cpus, verbose, resume=False)


def resume(
    spec: Path = _SPEC,
    address: str | None = _ADDRESS,
    tracking_uri: str | None = _TRACKING,
    num_cpus: int | None = _CPUS,
    verbose: bool = _VERBOSE,
) -> None:
    """Finish a study after a crash or Ctrl-C without redoing its finished tasks."""
    _run(spec, address, tracking_uri, num_cpus, verbose, resume=True)


def status(
    spec: Path = _SPEC,
    tracking_uri: str | None = _TRACKING,
    json_out: bool = typer.Option(False, "--json", help="One JSON object per task, as a list."),
) -> None:
    """Per-task state of a study (from MLflow; no Ray needed)."""
    from .status import study_status

    loaded = _open(spec)
    rows = study_status(loaded, tracking_uri)
    if json_out:
        typer.echo(json.dumps(rows, indent=1))
        return
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    typer.echo(f"study {loaded.spec.name} (hash {loaded.short_hash}): "
               + ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items())))
    for r in rows:
        acc = "" if r["frame_acc"] is None else f"{r['frame_acc']:6.2f}"
        typer.echo(f"  {r['status']:<9} {acc:>6}  {r['id']}")
        if r["error"] and r["status"] != "FINISHED":
            typer.echo(f"            {r['error'].splitlines()[0]}")


def _load_results(spec: Path, tracking_uri: str | None):
    from .mlflow_layout import StudyNotFound
    from .query import load_study

    _open(spec)  # spec errors first, with their key paths
    try:
        return load_study(spec, tracking_uri)
    except StudyNotFound as e:
        raise _not_found(e) from None


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "-" if math.isnan(v) else f"{v:.3g}" if abs(v) < 0.01 and v else f"{v:.2f}"
    return str(v)


def best(
    spec: Path = _SPEC,
    target: str | None = typer.Option(None, "--target", help="Only pairs into this dataset."),
    metric: str = typer.Option("frame_acc", "--metric", help=", ".join(METRIC_NAMES) + "."),
    k: int = typer.Option(10, "--k", help="How many pairs."),
    tracking_uri: str | None = _TRACKING,
    json_out: bool = typer.Option(False, "--json", help="A JSON list of pairs."),
) -> None:
    """The best transfer pairs: mean gain over the no-transfer baseline, 95 % CI, p-value."""
    table = _load_results(spec, tracking_uri).best_transfer_pairs(target=target, metric=metric,
                                                                 k=k)
    if json_out:
        typer.echo(table.to_json(orient="records"))
        return
    typer.echo(_best_text(table, metric))


def _best_text(table: Any, metric: str) -> str:
    if table.empty:
        return "no transfer run has a matching baseline yet"
    cols = ["source", "target", "mode", "arrangement", "mean", "baseline", "gain", "ci_low",
            "ci_high", "p_value", "n_seeds"]
    cols = [c for c in cols if c in table.columns]
    rows = [[_fmt(r[c]) for c in cols] for _, r in table.iterrows()]
    widths = [max(len(c), *(len(row[i]) for row in rows)) for i, c in enumerate(cols)]
    line = "  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))
    body = ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in rows]
    return f"best transfer pairs by {metric} gain (percentage points):\n" + "\n".join(
        [line, *body])


def report(
    spec: Path = _SPEC,
    out: Path = typer.Option(..., "--out", help="Directory for report.md and the figures."),
    tracking_uri: str | None = _TRACKING,
) -> None:
    """Markdown tables in the paper's layout plus PNG figures."""
    from .report import write_report

    path = write_report(_load_results(spec, tracking_uri), out)
    typer.echo(f"wrote {path}")


def _demo_spec_source() -> Path:
    p = Path(__file__).resolve().parents[1] / "studies" / "demo.yaml"
    if not p.is_file():
        raise DataError("the demo spec studies/demo.yaml is not beside this installation "
                        "(run the demo from a source checkout)", p)
    return p


def demo(
    work: Path = typer.Option(Path("demo_out"), "--work", help="Work folder (data, spec, report)."),
    address: str | None = _ADDRESS,
    num_cpus: int | None = _CPUS,
    verbose: bool = _VERBOSE,
) -> None:
    """Synthetic kitchens -> studies/demo.yaml on a local Ray -> best transfer pairs."""
    import yaml

    from data_prep.synth import command as synth

    data = work / "data"
    source = _demo_spec_source()
    spec = yaml.safe_load(source.read_text())
    names = list(spec["datasets"])
    if all((data / f"{n}.parquet").is_file() for n in names):
        typer.echo(f"synthetic kitchens: {data} (already there)")
    else:
        typer.echo(f"kitchen-study synth --out {data} --kitchens {len(names)}")
        synth(out=data, seed=0, videos=40, kitchens=len(names), participants=8, accuracy=None,
              correlation_s=0.5)
    for n in names:
        spec["datasets"][n]["path"] = (Path("data") / f"{n}.parquet").as_posix()
    spec_path = work / "demo.yaml"
    spec_path.write_text(
        f"# written by `kitchen-study demo` from {source}, with paths into {data}\n"
        + yaml.safe_dump(spec, sort_keys=False))
    typer.echo(f"study spec: {spec_path}")
    from .runner import run_study

    loaded = _open(spec_path)
    outcome = run_study(loaded, address=address, num_cpus=num_cpus, verbose=verbose)
    results = _load_results(spec_path, None)
    typer.echo("")
    typer.echo(_best_text(results.best_transfer_pairs(k=10), "frame_acc"))
    from .report import write_report

    rep = write_report(results, work / "report")
    uri = loaded.spec.tracking_uri
    typer.echo("")
    typer.echo(f"report:        {rep}")
    typer.echo(f"MLflow UI:     mlflow ui --backend-store-uri {uri}")
    typer.echo(f"from Python:   from study import load_study; load_study({str(spec_path)!r})")
    typer.echo(f"again/resume:  kitchen-study status {spec_path}")
    if outcome.status != "FINISHED":
        raise typer.Exit(_EXIT.get(outcome.status, 1))


def register(app: typer.Typer) -> None:
    """Mount the study commands on the ``kitchen-study`` app."""
    from data_prep.commands import reports_data_errors

    for fn in (run, resume, status, best, report, demo):
        app.command(fn.__name__)(reports_data_errors(fn))

