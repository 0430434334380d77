"""The study spec: one YAML file declaring a whole study, validated before any trial starts.

A spec names the prepared datasets (Parquet frame tables, paths relative to the spec file)
and which of their splits to use, the LSTM's default configuration, the experiments
(no-transfer baselines, transfer / joint edges between datasets, seeds, iterations,
evaluation points), an optional Optuna search, and how to run it (resources per trial,
tracking URI, Ray address). Example (``studies/demo.yaml`` is a complete one)::

    name: demo
    datasets:
      kitchen_a: {path: ../work/kitchen_a.parquet, splits: [split1]}
      kitchen_b: {path: ../work/kitchen_b.parquet, splits: [1]}      # 1 means split1
    model: {history: 64, hidden: 32, batch_size: 16}   # kind (default lstm), its fields, optimiser
    experiments:
      seeds: [0, 1]
      iterations: 400            # target training (baseline, fine-tune, joint)
      pretrain_iterations: 400   # source pre-training
      eval_at: [100, 200, 400]
      baselines: true            # every dataset, every split (or a list of dataset names)
      all_pairs: {mode: transfer, arrangement: concat}   # or `all_pairs: true`
      edges:
        - {source: kitchen_a, target: kitchen_b, mode: joint, arrangement: concat, ratio: 5:3}
    search: {space: small, target: kitchen_a, num_samples: 6, max_concurrent: 2}
    resources: {cpu: 1, gpu: 0}

Rules (stated here because the planner and the hash depend on them):

* Unknown keys and wrong types are errors naming the key path
  (``experiments.edges[1].mode[0]: Input should be 'transfer' or 'joint'``); the CLI prints
  ``error: studies/x.yaml: <key path>: message`` and exits 2. Every problem found is
  reported, not only the first.
* Scalars where lists are allowed (``mode``, ``arrangement``, ``splits``, ``seeds``) are
  one-element lists; an integer split ``n`` means ``"split<n>"``; ``ratio`` is ``[5, 3]``
  or ``"5:3"`` (target:source).
* An edge's source is trained on ``source_split`` (default: the source dataset's first
  declared split) and its targets are all declared splits of the target dataset unless
  ``target_splits`` is given. An edge from a dataset to itself is an error.
* ``baselines: true`` means every dataset on every declared split; ``false`` none; a list
  names datasets. ``all_pairs`` adds an edge for every ordered pair of distinct datasets
  (optionally restricted to ``all_pairs.datasets``).
* ``model`` is flat: ``kind`` (a name of ``trainables.temporal.MODELS``; default ``lstm``,
  the paper's), that model's config fields and the optimisation keys of
  ``trainables.train_config.TrainConfig`` (``batch_size``, ``lr``, ...); study-level keys
  (paths, modes, iterations, seed: what the planner sets per task) are not allowed there.
* Names come from their registries: arrangements from ``trainables.arrangements``, metrics
  from ``trainables.metrics.METRIC_NAMES``, modes are ``TrainSpec.mode`` names.
* The checks that need the data, the content hash of a study version and
  :func:`~study.spec_data.open_study` are :mod:`study.spec_data`.
"""

from __future__ import annotations

import inspect
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
)

from data_prep.errors import DataError
from trainables.arrangements import ARRANGEMENTS
from trainables.job import MAX_ITERATIONS, error_path
from trainables.metrics import METRIC_NAMES
from trainables.temporal import DEFAULT_KIND
from trainables.train_config import TrainConfig, TrainSpec

from .budget import BudgetSpec
from .halving import rungs

__all__ = [
    "EXECUTION_FIELDS",
    "EdgeSpec",
    "SearchSpec",
    "SpecError",
    "StudySpec",
    "load_spec",
    "parse_spec",
    "read_spec",
    "validate_spec",
]

