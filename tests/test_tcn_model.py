"""MS-TCN: the reference architecture and objective, causal streaming, masks, determinism.

The reference (github.com/yabufarha/ms-tcn ``model.py``, and MS-TCN++'s sj-li/MS-TCN2) is
restated below in a few lines, channels-first with a (B, C, T) float mask as it is written
there, and our module must compute exactly what it computes once the weights are copied.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from trainables.tcn_model import IGNORE, MSTCN


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


# -- the reference, restated --------------------------------------------------------------


class _RefLayer(nn.Module):
    def __init__(self, d: int, m: int):
        super().__init__()
        self.conv_dilated = nn.Conv1d(m, m, 3, padding=d, dilation=d)
        self.conv_1x1 = nn.Conv1d(m, m, 1)
        self.dropout = nn.Dropout()

    def forward(self, x, mask=None):
        out = x + self.dropout(self.conv_1x1(F.relu(self.conv_dilated(x))))
        return out if mask is None else out * mask[:, 0:1, :]


class _RefStage(nn.Module):
    def __init__(self, layers: int, m: int, dim: int, c: int):
        super().__init__()
        self.conv_1x1 = nn.Conv1d(dim, m, 1)
        self.layers = nn.ModuleList(_RefLayer(2**i, m) for i in range(layers))
        self.conv_out = nn.Conv1d(m, c, 1)

    def forward(self, x, mask=None):
        out = self.conv_1x1(x)
        for layer in self.layers:
            out = layer(out, mask)
        out = self.conv_out(out)
        return out if mask is None else out * mask[:, 0:1, :]


class _RefMSTCN(nn.Module):
    """MS-TCN's MultiStageModel: ``stage1`` and ``stages`` (the refinements)."""

    def __init__(self, stages: int, layers: int, m: int, dim: int, c: int):
        super().__init__()
        self.stage1 = _RefStage(layers, m, dim, c)
        self.stages = nn.ModuleList(_RefStage(layers, m, c, c) for _ in range(stages - 1))

    def forward(self, x, mask):
        outs = [self.stage1(x, mask)]
        for s in self.stages:
            outs.append(s(F.softmax(outs[-1], dim=1) * mask[:, 0:1, :], mask))
        return torch.stack(outs)


class _RefPG(nn.Module):
    """MS-TCN++'s Prediction_Generation (no mask anywhere)."""

    def __init__(self, layers: int, m: int, dim: int, c: int):
        super().__init__()
        self.layers = layers
        self.conv_1x1_in = nn.Conv1d(dim, m, 1)
        far = [2 ** (layers - 1 - i) for i in range(layers)]
        self.conv_dilated_1 = nn.ModuleList(nn.Conv1d(m, m, 3, padding=d, dilation=d) for d in far)
        self.conv_dilated_2 = nn.ModuleList(
            nn.Conv1d(m, m, 3, padding=2**i, dilation=2**i) for i in range(layers)
        )
        self.conv_fusion = nn.ModuleList(nn.Conv1d(2 * m, m, 1) for _ in range(layers))
        self.dropout = nn.Dropout()
        self.conv_out = nn.Conv1d(m, c, 1)

    def forward(self, x):
        f = self.conv_1x1_in(x)
        for i in range(self.layers):
            both = torch.cat([self.conv_dilated_1[i](f), self.conv_dilated_2[i](f)], 1)
            f = f + self.dropout(F.relu(self.conv_fusion[i](both)))
        return self.conv_out(f)


class _RefMSTCN2(nn.Module):
    def __init__(self, layers: int, refinements: int, m: int, dim: int, c: int):
        super().__init__()
        self.PG = _RefPG(layers, m, dim, c)
        self.Rs = nn.ModuleList(_RefStage(layers, m, c, c) for _ in range(refinements))

    def forward(self, x):
        outs = [self.PG(x)]
        for r in self.Rs:
            outs.append(r(F.softmax(outs[-1], dim=1)))
        return torch.stack(outs)


