"""Packing in the study runner (issue 13): several ready tasks of one shape as ONE Ray trial.

A study is hundreds of tiny LSTM trainings; on a GPU one of them uses a few percent of the
device (launch-bound). With ``packing: {max_trials: K}`` in the spec the runner hands out up
to K compatible tasks as one trial, trained as one fused computation
(:class:`trainables.packed_lstm.PackedTrainer`), and still records ONE MLflow run per task.
On a CPU packing is slower than running the tasks one by one (docs/benchmarks.md, "Packed
LSTM"), so it is on only when the trials hold a GPU (``resources.gpu > 0``), or when the
spec forces it (``packing.force_cpu``, for tests).

Rules:

* **Compatible** (:func:`pack_key`): the same model and batch shape (``history``,
  ``batch_size``, ``depth``, ``hidden``, ``cell``, input and output dims: the dims come from
  the dataset cards and the task's arrangement, as the trainer forms them), the same
  schedule (``iterations``, ``iterations_per_step``, ``eval_at``: every member stops,
  evaluates and checkpoints at the same iterations, so a pack's step is every member's
  step) and the same placement (``device``, ``num_cpus``, ``num_gpus``). Data, split, mode,
  arrangement, seed, learning rate and ``clip`` may differ. Pre-trains therefore pack with
  pre-trains (their own iteration count, evaluated only at the end); fine-tunes, joint runs
  and baselines of one label-space size pack together.
* **Forming packs** (:meth:`Packer.take`): when the searcher releases a ready task, it takes
  with it the other tasks *ready at that moment* (dependencies done) with the same key, in
  plan order, up to ``max_trials``. A pack never grows once started (no joining a running
  pack); a task released alone runs as an ordinary trial (no ``ks.pack`` tag). A fine-tune
  is ready only once its pre-train's checkpoint is stored, as without packing. Searches are
  not packed (their trials' shapes come from Optuna one at a time).
* **One trial, K runs**: the pack's trial config is :data:`PACK_KEY` = the members' ordinary
  trial configs (each with its own ``_study`` meta); the driver's callback sees each member
  through :func:`pack_members` as if it were a trial of its own: the same task run, params,
  metrics, checkpoint artifact as unpacked, plus the tag ``ks.pack`` = the pack's Tune
  trial id (the same on every member).
* **Worker** (:class:`PackRun`, :class:`PackJob`): each member is an ordinary
  :class:`~trainables.train_job.TrainRun` (data, arrangement, ``init_checkpoint``, curve,
  checkpoints); the pack replaces its ``trainer.train`` by the fused step and keeps the
  rest of ``TrainRun.step``'s semantics (evaluation at ``eval_at`` and the end, ``curve``).
  A member's ``frames_per_s`` is its own frames over the pack's seconds. A fine-tune's
  transferability estimates (``_study.estimate``) are computed on its TrainRun before the
  pack trains, as the single-task trial does, and come with its first result.
* **Member failure**: a member whose loss or gradient is not finite is frozen by the
  PackedTrainer; its result carries :data:`MEMBER_ERROR` from then on, its run ends FAILED
  with that reason, and the other members go on. A crash of the whole pack (an exception)
  restarts it from its last checkpoint (``max_failures``), every member from its own file.
  Fault injection for tests: under packing, ``inject_faults={task: N}`` on a member makes
  its loss non-finite right after iteration N (the pack's member failure), not a crash.
* **Checkpoints**: a pack's Tune checkpoint is ``m<i>/lstm.pt`` per member (an ordinary
  single-model checkpoint: the pre-train artifact, transfer and the query API see no
  difference) plus ``pack.json`` (which members failed, and why).
* **Resume** is per task, as without packing: finished tasks are skipped; the unfinished
  members of an interrupted pack are planned again and packed anew with whatever else is
  ready then.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from trainables.job import TEMPORAL_CHECKPOINT_FILE
from trainables.temporal import kind_of

from .plan import Task
from .trial import STUDY_KEY, Downloads, estimate_for, local_checkpoint

__all__ = [
    "MEMBER_ERROR",
    "PACK_KEY",
    "PackMember",
    "PackRun",
    "Packer",
    "PackJob",
    "make_packer",
    "pack_members",
]

#: Trial config key of a pack: the members' trial configs, in member order.
PACK_KEY = "_pack"
#: Result key of a pack: ``{str(member index): that member's result}``.
MEMBERS_KEY = "_members"
#: A member result key: why the member failed (its run ends FAILED with it).
MEMBER_ERROR = "member_error"
#: The member checkpoint file inside ``m<i>/`` (the single-task trial's file name).
_MEMBER_FILE = TEMPORAL_CHECKPOINT_FILE
_PACK_FILE = "pack.json"


def member_id(trial_id: str, index: int) -> str:
    """The pseudo trial id of member ``index`` of pack trial ``trial_id`` (the key of its
    task in ``StudyState.trial_task`` and of its run in the callback)."""
    return f"{trial_id}/{index}"


# -- driver: which tasks may share a pack -------------------------------------------------


def _feature_dim(card: Any) -> int:
    return int((card.features or {}).get("dim", 0))


def _member_dims(task: Task, cards_by_path: Mapping[str, Any], cards: Mapping[str, Any]
                 ) -> tuple[int, int]:
    """(input dim, classes) of the task's model, as ``TrainRun.create`` forms them: the
    arrangement's joint dim; inputs are that dim when the fed dataset's features are class
    scores (dim = its classes), else its feature dim."""
    from trainables.arrangements import LabelSpace, make_arrangement

    c = task.config

    def card(path: str | None) -> Any:
        p = str(Path(path).resolve()) if path else ""
        if p not in cards_by_path:
            raise KeyError(f"task {task.id}: {path} is none of the spec's datasets")
        return cards_by_path[p]

    target = card(c.target_path)
    if c.mode == "none":
        dim, fed = len(target.classes), target
    else:
        # a fine-tune reads no source: its source space is its pre-train's (task.source)
        source = card(c.source_path) if c.source_path is not None else cards[task.source]
        arr = make_arrangement(c.arrangement_kind, LabelSpace.from_card(target),
                               LabelSpace.from_card(source), seed=c.arrangement_seed,
                               k=c.arrangement_k)
        # multiple_random pre-trains feed the source alone; the others feed the target
        dim, fed = arr.dim, (source if c.mode == "pretrain" else target)
    mapped = _feature_dim(fed) == len(fed.classes)
    return (dim if mapped else _feature_dim(fed)), dim


def pack_key(task: Task, cards_by_path: Mapping[str, Any], cards: Mapping[str, Any]
             ) -> tuple:
    """What must agree between the members of a pack (see the module docstring)."""
    c = task.config
    return (c.model, c.batch_size,
            *_member_dims(task, cards_by_path, cards),
            c.iterations, c.iterations_per_step, tuple(c.eval_at),
            c.device, c.num_cpus, c.num_gpus)


#: Task kinds never packed: a search's trials, a budget's estimate tasks (study.budget).
_UNPACKED = ("search", "estimate")


class Packer:
    """Forms packs of ready tasks for the searcher (``StudyState.packer``)."""

    def __init__(self, max_trials: int, key: Callable[[Task], tuple]):
        if max_trials < 2:
            raise ValueError(f"a pack has at least 2 members, got max_trials={max_trials}")
        self.max_trials = max_trials
        self._key = key
        self._keys: dict[str, tuple] = {}

    def key(self, task: Task) -> tuple:
        if task.id not in self._keys:
            self._keys[task.id] = self._key(task)
        return self._keys[task.id]

    def take(self, state: Any, first: Task, trial_id: str) -> dict[str, Any] | None:
        """The trial config of a pack led by ``first`` (already out of ``state.pending``)
        and the other tasks of ``state.pending`` that are ready now with the same key (taken
        out of pending); None when ``first`` has no companion (it then runs alone). Searches
        and a budget's estimate tasks (they train nothing) are never packed."""
        if first.kind in _UNPACKED or not kind_of(first.config.model).packable:
            return None
        key = self.key(first)
        members = [first]
        for tid in state.pending:
            if len(members) >= self.max_trials:
                break
            t = state.tasks[tid]
            if (t.kind in _UNPACKED or not kind_of(t.config.model).packable
                    or any(d not in state.done for d in t.deps)):
                continue
            h = getattr(state, "halving", None)
            if h is not None and t.id in h.plan.members:  # study.halving stops it alone
                continue
            if self.key(t) == key:
                members.append(t)
        if len(members) == 1:
            return None
        for t in members[1:]:
            state.pending.remove(t.id)
        configs = [state.config_for(t, member_id(trial_id, i)) for i, t in enumerate(members)]
        return {
            PACK_KEY: configs,
            # the trial's resources: one member's (Tune reads them at the top level)
            "num_cpus": first.config.num_cpus,
            "num_gpus": first.config.num_gpus,
            STUDY_KEY: {**state.meta, "pack": [t.id for t in members]},
        }