#: An edge's modes and a search's modes: names of ``TrainSpec.mode`` (a transfer edge is
#: fine-tuned in mode ``transfer``, a joint edge and a joint search train in mode ``joint``,
#: a search without a source in mode ``none``).
EdgeMode = Literal["transfer", "joint"]
SearchMode = Literal["none", "joint"]
#: The arrangements of two label spaces (every registered one that needs a source).
ArrangementKind = Literal[tuple(n for n, k in ARRANGEMENTS.items() if k.needs_source)]
#: What a search may maximise: the evaluation metrics of the trained model (``input_acc``
#: measures the input scores alone, which no LSTM configuration changes).
Metric = Literal[tuple(m for m in METRIC_NAMES if m != "input_acc")]

#: Top-level keys that say how/where a study runs, not what it computes: left out of the
#: content hash, so e.g. moving a study from this laptop to a cluster keeps its results.
EXECUTION_FIELDS: tuple[str, ...] = (
    "description",
    "tracking_uri",
    "ray_address",
    "resources",
    "storage_path",
    "max_failures",
    "iterations_per_step",
    "reuse_actors",
    "packing",
)

#: Trainable config keys a spec's ``model`` block may not set: every ``TrainSpec`` field
#: beyond the model and optimisation ones (data, mode, schedule, resources: the planner sets
#: them per task from the rest of the spec), ``seed`` (from ``experiments.seeds``) and the
#: nested ``model`` (the block is flat: ``kind`` and the model's fields beside ``lr``).
_PER_TASK_KEYS: frozenset[str] = (
    frozenset(TrainSpec.model_fields) - frozenset(TrainConfig.model_fields)) | {"seed", "model"}

PositiveInt = Annotated[int, Field(gt=0)]
#: Seeds one spec may list: a bound on what a spec can ask for (the paper uses 3).
MAX_SEEDS = 1000
#: A seed is below 2^32: Optuna's samplers (numpy's RandomState) refuse larger ones.
MAX_SEED = 2**32 - 1
Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]
#: Iteration counts: the bound ``kitchen-study train`` applies (``trainables.job``).
Iterations = Annotated[int, Field(gt=0, le=MAX_ITERATIONS)]
#: A dataset's key in ``datasets``: it becomes part of task ids (``baseline:KEY.split1:s0``),
#: MLflow run names and file names of the report, so no ``/``, ``:`` or ``.``.
DATASET_KEY = r"^[A-Za-z0-9][A-Za-z0-9_-]*$"


class SpecError(DataError):
    """A bad study spec: one or more ``(key path, message)`` problems in one file.

    A :class:`~data_prep.errors.DataError`, so the CLI prints it as
    ``error: FILE: key.path: message`` and exits 2 like any other bad input.
    """

    def __init__(self, problems: list[tuple[str, str]], path: str | Path | None = None):
        self.problems = list(problems)
        lines = [f"{k}: {m}" if k else m for k, m in self.problems]
        message = lines[0] + "".join(f"\n  also: {line}" for line in lines[1:])
        super().__init__(message, path)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _as_list(v: Any) -> Any:
    return v if isinstance(v, list | tuple) else [v]


def _split_name(v: Any) -> Any:
    # bool is an int subclass: `splits: [true]` stays a type error rather than "splitTrue"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"split{v}"
    return v


def _split_names(v: Any) -> Any:
    return [_split_name(x) for x in _as_list(v)]


def _ratio(v: Any) -> Any:
    if isinstance(v, str) and re.fullmatch(r"\s*\d+\s*:\s*\d+\s*", v):
        return [int(x) for x in v.split(":")]
    return v


class DatasetSpec(_Model):
    """A prepared frame table and the splits of it the study uses."""

    path: str = Field(description="Parquet frame table, relative to the spec file")
    splits: list[str] = Field(min_length=1)

    _split_list = field_validator("splits", mode="before")(_split_names)

    @field_validator("splits")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("splits are listed twice")
        return v