def _ref_loss(preds, y, mask, smooth=0.15, clamp=16.0, detach=True):
    """The reference Trainer's loss on (stages, B, C, T) predictions and a (B, C, T) mask."""
    c = preds.shape[2]
    total = 0
    for p in preds:
        total = total + F.cross_entropy(
            p.transpose(2, 1).contiguous().view(-1, c), y.view(-1), ignore_index=-100
        )
        prev = p.detach() if detach else p
        sq = F.mse_loss(F.log_softmax(p[:, :, 1:], 1), F.log_softmax(prev[:, :, :-1], 1),
                        reduction="none")  # fmt: skip
        total = total + smooth * torch.mean(torch.clamp(sq, 0, clamp) * mask[:, :, 1:])
    return total


def _ours_name(ref_name: str) -> str:
    """Parameter name in MSTCN of a reference (MS-TCN or MS-TCN2) parameter."""
    head, rest = ref_name.split(".", 1)
    if head in ("stage1", "PG"):
        stage = 0
    else:  # stages.k / Rs.k: the refinements, after stage 1
        k, rest = rest.split(".", 1)
        stage = int(k) + 1
    for old, new in (("conv_1x1_in.", "conv_in."), ("conv_1x1.", "conv_in.")):
        if rest.startswith(old):
            rest = new + rest[len(old) :]
    for conv in ("conv_dilated_1", "conv_dilated_2", "conv_fusion"):  # MS-TCN2's per-layer lists
        if rest.startswith(conv + "."):
            _, i, tail = rest.split(".", 2)
            rest = f"layers.{i}.{conv}.{tail}"
    return f"stages.{stage}.{rest}"


def _copy_from(ours: MSTCN, ref: nn.Module) -> None:
    theirs = {_ours_name(k): v for k, v in ref.state_dict().items()}
    assert set(theirs) == set(ours.state_dict())  # same tensors, no more, no fewer
    ours.load_state_dict(theirs)


