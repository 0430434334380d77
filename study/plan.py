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
              (``mode: pretrain``; the checkpoint records that arrangement), so its
              pre-train is keyed by the target dataset and k as well.
``finetune``  a transfer edge on one target split and seed; depends on its pre-train
              (same seed), which it is initialised from.
``estimate``  with ``all_pairs.budget`` only: a budgeted edge's transferability estimates
              (the fine-tune's config, id ``estimate:<rest of the fine-tune id>``; its
              trial trains nothing); depends on the pre-train. Those fine-tunes are then
              conditional: :attr:`Plan.budget` (:mod:`study.budget`) says which, and the
              searcher releases only the k best-estimated of each target.
``joint``     a joint edge (batches mixing target and source at ``ratio``); no dependency.
``baseline``  no transfer, per target split and seed; no dependency.
``search``    an Optuna search (``num_samples`` trials) on one target split.

Rules: task ids are readable and derived from content only (never from counters or
order), so they are the same in every run of the same spec and resume can match them.
A task declared twice (e.g. by ``all_pairs`` and an explicit edge) is one task.

**One job, one task.** A source's pre-train (``mode: none`` on its split, in its own label
space) and that split's no-transfer baseline are the same training job when the pre-train
runs as many iterations as the baseline (``pretrain_iterations`` unset or equal to
``iterations``) and the dataset has baselines: then there is no ``pretrain`` task, and the
fine-tunes depend on (and start from the checkpoint of) the ``baseline`` task. The
baseline's extra evaluations do not change its training (evaluation draws no random
numbers; ``tests/test_growing_graph.py`` checks that the two checkpoints are equal).