class _EdgeOptions(_Model):
    mode: list[EdgeMode] = Field(default=["transfer"], min_length=1)
    arrangement: list[ArrangementKind] = Field(default=["concat"], min_length=1)
    ratio: tuple[PositiveInt, PositiveInt] = (5, 3)
    k: PositiveInt = Field(default=3, description="number of maps for multiple_random")

    _lists = field_validator("mode", "arrangement", mode="before")(_as_list)
    _ratio = field_validator("ratio", mode="before")(_ratio)


class EdgeSpec(_EdgeOptions):
    """Source → target, in one or more modes and arrangements (their product)."""

    source: str
    target: str
    source_split: str | None = None
    target_splits: list[str] | None = None

    _ssplit = field_validator("source_split", mode="before")(_split_name)
    _tsplits = field_validator("target_splits", mode="before")(
        lambda v: None if v is None else _split_names(v)
    )


class AllPairsSpec(_EdgeOptions):
    """An edge for every ordered pair of distinct datasets (all datasets unless listed);
    ``budget`` fine-tunes only the best-estimated sources per target (:mod:`study.budget`)."""

    datasets: list[str] | None = None
    budget: BudgetSpec | None = None


class ExperimentsSpec(_Model):
    seeds: list[Seed] = Field(default=[0], min_length=1, max_length=MAX_SEEDS)
    iterations: Iterations
    pretrain_iterations: Iterations | None = None
    eval_at: list[Iterations] = []
    baselines: list[str] = Field(default=["*"], description='["*"] = every dataset')
    all_pairs: AllPairsSpec | None = None
    edges: list[EdgeSpec] = []
    #: ``validation`` (default): every split's training people give up a validation part
    #: (``data_prep.splits.validation_people``), and every choice - a search's objective,
    #: ASHA's and halving's rungs, the reported iteration of a run - reads it; test metrics
    #: are only reported. ``paper``: the paper's protocol, no validation, the last iteration
    #: reported (choices then read test videos: the results are optimistic).
    protocol: Literal["validation", "paper"] = "validation"

    _seeds = field_validator("seeds", mode="before")(_as_list)

    @field_validator("baselines", mode="before")
    @classmethod
    def _baselines(cls, v: Any) -> Any:
        if isinstance(v, bool):
            return ["*"] if v else []
        return v

    @field_validator("all_pairs", mode="before")
    @classmethod
    def _all_pairs(cls, v: Any) -> Any:
        if isinstance(v, bool):
            return {} if v else None
        return v

    @field_validator("seeds", "eval_at")
    @classmethod
    def _sorted_unique(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError("values are listed twice")
        return sorted(v)

    @property
    def source_iterations(self) -> int:
        return self.pretrain_iterations or self.iterations


class AshaSpec(_Model):
    """Asynchronous successive halving over training iterations (Ray Tune's ASHA)."""

    grace_period: PositiveInt = Field(description="iterations before the first cut")
    reduction_factor: float = Field(default=3.0, gt=1)


class SearchSpec(_Model):
    """An Optuna search (seeded TPE through Ray Tune's OptunaSearch) on one target split.

    The objective is ``metric`` on the target split's *test* videos at the end of training
    (the paper's protocol has no validation split), so a search's best score is optimistic;
    use it to pick configurations, not to report them.
    """

    space: str
    space_args: dict[str, Any] = {}
    target: str
    split: str | None = None
    source: str | None = None
    source_split: str | None = None
    mode: SearchMode = "none"
    arrangement: ArrangementKind = "concat"
    num_samples: PositiveInt
    max_concurrent: PositiveInt = 2
    iterations: Iterations | None = None
    metric: Metric = "frame_acc"
    seed: Seed = 0
    asha: AshaSpec | None = None
    storage: str | None = Field(default=None, description="Optuna RDB URL, e.g. sqlite:///optuna.db")

    _split = field_validator("split", "source_split", mode="before")(_split_name)


class ResourcesSpec(_Model):
    cpu: float = Field(default=1.0, gt=0)
    gpu: float = Field(default=0.0, ge=0)


class PackingSpec(_Model):
    """``packing: {max_trials: K}``: up to K ready tasks of one shape and schedule train as
    one fused trial (``study.packed_trial``; one MLflow run per task as without it). On only
    when trials hold a GPU (``resources.gpu > 0``): on a CPU packing is slower than running
    the tasks one by one (docs/benchmarks.md). ``force_cpu`` is for tests only: packing on
    CPU trials too."""

    max_trials: int = Field(ge=2, le=1024)
    force_cpu: bool = False


class StudySpec(_Model):
    """A whole study. Build with :func:`load_spec` (file) or :func:`parse_spec` (mapping)."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = ""
    datasets: dict[str, DatasetSpec] = Field(min_length=1)
    model: dict[str, Any] = {}
    experiments: ExperimentsSpec
    search: SearchSpec | None = None
    resources: ResourcesSpec = ResourcesSpec()
    tracking_uri: str = "sqlite:///mlflow.db"
    ray_address: str | None = None
    storage_path: str | None = None
    max_failures: int = Field(default=2, ge=0)
    iterations_per_step: PositiveInt = 100
    #: Reuse a finished trial's process for the next trial (saves the seconds a fresh one
    #: spends importing torch and Ray). With trials shorter than a process start, warm
    #: processes then take every trial and a node that is still starting one gets none.
    reuse_actors: bool = True
    #: Train compatible ready tasks as one fused trial on a GPU (:class:`PackingSpec`).
    packing: PackingSpec | None = None

    _base_dir: Path = PrivateAttr(default_factory=Path.cwd)
    _source: Path | None = PrivateAttr(default=None)

    @field_validator("datasets")
    @classmethod
    def _dataset_keys(cls, v: dict[str, DatasetSpec]) -> dict[str, DatasetSpec]:
        bad = [k for k in v if not re.fullmatch(DATASET_KEY, k)]
        if bad:
            raise ValueError(f"dataset name {bad[0]!r} may hold only letters, digits, '_' and "
                             "'-' (it becomes part of task ids, run names and file names)")
        return v

    # -- derived -----------------------------------------------------------------------
    @property
    def base_dir(self) -> Path:
        """Directory that dataset paths are relative to (the spec file's)."""
        return self._base_dir

    @property
    def source(self) -> Path | None:
        """The spec file, when loaded from one."""
        return self._source

    def dataset_path(self, name: str) -> Path:
        """Absolute path of a dataset's Parquet file."""
        p = Path(self.datasets[name].path).expanduser()
        if p.is_absolute():
            return p
        try:
            return (self._base_dir / p).resolve()
        except (OSError, RuntimeError):  # a symlink loop: check_spec reports it by name
            return Path(os.path.normpath(self._base_dir / p))

    def baseline_datasets(self) -> list[str]:
        b = self.experiments.baselines
        return list(self.datasets) if "*" in b else list(b)

    def edges(self) -> list[tuple[str, EdgeSpec]]:
        """Every declared edge with its key path, ``all_pairs`` expanded (sorted pairs)."""
        out: list[tuple[str, EdgeSpec]] = []
        ap = self.experiments.all_pairs
        if ap is not None:
            names = ap.datasets if ap.datasets is not None else list(self.datasets)
            opts = ap.model_dump(exclude={"datasets", "budget"})
            for s in sorted(names):
                for t in sorted(names):
                    if s != t:
                        out.append(
                            ("experiments.all_pairs", EdgeSpec(source=s, target=t, **opts))
                        )
        for i, e in enumerate(self.experiments.edges):
            out.append((f"experiments.edges[{i}]", e))
        return out

    def hashed_dict(self) -> dict[str, Any]:
        """The part of the spec that defines what the study computes (hashed by
        :func:`study.spec_data.content_hash`): no execution settings, and datasets by their
        splits only (their content enters the hash through the cards, so moving a file does
        not change the study)."""
        d = self.model_dump(mode="json", exclude=set(EXECUTION_FIELDS))
        for ds in d["datasets"].values():
            del ds["path"]
        ap = d["experiments"].get("all_pairs")
        if ap is not None and ap.get("budget") is None:
            del ap["budget"]  # added later: a spec without a budget keeps its hash
        elif ap is not None:  # the fields given only (halving added later)
            ap["budget"] = self.experiments.all_pairs.budget.hashed()
        return d


# -- loading -------------------------------------------------------------------------------


def _key_path(loc: Iterable[Any]) -> str:
    out = ""
    for part in error_path(list(loc)):
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out



def _model_kind(spec: StudySpec) -> str:
    """The temporal model a spec's ``model`` block names (``kind``, default the LSTM)."""
    model = spec.model if isinstance(spec.model, dict) else {}
    return str(model.get("kind", DEFAULT_KIND))

def pydantic_problems(e: ValidationError) -> list[tuple[str, str]]:
    """(location, message) pairs of a pydantic error in the spec's words (the data checks of
    :mod:`study.spec_data` report a model config's errors the same way)."""
    problems = []
    for err in e.errors():
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "missing":
            msg = "required key is missing"
        problems.append((_key_path(err["loc"]), msg))
    return problems


def parse_spec(
    data: Any, path: str | Path | None = None, base_dir: str | Path | None = None
) -> StudySpec:
    """Validate a mapping (as read from YAML) into a :class:`StudySpec`.

    Schema errors and cross-references (unknown datasets or splits, self-edges, eval
    points past the iterations, unknown search space) are checked here, without reading
    any data, and reported together (:func:`validate_spec`);
    :func:`study.spec_data.check_spec` does the checks that need the datasets' cards.
    """
    spec, problems = validate_spec(data, path, base_dir)
    if problems or spec is None:
        raise SpecError(problems, path)
    return spec


def validate_spec(
    data: Any, path: str | Path | None = None, base_dir: str | Path | None = None
) -> tuple[StudySpec | None, list[tuple[str, str]]]:
    """Every problem found without reading data, and a spec to check further.

    Stages do not hide each other: when the schema fails only at keys that can be left out
    (a typo such as ``histroy:``, a wrong value with a default), the reference checks still
    run on the rest, and the returned spec (those keys left out) goes on to
    :func:`study.spec_data.check_spec`, so one run reports every problem. The spec is None
    when nothing can be checked further (a required key missing or unusable)."""
    if not isinstance(data, dict):
        return None, [("", "a study spec must be a YAML mapping at the top level")]
    problems: list[tuple[str, str]] = []
    dropped: list[str] = []
    spec: StudySpec | None = None
    rest: Any = data
    for _ in range(4):  # each round leaves out the keys the previous one refused
        try:
            spec = StudySpec.model_validate(rest)
            break
        except ValidationError as e:
            if not problems:
                problems = pydantic_problems(e)
            rest, gone = _without_refused_keys(rest, e)
            if rest is None:
                break
            dropped += gone
    if spec is None:
        return None, problems
    if base_dir is not None:
        spec._base_dir = Path(base_dir).resolve()
    if path is not None:
        spec._source = Path(path)
    for key, msg in _reference_problems(spec):
        # a consequence of a key left out above is not a second problem
        if not any(key == d or key.startswith((f"{d}.", f"{d}[")) for d in dropped):
            problems.append((key, msg))
    return spec, problems


def _without_refused_keys(data: dict[str, Any], e: ValidationError
                          ) -> tuple[dict[str, Any] | None, list[str]]:
    """A deep copy of ``data`` without the innermost mapping key of each error, and those
    keys' paths; None when an error cannot be left out (a required key missing, an error of
    the whole spec, or a required key refused)."""
    import copy

    out = copy.deepcopy(data)
    gone: list[str] = []
    for err in e.errors():
        loc = list(err["loc"])
        if err["type"] == "missing" or not loc:
            return None, []
        # the innermost string key that indexes a mapping
        node: Any = out
        parent, key, depth = None, None, 0
        for i, part in enumerate(loc):
            if isinstance(node, dict) and isinstance(part, str) and part in node:
                parent, key, depth = node, part, i
                node = node[part]
            elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
                node = node[part]
            else:
                break
        if parent is None:
            return None, []
        if depth == 0 and key in _REQUIRED_TOP:
            return None, []
        parent.pop(key, None)
        gone.append(_key_path(loc[: depth + 1]))
    return out, gone


#: Top-level keys without which no further check makes sense.
_REQUIRED_TOP = frozenset({"name", "datasets", "experiments"})


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error
    naming its line (YAML says keys are unique; PyYAML silently keeps the last value).
    Keys brought in by a merge (``<<: *anchor``) may still be overridden."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:
                    continue  # an unhashable key: the base constructor words that error
                if first is not None:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r} (first at line {first})",
                        key_node.start_mark)
                seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def load_spec(path: str | Path) -> StudySpec:
    """Read and validate a YAML study spec (see :func:`parse_spec`). A key given twice in
    one mapping is an error naming its line."""
    spec, problems = read_spec(path)
    if problems or spec is None:
        raise SpecError(problems, path)
    return spec


