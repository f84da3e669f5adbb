"""FlexMDM joint interpolant: training times, hitting times -> noisy canvas x_t, gaps and targets.

Implements docs/method.md §1.3-1.5 (hitting times, compaction, gaps, prompt protection) and §3.5 (stratified
time sampling), with the invariants and test vectors of docs/method.md §7.1. Everything is vectorised over
batch and sequence and stays on the device of its inputs.

Typical use in a collator (times from `retrofit.time_sampling`)::

    t = sample_times(B, world_size=W, rank=r, generator=g)
    sample = sample_interpolant(x1, x1_mask, t, prompt_mask, make_schedule("geometric"),
                                make_schedule("linear"), mask_id=mask_id, pad_id=pad_id, generator=g)
    sample = trim_to_longest(sample)   # columns up to max(n); the model appends the length slot
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

import torch
from torch import Tensor

from retrofit.schedules import (
    Schedule,
    draw_uniform,
    make_schedule,
    sample_hitting_times,
    sample_unmasking_times,
)

__all__ = [
    "IGNORE_INDEX",
    "MDMSample",
    "mdm_forward_mask",
    "InterpolantSample",
    "build_x_t",
    "sample_interpolant",
    "trim_to_longest",
]

IGNORE_INDEX = -100
"""Value of ``targets`` at slots without an unmasking target."""

UNMASK_RATE_EPS = 1e-6
"""Guard of the unmasking weight 1 / (1 - t + 1e-6) (docs/method.md §3.2)."""


# --------------------------------------------------------------------------- x_t (§1.3-1.5)


@dataclass
class InterpolantSample:
    """One batch of the FlexMDM interpolant at times t (docs/method.md §1.4).

    Attributes:
        x_t: long [B, L], clean tokens and mask ids left-aligned, pad_id after n.
        slot_mask: bool [B, L], j < n.
        lengths: long [B], n = number of non-pad slots.
        src_index: long [B, L], s_t(j) = index in x1 of the token at slot j; 0 for j >= n.
        mask_slots: bool [B, L], slots holding the mask id (never prompt, never pad).
        targets: long [B, L], x1[s_t(j)] at mask slots, IGNORE_INDEX (-100) elsewhere.
        gaps: float32 [B, L + 1], g_j = number of deleted x1 tokens just before slot j (j = n: tail);
            0 for j > n.
        gap_mask: bool [B, L + 1], j <= n.
        t: float32 [B], the time of each row.
        weight_unmask: float32 [B], w_u = h_beta(t) with the 1e-6 guard (docs/method.md §3.2).
        weight_insert: float32 [B], w_i = h_alpha(t) (docs/method.md §3.2).
    """

    x_t: Tensor
    slot_mask: Tensor
    lengths: Tensor
    src_index: Tensor
    mask_slots: Tensor
    targets: Tensor
    gaps: Tensor
    gap_mask: Tensor
    t: Tensor
    weight_unmask: Tensor
    weight_insert: Tensor

    def trim(self, width: int) -> InterpolantSample:
        """Copy cut to ``width`` slot columns (gaps / gap_mask to width + 1).

        Raises:
            ValueError: if width < 1, width > L, or width < max(n) (a slot or gap would be lost).
        """
        full = self.x_t.shape[1]
        longest = int(self.lengths.max()) if self.lengths.numel() else 0
        if not 1 <= width <= full or width < longest:
            raise ValueError(
                f"InterpolantSample.trim: width must be in [max(1, max n = {longest}), {full}], got {width}"
            )
        cut = {}
        for name in ("x_t", "slot_mask", "src_index", "mask_slots", "targets"):
            cut[name] = getattr(self, name)[:, :width].contiguous()
        for name in ("gaps", "gap_mask"):
            cut[name] = getattr(self, name)[:, : width + 1].contiguous()
        return replace(self, **cut)

    def to(self, device: torch.device | str) -> InterpolantSample:
        """Copy with every tensor moved to ``device``."""
        return replace(self, **{k: v.to(device) for k, v in self.to_dict().items()})

    def to_dict(self) -> dict[str, Tensor]:
        """Shallow {field name: tensor} (no tensor copies)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def trim_to_longest(sample: InterpolantSample) -> InterpolantSample:
    """``sample.trim(max(max(n), 1))``: drop all-pad columns, keep every slot, target and gap."""
    longest = int(sample.lengths.max()) if sample.lengths.numel() else 0
    return sample.trim(max(longest, 1))


