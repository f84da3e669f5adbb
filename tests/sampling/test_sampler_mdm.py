"""LLaDA baseline sampler (docs/method.md §4.9): validation, reveal schedule, blocks, CFG, EOS,
padding, infill."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from retrofit.models.llada import LLaDAConfig, LLaDAModelLM
from retrofit.sampling import MDMSampler, MDMSamplerConfig
from retrofit.sampling.mdm import reveal_schedule

MASK, EOS, EOT, V = 60, 61, 62, 64


@pytest.fixture(scope="module")
def llada():
    torch.manual_seed(0)
    config = LLaDAConfig(d_model=32, n_heads=4, n_layers=1, mlp_hidden_size=64, vocab_size=V,
                         embedding_size=V, mask_token_id=MASK, eos_token_id=EOS, pad_token_id=EOS)  # fmt: skip
    return LLaDAModelLM(config).eval()


class Recorder:
    """Wraps a LLaDA-interface model; keeps (input_ids, attention_mask) of each call."""

    def __init__(self, model):
        self.model, self.config, self.calls = model, model.config, []

    def parameters(self):
        return self.model.parameters()

    def __call__(self, input_ids, attention_mask=None):
        self.calls.append((input_ids.clone(), attention_mask.clone()))
        return self.model(input_ids=input_ids, attention_mask=attention_mask)


class FixedLogits:
    """Returns `fn(input_ids)` as logits [B, L, V]."""

    def __init__(self, fn):
        self.fn = fn
        self.config = SimpleNamespace(mask_token_id=MASK, eos_token_id=EOS, pad_token_id=EOS)
        self.batch_sizes = []

    def __call__(self, input_ids, attention_mask=None):
        self.batch_sizes.append(input_ids.shape[0])
        return SimpleNamespace(logits=self.fn(input_ids))


def test_validation_errors_are_clear():
    with pytest.raises(ValueError, match=r"gen_length=100 must be a multiple of block_length=32"):
        MDMSamplerConfig(gen_length=100, block_length=32, steps=4)
    with pytest.raises(ValueError, match=r"steps=6 must be divisible by the number of blocks .*=4"):
        MDMSamplerConfig(gen_length=128, block_length=32, steps=6)
    with pytest.raises(ValueError, match="remasking"):
        MDMSamplerConfig(remasking="greedy")
    with pytest.raises(ValueError, match=">= 1"):
        MDMSamplerConfig(gen_length=0)
    with pytest.raises(ValueError, match="no prompts"):
        MDMSampler(FixedLogits(lambda ids: torch.zeros(*ids.shape, V))).sample([])


def test_reveal_schedule_spec_vector():
    """docs/method.md §7.5: m = 10, s = 4 -> [3, 3, 2, 2]."""
    assert reveal_schedule(torch.tensor([10, 8, 3]), 4).tolist() == [[3, 3, 2, 2], [2, 2, 2, 2], [1, 1, 1, 0]]


@pytest.mark.parametrize("remasking", ["low_confidence", "random"])
def test_reveals_exactly_the_schedule_block_by_block(llada, remasking):
    """G = 16, block 8, 6 steps: per block [3, 3, 2]; masks before each pass 16, 13, 10, 8, 5, 2; only
    the current block changes; rows are left-aligned (prompt at 0, its blocks right after it, pad at
    the end with attention 0), so each row's blocks are offset by its own prompt length."""
    rec = Recorder(llada)
    config = MDMSamplerConfig(gen_length=16, block_length=8, steps=6, remasking=remasking, stop_at_eos=False)
    prompts = [[1, 2, 3], [4]]
    out = MDMSampler(rec, config).sample(prompts, generator=torch.Generator().manual_seed(0))
    masks = [int((ids[0] == MASK).sum()) for ids, _ in rec.calls]
    assert masks == [16, 13, 10, 8, 5, 2] and out.num_forward_passes == 6
    ids, attn = rec.calls[0]
    assert ids[1].tolist() == [4] + [MASK] * 16 + [EOS, EOS] and attn[1].tolist() == [1] * 17 + [0, 0]
    for (before, _), (after, _) in zip(rec.calls[:3], rec.calls[1:4]):
        assert torch.equal(before[0, 11:], after[0, 11:])  # second block untouched during the first
        assert torch.equal(before[1, 9:], after[1, 9:])  # (row 1's blocks start at its column 1)
    assert not torch.equal(rec.calls[0][0][1, 1:9], rec.calls[3][0][1, 1:9])
    assert out.sequences[0][:3] == [1, 2, 3] and out.sequences[1][:1] == [4]
    assert all(len(g) == 16 and MASK not in g for g in out.generated)


