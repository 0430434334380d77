"""A pre-trained source model (any registered temporal model) run over a budgeted sample of
a target's training frames: the input of the feature-based transferability scores and of the
short probe's loss.

Forward only, no Ray, no MLflow; torch is imported inside the functions.

- :func:`model_from_checkpoint`: the source model of a checkpoint and the space its inputs
  live in (``"source"`` or ``"joint"``), checked against the edge's arrangement;
- :func:`source_responses`: its hidden states, output distribution and the frames' target
  labels (:class:`SourceResponses`), which
  :func:`trainables.transferability.feature_scores` scores;
- :func:`target_loss`: a joint-space model's cross-entropy over the target's classes, the
  loss :func:`trainables.transferability.probe_score` compares.

Both draw the same frames for the same seed, whatever the model (:func:`_windows`), so every
edge of a target is scored on the same frames; the budget is
:func:`trainables.transferability.frame_budget`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .arrangements import Arrangement

if TYPE_CHECKING:  # torch is imported where an LSTM runs
    import torch

    from .temporal import TemporalNet

__all__ = ["SourceResponses", "model_from_checkpoint", "source_responses", "target_loss"]


@dataclass(frozen=True)
class SourceResponses:
    """What the source LSTM did on the sampled target frames (padding excluded).

    ``hidden`` (n, H): the model's representation per frame (``representation``: the last
    LSTM layer's hidden state; MS-TCN's first-stage features); ``probs`` (n, Z): the
    softmax over the model's own output classes (the source's classes for a pre-training in
    the source's own space, the joint classes for a joint-space one); ``labels`` (n,): the
    frames' target labels (the target's own indices); ``frames_run``: frames the LSTM
    processed (windows x history, padding included; <= the ``max_frames`` asked for);
    ``windows``: the subsequences drawn.
    """

    hidden: np.ndarray
    probs: np.ndarray
    labels: np.ndarray
    frames_run: int
    windows: int


def _windows(
    features: Any,
    labels: Any,
    offsets: np.ndarray,
    videos: Any,
    arrangement: Arrangement,
    *,
    max_frames: int,
    history: int,
    seed: int,
    device: torch.device,
    batch: int,
):
    """Yield ``(x_joint, y_target, mask)`` batches of target training subsequences drawn as
    training draws them (:class:`trainables.sampler.SubsequenceSampler`: a uniformly random
    training video, a uniformly random start where ``history`` frames fit, padding at the
    end of short videos), ``max_frames // history`` windows in all, from a private
    generator seeded with ``seed``. The draws depend on the videos' lengths and the seed only
    — never on a model — so every edge of a target sees the same frames. Features that are
    class scores (dim == target classes) are placed into the joint space through
    ``target_map``; labels stay the target's own."""
    import torch

    from .sampler import SamplerPart, SubsequenceSampler

    if history < 1:
        raise ValueError(f"history must be >= 1, got {history}")
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    total = max_frames // history
    if total < 1:
        raise ValueError(f"max_frames ({max_frames}) must be at least history ({history})")
    feats = torch.as_tensor(features, device=device)
    if feats.ndim != 2:
        raise ValueError(f"features must be 2-D (frames, dims), got {tuple(feats.shape)}")
    feats = feats.float()
    labs = torch.as_tensor(labels, device=device).long()
    if labs.shape != (feats.shape[0],):
        raise ValueError(f"labels have shape {tuple(labs.shape)}, expected ({feats.shape[0]},)")
    l_size = arrangement.target.size
    mapped = feats.shape[1] == l_size  # the Trainer's rule for "class scores"
    part = SamplerPart(
        features=feats, labels=labs, offsets=np.asarray(offsets), videos=videos,
        label_maps=np.arange(l_size)[None],
        feature_maps=np.asarray(arrangement.target_map)[None] if mapped else None,
    )
    generator = torch.Generator().manual_seed(int(seed))
    drawn = 0
    while drawn < total:
        n = min(batch, total - drawn)
        sampler = SubsequenceSampler([part], [n], history, arrangement.dim, generator)
        b = sampler.sample()
        drawn += n
        yield b.x, b.y, b.mask


def _model_input(x: torch.Tensor, arrangement: Arrangement, mapped: bool,
                 model_space: str) -> torch.Tensor:
    from .arrangements import restrict

    if mapped and model_space == "source":
        # the source model's input column j is joint column source_maps[0][j]: target
        # scores it shares a joint index with reach it, the others (all, under concat) don't
        return restrict(x, np.asarray(arrangement.source_maps[0]))
    return x


def _expected_input(arrangement: Arrangement, mapped: bool, model_space: str,
                    feature_dim: int) -> int:
    if not mapped:
        return feature_dim
    if model_space == "source":
        if arrangement.source is None:
            raise ValueError("model_space 'source' needs an arrangement with a source")
        return arrangement.source.size
    return arrangement.dim


@contextmanager
def _forward_only(model: TemporalNet) -> Iterator[torch.device]:
    """The block runs ``model`` in eval mode without autograd; yields its device. The mode
    it was in is restored afterwards, whatever happens in the block."""
    import torch

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield next(model.parameters()).device
    finally:
        model.train(was_training)


