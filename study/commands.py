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
from study.mlflow_layout import metric_key
from trainables.metrics import METRIC_NAMES

__all__ = ["best", "demo", "register", "report", "resume", "run", "status"]

_SPEC = typer.Argument(..., help="Study spec (YAML), e.g. studies/demo.yaml.")
_ADDRESS = typer.Option(
    None, "--address", help="Ray address (default: the spec's ray_address, $RAY_ADDRESS, or a "
    "local Ray).")
# the tracking URI rule (study.uri): --tracking-uri > $MLFLOW_TRACKING_URI (typer reads it
# into this option) > the spec's tracking_uri > sqlite:///mlflow.db
_TRACKING = typer.Option(
    None, "--tracking-uri", envvar="MLFLOW_TRACKING_URI",
    help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else the spec's tracking_uri, "
    "else sqlite:///mlflow.db).")
_DATA_ROOT = typer.Option(
    None, "--data-root", envvar="KITCHEN_DATA_ROOT",
    help="Folder that relative dataset paths in the spec are relative to (default: the "
    "spec's folder). Needed under `ray job submit --working-dir`, which does not upload "
    "git-ignored data.")
_CPUS = typer.Option(None, "--num-cpus", help="CPUs of a local Ray this command starts.")
_VERBOSE = typer.Option(False, "--verbose", help="Ray Tune's own progress tables and logs.")

_EXIT = {"FINISHED": 0, "FAILED": 1, "KILLED": 130}


def _open(spec: Path, data_root: Path | None = None):
    import os

    from .uri import DATA_ROOT_ENV, open_study_at

    if data_root is not None:  # and for load_study / status later in this command
        os.environ[DATA_ROOT_ENV] = str(Path(data_root).expanduser().resolve())
    return open_study_at(spec)


def _check_cpus(num_cpus: int | None) -> None:
    """``--num-cpus``: a local Ray with no CPU can schedule no trial (it would wait forever)."""
    if num_cpus is not None and not 1 <= num_cpus <= 1_000_000:
        raise DataError(f"must be at least 1 (a Ray without CPUs runs no trial), got "
                        f"{num_cpus}" if num_cpus < 1 else f"{num_cpus:,} is not a CPU count",
                        "--num-cpus")


def _check_store(loaded: Any, tracking_uri: str | None) -> None:
    """A bad tracking URI (unknown scheme, symlink loop, missing folder, another program's
    SQLite file, a server refusing our credentials: ``study.store_checks``), a corrupt
    SQLite store or a silent tracking server: one line, before any read or write."""
    from .lease import check_store
    from .store_checks import check_tracking_uri
    from .uri import resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri, loaded.spec.tracking_uri)
    check_tracking_uri(uri)
    check_store(uri)


def _check_search_storage(loaded: Any) -> None:
    from .store_checks import check_search_storage

    s = loaded.spec.search
    check_search_storage(s.storage if s is not None else None, source=loaded.spec.source)


def _not_found(e: Exception) -> DataError:
    return DataError(str(e))


def _print_plan(loaded: Any, tracking_uri: str | None, num_cpus: int | None = None) -> None:
    from .plan import make_plan
    from .runner import preflight
    from .status import study_status

    plan = make_plan(loaded.spec, loaded.cards)
    preflight(plan, loaded.spec.source)
    _check_store(loaded, tracking_uri)
    _check_search_storage(loaded)
    status = {r["id"]: r["status"] for r in study_status(loaded, tracking_uri)}
    reuse = _reusable(loaded, plan, status, tracking_uri)
    done = sum(1 for s in status.values() if s == "FINISHED")
    typer.echo(f"study {loaded.spec.name} (hash {loaded.short_hash}): {len(plan)} tasks")
    from .budget import NOT_TRAINED, dry_run_lines

    cond = plan.budget.conditional if plan.budget is not None else frozenset()
    for t in plan:
        deps = f"  <- {', '.join(t.deps)}" if t.deps else ""
        trials = f" x{t.trials}" if t.trials > 1 else ""
        mark = ("done" if status.get(t.id) == "FINISHED" else "reuse" if t.id in reuse
                else "skip" if status.get(t.id) == NOT_TRAINED  # budget decided against it
                else "?" if t.id in cond else "    ")  # ?: conditional on the budget
        its = "estimate" if t.kind == "estimate" else f"{t.config.iterations} it"
        typer.echo(f"  {mark:<5} {t.kind:<9} {t.id}{trials}  [{its}]{deps}")
    counts = ", ".join(f"{n} {k}" for k, n in plan.counts().items())
    typer.echo(f"{counts}")
    for line in dry_run_lines(plan):
        typer.echo(line)
    left = plan.trial_count - _done_trials(plan, status) - sum(plan[t].trials for t in reuse)
    left -= sum(1 for s in status.values() if s == NOT_TRAINED)
    typer.echo(f"estimated trials: {plan.trial_count} ({left} still to run; {done} task(s) "
               f"already finished, {len(reuse)} reused from earlier versions); training "
               f"iterations <= {plan.training_iterations():,}")
    from .walltime import estimate_lines  # an estimate, printed as one (study.walltime)

    finished = {t for t, s in status.items() if s in ("FINISHED", NOT_TRAINED)}
    estimates = {t.id for t in plan.of_kind("estimate")}  # they train nothing
    for line in estimate_lines(loaded, plan, finished | set(reuse) | estimates, num_cpus):
        typer.echo(line)


