"""Tests of retrofit.loss: docs/method.md §7.2 vector, Bregman divergence, logit layouts, LLaDA
baseline (§3.2-3.6)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from retrofit.interpolant import IGNORE_INDEX, build_x_t, mdm_forward_mask, sample_interpolant
from retrofit.loss import bregman_poisson, flexmdm_loss, masked_cross_entropy, mdm_loss
from retrofit.schedules import GeometricSchedule

MASK, PAD = 1, 0


def spec_case_one(insertion: str) -> tuple:
    """docs/method.md §7.1 case 1 (t = 0.6, P = 0) with the §7.2 logits and predicted gaps."""
    x1 = torch.tensor([[10, 11, 12, 13, 14, PAD, PAD, PAD]])
    T1 = torch.tensor([[0.2, 0.7, 0.4, 0.9, 0.1, 0.0, 0.0, 0.0]])
    T2 = torch.tensor([[0.5, 0.8, 0.95, 0.95, 0.3, 0.0, 0.0, 0.0]])
    s = build_x_t(
        x1, x1 != PAD, T1, T2, torch.tensor([0.6]), torch.zeros_like(x1, dtype=torch.bool), MASK, PAD,
        insertion_schedule=insertion,
    )  # fmt: skip
    logits = torch.zeros(1, 8, 16)
    logits[0, 1, :4] = torch.tensor([2.0, 0.5, -1.0, 0.0])
    logits[0, 1, 4:] = -1e4  # the toy 4-token vocabulary
    targets = s.targets.clone()
    targets[0, 1] = 0  # target class 0 of the toy vocabulary (x1 token 12 in the interpolant)
    g_hat = torch.tensor([[0.1, 1.5, 0.5, 0.2, 50.0, 50.0, 50.0, 50.0, 50.0]])  # j > n must be ignored
    return s, logits, targets, g_hat


def test_spec_loss_vector_geometric_weights() -> None:
    s, logits, targets, g_hat = spec_case_one("geometric")
    assert s.targets[0, 1].item() == 12 and s.mask_slots[0].tolist() == [False, True] + [False] * 6
    ce, _ = masked_cross_entropy(logits, targets)
    assert ce.tolist() == pytest.approx([0.3423496], abs=1e-7)
    div = bregman_poisson(s.gaps[:, :4], g_hat[:, :4])
    assert div[0].tolist() == pytest.approx([0.0999875, 0.0945349, 0.1931472, 0.1999868], abs=1e-7)
    assert s.weight_unmask.item() == pytest.approx(2.4999938, abs=1e-6)
    assert s.weight_insert.item() == pytest.approx(6.374806, abs=1e-5)
    out = flexmdm_loss(
        logits, targets, g_hat, s.gaps, s.gap_mask, s.weight_unmask, s.weight_insert, normalizer=1024
    )
    assert out.unmask.item() * 1024 == pytest.approx(0.8558718, abs=2e-6)
    assert out.length.item() * 1024 == pytest.approx(3.7461953, abs=2e-6)
    assert out.total.item() == pytest.approx(0.00449421, abs=5e-9)
    assert out.total.dtype == torch.float32 and out.total.shape == ()


def test_spec_loss_vector_linear_weights() -> None:
    s, logits, targets, g_hat = spec_case_one("linear")
    w = torch.tensor([2.5])
    out = flexmdm_loss(logits, targets, g_hat, s.gaps, s.gap_mask, w, w, normalizer=1024)
    assert out.total.item() == pytest.approx(0.00227052, abs=5e-9)


def test_bregman_zero_iff_equal_and_gradient_sign() -> None:
    g = torch.tensor([0.0, 0.5, 1.0, 3.0, 7.0, 1.0, 3.0])
    g_hat = torch.tensor([0.0, 0.5, 1.0, 3.0, 7.0, 2.0, 0.5], requires_grad=True)
    d = bregman_poisson(g, g_hat)
    assert d[:5].tolist() == [0.0] * 5 and bool((d[5:] > 0).all())
    d.sum().backward()
    torch.testing.assert_close(g_hat.grad[1:], 1 - g[1:] / g_hat.detach()[1:])  # dD/dg_hat = 1 - g / g_hat
    assert g_hat.grad[5] > 0 and g_hat.grad[6] < 0  # over-prediction pushes down, under-prediction up
    others = torch.tensor([0.01, 0.3, 2.0, 10.0])
    for x in (0.0, 1.0, 4.0):
        assert bool((bregman_poisson(torch.full((4,), x), others) > 0).all())
    # D(0, y) = y - 1e-6 + 1e-6 (ln 1e-6 - ln y) ~= y (docs/method.md §3.2)
    y = torch.tensor([0.2, 5.0])
    expected = y - 1e-6 + 1e-6 * (math.log(1e-6) - torch.log(y))
    torch.testing.assert_close(bregman_poisson(torch.zeros(2), y), expected)


def random_batch(seed: int, b: int = 5, width: int = 12, vocab: int = 11) -> tuple:
    gen = torch.Generator().manual_seed(seed)
    mask_slots = torch.rand(b, width, generator=gen) < 0.4
    targets = torch.randint(0, vocab, (b, width), generator=gen).masked_fill(~mask_slots, IGNORE_INDEX)
    logits = torch.randn(b, width, vocab, generator=gen)
    lengths = torch.randint(0, width + 1, (b,), generator=gen)
    gap_mask = torch.arange(width + 1) <= lengths[:, None]
    gaps = torch.randint(0, 4, (b, width + 1), generator=gen).float() * gap_mask
    g_hat = torch.rand(b, width + 1, generator=gen) * 3
    w_u, w_i = torch.rand(b, generator=gen) + 1, torch.rand(b, generator=gen) * 5
    return logits, targets, mask_slots, g_hat, gaps, gap_mask, w_u, w_i


def test_layouts_agree_with_a_per_sample_reference() -> None:
    logits, targets, mask_slots, g_hat, gaps, gap_mask, w_u, w_i = random_batch(0)
    b, norm = logits.shape[0], 64.0
    ref_unmask = sum(
        w_u[i] * F.cross_entropy(logits[i][mask_slots[i]], targets[i][mask_slots[i]], reduction="sum")
        for i in range(b)
    )
    ref_length = sum(w_i[i] * bregman_poisson(gaps[i], g_hat[i])[gap_mask[i]].sum() for i in range(b))
    rows, row_index = logits[mask_slots], mask_slots.nonzero()[:, 0]
    outs = [
        flexmdm_loss(logits, targets, g_hat, gaps, gap_mask, w_u, w_i, normalizer=norm),
        flexmdm_loss(
            logits, targets, g_hat, gaps, gap_mask, w_u, w_i, normalizer=norm, mask_slots=mask_slots
        ),
        flexmdm_loss(rows, targets, g_hat, gaps, gap_mask, w_u, w_i, normalizer=norm, mask_slots=mask_slots),
        flexmdm_loss(
            rows, targets[mask_slots], g_hat, gaps, gap_mask, w_u, w_i, normalizer=norm, row_index=row_index
        ),
    ]
    for out in outs:
        torch.testing.assert_close(out.unmask, ref_unmask / (b * norm))
        torch.testing.assert_close(out.length, ref_length / (b * norm))
        torch.testing.assert_close(out.total, out.unmask + out.length)


def test_cross_entropy_is_float32_for_bf16_logits() -> None:
    logits, targets, mask_slots, g_hat, gaps, gap_mask, w_u, w_i = random_batch(1)
    half = logits.bfloat16()
    out = flexmdm_loss(half, targets, g_hat, gaps, gap_mask, w_u, w_i, normalizer=8)
    ref = flexmdm_loss(half.float(), targets, g_hat, gaps, gap_mask, w_u, w_i, normalizer=8)
    assert out.unmask.dtype == torch.float32 and torch.equal(out.unmask, ref.unmask)


@pytest.mark.parametrize("t", [1e-3, 1 - 1e-6])
@pytest.mark.parametrize("insertion", ["geometric", "linear"])
def test_loss_is_finite_at_extreme_times_and_zero_gaps(t: float, insertion: str) -> None:
    gen = torch.Generator().manual_seed(2)
    b, width, vocab = 16, 20, 9
    x1 = torch.randint(2, vocab, (b, width), generator=gen)
    x1_mask = torch.ones(b, width, dtype=torch.bool)
    protected = torch.arange(width) < 3
    s = sample_interpolant(x1, x1_mask, torch.full((b,), t), protected.expand(b, width), insertion, "linear",
                           MASK, PAD, gen)  # fmt: skip
    logits = torch.randn(b, width, vocab, generator=gen, requires_grad=True)
    for g_hat in (torch.zeros(b, width + 1), s.gaps.clone()):  # zero predictions; exact (zero-gap) fits
        g_hat.requires_grad_(True)
        out = flexmdm_loss(logits, s.targets, g_hat, s.gaps, s.gap_mask, s.weight_unmask, s.weight_insert,
                           normalizer=width)  # fmt: skip
        out.total.backward()
        assert all(bool(torch.isfinite(v).all()) for v in (out.total, out.unmask, out.length))
        assert bool(torch.isfinite(logits.grad).all()) and bool(torch.isfinite(g_hat.grad).all())


def test_flexmdm_loss_errors() -> None:
    logits, targets, mask_slots, g_hat, gaps, gap_mask, w_u, w_i = random_batch(3)
    with pytest.raises(ValueError, match="normalizer must be > 0"):
        flexmdm_loss(logits, targets, g_hat, gaps, gap_mask, w_u, w_i, normalizer=0)
    with pytest.raises(ValueError, match="same \\[B, L \\+ 1\\] shape"):
        flexmdm_loss(logits, targets, g_hat[:, :-1], gaps, gap_mask, w_u, w_i, normalizer=1)
    with pytest.raises(ValueError, match="logit rows"):
        flexmdm_loss(logits[mask_slots][1:], targets, g_hat, gaps, gap_mask, w_u, w_i, normalizer=1,
                     mask_slots=mask_slots)  # fmt: skip
    with pytest.raises(ValueError, match="need row_index"):
        flexmdm_loss(logits[mask_slots], targets[mask_slots], g_hat, gaps, gap_mask, w_u, w_i, normalizer=1)


def test_mdm_loss_hand_value() -> None:
    logits = torch.zeros(2, 3, 4)
    logits[0, 2] = torch.tensor([0.0, 1.0, 0.0, 0.0])  # target 1: CE = ln(3 + e) - 1
    logits[1, 0] = torch.tensor([0.0, 0.0, 0.0, 0.0])  # target 3: CE = ln 4
    targets = torch.full((2, 3), IGNORE_INDEX)
    targets[0, 2], targets[1, 0] = 1, 3
    p = torch.tensor([0.5, 0.25])
    expected = ((math.log(3 + math.e) - 1) / 0.5 + math.log(4) / 0.25) / (2 * 4096)
    assert mdm_loss(logits, targets, p, normalizer=4096).item() == pytest.approx(expected, rel=1e-6)
    rows = logits[targets != IGNORE_INDEX]
    got = mdm_loss(rows, targets, p, normalizer=4096, mask_slots=targets != IGNORE_INDEX)
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_mdm_forward_mask_statistics_and_contract() -> None:
    b, width, t = 4096, 32, 0.3
    x1 = torch.randint(2, 50, (b, width), generator=torch.Generator().manual_seed(4))
    response = (torch.arange(width) >= 8).expand(b, width)  # prompt = first 8; pad tail is response
    s = mdm_forward_mask(x1, response, torch.full((b,), t), MASK, torch.Generator().manual_seed(5))
    p = (1 - 1e-3) * t + 1e-3
    torch.testing.assert_close(s.mask_prob, torch.full((b,), p))
    n = b * (width - 8)
    assert abs(s.masked.sum().item() - n * p) < 4.5 * math.sqrt(n * p * (1 - p))
    assert not bool(s.masked[~response].any())
    assert torch.equal(s.x_t, torch.where(s.masked, MASK, x1))
    assert torch.equal(s.targets, torch.where(s.masked, x1, IGNORE_INDEX))
    again = mdm_forward_mask(x1, response, torch.full((b,), t), MASK, torch.Generator().manual_seed(5))
    assert torch.equal(again.masked, s.masked)
    with pytest.raises(ValueError, match="response_mask"):
        mdm_forward_mask(x1, response[:, :-1], torch.full((b,), t), MASK)


def test_geometric_insert_weight_matches_schedule_rate() -> None:
    s, *_ = spec_case_one("geometric")
    assert s.weight_insert.item() == pytest.approx(GeometricSchedule().rate(0.6), rel=1e-6)
