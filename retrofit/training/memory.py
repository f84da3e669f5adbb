"""Per-GPU memory estimates for `retrofit train --dry-run` (DeepSpeed ZeRO-2 / ZeRO-3, bf16).

Formula (bytes per GPU, W data-parallel ranks, N = all parameters, T = trainable parameters,
b = 2 bytes for bf16 weights; DeepSpeed bf16 keeps an fp32 master copy + Adam moments of the
trainable parameters, partitioned over ranks in both stages):

    weights      = b * N            (ZeRO-2: replicated)      b * N / W   (ZeRO-3: partitioned)
    gradients    = b * T / W        (both stages partition gradients)
    optimizer    = 12 * T / W       (fp32 master 4 + Adam m 4 + v 4)
    activations  = checkpointed block inputs  n_layers * B * L * D * b
                 + one block recomputed       B * L * (4 D + 3 H) * b * 2   (forward + backward)
                 + token head  rows * V * 12   (rows = B * L, an upper bound: every slot masked;
                   with training.token_head_chunk = c, rows = min(c, B * L): the chunked head
                   keeps one chunk's logits; 12 bytes per logit = the fp32 log-probabilities
                   saved for backward, their gradient and the logits' gradient, the peak measured
                   by `retrofit bench token-head`)
                   (without gradient checkpointing the first two terms become
                    n_layers * B * L * (4 D + 3 H) * b * 2)
    ZeRO-3 also gathers one block's weights at a time: + 2 * b * P_block (prefetch of the next).

B = micro-batch, L = canvas width + 1 (the length slot), D = d_model, H = MLP hidden, V = vocab.
Packed rows (data.packing) hold at most B * L positions per micro-batch, the same bound.
This ignores framework buffers (allocator fragmentation, DeepSpeed buckets: budget ~10-20 % on
top) and counts the frozen copies peft keeps of `modules_to_save` inside N.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MemoryEstimate", "estimate_memory", "format_estimates"]

GIB = 1024**3
HEAD_BYTES_PER_LOGIT = 12
"""Peak bytes per logit of the token head + float32 cross-entropy in backward (see the docstring)."""


@dataclass(frozen=True)
class MemoryEstimate:
    """One estimate in bytes; `total` is their sum."""

    stage: int
    world_size: int
    weights: float
    gradients: float
    optimizer: float
    activations: float
    gathered: float

    @property
    def total(self) -> float:
        """Sum of all terms, bytes."""
        return self.weights + self.gradients + self.optimizer + self.activations + self.gathered


def estimate_memory(
    *,
    total_params: int,
    trainable_params: int,
    stage: int,
    world_size: int,
    micro_batch: int,
    seq_len: int,
    d_model: int,
    mlp_hidden: int,
    n_layers: int,
    vocab: int,
    weight_bytes: int = 2,
    gradient_checkpointing: bool = True,
    head_chunk: int = 0,
) -> MemoryEstimate:
    """Estimate per-GPU memory of one training step (formula in the module docstring).

    Args:
        total_params: N, every parameter of the wrapped model (frozen + trainable).
        trainable_params: T.
        stage: ZeRO stage, 2 or 3.
        world_size: W, data-parallel ranks.
        micro_batch: B, per-device batch.
        seq_len: L, tokens per row seen by the trunk (canvas width + 1 for FlexMDM).
        d_model, mlp_hidden, n_layers, vocab: model shape.
        weight_bytes: bytes per weight / gradient element (2 for bf16, 4 for fp32).
        gradient_checkpointing: whether block activations are recomputed.
        head_chunk: slots per chunk of the token head (training.token_head_chunk; 0 = one call).

    Returns:
        MemoryEstimate in bytes.

    Raises:
        ValueError: stage not 2 or 3, or a non-positive size.
    """
    if stage not in (2, 3):
        raise ValueError(f"estimate_memory: ZeRO stage must be 2 or 3, got {stage}")
    if min(world_size, micro_batch, seq_len, d_model, n_layers, vocab) < 1:
        raise ValueError("estimate_memory: sizes must be positive")
    b, W = weight_bytes, world_size
    block_act = micro_batch * seq_len * (4 * d_model + 3 * mlp_hidden) * b * 2
    if gradient_checkpointing:
        acts = n_layers * micro_batch * seq_len * d_model * b + block_act
    else:
        acts = n_layers * block_act
    head_rows = micro_batch * seq_len if head_chunk <= 0 else min(head_chunk, micro_batch * seq_len)
    acts += head_rows * vocab * HEAD_BYTES_PER_LOGIT
    block_params = 4 * d_model * d_model + 3 * d_model * mlp_hidden
    return MemoryEstimate(
        stage=stage,
        world_size=W,
        weights=b * total_params / (W if stage == 3 else 1),
        gradients=b * trainable_params / W,
        optimizer=12 * trainable_params / W,
        activations=float(acts),
        gathered=float(2 * b * block_params) if stage == 3 else 0.0,
    )


def format_estimates(estimates: list[MemoryEstimate]) -> str:
    """A table (GiB) of several estimates, one line each."""
    head = f"{'ZeRO':>4} {'GPUs':>5} {'weights':>9} {'grads':>8} {'optim':>8} {'activ.':>8} {'gather':>8} {'total':>8}"
    lines = [head]
    for e in estimates:
        lines.append(
            f"{e.stage:>4} {e.world_size:>5} {e.weights / GIB:>9.2f} {e.gradients / GIB:>8.2f} "
            f"{e.optimizer / GIB:>8.2f} {e.activations / GIB:>8.2f} {e.gathered / GIB:>8.2f} {e.total / GIB:>8.2f}"
        )
    return "\n".join(lines) + "\n(GiB per GPU; add ~10-20 % for buffers and fragmentation)"
