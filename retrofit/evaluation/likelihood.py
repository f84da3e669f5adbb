"""Monte-Carlo likelihood bounds for lm-eval's `loglikelihood` / `loglikelihood_rolling`.

* LLaDA (MDM baseline): LLaDA's stratified MC ELBO (spec §4.10). Row r of a group of b copies
  masks x_r = ((round(k + r T / b) - 1) mod T) + 1 of the T target tokens (k ~ U{1..T}), chosen
  uniformly; loss_r = sum_masked CE / (x_r / T); the estimate of -log p(a | c) is the mean.
* FlexMDM: the FlexMDM loss of spec §3.2 without the batch normaliser, i.e. for one t
  w_u(t) sum_masked CE + w_i(t) sum_gaps D(g, g_hat), averaged over stratified t in (0, 1).
  Its expectation over t ~ U[0, 1] upper-bounds -log p(a | c) in nats (spec §3.4; exact bound
  only when alpha(1) = 1: with geometric(10, 0.01) ~1% of the tokens are never inserted).

Both return non-negative float estimates of the negative log-likelihood (nats) per request.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from retrofit.interpolant import sample_interpolant, sample_times
from retrofit.loss import bregman_poisson


def llada_mask_counts(num_targets: int, num_rows: int, k: int) -> list[int]:
    """Stratified masked-token counts of one MC group (spec §4.10 step 2).

    Example: T = 8, b = 4, k = 3 -> [3, 5, 7, 1] (spec §7.5).

    Args:
        num_targets: T >= 1, number of target tokens.
        num_rows: b >= 1, rows in the group.
        k: base count in 1..T.

    Returns:
        b counts, each in 1..T.
    """
    if num_targets < 1 or num_rows < 1 or not 1 <= k <= num_targets:
        raise ValueError(f"need T >= 1, b >= 1 and 1 <= k <= T, got T={num_targets}, b={num_rows}, k={k}")
    return [((round(k + r * num_targets / num_rows) - 1) % num_targets) + 1 for r in range(num_rows)]


@torch.no_grad()
def llada_nll(
    model,
    prompt_ids: list[int],
    target_ids: list[int],
    *,
    mask_id: int,
    mc_num: int = 128,
    batch_size: int = 32,
    generator: torch.Generator | None = None,
) -> float:
    """LLaDA's MC estimate of -log p(target | prompt) in nats (spec §4.10).

    Args:
        model: callable `model(input_ids [B, L]) -> .logits [B, L, V]` (LLaDAModelLM).
        prompt_ids / target_ids: token ids; the prompt is never masked.
        mask_id: the mask token id (config.mask_token_id).
        mc_num: total MC rows; rounded up to a multiple of `batch_size`.
        batch_size: rows per forward pass (= b, the stratification group).

    Returns:
        Mean over rows of sum_masked CE / (x_r / T).
    """
    device = next(model.parameters()).device
    T, P = len(target_ids), len(prompt_ids)
    if T == 0:
        return 0.0
    seq = torch.tensor(prompt_ids + target_ids, device=device)
    b = max(1, min(batch_size, mc_num))
    losses = []
    for _ in range(max(1, -(-mc_num // b))):
        k = int(torch.randint(1, T + 1, (1,), generator=generator))
        counts = torch.tensor(llada_mask_counts(T, b, k))  # [b]
        # Rank random keys per row: the x_r smallest keys are the masked target positions.
        keys = torch.rand(b, T, generator=generator)
        ranks = keys.argsort(dim=1).argsort(dim=1)
        masked_t = (ranks < counts[:, None]).to(device)  # [b, T]
        masked = torch.cat([torch.zeros(b, P, dtype=torch.bool, device=device), masked_t], dim=1)
        x = torch.where(masked, torch.full_like(masked, mask_id, dtype=torch.long), seq.expand(b, -1))
        logits = model(x).logits.float()  # [b, P+T, V]
        ce = F.cross_entropy(logits[masked], seq.expand(b, -1)[masked], reduction="none")
        row = masked.nonzero()[:, 0]
        per_row = torch.zeros(b, device=device).index_add_(0, row, ce)
        losses.append(per_row / (counts.to(device).float() / T))
    return float(torch.cat(losses).mean())


@torch.no_grad()
def flexmdm_nll(
    model,
    prompt_ids: list[int],
    target_ids: list[int],
    *,
    num_t: int = 32,
    batch_size: int = 32,
    generator: torch.Generator | None = None,
) -> float:
    """FlexMDM ELBO estimate of -log p(target | prompt) in nats (spec §3.2, §3.4).

    Args:
        model: a FlexMDMModel (`model(input_ids, t, attention_mask, logits_mask)` ->
            logits at the masked slots [N, V] and expected_gaps [B, L+1]); its config gives the
            schedules, mask and pad ids.
        prompt_ids / target_ids: token ids; prompt tokens are protected (never deleted/masked).
        num_t: number of stratified times t (rows); rounded up to a multiple of batch_size.

    Returns:
        Mean over t draws of w_u sum CE + w_i sum D(g, g_hat) for the single sequence.
    """
    cfg = model.config
    device = next(model.parameters()).device
    ids = prompt_ids + target_ids
    if not target_ids:
        return 0.0
    L = len(ids)
    totals = []
    rows = max(1, min(batch_size, num_t))
    for _ in range(max(1, -(-num_t // rows))):
        x1 = torch.tensor(ids, device=device).expand(rows, L)
        x1_mask = torch.ones(rows, L, dtype=torch.bool, device=device)
        protected = torch.zeros(rows, L, dtype=torch.bool, device=device)
        protected[:, : len(prompt_ids)] = True
        t = sample_times(rows, generator=generator).to(device)
        s = sample_interpolant(
            x1, x1_mask, t, protected, cfg.insertion_schedule, cfg.unmasking_schedule,
            mask_id=cfg.mask_token_id, pad_id=cfg.pad_token_id, generator=generator,
        )  # fmt: skip
        out = model(s.x_t, s.t, attention_mask=s.slot_mask, logits_mask=s.mask_slots)
        ce = F.cross_entropy(out.logits.float(), s.targets[s.mask_slots], reduction="none")
        unmask = torch.zeros(rows, device=device).index_add_(0, s.mask_slots.nonzero()[:, 0], ce)
        d = bregman_poisson(s.gaps, out.expected_gaps.float()) * s.gap_mask
        totals.append(s.weight_unmask * unmask + s.weight_insert * d.sum(dim=1))
    return float(torch.cat(totals).mean())


@torch.no_grad()
def greedy_match(model, prompt_ids: list[int], target_ids: list[int], *, mask_id: int, flexmdm: bool) -> bool:
    """Whether one-shot argmax decoding of the fully masked target reproduces it exactly.

    The target span is masked in place (its length given); for a FlexMDM the time is t = 1.
    """
    device = next(model.parameters()).device
    P, T = len(prompt_ids), len(target_ids)
    x = torch.tensor([prompt_ids + [mask_id] * T], device=device)
    if flexmdm:
        logits = model(x, torch.ones(1, device=device)).logits
    else:
        logits = model(x).logits
    pred = logits[0, P:].argmax(dim=-1).tolist()
    return pred == list(target_ids)
