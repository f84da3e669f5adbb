"""Random draws of one sampler run: uniforms and Poisson counts, optionally at a fixed full width.

With ``full_width`` set (the sampler's ``draw_at_full_width``), every per-slot draw is made at the
full canvas width and sliced, and Poisson counts come from one uniform per element by inverse CDF
(:func:`poisson_from_uniform`). A run on trimmed canvases and a run on the full canvas then consume
the same random stream, and a floating-point near-tie that changes one row cannot shift the draws
of the other rows or of later steps. Without it, ``torch.poisson`` is used (faster; its rejection
sampler consumes a rate-dependent amount of randomness).

Example::

    rand = RandomSource(torch.Generator().manual_seed(0), full_width=1024)
    e = rand.poisson(rates, extra=1)      # rates [B, W + 1] -> counts [B, W + 1]
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["RandomSource", "poisson_from_uniform"]


def poisson_from_uniform(rates: Tensor, u: Tensor, tail_sd: float = 8.0) -> Tensor:
    """Poisson(rate) samples by inverse CDF: the smallest k with F(k; rate) > u, exactly.

    Only a window [rate - tail_sd·sqrt(rate) - 8, rate + tail_sd·sqrt(rate) + 8] of k is
    scanned; the CDF below it comes from the regularized upper incomplete gamma function,
    P(K <= k0 - 1) = Q(k0, rate). The mass outside the window is < 1e-12 for any rate (a u in it
    gets the window's edge).

    Args:
        rates: float tensor (any shape) of finite rates >= 0.
        u: float64 uniforms in [0, 1), same shape.
        tail_sd: half-width of the scanned window in standard deviations.

    Returns:
        int64 counts, rates' shape and device.
    """
    lam = rates.to(torch.float64).reshape(-1)
    uu = u.to(device=lam.device, dtype=torch.float64).reshape(-1)
    out = torch.zeros_like(lam, dtype=torch.long)
    live = lam > 0
    if bool(live.any()):
        lam_l, u_l = lam[live], uu[live]
        sd = lam_l.sqrt()
        lo = (lam_l - tail_sd * sd - 8.0).floor().clamp_min(0.0)  # [N]
        width = int((2 * tail_sd * sd + 18.0).max().ceil())
        k = lo[:, None] + torch.arange(width, device=lam.device, dtype=torch.float64)[None, :]  # [N, w]
        pmf = torch.exp(k * torch.log(lam_l)[:, None] - lam_l[:, None] - torch.lgamma(k + 1.0))
        below = torch.where(lo > 0, torch.special.gammaincc(lo.clamp_min(1.0), lam_l), 0.0)
        cdf = below[:, None] + torch.cumsum(pmf, dim=-1)
        steps_past = (cdf <= u_l[:, None]).sum(-1).clamp(max=width - 1)
        out[live] = (lo + steps_past).long()
    return out.reshape(rates.shape)


@dataclass
class RandomSource:
    """All random draws of one sampler run.

    Draws happen on the generator's device (CPU when no generator is given) in float64 and are
    then moved to the requested device, so a CPU generator gives the same numbers on any device.

    Attributes:
        generator: optional torch.Generator (None = torch's global RNG).
        full_width: when set, every per-slot draw is made at ``full_width`` columns (``+ extra``
            for gaps) and sliced, and Poisson counts use one uniform each (see module docstring).
    """

    generator: torch.Generator | None = None
    full_width: int | None = None

    def _gen_device(self) -> torch.device:
        return self.generator.device if self.generator is not None else torch.device("cpu")

    def _draw(self, shape: tuple[int, ...]) -> Tensor:
        return torch.rand(shape, generator=self.generator, device=self._gen_device(), dtype=torch.float64)

    def uniform(self, batch: int, width: int, device: torch.device, extra: int = 0) -> Tensor:
        """U[0, 1) float64 draws [batch, width] (drawn at [batch, full_width + extra] if set)."""
        draw_width = width if self.full_width is None else self.full_width + extra
        return self._draw((batch, draw_width))[:, :width].to(device)

    def poisson(self, rates: Tensor, extra: int = 0) -> Tensor:
        """Poisson counts (int64, rates' shape and device) for finite rates >= 0.

        Rates are 1-D [B] (one draw per row) or 2-D [B, W]; with ``full_width`` set, 2-D rates are
        drawn at [B, full_width + extra] (zero rates give 0) and sliced.

        Raises:
            ValueError: a rate is negative, NaN or infinite (the model returned a bad ĝ).
        """
        r = rates.detach().to(torch.float64)
        if not bool(torch.isfinite(r).all()) or bool((r < 0).any()):
            raise ValueError(
                "sampler: Poisson rates must be finite and >= 0; check the model's expected_gaps"
            )
        if self.full_width is None:
            return torch.poisson(r.to(self._gen_device()), generator=self.generator).to(rates.device).long()
        if r.dim() == 2:
            u = self._draw((r.shape[0], self.full_width + extra))[:, : r.shape[1]]
        else:
            u = self._draw(tuple(r.shape))
        return poisson_from_uniform(r, u.to(r.device)).to(rates.device)