**Task keys** (:func:`task_key`, :attr:`Task.key`): a task's identity by content, the
sha256 of its kind, its config *without* the execution-only fields
(:data:`EXECUTION_CONFIG_FIELDS`: where the data lies, resources, step size, device, the
checkpoint reference), the digest of each dataset it reads
(:func:`study.spec_data.dataset_digest` of its card; without cards, the dataset's path), the
keys of its dependencies (a fine-tune's pre-train) and, for a search, the search settings
(minus its Optuna storage URL). The study hash changes when anything in the spec does; a
task key changes only when something that task computes from does, so a new study version
reuses every finished task whose key it already has (the runner, :mod:`study.reuse`). Tasks
come in a deterministic topological order: pre-trains first, then fine-tunes, joint
runs, baselines, searches (the runner releases ready tasks in this order, so the
pre-trains that unblock the most work start first); a baseline that serves as a pre-train
comes with the pre-trains.

Each task's ``config`` is the trainable's validated config
(``trainables.lstm_config.TrainSpec``; :meth:`Task.trial_config` is the mapping the trial
receives and MLflow records: the fields the planner set): the spec's ``model`` defaults
plus ``seed``, ``arrangement_seed`` (= the seed, so random
arrangements vary with it), ``target_path``, ``target_split``, ``source_path`` and
``source_split`` (only where a source is read), ``mode``, ``arrangement``,
``init_checkpoint`` (None, except a fine-tune's: :func:`checkpoint_of` its pre-train, which
the runner replaces by that checkpoint's URI), ``iterations``, ``iterations_per_step``,
``eval_at`` (evaluation points <= iterations; the final iteration is always evaluated),
``num_cpus`` and ``num_gpus`` (the spec's resources). Joint tasks add ``joint_ratio``
([target, source]); ``multiple_random`` tasks add ``arrangement_k``. A fine-tune has no
``source_path``: its source label space comes from the pre-train checkpoint, so the source
data is not loaded twice. A pre-train is ``mode: none`` on the source (its own label
space), or ``mode: pretrain`` with the target's card for ``multiple_random``.

A task's kind and mode are one vocabulary: :data:`TASK_KINDS` says which config modes
(``TrainSpec.mode``) each kind trains in, and :attr:`Task.mode` *is* its config's mode.
A config the trainable would reject is a :class:`~study.spec.SpecError` naming the task.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, get_args

from trainables.job import ConfigError
from trainables.train_config import TrainSpec

from .spec import EdgeSpec, SearchSpec, SpecError, StudySpec
from .spec_data import dataset_digest

if TYPE_CHECKING:
    from data_prep.table import DatasetCard

    from .budget import BudgetPlan
    from .halving import HalvingPlan

__all__ = [
    "CHECKPOINT_KINDS",
    "KINDS",
    "TASK_KINDS",
    "Plan",
    "Task",
    "asha_rungs",
    "checkpoint_of",
    "make_plan",
    "task_key",
]


@dataclass(frozen=True)
class TaskKind:
    """A kind of task: what it trains and in which config modes (``TrainSpec.mode``)."""

    name: str
    modes: tuple[str, ...]
    doc: str
    #: its trial trains (an ``estimate`` task only runs the source model forward)
    trains: bool = True

    def __post_init__(self) -> None:
        known = get_args(TrainSpec.model_fields["mode"].annotation)
        bad = [m for m in self.modes if m not in known]
        if bad:
            raise ValueError(f"task kind {self.name!r}: unknown mode(s) {bad} (known: {known})")


#: The task kinds, in release order (pre-trains first: they unblock the most).
TASK_KINDS: dict[str, TaskKind] = {k.name: k for k in (
    TaskKind("pretrain", ("none", "pretrain"), "a source split, once per use, for fine-tunes"),
    TaskKind("estimate", ("transfer",), "a budgeted edge's estimates, no training "
             "(study.budget)", trains=False),
    TaskKind("finetune", ("transfer",), "a transfer edge, from its pre-train's checkpoint"),
    TaskKind("joint", ("joint",), "a joint edge: batches mixing target and source"),
    TaskKind("baseline", ("none",), "no transfer: the target split alone"),
    TaskKind("search", ("none", "joint"), "an Optuna search over one target split"),
)}
#: Task kind names in release order.
KINDS: tuple[str, ...] = tuple(TASK_KINDS)
#: Kinds whose final checkpoint is stored (``checkpoint/lstm.pt``): a fine-tune may start
#: from either (a baseline serves as the pre-train when they are the same job), and a
#: later study version that adds edges may reuse a finished baseline as one.
CHECKPOINT_KINDS: tuple[str, ...] = ("pretrain", "baseline")
#: ``TrainSpec`` fields that say where and how a task runs, not what it computes: left out
#: of :func:`task_key` (the data paths are replaced by the datasets' digests, the
#: checkpoint reference by the dependency's key).
EXECUTION_CONFIG_FIELDS: frozenset[str] = frozenset({
    "target_path", "source_path", "init_checkpoint", "iterations_per_step", "device",
    "num_cpus", "num_gpus",
})


def checkpoint_of(task_id: str) -> str:
    """A fine-tune's ``init_checkpoint`` in the plan: a reference to its pre-train's
    checkpoint, which the runner replaces by that checkpoint's URI before the trial runs."""
    return f"<checkpoint of {task_id}>"


@dataclass(frozen=True)
class Task:
    """One unit of work: a trial (or, for ``search``, ``trials`` trials) of the trainable."""

    id: str
    kind: str
    target: str
    target_split: str
    seed: int
    config: TrainSpec = field(compare=True, hash=False)
    source: str | None = None
    source_split: str | None = None
    arrangement: str = "identity"
    deps: tuple[str, ...] = ()
    trials: int = 1
    search: SearchSpec | None = None
    #: identity by content (:func:`task_key`); what a later study version reuses it by
    key: str = ""

    def __post_init__(self) -> None:
        kind = TASK_KINDS.get(self.kind)
        if kind is None:
            raise ValueError(f"task {self.id}: unknown kind {self.kind!r} (known: {KINDS})")
        if self.config.mode not in kind.modes:
            raise ValueError(f"task {self.id}: a {self.kind} task runs in mode "
                             f"{'|'.join(kind.modes)}, not {self.config.mode!r}")

    @property
    def mode(self) -> str:
        """The config's mode (``TrainSpec.mode``)."""
        return self.config.mode

    def trial_config(self) -> dict[str, Any]:
        """The config as the trial receives it and MLflow records it: the fields the planner
        set, JSON-typed (lists, not tuples), flat (the model's fields beside the job's,
        ``TrainConfig.flat``; so MLflow params and search parameters keep their names)."""
        return self.config.flat(exclude_unset=True)

    @property
    def node(self) -> str:
        """The training set the task's target is, ``dataset.split``."""
        return f"{self.target}.{self.target_split}"


@dataclass(frozen=True)
class Plan:
    """The tasks of a study in release order, with lookups; ``budget``: which fine-tunes
    are conditional on their estimates (``all_pairs.budget``, :mod:`study.budget`)."""

    tasks: tuple[Task, ...]
    budget: BudgetPlan | None = None
    #: all_pairs.budget.halving: the fine-tunes halved per group (study.halving)
    halving: HalvingPlan | None = None

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
        """Upper bound of training iterations over all trials (ASHA may stop some early, a
        budget skips some fine-tunes; estimate tasks train nothing)."""
        return sum(t.config.iterations * t.trials for t in self.tasks
                   if TASK_KINDS[t.kind].trains)

    def to_json(self) -> str:
        return json.dumps(
            [
                {
                    "id": t.id,
                    "kind": t.kind,
                    "deps": list(t.deps),
                    "trials": t.trials,
                    "key": t.key,
                    "config": t.trial_config(),
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
        "validation": "people" if spec.experiments.protocol == "validation" else "none",
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


def _key_config(config: TrainSpec) -> dict[str, Any]:
    d = config.flat(exclude=set(EXECUTION_CONFIG_FIELDS))
    if d.get("validation") == "none":
        del d["validation"]
    return d


def task_key(kind: str, config: TrainSpec, data: Mapping[str, str | None],
             deps: Sequence[str] = (), search: SearchSpec | None = None) -> str:
    """A task's identity by content (see the module doc): sha256 (hex) of the canonical
    JSON of ``kind``, ``config`` minus :data:`EXECUTION_CONFIG_FIELDS`, ``data``
    (``{"target": digest, "source": digest or None}``), the dependencies' keys in order
    and the search settings (without ``storage``)."""
    doc = {
        "kind": kind,
        # flat: the paper's LSTM keeps the keys it had before models were plug-ins (and the
        # paper's protocol the keys it had before validation existed)
        "config": _key_config(config),
        "data": dict(data),
        "deps": list(deps),
        "search": None if search is None else search.model_dump(mode="json",
                                                                 exclude={"storage"}),
    }
    canon = json.dumps(doc, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canon.encode()).hexdigest()


def _with_keys(tasks: Sequence[Task], spec: StudySpec,
               cards: Mapping[str, DatasetCard] | None) -> list[Task]:
    """The tasks, in the same order, with their :attr:`Task.key`. A key includes its
    dependencies' keys, and a fine-tune may depend on a baseline (later in release order),
    so the dependency-free tasks are keyed first."""
    by_path = {str(spec.dataset_path(n)): n for n in spec.datasets}

    def digest(path: str | None) -> str | None:
        if path is None:
            return None
        name = by_path[path]
        if cards is None or name not in cards:
            return f"path:{path}"  # no card at hand (a pure plan): the path stands for it
        return dataset_digest(cards[name])

    keyed: dict[str, Task] = {}
    for t in sorted(tasks, key=lambda t: bool(t.deps)):  # stable: order kept otherwise
        c = t.config
        key = task_key(t.kind, c, {"target": digest(c.target_path),
                                   "source": digest(c.source_path)},
                       [keyed[d].key for d in t.deps], t.search)
        keyed[t.id] = dataclasses.replace(t, key=key)
    return [keyed[t.id] for t in tasks]


def make_plan(spec: StudySpec, cards: Mapping[str, DatasetCard] | None = None) -> Plan:
    """Expand a (validated) spec into its tasks. Deterministic: same spec → same plan.

    ``cards`` (``LoadedStudy.cards``) give the datasets' digests for the task keys; without
    them a dataset's path stands for its content (fine for a plan's shape, not for reuse).

    Raises :class:`~study.spec.SpecError` listing every task whose config the trainable
    would reject (``TrainSpec``), e.g. a ``model`` value out of range."""
    ex = spec.experiments
    tasks: dict[str, Task] = {}
    problems: dict[str, str] = {}

    def add(task_id: str, kind: str, cfg: dict[str, Any], **fields: Any) -> None:
        if task_id in problems:
            return
        try:
            config = TrainSpec.parse(cfg)
        except ConfigError as e:
            problems[task_id] = str(e)
            return
        t = Task(id=task_id, kind=kind, config=config, **fields)
        old = tasks.get(t.id)
        if old is not None and old != t:  # pragma: no cover - ids encode every varying field
            raise AssertionError(f"two different tasks share the id {t.id}")
        tasks[t.id] = t

    baselined = set(spec.baseline_datasets())
    budgeted: set[str] = set()
    explicit: set[str] = set()
    for seed in ex.seeds:
        base = _base_config(spec, seed, ex.iterations, ex.eval_at)
        for where, e in spec.edges():
            same_job = e.source in baselined and ex.source_iterations == ex.iterations
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
                            add(f"joint:{pair}:{arr}:{ratio}:s{seed}", "joint", cfg, **common)
                            continue
                        mr = (e.target, e.k) if arr == "multiple_random" else None
                        pid = _pretrain_id(e.source, ssplit, seed, mr)
                        if mr is None and same_job:
                            # the pre-train is the source split's baseline (module doc)
                            pid = f"baseline:{e.source}.{ssplit}:s{seed}"
                        elif pid not in tasks:
                            pcfg, fields = _pretrain(spec, e.source, ssplit, seed, mr)
                            add(pid, "pretrain", pcfg, **fields)
                        # no source_path: the source's label space comes from the
                        # pre-train checkpoint, so the source data is not loaded again
                        cfg.update(mode="transfer", init_checkpoint=checkpoint_of(pid))
                        fid = f"finetune:{pair}:{arr}:s{seed}"
                        add(fid, "finetune", cfg, deps=(pid,), **common)
                        # study.budget: all_pairs edges are budgeted, explicit ones never
                        (budgeted if where == "experiments.all_pairs" else explicit).add(fid)
        for name in spec.baseline_datasets():
            for split in spec.datasets[name].splits:
                cfg = _target(spec, base, name, split)
                cfg.update(mode="none", arrangement="identity")
                add(f"baseline:{name}.{split}:s{seed}", "baseline", cfg, target=name,
                    target_split=split, seed=seed)
    if spec.search is not None:
        sid, cfg, fields = _search_task(spec, spec.search)
        add(sid, "search", cfg, **fields)
    if problems:
        raise SpecError([(f"task {tid}", msg) for tid, msg in problems.items()], spec.source)
    budget = halving = None
    if ex.all_pairs is not None and ex.all_pairs.budget is not None \
            and ex.all_pairs.budget.halving is not None:
        from .halving import make_halving  # no extra tasks: the fine-tunes halve each other

        halving = make_halving(ex.all_pairs.budget, ex.iterations,
                               [tasks[f] for f in sorted(budgeted - explicit)])
    elif ex.all_pairs is not None and ex.all_pairs.budget is not None:
        from .budget import make_budget

        estimates, budget = make_budget(
            ex.all_pairs.budget, [tasks[f] for f in sorted(budgeted - explicit)])
        tasks.update((t.id, t) for t in estimates)
    order = {k: i for i, k in enumerate(KINDS)}
    # topological: a baseline that serves as a pre-train is released with the pre-trains
    serving = {d for t in tasks.values() for d in t.deps}
    ordered = sorted(tasks.values(), key=lambda t: (
        order["pretrain"] if t.id in serving else order[t.kind], t.id))
    return Plan(tuple(_with_keys(ordered, spec, cards)), budget, halving)


def _pretrain(
    spec: StudySpec, source: str, ssplit: str, seed: int, mr: tuple[str, int] | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(config, task fields) of a pre-train."""
    ex = spec.experiments
    # The source's own training set and label space; only its final state matters to the
    # fine-tunes, so it is evaluated only at the end.
    cfg = _target(spec, _base_config(spec, seed, ex.source_iterations, []), source, ssplit)
    cfg.update(mode="none", arrangement="identity")
    if mr is not None:
        # multiple_random pre-trains in the joint space with the target: the source's
        # sequences under k random maps (the target's label space only defines the space).
        target, k = mr
        cfg = _target(spec, cfg, target, spec.datasets[target].splits[0])
        cfg = _source(spec, cfg, source, ssplit)
        cfg.update(mode="pretrain", arrangement="multiple_random", arrangement_k=k)
    return cfg, dict(target=source, target_split=ssplit, seed=seed,
                     arrangement=cfg["arrangement"])


def _search_task(spec: StudySpec, s: SearchSpec
                 ) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(id, config, task fields) of the search."""
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
    return sid, cfg, dict(
        target=s.target, target_split=split, seed=s.seed, source=source,
        source_split=source_split, arrangement=cfg["arrangement"], trials=s.num_samples,
        search=s)
