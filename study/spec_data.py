"""The study spec against its datasets: the checks that read the cards, the identity of a
study version, and :func:`open_study` (load + check + hash: what the runner and the CLI
work on). The schema and the checks that need no data are :mod:`study.spec`.

Rules:

* **Content hash** (:func:`content_hash`): sha256 of the canonical JSON of the validated
  spec *without* the execution settings in :data:`study.spec.EXECUTION_FIELDS` (where and
  how it runs does not change what it computes) and without dataset paths, plus each
  dataset's identity (:func:`card_identity`: name, input hash, converter version, feature
  description, classes, splits and the card's ``content_digest``, the sha256 of the frames'
  video ids, offsets, labels and features that the table writer records). Changing a
  dataset's content — even its feature values alone, under the same path and card — an
  iteration count or an edge changes the hash; moving the data or running the study on a
  cluster does not. A table written before cards carried a digest (``content_digest`` "")
  is identified by the sha256 of its file's bytes instead (``file-sha256:<hex>``, one
  streamed read in :func:`check_spec`), so a rewritten old table is a new version too.
* **Per-task identity** (:func:`dataset_digest`): each task of the plan is keyed by its own
  config and the digests of the datasets it reads (``study.plan``), so a new study version
  reuses every task whose inputs did not change.

:func:`check_spec` does the checks that need the data: files exist and are frame tables,
declared splits exist in their cards, tables carry a ``features`` column, each edge's
label arrangement is one the two label spaces support, and ``model`` is a valid LSTM config.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from data_prep.errors import DataError
from data_prep.table import DatasetCard, verify_table
from trainables.temporal import MODELS, kind_of
from trainables.train_config import TrainConfig

from .spec import SpecError, StudySpec, pydantic_problems, read_spec

__all__ = [
    "LoadedStudy",
    "card_identity",
    "check_spec",
    "content_hash",
    "dataset_digest",
    "open_study",
]


# -- checks against the data --------------------------------------------------------------


def _feature_dim(card: DatasetCard) -> int | None:
    return None if card.features is None else int(card.features.get("dim", 0)) or None


def _is_label_softmax(card: DatasetCard) -> bool:
    """Features are a score per class of the card (what label arrangements can remap)."""
    return _feature_dim(card) == card.num_classes


def check_spec(spec: StudySpec, earlier: Iterable[tuple[str, str]] = ()
               ) -> dict[str, DatasetCard]:
    """Check the spec against its data (cards, and each table's video column); return the
    cards.

    Raises :class:`SpecError` listing every problem, after ``earlier`` ones (those
    :func:`study.spec.validate_spec` found without data, so that one run reports them all):
    a missing or unreadable file, a split not in the card, a table without features, a
    ``model`` that is not a valid LSTM config, a ``history`` longer than every training
    video a task would sample from (the bound ``kitchen-study train`` applies), and an edge
    whose arrangement the two datasets cannot support (see :func:`arrangement_problem`).
    """
    problems: list[tuple[str, str]] = list(earlier)
    cards: dict[str, DatasetCard] = {}
    for name, ds in spec.datasets.items():
        key = f"datasets.{name}.path"
        p = spec.dataset_path(name)
        unusable = _path_problem(p)
        if unusable:
            problems.append((key, unusable))
            continue
        try:
            # the frames checked against the card (once per file version: data_prep.digest),
            # so a table changed outside the writer is refused, not trusted by its card
            card = verify_table(p)
        except DataError as e:
            problems.append((key, e.reason + f" ({p})"))
            continue
        if not card.content_digest:
            # written before cards carried a digest: the file's bytes identify it instead
            card = card.replace(content_digest=f"file-sha256:{_file_sha256(p)}")
        cards[name] = card
        have = [s.name for s in card.splits]
        for i, s in enumerate(ds.splits):
            if s not in have:
                problems.append(
                    (f"datasets.{name}.splits[{i}]",
                     f"{p.name} has no split {s!r} (it has: {', '.join(have) or 'none'})")
                )
        if card.features is None:
            problems.append(
                (key, f"{p.name} has no features column; add one, e.g. `kitchen-study simulate`")
            )
    problems += [p for p in _model_problems(spec.model) if p not in problems]
    problems += _history_problems(spec, cards)
    for key, e in spec.edges():
        if e.source in cards and e.target in cards:
            for j, kind in enumerate(e.arrangement):
                msg = arrangement_problem(kind, cards[e.target], cards[e.source], k=e.k)
                if msg:
                    at = f"{key}.arrangement[{j}]" if key != "experiments.all_pairs" else key
                    problems.append((at, f"{e.source} -> {e.target}: {msg}"))
    s = spec.search
    if s is not None and s.mode == "joint" and s.source in cards and s.target in cards:
        msg = arrangement_problem(s.arrangement, cards[s.target], cards[s.source])
        if msg:
            problems.append(("search.arrangement", msg))
    if problems:
        raise SpecError(problems, spec.source)
    return cards


def _path_problem(p: Path) -> str | None:
    """Why a dataset path cannot be a table (a symlink loop, a folder, missing), or None."""
    try:
        os.stat(p)
    except OSError as e:
        if e.errno == errno.ELOOP:
            return f"a symlink loop: {p}"
        if e.errno in (errno.ENOENT, errno.ENOTDIR):
            return f"no such file: {p}"
        return f"cannot read ({e.strerror}): {p}"
    return None if p.is_file() else f"not a file: {p}"


def _trained_splits(spec: StudySpec) -> dict[str, set[str]]:
    """dataset -> the splits whose training videos some task samples from (the planner's
    rules, ``study.plan``): baselines and edge targets on their splits, sources on their
    source split, a search on its target (and joint source) split."""
    def first(name: str) -> str:
        return spec.datasets[name].splits[0]

    out: dict[str, set[str]] = {}

    def add(name: str | None, splits: Iterable[str]) -> None:
        if name in spec.datasets:
            out.setdefault(name, set()).update(
                s for s in splits if s in spec.datasets[name].splits)

    for name in spec.baseline_datasets():
        add(name, spec.datasets[name].splits if name in spec.datasets else ())
    for _, e in spec.edges():
        if e.source in spec.datasets:
            add(e.source, [e.source_split or first(e.source)])
        if e.target in spec.datasets:
            add(e.target, e.target_splits or spec.datasets[e.target].splits)
    s = spec.search
    if s is not None and s.target in spec.datasets:
        add(s.target, [s.split or first(s.target)])
        if s.mode == "joint" and s.source in spec.datasets:
            add(s.source, [s.source_split or first(s.source)])
    return out


def _longest_training_videos(path: Path, card: DatasetCard, splits: Iterable[str]
                             ) -> dict[str, int]:
    """split -> frames of its longest training video, from the table's ``video`` column
    alone (a dictionary column: cheap next to the features)."""
    st = path.stat()
    lengths = _video_lengths(str(path), st.st_size, st.st_mtime_ns, st.st_ino)
    out: dict[str, int] = {}
    for name in splits:
        train = card.split(name).train
        out[name] = max((lengths.get(v, 0) for v in train), default=0)
    return out


@functools.lru_cache(maxsize=32)
def _video_lengths(path: str, size: int, mtime_ns: int, inode: int) -> dict[str, int]:
    """video -> frames of a table (cached by the file's identity: a command opens its study
    more than once)."""
    import numpy as np
    import pyarrow.parquet as pq

    try:
        col = pq.read_table(path, columns=["video"], memory_map=True).column("video")
    except (OSError, KeyError, ValueError) as e:
        raise DataError(f"cannot read its video column ({str(e).splitlines()[0]})",
                        path) from None
    if not len(col):
        return {}
    if not hasattr(col.type, "value_type"):  # not dictionary-encoded: count the values
        import pyarrow.compute as pc

        vc = pc.value_counts(col)
        return dict(zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist(),
                        strict=True))
    col = col.unify_dictionaries()
    names = col.chunks[0].dictionary.to_pylist()
    codes = np.concatenate([c.indices.to_numpy(zero_copy_only=False) for c in col.chunks])
    counts = np.bincount(codes, minlength=len(names))
    return dict(zip(names, counts.tolist(), strict=True))


def _history_problems(spec: StudySpec, cards: dict[str, DatasetCard]) -> list[tuple[str, str]]:
    """The model's training window (the LSTM's ``model.history``) against the longest
    training video of every split a task samples from: the check ``kitchen-study train``
    makes when a job starts (``trainables.train_job``), made here so the study is refused
    before any trial rather than failing every trial."""
    try:
        model = TrainConfig.model_validate(spec.model).model
    except (ValidationError, ValueError):
        return []  # a bad model block is _model_problems' to report
    kind = kind_of(model)
    key = f"model.{kind.window_field}"
    problems = []
    for name, splits in sorted(_trained_splits(spec).items()):
        if name not in cards:
            continue
        try:
            longest = _longest_training_videos(spec.dataset_path(name), cards[name],
                                               sorted(splits))
        except DataError as e:
            problems.append((f"datasets.{name}.path", e.reason))
            continue
        except KeyError:  # a split not in the card: reported above
            continue
        for split, frames in sorted(longest.items()):
            window = kind.train_window(model, frames)
            if window > frames:
                problems.append((key, f"{window} is longer than every training "
                                 f"video of {name} {split} (the longest has {frames} frames)"))
    return problems


def arrangement_problem(
    kind: str, target: DatasetCard, source: DatasetCard, k: int = 3
) -> str | None:
    """Why ``kind`` cannot arrange ``source`` into ``target``'s space, or None if it can.

    The trainer's input rule (``trainables.train_job``): features whose dim equals the class
    count are class scores and are remapped like the labels; other features pass through
    unchanged, so two such datasets need equal dims, and mixing the two kinds is an error.
    """
    ts, ss = _is_label_softmax(target), _is_label_softmax(source)
    td, sd = _feature_dim(target), _feature_dim(source)
    if ts != ss:
        scores, raw = (target, source) if ts else (source, target)
        return (
            f"arrangement {kind!r} cannot mix class-score features ({scores.name}: dim "
            f"{_feature_dim(scores)} = its classes) with other features ({raw.name}: dim "
            f"{_feature_dim(raw)} for {raw.num_classes} classes)"
        )
    if not ts and td != sd:
        return (
            f"arrangement {kind!r}: features that are not class scores pass through unchanged, "
            f"so both datasets need the same feature dim ({target.name}: {td}, "
            f"{source.name}: {sd})"
        )
    from trainables.arrangements import LabelSpace, make_arrangement

    try:
        make_arrangement(
            kind, LabelSpace.from_card(target), LabelSpace.from_card(source), seed=0, k=k
        )
    except ValueError as e:
        return str(e)
    return None


def _model_problems(model: dict[str, Any]) -> list[tuple[str, str]]:
    """``model`` against the training config schema: a registered model's config (by
    ``kind``, default the LSTM) and the optimisation keys, each problem at ``model.<key>``."""
    try:
        TrainConfig.model_validate(model)
    except ValidationError as e:
        return [(_flat_loc(k), m) for k, m in pydantic_problems(e)]
    return []


def _flat_loc(loc: str) -> str:
    """An error location inside ``TrainConfig`` as the spec's flat ``model`` block spells it:
    ``model.lstm.history`` (pydantic's nested model and union branch) -> ``model.history``."""
    parts = loc.split(".") if loc else []
    if parts[:1] == ["model"]:
        parts = parts[1:]
        if parts[:1] and parts[0] in MODELS:
            parts = parts[1:]
    return ".".join(["model", *parts])


# -- identity ------------------------------------------------------------------------------


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def card_identity(card: DatasetCard) -> dict[str, Any]:
    """What identifies a prepared dataset's content: provenance, label space, splits and
    the frames themselves (``content_digest``)."""
    return {
        "name": card.name,
        "input_hash": card.input_hash,
        "converter_version": card.converter_version,
        "source_format": card.source_format,
        "features": card.features,
        "classes": list(card.classes),
        "background": card.background,
        "splits": [s.to_dict() for s in card.splits],
        "content_digest": card.content_digest,
    }


def dataset_digest(card: DatasetCard) -> str:
    """sha256 (hex) of :func:`card_identity`: one dataset's content, as task keys use it."""
    canon = json.dumps(card_identity(card), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canon.encode()).hexdigest()


def content_hash(spec: StudySpec, cards: dict[str, DatasetCard]) -> str:
    """Stable sha256 (hex) of what the study computes (see the module docstring)."""
    doc = {
        "spec": spec.hashed_dict(),
        "datasets": {n: card_identity(cards[n]) for n in sorted(cards)},
    }
    canon = json.dumps(doc, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canon.encode()).hexdigest()


@dataclass(frozen=True)
class LoadedStudy:
    """A checked spec with its cards and content hash: what the runner and CLI work on."""

    spec: StudySpec
    cards: dict[str, DatasetCard]
    hash: str

    @property
    def short_hash(self) -> str:
        return self.hash[:12]


def open_study(path: str | Path) -> LoadedStudy:
    """:func:`load_spec` + :func:`check_spec` + :func:`content_hash`; the problems of every
    stage are reported together."""
    spec, problems = read_spec(path)
    if spec is None:
        raise SpecError(problems, path)
    cards = check_spec(spec, problems)
    return LoadedStudy(spec, cards, content_hash(spec, cards))