def _padded_batch(dim: int, c: int, lengths=(37, 25), seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    t = max(lengths)
    x = torch.randn(len(lengths), t, dim, generator=g)
    y = torch.randint(0, c, (len(lengths), t), generator=g)
    mask = torch.arange(t)[None, :] < torch.tensor(lengths)[:, None]
    y[~mask] = IGNORE
    return x, y, mask


# -- architecture ----------------------------------------------------------------------------


def _breakfast_count_by_hand() -> int:
    """The paper's Breakfast model: 4 stages x 10 layers x 64 maps, I3D 2048-d, 48 classes."""
    m, layers, dim, c = 64, 10, 2048, 48
    layer = (m * m * 3 + m) + (m * m + m)  # dilated k=3 conv + 1x1 conv, with biases
    stage = lambda d: (d * m + m) + layers * layer + (m * c + c)  # noqa: E731
    return stage(dim) + 3 * stage(c)


def test_breakfast_parameter_count_is_the_references():
    count = sum(p.numel() for p in MSTCN(2048, 48).parameters())
    ref = sum(p.numel() for p in _RefMSTCN(4, 10, 64, 2048, 48).parameters())
    assert count == ref == _breakfast_count_by_hand() == 813_504


def test_parameter_layout():
    names = [n for n, _ in MSTCN(5, 3, stages=2, layers=2, maps=4).named_parameters()]
    expected = []
    for s in range(2):
        expected += [f"stages.{s}.conv_in.weight", f"stages.{s}.conv_in.bias"]
        for i in range(2):
            for conv in ("conv_dilated", "conv_1x1"):
                expected += [f"stages.{s}.layers.{i}.{conv}.{w}" for w in ("weight", "bias")]
        expected += [f"stages.{s}.conv_out.weight", f"stages.{s}.conv_out.bias"]
    assert names == expected
    m = MSTCN(5, 3, stages=2, layers=3, maps=4)
    assert [layer.conv_dilated.dilation[0] for layer in m.stages[1].layers] == [1, 2, 4]
    assert m.stages[0].conv_in.weight.shape == (4, 5, 1)
    assert m.stages[1].conv_in.weight.shape == (4, 3, 1)  # later stages read class scores
    assert m.stages[1].conv_out.weight.shape == (3, 4, 1)


def test_causal_and_non_causal_share_parameters():
    a = MSTCN(5, 3, stages=2, layers=3, maps=4)
    b = MSTCN(5, 3, stages=2, layers=3, maps=4, causal=True)
    b.load_state_dict(a.state_dict())  # strict: same names and shapes


@pytest.mark.parametrize("train", [False, True])
def test_equals_the_reference_with_a_padded_batch(train):
    """Same weights -> the reference's stage outputs, objective and gradients; in train mode
    the dropout masks come from the same generator in the same order, so they agree too."""
    dim, c = 6, 5
    torch.manual_seed(0)
    ref = _RefMSTCN(3, 4, 8, dim, c)
    ours = MSTCN(dim, c, stages=3, layers=4, maps=8)
    _copy_from(ours, ref)
    ref.train(train)
    ours.train(train)
    x, y, mask = _padded_batch(dim, c)
    mask3 = mask[:, None, :].float().expand(-1, c, -1)  # the reference's (B, C, T) mask

    torch.manual_seed(1)
    want = ref(x.transpose(1, 2), mask3)
    torch.manual_seed(1)
    got = ours.stage_logits(x, mask)
    torch.testing.assert_close(got, want.transpose(2, 3), rtol=1e-5, atol=1e-6)

    torch.manual_seed(2)
    ref_loss = _ref_loss(ref(x.transpose(1, 2), mask3), y, mask3)
    ref_loss.backward()
    torch.manual_seed(2)
    loss = ours.loss(x, y)
    loss.backward()
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
    grads = {_ours_name(k): p.grad for k, p in ref.named_parameters()}
    for name, p in ours.named_parameters():
        torch.testing.assert_close(p.grad, grads[name], rtol=1e-4, atol=1e-6, msg=name)


def test_previous_frame_is_detached_in_the_smoothing_loss():
    """The gradient is the reference's with the detach; without it, it would differ."""
    dim, c = 4, 3
    torch.manual_seed(3)
    ref = _RefMSTCN(1, 2, 4, dim, c)
    ours = MSTCN(dim, c, stages=1, layers=2, maps=4, dropout=0.0, smooth_weight=1.0).eval()
    _copy_from(ours, ref)
    x, y, mask = _padded_batch(dim, c, lengths=(9, 9))
    mask3 = mask[:, None, :].float()
    w = ours.stages[0].conv_out.weight
    ref_w = ref.stage1.conv_out.weight
    (grad,) = torch.autograd.grad(ours.loss(x, y), w)
    preds = ref.eval()(x.transpose(1, 2), mask3)
    (want,) = torch.autograd.grad(_ref_loss(preds, y, mask3, smooth=1.0), ref_w)
    preds = ref(x.transpose(1, 2), mask3)
    (undetached,) = torch.autograd.grad(_ref_loss(preds, y, mask3, smooth=1.0, detach=False), ref_w)
    torch.testing.assert_close(grad, want, rtol=1e-5, atol=1e-7)
    assert not torch.allclose(grad, undetached, rtol=1e-3, atol=1e-5)


# -- the objective by hand ------------------------------------------------------------------


def _identity_tcn(c: int, stages: int, **kw) -> MSTCN:
    """An MSTCN whose stage 1 logits are its input: conv_in and conv_out are identities (maps
    = input_dim = classes, no bias), each residual branch is zero. A later stage's logits
    are then the masked softmax of the previous stage's."""
    m = MSTCN(c, c, stages=stages, layers=2, maps=c, **kw)
    with torch.no_grad():
        for p in m.parameters():
            p.zero_()
        eye = torch.eye(c)[:, :, None]
        for stage in m.stages:
            stage.conv_in.weight.copy_(eye)
            stage.conv_out.weight.copy_(eye)
    return m


def _np_log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def test_stage_losses_and_tmse_by_hand():
    """T = 3 frames, C = 2 classes, one sequence, the last frame unlabelled (padding).

    Stage 1's logits are the input (masked: frame 3 -> 0); stage 2's are
    softmax(stage 1) * mask. Per stage: cross-entropy over the 2 labelled frames, plus
    0.15 x the mean over C x (T-1) = 4 entries of min((Δ log-softmax)², 16), the pair
    (2, 3) masked out because frame 3 is padding. Frames 1 -> 2 jump by 10 logits, so the
    stage 1 squared differences (~100) are clamped at tau² = 16.
    """
    z = np.array([[10.0, 0.0], [0.0, 10.0], [3.0, -1.0]], dtype=np.float32)  # (T, C)
    y = np.array([0, 1, IGNORE])
    mask = np.array([1.0, 1.0, 0.0], dtype=np.float32)
    model = _identity_tcn(2, stages=2).eval()

    expected, parts = 0.0, []
    logits = z * mask[:, None]
    by_hand = [logits]
    for _ in range(2):
        ls = _np_log_softmax(logits)
        ce = -np.mean([ls[t, y[t]] for t in range(3) if y[t] != IGNORE])
        sq = (ls[1:] - ls[:-1]) ** 2  # (T-1, C)
        tmse = np.mean(np.minimum(sq, 16.0) * mask[1:, None])
        parts.append((ce, tmse, np.mean(sq * mask[1:, None])))
        expected += ce + 0.15 * tmse
        p = np.exp(ls)
        logits = p * mask[:, None]  # the next stage's input, and (identity) its logits
        by_hand.append(logits)
    assert parts[0][1] == pytest.approx(8.0)  # both entries of pair (1, 2) clamped: 2·16/4
    assert parts[0][2] > 40  # unclamped, it would be ~50: the clamp is what this checks
    assert parts[1][1] < 16 / 4  # stage 2's differences are small: no clamping there

    got = model.loss(torch.from_numpy(z)[None], torch.from_numpy(y)[None])
    assert got.item() == pytest.approx(expected, rel=1e-5)
    # each stage's logits as computed by hand
    with torch.no_grad():
        got_logits = model.stage_logits(torch.from_numpy(z)[None], torch.from_numpy(mask > 0)[None])
    for s in range(2):
        np.testing.assert_allclose(got_logits[s, 0].numpy(), by_hand[s], rtol=1e-6, atol=1e-7)


def test_smooth_weight_and_tau_are_used():
    z = torch.tensor([[[10.0, 0.0], [0.0, 10.0], [3.0, -1.0]]])
    y = torch.tensor([[0, 1, 1]])
    ce_only = _identity_tcn(2, stages=1, smooth_weight=0.0).loss(z, y)
    assert ce_only.item() == pytest.approx(F.cross_entropy(z[0], y[0]).item(), rel=1e-6)
    ls = F.log_softmax(z[0], -1)
    sq = (ls[1:] - ls[:-1]) ** 2
    for tau in (1.0, 4.0, 20.0):
        got = _identity_tcn(2, stages=1, smooth_weight=0.5, tau=tau).loss(z, y)
        want = ce_only + 0.5 * sq.clamp(max=tau**2).mean()
        assert got.item() == pytest.approx(want.item(), rel=1e-6)


def test_a_single_frame_has_no_smoothing_term():
    z = torch.tensor([[[1.0, -1.0]]])
    y = torch.tensor([[1]])
    got = _identity_tcn(2, stages=1).loss(z, y)
    assert got.item() == pytest.approx(F.cross_entropy(z[0], y[0]).item(), rel=1e-6)


# -- causal streaming -----------------------------------------------------------------------


@pytest.mark.parametrize("dual", [False, True])
def test_causal_output_does_not_see_the_future(dual):
    torch.manual_seed(4)
    m = MSTCN(5, 4, stages=3, layers=5, maps=8, causal=True, dual_dilated=dual).eval()
    x = torch.randn(2, 60, 5)
    with torch.no_grad():
        base = m.stage_logits(x)
        for t in (0, 17, 58):
            x2 = x.clone()
            x2[:, t + 1 :] = torch.randn_like(x2[:, t + 1 :]) * 5
            out = m.stage_logits(x2)
            torch.testing.assert_close(out[:, :, : t + 1], base[:, :, : t + 1], rtol=0, atol=1e-6)
            assert not torch.allclose(out[:, :, t + 1 :], base[:, :, t + 1 :])


def test_non_causal_output_sees_the_future():
    """The counterpart: the same change reaches earlier frames without causal padding."""
    torch.manual_seed(4)
    m = MSTCN(5, 4, stages=3, layers=5, maps=8).eval()
    x = torch.randn(1, 60, 5)
    x2 = x.clone()
    x2[:, 31:] += 1.0
    with torch.no_grad():
        assert not torch.allclose(m(x)[0][:, :31], m(x2)[0][:, :31])


@pytest.mark.parametrize(
    ("layers", "dual", "with_mask"), [(6, False, False), (6, False, True), (10, False, False),
                                     (5, True, False)]  # fmt: skip
)
def test_streaming_equals_one_pass(layers, dual, with_mask):
    """Chunks of 1 and 7 frames and the whole video, with the state carried, give the full
    pass's logits (the video is longer than the deepest layer's history of 2·2^(L-1))."""
    torch.manual_seed(5)
    m = MSTCN(6, 4, stages=3, layers=layers, maps=8, causal=True, dual_dilated=dual).eval()
    t = 2 ** layers + 23 if layers < 10 else 90
    x = torch.randn(2, t, 6)
    mask = torch.arange(t)[None, :] < torch.tensor([t, t - 11])[:, None] if with_mask else None
    with torch.no_grad():
        whole, _ = m(x, mask=mask)
        rep_whole, _ = m.representation(x, mask=mask)
        for chunk in (1, 7, t):
            state, rep_state, outs, reps = None, None, [], []
            for a in range(0, t, chunk):
                sl = slice(a, a + chunk)
                part_mask = None if mask is None else mask[:, sl]
                out, state = m(x[:, sl], state, mask=part_mask)
                rep, rep_state = m.representation(x[:, sl], rep_state, mask=part_mask)
                outs.append(out)
                reps.append(rep)
            assert state is not None and len(state) == 3 * layers
            torch.testing.assert_close(torch.cat(outs, 1), whole, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(torch.cat(reps, 1), rep_whole, rtol=1e-5, atol=1e-5)


def test_state_shapes():
    m = MSTCN(3, 2, stages=2, layers=3, maps=5, causal=True)
    _, state = m(torch.randn(4, 2, 3))
    assert [tuple(s.shape) for s in state] == [(4, 5, 2), (4, 5, 4), (4, 5, 8)] * 2
    assert m.representation(torch.randn(4, 2, 3))[1] is not None


# -- masks ----------------------------------------------------------------------------------


@pytest.mark.parametrize("causal", [False, True])
def test_padded_frames_give_zero_logits_in_every_stage(causal):
    torch.manual_seed(6)
    m = MSTCN(5, 4, stages=3, layers=4, maps=8, causal=causal).eval()
    x, _, mask = _padded_batch(5, 4)
    with torch.no_grad():
        out = m.stage_logits(x, mask)
        rep, _ = m.representation(x, mask=mask)
    assert (out[:, ~mask] == 0).all() and (out[:, mask] != 0).any()
    assert (rep[~mask] == 0).all()


def test_causal_real_frames_ignore_padding():
    """Causal: padding at the end never reaches a real frame, whatever its values, and a
    padded sequence's real frames get the logits of the video alone."""
    torch.manual_seed(7)
    m = MSTCN(5, 4, stages=3, layers=4, maps=8, causal=True).eval()
    x, _, mask = _padded_batch(5, 4, lengths=(37, 25))
    x2 = x.clone()
    x2[~mask] = torch.randn_like(x2[~mask]) * 10
    with torch.no_grad():
        a, b = m.stage_logits(x, mask), m.stage_logits(x2, mask)
        alone = m.stage_logits(x[1:, :25])
    torch.testing.assert_close(a[:, mask], b[:, mask], rtol=0, atol=1e-6)
    torch.testing.assert_close(a[:, 1, :25], alone[:, 0], rtol=1e-5, atol=1e-6)


def test_non_causal_padding_leaks_like_the_references():
    """Non-causal, as in the reference: the mask does not multiply conv_in's output, so a
    padded frame's features reach the last real frame through stage 1's first dilated conv
    (dilation 1), and from there spread backwards by the remaining layers' reach. With
    layers 1, 2, 4 (reach 1 + 2 + 4 = 7 per stage) and 2 stages, the real frames more than
    14 before the padding are untouched, those near it are not. Even all-zero padding gives
    different real-frame logits than the video alone (conv_in's bias at padded frames)."""
    torch.manual_seed(8)
    m = MSTCN(5, 4, stages=2, layers=3, maps=8).eval()
    n = 40
    x = torch.randn(1, 50, 5)
    mask = torch.arange(50)[None, :] < n
    x2 = x.clone()
    x2[:, n:] = torch.randn(1, 50 - n, 5) * 10
    with torch.no_grad():
        a, b = m.stage_logits(x, mask), m.stage_logits(x2, mask)
        x0 = x.clone()
        x0[:, n:] = 0
        zeros, alone = m.stage_logits(x0, mask), m.stage_logits(x[:, :n])
    reach = 2 * (1 + 2 + 4)
    torch.testing.assert_close(a[:, :, : n - reach], b[:, :, : n - reach], rtol=0, atol=1e-6)
    assert not torch.allclose(a[:, :, n - reach : n], b[:, :, n - reach : n])
    assert not torch.allclose(a[0, :, n - 1], b[0, :, n - 1])  # stage 1's last real frame too
    assert not torch.allclose(zeros[:, :, :n], alone)


# -- determinism and dropout ----------------------------------------------------------------


def test_determinism_under_a_fixed_seed():
    x, y, _ = _padded_batch(5, 4)

    def run(seed: int):
        torch.manual_seed(seed)
        m = MSTCN(5, 4, stages=2, layers=3, maps=8).train()
        loss = m.loss(x, y)
        loss.backward()
        return loss.item(), [p.grad.clone() for p in m.parameters()]

    (l1, g1), (l2, g2), (l3, _) = run(0), run(0), run(1)
    assert l1 == l2 and all(torch.equal(a, b) for a, b in zip(g1, g2, strict=True))
    assert l1 != l3


def test_dropout_only_in_training():
    torch.manual_seed(9)
    m = MSTCN(5, 4, stages=2, layers=3, maps=8, dropout=0.5)
    plain = MSTCN(5, 4, stages=2, layers=3, maps=8, dropout=0.0)
    plain.load_state_dict(m.state_dict())
    x = torch.randn(2, 30, 5)
    with torch.no_grad():
        m.train()
        assert not torch.equal(m(x)[0], m(x)[0])  # a fresh dropout mask each call
        m.eval()
        torch.testing.assert_close(m(x)[0], m(x)[0], rtol=0, atol=0)
        torch.testing.assert_close(m(x)[0], plain.eval()(x)[0], rtol=0, atol=0)
        torch.testing.assert_close(plain.train()(x)[0], m(x)[0], rtol=0, atol=0)  # p = 0


# -- MS-TCN++'s dual dilated stage ----------------------------------------------------------


def test_dual_dilated_equals_ms_tcn2():
    dim, c, layers = 6, 5, 4
    torch.manual_seed(10)
    ref = _RefMSTCN2(layers, 2, 8, dim, c).eval()
    ours = MSTCN(dim, c, stages=3, layers=layers, maps=8, dual_dilated=True).eval()
    _copy_from(ours, ref)
    first = ours.stages[0].layers
    assert [(lay.conv_dilated_1.dilation[0], lay.conv_dilated_2.dilation[0]) for lay in first] == [
        (8, 1), (4, 2), (2, 4), (1, 8)]  # fmt: skip
    x = torch.randn(2, 40, dim)
    with torch.no_grad():
        want = ref(x.transpose(1, 2)).transpose(2, 3)
        torch.testing.assert_close(ours.stage_logits(x), want, rtol=1e-5, atol=1e-6)


# -- bad input -----------------------------------------------------------------------------


def test_bad_arguments():
    for kw in ({"stages": 0}, {"layers": 0}, {"maps": 0}, {"dropout": 1.0}, {"dropout": -0.1},
               {"smooth_weight": -1.0}, {"tau": 0.0}):  # fmt: skip
        with pytest.raises(ValueError):
            MSTCN(5, 4, **kw)
    m = MSTCN(5, 4, stages=2, layers=2, maps=4)
    x = torch.randn(2, 6, 5)
    with pytest.raises(ValueError, match="state must be None"):
        m(x, state=[torch.zeros(2, 4, 2)] * 4)
    with pytest.raises(ValueError, match=r"x must be \(B, T, 5\)"):
        m(torch.randn(2, 6, 3))
    with pytest.raises(ValueError, match="mask must be bool"):
        m(x, mask=torch.ones(2, 6))
    with pytest.raises(ValueError, match="mask must be bool"):
        m(x, mask=torch.ones(2, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="y must be integer labels"):
        m.loss(x, torch.zeros(2, 6))
    causal = MSTCN(5, 4, stages=2, layers=2, maps=4, causal=True)
    _, state = causal(x)
    with pytest.raises(ValueError, match="4 layer histories"):
        causal(x, state[:2])
    with pytest.raises(ValueError, match="2 layer histories"):
        causal.representation(x, state)