def make_packer(spec: Any, cards: Mapping[str, Any], say: Callable[[str], None] | None = None
                ) -> Packer | None:
    """The spec's :class:`Packer`, or None when packing is off: no ``packing`` block, or
    trials without a GPU and no ``force_cpu`` (then ``say`` tells so)."""
    p = getattr(spec, "packing", None)
    if p is None:
        return None
    if spec.resources.gpu <= 0 and not p.force_cpu:
        if say is not None:
            say("packing: off (trials hold no GPU, where packing is slower; "
                "packing.force_cpu turns it on for tests)")
        return None
    by_path = {str(spec.dataset_path(n).resolve()): card for n, card in cards.items()}
    if say is not None:
        say(f"packing: up to {p.max_trials} compatible ready tasks per trial")
    return Packer(p.max_trials, lambda t: pack_key(t, by_path, cards))


# -- driver: a pack trial's members as trials (for the tracking callback) -----------------


def _member_result(result: Mapping[str, Any] | None, index: int) -> dict[str, Any] | None:
    """Member ``index``'s part of a pack result, with the pack's ``node_id`` and
    ``hostname`` (one process ran them all)."""
    if not result:
        return None
    mine = (result.get(MEMBERS_KEY) or {}).get(str(index))
    if mine is None:
        return None
    extra = {k: result[k] for k in ("node_id", "hostname") if k in result}
    return {**extra, **mine}


