"""Set-up of the training-step benchmark: collated batches, LoRA-wrapped models, losses.

`retrofit.bench.train_step` times what these build; see its docstring for the variants.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from retrofit.bench.common import resolve_dtype
from retrofit.bench.configs import SIZES, build_llada, parameter_counts
from retrofit.bench.lengths import LengthTable, make_features
from retrofit.training.objective import micro_batch_loss

if TYPE_CHECKING:
    from retrofit.bench.recipe_workload import RecipeWorkload
    from retrofit.bench.train_step import TrainStepOptions

__all__ = ["build_batches", "build_model", "micro_loss"]


def _collator(variant: str, opts: TrainStepOptions, collator_kwargs: dict[str, Any]) -> Any:
    from retrofit.training.collator import FlexMDMCollator, MDMCollator

    s = SIZES[opts.size]
    common = dict(
        mask_id=s.mask_id, pad_id=s.pad_id, canvas_width=opts.canvas, seed=opts.seed, **collator_kwargs
    )
    if variant == "mdm":
        return MDMCollator(time_mode="uniform", **common)
    return FlexMDMCollator(
        insertion_schedule=opts.insertion_schedule,
        unmasking_schedule="linear",
        time_mode="banded" if variant in ("banded", "packed") else "stratified",
        grad_accum=opts.accum,
        trim=variant != "full-width",
        packing=variant == "packed",
        **common,
    )


def build_batches(
    variant: str, opts: TrainStepOptions, source: LengthTable | RecipeWorkload | None
) -> list[list[dict[str, Any]]]:
    """[step][micro-step] collated batches on the device; the x1 draws do not depend on the variant.

    `source`: GSM8K lengths (LengthTable), a recipe's own examples (RecipeWorkload, drawn in a
    seeded random order), or None (full-length x1). Warm-up steps hold one micro-batch (enough to
    allocate the optimizer state and warm caches); timed steps hold G.
    """
    s, device = SIZES[opts.size], torch.device(opts.device)
    gen = torch.Generator().manual_seed(opts.seed)
    examples = getattr(source, "features", None)
    collate = _collator(variant, opts, getattr(source, "collator_kwargs", {}) if examples else {})
    steps = []
    for i in range(opts.warmup + opts.repeats):
        micro = []
        for k in range(1 if i < opts.warmup else opts.accum):  # a warm-up step is one micro-step
            collate.calls = i * opts.accum + k  # micro-step k of optimizer step i (sets the band)
            if examples:
                feats = [
                    examples[j] for j in torch.randint(len(examples), (opts.batch,), generator=gen).tolist()
                ]
            else:
                feats = make_features(
                    opts.lengths, opts.batch, opts.canvas, vocab_limit=min(s.mask_id, s.pad_id),
                    table=source, generator=gen,
                )  # fmt: skip
            micro.append({name: value.to(device) for name, value in collate(feats).items()})
        steps.append(micro)
    return steps


def build_model(variant: str, opts: TrainStepOptions) -> tuple[torch.nn.Module, dict[str, int]]:
    """LoRA-wrapped FlexMDM (graft modules trainable) or LLaDA, trainable weights in fp32."""
    from retrofit.models.flexmdm import FlexMDMModel
    from retrofit.training.lora import cast_trainable, wrap_with_lora
    from retrofit.training.sections import LoraRecipe

    dtype, device = resolve_dtype(opts.dtype), torch.device(opts.device)
    llada = build_llada(opts.size, layers=opts.layers, device=device, dtype=dtype, seed=opts.seed)
    counts = parameter_counts(llada)
    model, to_save = llada, []
    if variant != "mdm":
        pad_attention = "full" if variant == "full-width" else "slots"
        model = FlexMDMModel.from_llada(
            llada, seed=opts.seed, canvas_width=opts.canvas, pad_attention=pad_attention
        )
        model = model.to(device=device, dtype=dtype)
        to_save = model.new_module_names()
    if opts.grad_ckpt:
        _enable_checkpointing(model)
    r = opts.lora_r or SIZES[opts.size].lora_r
    model = wrap_with_lora(model, LoraRecipe(r=r, alpha=r), modules_to_save=to_save)
    cast_trainable(model, torch.float32)
    counts["trainable"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return model.train(), counts


def _enable_checkpointing(model: torch.nn.Module) -> None:
    """Non-reentrant activation checkpointing of every block (transformers 5.x name, else the old one)."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    blocks = model.get_base_model() if hasattr(model, "get_base_model") else model
    if not any(getattr(m, "gradient_checkpointing", False) for m in blocks.modules()):
        raise RuntimeError("--grad-ckpt on: no block was switched to gradient checkpointing")


def micro_loss(
    variant: str, model: torch.nn.Module, batch: dict[str, torch.Tensor], normalizer: float
) -> torch.Tensor:
    """Loss of one micro-batch: the trainer's `micro_batch_loss` (token logits only at the masked
    slots; packed rows for the "packed" variant; docs/method.md §3.2, §3.6, §3.7)."""
    objective = "mdm" if variant == "mdm" else "flexmdm"
    return micro_batch_loss(model, batch, objective, normalizer=normalizer)[0]
