"""FlexMDM sampler with a tiny real model: protection, trimming, the length cap, modes, trace."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from retrofit.sampling import FlexMDMSampler, FlexMDMSamplerConfig, plot_trace
from retrofit.sampling.flexmdm_config import CONFIDENCE_METHODS

VOCAB, MASK, PAD = 16, 14, 15


class TinyFlexMDM(nn.Module):
    """Embedding + one bidirectional attention layer whose keys are the n_b slots + the length slot.

    Row b's outputs at positions 0..n_b depend only on its first n_b tokens and t, not on the canvas
    width, like FlexMDMModel's "slots" attention (docs/method.md §2.2).
    """

    def __init__(self, seed: int = 0, gap_scale: float = 3.0, max_len: int = 128):
        super().__init__()
        torch.manual_seed(seed)
        d = 32
        self.emb, self.pos = nn.Embedding(VOCAB, d), nn.Embedding(max_len + 1, d)
        self.time = nn.Linear(1, d)
        self.attn = nn.MultiheadAttention(d, 4, batch_first=True)
        self.head, self.gap = nn.Linear(d, VOCAB), nn.Linear(d, 1)
        self.gap_scale = gap_scale
        self.config = SimpleNamespace(
            insertion_schedule={"name": "geometric", "min": 10.0, "max": 0.01},
            unmasking_schedule={"name": "linear"},
            mask_token_id=MASK,
            pad_token_id=PAD,
            sampler_defaults={},
        )
        self.eval()

    def forward(self, input_ids, t, attention_mask):
        B, L = input_ids.shape
        n = attention_mask.sum(-1)
        pos = torch.arange(L + 1)
        x = nn.functional.pad(input_ids, (0, 1), value=PAD)
        x = torch.where(pos[None, :] == n[:, None], PAD, x)  # the length slot
        h = self.emb(x) + self.pos(pos)[None] + self.time(t.float()[:, None])[:, None, :]  # [B, L+1, d]
        a, _ = self.attn(h, h, h, key_padding_mask=pos[None, :] > n[:, None], need_weights=False)
        h = h + a
        gaps = self.gap_scale * nn.functional.softplus(self.gap(h)).squeeze(-1)
        return SimpleNamespace(logits=self.head(h[:, :L]), expected_gaps=gaps)


class Recorder:
    """Wraps a model and keeps every call's (canvas, n, logits, gaps)."""

    def __init__(self, model):
        self.model, self.config, self.calls = model, model.config, []

    def parameters(self):
        return self.model.parameters()

    def __call__(self, input_ids, t, attention_mask):
        out = self.model(input_ids=input_ids, t=t, attention_mask=attention_mask)
        n = attention_mask.sum(-1)
        self.calls.append((input_ids.clone(), n, out.logits.detach(), out.expected_gaps.detach()))
        return out


def _is_subsequence(small: list[int], big: list[int]) -> bool:
    it = iter(big)
    return all(any(x == y for y in it) for x in small)


PROMPTS = [[1, PAD, 2], [], [MASK, 3, 4, PAD, 5]]  # pad and mask ids inside prompts are just tokens


