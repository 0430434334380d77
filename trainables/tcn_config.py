"""MS-TCN (Farha & Gall, CVPR 2019) as a registered temporal model, importable without torch:
its config (:class:`TCNConfig`) and registry entry (:data:`MSTCN_KIND`; the contract is
:mod:`trainables.temporal`). The network is :mod:`trainables.tcn_model`.

Defaults are the paper's Breakfast configuration: 4 stages of 10 dilated residual layers
(dilation 2^i, kernel 3) with 64 feature maps, dropout 0.5, smoothing loss weight λ = 0.15
truncated at τ = 4, trained on whole videos (``window: null``; the authors use batch 1 and
Adam at lr 0.0005, which a study sets in its ``model`` block). ``causal: true`` pads on the
left only, so a frame's output never depends on later frames (real-time use; streaming equals
the batch output). ``window`` caps the frames of a training sample (a random crop of longer
videos), for memory; None trains on whole videos.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from .job import StrictConfig

if TYPE_CHECKING:
    from torch import nn

__all__ = ["MSTCN_KIND", "TCNConfig"]


class TCNConfig(StrictConfig):
    """MS-TCN hyperparameters (defaults: the paper's Breakfast configuration)."""

    kind: Literal["mstcn"] = "mstcn"
    stages: int = Field(4, ge=1, le=16, description="prediction stages")
    layers: int = Field(10, ge=1, le=16, description="dilated residual layers per stage")
    maps: int = Field(64, ge=1, le=4096, description="feature maps")
    dropout: float = Field(0.5, ge=0, lt=1)
    smooth_weight: float = Field(0.15, ge=0, le=10, description="λ of the T-MSE loss")
    tau: float = Field(4.0, gt=0, le=100, description="T-MSE truncation τ")
    causal: bool = Field(False, description="left-only padding: real-time, streamable")
    window: int | None = Field(None, ge=1, le=1_000_000,
                               description="frames per training sample; None: whole videos")


class TCNKind:
    """Registry entry of MS-TCN (:class:`trainables.temporal.ModelKind`)."""

    name = "mstcn"
    config = TCNConfig
    packable = False
    shape_fields = ("stages", "layers", "maps", "causal")
    window_field = "window"

    def causal(self, config: TCNConfig) -> bool:
        return config.causal

    def build(self, config: TCNConfig, input_dim: int, num_classes: int) -> nn.Module:
        from .tcn_model import MSTCN  # torch only when a network is built

        return MSTCN(input_dim, num_classes, stages=config.stages, layers=config.layers,
                     maps=config.maps, dropout=config.dropout, causal=config.causal,
                     smooth_weight=config.smooth_weight, tau=config.tau)

    def memory_estimate(self, config: TCNConfig, input_dim: int, num_classes: int,
                        batch_size: int, window: int) -> int:
        """Activations kept for the backward pass, per frame and sample: the input; per
        stage its 1x1 input, per layer the dilated conv, its ReLU, the 1x1, the dropout mask
        and the residual sum (5 maps), the stage's logits and softmax (and their gradients);
        plus parameters with gradients and Adam's moments, ``4 * P``; float32, a lower bound."""
        m, c, s, layer_n = config.maps, num_classes, config.stages, config.layers
        per_frame = input_dim + s * (m + layer_n * 5 * m + 4 * c)
        stage_params = layer_n * (3 * m * m + m + m * m + m) + m * c + c
        params = (input_dim * m + m) + (s - 1) * (c * m + m) + s * stage_params
        return 4 * (batch_size * window * per_frame + 4 * params)

    def train_window(self, config: TCNConfig, longest: int) -> int:
        return longest if config.window is None else min(config.window, longest)

    def eval_window(self, config: TCNConfig) -> tuple[int | None, bool]:
        return None, False  # whole videos at once (causal or not: the same outputs)

    def transfer_axes(self, config: TCNConfig) -> Mapping[str, tuple[int, Any]]:
        # stage 1 reads the input features; later stages read the previous stage's class
        # softmax, and every stage's head writes classes
        axes: dict[str, tuple[int, Any]] = {"stages.0.conv_in.weight": (1, "features")}
        for s in range(config.stages):
            if s > 0:
                axes[f"stages.{s}.conv_in.weight"] = (1, "classes")
            axes[f"stages.{s}.conv_out.weight"] = (0, "classes")
            axes[f"stages.{s}.conv_out.bias"] = (0, "classes")
        return axes


#: The registry entry (``trainables.temporal.MODELS["mstcn"]``).
MSTCN_KIND = TCNKind()
