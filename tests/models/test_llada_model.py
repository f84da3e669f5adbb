"""Native LLaDA model: 8B parameter layout, attention math, RoPE, hidden states
(docs/method.md §8.2, §8.3)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from retrofit.models.llada import LLaDAConfig, LLaDAModelLM, apply_rope, rope_cos_sin

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
LLADA_8B_PARAMETERS = 8_015_581_184


def make_model(n_kv_heads: int = 4, seed: int = 0, n_layers: int = 2) -> LLaDAModelLM:
    """fp32 tiny LLaDA: d 32, 4 heads (head dim 8), MLP 64, vocab 128; init_std 0.1 so that
    attention patterns are far from uniform and every test below is sensitive."""
    config = LLaDAConfig(
        d_model=32, n_heads=4, n_kv_heads=n_kv_heads, n_layers=n_layers, mlp_hidden_size=64,
        vocab_size=128, embedding_size=128, mask_token_id=126, eos_token_id=127, pad_token_id=127,
        init_std=0.1,
    )  # fmt: skip
    torch.manual_seed(seed)
    return LLaDAModelLM(config).eval()


def reference_forward(model: LLaDAModelLM, ids: torch.Tensor, key_mask: torch.Tensor | None = None):
    """Plain-softmax LLaDA forward written from docs/method.md §8.3 (no SDPA, no library RoPE helpers)."""
    cfg, tr = model.config, model.model.transformer
    B, L = ids.shape
    hd = cfg.d_model // cfg.n_heads
    rep = cfg.n_heads // cfg.n_kv_heads

    def rms(x, w):
        return w * (x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + cfg.rms_norm_eps))

    k_idx = torch.arange(hd // 2, dtype=torch.float64)
    inv_freq = cfg.rope_theta ** (-2 * k_idx / hd)  # [hd/2]
    ang = torch.arange(L, dtype=torch.float64)[:, None] * inv_freq  # [L, hd/2]
    cos, sin = ang.cos().float(), ang.sin().float()

    def rope(x):  # [B, h, L, hd]: NeoX half split, (x1, x2) -> (x1 cos - x2 sin, x2 cos + x1 sin)
        x1, x2 = x[..., : hd // 2], x[..., hd // 2 :]
        return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)

    x = tr.wte.weight[ids]
    for blk in tr.blocks:
        h = rms(x, blk.attn_norm.weight)
        q = rope((h @ blk.q_proj.weight.T).view(B, L, cfg.n_heads, hd).transpose(1, 2))
        k = rope((h @ blk.k_proj.weight.T).view(B, L, cfg.n_kv_heads, hd).transpose(1, 2))
        v = (h @ blk.v_proj.weight.T).view(B, L, cfg.n_kv_heads, hd).transpose(1, 2)
        head_to_kv = torch.arange(cfg.n_heads) // rep  # query head h reads kv head h // rep
        k, v = k[:, head_to_kv], v[:, head_to_kv]
        scores = q @ k.transpose(-1, -2) / math.sqrt(hd)  # [B, H, L, L]
        if key_mask is not None:
            scores = scores.masked_fill(~key_mask.bool()[:, None, None, :], float("-inf"))
        att = scores.softmax(-1) @ v  # [B, H, L, hd]
        x = x + att.transpose(1, 2).reshape(B, L, cfg.d_model) @ blk.attn_out.weight.T
        h = rms(x, blk.ff_norm.weight)
        gate, up = h @ blk.ff_proj.weight.T, h @ blk.up_proj.weight.T
        x = x + (F.silu(gate) * up) @ blk.ff_out.weight.T
    return rms(x, tr.ln_f.weight) @ tr.ff_out.weight.T


def test_8b_config_on_meta_matches_official_weight_map():
    expected = json.loads((FIXTURES / "llada8b_weight_map.json").read_text())
    with torch.device("meta"):
        model = LLaDAModelLM(LLaDAConfig())
    assert sum(p.numel() for p in model.parameters()) == LLADA_8B_PARAMETERS
    assert expected["total_parameters"] == LLADA_8B_PARAMETERS
    got = {name: list(t.shape) for name, t in model.state_dict().items()}
    assert got == expected["tensors"]


def test_attention_is_bidirectional():
    model = make_model()
    ids = torch.randint(0, 128, (1, 12), generator=torch.Generator().manual_seed(1))
    changed = ids.clone()
    changed[0, -1] = (ids[0, -1] + 1) % 128
    with torch.no_grad():
        a, b = model(ids).logits, model(changed).logits
    assert (a[0, 0] - b[0, 0]).abs().max() > 1e-3  # the first position sees the last token


def test_padding_mask_leaves_real_positions_unchanged():
    model = make_model()
    gen = torch.Generator().manual_seed(2)
    ids = torch.randint(0, 128, (2, 16), generator=gen)
    mask = torch.ones(2, 16, dtype=torch.long)
    mask[0, 10:] = 0  # row 0: 10 real tokens, then 6 arbitrary pad ids
    with torch.no_grad():
        padded = model(ids, attention_mask=mask).logits
        alone = model(ids[:1, :10]).logits
        full_row1 = model(ids[1:]).logits
    torch.testing.assert_close(padded[0, :10], alone[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(padded[1], full_row1[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("n_kv_heads", [4, 2, 1])
@pytest.mark.parametrize("masked", [False, True])
def test_sdpa_equals_plain_softmax_attention(n_kv_heads, masked):
    model = make_model(n_kv_heads=n_kv_heads)
    gen = torch.Generator().manual_seed(3)
    ids = torch.randint(0, 128, (2, 9), generator=gen)
    mask = torch.ones(2, 9, dtype=torch.long)
    if masked:
        mask[1, 5:] = 0
    with torch.no_grad():
        got = model(ids, attention_mask=mask if masked else None).logits
        want = reference_forward(model, ids, mask if masked else None)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_rope_two_dims_is_rotation_by_position_times_theta_pow_0():
    # head_dim 2: one frequency theta^0 = 1, so position p rotates (a, b) by p radians.
    cos, sin = rope_cos_sin(5, 2, theta=500000.0)
    x = torch.tensor([0.3, -1.2]).expand(1, 1, 5, 2)  # [B, H, L, 2]
    out = apply_rope(x, cos, sin)[0, 0]  # [5, 2]
    for p in range(5):
        rot = torch.tensor([[math.cos(p), -math.sin(p)], [math.sin(p), math.cos(p)]])
        torch.testing.assert_close(out[p], rot @ torch.tensor([0.3, -1.2]), atol=1e-6, rtol=0)


def test_rope_table_frequencies():
    # head_dim 4, theta 100: inv_freq = [1, 100^-0.5 = 0.1], duplicated as [f || f].
    cos, sin = rope_cos_sin(3, 4, theta=100.0)
    angles = torch.tensor([[0.0, 0.0], [1.0, 0.1], [2.0, 0.2]]).repeat(1, 2)
    torch.testing.assert_close(cos, angles.cos(), atol=1e-7, rtol=0)
    torch.testing.assert_close(sin, angles.sin(), atol=1e-7, rtol=0)


def test_output_hidden_states_layout():
    model = make_model(n_layers=3)
    ids = torch.randint(0, 128, (2, 7), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        out = model(ids, output_hidden_states=True)
        tr = model.model.transformer
        cos, sin = rope_cos_sin(7, 8, model.config.rope_theta)
        after_block0 = tr.blocks[0](out.hidden_states[0], cos, sin)
    assert len(out.hidden_states) == model.config.n_layers + 1
    torch.testing.assert_close(out.hidden_states[0], tr.wte(ids), atol=0, rtol=0)  # input of block 0
    torch.testing.assert_close(out.hidden_states[1], after_block0, atol=1e-6, rtol=0)
    torch.testing.assert_close(out.hidden_states[-1], out.last_hidden_state, atol=0, rtol=0)  # post-ln_f
    torch.testing.assert_close(model.compute_logits(out.hidden_states[-1]), out.logits, atol=0, rtol=0)
    assert model(ids, return_logits=False).logits is None


def _grads(model: LLaDAModelLM, ids: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
    model.zero_grad()
    logits = model(ids).logits
    F.cross_entropy(logits.flatten(0, 1), targets.flatten()).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("use_reentrant", [True, False])
def test_gradient_checkpointing_gives_equal_gradients(use_reentrant):
    model = make_model().train()
    gen = torch.Generator().manual_seed(5)
    ids, targets = (
        torch.randint(0, 128, (2, 10), generator=gen),
        torch.randint(0, 128, (2, 10), generator=gen),
    )
    plain = _grads(model, ids, targets)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": use_reentrant})
    checkpointed = _grads(model, ids, targets)
    assert all(block.gradient_checkpointing for block in model.model.transformer.blocks)
    assert plain.keys() == checkpointed.keys()
    for name in plain:
        assert plain[name].abs().sum() > 0, name
        torch.testing.assert_close(checkpointed[name], plain[name], atol=1e-6, rtol=0, msg=name)


def test_bf16_forward_runs_and_tracks_fp32():
    model = make_model()
    ids = torch.randint(0, 128, (2, 8), generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        ref = model(ids).logits
        out = model.to(torch.bfloat16)(ids).logits
    assert out.dtype == torch.bfloat16 and out.shape == (2, 8, 128)
    assert torch.isfinite(out).all()
    assert (out.float() - ref).abs().max() < 0.05 * ref.abs().max()


def test_logits_mask_selects_rows_of_the_full_logits() -> None:
    model = make_model().eval()
    ids = torch.randint(0, model.config.vocab_size, (3, 9), generator=torch.Generator().manual_seed(1))
    select = torch.rand(3, 9, generator=torch.Generator().manual_seed(2)) < 0.4
    with torch.no_grad():
        full = model(ids).logits
        part = model(ids, logits_mask=select).logits
    assert part.shape == (int(select.sum()), full.shape[-1])
    torch.testing.assert_close(part, full[select], atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="logits_mask has shape"):
        model(ids, logits_mask=select[:, :5])
