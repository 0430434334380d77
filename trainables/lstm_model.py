"""The frame-wise LSTM of the paper (§4.2): a stacked LSTM over per-frame inputs with a linear
head giving class scores for every frame.

Two cells, both taking and returning the state as ``(h, c)`` with shape ``(depth, B, hidden)``
so streaming evaluation treats them alike:

- ``cudnn``: :class:`torch.nn.LSTM` (cuDNN on a GPU, oneDNN/MKL on a CPU), the fast default.
- ``peephole``: the paper's *vanilla* LSTM (Greff et al., "LSTM: A Search Space Odyssey",
  2017): input, forget and output gates with peephole connections from the cell state::

      i_t = σ(W_i x_t + R_i h_{t-1} + p_i ⊙ c_{t-1} + b_i)
      f_t = σ(W_f x_t + R_f h_{t-1} + p_f ⊙ c_{t-1} + b_f)
      z_t = tanh(W_z x_t + R_z h_{t-1} + b_z)
      c_t = f_t ⊙ c_{t-1} + i_t ⊙ z_t
      o_t = σ(W_o x_t + R_o h_{t-1} + p_o ⊙ c_t + b_o)      (peeks at the *new* cell state)
      h_t = o_t ⊙ tanh(c_t)

  A plain Python loop over time (correctness first; its throughput relative to ``cudnn`` is
  recorded in docs/benchmarks.md). Without peepholes (p = 0) it computes exactly what
  ``torch.nn.LSTM`` computes, which the tests check.

Both cells name their layer-0 input weight ``lstm.weight_ih_l0`` (rows: gates, columns: input
features) and the head ``head.weight`` / ``head.bias`` (rows: classes): weight transfer between
label spaces (``trainables.train_job``) moves exactly those columns and rows.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["CELLS", "FramewiseLSTM", "PeepholeLSTM", "State"]

CELLS = ("cudnn", "peephole")

State = tuple[Tensor, Tensor]


class PeepholeLSTM(nn.Module):
    """Stacked vanilla LSTM with peephole connections (Greff et al.), batch-first.

    Gate order in the weight matrices is torch's: input, forget, cell (z), output, so the
    non-peephole part of the parameters has the same layout as :class:`torch.nn.LSTM`'s.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1):
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        for layer in range(num_layers):
            d = input_size if layer == 0 else hidden_size
            self.register_parameter(
                f"weight_ih_l{layer}", nn.Parameter(torch.empty(4 * hidden_size, d))
            )
            self.register_parameter(
                f"weight_hh_l{layer}", nn.Parameter(torch.empty(4 * hidden_size, hidden_size))
            )
            self.register_parameter(f"bias_l{layer}", nn.Parameter(torch.empty(4 * hidden_size)))
            # peepholes for the input, forget and output gates, stacked (3, H)
            self.register_parameter(f"peephole_l{layer}", nn.Parameter(torch.empty(3, hidden_size)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # torch.nn.LSTM's initialisation: U(-1/sqrt(H), 1/sqrt(H)) for every parameter
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def forward(self, x: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        batch, _, _ = x.shape
        hidden = self.hidden_size
        if state is None:
            zeros = x.new_zeros(self.num_layers, batch, hidden)
            state = (zeros, zeros)
        h_all, c_all = state
        h_out, c_out = [], []
        for layer in range(self.num_layers):
            w_ih = getattr(self, f"weight_ih_l{layer}")
            w_hh = getattr(self, f"weight_hh_l{layer}")
            bias = getattr(self, f"bias_l{layer}")
            p_i, p_f, p_o = getattr(self, f"peephole_l{layer}")
            # the input projection of every time step at once: one big matmul, not T small ones
            xp = torch.addmm(bias, x.reshape(-1, x.shape[-1]), w_ih.t()).view(batch, -1, 4 * hidden)
            h, c = h_all[layer], c_all[layer]
            outputs = []
            # unbind, not xp[:, t]: the backward of T slices would materialise T full-size
            # zero gradients (quadratic in T); unbind's backward stacks them once
            for x_t in xp.unbind(1):
                gates = torch.addmm(x_t, h, w_hh.t())
                gi, gf, gz, go = gates.chunk(4, dim=1)
                i = torch.sigmoid(gi + p_i * c)
                f = torch.sigmoid(gf + p_f * c)
                c = f * c + i * torch.tanh(gz)
                o = torch.sigmoid(go + p_o * c)
                h = o * torch.tanh(c)
                outputs.append(h)
            x = torch.stack(outputs, dim=1)
            h_out.append(h)
            c_out.append(c)
        return x, (torch.stack(h_out), torch.stack(c_out))


class FramewiseLSTM(nn.Module):
    """``depth`` stacked LSTM layers over (B, T, input_dim) inputs and a linear head per frame.

    ``forward(x, state=None) -> (logits (B, T, num_classes), state)``; passing the returned
    state back in continues the sequence (streaming evaluation).
    """

    def __init__(
        self,
        input_dim: int,
        num_classes: int,
        hidden: int = 128,
        depth: int = 1,
        cell: str = "cudnn",
    ):
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"unknown cell {cell!r} (choose from {', '.join(CELLS)})")
        for name, value in (("input_dim", input_dim), ("num_classes", num_classes),
                            ("hidden", hidden), ("depth", depth)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        self.input_dim = input_dim
        self.num_classes = num_classes
        self.hidden = hidden
        self.depth = depth
        self.cell = cell
        if cell == "cudnn":
            self.lstm: nn.Module = nn.LSTM(input_dim, hidden, depth, batch_first=True)
        else:
            self.lstm = PeepholeLSTM(input_dim, hidden, depth)
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x: Tensor, state: State | None = None, mask: Tensor | None = None
                ) -> tuple[Tensor, State]:
        # mask is not needed: the LSTM is causal and padding comes only at the end
        out, state = self.lstm(x, state)
        return self.head(out), state

    def loss(self, x: Tensor, y: Tensor) -> Tensor:
        """Cross-entropy averaged over every real (unmasked, label != -100) frame of every
        subsequence, not just the last frame."""
        logits, _ = self(x)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1),
                               ignore_index=-100)

    def representation(self, x: Tensor, state: State | None = None,
                       mask: Tensor | None = None) -> tuple[Tensor, State]:
        """The last layer's hidden state per frame (B, T, hidden)."""
        return self.lstm(x, state)

    @staticmethod
    def narrow_state(state: State, n: int) -> State:
        """The state of the first ``n`` sequences of the batch."""
        return state[0][:, :n].contiguous(), state[1][:, :n].contiguous()
