"""The samplers' prompt cache: refresh schedule around the models' prefix KV cache (issue #14).

Both samplers run their model through one :class:`PromptCache` per sampling run. With
``refresh=None`` (``prompt_cache`` off) every call is the plain forward. With ``refresh=k``, the
first call and then every k-th call is a *refresh*: the full forward with ``cache_prefix=P``,
whose own outputs serve that step and which also returns the prompt's per-layer keys / values
(`retrofit.models.prefix_cache.PrefixCache`). The k - 1 calls after a refresh feed only the live
columns P.. to the trunk; their queries attend to the cached prompt keys. So ``refresh=1`` never
runs a cached forward and is the uncached sampler exactly, and larger k trades exactness for
trunk compute: the cached prompt states are stale by whatever the response (and, for a FlexMDM,
t) did since the refresh (Fast-dLLM's approximate prefix cache; docs/design.md "Fast sampling").

P is the shortest prompt (FlexMDM: the shortest protected front, i.e. prompt or infill prefix) in
the batch: rows are left-aligned, so columns 0..P-1 are prompt tokens in every row, and a
FlexMDM inserts only after its front, so those positions never shift. An infilling suffix moves
right as tokens are inserted before it: it stays in the live columns and is recomputed at every
step (re-rotating cached keys by the shift would also be exact for RoPE scores, but the suffix
then still attends to a changing middle; recomputing is simpler and what the model side offers).

Outputs of a cached call are mapped back to canvas columns by the caller with `offset` (= P):
live column i is canvas column P + i; a FlexMDM's live gap i is canvas gap P + i.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from retrofit.sampling.batch import accepts_argument

__all__ = ["PromptCache"]


class PromptCache:
    """Which forward to run at each sampler step, and the cache between refreshes.

    Args:
        refresh: k, the number of model calls a cache serves (the refresh call included);
            None = no cache (every call is the plain forward).
        prefix_len: P, columns 0..P-1 are prompt tokens in every row (0 = nothing to cache).
        model: when given and its forward takes no ``cache_prefix`` (a model without the prefix
            cache, e.g. a test double), the cache stays off.

    Raises:
        ValueError: refresh < 1 or prefix_len < 0.
    """

    def __init__(self, refresh: int | None, prefix_len: int, model: Any = None):
        if refresh is not None and refresh < 1:
            raise ValueError(f"cache_refresh must be >= 1, got {refresh}")
        if prefix_len < 0:
            raise ValueError(f"prefix_len must be >= 0, got {prefix_len}")
        if model is not None and not accepts_argument(model, "cache_prefix"):
            refresh = None
        self.refresh, self.prefix_len = refresh, int(prefix_len)
        self._cache: Any = None
        self._age = 0
        self.trunk_positions = 0  # positions fed to the trunk by every call of this run

    @property
    def active(self) -> bool:
        """Whether calls may be served by the cache (refresh set and a prompt to cache)."""
        return self.refresh is not None and self.prefix_len > 0

    def __call__(
        self,
        model: Any,
        input_ids: Tensor,
        attention_mask: Tensor,
        logits_mask: Tensor | None = None,
        **kwargs: Any,
    ) -> tuple[Any, int]:
        """One model call -> (output, offset): outputs cover canvas columns offset.. .

        Args:
            model: LLaDAModelLM / FlexMDMModel (forward takes cache_prefix / prefix_cache).
            input_ids: [B, W] int64 canvas columns 0..W-1. attention_mask: [B, W].
            logits_mask: optional [B, W] bool, passed on (sliced to the live columns when cached;
                it must be False on columns < P, which hold the prompt).
            **kwargs: further forward arguments (a FlexMDM's ``t``).
        """
        if not self.active:
            out = model(input_ids=input_ids, attention_mask=attention_mask, **_with_mask(kwargs, logits_mask))
            self._count(out, input_ids)
            return out, 0
        P = self.prefix_len
        if self._cache is None or self._age >= self.refresh:
            out = model(input_ids=input_ids, attention_mask=attention_mask, cache_prefix=P,
                        **_with_mask(kwargs, logits_mask))  # fmt: skip
            self._cache, self._age = out.prefix_cache, 1
            self._count(out, input_ids)
            return out, 0
        self._age += 1
        live_mask = None if logits_mask is None else logits_mask[:, P:]
        out = model(input_ids=input_ids[:, P:], attention_mask=attention_mask[:, P:], prefix_cache=self._cache,
                    **_with_mask(kwargs, live_mask))  # fmt: skip
        self._count(out, input_ids[:, P:])
        return out, P

    def _count(self, out: Any, fed: Tensor) -> None:
        self.trunk_positions += int(getattr(out, "trunk_positions", None) or fed.numel())


def _with_mask(kwargs: dict[str, Any], logits_mask: Tensor | None) -> dict[str, Any]:
    return kwargs if logits_mask is None else {**kwargs, "logits_mask": logits_mask}
