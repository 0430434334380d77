"""Python query API over a tracked study: which source helps which target, by how much, and
is it real? Needs only MLflow's tracking URI (no Ray, no datasets).

Usage::

    from study import load_study
    s = load_study("demo")                              # or load_study("studies/demo.yaml")
    s.results()                                         # one row per finished task run
    s.transfer_matrix("frame_acc", arrangement="concat")  # sources x targets, mean gain
    s.best_transfer_pairs(target="kitchen_b", k=5)      # ranked by the CI's lower bound
    s.search_trials()                                   # like optuna's trials_dataframe()
    s.search_summary()                                  # best config and score per search
    s.convergence("kitchen_b", wide=True)               # iterations x accuracy per source
    s.plot_transfer_heatmap().savefig("heatmap.png")    # matplotlib Figures

Everything is fetched in bulk when the study is loaded, never per run: from a SQLite store
by four read-only SQL queries, from a tracking server by one paged ``search_runs`` over the
study's experiment filtered by study hash (``MlflowRunLogger.study_runs``); 500 runs load
and answer ``best_transfer_pairs`` in about 0.1 s of CPU from SQLite
(``bench/bench_query.py``, ``docs/benchmarks.md``). The convergence curves (``frame_acc``'s
step history) are read on the first :meth:`StudyResults.convergence` call, for every run at
once (``RunLogger.metric_histories``: one more SQL query; a server answers
``get_metric_history`` per run).

Rules:

* :meth:`StudyResults.results` holds FINISHED task runs (``ks.role=task``), one per task id;
  if a task id has several FINISHED runs (it should not: the runner skips finished tasks) the
  latest started one counts, as for resume. Metrics are in percent; MLflow's ``f1_10`` keys are
  shown as ``f1@10``.
* A *gain* pairs a transfer (or joint) run with the no-transfer baseline (``kind=baseline``) of
  the same target, target split and seed: ``gain = metric(run) - metric(baseline)``; several
  baseline runs with the same key are averaged. Runs without such a baseline have no gain and
  are left out of every gain statistic (``gains()`` lists what was paired).
* :meth:`StudyResults.best_transfer_pairs` treats each (source, source split, target, target
  split, mode, arrangement) as one pair and its seeds as paired observations: mean gain, a 95 %
  t-interval of the paired differences and ``scipy.stats.ttest_rel`` against the baselines
  (both NaN with fewer than 2 seeds). Differences without spread give a zero-width interval
  and scipy's p-value: 0 when they are all the same non-zero number (t = ±inf), NaN when
  they are all 0. Pairs are **ranked by the interval's lower bound** (``ci_low``: the gain
  the data still supports), not by the mean, so two lucky seeds do not head the table;
  pairs without an interval (one seed) come after every pair with one, by mean gain.
  ``few_seeds`` flags pairs with fewer than :data:`MIN_SEEDS` (3) seeds.
* :meth:`StudyResults.transfer_matrix` never averages over arrangements silently: with one
  arrangement (or ``arrangement=`` chosen) the columns are the targets; when the gains come
  from several arrangements and none is chosen, ``arrangement`` becomes the innermost
  column level (``m.loc["a", ("b", "concat")]``), as ``pivot_table`` would. ``m.attrs
  ["arrangements"]`` lists what the matrix holds.
* :meth:`StudyResults.search_trials` and :meth:`StudyResults.search_summary`: the searches
  as Optuna reports them, read from MLflow alone (rules: :mod:`study.search_results`).
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from trainables.metrics import METRIC_NAMES

from .mlflow_layout import (
    CURVE_METRIC,
    ESTIMATE_PREFIX,
    ITERATION_METRIC,
    ROLE_STUDY,
    ROLE_TASK,
    TAG_ERROR,
    TAG_REUSED_FROM,
    TAG_STUDY_HASH,
    RunRecord,
    StudyNotFound,
    int_or_none,
    latest_finished,
    metric_column,
    metric_key,
    task_tag,
)
from .plots import plot_convergence, plot_transfer_heatmap
from .search_results import search_summary, search_trials
from .tracking import RunLogger, sqlite_path

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["METRICS", "MIN_SEEDS", "StudyNotFound", "StudyResults", "load_study"]

#: Fewer seeds than this and a pair is flagged ``few_seeds`` (its interval is wide or absent).
MIN_SEEDS = 3

#: Final metrics of a task run, as columns of :meth:`StudyResults.results`: the evaluation
#: metrics ``trainables.metrics.METRIC_NAMES`` (MLflow keys: ``f1@10`` is ``f1_10``).
METRICS: tuple[str, ...] = METRIC_NAMES
#: Task tags (``TaskMeta`` fields) that become the first columns, in this order.
_KEYS = ("task_id", "kind", "mode", "source", "source_split", "target", "target_split",
         "arrangement", "seed")
_PAIR = ["source", "source_split", "target", "target_split", "mode", "arrangement"]
_BASE_KEY = ["target", "target_split", "seed"]
#: Task kinds whose run has no convergence curve: a search's run carries its best trial's
#: final values (the trials hold the curves); a budget's estimate run trains nothing.
_NO_CURVE_KINDS = ("search", "estimate")
#: ``RunLogger.metric_histories``: (run ids, metric key) -> {run id: [(step, value)]}
Histories = Callable[[Sequence[str], str], Mapping[str, Sequence[tuple[int, float]]]]


def _task_runs(records: Iterable[RunRecord], include_unfinished: bool) -> list[RunRecord]:
    if include_unfinished:
        return [r for r in records if r.role == ROLE_TASK]
    return list(latest_finished(records).values())


class StudyResults:
    """Results of one study (name + content hash), loaded in bulk. See the module docstring.

    Build with :func:`load_study` (MLflow) or :meth:`from_records` / :meth:`from_logger`
    (any :class:`~study.tracking.RunLogger`).
    """

    def __init__(self, name: str, study_hash: str, records: Sequence[RunRecord],
                 histories: Histories | None = None):
        self.name = name
        self.study_hash = study_hash
        self.records = list(records)
        self._tasks = _task_runs(self.records, include_unfinished=False)
        self._results = self._frame(self._tasks)
        self._histories = histories
        self._curves: dict[str, list[tuple[int, float]]] | None = None

    @classmethod
    def from_records(cls, name: str, study_hash: str, records: Sequence[RunRecord],
                     histories: Histories | None = None) -> StudyResults:
        """``histories``: where :meth:`convergence` reads metric histories
        (``RunLogger.metric_histories``); without it, :meth:`convergence` raises."""
        return cls(name, study_hash, records, histories)

    @classmethod
    def from_logger(cls, logger: RunLogger, name: str,
                    study_hash: str | None = None) -> StudyResults:
        records = logger.study_runs(name, study_hash)
        parents = [r for r in records if r.role == ROLE_STUDY]
        return cls(name, parents[0].tags[TAG_STUDY_HASH], records, logger.metric_histories)

    def __repr__(self) -> str:
        return (f"StudyResults({self.name!r}, hash={self.study_hash[:12]}, "
                f"{len(self._results)} finished tasks, {len(self.records)} runs)")

    # -- tables -------------------------------------------------------------------------------
    @staticmethod
    def _frame(tasks: Sequence[RunRecord]) -> pd.DataFrame:
        rows = []
        for r in tasks:
            t, m = r.tags, r.metrics
            row: dict[str, Any] = {k: t.get(task_tag(k), "") for k in _KEYS}
            row["seed"] = int_or_none(row["seed"])
            for name in METRICS:
                row[name] = m.get(metric_key(name), math.nan)
            it = m.get(ITERATION_METRIC)
            row["iterations"] = int_or_none(it if it is not None else r.params.get("iterations"))
            row["run_id"] = r.run_id
            row["status"] = r.status
            row["node"] = t.get(task_tag("node"), "")
            row["error"] = t.get(TAG_ERROR, "")
            row["duration_s"] = ((r.end_time - r.start_time)
                                 if r.end_time is not None and r.start_time is not None
                                 else math.nan)
            rows.append(row)
        cols = [*_KEYS, *METRICS, "iterations", "run_id", "status", "node", "error", "duration_s"]
        df = pd.DataFrame(rows, columns=cols)
        df["seed"] = df["seed"].astype("Int64")
        df["iterations"] = df["iterations"].astype("Int64")
        for name in (*METRICS, "duration_s"):
            df[name] = df[name].astype(float)
        return df.sort_values(["task_id", "run_id"], ignore_index=True)

    @property
    def protocol(self) -> str:
        """``validation`` when the study's runs validate (``TrainSpec.validation ==
        "people"``: every metric of a run is its reported model's, chosen on the validation
        part), else ``paper`` (the last iteration, choices made on test videos)."""
        tasks = [r for r in self.records if r.params.get("validation") is not None]
        return ("validation" if any(r.params["validation"] == "people" for r in tasks)
                else "paper")

    def results(self, *, include_unfinished: bool = False) -> pd.DataFrame:
        """Tidy table, one row per finished task run (columns: task_id, kind, mode, source,
        source_split, target, target_split, arrangement, seed, frame_acc, input_acc, edit,
        f1@10, f1@25, f1@50, iterations, run_id, status, node, error, duration_s).
        ``include_unfinished``: every task run, any status (e.g. for a status view)."""
        if include_unfinished:
            return self._frame(_task_runs(self.records, include_unfinished=True))
        return self._results.copy()

    def gains(self, metric: str = "frame_acc", mode: str | None = None) -> pd.DataFrame:
        """Each transfer/joint run paired with its baseline: the ``_PAIR`` columns, seed,
        ``value``, ``baseline``, ``gain``, run_id. ``mode`` None: both modes."""
        col = metric_column(metric)
        df = self._results
        base = (df[df["kind"] == "baseline"].groupby(_BASE_KEY, dropna=False)[col].mean()
                .rename("baseline").reset_index())
        runs = df[df["mode"].isin([mode] if mode else ["transfer", "joint"])
                  & (df["kind"] != "estimate")  # a budget's estimate run trains nothing
                  & ~df["run_id"].isin(self._halved_runs())]  # study.halving: not measured
        runs = runs[[*_PAIR, "seed", col, "run_id"]].rename(columns={col: "value"})
        out = runs.merge(base, on=_BASE_KEY, how="inner")
        out["gain"] = out["value"] - out["baseline"]
        return out.sort_values([*_PAIR, "seed"], ignore_index=True)

    def transfer_matrix(self, metric: str = "frame_acc", mode: str = "transfer", *,
                        arrangement: str | None = None, by_split: bool = False) -> pd.DataFrame:
        """Sources (rows) x targets (columns) of **gains**, not scores: the mean of
        ``metric`` after transfer minus the paired no-transfer baseline's (percentage points;
        ``transfer_matrix("frame_acc")`` is the frame-accuracy gain), averaged over seeds
        (and splits, unless ``by_split``: rows (source, source_split), columns (target,
        target_split)). NaN where no pair ran. ``m.attrs["values"]`` says so in words
        (``"gain in frame_acc over the no-transfer baseline (points)"``); the scores
        themselves are :meth:`gains`' ``value`` and ``baseline`` columns.

        Arrangements are never averaged: ``arrangement`` picks one; without it, gains from
        several arrangements get ``arrangement`` as the innermost column level. ``m.attrs
        ["arrangements"]`` lists the arrangements in the matrix."""
        g = self.gains(metric, mode)
        if arrangement is not None:
            g = g[g["arrangement"] == arrangement]
        arrangements = sorted(set(g["arrangement"]))
        rows = ["source", "source_split"] if by_split else ["source"]
        cols = ["target", "target_split"] if by_split else ["target"]
        if len(arrangements) > 1:
            cols = [*cols, "arrangement"]
        if g.empty:
            m = pd.DataFrame(dtype=float)
            m.attrs["arrangements"] = arrangements
            m.attrs["values"] = f"gain in {metric} over the no-transfer baseline (points)"
            return m
        m = g.pivot_table(index=rows, columns=cols, values="gain", aggfunc="mean")
        sources = sorted(set(m.index))
        targets = sorted(set(m.columns))
        if len(cols) > 1:
            m = m.reindex(index=sources, columns=pd.MultiIndex.from_tuples(targets))
        else:
            m = m.reindex(index=sources, columns=targets)
        m.columns.names = cols
        m.index.names = rows if by_split else ["source"]
        m.attrs["arrangements"] = arrangements
        m.attrs["values"] = f"gain in {metric} over the no-transfer baseline (points)"
        return m

    def best_transfer_pairs(self, target: str | None = None, metric: str = "frame_acc",
                            k: int | None = 5, *, mode: str | None = None,
                            target_split: str | None = None,
                            rank_by: str = "ci_low") -> pd.DataFrame:
        """Top ``k`` (None: all) pairs, ranked by ``rank_by``: ``"ci_low"`` (default; the
        95 % interval's lower bound, pairs without one after, by gain) or ``"gain"`` (the
        mean). Columns: source, source_split, target, target_split, mode, arrangement,
        metric, mean (of the runs), baseline (mean), gain, ci_low, ci_high (95 % t-interval
        of the per-seed differences), p_value (paired t-test, ``scipy.stats.ttest_rel``),
        n_seeds, few_seeds (``n_seeds < MIN_SEEDS``)."""
        if rank_by not in ("ci_low", "gain"):
            raise ValueError(f"rank_by must be 'ci_low' or 'gain', got {rank_by!r}")
        if k is not None and k < 1:  # head(0) is empty and head(-1) drops the last pair
            raise ValueError(f"k must be at least 1 (None: all pairs), got {k}")
        # scipy.special, not scipy.stats: the same t distribution (scipy.stats.t's ppf and sf
        # are stdtrit and stdtr) without the second of imports `kitchen-study best` waited for
        from scipy.special import stdtr, stdtrit

        col = metric_column(metric)
        g = self.gains(col, mode)
        if target is not None:
            g = g[g["target"] == target]
        if target_split is not None:
            g = g[g["target_split"] == target_split]
        # one paired observation per seed (several runs of one seed and pair are averaged)
        per_seed = (g.groupby([*_PAIR, "seed"], dropna=False)[["value", "baseline"]].mean()
                    .reset_index())
        per_seed["pair"] = per_seed.groupby(_PAIR, dropna=False, sort=True).ngroup()
        per_seed = per_seed.sort_values(["pair", "seed"], ignore_index=True)
        n_of = per_seed.groupby("pair").size()
        rows = []
        # pairs with the same number of seeds are tested in one vectorised paired t-test,
        # computed as scipy.stats.ttest_rel computes it (two-sided)
        for n, pairs in n_of.groupby(n_of):
            block = per_seed[per_seed["pair"].isin(pairs.index)]
            x = block["value"].to_numpy(float).reshape(-1, n)
            b = block["baseline"].to_numpy(float).reshape(-1, n)
            d = x - b
            gain = d.mean(axis=1)
            if n >= 2:
                sd = d.std(axis=1, ddof=1)
                half = stdtrit(n - 1, 0.975) * sd / math.sqrt(n)
                with np.errstate(all="ignore"):  # no spread: t = ±inf (p 0) or 0/0 (p NaN)
                    t = d.mean(axis=1) / np.sqrt(d.var(axis=1, ddof=1) / n)
                    p = np.asarray(2 * stdtr(n - 1, -np.abs(t)), dtype=float)
            else:
                half = p = np.full(len(d), math.nan)
            keys = block.iloc[::n][_PAIR].to_dict("records")
            for i, key in enumerate(keys):
                rows.append({**key, "metric": col, "mean": float(x[i].mean()),
                             "baseline": float(b[i].mean()), "gain": float(gain[i]),
                             "ci_low": float(gain[i] - half[i]),
                             "ci_high": float(gain[i] + half[i]),
                             "p_value": float(p[i]), "n_seeds": int(n)})
        cols = [*_PAIR, "metric", "mean", "baseline", "gain", "ci_low", "ci_high", "p_value",
                "n_seeds"]
        out = pd.DataFrame(rows, columns=cols)
        out["n_seeds"] = out["n_seeds"].astype(int)
        out["few_seeds"] = out["n_seeds"] < MIN_SEEDS
        keys = ["ci_low", "gain"] if rank_by == "ci_low" else ["gain"]
        # NaN lower bounds (one seed) sort last; ties by gain, then the pair's names
        out = out.sort_values([*keys, *_PAIR], ascending=[False] * len(keys)
                              + [True] * len(_PAIR), na_position="last", ignore_index=True)
        return out if k is None else out.head(k).reset_index(drop=True)

    def transferability(self, metric: str = "frame_acc") -> pd.DataFrame:
        """One row per transfer edge: every transferability estimate logged on its
        fine-tunes (``estimate.<name>``, mean over seeds) and the measured gain with its
        95 % CI (:func:`study.estimates.transferability_table`). The gain is of test
        metrics of each run's reported model: under :attr:`protocol` ``validation`` its best
        validation iteration, under ``paper`` its last iteration."""
        from .estimates import transferability_table

        return transferability_table(self, metric)

    def estimator_quality(self, metric: str = "frame_acc", *, n_boot: int = 1000,
                          seed: int = 0) -> pd.DataFrame:
        """Per estimator: Spearman and Kendall tau-b against the measured gains over this
        study's edges, bootstrap 95 % CIs and the top-1 hit rate per target split
        (``trainables.estimator_quality.estimator_quality`` over :meth:`transferability`)."""
        from .estimates import quality_table

        return quality_table(self.transferability(metric), n_boot=n_boot, seed=seed)

    def _halved_runs(self) -> set[str]:
        """Run ids of fine-tunes successive halving stopped (:mod:`study.halving`)."""
        from .halving import halved_rung

        return {r.run_id for r in self.records if halved_rung(r.tags) is not None}

    def budget(self, metric: str = "frame_acc") -> pd.DataFrame:
        """A budgeted study's edges (``all_pairs.budget``), one row per edge and seed: the
        estimate ranked by, rank, decision (chosen | skipped), whether its fine-tune trained
        and its ``metric`` (:func:`study.budget.budget_table`). Empty without a budget."""
        from .budget import budget_table
        from .halving import halving_table

        key = metric_key(metric_column(metric))
        halving = halving_table(self.records, key)  # study.halving: rows of its fine-tunes
        return halving if not halving.empty else budget_table(self.records, key)

    def budget_regret(self, full: StudyResults | None = None, *, per_target: int | None = None,
                      by: str | None = None, metric: str = "frame_acc") -> pd.DataFrame:
        """What a budget saved and missed against the full graph, per target split,
        arrangement and seed (:func:`study.budget.regret_table`: the best measured gain of
        the full graph vs the best, in the full graph, among the sources the budget chose;
        ``regret`` >= 0, ``hit``). ``attrs["fine_tunes"]``: ``{"budgeted", "full",
        "saved"}`` fine-tune counts.

        * ``full`` given: ``self`` is the budgeted study (its choices from the estimate
          runs' tags), ``full`` a study of the same graph without a budget.
        * ``full`` None: ``self`` is a full study and the budget ``{per_target, by}`` is
          simulated from the estimates logged on its own fine-tunes (the numbers a
          budgeted run computes for the same config and seed)."""
        from .budget import budget_estimators, choices_of, regret_table, simulated_choices

        keys = ["target", "target_split", "arrangement", "seed", "source"]
        base = full if full is not None else self
        g = base.gains(metric, mode="transfer")
        n_full = int((base.results()["kind"] == "finetune").sum())
        if full is not None:
            choices = choices_of(self.budget(metric))  # halving: chosen = the survivors
            n_budget = int((self.results()["kind"] == "finetune").sum())
            n_budget -= len(self._halved_runs() & set(self.results()["run_id"]))
        else:
            if per_target is None or by not in budget_estimators():
                raise ValueError("a simulated budget needs per_target and by (one of: "
                                 f"{', '.join(budget_estimators())})")
            per_seed = self._per_seed_estimates(by)
            choices = simulated_choices(per_seed, per_target, by)
            n_budget = int(choices["chosen"].sum())
        out = regret_table(choices, g[[*keys, "gain"]])
        out.attrs["fine_tunes"] = {"budgeted": n_budget, "full": n_full,
                                   "saved": n_full - n_budget}
        return out

    def _per_seed_estimates(self, by: str) -> pd.DataFrame:
        """target, target_split, arrangement, seed, source, ``by``: the estimate logged on
        each finished fine-tune (or estimate) run; NaN where none was."""
        rows = {}
        for r in self._tasks:
            t = r.tags
            if t.get(task_tag("kind")) not in ("finetune", "estimate"):
                continue
            key = (t.get(task_tag("target"), ""), t.get(task_tag("target_split"), ""),
                   t.get(task_tag("arrangement"), ""), int_or_none(t.get(task_tag("seed"))),
                   t.get(task_tag("source"), ""))
            v = r.metrics.get(f"{ESTIMATE_PREFIX}{by}", math.nan)
            if key not in rows or rows[key] != rows[key]:
                rows[key] = v
        cols = ["target", "target_split", "arrangement", "seed", "source"]
        return pd.DataFrame([[*k, v] for k, v in rows.items()], columns=[*cols, by])

    def _curve_of(self) -> dict[str, list[tuple[int, float]]]:
        """``{run_id: [(iteration, frame_acc)]}`` of every finished task run that trained
        (see :meth:`convergence`); fetched once, in bulk, on first use."""
        if self._curves is None:
            if self._histories is None:
                raise ValueError("these results were built from records alone: convergence "
                                 "needs metric histories (StudyResults.from_logger, or "
                                 "from_records(..., histories=logger.metric_histories))")
            # an adopted run (study.reuse) holds final values only; its curve is the history
            # of the run that trained
            origin = {r.run_id: r.tags.get(TAG_REUSED_FROM) or r.run_id for r in self._tasks
                      if r.tags.get(task_tag("kind")) not in _NO_CURVE_KINDS}
            got = self._histories(sorted(set(origin.values())), CURVE_METRIC)
            self._curves = {rid: got[o] for rid, o in origin.items() if o in got}
        return self._curves

    def convergence(self, target: str | None = None, *, target_split: str | None = None,
                    mode: str = "transfer", wide: bool = False) -> pd.DataFrame:
        """Frame accuracy over training iterations: ``frame_acc``'s step history (step =
        iteration; one value per step) of the baselines and the ``mode`` runs into
        ``target`` (None: all targets). A run adopted from an earlier study version
        (``ks.reused_from``) shows the history of the run that trained. A search's run
        (its trials hold the curves) and a budget's estimate run (trains nothing) have
        none. Stores written before issue 11 also hold ``curve.frame_acc.<it>`` metrics
        with the same values: they are ignored.

        Long (default): target, target_split, series, source, source_split, arrangement,
        mode, seed, run_id, iteration, frame_acc. ``series`` is ``"baseline"`` or the source
        (with the arrangement in brackets when a target has one source in several).
        Wide: index iteration, one column per series, mean over seeds and splits (requires a
        ``target``)."""
        rows = []
        curves = self._curve_of()
        for r in self._tasks:
            t = r.tags
            if t.get(task_tag("kind")) != "baseline" and t.get(task_tag("mode")) != mode:
                continue
            if target is not None and t.get(task_tag("target")) != target:
                continue
            if target_split is not None and t.get(task_tag("target_split")) != target_split:
                continue
            base = {k: t.get(task_tag(k), "") for k in
                    ("target", "target_split", "source", "source_split", "arrangement", "mode")}
            base["seed"] = int_or_none(t.get(task_tag("seed")))
            base["run_id"] = r.run_id
            base["kind"] = t.get(task_tag("kind"), "")
            for it, v in curves.get(r.run_id, ()):
                rows.append({**base, "iteration": it, "frame_acc": v})
        cols = ["target", "target_split", "series", "source", "source_split", "arrangement",
                "mode", "seed", "run_id", "iteration", "frame_acc"]
        if not rows:
            long = pd.DataFrame(columns=cols)
        else:
            long = pd.DataFrame(rows)
            long["series"] = _series_labels(long)
            long = long[cols].sort_values(["target", "target_split", "series", "seed",
                                           "iteration"], ignore_index=True)
        long["seed"] = long["seed"].astype("Int64")
        long["iteration"] = long["iteration"].astype("int64")
        long["frame_acc"] = long["frame_acc"].astype(float)
        if not wide:
            return long
        if target is None:
            raise ValueError("convergence(wide=True) needs a target")
        w = long.pivot_table(index="iteration", columns="series", values="frame_acc",
                             aggfunc="mean")
        order = (["baseline"] if "baseline" in w.columns else []) + sorted(
            c for c in w.columns if c != "baseline")
        return w.reindex(columns=order)

    # -- searches (study.search_results) ------------------------------------------------
    def search_trials(self, task_id: str | None = None, *,
                      all_attempts: bool = False) -> pd.DataFrame:
        """One row per trial of each search, like Optuna's ``trials_dataframe()``
        (:func:`study.search_results.search_trials`)."""
        return search_trials(self.records, task_id, all_attempts=all_attempts)

    def search_summary(self) -> pd.DataFrame:
        """One row per search: its best COMPLETE trial, params and trial counts
        (:func:`study.search_results.search_summary`)."""
        return search_summary(self.records)

    # -- figures ------------------------------------------------------------------------------
    def plot_transfer_heatmap(self, metric: str = "frame_acc", mode: str = "transfer",
                              *, arrangement: str | None = None) -> Figure:
        """Heatmap of :meth:`transfer_matrix` (:func:`study.plots.plot_transfer_heatmap`)."""
        return plot_transfer_heatmap(self, metric, mode, arrangement=arrangement)

    def plot_convergence(self, target: str, *, target_split: str | None = None,
                         mode: str = "transfer") -> Figure:
        """Frame accuracy vs iterations per source and the baseline with 95 % bands, like
        the paper's Figs 3-5 (:func:`study.plots.plot_convergence`)."""
        return plot_convergence(self, target, target_split=target_split, mode=mode)


