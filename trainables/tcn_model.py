"""MS-TCN (Farha & Gall, "MS-TCN: Multi-Stage Temporal Convolutional Network for Action
Segmentation", CVPR 2019) as a plain PyTorch module, batch-first like the frame-wise LSTM.

The architecture is numerically the authors' (github.com/yabufarha/ms-tcn, ``model.py``):

- ``stages`` single-stage TCNs. Stage 1 (``stages.0``) reads the frame features; every later
  stage reads ``softmax(previous stage's logits) * mask`` (softmax over classes).
- A stage is ``conv_in`` (1x1, dim -> maps), ``layers`` dilated residual layers, ``conv_out``
  (1x1, maps -> classes); its logits are multiplied by the mask.
- Dilated residual layer ``i``: ``(x + dropout(conv_1x1(relu(conv_dilated(x))))) * mask`` with
  ``conv_dilated`` of kernel 3 and dilation ``2**i``. Non-causal, the dilated conv is padded
  by the dilation on both sides (the reference); causal, by twice the dilation on the left
  only, so frame t sees t, t-d and t-2d and never a later frame.
- Parameters start at PyTorch's default Conv1d initialisation, as in the reference.

The mask (``True`` = real frame) multiplies exactly where the reference multiplies: each
residual layer's output, each stage's logits, and the softmax handed to the next stage. It
does *not* multiply ``conv_in``'s output (the reference doesn't either), so in non-causal
mode a padded frame's features reach the last real frames through stage 1's first dilated
conv: padding values leak into real frames' outputs, as they do in the reference. Causal,
padding at the end cannot reach a real frame (the tests check both facts).

Causal streaming: each dilated layer's input history is carried in the returned state, so a
video fed in chunks (one frame at a time if need be) gives the logits of one full pass. The
state is a list with one entry per (stage, layer), index ``stage * layers + layer``, each the
layer's last ``2 * dilation`` inputs, shape ``(B, maps, 2 * dilation)`` (channels-first, the
conv's layout); a fresh stream starts from zeros, which is the full pass's zero padding.

``dual_dilated=True`` swaps stage 1 for MS-TCN++'s prediction generation stage (Li et al.,
TPAMI 2020; github.com/sj-li/MS-TCN2 ``Prediction_Generation``): layer ``i`` applies two
dilated convs, ``conv_dilated_1`` (dilation ``2**(layers-1-i)``) and ``conv_dilated_2``
(``2**i``), concatenates them, fuses with ``conv_fusion`` (1x1, 2*maps -> maps), then
``x + dropout(relu(.))``. MS-TCN2 uses no mask at all; here the mask multiplies as in MS-TCN,
so without a mask the stage is numerically MS-TCN2's. One ``layers`` serves every stage (the
MS-TCN++ paper's 11 generation / 10 refinement layers cannot be expressed).

Parameter names (weight transfer between label spaces relies on them): ``stages.{s}.conv_in``,
``stages.{s}.layers.{i}.conv_dilated`` / ``.conv_1x1`` (dual: ``.conv_dilated_1``,
``.conv_dilated_2``, ``.conv_fusion``), ``stages.{s}.conv_out``. Class-sized tensors: stage
0's ``conv_in`` columns are input features; every ``conv_out``'s rows and every later stage's
``conv_in`` columns are classes. Causal and non-causal models share the same parameters.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["IGNORE", "MSTCN", "State"]

#: label of frames without a label (padding): cross-entropy's default ignore_index and the
#: sampler's ``IGNORE`` (restated, not imported, so this module imports torch only)
IGNORE = -100

State = list[Tensor]


def _history(x: Tensor, buf: Tensor | None, context: int) -> tuple[Tensor, Tensor]:
    """``x`` (B, maps, T) with ``context`` frames of history in front, and the new history
    (the last ``context`` frames of that). No history yet means zeros: the zero padding a
    full causal pass would see before frame 0."""
    full = F.pad(x, (context, 0)) if buf is None else torch.cat([buf, x], dim=-1)
    return full, full[..., full.shape[-1] - context :]


class DilatedResidualLayer(nn.Module):
    """MS-TCN's layer: ``(x + dropout(conv_1x1(relu(conv_dilated(x))))) * mask``."""

    def __init__(self, dilation: int, maps: int, dropout: float, causal: bool):
        super().__init__()
        self.dilation = dilation
        self.causal = causal
        #: frames of left history a causal layer needs (kernel 3: t - 2d .. t)
        self.context = 2 * dilation
        self.conv_dilated = nn.Conv1d(
            maps, maps, 3, padding=0 if causal else dilation, dilation=dilation
        )
        self.conv_1x1 = nn.Conv1d(maps, maps, 1)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, x: Tensor, mask: Tensor | None, buf: Tensor | None
    ) -> tuple[Tensor, Tensor | None]:
        new_buf = None
        if self.causal:
            x_in, new_buf = _history(x, buf, self.context)
        else:
            x_in = x
        out = x + self.dropout(self.conv_1x1(F.relu(self.conv_dilated(x_in))))
        return (out if mask is None else out * mask), new_buf