class _MemberCheckpoint:
    """A member's view of the pack's Tune checkpoint: its ``m<i>`` directory."""

    def __init__(self, checkpoint: Any, index: int):
        self._checkpoint, self._index = checkpoint, index

    @contextlib.contextmanager
    def as_directory(self) -> Iterator[str]:
        with self._checkpoint.as_directory() as d:
            yield str(Path(d) / f"m{self._index}")


class PackMember:
    """Member ``index`` of a pack trial, as the tracking callback reads a trial: its own
    ``trial_id`` (:func:`member_id`), ``config`` (its ordinary trial config),
    ``last_result`` and ``checkpoint``; ``pack`` (the pack's trial id, the ``ks.pack``
    tag); anything else (``num_failures``, ``error_file``, ``get_error``) is the pack's."""

    def __init__(self, trial: Any, index: int):
        self._trial, self.index = trial, index
        self.trial_id = member_id(trial.trial_id, index)
        self.pack = trial.trial_id
        self.config = trial.config[PACK_KEY][index]

    @property
    def last_result(self) -> dict[str, Any] | None:
        return _member_result(self._trial.last_result, self.index)

    @property
    def checkpoint(self) -> Any:
        c = self._trial.checkpoint
        return None if c is None else _MemberCheckpoint(c, self.index)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._trial, name)


def pack_members(trial: Any, result: Mapping[str, Any] | None = None
                 ) -> list[tuple[PackMember, dict[str, Any] | None]] | None:
    """``[(member view, its part of result)]`` of a pack trial; None for any other trial."""
    config = getattr(trial, "config", None) or {}
    if PACK_KEY not in config:
        return None
    return [(PackMember(trial, i), _member_result(result, i))
            for i in range(len(config[PACK_KEY]))]


# -- worker: the pack's training ------------------------------------------------------------


