"""What the MLflow UI shows of a study's runs, written by the driver (:mod:`study.callback`).

The layout's rules are in :mod:`study.mlflow_layout` ("What the MLflow UI shows"); this
module applies them as tasks start and finish:

* names: every planned task gets a readable name (:func:`~study.mlflow_layout.task_run_name`)
  made unique over the plan (a collision adds ``· <task id>``), the same on every resume;
  search trials are named ``trial <Optuna number> · <params>``; a trial ASHA stopped early
  gets ``· stopped @ <iteration>``;
* the datasets a run read (target, and source when it has one) as MLflow dataset inputs,
  when the logger supports them (:meth:`~study.tracking.MlflowRunLogger.log_inputs`);
* per-run ``gain.frame_acc`` by :class:`~study.mlflow_layout.GainBook` (seeded with the
  runs finished before this call, so a resumed study pairs with earlier baselines), and the
  study run's ``tasks_finished`` / ``best_gain.frame_acc`` (the mean gain of the pair that
  ranks first by ``kitchen-study best``'s rule so far, :func:`rank_live`);
* when a study call ends (FINISHED or FAILED), the study run's summary of the best pair as
  ``kitchen-study best`` ranks it (:func:`publish_best_pair`, the query API's
  ``best_transfer_pairs``): its name in the run's name and in the first line of the
  experiment's description (the two things the UI shows without expanding anything), the
  ``best.*`` tags and metrics, a description in words, and the transfer heatmap
  ``plots/transfer_heatmap.png``;
* each finished task's final LSTM as the MLflow model ``model``
  (:func:`study.models.log_temporal_model`) when ``log_models`` is on.

No Ray import: it is driven by plain calls (tests call it directly).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from . import mlflow_layout as layout
from .mlflow_layout import (
    BEST_GAIN_PREFIX,
    GAIN_CI_HIGH_PREFIX,
    GAIN_CI_LOW_PREFIX,
    GAIN_PREFIX,
    GAIN_SEEDS_METRIC,
    RUN_NAME_TAG,
    TASKS_FINISHED_METRIC,
    DatasetRef,
    GainBook,
    RunRecord,
    TaskMeta,
    experiment_note,
    stopped_name,
    task_run_name,
    trial_run_name,
)
from .tracking import RunLogger

__all__ = [
    "BEST_PAIR_TAG",
    "HEATMAP_ARTIFACT",
    "RunView",
    "pair_label",
    "publish_best_pair",
    "rank_live",
    "start_view",
]

log = logging.getLogger(__name__)
_METRIC = "frame_acc"

#: The study run's summary of its best pair (:func:`publish_best_pair`): tags ``best.pair``
#: (words), ``best.source`` ... ``best.arrangement``, ``best.rank_by``; metrics
#: ``best.gain.<metric>``, ``best.gain_ci_low.<metric>``, ``best.gain_ci_high.<metric>``
#: (absent with one seed), ``best.seeds``, ``best.pairs`` (how many pairs were ranked).
BEST_PAIR_TAG = "best.pair"
BEST_KEY_TAGS = ("source", "source_split", "target", "target_split", "mode", "arrangement")
BEST_RANK_TAG = "best.rank_by"
BEST_SEEDS_METRIC = "best.seeds"
BEST_PAIRS_METRIC = "best.pairs"
#: the transfer heatmap on the study run (``StudyResults.plot_transfer_heatmap``)
HEATMAP_ARTIFACT = f"{layout.PLOTS_DIR}/transfer_heatmap.png"
_RANK_RULE = "ci_low"  # best_transfer_pairs' default: what `kitchen-study best` prints
_NOTE_MARK = "**Best pair"  # the line of the experiment description this module owns


def _detail(task: Any) -> str:
    """What tells two tasks of the same kind, datasets, arrangement and seed apart."""
    if task.kind == "joint":
        ratio = getattr(task.config, "joint_ratio", None)
        return f"{ratio[0]}:{ratio[1]}" if ratio else ""
    if task.kind == "search" and getattr(task, "search", None) is not None:
        return str(task.search.space)
    if task.kind == "pretrain" and getattr(task.config, "arrangement_k", None) and \
            task.arrangement == "multiple_random":
        return f"k{task.config.arrangement_k}"
    return ""


def plan_run_names(tasks: Iterable[Any]) -> dict[str, str]:
    """``{task id: run name}`` for planner tasks, unique: a name two tasks would share gets
    ``· <task id>`` on each of them."""
    names = {t.id: task_run_name(TaskMeta.from_task(t), _detail(t)) for t in tasks}
    counts: dict[str, int] = {}
    for n in names.values():
        counts[n] = counts.get(n, 0) + 1
    return {tid: n if counts[n] == 1 else f"{n} · {tid}" for tid, n in names.items()}


class RunView:
    """Applies the UI rules (module doc) through a :class:`~study.tracking.RunLogger`."""

    def __init__(self, logger: RunLogger, study_run_id: str, tasks: Iterable[Any], *,
                 datasets: Mapping[str, DatasetRef] | None = None,
                 tracking_uri: str | None = None, log_models: bool = False,
                 finished: Iterable[RunRecord] = ()):
        tasks = list(tasks)
        self.logger, self.study_run = logger, study_run_id
        self.names = plan_run_names(tasks)
        self.tasks = {t.id: t for t in tasks}
        self.datasets = dict(datasets or {})
        self.tracking_uri, self.log_models = tracking_uri, log_models
        self.gains = GainBook()
        self.model_ids: dict[str, str] = {}  # run id -> its logged model's id
        self.finished = 0
        for r in finished:  # earlier calls' runs: baselines and transfers to pair with
            t = self.tasks.get(r.task_id)
            if t is not None:
                self.finished += 1
                self.gains.add(TaskMeta.from_task(t), r.run_id, r.metrics.get(_METRIC))

    def _quiet(self, what: str, fn: Callable[[], Any]) -> None:
        """UI extras never fail a task: a failure is a warning."""
        try:
            fn()
        except Exception as e:
            log.warning("%s failed: %r", what, e)

    def _inputs(self, task: Any, run_id: str) -> None:
        log_inputs = getattr(self.logger, "log_inputs", None)
        refs = [self.datasets[n] for n in dict.fromkeys((task.target, task.source))
                if n and n in self.datasets]
        if log_inputs is not None and refs:
            self._quiet("logging dataset inputs", lambda: log_inputs(run_id, refs))

    def task_started(self, task: Any, run_id: str) -> None:
        """A task's (or a search's) run: its name and dataset inputs."""
        name = self.names.get(task.id, task.id)
        self.logger.set_tags(run_id, {RUN_NAME_TAG: name})
        self._inputs(task, run_id)

    def trial_started(self, task: Any, run_id: str, order: int,
                      params: Mapping[str, Any]) -> None:
        """A search trial's run: ``trial <N> · <params>`` with N the Optuna trial number
        when the run carries it (else ``order``, the suggestion order from 0)."""
        number: Any = order
        key = getattr(layout, "TAG_OPTUNA_TRIAL", None)
        if key is not None:
            with contextlib.suppress(Exception):
                number = self.logger.get_run(run_id).tags.get(key, order)
        self.logger.set_tags(run_id, {RUN_NAME_TAG: trial_run_name(number, params)})
        self._inputs(task, run_id)

    def trial_stopped(self, run_id: str, iteration: Any) -> None:
        """ASHA stopped the trial early: say so in its name."""
        name = self.logger.get_run(run_id).tags.get(RUN_NAME_TAG, "")
        if "stopped @" not in name:
            self.logger.set_tags(run_id, {RUN_NAME_TAG: stopped_name(name, iteration)})

    def task_finished(self, task: Any, run_id: str, result: Mapping[str, Any],
                      checkpoint: Callable[[], Any] | None = None) -> None:
        """A task's run FINISHED: its model, gains (its own or those it completes) and the
        study run's progress metrics. ``checkpoint()`` opens the final checkpoint directory
        (a context manager), for the model."""
        # a budget's estimate task trained nothing: no model of its own
        if self.log_models and checkpoint is not None and task.kind not in ("search",
                                                                             "estimate"):
            self._quiet(f"logging the model of {task.id}",
                        lambda: self._model(task, run_id, checkpoint, result))
        self.finished += 1
        metrics = {TASKS_FINISHED_METRIC: float(self.finished)}
        meta = TaskMeta.from_task(task)
        changed = self.gains.add(meta, run_id, result.get(_METRIC))
        for rid, g in changed.items():
            self._gain_metrics(rid, {f"{GAIN_PREFIX}{_METRIC}": g})
        for rid, (lo, hi, n) in self.gains.intervals(changed).items():
            self._gain_metrics(rid, {f"{GAIN_CI_LOW_PREFIX}{_METRIC}": lo,
                                     f"{GAIN_CI_HIGH_PREFIX}{_METRIC}": hi,
                                     GAIN_SEEDS_METRIC: float(n)})
        ranked = rank_live(self.gains)
        if ranked:  # the pair `kitchen-study best` would name now, not one lucky seed
            metrics[f"{BEST_GAIN_PREFIX}{_METRIC}"] = ranked[0]["gain"]
        self.logger.log_metrics(self.study_run, metrics, step=self.finished)

    def _gain_metrics(self, run_id: str, metrics: Mapping[str, float]) -> None:
        """A run's gain metrics, on its logged model too when it has one (the model's page
        then shows the gain beside the accuracy)."""
        model_id = self.model_ids.get(run_id)
        client = getattr(self.logger, "client", None)
        if model_id is not None and client is not None:
            try:
                getattr(self.logger, "check_fence", lambda: None)()  # a write around it
                from .models import log_model_metrics

                log_model_metrics(client, run_id, model_id, metrics)  # (on the run as well)
                return
            except Exception as e:  # the run's own metric matters more than the link
                log.warning("gain of %s not linked to its model: %r", run_id, e)
        self.logger.log_metrics(run_id, metrics)

    def _model(self, task: Any, run_id: str, checkpoint: Callable[[], Any],
               result: Mapping[str, Any]) -> None:
        import os
        import warnings

        from .mlflow_layout import CHECKPOINT_ARTIFACT

        # MLflow's advice on type hints, input examples and cloudpickle, and its download
        # progress bar, once per task in the study's progress output: not news here
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        pyfunc_log = logging.getLogger("mlflow.pyfunc")
        level = pyfunc_log.level
        pyfunc_log.setLevel(logging.ERROR)
        # mlflow.start_run(run_id) below writes around the logger (it sets the run RUNNING,
        # then FINISHED): only while this driver still holds the study's lease
        getattr(self.logger, "check_fence", lambda: None)()
        try:
            with checkpoint() as d, warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                from .models import log_temporal_model

                # what tells a study's models (all named `model`) apart on the Models tab
                name = self.names.get(task.id, task.id)
                tags = {**TaskMeta.from_task(task).to_tags(), "ks.run_name": name,
                        layout.NOTE_TAG: (  # the model page's description
                            f"The final model of `{name}` (task `{task.id}`); load it with "
                            f"`mlflow.pyfunc.load_model(\"runs:/{run_id}/model\")`.")}
                # at the run's last step: MLflow links the run's metrics of that step (the
                # final frame_acc, edit, F1s) to the model, which its page then lists
                log_temporal_model(run_id, Path(d) / Path(CHECKPOINT_ARTIFACT).name,
                                   self.tracking_uri, tags=tags,
                                   step=int(result.get("iteration") or 0))
            from .models import logged_model_id

            model_id = logged_model_id(self.logger.client, run_id)  # type: ignore[attr-defined]
            if model_id is not None:
                self.model_ids[run_id] = model_id
        finally:
            pyfunc_log.setLevel(level)



def start_view(logger: RunLogger, study_run_id: str, plan: Any, loaded: Any, tracking_uri: str,
               finished_before: Mapping[str, str]) -> RunView:
    """The driver's :class:`RunView` for a study call: the experiment's description from the
    spec, dataset refs from the cards, earlier finished runs for the gains, models logged
    when the logger is MLflow's."""
    spec = loaded.spec
    note = getattr(logger, "set_experiment_note", None)
    if note is not None:
        text = experiment_note(spec.name, spec.description, list(spec.datasets),
                               plan.counts(), loaded.hash)
        with contextlib.suppress(Exception):  # a description is not worth failing a study
            note(spec.name, text)
    refs = {n: DatasetRef.from_card(n, card, spec.dataset_path(n))
            for n, card in loaded.cards.items()}
    done = set(finished_before.values())
    finished = ([r for r in logger.study_runs(spec.name, loaded.hash) if r.run_id in done]
                if done else [])
    return RunView(logger, study_run_id, plan, datasets=refs, tracking_uri=tracking_uri,
                   log_models=hasattr(logger, "client"), finished=finished)


