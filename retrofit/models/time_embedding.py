"""FlexMDM time conditioning: sinusoidal features of t, the time MLP, grouped AdaLN (docs/method.md §2.4-2.5).

    t [B] --SinusoidalTimeEmbedding--> [B, E] --TimeMLP--> e [B, D] --AdaLNModulation_k--> (scale, shift)

The modulations are plain modules called by `FlexMDMModel.forward`; the resulting `(scale, shift)`
pairs are handed to the LLaDA backbone as its `block_modulation` argument (no hooks).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def param_dtype(module: nn.Module) -> torch.dtype:
    """dtype of a module's first parameter (works through peft / ZeRO-3 wrappers, which keep dtype)."""
    return next(module.parameters()).dtype


class SinusoidalTimeEmbedding(nn.Module):
    """Parameter-free sinusoidal features of the raw FlexMDM time t (docs/method.md §2.4.1).

    phi_k = exp(-ln(max_period) * k / half), k = 0..half-1;
    emb(t) = [cos(t * phi) || sin(t * phi)]  (cosines first; t is not scaled by 1000).

    Args:
        dim: feature size (even), e.g. 4096 for LLaDA-8B.
        max_period: the period base, 10 000 in the reference.

    Raises:
        ValueError: `dim` is not a positive even number.
    """

    def __init__(self, dim: int, max_period: float = 10000.0):
        super().__init__()
        if dim <= 0 or dim % 2:
            raise ValueError(f"time_embed_dim must be a positive even number, got {dim}")
        self.dim = dim
        self.max_period = float(max_period)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """t [B] float (FlexMDM time in [0, 1]) -> [B, dim] float32."""
        half = self.dim // 2
        k = torch.arange(half, device=t.device, dtype=torch.float32)
        freqs = torch.exp(-math.log(self.max_period) * k / half)  # [half]
        args = t.float()[:, None] * freqs[None, :]  # [B, half]
        return torch.cat((torch.cos(args), torch.sin(args)), dim=-1)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, max_period={self.max_period:g}"


class TimeMLP(nn.Module):
    """e(t) = fc2(SiLU(fc1(emb))) with PyTorch default init and no output activation (docs/method.md §2.4.2).

    Args:
        in_dim: sinusoidal feature size E.
        hidden: hidden width (4 * d_model in the retrofit: 16 384 for LLaDA-8B).
        out_dim: d_model D.
    """

    def __init__(self, in_dim: int, hidden: int, out_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(in_dim, hidden)
        self.fc2 = nn.Linear(hidden, out_dim)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        """emb [B, E] (any float dtype) -> e [B, D] in this module's dtype."""
        return self.fc2(F.silu(self.fc1(emb.to(param_dtype(self)))))


class AdaLNModulation(nn.Linear):
    """One AdaLN group modulator G_k: D -> 2D, weight and bias zero-initialised (docs/method.md §2.5).

    [scale || shift] = G_k(e); the first D outputs are the scale, the last D the shift. One
    instance is owned by `FlexMDMModel.adaln` per group of `adaln_group_size` consecutive blocks.

    Args:
        d_model: D.
    """

    def __init__(self, d_model: int):
        super().__init__(d_model, 2 * d_model, bias=True)  # nn.Linear calls reset_parameters

    def reset_parameters(self) -> None:
        """Zero weight and bias, so that at graft time scale = shift = 0 (docs/method.md §2.10)."""
        nn.init.zeros_(self.weight)
        nn.init.zeros_(self.bias)

    def forward(self, e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """e [B, D] -> (scale [B, D], shift [B, D]) in this module's dtype."""
        scale_shift = super().forward(e.to(self.weight.dtype))  # [B, 2D]
        scale, shift = scale_shift.chunk(2, dim=-1)
        return scale, shift
