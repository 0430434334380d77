"""The transfer-graph planner: a study spec → tasks with ids, kinds and dependencies.

Pure: no Ray, no MLflow, no file reads (dataset paths are resolved as strings against the
spec file's directory). The runner executes a :class:`Plan`; the CLI's ``--dry-run``
prints it.

The graph. Nodes are training sets ``(dataset, split)``; edges are source → target pairs
with a mode and a label arrangement, repeated per seed. Tasks:

``pretrain``  train on a source split in the source's own label space (``mode: none``),
              **once** per ``(source, source split, seed)`` and shared by every transfer
              edge out of it, whatever the target or arrangement. Exception:
              ``multiple_random`` pre-trains in the joint space with the k random maps
              (the checkpoint records that arrangement), so its pre-train is keyed by the
              target dataset and k as well (see INTERFACES.md).
``finetune``  a transfer edge on one target split and seed; depends on its pre-train
              (same seed), which it is initialised from.
``joint``     a joint edge (batches mixing target and source at ``ratio``); no dependency.
``baseline``  no transfer, per target split and seed; no dependency.
``search``    an Optuna search (``num_samples`` trials) on one target split.

Rules: task ids are readable and derived from content only (never from counters or
order), so they are the same in every run of the same spec and resume can match them.
A task declared twice (e.g. by ``all_pairs`` and an explicit edge) is one task. Tasks
come in a deterministic topological order: pre-trains first, then fine-tunes, joint
runs, baselines, searches (the runner releases ready tasks in this order, so the
pre-trains that unblock the most work start first).

Each task's ``config`` is the trainable config (``trainables.lstm_job.TrainSpec``): the
spec's ``model`` defaults plus ``seed``, ``arrangement_seed`` (= the seed, so random
arrangements vary with it), ``target_path``, ``target_split``, ``source_path`` and
``source_split`` (only where a source is read), ``mode``, ``arrangement``,
``init_checkpoint`` (None here; the runner points a fine-tune at its pre-train's
checkpoint), ``iterations``, ``iterations_per_step``,
``eval_at`` (evaluation points <= iterations; the final iteration is always evaluated),
``num_cpus`` and ``num_gpus`` (the spec's resources). Joint tasks add ``joint_ratio``
([target, source]); ``multiple_random`` tasks add ``arrangement_k``. A fine-tune has no
``source_path``: its source label space comes from the pre-train checkpoint, so the source
data is not loaded twice. A pre-train is ``mode: none`` on the source (its own label
space), or ``mode: pretrain`` with the target's card for ``multiple_random``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .spec import EdgeSpec, SearchSpec, StudySpec

__all__ = ["KINDS", "Plan", "Task", "asha_rungs", "make_plan"]

#: Task kinds in release order.
KINDS: tuple[str, ...] = ("pretrain", "finetune", "joint", "baseline", "search")


@dataclass(frozen=True)
class Task:
    """One unit of work: a trial (or, for ``search``, ``trials`` trials) of the trainable."""

    id: str
    kind: str
    mode: str  # none | transfer | joint
    target: str
    target_split: str
    seed: int
    config: dict[str, Any] = field(compare=True, hash=False)
    source: str | None = None
    source_split: str | None = None
    arrangement: str = "identity"
    deps: tuple[str, ...] = ()
    trials: int = 1
    search: SearchSpec | None = None

    @property
    def node(self) -> str:
        """The training set the task's target is, ``dataset.split``."""
        return f"{self.target}.{self.target_split}"