# -- the best pair, as `kitchen-study best` ranks it -------------------------------------------


def rank_live(book: GainBook) -> list[dict[str, Any]]:
    """The pairs a :class:`~study.mlflow_layout.GainBook` holds, ranked by the rule of
    ``StudyResults.best_transfer_pairs`` (``kitchen-study best``): by the lower bound of the
    95 % interval of the mean per-seed gain, pairs without one (one seed) after, by mean
    gain; ties by mean gain, then the pair's names. Each row: ``pair`` (the query's key
    tuple), ``gain``, ``ci_low``, ``seeds``. For the driver's running summary; the study's
    final summary is read from the store (:func:`publish_best_pair`)."""
    by_pair: dict[tuple[str, ...], dict[int, list[float]]] = {}
    first: dict[tuple[str, ...], str] = {}
    for rid, pair in book.pair_of.items():
        if rid in book.gains:
            by_pair.setdefault(pair, {}).setdefault(book.seed_of[rid], []).append(
                book.gains[rid])
            first.setdefault(pair, rid)
    intervals = book.intervals(first.values())
    rows = []
    for pair, by_seed in by_pair.items():
        per_seed = [sum(v) / len(v) for v in by_seed.values()]
        lo = intervals.get(first[pair], (math.nan,))[0]
        rows.append({"pair": pair, "gain": sum(per_seed) / len(per_seed), "ci_low": lo,
                     "seeds": len(per_seed)})
    rows.sort(key=lambda r: (math.isnan(r["ci_low"]),
                             0.0 if math.isnan(r["ci_low"]) else -r["ci_low"],
                             -r["gain"], tuple(map(str, r["pair"]))))
    return rows