def _reusable(loaded: Any, plan: Any, status: dict[str, str], tracking_uri: str | None
              ) -> dict[str, Any]:
    """Tasks not finished in this version that an earlier one finished (``study.reuse``)."""
    from .reuse import finished_by_key, reusable
    from .tracking import MlflowRunLogger

    done = {t: "" for t, s in status.items() if s == "FINISHED"}
    logger = MlflowRunLogger(tracking_uri or loaded.spec.tracking_uri)
    return reusable(plan, finished_by_key(logger, loaded.spec.name), done)


def _done_trials(plan: Any, status: dict[str, str]) -> int:
    return sum(t.trials for t in plan if status.get(t.id) == "FINISHED")


def _run(spec: Path, address: str | None, tracking_uri: str | None, num_cpus: int | None,
         verbose: bool, resume: bool, data_root: Path | None = None) -> None:
    from .mlflow_layout import StudyNotFound
    from .plan import make_plan
    from .runner import run_study

    _check_cpus(num_cpus)
    loaded = _open(spec, data_root)
    _check_store(loaded, tracking_uri)
    _check_search_storage(loaded)
    try:
        out = run_study(loaded, address=address, tracking_uri=tracking_uri, resume=resume,
                        num_cpus=num_cpus, verbose=verbose)
    except StudyNotFound as e:
        raise _not_found(e) from None
    if out.failed or out.not_run:
        for tid, why in {**out.failed, **out.not_run}.items():
            typer.echo(f"  not done: {tid}: {why.splitlines()[0]}", err=True)
    if any(t.kind == "search" for t in make_plan(loaded.spec, loaded.cards)):
        _print_searches(spec, tracking_uri)
    raise typer.Exit(_EXIT.get(out.status, 1))


def run(
    spec: Path = _SPEC,
    address: str | None = _ADDRESS,
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Print the plan (tasks, dependencies, trial count) and exit."),
    tracking_uri: str | None = _TRACKING,
    num_cpus: int | None = _CPUS,
    verbose: bool = _VERBOSE,
    data_root: Path | None = _DATA_ROOT,
) -> None:
    """Run a study on Ray: tasks already finished (same spec hash) are skipped."""
    if dry_run:
        _check_cpus(num_cpus)
        _print_plan(_open(spec, data_root), tracking_uri, num_cpus)
        return
    _run(spec, address, tracking_uri, num_cpus, verbose, resume=False, data_root=data_root)


def resume(
    spec: Path = _SPEC,
    address: str | None = _ADDRESS,
    tracking_uri: str | None = _TRACKING,
    num_cpus: int | None = _CPUS,
    verbose: bool = _VERBOSE,
    data_root: Path | None = _DATA_ROOT,
) -> None:
    """Finish a study after a crash or Ctrl-C without redoing its finished tasks."""
    _run(spec, address, tracking_uri, num_cpus, verbose, resume=True, data_root=data_root)


