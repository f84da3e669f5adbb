"""FlexMDM training loss (unmasking CE + Poisson-Bregman length loss) and the LLaDA baseline loss.

FlexMDM (docs/method.md §3.2-3.3): per sample,
    L_unmask = w_u(t) * sum_{mask slots j} CE(logits_j, x1[s_t(j)])
    L_len    = w_i(t) * sum_{j = 0..n} D(g_j, g_hat_j),  D(x, y) = y - x + x (ln x - ln y),
summed over the batch and divided by (B * normalizer) (normalizer = canvas width, 1024 in the 8B
recipe). LLaDA baseline (docs/method.md §3.6): sum over masked response positions of CE / p, divided by
(B * normalizer).

Token logits may be given for the whole canvas [B, L, V] or only for the mask slots [N, V]
(rows of ``mask_slots.nonzero()``, row-major), so the trainer can skip the LM head elsewhere,
or the model may return the per-slot cross-entropy itself (``token_ce`` [N], its chunked token
head, retrofit.models.token_head). Cross-entropy is computed in float32.

Packed batches (docs/method.md §3.7): the arrays are [R, T] packed rows and ``document_ids``
[R, T] names the example of each position; weights, t and the normaliser's B stay per example.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from retrofit.interpolant import IGNORE_INDEX

__all__ = [
    "BREGMAN_CLAMP",
    "FlexMDMLossOutput",
    "bregman_poisson",
    "flexmdm_loss",
    "masked_cross_entropy",
    "mdm_loss",
]

BREGMAN_CLAMP = 1e-6
"""Both arguments of D are clamped below at this value (docs/method.md §3.2)."""


@dataclass
class FlexMDMLossOutput:
    """Scalar float32 tensors: ``total = unmask + length`` (docs/method.md §3.2-3.3), all already
    normalised."""

    total: Tensor
    unmask: Tensor
    length: Tensor


def bregman_poisson(g: Tensor, g_hat: Tensor, eps: float = BREGMAN_CLAMP) -> Tensor:
    """Generalised-KL (Poisson) Bregman divergence D(x, y) = y - x + x (ln x - ln y), elementwise
    (docs/method.md §3.2).

    Both arguments are clamped below at ``eps`` (so D(0, y) ~= y). D >= 0, with equality iff
    g = g_hat (for g >= eps); dD/dg_hat = 1 - g / g_hat where g_hat > eps (0 below the clamp).

    Args:
        g: true gap counts, float, any shape.
        g_hat: predicted expected gap counts, broadcastable to g's shape.
        eps: lower clamp of both arguments.

    Returns:
        float32 tensor of the broadcast shape.
    """
    x = g.float().clamp_min(eps)
    y = g_hat.float().clamp_min(eps)
    return y - x + x * (torch.log(x) - torch.log(y))


def masked_cross_entropy(
    token_logits: Tensor,
    targets: Tensor,
    *,
    mask_slots: Tensor | None = None,
    row_index: Tensor | None = None,
    token_ce: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Float32 cross-entropy at the target slots, and the batch row of each.

    Accepted layouts:
      * ``token_logits`` [B, L, V], ``targets`` [B, L]; slots = ``mask_slots`` [B, L] if given, else
        ``targets != -100``.
      * ``token_logits`` [N, V] (rows of ``mask_slots.nonzero()``), ``targets`` [B, L] and ``mask_slots``.
      * ``token_logits`` [N, V], ``targets`` [N] and ``row_index`` [N] (batch row of each logit row).
      * ``token_ce`` [N] (the model's float32 per-slot cross-entropy; ``token_logits`` None) with
        ``mask_slots`` [B, L] or ``row_index`` [N].

    Returns:
        (ce [N] float32, row [N] long).

    Raises:
        ValueError: on a layout/shape mismatch, naming the argument to fix.
    """
    if token_ce is not None:
        if row_index is None:
            if mask_slots is None:
                raise ValueError(
                    "token_ce [N] needs mask_slots [B, L] or row_index [N] (the slots it covers)"
                )
            row_index = mask_slots.bool().nonzero()[:, 0]
        if row_index.shape != token_ce.shape:
            raise ValueError(f"token_ce has {token_ce.shape[0]} slots but the selector {row_index.shape[0]}")
        return token_ce.float(), row_index.long()
    if token_logits.dim() == 3:
        if targets.shape != token_logits.shape[:2]:
            raise ValueError(
                f"targets must be [B, L] = {tuple(token_logits.shape[:2])}, got {tuple(targets.shape)}"
            )
        select = mask_slots.bool() if mask_slots is not None else targets != IGNORE_INDEX
        token_logits, targets, row = token_logits[select], targets[select], select.nonzero()[:, 0]
    elif token_logits.dim() == 2 and targets.dim() == 2:
        if mask_slots is None or mask_slots.shape != targets.shape:
            raise ValueError(
                "gathered [N, V] logits with [B, L] targets need mask_slots [B, L] (the logits_mask used)"
            )
        targets, row = targets[mask_slots.bool()], mask_slots.bool().nonzero()[:, 0]
    elif token_logits.dim() == 2 and targets.dim() == 1:
        if row_index is None or row_index.shape != targets.shape:
            raise ValueError(
                "gathered [N, V] logits with [N] targets need row_index [N] (batch row of each row)"
            )
        row = row_index.long()
    else:
        raise ValueError(f"token_logits must be [B, L, V] or [N, V], got {tuple(token_logits.shape)}")
    if token_logits.shape[0] != targets.shape[0]:
        raise ValueError(
            f"{token_logits.shape[0]} logit rows but {targets.shape[0]} target slots: "
            "pass the same mask_slots that selected the logits"
        )
    ce = F.cross_entropy(token_logits.float(), targets.long(), reduction="none", ignore_index=IGNORE_INDEX)
    return ce, row


