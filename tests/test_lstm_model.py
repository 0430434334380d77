"""The frame-wise LSTM: both cells, state carrying, the peephole equations."""

from __future__ import annotations

import pytest
import torch

from trainables.lstm_model import FramewiseLSTM, PeepholeLSTM


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.mark.parametrize("cell", ["cudnn", "peephole"])
@pytest.mark.parametrize("depth", [1, 2])
def test_shapes_and_state(cell, depth):
    torch.manual_seed(0)
    m = FramewiseLSTM(5, 7, hidden=6, depth=depth, cell=cell)
    logits, (h, c) = m(torch.randn(3, 11, 5))
    assert logits.shape == (3, 11, 7)
    assert h.shape == c.shape == (depth, 3, 6)


@pytest.mark.parametrize("cell", ["cudnn", "peephole"])
def test_carrying_the_state_equals_one_pass(cell):
    """Streaming evaluation relies on this: chunks with the state carried == the whole."""
    torch.manual_seed(1)
    m = FramewiseLSTM(4, 3, hidden=5, depth=2, cell=cell)
    x = torch.randn(2, 20, 4)
    with torch.no_grad():
        whole, _ = m(x)
        a, state = m(x[:, :7])
        b, state = m(x[:, 7:15], state)
        c, _ = m(x[:, 15:], state)
    torch.testing.assert_close(torch.cat([a, b, c], 1), whole, rtol=1e-5, atol=1e-6)


def test_peephole_without_peepholes_is_torch_lstm():
    """With p = 0 the vanilla LSTM's equations are exactly torch.nn.LSTM's."""
    torch.manual_seed(2)
    ref = torch.nn.LSTM(4, 6, num_layers=2, batch_first=True)
    pl = PeepholeLSTM(4, 6, num_layers=2)
    with torch.no_grad():
        for layer in range(2):
            getattr(pl, f"weight_ih_l{layer}").copy_(getattr(ref, f"weight_ih_l{layer}"))
            getattr(pl, f"weight_hh_l{layer}").copy_(getattr(ref, f"weight_hh_l{layer}"))
            getattr(pl, f"bias_l{layer}").copy_(
                getattr(ref, f"bias_ih_l{layer}") + getattr(ref, f"bias_hh_l{layer}")
            )
            getattr(pl, f"peephole_l{layer}").zero_()
        x = torch.randn(3, 9, 4)
        h0, c0 = torch.randn(2, 3, 6), torch.randn(2, 3, 6)
        out_ref, (h_ref, c_ref) = ref(x, (h0, c0))
        out, (h, c) = pl(x, (h0, c0))
    torch.testing.assert_close(out, out_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(h, h_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(c, c_ref, rtol=1e-5, atol=1e-6)


def test_peephole_step_follows_greff_equations():
    """One step by hand: peepholes on c_{t-1} for i and f, on the new c_t for o."""
    torch.manual_seed(3)
    pl = PeepholeLSTM(3, 4)
    x, h0, c0 = torch.randn(2, 1, 3), torch.randn(1, 2, 4), torch.randn(1, 2, 4)
    with torch.no_grad():
        out, (h1, c1) = pl(x, (h0, c0))
        w, r, b = pl.weight_ih_l0, pl.weight_hh_l0, pl.bias_l0
        p_i, p_f, p_o = pl.peephole_l0
        g = x[:, 0] @ w.T + h0[0] @ r.T + b
        gi, gf, gz, go = g.chunk(4, 1)
        i = torch.sigmoid(gi + p_i * c0[0])
        f = torch.sigmoid(gf + p_f * c0[0])
        c = f * c0[0] + i * torch.tanh(gz)
        o = torch.sigmoid(go + p_o * c)
        h = o * torch.tanh(c)
    torch.testing.assert_close(c1[0], c)
    torch.testing.assert_close(h1[0], h)
    torch.testing.assert_close(out[:, 0], h)
    assert pl.peephole_l0.abs().sum() > 0  # the peepholes are real parameters, not zeros


def test_peephole_gradients_reach_every_parameter():
    torch.manual_seed(4)
    m = FramewiseLSTM(3, 2, hidden=4, depth=2, cell="peephole")
    logits, _ = m(torch.randn(2, 5, 3))
    logits.sum().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_both_cells_name_the_transferable_weights_alike():
    for cell in ("cudnn", "peephole"):
        names = dict(FramewiseLSTM(5, 7, hidden=6, cell=cell).named_parameters())
        assert names["lstm.weight_ih_l0"].shape == (24, 5)
        assert names["head.weight"].shape == (7, 6)
        assert names["head.bias"].shape == (7,)


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown cell 'gru'"):
        FramewiseLSTM(3, 3, cell="gru")
    with pytest.raises(ValueError, match="hidden must be >= 1"):
        FramewiseLSTM(3, 3, hidden=0)
