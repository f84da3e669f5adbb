"""Threshold unmasking and the prompt cache (issue #14 item 1), both samplers, tiny fp32 models.

Exactness: cache_refresh 1 is the sampler without a cache (bitwise: it never runs a cached
forward); a threshold no confidence reaches, cache off, is the sampler with neither option.
Closed forms: the trunk positions a cached run feeds, and the forward passes of a LLaDA run whose
threshold every slot clears (one per block).
"""

from __future__ import annotations

import dataclasses
import random

import pytest
import torch

from retrofit.models import FlexMDMModel, LLaDAConfig, LLaDAModelLM
from retrofit.sampling import FlexMDMSampler, FlexMDMSamplerConfig, MDMSampler, MDMSamplerConfig

V, MASK, PAD = 48, 46, 47
LENGTHS = (9, 6, 12, 7)  # ragged prompts; P = 6 is cached
SEED = 3


def _trunk(n_kv_heads: int = 4) -> LLaDAModelLM:
    torch.manual_seed(0)
    config = LLaDAConfig(d_model=64, n_heads=4, n_kv_heads=n_kv_heads, n_layers=2, mlp_hidden_size=128,
                         vocab_size=V, embedding_size=V, mask_token_id=MASK, eos_token_id=PAD,
                         pad_token_id=PAD)  # fmt: skip
    return LLaDAModelLM(config).eval()


@pytest.fixture(scope="module")
def prompts() -> list[list[int]]:
    rng = random.Random(0)
    return [[rng.randrange(40) for _ in range(n)] for n in LENGTHS]


@pytest.fixture(scope="module")
def flexmdm() -> FlexMDMSampler:
    model = FlexMDMModel.from_llada(_trunk(n_kv_heads=2), canvas_width=40, length_scale=3.0, seed=0).eval()
    exact = dict(unmask_threshold=None, prompt_cache=False)  # the sampler without either option
    return FlexMDMSampler(model, FlexMDMSamplerConfig(steps=12, max_length=40, temperature=1.0, **exact))


@pytest.fixture(scope="module")
def llada() -> MDMSampler:
    config = MDMSamplerConfig(gen_length=16, block_length=8, steps=8, temperature=1.0, unmask_threshold=None,
                              prompt_cache=False)  # fmt: skip
    return MDMSampler(_trunk(), config)


def _with(sampler, **options):
    return dataclasses.replace(sampler, config=dataclasses.replace(sampler.config, **options))


def _sample(sampler, prompts):
    return sampler.sample(prompts, num_samples=2, seed=SEED)


def test_cache_refresh_1_is_the_sampler_without_a_cache(flexmdm, llada, prompts):
    for sampler in (flexmdm, llada):
        plain = _sample(sampler, prompts)
        cached = _sample(_with(sampler, prompt_cache=True, cache_refresh=1), prompts)
        assert cached.sequences == plain.sequences
        assert cached.num_forward_passes == plain.num_forward_passes
        assert cached.trunk_positions == plain.trunk_positions > 0


def test_flexmdm_infill_cache_refresh_1_is_exact(flexmdm):
    prefixes, suffixes = [[1, 2, 3, 4], [5, 6, 7, 8, 9]], [[10, 11], [12]]
    plain = flexmdm.infill(prefixes, suffixes, num_samples=2, seed=SEED)
    cached = _with(flexmdm, prompt_cache=True, cache_refresh=1).infill(
        prefixes, suffixes, num_samples=2, seed=SEED
    )
    assert cached.sequences == plain.sequences


def test_an_unreachable_threshold_is_the_sampler_without_one(flexmdm, llada, prompts):
    for sampler in (flexmdm, llada):
        plain = _sample(sampler, prompts)
        # random tiny models: no top probability reaches 0.999 (checked below on one forward)
        assert _sample(_with(sampler, unmask_threshold=0.999), prompts).sequences == plain.sequences
    with torch.no_grad():
        logits = llada.model(torch.tensor([prompts[0] + [MASK] * 8])).logits
    assert float(torch.softmax(logits.float(), -1).max()) < 0.999


