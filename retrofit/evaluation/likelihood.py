"""Monte-Carlo likelihood bounds for lm-eval's `loglikelihood` / `loglikelihood_rolling`.

* LLaDA (MDM baseline): LLaDA's stratified MC ELBO (docs/method.md §4.10). Row r of a group of b copies
  masks x_r = ((round(k + r T / b) - 1) mod T) + 1 of the T target tokens (k ~ U{1..T}), chosen
  uniformly; loss_r = sum_masked CE / (x_r / T); the estimate of -log p(a | c) is the mean.
* FlexMDM: the FlexMDM loss of docs/method.md §3.2 without the batch normaliser, i.e. for one t
  w_u(t) sum_masked CE + w_i(t) sum_gaps D(g, g_hat), averaged over stratified t in (0, 1).
  Its expectation over t ~ U[0, 1] upper-bounds -log p(a | c) in nats (docs/method.md §3.4; exact bound
  only when alpha(1) = 1: with geometric(10, 0.01) ~1% of the tokens are never inserted).

Both return non-negative float estimates of the negative log-likelihood (nats) per request.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from retrofit.interpolant import sample_interpolant
from retrofit.loss import bregman_poisson
from retrofit.time_sampling import sample_times
from retrofit.training.objective import forward_batch


def llada_mask_counts(num_targets: int, num_rows: int, k: int) -> list[int]:
    """Stratified masked-token counts of one MC group (docs/method.md §4.10 step 2).

    Example: T = 8, b = 4, k = 3 -> [3, 5, 7, 1] (docs/method.md §7.5).

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