def status(
    spec: Path = _SPEC,
    tracking_uri: str | None = _TRACKING,
    json_out: bool = typer.Option(False, "--json", help="One JSON object per task, as a list."),
    data_root: Path | None = _DATA_ROOT,
) -> None:
    """Per-task state of a study (from MLflow; no Ray needed)."""
    from .status import study_status, summary_text

    loaded = _open(spec, data_root)
    _check_store(loaded, tracking_uri)
    rows = study_status(loaded, tracking_uri)
    if json_out:
        typer.echo(json.dumps(rows, indent=1))
        return
    # the driver's last line counts with the same rule (study.status.summary_text)
    typer.echo(f"study {loaded.spec.name} (hash {loaded.short_hash}): {summary_text(rows)}")
    for r in rows:
        acc = "" if r["frame_acc"] is None else f"{r['frame_acc']:6.2f}"
        typer.echo(f"  {r['status']:<9} {acc:>6}  {r['id']}")
        if r["error"] and r["status"] != "FINISHED":
            typer.echo(f"            {r['error'].splitlines()[0]}")


def _load_results(spec: Path, tracking_uri: str | None, target: str | None = None):
    """The study's results; ``target`` (``--target``) must be one of its datasets."""
    from .mlflow_layout import StudyNotFound
    from .query import load_study

    loaded = _open(spec)  # spec errors first, with their key paths
    if target is not None and target not in loaded.spec.datasets:
        raise DataError(f"unknown dataset {target!r} (the study's datasets: "
                        f"{', '.join(loaded.spec.datasets)})", "--target")
    _check_store(loaded, tracking_uri)
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
    k: int = typer.Option(10, "--k", help="How many pairs (the best first); --all: every pair."),
    show_all: bool = typer.Option(False, "--all", help="Every pair (overrides --k)."),
    tracking_uri: str | None = _TRACKING,
    json_out: bool = typer.Option(False, "--json", help="A JSON list of pairs."),
    search: bool = typer.Option(
        False, "--search", help="Each Optuna search's best configuration and score instead."),
) -> None:
    """The best transfer pairs, ranked by the lower bound of the 95 % CI of the gain over the
    no-transfer baseline (mean, CI, p-value, seeds); ``--search``: the searches' best."""
    if search:
        summary = _load_results(spec, tracking_uri).search_summary()
        typer.echo(summary.to_json(orient="records") if json_out else _searches_text(summary))
        return
    if metric not in METRIC_NAMES and metric not in {metric_key(m) for m in METRIC_NAMES}:
        raise DataError(f"unknown metric {metric!r} (known: {', '.join(METRIC_NAMES)})",
                        "--metric")
    if k < 1:
        raise DataError(f"must be at least 1, got {k} (--all shows every pair)", "--k")
    results = _load_results(spec, tracking_uri, target)
    every = results.best_transfer_pairs(target=target, metric=metric, k=None)
    table = every if show_all else every.head(k).reset_index(drop=True)
    if json_out:
        typer.echo(table.to_json(orient="records"))
        return
    typer.echo(_best_text(table, metric, total=len(every)))
    if not table.empty:
        typer.echo(PROTOCOL_NOTE[results.protocol])


#: What the numbers of ``best`` (and the report) are, by the study's protocol.
PROTOCOL_NOTE = {
    "validation": "metrics: test videos, of each run's reported model (its best validation "
                  "iteration; every choice was made on the validation people)",
    "paper": "metrics: test videos at each run's last iteration (the paper's protocol: no "
             "validation part, any search or halving chose on test videos - optimistic)",
}


def _best_text(table: Any, metric: str, total: int | None = None) -> str:
    """The ``best`` table; ``total``: how many pairs there are (the header says how many
    are shown and how to see them all)."""
    if table.empty:
        return "no transfer run has a matching baseline yet"
    cols = ["source", "target", "mode", "arrangement", "mean", "baseline", "gain", "ci_low",
            "ci_high", "p_value", "n_seeds"]
    cols = [c for c in cols if c in table.columns]
    rows = [[_fmt(r[c]) for c in cols] for _, r in table.iterrows()]
    few = "few_seeds" in table.columns and bool(table["few_seeds"].any())
    if few:  # "!" after the seed count of a pair with fewer than 3 seeds
        for row, flag in zip(rows, table["few_seeds"], strict=True):
            row[-1] += " !" if flag else ""
    widths = [max(len(c), *(len(row[i]) for row in rows)) for i, c in enumerate(cols)]
    line = "  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))
    body = ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in rows]
    total = len(table) if total is None else total
    shown = (f"the {len(table)} best of {total} pairs (--k {total} or --all: every pair)"
             if len(table) < total else f"all {total} pair(s)")
    head = (f"best transfer pairs by {metric} gain (percentage points): {shown}, ranked by "
            "ci_low, the lower bound of the 95 % CI (pairs without one last):")
    foot = (["! fewer than 3 seeds: the interval is wide or absent; run more seeds before "
             "trusting the gain"] if few else [])
    foot += _rank_note(table)
    return head + "\n" + "\n".join([line, *body, *foot])


