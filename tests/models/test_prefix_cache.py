"""Prompt-prefix KV cache of LLaDAModelLM / FlexMDMModel (retrofit.models.prefix_cache; issue #14).

The cached forward (live columns only, prefix keys/values from `cache_prefix=P` on the same
canvas and t) must give the full forward's live outputs. Measured on CPU fp32 / bf16 they are
bitwise equal for most shapes (all of those below on the development machine); CPU SDPA rounds a
query row by its place in its query tile, so some shapes differ by ~1e-6, and the tests use
`close` (atol 1e-5, no rtol on logits) to stay valid on other CPUs.
"""

from __future__ import annotations

import pytest
import torch

from retrofit.models import FlexMDMModel, LLaDAConfig, LLaDAModelLM
from retrofit.models.llada import apply_rope, rope_cos_sin
from retrofit.models.prefix_cache import PrefixCache, trunk_position_layers

PAD, MASK, VOCAB = 1, 95, 96


def close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Equal up to kernel rounding: |diff| <= 1e-5 (+ 1e-6 relative, for gaps ~ 50)."""
    torch.testing.assert_close(actual, expected, rtol=1e-6, atol=1e-5)


def tiny_llada(n_kv_heads: int = 4, n_layers: int = 3, seed: int = 0) -> LLaDAModelLM:
    """fp32 LLaDA, d 64, 4 heads (head dim 16), init_std 0.1 so attention is far from uniform."""
    config = LLaDAConfig(
        d_model=64, n_heads=4, n_kv_heads=n_kv_heads, n_layers=n_layers, mlp_hidden_size=128,
        vocab_size=VOCAB, embedding_size=VOCAB, mask_token_id=MASK, pad_token_id=PAD, eos_token_id=PAD,
        bos_token_id=0, max_sequence_length=512, init_std=0.1,
    )  # fmt: skip
    torch.manual_seed(seed)
    return LLaDAModelLM(config).eval()


def tiny_flexmdm(n_kv_heads: int = 4, pad_attention: str = "slots") -> FlexMDMModel:
    """A graft of `tiny_llada` (3 blocks, AdaLN groups of 2) with random AdaLN, so t matters."""
    model = FlexMDMModel.from_llada(
        tiny_llada(n_kv_heads), seed=0, adaln_group_size=2, canvas_width=64, pad_attention=pad_attention
    ).eval()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.adaln.parameters():
            p.copy_(0.2 * torch.randn(p.shape, generator=gen))
    return model


def ragged_batch(lengths: list[int], width: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-aligned rows of random tokens (30 % masks), pad after row b's lengths[b] slots."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, MASK, (len(lengths), width), generator=gen)
    ids[torch.rand(ids.shape, generator=gen) < 0.3] = MASK
    mask = torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]
    return torch.where(mask, ids, PAD), mask


@pytest.mark.parametrize("n_kv_heads", [4, 2, 1])
@pytest.mark.parametrize("ragged", [False, True])
def test_llada_cached_forward_equals_full_forward_bitwise(n_kv_heads: int, ragged: bool) -> None:
    model = tiny_llada(n_kv_heads)
    B, L, P = 3, 48, 17
    ids, mask = ragged_batch([48, 30, 20] if ragged else [48] * 3, L)
    key_mask = mask if ragged else None
    with torch.no_grad():
        plain = model(ids, attention_mask=key_mask, output_hidden_states=True)
        full = model(ids, attention_mask=key_mask, output_hidden_states=True, cache_prefix=P)
        live_mask = None if key_mask is None else key_mask[:, P:]
        live = model(
            ids[:, P:], attention_mask=live_mask, output_hidden_states=True, prefix_cache=full.prefix_cache
        )
    assert torch.equal(full.logits, plain.logits)  # building the cache changes nothing
    close(live.logits, full.logits[:, P:])
    close(live.last_hidden_state, full.last_hidden_state[:, P:])
    for h_live, h_full in zip(live.hidden_states, full.hidden_states, strict=True):
        close(h_live, h_full[:, P:])
    cache = full.prefix_cache
    assert (cache.prefix_len, cache.batch_size, cache.num_layers) == (P, B, 3)
    assert cache.keys[0].shape == cache.values[2].shape == (B, n_kv_heads, P, 16)
    assert cache.nbytes() == 2 * 3 * B * n_kv_heads * P * 16 * 4


def test_llada_cache_holds_post_rope_keys_and_values_of_the_prefix() -> None:
    model = tiny_llada(n_kv_heads=2)
    ids, _ = ragged_batch([40, 40], 40, seed=3)
    P = 11
    with torch.no_grad():
        cache = model(ids, cache_prefix=P).prefix_cache
        block = model.model.transformer.blocks[0]
        h = block.attn_norm(model.model.transformer.wte(ids[:, :P]))  # block 0 input of the prefix
        k = block.k_proj(h).view(2, P, 2, 16).transpose(1, 2)
        v = block.v_proj(h).view(2, P, 2, 16).transpose(1, 2)
        cos, sin = rope_cos_sin(P, 16, model.config.rope_theta)
    torch.testing.assert_close(cache.keys[0], apply_rope(k, cos, sin), rtol=0, atol=1e-6)
    torch.testing.assert_close(cache.values[0], v, rtol=0, atol=1e-6)
    assert not cache.keys[0].requires_grad and cache.keys[0].is_contiguous()


def test_llada_cached_forward_with_logits_mask_and_zero_prefix() -> None:
    model = tiny_llada()
    ids, mask = ragged_batch([32, 25], 32, seed=4)
    P = 9
    live_logits_mask = (ids[:, P:] == MASK) & mask[:, P:]
    full_logits_mask = torch.cat((torch.zeros(2, P, dtype=torch.bool), live_logits_mask), dim=1)
    with torch.no_grad():
        full = model(ids, attention_mask=mask, logits_mask=full_logits_mask, cache_prefix=P)
        live = model(
            ids[:, P:],
            attention_mask=mask[:, P:],
            logits_mask=live_logits_mask,
            prefix_cache=full.prefix_cache,
        )
        empty = model(ids, attention_mask=mask, cache_prefix=0)  # P = 0: a cache of nothing
        again = model(ids, attention_mask=mask, prefix_cache=empty.prefix_cache)
    assert live.logits.shape[0] == int(live_logits_mask.sum()) > 0
    close(live.logits, full.logits)
    close(again.logits, empty.logits)


@pytest.mark.parametrize("n_kv_heads", [4, 2])
@pytest.mark.parametrize("pad_attention", ["slots", "full"])
def test_flexmdm_cached_forward_equals_full_forward_bitwise(n_kv_heads: int, pad_attention: str) -> None:
    model = tiny_flexmdm(n_kv_heads, pad_attention)
    lengths = [40, 25, 12, 19]  # row 2 is all prompt: its length slot is live position 0
    P = min(12, *lengths)  # the smallest prompt length of the batch
    ids, mask = ragged_batch(lengths, 40, seed=5)
    t = torch.tensor([0.2, 0.5, 0.9, 0.05])
    with torch.no_grad():
        plain = model(ids, t, mask)
        full = model(ids, t, mask, cache_prefix=P)
        live = model(ids[:, P:], t, mask[:, P:], prefix_cache=full.prefix_cache)
    assert torch.equal(full.logits, plain.logits) and torch.equal(full.expected_gaps, plain.expected_gaps)
    assert live.logits.shape == (4, 40 - P, VOCAB) and live.expected_gaps.shape == (4, 40 - P + 1)
    close(live.logits, full.logits[:, P:])
    close(live.expected_gaps, full.expected_gaps[:, P:])  # live gap i = canvas gap P + i
    tails = torch.tensor(lengths) - P  # row b's tail gap: live index n_b - P
    close(
        live.expected_gaps[torch.arange(4), tails], full.expected_gaps[torch.arange(4), torch.tensor(lengths)]
    )


def test_flexmdm_cached_forward_with_logits_mask() -> None:
    model = tiny_flexmdm(n_kv_heads=2)
    ids, mask = ragged_batch([30, 16, 22], 30, seed=6)
    P, t = 16, torch.tensor([0.3, 0.6, 0.8])
    live_logits_mask = (ids[:, P:] == MASK) & mask[:, P:]
    with torch.no_grad():
        full = model(ids, t, mask, cache_prefix=P)
        full_masked = model(
            ids, t, mask, logits_mask=torch.cat((torch.zeros(3, P, dtype=torch.bool), live_logits_mask), 1)
        )
        live = model(ids[:, P:], t, mask[:, P:], logits_mask=live_logits_mask, prefix_cache=full.prefix_cache)
    assert live.logits.shape == (int(live_logits_mask.sum()), VOCAB)
    close(live.logits, full_masked.logits)
    close(live.expected_gaps, full.expected_gaps[:, P:])


def test_bf16_cached_forward_equals_full_forward() -> None:
    model = tiny_flexmdm(n_kv_heads=2).to(torch.bfloat16)
    ids, mask = ragged_batch([36, 20, 28], 36, seed=7)
    P, t = 20, torch.tensor([0.1, 0.4, 0.7])
    with torch.no_grad():
        full = model(ids, t, mask, cache_prefix=P)
        live = model(ids[:, P:], t, mask[:, P:], prefix_cache=full.prefix_cache)
    assert full.prefix_cache.keys[0].dtype == torch.bfloat16
    assert live.logits.dtype == torch.bfloat16
    # bf16 kernels may round a row by its place in a tile too: bf16-sized tolerances
    torch.testing.assert_close(live.logits, full.logits[:, P:], rtol=0, atol=3e-2)
    torch.testing.assert_close(live.expected_gaps, full.expected_gaps[:, P:], rtol=1e-2, atol=1e-2)


def test_stale_caches_give_different_finite_outputs() -> None:
    model = tiny_flexmdm(n_kv_heads=2)
    ids, mask = ragged_batch([30, 24], 30, seed=8)
    other_live, _ = ragged_batch([30, 24], 30, seed=9)
    other = torch.cat((ids[:, :24], other_live[:, 24:]), dim=1)  # same prompt, another response
    P, t = 24, torch.tensor([0.5, 0.5])
    with torch.no_grad():
        fresh = model(
            ids[:, P:], t, mask[:, P:], prefix_cache=model(ids, t, mask, cache_prefix=P).prefix_cache
        )
        cache_old_t = model(ids, torch.tensor([0.1, 0.2]), mask, cache_prefix=P).prefix_cache
        cache_old_canvas = model(other, t, mask, cache_prefix=P).prefix_cache
        stale_t = model(ids[:, P:], t, mask[:, P:], prefix_cache=cache_old_t)
        stale_canvas = model(ids[:, P:], t, mask[:, P:], prefix_cache=cache_old_canvas)
    for stale in (stale_t, stale_canvas):
        assert torch.isfinite(stale.logits).all() and torch.isfinite(stale.expected_gaps).all()
        assert (stale.logits - fresh.logits).abs().max() > 1e-4
        assert (stale.expected_gaps - fresh.expected_gaps).abs().max() > 1e-6
    # the LLaDA backbone alone: a prefix computed beside another response is stale too
    llada = tiny_llada()
    with torch.no_grad():
        exact = llada(ids, cache_prefix=P).logits[:, P:]
        stale = llada(ids[:, P:], prefix_cache=llada(other, cache_prefix=P).prefix_cache).logits
    assert torch.isfinite(stale).all() and (stale - exact).abs().max() > 1e-4


def test_select_rows_keeps_the_chosen_rows_cache() -> None:
    model = tiny_flexmdm()
    ids, mask = ragged_batch([30, 18, 26], 30, seed=10)
    P, t = 18, torch.tensor([0.2, 0.4, 0.6])
    rows = torch.tensor([2, 0])
    with torch.no_grad():
        cache = model(ids, t, mask, cache_prefix=P).prefix_cache
        full = model(ids[rows], t[rows], mask[rows])
        live = model(ids[rows, P:], t[rows], mask[rows, P:], prefix_cache=cache.select_rows(rows))
        by_mask = cache.select_rows(torch.tensor([True, False, True]))
    # a 2-row batch rounds its GEMMs differently from the 3-row batch the cache came from
    close(live.logits, full.logits[:, P:])
    close(live.expected_gaps, full.expected_gaps[:, P:])
    assert by_mask.batch_size == 2 and torch.equal(by_mask.keys[1][1], cache.keys[1][2])
    with pytest.raises(ValueError, match="outside 0..2"):
        cache.select_rows([3])
    with pytest.raises(ValueError, match=r"row mask has shape \(2,\)"):
        cache.select_rows(torch.tensor([True, False]))


def test_trunk_positions_count_fed_columns() -> None:
    llada, flex = tiny_llada(), tiny_flexmdm()
    ids, mask = ragged_batch([40, 30], 40)
    t = torch.tensor([0.5, 0.5])
    with torch.no_grad():
        full = llada(ids, attention_mask=mask, cache_prefix=25)
        live = llada(ids[:, 25:], attention_mask=mask[:, 25:], prefix_cache=full.prefix_cache)
        f_full = flex(ids, t, mask, cache_prefix=25)
        f_live = flex(ids[:, 25:], t, mask[:, 25:], prefix_cache=f_full.prefix_cache)
    assert (full.trunk_positions, live.trunk_positions) == (2 * 40, 2 * 15)
    assert (f_full.trunk_positions, f_live.trunk_positions) == (2 * 41, 2 * 16)  # + the length slot
    assert trunk_position_layers(f_live.trunk_positions, flex.config.num_hidden_layers) == 2 * 16 * 3
    with torch.no_grad():
        assert llada(ids).trunk_positions == 80 and flex(ids, t, mask).trunk_positions == 82


def test_bad_cache_arguments_raise_clear_errors() -> None:
    llada = tiny_llada(n_kv_heads=2)
    ids, mask = ragged_batch([30, 20], 30)
    with torch.no_grad():
        cache = llada(ids, cache_prefix=10).prefix_cache
        with pytest.raises(ValueError, match="built for 2 rows but the batch has 1"):
            llada(ids[:1, 10:], prefix_cache=cache)
        with pytest.raises(ValueError, match="not both"):
            llada(ids, cache_prefix=10, prefix_cache=cache)
        with pytest.raises(ValueError, match=r"cache_prefix=31 must be an int in 0\.\.30"):
            llada(ids, cache_prefix=31)
        with pytest.raises(ValueError, match="must be an int"):
            llada(ids, cache_prefix=2.0)
        with pytest.raises(ValueError, match="must be an int"):
            llada(ids, cache_prefix=True)
        as_tensor = llada(ids, cache_prefix=torch.tensor(10)).prefix_cache  # 0-dim integer tensors work
        assert as_tensor.prefix_len == 10 and type(as_tensor.prefix_len) is int
        with pytest.raises(ValueError, match="attention_mask is 0 inside the first 25"):
            llada(ids, attention_mask=mask, cache_prefix=25)
        with pytest.raises(ValueError, match=r"expected \(2, 4, 10, 16\)"):  # a GQA cache for an MHA model
            tiny_llada(n_kv_heads=4)(ids[:, 10:], prefix_cache=cache)
        with pytest.raises(ValueError, match="model has 2 blocks"):
            tiny_llada(n_kv_heads=2, n_layers=2)(ids[:, 10:], prefix_cache=cache)
        with pytest.raises(ValueError, match="computes in torch.bfloat16"):
            tiny_llada(n_kv_heads=2).to(torch.bfloat16)(ids[:, 10:], prefix_cache=cache)
        with pytest.raises(ValueError, match="must be a PrefixCache"):
            llada(ids[:, 10:], prefix_cache=(cache.keys, cache.values))
        bad = PrefixCache(cache.keys, cache.values[:2], 10, 2)
        with pytest.raises(ValueError, match="3 key / 2 value layers"):
            llada(ids[:, 10:], prefix_cache=bad)
    flex = tiny_flexmdm()
    t = torch.tensor([0.5, 0.5])
    with torch.no_grad(), pytest.raises(ValueError, match=r"exceeds the shortest row \(20 slots\)"):
        flex(ids, t, mask, cache_prefix=21)
    with pytest.raises(ValueError, match="inference-only"):  # autograd on: training never caches
        flex(ids, t, mask, cache_prefix=10)
    with pytest.raises(ValueError, match="inference-only"):
        llada(ids[:, 10:], prefix_cache=cache)
