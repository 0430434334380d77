"""Transferability estimates in a study: computed per transfer edge on the worker, logged
on the edge's run, read back by the query API, and used to budget the graph.

Where and when (rules):

* **Per fine-tune, before it trains.** In the fine-tune trial's setup
  (:class:`study.trial.TaskJob`): the source is pre-trained (its checkpoint is the
  fine-tune's ``init_checkpoint``), nothing of the fine-tune's budget is spent yet. The
  driver adds what the worker cannot know to the trial's ``_study`` meta
  (:func:`estimate_request`: the source table and split, for the label-structure score).
* **What.** :func:`edge_estimates`: the feature-based scores (``logme``, ``leep``, ``nce``:
  the pre-trained source LSTM run forward over a sample of the target's training frames in
  the edge's arrangement, ``trainables.transfer_responses.source_responses``) and the
  label-structure scores (``label_structure`` and its three parts). The short probe needs
  the baseline's loss at the same iteration, i.e. a second task's run; it is not computed
  by the runner.
* **Budget.** At most ``min(frame_budget(iterations, batch_size, history),``
  :data:`MAX_FRAMES` ``)`` target frames (5 % of the frames the fine-tune trains on,
  capped), drawn with the task's seed, so every edge into a target split is scored on the
  same frames for a given seed. The time it took is logged as ``estimate_seconds``.
* **Logged** by the driver's callback as metrics ``estimate.<name>``
  (:data:`~study.mlflow_layout.ESTIMATE_PREFIX`) on the fine-tune's run, with the seconds;
  an estimate that fails does not fail the fine-tune: its reason goes to the tag
  ``ks.estimate_error``.

Budgeted graphs (``all_pairs.budget``) live in :mod:`study.budget`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .mlflow_layout import ESTIMATE_PREFIX, task_tag

if TYPE_CHECKING:
    import numpy as np

    from trainables.train_job import TrainRun

    from .plan import Task

__all__ = [
    "TAG_ESTIMATE_ERROR",
    "edge_estimates",
    "estimate_request",
    "quality_table",
    "report_section",
    "result_estimates",
    "source_train_labels",
    "transferability_table",
    "write_scatter_plots",
]

#: Cap on the target frames an edge's feature-based estimate runs the LSTM over.
MAX_FRAMES = 20_000
#: Why an edge's estimates are missing.
TAG_ESTIMATE_ERROR = task_tag("estimate_error")
#: Result keys the trial reports them under (the callback turns them into metrics/tags).
RESULT_KEY, SECONDS_KEY, ERROR_KEY = "estimates", "estimate_seconds", "estimate_error"


def estimate_request(task: Task, dep: Task) -> dict[str, Any] | None:
    """What a fine-tune's worker needs beyond its config to estimate its edge: the source
    table and split (read from the dependency, the pre-train or baseline that trained on
    it). None for any other task than a fine-tune or a budget's estimate task."""
    if task.kind not in ("finetune", "estimate"):
        return None
    c = dep.config
    # a multiple_random pre-train reads the source as its source; the others as target
    path = c.source_path if c.mode == "pretrain" else c.target_path
    return {"source_path": path, "source_split": task.source_split}


def source_train_labels(path: str, split: str) -> list[np.ndarray]:
    """The per-video labels of a table's training videos in ``split``."""
    from data_prep.table import read_table

    table = read_table(path)
    key: int | str = int(split) if split.isdigit() else split
    train, _ = table.split_indices(key)
    return [table.video_labels(v) for v in train]