def pair_label(row: Mapping[str, Any]) -> str:
    """A pair of ``best_transfer_pairs`` in words: ``a s1→b s1 transfer concat``."""
    def split(name: Any) -> str:
        return str(name).replace("split", "s") if str(name).startswith("split") else str(name)

    return (f"{row['source']} {split(row['source_split'])}→{row['target']} "
            f"{split(row['target_split'])} {row['mode']} {row['arrangement']}")


def _short_label(row: Mapping[str, Any]) -> str:
    """``a→b concat``, with the mode unless ``transfer`` and the splits unless split1."""
    splits = (row["source_split"], row["target_split"])
    return (f"{row['source']}→{row['target']} {row['arrangement']}"
            + ("" if row["mode"] == "transfer" else f" {row['mode']}")
            + ("" if splits == ("split1", "split1") else f" ({splits[0]}→{splits[1]})"))


def _ci_text(row: Mapping[str, Any], digits: int = 2) -> str:
    lo, hi = row.get("ci_low"), row.get("ci_high")
    if lo is None or hi is None or math.isnan(lo) or math.isnan(hi):
        return "one seed: no interval"
    return f"95 % CI {lo:+.{digits}f} to {hi:+.{digits}f}"


def best_summary(pairs: Any, study_name: str, short_hash: str, metric: str = _METRIC
                 ) -> tuple[dict[str, str], dict[str, float], str, str, str]:
    """``(tags, metrics, run name, description, note line)`` of the study run for
    ``pairs``, every pair of ``best_transfer_pairs(k=None)`` (ranked; may be empty)."""
    if pairs is None or len(pairs) == 0:
        text = (f"No transfer pair has a baseline to compare with yet (study {study_name}, "
                f"version {short_hash}).")
        return ({BEST_PAIR_TAG: "none yet"}, {BEST_PAIRS_METRIC: 0.0},
                f"study {study_name} · no pair yet", text, f"{_NOTE_MARK}**: none yet.")
    top = pairs.iloc[0]
    label = pair_label(top)
    n = int(top["n_seeds"])
    tags = {BEST_PAIR_TAG: label, BEST_RANK_TAG: f"{_RANK_RULE} (the lower bound of the 95 % "
            "CI of the mean per-seed gain; as `kitchen-study best`)",
            **{f"best.{k}": str(top[k]) for k in BEST_KEY_TAGS}}
    metrics = {f"best.gain.{metric}": float(top["gain"]), BEST_SEEDS_METRIC: float(n),
               BEST_PAIRS_METRIC: float(len(pairs))}
    if not math.isnan(float(top["ci_low"])):
        metrics[f"best.gain_ci_low.{metric}"] = float(top["ci_low"])
        metrics[f"best.gain_ci_high.{metric}"] = float(top["ci_high"])
    ci = _ci_text(top)
    short = _short_label(top)
    name = (f"study {study_name} · best {short} {float(top['gain']):+.2f} "
            + ("(1 seed)" if math.isnan(float(top["ci_low"]))
               else f"[{float(top['ci_low']):+.2f}, {float(top['ci_high']):+.2f}]"))
    lines = [
        f"**Best pair: {label}** — {metric} gain **{float(top['gain']):+.2f}** points over "
        f"the baseline ({ci}, {n} seed{'s' if n != 1 else ''}; {float(top['mean']):.2f} vs "
        f"{float(top['baseline']):.2f}).",
        "",
        f"Ranked as `kitchen-study best` ranks the {len(pairs)} pair"
        f"{'s' if len(pairs) != 1 else ''} of study {study_name} (version {short_hash}): by "
        "the lower bound of the 95 % interval of the mean per-seed gain (the gain the seeds "
        "still support); pairs with one seed have no interval and come after.",
    ]
    if n < 3:
        lines.append(f"Only {n} seed{'s' if n != 1 else ''}: the interval is wide or absent.")
    largest = pairs.loc[pairs["gain"].astype(float).idxmax()]
    if pair_label(largest) != label:
        lines.append(f"The largest mean gain, {float(largest['gain']):+.2f} "
                     f"({pair_label(largest)}, {_ci_text(largest)}), ranks lower: "
                     + ("its interval's lower bound is lower." if not math.isnan(
                         float(largest["ci_low"])) else "with one seed it has no interval."))
    lines += ["", f"Heatmap of the transfer gains: artifact `{HEATMAP_ARTIFACT}`; every pair: "
              f"`kitchen-study best <spec> --all`."]
    # one short line: the description bar shows its first line only (about 110 characters
    # beside the runs table); the rest of the description follows it
    note = (f"{_NOTE_MARK}: {short}, {float(top['gain']):+.2f}** {metric} points over the "
            f"baseline ({ci}, {n} seed{'s' if n != 1 else ''})\n\n(study version "
            f"{short_hash}, ranked as `kitchen-study best` ranks them; the study run "
            f"`{name}` has the details and the heatmap `{HEATMAP_ARTIFACT}`)")
    return tags, metrics, name, "\n".join(lines), note


