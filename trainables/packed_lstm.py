"""K frame-wise LSTMs trained as one computation (issue 13): many tiny trials, one GPU.

A transfer study is hundreds of small independent trainings. On a GPU one
:class:`~trainables.lstm_model.FramewiseLSTM` (hidden 128, batch 128) is bound by kernel
launches, not arithmetic; stacking K such models turns K small matmuls per time step into one
batched matmul. On a CPU it does not pay (docs/benchmarks.md, "Packed LSTM"): the CPU path
exists for tests and equivalence, and stays exact float32.

Rules:

- **Members** are K :class:`~trainables.train_job.Trainer` s with the same model shape:
  ``history``, ``batch_size``, ``depth``, ``hidden``, ``cell``, input and output dims, device.
  Everything else may differ: target data, split, arrangement, seed (init and batch stream),
  learning rate, ``clip``.
- **Parameters** are stacked ``(K, *shape)`` under the names of ``FramewiseLSTM``'s state dict
  (``lstm.weight_ih_l0``, ... ``head.bias``), with the same layout (gate order i, f, z, o;
  the ``cudnn`` cell keeps both of ``nn.LSTM``'s biases, the ``peephole`` cell its
  ``bias_l*`` and ``peephole_l*``), so member k's slice *is* an ordinary state dict.
- **Forward**: per layer, the input projection of the whole subsequence is one ``baddbmm``
  for all K members; then one ``baddbmm`` per time step for the recurrent part and the
  gate arithmetic of :mod:`trainables.lstm_model` (same equations for both cells); a fused
  head (one ``baddbmm``).
- **Loss** per member: cross-entropy averaged over the member's real frames
  (``ignore_index=IGNORE``), exactly the Trainer's. The backward pass runs on the sum of the
  members' losses; members share no parameter, so each gets its own gradient.
- **Optimiser**: :class:`PackedAdam`, torch.optim.Adam's single-tensor update per member
  (its own step count, moments and learning rate; default betas and eps, as the Trainer
  uses); a member's ``clip`` is torch's ``clip_grad_norm_`` over its own gradients.
- **Batches**: each member draws from its own Trainer's sampler and generator, so its batch
  stream is the one it would draw alone.
- **Failure**: a member whose loss or gradient is not finite at some step is *frozen* before
  that step's update (its weights, moments and iteration stay at the last finite step) and
  reported in :attr:`PackedTrainer.failures`; the other members are unaffected (their
  updates do not read its values). No host sync per step: the check runs on the device and
  is read once per :meth:`PackedTrainer.train` call, so within the call where it fails the
  member still draws (unused) batches: its generator runs ahead of its iteration, and its
  checkpoint is a record of the failure, not an exact resume point. From the next call on
  it draws nothing.
- **Unpacking**: :meth:`PackedTrainer.unpack` writes member k's weights, Adam state and
  iteration back into its Trainer, after which the Trainer's ``checkpoint()``,
  ``evaluate()`` and ``train_job.save_checkpoint`` work unchanged (ordinary single-model
  checkpoints: transfer, resume and the query API see no difference). While packed, the
  member Trainers' own ``model`` and ``optimizer`` are stale.
- **CUDA options** (off by default, refused on a CPU so that path stays exact float32):
  ``tf32`` (TensorFloat-32 matmuls, only inside :meth:`PackedTrainer.train`) and
  ``compile`` (``torch.compile`` of the per-step gate arithmetic: inductor fuses it into one
  generated kernel forward and backward). Neither's speed nor accuracy effect has been
  measured yet (no GPU was available when this was written).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .lstm_model import CELLS, FramewiseLSTM
from .sampler import IGNORE
from .train_job import Checkpoint, Trainer, save_checkpoint

__all__ = ["MemberFailure", "PackedAdam", "PackedLSTM", "PackedTrainer", "member_keys"]

PackedState = tuple[Tensor, Tensor]

#: the LSTM config fields that must agree between members (with the batch size: the shape)
SHAPE_FIELDS = ("history", "depth", "hidden", "cell")


def member_keys(cell: str, depth: int) -> list[str]:
    """The parameter names of a ``FramewiseLSTM`` with ``cell`` and ``depth``, in its
    ``parameters()`` order (which is its optimiser's parameter order)."""
    if cell not in CELLS:
        raise ValueError(f"unknown cell {cell!r} (choose from {', '.join(CELLS)})")
    per_layer = (
        ("weight_ih", "weight_hh", "bias_ih", "bias_hh") if cell == "cudnn"
        else ("weight_ih", "weight_hh", "bias", "peephole")
    )
    keys = [f"lstm.{p}_l{layer}" for layer in range(depth) for p in per_layer]
    return [*keys, "head.weight", "head.bias"]


def _attr(key: str) -> str:
    # parameter names may not contain dots; FramewiseLSTM's names have no underscores-only
    # ambiguity ("lstm.weight_ih_l0" -> "lstm__weight_ih_l0")
    return key.replace(".", "__")


# -- gate arithmetic (shared by the eager and the compiled path) ---------------------------


def _cudnn_cell(gates: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    """torch.nn.LSTM's cell: gates (K, B, 4H) already hold x W_ih^T + h W_hh^T + biases."""
    gi, gf, gz, go = gates.chunk(4, dim=-1)
    i = torch.sigmoid(gi)
    f = torch.sigmoid(gf)
    c = f * c + i * torch.tanh(gz)
    h = torch.sigmoid(go) * torch.tanh(c)
    return h, c


def _peephole_cell(
    gates: Tensor, c: Tensor, p_i: Tensor, p_f: Tensor, p_o: Tensor
) -> tuple[Tensor, Tensor]:
    """trainables.lstm_model.PeepholeLSTM's cell; peepholes (K, 1, H)."""
    gi, gf, gz, go = gates.chunk(4, dim=-1)
    i = torch.sigmoid(gi + p_i * c)
    f = torch.sigmoid(gf + p_f * c)
    c = f * c + i * torch.tanh(gz)
    o = torch.sigmoid(go + p_o * c)  # peeks at the *new* cell state
    h = o * torch.tanh(c)
    return h, c


class PackedLSTM(nn.Module):
    """K ``FramewiseLSTM`` s with one shape, parameters stacked ``(K, *shape)``.

    ``forward(x (K, B, T, input_dim), state=None) -> (logits (K, B, T, num_classes),
    (h, c))`` with ``h``, ``c`` of shape ``(K, depth, B, hidden)``; member k's slice equals
    ``FramewiseLSTM.forward`` of its weights on ``x[k]`` (up to float rounding).
    """

    def __init__(
        self,
        k: int,
        input_dim: int,
        num_classes: int,
        hidden: int = 128,
        depth: int = 1,
        cell: str = "cudnn",
        *,
        compile: bool = False,
    ):
        super().__init__()
        if k < 1:
            raise ValueError(f"a pack needs at least one member, got k={k}")
        # the template fixes names and shapes (and validates the arguments) exactly as the
        # single model does; on the meta device it allocates nothing
        with torch.device("meta"):
            template = FramewiseLSTM(input_dim, num_classes, hidden, depth, cell)
        shapes = {name: tuple(p.shape) for name, p in template.named_parameters()}
        self.keys = member_keys(cell, depth)
        if list(shapes) != self.keys:  # guards against a change of FramewiseLSTM's layout
            raise RuntimeError(f"FramewiseLSTM's parameters changed: {list(shapes)}")
        self.k, self.input_dim, self.num_classes = k, input_dim, num_classes
        self.hidden, self.depth, self.cell = hidden, depth, cell
        for key in self.keys:
            self.register_parameter(_attr(key), nn.Parameter(torch.zeros(k, *shapes[key])))
        self.compiled = compile
        cudnn, peephole = _cudnn_cell, _peephole_cell
        if compile:
            cudnn = torch.compile(cudnn, dynamic=False, fullgraph=True)
            peephole = torch.compile(peephole, dynamic=False, fullgraph=True)
        self._cudnn_cell: Callable[..., tuple[Tensor, Tensor]] = cudnn
        self._peephole_cell: Callable[..., tuple[Tensor, Tensor]] = peephole

    @classmethod
    def from_models(cls, models: Sequence[FramewiseLSTM], *, compile: bool = False
                    ) -> PackedLSTM:
        """Stack ``models`` (same shape, same device) into one pack."""
        if not models:
            raise ValueError("a pack needs at least one member")
        m0 = models[0]
        shape = (m0.input_dim, m0.num_classes, m0.hidden, m0.depth, m0.cell)
        for i, m in enumerate(models):
            other = (m.input_dim, m.num_classes, m.hidden, m.depth, m.cell)
            if other != shape:
                raise ValueError(
                    f"member {i} has model shape {other} (input, classes, hidden, depth, cell), "
                    f"member 0 {shape}: a pack needs one shape"
                )
        device = next(m0.parameters()).device
        pack = cls(len(models), *shape, compile=compile).to(device)
        with torch.no_grad():
            for key in pack.keys:
                pack.param(key).copy_(torch.stack([m.state_dict()[key] for m in models]))
        return pack

    def param(self, key: str) -> nn.Parameter:
        """The stacked ``(K, *shape)`` parameter of ``FramewiseLSTM`` parameter ``key``."""
        return getattr(self, _attr(key))

    def packed_parameters(self) -> list[nn.Parameter]:
        """The stacked parameters in ``FramewiseLSTM.parameters()`` order."""
        return [self.param(key) for key in self.keys]

    def member_state_dict(self, member: int) -> dict[str, Tensor]:
        """Member ``member``'s weights as an ordinary ``FramewiseLSTM`` state dict (CPU)."""
        return {key: self.param(key)[member].detach().cpu().clone() for key in self.keys}

    @torch.no_grad()
    def load_member(self, member: int, state: dict[str, Tensor]) -> None:
        """Set member ``member``'s weights from a ``FramewiseLSTM`` state dict."""
        missing = set(self.keys) ^ set(state)
        if missing:
            raise KeyError(f"state dict keys differ from the model's: {sorted(missing)}")
        for key in self.keys:
            self.param(key)[member].copy_(state[key])

    def forward(self, x: Tensor, state: PackedState | None = None
                ) -> tuple[Tensor, PackedState]:
        k, batch, steps, _ = x.shape
        hidden = self.hidden
        if k != self.k:
            raise ValueError(f"input has {k} members, the pack {self.k}")
        if state is None:
            zeros = x.new_zeros(k, self.depth, batch, hidden)
            state = (zeros, zeros)
        h_all, c_all = state
        # time-major inside: each step's slice is contiguous for the bmm and the gate kernels
        seq = x.transpose(1, 2).reshape(k, steps * batch, -1)
        h_out, c_out = [], []
        for layer in range(self.depth):
            w_ih = self.param(f"lstm.weight_ih_l{layer}")
            w_hh_t = self.param(f"lstm.weight_hh_l{layer}").transpose(1, 2)
            if self.cell == "cudnn":
                bias = self.param(f"lstm.bias_ih_l{layer}") + self.param(f"lstm.bias_hh_l{layer}")
            else:
                bias = self.param(f"lstm.bias_l{layer}")
                peep = self.param(f"lstm.peephole_l{layer}").unsqueeze(2)  # (K, 3, 1, H)
                p_i, p_f, p_o = peep.unbind(1)
            # the input projection of every time step and member at once
            xp = torch.baddbmm(bias.unsqueeze(1), seq, w_ih.transpose(1, 2))
            h, c = h_all[:, layer], c_all[:, layer]
            outputs = []
            # unbind, not slicing: the backward stacks the T gradients once (see lstm_model)
            for x_t in xp.view(k, steps, batch, -1).unbind(1):
                gates = torch.baddbmm(x_t, h, w_hh_t)
                if self.cell == "cudnn":
                    h, c = self._cudnn_cell(gates, c)
                else:
                    h, c = self._peephole_cell(gates, c, p_i, p_f, p_o)
                outputs.append(h)
            seq = torch.stack(outputs, dim=1).view(k, steps * batch, hidden)
            h_out.append(h)
            c_out.append(c)
        logits = torch.baddbmm(
            self.param("head.bias").unsqueeze(1), seq, self.param("head.weight").transpose(1, 2)
        )
        logits = logits.view(k, steps, batch, -1).transpose(1, 2)
        return logits, (torch.stack(h_out, dim=1), torch.stack(c_out, dim=1))


def member_losses(logits: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Per-member mean cross-entropy over real frames: ``(losses (K,), weighted (K, B, T))``.

    ``losses[k]`` is ``F.cross_entropy(logits[k], y[k], ignore_index=IGNORE)`` (the Trainer's
    loss; NaN when member k has no real frame). ``weighted`` is the per-frame loss times
    ``1 / real frames of k`` on member k's real frames and 0 elsewhere (a constant factor):
    ``weighted.sum()`` backpropagates every member's mean without a 0/0 from a member with
    no real frame (a frozen member's masked stand-in batch).
    """
    k = logits.shape[0]
    per_frame = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), y.reshape(-1), ignore_index=IGNORE, reduction="none"
    ).view(y.shape)
    real = (y != IGNORE).reshape(k, -1).sum(1)
    losses = per_frame.reshape(k, -1).sum(1) / real
    scale = 1.0 / real.clamp(min=1).to(per_frame.dtype)
    weights = (y != IGNORE).to(per_frame.dtype) * scale.view(k, *([1] * (y.dim() - 1)))
    return losses, per_frame * weights


class PackedAdam:
    """torch.optim.Adam (single-tensor path, default betas and eps, no weight decay), per
    member of stacked parameters: member k's step count, moments and learning rate are its
    own, and ``step(ok)`` updates only the members where ``ok`` (a (K,) bool tensor) holds.

    Scalars are formed as torch forms them (in float64, then rounded once to float32 where
    they meet the float32 tensors), so each member's update is torch's update.
    """

    def __init__(self, params: Sequence[Tensor], lrs: Sequence[float],
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.params = list(params)
        k = self.params[0].shape[0]
        if len(lrs) != k:
            raise ValueError(f"need one learning rate per member ({k}), got {len(lrs)}")
        dev = self.params[0].device
        self.lr = torch.tensor(list(lrs), dtype=torch.float64, device=dev)
        self.betas, self.eps = betas, eps
        self.step_count = torch.zeros(k, dtype=torch.float32, device=dev)
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]

    @torch.no_grad()
    def step(self, ok: Tensor) -> None:
        beta1, beta2 = self.betas
        self.step_count += ok.to(self.step_count.dtype)
        step = self.step_count.double()
        bc1 = 1 - beta1**step
        bc2_sqrt = (1 - beta2**step).sqrt()
        neg_step_size = (-(self.lr / bc1)).float()  # NaN/inf where step is 0: masked below
        bc2_sqrt = bc2_sqrt.float()
        for p, m, v in zip(self.params, self.exp_avg, self.exp_avg_sq, strict=True):
            if p.grad is None:
                continue
            shape = (-1, *([1] * (p.dim() - 1)))
            keep = ok.view(shape)
            g = torch.where(keep, p.grad, 0.0)  # a failed member's NaN never enters the math
            new_m = m.lerp(g, 1 - beta1)
            new_v = v.mul(beta2).addcmul_(g, g, value=1 - beta2)
            denom = (new_v.sqrt() / bc2_sqrt.view(shape)).add_(self.eps)
            # torch's addcdiv computes self + value * t1 / t2, left to right
            new_p = p + neg_step_size.view(shape) * new_m / denom
            m.copy_(torch.where(keep, new_m, m))
            v.copy_(torch.where(keep, new_v, v))
            p.copy_(torch.where(keep, new_p, p))

    def load_member(self, member: int, state: dict[str, Any], lr: float) -> None:
        """Member ``member``'s state from ``torch.optim.Adam.state_dict()`` of its Trainer."""
        self.lr[member] = lr
        per_param = state["state"]
        if not per_param:
            self.step_count[member] = 0
            for m, v in zip(self.exp_avg, self.exp_avg_sq, strict=True):
                m[member].zero_()
                v[member].zero_()
            return
        steps = {float(s["step"]) for s in per_param.values()}
        if len(steps) != 1 or len(per_param) != len(self.params):
            raise ValueError("the member's Adam state is partial (not every parameter stepped)")
        self.step_count[member] = steps.pop()
        for i, (m, v) in enumerate(zip(self.exp_avg, self.exp_avg_sq, strict=True)):
            m[member].copy_(per_param[i]["exp_avg"])
            v[member].copy_(per_param[i]["exp_avg_sq"])

    def member_state(self, member: int) -> dict[int, dict[str, Tensor]]:
        """Member ``member``'s per-parameter state in ``torch.optim.Adam``'s format."""
        if float(self.step_count[member]) == 0:
            return {}
        step = self.step_count[member].detach().cpu().clone()
        return {
            i: {"step": step.clone(), "exp_avg": m[member].detach().clone(),
                "exp_avg_sq": v[member].detach().clone()}
            for i, (m, v) in enumerate(zip(self.exp_avg, self.exp_avg_sq, strict=True))
        }


@dataclass
class PackedStats:
    """What :meth:`PackedTrainer.train` did, per member: ``iterations`` (finite steps taken
    in this call), ``loss`` (their mean; None when none), and for the whole pack ``frames``
    (batch × history × iterations summed over members) and ``seconds``."""

    iterations: list[int]
    loss: list[float | None]
    frames: int
    seconds: float

    @property
    def frames_per_s(self) -> float:
        """Aggregate training frames per second of the pack."""
        return self.frames / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class MemberFailure:
    """Member ``member`` produced a non-finite loss or gradient at iteration ``iteration``
    (its count of finite steps is ``iteration - 1``)."""

    member: int
    iteration: int
    reason: str


@contextmanager
def _tf32(enabled: bool):
    if not enabled:
        yield
        return
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


class PackedTrainer:
    """Steps K member :class:`~trainables.train_job.Trainer` s together (see the module
    docstring for the rules). ``train(n)`` runs n optimiser steps of every live member;
    ``unpack(k)`` hands member k back as its ordinary Trainer."""

    def __init__(self, trainers: Sequence[Trainer], *, tf32: bool = False,
                 compile: bool = False):
        if not trainers:
            raise ValueError("a pack needs at least one member")
        self.trainers = list(trainers)
        t0 = self.trainers[0]
        self.device = torch.device(t0.device)
        for i, t in enumerate(self.trainers):
            if not t.kind.packable or t.config.model.kind != "lstm":
                raise ValueError(f"member {i} is a {t.config.model.kind} model: only the LSTM "
                                 "packs (trainables.temporal.MODELS[...].packable)")
            diffs = [f"{f} {getattr(t.config.model, f)!r} vs {getattr(t0.config.model, f)!r}"
                     for f in SHAPE_FIELDS
                     if getattr(t.config.model, f) != getattr(t0.config.model, f)]
            if t.config.batch_size != t0.config.batch_size:
                diffs.append(f"batch_size {t.config.batch_size} vs {t0.config.batch_size}")
            diffs += [f"{f} {getattr(t, f)} vs {getattr(t0, f)}"
                      for f in ("input_dim", "num_classes") if getattr(t, f) != getattr(t0, f)]
            if torch.device(t.device) != self.device:
                diffs.append(f"device {t.device} vs {t0.device}")
            if diffs:
                raise ValueError(f"member {i} does not fit member 0's pack: " + "; ".join(diffs))
            group = t.optimizer.param_groups[0]
            if (tuple(group["betas"]), group["eps"], group["weight_decay"], group["amsgrad"]) != (
                (0.9, 0.999), 1e-8, 0, False
            ):
                raise ValueError(f"member {i}'s Adam is not the Trainer's default")
        if (tf32 or compile) and self.device.type != "cuda":
            raise ValueError("tf32 and compile are CUDA options: the CPU path is exact float32")
        self.tf32 = tf32
        self.model = PackedLSTM.from_models([t.model for t in self.trainers], compile=compile)
        lrs = [t.optimizer.param_groups[0]["lr"] for t in self.trainers]
        self.optimizer = PackedAdam(self.model.packed_parameters(), lrs)
        for i, t in enumerate(self.trainers):
            self.optimizer.load_member(i, t.optimizer.state_dict(), lrs[i])
        k = len(self.trainers)
        self.clip = torch.tensor(
            [float("inf") if t.config.clip is None else t.config.clip for t in self.trainers],
            device=self.device,
        )
        self.clipping = any(t.config.clip is not None for t in self.trainers)
        self.iterations = torch.tensor([t.iteration for t in self.trainers], device=self.device)
        self.alive = torch.ones(k, dtype=torch.bool, device=self.device)
        self.failures: dict[int, MemberFailure] = {}
        # one frozen member's stand-in batch: zeros, every frame masked
        self._idle: tuple[Tensor, Tensor] | None = None

    @property
    def k(self) -> int:
        return len(self.trainers)

    @property
    def batch_size(self) -> int:
        return self.trainers[0].config.batch_size

    @property
    def window(self) -> int:
        """Frames per sample (the members' LSTM ``history``)."""
        return self.trainers[0].window

    def sample(self) -> tuple[Tensor, Tensor]:
        """One batch per member from its own sampler, stacked: x (K, B, T, D), y (K, B, T).
        Members known to have failed draw nothing (a masked stand-in batch)."""
        xs, ys = [], []
        for i, t in enumerate(self.trainers):
            if i in self.failures:
                if self._idle is None:
                    b, h = self.batch_size, self.window
                    self._idle = (
                        torch.zeros(b, h, self.model.input_dim, device=self.device),
                        torch.full((b, h), IGNORE, dtype=torch.int64, device=self.device),
                    )
                x, y = self._idle
            else:
                batch = t.sampler.sample()
                x, y = batch.x, batch.y
            xs.append(x)
            ys.append(y)
        return torch.stack(xs), torch.stack(ys)

    def loss_and_grad(self, x: Tensor, y: Tensor) -> Tensor:
        """Forward and backward on one stacked batch; the per-member losses (K,)."""
        for p in self.model.packed_parameters():
            p.grad = None
        logits, _ = self.model(x)
        losses, weighted = member_losses(logits, y)
        weighted.sum().backward()
        return losses.detach()

    def _grad_norms(self) -> Tensor:
        """Per-member gradient norm over all parameters (torch's clip_grad_norm_ norm)."""
        norms = [torch.linalg.vector_norm(p.grad.flatten(1), dim=1)
                 for p in self.model.packed_parameters()]
        return torch.linalg.vector_norm(torch.stack(norms), dim=0)

    def step(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """One optimiser step of every live member on a stacked batch; returns the losses
        and the mask of members that took the step (both (K,), on the device)."""
        losses = self.loss_and_grad(x, y)
        norms = self._grad_norms()
        ok = self.alive & torch.isfinite(losses) & torch.isfinite(norms)
        if self.clipping:
            coef = (self.clip / (norms + 1e-6)).clamp(max=1.0)
            coef = torch.where(torch.isfinite(self.clip), coef, 1.0)
            for p in self.model.packed_parameters():
                p.grad.mul_(coef.view(-1, *([1] * (p.dim() - 1))))
        self.optimizer.step(ok)
        return losses, ok

    def train(self, iterations: int) -> PackedStats:
        """``iterations`` steps of every live member; one host sync at the end."""
        k = self.k
        total = torch.zeros(k, device=self.device)
        taken = torch.zeros(k, dtype=torch.int64, device=self.device)
        failed_at = torch.zeros(k, dtype=torch.int64, device=self.device)
        nonfinite_loss = torch.zeros(k, dtype=torch.bool, device=self.device)
        self.model.train()
        start = time.perf_counter()
        with _tf32(self.tf32):
            for _ in range(iterations):
                x, y = self.sample()
                was_alive = self.alive
                losses, ok = self.step(x, y)
                newly = was_alive & ~ok
                failed_at = torch.where(newly, self.iterations + 1, failed_at)
                nonfinite_loss |= newly & ~torch.isfinite(losses)
                self.alive = was_alive & ok
                self.iterations = self.iterations + ok.long()
                total += torch.where(ok, losses, 0.0)
                taken += ok.long()
        # the one host sync
        total_c, taken_c = total.cpu(), taken.cpu()
        failed_c, loss_bad = failed_at.cpu(), nonfinite_loss.cpu()
        seconds = time.perf_counter() - start
        for i in range(k):
            if int(failed_c[i]) > 0 and i not in self.failures:
                why = "non-finite loss" if bool(loss_bad[i]) else "non-finite gradient"
                self.failures[i] = MemberFailure(i, int(failed_c[i]), why)
        steps = [int(n) for n in taken_c]
        loss = [float(total_c[i]) / steps[i] if steps[i] else None for i in range(k)]
        return PackedStats(steps, loss, sum(steps) * self.batch_size * self.window, seconds)

    def freeze(self, failure: MemberFailure) -> None:
        """Mark member ``failure.member`` failed without a step (a pack restored from a
        checkpoint that recorded the failure): it takes no further step and draws no
        batch, as if it had failed in this pack."""
        self.alive[failure.member] = False
        self.failures[failure.member] = failure

    # -- members back out ----------------------------------------------------------------
    def unpack(self, member: int) -> Trainer:
        """Write member ``member``'s weights, Adam state and iteration into its Trainer and
        return it (its sampler generator is already its own)."""
        t = self.trainers[member]
        t.model.load_state_dict(self.model.member_state_dict(member))
        opt_state = t.optimizer.state_dict()
        opt_state["state"] = self.optimizer.member_state(member)
        t.optimizer.load_state_dict(opt_state)
        t.iteration = int(self.iterations[member])
        return t

    def checkpoint(self, member: int, **extra: Any) -> Checkpoint:
        """Member ``member``'s ordinary single-model checkpoint (``Trainer.checkpoint``)."""
        return self.unpack(member).checkpoint(**extra)

    def save(self, member: int, path: str | Path, **extra: Any) -> Path:
        return save_checkpoint(path, self.checkpoint(member, **extra))
