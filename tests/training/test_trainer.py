"""FlexMDMTrainer: loss = docs/method.md §3.3, the gradient-accumulation contract, logging, MDM mode.

* `compute_loss` equals `flexmdm_loss` / `mdm_loss` on the model's outputs (bit for bit).
* Accumulation equivalence (TRL-style invariant): one SGD step on batch 8 x accumulation 1 and on
  batch 1 x accumulation 8 over the same 8 rows gives the same logged loss (= the full-batch loss
  sum / (8 x normaliser)) and the same parameters (fp32, atol 1e-6 + rtol 1e-5: summation order). SGD, not Adam: Adam's first
  step is invariant to the gradient scale and would hide a wrong division.
* Logs: unmask_loss + length_loss = loss, lr per group, tokens/s, computed fraction, slowest-rank
  share (1 on one process).
* Gradient checkpointing on / off: same loss and parameters.
"""

from __future__ import annotations

import pytest
import torch

from retrofit.loss import flexmdm_loss, mdm_loss
from retrofit.models.flexmdm import FlexMDMModel
from retrofit.models.llada import LLaDAConfig, LLaDAModelLM
from retrofit.training.args import RetrofitTrainingArguments
from retrofit.training.collator import FlexMDMCollator, MDMCollator
from retrofit.training.lora import wrap_with_lora
from retrofit.training.sections import LoraRecipe
from retrofit.training.trainer import FlexMDMTrainer

PAD, MASK, VOCAB, WIDTH = 298, 299, 300, 64


def tiny_model(loss: str = "flexmdm", checkpointing: bool = False):
    torch.manual_seed(0)
    config = LLaDAConfig(
        d_model=32, n_heads=4, n_kv_heads=4, n_layers=2, mlp_hidden_size=96, vocab_size=VOCAB,
        embedding_size=320, mask_token_id=MASK, pad_token_id=PAD, eos_token_id=PAD,
    )  # fmt: skip
    model = LLaDAModelLM(config)
    to_save = []
    if loss == "flexmdm":
        model = FlexMDMModel.from_llada(model, seed=0, canvas_width=WIDTH, adaln_group_size=1)
        to_save = model.new_module_names()
    torch.manual_seed(1)  # LoRA A init
    return wrap_with_lora(model, LoraRecipe(r=4, alpha=8, dropout=0.0), to_save)


def features(n: int = 8, seed: int = 0) -> list[dict]:
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(n):
        length = int(torch.randint(12, WIDTH, (1,), generator=gen))
        ids = torch.randint(2, 290, (length,), generator=gen).tolist()
        rows.append({"input_ids": ids, "prompt_length": int(torch.randint(0, 8, (1,), generator=gen))})
    return rows


def precollated(loss: str = "flexmdm", n: int = 8) -> list[dict[str, torch.Tensor]]:
    """n single-row batches at full width (trim off), drawn once: every split sees the same rows."""
    if loss == "flexmdm":
        collator = FlexMDMCollator(
            mask_id=MASK, pad_id=PAD, canvas_width=WIDTH, time_mode="uniform", trim=False
        )
    else:
        collator = MDMCollator(mask_id=MASK, pad_id=PAD, canvas_width=WIDTH)
    return [collator([row]) for row in features(n)]