def test_cfg_combines_conditional_and_unconditional_logits():
    """cond prefers token 2 (1.2 vs 1.0), uncond (prompt masked) token 2 more (1.5 vs 0): with w = 1,
    l_u + 2 (l_c - l_u) gives token 1 (2.0 vs 0.9); without CFG token 2 wins. One batched pass."""

    def fn(ids):
        logits = torch.zeros(*ids.shape, V)
        cond = (ids[:, :1] != MASK).float()[:, :, None]  # prompt present?
        logits[..., 1] = cond[..., 0] * 1.0
        logits[..., 2] = cond[..., 0] * 1.2 + (1 - cond[..., 0]) * 1.5
        return logits

    for w, token in ((0.0, 2), (1.0, 1)):
        model = FixedLogits(fn)
        config = MDMSamplerConfig(gen_length=4, block_length=4, steps=2, cfg_scale=w)
        out = MDMSampler(model, config).sample([[5, 6]], 2)
        assert out.generated == [[token] * 4] * 2 and out.num_forward_passes == 2
        assert model.batch_sizes == [4 if w else 2] * 2


def test_eos_cut_and_eos_options():
    """Token EOS is the favourite at generated positions >= 2 (docs/method.md §4.9 step 5 options)."""

    def fn(ids):
        logits = torch.zeros(*ids.shape, V)
        logits[..., 7] = 1.0
        logits[:, 4:, EOS] = 5.0  # prompt of 2 -> generated index >= 2
        return logits

    base = MDMSamplerConfig(gen_length=6, block_length=6, steps=6)
    out = MDMSampler(FixedLogits(fn), base).sample([[5, 6]])
    assert out.generated == [[7, 7]] and out.sequences == [[5, 6, 7, 7]] and out.lengths.tolist() == [4]
    assert MDMSampler(FixedLogits(fn), MDMSamplerConfig(**{**base.__dict__, "logits_eos_inf": True})).sample(
        [[5, 6]]
    ).generated == [[7] * 6]
    rec_order = []

    def fn_recording(ids):
        rec_order.append((ids[0, 2:] != MASK).tolist())
        return fn(ids)

    config = MDMSamplerConfig(**{**base.__dict__, "confidence_eos_eot_inf": True, "stop_at_eos": False})
    out = MDMSampler(FixedLogits(fn_recording), config).sample([[5, 6]])
    assert rec_order[2] == [True, True, False, False, False, False]  # 7s (finite conf) revealed first


def test_gumbel_temperature_samples_softmax():
    """One masked slot, logits log p with p = (.5, .3, .2): temperature 1 draws follow p; 20 000 rows,
    each frequency within 4 s.e. Temperature 0 is the argmax."""
    p = torch.tensor([0.5, 0.3, 0.2])

    def fn(ids):
        logits = torch.full((*ids.shape, V), -1e9)
        logits[..., :3] = torch.log(p)
        return logits

    config = MDMSamplerConfig(gen_length=1, block_length=1, steps=1, temperature=1.0)
    out = MDMSampler(FixedLogits(fn), config).sample([[5]], 20_000, torch.Generator().manual_seed(0))
    freq = torch.bincount(torch.tensor([g[0] for g in out.generated]), minlength=3).double() / 20_000
    se = (p * (1 - p) / 20_000).sqrt().double()
    assert bool(((freq - p.double()).abs() < 4 * se).all())
    greedy = MDMSampler(FixedLogits(fn), MDMSamplerConfig(gen_length=1, block_length=1, steps=1))
    assert greedy.sample([[5]], 3).generated == [[0]] * 3


def test_infill_in_place_and_fim_format(llada):
    sampler = MDMSampler(llada, MDMSamplerConfig(gen_length=8, block_length=8, steps=4, stop_at_eos=False))
    out = sampler.infill(
        [[1, 2], [3]], [[4], [5, 6, 7]], middle_length=5, generator=torch.Generator().manual_seed(0)
    )
    assert out.sequences[0][:2] == [1, 2] and out.sequences[0][-1:] == [4]
    assert out.sequences[1][:1] == [3] and out.sequences[1][-3:] == [5, 6, 7]
    assert [len(g) for g in out.generated] == [5, 5] and out.suffix_lengths.tolist() == [1, 3]
    with pytest.raises(ValueError, match="needs a tokenizer"):
        sampler.infill([[1]], [[2]])
    from retrofit.data.infill_format import fim_prompt_ids
    from retrofit.models.tokenizer import build_tokenizer

    tok = build_tokenizer()
    pre, suf = "def f(x):\n", "    return y\n"
    enc = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    fim = MDMSampler(FixedLogits(lambda ids: torch.zeros(*ids.shape, V)), sampler.config, tokenizer=tok)
    out = fim.infill([enc(pre)], [enc(suf)])
    assert out.sequences[0][: out.prompt_lengths[0]] == fim_prompt_ids(tok, pre, suf)
