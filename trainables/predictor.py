"""A trained temporal model (any registered kind) as a predictor: one frame in, class
probabilities out (causal models), or one whole video at a time (every model).

The paper's motivation is real-time monitoring of a kitchen task, so a trained model must be
usable one frame at a time. :class:`FramewisePredictor` is the public way to do that:

>>> p = FramewisePredictor.from_checkpoint("lstm.pt")        # or .from_mlflow("models:/…")
>>> p.reset()                                               # a new video
>>> probs = p.step(frame_scores)                            # (C,) over p.classes

Rules (the same as the batch evaluation in :meth:`trainables.train_job.Trainer.predict`, so
``argmax`` of ``step`` equals the batch prediction frame by frame, which the tests check):

- **Causal** models (the LSTM; MS-TCN with ``causal: true``,
  :meth:`trainables.temporal.ModelKind.causal`): the output for frame t depends on frames
  0..t only; the model's state (the LSTM's, the causal TCN's left context) is carried from
  frame to frame and cleared by :meth:`reset` (call it between videos). A model that is not
  causal (offline MS-TCN) refuses :meth:`step` and predicts whole videos
  (:meth:`predict_video`).
- **Inputs** are one frame's features in the *evaluated dataset's own* space: its class
  scores (a CNN's softmax; they are mapped into the model's joint label space with the
  arrangement's map, exactly as in training) or raw features (passed through unchanged).
- **Outputs** are probabilities over the evaluated dataset's own classes (:attr:`classes`):
  a softmax over the model's logits restricted to that dataset's columns of the joint space
  (the batch evaluation takes the argmax over the same columns).
- When the model's evaluation resets its state every N frames (the LSTM's ``eval_reset``:
  every ``history`` frames), so does the predictor, as the batch evaluation does.

A checkpoint from a ``pretrain`` task of ``multiple_random`` predicts the *source* dataset's
classes (it was trained on the source only); every other checkpoint predicts its target's.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .arrangements import map_features, restrict
from .temporal import DEFAULT_KIND, kind_of

__all__ = ["FramewisePredictor"]


class FramewisePredictor:
    """Per-frame class probabilities from a trained temporal model (see the module doc)."""

    def __init__(
        self,
        model: Any,
        label_map: Sequence[int] | np.ndarray,
        classes: Sequence[str],
        *,
        feature_mapped: bool,
        reset_every: int | None = None,
        causal: bool = True,
        kind: str = DEFAULT_KIND,
        device: str | torch.device = "cpu",
    ):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.classes: tuple[str, ...] = tuple(classes)
        self._map = torch.as_tensor(np.array(label_map, dtype=np.int64), device=self.device)
        if self._map.numel() != len(self.classes):
            raise ValueError(f"{len(self.classes)} classes but a map of {self._map.numel()}")
        self.feature_mapped = feature_mapped
        #: the width of one frame's input: the dataset's class count when the inputs are
        #: class scores, else the raw feature dimension
        self.input_dim = len(self.classes) if feature_mapped else model.input_dim
        self.reset_every = reset_every
        self.causal = causal
        #: the model's registry name (``trainables.temporal.MODELS``)
        self.kind: str = kind
        self._state: Any = None
        self._t = 0

    # -- construction ------------------------------------------------------------------
    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "cpu"
                        ) -> FramewisePredictor:
        """From a checkpoint written by a training job (any model, any mode)."""
        from .train_job import load_checkpoint

        ckpt = load_checkpoint(path)
        meta, cfg, arr = ckpt.meta, ckpt.config.model, ckpt.arrangement
        kind = kind_of(cfg)
        model = kind.build(cfg, int(meta["input_dim"]), int(meta["num_classes"]))
        model.load_state_dict(ckpt.state["model"])
        chunk, carry = kind.eval_window(cfg)
        # a source-only trainer (multiple_random pre-training) evaluates on the source
        on_source = _trained_on_source(meta)
        space = arr.source if on_source else arr.target
        label_map = arr.source_maps[0] if on_source else arr.target_map
        return cls(model, label_map, space.classes, feature_mapped=bool(meta["feature_mapped"]),
                   reset_every=chunk if (chunk is not None and not carry) else None,
                   causal=kind.causal(cfg), kind=kind.name, device=device)

    @classmethod
    def from_mlflow(cls, model_uri: str, device: str | torch.device = "cpu",
                    tracking_uri: str | None = None) -> FramewisePredictor:
        """From a model the study logged to MLflow (``runs:/<id>/model``, ``models:/name/1``,
        …): the model's checkpoint travels as the model's artifact, so this needs the MLflow
        model's files only, not its Python environment."""
        import tempfile

        import mlflow

        with tempfile.TemporaryDirectory() as tmp:
            local = Path(mlflow.artifacts.download_artifacts(
                artifact_uri=model_uri.rstrip("/") + "/artifacts", dst_path=tmp,
                tracking_uri=tracking_uri,
            ))
            files = sorted(local.rglob("*.pt"))
            if len(files) != 1:
                raise FileNotFoundError(f"{model_uri}: expected one model checkpoint, found "
                                        f"{[f.name for f in files]}")
            return cls.from_checkpoint(files[0], device=device)

    # -- streaming ---------------------------------------------------------------------
    def reset(self) -> None:
        """Forget the past: the next :meth:`step` is the first frame of a new video."""
        self._state = None
        self._t = 0

    @torch.no_grad()
    def step(self, frame: Any) -> np.ndarray:
        """Probabilities over :attr:`classes` for the next frame, given its features
        (shape ``(input_dim,)``). Causal models only."""
        if not self.causal:
            raise ValueError("this model is not causal (its output at a frame depends on later "
                             "frames): predict whole videos with predict_video")
        x = torch.as_tensor(_writable_float32(frame), device=self.device)
        if x.shape != (self.input_dim,):
            raise ValueError(f"a frame has {self.input_dim} features, got shape {tuple(x.shape)}")
        return self._run(x.view(1, 1, -1))[0]

    @torch.no_grad()
    def predict_video(self, frames: Any) -> np.ndarray:
        """``(T, input_dim)`` frames of one whole video -> ``(T, C)`` probabilities; the same
        as :meth:`reset` then :meth:`step` per frame, computed in one pass (state cleared
        every ``reset_every`` frames as there)."""
        x = torch.as_tensor(_writable_float32(frames), device=self.device)
        if x.ndim != 2 or x.shape[1] != self.input_dim:
            raise ValueError(f"expected (frames, {self.input_dim}), got shape {tuple(x.shape)}")
        self.reset()
        width = self.reset_every or max(1, x.shape[0])
        out = [self._run(x[t0:t0 + width].unsqueeze(0)) for t0 in range(0, x.shape[0], width)]
        self.reset()
        if not out:
            return np.zeros((0, len(self.classes)), dtype=np.float32)
        return np.concatenate(out)

    def _run(self, x: torch.Tensor) -> np.ndarray:
        """Frames ``(1, T, D)`` continuing the current state -> probabilities ``(T, C)``."""
        if self.reset_every is not None and self._t and self._t % self.reset_every == 0:
            self._state = None
        if self.feature_mapped:
            x = map_features(x, self._map, self.model.num_classes)
        logits, self._state = self.model(x, self._state if self.causal else None)
        self._t += x.shape[1]
        return torch.softmax(restrict(logits[0], self._map), dim=-1).cpu().numpy()


def _writable_float32(a: Any) -> np.ndarray:
    """``a`` as a float32 array that torch may share: a read-only one (a pyarrow or pandas
    zero-copy column, ``np.frombuffer``, MLflow's schema-checked input) is copied, as
    ``torch.as_tensor`` warns that writing through the tensor would be undefined."""
    arr = np.asarray(a, dtype=np.float32)
    return arr if arr.flags.writeable else arr.copy()


def _trained_on_source(meta: dict[str, Any]) -> bool:
    # the key names which data fed the batches; older checkpoints call it trainer_mode
    for key in ("batches", "trainer_mode"):
        if key in meta:
            return meta[key] == "source"
    return False
