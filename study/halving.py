"""Successive halving over a target's transfer edges: every fine-tune starts, the better
ones continue.

Spec: ``experiments.all_pairs.budget: {halving: {min_iterations: m, reduction_factor: η}}``
(:class:`study.budget.BudgetSpec` with ``halving``, :class:`HalvingSpec`; mutually
exclusive with ``{per_target, by}``).

Rules (the planner, the driver's scheduler, ``--dry-run`` and the query apply these):

* **What is halved.** The transfer fine-tunes that ``all_pairs`` declares (``mode:
  transfer`` only, as for every budget). An edge also declared under ``experiments.edges``
  is unconditional and runs in full. Baselines and pre-trains always run in full. No
  estimate tasks: halving compares the fine-tunes' own measured ``frame_acc``.
* **Groups.** One group per (target dataset, target split, arrangement, seed), as for
  ``per_target`` (:class:`study.budget.BudgetGroup`).
* **Rungs.** ``m, m·η, m·η², …`` below ``experiments.iterations`` (:func:`rungs`). The
  spec's ``eval_at`` must list every rung (the fine-tunes evaluate there); a spec that
  lacks one is an error naming the missing rungs (the planner does not add them: the
  curves of every task would change behind the user's back).
* **The rule** (:meth:`HalvingBook.decide`, synchronous per group, deterministic): a rung
  of a group is decided once every *live* member of the group has reported ``frame_acc``
  at that rung (live: not halved at an earlier rung, not failed, not skipped because its
  pre-train failed, not finished before this run of the driver started), and only after
  the group's earlier rungs. The n live members are ranked by their ``frame_acc`` at the
  rung, higher first; a member without a finite value ranks last; ties by source name, then
  task id. The first ``ceil(n / η)`` continue (at least one: a group of 1 always
  continues); the others are *halved at that rung*.
* **Stopping.** The driver's :class:`study.scheduling.StudyScheduler` answers STOP to a
  halved fine-tune's next result and CONTINUE otherwise. Trials are not paused while their
  group waits for slower members: a member keeps training until its rung is decided, so it
  may stop one evaluation later than the rung it lost at, or even finish; either way it is
  halved (the decision depends only on the rung values, not on timing).
* **Record.** Every halved fine-tune's run ends FINISHED with tag :data:`TAG_BUDGET` =
  ``halved @ <rung>`` and ``· stopped @ <iteration it stopped at>`` in its name
  (:func:`study.mlflow_layout.stopped_name`, as for a trial ASHA stopped); every fine-tune
  under halving carries :data:`TAG_BUDGET_BY` = ``halving`` (a survivor has no
  :data:`TAG_BUDGET`). A halved run is not a measured transfer result:
  ``StudyResults.gains`` (hence ``transfer_matrix``, ``best_transfer_pairs``, the report)
  leave it out; ``StudyResults.budget()`` shows it as ``stopped at <rung>``;
  ``budget_regret(full)`` takes the survivors as the chosen sources.

Pure: no Ray, no MLflow, no torch.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .budget import (
    TAG_BUDGET,
    TAG_BUDGET_BY,
    BudgetEdge,
    BudgetGroup,
    BudgetSpec,
    HalvingSpec,
    edge_fields,
)
from .mlflow_layout import RUN_NAME_TAG, finite_or_none, latest_finished, stopped_name, task_tag

if TYPE_CHECKING:
    from .tracking import RunLogger

__all__ = ["HALVED", "HALVING", "HalvingBook", "HalvingPlan",
           "HalvingSpec", "halved_rung", "halving_table",
           "make_halving",
           "mark_halved", "rungs"]

#: :data:`TAG_BUDGET_BY` of a fine-tune under halving.
HALVING = "halving"
#: Prefix of :data:`TAG_BUDGET` of a halved fine-tune: ``halved @ <rung>``.
HALVED = "halved @ "


def rungs(spec: HalvingSpec, iterations: int) -> tuple[int, ...]:
    """``m, m·η, m·η², …`` strictly below ``iterations`` (a rung at the last iteration
    would decide nothing)."""
    out, r = [], spec.min_iterations
    while r < iterations:
        out.append(r)
        r *= spec.reduction_factor
    return tuple(out)


@dataclass(frozen=True)
class HalvingPlan:
    """The halving of a plan (``Plan.halving``): the rungs, η and the groups."""

    rungs: tuple[int, ...]
    reduction_factor: int
    groups: tuple[BudgetGroup, ...]

    @property
    def members(self) -> frozenset[str]:
        """Fine-tune ids under halving."""
        return frozenset(e.finetune for g in self.groups for e in g.edges)

    def group_of(self, task_id: str) -> BudgetGroup | None:
        for g in self.groups:
            if any(e.finetune == task_id for e in g.edges):
                return g
        return None

    def dry_run_lines(self) -> list[str]:
        """What ``run --dry-run`` says about the halving."""
        out = [f"budget: successive halving over {len(self.members)} fine-tune(s) in "
               f"{len(self.groups)} group(s): at iterations {', '.join(map(str, self.rungs))} "
               f"each group's better 1/{self.reduction_factor} (by frame_acc) continue, the "
               "others stop",
               "  (the time estimate below counts every fine-tune in full: an upper bound)"]
        for g in self.groups:
            out.append(f"  halving {g.name}: " + ", ".join(e.finetune for e in g.edges))
        return out


def make_halving(spec: BudgetSpec, iterations: int, finetunes: Iterable[Any]
                 ) -> HalvingPlan:
    """The :class:`HalvingPlan` of the all_pairs fine-tunes (``study.plan.Task`` objects)."""
    groups: dict[tuple[str, str, str, int], list[BudgetEdge]] = {}
    for t in sorted(finetunes, key=lambda t: t.id):
        key = (t.target, t.target_split, t.arrangement, int(t.seed))
        groups.setdefault(key, []).append(BudgetEdge("", t.id, t.source or ""))
    return HalvingPlan(rungs(spec.halving, iterations), spec.halving.reduction_factor,
                       tuple(BudgetGroup(*k, tuple(v)) for k, v in sorted(groups.items())))


@dataclass
class HalvingBook:
    """The driver's halving state: rung values reported, members no longer live, the
    decisions. Pure: fed results, asked which fine-tunes are halved."""

    plan: HalvingPlan
    values: dict[str, dict[int, float | None]] = field(default_factory=dict)
    gone: set[str] = field(default_factory=set)  # failed, skipped, or finished earlier
    decided: dict[tuple[str, int], tuple[str, ...]] = field(default_factory=dict)
    halved: dict[str, int] = field(default_factory=dict)  # fine-tune id -> rung

    def observe(self, task_id: str, result: Mapping[str, Any]) -> None:
        """A result of fine-tune ``task_id``: its ``frame_acc`` at a rung (from the
        result's ``iteration``, and from its ``curve``, which holds every evaluation so
        far)."""
        if task_id not in self.plan.members:
            return
        got = self.values.setdefault(task_id, {})
        # a validating run (the validation protocol) is ranked by its validation part alone;
        # the curve holds test values, read only under the paper's protocol
        key = "val.frame_acc" if "val.frame_acc" in result else "frame_acc"
        if key == "frame_acc":
            for it, v in (result.get("curve") or {}).items():
                if int(it) in self.plan.rungs:
                    got.setdefault(int(it), finite_or_none(v))
        it = result.get("iteration")
        if it is not None and int(it) in self.plan.rungs and key in result:
            got.setdefault(int(it), finite_or_none(result[key]))

    def drop(self, task_id: str) -> None:
        """``task_id`` will report nothing more (failed, skipped, or done before)."""
        self.gone.add(task_id)

    def decide(self) -> list[tuple[str, int]]:
        """Decide every rung that can be (module doc); the newly halved (id, rung)."""
        new: list[tuple[str, int]] = []
        eta = self.plan.reduction_factor
        for g in self.plan.groups:
            for r in self.plan.rungs:
                if (g.name, r) in self.decided:
                    continue
                live = [e for e in g.edges
                        if e.finetune not in self.halved and e.finetune not in self.gone]
                if any(r not in self.values.get(e.finetune, {}) for e in live):
                    break  # wait for the slower members; later rungs come after this one

                def key(e: BudgetEdge, r: int = r) -> tuple:
                    v = self.values[e.finetune][r]
                    return (v is None, 0.0 if v is None else -v, e.source, e.finetune)

                ranked = sorted(live, key=key)
                keep = max(1, math.ceil(len(ranked) / eta))
                self.decided[(g.name, r)] = tuple(e.finetune for e in ranked[:keep])
                for e in ranked[keep:]:
                    self.halved[e.finetune] = r
                    new.append((e.finetune, r))
        return new

    def stop(self, task_id: str) -> bool:
        return task_id in self.halved


def halved_rung(tags: Mapping[str, str]) -> int | None:
    """The rung a run was halved at, from its tags; None when it was not halved."""
    v = tags.get(TAG_BUDGET, "")
    return int(v[len(HALVED):]) if v.startswith(HALVED) else None


def mark_halved(logger: RunLogger, run_id: str, rung: int, iteration: Any) -> None:
    """Tag a halved fine-tune's run and say ``· stopped @ <iteration>`` in its name."""
    name = logger.get_run(run_id).tags.get(RUN_NAME_TAG, "")
    tags = {TAG_BUDGET: f"{HALVED}{rung}", TAG_BUDGET_BY: HALVING}
    if name and "stopped @" not in name:
        tags[RUN_NAME_TAG] = stopped_name(name, iteration)
    logger.set_tags(run_id, tags)


