"""Tests of retrofit.training.collator and retrofit.bench.trim_cost.

* Trim: trimmed and untrimmed batches give the same FlexMDM loss (atol 1e-5) with a tiny
  FlexMDMModel (default "slots" attention: row b attends to keys 0..n_b), and trimming never drops
  a slot with a target or a gap.
* Banding: over one optimizer step (2 ranks x 4 accumulation steps) the times hit every stratum of
  plain stratified sampling exactly once, one band per micro-step on all ranks.
* Computed-token fraction on full-length x1 (l = L = 64, geometric(10, 0.01), B = 4, G = 4),
  counting each micro-step at its slowest rank, against the closed form of trim_cost:
  W = 2: banded 0.709, research per-rank strata 0.988; W = 16: banded 0.750, per-rank 1.000.
  Measured means must lie within 5 % of the closed form.
"""

from __future__ import annotations

import math

import pytest
import torch

from retrofit.bench.trim_cost import expected_computed_fraction
from retrofit.interpolant import IGNORE_INDEX
from retrofit.loss import flexmdm_loss, mdm_loss
from retrofit.models import FlexMDMModel, LLaDAConfig, LLaDAModelLM
from retrofit.training.collator import FlexMDMCollator, MDMCollator, pad_x1

PAD, MASK, VOCAB = 1, 95, 96
T_MIN = 1e-3
KEYS = {
    "input_ids", "attention_mask", "t", "mask_slots", "targets", "gaps", "gap_mask",
    "weight_unmask", "weight_insert", "num_x1_tokens", "num_computed_tokens",
}  # fmt: skip


def features(lengths: list[int], prompts: list[int] | None = None, seed: int = 0) -> list[dict]:
    gen = torch.Generator().manual_seed(seed)
    prompts = prompts or [0] * len(lengths)
    return [
        {
            "input_ids": torch.randint(2, MASK, (n,), generator=gen).tolist(),
            "prompt_length": p,
            "infill_cutoff": -1,
        }
        for n, p in zip(lengths, prompts)
    ]


def collator(**kwargs) -> FlexMDMCollator:
    kwargs = {"mask_id": MASK, "pad_id": PAD, "canvas_width": 48, "seed": 7, **kwargs}
    return FlexMDMCollator(**kwargs)


@pytest.fixture(scope="module")
def model() -> FlexMDMModel:
    config = LLaDAConfig(
        d_model=32, n_heads=4, n_kv_heads=4, n_layers=2, mlp_hidden_size=64, vocab_size=VOCAB,
        embedding_size=VOCAB, mask_token_id=MASK, pad_token_id=PAD, eos_token_id=PAD, bos_token_id=0,
        max_sequence_length=128,
    )  # fmt: skip
    torch.manual_seed(0)
    # float64: the comparison then tests trimming, not float32 rounding of a loss of about 60
    flex = FlexMDMModel.from_llada(LLaDAModelLM(config), seed=0, canvas_width=48).double().eval()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # non-zero AdaLN so that t matters too
        for p in flex.adaln.parameters():
            p.copy_(0.2 * torch.randn(p.shape, generator=gen))
    return flex


def loss_of(model: FlexMDMModel, batch: dict) -> torch.Tensor:
    with torch.no_grad():
        out = model(batch["input_ids"], batch["t"].double(), attention_mask=batch["attention_mask"])
    return flexmdm_loss(
        out.logits, batch["targets"], out.expected_gaps, batch["gaps"], batch["gap_mask"],
        batch["weight_unmask"], batch["weight_insert"], normalizer=48, mask_slots=batch["mask_slots"],
    ).total  # fmt: skip


