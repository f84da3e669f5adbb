"""Multi-span infilling: given middle tokens (anchors) in both samplers (`middles=`).

The FlexMDM keeps the anchors clean and in order and inserts only between prefix and suffix; the
MDM fills exactly the mask slots of its template and keeps every other template token.
"""

from __future__ import annotations

import pytest
import torch

from retrofit.models import FlexMDMModel, LLaDAConfig, LLaDAModelLM
from retrofit.sampling import FlexMDMSampler, FlexMDMSamplerConfig, MDMSampler, MDMSamplerConfig

V, MASK, PAD = 24, 22, 23


def _trunk() -> LLaDAModelLM:
    torch.manual_seed(0)
    config = LLaDAConfig(d_model=32, n_heads=4, n_layers=1, mlp_hidden_size=64, vocab_size=V, embedding_size=V,
                         mask_token_id=MASK, eos_token_id=PAD, pad_token_id=PAD)  # fmt: skip
    return LLaDAModelLM(config).eval()


def _is_subsequence(small: list[int], big: list[int]) -> bool:
    it = iter(big)
    return all(any(x == y for y in it) for x in small)


def test_flexmdm_middles_keep_anchors_and_grow_between_them() -> None:
    model = FlexMDMModel.from_llada(_trunk(), seed=0, canvas_width=32, length_scale=2.0).eval()
    prefixes, anchors, suffixes = [[1, 2], [3]], [[5, 6, 7], [8]], [[9], []]
    config = FlexMDMSamplerConfig(steps=8, max_middle=12, confidence="random")
    out = FlexMDMSampler(model, config).infill(
        prefixes, suffixes, 3, torch.Generator().manual_seed(0), anchors
    )
    grew = 0
    for b, seq in enumerate(out.sequences):
        p, a, s = prefixes[b // 3], anchors[b // 3], suffixes[b // 3]
        assert seq[: len(p)] == p and seq[len(seq) - len(s) :] == s
        middle = out.generated[b]
        assert middle == seq[len(p) : len(seq) - len(s)]
        assert _is_subsequence(a, middle) and MASK not in middle and PAD not in middle
        assert len(a) <= len(middle) <= len(a) + 12
        grew += len(middle) > len(a)
    assert grew > 0  # an untrained head with scale 2 predicts ~1.4 tokens per gap: something is inserted
    # no middles == empty middles, draw for draw
    plain = FlexMDMSampler(model, config).infill(prefixes, suffixes, 1, torch.Generator().manual_seed(4))
    empty = FlexMDMSampler(model, config).infill(
        prefixes, suffixes, 1, torch.Generator().manual_seed(4), [[], []]
    )
    assert plain.sequences == empty.sequences
    with pytest.raises(ValueError, match="middles"):
        FlexMDMSampler(model, config).infill(prefixes, suffixes, middles=[[1]])


def test_mdm_template_fills_exactly_the_masks() -> None:
    sampler = MDMSampler(_trunk(), MDMSamplerConfig(gen_length=6, block_length=6, steps=3, stop_at_eos=False))
    templates = [[5, MASK, MASK, 6, MASK, PAD], [7, MASK, 8, MASK, MASK, MASK]]
    out = sampler.infill(
        [[1, 2], [3]], [[4], []], generator=torch.Generator().manual_seed(0), middles=templates
    )
    for b, template in enumerate(templates):
        middle = out.generated[b]
        assert len(middle) == len(template) and MASK not in middle
        assert all(m == t for m, t in zip(middle, template) if t != MASK)
    assert out.sequences[0][:2] == [1, 2] and out.sequences[0][-1] == 4
    assert out.num_forward_passes == 3
    with pytest.raises(ValueError, match="one length"):
        sampler.infill([[1], [2]], [[], []], middles=[[MASK], [MASK, MASK]])
    with pytest.raises(ValueError, match="without middle_length"):
        sampler.infill([[1]], [[]], middle_length=2, middles=[[MASK]])
