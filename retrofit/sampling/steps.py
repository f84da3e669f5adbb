"""Step helpers of the FlexMDM sampler (docs/method.md §4.2-§4.4, §4.7), each a pure function testable alone.

One sampler step at time t with step size dt is (docs/method.md §4.2 order):

1. ``predict``: one forward pass on the columns in use -> token logits and expected gaps ĝ.
2. Unmask on the pre-insertion canvas: ``unmask_count`` (K ~ Poisson(N h_β(t) dt), clamped),
   optional ``window_size`` / ``first_k_eligible``, ``confidence``, ``select_top_k``, ``draw_tokens``.
3. Insert: ``insertion_counts`` (e_j ~ Poisson(ĝ_j h_α(t) dt) on ``allowed_gaps``),
   ``cap_insertions`` (max-length policy), ``insert_masks`` (rebuild the canvas).

``editable_slots`` / ``allowed_gaps`` are the protection rules (docs/method.md §1.5, §4.4): the prompt (or
prefix and suffix) is never unmasked into and never receives insertions, so it stays bit-identical.

All random numbers come from ``rand``: the sampler's per-row
:class:`~retrofit.sampling.draws.RowRandom` (each row its own stream), or the single-generator
:class:`~retrofit.sampling.draws.RandomSource`; both have ``uniform`` and ``poisson``.

Example::

    canvas, lengths = insert_masks(canvas, lengths, e, mask_id=M, pad_id=PAD)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from retrofit.sampling.draws import RandomSource, RowRandom
from retrofit.sampling.flexmdm_config import CONFIDENCE_METHODS
from retrofit.sampling.prompt_cache import PromptCache

__all__ = [
    "Prediction",
    "above_threshold",
    "allowed_gaps",
    "cap_insertions",
    "confidence",
    "draw_tokens",
    "editable_slots",
    "first_k_eligible",
    "insert_masks",
    "insertion_counts",
    "predict",
    "select_top_k",
    "unmask_count",
    "window_size",
]


@dataclass
class Prediction:
    """Model outputs on the columns in use.

    Attributes:
        logits: [B, W, V] token logits in the model's dtype (cast to float32 where used).
        expected_gaps: [B, W + 1] float32 ĝ >= 0 (gap j is read at position j; docs/method.md §2.2).
    """

    logits: Tensor
    expected_gaps: Tensor


def predict(
    model,
    canvas: Tensor,
    lengths: Tensor,
    t: float,
    width: int,
    logits_mask: Tensor | None = None,
    cache: PromptCache | None = None,
) -> Prediction:
    """One forward pass on the first ``width`` columns (docs/method.md §4.1; the model appends the
    length slot).

    Args:
        model: callable ``model(input_ids=[B, W] long, t=[B] float, attention_mask=[B, W] long)``
            returning an object with ``.logits`` [B, W, V] and ``.expected_gaps`` [B, W + 1].
        canvas: [B, L] int64 canvas, L >= width.
        lengths: [B] int64 number of real (left-aligned) slots n_b <= width.
        t: FlexMDM time in [0, 1] (docs/method.md §1.1).
        width: columns to run on (the longest row when trimming, else L).
        logits_mask: optional [B, width] bool, passed on as ``logits_mask=`` to a model that then
            returns logits [N, V] for those slots only (FlexMDMModel); they are scattered into a
            [B, width, V] tensor that holds 0 elsewhere (the sampler reads only those slots).
        cache: the run's `PromptCache` (None = the plain forward). A cached call returns the live
            columns only; logits of the prompt columns are then 0 and their gaps 0 (the sampler
            neither unmasks nor inserts there).

    Returns:
        Prediction (logits in the model's dtype, expected_gaps float32 clamped >= 0).

    Raises:
        ValueError: the model's outputs have the wrong shapes.
    """
    B = canvas.shape[0]
    ids = canvas[:, :width]
    attention_mask = (torch.arange(width, device=canvas.device)[None, :] < lengths[:, None]).long()
    t_vec = torch.full((B,), float(t), device=canvas.device, dtype=torch.float32)
    if cache is None:
        kwargs = {} if logits_mask is None else {"logits_mask": logits_mask}
        out, offset = model(input_ids=ids, t=t_vec, attention_mask=attention_mask, **kwargs), 0
    else:
        out, offset = cache(model, ids, attention_mask, logits_mask, t=t_vec)
    logits, gaps = out.logits, out.expected_gaps
    if logits_mask is not None and logits.dim() == 2:  # the masked slots, in row-major order
        dense = logits.new_zeros(B, width, logits.shape[-1])
        dense[logits_mask] = logits
        logits = dense
    elif offset:
        logits = torch.cat([logits.new_zeros(B, offset, logits.shape[-1]), logits], dim=1)
    if offset:
        gaps = torch.cat([gaps.new_zeros(B, offset), gaps], dim=1)
    if logits.shape[:2] != (B, width) or tuple(gaps.shape) != (B, width + 1):
        raise ValueError(
            f"sampler: model returned logits {tuple(logits.shape)} / expected_gaps {tuple(gaps.shape)}; "
            f"expected [{B}, {width}, V] / [{B}, {width + 1}] (the model must append the length slot)"
        )
    return Prediction(logits, gaps.float().clamp_min(0.0))


def editable_slots(lengths: Tensor, pre_len: Tensor, suf_len: Tensor, width: int) -> Tensor:
    """Slots the sampler may unmask: pre_len <= j < n - suf_len (docs/method.md §1.5, §4.4).

    Args:
        lengths: [B] int64 n_b. pre_len: [B] prompt / prefix lengths. suf_len: [B] suffix lengths
            (0 when not infilling).
        width: number of columns.

    Returns:
        [B, width] bool.
    """
    j = torch.arange(width, device=lengths.device)[None, :]
    return (j >= pre_len[:, None]) & (j < (lengths - suf_len)[:, None])


def allowed_gaps(lengths: Tensor, pre_len: Tensor, suf_len: Tensor, num_gaps: int) -> Tensor:
    """Gaps that may receive insertions: pre_len <= j <= n - suf_len (docs/method.md §4.2 step 3.2, §4.4).

    Returns:
        [B, num_gaps] bool (num_gaps = width + 1).
    """
    j = torch.arange(num_gaps, device=lengths.device)[None, :]
    return (j >= pre_len[:, None]) & (j <= (lengths - suf_len)[:, None])


def unmask_count(num_masks: Tensor, hazard_dt: float, rand: RowRandom | RandomSource) -> Tensor:
    """K ~ Poisson(N · h_β(t) · dt) per row (docs/method.md §4.2 step 2.2), not yet clamped.

    Args:
        num_masks: [B] int64 N, the eligible masks of each row.
        hazard_dt: h_β(t) · dt (e.g. linear, t = 0.5, dt = 1/256: 2/256).
        rand: the run's random source (RowRandom or RandomSource).

    Returns:
        [B] int64 counts.
    """
    return rand.poisson(num_masks.to(torch.float64) * hazard_dt)


def window_size(k: Tensor, alpha_win: float, max_window: int, num_masks: Tensor) -> Tensor:
    """Sliding-window size w = min(floor(alpha_win · K), max_window, N)
    (docs/method.md §4.2 step 2.4, §7.3.8).

    Example: K = 3, alpha_win = 15, max_window = 32, N = 50 -> 32.

    Returns:
        [B] int64.
    """
    w = torch.floor(k.to(torch.float64) * alpha_win).to(torch.long)
    return torch.minimum(w.clamp(max=max_window), num_masks)


def first_k_eligible(eligible: Tensor, k: Tensor) -> Tensor:
    """Keep only the first k[b] eligible slots of each row, in position order (the window).

    Args:
        eligible: [B, W] bool. k: [B] int64.

    Returns:
        [B, W] bool.
    """
    return eligible & (torch.cumsum(eligible.long(), dim=-1) <= k[:, None])


def _masked_softmax(logits: Tensor, banned: Tensor | None) -> Tensor:
    if banned is not None:
        logits = logits.masked_fill(banned, float("-inf"))
    return torch.softmax(logits.float(), dim=-1)


def above_threshold(logits: Tensor, eligible: Tensor, tau: float, banned: Tensor | None = None) -> Tensor:
    """Eligible slots whose top token probability is >= tau (threshold unmasking, issue #14).

    The rule of Fast-dLLM's parallel decoding (Wu et al., 2025): a slot whose most likely token
    has probability >= tau is unmasked now, whatever the schedule says. Both samplers use it.

    Args:
        logits: [B, W, V] float logits. eligible: [B, W] bool slots that may be unmasked now.
        tau: threshold in (0, 1]. banned: optional [V] bool tokens excluded from p.

    Returns:
        [B, W] bool, a subset of eligible.
    """
    out = torch.zeros_like(eligible)
    if bool(eligible.any()):
        out[eligible] = _masked_softmax(logits[eligible], banned).max(dim=-1).values >= tau
    return out


def confidence(
    method: str,
    logits: Tensor,
    eligible: Tensor,
    lengths: Tensor,
    rand: RowRandom | RandomSource,
    banned: Tensor | None = None,
) -> Tensor:
    """Confidence c_j of each eligible slot (docs/method.md §4.3); -inf elsewhere.

    With p = softmax(logits_j) over allowed tokens: ``top_prob`` max p; ``prob_diff`` p(1) - p(2);
    ``entropy`` Σ p ln(p + 1e-10); ``position`` 1 - j / max(n, 1); ``random`` U[0, 1) (the
    ancestral choice of slots; one uniform per column is always drawn for this method).

    Args:
        method: one of CONFIDENCE_METHODS.
        logits: [B, W, V] float logits.
        eligible: [B, W] bool slots that may be unmasked now.
        lengths: [B] int64 n_b (for ``position``).
        rand: the run's random source (RowRandom or RandomSource).
        banned: optional [V] bool tokens excluded from p (mask id, pad id).

    Returns:
        [B, W] float64.

    Raises:
        ValueError: unknown method.
    """
    B, W = eligible.shape
    out = torch.full((B, W), float("-inf"), dtype=torch.float64, device=eligible.device)
    if method == "random":
        return torch.where(eligible, rand.uniform(B, W, eligible.device), out)
    if method == "position":
        j = torch.arange(W, device=eligible.device, dtype=torch.float64)[None, :]
        c = 1.0 - j / lengths.clamp_min(1).to(torch.float64)[:, None]
        return torch.where(eligible, c, out)
    if method not in CONFIDENCE_METHODS:
        raise ValueError(f"sampler config: confidence must be one of {CONFIDENCE_METHODS}, got {method!r}")
    p = _masked_softmax(logits[eligible], banned)  # [Ne, V], only where needed
    if method == "top_prob":
        c = p.max(dim=-1).values
    elif method == "prob_diff":
        top2 = p.topk(min(2, p.shape[-1]), dim=-1).values
        c = top2[:, 0] - (top2[:, 1] if top2.shape[-1] > 1 else 0.0)
    else:  # entropy
        c = (p * torch.log(p + 1e-10)).sum(dim=-1)
    out[eligible] = c.to(torch.float64)
    return out


def select_top_k(conf: Tensor, eligible: Tensor, k: Tensor) -> Tensor:
    """The k[b] most confident eligible slots per row; ties go to the leftmost slot.

    k is clamped to the number of eligible slots (docs/method.md §4.7.2 fix): ineligible slots are never
    chosen, and eligible slots with confidence -inf are still chosen before none.

    Args:
        conf: [B, W] float confidences. eligible: [B, W] bool. k: [B] int64.

    Returns:
        [B, W] bool chosen slots (a subset of eligible), k[b] of them (after the clamp).
    """
    by_conf = torch.sort(conf, dim=-1, descending=True, stable=True).indices
    by_eligible = torch.sort(eligible.gather(-1, by_conf).to(torch.int8), dim=-1, descending=True,
                             stable=True).indices  # fmt: skip
    order = by_conf.gather(-1, by_eligible)  # eligible first, each group by confidence
    positions = torch.arange(order.shape[-1], device=order.device).expand_as(order).contiguous()
    ranks = torch.empty_like(order).scatter_(-1, order, positions)  # rank of each slot
    return eligible & (ranks < k[:, None])


def draw_tokens(
    logits: Tensor,
    u: Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    banned: Tensor | None = None,
) -> Tensor:
    """Draw one token per row of ``logits`` by inverse CDF with the given uniforms (docs/method.md §4.7.3).

    Banned ids (mask, pad) get probability 0, so they are never emitted. ``temperature == 0`` is
    argmax. Otherwise tokens are sorted by probability, top-k / top-p (nucleus; the most likely
    token is always kept) are applied to p ∝ exp(logits / temperature), and the token whose CDF
    interval holds u is returned.

    Args:
        logits: [N, V] float logits. u: [N] float64 uniforms in [0, 1).
        temperature: >= 0. top_k: keep the k most likely tokens (None = all).
        top_p: keep the smallest prefix of sorted tokens with mass >= top_p (None = all).
        banned: optional [V] bool.

    Returns:
        [N] int64 token ids.
    """
    logits = logits.float()
    if banned is not None:
        logits = logits.masked_fill(banned, float("-inf"))
    if temperature == 0 or logits.shape[0] == 0:
        return logits.argmax(dim=-1)
    sorted_logits, order = torch.sort(logits / temperature, dim=-1, descending=True, stable=True)
    if top_k is not None:
        sorted_logits[:, top_k:] = float("-inf")
    probs = torch.softmax(sorted_logits.to(torch.float64), dim=-1)
    if top_p is not None:
        mass_before = torch.cumsum(probs, dim=-1) - probs
        probs = probs.masked_fill(mass_before >= top_p, 0.0)  # column 0 has mass_before 0: kept
    cdf = torch.cumsum(probs, dim=-1)
    x = (u.to(torch.float64) * cdf[:, -1]).unsqueeze(-1)
    idx = torch.searchsorted(cdf, x, right=True).clamp(max=logits.shape[-1] - 1)
    return order.gather(-1, idx).squeeze(-1)


def insertion_counts(
    expected_gaps: Tensor, allowed: Tensor, hazard_dt: float | None, rand: RowRandom | RandomSource
) -> Tensor:
    """e_j ~ Poisson(ĝ_j · h_α(t) · dt) on allowed gaps, 0 elsewhere (docs/method.md §4.2 step 3.1-3.2).

    Args:
        expected_gaps: [B, G] float ĝ >= 0 (G = width + 1).
        allowed: [B, G] bool from :func:`allowed_gaps`.
        hazard_dt: h_α(t) · dt; None means a factor of 1 (the final insertion at t = 1 of the
            mass still pending: e_j ~ Poisson(ĝ_j)).
        rand: the run's random source (a RandomSource with full_width draws at full_width + 1 columns).

    Returns:
        [B, G] int64.
    """
    rates = expected_gaps.to(torch.float64) * (1.0 if hazard_dt is None else hazard_dt)
    return rand.poisson(torch.where(allowed, rates, torch.zeros_like(rates)), extra=1)


def cap_insertions(e: Tensor, lengths: Tensor, cap: Tensor) -> tuple[Tensor, Tensor]:
    """Drop insertions that would make a row longer than its cap.

    Policy (fixes docs/method.md §4.7.4, which dropped the whole step): insertions are kept in gap order,
    left to right, while they fit; the overflowing ones (the rightmost) are dropped. So a row
    that would overflow ends exactly at its cap.

    Args:
        e: [B, G] int64 proposed insertion counts. lengths: [B] int64 n_b. cap: [B] int64 max n'.

    Returns:
        (kept [B, G] int64, dropped [B] int64 = e.sum(-1) - kept.sum(-1)).
    """
    room = (cap - lengths).clamp_min(0)
    before = torch.cumsum(e, dim=-1) - e
    kept = torch.minimum(e, (room[:, None] - before).clamp_min(0))
    return kept, (e - kept).sum(-1)


def insert_masks(
    canvas: Tensor, lengths: Tensor, e: Tensor, mask_id: int, pad_id: int, out_width: int | None = None
) -> tuple[Tensor, Tensor]:
    """Insert e_j masks before slot j (j = n: at the tail) and shift slots (docs/method.md §4.2 step 3.4).

    Old slot j moves to j + Σ_{k<=j} e_k; new slots are M; columns >= n' are pad.
    docs/method.md §7.3.7: [7, 8, M, 9, ∅…], e = [0, 0, 2, 0, 1] -> [7, 8, M, M, M, 9, M, ∅].

    Args:
        canvas: [B, W] int64. lengths: [B] int64 n_b <= W.
        e: [B, W + 1] int64 insertion counts (0 for j > n).
        mask_id, pad_id: token ids of M and ∅.
        out_width: width of the result (default W); must be >= every new length.

    Returns:
        (new canvas [B, out_width] int64, new lengths [B] int64).

    Raises:
        ValueError: a new length exceeds out_width.
    """
    W = canvas.shape[1]
    out_width = W if out_width is None else out_width
    new_lengths = lengths + e.sum(-1)
    if bool((new_lengths > out_width).any()):
        raise ValueError(f"insert_masks: new length {int(new_lengths.max())} > canvas width {out_width}")
    j = torch.arange(W, device=canvas.device)[None, :]
    new_pos = j + torch.cumsum(e, dim=-1)[:, :W]
    new_pos = torch.where(j < lengths[:, None], new_pos, torch.full_like(new_pos, out_width))  # drop
    k = torch.arange(out_width + 1, device=canvas.device)[None, :]
    out = torch.where(k < new_lengths[:, None], mask_id, pad_id).to(canvas.dtype)  # [B, out_width + 1]
    out.scatter_(1, new_pos, canvas)
    return out[:, :out_width], new_lengths