def _series_labels(long: pd.DataFrame) -> pd.Series:
    """"baseline" for baselines; the source, plus "[arrangement]" when that source reaches the
    same target in more than one arrangement."""
    runs = long[long["kind"] != "baseline"].drop_duplicates(["target", "source", "arrangement"])
    multi = set(runs.groupby(["target", "source"]).size().loc[lambda s: s > 1].index)
    labels = []
    for kind, tgt, src, arr in zip(long["kind"], long["target"], long["source"],
                                   long["arrangement"], strict=True):
        if kind == "baseline":
            labels.append("baseline")
        elif (tgt, src) in multi:
            labels.append(f"{src} [{arr}]")
        else:
            labels.append(src)
    return pd.Series(labels, index=long.index)


def _from_spec(path: Path) -> tuple[str, list[str], str]:
    """(name, [content hash] or [], tracking URI) of a spec file. The hash needs the datasets'
    cards; without them (e.g. querying from another machine) the latest run of the name is
    used, with a warning."""
    from data_prep.errors import DataError

    from .spec import load_spec
    from .uri import open_study_at

    try:
        loaded = open_study_at(path)
    except DataError as e:
        spec = load_spec(path)  # schema errors still raise
        warnings.warn(f"{path}: cannot compute the study hash ({e}); using the latest run of "
                      f"study {spec.name!r}", stacklevel=3)
        return spec.name, [], spec.tracking_uri
    return loaded.spec.name, [loaded.hash], loaded.spec.tracking_uri