def publish_best_pair(logger: RunLogger, study_run_id: str, metric: str = _METRIC,
                      heatmap: bool = True) -> dict[str, Any] | None:
    """Write the best pair as ``kitchen-study best`` ranks it on the study run: tags,
    metrics, run name and description (:func:`best_summary`), the first line of the
    experiment's description, and the transfer heatmap (:data:`HEATMAP_ARTIFACT`). Reads
    the store in bulk (the query API). Returns the first row of ``best_transfer_pairs``
    (None when no pair has a baseline)."""
    from .mlflow_layout import NOTE_TAG, TAG_STUDY, TAG_STUDY_HASH
    from .query import StudyResults

    tags = logger.get_run(study_run_id).tags
    name, study_hash = tags[TAG_STUDY], tags[TAG_STUDY_HASH]
    results = StudyResults.from_logger(logger, name, study_hash)
    pairs = results.best_transfer_pairs(metric=metric, k=None)
    run_tags, metrics, run_name, text, note = best_summary(pairs, name, study_hash[:12],
                                                           metric)
    logger.set_tags(study_run_id, {**run_tags, RUN_NAME_TAG: run_name, NOTE_TAG: text})
    logger.log_metrics(study_run_id, metrics)
    client, set_note = getattr(logger, "client", None), getattr(logger, "set_experiment_note",
                                                                None)
    if client is not None and set_note is not None:
        exp = client.get_experiment(client.get_run(study_run_id).info.experiment_id)
        old = [ln for ln in (exp.tags.get(NOTE_TAG) or "").splitlines()]
        while old and (old[0].startswith((_NOTE_MARK, "(study version"))
                       or not old[0].strip()):
            old.pop(0)  # an earlier call's lines
        set_note(name, "\n".join([note, "", *old]))
    if heatmap and len(pairs):
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / Path(HEATMAP_ARTIFACT).name
            # a bare Figure (no pyplot): no GUI backend, nothing to close
            results.plot_transfer_heatmap(metric).savefig(path, dpi=100)
            logger.log_artifact(study_run_id, path, str(Path(HEATMAP_ARTIFACT).parent))
    return None if not len(pairs) else dict(pairs.iloc[0])