def edge_estimates(run: TrainRun, source_labels: Sequence[Any],
                   max_frames: int = MAX_FRAMES) -> dict[str, float]:
    """Every estimate of one transfer edge (see the module doc), from the fine-tune's
    :class:`~trainables.train_job.TrainRun` before it trains: its target data, its
    arrangement and its ``init`` checkpoint (the pre-trained source)."""
    from trainables.estimator_quality import control_estimates
    from trainables.transfer_responses import model_from_checkpoint, source_responses
    from trainables.transferability import feature_scores, frame_budget, label_structure

    spec, target, arr = run.spec, run.target, run.trainer.arrangement
    if run.init is None or target is None:
        raise ValueError("an edge estimate needs the fine-tune's target and its "
                         "pre-trained source checkpoint")
    model, space = model_from_checkpoint(run.init, arr, device=run.device)
    window = run.trainer.window  # the model's training window (the LSTM's history)
    budget = max(min(frame_budget(spec.iterations, spec.batch_size, window),
                     max_frames), window)
    resp = source_responses(model, target.features, target.labels, target.table.offsets,
                            target.train, arr, max_frames=budget, history=window,
                            model_space=space, seed=spec.seed)
    out = feature_scores(resp)
    target_labels = [target.table.video_labels(v) for v in target.train]
    out.update(label_structure(target_labels, source_labels, arr).estimates())
    # the trivial controls every estimator must beat (trainables.estimator_quality.CONTROLS)
    out.update(control_estimates(source_labels, arr.target.classes, arr.source.classes))
    return {k: float(v) for k, v in out.items()}


def result_estimates(result: Mapping[str, Any]) -> tuple[dict[str, float], dict[str, str]]:
    """(metrics, tags) to log for the estimates a trial result carries: ``estimate.<name>``
    and ``estimate_seconds``; the tag :data:`TAG_ESTIMATE_ERROR` when they failed."""
    metrics = {f"{ESTIMATE_PREFIX}{k}": float(v)
               for k, v in (result.get(RESULT_KEY) or {}).items()}
    if isinstance(result.get(SECONDS_KEY), int | float):
        metrics[SECONDS_KEY] = float(result[SECONDS_KEY])
    tags = {TAG_ESTIMATE_ERROR: str(result[ERROR_KEY])[:4000]} if result.get(ERROR_KEY) else {}
    return metrics, tags


# -- reading them back (StudyResults.transferability / estimator_quality) -------------------

#: The columns that identify an edge (as in ``StudyResults.best_transfer_pairs``).
EDGE_COLUMNS = ("source", "source_split", "target", "target_split", "mode", "arrangement")


def transferability_table(study: Any, metric: str = "frame_acc") -> Any:
    """One row per transfer edge of a loaded study (``study.query.StudyResults``): the
    edge's columns, the mean over seeds of each estimate logged on its fine-tune runs (one
    column per estimator name, in :data:`~trainables.transferability.ESTIMATORS` order;
    NaN where none was logged), ``n_estimated`` (seeds with estimates), and the measured
    ``gain`` with ``ci_low``, ``ci_high``, ``p_value`` and ``n_seeds`` from
    ``best_transfer_pairs`` (NaN where no fine-tune has a matching baseline)."""
    import pandas as pd

    from trainables.transferability import ESTIMATORS

    from .mlflow_layout import latest_finished

    rows = []
    for r in latest_finished(study.records).values():
        if r.tags.get(task_tag("kind")) not in ("finetune", "estimate"):  # estimate: budget
            continue
        est = {k[len(ESTIMATE_PREFIX):]: v for k, v in r.metrics.items()
               if k.startswith(ESTIMATE_PREFIX)}
        rows.append({**{c: r.tags.get(task_tag(c), "") for c in EDGE_COLUMNS},
                     "_has": bool(est), **est})
    names = [n for n in ESTIMATORS if any(n in row for row in rows)]
    names += sorted({k for row in rows for k in row} - set(names) - set(EDGE_COLUMNS)
                    - {"_has"})
    measured = ["gain", "ci_low", "ci_high", "p_value", "n_seeds"]
    cols = [*EDGE_COLUMNS, *names, "n_estimated", *measured]
    if not rows:
        return pd.DataFrame(columns=cols)
    df = pd.DataFrame(rows)
    for n in names:
        df[n] = df[n].astype(float)
    per_edge = df.groupby(list(EDGE_COLUMNS), dropna=False).agg(
        **{n: (n, "mean") for n in names}, n_estimated=("_has", "sum")).reset_index()
    pairs = study.best_transfer_pairs(metric=metric, k=None, mode="transfer")
    out = per_edge.merge(pairs[[*EDGE_COLUMNS, *measured]], on=list(EDGE_COLUMNS), how="left")
    out["n_estimated"] = out["n_estimated"].astype(int)
    out["n_seeds"] = out["n_seeds"].fillna(0).astype(int)
    return out[cols].sort_values(list(EDGE_COLUMNS), ignore_index=True)