class PackRun:
    """K :class:`~trainables.train_job.TrainRun` s with one schedule, trained as one
    :class:`~trainables.packed_lstm.PackedTrainer` (no Ray, no MLflow).

    ``step()`` returns ``{member index: result}`` with ``TrainRun.step``'s keys; a failed
    member's result is ``{iteration, done, MEMBER_ERROR}`` from the step it failed in on.
    ``faults`` (tests): per member None or ``{"iteration": N}``: its weights become NaN
    once it has trained N iterations, so its next step's loss is not finite.
    """

    def __init__(self, runs: Sequence[Any], faults: Sequence[Mapping[str, Any] | None] = ()):
        from trainables.packed_lstm import PackedTrainer

        self.runs = list(runs)
        if not self.runs:
            raise ValueError("a pack needs at least one member")
        s0 = self.runs[0].spec
        for i, r in enumerate(self.runs):
            sched = (r.spec.iterations, r.spec.iterations_per_step, tuple(r.spec.eval_at))
            if sched != (s0.iterations, s0.iterations_per_step, tuple(s0.eval_at)):
                raise ValueError(f"member {i} has another schedule (iterations, "
                                 f"iterations_per_step, eval_at) than member 0: {sched}")
        self.faults = list(faults) or [None] * len(self.runs)
        self.failed: dict[int, str] = {}
        # TrainRun's one-time start (init from a checkpoint, or a pre-training) runs before
        # the pack copies the members' weights; its extra result keys go with the first step
        self.first: dict[int, dict[str, Any]] = {
            i: r._start() for i, r in enumerate(self.runs) if not r.started}
        self.packed = PackedTrainer([r.trainer for r in self.runs])

    @property
    def k(self) -> int:
        return len(self.runs)

    def iterations(self) -> list[int]:
        return [int(n) for n in self.packed.iterations.tolist()]

    @property
    def live(self) -> list[int]:
        return [i for i in range(self.k) if i not in self.failed]

    @property
    def done(self) -> bool:
        its, total = self.iterations(), self.runs[0].spec.iterations
        return all(its[i] >= total for i in self.live)

    def _inject(self, its: list[int]) -> None:
        import torch

        for i in self.live:
            f = self.faults[i]
            if f and its[i] >= int(f["iteration"]):
                with torch.no_grad():
                    self.packed.model.param("head.bias")[i].fill_(math.nan)
                self.faults[i] = None

    def step(self) -> dict[int, dict[str, Any]]:
        spec = self.runs[0].spec
        out: dict[int, dict[str, Any]] = {}
        live = self.live
        if live and not self.done:
            its = self.iterations()
            self._inject(its)
            it = its[live[0]]  # live members step together: one iteration count
            later = [e for e in spec.eval_at if e > it]
            stop = min([it + spec.iterations_per_step, spec.iterations, *later[:1]])
            stats = self.packed.train(max(stop - it, 0))
            for i, f in self.packed.failures.items():
                if i not in self.failed:
                    self.failed[i] = (f"{f.reason} at iteration {f.iteration} (a member of a "
                                      f"pack of {self.k}; the other members went on)")
            its = self.iterations()
            per_member = self.packed.batch_size * self.packed.window
            for i in live:
                if i in self.failed:
                    continue
                n = stats.iterations[i]
                r = self.first.pop(i, {})
                r.update(iteration=its[i], loss=stats.loss[i],
                         frames_per_s=n * per_member / stats.seconds if stats.seconds else 0.0,
                         done=its[i] >= spec.iterations)
                if its[i] in spec.eval_at or r["done"]:
                    self.packed.unpack(i)  # the member's weights into its own trainer
                    r.update(self.runs[i].evaluate_at(its[i], r["done"]))
                out[i] = r
        its = self.iterations()
        for i, reason in self.failed.items():
            out[i] = {"iteration": its[i], "done": True, MEMBER_ERROR: reason}
        return dict(sorted(out.items()))

    # -- checkpoints -----------------------------------------------------------------------
    def save(self, directory: str | Path) -> None:
        """``m<i>/lstm.pt`` per member (``TrainRun.save``) and ``pack.json``."""
        d = Path(directory)
        for i, run in enumerate(self.runs):
            self.packed.unpack(i)
            (d / f"m{i}").mkdir(parents=True, exist_ok=True)
            run.save(d / f"m{i}" / _MEMBER_FILE)
        failures = {str(i): {"reason": self.failed[i],
                             "iteration": self.packed.failures[i].iteration,
                             "why": self.packed.failures[i].reason}
                    for i in self.failed}
        (d / _PACK_FILE).write_text(json.dumps({"members": self.k, "failed": failures}))

    def load(self, directory: str | Path) -> None:
        """Resume every member from its file; members recorded as failed stay frozen."""
        from trainables.packed_lstm import MemberFailure, PackedTrainer

        d = Path(directory)
        meta = json.loads((d / _PACK_FILE).read_text())
        if int(meta["members"]) != self.k:
            raise ValueError(f"{d}: a checkpoint of a pack of {meta['members']}, not {self.k}")
        failed = {int(k) for k in meta["failed"]}
        for i, run in enumerate(self.runs):
            # a failed member's weights are what failed it (NaN/inf), which checkpoint
            # loading refuses; it stays frozen, so its state is never used again
            if i not in failed:
                run.load(d / f"m{i}" / _MEMBER_FILE)
        self.first = {}
        self.packed = PackedTrainer([r.trainer for r in self.runs])
        self.failed = {}
        for key, f in meta["failed"].items():
            i = int(key)
            self.failed[i] = f["reason"]
            self.packed.freeze(MemberFailure(i, int(f["iteration"]), f["why"]))


