"""The FlexMDM sampler driven by an exact (oracle) posterior model reproduces the data law.

Data law (document of the choice). Length l ~ p(l) on 1..24 (a fixed bimodal pmf), a component
c ~ pi = (0.6, 0.4), then l tokens i.i.d. from q_c over 4 content ids (0..3; mask = 4, pad = 5):
q_0 = (.55, .25, .15, .05), q_1 = (.05, .15, .25, .55). The token law is exchangeable: it does not
depend on the position, so the posterior stays closed form; a token written into the wrong slot is
therefore not detectable here (the slot arithmetic is pinned exactly by tests/sampling/test_sampling_steps.py
and the protection tests). What the mixture does detect is the joint structure: tokens of one
sequence are correlated through c.

Posterior of the interpolant (docs/method.md §1.3-1.4). Each token is present at time t with prob. α(t),
independently; given presence it is masked or clean with probabilities that do not depend on l, c
or its value. For x_t with n slots (k clean, values v_1..v_k):

    P(x_t | l, c) = C(l, n) α^n (1-α)^(l-n) m^(n-k) s^k Π_i q_c(v_i)

so  P(l | x_t) ∝ p(l) C(l, n) (1-α(t))^(l-n)   (depends on n and t only),
    P(c | x_t) ∝ pi_c Π_i q_c(v_i)               (depends on the clean tokens only),
and given (l, c) all C(l, n) placements are equally likely: the l - n deleted tokens form a uniform
composition over the n + 1 gaps, so E[g_j | x_t] = E[l - n | n, t] / (n + 1) for every gap, and a
masked slot's token has the predictive Σ_c P(c | x_t) q_c(v). The oracle returns exactly these
(log-predictive as logits, mask / pad at -inf). With a prompt / prefix / suffix the same holds for
the middle, with n the number of middle slots and gaps only between prefix and suffix.

Length process. Given the canvas, the sampler's insertions in one step are independent
Poisson(ĝ_j h_α(t) dt) per allowed gap, so the total is Poisson(E[l - n | n, t] h_α(t) dt): the
length is a Markov chain on n whatever the tokens are. Its exact law after S steps, the cap
(n' = min(n + K, cap)) and the final insertion Poisson(E[l - n | n, 1]) is propagated below by
matrix products; the sampled lengths are compared with it by a chi-square test.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy.stats import chisquare, poisson

from retrofit.interpolant import sample_interpolant
from retrofit.sampling import FlexMDMSampler, FlexMDMSamplerConfig
from retrofit.schedules import make_schedule

MASK, PAD, VOCAB, CONTENT = 4, 5, 6, 4
GEOMETRIC = {"name": "geometric", "min": 10.0, "max": 0.01}
_ell = np.arange(25)
P_LEN = np.where(
    _ell >= 1, 1 + 3 * np.exp(-((_ell - 6.0) ** 2) / 8) + 2 * np.exp(-((_ell - 18.0) ** 2) / 10), 0.0
)
P_LEN = P_LEN / P_LEN.sum()
PI = np.array([0.6, 0.4])
Q = np.array([[0.55, 0.25, 0.15, 0.05], [0.05, 0.15, 0.25, 0.55]])
CAP = 32  # max generated length: P(overflow) is tiny and, when it happens, part of the chain


def expected_deleted(n: torch.Tensor, alpha: float, p: np.ndarray) -> torch.Tensor:
    """E[l - n | n, t] with P(l | n, t) ∝ p(l) C(l, n) (1 - α)^(l - n); 0 where no l >= n exists."""
    ell = torch.arange(len(p), dtype=torch.float64)[None, :]
    n = n.to(torch.float64)[:, None]
    d = ell - n
    log_w = torch.log(torch.as_tensor(p, dtype=torch.float64))[None, :] + torch.lgamma(ell + 1)
    log_w = log_w - torch.lgamma(n + 1) - torch.lgamma(d.clamp_min(0) + 1)
    log_w = log_w + torch.where(d > 0, d * math.log1p(-alpha) if alpha < 1 else -math.inf, 0.0)
    log_w = torch.where(d >= 0, log_w, -math.inf)
    ok = torch.isfinite(log_w).any(-1)
    post = torch.softmax(torch.where(ok[:, None], log_w, 0.0), dim=-1)
    return torch.where(ok, (post * d.clamp_min(0)).sum(-1), 0.0)


class MixtureOracle:
    """Exact posterior model of the data law above (see the module docstring).

    Args:
        pre, suf: [B] protected lengths at the front / end (prompt or prefix, suffix).
        insertion_schedule: α used by the posterior (and stored in config for the sampler).
    """

    def __init__(self, pre=0, suf=0, insertion_schedule=GEOMETRIC, unmasking_schedule="linear", law=None):
        self.pre, self.suf = torch.as_tensor(pre), torch.as_tensor(suf)
        self.law = P_LEN if law is None else law  # read at call time, never bound at import
        self.alpha = make_schedule(insertion_schedule)
        self.log_q = torch.log(torch.tensor(Q))
        self.config = SimpleNamespace(
            insertion_schedule=insertion_schedule,
            unmasking_schedule=unmasking_schedule,
            mask_token_id=MASK,
            pad_token_id=PAD,
            sampler_defaults={},
        )

    def __call__(self, input_ids, t, attention_mask):
        B, W = input_ids.shape
        assert bool((t == t[0]).all())
        n = attention_mask.sum(-1)
        pre, suf = self.pre.expand(B), self.suf.expand(B)
        n_mid = n - pre - suf
        table = expected_deleted(
            torch.arange(int(n_mid.max()) + 1), float(self.alpha.alpha(float(t[0]))), self.law
        )
        per_gap = table[n_mid] / (n_mid + 1)  # [B]
        j = torch.arange(W + 1)[None, :]
        allowed = (j >= pre[:, None]) & (j <= (n - suf)[:, None])
        gaps = torch.where(allowed, per_gap[:, None], 0.0)  # [B, W + 1]
        middle = (j[:, :W] >= pre[:, None]) & (j[:, :W] < (n - suf)[:, None])
        counts = torch.nn.functional.one_hot(input_ids.clamp(max=CONTENT), CONTENT + 1)[..., :CONTENT]
        counts = (counts * middle[..., None]).sum(1).double()  # [B, 4] clean tokens per value
        post_c = torch.softmax(torch.log(torch.tensor(PI))[None, :] + counts @ self.log_q.T, dim=-1)
        predictive = post_c @ torch.tensor(Q)  # [B, 4]
        logits = torch.full((B, W, VOCAB), -math.inf, dtype=torch.float64)
        logits[:, :, :CONTENT] = torch.log(predictive)[:, None, :]
        return SimpleNamespace(logits=logits, expected_gaps=gaps)


def _kernel(lam: np.ndarray, cap: int) -> np.ndarray:
    """T[n, n'] of n' = min(n + K, cap), K ~ Poisson(lam[n])."""
    n = np.arange(cap + 1)[:, None]
    k = np.arange(cap + 1)[None, :]
    body = np.where(k < cap - n, poisson.pmf(k, lam[:, None]), 0.0)
    T = np.zeros((cap + 1, cap + 1))
    rows, ks = np.nonzero(k < cap - n)
    T[rows, rows + ks] = body[rows, ks]
    T[np.arange(cap + 1), cap] += poisson.sf(cap - np.arange(cap + 1) - 1, lam)
    return T


def propagated_length_law(steps, hazard=GEOMETRIC, final_insertion=True, regular=None, cap=CAP, law=None):
    """Exact pmf over n = 0..cap of the sampler's length after the run (ĝ from the geometric α and
    the length law ``law``, default P_LEN)."""
    law = P_LEN if law is None else law
    alpha, h = make_schedule(GEOMETRIC), make_schedule(hazard)
    ns = torch.arange(cap + 1)
    pmf = np.zeros(cap + 1)
    pmf[0] = 1.0
    for i in range(steps if regular is None else regular):
        t = i / steps
        lam = expected_deleted(ns, float(alpha.alpha(t)), law).numpy() * float(h.rate(t)) / steps
        pmf = pmf @ _kernel(lam, cap)
    if final_insertion:
        pmf = pmf @ _kernel(expected_deleted(ns, float(alpha.alpha(1.0)), law).numpy(), cap)
    return pmf


def pooled_chisquare(lengths: np.ndarray, pmf: np.ndarray) -> float:
    """p-value of a chi-square test, adjacent bins pooled until each expects >= 5."""
    observed, expected = np.bincount(lengths, minlength=len(pmf)).astype(float), pmf * len(lengths)
    pooled_o, pooled_e, o_acc, e_acc = [], [], 0.0, 0.0
    for o, e in zip(observed, expected):
        o_acc, e_acc = o_acc + o, e_acc + e
        if e_acc >= 5:
            pooled_o.append(o_acc)
            pooled_e.append(e_acc)
            o_acc = e_acc = 0.0
    pooled_o[-1] += o_acc
    pooled_e[-1] += e_acc
    return float(chisquare(pooled_o, np.array(pooled_e) * sum(pooled_o) / sum(pooled_e)).pvalue)


def _data_pmf() -> np.ndarray:
    out = np.zeros(CAP + 1)
    out[: len(P_LEN)] = P_LEN
    return out


def test_oracle_is_the_posterior_of_the_project_interpolant():
    """Calibration against retrofit.interpolant at t = 0.4 (geometric α, linear β), 60 000 rows.

    For each n: mean of Σ_j g_j equals the oracle's E[l - n | n, t] (tolerance 4 s.e. + 0.02), and
    over all masked slots the summed oracle predictive equals the target counts (4 s.e.).
    """
    B, g = 60_000, torch.Generator().manual_seed(5)
    ell = torch.multinomial(torch.tensor(P_LEN), B, replacement=True, generator=g)
    comp = torch.multinomial(torch.tensor(PI), B, replacement=True, generator=g)
    x1 = torch.multinomial(torch.tensor(Q)[comp], 24, replacement=True, generator=g)
    x1_mask = torch.arange(24)[None, :] < ell[:, None]
    x1 = x1.masked_fill(~x1_mask, PAD)
    t = torch.full((B,), 0.4)
    s = sample_interpolant(x1, x1_mask, t, torch.zeros_like(x1_mask), GEOMETRIC, "linear", MASK, PAD, g)
    out = MixtureOracle()(s.x_t, t, s.slot_mask.long())
    deleted = (s.gaps * s.gap_mask).sum(-1).double()
    predicted = (out.expected_gaps * s.gap_mask).sum(-1)
    for n in range(0, 20):
        rows = s.lengths == n
        if int(rows.sum()) < 500:
            continue
        se = deleted[rows].std() / math.sqrt(int(rows.sum()))
        assert abs(deleted[rows].mean() - predicted[rows][0]) < 4 * se + 0.02, n
    probs = torch.softmax(out.logits[s.mask_slots], dim=-1)[:, :CONTENT]  # [N, 4]
    hits = torch.nn.functional.one_hot(s.targets[s.mask_slots], CONTENT).double()
    se = (probs * (1 - probs)).sum(0).sqrt()
    assert bool(((hits.sum(0) - probs.sum(0)).abs() < 4 * se).all())


@pytest.fixture(scope="module")
def oracle_run():
    """20 000 unconditional samples, S = 50, default confidence (prob_diff), sampled fill."""
    config = FlexMDMSamplerConfig(steps=50, max_length=CAP)
    out = FlexMDMSampler(MixtureOracle(), config).sample(None, 20_000, torch.Generator().manual_seed(0))
    return out


def test_length_law_matches_the_propagated_chain(oracle_run):
    """(a) Chi-square of 20 000 lengths against the exact discretised law at S = 50: p > 1e-3."""
    assert oracle_run.num_forward_passes in (51, 52)  # S steps, final insertion, fill (if needed)
    lengths = oracle_run.lengths.numpy()
    pmf = propagated_length_law(50)
    assert pooled_chisquare(lengths, pmf) > 1e-3
    assert lengths.min() >= 0 and lengths.max() <= CAP


def test_propagated_law_converges_and_reference_is_short():
    """(b) At S = 256 with the training schedule the exact law is within TV 0.01 of p(l); the
    reference sampler (linear hazards on the geometric-trained ĝ, no last-step or final
    insertion) is visibly short: mean length below the data mean by > 3 tokens, TV > 0.25."""
    target = _data_pmf()
    n = np.arange(CAP + 1)
    ours = propagated_length_law(256)
    assert 0.5 * np.abs(ours - target).sum() < 0.01
    reference = propagated_length_law(256, hazard="linear", final_insertion=False, regular=255)
    assert (target @ n) - (reference @ n) > 3.0
    assert 0.5 * np.abs(reference - target).sum() > 0.25


def test_token_frequencies_and_component_structure(oracle_run):
    """(c) Token law of the samples of (a).

    Per position class (first, interior, last slot) the frequencies equal the mixture marginal
    pi·Q (tolerance 0.015, about 4 s.e. for ~20 000 first / last tokens); pooled over all tokens
    within 0.006 (about 3.5 s.e. of the component-clustered mean). The component structure: the
    joint law of (first, last) for l >= 2 equals Σ_c pi_c q_c q_cᵀ within 0.012 per cell; it
    differs from the independent product by up to 0.05, so a sampler that ignored the clean
    tokens would fail. (Tau-leaping draws simultaneous tokens independently, an O(dt) bias.)
    """
    marginal = PI @ Q
    gen = [np.asarray(g, dtype=np.int64) for g in oracle_run.generated]
    assert all(((g >= 0) & (g < CONTENT)).all() for g in gen)  # never the mask or pad id
    long_rows = [g for g in gen if len(g) >= 2]
    classes = {
        "first": np.array([g[0] for g in long_rows]),
        "last": np.array([g[-1] for g in long_rows]),
        "interior": np.concatenate([g[1:-1] for g in long_rows]),
    }
    for name, toks in classes.items():
        freq = np.bincount(toks, minlength=CONTENT) / len(toks)
        assert np.abs(freq - marginal).max() < 0.015, (name, freq)
    pooled = np.bincount(np.concatenate(gen), minlength=CONTENT) / sum(map(len, gen))
    assert np.abs(pooled - marginal).max() < 0.006
    joint = np.zeros((CONTENT, CONTENT))
    np.add.at(joint, (classes["first"], classes["last"]), 1.0)
    joint /= joint.sum()
    exact = sum(PI[c] * np.outer(Q[c], Q[c]) for c in range(2))
    assert np.abs(exact - np.outer(marginal, marginal)).max() > 0.04
    assert np.abs(joint - exact).max() < 0.012


def test_final_fill_samples_where_argmax_would_bias():
    """With a near-zero unmasking hazard (geometric(10, 5): ∫h ≈ 0.01) the fill writes almost
    every token, each from the predictive given no clean token, pi·Q. Sampled fill: frequencies
    within 0.01 of pi·Q (4 000 rows, ~47 000 tokens). Argmax fill: > 95 % are token 0, the mode."""
    marginal = PI @ Q
    slow = {"name": "geometric", "min": 10.0, "max": 5.0}
    freqs = {}
    for fill in ("sample", "argmax"):
        config = FlexMDMSamplerConfig(
            steps=20, max_length=CAP, fill=fill, unmasking_schedule=slow, confidence="random"
        )
        out = FlexMDMSampler(MixtureOracle(), config).sample(None, 4000, torch.Generator().manual_seed(1))
        toks = np.concatenate([np.asarray(g, dtype=np.int64) for g in out.generated])
        freqs[fill] = np.bincount(toks, minlength=CONTENT) / len(toks)
    assert np.abs(freqs["sample"] - marginal).max() < 0.01
    assert freqs["argmax"][0] > 0.95


def test_infill_middle_length_law_and_protection():
    """Infilling with the oracle (random = ancestral slot choice): prefix/suffix of different
    lengths per problem, the middle's length law equals the same propagated chain (chi-square
    p > 1e-3, 10 000 rows, S = 50) and every prefix and suffix is bit-identical."""
    prefixes, suffixes, k = [[0, 1, 2], [3]], [[3, 3], [1, 0, 2, 2]], 5000
    pre = torch.tensor([len(p) for p in prefixes]).repeat_interleave(k)
    suf = torch.tensor([len(s) for s in suffixes]).repeat_interleave(k)
    config = FlexMDMSamplerConfig(steps=50, max_middle=CAP, confidence="random")
    out = FlexMDMSampler(MixtureOracle(pre, suf), config).infill(
        prefixes, suffixes, k, torch.Generator().manual_seed(2)
    )
    for b, seq in enumerate(out.sequences):
        p, s = prefixes[b // k], suffixes[b // k]
        assert seq[: len(p)] == p and seq[len(seq) - len(s) :] == s
    middle = np.array([len(g) for g in out.generated])
    assert pooled_chisquare(middle, propagated_length_law(50)) > 1e-3


def test_the_length_law_is_a_parameter_not_an_import_time_default():
    """Swapping the law changes the oracle's gaps and the propagated chain (it used to be bound as
    a default argument at import, so a swap silently kept the old law)."""
    short = np.zeros(25)
    short[2] = 1.0  # every sequence has 2 tokens
    n, alpha = torch.tensor([0, 1]), 0.5
    assert torch.allclose(expected_deleted(n, alpha, short), torch.tensor([2.0, 1.0], dtype=torch.float64))
    assert not torch.allclose(expected_deleted(n, alpha, P_LEN), expected_deleted(n, alpha, short))
    assert (
        propagated_length_law(50, law=short)[2] > 0.9 > propagated_length_law(50)[2]
    )  # S = 50: some rows stop short
    oracle = MixtureOracle(law=short)
    out = oracle(torch.full((1, 1), MASK), torch.tensor([0.5]), torch.ones(1, 1, dtype=torch.long))
    assert float(out.expected_gaps[0, :2].sum()) == pytest.approx(1.0)  # one more token in 2 gaps
