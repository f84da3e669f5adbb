"""Expected fraction of canvas positions a trimmed FlexMDM step computes (docs/method.md §1.3, §3.5).

A non-prompt token of x1 is present in x_t with probability q(t) = alpha((t - eps) / (1 - eps))
(eps = 1e-6, the hitting-time clamp of docs/method.md §1.3), independently, so row b of a micro-batch has

    n_b = P_b + Binomial(l_b - P_b, q(t_b))            (docs/method.md §7.1 item 6: E n = P + (l - P) q(t)).

A trimmed micro-batch is w = max(max_b n_b, 1) slots wide and the model appends the length slot,
so it computes B (w + 1) positions against B (L + 1) untrimmed. Given the times and lengths,

    E[max_b n_b] = sum_{k=0}^{L-1} (1 - prod_b P(n_b <= k))

exactly (binomial CDFs). This is averaged over ``draws`` micro-batch draws of the collator's own
time sampler (`retrofit.training.collator.TimeSampler`: stratified, banded or uniform; banded
draws cycle through all G bands) and of the x1 lengths.

    >>> monte_carlo_computed_fraction(batch=4, canvas=512, time_mode="banded", grad_accum=8, table=table)

`retrofit.bench.trim_cost` computes the prompt-free case by quadrature (exact, faster); this
module exists for x1 with a protected prompt (GSM8K-shaped lengths), which it does not cover.
"""

from __future__ import annotations

import torch

from retrofit.bench.lengths import LengthTable
from retrofit.schedules import HITTING_TIME_EPS, make_schedule

__all__ = ["monte_carlo_computed_fraction", "expected_max_slots"]


def expected_max_slots(q: torch.Tensor, lengths: torch.Tensor, prompts: torch.Tensor) -> torch.Tensor:
    """E[max(max_b n_b, 1)] per micro-batch, n_b = P_b + Binomial(l_b - P_b, q_b).

    Args:
        q: float64 [M, B] presence probabilities in [0, 1].
        lengths: long [M, B] x1 lengths l_b. prompts: long [M, B] protected tokens P_b <= l_b.

    Returns:
        float64 [M].
    """
    top = int(lengths.max())  # n <= max l: P(max n > k) = 0 for k >= top
    k = torch.arange(top + 1)  # values of n
    log_fact = torch.lgamma(torch.arange(top + 1, dtype=torch.float64) + 1)  # log m!, m = 0..top
    free = (lengths - prompts)[..., None]  # [M, B, 1]
    j = k - prompts[..., None]  # successes needed for n = k, [M, B, L + 1]
    valid = (j >= 0) & (j <= free)
    jc, rest = j.clamp(min=0), (free - j).clamp(min=0)
    qq = q.double()[..., None]
    log_pmf = (
        log_fact[free] - log_fact[jc] - log_fact[rest]
        + torch.xlogy(jc.double(), qq) + torch.xlogy(rest.double(), 1 - qq)
    )  # fmt: skip
    cdf = torch.where(valid, log_pmf.exp(), 0.0).cumsum(-1).clamp(max=1.0)  # [M, B, top + 1]
    all_below = cdf.prod(dim=1)  # [M, top + 1], P(max n <= k)
    return (1.0 - all_below[:, :top]).sum(-1) + all_below[:, 0]


def monte_carlo_computed_fraction(
    *,
    batch: int,
    canvas: int,
    time_mode: str = "stratified",
    grad_accum: int = 1,
    trim: bool = True,
    table: LengthTable | None = None,
    insertion_schedule: str | dict = "geometric",
    draws: int = 1024,
    seed: int = 0,
) -> float:
    """Expected (positions computed) / (positions of the untrimmed canvas) of a FlexMDM micro-step.

    Args:
        batch: B. canvas: L. time_mode: "stratified" | "banded" | "uniform" (the collator's).
        grad_accum: G (bands per optimizer step in "banded" mode).
        trim: False gives 1 (the full-width canvas).
        table: x1 lengths (GSM8K-shaped, prompt protected); None = every x1 is L tokens, no prompt.
        insertion_schedule: alpha (default geometric(10, 0.01), docs/method.md §1.2).
        draws: micro-batch draws averaged (a multiple of G covers every band equally).
        seed: seed of the time and length draws.

    Returns:
        E[B (w + 1)] / (B (L + 1)), a float in (0, 1].
    """
    if not trim:
        return 1.0
    from retrofit.training.collator import TimeSampler

    sampler = TimeSampler(mode=time_mode, grad_accum=grad_accum, seed=seed)
    t = torch.stack([sampler(batch, c) for c in range(draws)]).double()  # [M, B]
    s = (t - HITTING_TIME_EPS) / (1 - HITTING_TIME_EPS)
    q = make_schedule(insertion_schedule).alpha(s).clamp(0.0, 1.0)
    if table is None:
        lengths = torch.full_like(t, canvas, dtype=torch.long)
        prompts = torch.zeros_like(lengths)
    else:
        pick = torch.randint(table.total.numel(), t.shape, generator=torch.Generator().manual_seed(seed))
        lengths = table.total[pick].clamp(min=2, max=canvas)
        prompts = torch.minimum(table.prompt[pick], lengths - 1)
    chunks = [
        expected_max_slots(q[i : i + 64], lengths[i : i + 64], prompts[i : i + 64])
        for i in range(0, draws, 64)
    ]
    return float((torch.cat(chunks) + 1).mean() / (canvas + 1))
