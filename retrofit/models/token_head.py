"""Token head + cross-entropy at the masked slots, in chunks recomputed in backward.

At N masked slots the plain path materialises N x V logits (V = 126,464 for LLaDA-8B) in the
model dtype and again in float32 for the cross-entropy, and autograd keeps them until backward:
gigabytes at an 8B micro-batch. `token_cross_entropy` runs the head and the float32
cross-entropy on `chunk` slots at a time under non-reentrant activation checkpointing, so only
the [N, D] states are saved and backward recomputes one chunk's logits at a time: peak memory
of the head is O(chunk x V), not O(N x V). The operations are the plain path's, chunk by chunk,
so the per-slot losses and every gradient equal it (the LM head's GEMM on fewer rows may round
differently in the last bit); the per-slot ELBO weights are applied afterwards by the caller,
exactly as with plain logits (docs/method.md §3.2).

The head is called as a module inside the model's forward (peft LoRA on the head, ZeRO-3
parameter gathering and DDP hooks all see an ordinary call).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

__all__ = ["token_cross_entropy"]


def _chunk_ce(head: Callable[[torch.Tensor], torch.Tensor], states: torch.Tensor, targets: torch.Tensor):
    return F.cross_entropy(head(states).float(), targets, reduction="none")


def token_cross_entropy(
    head: Callable[[torch.Tensor], torch.Tensor],
    states: torch.Tensor,
    targets: torch.Tensor,
    chunk: int | None = None,
) -> torch.Tensor:
    """Per-slot float32 cross-entropy of `head(states)` against `targets` (docs/method.md §3.2).

    Args:
        head: post-`ln_f` states [n, D] -> logits [n, V] (the model's `compute_logits`).
        states: [N, D] states of the masked slots (model dtype).
        targets: long [N] token ids.
        chunk: slots per chunk; None or 0 = one plain call (logits kept for backward, as before).
            With gradients off, chunks are computed without checkpointing.

    Returns:
        float32 [N] cross-entropy (unweighted, unreduced).

    Raises:
        ValueError: states and targets disagree on N, or chunk < 0.
    """
    if states.shape[0] != targets.shape[0]:
        raise ValueError(f"{states.shape[0]} head states but {targets.shape[0]} targets")
    if chunk is not None and chunk < 0:
        raise ValueError(f"token head chunk must be >= 0 (0 = off), got {chunk}")
    n = states.shape[0]
    if not chunk or n <= chunk:
        return _chunk_ce(head, states, targets.long())
    recompute = torch.is_grad_enabled()
    parts = []
    for start in range(0, n, chunk):
        s, y = states[start : start + chunk], targets[start : start + chunk].long()
        if recompute:
            parts.append(checkpoint(_chunk_ce, head, s, y, use_reentrant=False))
        else:
            parts.append(_chunk_ce(head, s, y))
    return torch.cat(parts)