@pytest.mark.parametrize("mode", ["stratified", "banded", "uniform"])
def test_trimmed_batch_gives_the_untrimmed_loss_and_keeps_every_target_and_gap(model, mode) -> None:
    feats = features([40, 12, 30, 5], prompts=[6, 0, 3, 0])
    trimmed_c, full_c = (
        collator(time_mode=mode, grad_accum=2),
        collator(time_mode=mode, grad_accum=2, trim=False),
    )
    for _ in range(3):
        trimmed, full = trimmed_c(feats), full_c(feats)
        width = trimmed["input_ids"].shape[1]
        assert set(trimmed) == KEYS and "labels" not in trimmed
        assert width == int(full["attention_mask"].sum(1).max()) < 48 and full["input_ids"].shape[1] == 48
        # nothing with a target or a gap lies beyond the cut; the kept part is identical
        assert not bool(full["mask_slots"][:, width:].any()) and not bool(
            full["gap_mask"][:, width + 1 :].any()
        )
        assert (
            bool((full["targets"][:, width:] == IGNORE_INDEX).all())
            and float(full["gaps"][:, width + 1 :].sum()) == 0
        )
        for key in ("input_ids", "attention_mask", "mask_slots", "targets"):
            assert torch.equal(trimmed[key], full[key][:, :width]), key
        for key in ("gaps", "gap_mask"):
            assert torch.equal(trimmed[key], full[key][:, : width + 1]), key
        assert (
            int(trimmed["num_computed_tokens"]) == 4 * width + 4
            and int(full["num_computed_tokens"]) == 4 * 49
        )
        assert int(trimmed["num_x1_tokens"]) == 87
        assert torch.allclose(loss_of(model, trimmed), loss_of(model, full), atol=1e-5, rtol=0)


def times_of_one_optimizer_step(mode: str, world: int, accum: int, batch: int) -> torch.Tensor:
    """t [accum, world, batch] of one optimizer step, one collator per rank."""
    cols = [collator(time_mode=mode, world_size=world, rank=r, grad_accum=accum) for r in range(world)]
    feats = features([20] * batch)
    return torch.stack([torch.stack([c(feats)["t"] for c in cols]) for _ in range(accum)])


def test_banded_times_cover_the_stratified_strata_once_with_one_band_per_micro_step() -> None:
    world, accum, batch = 2, 4, 4
    n = world * accum * batch
    for mode in ("banded", "stratified"):
        t = times_of_one_optimizer_step(mode, world, accum, batch).double()
        tau = (t - T_MIN) / (1 - T_MIN)
        strata = torch.floor(tau * n).long()
        if mode == "banded":  # every stratum of the global batch exactly once
            assert sorted(strata.flatten().tolist()) == list(range(n))
            bands = torch.floor(tau * accum).long()  # [accum, world, batch]
            assert all(len(set(bands[k].flatten().tolist())) == 1 for k in range(accum))
            assert sorted(bands[:, 0, 0].tolist()) == list(range(accum))
        else:  # the research code: each micro-step spans [0, 1), rank r in [r/W, (r+1)/W)
            rank_of = torch.floor(tau * world).long()
            assert torch.equal(rank_of, torch.arange(world)[None, :, None].expand_as(rank_of))
    again = times_of_one_optimizer_step("banded", world, accum, batch)
    assert torch.equal(again, times_of_one_optimizer_step("banded", world, accum, batch))  # deterministic


def measured_fraction(
    mode: str, world: int, accum: int, steps: int, width: int = 64, batch: int = 4
) -> float:
    """Computed / full-width slots, each micro-step counted at its slowest rank."""
    cols = [
        collator(time_mode=mode, world_size=world, rank=r, grad_accum=accum, canvas_width=width)
        for r in range(world)
    ]
    feats = features([width] * batch, seed=3)
    slowest = [max(int(c(feats)["num_computed_tokens"]) for c in cols) for _ in range(steps * accum)]
    return sum(slowest) / (len(slowest) * batch * (width + 1))


@pytest.mark.parametrize(
    ("world", "steps", "banded", "research"), [(2, 40, 0.709, 0.988), (16, 10, 0.750, 1.000)]
)
def test_banded_computed_fraction_matches_closed_form_and_beats_per_rank_strata(
    world, steps, banded, research
):
    closed = {
        m: expected_computed_fraction("geometric", [64], 64, m, 4, world, 4) for m in ("banded", "stratified")
    }
    assert closed["banded"] == pytest.approx(banded, abs=1e-3)
    assert closed["stratified"] == pytest.approx(research, abs=1e-3)
    for mode in ("banded", "stratified"):
        assert measured_fraction(mode, world, 4, steps) == pytest.approx(closed[mode], rel=0.05), mode
    assert closed["banded"] < 0.8 * closed["stratified"]


def test_closed_form_limits() -> None:
    # one micro-step per optimizer step: a band is the whole of [0, 1), as in per-rank stratification
    one = [expected_computed_fraction("linear", [30, 60], 64, m, 4, 2, 1) for m in ("banded", "stratified")]
    assert one[0] == pytest.approx(one[1], rel=1e-12)
    # one row, uniform t, linear alpha, l = L: E[max(n, 1)] = l/2 + P(n = 0) (about 1/(l+1))
    single = expected_computed_fraction("linear", [64], 64, "uniform", 1, 1, 1, t_min=0.0)
    assert single == pytest.approx((32 + 1 / 65 + 1) / 65, rel=1e-3)
    with pytest.raises(ValueError, match="within"):
        expected_computed_fraction("linear", [65], 64, "banded", 1, 1, 1)


