"""A budgeted transfer graph: fine-tune only the k best-estimated sources of each target
(or halve them, :mod:`study.halving`).

Spec: ``experiments.all_pairs.budget: {per_target: k, by: <estimator>}`` (:class:`BudgetSpec`).

Rules (the planner, the searcher, ``status`` and the report all apply these):

* **What is budgeted.** The transfer edges that ``all_pairs`` declares (``mode: transfer``
  only: a joint edge has no pre-train to estimate with, so ``all_pairs`` with a budget and
  mode ``joint`` is a spec error). An edge also declared under ``experiments.edges`` is
  unconditional: it always runs and takes no part in the budget. Baselines and pre-trains
  always run.
* **Groups.** One group per (target dataset, target split, arrangement, seed): its edges
  are the sources that ``all_pairs`` pairs with that target. ``per_target`` = k fine-tunes
  run per group (all of them when the group has k or fewer).
* **Estimates first.** Each budgeted edge gets a task of kind ``estimate``
  (``study.plan.TASK_KINDS``): the edge's fine-tune config, run as a trial that only
  computes :func:`study.estimates.edge_estimates` in its setup (the pre-trained source over
  <= 5 % of the fine-tune's frames, the label structure) and logs ``estimate.<name>`` on
  its own run; it depends on the edge's pre-train and trains nothing. It runs on a worker,
  not in the driver: it loads the target table and the source checkpoint, which the
  driver (the process that runs Tune's event loop, on a cluster's head node) should not.
  The edge's fine-tune, when it runs, does not estimate again (same config, same frames:
  the same numbers).
* **Release rule** (:func:`choose`, applied by :func:`release` in the driver's searcher
  once every estimate task of a group has ended, FINISHED or FAILED, or was skipped):
  the candidates are the edges whose estimate task was not skipped (a pre-train that
  failed takes its edges out; their fine-tunes are reported as not run, as without a
  budget). They are ranked by ``estimate.<by>`` in the estimator's orientation
  (``ESTIMATORS[by].higher_is_better``); an edge without a finite value (its estimate
  failed) ranks after every edge with one; ties (equal values, or no value) are broken by
  the fine-tune's task id, ascending (i.e. by source name). The first k are *chosen*: their
  fine-tunes are released; the others are *skipped* ("estimated, not trained"): no
  fine-tune run. The decision is recorded on each edge's estimate run as tags
  :data:`TAG_BUDGET` (``chosen`` | ``skipped``), :data:`TAG_BUDGET_RANK` (``r/n``) and
  :data:`TAG_BUDGET_BY`; ``status`` and the report read those tags.
* **Allowed estimators** (:func:`budget_estimators`): every registered estimator except
  those that need a fine-tune (:data:`NEEDS_FINETUNE`: ``probe``, which fine-tunes
  briefly and compares with the baseline). ``label_transition`` has no value under
  ``concat`` (no shared space): every edge then ties and the task ids decide.
* **Reuse.** Estimate and fine-tune tasks keep their content keys: a fine-tune trained by a
  budgeted version is reused by a full one and vice versa; a skipped edge whose fine-tune an
  earlier version finished is adopted like any other finished task (status FINISHED).
* **Successive halving** (``budget: {halving: {min_iterations: m, reduction_factor: η}}``,
  :class:`HalvingSpec`; mutually exclusive with ``per_target``/``by``) is built in
  :mod:`study.halving`: every all_pairs fine-tune of a group starts; at the rungs ``m,
  m·η, …`` (which ``eval_at`` must list) a group's live fine-tunes are ranked by their
  ``frame_acc`` at the rung once all have reported it (ties by source name), the better
  ``ceil(n/η)`` continue and the others are stopped by the driver's scheduler and tagged
  ``halved @ <rung>``; a halved run is no measured result (left out of the gains).

What the budget saved and missed: :func:`regret_table` (``StudyResults.budget_regret``).
Pure: no Ray, no MLflow, no torch.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, field_validator, model_validator

from .mlflow_layout import ESTIMATE_PREFIX, finite_or_none, task_tag

if TYPE_CHECKING:
    from .scheduling import StudyState

__all__ = [
    "NOT_TRAINED",
    "TAG_BUDGET",
    "TAG_BUDGET_BY",
    "TAG_BUDGET_RANK",
    "BudgetBook",
    "BudgetEdge",
    "BudgetGroup",
    "BudgetPlan",
    "BudgetSpec",
    "HalvingSpec",
    "budget_decisions",
    "budget_estimators",
    "budget_table",
    "choices_of",
    "choose",
    "edge_fields",
    "dry_run_lines",
    "make_budget",
    "regret_table",
    "release",
    "report_section",
    "simulated_choices",
]

log = logging.getLogger(__name__)

#: Estimators that need a (short) fine-tune: a budget cannot rank by them.
NEEDS_FINETUNE: frozenset[str] = frozenset({"probe"})
#: The state of a skipped edge's fine-tune in ``status`` and the report.
NOT_TRAINED = "estimated, not trained"
#: Tags of an estimate run once its group is decided.
TAG_BUDGET = task_tag("budget")
TAG_BUDGET_RANK = task_tag("budget_rank")
TAG_BUDGET_BY = task_tag("budget_by")


def budget_estimators() -> tuple[str, ...]:
    """Estimator names a budget may rank by (registry order)."""
    from trainables.transferability import ESTIMATORS

    return tuple(n for n in ESTIMATORS if n not in NEEDS_FINETUNE)


class HalvingSpec(BaseModel):
    """``budget.halving``: the first rung and the reduction factor η (:mod:`study.halving`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_iterations: PositiveInt = Field(description="the first rung (iterations)")
    reduction_factor: int = Field(default=2, ge=2,
                                  description="η: 1/η of a group continues at each rung")


class BudgetSpec(BaseModel):
    """``all_pairs.budget``: fine-tune the ``per_target`` best sources by estimate ``by``, or
    successive halving (``halving``, :mod:`study.halving`); one of the two."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    per_target: int | None = Field(default=None, ge=1,
                                   description="fine-tunes per target split, arrangement, seed")
    by: str | None = Field(default=None,
                           description="estimator name (trainables.transferability.ESTIMATORS)")
    halving: HalvingSpec | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> BudgetSpec:
        if self.halving is not None:
            if self.per_target is not None or self.by is not None:
                raise ValueError("budget.halving and budget.per_target/by are mutually "
                                 "exclusive: give one of them")
        elif self.per_target is None or self.by is None:
            raise ValueError("a budget is {per_target: k, by: <estimator>} or "
                             "{halving: {min_iterations: m, reduction_factor: 2}}")
        return self

    def hashed(self) -> dict[str, Any]:
        """What enters the study hash: the fields given (so a ``{per_target, by}`` budget
        hashes as it did before halving existed)."""
        return self.model_dump(mode="json", exclude_none=True)

    @field_validator("by")
    @classmethod
    def _known(cls, v: str | None) -> str | None:
        if v is None:
            return v
        ok = budget_estimators()
        if v not in ok:
            from trainables.transferability import ESTIMATORS

            why = ("needs a fine-tune" if v in NEEDS_FINETUNE and v in ESTIMATORS
                   else "unknown estimator")
            raise ValueError(f"{why} {v!r} (a budget ranks by one of: {', '.join(ok)})")
        return v


# -- the plan's side --------------------------------------------------------------------------


@dataclass(frozen=True)
class BudgetEdge:
    """One budgeted edge: its estimate task, its (conditional) fine-tune, its source."""

    estimate: str
    finetune: str
    source: str


@dataclass(frozen=True)
class BudgetGroup:
    """The edges into one target split, arrangement and seed."""

    target: str
    target_split: str
    arrangement: str
    seed: int
    edges: tuple[BudgetEdge, ...]

    @property
    def name(self) -> str:
        return f"{self.target}.{self.target_split} {self.arrangement} s{self.seed}"


@dataclass(frozen=True)
class BudgetPlan:
    """The budget of a plan (``Plan.budget``): k, the estimator and the groups."""

    per_target: int
    by: str
    higher_is_better: bool
    groups: tuple[BudgetGroup, ...]

    def group_of(self, task_id: str) -> BudgetGroup | None:
        """The group of a conditional fine-tune or of an estimate task."""
        for g in self.groups:
            if any(task_id in (e.finetune, e.estimate) for e in g.edges):
                return g
        return None

    @property
    def conditional(self) -> frozenset[str]:
        """Fine-tune ids that run only if the budget chooses them."""
        return frozenset(e.finetune for g in self.groups for e in g.edges)

    @property
    def estimates(self) -> frozenset[str]:
        return frozenset(e.estimate for g in self.groups for e in g.edges)

    def max_finetunes(self) -> int:
        """Fine-tunes the budget lets run at most (``min(k, edges)`` per group)."""
        return sum(min(self.per_target, len(g.edges)) for g in self.groups)


def estimate_id(finetune_id: str) -> str:
    """``finetune:<rest>`` -> ``estimate:<rest>``."""
    return "estimate:" + finetune_id.split(":", 1)[1]


def make_budget(spec: BudgetSpec, finetunes: Iterable[Any]) -> tuple[list[Any], BudgetPlan]:
    """The estimate tasks and the :class:`BudgetPlan` of the budgeted fine-tunes
    (``study.plan.Task`` objects of kind ``finetune``): each estimate task is its fine-tune
    with kind ``estimate`` and id ``estimate:<rest of the fine-tune id>``."""
    import dataclasses

    from trainables.transferability import ESTIMATORS

    groups: dict[tuple[str, str, str, int], list[BudgetEdge]] = {}
    estimates = []
    for t in sorted(finetunes, key=lambda t: t.id):
        eid = estimate_id(t.id)
        estimates.append(dataclasses.replace(t, id=eid, kind="estimate", key=""))
        key = (t.target, t.target_split, t.arrangement, int(t.seed))
        groups.setdefault(key, []).append(BudgetEdge(eid, t.id, t.source or ""))
    plan = BudgetPlan(spec.per_target, spec.by, ESTIMATORS[spec.by].higher_is_better,
                      tuple(BudgetGroup(*k, tuple(v)) for k, v in sorted(groups.items())))
    return estimates, plan


# -- the rule ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    """A group's decision: the candidates in rank order, the chosen ones, their values."""

    group: BudgetGroup
    ranked: tuple[BudgetEdge, ...]
    chosen: frozenset[str]  # fine-tune ids
    values: Mapping[str, float | None]  # estimate id -> value (None: none)

    def rank(self, edge: BudgetEdge) -> int:
        return self.ranked.index(edge) + 1

    def tags(self, edge: BudgetEdge, by: str) -> dict[str, str]:
        return {TAG_BUDGET: "chosen" if edge.finetune in self.chosen else "skipped",
                TAG_BUDGET_RANK: f"{self.rank(edge)}/{len(self.ranked)}",
                TAG_BUDGET_BY: by}

    def why_skipped(self, edge: BudgetEdge, by: str, k: int) -> str:
        v = self.values.get(edge.estimate)
        shown = "no value" if v is None else f"{v:.4g}"
        return (f"{NOT_TRAINED}: rank {self.rank(edge)}/{len(self.ranked)} by estimate.{by} "
                f"({shown}), budget {k} per target")


def choose(group: BudgetGroup, values: Mapping[str, float | None], k: int,
           higher_is_better: bool, candidates: Iterable[str] | None = None) -> Decision:
    """The release rule (module doc): rank the candidate edges (estimate ids in
    ``candidates``; None: all) by ``values[estimate id]``, oriented; no finite value ranks
    last; ties by fine-tune id; the first ``k`` are chosen."""
    cand = None if candidates is None else set(candidates)
    edges = [e for e in group.edges if cand is None or e.estimate in cand]
    vals = {e.estimate: finite_or_none(values.get(e.estimate)) for e in edges}

    def key(e: BudgetEdge) -> tuple:
        v = vals[e.estimate]
        return (v is None, 0.0 if v is None else (-v if higher_is_better else v), e.finetune)

    ranked = tuple(sorted(edges, key=key))
    return Decision(group, ranked, frozenset(e.finetune for e in ranked[:k]), vals)


# -- the driver's side (study.scheduling) ------------------------------------------------------


@dataclass
class BudgetBook:
    """The searcher's budget state: fine-tunes held until their group is decided, the
    estimates recorded from trial results, the decisions and the skipped fine-tunes."""

    plan: BudgetPlan
    held: list[str] = field(default_factory=list)  # conditional fine-tunes not yet decided
    values: dict[str, float | None] = field(default_factory=dict)  # estimate id -> value
    decisions: dict[str, Decision] = field(default_factory=dict)  # group name -> decision
    skipped: dict[str, str] = field(default_factory=dict)  # fine-tune id -> why

    @classmethod
    def start(cls, plan: BudgetPlan, todo: Iterable[str]) -> BudgetBook:
        cond = plan.conditional
        return cls(plan, held=[t for t in todo if t in cond])

    def record(self, task_id: str, result: Mapping[str, Any] | None) -> None:
        """An estimate task's trial ended with ``result`` (its ``estimates`` dict)."""
        if task_id in self.plan.estimates and result:
            est = result.get("estimates") or {}
            if self.plan.by in est:
                self.values[task_id] = finite_or_none(est[self.plan.by])


def _read_value(state: StudyState, run_id: str, by: str) -> float | None:
    if state.logger is None:
        return None
    return finite_or_none(state.logger.get_run(run_id).metrics.get(f"{ESTIMATE_PREFIX}{by}"))


def release(state: StudyState) -> list[str]:
    """Decide every group whose estimate tasks have all ended (``state``: the searcher's
    ``StudyState``: ``budget``, ``pending``, ``done``, ``failed``, ``skipped``, ``plan``,
    optional ``logger``): tag its estimate runs, move its chosen held fine-tunes into
    ``pending`` (in plan order) and record the others in ``budget.skipped``. Returns the
    fine-tune ids released."""
    book: BudgetBook | None = state.budget
    if book is None:
        return []
    released: list[str] = []
    bp = book.plan
    for g in bp.groups:
        if g.name in book.decisions:
            continue
        ended = all(e.estimate in state.done or e.estimate in state.failed
                    or e.estimate in state.skipped for e in g.edges)
        if not ended:
            continue
        for e in g.edges:  # finished before this call (resume, reuse): read from the store
            if e.estimate in state.done and e.estimate not in book.values:
                book.values[e.estimate] = _read_value(state, state.done[e.estimate], bp.by)
        cand = [e.estimate for e in g.edges if e.estimate not in state.skipped]
        d = choose(g, book.values, bp.per_target, bp.higher_is_better, cand)
        book.decisions[g.name] = d
        logger = state.logger
        for e in d.ranked:
            if logger is not None and e.estimate in state.done:
                logger.set_tags(state.done[e.estimate], d.tags(e, bp.by))
            if e.finetune not in book.held:
                continue
            book.held.remove(e.finetune)
            if e.finetune in d.chosen:
                released.append(e.finetune)
            else:
                book.skipped[e.finetune] = d.why_skipped(e, bp.by, bp.per_target)
        # held fine-tunes of non-candidates: their estimate was skipped, so is their
        # pre-train; the normal dependency rule reports them
        for e in g.edges:
            if e.finetune in book.held:
                book.held.remove(e.finetune)
                released.append(e.finetune)
        log.info("budget %s: chose %s", g.name, sorted(d.chosen))
    if released:
        order = {t.id: i for i, t in enumerate(state.plan)}
        state.pending[:] = sorted([*state.pending, *released], key=order.__getitem__)
    return released


# -- dry run, status, report ------------------------------------------------------------------


def dry_run_lines(plan: Any) -> list[str]:
    """What ``run --dry-run`` says about the budget (nothing without one; successive
    halving: :meth:`study.halving.HalvingPlan.dry_run_lines`)."""
    bp = getattr(plan, "budget", None)
    if bp is None:
        # the plan carries its halving, which says itself what it does: this module does not
        # import study.halving (halving builds on this module's groups, not the reverse)
        hp = getattr(plan, "halving", None)
        return [] if hp is None else hp.dry_run_lines()
    n = len(bp.conditional)
    most = bp.max_finetunes()
    return [f"budget: {n} fine-tune(s) are conditional (marked '?'): per target split, "
            f"arrangement and seed, only the {bp.per_target} best by estimate.{bp.by} "
            f"({'higher' if bp.higher_is_better else 'lower'} is better) run once the "
            f"{len(bp.estimates)} estimate task(s) are in: at most {most} fine-tune(s) run, "
            f"at least {n - most} are estimated, not trained",
            "  (the time estimate below leaves the estimate tasks out and counts every "
            "conditional fine-tune: an upper bound)"]


def budget_decisions(plan: Any, finished: Mapping[str, Any]) -> dict[str, str]:
    """``{fine-tune id: "conditional" | "chosen" | "skipped"}`` for a plan's conditional
    fine-tunes, from the :data:`TAG_BUDGET` tag of their estimate task's finished run
    (``finished``: task id -> ``RunRecord``, as ``latest_finished`` gives)."""
    bp = getattr(plan, "budget", None)
    if bp is None:
        return {}
    out = {}
    for g in bp.groups:
        for e in g.edges:
            r = finished.get(e.estimate)
            tag = "" if r is None else r.tags.get(TAG_BUDGET, "")
            out[e.finetune] = tag if tag in ("chosen", "skipped") else "conditional"
    return out


def edge_fields(tags: Mapping[str, str]) -> dict[str, Any]:
    """A budgeted edge's group (target, split, arrangement, seed) and source, from its run's
    tags: the leading columns of every budget table (this module's and halving's)."""
    return {
        "target": tags.get(task_tag("target"), ""),
        "target_split": tags.get(task_tag("target_split"), ""),
        "arrangement": tags.get(task_tag("arrangement"), ""),
        "seed": int(tags.get(task_tag("seed"), "0") or 0),
        "source": tags.get(task_tag("source"), ""),
    }


def budget_table(records: Iterable[Any], metric: str = "frame_acc") -> Any:
    """One row per budgeted edge and seed of a loaded study's runs (``RunRecord``s): target,
    target_split, arrangement, seed, source, ``estimate`` (the value ranked by), ``by``,
    ``rank`` ("r/n"), ``decision`` (chosen | skipped | "" while undecided), ``trained``
    (its fine-tune has a FINISHED run), ``value`` (the fine-tune's ``metric``; NaN when not
    trained). From the estimate runs' budget tags (:func:`release`)."""
    import pandas as pd

    from .mlflow_layout import latest_finished

    runs = latest_finished(records)
    rows = []
    for r in runs.values():
        t = r.tags
        if t.get(task_tag("kind")) != "estimate":
            continue
        by = t.get(TAG_BUDGET_BY, "")
        ft = runs.get("finetune:" + r.task_id.split(":", 1)[1])
        rows.append({
            **edge_fields(t),
            "by": by,
            "estimate": r.metrics.get(f"{ESTIMATE_PREFIX}{by}", math.nan) if by else math.nan,
            "rank": t.get(TAG_BUDGET_RANK, ""),
            "decision": t.get(TAG_BUDGET, ""),
            "trained": ft is not None,
            "value": math.nan if ft is None else ft.metrics.get(metric, math.nan),
        })
    cols = ["target", "target_split", "arrangement", "seed", "source", "by", "estimate",
            "rank", "decision", "trained", "value"]
    df = pd.DataFrame(rows, columns=cols)
    # "r/n" as a number (undecided last), so rank 10 sorts after rank 2
    order = [int(r.split("/")[0]) if r else 1 << 30 for r in df["rank"]]
    df = df.assign(_r=order).sort_values(
        ["target", "target_split", "arrangement", "seed", "_r", "source"], ignore_index=True)
    return df.drop(columns="_r")


def simulated_choices(transferability_rows: Any, per_target: int, by: str) -> Any:
    """The budget's choices as :func:`choose` would make them from estimates logged on a
    *full* study's fine-tune runs (the same numbers an estimate task computes: same config,
    same frames): one row per edge and seed with ``chosen``. ``transferability_rows``:
    per-seed rows with target, target_split, arrangement, seed, source and column ``by``."""
    import pandas as pd

    from trainables.transferability import ESTIMATORS

    hib = ESTIMATORS[by].higher_is_better
    out = []
    keys = ["target", "target_split", "arrangement", "seed"]
    for key, g in transferability_rows.groupby(keys, sort=True):
        edges = tuple(BudgetEdge(f"e:{s}", f"f:{s}", s) for s in sorted(g["source"]))
        grp = BudgetGroup(*key, edges)
        vals = {f"e:{s}": v for s, v in zip(g["source"], g[by], strict=True)}
        d = choose(grp, vals, per_target, hib)
        for e in edges:
            out.append({**dict(zip(keys, key, strict=True)), "source": e.source,
                        "chosen": e.finetune in d.chosen})
    return pd.DataFrame(out, columns=[*keys, "source", "chosen"])


def regret_table(choices: Any, gains: Any) -> Any:
    """What a budget missed, per target split, arrangement and seed: ``choices`` (rows of
    target, target_split, arrangement, seed, source, chosen) against ``gains`` measured in
    the full graph (rows of the same keys with ``gain``). Columns: the keys, ``edges``,
    ``chosen`` (sources, comma-separated), ``best_source`` and ``best_gain`` (the best
    measured gain of the full graph), ``best_chosen_source`` and ``best_chosen_gain`` (the
    best full-graph gain among the chosen), ``regret`` = best_gain - best_chosen_gain (>= 0;
    NaN when no chosen edge was measured), ``hit`` (the best source was chosen)."""
    import pandas as pd

    keys = ["target", "target_split", "arrangement", "seed"]
    g = gains.groupby([*keys, "source"], as_index=False)["gain"].mean()
    m = choices.merge(g, on=[*keys, "source"], how="left")
    rows = []
    for key, grp in m.groupby(keys, sort=True):
        measured = grp[grp["gain"].notna()].sort_values(["gain", "source"],
                                                        ascending=[False, True])
        chosen = grp[grp["chosen"].astype(bool)]
        cm = measured[measured["source"].isin(chosen["source"])]
        best = measured.iloc[0] if len(measured) else None
        bc = cm.iloc[0] if len(cm) else None
        rows.append({
            **dict(zip(keys, key, strict=True)), "edges": len(grp),
            "chosen": ",".join(sorted(chosen["source"])),
            "best_source": None if best is None else best["source"],
            "best_gain": math.nan if best is None else float(best["gain"]),
            "best_chosen_source": None if bc is None else bc["source"],
            "best_chosen_gain": math.nan if bc is None else float(bc["gain"]),
        })
    cols = [*keys, "edges", "chosen", "best_source", "best_gain", "best_chosen_source",
            "best_chosen_gain", "regret", "hit"]
    out = pd.DataFrame(rows, columns=[c for c in cols if c not in ("regret", "hit")])
    out["regret"] = out["best_gain"] - out["best_chosen_gain"]
    out["hit"] = [b is not None and b in c.split(",")
                  for b, c in zip(out["best_source"], out["chosen"], strict=True)]
    return out[cols]


def report_section(table: Any) -> str:
    """The report's "Budgeted graph" section from :func:`budget_table` (empty without
    budgeted edges): one row per edge and seed, skipped ones as "estimated, not trained"."""
    if table is None or table.empty:
        return ""
    chosen = int((table["decision"] == "chosen").sum())
    skipped = int((table["decision"] == "skipped").sum())
    by = ", ".join(sorted({b for b in table["by"] if b})) or "-"
    if by == "halving":  # study.halving
        halved = int(table["decision"].str.startswith("stopped at").sum())
        head = (f"Successive halving: {chosen} fine-tune(s) survived every rung, {halved} "
                "stopped early (not measured results: left out of the gains).")
    else:
        head = (f"Fine-tunes chosen by estimate ({by}): {chosen} trained by the budget, "
                f"{skipped} {NOT_TRAINED}, {len(table) - chosen - skipped} undecided.")
    lines = ["## Budgeted graph", "", head, "",
             "| target | split | arrangement | seed | source | estimate | rank | state | "
             "frame_acc |", "|---|---|---|---|---|---|---|---|---|"]
    for r in table.itertuples():
        state = ("trained" if r.trained else NOT_TRAINED if r.decision == "skipped"
                 else "chosen, not trained yet" if r.decision == "chosen" else "undecided")
        if r.trained and r.decision == "skipped":
            state = "trained (reused; not chosen)"
        if r.decision.startswith("stopped at"):  # study.halving: halved at that rung
            state = r.decision
        est = "-" if r.estimate != r.estimate else f"{r.estimate:.4g}"
        acc = "-" if r.value != r.value else f"{r.value:.2f}"
        lines.append(f"| {r.target} | {r.target_split} | {r.arrangement} | {r.seed} | "
                     f"{r.source} | {est} | {r.rank or '-'} | {state} | {acc} |")
    return "\n".join(lines) + "\n"


def choices_of(table: Any) -> Any:
    """:func:`budget_table` rows as ``choices`` for :func:`regret_table`."""
    out = table[["target", "target_split", "arrangement", "seed", "source"]].copy()
    out["chosen"] = table["decision"] == "chosen"
    return out
