"""FlexMDM length head: the expected number of insertions per gap, read at every canvas slot
(docs/method.md §2.6).

Gap j (j < n: the deleted tokens just before slot j; j = n: the tail) is predicted from the
post-`ln_f` state at position j of the width-(L+1) canvas (docs/method.md §2.2).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from retrofit.models.time_embedding import param_dtype


class LengthHead(nn.Module):
    """Expected-gap head: g_hat = scale * softplus(out(GELU(proj(LayerNorm(h))))) (docs/method.md §2.6).

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

    def forward(self, h: torch.Tensor, row_offset: int = 0) -> torch.Tensor:
        """h [B, L+1, D] (any float dtype) -> expected gaps [B, L+1] float32, >= 0.

        `row_offset` (prefix-cache forwards): h holds canvas positions P..P+L of a width-(P+L+1)
        canvas (P = row_offset). The one-column output layer and the softplus then run on the
        activations behind P zero rows, sliced off at the end, so they see the full forward's
        layout: CPU BLAS (GEMV) and the vectorised softplus round an element by its place in
        the tensor, and this keeps the cached forward's gaps bitwise the full forward's. The
        extra cost is P x (hidden + 1) multiply-adds per row, nothing beside the trunk's.
        """
        a = F.gelu(self.proj(self.norm(h.to(param_dtype(self)))))  # [B, L+1, hidden]
        if row_offset:
            a = torch.cat((a.new_zeros(a.shape[0], row_offset, a.shape[2]), a), dim=1)  # [B, P+L+1, hidden]
        z = self.out(a)  # [B, P+L+1, 1]
        gaps = F.softplus(z.squeeze(-1).float()) * self.scale
        return gaps[:, row_offset:] if row_offset else gaps

    def extra_repr(self) -> str:
        return f"scale={self.scale:g}"