@pytest.mark.parametrize("method", CONFIDENCE_METHODS)
def test_prompt_is_bit_identical_for_every_confidence(method):
    """docs/method.md §7.3.1-3: prompts unchanged, no mask / pad emitted, n non-decreasing, and the clean
    tokens of each step stay (in order) in the next step (no remasking)."""
    config = FlexMDMSamplerConfig(steps=12, max_length=20, confidence=method, trace=True)
    out = FlexMDMSampler(TinyFlexMDM(), config).sample(PROMPTS, 3, torch.Generator().manual_seed(0))
    for b, seq in enumerate(out.sequences):
        prompt = PROMPTS[b // 3]
        assert seq[: len(prompt)] == prompt and out.prompt_lengths[b] == len(prompt)
        assert MASK not in out.generated[b] and PAD not in out.generated[b]
        assert len(seq) == out.lengths[b] <= 20
    tr = out.trace
    assert tr.labels[0] == "init" and tr.labels[-1] == "fill" and len(tr) >= 12 + 2
    for i in range(len(tr) - 1):
        assert bool((tr.lengths[i + 1] >= tr.lengths[i]).all())
        for b in range(len(out.sequences)):
            now, nxt = tr.sequence(i, b), tr.sequence(i + 1, b)
            prompt = PROMPTS[b // 3]
            assert now[: len(prompt)] == prompt
            clean = [x for x in now[len(prompt) :] if x != MASK]
            assert _is_subsequence(clean, [x for x in nxt[len(prompt) :] if x != MASK])


@pytest.mark.parametrize("method", CONFIDENCE_METHODS)
def test_infill_prefix_and_suffix_are_bit_identical(method):
    prefixes, suffixes = [[1, 2, MASK], [PAD]], [[3, PAD, 4], [5, 6]]
    config = FlexMDMSamplerConfig(
        steps=10, max_middle=9, confidence=method, sliding_window=True, alpha_win=0.5
    )
    out = FlexMDMSampler(TinyFlexMDM(), config).infill(
        prefixes, suffixes, 4, torch.Generator().manual_seed(1)
    )
    for b, seq in enumerate(out.sequences):
        p, s = prefixes[b // 4], suffixes[b // 4]
        assert seq[: len(p)] == p and seq[len(seq) - len(s) :] == s
        assert out.generated[b] == seq[len(p) : len(seq) - len(s)] and len(out.generated[b]) <= 9
        assert MASK not in out.generated[b]


def _real_flexmdm():
    """A grafted FlexMDMModel on a tiny random LLaDA trunk (2 layers, d 64), "slots" attention."""
    from retrofit.models import FlexMDMModel, LLaDAConfig, LLaDAModelLM

    torch.manual_seed(0)
    trunk = LLaDAConfig(d_model=64, n_heads=4, n_layers=2, mlp_hidden_size=128, vocab_size=VOCAB,
                        embedding_size=VOCAB, mask_token_id=MASK, eos_token_id=PAD, pad_token_id=PAD)  # fmt: skip
    return FlexMDMModel.from_llada(LLaDAModelLM(trunk), seed=0, canvas_width=40, length_scale=1.0).eval()


@pytest.mark.parametrize(
    "make_model", [lambda: TinyFlexMDM(seed=3, gap_scale=1.0), _real_flexmdm], ids=["tiny", "graft"]
)
def test_trimmed_run_equals_full_width_run(make_model):
    """Same seed, draw_at_full_width: per-step logits (j < n) and ĝ (j <= n) agree within 1e-5 and the
    samples are identical; the trimmed run calls the model on fewer columns."""
    runs = {}
    for trim in (True, False):
        rec = Recorder(make_model())
        config = FlexMDMSamplerConfig(steps=16, max_length=40, trim=trim, draw_at_full_width=True)
        out = FlexMDMSampler(rec, config).sample(PROMPTS, 2, torch.Generator().manual_seed(4))
        runs[trim] = (out, rec.calls)
    (trimmed, calls_t), (full, calls_f) = runs[True], runs[False]
    assert trimmed.sequences == full.sequences
    assert torch.equal(trimmed.dropped_insertions, full.dropped_insertions)
    assert len(calls_t) == len(calls_f) == trimmed.num_forward_passes
    assert all(c[0].shape[1] == max(int(c[1].max()), 1) for c in calls_t) and calls_t[0][0].shape[1] == 5
    assert all(c[0].shape[1] == 40 for c in calls_f)
    for (ids_t, n_t, lg_t, g_t), (ids_f, n_f, lg_f, g_f) in zip(calls_t, calls_f):
        W = ids_t.shape[1]
        assert torch.equal(n_t, n_f) and torch.equal(ids_t, ids_f[:, :W])
        slot = torch.arange(W)[None, :] < n_t[:, None]
        gap = torch.arange(W + 1)[None, :] <= n_t[:, None]
        assert (lg_t - lg_f[:, :W])[slot].abs().max() < 1e-5
        assert (g_t - g_f[:, : W + 1])[gap].abs().max() < 1e-5


def test_masked_logits_path_gives_the_same_samples():
    """FlexMDMModel takes logits_mask: logits only at unmaskable slots give the same samples."""
    from retrofit.sampling.batch import accepts_argument

    model = _real_flexmdm()
    assert accepts_argument(model, "logits_mask") and not accepts_argument(Recorder(model), "logits_mask")
    assert FlexMDMSamplerConfig.from_model(model).max_length == 40  # the model's canvas_width
    outs = []
    for masked in (True, False):
        config = FlexMDMSamplerConfig(steps=8, max_length=30, masked_logits=masked)
        outs.append(
            FlexMDMSampler(model, config).infill([[1, 2]], [[3]], 3, torch.Generator().manual_seed(0))
        )
    assert outs[0].sequences == outs[1].sequences


def test_length_cap_keeps_what_fits_and_counts_drops():
    model = TinyFlexMDM(gap_scale=500.0)  # every step proposes far more than fits
    config = FlexMDMSamplerConfig(steps=4, max_length=12, max_middle=5)
    sampler = FlexMDMSampler(model, config)
    out = sampler.sample([[1, 2], [3]], generator=torch.Generator().manual_seed(0))
    assert out.lengths.tolist() == [12, 12] and bool((out.dropped_insertions > 0).all())
    out = sampler.infill([[1]], [[2, 3]], 2, torch.Generator().manual_seed(0))
    assert [len(g) for g in out.generated] == [5, 5] and bool((out.dropped_insertions > 0).all())
    with pytest.raises(ValueError, match="max_length=12"):
        sampler.sample([list(range(13))])
    with pytest.raises(ValueError, match="no prompts"):
        sampler.sample([])


def test_reference_mode_and_forward_pass_counts():
    """reference: S passes, last step = argmax fill without insertion; default: S steps, final
    insertion pass, and a fill pass only when the final insertion changed the canvas."""
    model = TinyFlexMDM()
    base = FlexMDMSamplerConfig(steps=6, max_length=16, trace=True)
    ref = FlexMDMSampler(model, base).with_options(reference=True)
    out = ref.sample([[1]], 2, torch.Generator().manual_seed(0))
    assert out.num_forward_passes == 6 and out.trace.labels[-2:] == ["step", "fill"]
    assert torch.equal(out.trace.lengths[-1], out.trace.lengths[-2])  # no insertion in the last step
    out = FlexMDMSampler(model, base).sample([[1]], 2, torch.Generator().manual_seed(0))
    inserted = bool((out.trace.lengths[-2] > out.trace.lengths[-3]).any())
    assert out.trace.labels[-2:] == ["final_insert", "fill"]
    assert out.num_forward_passes == 6 + 1 + int(inserted)
    no_final = FlexMDMSampler(model, base).with_options(final_insertion=False)
    assert no_final.sample([[1]], generator=torch.Generator().manual_seed(0)).num_forward_passes == 7


def test_config_from_model_defaults_and_validation():
    model = TinyFlexMDM()
    model.config.sampler_defaults = {
        "steps": 7,
        "max_length": 16,
        "confidence": "top_prob",
        "banned_token_ids": [0],
    }
    sampler = FlexMDMSampler(model)
    assert (sampler.config.steps, sampler.config.confidence, sampler.config.banned_token_ids) == (
        7,
        "top_prob",
        (0,),
    )
    assert FlexMDMSamplerConfig.from_model(model, steps=3).steps == 3
    out = sampler.sample([[1]], 4, torch.Generator().manual_seed(0))
    assert all(0 not in g for g in out.generated)
    model.config.sampler_defaults = {"stepz": 7}
    with pytest.raises(ValueError, match="stepz"):
        FlexMDMSampler(model)
    for bad in ({"confidence": "max"}, {"top_p": 0.0}, {"steps": 0}, {"fill": "greedy"}):
        with pytest.raises(ValueError, match="FlexMDMSamplerConfig"):
            FlexMDMSamplerConfig(**bad)
    del model.config.insertion_schedule
    with pytest.raises(ValueError, match="insertion_schedule"):
        FlexMDMSampler(model, FlexMDMSamplerConfig(steps=2)).sample([[1]])


def test_trace_plot_writes_png(tmp_path):
    config = FlexMDMSamplerConfig(steps=5, max_length=16, trace=True)
    out = FlexMDMSampler(TinyFlexMDM(), config).sample(None, 3, torch.Generator().manual_seed(0))
    assert [len(x) for x in (out.trace.times, out.trace.canvases, out.trace.num_clean)] == [
        len(out.trace)
    ] * 3
    assert out.trace.num_clean[-1].tolist() == out.lengths.tolist()  # no mask left after the fill
    path = plot_trace(out.trace, tmp_path / "sub" / "trace.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