class DualDilatedLayer(nn.Module):
    """MS-TCN++'s generation layer ``i`` of ``layers``:
    ``(x + dropout(relu(conv_fusion([conv_dilated_1(x), conv_dilated_2(x)])))) * mask``."""

    def __init__(self, i: int, layers: int, maps: int, dropout: float, causal: bool):
        super().__init__()
        self.causal = causal
        self.dilations = (2 ** (layers - 1 - i), 2**i)
        self.context = 2 * max(self.dilations)
        d1, d2 = self.dilations
        self.conv_dilated_1 = nn.Conv1d(maps, maps, 3, padding=0 if causal else d1, dilation=d1)
        self.conv_dilated_2 = nn.Conv1d(maps, maps, 3, padding=0 if causal else d2, dilation=d2)
        self.conv_fusion = nn.Conv1d(2 * maps, maps, 1)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, x: Tensor, mask: Tensor | None, buf: Tensor | None
    ) -> tuple[Tensor, Tensor | None]:
        new_buf = None
        if self.causal:
            # one history of the wider conv's length serves both: each conv reads its tail
            full, new_buf = _history(x, buf, self.context)
            d1, d2 = self.dilations
            a = self.conv_dilated_1(full[..., self.context - 2 * d1 :])
            b = self.conv_dilated_2(full[..., self.context - 2 * d2 :])
        else:
            a, b = self.conv_dilated_1(x), self.conv_dilated_2(x)
        out = x + self.dropout(F.relu(self.conv_fusion(torch.cat([a, b], dim=1))))
        return (out if mask is None else out * mask), new_buf


class _Stage(nn.Module):
    """One single-stage TCN: ``conv_in`` -> residual layers -> ``conv_out`` (channels-first)."""

    def __init__(self, dim: int, num_classes: int, layers: int, maps: int, dropout: float,
                 causal: bool, dual: bool):  # fmt: skip
        super().__init__()
        self.conv_in = nn.Conv1d(dim, maps, 1)
        made: list[nn.Module] = [
            DualDilatedLayer(i, layers, maps, dropout, causal) if dual
            else DilatedResidualLayer(2**i, maps, dropout, causal)
            for i in range(layers)
        ]  # fmt: skip
        self.layers = nn.ModuleList(made)
        self.conv_out = nn.Conv1d(maps, num_classes, 1)

    def features(self, x: Tensor, mask: Tensor | None, state: State | None) -> tuple[Tensor, State]:
        """The last residual layer's output (B, maps, T) and the layers' new histories."""
        out = self.conv_in(x)
        new: State = []
        for i, layer in enumerate(self.layers):
            out, buf = layer(out, mask, None if state is None else state[i])
            if buf is not None:
                new.append(buf)
        return out, new


