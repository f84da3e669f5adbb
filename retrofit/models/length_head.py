"""FlexMDM length head: the expected number of insertions per gap, read at every canvas slot (spec §2.6).

Gap j (j < n: the deleted tokens just before slot j; j = n: the tail) is predicted from the
post-`ln_f` state at position j of the width-(L+1) canvas (spec §2.2).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from retrofit.models.time_embedding import param_dtype


class LengthHead(nn.Module):
    """Expected-gap head: g_hat = scale * softplus(out(GELU(proj(LayerNorm(h))))) (spec §2.6).

    LayerNorm is affine with eps 1e-5, GELU is the exact (erf) form, softplus has beta 1 and
    threshold 20, all parts use PyTorch default init (so g_hat ~ scale * ln 2 at graft time).

    Args:
        d_model: D, the width of the post-`ln_f` hidden states.
        hidden: width of the hidden layer (d_model in the retrofit).
        scale: output scale (the canvas width, 1024, in the reference).
    """

    def __init__(self, d_model: int, hidden: int, scale: float):
        super().__init__()
        self.norm = nn.LayerNorm(d_model, eps=1e-5)
        self.proj = nn.Linear(d_model, hidden)
        self.out = nn.Linear(hidden, 1)
        self.scale = float(scale)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """h [B, L+1, D] (any float dtype) -> expected gaps [B, L+1] float32, >= 0."""
        z = self.out(F.gelu(self.proj(self.norm(h.to(param_dtype(self))))))  # [B, L+1, 1]
        return F.softplus(z.squeeze(-1).float()) * self.scale

    def extra_repr(self) -> str:
        return f"scale={self.scale:g}"