def load_study(name_or_spec_path: str | os.PathLike[str], tracking_uri: str | None = None,
               *, study_hash: str | None = None) -> StudyResults:
    """Load a study's results from MLflow in bulk.

    ``name_or_spec_path``: a study name, or a spec file (``.yaml``/``.yml``) whose name,
    content hash and ``tracking_uri`` are used (relative dataset paths against
    ``$KITCHEN_DATA_ROOT`` when set). The tracking URI is :func:`study.uri.resolve_tracking_uri`:
    ``tracking_uri`` > ``$MLFLOW_TRACKING_URI`` > the spec's > ``sqlite:///mlflow.db``
    (relative to the working directory). ``study_hash``: which version of the study; default
    the spec's hash, or for a bare name the most recently started one.

    Raises :class:`StudyNotFound` when the store, the study or the hash does not exist (a
    missing SQLite file is never created by a query).
    """
    from .tracking import MlflowRunLogger

    arg = str(name_or_spec_path)
    hashes: list[str] = [study_hash] if study_hash else []
    spec_uri = None
    if arg.endswith((".yaml", ".yml")) or Path(arg).is_file():
        name, spec_hashes, spec_uri = _from_spec(Path(arg))
        hashes = hashes or spec_hashes
    else:
        name = arg
    from .uri import resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri, spec_uri)  # the one rule (study.uri)
    db = sqlite_path(uri)
    if db is not None and not db.is_file():
        raise StudyNotFound(f"no MLflow database at {db} (tracking URI {uri})")
    return StudyResults.from_logger(MlflowRunLogger(uri), name, hashes[0] if hashes else None)