@dataclass(frozen=True)
class Plan:
    """The tasks of a study in release order, with lookups."""

    tasks: tuple[Task, ...]

    def __iter__(self) -> Iterator[Task]:
        return iter(self.tasks)

    def __len__(self) -> int:
        return len(self.tasks)

    def __getitem__(self, task_id: str) -> Task:
        for t in self.tasks:
            if t.id == task_id:
                return t
        raise KeyError(task_id)

    @property
    def ids(self) -> list[str]:
        return [t.id for t in self.tasks]

    def of_kind(self, kind: str) -> list[Task]:
        return [t for t in self.tasks if t.kind == kind]

    def dependents(self, task_id: str) -> list[Task]:
        return [t for t in self.tasks if task_id in t.deps]

    @property
    def trial_count(self) -> int:
        """Trials the runner will start (a search counts its samples)."""
        return sum(t.trials for t in self.tasks)

    def counts(self) -> dict[str, int]:
        return {k: len(self.of_kind(k)) for k in KINDS if self.of_kind(k)}

    def training_iterations(self) -> int:
        """Upper bound of training iterations over all trials (ASHA may stop some early)."""
        return sum(t.config["iterations"] * t.trials for t in self.tasks)

    def to_json(self) -> str:
        return json.dumps(
            [
                {
                    "id": t.id,
                    "kind": t.kind,
                    "deps": list(t.deps),
                    "trials": t.trials,
                    "config": t.config,
                }
                for t in self.tasks
            ],
            sort_keys=True,
        )


def asha_rungs(grace_period: int, reduction_factor: float, max_t: int) -> list[int]:
    """ASHA's milestones (grace × rf^k < max_t) plus max_t: where a search trial must
    report its metric for early stopping to act."""
    out, r = [], float(grace_period)
    while r < max_t:
        out.append(int(r))
        r *= reduction_factor
    return sorted({*out, max_t})


def _base_config(spec: StudySpec, seed: int, iterations: int, eval_at: list[int]) -> dict[str, Any]:
    return {
        **spec.model,
        "seed": seed,
        "iterations": iterations,
        "iterations_per_step": min(spec.iterations_per_step, iterations),
        "eval_at": [p for p in eval_at if p <= iterations],
        "init_checkpoint": None,
        "arrangement_seed": seed,
        "num_cpus": spec.resources.cpu,
        "num_gpus": spec.resources.gpu,
    }


def _target(spec: StudySpec, cfg: dict[str, Any], dataset: str, split: str) -> dict[str, Any]:
    return {**cfg, "target_path": str(spec.dataset_path(dataset)), "target_split": split}


def _source(spec: StudySpec, cfg: dict[str, Any], dataset: str, split: str) -> dict[str, Any]:
    return {**cfg, "source_path": str(spec.dataset_path(dataset)), "source_split": split}


def _edge_splits(spec: StudySpec, e: EdgeSpec) -> tuple[str, list[str]]:
    ssplit = e.source_split or spec.datasets[e.source].splits[0]
    tsplits = e.target_splits or spec.datasets[e.target].splits
    return ssplit, tsplits


def _pretrain_id(source: str, ssplit: str, seed: int, mr: tuple[str, int] | None) -> str:
    extra = f":multiple_random-k{mr[1]}>{mr[0]}" if mr else ""
    return f"pretrain:{source}.{ssplit}{extra}:s{seed}"


