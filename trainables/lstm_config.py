"""The paper's frame-wise LSTM as a registered temporal model, importable without torch:
its config (:class:`LSTMConfig`) and its registry entry (:data:`LSTM`, see
:mod:`trainables.temporal` for the contract). The network is :mod:`trainables.lstm_model`.

Paper defaults (Perrett & Damen §4.2): history 300, depth 1, hidden 128 (batch 128 and Adam
at lr 0.001 are the job's, :class:`trainables.train_config.TrainConfig`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from .job import StrictConfig

if TYPE_CHECKING:
    from torch import nn

__all__ = ["LSTM", "LSTMConfig"]

#: Bounds on the state, beyond which a value is a typo rather than a setting. Whether a valid
#: size fits the machine is checked when the job starts (:meth:`LSTMKind.memory_estimate`).
MAX_HISTORY = 100_000
MAX_DEPTH = 16
MAX_HIDDEN = 16_384
#: frames per evaluation chunk when the state is carried (results do not depend on it)
EVAL_CHUNK = 1024


class LSTMConfig(StrictConfig):
    """The LSTM's hyperparameters (defaults: the paper's)."""

    kind: Literal["lstm"] = "lstm"
    history: int = Field(300, ge=1, le=MAX_HISTORY, description="frames per training subsequence")
    depth: int = Field(1, ge=1, le=MAX_DEPTH, description="stacked LSTM layers")
    hidden: int = Field(128, ge=1, le=MAX_HIDDEN, description="LSTM hidden units")
    cell: Literal["cudnn", "peephole"] = "cudnn"
    eval_reset: bool = Field(False, description="reset the state every `history` test frames")


class LSTMKind:
    """Registry entry of the paper's LSTM (:class:`trainables.temporal.ModelKind`)."""

    name = "lstm"
    config = LSTMConfig
    packable = True
    shape_fields = ("cell", "depth", "hidden")
    window_field = "history"

    def causal(self, config: LSTMConfig) -> bool:
        return True

    def build(self, config: LSTMConfig, input_dim: int, num_classes: int) -> nn.Module:
        from .lstm_model import FramewiseLSTM  # torch only when a network is built

        return FramewiseLSTM(input_dim, num_classes, config.hidden, config.depth, config.cell)

    def memory_estimate(self, config: LSTMConfig, input_dim: int, num_classes: int,
                        batch_size: int, window: int) -> int:
        """The activations kept for the backward pass,
        ``batch * window * (depth * 6 * hidden + input_dim + 3 * classes)`` (per layer four
        gates, the cell and the output; the input; logits, softmax and their gradient), plus
        parameters with their gradients and Adam's two moments, ``4 * P``; float32. A lower
        bound (no allocator slack, cuDNN workspace or the data itself)."""
        h, layers = config.hidden, config.depth
        params = sum(4 * h * ((input_dim if i == 0 else h) + h + 2) for i in range(layers))
        params += h * num_classes + num_classes
        acts = batch_size * window * (layers * 6 * h + input_dim + 3 * num_classes)
        return 4 * (acts + 4 * params)

    def train_window(self, config: LSTMConfig, longest: int) -> int:
        return config.history

    def eval_window(self, config: LSTMConfig) -> tuple[int | None, bool]:
        # the paper evaluates streaming: the state runs through the whole video, unless the
        # user asks to reset it every `history` frames (the training condition)
        return (config.history, False) if config.eval_reset else (EVAL_CHUNK, True)

    def transfer_axes(self, config: LSTMConfig) -> Mapping[str, tuple[int, Any]]:
        return {"lstm.weight_ih_l0": (1, "features"), "head.weight": (0, "classes"),
                "head.bias": (0, "classes")}


#: The registry entry (``trainables.temporal.MODELS["lstm"]``).
LSTM = LSTMKind()