def _rank_note(table: Any) -> list[str]:
    """A line when the order is not the order of the mean gain: ranking by ci_low puts a
    pair whose gain the seeds support more firmly above one with a larger mean gain (a
    heatmap of mean gains has its darkest cell elsewhere)."""
    if len(table) < 2 or "gain" not in table.columns:
        return []
    gains = table["gain"].to_numpy(float)
    top = int(gains.argmax())
    if top == 0 or math.isnan(gains[top]):
        return []
    r = table.iloc[top]
    why = ("it has no interval (one seed)" if math.isnan(float(r["ci_low"]))
           else f"its interval reaches lower (ci_low {_fmt(r['ci_low'])})")
    return [f"ranked by ci_low, not the mean gain: the largest mean gain, {r['source']} -> "
            f"{r['target']} ({r['gain']:+.2f}), is row {top + 1} because {why}"]


def _searches_text(summary: Any) -> str:
    """Each search's Optuna study, trial counts, best score and configuration."""
    from .report import params_text, search_counts

    if summary.empty:
        return "no search in this study has run yet"
    out = []
    for r in summary.itertuples():
        out.append(f"search {r.task_id}: Optuna study {r.optuna_study!r}, {search_counts(r)}")
        if r.best_params is None:
            out.append("  no trial ran to the end: no best configuration")
            continue
        out.append(f"  best {r.metric} {r.best_value:.2f}: trial {r.best_number} "
                   f"(MLflow run {r.best_run_id})")
        out.append("  " + params_text(r.best_params, "  "))
    return "\n".join(out)


def _print_searches(spec: Path, tracking_uri: str | None) -> None:
    """The end of `run`: each search's best (a failure to read it is a line, not a crash:
    the study itself is stored)."""
    try:
        text = _searches_text(_load_results(spec, tracking_uri).search_summary())
    except Exception as e:
        text = f"(search results not read: {e})"
    typer.echo("")
    typer.echo(text)


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
    every = results.best_transfer_pairs(k=None)
    typer.echo(_best_text(every.head(10), "frame_acc", total=len(every)))
    typer.echo("")
    typer.echo(_searches_text(results.search_summary()))
    from .report import write_report

    rep = write_report(results, work / "report")
    from .uri import resolve_tracking_uri

    uri = resolve_tracking_uri(None, loaded.spec.tracking_uri)
    typer.echo("")
    typer.echo(f"report:        {rep}")
    typer.echo(f"MLflow UI:     mlflow ui --backend-store-uri {uri}")
    typer.echo(f"from Python:   from study import load_study; load_study({str(spec_path)!r})")
    typer.echo(f"progress:      kitchen-study status {spec_path}   (reads MLflow only)")
    typer.echo(f"finish/resume: kitchen-study resume {spec_path}   (skips finished tasks)")
    typer.echo(f"searches:      kitchen-study best {spec_path} --search")
    if outcome.status != "FINISHED":
        raise typer.Exit(_EXIT.get(outcome.status, 1))


