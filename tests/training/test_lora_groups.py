"""LoRA wrapping, trainable-parameter report and AdamW parameter groups (docs/method.md §2.8-2.9).

Counts are checked against closed forms of the tiny config (2 layers, d = 32, 4 heads with 2 KV
heads, vocab 320) and of LLaDA-8B on the meta device (402,657,281 trainable, docs/method.md §2.9 table).
"""

from __future__ import annotations

import pytest
import torch

from retrofit.models.flexmdm import FlexMDMModel
from retrofit.models.llada import LLaDAConfig, LLaDAModelLM
from retrofit.training.args import RetrofitTrainingArguments
from retrofit.training.lora import build_param_groups, param_group_of, trainable_report, wrap_with_lora
from retrofit.training.sections import LoraRecipe

D, HEADS, KV, LAYERS, V_EMB, R = 32, 4, 2, 2, 320, 8
HD = D // HEADS


def tiny_llada() -> LLaDAModelLM:
    torch.manual_seed(0)
    config = LLaDAConfig(
        d_model=D, n_heads=HEADS, n_kv_heads=KV, n_layers=LAYERS, mlp_hidden_size=96,
        vocab_size=300, embedding_size=V_EMB, mask_token_id=299, pad_token_id=298, eos_token_id=298,
    )  # fmt: skip
    return LLaDAModelLM(config)


def tiny_flexmdm() -> FlexMDMModel:
    return FlexMDMModel.from_llada(tiny_llada(), seed=0, canvas_width=64, adaln_group_size=1)


def new_module_count(d: int, groups: int, time_hidden: int, head_hidden: int) -> int:
    time_mlp = d * time_hidden + time_hidden + time_hidden * d + d  # E = d
    adaln = groups * (d * 2 * d + 2 * d)
    length_head = 2 * d + d * head_hidden + head_hidden + head_hidden + 1
    return time_mlp + adaln + length_head


def lora_count(layers: int, d: int, kv_out: int, vocab: int, r: int, head: bool = True) -> int:
    qkv = layers * r * ((d + d) + 2 * (d + kv_out))  # q: d -> d, k/v: d -> n_kv * head_dim
    return qkv + (r * (d + vocab) if head else 0)


def test_flexmdm_counts_match_closed_form_and_base_is_frozen():
    model = tiny_flexmdm()
    base_total = sum(p.numel() for p in model.parameters())
    wrapped = wrap_with_lora(model, LoraRecipe(r=R, alpha=R), model.new_module_names())
    report = trainable_report(wrapped)
    new = new_module_count(D, groups=LAYERS, time_hidden=4 * D, head_hidden=D)
    assert report.counts == {
        "lora": lora_count(LAYERS, D, KV * HD, V_EMB, R),
        "token_head": 0,
        "new_modules": new,
    }
    assert report.counts["lora"] == 2 * 8 * (64 + 2 * 48) + 8 * (32 + 320) == 5376
    assert report.tensors == {
        "lora": 2 * (3 * LAYERS + 1),
        "token_head": 0,
        "new_modules": 4 + 2 * LAYERS + 6,
    }
    assert report.frozen == base_total  # base weights + peft's frozen originals of the new modules
    for name, param in wrapped.named_parameters():
        trainable = "lora_" in name or ".modules_to_save." in name
        assert param.requires_grad == trainable, name
    assert "trainable" in report.format() and f"{report.trainable:,}" in report.format()


def test_train_token_head_switch_trains_the_head_fully():
    model = tiny_flexmdm()
    wrapped = wrap_with_lora(model, LoraRecipe(r=R, alpha=R, train_token_head=True), model.new_module_names())
    report = trainable_report(wrapped)
    assert report.counts["token_head"] == V_EMB * D
    assert report.counts["lora"] == lora_count(LAYERS, D, KV * HD, V_EMB, R, head=False)
    names = [n for n, p in wrapped.named_parameters() if p.requires_grad]
    assert not any("transformer.ff_out.lora_" in n for n in names)
    assert "base_model.model.backbone.model.transformer.ff_out.modules_to_save.default.weight" in names
    # block MLP outputs stay frozen (docs/method.md §2.8)
    assert not any("blocks.0.ff_out" in n for n in names)


