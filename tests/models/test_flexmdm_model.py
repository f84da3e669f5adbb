"""Tests of retrofit.models.flexmdm: graft identity, canvas independence, time embedding, sizes,
logits_mask, gradient checkpointing, save/load round trip (docs/method.md §2.1-2.10, §7.4)."""

from __future__ import annotations

import warnings

import pytest
import torch
from transformers import AutoConfig, AutoModel

from retrofit.models import FlexMDMConfig, FlexMDMModel, LLaDAConfig, LLaDAModelLM
from retrofit.models.time_embedding import SinusoidalTimeEmbedding

PAD, MASK, VOCAB = 1, 95, 96


def tiny_llada(seed: int = 0) -> LLaDAModelLM:
    """4-block, d = 32 LLaDA in fp32 eval mode."""
    config = LLaDAConfig(
        d_model=32, n_heads=4, n_kv_heads=4, n_layers=4, mlp_hidden_size=64, vocab_size=VOCAB,
        embedding_size=VOCAB, mask_token_id=MASK, pad_token_id=PAD, eos_token_id=PAD, bos_token_id=0,
        max_sequence_length=128,
    )  # fmt: skip
    torch.manual_seed(seed)
    return LLaDAModelLM(config).eval()


@pytest.fixture
def base() -> LLaDAModelLM:
    return tiny_llada()


@pytest.fixture
def model(base: LLaDAModelLM) -> FlexMDMModel:
    """Fresh graft; 4 blocks in groups of 3 -> 2 AdaLN groups (the last one short)."""
    return FlexMDMModel.from_llada(base, seed=0, adaln_group_size=3, canvas_width=64).eval()


