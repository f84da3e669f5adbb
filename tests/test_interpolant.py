"""Tests of retrofit.interpolant: docs/method.md §7.1 vectors and invariants, marginals, trimming,
time sampling.

Statistical checks pool B = 4096 samples of a fixed x1 with fixed seeds; counts must lie within
4.5 binomial standard errors of their closed forms.
"""

from __future__ import annotations

import math

import pytest
import torch
from scipy.integrate import quad

from retrofit.interpolant import (
    IGNORE_INDEX,
    InterpolantSample,
    build_x_t,
    sample_interpolant,
    trim_to_longest,
)
from retrofit.schedules import HITTING_TIME_EPS, GeometricSchedule, LinearSchedule
from retrofit.time_sampling import band_order, banded_strata, banded_times, sample_times

MASK, PAD = 1, 0
B, L, ELL = 4096, 64, 48  # samples, canvas width, length of the fixed x1
LIN, GEO = LinearSchedule(), GeometricSchedule()


def fixed_batch(prompt_len: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x1 = 100..147 right-padded to L, repeated B times; protected = first prompt_len tokens."""
    row = torch.full((L,), PAD, dtype=torch.long)
    row[:ELL] = torch.arange(100, 100 + ELL)
    x1 = row.expand(B, L).clone()
    x1_mask = (torch.arange(L) < ELL).expand(B, L).clone()
    protected = (torch.arange(L) < prompt_len).expand(B, L).clone()
    return x1, x1_mask, protected


def draw(t: float | torch.Tensor, alpha, beta, prompt_len: int = 0, seed: int = 0) -> InterpolantSample:
    x1, x1_mask, protected = fixed_batch(prompt_len)
    t = torch.full((B,), t) if isinstance(t, float) else t
    gen = torch.Generator().manual_seed(seed)
    return sample_interpolant(x1, x1_mask, t, protected, alpha, beta, MASK, PAD, generator=gen)


def z_score(count: float, n: float, p: float) -> float:
    return abs(count - n * p) / math.sqrt(n * p * (1 - p))


def check_invariants(
    s: InterpolantSample, x1: torch.Tensor, x1_mask: torch.Tensor, protected: torch.Tensor
) -> None:
    """docs/method.md §7.1 invariants 1-3, 7, 8 plus the targets contract, for every row."""
    ell, n, slots = x1_mask.sum(1), s.lengths, s.slot_mask
    src_tok = x1.gather(1, s.src_index)
    assert torch.equal(slots, torch.arange(x1.shape[1]) < n[:, None])
    assert bool((s.x_t[~slots] == PAD).all())  # pads only after n
    assert bool((s.src_index[~slots] == 0).all())
    assert bool(((s.x_t == src_tok) | (s.x_t == MASK))[slots].all())
    assert torch.equal(s.mask_slots, slots & (s.x_t == MASK))
    assert torch.equal(s.targets, torch.where(s.mask_slots, src_tok, IGNORE_INDEX))
    step = s.src_index[:, 1:] - s.src_index[:, :-1]
    assert bool((step > 0)[slots[:, 1:]].all())  # s_t strictly increasing
    assert bool((s.src_index < ell[:, None])[slots].all())
    assert torch.equal(s.gaps.sum(1).long() + n, ell)  # sum g + n = l
    assert bool((s.gaps >= 0).all()) and bool((s.gaps[~s.gap_mask] == 0).all())
    assert torch.equal(s.gap_mask.sum(1), n + 1)
    # protected tokens are kept, unmasked and unchanged
    kept = torch.zeros_like(x1).scatter_add_(1, s.src_index, slots.long())
    assert bool((kept[protected & x1_mask] == 1).all())
    prot_slots = protected.gather(1, s.src_index) & slots
    assert bool((s.x_t == src_tok)[prot_slots].all()) and not bool(s.mask_slots[prot_slots].any())
    assert bool((s.mask_slots.sum(1) <= n - (protected & x1_mask).sum(1)).all())


# ------------------------------------------------------------------- docs/method.md §7.1 test vectors


SPEC_CASES = [  # t, P, x_t (non-pad), s_t, g (first n+1), {slot: target}
    (0.6, 0, [10, MASK, 14], [0, 2, 4], [0, 1, 1, 0], {1: 12}),
    (0.6, 2, [10, 11, MASK, 14], [0, 1, 2, 4], [0, 0, 0, 1, 0], {2: 12}),
    (0.05, 2, [10, 11], [0, 1], [0, 0, 3], {}),
    (1.0, 0, [10, 11, 12, 13, 14], [0, 1, 2, 3, 4], [0, 0, 0, 0, 0, 0], {}),
]


@pytest.mark.parametrize(("t", "P", "x_t", "s_t", "g", "targets"), SPEC_CASES)
def test_spec_vectors(t, P, x_t, s_t, g, targets) -> None:
    x1 = torch.tensor([[10, 11, 12, 13, 14, PAD, PAD, PAD]])
    x1_mask = torch.arange(8)[None] < 5
    T1 = torch.tensor([[0.2, 0.7, 0.4, 0.9, 0.1, 0.0, 0.0, 0.0]])
    T2 = torch.tensor([[0.5, 0.8, 0.95, 0.95, 0.3, 0.0, 0.0, 0.0]])
    protected = torch.arange(8)[None] < P
    s = build_x_t(x1, x1_mask, T1, T2, torch.tensor([t]), protected, MASK, PAD)
    n = len(x_t)
    assert s.lengths.tolist() == [n]
    assert s.x_t[0].tolist() == x_t + [PAD] * (8 - n)
    assert s.src_index[0].tolist() == s_t + [0] * (8 - n)
    assert s.gaps[0].tolist() == g + [0.0] * (9 - n - 1)
    assert s.gap_mask[0].tolist() == [True] * (n + 1) + [False] * (8 - n)
    assert {j: v for j, v in enumerate(s.targets[0].tolist()) if v != IGNORE_INDEX} == targets
    assert s.x_t.dtype == torch.long and s.gaps.dtype == torch.float32
    check_invariants(s, x1, x1_mask, protected)


def test_weights_are_the_elbo_hazards() -> None:
    x1 = torch.tensor([[10, 11, PAD], [12, PAD, PAD]])
    x1_mask = x1 != PAD
    zeros = torch.zeros(2, 3)
    s = build_x_t(x1, x1_mask, zeros, zeros, torch.tensor([0.6, 0.25]), zeros.bool(), MASK, PAD)
    torch.testing.assert_close(s.weight_unmask, torch.tensor([1 / (0.4 + 1e-6), 1 / (0.75 + 1e-6)]))
    torch.testing.assert_close(s.weight_insert, torch.tensor([2.5, 1 / 0.75]))
    s = build_x_t(
        x1,
        x1_mask,
        zeros,
        zeros,
        torch.tensor([0.6, 0.25]),
        zeros.bool(),
        MASK,
        PAD,
        insertion_schedule="geometric",
    )
    torch.testing.assert_close(s.weight_insert, torch.tensor([6.374806, 2.496903]), rtol=2e-6, atol=0)


# ------------------------------------------------------------------- endpoints and marginals


def test_linear_schedules_give_x1_at_t1_and_prompt_at_t0() -> None:
    x1, x1_mask, _ = fixed_batch()
    s = draw(1.0, LIN, LIN)
    assert torch.equal(s.x_t, x1) and not bool(s.mask_slots.any()) and bool((s.gaps == 0).all())
    s = draw(0.0, LIN, LIN, prompt_len=5)
    assert bool((s.lengths == 5).all()) and torch.equal(s.x_t[:, :5], x1[:, :5])
    assert bool((s.gaps[:, 5] == ELL - 5).all()) and bool((s.gaps[:, :5] == 0).all())


def test_geometric_misses_one_percent_at_t1() -> None:
    s = draw(1.0, GEO, LIN)
    missing = (ELL - s.lengths).sum().item()
    assert z_score(missing, B * ELL, 1 - GEO.alpha(1.0)) < 4.5  # ~0.995 % never inserted
    assert not bool(s.mask_slots.any())  # everything inserted is unmasked by t = 1 (beta linear)


@pytest.mark.parametrize("t", [1e-3, 0.05])
def test_geometric_present_count_near_t0(t: float) -> None:
    s = draw(t, GEO, LIN, seed=1)
    p = GEO.alpha((t - HITTING_TIME_EPS) / (1 - HITTING_TIME_EPS))
    assert z_score(s.lengths.sum().item(), B * ELL, p) < 4.5


@pytest.mark.parametrize("alpha", [LIN, GEO], ids=["linear", "geometric"])
def test_present_count_matches_alpha_over_t(alpha) -> None:
    P = 6
    t = torch.linspace(1e-3, 1.0, B)
    s = draw(t, alpha, LIN, prompt_len=P, seed=2)
    p = alpha.alpha((t.double() - HITTING_TIME_EPS) / (1 - HITTING_TIME_EPS)).clamp(0, 1)
    mean = (P + (ELL - P) * p).sum().item()
    var = ((ELL - P) * p * (1 - p)).sum().item()
    assert abs(s.lengths.sum().item() - mean) < 4.5 * math.sqrt(var)


def masked_probability(alpha, t: float) -> float:
    """P(masked at t) for beta linear: alpha(0)(1 - t) + int_0^t alpha'(s)(1 - t)/(1 - s) ds
    (docs/method.md §1.3)."""
    integral, _ = quad(lambda s: alpha.alpha_prime(s) / (1 - s), 0.0, t, epsabs=1e-12, epsrel=1e-10)
    return (1 - t) * (alpha.alpha(0.0) + integral)


@pytest.mark.parametrize("t", [0.3, 0.7])
@pytest.mark.parametrize("alpha", [LIN, GEO], ids=["linear", "geometric"])
def test_masked_count_matches_closed_form(alpha, t: float) -> None:
    P = 4
    s = draw(t, alpha, LIN, prompt_len=P, seed=3)
    p = masked_probability(alpha, t)
    if alpha is LIN:
        assert p == pytest.approx(-(1 - t) * math.log(1 - t), rel=1e-9)
    assert z_score(s.mask_slots.sum().item(), B * (ELL - P), p) < 4.5


# ------------------------------------------------------------------- invariants on ragged batches


def ragged_batch(seed: int) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    b, width = 512, 40
    ell = torch.randint(0, width + 1, (b,), generator=gen)
    x1_mask = torch.arange(width) < ell[:, None]
    x1 = torch.randint(2, 50, (b, width), generator=gen).masked_fill(~x1_mask, PAD)
    prefix = (torch.rand(b, generator=gen) * (ell + 1)).long()
    suffix_start = prefix + (torch.rand(b, generator=gen) * (ell - prefix + 1)).long()
    cols = torch.arange(width)
    infill = torch.rand(b, generator=gen) < 0.5  # half the rows also protect a suffix (docs/method.md §1.7)
    protected = (cols < prefix[:, None]) | (infill[:, None] & (cols >= suffix_start[:, None]))
    return x1, x1_mask, protected & x1_mask, torch.rand(b, generator=gen)


@pytest.mark.parametrize("alpha", [LIN, GEO, "sin"], ids=["linear", "geometric", "sin"])
def test_invariants_hold_for_every_sample(alpha) -> None:
    x1, x1_mask, protected, t = ragged_batch(4)
    s = sample_interpolant(
        x1, x1_mask, t, protected, alpha, "cosine", MASK, PAD, torch.Generator().manual_seed(5)
    )
    check_invariants(s, x1, x1_mask, protected)
    check_invariants(trim_to_longest(s), x1, x1_mask, protected)


def test_sampling_is_deterministic_given_the_generator() -> None:
    x1, x1_mask, protected, t = ragged_batch(6)
    a, b = (
        sample_interpolant(x1, x1_mask, t, protected, GEO, LIN, MASK, PAD, torch.Generator().manual_seed(7))
        for _ in range(2)
    )
    for name, value in a.to_dict().items():
        assert torch.equal(value, getattr(b, name)), name


def test_build_x_t_rejects_bad_inputs() -> None:
    x1 = torch.tensor([[5, 6, PAD]])
    ok = torch.tensor([[True, True, False]])
    z = torch.zeros(1, 3)
    with pytest.raises(ValueError, match="left-aligned"):
        build_x_t(x1, torch.tensor([[True, False, True]]), z, z, torch.ones(1), ok & False, MASK, PAD)
    with pytest.raises(ValueError, match="T2 must have x1's shape"):
        build_x_t(x1, ok, z, z[:, :2], torch.ones(1), ok & False, MASK, PAD)
    with pytest.raises(ValueError, match="t must have shape"):
        build_x_t(x1, ok, z, z, torch.ones(2), ok & False, MASK, PAD)


# ------------------------------------------------------------------- trimming


def test_trim_to_longest_keeps_every_slot_target_and_gap() -> None:
    x1, x1_mask, protected, t = ragged_batch(8)
    s = sample_interpolant(
        x1, x1_mask, 0.5 * t, protected, GEO, LIN, MASK, PAD, torch.Generator().manual_seed(9)
    )
    trimmed = trim_to_longest(s)
    w = int(s.lengths.max())
    assert trimmed.x_t.shape == (x1.shape[0], w) and trimmed.gaps.shape == (x1.shape[0], w + 1)
    for name in ("x_t", "slot_mask", "src_index", "mask_slots", "targets"):
        assert torch.equal(getattr(trimmed, name), getattr(s, name)[:, :w]), name
    assert not bool(s.slot_mask[:, w:].any()) and bool((s.targets[:, w:] == IGNORE_INDEX).all())
    assert torch.equal(trimmed.gaps.sum(1), s.gaps.sum(1)) and torch.equal(
        trimmed.gap_mask.sum(1), s.gap_mask.sum(1)
    )
    for name in ("lengths", "t", "weight_unmask", "weight_insert"):
        assert torch.equal(getattr(trimmed, name), getattr(s, name)), name
    with pytest.raises(ValueError, match="width must be"):
        s.trim(w - 1)


def test_trim_of_empty_canvas_keeps_one_column() -> None:
    s = draw(0.0, LIN, LIN)  # nothing inserted, no prompt
    trimmed = trim_to_longest(s)
    assert trimmed.x_t.shape == (B, 1) and trimmed.gaps.shape == (B, 2)
    assert bool((trimmed.gaps[:, 0] == ELL).all()) and torch.equal(
        trimmed.gap_mask[0], torch.tensor([True, False])
    )


# ------------------------------------------------------------------- training times (docs/method.md §3.5)


def test_sample_times_spec_example() -> None:
    t = sample_times(4, u=torch.full((4,), 0.5))
    torch.testing.assert_close(t, torch.tensor([0.125875, 0.375625, 0.625375, 0.875125]))
    assert t.dtype == torch.float32


def test_stratified_times_differ_per_rank_and_lie_in_strata() -> None:
    W, b, t_min = 4, 8, 1e-3
    per_rank = [
        sample_times(b, world_size=W, rank=r, generator=torch.Generator().manual_seed(100 + r))
        for r in range(W)
    ]
    tau = (torch.stack(per_rank).double() - t_min) / (1 - t_min)  # [W, b]
    strata = torch.arange(W * b).reshape(W, b)
    assert bool((tau >= strata / (W * b) - 1e-6).all()) and bool((tau <= (strata + 1) / (W * b) + 1e-6).all())
    assert torch.unique(torch.stack(per_rank)).numel() == W * b
    plain = sample_times(10_000, stratified=False, generator=torch.Generator().manual_seed(0))
    assert bool((plain >= t_min).all()) and bool((plain < 1).all())
    with pytest.raises(ValueError, match="rank"):
        sample_times(4, world_size=2, rank=2)


def test_banded_times_cover_the_global_strata_once() -> None:
    G, W, b, seed, step = 4, 2, 3, 17, 5
    N = G * W * b
    all_strata, all_u, all_t = [], [], []
    for k in range(G):
        bands = set()
        for r in range(W):
            strata = banded_strata(G, b, W, r, k, seed=seed, step=step)
            t = banded_times(G, b, W, r, k, seed=seed, step=step)
            assert torch.equal(t, banded_times(G, b, W, r, k, seed=seed, step=step))  # deterministic
            bands.update((strata // (W * b)).tolist())
            tau = (t.double() - 1e-3) / (1 - 1e-3)
            assert bool((tau >= strata / N - 1e-6).all()) and bool((tau <= (strata + 1) / N + 1e-6).all())
            all_strata.append(strata)
            all_t.append(t)
            all_u.append(tau * N - strata)
        assert len(bands) == 1  # every rank gets the same band in a micro-step
    strata = torch.cat(all_strata)
    assert sorted(strata.tolist()) == list(range(N))  # = plain stratified strata of the global batch
    # same values as plain stratified sampling of the global batch with the same u's
    u = torch.zeros(N, dtype=torch.float64)
    u[strata] = torch.cat(all_u).clamp(0, 1)
    for r_k, strata_rk in enumerate(all_strata):
        exact_u = u[strata_rk]
        t_plain = sample_times(N, u=u)[strata_rk]
        t_band = banded_times(G, b, W, r_k % W, r_k // W, seed=seed, step=step, u=exact_u)
        torch.testing.assert_close(t_band, t_plain, rtol=0, atol=0)
    assert len({tuple(t.tolist()) for t in all_t}) == G * W  # ranks / micro-steps draw their own u


def test_banded_strata_give_every_rank_the_same_stratum_sum() -> None:
    """Serpentine interleaving: with B even, each rank's strata of a micro-step sum to the same
    value (ranks get equally late t on average; docs/method.md §3.7); W = 1 keeps 0..B-1."""
    G, W, b = 2, 16, 4
    for k in range(G):
        sums = {int(banded_strata(G, b, W, r, k, seed=3).sum()) for r in range(W)}
        assert len(sums) == 1
    assert banded_strata(1, 4, 1, 0, 0).tolist() == [0, 1, 2, 3]
    assert banded_strata(1, 3, 4, 1, 0, shuffle_bands=False).tolist() == [1, 6, 9]


def test_band_order_is_shared_and_seeded() -> None:
    first = band_order(8, seed=1, step=0)
    assert torch.equal(first, band_order(8, seed=1, step=0))
    assert sorted(first.tolist()) == list(range(8))
    assert any(not torch.equal(first, band_order(8, seed=1, step=s)) for s in range(1, 5))
    unshuffled = [banded_strata(3, 2, 1, 0, k, shuffle_bands=False).tolist() for k in range(3)]
    assert unshuffled == [[0, 1], [2, 3], [4, 5]]
