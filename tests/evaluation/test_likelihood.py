"""Tests of retrofit.evaluation.likelihood: LLaDA MC ELBO and FlexMDM ELBO
(docs/method.md §3.4, §4.10, §7.5)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from retrofit.evaluation.likelihood import flexmdm_nll, greedy_match, llada_mask_counts, llada_nll
from retrofit.models.flexmdm import FlexMDMModel
from retrofit.models.llada import LLaDAConfig, LLaDAModelLM

VOCAB, MASK, PAD = 48, 40, 41


def tiny_llada(seed: int = 0) -> LLaDAModelLM:
    config = LLaDAConfig(
        d_model=32, n_heads=4, n_kv_heads=4, n_layers=2, mlp_hidden_size=64, vocab_size=VOCAB,
        embedding_size=VOCAB, mask_token_id=MASK, eos_token_id=PAD, pad_token_id=PAD,
    )  # fmt: skip
    torch.manual_seed(seed)
    return LLaDAModelLM(config).eval()


class UniformLLaDA(nn.Module):
    """p(v | x) = 1/V at every position: `model(x).logits` only (exercises the full-logits path)."""

    def __init__(self, vocab: int):
        super().__init__()
        self.vocab = vocab
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> SimpleNamespace:
        return SimpleNamespace(logits=torch.zeros(*x.shape, self.vocab))


class FullLogits(nn.Module):
    """Hides `compute_logits`: the estimator must then index the model's full logits."""

    def __init__(self, model: LLaDAModelLM):
        super().__init__()
        self.inner = model

    def forward(self, x: torch.Tensor) -> SimpleNamespace:
        return SimpleNamespace(logits=self.inner(x).logits)


class UniformFlexMDM(nn.Module):
    """Uniform token posterior and g_hat = 0 under an insertion schedule with alpha ~= 1 on [0, 1].

    Geometric(1e-8, 1e-9) inserts every token before t = 0 (P(T1 > 0) ~ 1e-8), so the gaps are 0,
    D(0, 0) = 0, and FlexMDM reduces to an MDM with linear unmasking: the exact ELBO of the
    uniform model is then l ln V (the l masked tokens each cost ln V, weighted by 1/(1-t) against
    the masking probability 1-t).
    """

    def __init__(self, vocab: int):
        super().__init__()
        self.vocab = vocab
        self.dummy = nn.Parameter(torch.zeros(1))
        self.config = SimpleNamespace(
            insertion_schedule={"name": "geometric", "min": 1e-8, "max": 1e-9},
            unmasking_schedule="linear",
            mask_token_id=MASK,
            pad_token_id=PAD,
        )

    def forward(
        self, input_ids, t, attention_mask=None, logits_mask=None, token_targets=None, head_chunk=None
    ):
        """FlexMDMModel's interface: per-slot cross-entropy ln V at the mask slots (uniform logits)."""
        n = int(logits_mask.sum())
        ce = torch.nn.functional.cross_entropy(torch.zeros(n, self.vocab), token_targets[logits_mask.bool()])
        return SimpleNamespace(
            logits=None,
            token_ce=ce.expand(n),
            expected_gaps=torch.zeros(input_ids.shape[0], input_ids.shape[1] + 1),
        )


def test_llada_mask_counts_spec_vector() -> None:
    assert llada_mask_counts(8, 4, 3) == [3, 5, 7, 1]  # docs/method.md §7.5
    assert llada_mask_counts(1, 3, 1) == [1, 1, 1]
    assert llada_mask_counts(5, 5, 5) == [5, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="1 <= k <= T"):
        llada_mask_counts(4, 2, 5)


def test_llada_nll_uniform_model_is_T_ln_V_exactly() -> None:
    target = [3, 7, 1, 9, 2, 2, 5]
    gen = torch.Generator().manual_seed(0)
    nll = llada_nll(
        UniformLLaDA(VOCAB), [11, 12], target, mask_id=MASK, mc_num=24, batch_size=8, generator=gen
    )
    assert nll == pytest.approx(len(target) * math.log(VOCAB), rel=1e-6)


def test_llada_nll_finite_deterministic_and_head_only_at_masks() -> None:
    model = tiny_llada()
    prompt, target = [1, 2, 3, 4], [5, 6, 7, 8, 9, 10]

    def run(m, seed: int) -> float:
        return llada_nll(m, prompt, target, mask_id=MASK, mc_num=16, batch_size=8,
                         generator=torch.Generator().manual_seed(seed))  # fmt: skip

    a, b, c = run(model, 1), run(model, 1), run(model, 2)
    assert math.isfinite(a) and a >= 0 and a == b and a != c
    # The LM head computed only at masked positions equals indexing the full logits.
    assert run(FullLogits(model), 1) == pytest.approx(a, rel=1e-5)
    assert llada_nll(model, prompt, [], mask_id=MASK) == 0.0


def test_flexmdm_nll_uniform_model_matches_closed_form() -> None:
    ell = 12
    gen = torch.Generator().manual_seed(0)
    nll = flexmdm_nll(UniformFlexMDM(VOCAB), [], list(range(ell)), num_t=1024, batch_size=256, generator=gen)
    # Stratified MC: relative standard error ~ sqrt(ln(1024) / (1024 * ell)) ~ 2.4 %; 4 sigma.
    assert nll == pytest.approx(ell * math.log(VOCAB), rel=0.10)


def test_flexmdm_nll_real_model_finite_nonnegative_deterministic() -> None:
    model = FlexMDMModel.from_llada(tiny_llada(), seed=0, canvas_width=32).eval()
    prompt, target = [1, 2, 3], [4, 5, 6, 7, 8]

    def run(seed: int) -> float:
        return flexmdm_nll(
            model, prompt, target, num_t=8, batch_size=4, generator=torch.Generator().manual_seed(seed)
        )

    a, b, c = run(3), run(3), run(4)
    assert math.isfinite(a) and a >= 0 and a == b and a != c
    assert flexmdm_nll(model, prompt, []) == 0.0


def test_greedy_match_true_iff_argmax_reproduces_target() -> None:
    model = tiny_llada()
    prompt = [1, 2, 3]
    x = torch.tensor([prompt + [MASK] * 4])
    argmax = model(x).logits[0, 3:].argmax(-1).tolist()
    assert greedy_match(model, prompt, argmax, mask_id=MASK, flexmdm=False)
    other = [(v + 1) % VOCAB for v in argmax]
    assert not greedy_match(model, prompt, other, mask_id=MASK, flexmdm=False)
    flex = FlexMDMModel.from_llada(tiny_llada(), seed=0, canvas_width=32).eval()
    pred = flex(x, torch.ones(1)).logits[0, 3:].argmax(-1).tolist()
    assert greedy_match(flex, prompt, pred, mask_id=MASK, flexmdm=True)
