"""Closed-form expected compute of trimmed FlexMDM batches (no Monte Carlo), per time-sampling mode.

With trimming (`retrofit.training.collator`), a micro-batch costs B * (w + 1) token slots, w = its
longest x_t; in data parallel every micro-step waits for its slowest rank, so a micro-step of W
ranks costs W * B * (max over all its W * B rows of n, + 1). Without trimming it costs
W * B * (L + 1). This module computes the expected ratio exactly up to quadrature error.

Formula (prompt-free x1, i.e. the transfer stage; docs/method.md §1.3, §3.5, §7.1 item 6). A row with clean
length l at training time t holds n ~ Binomial(l, p(t)) slots, p(t) = alpha((t - eps) / (1 - eps))
(eps = 1e-6 hitting-time clamp), t = (1 - t_min) tau + t_min. Row i of a micro-step draws tau
uniformly in its stratum I_i (mode "stratified": the research code, rank r covers
[r/W, (r+1)/W) in B strata, so every micro-step spans all of [0, 1); "banded": micro-step k covers
one band of W * B strata of the G * W * B strata; "uniform": I_i = [0, 1)), and l uniformly from
``lengths``. Rows are independent, so the micro-step maximum M has

    P(M <= m) = prod_i (1 / |I_i|) int_{I_i} sum_l w_l F_Bin(m; l, p(t(tau))) dtau,
    E[max(M, 1)] = sum_{m >= 0} (1 - P(M <= m)) + P(M = 0),

and the expected computed fraction is mean_k (E[max(M_k, 1)] + 1) / (L + 1) over the micro-steps
of one optimizer step. The integrals use Gauss-Legendre quadrature (``nodes`` points per stratum,
64 sub-intervals for [0, 1)).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy.stats import binom

from retrofit.schedules import HITTING_TIME_EPS, Schedule, make_schedule

__all__ = ["expected_computed_fraction", "micro_step_strata"]


def micro_step_strata(mode: str, micro_batch: int, world_size: int, grad_accum: int) -> list[np.ndarray]:
    """tau intervals [rows, 2] of the W * B rows of each distinct micro-step of one optimizer step.

    Raises:
        ValueError: unknown mode or non-positive sizes.
    """
    if min(micro_batch, world_size, grad_accum) < 1:
        raise ValueError(
            f"need micro_batch, world_size, grad_accum >= 1; got {micro_batch}, {world_size}, {grad_accum}"
        )
    rows = micro_batch * world_size
    if mode == "uniform":
        return [np.tile([0.0, 1.0], (rows, 1))]
    if mode == "stratified":
        edges = np.arange(rows + 1) / rows
        return [np.stack([edges[:-1], edges[1:]], axis=1)]
    if mode == "banded":
        edges = np.arange(rows * grad_accum + 1) / (rows * grad_accum)
        return [
            np.stack([edges[k * rows : (k + 1) * rows], edges[k * rows + 1 : (k + 1) * rows + 1]], 1)
            for k in range(grad_accum)
        ]
    raise ValueError(f"mode must be 'stratified', 'banded' or 'uniform', got {mode!r}")


def _row_cdf(
    interval: np.ndarray, alpha: Schedule, ells: np.ndarray, weights: np.ndarray, t_min: float, nodes: int
) -> np.ndarray:
    """(1/|I|) int_I sum_l w_l F_Bin(m; l, p(tau)) dtau for m = 0..max l, float64 [max l + 1]."""
    a, b = float(interval[0]), float(interval[1])
    pieces = 64 if b - a > 0.5 else 1
    x, w = np.polynomial.legendre.leggauss(nodes)
    left = a + (b - a) * np.arange(pieces) / pieces
    tau = (left[:, None] + (b - a) / pieces * (x[None, :] + 1) / 2).ravel()  # [pieces * nodes]
    quad_w = np.tile(w / 2, pieces) / pieces
    t = (1.0 - t_min) * tau + t_min
    s = (t - HITTING_TIME_EPS) / (1.0 - HITTING_TIME_EPS)
    p = alpha.alpha(torch.from_numpy(s.clip(0.0, 1.0))).double().clamp(0.0, 1.0).numpy()  # [Q]
    m = np.arange(int(ells.max()) + 1)
    cdf = sum(wl * binom.cdf(m[None, :], int(ell), p[:, None]) for ell, wl in zip(ells, weights))  # [Q, M]
    return quad_w @ cdf


def expected_computed_fraction(
    insertion_schedule: Schedule | str | dict,
    lengths: Sequence[int],
    canvas: int,
    mode: str,
    micro_batch: int,
    world_size: int,
    grad_accum: int,
    *,
    t_min: float = 1e-3,
    nodes: int = 16,
) -> float:
    """Expected computed / full-width token slots of trimmed batches (formula in the module docstring).

    Args:
        insertion_schedule: alpha (anything `make_schedule` accepts), e.g. "geometric".
        lengths: clean lengths l of the data (rows draw l uniformly from this list); <= canvas.
        canvas: L, the untrimmed width. mode: "stratified" | "banded" | "uniform".
        micro_batch: B per rank. world_size: W. grad_accum: G micro-steps per optimizer step.
        t_min: the collator's lower clamp of t. nodes: Gauss-Legendre points per interval.

    Returns:
        The expected fraction in (0, 1], counting each micro-step at its slowest rank.

    Raises:
        ValueError: empty lengths, a length outside [0, canvas], or bad sizes / mode.
    """
    ells, counts = np.unique(np.asarray(lengths, dtype=np.int64), return_counts=True)
    if ells.size == 0 or ells.min() < 0 or ells.max() > canvas:
        raise ValueError(f"lengths must be non-empty and within [0, canvas={canvas}]")
    alpha = make_schedule(insertion_schedule)
    weights = counts / counts.sum()
    fractions = []
    for strata in micro_step_strata(mode, micro_batch, world_size, grad_accum):
        unique, multiplicity = np.unique(strata, axis=0, return_counts=True)
        log_cdf = sum(
            k * np.log(np.clip(_row_cdf(iv, alpha, ells, weights, t_min, nodes), 1e-300, 1.0))
            for iv, k in zip(unique, multiplicity)
        )
        cdf_max = np.exp(log_cdf)  # P(M <= m), m = 0..max l
        expected = float(np.sum(1.0 - cdf_max[:-1]) + cdf_max[0])  # E[max(M, 1)]
        fractions.append((expected + 1.0) / (canvas + 1.0))
    return float(np.mean(fractions))