def make_plan(spec: StudySpec) -> Plan:
    """Expand a (validated) spec into its tasks. Deterministic: same spec → same plan."""
    ex = spec.experiments
    tasks: dict[str, Task] = {}

    def add(t: Task) -> None:
        old = tasks.get(t.id)
        if old is not None and old != t:  # pragma: no cover - ids encode every varying field
            raise AssertionError(f"two different tasks share the id {t.id}")
        tasks[t.id] = t

    for seed in ex.seeds:
        base = _base_config(spec, seed, ex.iterations, ex.eval_at)
        for _, e in spec.edges():
            ssplit, tsplits = _edge_splits(spec, e)
            for mode in e.mode:
                for arr in e.arrangement:
                    for tsplit in tsplits:
                        pair = f"{e.source}.{ssplit}>{e.target}.{tsplit}"
                        common = dict(
                            target=e.target,
                            target_split=tsplit,
                            seed=seed,
                            source=e.source,
                            source_split=ssplit,
                            arrangement=arr,
                        )
                        cfg = _target(spec, base, e.target, tsplit)
                        cfg["arrangement"] = arr
                        if arr == "multiple_random":
                            cfg["arrangement_k"] = e.k
                        if mode == "joint":
                            cfg = _source(spec, cfg, e.source, ssplit)
                            cfg.update(mode="joint", joint_ratio=list(e.ratio))
                            ratio = f"{e.ratio[0]}-{e.ratio[1]}"
                            add(Task(id=f"joint:{pair}:{arr}:{ratio}:s{seed}", kind="joint",
                                     mode="joint", config=cfg, **common))
                            continue
                        mr = (e.target, e.k) if arr == "multiple_random" else None
                        pid = _pretrain_id(e.source, ssplit, seed, mr)
                        if pid not in tasks:
                            add(_pretrain(spec, pid, e.source, ssplit, seed, mr))
                        # no source_path: the source's label space comes from the
                        # pre-train checkpoint, so the source data is not loaded again
                        cfg["mode"] = "transfer"
                        add(Task(id=f"finetune:{pair}:{arr}:s{seed}", kind="finetune",
                                 mode="transfer", config=cfg, deps=(pid,), **common))
        for name in spec.baseline_datasets():
            for split in spec.datasets[name].splits:
                cfg = _target(spec, base, name, split)
                cfg.update(mode="none", arrangement="identity")
                add(Task(id=f"baseline:{name}.{split}:s{seed}", kind="baseline", mode="none",
                         target=name, target_split=split, seed=seed, config=cfg))
    if spec.search is not None:
        add(_search_task(spec, spec.search))
    order = {k: i for i, k in enumerate(KINDS)}
    ordered = sorted(tasks.values(), key=lambda t: (order[t.kind], t.id))
    return Plan(tuple(ordered))


def _pretrain(
    spec: StudySpec, pid: str, source: str, ssplit: str, seed: int, mr: tuple[str, int] | None
) -> Task:
    ex = spec.experiments
    # The source's own training set and label space; only its final state matters to the
    # fine-tunes, so it is evaluated only at the end.
    cfg = _target(spec, _base_config(spec, seed, ex.source_iterations, []), source, ssplit)
    cfg.update(mode="none", arrangement="identity")
    arrangement = "identity"
    if mr is not None:
        # multiple_random pre-trains in the joint space with the target: the source's
        # sequences under k random maps (the target's label space only defines the space).
        target, k = mr
        arrangement = "multiple_random"
        cfg = _target(spec, cfg, target, spec.datasets[target].splits[0])
        cfg = _source(spec, cfg, source, ssplit)
        cfg.update(mode="pretrain", arrangement="multiple_random", arrangement_k=k)
    return Task(id=pid, kind="pretrain", mode="none", target=source, target_split=ssplit,
                seed=seed, config=cfg, arrangement=arrangement)


def _search_task(spec: StudySpec, s: SearchSpec) -> Task:
    its = s.iterations or spec.experiments.iterations
    split = s.split or spec.datasets[s.target].splits[0]
    # ASHA can only cut a trial where it reports the metric: evaluate at its rungs.
    eval_at = asha_rungs(s.asha.grace_period, s.asha.reduction_factor, its) if s.asha else []
    cfg = _target(spec, _base_config(spec, s.seed, its, eval_at), s.target, split)
    cfg.update(mode=s.mode, arrangement="identity" if s.mode == "none" else s.arrangement)
    source = source_split = None
    if s.mode == "joint":
        source = s.source
        source_split = s.source_split or spec.datasets[source].splits[0]
        cfg = _source(spec, cfg, source, source_split)
        cfg["joint_ratio"] = [5, 3]
    sid = f"search:{s.target}.{split}:{s.space}:s{s.seed}"
    return Task(id=sid, kind="search", mode=s.mode, target=s.target, target_split=split,
                seed=s.seed, config=cfg, source=source, source_split=source_split,
                arrangement=cfg["arrangement"], trials=s.num_samples, search=s)