def build_x_t(
    x1: Tensor,
    x1_mask: Tensor,
    T1: Tensor,
    T2: Tensor,
    t: Tensor,
    protected: Tensor,
    mask_id: int,
    pad_id: int,
    *,
    insertion_schedule: Schedule | str | dict = "linear",
    unmasking_schedule: Schedule | str | dict = "linear",
    unmask_rate_eps: float = UNMASK_RATE_EPS,
) -> InterpolantSample:
    """Materialise x_t, s_t, gaps and targets from given hitting times (docs/method.md §1.4-1.5),
    deterministically.

    Token i (real, not protected) is deleted if t < T1_i, masked if T1_i <= t < T2_i, clean
    otherwise; protected tokens are always clean. Kept entries are compacted to the front in order;
    g_j = s_t(j) - s_t(j-1) - 1 with sentinels s_t(-1) = -1, s_t(n) = l (docs/method.md §1.4).

    Args:
        x1: long [B, L], clean tokens.
        x1_mask: bool [B, L], real tokens of x1 (left-aligned: True then False); l = row sum.
        T1: float [B, L], insertion times. T2: float [B, L], unmasking times (>= T1).
        t: float [B], times in [0, 1].
        protected: bool [B, L], prompt tokens (docs/method.md §1.5; may be a prefix and a suffix).
        mask_id: mask token id. pad_id: pad token id written after n.
        insertion_schedule / unmasking_schedule: alpha / beta (anything make_schedule accepts),
            used only for the loss weights.
        unmask_rate_eps: guard of w_u = beta'/(1 - beta + eps) (docs/method.md §3.2).

    Returns:
        InterpolantSample of width L (gaps L + 1).

    Raises:
        ValueError: on shape mismatches or an x1_mask that is not left-aligned.
    """
    _check_build_inputs(x1, x1_mask, T1, T2, t, protected)
    B, L = x1.shape
    real = x1_mask.bool()
    free = real & ~protected.bool()
    tt = t.reshape(B, 1)
    deleted = free & (tt < T1)
    masked = free & (tt >= T1) & (tt < T2)
    keep = real & ~deleted  # [B, L]
    lengths = keep.sum(dim=1)  # [B]
    cols = torch.arange(L, device=x1.device)
    slot_mask = cols < lengths[:, None]  # [B, L]
    # compaction: kept entry i goes to slot cumsum - 1; dropped entries to a dump column L
    dest = torch.where(keep, keep.cumsum(dim=1) - 1, L)
    src_index = torch.zeros(B, L + 1, dtype=torch.long, device=x1.device)
    src_index = src_index.scatter_(1, dest, cols.expand(B, L).contiguous())[:, :L]
    src_index = src_index.masked_fill(~slot_mask, 0)
    x_t = torch.where(masked, mask_id, x1).gather(1, src_index).masked_fill(~slot_mask, pad_id)
    mask_slots = slot_mask & masked.gather(1, src_index)
    targets = x1.gather(1, src_index).masked_fill(~mask_slots, IGNORE_INDEX)
    gaps, gap_mask = _gaps(src_index, slot_mask, lengths, real.sum(dim=1))
    w_u, w_i = _elbo_weights(t, insertion_schedule, unmasking_schedule, unmask_rate_eps)
    return InterpolantSample(
        x_t=x_t,
        slot_mask=slot_mask,
        lengths=lengths,
        src_index=src_index,
        mask_slots=mask_slots,
        targets=targets,
        gaps=gaps,
        gap_mask=gap_mask,
        t=t.float(),
        weight_unmask=w_u,
        weight_insert=w_i,
    )


def _gaps(src_index: Tensor, slot_mask: Tensor, lengths: Tensor, ell: Tensor) -> tuple[Tensor, Tensor]:
    """Gap counts [B, L+1] float32 and gap mask [B, L+1] bool via diffs with sentinels
    (docs/method.md §1.4)."""
    B, L = src_index.shape
    ell = ell[:, None]
    pos = torch.cat([torch.where(slot_mask, src_index, ell), ell], dim=1)  # s_t(j), = l for j >= n
    prev = torch.cat([torch.full_like(ell, -1), pos[:, :-1]], dim=1)  # s_t(j - 1), s_t(-1) = -1
    gap_mask = torch.arange(L + 1, device=src_index.device) <= lengths[:, None]
    gaps = torch.where(gap_mask, pos - prev - 1, 0).clamp_min(0)
    return gaps.float(), gap_mask


def _elbo_weights(t: Tensor, alpha: Any, beta: Any, eps: float) -> tuple[Tensor, Tensor]:
    """(w_u, w_i) = (h_beta(t) with guard eps, h_alpha(t)), float32 [B] (docs/method.md §3.2)."""
    w_u = make_schedule(beta).rate(t.double(), eps=eps)
    w_i = make_schedule(alpha).rate(t.double())
    return w_u.float(), w_i.float()