def halving_table(records: Iterable[Any], metric: str = "frame_acc") -> Any:
    """:func:`study.budget.budget_table`'s columns for the fine-tunes under halving of a
    loaded study's runs (``RunRecord``s; empty without halving): ``by`` = ``halving``,
    ``decision`` = ``chosen`` (survived every rung) or ``stopped at <rung>``, ``trained``
    (survived and FINISHED), ``value`` (the survivor's ``metric``; NaN for a halved run:
    it is not a measured result), no estimate or rank."""
    import pandas as pd

    rows = []
    for r in latest_finished(records).values():
        t = r.tags
        if t.get(task_tag("kind")) != "finetune" or t.get(TAG_BUDGET_BY) != HALVING:
            continue
        rung = halved_rung(t)
        rows.append({
            **edge_fields(t),
            "by": HALVING, "estimate": math.nan, "rank": "",
            "decision": "chosen" if rung is None else f"stopped at {rung}",
            "trained": rung is None,
            "value": r.metrics.get(metric, math.nan) if rung is None else math.nan,
        })
    cols = ["target", "target_split", "arrangement", "seed", "source", "by", "estimate",
            "rank", "decision", "trained", "value"]
    return pd.DataFrame(rows, columns=cols).sort_values(
        ["target", "target_split", "arrangement", "seed", "source"], ignore_index=True)