def source_responses(
    model: TemporalNet,
    features: Any,
    labels: Any,
    offsets: Any,
    videos: Any,
    arrangement: Arrangement,
    *,
    max_frames: int,
    history: int,
    model_space: str = "source",
    seed: int = 0,
    batch: int = 64,
) -> SourceResponses:
    """Run a pre-trained source LSTM over a budgeted sample of target training frames.

    ``features`` (N, F) and ``labels`` (N,) are the target table's flat arrays (numpy or
    torch; e.g. ``SplitData.features`` / ``.labels``), ``offsets`` its per-video offsets,
    ``videos`` its training video indices, ``arrangement`` the edge's. ``max_frames`` is the
    budget (:func:`trainables.transferability.frame_budget`): ``max_frames // history``
    subsequences of ``history`` frames are drawn (see :func:`_windows`), each run from the
    zero state as in training, forward only; ``frames_run`` reports what ran (never more
    than ``max_frames``).

    ``model_space`` says where the model's inputs live: ``"source"`` for a pre-training in
    the source's own space (the usual case): class-score features go into the joint space
    through ``target_map`` and reach the model through ``source_maps[0]`` (under ``concat``
    no target column reaches it: the model sees zeros, which is what its pre-trained
    weights know of the target); ``"joint"`` for a model in the edge's joint space (a
    ``multiple_random`` pre-training, or the fine-tune's initial model). Features that are
    not class scores pass through unchanged. The model is left in the mode it was in.
    """
    import torch

    if model_space not in ("source", "joint"):
        raise ValueError(f"model_space must be 'source' or 'joint', got {model_space!r}")
    mapped = int(np.shape(features)[1]) == arrangement.target.size
    want = _expected_input(arrangement, mapped, model_space, int(np.shape(features)[1]))
    if want != model.input_dim:
        raise ValueError(f"the model takes {model.input_dim} inputs; {model_space}-space "
                         f"inputs of this arrangement have {want}")
    hidden, probs, ys = [], [], []
    frames = windows = 0
    with _forward_only(model) as device:
        for x, y, mask in _windows(
            features, labels, np.asarray(offsets), videos, arrangement,
            max_frames=max_frames, history=history, seed=seed, device=device, batch=batch,
        ):
            x = _model_input(x, arrangement, mapped, model_space)
            out, _ = model.representation(x, None, mask)
            logits, _ = model(x, None, mask)
            hidden.append(out[mask].double().cpu().numpy())
            probs.append(torch.softmax(logits[mask].double(), -1).cpu().numpy())
            ys.append(y[mask].cpu().numpy())
            frames += x.shape[0] * x.shape[1]
            windows += x.shape[0]
    return SourceResponses(
        hidden=np.concatenate(hidden), probs=np.concatenate(probs),
        labels=np.concatenate(ys).astype(np.int64), frames_run=frames, windows=windows,
    )


def target_loss(
    model: TemporalNet,
    features: Any,
    labels: Any,
    offsets: Any,
    videos: Any,
    arrangement: Arrangement,
    *,
    max_frames: int,
    history: int,
    seed: int = 0,
    batch: int = 64,
) -> float:
    """Mean cross-entropy of a model in ``arrangement``'s joint space on a budgeted sample of
    target training frames, over the TARGET's classes only (logits restricted to
    ``target_indices``, as evaluation predicts): the loss the short probe compares.

    Why not the training loss a step reports: that one is over the joint space, whose size
    differs between arrangements and sources (a fresh model's loss is about log(dim)), so
    it does not compare a transfer run with the baseline. Here both models are scored on the
    same frames (same ``seed``, same draws) over the same classes; the baseline passes
    ``make_arrangement("identity", target_space)``. Forward only, ``max_frames`` at most.
    """
    import torch
    import torch.nn.functional as F

    from .arrangements import restrict
    from .sampler import IGNORE

    count = 0
    tmap = np.asarray(arrangement.target_indices)
    with _forward_only(model) as device:
        total = torch.zeros((), dtype=torch.float64, device=device)
        for x, y, mask in _windows(
            features, labels, np.asarray(offsets), videos, arrangement,
            max_frames=max_frames, history=history, seed=seed, device=device, batch=batch,
        ):
            if x.shape[-1] != model.input_dim:
                raise ValueError(f"the model takes {model.input_dim} inputs; this "
                                 f"arrangement's joint inputs have {x.shape[-1]}")
            logits, _ = model(x, None, mask)
            target = restrict(logits, tmap)
            total += F.cross_entropy(target.reshape(-1, target.shape[-1]).double(),
                                     y.reshape(-1), ignore_index=IGNORE, reduction="sum")
            count += int(mask.sum())
    return float(total.item() / count)


def model_from_checkpoint(checkpoint: Any, arrangement: Arrangement,
                          device: Any = "cpu") -> tuple[TemporalNet, str]:
    """The pre-trained source LSTM of an LSTM checkpoint (``meta`` with ``config``,
    ``input_dim``, ``num_classes``, ``arrangement``; ``state["model"]``) and the
    ``model_space`` to pass to :func:`source_responses`: ``"source"`` when it was trained
    in one label space, which must be the edge's source space (same classes and background);
    ``"joint"`` when it was trained in a two-dataset arrangement, which must be the edge's
    (same kind, dim, maps and label vocabularies). Anything else is a ValueError."""
    from .temporal import kind_of
    from .train_config import TrainConfig

    meta = checkpoint.meta
    theirs = Arrangement.from_dict(meta["arrangement"])
    if theirs.source is None:
        space = "source"
        if not theirs.target.same_vocabulary(arrangement.source):
            raise ValueError(
                f"the checkpoint was trained on {theirs.target.name!r}, which is not the "
                f"edge's source space"
            )
    else:
        space = "joint"
        if not theirs.same_joint_space(arrangement):
            raise ValueError(f"the checkpoint's arrangement {theirs!r} is not the edge's "
                             f"{arrangement!r}")
    cfg = TrainConfig.parse(meta["config"]).model
    model = kind_of(cfg).build(cfg, int(meta["input_dim"]), int(meta["num_classes"]))
    model.load_state_dict(checkpoint.state["model"])
    return model.to(device), space
