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
t), the cached forward's outputs on the live positions equal the full forward's there (fp32 on
CPU: bitwise in the tests of tests/models/test_prefix_cache.py). A sampler that recomputes the
cache every step (`cache_refresh=1`) therefore reproduces the uncached sampler exactly.

Approximation (the sampler's business): reusing a cache for later steps is Fast-dLLM's
approximate prefix cache (Wu et al., 2025). The prompt's tokens never change, but its hidden
states do: in a bidirectional model the prefix attends to the response, which changes as tokens
are unmasked (and, for a FlexMDM, inserted), so cached prefix keys/values are stale by the
response's changes since the refresh. For a FlexMDM they are also stale in time: each block's
AdaLN (scale, shift) modulates the prefix's norms with the t of the refresh step, not the current
one. Insertions land after the prompt, so the prompt's positions (and RoPE phases) never shift.

Trunk cost: every LLaDA / FlexMDM output carries `trunk_positions`, the number of positions fed
to the trunk in that forward (B x L_fed; a FlexMDM's L_fed counts its length slot). Trunk FLOPs
of the forward are proportional to `trunk_positions x n_layers` (`trunk_position_layers`).
"""

from __future__ import annotations

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


def check_inference_only(where: str) -> None:
    """Raise ValueError if autograd is recording: the prefix cache is for sampling only."""
    if torch.is_grad_enabled():
        raise ValueError(
            f"{where}: cache_prefix / prefix_cache are inference-only; call the model under "
            "torch.no_grad() or torch.inference_mode() (training paths never use the cache)"
        )