def flexmdm_loss(
    token_logits: Tensor,
    targets: Tensor,
    expected_gaps: Tensor,
    gaps: Tensor,
    gap_mask: Tensor,
    weight_unmask: Tensor,
    weight_insert: Tensor,
    *,
    normalizer: float,
    mask_slots: Tensor | None = None,
    row_index: Tensor | None = None,
    token_ce: Tensor | None = None,
    document_ids: Tensor | None = None,
) -> FlexMDMLossOutput:
    """FlexMDM loss of one micro-batch (docs/method.md §3.2-3.3).

    unmask = sum_b w_u[b] sum_{mask slots j of b} CE_bj / (B * normalizer);
    length = sum_b w_i[b] sum_{j <= n_b} D(g_bj, g_hat_bj) / (B * normalizer); total = unmask + length.

    Args:
        token_logits: [B, L, V] or [N, V] logits (any float dtype; CE in float32). See
            :func:`masked_cross_entropy` for the layouts and ``mask_slots`` / ``row_index``.
        targets: long [B, L] (-100 off the mask slots) or [N].
        expected_gaps: float [B, L + 1], the model's g_hat >= 0.
        gaps: float [B, L + 1], the interpolant's g.
        gap_mask: bool [B, L + 1], j <= n.
        weight_unmask: float [B], w_u(t). weight_insert: float [B], w_i(t).
        normalizer: the constant in the denominator (canvas width; 1024 in the 8B recipe), > 0.
        mask_slots: bool [B, L], optional slot selector. row_index: long [N], optional.
        token_ce: float32 [N], the per-slot cross-entropy already computed by the model
            (``token_logits`` is then None).
        document_ids: packed batches: long [R, T], the example (0..B-1) of each position, -1 on
            filler; targets / gaps / gap_mask / mask_slots are then [R, T] and B = len(weights)
            (docs/method.md §3.7).

    Returns:
        FlexMDMLossOutput of float32 scalars.

    Raises:
        ValueError: bad normalizer or mismatched shapes.
    """
    if not normalizer > 0:
        raise ValueError(f"flexmdm_loss: normalizer must be > 0 (canvas width), got {normalizer}")
    if expected_gaps.shape != gaps.shape or gap_mask.shape != gaps.shape:
        raise ValueError(
            f"flexmdm_loss: expected_gaps {tuple(expected_gaps.shape)}, gaps {tuple(gaps.shape)} and gap_mask "
            f"{tuple(gap_mask.shape)} must have the same [B, L + 1] shape (trim the sample to the model input)"
        )
    batch = weight_unmask.shape[0]
    denom = batch * float(normalizer)
    if document_ids is not None:
        if document_ids.shape != gaps.shape:
            raise ValueError(
                f"document_ids {tuple(document_ids.shape)} must be [R, T] like gaps {tuple(gaps.shape)}"
            )
        if mask_slots is not None and row_index is None:
            row_index = document_ids[mask_slots.bool()]
    ce, row = masked_cross_entropy(
        token_logits, targets, mask_slots=mask_slots, row_index=row_index, token_ce=token_ce
    )
    unmask = (weight_unmask.float()[row] * ce).sum() / denom
    div = torch.where(gap_mask.bool(), bregman_poisson(gaps, expected_gaps), 0.0)  # [B, L + 1] / [R, T]
    if document_ids is None:
        length = (weight_insert.float() * div.sum(dim=1)).sum() / denom
    else:  # each position weighted by its example's w_i(t); filler has gap_mask False
        length = (weight_insert.float()[document_ids.clamp_min(0)] * div).sum() / denom
    return FlexMDMLossOutput(total=unmask + length, unmask=unmask, length=length)


def mdm_loss(
    token_logits: Tensor,
    targets: Tensor,
    mask_prob: Tensor,
    *,
    normalizer: float,
    mask_slots: Tensor | None = None,
    row_index: Tensor | None = None,
    token_ce: Tensor | None = None,
    document_ids: Tensor | None = None,
) -> Tensor:
    """LLaDA baseline loss sum_{masked response positions} CE / p, divided by (B * normalizer)
    (docs/method.md §3.6).

    Args:
        token_logits: [B, L, V] or [N, V] (layouts of :func:`masked_cross_entropy`).
        targets: long [B, L] (-100 off the masked positions, e.g. interpolant.MDMSample.targets) or [N].
        mask_prob: float [B], the masking probability p of each row.
        normalizer: denominator constant (4096 in the reference baseline), > 0.
        mask_slots: bool [B, L], optional selector. row_index: long [N], optional.
        token_ce: float32 [N] per-slot cross-entropy from the model (``token_logits`` None).
        document_ids: packed batches: long [R, T], the example of each position (docs/method.md §3.7).

    Returns:
        float32 scalar.

    Raises:
        ValueError: bad normalizer or mismatched shapes.
    """
    if not normalizer > 0:
        raise ValueError(f"mdm_loss: normalizer must be > 0, got {normalizer}")
    if document_ids is not None and mask_slots is not None and row_index is None:
        row_index = document_ids[mask_slots.bool()]
    ce, row = masked_cross_entropy(
        token_logits, targets, mask_slots=mask_slots, row_index=row_index, token_ce=token_ce
    )
    return (ce / mask_prob.float()[row]).sum() / (mask_prob.shape[0] * float(normalizer))