class PackJob:
    """A pack trial's job (config with :data:`PACK_KEY`): one :class:`PackRun` over the
    members' ordinary configs; the study trial (:class:`study.worker.StudyTrainable`) runs
    it. Results are ``{iteration, done, node_id, MEMBERS_KEY: {index: member result}}``."""

    def __init__(self, config: dict[str, Any], trial_resources: Any, node_id: str):
        from trainables.train_config import TrainSpec
        from trainables.train_job import TrainRun
        from trainables.tune_base import claim_device

        cfg = dict(config)
        cfg.pop(STUDY_KEY, None)
        self.node_id = node_id
        self.downloads = Downloads()
        specs, metas = [], []
        for member in cfg[PACK_KEY]:
            m = dict(member)
            meta = dict(m.pop(STUDY_KEY, None) or {})
            if m.get("init_checkpoint"):
                m["init_checkpoint"] = str(local_checkpoint(
                    m["init_checkpoint"], meta.get("tracking_uri"), self.downloads))
            specs.append(TrainSpec.parse(m))
            metas.append(meta)
        s0 = specs[0]
        device, _ = claim_device(trial_resources, s0.device, s0.num_cpus, s0.num_gpus)
        runs = [TrainRun.create(s, device=device) for s in specs]
        # a fine-tune's transferability estimates (``_study.estimate``), as the single-task
        # job computes them: on its TrainRun before training, reported with its first result
        estimates = {i: estimate_for(run, meta.get("estimate"))
                     for i, (run, meta) in enumerate(zip(runs, metas, strict=True))
                     if meta.get("estimate")}
        self.pack = PackRun(runs, [meta.get("fail_once") for meta in metas])
        for i, extra in estimates.items():
            self.pack.first.setdefault(i, {}).update(extra)

    def step(self) -> dict[str, Any]:
        import torch

        members = self.pack.step()
        for r in members.values():
            r["node_id"] = self.node_id
            r["num_threads"] = torch.get_num_threads()
        its = [r["iteration"] for r in members.values()]
        return {"iteration": max(its), "done": self.pack.done or not self.pack.live,
                "node_id": self.node_id, MEMBERS_KEY: {str(i): r for i, r in members.items()}}

    def save(self, checkpoint_dir: str) -> None:
        self.pack.save(checkpoint_dir)

    def load(self, checkpoint: str | dict | None) -> None:
        if not isinstance(checkpoint, str):
            raise TypeError(f"expected a checkpoint directory, got {type(checkpoint).__name__}")
        self.pack.load(checkpoint)

    def close(self) -> None:
        self.downloads.close()