def quality_table(table: Any, *, n_boot: int = 1000, seed: int = 0) -> Any:
    """:func:`trainables.estimator_quality.estimator_quality` over a
    :func:`transferability_table`: each estimator against the measured gains of the edges
    (one observation per edge: estimates and gains averaged over seeds), top-1 per target
    split (``target.target_split``); the trivial controls
    (:data:`~trainables.estimator_quality.CONTROLS`) beside them, where logged."""
    from trainables.estimator_quality import CONTROLS, estimator_quality
    from trainables.transferability import ESTIMATORS

    names = [c for c in table.columns if c in ESTIMATORS or c in CONTROLS]
    targets = (table["target"].astype(str) + "." + table["target_split"].astype(str)).tolist()
    return estimator_quality(table[names].reset_index(drop=True),
                             table["gain"].astype(float).reset_index(drop=True),
                             targets, n_boot=n_boot, seed=seed)


def report_section(study: Any) -> str:
    """The report's "Transferability estimates" section: the estimator quality table and
    one scatter plot per estimator (estimate vs measured gain, one point per edge;
    :func:`write_scatter_plots` writes them). Empty when no edge has estimates."""
    tab = study.transferability()
    names = _estimated(tab)
    if not names:
        return ""
    q = quality_table(tab)
    rows = []
    for r in q.itertuples():
        def ci(lo: float, hi: float) -> str:
            return "-" if lo != lo else f"[{lo:+.2f}, {hi:+.2f}]"

        rows.append(f"| {r.estimator} | {'higher' if r.higher_is_better else 'lower'} | "
                    f"{r.n_edges} | {_num(r.spearman)} {ci(r.spearman_lo, r.spearman_hi)} | "
                    f"{_num(r.kendall)} {ci(r.kendall_lo, r.kendall_hi)} | "
                    f"{_num(r.top1_hit_pct)} ({r.top1_targets}) |")
    head = ("| estimator | better | edges | Spearman [95% CI] | Kendall tau-b [95% CI] | "
            "top-1 hit % (targets) |\n|---|---|---|---|---|---|\n")
    plots = "\n".join(f"![{n}](estimate_{n}.png)" for n in names)
    return ("## Transferability estimates\n\nEach estimator against the measured gain "
            "(frame accuracy, percentage points) over the edges, estimates and gains averaged "
            "over seeds; correlations oriented so that positive means the estimate ranks the "
            "gains right; percentile-bootstrap CIs over edges.\n\n" + head + "\n".join(rows)
            + "\n\n" + plots + "\n")


def _num(v: float) -> str:
    return "-" if v != v else f"{v:.2f}"


def _estimated(tab: Any) -> list[str]:
    from trainables.transferability import ESTIMATORS

    return [n for n in tab.columns if n in ESTIMATORS and tab[n].notna().any()]


def write_scatter_plots(study: Any, out: Any) -> list[str]:
    """``estimate_<name>.png`` per estimator in folder ``out``: estimate (x) vs measured gain
    (y) per edge, with the gain's 95 % CI as an error bar; returns the names plotted."""
    from pathlib import Path

    from matplotlib.figure import Figure

    tab = study.transferability()
    names = _estimated(tab)
    for n in names:
        fig = Figure(figsize=(4.5, 3.5), layout="constrained")
        ax = fig.add_subplot()
        ok = tab[n].notna() & tab["gain"].notna()
        t = tab[ok]
        err = [(t["gain"] - t["ci_low"]).fillna(0).clip(lower=0),
               (t["ci_high"] - t["gain"]).fillna(0).clip(lower=0)]
        ax.errorbar(t[n], t["gain"], yerr=err, fmt="o", alpha=0.7, capsize=2)
        ax.axhline(0, color="grey", linewidth=0.8)
        ax.set_xlabel(f"estimate.{n}")
        ax.set_ylabel("measured gain (pp)")
        ax.set_title(f"{n}: {int(ok.sum())} edges")
        fig.savefig(Path(out) / f"estimate_{n}.png", dpi=100)
    return names