def test_param_groups_get_their_own_lr_and_weight_decay(tmp_path):
    model = tiny_flexmdm()
    wrapped = wrap_with_lora(model, LoraRecipe(r=R, alpha=R, train_token_head=True), model.new_module_names())
    args = RetrofitTrainingArguments(
        output_dir=str(tmp_path),
        learning_rate=1e-3,
        weight_decay=0.01,
        lora_learning_rate=2e-4,
        lora_weight_decay=0.0,
    )
    groups = {g["name"]: g for g in build_param_groups(wrapped, args)}
    assert {n: (g["lr"], g["weight_decay"]) for n, g in groups.items()} == {
        "lora": (2e-4, 0.0),
        "token_head": (5e-5, 0.01),  # lora_lr / 4 (docs/method.md §2.9)
        "new_modules": (1e-3, 0.01),
    }
    ids = [id(p) for g in groups.values() for p in g["params"]]
    trainable = [p for p in wrapped.parameters() if p.requires_grad]
    assert len(ids) == len(set(ids)) == len(trainable)
    assert sum(p.numel() for p in groups["token_head"]["params"]) == V_EMB * D


def test_group_rule():
    assert (
        param_group_of("base_model.model.backbone.model.transformer.blocks.3.q_proj.lora_A.default.weight")
        == "lora"
    )
    assert (
        param_group_of("base_model.model.backbone.model.transformer.ff_out.lora_B.default.weight") == "lora"
    )
    assert param_group_of(
        "base_model.model.backbone.model.transformer.ff_out.modules_to_save.default.weight"
    ) == ("token_head")
    assert param_group_of("model.transformer.ff_out.weight") == "token_head"
    assert param_group_of("model.transformer.blocks.0.ff_out.weight") == "new_modules"
    assert param_group_of("base_model.model.adaln.0.modules_to_save.default.weight") == "new_modules"


def test_mdm_baseline_and_pretraining_groups(tmp_path):
    llada = tiny_llada()
    total = sum(p.numel() for p in llada.parameters())
    wrapped = wrap_with_lora(llada, LoraRecipe(r=R, alpha=R), [])
    report = trainable_report(wrapped)
    assert report.counts == {
        "lora": lora_count(LAYERS, D, KV * HD, V_EMB, R),
        "token_head": 0,
        "new_modules": 0,
    }
    assert report.frozen == total
    full = tiny_llada().requires_grad_(True)  # mode: pretrain
    report = trainable_report(full)
    assert report.counts == {"lora": 0, "token_head": V_EMB * D, "new_modules": total - V_EMB * D}
    args = RetrofitTrainingArguments(output_dir=str(tmp_path), learning_rate=1e-3, head_learning_rate=1e-3)
    assert [(g["name"], g["lr"]) for g in build_param_groups(full, args)] == [
        ("token_head", 1e-3),
        ("new_modules", 1e-3),
    ]


def test_wrapping_rejects_targets_that_match_nothing():
    model = tiny_flexmdm()
    with pytest.raises(ValueError, match="'o_proj' matches no module"):
        wrap_with_lora(model, LoraRecipe(r=R, alpha=R, target_modules=["q_proj", "o_proj"]), [])
    with pytest.raises(ValueError, match="modules_to_save: 'time_head' matches no module"):
        wrap_with_lora(model, LoraRecipe(r=R, alpha=R), ["time_head"])


@pytest.mark.parametrize(("head", "expected"), [(False, 402_657_281), (True, 903_942_145)])
def test_llada_8b_counts_on_meta(head, expected):
    """docs/method.md §2.9: 100,663,296 (q/k/v LoRA) + 16,711,680 (head LoRA) + 285,282,305 new = 402,657,281.

    A fully trained head instead adds 126,464 x 4,096 = 517,996,544 and drops the head LoRA.
    """
    with torch.device("meta"):
        flex = FlexMDMModel.from_llada(LLaDAModelLM(LLaDAConfig()), canvas_width=1024)
        wrapped = wrap_with_lora(flex, LoraRecipe(train_token_head=head), flex.new_module_names())
    report = trainable_report(wrapped)
    assert report.trainable == expected
    assert report.counts["new_modules"] == 134_238_208 + 134_250_496 + 16_793_601
    assert report.counts["lora"] == 100_663_296 + (0 if head else 16_711_680)
    assert report.counts["token_head"] == (517_996_544 if head else 0)
    assert report.frozen == 8_015_581_184 + 285_282_305  # the base + peft's frozen originals of copies