def stack(rows: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Pass-through collator: concatenate pre-collated single-row batches."""
    return {
        k: torch.cat([r[k] for r in rows]) if r0.dim() else sum(r[k] for r in rows)
        for k, r0 in rows[0].items()
    }


def make_args(tmp_path, **kw) -> RetrofitTrainingArguments:
    base = dict(
        output_dir=str(tmp_path), optim="sgd", learning_rate=0.5, lr_scheduler_type="constant", max_grad_norm=0.0,
        weight_decay=0.0, logging_steps=1, save_strategy="no", report_to="none", disable_tqdm=True, use_cpu=True,
        seed=0, loss_normalizer=float(WIDTH),
    )  # fmt: skip
    base.update(kw)
    return RetrofitTrainingArguments(**base)


def train(tmp_path, rows, *, batch: int, accum: int, loss: str = "flexmdm", steps: int = 1, **kw):
    model = tiny_model(loss, checkpointing=kw.get("gradient_checkpointing", False))
    args = make_args(
        tmp_path,
        per_device_train_batch_size=batch,
        gradient_accumulation_steps=accum,
        max_steps=steps,
        loss=loss,
        **kw,
    )
    trainer = FlexMDMTrainer(
        model=model, args=args, train_dataset=rows, data_collator=stack, full_row_tokens=WIDTH + 1
    )
    trainer.train()
    trained = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    return trainer, trained


def test_compute_loss_is_the_spec_loss(tmp_path):
    model = tiny_model()
    batch = stack(precollated())
    trainer = FlexMDMTrainer(model=model, args=make_args(tmp_path), data_collator=stack)
    loss = trainer.compute_loss(model, batch)
    out = model(
        input_ids=batch["input_ids"],
        t=batch["t"],
        attention_mask=batch["attention_mask"],
        logits_mask=batch["mask_slots"].bool(),
    )
    want = flexmdm_loss(
        out.logits, batch["targets"], out.expected_gaps, batch["gaps"], batch["gap_mask"],
        batch["weight_unmask"], batch["weight_insert"], normalizer=WIDTH, mask_slots=batch["mask_slots"],
    )  # fmt: skip
    assert out.logits.shape[0] == int(batch["mask_slots"].sum())  # logits only at mask slots
    assert torch.equal(loss, want.total) and loss.dtype == torch.float32


def test_mdm_compute_loss_is_the_baseline_loss(tmp_path):
    model = tiny_model("mdm")
    batch = stack(precollated("mdm"))
    trainer = FlexMDMTrainer(model=model, args=make_args(tmp_path, loss="mdm"), data_collator=stack)
    loss = trainer.compute_loss(model, batch)
    logits = model(input_ids=batch["input_ids"]).logits
    assert torch.equal(loss, mdm_loss(logits, batch["targets"], batch["mask_prob"], normalizer=WIDTH))


@pytest.mark.parametrize("loss", ["flexmdm", "mdm"])
def test_accumulation_equivalence(tmp_path, loss):
    rows = precollated(loss)
    full, params_full = train(tmp_path / "b8", rows, batch=8, accum=1, loss=loss)
    micro, params_micro = train(tmp_path / "b1", rows, batch=1, accum=8, loss=loss)
    # the logged loss is the full-batch loss at the initial parameters: sum / (8 x normaliser)
    model = tiny_model(loss)
    with torch.no_grad():
        expected = FlexMDMTrainer(model=model, args=make_args(tmp_path / "x", loss=loss)).compute_loss(
            model, stack(rows)
        )
    logged = [h["loss"] for h in (full.state.log_history[0], micro.state.log_history[0])]
    assert logged[0] == pytest.approx(float(expected), rel=1e-5)
    assert logged[1] == pytest.approx(float(expected), rel=1e-5)
    moved = 0.0
    initial = {n: p.detach() for n, p in tiny_model(loss).named_parameters()}
    for name, value in params_full.items():
        torch.testing.assert_close(params_micro[name], value, atol=1e-6, rtol=1e-5)
        moved = max(moved, float((value - initial[name]).abs().max()))
    assert moved > 1e-3  # the step really changed the weights


def test_logs_hold_flexmdm_metrics(tmp_path):
    rows = precollated(n=16)
    trainer, _ = train(tmp_path, rows, batch=2, accum=2, steps=4, logging_steps=2, lr_scheduler_type="linear")
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 2
    for h in logs:
        assert h["unmask_loss"] + h["length_loss"] == pytest.approx(h["loss"], rel=1e-4)
        assert h["lr/lora"] == h["lr/new_modules"] == pytest.approx(h["learning_rate"])
        assert h["tokens_per_s"] > 0 and 0 < h["computed_frac"] <= 1 and h["slowest_rank_share"] == 1.0
    assert logs[1]["lr/lora"] < logs[0]["lr/lora"]  # linear decay reached the logs
    names = [g["name"] for g in trainer.optimizer.param_groups]
    assert names == ["lora", "new_modules"]


def test_gradient_checkpointing_gives_the_same_step(tmp_path):
    rows = precollated()
    plain, p_plain = train(tmp_path / "a", rows, batch=4, accum=2, steps=1)
    ckpt, p_ckpt = train(tmp_path / "b", rows, batch=4, accum=2, steps=1, gradient_checkpointing=True)
    assert ckpt.model.base_model.model.backbone.is_gradient_checkpointing
    assert plain.state.log_history[0]["loss"] == pytest.approx(ckpt.state.log_history[0]["loss"], rel=1e-6)
    for name, value in p_plain.items():
        torch.testing.assert_close(p_ckpt[name], value, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("loss", ["flexmdm", "mdm"])
def test_packed_training_step_equals_unpacked_through_the_trainer(tmp_path, loss):
    """The LoRA-wrapped model under the Trainer takes packed batches (data.packing): one SGD step
    moves every trainable weight as the unpacked step does (fp32, lr 0.5, atol 1e-5), and the logged
    computed fraction counts the packed positions (docs/method.md §3.7)."""
    cls = FlexMDMCollator if loss == "flexmdm" else MDMCollator
    common = dict(mask_id=MASK, pad_id=PAD, canvas_width=WIDTH, seed=3)
    if loss == "mdm":
        common["train_pad_tail"] = False
    runs = {}
    for packing in (False, True):
        model = tiny_model(loss)
        args = make_args(tmp_path / str(packing), per_device_train_batch_size=8, max_steps=1, loss=loss)
        trainer = FlexMDMTrainer(
            model=model, args=args, train_dataset=features(8), data_collator=cls(**common, packing=packing),
            full_row_tokens=WIDTH + 1,
        )  # fmt: skip
        trainer.train()
        params = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        runs[packing] = (trainer.state.log_history[0], params)
    (plain_log, plain), (packed_log, packed) = runs[False], runs[True]
    if loss == "flexmdm":  # MDM without the pad tail: packing drops the pads the plain rows attend to
        assert packed_log["loss"] == pytest.approx(plain_log["loss"], abs=1e-6)
        for name, value in plain.items():
            torch.testing.assert_close(packed[name], value, atol=1e-5, rtol=0)
    assert packed_log["computed_frac"] < plain_log["computed_frac"] <= 1
