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

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from data_prep.errors import DataError
from data_prep.table import DatasetCard, verify_table
from trainables.lstm_config import LSTMConfig

from .spec import SpecError, StudySpec, _pydantic_problems, load_spec

__all__ = [
    "LoadedStudy",
    "arrangement_problem",
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


def check_spec(spec: StudySpec) -> dict[str, DatasetCard]:
    """Check the spec against its data (no rows are read, only cards); return the cards.

    Raises :class:`SpecError` listing every problem: a missing or unreadable file, a split
    not in the card, a table without features, a ``model`` that is not a valid LSTM config,
    and an edge whose arrangement the two datasets cannot support (see
    :func:`arrangement_problem`).
    """
    problems: list[tuple[str, str]] = []
    cards: dict[str, DatasetCard] = {}
    for name, ds in spec.datasets.items():
        key = f"datasets.{name}.path"
        p = spec.dataset_path(name)
        if not p.is_file():
            problems.append((key, f"no such file: {p}"))
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
    problems += _model_problems(spec.model)
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


def arrangement_problem(
    kind: str, target: DatasetCard, source: DatasetCard, k: int = 3
) -> str | None:
    """Why ``kind`` cannot arrange ``source`` into ``target``'s space, or None if it can.

    The trainer's input rule (``trainables.lstm_job``): features whose dim equals the class
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
    """``model`` against the LSTM config schema (each problem at ``model.<key>``)."""
    try:
        LSTMConfig.model_validate(model)
    except ValidationError as e:
        return [("model." + k if k else "model", m) for k, m in _pydantic_problems(e)]
    return []


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
    """:func:`load_spec` + :func:`check_spec` + :func:`content_hash`."""
    spec = load_spec(path)
    cards = check_spec(spec)
    return LoadedStudy(spec, cards, content_hash(spec, cards))