def read_spec(path: str | Path) -> tuple[StudySpec | None, list[tuple[str, str]]]:
    """:func:`load_spec` without raising on spec problems: :func:`validate_spec` of the
    file (an unreadable file or invalid YAML still raises, as nothing else can be checked)."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise DataError("no such file", path) from None
    except OSError as e:
        raise DataError(f"cannot read ({e.strerror})", path) from None
    except UnicodeDecodeError as e:
        line = e.object[: e.start].count(b"\n") + 1
        raise DataError(f"not UTF-8 (byte {e.object[e.start]:#04x})", path, line) from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(e, "problem", None) or str(e)
        raise DataError(f"not valid YAML: {problem}", path, line) from None
    return validate_spec(data, path=path, base_dir=path.resolve().parent)


def _reference_problems(spec: StudySpec) -> list[tuple[str, str]]:
    """Cross-reference checks that need no data files."""
    problems: list[tuple[str, str]] = []
    names = list(spec.datasets)
    known = ", ".join(names)

    def dataset(key: str, name: str | None) -> bool:
        if name is not None and name not in spec.datasets:
            problems.append((key, f"unknown dataset {name!r} (known: {known})"))
            return False
        return name is not None

    def split(key: str, name: str, s: str | None) -> None:
        if s is not None and s not in spec.datasets[name].splits:
            declared = ", ".join(spec.datasets[name].splits)
            problems.append((key, f"split {s!r} is not declared for dataset {name!r} ({declared})"))

    ex = spec.experiments
    for i, b in enumerate(ex.baselines):
        if b != "*":
            dataset(f"experiments.baselines[{i}]", b)
    if ex.all_pairs is not None and ex.all_pairs.datasets is not None:
        for i, d in enumerate(ex.all_pairs.datasets):
            dataset(f"experiments.all_pairs.datasets[{i}]", d)
    if ex.all_pairs is not None and ex.all_pairs.budget is not None \
            and ex.all_pairs.mode != ["transfer"]:
        problems.append(("experiments.all_pairs.budget", "a budget chooses fine-tunes: "
                         "all_pairs.mode must be transfer only (a joint edge has no "
                         "pre-train to estimate with)"))
    for i, e in enumerate(ex.edges):
        key = f"experiments.edges[{i}]"
        ok_s = dataset(f"{key}.source", e.source)
        ok_t = dataset(f"{key}.target", e.target)
        if e.source == e.target:
            problems.append((key, f"an edge from a dataset to itself ({e.source} -> {e.target})"))
        if ok_s:
            split(f"{key}.source_split", e.source, e.source_split)
        if ok_t:
            for j, ts in enumerate(e.target_splits or ()):
                split(f"{key}.target_splits[{j}]", e.target, ts)
    last = ex.iterations
    hb = ex.all_pairs.budget if ex.all_pairs is not None else None
    if hb is not None and hb.halving is not None:  # study.halving: evaluated at the rungs
        rs = rungs(hb.halving, last)
        missing = [r for r in rs if r not in ex.eval_at]
        if not rs:
            problems.append(("experiments.all_pairs.budget.halving.min_iterations",
                             f"{hb.halving.min_iterations} is not below experiments."
                             f"iterations ({last}): there is no rung to halve at"))
        elif missing:
            problems.append(("experiments.eval_at", "successive halving compares the "
                             f"fine-tunes at iterations {', '.join(map(str, rs))}: eval_at "
                             f"must list them (missing: {', '.join(map(str, missing))})"))
    for i, p in enumerate(ex.eval_at):
        if p > last:
            problems.append(
                (f"experiments.eval_at[{i}]", f"{p} is past experiments.iterations ({last})")
            )
    bad_model = sorted(set(spec.model) & _PER_TASK_KEYS)
    for k in bad_model:
        problems.append((f"model.{k}", "set per task by the study, not in model defaults"))
    if spec.packing is not None and spec.packing.max_trials > 1:
        from trainables.temporal import MODELS

        kind = _model_kind(spec)
        if kind in MODELS and not MODELS[kind].packable:
            packable = ", ".join(k for k, m in MODELS.items() if m.packable)
            problems.append(("packing", f"model.kind {kind!r} does not pack (packing trains "
                             f"same-shape {packable} models as one computation); remove "
                             "packing"))
    s = spec.search
    if s is not None:
        from search_spaces import SPACES

        if s.space not in SPACES:
            problems.append(
                ("search.space", f"unknown search space {s.space!r} (known: {', '.join(SPACES)})")
            )
        else:
            problems += [(f"search.space_args.{k}", m) for k, m in _space_arg_problems(s)]
            from search_spaces import SPACE_MODELS

            kind = _model_kind(spec)
            if SPACE_MODELS[s.space] != kind:
                fitting = ", ".join(n for n, k in SPACE_MODELS.items() if k == kind) or "none"
                problems.append(("search.space", f"space {s.space!r} searches a "
                                 f"{SPACE_MODELS[s.space]} model, but model.kind is {kind!r} "
                                 f"(spaces for it: {fitting})"))
        if dataset("search.target", s.target):
            split("search.split", s.target, s.split)
        if s.mode == "joint":
            if s.source is None:
                problems.append(("search.source", "a joint search needs a source dataset"))
            elif dataset("search.source", s.source):
                split("search.source_split", s.source, s.source_split)
                if s.source == s.target:
                    problems.append(("search.source", "source and target are the same dataset"))
        elif s.source is not None:
            problems.append(("search.source", "only a joint search (mode: joint) has a source"))
        if s.storage is not None:
            from .store_checks import storage_problem

            msg = storage_problem(s.storage)
            if msg:
                problems.append(("search.storage", msg))
        its = s.iterations or ex.iterations
        if s.asha is not None and s.asha.grace_period > its:
            problems.append(
                ("search.asha.grace_period",
                 f"{s.asha.grace_period} is past the search's {its} iterations")
            )
    return problems


def _space_arg_problems(s: SearchSpec) -> list[tuple[str, str]]:
    from search_spaces import SPACES

    params = inspect.signature(SPACES[s.space]).parameters
    allowed = {n for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}
    return [(k, f"unknown argument of space {s.space!r}") for k in s.space_args if k not in allowed]