class MSTCN(nn.Module):
    """Multi-stage TCN over (B, T, input_dim) inputs giving per-frame class logits.

    ``forward(x, state=None, mask=None) -> (last stage's logits (B, T, C), state)``; in
    causal mode passing the returned state back in continues the video.
    """

    def __init__(
        self,
        input_dim: int,
        num_classes: int,
        *,
        stages: int = 4,
        layers: int = 10,
        maps: int = 64,
        dropout: float = 0.5,
        causal: bool = False,
        smooth_weight: float = 0.15,
        tau: float = 4.0,
        dual_dilated: bool = False,
    ):
        super().__init__()
        for name, value in (("input_dim", input_dim), ("num_classes", num_classes),
                            ("stages", stages), ("layers", layers), ("maps", maps)):  # fmt: skip
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if smooth_weight < 0:
            raise ValueError(f"smooth_weight must be >= 0, got {smooth_weight}")
        if tau <= 0:
            raise ValueError(f"tau must be > 0, got {tau}")
        self.input_dim = input_dim
        self.num_classes = num_classes
        self.num_stages = stages
        self.num_layers = layers
        self.maps = maps
        self.causal = causal
        self.smooth_weight = smooth_weight
        self.tau = tau
        self.dual_dilated = dual_dilated
        self.stages = nn.ModuleList(
            # stage 1 reads the features, every later stage the previous stage's softmax
            _Stage(input_dim if s == 0 else num_classes, num_classes, layers, maps, dropout,
                   causal, dual=dual_dilated and s == 0)  # fmt: skip
            for s in range(stages)
        )

    # -- checks ---------------------------------------------------------------------------

    def _prepare(self, x: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """Batch-first input -> channels-first, and the mask as a (B, 1, T) multiplier."""
        if x.ndim != 3 or x.shape[-1] != self.input_dim:
            raise ValueError(f"x must be (B, T, {self.input_dim}), got {tuple(x.shape)}")
        if mask is None:
            return x.transpose(1, 2), None
        if mask.dtype != torch.bool or tuple(mask.shape) != tuple(x.shape[:2]):
            raise ValueError(
                f"mask must be bool (B, T) = {tuple(x.shape[:2])}, got {mask.dtype} "
                f"{tuple(mask.shape)}"
            )
        return x.transpose(1, 2), mask[:, None, :].to(x.dtype)

    def _check_state(self, state: State | None, expected: int) -> None:
        if state is None:
            return
        if not self.causal:
            raise ValueError("a non-causal MS-TCN sees the whole video at once: state must be None")
        if len(state) != expected:
            raise ValueError(f"state must hold {expected} layer histories, got {len(state)}")

    # -- the network ----------------------------------------------------------------------

    def _run(
        self, x_cf: Tensor, mask: Tensor | None, state: State | None
    ) -> tuple[list[Tensor], State]:
        """Every stage's logits (B, C, T), channels-first, and the new state."""
        outputs: list[Tensor] = []
        new: State = []
        n = self.num_layers
        inp = x_cf
        for s, stage in enumerate(self.stages):
            if s > 0:
                inp = F.softmax(outputs[-1], dim=1)
                if mask is not None:
                    inp = inp * mask
            f, bufs = stage.features(inp, mask, None if state is None else state[s * n :])
            logits = stage.conv_out(f)
            outputs.append(logits if mask is None else logits * mask)
            new.extend(bufs)
        return outputs, new

    def stage_logits(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """x (B, T, input_dim) batch-first; mask (B, T) bool (True = real frame) or None;
        returns (stages, B, T, num_classes). Causal, the video starts from no history."""
        x_cf, m = self._prepare(x, mask)
        outputs, _ = self._run(x_cf, m, None)
        return torch.stack(outputs).transpose(2, 3)

    def forward(
        self, x: Tensor, state: State | None = None, mask: Tensor | None = None
    ) -> tuple[Tensor, State | None]:
        """Last stage's logits (B, T, C). Non-causal: state must be None and None comes
        back. Causal: the returned state continues the video in the next call, so chunks
        (even single frames) give exactly the logits of one full pass."""
        self._check_state(state, self.num_stages * self.num_layers)
        x_cf, m = self._prepare(x, mask)
        outputs, new = self._run(x_cf, m, state)
        return outputs[-1].transpose(1, 2), (new if self.causal else None)

    def representation(
        self, x: Tensor, state: State | None = None, mask: Tensor | None = None
    ) -> tuple[Tensor, State | None]:
        """(B, T, maps): stage 1's last dilated layer output (what transferability
        estimators read). Causal, the state is stage 1's alone (``layers`` histories), not
        interchangeable with :meth:`forward`'s."""
        self._check_state(state, self.num_layers)
        x_cf, m = self._prepare(x, mask)
        f, new = self.stages[0].features(x_cf, m, state)
        return f.transpose(1, 2), (new if self.causal else None)

    @staticmethod
    def narrow_state(state: State, n: int) -> State:
        """The causal state of the first ``n`` videos of the batch."""
        return [buf[:n].contiguous() for buf in state]

    def loss(self, x: Tensor, y: Tensor) -> Tensor:
        """The reference's training objective, summed over stages: cross-entropy over frames
        with a label (``ignore_index=-100``) + ``smooth_weight`` × T-MSE, the mean over
        (B, C, T-1) of ``clamp((log_softmax(p_t) - log_softmax(p_{t-1}).detach())**2, 0,
        tau**2) * mask_t``. The mask ``y != -100`` is also the forward pass's mask, as the
        reference's padding mask is. A batch with no labelled frame gives NaN (as the
        reference); a single frame has no T-MSE term (the reference's would be a NaN mean).
        """
        if tuple(y.shape) != tuple(x.shape[:2]) or y.dtype.is_floating_point:
            raise ValueError(
                f"y must be integer labels (B, T) = {tuple(x.shape[:2])}, got {y.dtype} "
                f"{tuple(y.shape)}"
            )
        mask = y != IGNORE
        x_cf, m = self._prepare(x, mask)
        outputs, _ = self._run(x_cf, m, None)
        clamp = self.tau**2
        later = mask[:, None, 1:].to(x.dtype)  # T-MSE counts a pair where its later frame is real
        total = x.new_zeros(())
        for p in outputs:
            total = total + F.cross_entropy(p, y, ignore_index=IGNORE)
            if p.shape[-1] > 1 and self.smooth_weight:
                lp = F.log_softmax(p, dim=1)
                # the previous frame is a fixed target: only the later frame is pulled
                sq = (lp[:, :, 1:] - lp.detach()[:, :, :-1]) ** 2
                total = total + self.smooth_weight * (sq.clamp(0, clamp) * later).mean()
        return total
