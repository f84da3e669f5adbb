"""Prompt-prefix key/value cache for LLaDA and FlexMDM forwards (inference only; issue #14).

A masked-diffusion sampler runs the trunk on the whole canvas at every step, although the prompt
never changes. A *prefix cache* keeps, per layer, the post-RoPE keys and the values of the first
`P` canvas positions (the prompt prefix shared by every row: P = the smallest prompt length in
the batch; rows are left-aligned, so positions 0..P-1 are prompt tokens in every row). Later
forwards feed only the *live* columns P..P+Lv-1 to the trunk; their queries attend to the cached
prefix keys and to the live keys.

    full = model(ids, ..., cache_prefix=P)              # full canvas [B, P+Lv], builds the cache
    cache = full.prefix_cache                           # PrefixCache(keys, values, P, B)
    live = model(ids[:, P:], ..., prefix_cache=cache)   # live columns only -> live outputs

Exactness: when the cache comes from a forward on the SAME canvas (and, for a FlexMDM, the same
t), the cached forward computes the same math as the full forward on the live positions. Measured
on CPU (fp32, torch 2.13, 2 threads): bitwise equal for most shapes (FlexMDM 60 of 60 random
shapes, LLaDA 56 of 60, B 1-6, L 8-300); otherwise |diff| <= 3.1e-6 on logits (900-token prefix
+ 256 live, d 768), because the CPU SDPA kernel rounds a query row by its place in its query
tile and the live queries sit at other places. The same holds in bf16 (bitwise in the tests).
Building the cache (`cache_prefix=P`) never changes a forward's outputs (bitwise).

Sampler wiring (the recommended schedule, `cache_refresh=k`): on a refresh step run the FULL
forward with `cache_prefix=P` and use ITS outputs for that step (it is the uncached forward);
on the k-1 steps after it run `model(live_ids, ..., prefix_cache=cache)` on the live columns.
Then `cache_refresh=1` never runs a cached forward and is bitwise the uncached sampler, on any
device. P must stay <= every row's prompt length (the prompt is never edited), rows keep their
order (`PrefixCache.select_rows` for a sub-batch), and the live input is canvas columns P.. of
the same left-aligned layout (its attention mask = the full mask's columns P..).

Approximation (the sampler's business): reusing a cache for later steps is Fast-dLLM's
approximate prefix cache (Wu et al., 2025). The prompt's tokens never change, but its hidden
states do: in a bidirectional model the prefix attends to the response, which changes as tokens
are unmasked (and, for a FlexMDM, inserted), so cached prefix keys/values are stale by the
response's changes since the refresh. For a FlexMDM they are also stale in time: each block's
AdaLN (scale, shift) modulates the prefix's norms with the t of the refresh step, not the current
one. Insertions land after the prompt, so the prompt's positions (and RoPE phases) never shift.

Trunk cost: every LLaDA / FlexMDM output carries `trunk_positions`, the number of positions fed
to the trunk in that forward (B x L_fed; a FlexMDM's L_fed counts its length slot). Trunk FLOPs
of the forward are proportional to `trunk_positions x n_layers` (`trunk_position_layers`); this
counts the per-position projections and MLP (most of the cost), not attention's key length nor
the LM / length heads. A refresh forward counts B x (P + Lv), a cached one B x Lv.

Infilling: a FlexMDM's insertions land after the prompt, so a cached prefix never moves. A
suffix after the insertion region shifts by the number of inserted tokens and is not part of
the prefix: keep it in the live columns (the model side caches only a left prefix).

Memory: 2 x n_layers x B x n_kv_heads x P x head_dim elements in the model dtype
(`PrefixCache.nbytes`); LLaDA-8B, P = 900, bf16: 2 x 32 x 32 x 900 x 128 x 2 B = 450 MiB per row.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class PrefixCache:
    """Per-layer post-RoPE keys and values of the first `prefix_len` canvas positions.

    Attributes:
        keys: one tensor per trunk block, [B, Hkv, P, hd], post-RoPE, in the model dtype
            (Hkv = n_kv_heads: stored before the grouped-query head repetition).
        values: one tensor per trunk block, [B, Hkv, P, hd].
        prefix_len: P, the number of cached positions (absolute positions 0..P-1).
        batch_size: B; a cached forward needs exactly B rows in the same order
            (use `select_rows` when a sampler drops finished rows).

    The tensors are detached; they hold no autograd graph.
    """

    keys: tuple[torch.Tensor, ...]
    values: tuple[torch.Tensor, ...]
    prefix_len: int
    batch_size: int

    @property
    def num_layers(self) -> int:
        return len(self.keys)

    def layer(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(keys, values) of block `index`, each [B, Hkv, P, hd]."""
        return self.keys[index], self.values[index]

    def select_rows(self, rows: torch.Tensor | list[int]) -> PrefixCache:
        """The cache of the given rows (int indices or a [B] bool mask), in that order.

        Only valid while every kept row still has at least `prefix_len` prompt tokens (always
        true for rows of the batch it was built from).

        Raises:
            ValueError: a bool mask not of shape [B], or an index outside 0..B-1.
        """
        index = torch.as_tensor(rows)
        if self.keys:
            index = index.to(self.keys[0].device)
        if index.dtype == torch.bool:
            if index.shape != (self.batch_size,):
                raise ValueError(f"row mask has shape {tuple(index.shape)}, expected ({self.batch_size},)")
            index = index.nonzero().squeeze(-1)
        index = index.long().reshape(-1)
        if index.numel() and not (int(index.min()) >= 0 and int(index.max()) < self.batch_size):
            raise ValueError(f"row indices {index.tolist()} are outside 0..{self.batch_size - 1}")
        return PrefixCache(
            keys=tuple(k.index_select(0, index) for k in self.keys),
            values=tuple(v.index_select(0, index) for v in self.values),
            prefix_len=self.prefix_len,
            batch_size=int(index.numel()),
        )

    def nbytes(self) -> int:
        """Memory held by the cached tensors, in bytes."""
        return sum(t.numel() * t.element_size() for t in (*self.keys, *self.values))

    def validate(
        self,
        *,
        batch_size: int,
        num_layers: int,
        num_kv_heads: int,
        head_dim: int,
        dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        """Check the cache fits a forward; raise ValueError naming what differs and the fix.

        Raises:
            ValueError: another batch size, layer count, head shape, prefix length, dtype or device.
        """
        fix = "rebuild it with a full forward (cache_prefix=P) on this batch"
        if self.batch_size != batch_size:
            raise ValueError(
                f"prefix_cache was built for {self.batch_size} rows but the batch has {batch_size}; "
                f"{fix}, or select the kept rows with PrefixCache.select_rows"
            )
        if len(self.keys) != num_layers or len(self.values) != num_layers:
            raise ValueError(
                f"prefix_cache has {len(self.keys)} key / {len(self.values)} value layers but the "
                f"model has {num_layers} blocks; {fix}"
            )
        expected = (batch_size, num_kv_heads, self.prefix_len, head_dim)
        for i, (k, v) in enumerate(zip(self.keys, self.values, strict=True)):
            for name, tensor in (("keys", k), ("values", v)):
                if tuple(tensor.shape) != expected:
                    raise ValueError(
                        f"prefix_cache.{name}[{i}] has shape {tuple(tensor.shape)}, expected "
                        f"{expected} [B, n_kv_heads, P, head_dim]; {fix}"
                    )
                if tensor.dtype != dtype:
                    raise ValueError(
                        f"prefix_cache.{name}[{i}] is {tensor.dtype} but the model computes in {dtype}; {fix}"
                    )
                if tensor.device != device:
                    raise ValueError(
                        f"prefix_cache.{name}[{i}] is on {tensor.device} but the input is on {device}; {fix}"
                    )


def trunk_position_layers(trunk_positions: int, num_layers: int) -> int:
    """Positions x layers fed to the trunk: the trunk-FLOP count of a forward, up to a constant.

    Args:
        trunk_positions: `output.trunk_positions` (B x L_fed) of one forward.
        num_layers: the trunk's block count (`config.n_layers`, or a FlexMDM's
            `config.num_hidden_layers`).
    """
    return int(trunk_positions) * int(num_layers)


def as_prefix_len(value: object, width: int) -> int:
    """`cache_prefix` as a python int in 0..width (python / numpy ints, 0-dim integer tensors).

    Raises:
        ValueError: a bool, a non-integer or a value outside 0..width.
    """
    try:
        if isinstance(value, bool):
            raise TypeError
        prefix = operator.index(value)
    except TypeError:
        raise ValueError(f"cache_prefix={value!r} must be an int in 0..{width} (the input width)") from None
    if not 0 <= prefix <= width:
        raise ValueError(f"cache_prefix={prefix} must be an int in 0..{width} (the input width)")
    return prefix


def check_inference_only(where: str) -> None:
    """Raise ValueError if autograd is recording: the prefix cache is for sampling only."""
    if torch.is_grad_enabled():
        raise ValueError(
            f"{where}: cache_prefix / prefix_cache are inference-only; call the model under "
            "torch.no_grad() or torch.inference_mode() (training paths never use the cache)"
        )