def perturb_adaln(model: FlexMDMModel, seed: int = 1) -> FlexMDMModel:
    """Give the zero-initialised AdaLN modulators random weights, so t conditions the outputs."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.adaln.parameters():
            p.copy_(0.2 * torch.randn(p.shape, generator=gen))
    return model


def random_canvas(lengths: list[int], width: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of random non-pad tokens (some masks) followed by pad; returns (ids, slot mask)."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, VOCAB - 1, (len(lengths), width), generator=gen)
    ids[torch.rand(ids.shape, generator=gen) < 0.3] = MASK
    slot_mask = torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]
    return torch.where(slot_mask, ids, PAD), slot_mask


def test_time_embedding_spec_vectors() -> None:
    emb = SinusoidalTimeEmbedding(4096)(torch.tensor([0.0, 0.5]))
    assert emb.shape == (2, 4096) and emb.dtype == torch.float32
    assert torch.equal(emb[0], torch.cat((torch.ones(2048), torch.zeros(2048))))
    e = emb[1].double()
    assert e[0].item() == pytest.approx(0.8775826, abs=2e-7)
    assert e[1].item() == pytest.approx(0.8786560, abs=2e-7)
    assert e[2048].item() == pytest.approx(0.4794255, abs=2e-7)
    assert e[4095].item() == pytest.approx(5.0225e-5, rel=1e-4)


def test_new_module_sizes_of_the_8b_config_on_meta() -> None:
    config = FlexMDMConfig()  # LLaDA-8B backbone, groups of 8
    with torch.device("meta"):
        model = FlexMDMModel(config)

    def count(module: torch.nn.Module) -> int:
        return sum(p.numel() for p in module.parameters())

    assert count(model.time_mlp) == 134_238_208
    assert len(model.adaln) == 4 and count(model.adaln) == 134_250_496
    assert count(model.length_head) == 16_793_601
    assert count(model.backbone) == 8_015_581_184
    assert model.new_module_names() == ["time_mlp", "length_head", "adaln.0", "adaln.1", "adaln.2", "adaln.3"]


def test_config_defaults_and_validation() -> None:
    config = FlexMDMConfig(backbone=tiny_llada().config, canvas_width=48)
    assert (config.time_embed_dim, config.time_hidden_size, config.length_head_hidden) == (32, 128, 32)
    assert (config.length_scale, config.loss_normalizer) == (48.0, 48.0)
    assert config.insertion_schedule == {"name": "geometric", "min": 10.0, "max": 0.01}
    assert config.unmasking_schedule == {"name": "linear"}
    assert (config.mask_token_id, config.pad_token_id, config.pad_attention) == (MASK, PAD, "slots")
    assert isinstance(config.backbone_config, LLaDAConfig) and config.backbone_config.n_layers == 4
    assert config.num_adaln_groups == 1
    with pytest.raises(ValueError, match="pad_attention"):
        FlexMDMConfig(pad_attention="none")
    with pytest.raises(ValueError, match="unknown schedule"):
        FlexMDMConfig(insertion_schedule="zigzag")


@pytest.mark.parametrize("t", [0.0, 0.37, 1.0])
def test_graft_identity_equals_base_llada_exactly(base: LLaDAModelLM, model: FlexMDMModel, t: float) -> None:
    ids, slot_mask = random_canvas([7, 12, 3], width=12)
    out = model(ids, torch.full((3,), t), attention_mask=slot_mask)
    canvas = torch.nn.functional.pad(ids, (0, 1), value=PAD)  # [B, L+1]
    key_mask = torch.arange(13)[None, :] <= slot_mask.sum(-1)[:, None]  # keys 0..n_b
    with torch.no_grad():
        reference = base(canvas, attention_mask=key_mask).logits[:, :12]
    assert out.logits.shape == (3, 12, VOCAB)
    assert (out.logits - reference).abs().max().item() == 0.0
    assert out.expected_gaps.shape == (3, 13) and out.expected_gaps.dtype == torch.float32
    assert torch.isfinite(out.expected_gaps).all() and (out.expected_gaps >= 0).all()


def test_outputs_ignore_t_at_init_and_depend_on_it_after_training(model: FlexMDMModel) -> None:
    ids, slot_mask = random_canvas([10, 6], width=10)
    early, late = (model(ids, t, attention_mask=slot_mask) for t in (0.1, 0.9))
    assert torch.equal(early.logits, late.logits)  # docs/method.md §7.4.2
    assert torch.equal(early.expected_gaps, late.expected_gaps)
    perturb_adaln(model)
    early, late = (model(ids, t, attention_mask=slot_mask) for t in (0.1, 0.9))
    assert (early.logits - late.logits).abs().max().item() > 1e-3
    assert (early.expected_gaps - late.expected_gaps).abs().max().item() > 1e-3


def test_t_accepts_scalars_and_rejects_wrong_shapes(model: FlexMDMModel) -> None:
    perturb_adaln(model)
    ids, slot_mask = random_canvas([5, 4], width=6)
    vector = model(ids, torch.tensor([0.4, 0.4]), attention_mask=slot_mask)
    for scalar in (0.4, torch.tensor(0.4)):
        assert torch.equal(model(ids, scalar, attention_mask=slot_mask).logits, vector.logits)
    with pytest.raises(ValueError, match="t has shape"):
        model(ids, torch.tensor([0.4, 0.4, 0.4]), attention_mask=slot_mask)
    with pytest.raises(ValueError, match="left-aligned"):
        model(ids, 0.4, attention_mask=slot_mask.flip(-1))
    with pytest.raises(ValueError, match="unsupported arguments"):
        model(ids, 0.4, position_ids=torch.arange(6))


def row_outputs(
    model: FlexMDMModel, ids, slot_mask, t, row: int, n: int
) -> tuple[torch.Tensor, torch.Tensor]:
    out = model(ids, t, attention_mask=slot_mask)
    return out.logits[row, :n], out.expected_gaps[row, : n + 1]


@pytest.mark.parametrize("mode", ["slots", "full"])
def test_canvas_independence_only_in_slots_mode(model: FlexMDMModel, mode: str) -> None:
    perturb_adaln(model)
    model.config.pad_attention = mode
    n = 9
    row_ids, _ = random_canvas([n], width=n, seed=3)
    variants = []
    for width in (16, 64):  # the row alone, padded to two widths
        ids = torch.nn.functional.pad(row_ids, (0, width - n), value=PAD)
        variants.append(row_outputs(model, ids, torch.arange(width)[None] < n, torch.tensor([0.6]), 0, n))
    others, other_mask = random_canvas([40, 64], width=64, seed=4)  # in a batch with longer rows
    ids = torch.cat((torch.nn.functional.pad(row_ids, (0, 64 - n), value=PAD), others))
    slot_mask = torch.cat((torch.arange(64)[None] < n, other_mask))
    variants.append(row_outputs(model, ids, slot_mask, torch.tensor([0.6, 0.2, 0.9]), 0, n))
    diffs = [
        max((a - b).abs().max().item() for a, b in zip(variants[0], other)) for other in variants[1:]
    ]  # fmt: skip
    if mode == "slots":
        assert max(diffs) < 1e-5
    else:
        assert min(diffs) > 1e-3  # padding width changes the research model's outputs


def test_slots_mode_reads_lengths_from_the_mask_not_from_pad_ids(model: FlexMDMModel) -> None:
    perturb_adaln(model)
    ids, slot_mask = random_canvas([5], width=12)
    garbage = torch.where(slot_mask, ids, torch.randint(2, VOCAB, ids.shape))  # no pad after the slots
    clean, dirty = (row_outputs(model, x, slot_mask, 0.5, 0, 5) for x in (ids, garbage))
    assert torch.allclose(clean[0], dirty[0], atol=1e-6) and torch.allclose(clean[1], dirty[1], atol=1e-6)


def test_logits_mask_selects_rows_of_the_full_logits(model: FlexMDMModel) -> None:
    perturb_adaln(model)
    ids, slot_mask = random_canvas([10, 4, 8], width=10)
    logits_mask = ids == MASK
    full = model(ids, torch.tensor([0.2, 0.5, 0.8]), attention_mask=slot_mask)
    part = model(ids, torch.tensor([0.2, 0.5, 0.8]), attention_mask=slot_mask, logits_mask=logits_mask)
    assert part.logits.shape == (int(logits_mask.sum()), VOCAB)
    assert torch.allclose(part.logits, full.logits[logits_mask], atol=1e-6, rtol=0)
    assert torch.equal(part.expected_gaps, full.expected_gaps)


def gradients(model: FlexMDMModel, ids, slot_mask) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    out = model(ids, torch.tensor([0.3, 0.8]), attention_mask=slot_mask, logits_mask=ids == MASK)
    loss = out.logits.logsumexp(-1).sum() + out.expected_gaps.log().sum()
    loss.backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("use_reentrant", [True, False])
def test_gradient_checkpointing_gives_equal_gradients(model: FlexMDMModel, use_reentrant: bool) -> None:
    perturb_adaln(model).train()
    model.get_input_embeddings().weight.requires_grad_(False)  # frozen embeddings, as under LoRA
    ids, slot_mask = random_canvas([11, 7], width=11)
    plain = gradients(model, ids, slot_mask)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # transformers 5.2x renamed the method
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": use_reentrant})
    assert all(block.gradient_checkpointing for block in model.backbone.model.transformer.blocks)
    checkpointed = gradients(model, ids, slot_mask)
    assert plain.keys() == checkpointed.keys()
    assert {
        "adaln.0.weight",
        "time_mlp.fc1.weight",
        "backbone.model.transformer.blocks.0.q_proj.weight",
    } <= set(plain)
    for name, grad in plain.items():
        assert torch.allclose(grad, checkpointed[name], atol=1e-6, rtol=1e-5), name


def test_from_llada_seed_is_deterministic_and_keeps_global_rng(base: LLaDAModelLM) -> None:
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first = FlexMDMModel.from_llada(base, seed=7)
    assert torch.equal(torch.get_rng_state(), state)
    second = FlexMDMModel.from_llada(base, seed=7)
    third = FlexMDMModel.from_llada(base, seed=8)
    w1, w2, w3 = (m.time_mlp.fc1.weight for m in (first, second, third))
    assert torch.equal(w1, w2) and not torch.equal(w1, w3)
    assert first.backbone is base  # reused, not copied
    assert all((p == 0).all() for p in first.adaln.parameters())


@pytest.mark.parametrize("trained", [False, True])
def test_save_and_auto_load_round_trip_is_bitwise(model: FlexMDMModel, tmp_path, trained: bool) -> None:
    if trained:  # non-zero AdaLN must survive loading (no re-init of "new" modules)
        perturb_adaln(model)
    model.save_pretrained(tmp_path)
    assert AutoConfig.from_pretrained(tmp_path).model_type == "flexmdm"
    loaded = AutoModel.from_pretrained(tmp_path)
    assert isinstance(loaded, FlexMDMModel)
    saved, restored = model.state_dict(), loaded.state_dict()
    assert saved.keys() == restored.keys()
    assert sum(key.startswith("adaln.") for key in saved) == 2 * len(model.adaln)  # each G_k stored once
    for key, tensor in saved.items():
        assert torch.equal(tensor, restored[key]), key
    volatile = ("_name_or_path", "dtype")
    fields = [{k: v for k, v in m.config.to_dict().items() if k not in volatile} for m in (model, loaded)]
    assert fields[0] == fields[1]
