"""One micro-batch -> model -> loss: the step shared by the trainer, the benchmarks and the
likelihood.

`forward_batch` feeds a collator batch (`retrofit.training.collator`: plain rows or packed rows)
to a FlexMDMModel or LLaDAModelLM with token logits only at the mask slots, the token head's
cross-entropy computed inside the model (chunked when `head_chunk` is set,
retrofit.models.token_head); `micro_batch_loss` adds the FlexMDM loss (docs/method.md §3.2-3.3)
or the LLaDA baseline loss (§3.6), summed over the micro-batch and divided by
B * normalizer (B = examples, also when packed, §3.7).
"""

from __future__ import annotations

from typing import Any

import torch

from retrofit.loss import flexmdm_loss, mdm_loss
from retrofit.models.packed_attention import PackedLayout

__all__ = ["OBJECTIVES", "forward_batch", "micro_batch_loss"]

OBJECTIVES = ("flexmdm", "mdm")


def forward_batch(
    model: Any,
    batch: dict[str, torch.Tensor],
    objective: str,
    *,
    head_chunk: int | None = None,
    packed_backend: str | None = None,
) -> Any:
    """The model output of a collator batch, with `token_ce` [N] at the mask slots.

    Args:
        model: FlexMDMModel (objective "flexmdm") or LLaDAModelLM ("mdm"), possibly wrapped (peft,
            DDP, DeepSpeed).
        batch: FlexMDMCollator / MDMCollator output; packed batches carry document_ids and
            position_ids [R, T].
        objective: "flexmdm" | "mdm".
        head_chunk: mask slots per chunk of the token head (None / 0 = one call).
        packed_backend: attention backend of packed rows (None = the device's default,
            `retrofit.models.packed_attention.default_backend`).

    Returns:
        FlexMDMOutput / LLaDAOutput with token_ce float32 [N] (logits None).

    Raises:
        ValueError: an unknown objective.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    mask_slots = batch["mask_slots"].bool()
    kwargs: dict[str, Any] = dict(
        input_ids=batch["input_ids"],
        logits_mask=mask_slots,
        token_targets=batch["targets"],
        head_chunk=head_chunk,
    )
    if "document_ids" in batch:
        kwargs["packed"] = PackedLayout.from_document_ids(
            batch["document_ids"], batch["position_ids"], backend=packed_backend
        )
    elif "attention_mask" in batch:
        kwargs["attention_mask"] = batch["attention_mask"]
    if objective == "flexmdm":
        kwargs["t"] = batch["t"]
    return model(**kwargs)


def micro_batch_loss(
    model: Any,
    batch: dict[str, torch.Tensor],
    objective: str,
    *,
    normalizer: float,
    head_chunk: int | None = None,
    packed_backend: str | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor], Any]:
    """Loss of one micro-batch (docs/method.md §3.2-3.3, §3.6, §3.7).

    Args:
        model, batch, objective, head_chunk, packed_backend: as `forward_batch`.
        normalizer: the loss normaliser (canvas width; docs/method.md §3.4), > 0.

    Returns:
        (float32 scalar loss, {"unmask_loss", "length_loss" (FlexMDM only)} float32 scalars,
        the model output).

    Raises:
        ValueError: an unknown objective or bad normaliser / shapes (from the loss).
    """
    outputs = forward_batch(model, batch, objective, head_chunk=head_chunk, packed_backend=packed_backend)
    mask_slots = batch["mask_slots"].bool()
    document_ids = batch.get("document_ids")
    if objective == "mdm":
        loss = mdm_loss(
            None,
            batch["targets"],
            batch["mask_prob"],
            normalizer=normalizer,
            mask_slots=mask_slots,
            token_ce=outputs.token_ce,
            document_ids=document_ids,
        )
        return loss, {"unmask_loss": loss}, outputs
    terms = flexmdm_loss(
        None,
        batch["targets"],
        outputs.expected_gaps,
        batch["gaps"],
        batch["gap_mask"],
        batch["weight_unmask"],
        batch["weight_insert"],
        normalizer=normalizer,
        mask_slots=mask_slots,
        token_ce=outputs.token_ce,
        document_ids=document_ids,
    )
    return terms.total, {"unmask_loss": terms.unmask, "length_loss": terms.length}, outputs