def test_counter_determinism_and_resume() -> None:
    feats = features([10, 20, 15])
    first, second = collator(time_mode="banded", grad_accum=3), collator(time_mode="banded", grad_accum=3)
    outs = [first(feats) for _ in range(4)]
    assert all(
        torch.equal(a["input_ids"], b["input_ids"]) for a, b in zip(outs, (second(feats) for _ in range(4)))
    )
    resumed = collator(time_mode="banded", grad_accum=3)
    resumed.load_state_dict({"calls": 2})
    assert first.state_dict() == {"calls": 4}
    assert torch.equal(resumed(feats)["t"], outs[2]["t"]) and not torch.equal(outs[0]["t"], outs[1]["t"])
    evaluation = first.eval_copy()
    assert torch.equal(evaluation(feats)["t"], outs[0]["t"]) and first.calls == 4 and evaluation.calls == 1
    other_rank = collator(time_mode="banded", grad_accum=3, world_size=2, rank=1)
    assert not torch.equal(other_rank(feats)["t"], outs[0]["t"])


def test_given_times_and_errors() -> None:
    out = collator()([{**f, "t": 0.25} for f in features([10, 20])])
    assert out["t"].tolist() == [0.25, 0.25]
    # docs/method.md §1.2 table, h(0.25)
    assert out["weight_insert"][0].item() == pytest.approx(2.496903, rel=1e-5)
    assert out["weight_unmask"][0].item() == pytest.approx(1 / (0.75 + 1e-6), rel=1e-6)
    with pytest.raises(ValueError, match="canvas_width is 48"):
        collator()(features([49]))
    with pytest.raises(ValueError, match="mask_id != pad_id"):
        FlexMDMCollator(mask_id=PAD, pad_id=PAD)
    with pytest.raises(ValueError, match="time mode"):
        collator(time_mode="random")
    x1, x1_mask = pad_x1([{"input_ids": [5, PAD, 6]}, {"input_ids": []}], PAD, 4)
    assert x1.tolist() == [[5, PAD, 6, PAD], [PAD] * 4]  # a pad id inside a sample stays a real token
    assert x1_mask.tolist() == [[True, True, True, False], [False] * 4]


def test_mdm_collator_fixed_canvas_with_trained_pad_tail() -> None:
    feats = features([10, 20, 6], prompts=[4, 0, 2])
    mdm = MDMCollator(mask_id=MASK, pad_id=PAD, canvas_width=32, seed=0)
    out = mdm([{**f, "t": 1.0} for f in feats])  # p = 1: every response position masked
    assert out["input_ids"].shape == (3, 32) and int(out["num_computed_tokens"]) == 96
    prompt = torch.arange(32) < torch.tensor([4, 0, 2])[:, None]
    assert torch.equal(out["mask_slots"], ~prompt) and torch.equal(out["input_ids"][prompt], torch.tensor(
        feats[0]["input_ids"][:4] + feats[2]["input_ids"][:2]
    ))  # fmt: skip
    assert (
        out["targets"][0, 10:].tolist() == [PAD] * 22
        and out["targets"][0, 4:10].tolist() == feats[0]["input_ids"][4:]
    )
    ce_logits = torch.zeros(3, 32, VOCAB)
    loss = mdm_loss(ce_logits, out["targets"], out["mask_prob"], normalizer=32, mask_slots=out["mask_slots"])
    assert loss.item() == pytest.approx((32 - 4 + 32 + 32 - 2) * math.log(VOCAB) / (3 * 32), rel=1e-5)
    no_tail = MDMCollator(mask_id=MASK, pad_id=PAD, canvas_width=32, train_pad_tail=False)(
        [{**feats[1], "t": 1.0}]
    )
    assert int(no_tail["mask_slots"].sum()) == 20
    rates = MDMCollator(mask_id=MASK, pad_id=PAD, canvas_width=32, seed=0)(features([32] * 64))
    frac = rates["mask_slots"].float().mean(1)
    assert torch.allclose(frac, rates["mask_prob"], atol=4.5 * 0.5 / math.sqrt(32))  # per-row Bernoulli(p)