def _best_model_run(results: Any, target: str, metric: str, spec: Path
                    ) -> tuple[str, str, dict[str, str]]:
    """(run id, description, tags of the registered version) of the model to register for
    ``target``: the first pair of ``best_transfer_pairs`` (the ranking ``best`` prints), and
    of its runs (one per seed) the one with the highest ``metric``."""
    pairs = results.best_transfer_pairs(target=target, metric=metric, k=1)
    if pairs.empty:
        raise DataError(f"no transfer run into {target!r} has a matching baseline yet "
                        "(see `kitchen-study best`)", spec)
    top = pairs.iloc[0]
    keys = ["source", "source_split", "target", "target_split", "mode", "arrangement"]
    g = results.gains(metric)
    for k in keys:
        g = g[g[k] == top[k]]
    row = g.sort_values(["value", "seed"], ascending=[False, True]).iloc[0]
    what = (f"{top['source']}→{top['target']} {top['mode']} {top['arrangement']} seed "
            f"{row['seed']} ({metric} {row['value']:.2f}, gain {row['gain']:+.2f})")
    ci = ("one seed: no interval" if math.isnan(float(top["ci_low"])) else
          f"95 % CI {float(top['ci_low']):+.2f} to {float(top['ci_high']):+.2f}")
    tags = {**{f"ks.{k}": str(top[k]) for k in keys}, "ks.seed": str(row["seed"]),
            "ks.study": results.name, "ks.study_hash": results.study_hash,
            "ks.run_id": str(row["run_id"]), "ks.metric": metric,
            f"ks.{metric}": f"{row['value']:.2f}", f"ks.gain.{metric}": f"{row['gain']:+.2f}",
            f"ks.pair_gain.{metric}": f"{float(top['gain']):+.2f}", "ks.pair_ci": ci,
            "ks.pair_seeds": str(int(top["n_seeds"]))}
    return str(row["run_id"]), what, tags


def register_best(
    spec: Path = _SPEC,
    target: str = typer.Option(..., "--target", help="The target dataset."),
    name: str | None = typer.Option(
        None, "--name", help="Registered model name (default: <study>-<target>)."),
    metric: str = typer.Option("frame_acc", "--metric", help=", ".join(METRIC_NAMES) + "."),
    tracking_uri: str | None = _TRACKING,
) -> None:
    """Register the best transfer pair's LSTM for TARGET in the MLflow Model Registry and
    print its model URI (models:/NAME/VERSION)."""
    from .models import register_model

    results = _load_results(spec, tracking_uri, target)
    run_id, what, tags = _best_model_run(results, target, metric, spec)
    name = name or f"{results.name}-{target}"
    from mlflow.exceptions import MlflowException

    from .uri import resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri, _open(spec).spec.tracking_uri)
    try:
        description = (
            f"The best transfer pair into {target} of study {results.name} (version "
            f"{results.study_hash[:12]}) as `kitchen-study best` ranks them (by the lower bound of "
            f"the 95 % CI of the mean per-seed gain): {tags['ks.source']}→{target} "
            f"{tags['ks.mode']} {tags['ks.arrangement']}, {metric} gain "
            f"{tags[f'ks.pair_gain.{metric}']} points ({tags['ks.pair_ci']}, "
            f"{tags['ks.pair_seeds']} seeds). This version is its seed {tags['ks.seed']} "
            f"model ({metric} {tags[f'ks.{metric}']}, gain {tags[f'ks.gain.{metric}']}), run "
            f"{run_id}. Input: one video's frame features in order, shape (T, input_dim) "
            "float32; output (T, classes) probabilities (study/models.py).")
        version = register_model(f"runs:/{run_id}/model", name, tracking_uri=uri,
                                 description=description, tags=tags)
    except MlflowException as e:
        raise DataError(f"run {run_id} ({what}) has no logged model to register (it ran "
                        f"before models were logged; run the study again): {e.message}",
                        spec) from None
    typer.echo(f"registered {what} (run {run_id}) as {name} version {version.version}")
    typer.echo(f"models:/{name}/{version.version}")


def _reports_store_errors(command: Any) -> Any:
    """An error raised by MLflow or by SQLAlchemy (a store that refuses a request, e.g. a
    server answering 401 after the checks of ``study.store_checks`` passed) becomes one
    :class:`DataError` line, the first of its message, instead of a traceback."""
    import functools

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except Exception as e:
            origin = type(e).__module__.split(".", 1)[0]
            if origin not in ("mlflow", "sqlalchemy"):
                raise
            text = (getattr(e, "message", None) or str(e)).strip().splitlines()
            first = text[0] if text else type(e).__name__
            raise DataError(f"the {'MLflow' if origin == 'mlflow' else 'database'} store "
                            f"refused the request: {first}") from None

    return wrapper


def register(app: typer.Typer) -> None:
    """Mount the study commands on the ``kitchen-study`` app."""
    from data_prep.commands import reports_data_errors

    for fn in (run, resume, status, best, report, demo):
        app.command(fn.__name__)(reports_data_errors(_reports_store_errors(fn)))
    app.command("register")(reports_data_errors(_reports_store_errors(register_best)))