def test_llada_cache_feeds_the_prompt_once_per_refresh(llada, prompts):
    """Closed form: L = max_b(P_b) + G columns, P = min_b P_b; refresh calls feed 2B x L, cached 2B x (L - P)."""
    k = 3
    out = _sample(_with(llada, prompt_cache=True, cache_refresh=k), prompts)
    rows, width, P = 2 * len(prompts), max(LENGTHS) + 16, min(LENGTHS)
    calls = out.num_forward_passes
    refreshes = -(-calls // k)
    assert out.trunk_positions == refreshes * rows * width + (calls - refreshes) * rows * (width - P)
    assert out.trunk_positions < _sample(llada, prompts).trunk_positions
    assert all(len(g) <= 16 and MASK not in g for g in out.generated)  # cut at the first EOS


def test_flexmdm_stale_cache_still_samples_valid_rows(flexmdm, prompts):
    plain = _sample(flexmdm, prompts)
    out = _sample(_with(flexmdm, prompt_cache=True, cache_refresh=4), prompts)
    assert out.trunk_positions < plain.trunk_positions
    for seq, prompt in zip(out.sequences, [p for p in prompts for _ in range(2)]):
        assert seq[: len(prompt)] == prompt and MASK not in seq and len(seq) <= 40


def test_llada_threshold_every_slot_clears_ends_each_block_in_one_pass(llada, prompts):
    out = _sample(_with(llada, unmask_threshold=1e-9), prompts)
    assert out.num_forward_passes == 16 // 8  # one pass per block instead of 8 // 2 = 4
    assert all(len(g) <= 16 and MASK not in g for g in out.generated)  # cut at the first EOS


def test_flexmdm_threshold_every_slot_clears_leaves_only_new_insertions(flexmdm, prompts):
    """With tau -> 0 every eligible mask is unmasked at once: after each step the only masks are
    the ones that step inserted (masks after = length after - length before)."""
    out = _with(flexmdm, unmask_threshold=1e-9, trace=True).sample(prompts, num_samples=1, seed=SEED)
    tr = out.trace
    for i in range(1, len(tr)):
        if tr.labels[i] == "step":
            masks = tr.lengths[i] - tr.num_clean[i]
            assert torch.equal(masks, tr.lengths[i] - tr.lengths[i - 1])


def test_threshold_rows_do_not_depend_on_the_batch(llada, prompts):
    """Blocks that end early skip steps; the per-row streams stay aligned to (block, step)."""
    fast = _with(llada, unmask_threshold=0.2)
    together = fast.sample(prompts, num_samples=1, seed=SEED)
    alone = [
        fast.sample([p], num_samples=1, seed=SEED, example_ids=[i]).generated[0]
        for i, p in enumerate(prompts)
    ]
    assert together.generated == alone


@pytest.mark.parametrize(
    "bad", [dict(unmask_threshold=0.0), dict(unmask_threshold=1.5), dict(cache_refresh=0)]
)
def test_bad_options_are_refused(bad):
    for cls in (FlexMDMSamplerConfig, MDMSamplerConfig):
        with pytest.raises(ValueError, match="unmask_threshold must be in|cache_refresh must be >= 1"):
            cls(**bad)


def test_the_defaults_are_the_fast_settings_and_exact_sampler_turns_them_off(llada):
    from retrofit.sampling.fast_options import exact_sampler

    for config in (FlexMDMSamplerConfig(), MDMSamplerConfig()):
        assert (config.unmask_threshold, config.prompt_cache, config.cache_refresh) == (0.9, False, 4)
    assert FlexMDMSamplerConfig().steps == 32
    fast = _with(llada, unmask_threshold=0.5, prompt_cache=True, cache_refresh=3)
    exact = exact_sampler(fast)
    assert (exact.config.unmask_threshold, exact.config.prompt_cache, exact.config.steps) == (None, False, 8)
