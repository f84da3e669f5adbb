"""Model sizes of the benchmarks: `tiny`, `100m` (LLaDA-shaped, ~100M parameters) and `8b`.

`8b` is the LLaDA-8B shape (docs/method.md §2.3, §8.1: d 4096, 32 heads, MLP 12 288, vocabulary 126 464)
with only `layers` blocks, so that a single GPU can time a step; the per-block cost is the real
one. Weights are random (speed does not depend on them).

    >>> cfg = llada_config("100m")
    >>> model = build_llada("100m", device="cpu", dtype=torch.float32, seed=0)
    >>> parameter_counts(model)["total"]
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from retrofit.models.llada import LLaDAConfig, LLaDAModelLM

__all__ = ["SIZES", "ModelSize", "build_llada", "llada_config", "parameter_counts"]


@dataclass(frozen=True)
class ModelSize:
    """Shape of one benchmark model (LLaDA layout: RMSNorm, RoPE, SwiGLU, untied head).

    Attributes:
        d_model, n_layers, n_heads, mlp_hidden, vocab: the LLaDA config values.
        mask_id, pad_id: mask and pad (= EOS) token ids inside the vocabulary.
        lora_r: default LoRA rank at this size (the 8B recipe uses 128, docs/method.md §2.8).
    """

    d_model: int
    n_layers: int
    n_heads: int
    mlp_hidden: int
    vocab: int
    mask_id: int
    pad_id: int
    lora_r: int


SIZES: dict[str, ModelSize] = {
    "tiny": ModelSize(
        d_model=64, n_layers=2, n_heads=4, mlp_hidden=192, vocab=512, mask_id=511, pad_id=510, lora_r=8
    ),
    "100m": ModelSize(
        d_model=768,
        n_layers=12,
        n_heads=12,
        mlp_hidden=2048,
        vocab=8192,
        mask_id=8191,
        pad_id=8190,
        lora_r=32,
    ),
    # LLaDA-8B-Base ids (docs/method.md §8.4): mask 126 336, EOS = pad 126 081.
    "8b": ModelSize(
        d_model=4096,
        n_layers=32,
        n_heads=32,
        mlp_hidden=12288,
        vocab=126464,
        mask_id=126336,
        pad_id=126081,
        lora_r=128,
    ),
}


def _size(name: str) -> ModelSize:
    if name not in SIZES:
        raise ValueError(f"unknown model size {name!r}; choose one of {sorted(SIZES)} (--size)")
    return SIZES[name]


def llada_config(size: str, layers: int | None = None) -> LLaDAConfig:
    """LLaDAConfig of a benchmark size.

    Args:
        size: "tiny", "100m" or "8b".
        layers: number of blocks; None = the size's own (32 for "8b": use a few on one GPU).

    Returns:
        The config (vocab = embedding size; mask / pad ids inside it).

    Raises:
        ValueError: unknown size or layers < 1.
    """
    s = _size(size)
    n_layers = s.n_layers if layers is None else layers
    if n_layers < 1:
        raise ValueError(f"--layers must be >= 1, got {n_layers}")
    return LLaDAConfig(
        d_model=s.d_model,
        n_heads=s.n_heads,
        n_kv_heads=s.n_heads,
        n_layers=n_layers,
        mlp_hidden_size=s.mlp_hidden,
        vocab_size=s.vocab,
        embedding_size=s.vocab,
        mask_token_id=s.mask_id,
        eos_token_id=s.pad_id,
        pad_token_id=s.pad_id,
    )


def build_llada(
    size: str,
    *,
    layers: int | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> LLaDAModelLM:
    """A randomly initialised LLaDA of a benchmark size, built directly on ``device``.

    Args:
        size, layers: as in :func:`llada_config`.
        device: where to build (an 8B-shaped model should be built on the GPU).
        dtype: parameter dtype of the result.
        seed: torch seed of the random init (global RNG state restored after).

    Returns:
        LLaDAModelLM in train mode.
    """
    config = llada_config(size, layers)
    with torch.random.fork_rng(devices=[]), torch.device(device):
        torch.manual_seed(seed)
        model = LLaDAModelLM(config)
    return model.to(dtype=dtype).train()


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """Parameter counts of a LLaDAModelLM (shared tensors once).

    Returns:
        {"total", "embedding" (wte), "lm_head" (transformer.ff_out), "trunk" (blocks + ln_f): the
        parameters applied at every position, the N of the 4·N·tokens FLOP estimate}.
    """
    tr = model.model.transformer
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    embedding, head = count(tr.wte), count(tr.ff_out)
    total = count(model)
    return {"total": total, "embedding": embedding, "lm_head": head, "trunk": total - embedding - head}
