"""Step helpers of the FlexMDM sampler: docs/method.md §7.3 vectors and exact small cases."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from retrofit.sampling.draws import RandomSource, poisson_from_uniform
from retrofit.sampling.steps import (
    allowed_gaps,
    cap_insertions,
    confidence,
    draw_tokens,
    editable_slots,
    first_k_eligible,
    insert_masks,
    insertion_counts,
    predict,
    select_top_k,
    unmask_count,
    window_size,
)
from retrofit.schedules import make_schedule

M, P = 99, 98  # mask and pad ids of these tests
L = torch.tensor


def test_insert_masks_spec_example():
    """docs/method.md §4.2 / §7.3.7: [7,8,M,9,∅…], e = [0,0,2,0,1] -> [7,8,M,M,M,9,M,∅]."""
    canvas = L([[7, 8, M, 9, P, P, P, P]])
    out, n = insert_masks(canvas[:, :4], L([4]), L([[0, 0, 2, 0, 1]]), mask_id=M, pad_id=P, out_width=8)
    assert out.tolist() == [[7, 8, M, M, M, 9, M, P]]
    assert n.tolist() == [7]


def test_insert_masks_batched_rows_and_ignored_columns():
    canvas = L([[1, 2, 3, P], [4, P, P, P]])
    e = L([[1, 0, 0, 1, 0], [0, 2, 0, 0, 0]])  # row 1 has n = 1: gaps 0..1
    out, n = insert_masks(canvas, L([3, 1]), e, mask_id=M, pad_id=P, out_width=6)
    assert out.tolist() == [[M, 1, 2, 3, M, P], [4, M, M, P, P, P]]
    assert n.tolist() == [5, 3]
    with pytest.raises(ValueError, match="canvas width"):
        insert_masks(canvas, L([3, 1]), e, mask_id=M, pad_id=P, out_width=4)


def test_window_spec_example_and_first_k():
    """docs/method.md §7.3.8: K = 3, alpha_win = 15, max_window = 32, N = 50 -> w = 32."""
    assert window_size(L([3]), 15.0, 32, L([50])).tolist() == [32]
    assert window_size(L([3, 2, 7]), 1.0, 10, L([50, 1, 9])).tolist() == [3, 1, 7]
    eligible = L([[0, 1, 1, 0, 1, 1]]).bool()
    assert first_k_eligible(eligible, L([3])).long().tolist() == [[0, 1, 1, 0, 1, 0]]


def test_unmask_count_mean_spec_example():
    """docs/method.md §7.3.9: N = 10, t = 0.5, dt = 1/256, linear -> Poisson mean 0.078125.

    200 000 seeded draws: the sample mean has s.e. sqrt(0.078125 / 2e5) = 6.25e-4; allow 4 s.e.
    """
    hazard_dt = make_schedule("linear").rate(0.5) * (1 / 256)
    assert 10 * hazard_dt == pytest.approx(0.078125, abs=1e-15)
    k = unmask_count(torch.full((200_000,), 10), hazard_dt, RandomSource(torch.Generator().manual_seed(0)))
    assert k.dtype == torch.long
    assert abs(k.double().mean().item() - 0.078125) < 4 * math.sqrt(0.078125 / 200_000)


def test_protection_masks():
    """Prompt P = 2 (n = 5) and infill pre = 2, suf = 1 (n = 6) (docs/method.md §1.5, §4.4)."""
    lengths, pre, suf = L([5, 6]), L([2, 2]), L([0, 1])
    assert editable_slots(lengths, pre, suf, 7).long().tolist() == [
        [0, 0, 1, 1, 1, 0, 0],
        [0, 0, 1, 1, 1, 0, 0],
    ]
    assert allowed_gaps(lengths, pre, suf, 8).long().tolist() == [
        [0, 0, 1, 1, 1, 1, 0, 0],
        [0, 0, 1, 1, 1, 1, 0, 0],
    ]


def test_cap_keeps_leftmost_insertions_that_fit():
    e = L([[1, 2, 0, 3], [0, 0, 4, 0], [2, 0, 0, 0]])
    kept, dropped = cap_insertions(e, lengths=L([5, 5, 8]), cap=L([8, 20, 8]))
    assert kept.tolist() == [[1, 2, 0, 0], [0, 0, 4, 0], [0, 0, 0, 0]]
    assert dropped.tolist() == [3, 0, 2]


def test_select_top_k_clamps_and_orders():
    conf = torch.tensor([[0.1, 0.9, 0.5, 0.9, float("-inf")], [0.3, 0.2, 0.1, 0.0, 5.0]], dtype=torch.float64)
    eligible = L([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]]).bool()
    chosen = select_top_k(conf, eligible, L([2, 7]))
    assert chosen.long().tolist() == [[0, 1, 0, 1, 0], [1, 1, 0, 0, 0]]  # tie -> left; K clamped to 2
    chosen = select_top_k(conf, eligible, L([5, 1]))
    assert chosen.long().tolist() == [[1, 1, 1, 1, 1], [1, 0, 0, 0, 0]]  # -inf but eligible: chosen


def test_confidence_functions_exact():
    """docs/method.md §4.3 on p = softmax(logits) with the mask id banned."""
    probs = torch.tensor([0.5, 0.3, 0.2])
    logits = torch.log(torch.tensor([[[0.5, 0.3, 0.2, 1.0]] * 3]))
    logits[..., 3] = 50.0  # token 3 is banned: p is over tokens 0..2 only
    banned = L([0, 0, 0, 1]).bool()
    eligible = L([[1, 0, 1]]).bool()
    rand = RandomSource(torch.Generator().manual_seed(0))
    lengths = L([3])
    top = confidence("top_prob", logits, eligible, lengths, rand, banned)
    diff = confidence("prob_diff", logits, eligible, lengths, rand, banned)
    ent = confidence("entropy", logits, eligible, lengths, rand, banned)
    pos = confidence("position", logits, eligible, lengths, rand, banned)
    neg_h = float((probs * torch.log(probs + 1e-10)).sum())
    assert top[0, 0].item() == pytest.approx(0.5, abs=1e-6) and top[0, 1].item() == float("-inf")
    assert diff[0, 2].item() == pytest.approx(0.2, abs=1e-6)
    assert ent[0, 0].item() == pytest.approx(neg_h, abs=1e-6)
    assert pos[0].tolist() == [1.0, float("-inf"), 1 - 2 / 3]
    rnd = confidence("random", logits, eligible, lengths, rand, banned)
    assert 0 <= rnd[0, 0] < 1 and rnd[0, 1] == float("-inf")
    with pytest.raises(ValueError, match="confidence must be one of"):
        confidence("nope", logits, eligible, lengths, rand, banned)


def test_draw_tokens_inverse_cdf_filters_and_bans():
    logits = torch.log(torch.tensor([[0.2, 0.5, 0.3, 0.0001]] * 4))
    logits[:, 3] = 100.0  # banned: never emitted
    banned = L([0, 0, 0, 1]).bool()
    u = torch.tensor([0.1, 0.6, 0.85, 0.999], dtype=torch.float64)
    # sorted order: token 1 (0.5), token 2 (0.3), token 0 (0.2)
    assert draw_tokens(logits, u, banned=banned).tolist() == [1, 2, 0, 0]
    assert draw_tokens(logits, u, temperature=0.0, banned=banned).tolist() == [1, 1, 1, 1]
    assert draw_tokens(logits, u, top_k=1, banned=banned).tolist() == [1, 1, 1, 1]
    assert draw_tokens(logits, u, top_p=0.5, banned=banned).tolist() == [1, 1, 1, 1]
    assert draw_tokens(logits, u, top_p=0.6, banned=banned).tolist() == [1, 1, 2, 2]  # p = [5/8, 3/8]


def test_draw_tokens_temperature_frequencies():
    """T = 2 on p = [0.5, 0.3, 0.2]: p_T ∝ sqrt(p). 100 000 draws, each frequency within 4 s.e."""
    n = 100_000
    logits = torch.log(torch.tensor([0.5, 0.3, 0.2])).expand(n, 3)
    u = torch.rand(n, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    freq = torch.bincount(draw_tokens(logits, u, temperature=2.0), minlength=3).double() / n
    target = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64).sqrt()
    target /= target.sum()
    se = (target * (1 - target) / n).sqrt()
    assert bool(((freq - target).abs() < 4 * se).all()), (freq, target)


def test_random_source_full_width_is_a_slice_of_the_full_draw():
    trimmed = RandomSource(torch.Generator().manual_seed(3), full_width=10)
    full = RandomSource(torch.Generator().manual_seed(3), full_width=10)
    assert torch.equal(
        trimmed.uniform(2, 4, torch.device("cpu")), full.uniform(2, 10, torch.device("cpu"))[:, :4]
    )
    rates = torch.tensor([[0.5, 3.0, 0.0], [2.0, 0.0, 0.0]], dtype=torch.float64)
    a = trimmed.poisson(rates, extra=1)
    b = full.poisson(torch.nn.functional.pad(rates, (0, 8)), extra=1)
    assert torch.equal(a, b[:, :3]) and a.dtype == torch.long
    with pytest.raises(ValueError, match="finite and >= 0"):
        full.poisson(torch.tensor([float("inf")]))


def test_poisson_from_uniform_is_the_exact_inverse_cdf():
    """Against scipy's Poisson ppf (smallest k with F(k) >= u) on 4 000 uniforms per rate, from
    rate 0 to 5 000 (the windowed scan with the incomplete-gamma base)."""
    from scipy.stats import poisson

    u = torch.rand(4000, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    for rate in (0.0, 1e-3, 0.3, 2.5, 40.0, 5000.0):
        ours = poisson_from_uniform(torch.full((4000,), rate, dtype=torch.float64), u)
        expected = (
            torch.from_numpy(poisson.ppf(u.numpy(), rate)).long() if rate > 0 else torch.zeros(4000).long()
        )
        assert torch.equal(ours, expected), rate


def test_full_width_poisson_draws_are_local():
    """With full_width set, changing one rate changes only that element's count (one uniform each)."""
    rates = torch.rand(6, 9, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 3
    changed = rates.clone()
    changed[2, 4] += 7.0
    a = RandomSource(torch.Generator().manual_seed(1), full_width=12).poisson(rates, extra=1)
    b = RandomSource(torch.Generator().manual_seed(1), full_width=12).poisson(changed, extra=1)
    differ = a != b
    assert not bool(differ.flatten()[torch.arange(54) != 2 * 9 + 4].any()) and bool(differ[2, 4])


def test_insertion_counts_only_on_allowed_gaps():
    """Mean of e_j ~ Poisson(ĝ_j h dt) on allowed gaps, 0 elsewhere; 50 000 rows, 4 s.e."""
    B = 50_000
    gaps = torch.tensor([[5.0, 2.0, 1.0, 7.0]]).expand(B, 4)
    allowed = L([[0, 1, 1, 0]]).bool().expand(B, 4)
    e = insertion_counts(gaps, allowed, 0.25, RandomSource(torch.Generator().manual_seed(2)))
    assert int(e[:, [0, 3]].abs().sum()) == 0
    means = e[:, 1:3].double().mean(0)
    assert abs(means[0] - 0.5) < 4 * math.sqrt(0.5 / B) and abs(means[1] - 0.25) < 4 * math.sqrt(0.25 / B)
    final = insertion_counts(gaps[:1], allowed[:1], None, RandomSource(torch.Generator().manual_seed(2)))
    assert final[0, 0] == 0 and final[0, 3] == 0  # hazard_dt None: rate = ĝ itself


def test_predict_checks_output_shapes():
    def bad_model(input_ids, t, attention_mask):
        B, W = input_ids.shape
        return SimpleNamespace(logits=torch.zeros(B, W, 5), expected_gaps=torch.zeros(B, W))

    def good_model(input_ids, t, attention_mask):
        B, W = input_ids.shape
        assert attention_mask.tolist() == [[1, 1, 0], [1, 0, 0]] and t.tolist() == [0.25, 0.25]
        return SimpleNamespace(logits=torch.zeros(B, W, 5), expected_gaps=-torch.ones(B, W + 1))

    canvas, lengths = L([[1, 2, P, P], [3, P, P, P]]), L([2, 1])
    with pytest.raises(ValueError, match="length slot"):
        predict(bad_model, canvas, lengths, 0.25, 3)
    pred = predict(good_model, canvas, lengths, 0.25, 3)
    assert pred.logits.shape == (2, 3, 5) and float(pred.expected_gaps.min()) == 0.0  # clamped >= 0
