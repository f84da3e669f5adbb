"""Training times t (docs/method.md §3.5): uniform, per-rank stratified and banded sampling, t_min clamp.

`sample_times` draws t for one micro-batch ("uniform" / "stratified"); `banded_times` gives each
micro-step of an optimizer step one contiguous band of t, the same on every rank, so the strata
of a whole optimizer step are those of stratified sampling of the global batch. `derive_seed`
turns a tuple of ints / strings into a platform-independent seed.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch
from torch import Tensor

from retrofit.schedules import draw_uniform

__all__ = ["band_order", "banded_strata", "banded_times", "derive_seed", "sample_times"]


def _tau_to_t(tau: Tensor, t_min: float) -> Tensor:
    """t = (1 - t_min) tau + t_min in float64, returned as float32 strictly below 1."""
    t = ((1.0 - t_min) * tau + t_min).float()
    return t.clamp(max=torch.nextafter(torch.tensor(1.0), torch.tensor(0.0)).item())


def sample_times(
    batch_size: int,
    *,
    world_size: int = 1,
    rank: int = 0,
    t_min: float = 1e-3,
    stratified: bool = True,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    u: Tensor | None = None,
) -> Tensor:
    """Training times of one micro-batch (docs/method.md §3.5).

    Stratified ("low-discrepancy"): tau_i = (rank * B + i + u_i) / (B * W), so the W ranks of one
    micro-step jointly cover W * B equal strata of [0, 1). Otherwise tau_i = u_i. Then
    t = (1 - t_min) tau + t_min. Example: B = 4, W = 1, u = 0.5 -> t = [0.125875, 0.375625,
    0.625375, 0.875125].

    Args:
        batch_size: B, samples on this rank.
        world_size: W, number of data-parallel ranks.
        rank: this rank, 0 <= rank < W.
        t_min: lower clamp of t (1e-3 in the retrofit).
        stratified: use the low-discrepancy draw.
        generator: torch.Generator for u (give each rank its own stream).
        device: device of the result.
        u: optional U[0, 1) draws [B] overriding the generator (for tests).

    Returns:
        t: float32 [B] in [t_min, 1).

    Raises:
        ValueError: bad batch_size / world_size / rank / t_min, or u of the wrong shape.
    """
    _check_ranks(batch_size, world_size, rank)
    if not 0.0 <= t_min < 1.0:
        raise ValueError(f"sample_times: t_min must be in [0, 1), got {t_min}")
    u = _uniforms(batch_size, u, generator, device)
    if stratified:
        tau = (rank * batch_size + torch.arange(batch_size, device=u.device) + u) / (batch_size * world_size)
    else:
        tau = u
    return _tau_to_t(tau, t_min)


def band_order(num_micro_steps: int, *, seed: int = 0, step: int = 0) -> Tensor:
    """Permutation [G] (long, CPU) of bands to micro-steps for one optimizer step.

    Deterministic in (seed, step) only, so every rank computes the same permutation.
    """
    gen = torch.Generator().manual_seed(derive_seed("bands", seed, step))
    return torch.randperm(num_micro_steps, generator=gen)


def banded_strata(
    num_micro_steps: int,
    micro_batch: int,
    world_size: int,
    rank: int,
    micro_step: int,
    *,
    seed: int = 0,
    step: int = 0,
    shuffle_bands: bool = True,
) -> Tensor:
    """Stratum indices [B] (long, CPU) of (rank, micro_step) within one optimizer step.

    The N = G * W * B strata of [0, 1) are cut into G contiguous bands of W * B strata. Micro-step k
    gets band b = band_order(G)[k] (or b = k without shuffling), the same on every rank; inside the
    band the ranks are interleaved in serpentine order: stratum = b * (W * B) + i * W + r_i with
    r_i = rank for even i and W - 1 - rank for odd i (i = 0..B-1). Over the optimizer step the
    strata are exactly 0..N-1 once each, as in plain stratified sampling of the global batch, while
    each micro-step covers one band of t (similar t -> similar canvas widths). The serpentine order
    gives every rank the same sum of stratum indices (B even), so ranks get equally long x_t on
    average and a packed micro-step does not wait for a rank that always draws the latest t
    (docs/method.md §3.5, §3.7); with W = 1 it is the plain order.
    """
    _check_ranks(micro_batch, world_size, rank)
    if not 0 <= micro_step < num_micro_steps:
        raise ValueError(f"banded_strata: micro_step must be in [0, {num_micro_steps}), got {micro_step}")
    band = int(band_order(num_micro_steps, seed=seed, step=step)[micro_step]) if shuffle_bands else micro_step
    row = torch.arange(micro_batch)
    slot = torch.where(row % 2 == 0, rank, world_size - 1 - rank)
    return band * world_size * micro_batch + row * world_size + slot


def banded_times(
    num_micro_steps: int,
    micro_batch: int,
    world_size: int,
    rank: int,
    micro_step: int,
    *,
    seed: int = 0,
    step: int = 0,
    t_min: float = 1e-3,
    shuffle_bands: bool = True,
    generator: torch.Generator | None = None,
    u: Tensor | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Banded stratified times t [B] for one micro-batch (docs/method.md §3.5, banded variant).

    tau = (stratum + u) / (G * W * B) with the strata of :func:`banded_strata`, then
    t = (1 - t_min) tau + t_min. Determinism: the band assignment depends only on (seed, step)
    (shared by all ranks); u comes from ``u``, else ``generator``, else a generator seeded from
    (seed, step, micro_step, rank), so every rank draws its own u and a rerun reproduces it.

    Args:
        num_micro_steps: G, gradient-accumulation micro-steps per optimizer step.
        micro_batch: B, samples per micro-batch and rank.
        world_size: W. rank: this rank. micro_step: k in [0, G).
        seed: run seed shared by all ranks. step: optimizer step index.
        t_min: lower clamp of t. shuffle_bands: permute bands over micro-steps.
        generator: optional generator for u. u: optional U[0, 1) draws [B].
        device: device of the result.

    Returns:
        t: float32 [B] in [t_min, 1).
    """
    G, B, W = num_micro_steps, micro_batch, world_size
    strata = banded_strata(G, B, W, rank, micro_step, seed=seed, step=step, shuffle_bands=shuffle_bands)
    if u is None and generator is None:
        generator = torch.Generator().manual_seed(derive_seed("u", seed, step, micro_step, rank))
    u = _uniforms(B, u, generator, device)
    tau = (strata.to(u.device) + u) / (G * W * B)
    return _tau_to_t(tau, t_min)


def _check_ranks(batch_size: int, world_size: int, rank: int) -> None:
    if batch_size < 1 or world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(
            f"need batch_size >= 1, world_size >= 1, 0 <= rank < world_size; got {batch_size}, {world_size}, {rank}"
        )


def _uniforms(n: int, u: Tensor | None, generator: torch.Generator | None, device: Any) -> Tensor:
    if u is None:
        return draw_uniform((n,), generator=generator, device=device)
    if u.shape != (n,):
        raise ValueError(f"u must have shape ({n},), got {tuple(u.shape)}")
    return u.to(device=device if device is not None else u.device, dtype=torch.float64)


def derive_seed(*parts: Any) -> int:
    """Platform-independent 63-bit seed from a tuple of ints/strings."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)