def _masked_logits(model, x: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
    """Float32 logits [N, V] at the True entries of `masked` [B, L] (row-major).

    A LLaDAModelLM computes the LM head only there (`return_logits=False` + `compute_logits`);
    any other `model(x).logits` callable gets its full logits indexed.
    """
    if hasattr(model, "compute_logits"):
        hidden = model(x, return_logits=False).last_hidden_state  # [B, L, D]
        return model.compute_logits(hidden[masked]).float()
    return model(x).logits[masked].float()


def _draw_device(generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")


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
    """LLaDA's MC estimate of -log p(target | prompt) in nats (docs/method.md §4.10).

    Rows come in groups of b = min(batch_size, mc_num) (one forward pass each); group g draws
    k ~ U{1..T} and row r masks `llada_mask_counts(T, b, k)[r]` target positions chosen uniformly
    without replacement. For a model whose posterior is exactly uniform over V tokens the
    estimate is T ln V for every draw.

    Args:
        model: LLaDAModelLM, or any callable `model(input_ids [B, L]) -> .logits [B, L, V]`.
        prompt_ids: context token ids (never masked); may be empty.
        target_ids: continuation token ids (T of them).
        mask_id: the mask token id (config.mask_token_id).
        mc_num: total MC rows; rounded up to a multiple of b.
        batch_size: rows per forward pass (= b, the stratification group).
        generator: torch.Generator for every draw (on CPU unless it lives elsewhere).

    Returns:
        Mean over rows of sum_masked CE / (x_r / T), a float >= 0 (0.0 when T = 0).
    """
    device = next(model.parameters()).device
    T, P = len(target_ids), len(prompt_ids)
    if T == 0:
        return 0.0
    seq = torch.tensor(list(prompt_ids) + list(target_ids), device=device)  # [P+T]
    b = max(1, min(batch_size, mc_num))
    gen_device = _draw_device(generator)
    losses = []
    for _ in range(-(-mc_num // b)):
        k = int(torch.randint(1, T + 1, (1,), generator=generator, device=gen_device))
        counts = torch.tensor(llada_mask_counts(T, b, k), device=device)  # [b]
        # Rank random keys per row: the x_r smallest keys mark the masked target positions.
        keys = torch.rand(b, T, generator=generator, device=gen_device).to(device)
        ranks = keys.argsort(dim=1).argsort(dim=1)  # [b, T]
        masked = torch.cat([torch.zeros(b, P, dtype=torch.bool, device=device), ranks < counts[:, None]], 1)
        x = torch.where(masked, mask_id, seq.expand(b, -1))  # [b, P+T]
        ce = F.cross_entropy(_masked_logits(model, x, masked), seq.expand(b, -1)[masked], reduction="none")
        per_row = torch.zeros(b, device=device).index_add_(0, masked.nonzero()[:, 0], ce)  # [b]
        losses.append(per_row * (T / counts.float()))
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
    """FlexMDM ELBO estimate of -log p(target | prompt) in nats (docs/method.md §3.2, §3.4).

    Each row draws a time t (stratified within a group of rows, docs/method.md §3.5), samples the
    interpolant x_t of prompt + target with the prompt protected (docs/method.md §1.3-1.5) under the
    model's training schedules, and scores
    w_u(t) sum_{mask slots} CE + w_i(t) sum_{j <= n} D(g_j, g_hat_j) (the §3.2 loss without the
    batch normaliser). The mean over rows is an unbiased estimate of the bound.

    Args:
        model: a FlexMDMModel, called through `retrofit.training.objective.forward_batch` (the
            trainer's forward: per-slot cross-entropy at the mask slots, expected_gaps [B, L+1]); `model.config` gives the schedules
            (`insertion_schedule`, `unmasking_schedule`) and `mask_token_id` / `pad_token_id`.
        prompt_ids: context token ids (protected: never deleted or masked); may be empty.
        target_ids: continuation token ids.
        num_t: number of time draws (rows); rounded up to a multiple of the group size.
        batch_size: rows per forward pass (the stratification group).
        generator: torch.Generator for every draw.

    Returns:
        Mean over rows of the per-sequence loss, a float >= 0 (0.0 for an empty target).
    """
    if not target_ids:
        return 0.0
    cfg = model.config
    device = next(model.parameters()).device
    ids = torch.tensor(list(prompt_ids) + list(target_ids), device=device)  # [L]
    rows = max(1, min(batch_size, num_t))
    x1 = ids.expand(rows, -1)  # [R, L]
    real = torch.ones_like(x1, dtype=torch.bool)
    protected = (torch.arange(ids.numel(), device=device) < len(prompt_ids)).expand(rows, -1)
    totals = []
    for _ in range(-(-num_t // rows)):
        t = sample_times(rows, generator=generator).to(device)  # [R]
        s = sample_interpolant(
            x1, real, t, protected, cfg.insertion_schedule, cfg.unmasking_schedule,
            mask_id=cfg.mask_token_id, pad_id=cfg.pad_token_id, generator=generator,
        )  # fmt: skip
        batch = {"input_ids": s.x_t, "t": s.t, "attention_mask": s.slot_mask, "mask_slots": s.mask_slots,
                 "targets": s.targets}  # fmt: skip
        out = forward_batch(model, batch, "flexmdm")  # the trainer's forward (training.objective)
        ce = out.token_ce  # [N] float32 cross-entropy at the mask slots
        unmask = torch.zeros(rows, device=device).index_add_(0, s.mask_slots.nonzero()[:, 0], ce)  # [R]
        length = (bregman_poisson(s.gaps, out.expected_gaps.float()) * s.gap_mask).sum(dim=1)  # [R]
        totals.append(s.weight_unmask * unmask + s.weight_insert * length)
    return float(torch.cat(totals).mean())


@torch.no_grad()
def greedy_match(
    model, prompt_ids: list[int], target_ids: list[int], *, mask_id: int, flexmdm: bool, t: float = 1.0
) -> bool:
    """Whether one-shot argmax decoding of the fully masked target reproduces it exactly.

    The target span is masked in place (its length is given, so no insertion is needed); a
    FlexMDM is queried at time `t` (default 1.0: every token present). This is lm-eval's
    `is_greedy` flag, a rough indicator for diffusion models (there is no left-to-right greedy).

    Args:
        model: LLaDAModelLM (`model(x).logits`) or FlexMDMModel (`model(x, t).logits`).
        prompt_ids / target_ids: token ids.
        mask_id: the mask token id.
        flexmdm: whether `model` takes a time argument.
        t: FlexMDM time of the query.

    Returns:
        True iff argmax over the vocabulary at every target position equals the target.
    """
    if not target_ids:
        return True
    device = next(model.parameters()).device
    P, T = len(prompt_ids), len(target_ids)
    x = torch.tensor([list(prompt_ids) + [mask_id] * T], device=device)  # [1, P+T]
    logits = model(x, torch.full((1,), t, device=device)).logits if flexmdm else model(x).logits
    return logits[0, P:].argmax(dim=-1).tolist() == list(target_ids)