def _check_build_inputs(
    x1: Tensor, x1_mask: Tensor, T1: Tensor, T2: Tensor, t: Tensor, protected: Tensor
) -> None:
    if x1.dim() != 2:
        raise ValueError(f"build_x_t: x1 must be [B, L], got shape {tuple(x1.shape)}")
    for name, value in (("x1_mask", x1_mask), ("T1", T1), ("T2", T2), ("protected", protected)):
        if value.shape != x1.shape:
            raise ValueError(
                f"build_x_t: {name} must have x1's shape {tuple(x1.shape)}, got {tuple(value.shape)}"
            )
    if t.shape != (x1.shape[0],):
        raise ValueError(f"build_x_t: t must have shape ({x1.shape[0]},), got {tuple(t.shape)}")
    ell = x1_mask.sum(dim=1, keepdim=True)
    if not torch.equal(x1_mask.bool(), torch.arange(x1.shape[1], device=x1.device) < ell):
        raise ValueError(
            "build_x_t: x1_mask must be left-aligned (True for real tokens, then False for pads)"
        )


def sample_interpolant(
    x1: Tensor,
    x1_mask: Tensor,
    t: Tensor,
    protected: Tensor,
    insertion_schedule: Schedule | str | dict,
    unmasking_schedule: Schedule | str | dict,
    mask_id: int,
    pad_id: int,
    generator: torch.Generator | None = None,
    *,
    unmask_rate_eps: float = UNMASK_RATE_EPS,
) -> InterpolantSample:
    """Draw hitting times (docs/method.md §1.3) and build x_t (§1.4-1.5) for a batch.

    T1 = alpha^{-1}(u) with the eps clamp, T2 = beta^{-1} truncated to [T1, 1], independently per
    token; then :func:`build_x_t`. Args as in :func:`build_x_t`, plus ``generator`` for the
    draws (a CPU generator gives the same sample on any device).

    Returns:
        InterpolantSample of width L (call :func:`trim_to_longest` to drop all-pad columns).
    """
    alpha, beta = make_schedule(insertion_schedule), make_schedule(unmasking_schedule)
    T1 = sample_hitting_times(alpha, x1.shape, generator=generator, device=x1.device)
    T2 = sample_unmasking_times(beta, T1, generator=generator)
    kwargs = {"insertion_schedule": alpha, "unmasking_schedule": beta, "unmask_rate_eps": unmask_rate_eps}
    return build_x_t(x1, x1_mask, T1, T2, t.to(x1.device), protected, mask_id, pad_id, **kwargs)


# ------------------------------------------------------------------ the LLaDA baseline's noising
@dataclass
class MDMSample:
    """LLaDA-style masked batch (docs/method.md §3.6).

    Attributes:
        x_t: long [B, L], x1 with masked positions set to mask_id.
        masked: bool [B, L], positions that were masked (always inside response_mask).
        targets: long [B, L], x1 at masked positions, IGNORE_INDEX (-100) elsewhere.
        mask_prob: float32 [B], p = (1 - 1e-3) t + 1e-3.
    """

    x_t: Tensor
    masked: Tensor
    targets: Tensor
    mask_prob: Tensor


def mdm_forward_mask(
    x1: Tensor,
    response_mask: Tensor,
    t: Tensor,
    mask_id: int,
    generator: torch.Generator | None = None,
    *,
    t_eps: float = 1e-3,
) -> MDMSample:
    """LLaDA forward process: mask each response position independently with p = (1 - eps) t + eps
    (docs/method.md §3.6).

    Args:
        x1: long [B, L], the full canvas (prompt, response, pad/EOS tail).
        response_mask: bool [B, L], positions that may be masked and are trained. LLaDA's SFT
            convention: everything after the prompt, including the pad/EOS tail up to the canvas
            width, i.e. ``~prompt_mask``; use ``x1_mask & ~prompt_mask`` to leave pads untrained.
        t: float [B], LLaDA times in [0, 1] (t = 1 fully masked).
        mask_id: mask token id.
        generator: optional torch.Generator (a CPU generator gives the same mask on any device).
        t_eps: the 1e-3 floor of p.

    Returns:
        MDMSample with x_t, masked, targets and mask_prob.

    Raises:
        ValueError: if response_mask / t do not match x1.
    """
    if response_mask.shape != x1.shape or t.shape != (x1.shape[0],):
        raise ValueError(
            f"mdm_forward_mask: need response_mask {tuple(x1.shape)} and t ({x1.shape[0]},), "
            f"got {tuple(response_mask.shape)} and {tuple(t.shape)}"
        )
    p = (1.0 - t_eps) * t.float().to(x1.device) + t_eps  # [B]
    u = draw_uniform(x1.shape, generator=generator, device=x1.device, dtype=torch.float32)
    masked = (u < p[:, None]) & response_mask.bool()
    return MDMSample(
        x_t=x1.masked_fill(masked, mask_id),
        masked=masked,
        targets=x1.masked_fill(~masked, IGNORE_INDEX),
        mask_prob=p,
    )
